//! Audit events written by an agent, on their way to Auth.
//!
//! This module owns the agent's outgoing events: they are built with the same [`AuditEvent`]
//! type Auth uses, queued without blocking the session that produced them, batched (a batch
//! waits up to [`LINGER`] to fill, so that a database's stream of statements goes out in large
//! batches), and sent packed (`EmitEventsPacked`, [`hop_api::audit_wire`]); to an Auth older
//! than that rpc they go as JSON (`EmitEvents`), decided once per connection and logged. A failed
//! send is retried with backoff, and event ids make a resend idempotent (Auth stores an id once). It also decides when events go to the agent's disk spool
//! ([`super::spool`]): when a batch cannot be delivered (Auth unreachable or failing), from then
//! on every new event until the spool is empty again, and whenever more than [`SPILL_AT`] events
//! wait in memory. The spool is always sent first, oldest segment first, so events reach Auth in
//! the order they were made, across restarts of the agent. Events leave memory or the spool only
//! once Auth has made them durable. It must never drop an event silently: a full queue, a full
//! spool and a batch Auth refuses are counted (one counter per service) and logged with how many;
//! so are single events Auth refuses for breaking the rules for agents (`auth::agent_events`):
//! they are dropped with the rest of their batch, never resent, so they block nothing.
//! While Auth is up and the queue short, events live only in memory (at most [`SPILL_AT`] of
//! them are lost if the agent is killed then).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

use super::spool::{AuditSpool, AuditSpoolError, AuditSpoolSettings, SpoolBatch};
use crate::backoff::Backoff;
pub use hop_api::audit::{AuditEvent, EventKind};
use hop_api::proto::auth_public_client::AuthPublicClient;
use hop_api::proto::{
    EmitEventsPackedRequest, EmitEventsRequest, EmitEventsResponse, RefusedEvent,
};
use hop_platform::clock;

/// Most events waiting in memory (the channel, and as many again taken from it).
const QUEUE: usize = 10_000;
/// Most events per call (Auth takes up to `audit_wire::MAX_EVENTS`): a queue long enough to go
/// to the spool is one batch.
const BATCH: usize = SPILL_AT;
/// Most bytes of events per call (unless one event alone is larger).
const BATCH_BYTES: usize = 1024 * 1024;
/// How long a batch smaller than [`BATCH`] waits for more events before it is sent: a steady
/// stream (a database's statements) then costs Auth one call per batch, not one per event.
const LINGER: Duration = Duration::from_millis(10);
/// Events waiting in memory beyond which they move to the spool.
pub const SPILL_AT: usize = 500;
/// The longest pause between attempts to reach Auth.
const MAX_PAUSE: Duration = Duration::from_secs(30);

/// Where an agent's code sends events.
#[derive(Debug, Clone)]
pub struct AgentAudit {
    tx: mpsc::Sender<AuditEvent>,
    dropped: Arc<AtomicU64>,
    cluster: String,
    server: String,
}

/// Opens gRPC channels to Auth through the proxy with the agent's current identity.
pub type ChannelMaker = Arc<
    dyn Fn() -> futures_util::future::BoxFuture<
            'static,
            Result<tonic::transport::Channel, hop_net::connect::ConnectError>,
        > + Send
        + Sync,
>;

impl AgentAudit {
    /// Opens the spool, when there is one (its segments from an earlier run are sent first),
    /// and starts the sender task.
    pub fn start(
        cluster: String,
        server: String,
        connect: ChannelMaker,
        spool: Option<AuditSpoolSettings>,
    ) -> Result<Self, AuditSpoolError> {
        let spool = spool.as_ref().map(AuditSpool::open).transpose()?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let sender = Sender {
            rx,
            connect,
            spool,
            memory: VecDeque::new(),
            dropped: dropped.clone(),
            closed: false,
            spool_failing: false,
        };
        tokio::spawn(sender.run());
        Ok(Self {
            tx,
            dropped,
            cluster,
            server,
        })
    }

    /// Events dropped so far: the queue or the spool was full, or Auth refused them.
    #[cfg(test)]
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// A new event of `kind` by `user`, stamped now, naming this server.
    pub fn event(&self, kind: EventKind, user: &str) -> AuditEvent {
        AuditEvent::new(kind, &self.cluster, user, clock::wall())
            .field("server", self.server.clone())
    }

    /// Queues an event without waiting.
    pub fn emit(&self, ev: AuditEvent) {
        if let Err(e) = self.tx.try_send(ev) {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            let ev = match e {
                mpsc::error::TrySendError::Full(ev) | mpsc::error::TrySendError::Closed(ev) => ev,
            };
            // Logged at the 1st, 2nd, 4th, 8th… drop: a flood of drops must not become a flood
            // of log lines (the count is exact either way).
            if n.is_power_of_two() {
                tracing::error!(
                    event = ev.event,
                    dropped_total = n,
                    "audit queue full: events are being dropped ({n} so far)"
                );
            }
        }
    }
}

/// What a send carries: the first events in memory, or a batch read from the spool.
enum Outgoing {
    Memory(usize),
    Spool(SpoolBatch),
}

/// The events of one send, in the form they were held: built in memory, or JSON lines read
/// back from the spool.
enum Batch {
    Events(Vec<AuditEvent>),
    Lines(Vec<String>),
}

impl Batch {
    fn len(&self) -> usize {
        match self {
            Self::Events(e) => e.len(),
            Self::Lines(l) => l.len(),
        }
    }

    /// The batch packed for `EmitEventsPacked`; `None` if a spooled line cannot be read back
    /// as an event (it then goes as JSON, which Auth judges line by line).
    fn packed(&self) -> Option<Vec<u8>> {
        let bytes = match self {
            Self::Events(e) => hop_api::audit_wire::encode_batch(e),
            Self::Lines(lines) => {
                let now = clock::wall();
                let events = lines
                    .iter()
                    .map(|l| AuditEvent::from_json(l, now).ok())
                    .collect::<Option<Vec<_>>>()?;
                hop_api::audit_wire::encode_batch(&events)
            }
        };
        bytes.ok()
    }

    fn json(&self) -> Vec<String> {
        match self {
            Self::Events(e) => e.iter().map(to_json).collect(),
            Self::Lines(l) => l.clone(),
        }
    }
}

/// A connection to Auth, and whether it takes packed events (an Auth older than
/// `EmitEventsPacked` answers it `Unimplemented`: JSON is sent on that connection from then on).
struct AuthLink {
    client: AuthPublicClient<tonic::transport::Channel>,
    packed: bool,
}

impl AuthLink {
    fn new(channel: tonic::transport::Channel) -> Self {
        Self {
            client: AuthPublicClient::new(channel),
            packed: true,
        }
    }

    /// Sends `batch`, packed where Auth takes it. A packed batch Auth finds malformed goes
    /// again as JSON (the agent still holds it), so that an encoding fault loses no event.
    async fn send(&mut self, batch: &Batch) -> Result<EmitEventsResponse, tonic::Status> {
        if let Some(events) = self.packed.then(|| batch.packed()).flatten() {
            let sent = self
                .client
                .emit_events_packed(EmitEventsPackedRequest { events })
                .await;
            match sent {
                Err(s) if s.code() == tonic::Code::Unimplemented => {
                    self.packed = false;
                    tracing::warn!(
                        "Auth is older than this agent (it has no EmitEventsPacked): audit \
                         events go as JSON (EmitEvents) on this connection"
                    );
                }
                Err(s) if s.code() == tonic::Code::InvalidArgument => {
                    tracing::warn!(
                        error = %s.message(),
                        events = batch.len(),
                        "Auth refused a packed batch of audit events; sending it as JSON"
                    );
                }
                other => return other.map(tonic::Response::into_inner),
            }
        }
        let events_json = batch.json();
        self.client
            .emit_events(EmitEventsRequest { events_json })
            .await
            .map(tonic::Response::into_inner)
    }
}

/// The sender task's state; see the module documentation.
struct Sender {
    rx: mpsc::Receiver<AuditEvent>,
    connect: ChannelMaker,
    spool: Option<AuditSpool>,
    /// Events not on disk, oldest first: all newer than every event in the spool.
    memory: VecDeque<AuditEvent>,
    dropped: Arc<AtomicU64>,
    /// Every [`AgentAudit`] is gone.
    closed: bool,
    /// The last write to the spool failed (logged once until one succeeds).
    spool_failing: bool,
}

impl Sender {
    async fn run(mut self) {
        let mut backoff = Backoff::default();
        let mut client: Option<AuthLink> = None;
        loop {
            if self.memory.is_empty() && self.spool_is_empty() {
                if self.closed {
                    return;
                }
                match self.rx.recv().await {
                    Some(ev) => self.memory.push_back(ev),
                    None => self.closed = true,
                }
            }
            self.take_queued();
            if self.spool_is_empty() {
                self.linger().await;
            }
            if self.closed && self.spool.is_some() {
                // The service is gone (the agent is stopping): what is left waits on disk for
                // the next start.
                self.spill().await;
                return;
            }
            if !self.spool_is_empty() || self.memory.len() > SPILL_AT {
                self.spill().await;
            }
            // The oldest events: the spool's, else memory's.
            let (out, events) = if self.spool_is_empty() {
                let n = batch_len(self.memory.iter().map(wire_size));
                if n == 0 {
                    continue;
                }
                let events = self.memory.iter().take(n).cloned().collect();
                (Outgoing::Memory(n), Batch::Events(events))
            } else {
                match self.read_spool().await {
                    Ok(Some(mut b)) => {
                        let events = std::mem::take(&mut b.events);
                        if events.is_empty() {
                            // Only unreadable lines (already logged): nothing to send.
                            self.delivered(Outgoing::Spool(b)).await;
                            continue;
                        }
                        (Outgoing::Spool(b), Batch::Lines(events))
                    }
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot read the audit spool; retrying");
                        self.pause(backoff.next_delay(rand::random::<f64>())).await;
                        continue;
                    }
                }
            };
            let c = match &mut client {
                Some(c) => c,
                None => match (self.connect)().await {
                    Ok(ch) => client.insert(AuthLink::new(ch)),
                    Err(e) => {
                        self.spill().await;
                        tracing::warn!(
                            error = %hop_net::connect::error_chain(&e),
                            queued = self.memory.len(),
                            spooled_bytes = self.spooled_bytes(),
                            "cannot reach Auth to send audit events; retrying"
                        );
                        self.pause(backoff.next_delay(rand::random::<f64>())).await;
                        continue;
                    }
                },
            };
            let n = events.len();
            match c.send(&events).await {
                Ok(answer) => {
                    self.refused(&answer.refused);
                    self.delivered(out).await;
                    backoff.reset();
                }
                Err(status) if status.code() == tonic::Code::InvalidArgument => {
                    let total = self.dropped.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
                    tracing::error!(
                        error = %status.message(),
                        dropped = n,
                        dropped_total = total,
                        "Auth refused a batch of audit events; {n} events dropped"
                    );
                    self.delivered(out).await;
                }
                Err(status) => {
                    client = None;
                    self.spill().await;
                    tracing::warn!(
                        error = %status.message(),
                        queued = self.memory.len(),
                        spooled_bytes = self.spooled_bytes(),
                        "sending audit events failed; retrying"
                    );
                    self.pause(backoff.next_delay(rand::random::<f64>())).await;
                }
            }
        }
    }

    /// Events Auth refused for good (the rest of their batch is written): resending cannot help,
    /// so they leave with the batch, counted and logged here.
    fn refused(&self, refused: &[RefusedEvent]) {
        for r in refused {
            let total = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(
                event_id = %r.id,
                reason = %r.reason,
                error = %r.error,
                dropped_total = total,
                "Auth refused an audit event; it is dropped"
            );
        }
    }

    fn spool_is_empty(&self) -> bool {
        self.spool.as_ref().is_none_or(AuditSpool::is_empty)
    }

    fn spooled_bytes(&self) -> u64 {
        self.spool.as_ref().map_or(0, |s| s.state().used())
    }

    /// Moves what the channel holds into memory, up to [`QUEUE`] events there.
    fn take_queued(&mut self) {
        while self.memory.len() < QUEUE {
            match self.rx.try_recv() {
                Ok(ev) => self.memory.push_back(ev),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.closed = true;
                    break;
                }
            }
        }
    }

    /// Waits up to [`LINGER`] for the events in memory to make a full batch.
    async fn linger(&mut self) {
        if self.closed || self.memory.len() >= BATCH {
            return;
        }
        let deadline = tokio::time::sleep(LINGER);
        tokio::pin!(deadline);
        while !self.closed && self.memory.len() < BATCH {
            tokio::select! {
                _ = &mut deadline => return,
                ev = self.rx.recv() => match ev {
                    Some(ev) => {
                        self.memory.push_back(ev);
                        self.take_queued();
                    }
                    None => self.closed = true,
                },
            }
        }
    }

    /// Waits `d` (at most [`MAX_PAUSE`]) before the next attempt, spooling what arrives
    /// meanwhile.
    async fn pause(&mut self, d: Duration) {
        let sleep = tokio::time::sleep(d.min(MAX_PAUSE));
        tokio::pin!(sleep);
        loop {
            let room = !self.closed && self.memory.len() < QUEUE;
            tokio::select! {
                _ = &mut sleep => return,
                ev = self.rx.recv(), if room => match ev {
                    Some(ev) => {
                        self.memory.push_back(ev);
                        self.take_queued();
                        self.spill().await;
                    }
                    None => self.closed = true,
                },
            }
        }
    }

    /// Appends every event in memory to the spool (when there is one). Events the spool has no
    /// room for are dropped, counted and logged; on a disk error they stay in memory.
    async fn spill(&mut self) {
        if self.spool.is_none() || self.memory.is_empty() {
            return;
        }
        let events: Vec<AuditEvent> = self.memory.drain(..).collect();
        let lines: Vec<String> = events.iter().map(to_json).collect();
        let total = lines.len();
        let result = self.on_disk(move |s| s.append(&lines)).await;
        match result {
            Some(Ok(a)) => {
                self.spool_failing = false;
                if a.dropped > 0 {
                    let n = a.dropped as u64;
                    let all = self.dropped.fetch_add(n, Ordering::Relaxed) + n;
                    let (used, max) = self
                        .spool
                        .as_ref()
                        .map_or((0, 0), |s| (s.state().used(), s.state().max_bytes()));
                    tracing::error!(
                        dropped = n,
                        dropped_total = all,
                        spool_bytes = used,
                        spool_max_bytes = max,
                        "audit spool full while Auth is away: {n} events dropped"
                    );
                }
            }
            Some(Err(e)) => {
                let written = match &e {
                    AuditSpoolError::Write { written, .. } => *written,
                    _ => 0,
                };
                for ev in events.into_iter().skip(written).rev() {
                    self.memory.push_front(ev);
                }
                if !self.spool_failing {
                    tracing::error!(
                        error = %e,
                        queued = self.memory.len(),
                        "cannot write audit events to the spool; they wait in memory"
                    );
                }
                self.spool_failing = true;
            }
            None => {
                let all = self.dropped.fetch_add(total as u64, Ordering::Relaxed) + total as u64;
                tracing::error!(
                    dropped = total,
                    dropped_total = all,
                    "the audit spool failed: {total} events dropped"
                );
            }
        }
    }

    async fn read_spool(&mut self) -> Result<Option<SpoolBatch>, AuditSpoolError> {
        self.on_disk(|s| s.read(BATCH, BATCH_BYTES))
            .await
            .unwrap_or(Ok(None))
    }

    /// Auth has `out`'s events: they leave memory or the spool.
    async fn delivered(&mut self, out: Outgoing) {
        match out {
            Outgoing::Memory(n) => {
                self.memory.drain(..n.min(self.memory.len()));
            }
            Outgoing::Spool(b) => {
                self.on_disk(move |s| s.consumed(&b)).await;
            }
        }
    }

    /// Runs `f` on the spool off the async workers. `None` if there is no spool, or it was lost
    /// (its task panicked; events are then kept in memory only, and the files stay for the next
    /// start).
    async fn on_disk<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut AuditSpool) -> T + Send + 'static,
    ) -> Option<T> {
        let mut spool = self.spool.take()?;
        match tokio::task::spawn_blocking(move || {
            let r = f(&mut spool);
            (spool, r)
        })
        .await
        {
            Ok((spool, r)) => {
                self.spool = Some(spool);
                Some(r)
            }
            Err(e) => {
                tracing::error!(error = %e, "the audit spool failed; events are kept in memory only from now on");
                None
            }
        }
    }
}

/// How many of the first events in memory, of these sizes, make one batch.
fn batch_len(sizes: impl Iterator<Item = usize>) -> usize {
    let mut bytes = 0;
    let mut n = 0;
    for len in sizes.take(BATCH) {
        if n > 0 && bytes + len > BATCH_BYTES {
            break;
        }
        bytes += len;
        n += 1;
    }
    n
}

/// About how many bytes an event takes on the wire (its text, plus a little per part).
fn wire_size(ev: &AuditEvent) -> usize {
    fn value(v: &serde_json::Value) -> usize {
        match v {
            serde_json::Value::String(s) => 2 + s.len(),
            serde_json::Value::Array(a) => 2 + a.iter().map(value).sum::<usize>(),
            serde_json::Value::Object(m) => {
                2 + m.iter().map(|(k, v)| 2 + k.len() + value(v)).sum::<usize>()
            }
            _ => 9,
        }
    }
    let text = [&ev.id, &ev.cluster, &ev.user]
        .iter()
        .map(|s| s.len())
        .sum::<usize>()
        + ev.addr_remote.as_ref().map_or(0, String::len)
        + ev.error.as_ref().map_or(0, String::len);
    32 + ev.event.len()
        + text
        + ev.fields
            .iter()
            .map(|(k, v)| 2 + k.len() + value(v))
            .sum::<usize>()
}

fn to_json(ev: &AuditEvent) -> String {
    serde_json::to_string(ev).unwrap_or_else(|_| "{}".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection maker for an Auth that is away.
    fn unreachable() -> ChannelMaker {
        Arc::new(|| {
            Box::pin(async {
                Err(hop_net::connect::ConnectError::Unreachable {
                    addr: "127.0.0.1:3080".into(),
                    cause: std::io::ErrorKind::ConnectionRefused.into(),
                })
            })
        })
    }

    fn spooled(dir: &std::path::Path) -> Vec<String> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        files.sort();
        files
            .iter()
            .flat_map(|f| {
                std::fs::read_to_string(f)
                    .unwrap()
                    .lines()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    async fn wait_for(dir: &std::path::Path, n: usize) -> Vec<String> {
        for _ in 0..500 {
            let lines = spooled(dir);
            if lines.len() >= n {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{n} events were not spooled: {:?}", spooled(dir));
    }

    fn command(line: &str) -> String {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        v["command"].as_str().unwrap().to_owned()
    }

    #[tokio::test]
    async fn events_go_to_the_spool_in_order_while_auth_is_away() {
        let dir = tempfile::tempdir().unwrap();
        let settings = AuditSpoolSettings::node(dir.path());
        let audit = AgentAudit::start(
            "c".into(),
            "node1".into(),
            unreachable(),
            Some(settings.clone()),
        )
        .unwrap();
        for i in 0..5 {
            audit.emit(
                audit
                    .event(EventKind::Exec, "alice")
                    .field("command", format!("c{i}")),
            );
        }
        let lines = wait_for(&settings.dir, 5).await;
        // More events while the sender waits to retry go straight behind them.
        for i in 5..8 {
            audit.emit(
                audit
                    .event(EventKind::Exec, "alice")
                    .field("command", format!("c{i}")),
            );
        }
        let lines2 = wait_for(&settings.dir, 8).await;
        assert_eq!(lines2[..5], lines[..]);
        let got: Vec<String> = lines2.iter().map(|l| command(l)).collect();
        let want: Vec<String> = (0..8).map(|i| format!("c{i}")).collect();
        assert_eq!(got, want);
        assert_eq!(audit.dropped(), 0);
    }

    #[tokio::test]
    async fn a_full_spool_drops_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let settings = AuditSpoolSettings {
            max_bytes: 1024,
            ..AuditSpoolSettings::node(dir.path())
        };
        let audit = AgentAudit::start(
            "c".into(),
            "node1".into(),
            unreachable(),
            Some(settings.clone()),
        )
        .unwrap();
        let big = "x".repeat(300);
        for _ in 0..6 {
            audit.emit(
                audit
                    .event(EventKind::Exec, "alice")
                    .field("command", big.clone()),
            );
        }
        for _ in 0..500 {
            if audit.dropped() > 0 && spooled(&settings.dir).len() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let kept = spooled(&settings.dir).len() as u64;
        assert!((1..6).contains(&kept), "{kept}");
        assert_eq!(audit.dropped() + kept, 6);
    }

    #[test]
    fn batches_are_bounded_by_count_and_bytes() {
        let small: VecDeque<String> = (0..BATCH + 5).map(|i| i.to_string()).collect();
        assert_eq!(batch_len(small.iter().map(String::len)), BATCH);
        let big: VecDeque<String> = (0..3).map(|_| "y".repeat(BATCH_BYTES / 2 + 1)).collect();
        assert_eq!(batch_len(big.iter().map(String::len)), 1);
        let huge: VecDeque<String> = ["z".repeat(BATCH_BYTES * 2)].into();
        assert_eq!(batch_len(huge.iter().map(String::len)), 1);
        assert_eq!(batch_len(std::iter::empty()), 0);
    }
}

#[cfg(test)]
#[path = "audit_link_tests.rs"]
mod link_tests;
