//! Bots recovering with their bound key: a proof of possession checked against the key the
//! bot registered at its join, counted against the limit an administrator sets (and raises with
//! `update_bot`), applied with the same one compare-and-swap as a join, and audited as a
//! `bot.join` with `method: bound_keypair`. An unknown bot is answered like a wrong proof.

use std::net::SocketAddr;

use hop_storage::StorageError;

use super::bots::{BotKeys, CAS_ATTEMPTS};
use super::{AuthServer, LoginCertificates, unix};
use crate::audit::EventKind;
use crate::bots::{
    BotError, BotState, IssuedRecovery, IssuedRenewal, bot_user, check_recovery, generation_of,
    key_fingerprint,
};
use crate::error::AuthError;
use hop_api::timestamps::rfc3339;

/// A recovery: a proof of possession of the bot's bound key, from anyone.
#[derive(Debug, Clone, Copy)]
pub struct BotRecovery<'a> {
    pub bot: &'a str,
    pub timestamp_unix: i64,
    pub signature: &'a [u8],
    pub keys: BotKeys<'a>,
    /// A new bound key (DER SubjectPublicKeyInfo), or empty to keep the current one.
    pub next_bound_key: &'a [u8],
    pub remote: Option<SocketAddr>,
}

impl AuthServer {
    /// Certificates for a bot whose own expired, against a proof of possession of its bound key
    /// (see [`crate::bots::check_recovery`]); counted against its recovery limit and audited.
    pub fn bot_recover(&self, req: &BotRecovery<'_>) -> Result<LoginCertificates, AuthError> {
        self.rate_limit(req.remote)?;
        let result = self.bot_recover_inner(req);
        let state = self.store.get::<BotState>(req.bot).ok().flatten();
        let (used, limit) = state.map_or((0, 0), |s| (s.value.recoveries, s.value.recovery_limit));
        let mut ev = self
            .event(EventKind::BotJoin, &bot_user(req.bot))
            .remote(req.remote)
            .field("bot", req.bot)
            .field("method", "bound_keypair")
            .field("recoveries", used)
            .field("recovery_limit", limit)
            .field("key_rotated", !req.next_bound_key.is_empty());
        match &result {
            Ok(c) => {
                ev = ev
                    .field("generation", generation_of(&c.identity).unwrap_or(0))
                    .field("expires", rfc3339(c.expires));
            }
            Err(e) => ev = ev.failed(EventKind::BotJoin, e.to_string()),
        }
        self.audit_durable(ev);
        result
    }

    fn bot_recover_inner(&self, req: &BotRecovery<'_>) -> Result<LoginCertificates, AuthError> {
        let now = self.clock.now();
        let user_name = bot_user(req.bot);
        // Anyone may call: a name that is no bot, a bot without a bound key and a wrong proof
        // all get the same answer, and nothing about the bot's state (its lock, its recoveries,
        // its last proof) is told before the caller proved it holds the bound key.
        let user = self.bot_user(&user_name).map_err(|_| BotError::BadProof)?;
        let fingerprint = key_fingerprint(req.keys.ssh_public_key, req.keys.tls_public_key_der);
        let message = hop_api::bot_proof::recovery_message(
            req.bot,
            req.timestamp_unix,
            &fingerprint,
            req.next_bound_key,
        );
        let proves = |key_hex: Option<&str>| {
            key_hex
                .and_then(|k| hex::decode(k).ok())
                .is_some_and(|key| hop_ca::verify_proof(&key, &message, req.signature).is_ok())
        };
        let proven = |state: &BotState| -> Result<(), BotError> {
            if proves(state.bound_key.as_deref()) {
                Ok(())
            } else {
                Err(BotError::BadProof)
            }
        };
        let next_hex = hex::encode(req.next_bound_key);
        let stored = self
            .store
            .get::<BotState>(req.bot)?
            .ok_or(BotError::BadProof)?;
        // A retry of the last recovery (its answer was lost) gets the same answer instead of
        // spending another recovery. It is signed with the key that recovery was proven with,
        // which the recovery may have rotated away.
        if let Some(last) = &stored.value.last_recovery
            && last.is_retry(&fingerprint, &next_hex, now)
            && proves(Some(last.proven_with.as_str()))
            && self.user_lock_in_force(&user_name)?.is_none()
        {
            return self.replayed(&user, last.issued.clone());
        }
        proven(&stored.value)?;
        if let Some(lock) = self.user_lock_in_force(&user_name)? {
            return Err(AuthError::Denied(format!(
                "{user_name} is locked: {}",
                lock.spec.message
            )));
        }
        if !req.next_bound_key.is_empty() {
            hop_ca::check_proof_key(req.next_bound_key).map_err(|source| {
                AuthError::UnusableKey {
                    field: "next_bound_public_key",
                    source,
                }
            })?;
        }
        let next = (!req.next_bound_key.is_empty()).then(|| next_hex.clone());
        // The bound key this recovery is proven with, kept with its answer for a retry.
        let proven_with = std::sync::Mutex::new(String::new());
        self.advance(
            req.bot,
            &user,
            req.keys,
            now,
            |state| {
                // Again on the state this step swaps (the bound key may have moved meanwhile).
                proven(state)?;
                check_recovery(state, req.timestamp_unix, now)?;
                if let Ok(mut p) = proven_with.lock() {
                    p.clone_from(state.bound_key.as_ref().unwrap_or(&String::new()));
                }
                state.recoveries = state.recoveries.saturating_add(1);
                state.last_recovery_unix = req.timestamp_unix;
                if let Some(k) = &next {
                    state.bound_key = Some(k.clone());
                }
                Ok(())
            },
            |state, certs| {
                state.last_recovery = Some(IssuedRecovery {
                    issued: IssuedRenewal {
                        request_id: "recovery".into(),
                        key_fingerprint: fingerprint.clone(),
                        from_generation: state.generation.saturating_sub(1),
                        issued_unix: unix(now),
                        expires_unix: unix(certs.expires),
                        ssh_certificate: certs.ssh_certificate.clone(),
                        tls_certificate_pem: certs.tls_certificate_pem.clone(),
                    },
                    proven_with: proven_with.lock().map(|p| p.clone()).unwrap_or_default(),
                    next_bound_key: next_hex.clone(),
                });
            },
        )
    }

    /// Sets bot `name`'s recovery limit (an administrator raising it after the bot used it up).
    pub fn update_bot(
        &self,
        name: &str,
        recovery_limit: u32,
        actor: &str,
    ) -> Result<(), AuthError> {
        self.bot_user(&bot_user(name))?;
        for _ in 0..CAS_ATTEMPTS {
            let Some(current) = self.store.get::<BotState>(name)? else {
                return Err(AuthError::NotFound(format!("bot {name:?}")));
            };
            let mut state = current.value;
            let before = state.recovery_limit;
            state.recovery_limit = recovery_limit;
            match self.store.update(&state, current.revision) {
                Ok(_) => {
                    self.audit_durable(
                        self.event(EventKind::BotUpdate, actor)
                            .field("bot", name)
                            .field("recovery_limit", recovery_limit)
                            .field("previous_recovery_limit", before),
                    );
                    return Ok(());
                }
                Err(StorageError::Conflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(AuthError::Contended {
            subject: format!("bot {name}"),
            contenders: "updates",
        })
    }
}
