//! The proxy's side of start-up: the data plane on the one port (started early, so that a port
//! conflict fails before any work), the names and certificate the proxy answers with, and the
//! pieces of the TLS listener's routes that do not depend on the API router. It wires
//! `hop_proxy`'s parts together; every decision about a connection is theirs.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use hop_auth::AuthServer;
use hop_config::Config;
use hop_metrics::Metrics;
use hop_proxy::app_certs::{AnnouncedApps, NameRule, WithKube, name_rule};
use hop_proxy::cert::{CertSource, ClientTrust, ProxyCertificate};
use hop_proxy::dataplane::limits::{HandshakeSlots, PreAuthBudget};
use hop_proxy::dataplane::{DataPlane, DataPlaneSettings, Handoff, TlsTermination};
use hop_proxy::listener::{IdentifyPeer, TlsListenerSettings};
use hop_proxy::routes::app_http::{AppHttp, PublicHost};
use hop_proxy::routes::http_conn::HttpDeadlines;
use hop_proxy::routes::jump::JumpHost;
use hop_proxy::tunnels::TunnelRegistry;
use hop_storage::Clock;
use tokio::sync::mpsc;

use super::{Process, host_name};

/// Connections the data plane may hand over before the control plane takes them.
const HANDOFF_QUEUE: usize = 4096;

/// What the TLS listener serves from: the connections the data plane hands over (queued until
/// the control plane is ready), the TLS configuration (empty until the certificate is loaded)
/// and the handshake slots it shares with the workers.
pub(super) struct TlsFront {
    pub handoffs: mpsc::Receiver<Handoff>,
    pub tls: Arc<ArcSwapOption<rustls::ServerConfig>>,
    pub handshakes: Arc<HandshakeSlots>,
    /// The sessions workers keep, asking for their decision and agent leg.
    pub sessions: hop_proxy::relay::on_worker::SessionInbox,
}

/// Starts the data plane where the proxy runs (and records the port it bound in `cfg`, for a
/// port of 0); the TLS front exists either way.
pub(super) fn start_data_plane(
    cfg: &mut Config,
    metrics: &Arc<Metrics>,
    run_proxy: bool,
) -> anyhow::Result<(Option<DataPlane>, TlsFront)> {
    let (handoff_tx, handoffs) = mpsc::channel(HANDOFF_QUEUE);
    let (sessions_tx, sessions) = hop_proxy::relay::on_worker::session_queue();
    let front = TlsFront {
        handoffs,
        sessions,
        tls: Default::default(),
        handshakes: Arc::new(HandshakeSlots::new(
            cfg.proxy_service.max_concurrent_handshakes,
        )),
    };
    metrics.set_handshake_slots(front.handshakes.clone());
    if !run_proxy {
        drop(handoff_tx);
        return Ok((None, front));
    }
    let termination = TlsTermination {
        config: front.tls.clone(),
        slots: front.handshakes.clone(),
        handshake_timeout: cfg.proxy_service.handshake_timeout.0,
        metrics: metrics.clone(),
    };
    let dp = DataPlane::start(
        data_plane_settings(cfg),
        termination,
        handoff_tx,
        sessions_tx,
    )
    .map_err(|e| anyhow::Error::new(e).context("proxy_service.listen_addr"))?;
    cfg.proxy_service.listen_addr.0 = dp.local_addr;
    metrics.add_report(dp.stats.clone());
    Ok((Some(dp), front))
}

fn data_plane_settings(cfg: &Config) -> DataPlaneSettings {
    let p = &cfg.proxy_service;
    let workers = p.workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    DataPlaneSettings {
        listen: p.listen_addr.0,
        workers,
        io_driver: p.io_driver,
        kernel_tls: p.kernel_tls,
        first_byte_timeout: p.first_byte_timeout.0,
        db_startup_timeout: p.db_startup_timeout.0,
        max_connections: p.max_connections,
        max_connections_per_ip: p.max_connections_per_ip,
        max_preauth_per_source: PreAuthBudget::per_source_limit(
            p.max_preauth_connections_per_ip,
            p.max_preauth_connections_percent,
            p.max_connections,
        ),
        trusted_proxy_cidrs: p.proxy_protocol.trusted_cidrs.clone(),
    }
}

/// The `host:port` users should type, from public_addr or the listen address.
pub(super) fn web_addr(cfg: &Config) -> String {
    let listen = cfg.proxy_service.listen_addr.0;
    if let Some(first) = cfg.proxy_service.public_addr.first() {
        if first
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            return first.clone();
        }
        return format!("{first}:{}", listen.port());
    }
    if listen.ip().is_unspecified() || listen.ip().is_loopback() {
        format!("localhost:{}", listen.port())
    } else {
        listen.to_string()
    }
}

/// Every `host:port` users reach the web UI on: each public address (with the listen port
/// when it names none), or `web_addr` without any.
pub(super) fn public_web_addrs(cfg: &Config, web_addr: &str) -> Vec<String> {
    let port = cfg.proxy_service.listen_addr.0.port();
    let mut out: Vec<String> = cfg
        .proxy_service
        .public_addr
        .iter()
        .map(|a| {
            if a.rsplit_once(':')
                .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
            {
                a.clone()
            } else {
                format!("{a}:{port}")
            }
        })
        .collect();
    if out.is_empty() {
        out.push(web_addr.to_string());
    }
    out
}

/// The hosts of the proxy's public addresses (`host` of each `host[:port]`).
pub(super) fn public_hosts(cfg: &Config) -> Vec<String> {
    cfg.proxy_service
        .public_addr
        .iter()
        .map(|p| match p.rsplit_once(':') {
            Some((h, port)) if port.parse::<u16>().is_ok() && !h.is_empty() => {
                h.trim_matches(['[', ']']).to_string()
            }
            _ => p.clone(),
        })
        .collect()
}

/// Names in the proxy's certificate.
fn proxy_names(cfg: &Config) -> Vec<String> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
        host_name(),
    ];
    names.extend(public_hosts(cfg));
    let ip = cfg.proxy_service.listen_addr.0.ip();
    if !ip.is_unspecified() {
        names.push(ip.to_string());
    }
    names.sort();
    names.dedup();
    names
}

/// The public host `P` of web applications at `NAME.P`.
fn app_host(cfg: &Config) -> String {
    PublicHost::parse(&web_addr(cfg)).host().to_string()
}

/// Names in the proxy's TLS certificate: [`proxy_names`] and, for web applications at
/// `NAME.P`, `*.P` for the web address's host and each public host whose name has two labels or
/// more (a wildcard over one label is accepted by no verifier: applications under such a host
/// get certificates of their own, `hop_proxy::app_certs`).
fn tls_names(cfg: &Config) -> Vec<String> {
    let mut names = proxy_names(cfg);
    let mut hosts = public_hosts(cfg);
    hosts.push(app_host(cfg));
    for h in hosts {
        if name_rule(&h.to_ascii_lowercase()) == NameRule::Wildcard {
            names.push(format!("*.{h}"));
        }
    }
    names.sort();
    names.dedup();
    names
}

/// Loads the proxy's certificate (the operator's files, or one the host CA issues) into the TLS
/// front and keeps it fresh; returns the configuration the listener terminates with. `apps`
/// are the web applications, which get certificates of their own under a single-label public
/// host when the certificate is issued; `peer` is served to other proxies (ALPN `hop-peer`).
pub(super) async fn load_certificate(
    p: &mut Process,
    cfg: &Config,
    auth: &Arc<AuthServer>,
    front: &TlsFront,
    apps: Arc<AppHttp>,
    peer: Arc<hop_proxy::peering::PeerIdentity>,
) -> anyhow::Result<Arc<ArcSwapOption<rustls::ServerConfig>>> {
    let source = match &cfg.proxy_service.tls {
        Some(files) => CertSource::Files {
            cert: files.cert_file.clone(),
            key: files.key_file.clone(),
        },
        // Named by the proxy id: an agent behind a load balancer tells the proxies apart by it.
        None => CertSource::Issued {
            auth: auth.clone(),
            host_id: peer.proxy_id().to_string(),
            names: tls_names(cfg),
        },
    };
    // Under a one-label host, the kube endpoint `kube.P` gets its own certificate too.
    let apps: Option<Arc<dyn AnnouncedApps>> = (name_rule(&app_host(cfg)) == NameRule::PerApp)
        .then(|| {
            Arc::new(WithKube {
                apps,
                kube_name: hop_proxy::routes::kube::server_name(&PublicHost::parse(&web_addr(cfg))),
            }) as _
        });
    // Client certificates of users (logins) and hosts (agents) are accepted, of every key the
    // user and host CAs trust now; each route then requires the kind it needs.
    let proxy_cert = ProxyCertificate {
        source,
        client_trust: ClientTrust::Cluster(auth.clone()),
        apps,
        peer: Some(peer),
    };
    let served = proxy_cert.load().await?;
    front.tls.store(Some(served.config()));
    let tls = front.tls.clone();
    p.tasks
        .spawn(proxy_cert.keep_fresh(served, tls.clone(), p.shutdown.clone()));
    Ok(tls)
}

/// The jump host for `ssh -J` on the one port, its certificate kept fresh.
pub(super) fn jump_host(
    p: &mut Process,
    cfg: &Config,
    auth: &Arc<AuthServer>,
    registry: &Arc<TunnelRegistry>,
) -> anyhow::Result<Arc<JumpHost>> {
    let jump = JumpHost::new(
        auth.clone(),
        registry.clone(),
        proxy_names(cfg),
        cfg.proxy_service.ssh_auth_timeout.0,
    )?;
    p.tasks.spawn(jump.clone().keep_fresh(p.shutdown.clone()));
    Ok(jump)
}

/// Who a client certificate belongs to: a user (user CA) or a host (host CA), of the keys the
/// CAs trust now (followed through rotations).
pub(super) fn identifier(auth: &Arc<AuthServer>, clock: &Arc<dyn Clock>) -> IdentifyPeer {
    hop_proxy::identify::Identifier::following(auth.clone(), clock.clone()).into_callback()
}

/// The listener's deadlines and handshake slots.
pub(super) fn listener_settings(cfg: &Config, front: &TlsFront) -> TlsListenerSettings {
    TlsListenerSettings {
        handshake_timeout: cfg.proxy_service.handshake_timeout.0,
        handshakes: front.handshakes.clone(),
    }
}

/// The deadlines of HTTP connections (web API, Auth API).
pub(super) fn http_deadlines(cfg: &Config) -> HttpDeadlines {
    HttpDeadlines {
        header_read: cfg.proxy_service.http_header_timeout.0,
        idle: cfg.proxy_service.http_idle_timeout.0,
    }
}

/// Where other appliances' proxies reach this one (`proxy_service.peer_public_addr`): by
/// default the listen address when it names one, else this host's name with the port.
pub(super) fn peer_addr(cfg: &Config) -> String {
    if let Some(addr) = &cfg.proxy_service.peer_public_addr {
        return addr.clone();
    }
    let listen = cfg.proxy_service.listen_addr.0;
    if listen.ip().is_unspecified() {
        format!("{}:{}", host_name(), listen.port())
    } else {
        listen.to_string()
    }
}
