//! The cluster's certificate authorities: loading them at start (creating any that is missing)
//! and what of them is exported (public parts, the pin clients check). It never exports a
//! private key and never replaces an existing CA.

use std::time::SystemTime;

use hop_ca::{CaKind, CaPublic, CertAuthority};
use hop_storage::ResourceStore;

use super::AuthServer;
use crate::error::AuthError;
use crate::records::CaKeys;

/// The certificate authorities of a cluster.
#[derive(Clone)]
pub struct Authorities {
    pub user: CertAuthority,
    pub host: CertAuthority,
    pub db: CertAuthority,
    pub jwt: CertAuthority,
    /// Only the proxy's logins to agentless OpenSSH nodes are signed by it.
    pub openssh: CertAuthority,
    /// Signs bots' X.509 SVIDs (trust domain: the cluster's name).
    pub spiffe: CertAuthority,
}

impl Authorities {
    pub fn get(&self, kind: CaKind) -> &CertAuthority {
        match kind {
            CaKind::User => &self.user,
            CaKind::Host => &self.host,
            CaKind::Db => &self.db,
            CaKind::Jwt => &self.jwt,
            CaKind::OpenSsh => &self.openssh,
            CaKind::Spiffe => &self.spiffe,
        }
    }
}

impl Authorities {
    /// The cluster's CAs from the store, generating and storing any that does not exist yet.
    pub(super) fn load_or_create(
        store: &ResourceStore,
        cluster: &str,
        now: SystemTime,
    ) -> Result<Self, AuthError> {
        let mut rng = rand::rng();
        let mut load = |kind: CaKind| -> Result<CertAuthority, AuthError> {
            if let Some(v) = store.get::<CaKeys>(&kind.to_string())? {
                return Ok(v.value.authority);
            }
            let ca = CertAuthority::generate(kind, cluster, now, &mut rng)
                .map_err(|source| AuthError::CaGeneration { kind, source })?;
            store.create(&CaKeys::new(kind, ca.clone()))?;
            tracing::info!(%kind, "created certificate authority");
            Ok(ca)
        };
        Ok(Self {
            user: load(CaKind::User)?,
            host: load(CaKind::Host)?,
            db: load(CaKind::Db)?,
            jwt: load(CaKind::Jwt)?,
            openssh: load(CaKind::OpenSsh)?,
            spiffe: load(CaKind::Spiffe)?,
        })
    }
}

impl AuthServer {
    pub fn authorities(&self) -> &Authorities {
        &self.cas
    }

    /// The pin clients check the proxy's certificate chain against: the host CA's key.
    pub fn ca_pin(&self) -> String {
        self.cas.host.public().x509_spki_sha256.unwrap_or_default()
    }

    pub fn public_authorities(&self, kind: CaKind) -> Vec<CaPublic> {
        vec![self.cas.get(kind).public()]
    }
}
