//! The cluster's certificate authorities: loading them at start (creating any that is missing),
//! the key of each that signs and every key that is trusted (two during a rotation), the digest
//! that names what clients must trust, and what of them is exported (public parts, the pin
//! clients check). It never exports a private key; only `rotation.rs` replaces a key.

use std::sync::Arc;
use std::time::SystemTime;

use hop_ca::{CaKind, CaPublic, CertAuthority};
use hop_storage::ResourceStore;

use super::AuthServer;
use crate::error::AuthError;
use crate::records::CaKeys;
use crate::rotation::Rotation;

/// Where a CA's keys are made: at a cluster's first start and at each rotation's `init`. Today
/// software keys that the CA record keeps; a hardware module (PKCS#11) is another maker, so that a
/// rotation generates its new key there with no change to the rotation itself.
pub trait CaKeyMaker: Send + Sync {
    /// A new CA of `kind` for `cluster`, valid from `now`.
    ///
    /// # Errors
    /// The CA crate's, when the key or the self-signed certificate cannot be made.
    fn make(
        &self,
        kind: CaKind,
        cluster: &str,
        now: SystemTime,
    ) -> Result<CertAuthority, hop_ca::CaError>;
}

/// Keys from the OS random number generator, kept (PKCS#8 / OpenSSH PEM) in the CA's record.
#[derive(Debug, Default)]
pub struct SoftwareKeys;

impl CaKeyMaker for SoftwareKeys {
    fn make(
        &self,
        kind: CaKind,
        cluster: &str,
        now: SystemTime,
    ) -> Result<CertAuthority, hop_ca::CaError> {
        CertAuthority::generate(kind, cluster, now, &mut rand::rng())
    }
}

/// One CA: the key that signs, the other key a rotation still trusts, and the rotation's state.
#[derive(Clone)]
pub struct CaSet {
    pub active: CertAuthority,
    pub additional: Option<CertAuthority>,
    pub rotation: Rotation,
    /// The stored record's revision (rotations update it with compare-and-swap).
    pub revision: u64,
    trusted: Vec<CaPublic>,
}

impl CaSet {
    fn new(keys: CaKeys, revision: u64) -> Self {
        let mut trusted = vec![keys.authority.public()];
        trusted.extend(keys.additional.as_ref().map(CertAuthority::public));
        Self {
            active: keys.authority,
            additional: keys.additional,
            rotation: keys.rotation,
            revision,
            trusted,
        }
    }

    /// The public half of every key that is trusted: the signing key first.
    pub fn trusted(&self) -> &[CaPublic] {
        &self.trusted
    }

    /// The public half of the key that signs.
    pub fn signer(&self) -> &CaPublic {
        &self.trusted[0]
    }

    /// The key servers present certificates from in this phase: the old key until
    /// `update_servers` (in `update_clients` the new key signs clients' certificates, but not
    /// every client trusts it yet), the signing key otherwise. The proxy's certificate comes from
    /// it, and the pin joiners check is its.
    pub fn server_key(&self) -> (&CertAuthority, &CaPublic) {
        match (&self.rotation.phase, &self.additional) {
            (crate::rotation::Phase::UpdateClients, Some(old)) => (old, &self.trusted[1]),
            _ => (&self.active, &self.trusted[0]),
        }
    }
}

/// The certificate authorities of a cluster: each kind's signing key as a field (what issuers
/// use), and each kind's [`CaSet`].
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
    sets: Vec<(CaKind, CaSet)>,
    digest: String,
}

impl Authorities {
    /// The key of `kind` that signs.
    pub fn get(&self, kind: CaKind) -> &CertAuthority {
        &self.set(kind).active
    }

    /// Everything about the CA of `kind`.
    pub fn set(&self, kind: CaKind) -> &CaSet {
        // Every kind is loaded at start (`from_sets` checks), so the search always finds it.
        self.sets
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, s)| s)
            .unwrap_or(&self.sets[0].1)
    }

    /// The public half of every trusted key of `kind`, the signing key first.
    pub fn trusted(&self, kind: CaKind) -> &[CaPublic] {
        self.set(kind).trusted()
    }

    /// [`hop_ca::trust_digest`] of the user and host CAs' trusted keys: what a client saves at
    /// login (`cas.pem`, `known_hosts`) and finds in the proxy's certificate.
    pub fn trust_digest(&self) -> &str {
        &self.digest
    }

    fn from_sets(sets: Vec<(CaKind, CaSet)>) -> Result<Self, AuthError> {
        let signer = |kind: CaKind| {
            sets.iter()
                .find(|(k, _)| *k == kind)
                .map(|(_, s)| s.active.clone())
                .ok_or(AuthError::Internal(
                    "a certificate authority is missing".into(),
                ))
        };
        let mut client_facing: Vec<CaPublic> = Vec::new();
        for (kind, set) in &sets {
            if matches!(kind, CaKind::User | CaKind::Host) {
                client_facing.extend(set.trusted().iter().cloned());
            }
        }
        Ok(Self {
            user: signer(CaKind::User)?,
            host: signer(CaKind::Host)?,
            db: signer(CaKind::Db)?,
            jwt: signer(CaKind::Jwt)?,
            openssh: signer(CaKind::OpenSsh)?,
            spiffe: signer(CaKind::Spiffe)?,
            digest: hop_ca::trust_digest(&client_facing),
            sets,
        })
    }

    /// The cluster's CAs from the store, generating and storing any that does not exist yet.
    pub(super) fn load_or_create(
        store: &ResourceStore,
        keys: &dyn CaKeyMaker,
        cluster: &str,
        now: SystemTime,
    ) -> Result<Self, AuthError> {
        let mut sets = Vec::new();
        for kind in CaKind::ALL {
            if store.get::<CaKeys>(kind.as_str())?.is_none() {
                let ca = keys
                    .make(kind, cluster, now)
                    .map_err(|source| AuthError::CaGeneration { kind, source })?;
                store.create(&CaKeys::new(kind, ca))?;
                tracing::info!(%kind, "created certificate authority");
            }
            let v = store
                .get::<CaKeys>(kind.as_str())?
                .ok_or(AuthError::Internal(
                    "a created certificate authority is gone".into(),
                ))?;
            sets.push((kind, CaSet::new(v.value, v.revision)));
        }
        Self::from_sets(sets)
    }

    /// The CAs as the store holds them now (after a rotation step).
    pub(super) fn load(store: &ResourceStore) -> Result<Self, AuthError> {
        let mut sets = Vec::new();
        for kind in CaKind::ALL {
            let v = store
                .get::<CaKeys>(kind.as_str())?
                .ok_or(AuthError::Internal(
                    "a certificate authority is missing".into(),
                ))?;
            sets.push((kind, CaSet::new(v.value, v.revision)));
        }
        Self::from_sets(sets)
    }
}

impl AuthServer {
    /// The CAs as they are now; a rotation step replaces them (hold the `Arc` only briefly).
    pub fn authorities(&self) -> Arc<Authorities> {
        self.cas
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    /// Bumped whenever a CA's keys or phase change: proxies, jump hosts and in-process agents
    /// watch it to reload their trust and, when they must, their certificates.
    pub fn watch_authorities(&self) -> tokio::sync::watch::Receiver<u64> {
        self.ca_changes.subscribe()
    }

    /// Replaces the CAs after a rotation step (this Auth's or another's on the same backend) and
    /// tells the watchers; nothing when the stored records are the ones in use.
    pub(super) fn reload_authorities(&self) -> Result<(), AuthError> {
        let fresh = Arc::new(Authorities::load(self.store())?);
        let same = |a: &Authorities| {
            a.sets
                .iter()
                .zip(&fresh.sets)
                .all(|((_, x), (_, y))| x.revision == y.revision)
        };
        if same(&self.authorities()) {
            return Ok(());
        }
        self.app_access.use_jwt_ca(&fresh.jwt);
        match self.cas.write() {
            Ok(mut g) => *g = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        self.ca_changes.send_modify(|v| *v += 1);
        Ok(())
    }

    /// Follows the CA records in the backend until shutdown, so that a rotation step another Auth
    /// took on the same backend (several appliances on PostgreSQL) reaches this one's issuers,
    /// verifiers and watchers at once. A watch that fell behind reloads and starts again.
    pub async fn follow_ca_records(
        self: Arc<Self>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let prefix = "/resources/ca_keys/";
        let mut watcher = self.store().backend().watch();
        loop {
            let relevant = tokio::select! {
                event = watcher.recv() => match event {
                    Ok(hop_storage::Event::Put(item)) => item.key.starts_with(prefix),
                    Ok(hop_storage::Event::Delete { key, .. }) => key.starts_with(prefix),
                    Err(_) => {
                        watcher = self.store().backend().watch();
                        true
                    }
                },
                () = hop_platform::signals::until_shutdown(&mut shutdown) => return,
            };
            if relevant {
                let me = self.clone();
                match tokio::task::spawn_blocking(move || me.reload_authorities()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "cannot reload the CAs after a change in the backend")
                    }
                    Err(e) => tracing::error!(error = %e, "the CA reload task failed"),
                }
            }
        }
    }

    /// The pin clients check the proxy's certificate chain against: the host CA key the proxy's
    /// certificate comes from ([`CaSet::server_key`]).
    pub fn ca_pin(&self) -> String {
        self.authorities()
            .set(CaKind::Host)
            .server_key()
            .1
            .x509_spki_sha256
            .clone()
            .unwrap_or_default()
    }

    /// The public half of every trusted key of `kind` (two during a rotation).
    pub fn public_authorities(&self, kind: CaKind) -> Vec<CaPublic> {
        self.authorities().trusted(kind).to_vec()
    }

    /// [`Authorities::trust_digest`] now.
    pub fn trust_digest(&self) -> String {
        self.authorities().trust_digest().to_owned()
    }
}
