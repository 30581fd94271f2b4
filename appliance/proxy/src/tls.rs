//! The proxy's TLS identity and rustls server configuration.
//!
//! This module owns where the proxy's certificate comes from (operator files, or a host
//! certificate from the cluster's host CA at start), the ALPN protocols it offers, and the optional
//! client-certificate check against the user CA (so admin tools can authenticate with their login
//! certificate). It does no IO beyond reading the operator's files.
//!
//! TLS 1.3 resumption is on and 0-RTT is off: the configuration issues stateless session tickets
//! sealed with keys that live only in this process's memory (rustls' aws-lc-rs `Ticketer`: made at
//! start, replaced every 6 hours, the previous keys kept, so a ticket resumes for at most 12
//! hours, and never after the configuration is rebuilt with a new certificate). A resumed
//! connection presents the client certificate of the handshake its ticket came from; the routes
//! identify and admit it exactly as after a full handshake (`identify.rs` verifies the certificate
//! again at the current time, `admission.rs` decides again), so resumption saves the certificate
//! signatures and chain checks of both sides, never a decision (the key exchange stays: PSK with
//! ECDHE, forward secrecy holds). Agents resume their data connections
//! this way instead of a full handshake per session.

use std::path::Path;
use std::sync::Arc;

use hop_net::pem::PemError;
use rustls::RootCertStore;
use rustls::server::{ResolvesServerCert, VerifierBuilderError, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;

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
    b"hop-peer",
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
    #[error("TLS session ticket keys: {cause}")]
    Tickets { cause: rustls::Error },
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
    let cfg = builder(client_ca_pems)?
        .with_single_cert(chain, key)
        .map_err(|cause| ProxyTlsError::Unusable { cause })?;
    finish(cfg)
}

/// [`server_config`] whose certificate `resolver` picks per ClientHello.
pub fn server_config_with_resolver(
    resolver: Arc<dyn ResolvesServerCert>,
    client_ca_pems: &[String],
) -> Result<rustls::ServerConfig, ProxyTlsError> {
    finish(builder(client_ca_pems)?.with_cert_resolver(resolver))
}

/// A certificate chain and its key, checked to belong together.
pub fn certified_key(chain_pem: &str, key_pem: &str) -> Result<CertifiedKey, ProxyTlsError> {
    CertifiedKey::from_der(parse_chain(chain_pem)?, parse_key(key_pem)?, &provider())
        .map_err(|cause| ProxyTlsError::Unusable { cause })
}

/// The configuration up to its certificate: versions and the client certificate check.
fn builder(
    client_ca_pems: &[String],
) -> Result<
    rustls::ConfigBuilder<rustls::ServerConfig, rustls::server::WantsServerCert>,
    ProxyTlsError,
> {
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
    Ok(rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|cause| ProxyTlsError::Versions { cause })?
        .with_client_cert_verifier(verifier))
}

/// ALPN, cipher order, secret extraction and session tickets.
fn finish(mut cfg: rustls::ServerConfig) -> Result<rustls::ServerConfig, ProxyTlsError> {
    cfg.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    // The server's order (`provider`), not the client's: OpenSSL clients list AES-256 first.
    cfg.ignore_client_order = true;
    // Relayed sessions move to the data plane's fast path with their traffic keys (crate::relay).
    cfg.enable_secret_extraction = true;
    // Stateless tickets (keys in memory only) so that resumption costs the proxy no per-client
    // state; no early data, which a replay could repeat.
    cfg.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()
        .map_err(|cause| ProxyTlsError::Tickets { cause })?;
    cfg.max_early_data_size = 0;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::crypto::aws_lc_rs::cipher_suite::{
        TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384,
    };

    /// Runs a handshake in memory, then lets the client read what the server sent after it
    /// (session tickets).
    fn handshake(c: &mut rustls::ClientConnection, s: &mut rustls::ServerConnection) {
        loop {
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
            if !c.is_handshaking() && !s.is_handshaking() && !c.wants_write() && !s.wants_write() {
                return;
            }
        }
    }

    type Certified = rcgen::CertifiedKey<rcgen::KeyPair>;

    fn certified(name: &str) -> Certified {
        rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap()
    }

    /// A client configuration that presents `agent` (self-signed: the server trusts it as its
    /// own CA), trusts `proxy`, keeps its sessions (as an agent's data connections do) and would
    /// send early data if the server let it.
    fn agent_client(proxy: &Certified, agent: &Certified) -> Arc<rustls::ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(proxy.cert.der().clone()).unwrap();
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(
                vec![agent.cert.der().clone()],
                parse_key(&agent.signing_key.serialize_pem()).unwrap(),
            )
            .unwrap();
        cfg.enable_early_data = true;
        Arc::new(cfg)
    }

    /// This release's configuration for `proxy`, trusting `agent`'s certificate.
    fn this_release(proxy: &Certified, agent: &Certified) -> Arc<rustls::ServerConfig> {
        Arc::new(
            server_config(
                &proxy.cert.pem(),
                &proxy.signing_key.serialize_pem(),
                &[agent.cert.pem()],
            )
            .unwrap(),
        )
    }

    fn connect(
        client: &Arc<rustls::ClientConfig>,
        server: &Arc<rustls::ServerConfig>,
    ) -> rustls::ServerConnection {
        let mut c = rustls::ClientConnection::new(client.clone(), "proxy.test".try_into().unwrap())
            .unwrap();
        let mut s = rustls::ServerConnection::new(server.clone()).unwrap();
        handshake(&mut c, &mut s);
        s
    }

    #[test]
    fn a_second_connection_resumes_with_the_same_client_certificate_and_no_early_data() {
        let (proxy, agent) = (certified("proxy.test"), certified("agent.test"));
        let client = agent_client(&proxy, &agent);
        let server = this_release(&proxy, &agent);
        assert_eq!(server.max_early_data_size, 0);
        let mut kinds = Vec::new();
        for _ in 0..3 {
            let mut c =
                rustls::ClientConnection::new(client.clone(), "proxy.test".try_into().unwrap())
                    .unwrap();
            let mut s = rustls::ServerConnection::new(server.clone()).unwrap();
            // The client would send early data if the server allowed it.
            if let Some(mut early) = c.early_data() {
                use std::io::Write;
                let _ = early.write(b"replayable");
            }
            handshake(&mut c, &mut s);
            assert!(!c.is_early_data_accepted());
            assert!(s.early_data().is_none());
            assert_eq!(
                s.peer_certificates()
                    .and_then(|p| p.first())
                    .map(|c| c.as_ref().to_vec()),
                Some(agent.cert.der().to_vec()),
                "a resumed connection names the same client certificate"
            );
            kinds.push(s.handshake_kind());
        }
        use rustls::HandshakeKind::{Full, Resumed};
        assert_eq!(kinds, [Some(Full), Some(Resumed), Some(Resumed)]);
    }

    #[test]
    fn tickets_of_another_configuration_are_not_resumed() {
        let (proxy, agent) = (certified("proxy.test"), certified("agent.test"));
        let client = agent_client(&proxy, &agent);
        let (before, after) = (this_release(&proxy, &agent), this_release(&proxy, &agent));
        assert_eq!(
            connect(&client, &before).handshake_kind(),
            Some(rustls::HandshakeKind::Full)
        );
        // The client offers the first configuration's ticket; the second cannot open it.
        assert_eq!(
            connect(&client, &after).handshake_kind(),
            Some(rustls::HandshakeKind::Full)
        );
    }

    /// Agents and proxies of different releases meet: a resuming agent with a proxy configured
    /// as the previous release did (rustls' defaults: no ticketer), and an agent of the previous
    /// release (a new configuration per connection, so no tickets kept) with this proxy, both
    /// connect every time.
    #[test]
    fn resumption_is_negotiated_by_tls_alone_across_releases() {
        let (proxy, agent) = (certified("proxy.test"), certified("agent.test"));
        let mut roots = RootCertStore::empty();
        roots.add(agent.cert.der().clone()).unwrap();
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .allow_unauthenticated()
            .build()
            .unwrap();
        let previous_release = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .with_client_cert_verifier(verifier)
                .with_single_cert(
                    parse_chain(&proxy.cert.pem()).unwrap(),
                    parse_key(&proxy.signing_key.serialize_pem()).unwrap(),
                )
                .unwrap(),
        );
        let resuming = agent_client(&proxy, &agent);
        for _ in 0..3 {
            assert!(
                connect(&resuming, &previous_release)
                    .peer_certificates()
                    .is_some()
            );
        }
        let server = this_release(&proxy, &agent);
        for _ in 0..2 {
            let previous_agent = agent_client(&proxy, &agent);
            let s = connect(&previous_agent, &server);
            assert_eq!(s.handshake_kind(), Some(rustls::HandshakeKind::Full));
            assert!(s.peer_certificates().is_some());
        }
    }

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
        handshake(&mut c, &mut s);
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
