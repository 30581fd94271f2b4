//! The load generators and targets, in Rust so that they are never the bottleneck.
//!
//! This module owns the plain-TCP ends of every path: a sink that counts what it receives, an
//! echo target, a bulk source, a ping-pong client, a new-session client and an idle-session
//! opener. All of them use blocking sockets and threads (a few per stream), run inside the
//! harness process on loopback, and take a `mark` callback that the caller uses to sample CPU
//! time at the start and the end of the measured window. They know nothing about proxies.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, anyhow};

use crate::clock::{monotonic_now, since};

/// Stack size of the per-connection threads (they hold one buffer on the heap).
const STACK: usize = 128 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A first error seen by any worker thread, kept for the report.
#[derive(Default)]
struct FirstError(Mutex<Option<String>>);

impl FirstError {
    fn set(&self, e: String) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if g.is_none() {
            *g = Some(e);
        }
    }
    fn take(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

fn spawn_named<F: FnOnce() + Send + 'static>(name: &str, f: F) -> anyhow::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.to_string())
        .stack_size(STACK)
        .spawn(f)
        .context("spawning a thread")
}

/// A TCP target that reads and discards, counting bytes and open connections.
pub struct Sink {
    pub addr: SocketAddr,
    bytes: Arc<AtomicU64>,
    active: Arc<AtomicUsize>,
}

impl Sink {
    pub fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let bytes = Arc::new(AtomicU64::new(0));
        let active = Arc::new(AtomicUsize::new(0));
        let (b, a) = (bytes.clone(), active.clone());
        spawn_named("sink-accept", move || {
            for conn in listener.incoming() {
                let Ok(mut s) = conn else { continue };
                a.fetch_add(1, Ordering::SeqCst);
                let (b2, a2) = (b.clone(), a.clone());
                let spawned = spawn_named("sink", move || {
                    let mut buf = vec![0u8; 256 * 1024];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        b2.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    a2.fetch_sub(1, Ordering::SeqCst);
                });
                if spawned.is_err() {
                    a.fetch_sub(1, Ordering::SeqCst);
                }
            }
        })?;
        Ok(Self {
            addr,
            bytes,
            active,
        })
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }
}

/// A TCP target that sends back whatever it receives, one thread per connection.
pub struct Echo {
    pub addr: SocketAddr,
    active: Arc<AtomicUsize>,
}

impl Echo {
    pub fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let active = Arc::new(AtomicUsize::new(0));
        let a = active.clone();
        spawn_named("echo-accept", move || {
            for conn in listener.incoming() {
                let Ok(mut s) = conn else { continue };
                let _ = s.set_nodelay(true);
                a.fetch_add(1, Ordering::SeqCst);
                let a2 = a.clone();
                let spawned = spawn_named("echo", move || {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    a2.fetch_sub(1, Ordering::SeqCst);
                });
                if spawned.is_err() {
                    a.fetch_sub(1, Ordering::SeqCst);
                }
            }
        })?;
        Ok(Self { addr, active })
    }

    pub fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }
}

/// Waits until `count()` is at most `target`, at most `limit`; true if it got there.
pub fn wait_until_at_most(count: impl Fn() -> usize, target: usize, limit: Duration) -> bool {
    let deadline = monotonic_now() + limit;
    while count() > target {
        if monotonic_now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

fn connect(entry: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&entry, CONNECT_TIMEOUT)?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// What one measured window saw.
#[derive(Debug)]
pub struct Window<T> {
    /// Units of work done inside the window (bytes, sessions, round trips).
    pub work: u64,
    pub seconds: f64,
    pub start: T,
    pub end: T,
    pub errors: u64,
    pub first_error: Option<String>,
}

/// Bulk upload: `streams` connections to `entry`, each writing a fixed 128 KiB buffer in a loop;
/// the window counts what the sink receives between two marks. Afterwards every stream is
/// half-closed and the call waits until the sink has seen every connection end, so the next run
/// starts from a quiet path.
pub fn blast<T>(
    entry: SocketAddr,
    streams: usize,
    warmup: Duration,
    window: Duration,
    sink: &Sink,
    mut mark: impl FnMut() -> T,
) -> anyhow::Result<Window<T>> {
    let stop = Arc::new(AtomicBool::new(false));
    let connected = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first = Arc::new(FirstError::default());
    let before = sink.active();
    let mut handles = Vec::new();
    for _ in 0..streams {
        let (stop, connected, errors, first) = (
            stop.clone(),
            connected.clone(),
            errors.clone(),
            first.clone(),
        );
        handles.push(spawn_named("source", move || {
            let mut s = match connect(entry) {
                Ok(s) => s,
                Err(e) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                    first.set(format!("connect {entry}: {e}"));
                    return;
                }
            };
            connected.fetch_add(1, Ordering::SeqCst);
            let buf = vec![0x5au8; 128 * 1024];
            while !stop.load(Ordering::Relaxed) {
                if let Err(e) = s.write_all(&buf) {
                    errors.fetch_add(1, Ordering::Relaxed);
                    first.set(format!("write: {e}"));
                    return;
                }
            }
            let _ = s.shutdown(Shutdown::Write);
            // Wait for the far end to close (the relay passed the half-close along).
            let mut b = [0u8; 64];
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            while let Ok(n) = s.read(&mut b) {
                if n == 0 {
                    break;
                }
            }
        })?);
    }
    let deadline = monotonic_now() + CONNECT_TIMEOUT;
    while connected.load(Ordering::SeqCst) + (errors.load(Ordering::Relaxed) as usize) < streams
        && monotonic_now() < deadline
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(warmup);
    let (b0, t0, start) = (sink.bytes(), monotonic_now(), mark());
    std::thread::sleep(window);
    let (b1, t1, end) = (sink.bytes(), monotonic_now(), mark());
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    if !wait_until_at_most(|| sink.active(), before, Duration::from_secs(20)) {
        first.set(format!(
            "{} target connections still open 20 s after the sources closed",
            sink.active() - before
        ));
        errors.fetch_add(1, Ordering::Relaxed);
    }
    Ok(Window {
        work: b1 - b0,
        seconds: (t1 - t0).as_secs_f64(),
        start,
        end,
        errors: errors.load(Ordering::Relaxed),
        first_error: first.take(),
    })
}

/// Request/response on one connection: `size` bytes out, the same `size` bytes back; returns
/// every round trip of the window in nanoseconds.
pub fn pingpong<T>(
    entry: SocketAddr,
    size: usize,
    warmup: Duration,
    window: Duration,
    mut mark: impl FnMut() -> T,
) -> anyhow::Result<(Window<T>, Vec<u64>)> {
    let mut s = connect(entry).with_context(|| format!("connecting {entry}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let out = vec![0x42u8; size.max(1)];
    let mut back = vec![0u8; out.len()];
    let mut once = |s: &mut TcpStream| -> anyhow::Result<u64> {
        let t = monotonic_now();
        s.write_all(&out)?;
        s.read_exact(&mut back)
            .context("the path closed or stalled during a round trip")?;
        Ok(since(t).as_nanos() as u64)
    };
    let warm_end = monotonic_now() + warmup;
    while monotonic_now() < warm_end {
        once(&mut s)?;
    }
    let mut rtts = Vec::with_capacity(200_000);
    let (t0, start) = (monotonic_now(), mark());
    let end_at = t0 + window;
    while monotonic_now() < end_at {
        rtts.push(once(&mut s)?);
    }
    let (t1, end) = (monotonic_now(), mark());
    let _ = s.shutdown(Shutdown::Both);
    Ok((
        Window {
            work: rtts.len() as u64,
            seconds: (t1 - t0).as_secs_f64(),
            start,
            end,
            errors: 0,
            first_error: None,
        },
        rtts,
    ))
}

/// One short session: connect, send one byte, wait for its echo, close.
fn one_session(entry: SocketAddr) -> anyhow::Result<TcpStream> {
    let mut s = connect(entry).with_context(|| format!("connect {entry}"))?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    s.write_all(b"*")?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b)
        .map_err(|e| anyhow!("no echo through the path: {e}"))?;
    Ok(s)
}

/// New sessions as fast as `concurrency` clients can open them (each: connect, one byte, its
/// echo, close); the window counts sessions completed between two marks.
pub fn session_rate<T>(
    entry: SocketAddr,
    concurrency: usize,
    warmup: Duration,
    window: Duration,
    mut mark: impl FnMut() -> T,
) -> anyhow::Result<Window<T>> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first = Arc::new(FirstError::default());
    let mut handles = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (stop, done, errors, first) =
            (stop.clone(), done.clone(), errors.clone(), first.clone());
        handles.push(spawn_named("sessions", move || {
            while !stop.load(Ordering::Relaxed) {
                match one_session(entry) {
                    Ok(s) => {
                        drop(s);
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        first.set(format!("{e:#}"));
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        })?);
    }
    std::thread::sleep(warmup);
    let (d0, e0, t0, start) = (
        done.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
        monotonic_now(),
        mark(),
    );
    std::thread::sleep(window);
    let (d1, e1, t1, end) = (
        done.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
        monotonic_now(),
        mark(),
    );
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    Ok(Window {
        work: d1 - d0,
        seconds: (t1 - t0).as_secs_f64(),
        start,
        end,
        errors: e1 - e0,
        first_error: first.take(),
    })
}

/// Opens `n` sessions (each proven established by one echoed byte) with `concurrency` openers,
/// and returns them open.
pub fn open_sessions(
    entry: SocketAddr,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<TcpStream>> {
    let workers = concurrency.clamp(1, n.max(1));
    let mut handles = Vec::new();
    for w in 0..workers {
        let count = n / workers + usize::from(w < n % workers);
        handles.push(
            std::thread::Builder::new()
                .name("opener".into())
                .stack_size(STACK)
                .spawn(move || -> anyhow::Result<Vec<TcpStream>> {
                    (0..count).map(|_| one_session(entry)).collect()
                })?,
        );
    }
    let mut all = Vec::with_capacity(n);
    let mut first_err = None;
    for h in handles {
        match h.join() {
            Ok(Ok(v)) => all.extend(v),
            Ok(Err(e)) => first_err = first_err.or(Some(e)),
            Err(_) => first_err = first_err.or(Some(anyhow!("an opener thread panicked"))),
        }
    }
    match first_err {
        Some(e) => Err(e.context(format!(
            "opening {n} sessions through {entry} ({} were open)",
            all.len()
        ))),
        None => Ok(all),
    }
}

/// Percentile (0..=100) of sorted values, nearest rank.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&v, 0.0), 1);
        assert_eq!(percentile(&[], 50.0), 0);
    }

    #[test]
    fn direct_paths_work() {
        let sink = Sink::start().unwrap();
        let w = blast(
            sink.addr,
            2,
            Duration::from_millis(10),
            Duration::from_millis(50),
            &sink,
            || (),
        )
        .unwrap();
        assert!(w.work > 0 && w.errors == 0, "{w:?}");
        let echo = Echo::start().unwrap();
        let (w, rtts) = pingpong(
            echo.addr,
            64,
            Duration::from_millis(10),
            Duration::from_millis(50),
            || (),
        )
        .unwrap();
        assert_eq!(w.work as usize, rtts.len());
        assert!(!rtts.is_empty());
        let w = session_rate(
            echo.addr,
            2,
            Duration::from_millis(10),
            Duration::from_millis(50),
            || (),
        )
        .unwrap();
        assert!(w.work > 0 && w.errors == 0, "{w:?}");
        let open = open_sessions(echo.addr, 10, 3).unwrap();
        assert_eq!(open.len(), 10);
        drop(open);
        assert!(wait_until_at_most(
            || echo.active(),
            0,
            Duration::from_secs(5)
        ));
    }
}
