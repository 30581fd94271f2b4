//! The moderated Kubernetes sessions this proxy relays, as others join them
//! (`hop join SESSION --mode moderator|observer`).
//!
//! This module owns the in-process table of those sessions (by session id, for as long as the
//! session's relay holds its [`PartyGuard`]), what each shares with its joiners (the output of
//! the container, the last [`REPLAY`] bytes of it replayed to a newcomer), who is in it besides
//! its owner, the notices its owner reads (who joined and left), and whether the people in it
//! meet the owner's `require_session_join` (`hop_rbac::moderation`; the owner never counts).
//! Who may join is decided by the join route (`routes::join`) before a joiner reaches
//! [`serve_joiner`]; a joiner's own bytes are read and dropped (an observer or a moderator
//! watches; Kubernetes sessions take no peers), but for a moderator's request to end the session
//! for everyone (`MODERATOR_TERMINATE`, what `hop join` sends on `t`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use hop_api::dial::join::TerminateScanner;
use hop_rbac::moderation::{OnLeave, Participant, SessionJoinRequirement};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc, watch};

/// Recent output replayed to a joiner.
pub const REPLAY: usize = 64 * 1024;
/// Notices that may wait for the owner's stream.
const NOTICES: usize = 32;

/// Someone in a session other than its owner, as the join route admitted them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joiner {
    pub user: String,
    /// Their roles (what a requirement's filter reads).
    pub roles: Vec<String>,
    /// `moderator` or `observer`.
    pub mode: String,
}

/// One moderated session, shared with its joiners.
#[derive(Debug)]
pub struct KubeLive {
    /// The Hop user who started it.
    pub owner: String,
    output: broadcast::Sender<Arc<[u8]>>,
    recent: Mutex<VecDeque<u8>>,
    /// Lines for the owner (and the recording): who joined and left, pauses.
    notices: mpsc::Sender<String>,
    participants: Mutex<Vec<(u64, Joiner)>>,
    /// Bumped when someone joins or leaves.
    changed: watch::Sender<u64>,
    /// Set once the session has ended: joiners are let go.
    ended: watch::Sender<bool>,
    /// The moderator who ended the session for everyone, once one has.
    terminated_by: watch::Sender<Option<String>>,
}

impl KubeLive {
    /// Who is in the session besides its owner now.
    pub fn participants(&self) -> Vec<Joiner> {
        self.participants
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(_, j)| j.clone())
            .collect()
    }

    /// Told when someone joins or leaves.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Tells the owner `line` (dropped when the owner's stream is that far behind).
    pub fn notice(&self, line: String) {
        let _ = self.notices.try_send(line);
    }

    /// A moderator ends the session for everyone; the first one to ask is the one named.
    pub fn terminate(&self, moderator: &str) {
        self.terminated_by.send_if_modified(|by| {
            if by.is_some() {
                return false;
            }
            *by = Some(moderator.to_string());
            true
        });
    }

    /// Told which moderator ended the session, once one has.
    pub fn terminated(&self) -> watch::Receiver<Option<String>> {
        self.terminated_by.subscribe()
    }

    /// Shares the container's output with joiners.
    pub fn publish(&self, data: &[u8]) {
        {
            let mut r = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
            r.extend(data);
            let excess = r.len().saturating_sub(REPLAY);
            r.drain(..excess);
        }
        // Nobody watching is not an error.
        let _ = self.output.send(Arc::from(data));
    }

    /// The first of `reqs` the people now in the session do not meet, in words (`None`: all
    /// are met). The owner never counts.
    pub fn unmet(&self, reqs: &[SessionJoinRequirement]) -> Option<String> {
        let joined = self.counted();
        hop_rbac::moderation::unmet(reqs, &people(&joined))
    }

    /// What a running session does now that `reqs` are not met.
    pub fn on_leave(&self, reqs: &[SessionJoinRequirement]) -> OnLeave {
        let joined = self.counted();
        hop_rbac::moderation::on_leave(reqs, &people(&joined))
    }

    fn counted(&self) -> Vec<Joiner> {
        self.participants()
            .into_iter()
            .filter(|j| j.user != self.owner)
            .collect()
    }

    fn arrive(&self, joiner: &Joiner) -> u64 {
        let ticket = rand::random::<u64>();
        self.participants
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((ticket, joiner.clone()));
        self.changed.send_modify(|n| *n += 1);
        ticket
    }

    fn leave(&self, ticket: u64) {
        self.participants
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(t, _)| *t != ticket);
        self.changed.send_modify(|n| *n += 1);
    }
}

/// The moderator who ended the session, once one has (from [`KubeLive::terminated`]); never
/// when the session goes away first.
pub async fn terminated_by(rx: &mut watch::Receiver<Option<String>>) -> String {
    let who = rx
        .wait_for(Option::is_some)
        .await
        .ok()
        .and_then(|b| b.clone());
    match who {
        Some(w) => w,
        None => std::future::pending().await,
    }
}

fn people(joined: &[Joiner]) -> Vec<Participant<'_>> {
    joined
        .iter()
        .map(|j| Participant {
            user: &j.user,
            roles: &j.roles,
            mode: &j.mode,
        })
        .collect()
}

/// The moderated sessions this proxy relays, by session id.
#[derive(Debug, Default)]
pub struct KubeParties {
    sessions: Mutex<HashMap<String, Arc<KubeLive>>>,
}

/// Takes a session out of the table, and lets its joiners go, when its relay ends.
pub struct PartyGuard {
    parties: Arc<KubeParties>,
    id: String,
    live: Arc<KubeLive>,
}

impl Drop for PartyGuard {
    fn drop(&mut self) {
        self.parties
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
        self.live.ended.send_replace(true);
    }
}

/// What the session's relay keeps: the shared session, the owner's notices, the guard.
pub struct Hosted {
    pub live: Arc<KubeLive>,
    pub notices: mpsc::Receiver<String>,
    pub guard: PartyGuard,
}

/// Why a session cannot be hosted.
#[derive(Debug, thiserror::Error)]
#[error("session {0} is already relayed here")]
pub struct AlreadyHosted(String);

impl KubeParties {
    /// Makes session `id` of `owner` joinable while the returned guard lives.
    pub fn host(self: &Arc<Self>, id: &str, owner: &str) -> Result<Hosted, AlreadyHosted> {
        let (notice_tx, notices) = mpsc::channel(NOTICES);
        let live = Arc::new(KubeLive {
            owner: owner.to_string(),
            output: broadcast::channel(256).0,
            recent: Mutex::new(VecDeque::new()),
            notices: notice_tx,
            participants: Mutex::new(Vec::new()),
            changed: watch::Sender::new(0),
            ended: watch::Sender::new(false),
            terminated_by: watch::Sender::new(None),
        });
        let mut m = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        if m.contains_key(id) {
            return Err(AlreadyHosted(id.to_string()));
        }
        m.insert(id.to_string(), live.clone());
        Ok(Hosted {
            live: live.clone(),
            notices,
            guard: PartyGuard {
                parties: self.clone(),
                id: id.to_string(),
                live,
            },
        })
    }

    /// The live session `id`, when this proxy relays it.
    pub fn get(&self, id: &str) -> Option<Arc<KubeLive>> {
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }
}

/// Serves one joiner on `stream`: the recent output, then the live output until the session
/// ends or the joiner leaves; what the joiner sends is read and dropped. The owner is told who
/// joined and left.
pub async fn serve_joiner<S>(live: Arc<KubeLive>, joiner: Joiner, stream: S)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut rx = live.output.subscribe();
    let mut ended = live.ended.subscribe();
    let replay: Vec<u8> = live
        .recent
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .copied()
        .collect();
    live.notice(format!("{} joined as {}", joiner.user, joiner.mode));
    let ticket = live.arrive(&joiner);
    let (mut r, mut w) = tokio::io::split(stream);
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
    let moderator = joiner.mode == "moderator";
    let input = async {
        let mut buf = vec![0u8; 4096];
        let mut terminate = TerminateScanner::default();
        while let Ok(n) = r.read(&mut buf).await {
            if n == 0 {
                return;
            }
            if moderator && terminate.push(buf.get(..n).unwrap_or_default()) {
                live.terminate(&joiner.user);
            }
        }
    };
    tokio::select! {
        () = out => {}
        () = input => {}
        _ = ended.wait_for(|e| *e) => {}
    }
    live.leave(ticket);
    live.notice(format!("{} left", joiner.user));
    let _ = w.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(count: u32) -> SessionJoinRequirement {
        SessionJoinRequirement {
            name: "auditors".into(),
            filter: r#"contains(user.spec.roles, "auditor")"#.into(),
            kinds: vec!["k8s".into()],
            count,
            modes: vec!["moderator".into()],
            on_leave: None,
        }
    }

    fn joiner(user: &str, mode: &str) -> Joiner {
        Joiner {
            user: user.into(),
            roles: vec!["auditor".into()],
            mode: mode.into(),
        }
    }

    #[tokio::test]
    async fn a_moderator_joins_is_told_of_and_counts_until_they_leave() {
        let parties = Arc::new(KubeParties::default());
        let mut hosted = parties.host("s1", "bob").unwrap();
        assert!(parties.host("s1", "bob").is_err(), "one relay per session");
        let reqs = [req(1)];
        assert!(hosted.live.unmet(&reqs).unwrap().contains("(0 present)"));
        hosted.live.publish(b"before");
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        let live = hosted.live.clone();
        let task = tokio::spawn(serve_joiner(live, joiner("alice", "moderator"), theirs));
        assert_eq!(
            hosted.notices.recv().await.unwrap(),
            "alice joined as moderator"
        );
        assert!(hosted.live.unmet(&reqs).is_none());
        let (mut r, w) = tokio::io::split(ours);
        let mut got = [0u8; 6];
        r.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"before", "the recent output is replayed");
        hosted.live.publish(b"after");
        let mut got = [0u8; 5];
        r.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"after");
        drop((r, w));
        task.await.unwrap();
        assert_eq!(hosted.notices.recv().await.unwrap(), "alice left");
        assert!(hosted.live.unmet(&reqs).is_some());
        assert_eq!(hosted.live.on_leave(&reqs), OnLeave::Terminate);
    }

    #[tokio::test]
    async fn the_owner_never_counts_and_joiners_go_when_the_session_ends() {
        let parties = Arc::new(KubeParties::default());
        let hosted = parties.host("s2", "bob").unwrap();
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        let live = hosted.live.clone();
        let task = tokio::spawn(serve_joiner(live, joiner("bob", "moderator"), theirs));
        while hosted.live.participants().is_empty() {
            tokio::task::yield_now().await;
        }
        assert!(hosted.live.unmet(&[req(1)]).is_some());
        drop(hosted.guard);
        task.await.unwrap();
        assert!(parties.get("s2").is_none());
        drop(ours);
    }

    #[tokio::test]
    async fn only_a_moderator_ends_the_session_for_everyone() {
        let parties = Arc::new(KubeParties::default());
        let hosted = parties.host("s4", "bob").unwrap();
        let ended = hosted.live.terminated();
        let request = hop_api::dial::join::MODERATOR_TERMINATE;
        for (user, mode) in [("olga", "observer"), ("mona", "moderator")] {
            let (mut ours, theirs) = tokio::io::duplex(1 << 16);
            let live = hosted.live.clone();
            let task = tokio::spawn(serve_joiner(live, joiner(user, mode), theirs));
            let (head, tail) = request.split_at(3);
            ours.write_all(head).await.unwrap();
            ours.write_all(tail).await.unwrap();
            drop(ours);
            task.await.unwrap();
        }
        assert_eq!(ended.borrow().as_deref(), Some("mona"));
        hosted.live.terminate("max");
        assert_eq!(
            ended.borrow().as_deref(),
            Some("mona"),
            "the first one is named"
        );
    }

    #[test]
    fn recent_output_is_bounded() {
        let parties = Arc::new(KubeParties::default());
        let hosted = parties.host("s3", "bob").unwrap();
        hosted.live.publish(&vec![b'a'; REPLAY]);
        hosted.live.publish(b"tail");
        let r = hosted.live.recent.lock().unwrap();
        assert_eq!(r.len(), REPLAY);
        assert!(r.iter().rev().take(4).eq(b"liat".iter()));
    }
}
