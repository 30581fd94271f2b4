//! The PostgreSQL [`Backend`], for several appliances sharing one cluster state. This module owns
//! the write protocol that makes revision order equal commit order, the TTL rule in SQL, the
//! resumable watch over the change table, and trimming that table; its submodules own the conn
//! string (`conn_string`), TLS (`tls`), connections and the pool (`pool`), schema migrations
//! (`schema`) and the change-feed follower (`poller`). It must never hand out a revision that a
//! watcher could see out of order, and never let a watcher skip a change silently.
//!
//! **Commit order.** Every write is one `READ COMMITTED` transaction that first increments the
//! single row of `hop_meta` (`UPDATE … SET revision = revision + 1 RETURNING revision`). The row
//! lock that takes is held until commit, so a second writer waits at that statement until the
//! first has committed (or rolled back) and then gets the next revision: revision order is commit
//! order, and a snapshot that sees revision `n` sees everything below it. The precondition
//! (create, compare-and-swap, delete) is checked by the *next* statement, whose snapshot is taken
//! after the lock is held, so it sees the previous writer's commit. A failed precondition rolls
//! back, the increment with it: revisions stay contiguous (a sequence would leave gaps). The cost
//! is that writes to one cluster are serial; a write is a handful of round trips, which is far
//! above what a cluster's control plane needs (presence is batched, see `hop-proxy`).
//!
//! **Watch.** The same transaction appends the change to `hop_changes(revision, key, value,
//! expires_ns, at_ns)` and sends `NOTIFY hop_changes`. LISTEN/NOTIFY alone would lose what
//! happens while a listener is disconnected, so it is only a wake-up hint: the follower task
//! (`poller`) reads `hop_changes WHERE revision > last ORDER BY revision` and publishes into
//! this process's [`crate::backend::EventFeed`]. After a lost connection it reconnects and
//! continues from `last`: no gap, no duplicate. A local write returns only once its own event is
//! published (or after [`PUBLISH_WAIT`] if the follower is cut off), so watchers here see local
//! writes as promptly as with redb. [`Backend::watch_from`] resumes from this process's recent
//! history, or else from the change table (one `REPEATABLE READ` snapshot of the table and of how
//! far it was trimmed); before the trimmed point it answers [`StorageError::WatchTooOld`].
//! Logical decoding was the alternative: it needs `wal_level=logical`, a replication slot per
//! appliance (which pins WAL while an appliance is down) and replication rights — a heavier ask
//! of the operator for no gain at this write rate, so the change table it is.
//!
//! **Trimming.** [`Backend::purge_expired`] also deletes changes older than
//! [`PgOptions::change_retention`] (by the injected clock) or beyond the newest
//! [`PgOptions::max_changes`], recording how far in `hop_meta.trimmed_through`.
//!
//! **TTL.** `expires_ns` is compared with the injected [`Clock`]'s time in every read and
//! precondition, never with the server's clock, exactly as the redb backend does.
//!
//! **Connections.** A small pool of our own (`pool`, size `pool_max_conns`), plus one connection
//! for the follower. The synchronous trait is served by awaiting client futures on the caller's
//! thread while connection drivers run on this backend's own two-thread runtime; TLS is rustls
//! with `verify-full` and client certificates (`tls`).

mod conn_string;
mod poller;
pub(crate) mod pool;
mod schema;
mod tls;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tokio_postgres::{Client, IsolationLevel, Row, Transaction};

pub use conn_string::DEFAULT_POOL_MAX;
pub use poller::WATCH_APPLICATION_NAME;

use self::pool::{Pool, block_on, map_pg};
use crate::backend::{
    Backend, Event, EventFeed, Item, Precondition, PutOptions, Snapshot, Watcher, cas_error,
};
use crate::clock::Clock;
use crate::codec;
use crate::error::StorageError;

/// Checks a conn string without opening anything (no file is read, no connection made): the
/// same refusals [`PgBackend::open`] gives for its shape and TLS settings.
pub fn check_conn_string(conn_string: &str) -> Result<(), StorageError> {
    conn_string::parse(conn_string).map(|_| ())
}

/// A pool of connections to the database `conn_string` names (checked, with its TLS), the
/// runtime its connection drivers run on (threads named `thread_name`), and the target's name.
pub(crate) fn connect(
    conn_string: &str,
    thread_name: &str,
) -> Result<(tokio::runtime::Runtime, Pool, String), StorageError> {
    let settings = conn_string::parse(conn_string)?;
    let tls = tls::MakeRustls::new(tls::client_config(&settings.tls)?);
    let target = settings.target.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(thread_name)
        .enable_all()
        .build()
        .map_err(|err| StorageError::Database {
            target: target.clone(),
            detail: format!("cannot start the client's runtime: {err}"),
        })?;
    let connector = pool::Connector::new(
        settings.config,
        tls,
        target.clone(),
        runtime.handle().clone(),
    );
    Ok((runtime, Pool::new(connector, settings.pool_max), target))
}

/// How many recent events this process keeps for watchers that resume.
const HISTORY: usize = 1024;
/// How long a write waits for its own event to be published before returning anyway.
pub const PUBLISH_WAIT: Duration = Duration::from_secs(2);

/// Tuning of the PostgreSQL backend.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// How long changes are kept for watchers that resume (by the injected clock).
    pub change_retention: Duration,
    /// The most changes kept, whatever their age.
    pub max_changes: u64,
    /// How often the follower reads the change table when nothing woke it.
    pub poll_interval: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            change_retention: Duration::from_secs(15 * 60),
            max_changes: 100_000,
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// A hook run inside a write after it has taken its revision and before it commits (tests use
/// it to hold a transaction open).
pub type CommitHook = Arc<dyn Fn(u64) + Send + Sync>;

/// What the backend and its follower share.
pub(crate) struct Shared {
    pool: Pool,
    clock: Arc<dyn Clock>,
    feed: EventFeed,
    /// Wakes the follower (a local write committed).
    wake: tokio::sync::Notify,
    options: PgOptions,
    target: String,
    commit_hook: Mutex<Option<CommitHook>>,
}

/// A [`Backend`] in a PostgreSQL database, shareable by several appliances.
pub struct PgBackend {
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for PgBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgBackend")
            .field("target", &self.shared.target)
            .finish_non_exhaustive()
    }
}

impl Drop for PgBackend {
    fn drop(&mut self) {
        // Never blocks, so a backend may be dropped inside an async task.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The live-item filter: no lease, or one that ends after `now` (`$2`).
const LIVE: &str = "(expires_ns IS NULL OR expires_ns > $2)";

impl PgBackend {
    /// The storage schema version this build migrates to and the newest it can open.
    pub const SCHEMA_VERSION: u64 = schema::VERSION;

    /// Connects to the database `conn_string` names, applies any missing schema migrations and
    /// starts following its change feed.
    ///
    /// Fails with [`StorageError::PostgresConfig`] for a conn string or TLS file that cannot be
    /// used, [`StorageError::Unreachable`] when the server cannot be reached or refuses the login,
    /// and [`StorageError::NewerDatabaseSchema`] when a newer hop migrated the database.
    pub fn open(
        conn_string: &str,
        clock: Arc<dyn Clock>,
        options: PgOptions,
    ) -> Result<Self, StorageError> {
        let (runtime, pool, target) = connect(conn_string, "hop-postgres")?;
        let revision = {
            let mut client = pool.get()?;
            block_on(schema::migrate(&mut client, &target))?;
            block_on(read_meta(&*client, &target))?.0
        };
        let shared = Arc::new(Shared {
            pool,
            clock,
            feed: EventFeed::new(revision, HISTORY),
            wake: tokio::sync::Notify::new(),
            options,
            target,
            commit_hook: Mutex::new(None),
        });
        runtime.spawn(poller::run(shared.clone()));
        tracing::debug!(target = %shared.target, revision, "storage opened on PostgreSQL");
        Ok(Self {
            shared,
            runtime: Some(runtime),
        })
    }

    /// `user@host:port/database` (never the password).
    pub fn target(&self) -> &str {
        &self.shared.target
    }

    /// Installs (or with `None` removes) a hook that every write runs after taking its revision
    /// and before committing. A test seam: the hook may block to hold the transaction open.
    #[doc(hidden)]
    pub fn set_commit_hook(&self, hook: Option<CommitHook>) {
        *self
            .shared
            .commit_hook
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = hook;
    }

    fn hook(&self) -> Option<CommitHook> {
        self.shared
            .commit_hook
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn now_ns(&self) -> i64 {
        to_ns(self.shared.clock.now())
    }

    /// Runs `op` on a pooled connection; once more on a fresh one if the first was lost (reads
    /// only: a write whose connection dropped may or may not have committed).
    fn read<T>(
        &self,
        op: impl AsyncFn(&mut Client) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let first = {
            let mut client = self.shared.pool.get()?;
            block_on(op(&mut client))
        };
        match first {
            Err(StorageError::Unreachable { .. }) => {
                let mut client = self.shared.pool.get()?;
                block_on(op(&mut client))
            }
            other => other,
        }
    }

    /// Runs `op` in one write transaction (the first statement of which must take the revision
    /// lock); the transaction commits if `op` succeeds and rolls back if it fails. A pooled
    /// connection the server has closed (a restart, an idle timeout) fails at `BEGIN`, before
    /// anything was written: then, and only then, it is tried once more on a fresh connection.
    fn write_txn<T>(
        &self,
        op: impl AsyncFn(&Transaction<'_>) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let target = &self.shared.target;
        let mut retried = false;
        loop {
            let mut client = self.shared.pool.get()?;
            let result = block_on(async {
                let txn = client
                    .build_transaction()
                    .isolation_level(IsolationLevel::ReadCommitted)
                    .start()
                    .await
                    .map_err(|err| (false, map_pg(target, err)))?;
                let out = op(&txn).await.map_err(|err| (true, err))?;
                txn.commit()
                    .await
                    .map_err(|err| (true, map_pg(target, err)))?;
                Ok(out)
            });
            match result {
                Ok(out) => return Ok(out),
                Err((false, StorageError::Unreachable { .. })) if !retried => retried = true,
                Err((_, err)) => return Err(err),
            }
        }
    }

    /// Wakes the follower and waits until it has published `revision`.
    fn await_published(&self, revision: u64) {
        self.shared.wake.notify_one();
        if !self.shared.feed.wait_published(revision, PUBLISH_WAIT) {
            tracing::warn!(
                target = %self.shared.target,
                revision,
                "storage change feed is behind; watchers will see this write when it catches up"
            );
        }
    }

    fn write(
        &self,
        key: &str,
        value: &[u8],
        opts: PutOptions,
        pre: Precondition,
    ) -> Result<u64, StorageError> {
        let now = self.now_ns();
        let expires = opts.expires.map(to_ns);
        let hook = self.hook();
        let target = &self.shared.target;
        let revision = self.write_txn(async |txn| {
            let db = |err| map_pg(target, err);
            let revision = take_revision(txn, target).await?;
            let live = live_revision(txn, key, now, target).await?;
            pre.check(key, live)?;
            txn.execute(
                "INSERT INTO hop_items (key, value, revision, expires_ns) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, \
                 revision = EXCLUDED.revision, expires_ns = EXCLUDED.expires_ns",
                &[&key.as_bytes(), &value, &to_i64(revision), &expires],
            )
            .await
            .map_err(db)?;
            record_change(txn, revision, key, Some(value), expires, now, target).await?;
            if let Some(hook) = &hook {
                hook(revision);
            }
            Ok(revision)
        })?;
        self.await_published(revision);
        Ok(revision)
    }
}

impl Backend for PgBackend {
    fn get(&self, key: &str) -> Result<Option<Item>, StorageError> {
        let now = self.now_ns();
        let target = &self.shared.target;
        self.read(async |client| {
            let row = client
                .query_opt(
                    &format!(
                        "SELECT key, value, revision, expires_ns FROM hop_items \
                         WHERE key = $1 AND {LIVE}"
                    ),
                    &[&key.as_bytes(), &now],
                )
                .await
                .map_err(|err| map_pg(target, err))?;
            row.map(|row| row_to_item(&row, target)).transpose()
        })
    }

    fn put(&self, key: &str, value: &[u8], opts: PutOptions) -> Result<u64, StorageError> {
        self.write(key, value, opts, Precondition::None)
    }

    fn create(&self, key: &str, value: &[u8], opts: PutOptions) -> Result<u64, StorageError> {
        self.write(key, value, opts, Precondition::Absent)
    }

    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<u64>,
        value: &[u8],
        opts: PutOptions,
    ) -> Result<u64, StorageError> {
        self.write(key, value, opts, Precondition::for_cas(expected))
            .map_err(cas_error)
    }

    fn delete(&self, key: &str) -> Result<bool, StorageError> {
        let now = self.now_ns();
        let hook = self.hook();
        let target = &self.shared.target;
        let result = self.write_txn(async |txn| {
            let revision = take_revision(txn, target).await?;
            if live_revision(txn, key, now, target).await?.is_none() {
                // Rolls back, the revision with it.
                return Err(StorageError::NotFound {
                    key: key.to_owned(),
                });
            }
            txn.execute("DELETE FROM hop_items WHERE key = $1", &[&key.as_bytes()])
                .await
                .map_err(|err| map_pg(target, err))?;
            record_change(txn, revision, key, None, None, now, target).await?;
            if let Some(hook) = &hook {
                hook(revision);
            }
            Ok(revision)
        });
        match result {
            Ok(revision) => {
                self.await_published(revision);
                Ok(true)
            }
            Err(StorageError::NotFound { .. }) => Ok(false),
            Err(err) => Err(err),
        }
    }

    fn range(&self, start: &str, end: &str, limit: usize) -> Result<Vec<Item>, StorageError> {
        if !end.is_empty() && end <= start {
            return Ok(Vec::new());
        }
        let now = self.now_ns();
        let end = (!end.is_empty()).then_some(end.as_bytes());
        let limit = (limit > 0).then(|| i64::try_from(limit).unwrap_or(i64::MAX));
        let target = &self.shared.target;
        self.read(async |client| {
            let rows = client
                .query(
                    &format!(
                        "SELECT key, value, revision, expires_ns FROM hop_items \
                         WHERE key >= $1 AND ($3::bytea IS NULL OR key < $3) AND {LIVE} \
                         ORDER BY key LIMIT $4"
                    ),
                    &[&start.as_bytes(), &now, &end, &limit],
                )
                .await
                .map_err(|err| map_pg(target, err))?;
            rows.iter().map(|row| row_to_item(row, target)).collect()
        })
    }

    fn watch(&self) -> Watcher {
        self.shared.feed.subscribe()
    }

    fn watch_from(&self, after: u64) -> Result<Watcher, StorageError> {
        // Recent enough: from this process's history, no query.
        if let Ok(watcher) = self.shared.feed.subscribe_from(after) {
            return Ok(watcher);
        }
        let target = &self.shared.target;
        for _ in 0..3 {
            let (current, trimmed, events) = self.read(async |client| {
                let db = |err| map_pg(target, err);
                let txn = client
                    .build_transaction()
                    .isolation_level(IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start()
                    .await
                    .map_err(db)?;
                let (current, trimmed) = read_meta(&txn, target).await?;
                if after < trimmed || after > current {
                    return Ok((current, trimmed, Vec::new()));
                }
                let rows = txn
                    .query(
                        "SELECT revision, key, value, expires_ns FROM hop_changes \
                         WHERE revision > $1 AND revision <= $2 ORDER BY revision",
                        &[&to_i64(after), &to_i64(current)],
                    )
                    .await
                    .map_err(db)?;
                let events: Vec<Event> = rows.iter().map(row_to_event).collect();
                txn.commit().await.map_err(db)?;
                Ok((current, trimmed, events))
            })?;
            if after < trimmed {
                return Err(StorageError::WatchTooOld {
                    after,
                    oldest: trimmed,
                });
            }
            if after > current {
                return Err(StorageError::WatchAhead { after, current });
            }
            if u64::try_from(events.len()).ok() != Some(current - after) {
                return Err(StorageError::Database {
                    target: target.clone(),
                    detail: format!(
                        "the change table lacks changes between revisions {after} and {current} \
                         although it is trimmed only through {trimmed}"
                    ),
                });
            }
            if let Some(watcher) = self.shared.feed.subscribe_after(after, events, current) {
                return Ok(watcher);
            }
            // The follower published past `current` beyond this process's history while we
            // read: read again, further.
        }
        Err(StorageError::WatchTooOld {
            after,
            oldest: self.shared.feed.last(),
        })
    }

    fn purge_expired(&self) -> Result<usize, StorageError> {
        let now = self.now_ns();
        let retention =
            i64::try_from(self.shared.options.change_retention.as_nanos()).unwrap_or(i64::MAX);
        let cutoff = now.saturating_sub(retention);
        let max_changes = to_i64(self.shared.options.max_changes);
        let target = &self.shared.target;
        let (count, revision) = self.write_txn(async |txn| {
            let db = |err| map_pg(target, err);
            let row = txn
                .query_one(
                    "SELECT revision, trimmed_through FROM hop_meta FOR UPDATE",
                    &[],
                )
                .await
                .map_err(db)?;
            let (first, trimmed): (i64, i64) = (row.get(0), row.get(1));
            let due: Vec<Vec<u8>> = txn
                .query(
                    "SELECT key FROM hop_items WHERE expires_ns <= $1 ORDER BY expires_ns, key",
                    &[&now],
                )
                .await
                .map_err(db)?
                .iter()
                .map(|row| row.get(0))
                .collect();
            let count = i64::try_from(due.len()).unwrap_or(i64::MAX);
            let last = first + count;
            if count > 0 {
                let revisions: Vec<i64> = (first + 1..=last).collect();
                txn.execute("DELETE FROM hop_items WHERE key = ANY($1)", &[&due])
                    .await
                    .map_err(db)?;
                txn.execute(
                    "WITH c AS (INSERT INTO hop_changes (revision, key, value, expires_ns, at_ns) \
                     SELECT r, k, NULL, NULL, $3 FROM unnest($1::bigint[], $2::bytea[]) AS u(r, k)) \
                     SELECT pg_notify('hop_changes', '')",
                    &[&revisions, &due, &now],
                )
                .await
                .map_err(db)?;
            }
            let aged: i64 = txn
                .query_one(
                    "SELECT COALESCE(max(revision), 0) FROM hop_changes WHERE at_ns < $1",
                    &[&cutoff],
                )
                .await
                .map_err(db)?
                .get(0);
            let trim_to = aged.max(last - max_changes).max(trimmed);
            if trim_to > trimmed {
                txn.execute("DELETE FROM hop_changes WHERE revision <= $1", &[&trim_to])
                    .await
                    .map_err(db)?;
            }
            txn.execute(
                "UPDATE hop_meta SET revision = $1, trimmed_through = $2",
                &[&last, &trim_to],
            )
            .await
            .map_err(db)?;
            Ok((due.len(), u64::try_from(last).unwrap_or(0)))
        })?;
        if count > 0 {
            self.await_published(revision);
        }
        Ok(count)
    }

    fn current_revision(&self) -> Result<u64, StorageError> {
        let target = &self.shared.target;
        self.read(async |client| Ok(read_meta(&*client, target).await?.0))
    }

    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        let now = self.now_ns();
        let target = &self.shared.target;
        self.read(async |client| {
            let db = |err| map_pg(target, err);
            // One REPEATABLE READ snapshot: the revision counter and the items as of one commit
            // point (writers commit in revision order, so it holds exactly revisions <= it).
            let txn = client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(db)?;
            let (revision, _) = read_meta(&txn, target).await?;
            let rows = txn
                .query(
                    "SELECT key, value, revision, expires_ns FROM hop_items \
                     WHERE expires_ns IS NULL OR expires_ns > $1 ORDER BY key",
                    &[&now],
                )
                .await
                .map_err(db)?;
            let items = rows
                .iter()
                .map(|row| row_to_item(row, target))
                .collect::<Result<Vec<_>, _>>()?;
            txn.commit().await.map_err(db)?;
            Ok(Snapshot { revision, items })
        })
    }

    fn restore(&self, snapshot: &Snapshot) -> Result<(), StorageError> {
        snapshot.validate()?;
        let target = &self.shared.target;
        let keys: Vec<&[u8]> = snapshot.items.iter().map(|i| i.key.as_bytes()).collect();
        let values: Vec<&[u8]> = snapshot.items.iter().map(|i| i.value.as_slice()).collect();
        let revisions: Vec<i64> = snapshot.items.iter().map(|i| to_i64(i.revision)).collect();
        let expires: Vec<Option<i64>> = snapshot
            .items
            .iter()
            .map(|i| i.expires.map(to_ns))
            .collect();
        let revision = to_i64(snapshot.revision);
        self.write_txn(async |txn| {
            let db = |err| map_pg(target, err);
            // Takes the writers' lock first, so no write can slip in between check and load.
            let row = txn
                .query_one(
                    "SELECT revision, (SELECT count(*) FROM hop_items) FROM hop_meta FOR UPDATE",
                    &[],
                )
                .await
                .map_err(db)?;
            let (current, stored): (i64, i64) = (row.get(0), row.get(1));
            if current != 0 || stored != 0 {
                return Err(StorageError::NotEmpty {
                    target: target.clone(),
                    revision: u64::try_from(current).unwrap_or(0),
                    items: u64::try_from(stored).unwrap_or(0),
                });
            }
            txn.execute(
                "INSERT INTO hop_items (key, value, revision, expires_ns) \
                 SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::bigint[], $4::bigint[])",
                &[&keys, &values, &revisions, &expires],
            )
            .await
            .map_err(db)?;
            // Nothing before the restored revision can be resumed from: watchers resynchronise.
            txn.execute(
                "UPDATE hop_meta SET revision = $1, trimmed_through = $1",
                &[&revision],
            )
            .await
            .map_err(db)?;
            Ok(())
        })?;
        self.shared.feed.reset(snapshot.revision);
        Ok(())
    }
}

/// Increments the revision counter, taking the lock that serializes writers until commit.
async fn take_revision(txn: &Transaction<'_>, target: &str) -> Result<u64, StorageError> {
    let revision: i64 = txn
        .query_one(
            "UPDATE hop_meta SET revision = revision + 1 RETURNING revision",
            &[],
        )
        .await
        .map_err(|err| map_pg(target, err))?
        .get(0);
    Ok(u64::try_from(revision).unwrap_or(0))
}

/// The live revision of `key` (a new statement, so it sees every write committed before the
/// revision lock was granted).
async fn live_revision(
    txn: &Transaction<'_>,
    key: &str,
    now: i64,
    target: &str,
) -> Result<Option<u64>, StorageError> {
    let row = txn
        .query_opt(
            &format!("SELECT revision FROM hop_items WHERE key = $1 AND {LIVE}"),
            &[&key.as_bytes(), &now],
        )
        .await
        .map_err(|err| map_pg(target, err))?;
    Ok(row.map(|row| u64::try_from(row.get::<_, i64>(0)).unwrap_or(0)))
}

/// Appends a change and notifies the followers (delivered at commit).
async fn record_change(
    txn: &Transaction<'_>,
    revision: u64,
    key: &str,
    value: Option<&[u8]>,
    expires: Option<i64>,
    now: i64,
    target: &str,
) -> Result<(), StorageError> {
    txn.execute(
        "WITH c AS (INSERT INTO hop_changes (revision, key, value, expires_ns, at_ns) \
         VALUES ($1, $2, $3, $4, $5)) SELECT pg_notify('hop_changes', '')",
        &[&to_i64(revision), &key.as_bytes(), &value, &expires, &now],
    )
    .await
    .map_err(|err| map_pg(target, err))?;
    Ok(())
}

/// The revision of the latest write and how far the change table is trimmed.
async fn read_meta(
    client: &impl tokio_postgres::GenericClient,
    target: &str,
) -> Result<(u64, u64), StorageError> {
    let row = client
        .query_one("SELECT revision, trimmed_through FROM hop_meta", &[])
        .await
        .map_err(|err| map_pg(target, err))?;
    let get = |i| u64::try_from(row.get::<_, i64>(i)).unwrap_or(0);
    Ok((get(0), get(1)))
}

fn row_to_item(row: &Row, target: &str) -> Result<Item, StorageError> {
    let key: Vec<u8> = row.get(0);
    let key = String::from_utf8(key).map_err(|_| StorageError::Database {
        target: target.to_owned(),
        detail: "a stored key is not UTF-8 (not written by hop)".to_owned(),
    })?;
    Ok(Item {
        key,
        value: row.get(1),
        revision: u64::try_from(row.get::<_, i64>(2)).unwrap_or(0),
        expires: row.get::<_, Option<i64>>(3).map(from_ns),
    })
}

/// A `hop_changes` row (revision, key, value, expires_ns) as an event.
pub(crate) fn row_to_event(row: &Row) -> Event {
    let revision = u64::try_from(row.get::<_, i64>(0)).unwrap_or(0);
    let key: Vec<u8> = row.get(1);
    // Keys are written from `&str`; anything else was not written by hop.
    let key = String::from_utf8(key)
        .unwrap_or_else(|err| String::from_utf8_lossy(err.as_bytes()).into_owned());
    match row.get::<_, Option<Vec<u8>>>(2) {
        Some(value) => Event::Put(Item {
            key,
            value,
            revision,
            expires: row.get::<_, Option<i64>>(3).map(from_ns),
        }),
        None => Event::Delete { key, revision },
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_ns(t: SystemTime) -> i64 {
    to_i64(codec::to_unix_nanos(t))
}

fn from_ns(ns: i64) -> SystemTime {
    codec::from_unix_nanos(u64::try_from(ns).unwrap_or(0))
}
