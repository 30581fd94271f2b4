//! The web routes of the one port: a JSON ping for browsers and scripts, and the invite page.
//!
//! The web UI itself is [`crate::web`]; these routes exist so that an invite URL printed by
//! `hop admin users add` leads somewhere useful and so that load balancers can probe the port.
//! They carry the web UI's security headers too.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{Html, IntoResponse};
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
        .route("/web/invite/{token}", get(invite))
        .with_state(WebState { auth, proxy_addr })
        .layer(axum::middleware::map_response(
            crate::web::assets::security_headers,
        ))
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

fn html_escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '&' => "&amp;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&#39;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

async fn invite(State(s): State<WebState>, Path(token): Path<String>) -> impl IntoResponse {
    let token: String = token
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .take(64)
        .collect();
    let body = format!(
        "<!doctype html><meta charset=utf-8><title>Hop sign-up</title>\
         <h1>Welcome to {cluster}</h1>\
         <p>Complete your sign-up from a terminal with the <code>hop</code> client:</p>\
         <pre>hop signup {token} --proxy {proxy} --ca-pin {pin}</pre>\
         <p>It asks for a password and shows a QR code for your authenticator app.</p>",
        cluster = html_escape(s.auth.cluster_name()),
        proxy = html_escape(&s.proxy_addr),
        pin = html_escape(&s.auth.ca_pin()),
    );
    ([(header::CACHE_CONTROL, "no-store")], Html(body))
}
