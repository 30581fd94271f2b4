//! Teleport role fields that Hop reads but does not act on.
//!
//! This module owns the line between what a role says and what Hop does with it. Every field of
//! Teleport's role v7/v8 schema parses; a field Hop enforces is evaluated by `checker` as usual.
//! For the rest it decides, field by field, whether ignoring the field could grant more than the
//! operator wrote:
//!
//! - it cannot (the feature is missing, so the field could only have granted or restricted
//!   something Hop never offers): the field is stored verbatim and [`role_warnings`] names it;
//! - it could (a restriction on something Hop offers, which Hop cannot check): the role is
//!   refused by [`check_enforceable`], with an error naming the field.
//!
//! It also owns [`Verbatim`], the opaque value those stored-only fields keep. It never evaluates
//! access and never reads a user.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::role::{JOIN_MODES, Role, RoleConditions, RoleOptions, Rule};
use crate::validation::{FieldPath, Problem, ValidationError, invalid};

/// A value Hop stores and returns as written but never interprets (any YAML/JSON shape).
///
/// Plain scalars keep their YAML meaning: `007` is the number 7, `'007'` the string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Verbatim(pub serde_json::Value);

impl Verbatim {
    /// Says something: not null, not an empty string, list or mapping.
    #[must_use]
    pub fn is_set(&self) -> bool {
        match &self.0 {
            serde_json::Value::Null => false,
            serde_json::Value::String(s) => !s.trim().is_empty(),
            serde_json::Value::Array(a) => !a.is_empty(),
            serde_json::Value::Object(o) => !o.is_empty(),
            serde_json::Value::Bool(_) | serde_json::Value::Number(_) => true,
        }
    }
}

impl<T: Into<serde_json::Value>> From<T> for Verbatim {
    fn from(v: T) -> Self {
        Self(v.into())
    }
}

/// A field Hop accepted but ignores: ignoring it cannot grant more than the role says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldWarning {
    /// The field, e.g. `spec.options.permit_x11_forwarding`.
    pub field: FieldPath,
    /// Why it is ignored, and why that is safe.
    pub reason: &'static str,
}

/// `spec.options.permit_x11_forwarding: ignored: Hop offers no X11 forwarding`
impl fmt::Display for FieldWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ignored: {}", self.field, self.reason)
    }
}

const KUBE_CONNECTIONS: &str = "Hop does not count concurrent Kubernetes sessions";
const NO_DESKTOP: &str = "Hop offers no Windows desktop access";
const NO_REQUEST_STRATEGY: &str =
    "Hop applies no request strategy or prompt (`allow.request.reason.mode` requires a reason)";
const REQUEST_EXTRAS: &str = "Hop requests whole roles only: no claims mappings, annotations, \
     search-as or preview-as roles, or Kubernetes resources";
const THRESHOLD_FILTER: &str = "Hop does not evaluate threshold filters: the threshold applies \
     to every request (stricter)";
const REVIEW_WHERE_DENY: &str = "Hop does not evaluate this `where`: the deny applies to every \
     request for these roles (fail closed)";
const NO_TRUSTED_CLUSTERS: &str = "Hop has no trusted clusters";
const NO_IMPERSONATION: &str = "Hop does not issue certificates on behalf of other users";
const NO_CLOUD: &str = "Hop offers no cloud provider identities";
const NO_HOST_USERS: &str = "Hop does not create host users";
const NO_DB_USERS: &str = "Hop does not create database users";
const NO_DB_SERVICES: &str = "Hop has no database service resources";
const NO_GROUPS: &str = "Hop has no user group resources";
const NO_WORKLOAD_ID: &str = "Hop issues no workload identities";
const NO_GIT: &str = "Hop offers no Git server access";
const NO_MCP: &str = "Hop offers no MCP server access";
const NO_IDP: &str = "Hop is not an identity provider";
const NO_X11: &str = "Hop offers no X11 forwarding";
const NO_BPF: &str = "Hop has no enhanced (BPF) session recording";
const CERT_FORMAT: &str = "Hop issues one certificate format";
const CERT_EXTENSIONS: &str = "Hop adds no custom certificate extensions";
const LOCK_LATER: &str =
    "stored; Hop does not apply a role's locking mode yet (the cluster's applies)";
const NO_EXPRESSIONS: &str = "Hop cannot evaluate label expressions; with no labels beside it, \
     this role grants nothing through it";
const ONE_FORWARDING_PERMISSION: &str = "Hop grants port forwarding as one permission: \
     disabling either direction disables both";
const WHERE_ALLOW: &str = "this `where` names a field or function Hop does not evaluate \
     (Hop knows contains, equals, user.metadata.name, user.spec.roles, traits, \
     session.participants/user/login, resource.metadata.labels); this allow rule grants nothing \
     (fail closed)";
const WHERE_DENY: &str = "this `where` names a field or function Hop does not evaluate \
     (Hop knows contains, equals, user.metadata.name, user.spec.roles, traits, \
     session.participants/user/login, resource.metadata.labels); this deny rule applies \
     unconditionally (fail closed)";
const ACTIONS: &str = "Hop runs no rule actions";
const KIND_NOT_SSH: &str =
    "Hop has SSH and Kubernetes (k8s) sessions to join; this kind matches none";
const UNKNOWN_MODE: &str = "Hop knows the modes observer, peer and moderator";
const SESSION_JOIN_DENY: &str = "has no meaning under deny";

/// Every ignored-but-stored field the role sets, in document order.
#[must_use]
pub fn role_warnings(role: &Role) -> Vec<FieldWarning> {
    let mut out = Vec::new();
    if role.sub_kind.as_deref().is_some_and(|s| !s.is_empty()) {
        out.push(warn(
            FieldPath::new("sub_kind"),
            "roles have no sub kinds in Hop",
        ));
    }
    option_warnings(
        &role.spec.options,
        &FieldPath::new("spec.options"),
        &mut out,
    );
    for (side, c) in [
        (Side::Allow, &role.spec.allow),
        (Side::Deny, &role.spec.deny),
    ] {
        condition_warnings(c, side, &mut out);
    }
    out
}

fn warn(field: FieldPath, reason: &'static str) -> FieldWarning {
    FieldWarning { field, reason }
}

fn set(v: Option<&Verbatim>) -> bool {
    v.is_some_and(Verbatim::is_set)
}

fn text_set(v: Option<&String>) -> bool {
    v.is_some_and(|s| !s.trim().is_empty())
}

/// Pushes a warning for each `(name, present, reason)` that is present.
fn push_present(
    at: &FieldPath,
    fields: &[(&str, bool, &'static str)],
    out: &mut Vec<FieldWarning>,
) {
    for (name, present, reason) in fields {
        if *present {
            out.push(warn(at.key(name), reason));
        }
    }
}

fn option_warnings(o: &RoleOptions, at: &FieldPath, out: &mut Vec<FieldWarning>) {
    let desktop_recording = o
        .record_session
        .as_ref()
        .is_some_and(|r| r.desktop.is_some());
    push_present(
        at,
        &[
            ("cert_format", o.cert_format.is_some(), CERT_FORMAT),
            ("enhanced_recording", o.enhanced_recording.is_some(), NO_BPF),
            (
                "permit_x11_forwarding",
                o.permit_x11_forwarding.is_some(),
                NO_X11,
            ),
            (
                "request_access",
                o.request_access.is_some(),
                NO_REQUEST_STRATEGY,
            ),
            (
                "request_prompt",
                o.request_prompt.is_some(),
                NO_REQUEST_STRATEGY,
            ),
            ("lock", o.lock.is_some(), LOCK_LATER),
            (
                "desktop_clipboard",
                o.desktop_clipboard.is_some(),
                NO_DESKTOP,
            ),
            (
                "cert_extensions",
                o.cert_extensions.is_some(),
                CERT_EXTENSIONS,
            ),
            (
                "max_kubernetes_connections",
                o.max_kubernetes_connections.is_some(),
                KUBE_CONNECTIONS,
            ),
            (
                "desktop_directory_sharing",
                o.desktop_directory_sharing.is_some(),
                NO_DESKTOP,
            ),
            (
                "create_host_user",
                o.create_host_user.is_some(),
                NO_HOST_USERS,
            ),
            ("idp", o.idp.is_some(), NO_IDP),
            (
                "create_desktop_user",
                o.create_desktop_user.is_some(),
                NO_DESKTOP,
            ),
            ("create_db_user", o.create_db_user.is_some(), NO_DB_USERS),
            (
                "create_host_user_mode",
                o.create_host_user_mode.is_some(),
                NO_HOST_USERS,
            ),
            (
                "create_db_user_mode",
                o.create_db_user_mode.is_some(),
                NO_DB_USERS,
            ),
            (
                "create_host_user_default_shell",
                o.create_host_user_default_shell.is_some(),
                NO_HOST_USERS,
            ),
        ],
        out,
    );
    if desktop_recording {
        out.push(warn(at.key("record_session").key("desktop"), NO_DESKTOP));
    }
    if o.mfa_verification_interval.is_some() {
        // Only reached when the interval is no shorter than max_session_ttl (else refused).
        out.push(warn(
            at.key("mfa_verification_interval"),
            "no shorter than max_session_ttl, which already bounds every certificate",
        ));
    }
    if o.ssh_port_forwarding
        .as_ref()
        .is_some_and(|f| f.local_enabled() != f.remote_enabled())
    {
        out.push(warn(
            at.key("ssh_port_forwarding"),
            ONE_FORWARDING_PERMISSION,
        ));
    }
}

/// The parts of `request` and `review_requests` Hop stores without acting on them.
fn request_warnings(c: &RoleConditions, side: Side, at: &FieldPath, out: &mut Vec<FieldWarning>) {
    if let Some(r) = &c.request {
        let at = at.key("request");
        push_present(
            &at,
            &[
                (
                    "claims_to_roles",
                    set(r.claims_to_roles.as_ref()),
                    REQUEST_EXTRAS,
                ),
                ("annotations", set(r.annotations.as_ref()), REQUEST_EXTRAS),
                (
                    "search_as_roles",
                    set(r.search_as_roles.as_ref()),
                    REQUEST_EXTRAS,
                ),
                (
                    "kubernetes_resources",
                    set(r.kubernetes_resources.as_ref()),
                    REQUEST_EXTRAS,
                ),
            ],
            out,
        );
        for (i, t) in r.thresholds.iter().enumerate() {
            if text_set(t.filter.as_ref()) {
                out.push(warn(
                    at.key("thresholds").index(i).key("filter"),
                    THRESHOLD_FILTER,
                ));
            }
        }
    }
    if let Some(r) = &c.review_requests {
        let at = at.key("review_requests");
        push_present(
            &at,
            &[
                (
                    "claims_to_roles",
                    set(r.claims_to_roles.as_ref()),
                    REQUEST_EXTRAS,
                ),
                (
                    "preview_as_roles",
                    set(r.preview_as_roles.as_ref()),
                    REQUEST_EXTRAS,
                ),
            ],
            out,
        );
        if side == Side::Deny && text_set(r.where_.as_ref()) {
            out.push(warn(at.key("where"), REVIEW_WHERE_DENY));
        }
    }
}

/// `spec.allow` or `spec.deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Allow,
    Deny,
}

impl Side {
    fn path(self) -> FieldPath {
        match self {
            Self::Allow => FieldPath::new("spec.allow"),
            Self::Deny => FieldPath::new("spec.deny"),
        }
    }
}

fn condition_warnings(c: &RoleConditions, side: Side, out: &mut Vec<FieldWarning>) {
    let at = side.path();
    push_present(
        &at,
        &[
            (
                "windows_desktop_labels",
                !c.windows_desktop_labels.is_empty(),
                NO_DESKTOP,
            ),
            (
                "windows_desktop_logins",
                !c.windows_desktop_logins.is_empty(),
                NO_DESKTOP,
            ),
            (
                "windows_desktop_labels_expression",
                text_set(c.windows_desktop_labels_expression.as_ref()),
                NO_DESKTOP,
            ),
            ("desktop_groups", set(c.desktop_groups.as_ref()), NO_DESKTOP),
            (
                "cluster_labels",
                set(c.cluster_labels.as_ref()),
                NO_TRUSTED_CLUSTERS,
            ),
            (
                "cluster_labels_expression",
                text_set(c.cluster_labels_expression.as_ref()),
                NO_TRUSTED_CLUSTERS,
            ),
            ("impersonate", set(c.impersonate.as_ref()), NO_IMPERSONATION),
            ("aws_role_arns", set(c.aws_role_arns.as_ref()), NO_CLOUD),
            (
                "azure_identities",
                set(c.azure_identities.as_ref()),
                NO_CLOUD,
            ),
            (
                "gcp_service_accounts",
                set(c.gcp_service_accounts.as_ref()),
                NO_CLOUD,
            ),
            (
                "account_assignments",
                set(c.account_assignments.as_ref()),
                NO_CLOUD,
            ),
            ("host_groups", set(c.host_groups.as_ref()), NO_HOST_USERS),
            ("host_sudoers", set(c.host_sudoers.as_ref()), NO_HOST_USERS),
            ("db_roles", set(c.db_roles.as_ref()), NO_DB_USERS),
            (
                "db_permissions",
                set(c.db_permissions.as_ref()),
                NO_DB_USERS,
            ),
            (
                "db_service_labels",
                set(c.db_service_labels.as_ref()),
                NO_DB_SERVICES,
            ),
            (
                "db_service_labels_expression",
                text_set(c.db_service_labels_expression.as_ref()),
                NO_DB_SERVICES,
            ),
            ("group_labels", set(c.group_labels.as_ref()), NO_GROUPS),
            (
                "group_labels_expression",
                text_set(c.group_labels_expression.as_ref()),
                NO_GROUPS,
            ),
            (
                "workload_identity_labels",
                set(c.workload_identity_labels.as_ref()),
                NO_WORKLOAD_ID,
            ),
            (
                "workload_identity_labels_expression",
                text_set(c.workload_identity_labels_expression.as_ref()),
                NO_WORKLOAD_ID,
            ),
            (
                "github_permissions",
                set(c.github_permissions.as_ref()),
                NO_GIT,
            ),
            ("mcp", set(c.mcp.as_ref()), NO_MCP),
        ],
        out,
    );
    request_warnings(c, side, &at, out);
    if side == Side::Deny && set(c.require_session_join.as_ref()) {
        out.push(warn(at.key("require_session_join"), SESSION_JOIN_DENY));
    }
    if side == Side::Allow {
        // Reached only when the matching labels are empty (else refused).
        for (name, _, expr) in enforced_expressions(c) {
            if text_set(expr) {
                out.push(warn(at.key(name), NO_EXPRESSIONS));
            }
        }
    }
    rule_warnings(&c.rules, side, &at.key("rules"), out);
    join_warnings(c, &at.key("join_sessions"), out);
}

fn rule_warnings(rules: &[Rule], side: Side, at: &FieldPath, out: &mut Vec<FieldWarning>) {
    for (i, rule) in rules.iter().enumerate() {
        let at = at.index(i);
        let unsupported = rule
            .where_
            .as_deref()
            .and_then(|w| crate::predicate::parse(w).ok())
            .and_then(|p| crate::rule_context::unsupported(&p));
        if unsupported.is_some() {
            let reason = match side {
                Side::Allow => WHERE_ALLOW,
                Side::Deny => WHERE_DENY,
            };
            out.push(warn(at.key("where"), reason));
        }
        if !rule.actions.is_empty() {
            out.push(warn(at.key("actions"), ACTIONS));
        }
    }
}

fn join_warnings(c: &RoleConditions, at: &FieldPath, out: &mut Vec<FieldWarning>) {
    for (i, policy) in c.join_sessions.iter().enumerate() {
        let at = at.index(i);
        for (k, kind) in policy.kinds.iter().enumerate() {
            if !matches!(kind.as_str(), "ssh" | "k8s") && kind != crate::labels::WILDCARD {
                out.push(warn(at.key("kinds").index(k), KIND_NOT_SSH));
            }
        }
        for (m, mode) in policy.modes.iter().enumerate() {
            if !JOIN_MODES.contains(&mode.as_str()) {
                out.push(warn(at.key("modes").index(m), UNKNOWN_MODE));
            }
        }
    }
}

/// The label expressions of resource kinds Hop serves, with whether their labels are set.
fn enforced_expressions(c: &RoleConditions) -> [(&'static str, bool, Option<&String>); 4] {
    [
        (
            "node_labels_expression",
            !c.node_labels.is_empty(),
            c.node_labels_expression.as_ref(),
        ),
        (
            "app_labels_expression",
            !c.app_labels.is_empty(),
            c.app_labels_expression.as_ref(),
        ),
        (
            "db_labels_expression",
            !c.db_labels.is_empty(),
            c.db_labels_expression.as_ref(),
        ),
        (
            "kubernetes_labels_expression",
            !c.kubernetes_labels.is_empty(),
            c.kubernetes_labels_expression.as_ref(),
        ),
    ]
}

/// Refuses restrictions Hop cannot enforce: accepting them would grant more than the role says.
pub(crate) fn check_enforceable(role: &Role) -> Result<(), ValidationError> {
    check_options(&role.spec.options, &FieldPath::new("spec.options"))?;
    check_allow(&role.spec.allow, &Side::Allow.path())?;
    check_deny(&role.spec.deny, &Side::Deny.path())
}

fn unenforceable(field: &FieldPath, why: &str) -> ValidationError {
    invalid(field, Problem::Unenforceable(why.to_owned()))
}

fn check_options(o: &RoleOptions, at: &FieldPath) -> Result<(), ValidationError> {
    if o.pin_source_ip == Some(true) {
        return Err(unenforceable(
            &at.key("pin_source_ip"),
            "Hop does not pin certificates to the client's IP address",
        ));
    }
    if o.ssh_file_copy == Some(false) {
        return Err(unenforceable(
            &at.key("ssh_file_copy"),
            "Hop cannot tell file copies (scp, sftp) from other SSH use",
        ));
    }
    if o.max_sessions.is_some() {
        return Err(unenforceable(
            &at.key("max_sessions"),
            "Hop does not count sessions per connection",
        ));
    }
    if o.max_connections.is_some() {
        return Err(unenforceable(
            &at.key("max_connections"),
            "Hop does not count a user's concurrent connections",
        ));
    }
    check_device_trust(o.device_trust_mode.as_deref(), &at.key("device_trust_mode"))?;
    check_mfa_interval(o, &at.key("mfa_verification_interval"))
}

fn check_device_trust(mode: Option<&str>, at: &FieldPath) -> Result<(), ValidationError> {
    match mode {
        None | Some("" | "off" | "optional") => Ok(()),
        Some("required" | "required-for-humans") => Err(unenforceable(
            at,
            "Hop has no device trust, so it cannot require a trusted device",
        )),
        Some(other) => Err(invalid(
            at,
            Problem::Invalid(format!(
                "unknown mode {other:?}, expected one of off, optional, required, required-for-humans"
            )),
        )),
    }
}

/// An interval no shorter than `max_session_ttl` restricts nothing; anything else would need
/// Hop to re-verify MFA during a certificate's life, which it does not do.
fn check_mfa_interval(o: &RoleOptions, at: &FieldPath) -> Result<(), ValidationError> {
    let Some(interval) = &o.mfa_verification_interval else {
        return Ok(());
    };
    let parsed = interval.0.as_str().and_then(|s| s.parse::<Duration>().ok());
    match (parsed, o.max_session_ttl) {
        (Some(i), Some(ttl)) if i >= ttl => Ok(()),
        _ => Err(unenforceable(
            at,
            "Hop does not re-verify MFA within a certificate's lifetime \
             (accepted only when no shorter than max_session_ttl)",
        )),
    }
}

fn check_allow(c: &RoleConditions, at: &FieldPath) -> Result<(), ValidationError> {
    if c.review_requests
        .as_ref()
        .is_some_and(|r| text_set(r.where_.as_ref()))
    {
        return Err(unenforceable(
            &at.key("review_requests").key("where"),
            "Hop does not evaluate `where` on reviews, and without it more people could review",
        ));
    }
    if let Some(v) = c.require_session_join.as_ref() {
        let at = at.key("require_session_join");
        crate::moderation::parse(v).map_err(|e| match e {
            crate::moderation::RequirementError::Unenforceable(why) => unenforceable(&at, &why),
            crate::moderation::RequirementError::Invalid(why) => {
                invalid(&at, Problem::Invalid(why))
            }
        })?;
    }
    for (name, labels_set, expr) in enforced_expressions(c) {
        if labels_set && text_set(expr) {
            return Err(unenforceable(
                &at.key(name),
                "Hop cannot evaluate label expressions, and the labels beside it alone \
                 would allow more",
            ));
        }
    }
    Ok(())
}

fn check_deny(c: &RoleConditions, at: &FieldPath) -> Result<(), ValidationError> {
    for (name, _, expr) in enforced_expressions(c) {
        if text_set(expr) {
            return Err(unenforceable(
                &at.key(name),
                "Hop cannot evaluate label expressions, so this deny would not apply",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbatim_is_set() {
        assert!(!Verbatim(serde_json::Value::Null).is_set());
        assert!(!Verbatim::from("  ").is_set());
        assert!(!Verbatim(serde_json::json!([])).is_set());
        assert!(Verbatim::from(false).is_set());
        assert!(Verbatim(serde_json::json!({"a": 1})).is_set());
    }

    #[test]
    fn device_trust_modes() {
        let at = FieldPath::new("spec.options.device_trust_mode");
        for ok in [None, Some("off"), Some("optional"), Some("")] {
            check_device_trust(ok, &at).unwrap();
        }
        for refused in ["required", "required-for-humans"] {
            let e = check_device_trust(Some(refused), &at).unwrap_err();
            assert!(matches!(e.problem(), Problem::Unenforceable(_)), "{e}");
        }
        assert!(check_device_trust(Some("sometimes"), &at).is_err());
    }

    #[test]
    fn mfa_interval_only_when_it_restricts_nothing() {
        let at = FieldPath::new("x");
        let mut o = RoleOptions {
            mfa_verification_interval: Some(Verbatim::from("8h")),
            ..RoleOptions::default()
        };
        assert!(check_mfa_interval(&o, &at).is_err());
        o.max_session_ttl = Some(Duration::from_hours(8));
        check_mfa_interval(&o, &at).unwrap();
        o.max_session_ttl = Some(Duration::from_hours(9));
        assert!(check_mfa_interval(&o, &at).is_err());
    }
}
