//! `hop admin audit`: search the audit log, verify its hash chains, export it as JSON lines.

use std::io::Write as _;

use tonic::transport::Channel;

use super::{parse_when, table};
use crate::cli::{AuditCommand, OutputFormat};
use hop_api::proto::auth_admin_client::AuthAdminClient;
use hop_api::proto::{
    ExportEventsRequest, SearchEventsRequest, VerifyAuditRequest, VerifyAuditResponse,
};
use hop_net::connect::status_error;

pub(super) async fn run(c: &mut AuthAdminClient<Channel>, cmd: AuditCommand) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::Search {
            since,
            until,
            types,
            user,
            session,
            text,
            oldest_first,
            limit,
            cursor,
            out,
        } => {
            let r = c
                .search_events(SearchEventsRequest {
                    from_unix_micros: parse_when("--since", since.as_deref())?,
                    to_unix_micros: parse_when("--until", until.as_deref())?,
                    event_types: types,
                    user: user.unwrap_or_default(),
                    session_id: session.unwrap_or_default(),
                    text: text.unwrap_or_default(),
                    oldest_first,
                    limit,
                    cursor: cursor.unwrap_or_default(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            print_events(&r.events_json, out.format);
            if !r.next_cursor.is_empty() {
                eprintln!("More events: --cursor {}", r.next_cursor);
            }
            Ok(())
        }
        AuditCommand::Verify { since } => {
            let r = c
                .verify_audit(VerifyAuditRequest {
                    since_unix_micros: parse_when("--since", since.as_deref())?,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            report_verification(&r);
            Ok(())
        }
        AuditCommand::Export { since, until } => export(c, since, until).await,
    }
}

/// Events as the JSON lines they are, or a table for people.
fn print_events(events_json: &[String], format: OutputFormat) {
    if format != OutputFormat::Text {
        for e in events_json {
            println!("{e}");
        }
        return;
    }
    let rows: Vec<Vec<String>> = events_json
        .iter()
        .filter_map(|j| serde_json::from_str::<serde_json::Value>(j).ok())
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
            vec![
                s("time"),
                s("event"),
                s("code"),
                s("user"),
                if e["success"].as_bool().unwrap_or(true) {
                    "ok".into()
                } else {
                    format!("failed: {}", s("error"))
                },
            ]
        })
        .collect();
    table(&["TIME", "EVENT", "CODE", "USER", "OUTCOME"], &rows);
}

/// Says whether the chains are intact; a broken log exits with status 2.
fn report_verification(r: &VerifyAuditResponse) {
    if r.intact {
        println!(
            "Audit log intact: {} events in {} daily chains verified.",
            r.events_checked, r.segments
        );
        return;
    }
    println!(
        "AUDIT LOG BROKEN at event seq {} (id {}): {}",
        r.break_seq, r.break_id, r.first_break
    );
    println!(
        "{} events in {} daily chains checked before the break.",
        r.events_checked, r.segments
    );
    std::process::exit(2);
}

async fn export(
    c: &mut AuthAdminClient<Channel>,
    since: Option<String>,
    until: Option<String>,
) -> anyhow::Result<()> {
    let mut stream = c
        .export_events(ExportEventsRequest {
            from_unix_micros: parse_when("--since", since.as_deref())?,
            to_unix_micros: parse_when("--until", until.as_deref())?,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let mut out = std::io::stdout().lock();
    while let Some(chunk) = stream.message().await.map_err(status_error)? {
        out.write_all(&chunk.data)?;
    }
    out.flush()?;
    Ok(())
}
