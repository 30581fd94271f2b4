//! The proxy's data plane: N worker threads, one per core, each with its own io_uring (or epoll)
//! runtime, its own `SO_REUSEPORT` listener on the one port, its own connections and counters.
//!
//! This module owns start-up of the workers (driver choice and fallback, listener binding),
//! their shared read-only context, and their statistics. A worker accepts, enforces the
//! connection limits (a connection counts as unauthenticated until its TLS client certificate is
//! verified or its route says it authenticated), peeks at the first bytes under a deadline, and
//! acts on the routing [`route::Decision`]: it redirects plain HTTP itself, terminates TLS itself
//! (`handshake.rs`, rustls on the worker's runtime), keeps `hop-tcp`, `hop-ssh` and PostgreSQL
//! sessions to their end (`kept.rs`: it reads their opening message, asks the control plane for
//! the decision and the agent's leg, and relays them), and hands every other connection to the
//! control plane's routes once, over a bounded queue (`worker.rs::hand_to_control_plane`, the
//! one place that does). Sessions whose TLS the control plane holds come back once their Dial is
//! done, as descriptors and traffic keys, and a worker moves their records too (`relay.rs`, the
//! fast path). It never decides who may reach what. The runtime's types stay inside
//! `worker.rs`, `handshake.rs`, `kept.rs` and `relay.rs`; nothing else here names monoio.

#![deny(clippy::disallowed_types)] // the data plane's workers never block on a lock (clippy.toml)

mod handshake;
mod kept;
pub mod limits;
mod relay;
pub mod route;
pub mod stats;
mod worker;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hop_config::{Cidr, IoDriverChoice, KernelTlsChoice};
pub use stats::{DataPlaneStats, HandoffRoute, IoDriver, KernelTls};

/// A connection the data plane passes to the control plane: the socket, what the classifier
/// learned, and for TLS the rustls connection the worker terminated.
#[derive(Debug)]
pub struct Handoff {
    /// Untouched (nothing read) unless `tls` is set.
    pub stream: std::net::TcpStream,
    /// What the connection starts with.
    pub kind: HandoffKind,
    /// The client's address: the TCP peer, or the source of a trusted PROXY header.
    pub client: SocketAddr,
    pub alpn: Option<String>,
    /// Read one TLS record at a time (the session may take the relay's fast path): the worker's
    /// handshake did, and the control plane must keep doing so.
    pub record_reads: bool,
    pub worker: usize,
    /// Released when the connection closes (counts against the connection limits).
    pub guard: limits::ConnectionGuard,
    /// The worker's finished TLS handshake (with any plaintext the client sent after it). `None`
    /// for the kinds the control plane answers first (PostgreSQL, SSH), and for TLS that arrived
    /// before the proxy had a certificate.
    pub tls: Option<Box<rustls::ServerConnection>>,
    /// Plaintext the worker already read from `tls` (a kept session's opening message, when
    /// its route turned out to need tokio): the route reads it first.
    pub read: Vec<u8>,
    /// The control plane has counted this connection already: a kept session it answered with
    /// a hand-off (counted when it was asked), so `connections_accepted` counts it once.
    pub counted: bool,
}

/// What the workers need to terminate TLS.
#[derive(Clone)]
pub struct TlsTermination {
    /// The proxy's current configuration; empty until its certificate is loaded (TLS connections
    /// then go to the control plane untouched).
    pub config: Arc<arc_swap::ArcSwapOption<rustls::ServerConfig>>,
    /// Shared with the control plane's handshakes.
    pub slots: Arc<limits::HandshakeSlots>,
    pub handshake_timeout: Duration,
    /// Handshake counters (`hop_proxy_tls_handshakes_total`, `hop_proxy_handshakes_shed_total`).
    pub metrics: Arc<hop_metrics::Metrics>,
}

/// What a handed-over connection starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandoffKind {
    /// A TLS ClientHello.
    Tls,
    /// A PostgreSQL startup-phase packet (TLS may follow an SSLRequest).
    Postgres,
    /// A PostgreSQL SSLRequest the worker consumed and answered `S` to: TLS follows (terminated
    /// by the worker unless the proxy had no certificate yet).
    PostgresTls,
    /// An SSH identification line (the proxy as a jump host).
    Ssh,
}

/// Sessions waiting for a worker to take them onto the fast path, per worker; beyond that they
/// stay on the control plane's relay.
const RELAY_QUEUE: usize = 1024;

/// Settings of the data plane.
#[derive(Debug, Clone)]
pub struct DataPlaneSettings {
    pub listen: SocketAddr,
    pub workers: usize,
    pub io_driver: IoDriverChoice,
    pub kernel_tls: KernelTlsChoice,
    pub first_byte_timeout: Duration,
    /// How long a PostgreSQL client has for its StartupMessage (`db_startup_timeout`).
    pub db_startup_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_ip: u32,
    /// Unauthenticated connections one source may hold ([`limits::PreAuthBudget`]).
    pub max_preauth_per_source: u32,
    pub trusted_proxy_cidrs: Vec<Cidr>,
}

/// The running data plane.
pub struct DataPlane {
    pub local_addr: SocketAddr,
    pub driver: IoDriver,
    pub stats: Arc<DataPlaneStats>,
    /// Where the control plane hands relayed sessions to the workers' fast path.
    pub relay: crate::relay::RelayHandle,
    stop: Arc<AtomicBool>,
    listeners: Vec<socket2::Socket>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for DataPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataPlane")
            .field("local_addr", &self.local_addr)
            .field("driver", &self.driver)
            .finish()
    }
}

/// Why io_uring cannot be used on this host (the host's configuration, not a fault of hop's).
#[derive(Debug, thiserror::Error)]
pub enum UringUnavailable {
    #[error("kernel.io_uring_disabled = 2")]
    DisabledBySysctl,
    /// The kernel, a seccomp filter or a limit refused to build a runtime.
    #[error("{0}")]
    Refused(#[source] std::io::Error),
}

/// Whether io_uring can be used here: a runtime is built and dropped, so a kernel without it,
/// `io_uring_disabled`, or a seccomp filter all show up as an error.
fn probe_uring() -> Result<(), UringUnavailable> {
    if let Ok(v) = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        && v.trim() == "2"
    {
        return Err(UringUnavailable::DisabledBySysctl);
    }
    worker::probe_uring().map_err(UringUnavailable::Refused)
}

/// Why the data plane did not start: the configuration asks for what this host lacks, the port
/// cannot be bound, or a worker thread cannot start.
#[derive(Debug, thiserror::Error)]
pub enum DataPlaneError {
    #[error("proxy_service.io_driver is uring but io_uring is unavailable: {cause}")]
    UringRequired { cause: UringUnavailable },
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("listener has no IP address")]
    NoIpAddress,
    #[error("cannot start a data-plane worker thread")]
    WorkerThread(#[source] std::io::Error),
    /// Setting up a listening socket failed.
    #[error(transparent)]
    Socket(#[from] std::io::Error),
}

fn bind_reuseport(addr: SocketAddr) -> Result<socket2::Socket, DataPlaneError> {
    use socket2::{Domain, Socket, Type};
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())
        .map_err(|source| DataPlaneError::Listen { addr, source })?;
    s.listen(4096)?;
    Ok(s)
}

impl DataPlane {
    /// Binds one listener per worker on the same port and starts the workers.
    pub fn start(
        settings: DataPlaneSettings,
        termination: TlsTermination,
        handoff: tokio::sync::mpsc::Sender<Handoff>,
        sessions: crate::relay::on_worker::SessionRequests,
    ) -> Result<Self, DataPlaneError> {
        let driver = match settings.io_driver {
            IoDriverChoice::Epoll => IoDriver::Epoll,
            IoDriverChoice::Uring => {
                probe_uring().map_err(|cause| DataPlaneError::UringRequired { cause })?;
                IoDriver::Uring
            }
            IoDriverChoice::Auto => match probe_uring() {
                Ok(()) => IoDriver::Uring,
                Err(e) => {
                    tracing::warn!(reason = %e, "io_uring is unavailable; the data plane uses epoll");
                    IoDriver::Epoll
                }
            },
        };
        let n = settings.workers.max(1);
        // The first bind resolves port 0; the others share the port it got.
        let first = bind_reuseport(settings.listen)?;
        let local_addr = first
            .local_addr()?
            .as_socket()
            .ok_or(DataPlaneError::NoIpAddress)?;
        let mut listeners = vec![first];
        for _ in 1..n {
            listeners.push(bind_reuseport(local_addr)?);
        }
        let kernel_tls = match settings.kernel_tls {
            KernelTlsChoice::Off => KernelTls::Off("proxy_service.kernel_tls is off".into()),
            KernelTlsChoice::Auto => match hop_platform::ktls::probe() {
                Ok(()) => KernelTls::On,
                Err(e) => KernelTls::Off(e.to_string()),
            },
        };
        match &kernel_tls {
            KernelTls::On => {
                tracing::info!("kernel TLS is available: relayed sessions are spliced")
            }
            KernelTls::Off(why) => {
                tracing::info!(reason = %why, "kernel TLS is not used: relayed sessions' records are re-sealed in user space")
            }
        }
        let stats = Arc::new(DataPlaneStats::new(n, driver, kernel_tls));
        let limits = Arc::new(limits::ConnectionLimits::new(
            settings.max_connections,
            settings.max_connections_per_ip,
            settings.max_preauth_per_source,
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..n)
            .map(|_| {
                let (tx, rx) = tokio::sync::mpsc::channel(RELAY_QUEUE);
                (tx, rx)
            })
            .unzip();
        let ctx = Arc::new(worker::WorkerContext {
            settings: settings.clone(),
            stats: stats.clone(),
            limits,
            termination,
            handoff,
            sessions,
            stop: stop.clone(),
        });
        let mut threads = Vec::with_capacity(n);
        let mut kept = Vec::with_capacity(n);
        // Each worker is handed its own fast-path queue as it starts.
        for ((i, l), jobs) in listeners.into_iter().enumerate().zip(receivers) {
            kept.push(l.try_clone()?);
            let ctx = ctx.clone();
            let std_listener: std::net::TcpListener = l.into();
            let t = std::thread::Builder::new()
                .name(format!("hop-worker-{i}"))
                .spawn(move || worker::run(i, driver, std_listener, ctx, jobs))
                .map_err(DataPlaneError::WorkerThread)?;
            threads.push(t);
        }
        tracing::info!(%local_addr, workers = n, driver = driver.name(), "data plane listening");
        Ok(Self {
            local_addr,
            driver,
            stats,
            relay: crate::relay::RelayHandle::new(senders),
            stop,
            listeners: kept,
            threads,
        })
    }

    /// Stops accepting; connections already handed off are the control plane's to finish.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Release);
        for l in &self.listeners {
            // Wakes accepts blocked in the kernel (EINVAL); workers then see `stop`.
            let _ = l.shutdown(std::net::Shutdown::Read);
        }
        // Workers notice `stop` at their next accept; they are not joined, so a worker busy with a
        // slow client cannot hold up process exit.
        drop(self.threads);
    }
}
