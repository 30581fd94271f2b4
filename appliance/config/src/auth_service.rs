//! The `auth_service` section: the cluster's name, how people authenticate, brute-force limits,
//! session recording and the audit log, and the rules that section must keep.

use std::time::Duration;

use serde::Deserialize;

use crate::{FieldError, HumanDuration, ValueError};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthServiceConfig {
    /// Name of the cluster; fixed at first start (defaults to the host name).
    pub cluster_name: Option<String>,
    pub authentication: AuthenticationConfig,
    pub login: LoginLimits,
    pub audit: AuditSettings,
    /// Where interactive SSH sessions are recorded: `node` (default), `node-sync`, `proxy`,
    /// `proxy-sync` or `off`. A role's `options.record_session.ssh` can tighten it.
    pub session_recording: Option<String>,
}

/// The audit log (`<data_dir>/audit.db`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditSettings {
    /// Days older than this are deleted in the background (whole days); kept forever when unset.
    pub retention: Option<HumanDuration>,
    /// Also write every event, once durable, as a JSON line to `stdout` or to this file (for a
    /// SIEM shipper such as Vector or Fluent Bit).
    pub forward: Option<String>,
    /// How long a commit of events nobody waits for (session starts and ends, queries) may wait
    /// for more such events (default 10ms; 0s: none; at most 1s).
    pub unwatched_linger: Option<HumanDuration>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthenticationConfig {
    /// Only `local` for now.
    #[serde(rename = "type")]
    pub kind: String,
    /// `otp` (default), `off`, `on`, `optional` or `webauthn`.
    pub second_factor: String,
    /// The WebAuthn relying party (security keys, with `second_factor: on` or `optional`).
    pub webauthn: WebauthnConfig,
}

/// `auth_service.authentication.webauthn`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebauthnConfig {
    /// The RP ID security keys are registered for; default: the host of the proxy's first
    /// public address. Changing it makes every registered key unusable.
    pub rp_id: Option<String>,
}

impl Default for AuthenticationConfig {
    fn default() -> Self {
        Self {
            kind: "local".into(),
            second_factor: "otp".into(),
            webauthn: WebauthnConfig::default(),
        }
    }
}

/// Brute-force protection of password login.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoginLimits {
    /// Consecutive failed logins that lock a user.
    pub max_failed_attempts: u32,
    /// How long such a lock lasts.
    pub lockout: HumanDuration,
    /// Login attempts allowed per source IP per minute (a burst of this size, refilled evenly).
    pub attempts_per_ip_per_minute: u32,
    /// Lifetime of an invite or reset token.
    pub invite_ttl: HumanDuration,
}

impl Default for LoginLimits {
    fn default() -> Self {
        Self {
            max_failed_attempts: 5,
            lockout: HumanDuration(Duration::from_secs(30 * 60)),
            attempts_per_ip_per_minute: 30,
            invite_ttl: HumanDuration(Duration::from_secs(3600)),
        }
    }
}

impl AuthServiceConfig {
    /// The `auth_service` section's rules, subsection by subsection.
    pub(crate) fn check(&self) -> Result<(), FieldError> {
        self.check_audit()?;
        self.check_session_recording()?;
        if let Some(name) = &self.cluster_name {
            validate_cluster_name(name)
                .map_err(|e| FieldError::new("auth_service.cluster_name", e.to_string()))?;
        }
        self.authentication.check()?;
        self.login.check()
    }

    fn check_audit(&self) -> Result<(), FieldError> {
        if self
            .audit
            .unwatched_linger
            .is_some_and(|d| d.0 > Duration::from_secs(1))
        {
            return Err(FieldError::new(
                "auth_service.audit.unwatched_linger",
                "must be at most 1s",
            ));
        }
        Ok(())
    }

    fn check_session_recording(&self) -> Result<(), FieldError> {
        if let Some(mode) = &self.session_recording
            && !matches!(
                mode.as_str(),
                "node" | "node-sync" | "proxy" | "proxy-sync" | "off"
            )
        {
            return Err(FieldError::new(
                "auth_service.session_recording",
                format!(
                    "unknown mode {mode:?}; expected node, node-sync, proxy, proxy-sync or off"
                ),
            ));
        }
        Ok(())
    }
}

impl AuthenticationConfig {
    fn check(&self) -> Result<(), FieldError> {
        if self.kind != "local" {
            return Err(FieldError::new(
                "auth_service.authentication.type",
                format!("unsupported type {:?}; only local is available", self.kind),
            ));
        }
        if !matches!(
            self.second_factor.as_str(),
            "otp" | "off" | "on" | "optional" | "webauthn"
        ) {
            return Err(FieldError::new(
                "auth_service.authentication.second_factor",
                format!(
                    "unknown value {:?}; expected otp, off, on, optional or webauthn",
                    self.second_factor
                ),
            ));
        }
        if self.second_factor == "webauthn" {
            return Err(FieldError::new(
                "auth_service.authentication.second_factor",
                "webauthn alone is not available yet (sign-up enrolls a one-time code); use on: a one-time code or a security key",
            ));
        }
        Ok(())
    }
}

impl LoginLimits {
    fn check(&self) -> Result<(), FieldError> {
        if self.max_failed_attempts == 0 {
            return Err(FieldError::new(
                "auth_service.login.max_failed_attempts",
                "must be at least 1",
            ));
        }
        if self.attempts_per_ip_per_minute == 0 {
            return Err(FieldError::new(
                "auth_service.login.attempts_per_ip_per_minute",
                "must be at least 1",
            ));
        }
        if self.invite_ttl.0 < Duration::from_secs(1) {
            return Err(FieldError::new(
                "auth_service.login.invite_ttl",
                "must be at least 1s",
            ));
        }
        Ok(())
    }
}

/// Cluster names end up in certificates and SNI: keep them to DNS label characters.
pub fn validate_cluster_name(name: &str) -> Result<(), ValueError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ValueError::ClusterName { text: name.into() })
    }
}
