//! A request's way to the upstream and its response's way back: the request sent on a pooled
//! agent connection with the headers [`super::headers`] prepares, both bodies streamed frame by
//! frame (never buffered), the bytes counted, the agent connection given back when the
//! response ends, the request audited once (`app.session.request`: method, path without the
//! query, status, bytes in and out, duration; never a body, a header or a cookie), and a
//! response still streaming cut within a second or so of its session ending (a lock, a
//! deletion, a role taken away: the background sweep marks the session).

use std::future::Future as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{Request, Response, StatusCode, Uri, Version};
use hop_auth::AuthServer;
use hop_auth::apps::AppSession;
use hop_auth::audit::EventKind;
use hop_platform::clock;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;

use super::conn::{Conn, Decided};
use super::pool::AgentConn;
use super::{AppHttp, headers, pages};
use crate::tunnels::AppRoute;

/// How often a response that waits on its upstream looks whether its session has ended.
pub const LIVE_CHECK: Duration = Duration::from_secs(1);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the audit event of one request says.
pub struct Record {
    pub method: String,
    pub path: String,
    pub remote: SocketAddr,
    pub started: Instant,
    pub bytes_in: Arc<AtomicU64>,
}

impl Record {
    pub fn of<B>(req: &Request<B>, remote: SocketAddr) -> Self {
        Self {
            method: req.method().as_str().to_string(),
            path: req.uri().path().to_string(),
            remote,
            started: clock::now(),
            bytes_in: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Writes `app.session.request` for this request, answered with `status` after
    /// `bytes_out` bytes of body.
    pub fn audit(&self, auth: &AuthServer, session: &AppSession, status: u16, bytes_out: u64) {
        let ok = status < 500;
        let mut ev = auth
            .event(EventKind::AppSessionRequest, session.user())
            .remote(Some(self.remote))
            .field("app", session.app().to_string())
            .field("session_id", session.id.clone())
            .field("method", self.method.clone())
            .field("path", self.path.clone())
            .field("status", u64::from(status))
            .field("bytes_in", self.bytes_in.load(Ordering::Relaxed))
            .field("bytes_out", bytes_out)
            .field("duration_ms", clock::since(self.started).as_millis() as u64);
        if !ok {
            ev = ev.failed(EventKind::AppSessionRequest, format!("status {status}"));
        }
        auth.emit(ev);
    }
}

/// The request's target as HTTP/1.1 sends it to the agent: path and query only.
pub fn origin_form(uri: &Uri) -> Uri {
    let pq = uri.path_and_query().map_or("/", |p| p.as_str());
    pq.parse().unwrap_or_else(|_| Uri::from_static("/"))
}

/// Forwards an admitted request to `app`'s agent and streams the answer back.
pub async fn forward(
    conn: Arc<Conn>,
    decided: Arc<Decided>,
    req: Request<Incoming>,
    authority: String,
) -> Response<Body> {
    let (session, app) = (decided.session.clone(), &decided.app);
    let record = Record::of(&req, conn.remote);
    let (mut parts, body) = req.into_parts();
    headers::to_upstream(
        &mut parts.headers,
        &decided.jwt,
        &authority,
        conn.remote.ip(),
        false,
    );
    parts.uri = origin_form(&parts.uri);
    parts.version = Version::HTTP_11;
    let body = Body::new(CountedRequest {
        inner: body,
        n: record.bytes_in.clone(),
    });
    let route = conn.route.clone();
    let mut agent = match route.pools.take(app, &route.agents, conn.remote).await {
        Ok(a) => a,
        Err(e) => return unavailable(&route, &session, &record, app, &e.to_string()),
    };
    let sent = agent.send.send_request(Request::from_parts(parts, body));
    let resp = match while_live(&session, sent).await {
        None => {
            record.audit(&route.auth, &session, StatusCode::FORBIDDEN.as_u16(), 0);
            return ended_page(&session);
        }
        Some(Ok(r)) => r,
        Some(Err(e)) => {
            let why = format!("the agent's HTTP connection failed: {e}");
            return unavailable(&route, &session, &record, app, &why);
        }
    };
    let (mut parts, body) = resp.into_parts();
    headers::to_client(&mut parts.headers, false);
    let status = parts.status.as_u16();
    let watched = WatchedResponse {
        inner: body,
        session,
        live_check: None,
        end: Some(End {
            route,
            agent,
            record,
            status,
            bytes_out: 0,
        }),
    };
    Response::from_parts(parts, Body::new(watched))
}

/// `fut`'s output, unless the session ends first (looked at every [`LIVE_CHECK`]): an
/// upstream slow to answer does not keep a revoked user's request alive.
pub async fn while_live<F: std::future::Future>(session: &AppSession, fut: F) -> Option<F::Output> {
    tokio::pin!(fut);
    let mut check = tokio::time::interval(LIVE_CHECK);
    loop {
        tokio::select! {
            out = &mut fut => return Some(out),
            _ = check.tick() => {
                if session.is_ended() {
                    return None;
                }
            }
        }
    }
}

/// The page for a request whose session ended while it waited.
pub fn ended_page(session: &AppSession) -> Response<Body> {
    pages::forbidden(
        session.app(),
        "the application session ended (a lock, a deletion or a role change); open the application again",
    )
}

/// The 502 page for a request the agent did not take, audited.
fn unavailable(
    route: &AppHttp,
    session: &AppSession,
    record: &Record,
    app: &AppRoute,
    why: &str,
) -> Response<Body> {
    tracing::debug!(app = %app.name, error = %why, "application request not forwarded");
    record.audit(&route.auth, session, StatusCode::BAD_GATEWAY.as_u16(), 0);
    pages::unavailable(&app.name, why)
}

/// A client's request body on its way to the agent, counted.
struct CountedRequest {
    inner: Incoming,
    n: Arc<AtomicU64>,
}

impl HttpBody for CountedRequest {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.n.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What happens once a response ends.
struct End {
    route: Arc<AppHttp>,
    agent: AgentConn,
    record: Record,
    status: u16,
    bytes_out: u64,
}

/// An upstream's response body on its way to the client.
struct WatchedResponse {
    inner: Incoming,
    session: Arc<AppSession>,
    live_check: Option<Pin<Box<tokio::time::Sleep>>>,
    end: Option<End>,
}

/// A response cut because its session ended.
#[derive(Debug, thiserror::Error)]
#[error("the application session ended")]
struct SessionEnded;

impl WatchedResponse {
    /// Audits the request and, when the body ended cleanly, gives the connection back.
    fn finish(&mut self, clean: bool) {
        let Some(end) = self.end.take() else { return };
        end.record
            .audit(&end.route.auth, &self.session, end.status, end.bytes_out);
        if clean {
            end.route.pools.put(end.agent);
        }
    }

    /// Whether the session ended while the response waited; re-arms the check.
    fn session_ended(&mut self, cx: &mut Context<'_>) -> bool {
        if self.session.is_ended() {
            return true;
        }
        let sleep = self
            .live_check
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(LIVE_CHECK)));
        while sleep.as_mut().poll(cx).is_ready() {
            if self.session.is_ended() {
                return true;
            }
            sleep.as_mut().reset(clock::tokio_now() + LIVE_CHECK);
        }
        false
    }
}

impl HttpBody for WatchedResponse {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(end)) = (frame.data_ref(), self.end.as_mut()) {
                    end.bytes_out += data.len() as u64;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.finish(false);
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                self.finish(true);
                Poll::Ready(None)
            }
            Poll::Pending => {
                if self.session_ended(cx) {
                    self.finish(false);
                    return Poll::Ready(Some(Err(SessionEnded.into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for WatchedResponse {
    fn drop(&mut self) {
        let clean = self.inner.is_end_stream();
        self.finish(clean);
    }
}
