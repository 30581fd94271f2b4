//! The web UI on the one port: `https://PROXY/web`, its assets, and the JSON API its pages call.
//!
//! This room owns the page and its embedded assets ([`assets`]: content-hashed, gzipped at
//! build time, long-cached, under a strict Content-Security-Policy), web sessions
//! ([`sessions`]: a random token in an `HttpOnly`, `Secure`, `SameSite=Strict` `__Host-` cookie,
//! kept in memory by its SHA-256, ending with the certificate Auth issued at login, renewed while
//! used), the check every API request passes ([`guard`]: the session, CSRF and `Origin` for a
//! state-changing request, then the one admission decision on the `web` route), the API
//! itself ([`api`]: login through Auth's own login, logout, the session, the resources a user
//! may reach), the account page ([`account`]: password, one-time-code devices; [`webauthn`]:
//! security keys, and the login's key and passkey challenges), the editor
//! pages ([`admin`]: users, roles, join tokens, locks, each call authorized by Auth with the
//! admin API's rules), invitation links ([`invite`]), web application launches ([`launch`]), the web terminal ([`terminal`]: a
//! WebSocket into the SSH and join routes' own code) and the live sessions a user may see
//! and join ([`active`]), and single sign-on from the login page ([`sso`]: the connectors, the
//! button's start, a web session from the sealed result). A session whose identity admission refuses (a lock, a deletion, a role taken
//! away, expiry) is ended by [`WebRoom::watch_sessions`] within a second or two, and at its next
//! request at the latest.
//!
//! It never decides access itself (admission and the role checker do, through Auth), never
//! stores a session token (only its hash), never writes a session to disk, and never renders
//! data as markup (the pages build text nodes; the API answers JSON). The data plane and the
//! relay never import it.

pub mod account;
pub mod active;
pub mod admin;
pub mod api;
pub mod assets;
pub mod audit;
pub mod guard;
pub mod invite;
pub mod launch;
pub mod qr;
pub mod recordings;
pub mod records;
pub mod requests;
pub mod sessions;
pub mod sso;
pub mod terminal;
pub mod webauthn;

#[cfg(test)]
mod room_tests;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use hop_auth::AuthServer;
use hop_auth::inventory::Inventory;

pub use sessions::WebSessions;

/// What the web UI serves from: Auth (login, admission, audit), the inventory of connected
/// agents (listings), and the live web sessions.
pub struct WebRoom {
    pub(crate) auth: Arc<AuthServer>,
    pub(crate) inventory: Arc<dyn Inventory>,
    pub(crate) sessions: WebSessions,
    /// How the web terminal reaches nodes, once the proxy serves it ([`Self::serve_terminals`]).
    nodes: std::sync::OnceLock<terminal::Nodes>,
    /// The web terminals open per user (capped).
    terminals: terminal::OpenTerminals,
    /// The recordings and the audit log the recordings and audit pages read.
    pub(crate) records: std::sync::OnceLock<records::WebRecords>,
    /// Web SSO logins started here and not yet finished ([`sso`]).
    pub(crate) sso_pending: sso::PendingWebLogins,
}

/// The most bytes a web API request's body may have (a login form is well under 1 KiB).
pub const MAX_API_BODY: usize = 64 * 1024;

/// Reads a web API request's whole body (at most [`MAX_API_BODY`], else 413) before its
/// handler runs. A handler that answers without reading the body (a refusal, a logout) would
/// otherwise end an HTTP/2 stream the client is still sending on, and the client would see a
/// stream error instead of the answer.
async fn whole_body(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (parts, body) = req.into_parts();
    match axum::body::to_bytes(body, MAX_API_BODY).await {
        Ok(bytes) => {
            let req = axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes));
            next.run(req).await
        }
        Err(_) => (
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            [(axum::http::header::CACHE_CONTROL, "no-store")],
            axum::Json(serde_json::json!({
                "error": format!("the request body is over {MAX_API_BODY} bytes, or was cut off"),
                "code": "bad_request",
            })),
        )
            .into_response(),
    }
}

impl WebRoom {
    /// `idle_timeout`: how long a web session lives without a request that renews it
    /// (`proxy_service.web_idle_timeout`; it never outlives the certificate Auth issued at
    /// login, whatever its use).
    pub fn new(
        auth: Arc<AuthServer>,
        inventory: Arc<dyn Inventory>,
        idle_timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            auth,
            inventory,
            sessions: WebSessions::new(idle_timeout),
            nodes: std::sync::OnceLock::new(),
            terminals: terminal::OpenTerminals::default(),
            records: std::sync::OnceLock::new(),
            sso_pending: sso::PendingWebLogins::default(),
        })
    }

    /// The web routes: `/` (a redirect), the pages under `/web`, `/web/assets/`, `/web/api/`.
    pub fn router(self: &Arc<Self>) -> Router {
        let api = Router::new()
            .route("/web/api/login", post(api::login))
            .route("/web/api/logout", post(api::logout))
            .route("/web/api/session", get(api::session))
            .route("/web/api/resources", get(api::resources))
            .route("/web/api/sso/connectors", get(sso::connectors))
            .merge(admin::routes())
            .merge(account::routes())
            .merge(webauthn::routes())
            .merge(invite::routes())
            .merge(launch::routes())
            .merge(terminal::routes())
            .merge(active::routes())
            .merge(recordings::routes())
            .merge(audit::routes())
            .merge(requests::routes())
            .route("/web/api/{*rest}", axum::routing::any(assets::no_such_call))
            .with_state(self.clone())
            .layer(axum::middleware::from_fn(whole_body));
        let mut pages = Router::new()
            .route("/", get(assets::to_web))
            .route("/web/assets/{name}", get(assets::asset))
            .route(sso::FINISH_PATH, get(sso::finish))
            .route("/v1/webapi/oidc/login", get(sso::start))
            .route("/v1/webapi/github/login", get(sso::start))
            .route("/v1/webapi/saml/login", get(sso::start))
            .with_state(self.clone());
        for page in assets::PAGES {
            pages = pages.route(page, get(assets::index));
        }
        pages
            .merge(api)
            .layer(axum::middleware::map_response(assets::security_headers))
    }

    /// Every [`crate::admission::RECHECK`], decides every live web session again and ends those
    /// admission now refuses, until shutdown.
    pub async fn watch_sessions(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(crate::admission::RECHECK) => {}
                _ = hop_platform::signals::until_shutdown(&mut shutdown) => return,
            }
            self.sessions.sweep(&self.auth);
        }
    }
}
