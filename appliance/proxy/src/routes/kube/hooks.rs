//! Where the kube route hands a request's streams to the stream room (`stream.rs`,
//! `filter.rs`, `record.rs`, contract B steps 6 and 7): upgraded connections (exec, attach,
//! port-forward) to the relay, and listings the role shows only part of to the filter.
//!
//! Until the stream room's relay is in this build, an upgrade is spliced byte for byte (no
//! recording, no `kube.exec`/`kube.portforward` events; the connection still ends when told):
//! the relay is called only from here, so wiring it in changes this file alone.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::http::HeaderMap;
use hop_auth::AuthServer;
use hop_protocols::kube::request::KubeRequest;
use hop_rbac::KubeImpersonation;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

use super::filter::{self, Visibility};

/// What the relay of one upgraded request knows.
pub struct Upgraded {
    pub auth: Arc<AuthServer>,
    pub recordings: Option<Arc<dyn hop_storage::recording::RecordingBackend>>,
    pub user: String,
    pub cluster: String,
    pub request: KubeRequest,
    pub impersonated: KubeImpersonation,
    pub remote: SocketAddr,
    pub session_id: String,
    /// `Some(reason)`: end now (a lock, a deletion, a role taken away).
    pub end: watch::Receiver<Option<String>>,
    /// The agent's `101` headers (which protocol the two ends agreed on).
    pub switched: HeaderMap,
}

/// Relays an upgraded client connection and the agent's until either closes or `ctx.end`
/// says to stop.
pub async fn relay(
    client: hyper::upgrade::Upgraded,
    agent: hyper::upgrade::Upgraded,
    mut ctx: Upgraded,
) {
    let mut client = TokioIo::new(client);
    let mut agent = TokioIo::new(agent);
    tokio::select! {
        r = tokio::io::copy_bidirectional(&mut client, &mut agent) => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "a Kubernetes stream ended with an error");
            }
        }
        () = super::conn::ended(&mut ctx.end) => {
            tracing::info!(user = %ctx.user, kube_cluster = %ctx.cluster, "ending a Kubernetes stream: its certificate may no longer be used");
        }
    }
}

/// The listing `body` with the items the role hides taken out (kstream's [`super::filter`]):
/// a List or Table read whole and filtered before the response head is sent, a watch filtered
/// event by event; `Err` (the words reach kubectl) when it cannot be filtered, which refuses
/// the response.
pub async fn filtered(
    body: Incoming,
    content_type: Option<&str>,
    watch: bool,
    visible: Visibility,
) -> Result<Body, String> {
    if watch {
        return filter::filter_body(body, content_type, true, visible)
            .map(Body::new)
            .map_err(|e| e.to_string());
    }
    filter::check_content_type(content_type).map_err(|e| e.to_string())?;
    filter::filter_list_body(body, &visible)
        .await
        .map(Body::from)
        .map_err(|e| e.to_string())
}
