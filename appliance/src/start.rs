//! `hop start`: wires the configured services into one process and runs them until a signal.
//!
//! This module owns the order of start-up (diagnostics first so `/readyz` can say "not yet",
//! then storage, then the CAs, then the listeners), the banner a person reads next, and shutdown:
//! the first SIGTERM/SIGINT stops accepting and drains, a second one exits at once.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use hop_storage::{Clock, RedbBackend, ResourceStore, StorageError, SystemClock};
use tokio::sync::watch;

use hop_auth::audit::AuditLogSink;
use hop_auth::grpc::AuthApi;
use hop_auth::{AuthServer, AuthSettings};
use hop_config::{Config, ServiceRole};
use hop_metrics::Metrics;
use hop_proxy::cert::{CertSource, ProxyCertificate};
use hop_proxy::dataplane::{DataPlane, DataPlaneSettings, IoDriver};
use hop_proxy::tunnels::TunnelRegistry;

/// File name of the embedded database inside the data dir.
pub const DB_FILE: &str = "hop.db";
pub use hop_api::ADMIN_SOCKET;
/// How often agents heartbeat on their control connection.
const TUNNEL_HEARTBEAT: Duration = Duration::from_secs(30);

fn host_name() -> String {
    hop_platform::host::host_name().unwrap_or_else(|| "localhost".into())
}

/// The `host:port` users should type, from public_addr or the listen address.
fn web_addr(cfg: &Config) -> String {
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

/// The hosts of the proxy's public addresses (`host` of each `host[:port]`).
fn public_hosts(cfg: &Config) -> Vec<String> {
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

fn prepare_data_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot set permissions of {}", dir.display()))?;
    Ok(())
}

/// Spawns the signal watcher: the first signal asks for shutdown, a second exits at once.
fn watch_signals(tx: watch::Sender<bool>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let mut seen = 0;
        loop {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
            seen += 1;
            if seen == 1 {
                tracing::info!(
                    "shutting down: no new connections; send the signal again to exit at once"
                );
                let _ = tx.send(true);
            } else {
                tracing::warn!("second signal: exiting now");
                std::process::exit(130);
            }
        }
    });
    Ok(())
}

pub async fn run(mut cfg: Config) -> anyhow::Result<()> {
    if !cfg.hop.roles.is_empty()
        && cfg
            .hop
            .roles
            .iter()
            .all(|r| matches!(r, ServiceRole::App | ServiceRole::Node | ServiceRole::Db))
    {
        return run_agent(cfg).await;
    }
    for role in &cfg.hop.roles {
        if !matches!(role, ServiceRole::Auth | ServiceRole::Proxy) {
            bail!(
                "hop.roles: the {role} service is not available in this build yet; run auth and proxy, or node, app and db agents"
            );
        }
    }
    if cfg.runs(ServiceRole::Proxy) && !cfg.runs(ServiceRole::Auth) {
        bail!(
            "hop.roles: a proxy without auth in the same process is not available yet; run --roles auth,proxy"
        );
    }
    let data_dir = cfg.hop.data_dir.clone();
    prepare_data_dir(&data_dir)?;
    // A proxy holds a descriptor per connection: lift the soft open-files limit to the hard one.
    let wanted = u64::try_from(cfg.proxy_service.max_connections)
        .unwrap_or(u64::MAX)
        .saturating_add(1024);
    match hop_platform::raise_nofile_limit(wanted) {
        Ok(l) if l.now < wanted => tracing::warn!(
            limit = l.now,
            wanted,
            "the open-files limit is below max_connections; raise it (ulimit -n, LimitNOFILE)"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read or raise the open-files limit"),
    }
    let metrics = Arc::new(Metrics::default());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    watch_signals(shutdown_tx.clone())?;
    let mut tasks = tokio::task::JoinSet::new();

    // Storage: the redb file holds an exclusive lock for as long as this process runs.
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let db_path = data_dir.join(DB_FILE);
    let backend = {
        let (p, c) = (db_path.clone(), clock.clone());
        tokio::task::spawn_blocking(move || RedbBackend::open(&p, c)).await?
    };
    let backend = match backend {
        Ok(b) => Arc::new(b),
        Err(e @ StorageError::Locked { .. }) => {
            bail!(
                "{e}\nAnother `hop start` is using {}. Stop it first, or use another --data-dir.",
                data_dir.display()
            )
        }
        Err(e) => bail!("cannot open storage {}: {e}", db_path.display()),
    };
    metrics.storage_ready.store(true, Ordering::Release);

    let run_proxy = cfg.runs(ServiceRole::Proxy);
    if let Some(addr) = cfg.hop.diag_addr {
        let (m, rx) = (metrics.clone(), shutdown_rx.clone());
        tasks.spawn(async move {
            if let Err(e) = hop_metrics::diag::serve(addr.0, m, run_proxy, rx).await {
                tracing::error!(error = %e, "diagnostics server stopped");
            }
        });
    }

    let store = ResourceStore::new(backend.clone());

    // TTL leases expire in the background.
    {
        let (b, mut rx) = (backend.clone(), shutdown_rx.clone());
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                    _ = hop_platform::signals::until_shutdown(&mut rx) => break,
                }
                let b = b.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    use hop_storage::Backend as _;
                    b.purge_expired()
                })
                .await;
            }
        });
    }

    // Start the data plane early: a port conflict fails start-up before any work, and a port of
    // 0 (tests) is known before invite links are made. Connections it hands over wait in the
    // queue until the control plane below is ready.
    let (handoff_tx, handoff_rx) = tokio::sync::mpsc::channel(4096);
    // The proxy's TLS configuration: empty until its certificate is loaded below.
    let proxy_tls: Arc<arc_swap::ArcSwapOption<rustls::ServerConfig>> = Default::default();
    let handshakes = Arc::new(hop_proxy::dataplane::limits::HandshakeSlots::new(
        cfg.proxy_service.max_concurrent_handshakes,
    ));
    metrics.add_report(handshakes.clone());
    let dataplane = if run_proxy {
        let p = &cfg.proxy_service;
        let workers = p.workers.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
        let dp = DataPlane::start(
            DataPlaneSettings {
                listen: p.listen_addr.0,
                workers,
                io_driver: p.io_driver,
                kernel_tls: p.kernel_tls,
                first_byte_timeout: p.first_byte_timeout.0,
                max_connections: p.max_connections,
                max_connections_per_ip: p.max_connections_per_ip,
                max_preauth_per_source:
                    hop_proxy::dataplane::limits::PreAuthBudget::per_source_limit(
                        p.max_preauth_connections_per_ip,
                        p.max_preauth_connections_percent,
                        p.max_connections,
                    ),
                trusted_proxy_cidrs: p.proxy_protocol.trusted_cidrs.clone(),
            },
            hop_proxy::dataplane::TlsTermination {
                config: proxy_tls.clone(),
                slots: handshakes.clone(),
                handshake_timeout: p.handshake_timeout.0,
                metrics: metrics.clone(),
            },
            handoff_tx,
        )
        .map_err(|e| anyhow!("proxy_service.listen_addr: {e:#}"))?;
        cfg.proxy_service.listen_addr.0 = dp.local_addr;
        metrics.add_report(dp.stats.clone());
        Some(dp)
    } else {
        drop(handoff_tx);
        None
    };
    let web_addr = web_addr(&cfg);
    let settings = AuthSettings {
        cluster_name: cfg.auth_service.cluster_name.clone(),
        second_factor: cfg.auth_service.authentication.second_factor.clone(),
        max_failed_attempts: cfg.auth_service.login.max_failed_attempts,
        lockout: cfg.auth_service.login.lockout.0,
        attempts_per_ip_per_minute: cfg.auth_service.login.attempts_per_ip_per_minute,
        invite_ttl: cfg.auth_service.login.invite_ttl.0,
        web_addr: web_addr.clone(),
        session_recording: cfg
            .auth_service
            .session_recording
            .clone()
            .unwrap_or_else(|| "node".into()),
        proxy_public_names: public_hosts(&cfg),
    };
    let audit_log = Arc::new(open_audit_log(&cfg, &data_dir, clock.clone())?);
    let audit = Arc::new(AuditLogSink::new(audit_log.clone(), metrics.clone()));
    let auth = {
        let (m, c) = (metrics.clone(), clock.clone());
        tokio::task::spawn_blocking(move || AuthServer::open(store, c, settings, audit, m)).await?
    }
    .map_err(|e| anyhow!("{e}"))?;
    let auth = Arc::new(auth);
    metrics.ca_ready.store(true, Ordering::Release);

    let registry = Arc::new(
        TunnelRegistry::new(host_name(), TUNNEL_HEARTBEAT)
            .with_hello_timeout(cfg.proxy_service.tunnel_hello_timeout.0),
    );
    metrics.add_report(registry.clone());
    registry.on_refused_announcement(hop_proxy::admission::audit_refused_announcements(&auth));
    if run_proxy {
        tasks.spawn(hop_proxy::admission::sweep_agents(
            auth.clone(),
            registry.clone(),
            shutdown_rx.clone(),
        ));
        // Presence summaries in batches: one backend write per proxy per interval.
        let b: Arc<dyn hop_storage::Backend> = backend.clone();
        tasks.spawn(hop_proxy::presence::run(
            registry.clone(),
            b,
            shutdown_rx.clone(),
        ));
    }
    let api = AuthApi::new(auth.clone(), metrics.clone(), Some(registry.clone()))
        .with_audit_log(audit_log.clone());
    let recordings = {
        let (d, b) = (data_dir.clone(), backend.clone());
        tokio::task::spawn_blocking(move || open_recordings(&d, b)).await??
    };
    if let Some(retention) = cfg.auth_service.audit.retention.map(|d| d.0) {
        tasks.spawn(recording_retention(
            recordings.clone(),
            clock.clone(),
            retention,
            shutdown_rx.clone(),
        ));
    }
    let grpc_router = api
        .routes()
        .add_service(
            hop_auth::recordings::RecordingsApi::new(auth.clone(), recordings.clone())
                .into_server(),
        )
        .into_axum_router();

    // The admin socket: `hop admin` on this host.
    let sock_path = data_dir.join(ADMIN_SOCKET);
    let admin_listener = hop_proxy::listener::bind_admin_socket(&sock_path)?;
    tasks.spawn(hop_proxy::listener::serve_admin_socket(
        admin_listener,
        grpc_router.clone(),
        shutdown_rx.clone(),
    ));

    let mut bound: Option<SocketAddr> = None;
    if let Some(dp) = &dataplane {
        // Client certificates of users (logins) and hosts (agents) are accepted; each route then
        // requires the kind it needs.
        let client_cas: Vec<String> = [
            auth.authorities().user.public(),
            auth.authorities().host.public(),
        ]
        .into_iter()
        .filter_map(|c| c.x509_cert_pem)
        .collect();
        let source = match &cfg.proxy_service.tls {
            Some(files) => CertSource::Files {
                cert: files.cert_file.clone(),
                key: files.key_file.clone(),
            },
            None => CertSource::Issued {
                auth: auth.clone(),
                host_id: host_name(),
                names: proxy_names(&cfg),
            },
        };
        let proxy_cert = ProxyCertificate { source, client_cas };
        proxy_tls.store(Some(Arc::new(proxy_cert.load().await?)));
        let tls = proxy_tls.clone();
        tasks.spawn(proxy_cert.keep_fresh(tls.clone(), shutdown_rx.clone()));
        bound = Some(dp.local_addr);
        let router = grpc_router.clone().merge(hop_proxy::routes::web::router(
            auth.clone(),
            web_addr.clone(),
        ));
        let jump = hop_proxy::routes::jump::JumpHost::new(
            auth.clone(),
            registry.clone(),
            proxy_names(&cfg),
            cfg.proxy_service.ssh_auth_timeout.0,
        )?;
        tasks.spawn(jump.clone().keep_fresh(shutdown_rx.clone()));
        let identify = hop_proxy::identify::Identifier::new(
            vec![auth.authorities().user.public()],
            vec![auth.authorities().host.public()],
            clock.clone(),
        )
        .into_callback();
        let settings = hop_proxy::listener::TlsListenerSettings {
            handshake_timeout: cfg.proxy_service.handshake_timeout.0,
            handshakes: handshakes.clone(),
        };
        tasks.spawn(hop_proxy::listener::serve_tls(
            handoff_rx,
            tls,
            hop_proxy::listener::TlsRoutes {
                router,
                identify,
                registry: registry.clone(),
                auth: auth.clone(),
                cancels: Default::default(),
                db_startup_timeout: cfg.proxy_service.db_startup_timeout.0,
                jump: jump.clone(),
                recordings: Some(recordings.clone()),
                relay: dataplane.as_ref().map(|d| d.relay.clone()),
                dataplane: dataplane.as_ref().map(|d| d.stats.clone()),
                http: hop_proxy::routes::http_conn::HttpDeadlines {
                    header_read: cfg.proxy_service.http_header_timeout.0,
                    idle: cfg.proxy_service.http_idle_timeout.0,
                },
            },
            settings,
            metrics.clone(),
            shutdown_rx.clone(),
        ));
        metrics.proxy_ready.store(true, Ordering::Release);
    }

    print_banner(
        &auth,
        bound,
        dataplane
            .as_ref()
            .map(|d| (d.driver, d.stats.workers.len())),
        &web_addr,
        &data_dir,
    );

    let mut rx = shutdown_rx.clone();
    hop_platform::signals::until_shutdown(&mut rx).await;
    // Tell agents to move before the port closes, each after its own delay, so that they do not
    // all come back in the same second.
    registry.drain(Duration::from_secs(10));
    registry.wait_drained(Duration::from_secs(5)).await;
    if let Some(dp) = dataplane {
        dp.stop();
    }
    // Let connections drain, then stop whatever is left.
    let _ = tokio::time::timeout(Duration::from_secs(12), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    let _ = std::fs::remove_file(&sock_path);
    tracing::info!("stopped");
    Ok(())
}

/// File name of the audit log inside the data dir.
pub const AUDIT_FILE: &str = "audit.db";
/// The directory of uploaded session recordings in the data dir.
pub const RECORDINGS_DIR: &str = "recordings";

/// The recordings directory, indexed in the cluster backend (recordings from before the index
/// moved there are indexed now: blocking, run it off the runtime).
fn open_recordings(
    data_dir: &Path,
    backend: Arc<dyn hop_storage::Backend>,
) -> anyhow::Result<Arc<hop_storage::recording::RecordingStore>> {
    let dir = data_dir.join(RECORDINGS_DIR);
    hop_storage::recording::RecordingStore::open_with_backend(&dir, backend)
        .map(Arc::new)
        .map_err(|e| anyhow!("cannot open the session recordings: {e}"))
}

/// Deletes recordings older than the audit log's retention, at start and then hourly.
async fn recording_retention(
    store: Arc<hop_storage::recording::RecordingStore>,
    clock: Arc<dyn Clock>,
    retention: std::time::Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let cutoff = clock.now().checked_sub(retention);
        if let Some(cutoff) = cutoff {
            let s = store.clone();
            match tokio::task::spawn_blocking(move || s.delete_older_than(cutoff)).await {
                Ok(Ok(r)) if r.recordings + r.abandoned_uploads > 0 => tracing::info!(
                    recordings = r.recordings,
                    abandoned_uploads = r.abandoned_uploads,
                    bytes = r.bytes,
                    "deleted session recordings past the retention"
                ),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "recording retention failed"),
                Err(e) => tracing::warn!(error = %e, "recording retention task failed"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
            _ = hop_platform::signals::until_shutdown(&mut shutdown) => return,
        }
    }
}

fn open_audit_log(
    cfg: &Config,
    data_dir: &Path,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<hop_storage::AuditLog> {
    let forward: Option<Box<dyn std::io::Write + Send>> =
        match cfg.auth_service.audit.forward.as_deref() {
            None | Some("") => None,
            Some("stdout") => Some(Box::new(std::io::stdout())),
            Some(path) => Some(Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("auth_service.audit.forward: cannot open {path}"))?,
            )),
        };
    let mut settings = hop_storage::AuditConfig {
        retention: cfg.auth_service.audit.retention.map(|d| d.0),
        forward,
        ..Default::default()
    };
    if let Some(linger) = cfg.auth_service.audit.unwatched_linger {
        settings.unwatched_linger = linger.0;
    }
    let path = data_dir.join(AUDIT_FILE);
    hop_storage::AuditLog::open(&path, clock, settings)
        .map_err(|e| anyhow!("cannot open the audit log {}: {e}", path.display()))
}

/// An agent process: no storage, no listener; tunnels out to the proxy.
async fn run_agent(cfg: Config) -> anyhow::Result<()> {
    let data_dir = cfg.hop.data_dir.clone();
    prepare_data_dir(&data_dir)?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    watch_signals(shutdown_tx)?;
    let apps = cfg
        .app_service
        .apps
        .iter()
        .map(|a| hop_config::services::AppSpec {
            name: a.name.clone(),
            uri: a.uri.clone(),
            labels: a.labels.clone().into_iter().collect(),
        })
        .collect();
    let settings = hop_agent::AgentSettings {
        proxy: cfg.hop.proxy_server.clone().unwrap_or_default(),
        token: cfg.hop.join_token.clone().unwrap_or_default(),
        ca_pin: cfg.hop.ca_pin.clone(),
        insecure: false,
        data_dir,
        role: if cfg.runs(ServiceRole::Node) {
            "node".into()
        } else if cfg.runs(ServiceRole::Db) {
            "db".into()
        } else {
            "app".into()
        },
        apps,
        pool_size: cfg
            .ssh_service
            .tunnel_pool_size
            .or(cfg.app_service.tunnel_pool_size)
            .or(cfg.db_service.tunnel_pool_size)
            .unwrap_or(4),
        db_selectors: cfg.db_service.resources.clone(),
        db_audit: cfg.db_service.audit.clone(),
        databases: if cfg.runs(ServiceRole::Db) {
            cfg.db_service
                .databases
                .iter()
                .map(hop_config::DbConfig::spec)
                .collect()
        } else {
            Vec::new()
        },
        node: cfg
            .runs(ServiceRole::Node)
            .then(|| hop_agent::node::NodeSettings {
                nodename: cfg.ssh_service.nodename.clone().unwrap_or_default(),
                labels: cfg.ssh_service.labels.clone(),
                commands: cfg
                    .ssh_service
                    .commands
                    .iter()
                    .map(|c| hop_agent::node::CommandLabel {
                        name: c.name.clone(),
                        command: c.command.clone(),
                        period: c
                            .period
                            .as_ref()
                            .map(|p| p.0)
                            .unwrap_or(std::time::Duration::from_secs(60)),
                    })
                    .collect(),
                listen_addr: cfg.ssh_service.listen_addr.as_ref().map(|a| a.0),
                recording: hop_agent::node::recorder::SpoolSettings {
                    max_bytes: cfg.ssh_service.recording.max_spool_bytes,
                    upload_interval: cfg.ssh_service.recording.upload_interval.0,
                },
                auth_timeout: cfg.ssh_service.auth_timeout.0,
            }),
    };
    hop_agent::run(settings, shutdown_rx).await
}

fn print_banner(
    auth: &AuthServer,
    bound: Option<SocketAddr>,
    dp: Option<(IoDriver, usize)>,
    web_addr: &str,
    data_dir: &Path,
) {
    let pin = auth.ca_pin();
    let workers = dp
        .map(|(d, n)| {
            format!(
                "{n} worker{} on {}",
                if n == 1 { "" } else { "s" },
                d.name()
            )
        })
        .unwrap_or_else(|| "-".into());
    let listen = bound
        .map(|a| a.to_string())
        .unwrap_or_else(|| "(proxy not running)".into());
    let dd = data_dir.display();
    println!(
        "Hop {ver} is running.\n\
         \n  Cluster:     {cluster}\
         \n  Proxy:       https://{web_addr} (listening on {listen})\
         \n  Data plane:  {workers}\
         \n  Data dir:    {dd}\
         \n  CA pin:      {pin}\
         \n\nNext steps:\
         \n  1. Add the first user:   hop admin --data-dir {dd} users add alice --roles access,editor --logins alice\
         \n  2. The user signs up:    hop signup <TOKEN> --proxy {web_addr} --ca-pin {pin}\
         \n  3. And logs in:          hop login --proxy {web_addr} --user alice --ca-pin {pin}\n",
        ver = env!("CARGO_PKG_VERSION"),
        cluster = auth.cluster_name(),
    );
}
