//! `hop mfa ls|add|rm`: the logged-in user's second-factor devices. Adding a security key, or
//! removing a key or a one-time-code device, needs the account password and a fresh proof from a device the user already
//! has: a tap on one of their keys, or a one-time code (`--otp`) when they have no key yet.
//! Auth checks both, keeps the last device while the cluster requires one, and audits each
//! change.

use anyhow::anyhow;
use hop_api::proto::auth_public_client::AuthPublicClient;
use hop_api::proto::{
    AddMfaDeviceRequest, BeginMfaChangeRequest, ListMfaDevicesRequest, RemoveMfaDeviceRequest,
};
use hop_api::timestamps::rfc3339;
use hop_net::connect::{status_error, tls_channel};
use std::time::{Duration, UNIX_EPOCH};
use tonic::transport::Channel;

use super::ceremony;
use crate::cli::{MfaCommand, MfaProof, OutputFormat};
use crate::profile;

pub async fn run(cmd: MfaCommand) -> anyhow::Result<()> {
    let login = profile::current_login()?;
    let channel = tls_channel(&login.profile.proxy, &login.trust, Some(&login.cert)).await?;
    let mut client = AuthPublicClient::new(channel);
    match cmd {
        MfaCommand::Ls { format } => ls(&mut client, format).await,
        MfaCommand::Add { name, proof } => {
            add(&mut client, &login.profile.proxy, &name, &proof).await
        }
        MfaCommand::Rm { device, proof } => {
            rm(&mut client, &login.profile.proxy, &device, &proof).await
        }
        // The binary runs it itself, to exit 1 without a message when no tap is asked for.
        MfaCommand::Session { target } => {
            super::session::prepare_for_openssh(&target).await.map(drop)
        }
    }
}

fn when(unix: i64) -> String {
    if unix <= 0 {
        return "-".into();
    }
    rfc3339(UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap_or(0)))
}

async fn ls(client: &mut AuthPublicClient<Channel>, format: OutputFormat) -> anyhow::Result<()> {
    let list = client
        .list_mfa_devices(ListMfaDevicesRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    if format == OutputFormat::Json {
        let v: Vec<serde_json::Value> = list
            .devices
            .iter()
            .map(|d| {
                serde_json::json!({
                    "id": d.id, "name": d.name, "kind": d.kind,
                    "added_unix": d.added_unix, "last_used_unix": d.last_used_unix,
                    "aaguid": d.aaguid,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if list.devices.is_empty() {
        println!("No second-factor devices.");
        return Ok(());
    }
    println!(
        "{:<18} {:<24} {:<9} {:<21} LAST USED",
        "ID", "NAME", "KIND", "ADDED"
    );
    for d in &list.devices {
        println!(
            "{:<18} {:<24} {:<9} {:<21} {}",
            d.id,
            d.name,
            d.kind,
            when(d.added_unix),
            when(d.last_used_unix)
        );
    }
    Ok(())
}

/// The password and the proof (a code, or a key's assertion answering `proof_options`).
fn password_and_proof(
    proof: &MfaProof,
    proof_options: &str,
    origin: &str,
) -> anyhow::Result<(String, String, String)> {
    let password = if proof.password_stdin {
        crate::user::read_stdin_line("password")?
    } else {
        crate::user::prompt_secret("Password")?
    };
    if let Some(code) = &proof.otp {
        return Ok((password, code.clone(), String::new()));
    }
    if ceremony::allowed_credentials(proof_options)? == 0 {
        let code = crate::user::prompt_line(
            "You have no security key yet: the one-time code from your authenticator app (--otp)",
        )?;
        return Ok((password, code, String::new()));
    }
    eprintln!("First, prove you hold one of your registered keys.");
    let mut key = super::open()?;
    let answer = ceremony::assert(key.as_mut(), proof_options, origin, false)?;
    Ok((password, String::new(), answer.to_string()))
}

async fn add(
    client: &mut AuthPublicClient<Channel>,
    proxy: &str,
    name: &str,
    proof: &MfaProof,
) -> anyhow::Result<()> {
    let challenge = client
        .begin_mfa_change(BeginMfaChangeRequest { register: true })
        .await
        .map_err(status_error)?
        .into_inner();
    let origin = ceremony::pick_origin(&challenge.origins, proxy)?;
    let (password, totp_code, proof_json) =
        password_and_proof(proof, &challenge.proof_options_json, &origin)?;
    eprintln!("Now the new key.");
    let mut key = super::open_new()?;
    let registration =
        ceremony::register(key.as_mut(), &challenge.registration_options_json, &origin)?;
    let added = client
        .add_mfa_device(AddMfaDeviceRequest {
            password,
            totp_code,
            proof_json,
            name: name.to_string(),
            registration_json: registration.to_string(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    println!("Security key {:?} added (id {}).", added.name, added.id);
    Ok(())
}

async fn rm(
    client: &mut AuthPublicClient<Channel>,
    proxy: &str,
    device: &str,
    proof: &MfaProof,
) -> anyhow::Result<()> {
    let list = client
        .list_mfa_devices(ListMfaDevicesRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    let found = list
        .devices
        .iter()
        .find(|d| d.id == device || d.name == device)
        .ok_or_else(|| anyhow!("you have no device {device:?} (`hop mfa ls`)"))?;
    let challenge = client
        .begin_mfa_change(BeginMfaChangeRequest { register: false })
        .await
        .map_err(status_error)?
        .into_inner();
    let origin = ceremony::pick_origin(&challenge.origins, proxy)?;
    let (password, totp_code, proof_json) =
        password_and_proof(proof, &challenge.proof_options_json, &origin)?;
    client
        .remove_mfa_device(RemoveMfaDeviceRequest {
            password,
            totp_code,
            proof_json,
            device: found.id.clone(),
        })
        .await
        .map_err(status_error)?;
    let what = if found.kind == "webauthn" {
        "Security key"
    } else {
        "One-time-code device"
    };
    println!("{what} {:?} removed.", found.name);
    Ok(())
}
