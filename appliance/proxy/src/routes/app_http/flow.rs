//! The browser's way into an application session, and the cookies it uses.
//!
//! No session: the route sets `__Host-hop_app_state` (a random state and the path the browser
//! asked for; `Secure`, `HttpOnly`, `SameSite=Lax`, five minutes) and redirects to the web UI's
//! launch page for the application on the proxy's own host, which asks Auth for a one-time code
//! bound to the user, the application and the state, and sends the browser to
//! [`CALLBACK_PATH`] on the application's host. The callback compares the state with the cookie
//! (constant time), redeems the code once, starts the session, sets `__Host-hop_app_session`
//! (host-only: no `Domain`, `Path=/`, `Secure`, `HttpOnly`, `SameSite=Lax`), clears the state
//! cookie and redirects to the saved path, which is only ever a path on the same host. A code
//! that reaches a browser without its state is spent all the same. A fresh
//! session secret is made at every callback (no fixation), a callback without its state cookie
//! is answered with a page, not another redirect (no loop), and a request other than a GET or
//! HEAD without a session is answered 401.

use std::time::Duration;

use axum::body::Body;
use axum::http::header::{CACHE_CONTROL, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use subtle::ConstantTimeEq;

use super::conn::Conn;
use super::pages;

/// The application session's cookie.
pub const SESSION_COOKIE: &str = "__Host-hop_app_session";
/// The browser flow's state cookie.
pub const STATE_COOKIE: &str = "__Host-hop_app_state";
/// Where the web UI sends the browser with its code.
pub const CALLBACK_PATH: &str = "/hop-app/callback";
/// How long a browser has to come back through the launch.
pub const STATE_MAX_AGE: Duration = Duration::from_secs(300);
/// The longest path kept for after the launch.
const MAX_SAVED_PATH: usize = 2048;

/// The value of cookie `name` in a request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| hop_protocols::web_headers::cookie(v, name))
}

/// A `Set-Cookie` value for a host-only, HTTPS-only, script-hidden cookie.
pub fn set_cookie(name: &str, value: &str, max_age: Duration) -> HeaderValue {
    let v = format!(
        "{name}={value}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={}",
        max_age.as_secs()
    );
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A `Set-Cookie` value that removes cookie `name`.
pub fn clear_cookie(name: &str) -> HeaderValue {
    set_cookie(name, "", Duration::ZERO)
}

/// A fresh random state (hex of 32 bytes).
pub fn new_state() -> String {
    let mut b = [0u8; 32];
    rand::fill(&mut b[..]);
    hex::encode(b)
}

/// `path` if it is a path on this host (`/…`, not `//…` or `/\…`, no control characters, not
/// too long); else `/`.
pub fn same_host_path(path: &str) -> &str {
    let ok = path.starts_with('/')
        && !path.starts_with("//")
        && !path.starts_with("/\\")
        && path.len() <= MAX_SAVED_PATH
        && !path.chars().any(|c| c.is_control() || c == '\\');
    if ok { path } else { "/" }
}

/// The state cookie's value: the state and the path to return to.
pub fn state_cookie_value(state: &str, path: &str) -> String {
    format!("{state}.{}", B64.encode(same_host_path(path)))
}

/// The state and the saved path of a state cookie's value.
pub fn parse_state_cookie(value: &str) -> Option<(&str, String)> {
    let (state, path) = value.split_once('.')?;
    let path = String::from_utf8(B64.decode(path).ok()?).ok()?;
    Some((state, same_host_path(&path).to_string()))
}

/// Answers a request without a session: into the launch (GET, HEAD), else 401.
pub fn start<B>(conn: &Conn, req: &Request<B>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return pages::page(
            StatusCode::UNAUTHORIZED,
            "Not signed in to this application",
            "This request has no application session (or it expired). Open the application's address in the browser to sign in again.",
        );
    }
    let state = new_state();
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = conn.route.public.launch_url(&conn.app, &state);
    redirect(
        &location,
        &[set_cookie(
            STATE_COOKIE,
            &state_cookie_value(&state, path),
            STATE_MAX_AGE,
        )],
    )
}

/// A 302 to `location` with `cookies` set.
pub fn redirect(location: &str, cookies: &[HeaderValue]) -> Response<Body> {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::FOUND;
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(location) {
        h.insert(LOCATION, v);
    }
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for c in cookies {
        h.append(SET_COOKIE, c.clone());
    }
    r
}

/// The code and state of a callback's query.
fn callback_query(query: Option<&str>) -> Option<(String, String)> {
    let pairs = hop_protocols::web_headers::query_pairs(query?).ok()?;
    let get = |n: &str| pairs.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    Some((get("code")?, get("state")?))
}

/// Audits a callback refused before anyone is identified (rate limited, as every
/// unauthenticated refusal is).
fn refused_launch(conn: &Conn, reason: &'static str) {
    let refusal = hop_admission::Refusal::CrossSite { reason };
    conn.route.auth.audit_unverified_refusal(
        hop_admission::Route::App,
        &refusal,
        Some(conn.remote),
    );
}

/// The audit reason of a failed code exchange.
fn launch_failure(e: &hop_auth::apps::AppFlowError) -> &'static str {
    use hop_auth::apps::AppFlowError as E;
    match e {
        E::UnknownCode => "application launch: the code is unknown, used or expired",
        E::Mismatch => "application launch: the code is for another application or browser",
        E::LoginExpired => "application launch: the login behind it expired",
        E::Refused(_) | E::Busy | E::Signing(_) => "application launch: refused",
    }
}

/// Spends a code that came to a browser not holding its state: whoever sent this browser
/// through a launch with a state of their own (another browser's) must not find the code
/// still good if they ever learn it.
fn burn(conn: &Conn, code: &str) {
    let auth = &conn.route.auth;
    // No code is issued for an empty state: this redemption fails, and removes the code.
    let _ = auth.apps().codes.redeem(code, &conn.app, "", auth.now());
}

/// `GET /hop-app/callback?code=C&state=S`: the code exchange.
pub async fn callback<B>(conn: &Conn, req: &Request<B>) -> Response<Body> {
    let Some((code, state)) = callback_query(req.uri().query()) else {
        return pages::bad_request("the launch callback needs a code and a state");
    };
    let Some((saved_state, path)) =
        cookie(req.headers(), STATE_COOKIE).and_then(parse_state_cookie)
    else {
        burn(conn, &code);
        return pages::page(
            StatusCode::BAD_REQUEST,
            "Launch not started in this browser",
            "This browser holds no launch state for the application (cookies blocked, or the launch is older than five minutes). Open the application's address again.",
        );
    };
    if !bool::from(saved_state.as_bytes().ct_eq(state.as_bytes())) {
        burn(conn, &code);
        conn.audit_failed(
            "",
            "application launch: the state does not match the browser's",
        );
        return pages::page(
            StatusCode::BAD_REQUEST,
            "Launch state mismatch",
            "The launch was started in another browser or tab. Open the application's address again.",
        );
    }
    let auth = &conn.route.auth;
    let new = match auth.apps().redeem(&code, &conn.app, &state, auth.now()) {
        Ok(n) => n,
        Err(e) => {
            refused_launch(conn, launch_failure(&e));
            return pages::page(StatusCode::FORBIDDEN, "Launch refused", &e.to_string());
        }
    };
    // Whatever session the browser held before is replaced, never adopted.
    if let Some(old) = cookie(req.headers(), super::flow::SESSION_COOKIE)
        && let Some(s) = auth.apps().sessions.remove(old)
    {
        super::audit_end(auth, &s, "replaced");
    }
    if let Some(d) = &new.displaced {
        super::audit_end(auth, d, "over the per-user session limit");
    }
    super::audit_start(auth, &new.session, conn.remote);
    let ttl = new
        .session
        .expires
        .duration_since(auth.now())
        .unwrap_or_default();
    redirect(
        &path,
        &[
            set_cookie(SESSION_COOKIE, &new.secret, ttl),
            clear_cookie(STATE_COOKIE),
        ],
    )
}
