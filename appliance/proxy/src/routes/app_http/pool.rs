//! The agents' HTTP/1.1 connections, pooled per agent and application (and, through
//! [`AgentPools::take_keyed`], per whatever key another route pools by: Kubernetes pools per
//! cluster and user).
//!
//! A connection is an agent data connection that answered a Dial for the application
//! (`routes::dial`), then spoke HTTP/1.1 (hyper's client) for as many requests as come, of any
//! user, one at a time. A request takes an idle connection (or dials a new one); the connection
//! comes back when the response's body has ended, unless it broke. A WebSocket consumes its
//! connection. At most [`MAX_IDLE`] idle connections per agent and application are kept, each
//! for at most [`IDLE_FOR`] (the agent closes one idle for 120 s; a connection it is closing
//! must never be handed a request).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hop_platform::clock;

use axum::body::Body;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use crate::routes::dial::{AgentDialError, dial_agent};
use crate::tunnels::{AppRoute, TunnelRegistry};

/// The most idle connections kept per agent and application.
pub const MAX_IDLE: usize = 64;

/// How long a connection stays idle in the pool before it is let go: under the agent's 120 s.
pub const IDLE_FOR: Duration = Duration::from_secs(90);

/// How long an idle connection may take to say it is ready again.
const READY_WAIT: Duration = Duration::from_secs(1);

/// Why no connection to the agent could be had. The words reach the user's page.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error(transparent)]
    Dial(#[from] AgentDialError),
    #[error("the agent's HTTP connection failed: {0}")]
    Http(#[from] hyper::Error),
}

/// Where applications are announced and how their connections are opened: the agents'
/// tunnels; in tests, an upstream dialed directly.
pub enum Agents {
    Tunnels(Arc<TunnelRegistry>),
    #[cfg(test)]
    Direct {
        apps: Vec<AppRoute>,
        upstream: SocketAddr,
    },
}

impl Agents {
    /// The applications announced now.
    pub fn apps(&self) -> Vec<AppRoute> {
        match self {
            Self::Tunnels(r) => r.apps(),
            #[cfg(test)]
            Self::Direct { apps, .. } => apps.clone(),
        }
    }
}

/// One HTTP/1.1 connection to an agent, for one application.
pub struct AgentConn {
    pub send: SendRequest<Body>,
    key: String,
}

/// The idle agent connections.
#[derive(Default)]
pub struct AgentPools {
    /// Per agent and application, idle connections with when each came back, oldest first.
    idle: Mutex<HashMap<String, Vec<Idle>>>,
}

/// An idle connection and when it came back.
type Idle = (SendRequest<Body>, Instant);

fn key_of(app: &AppRoute) -> String {
    format!("{}\u{0}{}", app.host_id, app.name)
}

impl AgentPools {
    /// The most recently returned idle connection for `key` at `now`; those idle longer than
    /// [`IDLE_FOR`] are dropped (closing them).
    fn pop(&self, key: &str, now: Instant) -> Option<SendRequest<Body>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.get_mut(key)?;
        list.retain(|(_, since)| now.saturating_duration_since(*since) < IDLE_FOR);
        let c = list.pop().map(|(send, _)| send);
        if list.is_empty() {
            idle.remove(key);
        }
        c
    }

    /// A connection ready for a request to `app`: an idle one, else a new one.
    pub async fn take(
        &self,
        app: &AppRoute,
        agents: &Agents,
        client: SocketAddr,
    ) -> Result<AgentConn, PoolError> {
        self.take_keyed(key_of(app), || async move {
            match agents {
                Agents::Tunnels(registry) => {
                    let what = format!("application {:?}", app.name);
                    dial_target(registry, &app.host_id, &what, &app.name, client).await
                }
                #[cfg(test)]
                Agents::Direct { upstream, .. } => dial_direct(*upstream).await,
            }
        })
        .await
    }

    /// A connection ready for a request under `key` (whose connections are interchangeable):
    /// an idle one that is still ready, else one `dial` opens. Routes other than applications
    /// (Kubernetes) pool their agents' HTTP/1.1 connections through this.
    pub async fn take_keyed<F, Fut>(&self, key: String, dial: F) -> Result<AgentConn, PoolError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<SendRequest<Body>, PoolError>>,
    {
        while let Some(mut send) = self.pop(&key, clock::now()) {
            if send.is_closed() {
                continue;
            }
            if send.is_ready()
                || matches!(
                    tokio::time::timeout(READY_WAIT, send.ready()).await,
                    Ok(Ok(()))
                )
            {
                return Ok(AgentConn { send, key });
            }
        }
        let send = dial().await?;
        Ok(AgentConn { send, key })
    }

    /// How many idle connections are kept under `key`.
    pub fn idle_keyed(&self, key: &str) -> usize {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.get(key).map_or(0, Vec::len)
    }

    /// Gives a connection back after its response ended.
    pub fn put(&self, conn: AgentConn) {
        self.put_at(conn, clock::now());
    }

    fn put_at(&self, conn: AgentConn, now: Instant) {
        if conn.send.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.entry(conn.key).or_default();
        if list.len() < MAX_IDLE {
            list.push((conn.send, now));
        }
    }

    /// The idle connection for `app` after `after` has passed, if one is still kept (tests).
    #[cfg(test)]
    pub fn take_idle_after(&self, app: &AppRoute, after: Duration) -> Option<AgentConn> {
        let key = key_of(app);
        let send = self.pop(&key, clock::now() + after)?;
        Some(AgentConn { send, key })
    }

    /// How many idle connections are kept for `app`.
    pub fn idle(&self, app: &AppRoute) -> usize {
        self.idle_keyed(&key_of(app))
    }
}

/// Dials agent `host_id` for `target` (`what` names the resource in errors) and starts
/// HTTP/1.1 on the data connection; the connection's task serves upgrades.
pub async fn dial_target(
    registry: &TunnelRegistry,
    host_id: &str,
    what: &str,
    target: &str,
    client: SocketAddr,
) -> Result<SendRequest<Body>, PoolError> {
    let mut session_id = [0u8; 16];
    rand::fill(&mut session_id[..]);
    let (agent, hold) = dial_agent(registry, host_id, what, session_id, target, client).await?;
    let (stream, pending) = agent.into_inner();
    let io = TokioIo::new(hop_net::tunnel::Prefixed::new(stream, pending));
    let (send, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(io)
        .await?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "an agent's HTTP connection ended with an error");
        }
        // The connection's place in the limits, given back when it closes.
        drop(hold);
    });
    Ok(send)
}

/// Starts HTTP/1.1 straight to `upstream` (tests: the agent's part is not in this crate).
#[cfg(test)]
pub(crate) async fn dial_direct(upstream: SocketAddr) -> Result<SendRequest<Body>, PoolError> {
    let tcp = tokio::net::TcpStream::connect(upstream)
        .await
        .map_err(|e| {
            PoolError::Dial(AgentDialError::Refused {
                what: "test upstream".into(),
                reason: e.to_string(),
            })
        })?;
    let (send, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(tcp))
        .await?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    Ok(send)
}
