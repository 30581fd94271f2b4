//! `hop join SESSION [--mode observer|peer]`: another user's (or one's own) live SSH session in
//! this terminal, through the proxy (ALPN `hop-join`).
//!
//! The terminal is put in raw mode when stdin is one. An observer's keys are not sent; Ctrl-]
//! (or q, for an observer or a moderator) leaves. A peer's keys go into the session's terminal.
//! A moderator's `t` ends the session for everyone.

use std::io::IsTerminal;
use std::sync::Arc;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::profile;
use crate::cli::JoinMode;
use hop_api::dial::join::MODERATOR_TERMINATE;
use hop_net::connect::open_session;
use hop_net::trust::client_config;
use hop_net::tunnel::ALPN_JOIN;

/// Ctrl-]: leave the session.
const DETACH: u8 = 0x1d;

pub async fn join(session_id: String, mode: JoinMode) -> anyhow::Result<()> {
    let login = profile::current_login()?;
    let cfg = Arc::new(client_config(&login.trust, Some(&login.cert), ALPN_JOIN)?);
    let mode_name = match mode {
        JoinMode::Observer => "observer",
        JoinMode::Peer => "peer",
        JoinMode::Moderator => "moderator",
    };
    let target = serde_json::json!({"session_id": session_id, "mode": mode_name}).to_string();
    let local = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let (stream, pending) = open_session(&login.profile.proxy, cfg, &target, local).await?;
    let interactive = std::io::stdin().is_terminal();
    let _raw = if interactive {
        Some(hop_platform::term::RawMode::enable(&std::io::stdin()).context("raw terminal")?)
    } else {
        None
    };
    if interactive {
        let hint = match mode {
            JoinMode::Peer => "Ctrl-] leaves",
            JoinMode::Observer => "q or Ctrl-] leaves",
            JoinMode::Moderator => "t ends the session for everyone, q or Ctrl-] leaves",
        };
        eprint!("[hop: joined session {session_id} as {mode_name}; {hint}]\r\n");
    }
    let (mut r, mut w) = tokio::io::split(stream);
    let mut stdout = tokio::io::stdout();
    let output = async {
        stdout.write_all(&pending).await?;
        stdout.flush().await?;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = r.read(&mut buf).await?;
            if n == 0 {
                return Ok::<(), std::io::Error>(());
            }
            stdout.write_all(buf.get(..n).unwrap_or_default()).await?;
            stdout.flush().await?;
        }
    };
    let input = async {
        let mut stdin = tokio::io::stdin();
        let mut buf = vec![0u8; 4096];
        loop {
            let n = stdin.read(&mut buf).await?;
            if n == 0 {
                // Nothing more to type; keep watching until the session ends.
                std::future::pending::<()>().await;
            }
            let keys = buf.get(..n).unwrap_or_default();
            // A moderator's `t` (typed, or a line of input when standard input is not a
            // terminal) ends the session for everyone: the node ends it and this stream with it.
            if mode == JoinMode::Moderator && keys.contains(&b't') {
                w.write_all(MODERATOR_TERMINATE).await?;
                w.flush().await?;
                continue;
            }
            let watching = mode != JoinMode::Peer && interactive;
            if keys.contains(&DETACH) || (watching && keys.contains(&b'q')) {
                return Ok::<(), std::io::Error>(());
            }
            if mode == JoinMode::Peer {
                w.write_all(keys).await?;
            }
        }
    };
    tokio::select! {
        r = output => r.context("the session stream")?,
        r = input => r.context("reading the keyboard")?,
    }
    if interactive {
        eprint!("\r\n[hop: left session {session_id}]\r\n");
    }
    Ok(())
}
