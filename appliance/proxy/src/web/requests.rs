//! `/web/api/requests`: the access requests page, as `hop request ls|create|review`. A user sees
//! the requests they made and those they may review; makes one (roles and a reason); reviews
//! another's (approve or deny, with a reason). Auth decides every step (who may request which
//! role, who may review it, that nobody reviews their own, thresholds) and audits it as it does
//! for the CLI (`access_request.create`, `.review`, `.update`); this module only carries the
//! session's identity there. Using an approved request (new certificates with its roles) stays
//! with `hop login --request-id`.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use hop_api::timestamps::rfc3339;
use hop_auth::access_requests::AccessRequest;
use hop_auth::server::{NewAccessRequest, ReviewAsk};
use serde::{Deserialize, Serialize};

use super::WebRoom;
use super::admin::{EditorError, Form, blocking, form, ok};
use super::guard::{Renew, WebRequest};

/// The access request routes, merged into the web API router.
pub(crate) fn routes() -> Router<Arc<WebRoom>> {
    Router::new()
        .route("/web/api/requests", get(list).post(create))
        .route("/web/api/requests/{id}/review", post(review))
}

#[derive(Serialize)]
struct ReviewView {
    author: String,
    approve: bool,
    reason: String,
    created: String,
}

/// A request as the page shows it; `mine` is whether the caller made it.
#[derive(Serialize)]
struct RequestView {
    id: String,
    user: String,
    roles: Vec<String>,
    reason: String,
    /// `pending`, `approved`, `denied` (lower case, as the page compares it).
    state: String,
    created: String,
    expires: String,
    suggested_reviewers: Vec<String>,
    reviews: Vec<ReviewView>,
    mine: bool,
}

fn at(unix: u64) -> String {
    rfc3339(UNIX_EPOCH + Duration::from_secs(unix))
}

fn view(r: AccessRequest, caller: &str) -> RequestView {
    RequestView {
        mine: r.user == caller,
        state: r.state.name().to_ascii_lowercase(),
        created: at(r.created_unix),
        expires: at(r.expires_unix),
        reviews: r
            .reviews
            .into_iter()
            .map(|v| ReviewView {
                created: at(v.created_unix),
                author: v.author,
                approve: v.approve,
                reason: v.reason,
            })
            .collect(),
        id: r.id,
        user: r.user,
        roles: r.roles,
        reason: r.reason,
        suggested_reviewers: r.suggested_reviewers,
    }
}

/// `GET /web/api/requests`: the caller's requests and those they may review, newest first.
async fn list(State(room): State<Arc<WebRoom>>, req: WebRequest) -> Result<Response, EditorError> {
    let c = room.guard(&req, Renew::Yes)?;
    let cert = c.session.cert.clone();
    let user = cert.identity.username.clone();
    let list = blocking(&room, move |a| {
        a.list_access_requests(&cert.presented(None))
    })
    .await?;
    let requests: Vec<RequestView> = list.into_iter().map(|r| view(r, &user)).collect();
    Ok(ok(
        serde_json::json!({ "user": user, "requests": requests }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRequest {
    roles: Vec<String>,
    #[serde(default)]
    reason: String,
}

/// `POST /web/api/requests`: a pending request for the caller.
async fn create(
    State(room): State<Arc<WebRoom>>,
    req: WebRequest,
    body: Form<NewRequest>,
) -> Result<Response, EditorError> {
    let c = room.guard(&req, Renew::Yes)?;
    let form = form(body)?;
    let cert = c.session.cert.clone();
    let user = cert.identity.username.clone();
    let roles: Vec<String> = form
        .roles
        .iter()
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
        .collect();
    let made = blocking(&room, move |a| {
        a.create_access_request(
            &cert.presented(None),
            &NewAccessRequest {
                roles: &roles,
                reason: &form.reason,
                max_duration: None,
            },
        )
    })
    .await?;
    Ok(ok(view(made, &user)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReviewForm {
    approve: bool,
    #[serde(default)]
    reason: String,
}

/// `POST /web/api/requests/{id}/review`: the caller's approval or denial.
async fn review(
    State(room): State<Arc<WebRoom>>,
    Path(id): Path<String>,
    req: WebRequest,
    body: Form<ReviewForm>,
) -> Result<Response, EditorError> {
    let c = room.guard(&req, Renew::Yes)?;
    let form = form(body)?;
    let cert = c.session.cert.clone();
    let user = cert.identity.username.clone();
    let reviewed = blocking(&room, move |a| {
        a.review_access_request(
            &cert.presented(None),
            &ReviewAsk {
                id: &id,
                approve: form.approve,
                reason: &form.reason,
            },
        )
    })
    .await?;
    Ok(ok(view(reviewed, &user)))
}
