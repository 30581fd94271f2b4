//! TLS termination on a worker: the server handshake of a classified TLS connection, run with
//! rustls on the worker's runtime, before the connection goes to its route.
//!
//! Part of the runtime seam (monoio's types appear here, in `worker.rs`, `kept.rs` and
//! `relay.rs`). The handshake holds one of the shared handshake slots
//! (`max_concurrent_handshakes`; a connection that finds none is shed at once), runs under the
//! handshake deadline, and on success gives back the rustls connection with whatever the client
//! sent after its Finished still inside it. A
//! connection whose session may later take the relay's fast path is read one TLS record at a
//! time ([`RecordBoundary`]), so that no byte of a later record sits in rustls when the fast path
//! takes the socket over.

use std::sync::Arc;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use rustls::{ServerConfig, ServerConnection};

use crate::relay::bounded::RecordBoundary;

/// The most bytes one handshake read takes (a full TLS record with its header).
pub(super) const READ_CHUNK: usize = hop_protocols::tls_record::MAX_RECORD_LEN;

/// Why a handshake on a worker failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("TLS handshake: {0}")]
    Tls(#[from] rustls::Error),
    #[error("TLS handshake: {0}")]
    Io(#[from] std::io::Error),
    #[error("TLS handshake: the client closed the connection")]
    Closed,
}

/// Runs the server handshake on `stream`. With `bounded`, reads stop at record boundaries.
pub(super) async fn accept(
    stream: &mut TcpStream,
    config: Arc<ServerConfig>,
    bounded: bool,
) -> Result<ServerConnection, HandshakeError> {
    let mut conn = ServerConnection::new(config)?;
    let mut at = RecordBoundary::default();
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    loop {
        send(stream, &mut conn).await?;
        if !conn.is_handshaking() {
            return Ok(conn);
        }
        let want = if bounded {
            at.allowance().min(READ_CHUNK)
        } else {
            READ_CHUNK
        };
        buf.clear();
        let (res, slice) = stream.read(buf.slice_mut(0..want)).await;
        buf = slice.into_inner();
        let n = res?;
        if n == 0 {
            return Err(HandshakeError::Closed);
        }
        let got = buf.get(..n).unwrap_or_default();
        at.account(got);
        if feed(stream, &mut conn, got).await? == Fed::PeerClosed {
            // Plaintext sent before the close stays in rustls for the route, which then sees
            // the end; a handshake the peer gave up on ends here.
            send(stream, &mut conn).await?;
            return match conn.is_handshaking() {
                true => Err(HandshakeError::Closed),
                false => Ok(conn),
            };
        }
    }
}

/// What one read fed to rustls ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fed {
    /// Every byte was taken.
    All,
    /// The peer sent `close_notify`: rustls takes nothing after it.
    PeerClosed,
}

/// Why bytes could not be fed to rustls.
#[derive(Debug, thiserror::Error)]
pub(super) enum FeedError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
}

impl From<FeedError> for HandshakeError {
    fn from(e: FeedError) -> Self {
        match e {
            FeedError::Io(e) => Self::Io(e),
            FeedError::Tls(e) => Self::Tls(e),
        }
    }
}

/// Feeds the bytes of one read to rustls and processes them. Stops at the peer's
/// `close_notify`: rustls then ignores whatever follows (RFC 8446 §6.1) and takes no more bytes,
/// so feeding it again would spin without yielding, and one client could stall its worker. On
/// a TLS error the alert rustls queued is sent first: the client should hear why.
pub(super) async fn feed(
    stream: &mut TcpStream,
    conn: &mut ServerConnection,
    mut rd: &[u8],
) -> Result<Fed, FeedError> {
    while !rd.is_empty() {
        let taken = conn.read_tls(&mut rd)?;
        match conn.process_new_packets() {
            Err(e) => {
                let _ = send(stream, conn).await;
                return Err(e.into());
            }
            Ok(state) if state.peer_has_closed() || taken == 0 => return Ok(Fed::PeerClosed),
            Ok(_) => {}
        }
    }
    Ok(Fed::All)
}

/// Writes every TLS byte rustls has queued.
pub(super) async fn send(
    stream: &mut TcpStream,
    conn: &mut ServerConnection,
) -> std::io::Result<()> {
    while conn.wants_write() {
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out)?;
        }
        let (res, _) = stream.write_all(out).await;
        res?;
    }
    Ok(())
}
