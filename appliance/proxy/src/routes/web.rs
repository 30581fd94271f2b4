//! The web routes of the one port besides the web UI: a JSON ping for browsers, scripts and
//! load balancers, the JSON Web Key Set of the jwt CA (`/.well-known/jwks.json`) that web
//! applications verify `Hop-Jwt-Assertion` with, and the OpenID providers' callback
//! (`/v1/webapi/oidc/callback`: the code and state go to Auth, the browser on to the client's
//! redirect URL with the sealed result). It carries the web UI's security headers too.
//!
//! The web UI itself is [`crate::web`], which also serves the invitation link printed by
//! `hop admin users add` (`/web/invite/TOKEN`: a page that completes the sign-up in the browser).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::{get, post};

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
        .route(hop_api::sso::OIDC_CALLBACK_PATH, get(sso_callback))
        .route(hop_api::sso::GITHUB_CALLBACK_PATH, get(sso_callback))
        .route(hop_api::sso::SAML_ACS_PATH, post(saml_acs))
        .route(
            &format!("{}/{{connector}}", hop_api::sso::SAML_ACS_PATH),
            post(saml_acs),
        )
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

/// The longest callback query accepted (a code and a state are well under it).
const MAX_CALLBACK_QUERY: usize = 8 * 1024;

/// `GET /v1/webapi/oidc/callback?code=…&state=…`: Auth completes the login; the browser goes on
/// to the client's redirect URL with the sealed result, or sees why the login was refused.
async fn sso_callback(
    State(s): State<WebState>,
    req: axum::extract::Request,
) -> axum::response::Response {
    use axum::http::StatusCode;
    use hop_api::sso::query_param;
    let refused = |status: StatusCode, detail: &str| {
        crate::routes::app_http::pages::page(status, "Single sign-on failed", detail)
            .into_response()
    };
    let query = req.uri().query().unwrap_or("");
    if query.len() > MAX_CALLBACK_QUERY {
        return refused(StatusCode::BAD_REQUEST, "The request is too long.");
    }
    let remote = req
        .extensions()
        .get::<hop_auth::caller::Caller>()
        .and_then(hop_auth::caller::Caller::remote);
    let error = query_param(query, "error").map(|e| {
        match query_param(query, "error_description") {
            Some(d) => format!("{e}: {d}"),
            None => e,
        }
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect::<String>()
    });
    let callback = hop_auth::server::SsoCallback {
        state: query_param(query, "state").unwrap_or_default(),
        code: query_param(query, "code").unwrap_or_default(),
        error,
        remote,
    };
    sso_outcome(s.auth.complete_sso_login(callback).await)
}

/// The largest ACS form body accepted (a signed response is a few KiB; `hop_saml` caps the
/// XML at 256 KiB).
const MAX_ACS_BODY: usize = hop_saml::response::MAX_RESPONSE_B64 * 3 / 2 + 4096;

/// `POST /v1/webapi/saml/acs/NAME` (or `/v1/webapi/saml/acs` with `RelayState` naming the
/// connector): the IdP's HTTP-POST binding. Auth verifies the response and completes the
/// login; the browser goes on to the client's redirect URL, or sees why it was refused.
async fn saml_acs(
    State(s): State<WebState>,
    path: Option<axum::extract::Path<String>>,
    req: axum::extract::Request,
) -> axum::response::Response {
    use axum::http::StatusCode;
    use hop_api::sso::query_param;
    let refused = |status: StatusCode, detail: &str| {
        crate::routes::app_http::pages::page(status, "Single sign-on failed", detail)
            .into_response()
    };
    let remote = req
        .extensions()
        .get::<hop_auth::caller::Caller>()
        .and_then(hop_auth::caller::Caller::remote);
    let Ok(body) = axum::body::to_bytes(req.into_body(), MAX_ACS_BODY).await else {
        return refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            "The SAML response is too large.",
        );
    };
    let body = String::from_utf8_lossy(&body);
    let Some(saml_response) = query_param(&body, "SAMLResponse").filter(|r| !r.is_empty()) else {
        return refused(
            StatusCode::BAD_REQUEST,
            "The request carries no SAMLResponse.",
        );
    };
    let connector = match path {
        Some(axum::extract::Path(name)) => name,
        None => query_param(&body, "RelayState").unwrap_or_default(),
    };
    let post = hop_auth::server::SamlPost {
        connector,
        saml_response,
        remote,
    };
    sso_outcome(s.auth.complete_saml_login(post).await)
}

/// The browser's next step after Auth completed (or refused) an SSO login.
fn sso_outcome(
    outcome: Result<String, hop_auth::server::SsoCallbackRefusal>,
) -> axum::response::Response {
    use axum::http::StatusCode;
    let refused = |status: StatusCode, detail: &str| {
        crate::routes::app_http::pages::page(status, "Single sign-on failed", detail)
            .into_response()
    };
    match outcome {
        Ok(location) => match axum::http::HeaderValue::from_str(&location) {
            Ok(loc) => (
                StatusCode::FOUND,
                [
                    (axum::http::header::LOCATION, loc),
                    (
                        axum::http::header::CACHE_CONTROL,
                        axum::http::HeaderValue::from_static("no-store"),
                    ),
                ],
            )
                .into_response(),
            Err(_) => refused(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The login result cannot be sent on.",
            ),
        },
        Err(hop_auth::server::SsoCallbackRefusal {
            client_redirect: Some(url),
            ..
        }) if axum::http::HeaderValue::from_str(&url).is_ok() => (
            StatusCode::FOUND,
            [
                (
                    axum::http::header::LOCATION,
                    axum::http::HeaderValue::from_str(&url)
                        .unwrap_or(axum::http::HeaderValue::from_static("/")),
                ),
                (
                    axum::http::header::CACHE_CONTROL,
                    axum::http::HeaderValue::from_static("no-store"),
                ),
            ],
        )
            .into_response(),
        Err(hop_auth::server::SsoCallbackRefusal { error: e, .. }) => {
            let status = match &e {
                hop_auth::AuthError::Sso(se) if se.is_bad_request() => StatusCode::BAD_REQUEST,
                hop_auth::AuthError::Sso(_) => StatusCode::FORBIDDEN,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            refused(status, &format!("{e}. Run hop login again."))
        }
    }
}
