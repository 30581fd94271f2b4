//! Hop's agent↔proxy tunnel frames over async streams.
//!
//! This module owns reading and writing [`Frame`]s (the sans-IO codec lives in
//! `hop_protocols::tunnel`) on any tokio stream, with a size-bounded buffer and a deadline per
//! frame. After a Dial/DialResult exchange the stream carries raw session bytes: [`FramedStream::into_inner`]
//! returns the stream and any bytes already read past the last frame, so none are lost.

use std::time::Duration;

use hop_platform::clock;
use hop_protocols::tunnel::{Frame, MAX_FRAME_LEN};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// ALPN of an agent's control connection.
pub const ALPN_TUNNEL: &[u8] = b"hop-tunnel";
/// ALPN of an agent's pooled data connection.
pub const ALPN_TUNNEL_DATA: &[u8] = b"hop-tunnel-data";
/// ALPN of one proxy's connection to another of the cluster (proxy peering): a Dial for an
/// agent tunnelled to the proxy it reaches.
pub const ALPN_PEER: &[u8] = b"hop-peer";
/// ALPN of a user's TCP application session.
pub const ALPN_TCP: &[u8] = b"hop-tcp";
/// ALPN of a user's SSH connection to a node through the proxy (`hop proxy ssh`, `hop ssh`).
pub const ALPN_SSH: &[u8] = b"hop-ssh";
/// A PostgreSQL session from `hop proxy db` (TLS with the user's database certificate; the
/// PostgreSQL protocol starts at the StartupMessage inside).
pub const ALPN_POSTGRES: &[u8] = b"hop-postgres";
/// `hop join`: watching or typing into another live SSH session.
pub const ALPN_JOIN: &[u8] = b"hop-join";
/// A MySQL session from `hop proxy db` (the MySQL protocol starts with the proxy's greeting).
pub const ALPN_MYSQL: &[u8] = b"hop-mysql";
/// PostgreSQL 17's direct TLS negotiation.
pub const ALPN_POSTGRES_DIRECT: &[u8] = b"postgresql";

#[derive(Debug, thiserror::Error)]
pub enum FrameIoError {
    #[error("the peer closed the connection")]
    Closed,
    #[error("no frame within {0:?}")]
    Timeout(Duration),
    #[error("malformed frame from the peer: {0}")]
    Malformed(#[from] hop_protocols::tunnel::TunnelError),
    #[error("frame too large to send: {0}")]
    Encode(#[from] hop_protocols::tunnel::EncodeError),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// A stream that speaks frames until it is turned back into raw bytes.
#[derive(Debug)]
pub struct FramedStream<S> {
    stream: S,
    buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> FramedStream<S> {
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            buf: Vec::with_capacity(512),
        }
    }

    /// Reads one frame, waiting at most `deadline`.
    pub async fn read_frame(&mut self, deadline: Duration) -> Result<Frame, FrameIoError> {
        tokio::time::timeout(deadline, self.read_frame_inner())
            .await
            .map_err(|_| FrameIoError::Timeout(deadline))?
    }

    async fn read_frame_inner(&mut self) -> Result<Frame, FrameIoError> {
        loop {
            if let Some((frame, used)) = Frame::decode(&self.buf)? {
                self.buf.drain(..used);
                return Ok(frame);
            }
            if self.buf.len() > MAX_FRAME_LEN + 8 {
                // decode() reports oversized lengths itself; this is a belt for the braces.
                return Err(FrameIoError::Closed);
            }
            // Read into the frame buffer's spare room rather than a stack array: a connection
            // that waits for its next frame (every agent's control tunnel) then holds only a
            // small heap buffer, not 4 KiB inside the pending future.
            if self.buf.capacity() - self.buf.len() < 256 {
                self.buf.reserve(1024);
            }
            let n = self.stream.read_buf(&mut self.buf).await?;
            if n == 0 {
                return Err(FrameIoError::Closed);
            }
        }
    }

    pub async fn write_frame(&mut self, frame: &Frame) -> Result<(), FrameIoError> {
        let mut out = Vec::with_capacity(64);
        frame.encode(&mut out)?;
        self.stream.write_all(&out).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// A stream with `pending` bytes already read from it (they come first).
    pub fn with_pending(stream: S, pending: Vec<u8>) -> Self {
        Self {
            stream,
            buf: pending,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// The stream and the bytes read past the last frame (the first session bytes, if any).
    pub fn into_inner(self) -> (S, Vec<u8>) {
        (self.stream, self.buf)
    }
}

/// Copies both directions until both are done, writing `a_pending` to `b` and `b_pending` to `a`
/// first. Half-closes pass through (EOF on one side shuts down writing on the other, the other
/// direction continues). Returns the bytes moved (a→b, b→a), pending bytes included.
pub async fn relay<A, B>(
    a: A,
    a_pending: Vec<u8>,
    b: B,
    b_pending: Vec<u8>,
) -> std::io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    relay_with_idle_timeout(a, a_pending, b, b_pending, None).await
}

/// [`relay`], ending the session with `TimedOut` when no byte moved either way for `idle`.
pub async fn relay_with_idle_timeout<A, B>(
    a: A,
    a_pending: Vec<u8>,
    b: B,
    b_pending: Vec<u8>,
    idle: Option<Duration>,
) -> std::io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let started = clock::tokio_now();
    let last = Arc::new(AtomicU64::new(0));
    let mut a = Active {
        inner: a,
        last: last.clone(),
        started,
    };
    let mut b = Active {
        inner: b,
        last: last.clone(),
        started,
    };
    if !a_pending.is_empty() {
        b.write_all(&a_pending).await?;
    }
    if !b_pending.is_empty() {
        a.write_all(&b_pending).await?;
    }
    // No buffer is held while the session is idle (`crate::copy`).
    let copy = crate::copy::copy_both(&mut a, &mut b);
    let (x, y) = match idle {
        None => copy.await?,
        Some(idle) => {
            let watchdog = async {
                loop {
                    let seen = Duration::from_millis(last.load(Ordering::Relaxed));
                    let quiet = clock::tokio_since(started).saturating_sub(seen);
                    if quiet >= idle {
                        return;
                    }
                    tokio::time::sleep(idle - quiet).await;
                }
            };
            tokio::select! {
                r = copy => r?,
                () = watchdog => {
                    return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("idle for {idle:?}")));
                }
            }
        }
    };
    Ok((x + a_pending.len() as u64, y + b_pending.len() as u64))
}

/// A stream that records when it last read something (milliseconds since `started`).
struct Active<S> {
    inner: S,
    last: Arc<AtomicU64>,
    started: tokio::time::Instant,
}

impl<S: AsyncRead + Unpin> AsyncRead for Active<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.last.store(
                clock::tokio_since(this.started).as_millis() as u64,
                Ordering::Relaxed,
            );
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Active<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_then_raw_bytes_lose_nothing() {
        let (a, b) = tokio::io::duplex(1024);
        let mut fa = FramedStream::new(a);
        let mut raw = b;
        let mut out = Vec::new();
        Frame::Heartbeat { seq: 7 }.encode(&mut out).unwrap();
        out.extend_from_slice(b"session bytes");
        raw.write_all(&out).await.unwrap();
        let f = fa.read_frame(Duration::from_secs(1)).await.unwrap();
        assert_eq!(f, Frame::Heartbeat { seq: 7 });
        let (_, rest) = fa.into_inner();
        assert_eq!(rest, b"session bytes");
    }

    #[tokio::test]
    async fn idle_sessions_end_and_busy_ones_do_not() {
        let (a, mut a_peer) = tokio::io::duplex(1024);
        let (b, _b_peer) = tokio::io::duplex(1024);
        let started = clock::tokio_now();
        let r = relay_with_idle_timeout(
            a,
            Vec::new(),
            b,
            Vec::new(),
            Some(Duration::from_millis(100)),
        )
        .await;
        assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
        assert!(clock::tokio_since(started) < Duration::from_secs(2));

        let (a, mut a_peer2) = tokio::io::duplex(1024);
        let (b, mut b_peer) = tokio::io::duplex(1024);
        let relay = tokio::spawn(relay_with_idle_timeout(
            a,
            Vec::new(),
            b,
            Vec::new(),
            Some(Duration::from_millis(150)),
        ));
        for _ in 0..6 {
            a_peer2.write_all(b"x").await.unwrap();
            let mut got = [0u8; 1];
            b_peer.read_exact(&mut got).await.unwrap();
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
        a_peer2.shutdown().await.unwrap();
        drop(b_peer);
        let (up, _) = relay.await.unwrap().unwrap();
        assert_eq!(up, 6, "a busy session outlived the idle timeout");
        a_peer.shutdown().await.ok();
    }

    #[tokio::test]
    async fn closed_and_timeout() {
        let (a, b) = tokio::io::duplex(64);
        let mut fa = FramedStream::new(a);
        assert!(matches!(
            fa.read_frame(Duration::from_millis(20)).await,
            Err(FrameIoError::Timeout(_))
        ));
        drop(b);
        assert!(matches!(
            fa.read_frame(Duration::from_secs(1)).await,
            Err(FrameIoError::Closed)
        ));
    }
}

/// A stream whose first reads return bytes already read past the last frame.
#[derive(Debug)]
pub struct Prefixed<S> {
    inner: S,
    pending: Vec<u8>,
    offset: usize,
}

impl<S> Prefixed<S> {
    pub fn new(inner: S, pending: Vec<u8>) -> Self {
        Self {
            inner,
            pending,
            offset: 0,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.offset < self.pending.len() {
            let n = (self.pending.len() - self.offset).min(buf.remaining());
            let start = self.offset;
            buf.put_slice(&self.pending[start..start + n]);
            self.offset += n;
            if self.offset == self.pending.len() {
                self.pending = Vec::new();
                self.offset = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
