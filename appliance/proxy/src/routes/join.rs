//! Joining a live session through the proxy (`hop join SESSION --mode observer|peer|moderator`,
//! ALPN `hop-join`): an SSH session on a node, or a moderated Kubernetes exec this proxy relays.
//!
//! This module owns the decision and the routing: the session is found from its tracker
//! (`auth::trackers`: who owns it, which node agent or proxy hosts it; never from the audit
//! log), the joiner must be its owner or hold a role whose `join_sessions` allows the owner's
//! roles in that mode for that kind (`ssh`, `k8s`), the attempt is audited (`session.join`, and
//! `session.leave` when the joiner's stream ends), and the stream is carried to the node, which
//! attaches it to the session's terminal (`node/party.rs`), or, for a Kubernetes session,
//! attached in-process to the session this proxy relays (`kube/party.rs`). A Kubernetes session
//! relayed by another appliance's proxy is refused, naming that proxy: proxies do not carry
//! joins to each other. The web UI's terminal joins SSH sessions through `open`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hop_admission::Route;

use hop_protocols::tunnel::Frame;
use serde::Deserialize;

use super::dial::{AgentHold, accept, dial_agent, refuse};
use super::kube::KubeProxy;
use super::kube::party::{Joiner, KubeLive, KubeParties, serve_joiner};
use crate::admission::{Live, LiveWatch, UserCert, admit, both_legs, dup_stream};
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
    kind: SessionKind,
}

/// Why a session cannot be joined, before any role is asked: the user's (a wrong or stale id, a
/// session of another kind) or the tracker store's.
#[derive(Debug, thiserror::Error)]
enum SessionLookupError {
    #[error("no session {id} is live (`hop sessions ls` lists them)")]
    NotLive { id: String },
    #[error("cannot read the session's tracker: {0}")]
    Tracker(#[source] TrackerError),
    #[error(
        "session {id} is a {kind} session; only SSH and moderated Kubernetes sessions can be joined"
    )]
    NotSsh { id: String, kind: &'static str },
    #[error("session {id} is a Kubernetes session; join it with `hop join`")]
    KubeHere { id: String },
    #[error("session {id} has ended")]
    Ended { id: String },
}

fn find_session(
    auth: &AuthServer,
    id: &str,
    kube_ok: bool,
) -> Result<SessionInfo, SessionLookupError> {
    let unknown = || SessionLookupError::NotLive { id: id.to_string() };
    let tracker = auth
        .tracker(id)
        .map_err(|e| match e {
            TrackerError::BadSessionId(_) => unknown(),
            other => SessionLookupError::Tracker(other),
        })?
        .ok_or_else(unknown)?
        .value;
    if tracker.kind == SessionKind::Kube && !kube_ok {
        return Err(SessionLookupError::KubeHere { id: id.to_string() });
    }
    if !matches!(tracker.kind, SessionKind::Ssh | SessionKind::Kube) {
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
        kind: tracker.kind,
    })
}

/// Serves one `hop-join` connection (`kube`: this proxy's Kubernetes route, whose moderated
/// sessions are joined in-process).
pub async fn serve(
    stream: AgentStream,
    cert: UserCert,
    remote: SocketAddr,
    registry: Arc<TunnelRegistry>,
    auth: Arc<AuthServer>,
    kube: Option<Arc<KubeProxy>>,
) {
    let mut client = FramedStream::new(stream);
    let dial = match client.read_frame(Duration::from_secs(10)).await {
        Ok(Frame::Dial(d)) => d,
        Ok(_) | Err(_) => return,
    };
    let sid = dial.session_id;
    let decided = match decide(&auth, &cert, remote, &dial.target, true).await {
        Ok(d) => d,
        Err(e) => return refuse(&mut client, sid, e).await,
    };
    if decided.info.kind == SessionKind::Kube {
        return serve_kube(client, sid, &auth, &cert, remote, decided, kube).await;
    }
    let joined = match carry(&auth, &registry, cert.clone(), remote, decided, sid).await {
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
            stop: None,
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

/// A join decided: the session and the request, and whether the joiner's roles end their
/// watch at their certificate's expiry.
struct Decided {
    info: SessionInfo,
    req: JoinRequest,
    disconnect_expired_cert: bool,
}

/// Decides a join of an SSH session (`target`: the JSON [`JoinRequest`]) for `cert` and
/// carries it to the node hosting it (see [`decide`] and [`carry`]). The words of an error are
/// for the user. The web UI's terminal joins through here.
pub(crate) async fn open(
    auth: &Arc<AuthServer>,
    registry: &TunnelRegistry,
    cert: &UserCert,
    remote: SocketAddr,
    target: &str,
    sid: [u8; 16],
) -> Result<Joined, String> {
    let decided = decide(auth, cert, remote, target, false).await?;
    carry(auth, registry, cert.clone(), remote, decided, sid).await
}

/// Decides a join: admission on the `join` route, the session from its tracker (a Kubernetes
/// one only when `kube_ok`), the joiner's roles for the session's kind. A refusal is audited
/// (`session.join`, failed); the words of an error are for the user.
async fn decide(
    auth: &Arc<AuthServer>,
    cert: &UserCert,
    remote: SocketAddr,
    target: &str,
    kube_ok: bool,
) -> Result<Decided, String> {
    let identity = &cert.identity;
    let admitted = admit(auth, cert, None, Route::Join, remote).map_err(|r| r.to_string())?;
    // A joiner's certificate ends its watch at expiry when a role asks for it.
    let disconnect_expired_cert = admitted.checker().disconnect_expired_cert();
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
                let info =
                    find_session(&auth, &req_id, kube_ok).map_err(|e| (None, e.to_string()))?;
                let kind = if info.kind == SessionKind::Kube {
                    "k8s"
                } else {
                    "ssh"
                };
                if kind == "k8s" && mode == "peer" {
                    return Err((
                        Some(info),
                        format!("joining session {req_id} denied: a Kubernetes session is joined as observer or moderator, not peer"),
                    ));
                }
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
                    .check_join_session(&owner_roles, kind, &mode)
                {
                    Ok(()) => Ok(info),
                    Err(d) => Err((Some(info), format!("joining session {req_id} denied: {d}"))),
                }
            },
        )
        .await
    };
    match decided {
        Ok(Ok(info)) => Ok(Decided {
            info,
            req,
            disconnect_expired_cert,
        }),
        Ok(Err((info, e))) => {
            emit(auth, cert, remote, &req, info.as_ref(), Some(&e));
            Err(e)
        }
        Err(e) => Err(format!("internal error: {e}")),
    }
}

/// Audits a join (`session.join`) of `req`'s session.
fn emit(
    auth: &AuthServer,
    cert: &UserCert,
    remote: SocketAddr,
    req: &JoinRequest,
    info: Option<&SessionInfo>,
    err: Option<&str>,
) {
    let mut ev = auth
        .event(EventKind::SessionJoin, &cert.identity.username)
        .remote(Some(remote))
        .field("session_id", req.session_id.clone())
        .field("mode", req.mode.clone());
    if let Some(i) = info {
        ev = ev
            .field("server", i.server.clone())
            .field("owner", i.owner.clone())
            .field("kind", i.kind.name());
    }
    if let Some(e) = err {
        ev = ev.failed(EventKind::SessionJoin, e);
    }
    auth.emit(ev);
}

/// Adds the joiner to the session's tracker.
async fn add_participant(auth: &Arc<AuthServer>, session_id: &str, user: &str) {
    let (a, id, u) = (auth.clone(), session_id.to_string(), user.to_string());
    let added = tokio::task::spawn_blocking(move || a.add_participant(&id, &u)).await;
    if let Ok(Err(e)) = added {
        tracing::warn!(session = %session_id, error = %e, "joiner not added to the session's tracker");
    }
}

/// Carries a decided join of an SSH session to the node hosting it: the `session.join` event,
/// the joiner added to the tracker.
async fn carry(
    auth: &Arc<AuthServer>,
    registry: &TunnelRegistry,
    cert: UserCert,
    remote: SocketAddr,
    decided: Decided,
    sid: [u8; 16],
) -> Result<Joined, String> {
    let Decided {
        info,
        req,
        disconnect_expired_cert,
    } = decided;
    let identity = &cert.identity;
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
            let e = e.to_string();
            emit(auth, &cert, remote, &req, Some(&info), Some(&e));
            return Err(e);
        }
    };
    emit(auth, &cert, remote, &req, Some(&info), None);
    add_participant(auth, &req.session_id, &identity.username).await;
    let departure = Departure {
        auth: auth.clone(),
        user: identity.username.clone(),
        session_id: req.session_id.clone(),
        mode: req.mode,
        remote,
        since: hop_platform::clock::now(),
    };
    let live = Live {
        sockets: Vec::new(),
        stop: None,
        login: None,
        target: None,
        route: Route::Join,
        remote,
        session_id: req.session_id.clone(),
        disconnect_expired_cert,
        agent: Some(info.host_id.clone()),
        cert,
    };
    Ok(Joined {
        agent,
        hold,
        live,
        session_id: req.session_id,
        departure,
    })
}

/// Why a Kubernetes session cannot be joined here.
#[derive(Debug, thiserror::Error)]
enum KubeJoinError {
    #[error("this appliance relays no Kubernetes sessions")]
    NoRoute,
    #[error(
        "session {id} is a Kubernetes session relayed by proxy {host}, not by this one ({here}); a Kubernetes session is joined through the appliance whose proxy relays it (proxies do not carry joins to each other)"
    )]
    Elsewhere {
        id: String,
        host: String,
        here: String,
    },
    #[error("session {id} has ended")]
    Ended { id: String },
}

/// The Kubernetes session `id` (of `info`'s tracker) among those this proxy relays (`here`:
/// its id and table; `None` where it has no kube route).
fn locate(
    here: Option<(&str, &KubeParties)>,
    id: &str,
    info: &SessionInfo,
) -> Result<Arc<KubeLive>, KubeJoinError> {
    let (proxy_id, parties) = here.ok_or(KubeJoinError::NoRoute)?;
    if proxy_id != info.host_id {
        return Err(KubeJoinError::Elsewhere {
            id: id.to_string(),
            host: info.host_id.clone(),
            here: proxy_id.to_string(),
        });
    }
    parties
        .get(id)
        .filter(|l| l.owner == info.owner)
        .ok_or(KubeJoinError::Ended { id: id.to_string() })
}

/// Joins a decided Kubernetes session in-process: the session must be relayed by this proxy;
/// the joiner watches it until it ends or they leave (audited as `session.join` and
/// `session.leave`), and their lock or expiry ends their stream.
async fn serve_kube(
    mut client: FramedStream<AgentStream>,
    sid: [u8; 16],
    auth: &Arc<AuthServer>,
    cert: &UserCert,
    remote: SocketAddr,
    decided: Decided,
    kube: Option<Arc<KubeProxy>>,
) {
    let Decided {
        info,
        req,
        disconnect_expired_cert,
    } = decided;
    let id = req.session_id.clone();
    let here = kube.as_ref().map(|k| (k.proxy_id(), &**k.parties()));
    let live = match locate(here, &id, &info) {
        Ok(l) => l,
        Err(e) => {
            let e = e.to_string();
            emit(auth, cert, remote, &req, Some(&info), Some(&e));
            return refuse(&mut client, sid, e).await;
        }
    };
    if !accept(&mut client, sid).await {
        return;
    }
    emit(auth, cert, remote, &req, Some(&info), None);
    add_participant(auth, &id, &cert.identity.username).await;
    let _departure = Departure {
        auth: auth.clone(),
        user: cert.identity.username.clone(),
        session_id: id.clone(),
        mode: req.mode.clone(),
        remote,
        since: hop_platform::clock::now(),
    };
    let _watch = LiveWatch::start(
        auth.clone(),
        Live {
            sockets: dup_stream(client.get_ref()).into_iter().collect(),
            stop: None,
            login: None,
            target: None,
            route: Route::Join,
            remote,
            session_id: id.clone(),
            disconnect_expired_cert,
            agent: None,
            cert: cert.clone(),
        },
    );
    let joiner = Joiner {
        user: cert.identity.username.clone(),
        roles: cert.identity.roles.clone(),
        mode: req.mode.clone(),
    };
    let (stream, pending) = client.into_inner();
    if !pending.is_empty() {
        tracing::debug!(session = %id, "a joiner's early bytes were dropped");
    }
    serve_joiner(live, joiner, stream).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kube_session_is_joined_only_through_the_proxy_that_relays_it() {
        let parties = Arc::new(KubeParties::default());
        let _hosted = parties.host("s1", "bob").unwrap();
        let info = |host: &str| SessionInfo {
            owner: "bob".into(),
            host_id: host.into(),
            server: String::new(),
            kind: SessionKind::Kube,
        };
        assert!(locate(Some(("p1", &parties)), "s1", &info("p1")).is_ok());
        let e = locate(Some(("p1", &parties)), "s1", &info("p2"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("relayed by proxy p2, not by this one (p1)"),
            "{e}"
        );
        let gone = locate(Some(("p1", &parties)), "s2", &info("p1")).unwrap_err();
        assert!(gone.to_string().contains("has ended"));
        let mut other = info("p1");
        other.owner = "mallory".into();
        assert!(locate(Some(("p1", &parties)), "s1", &other).is_err());
        assert!(matches!(
            locate(None, "s1", &info("p1")),
            Err(KubeJoinError::NoRoute)
        ));
    }
}
