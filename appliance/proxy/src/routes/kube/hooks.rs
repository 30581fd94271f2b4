//! Where the kube route hands a request's streams to the stream room (`stream.rs`,
//! `filter.rs`, `record.rs`, contract B steps 6 and 7): upgraded connections (exec, attach,
//! port-forward) to the relay, which audits (`kube.exec`, `kube.portforward`) and records them,
//! and listings the role shows only part of to the filter.

use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::filter::{self, FilterError, ListingBudget, Visibility};
use super::stream::{self, StreamContext, StreamProtocol};
use axum::body::Body;

/// Relays an upgraded client connection and the agent's until either closes or the context's
/// `end` says to stop.
pub async fn relay(
    client: hyper::upgrade::Upgraded,
    agent: hyper::upgrade::Upgraded,
    protocol: StreamProtocol,
    ctx: StreamContext,
) {
    stream::relay(TokioIo::new(client), TokioIo::new(agent), protocol, ctx).await;
}

/// The listing `body` with the items the role hides taken out (kstream's [`super::filter`]):
/// a List or Table read whole and filtered before the response head is sent, a watch filtered
/// event by event; `Err` when it cannot be filtered (or the listings held now take the whole
/// `budget`), which refuses the response.
pub async fn filtered(
    body: Incoming,
    content_type: Option<&str>,
    watch: bool,
    visible: Visibility,
    budget: &ListingBudget,
) -> Result<Body, FilterError> {
    if watch {
        return filter::filter_body(body, content_type, true, visible, budget).map(Body::new);
    }
    filter::check_content_type(content_type)?;
    filter::filter_list_body(body, &visible, budget)
        .await
        .map(Body::from)
}
