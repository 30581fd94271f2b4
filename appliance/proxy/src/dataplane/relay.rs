//! The fast path on a worker: one relayed session's two TLS connections, moved record by record
//! with the traffic keys rustls handed over (`crate::relay`).
//!
//! Part of the runtime seam (monoio's types appear here, in `worker.rs`, `handshake.rs` and
//! `kept.rs` only). Each direction reads ciphertext into a buffer it owns and lends to the
//! kernel, re-seals every whole record in place (`hop_protocols::tls_record::reprotect`) and
//! writes the same buffer to the other socket: no plaintext copy, no TLS library per byte. A
//! direction that waits for data holds no buffer (it waits for readability first), so an idle
//! session costs two pending polls and its keys.
//! Half-close passes through (`close_notify`, then `shutdown(SHUT_WR)`); the first error ends both
//! directions; the idle timeout is the session's, shared by both directions.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use hop_platform::clock;
use hop_platform::split::{ReadSide, WriteSide};
use hop_protocols::tls_record::{
    MAX_RECORD_LEN, RecordError, reprotect, seal_application_data, seal_close_notify,
};
use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, OwnedReadHalf};
use monoio::net::TcpStream;

use super::stats::WorkerStats;
use crate::relay::aead::RecordKey;
use crate::relay::{RelayOutcome, TlsRelayJob};

/// Bytes one read may bring: four full records, so a busy direction moves about 64 KiB per
/// system call, and a partial record always fits behind the whole ones.
const BUFFER: usize = 4 * MAX_RECORD_LEN;
/// Buffers a worker keeps for reuse between bursts (2 MiB): enough for the sessions busy at one
/// moment on a core, small next to what idle sessions would otherwise hold.
const POOL_KEEP: usize = 32;

thread_local! {
    /// This worker's idle relay buffers.
    static POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

fn take_buffer() -> Vec<u8> {
    POOL.with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(BUFFER))
}

fn give_back(mut buf: Vec<u8>) {
    if buf.capacity() < BUFFER {
        return;
    }
    buf.clear();
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOL_KEEP {
            p.push(buf);
        }
    });
}

/// What a direction that wakes from quiet reads into first. Most wakes bring a few small records
/// (a keystroke, a request, the `close_notify` at the end), which then never touch the pool's
/// 64 KiB buffers: a burst of thousands of sessions closing at once used to take one each. A
/// wake that fills it, or leaves part of a record, moves to a full buffer.
const SMALL: usize = 2048;

/// How many bytes `buf` may hold: a pooled buffer's `BUFFER`, or a small one's capacity.
fn room(buf: &Vec<u8>) -> usize {
    if buf.capacity() >= BUFFER {
        BUFFER
    } else {
        buf.capacity()
    }
}

/// Moves what `buf` holds into a pooled full-size buffer, if it is a small one.
fn make_full(buf: &mut Vec<u8>) {
    if buf.capacity() < BUFFER {
        let mut full = take_buffer();
        full.extend_from_slice(buf);
        *buf = full;
    }
}

/// How long a direction that just moved bytes keeps its buffer and reads directly.
const HOT: Duration = Duration::from_millis(50);

/// Reads into the spare room of `buf`, giving up after `window`: `None` when nothing came (the
/// read is cancelled, and the buffer comes back either way).
async fn read_within(
    src: &mut OwnedReadHalf<TcpStream>,
    mut buf: Vec<u8>,
    window: Duration,
) -> (Option<std::io::Result<usize>>, Vec<u8>) {
    use monoio::io::CancelableAsyncReadRent;
    let canceller = monoio::io::Canceller::new();
    let have = buf.len();
    let room = room(&buf);
    if have >= room {
        // Never: a partial record is shorter than the buffer.
        return (Some(Err(std::io::Error::other("relay buffer full"))), buf);
    }
    let read = src.cancelable_read(buf.slice_mut(have..room), canceller.handle());
    let mut read = std::pin::pin!(read);
    let (res, slice) = match monoio::time::timeout(window, read.as_mut()).await {
        Ok(done) => done,
        Err(_) => {
            canceller.cancel();
            read.await
        }
    };
    buf = slice.into_inner();
    match res {
        Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => (None, buf),
        other => (Some(other), buf),
    }
}

/// How a session the live-session watch stopped ends.
pub(super) const STOPPED: &str = "ended by the live-session watch";

/// Why a direction ended the session.
#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{side}: {error}")]
    Record {
        side: &'static str,
        error: RecordError,
    },
    #[error("{0}: the connection closed in the middle of a TLS record")]
    Truncated(&'static str),
    #[error("no bytes moved for {0:?}: idle timeout")]
    Idle(Duration),
    #[error("{STOPPED}")]
    Stopped,
}

/// Runs one job to its end and reports it; `kernel_tls` says whether to try kernel TLS first.
pub(super) async fn run(job: TlsRelayJob, stats: &WorkerStats, kernel_tls: bool) {
    let TlsRelayJob {
        client,
        client_keys,
        agent,
        agent_keys,
        to_agent,
        to_client,
        idle,
        done,
        stop,
    } = job;
    stats
        .relay_active
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let up = Cell::new(0u64);
    let down = Cell::new(0u64);
    // Made in place (never moved into another future, which would hold it twice).
    let relayed = pin!(relay(
        client,
        agent,
        client_keys,
        agent_keys,
        to_agent,
        to_client,
        idle,
        kernel_tls,
        (&up, &down),
    ));
    let result = until_stopped(relayed, stop).await;
    stats
        .relay_active
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    stats
        .relayed
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    stats
        .relay_bytes
        .fetch_add(up.get() + down.get(), std::sync::atomic::Ordering::Relaxed);
    let _ = done.send(RelayOutcome {
        up: up.get(),
        down: down.get(),
        error: result.err().map(|e| e.to_string()),
    });
}

/// Runs `relayed` until it ends or `stop` fires; a stop drops the relay, whose sockets are then
/// shut down for writing and closed (monoio's write halves shut down when dropped). A stop that
/// came first ends it before it moves a byte.
async fn until_stopped<F: Future<Output = Result<(), RelayError>>>(
    relayed: std::pin::Pin<&mut F>,
    stop: Option<crate::relay::SessionStop>,
) -> Result<(), RelayError> {
    match stop {
        None => relayed.await,
        Some(stop) => unless_stopped(relayed, &stop)
            .await
            .unwrap_or(Err(RelayError::Stopped)),
    }
}

/// `work`'s result, or `None` once `stop` fires (checked before `work` is first polled). `work`
/// is borrowed, pinned where it was made: a future moved into another is held twice.
pub(super) async fn unless_stopped<F: Future>(
    mut work: std::pin::Pin<&mut F>,
    stop: &crate::relay::SessionStop,
) -> Option<F::Output> {
    let mut stopped = pin!(stop.stopped());
    std::future::poll_fn(|cx| {
        if stopped.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        work.as_mut().poll(cx).map(Some)
    })
    .await
}

#[allow(clippy::too_many_arguments)]
async fn relay(
    client: std::net::TcpStream,
    agent: std::net::TcpStream,
    client_keys: crate::relay::ConnectionKeys,
    agent_keys: crate::relay::ConnectionKeys,
    to_agent: Vec<u8>,
    to_client: Vec<u8>,
    idle: Option<Duration>,
    kernel_tls: bool,
    (up, down): (&Cell<u64>, &Cell<u64>),
) -> Result<(), RelayError> {
    if kernel_tls && enable_kernel_tls(&client, &agent, &client_keys, &agent_keys)? {
        return splice_relay(
            client,
            agent,
            Ends::KernelTls,
            to_agent,
            to_client,
            idle,
            (up, down),
        )
        .await;
    }
    let key = |d: &crate::relay::DirectionSecret| {
        d.record_key()
            .map_err(|e| RelayError::Io(std::io::Error::other(e)))
    };
    let (client_rx, client_tx) = (key(&client_keys.rx)?, key(&client_keys.tx)?);
    let (agent_rx, agent_tx) = (key(&agent_keys.rx)?, key(&agent_keys.tx)?);
    drop((client_keys, agent_keys));
    let (client_r, client_w) = shared(client)?;
    let (agent_r, agent_w) = shared(agent)?;
    let last = Cell::new(clock::now());
    let upward = direction(
        "client", client_r, agent_w, client_rx, agent_tx, to_agent, idle, &last, up,
    );
    let downward = direction(
        "agent", agent_r, client_w, agent_rx, client_tx, to_client, idle, &last, down,
    );
    both_or_first_error(upward, downward).await
}

/// Hands both connections' keys to the kernel. `Ok(false)`: the kernel refused the first socket
/// before anything changed, so the session can still be relayed in user space.
fn enable_kernel_tls(
    client: &std::net::TcpStream,
    agent: &std::net::TcpStream,
    client_keys: &crate::relay::ConnectionKeys,
    agent_keys: &crate::relay::ConnectionKeys,
) -> Result<bool, RelayError> {
    use hop_platform::ktls;
    let unsupported = || std::io::Error::other("the kernel does not implement this cipher");
    let (Some(c_tx), Some(c_rx), Some(a_tx), Some(a_rx)) = (
        client_keys.tx.kernel_key(),
        client_keys.rx.kernel_key(),
        agent_keys.tx.kernel_key(),
        agent_keys.rx.kernel_key(),
    ) else {
        return Ok(false);
    };
    if let Err(e) = ktls::enable(client, &c_tx, &c_rx) {
        tracing::debug!(error = %e, "kernel TLS refused a session; sealing in user space");
        // A refused TX key leaves the socket a plain one; a refused RX key after an accepted TX
        // key does not, and the session cannot continue.
        return match e.raw_os_error() {
            Some(libc::ENOENT | libc::EOPNOTSUPP | libc::ENOPROTOOPT) => Ok(false),
            _ => Err(RelayError::Io(e)),
        };
    }
    ktls::enable(agent, &a_tx, &a_rx).map_err(|e| {
        RelayError::Io(if e.raw_os_error() == Some(libc::EINVAL) {
            unsupported()
        } else {
            e
        })
    })?;
    Ok(true)
}

/// What the two sockets of a spliced session are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ends {
    /// Both have kernel TLS: the kernel seals and opens, and records that are not application
    /// data (alerts, post-handshake messages) are taken with their type.
    KernelTls,
    /// Plain TCP on both sides: no record layer at all. (Every route of the one port is TLS on
    /// the proxy's side today, so only the tests splice plain sockets; it is the same loop.)
    #[cfg_attr(not(test), allow(dead_code))]
    Plain,
}

/// The splice relay: bytes move by `splice` through a pipe per direction without entering user
/// space. With kernel TLS on both sockets, the kernel seals and opens the records.
#[allow(clippy::too_many_arguments)]
async fn splice_relay(
    client: std::net::TcpStream,
    agent: std::net::TcpStream,
    ends: Ends,
    to_agent: Vec<u8>,
    to_client: Vec<u8>,
    idle: Option<Duration>,
    (up, down): (&Cell<u64>, &Cell<u64>),
) -> Result<(), RelayError> {
    let Sides {
        client_r,
        client_w,
        agent_r,
        agent_w,
    } = sides(client, agent)?;
    let last = Cell::new(clock::now());
    let upward = splice_direction("client", client_r, agent_w, ends, to_agent, idle, &last, up);
    let downward = splice_direction(
        "agent", agent_r, client_w, ends, to_client, idle, &last, down,
    );
    both_or_first_error(upward, downward).await
}

/// Bytes one splice may move.
const SPLICE_CHUNK: u32 = 64 * 1024;

#[allow(clippy::too_many_arguments)]
async fn splice_direction(
    side: &'static str,
    mut src: TcpStream,
    mut dst: TcpStream,
    ends: Ends,
    first: Vec<u8>,
    idle: Option<Duration>,
    last: &Cell<Instant>,
    moved: &Cell<u64>,
) -> Result<(), RelayError> {
    use hop_platform::ktls;
    use monoio::io::splice::{SpliceDestination, SpliceSource};
    let record_err = |error| RelayError::Record { side, error };
    if !first.is_empty() {
        let len = first.len();
        // The kernel seals what is written.
        write_all(&mut dst, first, len).await.0?;
        moved.set(moved.get() + len as u64);
    }
    let (mut pipe_r, mut pipe_w) = monoio::net::unix::new_pipe()?;
    loop {
        wait_readable(&src, idle, last).await?;
        match src.splice_to_pipe(&mut pipe_w, SPLICE_CHUNK).await {
            Ok(0) => {
                if ends == Ends::KernelTls {
                    let _ = ktls::send_close_notify(&dst);
                }
                let _ = dst.shutdown().await;
                return Ok(());
            }
            Ok(n) => {
                let mut left = n;
                while left > 0 {
                    // The sockets are non-blocking: a full send buffer is EAGAIN, not a wait.
                    let w = match dst.splice_from_pipe(&mut pipe_r, left).await {
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            dst.writable(false).await?;
                            continue;
                        }
                        r => r?,
                    };
                    if w == 0 {
                        return Err(RelayError::Io(std::io::ErrorKind::WriteZero.into()));
                    }
                    left -= w;
                }
                moved.set(moved.get() + u64::from(n));
                last.set(clock::now());
            }
            // The next record is not application data: take it with its type.
            Err(e)
                if ends == Ends::KernelTls
                    && matches!(e.raw_os_error(), Some(libc::EIO | libc::EINVAL)) =>
            {
                let mut rec = [0u8; 64];
                let (kind, len) = ktls::recv_control(&src, &mut rec)?;
                let body = rec.get(..len).unwrap_or_default();
                match (kind, body) {
                    (ktls::ALERT, [_, 0]) => {
                        ktls::send_close_notify(&dst)?;
                        let _ = dst.shutdown().await;
                        return Ok(());
                    }
                    (ktls::ALERT, [_, 90]) => continue,
                    (ktls::ALERT, [_, d]) => return Err(record_err(RecordError::Alert(*d))),
                    (ktls::ALERT, other) => {
                        return Err(record_err(RecordError::BadAlert(other.len())));
                    }
                    (ktls::HANDSHAKE, _) => {
                        return Err(record_err(RecordError::PostHandshakeMessage));
                    }
                    (t, _) => return Err(record_err(RecordError::UnknownInnerType(t))),
                }
            }
            // Readiness said readable, but another reader of the socket (never here) or a
            // spurious wake left nothing: wait again.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// One socket of a session relayed in user space, as its two directions share it: one
/// descriptor, read by one direction and written by the other (`hop_platform::split`).
fn shared(sock: std::net::TcpStream) -> std::io::Result<(ReadSide, WriteSide)> {
    sock.set_nonblocking(true)?;
    Ok(hop_platform::split::split(TcpStream::from_std(sock)?))
}

/// A spliced session's sockets as the worker's runtime sees them: each direction owns a
/// descriptor for its reading side and one for its writing side (two descriptors of one socket
/// share it: a shutdown of one is the socket's). Splicing needs the streams themselves; only
/// sessions with kernel TLS (or the tests' plain ones) take this path.
struct Sides {
    client_r: TcpStream,
    client_w: TcpStream,
    agent_r: TcpStream,
    agent_w: TcpStream,
}

fn sides(client: std::net::TcpStream, agent: std::net::TcpStream) -> std::io::Result<Sides> {
    let client_w = client.try_clone()?;
    let agent_w = agent.try_clone()?;
    for s in [&client, &agent, &client_w, &agent_w] {
        s.set_nonblocking(true)?;
    }
    Ok(Sides {
        client_r: TcpStream::from_std(client)?,
        client_w: TcpStream::from_std(client_w)?,
        agent_r: TcpStream::from_std(agent)?,
        agent_w: TcpStream::from_std(agent_w)?,
    })
}

/// Polls both futures; ends with the first error (dropping the other, which cancels its
/// operations) or when both have finished.
async fn both_or_first_error<A, B, E>(a: A, b: B) -> Result<(), E>
where
    A: Future<Output = Result<(), E>>,
    B: Future<Output = Result<(), E>>,
{
    let mut a = pin!(a);
    let mut b = pin!(b);
    let (mut a_done, mut b_done) = (false, false);
    std::future::poll_fn(|cx| {
        if !a_done && let Poll::Ready(r) = a.as_mut().poll(cx) {
            r?;
            a_done = true;
        }
        if !b_done && let Poll::Ready(r) = b.as_mut().poll(cx) {
            r?;
            b_done = true;
        }
        if a_done && b_done {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    })
    .await
}

async fn write_all<W: AsyncWriteRent>(
    dst: &mut W,
    buf: Vec<u8>,
    len: usize,
) -> (std::io::Result<()>, Vec<u8>) {
    let (res, slice) = dst.write_all(buf.slice(0..len)).await;
    (res.map(|_| ()), slice.into_inner())
}

/// One direction: records from `src` opened with `open`, sealed with `seal`, written to `dst`.
#[allow(clippy::too_many_arguments)]
async fn direction(
    side: &'static str,
    mut src: ReadSide,
    mut dst: WriteSide,
    mut open: RecordKey,
    mut seal: RecordKey,
    first: Vec<u8>,
    idle: Option<Duration>,
    last: &Cell<Instant>,
    moved: &Cell<u64>,
) -> Result<(), RelayError> {
    let record_err = |error| RelayError::Record { side, error };
    if !first.is_empty() {
        let mut out = Vec::with_capacity(first.len() + 64);
        seal_application_data(&first, &mut seal, &mut out)
            .map_err(|e| record_err(RecordError::Protection(e)))?;
        let len = out.len();
        write_all(dst.half(), out, len).await.0?;
        moved.set(moved.get() + first.len() as u64);
    }
    let mut buf: Vec<u8> = Vec::new();
    let mut likely_more = false;
    // When this direction last read bytes: within HOT of it, it keeps its buffer and reads
    // directly (one ring operation per read); after that it waits for readability without one.
    let mut moved_at: Option<Instant> = None;
    loop {
        let hot_left = moved_at
            .map(|t| HOT.saturating_sub(clock::since(t)))
            .filter(|d| !d.is_zero() && buf.capacity() > 0);
        let res = if likely_more {
            make_full(&mut buf);
            let have = buf.len();
            let (res, slice) = src.half().read(buf.slice_mut(have..BUFFER)).await;
            buf = slice.into_inner();
            res
        } else if let Some(window) = hot_left {
            let (res, back) = read_within(src.half(), buf, window).await;
            buf = back;
            match res {
                Some(r) => r,
                // Nothing within the window: the session went quiet.
                None => {
                    moved_at = None;
                    continue;
                }
            }
        } else {
            // Nothing in hand: give the buffer back and wait without one. (With part of a
            // record in hand the buffer stays, and the wait still ends at the idle timeout.)
            if buf.is_empty() && buf.capacity() > 0 {
                give_back(std::mem::take(&mut buf));
            }
            wait_readable(&src, idle, last).await?;
            if buf.capacity() == 0 {
                buf = Vec::with_capacity(SMALL);
            }
            let have = buf.len();
            let room = room(&buf);
            let (res, slice) = src.half().read(buf.slice_mut(have..room)).await;
            buf = slice.into_inner();
            res
        };
        let have = buf.len();
        let full = have == room(&buf);
        let n = res?;
        if n == 0 {
            if !buf.is_empty() {
                return Err(RelayError::Truncated(side));
            }
            // The peer closed without close_notify: end the other side's stream properly.
            let mut out = Vec::with_capacity(32);
            seal_close_notify(&mut seal, &mut out)
                .map_err(|e| record_err(RecordError::Protection(e)))?;
            let len = out.len();
            let _ = write_all(dst.half(), out, len).await.0;
            let _ = dst.half().shutdown().await;
            give_back(buf);
            return Ok(());
        }
        last.set(clock::now());
        moved_at = Some(clock::now());
        likely_more = full;
        let done = reprotect(&mut buf, &mut open, &mut seal).map_err(record_err)?;
        if done.produced > 0 {
            let (res, back) = write_all(dst.half(), buf, done.produced).await;
            buf = back;
            res?;
            last.set(clock::now());
        }
        moved.set(moved.get() + done.payload as u64);
        buf.drain(..done.consumed);
        if !buf.is_empty() {
            // Part of a record: it may need all of a full buffer.
            make_full(&mut buf);
        }
        if done.closed {
            let _ = dst.half().shutdown().await;
            give_back(buf);
            return Ok(());
        }
    }
}

/// A socket whose readability can be awaited without lending a buffer.
trait Readiness {
    fn readable(&self) -> impl Future<Output = std::io::Result<()>>;
}

impl Readiness for TcpStream {
    fn readable(&self) -> impl Future<Output = std::io::Result<()>> {
        TcpStream::readable(self, false)
    }
}

impl Readiness for ReadSide {
    fn readable(&self) -> impl Future<Output = std::io::Result<()>> {
        ReadSide::readable(self, false)
    }
}

/// Waits until `src` has bytes, or fails when the session has been idle for `idle`.
async fn wait_readable(
    src: &impl Readiness,
    idle: Option<Duration>,
    last: &Cell<Instant>,
) -> Result<(), RelayError> {
    let Some(idle) = idle else {
        src.readable().await?;
        return Ok(());
    };
    loop {
        let quiet = clock::since(last.get());
        let Some(left) = idle.checked_sub(quiet).filter(|d| !d.is_zero()) else {
            return Err(RelayError::Idle(idle));
        };
        match monoio::time::timeout(left, src.readable()).await {
            Ok(r) => return r.map_err(RelayError::Io),
            // The other direction may have moved bytes meanwhile: look again.
            Err(_) => continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream as StdStream};

    use super::*;

    /// A connected loopback pair: (the far end, the end the relay gets).
    fn pair() -> (StdStream, StdStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let far = StdStream::connect(l.local_addr().unwrap()).unwrap();
        let (near, _) = l.accept().unwrap();
        (far, near)
    }

    fn pattern(n: usize, salt: u8) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8 ^ salt).collect()
    }

    /// The splice loop between two plain sockets, on io_uring and on epoll: bytes sent ahead
    /// first, then megabytes each way against a slow reader (the send buffers fill, so splice
    /// meets EAGAIN), byte-exact, half-close in both directions.
    #[test]
    fn splice_moves_bytes_between_plain_sockets_with_half_close() {
        if worker_probe().is_ok() {
            splice_plain(true);
        }
        splice_plain(false);
    }

    fn worker_probe() -> std::io::Result<()> {
        super::super::worker::probe_uring()
    }

    fn splice_plain(uring: bool) {
        let (mut user, client) = pair();
        let (mut target, agent) = pair();
        let up_payload = pattern(6 << 20, 0x5a);
        let down_payload = pattern(3 << 20, 0xa5);
        let relay = std::thread::spawn(move || {
            let go = async move {
                let (up, down) = (Cell::new(0u64), Cell::new(0u64));
                let r = splice_relay(
                    client,
                    agent,
                    Ends::Plain,
                    b"sent ahead:".to_vec(),
                    b"answered ahead:".to_vec(),
                    Some(Duration::from_secs(20)),
                    (&up, &down),
                )
                .await;
                r.map(|()| (up.get(), down.get()))
                    .map_err(|e| e.to_string())
            };
            if uring {
                monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                    .enable_timer()
                    .build()
                    .unwrap()
                    .block_on(go)
            } else {
                monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                    .enable_timer()
                    .build()
                    .unwrap()
                    .block_on(go)
            }
        });
        let sent = up_payload.clone();
        let writer = std::thread::spawn(move || {
            user.write_all(&sent).unwrap();
            user.shutdown(Shutdown::Write).unwrap();
            let mut back = Vec::new();
            user.read_to_end(&mut back).unwrap();
            back
        });
        let mut got = Vec::new();
        // A slow start, so the relay's writes meet full buffers.
        std::thread::sleep(Duration::from_millis(100));
        // The target reads the whole upload (ending at the user's half-close) before answering.
        target.read_to_end(&mut got).unwrap();
        target.write_all(&down_payload).unwrap();
        target.shutdown(Shutdown::Write).unwrap();
        let back = writer.join().unwrap();
        let (up, down) = relay.join().unwrap().unwrap();
        assert!(got.starts_with(b"sent ahead:"));
        assert!(got[11..] == up_payload[..], "upload differs");
        assert!(back.starts_with(b"answered ahead:"));
        assert!(back[15..] == down_payload[..], "download differs");
        assert_eq!(up, 11 + up_payload.len() as u64);
        assert_eq!(down, 15 + down_payload.len() as u64);
    }
}
