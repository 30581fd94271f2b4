//! `/web/api/users`: the users page's calls, each the gRPC call behind `hop admin users`
//! (`create_user`, `lock_user`, `unlock_user`, `reset_user`, `delete_resource`) with the same
//! rule (`user` `list`, `create`, `update`, `delete`). Adding or resetting a user answers the
//! invitation link, once; a reset also ends the user's web sessions on this proxy (the password
//! and devices they logged in with are void).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::Response;
use hop_api::timestamps::rfc3339;
use hop_auth::server::Invite;
use serde::{Deserialize, Serialize};

use super::{EditorError, Form, blocking, editor_of, form, ok, plain_name};
use crate::web::WebRoom;
use crate::web::guard::WebRequest;

/// A user as the users page lists it.
#[derive(Serialize)]
struct UserView {
    name: String,
    roles: Vec<String>,
    logins: Vec<String>,
    locked: bool,
    locked_until: Option<String>,
    lock_reason: Option<String>,
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn user_view(d: &serde_json::Value) -> UserView {
    let text = |v: &serde_json::Value| v.as_str().map(str::to_string);
    UserView {
        name: d["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        roles: strings(&d["spec"]["roles"]),
        logins: strings(&d["spec"]["traits"]["logins"]),
        locked: d["status"]["locked"].as_bool().unwrap_or(false),
        locked_until: text(&d["status"]["locked_until"]),
        lock_reason: text(&d["status"]["lock_reason"]),
    }
}

/// `GET /web/api/users`.
pub(super) async fn list(
    State(room): State<Arc<WebRoom>>,
    req: WebRequest,
) -> Result<Response, EditorError> {
    editor_of(&room, &req, "user", "list")?;
    let docs = blocking(&room, |a| a.get_resources("user", None)).await?;
    let users: Vec<UserView> = docs.iter().map(user_view).collect();
    Ok(ok(serde_json::json!({ "users": users })))
}

/// What the add form sends.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewUser {
    name: String,
    roles: Vec<String>,
    #[serde(default)]
    logins: Vec<String>,
}

/// The invitation (or reset) link, shown once.
fn invite_view(room: &WebRoom, invite: &Invite) -> Response {
    ok(serde_json::json!({
        "user": invite.username,
        "url": room.auth.invite_url(&invite.token),
        "path": format!("/web/invite/{}", invite.token),
        "expires": rfc3339(invite.expires),
    }))
}

/// `POST /web/api/users`: a new user and the link to their sign-up.
pub(super) async fn add(
    State(room): State<Arc<WebRoom>>,
    req: WebRequest,
    body: Form<NewUser>,
) -> Result<Response, EditorError> {
    let (_, actor) = editor_of(&room, &req, "user", "create")?;
    let form = form(body)?;
    let invite = blocking(&room, move |a| {
        let mut traits = BTreeMap::new();
        let logins: Vec<String> = form
            .logins
            .into_iter()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
        if !logins.is_empty() {
            traits.insert("logins".to_string(), logins);
        }
        a.create_user(form.name.trim(), &form.roles, traits, &actor)
    })
    .await?;
    Ok(invite_view(&room, &invite))
}

/// `DELETE /web/api/users/{name}`.
pub(super) async fn remove(
    State(room): State<Arc<WebRoom>>,
    Path(name): Path<String>,
    req: WebRequest,
) -> Result<Response, EditorError> {
    plain_name(&name)?;
    let (_, actor) = editor_of(&room, &req, "user", "delete")?;
    blocking(&room, move |a| a.delete_resource("user", &name, &actor)).await?;
    Ok(ok(serde_json::json!({})))
}

/// What the lock form sends.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LockForm {
    #[serde(default)]
    reason: String,
    /// Until unlocked when absent or 0.
    #[serde(default)]
    ttl_seconds: u64,
}

/// `POST /web/api/users/{name}/lock`: as `hop admin users lock NAME --ttl --reason`.
pub(super) async fn lock(
    State(room): State<Arc<WebRoom>>,
    Path(name): Path<String>,
    req: WebRequest,
    body: Form<LockForm>,
) -> Result<Response, EditorError> {
    plain_name(&name)?;
    let (_, actor) = editor_of(&room, &req, "user", "update")?;
    let form = form(body)?;
    blocking(&room, move |a| {
        let until = (form.ttl_seconds > 0)
            .then(|| a.expiry_after(Duration::from_secs(form.ttl_seconds)))
            .transpose()?;
        a.lock_user(&name, until, &form.reason, &actor)
    })
    .await?;
    Ok(ok(serde_json::json!({})))
}

/// `POST /web/api/users/{name}/unlock`.
pub(super) async fn unlock(
    State(room): State<Arc<WebRoom>>,
    Path(name): Path<String>,
    req: WebRequest,
) -> Result<Response, EditorError> {
    plain_name(&name)?;
    let (_, actor) = editor_of(&room, &req, "user", "update")?;
    blocking(&room, move |a| a.unlock_user(&name, &actor)).await?;
    Ok(ok(serde_json::json!({})))
}

/// `POST /web/api/users/{name}/reset`: the password and devices are void, a new link is made,
/// and the user's web sessions here end.
pub(super) async fn reset(
    State(room): State<Arc<WebRoom>>,
    Path(name): Path<String>,
    req: WebRequest,
) -> Result<Response, EditorError> {
    plain_name(&name)?;
    let (_, actor) = editor_of(&room, &req, "user", "update")?;
    let user = name.clone();
    let invite = blocking(&room, move |a| a.reset_user(&user, &actor)).await?;
    room.sessions.end_user(&name);
    Ok(invite_view(&room, &invite))
}
