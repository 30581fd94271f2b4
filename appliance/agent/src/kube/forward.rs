//! One kube data connection after the Dial answer: the proxy speaks HTTP/1.1 on the tunnel stream
//! (keep-alive, many requests of one user); each request is checked and cleaned by [`headers`]
//! (no single `impersonate-user`: 403 Status JSON, never forwarded), gets the agent's own
//! credentials, and goes to the API server through the cluster's pooled client with bodies
//! streamed both ways (watch, `logs -f`). An upgrade (exec, attach, port-forward) is forwarded as
//! one and, after `101`, the two upgraded streams are spliced byte for byte. API server failures
//! become a 502 Status JSON naming the cluster; no response head within [`RESPONSE_HEAD`] a 504
//! (a streaming body is never under that deadline).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::{Either, Full};
use hyper::body::{Body as _, Incoming};
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use super::Cluster;
use super::headers;
use crate::app::HEAD_TIMEOUT;

/// A response's body: the API server's, streamed, or the agent's own Status.
pub(crate) type Body = Either<Incoming, Full<Bytes>>;

/// Serves HTTP/1.1 on a data connection until the proxy closes it (or, after an upgrade, until
/// the upgraded stream ends).
pub(crate) async fn serve<S>(cluster: Arc<Cluster>, io: S)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let cluster = cluster.clone();
        async move { Ok::<_, Infallible>(forward(&cluster, req).await) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades()
        .await;
    if let Err(e) = served {
        tracing::debug!(error = %e, "kube data connection ended with an error");
    }
}

/// How long the API server has to answer a request's head (status and headers) once it is
/// sent. The body is not under it: a watch or `logs -f` streams for as long as it runs.
#[cfg(not(test))]
pub(crate) const RESPONSE_HEAD: Duration = Duration::from_secs(60);
/// Short under test, so that a test can wait it out.
#[cfg(test)]
pub(crate) const RESPONSE_HEAD: Duration = Duration::from_secs(1);

/// Forwards one request and returns what the API server answered (or the agent's refusal).
async fn forward(cluster: &Cluster, mut req: Request<Incoming>) -> Response<Body> {
    if let Err(e) = headers::impersonated_user(req.headers()) {
        return status(StatusCode::FORBIDDEN, "Forbidden", &format!("hop: {e}"));
    }
    // Only exec, attach and port-forward switch protocols (the proxy sends no other upgrade;
    // this holds even if it did): anything else goes on as a plain request.
    let upgrade = headers::is_upgrade(req.headers()) && is_stream_path(req.uri().path());
    let client_side = upgrade.then(|| hyper::upgrade::on(&mut req));
    let auth = match cluster.api.authorization().await {
        Ok(a) => a,
        Err(e) => return bad_gateway(cluster, &format!("the agent's token: {e}")),
    };
    prepare(cluster, &mut req, upgrade, auth);
    let sent = tokio::time::timeout(RESPONSE_HEAD, cluster.api.client.request(req));
    let mut resp = match sent.await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return bad_gateway(cluster, &describe(&e)),
        Err(_) => return timed_out(cluster),
    };
    let switched = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    match client_side {
        Some(client) if switched => {
            let api = hyper::upgrade::on(&mut resp);
            tokio::spawn(splice(client, api));
        }
        _ if switched => {
            return bad_gateway(cluster, "the API server switched protocols unasked");
        }
        _ => headers::strip_hop_by_hop(resp.headers_mut()),
    }
    resp.map(Either::Left)
}

/// Whether `path` is a pod's exec, attach or port-forward (`…/pods/NAME/exec`).
fn is_stream_path(path: &str) -> bool {
    let segments: Vec<&str> = path.trim_end_matches('/').rsplit('/').take(3).collect();
    matches!(
        segments.as_slice(),
        ["exec" | "attach" | "portforward", _, "pods"]
    )
}

/// The request as the API server gets it: its own URL and Host, the headers cleaned, the
/// agent's token if it uses one.
fn prepare(
    cluster: &Cluster,
    req: &mut Request<Incoming>,
    upgrade: bool,
    auth: Option<HeaderValue>,
) {
    *req.uri_mut() = cluster.api.uri_for(req.uri());
    *req.version_mut() = Version::HTTP_11;
    // A body of unknown length goes on chunked, whatever the method (hyper would assume a GET
    // without framing headers has none).
    let chunked = !req.body().is_end_stream() && req.body().size_hint().exact().is_none();
    let h = req.headers_mut();
    headers::strip_request(h, upgrade);
    if chunked {
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
    }
    h.insert(header::HOST, cluster.api.host.clone());
    if let Some(a) = auth {
        h.insert(header::AUTHORIZATION, a);
    }
}

/// Splices the two sides of an upgraded exchange until either ends.
async fn splice(client: OnUpgrade, api: OnUpgrade) {
    let (client, api) = tokio::join!(client, api);
    let (Ok(client), Ok(api)) = (client, api) else {
        tracing::debug!("a kube upgrade did not complete on both sides");
        return;
    };
    let (mut a, mut b) = (TokioIo::new(client), TokioIo::new(api));
    if let Err(e) = hop_net::copy::copy_both(&mut a, &mut b).await {
        tracing::debug!(error = %e, "kube upgraded stream ended with an error");
    }
}

/// The innermost cause of a client error, with what failed.
fn describe(e: &hyper_util::client::legacy::Error) -> String {
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
    format!("{what} the API server: {cause}")
}

fn bad_gateway(cluster: &Cluster, why: &str) -> Response<Body> {
    let msg = format!("hop: kube cluster {:?}: {why}", cluster.name);
    tracing::debug!(cluster = %cluster.name, error = %msg, "API server request failed");
    status(StatusCode::BAD_GATEWAY, "InternalError", &msg)
}

/// The 504 for a request the API server did not answer within [`RESPONSE_HEAD`].
fn timed_out(cluster: &Cluster) -> Response<Body> {
    let msg = format!(
        "hop: kube cluster {:?}: the API server did not answer within {} s",
        cluster.name,
        RESPONSE_HEAD.as_secs()
    );
    tracing::debug!(cluster = %cluster.name, "API server request timed out");
    status(StatusCode::GATEWAY_TIMEOUT, "Timeout", &msg)
}

/// A Kubernetes `Status` object, as kubectl prints it.
pub(crate) fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from(body.to_string()))));
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod stream_path_tests {
    use super::is_stream_path;

    #[test]
    fn only_a_pods_exec_attach_or_port_forward_may_upgrade() {
        for yes in [
            "/api/v1/namespaces/default/pods/web-1/exec",
            "/api/v1/namespaces/default/pods/web-1/attach",
            "/api/v1/namespaces/default/pods/web-1/portforward/",
        ] {
            assert!(is_stream_path(yes), "{yes}");
        }
        for no in [
            "/api/v1/pods",
            "/api/v1/namespaces/default/pods/web-1",
            "/api/v1/namespaces/default/pods/web-1/proxy",
            "/api/v1/namespaces/default/services/exec/attach",
            "/exec",
            "",
        ] {
            assert!(!is_stream_path(no), "{no}");
        }
    }
}
