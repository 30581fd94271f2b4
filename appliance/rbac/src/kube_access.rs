//! Kubernetes decisions across a user's roles: which Kubernetes user and groups a request runs
//! as, whether a request may reach the API server, and whether a listing must be filtered.
//!
//! This module owns the four Kubernetes methods of [`AccessChecker`] and [`KubeImpersonation`].
//! Semantics are Teleport's: a role counts on a cluster when its `kubernetes_labels` match the
//! cluster's; deny beats allow; a deny role with `kubernetes_resources` denies only those
//! resources (without, its labels deny the whole cluster); an allow role without
//! `kubernetes_resources` allows every resource. Rules of one role are in `kube`.

use std::collections::{BTreeMap, BTreeSet};

use crate::checker::{AccessChecker, AccessDenied, KubeRole};
use crate::kube::{Known, KubeTarget, Query, is_always_allowed, is_cluster_scoped};

/// Who a Kubernetes request runs as on the API server (`Impersonate-User`, `Impersonate-Group`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubeImpersonation {
    /// Exactly one user.
    pub user: String,
    /// The groups, sorted, without duplicates.
    pub groups: Vec<String>,
}

/// The namespace of a query: as given, or for a collection across namespaces, unknown.
fn namespace_known<'a>(api_group: &str, resource: &str, namespace: Option<&'a str>) -> Known<'a> {
    match namespace {
        Some(ns) => Known::Exactly(Some(ns)),
        None if is_cluster_scoped(api_group, resource) => Known::Exactly(None),
        None => Known::Any,
    }
}

fn name_known(name: Option<&str>) -> Known<'_> {
    name.map_or(Known::Any, |n| Known::Exactly(Some(n)))
}

fn describe(t: &KubeTarget<'_>) -> String {
    let kind = if t.api_group.is_empty() {
        t.resource.to_owned()
    } else {
        format!("{}.{}", t.resource, t.api_group)
    };
    let mut out = format!("Kubernetes {} on {kind}", t.verb);
    if let Some(name) = t.name {
        out.push_str(&format!(" {name:?}"));
    }
    match t.namespace {
        Some(ns) => out.push_str(&format!(" in namespace {ns:?}")),
        None if !is_cluster_scoped(t.api_group, t.resource) => {
            out.push_str(" in every namespace");
        }
        None => {}
    }
    out
}

impl AccessChecker {
    /// The Kubernetes user and groups a request of `hop_user` runs as on a cluster with
    /// `cluster_labels`, given what the client asked for (`kubectl --as`, `--as-group`).
    ///
    /// Allowed users and groups are the templated `kubernetes_users` / `kubernetes_groups` of
    /// the roles whose labels match, minus every role's denied ones. With no user allowed but
    /// some group, the user is `hop_user`; with neither, access is denied. A requested user or
    /// group must be allowed; with several users allowed, the client must choose one.
    pub fn kube_impersonation(
        &self,
        cluster_labels: &BTreeMap<String, String>,
        hop_user: &str,
        requested_user: Option<&str>,
        requested_groups: &[String],
    ) -> Result<KubeImpersonation, AccessDenied> {
        self.check_kubernetes_cluster(cluster_labels)?;
        let (groups, users) = self.kubernetes_principals(cluster_labels);
        if users.is_empty() && groups.is_empty() {
            return Err(AccessDenied::NotAllowed {
                what: "a Kubernetes user or group on this cluster \
                       (no matching role sets kubernetes_users or kubernetes_groups)"
                    .into(),
            });
        }
        let user = self.pick_kube_user(&users, hop_user, requested_user)?;
        let groups = if requested_groups.is_empty() {
            groups
        } else {
            self.pick_kube_groups(&groups, requested_groups)?
        };
        Ok(KubeImpersonation { user, groups })
    }

    fn pick_kube_user(
        &self,
        users: &[String],
        hop_user: &str,
        requested: Option<&str>,
    ) -> Result<String, AccessDenied> {
        let user = match (requested, users) {
            (Some(u), _) if users.iter().any(|a| a == u) => u.to_owned(),
            (Some(u), []) if u == hop_user => u.to_owned(),
            (Some(u), _) => {
                return Err(self.kube_principal_denied(
                    |r| r.deny.users,
                    "spec.deny.kubernetes_users",
                    u,
                    format!("impersonating Kubernetes user {u:?} (kubectl --as)"),
                ));
            }
            (None, []) => hop_user.to_owned(),
            (None, [one]) => one.clone(),
            (None, many) => {
                return Err(AccessDenied::NotAllowed {
                    what: format!(
                        "choosing among several Kubernetes users ({}) by itself: \
                         pick one with kubectl --as",
                        many.join(", ")
                    ),
                });
            }
        };
        if self.kube_roles().any(|r| r.deny.users.contains(&user)) {
            return Err(self.kube_principal_denied(
                |r| r.deny.users,
                "spec.deny.kubernetes_users",
                &user,
                format!("impersonating Kubernetes user {user:?}"),
            ));
        }
        Ok(user)
    }

    fn pick_kube_groups(
        &self,
        allowed: &[String],
        requested: &[String],
    ) -> Result<Vec<String>, AccessDenied> {
        let mut out = BTreeSet::new();
        for g in requested {
            if !allowed.contains(g) {
                return Err(self.kube_principal_denied(
                    |r| r.deny.groups,
                    "spec.deny.kubernetes_groups",
                    g,
                    format!("impersonating Kubernetes group {g:?} (kubectl --as-group)"),
                ));
            }
            out.insert(g.clone());
        }
        Ok(out.into_iter().collect())
    }

    /// The role that denies `value` through `pick`, or "no role allows".
    fn kube_principal_denied<'s>(
        &'s self,
        pick: impl Fn(&KubeRole<'s>) -> &'s BTreeSet<String>,
        field: &'static str,
        value: &str,
        what: String,
    ) -> AccessDenied {
        match self.kube_roles().find(|r| pick(r).contains(value)) {
            Some(r) => AccessDenied::DeniedByRole {
                role: r.name.to_owned(),
                field,
                what,
            },
            None => AccessDenied::NotAllowed { what },
        }
    }

    /// May the request described by `target` reach the API server of a cluster with
    /// `cluster_labels`?
    ///
    /// A `list` or `watch` of a collection passes when some allow rule may match some of its
    /// items and no deny rule covers them all (ask [`Self::kube_needs_filter`] whether the
    /// response must then be filtered). Any other request passes when no deny rule may match
    /// it and some allow rule matches it whole (a `create` whose name is in the body needs a
    /// rule for every name). Non-resource requests and self reviews pass once the cluster does.
    pub fn check_kube_request(
        &self,
        cluster_labels: &BTreeMap<String, String>,
        target: &KubeTarget<'_>,
    ) -> Result<(), AccessDenied> {
        self.check_kubernetes_cluster(cluster_labels)?;
        if is_always_allowed(target) {
            return Ok(());
        }
        let collection = target.name.is_none() && matches!(target.verb, "list" | "watch");
        let base = Query {
            api_group: target.api_group,
            resource: target.resource,
            namespace: namespace_known(target.api_group, target.resource, target.namespace),
            name: name_known(target.name),
            verb: target.verb,
            for_all: false,
        };
        // A collection is refused only when a deny rule covers all of it; anything else as
        // soon as a deny rule may match.
        let deny_query = Query {
            for_all: collection,
            ..base
        };
        let allow_query = Query {
            for_all: !collection,
            ..base
        };
        if let Some(role) = self.kube_denying_role(cluster_labels, &deny_query) {
            return Err(AccessDenied::DeniedByRole {
                role: role.to_owned(),
                field: "spec.deny.kubernetes_resources",
                what: describe(target),
            });
        }
        if self.kube_allows(cluster_labels, &allow_query) {
            Ok(())
        } else {
            Err(AccessDenied::NotAllowed {
                what: describe(target),
            })
        }
    }

    /// Whether a `list` or `watch` of `resource` in `namespace` (`None`: every namespace, or a
    /// cluster-scoped resource) may show some items but not all, so that its response must be
    /// filtered item by item with [`Self::kube_item_visible`]. Asked for both verbs (a verb no
    /// role grants counts as no filter: [`Self::check_kube_request`] refuses it). When in
    /// doubt, `true`.
    #[must_use]
    pub fn kube_needs_filter(
        &self,
        cluster_labels: &BTreeMap<String, String>,
        api_group: &str,
        resource: &str,
        namespace: Option<&str>,
    ) -> bool {
        if self.check_kubernetes_cluster(cluster_labels).is_err() {
            return true;
        }
        ["list", "watch"].iter().any(|verb| {
            let target = KubeTarget {
                api_group,
                resource,
                namespace,
                name: None,
                verb,
            };
            if is_always_allowed(&target) {
                return false;
            }
            let q = Query {
                api_group,
                resource,
                namespace: namespace_known(api_group, resource, namespace),
                name: Known::Any,
                verb,
                for_all: false,
            };
            // A verb no rule grants is refused before any response: nothing to filter.
            if !self.kube_allows(cluster_labels, &q) {
                return false;
            }
            let all = Query { for_all: true, ..q };
            self.kube_denying_role(cluster_labels, &q).is_some()
                || !self.kube_allows(cluster_labels, &all)
        })
    }

    /// Whether one item of a listing (`target.verb` `list` or `watch`, with the item's own
    /// namespace and name) may be shown.
    #[must_use]
    pub fn kube_item_visible(
        &self,
        cluster_labels: &BTreeMap<String, String>,
        target: &KubeTarget<'_>,
    ) -> bool {
        if self.check_kubernetes_cluster(cluster_labels).is_err() {
            return false;
        }
        if is_always_allowed(target) {
            return true;
        }
        let q = Query {
            api_group: target.api_group,
            resource: target.resource,
            namespace: Known::Exactly(target.namespace),
            name: Known::Exactly(target.name),
            verb: target.verb,
            for_all: true,
        };
        self.kube_denying_role(cluster_labels, &q).is_none() && self.kube_allows(cluster_labels, &q)
    }

    /// The first role whose deny `kubernetes_resources` match the query on this cluster.
    fn kube_denying_role(
        &self,
        cluster_labels: &BTreeMap<String, String>,
        q: &Query<'_>,
    ) -> Option<&str> {
        self.kube_roles()
            .find(|r| {
                r.deny.labels.matches(cluster_labels)
                    && !r.deny.resources.ignores(q)
                    && r.deny.resources.any_matches(q, false)
            })
            .map(|r| r.name)
    }

    /// Whether a role whose labels match the cluster allows the query.
    fn kube_allows(&self, cluster_labels: &BTreeMap<String, String>, q: &Query<'_>) -> bool {
        self.kube_roles().any(|r| {
            r.allow.labels.matches(cluster_labels)
                && (r.allow.resources.ignores(q) || r.allow.resources.any_matches(q, true))
        })
    }
}

#[cfg(test)]
#[path = "kube_access_tests.rs"]
mod tests;
