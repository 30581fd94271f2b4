//! Bots at Auth: adding and removing them, their one-time join, and their renewals.
//!
//! This room applies the decisions of [`crate::bots`] to the backend: a join spends its token by
//! deleting it (only one deleter wins), a renewal reads the bot's state, decides, and writes the
//! next generation with one compare-and-swap on the revision it read (a lost race decides again,
//! so a concurrent retry of the same request is answered from the winner's record). A copied
//! identity locks the bot with a `lock` resource. Every outcome is audited; no token is logged.
//! Recovery with a bound key is `bot_recovery`'s.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use hop_rbac::{Role, User};
use hop_storage::StorageError;

use super::{AuthServer, LoginCertificates, random_token, resources, unix};
use crate::audit::EventKind;
use crate::bots::{
    BOT_LABEL, BotError, BotJoinToken, BotState, IssuedRenewal, RenewalAttempt, RenewalDecision,
    bot_name_of, bot_user, decide_renewal, generation_of, key_fingerprint,
};
use crate::error::AuthError;
use crate::records::token_hash;
use hop_api::timestamps::rfc3339;

/// How many times a renewal decides again after losing a compare-and-swap.
pub(super) const CAS_ATTEMPTS: usize = 16;

/// A bot just added: the join token is in this value and nowhere else.
#[derive(Clone)]
pub struct NewBot {
    pub name: String,
    pub user: String,
    pub roles: Vec<String>,
    pub token: String,
    pub token_expires: SystemTime,
}

impl std::fmt::Debug for NewBot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewBot")
            .field("name", &self.name)
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

/// A bot as `hop admin bots ls` shows it.
#[derive(Debug, Clone)]
pub struct BotView {
    pub name: String,
    pub roles: Vec<String>,
    pub logins: Vec<String>,
    pub generation: u64,
    pub last_renewal: Option<SystemTime>,
    pub instances: u32,
    pub recoveries: u32,
    pub recovery_limit: u32,
    pub bound_key: bool,
}

/// The keys a bot wants certified, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct BotKeys<'a> {
    pub ssh_public_key: &'a str,
    pub tls_public_key_der: &'a [u8],
    pub ttl: Option<Duration>,
}

/// A renewal request from the holder of a verified bot certificate.
#[derive(Debug, Clone, Copy)]
pub struct BotRenewal<'a> {
    pub presented: &'a crate::admission::Presented<'a>,
    pub request_id: &'a str,
    pub keys: BotKeys<'a>,
    pub remote: Option<SocketAddr>,
}

impl AuthServer {
    /// Adds bot `name` (the user `bot-NAME` with `roles`, and `logins` as its logins trait) and
    /// a one-time join token valid `token_ttl`.
    pub fn create_bot(
        &self,
        name: &str,
        roles: &[String],
        logins: &[String],
        token_ttl: Duration,
        recovery_limit: u32,
        actor: &str,
    ) -> Result<NewBot, AuthError> {
        let user_name = bot_user(name);
        super::validate_username(&user_name)?;
        if roles.is_empty() {
            return Err(AuthError::BadRequest(format!(
                "bot {name:?} needs at least one role (--roles)"
            )));
        }
        for r in roles {
            if self.store.get::<Role>(r)?.is_none() {
                return Err(AuthError::BadRequest(format!(
                    "role {r:?} does not exist; `hop admin get role` lists the roles"
                )));
            }
        }
        let mut traits = std::collections::BTreeMap::new();
        if !logins.is_empty() {
            traits.insert("logins".to_string(), logins.to_vec());
        }
        let now = self.clock.now();
        let mut user = resources::new_user(&user_name, roles, traits, actor, now)?;
        user.metadata
            .labels
            .insert(BOT_LABEL.to_string(), name.to_string());
        user.status.not_before = Some(resources::created_stamp(now));
        match self.store.create(&user) {
            Ok(_) => {}
            Err(StorageError::AlreadyExists { .. }) => {
                return Err(AuthError::AlreadyExists(format!("user {user_name:?}")));
            }
            Err(e) => return Err(e.into()),
        }
        self.store.upsert(&BotState {
            name: name.to_string(),
            recovery_limit,
            ..BotState::default()
        })?;
        let (token, token_expires) = self.new_bot_token(name, token_ttl)?;
        self.audit_durable(
            self.event(EventKind::BotCreate, actor)
                .field("bot", name)
                .field("name", user_name.clone())
                .field("roles", roles.to_vec())
                .field("recovery_limit", recovery_limit)
                .field("token_expires", rfc3339(token_expires)),
        );
        Ok(NewBot {
            name: name.to_string(),
            user: user_name,
            roles: roles.to_vec(),
            token,
            token_expires,
        })
    }

    fn new_bot_token(&self, bot: &str, ttl: Duration) -> Result<(String, SystemTime), AuthError> {
        let secret = random_token();
        let expires = self.expiry_after(ttl)?;
        self.store.create(&BotJoinToken {
            token_hash: token_hash(&secret),
            bot: bot.to_string(),
            expires_unix: unix(expires),
        })?;
        Ok((secret, expires))
    }

    /// Every bot, by name.
    pub fn list_bots(&self) -> Result<Vec<BotView>, AuthError> {
        let mut out = Vec::new();
        for v in self.store.list::<User>()? {
            let Some(name) = v.value.metadata.labels.get(BOT_LABEL).cloned() else {
                continue;
            };
            let state = self
                .store
                .get::<BotState>(&name)?
                .map(|s| s.value)
                .unwrap_or_default();
            let (roles, traits) = resources::user_roles_and_traits(&v.value);
            out.push(BotView {
                name,
                roles,
                logins: traits.get("logins").cloned().unwrap_or_default(),
                generation: state.generation,
                last_renewal: (state.last_renewal_unix > 0).then(|| {
                    SystemTime::UNIX_EPOCH + Duration::from_secs(state.last_renewal_unix as u64)
                }),
                instances: state.instances,
                recoveries: state.recoveries,
                recovery_limit: state.recovery_limit,
                bound_key: state.bound_key.is_some(),
            });
        }
        Ok(out)
    }

    /// Removes bot `name`: its user (admission then refuses its certificates), its state and
    /// its unused join tokens.
    pub fn delete_bot(&self, name: &str, actor: &str) -> Result<(), AuthError> {
        let user_name = bot_user(name);
        self.bot_user(&user_name)?;
        self.store.delete::<User>(&user_name)?;
        self.store.delete::<BotState>(name)?;
        for t in self.store.list::<BotJoinToken>()? {
            if t.value.bot == name {
                self.store.delete::<BotJoinToken>(&t.value.token_hash)?;
            }
        }
        self.audit_durable(
            self.event(EventKind::BotDelete, actor)
                .field("bot", name)
                .field("name", user_name),
        );
        Ok(())
    }

    /// The user of bot user `user_name`, refused when it is not a bot.
    pub(super) fn bot_user(&self, user_name: &str) -> Result<User, AuthError> {
        let not_a_bot = || {
            AuthError::from(BotError::NotABot {
                name: user_name.to_string(),
            })
        };
        let user = self.store.get::<User>(user_name)?.ok_or_else(not_a_bot)?;
        let name = bot_name_of(user_name).ok_or_else(not_a_bot)?;
        if user
            .value
            .metadata
            .labels
            .get(BOT_LABEL)
            .map(String::as_str)
            != Some(name)
        {
            return Err(not_a_bot());
        }
        Ok(user.value)
    }

    /// A bot's first certificates, for its one-time join token (spent whatever follows).
    pub fn bot_join(
        &self,
        token: &str,
        keys: BotKeys<'_>,
        bound_key: Option<&[u8]>,
        remote: Option<SocketAddr>,
    ) -> Result<LoginCertificates, AuthError> {
        self.rate_limit(remote)?;
        // The bot the token names, once known (for the audit event).
        let mut bot = None;
        let result = self.bot_join_inner(token, keys, bound_key, &mut bot);
        let user = bot.as_deref().map_or_else(|| "anonymous".into(), bot_user);
        let mut ev = self
            .event(EventKind::BotJoin, &user)
            .remote(remote)
            .field("method", "token")
            .field("bound_key", bound_key.is_some());
        match &result {
            Ok(c) => {
                ev = ev
                    .field("bot", bot.unwrap_or_default())
                    .field("generation", generation_of(&c.identity).unwrap_or(0))
                    .field("expires", rfc3339(c.expires));
            }
            Err(e) => ev = ev.failed(EventKind::BotJoin, e.to_string()),
        }
        self.audit_durable(ev);
        result
    }

    fn bot_join_inner(
        &self,
        token: &str,
        keys: BotKeys<'_>,
        bound_key: Option<&[u8]>,
        bot: &mut Option<String>,
    ) -> Result<LoginCertificates, AuthError> {
        if let Some(k) = bound_key {
            // Refused before the token is spent: a key Auth could never verify with.
            hop_ca::check_proof_key(k).map_err(|source| AuthError::UnusableKey {
                field: "bound_public_key",
                source,
            })?;
        }
        let now = self.clock.now();
        let hash = token_hash(token.trim());
        let Some(found) = self.store.get::<BotJoinToken>(&hash)?.map(|v| v.value) else {
            return Err(BotError::InvalidToken.into());
        };
        *bot = Some(found.bot.clone());
        // Spent by deleting it: of two concurrent joins, one deletes and the other is refused.
        let spent = self.store.delete::<BotJoinToken>(&hash)?;
        if !spent || found.expires_unix <= unix(now) {
            return Err(BotError::InvalidToken.into());
        }
        let user_name = bot_user(&found.bot);
        let user = self.bot_user(&user_name)?;
        if let Some(lock) = self.user_lock_in_force(&user_name)? {
            return Err(AuthError::Denied(format!(
                "{user_name} is locked: {}",
                lock.spec.message
            )));
        }
        let bound = bound_key.map(hex::encode);
        self.advance(
            &found.bot,
            &user,
            keys,
            now,
            |state| {
                state.instances = state.instances.saturating_add(1);
                state.bound_key.clone_from(&bound);
                Ok(())
            },
            |_, _| {},
        )
    }

    /// Moves bot `name` to its next generation for a join or a recovery (`change` decides and
    /// records what else changes, on the state as read) and issues certificates at it, with one
    /// compare-and-swap.
    pub(super) fn advance(
        &self,
        name: &str,
        user: &User,
        keys: BotKeys<'_>,
        now: SystemTime,
        change: impl Fn(&mut BotState) -> Result<(), AuthError>,
        remember: impl Fn(&mut BotState, &LoginCertificates),
    ) -> Result<LoginCertificates, AuthError> {
        for _ in 0..CAS_ATTEMPTS {
            let current = self.store.get::<BotState>(name)?;
            let (mut state, revision) = match current {
                Some(v) => (v.value, Some(v.revision)),
                None => (
                    BotState {
                        name: name.to_string(),
                        ..BotState::default()
                    },
                    None,
                ),
            };
            change(&mut state)?;
            state.generation = state.generation.saturating_add(1);
            state.last_renewal_unix = unix(now);
            state.last_issue = None;
            let certs = self.issue_bot_certificates(
                user,
                state.generation,
                (keys.ssh_public_key, keys.tls_public_key_der),
                keys.ttl,
                now,
            )?;
            remember(&mut state, &certs);
            let written = match revision {
                Some(rev) => self.store.update(&state, rev),
                None => self.store.create(&state),
            };
            match written {
                Ok(_) => return Ok(certs),
                Err(StorageError::Conflict { .. } | StorageError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(AuthError::Contended {
            subject: format!("bot {name}"),
            contenders: "joins and renewals",
        })
    }

    /// New certificates for the holder of a bot certificate: see [`crate::bots::decide_renewal`].
    pub fn bot_renew(&self, req: &BotRenewal<'_>) -> Result<LoginCertificates, AuthError> {
        let user_name = req.presented.identity.username.clone();
        let result = self.bot_renew_inner(req);
        let mut ev = self
            .event(EventKind::BotRenew, &user_name)
            .remote(req.remote)
            .field(
                "request_id",
                req.request_id.chars().take(128).collect::<String>(),
            );
        match &result {
            Ok(c) => {
                ev = ev
                    .field("generation", generation_of(&c.identity).unwrap_or(0))
                    .field("expires", rfc3339(c.expires));
            }
            Err(e) => ev = ev.failed(EventKind::BotRenew, e.to_string()),
        }
        self.audit_durable(ev);
        result
    }

    fn bot_renew_inner(&self, req: &BotRenewal<'_>) -> Result<LoginCertificates, AuthError> {
        let identity = req.presented.identity;
        let user_name = identity.username.as_str();
        let user = self.bot_user(user_name)?;
        // The proxy admitted the call already; decided again here so that no path skips it.
        self.admit(req.presented, hop_admission::Route::AdminApi)
            .map_err(|r| AuthError::Denied(r.to_string()))?;
        let Some(generation) = generation_of(identity) else {
            return Err(AuthError::Denied(
                "this certificate carries no bot generation; only a bot's certificate renews"
                    .into(),
            ));
        };
        let name = bot_name_of(user_name).unwrap_or_default().to_string();
        let fingerprint = key_fingerprint(req.keys.ssh_public_key, req.keys.tls_public_key_der);
        let attempt = RenewalAttempt {
            generation,
            request_id: req.request_id,
            key_fingerprint: &fingerprint,
        };
        for _ in 0..CAS_ATTEMPTS {
            let now = self.clock.now();
            let Some(current) = self.store.get::<BotState>(&name)? else {
                return Err(BotError::NotABot {
                    name: user_name.to_string(),
                }
                .into());
            };
            match decide_renewal(&current.value, &attempt, now) {
                RenewalDecision::Refuse(e) => return Err(e.into()),
                RenewalDecision::Replay(issued) => return self.replayed(&user, issued),
                RenewalDecision::CopyDetected { presented, current } => {
                    return Err(self.lock_copied_bot(&name, presented, current, req.remote));
                }
                RenewalDecision::Advance { next } => {
                    let certs = self.issue_bot_certificates(
                        &user,
                        next,
                        (req.keys.ssh_public_key, req.keys.tls_public_key_der),
                        req.keys.ttl,
                        now,
                    )?;
                    let mut state = current.value;
                    state.generation = next;
                    state.last_renewal_unix = unix(now);
                    state.last_issue = Some(IssuedRenewal {
                        request_id: req.request_id.to_string(),
                        key_fingerprint: fingerprint.clone(),
                        from_generation: generation,
                        issued_unix: unix(now),
                        expires_unix: unix(certs.expires),
                        ssh_certificate: certs.ssh_certificate.clone(),
                        tls_certificate_pem: certs.tls_certificate_pem.clone(),
                    });
                    match self.store.update(&state, current.revision) {
                        Ok(_) => return Ok(certs),
                        Err(StorageError::Conflict { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Err(AuthError::Contended {
            subject: format!("bot {name}"),
            contenders: "renewals",
        })
    }

    /// The answer of a renewal already made, given again.
    pub(super) fn replayed(
        &self,
        user: &User,
        issued: IssuedRenewal,
    ) -> Result<LoginCertificates, AuthError> {
        let (known_hosts, trusted_cas_pem, trust_digest) = self.user_trust_bundle();
        let (roles, mut traits) = resources::user_roles_and_traits(user);
        let generation = issued.from_generation.saturating_add(1);
        traits.insert(
            crate::bots::GENERATION_TRAIT.into(),
            vec![generation.to_string()],
        );
        let at =
            |secs: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(secs.max(0).unsigned_abs());
        let checker = self.checker_for(&roles, &traits)?;
        let identity = self.user_identity(&user.metadata.name, &checker, traits);
        Ok(LoginCertificates {
            trust_digest,
            ssh_certificate: issued.ssh_certificate,
            tls_certificate_pem: issued.tls_certificate_pem,
            known_hosts,
            trusted_cas_pem,
            username: user.metadata.name.clone(),
            roles: identity.roles.clone(),
            logins: identity.logins.clone(),
            expires: at(issued.expires_unix),
            identity,
            issued_at: at(issued.issued_unix),
        })
    }

    /// Locks bot `name` after a copy of its identity was used, voiding its certificates; the
    /// error the copy is answered with.
    fn lock_copied_bot(
        &self,
        name: &str,
        presented: u64,
        current: u64,
        remote: Option<SocketAddr>,
    ) -> AuthError {
        let user_name = bot_user(name);
        tracing::warn!(bot = %name, presented, current, "bot certificate of an old generation presented by another holder; locking the bot");
        let message = format!(
            "bot identity copied: generation {presented} presented after {current} was issued"
        );
        if let Err(e) = self.create_lock(
            hop_rbac::LockTarget {
                user: Some(user_name.clone()),
                ..Default::default()
            },
            &message,
            None,
            "auth (bot generation check)",
        ) {
            return e;
        }
        self.audit_durable(
            self.event(EventKind::BotRenew, &user_name)
                .remote(remote)
                .field("reason", "generation_mismatch")
                .field("presented_generation", presented)
                .field("current_generation", current)
                .failed(EventKind::BotRenew, message),
        );
        BotError::Copied {
            name: name.to_string(),
        }
        .into()
    }
}
