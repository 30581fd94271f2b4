//! A user's own account, as the web UI's account page changes it: the password (old password
//! and a one-time code checked exactly as a login checks them, with its rate limit, failure
//! counter and lockout), the one-time-code devices (list, add one proven by its first code,
//! remove one but never the last while a second factor is required; the account password they
//! need counts towards the lockout like a login's, and refusals are audited), and what an
//! invitation link is for before it is used (whose it is, until when).
//!
//! It never returns or logs a secret: device listings carry ids and names only, and audit events
//! name the device, never its secret.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::login::{LoginClient, LoginRequest, SecondFactor};
use super::{AuthServer, unix};
use crate::audit::EventKind;
use crate::error::AuthError;
use crate::password;
use crate::records::{
    ChallengePurpose, InviteKind, InviteToken, OtpDevice, SIGNUP_DEVICE, UserSecrets, token_hash,
};
use hop_api::timestamps::rfc3339;
use hop_api::totp;

/// A one-time-code device as its owner sees it: no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtpDeviceView {
    pub id: String,
    pub name: String,
    /// Unknown for the device enrolled at sign-up.
    pub added: Option<SystemTime>,
}

/// An unused, unexpired invitation, as its link's page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingInvite {
    pub user: String,
    /// A reset (the user existed and had a password) rather than a first sign-up.
    pub reset: bool,
    pub expires: SystemTime,
}

/// The longest name a device may have.
const MAX_DEVICE_NAME: usize = 64;

/// The most one-time-code devices a user may have.
pub const MAX_OTP_DEVICES: usize = 8;

fn random_device_id() -> String {
    let mut b = [0u8; 8];
    rand::fill(&mut b[..]);
    hex::encode(b)
}

impl AuthServer {
    /// What invitation token `token` is for, without using it (rate limited per address like a
    /// login: a guess costs as much as a password try).
    pub fn pending_invite(
        &self,
        token: &str,
        remote: Option<SocketAddr>,
    ) -> Result<PendingInvite, AuthError> {
        self.rate_limit(remote)?;
        let Some(invite) = self.store.get::<InviteToken>(&token_hash(token.trim()))? else {
            return Err(AuthError::InviteNotFound);
        };
        let invite = invite.value;
        let expires =
            UNIX_EPOCH + Duration::from_secs(u64::try_from(invite.expires_unix).unwrap_or(0));
        if unix(self.now()) >= invite.expires_unix {
            return Err(AuthError::InviteExpired {
                user: invite.user,
                expired: rfc3339(expires),
            });
        }
        Ok(PendingInvite {
            user: invite.user,
            reset: invite.kind == InviteKind::Reset,
            expires,
        })
    }

    /// Replaces `user`'s password: the old password and a one-time code are checked as a login
    /// checks them (a failure counts towards the lockout). Audited either way.
    pub fn change_password(
        &self,
        user: &str,
        old_password: &str,
        totp_code: &str,
        new_password: &str,
        remote: Option<SocketAddr>,
    ) -> Result<(), AuthError> {
        let result =
            self.check_and_change_password(user, old_password, totp_code, new_password, remote);
        let mut event = self
            .event(EventKind::UserPasswordChange, user)
            .remote(remote);
        if let Err(e) = &result {
            event = event.failed(EventKind::UserPasswordChange, audit_reason(e));
        }
        self.audit.emit_durable(event);
        result.map_err(|e| match e {
            AuthError::Locked { .. } | AuthError::LoginRefused { .. } => {
                AuthError::InvalidCredentials
            }
            other => other,
        })
    }

    fn check_and_change_password(
        &self,
        user: &str,
        old_password: &str,
        totp_code: &str,
        new_password: &str,
        remote: Option<SocketAddr>,
    ) -> Result<(), AuthError> {
        self.rate_limit(remote)?;
        hop_api::password::check_policy(new_password)
            .map_err(|e| AuthError::BadRequest(e.to_string()))?;
        let req = account_check(user, old_password, totp_code, remote);
        self.check_credentials(&req, self.now())?;
        let hash = password::hash(new_password).map_err(AuthError::PasswordHash)?;
        self.update_secrets(user, |s| {
            s.password_hash = Some(hash);
            Ok(())
        })
    }

    /// Reads, changes and writes `user`'s secrets under the login-state lock.
    pub(super) fn update_secrets<T>(
        &self,
        user: &str,
        change: impl FnOnce(&mut UserSecrets) -> Result<T, AuthError>,
    ) -> Result<T, AuthError> {
        let _guard = self
            .login_state
            .lock()
            .map_err(|_| AuthError::Poisoned("login state lock"))?;
        let Some(v) = self.store.get::<UserSecrets>(user)? else {
            return Err(AuthError::NotFound(format!(
                "the credentials of user {user:?}"
            )));
        };
        let mut secrets = v.value;
        let out = change(&mut secrets)?;
        self.store.upsert(&secrets)?;
        Ok(out)
    }

    /// `user`'s one-time-code devices, without their secrets.
    pub fn otp_devices(&self, user: &str) -> Result<Vec<OtpDeviceView>, AuthError> {
        let Some(s) = self.store.get::<UserSecrets>(user)?.map(|v| v.value) else {
            return Ok(Vec::new());
        };
        let signup = s.totp_secret.as_ref().map(|_| OtpDeviceView {
            id: SIGNUP_DEVICE.into(),
            name: "enrolled at sign-up".into(),
            added: None,
        });
        let added = s.otp_devices.iter().map(|d| OtpDeviceView {
            id: d.id.clone(),
            name: d.name.clone(),
            added: Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(d.added_unix).unwrap_or(0))),
        });
        Ok(signup.into_iter().chain(added).collect())
    }

    /// Adds a device to `user` after checking the account password and a code from a device
    /// the user already has, as a login checks them (a stolen web session, even with a phished
    /// password, cannot enroll a second factor of its own; a user without a device gives no
    /// code), then the new device's first code (the user holds its secret). Audited.
    pub fn add_otp_device(
        &self,
        user: &str,
        (password_now, existing_code): (&str, &str),
        name: &str,
        secret_b32: &str,
        code: &str,
        remote: Option<SocketAddr>,
    ) -> Result<OtpDeviceView, AuthError> {
        self.add_otp_device_proven(
            user,
            (password_now, SecondFactor::Otp(existing_code)),
            name,
            secret_b32,
            code,
            remote,
        )
    }

    /// [`Self::add_otp_device`] proven by a code or by a security key's assertion (answering
    /// a challenge for an account change).
    pub fn add_otp_device_proven(
        &self,
        user: &str,
        (password_now, proof): (&str, SecondFactor<'_>),
        name: &str,
        secret_b32: &str,
        code: &str,
        remote: Option<SocketAddr>,
    ) -> Result<OtpDeviceView, AuthError> {
        let added =
            self.check_and_add_device(user, (password_now, proof), name, secret_b32, code, remote);
        if let Err(e) = &added {
            self.audit_refused_device_change(EventKind::MfaAdd, user, remote, e);
        }
        // As for a password change: a wrong password or code, or a locked account, says no more.
        added.map_err(|e| match e {
            AuthError::Locked { .. } | AuthError::LoginRefused { .. } => {
                AuthError::InvalidCredentials
            }
            other => other,
        })
    }

    fn check_and_add_device(
        &self,
        user: &str,
        (password_now, proof): (&str, SecondFactor<'_>),
        name: &str,
        secret_b32: &str,
        code: &str,
        remote: Option<SocketAddr>,
    ) -> Result<OtpDeviceView, AuthError> {
        // The form first (it tells nothing): a mistyped new code must not use up the code of
        // the device the user has, nor count as a failed login.
        let name = name.trim();
        if name.is_empty() || name.chars().count() > MAX_DEVICE_NAME {
            return Err(AuthError::BadRequest(format!(
                "a device needs a name of 1 to {MAX_DEVICE_NAME} characters"
            )));
        }
        let key = totp::decode_secret(secret_b32)
            .map_err(|e| AuthError::BadRequest(format!("secret: {e}")))?;
        let now = self.now();
        let Some(step) = totp::verify(&key, code, now, None) else {
            return Err(AuthError::BadRequest(
                "the one-time code does not match the new device's secret; check the authenticator's clock".into(),
            ));
        };
        self.rate_limit(remote)?;
        // A code is checked as a login checks it; a key's assertion answers an account change's
        // challenge.
        let purpose = match proof {
            SecondFactor::Otp(_) => ChallengePurpose::Login,
            SecondFactor::Webauthn(_) => ChallengePurpose::Manage,
        };
        let req = account_check(user, password_now, "", remote);
        self.check_credentials_with(&req, self.now(), proof, purpose)?;
        let device = OtpDevice {
            id: random_device_id(),
            name: name.to_string(),
            secret: totp::encode_secret(&key),
            added_unix: unix(now),
        };
        let view = OtpDeviceView {
            id: device.id.clone(),
            name: device.name.clone(),
            added: Some(now),
        };
        self.update_secrets(user, |s| {
            if s.totp_secrets().count() >= MAX_OTP_DEVICES {
                return Err(AuthError::BadRequest(format!(
                    "a user has at most {MAX_OTP_DEVICES} one-time-code devices"
                )));
            }
            // The enrollment code is used: it does not log in as well.
            s.totp_last_step = Some(s.totp_last_step.map_or(step, |last| last.max(step)));
            s.otp_devices.push(device);
            Ok(())
        })?;
        self.audit.emit_durable(
            self.event(EventKind::MfaAdd, user)
                .remote(remote)
                .field("device", view.id.clone())
                .field("name", view.name.clone()),
        );
        Ok(view)
    }

    /// Removes device `id` of `user` after checking the account password; never the last one
    /// while logins need a second factor. Audited.
    pub fn remove_otp_device(
        &self,
        user: &str,
        password_now: &str,
        id: &str,
        remote: Option<SocketAddr>,
    ) -> Result<(), AuthError> {
        let removed = self.check_and_remove_device(user, password_now, id, remote);
        if let Err(e) = &removed {
            self.audit_refused_device_change(EventKind::MfaDelete, user, remote, e);
        }
        removed
    }

    fn check_and_remove_device(
        &self,
        user: &str,
        password_now: &str,
        id: &str,
        remote: Option<SocketAddr>,
    ) -> Result<(), AuthError> {
        self.check_password_only(user, password_now, remote)?;
        let required = self.otp_required();
        let second_factor = self.second_factor().to_string();
        self.update_secrets(user, |s| {
            let exists = if id == SIGNUP_DEVICE {
                s.totp_secret.is_some()
            } else {
                s.otp_devices.iter().any(|d| d.id == id)
            };
            if !exists {
                return Err(AuthError::NotFound(format!("one-time-code device {id:?}")));
            }
            if required && super::webauthn::usable_devices(s, &second_factor) <= 1 {
                return Err(AuthError::BadRequest(
                    "this is your only second-factor device: add another before removing it".into(),
                ));
            }
            if id == SIGNUP_DEVICE {
                s.totp_secret = None;
            } else {
                s.otp_devices.retain(|d| d.id != id);
            }
            Ok(())
        })?;
        self.audit.emit_durable(
            self.event(EventKind::MfaDelete, user)
                .remote(remote)
                .field("device", id.to_string()),
        );
        Ok(())
    }

    /// The account password of `user`, rate limited per address and checked like a login's
    /// (a locked user is refused; a wrong one counts towards the lockout, or a stolen web
    /// session could guess it without end): `InvalidCredentials` when it fails.
    fn check_password_only(
        &self,
        user: &str,
        password_now: &str,
        remote: Option<SocketAddr>,
    ) -> Result<(), AuthError> {
        self.rate_limit(remote)?;
        let req = account_check(user, password_now, "", remote);
        self.check_account_password(&req, self.now())
    }

    /// Audits a refused device change (`kind`) of `user`: queued when rate limited (a flood
    /// must not become a flood of synchronous writes), durable otherwise.
    pub(super) fn audit_refused_device_change(
        &self,
        kind: EventKind,
        user: &str,
        remote: Option<SocketAddr>,
        e: &AuthError,
    ) {
        let event = self
            .event(kind, user)
            .remote(remote)
            .failed(kind, audit_reason(e));
        if matches!(e, AuthError::RateLimited { .. }) {
            self.audit.emit(event);
        } else {
            self.audit.emit_durable(event);
        }
    }
}

/// What a caller is told of a refused account change: a wrong password or second factor, or a
/// locked account, says no more than a login would.
pub(super) fn hide_login_detail(e: AuthError) -> AuthError {
    match e {
        AuthError::Locked { .. } | AuthError::LoginRefused { .. } => AuthError::InvalidCredentials,
        other => other,
    }
}

/// What the audit log records of a refused password change or device change: the real reason.
fn audit_reason(e: &AuthError) -> String {
    match e {
        AuthError::LoginRefused { reason } => (*reason).to_string(),
        other => other.to_string(),
    }
}

/// The credentials an account page presents, as a web login would (no key asked for): what
/// the password change and the device calls check with the login's own rules.
pub(super) fn account_check<'a>(
    user: &'a str,
    password: &'a str,
    totp_code: &'a str,
    remote: Option<SocketAddr>,
) -> LoginRequest<'a> {
    LoginRequest {
        username: user,
        password,
        totp_code,
        ssh_public_key: "",
        tls_public_key_der: &[],
        ttl: None,
        remote,
        client: LoginClient::Web,
    }
}
