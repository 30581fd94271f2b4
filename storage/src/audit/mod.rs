//! The durable audit log. This module owns [`AuditLog`]: append-only segment files (one per
//! UTC day, in `<name>.segments/` beside the index file, e.g. `<data_dir>/audit.segments/`)
//! holding the events, and one redb file of its own (e.g. `<data_dir>/audit.db`, apart from the
//! resource backend) holding the search indexes. Producers hand [`AuditEvent`]s that are
//! group-committed by one writer thread, hash-chained per UTC day, indexed for search off the
//! writer's path, verifiable, exportable as JSON lines and purged by whole days. It must never
//! acknowledge an event before it is durable, never drop an accepted event without counting
//! it, never store an id twice, and never read the clock except through the injected [`Clock`].
//!
//! How the pieces fit:
//! - producers validate and serialize their event on their own thread (`event`), then queue it
//!   on a bounded queue: [`AuditLog::append`] waits for durability, [`AuditLog::append_async`]
//!   returns a handle to wait on or `.await`, [`AuditLog::submit`] is fire-and-forget and is
//!   refused (and counted) when the queue is full;
//! - the writer thread (`writer`) takes everything queued, assigns each event the next `seq`,
//!   links it into its day's chain (`chain`: `hash = sha256(prev_hash || canonical JSON)`),
//!   appends the batch to the day's segment (`segment`) with one write and one `fdatasync`,
//!   and hands the acknowledgements to a second thread;
//! - the indexer thread (`index`) writes the time, user, session, type and id indexes behind
//!   the events in sorted runs; search (`search`) reads the indexes up to their watermark and
//!   scans the few events after it in the segments;
//! - `verify` re-derives every link, `retention` deletes whole days and records where the
//!   retained chain starts, `export` writes JSON lines; `tables` holds the index file's layout,
//!   `recover` what a restart reads back, `migrate` the one-time upgrade of a log whose index
//!   file also held the events (schema 1).

mod block;
mod chain;
mod error;
mod event;
mod export;
mod id_block;
mod index;
mod migrate;
mod postgres;
mod prealloc;
mod recover;
mod retention;
mod search;
mod segment;
mod tables;
mod verify;
mod writer;

use std::future::Future;
use std::io::Write;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;

pub use error::AuditError;
pub use event::{
    AuditEvent, MAX_EVENT_LEN, MAX_FIELD_LEN, MAX_NAME_LEN, RESERVED_FIELDS, StoredEvent,
};
pub use postgres::PgAuditStore;
pub use retention::PurgeReport;
pub use search::{DEFAULT_LIMIT, MAX_LIMIT, Order, SearchPage, SearchQuery};
pub use tables::AUDIT_SCHEMA_VERSION;
pub use verify::{BreakReason, BrokenLink, VerifyReport};

use crate::clock::Clock;
use event::system_time_to_us;
use index::{IndexWork, Indexer, UnindexedIds};
use segment::Segments;
use writer::{AckResult, BatchPolicy, Counters, Hold, Request, Shared, Writer};

/// Batches of index entries that may wait for the indexer before the writer waits for it: a
/// burst is absorbed, but under a sustained rate the indexer cannot follow the log runs at the
/// index's speed, so the unindexed tail that search must scan (and the memory it holds) stays
/// bounded.
const INDEX_QUEUE: usize = 64;

/// How the log batches, queues, retains and forwards.
pub struct AuditConfig {
    /// The most events written in one transaction.
    pub max_batch: usize,
    /// How long at most the writer may wait for more events when fewer are queued than in its
    /// previous batch (so producers just acknowledged can share the next fsync). It stops
    /// waiting as soon as no event has arrived for 200 µs, so a batch waits only for producers
    /// that are actually coming back. Zero: never wait (natural group commit: each batch is
    /// whatever queued while the previous one was being written).
    pub flush_interval: Duration,
    /// How long a batch made only of events nobody waits for ([`AuditLog::submit`]: session
    /// starts and ends, queries) may stay open for more events before it is written. Under a
    /// steady stream of such events this turns many small commits into few large ones (redb's
    /// commit, not the events, was most of the writer's CPU); an event someone waits for closes
    /// the batch at once. It lengthens by as much the time a queued event can be lost in a crash,
    /// which exists anyway for events queued without an acknowledgement. Zero: no lingering.
    pub unwatched_linger: Duration,
    /// Events that may wait for the writer. [`AuditLog::append`] blocks while it is full;
    /// [`AuditLog::submit`] fails with [`AuditError::Overloaded`].
    pub queue_capacity: usize,
    /// Keep this long (at least one day); older whole days are purged in the background, once
    /// at open and then hourly. `None`: keep everything.
    pub retention: Option<Duration>,
    /// Where to copy every event, as a JSON line, once it is durable (a file or stdout, for a
    /// SIEM shipper). Best effort: lines the sink cannot take in time are counted in
    /// [`AuditStats::forward_dropped`]; the log itself is unaffected.
    pub forward: Option<Box<dyn Write + Send>>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            max_batch: 4096,
            flush_interval: Duration::from_millis(2),
            unwatched_linger: Duration::from_millis(10),
            queue_capacity: 65_536,
            retention: None,
            forward: None,
        }
    }
}

impl std::fmt::Debug for AuditConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditConfig")
            .field("max_batch", &self.max_batch)
            .field("flush_interval", &self.flush_interval)
            .field("unwatched_linger", &self.unwatched_linger)
            .field("queue_capacity", &self.queue_capacity)
            .field("retention", &self.retention)
            .field("forward", &self.forward.is_some())
            .finish()
    }
}

impl AuditConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), AuditError> {
        let bad = |field, reason: &str| {
            Err(AuditError::InvalidConfig {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.max_batch == 0 {
            return bad("max_batch", "must be at least 1");
        }
        if self.queue_capacity == 0 {
            return bad("queue_capacity", "must be at least 1");
        }
        if self.flush_interval > Duration::from_secs(1) {
            return bad("flush_interval", "must be at most 1s");
        }
        if self.unwatched_linger > Duration::from_secs(1) {
            return bad("unwatched_linger", "must be at most 1s");
        }
        if self
            .retention
            .is_some_and(|r| r < Duration::from_secs(86_400))
        {
            return bad(
                "retention",
                "must be at least one day (days are purged whole)",
            );
        }
        Ok(())
    }
}

/// Counters since the log was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditStats {
    /// Events made durable.
    pub written: u64,
    /// Transactions (fsyncs) that wrote them.
    pub batches: u64,
    /// Fire-and-forget events refused because the queue was full.
    pub overflowed: u64,
    /// Events waiting for the writer now.
    pub queue_depth: usize,
    /// Events acknowledged as repeats of an id already stored.
    pub duplicates: u64,
    /// Accepted events whose batch could not be written (each was reported to its producer
    /// if it waited, and logged).
    pub failed: u64,
    /// Events not forwarded because the forwarding sink fell behind or failed.
    pub forward_dropped: u64,
}

/// Where an acknowledged event is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventPosition {
    /// Its seq.
    pub seq: u64,
    /// Its id (assigned by the log if the producer set none).
    pub id: String,
    /// Whether the id was already stored: nothing new was written, `seq` is the original's.
    pub duplicate: bool,
}

/// A pending acknowledgement: resolves once the event's batch is durable. Wait for it with
/// [`AckHandle::wait`] from a plain thread, or `.await` it from async code.
#[derive(Debug)]
pub struct AckHandle {
    id: String,
    rx: oneshot::Receiver<AckResult>,
}

impl AckHandle {
    /// The event's id (known before it is written).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Blocks until the event is durable. Must not be called on an async runtime's thread
    /// (`.await` the handle there).
    pub fn wait(self) -> Result<EventPosition, AuditError> {
        let result = self.rx.blocking_recv();
        resolve(self.id, result)
    }
}

impl Future for AckHandle {
    type Output = Result<EventPosition, AuditError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        Pin::new(&mut this.rx)
            .poll(cx)
            .map(|result| resolve(std::mem::take(&mut this.id), result))
    }
}

fn resolve(
    id: String,
    result: Result<AckResult, oneshot::error::RecvError>,
) -> Result<EventPosition, AuditError> {
    let (seq, duplicate) = result.map_err(|_| AuditError::Closed)??;
    Ok(EventPosition { seq, id, duplicate })
}

/// A test hook: while it is alive the writer takes no new batch. Not for production use.
#[doc(hidden)]
#[derive(Debug)]
pub struct WriterHold {
    shared: Arc<Shared>,
}

impl Drop for WriterHold {
    fn drop(&mut self) {
        self.shared.hold.release();
    }
}

/// The audit log: see the module documentation.
pub struct AuditLog {
    shared: Arc<Shared>,
    capacity: usize,
    queue: Option<SyncSender<Request>>,
    writer: Option<JoinHandle<()>>,
    indexer: Option<JoinHandle<()>>,
    filler: Option<(Arc<prealloc::Prealloc>, JoinHandle<()>)>,
    acknowledger: Option<JoinHandle<()>>,
    forwarder: Option<JoinHandle<()>>,
    retention: Option<retention::RetentionTask>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.shared.path)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens (creating if missing) the audit log whose index file is `path` (its segments are
    /// in `path` with the extension `segments`) and starts its writer and indexer. A log
    /// written by an older hop is upgraded first.
    ///
    /// Fails with [`crate::StorageError::Locked`] (inside [`AuditError::Storage`]) if another
    /// process or handle has it open, and with [`crate::StorageError::NewerSchema`] if a newer
    /// hop wrote it; neither case modifies the file.
    pub fn open(
        path: &Path,
        clock: Arc<dyn Clock>,
        mut cfg: AuditConfig,
    ) -> Result<AuditLog, AuditError> {
        cfg.validate()?;
        let dir = Segments::dir_for(path);
        let db = tables::open(path, &dir)?;
        segment::ensure_dir(&dir)?;
        let opened = segment::open_all(&dir)?;
        let durable = recover::durable_end(&opened)?;
        let shared = Arc::new(Shared {
            path: path.to_owned(),
            db,
            segments: Segments::new(dir, opened, durable),
            unindexed_ids: UnindexedIds::default(),
            clock,
            counters: Counters::default(),
            hold: Hold::default(),
        });
        let (head, unindexed) = recover::recover(&shared)?;
        {
            let mut ids = shared.unindexed_ids.lock();
            for e in unindexed.iter().filter(|e| !e.fresh_id) {
                ids.insert(e);
            }
        }
        let spawn_failed = |err: std::io::Error| {
            AuditError::from(crate::StorageError::Io {
                path: path.to_owned(),
                source: err,
            })
        };

        let (forward_tx, forwarder) = match cfg.forward.take() {
            Some(out) => {
                let (tx, rx) = mpsc::sync_channel(cfg.queue_capacity.div_ceil(16).max(16));
                let shared = Arc::clone(&shared);
                let thread = std::thread::Builder::new()
                    .name("hop-audit-forward".to_owned())
                    .spawn(move || writer::run_forwarder(shared, rx, out))
                    .map_err(spawn_failed)?;
                (Some(tx), Some(thread))
            }
            None => (None, None),
        };
        let (ack_tx, ack_rx) = mpsc::channel();
        let acknowledger = std::thread::Builder::new()
            .name("hop-audit-ack".to_owned())
            .spawn(move || writer::run_acknowledger(ack_rx))
            .map_err(spawn_failed)?;
        let (index_tx, index_rx) = mpsc::sync_channel::<IndexWork>(INDEX_QUEUE);
        let indexer = Indexer::new(Arc::clone(&shared), index_rx, unindexed);
        let indexer = std::thread::Builder::new()
            .name("hop-audit-index".to_owned())
            .spawn(move || indexer.run())
            .map_err(spawn_failed)?;
        let (prealloc, filler) = prealloc::Prealloc::spawn().map_err(spawn_failed)?;
        let (queue, queue_rx) = mpsc::sync_channel(cfg.queue_capacity);
        let policy = BatchPolicy {
            max_batch: cfg.max_batch,
            flush_interval: cfg.flush_interval,
            unwatched_linger: cfg.unwatched_linger,
        };
        let writer = Writer::new(
            Arc::clone(&shared),
            queue_rx,
            head,
            policy,
            writer::Outlets {
                acks: ack_tx,
                index: index_tx,
                forward: forward_tx,
            },
            Arc::clone(&prealloc),
        );
        let writer = std::thread::Builder::new()
            .name("hop-audit-writer".to_owned())
            .spawn(move || writer.run())
            .map_err(|err| {
                prealloc.stop();
                spawn_failed(err)
            })?;
        let retention = match cfg.retention {
            Some(keep) => Some(
                retention::RetentionTask::spawn(
                    Arc::clone(&shared),
                    keep,
                    retention::PURGE_INTERVAL,
                )
                .map_err(spawn_failed)?,
            ),
            None => None,
        };
        tracing::debug!(path = %path.display(), "audit log opened");
        Ok(AuditLog {
            shared,
            capacity: cfg.queue_capacity,
            queue: Some(queue),
            writer: Some(writer),
            indexer: Some(indexer),
            filler: Some((prealloc, filler)),
            acknowledger: Some(acknowledger),
            forwarder,
            retention,
        })
    }

    /// The index file (the segments are beside it).
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    fn prepare(&self, ev: AuditEvent) -> Result<event::Prepared, AuditError> {
        let now = system_time_to_us(self.shared.clock.now());
        // Version 7 (time-ordered) UUIDs from the log's clock: the embedded time names the
        // day whose segment holds the event, which is how an assigned id is found (such ids
        // have no id-index entry).
        event::prepare(ev, now, || {
            let ts = uuid::Timestamp::from_unix(
                uuid::NoContext,
                now / 1_000_000,
                ((now % 1_000_000) * 1000) as u32,
            );
            uuid::Uuid::new_v7(ts).to_string()
        })
    }

    fn queue(&self) -> Result<&SyncSender<Request>, AuditError> {
        self.queue.as_ref().ok_or(AuditError::Closed)
    }

    /// Appends `ev` and blocks until it is durable (admin actions, synchronous recording
    /// modes). Blocks while the queue is full. Must not be called on an async runtime's thread:
    /// `.await` an [`AuditLog::append_async`] handle there.
    pub fn append(&self, ev: AuditEvent) -> Result<EventPosition, AuditError> {
        self.append_async(ev)?.wait()
    }

    /// Queues `ev` and returns a handle that resolves once it is durable. Blocks only while the
    /// queue is full.
    pub fn append_async(&self, ev: AuditEvent) -> Result<AckHandle, AuditError> {
        let prepared = self.prepare(ev)?;
        let id = prepared.id.clone();
        let (tx, rx) = oneshot::channel();
        let queue = self.queue()?;
        let depth = &self.shared.counters.queue_depth;
        depth.fetch_add(1, Ordering::Relaxed);
        if queue
            .send(Request::Event {
                prepared,
                ack: Some(tx),
            })
            .is_err()
        {
            depth.fetch_sub(1, Ordering::Relaxed);
            return Err(AuditError::Closed);
        }
        Ok(AckHandle { id, rx })
    }

    /// Queues `ev` without waiting for it to be written. On a full queue the event is refused
    /// with [`AuditError::Overloaded`] and counted in [`AuditStats::overflowed`].
    pub fn submit(&self, ev: AuditEvent) -> Result<(), AuditError> {
        let prepared = self.prepare(ev)?;
        let queue = self.queue()?;
        let counters = &self.shared.counters;
        counters.queue_depth.fetch_add(1, Ordering::Relaxed);
        match queue.try_send(Request::Event {
            prepared,
            ack: None,
        }) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                counters.queue_depth.fetch_sub(1, Ordering::Relaxed);
                let overflowed = counters.overflowed.fetch_add(1, Ordering::Relaxed) + 1;
                if overflowed.is_power_of_two() {
                    tracing::warn!(
                        path = %self.shared.path.display(),
                        overflowed,
                        capacity = self.capacity,
                        "audit queue full: events are being refused"
                    );
                }
                Err(AuditError::Overloaded {
                    capacity: self.capacity,
                })
            }
            Err(TrySendError::Disconnected(_)) => {
                counters.queue_depth.fetch_sub(1, Ordering::Relaxed);
                Err(AuditError::Closed)
            }
        }
    }

    /// Counters since open.
    pub fn stats(&self) -> AuditStats {
        let c = &self.shared.counters;
        AuditStats {
            written: c.written.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            overflowed: c.overflowed.load(Ordering::Relaxed),
            queue_depth: c.queue_depth.load(Ordering::Relaxed),
            duplicates: c.duplicates.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            forward_dropped: c.forward_dropped.load(Ordering::Relaxed),
        }
    }

    /// The stored event with this id, if any.
    pub fn get(&self, id: &str) -> Result<Option<StoredEvent>, AuditError> {
        search::get(&self.shared, id)
    }

    /// One page of events matching `q`.
    pub fn search(&self, q: &SearchQuery) -> Result<SearchPage, AuditError> {
        search::search(&self.shared, q)
    }

    /// Checks every chain (or those of days from `since` on) and reports the first break.
    pub fn verify(&self, since: Option<SystemTime>) -> Result<VerifyReport, AuditError> {
        verify::verify(&self.shared, since)
    }

    /// Writes the events with `from <= time < to` to `out` as JSON lines, oldest first, and
    /// returns how many.
    pub fn export(
        &self,
        from: Option<SystemTime>,
        to: Option<SystemTime>,
        out: &mut dyn Write,
    ) -> Result<u64, AuditError> {
        self.flush_index()?;
        export::export(&self.shared, from, to, out)
    }

    /// Deletes every whole day (chain) strictly before `cutoff`'s UTC day.
    pub fn purge_before(&self, cutoff: SystemTime) -> Result<PurgeReport, AuditError> {
        // Events can only be purged with their index entries, so have every event queued so
        // far indexed first.
        self.flush_index()?;
        retention::purge_before(&self.shared, cutoff)
    }

    /// Waits until every event queued before the call is durable and indexed.
    fn flush_index(&self) -> Result<(), AuditError> {
        let (done, flushed) = oneshot::channel();
        let depth = &self.shared.counters.queue_depth;
        depth.fetch_add(1, Ordering::Relaxed);
        if self.queue()?.send(Request::FlushIndex(done)).is_err() {
            depth.fetch_sub(1, Ordering::Relaxed);
            return Err(AuditError::Closed);
        }
        flushed.blocking_recv().map_err(|_| AuditError::Closed)
    }

    /// Test hook: stalls the writer until the returned guard is dropped.
    #[doc(hidden)]
    pub fn hold_writer(&self) -> WriterHold {
        self.shared.hold.acquire();
        WriterHold {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Writes everything queued, stops the writer and background threads, and closes the file.
    pub fn close(self) {
        drop(self);
    }

    fn shutdown(&mut self) {
        if let Some(mut retention) = self.retention.take() {
            retention.stop();
        }
        drop(self.queue.take());
        // The writer first (it cuts its segment's spare zeros off), then the filler.
        if let Some(thread) = self.writer.take()
            && thread.join().is_err()
        {
            tracing::error!(thread = "writer", "audit thread panicked");
        }
        if let Some((prealloc, thread)) = self.filler.take() {
            prealloc.stop();
            if thread.join().is_err() {
                tracing::error!(thread = "filler", "audit thread panicked");
            }
        }
        for (name, thread) in [
            ("indexer", self.indexer.take()),
            ("acknowledger", self.acknowledger.take()),
            ("forwarder", self.forwarder.take()),
        ] {
            if let Some(thread) = thread
                && thread.join().is_err()
            {
                tracing::error!(thread = name, "audit thread panicked");
            }
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.shutdown();
    }
}
