//! The check every web API request passes before its handler runs: a live web session (its
//! cookie), for a state-changing request the session's CSRF token (constant-time) and this
//! origin, for any other no sign of another site or origin, then admission on the `web` route like every other call (identity exists, not
//! locked, certificate valid, roles still its own). A refusal of the identity ends the session;
//! every refusal is audited (`access.refused`, route `web`) and answered as JSON with the reason
//! and its code.
//!
//! It owns no session state (that is [`super::sessions`]) and decides no access itself.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hop_admission::{Admitted, Refusal, Route};
use hop_auth::caller::Caller;
use hop_protocols::web_headers;

use super::WebRoom;
use super::sessions::{COOKIE, Found, Lookup, ends_session};
use crate::dataplane::limits::PreAuthHold;

/// The header a state-changing request carries the session's CSRF token in.
pub const CSRF_HEADER: &str = "x-hop-csrf";

/// A request the guard let through: its session, and admission's answer with the roles the
/// identity holds now.
pub struct WebCaller {
    pub session: Found,
    pub admitted: Admitted,
    pub remote: SocketAddr,
}

/// Why the guard refused a request, as the page is told.
#[derive(Debug)]
pub struct WebRefusal {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl WebRefusal {
    fn no_session() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            code: "no_session",
            message: "no web session (logged out, idle too long, or never logged in): log in"
                .into(),
        }
    }

    pub(crate) fn ended(refusal: &Refusal) -> Self {
        let status = if ends_session(refusal) {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        Self {
            status,
            code: refusal.code(),
            message: refusal.to_string(),
        }
    }

    pub(crate) fn cross_site(refusal: &Refusal) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            code: refusal.code(),
            message: refusal.to_string(),
        }
    }
}

impl IntoResponse for WebRefusal {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message, "code": self.code });
        (
            self.status,
            [(header::CACHE_CONTROL, "no-store")],
            Json(body),
        )
            .into_response()
    }
}

/// Whether this request renews the session's idle deadline (reading the session's own state
/// does not: an open tab asking whether its session holds is not activity).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renew {
    Yes,
    No,
}

/// The session token in the request's cookies, if any.
pub fn session_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| web_headers::cookie(v, COOKIE))
}

/// Why a state-changing request does not come from this origin's page, if it does not: its
/// `Origin` must be `https://` and the host it was sent to, and a `Sec-Fetch-Site` header, when
/// sent, must say `same-origin`.
pub fn cross_origin(headers: &HeaderMap, authority: Option<&str>) -> Option<&'static str> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or(authority);
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return Some("the request has no Origin header");
    };
    if !host.is_some_and(|host| web_headers::is_https_origin(origin, host)) {
        return Some("the request comes from another origin");
    }
    let site = headers.get("sec-fetch-site").and_then(|s| s.to_str().ok());
    if site.is_some_and(|s| s != "same-origin") {
        return Some("the request comes from another site");
    }
    None
}

/// Why a request that changes nothing still does not come from this origin, if it does not: a
/// sibling host is the same *site*, so `SameSite=Strict` sends it the cookie, and its page may
/// not use the session either (keep it from idling out, or open a WebSocket, whose handshake is
/// a `GET`). Refused: a `Sec-Fetch-Site` other than `same-origin` or `none` (an address typed
/// in the bar), and an `Origin` (every WebSocket handshake has one) that is not this origin.
/// Clients that send neither (scripts, older browsers) pass: the cookie is theirs.
pub fn foreign_reader(headers: &HeaderMap, authority: Option<&str>) -> Option<&'static str> {
    let site = headers
        .get("sec-fetch-site")
        .map(|s| s.to_str().unwrap_or(""));
    if site.is_some_and(|s| s != "same-origin" && s != "none") {
        return Some("the request comes from another site");
    }
    if headers.contains_key(header::ORIGIN) {
        return cross_origin(headers, authority);
    }
    None
}

fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// What the guard reads of a web API request: its method, the authority it was sent to (the
/// request URI's: HTTP/2 has no `Host` header), its headers and the client's address.
pub struct WebRequest {
    pub method: Method,
    pub authority: Option<String>,
    pub headers: HeaderMap,
    pub remote: SocketAddr,
    /// The connection's place in the pre-authentication budget, released once a request is
    /// admitted.
    pub pre_auth: PreAuthHold,
}

impl<S: Send + Sync> FromRequestParts<S> for WebRequest {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let remote = parts
            .extensions
            .get::<Caller>()
            .and_then(Caller::remote)
            .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
        Ok(Self {
            method: parts.method.clone(),
            authority: parts.uri.authority().map(|a| a.as_str().to_owned()),
            headers: parts.headers.clone(),
            remote,
            pre_auth: parts
                .extensions
                .get::<PreAuthHold>()
                .cloned()
                .unwrap_or_default(),
        })
    }
}

impl WebRoom {
    /// Lets a request through, or says why not (audited).
    pub fn guard(&self, req: &WebRequest, renew: Renew) -> Result<WebCaller, WebRefusal> {
        let remote = req.remote;
        let session = self.session_of(req)?;
        match crate::admission::admit(&self.auth, &session.cert, None, Route::Web, remote) {
            Ok(admitted) => {
                // Authenticated: the connection leaves the budget of unauthenticated ones.
                req.pre_auth.release();
                if renew == Renew::Yes {
                    self.sessions.renew(&session.key, self.auth.now());
                }
                Ok(WebCaller {
                    session,
                    admitted,
                    remote,
                })
            }
            Err(refusal) => {
                if ends_session(&refusal) {
                    self.sessions
                        .end(&session.key, Some(refusal.clone()), self.auth.now());
                }
                Err(WebRefusal::ended(&refusal))
            }
        }
    }

    /// The live session a request names, its CSRF token and origin checked when it changes
    /// state, without asking admission: all that ending the session (logout) needs, which must
    /// work while admission cannot answer (a session that outlives its logout is worse than one
    /// ended early). Refusals are audited as in [`Self::guard`].
    pub fn session_of(&self, req: &WebRequest) -> Result<Found, WebRefusal> {
        let (method, headers, remote) = (&req.method, &req.headers, req.remote);
        let authority = req.authority.as_deref();
        let now = self.auth.now();
        let token = session_token(headers).ok_or_else(WebRefusal::no_session)?;
        let session = match self.sessions.lookup(token, now) {
            Lookup::Live(found) => found,
            Lookup::Ended { refusal, user } => {
                self.auth
                    .audit_refusal(Route::Web, &user, &refusal, Some(remote));
                return Err(WebRefusal::ended(&refusal));
            }
            Lookup::Unknown => return Err(WebRefusal::no_session()),
        };
        let reason = if changes_state(method) {
            let csrf = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
            match csrf {
                None => Some("the request carries no CSRF token"),
                Some(t) if !session.csrf_matches(t) => Some("the request's CSRF token is wrong"),
                Some(_) => cross_origin(headers, authority),
            }
        } else {
            foreign_reader(headers, authority)
        };
        if let Some(reason) = reason {
            let refusal = Refusal::CrossSite { reason };
            let user = &session.cert.identity.username;
            self.auth
                .audit_refusal(Route::Web, user, &refusal, Some(remote));
            return Err(WebRefusal::cross_site(&refusal));
        }
        Ok(session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let h = headers(&[("cookie", "a=b; __Host-hop_session=abc ; c=d")]);
        assert_eq!(session_token(&h), Some("abc"));
        let h = headers(&[("cookie", "a=b"), ("cookie", "__Host-hop_session=xyz")]);
        assert_eq!(session_token(&h), Some("xyz"));
        // A cookie without the prefix (settable by a sibling host or over HTTP) is not it.
        let h = headers(&[("cookie", "hop_session=abc")]);
        assert_eq!(session_token(&h), None);
        assert_eq!(session_token(&HeaderMap::new()), None);
    }

    #[test]
    fn only_this_origin_may_change_state() {
        let ok = headers(&[("host", "proxy:3080"), ("origin", "https://proxy:3080")]);
        assert_eq!(cross_origin(&ok, None), None);
        let h2 = headers(&[("origin", "https://proxy:3080")]);
        assert_eq!(cross_origin(&h2, Some("proxy:3080")), None);
        for bad in [
            headers(&[("host", "proxy:3080")]),
            headers(&[("host", "proxy:3080"), ("origin", "https://evil:3080")]),
            headers(&[("host", "proxy:3080"), ("origin", "http://proxy:3080")]),
            headers(&[("host", "proxy:3080"), ("origin", "null")]),
            headers(&[
                ("host", "proxy:3080"),
                ("origin", "https://proxy:3080.evil"),
            ]),
            headers(&[
                ("host", "proxy:3080"),
                ("origin", "https://proxy:3080"),
                ("sec-fetch-site", "cross-site"),
            ]),
        ] {
            assert!(cross_origin(&bad, None).is_some(), "{bad:?}");
        }
    }
}
