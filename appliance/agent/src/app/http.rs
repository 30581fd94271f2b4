//! A web app's side of a data connection: after the Dial answer the proxy speaks HTTP/1.1 on
//! the tunnel stream (keep-alive, many requests, possibly of different users). For each request
//! the agent reads the identity from `Hop-Jwt-Assertion` (none or malformed: 400, never
//! forwarded), applies the rewrites, and forwards it through the app's pooled upstream client
//! with bodies streamed both ways; a WebSocket upgrade is forwarded as one and, after `101`, the
//! two upgraded streams are spliced. Upstream failures become a 502 naming the problem.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hop_config::services::AppSpec;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::{Either, Full};
use hyper::body::{Body as _, Incoming};
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use super::jwt_claims::{self, ASSERTION_HEADER, Claims, ClaimsError};
use super::rewrite::{self, Rewrites};
use super::upstream::{Upstream, UpstreamError};

/// How long the proxy may take to send a request head, and how long a data connection may sit
/// idle between requests (the proxy's pool lets them go sooner, after 90 s).
pub(crate) const HEAD_TIMEOUT: Duration = Duration::from_secs(120);

/// A response's body: the upstream's, streamed, or the agent's own short text.
pub(crate) type Body = Either<Incoming, Full<Bytes>>;

/// One web app as the agent serves it.
pub(crate) struct WebApp {
    name: String,
    upstream: Upstream,
    rewrites: Rewrites,
}

impl WebApp {
    pub(crate) fn new(spec: &AppSpec) -> Result<Self, UpstreamError> {
        let target = spec.target()?;
        let headers = spec.header_rewrites()?;
        Ok(Self {
            name: spec.name.clone(),
            upstream: Upstream::new(spec)?,
            rewrites: Rewrites::new(&headers, &spec.rewrite.redirect, target),
        })
    }
}

/// One data connection: the app, and the claims of the last assertion seen on it (the proxy
/// sends a session's requests with the same assertion, so most requests decode nothing).
struct Conn {
    app: Arc<WebApp>,
    last: Mutex<Option<(HeaderValue, Arc<Claims>)>>,
}

/// Serves HTTP/1.1 on a data connection until the proxy closes it (or, after a WebSocket
/// upgrade, until the WebSocket ends).
pub(crate) async fn serve<S>(app: Arc<WebApp>, io: S)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = Arc::new(Conn {
        app,
        last: Mutex::new(None),
    });
    let service = service_fn(move |req| handle(conn.clone(), req));
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades()
        .await;
    if let Err(e) = served {
        tracing::debug!(error = %e, "app data connection ended with an error");
    }
}

impl Conn {
    /// The request's identity: its one assertion, decoded (or the last one, if unchanged).
    fn claims(&self, req: &Request<Incoming>) -> Result<(HeaderValue, Arc<Claims>), ClaimsError> {
        let mut all = req.headers().get_all(ASSERTION_HEADER).iter();
        let jwt = all.next().ok_or(ClaimsError::Missing)?;
        if all.next().is_some() {
            return Err(ClaimsError::Several);
        }
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((seen, claims)) = &*last
            && seen == jwt
        {
            return Ok((jwt.clone(), claims.clone()));
        }
        let claims = Arc::new(jwt_claims::decode(jwt.as_bytes())?);
        *last = Some((jwt.clone(), claims.clone()));
        Ok((jwt.clone(), claims))
    }
}

async fn handle(conn: Arc<Conn>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let (jwt, claims) = match conn.claims(&req) {
        Ok(found) => found,
        Err(e) => return Ok(text(StatusCode::BAD_REQUEST, e.to_string())),
    };
    Ok(forward(&conn.app, req, &jwt, &claims).await)
}

/// Forwards one identified request and returns what the upstream answered.
async fn forward(
    app: &WebApp,
    mut req: Request<Incoming>,
    jwt: &HeaderValue,
    claims: &Claims,
) -> Response<Body> {
    let public_host = req
        .headers()
        .get(header::HOST)
        .or_else(|| req.headers().get("x-forwarded-host"))
        .cloned();
    let websocket = rewrite::is_websocket(req.headers());
    let client_side = websocket.then(|| hyper::upgrade::on(&mut req));
    prepare(app, &mut req, jwt, claims, websocket);
    let mut resp = match app.upstream.client.request(req).await {
        Ok(r) => r,
        Err(e) => return bad_gateway(app, &e),
    };
    let switched = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    match client_side {
        Some(client) if switched => {
            let upstream = hyper::upgrade::on(&mut resp);
            tokio::spawn(splice(client, upstream));
        }
        _ if switched => {
            let why = format!(
                "hop: app {:?}: the upstream switched protocols unasked\n",
                app.name
            );
            return text(StatusCode::BAD_GATEWAY, why);
        }
        _ => rewrite::strip_hop_by_hop(resp.headers_mut(), false),
    }
    rewrite::strip_hop_set_cookies(resp.headers_mut());
    if let Some(public) = &public_host {
        app.rewrites.response_location(resp.headers_mut(), public);
    }
    resp.map(Either::Left)
}

/// The request as the upstream gets it: its own URL and Host, no hop-by-hop headers or Hop
/// cookies, the operator's rewrites applied.
fn prepare(
    app: &WebApp,
    req: &mut Request<Incoming>,
    jwt: &HeaderValue,
    claims: &Claims,
    websocket: bool,
) {
    *req.uri_mut() = app.upstream.uri_for(req.uri());
    *req.version_mut() = Version::HTTP_11;
    // A body of unknown length goes on chunked, whatever the method (hyper would assume a
    // GET without framing headers has none).
    let chunked = !req.body().is_end_stream() && req.body().size_hint().exact().is_none();
    let headers = req.headers_mut();
    rewrite::strip_hop_by_hop(headers, websocket);
    if chunked {
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
    }
    rewrite::strip_hop_cookies(headers);
    let jwt_text = jwt.to_str().unwrap_or_default();
    if !app.rewrites.apply_headers(headers, jwt_text, claims) {
        headers.insert(header::HOST, app.upstream.host.clone());
    }
}

/// Splices the two sides of an upgraded (WebSocket) exchange until either ends.
async fn splice(client: OnUpgrade, upstream: OnUpgrade) {
    let (client, upstream) = tokio::join!(client, upstream);
    let (Ok(client), Ok(upstream)) = (client, upstream) else {
        tracing::debug!("a WebSocket upgrade did not complete on both sides");
        return;
    };
    let (mut a, mut b) = (TokioIo::new(client), TokioIo::new(upstream));
    if let Err(e) = hop_net::copy::copy_both(&mut a, &mut b).await {
        tracing::debug!(error = %e, "WebSocket relay ended with an error");
    }
}

/// A 502 naming what went wrong on the way to the upstream.
fn bad_gateway(app: &WebApp, e: &hyper_util::client::legacy::Error) -> Response<Body> {
    let mut cause = String::new();
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    let what = if e.is_connect() {
        "cannot connect to"
    } else {
        "no answer from"
    };
    let body = format!(
        "hop: app {:?}: {what} the upstream {}: {cause}\n",
        app.name, app.upstream.uri
    );
    tracing::debug!(app = %app.name, error = %body.trim_end(), "upstream failed");
    text(StatusCode::BAD_GATEWAY, body)
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
