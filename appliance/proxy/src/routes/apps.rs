//! TCP application sessions through the proxy (ALPN `hop-tcp`).
//!
//! This module owns one session's life: the user's Dial naming an application, the RBAC check
//! against the application's labels, taking a warm data connection of the agent that serves it,
//! the agent's answer, the byte relay, the audit events at start and end, and the session's
//! tracker (written by the proxy itself, in-process, naming the agent that serves it). Refusals reach the
//! client as a `DialResult` with a readable error before any byte reaches the agent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hop_admission::Route;
use hop_platform::clock;
use hop_protocols::tunnel::Frame;

use super::dial::{accept, dial_agent_bounded, refuse};
use crate::admission::{Live, LiveWatch, UserCert, admit, both_legs};
use crate::listener::ConnectionHold;
use crate::relay::{self, RelayHandle};
use crate::tunnels::{AgentStream, TunnelRegistry};
use hop_api::trackers::TRACKER_KEEPALIVE;
use hop_auth::AuthServer;
use hop_auth::audit::EventKind;
use hop_auth::trackers::{SessionKind, TrackerState, TrackerUpdate};
use hop_net::tunnel::FramedStream;

/// Serves one `hop-tcp` connection from an authenticated user.
pub async fn serve(
    stream: AgentStream,
    cert: UserCert,
    remote: SocketAddr,
    registry: Arc<TunnelRegistry>,
    auth: Arc<AuthServer>,
    fast_path: Option<(&RelayHandle, usize)>,
    hold: ConnectionHold,
) {
    let identity = &cert.identity;
    let mut client = FramedStream::new(stream);
    let dial = match client.read_frame(Duration::from_secs(10)).await {
        Ok(Frame::Dial(d)) => d,
        Ok(_) | Err(_) => return,
    };
    let session_id = dial.session_id;
    let sid = hex::encode(session_id);
    let app_name = dial.target.clone();
    let start = |ok: bool, err: Option<&str>| {
        let mut ev = auth
            .event(EventKind::AppSessionStart, &identity.username)
            .remote(Some(remote))
            .field("app", app_name.clone())
            .field("session_id", sid.clone());
        if let Some(e) = err {
            ev = ev.failed(EventKind::AppSessionStart, e);
        }
        let _ = ok;
        auth.emit(ev);
    };

    // Admission first: nothing about the application is said to a refused caller.
    let admitted = match admit(&auth, &cert, None, Route::App, remote) {
        Ok(a) => a,
        Err(refusal) => {
            let e = refusal.to_string();
            start(false, Some(&e));
            return refuse(&mut client, session_id, e).await;
        }
    };
    let routes: Vec<_> = registry
        .apps()
        .into_iter()
        .filter(|a| a.name == app_name)
        .collect();
    let Some(route) = routes.first().cloned() else {
        let e = format!(
            "application {app_name:?} is not available: no connected agent serves it (`hop apps ls` lists them)"
        );
        start(false, Some(&e));
        return refuse(&mut client, session_id, e).await;
    };
    let checker = admitted.checker();
    if let Err(denied) = checker.check_app(&route.labels) {
        let e = format!("access to application {app_name:?} denied: {denied}");
        start(false, Some(&e));
        return refuse(&mut client, session_id, e).await;
    }
    let what = format!("application {app_name:?}");
    let (agent, agent_hold) = match dial_agent_bounded(
        &registry,
        &route.host_id,
        &what,
        session_id,
        &app_name,
        remote,
    )
    .await
    {
        Ok(a) => a,
        Err(e) => {
            start(false, Some(&e.to_string()));
            return refuse(&mut client, session_id, e).await;
        }
    };
    if !accept(&mut client, session_id).await {
        return;
    }
    start(true, None);
    let tracker = AppTracker::start(
        auth.clone(),
        route.host_id.clone(),
        TrackerUpdate {
            session_id: sid.clone(),
            kind: SessionKind::App,
            user: identity.username.clone(),
            login: String::new(),
            target: app_name.clone(),
            participants: Vec::new(),
            state: TrackerState::Active,
        },
    );
    let started = clock::now();
    let idle = checker.client_idle_timeout();
    let metrics = auth.metrics();
    metrics.app_sessions.inc();
    metrics.app_sessions_active.inc();
    let username = identity.username.clone();
    let watch = LiveWatch::start(
        auth.clone(),
        Live {
            sockets: both_legs(client.get_ref(), agent.get_ref()),
            login: None,
            route: Route::App,
            remote,
            session_id: sid.clone(),
            disconnect_expired_cert: checker.disconnect_expired_cert(),
            agent: Some(route.host_id.clone()),
            cert,
        },
    );
    let relaying = relay::start(fast_path, client, agent, idle, remote, metrics);
    let end = move |moved: Result<(u64, u64), relay::RelayError>| {
        if let Err(e) = &moved {
            tracing::debug!(app = %app_name, error = %e, "application session ended with an error");
        }
        let (up, down) = moved.unwrap_or((0, 0));
        auth.metrics().app_sessions_active.dec();
        auth.emit(
            auth.event(EventKind::AppSessionEnd, &username)
                .remote(Some(remote))
                .field("app", app_name)
                .field("session_id", sid)
                .field("bytes_sent", up)
                .field("bytes_received", down)
                .field("duration_ms", clock::since(started).as_millis() as u64),
        );
        tracker.end();
    };
    match relaying {
        relay::Relaying::Worker(report) => {
            // Only a small task waits for the end, so that an idle session costs the control
            // plane a few hundred bytes rather than this connection's whole task.
            tokio::spawn(async move {
                end(relay::finished(report).await);
                drop((hold, agent_hold, watch));
            });
        }
        relay::Relaying::Here(client, agent) => {
            end(relay::relay_here(client, agent, idle).await);
            drop((agent_hold, watch));
        }
        relay::Relaying::Failed(e) => end(Err(e)),
    }
}

/// An application session's tracker, renewed by the proxy while the session runs.
struct AppTracker {
    auth: Arc<AuthServer>,
    host_id: String,
    update: TrackerUpdate,
    keepalive: tokio::task::JoinHandle<()>,
}

impl AppTracker {
    fn start(auth: Arc<AuthServer>, host_id: String, update: TrackerUpdate) -> Self {
        let keepalive = {
            let (auth, host_id, update) = (auth.clone(), host_id.clone(), update.clone());
            tokio::spawn(async move {
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
            keepalive,
        }
    }

    /// Stops the renewals and marks the tracker terminated (in the background).
    fn end(self) {
        self.keepalive.abort();
        let mut update = self.update;
        update.state = TrackerState::Terminated;
        let (auth, host_id) = (self.auth, self.host_id);
        tokio::spawn(async move { write_app_tracker(&auth, &host_id, &update).await });
    }
}

async fn write_app_tracker(auth: &Arc<AuthServer>, host_id: &str, update: &TrackerUpdate) {
    let (auth, host_id, update) = (auth.clone(), host_id.to_string(), update.clone());
    let written =
        tokio::task::spawn_blocking(move || auth.update_app_tracker(&host_id, &update)).await;
    if let Ok(Err(e)) = written {
        tracing::warn!(error = %e, "application session tracker not written");
    }
}
