//! Copying both directions of a relayed session with no buffer held while it is idle.
//!
//! This module owns the byte pump under [`crate::tunnel::relay`]: each direction reads into one
//! scratch buffer per thread and writes what it read at once; only bytes the writer does not take
//! yet are copied into a buffer of the direction's own, which is let go as soon as they are
//! written. An idle session (most of an agent's or `hop proxy app`'s sessions, most of the
//! time) thus holds no relay buffer at all, where a buffer per direction (tokio's
//! `copy_bidirectional`) held 32 KiB each. Half-closes pass through: end of file on one side
//! flushes and shuts down writing on the other, and the other direction goes on.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most one read takes: one TLS record's worth of plaintext.
pub const SCRATCH: usize = 16 * 1024;

thread_local! {
    /// The read buffer of every session this thread pumps, one read at a time.
    static SCRATCH_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH].into_boxed_slice());
}

/// One direction: what it read that the writer has not taken yet, and how far it is.
#[derive(Default)]
struct Direction {
    /// Bytes read but not yet written (empty, with no capacity, while the direction is idle).
    unwritten: Vec<u8>,
    /// How many bytes of `unwritten` are written.
    at: usize,
    /// Written since the last flush.
    need_flush: bool,
    /// The reader returned end of file.
    read_done: bool,
    /// The writer is shut down: the direction is done.
    done: bool,
    /// Bytes moved.
    moved: u64,
}

impl Direction {
    /// Moves bytes from `r` to `w` until `r` has nothing ready (or the direction is done).
    fn poll_pump<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
        w: &mut W,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        loop {
            if self.done {
                return Poll::Ready(Ok(()));
            }
            ready!(self.poll_write_unwritten(cx, w))?;
            if self.read_done {
                ready!(Pin::new(&mut *w).poll_shutdown(cx))?;
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            // Within the task's budget, as tokio's own copy: a reader that always has bytes
            // (a TLS stream's buffered plaintext) must not keep the worker from other tasks.
            let coop = ready!(tokio::task::coop::poll_proceed(cx));
            match self.poll_read_and_write(cx, r, w) {
                Poll::Ready(r) => {
                    coop.made_progress();
                    r?
                }
                Poll::Pending => {
                    // Nothing to read now: push out what the writer may still hold.
                    if self.need_flush {
                        ready!(Pin::new(&mut *w).poll_flush(cx))?;
                        self.need_flush = false;
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// Writes what an earlier read left, then lets its buffer go.
    fn poll_write_unwritten<W>(&mut self, cx: &mut Context<'_>, w: &mut W) -> Poll<io::Result<()>>
    where
        W: AsyncWrite + Unpin + ?Sized,
    {
        let n = write_now(cx, w, &self.unwritten[self.at..])?;
        self.at += n;
        self.took(n);
        if self.at < self.unwritten.len() {
            return Poll::Pending;
        }
        if self.unwritten.capacity() > 0 {
            self.unwritten = Vec::new();
            self.at = 0;
        }
        Poll::Ready(Ok(()))
    }

    /// Reads once into the thread's scratch buffer and writes as much of it as `w` takes now;
    /// the rest is kept in the direction's own buffer.
    fn poll_read_and_write<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
        w: &mut W,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        SCRATCH_BUF.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => self.poll_read_into(cx, r, w, &mut scratch),
            // A reader or writer that pumps another session on this thread from inside its own
            // poll (none does today): a buffer of this read's own.
            Err(_) => self.poll_read_into(cx, r, w, &mut vec![0; SCRATCH]),
        })
    }

    fn poll_read_into<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
        w: &mut W,
        scratch: &mut [u8],
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        let mut buf = ReadBuf::new(scratch);
        ready!(Pin::new(&mut *r).poll_read(cx, &mut buf))?;
        let read = buf.filled();
        if read.is_empty() {
            self.read_done = true;
            return Poll::Ready(Ok(()));
        }
        let n = write_now(cx, w, read)?;
        self.took(n);
        if n < read.len() {
            self.unwritten = read[n..].to_vec();
            self.at = 0;
        }
        Poll::Ready(Ok(()))
    }

    /// `n` bytes went to the writer.
    fn took(&mut self, n: usize) {
        if n > 0 {
            self.moved += n as u64;
            self.need_flush = true;
        }
    }
}

/// Writes as much of `bytes` as `w` takes now and says how much it took; a writer that is not
/// ready stops it (its waker is registered).
fn write_now<W>(cx: &mut Context<'_>, w: &mut W, bytes: &[u8]) -> io::Result<usize>
where
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut at = 0;
    while at < bytes.len() {
        match Pin::new(&mut *w).poll_write(cx, &bytes[at..]) {
            Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Poll::Ready(Ok(n)) => at += n,
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => break,
        }
    }
    Ok(at)
}

/// Copies `a` to `b` and `b` to `a` until both directions have ended; returns the bytes moved
/// (a→b, b→a). The first error of either direction ends the copy.
pub async fn copy_both<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut a_to_b = Direction::default();
    let mut b_to_a = Direction::default();
    poll_fn(|cx| {
        let ab = a_to_b.poll_pump(cx, a, b)?;
        let ba = b_to_a.poll_pump(cx, b, a)?;
        match (ab, ba) {
            (Poll::Ready(()), Poll::Ready(())) => Poll::Ready(Ok((a_to_b.moved, b_to_a.moved))),
            _ => Poll::Pending,
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn moves_both_ways_byte_exact_with_half_close() {
        let (mut a, a_far) = tokio::io::duplex(1024);
        let (mut b, b_far) = tokio::io::duplex(1024);
        let pump = tokio::spawn(async move { copy_both(&mut a, &mut b).await });
        // More than the pipes and the scratch buffer hold, so writes are partial and wait.
        let up: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let down: Vec<u8> = (0..150_000u32).map(|i| (i * 13 % 241) as u8).collect();
        let (up2, down2) = (up.clone(), down.clone());
        let (mut a_r, mut a_w) = tokio::io::split(a_far);
        let (mut b_r, mut b_w) = tokio::io::split(b_far);
        let writer_a = tokio::spawn(async move {
            a_w.write_all(&up2).await.unwrap();
            a_w.shutdown().await.unwrap();
        });
        let reader_b = tokio::spawn(async move {
            let mut got = Vec::new();
            b_r.read_to_end(&mut got).await.unwrap();
            got
        });
        // The other direction keeps going after a→b has ended.
        assert_eq!(reader_b.await.unwrap(), up);
        writer_a.await.unwrap();
        let reader_a = tokio::spawn(async move {
            let mut got = Vec::new();
            a_r.read_to_end(&mut got).await.unwrap();
            got
        });
        b_w.write_all(&down2).await.unwrap();
        b_w.shutdown().await.unwrap();
        assert_eq!(reader_a.await.unwrap(), down);
        let (ab, ba) = pump.await.unwrap().unwrap();
        assert_eq!((ab, ba), (up.len() as u64, down.len() as u64));
    }

    #[tokio::test]
    async fn an_idle_direction_holds_no_buffer() {
        let mut d = Direction::default();
        let (mut r, mut r_far) = tokio::io::duplex(64);
        let (mut w, mut w_far) = tokio::io::duplex(8);
        r_far.write_all(b"0123456789abcdef").await.unwrap();
        // The writer takes 8 bytes: the other 8 wait in the direction's own buffer.
        let polled = poll_fn(|cx| Poll::Ready(d.poll_pump(cx, &mut r, &mut w))).await;
        assert!(polled.is_pending());
        assert_eq!(d.unwritten.len() - d.at, 8);
        let mut got = [0u8; 16];
        w_far.read_exact(&mut got[..8]).await.unwrap();
        let polled = poll_fn(|cx| Poll::Ready(d.poll_pump(cx, &mut r, &mut w))).await;
        assert!(polled.is_pending());
        w_far.read_exact(&mut got[8..]).await.unwrap();
        assert_eq!(&got, b"0123456789abcdef");
        // Everything written and nothing to read: no buffer is kept.
        assert_eq!(d.unwritten.capacity(), 0);
        assert_eq!(d.moved, 16);
    }

    #[tokio::test]
    async fn a_writer_error_ends_the_copy() {
        let (mut a, mut a_far) = tokio::io::duplex(64);
        let (mut b, b_far) = tokio::io::duplex(64);
        drop(b_far);
        a_far.write_all(b"to nowhere").await.unwrap();
        let r = copy_both(&mut a, &mut b).await;
        assert!(r.is_err(), "{r:?}");
    }
}
