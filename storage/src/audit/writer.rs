//! Group commit. This module owns the one writer thread of an audit log: it takes everything
//! queued (up to `max_batch`), links each event into its day's hash chain, appends the batch's
//! frames to the day's segment with ONE write and ONE `fdatasync` (see `segment`), and only then
//! lets an acknowledger thread tell each producer where its event landed and hands the events'
//! index entries to the indexer thread (see `index`). It also owns the chain head (next seq,
//! current chain, last hash), re-read from the segments at open. It must never acknowledge an
//! event before its batch is durable, never store an id twice, and never drop a queued event
//! without counting it; after a write it could not undo it refuses every later batch.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use redb::{Database, ReadableDatabase};
use tokio::sync::oneshot;

use super::chain::{append_record, chain_name, day_of, genesis, record_canonical};
use super::error::AuditError;
use super::event::{Prepared, append_canonical, json_line, system_time_to_us};
use super::id_block;
use super::id_block::IdRef;
use super::index::{Entry, IndexWork, UnindexedIds};
use super::prealloc::Prealloc;
use super::segment::{AppendError, Appender, Pending, Segments};
use super::tables::{BLOCKS, BY_ID};
use crate::clock::{Clock, monotonic_now};
use crate::error::StorageError;
use crate::redb_backend::map_redb;
use redb::ReadableTable as _;

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
    /// Have the indexer write every entry it holds, then signal.
    FlushIndex(oneshot::Sender<()>),
}

impl Request {
    /// Is someone waiting for this request to be written?
    fn is_watched(&self) -> bool {
        !matches!(self, Request::Event { ack: None, .. })
    }
}

/// More than a frame adds to its event's body: the length prefix (4), version and hash (33),
/// and the chain fields (about 130 with a day's chain name).
const FRAME_OVERHEAD: usize = 256;
/// While waiting for the producers of the previous batch to come back, the writer stops
/// waiting once none has arrived for this long: they are not on their way, and the events
/// already queued should not wait for them.
const STRAGGLER_GAP: Duration = Duration::from_micros(200);
/// How often the writer looks at the queue while it waits for stragglers…
const POLL_TICK: Duration = Duration::from_micros(100);
/// …and while a batch nobody waits for lingers (an event someone waits for that arrives meanwhile
/// waits at most this much longer).
const LINGER_TICK: Duration = Duration::from_micros(500);

/// State shared by the log handle, the writer and the background threads.
pub(crate) struct Shared {
    /// The index file.
    pub(crate) path: PathBuf,
    pub(crate) db: Database,
    pub(crate) segments: Segments,
    pub(crate) unindexed_ids: UnindexedIds,
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

    /// A failed look-up in the id blocks, as a storage error.
    pub(crate) fn id_lookup_err(&self, e: super::id_block::IdLookupError) -> StorageError {
        match e {
            super::id_block::IdLookupError::Storage(e) => self.err(e),
            damaged => self.corrupt(damaged.to_string()),
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
    /// The head of an empty log whose seqs continue after `last_seq`.
    pub(crate) fn empty(last_seq: u64) -> Self {
        Self {
            next_seq: last_seq + 1,
            day: None,
            chain: String::new(),
            last_hash: [0; 32],
            last_hash_hex: [b'0'; 64],
        }
    }

    /// The head after an event of `chain` (a day) with `hash`, continuing after `last_seq`.
    pub(crate) fn after(last_seq: u64, day: u64, chain: String, hash: [u8; 32]) -> Self {
        let mut head = Self {
            next_seq: last_seq + 1,
            day: Some(day),
            chain,
            last_hash: [0; 32],
            last_hash_hex: [b'0'; 64],
        };
        head.link_to(hash);
        head
    }

    fn link_to(&mut self, hash: [u8; 32]) {
        self.last_hash = hash;
        // 64 bytes is exactly room for 32 bytes in hex; this cannot fail.
        let _ = hex::encode_to_slice(hash, &mut self.last_hash_hex);
    }
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
    appender: Option<Appender>,
    policy: BatchPolicy,
    acks: mpsc::Sender<AckBatch>,
    index: SyncSender<IndexWork>,
    forward: Option<SyncSender<Vec<Vec<u8>>>>,
    /// A failed batch could not be cut back off its segment: nothing more may be appended.
    wedged: AtomicBool,
    prealloc: Arc<Prealloc>,
}

/// Where the writer hands on what it wrote: acknowledgements, index entries, forwarded lines.
pub(crate) struct Outlets {
    pub(crate) acks: mpsc::Sender<AckBatch>,
    pub(crate) index: SyncSender<IndexWork>,
    pub(crate) forward: Option<SyncSender<Vec<Vec<u8>>>>,
}

/// One event of a batch: what to write and whom to tell.
type Item = (Prepared, Option<oneshot::Sender<AckResult>>);

/// A batch built and ready to write: per segment part, its chain, first seq and bytes.
struct Built {
    parts: Vec<(String, u64, Pending)>,
    outcomes: Vec<(u64, bool)>,
    head: Head,
    lines: Vec<Vec<u8>>,
}

impl Writer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        queue: Receiver<Request>,
        head: Head,
        policy: BatchPolicy,
        outlets: Outlets,
        prealloc: Arc<Prealloc>,
    ) -> Self {
        let Outlets {
            acks,
            index,
            forward,
        } = outlets;
        let appender = Appender::resume(&shared.segments, &head.chain, Some(Arc::clone(&prealloc)));
        Self {
            shared,
            queue,
            head,
            appender,
            policy,
            acks,
            index,
            forward,
            wedged: AtomicBool::new(false),
            prealloc,
        }
    }

    /// Runs until every handle to the queue is gone and the queue is empty.
    pub(crate) fn run(mut self) {
        // The size of the previous batch: how many producers are probably about to come back
        // with their next event right after being acknowledged.
        let mut last_len = 1;
        let mut batch = Vec::with_capacity(self.policy.max_batch.min(4096));
        while let Ok(first) = self.queue.recv() {
            self.taken(1);
            self.shared.hold.wait_released();
            batch.push(first);
            self.drain(&mut batch);
            self.wait_for_stragglers(&mut batch, last_len);
            self.linger_while_unwatched(&mut batch);
            last_len = batch.len();
            self.commit(&mut batch);
        }
        if let Some(appender) = &self.appender {
            appender.seal();
        }
        tracing::debug!(path = %self.shared.path.display(), "audit writer stopped");
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
        // Polls in ticks rather than waking for each arriving event: producers then queue
        // without waking the writer, which costs both sides a context switch per event.
        let deadline = monotonic_now() + self.policy.flush_interval;
        let mut quiet = Duration::ZERO;
        while batch.len() < target && quiet < STRAGGLER_GAP {
            let left = deadline.saturating_duration_since(monotonic_now());
            if left.is_zero() {
                break;
            }
            let tick = left.min(POLL_TICK);
            std::thread::sleep(tick);
            let before = batch.len();
            self.drain(batch);
            quiet = if batch.len() == before {
                quiet + tick
            } else {
                Duration::ZERO
            };
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
            std::thread::sleep(left.min(LINGER_TICK));
            let before = batch.len();
            self.drain(batch);
            if batch.iter().skip(before).any(Request::is_watched) {
                break;
            }
        }
    }

    /// Writes `batch` durably and hands the acknowledgements on; empties `batch`.
    fn commit(&mut self, batch: &mut Vec<Request>) {
        let mut items: Vec<Item> = Vec::with_capacity(batch.len());
        for req in batch.drain(..) {
            match req {
                Request::Event { prepared, ack } => items.push((prepared, ack)),
                Request::FlushIndex(done) => {
                    // Events before it in this batch are handed to the indexer first.
                    if !items.is_empty() {
                        self.commit_events(std::mem::take(&mut items));
                    }
                    if let Err(mpsc::SendError(IndexWork::Flush(done))) =
                        self.index.send(IndexWork::Flush(done))
                    {
                        let _ = done.send(());
                    }
                }
            }
        }
        if !items.is_empty() {
            self.commit_events(items);
        }
    }

    fn commit_events(&mut self, items: Vec<Item>) {
        let result = self.write_batch(&items);
        let counters = &self.shared.counters;
        let mut acks = Vec::with_capacity(items.len());
        match result {
            Ok(built) => {
                self.head = built.head;
                let outcomes = built.outcomes;
                let duplicates = outcomes.iter().filter(|(_, dup)| *dup).count();
                counters
                    .written
                    .fetch_add((outcomes.len() - duplicates) as u64, Ordering::Relaxed);
                counters
                    .duplicates
                    .fetch_add(duplicates as u64, Ordering::Relaxed);
                counters.batches.fetch_add(1, Ordering::Relaxed);
                let entries = self.acknowledge(items, &outcomes, &mut acks);
                self.hand_to_indexer(entries);
                self.forward_lines(built.lines);
            }
            Err(err) => {
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

    /// Queues each waiting producer's outcome and returns the index entries of the new events.
    fn acknowledge(
        &self,
        items: Vec<Item>,
        outcomes: &[(u64, bool)],
        acks: &mut AckBatch,
    ) -> Vec<Entry> {
        let mut entries = Vec::with_capacity(items.len());
        for ((p, ack), &(seq, duplicate)) in items.into_iter().zip(outcomes) {
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
                    fresh_id: p.fresh_id,
                    v7: p.v7,
                });
            }
        }
        entries
    }

    /// Claims the new events' ids until they are indexed, and hands their entries on. Blocks
    /// while the indexer is far behind: the log then runs at the speed of its index.
    fn hand_to_indexer(&self, entries: Vec<Entry>) {
        if entries.is_empty() {
            return;
        }
        {
            // Ids the log assigned cannot repeat; only producers' ids need claiming.
            let mut ids = self.shared.unindexed_ids.lock();
            for e in entries.iter().filter(|e| !e.fresh_id) {
                ids.insert(e);
            }
        }
        if self.index.send(IndexWork::Entries(entries)).is_err() {
            tracing::error!(
                "audit indexer is gone; new events are rebuilt into the index at the next open"
            );
        }
    }

    fn forward_lines(&self, lines: Vec<Vec<u8>>) {
        if let Some(forward) = &self.forward
            && !lines.is_empty()
        {
            let n = lines.len() as u64;
            if forward.try_send(lines).is_err() {
                self.shared
                    .counters
                    .forward_dropped
                    .fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// Builds the batch, appends it durably, and publishes it to readers. On error nothing
    /// of it remains.
    fn write_batch(&mut self, items: &[Item]) -> Result<Built, StorageError> {
        if self.wedged.load(Ordering::Relaxed) {
            return Err(self.shared.corrupt(
                "an earlier batch could not be undone after a failed write; restart hop so the \
                 segment is repaired at open"
                    .to_owned(),
            ));
        }
        let existing = self.existing_ids(items)?;
        let built = self.build(items, &existing);
        let shared = Arc::clone(&self.shared);
        let _appends = shared.segments.lock_appends();
        self.append(&built.parts)?;
        self.shared
            .segments
            .made_durable(built.head.next_seq.saturating_sub(1));
        Ok(built)
    }

    /// The seqs already holding the ids of `items` (not freshly assigned ones), item by item,
    /// looked up in the unindexed ids and then the id index. The index is read in a transaction
    /// begun while the unindexed ids are locked: an id the indexer removed from them was
    /// committed before.
    fn existing_ids(&self, items: &[Item]) -> Result<Vec<Option<u64>>, StorageError> {
        let mut found = vec![None; items.len()];
        // A batch of ids the log assigned (Auth's own events) has nothing to look up.
        if items.iter().all(|(p, _)| p.fresh_id) {
            return Ok(found);
        }
        let mut unknown = Vec::new();
        let txn = {
            let ids = self.shared.unindexed_ids.lock();
            for (i, (p, _)) in items.iter().enumerate().filter(|(_, (p, _))| !p.fresh_id) {
                match ids.get(IdRef::new(&p.id, p.v7)) {
                    Some(seq) => found[i] = Some(seq),
                    None => unknown.push(i),
                }
            }
            if unknown.is_empty() {
                return Ok(found);
            }
            self.shared
                .db
                .begin_read()
                .map_err(|e| self.shared.err(e))?
        };
        let by_id = txn.open_table(BY_ID).map_err(|e| self.shared.err(e))?;
        let blocks = txn.open_table(BLOCKS).map_err(|e| self.shared.err(e))?;
        // Ids minted in time order (agents' events: `hop_api::ids`) mostly sort after every id
        // indexed so far, and such an id cannot be in the index: one look at each index's last
        // key spares a B-tree descent per event.
        let greatest = by_id
            .last()
            .map_err(|e| self.shared.err(e))?
            .map(|(k, _)| k.value().to_vec());
        let newest_ms = id_block::newest_ms(&blocks).map_err(|e| self.shared.err(e))?;
        for i in unknown {
            let p = &items[i].0;
            if let Some((ms, rest)) = p.v7
                && newest_ms.is_some_and(|newest| ms <= newest)
                && let Some(seq) = id_block::lookup(&blocks, (ms, &rest))
                    .map_err(|e| self.shared.id_lookup_err(e))?
            {
                found[i] = Some(seq);
                continue;
            }
            // Time-ordered ids indexed before the id blocks existed are in the id table too.
            if greatest.as_deref().is_none_or(|g| p.id.as_bytes() > g) {
                continue;
            }
            if let Some(seq) = by_id.get(p.id.as_bytes()).map_err(|e| self.shared.err(e))? {
                found[i] = Some(seq.value());
            }
        }
        Ok(found)
    }

    /// Links every new event into its chain and frames it; repeats get their original's seq.
    fn build(&self, items: &[Item], existing: &[Option<u64>]) -> Built {
        let today = day_of(system_time_to_us(self.shared.clock.now()));
        let mut head = self.head.clone();
        let mut outcomes = Vec::with_capacity(items.len());
        let mut parts: Vec<(String, u64, Pending)> = Vec::new();
        let mut lines = Vec::new();
        // Ids claimed earlier in this batch.
        let mut claimed: HashMap<IdRef<'_>, u64, foldhash::fast::RandomState> = HashMap::default();
        // Each frame: its prefix, the record's version and hash, the body, and the chain fields
        // the writer adds (seq, chain name, previous hash): under FRAME_OVERHEAD bytes.
        let frame_bytes: usize = items
            .iter()
            .map(|(p, _)| p.body.len() + FRAME_OVERHEAD)
            .sum();
        for ((p, _), existing) in items.iter().zip(existing) {
            if !p.fresh_id {
                let id = IdRef::new(&p.id, p.v7);
                if let Some(seq) = claimed.get(&id).copied().or(*existing) {
                    outcomes.push((seq, true));
                    continue;
                }
                claimed.insert(id, head.next_seq);
            }
            let seq = head.next_seq;
            // A chain per UTC day; the day never goes back, even if the clock does.
            let day = head.day.map_or(today, |d| d.max(today));
            if head.day != Some(day) {
                head.day = Some(day);
                head.chain = chain_name(day);
                head.link_to(genesis(&head.chain));
            }
            if parts
                .last()
                .is_none_or(|(chain, _, _)| *chain != head.chain)
            {
                let pending = Pending::with_capacity(frame_bytes, items.len());
                parts.push((head.chain.clone(), seq, pending));
            }
            let Some((_, _, pending)) = parts.last_mut() else {
                continue;
            };
            let (hash, record) = pending.push_with(|out| {
                append_record(out, &head.last_hash, |out| {
                    append_canonical(out, &p.body, seq, &head.chain, &head.last_hash_hex);
                })
            });
            if self.forward.is_some() {
                lines.push(json_line(record_canonical(record), &hash));
            }
            head.link_to(hash);
            head.next_seq += 1;
            outcomes.push((seq, false));
        }
        Built {
            parts,
            outcomes,
            head,
            lines,
        }
    }

    /// Appends each part to its chain's segment (creating segments as days begin), each part
    /// with one write and one fsync. A part that fails is cut back off its segment (a segment
    /// created for it is removed); if an earlier part of the batch was already durable, or
    /// the cut failed, the writer is wedged: those events cannot be unwritten, and their seqs
    /// must not be handed out again.
    fn append(&mut self, parts: &[(String, u64, Pending)]) -> Result<(), StorageError> {
        let mut current = self.appender.take();
        let mut wrote_any = false;
        for (chain, first_seq, pending) in parts {
            let mut created = false;
            // A new segment at a new day, after a purge took this one, and wherever the seqs
            // are interrupted (a frame's seq is its position in its segment).
            if current
                .as_ref()
                .is_none_or(|a| a.chain() != chain || a.is_retired() || a.next_seq() != *first_seq)
            {
                let prealloc = Some(Arc::clone(&self.prealloc));
                match Appender::create(&self.shared.segments, chain, *first_seq, prealloc) {
                    Ok(next) => {
                        created = true;
                        if let Some(old) = current.replace(next) {
                            old.seal();
                        }
                    }
                    Err(err) => {
                        self.appender = current;
                        self.wedge_if(wrote_any);
                        return Err(err);
                    }
                }
            }
            let Some(appender) = current.as_mut() else {
                continue;
            };
            if let Err(err) = appender.write(pending) {
                let (err, cut_failed) = match err {
                    AppendError::NotWritten(err) => (err, false),
                    AppendError::Wedged(err) => (err, true),
                };
                self.wedge_if(wrote_any || cut_failed);
                match current {
                    Some(appender) if created && appender.is_empty() && !cut_failed => {
                        appender.discard(&self.shared.segments);
                    }
                    other => self.appender = other,
                }
                return Err(err);
            }
            wrote_any = true;
        }
        self.appender = current;
        Ok(())
    }

    fn wedge_if(&self, wedge: bool) {
        if wedge {
            self.wedged.store(true, Ordering::Relaxed);
            tracing::error!(path = %self.shared.path.display(), "audit writer stopped taking events: a failed batch could not be undone; restart hop");
        }
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
