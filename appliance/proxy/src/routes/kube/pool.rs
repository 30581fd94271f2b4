//! The kube agents' HTTP/1.1 connections, pooled per agent, cluster and Hop user through the
//! application route's pool (`app_http::pool`, [`AgentPools::take_keyed`]).
//!
//! A connection is an agent data connection that answered a `@kube:` Dial
//! ([`hop_api::dial::kube::KubeDial`]: cluster, user, the proxy connection's session id and the
//! client's address), then spoke HTTP/1.1 for as many requests of that user as come, one at a
//! time. Keying by user as well keeps one user's requests off a connection another user's
//! Dial opened, so what the agent logs per connection is true of every request on it. An
//! upgrade (exec, attach, port-forward) gets a connection of its own, which it consumes.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use hop_api::dial::kube::KubeDial;
use hyper::client::conn::http1::SendRequest;

use crate::routes::app_http::pool::{AgentConn, AgentPools, PoolError, dial_target};
use crate::tunnels::{KubeRoute, TunnelRegistry};

/// Where kube clusters are announced and how their connections are opened: the agents'
/// tunnels; in tests, an upstream dialed directly.
pub enum Agents {
    Tunnels(Arc<TunnelRegistry>),
    #[cfg(test)]
    Direct {
        clusters: Vec<KubeRoute>,
        upstream: SocketAddr,
    },
}

impl Agents {
    /// The kube clusters announced now.
    pub fn clusters(&self) -> Vec<KubeRoute> {
        match self {
            Self::Tunnels(r) => r.kube_clusters(),
            #[cfg(test)]
            Self::Direct { clusters, .. } => clusters.clone(),
        }
    }
}

/// Who a connection is for.
pub struct For<'a> {
    pub cluster: &'a KubeRoute,
    pub user: &'a str,
    pub session_id: &'a str,
    pub client: SocketAddr,
}

/// The pool key of `f`'s connections.
pub fn key(f: &For<'_>) -> String {
    format!(
        "kube\u{0}{}\u{0}{}\u{0}{}",
        f.cluster.host_id, f.cluster.name, f.user
    )
}

/// A pooled connection for `f`: an idle one, else a new one.
pub async fn take(
    pools: &AgentPools,
    agents: &Agents,
    f: &For<'_>,
) -> Result<AgentConn, PoolError> {
    pools.take_keyed(key(f), || dial(agents, f)).await
}

/// A new connection for `f` (an upgrade's, never pooled).
pub async fn dial(agents: &Agents, f: &For<'_>) -> Result<SendRequest<Body>, PoolError> {
    match agents {
        Agents::Tunnels(registry) => {
            let target = KubeDial {
                cluster: f.cluster.name.clone(),
                user: f.user.to_string(),
                session_id: f.session_id.to_string(),
                client_addr: f.client.to_string(),
            }
            .to_target();
            let what = format!("Kubernetes cluster {:?}", f.cluster.name);
            dial_target(registry, &f.cluster.host_id, &what, &target, f.client).await
        }
        #[cfg(test)]
        Agents::Direct { upstream, .. } => {
            crate::routes::app_http::pool::dial_direct(*upstream).await
        }
    }
}
