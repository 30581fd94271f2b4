//! `/web/api/tokens`: the join tokens page's calls, as `hop admin tokens add|ls` and
//! `hop admin rm token/ID` (rules `token` `list`, `create`, `delete`). A new token's secret is
//! in the creation's answer only: Auth keeps its hash, and listings never carry it.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::Response;
use hop_api::timestamps::rfc3339;
use serde::{Deserialize, Serialize};

use super::{EditorError, Form, blocking, editor_of, form, ok, plain_name};
use crate::web::WebRoom;
use crate::web::guard::WebRequest;

/// A token as listed: no secret, no hash.
#[derive(Serialize)]
struct TokenView {
    id: String,
    roles: Vec<String>,
    expires: Option<String>,
    uses_left: Option<u64>,
}

/// `GET /web/api/tokens`.
pub(super) async fn list(
    State(room): State<Arc<WebRoom>>,
    req: WebRequest,
) -> Result<Response, EditorError> {
    editor_of(&room, &req, "token", "list")?;
    let docs = blocking(&room, |a| a.get_resources("token", None)).await?;
    let tokens: Vec<TokenView> = docs
        .iter()
        .map(|d| TokenView {
            id: d["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            roles: d["spec"]["roles"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|r| r.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            expires: d["metadata"]["expires"].as_str().map(str::to_string),
            uses_left: d["spec"]["uses"].as_u64(),
        })
        .collect();
    Ok(ok(serde_json::json!({ "tokens": tokens })))
}

/// What the create form sends.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewToken {
    roles: Vec<String>,
    /// 30 minutes when absent or 0, as `hop admin tokens add`.
    #[serde(default)]
    ttl_seconds: u64,
    #[serde(default)]
    uses: Option<u32>,
}

/// `POST /web/api/tokens`: the new token, its secret shown this once.
pub(super) async fn create(
    State(room): State<Arc<WebRoom>>,
    req: WebRequest,
    body: Form<NewToken>,
) -> Result<Response, EditorError> {
    let (_, actor) = editor_of(&room, &req, "token", "create")?;
    let form = form(body)?;
    let made = blocking(&room, move |a| {
        let ttl = Duration::from_secs(if form.ttl_seconds == 0 {
            30 * 60
        } else {
            form.ttl_seconds
        });
        a.create_join_token(&form.roles, ttl, None, form.uses.filter(|u| *u > 0), &actor)
    })
    .await?;
    Ok(ok(serde_json::json!({
        "id": made.id,
        "secret": made.secret,
        "roles": made.roles,
        "expires": rfc3339(made.expires),
    })))
}

/// `DELETE /web/api/tokens/{id}`.
pub(super) async fn remove(
    State(room): State<Arc<WebRoom>>,
    Path(id): Path<String>,
    req: WebRequest,
) -> Result<Response, EditorError> {
    plain_name(&id)?;
    let (_, actor) = editor_of(&room, &req, "token", "delete")?;
    blocking(&room, move |a| a.delete_resource("token", &id, &actor)).await?;
    Ok(ok(serde_json::json!({})))
}
