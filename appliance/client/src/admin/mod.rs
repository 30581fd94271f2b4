//! `hop admin`: the administrator's tool (Teleport's `tctl`).
//!
//! This module owns how admin commands reach the Auth API (the admin socket of a local data dir,
//! or the proxy with the current login's certificate) and how results are shown: tables for
//! people, JSON or YAML for scripts. Every decision is the server's. [`run`] hands each command
//! to the module of the resource it is about: `status`, `nodes` (and the inventory), `users`,
//! `tokens`, `bots`, `resources` (create, get, rm of any kind), `authorities` (export, sign), `audit`
//! and `backup` (backup and restore, which works offline);
//! locks live in `crate::locks`.

mod audit;
mod authorities;
mod backup;
mod bots;
mod nodes;
mod resources;
mod status;
mod tokens;
mod users;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail};
use tonic::transport::Channel;

use super::profile;
use crate::cli::{AdminArgs, AdminCommand, InventoryCommand, OutputFormat};
use hop_api::ADMIN_SOCKET;
use hop_api::proto::GetResourcesRequest;
use hop_api::proto::auth_admin_client::AuthAdminClient;
use hop_config::{DEFAULT_DATA_DIR, parse_duration};
use hop_net::connect::{admin_socket_channel, status_error, tls_channel};
use hop_platform::clock;

pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    if backup::is_offline(&args) {
        return backup::run_offline(args).await;
    }
    let ch = channel(&args).await?;
    let mut c = AuthAdminClient::new(ch.clone());
    match args.command {
        AdminCommand::Status(out) => status::show(&mut c, out).await,
        AdminCommand::Nodes(cmd) => nodes::run(&mut c, cmd).await,
        AdminCommand::Inventory(InventoryCommand::Ls(out)) => nodes::inventory(&mut c, out).await,
        AdminCommand::Users(cmd) => users::run(&mut c, cmd).await,
        AdminCommand::Lock(a) => super::locks::lock(&mut c, a).await,
        AdminCommand::Locks(cmd) => super::locks::locks(&mut c, cmd).await,
        AdminCommand::Audit(cmd) => audit::run(&mut c, cmd).await,
        AdminCommand::Loadtest(_) => bail!("`hop admin loadtest` does not use the admin API"),
        AdminCommand::Tokens(cmd) => tokens::run(&mut c, cmd).await,
        AdminCommand::Bots(cmd) => bots::run(ch, cmd).await,
        AdminCommand::Create { file, force } => resources::create(&mut c, &file, force).await,
        AdminCommand::Get { resource, out } => resources::get(&mut c, &resource, out).await,
        AdminCommand::Rm { resource } => resources::remove(&mut c, &resource).await,
        AdminCommand::Auth(cmd) => authorities::run(&mut c, ch, cmd).await,
        AdminCommand::Backup(a) => backup::online(&mut c, a).await,
        AdminCommand::Restore(_) => bail!("`hop admin restore` does not use the admin API"),
    }
}

async fn channel(args: &AdminArgs) -> anyhow::Result<Channel> {
    if let Some(addr) = &args.auth_server {
        let login = profile::current_login()?;
        return Ok(tls_channel(addr, &login.trust, Some(&login.cert)).await?);
    }
    let dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    Ok(admin_socket_channel(dir.join(ADMIN_SOCKET)).await?)
}

/// Prints rows as an aligned table with a header.
pub(super) fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0)))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(header.iter().map(|s| s.to_string()).collect());
    line(widths.iter().map(|w| "-".repeat(*w)).collect());
    for r in rows {
        line(r.clone());
    }
}

pub(super) fn print_docs(docs: &[serde_json::Value], format: OutputFormat) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&docs)?),
        OutputFormat::Yaml | OutputFormat::Text => {
            for (i, d) in docs.iter().enumerate() {
                if i > 0 {
                    println!("---");
                }
                print!(
                    "{}",
                    serde_saphyr::to_string(d).map_err(|e| anyhow!("cannot render YAML: {e}"))?
                );
            }
        }
    }
    Ok(())
}

/// Resources of a kind (all of them when `name` is empty) as JSON documents.
pub(super) async fn get_docs(
    c: &mut AuthAdminClient<Channel>,
    kind: &str,
    name: &str,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let r = c
        .get_resources(GetResourcesRequest {
            kind: kind.into(),
            name: name.into(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    Ok(r.json
        .iter()
        .map(|j| serde_json::from_str(j))
        .collect::<Result<_, _>>()?)
}

/// A JSON array of strings (other items skipped; not an array: none).
fn strs(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// A resource's `metadata.name`, or nothing.
fn doc_name(d: &serde_json::Value) -> String {
    d["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// `--ttl` in seconds; 0 (the server's default) when not given.
fn ttl_seconds(ttl: Option<&str>) -> anyhow::Result<u64> {
    Ok(match ttl {
        Some(t) => parse_duration(t)
            .map_err(|e| anyhow!("--ttl: {e}"))?
            .as_secs(),
        None => 0,
    })
}

/// `--since`/`--until`: RFC 3339, or an age such as `90m`, `24h`, `7d`; microseconds since the epoch.
pub(crate) fn parse_when(flag: &str, v: Option<&str>) -> anyhow::Result<i64> {
    let Some(v) = v else { return Ok(0) };
    let t = if let Ok(d) = parse_duration(v) {
        clock::wall()
            .checked_sub(d)
            .ok_or_else(|| anyhow!("{flag}: {v:?} is too far back"))?
    } else {
        let odt = time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
            .map_err(|_| anyhow!("{flag}: expected RFC 3339 (2026-11-21T10:00:00Z) or an age (90m, 24h, 7d), got {v:?}"))?;
        SystemTime::from(odt)
    };
    Ok(t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
        .max(1))
}

fn now_unix() -> i64 {
    clock::wall()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 && s % 3600 < 60 {
        format!("{}h", (s + 30) / 3600)
    } else if s >= 60 {
        format!("{}m", s.div_ceil(60))
    } else {
        format!("{s}s")
    }
}
