//! The search indexes and the thread that writes them. This module owns which index entries one
//! event has — one in time order, one per event type and id, and one per user and per session
//! when those are set — keeps adding and removing them symmetric, and runs the indexer: a thread
//! of its own, off the writer's path, that collects the entries of durable events, sorts them
//! into runs and writes each run in one redb transaction.
//!
//! Why runs: redb rewrites every B-tree page a transaction touches. Inserted one batch at a
//! time, each event's entries land on different leaves; sorted runs of many batches rewrite
//! each leaf about once per run. Entries for events after the `indexed_through` watermark (kept
//! in the meta table, advanced in the transaction that writes a run) may be missing; search
//! scans those few events in the segments, and a restart re-reads them from there. This module
//! must never advance the watermark past an event whose entries are not all written, forget an
//! unindexed id before its entry is committed, nor leave entries behind when an event is
//! purged.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redb::{Durability, ReadableTable, Table, WriteTransaction};
use tokio::sync::oneshot;

use super::tables::{
    BY_ID, BY_SESSION, BY_TIME, BY_TYPE, BY_USER, INDEXED_KEY, LAST_SEQ_KEY, META,
};
use super::writer::Shared;

/// The index keys of one event.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IndexKeys<'a> {
    pub(crate) time_us: u64,
    pub(crate) seq: u64,
    pub(crate) event_type: &'a str,
    pub(crate) user: &'a str,
    pub(crate) session_id: &'a str,
    pub(crate) id: &'a str,
}

/// The owned index keys of one event waiting to be indexed.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) time_us: u64,
    pub(crate) seq: u64,
    pub(crate) event_type: String,
    pub(crate) user: String,
    pub(crate) session_id: String,
    pub(crate) id: String,
}

/// The index tables, open in one write transaction.
pub(crate) struct Indexes<'txn> {
    pub(crate) by_time: Table<'txn, (u64, u64), ()>,
    pub(crate) by_user: Table<'txn, (&'static [u8], u64, u64), ()>,
    pub(crate) by_session: Table<'txn, (&'static [u8], u64, u64), ()>,
    pub(crate) by_type: Table<'txn, (&'static [u8], u64, u64), ()>,
    pub(crate) by_id: Table<'txn, &'static [u8], u64>,
}

impl<'txn> Indexes<'txn> {
    pub(crate) fn open(txn: &'txn WriteTransaction) -> Result<Self, redb::Error> {
        Ok(Self {
            by_time: txn.open_table(BY_TIME)?,
            by_user: txn.open_table(BY_USER)?,
            by_session: txn.open_table(BY_SESSION)?,
            by_type: txn.open_table(BY_TYPE)?,
            by_id: txn.open_table(BY_ID)?,
        })
    }

    /// The seq already holding `id` in the id index, if any.
    pub(crate) fn indexed_id(&self, id: &str) -> Result<Option<u64>, redb::Error> {
        Ok(self.by_id.get(id.as_bytes())?.map(|seq| seq.value()))
    }

    /// Removes every entry of the event, its id included (if the id still points at it).
    pub(crate) fn remove(&mut self, k: &IndexKeys<'_>) -> Result<(), redb::Error> {
        self.by_time.remove((k.time_us, k.seq))?;
        self.by_type
            .remove((k.event_type.as_bytes(), k.time_us, k.seq))?;
        if !k.user.is_empty() {
            self.by_user.remove((k.user.as_bytes(), k.time_us, k.seq))?;
        }
        if !k.session_id.is_empty() {
            self.by_session
                .remove((k.session_id.as_bytes(), k.time_us, k.seq))?;
        }
        if self.indexed_id(k.id)? == Some(k.seq) {
            self.by_id.remove(k.id.as_bytes())?;
        }
        Ok(())
    }
}

/// Collected entries are written once there are this many…
const MIN_RUN: usize = 8192;
/// …or once the oldest is this old.
const MAX_PENDING_AGE: Duration = Duration::from_millis(250);
/// The most entries one transaction writes.
const MAX_RUN: usize = 65_536;

/// id → seq of every durable event not yet in the id index. The writer adds to it before it
/// hands the entries on; the indexer removes ids only after their run has committed, so an id
/// is always in one of the two places.
#[derive(Debug, Default)]
pub(crate) struct UnindexedIds(Mutex<HashMap<String, u64>>);

impl UnindexedIds {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
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
            match write_run(&self.shared, &self.pending[..n]) {
                Ok(through) => {
                    self.pending.drain(..n);
                    self.shared
                        .unindexed_ids
                        .lock()
                        .retain(|_, seq| *seq > through);
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

/// Writes `entries` (seq order) in one transaction and moves the watermark to the last one.
fn write_run(shared: &Shared, entries: &[Entry]) -> Result<u64, redb::Error> {
    let through = entries.last().map_or(0, |e| e.seq);
    let mut by_time: Vec<(u64, u64)> = Vec::with_capacity(entries.len());
    let mut by_type: Vec<(&str, u64, u64)> = Vec::with_capacity(entries.len());
    let mut by_user: Vec<(&str, u64, u64)> = Vec::with_capacity(entries.len());
    let mut by_session: Vec<(&str, u64, u64)> = Vec::with_capacity(entries.len());
    let mut by_id: Vec<(&str, u64)> = Vec::with_capacity(entries.len());
    for e in entries {
        by_time.push((e.time_us, e.seq));
        by_type.push((&e.event_type, e.time_us, e.seq));
        if !e.user.is_empty() {
            by_user.push((&e.user, e.time_us, e.seq));
        }
        if !e.session_id.is_empty() {
            by_session.push((&e.session_id, e.time_us, e.seq));
        }
        by_id.push((&e.id, e.seq));
    }
    by_time.sort_unstable();
    by_type.sort_unstable();
    by_user.sort_unstable();
    by_session.sort_unstable();
    by_id.sort_unstable();
    let mut txn = shared.db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    {
        let mut idx = Indexes::open(&txn)?;
        for key in by_time {
            idx.by_time.insert(key, ())?;
        }
        for (t, time, seq) in by_type {
            idx.by_type.insert((t.as_bytes(), time, seq), ())?;
        }
        for (u, time, seq) in by_user {
            idx.by_user.insert((u.as_bytes(), time, seq), ())?;
        }
        for (s, time, seq) in by_session {
            idx.by_session.insert((s.as_bytes(), time, seq), ())?;
        }
        for (id, seq) in by_id {
            idx.by_id.insert(id.as_bytes(), seq)?;
        }
        let mut meta = txn.open_table(META)?;
        let last = meta.get(LAST_SEQ_KEY)?.map_or(0, |v| v.value());
        meta.insert(INDEXED_KEY, through)?;
        meta.insert(LAST_SEQ_KEY, last.max(through))?;
    }
    txn.commit()?;
    Ok(through)
}
