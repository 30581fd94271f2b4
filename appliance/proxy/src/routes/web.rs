//! The web routes of the one port besides the web UI: a JSON ping for browsers, scripts and
//! load balancers, and the JSON Web Key Set of the jwt CA (`/.well-known/jwks.json`) that web
//! applications verify `Hop-Jwt-Assertion` with. It carries the web UI's security headers too.
//!
//! The web UI itself is [`crate::web`], which also serves the invitation link printed by
//! `hop admin users add` (`/web/invite/TOKEN`: a page that completes the sign-up in the browser).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;

use hop_auth::AuthServer;

#[derive(Clone)]
struct WebState {
    auth: Arc<AuthServer>,
    proxy_addr: String,
}

pub fn router(auth: Arc<AuthServer>, proxy_addr: String) -> Router {
    Router::new()
        .route("/webapi/ping", get(ping))
        .route("/.well-known/jwks.json", get(jwks))
        .with_state(WebState { auth, proxy_addr })
        .layer(axum::middleware::map_response(
            crate::web::assets::security_headers,
        ))
}

/// The keys web applications verify `Hop-Jwt-Assertion` with.
async fn jwks(State(s): State<WebState>) -> impl IntoResponse {
    (
        [(axum::http::header::CACHE_CONTROL, "public, max-age=300")],
        axum::Json(s.auth.jwks()),
    )
}

async fn ping(State(s): State<WebState>) -> impl IntoResponse {
    axum::Json(serde_json::json!({
        "cluster_name": s.auth.cluster_name(),
        "server_version": env!("CARGO_PKG_VERSION"),
        "auth": { "type": "local", "second_factor": s.auth.second_factor() },
        "ca_pin": s.auth.ca_pin(),
        "proxy": { "listen_addr": s.proxy_addr },
    }))
}
