//! One open web terminal: the WebSocket on one side, the node's session on the other.
//!
//! Binary frames from the page are keys (dropped for an observer), text frames control
//! ([`Control`]); the node's output goes to the page in binary frames cut at UTF-8 boundaries.
//! The page is told, in a JSON text frame, when the terminal is ready and why it ended:
//! `{"type":"ready"}`, `{"type":"exit","status":N}`, `{"type":"end","code":…,"reason":…}`.
//! Every [`RECHECK`] the web session and admission are asked again: a logout, a lock, a
//! deletion, a role taken away end the terminal with the reason. That goes on while a write
//! waits on a side that does not read (a page that stopped reading the node's output, a node
//! that stopped reading keys): the wait is bounded by [`STALL`], so a stalled peer can neither
//! hold the terminal open past a refusal nor keep its task and the node's session forever.
//!
//! A shell under per-session MFA first passes the prompt (`mfa`): the terminal is opened with
//! the one-minute certificate marked for its node and login, and asked again with that
//! certificate (its expiry ends the terminal only where a role sets `disconnect_expired_cert`,
//! as for `hop ssh`).
//!
//! It decides nothing itself: the session table and admission answer.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use hop_admission::Refusal;
use hop_auth::admission::Presented;
use hop_protocols::web_terminal::{Control, Utf8Boundary};
use russh::ChannelMsg;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::node::{self, Far, NodeLogin, Opened};
use super::{SETUP_DEADLINE, Want};
use crate::admission::{RECHECK, UserCert};
use crate::web::WebRoom;
use crate::web::guard::WebCaller;
use crate::web::sessions::State;

/// The longest one write may wait on its reader (the page for the node's output, the node for
/// the page's keys) before the terminal ends as stalled.
pub(super) const STALL: Duration = Duration::from_secs(30);

/// How long the page is given to take the closing status and close frame.
const CLOSE_DEADLINE: Duration = Duration::from_secs(5);

/// What the terminal was admitted for, asked again every [`RECHECK`].
struct Terms {
    route: hop_admission::Route,
    login: Option<String>,
    cert: Arc<UserCert>,
    target: Option<hop_ca::SessionMfaTarget>,
    disconnect_expired_cert: bool,
}

/// Why a terminal ended, as the page is told.
#[derive(Debug)]
pub(super) struct Ending {
    pub code: &'static str,
    pub reason: String,
}

impl Ending {
    pub(super) fn new(code: &'static str, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }

    fn refused(r: &Refusal) -> Self {
        Self::new(r.code(), r.to_string())
    }
}

/// Serves one upgraded terminal socket until either side ends it.
pub(super) async fn run(room: Arc<WebRoom>, caller: WebCaller, want: Want, mut ws: WebSocket) {
    let found = &caller.session;
    let remote = caller.remote;
    let with = match &want {
        Want::Shell { login, node, .. } => {
            match super::mfa::login_for(&room, &caller, (login, node), &mut ws).await {
                Ok(w) => w,
                Err(e) => return close(&mut ws, e).await,
            }
        }
        Want::Join { .. } => NodeLogin::of(found),
    };
    let opening = async {
        match &want {
            Want::Shell {
                login,
                node,
                cols,
                rows,
            } => node::shell(&room, &with, remote, (login, node), (*cols, *rows)).await,
            Want::Join { session, mode } => node::join(&room, found, remote, session, mode).await,
        }
    };
    let opened = match tokio::time::timeout(SETUP_DEADLINE, opening).await {
        Ok(Ok(o)) => o,
        Ok(Err(words)) => return close(&mut ws, Ending::new("refused", words)).await,
        Err(_) => {
            let e = Ending::new("timeout", "the node did not open the session in time");
            return close(&mut ws, e).await;
        }
    };
    if send_status(&mut ws, serde_json::json!({"type": "ready"}))
        .await
        .is_err()
    {
        return;
    }
    let ending = relay(&room, &caller, opened, &mut ws).await;
    close(&mut ws, ending).await;
}

/// What one turn of the loop saw.
enum Turn {
    Page(Option<Result<Message, axum::Error>>),
    Node(Output),
    Tick,
}

/// The node's side, one event at a time.
enum Output {
    Bytes(Vec<u8>),
    Exit(u32),
    Other,
    Closed,
}

async fn next_output(far: &mut Far, buf: &mut [u8]) -> Output {
    match far {
        Far::Shell { read, .. } => match read.wait().await {
            Some(ChannelMsg::Data { data }) => Output::Bytes(data.to_vec()),
            Some(ChannelMsg::ExtendedData { data, .. }) => Output::Bytes(data.to_vec()),
            Some(ChannelMsg::ExitStatus { exit_status }) => Output::Exit(exit_status),
            Some(ChannelMsg::Close) | None => Output::Closed,
            Some(_) => Output::Other,
        },
        Far::Join { stream, .. } => match stream.read(buf).await {
            Ok(0) | Err(_) => Output::Closed,
            Ok(n) => Output::Bytes(buf.get(..n).unwrap_or_default().to_vec()),
        },
    }
}

/// Moves bytes until one side ends or the terminal may no longer run; says why it ended.
async fn relay(
    room: &WebRoom,
    caller: &WebCaller,
    mut opened: Opened,
    ws: &mut WebSocket,
) -> Ending {
    let terms = Terms {
        route: opened.route,
        login: opened.login.clone(),
        cert: opened.cert.clone(),
        target: opened.target.clone(),
        disconnect_expired_cert: opened.disconnect_expired_cert,
    };
    let check = || why_not(room, caller, &terms);
    let mut utf8 = Utf8Boundary::default();
    let mut buf = vec![0u8; 32 * 1024];
    let mut tick = tokio::time::interval(RECHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut typed = false;
    let mut exit = None;
    loop {
        let turn = tokio::select! {
            m = ws.recv() => Turn::Page(m),
            o = next_output(&mut opened.far, &mut buf) => Turn::Node(o),
            _ = tick.tick() => Turn::Tick,
        };
        match turn {
            Turn::Page(Some(Ok(Message::Binary(keys)))) => {
                typed = true;
                let typing = input(&mut opened.far, &keys);
                if let Err(e) = watched(typing, &mut tick, STALL, check)
                    .await
                    .and_then(|r| r)
                {
                    return e;
                }
            }
            Turn::Page(Some(Ok(Message::Text(text)))) => match Control::parse(text.as_str()) {
                Ok(Control::Resize { cols, rows }) => {
                    let resizing = resize(&opened.far, cols, rows);
                    if let Err(e) = watched(resizing, &mut tick, STALL, check).await {
                        return e;
                    }
                }
                Err(e) => return Ending::new("bad_request", e.to_string()),
            },
            Turn::Page(Some(Ok(Message::Close(_))) | None | Some(Err(_))) => {
                return Ending::new("closed", "the page closed the terminal");
            }
            Turn::Page(Some(Ok(_))) | Turn::Node(Output::Other) => {}
            Turn::Node(Output::Bytes(b)) => {
                let out = utf8.push(&b);
                if !out.is_empty() {
                    let sending = ws.send(Message::Binary(out.into()));
                    match watched(sending, &mut tick, STALL, check).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return Ending::new("closed", "the page went away"),
                        Err(e) => return e,
                    }
                }
            }
            Turn::Node(Output::Exit(status)) => exit = Some(status),
            Turn::Node(Output::Closed) => {
                let rest = utf8.flush();
                if !rest.is_empty() {
                    let sending = ws.send(Message::Binary(rest.into()));
                    if let Err(e) = watched(sending, &mut tick, STALL, check).await {
                        return e;
                    }
                }
                return ended_by_node(room, caller, &terms, exit);
            }
            Turn::Tick => {
                if typed {
                    room.sessions.renew(&caller.session.key, room.auth.now());
                    typed = false;
                }
                if let Some(e) = check() {
                    return e;
                }
            }
        }
    }
}

/// Awaits `work` (one write to the page or to the node) while still asking `why_not` every
/// tick: a refusal, or a write that waits longer than `stall`, ends the terminal rather than
/// leaving it parked on a reader that does not read.
async fn watched<T>(
    work: impl Future<Output = T>,
    tick: &mut tokio::time::Interval,
    stall: Duration,
    why_not: impl Fn() -> Option<Ending>,
) -> Result<T, Ending> {
    let stalled = tokio::time::sleep(stall);
    tokio::pin!(work, stalled);
    loop {
        tokio::select! {
            biased;
            done = &mut work => return Ok(done),
            () = &mut stalled => {
                let words = "the other side stopped reading the terminal";
                return Err(Ending::new("stalled", words));
            }
            _ = tick.tick() => {
                if let Some(e) = why_not() {
                    return Err(e);
                }
            }
        }
    }
}

/// Why the node's side closed: a refusal that ended it (the live watch shut its leg), else the
/// shell's end.
fn ended_by_node(room: &WebRoom, caller: &WebCaller, terms: &Terms, exit: Option<u32>) -> Ending {
    if let Some(e) = why_not(room, caller, terms) {
        return e;
    }
    match exit {
        Some(status) => Ending::new("exit", format!("the shell exited with status {status}")),
        None => Ending::new("ended", "the session ended"),
    }
}

/// Why the terminal may no longer run, if so: its web session ended (logout, or admission
/// ended it), or admission now refuses the session itself.
fn why_not(room: &WebRoom, caller: &WebCaller, terms: &Terms) -> Option<Ending> {
    match room.sessions.state(&caller.session.key) {
        State::Live => {}
        State::Ended(r) => return Some(Ending::refused(&r)),
        State::Gone => {
            return Some(Ending::new(
                "logged_out",
                "the web session ended (logged out or idle)",
            ));
        }
    }
    let auth = &room.auth;
    let snap = match auth.admission_snapshot() {
        Ok(s) => s,
        Err(e) => return Some(Ending::refused(&auth.unavailable(e))),
    };
    // The terminal's own certificate (the marked one under per-session MFA), for its target.
    let cert = &terms.cert;
    let presented = Presented {
        identity: &cert.identity,
        issued_at: cert.issued_at,
        expires: cert.expires,
        login: terms.login.as_deref(),
        target: terms
            .target
            .as_ref()
            .map(hop_auth::admission::session_target),
    };
    match auth.admit_on(&snap, &presented, terms.route) {
        Ok(_) => None,
        Err(Refusal::Expired { .. }) if !terms.disconnect_expired_cert => None,
        Err(r) => Some(Ending::refused(&r)),
    }
}

async fn input(far: &mut Far, keys: &axum::body::Bytes) -> Result<(), Ending> {
    let lost = |e: &dyn std::fmt::Display| Ending::new("ended", format!("the session ended: {e}"));
    match far {
        Far::Shell { write, .. } => write.data_bytes(keys.clone()).await.map_err(|e| lost(&e)),
        Far::Join { stream, peer } if *peer => stream.write_all(keys).await.map_err(|e| lost(&e)),
        Far::Join { .. } => Ok(()),
    }
}

async fn resize(far: &Far, cols: u16, rows: u16) {
    if let Far::Shell { write, .. } = far {
        let _ = write
            .window_change(u32::from(cols), u32::from(rows), 0, 0)
            .await;
    }
}

async fn send_status(ws: &mut WebSocket, status: serde_json::Value) -> Result<(), axum::Error> {
    ws.send(Message::Text(status.to_string().into())).await
}

/// Tells the page why the terminal ended, then closes the socket (1000: the session ended;
/// 1008: a refusal); a page that does not take them within [`CLOSE_DEADLINE`] is dropped.
async fn close(ws: &mut WebSocket, ending: Ending) {
    tracing::debug!(code = ending.code, reason = %ending.reason, "web terminal ended");
    let status = serde_json::json!({"type": "end", "code": ending.code, "reason": ending.reason});
    let normal = matches!(ending.code, "exit" | "ended" | "closed");
    let frame = CloseFrame {
        code: if normal { 1000 } else { 1008 },
        reason: ending.code.into(),
    };
    let telling = async {
        let _ = send_status(ws, status).await;
        let _ = ws.send(Message::Close(Some(frame))).await;
    };
    let _ = tokio::time::timeout(CLOSE_DEADLINE, telling).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticks() -> tokio::time::Interval {
        tokio::time::interval(Duration::from_millis(10))
    }

    #[tokio::test]
    async fn a_write_that_never_completes_still_ends_on_a_refusal() {
        let asked = std::cell::Cell::new(0);
        let why_not = || {
            asked.set(asked.get() + 1);
            (asked.get() > 3).then(|| Ending::new("locked", "the user is locked"))
        };
        let mut tick = ticks();
        let never = std::future::pending::<()>();
        let ended = tokio::time::timeout(
            Duration::from_secs(5),
            watched(never, &mut tick, Duration::from_secs(60), why_not),
        )
        .await
        .expect("a refusal ends a parked write");
        assert_eq!(ended.unwrap_err().code, "locked");
    }

    #[tokio::test]
    async fn a_write_that_waits_too_long_ends_the_terminal_as_stalled() {
        let mut tick = ticks();
        let never = std::future::pending::<()>();
        let ended = tokio::time::timeout(
            Duration::from_secs(5),
            watched(never, &mut tick, Duration::from_millis(100), || None),
        )
        .await
        .expect("a stalled write ends");
        assert_eq!(ended.unwrap_err().code, "stalled");
    }

    #[tokio::test]
    async fn a_write_that_completes_gives_its_result() {
        let mut tick = ticks();
        let done = watched(async { 7 }, &mut tick, Duration::from_secs(60), || {
            Some(Ending::new("locked", "never asked before a ready write"))
        })
        .await;
        assert_eq!(done.ok(), Some(7));
    }
}
