//! Joining a live SSH session through the proxy (`hop join SESSION --mode observer|peer`, ALPN
//! `hop-join`).
//!
//! This module owns the decision and the routing: the session is found from its tracker
//! (`auth::trackers`: who owns it, which node agent hosts it; never from the audit log), the joiner must be its owner
//! or hold a role whose `join_sessions` allows the owner's roles in that mode, the attempt is
//! audited (`session.join`, and `session.leave` when the joiner's stream ends), and the stream is carried to the node, which attaches it to the
//! session's terminal (`node/party.rs`). The web UI's terminal joins through `open` too.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hop_admission::Route;

use hop_protocols::tunnel::Frame;
use serde::Deserialize;

use super::dial::{AgentHold, accept, dial_agent, refuse};
use crate::admission::{Live, LiveWatch, UserCert, admit, both_legs};
use crate::tunnels::{AgentStream, TunnelRegistry};
use hop_api::dial::join::JoinDial;
use hop_auth::AuthServer;
use hop_auth::audit::EventKind;
use hop_auth::trackers::{SessionKind, TrackerError, TrackerState};
use hop_net::tunnel::{FramedStream, relay};

/// What `hop join` asks for (the Dial's target, as JSON).
#[derive(Debug, Deserialize)]
pub struct JoinRequest {
    pub session_id: String,
    pub mode: String,
}

/// The owner and host of a session, from its tracker.
struct SessionInfo {
    owner: String,
    host_id: String,
    server: String,
}

/// Why a session cannot be joined, before any role is asked: the user's (a wrong or stale id, a
/// session of another kind) or the tracker store's.
#[derive(Debug, thiserror::Error)]
enum SessionLookupError {
    #[error("no session {id} is live (`hop sessions ls` lists them)")]
    NotLive { id: String },
    #[error("cannot read the session's tracker: {0}")]
    Tracker(#[source] TrackerError),
    #[error("session {id} is a {kind} session; only SSH sessions can be joined")]
    NotSsh { id: String, kind: &'static str },
    #[error("session {id} has ended")]
    Ended { id: String },
}

fn find_session(auth: &AuthServer, id: &str) -> Result<SessionInfo, SessionLookupError> {
    let unknown = || SessionLookupError::NotLive { id: id.to_string() };
    let tracker = auth
        .tracker(id)
        .map_err(|e| match e {
            TrackerError::BadSessionId(_) => unknown(),
            other => SessionLookupError::Tracker(other),
        })?
        .ok_or_else(unknown)?
        .value;
    if tracker.kind != SessionKind::Ssh {
        return Err(SessionLookupError::NotSsh {
            id: id.to_string(),
            kind: tracker.kind.name(),
        });
    }
    if tracker.state == TrackerState::Terminated {
        return Err(SessionLookupError::Ended { id: id.to_string() });
    }
    Ok(SessionInfo {
        owner: tracker.user,
        host_id: tracker.host_id,
        server: tracker.server,
    })
}

/// Serves one `hop-join` connection.
pub async fn serve(
    stream: AgentStream,
    cert: UserCert,
    remote: SocketAddr,
    registry: Arc<TunnelRegistry>,
    auth: Arc<AuthServer>,
) {
    let mut client = FramedStream::new(stream);
    let dial = match client.read_frame(Duration::from_secs(10)).await {
        Ok(Frame::Dial(d)) => d,
        Ok(_) | Err(_) => return,
    };
    let sid = dial.session_id;
    let joined = match open(&auth, &registry, &cert, remote, &dial.target, sid).await {
        Ok(j) => j,
        Err(e) => return refuse(&mut client, sid, e).await,
    };
    if !accept(&mut client, sid).await {
        return;
    }
    let Joined {
        agent,
        hold: _agent_hold,
        live,
        session_id,
        departure: _departure,
    } = joined;
    let _watch = LiveWatch::start(
        auth.clone(),
        Live {
            sockets: both_legs(client.get_ref(), agent.get_ref()),
            ..live
        },
    );
    let (c, c_pending) = client.into_inner();
    let (a, a_pending) = agent.into_inner();
    if let Err(e) = relay(c, c_pending, a, a_pending).await {
        tracing::debug!(session = %session_id, error = %e, "join stream ended with an error");
    }
}

/// A join the node agent took: its data connection (past the `DialResult`), the connection's
/// place in the limits, and what the live watch needs (without sockets: the caller adds its
/// legs).
pub(crate) struct Joined {
    pub(crate) agent: FramedStream<AgentStream>,
    pub(crate) hold: AgentHold,
    pub(crate) live: Live,
    pub(crate) session_id: String,
    /// Writes `session.leave` when dropped: keep it as long as the joiner's stream.
    pub(crate) departure: Departure,
}

/// A joiner's presence in a session, from the proxy's side: its end (the joiner left, was
/// disconnected, or the session ended) is audited as `session.leave` with how long they stayed.
pub(crate) struct Departure {
    auth: Arc<AuthServer>,
    user: String,
    session_id: String,
    mode: String,
    remote: SocketAddr,
    since: std::time::Instant,
}

impl Drop for Departure {
    fn drop(&mut self) {
        let ev = self
            .auth
            .event(EventKind::SessionLeave, &self.user)
            .remote(Some(self.remote))
            .field("session_id", std::mem::take(&mut self.session_id))
            .field("mode", std::mem::take(&mut self.mode))
            .field(
                "duration_ms",
                u64::try_from(hop_platform::clock::since(self.since).as_millis())
                    .unwrap_or(u64::MAX),
            );
        self.auth.emit(ev);
    }
}

/// Decides a join (`target`: the JSON [`JoinRequest`]) for `cert` and carries it to the node
/// hosting the session: admission on the `join` route, the session from its tracker, the
/// joiner's roles, the `session.join` event, the joiner added to the tracker. The words of an
/// error are for the user. `hop join` and the web UI's terminal both join through here.
pub(crate) async fn open(
    auth: &Arc<AuthServer>,
    registry: &TunnelRegistry,
    cert: &UserCert,
    remote: SocketAddr,
    target: &str,
    sid: [u8; 16],
) -> Result<Joined, String> {
    let identity = &cert.identity;
    let admitted = admit(auth, cert, None, Route::Join, remote).map_err(|r| r.to_string())?;
    // A joiner's certificate ends its watch at expiry when a role asks for it.
    let admitted_expiry = admitted.checker().disconnect_expired_cert();
    let req: JoinRequest =
        serde_json::from_str(target).map_err(|e| format!("malformed join request: {e}"))?;
    if !hop_rbac::role::JOIN_MODES.contains(&req.mode.as_str()) {
        return Err(format!(
            "unknown mode {:?}: observer, peer or moderator",
            req.mode
        ));
    }
    let decided = {
        let (auth, id, req_id, mode) = (
            auth.clone(),
            identity.clone(),
            req.session_id.clone(),
            req.mode.clone(),
        );
        tokio::task::spawn_blocking(
            move || -> Result<SessionInfo, (Option<SessionInfo>, String)> {
                let info = find_session(&auth, &req_id).map_err(|e| (None, e.to_string()))?;
                if info.owner == id.username {
                    // One's own session can be watched or typed into, never moderated.
                    if mode == "moderator" {
                        return Err((
                            Some(info),
                            format!("joining session {req_id} denied: you cannot moderate your own session"),
                        ));
                    }
                    return Ok(info);
                }
                let owner_roles = auth
                    .user_roles(&info.owner)
                    .map_err(|e| (None, e.to_string()))?;
                match admitted
                    .checker()
                    .check_join_session(&owner_roles, "ssh", &mode)
                {
                    Ok(()) => Ok(info),
                    Err(d) => Err((Some(info), format!("joining session {req_id} denied: {d}"))),
                }
            },
        )
        .await
    };
    let event = |info: Option<&SessionInfo>, err: Option<&str>| {
        let mut ev = auth
            .event(EventKind::SessionJoin, &identity.username)
            .remote(Some(remote))
            .field("session_id", req.session_id.clone())
            .field("mode", req.mode.clone());
        if let Some(i) = info {
            ev = ev
                .field("server", i.server.clone())
                .field("owner", i.owner.clone());
        }
        if let Some(e) = err {
            ev = ev.failed(EventKind::SessionJoin, e);
        }
        auth.emit(ev);
    };
    let info = match decided {
        Ok(Ok(i)) => i,
        Ok(Err((info, e))) => {
            event(info.as_ref(), Some(&e));
            return Err(e);
        }
        Err(e) => return Err(format!("internal error: {e}")),
    };
    let join = JoinDial {
        session_id: req.session_id.clone(),
        mode: req.mode.clone(),
        user: identity.username.clone(),
        roles: identity.roles.clone(),
    }
    .to_target();
    let what = format!("session {}", req.session_id);
    let (agent, hold) = match dial_agent(registry, &info.host_id, &what, sid, &join, remote).await {
        Ok(a) => a,
        Err(e) => {
            event(Some(&info), Some(&e.to_string()));
            return Err(e.to_string());
        }
    };
    event(Some(&info), None);
    {
        let (auth, id, user) = (
            auth.clone(),
            req.session_id.clone(),
            identity.username.clone(),
        );
        let added = tokio::task::spawn_blocking(move || auth.add_participant(&id, &user)).await;
        if let Ok(Err(e)) = added {
            tracing::warn!(session = %req.session_id, error = %e, "joiner not added to the session's tracker");
        }
    }
    let live = Live {
        sockets: Vec::new(),
        login: None,
        target: None,
        route: Route::Join,
        remote,
        session_id: req.session_id.clone(),
        disconnect_expired_cert: admitted_expiry,
        agent: Some(info.host_id.clone()),
        cert: cert.clone(),
    };
    let departure = Departure {
        auth: auth.clone(),
        user: identity.username.clone(),
        session_id: req.session_id.clone(),
        mode: req.mode,
        remote,
        since: hop_platform::clock::now(),
    };
    Ok(Joined {
        agent,
        hold,
        live,
        session_id: req.session_id,
        departure,
    })
}
