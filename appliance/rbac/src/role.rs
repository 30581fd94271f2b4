//! The `role` resource: options plus `allow`/`deny` conditions, in Teleport's v5–v8 shape.
//!
//! This module owns the role types and their `validate()`, which checks everything that can be
//! checked without a user: versions, names, label patterns, trait templates, rule verbs and
//! durations. It never evaluates access (that is `checker`) and never expands templates.

use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::labels::{Labels, validate_selector};
use crate::resource::{Kind, Metadata};
use crate::traits::{is_template, validate_template};
use crate::validation::{
    FieldPath, Problem, Segment, ValidationError, check_kind, check_name, check_names,
    check_version, invalid,
};

/// Role versions accepted on input.
pub const ROLE_VERSIONS: &[&str] = &["v5", "v6", "v7", "v8"];
/// The version new roles are written with.
pub const DEFAULT_ROLE_VERSION: &str = "v7";

/// Admin API verbs a rule may name.
pub const VERBS: &[&str] = &[
    "list",
    "read",
    "readnosecrets",
    "create",
    "update",
    "delete",
    "*",
];

/// `kind: role`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    /// Always `role`.
    pub kind: String,
    /// `v5` … `v8`.
    pub version: String,
    /// Name, description, labels.
    pub metadata: Metadata,
    /// Options and conditions.
    #[serde(default)]
    pub spec: RoleSpec,
}

/// `spec` of a role.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleSpec {
    /// Session options.
    #[serde(default, skip_serializing_if = "RoleOptions::is_empty")]
    pub options: RoleOptions,
    /// What the role grants.
    #[serde(default, skip_serializing_if = "RoleConditions::is_empty")]
    pub allow: RoleConditions,
    /// What the role takes away; deny beats allow across all of a user's roles.
    #[serde(default, skip_serializing_if = "RoleConditions::is_empty")]
    pub deny: RoleConditions,
}

/// `spec.options`; every field is optional and unset fields do not take part in the
/// "most restrictive across roles" combination.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleOptions {
    /// Upper bound on certificate TTL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_session_ttl: Option<Duration>,
    /// SSH agent forwarding (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_agent: Option<bool>,
    /// SSH port forwarding (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_forwarding: Option<bool>,
    /// Session recording modes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_session: Option<RecordSession>,
    /// Per-session MFA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_session_mfa: Option<bool>,
    /// Disconnect idle clients after this long (`0s` = never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_idle_timeout: Option<Duration>,
    /// Disconnect when the certificate expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnect_expired_cert: Option<bool>,
}

impl RoleOptions {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// `spec.options.record_session`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordSession {
    /// Mode for every protocol without its own setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<RecordingMode>,
    /// Mode for SSH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<RecordingMode>,
    /// Record desktop sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desktop: Option<bool>,
}

/// How a session is recorded when recording fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordingMode {
    /// Keep the session going if recording fails.
    BestEffort,
    /// Terminate the session if recording fails.
    Strict,
}

/// `spec.allow` / `spec.deny`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleConditions {
    /// SSH logins (templated).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logins: Vec<String>,
    /// Which SSH nodes.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub node_labels: Labels,
    /// Which databases.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub db_labels: Labels,
    /// Database names (templated; `*` for any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub db_names: Vec<String>,
    /// Database users (templated; `*` for any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub db_users: Vec<String>,
    /// Which applications.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub app_labels: Labels,
    /// Which Kubernetes clusters.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub kubernetes_labels: Labels,
    /// Kubernetes groups to impersonate (templated).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kubernetes_groups: Vec<String>,
    /// Kubernetes users to impersonate (templated).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kubernetes_users: Vec<String>,
    /// Which Windows desktops.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub windows_desktop_labels: Labels,
    /// Windows logins (templated).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub windows_desktop_logins: Vec<String>,
    /// Admin API rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// Roles that may be requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<AccessRequestConditions>,
    /// Whose live sessions may be joined, and how (`hop join`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub join_sessions: Vec<JoinSessionPolicy>,
}

/// One `join_sessions` entry: live sessions of users holding one of `roles`, of `kinds`, may be
/// joined in `modes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinSessionPolicy {
    /// A name for the policy (shown in refusals).
    pub name: String,
    /// The session owner must hold one of these roles (`*`: any).
    pub roles: Vec<String>,
    /// Session kinds: `ssh` (`*`: any).
    pub kinds: Vec<String>,
    /// `observer` (watch) and/or `peer` (type too).
    pub modes: Vec<String>,
}

/// Modes a session can be joined in.
pub const JOIN_MODES: &[&str] = &["observer", "peer"];

impl RoleConditions {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// One admin API rule: verbs on resource kinds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Resource kinds (`role`, `user`, `event`, …) or `*`.
    pub resources: Vec<String>,
    /// `list`, `read`, `create`, `update`, `delete`, or `*`.
    pub verbs: Vec<String>,
    /// A Teleport predicate. This crate cannot evaluate predicates, so a rule with `where`
    /// never grants in `allow` and always applies in `deny` (fail closed).
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    pub where_: Option<String>,
}

impl Rule {
    /// A rule without a `where` clause.
    #[must_use]
    pub fn new(resources: &[&str], verbs: &[&str]) -> Self {
        Self {
            resources: resources.iter().map(|s| (*s).to_owned()).collect(),
            verbs: verbs.iter().map(|s| (*s).to_owned()).collect(),
            where_: None,
        }
    }
}

/// `request`: which roles the holder may request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRequestConditions {
    /// Role names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
}

impl Kind for Role {
    const KIND: &'static str = "role";

    fn name(&self) -> &str {
        &self.metadata.name
    }

    fn metadata(&self) -> &Metadata {
        &self.metadata
    }
}

impl Role {
    /// An empty role (grants nothing) with the default version.
    #[must_use]
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            kind: Self::KIND.to_owned(),
            version: DEFAULT_ROLE_VERSION.to_owned(),
            metadata: Metadata::named(name),
            spec: RoleSpec::default(),
        }
    }

    /// Checks everything that does not depend on a user.
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_kind(&self.kind, Self::KIND)?;
        check_version(&self.version, ROLE_VERSIONS)?;
        self.metadata.validate()?;
        self.spec
            .options
            .validate(&FieldPath::new("spec.options"))?;
        self.spec.allow.validate(&FieldPath::new("spec.allow"))?;
        self.spec.deny.validate(&FieldPath::new("spec.deny"))?;
        Ok(())
    }
}

impl RoleOptions {
    fn validate(&self, field: &FieldPath) -> Result<(), ValidationError> {
        if self.max_session_ttl.is_some_and(|d| d.is_zero()) {
            return Err(invalid(
                &field.key("max_session_ttl"),
                Problem::Invalid("must be greater than zero".into()),
            ));
        }
        Ok(())
    }
}

/// Each entry is a valid template (or literal) and, for literals, a sensible value.
fn check_templated(field: &FieldPath, values: &[String]) -> Result<(), ValidationError> {
    for (i, v) in values.iter().enumerate() {
        let at = field.index(i);
        if v.is_empty() {
            return Err(invalid(&at, Problem::Empty));
        }
        if v.chars().any(char::is_control) {
            return Err(invalid(
                &at,
                Problem::Invalid("contains a control character".into()),
            ));
        }
        validate_template(v).map_err(|e| {
            invalid(
                field,
                Problem::InvalidTemplate {
                    template: v.clone(),
                    reason: e.to_string(),
                },
            )
            .at_entry(Segment::Index(i))
        })?;
    }
    Ok(())
}

/// Templates in keys and values parse; non-templated patterns compile.
fn check_labels(field: &FieldPath, labels: &Labels) -> Result<(), ValidationError> {
    let mut literal = Labels::new();
    for (key, values) in labels {
        let bad_template = |s: &str, e: crate::traits::TemplateError| {
            invalid(
                field,
                Problem::InvalidTemplate {
                    template: s.to_owned(),
                    reason: e.to_string(),
                },
            )
            .at_entry(Segment::Key(key.clone()))
        };
        validate_template(key).map_err(|e| bad_template(key, e))?;
        for v in &values.0 {
            validate_template(v).map_err(|e| bad_template(v, e))?;
        }
        if !is_template(key) {
            let plain = values.0.iter().filter(|v| !is_template(v)).cloned();
            literal.insert(key.clone(), plain.collect());
        }
    }
    validate_selector(field, &literal)
}

impl RoleConditions {
    fn validate(&self, field: &FieldPath) -> Result<(), ValidationError> {
        check_templated(&field.key("logins"), &self.logins)?;
        check_labels(&field.key("node_labels"), &self.node_labels)?;
        check_labels(&field.key("db_labels"), &self.db_labels)?;
        check_templated(&field.key("db_names"), &self.db_names)?;
        check_templated(&field.key("db_users"), &self.db_users)?;
        check_labels(&field.key("app_labels"), &self.app_labels)?;
        check_labels(&field.key("kubernetes_labels"), &self.kubernetes_labels)?;
        check_templated(&field.key("kubernetes_groups"), &self.kubernetes_groups)?;
        check_templated(&field.key("kubernetes_users"), &self.kubernetes_users)?;
        check_labels(
            &field.key("windows_desktop_labels"),
            &self.windows_desktop_labels,
        )?;
        check_templated(
            &field.key("windows_desktop_logins"),
            &self.windows_desktop_logins,
        )?;
        for (i, rule) in self.rules.iter().enumerate() {
            rule.validate(&field.key("rules").index(i))?;
        }
        if let Some(req) = &self.request {
            check_names(&field.key("request").key("roles"), &req.roles)?;
        }
        for (i, j) in self.join_sessions.iter().enumerate() {
            let f = field.key("join_sessions").index(i);
            if j.roles.is_empty() {
                return Err(invalid(&f.key("roles"), Problem::Empty));
            }
            if j.kinds.is_empty() {
                return Err(invalid(&f.key("kinds"), Problem::Empty));
            }
            if j.modes.is_empty() {
                return Err(invalid(&f.key("modes"), Problem::Empty));
            }
            for (k, m) in j.modes.iter().enumerate() {
                if !JOIN_MODES.contains(&m.as_str()) {
                    return Err(invalid(
                        &f.key("modes").index(k),
                        Problem::Invalid(format!(
                            "unknown mode {m:?}, expected one of {}",
                            JOIN_MODES.join(", ")
                        )),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Rule {
    fn validate(&self, field: &FieldPath) -> Result<(), ValidationError> {
        if self.resources.is_empty() {
            return Err(invalid(&field.key("resources"), Problem::Empty));
        }
        if self.verbs.is_empty() {
            return Err(invalid(&field.key("verbs"), Problem::Empty));
        }
        for (i, r) in self.resources.iter().enumerate() {
            check_name(&field.key("resources").index(i), r)?;
        }
        for (i, v) in self.verbs.iter().enumerate() {
            if !VERBS.contains(&v.as_str()) {
                return Err(invalid(
                    &field.key("verbs").index(i),
                    Problem::Invalid(format!(
                        "unknown verb {v:?}, expected one of {}",
                        VERBS.join(", ")
                    )),
                ));
            }
        }
        if self.where_.as_deref().is_some_and(|w| w.trim().is_empty()) {
            return Err(invalid(&field.key("where"), Problem::Empty));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::labels;

    #[test]
    fn new_role_validates() {
        Role::new("dev").validate().unwrap();
    }

    #[test]
    fn version_and_kind_are_checked() {
        let mut r = Role::new("dev");
        r.version = "v9".into();
        assert_eq!(
            r.validate().unwrap_err().to_string(),
            "version: unsupported version \"v9\", expected one of v5, v6, v7, v8"
        );
        let mut r = Role::new("dev");
        r.kind = "user".into();
        assert_eq!(
            r.validate().unwrap_err().to_string(),
            "kind: expected \"role\", found \"user\""
        );
    }

    #[test]
    fn bad_regex_names_field() {
        let mut r = Role::new("dev");
        r.spec.allow.node_labels = labels([("env", "^(env$")]);
        assert_eq!(
            r.validate().unwrap_err().to_string(),
            "spec.allow.node_labels: invalid regex \"^(env$\": unclosed group"
        );
    }

    #[test]
    fn templates_checked() {
        let mut r = Role::new("dev");
        r.spec.allow.logins = vec!["{{internal.logins}}".into(), "{{foo.bar}}".into()];
        let e = r.validate().unwrap_err();
        assert_eq!(e.field().to_string(), "spec.allow.logins");
        assert!(e.to_string().contains("unknown namespace \"foo\""), "{e}");
        // A templated label value is not compiled before expansion.
        let mut r = Role::new("dev");
        r.spec.allow.node_labels = labels([("team", "^{{external.team}}$")]);
        r.validate().unwrap();
    }

    #[test]
    fn verbs_checked() {
        let mut r = Role::new("dev");
        r.spec.deny.rules = vec![Rule::new(&["role"], &["delete", "destroy"])];
        assert_eq!(
            r.validate().unwrap_err().field().to_string(),
            "spec.deny.rules[0].verbs[1]"
        );
    }

    #[test]
    fn zero_ttl_rejected() {
        let mut r = Role::new("dev");
        r.spec.options.max_session_ttl = Some(Duration::ZERO);
        assert!(r.validate().is_err());
    }
}
