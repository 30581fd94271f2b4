//! The Auth service: the cluster's certificate authorities, users, roles, tokens and login.
//!
//! [`AuthServer`] owns every decision that needs the backend: bootstrapping a new cluster,
//! completing invitations, checking passwords and second factors, locking users after repeated
//! failures, issuing certificates, and the admin operations behind `hop admin`. It is transport
//! agnostic (the gRPC layer calls it) and takes time from the injected [`Clock`]. It never logs a
//! secret: passwords, TOTP secrets, invite and join tokens appear in no message or event.
//!
//! This file holds the service itself (opening it, its settings and shared helpers); each
//! concern has its own room: `accounts` (users, locks), `account` (a user's own password and
//! one-time-code devices), `invites` (sign-up), `login`, `webauthn` (security keys: challenges, devices, assertions),
//! `certificates` (what goes into issued certificates), `bots` (machine identities: add,
//! join, renewal), `bot_recovery` (a bot's bound key), `agents` (join, renewal, what nodes
//! learn), `admin` (generic resources and rule checks) and `authorities` (the CAs), `rotation` (replacing them, phase by phase). Join tokens
//! live in `join_tokens`, the names in host certificates in `host_names`; `sso` completes
//! single sign-on logins (the providers themselves are the `sso` room's).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hop_storage::{Clock, ResourceStore, StorageError};

use super::audit::{AuditEvent, AuditSink, EventKind};
use super::host_names::ReservedNames;
use super::ratelimit::LoginRateLimiter;
use super::{password, resources};
use hop_metrics::Metrics;

mod access_requests;
mod account;
mod accounts;
mod admin;
mod agents;
mod authorities;
mod backup;
mod bot_recovery;
mod bots;
mod certificates;
mod host_certs;
mod invites;
mod login;
mod rotation;
mod session_mfa;
mod spiffe;
mod sso;
mod webauthn;

pub use crate::error::{AuthError, INVALID_CREDENTIALS};
pub use crate::records::ChallengePurpose;
pub use access_requests::{NewAccessRequest, ReviewAsk};
pub use account::{MAX_OTP_DEVICES, OtpDeviceView, PendingInvite};
pub use accounts::validate_username;
pub use admin::CreatedResources;
pub use agents::{JoinRequest, JoinedHost, NodeAccess};
pub use authorities::{Authorities, CaKeyMaker, CaSet, SoftwareKeys};
pub use bot_recovery::BotRecovery;
pub use bots::{BotKeys, BotRenewal, BotView, NewBot};
pub use certificates::HOST_CERT_TTL;
pub use invites::Invite;
pub use login::{LoginCertificates, LoginClient, LoginRequest, SecondFactor};
pub use rotation::{CaRotationStatus, RotateRequest, RotateTarget};
pub use session_mfa::{SESSION_MFA_TTL, SessionMfaCertificates};
pub use spiffe::{IssuedSvid, MAX_SVIDS_PER_REQUEST, SvidAsk, SvidBatch};
pub use sso::{
    MappedLogin, SamlPost, SsoCallback, SsoCallbackRefusal, SsoStart, SsoStarted, map_github_login,
    map_login,
};
pub use webauthn::{
    CHALLENGE_TTL, MAX_WEBAUTHN_DEVICES, PasskeyAssertion, WebauthnAssertion, WebauthnDeviceView,
    WebauthnRegistration, WebauthnSettings,
};

/// Settings the Auth service takes from the configuration.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub cluster_name: Option<String>,
    pub second_factor: String,
    pub max_failed_attempts: u32,
    pub lockout: Duration,
    pub attempts_per_ip_per_minute: u32,
    pub invite_ttl: Duration,
    /// `host:port` users reach the proxy on; used in invite URLs.
    pub web_addr: String,
    /// Where interactive sessions are recorded: node, node-sync, proxy, proxy-sync or off.
    pub session_recording: String,
    /// The hosts of the proxy's public addresses: no node may be certified under them.
    pub proxy_public_names: Vec<String>,
    /// The WebAuthn relying party (RP ID, allowed web origins).
    pub webauthn: webauthn::WebauthnSettings,
}

/// The Auth service.
pub struct AuthServer {
    store: ResourceStore,
    clock: Arc<dyn Clock>,
    cluster: String,
    /// Replaced whole by each rotation step (`authorities()` hands out the current one).
    cas: std::sync::RwLock<Arc<Authorities>>,
    /// Makes CA keys (at the first start and each rotation's `init`).
    key_maker: Box<dyn CaKeyMaker>,
    /// Bumped after each rotation step ([`AuthServer::watch_authorities`]).
    ca_changes: tokio::sync::watch::Sender<u64>,
    audit: Arc<dyn AuditSink>,
    metrics: Arc<Metrics>,
    settings: AuthSettings,
    limiter: Mutex<LoginRateLimiter>,
    /// Serializes read-modify-write of users' login state (failure counters, TOTP steps).
    login_state: Mutex<()>,
    /// The admission snapshot and the backend revision it was built at.
    pub(super) admission: Mutex<Option<(u64, Arc<hop_admission::Snapshot>)>>,
    /// The backend revision after this process's latest write of access data (a lock, a user
    /// voided or deleted, a role): a kept snapshot older than this is never served while the
    /// backend is unreachable, so what this appliance just confirmed holds.
    pub(super) admission_floor: std::sync::atomic::AtomicU64,
    /// How many refusals of unauthenticated callers reach the audit log.
    pub(super) refusals: Mutex<super::refusal_limit::RefusalLimiter>,
    /// One bucket per verified identity whose calls are refused (a locked user with a still
    /// valid certificate must not flood the audit log either).
    pub(super) refusals_by_identity:
        Mutex<std::collections::HashMap<String, super::refusal_limit::RefusalLimiter>>,
    /// One bucket per agent for the session trackers it opens.
    pub(super) tracker_creations:
        Mutex<std::collections::HashMap<String, super::refusal_limit::RefusalLimiter>>,
    /// Web application access: launch codes, application sessions, their JWTs.
    pub(super) app_access: super::apps::AppAccess,
    /// OpenID providers' endpoints and key sets (SSO).
    pub(super) oidc: super::sso::OidcProviders,
}

impl std::fmt::Debug for AuthServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthServer")
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn random_token() -> String {
    let mut b = [0u8; 16];
    rand::fill(&mut b[..]);
    hex::encode(b)
}

impl AuthServer {
    /// Opens the Auth service on a store, creating the cluster on first start (cluster name, CAs,
    /// built-in roles) and applying the configured authentication preference.
    pub fn open(
        store: ResourceStore,
        clock: Arc<dyn Clock>,
        settings: AuthSettings,
        audit: Arc<dyn AuditSink>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, AuthError> {
        let now = clock.now();
        let cluster = resources::ensure_cluster_name(&store, settings.cluster_name.as_deref())?;
        resources::apply_auth_preference(&store, &settings.second_factor)?;
        for role in hop_rbac::builtin_roles() {
            match store.create(&role) {
                Ok(_) | Err(StorageError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let key_maker: Box<dyn CaKeyMaker> = Box::new(authorities::SoftwareKeys);
        let cas = Authorities::load_or_create(&store, key_maker.as_ref(), &cluster, now)?;
        password::warm_up();
        let app_access = super::apps::AppAccess::new(&cluster, &cas.jwt);
        let server = Self {
            app_access,
            oidc: super::sso::OidcProviders::default(),
            limiter: Mutex::new(LoginRateLimiter::new(settings.attempts_per_ip_per_minute)),
            store,
            clock,
            cluster,
            cas: std::sync::RwLock::new(Arc::new(cas)),
            key_maker,
            ca_changes: tokio::sync::watch::Sender::new(0),
            audit,
            metrics,
            settings,
            login_state: Mutex::new(()),
            admission: Mutex::new(None),
            admission_floor: std::sync::atomic::AtomicU64::new(0),
            refusals: Mutex::new(super::refusal_limit::RefusalLimiter::default()),
            refusals_by_identity: Mutex::new(std::collections::HashMap::new()),
            tracker_creations: Mutex::new(std::collections::HashMap::new()),
        };
        server.migrate_legacy_tokens()?;
        Ok(server)
    }

    /// The resources and records of the cluster.
    pub(super) fn store(&self) -> &ResourceStore {
        &self.store
    }

    /// Appends an audit event and waits until it is durable.
    pub(super) fn audit_durable(&self, event: AuditEvent) {
        self.audit.emit_durable(event);
    }

    /// The names no node may be certified under in this cluster.
    pub(super) fn reserved_names(&self) -> ReservedNames {
        ReservedNames {
            cluster: self.cluster.clone(),
            proxy_public: self.settings.proxy_public_names.clone(),
        }
    }

    /// The cluster's `session_recording` mode.
    pub fn session_recording(&self) -> &str {
        &self.settings.session_recording
    }

    /// The Auth service's clock.
    pub fn now(&self) -> SystemTime {
        self.clock.now()
    }

    /// `ttl` from now, or a `BadRequest` when that is past the year 9999 (what a stored time
    /// can hold: a caller's number of seconds must not panic a handler).
    pub fn expiry_after(&self, ttl: std::time::Duration) -> Result<SystemTime, AuthError> {
        /// 9999-12-31T23:59:59Z.
        const LATEST_UNIX: u64 = 253_402_300_799;
        self.now()
            .checked_add(ttl)
            .filter(|t| {
                t.duration_since(std::time::UNIX_EPOCH)
                    .is_ok_and(|d| d.as_secs() <= LATEST_UNIX)
            })
            .ok_or_else(|| {
                AuthError::BadRequest(format!("a time to live of {}s is too long", ttl.as_secs()))
            })
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The backend the cluster's state lives in (shared by appliances that share state).
    pub fn backend(&self) -> &Arc<dyn hop_storage::Backend> {
        self.store.backend()
    }

    pub fn cluster_name(&self) -> &str {
        &self.cluster
    }

    pub fn second_factor(&self) -> &str {
        &self.settings.second_factor
    }

    /// Whether logins and sign-ups need a second factor.
    fn otp_required(&self) -> bool {
        self.settings.second_factor != "off"
    }

    /// A new audit event of this cluster, stamped now.
    pub fn event(&self, kind: EventKind, user: &str) -> AuditEvent {
        AuditEvent::new(kind, &self.cluster, user, self.clock.now())
    }

    /// Queues an audit event without blocking (for async callers such as session relays).
    pub fn emit(&self, event: AuditEvent) {
        self.audit.emit(event);
    }
}
