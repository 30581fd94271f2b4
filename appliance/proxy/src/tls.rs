//! The proxy's TLS identity and rustls server configuration.
//!
//! This module owns where the proxy's certificate comes from (operator files, or a host
//! certificate from the cluster's host CA at start), the ALPN protocols it offers, and the optional
//! client-certificate check against the user CA (so admin tools can authenticate with their login
//! certificate). It does no IO beyond reading the operator's files.

use std::path::Path;
use std::sync::Arc;

use hop_net::pem::PemError;
use rustls::RootCertStore;
use rustls::server::{VerifierBuilderError, WebPkiClientVerifier};

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

use hop_net::pem::{parse_chain, parse_key, provider};

/// Why the proxy has no TLS configuration: the operator's files (unreadable, not PEM, a key that
/// does not match) or rustls refusing the setup. Causes whose words are already in the message
/// are kept as fields, not as sources, so that error chains do not repeat them.
#[derive(Debug, thiserror::Error)]
pub enum ProxyTlsError {
    #[error("proxy_service.tls.cert_file {}", path.display())]
    CertFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("proxy_service.tls.key_file {}", path.display())]
    KeyFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error("client CA certificate: {cause}")]
    ClientCa { cause: rustls::Error },
    #[error("client certificate verifier: {cause}")]
    ClientVerifier { cause: VerifierBuilderError },
    #[error("TLS versions: {cause}")]
    Versions { cause: rustls::Error },
    #[error("proxy certificate and key do not match or are unusable: {cause}")]
    Unusable { cause: rustls::Error },
}

/// Reads an operator-supplied certificate chain and key.
pub fn load_files(cert: &Path, key: &Path) -> Result<(String, String), ProxyTlsError> {
    let c = std::fs::read_to_string(cert).map_err(|source| ProxyTlsError::CertFile {
        path: cert.to_path_buf(),
        source,
    })?;
    let k = std::fs::read_to_string(key).map_err(|source| ProxyTlsError::KeyFile {
        path: key.to_path_buf(),
        source,
    })?;
    Ok((k, c))
}

/// The rustls configuration of the one port. `user_ca_pems` are the user CA certificates whose
/// client certificates are accepted (optional: anonymous clients are served too).
pub fn server_config(
    chain_pem: &str,
    key_pem: &str,
    client_ca_pems: &[String],
) -> Result<rustls::ServerConfig, ProxyTlsError> {
    let chain = parse_chain(chain_pem)?;
    let key = parse_key(key_pem)?;
    let mut roots = RootCertStore::empty();
    for pem in client_ca_pems {
        for c in parse_chain(pem)? {
            roots
                .add(c)
                .map_err(|cause| ProxyTlsError::ClientCa { cause })?;
        }
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .allow_unauthenticated()
        .build()
        .map_err(|cause| ProxyTlsError::ClientVerifier { cause })?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|cause| ProxyTlsError::Versions { cause })?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|cause| ProxyTlsError::Unusable { cause })?;
    cfg.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    // The server's order (`provider`), not the client's: OpenSSL clients list AES-256 first.
    cfg.ignore_client_order = true;
    // Relayed sessions move to the data plane's fast path with their traffic keys (crate::relay).
    cfg.enable_secret_extraction = true;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::crypto::aws_lc_rs::cipher_suite::{
        TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384,
    };

    #[test]
    fn the_server_picks_aes_128_even_when_the_client_lists_aes_256_first() {
        let ck = rcgen::generate_simple_self_signed(vec!["proxy.test".to_string()]).unwrap();
        let pem = ck.cert.pem();
        let server = server_config(
            &pem,
            &ck.signing_key.serialize_pem(),
            std::slice::from_ref(&pem),
        )
        .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(ck.cert.der().clone()).unwrap();
        // aws-lc-rs's default order, as OpenSSL's: AES-256-GCM-SHA384 first.
        let openssl_like = rustls::crypto::aws_lc_rs::default_provider();
        assert_eq!(
            openssl_like.cipher_suites[0].suite(),
            TLS13_AES_256_GCM_SHA384.suite()
        );
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(openssl_like))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut c =
            rustls::ClientConnection::new(Arc::new(client), "proxy.test".try_into().unwrap())
                .unwrap();
        let mut s = rustls::ServerConnection::new(Arc::new(server)).unwrap();
        while c.is_handshaking() || s.is_handshaking() {
            let mut wire = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut wire).unwrap();
            }
            s.read_tls(&mut &wire[..]).unwrap();
            s.process_new_packets().unwrap();
            let mut back = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut back).unwrap();
            }
            c.read_tls(&mut &back[..]).unwrap();
            c.process_new_packets().unwrap();
        }
        assert_eq!(
            s.negotiated_cipher_suite().map(|s| s.suite()),
            Some(TLS13_AES_128_GCM_SHA256.suite())
        );
        assert_eq!(
            provider().cipher_suites[0].suite(),
            TLS13_AES_128_GCM_SHA256.suite()
        );
    }
}
