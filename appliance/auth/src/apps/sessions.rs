//! Application sessions: what a browser's `__Host-hop_app_session` cookie stands for.
//!
//! A session's secret is 32 random bytes shown once (in the cookie); the table is keyed by its
//! SHA-256, so the table gives no usable cookie and a lookup compares digests. A session holds
//! the grant it came from (identity, the login certificate's issue and expiry times), its own
//! expiry, a public id for audit events, and the JWT signed for it at its start: a request
//! costs a digest and a read lock, never a signature or a backend read, and a proxy connection
//! keeps the session it found so that later requests on it skip even that.
//!
//! A session ends at its expiry (found at lookup or by [`AppSessions::sweep`]), when the
//! browser's cookie is replaced, or when admission refuses its identity (the sweep's caller
//! decides). An ended session is marked, so a connection holding it sees the end at once. A user
//! has at most [`MAX_PER_USER`] sessions: a new one beyond them ends the oldest.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use super::AppGrant;
use crate::admission::Presented;
use hop_admission::Refusal;

/// The most live application sessions one user has.
pub const MAX_PER_USER: usize = 64;

/// One live application session.
#[derive(Debug)]
pub struct AppSession {
    /// Public id, for audit events (never the secret).
    pub id: String,
    pub grant: AppGrant,
    pub created: SystemTime,
    pub expires: SystemTime,
    /// The `Hop-Jwt-Assertion` value, signed at the start.
    pub jwt: String,
    /// SHA-256 of the secret.
    key: [u8; 32],
    ended: AtomicBool,
}

impl AppSession {
    /// Whether the session has ended (expired, replaced, voided).
    pub fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// Marks the session ended; `true` the first time (the caller then audits the end).
    pub fn end(&self) -> bool {
        !self.ended.swap(true, Ordering::AcqRel)
    }

    /// The user's name.
    pub fn user(&self) -> &str {
        &self.grant.identity.username
    }

    /// The application's name.
    pub fn app(&self) -> &str {
        &self.grant.app
    }

    /// The session as admission sees it: the login's identity, issued when that login's
    /// certificate was, expiring with the session.
    pub fn presented(&self) -> Presented<'_> {
        Presented {
            identity: &self.grant.identity,
            issued_at: self.grant.issued_at,
            expires: self.expires,
            login: None,
            target: Some(hop_admission::SessionTarget::App {
                app: &self.grant.app,
            }),
        }
    }

    /// Whether `secret` (the cookie's value) is this session's, comparing digests.
    pub fn matches(&self, secret: &str) -> bool {
        use subtle::ConstantTimeEq;
        self.key.ct_eq(&key_of(secret)).into()
    }
}

/// A new session and its secret, shown once.
pub struct NewAppSession {
    pub secret: String,
    pub session: Arc<AppSession>,
    /// A session of the same user this one displaced (over [`MAX_PER_USER`]): audit its end.
    pub displaced: Option<Arc<AppSession>>,
}

/// What a cookie stands for.
#[derive(Debug)]
pub enum SessionLookup {
    Live(Arc<AppSession>),
    /// Found past its expiry: ended now (audit the end once, when [`AppSession::end`] says so).
    Expired(Arc<AppSession>),
    /// Ended by admission (a lock, a deletion, a role change): asked once more after that, the
    /// answer names why instead of sending the browser back into the flow.
    Refused {
        user: String,
        refusal: Refusal,
    },
    Unknown,
}

/// The most refused sessions remembered for their one explanation.
pub const MAX_REFUSED: usize = 4096;

/// A session admission ended: who, why, and until when its cookie could have been sent.
#[derive(Debug)]
struct Refused {
    user: String,
    refusal: Refusal,
    until: SystemTime,
}

fn key_of(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// The live application sessions of this process.
#[derive(Debug, Default)]
pub struct AppSessions {
    table: RwLock<HashMap<[u8; 32], Arc<AppSession>>>,
    refused: std::sync::Mutex<HashMap<[u8; 32], Refused>>,
}

impl AppSessions {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<[u8; 32], Arc<AppSession>>> {
        self.table.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<[u8; 32], Arc<AppSession>>> {
        self.table.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn insert(
        &self,
        grant: AppGrant,
        jwt: String,
        now: SystemTime,
        expires: SystemTime,
    ) -> NewAppSession {
        let mut secret = [0u8; 32];
        let mut id = [0u8; 16];
        rand::fill(&mut secret[..]);
        rand::fill(&mut id[..]);
        let secret = hex::encode(secret);
        let key = key_of(&secret);
        let session = Arc::new(AppSession {
            id: hex::encode(id),
            grant,
            created: now,
            expires,
            jwt,
            key,
            ended: AtomicBool::new(false),
        });
        let mut table = self.write();
        let displaced = oldest_over_cap(&table, session.user());
        if let Some(old) = &displaced {
            table.remove(&old.key);
            old.end();
        }
        table.insert(key, session.clone());
        NewAppSession {
            secret,
            session,
            displaced,
        }
    }

    /// The session cookie value `secret` stands for at `now`.
    pub fn lookup(&self, secret: &str, now: SystemTime) -> SessionLookup {
        let key = key_of(secret);
        let found = self.read().get(&key).cloned();
        match found {
            None => self.take_refused(&key, now),
            Some(s) if s.is_ended() => SessionLookup::Unknown,
            Some(s) if now >= s.expires => {
                self.write().remove(&key);
                SessionLookup::Expired(s)
            }
            Some(s) => SessionLookup::Live(s),
        }
    }

    /// The explanation of a session admission ended, once.
    fn take_refused(&self, key: &[u8; 32], now: SystemTime) -> SessionLookup {
        let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        match refused.remove(key) {
            Some(r) if now < r.until => SessionLookup::Refused {
                user: r.user,
                refusal: r.refusal,
            },
            _ => SessionLookup::Unknown,
        }
    }

    /// Remembers that admission ended `s` (bounded: past sessions go first, then any).
    fn remember_refused(&self, s: &AppSession, refusal: &Refusal, now: SystemTime) {
        let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        if refused.len() >= MAX_REFUSED {
            refused.retain(|_, r| now < r.until);
        }
        if refused.len() >= MAX_REFUSED
            && let Some(first) = refused.keys().next().copied()
        {
            refused.remove(&first);
        }
        let entry = Refused {
            user: s.user().to_owned(),
            refusal: refusal.clone(),
            until: s.expires,
        };
        refused.insert(s.key, entry);
    }

    /// Ends and forgets the session of `secret`, if live.
    pub fn remove(&self, secret: &str) -> Option<Arc<AppSession>> {
        let s = self.write().remove(&key_of(secret))?;
        s.end().then_some(s)
    }

    /// Ends every session past its expiry at `now` or that `refused` turns down (admission,
    /// asked by the caller), and returns them with the reason, each once, for the end's audit.
    pub fn sweep(
        &self,
        now: SystemTime,
        refused: impl Fn(&AppSession) -> Option<Refusal>,
    ) -> Vec<(Arc<AppSession>, String)> {
        let candidates: Vec<Arc<AppSession>> = self.read().values().cloned().collect();
        let mut gone = Vec::new();
        for s in candidates {
            let why = if s.is_ended() {
                Some("ended".to_string())
            } else if now >= s.expires {
                Some("expired".to_string())
            } else {
                refused(&s).map(|refusal| {
                    self.remember_refused(&s, &refusal, now);
                    refusal.to_string()
                })
            };
            if let Some(why) = why {
                gone.push((s, why));
            }
        }
        if gone.is_empty() {
            return gone;
        }
        let mut table = self.write();
        for (s, _) in &gone {
            table.remove(&s.key);
        }
        drop(table);
        gone.retain(|(s, _)| s.end());
        gone
    }

    /// How many sessions the table holds.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether the table holds no session.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The oldest session of `user` when the user already holds [`MAX_PER_USER`].
fn oldest_over_cap(
    table: &HashMap<[u8; 32], Arc<AppSession>>,
    user: &str,
) -> Option<Arc<AppSession>> {
    let mut theirs: Vec<&Arc<AppSession>> = table.values().filter(|s| s.user() == user).collect();
    if theirs.len() < MAX_PER_USER {
        return None;
    }
    theirs.sort_by_key(|s| s.created);
    theirs.first().map(|s| (*s).clone())
}
