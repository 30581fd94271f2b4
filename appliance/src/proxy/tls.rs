//! The proxy's TLS identity and rustls server configuration.
//!
//! This module owns where the proxy's certificate comes from (operator files, or a host
//! certificate from the cluster's host CA at start), the ALPN protocols it offers, and the optional
//! client-certificate check against the user CA (so admin tools can authenticate with their login
//! certificate). It does no IO beyond reading the operator's files.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, anyhow};
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// ALPN protocols of the one port, in the server's order of preference.
pub const ALPN: &[&[u8]] = &[
    b"h2",
    b"http/1.1",
    b"hop-auth",
    b"hop-tunnel",
    b"hop-tunnel-data",
    b"hop-tcp",
    b"hop-ssh",
    b"hop-postgres",
    b"hop-mysql",
    b"hop-join",
    // PostgreSQL 17's direct TLS (`sslnegotiation=direct`).
    b"postgresql",
];

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

pub fn parse_chain(pem: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow!("invalid certificate PEM: {e}"))?;
    if certs.is_empty() {
        return Err(anyhow!("no certificate found in PEM"));
    }
    Ok(certs)
}

pub fn parse_key(pem: &str) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| anyhow!("invalid private key PEM: {e}"))
}

/// Reads an operator-supplied certificate chain and key.
pub fn load_files(cert: &Path, key: &Path) -> anyhow::Result<(String, String)> {
    let c = std::fs::read_to_string(cert)
        .with_context(|| format!("proxy_service.tls.cert_file {}", cert.display()))?;
    let k = std::fs::read_to_string(key)
        .with_context(|| format!("proxy_service.tls.key_file {}", key.display()))?;
    Ok((k, c))
}

/// The rustls configuration of the one port. `user_ca_pems` are the user CA certificates whose
/// client certificates are accepted (optional: anonymous clients are served too).
pub fn server_config(
    chain_pem: &str,
    key_pem: &str,
    client_ca_pems: &[String],
) -> anyhow::Result<rustls::ServerConfig> {
    let chain = parse_chain(chain_pem)?;
    let key = parse_key(key_pem)?;
    let mut roots = RootCertStore::empty();
    for pem in client_ca_pems {
        for c in parse_chain(pem)? {
            roots
                .add(c)
                .map_err(|e| anyhow!("client CA certificate: {e}"))?;
        }
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| anyhow!("client certificate verifier: {e}"))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| anyhow!("TLS versions: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| anyhow!("proxy certificate and key do not match or are unusable: {e}"))?;
    cfg.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    // Relayed sessions move to the data plane's fast path with their traffic keys (crate::relay).
    cfg.enable_secret_extraction = true;
    Ok(cfg)
}
