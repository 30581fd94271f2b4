//! Answers the kube route gives itself, as Kubernetes `Status` objects: kubectl (and every
//! client-go program) prints a `Status`'s `message` as the error, so a refusal reads as
//! `error: You must be logged in to the server (…)` or `Error from server (Forbidden): …` with
//! Hop's reason in it.

use axum::body::Body;
use axum::http::{HeaderValue, Response, StatusCode, header};

/// A `Status` answer with `code` and `message`; the `reason` is Kubernetes' name for the code.
pub fn status(code: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason(code),
        "code": code.as_u16(),
    });
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// 401: no certificate routed to a kube cluster.
pub fn unauthorized(message: &str) -> Response<Body> {
    status(StatusCode::UNAUTHORIZED, message)
}

/// 403: admission or the role refused.
pub fn forbidden(message: &str) -> Response<Body> {
    status(StatusCode::FORBIDDEN, message)
}

/// 404: no connected kube agent serves the certificate's cluster.
pub fn unknown_cluster(cluster: &str) -> Response<Body> {
    status(
        StatusCode::NOT_FOUND,
        &format!(
            "Kubernetes cluster {cluster:?} is not available: no connected kube agent serves it (`hop kube ls` lists the ones you can reach)"
        ),
    )
}

/// 502: the agent could not be reached or its connection failed.
pub fn agent_unreachable(cluster: &str, why: &str) -> Response<Body> {
    status(
        StatusCode::BAD_GATEWAY,
        &format!("Kubernetes cluster {cluster:?}: {why}"),
    )
}

/// 504: the agent did not answer in time.
pub fn agent_timeout(cluster: &str, why: &str) -> Response<Body> {
    status(
        StatusCode::GATEWAY_TIMEOUT,
        &format!("Kubernetes cluster {cluster:?}: {why}"),
    )
}

/// 503 with `Retry-After: 1`: the proxy cannot take the request now (kubectl's client retries
/// on its own).
pub fn busy(message: &str) -> Response<Body> {
    let mut r = status(StatusCode::SERVICE_UNAVAILABLE, message);
    r.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from_static("1"),
    );
    r
}

/// 400: a request the route cannot read.
pub fn bad_request(message: &str) -> Response<Body> {
    status(StatusCode::BAD_REQUEST, message)
}

/// Kubernetes' `reason` for an HTTP status (`metav1.StatusReason`).
fn reason(code: StatusCode) -> &'static str {
    match code {
        StatusCode::BAD_REQUEST => "BadRequest",
        StatusCode::UNAUTHORIZED => "Unauthorized",
        StatusCode::FORBIDDEN => "Forbidden",
        StatusCode::NOT_FOUND => "NotFound",
        StatusCode::METHOD_NOT_ALLOWED => "MethodNotAllowed",
        StatusCode::SERVICE_UNAVAILABLE => "ServiceUnavailable",
        StatusCode::GATEWAY_TIMEOUT => "Timeout",
        _ => "InternalError",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refusal_is_a_status_object_kubectl_prints() {
        let r = forbidden("pods \"db\" in namespace \"prod\": not allowed");
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["kind"], "Status");
        assert_eq!(v["apiVersion"], "v1");
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "Forbidden");
        assert_eq!(v["code"], 403);
        assert_eq!(
            v["message"],
            "pods \"db\" in namespace \"prod\": not allowed"
        );
        assert_eq!(unauthorized("x").status(), StatusCode::UNAUTHORIZED);
        assert_eq!(unknown_cluster("dev").status(), StatusCode::NOT_FOUND);
        assert_eq!(
            agent_unreachable("dev", "x").status(),
            StatusCode::BAD_GATEWAY
        );
    }
}
