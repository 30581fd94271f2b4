//! The embedded default [`Backend`]: one redb file in the data directory. This module owns the
//! file's table layout (items, a lease-expiry index, and a meta table with the schema version and
//! the revision counter), the schema-version gate at open, the one-process-at-a-time lock, and
//! the rule that every write is one redb transaction made durable (fsync) before it returns. It
//! must never rewrite a file whose schema is newer than it understands.
//!
//! Tables:
//! - `items`: key → record (the `codec` module's versioned header + value bytes);
//! - `expiry`: (expiry in ns since the Unix epoch, key) → () for every item with a lease, so a
//!   purge visits only what has expired;
//! - `meta`: `schema_version` and `revision`, both `u64`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use redb::{
    Database, DatabaseError, Durability, ReadOnlyDatabase, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, Table, TableDefinition, TableError, TableHandle, WriteTransaction,
};

use crate::backend::{
    Backend, Event, EventFeed, Item, Precondition, PutOptions, Snapshot, Watcher, cas_error,
    is_expired,
};
use crate::clock::Clock;
use crate::codec;
use crate::error::StorageError;

const ITEMS: TableDefinition<&str, &[u8]> = TableDefinition::new("items");
const EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("expiry");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const SCHEMA_VERSION_KEY: &str = "schema_version";
const REVISION_KEY: &str = "revision";
/// How many past events are kept in memory for watchers that resume ([`Backend::watch_from`]);
/// a watcher that asks for older ones is told to resynchronise.
const HISTORY: usize = 1024;

/// A [`Backend`] stored in one redb file.
pub struct RedbBackend {
    path: PathBuf,
    db: Database,
    clock: Arc<dyn Clock>,
    /// Serializes writers so that events are published in commit (= revision) order.
    write_lock: Mutex<()>,
    feed: EventFeed,
}

impl std::fmt::Debug for RedbBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbBackend")
            .field("path", &self.path)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

/// The live state of one key, as read inside a write transaction.
struct Current {
    /// The revision of the live item, if there is one.
    live_revision: Option<u64>,
    /// The expiry index entry of the stored record, live or not.
    indexed_expiry: Option<u64>,
}

impl RedbBackend {
    /// The storage schema version this build writes and the newest it can open.
    pub const SCHEMA_VERSION: u64 = 1;

    /// Opens (creating if missing) the database at `path`.
    ///
    /// Fails with [`StorageError::Locked`] if another process or handle has it open and with
    /// [`StorageError::NewerSchema`] if a newer hop wrote it; neither case modifies the file.
    pub fn open(path: &Path, clock: Arc<dyn Clock>) -> Result<Self, StorageError> {
        // Opening for writing lets redb touch its own header, so an existing file's schema is
        // checked through a read-only handle first: a newer file is refused byte-for-byte
        // untouched. (A file left by a crash cannot be opened read-only until redb has repaired
        // it; that case goes straight to the writable open, which repairs and then checks.)
        if std::fs::metadata(path).is_ok_and(|meta| meta.len() > 0) {
            match ReadOnlyDatabase::open(path) {
                Ok(db) => {
                    check_version(path, stored_version(path, &db)?)?;
                }
                Err(DatabaseError::RepairAborted) => {
                    tracing::warn!(
                        path = %path.display(),
                        "storage file was not closed cleanly; repairing it"
                    );
                }
                Err(err) => return Err(map_redb(path, err.into())),
            }
        }
        crate::private_file::ensure_private(path)?;
        let db = Database::builder()
            .set_cache_size(crate::REDB_CACHE_BYTES)
            .create(path)
            .map_err(|err| map_redb(path, err.into()))?;
        let mut backend = Self {
            path: path.to_owned(),
            db,
            clock,
            write_lock: Mutex::new(()),
            feed: EventFeed::new(0, HISTORY),
        };
        backend.check_schema()?;
        backend.feed = EventFeed::new(backend.current_revision()?, HISTORY);
        tracing::debug!(
            path = %path.display(),
            revision = backend.current_revision()?,
            "storage opened"
        );
        Ok(backend)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, err: impl Into<redb::Error>) -> StorageError {
        map_redb(&self.path, err.into())
    }

    fn corrupt(&self, key: &str, detail: &str) -> StorageError {
        StorageError::Corrupt {
            path: self.path.clone(),
            detail: format!("record {key:?}: {detail}"),
        }
    }

    /// The stored record `bytes` of `key` as an item, unless its lease ended by `now`.
    fn live_item(
        &self,
        key: &str,
        bytes: &[u8],
        now: std::time::SystemTime,
    ) -> Result<Option<Item>, StorageError> {
        let record = codec::decode(bytes).map_err(|e| self.corrupt(key, &e))?;
        if is_expired(record.expires, now) {
            return Ok(None);
        }
        Ok(Some(Item {
            key: key.to_owned(),
            value: record.value.to_vec(),
            revision: record.revision,
            expires: record.expires,
        }))
    }

    fn lock_writes(&self) -> MutexGuard<'_, ()> {
        self.write_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Checks the stored schema version; stamps a new file with the current one.
    fn check_schema(&self) -> Result<(), StorageError> {
        match stored_version(&self.path, &self.db)? {
            None => self.initialize(),
            found => check_version(&self.path, found),
        }
    }

    /// Creates every table and stamps the schema version, in one durable transaction.
    fn initialize(&self) -> Result<(), StorageError> {
        let _writes = self.lock_writes();
        let txn = self.begin_write()?;
        {
            // An unstamped file must also be empty: stamping someone else's redb file would
            // pass it off as hop's.
            if let Some(table) = txn.list_tables().map_err(|e| self.err(e))?.next() {
                return Err(StorageError::Corrupt {
                    path: self.path.clone(),
                    detail: format!(
                        "not a hop storage file: no schema version, but it holds table {:?}",
                        table.name()
                    ),
                });
            }
            let mut meta = txn.open_table(META).map_err(|e| self.err(e))?;
            meta.insert(SCHEMA_VERSION_KEY, Self::SCHEMA_VERSION)
                .map_err(|e| self.err(e))?;
            meta.insert(REVISION_KEY, 0).map_err(|e| self.err(e))?;
            txn.open_table(ITEMS).map_err(|e| self.err(e))?;
            txn.open_table(EXPIRY).map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))
    }

    fn begin_write(&self) -> Result<WriteTransaction, StorageError> {
        let mut txn = self.db.begin_write().map_err(|e| self.err(e))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| self.err(e))?;
        Ok(txn)
    }

    fn bump_revision(&self, meta: &mut Table<'_, &str, u64>) -> Result<u64, StorageError> {
        let current = meta
            .get(REVISION_KEY)
            .map_err(|e| self.err(e))?
            .map_or(0, |v| v.value());
        let next = current
            .checked_add(1)
            .ok_or_else(|| StorageError::Corrupt {
                path: self.path.clone(),
                detail: "revision counter exhausted".to_owned(),
            })?;
        meta.insert(REVISION_KEY, next).map_err(|e| self.err(e))?;
        Ok(next)
    }

    fn current(
        &self,
        items: &Table<'_, &str, &[u8]>,
        key: &str,
        now: std::time::SystemTime,
    ) -> Result<Current, StorageError> {
        let Some(guard) = items.get(key).map_err(|e| self.err(e))? else {
            return Ok(Current {
                live_revision: None,
                indexed_expiry: None,
            });
        };
        let record = codec::decode(guard.value()).map_err(|e| self.corrupt(key, &e))?;
        Ok(Current {
            live_revision: (!is_expired(record.expires, now)).then_some(record.revision),
            indexed_expiry: record.expires.map(codec::to_unix_nanos),
        })
    }

    fn write(
        &self,
        key: &str,
        value: &[u8],
        opts: PutOptions,
        pre: Precondition,
    ) -> Result<u64, StorageError> {
        let _writes = self.lock_writes();
        let now = self.clock.now();
        let txn = self.begin_write()?;
        let revision = {
            let mut items = txn.open_table(ITEMS).map_err(|e| self.err(e))?;
            let mut expiry = txn.open_table(EXPIRY).map_err(|e| self.err(e))?;
            let mut meta = txn.open_table(META).map_err(|e| self.err(e))?;
            let current = self.current(&items, key, now)?;
            pre.check(key, current.live_revision)?;
            let revision = self.bump_revision(&mut meta)?;
            if let Some(old) = current.indexed_expiry {
                expiry.remove((old, key)).map_err(|e| self.err(e))?;
            }
            let record = codec::encode(revision, opts.expires, value);
            items
                .insert(key, record.as_slice())
                .map_err(|e| self.err(e))?;
            if let Some(at) = opts.expires {
                expiry
                    .insert((codec::to_unix_nanos(at), key), ())
                    .map_err(|e| self.err(e))?;
            }
            revision
        };
        txn.commit().map_err(|e| self.err(e))?;
        self.feed.publish(Event::Put(Item {
            key: key.to_owned(),
            value: value.to_vec(),
            revision,
            expires: opts.expires,
        }));
        Ok(revision)
    }
}

impl Backend for RedbBackend {
    fn get(&self, key: &str) -> Result<Option<Item>, StorageError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let items = txn.open_table(ITEMS).map_err(|e| self.err(e))?;
        let Some(guard) = items.get(key).map_err(|e| self.err(e))? else {
            return Ok(None);
        };
        let record = codec::decode(guard.value()).map_err(|e| self.corrupt(key, &e))?;
        if is_expired(record.expires, self.clock.now()) {
            return Ok(None);
        }
        Ok(Some(Item {
            key: key.to_owned(),
            value: record.value.to_vec(),
            revision: record.revision,
            expires: record.expires,
        }))
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
        let _writes = self.lock_writes();
        let now = self.clock.now();
        let txn = self.begin_write()?;
        let revision = {
            let mut items = txn.open_table(ITEMS).map_err(|e| self.err(e))?;
            let mut expiry = txn.open_table(EXPIRY).map_err(|e| self.err(e))?;
            let mut meta = txn.open_table(META).map_err(|e| self.err(e))?;
            let current = self.current(&items, key, now)?;
            if current.live_revision.is_none() {
                return Ok(false);
            }
            let revision = self.bump_revision(&mut meta)?;
            items.remove(key).map_err(|e| self.err(e))?;
            if let Some(old) = current.indexed_expiry {
                expiry.remove((old, key)).map_err(|e| self.err(e))?;
            }
            revision
        };
        txn.commit().map_err(|e| self.err(e))?;
        self.feed.publish(Event::Delete {
            key: key.to_owned(),
            revision,
        });
        Ok(true)
    }

    fn range(&self, start: &str, end: &str, limit: usize) -> Result<Vec<Item>, StorageError> {
        if !end.is_empty() && end <= start {
            return Ok(Vec::new());
        }
        let now = self.clock.now();
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let items = txn.open_table(ITEMS).map_err(|e| self.err(e))?;
        let iter = if end.is_empty() {
            items.range(start..)
        } else {
            items.range(start..end)
        }
        .map_err(|e| self.err(e))?;
        let limit = if limit == 0 { usize::MAX } else { limit };
        let mut out = Vec::new();
        for entry in iter {
            if out.len() >= limit {
                break;
            }
            let (key, value) = entry.map_err(|e| self.err(e))?;
            if let Some(item) = self.live_item(key.value(), value.value(), now)? {
                out.push(item);
            }
        }
        Ok(out)
    }

    fn watch(&self) -> Watcher {
        let _writes = self.lock_writes();
        self.feed.subscribe()
    }

    fn watch_from(&self, after: u64) -> Result<Watcher, StorageError> {
        let _writes = self.lock_writes();
        self.feed
            .subscribe_from(after)
            .map_err(|err| err.into_storage(after))
    }

    fn purge_expired(&self) -> Result<usize, StorageError> {
        let _writes = self.lock_writes();
        let now = self.clock.now();
        let now_nanos = codec::to_unix_nanos(now);
        let txn = self.begin_write()?;
        let mut deleted = Vec::new();
        let index_changed = {
            let mut items = txn.open_table(ITEMS).map_err(|e| self.err(e))?;
            let mut expiry = txn.open_table(EXPIRY).map_err(|e| self.err(e))?;
            let mut meta = txn.open_table(META).map_err(|e| self.err(e))?;
            let mut due = Vec::new();
            for entry in expiry.iter().map_err(|e| self.err(e))? {
                let (index_key, _) = entry.map_err(|e| self.err(e))?;
                let (at, key) = index_key.value();
                if at > now_nanos {
                    break;
                }
                due.push((at, key.to_owned()));
            }
            let mut index_changed = false;
            for (at, key) in due {
                let current = self.current(&items, &key, now)?;
                // Still live despite its index time (a clock before the Unix epoch, where
                // index times saturate): leave it for a later purge.
                if current.live_revision.is_some() {
                    continue;
                }
                expiry.remove((at, key.as_str())).map_err(|e| self.err(e))?;
                index_changed = true;
                // An entry that does not match its record's lease is stale (writes replace the
                // entry with the record, so this is only defensive): drop just the entry.
                if current.indexed_expiry != Some(at) {
                    continue;
                }
                items.remove(key.as_str()).map_err(|e| self.err(e))?;
                let revision = self.bump_revision(&mut meta)?;
                deleted.push((key, revision));
            }
            index_changed
        };
        if !index_changed {
            return Ok(0);
        }
        txn.commit().map_err(|e| self.err(e))?;
        let count = deleted.len();
        for (key, revision) in deleted {
            self.feed.publish(Event::Delete { key, revision });
        }
        Ok(count)
    }

    fn current_revision(&self) -> Result<u64, StorageError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let meta = txn.open_table(META).map_err(|e| self.err(e))?;
        Ok(meta
            .get(REVISION_KEY)
            .map_err(|e| self.err(e))?
            .map_or(0, |v| v.value()))
    }

    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        let now = self.clock.now();
        // One read transaction: redb's MVCC gives it one committed state, revision and items.
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let meta = txn.open_table(META).map_err(|e| self.err(e))?;
        let revision = meta
            .get(REVISION_KEY)
            .map_err(|e| self.err(e))?
            .map_or(0, |v| v.value());
        let items = txn.open_table(ITEMS).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for entry in items.iter().map_err(|e| self.err(e))? {
            let (key, value) = entry.map_err(|e| self.err(e))?;
            if let Some(item) = self.live_item(key.value(), value.value(), now)? {
                out.push(item);
            }
        }
        Ok(Snapshot {
            revision,
            items: out,
        })
    }

    fn restore(&self, snapshot: &Snapshot) -> Result<(), StorageError> {
        snapshot.validate()?;
        let _writes = self.lock_writes();
        let txn = self.begin_write()?;
        {
            let mut items = txn.open_table(ITEMS).map_err(|e| self.err(e))?;
            let mut expiry = txn.open_table(EXPIRY).map_err(|e| self.err(e))?;
            let mut meta = txn.open_table(META).map_err(|e| self.err(e))?;
            let revision = meta
                .get(REVISION_KEY)
                .map_err(|e| self.err(e))?
                .map_or(0, |v| v.value());
            let stored = items.len().map_err(|e| self.err(e))?;
            if revision != 0 || stored != 0 {
                // Dropping the transaction without a commit leaves the file as it was.
                return Err(StorageError::NotEmpty {
                    target: self.path.display().to_string(),
                    revision,
                    items: stored,
                });
            }
            for item in &snapshot.items {
                let record = codec::encode(item.revision, item.expires, &item.value);
                items
                    .insert(item.key.as_str(), record.as_slice())
                    .map_err(|e| self.err(e))?;
                if let Some(at) = item.expires {
                    expiry
                        .insert((codec::to_unix_nanos(at), item.key.as_str()), ())
                        .map_err(|e| self.err(e))?;
                }
            }
            meta.insert(REVISION_KEY, snapshot.revision)
                .map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))?;
        self.feed.reset(snapshot.revision);
        Ok(())
    }
}

/// The schema version stored in `db`, `None` for a file this code has not stamped yet.
fn stored_version(path: &Path, db: &impl ReadableDatabase) -> Result<Option<u64>, StorageError> {
    let txn = db.begin_read().map_err(|e| map_redb(path, e.into()))?;
    match txn.open_table(META) {
        Ok(meta) => Ok(meta
            .get(SCHEMA_VERSION_KEY)
            .map_err(|e| map_redb(path, e.into()))?
            .map(|v| v.value())),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(err) => Err(map_redb(path, err.into())),
    }
}

/// Whether this code can work with a file at schema version `found` (`None`: not yet stamped).
fn check_version(path: &Path, found: Option<u64>) -> Result<(), StorageError> {
    match found {
        None | Some(RedbBackend::SCHEMA_VERSION) => Ok(()),
        Some(found) if found > RedbBackend::SCHEMA_VERSION => Err(StorageError::NewerSchema {
            found,
            supported: RedbBackend::SCHEMA_VERSION,
            path: path.to_owned(),
        }),
        Some(found) => Err(StorageError::Corrupt {
            path: path.to_owned(),
            detail: format!("unknown storage schema version {found}"),
        }),
    }
}

/// Sorts a redb error by whose fault it is.
pub(crate) fn map_redb(path: &Path, err: redb::Error) -> StorageError {
    let path = path.to_owned();
    match err {
        redb::Error::Io(source) => StorageError::Io { path, source },
        redb::Error::Corrupted(detail) => StorageError::Corrupt { path, detail },
        redb::Error::DatabaseAlreadyOpen => StorageError::Locked { path },
        other => StorageError::Engine {
            path,
            detail: other.to_string(),
        },
    }
}
