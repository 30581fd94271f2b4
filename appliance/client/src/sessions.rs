//! `hop sessions ls`: the cluster's live sessions, from their trackers, as the user may see
//! them (their own, or all of them with the `session` `list` rule; Auth decides).

use super::profile;
use crate::cli::{OutputFormat, SessionsCommand};
use hop_api::proto::auth_public_client::AuthPublicClient;
use hop_api::proto::{ListSessionsRequest, SessionTrackerInfo};
use hop_net::connect::{status_error, tls_channel};

pub async fn run(cmd: SessionsCommand) -> anyhow::Result<()> {
    match cmd {
        SessionsCommand::Ls { format } => ls(format).await,
    }
}

async fn ls(format: OutputFormat) -> anyhow::Result<()> {
    let login = profile::current_login()?;
    let channel = tls_channel(&login.profile.proxy, &login.trust, Some(&login.cert)).await?;
    let list = AuthPublicClient::new(channel)
        .list_sessions(ListSessionsRequest {})
        .await
        .map_err(status_error)?
        .into_inner()
        .sessions;
    if format == OutputFormat::Json {
        let v: Vec<serde_json::Value> = list.iter().map(json).collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if list.is_empty() {
        println!("No live sessions.");
        return Ok(());
    }
    println!("{}", table(&list));
    Ok(())
}

fn json(t: &SessionTrackerInfo) -> serde_json::Value {
    serde_json::json!({
        "session_id": t.session_id,
        "kind": t.kind,
        "route": t.route,
        "user": t.user,
        "participants": t.participants,
        "host_id": t.host_id,
        "server": t.server,
        "target": t.target,
        "login": t.login,
        "state": t.state,
        "created": t.created,
        "last_seen": t.last_seen,
    })
}

/// Where a session runs, for people: the node name, else the database or application, else
/// the host id.
fn place(t: &SessionTrackerInfo) -> String {
    [&t.server, &t.target, &t.host_id]
        .into_iter()
        .find(|s| !s.is_empty())
        .cloned()
        .unwrap_or_default()
}

fn table(list: &[SessionTrackerInfo]) -> String {
    let head = [
        "SESSION ID",
        "KIND",
        "USER",
        "LOGIN",
        "WHERE",
        "STATE",
        "CREATED",
        "PARTICIPANTS",
    ];
    let rows: Vec<[String; 8]> = list
        .iter()
        .map(|t| {
            [
                t.session_id.clone(),
                t.kind.clone(),
                t.user.clone(),
                t.login.clone(),
                place(t),
                t.state.clone(),
                t.created.clone(),
                t.participants.join(","),
            ]
        })
        .collect();
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
    std::iter::once(line(head.to_vec()))
        .chain(
            rows.iter()
                .map(|r| line(r.iter().map(String::as_str).collect())),
        )
        .collect::<Vec<_>>()
        .join("\n")
}
