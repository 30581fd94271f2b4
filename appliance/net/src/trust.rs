//! How the client decides to trust a proxy's certificate.
//!
//! This module owns the three ways a client can trust a proxy: a CA pin (the SHA-256 of the
//! cluster host CA's key, printed by `hop start`), the CA certificates saved at a previous login,
//! or the system's roots; plus `--insecure`, which trusts anything and says so. Pinning checks
//! that the chain the proxy presents contains a CA with the pinned key and that the proxy's
//! certificate is validly signed by that CA for the name being dialed.
//!
//! It also owns the rule that the server at the proxy's address is the proxy: a certificate from
//! the cluster's host CA must carry the `proxy` role (`hop_ca::HostRole`), so that an agent's
//! certificate (node, app, db), which chains to the same CA, cannot stand in for the proxy before
//! `hop` clients or other agents. Certificates from other CAs (an operator's, a public CA's) carry
//! no role and are verified as before.

use std::sync::Arc;

use hop_ca::HostRole;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, Error as TlsError, RootCertStore, SignatureScheme};

use crate::pem::{PemError, parse_chain, parse_key, provider};

/// Why no TLS client configuration could be built: the user's input (a malformed pin, an
/// unusable login certificate), saved or system trust material, or rustls refusing the setup.
/// Causes whose words are already in the message are kept as fields, not as sources, so that
/// error chains do not repeat them.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("--ca-pin: expected sha256:<64 hex digits>, got {pin:?}")]
    BadPin { pin: String },
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error("saved CA certificate: {cause}")]
    SavedCa { cause: TlsError },
    #[error(transparent)]
    Verifier(#[from] rustls::client::VerifierBuilderError),
    #[error("no system CA certificates found; pass --ca-pin (printed by `hop start`)")]
    NoSystemRoots,
    #[error("TLS versions: {cause}")]
    Versions { cause: TlsError },
    #[error("your login certificate is unusable: {cause}")]
    ClientCertificate { cause: TlsError },
}

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
pub fn normalize_pin(pin: &str) -> Result<String, TrustError> {
    let p = pin.trim();
    let bad = || TrustError::BadPin { pin: p.to_string() };
    let hex_part = p
        .strip_prefix("sha256:")
        .or_else(|| p.strip_prefix("SHA256:"))
        .ok_or_else(bad)?;
    if hex_part.len() != 64 || !hex_part.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(bad());
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

/// Why a server is refused as the proxy although its certificate may chain to a trusted CA.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NotTheProxy {
    /// An agent's host certificate (node, app, db, kube, desktop).
    #[error(
        "the server presented an agent's certificate (role {0}), not the proxy's: this is not the cluster's proxy"
    )]
    Agent(HostRole),
    /// The host certificate of a cluster service that is not the proxy (auth).
    #[error(
        "the server presented a certificate for the cluster's {0} service, not the proxy's: this is not the cluster's proxy"
    )]
    OtherService(HostRole),
    /// A Hop host role extension that does not name a role, or a certificate that does not parse.
    #[error(
        "the server's certificate does not say which host it is ({0}): this is not the cluster's proxy"
    )]
    Unreadable(String),
}

/// Accepts `end_entity` as the proxy's certificate unless it is a host certificate of another
/// role. A certificate without Hop's host role extension did not come from a host CA (see
/// `hop_ca::host_role_x509`): an operator's certificate, left to the chain checks.
pub fn check_proxy_role(end_entity: &[u8]) -> Result<(), NotTheProxy> {
    match hop_ca::host_role_x509(end_entity) {
        Ok(None | Some(HostRole::Proxy)) => Ok(()),
        Ok(Some(role @ HostRole::Auth)) => Err(NotTheProxy::OtherService(role)),
        Ok(Some(role)) => Err(NotTheProxy::Agent(role)),
        Err(e) => Err(NotTheProxy::Unreadable(e.to_string())),
    }
}

/// The [`NotTheProxy`] a failed TLS handshake carries, if that is why it failed.
pub fn not_the_proxy(e: &std::io::Error) -> Option<&NotTheProxy> {
    match e.get_ref()?.downcast_ref::<TlsError>()? {
        TlsError::InvalidCertificate(rustls::CertificateError::Other(o)) => o.0.downcast_ref(),
        _ => None,
    }
}

/// The [`ServerCertVerifier`] methods a wrapping verifier passes to its `inner` one unchanged
/// (all but `verify_server_cert`).
macro_rules! delegate_signatures_to_inner {
    () => {
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, TlsError> {
            self.inner.verify_tls12_signature(m, c, d)
        }

        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, TlsError> {
            self.inner.verify_tls13_signature(m, c, d)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.inner.supported_verify_schemes()
        }

        fn requires_raw_public_keys(&self) -> bool {
            self.inner.requires_raw_public_keys()
        }

        fn root_hint_subjects(&self) -> Option<&[rustls::DistinguishedName]> {
            self.inner.root_hint_subjects()
        }
    };
}

/// Wraps the verifier of a connection to the proxy with [`check_proxy_role`]. The role is checked
/// first, so that an agent's certificate is named as such even where it also fails the name check
/// (agents' certificates do not name the proxy's address); then the chain, as `inner` decides.
#[derive(Debug)]
struct ProxyOnly {
    inner: Arc<dyn ServerCertVerifier>,
}

impl ServerCertVerifier for ProxyOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        check_proxy_role(end_entity.as_ref()).map_err(|e| {
            TlsError::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
                Arc::new(e),
            )))
        })?;
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    delegate_signatures_to_inner!();
}

/// A client certificate for mutual TLS (PEM chain and PKCS#8 key).
#[derive(Debug, Clone)]
pub struct ClientCert {
    pub chain_pem: String,
    pub key_pem: String,
}

/// The rustls client configuration for talking to a proxy (as a user's client or as an agent):
/// besides the chain `trust` checks, a host certificate must be the proxy's ([`check_proxy_role`]).
/// `--insecure` checks neither.
pub fn client_config(
    trust: &Trust,
    client_cert: Option<&ClientCert>,
    alpn: &[u8],
) -> Result<rustls::ClientConfig, TrustError> {
    build(proxy_verifier(trust)?, client_cert, alpn)
}

/// [`client_config`] for a connection whose SNI may not be a name the proxy's certificate holds:
/// `hop proxy app` sends an application's host `NAME.PROXYHOST` as SNI (the proxy routes by it)
/// and accepts a certificate valid for that name or, failing that, for the proxy's own address
/// `verify_as` (the name the user logged in to), so that it works whether the proxy answers with
/// a certificate naming the application or with its own. The chain and the proxy role are
/// checked either way, and the name is always one of those two.
pub fn client_config_verified_as(
    trust: &Trust,
    client_cert: Option<&ClientCert>,
    alpn: &[u8],
    verify_as: ServerName<'static>,
) -> Result<rustls::ClientConfig, TrustError> {
    let verifier = VerifiedAs {
        inner: proxy_verifier(trust)?,
        name: verify_as,
    };
    build(Arc::new(verifier), client_cert, alpn)
}

/// Verifies as the name the connection was opened with, else as `name`.
#[derive(Debug)]
struct VerifiedAs {
    inner: Arc<dyn ServerCertVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for VerifiedAs {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        sni: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        self.inner
            .verify_server_cert(end_entity, intermediates, sni, ocsp, now)
            .or_else(|first| {
                self.inner
                    .verify_server_cert(end_entity, intermediates, &self.name, ocsp, now)
                    .map_err(|_| first)
            })
    }

    delegate_signatures_to_inner!();
}

/// The verifier of connections to the proxy: `trust`'s chain check after [`check_proxy_role`].
fn proxy_verifier(trust: &Trust) -> Result<Arc<dyn ServerCertVerifier>, TrustError> {
    Ok(match trust {
        Trust::Insecure => verifier(trust)?,
        _ => Arc::new(ProxyOnly {
            inner: verifier(trust)?,
        }),
    })
}

/// The rustls client configuration for a server that is not the proxy (a database the db agent
/// logs in to): the chain `trust` checks, and nothing about Hop roles.
pub fn server_client_config(
    trust: &Trust,
    client_cert: Option<&ClientCert>,
    alpn: &[u8],
) -> Result<rustls::ClientConfig, TrustError> {
    build(verifier(trust)?, client_cert, alpn)
}

/// The chain check `trust` asks for.
fn verifier(trust: &Trust) -> Result<Arc<dyn ServerCertVerifier>, TrustError> {
    let provider = provider();
    Ok(match trust {
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
                    .map_err(|cause| TrustError::SavedCa { cause })?;
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
                return Err(TrustError::NoSystemRoots);
            }
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()?
        }
    })
}

fn build(
    verifier: Arc<dyn ServerCertVerifier>,
    client_cert: Option<&ClientCert>,
    alpn: &[u8],
) -> Result<rustls::ClientConfig, TrustError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|cause| TrustError::Versions { cause })?;
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut cfg = match client_cert {
        Some(cc) => builder
            .with_client_auth_cert(parse_chain(&cc.chain_pem)?, parse_key(&cc.key_pem)?)
            .map_err(|cause| TrustError::ClientCertificate { cause })?,
        None => builder.with_no_client_auth(),
    };
    if !alpn.is_empty() {
        cfg.alpn_protocols = vec![alpn.to_vec()];
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hop_ca::{CaKind, CertAuthority, generate_x509_keypair, parse_pem_certs};
    use hop_platform::clock;
    use std::time::Duration;

    const NAME: &str = "proxy.test";

    struct Cluster {
        ca: CertAuthority,
        ca_pem: String,
        ca_der: CertificateDer<'static>,
    }

    impl Cluster {
        fn new() -> Self {
            let ca = CertAuthority::generate(CaKind::Host, "c", clock::wall(), &mut rand::rng())
                .unwrap();
            let ca_pem = ca.public().x509_cert_pem.unwrap();
            let ca_der = der(&ca_pem);
            Self { ca, ca_pem, ca_der }
        }

        /// A host certificate of `role` for [`NAME`], as the host CA issues to the proxy and
        /// to agents.
        fn host_cert(&self, role: HostRole) -> CertificateDer<'static> {
            let mut rng = rand::rng();
            let key = generate_x509_keypair(&mut rng).unwrap();
            der(&self
                .ca
                .issue_host_x509(
                    &key.public_spki_der,
                    "host-1",
                    role,
                    &[NAME.to_string()],
                    None,
                    clock::wall(),
                    Duration::from_secs(3600),
                    &mut rng,
                )
                .unwrap())
        }

        fn pin(&self) -> Trust {
            Trust::Pin(hop_ca::ca_pin(self.ca_der.as_ref()).unwrap())
        }
    }

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from(parse_pem_certs(pem).unwrap().remove(0))
    }

    /// What the proxy verifier of `trust` says of `leaf` presented with `chain`.
    fn verify(
        trust: &Trust,
        leaf: &CertificateDer<'static>,
        chain: &[CertificateDer<'static>],
    ) -> Result<(), String> {
        let name = ServerName::try_from(NAME).unwrap();
        proxy_verifier(trust)
            .unwrap()
            .verify_server_cert(leaf, chain, &name, &[], UnixTime::now())
            .map(|_| ())
            .map_err(|e| match &e {
                TlsError::InvalidCertificate(rustls::CertificateError::Other(o)) => o.to_string(),
                _ => e.to_string(),
            })
    }

    #[test]
    fn the_proxy_certificate_is_accepted_pinned_or_saved() {
        let c = Cluster::new();
        let proxy = c.host_cert(HostRole::Proxy);
        let chain = [c.ca_der.clone()];
        verify(&c.pin(), &proxy, &chain).unwrap();
        verify(&Trust::CaPem(c.ca_pem.clone()), &proxy, &chain).unwrap();
        verify(&Trust::CaPem(c.ca_pem.clone()), &proxy, &[]).unwrap();
    }

    #[test]
    fn verified_as_the_sni_or_the_proxy_but_never_less() {
        let c = Cluster::new();
        let proxy = c.host_cert(HostRole::Proxy);
        let chain = [c.ca_der.clone()];
        let trust = Trust::CaPem(c.ca_pem.clone());
        let check = |sni: &'static str, verify_as: &'static str, leaf: &CertificateDer<'static>| {
            let v = VerifiedAs {
                inner: proxy_verifier(&trust).unwrap(),
                name: ServerName::try_from(verify_as).unwrap(),
            };
            let sni = ServerName::try_from(sni).unwrap();
            v.verify_server_cert(leaf, &chain, &sni, &[], UnixTime::now())
                .map(|_| ())
        };
        // The certificate names the proxy, not the app's host: the proxy's address decides.
        check("web.localhost", NAME, &proxy).unwrap();
        // It names the SNI's host: that is enough.
        check(NAME, "other.test", &proxy).unwrap();
        // Neither name, or an agent's certificate, is still refused.
        assert!(check("web.localhost", "other.test", &proxy).is_err());
        assert!(check("web.localhost", NAME, &c.host_cert(HostRole::App)).is_err());
    }

    #[test]
    fn agents_certificates_from_the_same_ca_are_refused_with_their_role() {
        let c = Cluster::new();
        let chain = [c.ca_der.clone()];
        for role in [HostRole::Node, HostRole::App, HostRole::Db] {
            let agent = c.host_cert(role);
            for trust in [c.pin(), Trust::CaPem(c.ca_pem.clone())] {
                let e = verify(&trust, &agent, &chain).unwrap_err();
                assert!(
                    e.contains(&format!(
                        "the server presented an agent's certificate (role {role}), not the \
                         proxy's: this is not the cluster's proxy"
                    )),
                    "{trust:?}: {e}"
                );
            }
        }
        let auth = c.host_cert(HostRole::Auth);
        let e = verify(&c.pin(), &auth, &chain).unwrap_err();
        assert!(e.contains("cluster's auth service, not the proxy's"), "{e}");
        // --insecure checks nothing, as before.
        verify(&Trust::Insecure, &c.host_cert(HostRole::Node), &[]).unwrap();
    }

    #[test]
    fn an_operator_certificate_goes_the_old_path() {
        let c = Cluster::new();
        let ck = rcgen::generate_simple_self_signed(vec![NAME.to_string()]).unwrap();
        let operator = ck.cert.der().clone();
        let operator_pem = ck.cert.pem();
        assert_eq!(check_proxy_role(operator.as_ref()), Ok(()));
        // Trusted where its CA is.
        verify(&Trust::CaPem(operator_pem.clone()), &operator, &[]).unwrap();
        verify(
            &Trust::Pin(hop_ca::ca_pin(operator.as_ref()).unwrap()),
            &operator,
            std::slice::from_ref(&operator),
        )
        .unwrap();
        // Refused where it is not, with the chain check's own words.
        let e = verify(&c.pin(), &operator, &[]).unwrap_err();
        assert!(e.contains("no CA matching the pin"), "{e}");
        let e = verify(&Trust::CaPem(c.ca_pem.clone()), &operator, &[]).unwrap_err();
        assert!(e.contains("UnknownIssuer"), "{e}");
    }

    #[test]
    fn other_servers_are_not_held_to_the_proxy_role() {
        let c = Cluster::new();
        let node = c.host_cert(HostRole::Node);
        let name = ServerName::try_from(NAME).unwrap();
        verifier(&Trust::CaPem(c.ca_pem.clone()))
            .unwrap()
            .verify_server_cert(&node, &[], &name, &[], UnixTime::now())
            .unwrap();
        server_client_config(&Trust::CaPem(c.ca_pem.clone()), None, b"").unwrap();
    }

    #[test]
    fn a_role_extension_that_names_no_role_is_refused() {
        let mut params = rcgen::CertificateParams::new(vec![NAME.to_string()]).unwrap();
        params
            .custom_extensions
            .push(rcgen::CustomExtension::from_oid_content(
                hop_ca::HOP_HOST_ROLE_OID,
                vec![0x0c, 4, b'r', b'o', b'o', b't'],
            ));
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let e = check_proxy_role(cert.der().as_ref()).unwrap_err();
        assert!(matches!(e, NotTheProxy::Unreadable(_)), "{e}");
        assert!(matches!(
            check_proxy_role(b"not a certificate"),
            Err(NotTheProxy::Unreadable(_))
        ));
    }
}
