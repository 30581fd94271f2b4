//! Retention. This module owns deleting whole days (chains) of the log that are older than a
//! cutoff — their id entries and index runs in short durable transactions that leave a purge
//! boundary behind, so the retained log still verifies, then their segment files (a run that
//! reaches into the next day stays until that day goes; search skips its purged events) — and
//! the background
//! thread that applies `audit.retention` once an hour. It must never delete part of a day that is not
//! strictly before the cutoff's day, nor hold the writer off for long.

use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use redb::ReadableDatabase;

use super::chain::{chain_name, day_of, decode_record, parse_view};
use super::error::AuditError;
use super::event::system_time_to_us;
use super::index;
use super::segment::{self, HEADER_LEN, Segment, frame_corrupt};
use super::tables::{self, BOUNDARY_KEY, Boundary, INDEXED_KEY, META, PURGED};
use super::writer::Shared;

/// Events deleted per transaction: small enough that the writer waits only milliseconds.
const PURGE_CHUNK: usize = 2048;
/// How often the background purge runs.
pub(crate) const PURGE_INTERVAL: Duration = Duration::from_secs(3600);

/// What a purge deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// The days (chains) now entirely gone, oldest first.
    pub chains: Vec<String>,
    /// How many events were deleted.
    pub events: u64,
}

pub(crate) fn purge_before(shared: &Shared, cutoff: SystemTime) -> Result<PurgeReport, AuditError> {
    let cutoff_chain = chain_name(day_of(system_time_to_us(cutoff)));
    let limit_seq = {
        let txn = shared.db.begin_read().map_err(|e| shared.err(e))?;
        let meta = txn.open_table(META).map_err(|e| shared.err(e))?;
        meta.get(INDEXED_KEY)
            .map_err(|e| shared.err(e))?
            .map_or(0, |v| v.value())
    };
    let mut report = PurgeReport::default();
    for segment in shared.segments.snapshot() {
        // Only whole days strictly before the cutoff's, and only what is fully indexed (the
        // index entries go with the events).
        if segment.chain.as_str() >= cutoff_chain.as_str() {
            break;
        }
        let Some(last_seq) = shared.segments.retire_if_through(&segment, limit_seq) else {
            break;
        };
        purge_segment(shared, &segment, last_seq, &mut report)?;
    }
    if report.events > 0 || !report.chains.is_empty() {
        tracing::info!(
            path = %shared.path.display(),
            before = %cutoff_chain,
            events = report.events,
            chains = ?report.chains,
            "audit events purged"
        );
    }
    Ok(report)
}

/// Removes one segment: the blocks of every run that ends within it, in the transaction that
/// moves the purge boundary past it, then its ids from the id index in chunks of short
/// transactions, then its files.
fn purge_segment(
    shared: &Shared,
    segment: &Arc<Segment>,
    last_seq: u64,
    report: &mut PurgeReport,
) -> Result<(), AuditError> {
    // The boundary first: a crash after it leaves ids pointing at purged events (a resent one
    // is taken as the repeat it is), never events whose ids are gone (which would be stored
    // twice).
    let boundary = last_link(shared, segment)?.map(|mut b| {
        b.through_seq = b.through_seq.max(last_seq);
        b
    });
    finish_segment(shared, boundary.as_ref(), last_seq)?;
    let mut chunk: Vec<(String, u64)> = Vec::with_capacity(PURGE_CHUNK);
    let mut events = 0;
    for item in segment.frames_from(HEADER_LEN) {
        let (_, bytes) = item.map_err(|e| AuditError::from(frame_corrupt(segment, &e)))?;
        let corrupt = |d| shared.corrupt(format!("audit segment {}: {d}", segment.chain));
        let record = decode_record(&bytes).map_err(corrupt)?;
        let view = parse_view(record.canonical).map_err(corrupt)?;
        chunk.push((view.id.into_owned(), view.seq));
        events += 1;
        if chunk.len() == PURGE_CHUNK {
            remove_ids(shared, &chunk)?;
            chunk.clear();
        }
    }
    remove_ids(shared, &chunk)?;
    shared.segments.remove(segment.first_seq);
    segment::delete_files(segment)?;
    report.events += events;
    if report.chains.last() != Some(&segment.chain) {
        report.chains.push(segment.chain.clone());
    }
    Ok(())
}

/// The link of `segment`'s last event: where the retained chain continues from.
fn last_link(shared: &Shared, segment: &Arc<Segment>) -> Result<Option<Boundary>, AuditError> {
    let mut last = None;
    for item in segment.frames_from(segment.offset_of_last()?) {
        let (_, bytes) = item.map_err(|e| AuditError::from(frame_corrupt(segment, &e)))?;
        let corrupt = |d| shared.corrupt(format!("audit segment {}: {d}", segment.chain));
        let record = decode_record(&bytes).map_err(corrupt)?;
        let view = parse_view(record.canonical).map_err(corrupt)?;
        last = Some(Boundary {
            through_seq: view.seq,
            chain: view.chain.to_string(),
            hash: hex::encode(record.hash),
        });
    }
    Ok(last)
}

/// Removes the id entries of `events` (those still pointing at them) in one transaction.
fn remove_ids(shared: &Shared, events: &[(String, u64)]) -> Result<(), AuditError> {
    if events.is_empty() {
        return Ok(());
    }
    let err = |e: redb::Error| AuditError::from(shared.err(e));
    let txn = tables::begin_durable(&shared.path, &shared.db)?;
    for (id, seq) in events {
        index::remove_id(&txn, id, *seq).map_err(err)?;
    }
    txn.commit().map_err(|e| err(e.into()))
}

/// Removes the runs that end by `last_seq` and records `boundary`, in one transaction.
fn finish_segment(
    shared: &Shared,
    boundary: Option<&Boundary>,
    last_seq: u64,
) -> Result<(), AuditError> {
    let err = |e: redb::Error| AuditError::from(shared.err(e));
    let txn = tables::begin_durable(&shared.path, &shared.db)?;
    index::remove_runs_through(&txn, last_seq).map_err(err)?;
    if let Some(boundary) = boundary {
        let json = serde_json::to_string(boundary)
            .map_err(|e| shared.corrupt(format!("purge boundary: {e}")))?;
        txn.open_table(PURGED)
            .map_err(|e| err(e.into()))?
            .insert(BOUNDARY_KEY, json.as_str())
            .map_err(|e| err(e.into()))?;
    }
    txn.commit().map_err(|e| err(e.into()))
}

/// The background thread that applies a retention period: at start, then every hour.
pub(crate) struct RetentionTask {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl RetentionTask {
    pub(crate) fn spawn(
        shared: Arc<Shared>,
        retention: Duration,
        interval: Duration,
    ) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("hop-audit-retention".to_owned())
            .spawn(move || {
                loop {
                    if let Some(cutoff) = shared.clock.now().checked_sub(retention)
                        && let Err(error) = purge_before(&shared, cutoff)
                    {
                        tracing::error!(%error, "audit retention purge failed; will retry");
                    }
                    match stopped.recv_timeout(interval) {
                        Err(RecvTimeoutError::Timeout) => {}
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
            })?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops the thread (after a purge in progress finishes) and waits for it.
    pub(crate) fn stop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("audit retention thread panicked");
        }
    }
}

impl Drop for RetentionTask {
    fn drop(&mut self) {
        self.stop();
    }
}
