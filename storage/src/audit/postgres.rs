//! The audit store in PostgreSQL, shared by every appliance of a cluster
//! (`hop.storage.audit_events_uri: postgresql://…`). This module owns the `hop_audit_events`
//! and `hop_audit_writers` tables, one hash chain per writer and UTC day, the group-committing
//! writer thread, and search, verify, export and retention over every writer's events. It keeps
//! the local log's contract (see `audit_store`) and its event format — the same canonical JSON,
//! `seq`, `chain`, `prev_hash` and `hash` — and must never acknowledge an event before the
//! transaction holding it has committed.
//!
//! **Writers.** Each opened store is one writer, named by a time-ordered UUID made from the
//! injected clock: its events carry a gapless `seq` of their own from 1, and chain per UTC day
//! (by the writer's clock) under the chain name `YYYY-MM-DD@<writer>`, whose first event links
//! to `sha256(chain name)`, as the local log's days do. Appliances never wait for each other to
//! write; only search and verify look across writers. `hop_audit_writers` holds each writer's
//! last seq and hash, updated in the same transaction as its events, so that verify notices a
//! writer's newest events removed (`Truncated`) as the local log does.
//!
//! **Acknowledged = committed.** A writer thread takes what is queued (up to 1,024 events), checks
//! ids already stored (an id seen before, from any writer, is acknowledged as a duplicate with
//! the original's seq and writes nothing), links the rest, inserts them, updates the writer's
//! row and commits; only then are the acknowledgements resolved. A failed transaction resolves
//! every acknowledgement of the batch with [`AuditError::NotWritten`] and the writer re-reads
//! its head from the database before the next batch, so the chain never links to an event that
//! was not committed. (Two writers inserting the same new id at the same instant: one batch
//! fails on the unique index and its producers see `NotWritten`; they may resend.)

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::Duration;
use std::time::SystemTime;

use tokio_postgres::GenericClient;

use super::chain::{chain_name, day_of, genesis, link_hash, parse_view};
use super::event::{
    Prepared, append_canonical, json_line, prepare, system_time_to_us, us_to_datetime,
};
use super::search::TextNeedle;
use super::{
    AuditError, AuditEvent, AuditStats, BreakReason, BrokenLink, EventPosition, Order, PurgeReport,
    SearchPage, SearchQuery, StoredEvent, VerifyReport,
};
use crate::audit_store::{AckSender, AuditAck, AuditStore, StoreDescription};
use crate::clock::Clock;
use crate::error::StorageError;
use crate::postgres::pool::{Pool, block_on, map_pg};

/// The most events one transaction writes.
const MAX_BATCH: usize = 1024;
/// The most events waiting for the writer.
const QUEUE_CAPACITY: usize = 65_536;
/// Rows read per query by search, verify and export.
const PAGE: i64 = 2000;
/// How often retention runs, by the injected clock.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);
/// How long the writer waits for events before it looks whether retention is due.
const SWEEP_TICK: Duration = Duration::from_secs(60);
/// Serializes creating the tables: `pg_advisory_xact_lock` key ("hopaudit" in ASCII).
const SCHEMA_LOCK: i64 = 0x686f_7061_7564_6974;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS hop_audit_events (
    writer text NOT NULL,
    seq bigint NOT NULL,
    id text NOT NULL,
    time_us bigint NOT NULL,
    day bigint NOT NULL,
    chain text NOT NULL,
    event_type text NOT NULL,
    user_name text NOT NULL,
    session_id text NOT NULL,
    canonical bytea NOT NULL,
    hash bytea NOT NULL,
    PRIMARY KEY (writer, seq)
);
CREATE UNIQUE INDEX IF NOT EXISTS hop_audit_events_id ON hop_audit_events (id);
CREATE INDEX IF NOT EXISTS hop_audit_events_time ON hop_audit_events (time_us, writer, seq);
CREATE INDEX IF NOT EXISTS hop_audit_events_day ON hop_audit_events (day);
CREATE INDEX IF NOT EXISTS hop_audit_events_user ON hop_audit_events (user_name, time_us);
CREATE INDEX IF NOT EXISTS hop_audit_events_session ON hop_audit_events (session_id, time_us);
CREATE TABLE IF NOT EXISTS hop_audit_writers (
    writer text PRIMARY KEY,
    last_seq bigint NOT NULL,
    last_hash bytea NOT NULL,
    last_day bigint NOT NULL,
    started_us bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS hop_audit_meta (
    id integer PRIMARY KEY CHECK (id = 1),
    purged_before_day bigint NOT NULL
);
INSERT INTO hop_audit_meta (id, purged_before_day) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
";

/// An [`AuditStore`] in a PostgreSQL database, one writer per opened store.
pub struct PgAuditStore {
    shared: Arc<Shared>,
    queue: Option<SyncSender<Job>>,
    writer_thread: Option<std::thread::JoinHandle<()>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for PgAuditStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgAuditStore")
            .field("target", &self.shared.target)
            .field("writer", &self.shared.writer)
            .finish_non_exhaustive()
    }
}

struct Shared {
    pool: Pool,
    clock: Arc<dyn Clock>,
    retention: Option<Duration>,
    target: String,
    writer: String,
    written: AtomicU64,
    batches: AtomicU64,
    overflowed: AtomicU64,
    duplicates: AtomicU64,
    failed: AtomicU64,
    queued: AtomicUsize,
}

struct Job {
    prepared: Prepared,
    ack: Option<AckSender>,
}

/// The newest event of this writer: what the next one links to.
#[derive(Clone)]
struct Head {
    seq: u64,
    chain: String,
    hash: [u8; 32],
}

impl PgAuditStore {
    /// Connects to the database `conn_string` names, creates the audit tables if missing and
    /// starts this process's writer. With `retention`, whole days older than it are deleted
    /// (for every writer) at open and every hour of `clock`'s time.
    pub fn open(
        conn_string: &str,
        clock: Arc<dyn Clock>,
        retention: Option<Duration>,
    ) -> Result<Self, AuditError> {
        let (runtime, pool, target) = crate::postgres::connect(conn_string, "hop-audit-pg")?;
        let now_us = system_time_to_us(clock.now());
        let writer = uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            now_us / 1_000_000,
            u32::try_from((now_us % 1_000_000) * 1000).unwrap_or(0),
        ))
        .to_string();
        {
            let mut client = pool.get()?;
            block_on(async {
                let db = |err| map_pg(&target, err);
                let txn = client.transaction().await.map_err(db)?;
                txn.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
                    .await
                    .map_err(db)?;
                txn.batch_execute(SCHEMA).await.map_err(db)?;
                txn.execute(
                    "INSERT INTO hop_audit_writers (writer, last_seq, last_hash, last_day, \
                     started_us) VALUES ($1, 0, $2, 0, $3)",
                    &[&writer, &vec![0u8; 32], &to_i64(now_us)],
                )
                .await
                .map_err(db)?;
                txn.commit().await.map_err(db)
            })?;
        }
        let shared = Arc::new(Shared {
            pool,
            clock,
            retention,
            target,
            writer,
            written: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            overflowed: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            queued: AtomicUsize::new(0),
        });
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE_CAPACITY);
        let writer_thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("hop-audit-pg".into())
                .spawn(move || run_writer(&shared, &rx))
                .map_err(|err| AuditError::NotWritten {
                    detail: format!("cannot start the audit writer thread: {err}"),
                })?
        };
        tracing::debug!(target = %shared.target, writer = %shared.writer, "audit store opened on PostgreSQL");
        Ok(Self {
            shared,
            queue: Some(tx),
            writer_thread: Some(writer_thread),
            runtime: Some(runtime),
        })
    }

    /// This process's writer: the name in its chains.
    pub fn writer(&self) -> &str {
        &self.shared.writer
    }

    fn prepare(&self, ev: AuditEvent) -> Result<Prepared, AuditError> {
        let now = system_time_to_us(self.shared.clock.now());
        prepare(ev, now, || {
            uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
                uuid::NoContext,
                now / 1_000_000,
                u32::try_from((now % 1_000_000) * 1000).unwrap_or(0),
            ))
            .to_string()
        })
    }

    fn enqueue(&self, job: Job) -> Result<(), AuditError> {
        let queue = self.queue.as_ref().ok_or(AuditError::Closed)?;
        match queue.try_send(job) {
            Ok(()) => {
                self.shared.queued.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(TrySendError::Full(_)) => {
                self.shared.overflowed.fetch_add(1, Ordering::Relaxed);
                Err(AuditError::Overloaded {
                    capacity: QUEUE_CAPACITY,
                })
            }
            Err(TrySendError::Disconnected(_)) => Err(AuditError::Closed),
        }
    }

    /// Runs `op` on a pooled connection.
    fn read<T>(
        &self,
        op: impl AsyncFn(&tokio_postgres::Client) -> Result<T, StorageError>,
    ) -> Result<T, AuditError> {
        let first = {
            let client = self.shared.pool.get()?;
            block_on(op(&client))
        };
        match first {
            // A pooled connection the server closed: reads are safe to repeat, once.
            Err(StorageError::Unreachable { .. }) => {
                let client = self.shared.pool.get()?;
                Ok(block_on(op(&client))?)
            }
            other => Ok(other?),
        }
    }
}

impl Drop for PgAuditStore {
    fn drop(&mut self) {
        // Closing the queue lets the writer finish what was queued, then stop.
        self.queue.take();
        if let Some(thread) = self.writer_thread.take() {
            let _ = thread.join();
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn run_writer(shared: &Shared, rx: &Receiver<Job>) {
    let mut head: Option<Head> = None;
    let mut swept: Option<SystemTime> = None;
    sweep(shared, &mut swept);
    loop {
        let first = match rx.recv_timeout(SWEEP_TICK) {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) => {
                sweep(shared, &mut swept);
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        // Before the batch, so that an event appended after a day passed finds retention done.
        sweep(shared, &mut swept);
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        shared.queued.fetch_sub(batch.len(), Ordering::Relaxed);
        let outcome = write_batch(shared, &mut head, &batch);
        match outcome {
            Ok(positions) => {
                shared.batches.fetch_add(1, Ordering::Relaxed);
                for (job, position) in batch.into_iter().zip(positions) {
                    if position.duplicate {
                        shared.duplicates.fetch_add(1, Ordering::Relaxed);
                    } else {
                        shared.written.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Some(ack) = job.ack {
                        ack.resolve(Ok(position));
                    }
                }
            }
            Err(err) => {
                head = None;
                let detail = err.to_string();
                tracing::warn!(target = %shared.target, error = %detail, events = batch.len(), "audit events could not be written to PostgreSQL");
                for job in batch {
                    shared.failed.fetch_add(1, Ordering::Relaxed);
                    if let Some(ack) = job.ack {
                        ack.resolve(Err(AuditError::NotWritten {
                            detail: detail.clone(),
                        }));
                    }
                }
            }
        }
    }
}

/// Deletes every writer's whole days before `cutoff`'s UTC day.
fn purge(shared: &Shared, cutoff: SystemTime) -> Result<PurgeReport, AuditError> {
    let day = to_i64(day_of(system_time_to_us(cutoff)));
    let target = &shared.target;
    let mut client = shared.pool.get()?;
    let chains: Vec<String> = block_on(async {
        let db = |err| map_pg(target, err);
        let txn = client.transaction().await.map_err(db)?;
        let chains = txn
            .query(
                "DELETE FROM hop_audit_events WHERE day < $1 RETURNING chain",
                &[&day],
            )
            .await
            .map_err(db)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        // Verify tells a tail retention removed from one removed behind hop's back by this.
        txn.execute(
            "UPDATE hop_audit_meta SET purged_before_day = GREATEST(purged_before_day, $1)",
            &[&day],
        )
        .await
        .map_err(db)?;
        txn.commit().await.map_err(db)?;
        Ok::<_, StorageError>(chains)
    })?;
    let events = u64::try_from(chains.len()).unwrap_or(u64::MAX);
    let chains: BTreeSet<String> = chains.into_iter().collect();
    Ok(PurgeReport {
        chains: chains.into_iter().collect(),
        events,
    })
}

/// Runs retention when it is due (every [`SWEEP_EVERY`] of the injected clock): days older than
/// `retention` go, for every writer (several appliances sweeping is harmless: a day goes once).
fn sweep(shared: &Shared, last: &mut Option<SystemTime>) {
    let Some(retention) = shared.retention else {
        return;
    };
    let now = shared.clock.now();
    if last.is_some_and(|at| now.duration_since(at).is_ok_and(|d| d < SWEEP_EVERY)) {
        return;
    }
    *last = Some(now);
    let Some(cutoff) = now.checked_sub(retention) else {
        return;
    };
    match purge(shared, cutoff) {
        Ok(r) if r.events > 0 => {
            tracing::info!(target = %shared.target, events = r.events, days = ?r.chains, "audit retention removed whole days")
        }
        Ok(_) => {}
        Err(e) => {
            // Tried again at the next sweep.
            *last = None;
            tracing::warn!(target = %shared.target, error = %e, "audit retention could not run");
        }
    }
}

/// One transaction: the batch's new events linked after `head`, duplicates answered with the
/// original's position. `head` moves only once the transaction has committed.
fn write_batch(
    shared: &Shared,
    head: &mut Option<Head>,
    batch: &[Job],
) -> Result<Vec<EventPosition>, StorageError> {
    let target = &shared.target;
    let now_us = system_time_to_us(shared.clock.now());
    let day = day_of(now_us);
    let chain = format!("{}@{}", chain_name(day), shared.writer);
    let mut retried = false;
    let (positions, next) = loop {
        let mut client = shared.pool.get()?;
        let attempt = block_on(async {
            // (whether BEGIN went through, the error)
            let txn = client
                .transaction()
                .await
                .map_err(|err| (false, map_pg(target, err)))?;
            let linked = link_and_insert(&txn, shared, head.clone(), batch, &chain, day)
                .await
                .map_err(|err| (true, err))?;
            txn.commit()
                .await
                .map_err(|err| (true, map_pg(target, err)))?;
            Ok(linked)
        });
        match attempt {
            Ok(linked) => break linked,
            // A pooled connection the server closed (a restart, an idle timeout) fails at
            // BEGIN, before anything was written: then, and only then, once more on a fresh one.
            Err((false, StorageError::Unreachable { .. })) if !retried => retried = true,
            Err((_, err)) => return Err(err),
        }
    };
    *head = Some(next);
    Ok(positions)
}

/// Links the batch's new events after `head` (read from the database when unknown) and inserts
/// them with the writer's row, inside `txn`; their positions and the new head.
async fn link_and_insert(
    txn: &tokio_postgres::Transaction<'_>,
    shared: &Shared,
    head: Option<Head>,
    batch: &[Job],
    chain: &str,
    day: u64,
) -> Result<(Vec<EventPosition>, Head), StorageError> {
    let target = &shared.target;
    let db = |err| map_pg(target, err);
    {
        let mut next = match head {
            Some(h) => h,
            None => load_head(txn, &shared.writer, target).await?,
        };
        let ids: Vec<&str> = batch.iter().map(|j| j.prepared.id.as_str()).collect();
        let mut known: HashMap<String, u64> = txn
            .query(
                "SELECT id, seq FROM hop_audit_events WHERE id = ANY($1)",
                &[&ids],
            )
            .await
            .map_err(db)?
            .iter()
            .map(|r| (r.get::<_, String>(0), from_i64(r.get(1))))
            .collect();
        let mut rows = Rows::default();
        let mut positions = Vec::with_capacity(batch.len());
        for job in batch {
            let p = &job.prepared;
            if let Some(seq) = known.get(&p.id) {
                positions.push(EventPosition {
                    seq: *seq,
                    id: p.id.clone(),
                    duplicate: true,
                });
                continue;
            }
            let prev = if next.chain == chain {
                next.hash
            } else {
                genesis(chain)
            };
            let seq = next.seq + 1;
            let mut canonical = Vec::new();
            append_canonical(
                &mut canonical,
                &p.body,
                seq,
                chain,
                hex::encode(prev).as_bytes(),
            );
            let hash = link_hash(&prev, &canonical);
            rows.push(p, seq, chain, day, canonical, hash);
            known.insert(p.id.clone(), seq);
            positions.push(EventPosition {
                seq,
                id: p.id.clone(),
                duplicate: false,
            });
            next = Head {
                seq,
                chain: chain.to_owned(),
                hash,
            };
        }
        if !rows.seq.is_empty() {
            txn.execute(
                "INSERT INTO hop_audit_events (writer, seq, id, time_us, day, chain, event_type, \
                 user_name, session_id, canonical, hash) \
                 SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::bigint[], $5::bigint[], \
                 $6::text[], $7::text[], $8::text[], $9::text[], $10::bytea[], $11::bytea[])",
                &[
                    &shared.writer,
                    &rows.seq,
                    &rows.id,
                    &rows.time_us,
                    &rows.day,
                    &rows.chain,
                    &rows.event_type,
                    &rows.user,
                    &rows.session,
                    &rows.canonical,
                    &rows.hash,
                ],
            )
            .await
            .map_err(db)?;
            txn.execute(
                "UPDATE hop_audit_writers SET last_seq = $2, last_hash = $3, last_day = $4 \
                 WHERE writer = $1",
                &[
                    &shared.writer,
                    &to_i64(next.seq),
                    &next.hash.to_vec(),
                    &to_i64(day),
                ],
            )
            .await
            .map_err(db)?;
        }
        Ok((positions, next))
    }
}

/// The batch's new rows, column by column (for one `unnest` insert).
#[derive(Default)]
struct Rows {
    seq: Vec<i64>,
    id: Vec<String>,
    time_us: Vec<i64>,
    day: Vec<i64>,
    chain: Vec<String>,
    event_type: Vec<String>,
    user: Vec<String>,
    session: Vec<String>,
    canonical: Vec<Vec<u8>>,
    hash: Vec<Vec<u8>>,
}

impl Rows {
    fn push(
        &mut self,
        p: &Prepared,
        seq: u64,
        chain: &str,
        day: u64,
        canonical: Vec<u8>,
        hash: [u8; 32],
    ) {
        self.seq.push(to_i64(seq));
        self.id.push(p.id.clone());
        self.time_us.push(to_i64(p.time_us));
        self.day.push(to_i64(day));
        self.chain.push(chain.to_owned());
        self.event_type.push(p.event_type.clone());
        self.user.push(p.user.clone());
        self.session.push(p.session_id.clone());
        self.canonical.push(canonical);
        self.hash.push(hash.to_vec());
    }
}

async fn load_head(
    client: &impl GenericClient,
    writer: &str,
    target: &str,
) -> Result<Head, StorageError> {
    let row = client
        .query_opt(
            "SELECT seq, chain, hash FROM hop_audit_events WHERE writer = $1 \
             ORDER BY seq DESC LIMIT 1",
            &[&writer],
        )
        .await
        .map_err(|err| map_pg(target, err))?;
    Ok(match row {
        None => Head {
            seq: 0,
            chain: String::new(),
            hash: [0; 32],
        },
        Some(row) => Head {
            seq: from_i64(row.get(0)),
            chain: row.get(1),
            hash: hash32(&row.get::<_, Vec<u8>>(2)),
        },
    })
}

impl AuditStore for PgAuditStore {
    fn describe(&self) -> StoreDescription {
        StoreDescription {
            kind: "postgresql",
            location: format!("{} (writer {})", self.shared.target, self.shared.writer),
        }
    }

    fn append_async(&self, ev: AuditEvent) -> Result<AuditAck, AuditError> {
        let prepared = self.prepare(ev)?;
        let (ack, sender) = AuditAck::pending(prepared.id.clone());
        self.enqueue(Job {
            prepared,
            ack: Some(sender),
        })?;
        Ok(ack)
    }

    fn submit(&self, ev: AuditEvent) -> Result<(), AuditError> {
        let prepared = self.prepare(ev)?;
        self.enqueue(Job {
            prepared,
            ack: None,
        })
    }

    fn get(&self, id: &str) -> Result<Option<StoredEvent>, AuditError> {
        let target = &self.shared.target;
        let row = self.read(async |c| {
            c.query_opt(
                "SELECT canonical, hash FROM hop_audit_events WHERE id = $1",
                &[&id],
            )
            .await
            .map_err(|err| map_pg(target, err))
        })?;
        row.map(|r| stored(&r.get::<_, Vec<u8>>(0), &r.get::<_, Vec<u8>>(1)))
            .transpose()
    }

    fn search(&self, q: &SearchQuery) -> Result<SearchPage, AuditError> {
        let limit = match q.limit {
            0 => super::DEFAULT_LIMIT,
            n => n.min(super::MAX_LIMIT),
        };
        let mut after = q.cursor.as_deref().map(decode_cursor).transpose()?;
        let needle = q.text.as_deref().map(TextNeedle::new);
        // Without a text filter every row read is a hit: read just the page. With one, read a
        // few pages' worth at a time and keep the hits.
        let chunk: i64 = match needle {
            None => to_i64(u64::try_from(limit).unwrap_or(u64::MAX)),
            Some(_) => {
                to_i64(u64::try_from(limit.saturating_mul(4)).unwrap_or(u64::MAX)).clamp(64, PAGE)
            }
        };
        let from = q.from.map(|t| to_i64(system_time_to_us(t)));
        let to = q.to.map(|t| to_i64(system_time_to_us(t)));
        let newest_first = q.order == Order::NewestFirst;
        let (cmp, dir) = if newest_first {
            ("<", "DESC")
        } else {
            (">", "ASC")
        };
        let sql = format!(
            "SELECT canonical, hash, time_us, writer, seq FROM hop_audit_events \
             WHERE ($1::bigint IS NULL OR time_us >= $1) AND ($2::bigint IS NULL OR time_us < $2) \
             AND (cardinality($3::text[]) = 0 OR event_type = ANY($3)) \
             AND ($4::text IS NULL OR user_name = $4) AND ($5::text IS NULL OR session_id = $5) \
             AND ($6::bigint IS NULL OR (time_us, writer, seq) {cmp} ($6, $7, $8)) \
             ORDER BY time_us {dir}, writer {dir}, seq {dir} LIMIT $9"
        );
        let target = &self.shared.target;
        let mut page = SearchPage {
            events: Vec::new(),
            next_cursor: None,
        };
        loop {
            let (at_time, at_writer, at_seq) = match &after {
                Some((t, w, s)) => (Some(*t), Some(w.clone()), Some(*s)),
                None => (None, None, None),
            };
            let rows = self.read(async |c| {
                c.query(
                    &sql,
                    &[
                        &from,
                        &to,
                        &q.event_types,
                        &q.user,
                        &q.session_id,
                        &at_time,
                        &at_writer,
                        &at_seq,
                        &chunk,
                    ],
                )
                .await
                .map_err(|err| map_pg(target, err))
            })?;
            let exhausted = rows.len() < usize::try_from(chunk).unwrap_or(usize::MAX);
            for row in &rows {
                let position = (
                    row.get::<_, i64>(2),
                    row.get::<_, String>(3),
                    row.get::<_, i64>(4),
                );
                after = Some(position.clone());
                let event = stored(&row.get::<_, Vec<u8>>(0), &row.get::<_, Vec<u8>>(1))?;
                if needle.as_ref().is_some_and(|n| !n.matches(&event)) {
                    continue;
                }
                page.events.push(event);
                if page.events.len() == limit {
                    page.next_cursor = Some(encode_cursor(&position));
                    return Ok(page);
                }
            }
            if exhausted {
                return Ok(page);
            }
        }
    }

    fn verify(&self, since: Option<SystemTime>) -> Result<VerifyReport, AuditError> {
        let since_day = since.map_or(0, |t| to_i64(day_of(system_time_to_us(t))));
        let target = &self.shared.target;
        let writers: Vec<(String, u64, bool)> = self.read(async |c| {
            Ok(c.query(
                "SELECT writer, last_seq, last_day >= (SELECT purged_before_day FROM \
                 hop_audit_meta) FROM hop_audit_writers ORDER BY writer",
                &[],
            )
            .await
            .map_err(|err| map_pg(target, err))?
            .iter()
            .map(|r| (r.get(0), from_i64(r.get(1)), r.get(2)))
            .collect())
        })?;
        let mut report = VerifyReport {
            events_checked: 0,
            segments: 0,
            first_break: None,
        };
        for (writer, last_written, tail_kept) in writers {
            // A writer whose newest day retention removed has no tail left to check.
            let last_written = if tail_kept { last_written } else { 0 };
            if let Some(broken) =
                self.verify_writer(&writer, last_written, since_day, &mut report)?
            {
                report.first_break = Some(broken);
                return Ok(report);
            }
        }
        Ok(report)
    }

    fn export(
        &self,
        from: Option<SystemTime>,
        to: Option<SystemTime>,
        out: &mut dyn Write,
    ) -> Result<u64, AuditError> {
        let mut q = SearchQuery {
            from,
            to,
            order: Order::OldestFirst,
            limit: super::MAX_LIMIT,
            ..SearchQuery::default()
        };
        let mut count = 0u64;
        loop {
            let page = self.search(&q)?;
            for event in &page.events {
                let mut line = serde_json::to_vec(event).map_err(|e| AuditError::NotWritten {
                    detail: format!("cannot serialize event {}: {e}", event.event.id),
                })?;
                line.push(b'\n');
                out.write_all(&line).map_err(AuditError::Export)?;
                count += 1;
            }
            match page.next_cursor {
                Some(cursor) => q.cursor = Some(cursor),
                None => break,
            }
        }
        out.flush().map_err(AuditError::Export)?;
        Ok(count)
    }

    fn purge_before(&self, cutoff: SystemTime) -> Result<PurgeReport, AuditError> {
        purge(&self.shared, cutoff)
    }

    fn stats(&self) -> AuditStats {
        let s = &self.shared;
        AuditStats {
            written: s.written.load(Ordering::Relaxed),
            batches: s.batches.load(Ordering::Relaxed),
            overflowed: s.overflowed.load(Ordering::Relaxed),
            queue_depth: s.queued.load(Ordering::Relaxed),
            duplicates: s.duplicates.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            forward_dropped: 0,
        }
    }
}

impl PgAuditStore {
    /// Checks one writer's links from `since_day` on; the first break, if any.
    fn verify_writer(
        &self,
        writer: &str,
        last_written: u64,
        since_day: i64,
        report: &mut VerifyReport,
    ) -> Result<Option<BrokenLink>, AuditError> {
        let target = &self.shared.target;
        let mut after: i64 = 0;
        let mut previous: Option<Head> = None;
        loop {
            let rows = self.read(async |c| {
                c.query(
                    "SELECT seq, chain, canonical, hash, id FROM hop_audit_events \
                     WHERE writer = $1 AND day >= $2 AND seq > $3 ORDER BY seq LIMIT $4",
                    &[&writer, &since_day, &after, &PAGE],
                )
                .await
                .map_err(|err| map_pg(target, err))
            })?;
            for row in &rows {
                let seq = from_i64(row.get(0));
                after = row.get(0);
                let chain: String = row.get(1);
                let canonical: Vec<u8> = row.get(2);
                let hash = hash32(&row.get::<_, Vec<u8>>(3));
                let id: String = row.get(4);
                let broken = |reason| BrokenLink {
                    seq,
                    id: id.clone(),
                    time: None,
                    reason,
                };
                let expected_prev = match &previous {
                    Some(p) if p.seq + 1 != seq => {
                        return Ok(Some(broken(BreakReason::Gap {
                            first_missing: p.seq + 1,
                            last_missing: seq - 1,
                        })));
                    }
                    Some(p) if p.chain == chain => p.hash,
                    _ => {
                        report.segments += 1;
                        genesis(&chain)
                    }
                };
                let view = match parse_view(&canonical) {
                    Ok(view) => view,
                    Err(detail) => {
                        return Ok(Some(broken(BreakReason::Undecodable { detail })));
                    }
                };
                let broken = |reason| BrokenLink {
                    time: view.time_us().map(us_to_datetime),
                    ..broken(reason)
                };
                if view.seq != seq || view.chain != chain || view.id != id {
                    return Ok(Some(broken(BreakReason::Misplaced {
                        detail: format!(
                            "the event says seq {} of chain {:?} (id {:?}), but it is stored as \
                             seq {seq} of {chain:?} (id {id:?})",
                            view.seq, view.chain, view.id
                        ),
                    })));
                }
                let mut claimed = [0u8; 32];
                if hex::decode_to_slice(view.prev_hash.as_bytes(), &mut claimed).is_err()
                    || link_hash(&claimed, &canonical) != hash
                {
                    return Ok(Some(broken(BreakReason::HashMismatch)));
                }
                if claimed != expected_prev {
                    return Ok(Some(broken(BreakReason::PrevHashMismatch)));
                }
                report.events_checked += 1;
                previous = Some(Head { seq, chain, hash });
            }
            if rows.len() < usize::try_from(PAGE).unwrap_or(usize::MAX) {
                break;
            }
        }
        let last_seen = previous.map_or(0, |p| p.seq);
        if last_written > last_seen && (last_seen > 0 || since_day == 0) {
            return Ok(Some(BrokenLink {
                seq: last_seen + 1,
                id: String::new(),
                time: None,
                reason: BreakReason::Truncated { last_written },
            }));
        }
        Ok(None)
    }
}

/// A stored row as the event the local log would return.
fn stored(canonical: &[u8], hash: &[u8]) -> Result<StoredEvent, AuditError> {
    let line = json_line(canonical, &hash32(hash));
    serde_json::from_slice(&line).map_err(|e| {
        AuditError::Storage(StorageError::Database {
            target: "audit".to_owned(),
            detail: format!("a stored audit event does not decode: {e}"),
        })
    })
}

fn encode_cursor((time, writer, seq): &(i64, String, i64)) -> String {
    format!("pg1.{time}.{writer}.{seq}")
}

fn decode_cursor(cursor: &str) -> Result<(i64, String, i64), AuditError> {
    let bad = || AuditError::InvalidQuery {
        field: "cursor",
        reason: "is not a cursor this store handed out".to_owned(),
    };
    let rest = cursor.strip_prefix("pg1.").ok_or_else(bad)?;
    let (time, rest) = rest.split_once('.').ok_or_else(bad)?;
    let (writer, seq) = rest.rsplit_once('.').ok_or_else(bad)?;
    Ok((
        time.parse().map_err(|_| bad())?,
        writer.to_owned(),
        seq.parse().map_err(|_| bad())?,
    ))
}

fn hash32(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    if let Some(src) = bytes.get(..32) {
        out.copy_from_slice(src);
    }
    out
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn from_i64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}
