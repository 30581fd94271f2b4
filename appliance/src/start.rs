//! `hop start`: wires the configured services into one process and runs them until a signal.
//!
//! This module owns the order of start-up (storage, then diagnostics so `/readyz` can say "not
//! yet" while the rest starts, then the data plane, the CAs and the listeners), the banner a person reads next, and shutdown:
//! the first SIGTERM/SIGINT stops accepting and drains, a second one exits at once. [`run`] reads
//! as that sequence; each step is a function named for what it sets up, the proxy's in
//! [`proxy`], the audit log's and recordings' in [`records`], and an agent's settings in
//! [`agent_settings`]. It decides nothing about a connection or a request: the services do.

mod agent_settings;
mod process;
mod proxy;
mod records;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use hop_auth::audit::AuditLogSink;
use hop_auth::grpc::AuthApi;
use hop_auth::recordings::RecordingsApi;
use hop_auth::{AuthServer, AuthSettings};
use hop_config::{Config, ServiceRole, StateStore};
use hop_proxy::dataplane::{DataPlane, IoDriver};
use hop_proxy::listener::TlsRoutes;
use hop_proxy::tunnels::TunnelRegistry;
use hop_storage::recording::RecordingBackend;
use hop_storage::{
    AuditStore, Backend, PgBackend, PgOptions, RedbBackend, ResourceStore, StorageError,
};
use tokio::sync::watch;

use process::Process;
use proxy::TlsFront;

/// File name of the embedded database inside the data dir.
pub const DB_FILE: &str = hop_config::STATE_FILE;
use hop_api::ADMIN_SOCKET;
/// How often agents heartbeat on their control connection.
const TUNNEL_HEARTBEAT: Duration = Duration::from_secs(30);

/// What the routes are served from: Auth and its API, the agents' tunnels, the recordings, and
/// the address users type.
struct ControlPlane {
    auth: Arc<AuthServer>,
    api: AuthApi,
    registry: Arc<TunnelRegistry>,
    recordings: Arc<dyn RecordingBackend>,
    web_addr: String,
}

pub async fn run(mut cfg: Config) -> anyhow::Result<()> {
    if runs_only_agents(&cfg) {
        return run_agent(cfg).await;
    }
    check_roles(&cfg)?;
    let data_dir = cfg.hop.data_dir.clone();
    prepare_data_dir(&data_dir)?;
    raise_open_files_limit(&cfg);
    let mut p = Process::start()?;
    let backend = open_storage(&p, &cfg, &data_dir).await?;
    let run_proxy = cfg.runs(ServiceRole::Proxy);
    p.spawn_diagnostics(&cfg, run_proxy);
    let store = ResourceStore::new(backend.clone());
    p.spawn_lease_expiry(backend.clone());
    // Start the data plane early: a port conflict fails start-up before any work, and a port of
    // 0 (tests) is known before invite links are made. Connections it hands over wait in the
    // queue until the control plane below is ready.
    let (dataplane, front) = proxy::start_data_plane(&mut cfg, &p.metrics, run_proxy)?;
    let web_addr = proxy::web_addr(&cfg);
    let (auth, audit_log) = open_auth(&p, &cfg, store, &web_addr).await?;
    p.tasks
        .spawn(advance_rotations(auth.clone(), p.shutdown.clone()));
    p.tasks
        .spawn(auth.clone().follow_ca_records(p.shutdown.clone()));
    p.tasks
        .spawn(purge_ended_requests(auth.clone(), p.shutdown.clone()));
    let proxy_id = hop_proxy::presence::proxy_id(&data_dir)?;
    let registry = tunnel_registry(&mut p, &cfg, &auth, &backend, run_proxy, &proxy_id);
    let api = AuthApi::new(auth.clone(), p.metrics.clone(), Some(registry.clone()))
        .with_audit_log(audit_log);
    let recordings = open_recordings(&mut p, &cfg, &backend).await?;
    let control = ControlPlane {
        auth,
        api,
        registry,
        recordings,
        web_addr,
    };
    let admin_socket = data_dir.join(ADMIN_SOCKET);
    let bound = serve(
        &mut p,
        &cfg,
        &control,
        &admin_socket,
        dataplane.as_ref(),
        front,
    )
    .await?;
    print_banner(
        &control.auth,
        bound,
        dataplane
            .as_ref()
            .map(|d| (d.driver, d.stats.workers.len())),
        &control.web_addr,
        &data_dir,
    );
    p.until_shutdown().await;
    p.shut_down(&control.registry, dataplane, &admin_socket)
        .await;
    Ok(())
}

/// A process of agents only (node, app, db, kube) runs without storage or listeners.
fn runs_only_agents(cfg: &Config) -> bool {
    !cfg.hop.roles.is_empty()
        && cfg.hop.roles.iter().all(|r| {
            matches!(
                r,
                ServiceRole::App | ServiceRole::Node | ServiceRole::Db | ServiceRole::Kube
            )
        })
}

/// The roles this build can run in one process: auth, or auth and proxy.
fn check_roles(cfg: &Config) -> anyhow::Result<()> {
    for role in &cfg.hop.roles {
        if !matches!(role, ServiceRole::Auth | ServiceRole::Proxy) {
            bail!(
                "hop.roles: the {role} service is not available in this build yet; run auth and proxy, or node, app, db and kube agents"
            );
        }
    }
    if cfg.runs(ServiceRole::Proxy) && !cfg.runs(ServiceRole::Auth) {
        bail!(
            "hop.roles: a proxy without auth in the same process is not available yet; run --roles auth,proxy"
        );
    }
    Ok(())
}

fn prepare_data_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot set permissions of {}", dir.display()))?;
    Ok(())
}

/// A proxy holds a descriptor per connection: lift the soft open-files limit to the hard one.
fn raise_open_files_limit(cfg: &Config) {
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
}

/// Storage: the redb file in the data dir (which holds an exclusive lock for as long as this
/// process runs), or the PostgreSQL database `hop.storage` names (shared with the cluster's other
/// appliances; migrated to this build's schema on open).
async fn open_storage(
    p: &Process,
    cfg: &Config,
    data_dir: &Path,
) -> anyhow::Result<Arc<dyn Backend>> {
    let store = cfg
        .hop
        .storage
        .state_store()
        .map_err(|e| anyhow!("hop.storage.conn_string: {e}"))?;
    let backend: Arc<dyn Backend> = match store {
        StateStore::DataDir => open_redb(p, data_dir).await?,
        StateStore::Postgres { conn_string } => {
            let clock = p.clock.clone();
            let opened = tokio::task::spawn_blocking(move || {
                PgBackend::open(&conn_string, clock, PgOptions::default())
            })
            .await?;
            match opened {
                Ok(b) => {
                    tracing::info!(target = %b.target(), "cluster state on PostgreSQL");
                    Arc::new(b)
                }
                Err(e) => bail!("cannot open storage (hop.storage, type postgresql): {e}"),
            }
        }
    };
    p.metrics.storage_ready.store(true, Ordering::Release);
    Ok(backend)
}

async fn open_redb(p: &Process, data_dir: &Path) -> anyhow::Result<Arc<RedbBackend>> {
    let db_path = data_dir.join(DB_FILE);
    let backend = {
        let (path, clock) = (db_path.clone(), p.clock.clone());
        tokio::task::spawn_blocking(move || RedbBackend::open(&path, clock)).await?
    };
    match backend {
        Ok(b) => Ok(Arc::new(b)),
        Err(e @ StorageError::Locked { .. }) => {
            bail!(
                "{e}\nAnother `hop start` is using {}. Stop it first, or use another --data-dir.",
                data_dir.display()
            )
        }
        Err(e) => bail!("cannot open storage {}: {e}", db_path.display()),
    }
}

/// Auth, with its audit store, on the cluster's store; the CAs are loaded when it returns.
async fn open_auth(
    p: &Process,
    cfg: &Config,
    store: ResourceStore,
    web_addr: &str,
) -> anyhow::Result<(Arc<AuthServer>, Arc<dyn AuditStore>)> {
    let settings = auth_settings(cfg, web_addr);
    let audit_log = records::open_audit_store(cfg, &cfg.hop.data_dir, p.clock.clone())?;
    let audit = Arc::new(AuditLogSink::new(audit_log.clone(), p.metrics.clone()));
    let auth = {
        let (m, c) = (p.metrics.clone(), p.clock.clone());
        tokio::task::spawn_blocking(move || {
            let auth = AuthServer::open(store, c, settings, audit, m)?;
            // A store `hop admin restore` wrote goes on the record before anything else.
            auth.audit_restore();
            Ok::<_, hop_auth::AuthError>(auth)
        })
        .await?
    }
    .map_err(|e| anyhow!("{e}"))?;
    p.metrics.ca_ready.store(true, Ordering::Release);
    Ok((Arc::new(auth), audit_log))
}

/// How often Auth looks whether an automatic CA rotation's next phase is due.
const ROTATION_TICK: Duration = Duration::from_secs(1);

/// Moves automatic CA rotations on when their schedule says (Auth decides; this only ticks).
async fn advance_rotations(
    auth: Arc<AuthServer>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut warned = false;
    loop {
        tokio::select! {
            () = tokio::time::sleep(ROTATION_TICK) => {}
            () = hop_platform::signals::until_shutdown(&mut shutdown) => return,
        }
        let a = auth.clone();
        match tokio::task::spawn_blocking(move || a.advance_rotations()).await {
            Ok(Ok(_)) => warned = false,
            Ok(Err(e)) if !warned => {
                tracing::warn!(error = %e, "cannot move a CA rotation on; will retry");
                warned = true;
            }
            Ok(Err(_)) => {}
            Err(e) => tracing::error!(error = %e, "the CA rotation task failed"),
        }
    }
}

/// How often ended access requests are looked for.
const REQUEST_PURGE_TICK: Duration = Duration::from_secs(300);

/// Deletes access requests an hour after they ended (Auth decides which; this only ticks).
async fn purge_ended_requests(
    auth: Arc<AuthServer>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(REQUEST_PURGE_TICK) => {}
            () = hop_platform::signals::until_shutdown(&mut shutdown) => return,
        }
        let a = auth.clone();
        match tokio::task::spawn_blocking(move || a.purge_ended_access_requests()).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(purged = n, "ended access requests removed"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot remove ended access requests; will retry")
            }
            Err(e) => tracing::error!(error = %e, "the access request purge failed"),
        }
    }
}

fn auth_settings(cfg: &Config, web_addr: &str) -> AuthSettings {
    let auth = &cfg.auth_service;
    AuthSettings {
        cluster_name: auth.cluster_name.clone(),
        second_factor: auth.authentication.second_factor.clone(),
        max_failed_attempts: auth.login.max_failed_attempts,
        lockout: auth.login.lockout.0,
        attempts_per_ip_per_minute: auth.login.attempts_per_ip_per_minute,
        invite_ttl: auth.login.invite_ttl.0,
        web_addr: web_addr.to_string(),
        session_recording: auth
            .session_recording
            .clone()
            .unwrap_or_else(|| "node".into()),
        proxy_public_names: proxy::public_hosts(cfg),
        webauthn: hop_auth::server::WebauthnSettings::for_public_addrs(
            auth.authentication.webauthn.rp_id.as_deref(),
            &proxy::public_web_addrs(cfg, web_addr),
        ),
    }
}

/// The agents' tunnels; where the proxy runs, the sweep of agents that lost their access and the
/// batched presence summaries run too.
fn tunnel_registry(
    p: &mut Process,
    cfg: &Config,
    auth: &Arc<AuthServer>,
    backend: &Arc<dyn Backend>,
    run_proxy: bool,
    proxy_id: &str,
) -> Arc<TunnelRegistry> {
    let registry = Arc::new(
        TunnelRegistry::new(proxy_id.to_string(), TUNNEL_HEARTBEAT)
            .with_hello_timeout(cfg.proxy_service.tunnel_hello_timeout.0)
            .with_peer_addr(proxy::peer_addr(cfg)),
    );
    p.metrics.add_report(registry.clone());
    registry.on_refused_announcement(hop_proxy::admission::audit_refused_announcements(auth));
    if run_proxy {
        p.tasks.spawn(hop_proxy::admission::sweep_agents(
            auth.clone(),
            registry.clone(),
            p.shutdown.clone(),
        ));
        // Presence summaries in batches: one backend write per proxy per interval.
        let b = backend.clone();
        p.tasks.spawn(hop_proxy::presence::run(
            registry.clone(),
            b,
            p.shutdown.clone(),
        ));
    }
    registry
}

/// The session recordings, with their retention swept in the background where one is set.
async fn open_recordings(
    p: &mut Process,
    cfg: &Config,
    backend: &Arc<dyn Backend>,
) -> anyhow::Result<Arc<dyn RecordingBackend>> {
    let recordings = {
        let (c, b) = (cfg.clone(), backend.clone());
        tokio::task::spawn_blocking(move || records::open_recordings(&c, &c.hop.data_dir, b))
            .await??
    };
    if let Some(retention) = cfg.auth_service.audit.retention.map(|d| d.0) {
        p.tasks.spawn(records::recording_retention(
            recordings.clone(),
            p.clock.clone(),
            retention,
            p.shutdown.clone(),
        ));
    }
    Ok(recordings)
}

/// Serves the Auth API on the admin socket (`hop admin` on this host) and, where the proxy runs,
/// every route on the proxy port once its certificate is loaded; returns the port's address.
async fn serve(
    p: &mut Process,
    cfg: &Config,
    c: &ControlPlane,
    admin_socket: &Path,
    dataplane: Option<&DataPlane>,
    front: TlsFront,
) -> anyhow::Result<Option<SocketAddr>> {
    let router = c
        .api
        .routes()
        .add_service(RecordingsApi::new(c.auth.clone(), c.recordings.clone()).into_server())
        .into_axum_router();
    let admin_listener = hop_proxy::listener::bind_admin_socket(admin_socket)?;
    p.tasks.spawn(hop_proxy::listener::serve_admin_socket(
        admin_listener,
        router.clone(),
        p.shutdown.clone(),
    ));
    let Some(dp) = dataplane else {
        return Ok(None);
    };
    let app_http = hop_proxy::routes::app_http::AppHttp::new(
        c.auth.clone(),
        c.registry.clone(),
        &c.web_addr,
        proxy::http_deadlines(cfg),
    );
    p.tasks.spawn(app_http.clone().run(p.shutdown.clone()));
    let kube = hop_proxy::routes::kube::KubeProxy::new(
        c.auth.clone(),
        c.registry.clone(),
        &c.web_addr,
        proxy::http_deadlines(cfg),
        Some(c.recordings.clone()),
    );
    p.tasks.spawn(kube.clone().run(p.shutdown.clone()));
    let identify = proxy::identifier(&c.auth, &p.clock);
    let peering = hop_proxy::peering::PeerIdentity::new(
        c.auth.clone(),
        c.registry.proxy_id().to_string(),
        identify.clone(),
    );
    if let Err(e) = peering.issue() {
        tracing::warn!(error = %e, "cannot issue the peering certificate yet; will retry");
    }
    c.registry.enable_peering(peering.clone());
    p.tasks
        .spawn(peering.clone().keep_fresh(p.shutdown.clone()));
    let tls = proxy::load_certificate(p, cfg, &c.auth, &front, app_http.clone(), peering).await?;
    let web = hop_proxy::web::WebRoom::new(
        c.auth.clone(),
        c.registry.clone(),
        cfg.proxy_service.web_idle_timeout.0,
    );
    web.serve_terminals(hop_proxy::web::terminal::Nodes {
        registry: c.registry.clone(),
        recordings: Some(c.recordings.clone()),
    });
    web.serve_records(c.recordings.clone(), c.api.audit_store());
    p.tasks
        .spawn(web.clone().watch_sessions(p.shutdown.clone()));
    let router = router
        .merge(hop_proxy::routes::web::router(
            c.auth.clone(),
            c.web_addr.clone(),
        ))
        .merge(web.router());
    let routes = TlsRoutes {
        app_http: Some(app_http),
        kube: Some(kube),
        router,
        jump: proxy::jump_host(p, cfg, &c.auth, &c.registry)?,
        identify,
        registry: c.registry.clone(),
        auth: c.auth.clone(),
        cancels: Default::default(),
        db_startup_timeout: cfg.proxy_service.db_startup_timeout.0,
        recordings: Some(c.recordings.clone()),
        relay: Some(dp.relay.clone()),
        dataplane: Some(dp.stats.clone()),
        http: proxy::http_deadlines(cfg),
    };
    let settings = proxy::listener_settings(cfg, &front);
    p.tasks.spawn(hop_proxy::listener::serve_tls(
        front.handoffs,
        front.sessions,
        tls,
        routes,
        settings,
        p.metrics.clone(),
        p.shutdown.clone(),
    ));
    p.metrics.proxy_ready.store(true, Ordering::Release);
    Ok(Some(dp.local_addr))
}

fn host_name() -> String {
    hop_platform::host::host_name().unwrap_or_else(|| "localhost".into())
}

/// An agent process: no storage, no listener; tunnels out to the proxy.
async fn run_agent(cfg: Config) -> anyhow::Result<()> {
    let data_dir: PathBuf = cfg.hop.data_dir.clone();
    prepare_data_dir(&data_dir)?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    process::watch_signals(shutdown_tx)?;
    Ok(hop_agent::run(agent_settings::from_config(&cfg, data_dir), shutdown_rx).await?)
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
