//! The Auth service: the cluster's certificate authorities, users, roles, tokens and login.
//!
//! [`AuthServer`] owns every decision that needs the backend: bootstrapping a new cluster,
//! completing invitations, checking passwords and second factors, locking users after repeated
//! failures, issuing certificates, and the admin operations behind `hop admin`. It is transport
//! agnostic (the gRPC layer calls it) and takes time from the injected [`Clock`]. It never logs a
//! secret: passwords, TOTP secrets, invite and join tokens appear in no message or event. Join
//! tokens live in `join_tokens`, the names in host certificates in `host_names`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hop_ca::{CaKind, CaPublic, CertAuthority, HostRole, Identity};
use hop_rbac::{AccessChecker, Resource, Role, User};
use hop_storage::{Clock, ResourceStore, StorageError};

use super::audit::{AuditEvent, AuditSink, EventKind};
use super::host_names::ReservedNames;
use super::ratelimit::LoginRateLimiter;
use super::records::{CaKeys, InviteKind, InviteToken, PUBLIC_KINDS, UserSecrets, token_hash};
use super::{password, resources, totp};
use hop_api::timestamps::rfc3339;
use hop_metrics::Metrics;

/// The same words for every credential failure, so that a caller learns nothing about which part
/// was wrong or whether the user exists.
pub const INVALID_CREDENTIALS: &str = "invalid username, password or second factor";

/// Why an Auth operation was refused. Each variant says whose fault it was.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The caller's credentials are wrong (deliberately vague).
    #[error("{INVALID_CREDENTIALS}")]
    InvalidCredentials,
    /// A login refused for `reason`, which goes to the audit log only: the caller is answered
    /// [`AuthError::InvalidCredentials`], whatever the reason.
    #[error("{INVALID_CREDENTIALS}")]
    LoginRefused { reason: &'static str },
    #[error(
        "user {user:?} is locked until {until} after too many failed logins; an administrator can run `hop admin users unlock {user}`"
    )]
    Locked { user: String, until: String },
    #[error("too many login attempts from {ip}; try again in {retry_after_secs} s")]
    RateLimited { ip: String, retry_after_secs: u64 },
    #[error(
        "the invite token is not valid; ask an administrator for a new one (`hop admin users reset NAME`)"
    )]
    InviteNotFound,
    #[error(
        "the invite token expired at {expired}; ask an administrator for a new one (`hop admin users reset {user}`)"
    )]
    InviteExpired { user: String, expired: String },
    /// The request is malformed or violates a rule; the message names the field.
    #[error("{0}")]
    BadRequest(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("access denied: {0}")]
    Denied(String),
    /// Storage or crypto failed; the operator should look at the logs.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StorageError> for AuthError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::AlreadyExists { .. } => AuthError::AlreadyExists(e.to_string()),
            StorageError::Conflict { .. } => {
                AuthError::Internal(format!("concurrent update, retry: {e}"))
            }
            other => AuthError::Internal(other.to_string()),
        }
    }
}

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
}

/// The four certificate authorities of a cluster.
#[derive(Clone)]
pub struct Authorities {
    pub user: CertAuthority,
    pub host: CertAuthority,
    pub db: CertAuthority,
    pub jwt: CertAuthority,
    /// Only the proxy's logins to agentless OpenSSH nodes are signed by it.
    pub openssh: CertAuthority,
}

impl Authorities {
    pub fn get(&self, kind: CaKind) -> &CertAuthority {
        match kind {
            CaKind::User => &self.user,
            CaKind::Host => &self.host,
            CaKind::Db => &self.db,
            CaKind::Jwt => &self.jwt,
            CaKind::OpenSsh => &self.openssh,
        }
    }
}

/// What a successful login returns.
#[derive(Debug, Clone)]
pub struct LoginCertificates {
    pub ssh_certificate: String,
    pub tls_certificate_pem: String,
    pub known_hosts: String,
    pub trusted_cas_pem: String,
    pub username: String,
    pub roles: Vec<String>,
    pub logins: Vec<String>,
    pub expires: SystemTime,
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
}

/// What an agent sends to join or renew. `token` is empty on renewal.
#[derive(Clone, Copy)]
pub struct JoinRequest<'a> {
    pub token: &'a str,
    pub role: &'a str,
    /// The node name asked for; empty for none.
    pub host_name: &'a str,
    pub tls_public_key_der: &'a [u8],
    pub ssh_public_key: &'a str,
    pub remote: Option<SocketAddr>,
}

impl std::fmt::Debug for JoinRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinRequest")
            .field("role", &self.role)
            .field("host_name", &self.host_name)
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

/// Lifetime of an agent's host certificate; agents renew at two thirds of it.
pub const HOST_CERT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// What an agent receives when it joins or renews.
#[derive(Debug, Clone)]
pub struct JoinedHost {
    pub host_id: String,
    /// The node name Auth certified, if the agent asked for one.
    pub host_name: Option<String>,
    pub certificate_pem: String,
    pub host_ca_pem: String,
    pub user_ca_pem: String,
    /// SSH host certificate, when the agent sent an SSH host key.
    pub ssh_host_certificate: Option<String>,
    pub ssh_user_ca_keys: Vec<String>,
    pub ssh_host_ca_keys: Vec<String>,
    pub expires: SystemTime,
}

/// What an SSH node needs to decide on its own (see [`AuthServer::node_access`]).
#[derive(Debug, Clone)]
pub struct NodeAccess {
    pub roles: Vec<Role>,
    pub locked_users: Vec<String>,
    pub ssh_user_ca_keys: Vec<String>,
    pub session_recording: String,
}

/// A new invitation: the user and the token to hand them.
#[derive(Debug, Clone)]
pub struct Invite {
    pub username: String,
    pub token: String,
    pub expires: SystemTime,
}

/// The Auth service.
pub struct AuthServer {
    store: ResourceStore,
    clock: Arc<dyn Clock>,
    cluster: String,
    cas: Authorities,
    audit: Arc<dyn AuditSink>,
    metrics: Arc<Metrics>,
    settings: AuthSettings,
    limiter: Mutex<LoginRateLimiter>,
    /// Serializes read-modify-write of users' login state (failure counters, TOTP steps).
    login_state: Mutex<()>,
    /// The admission snapshot and the backend revision it was built at.
    pub(super) admission: Mutex<Option<(u64, Arc<hop_admission::Snapshot>)>>,
    /// How many refusals of unauthenticated callers reach the audit log.
    pub(super) refusals: Mutex<super::refusal_limit::RefusalLimiter>,
    /// One bucket per verified identity whose calls are refused (a locked user with a still
    /// valid certificate must not flood the audit log either).
    pub(super) refusals_by_identity:
        Mutex<std::collections::HashMap<String, super::refusal_limit::RefusalLimiter>>,
    /// One bucket per agent for the session trackers it opens.
    pub(super) tracker_creations:
        Mutex<std::collections::HashMap<String, super::refusal_limit::RefusalLimiter>>,
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
        let mut rng = rand::rng();
        let mut load = |kind: CaKind| -> Result<CertAuthority, AuthError> {
            if let Some(v) = store.get::<CaKeys>(&kind.to_string())? {
                return Ok(v.value.authority);
            }
            let ca = CertAuthority::generate(kind, &cluster, now, &mut rng)
                .map_err(|e| AuthError::Internal(format!("cannot generate the {kind} CA: {e}")))?;
            store.create(&CaKeys::new(kind, ca.clone()))?;
            tracing::info!(%kind, "created certificate authority");
            Ok(ca)
        };
        let cas = Authorities {
            user: load(CaKind::User)?,
            host: load(CaKind::Host)?,
            db: load(CaKind::Db)?,
            jwt: load(CaKind::Jwt)?,
            openssh: load(CaKind::OpenSsh)?,
        };
        password::warm_up();
        let server = Self {
            limiter: Mutex::new(LoginRateLimiter::new(settings.attempts_per_ip_per_minute)),
            store,
            clock,
            cluster,
            cas,
            audit,
            metrics,
            settings,
            login_state: Mutex::new(()),
            admission: Mutex::new(None),
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

    pub fn authorities(&self) -> &Authorities {
        &self.cas
    }

    fn otp_required(&self) -> bool {
        self.settings.second_factor != "off"
    }

    /// The pin clients check the proxy's certificate chain against: the host CA's key.
    pub fn ca_pin(&self) -> String {
        self.cas.host.public().x509_spki_sha256.unwrap_or_default()
    }

    pub fn public_authorities(&self, kind: CaKind) -> Vec<CaPublic> {
        vec![self.cas.get(kind).public()]
    }

    /// A new audit event of this cluster, stamped now.
    pub fn event(&self, kind: EventKind, user: &str) -> AuditEvent {
        AuditEvent::new(kind, &self.cluster, user, self.clock.now())
    }

    /// Queues an audit event without blocking (for async callers such as session relays).
    pub fn emit(&self, event: AuditEvent) {
        self.audit.emit(event);
    }

    // ---------------------------------------------------------------- users and invitations

    /// Creates a user and an invitation to set their password.
    pub fn create_user(
        &self,
        name: &str,
        roles: &[String],
        traits: BTreeMap<String, Vec<String>>,
        actor: &str,
    ) -> Result<Invite, AuthError> {
        validate_username(name)?;
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
        if self.store.get::<User>(name)?.is_none() {
            return Err(AuthError::NotFound(format!("user {name:?}")));
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

    fn new_invite(&self, user: &str, kind: InviteKind) -> Result<Invite, AuthError> {
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
        password::check_policy(new_password).map_err(|e| AuthError::BadRequest(e.to_string()))?;
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
            Some(password::hash(new_password).map_err(|e| AuthError::Internal(e.to_string()))?);
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
    fn set_lock(&self, name: &str, until: Option<SystemTime>) -> Result<(), AuthError> {
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
            .map_err(|_| AuthError::Internal("login state lock poisoned".into()))?;
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

    /// Takes a token from the per-IP bucket shared by login, sign-up and join attempts.
    fn rate_limit(&self, remote: Option<SocketAddr>) -> Result<(), AuthError> {
        let Some(addr) = remote else { return Ok(()) };
        let limited = self
            .limiter
            .lock()
            .map_err(|_| AuthError::Internal("rate limiter lock poisoned".into()))?
            .check(addr.ip(), self.clock.now());
        limited.map_err(|wait| {
            self.metrics.logins_rate_limited.inc();
            AuthError::RateLimited {
                ip: addr.ip().to_string(),
                retry_after_secs: wait.as_secs(),
            }
        })
    }

    // ---------------------------------------------------------------- login

    /// Password + second factor for a certificate pair.
    pub fn login(&self, req: &LoginRequest<'_>) -> Result<LoginCertificates, AuthError> {
        let now = self.clock.now();
        if let Err(e) = self.rate_limit(req.remote) {
            // Queued, not awaited: a flood of refused attempts must not turn into a flood of
            // synchronous audit writes (overflow is counted by the log).
            self.audit.emit(
                self.event(EventKind::UserLogin, req.username)
                    .remote(req.remote)
                    .failed(EventKind::UserLogin, "rate limited"),
            );
            return Err(e);
        }
        let result = self.check_credentials(req, now);
        match result {
            Ok(user) => {
                let certs = self.issue_login_certificates(&user, req, now);
                match &certs {
                    Ok(c) => {
                        self.metrics.logins_ok.inc();
                        self.audit.emit_durable(
                            self.event(EventKind::UserLogin, req.username)
                                .remote(req.remote)
                                .field("method", "local")
                                .field("roles", c.roles.clone())
                                .field("expires", rfc3339(c.expires)),
                        );
                    }
                    Err(e) => {
                        self.metrics.logins_failed.inc();
                        self.audit.emit_durable(
                            self.event(EventKind::UserLogin, req.username)
                                .remote(req.remote)
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
    fn check_credentials(
        &self,
        req: &LoginRequest<'_>,
        now: SystemTime,
    ) -> Result<User, AuthError> {
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
        let (otp_ok, otp_step) = if self.otp_required() {
            let key = secrets
                .as_ref()
                .and_then(|s| s.totp_secret.as_deref())
                .and_then(|s| totp::decode_secret(s).ok());
            let step = key.as_ref().and_then(|k| {
                totp::verify(
                    k,
                    req.totp_code,
                    now,
                    secrets.as_ref().and_then(|s| s.totp_last_step),
                )
            });
            (step.is_some(), step)
        } else {
            (true, None)
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
            .map_err(|_| AuthError::Internal("login state lock poisoned".into()))?;
        // Re-read under the lock: another login may have changed the counter.
        let Some(current) = self.store.get::<User>(req.username)? else {
            return Err(AuthError::LoginRefused {
                reason: "unknown user",
            });
        };
        let mut updated = current.value.clone();
        if password_ok && otp_ok {
            if resources::failed_logins(&updated) != 0 {
                resources::set_user_lock(&mut updated, None, "");
                self.store.update(&updated, current.revision)?;
            }
            if let Some(step) = otp_step {
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
            return Ok(updated);
        }
        let failures = resources::failed_logins(&updated).saturating_add(1);
        if failures >= self.settings.max_failed_attempts {
            let until = now + self.settings.lockout;
            resources::set_user_lock(&mut updated, Some(until), "too many failed logins");
            self.store.update(&updated, current.revision)?;
            tracing::warn!(user = %req.username, until = %rfc3339(until), "user locked after repeated failed logins");
            self.audit.emit_durable(
                self.event(EventKind::UserLocked, req.username)
                    .remote(req.remote)
                    .field("locked_until", rfc3339(until))
                    .field("failed_logins", failures),
            );
        } else {
            resources::set_failed_logins(&mut updated, failures);
            self.store.update(&updated, current.revision)?;
        }
        Err(AuthError::LoginRefused {
            reason: match (password_ok, otp_ok) {
                (false, true) => "wrong password",
                (true, false) => "wrong one-time code",
                _ => "wrong password and one-time code",
            },
        })
    }

    /// The roles of a user (missing roles are skipped: deny by default) and the checker for them.
    pub fn checker_for(
        &self,
        role_names: &[String],
        traits: &BTreeMap<String, Vec<String>>,
    ) -> Result<AccessChecker, AuthError> {
        let mut roles = Vec::with_capacity(role_names.len());
        for name in role_names {
            match self.store.get::<Role>(name)? {
                Some(r) => roles.push(r.value),
                None => {
                    tracing::warn!(role = %name, "user refers to a role that does not exist; ignoring it")
                }
            }
        }
        AccessChecker::new(&roles, traits)
            .map_err(|e| AuthError::Internal(format!("role evaluation: {e}")))
    }

    fn issue_login_certificates(
        &self,
        user: &User,
        req: &LoginRequest<'_>,
        now: SystemTime,
    ) -> Result<LoginCertificates, AuthError> {
        let (role_names, traits) = resources::user_roles_and_traits(user);
        let checker = self.checker_for(&role_names, &traits)?;
        let ttl = hop_ca::effective_ttl(req.ttl, checker.max_session_ttl());
        let identity = Identity {
            username: req.username.to_string(),
            roles: checker.role_names(),
            logins: checker.logins(),
            traits,
            cluster: self.cluster.clone(),
            route_to_cluster: self.cluster.clone(),
            permit_agent_forwarding: checker.permit_agent_forwarding(),
            permit_port_forwarding: checker.permit_port_forwarding(),
            permit_pty: true,
            route_to_database: None,
            route_to_app: None,
            mfa_verified: false,
        };
        let mut rng = rand::rng();
        let ssh = self
            .cas
            .user
            .issue_user_ssh(req.ssh_public_key, &identity, now, ttl, &mut rng)
            .map_err(|e| AuthError::BadRequest(format!("ssh_public_key: {e}")))?;
        let tls = self
            .cas
            .user
            .issue_user_x509(req.tls_public_key_der, &identity, now, ttl, &mut rng)
            .map_err(|e| AuthError::BadRequest(format!("tls_public_key: {e}")))?;
        self.metrics.certificates_issued.inc();
        self.metrics.certificates_issued.inc();
        Ok(LoginCertificates {
            ssh_certificate: ssh,
            tls_certificate_pem: tls,
            known_hosts: hop_ca::export_known_hosts(&self.public_authorities(CaKind::Host)),
            trusted_cas_pem: hop_ca::export_pem(&[self.cas.user.public(), self.cas.host.public()]),
            username: identity.username,
            roles: identity.roles,
            logins: identity.logins,
            expires: now + ttl,
        })
    }

    // ---------------------------------------------------------------- hosts

    /// A TLS identity for a service of this cluster (the proxy's listener): a fresh P-256 key and
    /// a host certificate for `names`, returned as (key PEM, certificate chain PEM with the CA).
    pub fn issue_host_tls(
        &self,
        host_id: &str,
        role: HostRole,
        names: &[String],
        ttl: Duration,
    ) -> Result<(String, String), AuthError> {
        let mut rng = rand::rng();
        let key = hop_ca::generate_x509_keypair(&mut rng)
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        let cert = self
            .cas
            .host
            .issue_host_x509(
                &key.public_spki_der,
                host_id,
                role,
                names,
                self.clock.now(),
                ttl,
                &mut rng,
            )
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        self.metrics.certificates_issued.inc();
        let chain = format!(
            "{}{}",
            cert,
            self.cas.host.public().x509_cert_pem.unwrap_or_default()
        );
        Ok((key.private_pkcs8_pem.clone(), chain))
    }

    // ---------------------------------------------------------------- agents

    /// An agent trades a join token for a host certificate. The token is checked first, then the
    /// node name the agent asks for (see `host_names`) is claimed, and only then is one of the
    /// token's uses spent; a refusal at any step issues nothing.
    pub fn join(&self, req: &JoinRequest<'_>) -> Result<JoinedHost, AuthError> {
        self.rate_limit(req.remote)?;
        let fail = |e: AuthError| {
            self.audit.emit_durable(
                self.event(EventKind::AgentJoin, req.host_name)
                    .remote(req.remote)
                    .field("role", req.role)
                    .failed(EventKind::AgentJoin, e.to_string()),
            );
            e
        };
        let (system_role, host_role) = join_roles(req.role).map_err(fail)?;
        let token_id = self
            .check_join_token(req.token, system_role)
            .map_err(fail)?;
        let host_id = uuid::Uuid::new_v4().to_string();
        let until = self.clock.now() + HOST_CERT_TTL;
        let name = self
            .claim_node_name(&host_id, req.host_name.trim(), until)
            .map_err(fail)?;
        let issued = self
            .consume_join_token(&token_id)
            .and_then(|()| self.issue_host_identity(&host_id, host_role, name.as_deref(), req));
        let joined = match issued {
            Ok(j) => j,
            Err(e) => {
                if let Some(n) = &name {
                    self.release_node_name(&host_id, n);
                }
                return Err(fail(e));
            }
        };
        self.audit.emit_durable(
            self.event(EventKind::AgentJoin, name.as_deref().unwrap_or(&host_id))
                .remote(req.remote)
                .field("role", req.role)
                .field("host_id", host_id)
                .field("token_id", token_id),
        );
        Ok(joined)
    }

    /// A new host certificate for an agent that proved its current one (`host_id`, `role`). The
    /// name it asks for is checked again: it must keep the rule and still be this host's.
    pub fn renew_host_identity(
        &self,
        host_id: &str,
        role: HostRole,
        req: &JoinRequest<'_>,
    ) -> Result<JoinedHost, AuthError> {
        let until = self.clock.now() + HOST_CERT_TTL;
        let name = self.claim_node_name(host_id, req.host_name.trim(), until)?;
        self.issue_host_identity(host_id, role, name.as_deref(), req)
    }

    /// Host certificates for `host_id` and, when given, the node name Auth approved.
    fn issue_host_identity(
        &self,
        host_id: &str,
        role: HostRole,
        name: Option<&str>,
        req: &JoinRequest<'_>,
    ) -> Result<JoinedHost, AuthError> {
        let now = self.clock.now();
        let in_cluster = |n: &str| format!("{n}.{}", self.cluster);
        // The host is reachable by its id, its name, and either inside the cluster (what
        // `hop config` puts in `Host *.CLUSTER`).
        let mut names = vec![host_id.to_string(), in_cluster(host_id)];
        if let Some(n) = name {
            names.push(n.to_string());
            names.push(in_cluster(n));
        }
        let mut rng = rand::rng();
        let cert = self
            .cas
            .host
            .issue_host_x509(
                req.tls_public_key_der,
                host_id,
                role,
                &names,
                now,
                HOST_CERT_TTL,
                &mut rng,
            )
            .map_err(|e| AuthError::BadRequest(format!("tls_public_key: {e}")))?;
        self.metrics.certificates_issued.inc();
        let ssh_host_certificate = if req.ssh_public_key.trim().is_empty() {
            None
        } else {
            let c = self
                .cas
                .host
                .issue_host_ssh(
                    req.ssh_public_key.trim(),
                    host_id,
                    &names,
                    now,
                    HOST_CERT_TTL,
                    &mut rng,
                )
                .map_err(|e| AuthError::BadRequest(format!("ssh_public_key: {e}")))?;
            self.metrics.certificates_issued.inc();
            Some(c)
        };
        Ok(JoinedHost {
            host_id: host_id.to_string(),
            host_name: name.map(str::to_string),
            certificate_pem: cert,
            host_ca_pem: self.cas.host.public().x509_cert_pem.unwrap_or_default(),
            user_ca_pem: self.cas.user.public().x509_cert_pem.unwrap_or_default(),
            ssh_host_certificate,
            ssh_user_ca_keys: self.cas.user.public().ssh_public.into_iter().collect(),
            ssh_host_ca_keys: self.cas.host.public().ssh_public.into_iter().collect(),
            expires: now + HOST_CERT_TTL,
        })
    }

    /// Records events sent by an agent, each durable before the call returns (so the agent may
    /// drop them from its spool).
    /// Records an agent's events; `Err` unless every one is durable (the agent then keeps and
    /// resends them; ids make the resend idempotent).
    pub fn emit_agent_events(&self, events: Vec<AuditEvent>) -> Result<(), AuthError> {
        self.audit
            .append_all_durable(events)
            .map_err(|e| AuthError::Internal(format!("audit log: {e}")))
    }

    /// Roles, locked users, user CA keys and the recording mode, for a node's own decisions.
    pub fn node_access(&self) -> Result<NodeAccess, AuthError> {
        let now = self.clock.now();
        let roles = self
            .store
            .list::<Role>()?
            .into_iter()
            .map(|v| v.value)
            .collect();
        let locked_users = self
            .store
            .list::<User>()?
            .into_iter()
            .filter(|u| resources::locked_until(&u.value, now).is_some())
            .map(|u| u.value.metadata.name)
            .collect();
        Ok(NodeAccess {
            roles,
            locked_users,
            ssh_user_ca_keys: self.cas.user.public().ssh_public.into_iter().collect(),
            session_recording: self.settings.session_recording.clone(),
        })
    }

    // ---------------------------------------------------------------- generic resources

    /// Parses and validates every document first; writes only if all are acceptable.
    pub fn create_resources(
        &self,
        yaml: &str,
        source: &str,
        force: bool,
        actor: &str,
        authorize: &dyn Fn(&str, &str) -> Result<(), AuthError>,
    ) -> Result<CreatedResources, AuthError> {
        let parsed = hop_rbac::parse_resources_with_warnings(yaml, source)
            .map_err(|e| AuthError::BadRequest(e.to_string()))?;
        let warnings: Vec<String> = parsed.warnings.iter().map(|w| w.to_string()).collect();
        let docs = parsed.resources;
        if docs.is_empty() {
            return Err(AuthError::BadRequest(format!(
                "{source}: no resources found"
            )));
        }
        for doc in &docs {
            let (kind, name) = (doc.kind(), doc.name());
            match doc {
                Resource::CertAuthority(_) => {
                    return Err(AuthError::BadRequest(format!(
                        "{source}: cert_authority/{name}: certificate authorities are created by the Auth service and cannot be imported"
                    )));
                }
                Resource::ClusterName(_) => {
                    return Err(AuthError::BadRequest(format!(
                        "{source}: cluster_name/{name}: the cluster name is fixed at first start"
                    )));
                }
                Resource::Token(_) => {
                    return Err(AuthError::BadRequest(format!(
                        "{source}: token: join tokens are made with `hop admin tokens add`, which shows the secret once and stores only its hash"
                    )));
                }
                Resource::User(u) => {
                    validate_username(name)?;
                    for r in resources::user_roles_and_traits(u).0 {
                        let defined_here = docs
                            .iter()
                            .any(|d| matches!(d, Resource::Role(x) if x.metadata.name == r));
                        if !defined_here && self.store.get::<Role>(&r)?.is_none() {
                            return Err(AuthError::BadRequest(format!(
                                "{source}: user/{name}: role {r:?} does not exist"
                            )));
                        }
                    }
                }
                _ => {}
            }
            authorize(kind, "create")?;
            let exists = self.store.get_raw(kind, name)?.is_some();
            if exists && !force {
                return Err(AuthError::AlreadyExists(format!(
                    "{kind}/{name} (use --force to overwrite)"
                )));
            }
            if exists {
                authorize(kind, "update")?;
            }
        }
        let mut written = Vec::new();
        for doc in &docs {
            if let Resource::Lock(lock) = doc {
                let mut lock = lock.clone();
                if lock.spec.created_by.is_empty() {
                    lock.spec.created_by = actor.to_string();
                }
                lock.spec.created.get_or_insert_with(|| self.now().into());
                self.store.upsert(&lock)?;
                self.after_lock_written(&lock, actor)?;
                written.push(format!("lock/{}", lock.metadata.name));
                continue;
            }
            resources::write(&self.store, doc, self.now())?;
            let id = format!("{}/{}", doc.kind(), doc.name());
            self.audit.emit_durable(
                self.event(EventKind::ResourceCreate, actor)
                    .field("resource", id.clone()),
            );
            written.push(id);
        }
        Ok(CreatedResources { written, warnings })
    }

    /// Resources of a kind as JSON documents (public parts only).
    pub fn get_resources(
        &self,
        kind: &str,
        name: Option<&str>,
    ) -> Result<Vec<serde_json::Value>, AuthError> {
        let kind = resources::canonical_kind(kind).ok_or_else(|| {
            AuthError::BadRequest(format!(
                "unknown kind {kind:?}; expected one of {}",
                PUBLIC_KINDS.join(", ")
            ))
        })?;
        if kind == "cert_authority" {
            let mut out = Vec::new();
            for k in CaKind::ALL {
                if name.is_none_or(|n| n == k.to_string()) {
                    out.push(resources::cert_authority_json(&self.cas.get(k).public()));
                }
            }
            if out.is_empty() {
                return Err(AuthError::NotFound(format!(
                    "cert_authority/{}",
                    name.unwrap_or_default()
                )));
            }
            return Ok(out);
        }
        let docs = match name {
            Some(n) => match self.store.get_raw(kind, n)? {
                Some(v) => vec![v.value],
                None => return Err(AuthError::NotFound(format!("{kind}/{n}"))),
            },
            None => self
                .store
                .list_raw(kind)?
                .into_iter()
                .map(|v| v.value)
                .collect(),
        };
        Ok(docs.into_iter().map(|d| public_part(kind, d)).collect())
    }

    pub fn delete_resource(&self, kind: &str, name: &str, actor: &str) -> Result<(), AuthError> {
        let kind = resources::canonical_kind(kind).ok_or_else(|| {
            AuthError::BadRequest(format!(
                "unknown kind {kind:?}; expected one of {}",
                PUBLIC_KINDS.join(", ")
            ))
        })?;
        if matches!(
            kind,
            "cert_authority" | "cluster_name" | "cluster_auth_preference"
        ) {
            return Err(AuthError::BadRequest(format!(
                "{kind} resources cannot be deleted"
            )));
        }
        if !resources::delete(&self.store, kind, name)? {
            // `node/HOSTID` of an agent (not a registered OpenSSH node): the agent is voided by
            // a lock on its server id, so it is disconnected and can never renew.
            if kind == "node" && uuid::Uuid::parse_str(name).is_ok() {
                self.create_lock(
                    hop_rbac::LockTarget {
                        server_id: Some(name.to_string()),
                        ..Default::default()
                    },
                    &format!("agent removed by {actor}"),
                    None,
                    actor,
                )?;
                return Ok(());
            }
            return Err(AuthError::NotFound(format!("{kind}/{name}")));
        }
        if kind == "user" {
            self.store.delete::<UserSecrets>(name)?;
            self.audit
                .emit(self.event(EventKind::UserDelete, actor).field("name", name));
        } else {
            self.audit.emit_durable(
                self.event(EventKind::ResourceDelete, actor)
                    .field("resource", format!("{kind}/{name}")),
            );
        }
        Ok(())
    }

    /// Counts for `hop admin status`.
    pub fn counts(&self) -> Result<(u64, u64), AuthError> {
        Ok((
            self.store.list_raw("user")?.len() as u64,
            self.store.list_raw("role")?.len() as u64,
        ))
    }

    /// Whether the roles of an identity allow `verb` on `kind` in the admin API.
    pub fn authorize_rule(
        &self,
        identity: &Identity,
        kind: &str,
        verb: &str,
    ) -> Result<(), AuthError> {
        let checker = self.checker_for(&identity.roles, &identity.traits)?;
        checker.check_rule(kind, verb).map_err(|e| {
            self.metrics.admin_denied.inc();
            AuthError::Denied(e.to_string())
        })
    }
}

/// What `create_resources` wrote, and the fields it stored without acting on them.
#[derive(Debug, Clone, Default)]
pub struct CreatedResources {
    /// `kind/name` of each resource written.
    pub written: Vec<String>,
    /// One line per field stored but ignored, naming the file, line and field.
    pub warnings: Vec<String>,
}

/// What an operator may see of a stored document: a token without its secret's hash.
fn public_part(kind: &str, mut doc: serde_json::Value) -> serde_json::Value {
    if kind == "token"
        && let Some(spec) = doc.get_mut("spec").and_then(|s| s.as_object_mut())
    {
        spec.remove("secret_hash");
    }
    doc
}

/// The token role and certificate role of an agent joining as `role`.
fn join_roles(role: &str) -> Result<(hop_rbac::SystemRole, HostRole), AuthError> {
    let system_role: hop_rbac::SystemRole = role.parse().map_err(AuthError::BadRequest)?;
    let host_role = match system_role {
        hop_rbac::SystemRole::Node => HostRole::Node,
        hop_rbac::SystemRole::App => HostRole::App,
        hop_rbac::SystemRole::Db => HostRole::Db,
        hop_rbac::SystemRole::Kube => HostRole::Kube,
        hop_rbac::SystemRole::WindowsDesktop => HostRole::Desktop,
        hop_rbac::SystemRole::Proxy => HostRole::Proxy,
        other => {
            return Err(AuthError::BadRequest(format!(
                "role {:?} cannot join with a host certificate",
                other.as_str()
            )));
        }
    };
    Ok((system_role, host_role))
}

/// What the audit log records for a refused login: the real reason, which the caller never sees.
fn login_failure_reason(e: &AuthError) -> String {
    match e {
        AuthError::LoginRefused { reason } => (*reason).to_string(),
        other => other.to_string(),
    }
}
