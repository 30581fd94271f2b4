//! `GET /web/api/sessions`: the live SSH sessions this user may see, from the session trackers
//! (never from the audit log), each with the ways this user may join it.
//!
//! Who sees which tracker is Auth's decision, the same as `hop sessions ls`
//! ([`hop_auth::AuthServer::trackers_for`]: the `session` `list` rule, else the sessions the user
//! owns or takes part in); how a user may join is the role checker's `join_sessions` decision,
//! as `hop join` asks it (the owner may always join their own session). This module only shapes
//! the answer.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hop_auth::trackers::{SessionKind, SessionTracker, TrackerState};
use hop_rbac::AccessChecker;
use serde::Serialize;

use super::WebRoom;
use super::guard::{Renew, WebRefusal, WebRequest};

/// The active sessions' routes.
pub(crate) fn routes() -> Router<Arc<WebRoom>> {
    Router::new().route("/web/api/sessions", get(sessions))
}

/// One live session as the page shows it.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct SessionView {
    pub session_id: String,
    pub user: String,
    pub login: String,
    pub server: String,
    pub participants: Vec<String>,
    pub created: String,
    /// The modes this user may join it in (`observer`, `peer`): empty when none.
    pub join_modes: Vec<String>,
}

async fn sessions(
    State(room): State<Arc<WebRoom>>,
    req: WebRequest,
) -> Result<Response, WebRefusal> {
    let c = room.guard(&req, Renew::No)?;
    let auth = room.auth.clone();
    let identity = c.session.cert.identity.clone();
    let listed = tokio::task::spawn_blocking(move || {
        let trackers = auth.trackers_for(&identity)?;
        let owners = owner_roles(&auth, &trackers);
        Ok::<_, hop_auth::AuthError>((trackers, owners))
    })
    .await;
    let (trackers, owners) = match listed {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "the live sessions cannot be listed");
            return Ok(unavailable(
                "the live sessions cannot be read now (the proxy's log says why)",
            ));
        }
        Err(e) => {
            tracing::warn!(error = %e, "the live sessions' listing failed");
            return Ok(unavailable("the live sessions cannot be read now"));
        }
    };
    let me = c.session.cert.identity.username.as_str();
    let rows = views(c.admitted.checker(), me, trackers, &owners);
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(serde_json::json!({ "sessions": rows })),
    )
        .into_response())
}

fn unavailable(message: &str) -> Response {
    (
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        [(header::CACHE_CONTROL, "no-store")],
        Json(serde_json::json!({ "error": message, "code": "unavailable" })),
    )
        .into_response()
}

/// The roles of each session's owner (a deleted owner has none: nobody else may join).
fn owner_roles(
    auth: &hop_auth::AuthServer,
    trackers: &[SessionTracker],
) -> HashMap<String, Vec<String>> {
    let mut roles = HashMap::new();
    for t in trackers {
        if !roles.contains_key(&t.user) {
            roles.insert(t.user.clone(), auth.user_roles(&t.user).unwrap_or_default());
        }
    }
    roles
}

/// The live SSH sessions among `trackers`, newest first, with the modes `me` may join each in.
pub fn views(
    checker: &AccessChecker,
    me: &str,
    trackers: Vec<SessionTracker>,
    owners: &HashMap<String, Vec<String>>,
) -> Vec<SessionView> {
    let mut rows: Vec<SessionView> = trackers
        .into_iter()
        .filter(|t| t.kind == SessionKind::Ssh && t.state == TrackerState::Active)
        .map(|t| {
            let join_modes = hop_rbac::role::JOIN_MODES
                .iter()
                .filter(|mode| {
                    // One's own session: watched or typed into, never moderated.
                    if t.user == me {
                        return **mode != "moderator";
                    }
                    owners.get(&t.user).is_some_and(|roles| {
                        !roles.is_empty() && checker.check_join_session(roles, "ssh", mode).is_ok()
                    })
                })
                .map(|m| (*m).to_string())
                .collect();
            SessionView {
                session_id: t.session_id,
                user: t.user,
                login: t.login,
                server: t.server,
                participants: t.participants,
                created: t.created,
                join_modes,
            }
        })
        .collect();
    rows.sort_by(|a, b| b.created.cmp(&a.created));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use hop_auth::trackers::SessionTracker;
    use hop_rbac::role::{JoinSessionPolicy, Role};

    fn tracker(id: &str, user: &str, kind: SessionKind, state: TrackerState) -> SessionTracker {
        SessionTracker {
            session_id: id.into(),
            kind,
            route: "node".into(),
            user: user.into(),
            participants: vec![user.into()],
            host_id: "h".into(),
            server: "node1".into(),
            target: String::new(),
            login: "hopuser".into(),
            state,
            created: format!("2026-01-01T00:00:0{}Z", id.len()),
            last_seen: String::new(),
        }
    }

    fn watcher() -> AccessChecker {
        let mut role = Role::new("watcher");
        role.spec.allow.join_sessions = vec![JoinSessionPolicy {
            name: "watch-access".into(),
            roles: vec!["access".into()],
            kinds: vec!["ssh".into()],
            modes: vec!["observer".into()],
        }];
        AccessChecker::new(&[role], &Default::default()).unwrap()
    }

    #[test]
    fn live_ssh_sessions_are_listed_with_the_modes_the_roles_allow() {
        let trackers = vec![
            tracker("a", "alice", SessionKind::Ssh, TrackerState::Active),
            tracker("bb", "bob", SessionKind::Ssh, TrackerState::Active),
            tracker(
                "ccc",
                "watcher-user",
                SessionKind::Ssh,
                TrackerState::Active,
            ),
            tracker("dddd", "alice", SessionKind::Ssh, TrackerState::Terminated),
            tracker("eeeee", "alice", SessionKind::Db, TrackerState::Active),
            tracker("ffffff", "gone", SessionKind::Ssh, TrackerState::Active),
        ];
        let owners = HashMap::from([
            ("alice".to_string(), vec!["access".to_string()]),
            ("bob".to_string(), vec!["editor".to_string()]),
            ("watcher-user".to_string(), vec!["watcher".to_string()]),
            ("gone".to_string(), Vec::new()),
        ]);
        let rows = views(&watcher(), "watcher-user", trackers, &owners);
        let got: Vec<(&str, Vec<String>)> = rows
            .iter()
            .map(|r| (r.session_id.as_str(), r.join_modes.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                // Newest first; a deleted owner's session may not be joined by others.
                ("ffffff", vec![]),
                // The user's own session: every mode.
                ("ccc", vec!["observer".to_string(), "peer".to_string()]),
                // Another role's owner: not allowed.
                ("bb", vec![]),
                // An `access` owner: observer, as the role says.
                ("a", vec!["observer".to_string()]),
            ]
        );
    }
}
