//! Web sessions: what a browser's cookie stands for.
//!
//! A session is created by a login (Auth checked password and one-time code and issued a
//! certificate pair for the identity); its token is 32 random bytes, sent once in the cookie and
//! never kept: the table is keyed by the token's SHA-256, so neither a memory dump nor a log of
//! the table gives a usable cookie, and looking a token up compares hashes, which tells a
//! guesser nothing about the token. The table lives in memory only: a session holds the private
//! keys of its certificates (for the web terminal), which must never reach a disk, and a proxy
//! restart ends every web session (the user logs in again). Each session has a CSRF token of its
//! own, compared in constant time.
//!
//! A session lives until the certificate's expiry (never renewed past it: a new login is needed,
//! as with `hop login`), and ends earlier when it goes unused for the idle timeout (each admitted
//! request renews that), at logout, and when admission refuses its identity (a lock, a deletion,
//! a role taken away, a voided certificate). A session ended by a refusal leaves a tombstone
//! until its certificate would have expired, so its cookie is answered with the reason. A user
//! has at most [`MAX_PER_USER`] live sessions: a login beyond them ends the least recently used.
//!
//! This module keeps the table and its clockwork; it never decides access itself (it asks
//! admission through Auth in [`WebSessions::sweep`]) and never reads a clock (callers pass
//! `now`, from Auth's clock).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use hop_admission::{Refusal, Route};
use hop_auth::AuthServer;
use hop_auth::admission::Presented;
use hop_auth::audit::EventKind;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::admission::UserCert;

/// The cookie's name: `__Host-` makes browsers refuse it unless `Secure`, `Path=/` and without
/// `Domain`, so no other host or plain-HTTP page can set or shadow it.
pub const COOKIE: &str = "__Host-hop_session";

/// What a session holds for routes that act as the user (the web terminal, later): the key
/// pairs generated at login and the certificates Auth issued for them. Never leaves memory; the
/// private keys are wiped when the session is dropped.
pub struct SessionCredentials {
    pub ssh: hop_ca::SshKeyPair,
    pub ssh_certificate: String,
    pub tls: hop_ca::X509KeyPair,
    pub tls_certificate_pem: String,
}

/// The most live web sessions one user has: a login beyond it ends that user's least recently
/// used session, so that logging in in a loop cannot grow the table (each session holds key
/// pairs and certificates) without bound.
pub const MAX_PER_USER: usize = 32;

/// How long, at least, an ended session's cookie is answered with the reason it ended.
pub const TOMBSTONE: Duration = Duration::from_secs(10 * 60);

/// The table's key: SHA-256 of the token.
type Key = [u8; 32];

/// A newly created session's secrets, each shown once: the token goes in the cookie, the CSRF
/// token to the page.
pub struct NewSession {
    pub token: String,
    pub csrf: String,
}

/// A live session, as a request finds it.
#[derive(Clone)]
pub struct Found {
    pub key: Key,
    pub cert: Arc<UserCert>,
    pub credentials: Arc<SessionCredentials>,
    csrf: [u8; 32],
}

impl Found {
    /// Whether `presented` (hex) is this session's CSRF token, compared in constant time.
    pub fn csrf_matches(&self, presented: &str) -> bool {
        let mut bytes = [0u8; 32];
        if hex::decode_to_slice(presented, &mut bytes).is_err() {
            return false;
        }
        bool::from(self.csrf.ct_eq(&bytes))
    }

    /// The CSRF token, for the page.
    pub fn csrf(&self) -> String {
        hex::encode(self.csrf)
    }
}

/// What a cookie stands for.
pub enum Lookup {
    Live(Found),
    /// Ended by admission: the refusal, and whose session it was.
    Ended {
        refusal: Refusal,
        user: String,
    },
    /// Never existed, logged out, idle too long, or ended long ago.
    Unknown,
}

/// What became of a session, by its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Live,
    /// Ended by admission, for this reason.
    Ended(Refusal),
    /// Logged out, idle too long, or never existed.
    Gone,
}

enum Entry {
    Live {
        found: Found,
        idle_until: SystemTime,
    },
    Ended {
        refusal: Refusal,
        user: String,
        until: SystemTime,
    },
}

/// The live web sessions of this proxy.
pub struct WebSessions {
    table: Mutex<HashMap<Key, Entry>>,
    idle_timeout: Duration,
}

impl WebSessions {
    pub fn new(idle_timeout: Duration) -> Self {
        Self {
            table: Mutex::new(HashMap::new()),
            idle_timeout,
        }
    }

    fn table(&self) -> MutexGuard<'_, HashMap<Key, Entry>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a session for `cert` (the identity Auth just issued) at `now`.
    pub fn create(
        &self,
        cert: UserCert,
        credentials: SessionCredentials,
        now: SystemTime,
    ) -> NewSession {
        let mut token = [0u8; 32];
        let mut csrf = [0u8; 32];
        rand::fill(&mut token[..]);
        rand::fill(&mut csrf[..]);
        let found = Found {
            key: Sha256::digest(token).into(),
            cert: Arc::new(cert),
            credentials: Arc::new(credentials),
            csrf,
        };
        let idle_until = self.idle_deadline(now, found.cert.expires);
        let mut table = self.table();
        make_room(&mut table, &found.cert.identity.username);
        table.insert(found.key, Entry::Live { found, idle_until });
        drop(table);
        NewSession {
            token: hex::encode(token),
            csrf: hex::encode(csrf),
        }
    }

    /// The session cookie value `token` stands for at `now`. An idle session is forgotten here;
    /// an expired one ends (with the reason).
    pub fn lookup(&self, token: &str, now: SystemTime) -> Lookup {
        let mut bytes = [0u8; 32];
        if hex::decode_to_slice(token, &mut bytes).is_err() {
            return Lookup::Unknown;
        }
        let key: Key = Sha256::digest(bytes).into();
        let mut table = self.table();
        match table.get(&key) {
            Some(Entry::Live { found, .. }) if now >= found.cert.expires => {
                let ago = now
                    .duration_since(found.cert.expires)
                    .unwrap_or_default()
                    .as_secs();
                let refusal = Refusal::Expired { ago };
                let user = found.cert.identity.username.clone();
                let until = now + TOMBSTONE;
                table.insert(
                    key,
                    Entry::Ended {
                        refusal: refusal.clone(),
                        user: user.clone(),
                        until,
                    },
                );
                Lookup::Ended { refusal, user }
            }
            Some(Entry::Live { found, idle_until }) if now < *idle_until => {
                Lookup::Live(found.clone())
            }
            Some(Entry::Ended {
                refusal,
                user,
                until,
            }) if now < *until => Lookup::Ended {
                refusal: refusal.clone(),
                user: user.clone(),
            },
            Some(_) => {
                table.remove(&key);
                Lookup::Unknown
            }
            None => Lookup::Unknown,
        }
    }

    /// An admitted request at `now`: the idle deadline moves on (never past the certificate).
    pub fn renew(&self, key: &Key, now: SystemTime) {
        if let Some(Entry::Live { idle_until, found }) = self.table().get_mut(key) {
            *idle_until = self.idle_deadline(now, found.cert.expires);
        }
    }

    /// When a session used at `now` goes idle: after the idle timeout, and never after
    /// `expires` (a timeout too long for the clock to add ends there).
    fn idle_deadline(&self, now: SystemTime, expires: SystemTime) -> SystemTime {
        now.checked_add(self.idle_timeout)
            .map_or(expires, |t| t.min(expires))
    }

    /// Ends a session at `now`: at logout (`None`: forgotten at once), or on a refusal (kept as
    /// a tombstone that answers its cookie with the reason until the certificate's expiry, and
    /// at least [`TOMBSTONE`]).
    pub fn end(&self, key: &Key, refusal: Option<Refusal>, now: SystemTime) {
        let mut table = self.table();
        // Only a live session ends: a tombstone left by a refusal decided at the same time (a
        // sweep racing a request) stays, with its reason.
        if !matches!(table.get(key), Some(Entry::Live { .. })) {
            return;
        }
        let Some(Entry::Live { found, .. }) = table.remove(key) else {
            return;
        };
        if let Some(refusal) = refusal {
            let entry = Entry::Ended {
                refusal,
                user: found.cert.identity.username.clone(),
                until: found.cert.expires.max(now + TOMBSTONE),
            };
            table.insert(*key, entry);
        }
    }

    /// Ends every live session of `user` (forgotten, as at logout): a reset voided the
    /// password and devices they were opened with. Returns how many ended.
    pub fn end_user(&self, user: &str) -> usize {
        let mut table = self.table();
        let before = table.len();
        table.retain(|_, e| match e {
            Entry::Live { found, .. } => found.cert.identity.username != user,
            Entry::Ended { .. } => true,
        });
        before - table.len()
    }

    /// What became of the session `key` names (a web terminal asks while it is open).
    pub fn state(&self, key: &Key) -> State {
        match self.table().get(key) {
            Some(Entry::Live { .. }) => State::Live,
            Some(Entry::Ended { refusal, .. }) => State::Ended(refusal.clone()),
            None => State::Gone,
        }
    }

    /// How many sessions are live.
    pub fn live(&self) -> usize {
        self.table()
            .values()
            .filter(|e| matches!(e, Entry::Live { .. }))
            .count()
    }

    /// Decides every live session again on the current snapshot: those admission refuses end
    /// (with a `session.terminated` event on the `web` route); idle ones and old tombstones go.
    pub fn sweep(&self, auth: &AuthServer) {
        let now = auth.now();
        let snap = auth.admission_snapshot();
        let live: Vec<Found> = {
            let mut table = self.table();
            table.retain(|_, e| match e {
                Entry::Live { idle_until, found } => now < *idle_until || now >= found.cert.expires,
                Entry::Ended { until, .. } => now < *until,
            });
            table
                .values()
                .filter_map(|e| match e {
                    Entry::Live { found, .. } => Some(found.clone()),
                    Entry::Ended { .. } => None,
                })
                .collect()
        };
        let trusted = auth.public_authorities(hop_ca::CaKind::User);
        for found in live {
            let presented = Presented {
                identity: &found.cert.identity,
                issued_at: found.cert.issued_at,
                expires: found.cert.expires,
                login: None,
                target: None,
            };
            let decision = match &snap {
                Ok(snap) => auth.admit_on(snap, &presented, Route::Web).err(),
                Err(_) => None,
            }
            .or_else(|| rotated_out(&found, &trusted, now));
            let Some(refusal) = decision.filter(ends_session) else {
                continue;
            };
            tracing::info!(user = %found.cert.identity.username, reason = refusal.code(), "ending a web session: {refusal}");
            auth.emit(
                auth.event(EventKind::SessionTerminated, &found.cert.identity.username)
                    .field("route", Route::Web.name())
                    .field("reason", refusal.code())
                    .failed(EventKind::SessionTerminated, refusal.to_string()),
            );
            self.end(&found.key, Some(refusal), now);
        }
    }
}

/// Forgets `user`'s least recently used live sessions until a new one fits under
/// [`MAX_PER_USER`].
fn make_room(table: &mut HashMap<Key, Entry>, user: &str) {
    loop {
        let mut count = 0;
        let mut oldest: Option<(SystemTime, Key)> = None;
        for (key, entry) in table.iter() {
            let Entry::Live { found, idle_until } = entry else {
                continue;
            };
            if found.cert.identity.username != user {
                continue;
            }
            count += 1;
            if oldest.is_none_or(|(t, _)| *idle_until < t) {
                oldest = Some((*idle_until, *key));
            }
        }
        match oldest {
            Some((_, key)) if count >= MAX_PER_USER => {
                tracing::info!(%user, "a web login beyond {MAX_PER_USER} sessions ends the least recently used");
                table.remove(&key);
            }
            _ => return,
        }
    }
}

/// Whether a refusal ends the session: every refusal of the identity does; a snapshot Auth
/// cannot build or that is too old refuses requests but leaves the session for when it is back.
/// [`Refusal::KeyRotatedOut`] when the session's certificate verifies against none of the user
/// CA keys trusted now (a rotation's `standby` dropped its key): the session would fail at every
/// node and route, so it ends with a reason instead.
fn rotated_out(found: &Found, trusted: &[hop_ca::CaPublic], now: SystemTime) -> Option<Refusal> {
    let der = hop_ca::parse_pem_certs(&found.credentials.tls_certificate_pem)
        .ok()?
        .into_iter()
        .next()?;
    match hop_ca::verify_user_x509(&der, trusted, now) {
        Err(hop_ca::CaError::UntrustedSigner | hop_ca::CaError::BadSignature) => {
            Some(Refusal::KeyRotatedOut {
                name: found.cert.identity.username.clone(),
            })
        }
        _ => None,
    }
}

pub fn ends_session(refusal: &Refusal) -> bool {
    !matches!(refusal, Refusal::Stale { .. } | Refusal::Unavailable { .. })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn cert(expires_in: u64) -> UserCert {
        UserCert {
            identity: hop_ca::Identity {
                username: "alice".into(),
                ..Default::default()
            },
            issued_at: UNIX_EPOCH + Duration::from_secs(1000),
            expires: UNIX_EPOCH + Duration::from_secs(1000 + expires_in),
        }
    }

    fn credentials() -> SessionCredentials {
        let mut rng = rand::rng();
        SessionCredentials {
            ssh: hop_ca::generate_ssh_keypair(&mut rng).unwrap(),
            ssh_certificate: String::new(),
            tls: hop_ca::generate_x509_keypair(&mut rng).unwrap(),
            tls_certificate_pem: String::new(),
        }
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn a_session_whose_key_a_rotation_dropped_ends_with_its_reason() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut rng = rand::rng();
        let ca = |rng: &mut _| {
            hop_ca::CertAuthority::generate(hop_ca::CaKind::User, "c", now, rng).unwrap()
        };
        let (old, new) = (ca(&mut rng), ca(&mut rng));
        let mut creds = credentials();
        let id = hop_ca::Identity {
            username: "alice".into(),
            cluster: "c".into(),
            ..Default::default()
        };
        creds.tls_certificate_pem = old
            .issue_user_x509(
                &creds.tls.public_spki_der,
                &id,
                now,
                Duration::from_secs(3600),
                &mut rng,
            )
            .unwrap();
        let s = WebSessions::new(Duration::from_secs(60));
        let token = s.create(cert(3600), creds, at(1000)).token;
        let Lookup::Live(found) = s.lookup(&token, at(1001)) else {
            panic!("not live")
        };
        // During the overlap both keys are trusted: the session goes on.
        assert_eq!(
            rotated_out(&found, &[new.public(), old.public()], now),
            None
        );
        // After standby only the new one is.
        let refusal = rotated_out(&found, &[new.public()], now).unwrap();
        assert_eq!(refusal.code(), "ca_untrusted");
        assert!(refusal.to_string().contains("hop login"), "{refusal}");
        assert!(ends_session(&refusal));
    }

    #[test]
    fn the_table_keeps_the_hash_of_the_token_never_the_token() {
        let s = WebSessions::new(Duration::from_secs(60));
        let new = s.create(cert(3600), credentials(), at(1000));
        assert_eq!(new.token.len(), 64);
        let table = s.table();
        let key: Key = Sha256::digest(hex::decode(&new.token).unwrap()).into();
        assert!(table.contains_key(&key));
        let raw: Key = hex::decode(&new.token).unwrap().try_into().unwrap();
        assert!(!table.contains_key(&raw));
    }

    #[test]
    fn a_session_is_found_by_its_token_only() {
        let s = WebSessions::new(Duration::from_secs(60));
        let new = s.create(cert(3600), credentials(), at(1000));
        assert!(matches!(s.lookup(&new.token, at(1001)), Lookup::Live(_)));
        let mut other = new.token.clone().into_bytes();
        other[0] = if other[0] == b'0' { b'1' } else { b'0' };
        let other = String::from_utf8(other).unwrap();
        for bad in [
            other.as_str(),
            "",
            "zz",
            &new.token[..62],
            &format!("{}00", new.token),
        ] {
            assert!(matches!(s.lookup(bad, at(1001)), Lookup::Unknown), "{bad}");
        }
    }

    #[test]
    fn the_csrf_token_must_match_exactly() {
        let s = WebSessions::new(Duration::from_secs(60));
        let new = s.create(cert(3600), credentials(), at(1000));
        let Lookup::Live(found) = s.lookup(&new.token, at(1001)) else {
            panic!("not live")
        };
        assert!(found.csrf_matches(&new.csrf));
        assert_eq!(found.csrf(), new.csrf);
        assert!(!found.csrf_matches(""));
        assert!(!found.csrf_matches(&new.token));
        assert!(!found.csrf_matches(&new.csrf[..63]));
    }

    #[test]
    fn idle_sessions_end_and_use_renews_them_but_never_past_the_certificate() {
        let s = WebSessions::new(Duration::from_secs(60));
        let new = s.create(cert(100), credentials(), at(1000));
        let Lookup::Live(found) = s.lookup(&new.token, at(1050)) else {
            panic!("not live")
        };
        s.renew(&found.key, at(1050));
        assert!(matches!(s.lookup(&new.token, at(1090)), Lookup::Live(_)));
        s.renew(&found.key, at(1090));
        // The idle deadline would be 1150; the certificate ends at 1100, and says so.
        assert!(matches!(
            s.lookup(&new.token, at(1100)),
            Lookup::Ended {
                refusal: Refusal::Expired { ago: 0 },
                ..
            }
        ));
        let idle = s.create(cert(3600), credentials(), at(1000));
        assert!(matches!(s.lookup(&idle.token, at(1060)), Lookup::Unknown));
        assert_eq!(s.live(), 0);
    }

    #[test]
    fn logout_forgets_and_a_refusal_leaves_its_reason_until_expiry() {
        let s = WebSessions::new(Duration::from_secs(60));
        let a = s.create(cert(100), credentials(), at(1000));
        let b = s.create(cert(100), credentials(), at(1000));
        let key = |t: &str| -> Key { Sha256::digest(hex::decode(t).unwrap()).into() };
        s.end(&key(&a.token), None, at(1000));
        assert!(matches!(s.lookup(&a.token, at(1001)), Lookup::Unknown));
        let locked = Refusal::Locked {
            target: "user alice".into(),
            message: String::new(),
        };
        s.end(&key(&b.token), Some(locked.clone()), at(1000));
        match s.lookup(&b.token, at(1001)) {
            Lookup::Ended { refusal, user } => {
                assert_eq!(refusal, locked);
                assert_eq!(user, "alice");
            }
            _ => panic!("no tombstone"),
        }
        // A second ending (a sweep that decided while a request was refused) keeps the first
        // tombstone: the cookie is still answered with its reason.
        s.end(
            &key(&b.token),
            Some(Refusal::Unavailable { reason: "x".into() }),
            at(1001),
        );
        s.end(&key(&b.token), None, at(1001));
        assert!(matches!(
            s.lookup(&b.token, at(1002)),
            Lookup::Ended { refusal, .. } if refusal == locked
        ));
        assert!(matches!(s.lookup(&b.token, at(1599)), Lookup::Ended { .. }));
        assert!(matches!(s.lookup(&b.token, at(1600)), Lookup::Unknown));
    }

    #[test]
    fn a_user_has_at_most_max_per_user_sessions_and_the_least_recently_used_goes() {
        let s = WebSessions::new(Duration::from_secs(60));
        let key = |t: &str| -> Key { Sha256::digest(hex::decode(t).unwrap()).into() };
        let first = s.create(cert(3600), credentials(), at(1000));
        let rest: Vec<NewSession> = (1..MAX_PER_USER as u64)
            .map(|i| s.create(cert(3600), credentials(), at(1000 + i)))
            .collect();
        // The first is the most recently used now; the second the least.
        s.renew(&key(&first.token), at(1040));
        assert_eq!(s.live(), MAX_PER_USER);
        let mut bob_cert = cert(3600);
        bob_cert.identity.username = "bob".into();
        let bob = s.create(bob_cert, credentials(), at(1041));
        let newest = s.create(cert(3600), credentials(), at(1042));
        assert_eq!(s.live(), MAX_PER_USER + 1);
        assert!(matches!(
            s.lookup(&rest[0].token, at(1043)),
            Lookup::Unknown
        ));
        for live in [&first, &rest[1], &newest, &bob] {
            assert!(matches!(s.lookup(&live.token, at(1043)), Lookup::Live(_)));
        }
    }

    #[test]
    fn an_idle_timeout_too_long_for_the_clock_ends_with_the_certificate() {
        let s = WebSessions::new(Duration::MAX);
        let new = s.create(cert(100), credentials(), at(1000));
        let Lookup::Live(found) = s.lookup(&new.token, at(1050)) else {
            panic!("not live")
        };
        s.renew(&found.key, at(1050));
        assert!(matches!(
            s.lookup(&new.token, at(1100)),
            Lookup::Ended { .. }
        ));
    }

    #[test]
    fn only_refusals_of_the_identity_end_a_session() {
        assert!(ends_session(&Refusal::Deleted {
            kind: "user",
            name: "a".into()
        }));
        assert!(ends_session(&Refusal::Expired { ago: 1 }));
        assert!(!ends_session(&Refusal::Unavailable { reason: "x".into() }));
    }
}
