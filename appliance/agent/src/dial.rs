//! The agent's side of a Dial: which of the agent's services the proxy's target names, and the
//! `DialResult` the agent answers before the session's bytes flow. The services themselves live in
//! their rooms ([`crate::db`], [`crate::node`], [`crate::kube`], [`crate::app`]); this module only dispatches and
//! answers, and never relays a byte itself.

use hop_api::dial::db::DbDial;
use hop_api::dial::join::JoinDial;
use hop_api::dial::kube::KubeDial;
use hop_net::tunnel::{FramedStream, Prefixed};
use hop_protocols::tunnel::{Dial, DialResult, Frame};

use crate::Shared;

/// A data connection to the proxy, once a Dial has arrived on it: its TLS record boundaries
/// counted until its service is known ([`read_freely`]).
pub(crate) type DataStream = FramedStream<hop_net::records::ClientStream>;

/// From now on `framed`'s record boundaries are not counted: its session stays on rustls. Only a
/// TCP application's session takes the keys out (`app::tcp`).
pub(crate) fn read_freely(framed: &mut DataStream) {
    framed.get_mut().get_mut().0.unbound();
}

/// Why this agent refuses a Dial from the proxy; the words go back in the `DialResult`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DialRefusal {
    #[error("this agent serves no databases")]
    NoDatabases,
    #[error("this agent serves no kube clusters")]
    NoKubeClusters,
    #[error("this agent is not an SSH node")]
    NotANode,
    #[error(
        "session {session_id} is not running on this node (it ended, or it is not interactive)"
    )]
    NoLiveSession { session_id: String },
    #[error(transparent)]
    Malformed(#[from] hop_api::dial::MalformedDial),
}

/// Answers the Dial: accepted (`refusal` is `None`) or refused with the reason. False when the
/// answer could not be written (the proxy is gone).
pub(crate) async fn answer(
    framed: &mut DataStream,
    session_id: [u8; 16],
    refusal: Option<String>,
) -> bool {
    let result = Frame::DialResult(DialResult {
        session_id,
        ok: refusal.is_none(),
        error: refusal,
    });
    framed.write_frame(&result).await.is_ok()
}

/// Serves one Dial with the service its target names: a database session, joining a live SSH
/// session, a Kubernetes cluster, the node's SSH server, or else an application by name.
///
/// Each service's future is boxed: held inline, every session's task would be as large as the
/// largest of them (22 KiB, measured with heaptrack at 2,000 idle TCP application sessions),
/// whichever service it runs.
pub(crate) async fn serve(shared: &Shared, mut framed: DataStream, dial: Dial) {
    if !crate::app::may_leave_rustls(&shared.apps, &dial) {
        read_freely(&mut framed);
    }
    if let Some(ctx) = DbDial::from_target(&dial.target) {
        return Box::pin(serve_db(shared, framed, dial.session_id, ctx)).await;
    }
    if let Some(ctx) = KubeDial::from_target(&dial.target) {
        return Box::pin(serve_kube(shared, framed, dial.session_id, ctx)).await;
    }
    if let Some(join) = JoinDial::from_target(&dial.target) {
        return Box::pin(serve_join(shared, framed, dial.session_id, join)).await;
    }
    if dial.target == hop_api::dial::SSH_TARGET {
        return Box::pin(serve_ssh(shared, framed, dial)).await;
    }
    Box::pin(crate::app::serve(&shared.apps, framed, dial)).await;
}

async fn serve_db(
    shared: &Shared,
    mut framed: DataStream,
    session_id: [u8; 16],
    ctx: Result<DbDial, hop_api::dial::MalformedDial>,
) {
    let Some(svc) = shared.db.get().cloned() else {
        let refused = DialRefusal::NoDatabases.to_string();
        answer(&mut framed, session_id, Some(refused)).await;
        return;
    };
    match ctx {
        Ok(ctx) => svc.serve(ctx, session_id, framed).await,
        Err(e) => {
            answer(&mut framed, session_id, Some(e.to_string())).await;
        }
    }
}

async fn serve_kube(
    shared: &Shared,
    mut framed: DataStream,
    session_id: [u8; 16],
    ctx: Result<KubeDial, hop_api::dial::MalformedDial>,
) {
    let Some(kube) = shared.kube.get().cloned() else {
        let refused = DialRefusal::NoKubeClusters.to_string();
        answer(&mut framed, session_id, Some(refused)).await;
        return;
    };
    kube.serve(framed, session_id, ctx).await;
}

async fn serve_join(
    shared: &Shared,
    mut framed: DataStream,
    session_id: [u8; 16],
    join: Result<JoinDial, hop_api::dial::MalformedDial>,
) {
    let joined = join.map_err(DialRefusal::from).and_then(|j| {
        let node = shared.node.get().ok_or(DialRefusal::NotANode)?;
        let live = node
            .parties
            .get(&j.session_id)
            .ok_or_else(|| DialRefusal::NoLiveSession {
                session_id: j.session_id.clone(),
            })?;
        Ok((live, j))
    });
    let (live, join) = match joined {
        Ok(found) => found,
        Err(e) => {
            answer(&mut framed, session_id, Some(e.to_string())).await;
            return;
        }
    };
    if !answer(&mut framed, session_id, None).await {
        return;
    }
    let (tunnel, pending) = framed.into_inner();
    crate::node::party::serve_joiner(live, join, Prefixed::new(tunnel, pending)).await;
}

async fn serve_ssh(shared: &Shared, mut framed: DataStream, dial: Dial) {
    let Some(node) = shared.node.get().cloned() else {
        let refused = DialRefusal::NotANode.to_string();
        answer(&mut framed, dial.session_id, Some(refused)).await;
        return;
    };
    if !answer(&mut framed, dial.session_id, None).await {
        return;
    }
    let (tunnel, pending) = framed.into_inner();
    let stream = Prefixed::new(tunnel, pending);
    let client = dial.client_addr.to_string();
    crate::node::serve(node, stream, client, crate::node::Arrival::Tunnel).await;
}
