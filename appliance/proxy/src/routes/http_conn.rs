//! Serving one HTTP connection (HTTP/1.1 and HTTP/2, hyper-util's auto builder) under its
//! deadlines.
//!
//! This module owns the HTTP side of the pre-authentication deadlines
//! (`proxy_service.http_header_timeout`, `proxy_service.http_idle_timeout`): an HTTP/1.1 request
//! head must arrive within the header deadline (hyper's `header_read_timeout`, counted from the
//! start of the connection or the end of the previous response), and a connection with no
//! request in flight and none started for the idle deadline is shut down gracefully (HTTP/2: a
//! GOAWAY; HTTP/1.1: closed between requests). Requests are tracked by a thin service wrapper:
//! a request is in flight from its head until its response body has been sent or dropped, so a
//! long gRPC stream keeps its connection. It also owns graceful shutdown of the connection when
//! the process stops.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::http::{Request, Response};
use futures_util::future::BoxFuture;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;

use hop_auth::caller::Caller;
use hop_platform::clock;

use crate::dataplane::limits::PreAuthHold;

/// How long an idle connection's graceful shutdown may take (an HTTP/2 client that never
/// acknowledges the GOAWAY's ping) before the connection is dropped.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);
/// How long in-flight requests may run on when the process stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The deadlines of an HTTP connection on the one port.
#[derive(Debug, Clone, Copy)]
pub struct HttpDeadlines {
    /// An HTTP/1.1 request head must be complete within this.
    pub header_read: Duration,
    /// No request in flight and none started for this long: the connection is closed.
    pub idle: Duration,
}

/// Serves HTTP/1.1 and HTTP/2 on one connection, with `caller` and the connection's
/// pre-authentication hold attached to every request, under `deadlines` when given (the local
/// admin socket has none), until it ends or shutdown.
pub async fn serve<IO>(
    io: IO,
    router: Router,
    (caller, pre_auth): (Caller, PreAuthHold),
    deadlines: Option<HttpDeadlines>,
    shutdown: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = WithConnection {
        router,
        caller,
        pre_auth,
    };
    serve_service(io, service, deadlines, shutdown).await;
}

/// The router, with what every request of the connection carries inserted into the request
/// (no per-connection layer over the whole router).
#[derive(Clone)]
struct WithConnection {
    router: Router,
    caller: Caller,
    pre_auth: PreAuthHold,
}

impl tower::Service<Request<hyper::body::Incoming>> for WithConnection {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = axum::routing::future::RouteFuture<Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        tower::Service::<Request<hyper::body::Incoming>>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, mut req: Request<hyper::body::Incoming>) -> Self::Future {
        req.extensions_mut().insert(self.caller.clone());
        req.extensions_mut().insert(self.pre_auth.clone());
        self.router.call(req)
    }
}

/// [`serve`] for any service that answers with an axum body (the application route's), under
/// the same deadlines and shutdown; upgrades (WebSockets) are served.
pub async fn serve_service<IO, S>(
    io: IO,
    service: S,
    deadlines: Option<HttpDeadlines>,
    mut shutdown: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<
            Request<hyper::body::Incoming>,
            Response = Response<Body>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let activity = Activity::default();
    let svc = TowerToHyperService::new(Tracked {
        router: service,
        activity: activity.clone(),
    });
    let builder = builder(deadlines);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let idle = deadlines.map(|d| d.idle);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        () = activity.until_idle_for(idle) => {
            tracing::debug!("HTTP connection idle: closed");
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(IDLE_CLOSE_GRACE, conn).await;
        }
        _ = hop_platform::signals::until_shutdown(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
        }
    }
}

fn builder(deadlines: Option<HttpDeadlines>) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    if let Some(d) = deadlines {
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(d.header_read);
    }
    builder
}

/// A connection's requests: how many are in flight, and when the last one started or ended.
#[derive(Clone)]
struct Activity(Arc<ActivityState>);

struct ActivityState {
    in_flight: AtomicUsize,
    last: Mutex<Instant>,
}

impl Default for Activity {
    fn default() -> Self {
        Self(Arc::new(ActivityState {
            in_flight: AtomicUsize::new(0),
            last: Mutex::new(clock::tokio_now()),
        }))
    }
}

impl Activity {
    fn touch(&self) {
        *self.0.last.lock().unwrap_or_else(|p| p.into_inner()) = clock::tokio_now();
    }

    /// A request starts; it ends when the returned guard is dropped.
    fn start(&self) -> InFlight {
        self.0.in_flight.fetch_add(1, Ordering::AcqRel);
        self.touch();
        InFlight(self.clone())
    }

    /// How long the connection has been without a request in flight; `None` while one is.
    fn idle_for(&self) -> Option<Duration> {
        if self.0.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(clock::tokio_since(
            *self.0.last.lock().unwrap_or_else(|p| p.into_inner()),
        ))
    }

    /// Completes once the connection has been idle for `limit`; never without a limit.
    async fn until_idle_for(&self, limit: Option<Duration>) {
        let Some(limit) = limit else {
            return std::future::pending().await;
        };
        loop {
            let wait = match self.idle_for() {
                Some(idle) if idle >= limit => return,
                Some(idle) => limit - idle,
                None => limit,
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// One request in flight.
struct InFlight(Activity);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The service, counting each request in flight until its response body is done.
#[derive(Clone)]
struct Tracked<S> {
    router: S,
    activity: Activity,
}

impl<S, B> tower::Service<Request<B>> for Tracked<S>
where
    S: tower::Service<Request<B>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let in_flight = self.activity.start();
        let response = tower::Service::call(&mut self.router, req);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| TrackedBody {
                inner: body,
                _in_flight: in_flight,
            }))
        })
    }
}

/// A response body that keeps its request in flight until it is done (or dropped).
pub struct TrackedBody {
    inner: Body,
    _in_flight: InFlight,
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hop_platform::clock;

    #[tokio::test]
    async fn a_connection_is_idle_only_with_nothing_in_flight() {
        let a = Activity::default();
        assert!(a.idle_for().is_some());
        let r1 = a.start();
        let r2 = a.start();
        assert!(a.idle_for().is_none());
        drop(r1);
        assert!(a.idle_for().is_none());
        drop(r2);
        assert!(a.idle_for().unwrap() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn the_idle_watch_waits_out_requests_in_flight() {
        let limit = Duration::from_millis(100);
        let a = Activity::default();
        let r = a.start();
        let started = clock::now();
        let release = async {
            tokio::time::sleep(limit * 2).await;
            drop(r);
        };
        tokio::join!(a.until_idle_for(Some(limit)), release);
        // Idle is counted from the end of the request, not from the start of the connection.
        assert!(
            clock::since(started) >= limit * 3,
            "{:?}",
            clock::since(started)
        );
    }
}
