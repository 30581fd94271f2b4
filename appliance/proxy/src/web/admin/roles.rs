//! `/web/api/roles`: the roles page's calls. A role is read and written as the YAML
//! `hop admin get role` prints and `hop admin create` reads: a save parses and validates the
//! text with that parser first and, when it is wrong, answers the error with its line and field
//! path (HTTP 422) and writes nothing; a valid one goes through Auth's `create_resources` with
//! the gRPC API's rules (`role` `create`, and `update` to replace), which audits it. Only a
//! single role document is accepted here, named as the address says when it replaces one.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;
use hop_rbac::Resource;
use hop_rbac::parse::{ParseError, ParseProblem};
use serde::Deserialize;

use super::{EditorError, Form, blocking, caller, editor_of, form, ok, plain_name};
use crate::web::WebRoom;
use crate::web::guard::WebRequest;

/// The most bytes of YAML a role may have here.
const MAX_ROLE_YAML: usize = 32 * 1024;

/// `GET /web/api/roles`: the roles' names.
pub(super) async fn list(
    State(room): State<Arc<WebRoom>>,
    req: WebRequest,
) -> Result<Response, EditorError> {
    editor_of(&room, &req, "role", "list")?;
    let docs = blocking(&room, |a| a.get_resources("role", None)).await?;
    let names: Vec<&str> = docs
        .iter()
        .filter_map(|d| d["metadata"]["name"].as_str())
        .collect();
    Ok(ok(serde_json::json!({ "roles": names })))
}

/// `GET /web/api/roles/{name}`: the role as YAML.
pub(super) async fn read(
    State(room): State<Arc<WebRoom>>,
    Path(name): Path<String>,
    req: WebRequest,
) -> Result<Response, EditorError> {
    plain_name(&name)?;
    editor_of(&room, &req, "role", "read")?;
    let n = name.clone();
    let docs = blocking(&room, move |a| a.get_resources("role", Some(&n))).await?;
    let role = docs
        .into_iter()
        .next()
        .and_then(|d| serde_json::from_value::<hop_rbac::Role>(d).ok())
        .ok_or_else(|| {
            EditorError::Auth(hop_auth::AuthError::Internal(format!(
                "role {name:?} could not be read back"
            )))
        })?;
    Ok(ok(serde_json::json!({
        "name": name,
        "yaml": hop_rbac::to_yaml(&Resource::Role(role)),
    })))
}

/// What the editor sends.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RoleText {
    yaml: String,
}

/// The parser's error as the page shows it: the message, the line and the field path.
fn invalid(e: &ParseError) -> EditorError {
    let field = match &e.problem {
        ParseProblem::Schema { path, .. } if !path.is_root() => Some(path.to_string()),
        ParseProblem::Invalid { error, .. } => Some(error.field().to_string()),
        _ => None,
    };
    EditorError::Invalid {
        message: e.to_string(),
        line: e.line,
        field,
    }
}

fn not_a_role(message: String) -> EditorError {
    EditorError::Invalid {
        message,
        line: None,
        field: None,
    }
}

/// Parses `yaml` as exactly one role (named `want`, when replacing one); its name.
fn one_role(yaml: &str, want: Option<&str>) -> Result<String, EditorError> {
    if yaml.len() > MAX_ROLE_YAML {
        return Err(not_a_role(format!(
            "a role is at most {MAX_ROLE_YAML} bytes here"
        )));
    }
    let parsed = hop_rbac::parse_resources(yaml, "role").map_err(|e| invalid(&e))?;
    let [Resource::Role(role)] = parsed.as_slice() else {
        return Err(not_a_role(
            "expected exactly one document of kind: role".into(),
        ));
    };
    let name = role.metadata.name.clone();
    if let Some(want) = want.filter(|w| *w != name) {
        return Err(EditorError::Invalid {
            message: format!("metadata.name: this page edits role {want:?}, not {name:?}"),
            line: None,
            field: Some("metadata.name".into()),
        });
    }
    Ok(name)
}

/// Writes a validated role through Auth (rules and audit as `hop admin create [--force]`).
async fn save(
    room: Arc<WebRoom>,
    req: WebRequest,
    body: Form<RoleText>,
    replace: Option<String>,
) -> Result<Response, EditorError> {
    let (c, _) = editor_of(
        &room,
        &req,
        "role",
        if replace.is_some() {
            "update"
        } else {
            "create"
        },
    )?;
    let yaml = form(body)?.yaml;
    let name = one_role(&yaml, replace.as_deref())?;
    let who = caller(&c);
    let force = replace.is_some();
    let created = blocking(&room, move |a| {
        a.create_resources(&yaml, "web editor", force, &who.actor(), &|kind, verb| {
            hop_auth::grpc::authorize(a, &who, kind, verb).map(drop)
        })
    })
    .await?;
    Ok(ok(serde_json::json!({
        "name": name,
        "written": created.written,
        "warnings": created.warnings,
    })))
}

/// `POST /web/api/roles`: a new role (refused when one of its name exists).
pub(super) async fn create(
    State(room): State<Arc<WebRoom>>,
    req: WebRequest,
    body: Form<RoleText>,
) -> Result<Response, EditorError> {
    save(room, req, body, None).await
}

/// `PUT /web/api/roles/{name}`: replaces role `name`.
pub(super) async fn update(
    State(room): State<Arc<WebRoom>>,
    Path(name): Path<String>,
    req: WebRequest,
    body: Form<RoleText>,
) -> Result<Response, EditorError> {
    plain_name(&name)?;
    save(room, req, body, Some(name)).await
}

/// `DELETE /web/api/roles/{name}`.
pub(super) async fn remove(
    State(room): State<Arc<WebRoom>>,
    Path(name): Path<String>,
    req: WebRequest,
) -> Result<Response, EditorError> {
    plain_name(&name)?;
    let (_, actor) = editor_of(&room, &req, "role", "delete")?;
    blocking(&room, move |a| a.delete_resource("role", &name, &actor)).await?;
    Ok(ok(serde_json::json!({})))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROLE: &str =
        "kind: role\nversion: v7\nmetadata:\n  name: dev\nspec:\n  allow:\n    logins: [dev]\n";

    fn invalid_of(r: Result<String, EditorError>) -> (String, Option<u64>, Option<String>) {
        match r {
            Err(EditorError::Invalid {
                message,
                line,
                field,
            }) => (message, line, field),
            Ok(n) => panic!("accepted {n}"),
            Err(_) => panic!("not an inline error"),
        }
    }

    #[test]
    fn a_valid_role_is_named() {
        assert_eq!(one_role(ROLE, None).ok().as_deref(), Some("dev"));
        assert_eq!(one_role(ROLE, Some("dev")).ok().as_deref(), Some("dev"));
    }

    #[test]
    fn a_bad_field_is_named_with_its_line() {
        let bad = ROLE.replace("    logins: [dev]", "    node_labels:\n      env: '^(dev$'");
        let (message, line, field) = invalid_of(one_role(&bad, None));
        assert_eq!(line, Some(8), "{message}");
        assert!(field.unwrap().contains("node_labels"), "{message}");
        let unknown = ROLE.replace("    logins", "    logns");
        let (message, line, _) = invalid_of(one_role(&unknown, None));
        assert!(message.contains("logns"), "{message}");
        assert_eq!(line, Some(7), "{message}");
    }

    #[test]
    fn only_one_role_of_the_right_name() {
        let (message, _, field) = invalid_of(one_role(ROLE, Some("ops")));
        assert!(message.contains("ops"), "{message}");
        assert_eq!(field.as_deref(), Some("metadata.name"));
        let two = format!("{ROLE}---\n{}", ROLE.replace("dev", "ops"));
        invalid_of(one_role(&two, None));
        let lock =
            "kind: lock\nversion: v2\nmetadata:\n  name: x\nspec:\n  target:\n    user: bob\n";
        invalid_of(one_role(lock, None));
        invalid_of(one_role("kind: [", None));
        invalid_of(one_role(&"#".repeat(MAX_ROLE_YAML + 1), None));
    }
}
