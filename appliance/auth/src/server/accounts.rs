//! User accounts: creating and resetting users, locking and unlocking them, and the roles they
//! hold. It decides what a valid user name is and that a user's roles exist; it never sets a
//! password (that is the invitee's, see `invites`) and never logs one.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use hop_rbac::{Role, User};
use hop_storage::StorageError;

use super::invites::Invite;
use super::{AuthServer, resources};
use crate::audit::EventKind;
use crate::error::AuthError;
use crate::records::{InviteKind, UserSecrets};
use hop_api::timestamps::rfc3339;

/// User names: what OpenSSH, PostgreSQL and certificates all accept.
pub fn validate_username(name: &str) -> Result<(), AuthError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@' | '+'));
    if first_ok && rest_ok && name.len() <= 64 {
        Ok(())
    } else {
        Err(AuthError::BadRequest(format!(
            "invalid user name {name:?}: use letters, digits, '.', '_', '-', '@' or '+', starting with a letter or digit (at most 64)"
        )))
    }
}

/// The prefix of the trait keys (and labels) only Auth writes, such as a bot's generation.
pub(crate) const RESERVED_PREFIX: &str = "hop.internal/";

/// Refuses traits an administrator may not set: those under [`RESERVED_PREFIX`].
pub(crate) fn reserved_trait_keys(traits: &BTreeMap<String, Vec<String>>) -> Result<(), AuthError> {
    match traits.keys().find(|k| k.starts_with(RESERVED_PREFIX)) {
        Some(k) => Err(AuthError::BadRequest(format!(
            "trait {k:?}: traits under {RESERVED_PREFIX:?} are Hop's own and cannot be set"
        ))),
        None => Ok(()),
    }
}

impl AuthServer {
    /// Creates a user and an invitation to set their password.
    pub fn create_user(
        &self,
        name: &str,
        roles: &[String],
        traits: BTreeMap<String, Vec<String>>,
        actor: &str,
    ) -> Result<Invite, AuthError> {
        validate_username(name)?;
        reserved_trait_keys(&traits)?;
        if name.starts_with(crate::bots::BOT_USER_PREFIX) {
            return Err(AuthError::BadRequest(format!(
                "user names starting with {:?} are bots'; add a bot with `hop admin bots add`",
                crate::bots::BOT_USER_PREFIX
            )));
        }
        if roles.is_empty() {
            return Err(AuthError::BadRequest(format!(
                "user {name:?} needs at least one role (--roles), for example --roles access"
            )));
        }
        for r in roles {
            if self.store.get::<Role>(r)?.is_none() {
                return Err(AuthError::BadRequest(format!(
                    "role {r:?} does not exist; `hop admin get role` lists the roles"
                )));
            }
        }
        let mut user = resources::new_user(name, roles, traits, actor, self.clock.now())?;
        // A user of the same name deleted earlier leaves certificates behind: void them.
        user.status.not_before = Some(resources::created_stamp(self.clock.now()));
        match self.store.create(&user) {
            Ok(_) => {}
            Err(StorageError::AlreadyExists { .. }) => {
                return Err(AuthError::AlreadyExists(format!("user {name:?}")));
            }
            Err(e) => return Err(e.into()),
        }
        self.audit.emit_durable(
            self.event(EventKind::UserCreate, actor)
                .field("name", name)
                .field("roles", roles.to_vec()),
        );
        self.new_invite(name, InviteKind::Signup)
    }

    /// Clears a user's password and second factor, unlocks them, and issues a reset invitation.
    pub fn reset_user(&self, name: &str, actor: &str) -> Result<Invite, AuthError> {
        let Some(user) = self.store.get::<User>(name)? else {
            return Err(AuthError::NotFound(format!("user {name:?}")));
        };
        // A bot has no password: an invitation would give it one.
        if user
            .value
            .metadata
            .labels
            .contains_key(crate::bots::BOT_LABEL)
        {
            return Err(AuthError::BadRequest(format!(
                "{name:?} is a bot: it has no password; `hop admin bots rm` and `add` give it a new join token"
            )));
        }
        self.store.delete::<UserSecrets>(name)?;
        self.set_lock(name, None)?;
        self.audit.emit_durable(
            self.event(EventKind::UserUpdate, actor)
                .field("name", name)
                .field("action", "reset"),
        );
        self.new_invite(name, InviteKind::Reset)
    }

    /// An administrator's lock: until `until` (or for about a century), with `reason`.
    pub fn lock_user(
        &self,
        name: &str,
        until: Option<SystemTime>,
        reason: &str,
        actor: &str,
    ) -> Result<(), AuthError> {
        let until =
            until.unwrap_or_else(|| self.now() + Duration::from_secs(100 * 365 * 24 * 3600));
        let reason = if reason.trim().is_empty() {
            format!("locked by {actor}")
        } else {
            reason.trim().chars().take(200).collect()
        };
        self.set_lock_with_reason(name, Some(until), &reason)?;
        // The lock is also a `lock` resource, so that proxies and agents refuse the user's
        // sessions, and the certificates the user holds now are void.
        let ttl = until.duration_since(self.now()).unwrap_or_default();
        self.create_lock(
            hop_rbac::LockTarget {
                user: Some(name.to_string()),
                ..Default::default()
            },
            &reason,
            Some(ttl),
            actor,
        )?;
        self.audit.emit_durable(
            self.event(EventKind::UserLocked, actor)
                .field("name", name)
                .field("until", rfc3339(until))
                .field("reason", reason),
        );
        Ok(())
    }

    /// Sets or clears a user's lock and resets the failure counter.
    pub(super) fn set_lock(&self, name: &str, until: Option<SystemTime>) -> Result<(), AuthError> {
        let reason = if until.is_some() {
            "too many failed logins"
        } else {
            ""
        };
        self.set_lock_with_reason(name, until, reason)
    }

    fn set_lock_with_reason(
        &self,
        name: &str,
        until: Option<SystemTime>,
        reason: &str,
    ) -> Result<(), AuthError> {
        let _guard = self
            .login_state
            .lock()
            .map_err(|_| AuthError::Poisoned("login state lock"))?;
        let Some(v) = self.store.get::<User>(name)? else {
            return Err(AuthError::NotFound(format!("user {name:?}")));
        };
        let mut user = v.value;
        resources::set_user_lock(&mut user, until, reason);
        self.store.update(&user, v.revision)?;
        Ok(())
    }

    /// The roles user `name` holds now.
    pub fn user_roles(&self, name: &str) -> Result<Vec<String>, AuthError> {
        let user = self
            .store
            .get::<User>(name)?
            .ok_or_else(|| AuthError::NotFound(format!("user/{name}")))?;
        Ok(resources::user_roles_and_traits(&user.value).0)
    }

    /// When `name` is locked now, until when.
    pub fn user_locked_until(&self, name: &str) -> Result<Option<SystemTime>, AuthError> {
        Ok(self
            .store
            .get::<User>(name)?
            .and_then(|u| resources::locked_until(&u.value, self.clock.now())))
    }

    pub fn unlock_user(&self, name: &str, actor: &str) -> Result<(), AuthError> {
        self.set_lock(name, None)?;
        self.remove_user_locks(name)?;
        self.audit.emit_durable(
            self.event(EventKind::UserUnlocked, actor)
                .field("name", name),
        );
        Ok(())
    }
}
