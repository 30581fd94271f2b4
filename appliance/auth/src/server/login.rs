//! Login: whether a password and second factor earn a certificate pair. It owns the per-IP rate
//! limit, the failure counter and the lock after repeated failures, and tells a caller nothing
//! about which part was wrong (the real reason goes to the audit log only). It never logs a
//! password or a code, and both checks always run so that timing tells no case apart.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use hop_rbac::User;

use super::webauthn::{AcceptedAssertion, WebauthnAssertion};
use super::{AuthServer, resources};
use crate::audit::EventKind;
use crate::error::AuthError;
use crate::password;
use crate::records::{ChallengePurpose, UserSecrets};
use hop_api::timestamps::rfc3339;
use hop_api::totp;

/// What a successful login returns.
#[derive(Debug, Clone)]
pub struct LoginCertificates {
    pub ssh_certificate: String,
    pub tls_certificate_pem: String,
    pub known_hosts: String,
    pub trusted_cas_pem: String,
    /// [`hop_ca::trust_digest`] of what `known_hosts` and `trusted_cas_pem` hold.
    pub trust_digest: String,
    pub username: String,
    pub roles: Vec<String>,
    pub logins: Vec<String>,
    pub expires: SystemTime,
    /// The identity both certificates carry, and when they were issued (their validity start
    /// without the clock-skew margin): what admission decides on, for a web session that holds
    /// them.
    pub identity: hop_ca::Identity,
    pub issued_at: SystemTime,
}

/// A login attempt.
#[derive(Debug, Clone)]
pub struct LoginRequest<'a> {
    pub username: &'a str,
    pub password: &'a str,
    pub totp_code: &'a str,
    pub ssh_public_key: &'a str,
    pub tls_public_key_der: &'a [u8],
    pub ttl: Option<Duration>,
    pub remote: Option<SocketAddr>,
    /// Where the login comes from, for its audit events.
    pub client: LoginClient,
}

/// What a user logs in with: `hop login` (the gRPC API) or the web UI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginClient {
    Cli,
    Web,
}

impl LoginClient {
    /// The `client` field of `user.login` events.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Cli => "cli",
            Self::Web => "web",
        }
    }
}

/// The second factor a login or an account change presents.
#[derive(Debug, Clone, Copy)]
pub enum SecondFactor<'a> {
    /// A one-time code (empty: none given).
    Otp(&'a str),
    /// A WebAuthn assertion answering a challenge Auth issued.
    Webauthn(&'a WebauthnAssertion),
}

/// Which second factor a check accepted.
#[derive(Debug)]
pub(super) enum Accepted {
    None,
    Otp(u64),
    Webauthn(AcceptedAssertion),
}

impl AuthServer {
    /// Takes a token from the per-IP bucket shared by login, sign-up and join attempts.
    pub(super) fn rate_limit(&self, remote: Option<SocketAddr>) -> Result<(), AuthError> {
        let Some(addr) = remote else { return Ok(()) };
        let limited = self
            .limiter
            .lock()
            .map_err(|_| AuthError::Poisoned("rate limiter lock"))?
            .check(addr.ip(), self.clock.now());
        limited.map_err(|wait| {
            self.metrics.logins_rate_limited.inc();
            AuthError::RateLimited {
                ip: addr.ip().to_string(),
                retry_after_secs: wait.as_secs(),
            }
        })
    }

    /// Password + one-time code for a certificate pair.
    pub fn login(&self, req: &LoginRequest<'_>) -> Result<LoginCertificates, AuthError> {
        self.login_with(req, SecondFactor::Otp(req.totp_code))
    }

    /// Password + a WebAuthn assertion (answering [`Self::begin_webauthn_assertion`] for a
    /// login) for a certificate pair; `req.totp_code` is not looked at.
    pub fn login_webauthn(
        &self,
        req: &LoginRequest<'_>,
        assertion: &WebauthnAssertion,
    ) -> Result<LoginCertificates, AuthError> {
        self.login_with(req, SecondFactor::Webauthn(assertion))
    }

    fn login_with(
        &self,
        req: &LoginRequest<'_>,
        factor: SecondFactor<'_>,
    ) -> Result<LoginCertificates, AuthError> {
        let now = self.clock.now();
        if let Err(e) = self.rate_limit(req.remote) {
            // Queued, not awaited: a flood of refused attempts must not turn into a flood of
            // synchronous audit writes (overflow is counted by the log).
            self.audit.emit(
                self.event(EventKind::UserLogin, req.username)
                    .remote(req.remote)
                    .field("client", req.client.name())
                    .failed(EventKind::UserLogin, "rate limited"),
            );
            return Err(e);
        }
        let result = self.check_credentials_with(req, now, factor, ChallengePurpose::Login);
        match result {
            Ok((user, accepted)) => {
                let mfa = match accepted {
                    Accepted::None => "none",
                    Accepted::Otp(_) => "otp",
                    Accepted::Webauthn(_) => "webauthn",
                };
                let certs = self.issue_login_certificates(&user, req, now);
                match &certs {
                    Ok(c) => {
                        self.metrics.logins_ok.inc();
                        self.audit.emit_durable(
                            self.event(EventKind::UserLogin, req.username)
                                .remote(req.remote)
                                .field("client", req.client.name())
                                .field("method", "local")
                                .field("mfa", mfa)
                                .field("roles", c.roles.clone())
                                .field("expires", rfc3339(c.expires)),
                        );
                    }
                    Err(e) => {
                        self.metrics.logins_failed.inc();
                        self.audit.emit_durable(
                            self.event(EventKind::UserLogin, req.username)
                                .remote(req.remote)
                                .field("client", req.client.name())
                                .failed(EventKind::UserLogin, e.to_string()),
                        );
                    }
                }
                certs
            }
            Err(e) => {
                if matches!(e, AuthError::Locked { .. }) {
                    self.metrics.logins_locked.inc();
                } else {
                    self.metrics.logins_failed.inc();
                }
                // The real reason (locked, unknown user, wrong password or code) is for the
                // audit log only; the caller gets the same answer in every case.
                self.audit.emit_durable(
                    self.event(EventKind::UserLogin, req.username)
                        .remote(req.remote)
                        .field("client", req.client.name())
                        .field("method", "local")
                        .failed(EventKind::UserLogin, login_failure_reason(&e)),
                );
                Err(match e {
                    AuthError::Locked { .. } | AuthError::LoginRefused { .. } => {
                        AuthError::InvalidCredentials
                    }
                    other => other,
                })
            }
        }
    }

    /// Verifies password and code, maintaining the failure counter and lock. Returns the user;
    /// `Locked` only once the password and code have been checked like any other attempt's.
    pub(super) fn check_credentials(
        &self,
        req: &LoginRequest<'_>,
        now: SystemTime,
    ) -> Result<User, AuthError> {
        self.check_credentials_with(
            req,
            now,
            SecondFactor::Otp(req.totp_code),
            ChallengePurpose::Login,
        )
        .map(|(user, _)| user)
    }

    /// [`Self::check_credentials`] with `factor` as the second factor. For a login
    /// (`ChallengePurpose::Login`) the cluster's `second_factor` says whether one is needed; for
    /// an account change (`Manage`) it is needed too as soon as the user has any device.
    pub(super) fn check_credentials_with(
        &self,
        req: &LoginRequest<'_>,
        now: SystemTime,
        factor: SecondFactor<'_>,
        purpose: ChallengePurpose,
    ) -> Result<(User, Accepted), AuthError> {
        let user = self.store.get::<User>(req.username)?;
        let secrets = self
            .store
            .get::<UserSecrets>(req.username)?
            .map(|v| v.value);
        let locked_until = match user
            .as_ref()
            .and_then(|u| resources::locked_until(&u.value, now))
        {
            Some(until) => Some(until),
            None => self.user_lock_in_force(req.username)?.map(|l| {
                l.expires().map_or(
                    now + Duration::from_secs(100 * 365 * 24 * 3600),
                    SystemTime::from,
                )
            }),
        };
        // Both checks always run, whatever the first one said and whether the user exists or is
        // locked, so timing does not tell those cases apart.
        let password_ok = password::verify(
            req.password,
            secrets.as_ref().and_then(|s| s.password_hash.as_deref()),
        );
        let has_device = secrets
            .as_ref()
            .is_some_and(|s| s.totp_secrets().next().is_some() || !s.webauthn_devices.is_empty());
        let needed = self.otp_required() || (purpose == ChallengePurpose::Manage && has_device);
        let (otp_ok, accepted, factor_reason) = match factor {
            SecondFactor::Otp(_) if needed && self.second_factor() == "webauthn" => (
                false,
                Accepted::None,
                "a one-time code where a security key is required",
            ),
            SecondFactor::Otp(code) if needed => {
                let step = secrets
                    .as_ref()
                    .and_then(|s| verify_any_device(s, code, now));
                (
                    step.is_some(),
                    step.map_or(Accepted::None, Accepted::Otp),
                    "wrong one-time code",
                )
            }
            SecondFactor::Otp(_) => (true, Accepted::None, ""),
            SecondFactor::Webauthn(a) => {
                match self.check_webauthn_assertion(req.username, secrets.as_ref(), a, purpose) {
                    Ok(used) => (true, Accepted::Webauthn(used), ""),
                    Err(reason) => (false, Accepted::None, reason),
                }
            }
        };
        if user.is_none() {
            return Err(AuthError::LoginRefused {
                reason: "unknown user",
            });
        }
        if let Some(until) = locked_until {
            return Err(AuthError::Locked {
                user: req.username.to_string(),
                until: rfc3339(until),
            });
        }
        let _guard = self
            .login_state
            .lock()
            .map_err(|_| AuthError::Poisoned("login state lock"))?;
        // Re-read under the lock: another login may have changed the counter.
        let Some(current) = self.store.get::<User>(req.username)? else {
            return Err(AuthError::LoginRefused {
                reason: "unknown user",
            });
        };
        let mut updated = current.value.clone();
        if password_ok && otp_ok {
            // The counter first: a key whose counter does not move on is a failed attempt.
            if let Accepted::Webauthn(used) = &accepted
                && let Err(e) = self.store_webauthn_use(req.username, used)
            {
                if matches!(e, AuthError::LoginRefused { .. }) {
                    self.count_failure(updated, current.revision, req, now)?;
                }
                return Err(e);
            }
            if resources::failed_logins(&updated) != 0 {
                resources::set_user_lock(&mut updated, None, "");
                self.store.update(&updated, current.revision)?;
            }
            if let Accepted::Otp(step) = accepted {
                // Re-read under the lock: a concurrent login may have used this code already.
                let Some(mut s) = self
                    .store
                    .get::<UserSecrets>(req.username)?
                    .map(|v| v.value)
                else {
                    return Err(AuthError::LoginRefused {
                        reason: "the user has no second factor",
                    });
                };
                if s.totp_last_step.is_some_and(|last| step <= last) {
                    return Err(AuthError::LoginRefused {
                        reason: "one-time code already used",
                    });
                }
                s.totp_last_step = Some(step);
                self.store.upsert(&s)?;
            }
            return Ok((updated, accepted));
        }
        self.count_failure(updated, current.revision, req, now)?;
        Err(AuthError::LoginRefused {
            reason: match (password_ok, otp_ok) {
                (false, true) => "wrong password",
                (true, false) => factor_reason,
                _ => "wrong password and second factor",
            },
        })
    }
}

impl AuthServer {
    /// Counts one failed attempt on `user` (read under the login-state lock, which the caller
    /// holds, at `revision`), locking the user for `lockout` at the limit (audited).
    fn count_failure(
        &self,
        mut user: User,
        revision: u64,
        req: &LoginRequest<'_>,
        now: SystemTime,
    ) -> Result<(), AuthError> {
        let failures = resources::failed_logins(&user).saturating_add(1);
        if failures >= self.settings.max_failed_attempts {
            let until = now + self.settings.lockout;
            resources::set_user_lock(&mut user, Some(until), "too many failed logins");
            self.store.update(&user, revision)?;
            tracing::warn!(user = %req.username, until = %rfc3339(until), "user locked after repeated failed logins");
            self.audit.emit_durable(
                self.event(EventKind::UserLocked, req.username)
                    .remote(req.remote)
                    .field("client", req.client.name())
                    .field("locked_until", rfc3339(until))
                    .field("failed_logins", failures),
            );
        } else {
            resources::set_failed_logins(&mut user, failures);
            self.store.update(&user, revision)?;
        }
        Ok(())
    }

    /// The account password of a user who holds a web session (adding or removing a device):
    /// checked like a login's (lock refused, a wrong one counted towards the lockout), without
    /// a one-time code. Any failure is `InvalidCredentials`.
    pub(super) fn check_account_password(
        &self,
        req: &LoginRequest<'_>,
        now: SystemTime,
    ) -> Result<(), AuthError> {
        let stored = self
            .store
            .get::<UserSecrets>(req.username)?
            .and_then(|v| v.value.password_hash);
        let password_ok = password::verify(req.password, stored.as_deref());
        let _guard = self
            .login_state
            .lock()
            .map_err(|_| AuthError::Poisoned("login state lock"))?;
        let Some(current) = self.store.get::<User>(req.username)? else {
            return Err(AuthError::InvalidCredentials);
        };
        let locked = resources::locked_until(&current.value, now).is_some()
            || self.user_lock_in_force(req.username)?.is_some();
        if locked {
            return Err(AuthError::InvalidCredentials);
        }
        if password_ok {
            return Ok(());
        }
        self.count_failure(current.value.clone(), current.revision, req, now)?;
        Err(AuthError::InvalidCredentials)
    }
}

/// The step `code` matches on any of the user's TOTP devices (each one compared, so that timing
/// tells no device apart), refusing steps already used.
pub(super) fn verify_any_device(s: &UserSecrets, code: &str, now: SystemTime) -> Option<u64> {
    let mut found = None;
    for secret in s.totp_secrets() {
        let Ok(key) = totp::decode_secret(secret) else {
            continue;
        };
        let step = totp::verify(&key, code, now, s.totp_last_step);
        found = found.or(step);
    }
    found
}

/// What the audit log records for a refused login: the real reason, which the caller never sees.
fn login_failure_reason(e: &AuthError) -> String {
    match e {
        AuthError::LoginRefused { reason } => (*reason).to_string(),
        other => other.to_string(),
    }
}
