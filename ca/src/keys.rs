//! Key generation from an injected RNG: Ed25519 SSH key pairs and ECDSA P-256 key pairs for X.509
//! and JWT, for CAs and for clients/agents alike, plus loading the stored CA keys back for
//! signing. This module owns the encodings of private keys (OpenSSH PEM, PKCS#8 PEM); it never
//! reads the OS RNG (every key comes from the caller's `rng`) and never prints private keys.

use std::fmt;

use p256::elliptic_curve::Generate;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rand_core::CryptoRng;
use russh::keys::ssh_key::{self, Algorithm, PrivateKey};
use zeroize::{Zeroize, Zeroizing};

use crate::error::CaError;

/// An Ed25519 SSH key pair in OpenSSH encodings. The private key is wiped from memory on drop
/// (so fields cannot be moved out; clone or `std::mem::take` them).
pub struct SshKeyPair {
    /// OpenSSH private key PEM (`-----BEGIN OPENSSH PRIVATE KEY-----`), unencrypted.
    pub private_openssh: String,
    /// `ssh-ed25519 AAAA…` authorized-keys line (no comment).
    pub public_openssh: String,
}

impl fmt::Debug for SshKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshKeyPair")
            .field("private_openssh", &"<redacted>")
            .field("public_openssh", &self.public_openssh)
            .finish()
    }
}

impl Drop for SshKeyPair {
    fn drop(&mut self) {
        self.private_openssh.zeroize();
    }
}

/// An ECDSA P-256 key pair for X.509 certificates. The private key is wiped from memory on drop.
pub struct X509KeyPair {
    /// PKCS#8 private key PEM (`-----BEGIN PRIVATE KEY-----`).
    pub private_pkcs8_pem: String,
    /// DER SubjectPublicKeyInfo, what the `issue_*_x509` methods take.
    pub public_spki_der: Vec<u8>,
}

impl fmt::Debug for X509KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("X509KeyPair")
            .field("private_pkcs8_pem", &"<redacted>")
            .field("public_spki_der", &hex::encode(&self.public_spki_der))
            .finish()
    }
}

impl Drop for X509KeyPair {
    fn drop(&mut self) {
        self.private_pkcs8_pem.zeroize();
    }
}

/// Generates an Ed25519 SSH key pair from `rng` (deterministic for a seeded RNG).
///
/// # Errors
/// [`CaError::Issuance`] if the key cannot be encoded (does not happen for Ed25519).
pub fn generate_ssh_keypair<R: CryptoRng + ?Sized>(rng: &mut R) -> Result<SshKeyPair, CaError> {
    let key = ed25519_private(rng, "")?;
    let private_openssh = encode_ssh_private(&key)?;
    Ok(SshKeyPair {
        public_openssh: encode_ssh_public(key.public_key())?,
        private_openssh: private_openssh.as_str().to_owned(),
    })
}

/// Generates an ECDSA P-256 key pair from `rng` (deterministic for a seeded RNG).
///
/// # Errors
/// [`CaError::Issuance`] if the key cannot be encoded (does not happen for P-256).
pub fn generate_x509_keypair<R: CryptoRng + ?Sized>(rng: &mut R) -> Result<X509KeyPair, CaError> {
    let (private, public_spki_der) = p256_keypair(rng)?;
    Ok(X509KeyPair {
        private_pkcs8_pem: private.as_str().to_owned(),
        public_spki_der,
    })
}

/// A fresh Ed25519 private key with `comment`.
pub(crate) fn ed25519_private<R: CryptoRng + ?Sized>(
    rng: &mut R,
    comment: &str,
) -> Result<PrivateKey, CaError> {
    let mut key = PrivateKey::random(rng, Algorithm::Ed25519).map_err(issuance)?;
    key.set_comment(comment);
    Ok(key)
}

/// OpenSSH private key PEM of `key`.
pub(crate) fn encode_ssh_private(key: &PrivateKey) -> Result<Zeroizing<String>, CaError> {
    key.to_openssh(ssh_key::LineEnding::LF).map_err(issuance)
}

/// One-line OpenSSH public key (with the key's comment, if any).
pub(crate) fn encode_ssh_public(key: &ssh_key::PublicKey) -> Result<String, CaError> {
    key.to_openssh().map_err(issuance)
}

/// A fresh P-256 key: (PKCS#8 PEM, SPKI DER).
pub(crate) fn p256_keypair<R: CryptoRng + ?Sized>(
    rng: &mut R,
) -> Result<(Zeroizing<String>, Vec<u8>), CaError> {
    let secret = p256::SecretKey::generate_from_rng(rng);
    let pem = secret.to_pkcs8_pem(LineEnding::LF).map_err(issuance)?;
    let spki = secret
        .public_key()
        .to_public_key_der()
        .map_err(issuance)?
        .into_vec();
    Ok((pem, spki))
}

/// SPKI PEM of the public half of a PKCS#8 P-256 private key PEM.
pub(crate) fn p256_public_pem(private_pkcs8_pem: &str) -> Result<String, CaError> {
    let secret =
        p256::SecretKey::from_pkcs8_pem(private_pkcs8_pem).map_err(|e| CaError::InvalidKey {
            what: "CA P-256 private key",
            reason: e.to_string(),
        })?;
    secret
        .public_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(issuance)
}

/// Loads a stored P-256 PKCS#8 PEM as an rcgen signing key.
pub(crate) fn x509_signing_key(private_pkcs8_pem: &str) -> Result<rcgen::KeyPair, CaError> {
    rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(private_pkcs8_pem, &rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| CaError::InvalidKey {
            what: "CA X.509 private key",
            reason: e.to_string(),
        })
}

/// Parses a stored OpenSSH private key PEM.
pub(crate) fn ssh_signing_key(private_openssh: &str) -> Result<PrivateKey, CaError> {
    PrivateKey::from_openssh(private_openssh).map_err(|e| CaError::InvalidKey {
        what: "CA SSH private key",
        reason: e.to_string(),
    })
}

fn issuance(e: impl fmt::Display) -> CaError {
    CaError::Issuance {
        reason: e.to_string(),
    }
}
