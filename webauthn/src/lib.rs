//! WebAuthn relying-party checks, sans IO: what Auth needs to register a security key or passkey
//! and to check an assertion made with it. This crate owns the parsing of every authenticator
//! byte Hop accepts (client data JSON, authenticator data, attestation objects, COSE public
//! keys) and the rules a ceremony must pass (type, challenge, origin, RP ID hash, user presence
//! and verification, signature, signature counter). It keeps no state: challenges, stored
//! credentials and counters are the caller's. Signatures are checked with aws-lc-rs, the one
//! crypto provider of the tree (OpenSSL-based WebAuthn libraries are not an option here).
//!
//! The client's side of a FIDO2 key is here too: [`ctap`] (CTAPHID and the ceremonies' CBOR),
//! [`client_pin`] and [`pin`] (the PIN/UV auth protocol, whose key agreement, KDFs and ciphers
//! are RustCrypto's p256, hkdf, hmac, aes and cbc, already in the graph through russh; its
//! tests check them against aws-lc-rs computing the same values).
//!
//! Attestation: the formats `none` and `packed` (self attestation, or an `x5c` chain whose leaf
//! signature is checked, without trust anchors: Hop records the authenticator model, AAGUID,
//! and does not enforce a vendor list). Anything else is refused by name.

#![forbid(unsafe_code)]

mod attestation;
mod auth_data;
mod cbor;
mod ceremony;
mod client_data;
pub mod client_pin;
mod cose;
pub mod ctap;
mod error;
pub mod pin;
#[cfg(test)]
mod pin_tests;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
#[cfg(test)]
mod tests;

pub use attestation::{Attestation, AttestationKind};
pub use auth_data::{AttestedCredential, AuthenticatorData, Flags};
pub use ceremony::{
    Assertion, AssertionCheck, RegisteredCredential, Registration, RegistrationCheck,
    verify_assertion, verify_registration,
};
pub use client_data::{CeremonyType, ClientData};
pub use cose::{CoseAlgorithm, CoseKey};
pub use error::WebauthnError;

/// The COSE algorithms Hop asks authenticators for, in order of preference (ES256, EdDSA,
/// RS256), as `pubKeyCredParams` lists them.
pub const SUPPORTED_ALGORITHMS: [i64; 3] = [-7, -8, -257];

/// Fuzz entry points: every parser of authenticator bytes, on arbitrary input.
pub mod fuzz {
    /// Runs every parser on `data`; none may panic.
    pub fn parse_all(data: &[u8]) {
        let _ = super::client_data::ClientData::parse(data);
        let _ = super::auth_data::AuthenticatorData::parse(data);
        let _ = super::attestation::Attestation::parse(data);
        let _ = super::cose::CoseKey::from_cbor(data);
    }

    /// Runs the client's CTAP2 answer parsers (getInfo and clientPIN included) and the
    /// CTAPHID reassembler on `data`.
    pub fn parse_ctap(data: &[u8]) {
        super::ctap::fuzz_parse(data);
    }
}
