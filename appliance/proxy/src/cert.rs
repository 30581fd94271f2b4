//! Where the proxy's TLS certificate comes from, and keeping it current.
//!
//! This module owns the certificate's life: operator-supplied files (reloaded when they change
//! on disk or on SIGHUP), or a host certificate the cluster's host CA issues at start and again
//! when a third of its lifetime is left. A reload that fails keeps the certificate in use and logs
//! why; connections accepted after a successful reload get the new one.
//!
//! An issued certificate under a single-label public host (the quick start's `localhost`, where
//! `*.P` names nothing a verifier accepts) also answers for the web applications announced
//! there, each with a certificate of its own ([`crate::app_certs`]); those are issued again
//! after each reload, as they are asked for. Operator files are served as they are: they must
//! carry the applications' names (a wildcard under a name of two labels or more) themselves.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use hop_ca::HostRole;
use hop_platform::clock;
use tokio::sync::watch;

use super::tls;
use crate::app_certs::{AnnouncedApps, AppCertResolver, IssueLeaf, LeafError};
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

pub struct ProxyCertificate {
    pub source: CertSource,
    /// CA certificates whose client certificates are accepted (user and host CAs).
    pub client_cas: Vec<String>,
    /// The web applications that get a certificate of their own, when the public host's
    /// [`crate::app_certs::name_rule`] says so; used only with [`CertSource::Issued`].
    pub apps: Option<Arc<dyn AnnouncedApps>>,
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

impl ProxyCertificate {
    /// Builds a server configuration from the current source.
    pub async fn load(&self) -> Result<rustls::ServerConfig, CertLoadError> {
        let (key_pem, chain_pem) = match &self.source {
            CertSource::Files { cert, key } => tls::load_files(cert, key)?,
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
                .map_err(|cause| CertLoadError::Issue { cause })?
            }
        };
        let (CertSource::Issued { auth, host_id, .. }, Some(apps)) = (&self.source, &self.apps)
        else {
            return Ok(tls::server_config(&chain_pem, &key_pem, &self.client_cas)?);
        };
        let proxy = Arc::new(tls::certified_key(&chain_pem, &key_pem)?);
        let resolver = AppCertResolver::new(
            proxy,
            apps.clone(),
            app_issuer(auth.clone(), host_id.clone()),
        );
        Ok(tls::server_config_with_resolver(
            Arc::new(resolver),
            &self.client_cas,
        )?)
    }

    /// Reloads on SIGHUP, when operator files change, and before an issued certificate expires.
    pub async fn keep_fresh(
        self,
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
        let mut issued_at = clock::tokio_now();
        let mut poll = tokio::time::interval(FILE_POLL);
        poll.tick().await;
        loop {
            let reason = tokio::select! {
                _ = async { match hup.as_mut() { Some(h) => { h.recv().await; } None => std::future::pending().await } } => "SIGHUP",
                _ = poll.tick() => {
                    match &self.source {
                        CertSource::Files { cert, key } => {
                            let now = mtimes(cert, key);
                            if now.is_none() || now == seen { continue; }
                            seen = now;
                            "certificate files changed"
                        }
                        CertSource::Issued { .. } => {
                            if clock::tokio_since(issued_at) < ISSUED_TTL * 2 / 3 { continue; }
                            "issued certificate is two thirds through its lifetime"
                        }
                    }
                }
                _ = hop_platform::signals::until_shutdown(&mut shutdown) => return,
            };
            match self.load().await {
                Ok(cfg) => {
                    current.store(Some(Arc::new(cfg)));
                    issued_at = clock::tokio_now();
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
    use std::time::Duration;

    use hop_auth::AuthSettings;
    use hop_auth::audit::{AuditEvent, AuditSink};
    use hop_storage::{Clock, ManualClock, MemoryBackend, ResourceStore};
    use rustls::pki_types::{CertificateDer, ServerName};

    use super::*;

    #[derive(Debug)]
    struct Discard;

    impl AuditSink for Discard {
        fn emit(&self, _: AuditEvent) {}
    }

    /// `grafana` is announced under `localhost`.
    struct Grafana;

    impl AnnouncedApps for Grafana {
        fn announced_http_app(&self, server_name: &str) -> Option<String> {
            (server_name.eq_ignore_ascii_case("grafana.localhost")).then(|| "grafana".into())
        }
    }

    fn auth() -> Arc<AuthServer> {
        let c: Arc<dyn Clock> = Arc::new(ManualClock::new(clock::wall()));
        let settings = AuthSettings {
            cluster_name: Some("unit.test".into()),
            second_factor: "otp".into(),
            max_failed_attempts: 5,
            lockout: Duration::from_secs(1800),
            attempts_per_ip_per_minute: 1000,
            invite_ttl: Duration::from_secs(3600),
            web_addr: "localhost:3080".into(),
            session_recording: "node".into(),
            proxy_public_names: Vec::new(),
        };
        Arc::new(
            AuthServer::open(
                ResourceStore::new(Arc::new(MemoryBackend::new(c.clone()))),
                c,
                settings,
                Arc::new(Discard),
                Arc::new(hop_metrics::Metrics::default()),
            )
            .unwrap(),
        )
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
            client_cas: vec![ca.clone()],
            apps: Some(Arc::new(Grafana)),
        };
        let first = Arc::new(proxy.load().await.unwrap());
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
        // A reload (renewal, SIGHUP) starts with no application certificates: issued again.
        let renewed = Arc::new(proxy.load().await.unwrap());
        let again = verified_leaf(&renewed, &ca, "grafana.localhost").unwrap();
        assert_ne!(again, leaf);
        // Without the applications (a public host of two labels), the name is not answered.
        let plain = ProxyCertificate {
            apps: None,
            ..proxy
        };
        let plain = Arc::new(plain.load().await.unwrap());
        assert!(verified_leaf(&plain, &ca, "grafana.localhost").is_err());
    }
}
