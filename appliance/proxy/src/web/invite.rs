//! `/web/api/invite`: the page behind an invitation link (`/web/invite/TOKEN`, printed by
//! `hop admin users add|reset` and answered by the users page). Anyone holding the link may
//! see whose it is and complete it: choose a password and enroll a one-time-code device. Auth
//! owns the token (random, stored as its SHA-256 only, single use, expiring with
//! `invite_ttl`, rate limited per address, `user.signup` audited) and completes it with the
//! same `complete_signup` that `hop signup` calls; this module only carries the forms, after
//! checking the request comes from this origin (no session exists yet, so no CSRF token).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use hop_admission::{Refusal, Route};
use hop_api::timestamps::rfc3339;
use serde::Deserialize;

use super::WebRoom;
use super::admin::{EditorError, Form, blocking, form, ok};
use super::guard::{WebRefusal, WebRequest, cross_origin};

/// The invitation routes, merged into the web API router.
pub(crate) fn routes() -> Router<Arc<WebRoom>> {
    Router::new()
        .route("/web/api/invite/check", post(check))
        .route("/web/api/invite/complete", post(complete))
}

/// Refuses a request from another origin (audited, as a refused login is).
fn same_origin(room: &WebRoom, req: &WebRequest) -> Result<(), EditorError> {
    match cross_origin(&req.headers, req.authority.as_deref()) {
        None => Ok(()),
        Some(reason) => {
            let refusal = Refusal::CrossSite { reason };
            room.auth
                .audit_unverified_refusal(Route::Web, &refusal, Some(req.remote));
            Err(EditorError::Guard(WebRefusal {
                status: StatusCode::FORBIDDEN,
                code: refusal.code(),
                message: refusal.to_string(),
            }))
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenForm {
    token: String,
}

/// `POST /web/api/invite/check`: whose invitation this is, until when, and a fresh secret to
/// enroll (the token is not used up).
async fn check(
    State(room): State<Arc<WebRoom>>,
    req: WebRequest,
    body: Form<TokenForm>,
) -> Result<Response, EditorError> {
    same_origin(&room, &req)?;
    let form = form(body)?;
    let remote = req.remote;
    let pending = blocking(&room, move |a| a.pending_invite(&form.token, Some(remote))).await?;
    let enrollment = super::qr::enrollment(&pending.user, room.auth.cluster_name());
    Ok(ok(serde_json::json!({
        "user": pending.user,
        "reset": pending.reset,
        "expires": rfc3339(pending.expires),
        "second_factor_required": room.auth.second_factor() != "off",
        "enrollment": enrollment,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompleteForm {
    token: String,
    password: String,
    secret: String,
    otp: String,
}

/// `POST /web/api/invite/complete`: the password and device are set; the user logs in next.
async fn complete(
    State(room): State<Arc<WebRoom>>,
    req: WebRequest,
    body: Form<CompleteForm>,
) -> Result<Response, EditorError> {
    same_origin(&room, &req)?;
    let form = form(body)?;
    let remote = req.remote;
    let user = blocking(&room, move |a| {
        a.complete_signup(
            &form.token,
            &form.password,
            form.secret.trim(),
            form.otp.trim(),
            Some(remote),
        )
    })
    .await?;
    Ok(ok(serde_json::json!({ "user": user })))
}
