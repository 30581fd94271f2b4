//! Serving the control plane's connections: connections the data plane hands over, and the
//! local admin socket.
//!
//! This module owns routing a terminated TLS connection by its ALPN (then its SNI: `kube.P`,
//! then a web application's `NAME.P`) and identifying its caller
//! from the client certificate, the TLS handshakes that still run on the control plane
//! (PostgreSQL's after a GSSENCRequest the control plane answered, and any that arrive before the
//! proxy's certificate is loaded; under the shared deadline and handshake slots), releasing a
//! connection's pre-authentication place once its client certificate is verified (an agent's
//! connection then counts against its host id), and graceful shutdown (stop taking connections,
//! let in-flight requests finish; HTTP connections are served by `http_conn`). The workers
//! terminate every other TLS connection themselves (`dataplane/handshake.rs`), a PostgreSQL
//! SSLRequest's included. Routing by path happens in the axum router it is given.

use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hop_admission::{Refusal, Route};
use tokio::net::{TcpStream, UnixListener};
use tokio::sync::{mpsc, watch};

use crate::dataplane::limits::ConnectionGuard;
use crate::dataplane::route::RejectReason;
use crate::dataplane::{Handoff, HandoffKind};
use crate::proxy_tls::ProxyTls;
use crate::relay::bounded::RecordReads;
use crate::relay::on_worker::{KeptRoute, SessionInbox, SessionRequest};
use crate::routes::http_conn::HttpDeadlines;
use crate::routes::postgres::BeforeTls;
use crate::tunnels::{AgentStream, TunnelRegistry};
use hop_auth::AuthServer;
use hop_auth::caller::Caller;
use hop_metrics::Metrics;
use hop_net::tunnel::{
    ALPN_JOIN, ALPN_MYSQL, ALPN_PEER, ALPN_POSTGRES, ALPN_POSTGRES_DIRECT, ALPN_SSH, ALPN_TCP,
    ALPN_TUNNEL, ALPN_TUNNEL_DATA,
};

/// Verifies a client certificate (DER) into a caller; `None` when it is not a valid user cert.
pub type IdentifyPeer = Arc<dyn Fn(&[u8], SocketAddr) -> Option<Caller> + Send + Sync>;

/// A connection's place in the connection limits and the active-connections gauge, given back
/// when it is dropped: wherever the connection's session ends (a relayed session outlives the
/// task that accepted it).
pub struct ConnectionHold {
    _guard: ConnectionGuard,
    metrics: Arc<Metrics>,
}

impl Drop for ConnectionHold {
    fn drop(&mut self) {
        self.metrics.connections_active.dec();
    }
}

/// Settings of the TLS side of the one port.
#[derive(Clone)]
pub struct TlsListenerSettings {
    pub handshake_timeout: Duration,
    /// Shared with the workers' handshakes.
    pub handshakes: Arc<crate::dataplane::limits::HandshakeSlots>,
}

/// What serves a TLS connection once its ALPN is known.
#[derive(Clone)]
pub struct TlsRoutes {
    /// `h2`, `http/1.1`, `hop-auth`: the web API and the gRPC Auth API.
    pub router: Router,
    pub identify: IdentifyPeer,
    /// `hop-tunnel`, `hop-tunnel-data`: agents.
    pub registry: Arc<TunnelRegistry>,
    /// `hop-tcp`: application sessions (RBAC and audit through the Auth service).
    pub auth: Arc<AuthServer>,
    /// PostgreSQL sessions' cancel keys.
    pub cancels: Arc<crate::routes::db_cancel::CancelRegistry>,
    /// How long a database client has for its startup (`proxy_service.db_startup_timeout`).
    pub db_startup_timeout: Duration,
    /// SSH connections on the one port (`ssh -J`).
    pub jump: Arc<crate::routes::jump::JumpHost>,
    /// Where sessions the proxy records go (agentless OpenSSH nodes).
    pub recordings: Option<Arc<dyn hop_storage::recording::RecordingBackend>>,
    /// The data plane's fast path for relayed sessions.
    pub relay: Option<crate::relay::RelayHandle>,
    /// The deadlines of HTTP connections (web API, Auth API).
    pub http: HttpDeadlines,
    /// The data plane's counters, where connections it handed over are refused here.
    pub dataplane: Option<Arc<crate::dataplane::DataPlaneStats>>,
    /// Web applications: a connection whose SNI is `NAME.P` (and whose ALPN is not one of
    /// Hop's) goes there.
    pub app_http: Option<Arc<crate::routes::app_http::AppHttp>>,
    /// Kubernetes: a connection whose SNI is `kube.P` (and whose ALPN is not one of Hop's)
    /// goes there, before the web-application check (`kube` is no application's name).
    pub kube: Option<Arc<crate::routes::kube::KubeProxy>>,
}

impl TlsRoutes {
    fn db(&self) -> crate::routes::postgres::DbRoutes {
        crate::routes::postgres::DbRoutes {
            registry: self.registry.clone(),
            auth: self.auth.clone(),
            cancels: self.cancels.clone(),
            startup_timeout: self.db_startup_timeout,
        }
    }
}

/// Serves connections the data plane hands over until shutdown: TLS connections the workers
/// terminated (routed here by their ALPN and certificate), PostgreSQL starts other than an
/// SSLRequest (GSSENC, cancel, plaintext: answered here, and TLS terminated here when it follows),
/// SSH connections for the jump host, and TLS connections that arrived before the proxy's
/// certificate was loaded (terminated here). Also answers the workers' requests for the
/// sessions they keep (`sessions`: the decision, the agent's leg, audit and the live watch).
pub async fn serve_tls(
    mut handoffs: mpsc::Receiver<Handoff>,
    mut sessions: SessionInbox,
    tls: Arc<arc_swap::ArcSwapOption<rustls::ServerConfig>>,
    routes: TlsRoutes,
    settings: TlsListenerSettings,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let handoff = tokio::select! {
            h = handoffs.recv() => match h {
                Some(h) => h,
                None => break,
            },
            Some(req) = sessions.recv() => {
                kept_session(req, &routes, &metrics);
                continue;
            }
            _ = hop_platform::signals::until_shutdown(&mut shutdown) => break,
        };
        if !handoff.counted {
            metrics.connections_accepted.inc();
        }
        let Handoff {
            stream,
            kind,
            client: remote,
            alpn,
            record_reads: bounded,
            worker,
            guard,
            tls: terminated,
            read,
            counted: _,
        } = handoff;
        let stream = match stream
            .set_nonblocking(true)
            .and_then(|()| TcpStream::from_std(stream))
        {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot adopt a handed-off connection");
                continue;
            }
        };
        if kind == HandoffKind::Ssh {
            let (jump, metrics) = (routes.jump.clone(), metrics.clone());
            tokio::spawn(async move {
                metrics.connections_active.inc();
                jump.serve(stream, remote, guard).await;
                metrics.connections_active.dec();
            });
            continue;
        }
        let postgres = matches!(kind, HandoffKind::Postgres | HandoffKind::PostgresTls);
        tracing::trace!(%remote, worker, ?alpn, terminated = terminated.is_some(), "connection from the data plane");
        if let Some(conn) = terminated {
            // The worker did the handshake: straight to the route.
            let tls = ProxyTls::new(RecordReads::new(stream, bounded), *conn);
            let (routes, metrics, shutdown) = (routes.clone(), metrics.clone(), shutdown.clone());
            tokio::spawn(async move {
                metrics.connections_active.inc();
                let routed = Routed {
                    remote,
                    worker,
                    postgres,
                    read,
                };
                route(tls, routed, guard, routes, metrics, shutdown).await;
            });
            continue;
        }
        let Some(permit) = settings.handshakes.try_acquire() else {
            metrics.handshakes_shed.inc();
            continue;
        };
        // The current certificate: a reload swaps it for connections that arrive afterwards.
        let Some(config) = tls.load_full() else {
            tracing::warn!(%remote, "no proxy certificate yet: connection closed");
            continue;
        };
        let (routes, metrics, shutdown) = (routes.clone(), metrics.clone(), shutdown.clone());
        let deadline = settings.handshake_timeout;
        let mut guard = guard;
        tokio::spawn(async move {
            metrics.connections_active.inc();
            let mut stream = stream;
            if kind == HandoffKind::Postgres {
                let db = routes.db();
                if let BeforeTls::Done =
                    crate::routes::postgres::before_tls(&mut stream, remote, &db).await
                {
                    drop(permit);
                    metrics.connections_active.dec();
                    return;
                }
            }
            let stream = RecordReads::new(stream, bounded);
            let accepted = tokio::time::timeout(deadline, ProxyTls::accept(stream, config)).await;
            drop(permit);
            match accepted {
                Ok(Ok(tls)) => {
                    metrics.tls_handshakes_ok.inc();
                    // As on the workers: a verified client certificate is authentication.
                    if tls.get_ref().1.peer_certificates().is_some() {
                        guard.authenticated();
                    }
                    let routed = Routed {
                        remote,
                        worker,
                        postgres,
                        read: Vec::new(),
                    };
                    route(tls, routed, guard, routes, metrics, shutdown).await;
                    return;
                }
                Ok(Err(e)) => {
                    metrics.tls_handshakes_failed.inc();
                    tracing::debug!(%remote, error = %e, "TLS handshake failed");
                }
                Err(_) => {
                    metrics.tls_handshakes_timed_out.inc();
                    tracing::debug!(%remote, "TLS handshake deadline passed");
                }
            }
            metrics.connections_active.dec();
            drop(guard);
        });
    }
}

/// Answers a worker's request for a session it keeps (`hop-tcp`, `hop-ssh`, PostgreSQL), in a task of its own; the
/// session counts in `connections_active` until it ends.
fn kept_session(req: SessionRequest, routes: &TlsRoutes, metrics: &Arc<Metrics>) {
    metrics.connections_accepted.inc();
    metrics.connections_active.inc();
    let kept = crate::routes::dial::KeptSessions {
        identify: routes.identify.clone(),
        registry: routes.registry.clone(),
        auth: routes.auth.clone(),
    };
    let active = ActiveConnection(metrics.clone());
    match req.route {
        KeptRoute::App => tokio::spawn(crate::routes::apps::serve_kept(req, kept, active)),
        KeptRoute::Ssh => tokio::spawn(crate::routes::ssh::serve_kept(req, kept, active)),
        KeptRoute::Postgres => tokio::spawn(crate::routes::postgres::serve_kept(
            req,
            routes.db(),
            kept,
            active,
        )),
    };
}

/// A connection's place in the `connections_active` gauge, given back when dropped.
struct ActiveConnection(Arc<Metrics>);

impl Drop for ActiveConnection {
    fn drop(&mut self) {
        self.0.connections_active.dec();
    }
}

/// Counts an agent's data connection by its handshake (full or resumed).
fn count_data_handshake(metrics: &Metrics, conn: &rustls::Connection) {
    match conn.handshake_kind() {
        Some(rustls::HandshakeKind::Resumed) => metrics.agent_data_handshakes_resumed.inc(),
        _ => metrics.agent_data_handshakes_full.inc(),
    }
}

/// What the data plane said of a terminated TLS connection.
struct Routed {
    remote: SocketAddr,
    worker: usize,
    /// The connection began with a PostgreSQL SSLRequest.
    postgres: bool,
    /// Plaintext a worker already read (an SSH session's Dial, when the session turned out to
    /// need the proxy's SSH server): the route reads it first.
    read: Vec<u8>,
}

/// The SPKI pin of the host CA key (among those trusted now) that signed the client certificate
/// on `tls`: what the registry keeps, so that an agent of a key a rotation drops is disconnected
/// (`crate::admission::sweep_agents`). The identifier's (cached) result when it names one and
/// that key is still trusted now (the identifier learns of a rotation step just after Auth
/// makes it); verified here otherwise.
fn agent_signer(auth: &AuthServer, tls: &AgentStream, known: Option<String>) -> Option<String> {
    if let Some(pin) = known
        && crate::rotation::trusted_host_pins(auth).contains(&pin)
    {
        return Some(pin);
    }
    let leaf = tls.get_ref().1.peer_certificates()?.first()?;
    let trusted = auth.public_authorities(hop_ca::CaKind::Host);
    hop_ca::x509_signer_pin(leaf.as_ref(), &trusted, hop_ca::CaKind::Host, auth.now())
}

/// Serves one terminated TLS connection by its ALPN and its client certificate. Owns the
/// connection's `connections_active` count and its place in the limits.
async fn route(
    tls: AgentStream,
    routed: Routed,
    mut guard: ConnectionGuard,
    routes: TlsRoutes,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
) {
    let Routed {
        remote,
        worker,
        postgres,
        read,
    } = routed;
    let caller = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|leaf| (routes.identify)(leaf.as_ref(), remote))
        .unwrap_or(Caller::Anonymous {
            remote: Some(remote),
        });
    // An agent counts against its host id's budget, not its address's.
    if let Caller::Host { host_id, .. } = &caller
        && let Err(reason) = guard.count_as_host(host_id)
    {
        refused(&routes, worker, reason, remote);
        metrics.connections_active.dec();
        return;
    }
    if tls.get_ref().1.alpn_protocol() == Some(ALPN_TUNNEL_DATA) {
        count_data_handshake(&metrics, tls.get_ref().1);
    }
    // A locked agent's tunnels are refused (its API calls are refused per request). This runs
    // on every connection, resumed or not: a resumed one names the certificate of its ticket's
    // handshake, identified again above at the current time.
    if let Caller::Host {
        host_id, expires, ..
    } = &caller
        && matches!(
            tls.get_ref().1.alpn_protocol(),
            Some(p) if p == ALPN_TUNNEL || p == ALPN_TUNNEL_DATA
        )
        && crate::admission::admit_agent(&routes.auth, host_id, *expires, Route::Tunnel, remote)
            .is_err()
    {
        metrics.connections_active.dec();
        return;
    }
    let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    if !read.is_empty() && alpn.as_deref() != Some(ALPN_SSH) {
        // Only an SSH session comes over with what its worker read.
        tracing::warn!(%remote, "a handed-off connection with read plaintext on another route");
        metrics.connections_active.dec();
        return;
    }
    if postgres
        || alpn.as_deref() == Some(ALPN_POSTGRES)
        || alpn.as_deref() == Some(ALPN_POSTGRES_DIRECT)
    {
        crate::routes::postgres::serve(
            tls,
            caller,
            remote,
            routes.db(),
            routes.relay.as_ref().map(|r| (r, worker)),
        )
        .await;
        metrics.connections_active.dec();
        drop(guard);
        return;
    }
    if alpn.as_deref() == Some(ALPN_MYSQL) {
        crate::routes::mysql::serve(tls, caller, remote, routes.db()).await;
        metrics.connections_active.dec();
        drop(guard);
        return;
    }
    match (alpn.as_deref(), caller) {
        (
            Some(p),
            Caller::Host {
                host_id,
                role,
                signer,
                ..
            },
        ) if p == ALPN_TUNNEL => {
            if let Some(signer) = agent_signer(&routes.auth, &tls, signer) {
                routes
                    .registry
                    .clone()
                    .serve_control(tls, host_id, role, signer, remote, shutdown)
                    .await;
            } else {
                tracing::warn!(%host_id, %remote, "agent refused: its certificate is signed by no host CA key trusted now");
            }
        }
        (
            Some(p),
            Caller::Host {
                host_id, signer, ..
            },
        ) if p == ALPN_TUNNEL_DATA => {
            if let Some(signer) = agent_signer(&routes.auth, &tls, signer) {
                if let Some(tls) = routes.registry.park_data(&host_id, signer, tls, guard) {
                    tokio::spawn(crate::peering::send_data_away(tls, host_id, remote));
                }
            } else {
                tracing::warn!(%host_id, %remote, "agent data connection refused: its certificate is signed by no host CA key trusted now");
            }
            metrics.connections_active.dec();
            return;
        }
        (
            Some(p),
            Caller::Host {
                host_id,
                role,
                expires,
                ..
            },
        ) if p == ALPN_PEER && role == hop_ca::HostRole::Proxy => {
            let peer = crate::peering::Inbound {
                proxy_id: host_id,
                expires,
                remote,
            };
            let fast_path = routes.relay.as_ref().map(|r| (r, worker));
            crate::peering::serve(tls, peer, &routes.db(), fast_path).await;
        }
        (Some(p), caller @ Caller::User { .. }) if p == ALPN_TCP => {
            let Some(cert) = crate::admission::UserCert::of(caller) else {
                return;
            };
            let hold = ConnectionHold {
                _guard: guard,
                metrics: metrics.clone(),
            };
            crate::routes::apps::serve(
                tls,
                cert,
                remote,
                routes.registry.clone(),
                routes.auth.clone(),
                routes.relay.as_ref().map(|r| (r, worker)),
                hold,
            )
            .await;
            return;
        }
        (Some(p), caller @ Caller::User { .. }) if p == ALPN_JOIN => {
            let Some(cert) = crate::admission::UserCert::of(caller) else {
                return;
            };
            crate::routes::join::serve(
                tls,
                cert,
                remote,
                routes.registry.clone(),
                routes.auth.clone(),
                routes.kube.clone(),
            )
            .await;
        }
        (Some(p), caller @ Caller::User { .. }) if p == ALPN_SSH => {
            let Some(cert) = crate::admission::UserCert::of(caller) else {
                return;
            };
            let deps = crate::routes::ssh::Deps {
                registry: routes.registry.clone(),
                auth: routes.auth.clone(),
                recordings: routes.recordings.clone(),
            };
            let fast_path = routes.relay.as_ref().map(|r| (r, worker));
            // `read`: the Dial, when a worker read it and the session needs the SSH server.
            let client = hop_net::tunnel::FramedStream::with_pending(tls, read);
            crate::routes::ssh::serve(client, cert, remote, deps, fast_path).await;
        }
        (Some(p), caller)
            if p == ALPN_TUNNEL
                || p == ALPN_TUNNEL_DATA
                || p == ALPN_PEER
                || p == ALPN_TCP
                || p == ALPN_SSH
                || p == ALPN_JOIN =>
        {
            tracing::debug!(%remote, "tunnel or application route without the right certificate");
            audit_wrong_certificate(&routes.auth, p, &caller, remote);
        }
        (alpn, caller) if is_kube_sni(&routes, &tls, alpn) => {
            if let Some(kube) = routes.kube.clone() {
                kube.serve(tls, caller, remote, shutdown).await;
            }
        }
        (alpn, caller) if let Some(app) = app_of_sni(&routes, &tls, alpn) => {
            let (Some(apps), remote) = (routes.app_http.clone(), remote) else {
                return;
            };
            let cert = crate::admission::UserCert::of(caller);
            // A browser's connection authenticates with its first admitted request.
            let pre_auth = guard.take_pre_auth();
            apps.serve(tls, app, cert, (remote, pre_auth), shutdown)
                .await;
        }
        (_, caller) => {
            let deadlines = Some(routes.http);
            let mut router = crate::admission::api_admission(routes.router, routes.auth.clone());
            if let Some(apps) = &routes.app_http {
                router = crate::routes::app_http::misdirected_away(apps.public.clone(), router);
            }
            // A browser's connection authenticates with its first request the web session's
            // guard admits (`web::guard`).
            let who = (caller, guard.take_pre_auth());
            crate::routes::http_conn::serve(tls, router, who, deadlines, shutdown).await
        }
    }
    metrics.connections_active.dec();
    drop(guard);
}

/// Whether a connection's SNI is the kube route's (`kube.P`), when it asked for no ALPN of
/// Hop's own.
fn is_kube_sni(routes: &TlsRoutes, tls: &AgentStream, alpn: Option<&[u8]>) -> bool {
    if alpn.is_some_and(|p| p.starts_with(b"hop-")) {
        return false;
    }
    routes
        .kube
        .as_ref()
        .is_some_and(|k| k.is_kube_sni(tls.sni()))
}

/// The web application a connection's SNI names (`NAME.P`), when it asked for no ALPN of
/// Hop's own.
fn app_of_sni(routes: &TlsRoutes, tls: &AgentStream, alpn: Option<&[u8]>) -> Option<String> {
    if alpn.is_some_and(|p| p.starts_with(b"hop-")) {
        return None;
    }
    routes.app_http.as_ref()?.app_of_sni(tls.sni())
}

/// Counts a connection the control plane closes unserved with the data plane's refusals.
fn refused(routes: &TlsRoutes, worker: usize, reason: RejectReason, remote: SocketAddr) {
    if let Some(dp) = &routes.dataplane {
        dp.worker(worker).rejected(reason);
    }
    tracing::debug!(%remote, reason = reason.name(), "connection closed unserved");
}

/// Binds the admin socket (mode 0600) in the data dir, replacing a stale one: the caller already
/// holds the data dir's lock, so no other live process owns it.
pub fn bind_admin_socket(path: &Path) -> Result<UnixListener, AdminSocketError> {
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    let l = UnixListener::bind(path).map_err(|cause| AdminSocketError::Bind {
        path: path.to_path_buf(),
        cause,
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Why the admin socket could not be set up in the data dir (the operating system's answer).
#[derive(Debug, thiserror::Error)]
pub enum AdminSocketError {
    #[error("cannot create admin socket {}: {cause}", path.display())]
    Bind {
        path: std::path::PathBuf,
        cause: std::io::Error,
    },
    /// Removing a stale socket or restricting the new one's mode failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Accepts admin connections from processes of the same user (or root) until shutdown.
pub async fn serve_admin_socket(
    listener: UnixListener,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let own_uid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0);
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "admin socket accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = hop_platform::signals::until_shutdown(&mut shutdown) => break,
        };
        let allowed = stream
            .peer_cred()
            .map(|c| c.uid() == own_uid || c.uid() == 0)
            .unwrap_or(false);
        if !allowed {
            tracing::warn!("refused an admin socket connection from another user");
            continue;
        }
        let (router, shutdown) = (router.clone(), shutdown.clone());
        tokio::spawn(crate::routes::http_conn::serve(
            stream,
            router,
            (Caller::LocalAdmin, Default::default()),
            None,
            shutdown,
        ));
    }
}

/// Audits a certificate presented on a route it does not open (an agent's host certificate on
/// a user route, a user certificate on the tunnel, no certificate at all).
pub(crate) fn audit_wrong_certificate(
    auth: &AuthServer,
    alpn: &[u8],
    caller: &Caller,
    remote: SocketAddr,
) {
    let route = match alpn {
        p if p == ALPN_TUNNEL || p == ALPN_TUNNEL_DATA => Route::Tunnel,
        p if p == ALPN_PEER => Route::ProxyPeer,
        p if p == ALPN_TCP => Route::App,
        p if p == ALPN_SSH => Route::HopSsh,
        _ => Route::Join,
    };
    let what = match caller {
        Caller::Host { .. } => "an agent's host certificate",
        Caller::User { .. } => "a user certificate",
        Caller::LocalAdmin | Caller::Anonymous { .. } => "a connection without a certificate",
    };
    let refusal = Refusal::WrongCertificate {
        what,
        route: route.name(),
    };
    match caller {
        Caller::Host { .. } | Caller::User { .. } => {
            auth.audit_refusal(route, &caller.actor(), &refusal, Some(remote));
        }
        Caller::LocalAdmin | Caller::Anonymous { .. } => {
            auth.audit_unverified_refusal(route, &refusal, Some(remote));
        }
    }
}
