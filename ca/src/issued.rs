//! When a certificate was issued: its validity start without the clock-skew margin the CA adds
//! (`valid_after` / `notBefore` are set [`CLOCK_SKEW`](crate::authority) before issuance).
//!
//! Admission compares this with an identity's "not before" stamp (bumped by a lock or a role
//! change) to void certificates issued earlier. Read after the certificate was verified.

use std::time::SystemTime;

use russh::keys::ssh_key::Certificate;

use crate::authority::{self, CLOCK_SKEW};

/// The issue time of an OpenSSH certificate, or `None` when it cannot be read.
#[must_use]
pub fn ssh_issued_at(cert_openssh: &str) -> Option<SystemTime> {
    let cert = Certificate::from_openssh(cert_openssh.trim()).ok()?;
    Some(authority::from_unix(cert.valid_after()) + CLOCK_SKEW)
}

/// The issue time of an X.509 certificate (DER), or `None` when it cannot be read.
#[must_use]
pub fn x509_issued_at(cert_der: &[u8]) -> Option<SystemTime> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let secs = u64::try_from(cert.validity().not_before.timestamp()).ok()?;
    Some(authority::from_unix(secs) + CLOCK_SKEW)
}

/// The serial number of an X.509 certificate (DER) as lower-case hex, or `None` when it cannot be
/// read.
#[must_use]
pub fn x509_serial_hex(cert_der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    Some(hex::encode(cert.raw_serial()))
}
