//! `hop recordings ls|export` and `hop play`: recorded sessions, from the user's side.
//!
//! This module owns fetching recordings from Auth with the current login (the `session`
//! list/read rule decides), the listing table, the exports (hop-storage's asciicast and JSON
//! lines writers), and the player: the recording is parsed as it streams in, each output event
//! is shown when [`PlaybackSchedule`] says it is due, and on a terminal the keys pause (space),
//! quit (q, Ctrl-C) and change speed (+, -), with the terminal in raw mode and restored on the
//! way out. It must never leave the user's terminal in raw mode, and never trust the recording's
//! bytes (they are parsed by hop-storage, which refuses what is damaged).

use std::io::{IsTerminal, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow};
use hop_platform::clock;
use hop_storage::recording::{
    AsciicastOptions, ChunkCursor, Event, PlaybackOptions, PlaybackSchedule, Recording,
    export_asciicast, export_json_lines, parse_header,
};
use tokio::sync::mpsc;

use super::profile;
use crate::cli::{OutputFormat, PlayArgs, PlayFormat, RecordingExportFormat, RecordingsCommand};
use hop_api::proto::session_recordings_client::SessionRecordingsClient;
use hop_api::proto::{GetRecordingRequest, ListRecordingsRequest, RecordingInfo};
use hop_net::connect::{status_error, tls_channel};

/// `--skip-idle` shortens pauses to this.
const IDLE_LIMIT: Duration = Duration::from_secs(2);

async fn client() -> anyhow::Result<SessionRecordingsClient<tonic::transport::Channel>> {
    let login = profile::current_login()?;
    let channel = tls_channel(&login.profile.proxy, &login.trust, Some(&login.cert)).await?;
    Ok(SessionRecordingsClient::new(channel))
}

pub async fn run(cmd: RecordingsCommand) -> anyhow::Result<()> {
    match cmd {
        RecordingsCommand::Ls {
            since,
            user,
            format,
        } => ls(since, user, format).await,
        RecordingsCommand::Export {
            session_id,
            format,
            output,
            include_input,
        } => {
            let bytes = fetch(&session_id).await?;
            let recording = Recording::parse(&bytes)
                .with_context(|| format!("recording {session_id} is damaged"))?;
            let mut out: Box<dyn Write> = match &output {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path)
                        .with_context(|| format!("cannot create {}", path.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let summary = match format {
                RecordingExportFormat::Asciicast => {
                    let opts = AsciicastOptions {
                        include_input,
                        ..Default::default()
                    };
                    export_asciicast(&recording, &opts, &mut out)
                }
                RecordingExportFormat::Json => export_json_lines(&recording, &mut out),
            }
            .with_context(|| format!("exporting recording {session_id}"))?;
            out.flush()?;
            if summary.truncated {
                eprintln!(
                    "warning: recording {session_id} stops early (its node stopped while writing it); exported up to the last complete chunk"
                );
            }
            if let Some(path) = output {
                eprintln!("Wrote {} events to {}", summary.lines, path.display());
            }
            Ok(())
        }
    }
}

async fn ls(
    since: Option<String>,
    user: Option<String>,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let since = super::admin::parse_when("--since", since.as_deref())?;
    let list = client()
        .await?
        .list_recordings(ListRecordingsRequest {
            since_unix_micros: u64::try_from(since).unwrap_or(0),
            user: user.unwrap_or_default(),
        })
        .await
        .map_err(status_error)?
        .into_inner()
        .recordings;
    if format == OutputFormat::Json {
        let v: Vec<serde_json::Value> = list.iter().map(json).collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if list.is_empty() {
        println!("No recorded sessions.");
        return Ok(());
    }
    println!("{}", table(&list));
    Ok(())
}

fn json(r: &RecordingInfo) -> serde_json::Value {
    serde_json::json!({
        "session_id": r.session_id,
        "kind": r.kind,
        "user": r.user,
        "login": r.login,
        "server_id": r.server_id,
        "node": r.server_name,
        "start": hop_api::timestamps::rfc3339(micros(r.start_unix_micros)),
        "end": hop_api::timestamps::rfc3339(micros(r.end_unix_micros)),
        "duration_ms": r.end_unix_micros.saturating_sub(r.start_unix_micros) / 1000,
        "size": r.size,
        "events": r.events,
        "exit_status": (r.exit_status >= 0).then_some(r.exit_status),
    })
}

fn micros(us: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(us)
}

/// The listing as a table: session id, user, login, node, start, duration, size.
fn table(list: &[RecordingInfo]) -> String {
    let rows: Vec<[String; 7]> = list
        .iter()
        .map(|r| {
            [
                r.session_id.clone(),
                r.user.clone(),
                r.login.clone(),
                r.server_name.clone(),
                hop_api::timestamps::rfc3339(micros(r.start_unix_micros)),
                duration(Duration::from_micros(
                    r.end_unix_micros.saturating_sub(r.start_unix_micros),
                )),
                size(r.size),
            ]
        })
        .collect();
    let head = [
        "SESSION ID",
        "USER",
        "LOGIN",
        "NODE",
        "START",
        "DURATION",
        "SIZE",
    ];
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
    let mut out = vec![line(head.to_vec())];
    for row in &rows {
        out.push(line(row.iter().map(String::as_str).collect()));
    }
    out.join("\n")
}

fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{}.{}s", s, d.subsec_millis() / 100),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

fn size(n: u64) -> String {
    const K: u64 = 1024;
    match n {
        0..K => format!("{n} B"),
        K..1_048_576 => format!("{:.1} KiB", n as f64 / K as f64),
        _ => format!("{:.1} MiB", n as f64 / 1_048_576.0),
    }
}

/// A recording's bytes as they arrive.
async fn stream(
    session_id: &str,
) -> anyhow::Result<tonic::Streaming<hop_api::proto::RecordingData>> {
    Ok(client()
        .await?
        .get_recording(GetRecordingRequest {
            session_id: session_id.to_string(),
        })
        .await
        .map_err(status_error)?
        .into_inner())
}

/// A whole recording in memory.
async fn fetch(session_id: &str) -> anyhow::Result<Vec<u8>> {
    let mut s = stream(session_id).await?;
    let mut bytes = Vec::new();
    while let Some(m) = s.message().await.map_err(status_error)? {
        bytes.extend_from_slice(&m.data);
    }
    Ok(bytes)
}

/// What the player shows.
enum Shown {
    Output(Vec<u8>),
    End,
}

/// `hop play`.
pub async fn play(args: PlayArgs) -> anyhow::Result<()> {
    let stdout_tty = std::io::stdout().is_terminal();
    let timed = args.format == PlayFormat::Pty && stdout_tty;
    let mut schedule = PlaybackSchedule::new(PlaybackOptions {
        speed: args.speed,
        idle_limit: args.skip_idle.then_some(IDLE_LIMIT),
    })
    .map_err(|e| anyhow!("--speed: {e}"))?;
    let mut s = stream(&args.session_id).await?;
    // Keys, on a terminal: a thread reads them (stdin blocks) and hands them over.
    let (keys_tx, mut keys) = mpsc::unbounded_channel::<u8>();
    let stdin = std::io::stdin();
    let _raw = if timed && stdin.is_terminal() {
        let raw = hop_platform::term::RawMode::enable(&stdin)
            .context("cannot put the terminal in raw mode")?;
        std::thread::spawn(move || {
            use std::io::Read;
            let mut b = [0u8; 1];
            while let Ok(1) = std::io::stdin().lock().read(&mut b) {
                if keys_tx.send(b[0]).is_err() {
                    break;
                }
            }
        });
        Some(raw)
    } else {
        drop(keys_tx);
        None
    };
    let mut out = std::io::stdout().lock();
    let mut buf: Vec<u8> = Vec::new();
    let mut cursor: Option<ChunkCursor> = None;
    let started = clock::now();
    let mut paused_total = Duration::ZERO;
    let mut quit = false;
    'stream: while let Some(m) = s.message().await.map_err(status_error)? {
        buf.extend_from_slice(&m.data);
        let mut used = 0usize;
        if cursor.is_none() {
            match parse_header(&buf).context("the recording is damaged")? {
                Some((h, len)) => {
                    cursor = Some(ChunkCursor::new(&h, len));
                    used = len;
                }
                None => continue,
            }
        }
        let Some(c) = cursor.as_mut() else { continue };
        let mut shown: Vec<(Duration, Shown)> = Vec::new();
        while let Some((chunk, len)) = c
            .parse_next(buf.get(used..).unwrap_or_default())
            .context("the recording is damaged")?
        {
            used += len;
            for e in chunk.events() {
                match e.event {
                    Event::Output(b) => shown.push((e.at, Shown::Output(b.to_vec()))),
                    Event::End { .. } => shown.push((e.at, Shown::End)),
                    _ => {}
                }
            }
        }
        buf.drain(..used);
        for (at, item) in shown {
            let bytes = match item {
                Shown::Output(b) => b,
                Shown::End => break 'stream,
            };
            if timed {
                let due = schedule.due(at);
                loop {
                    let elapsed = clock::since(started).saturating_sub(paused_total);
                    let wait = PlaybackSchedule::wait(due, elapsed);
                    if wait.is_zero() {
                        break;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => break,
                        k = keys.recv() => match k {
                            Some(b' ') => {
                                let t = clock::now();
                                // Paused until space again (or q).
                                loop {
                                    match keys.recv().await {
                                        Some(b' ') | None => break,
                                        Some(b'q' | 3) => { quit = true; break 'stream },
                                        _ => {}
                                    }
                                }
                                paused_total += clock::since(t);
                            }
                            Some(b'q' | 3) => { quit = true; break 'stream },
                            Some(b'+') => { let _ = schedule.set_speed((schedule.speed() * 2.0).min(hop_storage::recording::MAX_SPEED)); }
                            Some(b'-') => { let _ = schedule.set_speed((schedule.speed() / 2.0).max(hop_storage::recording::MIN_SPEED)); }
                            Some(_) => {}
                            None => {
                                // No more keys: sleep the rest.
                                tokio::time::sleep(wait).await;
                                break;
                            }
                        },
                    }
                }
            }
            out.write_all(&bytes)?;
            out.flush()?;
        }
    }
    let ended = cursor.as_ref().is_some_and(ChunkCursor::ended);
    if !ended && !quit {
        drop(out);
        drop(_raw);
        eprintln!("\nhop: the recording stops early (its node stopped while writing it)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listing_is_a_table() {
        let r = RecordingInfo {
            session_id: "0190a5c4-7d2e-7b3a-9f10-3c5d2e8a4b61".into(),
            user: "alice".into(),
            login: "root".into(),
            server_name: "node1".into(),
            start_unix_micros: 1_700_000_000_000_000,
            end_unix_micros: 1_700_000_075_500_000,
            size: 2048,
            ..Default::default()
        };
        let t = table(&[r]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("SESSION ID"), "{t}");
        assert!(lines[0].contains("DURATION"), "{t}");
        assert!(
            lines[1].contains("alice") && lines[1].contains("node1") && lines[1].contains("1m15s"),
            "{t}"
        );
        assert!(lines[1].ends_with("2.0 KiB"), "{t}");
        assert_eq!(duration(Duration::from_millis(4_250)), "4.2s");
        assert_eq!(duration(Duration::from_secs(7_260)), "2h01m");
    }
}
