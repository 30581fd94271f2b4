//! The deadline for an SSH client to authenticate, shared by the proxy's jump host and node
//! agents' SSH server (both russh servers).
//!
//! This module owns one thing: a timer that authentication disarms, and that otherwise cuts the
//! connection. The banner exchange, key exchange and user authentication must all finish within
//! the deadline. russh runs a session in a task of its own, so dropping the session's future
//! would not close it: the timer lives in the connection's stream instead ([`DeadlineStream`]),
//! whose reads and writes fail once the deadline passes, which ends the session and closes the
//! socket wherever russh is waiting (for a banner, a key exchange message, an authentication
//! request). The connection's handler holds an [`AuthDone`] and calls
//! [`AuthDone::authenticated`] from russh's `auth_succeeded`; from then on the session runs under
//! its own idle rules.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

/// The client did not authenticate within the deadline.
#[derive(Debug, thiserror::Error)]
#[error("the SSH client did not authenticate within {0:?}")]
pub struct AuthDeadlinePassed(pub Duration);

/// Held by a connection's handler: disarms the deadline once the client authenticated.
#[derive(Debug)]
pub struct AuthDone(Option<oneshot::Sender<()>>);

impl AuthDone {
    /// The client authenticated: the deadline no longer applies. Idempotent.
    pub fn authenticated(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// The timer side of the deadline, consumed by [`AuthDeadline::guard`].
#[derive(Debug)]
pub struct AuthDeadline {
    limit: Duration,
    done: oneshot::Receiver<()>,
}

impl AuthDeadline {
    /// A deadline of `limit`, and the handle that disarms it.
    pub fn new(limit: Duration) -> (Self, AuthDone) {
        let (tx, rx) = oneshot::channel();
        (Self { limit, done: rx }, AuthDone(Some(tx)))
    }

    /// `stream`, cut when the deadline passes before authentication.
    pub fn guard<S>(self, stream: S) -> DeadlineStream<S> {
        let Self { limit, done } = self;
        // True when the deadline passed first; false once disarmed (or once the handler is gone:
        // the session is ending on its own).
        let expired = async move { tokio::time::timeout(limit, done).await.is_err() };
        DeadlineStream {
            inner: stream,
            state: State::Armed(Box::pin(expired)),
            limit,
        }
    }
}

/// A stream whose reads and writes fail with [`io::ErrorKind::TimedOut`] once its deadline has
/// passed undisarmed.
pub struct DeadlineStream<S> {
    inner: S,
    state: State,
    limit: Duration,
}

/// Where a [`DeadlineStream`]'s deadline stands.
enum State {
    /// Running: resolves to true when the deadline passed first, false once disarmed.
    Armed(Pin<Box<dyn Future<Output = bool> + Send>>),
    Disarmed,
    Expired,
}

impl<S> DeadlineStream<S> {
    /// Fails once the deadline has passed; registers the task to be woken when it does.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if let State::Armed(expired) = &mut self.state {
            match expired.as_mut().poll(cx) {
                Poll::Ready(true) => self.state = State::Expired,
                Poll::Ready(false) => self.state = State::Disarmed,
                Poll::Pending => {}
            }
        }
        match self.state {
            State::Expired => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                AuthDeadlinePassed(self.limit),
            )),
            State::Armed(_) | State::Disarmed => Ok(()),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for DeadlineStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for DeadlineStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hop_platform::clock;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const LIMIT: Duration = Duration::from_millis(100);

    #[tokio::test]
    async fn a_silent_unauthenticated_client_is_cut_at_the_deadline() {
        let (server, _client) = tokio::io::duplex(64);
        let (deadline, _done) = AuthDeadline::new(LIMIT);
        let mut s = deadline.guard(server);
        let started = clock::now();
        let err = s.read_u8().await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(
            clock::since(started) >= LIMIT,
            "{:?}",
            clock::since(started)
        );
        // It stays cut.
        assert!(s.write_all(b"x").await.is_err());
        assert!(s.read_u8().await.is_err());
    }

    #[tokio::test]
    async fn authentication_disarms_it() {
        let (server, mut client) = tokio::io::duplex(64);
        let (deadline, mut done) = AuthDeadline::new(LIMIT);
        let mut s = deadline.guard(server);
        client.write_all(b"a").await.unwrap();
        assert_eq!(s.read_u8().await.unwrap(), b'a');
        done.authenticated();
        done.authenticated();
        let late = async {
            tokio::time::sleep(LIMIT * 3).await;
            client.write_all(b"b").await.unwrap();
            client
        };
        let (got, _client) = tokio::join!(s.read_u8(), late);
        assert_eq!(got.unwrap(), b'b');
    }

    #[tokio::test]
    async fn a_gone_handler_disarms_it_too() {
        let (server, mut client) = tokio::io::duplex(64);
        let (deadline, done) = AuthDeadline::new(LIMIT);
        drop(done);
        let mut s = deadline.guard(server);
        tokio::time::sleep(LIMIT * 2).await;
        client.write_all(b"c").await.unwrap();
        assert_eq!(s.read_u8().await.unwrap(), b'c');
    }
}
