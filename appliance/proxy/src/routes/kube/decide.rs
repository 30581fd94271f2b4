//! The kube route's decisions, from the admission snapshot only (no backend read per request):
//! whether a certificate may use its cluster now ([`admit`]: identity exists, not locked, not
//! voided, current roles, and a role's `kubernetes_labels` allow the cluster's announced
//! labels), what one request may do ([`request`]: the parsed request, the Kubernetes
//! identity to impersonate, the resource check, whether a listing must be filtered), and
//! whether a live stream still may on newer roles ([`still_allowed`]: the same decision again
//! from what was kept, which must come out the same identity).

use std::collections::BTreeMap;

use hop_admission::{Admitted, Refusal, Route, SessionTarget};
use hop_auth::AuthServer;
use hop_auth::admission::Presented;
use hop_protocols::kube::request::{self as kreq, KubeRequest};
use hop_rbac::{AccessChecker, KubeImpersonation, KubeTarget};

use super::View;
use super::headers::{self, Requested};
use crate::tunnels::KubeRoute;

/// Why a certificate may not use its cluster now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// Admission or the roles' `kubernetes_labels` refused.
    Refused(Refusal),
    /// No connected kube agent announces the cluster.
    UnknownCluster,
}

/// A certificate admitted to its cluster on one view.
pub struct Admission {
    pub admitted: Admitted,
    pub cluster: KubeRoute,
}

impl Admission {
    pub fn checker(&self) -> &AccessChecker {
        self.admitted.checker()
    }

    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.cluster.labels
    }
}

/// Decides whether `presented` may use kube cluster `cluster` now, on `view` (a per-session
/// MFA certificate only for the cluster it was marked for).
pub fn admit(
    auth: &AuthServer,
    view: &View,
    presented: &Presented<'_>,
    cluster: &str,
) -> Result<Admission, Denial> {
    let snapshot = view
        .snapshot
        .as_ref()
        .map_err(|r| Denial::Refused(r.clone()))?;
    let presented = Presented {
        target: Some(SessionTarget::KubeCluster { cluster }),
        ..*presented
    };
    let admitted = auth
        .admit_on_kept(snapshot, &presented, Route::Kube)
        .map_err(Denial::Refused)?;
    let route = view.clusters.get(cluster).ok_or(Denial::UnknownCluster)?;
    admitted
        .require(admitted.checker().check_kubernetes_cluster(&route.labels))
        .map_err(Denial::Refused)?;
    Ok(Admission {
        admitted,
        cluster: route.clone(),
    })
}

/// What an admitted request may do.
#[derive(Debug, Clone)]
pub struct Allowed {
    pub request: KubeRequest,
    /// What the client asked to impersonate (kept so that a live stream can be decided again).
    pub requested: Requested,
    pub impersonation: KubeImpersonation,
    /// A list or watch whose items the role shows only some of: the body must be filtered.
    pub filter: bool,
}

/// Why one request is refused (the words reach kubectl).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestDenial {
    /// The path or method cannot be read as a Kubernetes request.
    #[error("{0}")]
    Unreadable(String),
    /// The impersonation asked for, or the resource, is not allowed.
    #[error("{0}")]
    Forbidden(String),
}

/// Decides one request of `hop_user`, admitted as `admission`, from its method, path and
/// headers (contract B steps 2–4 and the filter question of step 6).
pub fn request(
    admission: &Admission,
    hop_user: &str,
    method: &str,
    path_and_query: &str,
    h: &axum::http::HeaderMap,
) -> Result<Allowed, RequestDenial> {
    let request = kreq::parse(method, path_and_query)
        .map_err(|e| RequestDenial::Unreadable(e.to_string()))?;
    let requested = headers::requested(h).map_err(|e| RequestDenial::Forbidden(e.to_string()))?;
    allow(admission, hop_user, request, requested)
}

/// Decides a parsed request and the impersonation it asked for: the identity the roles map it
/// to, the resource check, whether a listing must be filtered.
pub fn allow(
    admission: &Admission,
    hop_user: &str,
    request: KubeRequest,
    requested: Requested,
) -> Result<Allowed, RequestDenial> {
    let (checker, labels) = (admission.checker(), admission.labels());
    let impersonation = checker
        .kube_impersonation(
            labels,
            hop_user,
            requested.user.as_deref(),
            &requested.groups,
        )
        .map_err(|e| RequestDenial::Forbidden(e.to_string()))?;
    let mut filter = false;
    if let Some(resource) = request.resource.as_deref() {
        // Roles name exec, attach and port-forward by their own verbs (`exec`,
        // `portforward`), not by the `create` Kubernetes RBAC sees.
        let target = KubeTarget {
            api_group: &request.api_group,
            resource,
            namespace: request.namespace.as_deref(),
            name: request.name.as_deref(),
            verb: request.rbac_verb(),
        };
        checker
            .check_kube_request(labels, &target)
            .map_err(|e| RequestDenial::Forbidden(e.to_string()))?;
        filter = matches!(request.verb.as_str(), "list" | "watch")
            && request.subresource.is_none()
            && checker.kube_needs_filter(
                labels,
                &request.api_group,
                resource,
                request.namespace.as_deref(),
            );
    }
    Ok(Allowed {
        request,
        requested,
        impersonation,
        filter,
    })
}

/// Decides a live stream again on a newer `admission`: `Err` (the words say why) when the
/// roles no longer allow its request, or map it to another Kubernetes identity, or would now
/// filter a stream that was not filtered.
pub fn still_allowed(
    admission: &Admission,
    hop_user: &str,
    decided: &Allowed,
) -> Result<(), RequestDenial> {
    let now = allow(
        admission,
        hop_user,
        decided.request.clone(),
        decided.requested.clone(),
    )?;
    if now.impersonation != decided.impersonation {
        return Err(RequestDenial::Forbidden(format!(
            "your roles now map you to Kubernetes user {:?} and groups {:?}, not the {:?} and {:?} this stream runs as",
            now.impersonation.user,
            now.impersonation.groups,
            decided.impersonation.user,
            decided.impersonation.groups
        )));
    }
    if now.filter && !decided.filter {
        return Err(RequestDenial::Forbidden(
            "your roles now show only some of these items".into(),
        ));
    }
    Ok(())
}
