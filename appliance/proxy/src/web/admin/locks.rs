//! `/web/api/locks`: the locks page's calls, as `hop admin lock`, `hop admin locks ls` and
//! `hop admin rm lock/ID` (rules `lock` `list`, `create`, `delete`). A lock is made by Auth's
//! `create_lock` (which voids a locked user's certificates and audits `lock.created`).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::Response;
use hop_rbac::{LockResource, LockTarget};
use serde::{Deserialize, Serialize};

use super::{EditorError, Form, blocking, editor_of, form, ok, plain_name};
use crate::web::WebRoom;
use crate::web::guard::WebRequest;

/// A lock as listed.
#[derive(Serialize)]
struct LockView {
    id: String,
    target: String,
    message: String,
    expires: Option<String>,
    created_by: String,
}

/// `GET /web/api/locks`.
pub(super) async fn list(
    State(room): State<Arc<WebRoom>>,
    req: WebRequest,
) -> Result<Response, EditorError> {
    editor_of(&room, &req, "lock", "list")?;
    let docs = blocking(&room, |a| a.get_resources("lock", None)).await?;
    let locks: Vec<LockView> = docs
        .into_iter()
        .filter_map(|d| serde_json::from_value::<LockResource>(d).ok())
        .map(|l| LockView {
            target: l.spec.target.describe(),
            expires: l.expires().map(|e| hop_api::timestamps::rfc3339(e.into())),
            id: l.metadata.name,
            message: l.spec.message,
            created_by: l.spec.created_by,
        })
        .collect();
    Ok(ok(serde_json::json!({ "locks": locks })))
}

/// What the create form sends: exactly one target.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewLock {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    login: Option<String>,
    #[serde(default)]
    message: String,
    /// Until removed when absent or 0.
    #[serde(default)]
    ttl_seconds: u64,
}

fn given(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// `POST /web/api/locks`: the new lock's id.
pub(super) async fn create(
    State(room): State<Arc<WebRoom>>,
    req: WebRequest,
    body: Form<NewLock>,
) -> Result<Response, EditorError> {
    let (_, actor) = editor_of(&room, &req, "lock", "create")?;
    let form = form(body)?;
    let target = LockTarget {
        user: given(form.user),
        role: given(form.role),
        login: given(form.login),
        ..Default::default()
    };
    let ttl = (form.ttl_seconds > 0).then(|| Duration::from_secs(form.ttl_seconds));
    let lock = blocking(&room, move |a| {
        a.create_lock(target, &form.message, ttl, &actor)
    })
    .await?;
    Ok(ok(serde_json::json!({
        "id": lock.metadata.name,
        "target": lock.spec.target.describe(),
    })))
}

/// `DELETE /web/api/locks/{id}`.
pub(super) async fn remove(
    State(room): State<Arc<WebRoom>>,
    Path(id): Path<String>,
    req: WebRequest,
) -> Result<Response, EditorError> {
    plain_name(&id)?;
    let (_, actor) = editor_of(&room, &req, "lock", "delete")?;
    blocking(&room, move |a| a.delete_resource("lock", &id, &actor)).await?;
    Ok(ok(serde_json::json!({})))
}
