//! A session its worker keeps (`hop-tcp`, `hop-ssh`): the worker that terminated the user's TLS
//! reads the Dial inside its own rustls connection, asks the control plane for the decision and
//! the agent's leg (`crate::relay::on_worker`), answers the user, and relays on its own runtime.
//! An SSH session the proxy must terminate itself is handed to the control plane with its Dial
//! instead, once.
//!
//! Part of the runtime seam (monoio's types appear here, in `worker.rs`, `handshake.rs` and
//! `relay.rs`). The client's descriptor and rustls state never leave the worker; only a duplicate
//! of its socket goes to the control plane, for the live-session watch to shut down. Reads stay
//! within TLS records until the Dial is read (the handshake read that way too), so rustls holds
//! no byte of a later record when its keys are taken for the fast path. This module never
//! decides who may dial what; the control plane does, and audits.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hop_protocols::tunnel::{Dial, DialResult, Frame, TunnelError};
use monoio::buf::IoBufMut;
use monoio::io::AsyncReadRent;
use monoio::net::TcpStream;
use rustls::ServerConnection;

use super::handshake::{READ_CHUNK, send};
use super::limits::ConnectionGuard;
use super::worker::WorkerContext;
use crate::relay::bounded::RecordBoundary;
use crate::relay::on_worker::{KeptRoute, ReadDial, SessionAnswer, SessionRequest};
use crate::relay::{RelayOutcome, TlsRelayJob, keys_of};

/// How long a user has to send the Dial after the handshake.
const DIAL_DEADLINE: Duration = Duration::from_secs(10);

/// Whether the session of a connection the worker terminated stays on this worker, and on
/// which route: ALPN `hop-tcp` or `hop-ssh` with a client certificate, over TLS 1.3 (what the
/// fast path re-seals).
pub(super) fn keeps(conn: &ServerConnection) -> Option<KeptRoute> {
    let route = KeptRoute::of_alpn(conn.alpn_protocol())?;
    (conn.peer_certificates().is_some_and(|c| !c.is_empty())
        && conn.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3))
    .then_some(route)
}

/// What a kept connection became.
pub(super) enum Kept {
    /// Served here to its end (relayed, refused or failed).
    Done,
    /// The control plane terminates its session: hand it over with its Dial.
    HandOff {
        stream: TcpStream,
        conn: Box<ServerConnection>,
        guard: ConnectionGuard,
        dial: ReadDial,
    },
}

/// Why a kept session ended before its relay.
#[derive(Debug, thiserror::Error)]
enum KeptError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("tunnel frame: {0}")]
    Frame(#[from] TunnelError),
    #[error("the client sent {0} instead of a Dial")]
    NotADial(&'static str),
    #[error("the client closed the connection")]
    Closed,
    #[error("no Dial within {0:?}")]
    Deadline(Duration),
}

/// Serves one kept session on `route` to its end, or gives it back for the control plane;
/// `guard` (the connection's place in the limits) is held until the end.
#[allow(clippy::too_many_arguments)]
pub(super) async fn serve(
    idx: usize,
    route: KeptRoute,
    mut stream: TcpStream,
    conn: Box<ServerConnection>,
    client: SocketAddr,
    guard: ConnectionGuard,
    ctx: Arc<WorkerContext>,
) -> Kept {
    let mut conn = *conn;
    let read = monoio::time::timeout(DIAL_DEADLINE, read_dial(&mut stream, &mut conn)).await;
    let (dial, pending) = match read.unwrap_or(Err(KeptError::Deadline(DIAL_DEADLINE))) {
        Ok(d) => d,
        Err(e) => {
            tracing::debug!(%client, error = %e, "no session");
            return Kept::Done;
        }
    };
    let session_id = dial.session_id;
    let Some(answer) = ask(&ctx, idx, route, &stream, &conn, dial.clone(), client).await else {
        let busy = "the proxy is busy or stopping; try again";
        let _ = refuse(&mut stream, &mut conn, session_id, Some(busy)).await;
        return Kept::Done;
    };
    let leg = match answer {
        SessionAnswer::Relay(leg) => leg,
        SessionAnswer::Refused(words) => {
            let _ = refuse(&mut stream, &mut conn, session_id, words.as_deref()).await;
            return Kept::Done;
        }
        SessionAnswer::HandOff => {
            let dial = ReadDial { dial, pending };
            let conn = Box::new(conn);
            return Kept::HandOff {
                stream,
                conn,
                guard,
                dial,
            };
        }
    };
    let said = write_frame(&mut stream, &mut conn, &dial_result(session_id, None)).await;
    let keys = said
        .and_then(|()| keys_of(conn, pending).map_err(|e| std::io::Error::other(e.to_string())));
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
    };
    let kernel_tls = ctx.stats.kernel_tls == super::KernelTls::On;
    super::relay::run(job, ctx.stats.worker(idx), kernel_tls).await;
    drop(guard);
    Kept::Done
}

/// Sends the session's request to the control plane and waits for its answer; `None` when the
/// queue is full or the control plane is gone.
async fn ask(
    ctx: &WorkerContext,
    idx: usize,
    route: KeptRoute,
    stream: &TcpStream,
    conn: &ServerConnection,
    dial: Dial,
    remote: SocketAddr,
) -> Option<SessionAnswer> {
    let peer_cert = conn.peer_certificates()?.first()?.as_ref().to_vec();
    let client_socket = socket2::Socket::from(hop_platform::dup_stream(stream).ok()?);
    let (answer, answered) = tokio::sync::oneshot::channel();
    let req = SessionRequest {
        route,
        dial,
        peer_cert,
        remote,
        worker: idx,
        client_socket,
        answer,
    };
    ctx.sessions.try_send(req).ok()?;
    answered.await.ok()
}

fn dial_result(session_id: [u8; 16], error: Option<&str>) -> Frame {
    Frame::DialResult(DialResult {
        session_id,
        ok: error.is_none(),
        error: error.map(str::to_string),
    })
}

/// Answers the Dial with a refusal (`None`: no answer) and closes the TLS session.
async fn refuse(
    stream: &mut TcpStream,
    conn: &mut ServerConnection,
    session_id: [u8; 16],
    words: Option<&str>,
) -> Result<(), KeptError> {
    if let Some(words) = words {
        write_frame(stream, conn, &dial_result(session_id, Some(words))).await?;
    }
    conn.send_close_notify();
    send(stream, conn).await?;
    Ok(())
}

/// Seals `frame` and writes it (with whatever else rustls has queued).
async fn write_frame(
    stream: &mut TcpStream,
    conn: &mut ServerConnection,
    frame: &Frame,
) -> std::io::Result<()> {
    let mut out = Vec::new();
    frame.encode(&mut out).map_err(std::io::Error::other)?;
    conn.writer().write_all(&out)?;
    send(stream, conn).await
}

/// Reads records until the plaintext holds a whole frame, which must be a Dial; returns it
/// with the plaintext that followed it (the agent gets that first).
async fn read_dial(
    stream: &mut TcpStream,
    conn: &mut ServerConnection,
) -> Result<(Dial, Vec<u8>), KeptError> {
    let mut plain = Vec::new();
    let mut at = RecordBoundary::default();
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    loop {
        take_plaintext(conn, &mut plain)?;
        if !at.mid_record()
            && let Some((frame, used)) = Frame::decode(&plain)?
        {
            let Frame::Dial(dial) = frame else {
                return Err(KeptError::NotADial(frame_name(&frame)));
            };
            plain.drain(..used);
            return Ok((dial, plain));
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
        let mut rd = got;
        while !rd.is_empty() {
            conn.read_tls(&mut rd)?;
            if let Err(e) = conn.process_new_packets() {
                let _ = send(stream, conn).await;
                return Err(e.into());
            }
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

fn frame_name(frame: &Frame) -> &'static str {
    match frame {
        Frame::Hello(_) => "Hello",
        Frame::HelloAck(_) => "HelloAck",
        Frame::Heartbeat { .. } => "Heartbeat",
        Frame::HeartbeatAck { .. } => "HeartbeatAck",
        Frame::Dial(_) => "Dial",
        Frame::DialResult(_) => "DialResult",
        Frame::GoAway(_) => "GoAway",
    }
}
