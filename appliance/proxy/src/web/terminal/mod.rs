//! The web terminal: `GET /web/api/terminal` upgraded to a WebSocket that carries a terminal
//! into the same SSH path as `hop ssh` (`?login=LOGIN&node=NODE&cols=C&rows=R`), or into a live
//! session joined the way `hop join` joins it (`?session=ID&mode=observer|peer`).
//!
//! This module owns the upgrade's checks, in this order: a live web session (its cookie), an
//! `Origin` that is this origin (required: every browser sends one on a WebSocket handshake),
//! the session's CSRF token offered as the subprotocol `hop-csrf.TOKEN` (compared in constant
//! time), then admission on the `web` route ([`WebRoom::guard`]). A refusal there is an HTTP
//! answer (403/401 with the reason, audited) and no socket is opened. The session itself is
//! decided by the SSH and join routes' own code (`node`): admission on the `hop_ssh` (or
//! `agentless`) route for that login, the node's labels and the login in the roles, or the
//! join rules; its refusal reaches the page as a status frame and ends the socket. `bridge`
//! moves the bytes and ends the terminal when the web session ends (logout, lock, deletion,
//! role removal: within [`crate::admission::RECHECK`] and a snapshot rebuild) or admission
//! refuses the session.
//!
//! A user has at most [`MAX_PER_USER`] terminals open on this proxy (`open`); the next is
//! answered 429 before the upgrade.
//!
//! It never decides access itself, never logs the CSRF token or keys, and never reads the
//! node's output for anything but cutting it at UTF-8 boundaries.

mod bridge;
mod mfa;
mod node;
mod open;

pub use open::{MAX_PER_USER, OpenTerminals};

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hop_admission::{Refusal, Route};

use super::WebRoom;
use super::guard::{Renew, WebCaller, WebRefusal, WebRequest, cross_origin};

/// The subprotocol the page asks for (and the proxy answers with).
pub const SUBPROTOCOL: &str = "hop-terminal";
/// The prefix of the subprotocol that carries the session's CSRF token.
pub const CSRF_PROTOCOL_PREFIX: &str = "hop-csrf.";
/// The largest WebSocket frame or message the page may send (keys and pastes; a paste larger
/// than this is cut by the page).
pub const MAX_FRAME: usize = 64 * 1024;
/// How long the node's side (SSH handshake, login, PTY and shell, or the join) may take before
/// the page is told it failed.
pub const SETUP_DEADLINE: Duration = Duration::from_secs(15);

/// How the web terminal reaches nodes: the connected agents, and where the proxy records the
/// sessions it terminates.
pub struct Nodes {
    pub registry: Arc<crate::tunnels::TunnelRegistry>,
    pub recordings: Option<Arc<dyn hop_storage::recording::RecordingBackend>>,
}

impl WebRoom {
    /// Lets the web terminal reach nodes (once; a second call changes nothing). Until then, a
    /// terminal is refused with a message.
    pub fn serve_terminals(&self, nodes: Nodes) {
        let _ = self.nodes.set(nodes);
    }

    pub(crate) fn registry(&self) -> Result<Arc<crate::tunnels::TunnelRegistry>, String> {
        self.nodes
            .get()
            .map(|n| n.registry.clone())
            .ok_or_else(|| "this proxy serves no web terminal".to_string())
    }

    pub(crate) fn recordings(&self) -> Option<Arc<dyn hop_storage::recording::RecordingBackend>> {
        self.nodes.get().and_then(|n| n.recordings.clone())
    }
}

/// The web terminal's routes.
pub(crate) fn routes() -> Router<Arc<WebRoom>> {
    Router::new().route("/web/api/terminal", get(terminal))
}

/// What the page asks the terminal for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    /// A shell as `login` on `node`, in a terminal of `cols`×`rows`.
    Shell {
        login: String,
        node: String,
        cols: u16,
        rows: u16,
    },
    /// A live session, as an observer or a peer.
    Join { session: String, mode: String },
}

/// Why the query names no terminal (the page's fault).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadQuery {
    #[error("the terminal needs login and node, or session and mode")]
    Incomplete,
    #[error("{0}")]
    Size(#[from] hop_protocols::web_terminal::ControlError),
}

impl Want {
    /// Reads the upgrade request's query string.
    pub fn from_query(query: &str) -> Result<Self, BadQuery> {
        let get = |name| query_param(query, name).filter(|v| !v.is_empty());
        if let (Some(session), Some(mode)) = (get("session"), get("mode")) {
            return Ok(Self::Join { session, mode });
        }
        let (Some(login), Some(node)) = (get("login"), get("node")) else {
            return Err(BadQuery::Incomplete);
        };
        let cols = get("cols").unwrap_or_else(|| "80".into());
        let rows = get("rows").unwrap_or_else(|| "24".into());
        let hop_protocols::web_terminal::Control::Resize { cols, rows } =
            hop_protocols::web_terminal::Control::parse(&format!("resize {cols} {rows}"))?;
        Ok(Self::Shell {
            login,
            node,
            cols,
            rows,
        })
    }
}

/// The value of `name` in a query string (`a=b&c=d`), percent-decoded (`+` is a space); `None`
/// when absent or not valid UTF-8 once decoded.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    let raw = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)?
        .1;
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let s = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(s, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The CSRF token among the subprotocols the page offered, if any.
pub fn offered_csrf(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| {
            p.trim()
                .strip_prefix(CSRF_PROTOCOL_PREFIX)
                .map(str::to_owned)
        })
}

/// The upgrade, if the request is one (else the guard's checks still run and a plain request
/// is answered 400 after them, so a forged one is audited the same).
struct MaybeUpgrade(Option<WebSocketUpgrade>);

impl<S: Send + Sync> FromRequestParts<S> for MaybeUpgrade {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            WebSocketUpgrade::from_request_parts(parts, state)
                .await
                .ok(),
        ))
    }
}

/// `GET /web/api/terminal`: the checks, then the upgrade.
async fn terminal(
    State(room): State<Arc<WebRoom>>,
    req: WebRequest,
    query: axum::extract::RawQuery,
    MaybeUpgrade(upgrade): MaybeUpgrade,
) -> Response {
    let caller = match upgrade_caller(&room, &req) {
        Ok(c) => c,
        Err(refusal) => return refusal.into_response(),
    };
    let want = match Want::from_query(query.0.as_deref().unwrap_or("")) {
        Ok(w) => w,
        Err(e) => return bad_request(&e.to_string()),
    };
    let Some(upgrade) = upgrade else {
        return bad_request("the terminal is a WebSocket: the request is not an upgrade");
    };
    let Some(slot) = room.terminals.take(&caller.session.cert.identity.username) else {
        return too_many();
    };
    upgrade
        .protocols([SUBPROTOCOL])
        .max_frame_size(MAX_FRAME)
        .max_message_size(MAX_FRAME)
        .on_upgrade(move |socket| async move {
            bridge::run(room, caller, want, socket).await;
            drop(slot);
        })
}

fn too_many() -> Response {
    let message = format!("at most {MAX_PER_USER} web terminals may be open at once; close one");
    (
        axum::http::StatusCode::TOO_MANY_REQUESTS,
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        axum::Json(serde_json::json!({ "error": message, "code": "too_many_terminals" })),
    )
        .into_response()
}

fn bad_request(message: &str) -> Response {
    (
        axum::http::StatusCode::BAD_REQUEST,
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        axum::Json(serde_json::json!({ "error": message, "code": "bad_request" })),
    )
        .into_response()
}

/// A terminal's upgrade passes the web session's checks, the origin (required) and the CSRF
/// token, then admission on the `web` route; refusals are audited.
fn upgrade_caller(room: &WebRoom, req: &WebRequest) -> Result<WebCaller, WebRefusal> {
    let session = room.session_of(req)?;
    let reason = match cross_origin(&req.headers, req.authority.as_deref()) {
        Some(reason) => Some(reason),
        None => match offered_csrf(&req.headers) {
            None => Some("the WebSocket upgrade carries no CSRF token"),
            Some(t) if !session.csrf_matches(&t) => {
                Some("the WebSocket upgrade's CSRF token is wrong")
            }
            Some(_) => None,
        },
    };
    if let Some(reason) = reason {
        let refusal = Refusal::CrossSite { reason };
        let user = &session.cert.identity.username;
        room.auth
            .audit_refusal(Route::Web, user, &refusal, Some(req.remote));
        return Err(WebRefusal::cross_site(&refusal));
    }
    room.guard(req, Renew::Yes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};

    #[test]
    fn query_parameters_are_decoded_and_absent_ones_are_none() {
        let q = "login=ubuntu&node=web%2D1.example&x=a+b&bad=%zz&cut=%4&utf=%C3%A9";
        assert_eq!(query_param(q, "login").as_deref(), Some("ubuntu"));
        assert_eq!(query_param(q, "node").as_deref(), Some("web-1.example"));
        assert_eq!(query_param(q, "x").as_deref(), Some("a b"));
        assert_eq!(query_param(q, "utf").as_deref(), Some("é"));
        assert_eq!(query_param(q, "bad"), None);
        assert_eq!(query_param(q, "cut"), None);
        assert_eq!(query_param(q, "nope"), None);
        assert_eq!(query_param("%FF=1&a=%FF", "a"), None);
        assert_eq!(query_param("", "a"), None);
    }

    #[test]
    fn a_query_names_a_shell_or_a_join() {
        assert_eq!(
            Want::from_query("login=u&node=n&cols=100&rows=30"),
            Ok(Want::Shell {
                login: "u".into(),
                node: "n".into(),
                cols: 100,
                rows: 30
            })
        );
        assert_eq!(
            Want::from_query("login=u&node=n"),
            Ok(Want::Shell {
                login: "u".into(),
                node: "n".into(),
                cols: 80,
                rows: 24
            })
        );
        assert_eq!(
            Want::from_query("session=abc&mode=observer"),
            Ok(Want::Join {
                session: "abc".into(),
                mode: "observer".into()
            })
        );
        assert_eq!(Want::from_query("login=u"), Err(BadQuery::Incomplete));
        assert_eq!(Want::from_query("login=&node=n"), Err(BadQuery::Incomplete));
        assert!(matches!(
            Want::from_query("login=u&node=n&cols=0"),
            Err(BadQuery::Size(_))
        ));
        assert!(matches!(
            Want::from_query("login=u&node=n&rows=1%202"),
            Err(BadQuery::Size(_))
        ));
    }

    #[test]
    fn the_csrf_token_is_read_from_the_offered_subprotocols() {
        let mut h = HeaderMap::new();
        assert_eq!(offered_csrf(&h), None);
        h.append(
            "sec-websocket-protocol",
            HeaderValue::from_static("hop-terminal, hop-csrf.abc123"),
        );
        assert_eq!(offered_csrf(&h).as_deref(), Some("abc123"));
        let mut h = HeaderMap::new();
        h.append(
            "sec-websocket-protocol",
            HeaderValue::from_static("hop-terminal"),
        );
        h.append(
            "sec-websocket-protocol",
            HeaderValue::from_static("hop-csrf.def"),
        );
        assert_eq!(offered_csrf(&h).as_deref(), Some("def"));
    }

    /// A cross-site page holding the cookie (or a sibling host) cannot pass the upgrade's
    /// origin check with a look-alike `Origin`.
    #[test]
    fn only_this_exact_https_origin_opens_a_terminal() {
        let with = |origin: Option<&str>, host: &str| {
            let mut h = HeaderMap::new();
            h.insert("host", HeaderValue::from_str(host).unwrap());
            if let Some(o) = origin {
                h.insert("origin", HeaderValue::from_str(o).unwrap());
            }
            cross_origin(&h, None)
        };
        assert_eq!(with(Some("https://proxy:3080"), "proxy:3080"), None);
        assert_eq!(with(Some("https://proxy"), "proxy"), None);
        for origin in [
            "https://proxy:3080.evil",
            "https://proxy:3080.evil.example",
            "https://evil.proxy:3080",
            "https://proxy:3080@evil",
            "https://proxy:3080/",
            "https://proxy:30800",
            "https://proxy",
            "http://proxy:3080",
            "wss://proxy:3080",
            "HTTPS://PROXY:3080",
            "https://PROXY:3080",
            "https://xn--prxy-0ra:3080",
            "https://pröxy:3080",
            "null",
            "",
            " https://proxy:3080",
            "https://proxy:3080, https://proxy:3080",
        ] {
            let Ok(value) = HeaderValue::from_bytes(origin.as_bytes()) else {
                continue;
            };
            let mut h = HeaderMap::new();
            h.insert("host", HeaderValue::from_static("proxy:3080"));
            h.insert("origin", value);
            assert!(cross_origin(&h, None).is_some(), "{origin:?} passed");
        }
        assert!(with(None, "proxy:3080").is_some(), "no Origin passed");
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("proxy:3080"));
        h.insert("origin", HeaderValue::from_static("https://proxy:3080"));
        h.insert("sec-fetch-site", HeaderValue::from_static("same-site"));
        assert!(cross_origin(&h, None).is_some(), "a sibling host passed");
    }

    #[test]
    fn an_empty_or_mangled_csrf_subprotocol_offers_no_token_of_a_session() {
        let offered = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.append("sec-websocket-protocol", HeaderValue::from_static(v));
            offered_csrf(&h)
        };
        assert_eq!(offered("hop-csrf.").as_deref(), Some(""));
        assert_eq!(offered("hop-csrfabc"), None);
        assert_eq!(offered("HOP-CSRF.abc"), None);
        assert_eq!(offered("x-hop-csrf.abc"), None);
        assert_eq!(offered("hop-terminal,hop-csrf.a b").as_deref(), Some("a b"));
    }
}
