//! Join tokens at Auth: how a token is made, recognized and used up.
//!
//! This module owns the token lifecycle. A token is a `token` resource named by a random public
//! id (`tok-…`); the secret an agent presents is shown once at creation and kept only as its
//! SHA-256 (`spec.secret_hash`), so neither the backend nor `hop admin get token` holds it. A
//! secret an administrator chooses must pass [`hop_rbac::check_secret_strength`]. A token that
//! grants `proxy` grants nothing else. Limited tokens (`--uses N`) are counted down with a
//! compare-and-swap on the backend, so concurrent joins (even through several Auth servers on one
//! backend) never use a token more often than it allows. Nothing here logs a secret.

use std::time::SystemTime;

use hop_rbac::{ProvisionToken, SystemRole};
use hop_storage::{StorageError, Versioned};
use subtle::ConstantTimeEq;

use super::audit::EventKind;
use super::error::AuthError;
use super::records::token_hash;
use super::resources;
use super::server::AuthServer;
use hop_api::timestamps::rfc3339;

/// How many times a join retries its compare-and-swap against concurrent joins before giving up.
const CAS_ATTEMPTS: usize = 16;

/// A token just made: the secret is in this value and nowhere else.
#[derive(Clone)]
pub struct NewJoinToken {
    pub id: String,
    pub secret: String,
    pub roles: Vec<String>,
    pub expires: SystemTime,
}

impl std::fmt::Debug for NewJoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewJoinToken")
            .field("id", &self.id)
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

/// Why a presented join token is refused. The caller sees these words; none carries the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinTokenError {
    #[error("the join token is not valid or has expired; create one with `hop admin tokens add`")]
    Invalid,
    #[error(
        "the join token {id} has been used as many times as it allows (--uses); create a new one with `hop admin tokens add`"
    )]
    UsedUp { id: String },
    #[error("the join token does not allow the {role} role")]
    WrongRole { role: String },
    #[error(
        "the join token {id} grants proxy together with other roles; a proxy joins only with a token made with `--type proxy` alone"
    )]
    ProxyMixed { id: String },
}

/// A random 128-bit secret, as hex.
fn random_secret() -> String {
    let mut b = [0u8; 16];
    rand::fill(&mut b[..]);
    hex::encode(b)
}

/// A random public id that cannot be mistaken for a secret.
fn random_id() -> String {
    let mut b = [0u8; 6];
    rand::fill(&mut b[..]);
    format!("tok-{}", hex::encode(b))
}

fn same_hash(stored: Option<&str>, presented: &str) -> bool {
    stored.is_some_and(|s| bool::from(s.as_bytes().ct_eq(presented.as_bytes())))
}

impl AuthServer {
    /// Makes a join token for `roles`, valid `ttl`, with `value` as its secret (checked against
    /// the strength floor) or a random one, limited to `uses` joins when given.
    pub fn create_join_token(
        &self,
        roles: &[String],
        ttl: std::time::Duration,
        value: Option<&str>,
        uses: Option<u32>,
        actor: &str,
    ) -> Result<NewJoinToken, AuthError> {
        let secret = match value.filter(|v| !v.is_empty()) {
            Some(v) => {
                hop_rbac::check_secret_strength(v)
                    .map_err(|e| AuthError::BadRequest(format!("--value: {e}")))?;
                v.to_string()
            }
            None => random_secret(),
        };
        let hash = token_hash(&secret);
        if self.find_token(&hash)?.is_some() {
            return Err(AuthError::AlreadyExists(
                "a join token with that value".into(),
            ));
        }
        let expires = self.expiry_after(ttl)?;
        let id = random_id();
        let token = resources::new_join_token(&id, roles, expires, uses, &hash)?;
        self.store().create(&token)?;
        self.audit_durable(
            self.event(EventKind::JoinTokenCreate, actor)
                .field("token_id", id.clone())
                .field("roles", roles.to_vec())
                .field("uses", uses.map_or(serde_json::Value::Null, Into::into))
                .field("expires", rfc3339(expires)),
        );
        Ok(NewJoinToken {
            id,
            secret,
            roles: roles.to_vec(),
            expires,
        })
    }

    /// The token whose secret hashes to `hash`. Tokens are few, so every one is compared (in
    /// constant time) rather than indexed by a name derived from the secret.
    fn find_token(&self, hash: &str) -> Result<Option<Versioned<ProvisionToken>>, AuthError> {
        Ok(self
            .store()
            .list::<ProvisionToken>()?
            .into_iter()
            .find(|t| same_hash(t.value.spec.secret_hash.as_deref(), hash)))
    }

    /// The id of the token `secret` is, if it lets an agent join as `role` now. Spends nothing
    /// ([`AuthServer::consume_join_token`] does).
    pub(super) fn check_join_token(
        &self,
        secret: &str,
        role: SystemRole,
    ) -> Result<String, AuthError> {
        let hash = token_hash(secret.trim());
        let Some(found) = self.find_token(&hash)? else {
            return Err(JoinTokenError::Invalid.into());
        };
        check_token(&found.value, role, self.now())?;
        if found.value.spec.uses == Some(0) {
            return Err(JoinTokenError::UsedUp {
                id: found.value.metadata.name,
            }
            .into());
        }
        Ok(found.value.metadata.name)
    }

    /// Spends one use of token `id` with a compare-and-swap, retrying when another join won the
    /// race; refused once none is left. Tokens without a limit are left alone.
    pub(super) fn consume_join_token(&self, id: &str) -> Result<(), AuthError> {
        for _ in 0..CAS_ATTEMPTS {
            let Some(current) = self.store().get::<ProvisionToken>(id)? else {
                return Err(JoinTokenError::Invalid.into());
            };
            let mut token = current.value;
            let left = match token.spec.uses {
                None => return Ok(()),
                Some(0) => return Err(JoinTokenError::UsedUp { id: id.to_string() }.into()),
                Some(n) => n - 1,
            };
            // A used-up token stays (with 0 uses left) until it expires, so that a later
            // attempt is told why.
            token.spec.uses = Some(left);
            match self.store().update(&token, current.revision) {
                Ok(_) => return Ok(()),
                Err(StorageError::Conflict { .. }) => continue,
                Err(StorageError::NotFound { .. }) => return Err(JoinTokenError::Invalid.into()),
                Err(e) => return Err(e.into()),
            }
        }
        Err(AuthError::Contended {
            subject: format!("join token {id}"),
            contenders: "joins",
        })
    }

    /// Rewrites tokens of older versions, whose name was the secret, into the current shape:
    /// a random id and the secret's hash. Run once at start.
    pub(super) fn migrate_legacy_tokens(&self) -> Result<(), AuthError> {
        for v in self.store().list::<ProvisionToken>()? {
            let old = v.value;
            if old.spec.secret_hash.is_some() {
                continue;
            }
            let mut token = old.clone();
            token.metadata.name = random_id();
            token.spec.secret_hash = Some(token_hash(&old.metadata.name));
            self.store().create(&token)?;
            self.store().delete::<ProvisionToken>(&old.metadata.name)?;
            tracing::info!(token_id = %token.metadata.name, "stored a join token of an older version as a hash");
        }
        Ok(())
    }
}

/// Whether `token` lets an agent join as `role` at `now` (uses are counted separately).
fn check_token(
    token: &ProvisionToken,
    role: SystemRole,
    now: SystemTime,
) -> Result<(), JoinTokenError> {
    let id = token.metadata.name.clone();
    let expired = token
        .metadata
        .expires
        .is_none_or(|e| SystemTime::from(e) <= now);
    if expired {
        return Err(JoinTokenError::Invalid);
    }
    if !token.spec.roles.contains(&role) {
        return Err(JoinTokenError::WrongRole {
            role: role.as_str().to_string(),
        });
    }
    if token.spec.roles.contains(&SystemRole::Proxy) && token.spec.roles.len() > 1 {
        return Err(JoinTokenError::ProxyMixed { id });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn token(roles: &[SystemRole]) -> ProvisionToken {
        ProvisionToken::new("tok-1", roles, datetime!(2030-01-01 00:00 UTC))
    }

    #[test]
    fn tokens_are_checked_for_expiry_role_and_proxy_mixing() {
        let before = SystemTime::from(datetime!(2029-12-31 00:00 UTC));
        let after = SystemTime::from(datetime!(2030-01-01 00:00 UTC));
        let node = token(&[SystemRole::Node]);
        assert_eq!(check_token(&node, SystemRole::Node, before), Ok(()));
        assert_eq!(
            check_token(&node, SystemRole::Node, after),
            Err(JoinTokenError::Invalid)
        );
        assert!(matches!(
            check_token(&node, SystemRole::App, before),
            Err(JoinTokenError::WrongRole { .. })
        ));
        // A stored token of an older version that mixes proxy in is refused for every role.
        let mixed = token(&[SystemRole::Node, SystemRole::Proxy]);
        for role in [SystemRole::Node, SystemRole::Proxy] {
            assert!(matches!(
                check_token(&mixed, role, before),
                Err(JoinTokenError::ProxyMixed { .. })
            ));
        }
        assert_eq!(
            check_token(&token(&[SystemRole::Proxy]), SystemRole::Proxy, before),
            Ok(())
        );
    }

    #[test]
    fn ids_are_not_secrets() {
        let (id, secret) = (random_id(), random_secret());
        assert!(id.starts_with("tok-") && id.len() == 16, "{id}");
        assert_eq!(secret.len(), 32);
        assert!(hop_rbac::check_secret_strength(&secret).is_ok());
        assert!(!same_hash(None, &token_hash(&secret)));
        assert!(same_hash(Some(&token_hash(&secret)), &token_hash(&secret)));
    }
}
