//! Where the kube route hands a request's streams to the stream room (`stream.rs`,
//! `filter.rs`, `record.rs`, contract B steps 6 and 7): upgraded connections (exec, attach,
//! port-forward) to the relay, and listings the role shows only part of to the filter.
//!
//! Upgrades whose protocol the relay cannot name (neither WebSocket nor SPDY in the agent's
//! `101`) are closed, never spliced unwatched.

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
use super::stream::{StreamContext, StreamProtocol};

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
    /// The upgrade request's query string (the command, container, ports).
    pub query: String,
}

/// Hands an upgraded client connection and the agent's to the stream relay
/// ([`super::stream::relay`]: decoded, recorded, `kube.exec`/`kube.portforward` events), which
/// runs until either closes or `ctx.end` says to stop.
pub async fn relay(
    client: hyper::upgrade::Upgraded,
    agent: hyper::upgrade::Upgraded,
    ctx: Upgraded,
) {
    let Some(protocol) = StreamProtocol::of_response(&ctx.switched) else {
        tracing::info!(user = %ctx.user, kube_cluster = %ctx.cluster, "closing a Kubernetes upgrade whose stream protocol is neither WebSocket nor SPDY");
        return;
    };
    let stream_ctx = StreamContext {
        auth: ctx.auth,
        recordings: ctx.recordings,
        user: ctx.user,
        cluster: ctx.cluster,
        request: ctx.request,
        impersonated: ctx.impersonated,
        remote: ctx.remote,
        session_id: ctx.session_id,
        query: ctx.query,
        end: ctx.end,
    };
    super::stream::relay(
        TokioIo::new(client),
        TokioIo::new(agent),
        protocol,
        stream_ctx,
    )
    .await;
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
