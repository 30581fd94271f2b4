//! How the client decides to trust a proxy's certificate.
//!
//! This module owns the three ways a client can trust a proxy: a CA pin (the SHA-256 of the
//! cluster host CA's key, printed by `hop start`), the CA certificates saved at a previous login,
//! or the system's roots; plus `--insecure`, which trusts anything and says so. Pinning checks
//! that the chain the proxy presents contains a CA with the pinned key and that the proxy's
//! certificate is validly signed by that CA for the name being dialed.

use std::sync::Arc;

use anyhow::{anyhow, bail};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, Error as TlsError, RootCertStore, SignatureScheme};

use crate::proxy::tls::{parse_chain, parse_key, provider};

/// What the client trusts.
#[derive(Debug, Clone)]
pub enum Trust {
    /// `sha256:<hex>` of a CA's SubjectPublicKeyInfo.
    Pin(String),
    /// CA certificates (PEM) saved at an earlier login.
    CaPem(String),
    /// The operating system's roots.
    System,
    /// Nothing is checked.
    Insecure,
}

/// Normalizes a pin as typed: accepts `sha256:HEX` (case-insensitive).
pub fn normalize_pin(pin: &str) -> anyhow::Result<String> {
    let p = pin.trim();
    let hex_part = p
        .strip_prefix("sha256:")
        .or_else(|| p.strip_prefix("SHA256:"))
        .ok_or_else(|| anyhow!("--ca-pin: expected sha256:<64 hex digits>, got {p:?}"))?;
    if hex_part.len() != 64 || !hex_part.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("--ca-pin: expected sha256:<64 hex digits>, got {p:?}");
    }
    Ok(format!("sha256:{}", hex_part.to_ascii_lowercase()))
}

/// The two verifiers that do not delegate to webpki's roots: a CA pin, or nothing (`--insecure`).
/// Handshake signatures are always checked, whatever the mode.
#[derive(Debug)]
enum CustomCheck {
    /// `sha256:<hex>` of the SubjectPublicKeyInfo of a CA the chain must contain.
    Pin(String),
    Insecure,
}

#[derive(Debug)]
struct CustomVerifier {
    check: CustomCheck,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for CustomVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        let pin = match &self.check {
            CustomCheck::Insecure => return Ok(ServerCertVerified::assertion()),
            CustomCheck::Pin(pin) => pin,
        };
        let anchor = intermediates
            .iter()
            .find(|c| hop_ca::ca_pin(c.as_ref()).is_ok_and(|p| p == *pin))
            .ok_or_else(|| {
                TlsError::General(format!(
                    "the proxy's certificate chain has no CA matching the pin {pin}; check --ca-pin against `hop admin status` on the cluster"
                ))
            })?;
        let mut roots = RootCertStore::empty();
        roots
            .add(anchor.clone().into_owned())
            .map_err(|e| TlsError::General(format!("pinned CA is unusable: {e}")))?;
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| TlsError::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, &[], server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls12_signature(
            m,
            c,
            d,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls13_signature(
            m,
            c,
            d,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client certificate for mutual TLS (PEM chain and PKCS#8 key).
#[derive(Debug, Clone)]
pub struct ClientCert {
    pub chain_pem: String,
    pub key_pem: String,
}

/// The rustls client configuration for talking to a proxy.
pub fn client_config(
    trust: &Trust,
    client_cert: Option<&ClientCert>,
    alpn: &[u8],
) -> anyhow::Result<rustls::ClientConfig> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| anyhow!("TLS versions: {e}"))?;
    let verifier: Arc<dyn ServerCertVerifier> = match trust {
        Trust::Pin(pin) => Arc::new(CustomVerifier {
            check: CustomCheck::Pin(normalize_pin(pin)?),
            provider: provider.clone(),
        }),
        Trust::Insecure => Arc::new(CustomVerifier {
            check: CustomCheck::Insecure,
            provider: provider.clone(),
        }),
        Trust::CaPem(pem) => {
            let mut roots = RootCertStore::empty();
            for c in parse_chain(pem)? {
                roots
                    .add(c)
                    .map_err(|e| anyhow!("saved CA certificate: {e}"))?;
            }
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()?
        }
        Trust::System => {
            let mut roots = RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for c in found.certs {
                let _ = roots.add(c);
            }
            if roots.is_empty() {
                bail!("no system CA certificates found; pass --ca-pin (printed by `hop start`)");
            }
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()?
        }
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut cfg = match client_cert {
        Some(cc) => builder
            .with_client_auth_cert(parse_chain(&cc.chain_pem)?, parse_key(&cc.key_pem)?)
            .map_err(|e| anyhow!("your login certificate is unusable: {e}"))?,
        None => builder.with_no_client_auth(),
    };
    if !alpn.is_empty() {
        cfg.alpn_protocols = vec![alpn.to_vec()];
    }
    Ok(cfg)
}
