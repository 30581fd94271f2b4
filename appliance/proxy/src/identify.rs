//! Who is on a TLS connection: the caller its client certificate names.
//!
//! This module owns turning a verified client certificate into a [`Caller`]: a user certificate
//! of a key the cluster's user CA trusts, or a host certificate of one its host CA trusts (checked
//! by `hop_ca`, the certificate's signature, validity window and identity extension). rustls has
//! checked the chain during the handshake already; this check also says which CA signed it and
//! reads the identity. During a CA rotation two keys of a CA are trusted; after each rotation step
//! ([`AuthServer::watch_authorities`]) the keys are read again, so that a key `standby` dropped
//! identifies no one any more.
//!
//! Every session of `hop proxy app` presents the same user certificate and every pooled data
//! connection of an agent the same host certificate, so results are kept in a small cache keyed
//! by the certificate's SHA-256: a hit costs a hash and a lookup instead of parsing the CA PEM,
//! the certificate and verifying a signature. An entry is used only before the certificate's
//! notAfter, and the trusted CAs are fixed for the cache's life: reading them again empties it,
//! and a result verified against the keys of before is not kept. A host certificate's result
//! also names the key that signed it (the agent registry's rotation check), so that an agent's
//! data connection per session costs no signature verification either.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use hop_ca::{CaKind, CaPublic, HostRole, Identity};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::listener::IdentifyPeer;
use hop_auth::AuthServer;
use hop_auth::caller::Caller;

/// Certificates remembered at most; when full, expired entries go, and then all if need be.
const CACHE_MAX: usize = 4096;

/// A certificate that passed verification.
#[derive(Clone)]
enum Verified {
    /// A user certificate's identity and when it was issued.
    User(Box<Identity>, SystemTime),
    Host {
        host_id: String,
        role: HostRole,
        serial: String,
        /// The pin of the trusted key that signed it.
        signer: Option<String>,
    },
}

/// The verification result for one certificate.
struct Entry {
    verified: Verified,
    expires: SystemTime,
}

/// The keys certificates are verified against, and which version of the cluster's CAs they are.
struct Trust {
    users: Vec<CaPublic>,
    hosts: Vec<CaPublic>,
    generation: u64,
}

impl Trust {
    fn of(auth: &AuthServer, generation: u64) -> Self {
        let cas = auth.authorities();
        Self {
            users: cas.trusted(CaKind::User).to_vec(),
            hosts: cas.trusted(CaKind::Host).to_vec(),
            generation,
        }
    }
}

/// Results verified against the keys of one [`Trust::generation`].
struct Cache {
    generation: u64,
    entries: HashMap<[u8; 32], Entry>,
}

/// The cluster whose trusted keys an [`Identifier`] follows.
struct Follow {
    auth: Arc<AuthServer>,
    changes: Mutex<watch::Receiver<u64>>,
}

/// Verifies client certificates against the trusted user and host CA keys, remembering the
/// results.
pub struct Identifier {
    trust: ArcSwap<Trust>,
    follow: Option<Follow>,
    clock: Arc<dyn hop_storage::Clock>,
    cache: Mutex<Cache>,
}

impl Identifier {
    /// An identifier that trusts `users` and `hosts` for its life.
    pub fn new(
        users: Vec<CaPublic>,
        hosts: Vec<CaPublic>,
        clock: Arc<dyn hop_storage::Clock>,
    ) -> Self {
        let trust = Trust {
            users,
            hosts,
            generation: 0,
        };
        Self::with(trust, None, clock)
    }

    /// An identifier that trusts the keys `auth`'s user and host CAs trust, read again after
    /// each rotation step.
    pub fn following(auth: Arc<AuthServer>, clock: Arc<dyn hop_storage::Clock>) -> Self {
        let changes = auth.watch_authorities();
        let trust = Trust::of(&auth, *changes.borrow());
        let follow = Follow {
            auth,
            changes: Mutex::new(changes),
        };
        Self::with(trust, Some(follow), clock)
    }

    fn with(trust: Trust, follow: Option<Follow>, clock: Arc<dyn hop_storage::Clock>) -> Self {
        let cache = Cache {
            generation: trust.generation,
            entries: HashMap::new(),
        };
        Self {
            trust: ArcSwap::from_pointee(trust),
            follow,
            clock,
            cache: Mutex::new(cache),
        }
    }

    /// The caller `der` names, or `None` when it is no valid user or host certificate.
    pub fn identify(&self, der: &[u8], remote: SocketAddr) -> Option<Caller> {
        self.refresh();
        let now = self.clock.now();
        let key: [u8; 32] = Sha256::digest(der).into();
        let cached = self.cache.lock().ok().and_then(|c| {
            c.entries
                .get(&key)
                .filter(|e| now < e.expires)
                .map(|e| (e.verified.clone(), e.expires))
        });
        let (verified, expires) = match cached {
            Some(hit) => hit,
            None => {
                let trust = self.trust.load_full();
                let fresh = verify(&trust, der, now)?;
                self.remember(key, &fresh.0, fresh.1, now, trust.generation);
                fresh
            }
        };
        Some(match verified {
            Verified::User(identity, issued_at) => Caller::User {
                identity,
                remote,
                expires,
                issued_at,
            },
            Verified::Host {
                host_id,
                role,
                serial,
                signer,
            } => Caller::Host {
                host_id,
                role,
                remote,
                expires,
                serial,
                signer,
            },
        })
    }

    /// Reads the trusted keys again, and forgets every result, when the cluster's CAs changed.
    fn refresh(&self) {
        let Some(follow) = &self.follow else {
            return;
        };
        let mut changes = follow.changes.lock().unwrap_or_else(|p| p.into_inner());
        if !changes.has_changed().unwrap_or(false) {
            return;
        }
        let generation = *changes.borrow_and_update();
        self.trust
            .store(Arc::new(Trust::of(&follow.auth, generation)));
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.generation = generation;
        cache.entries.clear();
    }

    /// Keeps a result verified against the keys of `generation`, unless they were replaced since.
    fn remember(
        &self,
        key: [u8; 32],
        verified: &Verified,
        expires: SystemTime,
        now: SystemTime,
        generation: u64,
    ) {
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        if cache.generation != generation {
            return;
        }
        if cache.entries.len() >= CACHE_MAX {
            cache.entries.retain(|_, e| now < e.expires);
            if cache.entries.len() >= CACHE_MAX {
                cache.entries.clear();
            }
        }
        cache.entries.insert(
            key,
            Entry {
                verified: verified.clone(),
                expires,
            },
        );
    }

    /// As the listener's callback.
    pub fn into_callback(self) -> IdentifyPeer {
        let me = Arc::new(self);
        Arc::new(move |der: &[u8], remote| me.identify(der, remote))
    }
}

/// What `der` is, checked against `trust`'s keys at `now`, and when it expires.
fn verify(trust: &Trust, der: &[u8], now: SystemTime) -> Option<(Verified, SystemTime)> {
    if let Ok((identity, expires)) = hop_ca::verify_user_x509(der, &trust.users, now) {
        // A certificate whose issue time cannot be read counts as issued at the epoch, so
        // any lock voids it.
        let issued = hop_ca::x509_issued_at(der).unwrap_or(std::time::UNIX_EPOCH);
        return Some((Verified::User(Box::new(identity), issued), expires));
    }
    // Key by key, so that the result also says which key signed it (what an agent's place in the
    // registry keeps for rotations): one verification per trusted key at most, on a miss only.
    let (host_id, role, expires, signer) = trust.hosts.iter().find_map(|ca| {
        hop_ca::verify_host_x509(der, std::slice::from_ref(ca), now)
            .ok()
            .map(|(host_id, role, expires)| (host_id, role, expires, ca.x509_spki_sha256.clone()))
    })?;
    let serial = hop_ca::x509_serial_hex(der).unwrap_or_default();
    let verified = Verified::Host {
        host_id,
        role,
        serial,
        signer,
    };
    Some((verified, expires))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hop_ca::{CaKind, CertAuthority, generate_x509_keypair, parse_pem_certs};
    use hop_storage::ManualClock;

    use super::*;

    fn der(pem: &str) -> Vec<u8> {
        parse_pem_certs(pem).unwrap().remove(0)
    }

    #[test]
    fn users_and_hosts_are_named_and_a_cached_certificate_still_expires() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let clock = ManualClock::new(start);
        let mut rng = rand::rng();
        let user_ca = CertAuthority::generate(CaKind::User, "c", start, &mut rng).unwrap();
        let host_ca = CertAuthority::generate(CaKind::Host, "c", start, &mut rng).unwrap();
        let other_ca = CertAuthority::generate(CaKind::User, "c", start, &mut rng).unwrap();
        let key = generate_x509_keypair(&mut rng).unwrap();
        let alice = Identity {
            username: "alice".into(),
            ..Identity::default()
        };
        let hour = Duration::from_secs(3600);
        let user = der(&user_ca
            .issue_user_x509(&key.public_spki_der, &alice, start, hour, &mut rng)
            .unwrap());
        let host = der(&host_ca
            .issue_host_x509(
                &key.public_spki_der,
                "agent-1",
                HostRole::App,
                &[],
                None,
                start,
                hour,
                &mut rng,
            )
            .unwrap());
        let forged = der(&other_ca
            .issue_user_x509(&key.public_spki_der, &alice, start, hour, &mut rng)
            .unwrap());
        let id = Identifier::new(
            vec![user_ca.public()],
            vec![host_ca.public()],
            Arc::new(clock.clone()),
        );
        let remote: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        for _ in 0..2 {
            // The second round comes from the cache, with the same answers.
            match id.identify(&user, remote) {
                Some(Caller::User { identity, .. }) => assert_eq!(identity.username, "alice"),
                other => panic!("{other:?}"),
            }
            match id.identify(&host, remote) {
                Some(Caller::Host { host_id, role, .. }) => {
                    assert_eq!((host_id.as_str(), role), ("agent-1", HostRole::App))
                }
                other => panic!("{other:?}"),
            }
            assert!(id.identify(&forged, remote).is_none());
            assert!(id.identify(b"not a certificate", remote).is_none());
        }
        assert_eq!(id.cache.lock().unwrap().entries.len(), 2);
        // Past notAfter the cached entries no longer count.
        clock.advance(2 * hour);
        assert!(id.identify(&user, remote).is_none());
        assert!(id.identify(&host, remote).is_none());
    }

    /// A cluster on a manual clock and an identifier that follows its CAs.
    fn following_a_cluster() -> (Arc<AuthServer>, Identifier) {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        let auth = crate::test_auth::auth(Arc::new(clock.clone()));
        let id = Identifier::following(auth.clone(), Arc::new(clock));
        (auth, id)
    }

    /// A user certificate of alice from the user CA's signing key now.
    fn alice_now(auth: &AuthServer) -> Vec<u8> {
        let mut rng = rand::rng();
        let key = generate_x509_keypair(&mut rng).unwrap();
        let alice = Identity {
            username: "alice".into(),
            ..Identity::default()
        };
        let pem = auth
            .authorities()
            .user
            .issue_user_x509(
                &key.public_spki_der,
                &alice,
                auth.now(),
                Duration::from_secs(3600),
                &mut rng,
            )
            .unwrap();
        der(&pem)
    }

    #[test]
    fn a_user_ca_rotation_is_followed_and_a_dropped_key_identifies_no_one() {
        use crate::test_auth::rotate;
        use hop_auth::rotation::Phase;

        let (auth, id) = following_a_cluster();
        let remote: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let is_alice = |der: &[u8]| matches!(id.identify(der, remote), Some(Caller::User { identity, .. }) if identity.username == "alice");
        let old = alice_now(&auth);
        assert!(is_alice(&old));

        rotate(&auth, CaKind::User, Phase::Init);
        assert!(is_alice(&old));
        rotate(&auth, CaKind::User, Phase::UpdateClients);
        let new = alice_now(&auth);
        assert!(is_alice(&new), "a certificate of the new key identifies");
        assert!(is_alice(&old), "the old key is still trusted");
        rotate(&auth, CaKind::User, Phase::UpdateServers);
        assert!(is_alice(&old));

        // standby drops the old key: its certificate (cached above) no longer identifies.
        rotate(&auth, CaKind::User, Phase::Standby);
        assert!(!is_alice(&old));
        assert!(is_alice(&new));
        assert_eq!(id.cache.lock().unwrap().entries.len(), 1);
    }

    /// A host certificate of agent-1 from the host CA's signing key now.
    fn agent_now(auth: &AuthServer) -> Vec<u8> {
        let mut rng = rand::rng();
        let key = generate_x509_keypair(&mut rng).unwrap();
        let pem = auth
            .authorities()
            .host
            .issue_host_x509(
                &key.public_spki_der,
                "agent-1",
                HostRole::App,
                &[],
                None,
                auth.now(),
                Duration::from_secs(3600),
                &mut rng,
            )
            .unwrap();
        der(&pem)
    }

    #[test]
    fn a_host_certificate_names_the_key_that_signed_it_fresh_and_cached() {
        use crate::test_auth::rotate;
        use hop_auth::rotation::Phase;

        let (auth, id) = following_a_cluster();
        let remote: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let signer = |der: &[u8]| match id.identify(der, remote) {
            Some(Caller::Host { signer, .. }) => signer,
            other => panic!("{other:?}"),
        };
        // What the registry compared before the identifier said it: the same pin.
        let pin = |der: &[u8]| {
            let trusted = auth.public_authorities(CaKind::Host);
            hop_ca::x509_signer_pin(der, &trusted, CaKind::Host, auth.now())
        };
        let old = agent_now(&auth);
        rotate(&auth, CaKind::Host, Phase::Init);
        rotate(&auth, CaKind::Host, Phase::UpdateClients);
        let new = agent_now(&auth);
        let (old_pin, new_pin) = (pin(&old), pin(&new));
        assert!(old_pin.is_some() && new_pin.is_some());
        assert_ne!(old_pin, new_pin, "the rotation's two keys");
        for _ in 0..2 {
            // The second round comes from the cache.
            assert_eq!(signer(&old), old_pin);
            assert_eq!(signer(&new), new_pin);
        }
        assert_eq!(id.cache.lock().unwrap().entries.len(), 2);
    }
}
