//! Retention. This module owns deleting whole days (chains) of the log that are older than a
//! cutoff — their events and every index entry — in short durable transactions that leave a
//! purge boundary behind, so the retained log still verifies, and the background thread that
//! applies `audit.retention` once an hour. It must never delete part of a day that is not
//! strictly before the cutoff's day, nor hold the writer off for long.

use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use redb::{ReadableDatabase, ReadableTable};

use super::chain::{chain_name, day_of, decode_record, parse_view};
use super::error::AuditError;
use super::event::system_time_to_us;
use super::index::{IndexKeys, Indexes};
use super::tables::{
    self, BOUNDARY_KEY, Boundary, EVENTS, INDEXED_KEY, LAST_SEQ_KEY, META, PURGED, SEGMENTS,
};
use super::writer::Shared;

/// Events deleted per transaction: small enough that the writer waits only milliseconds.
const PURGE_CHUNK: u64 = 2048;
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
    // Only what was written, and indexed, before the purge started: a purge of the day being
    // written must not chase the writer forever, and an event whose index entries are still in
    // the writer's backlog cannot have them removed.
    let limit_seq = {
        let txn = shared.db.begin_read().map_err(|e| shared.err(e))?;
        let meta = txn.open_table(META).map_err(|e| shared.err(e))?;
        let value = |key| -> Result<u64, AuditError> {
            Ok(meta
                .get(key)
                .map_err(|e| shared.err(e))?
                .map_or(0, |v| v.value()))
        };
        value(LAST_SEQ_KEY)?.min(value(INDEXED_KEY)?)
    };
    let mut report = PurgeReport::default();
    while purge_chunk(shared, &cutoff_chain, limit_seq, &mut report)? {}
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

/// Deletes up to [`PURGE_CHUNK`] events of the oldest chain before `cutoff_chain` in one
/// durable transaction. Returns whether there may be more to purge.
fn purge_chunk(
    shared: &Shared,
    cutoff_chain: &str,
    limit_seq: u64,
    report: &mut PurgeReport,
) -> Result<bool, AuditError> {
    let err = |e: redb::Error| AuditError::from(shared.err(e));
    let txn = tables::begin_durable(&shared.path, &shared.db)?;
    let (chain, finished, deleted) = {
        let mut segments = txn.open_table(SEGMENTS).map_err(|e| err(e.into()))?;
        let Some((chain, (first, last))) = segments
            .first()
            .map_err(|e| err(e.into()))?
            .map(|(k, v)| (k.value().to_owned(), v.value()))
        else {
            return Ok(false);
        };
        if chain.as_str() >= cutoff_chain || first > limit_seq {
            return Ok(false);
        }
        let mut purged = txn.open_table(PURGED).map_err(|e| err(e.into()))?;
        let mut boundary = tables::read_boundary(&shared.path, &purged)?;
        let mut events = txn.open_table(EVENTS).map_err(|e| err(e.into()))?;
        let mut indexes = Indexes::open(&txn).map_err(err)?;
        let end = last
            .min(first.saturating_add(PURGE_CHUNK - 1))
            .min(limit_seq);
        let mut deleted = 0;
        for seq in first..=end {
            let Some(bytes) = events
                .remove(seq)
                .map_err(|e| err(e.into()))?
                .map(|guard| guard.value().to_vec())
            else {
                continue;
            };
            let record = decode_record(&bytes)
                .map_err(|d| shared.corrupt(format!("audit event {seq}: {d}")))?;
            let view = parse_view(record.canonical)
                .map_err(|d| shared.corrupt(format!("audit event {seq}: {d}")))?;
            let time_us = view
                .time_us()
                .ok_or_else(|| shared.corrupt(format!("audit event {seq}: bad time")))?;
            indexes
                .remove(&IndexKeys {
                    time_us,
                    seq,
                    event_type: &view.event,
                    user: &view.user,
                    session_id: &view.session_id,
                    id: &view.id,
                })
                .map_err(err)?;
            deleted += 1;
            boundary = Some(Boundary {
                through_seq: seq,
                chain: view.chain.into_owned(),
                hash: hex::encode(record.hash),
            });
        }
        if let Some(boundary) = &mut boundary {
            // Every seq up to `end` is gone, even ones that were already missing.
            boundary.through_seq = boundary.through_seq.max(end);
            let json = serde_json::to_string(boundary)
                .map_err(|e| shared.corrupt(format!("purge boundary: {e}")))?;
            purged
                .insert(BOUNDARY_KEY, json.as_str())
                .map_err(|e| err(e.into()))?;
        }
        let finished = end == last;
        if finished {
            segments.remove(chain.as_str()).map_err(|e| err(e.into()))?;
        } else {
            segments
                .insert(chain.as_str(), (end + 1, last))
                .map_err(|e| err(e.into()))?;
        }
        (chain, finished, deleted)
    };
    txn.commit().map_err(|e| err(e.into()))?;
    report.events += deleted;
    if finished {
        report.chains.push(chain);
    }
    Ok(true)
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
