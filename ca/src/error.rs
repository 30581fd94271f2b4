//! The one error type of the CA crate. Each variant says what was wrong with the request, the
//! certificate or the stored CA, so that callers can tell a peer's bad credential (reject, audit)
//! from a caller's bad request (fix the call) and from broken CA material (operator problem).

use std::time::SystemTime;

use crate::authority::CaKind;

/// What went wrong while generating a CA, issuing a certificate or verifying one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    // ---- the caller asked for something this CA cannot do ----
    /// An issuance method was called on a CA of the wrong kind (e.g. a host cert from the user CA).
    #[error("the {kind} CA cannot {operation}")]
    WrongCaKind {
        /// The kind of the CA the method was called on.
        kind: CaKind,
        /// What was asked of it.
        operation: &'static str,
    },
    /// The request itself is unusable (bad host name, TTL that overflows the clock, …).
    #[error("invalid request: {what}")]
    InvalidRequest {
        /// What was wrong with it.
        what: String,
    },
    /// A name (CA kind, host role) did not parse.
    #[error("unknown {what} {value:?}")]
    UnknownName {
        /// Which kind of name.
        what: &'static str,
        /// The text that did not parse.
        value: String,
    },

    // ---- key material (the caller's or the stored CA's) ----
    /// A key did not parse or is of an algorithm Hop does not accept.
    #[error("invalid {what}: {reason}")]
    InvalidKey {
        /// Which key (e.g. "subject SSH public key", "CA X.509 private key").
        what: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// The stored CA lacks material its kind must have (a corrupted or foreign record).
    #[error("the {kind} CA has no {what}")]
    MissingCaMaterial {
        /// The kind of the CA.
        kind: CaKind,
        /// What is missing.
        what: &'static str,
    },
    /// The signing library failed to build or sign a certificate (internal error).
    #[error("certificate issuance failed: {reason}")]
    Issuance {
        /// The library's description.
        reason: String,
    },

    // ---- a presented certificate was refused ----
    /// The certificate (or PEM text) does not parse.
    #[error("malformed certificate: {reason}")]
    MalformedCertificate {
        /// The parser's description.
        reason: String,
    },
    /// The certificate's validity ended at or before `now`.
    #[error("certificate expired at {not_after:?}")]
    Expired {
        /// End of the validity window.
        not_after: SystemTime,
    },
    /// The certificate's validity starts after `now`.
    #[error("certificate not valid before {not_before:?}")]
    NotYetValid {
        /// Start of the validity window.
        not_before: SystemTime,
    },
    /// No trusted CA of the required kind signed the certificate.
    #[error("certificate is not signed by a trusted CA")]
    UntrustedSigner,
    /// The certificate names a trusted CA as signer but the signature does not verify (tampered).
    #[error("certificate signature does not verify")]
    BadSignature,
    /// The certificate is of the wrong type or usage (host cert as user cert, missing EKU, …).
    #[error("wrong certificate type: expected {expected}")]
    WrongCertType {
        /// What was required.
        expected: &'static str,
    },
    /// The certificate does not list the required principal.
    #[error("principal {principal:?} is not allowed by the certificate")]
    PrincipalNotAllowed {
        /// The principal that was checked.
        principal: String,
    },
    /// The certificate carries a critical option Hop does not enforce, so it must be refused.
    #[error("certificate carries unsupported critical option {name:?}")]
    UnsupportedCriticalOption {
        /// The option's name.
        name: String,
    },
    /// The certificate has no Hop identity (no key id / no identity extension / no role ext).
    #[error("certificate carries no Hop identity")]
    MissingIdentity,
    /// The Hop identity in the certificate does not parse.
    #[error("certificate identity is malformed: {reason}")]
    MalformedIdentity {
        /// The parser's description.
        reason: String,
    },
}
