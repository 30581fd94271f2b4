//! TCP application sessions through the proxy (ALPN `hop-tcp`).
//!
//! This module owns one session's life: the user's Dial naming an application, the RBAC check
//! against the application's labels, taking a warm data connection of the agent that serves it,
//! the agent's answer, the byte relay, and the audit events at start and end. Refusals reach the
//! client as a `DialResult` with a readable error before any byte reaches the agent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hop_ca::Identity;
use hop_protocols::tunnel::{Dial, DialResult, Frame};

use super::tunnels::{AgentStream, TunnelRegistry};
use crate::auth::AuthServer;
use crate::auth::audit::EventKind;
use crate::tunnel::{FramedStream, relay_with_idle_timeout};

async fn refuse(client: &mut FramedStream<AgentStream>, session_id: [u8; 16], error: String) {
    let _ = client
        .write_frame(&Frame::DialResult(DialResult {
            session_id,
            ok: false,
            error: Some(error),
        }))
        .await;
}

/// Serves one `hop-tcp` connection from an authenticated user.
pub async fn serve(
    stream: AgentStream,
    identity: Identity,
    remote: SocketAddr,
    registry: Arc<TunnelRegistry>,
    auth: Arc<AuthServer>,
) {
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
    let checker = match auth.checker_for(&identity.roles, &identity.traits) {
        Ok(c) => c,
        Err(e) => return refuse(&mut client, session_id, e.to_string()).await,
    };
    if let Err(denied) = checker.check_app(&route.labels) {
        let e = format!("access to application {app_name:?} denied: {denied}");
        start(false, Some(&e));
        return refuse(&mut client, session_id, e).await;
    }
    let Some(agent_stream) = registry.take_data(&route.host_id).await else {
        let e = format!(
            "application {app_name:?}: its agent has no tunnel connection available; try again"
        );
        start(false, Some(&e));
        return refuse(&mut client, session_id, e).await;
    };
    let mut agent = FramedStream::new(agent_stream);
    let forwarded = Dial {
        session_id,
        target: app_name.clone(),
        client_addr: remote,
    };
    let answer = match agent.write_frame(&Frame::Dial(forwarded)).await {
        Ok(()) => agent.read_frame(Duration::from_secs(15)).await,
        Err(e) => Err(e),
    };
    match answer {
        Ok(Frame::DialResult(r)) if r.ok => {}
        Ok(Frame::DialResult(r)) => {
            let e = format!(
                "application {app_name:?}: {}",
                r.error.unwrap_or_else(|| "the agent refused".into())
            );
            start(false, Some(&e));
            return refuse(&mut client, session_id, e).await;
        }
        Ok(_) | Err(_) => {
            let e = format!("application {app_name:?}: the agent did not answer");
            start(false, Some(&e));
            return refuse(&mut client, session_id, e).await;
        }
    }
    if client
        .write_frame(&Frame::DialResult(DialResult {
            session_id,
            ok: true,
            error: None,
        }))
        .await
        .is_err()
    {
        return;
    }
    start(true, None);
    let (c, c_pending) = client.into_inner();
    let (a, a_pending) = agent.into_inner();
    let started = std::time::Instant::now();
    let idle = checker.client_idle_timeout();
    let metrics = auth.metrics();
    metrics.app_sessions.inc();
    metrics.app_sessions_active.inc();
    let moved = relay_with_idle_timeout(c, c_pending, a, a_pending, idle).await;
    metrics.app_sessions_active.dec();
    if let Err(e) = &moved {
        tracing::debug!(app = %app_name, error = %e, "application session ended with an error");
    }
    let (up, down) = moved.as_ref().map(|m| *m).unwrap_or((0, 0));
    auth.emit(
        auth.event(EventKind::AppSessionEnd, &identity.username)
            .remote(Some(remote))
            .field("app", app_name)
            .field("session_id", sid)
            .field("bytes_sent", up)
            .field("bytes_received", down)
            .field("duration_ms", started.elapsed().as_millis() as u64),
    );
}
