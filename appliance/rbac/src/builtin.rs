//! The preset roles every cluster starts with: `access`, `editor` and `auditor`.
//!
//! This module owns their definitions, modelled on Teleport's presets. They are ordinary roles
//! (operators may overwrite them); this module must never grant anything beyond what the role
//! documents say.

use crate::duration::Duration;
use crate::labels::labels;
use crate::role::{Role, Rule};

/// Session TTL cap of the presets.
pub const PRESET_MAX_SESSION_TTL: Duration = Duration::from_hours(8);

fn all() -> crate::labels::Labels {
    labels([("*", "*")])
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

/// The `where` clause of the access preset's `session` rule: the sessions a user took part in.
pub const OWN_SESSIONS: &str = "contains(session.participants, user.metadata.name)";

/// Access to every node, database, app, Kubernetes cluster and desktop, with the logins and
/// database/Kubernetes identities taken from the user's traits; the admin API only to list and
/// read the sessions (recordings, trackers) the user took part in, as Teleport's preset.
#[must_use]
pub fn access_role() -> Role {
    let mut r = Role::new("access");
    r.metadata.description = "Access cluster resources".into();
    let o = &mut r.spec.options;
    o.max_session_ttl = Some(PRESET_MAX_SESSION_TTL);
    o.forward_agent = Some(true);
    o.port_forwarding = Some(true);
    let a = &mut r.spec.allow;
    a.logins = strings(&["{{internal.logins}}"]);
    a.node_labels = all();
    a.db_labels = all();
    a.db_names = strings(&["{{internal.db_names}}"]);
    a.db_users = strings(&["{{internal.db_users}}"]);
    a.app_labels = all();
    a.kubernetes_labels = all();
    a.kubernetes_groups = strings(&["{{internal.kubernetes_groups}}"]);
    a.kubernetes_users = strings(&["{{internal.kubernetes_users}}"]);
    a.windows_desktop_labels = all();
    a.windows_desktop_logins = strings(&["{{internal.windows_logins}}"]);
    a.rules = vec![Rule {
        where_: Some(OWN_SESSIONS.into()),
        ..Rule::new(&["session"], &["list", "read"])
    }];
    r
}

/// Full admin API access: every verb on every resource kind.
#[must_use]
pub fn editor_role() -> Role {
    let mut r = Role::new("editor");
    r.metadata.description = "Edit cluster configuration".into();
    r.spec.options.max_session_ttl = Some(PRESET_MAX_SESSION_TTL);
    r.spec.allow.rules = vec![Rule::new(&["*"], &["*"])];
    r
}

/// Read-only access to the audit log and every session recording and tracker.
#[must_use]
pub fn auditor_role() -> Role {
    let mut r = Role::new("auditor");
    r.metadata.description = "Review cluster events and replay sessions".into();
    r.spec.options.max_session_ttl = Some(PRESET_MAX_SESSION_TTL);
    r.spec.allow.rules = vec![Rule::new(&["event", "session"], &["list", "read"])];
    r
}

/// `access`, `editor`, `auditor`.
#[must_use]
pub fn builtin_roles() -> Vec<Role> {
    vec![access_role(), editor_role(), auditor_role()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate() {
        for r in builtin_roles() {
            r.validate().unwrap();
        }
    }
}
