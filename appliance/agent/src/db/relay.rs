//! The audited relay of one database session at the agent, shared by PostgreSQL and MySQL.
//!
//! This module owns moving bytes both ways after start-up and ending a session when the audit
//! says so. Every chunk from the client goes through the protocol's inspector before a byte of
//! it reaches the database; the inspector forwards it, replaces it, or ends the session with a
//! [`Refusal`]. A refused chunk is never forwarded. The agent then closes its side toward the
//! database, passes on what the database still sends until the database closes (so that the
//! client's stream ends between two messages), and only then writes the refusal's reply (an
//! ErrorResponse or an ERR packet) and closes the client's side. A database that does not close
//! within [`REFUSAL_GRACE`] (a long query still running) is cut off without the reply: the
//! client would otherwise read it in the middle of a message.

use std::time::Duration;

use hop_platform::clock;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How long a refused session waits for the database to close before it is cut off.
pub const REFUSAL_GRACE: Duration = Duration::from_secs(3);

const RELAY_BUFFER: usize = 64 * 1024;

/// What to do with one chunk from the client.
pub enum Verdict {
    /// Forward it unchanged.
    Forward,
    /// Forward these bytes instead.
    Replace(Vec<u8>),
    /// Forward nothing more: end the session.
    End(Refusal),
}

/// Why the agent ends a session, and what the client reads about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// For the audit log (`db.session.end`'s reason).
    pub reason: String,
    /// The protocol's error message for the client, written after the database's last byte.
    pub reply: Vec<u8>,
}

/// How a relay ended.
#[derive(Debug, Default)]
pub struct Ended {
    /// Bytes forwarded client → database.
    pub up: u64,
    /// Bytes forwarded database → client.
    pub down: u64,
    /// Why, when not both sides closing: a refusal or an IO error.
    pub reason: Option<String>,
}

/// Relays until both directions end; `inspect` sees each client chunk first (see the module
/// docs). `client_pending`/`db_pending` are bytes read during start-up, not yet relayed.
pub async fn relay<C, D>(
    client: C,
    client_pending: Vec<u8>,
    db: D,
    db_pending: Vec<u8>,
    inspect: impl FnMut(&[u8]) -> Verdict + Send,
) -> Ended
where
    C: AsyncRead + AsyncWrite + Unpin + Send,
    D: AsyncRead + AsyncWrite + Unpin + Send,
{
    relay_with_grace(
        client,
        client_pending,
        db,
        db_pending,
        inspect,
        REFUSAL_GRACE,
    )
    .await
}

async fn relay_with_grace<C, D>(
    client: C,
    client_pending: Vec<u8>,
    db: D,
    db_pending: Vec<u8>,
    mut inspect: impl FnMut(&[u8]) -> Verdict + Send,
    grace: Duration,
) -> Ended
where
    C: AsyncRead + AsyncWrite + Unpin + Send,
    D: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (mut client_r, mut client_w) = tokio::io::split(client);
    let (mut db_r, mut db_w) = tokio::io::split(db);
    let (refused_tx, refused_rx) = tokio::sync::oneshot::channel::<Refusal>();
    let upstream = async {
        let mut moved = 0u64;
        let mut buf = vec![0u8; RELAY_BUFFER];
        let mut chunk = client_pending;
        loop {
            if !chunk.is_empty() {
                let verdict = inspect(&chunk);
                let out = match &verdict {
                    Verdict::Forward => chunk.as_slice(),
                    Verdict::Replace(bytes) => bytes.as_slice(),
                    Verdict::End(refusal) => {
                        // The refusal is on its way before the database can close.
                        let reason = refusal.reason.clone();
                        let _ = refused_tx.send(refusal.clone());
                        let _ = db_w.shutdown().await;
                        return (moved, Some(reason));
                    }
                };
                if let Err(e) = db_w.write_all(out).await {
                    return (moved, Some(e.to_string()));
                }
                moved += out.len() as u64;
            }
            let n = match client_r.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => return (moved, Some(e.to_string())),
            };
            if n == 0 {
                let _ = db_w.shutdown().await;
                return (moved, None);
            }
            chunk.clear();
            chunk.extend_from_slice(buf.get(..n).unwrap_or_default());
        }
    };
    let downstream = async {
        let (moved, error, refusal) =
            pass_down(&mut db_r, &mut client_w, db_pending, refused_rx, grace).await;
        if let Some(r) = &refusal {
            let _ = client_w.write_all(&r.reply).await;
        }
        let _ = client_w.shutdown().await;
        (moved, error)
    };
    let ((up, up_reason), (down, down_error)) = tokio::join!(upstream, downstream);
    Ended {
        up,
        down,
        // A refusal is why; failing to pass its reply on is not.
        reason: up_reason.or(down_error),
    }
}

/// Database → client until the database closes; after a refusal arrives, for at most
/// `grace`. Returns the bytes moved, an IO error, and the refusal whose reply may now
/// be written (none when the database was cut off mid-stream).
async fn pass_down<R, W>(
    db: &mut R,
    client: &mut W,
    pending: Vec<u8>,
    mut refused: tokio::sync::oneshot::Receiver<Refusal>,
    grace: Duration,
) -> (u64, Option<String>, Option<Refusal>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut moved = 0u64;
    if !pending.is_empty() {
        if let Err(e) = client.write_all(&pending).await {
            return (moved, Some(e.to_string()), None);
        }
        moved += pending.len() as u64;
    }
    let mut buf = vec![0u8; RELAY_BUFFER];
    let mut refusal: Option<Refusal> = None;
    let mut upstream_done = false;
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let cut_off = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            read = db.read(&mut buf) => {
                // The database may close on the refusal before this loop has taken it.
                if !upstream_done && !matches!(read, Ok(n) if n > 0) {
                    refusal = refused.try_recv().ok();
                }
                match read {
                    Ok(0) => return (moved, None, refusal),
                    Ok(n) => {
                        if let Err(e) = client.write_all(buf.get(..n).unwrap_or_default()).await {
                            return (moved, Some(e.to_string()), None);
                        }
                        moved += n as u64;
                    }
                    // After a refusal, a database that closes without TLS's close_notify
                    // (MariaDB) has ended all the same.
                    Err(_) if refusal.is_some() => return (moved, None, refusal),
                    Err(e) => return (moved, Some(e.to_string()), None),
                }
            },
            r = &mut refused, if !upstream_done => {
                upstream_done = true;
                // An error: the upstream ended without a refusal; relay until the database
                // closes.
                if let Ok(r) = r {
                    refusal = Some(r);
                    deadline = Some(clock::tokio_now() + grace);
                }
            },
            () = cut_off => return (moved, None, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refuse_on(word: &'static [u8]) -> impl FnMut(&[u8]) -> Verdict + Send {
        move |chunk: &[u8]| {
            if chunk.windows(word.len()).any(|w| w == word) {
                Verdict::End(Refusal {
                    reason: "refused".into(),
                    reply: b"<error>".to_vec(),
                })
            } else {
                Verdict::Forward
            }
        }
    }

    /// A refused chunk never reaches the database; the database's earlier answer reaches the
    /// client before the reply, and both sides are closed.
    #[tokio::test]
    async fn a_refusal_ends_the_session_after_the_databases_last_byte() {
        let (client, mut client_peer) = tokio::io::duplex(1024);
        let (db, mut db_peer) = tokio::io::duplex(1024);
        let session = tokio::spawn(relay(client, Vec::new(), db, Vec::new(), refuse_on(b"BAD")));
        client_peer.write_all(b"good").await.unwrap();
        let mut got = [0u8; 4];
        db_peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"good");
        client_peer.write_all(b"BAD").await.unwrap();
        // The database sees its input end (nothing of the refused chunk), answers, closes.
        let mut rest = Vec::new();
        db_peer.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        db_peer.write_all(b"answer").await.unwrap();
        drop(db_peer);
        let mut seen = Vec::new();
        client_peer.read_to_end(&mut seen).await.unwrap();
        assert_eq!(seen, b"answer<error>");
        let ended = session.await.unwrap();
        assert_eq!(ended.reason.as_deref(), Some("refused"));
        assert_eq!((ended.up, ended.down), (4, 6));
    }

    /// A database that keeps its connection open past the grace is cut off, without a reply
    /// the client could read mid-message.
    #[tokio::test]
    async fn a_database_that_does_not_close_is_cut_off() {
        let (client, mut client_peer) = tokio::io::duplex(1024);
        let (db, _db_peer) = tokio::io::duplex(1024);
        let session = tokio::spawn(relay_with_grace(
            client,
            b"BAD".to_vec(),
            db,
            Vec::new(),
            refuse_on(b"BAD"),
            Duration::from_millis(100),
        ));
        let mut seen = Vec::new();
        client_peer.read_to_end(&mut seen).await.unwrap();
        assert!(seen.is_empty());
        assert_eq!(session.await.unwrap().reason.as_deref(), Some("refused"));
    }

    #[tokio::test]
    async fn clean_ends_have_no_reason() {
        let (client, mut client_peer) = tokio::io::duplex(1024);
        let (db, mut db_peer) = tokio::io::duplex(1024);
        let session = tokio::spawn(relay(
            client,
            b"hi".to_vec(),
            db,
            b"yo".to_vec(),
            |_: &[u8]| Verdict::Forward,
        ));
        client_peer.shutdown().await.unwrap();
        let mut got = Vec::new();
        db_peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hi");
        drop(db_peer);
        let mut seen = Vec::new();
        client_peer.read_to_end(&mut seen).await.unwrap();
        assert_eq!(seen, b"yo");
        let ended = session.await.unwrap();
        assert_eq!((ended.up, ended.down, ended.reason), (2, 2, None));
    }
}
