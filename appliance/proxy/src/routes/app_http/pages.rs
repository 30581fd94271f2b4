//! The pages the application route answers with instead of the application: a refusal with its
//! reason (403), an application that is not there (404) or whose agent does not answer (502),
//! a request for another application on this connection (421), a malformed request (400).
//! Text only: every string is escaped, nothing is fetched (`default-src 'none'`), never cached.

use axum::body::Body;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderValue, Response, StatusCode};

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A page with `status`, a `title` and the `detail` that says why.
pub fn page(status: StatusCode, title: &str, detail: &str) -> Response<Body> {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title></head>\
         <body style=\"font-family:sans-serif;max-width:40em;margin:4em auto\">\
         <h1>{t}</h1><p>{d}</p><p><small>Hop · {s}</small></p></body></html>\n",
        t = escape(title),
        d = escape(detail),
        s = status.as_u16(),
    );
    let mut r = Response::new(Body::from(html));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// 403: admission or the roles refused, with the reason.
pub fn forbidden(app: &str, reason: &str) -> Response<Body> {
    page(
        StatusCode::FORBIDDEN,
        "Access to this application is refused",
        &format!("Application {app:?}: {reason}"),
    )
}

/// 421: the request names another host than this connection's application.
pub fn misdirected(authority: &str) -> Response<Body> {
    page(
        StatusCode::MISDIRECTED_REQUEST,
        "Misdirected request",
        &format!(
            "This connection serves another application than {authority}; retry on a new connection."
        ),
    )
}

/// 502: the application's agent (or the application behind it) did not answer.
pub fn unavailable(app: &str, reason: &str) -> Response<Body> {
    page(
        StatusCode::BAD_GATEWAY,
        "Application unavailable",
        &format!("Application {app:?}: {reason}"),
    )
}

/// 400 with the reason.
pub fn bad_request(reason: &str) -> Response<Body> {
    page(StatusCode::BAD_REQUEST, "Bad request", reason)
}
