//! Live session sharing at the node (`hop join SESSION --mode observer|peer`).
//!
//! This module owns the table of the node's interactive sessions that others may join: each
//! publishes its terminal output to a broadcast channel and keeps the last [`REPLAY`] bytes, so
//! that a joiner first sees the recent screen, then the live output; a peer's keystrokes go into
//! the session's terminal through a bounded queue; the session's owner is told who joined and
//! left, and who is in it now (what a moderated session, `super::moderation`, decides on). Who
//! may join is decided by the proxy (roles' `join_sessions`) before the Dial reaches the node; the
//! node only serves sessions it hosts and ends a joiner's stream when the session ends. A peer's
//! keystrokes reach the terminal; an observer's and a moderator's are read and dropped.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use hop_api::dial::join::JoinDial;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc, watch};

/// Recent output replayed to a joiner.
pub const REPLAY: usize = 64 * 1024;

/// One shared session.
#[derive(Debug)]
pub struct LiveSession {
    output: broadcast::Sender<Arc<[u8]>>,
    recent: Mutex<VecDeque<u8>>,
    /// A peer's keystrokes, into the terminal.
    pub input: mpsc::Sender<Vec<u8>>,
    /// Messages for the owner's terminal (who joined, who left).
    pub notices: mpsc::Sender<String>,
    /// Who is in the session besides its owner, as they joined.
    participants: Mutex<Vec<(u64, JoinDial)>>,
    /// Bumped when someone joins or leaves (a moderated session decides again).
    changed: watch::Sender<u64>,
}

impl LiveSession {
    /// Who is in the session besides its owner now.
    pub fn participants(&self) -> Vec<JoinDial> {
        self.participants
            .lock()
            .map(|p| p.iter().map(|(_, j)| j.clone()).collect())
            .unwrap_or_default()
    }

    /// Told when someone joins or leaves.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn arrive(&self, join: &JoinDial) -> u64 {
        let ticket = rand::random::<u64>();
        if let Ok(mut p) = self.participants.lock() {
            p.push((ticket, join.clone()));
        }
        self.changed.send_modify(|n| *n += 1);
        ticket
    }

    fn leave(&self, ticket: u64) {
        if let Ok(mut p) = self.participants.lock() {
            p.retain(|(t, _)| *t != ticket);
        }
        self.changed.send_modify(|n| *n += 1);
    }

    /// Publishes terminal output to joiners.
    pub fn publish(&self, data: &[u8]) {
        if let Ok(mut r) = self.recent.lock() {
            r.extend(data);
            let excess = r.len().saturating_sub(REPLAY);
            r.drain(..excess);
        }
        // No joiner is not an error.
        let _ = self.output.send(Arc::from(data));
    }
}

/// The node's shared sessions, by session id.
#[derive(Debug, Default)]
pub struct Parties {
    sessions: Mutex<HashMap<String, Arc<LiveSession>>>,
}

/// Removes a session from the table when its terminal session ends.
pub struct PartyGuard {
    parties: Arc<Parties>,
    id: String,
}

impl Drop for PartyGuard {
    fn drop(&mut self) {
        if let Ok(mut m) = self.parties.sessions.lock() {
            m.remove(&self.id);
        }
    }
}

/// What the session's own task keeps: where peers' input and notices arrive.
pub struct Hosted {
    pub live: Arc<LiveSession>,
    pub input: mpsc::Receiver<Vec<u8>>,
    pub notices: mpsc::Receiver<String>,
    pub guard: PartyGuard,
}

impl Parties {
    /// Makes interactive session `id` joinable while the returned guard lives.
    pub fn host(self: &Arc<Self>, id: &str) -> Hosted {
        let (output, _) = broadcast::channel(256);
        let (input_tx, input) = mpsc::channel(64);
        let (notice_tx, notices) = mpsc::channel(16);
        let live = Arc::new(LiveSession {
            output,
            recent: Mutex::new(VecDeque::new()),
            input: input_tx,
            notices: notice_tx,
            participants: Mutex::new(Vec::new()),
            changed: watch::Sender::new(0),
        });
        if let Ok(mut m) = self.sessions.lock() {
            m.insert(id.to_string(), live.clone());
        }
        Hosted {
            live,
            input,
            notices,
            guard: PartyGuard {
                parties: self.clone(),
                id: id.to_string(),
            },
        }
    }

    pub fn get(&self, id: &str) -> Option<Arc<LiveSession>> {
        self.sessions.lock().ok()?.get(id).cloned()
    }
}

/// Serves one joiner on `stream` (the tunnel connection, after the Dial's answer): the recent
/// output, then live output until the session ends or the joiner leaves; a peer's bytes go into
/// the terminal, an observer's are read and dropped.
pub async fn serve_joiner<S>(live: Arc<LiveSession>, join: JoinDial, stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    let mut rx = live.output.subscribe();
    let replay: Vec<u8> = live
        .recent
        .lock()
        .map(|r| r.iter().copied().collect())
        .unwrap_or_default();
    let _ = live
        .notices
        .try_send(format!("{} joined as {}", join.user, join.mode));
    let ticket = live.arrive(&join);
    let (mut r, mut w) = tokio::io::split(stream);
    let peer = join.mode == "peer";
    let out = async {
        if w.write_all(&replay).await.is_err() {
            return;
        }
        loop {
            match rx.recv().await {
                Ok(b) => {
                    if w.write_all(&b).await.is_err() {
                        return;
                    }
                }
                // A slow joiner misses output rather than slowing the session.
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    let msg = format!("\r\n[hop: {n} output chunks skipped]\r\n");
                    if w.write_all(msg.as_bytes()).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    };
    let input = async {
        let mut buf = vec![0u8; 4096];
        loop {
            let n = match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if peer
                && live
                    .input
                    .send(buf.get(..n).unwrap_or_default().to_vec())
                    .await
                    .is_err()
            {
                return;
            }
        }
    };
    tokio::select! {
        () = out => {}
        () = input => {}
    }
    live.leave(ticket);
    let _ = live.notices.try_send(format!("{} left", join.user));
    let _ = w.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_output_is_bounded_and_the_table_forgets_ended_sessions() {
        let parties = Arc::new(Parties::default());
        let hosted = parties.host("s1");
        hosted.live.publish(&vec![b'a'; REPLAY]);
        hosted.live.publish(b"tail");
        let r = hosted.live.recent.lock().unwrap();
        assert_eq!(r.len(), REPLAY);
        assert!(r.iter().rev().take(4).eq(b"liat".iter()));
        drop(r);
        assert!(parties.get("s1").is_some());
        drop(hosted);
        assert!(parties.get("s1").is_none());
    }

    #[test]
    fn join_targets_round_trip() {
        let j = JoinDial {
            session_id: "ab".into(),
            mode: "peer".into(),
            user: "bob".into(),
            roles: vec!["auditor".into()],
        };
        assert_eq!(JoinDial::from_target(&j.to_target()).unwrap().unwrap(), j);
        assert!(JoinDial::from_target("@ssh").is_none());
    }

    #[tokio::test]
    async fn a_peer_types_into_the_session_and_sees_its_output() {
        let parties = Arc::new(Parties::default());
        let mut hosted = parties.host("s1");
        hosted.live.publish(b"before ");
        let (mut client, node_end) = tokio::io::duplex(1024);
        let live = hosted.live.clone();
        let task = tokio::spawn(serve_joiner(
            live,
            JoinDial {
                session_id: "s1".into(),
                mode: "peer".into(),
                user: "bob".into(),
                roles: vec![],
            },
            node_end,
        ));
        assert_eq!(hosted.notices.recv().await.unwrap(), "bob joined as peer");
        let joined: Vec<String> = hosted
            .live
            .participants()
            .into_iter()
            .map(|j| j.user)
            .collect();
        assert_eq!(joined, ["bob"]);
        let mut buf = [0u8; 7];
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"before ");
        hosted.live.publish(b"live");
        let mut buf = [0u8; 4];
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"live");
        client.write_all(b"ls\r").await.unwrap();
        assert_eq!(&hosted.input.recv().await.unwrap()[..], b"ls\r");
        drop(client);
        task.await.unwrap();
        assert_eq!(hosted.notices.recv().await.unwrap(), "bob left");
        assert!(hosted.live.participants().is_empty());
    }
}
