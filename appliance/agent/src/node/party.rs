//! Live session sharing at the node (`hop join SESSION --mode observer|peer`).
//!
//! This module owns the table of the node's interactive sessions that others may join: each
//! publishes its terminal output to a broadcast channel and keeps the last [`REPLAY`] bytes, so
//! that a joiner first sees the recent screen, then the live output; a peer's keystrokes go into
//! the session's terminal through a bounded queue; the session's owner is told who joined and
//! left, and who is in it now (what a moderated session, `super::moderation`, decides on), and
//! when a moderator ends the session for everyone (`MODERATOR_TERMINATE` on their stream). Who
//! may join is decided by the proxy (roles' `join_sessions`) before the Dial reaches the node; the
//! node only serves sessions it hosts and ends a joiner's stream when the session ends. A peer's
//! keystrokes reach the terminal; an observer's and a moderator's are read and dropped (but for
//! a moderator's request to end the session).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use hop_api::dial::join::{JoinDial, TerminateScanner};
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
    /// The moderator who ended the session for everyone, once one has.
    terminated_by: watch::Sender<Option<String>>,
    /// Set when the session has ended: joiners' streams end with it.
    ended: watch::Sender<bool>,
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

    /// Told when a moderator ends the session (`hop join --mode moderator`, then `t`).
    pub fn terminations(&self) -> watch::Receiver<Option<String>> {
        self.terminated_by.subscribe()
    }

    /// A moderator ends the session; the first one to ask is the one named.
    fn terminate(&self, moderator: &str) {
        self.terminated_by.send_if_modified(|by| {
            if by.is_some() {
                return false;
            }
            *by = Some(moderator.to_string());
            true
        });
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
        let live = self
            .parties
            .sessions
            .lock()
            .ok()
            .and_then(|mut m| m.remove(&self.id));
        if let Some(live) = live {
            live.ended.send_replace(true);
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
            terminated_by: watch::Sender::new(None),
            ended: watch::Sender::new(false),
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
    let mut ended = live.ended.subscribe();
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
    let moderator = join.mode == "moderator";
    let mut terminate = TerminateScanner::default();
    let out = async {
        if w.write_all(&replay).await.is_err() {
            return;
        }
        loop {
            let got = tokio::select! {
                biased;
                got = rx.recv() => got,
                // The session is over: what it wrote last, then the end of the stream.
                () = async { drop(ended.wait_for(|e| *e).await) } => {
                    while let Ok(b) = rx.try_recv() {
                        if w.write_all(&b).await.is_err() {
                            return;
                        }
                    }
                    return;
                }
            };
            match got {
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
            let bytes = buf.get(..n).unwrap_or_default();
            if moderator && terminate.push(bytes) {
                live.terminate(&join.user);
            }
            if peer && live.input.send(bytes.to_vec()).await.is_err() {
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

    #[tokio::test]
    async fn a_joiner_gets_the_last_output_and_the_end_of_its_stream_when_the_session_ends() {
        let parties = Arc::new(Parties::default());
        let hosted = parties.host("s1");
        let (mut client, node_end) = tokio::io::duplex(1024);
        let join = JoinDial {
            session_id: "s1".into(),
            mode: "observer".into(),
            user: "olga".into(),
            roles: vec![],
        };
        let task = tokio::spawn(serve_joiner(hosted.live.clone(), join, node_end));
        // Joined once it is counted; then the session writes its last words and ends.
        while hosted.live.participants().is_empty() {
            tokio::task::yield_now().await;
        }
        hosted.live.publish(b"bye");
        drop(hosted);
        let mut seen = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            client.read_to_end(&mut seen),
        )
        .await
        .expect("the joiner's stream ends with the session")
        .unwrap();
        assert_eq!(seen, b"bye");
        task.await.unwrap();
    }

    #[tokio::test]
    async fn only_a_moderator_ends_the_session_for_everyone() {
        let parties = Arc::new(Parties::default());
        let hosted = parties.host("s1");
        let mut ended = hosted.live.terminations();
        for (user, mode) in [
            ("olga", "observer"),
            ("pete", "peer"),
            ("mona", "moderator"),
        ] {
            let (mut client, node_end) = tokio::io::duplex(1024);
            let join = JoinDial {
                session_id: "s1".into(),
                mode: mode.into(),
                user: user.into(),
                roles: vec![],
            };
            let task = tokio::spawn(serve_joiner(hosted.live.clone(), join, node_end));
            let (head, tail) = hop_api::dial::join::MODERATOR_TERMINATE.split_at(3);
            client.write_all(head).await.unwrap();
            client.write_all(tail).await.unwrap();
            drop(client);
            task.await.unwrap();
        }
        assert!(ended.has_changed().unwrap());
        assert_eq!(ended.borrow_and_update().as_deref(), Some("mona"));
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
