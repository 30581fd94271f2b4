//! [`AuthError`]: why an Auth operation was refused, and whose fault it was (the caller's, the
//! configuration's, or an internal failure the operator must look at). The gRPC layer maps it
//! onto status codes; it never carries a secret.

use hop_storage::StorageError;

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
