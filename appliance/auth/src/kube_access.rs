//! Kubernetes certificates at Auth (`hop kube login`, `hop kube credentials`): a user
//! certificate routed to one kube cluster (`route_to_kube_cluster`), which kubectl presents to
//! the proxy's kube endpoint (TLS server name `kube.P`).
//!
//! This module decides what such a certificate may say and who sees which cluster: the caller
//! is admitted on the kube route (the one admission path: exists, not locked, not voided,
//! current roles), holds no route-bound certificate already, and has roles whose
//! `kubernetes_labels` allow the cluster's labels; the certificate never outlives the caller's
//! own, nor the roles' `max_session_ttl`. Which clusters exist is the caller's to look up (the
//! connected kube agents' announcements); this module never reaches for the inventory itself.

use std::time::Duration;

use hop_admission::{Refusal, Route};
use hop_rbac::AccessChecker;

use super::admission::Presented;
use super::error::AuthError;
use super::inventory::KubeRoute;
use super::server::AuthServer;

/// The first DNS label of the kube endpoint's name: `kube.P`. No web application may take it.
pub const KUBE_LABEL: &str = "kube";

/// A certificate issued for one kube cluster.
pub type KubeCertificate = super::routed_certs::RoutedCertificate;

/// A cluster the caller may reach, with the Kubernetes identity the proxy would impersonate
/// there when the client asks for none in particular.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VisibleKubeCluster {
    pub cluster: KubeRoute,
    pub users: Vec<String>,
    pub groups: Vec<String>,
}

/// The TLS server name of the kube endpoint for the proxy's public `host[:port]`
/// (`web_addr`): `kube.HOST`, lowercase, without the port.
pub fn tls_server_name(web_addr: &str) -> String {
    let host = match web_addr.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') && p.parse::<u16>().is_ok() => h,
        _ => web_addr,
    };
    format!(
        "{KUBE_LABEL}.{}",
        host.trim_matches(['[', ']']).to_ascii_lowercase()
    )
}

/// The clusters whose labels a role allows, with the users and groups the roles map to there
/// (with groups but no user, the Hop user's own name is the user, as on the kube route).
pub fn visible_kube_clusters(
    checker: &AccessChecker,
    hop_user: &str,
    clusters: Vec<KubeRoute>,
) -> Vec<VisibleKubeCluster> {
    clusters
        .into_iter()
        .filter(|c| checker.check_kubernetes_cluster(&c.labels).is_ok())
        .map(|cluster| {
            let (groups, mut users) = checker.kubernetes_principals(&cluster.labels);
            if users.is_empty() && !groups.is_empty() {
                users.push(hop_user.to_string());
            }
            VisibleKubeCluster {
                cluster,
                users,
                groups,
            }
        })
        .collect()
}

impl AuthServer {
    /// Issues the holder of `caller` a user certificate routed to kube cluster `cluster`, for
    /// `ttl` or as long as allowed. The caller goes through admission on the kube route and
    /// its roles must allow the cluster's labels; a refusal is audited. A route-bound caller
    /// is refused: route certificates derive only from a login.
    pub fn issue_kube_certificate(
        &self,
        caller: &Presented<'_>,
        cluster: &KubeRoute,
        ttl: Option<Duration>,
        tls_public_key_der: &[u8],
    ) -> Result<KubeCertificate, AuthError> {
        let id = caller.identity;
        if let Some(refused) = super::routed_certs::route_bound(id) {
            return Err(refused);
        }
        let admitted = self
            .admit(caller, Route::Kube)
            .and_then(
                |a| match a.checker().check_kubernetes_cluster(&cluster.labels) {
                    Ok(()) => Ok(a),
                    Err(denied) => Err(Refusal::Denied {
                        name: id.username.clone(),
                        reason: format!(
                            "your roles do not allow Kubernetes cluster {:?} ({denied})",
                            cluster.name
                        ),
                    }),
                },
            )
            .map_err(|refusal| {
                self.audit_kube_refusal(&id.username, &cluster.name, &refusal);
                AuthError::Denied(refusal.to_string())
            })?;
        let mut identity = id.clone();
        identity.route_to_kube_cluster = Some(cluster.name.clone());
        let ceiling = admitted.checker().max_session_ttl();
        self.issue_routed(caller, &identity, ceiling, ttl, tls_public_key_der)
    }

    /// The audit event of a refused kube certificate (rate-limited per identity, as every
    /// refusal of a verified identity).
    fn audit_kube_refusal(&self, user: &str, cluster: &str, refusal: &Refusal) {
        tracing::info!(
            user,
            kube_cluster = cluster,
            reason = refusal.code(),
            "Kubernetes certificate refused"
        );
        self.audit_refusal(Route::Kube, user, refusal, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_is_named_kube_under_the_public_host() {
        assert_eq!(tls_server_name("proxy.test:3080"), "kube.proxy.test");
        assert_eq!(tls_server_name("Localhost"), "kube.localhost");
        assert_eq!(tls_server_name("hop.example:443"), "kube.hop.example");
    }
}
