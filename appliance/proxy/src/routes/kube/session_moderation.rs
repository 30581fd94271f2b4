//! A moderated Kubernetes session while the stream relay ([`super::stream`]) runs it: what the
//! relay keeps of it ([`Moderation`]), how the owner's notices look on the wire (a
//! server-to-client WebSocket message on an exec channel), and the decision, each time someone
//! joins or leaves, to pause the owner's input, resume it, or end the session as the unmet
//! requirements' `on_leave` says, or because a moderator ended it for everyone ([`moderate`]).

use std::sync::Arc;
use std::time::Duration;

use hop_rbac::moderation::{OnLeave, SessionJoinRequirement};
use tokio::sync::{mpsc, watch};

use super::party::{KubeLive, terminated_by};

/// How long a moderated session's last notice has to reach its owner before the session ends.
const LAST_NOTICE: Duration = Duration::from_millis(300);

/// What a moderated session (`moderated.rs`) keeps while it runs.
pub struct Moderation {
    pub live: Arc<KubeLive>,
    /// The owner's `require_session_join` for `k8s` sessions.
    pub reqs: Vec<SessionJoinRequirement>,
    /// Lines for the owner, framed into the server's direction between its messages.
    pub notices: mpsc::Receiver<String>,
    /// What the owner was told before the relay started (who joined, the start): the
    /// recording begins with it.
    pub prelude: Vec<String>,
    /// The channel notices go on: stdout (1) with a terminal, else stderr (2).
    pub channel: u8,
}

/// A notice as the owner reads it.
pub fn notice_text(line: &str) -> String {
    format!("\r\n[hop: {line}]\r\n")
}

/// A server-to-client WebSocket message carrying `text` on exec channel `channel`.
pub fn notice_frame(channel: u8, text: &str) -> Vec<u8> {
    let mut payload = Vec::with_capacity(text.len() + 1);
    payload.push(channel);
    payload.extend_from_slice(text.as_bytes());
    hop_protocols::kube::stream::websocket::encode_frame(true, 0x2, &payload, None)
}

/// Why a moderated session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// Its requirements were no longer met and one says `on_leave: terminate` (the reason).
    Left(String),
    /// This moderator ended it for everyone.
    By(String),
}

/// Follows a moderated session's participants while it runs: pauses the owner's input or ends
/// the session (with the reason) as `on_leave` says when the requirements are no longer met,
/// and resumes it when they are again; ends it when a moderator asks. Never completes for a
/// session that is not moderated.
pub(super) async fn moderate(
    moderated: Option<(
        Arc<KubeLive>,
        Vec<SessionJoinRequirement>,
        watch::Sender<bool>,
    )>,
) -> Stop {
    let Some((live, reqs, paused)) = moderated else {
        return std::future::pending().await;
    };
    let mut changes = live.changes();
    let mut terminated = live.terminated();
    loop {
        // Seen before deciding: a departure after this is a change decided on next.
        changes.borrow_and_update();
        match live.unmet(&reqs) {
            Some(why) if live.on_leave(&reqs) == OnLeave::Terminate => {
                // No more of the owner's input while the last words go out.
                paused.send_replace(true);
                live.notice(format!("the session ends: it needs {why}"));
                tokio::time::sleep(LAST_NOTICE).await;
                return Stop::Left(format!("the session's moderators left: it needs {why}"));
            }
            Some(why) => {
                if !paused.send_replace(true) {
                    live.notice(format!(
                        "the session is paused until {why} joined; your input is held"
                    ));
                }
            }
            None => {
                if paused.send_replace(false) {
                    live.notice("the session resumes".into());
                }
            }
        }
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return std::future::pending().await;
                }
            }
            who = terminated_by(&mut terminated) => {
                paused.send_replace(true);
                live.notice(format!("{who} ended the session"));
                tokio::time::sleep(LAST_NOTICE).await;
                return Stop::By(who);
            }
        }
    }
}
