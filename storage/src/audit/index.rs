//! The search indexes. This module owns which index entries one event has — one in time order,
//! written with the event; one per event type and id, and one per user and per session when
//! those are set, written later in sorted runs — and keeps adding and removing them symmetric.
//!
//! Why later: the disk, not the CPU, bounds group commit, and redb rewrites every B-tree page a
//! transaction touches. Inserted one batch at a time, each event's user, session, type and id
//! entries land on different leaves, so a batch of N events rewrites about 4N pages. The
//! [`IndexBacklog`] instead collects the entries of many batches, sorts them, and writes them in
//! key order a slice per transaction, so each leaf is rewritten about once per run. Entries for
//! events after the `indexed_through` watermark (kept in the meta table, advanced in the
//! transaction that completes a run) may be missing; search scans those few events directly, and
//! a restart re-reads them from the events table. This module must never advance the watermark
//! past an event whose entries are not all written, nor leave entries behind when an event is
//! purged.

use std::collections::HashMap;
use std::time::Instant;

use redb::{ReadableTable, Table, WriteTransaction};

use super::tables::{BY_ID, BY_SESSION, BY_TIME, BY_TYPE, BY_USER};

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

/// A sorted run of index entries being written, a slice per transaction.
#[derive(Debug)]
struct Run {
    /// Every event up to here is in this run or already indexed.
    through_seq: u64,
    by_type: Vec<(String, u64, u64)>,
    by_user: Vec<(String, u64, u64)>,
    by_session: Vec<(String, u64, u64)>,
    by_id: Vec<(String, u64)>,
    /// How far writing has got: which table (in the order above) and how many entries of it.
    cursor: (usize, usize),
}

impl Run {
    fn new(entries: Vec<Entry>, through_seq: u64) -> Self {
        let mut run = Self {
            through_seq,
            by_type: Vec::with_capacity(entries.len()),
            by_user: Vec::with_capacity(entries.len()),
            by_session: Vec::with_capacity(entries.len()),
            by_id: Vec::with_capacity(entries.len()),
            cursor: (0, 0),
        };
        for e in entries {
            run.by_type.push((e.event_type, e.time_us, e.seq));
            if !e.user.is_empty() {
                run.by_user.push((e.user, e.time_us, e.seq));
            }
            if !e.session_id.is_empty() {
                run.by_session.push((e.session_id, e.time_us, e.seq));
            }
            run.by_id.push((e.id, e.seq));
        }
        run.by_type.sort_unstable();
        run.by_user.sort_unstable();
        run.by_session.sort_unstable();
        run.by_id.sort_unstable();
        run
    }

    /// Writes up to `budget` more entries; returns whether the run is complete.
    fn write(&mut self, idx: &mut Indexes<'_>, mut budget: usize) -> Result<bool, redb::Error> {
        while budget > 0 {
            let (table, at) = self.cursor;
            let len = match table {
                0 => self.by_type.len(),
                1 => self.by_user.len(),
                2 => self.by_session.len(),
                3 => self.by_id.len(),
                _ => return Ok(true),
            };
            let end = len.min(at + budget);
            for i in at..end {
                match table {
                    0 => {
                        let (t, time, seq) = &self.by_type[i];
                        idx.by_type.insert((t.as_bytes(), *time, *seq), ())?;
                    }
                    1 => {
                        let (u, time, seq) = &self.by_user[i];
                        idx.by_user.insert((u.as_bytes(), *time, *seq), ())?;
                    }
                    2 => {
                        let (s, time, seq) = &self.by_session[i];
                        idx.by_session.insert((s.as_bytes(), *time, *seq), ())?;
                    }
                    _ => {
                        let (id, seq) = &self.by_id[i];
                        idx.by_id.insert(id.as_bytes(), *seq)?;
                    }
                }
            }
            budget -= end - at;
            self.cursor = if end == len {
                (table + 1, 0)
            } else {
                (table, end)
            };
        }
        Ok(self.cursor.0 > 3)
    }
}

/// Index entries of durable events not yet (completely) in the index tables, and the ids they
/// claim, so a repeated id is caught before its entry is written.
#[derive(Debug)]
pub(crate) struct IndexBacklog {
    /// Every event up to here has all its index entries written.
    indexed_through: u64,
    /// Entries collected since the current run was formed, in seq order.
    pending: Vec<Entry>,
    /// When the oldest pending entry arrived.
    pending_since: Option<Instant>,
    run: Option<Run>,
    /// id → seq for every event after `indexed_through`.
    ids: HashMap<String, u64>,
}

/// What one transaction did to the backlog, applied once it has committed.
#[derive(Debug, Default)]
pub(crate) struct BacklogStep {
    run_cursor_before: Option<(usize, usize)>,
    run_finished: bool,
}

impl IndexBacklog {
    /// A backlog after `indexed_through`, holding the entries of the events after it (collected
    /// at `now`).
    pub(crate) fn new(indexed_through: u64, unindexed: Vec<Entry>, now: Instant) -> Self {
        let mut backlog = Self {
            indexed_through,
            pending: Vec::new(),
            pending_since: None,
            run: None,
            ids: HashMap::new(),
        };
        backlog.add(unindexed, now);
        backlog
    }

    /// The seq of an event after the watermark with this id.
    pub(crate) fn unindexed_id(&self, id: &str) -> Option<u64> {
        self.ids.get(id).copied()
    }

    pub(crate) fn has_work(&self) -> bool {
        self.run.is_some() || !self.pending.is_empty()
    }

    /// When idle work should start: at once (`now`) for a run in progress, after `max_age` for
    /// collected entries.
    pub(crate) fn due(&self, max_age: std::time::Duration, now: Instant) -> Option<Instant> {
        if self.run.is_some() {
            return Some(now);
        }
        self.pending_since.map(|since| since + max_age)
    }

    /// Adds the entries of newly durable events, collected at `now`.
    pub(crate) fn add(&mut self, entries: Vec<Entry>, now: Instant) {
        if entries.is_empty() {
            return;
        }
        for e in &entries {
            self.ids.insert(e.id.clone(), e.seq);
        }
        self.pending_since.get_or_insert(now);
        self.pending.extend(entries);
    }

    /// Forms a run of the collected entries, if there is none and `force` or enough collected
    /// (`min_run`) or they are old (`max_age` at `now`).
    pub(crate) fn maybe_form_run(
        &mut self,
        min_run: usize,
        max_age: std::time::Duration,
        force: bool,
        now: Instant,
    ) {
        if self.run.is_some() || self.pending.is_empty() {
            return;
        }
        let old = self
            .pending_since
            .is_some_and(|since| now.saturating_duration_since(since) >= max_age);
        if force || old || self.pending.len() >= min_run {
            let through = self.pending.last().map_or(self.indexed_through, |e| e.seq);
            self.run = Some(Run::new(std::mem::take(&mut self.pending), through));
            self.pending_since = None;
        }
    }

    /// Writes up to `budget` entries of the current run into `idx`; the caller commits and
    /// then calls [`IndexBacklog::committed`] (or [`IndexBacklog::aborted`]).
    pub(crate) fn write(
        &mut self,
        idx: &mut Indexes<'_>,
        budget: usize,
    ) -> Result<(BacklogStep, Option<u64>), redb::Error> {
        let Some(run) = &mut self.run else {
            return Ok((BacklogStep::default(), None));
        };
        let before = run.cursor;
        let finished = run.write(idx, budget)?;
        Ok((
            BacklogStep {
                run_cursor_before: Some(before),
                run_finished: finished,
            },
            finished.then_some(run.through_seq),
        ))
    }

    /// The transaction that carried `step` is durable.
    pub(crate) fn committed(&mut self, step: BacklogStep) {
        if !step.run_finished {
            return;
        }
        if let Some(run) = self.run.take() {
            // Every id of an event up to the run's end is now in the id index. One pass over
            // the map's values instead of re-hashing each id of the run.
            let through = run.through_seq;
            self.ids.retain(|_, seq| *seq > through);
            self.indexed_through = through;
        }
    }

    /// The transaction that carried `step` was rolled back.
    pub(crate) fn aborted(&mut self, step: BacklogStep) {
        if let (Some(run), Some(before)) = (&mut self.run, step.run_cursor_before) {
            run.cursor = before;
        }
    }
}
