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
        let mut rd = got;
        while !rd.is_empty() {
            conn.read_tls(&mut rd)?;
            if let Err(e) = conn.process_new_packets() {
                // rustls queued an alert that says why; the client should hear it.
                let _ = send(stream, &mut conn).await;
                return Err(e.into());
            }
        }
    }
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
