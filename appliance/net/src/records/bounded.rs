//! A socket that can be read one TLS record at a time, so that rustls never holds bytes the fast
//! path would need.
//!
//! A session moves to the fast path after rustls has read the last message meant for its end
//! (at the proxy the user's Dial and the agent's DialResult; at an agent the Dial; at a client
//! the DialResult). Whatever rustls read past that point would be lost
//! with it, because rustls cannot say whether its receive buffer holds part of a further record.
//! While [`RecordReads`] is bounded, no read crosses the end of the record in progress, so when
//! rustls has processed a record its buffer is empty; the next record stays in the kernel for the
//! fast path. Bounding costs a second `read` per record, so a connection that will stay on the
//! tokio relay is [`RecordReads::unbound`]ed first.
//!
//! A connection can also be read freely while the boundaries are counted
//! ([`RecordReads::counting`]): no read is cut short, and the keys may leave rustls whenever the
//! bytes read so far end between records. An agent's and a client's connections to the proxy
//! are read this way: the proxy sends nothing behind the Dial or its answer until the other side
//! has spoken, so their reads end between records without a second `read` per record; when one
//! does not (a peer that sent early), the session stays on rustls.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use hop_protocols::tls_record::HEADER_LEN;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Where a byte stream stands within its TLS records: sans-IO, so the workers' handshakes
/// (the proxy's `dataplane/handshake.rs`) and [`RecordReads`] keep the same count.
#[derive(Debug, Clone, Default)]
pub struct RecordBoundary {
    /// Bytes of the current record's header seen so far (while `header_have < HEADER_LEN`).
    header: [u8; HEADER_LEN],
    header_have: usize,
    /// Body bytes of the current record still to come.
    body_left: usize,
}

impl RecordBoundary {
    /// Is a record partly read? (Never, between whole records.)
    pub fn mid_record(&self) -> bool {
        self.header_have != 0 || self.body_left != 0
    }

    /// How many bytes the next read may return without crossing the end of a record.
    pub fn allowance(&self) -> usize {
        if self.header_have < HEADER_LEN {
            HEADER_LEN - self.header_have
        } else {
            self.body_left
        }
    }

    /// Accounts for `bytes` just read.
    pub fn account(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.header_have < HEADER_LEN {
                let take = (HEADER_LEN - self.header_have).min(bytes.len());
                self.header[self.header_have..self.header_have + take]
                    .copy_from_slice(&bytes[..take]);
                self.header_have += take;
                bytes = &bytes[take..];
                if self.header_have == HEADER_LEN {
                    self.body_left =
                        usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
                    if self.body_left == 0 {
                        self.header_have = 0;
                    }
                }
            } else {
                let take = self.body_left.min(bytes.len());
                self.body_left -= take;
                bytes = &bytes[take..];
                if self.body_left == 0 {
                    self.header_have = 0;
                }
            }
        }
    }
}

/// How a [`RecordReads`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// No read crosses the end of the record in progress.
    Bounded,
    /// Reads take what the caller asks; the record boundaries are counted.
    Counting,
    /// Reads take what the caller asks; nothing is counted (the connection stays on rustls).
    Free,
}

/// A stream whose reads may be kept within TLS record boundaries.
#[derive(Debug)]
pub struct RecordReads<S> {
    inner: S,
    mode: Mode,
    at: RecordBoundary,
}

impl<S> RecordReads<S> {
    /// Wraps `inner`, at the start of a record; `bounded` says whether reads stop at record
    /// boundaries from the start.
    pub fn new(inner: S, bounded: bool) -> Self {
        let mode = if bounded { Mode::Bounded } else { Mode::Free };
        Self {
            inner,
            mode,
            at: RecordBoundary::default(),
        }
    }

    /// Wraps `inner`, at the start of a record, read freely with the record boundaries counted:
    /// the fast path can take the connection over whenever [`RecordReads::mid_record`] is false.
    pub fn counting(inner: S) -> Self {
        Self {
            inner,
            mode: Mode::Counting,
            at: RecordBoundary::default(),
        }
    }

    /// Is it known where every read so far ended within the records? Only then, and only
    /// between records, can the fast path take the connection over.
    pub fn knows_boundaries(&self) -> bool {
        self.mode != Mode::Free
    }

    /// Reads as much as the caller asks from now on, and stops counting (the connection stays
    /// on the tokio relay).
    pub fn unbound(&mut self) {
        self.mode = Mode::Free;
    }

    /// Is a record partly read? (Never, between whole records.)
    pub fn mid_record(&self) -> bool {
        self.at.mid_record()
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for RecordReads<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let limit = match self.mode {
            Mode::Free => return Pin::new(&mut self.inner).poll_read(cx, buf),
            Mode::Counting => buf.remaining(),
            Mode::Bounded => self.at.allowance().min(buf.remaining()),
        };
        if limit == 0 {
            return Poll::Ready(Ok(()));
        }
        let window = buf.initialize_unfilled_to(limit);
        let mut sub = ReadBuf::new(window);
        match Pin::new(&mut self.inner).poll_read(cx, &mut sub) {
            Poll::Ready(Ok(())) => {
                let n = sub.filled().len();
                let this = &mut *self;
                this.at.account(sub.filled());
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for RecordReads<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn record(len: usize, fill: u8) -> Vec<u8> {
        let mut r = vec![23, 3, 3, (len >> 8) as u8, len as u8];
        r.extend(std::iter::repeat_n(fill, len));
        r
    }

    #[tokio::test]
    async fn reads_stop_at_every_record_boundary() {
        let mut wire = record(10, 1);
        wire.extend(record(0, 0));
        wire.extend(record(300, 2));
        let mut r = RecordReads::new(&wire[..], true);
        let mut seen = Vec::new();
        let mut ends = Vec::new();
        loop {
            let mut buf = [0u8; 4096];
            let n = r.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            if !r.mid_record() {
                ends.push(seen.len());
            }
        }
        assert_eq!(seen, wire);
        assert_eq!(ends, vec![15, 20, 325]);
    }

    #[tokio::test]
    async fn unbound_reads_take_everything() {
        let wire = [record(10, 1), record(20, 2)].concat();
        let mut r = RecordReads::new(&wire[..], true);
        r.unbound();
        let mut buf = [0u8; 4096];
        assert_eq!(r.read(&mut buf).await.unwrap(), wire.len());
        assert!(!r.knows_boundaries());
    }

    #[tokio::test]
    async fn counted_reads_take_everything_and_know_where_they_ended() {
        let wire = [record(10, 1), record(20, 2), record(300, 3)].concat();
        // Every split point: the reads are not cut short, and the count says whether the bytes
        // read so far end between records.
        for cut in 0..=wire.len() {
            let mut r = RecordReads::counting(&wire[..]);
            let mut first = vec![0u8; cut];
            r.read_exact(&mut first).await.unwrap();
            let between = [0, 15, 40, wire.len()].contains(&cut);
            assert_eq!(r.mid_record(), !between, "after {cut} bytes");
            assert!(r.knows_boundaries());
            let mut rest = Vec::new();
            r.read_to_end(&mut rest).await.unwrap();
            assert_eq!(rest.len(), wire.len() - cut);
            assert!(!r.mid_record());
        }
    }

    #[tokio::test]
    async fn a_counted_read_is_never_cut_short() {
        let wire = [record(10, 1), record(20, 2)].concat();
        let mut r = RecordReads::counting(&wire[..]);
        let mut buf = [0u8; 4096];
        assert_eq!(r.read(&mut buf).await.unwrap(), wire.len());
        assert!(!r.mid_record());
    }
}
