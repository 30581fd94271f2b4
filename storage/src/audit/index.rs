//! The search indexes and the thread that writes them. This module owns the index layout —
//! posting blocks, not one B-tree entry per event — and the indexer: a thread of its own, off
//! the writer's path, that collects the entries of durable events into runs and writes each run
//! in one redb transaction.
//!
//! A run (up to 64k events, contiguous seqs) becomes one block per (dimension, value, second of
//! event time): the event type, the user, the session id, and the empty value of the time
//! dimension, each block listing its events' (time, seq) pairs in order, 8 bytes a pair
//! (`block.rs`; a busy block is cut into chunks that fit a 16 KiB page). Search reads the blocks
//! of the seconds its window covers, newest (or oldest) second first, and stops once its page is
//! full. A busy value costs one B-tree entry per second per run instead of one per event; a rare
//! one costs what a per-event index would. Ids supplied by producers (which must be idempotent)
//! get an entry each in the id index; ids the log assigned itself (v7 UUIDs) cannot repeat and
//! are found by their embedded time instead. The `runs` table lists each run's blocks, so
//! retention removes them whole.
//!
//! Entries for events after the `indexed_through` watermark (kept in the meta table, advanced in
//! the transaction that writes a run) are not indexed yet; search scans those few events in the
//! segments, and a restart re-reads them from there. This module must never advance the
//! watermark past an event whose entries are not all written, forget an unindexed id before its
//! entry is committed, nor leave a run's blocks behind when its events are purged.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redb::{Database, Durability, ReadableTable, WriteTransaction};
use tokio::sync::oneshot;

use super::block;
use super::id_block;
use super::tables::{BLOCKS, BY_ID, INDEXED_KEY, LAST_SEQ_KEY, META, RUNS};
use super::writer::Shared;

/// The dimensions a block belongs to.
pub(crate) const DIM_TIME: u8 = 0;
pub(crate) const DIM_TYPE: u8 = 1;
pub(crate) const DIM_USER: u8 = 2;
pub(crate) const DIM_SESSION: u8 = 3;
/// Producers' time-ordered ids (`id_block`): the last dimension, read by no search.
pub(crate) const DIM_ID: u8 = 4;
/// A block covers one second of event time.
pub(crate) const BUCKET_US: u64 = 1_000_000;

/// The owned index keys of one event waiting to be indexed.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) time_us: u64,
    pub(crate) seq: u64,
    pub(crate) event_type: String,
    pub(crate) user: String,
    pub(crate) session_id: String,
    pub(crate) id: String,
    /// The log assigned the id (it goes in no id index entry).
    pub(crate) fresh_id: bool,
    /// The id's parts when it is a producer's canonical v7 (it goes in an id block).
    pub(crate) v7: Option<(u64, id_block::Rest)>,
}

/// A block's key without its run: dimension, value, second.
type BlockKey<'a> = (u8, &'a [u8], u64);

/// Collects a run's pairs per block key. Consecutive events mostly share their second, type,
/// and often their session and user, so each dimension first checks the block its previous
/// event went to before hashing.
#[derive(Default)]
struct BlockSet<'a> {
    blocks: Vec<(BlockKey<'a>, Vec<(u64, u64)>)>,
    // A fast hasher, seeded per process (foldhash), since this runs for every event.
    index: HashMap<BlockKey<'a>, usize, foldhash::fast::RandomState>,
    last: [Option<(BlockKey<'a>, usize)>; 4],
}

impl<'a> BlockSet<'a> {
    fn add(&mut self, key: BlockKey<'a>, pair: (u64, u64)) {
        let slot = usize::from(key.0);
        let at = match self.last[slot] {
            Some((last, at)) if last == key => at,
            _ => {
                let next = self.blocks.len();
                let at = *self.index.entry(key).or_insert(next);
                if at == next {
                    self.blocks.push((key, Vec::new()));
                }
                self.last[slot] = Some((key, at));
                at
            }
        };
        self.blocks[at].1.push(pair);
    }
}

/// Builds the blocks of a run, in key order, each with its pairs in (time, seq) order.
fn blocks_of(entries: &[Entry]) -> Vec<(BlockKey<'_>, Vec<(u64, u64)>)> {
    let mut set = BlockSet::default();
    for e in entries {
        let bucket = e.time_us / BUCKET_US;
        let pair = (e.time_us, e.seq);
        set.add((DIM_TIME, &[], bucket), pair);
        set.add((DIM_TYPE, e.event_type.as_bytes(), bucket), pair);
        if !e.user.is_empty() {
            set.add((DIM_USER, e.user.as_bytes(), bucket), pair);
        }
        if !e.session_id.is_empty() {
            set.add((DIM_SESSION, e.session_id.as_bytes(), bucket), pair);
        }
    }
    let mut out = set.blocks;
    for (_, pairs) in &mut out {
        pairs.sort_unstable();
    }
    // Key order, so each B-tree leaf is rewritten about once.
    out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    out
}

/// A run's row in the runs table: its last seq, then each block key (dimension, value length
/// as u16, value, second).
fn run_row(last_seq: u64, keys: &[BlockKey<'_>]) -> Vec<u8> {
    let mut row = Vec::with_capacity(8 + keys.len() * 24);
    row.extend_from_slice(&last_seq.to_le_bytes());
    for (dim, value, bucket) in keys {
        row.push(*dim);
        // Values are bounded by the event schema (names far below 64 KiB).
        row.extend_from_slice(&(value.len() as u16).to_le_bytes());
        row.extend_from_slice(value);
        row.extend_from_slice(&bucket.to_le_bytes());
    }
    row
}

/// A block key read back from a run row.
pub(crate) type OwnedBlockKey = (u8, Vec<u8>, u64);

/// Parses a run row: its last seq and block keys; `None` if the bytes are damaged.
pub(crate) fn parse_run_row(row: &[u8]) -> Option<(u64, Vec<OwnedBlockKey>)> {
    let (last, mut rest) = row.split_first_chunk::<8>()?;
    let mut keys = Vec::new();
    while let Some((&dim, after)) = rest.split_first() {
        let (len, after) = after.split_first_chunk::<2>()?;
        let len = usize::from(u16::from_le_bytes(*len));
        if after.len() < len + 8 {
            return None;
        }
        let (value, after) = after.split_at(len);
        let (bucket, after) = after.split_first_chunk::<8>()?;
        keys.push((dim, value.to_vec(), u64::from_le_bytes(*bucket)));
        rest = after;
    }
    Some((u64::from_le_bytes(*last), keys))
}

/// The producers' ids of a run, split: time-ordered ones as encoded id blocks by millisecond
/// (each cut into chunks of at most `id_block::MAX_ENTRIES`), the rest as (id, seq) for the id
/// table.
#[allow(clippy::type_complexity)]
fn split_ids(entries: &[Entry]) -> (Vec<(u64, Vec<Vec<u8>>)>, Vec<(&str, u64)>) {
    let mut timed: Vec<(u64, id_block::Rest, u64, &str)> = Vec::new();
    let mut others = Vec::new();
    for e in entries.iter().filter(|e| !e.fresh_id) {
        match e.v7 {
            Some((ms, rest)) => timed.push((ms, rest, e.seq, e.id.as_str())),
            None => others.push((e.id.as_str(), e.seq)),
        }
    }
    // Mostly in order already (ids follow event time); a stable sort keeps seq order per ms.
    timed.sort_by_key(|&(ms, ..)| ms);
    let mut blocks = Vec::new();
    for group in timed.chunk_by(|a, b| a.0 == b.0) {
        let ms = group[0].0;
        let ids: Vec<(id_block::Rest, u64)> =
            group.iter().map(|&(_, rest, seq, _)| (rest, seq)).collect();
        let chunks: Option<Vec<Vec<u8>>> = ids
            .chunks(id_block::MAX_ENTRIES)
            .map(id_block::encode)
            .collect();
        match chunks {
            Some(chunks) => blocks.push((ms, chunks)),
            // Seqs too far apart to pack (not in a run of at most 64k): the id table takes them.
            None => others.extend(group.iter().map(|&(_, _, seq, id)| (id, seq))),
        }
    }
    (blocks, others)
}

/// Writes `entries` (seq order, contiguous) as one run in `txn`: its blocks, its row, the ids
/// producers supplied, and the watermark. Returns the run's last seq.
pub(crate) fn write_run(txn: &WriteTransaction, entries: &[Entry]) -> Result<u64, redb::Error> {
    let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
        return Ok(0);
    };
    let blocks = blocks_of(entries);
    {
        let mut table = txn.open_table(BLOCKS)?;
        for ((dim, value, bucket), pairs) in &blocks {
            // Chunk k of a block is keyed first.seq + k: within the run's seqs, so no other
            // run's key, and retention finds them all in the run's range.
            for (k, chunk) in (first.seq..).zip(pairs.chunks(block::MAX_PAIRS)) {
                let bytes = block::encode(*bucket, chunk);
                table.insert((*dim, *value, *bucket, k), bytes.as_slice())?;
            }
        }
        let (id_blocks, mut ids) = split_ids(entries);
        for (ms, chunk) in &id_blocks {
            for (k, block) in (first.seq..).zip(chunk) {
                table.insert((DIM_ID, &[][..], *ms, k), block.as_slice())?;
            }
        }
        let mut keys: Vec<BlockKey<'_>> = blocks.iter().map(|(k, _)| *k).collect();
        keys.extend(id_blocks.iter().map(|(ms, _)| (DIM_ID, &[][..], *ms)));
        txn.open_table(RUNS)?
            .insert(first.seq, run_row(last.seq, &keys).as_slice())?;
        ids.sort_unstable();
        let mut by_id = txn.open_table(BY_ID)?;
        for (id, seq) in ids {
            by_id.insert(id.as_bytes(), seq)?;
        }
        let mut meta = txn.open_table(META)?;
        let recorded = meta.get(LAST_SEQ_KEY)?.map_or(0, |v| v.value());
        meta.insert(INDEXED_KEY, last.seq)?;
        meta.insert(LAST_SEQ_KEY, recorded.max(last.seq))?;
    }
    Ok(last.seq)
}

/// Writes `entries` as one durable run of `db`.
pub(crate) fn commit_run(db: &Database, entries: &[Entry]) -> Result<u64, redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    let through = write_run(&txn, entries)?;
    txn.commit()?;
    Ok(through)
}

/// Removes the blocks and rows of every run that ends at or before `through_seq`; runs that
/// reach past it stay (search skips their purged events). Returns how many runs went.
pub(crate) fn remove_runs_through(
    txn: &WriteTransaction,
    through_seq: u64,
) -> Result<usize, redb::Error> {
    let mut runs = txn.open_table(RUNS)?;
    let mut blocks = txn.open_table(BLOCKS)?;
    let mut gone = Vec::new();
    for row in runs.range(..=through_seq)? {
        let (first, row) = row?;
        let Some((last, keys)) = parse_run_row(row.value()) else {
            tracing::warn!(
                run = first.value(),
                "audit run row is damaged; its blocks stay"
            );
            continue;
        };
        if last > through_seq {
            continue;
        }
        for (dim, value, bucket) in &keys {
            let (value, bucket) = (value.as_slice(), *bucket);
            // The block's chunks, keyed within the run's seqs.
            blocks.retain_in(
                (*dim, value, bucket, first.value())..=(*dim, value, bucket, last),
                |_, _| false,
            )?;
        }
        gone.push(first.value());
    }
    for first in &gone {
        runs.remove(first)?;
    }
    Ok(gone.len())
}

/// Removes `id`'s entry if it still points at `seq`.
pub(crate) fn remove_id(txn: &WriteTransaction, id: &str, seq: u64) -> Result<(), redb::Error> {
    let mut by_id = txn.open_table(BY_ID)?;
    let points_here = by_id.get(id.as_bytes())?.is_some_and(|v| v.value() == seq);
    if points_here {
        by_id.remove(id.as_bytes())?;
    }
    Ok(())
}

/// Collected entries are written once there are this many… (A run's cost is mostly per run and
/// per block, not per event: at 160k events/s, runs of 32k took 0.8 µs of this thread per event
/// where runs of 8k took 1.2. The price: under such a flood, search scans up to about two runs of
/// not yet indexed events in the segments.)
const MIN_RUN: usize = 32_768;
/// …or once the oldest is this old.
const MAX_PENDING_AGE: Duration = Duration::from_millis(250);
/// The most entries one transaction writes.
const MAX_RUN: usize = 65_536;
/// The most entries held while runs fail to be written.
const MAX_PENDING: usize = 4 * MAX_RUN;

/// id → seq of every durable event not yet in the id index. The writer adds to it before it
/// hands the entries on; the indexer removes ids only after their run has committed, so an id
/// is always in one of the two places.
#[derive(Debug, Default)]
pub(crate) struct UnindexedIds(Mutex<IdSeqs>);

impl UnindexedIds {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, IdSeqs> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The seqs of producers' ids: canonical v7 ids by their 16 bytes (no text kept, a fast hash),
/// the others by their text.
#[derive(Debug, Default)]
pub(crate) struct IdSeqs {
    v7: HashMap<(u64, id_block::Rest), u64, foldhash::fast::RandomState>,
    text: HashMap<String, u64>,
}

impl IdSeqs {
    pub(crate) fn get(&self, id: id_block::IdRef<'_>) -> Option<u64> {
        match id {
            id_block::IdRef::V7(ms, rest) => self.v7.get(&(ms, rest)).copied(),
            id_block::IdRef::Text(text) => self.text.get(text).copied(),
        }
    }

    /// Claims `e`'s id for its seq.
    pub(crate) fn insert(&mut self, e: &Entry) {
        match e.v7 {
            Some(parts) => self.v7.insert(parts, e.seq),
            None => self.text.insert(e.id.clone(), e.seq),
        };
    }

    /// Forgets the ids of seqs up to `through` (their run has committed).
    pub(crate) fn forget_through(&mut self, through: u64) {
        self.v7.retain(|_, seq| *seq > through);
        self.text.retain(|_, seq| *seq > through);
    }
}

/// What the indexer is asked to do.
pub(crate) enum IndexWork {
    /// Entries of newly durable events, in seq order.
    Entries(Vec<Entry>),
    /// Write everything collected, then signal.
    Flush(oneshot::Sender<()>),
}

/// The indexer thread's state.
pub(crate) struct Indexer {
    shared: Arc<Shared>,
    work: Receiver<IndexWork>,
    pending: Vec<Entry>,
}

impl Indexer {
    /// An indexer starting with `unindexed` (the entries a restart re-read from the segments).
    pub(crate) fn new(
        shared: Arc<Shared>,
        work: Receiver<IndexWork>,
        unindexed: Vec<Entry>,
    ) -> Self {
        Self {
            shared,
            work,
            pending: unindexed,
        }
    }

    /// Runs until the writer is gone, then writes what is left.
    pub(crate) fn run(mut self) {
        loop {
            // While runs cannot be written (a full disk, a damaged index), take no more: the
            // queue fills and the writer waits, rather than the backlog growing without bound.
            if self.pending.len() >= MAX_PENDING {
                self.write_pending();
                if self.pending.len() >= MAX_PENDING {
                    continue;
                }
            }
            let wait = if self.pending.is_empty() {
                Duration::from_secs(3600)
            } else {
                MAX_PENDING_AGE
            };
            match self.work.recv_timeout(wait) {
                Ok(IndexWork::Entries(entries)) => {
                    self.pending.extend(entries);
                    if self.pending.len() >= MIN_RUN {
                        self.write_pending();
                    }
                }
                Ok(IndexWork::Flush(done)) => {
                    self.write_pending();
                    let _ = done.send(());
                }
                Err(RecvTimeoutError::Timeout) => self.write_pending(),
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        self.write_pending();
        if !self.pending.is_empty() {
            tracing::warn!(
                events = self.pending.len(),
                "audit index entries not written at shutdown; they are rebuilt at the next open"
            );
        }
    }

    /// Writes every pending entry, a run per transaction; on failure keeps them for later.
    fn write_pending(&mut self) {
        while !self.pending.is_empty() {
            let n = self.pending.len().min(MAX_RUN);
            match commit_run(&self.shared.db, &self.pending[..n]) {
                Ok(through) => {
                    self.pending.drain(..n);
                    self.shared.unindexed_ids.lock().forget_through(through);
                }
                Err(error) => {
                    tracing::error!(%error, "audit index run could not be written; will retry");
                    std::thread::sleep(Duration::from_millis(100));
                    return;
                }
            }
        }
    }
}
