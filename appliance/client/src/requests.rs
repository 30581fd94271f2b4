//! `hop request create|ls|show|review|drop` and `hop login --request-id`: access requests as
//! the user makes, reads and reviews them, and the certificates that carry an approved one.
//!
//! This module owns the command line's conversation and the calls to Auth's `AccessRequests`
//! service over the current login's certificate (mTLS); Auth decides everything. New keys are
//! made here for every certificate pair, and only their public halves leave the machine.

use std::time::{Duration, UNIX_EPOCH};

use anyhow::anyhow;
use tonic::transport::Channel;

use super::profile::{self, Login};
use crate::cli::{LoginArgs, OutputFormat, ProxyTrust, RequestCommand};
use hop_api::proto::access_requests_client::AccessRequestsClient;
use hop_api::proto::{
    AccessRequestInfo, AssumeAccessRequestsRequest, CreateAccessRequestRequest,
    GetAccessRequestRequest, ListAccessRequestsRequest, ReviewAccessRequestRequest,
};
use hop_api::timestamps::rfc3339;
use hop_net::connect::{status_error, tls_channel};

pub async fn run(cmd: RequestCommand) -> anyhow::Result<()> {
    let login = profile::current_login()?;
    let mut c = client(&login).await?;
    match cmd {
        RequestCommand::Create {
            roles,
            reason,
            max_duration,
        } => {
            let r = c
                .create_access_request(CreateAccessRequestRequest {
                    roles,
                    reason,
                    max_duration_seconds: max_duration.map_or(0, |d| d.as_secs()),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            println!("Access request {} is {}.", r.id, r.state);
            println!("  Roles:   {}", r.roles.join(", "));
            println!("  Expires: {}", when(r.expires_unix));
            if !r.suggested_reviewers.is_empty() {
                println!(
                    "  Suggested reviewers: {}",
                    r.suggested_reviewers.join(", ")
                );
            }
            println!(
                "Once approved: hop login --proxy {} --request-id {}",
                login.profile.proxy, r.id
            );
            Ok(())
        }
        RequestCommand::Ls(out) => {
            let list = c
                .list_access_requests(ListAccessRequestsRequest {})
                .await
                .map_err(status_error)?
                .into_inner()
                .requests;
            print_list(&list, out.format)
        }
        RequestCommand::Show { id, format } => {
            let r = c
                .get_access_request(GetAccessRequestRequest { id })
                .await
                .map_err(status_error)?
                .into_inner();
            print_one(&r, format)
        }
        RequestCommand::Review {
            id,
            approve,
            deny,
            reason,
        } => {
            let r = c
                .review_access_request(ReviewAccessRequestRequest {
                    id,
                    approve: approve && !deny,
                    reason,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            println!("Reviewed access request {}: it is {}.", r.id, r.state);
            Ok(())
        }
        RequestCommand::Drop => {
            let trust = trust_of(&login);
            assume(&mut c, &trust, &login.profile.user, Vec::new()).await
        }
    }
}

async fn client(login: &Login) -> anyhow::Result<AccessRequestsClient<Channel>> {
    let channel = tls_channel(&login.profile.proxy, &login.trust, Some(&login.cert)).await?;
    Ok(AccessRequestsClient::new(channel))
}

fn trust_of(login: &Login) -> ProxyTrust {
    ProxyTrust {
        proxy: login.profile.proxy.clone(),
        ca_pin: login.profile.ca_pin.clone(),
        insecure: login.profile.insecure,
    }
}

/// `hop login --request-id ID`: the current login to the proxy (a password login first when
/// there is none, it expired, or it is another user's), then certificates with the request.
pub async fn login_with_request(args: &LoginArgs, id: &str) -> anyhow::Result<()> {
    let home = profile::hop_home()?;
    let current = profile::profile_for(&home, &args.trust.proxy)
        .ok()
        .filter(|(p, _)| args.user.as_ref().is_none_or(|u| u == &p.user))
        .and_then(|(p, paths)| profile::login_of(p, &paths).ok());
    let login = match current {
        Some(l) => l,
        None => {
            super::user::password_login(args).await?;
            let (p, paths) = profile::profile_for(&home, &args.trust.proxy)?;
            profile::login_of(p, &paths)?
        }
    };
    let mut c = client(&login).await?;
    assume(
        &mut c,
        &args.trust,
        &login.profile.user,
        vec![id.to_string()],
    )
    .await
}

/// New keys, certificates for them with the roles of `ids`, saved as the current login.
async fn assume(
    c: &mut AccessRequestsClient<Channel>,
    trust: &ProxyTrust,
    user: &str,
    ids: Vec<String>,
) -> anyhow::Result<()> {
    let mut rng = rand::rng();
    let ssh = hop_ca::generate_ssh_keypair(&mut rng).map_err(|e| anyhow!("{e}"))?;
    let tls = hop_ca::generate_x509_keypair(&mut rng).map_err(|e| anyhow!("{e}"))?;
    let resp = c
        .assume_access_requests(AssumeAccessRequestsRequest {
            request_ids: ids.clone(),
            ssh_public_key: ssh.public_openssh.clone(),
            tls_public_key: tls.public_spki_der.clone(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let home = profile::hop_home()?;
    super::user::save_login(&home, trust, user, (&ssh, &tls), &resp)?;
    super::user::print_login(&resp, &trust.proxy);
    match ids.first() {
        Some(id) => println!("  Access request: {id}"),
        None => println!("  Access requests dropped."),
    }
    Ok(())
}

fn when(unix: i64) -> String {
    rfc3339(UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap_or(0)))
}

fn json(r: &AccessRequestInfo) -> serde_json::Value {
    serde_json::json!({
        "id": r.id,
        "user": r.user,
        "roles": r.roles,
        "reason": r.reason,
        "state": r.state,
        "created": when(r.created_unix),
        "expires": when(r.expires_unix),
        "thresholds": r.thresholds,
        "suggested_reviewers": r.suggested_reviewers,
        "reviews": r.reviews.iter().map(|v| serde_json::json!({
            "author": v.author,
            "approve": v.approve,
            "reason": v.reason,
            "created": when(v.created_unix),
        })).collect::<Vec<_>>(),
    })
}

fn print_structured(v: &serde_json::Value, format: OutputFormat) -> anyhow::Result<()> {
    match format {
        OutputFormat::Yaml => print!(
            "{}",
            serde_saphyr::to_string(v).map_err(|e| anyhow!("cannot render YAML: {e}"))?
        ),
        _ => println!("{}", serde_json::to_string_pretty(v)?),
    }
    Ok(())
}

fn print_list(list: &[AccessRequestInfo], format: OutputFormat) -> anyhow::Result<()> {
    if format != OutputFormat::Text {
        let v = serde_json::Value::Array(list.iter().map(json).collect());
        return print_structured(&v, format);
    }
    if list.is_empty() {
        println!("No access requests.");
        return Ok(());
    }
    let rows: Vec<[String; 6]> = list
        .iter()
        .map(|r| {
            [
                r.id.clone(),
                r.user.clone(),
                r.roles.join(","),
                r.state.clone(),
                when(r.created_unix),
                when(r.expires_unix),
            ]
        })
        .collect();
    let head = ["ID", "USER", "ROLES", "STATE", "CREATED", "EXPIRES"];
    let mut widths: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    println!("{}", line(head.to_vec()));
    for r in &rows {
        println!("{}", line(r.iter().map(String::as_str).collect()));
    }
    Ok(())
}

fn print_one(r: &AccessRequestInfo, format: OutputFormat) -> anyhow::Result<()> {
    if format != OutputFormat::Text {
        return print_structured(&json(r), format);
    }
    println!("ID:       {}", r.id);
    println!("User:     {}", r.user);
    println!("Roles:    {}", r.roles.join(", "));
    println!("Reason:   {}", r.reason);
    println!("State:    {}", r.state);
    println!("Created:  {}", when(r.created_unix));
    println!("Expires:  {}", when(r.expires_unix));
    println!("Thresholds: {}", r.thresholds.join("; "));
    if !r.suggested_reviewers.is_empty() {
        println!("Suggested reviewers: {}", r.suggested_reviewers.join(", "));
    }
    for v in &r.reviews {
        let verdict = if v.approve { "approved" } else { "denied" };
        println!(
            "Review:   {} {} at {}{}",
            v.author,
            verdict,
            when(v.created_unix),
            if v.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", v.reason)
            }
        );
    }
    Ok(())
}
