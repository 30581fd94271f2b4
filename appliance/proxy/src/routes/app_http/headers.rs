//! The headers an upstream application sees, and those a client gets back.
//!
//! Toward the agent: hop-by-hop headers go (and any header `Connection` names); a client's
//! `Hop-Jwt-Assertion`, `X-Forwarded-*` and what other proxies set for the client's address or
//! original path (`X-Real-IP`, `X-Original-URL`, …) go, in any spelling a CGI-style server would read
//! as theirs (`Hop_Jwt_Assertion`); Hop's own cookies (`hop_*`, `__Host-hop_*`,
//! `__Secure-hop_*`) are cut out of `Cookie` (the rest is kept, in one header, as HTTP/1.1
//! wants); then `Host` (the public host the browser used), `Hop-Jwt-Assertion` (the session's
//! JWT), `X-Forwarded-Proto`/`-Host`/`-For` and `X-Real-IP` are set. Back to the client: hop-by-hop headers
//! go, except on a `101` (a WebSocket's `Upgrade`). Pure functions over header maps.

use std::net::IpAddr;

use axum::http::header::{self, HeaderName};
use axum::http::{HeaderMap, HeaderValue};

/// The identity assertion's header.
pub const JWT_HEADER: &str = "hop-jwt-assertion";

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Whether a cookie name is one of Hop's.
pub fn is_hop_cookie(name: &str) -> bool {
    let name = name.trim();
    ["hop_", "__Host-hop_", "__Secure-hop_"]
        .iter()
        .any(|p| name.starts_with(p))
}

/// The headers Hop sets for the upstream (besides `Host`).
const SET_BY_HOP: &[&str] = &[
    JWT_HEADER,
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "forwarded",
];

/// Headers other proxies set that upstreams commonly trust for the client's address or the
/// request's original path: a client's own are never passed on (`X-Real-IP` is set by Hop).
const PROXIES_CLAIMS: &[&str] = &[
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-server",
    "x-original-url",
    "x-rewrite-url",
];

/// Removes a client's headers that only an underscore tells apart from one Hop sets or strips:
/// a CGI-style server (WSGI, Rack, PHP) reads `Hop_Jwt_Assertion` and `Hop-Jwt-Assertion` as
/// the same `HTTP_HOP_JWT_ASSERTION`.
pub fn strip_lookalikes(h: &mut HeaderMap) {
    let lookalikes: Vec<HeaderName> = h
        .keys()
        .filter(|k| k.as_str().contains('_'))
        .filter(|k| {
            let spelled = k.as_str().replace('_', "-");
            SET_BY_HOP.contains(&spelled.as_str()) || PROXIES_CLAIMS.contains(&spelled.as_str())
        })
        .cloned()
        .collect();
    for n in lookalikes {
        h.remove(n);
    }
}

/// Removes hop-by-hop headers, and those the `Connection` header names.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        h.remove(*n);
    }
}

/// The request's cookies without Hop's, joined into one `Cookie` value (`None`: none left).
pub fn foreign_cookies(h: &HeaderMap) -> Option<String> {
    let kept: Vec<&str> = h
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .filter(|pair| !is_hop_cookie(pair.split('=').next().unwrap_or_default()))
        .collect();
    (!kept.is_empty()).then(|| kept.join("; "))
}

/// Prepares a client's request headers for the agent: see the module docs. `upgrade` keeps a
/// WebSocket's `Connection: Upgrade` and `Upgrade: websocket`.
pub fn to_upstream(
    h: &mut HeaderMap,
    jwt: &HeaderValue,
    public_host: &str,
    client: IpAddr,
    upgrade: bool,
) {
    let cookies = foreign_cookies(h);
    strip_hop_by_hop(h);
    h.remove(header::COOKIE);
    strip_lookalikes(h);
    h.remove(JWT_HEADER);
    h.remove("x-forwarded-for");
    h.remove("x-forwarded-host");
    h.remove("x-forwarded-proto");
    h.remove("forwarded");
    for n in PROXIES_CLAIMS {
        h.remove(*n);
    }
    if let Some(c) = cookies.and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.insert(header::COOKIE, c);
    }
    if let Ok(v) = HeaderValue::from_str(public_host) {
        h.insert(header::HOST, v.clone());
        h.insert("x-forwarded-host", v);
    }
    h.insert(JWT_HEADER, jwt.clone());
    h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
    if let Ok(v) = HeaderValue::from_str(&client.to_string()) {
        h.insert("x-forwarded-for", v.clone());
        h.insert("x-real-ip", v);
    }
    if upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }
}

/// Prepares an upstream's response headers for the client (`switching`: a `101`, whose
/// `Connection`/`Upgrade` stay).
pub fn to_client(h: &mut HeaderMap, switching: bool) {
    if !switching {
        strip_hop_by_hop(h);
    }
}
