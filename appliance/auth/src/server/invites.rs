//! Invitations: the single-use tokens that let a new (or reset) user choose a password and enroll
//! a second factor, and completing them. It decides whether an invite is valid and whether the
//! password and TOTP code are acceptable; it never stores a token or a password in clear and
//! never logs either.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hop_rbac::User;

use super::{AuthServer, random_token, unix};
use crate::audit::EventKind;
use crate::error::AuthError;
use crate::password;
use crate::records::{InviteKind, InviteToken, UserSecrets, token_hash};
use hop_api::timestamps::rfc3339;
use hop_api::totp;

/// A new invitation: the user and the token to hand them.
#[derive(Debug, Clone)]
pub struct Invite {
    pub username: String,
    pub token: String,
    pub expires: SystemTime,
}

impl AuthServer {
    /// A new invitation for `user`; the user's earlier ones stop working (a reset is how an
    /// administrator takes back a link that went astray, and a used account must not be
    /// taken over with an older link).
    pub(super) fn new_invite(&self, user: &str, kind: InviteKind) -> Result<Invite, AuthError> {
        for earlier in self.store.list::<InviteToken>()? {
            if earlier.value.user == user {
                self.store
                    .delete::<InviteToken>(&earlier.value.token_hash)?;
            }
        }
        let token = random_token();
        let expires = self.clock.now() + self.settings.invite_ttl;
        self.store.create(&InviteToken {
            token_hash: token_hash(&token),
            user: user.to_string(),
            kind,
            expires_unix: unix(expires),
        })?;
        Ok(Invite {
            username: user.to_string(),
            token,
            expires,
        })
    }

    /// `host:port` users reach the proxy on.
    pub fn web_addr(&self) -> &str {
        &self.settings.web_addr
    }

    /// The URL printed next to an invite token.
    pub fn invite_url(&self, token: &str) -> String {
        format!("https://{}/web/invite/{token}", self.settings.web_addr)
    }

    /// Completes an invitation: sets the password and enrolls the TOTP device.
    pub fn complete_signup(
        &self,
        token: &str,
        new_password: &str,
        totp_secret: &str,
        totp_code: &str,
        remote: Option<SocketAddr>,
    ) -> Result<String, AuthError> {
        self.rate_limit(remote)?;
        let now = self.clock.now();
        let Some(invite) = self.store.get::<InviteToken>(&token_hash(token.trim()))? else {
            return Err(AuthError::InviteNotFound);
        };
        let invite = invite.value;
        if unix(now) >= invite.expires_unix {
            self.store.delete::<InviteToken>(&invite.token_hash)?;
            let expired =
                UNIX_EPOCH + Duration::from_secs(u64::try_from(invite.expires_unix).unwrap_or(0));
            return Err(AuthError::InviteExpired {
                user: invite.user,
                expired: rfc3339(expired),
            });
        }
        hop_api::password::check_policy(new_password)
            .map_err(|e| AuthError::BadRequest(e.to_string()))?;
        let mut secrets = UserSecrets {
            user: invite.user.clone(),
            ..Default::default()
        };
        if self.otp_required() || !totp_secret.is_empty() {
            let key = totp::decode_secret(totp_secret)
                .map_err(|e| AuthError::BadRequest(format!("totp_secret: {e}")))?;
            let Some(step) = totp::verify(&key, totp_code, now, None) else {
                return Err(AuthError::BadRequest(
                    "the one-time code does not match the TOTP secret; check the authenticator's clock".into(),
                ));
            };
            secrets.totp_secret = Some(totp::encode_secret(&key));
            secrets.totp_last_step = Some(step);
        }
        secrets.password_hash =
            Some(password::hash(new_password).map_err(AuthError::PasswordHash)?);
        if self.store.get::<User>(&invite.user)?.is_none() {
            self.store.delete::<InviteToken>(&invite.token_hash)?;
            return Err(AuthError::NotFound(format!("user {:?}", invite.user)));
        }
        // The invite is single use: whoever deletes it first completes the sign-up.
        if !self.store.delete::<InviteToken>(&invite.token_hash)? {
            return Err(AuthError::InviteNotFound);
        }
        self.store.upsert(&secrets)?;
        self.set_lock(&invite.user, None)?;
        self.metrics.signups.inc();
        self.audit.emit_durable(
            self.event(EventKind::UserSignup, &invite.user)
                .remote(remote)
                .field(
                    "second_factor",
                    if secrets.totp_secret.is_some() {
                        "otp"
                    } else {
                        "none"
                    },
                ),
        );
        Ok(invite.user)
    }
}
