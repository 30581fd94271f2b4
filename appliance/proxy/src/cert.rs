//! Where the proxy's TLS certificate comes from, and keeping it current.
//!
//! This module owns the certificate's life: operator-supplied files (reloaded when they change
//! on disk or on SIGHUP), or a host certificate the cluster's host CA issues at start and again
//! when a third of its lifetime is left. A reload that fails keeps the certificate in use and logs
//! why; connections accepted after a successful reload get the new one.
//!
//! It also follows the cluster's CA rotations ([`AuthServer::watch_authorities`]): after each
//! step the client certificates accepted are those of the user and host CA keys trusted now
//! ([`ClientTrust::Cluster`]), and an issued certificate is issued again when
//! [`crate::rotation::must_reissue`] says so (the trust digest it carries is stale, or servers
//! must move to the key that signs now). Operator files keep their certificate and only get the
//! new client CAs.
//!
//! An issued certificate under a single-label public host (the quick start's `localhost`, where
//! `*.P` names nothing a verifier accepts) also answers for the web applications announced
//! there, each with a certificate of its own ([`crate::app_certs`]); those are issued again
//! after each reload of the proxy's own certificate, as they are asked for (a reload that only
//! changes the client CAs keeps them). Operator files are served as they are: they must carry
//! the applications' names (a wildcard under a name of two labels or more) themselves.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use hop_ca::{CaKind, HostRole};
use hop_platform::clock;
use tokio::sync::watch;

use super::tls;
use crate::app_certs::{AnnouncedApps, AppCertResolver, IssueLeaf, LeafError};
use crate::rotation;
use hop_auth::AuthServer;

/// Lifetime of a certificate the host CA issues to the proxy.
pub const ISSUED_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
const FILE_POLL: Duration = Duration::from_secs(10);

pub enum CertSource {
    Files {
        cert: PathBuf,
        key: PathBuf,
    },
    Issued {
        auth: Arc<AuthServer>,
        host_id: String,
        names: Vec<String>,
    },
}

/// Whose client certificates the TLS listener accepts.
pub enum ClientTrust {
    /// These CA certificates (PEM), for the process's life.
    Fixed(Vec<String>),
    /// The cluster's trusted user and host CA keys, read again after each rotation step.
    Cluster(Arc<AuthServer>),
}

impl ClientTrust {
    fn pems(&self) -> Vec<String> {
        match self {
            ClientTrust::Fixed(pems) => pems.clone(),
            ClientTrust::Cluster(auth) => rotation::client_ca_pems(auth),
        }
    }

    fn changes(&self) -> Option<watch::Receiver<u64>> {
        match self {
            ClientTrust::Fixed(_) => None,
            ClientTrust::Cluster(auth) => Some(auth.watch_authorities()),
        }
    }
}

pub struct ProxyCertificate {
    pub source: CertSource,
    /// CA certificates whose client certificates are accepted (user and host CAs).
    pub client_trust: ClientTrust,
    /// The web applications that get a certificate of their own, when the public host's
    /// [`crate::app_certs::name_rule`] says so; used only with [`CertSource::Issued`].
    pub apps: Option<Arc<dyn AnnouncedApps>>,
    /// The peering certificate, served to connections that ask for ALPN `hop-peer` whatever
    /// the source of the proxy's own (`crate::peering`).
    pub peer: Option<Arc<crate::peering::PeerIdentity>>,
}

/// Why the proxy's certificate could not be (re)loaded; the one in use stays.
#[derive(Debug, thiserror::Error)]
pub enum CertLoadError {
    #[error(transparent)]
    Tls(#[from] tls::ProxyTlsError),
    /// The issuing task panicked or was cancelled.
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
    #[error("cannot issue the proxy certificate: {cause}")]
    Issue { cause: hop_auth::AuthError },
}

/// The proxy's certificate as served: alone, or behind the web applications' resolver.
#[derive(Clone)]
enum ServedCert {
    Single { chain_pem: String, key_pem: String },
    Resolved(Arc<AppCertResolver>),
}

/// What the rotation rule needs to know of an issued certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct IssuedFacts {
    /// SPKI pin of the host CA key that signed it (`None`: none trusted at issue did).
    signer: Option<String>,
    /// The trust digest it carries.
    digest: Option<String>,
}

/// What the proxy serves now: its rustls configuration and what it was built from.
pub struct Served {
    cert: ServedCert,
    issued: Option<IssuedFacts>,
    config: Arc<rustls::ServerConfig>,
}

impl Served {
    /// The configuration the TLS front terminates with.
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        self.config.clone()
    }
}

/// What a wake-up of [`ProxyCertificate::keep_fresh`] does, and why.
#[derive(Clone, Copy)]
enum Reload {
    /// The certificate too (read again or issued again).
    Certificate(&'static str),
    /// Only the client CAs; the certificate stays.
    ClientCas(&'static str),
}

/// Issues an application's certificate as the proxy's own is (host CA, role proxy, the proxy's
/// host id), naming only the application; each gets a fresh key, so that no new Auth call signs a
/// key it did not make.
fn app_issuer(auth: Arc<AuthServer>, host_id: String) -> Box<IssueLeaf> {
    Box::new(move |name: &str| {
        let (key_pem, chain_pem) = auth
            .issue_host_tls(&host_id, HostRole::Proxy, &[name.to_string()], ISSUED_TTL)
            .map_err(|cause| LeafError::Issue {
                name: name.to_string(),
                cause: Box::new(cause),
            })?;
        tls::certified_key(&chain_pem, &key_pem).map_err(|cause| LeafError::Unusable {
            name: name.to_string(),
            cause: Box::new(cause),
        })
    })
}

fn mtimes(cert: &PathBuf, key: &PathBuf) -> Option<(SystemTime, SystemTime)> {
    let m = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((m(cert)?, m(key)?))
}

/// Which trusted host CA key signed the leaf of `chain_pem`, and the trust digest it carries.
fn issued_facts(auth: &AuthServer, chain_pem: &str) -> IssuedFacts {
    let leaf = hop_ca::parse_pem_certs(chain_pem)
        .ok()
        .and_then(|certs| certs.into_iter().next());
    let Some(leaf) = leaf else {
        return IssuedFacts::default();
    };
    let trusted = auth.public_authorities(CaKind::Host);
    IssuedFacts {
        signer: hop_ca::x509_signer_pin(&leaf, &trusted, CaKind::Host, auth.now()),
        digest: hop_ca::trust_digest_x509(&leaf).ok().flatten(),
    }
}

/// [`rotation::must_reissue`] for a certificate described by `facts`, with the CAs as they are.
fn reissue_due(auth: &AuthServer, facts: &IssuedFacts) -> bool {
    let cas = auth.authorities();
    let host = cas.set(CaKind::Host);
    rotation::must_reissue(
        host.rotation.phase,
        facts.signer.as_deref(),
        host.signer().x509_spki_sha256.as_deref(),
        facts.digest.as_deref(),
        cas.trust_digest(),
    )
}

async fn hangup(hup: &mut Option<tokio::signal::unix::Signal>) {
    match hup.as_mut() {
        Some(h) => {
            h.recv().await;
        }
        None => std::future::pending().await,
    }
}

impl ProxyCertificate {
    /// Reads or issues the certificate and builds a server configuration from it.
    pub async fn load(&self) -> Result<Served, CertLoadError> {
        let (key_pem, chain_pem) = self.obtain().await?;
        let issued = match &self.source {
            CertSource::Issued { auth, .. } => Some(issued_facts(auth, &chain_pem)),
            CertSource::Files { .. } => None,
        };
        let cert = self.serve_cert(chain_pem, key_pem)?;
        let config = Arc::new(self.config(&cert)?);
        Ok(Served {
            cert,
            issued,
            config,
        })
    }

    /// `served`'s certificate with the client CAs trusted now.
    fn with_client_cas(&self, served: &Served) -> Result<Served, CertLoadError> {
        Ok(Served {
            cert: served.cert.clone(),
            issued: served.issued.clone(),
            config: Arc::new(self.config(&served.cert)?),
        })
    }

    /// The certificate's key and chain (PEM), from the files or issued now.
    async fn obtain(&self) -> Result<(String, String), CertLoadError> {
        match &self.source {
            CertSource::Files { cert, key } => Ok(tls::load_files(cert, key)?),
            CertSource::Issued {
                auth,
                host_id,
                names,
            } => {
                let (a, id, n) = (auth.clone(), host_id.clone(), names.clone());
                tokio::task::spawn_blocking(move || {
                    a.issue_host_tls(&id, HostRole::Proxy, &n, ISSUED_TTL)
                })
                .await?
                .map_err(|cause| CertLoadError::Issue { cause })
            }
        }
    }

    fn serve_cert(&self, chain_pem: String, key_pem: String) -> Result<ServedCert, CertLoadError> {
        let (CertSource::Issued { auth, host_id, .. }, Some(apps)) = (&self.source, &self.apps)
        else {
            return Ok(ServedCert::Single { chain_pem, key_pem });
        };
        let proxy = Arc::new(tls::certified_key(&chain_pem, &key_pem)?);
        Ok(ServedCert::Resolved(Arc::new(AppCertResolver::new(
            proxy,
            apps.clone(),
            app_issuer(auth.clone(), host_id.clone()),
        ))))
    }

    fn config(&self, cert: &ServedCert) -> Result<rustls::ServerConfig, CertLoadError> {
        let client_cas = self.client_trust.pems();
        let Some(peer) = &self.peer else {
            return Ok(match cert {
                ServedCert::Single { chain_pem, key_pem } => {
                    tls::server_config(chain_pem, key_pem, &client_cas)?
                }
                ServedCert::Resolved(resolver) => {
                    tls::server_config_with_resolver(resolver.clone(), &client_cas)?
                }
            });
        };
        let inner: Arc<dyn rustls::server::ResolvesServerCert> = match cert {
            ServedCert::Single { chain_pem, key_pem } => Arc::new(
                rustls::sign::SingleCertAndKey::from(tls::certified_key(chain_pem, key_pem)?),
            ),
            ServedCert::Resolved(resolver) => resolver.clone(),
        };
        let resolver = crate::peering::PeerCertResolver {
            peer: peer.clone(),
            inner,
        };
        Ok(tls::server_config_with_resolver(
            Arc::new(resolver),
            &client_cas,
        )?)
    }

    /// Whether the certificate `served` holds must be issued again now (after a rotation step).
    fn reissue_due(&self, served: &Served) -> bool {
        match (&self.source, &served.issued) {
            (CertSource::Issued { auth, .. }, Some(facts)) => reissue_due(auth, facts),
            _ => false,
        }
    }

    /// What a CA change asks: a new certificate when the rotation rule says so, else new client
    /// CAs.
    fn after_rotation(&self, served: &Served) -> Reload {
        if self.reissue_due(served) {
            Reload::Certificate("a CA rotation step asks for a new certificate")
        } else {
            Reload::ClientCas("the cluster's trusted CAs changed")
        }
    }

    /// What the poll asks, if anything: changed files, an issued certificate two thirds
    /// through its life, or one a rotation still asks to replace (an earlier try failed).
    fn on_poll(
        &self,
        served: &Served,
        seen: &mut Option<(SystemTime, SystemTime)>,
        issued_at: tokio::time::Instant,
    ) -> Option<Reload> {
        match &self.source {
            CertSource::Files { cert, key } => {
                let now = mtimes(cert, key);
                if now.is_none() || now == *seen {
                    return None;
                }
                *seen = now;
                Some(Reload::Certificate("certificate files changed"))
            }
            CertSource::Issued { .. } => {
                if clock::tokio_since(issued_at) >= ISSUED_TTL * 2 / 3 {
                    Some(Reload::Certificate(
                        "issued certificate is two thirds through its lifetime",
                    ))
                } else if self.reissue_due(served) {
                    Some(Reload::Certificate(
                        "a CA rotation step asks for a new certificate",
                    ))
                } else {
                    None
                }
            }
        }
    }

    /// Reloads on SIGHUP, when operator files change, before an issued certificate expires, and
    /// after each CA rotation step (module docs). `served` is what [`Self::load`] gave at start.
    pub async fn keep_fresh(
        self,
        mut served: Served,
        current: Arc<ArcSwapOption<rustls::ServerConfig>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGHUP; certificate files are still polled");
                None
            }
        };
        let mut seen = match &self.source {
            CertSource::Files { cert, key } => mtimes(cert, key),
            CertSource::Issued { .. } => None,
        };
        let mut changes = self.client_trust.changes();
        let mut issued_at = clock::tokio_now();
        let mut poll = tokio::time::interval(FILE_POLL);
        poll.tick().await;
        loop {
            let reload = tokio::select! {
                _ = hangup(&mut hup) => Reload::Certificate("SIGHUP"),
                _ = poll.tick() => match self.on_poll(&served, &mut seen, issued_at) {
                    Some(r) => r,
                    None => continue,
                },
                _ = rotation::authorities_changed(&mut changes) => self.after_rotation(&served),
                _ = hop_platform::signals::until_shutdown(&mut shutdown) => return,
            };
            let (reason, result) = match reload {
                Reload::Certificate(reason) => (reason, self.load().await),
                Reload::ClientCas(reason) => (reason, self.with_client_cas(&served)),
            };
            match result {
                Ok(fresh) => {
                    current.store(Some(fresh.config()));
                    if matches!(reload, Reload::Certificate(_)) {
                        issued_at = clock::tokio_now();
                    }
                    served = fresh;
                    tracing::info!(reason, "proxy certificate reloaded");
                }
                Err(e) => {
                    tracing::error!(reason, error = %hop_net::connect::error_chain(&e), "proxy certificate reload failed; keeping the current one")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {

    use hop_auth::rotation::Phase;
    use hop_storage::ManualClock;
    use rustls::pki_types::{CertificateDer, ServerName};

    use super::*;
    use crate::test_auth::rotate;

    /// `grafana` is announced under `localhost`.
    struct Grafana;

    impl AnnouncedApps for Grafana {
        fn announced_http_app(&self, server_name: &str) -> Option<String> {
            (server_name.eq_ignore_ascii_case("grafana.localhost")).then(|| "grafana".into())
        }
    }

    fn auth() -> Arc<AuthServer> {
        crate::test_auth::auth(Arc::new(ManualClock::new(clock::wall())))
    }

    /// A handshake in memory by a client that trusts only `ca_pem` and names `sni`: the leaf
    /// it accepted, or why it refused.
    fn verified_leaf(
        server: &Arc<rustls::ServerConfig>,
        ca_pem: &str,
        sni: &str,
    ) -> Result<CertificateDer<'static>, rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        for c in hop_net::pem::parse_chain(ca_pem).unwrap() {
            roots.add(c).unwrap();
        }
        let client = rustls::ClientConfig::builder_with_provider(hop_net::pem::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from(sni.to_string()).unwrap();
        let mut c = rustls::ClientConnection::new(Arc::new(client), name).unwrap();
        let mut s = rustls::ServerConnection::new(server.clone()).unwrap();
        while c.is_handshaking() {
            let mut wire = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut wire).unwrap();
            }
            s.read_tls(&mut &wire[..]).unwrap();
            s.process_new_packets()?;
            let mut back = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut back).unwrap();
            }
            c.read_tls(&mut &back[..]).unwrap();
            c.process_new_packets()?;
        }
        Ok(c.peer_certificates().unwrap()[0].clone().into_owned())
    }

    #[tokio::test]
    async fn an_announced_app_under_localhost_gets_a_host_ca_certificate_issued_again_at_reload() {
        let auth = auth();
        let ca = auth.authorities().host.public().x509_cert_pem.unwrap();
        let proxy = ProxyCertificate {
            source: CertSource::Issued {
                auth: auth.clone(),
                host_id: "proxy-host".into(),
                names: vec!["localhost".into()],
            },
            client_trust: ClientTrust::Fixed(vec![ca.clone()]),
            peer: None,
            apps: Some(Arc::new(Grafana)),
        };
        let served = proxy.load().await.unwrap();
        let first = served.config();
        let leaf = verified_leaf(&first, &ca, "grafana.localhost").unwrap();
        assert_eq!(
            verified_leaf(&first, &ca, "grafana.localhost").unwrap(),
            leaf
        );
        let own = verified_leaf(&first, &ca, "localhost").unwrap();
        assert_ne!(own, leaf);
        let refused = verified_leaf(&first, &ca, "kibana.localhost").unwrap_err();
        assert!(
            matches!(
                refused,
                rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForNameContext { .. }
                )
            ),
            "{refused:?}"
        );
        // New client CAs keep the certificates.
        let same = proxy.with_client_cas(&served).unwrap().config();
        assert_eq!(
            verified_leaf(&same, &ca, "grafana.localhost").unwrap(),
            leaf
        );
        // A reload (renewal, SIGHUP) starts with no application certificates: issued again.
        let renewed = proxy.load().await.unwrap().config();
        let again = verified_leaf(&renewed, &ca, "grafana.localhost").unwrap();
        assert_ne!(again, leaf);
        // Without the applications (a public host of two labels), the name is not answered.
        let plain = ProxyCertificate {
            apps: None,
            ..proxy
        };
        let plain = plain.load().await.unwrap().config();
        assert!(verified_leaf(&plain, &ca, "grafana.localhost").is_err());
    }

    fn signer_pin(auth: &AuthServer) -> Option<String> {
        auth.authorities()
            .set(CaKind::Host)
            .signer()
            .x509_spki_sha256
            .clone()
    }

    fn host_ca_pem(auth: &AuthServer) -> String {
        auth.authorities().host.public().x509_cert_pem.unwrap()
    }

    fn issued(auth: &Arc<AuthServer>) -> ProxyCertificate {
        ProxyCertificate {
            source: CertSource::Issued {
                auth: auth.clone(),
                host_id: "proxy-host".into(),
                names: vec!["localhost".into()],
            },
            client_trust: ClientTrust::Cluster(auth.clone()),
            peer: None,
            apps: None,
        }
    }

    /// The signer and digest of what `served` holds.
    fn facts(served: &Served) -> (Option<String>, Option<String>) {
        let f = served.issued.clone().unwrap();
        (f.signer, f.digest)
    }

    #[tokio::test]
    async fn the_issued_certificate_follows_a_host_ca_rotation() {
        let auth = auth();
        let proxy = issued(&auth);
        let old = signer_pin(&auth);
        let old_pem = host_ca_pem(&auth);
        let mut served = proxy.load().await.unwrap();
        assert_eq!(facts(&served), (old.clone(), Some(auth.trust_digest())));
        assert!(!proxy.reissue_due(&served));
        assert_eq!(rotation::client_ca_pems(&auth).len(), 2);

        // init: the new key is trusted (the digest changed), the old one still signs.
        rotate(&auth, CaKind::Host, Phase::Init);
        assert_eq!(rotation::client_ca_pems(&auth).len(), 3);
        assert!(matches!(
            proxy.after_rotation(&served),
            Reload::Certificate(_)
        ));
        served = proxy.load().await.unwrap();
        assert_eq!(facts(&served), (old.clone(), Some(auth.trust_digest())));

        // update_clients: the new key signs; the proxy keeps its certificate.
        rotate(&auth, CaKind::Host, Phase::UpdateClients);
        let new = signer_pin(&auth);
        let new_pem = host_ca_pem(&auth);
        assert_ne!(new, old);
        assert!(matches!(
            proxy.after_rotation(&served),
            Reload::ClientCas(_)
        ));
        let kept = proxy.with_client_cas(&served).unwrap();
        assert!(verified_leaf(&kept.config(), &old_pem, "localhost").is_ok());

        // update_servers: the proxy moves to the new key.
        rotate(&auth, CaKind::Host, Phase::UpdateServers);
        assert!(proxy.reissue_due(&served));
        served = proxy.load().await.unwrap();
        assert_eq!(facts(&served).0, new);
        assert!(!proxy.reissue_due(&served));
        assert!(verified_leaf(&served.config(), &new_pem, "localhost").is_ok());
        assert!(verified_leaf(&served.config(), &old_pem, "localhost").is_err());

        // standby: the old key is dropped, so the digest changes once more.
        rotate(&auth, CaKind::Host, Phase::Standby);
        assert_eq!(rotation::client_ca_pems(&auth).len(), 2);
        assert!(proxy.reissue_due(&served));
        served = proxy.load().await.unwrap();
        assert_eq!(facts(&served), (new, Some(auth.trust_digest())));
        assert!(!proxy.reissue_due(&served));
    }

    #[tokio::test]
    async fn a_rollback_moves_the_certificate_back_to_the_old_key() {
        let auth = auth();
        let proxy = issued(&auth);
        let old = signer_pin(&auth);
        rotate(&auth, CaKind::Host, Phase::Init);
        rotate(&auth, CaKind::Host, Phase::UpdateClients);
        rotate(&auth, CaKind::Host, Phase::UpdateServers);
        let served = proxy.load().await.unwrap();
        assert_ne!(facts(&served).0, old);
        rotate(&auth, CaKind::Host, Phase::Rollback);
        assert_eq!(signer_pin(&auth), old);
        assert!(proxy.reissue_due(&served));
        let served = proxy.load().await.unwrap();
        assert_eq!(facts(&served).0, old);
        assert!(!proxy.reissue_due(&served));
    }
}
