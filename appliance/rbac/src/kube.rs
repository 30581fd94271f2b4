//! Kubernetes resources in roles: the `kubernetes_resources` entries of `allow` and `deny`, and
//! what a Kubernetes request is asked about.
//!
//! This module owns [`KubernetesResource`] (as written in YAML), its validation per role version
//! (v5/v6: pods only; v7: singular kinds such as `pod` or `kube_role`; v8: plural resource names
//! with `api_group`), and its compiled form, `KubeRules`, which answers whether one rule
//! matches a request ([`KubeTarget`]). The decisions across a user's roles (deny wins,
//! impersonation) are `kube_access`'s; this module never looks at more than one rule at a time.

use serde::{Deserialize, Serialize};

use crate::labels::{Pattern, WILDCARD};
use crate::validation::{FieldPath, Problem, ValidationError, invalid};

/// One `kubernetes_resources` entry: which objects of a Kubernetes cluster, and which verbs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesResource {
    /// v7: a singular kind (`pod`, `secret`, `namespace`, `kube_role`, …) or `*`; v8: a plural
    /// resource name (`pods`, `deployments`, `widgets`) or `*`; v5/v6: `pod`.
    pub kind: String,
    /// Namespace pattern (`*`, a glob, or `^regex$`); ignored for cluster-scoped kinds in v7.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Name pattern (`*`, a glob, or `^regex$`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`,
    /// `exec`, `portforward`, or `*` alone. Required from v7 on; v5/v6 roles have none (all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verbs: Vec<String>,
    /// v8 only: the API group pattern (`""` for the core group, `apps`, `*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_group: Option<String>,
}

/// What one Kubernetes request (or one item of a listing) is, for a role to decide on.
///
/// `resource` is the plural resource name from the request path (`pods`; the parent resource
/// of a subresource, so `pods` for `pods/log`); `""` for a non-resource request (`/version`,
/// discovery), which every user admitted to the cluster may make. `verb` is the Kubernetes
/// verb, except that exec and attach are `exec` and port-forward is `portforward`, as roles
/// name them (`hop_protocols::kube::request::KubeRequest::rbac_verb`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KubeTarget<'a> {
    /// `""` for the core group.
    pub api_group: &'a str,
    /// Plural resource name; `""` for a non-resource request.
    pub resource: &'a str,
    /// `None` for cluster-scoped objects, and for a collection across all namespaces.
    pub namespace: Option<&'a str>,
    /// `None` for a collection (or a create whose name is in the body).
    pub name: Option<&'a str>,
    /// See the type's documentation.
    pub verb: &'a str,
}

/// Verbs a `kubernetes_resources` entry may name, besides `*`.
pub const KUBE_VERBS: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "exec",
    "portforward",
];

/// Role v7's kinds: (kind, API group, plural resource).
const V7_KINDS: &[(&str, &str, &str)] = &[
    ("pod", "", "pods"),
    ("secret", "", "secrets"),
    ("configmap", "", "configmaps"),
    ("namespace", "", "namespaces"),
    ("service", "", "services"),
    ("serviceaccount", "", "serviceaccounts"),
    ("kube_node", "", "nodes"),
    ("persistentvolume", "", "persistentvolumes"),
    ("persistentvolumeclaim", "", "persistentvolumeclaims"),
    ("deployment", "apps", "deployments"),
    ("replicaset", "apps", "replicasets"),
    ("statefulset", "apps", "statefulsets"),
    ("daemonset", "apps", "daemonsets"),
    ("clusterrole", RBAC_GROUP, "clusterroles"),
    ("kube_role", RBAC_GROUP, "roles"),
    ("clusterrolebinding", RBAC_GROUP, "clusterrolebindings"),
    ("rolebinding", RBAC_GROUP, "rolebindings"),
    ("cronjob", "batch", "cronjobs"),
    ("job", "batch", "jobs"),
    (
        "certificatesigningrequest",
        "certificates.k8s.io",
        "certificatesigningrequests",
    ),
    ("ingress", "networking.k8s.io", "ingresses"),
];

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// Resources of the core group (`api_group: ""` in v8).
const CORE_RESOURCES: &[&str] = &[
    "bindings",
    "componentstatuses",
    "configmaps",
    "endpoints",
    "events",
    "limitranges",
    "namespaces",
    "nodes",
    "persistentvolumeclaims",
    "persistentvolumes",
    "pods",
    "podtemplates",
    "replicationcontrollers",
    "resourcequotas",
    "secrets",
    "serviceaccounts",
    "services",
];

/// Built-in cluster-scoped resources: (API group, plural). A resource not listed here is
/// treated as possibly namespaced.
const CLUSTER_SCOPED: &[(&str, &str)] = &[
    ("", "namespaces"),
    ("", "nodes"),
    ("", "persistentvolumes"),
    ("", "componentstatuses"),
    (RBAC_GROUP, "clusterroles"),
    (RBAC_GROUP, "clusterrolebindings"),
    ("certificates.k8s.io", "certificatesigningrequests"),
    ("apiextensions.k8s.io", "customresourcedefinitions"),
    ("apiregistration.k8s.io", "apiservices"),
    ("storage.k8s.io", "storageclasses"),
    ("storage.k8s.io", "csidrivers"),
    ("storage.k8s.io", "csinodes"),
    ("storage.k8s.io", "volumeattachments"),
    ("scheduling.k8s.io", "priorityclasses"),
    ("node.k8s.io", "runtimeclasses"),
    ("networking.k8s.io", "ingressclasses"),
    (
        "admissionregistration.k8s.io",
        "mutatingwebhookconfigurations",
    ),
    (
        "admissionregistration.k8s.io",
        "validatingwebhookconfigurations",
    ),
    (
        "admissionregistration.k8s.io",
        "validatingadmissionpolicies",
    ),
    (
        "admissionregistration.k8s.io",
        "validatingadmissionpolicybindings",
    ),
    ("flowcontrol.apiserver.k8s.io", "flowschemas"),
    (
        "flowcontrol.apiserver.k8s.io",
        "prioritylevelconfigurations",
    ),
    ("authentication.k8s.io", "tokenreviews"),
    ("authentication.k8s.io", "selfsubjectreviews"),
    ("authorization.k8s.io", "subjectaccessreviews"),
    ("authorization.k8s.io", "selfsubjectaccessreviews"),
    ("authorization.k8s.io", "selfsubjectrulesreviews"),
];

/// Requests that only ask the API server about the caller itself (`kubectl auth whoami`,
/// `kubectl auth can-i`): allowed to everyone admitted to the cluster, like discovery.
const SELF_REVIEWS: &[(&str, &str)] = &[
    ("authentication.k8s.io", "selfsubjectreviews"),
    ("authorization.k8s.io", "selfsubjectaccessreviews"),
    ("authorization.k8s.io", "selfsubjectrulesreviews"),
];

/// Whether a built-in resource is cluster-scoped.
#[must_use]
pub fn is_cluster_scoped(api_group: &str, resource: &str) -> bool {
    CLUSTER_SCOPED.contains(&(api_group, resource))
}

/// Whether the target needs no `kubernetes_resources` grant: a non-resource request, or a
/// review of the caller's own identity or permissions (`create` only).
#[must_use]
pub fn is_always_allowed(target: &KubeTarget<'_>) -> bool {
    target.resource.is_empty()
        || (target.verb == "create" && SELF_REVIEWS.contains(&(target.api_group, target.resource)))
}

/// Role version families, as far as `kubernetes_resources` is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KubeSchema {
    /// v5, v6: entries name pods only, and other resources are not restricted.
    PodsOnly,
    /// v7: singular kinds.
    V7,
    /// v8: plural kinds with `api_group`.
    V8,
}

impl KubeSchema {
    pub(crate) fn of_version(version: &str) -> Self {
        match version {
            "v5" | "v6" => Self::PodsOnly,
            "v7" => Self::V7,
            _ => Self::V8,
        }
    }
}

/// Checks every entry of `resources` (at `field`) for a role of `version`.
pub(crate) fn validate_resources(
    field: &FieldPath,
    version: &str,
    resources: &[KubernetesResource],
) -> Result<(), ValidationError> {
    let schema = KubeSchema::of_version(version);
    for (i, r) in resources.iter().enumerate() {
        validate_one(&field.index(i), schema, version, r)?;
    }
    Ok(())
}

fn bad(field: &FieldPath, why: impl Into<String>) -> ValidationError {
    invalid(field, Problem::Invalid(why.into()))
}

fn validate_one(
    at: &FieldPath,
    schema: KubeSchema,
    version: &str,
    r: &KubernetesResource,
) -> Result<(), ValidationError> {
    if r.kind.is_empty() {
        return Err(invalid(&at.key("kind"), Problem::Required));
    }
    let scoped = match schema {
        KubeSchema::PodsOnly => validate_kind_v6(at, version, r)?,
        KubeSchema::V7 => validate_kind_v7(at, r)?,
        KubeSchema::V8 => validate_kind_v8(at, r)?,
    };
    validate_verbs(&at.key("verbs"), schema, &r.verbs)?;
    if r.name.is_empty() {
        return Err(bad(&at.key("name"), "is required (use '*' for every name)"));
    }
    for (key, value) in [("name", &r.name), ("namespace", &r.namespace)] {
        if value.contains("{{") {
            return Err(bad(
                &at.key(key),
                "trait templates are not supported in kubernetes_resources",
            ));
        }
        Pattern::compile(value).map_err(|p| invalid(&at.key(key), p))?;
    }
    if scoped == Scope::Namespaced && r.namespace.is_empty() {
        return Err(bad(
            &at.key("namespace"),
            format!(
                "is required for kind {:?} (use '*' for every namespace)",
                r.kind
            ),
        ));
    }
    Ok(())
}

/// What validation knows of a kind's scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Namespaced,
    ClusterOrUnknown,
}

fn validate_kind_v6(
    at: &FieldPath,
    version: &str,
    r: &KubernetesResource,
) -> Result<Scope, ValidationError> {
    if r.kind != "pod" {
        return Err(bad(
            &at.key("kind"),
            format!(
                "role {version} supports only kind \"pod\" (found {:?}); use version v7 or v8 for other kinds",
                r.kind
            ),
        ));
    }
    if r.api_group.is_some() {
        return Err(bad(&at.key("api_group"), "needs role version v8"));
    }
    Ok(Scope::Namespaced)
}

fn validate_kind_v7(at: &FieldPath, r: &KubernetesResource) -> Result<Scope, ValidationError> {
    if r.api_group.is_some() {
        return Err(bad(
            &at.key("api_group"),
            "needs role version v8 (v7 kinds imply their group)",
        ));
    }
    if r.kind == WILDCARD {
        // Without a namespace, `*` reaches cluster-scoped objects only.
        return Ok(Scope::ClusterOrUnknown);
    }
    let Some((_, group, plural)) = V7_KINDS.iter().find(|(k, _, _)| *k == r.kind) else {
        let hint = V7_KINDS
            .iter()
            .find(|(_, _, p)| *p == r.kind)
            .map(|(k, _, _)| format!(" (did you mean {k:?}? v8 roles use plural names)"))
            .unwrap_or_default();
        return Err(bad(
            &at.key("kind"),
            format!(
                "unknown kind {:?} for role v7{hint}; expected '*' or one of {}",
                r.kind,
                V7_KINDS
                    .iter()
                    .map(|(k, _, _)| *k)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    };
    Ok(if is_cluster_scoped(group, plural) {
        Scope::ClusterOrUnknown
    } else {
        Scope::Namespaced
    })
}

fn validate_kind_v8(at: &FieldPath, r: &KubernetesResource) -> Result<Scope, ValidationError> {
    let kind = r.kind.as_str();
    let group = r.api_group.as_deref().unwrap_or("");
    if let Some((_, _, plural)) = V7_KINDS.iter().find(|(k, _, _)| *k == kind) {
        return Err(bad(
            &at.key("kind"),
            format!("{kind:?} is a role v7 kind: role v8 uses plural resource names ({plural:?})"),
        ));
    }
    let valid_kind = kind == WILDCARD
        || (!kind.is_empty()
            && kind
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'));
    if !valid_kind {
        return Err(bad(
            &at.key("kind"),
            format!("{kind:?} is not a plural resource name (lower-case, like \"pods\") or '*'"),
        ));
    }
    if group.is_empty() && !CORE_RESOURCES.contains(&kind) {
        return Err(bad(
            &at.key("api_group"),
            format!(
                "is required for kind {kind:?}, which is not a core resource (use '*' for every group)"
            ),
        ));
    }
    if group.contains("{{") {
        return Err(bad(
            &at.key("api_group"),
            "trait templates are not supported in kubernetes_resources",
        ));
    }
    Pattern::compile(group).map_err(|p| invalid(&at.key("api_group"), p))?;
    let namespaced_builtin =
        CORE_RESOURCES.contains(&kind) && group.is_empty() && !is_cluster_scoped("", kind);
    Ok(if namespaced_builtin {
        Scope::Namespaced
    } else {
        Scope::ClusterOrUnknown
    })
}

fn validate_verbs(
    at: &FieldPath,
    schema: KubeSchema,
    verbs: &[String],
) -> Result<(), ValidationError> {
    if verbs.is_empty() && schema != KubeSchema::PodsOnly {
        return Err(bad(at, "is required (use ['*'] for every verb)"));
    }
    for (i, v) in verbs.iter().enumerate() {
        if v == WILDCARD {
            if verbs.len() > 1 {
                return Err(bad(&at.index(i), "'*' cannot be listed with other verbs"));
            }
        } else if !KUBE_VERBS.contains(&v.as_str()) {
            return Err(bad(
                &at.index(i),
                format!(
                    "unknown verb {v:?}, expected '*' or one of {}",
                    KUBE_VERBS.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// One side (allow or deny) of one role's `kubernetes_resources`, compiled.
#[derive(Debug, Clone, Default)]
pub(crate) struct KubeRules {
    /// v5/v6: only pods are governed; other resources pass this side untouched.
    pods_only: bool,
    rules: Vec<KubeRule>,
}

#[derive(Debug, Clone)]
struct KubeRule {
    /// `None`: any resource.
    resource: Option<String>,
    group: Pattern,
    namespace: Pattern,
    name: Pattern,
    /// Empty: every verb.
    verbs: Vec<String>,
    /// v7 `kind: namespace`: the namespace object `name`, and everything inside it.
    namespace_rule: bool,
    /// v7: the namespace pattern does not apply to cluster-scoped objects.
    ignore_namespace_when_cluster_scoped: bool,
}

/// How a field of the request is known.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Known<'a> {
    /// Exactly this value (`None`: absent, as for a cluster-scoped object's namespace).
    Exactly(Option<&'a str>),
    /// Not known: a collection across every namespace, or every name.
    Any,
}

/// What a rule is asked about one request: concrete fields, or unknown ones.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Query<'a> {
    pub(crate) api_group: &'a str,
    pub(crate) resource: &'a str,
    pub(crate) namespace: Known<'a>,
    pub(crate) name: Known<'a>,
    pub(crate) verb: &'a str,
    /// Whether the rule must hold for every value of the unknown fields (allow) rather than
    /// for some (deny).
    pub(crate) for_all: bool,
}

impl Pattern {
    fn matches_known(&self, value: Known<'_>, for_all: bool) -> bool {
        match value {
            Known::Exactly(v) => self.matches(v.unwrap_or("")),
            Known::Any => !for_all || matches!(self, Self::Any),
        }
    }
}

impl KubeRules {
    /// Compiles one side of a role of `version`; `defaults` applies the allow side's default
    /// (every resource) when the role lists none. Patterns were checked by validation; one that
    /// fails here is reported against `field`.
    pub(crate) fn compile(
        field: &FieldPath,
        version: &str,
        resources: &[KubernetesResource],
        defaults: bool,
    ) -> Result<Self, ValidationError> {
        let schema = KubeSchema::of_version(version);
        let default;
        let resources = if resources.is_empty() && defaults {
            default = [KubernetesResource {
                kind: WILDCARD.into(),
                namespace: WILDCARD.into(),
                name: WILDCARD.into(),
                verbs: vec![WILDCARD.into()],
                api_group: (schema == KubeSchema::V8).then(|| WILDCARD.into()),
            }];
            &default[..]
        } else {
            resources
        };
        let rules = resources
            .iter()
            .enumerate()
            .map(|(i, r)| KubeRule::compile(&field.index(i), schema, r))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            pods_only: schema == KubeSchema::PodsOnly,
            rules,
        })
    }

    /// Whether this side says nothing about the query's resource (v5/v6 roles govern pods
    /// only).
    pub(crate) fn ignores(&self, q: &Query<'_>) -> bool {
        self.pods_only && !(q.api_group.is_empty() && q.resource == "pods")
    }

    /// Does some rule match the query (for every value of its unknown fields if
    /// `q.for_all`, for some value otherwise)?
    pub(crate) fn any_matches(&self, q: &Query<'_>, allow_side: bool) -> bool {
        self.rules.iter().any(|r| r.matches(q, allow_side))
    }

    /// Whether the side has no rules at all.
    pub(crate) fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

impl KubeRule {
    fn compile(
        at: &FieldPath,
        schema: KubeSchema,
        r: &KubernetesResource,
    ) -> Result<Self, ValidationError> {
        let pattern =
            |key: &str, p: &str| Pattern::compile(p).map_err(|e| invalid(&at.key(key), e));
        let api_group = r.api_group.as_deref().unwrap_or("");
        let (resource, group) = match (schema, r.kind.as_str()) {
            (KubeSchema::V8, WILDCARD) => (None, api_group),
            (KubeSchema::V8, kind) => (Some(kind.to_owned()), api_group),
            (_, WILDCARD) => (None, WILDCARD),
            (_, kind) => {
                let (_, group, plural) = V7_KINDS
                    .iter()
                    .find(|(k, _, _)| *k == kind)
                    .ok_or_else(|| bad(&at.key("kind"), format!("unknown kind {kind:?}")))?;
                (Some((*plural).to_owned()), *group)
            }
        };
        let every_verb = r.verbs.is_empty() || r.verbs.iter().any(|v| v == WILDCARD);
        Ok(Self {
            resource,
            group: pattern("api_group", group)?,
            namespace: pattern("namespace", &r.namespace)?,
            name: pattern("name", &r.name)?,
            verbs: if every_verb {
                Vec::new()
            } else {
                r.verbs.clone()
            },
            namespace_rule: schema != KubeSchema::V8 && r.kind == "namespace",
            ignore_namespace_when_cluster_scoped: schema != KubeSchema::V8,
        })
    }

    fn verb_ok(&self, verb: &str) -> bool {
        self.verbs.is_empty() || self.verbs.iter().any(|v| v == verb)
    }

    fn kind_ok(&self, q: &Query<'_>) -> bool {
        self.resource.as_deref().is_none_or(|r| r == q.resource) && self.group.matches(q.api_group)
    }

    fn matches(&self, q: &Query<'_>, allow_side: bool) -> bool {
        if !self.verb_ok(q.verb) {
            return false;
        }
        let namespace_object = q.api_group.is_empty() && q.resource == "namespaces";
        if self.namespace_rule {
            return self.matches_as_namespace_rule(q, namespace_object);
        }
        if allow_side && namespace_object && self.grants_namespace_visibility(q) {
            return true;
        }
        if !self.kind_ok(q) {
            return false;
        }
        if !self.name.matches_known(q.name, q.for_all) {
            return false;
        }
        let cluster_scoped = is_cluster_scoped(q.api_group, q.resource);
        // v7 `kind: '*'` reaches Namespace objects only through its namespace pattern (as
        // Teleport's v7-to-v8 conversion has it); named cluster-scoped kinds ignore it.
        let star_on_namespaces = self.resource.is_none() && namespace_object;
        if cluster_scoped && self.ignore_namespace_when_cluster_scoped && !star_on_namespaces {
            return true;
        }
        let namespace = match (cluster_scoped, q.namespace) {
            (true, _) => Known::Exactly(None),
            (false, ns) => ns,
        };
        self.namespace.matches_known(namespace, q.for_all)
    }

    /// v7 `kind: namespace, name: N`: the Namespace object `N` and everything inside `N`.
    fn matches_as_namespace_rule(&self, q: &Query<'_>, namespace_object: bool) -> bool {
        if namespace_object {
            return self.name.matches_known(q.name, q.for_all);
        }
        if is_cluster_scoped(q.api_group, q.resource) {
            return false;
        }
        match q.namespace {
            Known::Exactly(None) => false,
            ns => self.name.matches_known(ns, q.for_all),
        }
    }

    /// A rule for objects inside namespaces lets its holder read the Namespace objects it
    /// names (`get`, `list`, `watch`), so `kubectl get namespaces` shows them.
    fn grants_namespace_visibility(&self, q: &Query<'_>) -> bool {
        let reading = matches!(q.verb, "get" | "list" | "watch");
        let names_namespaces = !matches!(self.namespace, Pattern::Literal(ref s) if s.is_empty());
        let namespaced_kind = self
            .resource
            .as_deref()
            .is_none_or(|r| !CLUSTER_SCOPED.iter().any(|(_, p)| *p == r));
        reading
            && names_namespaces
            && namespaced_kind
            && self.namespace.matches_known(q.name, q.for_all)
    }
}

#[cfg(test)]
#[path = "kube_tests.rs"]
mod tests;
