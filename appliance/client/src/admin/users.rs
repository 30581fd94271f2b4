//! `hop admin users`: add (with an invite link), reset, lock, unlock, remove and list users.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::anyhow;
use tonic::transport::Channel;

use super::{doc_name, get_docs, human, now_unix, print_docs, strs, table, ttl_seconds};
use crate::cli::{Output, OutputFormat, UsersCommand};
use hop_api::proto::auth_admin_client::AuthAdminClient;
use hop_api::proto::{
    CreateUserRequest, DeleteResourceRequest, InviteResponse, LockUserRequest, ResetUserRequest,
    StringList, UnlockUserRequest,
};
use hop_api::timestamps::rfc3339_unix as ts;
use hop_net::connect::status_error;

pub(super) async fn run(c: &mut AuthAdminClient<Channel>, cmd: UsersCommand) -> anyhow::Result<()> {
    match cmd {
        UsersCommand::Add {
            name,
            roles,
            logins,
            traits,
            out: Output { format },
        } => {
            let inv = c
                .create_user(CreateUserRequest {
                    name,
                    roles,
                    logins,
                    traits: parse_traits(traits)?,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            print_invite(inv, true, format)
        }
        UsersCommand::Reset {
            name,
            out: Output { format },
        } => {
            let inv = c
                .reset_user(ResetUserRequest { name })
                .await
                .map_err(status_error)?
                .into_inner();
            print_invite(inv, false, format)
        }
        UsersCommand::Lock { name, ttl, reason } => lock(c, name, ttl, reason).await,
        UsersCommand::Unlock { name } => {
            c.unlock_user(UnlockUserRequest { name: name.clone() })
                .await
                .map_err(status_error)?;
            println!("User {name:?} has been unlocked");
            Ok(())
        }
        UsersCommand::Rm { name } => {
            c.delete_resource(DeleteResourceRequest {
                kind: "user".into(),
                name: name.clone(),
            })
            .await
            .map_err(status_error)?;
            println!("User {name:?} has been deleted");
            Ok(())
        }
        UsersCommand::Ls(out) => list(c, out).await,
    }
}

/// `--trait NAME=VALUE` (repeated; a name may take several values).
fn parse_traits(traits: Vec<String>) -> anyhow::Result<HashMap<String, StringList>> {
    let mut map = HashMap::new();
    for t in traits {
        let (k, v) = t
            .split_once('=')
            .ok_or_else(|| anyhow!("--trait: expected NAME=VALUE, got {t:?}"))?;
        map.entry(k.to_string())
            .or_insert_with(|| StringList { values: vec![] })
            .values
            .push(v.to_string());
    }
    Ok(map)
}

async fn lock(
    c: &mut AuthAdminClient<Channel>,
    name: String,
    ttl: Option<String>,
    reason: Option<String>,
) -> anyhow::Result<()> {
    let ttl_seconds = ttl_seconds(ttl.as_deref())?;
    c.lock_user(LockUserRequest {
        name: name.clone(),
        ttl_seconds,
        reason: reason.unwrap_or_default(),
    })
    .await
    .map_err(status_error)?;
    println!("User {name:?} is locked");
    Ok(())
}

async fn list(c: &mut AuthAdminClient<Channel>, Output { format }: Output) -> anyhow::Result<()> {
    let docs = get_docs(c, "user", "").await?;
    if format != OutputFormat::Text {
        return print_docs(&docs, format);
    }
    let rows: Vec<Vec<String>> = docs
        .iter()
        .map(|d| {
            let locked = d["status"]["locked"].as_bool().unwrap_or(false);
            vec![
                doc_name(d),
                strs(&d["spec"]["roles"]).join(","),
                strs(&d["spec"]["traits"]["logins"]).join(","),
                if locked {
                    format!(
                        "until {}",
                        d["status"]["locked_until"].as_str().unwrap_or("?")
                    )
                } else {
                    "-".into()
                },
            ]
        })
        .collect();
    table(&["USER", "ROLES", "LOGINS", "LOCKED"], &rows);
    Ok(())
}

/// The invite (or reset) link for a new password, as a person or a script reads it.
fn print_invite(inv: InviteResponse, created: bool, format: OutputFormat) -> anyhow::Result<()> {
    let url = &inv.url;
    if format == OutputFormat::Json {
        println!(
            "{}",
            serde_json::json!({ "user": inv.username, "token": inv.token, "url": url, "proxy": inv.proxy_addr, "ca_pin": inv.ca_pin, "expires": ts(inv.expires_unix) })
        );
        return Ok(());
    }
    let left = Duration::from_secs(u64::try_from(inv.expires_unix - now_unix()).unwrap_or(0));
    println!(
        "User {:?} has been {} and needs to set a password. Share this link; it is valid for {} (until {}):\n\n  {url}\n\nOr, from a terminal:\n\n  hop signup {} --proxy {} --ca-pin {pin}\n",
        inv.username,
        if created { "created" } else { "reset" },
        human(left),
        ts(inv.expires_unix),
        inv.token,
        inv.proxy_addr,
        pin = inv.ca_pin,
    );
    Ok(())
}
