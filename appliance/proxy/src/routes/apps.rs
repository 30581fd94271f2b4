//! TCP application sessions through the proxy (ALPN `hop-tcp`).
//!
//! This module owns one session's life: the user's Dial naming an application, the RBAC check
//! against the application's labels, taking a warm data connection of the agent that serves it,
//! the agent's answer, the byte relay, the audit events at start and end, and the session's
//! tracker (written by the proxy itself, in-process, naming the agent that serves it). Refusals reach the
//! client as a `DialResult` with a readable error before any byte reaches the agent.
//!
//! A session normally stays on the worker that accepted it ([`serve_kept`]: the worker reads
//! the Dial and relays; this module answers its [`SessionRequest`] with the agent's leg). A
//! session whose TLS the control plane terminated ([`serve`]) runs here as before.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use hop_admission::Route;
use hop_platform::clock;
use hop_protocols::tunnel::{Dial, Frame};

use super::dial::{
    AgentHold, KeptSessions, accept, dial_accepted, dial_agent_bounded, kept_agent_leg, refuse,
    refused, relay_on_worker,
};
use crate::admission::{Live, LiveWatch, UserCert, admit_target, both_legs};
use crate::listener::ConnectionHold;
use crate::relay::on_worker::SessionRequest;
use crate::relay::{self, RelayHandle, SessionStop};
use crate::tunnels::{AgentStream, AppRoute, TunnelRegistry};
use hop_api::trackers::TRACKER_KEEPALIVE;
use hop_auth::AuthServer;
use hop_auth::audit::EventKind;
use hop_auth::trackers::{SessionKind, TrackerState, TrackerUpdate};
use hop_net::tunnel::FramedStream;

/// Serves one `hop-tcp` connection from an authenticated user whose TLS the control plane
/// holds.
pub async fn serve(
    stream: AgentStream,
    cert: UserCert,
    remote: SocketAddr,
    registry: Arc<TunnelRegistry>,
    auth: Arc<AuthServer>,
    fast_path: Option<(&RelayHandle, usize)>,
    hold: ConnectionHold,
) {
    let mut client = FramedStream::new(stream);
    let dial = match client.read_frame(Duration::from_secs(10)).await {
        Ok(Frame::Dial(d)) => d,
        Ok(_) | Err(_) => return,
    };
    let session_id = dial.session_id;
    let opened = match open(&dial, &cert, remote, &registry, &auth).await {
        Ok(o) => o,
        Err(e) => return refuse(&mut client, session_id, e).await,
    };
    if !accept(&mut client, session_id).await {
        return;
    }
    let Opened {
        agent,
        agent_hold,
        host_id,
        idle,
        disconnect_expired_cert,
    } = opened;
    let sockets = both_legs(client.get_ref(), agent.get_ref());
    let running = Running::begin(
        auth.clone(),
        cert,
        remote,
        &dial,
        host_id,
        disconnect_expired_cert,
        (sockets, None),
    );
    let relaying = relay::start(fast_path, client, agent, idle, remote, auth.metrics());
    match relaying {
        relay::Relaying::Worker(report) => {
            // Only a small task waits for the end, so that an idle session costs the control
            // plane a few hundred bytes rather than this connection's whole task.
            tokio::spawn(async move {
                running.end(relay::finished(report).await);
                drop((hold, agent_hold));
            });
        }
        relay::Relaying::Here(client, agent) => {
            running.end(relay::relay_here(client, agent, idle).await);
            drop(agent_hold);
        }
        relay::Relaying::Failed(e) => running.end(Err(e)),
    }
}

/// Answers a worker that keeps a `hop-tcp` session: identifies the certificate's holder,
/// admits, checks the application's labels, dials the agent and sends back its leg; then
/// watches the session while it lives and audits its end. `hold` is the session's place in the
/// control plane's gauges.
pub async fn serve_kept(req: SessionRequest, kept: KeptSessions, hold: impl Send + 'static) {
    let Some((cert, dial)) = kept.dial(&req, hop_net::tunnel::ALPN_TCP) else {
        return req.answer.send(refused(None)).unwrap_or(());
    };
    let SessionRequest {
        opening,
        peer_cert,
        remote,
        answer,
        ..
    } = req;
    // Read into `dial` and `cert`: not held for the session's life.
    drop((opening, peer_cert));
    let session_id = dial.session_id;
    let opened = match open(&dial, &cert, remote, &kept.registry, &kept.auth).await {
        Ok(o) => o,
        Err(e) => return answer.send(refused(Some((session_id, e)))).unwrap_or(()),
    };
    let Opened {
        agent,
        agent_hold,
        host_id,
        idle,
        disconnect_expired_cert,
    } = opened;
    let what = format!("application {:?}", dial.target);
    let stop = SessionStop::default();
    let leg = match kept_agent_leg(agent, &what, remote) {
        Ok(leg) => leg,
        Err(words) => {
            return answer
                .send(refused(Some((session_id, words))))
                .unwrap_or(());
        }
    };
    let running = Running::begin(
        kept.auth.clone(),
        cert,
        remote,
        &dial,
        host_id,
        disconnect_expired_cert,
        (Vec::new(), Some(stop.clone())),
    );
    let accepted = dial_accepted(session_id);
    let moved = relay_on_worker(answer, leg, accepted, (idle, stop), &kept.auth).await;
    running.end(moved);
    drop((hold, agent_hold));
}

/// An admitted session whose agent accepted the Dial.
struct Opened {
    agent: FramedStream<AgentStream>,
    agent_hold: AgentHold,
    host_id: String,
    idle: Option<Duration>,
    disconnect_expired_cert: bool,
}

/// Admission, the application's route and labels, and the agent's leg; a refusal is audited
/// (`app.session.start`, failed) and its words are for the user.
async fn open(
    dial: &Dial,
    cert: &UserCert,
    remote: SocketAddr,
    registry: &TunnelRegistry,
    auth: &AuthServer,
) -> Result<Opened, String> {
    let app_name = &dial.target;
    let refused = |e: String| {
        audit_start(auth, cert, remote, dial, Some(&e));
        e
    };
    // Admission first: nothing about the application is said to a refused caller. Under
    // per-session MFA only a certificate marked for this application is admitted.
    let target = hop_ca::SessionMfaTarget::App {
        app: app_name.clone(),
    };
    let admitted = admit_target(auth, cert, &target, Route::App, remote)
        .map_err(|r| refused(r.to_string()))?;
    let Some(route) = registry.apps().into_iter().find(|a| &a.name == app_name) else {
        return Err(refused(format!(
            "application {app_name:?} is not available: no connected agent serves it (`hop apps ls` lists them)"
        )));
    };
    let checker = admitted.checker();
    if let Err(denied) = checker.check_app(&route.labels) {
        return Err(refused(format!(
            "access to application {app_name:?} denied: {denied}"
        )));
    }
    if let Some(why) = tcp_dial_refusal(&route, cert.identity.route_to_app.as_deref()) {
        return Err(refused(why));
    }
    let what = format!("application {app_name:?}");
    let (agent, agent_hold) = dial_agent_bounded(
        registry,
        &route.host_id,
        &what,
        dial.session_id,
        app_name,
        remote,
    )
    .await
    .map_err(|e| refused(e.to_string()))?;
    Ok(Opened {
        agent,
        agent_hold,
        host_id: route.host_id,
        idle: checker.client_idle_timeout(),
        disconnect_expired_cert: checker.disconnect_expired_cert(),
    })
}

/// Why a `hop-tcp` Dial may not reach `route` with a certificate routed to `bound_to` (its
/// `route_to_app`), if it may not.
///
/// An HTTP application is reached only through its HTTP route (`NAME.P`): the agent trusts the
/// `Hop-Jwt-Assertion` and the identity headers of whatever arrives on its data connection, so
/// a raw byte relay would let the client write its own assertion and impersonate anyone to the
/// upstream. A certificate bound to one application reaches only that one.
pub(crate) fn tcp_dial_refusal(route: &AppRoute, bound_to: Option<&str>) -> Option<String> {
    let name = &route.name;
    if let Some(bound) = bound_to.filter(|b| *b != name.as_str()) {
        return Some(format!(
            "this certificate is for application {bound:?} only, not {name:?}"
        ));
    }
    crate::routes::app_http::is_http_app(&route.uri).then(|| {
        format!(
            "application {name:?} is an HTTP application: open its address in a browser, or use `hop apps login {name}` and `hop proxy app {name}`"
        )
    })
}

/// Writes `app.session.start`, failed with `err` when given.
fn audit_start(
    auth: &AuthServer,
    cert: &UserCert,
    remote: SocketAddr,
    dial: &Dial,
    err: Option<&str>,
) {
    let mut ev = auth
        .event(EventKind::AppSessionStart, &cert.identity.username)
        .remote(Some(remote))
        .field("app", dial.target.clone())
        .field("session_id", hex::encode(dial.session_id));
    if let Some(e) = err {
        ev = ev.failed(EventKind::AppSessionStart, e);
    }
    auth.emit(ev);
}

/// A session past its start: audited, tracked and watched until [`Running::end`].
struct Running {
    auth: Arc<AuthServer>,
    username: String,
    remote: SocketAddr,
    app_name: String,
    sid: String,
    started: std::time::Instant,
    tracker: AppTracker,
    _watch: LiveWatch,
}

impl Running {
    /// Audits the start, writes the tracker and starts the live watch over `sockets`.
    fn begin(
        auth: Arc<AuthServer>,
        cert: UserCert,
        remote: SocketAddr,
        dial: &Dial,
        host_id: String,
        disconnect_expired_cert: bool,
        (sockets, stop): (Vec<socket2::Socket>, Option<SessionStop>),
    ) -> Self {
        audit_start(&auth, &cert, remote, dial, None);
        let sid = hex::encode(dial.session_id);
        let username = cert.identity.username.clone();
        let tracker = AppTracker::start(
            auth.clone(),
            host_id.clone(),
            TrackerUpdate {
                session_id: sid.clone(),
                kind: SessionKind::App,
                user: username.clone(),
                login: String::new(),
                target: dial.target.clone(),
                participants: Vec::new(),
                state: TrackerState::Active,
            },
        );
        let metrics = auth.metrics();
        metrics.app_sessions.inc();
        metrics.app_sessions_active.inc();
        let watch = LiveWatch::start(
            auth.clone(),
            Live {
                sockets,
                stop,
                login: None,
                target: Some(hop_ca::SessionMfaTarget::App {
                    app: dial.target.clone(),
                }),
                route: Route::App,
                remote,
                session_id: sid.clone(),
                disconnect_expired_cert,
                agent: Some(host_id),
                cert,
            },
        );
        Self {
            auth,
            username,
            remote,
            app_name: dial.target.clone(),
            sid,
            started: clock::now(),
            tracker,
            _watch: watch,
        }
    }

    /// Audits the end with the bytes moved and ends the tracker.
    fn end(self, moved: Result<(u64, u64), relay::RelayError>) {
        if let Err(e) = &moved {
            tracing::debug!(app = %self.app_name, error = %e, "application session ended with an error");
        }
        let (up, down) = moved.unwrap_or((0, 0));
        let auth = self.auth;
        auth.metrics().app_sessions_active.dec();
        auth.emit(
            auth.event(EventKind::AppSessionEnd, &self.username)
                .remote(Some(self.remote))
                .field("app", self.app_name)
                .field("session_id", self.sid)
                .field("bytes_sent", up)
                .field("bytes_received", down)
                .field("duration_ms", clock::since(self.started).as_millis() as u64),
        );
        self.tracker.end();
    }
}

/// How long an application session runs before its tracker is first written. Most sessions of
/// a TCP application are short (a request and its answer); one that ends sooner leaves no
/// tracker, which spares two durable backend writes per session (the largest single cost of a
/// short session on the proxy). Live sessions still appear within this delay, and a lock ends
/// them from the first byte whether written or not (the live watch does not read trackers).
const TRACKER_FIRST_WRITE: Duration = Duration::from_secs(1);

/// The phases of an [`AppTracker`].
const PENDING: u8 = 0;
const WRITTEN: u8 = 1;
const ENDED: u8 = 2;

/// An application session's tracker, renewed by the proxy while the session runs.
struct AppTracker {
    auth: Arc<AuthServer>,
    host_id: String,
    update: TrackerUpdate,
    /// [`PENDING`], [`WRITTEN`] (a write began: the tracker must be ended) or [`ENDED`].
    phase: Arc<AtomicU8>,
    keepalive: tokio::task::JoinHandle<()>,
}

impl AppTracker {
    fn start(auth: Arc<AuthServer>, host_id: String, update: TrackerUpdate) -> Self {
        let phase = Arc::new(AtomicU8::new(PENDING));
        let keepalive = {
            let (auth, host_id, update) = (auth.clone(), host_id.clone(), update.clone());
            let phase = phase.clone();
            tokio::spawn(async move {
                tokio::time::sleep(TRACKER_FIRST_WRITE).await;
                // The session may have ended while this task was about to run.
                if phase
                    .compare_exchange(PENDING, WRITTEN, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
                {
                    return;
                }
                loop {
                    write_app_tracker(&auth, &host_id, &update).await;
                    tokio::time::sleep(TRACKER_KEEPALIVE).await;
                }
            })
        };
        Self {
            auth,
            host_id,
            update,
            phase,
            keepalive,
        }
    }

    /// Stops the renewals and, if the tracker was written, marks it terminated (in the
    /// background; Auth keeps an ended tracker ended whatever order the writes land in).
    fn end(self) {
        self.keepalive.abort();
        if self.phase.swap(ENDED, Ordering::AcqRel) != WRITTEN {
            return;
        }
        let mut update = self.update;
        update.state = TrackerState::Terminated;
        let (auth, host_id) = (self.auth, self.host_id);
        tokio::spawn(async move { write_app_tracker(&auth, &host_id, &update).await });
    }
}

async fn write_app_tracker(auth: &Arc<AuthServer>, host_id: &str, update: &TrackerUpdate) {
    let (auth, host_id, update) = (auth.clone(), host_id.to_string(), update.clone());
    let written =
        crate::tracker_writes::APPS.write(move || auth.update_app_tracker(&host_id, &update));
    if let Some(Err(e)) = written.await {
        tracing::warn!(error = %e, "application session tracker not written");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(name: &str, uri: &str) -> AppRoute {
        AppRoute {
            name: name.into(),
            uri: uri.into(),
            labels: Default::default(),
            host_id: "h".into(),
        }
    }

    #[test]
    fn a_raw_relay_never_reaches_an_http_application() {
        for uri in [
            "http://127.0.0.1:3000",
            "HTTPS://10.0.0.1",
            "https://x:8443/",
        ] {
            let why = tcp_dial_refusal(&app("web", uri), None).expect(uri);
            assert!(why.contains("is an HTTP application"), "{why}");
            let why = tcp_dial_refusal(&app("web", uri), Some("web")).expect(uri);
            assert!(why.contains("is an HTTP application"), "{why}");
        }
        assert_eq!(
            tcp_dial_refusal(&app("pg", "tcp://127.0.0.1:5432"), None),
            None
        );
        assert_eq!(
            tcp_dial_refusal(&app("pg", "tcp://127.0.0.1:5432"), Some("pg")),
            None
        );
    }

    #[test]
    fn a_certificate_bound_to_one_application_reaches_no_other() {
        let why = tcp_dial_refusal(&app("pg", "tcp://127.0.0.1:5432"), Some("web")).unwrap();
        assert!(why.contains("for application \"web\" only"), "{why}");
    }
}
