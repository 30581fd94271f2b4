//! Group commit. This module owns the one writer thread of an audit file: it takes everything
//! queued (up to `max_batch`), links each event into its day's hash chain, writes the batch —
//! the events, their time-index entries, chain bookkeeping, and a slice of the index backlog
//! (see `index`) — in ONE redb transaction with immediate durability, and only then lets an
//! acknowledger thread tell each producer where its event landed. It also owns the chain head
//! (next seq, current chain, last hash) and the index backlog, both re-read from the file at
//! open. It must never acknowledge an event before its batch is durable, never store an id
//! twice, and never drop a queued event without counting it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use redb::{Database, Durability, ReadableDatabase, ReadableTable};
use tokio::sync::oneshot;

use super::chain::{
    build_record, chain_day, chain_name, day_of, decode_record, genesis, parse_view,
    record_canonical,
};
use super::error::AuditError;
use super::event::{Prepared, append_canonical, json_line, system_time_to_us};
use super::index::{BacklogStep, Entry, IndexBacklog, Indexes};
use super::tables::{self, EVENTS, INDEXED_KEY, LAST_SEQ_KEY, META, PURGED, SEGMENTS};
use crate::clock::{Clock, monotonic_now};
use crate::error::StorageError;
use crate::redb_backend::map_redb;

/// What the writer tells a waiting producer: the seq holding its event and whether that event
/// was already stored (a repeated id).
pub(crate) type AckResult = Result<(u64, bool), AuditError>;

/// What the writer is asked to do.
pub(crate) enum Request {
    /// Write one event and, unless it was fire-and-forget, acknowledge it.
    Event {
        prepared: Prepared,
        ack: Option<oneshot::Sender<AckResult>>,
    },
    /// Write every index entry still in the backlog, then signal.
    FlushIndex(oneshot::Sender<()>),
}

impl Request {
    /// Is someone waiting for this request to be written?
    fn is_watched(&self) -> bool {
        !matches!(self, Request::Event { ack: None, .. })
    }
}

/// Collected entries form a sorted run once there are this many…
const MIN_RUN: usize = 8192;
/// …or once the oldest is this old.
const MAX_PENDING_AGE: Duration = Duration::from_millis(250);
/// A batch's transaction also writes at least this many entries of the current run, and at
/// least `RUN_SLICE_PER_EVENT` per event in it, so runs drain faster than events arrive.
const RUN_SLICE_MIN: usize = 512;
const RUN_SLICE_PER_EVENT: usize = 8;
/// Entries per transaction when the writer has nothing else to do.
const IDLE_SLICE: usize = 4096;
/// How long the queue must stay empty before the writer spends a transaction on the backlog
/// alone.
const IDLE_GRACE: Duration = Duration::from_millis(5);

/// While waiting for the producers of the previous batch to come back, the writer stops
/// waiting once none has arrived for this long: they are not on their way, and the events
/// already queued should not wait for them.
const STRAGGLER_GAP: Duration = Duration::from_micros(200);

/// State shared by the log handle, the writer and the background threads.
pub(crate) struct Shared {
    pub(crate) path: PathBuf,
    pub(crate) db: Database,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) counters: Counters,
    pub(crate) hold: Hold,
}

impl Shared {
    pub(crate) fn err(&self, err: impl Into<redb::Error>) -> StorageError {
        map_redb(&self.path, err.into())
    }

    pub(crate) fn corrupt(&self, detail: String) -> StorageError {
        StorageError::Corrupt {
            path: self.path.clone(),
            detail,
        }
    }
}

/// The running totals behind [`super::AuditStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) written: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) overflowed: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) forward_dropped: AtomicU64,
    pub(crate) queue_depth: AtomicUsize,
}

/// A test hook that stalls the writer between taking an event and writing its batch.
#[derive(Debug, Default)]
pub(crate) struct Hold {
    holders: Mutex<u32>,
    released: Condvar,
}

impl Hold {
    pub(crate) fn acquire(&self) {
        *self.holders.lock().unwrap_or_else(PoisonError::into_inner) += 1;
    }

    pub(crate) fn release(&self) {
        let mut holders = self.holders.lock().unwrap_or_else(PoisonError::into_inner);
        *holders = holders.saturating_sub(1);
        self.released.notify_all();
    }

    fn wait_released(&self) {
        let mut holders = self.holders.lock().unwrap_or_else(PoisonError::into_inner);
        while *holders > 0 {
            holders = self
                .released
                .wait(holders)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// Where the next event goes: its seq, and the chain (day) and hash it links to.
#[derive(Debug, Clone)]
pub(crate) struct Head {
    next_seq: u64,
    /// The current chain's day since the epoch; `None` before the first event.
    day: Option<u64>,
    chain: String,
    last_hash: [u8; 32],
    last_hash_hex: [u8; 64],
}

impl Head {
    fn link_to(&mut self, hash: [u8; 32]) {
        self.last_hash = hash;
        // 64 bytes is exactly room for 32 bytes in hex; this cannot fail.
        let _ = hex::encode_to_slice(hash, &mut self.last_hash_hex);
    }
}

/// Reads the chain head and the index backlog back from the file: the head after the last
/// stored event (or after the purge boundary when every event has been purged), the backlog
/// from the events after the index watermark.
pub(crate) fn recover(shared: &Shared) -> Result<(Head, IndexBacklog), StorageError> {
    let txn = shared.db.begin_read().map_err(|e| shared.err(e))?;
    let meta = txn.open_table(META).map_err(|e| shared.err(e))?;
    let meta_value = |key| -> Result<u64, StorageError> {
        Ok(meta
            .get(key)
            .map_err(|e| shared.err(e))?
            .map_or(0, |v| v.value()))
    };
    let last_written = meta_value(LAST_SEQ_KEY)?;
    let indexed_through = meta_value(INDEXED_KEY)?;
    let events = txn.open_table(EVENTS).map_err(|e| shared.err(e))?;
    let purged = txn.open_table(PURGED).map_err(|e| shared.err(e))?;
    let boundary = tables::read_boundary(&shared.path, &purged)?;

    let mut unindexed = Vec::new();
    for entry in events
        .range(indexed_through + 1..)
        .map_err(|e| shared.err(e))?
    {
        let (key, value) = entry.map_err(|e| shared.err(e))?;
        let seq = key.value();
        let corrupt = |detail| shared.corrupt(format!("audit event {seq}: {detail}"));
        let record = decode_record(value.value()).map_err(corrupt)?;
        let view = parse_view(record.canonical).map_err(corrupt)?;
        let time_us = view
            .time_us()
            .ok_or_else(|| corrupt("bad time".to_owned()))?;
        unindexed.push(Entry {
            time_us,
            seq,
            event_type: view.event.into_owned(),
            user: view.user.into_owned(),
            session_id: view.session_id.into_owned(),
            id: view.id.into_owned(),
        });
    }
    if !unindexed.is_empty() {
        tracing::debug!(events = unindexed.len(), "audit index backlog re-read");
    }
    let backlog = IndexBacklog::new(indexed_through, unindexed, monotonic_now());

    let (last_seq, chain, hash) =
        if let Some((key, value)) = events.last().map_err(|e| shared.err(e))? {
            let seq = key.value();
            let record = decode_record(value.value())
                .map_err(|detail| shared.corrupt(format!("audit event {seq}: {detail}")))?;
            let view = parse_view(record.canonical)
                .map_err(|detail| shared.corrupt(format!("audit event {seq}: {detail}")))?;
            (seq, view.chain.into_owned(), *record.hash)
        } else if let Some(boundary) = boundary {
            let hash = hex::decode(&boundary.hash)
                .ok()
                .and_then(|h| <[u8; 32]>::try_from(h).ok())
                .ok_or_else(|| shared.corrupt("audit purge boundary has a bad hash".to_owned()))?;
            (boundary.through_seq, boundary.chain, hash)
        } else {
            let head = Head {
                next_seq: last_written + 1,
                day: None,
                chain: String::new(),
                last_hash: [0; 32],
                last_hash_hex: [b'0'; 64],
            };
            return Ok((head, backlog));
        };
    let day = chain_day(&chain)
        .ok_or_else(|| shared.corrupt(format!("audit chain name {chain:?} is not a day")))?;
    let mut head = Head {
        // A seq is never reused, even if the events after `last_seq` were removed behind hop's
        // back (verify reports that).
        next_seq: last_seq.max(last_written) + 1,
        day: Some(day),
        chain,
        last_hash: [0; 32],
        last_hash_hex: [b'0'; 64],
    };
    head.link_to(hash);
    Ok((head, backlog))
}

/// The group-commit policy.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchPolicy {
    pub(crate) max_batch: usize,
    pub(crate) flush_interval: Duration,
    pub(crate) unwatched_linger: Duration,
}

type AckBatch = Vec<(oneshot::Sender<AckResult>, AckResult)>;

/// The writer thread's state.
pub(crate) struct Writer {
    shared: Arc<Shared>,
    queue: Receiver<Request>,
    head: Head,
    backlog: IndexBacklog,
    policy: BatchPolicy,
    acks: mpsc::Sender<AckBatch>,
    forward: Option<SyncSender<Vec<Vec<u8>>>>,
}

/// One event of a batch: what to write and whom to tell.
type Item = (Prepared, Option<oneshot::Sender<AckResult>>);

impl Writer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        queue: Receiver<Request>,
        (head, backlog): (Head, IndexBacklog),
        policy: BatchPolicy,
        acks: mpsc::Sender<AckBatch>,
        forward: Option<SyncSender<Vec<Vec<u8>>>>,
    ) -> Self {
        Self {
            shared,
            queue,
            head,
            backlog,
            policy,
            acks,
            forward,
        }
    }

    /// Runs until every handle to the queue is gone and the queue is empty.
    pub(crate) fn run(mut self) {
        // The size of the previous batch: how many producers are probably about to come back
        // with their next event right after being acknowledged.
        let mut last_len = 1;
        let mut batch = Vec::with_capacity(self.policy.max_batch.min(4096));
        while let Some(first) = self.next_request() {
            self.taken(1);
            self.shared.hold.wait_released();
            batch.push(first);
            self.drain(&mut batch);
            self.wait_for_stragglers(&mut batch, last_len);
            self.linger_while_unwatched(&mut batch);
            last_len = batch.len();
            self.commit(&mut batch);
        }
        if let Err(error) = self.flush_index() {
            tracing::warn!(%error, "audit index backlog not written at shutdown; it is rebuilt at the next open");
        }
        tracing::debug!(path = %self.shared.path.display(), "audit writer stopped");
    }

    /// The next request; while none comes and the index backlog has work, does that work.
    /// `None` once every handle to the queue is gone and the queue is empty.
    fn next_request(&mut self) -> Option<Request> {
        loop {
            let Some(due) = self.backlog.due(MAX_PENDING_AGE, monotonic_now()) else {
                return self.queue.recv().ok();
            };
            let wait = due
                .saturating_duration_since(monotonic_now())
                .max(IDLE_GRACE);
            match self.queue.recv_timeout(wait) {
                Ok(req) => return Some(req),
                Err(RecvTimeoutError::Disconnected) => return None,
                Err(RecvTimeoutError::Timeout) => loop {
                    // Idle: work through the backlog a slice per transaction, looking at the
                    // queue between slices so an arriving event waits for one slice at most.
                    match self.index_slice(IDLE_SLICE) {
                        Ok(true) => {}
                        Ok(false) => break,
                        Err(error) => {
                            tracing::error!(%error, "audit index backlog could not be written; will retry");
                            std::thread::sleep(Duration::from_millis(100));
                            break;
                        }
                    }
                    match self.queue.try_recv() {
                        Ok(req) => return Some(req),
                        Err(TryRecvError::Empty) => {}
                        Err(TryRecvError::Disconnected) => return None,
                    }
                },
            }
        }
    }

    /// Writes the whole index backlog, in as many transactions as it takes (usually one).
    fn flush_index(&mut self) -> Result<(), redb::Error> {
        while self.index_slice(usize::MAX)? {}
        Ok(())
    }

    /// Writes up to `budget` backlog entries in one transaction. Returns whether work remains.
    fn index_slice(&mut self, budget: usize) -> Result<bool, redb::Error> {
        self.backlog
            .maybe_form_run(0, MAX_PENDING_AGE, true, monotonic_now());
        if !self.backlog.has_work() {
            return Ok(false);
        }
        let mut step = BacklogStep::default();
        match self.write_backlog(&mut step, budget) {
            Ok(()) => {
                self.backlog.committed(step);
                Ok(self.backlog.has_work())
            }
            Err(err) => {
                self.backlog.aborted(step);
                Err(err)
            }
        }
    }

    fn write_backlog(&mut self, step: &mut BacklogStep, budget: usize) -> Result<(), redb::Error> {
        let mut txn = self.shared.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut indexes = Indexes::open(&txn)?;
            let (s, through) = self.backlog.write(&mut indexes, budget)?;
            *step = s;
            if let Some(through) = through {
                txn.open_table(META)?.insert(INDEXED_KEY, through)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn taken(&self, n: usize) {
        self.shared
            .counters
            .queue_depth
            .fetch_sub(n, Ordering::Relaxed);
    }

    /// Moves whatever is queued into `batch`, up to `max_batch`.
    fn drain(&self, batch: &mut Vec<Request>) {
        let before = batch.len();
        while batch.len() < self.policy.max_batch {
            match self.queue.try_recv() {
                Ok(req) => batch.push(req),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        self.taken(batch.len() - before);
    }

    /// When the queue held fewer events than the previous batch had, the producers that were
    /// just acknowledged are likely still on their way back: wait for as many as last time, so
    /// they share this batch's fsync instead of each paying for one — but only while they keep
    /// arriving (no gap longer than [`STRAGGLER_GAP`]) and for `flush_interval` at most. A
    /// lone producer (previous batch of one) never waits.
    fn wait_for_stragglers(&self, batch: &mut Vec<Request>, last_len: usize) {
        let target = last_len.min(self.policy.max_batch);
        if batch.len() >= target || self.policy.flush_interval.is_zero() {
            return;
        }
        let deadline = monotonic_now() + self.policy.flush_interval;
        while batch.len() < target {
            let left = deadline
                .saturating_duration_since(monotonic_now())
                .min(STRAGGLER_GAP);
            if left.is_zero() {
                break;
            }
            match self.queue.recv_timeout(left) {
                Ok(req) => {
                    self.taken(1);
                    batch.push(req);
                    self.drain(batch);
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
    }

    /// While nobody waits for any event of `batch` (all came from `submit`), keeps it open for
    /// `unwatched_linger` at most, so a steady stream of such events shares one commit. Ends at
    /// once when an event someone waits for (or an index flush) arrives, or at `max_batch`.
    fn linger_while_unwatched(&self, batch: &mut Vec<Request>) {
        if self.policy.unwatched_linger.is_zero() || batch.iter().any(Request::is_watched) {
            return;
        }
        let deadline = monotonic_now() + self.policy.unwatched_linger;
        while batch.len() < self.policy.max_batch {
            let left = deadline.saturating_duration_since(monotonic_now());
            if left.is_zero() {
                break;
            }
            match self.queue.recv_timeout(left) {
                Ok(req) => {
                    let before = batch.len();
                    self.taken(1);
                    batch.push(req);
                    self.drain(batch);
                    if batch.iter().skip(before).any(Request::is_watched) {
                        break;
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
    }

    /// Writes `batch` durably and hands the acknowledgements on; empties `batch`.
    fn commit(&mut self, batch: &mut Vec<Request>) {
        let mut items: Vec<Item> = Vec::with_capacity(batch.len());
        let mut flush_waiters = Vec::new();
        for req in batch.drain(..) {
            match req {
                Request::Event { prepared, ack } => items.push((prepared, ack)),
                Request::FlushIndex(done) => flush_waiters.push(done),
            }
        }
        if !items.is_empty() {
            self.commit_events(items);
        }
        if !flush_waiters.is_empty() {
            if let Err(error) = self.flush_index() {
                tracing::error!(%error, "audit index backlog could not be written");
            }
            for done in flush_waiters {
                let _ = done.send(());
            }
        }
    }

    fn commit_events(&mut self, mut items: Vec<Item>) {
        let mut lines = Vec::new();
        self.backlog
            .maybe_form_run(MIN_RUN, MAX_PENDING_AGE, false, monotonic_now());
        let mut step = BacklogStep::default();
        let result = self.write_batch(
            &mut items,
            &mut step,
            self.forward.is_some().then_some(&mut lines),
        );
        let counters = &self.shared.counters;
        let mut acks = Vec::with_capacity(items.len());
        match result {
            Ok((outcomes, head)) => {
                self.head = head;
                self.backlog.committed(step);
                let duplicates = outcomes.iter().filter(|(_, dup)| *dup).count();
                counters
                    .written
                    .fetch_add((outcomes.len() - duplicates) as u64, Ordering::Relaxed);
                counters
                    .duplicates
                    .fetch_add(duplicates as u64, Ordering::Relaxed);
                counters.batches.fetch_add(1, Ordering::Relaxed);
                let mut entries = Vec::with_capacity(items.len() - duplicates);
                for ((p, ack), (seq, duplicate)) in items.into_iter().zip(outcomes) {
                    if let Some(ack) = ack {
                        acks.push((ack, Ok((seq, duplicate))));
                    }
                    if !duplicate {
                        entries.push(Entry {
                            time_us: p.time_us,
                            seq,
                            event_type: p.event_type,
                            user: p.user,
                            session_id: p.session_id,
                            id: p.id,
                        });
                    }
                }
                self.backlog.add(entries, monotonic_now());
                if let Some(forward) = &self.forward
                    && !lines.is_empty()
                {
                    let n = lines.len() as u64;
                    if forward.try_send(lines).is_err() {
                        counters.forward_dropped.fetch_add(n, Ordering::Relaxed);
                    }
                }
            }
            Err(err) => {
                self.backlog.aborted(step);
                let detail = err.to_string();
                let unacknowledged = items.iter().filter(|(_, ack)| ack.is_none()).count();
                counters
                    .failed
                    .fetch_add(items.len() as u64, Ordering::Relaxed);
                tracing::error!(
                    path = %self.shared.path.display(),
                    events = items.len(),
                    fire_and_forget = unacknowledged,
                    error = %detail,
                    "audit batch could not be written; its events are lost"
                );
                for (_, ack) in items {
                    if let Some(ack) = ack {
                        acks.push((
                            ack,
                            Err(AuditError::NotWritten {
                                detail: detail.clone(),
                            }),
                        ));
                    }
                }
            }
        }
        if !acks.is_empty() {
            // The acknowledger only ends after this thread does; a send cannot fail.
            let _ = self.acks.send(acks);
        }
    }

    /// One durable transaction for the whole batch, carrying a slice of the index backlog.
    /// Returns each item's (seq, duplicate) and the head after it; on error nothing was
    /// written.
    fn write_batch(
        &mut self,
        items: &mut [Item],
        step: &mut BacklogStep,
        mut lines: Option<&mut Vec<Vec<u8>>>,
    ) -> Result<(Vec<(u64, bool)>, Head), redb::Error> {
        let today = day_of(system_time_to_us(self.shared.clock.now()));
        let mut head = self.head.clone();
        let mut outcomes = Vec::with_capacity(items.len());
        let mut txn = self.shared.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut events = txn.open_table(EVENTS)?;
            let mut indexes = Indexes::open(&txn)?;
            // Ids claimed earlier in this batch.
            let mut claimed: HashMap<&str, u64> = HashMap::new();
            // (chain, first seq, last seq) of each chain this batch wrote to, in order.
            let mut touched: Vec<(String, u64, u64)> = Vec::new();
            for (p, _) in items.iter() {
                // An id the log has just assigned (a v7 UUID) cannot be stored already.
                let existing = if p.fresh_id {
                    None
                } else {
                    match claimed.get(p.id.as_str()) {
                        Some(seq) => Some(*seq),
                        None => match self.backlog.unindexed_id(&p.id) {
                            Some(seq) => Some(seq),
                            None => indexes.indexed_id(&p.id)?,
                        },
                    }
                };
                if let Some(existing) = existing {
                    outcomes.push((existing, true));
                    continue;
                }
                let seq = head.next_seq;
                if !p.fresh_id {
                    claimed.insert(&p.id, seq);
                }
                // A chain per UTC day; the day never goes back, even if the clock does.
                let day = head.day.map_or(today, |d| d.max(today));
                if head.day != Some(day) {
                    head.day = Some(day);
                    head.chain = chain_name(day);
                    head.link_to(genesis(&head.chain));
                }
                let (record, hash) = build_record(&head.last_hash, p.body.len() + 128, |out| {
                    append_canonical(out, &p.body, seq, &head.chain, &head.last_hash_hex);
                });
                events.insert(seq, record.as_slice())?;
                indexes.by_time.insert((p.time_us, seq), ())?;
                if let Some(lines) = lines.as_deref_mut() {
                    lines.push(json_line(record_canonical(&record), &hash));
                }
                head.link_to(hash);
                head.next_seq += 1;
                match touched.last_mut() {
                    Some((chain, _, last)) if *chain == head.chain => *last = seq,
                    _ => touched.push((head.chain.clone(), seq, seq)),
                }
                outcomes.push((seq, false));
            }
            let written = outcomes.iter().filter(|(_, dup)| !dup).count();
            let budget = RUN_SLICE_MIN.max(RUN_SLICE_PER_EVENT * written);
            let (s, indexed_through) = self.backlog.write(&mut indexes, budget)?;
            *step = s;
            let mut meta = txn.open_table(META)?;
            if let Some(through) = indexed_through {
                meta.insert(INDEXED_KEY, through)?;
            }
            if !touched.is_empty() {
                let mut segments = txn.open_table(SEGMENTS)?;
                for (chain, first, last) in touched {
                    let first = segments
                        .get(chain.as_str())?
                        .map_or(first, |row| row.value().0);
                    segments.insert(chain.as_str(), (first, last))?;
                }
                meta.insert(LAST_SEQ_KEY, head.next_seq - 1)?;
            }
        }
        txn.commit()?;
        Ok((outcomes, head))
    }
}

/// Tells producers their outcome, off the writer's thread so the next batch can start at once.
pub(crate) fn run_acknowledger(acks: Receiver<AckBatch>) {
    for batch in acks {
        for (ack, result) in batch {
            // A producer that stopped waiting does not care.
            let _ = ack.send(result);
        }
    }
}

/// Writes forwarded events as JSON lines to `out`, flushing after each batch.
pub(crate) fn run_forwarder(
    shared: Arc<Shared>,
    lines: Receiver<Vec<Vec<u8>>>,
    mut out: Box<dyn std::io::Write + Send>,
) {
    let mut failing = false;
    for batch in lines {
        let n = batch.len() as u64;
        let result = batch
            .iter()
            .try_for_each(|line| {
                out.write_all(line)?;
                out.write_all(b"\n")
            })
            .and_then(|()| out.flush());
        match result {
            Ok(()) => failing = false,
            Err(err) => {
                shared
                    .counters
                    .forward_dropped
                    .fetch_add(n, Ordering::Relaxed);
                if !failing {
                    tracing::warn!(error = %err, "audit forwarding failed; events are still in the log");
                }
                failing = true;
            }
        }
    }
}
