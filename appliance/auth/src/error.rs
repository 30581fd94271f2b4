//! [`AuthError`]: why an Auth operation was refused, and whose fault it was (the caller's, or an
//! internal failure the operator must look at). Wrapped errors keep their source, so that logs
//! can show the whole chain; the words a caller sees are the variant's own. The gRPC layer maps
//! it onto status codes. It never carries a secret.

use hop_ca::{CaError, CaKind};
use hop_storage::{AuditError, StorageError};

use crate::join_tokens::JoinTokenError;
use crate::password::PasswordError;
use crate::trackers::TrackerError;

/// The same words for every credential failure, so that a caller learns nothing about which part
/// was wrong or whether the user exists.
pub const INVALID_CREDENTIALS: &str = "invalid username, password or second factor";

/// Why an Auth operation was refused. Each variant says whose fault it was.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    // ---- the caller's fault ----
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
    /// A public key the caller sent cannot be certified; `field` names the request's field.
    #[error("{field}: {source}")]
    UnusableKey {
        field: &'static str,
        #[source]
        source: CaError,
    },
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// A record this operation creates was created by someone else first (the storage error
    /// names the key).
    #[error("{0}")]
    AlreadyStored(#[source] StorageError),
    #[error("{0} not found")]
    NotFound(String),
    #[error("access denied: {0}")]
    Denied(String),
    /// The join token an agent presented is refused.
    #[error("access denied: {0}")]
    JoinToken(#[from] JoinTokenError),
    /// A bot's join or renewal is refused.
    #[error("access denied: {0}")]
    Bot(#[from] crate::bots::BotError),
    #[error(transparent)]
    AccessRequest(#[from] crate::access_requests::RequestError),
    /// An SSO login is refused (the message says why and whose fault it is).
    #[error(transparent)]
    Sso(#[from] crate::sso::SsoError),
    /// A CA rotation request names a phase, mode or grace period that cannot be applied now.
    #[error(transparent)]
    Rotation(#[from] crate::rotation::RotationError),

    // ---- internal: the operator should look at the logs ----
    /// The backend failed (I/O, corruption, a newer schema, an engine failure).
    #[error("internal error: {0}")]
    Storage(#[source] StorageError),
    /// Another writer changed a record between this operation's read and write; a retry may
    /// succeed.
    #[error("internal error: concurrent update, retry: {0}")]
    Conflict(#[source] StorageError),
    /// Too many concurrent writers kept this operation from finishing; a retry may succeed.
    #[error("internal error: {subject}: too many concurrent {contenders}, retry")]
    Contended {
        /// What was contended (`join token ID`, `node name "NAME"`).
        subject: String,
        /// Who contended for it (`joins`, `claims`).
        contenders: &'static str,
    },
    /// A session tracker could not be read or written.
    #[error("internal error: {0}")]
    TrackerStorage(#[source] TrackerError),
    /// The audit log did not record an event.
    #[error("internal error: audit log: {0}")]
    AuditLog(#[source] AuditError),
    /// A certificate authority could not be generated at first start.
    #[error("internal error: cannot generate the {kind} CA: {source}")]
    CaGeneration {
        kind: CaKind,
        #[source]
        source: CaError,
    },
    /// A key or certificate for one of the cluster's own services could not be made.
    #[error("internal error: {0}")]
    Issuance(#[source] CaError),
    /// A password could not be hashed.
    #[error("internal error: {0}")]
    PasswordHash(#[source] PasswordError),
    /// Stored roles could not be evaluated.
    #[error("internal error: role evaluation: {0}")]
    RoleEvaluation(#[source] hop_rbac::ValidationError),
    /// A document the Auth service generates itself did not parse (a bug).
    #[error("internal error: {0}")]
    GeneratedDocument(#[source] hop_rbac::ParseError),
    /// A thread panicked while holding `0`; the state it guards can no longer be trusted.
    #[error("internal error: {0} poisoned")]
    Poisoned(&'static str),
    /// An invariant of the Auth service broke (a bug).
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StorageError> for AuthError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::AlreadyExists { .. } => AuthError::AlreadyStored(e),
            StorageError::Conflict { .. } => AuthError::Conflict(e),
            other => AuthError::Storage(other),
        }
    }
}
