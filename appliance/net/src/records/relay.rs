//! Relaying a session between a TLS 1.3 connection whose keys left rustls and a plain socket:
//! an agent's application (TCP apps), or the local port of `hop proxy app`.
//!
//! Each direction reads what its socket has (up to [`READ_AHEAD`] at a time, one `read` for
//! several records where rustls reads 4 KiB), then either opens the records in place and writes
//! their data to the plain side ([`open_records`]), or seals what the plain side sent into
//! records and writes them in one go ([`seal_application_data`]). No buffer is held while a
//! direction waits for bytes, so an idle session costs no more than its two sockets.
//!
//! Ends, as rustls would: a `close_notify` from the peer shuts down writing to the plain side
//! (the other direction goes on); the plain side's end of file is sent as `close_notify` and a
//! TCP half-close. A connection that ends without `close_notify`, a record that does not
//! decrypt, a post-handshake message or an alert ends the session with an error (nothing after
//! it can be trusted): never silently.

use std::io;

use hop_protocols::tls_record::{
    MAX_RECORD_LEN, ProtectionError, RecordError, open_records, seal_application_data,
    seal_close_notify,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};

use super::ConnectionKeys;
use super::aead::{RecordKey, UnsupportedCipher};

/// The most one direction reads before it writes what it read.
pub const READ_AHEAD: usize = 64 * 1024;
/// The first read of a direction waking from quiet: enough for a keystroke, a small request or a
/// `close_notify`. A read that fills it goes on in a [`READ_AHEAD`] buffer, so a small message
/// never costs a large allocation (whose pages the allocator may have to fault in again).
const FIRST_READ: usize = 4 * 1024;

/// Why a relayed session ended with an error.
#[derive(Debug, thiserror::Error)]
pub enum RecordRelayError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("the proxy's TLS records: {0}")]
    Record(#[from] RecordError),
    #[error("sealing a record: {0}")]
    Seal(#[from] ProtectionError),
    #[error("the TLS connection ended without close_notify (truncated)")]
    Truncated,
    #[error("{0}")]
    Cipher(#[from] UnsupportedCipher),
}

/// Relays until both directions end: records from `tls` (opened with `keys.rx`) to `plain`,
/// and `plain`'s bytes sealed with `keys.tx` to `tls`. `to_plain` is plaintext rustls had already
/// decrypted (written to `plain` first); `to_tls` is plaintext for the peer, sealed first.
/// Returns the application bytes moved (to `plain`, to `tls`). The secrets are dropped once the
/// record keys are made.
pub async fn relay(
    mut tls: TcpStream,
    keys: ConnectionKeys,
    to_plain: Vec<u8>,
    plain: &mut TcpStream,
    to_tls: Vec<u8>,
) -> Result<(u64, u64), RecordRelayError> {
    let (open, seal) = (keys.rx.record_key()?, keys.tx.record_key()?);
    drop(keys);
    let (tls_r, tls_w) = tls.split();
    let (plain_r, plain_w) = plain.split();
    let down = open_into(tls_r, open, plain_w, to_plain);
    let up = seal_from(plain_r, seal, tls_w, to_tls);
    tokio::try_join!(down, up)
}

/// What one round of reads left: the bytes are in the caller's buffer.
#[derive(Default)]
struct Reads {
    /// The peer ended its side (end of file).
    eof: bool,
    /// A read failed after others had read bytes: reported once those bytes are passed on.
    failed: Option<io::Error>,
}

/// Reads what `from` has into `buf`: waits for the first bytes ([`FIRST_READ`] for a direction
/// waking from quiet), then reads on without waiting while each read fills the space it had,
/// growing once to `max`. A short read ends the round: it shows the socket drained, and tokio
/// then forgets the socket's readiness, so no `read` is spent only to learn that it would block.
/// An error with nothing read is returned at once; after bytes, it waits in [`Reads::failed`]
/// (the bytes a peer sent before a reset still count).
async fn read_some(from: &mut ReadHalf<'_>, buf: &mut Vec<u8>, max: usize) -> io::Result<Reads> {
    if buf.capacity() == 0 {
        // Quiet: wait without a buffer, so that an idle direction holds none.
        from.readable().await?;
    }
    if buf.capacity() == buf.len() {
        buf.reserve(FIRST_READ);
    }
    let mut asked = buf.capacity() - buf.len();
    let mut got = from.read_buf(buf).await?;
    while got != 0 && got == asked && buf.len() < max {
        if buf.len() == buf.capacity() {
            buf.reserve(max - buf.len());
        }
        asked = buf.capacity() - buf.len();
        got = match read_now(from, buf) {
            None => return Ok(Reads::default()),
            Some(Ok(n)) => n,
            Some(Err(e)) => {
                return Ok(Reads {
                    eof: false,
                    failed: Some(e),
                });
            }
        };
    }
    Ok(Reads {
        eof: got == 0,
        failed: None,
    })
}

/// One read of what `from` holds now; `None` when it holds nothing (tokio saw `EAGAIN`).
fn read_now(from: &mut ReadHalf<'_>, buf: &mut Vec<u8>) -> Option<io::Result<usize>> {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    // Polled once, without a task to wake: the caller waits with its own task when it has to.
    let mut cx = Context::from_waker(Waker::noop());
    match std::pin::pin!(from.read_buf(buf)).poll(&mut cx) {
        Poll::Ready(read) => Some(read),
        Poll::Pending => None,
    }
}

/// One direction: the peer's records, opened, to the plain side.
async fn open_into(
    mut from: ReadHalf<'_>,
    mut key: RecordKey,
    mut to: WriteHalf<'_>,
    first: Vec<u8>,
) -> Result<u64, RecordRelayError> {
    let mut moved = first.len() as u64;
    if !first.is_empty() {
        to.write_all(&first).await?;
    }
    drop(first);
    // Empty, with no capacity, whenever the last read ended between records.
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let reads = read_some(&mut from, &mut buf, READ_AHEAD + MAX_RECORD_LEN).await?;
        let opened = open_records(&mut buf, &mut key)?;
        if opened.produced > 0 {
            to.write_all(buf.get(..opened.produced).unwrap_or_default())
                .await?;
            moved += opened.produced as u64;
        }
        if opened.closed {
            // Whatever came after close_notify (a reset included) is not the session's.
            to.shutdown().await?;
            return Ok(moved);
        }
        if let Some(e) = reads.failed {
            return Err(e.into());
        }
        if reads.eof {
            return Err(RecordRelayError::Truncated);
        }
        buf.drain(..opened.consumed);
        if buf.is_empty() {
            buf = Vec::new();
        }
    }
}

/// The other direction: the plain side's bytes, sealed, to the peer; its end of file as
/// `close_notify` and a half-close.
async fn seal_from(
    mut from: ReadHalf<'_>,
    mut key: RecordKey,
    mut to: WriteHalf<'_>,
    first: Vec<u8>,
) -> Result<u64, RecordRelayError> {
    let mut moved = send_sealed(&first, &mut key, &mut to).await?;
    drop(first);
    loop {
        let mut data = Vec::new();
        let reads = read_some(&mut from, &mut data, READ_AHEAD).await?;
        moved += send_sealed(&data, &mut key, &mut to).await?;
        if let Some(e) = reads.failed {
            return Err(e.into());
        }
        if reads.eof {
            let mut wire = Vec::new();
            seal_close_notify(&mut key, &mut wire)?;
            to.write_all(&wire).await?;
            to.shutdown().await?;
            return Ok(moved);
        }
    }
}

/// Seals `data` (if any) into records and writes them in one go; returns its length.
async fn send_sealed(
    data: &[u8],
    key: &mut RecordKey,
    to: &mut WriteHalf<'_>,
) -> Result<u64, RecordRelayError> {
    if data.is_empty() {
        return Ok(0);
    }
    let mut wire = Vec::with_capacity(sealed_len(data.len()));
    seal_application_data(data, key, &mut wire)?;
    to.write_all(&wire).await?;
    Ok(data.len() as u64)
}

/// Bytes on the wire for `n` bytes of application data in full-size records.
fn sealed_len(n: usize) -> usize {
    use hop_protocols::tls_record::{HEADER_LEN, MAX_PLAINTEXT_LEN};
    let records = n.div_ceil(MAX_PLAINTEXT_LEN).max(1);
    n + records * (HEADER_LEN + 1 + 16)
}
