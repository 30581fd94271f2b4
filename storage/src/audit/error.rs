//! The audit log's error vocabulary. This module owns [`AuditError`] and the rule that each
//! failure says whose fault it is ([`Fault`]), as the rest of the storage layer does; it must
//! never merge "the event was rejected" with "the event may or may not have been written".

use crate::error::{Fault, StorageError};

/// Everything an audit-log operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Opening, reading or writing the audit file failed (I/O, corruption, a newer schema, a
    /// second open of the same file).
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The event breaks a rule of the event schema; it was not queued.
    #[error("invalid audit event: {field} {reason}")]
    InvalidEvent {
        /// The offending field (`event`, `fields.<name>`, …).
        field: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// A search query is malformed (an unreadable cursor, an empty event type).
    #[error("invalid audit query: {field} {reason}")]
    InvalidQuery {
        /// The offending query field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The [`crate::audit::AuditConfig`] is unusable.
    #[error("invalid audit configuration: {field} {reason}")]
    InvalidConfig {
        /// The offending configuration field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A fire-and-forget submission found the queue full. The event was not accepted; the
    /// overflow was counted in [`crate::audit::AuditStats::overflowed`].
    #[error(
        "the audit queue is full ({capacity} events waiting for the disk); the event was not \
         accepted"
    )]
    Overloaded {
        /// The queue's capacity.
        capacity: usize,
    },
    /// The log is shutting down (or its writer thread died); the event was not accepted, or
    /// its outcome is unknown if it was already queued.
    #[error("the audit log is closed")]
    Closed,
    /// The batch holding the event could not be made durable; the event was not written.
    #[error("the audit batch could not be made durable, so the event was not written: {detail}")]
    NotWritten {
        /// The storage engine's description of the failure.
        detail: String,
    },
    /// The sink of an export failed.
    #[error("writing the audit export failed: {0}")]
    Export(#[source] std::io::Error),
}

impl AuditError {
    /// Whose fault the error is.
    pub fn fault(&self) -> Fault {
        match self {
            Self::Storage(err) => err.fault(),
            Self::InvalidEvent { .. } | Self::InvalidQuery { .. } => Fault::Caller,
            Self::InvalidConfig { .. } => Fault::Operator,
            // The disk cannot keep up with the event rate: hop (or what is under it) is too slow
            // for the load, not the caller's request wrong.
            Self::Overloaded { .. } | Self::Closed | Self::NotWritten { .. } | Self::Export(_) => {
                Fault::Internal
            }
        }
    }

    pub(crate) fn invalid_event(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidEvent {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
