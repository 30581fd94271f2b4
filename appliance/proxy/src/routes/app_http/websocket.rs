//! WebSockets on the application route: an HTTP/1.1 `Upgrade: websocket` request from the
//! application's own origin, forwarded as an upgrade on an agent connection (which it then
//! consumes); after the upstream's `101` both sides are spliced byte for byte until either
//! closes, or until the session ends (a lock, a deletion, a role taken away: checked every
//! [`super::body::LIVE_CHECK`]).
//!
//! The `Origin` must be the application's (`https://` and the authority the request was sent
//! to, which names this application): a page of another site cannot open a socket with the
//! user's cookie. A certificate's client (no cookie involved) may send no `Origin`.

use std::sync::Arc;

use axum::body::Body;
use axum::http::header::{ORIGIN, UPGRADE};
use axum::http::{Method, Request, Response, StatusCode, Version};
use hop_auth::apps::AppSession;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::body::{LIVE_CHECK, Record, origin_form};
use super::conn::{Conn, Decided};
use super::{headers, pages};

/// Whether a request asks for a WebSocket.
pub fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.method() == Method::GET
        && req
            .headers()
            .get(UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Whether a WebSocket request's `Origin` may open it: exactly `https://AUTHORITY`; a
/// certificate's client may also send none.
pub fn origin_allowed(origin: Option<&str>, authority: &str, by_certificate: bool) -> bool {
    match origin {
        None => by_certificate,
        Some(o) => hop_protocols::web_headers::is_https_origin(o, authority),
    }
}

/// Forwards a WebSocket request and splices it once the upstream switches protocols.
pub async fn forward(
    conn: Arc<Conn>,
    decided: Arc<Decided>,
    mut req: Request<Incoming>,
    authority: String,
) -> Response<Body> {
    let (session, app) = (decided.session.clone(), &decided.app);
    let origin = req.headers().get(ORIGIN).and_then(|v| v.to_str().ok());
    if !origin_allowed(origin, &authority, conn.by_certificate()) {
        let why = format!(
            "a WebSocket from origin {:?} is refused: only https://{authority} may open one",
            origin.unwrap_or("(none)")
        );
        conn.audit_failed(session.user(), &why);
        return pages::forbidden(&app.name, &why);
    }
    let record = Record::of(&req, conn.remote);
    let client_upgrade = hyper::upgrade::on(&mut req);
    let (mut parts, _) = req.into_parts();
    headers::to_upstream(
        &mut parts.headers,
        &decided.jwt,
        &authority,
        conn.remote.ip(),
        true,
    );
    parts.uri = origin_form(&parts.uri);
    parts.version = Version::HTTP_11;
    let route = conn.route.clone();
    let mut agent = match route.pools.take(app, &route.agents, conn.remote).await {
        Ok(a) => a,
        Err(e) => {
            record.audit(&route.auth, &session, 502, 0);
            return pages::unavailable(&app.name, &e.to_string());
        }
    };
    let upstream_req = Request::from_parts(parts, Body::empty());
    let sent = agent.send.send_request(upstream_req);
    let mut resp = match super::body::while_live(&session, sent).await {
        None => {
            record.audit(&route.auth, &session, 403, 0);
            return super::body::ended_page(&session);
        }
        Some(Ok(r)) => r,
        Some(Err(e)) => {
            record.audit(&route.auth, &session, 502, 0);
            return pages::unavailable(
                &app.name,
                &format!("the agent's HTTP connection failed: {e}"),
            );
        }
    };
    let status = resp.status();
    if status != StatusCode::SWITCHING_PROTOCOLS {
        // Not switched: the answer goes back as any response (the connection is not reused).
        record.audit(&route.auth, &session, status.as_u16(), 0);
        let (mut parts, body) = resp.into_parts();
        headers::to_client(&mut parts.headers, false);
        return Response::from_parts(parts, Body::new(body));
    }
    let upstream_upgrade = hyper::upgrade::on(&mut resp);
    let (mut parts, _) = resp.into_parts();
    headers::to_client(&mut parts.headers, true);
    tokio::spawn(splice(
        client_upgrade,
        upstream_upgrade,
        session,
        record,
        conn,
    ));
    Response::from_parts(parts, Body::empty())
}

/// Splices the two upgraded connections until one closes or the session ends; audits the
/// WebSocket as one request with the bytes each way.
async fn splice(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    session: Arc<AppSession>,
    record: Record,
    // The WebSocket is the rest of the client's connection: holding it keeps the session of a
    // certificate (which ends with its connection) for as long as the WebSocket runs.
    conn: Arc<Conn>,
) {
    let route = conn.route.clone();
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!(error = %e, "a WebSocket upgrade failed");
            record.audit(&route.auth, &session, 502, 0);
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    let copy = hop_net::copy::copy_both(&mut client, &mut upstream);
    tokio::pin!(copy);
    let mut check = tokio::time::interval(LIVE_CHECK);
    let moved = loop {
        tokio::select! {
            r = &mut copy => break r.unwrap_or((0, 0)),
            _ = check.tick() => {
                if session.is_ended() {
                    tracing::info!(user = %session.user(), app = %session.app(), "ending a WebSocket: its application session ended");
                    break (0, 0);
                }
            }
        }
    };
    let (up, down) = moved;
    record
        .bytes_in
        .fetch_add(up, std::sync::atomic::Ordering::Relaxed);
    record.audit(&route.auth, &session, 101, down);
}
