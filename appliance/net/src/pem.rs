//! TLS material every part of Hop reads the same way: the crypto provider with its preferred
//! cipher order, and certificate chains and private keys from PEM text.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// PEM text that does not hold what was asked for.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("invalid certificate PEM: {0}")]
    Certificate(String),
    #[error("no certificate found in PEM")]
    NoCertificate,
    #[error("invalid private key PEM: {0}")]
    Key(String),
}

/// aws-lc-rs with TLS 1.3's AES-128-GCM-SHA256 first. Its key schedule runs on SHA-256, which
/// x86 (SHA-NI) and ARMv8 compute in hardware, where SHA-384's usually runs in software: on these
/// machines SHA-384 was 6 % of the proxy's CPU in the handshake benchmark. AES-128-GCM is also the
/// cheaper cipher for the relay. Go's TLS server (Teleport's) makes the same choice.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256;
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    p.cipher_suites
        .sort_by_key(|s| s.suite() != TLS13_AES_128_GCM_SHA256.suite());
    Arc::new(p)
}

/// The certificates of a PEM chain, in order; at least one.
pub fn parse_chain(pem: &str) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| PemError::Certificate(e.to_string()))?;
    if certs.is_empty() {
        return Err(PemError::NoCertificate);
    }
    Ok(certs)
}

/// The first private key of a PEM document.
pub fn parse_key(pem: &str) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| PemError::Key(e.to_string()))
}
