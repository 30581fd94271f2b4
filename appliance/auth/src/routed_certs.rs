//! Route-bound user certificates (`route_to_app`, `route_to_kube_cluster`): what every such
//! certificate shares once its route has admitted the caller. It derives only from a login
//! certificate (never from another route-bound one), never outlives the caller's certificate
//! nor the roles' `max_session_ttl`, and is signed by the user CA with the host and user CAs as
//! the trust to hand back. What each route admits is its own module's (`app_access`,
//! `kube_access`).

use std::time::{Duration, SystemTime};

use super::admission::Presented;
use super::error::AuthError;
use super::server::AuthServer;

/// A certificate issued for one application or kube cluster.
#[derive(Debug, Clone)]
pub struct RoutedCertificate {
    pub certificate_pem: String,
    pub expires: SystemTime,
    pub trusted_cas_pem: String,
}

/// The refusal of a caller whose certificate is already bound to a route.
pub(crate) fn route_bound(id: &hop_ca::Identity) -> Option<AuthError> {
    let bound = id.route_to_app.is_some()
        || id.route_to_database.is_some()
        || id.route_to_kube_cluster.is_some();
    bound.then(|| {
        AuthError::Denied(
            "a certificate bound to one application, database or Kubernetes cluster cannot be used to get another; use your login certificate".into(),
        )
    })
}

impl AuthServer {
    /// Signs `identity` (the caller's, with its route set) for `tls_public_key_der`, for `ttl`
    /// or as long as allowed: at most `role_ceiling` (the admitted roles' `max_session_ttl`)
    /// and never past the caller's own certificate.
    pub(crate) fn issue_routed(
        &self,
        caller: &Presented<'_>,
        identity: &hop_ca::Identity,
        role_ceiling: Duration,
        ttl: Option<Duration>,
        tls_public_key_der: &[u8],
    ) -> Result<RoutedCertificate, AuthError> {
        let ceiling = ttl.map_or(role_ceiling, |t| t.min(role_ceiling));
        let now = self.now();
        let ttl = hop_ca::derived_ttl(now, caller.expires, ceiling).ok_or_else(|| {
            AuthError::Denied("your certificate has expired; run `hop login`".into())
        })?;
        let cas = self.authorities();
        let pem = cas
            .user
            .issue_user_x509(tls_public_key_der, identity, now, ttl, &mut rand::rng())
            .map_err(|source| AuthError::UnusableKey {
                field: "tls_public_key",
                source,
            })?;
        self.metrics().certificates_issued.inc();
        Ok(RoutedCertificate {
            certificate_pem: pem,
            expires: now + ttl,
            trusted_cas_pem: self.client_cas_pem(),
        })
    }
}
