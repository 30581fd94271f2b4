//! A session its worker keeps (`hop-tcp`, `hop-ssh`, PostgreSQL): the worker that terminated
//! the user's TLS reads the session's opening message (the Dial, or the StartupMessage) inside
//! its own rustls connection, asks the control plane for the decision and the agent's leg
//! (`crate::relay::on_worker`), and relays on its own runtime. An SSH session the proxy must
//! terminate itself is handed to the control plane with what was read instead, once.
//!
//! Part of the runtime seam (monoio's types appear here, in `worker.rs`, `handshake.rs` and
//! `relay.rs`). The client's descriptor and rustls state never leave the worker; only a duplicate
//! of its socket goes to the control plane, for the live-session watch to shut down. Reads stay
//! within TLS records until the opening is read (the handshake read that way too), so rustls
//! holds no byte of a later record when its keys are taken for the fast path. This module never
//! decides who may reach what, nor what the user is told; the control plane does, and audits.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::AsyncReadRent;
use monoio::net::TcpStream;
use rustls::ServerConnection;

use super::handshake::{Fed, FeedError, READ_CHUNK, feed, send};
use super::limits::ConnectionGuard;
use super::route::RejectReason;
use super::worker::WorkerContext;
use crate::relay::bounded::RecordBoundary;
use crate::relay::on_worker::{KeptRoute, OpeningError, SessionAnswer, SessionRequest};
use crate::relay::{RelayOutcome, TlsRelayJob, keys_of};

/// How long a user has to send the Dial after the handshake (PostgreSQL's StartupMessage has
/// `proxy_service.db_startup_timeout`).
const DIAL_DEADLINE: Duration = Duration::from_secs(10);
/// How long the control plane may take to answer beyond `db_startup_timeout` (a wait for an
/// agent's data connection and its Dial exchange); then the worker gives up on the session, and
/// the control plane, finding nobody to answer, ends its side.
const ANSWER_MARGIN: Duration = Duration::from_secs(45);

/// Whether the session of a connection the worker terminated stays on this worker, and on
/// which route: `hop-tcp`, `hop-ssh` or PostgreSQL (`after_ssl_request`, or its ALPNs) with a
/// client certificate, over TLS 1.3 (what the fast path re-seals). Others go to the control
/// plane, a PostgreSQL client without a certificate included (it is told why there).
pub(super) fn keeps(
    conn: &ServerConnection,
    after_ssl_request: bool,
    record_reads: bool,
) -> Option<KeptRoute> {
    // Only a connection read record by record (chosen from the ALPN the client offered first,
    // which need not be the one negotiated) has no byte of a later record inside rustls.
    if !record_reads {
        return None;
    }
    let route = KeptRoute::of(conn.alpn_protocol(), after_ssl_request)?;
    (conn.peer_certificates().is_some_and(|c| !c.is_empty())
        && conn.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3))
    .then_some(route)
}

/// What a kept connection became.
pub(super) enum Kept {
    /// Served here to its end (relayed, refused or failed).
    Done,
    /// The control plane serves its session: hand it over with the plaintext read so far (the
    /// opening message first).
    HandOff {
        stream: TcpStream,
        conn: Box<ServerConnection>,
        guard: ConnectionGuard,
        read: Vec<u8>,
    },
}

/// Why a kept session ended before its relay.
#[derive(Debug, thiserror::Error)]
enum KeptError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error(transparent)]
    Opening(#[from] OpeningError),
    #[error("the client closed the connection")]
    Closed,
    #[error("no opening message within {0:?}")]
    Deadline(Duration),
}

impl From<FeedError> for KeptError {
    fn from(e: FeedError) -> Self {
        match e {
            FeedError::Io(e) => Self::Io(e),
            FeedError::Tls(e) => Self::Tls(e),
        }
    }
}

/// A kept connection on its worker.
pub(super) struct Session {
    pub idx: usize,
    pub route: KeptRoute,
    pub stream: TcpStream,
    pub conn: Box<ServerConnection>,
    pub client: SocketAddr,
    /// The connection's place in the limits, held until the end.
    pub guard: ConnectionGuard,
}

/// Serves one kept session to its end, or gives it back for the control plane.
pub(super) async fn serve(session: Session, ctx: Arc<WorkerContext>) -> Kept {
    let Session {
        idx,
        route,
        mut stream,
        conn,
        client,
        guard,
    } = session;
    let mut conn = *conn;
    let deadline = match route {
        KeptRoute::Postgres => ctx.settings.db_startup_timeout,
        KeptRoute::App | KeptRoute::Ssh => DIAL_DEADLINE,
    };
    let read = read_opening(&mut stream, &mut conn, route);
    let (opening, pending) = match monoio::time::timeout(deadline, read).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => return closed(client, &e),
        Err(_) => return closed(client, &KeptError::Deadline(deadline)),
    };
    let asked = ask(&ctx, idx, route, &conn, opening.clone(), client);
    let answer_deadline = ctx.settings.db_startup_timeout + ANSWER_MARGIN;
    let Some(answer) = monoio::time::timeout(answer_deadline, asked)
        .await
        .unwrap_or_else(|_| {
            tracing::warn!(%client, deadline = ?answer_deadline, "the control plane did not answer a kept session in time");
            None
        })
    else {
        // The control plane is gone or swamped: close (the user may retry).
        let _ = close_or_accept(&mut stream, &mut conn, &[], true).await;
        return Kept::Done;
    };
    let leg = match answer {
        SessionAnswer::Relay(leg) => leg,
        SessionAnswer::Refused { to_client } => {
            let _ = close_or_accept(&mut stream, &mut conn, &to_client, true).await;
            return Kept::Done;
        }
        SessionAnswer::HandOff => {
            let mut read = opening;
            read.extend_from_slice(&pending);
            let conn = Box::new(conn);
            return Kept::HandOff {
                stream,
                conn,
                guard,
                read,
            };
        }
    };
    // Not needed while the session lives (a worker holds many idle ones).
    drop(opening);
    // The live watch may have ended the session already, or end it while the acceptance is
    // sent (a database's start-up answers to a client that does not read): no acceptance, or
    // none finished, and no relay.
    let accepted = {
        let accepting = std::pin::pin!(close_or_accept(&mut stream, &mut conn, &leg.accept, false));
        super::relay::unless_stopped(accepting, &leg.stop)
            .await
            .unwrap_or_else(|| Err(std::io::Error::other(super::relay::STOPPED)))
    };
    let keys = accepted.and_then(|()| {
        keys_of(rustls::Connection::Server(conn), pending).map_err(std::io::Error::other)
    });
    let (client_keys, to_agent) = match keys {
        Ok(k) => k,
        Err(e) => {
            let _ = leg.done.send(RelayOutcome {
                error: Some(format!("the client's leg: {e}")),
                ..RelayOutcome::default()
            });
            return Kept::Done;
        }
    };
    let job = TlsRelayJob {
        client: hop_platform::into_std_stream(stream),
        client_keys,
        agent: leg.stream,
        agent_keys: leg.keys,
        to_agent,
        to_client: leg.to_client,
        idle: leg.idle,
        done: leg.done,
        stop: Some(leg.stop),
    };
    let kernel_tls = ctx.stats.kernel_tls == super::KernelTls::On;
    super::relay::run(job, ctx.stats.worker(idx), kernel_tls).await;
    drop(guard);
    Kept::Done
}

fn closed(client: SocketAddr, e: &KeptError) -> Kept {
    tracing::debug!(%client, error = %e, "no session");
    Kept::Done
}

/// Sends the session's request to the control plane and waits for its answer; `None` when the
/// queue is full or the control plane is gone.
async fn ask(
    ctx: &WorkerContext,
    idx: usize,
    route: KeptRoute,
    conn: &ServerConnection,
    opening: Vec<u8>,
    remote: SocketAddr,
) -> Option<SessionAnswer> {
    let peer_cert = conn.peer_certificates()?.first()?.as_ref().to_vec();
    let (answer, answered) = tokio::sync::oneshot::channel();
    let req = SessionRequest {
        route,
        opening,
        peer_cert,
        remote,
        worker: idx,
        answer,
    };
    if ctx.sessions.try_send(req).is_err() {
        // Full (or the control plane is gone): shed and counted, as a hand-off would be.
        ctx.stats
            .worker(idx)
            .rejected(RejectReason::ControlPlaneBusy);
        return None;
    }
    answered.await.ok()
}

/// Sends `bytes` (may be empty) through the client's TLS, then closes the TLS session if
/// `close`.
async fn close_or_accept(
    stream: &mut TcpStream,
    conn: &mut ServerConnection,
    bytes: &[u8],
    close: bool,
) -> std::io::Result<()> {
    // Piece by piece: rustls holds at most 64 KiB of unsent TLS (a database's start-up answers
    // can be more).
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = conn.writer().write(rest)?;
        if n == 0 && !conn.wants_write() {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        rest = rest.get(n..).unwrap_or_default();
        send(stream, conn).await?;
    }
    if close {
        conn.send_close_notify();
    }
    send(stream, conn).await
}

/// Reads records until the plaintext holds the route's whole opening message; returns it and
/// the plaintext that followed it (the agent gets that first).
async fn read_opening(
    stream: &mut TcpStream,
    conn: &mut ServerConnection,
    route: KeptRoute,
) -> Result<(Vec<u8>, Vec<u8>), KeptError> {
    let mut plain = Vec::new();
    let mut at = RecordBoundary::default();
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    loop {
        take_plaintext(conn, &mut plain)?;
        if !at.mid_record()
            && let Some(len) = route.opening_len(&plain)?
        {
            let rest = plain.split_off(len);
            return Ok((plain, rest));
        }
        let want = at.allowance().min(READ_CHUNK);
        buf.clear();
        let (res, slice) = stream.read(buf.slice_mut(0..want)).await;
        buf = slice.into_inner();
        let n = res?;
        if n == 0 {
            return Err(KeptError::Closed);
        }
        let got = buf.get(..n).unwrap_or_default();
        at.account(got);
        if feed(stream, conn, got).await? == Fed::PeerClosed {
            return Err(KeptError::Closed);
        }
        // A post-handshake message may have queued an answer (never application data).
        send(stream, conn).await?;
    }
}

/// Moves what rustls decrypted into `plain`; the peer's `close_notify` is [`KeptError::Closed`].
fn take_plaintext(conn: &mut ServerConnection, plain: &mut Vec<u8>) -> Result<(), KeptError> {
    let mut chunk = [0u8; 4096];
    loop {
        match conn.reader().read(&mut chunk) {
            Ok(0) => return Err(KeptError::Closed),
            Ok(n) => plain.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The opening read against a real rustls client: a Dial split over two records, plaintext
    //! after it in the second, and a third record sent in the same segment. The worker must
    //! stop at the second record's end, so the third stays in the socket for the fast path.

    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream as StdStream};

    use hop_protocols::tunnel::{Dial, Frame};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig};

    use super::*;

    fn configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
        let ck = rcgen::generate_simple_self_signed(vec!["proxy.test".to_string()]).unwrap();
        let cert: CertificateDer<'static> = ck.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(cert).unwrap();
        let client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Arc::new(server), Arc::new(client))
    }

    /// One TLS record per call: `bytes` sealed by the client.
    fn record(c: &mut ClientConnection, bytes: &[u8]) -> Vec<u8> {
        c.writer().write_all(bytes).unwrap();
        let mut out = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut out).unwrap();
        }
        out
    }

    /// A client whose Finished, `close_notify` and more bytes arrive in one read: rustls takes
    /// nothing after the close, so feeding it those bytes again and again would spin the worker
    /// forever without yielding. The handshake must end at once instead.
    #[test]
    fn a_close_notify_with_bytes_after_it_ends_the_handshake_read_instead_of_spinning() {
        let (server, client) = configs();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let user = std::thread::spawn(move || {
            let mut sock = StdStream::connect(addr).unwrap();
            let name = ServerName::try_from("proxy.test").unwrap();
            let mut c = ClientConnection::new(client, name).unwrap();
            while c.wants_write() {
                c.write_tls(&mut sock).unwrap();
            }
            // The server's flight, up to the point where the client's Finished is queued.
            while c.is_handshaking() {
                c.read_tls(&mut sock).unwrap();
                c.process_new_packets().unwrap();
            }
            c.send_close_notify();
            let mut wire = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut wire).unwrap();
            }
            wire.extend_from_slice(&[23, 3, 3, 0x10, 0x00]);
            wire.extend_from_slice(&[0u8; 8192]);
            sock.write_all(&wire).unwrap();
            sock
        });
        let (sock, _) = listener.accept().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let ended = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .enable_timer()
                .build()
                .unwrap()
                .block_on(async move {
                    sock.set_nonblocking(true).unwrap();
                    let mut stream = TcpStream::from_std(sock).unwrap();
                    super::super::handshake::accept(&mut stream, server, false)
                        .await
                        .map(|conn| conn.is_handshaking())
                        .map_err(|e| e.to_string())
                });
            let _ = tx.send(ended);
        });
        let ended = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the handshake read still spins after the client's close");
        // The handshake completed before the close: the route gets the connection and sees
        // the end.
        assert_eq!(ended, Ok(false));
        drop(user.join().unwrap());
    }

    #[test]
    fn the_opening_is_read_up_to_its_record_and_no_further() {
        let (server, client) = configs();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut dial = Vec::new();
        Frame::Dial(Dial {
            session_id: [9; 16],
            target: "echo".into(),
            client_addr: "127.0.0.1:5".parse().unwrap(),
        })
        .encode(&mut dial)
        .unwrap();
        let (head, tail) = dial.split_at(7);
        let (head, tail) = (head.to_vec(), tail.to_vec());
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let user = std::thread::spawn(move || {
            let mut sock = StdStream::connect(addr).unwrap();
            let name = ServerName::try_from("proxy.test").unwrap();
            let mut c = ClientConnection::new(client, name).unwrap();
            while c.is_handshaking() {
                c.complete_io(&mut sock).unwrap();
            }
            let mut wire = record(&mut c, &head);
            wire.extend(record(&mut c, &[tail.as_slice(), b"after"].concat()));
            let third = record(&mut c, b"later");
            wire.extend(&third);
            sock.write_all(&wire).unwrap();
            done_rx.recv().unwrap();
            third.len()
        });
        let (sock, _) = listener.accept().unwrap();
        let (opening, rest, left) = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(async move {
                sock.set_nonblocking(true).unwrap();
                let mut stream = TcpStream::from_std(sock).unwrap();
                let mut conn = super::super::handshake::accept(&mut stream, server, true)
                    .await
                    .unwrap();
                let (opening, rest) = read_opening(&mut stream, &mut conn, KeptRoute::App)
                    .await
                    .unwrap();
                let mut std = hop_platform::into_std_stream(stream);
                std.set_nonblocking(false).unwrap();
                std.set_read_timeout(Some(Duration::from_millis(500)))
                    .unwrap();
                let mut left = vec![0u8; 4096];
                let n = std.read(&mut left).unwrap();
                left.truncate(n);
                (opening, rest, left)
            });
        done_tx.send(()).unwrap();
        let third_len = user.join().unwrap();
        assert_eq!(opening, dial);
        assert_eq!(rest, b"after");
        assert_eq!(
            left.len(),
            third_len,
            "the third record stays in the socket, whole"
        );
        assert_eq!(left.first(), Some(&23), "an application-data record");
    }
}
