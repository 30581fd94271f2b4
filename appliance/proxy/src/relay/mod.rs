//! The relay's fast path: a session whose two TLS connections both end at the proxy moves its
//! bytes on a data-plane worker, record by record, without rustls and without copying payloads.
//!
//! This module owns taking the traffic keys from rustls ([`keys_of`], [`agent_leg`]), the
//! messages between a worker that keeps a session and the control plane ([`on_worker`]), and the
//! hand-off of a session whose TLS the control plane holds (where its Dial exchange, RBAC and
//! audit ran): deciding whether it can take the fast path (both connections read only whole
//! records so far, TLS 1.3 with a cipher [`aead`] implements, nothing queued to send), and the
//! [`TlsRelayJob`] a worker then runs (`dataplane/relay.rs`). The connections' descriptors move
//! to the worker; the bytes do not. A session that cannot take the fast path stays on the tokio
//! relay, as before.

#![deny(clippy::disallowed_types)] // the data plane's workers never block on a lock (clippy.toml)

pub mod on_worker;

pub use hop_net::records::{ConnectionKeys, DirectionSecret, HandOffError, aead, bounded, keys_of};

use std::net::SocketAddr;
use std::time::Duration;

use rustls::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::tunnels::AgentStream;
use hop_net::tunnel::FramedStream;

/// Ends a session a worker relays, from the control plane: the live-session watch stops it, and
/// the worker drops its relay, which shuts both sockets down and closes them. It needs no
/// duplicate of the session's descriptors (a session kept on its worker holds two, not four), and
/// a stop that comes before the relay starts is kept until it does.
#[derive(Debug, Clone, Default)]
pub struct SessionStop(std::sync::Arc<StopState>);

/// Whether the session was stopped, and the worker's wake-up.
#[derive(Debug, Default)]
struct StopState {
    stopped: std::sync::atomic::AtomicBool,
    wake: tokio::sync::Notify,
}

impl SessionStop {
    /// Ends the session (now, or as soon as the worker looks).
    pub fn stop(&self) {
        self.0
            .stopped
            .store(true, std::sync::atomic::Ordering::Release);
        self.0.wake.notify_waiters();
    }

    /// Has [`SessionStop::stop`] been called?
    pub fn is_stopped(&self) -> bool {
        self.0.stopped.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Completes once [`SessionStop::stop`] was called (at once if it was).
    pub async fn stopped(&self) {
        let woken = self.0.wake.notified();
        let mut woken = std::pin::pin!(woken);
        // Registered before the flag is read: a stop in between still wakes it.
        woken.as_mut().enable();
        if self.is_stopped() {
            return;
        }
        woken.await;
    }
}

/// One session for a worker to relay.
#[derive(Debug)]
pub struct TlsRelayJob {
    pub client: std::net::TcpStream,
    pub client_keys: ConnectionKeys,
    pub agent: std::net::TcpStream,
    pub agent_keys: ConnectionKeys,
    /// Plaintext the client sent that rustls had already decrypted: the agent gets it first.
    pub to_agent: Vec<u8>,
    /// Plaintext the agent sent that rustls had already decrypted: the client gets it first.
    pub to_client: Vec<u8>,
    /// End the session when no byte moved either way for this long.
    pub idle: Option<Duration>,
    /// Where the worker reports the session's end.
    pub done: oneshot::Sender<RelayOutcome>,
    /// How the control plane ends the session early, if not through the sockets themselves.
    pub stop: Option<SessionStop>,
}

/// How a relayed session ended.
#[derive(Debug, Default)]
pub struct RelayOutcome {
    /// Application bytes from the client to the agent.
    pub up: u64,
    /// Application bytes from the agent to the client.
    pub down: u64,
    /// Why the session ended abnormally, if it did.
    pub error: Option<String>,
}

/// Where jobs go: one bounded queue per data-plane worker.
#[derive(Debug, Clone)]
pub struct RelayHandle {
    queues: std::sync::Arc<Vec<mpsc::Sender<TlsRelayJob>>>,
}

impl RelayHandle {
    pub fn new(queues: Vec<mpsc::Sender<TlsRelayJob>>) -> Self {
        Self {
            queues: std::sync::Arc::new(queues),
        }
    }

    /// A place in worker `worker`'s queue (or another's when it is full), if there is one.
    fn reserve(&self, worker: usize) -> Option<mpsc::Permit<'_, TlsRelayJob>> {
        let n = self.queues.len();
        (0..n)
            .map(|i| (worker + i) % n)
            .find_map(|i| self.queues.get(i).and_then(|q| q.try_reserve().ok()))
    }
}

/// Should a TLS connection offering `alpn` (its ClientHello's first protocol) be read one record
/// at a time from its handshake on? Yes for the routes whose sessions may take the fast path.
pub fn reads_by_record(alpn: Option<&str>) -> bool {
    use hop_net::tunnel::{
        ALPN_PEER, ALPN_POSTGRES, ALPN_POSTGRES_DIRECT, ALPN_SSH, ALPN_TCP, ALPN_TUNNEL_DATA,
    };
    alpn.is_some_and(|p| {
        [
            ALPN_PEER,
            ALPN_TCP,
            ALPN_SSH,
            ALPN_TUNNEL_DATA,
            ALPN_POSTGRES,
            ALPN_POSTGRES_DIRECT,
        ]
        .contains(&p.as_bytes())
    })
}

/// Why a session stays on the tokio relay.
fn not_eligible(conn: &AgentStream) -> Option<&'static str> {
    let (io, tls) = conn.get_ref();
    hop_net::records::stays_on_rustls(io, tls)
}

/// Why a relayed session ended with an error (the bytes it moved may be unknown).
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The move to the fast path failed half-way; the session is lost.
    #[error("lost moving to the fast path: {0}")]
    HandOff(#[source] HandOffError),
    /// The worker relaying the session went away without reporting.
    #[error("the data-plane worker stopped")]
    WorkerStopped,
    /// A connection of the tokio relay failed.
    #[error("{0}")]
    Io(#[source] std::io::Error),
}

fn take_keys(
    stream: AgentStream,
    pending: Vec<u8>,
) -> Result<(std::net::TcpStream, ConnectionKeys, Vec<u8>), HandOffError> {
    let (io, conn): (_, Connection) = stream.into_inner();
    let (keys, pending) = keys_of(conn, pending)?;
    let tcp = io.into_inner().into_std().map_err(HandOffError::Release)?;
    Ok((tcp, keys, pending))
}

/// Why an agent's leg cannot join a session a worker keeps.
#[derive(Debug, thiserror::Error)]
pub enum AgentLegError {
    #[error("the agent's connection cannot take the fast path: {0}")]
    NotEligible(&'static str),
    #[error(transparent)]
    HandOff(#[from] HandOffError),
}

/// The agent's leg of a session a worker keeps (`on_worker`), past its `DialResult`: the
/// descriptor, the traffic keys, and what the agent already sent after its answer.
pub fn agent_leg(
    agent: FramedStream<AgentStream>,
) -> Result<(std::net::TcpStream, ConnectionKeys, Vec<u8>), AgentLegError> {
    if let Some(why) = not_eligible(agent.get_ref()) {
        return Err(AgentLegError::NotEligible(why));
    }
    let (a, pending) = agent.into_inner();
    Ok(take_keys(a, pending)?)
}

/// What became of a session offered to the fast path.
pub enum Handed {
    /// A worker relays it; the receiver reports the end.
    Taken(oneshot::Receiver<RelayOutcome>),
    /// It stays on the tokio relay, for the reason given.
    Kept(
        FramedStream<AgentStream>,
        FramedStream<AgentStream>,
        &'static str,
    ),
    /// Taking it over failed half-way; the session is lost.
    Failed(HandOffError),
}

/// Offers a session (after its Dial exchange) to worker `worker`'s fast path.
pub fn hand_off(
    handle: Option<&RelayHandle>,
    worker: usize,
    client: FramedStream<AgentStream>,
    agent: FramedStream<AgentStream>,
    idle: Option<Duration>,
    remote: SocketAddr,
) -> Handed {
    let Some(handle) = handle else {
        return keep(client, agent, "no data plane");
    };
    if let Some(why) = not_eligible(client.get_ref()).or_else(|| not_eligible(agent.get_ref())) {
        return keep(client, agent, why);
    }
    let Some(permit) = handle.reserve(worker) else {
        return keep(client, agent, "the workers' relay queues are full");
    };
    let (c, c_pending) = client.into_inner();
    let (a, a_pending) = agent.into_inner();
    let taken = take_keys(c, c_pending).and_then(|(client, client_keys, to_agent)| {
        take_keys(a, a_pending).map(|(agent, agent_keys, to_client)| {
            (client, client_keys, to_agent, agent, agent_keys, to_client)
        })
    });
    match taken {
        Ok((client, client_keys, to_agent, agent, agent_keys, to_client)) => {
            let (done, report) = oneshot::channel();
            permit.send(TlsRelayJob {
                client,
                client_keys,
                agent,
                agent_keys,
                to_agent,
                to_client,
                idle,
                done,
                stop: None,
            });
            Handed::Taken(report)
        }
        Err(e) => {
            tracing::warn!(%remote, error = %e, "a session could not move to the fast path");
            Handed::Failed(e)
        }
    }
}

/// Where a session's bytes go once its Dial exchange is done.
pub enum Relaying {
    /// A worker relays it; [`finished`] waits for its end.
    Worker(oneshot::Receiver<RelayOutcome>),
    /// It stays on the tokio relay ([`relay_here`]).
    Here(FramedStream<AgentStream>, FramedStream<AgentStream>),
    /// Taking it over failed half-way; the session is lost.
    Failed(RelayError),
}

/// Offers a session to worker `worker`'s fast path, counting where it went in `metrics`.
pub fn start(
    fast_path: Option<(&RelayHandle, usize)>,
    client: FramedStream<AgentStream>,
    agent: FramedStream<AgentStream>,
    idle: Option<Duration>,
    remote: SocketAddr,
    metrics: &hop_metrics::Metrics,
) -> Relaying {
    let (handle, worker) = fast_path.map_or((None, 0), |(h, w)| (Some(h), w));
    match hand_off(handle, worker, client, agent, idle, remote) {
        Handed::Taken(report) => {
            metrics.relay_fast_sessions.inc();
            Relaying::Worker(report)
        }
        Handed::Kept(client, agent, why) => {
            metrics.relay_tokio_sessions.inc();
            tracing::debug!(%remote, reason = why, "session relayed on the control plane");
            Relaying::Here(client, agent)
        }
        Handed::Failed(e) => Relaying::Failed(RelayError::HandOff(e)),
    }
}

/// Waits for a worker's report: the application bytes moved (up, down). A session that ended
/// with an error still reports what it moved (the error is logged).
pub async fn finished(report: oneshot::Receiver<RelayOutcome>) -> Result<(u64, u64), RelayError> {
    let outcome = report.await.map_err(|_| RelayError::WorkerStopped)?;
    if let Some(e) = &outcome.error {
        tracing::debug!(error = %e, up = outcome.up, down = outcome.down, "relayed session ended with an error");
    }
    Ok((outcome.up, outcome.down))
}

/// The tokio relay, for sessions the fast path did not take.
pub async fn relay_here(
    client: FramedStream<AgentStream>,
    agent: FramedStream<AgentStream>,
    idle: Option<Duration>,
) -> Result<(u64, u64), RelayError> {
    let (c, c_pending) = client.into_inner();
    let (a, a_pending) = agent.into_inner();
    hop_net::tunnel::relay_with_idle_timeout(c, c_pending, a, a_pending, idle)
        .await
        .map_err(RelayError::Io)
}

/// [`start`], then waits for the session's end wherever it runs.
pub async fn run_session(
    fast_path: Option<(&RelayHandle, usize)>,
    client: FramedStream<AgentStream>,
    agent: FramedStream<AgentStream>,
    idle: Option<Duration>,
    remote: SocketAddr,
    metrics: &hop_metrics::Metrics,
) -> Result<(u64, u64), RelayError> {
    match start(fast_path, client, agent, idle, remote, metrics) {
        Relaying::Worker(report) => finished(report).await,
        Relaying::Here(client, agent) => relay_here(client, agent, idle).await,
        Relaying::Failed(e) => Err(e),
    }
}

fn keep(
    mut client: FramedStream<AgentStream>,
    mut agent: FramedStream<AgentStream>,
    why: &'static str,
) -> Handed {
    // Staying on tokio: read freely again.
    client.get_mut().get_mut().0.unbound();
    agent.get_mut().get_mut().0.unbound();
    Handed::Kept(client, agent, why)
}

#[cfg(test)]
mod tests {
    //! The fast path's keys against rustls itself: records a rustls client sealed for one
    //! proxy-side connection are re-sealed for another and read by that one's rustls client.

    use std::io::{Read, Write};
    use std::sync::Arc;

    use hop_protocols::tls_record::{reprotect, seal_application_data};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

    use super::DirectionSecret;
    use super::aead::RecordKey;

    fn configs(suite: rustls::SupportedCipherSuite) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
        let ck = rcgen::generate_simple_self_signed(vec!["proxy.test".to_string()]).unwrap();
        let cert: CertificateDer<'static> = ck.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
        let mut provider = rustls::crypto::aws_lc_rs::default_provider();
        provider.cipher_suites = vec![suite];
        let provider = Arc::new(provider);
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        server.enable_secret_extraction = true;
        let mut roots = RootCertStore::empty();
        roots.add(cert).unwrap();
        let client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Arc::new(server), Arc::new(client))
    }

    fn wire_of(conn: &mut impl WriteTls) -> Vec<u8> {
        let mut out = Vec::new();
        while conn.wants() {
            conn.write_to(&mut out);
        }
        out
    }

    trait WriteTls {
        fn wants(&self) -> bool;
        fn write_to(&mut self, out: &mut Vec<u8>);
    }
    impl WriteTls for ClientConnection {
        fn wants(&self) -> bool {
            self.wants_write()
        }
        fn write_to(&mut self, out: &mut Vec<u8>) {
            self.write_tls(out).unwrap();
        }
    }
    impl WriteTls for ServerConnection {
        fn wants(&self) -> bool {
            self.wants_write()
        }
        fn write_to(&mut self, out: &mut Vec<u8>) {
            self.write_tls(out).unwrap();
        }
    }

    /// Feeds `bytes` to `c`, returning the plaintext it yields (and whether it closed).
    fn feed_client(c: &mut ClientConnection, mut bytes: &[u8]) -> (Vec<u8>, bool) {
        let mut got = Vec::new();
        let mut closed = false;
        while !bytes.is_empty() {
            c.read_tls(&mut bytes).unwrap();
            c.process_new_packets().unwrap();
            let (more, end) = read_all(c);
            got.extend(more);
            closed |= end;
        }
        (got, closed)
    }

    fn feed_server(s: &mut ServerConnection, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            s.read_tls(&mut bytes).unwrap();
            s.process_new_packets().unwrap();
        }
    }

    /// A finished handshake, the server's tickets delivered.
    fn pair(
        server: &Arc<ServerConfig>,
        client: &Arc<ClientConfig>,
    ) -> (ClientConnection, ServerConnection) {
        let name = ServerName::try_from("proxy.test").unwrap();
        let mut c = ClientConnection::new(client.clone(), name).unwrap();
        let mut s = ServerConnection::new(server.clone()).unwrap();
        while c.is_handshaking() || s.is_handshaking() || s.wants_write() {
            let w = wire_of(&mut c);
            feed_server(&mut s, &w);
            let w = wire_of(&mut s);
            let _ = feed_client(&mut c, &w);
        }
        (c, s)
    }

    fn keys(s: ServerConnection) -> (RecordKey, RecordKey) {
        let secrets = s.dangerous_extract_secrets().unwrap();
        (
            RecordKey::new(secrets.rx.0, &secrets.rx.1).unwrap(),
            RecordKey::new(secrets.tx.0, &secrets.tx.1).unwrap(),
        )
    }

    fn read_all(c: &mut ClientConnection) -> (Vec<u8>, bool) {
        let mut got = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match c.reader().read(&mut buf) {
                Ok(0) => return (got, true),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return (got, false),
                Err(e) => panic!("{e}"),
            }
        }
    }

    fn both_ways(suite: rustls::SupportedCipherSuite) {
        let (server, client) = configs(suite);
        let (mut user, user_side) = pair(&server, &client);
        let (mut agent, agent_side) = pair(&server, &client);
        let (mut user_rx, mut user_tx) = keys(user_side);
        let (mut agent_rx, mut agent_tx) = keys(agent_side);

        // Plaintext the proxy had already read goes first, sealed for the agent.
        let mut to_agent = Vec::new();
        seal_application_data(b"dial leftovers;", &mut agent_tx, &mut to_agent).unwrap();
        let (first, _) = feed_client(&mut agent, &to_agent);
        assert_eq!(first, b"dial leftovers;");

        let up: Vec<u8> = (0..60_000u32).map(|i| (i % 251) as u8).collect();
        user.writer().write_all(&up).unwrap();
        let mut wire = wire_of(&mut user);
        let r = reprotect(&mut wire, &mut user_rx, &mut agent_tx).unwrap();
        assert_eq!(
            (r.consumed, r.payload, r.closed),
            (wire.len(), up.len(), false)
        );
        let (got, closed) = feed_client(&mut agent, &wire[..r.produced]);
        assert_eq!(got, up);
        assert!(!closed);

        agent.writer().write_all(b"and back").unwrap();
        agent.send_close_notify();
        let mut wire = wire_of(&mut agent);
        let r = reprotect(&mut wire, &mut agent_rx, &mut user_tx).unwrap();
        assert!(r.closed);
        let (got, closed) = feed_client(&mut user, &wire[..r.produced]);
        assert_eq!(got, b"and back");
        assert!(closed, "the close_notify passes through");
    }

    #[test]
    fn records_cross_between_rustls_connections_aes_128_gcm() {
        both_ways(rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256);
    }

    #[test]
    fn records_cross_between_rustls_connections_aes_256_gcm() {
        both_ways(rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_256_GCM_SHA384);
    }

    #[test]
    fn records_cross_between_rustls_connections_chacha20() {
        both_ways(rustls::crypto::aws_lc_rs::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256);
    }

    #[test]
    fn a_tampered_record_is_refused() {
        let (server, client) =
            configs(rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256);
        let (mut user, user_side) = pair(&server, &client);
        let (_agent, agent_side) = pair(&server, &client);
        let (mut user_rx, _) = keys(user_side);
        let (_, mut agent_tx) = keys(agent_side);
        user.writer().write_all(b"payload").unwrap();
        let mut wire = wire_of(&mut user);
        let last = wire.len() - 1;
        wire[last] ^= 1;
        let err = reprotect(&mut wire, &mut user_rx, &mut agent_tx).unwrap_err();
        assert!(err.to_string().contains("does not decrypt"), "{err}");
    }

    /// Kernel TLS with keys from rustls, where the kernel has it (skipped elsewhere, such as on
    /// these build machines, which lack CONFIG_TLS): the kernel opens what a rustls client
    /// sealed, seals what the rustls client then opens, and hands over the close_notify alert.
    #[test]
    fn kernel_tls_where_the_kernel_has_it() {
        use hop_platform::ktls;
        if let Err(why) = ktls::probe() {
            eprintln!("skipped: kernel TLS unavailable here ({why})");
            return;
        }
        let (server, client) =
            configs(rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let user = std::thread::spawn(move || {
            let sock = std::net::TcpStream::connect(addr).unwrap();
            let name = ServerName::try_from("proxy.test").unwrap();
            let conn = ClientConnection::new(client, name).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, sock);
            while tls.conn.is_handshaking() {
                tls.conn.complete_io(&mut tls.sock).unwrap();
            }
            go_rx.recv().unwrap();
            tls.write_all(b"hello kernel").unwrap();
            tls.flush().unwrap();
            let mut five = [0u8; 5];
            tls.read_exact(&mut five).unwrap();
            assert_eq!(&five, b"world");
            tls.conn.send_close_notify();
            tls.conn.complete_io(&mut tls.sock).unwrap();
        });
        let (mut sock, _) = listener.accept().unwrap();
        let mut conn = ServerConnection::new(server).unwrap();
        while conn.is_handshaking() || conn.wants_write() {
            conn.complete_io(&mut sock).unwrap();
        }
        let secrets = conn.dangerous_extract_secrets().unwrap();
        let tx = DirectionSecret {
            seq: secrets.tx.0,
            secret: secrets.tx.1,
        };
        let rx = DirectionSecret {
            seq: secrets.rx.0,
            secret: secrets.rx.1,
        };
        ktls::enable(&sock, &tx.kernel_key().unwrap(), &rx.kernel_key().unwrap()).unwrap();
        go_tx.send(()).unwrap();
        let mut got = [0u8; 12];
        sock.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello kernel");
        sock.write_all(b"world").unwrap();
        // The close_notify is not application data: read fails, recv_control takes it.
        let mut one = [0u8; 1];
        let err = sock.read(&mut one).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
        let mut rec = [0u8; 16];
        let (kind, len) = ktls::recv_control(&sock, &mut rec).unwrap();
        assert_eq!((kind, &rec[..len]), (ktls::ALERT, &[1u8, 0][..]));
        user.join().unwrap();
    }
}
