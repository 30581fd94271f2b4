//! The `role` resource: options plus `allow`/`deny` conditions, in Teleport's v5–v8 shape.
//!
//! This module owns the role types and their `validate()`, which checks everything that can be
//! checked without a user: versions, names, label patterns, trait templates, rule verbs and
//! durations. It never evaluates access (that is `checker`) and never expands templates.

use serde::{Deserialize, Serialize};

use crate::access_request::{AccessRequestConditions, AccessReviewConditions};
use crate::compat::{FieldWarning, Verbatim, check_enforceable, role_warnings};
use crate::duration::Duration;
use crate::kube::{KubernetesResource, validate_resources};
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
    /// Teleport's sub kind; roles have none. Stored, ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_kind: Option<String>,
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
///
/// The fields after `disconnect_expired_cert` are Teleport's; Hop enforces
/// `ssh_port_forwarding`, refuses the restrictions it cannot enforce and stores the rest
/// verbatim (see `compat`).
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
    /// Port forwarding per direction (enforced, with `port_forwarding`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_port_forwarding: Option<SshPortForwarding>,
    /// Certificate format (`standard`, `oldssh`). Stored, ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_format: Option<String>,
    /// BPF event classes to record. Stored, ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enhanced_recording: Option<Verbatim>,
    /// X11 forwarding; Hop offers none whatever this says. Stored, ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permit_x11_forwarding: Option<bool>,
    /// Concurrent connections per user. Refused: Hop cannot enforce it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<Verbatim>,
    /// Sessions per connection. Refused: Hop cannot enforce it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sessions: Option<Verbatim>,
    /// Access request strategy. Stored, ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_access: Option<String>,
    /// Access request prompt. Stored, ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_prompt: Option<String>,
    /// Locking mode. Stored; enforcement is separate work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<LockingMode>,
    /// Desktop clipboard sharing. Stored, ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desktop_clipboard: Option<bool>,
    /// Extra SSH certificate extensions. Stored, ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_extensions: Option<Verbatim>,
    /// Concurrent Kubernetes sessions. Stored, not enforced (warned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_kubernetes_connections: Option<Verbatim>,
    /// Desktop directory sharing. Stored, ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desktop_directory_sharing: Option<bool>,
    /// Host user creation (deprecated by Teleport). Stored, ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_host_user: Option<bool>,
    /// Pin certificates to the client IP. `true` is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_source_ip: Option<bool>,
    /// scp/sftp over SSH. `false` is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_file_copy: Option<bool>,
    /// Device trust (`off`, `optional`, `required`, `required-for-humans`); the last two are
    /// refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_trust_mode: Option<String>,
    /// Identity provider options. Stored, ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idp: Option<Verbatim>,
    /// Desktop user creation. Stored, ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_desktop_user: Option<bool>,
    /// Database user creation. Stored, ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_db_user: Option<bool>,
    /// Host user creation mode. Stored, ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_host_user_mode: Option<String>,
    /// Database user creation mode. Stored, ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_db_user_mode: Option<String>,
    /// Longest time between MFA checks; refused unless no shorter than `max_session_ttl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa_verification_interval: Option<Verbatim>,
    /// Shell of created host users. Stored, ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_host_user_default_shell: Option<String>,
}

/// `spec.options.lock`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LockingMode {
    /// Refuse access when the lock state is unknown.
    Strict,
    /// Allow access when the lock state is unknown.
    BestEffort,
}

/// `spec.options.ssh_port_forwarding`: `{local: {enabled: B}, remote: {enabled: B}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshPortForwarding {
    /// `ssh -L` (`direct-tcpip`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<ForwardingToggle>,
    /// `ssh -R` (`tcpip-forward`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<ForwardingToggle>,
}

/// `{enabled: B}`; unset means enabled, as in Teleport.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardingToggle {
    /// Whether this direction is allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// A direction of SSH port forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardDirection {
    /// `ssh -L`.
    Local,
    /// `ssh -R`.
    Remote,
}

impl SshPortForwarding {
    /// Local forwarding is allowed unless explicitly disabled.
    #[must_use]
    pub fn local_enabled(&self) -> bool {
        self.enabled(ForwardDirection::Local)
    }

    /// Remote forwarding is allowed unless explicitly disabled.
    #[must_use]
    pub fn remote_enabled(&self) -> bool {
        self.enabled(ForwardDirection::Remote)
    }

    /// Whether `direction` is allowed by this setting alone.
    #[must_use]
    pub fn enabled(&self, direction: ForwardDirection) -> bool {
        let toggle = match direction {
            ForwardDirection::Local => &self.local,
            ForwardDirection::Remote => &self.remote,
        };
        toggle.as_ref().and_then(|t| t.enabled) != Some(false)
    }
}

impl RoleOptions {
    /// Whether this role leaves forwarding in `direction` allowed: neither `port_forwarding:
    /// false` nor `ssh_port_forwarding.<direction>.enabled: false`. Stricter than Teleport when
    /// both are set (either one disabling wins).
    #[must_use]
    pub fn permits_port_forwarding(&self, direction: ForwardDirection) -> bool {
        self.port_forwarding != Some(false)
            && self
                .ssh_port_forwarding
                .as_ref()
                .is_none_or(|f| f.enabled(direction))
    }
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
    // Teleport fields below: refused where ignoring them would widen access, otherwise stored
    // verbatim and reported by `compat::role_warnings`.
    /// Node label predicate; refused where ignoring it would widen access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_labels_expression: Option<String>,
    /// App label predicate; refused where ignoring it would widen access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_labels_expression: Option<String>,
    /// Database label predicate; refused where ignoring it would widen access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_labels_expression: Option<String>,
    /// Kubernetes label predicate; refused where ignoring it would widen access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_labels_expression: Option<String>,
    /// Windows desktop label predicate. Stored, ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows_desktop_labels_expression: Option<String>,
    /// Trusted cluster labels. Stored, ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_labels: Option<Verbatim>,
    /// Trusted cluster label predicate. Stored, ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_labels_expression: Option<String>,
    /// Kubernetes resources within clusters (see `kube`); an allow side without any allows
    /// every resource of the clusters its labels match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kubernetes_resources: Vec<KubernetesResource>,
    /// Certificate impersonation. Stored, ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impersonate: Option<Verbatim>,
    /// Whose access requests the holder may review (by the roles requested).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review_requests: Option<AccessReviewConditions>,
    /// AWS role ARNs. Stored, ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_role_arns: Option<Verbatim>,
    /// Moderated session requirements (`crate::moderation`): SSH only, checked when the role
    /// is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_session_join: Option<Verbatim>,
    /// Groups of created host users. Stored, ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_groups: Option<Verbatim>,
    /// Sudoers entries of created host users. Stored, ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_sudoers: Option<Verbatim>,
    /// Azure identities. Stored, ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure_identities: Option<Verbatim>,
    /// GCP service accounts. Stored, ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcp_service_accounts: Option<Verbatim>,
    /// Database service labels. Stored, ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_service_labels: Option<Verbatim>,
    /// Database service label predicate. Stored, ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_service_labels_expression: Option<String>,
    /// User group labels. Stored, ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_labels: Option<Verbatim>,
    /// User group label predicate. Stored, ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_labels_expression: Option<String>,
    /// Groups of created desktop users. Stored, ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desktop_groups: Option<Verbatim>,
    /// Roles of created database users. Stored, ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_roles: Option<Verbatim>,
    /// Permissions of created database users. Stored, ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_permissions: Option<Verbatim>,
    /// SPIFFE paths (`[{path: "/svc/*"}]`) a bot may obtain SVIDs for; see `spiffe`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spiffe: Option<Verbatim>,
    /// AWS Identity Center account assignments. Stored, ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_assignments: Option<Verbatim>,
    /// GitHub permissions. Stored, ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github_permissions: Option<Verbatim>,
    /// Workload identity labels. Stored, ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_identity_labels: Option<Verbatim>,
    /// Workload identity label predicate. Stored, ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_identity_labels_expression: Option<String>,
    /// MCP server permissions. Stored, ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<Verbatim>,
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
    /// Session kinds: `ssh`, `k8s` (a moderated Kubernetes exec or attach; `*`: any);
    /// Teleport's other kinds (`windows_desktop`, …) match nothing.
    pub kinds: Vec<String>,
    /// `observer` (watch), `peer` (type too) and/or `moderator` (watch, and count for the
    /// owner's `require_session_join`).
    pub modes: Vec<String>,
}

/// Modes a session can be joined in.
pub const JOIN_MODES: &[&str] = &["observer", "peer", "moderator"];
/// Modes a role may name.
pub const ROLE_JOIN_MODES: &[&str] = JOIN_MODES;

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
    /// A Teleport predicate (`contains(session.participants, user.metadata.name)`), parsed when
    /// the role is validated and evaluated per resource ([`crate::rule_context`]); where it
    /// cannot be decided, the rule grants nothing in `allow` and applies in `deny`.
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    pub where_: Option<String>,
    /// Teleport's side effects of a matching rule. Stored, ignored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<String>,
}

impl Rule {
    /// A rule without a `where` clause.
    #[must_use]
    pub fn new(resources: &[&str], verbs: &[&str]) -> Self {
        Self {
            resources: resources.iter().map(|s| (*s).to_owned()).collect(),
            verbs: verbs.iter().map(|s| (*s).to_owned()).collect(),
            where_: None,
            actions: Vec::new(),
        }
    }
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
            sub_kind: None,
            version: DEFAULT_ROLE_VERSION.to_owned(),
            metadata: Metadata::named(name),
            spec: RoleSpec::default(),
        }
    }

    /// Checks everything that does not depend on a user, and refuses restrictions Hop cannot
    /// enforce.
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_kind(&self.kind, Self::KIND)?;
        check_version(&self.version, ROLE_VERSIONS)?;
        self.metadata.validate()?;
        self.spec
            .options
            .validate(&FieldPath::new("spec.options"))?;
        self.spec.allow.validate(&FieldPath::new("spec.allow"))?;
        self.spec.deny.validate(&FieldPath::new("spec.deny"))?;
        for (side, c) in [
            ("spec.allow", &self.spec.allow),
            ("spec.deny", &self.spec.deny),
        ] {
            validate_resources(
                &FieldPath::new(side).key("kubernetes_resources"),
                &self.version,
                &c.kubernetes_resources,
            )?;
        }
        check_enforceable(self)
    }

    /// The fields this role sets that Hop stores but ignores (ignoring them cannot grant more
    /// than the role says). Meaningful for a role that passed [`Self::validate`].
    #[must_use]
    pub fn warnings(&self) -> Vec<FieldWarning> {
        role_warnings(self)
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
            req.validate(&field.key("request"))?;
        }
        if let Some(rev) = &self.review_requests {
            check_names(&field.key("review_requests").key("roles"), &rev.roles)?;
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
                if !ROLE_JOIN_MODES.contains(&m.as_str()) {
                    return Err(invalid(
                        &f.key("modes").index(k),
                        Problem::Invalid(format!(
                            "unknown mode {m:?}, expected one of {}",
                            ROLE_JOIN_MODES.join(", ")
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
        if let Some(w) = self.where_.as_deref() {
            if w.trim().is_empty() {
                return Err(invalid(&field.key("where"), Problem::Empty));
            }
            crate::predicate::parse(w).map_err(|e| {
                invalid(
                    &field.key("where"),
                    Problem::Invalid(format!("where clause {e}")),
                )
            })?;
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
