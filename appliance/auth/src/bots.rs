//! Bots: machine identities that renew short-lived certificates on their own.
//!
//! This module owns what a bot is in the backend and the one decision that matters for its
//! safety: what a renewal presenting generation `g` with request id `r` and key `k` gets. A bot
//! is the user `bot-NAME` (labelled [`BOT_LABEL`], with no password and no second factor) plus a
//! [`BotState`] record holding its generation, its last renewal and the certificates last issued
//! (so that a retried renewal gets them back). Its one-time join tokens are [`BotJoinToken`]
//! records stored under the SHA-256 of the secret. The generation a certificate was issued at
//! travels in the certificate as the reserved trait [`GENERATION_TRAIT`].
//!
//! A bot may register a bound key (P-256) at its join; with it, a bot whose certificates
//! expired recovers by signing a fresh [`hop_api::bot_proof::recovery_message`], at most
//! `recovery_limit` times ([`check_recovery`]).
//!
//! It never does IO and never reads a clock ([`decide_renewal`] takes `now`), and never holds a
//! secret in a Debug output.

use std::time::{Duration, SystemTime};

use hop_storage::StoredResource;
use serde::{Deserialize, Serialize};

/// The label on a bot's user resource; its value is the bot's name.
pub const BOT_LABEL: &str = "hop.internal/bot";
/// The trait that carries, in a bot's certificates, the generation they were issued at.
pub const GENERATION_TRAIT: &str = "hop.internal/bot-generation";
/// The prefix of a bot's user name.
pub const BOT_USER_PREFIX: &str = "bot-";
/// A bot certificate's lifetime when the bot asks for none.
pub const DEFAULT_BOT_TTL: Duration = Duration::from_secs(3600);
/// The longest bot certificate Auth issues, whatever the bot or its roles ask for.
pub const MAX_BOT_TTL: Duration = Duration::from_secs(24 * 3600);
/// The shortest bot certificate Auth issues (a shorter request is raised to it).
pub const MIN_BOT_TTL: Duration = Duration::from_secs(60);
/// How long a renewal retried with the same request id and key gets the same certificates.
pub const RETRY_WINDOW: Duration = Duration::from_secs(60);
/// A bot join token's lifetime when the administrator gives none.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// The user name of bot `name`.
#[must_use]
pub fn bot_user(name: &str) -> String {
    format!("{BOT_USER_PREFIX}{name}")
}

/// The certificate lifetime a bot gets for `requested`: [`DEFAULT_BOT_TTL`] when it asks for
/// none, never below [`MIN_BOT_TTL`], never above [`MAX_BOT_TTL`] or its roles' maximum.
#[must_use]
pub fn bot_ttl(requested: Option<Duration>, roles_max: Duration) -> Duration {
    requested
        .unwrap_or(DEFAULT_BOT_TTL)
        .max(MIN_BOT_TTL)
        .min(MAX_BOT_TTL)
        .min(roles_max)
}

/// What Auth keeps about a bot besides its user.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct BotState {
    pub name: String,
    /// The generation the bot's newest certificates carry; advanced by every renewal.
    pub generation: u64,
    /// Unix seconds of the last join or renewal (0: never).
    pub last_renewal_unix: i64,
    /// How many times the bot joined with a token (each join is one instance).
    pub instances: u32,
    /// The certificates the last renewal issued, for a retry of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_issue: Option<IssuedRenewal>,
    /// The bound key (hex of its DER SubjectPublicKeyInfo) the bot registered at its join; it
    /// proves possession of it to recover after its certificates expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound_key: Option<String>,
    /// Recoveries with the bound key so far, and how many the administrator allows.
    #[serde(default)]
    pub recoveries: u32,
    #[serde(default)]
    pub recovery_limit: u32,
    /// Unix seconds of the last recovery's proof: a proof must be newer (no replay).
    #[serde(default)]
    pub last_recovery_unix: i64,
    /// The last recovery's answer, so that a bot whose answer was lost gets it again (once
    /// more within the retry window) instead of spending another recovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_recovery: Option<IssuedRecovery>,
}

/// One recovery's answer and the bound keys around it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct IssuedRecovery {
    pub issued: IssuedRenewal,
    /// The bound key (hex SPKI) the recovery was proven with: a retry is signed with it again.
    pub proven_with: String,
    /// The next bound key it named (hex SPKI; empty for none): a retry names the same.
    pub next_bound_key: String,
}

impl IssuedRecovery {
    /// Whether a recovery for `fingerprint`, naming `next`, at `now` would be a retry of this
    /// one within [`RETRY_WINDOW`] (the caller checks it is proven with [`Self::proven_with`]).
    #[must_use]
    pub fn is_retry(&self, fingerprint: &str, next: &str, now: SystemTime) -> bool {
        let age = unix(now).saturating_sub(self.issued.issued_unix);
        !self.proven_with.is_empty()
            && self.issued.key_fingerprint == fingerprint
            && self.next_bound_key == next
            && u64::try_from(age).is_ok_and(|a| a <= RETRY_WINDOW.as_secs())
    }
}

impl StoredResource for BotState {
    const KIND: &'static str = "bot_state";
    fn name(&self) -> &str {
        &self.name
    }
}

/// One renewal's answer, kept so that the same request gets it again.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct IssuedRenewal {
    pub request_id: String,
    /// hex(sha256) of the public keys the renewal certified.
    pub key_fingerprint: String,
    /// The generation the renewing certificate carried.
    pub from_generation: u64,
    pub issued_unix: i64,
    pub expires_unix: i64,
    pub ssh_certificate: String,
    pub tls_certificate_pem: String,
}

/// A one-time bot join token, stored under hex(sha256(secret)).
#[derive(Clone, Serialize, Deserialize)]
pub struct BotJoinToken {
    pub token_hash: String,
    pub bot: String,
    pub expires_unix: i64,
}

impl std::fmt::Debug for BotJoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BotJoinToken")
            .field("bot", &self.bot)
            .field("expires_unix", &self.expires_unix)
            .finish_non_exhaustive()
    }
}

impl StoredResource for BotJoinToken {
    const KIND: &'static str = "bot_token";
    fn name(&self) -> &str {
        &self.token_hash
    }
}

/// A renewal as it reaches the decision.
#[derive(Debug, Clone, Copy)]
pub struct RenewalAttempt<'a> {
    /// The generation in the certificate the bot renews with.
    pub generation: u64,
    pub request_id: &'a str,
    pub key_fingerprint: &'a str,
}

/// What a renewal gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenewalDecision {
    /// New certificates at `next`, written only if the state is still at the revision read.
    Advance { next: u64 },
    /// The same request again within the window: the certificates already issued.
    Replay(IssuedRenewal),
    /// Refused, nothing changes.
    Refuse(BotError),
    /// An old generation from another holder: the bot's data was copied. Lock the bot.
    CopyDetected { presented: u64, current: u64 },
}

/// Why a bot operation is refused (the words the bot sees; none carries a secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BotError {
    #[error(
        "the bot join token is not valid, was used already or has expired; make a new one with `hop admin bots add`"
    )]
    InvalidToken,
    #[error("{name:?} is not a bot (`hop admin bots ls` lists the bots)")]
    NotABot { name: String },
    #[error(
        "this renewal was answered more than {}s ago and cannot be answered again; the bot must join again",
        RETRY_WINDOW.as_secs()
    )]
    RetryTooLate,
    #[error("the certificate's generation {presented} is newer than the bot's {current}; refusing")]
    FutureGeneration { presented: u64, current: u64 },
    #[error("a renewal needs a request id of 8 to 128 characters")]
    BadRequestId,
    #[error("the bot registered no bound key at its join; it cannot recover, add it again")]
    NoBoundKey,
    #[error(
        "the bot has recovered {used} times, its limit; an administrator can raise it with `hop admin bots update NAME --recoveries N`"
    )]
    RecoveryLimit { used: u32, limit: u32 },
    #[error(
        "the recovery proof is not fresh (its time must be within {}s of Auth's clock and newer than the last one)",
        PROOF_WINDOW.as_secs()
    )]
    StaleProof,
    #[error("the recovery proof does not verify with the bot's bound key")]
    BadProof,
    #[error(
        "bot {name:?} is locked: a certificate of an older generation was presented by another holder (a copy of the bot's data); an administrator must remove the lock and join the bot again"
    )]
    Copied { name: String },
}

/// How far a recovery proof's time may be from Auth's clock.
pub const PROOF_WINDOW: Duration = Duration::from_secs(60);

/// Whether a recovery signed at `proof_unix` may go ahead for `state` at `now` (the signature
/// itself is checked by the caller against [`BotState::bound_key`]).
pub fn check_recovery(state: &BotState, proof_unix: i64, now: SystemTime) -> Result<(), BotError> {
    if state.bound_key.is_none() {
        return Err(BotError::NoBoundKey);
    }
    if state.recoveries >= state.recovery_limit {
        return Err(BotError::RecoveryLimit {
            used: state.recoveries,
            limit: state.recovery_limit,
        });
    }
    let skew = unix(now).abs_diff(proof_unix);
    if skew > PROOF_WINDOW.as_secs() || proof_unix <= state.last_recovery_unix {
        return Err(BotError::StaleProof);
    }
    Ok(())
}

/// The decision for `attempt` against `state` at `now`. Pure: the caller applies it with a
/// compare-and-swap on the revision it read `state` at.
#[must_use]
pub fn decide_renewal(
    state: &BotState,
    attempt: &RenewalAttempt<'_>,
    now: SystemTime,
) -> RenewalDecision {
    if !(8..=128).contains(&attempt.request_id.len()) {
        return RenewalDecision::Refuse(BotError::BadRequestId);
    }
    if let Some(last) = &state.last_issue
        && last.request_id == attempt.request_id
        && last.key_fingerprint == attempt.key_fingerprint
        && last.from_generation == attempt.generation
    {
        let age = unix(now).saturating_sub(last.issued_unix);
        return if u64::try_from(age).unwrap_or(u64::MAX) <= RETRY_WINDOW.as_secs() {
            RenewalDecision::Replay(last.clone())
        } else {
            RenewalDecision::Refuse(BotError::RetryTooLate)
        };
    }
    match attempt.generation.cmp(&state.generation) {
        std::cmp::Ordering::Equal => RenewalDecision::Advance {
            next: state.generation.saturating_add(1),
        },
        std::cmp::Ordering::Less => RenewalDecision::CopyDetected {
            presented: attempt.generation,
            current: state.generation,
        },
        std::cmp::Ordering::Greater => RenewalDecision::Refuse(BotError::FutureGeneration {
            presented: attempt.generation,
            current: state.generation,
        }),
    }
}

pub use hop_api::bot_proof::key_fingerprint;

/// The generation a bot certificate carries, from its identity's traits.
#[must_use]
pub fn generation_of(identity: &hop_ca::Identity) -> Option<u64> {
    identity
        .traits
        .get(GENERATION_TRAIT)
        .and_then(|v| v.first())
        .and_then(|g| g.parse().ok())
}

/// The bot name of a bot user (`bot-NAME` → `NAME`).
#[must_use]
pub fn bot_name_of(user: &str) -> Option<&str> {
    user.strip_prefix(BOT_USER_PREFIX).filter(|n| !n.is_empty())
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn state(generation: u64) -> BotState {
        BotState {
            name: "ci".into(),
            generation,
            ..BotState::default()
        }
    }

    fn attempt<'a>(generation: u64, request_id: &'a str, key: &'a str) -> RenewalAttempt<'a> {
        RenewalAttempt {
            generation,
            request_id,
            key_fingerprint: key,
        }
    }

    fn issued(from: u64, request_id: &str, key: &str, when: u64) -> IssuedRenewal {
        IssuedRenewal {
            request_id: request_id.into(),
            key_fingerprint: key.into(),
            from_generation: from,
            issued_unix: i64::try_from(when).unwrap(),
            ssh_certificate: "ssh-cert".into(),
            ..IssuedRenewal::default()
        }
    }

    #[test]
    fn the_current_generation_advances_by_one() {
        let d = decide_renewal(&state(4), &attempt(4, "req-00001", "k1"), at(1000));
        assert_eq!(d, RenewalDecision::Advance { next: 5 });
    }

    #[test]
    fn a_retry_within_the_window_gets_the_same_certificates() {
        let mut s = state(5);
        s.last_issue = Some(issued(4, "req-00001", "k1", 1000));
        let d = decide_renewal(&s, &attempt(4, "req-00001", "k1"), at(1000 + 60));
        assert_eq!(
            d,
            RenewalDecision::Replay(issued(4, "req-00001", "k1", 1000))
        );
        // After the window: refused, not locked.
        let late = decide_renewal(&s, &attempt(4, "req-00001", "k1"), at(1000 + 61));
        assert_eq!(late, RenewalDecision::Refuse(BotError::RetryTooLate));
    }

    #[test]
    fn an_old_generation_from_another_holder_is_a_copy() {
        let mut s = state(5);
        s.last_issue = Some(issued(4, "req-00001", "k1", 1000));
        // Same generation as the retried one, but another request or another key.
        for a in [attempt(4, "req-00002", "k1"), attempt(4, "req-00001", "k2")] {
            assert_eq!(
                decide_renewal(&s, &a, at(1001)),
                RenewalDecision::CopyDetected {
                    presented: 4,
                    current: 5
                }
            );
        }
        // Any older generation at all.
        assert!(matches!(
            decide_renewal(&s, &attempt(1, "req-00003", "k3"), at(1001)),
            RenewalDecision::CopyDetected { .. }
        ));
    }

    #[test]
    fn a_future_generation_and_a_bad_request_id_are_refused() {
        assert!(matches!(
            decide_renewal(&state(2), &attempt(3, "req-00001", "k"), at(1)),
            RenewalDecision::Refuse(BotError::FutureGeneration { .. })
        ));
        assert_eq!(
            decide_renewal(&state(2), &attempt(2, "short", "k"), at(1)),
            RenewalDecision::Refuse(BotError::BadRequestId)
        );
    }

    #[test]
    fn recoveries_need_a_key_a_fresh_proof_and_room_under_the_limit() {
        let mut s = state(3);
        assert_eq!(
            check_recovery(&s, 1000, at(1000)),
            Err(BotError::NoBoundKey)
        );
        s.bound_key = Some("00".into());
        s.recovery_limit = 2;
        assert_eq!(check_recovery(&s, 1000, at(1000)), Ok(()));
        assert_eq!(check_recovery(&s, 939, at(1000)), Err(BotError::StaleProof));
        assert_eq!(
            check_recovery(&s, 1061, at(1000)),
            Err(BotError::StaleProof)
        );
        s.last_recovery_unix = 1000;
        assert_eq!(
            check_recovery(&s, 1000, at(1000)),
            Err(BotError::StaleProof)
        );
        s.recoveries = 2;
        assert_eq!(
            check_recovery(&s, 1001, at(1001)),
            Err(BotError::RecoveryLimit { used: 2, limit: 2 })
        );
    }

    #[test]
    fn ttl_defaults_to_an_hour_and_is_capped_at_a_day_and_by_roles() {
        let roles = Duration::from_secs(30 * 3600);
        assert_eq!(bot_ttl(None, roles), DEFAULT_BOT_TTL);
        assert_eq!(
            bot_ttl(Some(Duration::from_secs(48 * 3600)), roles),
            MAX_BOT_TTL
        );
        assert_eq!(bot_ttl(Some(Duration::from_secs(1)), roles), MIN_BOT_TTL);
        assert_eq!(
            bot_ttl(Some(Duration::from_secs(7200)), Duration::from_secs(1800)),
            Duration::from_secs(1800)
        );
    }

    #[test]
    fn fingerprints_tell_keys_apart_and_names_parse() {
        assert_ne!(key_fingerprint("a", b"bc"), key_fingerprint("ab", b"c"));
        assert_eq!(key_fingerprint("a ", b"x"), key_fingerprint("a", b"x"));
        assert_eq!(bot_name_of("bot-ci"), Some("ci"));
        assert_eq!(bot_name_of("bot-"), None);
        assert_eq!(bot_name_of("alice"), None);
        let mut id = hop_ca::Identity::default();
        id.traits.insert(GENERATION_TRAIT.into(), vec!["7".into()]);
        assert_eq!(generation_of(&id), Some(7));
    }
}
