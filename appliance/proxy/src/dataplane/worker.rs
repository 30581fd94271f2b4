//! One data-plane worker: a monoio runtime on its own thread with its own listener.
//!
//! This is the runtime seam: monoio's types appear in this file, `handshake.rs`, `kept.rs` and
//! `relay.rs` only. A worker accepts, admits the connection against the shared limits, classifies
//! it from peeked bytes under the first-byte deadline, and then redirects it (plain HTTP),
//! terminates TLS and keeps the session (`kept.rs`) or hands the connection to its route on the
//! control plane, hands it off untouched (PostgreSQL's rarer starts, SSH), or closes and counts
//! it. Every hand-off goes through [`hand_to_control_plane`]. It never blocks its thread: every
//! wait is an io_uring/epoll wait or a timer.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hop_protocols::sniff::{Sniff, sniff};
use monoio::io::{AsyncReadRentExt, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};

use super::limits::{ConnectionGuard, ConnectionLimits};
use super::route::{Decision, RejectReason, decide};
use super::stats::{DataPlaneStats, HandoffRoute, IoDriver, WorkerStats};
use super::{DataPlaneSettings, Handoff, HandoffKind, TlsTermination};
use crate::relay::TlsRelayJob;

/// Bytes peeked at first; enough for nearly every ClientHello.
const INITIAL_PEEK: usize = 4096;
/// The most bytes classification will look at (the ClientHello limit plus record headers).
const MAX_PEEK: usize = 70 * 1024;

/// A worker's fast-path queue: relayed sessions the control plane hands to this worker.
pub(super) type RelayJobs = tokio::sync::mpsc::Receiver<TlsRelayJob>;

/// What every worker shares: read-only settings, its stats block, the limits, the queue.
pub(super) struct WorkerContext {
    pub settings: DataPlaneSettings,
    pub stats: Arc<DataPlaneStats>,
    pub limits: Arc<ConnectionLimits>,
    pub termination: TlsTermination,
    pub handoff: tokio::sync::mpsc::Sender<Handoff>,
    /// Where the sessions workers keep ask the control plane for their decision and agent leg.
    pub sessions: crate::relay::on_worker::SessionRequests,
    pub stop: Arc<AtomicBool>,
}

/// Builds and drops an io_uring runtime: fails where io_uring cannot be used.
pub(super) fn probe_uring() -> io::Result<()> {
    monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .build()
        .map(drop)
}

/// The worker thread's body; `jobs` is this worker's own fast-path queue, handed over when the
/// worker is spawned.
pub(super) fn run(
    idx: usize,
    driver: IoDriver,
    listener: std::net::TcpListener,
    ctx: Arc<WorkerContext>,
    jobs: RelayJobs,
) {
    let result = match driver {
        IoDriver::Uring => monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .enable_timer()
            .build()
            .map(|mut rt| rt.block_on(accept_loop(idx, listener, ctx, jobs))),
        IoDriver::Epoll => monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .map(|mut rt| rt.block_on(accept_loop(idx, listener, ctx, jobs))),
    };
    if let Err(e) = result {
        tracing::error!(worker = idx, error = %e, "data-plane worker could not start its runtime");
    }
}

/// Runs each relayed session the control plane hands this worker, on this worker's runtime.
async fn run_relay_jobs(idx: usize, mut jobs: RelayJobs, ctx: Arc<WorkerContext>) {
    while let Some(job) = jobs.recv().await {
        let ctx = ctx.clone();
        monoio::spawn(async move {
            let kernel_tls = ctx.stats.kernel_tls == super::KernelTls::On;
            super::relay::run(job, ctx.stats.worker(idx), kernel_tls).await
        });
    }
}

async fn accept_loop(
    idx: usize,
    listener: std::net::TcpListener,
    ctx: Arc<WorkerContext>,
    jobs: RelayJobs,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(worker = idx, error = %e, "data-plane worker cannot use its listener");
            return;
        }
    };
    let stats = ctx.stats.worker(idx);
    monoio::spawn(run_relay_jobs(idx, jobs, ctx.clone()));
    loop {
        let accepted = listener.accept().await;
        if ctx.stop.load(Ordering::Acquire) {
            break;
        }
        match accepted {
            Ok((stream, peer)) => {
                stats.accepted.fetch_add(1, Ordering::Relaxed);
                match ctx.limits.admit(peer.ip()) {
                    Ok(guard) => {
                        monoio::spawn(serve(idx, stream, peer, guard, ctx.clone()));
                    }
                    Err(reason) => {
                        // Shed before any work: established sessions keep their resources.
                        stats.rejected(reason);
                        drop(stream);
                    }
                }
            }
            Err(e) => {
                // Out of descriptors or memory: back off rather than spin.
                tracing::warn!(worker = idx, error = %e, "accept failed");
                monoio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Peeks until the route is decided. Consumes nothing except a trusted PROXY header.
async fn classify(
    stream: &mut TcpStream,
    peer: SocketAddr,
    ctx: &WorkerContext,
    stats: &WorkerStats,
) -> Result<(Decision, SocketAddr), RejectReason> {
    let trusted = &ctx.settings.trusted_proxy_cidrs;
    let mut client = peer;
    let mut proxy_seen = false;
    let mut buf: Vec<u8> = Vec::new();
    let mut last_len = 0usize;
    let mut backoff = Duration::from_millis(1);
    loop {
        stream
            .readable(false)
            .await
            .map_err(|_| RejectReason::ClosedEarly)?;
        if buf.is_empty() {
            buf = vec![0u8; INITIAL_PEEK];
        }
        let n = match hop_platform::peek(stream, &mut buf) {
            Ok(0) => return Err(RejectReason::ClosedEarly),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(_) => return Err(RejectReason::ClosedEarly),
        };
        let bytes = buf.get(..n).unwrap_or_default();
        let decision = decide(bytes, peer.ip(), trusted, proxy_seen);
        if decision != Decision::NeedMore
            && let Sniff::Detected { protocol, .. } = sniff(bytes)
        {
            stats.classified(protocol);
        }
        match decision {
            Decision::NeedMore => {
                if n == buf.len() {
                    if buf.len() >= MAX_PEEK {
                        return Err(RejectReason::MalformedTls);
                    }
                    buf.resize((buf.len() * 4).min(MAX_PEEK), 0);
                    continue;
                }
                // Peeking does not drain the socket, so readiness stays set: wait for more bytes
                // with a short, growing sleep instead of spinning.
                if n == last_len {
                    monoio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(50));
                } else {
                    backoff = Duration::from_millis(1);
                }
                last_len = n;
            }
            Decision::ProxyHeader {
                client: source,
                len,
            } => {
                let (res, _) = stream.read_exact(vec![0u8; len]).await;
                res.map_err(|_| RejectReason::ClosedEarly)?;
                client = source.unwrap_or(peer);
                proxy_seen = true;
                last_len = 0;
            }
            other => return Ok((other, client)),
        }
    }
}

async fn serve(
    idx: usize,
    mut stream: TcpStream,
    peer: SocketAddr,
    mut guard: ConnectionGuard,
    ctx: Arc<WorkerContext>,
) {
    let stats = ctx.stats.worker(idx);
    stats.active.fetch_add(1, Ordering::Relaxed);
    let decided = match monoio::time::timeout(
        ctx.settings.first_byte_timeout,
        classify(&mut stream, peer, &ctx, stats),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(RejectReason::FirstByteTimeout),
    };
    // Behind a trusted PROXY header, the per-IP budget is the real client's.
    let decided = decided.and_then(|(d, client)| {
        if client.ip() != peer.ip() {
            guard.reassign(client.ip())?;
        }
        Ok((d, client))
    });
    match decided {
        Ok((
            decision @ (Decision::ControlPlane { .. }
            | Decision::PostgresTls
            | Decision::Postgres
            | Decision::Ssh),
            client,
        )) => {
            let (kind, alpn) = match &decision {
                Decision::ControlPlane { alpn, .. } => (HandoffKind::Tls, alpn.clone()),
                Decision::Ssh => (HandoffKind::Ssh, None),
                Decision::PostgresTls => (HandoffKind::PostgresTls, None),
                _ => (HandoffKind::Postgres, None),
            };
            let _ = stream.set_nodelay(true);
            // PostgreSQL sessions, like those of some ALPNs, may take the fast path.
            let record_reads = kind != HandoffKind::Ssh
                && (kind != HandoffKind::Tls || crate::relay::reads_by_record(alpn.as_deref()));
            let terminated = match decision {
                Decision::ControlPlane { .. } => {
                    Some(terminate(&mut stream, record_reads, &ctx.termination, &peer).await)
                }
                Decision::PostgresTls if answer_ssl_request(&mut stream).await => {
                    Some(terminate(&mut stream, record_reads, &ctx.termination, &peer).await)
                }
                Decision::PostgresTls => Some(Terminated::Failed),
                _ => None,
            };
            let tls = match terminated {
                Some(Terminated::Failed) => None,
                Some(Terminated::Done(conn)) => {
                    stats.tls_terminated.fetch_add(1, Ordering::Relaxed);
                    // The handshake verified its client certificate against the cluster's CAs.
                    if conn.peer_certificates().is_some() {
                        guard.authenticated();
                    }
                    if let Some(route) =
                        super::kept::keeps(&conn, kind == HandoffKind::PostgresTls, record_reads)
                    {
                        let session = super::kept::Session {
                            idx,
                            route,
                            stream,
                            conn,
                            client,
                            guard,
                        };
                        keep(session, (kind, alpn, record_reads), &ctx, stats).await;
                        stats.active.fetch_sub(1, Ordering::Relaxed);
                        return;
                    }
                    Some(Some(conn))
                }
                Some(Terminated::NoConfig) | None => Some(None),
            };
            // `None`: the connection is closed here (counted where it failed).
            if let Some(tls) = tls {
                let handoff = Handoff {
                    stream: hop_platform::into_std_stream(stream),
                    kind,
                    client,
                    alpn,
                    record_reads,
                    worker: idx,
                    guard,
                    tls,
                    read: Vec::new(),
                    counted: false,
                };
                hand_to_control_plane(&ctx, stats, handoff);
            }
        }
        Ok((Decision::RedirectHttps { location, head_len }, _)) => {
            stats.redirected.fetch_add(1, Ordering::Relaxed);
            let body = format!(
                "HTTP/1.1 308 Permanent Redirect\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            answer_http(&mut stream, head_len, body).await;
            drop(guard);
        }
        Ok((Decision::BadHttp { head_len }, _)) => {
            let body = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                .to_string();
            answer_http(&mut stream, head_len, body).await;
            drop(guard);
        }
        Ok((Decision::Reject(reason), _)) | Err(reason) => {
            stats.rejected(reason);
            tracing::debug!(worker = idx, %peer, reason = reason.name(), "connection closed unserved");
            drop(guard);
        }
        Ok((Decision::NeedMore | Decision::ProxyHeader { .. }, _)) => drop(guard),
    }
    stats.active.fetch_sub(1, Ordering::Relaxed);
}

/// Serves a session its worker keeps; one whose route needs tokio is handed over, once, with
/// what the worker read (with its kind, ALPN and record-by-record reads, as classified).
async fn keep(
    session: super::kept::Session,
    (kind, alpn, record_reads): (HandoffKind, Option<String>, bool),
    ctx: &Arc<WorkerContext>,
    stats: &WorkerStats,
) {
    let (idx, client) = (session.idx, session.client);
    let super::kept::Kept::HandOff {
        stream,
        conn,
        guard,
        read,
    } = super::kept::serve(session, ctx.clone()).await
    else {
        return;
    };
    let handoff = Handoff {
        stream: hop_platform::into_std_stream(stream),
        kind,
        client,
        alpn,
        record_reads,
        worker: idx,
        guard,
        tls: Some(conn),
        read,
        counted: true,
    };
    hand_to_control_plane(ctx, stats, handoff);
}

/// Hands a connection to the control plane's tokio routes, for good: the one place a connection
/// leaves its worker, counted by what it is (`hop_dataplane_handoffs_total`,
/// `hop_dataplane_handoffs_by_route_total`). A full queue closes it.
fn hand_to_control_plane(ctx: &WorkerContext, stats: &WorkerStats, handoff: Handoff) {
    let route = handoff_route(&handoff);
    match ctx.handoff.try_send(handoff) {
        Ok(()) => stats.handed_off(route),
        Err(_) => stats.rejected(RejectReason::ControlPlaneBusy),
    }
}

/// What a handed-over connection is, by its kind and its negotiated ALPN.
fn handoff_route(h: &Handoff) -> HandoffRoute {
    use hop_net::tunnel::{
        ALPN_JOIN, ALPN_MYSQL, ALPN_PEER, ALPN_POSTGRES, ALPN_POSTGRES_DIRECT, ALPN_SSH, ALPN_TCP,
        ALPN_TUNNEL, ALPN_TUNNEL_DATA,
    };
    match h.kind {
        HandoffKind::Ssh => return HandoffRoute::Jump,
        HandoffKind::Postgres | HandoffKind::PostgresTls => return HandoffRoute::Session,
        HandoffKind::Tls => {}
    }
    let alpn = h
        .tls
        .as_ref()
        .and_then(|c| c.alpn_protocol())
        .or(h.alpn.as_deref().map(str::as_bytes));
    match alpn {
        Some(p) if p == ALPN_TUNNEL || p == ALPN_TUNNEL_DATA || p == ALPN_PEER => {
            HandoffRoute::Agent
        }
        Some(p)
            if [
                ALPN_TCP,
                ALPN_SSH,
                ALPN_JOIN,
                ALPN_MYSQL,
                ALPN_POSTGRES,
                ALPN_POSTGRES_DIRECT,
            ]
            .contains(&p) =>
        {
            HandoffRoute::Session
        }
        _ => HandoffRoute::Api,
    }
}

/// What became of a TLS handshake on the worker.
enum Terminated {
    Done(Box<rustls::ServerConnection>),
    /// The proxy has no certificate yet: the control plane terminates this one.
    NoConfig,
    /// Shed, failed or timed out (counted); the connection is closed.
    Failed,
}

/// Consumes a PostgreSQL SSLRequest (classification saw all 8 bytes) and answers `S`.
async fn answer_ssl_request(stream: &mut TcpStream) -> bool {
    let (res, _) = stream.read_exact(vec![0u8; 8]).await;
    if res.is_err() {
        return false;
    }
    let (res, _) = stream.write_all(b"S".to_vec()).await;
    res.is_ok()
}

/// Terminates TLS on the worker under the shared handshake slots and the handshake deadline;
/// with `bounded`, reads stop at record boundaries (the session may take the fast path).
async fn terminate(
    stream: &mut TcpStream,
    bounded: bool,
    t: &TlsTermination,
    peer: &SocketAddr,
) -> Terminated {
    let Some(config) = t.config.load_full() else {
        return Terminated::NoConfig;
    };
    let Some(_slot) = t.slots.try_acquire() else {
        t.metrics.handshakes_shed.inc();
        return Terminated::Failed;
    };
    match monoio::time::timeout(
        t.handshake_timeout,
        super::handshake::accept(stream, config, bounded),
    )
    .await
    {
        Ok(Ok(conn)) => {
            t.metrics.tls_handshakes_ok.inc();
            Terminated::Done(Box::new(conn))
        }
        Ok(Err(e)) => {
            t.metrics.tls_handshakes_failed.inc();
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            Terminated::Failed
        }
        Err(_) => {
            t.metrics.tls_handshakes_timed_out.inc();
            tracing::debug!(%peer, "TLS handshake deadline passed");
            Terminated::Failed
        }
    }
}

/// Consumes the request head, writes a complete response, and closes.
async fn answer_http(stream: &mut TcpStream, head_len: usize, response: String) {
    let (res, _) = stream.read_exact(vec![0u8; head_len]).await;
    if res.is_err() {
        return;
    }
    let (res, _) = stream.write_all(response.into_bytes()).await;
    if res.is_ok() {
        let _ = stream.shutdown().await;
    }
}
