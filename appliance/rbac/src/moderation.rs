//! Moderated sessions: a role's `require_session_join` (Teleport's shape), which makes the
//! holder's interactive SSH sessions and Kubernetes exec/attach sessions wait until the required
//! participants have joined, and pause or end when they leave.
//!
//! This module owns the requirement's parsing and its rules (kinds `ssh` and `k8s` only: a
//! requirement Hop cannot enforce is refused when the role is written, never ignored), which
//! requirements apply to a kind of session ([`for_kind`]), and the decision
//! whether the people in a session meet a set of requirements. A participant counts for a
//! requirement when their join mode is one it names and its `filter` holds for them (a filter
//! may name only `user.metadata.name` and `user.spec.roles`: a participant's traits are not
//! known at the node, and such a filter is refused when the role is written; one that cannot be
//! decided counts nobody). Each user counts once. Every requirement of every role must be met.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::compat::Verbatim;
use crate::role::ROLE_JOIN_MODES;
use crate::rule_context::{RuleContext, UserFacts, evaluate};

/// Why a `require_session_join` entry is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequirementError {
    /// A requirement Hop would not enforce (a kind of session other than SSH and Kubernetes).
    #[error("{0}")]
    Unenforceable(String),
    /// A malformed entry.
    #[error("{0}")]
    Invalid(String),
}

/// One `require_session_join` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionJoinRequirement {
    /// A name for the requirement (shown while a session waits).
    pub name: String,
    /// A predicate over the participant (`contains(user.spec.roles, "auditor")`).
    pub filter: String,
    /// Session kinds: `ssh` and `k8s` (Kubernetes exec and attach).
    pub kinds: Vec<String>,
    /// How many participants must meet it.
    pub count: u32,
    /// The join modes that count (`moderator`, `peer`, `observer`).
    pub modes: Vec<String>,
    /// `terminate` (the default) or `pause` when the session no longer meets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_leave: Option<String>,
}

/// What a session does when a requirement is no longer met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnLeave {
    Terminate,
    Pause,
}

impl SessionJoinRequirement {
    /// What happens when it is no longer met.
    #[must_use]
    pub fn on_leave(&self) -> OnLeave {
        match self.on_leave.as_deref() {
            Some("pause") => OnLeave::Pause,
            _ => OnLeave::Terminate,
        }
    }

    /// How many distinct users among `participants` count for it.
    fn present(&self, participants: &[Participant<'_>]) -> usize {
        let users: std::collections::BTreeSet<&str> = participants
            .iter()
            .filter(|p| self.counts(p))
            .map(|p| p.user)
            .collect();
        users.len()
    }

    fn counts(&self, p: &Participant<'_>) -> bool {
        if !self.modes.iter().any(|m| m == p.mode) {
            return false;
        }
        let Ok(predicate) = crate::predicate::parse(&self.filter) else {
            return false;
        };
        let traits = BTreeMap::new();
        let ctx = RuleContext {
            user: Some(UserFacts {
                name: p.user,
                roles: p.roles,
                traits: &traits,
            }),
            ..RuleContext::default()
        };
        evaluate(&predicate, &ctx).unwrap_or(false)
    }
}

/// Someone in a session other than its owner (a user counts once, however many connections or
/// modes they joined with).
#[derive(Debug, Clone, Copy)]
pub struct Participant<'a> {
    pub user: &'a str,
    pub roles: &'a [String],
    /// `moderator`, `peer` or `observer`.
    pub mode: &'a str,
}

/// The requirements a role's `require_session_join` holds.
///
/// # Errors
/// The entry's shape is wrong, or a rule of [`check`] is broken; the words say which.
pub fn parse(v: &Verbatim) -> Result<Vec<SessionJoinRequirement>, RequirementError> {
    if !v.is_set() {
        return Ok(Vec::new());
    }
    let reqs: Vec<SessionJoinRequirement> = serde_json::from_value(v.0.clone())
        .map_err(|e| RequirementError::Invalid(e.to_string()))?;
    check(&reqs)?;
    Ok(reqs)
}

/// The session kinds Hop moderates: SSH shells and Kubernetes exec/attach sessions.
pub const MODERATED_KINDS: &[&str] = &["ssh", "k8s"];

/// The requirements of `reqs` that apply to sessions of `kind` (`ssh` or `k8s`).
#[must_use]
pub fn for_kind(reqs: &[SessionJoinRequirement], kind: &str) -> Vec<SessionJoinRequirement> {
    reqs.iter()
        .filter(|r| r.kinds.iter().any(|k| k == kind))
        .cloned()
        .collect()
}

/// The rules a requirement keeps: a name, `ssh` and `k8s` sessions only, a count of at least one, modes
/// Hop knows, `on_leave` `terminate` or `pause`, and a filter that parses.
///
/// # Errors
/// The first rule broken, in words.
pub fn check(reqs: &[SessionJoinRequirement]) -> Result<(), RequirementError> {
    for r in reqs {
        let name = &r.name;
        if let Some(k) = r
            .kinds
            .iter()
            .find(|k| !MODERATED_KINDS.contains(&k.as_str()))
        {
            return Err(RequirementError::Unenforceable(format!(
                "{name:?}: Hop moderates SSH and Kubernetes exec sessions only (kinds: ssh, k8s), not {k:?}; a requirement on other kinds would be ignored"
            )));
        }
        check_shape(r).map_err(RequirementError::Invalid)?;
    }
    Ok(())
}

fn check_shape(r: &SessionJoinRequirement) -> Result<(), String> {
    let name = &r.name;
    {
        if name.trim().is_empty() {
            return Err("every requirement needs a name".into());
        }
        if r.kinds.is_empty() {
            return Err(format!("{name:?}: kinds must name ssh or k8s"));
        }
        if r.count == 0 {
            return Err(format!("{name:?}: count must be at least 1"));
        }
        if r.modes.is_empty()
            || r.modes
                .iter()
                .any(|m| !ROLE_JOIN_MODES.contains(&m.as_str()))
        {
            return Err(format!(
                "{name:?}: modes must be among moderator, peer and observer"
            ));
        }
        if !matches!(r.on_leave.as_deref(), None | Some("terminate" | "pause")) {
            return Err(format!("{name:?}: on_leave must be terminate or pause"));
        }
        crate::predicate::parse(&r.filter).map_err(|e| format!("{name:?}: filter: {e}"))?;
        if ["traits", "internal", "external", "session."]
            .iter()
            .any(|f| r.filter.contains(f))
        {
            return Err(format!(
                "{name:?}: filter: only user.metadata.name and user.spec.roles are known of a participant"
            ));
        }
    }
    Ok(())
}

/// The first requirement `participants` do not meet, described for the waiting owner (`None`:
/// all are met).
#[must_use]
pub fn unmet(reqs: &[SessionJoinRequirement], participants: &[Participant<'_>]) -> Option<String> {
    reqs.iter().find_map(|r| {
        let have = r.present(participants);
        let need = usize::try_from(r.count).unwrap_or(usize::MAX);
        (have < need).then(|| {
            format!(
                "{need} participant(s) of requirement {:?} as {} ({have} present)",
                r.name,
                r.modes.join(" or ")
            )
        })
    })
}

/// What a session does now that `reqs` are no longer met: pause only if every unmet one says so.
#[must_use]
pub fn on_leave(reqs: &[SessionJoinRequirement], participants: &[Participant<'_>]) -> OnLeave {
    let unmet_terminates = reqs.iter().any(|r| {
        r.present(participants) < usize::try_from(r.count).unwrap_or(usize::MAX)
            && r.on_leave() == OnLeave::Terminate
    });
    if unmet_terminates {
        OnLeave::Terminate
    } else {
        OnLeave::Pause
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(filter: &str, count: u32, on_leave: Option<&str>) -> SessionJoinRequirement {
        SessionJoinRequirement {
            name: "auditors".into(),
            filter: filter.into(),
            kinds: vec!["ssh".into()],
            count,
            modes: vec!["moderator".into()],
            on_leave: on_leave.map(Into::into),
        }
    }

    #[test]
    fn moderators_matching_the_filter_count_and_nobody_else() {
        let reqs = [req(r#"contains(user.spec.roles, "auditor")"#, 2, None)];
        let auditor = ["auditor".to_string()];
        let other = ["access".to_string()];
        let m = |user, roles, mode| Participant { user, roles, mode };
        assert!(unmet(&reqs, &[]).unwrap().contains("(0 present)"));
        let one = [m("a", &auditor[..], "moderator")];
        assert!(unmet(&reqs, &one).unwrap().contains("(1 present)"));
        let wrong = [
            m("a", &auditor[..], "moderator"),
            m("b", &auditor[..], "observer"),
            m("c", &other[..], "moderator"),
        ];
        assert!(
            unmet(&reqs, &wrong).is_some(),
            "an observer and a non-auditor do not count"
        );
        let two = [
            m("a", &auditor[..], "moderator"),
            m("d", &auditor[..], "moderator"),
        ];
        assert!(unmet(&reqs, &two).is_none());
    }

    #[test]
    fn an_undecidable_filter_counts_nobody() {
        let reqs = [req(r#"equals(session.login, "root")"#, 1, None)];
        let roles = vec!["auditor".to_string()];
        let p = [Participant {
            user: "a",
            roles: &roles,
            mode: "moderator",
        }];
        assert!(unmet(&reqs, &p).is_some());
    }

    #[test]
    fn pause_only_when_every_unmet_requirement_pauses() {
        let pause = req("true", 1, Some("pause"));
        let stop = req("true", 1, None);
        assert_eq!(on_leave(std::slice::from_ref(&pause), &[]), OnLeave::Pause);
        assert_eq!(on_leave(&[pause, stop], &[]), OnLeave::Terminate);
    }

    #[test]
    fn kube_requirements_are_kept_apart_from_ssh_ones() {
        let mut k8s = req("true", 1, None);
        k8s.kinds = vec!["k8s".into()];
        let both = [req("true", 1, None), k8s.clone()];
        assert!(check(&both).is_ok());
        assert_eq!(for_kind(&both, "k8s"), vec![k8s]);
        assert_eq!(for_kind(&both, "ssh").len(), 1);
        assert!(for_kind(&both, "db").is_empty());
    }

    #[test]
    fn requirements_hop_cannot_enforce_are_refused_by_name() {
        let mut db = req("true", 1, None);
        db.kinds = vec!["db".into()];
        let err = |r| check(&[r]).unwrap_err().to_string();
        assert!(
            matches!(check(&[db]), Err(RequirementError::Unenforceable(w)) if w.contains("not \"db\""))
        );
        assert!(err(req("true", 0, None)).contains("at least 1"));
        assert!(err(req("true", 1, Some("ignore"))).contains("on_leave"));
        assert!(err(req("contains(", 1, None)).contains("filter"));
        assert!(
            err(req(r#"contains(user.spec.traits["team"], "sec")"#, 1, None)).contains("only user")
        );
        let mut odd = req("true", 1, None);
        odd.modes = vec!["boss".into()];
        assert!(err(odd).contains("modes"));
        let v = Verbatim(
            serde_json::json!([{"name": "x", "filter": "true", "kinds": ["ssh"], "count": 1, "modes": ["moderator"], "color": "red"}]),
        );
        assert!(parse(&v).is_err(), "unknown fields are refused");
        assert_eq!(parse(&Verbatim(serde_json::Value::Null)).unwrap(), vec![]);
    }
}
