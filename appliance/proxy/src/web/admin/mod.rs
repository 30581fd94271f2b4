//! The editor API under `/web/api/`: users (add with an invitation link, lock, unlock, reset,
//! remove), roles (YAML, validated by the parser `hop admin create` uses, with the error's line
//! and field), join tokens (the secret shown once) and locks, and which of them the caller may
//! edit (the pages hide what they may not; the API refuses it regardless).
//!
//! Every call passes [`WebRoom::guard`] (session, CSRF and origin, admission on the `web`
//! route), then the RBAC rule the gRPC admin API checks for the same `hop admin` command,
//! through Auth's own [`hop_auth::grpc::authorize`] with the session's identity; the change is
//! made by the same `AuthServer` function the gRPC API calls, which audits it as it does for
//! the CLI (the actor is the web user); a call the rules refuse is audited as a refusal on the
//! `web` route. It never decides access itself and never shows a stored secret.

mod locks;
mod roles;
mod tokens;
mod users;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hop_auth::AuthError;
use hop_auth::AuthServer;
use hop_auth::caller::Caller;
use serde::Serialize;

use super::WebRoom;
use super::guard::{Renew, WebCaller, WebRefusal, WebRequest};

/// The editor routes, merged into the web API router.
pub(crate) fn routes() -> Router<Arc<WebRoom>> {
    Router::new()
        .route("/web/api/editor", get(editor))
        .route("/web/api/users", get(users::list).post(users::add))
        .route(
            "/web/api/users/{name}",
            axum::routing::delete(users::remove),
        )
        .route("/web/api/users/{name}/lock", post(users::lock))
        .route("/web/api/users/{name}/unlock", post(users::unlock))
        .route("/web/api/users/{name}/reset", post(users::reset))
        .route("/web/api/roles", get(roles::list).post(roles::create))
        .route(
            "/web/api/roles/{name}",
            get(roles::read).put(roles::update).delete(roles::remove),
        )
        .route("/web/api/tokens", get(tokens::list).post(tokens::create))
        .route(
            "/web/api/tokens/{id}",
            axum::routing::delete(tokens::remove),
        )
        .route("/web/api/locks", get(locks::list).post(locks::create))
        .route("/web/api/locks/{id}", axum::routing::delete(locks::remove))
}

/// Why an editor call failed: the guard's refusal, or Auth's answer.
pub(crate) enum EditorError {
    Guard(WebRefusal),
    Auth(AuthError),
    /// A role document that does not parse or validate: the message, its line and field.
    Invalid {
        message: String,
        line: Option<u64>,
        field: Option<String>,
    },
}

impl From<WebRefusal> for EditorError {
    fn from(r: WebRefusal) -> Self {
        Self::Guard(r)
    }
}

impl From<AuthError> for EditorError {
    fn from(e: AuthError) -> Self {
        Self::Auth(e)
    }
}

/// The status and code a page is told for an Auth error. Never 401: the page reads a 401 as
/// "your web session ended".
pub(crate) fn auth_status(e: &AuthError) -> (StatusCode, &'static str) {
    match e {
        AuthError::Denied(_) => (StatusCode::FORBIDDEN, "access_denied"),
        AuthError::InvalidCredentials
        | AuthError::LoginRefused { .. }
        | AuthError::Locked { .. } => (StatusCode::FORBIDDEN, "invalid_credentials"),
        AuthError::InviteNotFound | AuthError::InviteExpired { .. } => {
            (StatusCode::FORBIDDEN, "invalid_invite")
        }
        AuthError::BadRequest(_) | AuthError::UnusableKey { .. } => {
            (StatusCode::BAD_REQUEST, "bad_request")
        }
        AuthError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        AuthError::AlreadyExists(_) | AuthError::AlreadyStored(_) => {
            (StatusCode::CONFLICT, "already_exists")
        }
        AuthError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

/// Auth's error as the page is told it (internal errors logged, not detailed).
pub(crate) fn auth_error(e: &AuthError) -> Response {
    let (status, code) = auth_status(e);
    let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::warn!(error = %e, "web API call failed");
        "the request failed inside Hop (see the proxy's log)".to_string()
    } else {
        match e {
            AuthError::InvalidCredentials
            | AuthError::LoginRefused { .. }
            | AuthError::Locked { .. } => "wrong password or one-time code".to_string(),
            other => other.to_string(),
        }
    };
    json(
        status,
        serde_json::json!({ "error": message, "code": code }),
    )
}

impl IntoResponse for EditorError {
    fn into_response(self) -> Response {
        match self {
            Self::Guard(r) => r.into_response(),
            Self::Auth(e) => auth_error(&e),
            Self::Invalid {
                message,
                line,
                field,
            } => json(
                StatusCode::UNPROCESSABLE_ENTITY,
                serde_json::json!({
                    "error": message, "code": "invalid", "line": line, "field": field,
                }),
            ),
        }
    }
}

/// A request's JSON body as a handler takes it: read only once the caller is let through, so
/// that a refusal (audited) comes first whatever the body, and a caller who may not make the
/// call is not told how its form looks.
pub(crate) type Form<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

/// The form of a caller already let through, or a JSON `400` saying what is wrong with it.
pub(crate) fn form<T>(body: Form<T>) -> Result<T, EditorError> {
    body.map(|Json(t)| t)
        .map_err(|e| EditorError::Auth(AuthError::BadRequest(e.body_text())))
}

/// A JSON answer, never cached.
pub(crate) fn json(status: StatusCode, body: impl Serialize) -> Response {
    (status, [(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

/// A `200` JSON answer, never cached.
pub(crate) fn ok(body: impl Serialize) -> Response {
    json(StatusCode::OK, body)
}

/// A guarded request whose identity the RBAC rules allow `verb` on `kind`: the caller and the
/// actor name Auth's audit events carry. A refusal by the rules is audited (`access.refused`,
/// route `web`, reason `access_denied`), rate limited per identity as admission's are.
pub(crate) fn editor_of(
    room: &WebRoom,
    req: &WebRequest,
    kind: &str,
    verb: &str,
) -> Result<(WebCaller, String), EditorError> {
    let c = room.guard(req, Renew::Yes)?;
    match hop_auth::grpc::authorize(&room.auth, &caller(&c), kind, verb) {
        Ok(actor) => Ok((c, actor)),
        Err(e) => {
            if let AuthError::Denied(reason) = &e {
                let refusal = hop_admission::Refusal::Denied {
                    name: kind.to_string(),
                    reason: reason.clone(),
                };
                let user = &c.session.cert.identity.username;
                room.auth
                    .audit_refusal(hop_admission::Route::Web, user, &refusal, Some(c.remote));
            }
            Err(e.into())
        }
    }
}

/// The session's identity as the admin API knows its callers.
pub(crate) fn caller(c: &WebCaller) -> Caller {
    Caller::User {
        identity: Box::new(c.session.cert.identity.clone()),
        remote: c.remote,
        expires: c.session.cert.expires,
        issued_at: c.session.cert.issued_at,
    }
}

/// Runs `f` on Auth off the async workers (Auth reads and writes the backend synchronously).
pub(crate) async fn blocking<T, F>(room: &WebRoom, f: F) -> Result<T, EditorError>
where
    T: Send + 'static,
    F: FnOnce(&AuthServer) -> Result<T, AuthError> + Send + 'static,
{
    let auth = room.auth.clone();
    tokio::task::spawn_blocking(move || f(&auth))
        .await
        .map_err(|e| EditorError::Auth(AuthError::Internal(format!("task failed: {e}"))))?
        .map_err(EditorError::Auth)
}

/// What the editor pages the caller may use: a page is shown when its list rule allows.
#[derive(Serialize)]
struct EditorView {
    users: bool,
    roles: bool,
    tokens: bool,
    locks: bool,
}

/// `GET /web/api/editor`: which editor pages this user may open (a hint for the nav; every
/// call is authorized again).
async fn editor(
    axum::extract::State(room): axum::extract::State<Arc<WebRoom>>,
    req: WebRequest,
) -> Result<Response, EditorError> {
    let c = room.guard(&req, Renew::No)?;
    let id = c.session.cert.identity.clone();
    let view = blocking(&room, move |a| {
        // The rule check itself, not `authorize`: a hint is not a refused call (no metric).
        let checker = a.checker_for(&id.roles, &id.traits)?;
        let may = |kind: &str| checker.check_rule(kind, "list").is_ok();
        Ok(EditorView {
            users: may("user"),
            roles: may("role"),
            tokens: may("token"),
            locks: may("lock"),
        })
    })
    .await?;
    Ok(ok(view))
}

/// A path segment that names a resource: what the stored names allow, nothing else (no `/`, no
/// control characters), at most 253 bytes.
pub(crate) fn plain_name(name: &str) -> Result<(), EditorError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| !c.is_control() && c != '/' && c != '\\');
    if ok {
        Ok(())
    } else {
        Err(EditorError::Auth(AuthError::BadRequest(format!(
            "{name:?} is not a resource name"
        ))))
    }
}
