//! Access evaluation for one user: their roles with traits applied, compiled once, asked many
//! times (per session, on every agent).
//!
//! This module owns [`AccessChecker`] and [`AccessDenied`]. Semantics follow Teleport: deny by
//! default, deny beats allow across all roles, deny rules are greedy (a matching deny label
//! selector *or* a matching deny login/db name/db user denies), allow rules are not (one role
//! must match labels *and* the login). It must never read clocks, storage or the network, and
//! every check is a pure function of the compiled roles and its arguments.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::duration::Duration;
use crate::kube::KubeRules;
use crate::labels::{Labels, Selector, WILDCARD};
use crate::predicate::{self, Predicate};
use crate::resource::Kind;
use crate::role::{ForwardDirection, Role, RoleConditions, RoleOptions, Rule};
use crate::rule_context::{self, RuleContext, Undecidable};
use crate::traits::{Traits, expand};
use crate::validation::{FieldPath, Problem, ValidationError};

/// The certificate lifetime ceiling of a role that sets no `max_session_ttl`: 30 hours, as in
/// Teleport. Every certificate issued for a user is capped by it (see
/// [`AccessChecker::max_session_ttl`]).
pub const DEFAULT_MAX_SESSION_TTL: std::time::Duration = std::time::Duration::from_secs(30 * 3600);

/// Why access was refused. The text names the role and field that denied, or says that no
/// role allows the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessDenied {
    /// A deny condition matched.
    #[error("{what} denied by role {role:?} ({field})")]
    DeniedByRole {
        /// The role whose deny section matched.
        role: String,
        /// The matching field, e.g. `spec.deny.node_labels`.
        field: &'static str,
        /// What was asked, e.g. `login "root" on node`.
        what: String,
    },
    /// No allow condition matched.
    #[error("no role allows {what}")]
    NotAllowed {
        /// What was asked.
        what: String,
    },
}

/// Which database names one user may use as one database user on one server, from
/// [`AccessChecker::database_names`]; small enough to travel with a session to its agent.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DbNames {
    /// Names some role allows (with the labels and the user); `*` allows any.
    pub allow: BTreeSet<String>,
    /// Names some role denies; `*` denies all.
    pub deny: BTreeSet<String>,
}

impl DbNames {
    /// May the session use database `name`? Case-exact, as at connect time.
    #[must_use]
    pub fn allows(&self, name: &str) -> bool {
        !contains_or_wildcard(&self.deny, name) && contains_or_wildcard(&self.allow, name)
    }
}

/// One side (allow or deny) of a role after template expansion and pattern compilation.
#[derive(Debug, Clone, Default)]
struct Conditions {
    logins: BTreeSet<String>,
    node: Selector,
    db: Selector,
    db_names: BTreeSet<String>,
    db_users: BTreeSet<String>,
    app: Selector,
    kube: Selector,
    kube_groups: BTreeSet<String>,
    kube_users: BTreeSet<String>,
    kube_resources: KubeRules,
    desktop: Selector,
    desktop_logins: BTreeSet<String>,
    rules: Vec<CompiledRule>,
    join_sessions: Vec<crate::role::JoinSessionPolicy>,
    /// `require_session_join` (allow only; the deny side means nothing).
    session_join: Vec<crate::moderation::SessionJoinRequirement>,
    request_roles: BTreeSet<String>,
}

#[derive(Debug, Clone)]
struct CompiledRole {
    name: String,
    options: RoleOptions,
    allow: Conditions,
    deny: Conditions,
}

/// A user's roles, ready for evaluation. Cloning it is cheap (the compiled roles are shared) and
/// it is `Send + Sync`.
#[derive(Debug, Clone, Default)]
pub struct AccessChecker {
    roles: Arc<[CompiledRole]>,
}

/// A login becomes an SSH principal: no whitespace or control characters.
fn is_valid_login(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn expand_all(values: &[String], traits: &Traits) -> BTreeSet<String> {
    values.iter().flat_map(|v| expand(v, traits)).collect()
}

fn expand_logins(values: &[String], traits: &Traits) -> BTreeSet<String> {
    values
        .iter()
        .flat_map(|v| expand(v, traits))
        .filter(|l| is_valid_login(l))
        .collect()
}

/// Expands templates in keys and values, then compiles. A key that expands to nothing makes
/// the selector unsatisfiable rather than dropping the key (which would widen an allow).
fn compile_labels(
    field: &FieldPath,
    labels: &Labels,
    traits: &Traits,
) -> Result<Selector, ValidationError> {
    let mut expanded = Labels::new();
    let mut unsatisfiable = false;
    for (key, values) in labels {
        let keys = expand(key, traits);
        if keys.is_empty() {
            unsatisfiable = true;
            continue;
        }
        let vals: Vec<String> = values.0.iter().flat_map(|v| expand(v, traits)).collect();
        for k in keys {
            expanded
                .entry(k)
                .or_default()
                .0
                .extend(vals.iter().cloned());
        }
    }
    let selector = Selector::compile(field, &expanded)?;
    Ok(if unsatisfiable {
        Selector::never()
    } else {
        selector
    })
}

impl Conditions {
    /// `version` is the role's; `allow` says which side this is (the allow side of
    /// `kubernetes_resources` has a default, the deny side none).
    fn compile(
        field: &FieldPath,
        c: &RoleConditions,
        traits: &Traits,
        version: &str,
        allow: bool,
    ) -> Result<Self, ValidationError> {
        let labels = |name: &str, l: &Labels| compile_labels(&field.key(name), l, traits);
        Ok(Self {
            logins: expand_logins(&c.logins, traits),
            node: labels("node_labels", &c.node_labels)?,
            db: labels("db_labels", &c.db_labels)?,
            db_names: expand_all(&c.db_names, traits),
            db_users: expand_all(&c.db_users, traits),
            app: labels("app_labels", &c.app_labels)?,
            kube: labels("kubernetes_labels", &c.kubernetes_labels)?,
            kube_groups: expand_all(&c.kubernetes_groups, traits),
            kube_users: expand_all(&c.kubernetes_users, traits),
            kube_resources: KubeRules::compile(
                &field.key("kubernetes_resources"),
                version,
                &c.kubernetes_resources,
                allow,
            )?,
            desktop: labels("windows_desktop_labels", &c.windows_desktop_labels)?,
            desktop_logins: expand_logins(&c.windows_desktop_logins, traits),
            rules: c
                .rules
                .iter()
                .enumerate()
                .map(|(i, r)| CompiledRule::compile(&field.key("rules").index(i), r))
                .collect::<Result<_, _>>()?,
            join_sessions: c.join_sessions.clone(),
            session_join: match (&c.require_session_join, allow) {
                (Some(v), true) => crate::moderation::parse(v).map_err(|e| {
                    crate::validation::invalid(
                        &field.key("require_session_join"),
                        crate::validation::Problem::Invalid(e.to_string()),
                    )
                })?,
                _ => Vec::new(),
            },
            request_roles: c
                .request
                .as_ref()
                .map(|r| r.roles.iter().cloned().collect())
                .unwrap_or_default(),
        })
    }
}

/// `*` in the set, or the exact value.
fn contains_or_wildcard(set: &BTreeSet<String>, value: &str) -> bool {
    set.contains(WILDCARD) || set.contains(value)
}

fn rule_matches(rule: &Rule, kind: &str, verb: &str) -> bool {
    rule.resources.iter().any(|r| r == WILDCARD || r == kind)
        && rule.verbs.iter().any(|v| v == WILDCARD || v == verb)
}

/// An admin API rule with its `where` clause parsed.
#[derive(Debug, Clone)]
struct CompiledRule {
    rule: Rule,
    predicate: Option<Predicate>,
}

impl CompiledRule {
    fn compile(field: &FieldPath, rule: &Rule) -> Result<Self, ValidationError> {
        let predicate = match rule.where_.as_deref() {
            Some(w) => Some(predicate::parse(w).map_err(|e| {
                ValidationError::new(
                    field.key("where"),
                    Problem::Invalid(format!("where clause {e}")),
                )
            })?),
            None => None,
        };
        Ok(Self {
            rule: rule.clone(),
            predicate,
        })
    }

    /// Does the rule name `kind` and `verb`, and does its `where` clause hold in `ctx`
    /// (`Err` when it cannot be decided there)?
    fn applies(&self, kind: &str, verb: &str, ctx: &RuleContext<'_>) -> Result<bool, Undecidable> {
        if !rule_matches(&self.rule, kind, verb) {
            return Ok(false);
        }
        self.predicate
            .as_ref()
            .map_or(Ok(true), |p| rule_context::evaluate(p, ctx))
    }
}

impl AccessChecker {
    /// Validates each role, expands its templates with `traits` and compiles its selectors.
    /// Errors name the role and field (a regex may only become invalid after expansion).
    pub fn new(
        roles: &[Role],
        traits: &BTreeMap<String, Vec<String>>,
    ) -> Result<Self, ValidationError> {
        let mut compiled = Vec::with_capacity(roles.len());
        for role in roles {
            let context = format!("role {:?}", role.name());
            let build = || -> Result<CompiledRole, ValidationError> {
                role.validate()?;
                Ok(CompiledRole {
                    name: role.name().to_owned(),
                    options: role.spec.options.clone(),
                    allow: Conditions::compile(
                        &FieldPath::new("spec.allow"),
                        &role.spec.allow,
                        traits,
                        &role.version,
                        true,
                    )?,
                    deny: Conditions::compile(
                        &FieldPath::new("spec.deny"),
                        &role.spec.deny,
                        traits,
                        &role.version,
                        false,
                    )?,
                })
            };
            compiled.push(build().map_err(|e| e.with_context(context))?);
        }
        Ok(Self {
            roles: compiled.into(),
        })
    }

    /// The roles' names, in the order given.
    #[must_use]
    pub fn role_names(&self) -> Vec<String> {
        self.roles.iter().map(|r| r.name.clone()).collect()
    }

    /// Allowed logins minus denied ones, sorted and deduplicated: the SSH principals.
    #[must_use]
    pub fn logins(&self) -> Vec<String> {
        let denied: BTreeSet<&String> = self.roles.iter().flat_map(|r| &r.deny.logins).collect();
        let allowed: BTreeSet<&String> = self.roles.iter().flat_map(|r| &r.allow.logins).collect();
        allowed
            .into_iter()
            .filter(|l| !denied.contains(l))
            .cloned()
            .collect()
    }

    /// Windows logins, allowed minus denied.
    #[must_use]
    pub fn windows_desktop_logins(&self) -> Vec<String> {
        let denied: BTreeSet<&String> = self
            .roles
            .iter()
            .flat_map(|r| &r.deny.desktop_logins)
            .collect();
        self.roles
            .iter()
            .flat_map(|r| &r.allow.desktop_logins)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter(|l| !denied.contains(l))
            .cloned()
            .collect()
    }

    /// The longest a certificate of these roles may live: the smallest `max_session_ttl` among
    /// the roles, where a role that sets none counts as [`DEFAULT_MAX_SESSION_TTL`] (Teleport's
    /// rule). With no roles at all, [`DEFAULT_MAX_SESSION_TTL`].
    #[must_use]
    pub fn max_session_ttl(&self) -> std::time::Duration {
        self.roles
            .iter()
            .map(|r| {
                r.options
                    .max_session_ttl
                    .map_or(DEFAULT_MAX_SESSION_TTL, |d| d.as_std())
            })
            .min()
            .unwrap_or(DEFAULT_MAX_SESSION_TTL)
    }

    /// The smallest non-zero `client_idle_timeout` among roles that set one.
    #[must_use]
    pub fn client_idle_timeout(&self) -> Option<std::time::Duration> {
        self.roles
            .iter()
            .filter_map(|r| r.options.client_idle_timeout)
            .filter(|d| !d.is_zero())
            .min()
            .map(|d: Duration| d.as_std())
    }

    /// Agent forwarding: off unless some role turns it on.
    #[must_use]
    pub fn permit_agent_forwarding(&self) -> bool {
        self.roles
            .iter()
            .any(|r| r.options.forward_agent == Some(true))
    }

    /// Port forwarding as one permission, the way Hop's node and proxy grant it: on only when
    /// both directions are (see [`Self::permit_port_forwarding_in`]), so a role that disables
    /// either direction disables both.
    #[must_use]
    pub fn permit_port_forwarding(&self) -> bool {
        self.permit_port_forwarding_in(ForwardDirection::Local)
            && self.permit_port_forwarding_in(ForwardDirection::Remote)
    }

    /// Forwarding in one direction: on by default, off if any role turns it off through
    /// `port_forwarding: false` or `ssh_port_forwarding.<direction>.enabled: false` (or there are
    /// no roles).
    #[must_use]
    pub fn permit_port_forwarding_in(&self, direction: ForwardDirection) -> bool {
        !self.roles.is_empty()
            && self
                .roles
                .iter()
                .all(|r| r.options.permits_port_forwarding(direction))
    }

    /// Per-session MFA: required if any role requires it.
    #[must_use]
    pub fn require_session_mfa(&self) -> bool {
        self.roles
            .iter()
            .any(|r| r.options.require_session_mfa == Some(true))
    }

    /// Disconnect at certificate expiry if any role asks for it.
    #[must_use]
    pub fn disconnect_expired_cert(&self) -> bool {
        self.roles
            .iter()
            .any(|r| r.options.disconnect_expired_cert == Some(true))
    }

    /// Roles this user may request, allowed minus denied.
    #[must_use]
    pub fn requestable_roles(&self) -> Vec<String> {
        let denied: BTreeSet<&str> = self
            .roles
            .iter()
            .flat_map(|r| r.deny.request_roles.iter().map(String::as_str))
            .collect();
        if denied.contains(WILDCARD) {
            return Vec::new();
        }
        self.roles
            .iter()
            .flat_map(|r| &r.allow.request_roles)
            .filter(|n| !denied.contains(n.as_str()))
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// May the user log in as `login` on a node with `node_labels`?
    pub fn check_node_login(
        &self,
        node_labels: &BTreeMap<String, String>,
        login: &str,
    ) -> Result<(), AccessDenied> {
        let what = || format!("login {login:?} on node");
        for r in self.roles.iter() {
            if r.deny.node.matches(node_labels) {
                return Err(r.denied("spec.deny.node_labels", what()));
            }
            if r.deny.logins.contains(login) {
                return Err(r.denied("spec.deny.logins", what()));
            }
        }
        if self
            .roles
            .iter()
            .any(|r| r.allow.logins.contains(login) && r.allow.node.matches(node_labels))
        {
            Ok(())
        } else {
            Err(AccessDenied::NotAllowed { what: what() })
        }
    }

    /// May the user see a node with `node_labels` at all (whatever the login)? A role's allow
    /// labels must match and no role's deny labels may: what `hop ssh` resolves a host name
    /// among, so that a node no role shows answers as one that is not there.
    pub fn may_see_node(&self, node_labels: &BTreeMap<String, String>) -> bool {
        !self.roles.iter().any(|r| r.deny.node.matches(node_labels))
            && self.roles.iter().any(|r| r.allow.node.matches(node_labels))
    }

    /// May the user connect to database `db_name` as `db_user` on a server with `db_labels`?
    /// Names and users compare case-exactly; `*` in a role matches any.
    pub fn check_database(
        &self,
        db_labels: &BTreeMap<String, String>,
        db_name: &str,
        db_user: &str,
    ) -> Result<(), AccessDenied> {
        let what = || format!("database {db_name:?} as user {db_user:?}");
        for r in self.roles.iter() {
            if r.deny.db.matches(db_labels) {
                return Err(r.denied("spec.deny.db_labels", what()));
            }
            if contains_or_wildcard(&r.deny.db_names, db_name) {
                return Err(r.denied("spec.deny.db_names", what()));
            }
            if contains_or_wildcard(&r.deny.db_users, db_user) {
                return Err(r.denied("spec.deny.db_users", what()));
            }
        }
        if self.roles.iter().any(|r| {
            r.allow.db.matches(db_labels)
                && contains_or_wildcard(&r.allow.db_names, db_name)
                && contains_or_wildcard(&r.allow.db_users, db_user)
        }) {
            Ok(())
        } else {
            Err(AccessDenied::NotAllowed { what: what() })
        }
    }

    /// The database names (schemas) that `db_user` may use on a server with `db_labels`, for a
    /// session that switches its database after it connected (MySQL's `USE`):
    /// [`DbNames::allows`] answers as [`Self::check_database`] does for this user and labels.
    #[must_use]
    pub fn database_names(&self, db_labels: &BTreeMap<String, String>, db_user: &str) -> DbNames {
        let shut = self.roles.iter().any(|r| {
            r.deny.db.matches(db_labels) || contains_or_wildcard(&r.deny.db_users, db_user)
        });
        if shut {
            return DbNames::default();
        }
        DbNames {
            allow: self
                .roles
                .iter()
                .filter(|r| {
                    r.allow.db.matches(db_labels)
                        && contains_or_wildcard(&r.allow.db_users, db_user)
                })
                .flat_map(|r| r.allow.db_names.iter().cloned())
                .collect(),
            deny: self
                .roles
                .iter()
                .flat_map(|r| r.deny.db_names.iter().cloned())
                .collect(),
        }
    }

    /// The database users and names the user's roles allow on a server with `db_labels` (allowed
    /// minus exactly denied; `*` means any), or `None` when the labels are not reachable at all.
    /// For listings: the decision on a connection is [`Self::check_database`].
    #[must_use]
    pub fn database_access(
        &self,
        db_labels: &BTreeMap<String, String>,
    ) -> Option<(Vec<String>, Vec<String>)> {
        if self.roles.iter().any(|r| r.deny.db.matches(db_labels)) {
            return None;
        }
        let allowing: Vec<&CompiledRole> = self
            .roles
            .iter()
            .filter(|r| r.allow.db.matches(db_labels))
            .collect();
        if allowing.is_empty() {
            return None;
        }
        let pick = |allow: &dyn Fn(&CompiledRole) -> &BTreeSet<String>,
                    deny: &dyn Fn(&CompiledRole) -> &BTreeSet<String>| {
            let denied: BTreeSet<&String> = self.roles.iter().flat_map(deny).collect();
            allowing
                .iter()
                .flat_map(|r| allow(r))
                .filter(|v| !denied.contains(v))
                .cloned()
                .collect::<BTreeSet<String>>()
                .into_iter()
                .collect::<Vec<_>>()
        };
        let users = pick(&|r| &r.allow.db_users, &|r| &r.deny.db_users);
        let names = pick(&|r| &r.allow.db_names, &|r| &r.deny.db_names);
        Some((users, names))
    }

    /// What the user's sessions of `kind` (`ssh`, `k8s`) need before they start
    /// (`require_session_join` of every role naming that kind; all must be met).
    #[must_use]
    pub fn session_join_requirements(
        &self,
        kind: &str,
    ) -> Vec<crate::moderation::SessionJoinRequirement> {
        let all: Vec<_> = self
            .roles
            .iter()
            .flat_map(|r| r.allow.session_join.iter().cloned())
            .collect();
        crate::moderation::for_kind(&all, kind)
    }

    /// May the user join, in `mode`, a live session of `kind` owned by a user holding
    /// `owner_roles`? Deny policies of the same shape win.
    pub fn check_join_session(
        &self,
        owner_roles: &[String],
        kind: &str,
        mode: &str,
    ) -> Result<(), AccessDenied> {
        let what = || format!("joining a {kind} session as {mode}");
        let matches = |p: &crate::role::JoinSessionPolicy| {
            (p.roles.iter().any(|r| r == WILDCARD)
                || p.roles.iter().any(|r| owner_roles.contains(r)))
                && p.kinds.iter().any(|k| k == WILDCARD || k == kind)
                && p.modes.iter().any(|m| m == mode)
        };
        for r in self.roles.iter() {
            if r.deny.join_sessions.iter().any(matches) {
                return Err(r.denied("spec.deny.join_sessions", what()));
            }
        }
        if self
            .roles
            .iter()
            .any(|r| r.allow.join_sessions.iter().any(matches))
        {
            Ok(())
        } else {
            Err(AccessDenied::NotAllowed { what: what() })
        }
    }

    /// May the user reach an application with `app_labels`?
    pub fn check_app(&self, app_labels: &BTreeMap<String, String>) -> Result<(), AccessDenied> {
        self.check_labels_only(
            app_labels,
            |c| &c.app,
            "spec.deny.app_labels",
            "application",
        )
    }

    /// May the user reach a Kubernetes cluster with `kube_labels`? A deny role whose labels
    /// match denies the whole cluster unless it lists `kubernetes_resources` (then it denies
    /// only those, see [`Self::check_kube_request`]).
    pub fn check_kubernetes_cluster(
        &self,
        kube_labels: &BTreeMap<String, String>,
    ) -> Result<(), AccessDenied> {
        let what = || "kubernetes cluster".to_owned();
        for r in self.roles.iter() {
            if r.deny.kube_resources.is_empty() && r.deny.kube.matches(kube_labels) {
                return Err(r.denied("spec.deny.kubernetes_labels", what()));
            }
        }
        if self.roles.iter().any(|r| r.allow.kube.matches(kube_labels)) {
            Ok(())
        } else {
            Err(AccessDenied::NotAllowed { what: what() })
        }
    }

    /// Each role's Kubernetes conditions, for `kube_access`.
    pub(crate) fn kube_roles(&self) -> impl Iterator<Item = KubeRole<'_>> {
        self.roles.iter().map(|r| KubeRole {
            name: &r.name,
            allow: KubeSide::of(&r.allow),
            deny: KubeSide::of(&r.deny),
        })
    }

    /// Kubernetes groups and users to impersonate on a cluster with `kube_labels`: the union
    /// over roles whose allow labels match, minus every role's deny lists. Call
    /// [`Self::check_kubernetes_cluster`] first.
    #[must_use]
    pub fn kubernetes_principals(
        &self,
        kube_labels: &BTreeMap<String, String>,
    ) -> (Vec<String>, Vec<String>) {
        let matching = || {
            self.roles
                .iter()
                .filter(|r| r.allow.kube.matches(kube_labels))
        };
        let denied_groups: BTreeSet<&String> = self
            .roles
            .iter()
            .flat_map(|r| &r.deny.kube_groups)
            .collect();
        let denied_users: BTreeSet<&String> =
            self.roles.iter().flat_map(|r| &r.deny.kube_users).collect();
        let groups = matching()
            .flat_map(|r| &r.allow.kube_groups)
            .filter(|g| !denied_groups.contains(g))
            .cloned()
            .collect::<BTreeSet<_>>();
        let users = matching()
            .flat_map(|r| &r.allow.kube_users)
            .filter(|u| !denied_users.contains(u))
            .cloned()
            .collect::<BTreeSet<_>>();
        (groups.into_iter().collect(), users.into_iter().collect())
    }

    /// May the user log in as Windows user `login` on a desktop with `desktop_labels`?
    pub fn check_windows_desktop_login(
        &self,
        desktop_labels: &BTreeMap<String, String>,
        login: &str,
    ) -> Result<(), AccessDenied> {
        let what = || format!("windows login {login:?} on desktop");
        for r in self.roles.iter() {
            if r.deny.desktop.matches(desktop_labels) {
                return Err(r.denied("spec.deny.windows_desktop_labels", what()));
            }
            if r.deny.desktop_logins.contains(login) {
                return Err(r.denied("spec.deny.windows_desktop_logins", what()));
            }
        }
        if self.roles.iter().any(|r| {
            r.allow.desktop_logins.contains(login) && r.allow.desktop.matches(desktop_labels)
        }) {
            Ok(())
        } else {
            Err(AccessDenied::NotAllowed { what: what() })
        }
    }

    /// May the user perform `verb` (`list`, `read`, `create`, `update`, `delete`) on *every*
    /// resource of `resource_kind` through the admin API? A rule's `*` matches every kind or
    /// verb. Nothing is known of any one resource, so a rule whose `where` clause names one
    /// (a session's participants) cannot be decided: in allow it grants nothing, in deny it
    /// denies (fail closed). Ask [`Self::check_rule_in`] about one resource.
    pub fn check_rule(&self, resource_kind: &str, verb: &str) -> Result<(), AccessDenied> {
        self.check_rule_in(resource_kind, verb, &RuleContext::default())
    }

    /// May the user perform `verb` on the one resource of `resource_kind` that `ctx` describes?
    /// Deny beats allow; a `where` clause that cannot be decided in `ctx` (a field it does not
    /// provide, a function Hop does not know) makes an allow rule grant nothing and a deny rule
    /// deny.
    pub fn check_rule_in(
        &self,
        resource_kind: &str,
        verb: &str,
        ctx: &RuleContext<'_>,
    ) -> Result<(), AccessDenied> {
        let what = || format!("{verb} on {resource_kind}");
        for r in self.roles.iter() {
            if r.deny
                .rules
                .iter()
                .any(|rule| rule.applies(resource_kind, verb, ctx) != Ok(false))
            {
                return Err(r.denied("spec.deny.rules", what()));
            }
        }
        if self.roles.iter().any(|r| {
            r.allow
                .rules
                .iter()
                .any(|rule| rule.applies(resource_kind, verb, ctx) == Ok(true))
        }) {
            Ok(())
        } else {
            Err(AccessDenied::NotAllowed { what: what() })
        }
    }

    /// Does some allow rule name `verb` on `resource_kind`, with or without a `where` clause?
    /// A listing for a user without [`Self::check_rule`] is then filtered item by item with
    /// [`Self::check_rule_in`] rather than refused.
    #[must_use]
    pub fn allows_some(&self, resource_kind: &str, verb: &str) -> bool {
        self.roles.iter().any(|r| {
            r.allow
                .rules
                .iter()
                .any(|rule| rule_matches(&rule.rule, resource_kind, verb))
        })
    }

    fn check_labels_only(
        &self,
        target: &BTreeMap<String, String>,
        pick: impl Fn(&Conditions) -> &Selector,
        deny_field: &'static str,
        noun: &str,
    ) -> Result<(), AccessDenied> {
        let what = || noun.to_owned();
        for r in self.roles.iter() {
            if pick(&r.deny).matches(target) {
                return Err(r.denied(deny_field, what()));
            }
        }
        if self.roles.iter().any(|r| pick(&r.allow).matches(target)) {
            Ok(())
        } else {
            Err(AccessDenied::NotAllowed { what: what() })
        }
    }
}

/// One role's Kubernetes conditions (both sides), borrowed for `kube_access`.
pub(crate) struct KubeRole<'a> {
    pub(crate) name: &'a str,
    pub(crate) allow: KubeSide<'a>,
    pub(crate) deny: KubeSide<'a>,
}

/// One side of a role's Kubernetes conditions, after template expansion.
pub(crate) struct KubeSide<'a> {
    pub(crate) labels: &'a Selector,
    pub(crate) users: &'a BTreeSet<String>,
    pub(crate) groups: &'a BTreeSet<String>,
    pub(crate) resources: &'a KubeRules,
}

impl<'a> KubeSide<'a> {
    fn of(c: &'a Conditions) -> Self {
        Self {
            labels: &c.kube,
            users: &c.kube_users,
            groups: &c.kube_groups,
            resources: &c.kube_resources,
        }
    }
}

impl CompiledRole {
    fn denied(&self, field: &'static str, what: String) -> AccessDenied {
        AccessDenied::DeniedByRole {
            role: self.name.clone(),
            field,
            what,
        }
    }
}
