//! The web UI's JSON API under `/web/api/`: login (Auth's own login: password, one-time code,
//! its rate limit and lockout, its audit events), logout, the session the page runs under, and
//! the resources the user may reach, filtered by the roles exactly as `hop ls`, `hop apps ls`
//! and `hop db ls` are (`hop_auth::listings`).
//!
//! Every handler but login passes [`WebRoom::guard`] first; login checks the request's origin
//! itself (no session exists yet). Answers are JSON and never cached.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hop_admission::{Refusal, Route};
use hop_api::timestamps::rfc3339;
use hop_auth::AuthError;
use hop_auth::audit::EventKind;
use hop_auth::server::{LoginCertificates, LoginClient, LoginRequest, WebauthnAssertion};
use serde::{Deserialize, Serialize};

use super::WebRoom;
use super::guard::{Renew, WebRefusal, WebRequest, cross_origin};
use super::sessions::{COOKIE, SessionCredentials};
use crate::admission::UserCert;

/// What the login form sends.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginForm {
    pub user: String,
    pub password: String,
    #[serde(default)]
    pub otp: String,
    /// A security key's assertion (answering `/web/api/login/webauthn`) in place of `otp`.
    #[serde(default)]
    pub webauthn: Option<WebauthnAssertion>,
    /// A shorter session than the roles allow (as `hop login --ttl`), in seconds.
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
}

/// The session the page runs under.
#[derive(Serialize)]
pub struct SessionView {
    pub user: String,
    pub roles: Vec<String>,
    pub logins: Vec<String>,
    pub expires: String,
    /// Sent back in the `X-Hop-Csrf` header of every state-changing request.
    pub csrf_token: String,
}

fn json_error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = serde_json::json!({ "error": message.into(), "code": code });
    (status, [(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

fn no_store(body: impl Serialize) -> Response {
    ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

/// The `Set-Cookie` value of a session until `expires` (`None`: the cookie is cleared).
fn cookie(token: Option<&str>, expires: SystemTime, now: SystemTime) -> HeaderValue {
    let max_age = expires
        .duration_since(now)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let value = match token {
        Some(t) => {
            format!("{COOKIE}={t}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={max_age}")
        }
        None => format!("{COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0"),
    };
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static(""))
}

/// `POST /web/api/login`: password and one-time code through Auth's login; a web session with
/// the certificate pair Auth issued.
pub async fn login(
    State(room): State<Arc<WebRoom>>,
    req: WebRequest,
    Json(form): Json<LoginForm>,
) -> Response {
    let (headers, remote) = (&req.headers, req.remote);
    if let Some(reason) = cross_origin(headers, req.authority.as_deref()) {
        let refusal = Refusal::CrossSite { reason };
        room.auth
            .audit_unverified_refusal(Route::Web, &refusal, Some(remote));
        return json_error(StatusCode::FORBIDDEN, refusal.code(), refusal.to_string());
    }
    let Ok((ssh, tls)) = login_keys() else {
        return json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "cannot generate keys",
        );
    };
    let auth = room.auth.clone();
    let (ssh_public, tls_public) = (ssh.public_openssh.clone(), tls.public_spki_der.clone());
    let issued = tokio::task::spawn_blocking(move || {
        let req = LoginRequest {
            username: &form.user,
            password: &form.password,
            totp_code: &form.otp,
            ssh_public_key: &ssh_public,
            tls_public_key_der: &tls_public,
            ttl: form.ttl_seconds.filter(|s| *s > 0).map(Duration::from_secs),
            remote: Some(remote),
            client: LoginClient::Web,
        };
        match &form.webauthn {
            Some(assertion) => auth.login_webauthn(&req, assertion),
            None => auth.login(&req),
        }
    })
    .await;
    let certs = match issued {
        Ok(Ok(certs)) => certs,
        Ok(Err(e)) => return login_refused(&e),
        Err(_) => {
            return json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "login failed",
            );
        }
    };
    start_session(&room, certs, ssh, tls)
}

/// The key pairs a web session's certificates are issued for (the RNG is not held across an
/// await: it is not `Send`).
pub(super) fn login_keys() -> Result<(hop_ca::SshKeyPair, hop_ca::X509KeyPair), hop_ca::CaError> {
    let mut rng = rand::rng();
    Ok((
        hop_ca::generate_ssh_keypair(&mut rng)?,
        hop_ca::generate_x509_keypair(&mut rng)?,
    ))
}

pub(super) fn start_session(
    room: &WebRoom,
    certs: LoginCertificates,
    ssh: hop_ca::SshKeyPair,
    tls: hop_ca::X509KeyPair,
) -> Response {
    let now = room.auth.now();
    let cert = UserCert {
        identity: certs.identity,
        issued_at: certs.issued_at,
        expires: certs.expires,
    };
    let view = SessionView {
        user: cert.identity.username.clone(),
        roles: cert.identity.roles.clone(),
        logins: cert.identity.logins.clone(),
        expires: rfc3339(cert.expires),
        csrf_token: String::new(),
    };
    let expires = cert.expires;
    let credentials = SessionCredentials {
        ssh,
        ssh_certificate: certs.ssh_certificate,
        tls,
        tls_certificate_pem: certs.tls_certificate_pem,
    };
    let new = room.sessions.create(cert, credentials, now);
    let mut response = no_store(SessionView {
        csrf_token: new.csrf,
        ..view
    });
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie(Some(&new.token), expires, now));
    response
}

/// What the page is told of a refused login: Auth's answer, which never says which part was
/// wrong.
pub(super) fn login_refused(e: &AuthError) -> Response {
    match e {
        AuthError::InvalidCredentials => json_error(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "invalid user name, password or one-time code",
        ),
        AuthError::RateLimited { .. } => {
            json_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited", e.to_string())
        }
        AuthError::BadRequest(_) => {
            json_error(StatusCode::BAD_REQUEST, "bad_request", e.to_string())
        }
        _ => {
            tracing::warn!(error = %e, "web login failed");
            json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "login failed",
            )
        }
    }
}

/// `POST /web/api/logout`: the session ends now; its cookie no longer works (audited
/// `user.logout`, `client: web`). The user's other web sessions (other browsers, or an earlier
/// login in this one) are not ended, as in Teleport; a new login likewise opens a session beside
/// any earlier one, which lasts until its own logout, expiry or idle timeout. It needs the
/// session's CSRF token and this origin, not admission (ending a session is always allowed).
pub async fn logout(
    State(room): State<Arc<WebRoom>>,
    req: WebRequest,
) -> Result<Response, WebRefusal> {
    // Not admission: a logout must end the session even while admission cannot answer.
    let session = room.session_of(&req)?;
    let now = room.auth.now();
    room.sessions.end(&session.key, None, now);
    // Queued, not awaited: the session has ended whatever the audit log does.
    room.auth.emit(
        room.auth
            .event(EventKind::UserLogout, &session.cert.identity.username)
            .remote(Some(req.remote))
            .field("client", "web"),
    );
    let mut response = no_store(serde_json::json!({}));
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie(None, now, now));
    Ok(response)
}

/// `GET /web/api/session`: who the page runs as, and its CSRF token. Not activity: it does not
/// renew the session.
pub async fn session(
    State(room): State<Arc<WebRoom>>,
    req: WebRequest,
) -> Result<Response, WebRefusal> {
    let c = room.guard(&req, Renew::No)?;
    let id = &c.session.cert.identity;
    Ok(no_store(SessionView {
        user: id.username.clone(),
        roles: id.roles.clone(),
        logins: id.logins.clone(),
        expires: rfc3339(c.session.cert.expires),
        csrf_token: c.session.csrf(),
    }))
}

#[derive(Serialize)]
struct NodeView {
    name: String,
    labels: BTreeMap<String, String>,
    logins: Vec<String>,
}

#[derive(Serialize)]
struct AppView {
    name: String,
    labels: BTreeMap<String, String>,
    /// An HTTP application, opened in the browser at `https://NAME.P`.
    http: bool,
}

#[derive(Serialize)]
struct DatabaseView {
    name: String,
    protocol: String,
    labels: BTreeMap<String, String>,
    db_users: Vec<String>,
    db_names: Vec<String>,
}

/// `GET /web/api/resources`: the nodes (with the logins allowed on each), applications and
/// databases (with their users and names) the user's roles allow.
pub async fn resources(
    State(room): State<Arc<WebRoom>>,
    req: WebRequest,
) -> Result<Response, WebRefusal> {
    let c = room.guard(&req, Renew::Yes)?;
    let (auth, inventory) = (room.auth.clone(), room.inventory.clone());
    let nodes = tokio::task::spawn_blocking(move || {
        hop_auth::inventory::all_nodes(inventory.as_ref(), &auth)
    })
    .await
    .unwrap_or_default();
    let checker = c.admitted.checker();
    let logins = &c.session.cert.identity.logins;
    let nodes: Vec<NodeView> = hop_auth::listings::visible_nodes(checker, logins, nodes)
        .into_iter()
        .map(|v| NodeView {
            name: v.node.name,
            labels: v.node.labels,
            logins: v.logins,
        })
        .collect();
    let apps: Vec<AppView> = hop_auth::listings::visible_apps(checker, room.inventory.apps())
        .into_iter()
        .map(|a| AppView {
            http: crate::routes::app_http::is_http_app(&a.uri),
            name: a.name,
            labels: a.labels,
        })
        .collect();
    let databases: Vec<DatabaseView> =
        hop_auth::listings::visible_databases(checker, room.inventory.databases())
            .into_iter()
            .map(|v| DatabaseView {
                protocol: v.database.protocol().to_string(),
                name: v.database.name,
                labels: v.database.labels,
                db_users: v.db_users,
                db_names: v.db_names,
            })
            .collect();
    Ok(no_store(serde_json::json!({
        "nodes": nodes,
        "apps": apps,
        "databases": databases,
    })))
}
