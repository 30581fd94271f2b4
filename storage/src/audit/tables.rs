//! The index file's table layout and its open-time gate. This module owns the names and key
//! shapes of every table in the audit log's redb file (the events themselves live in segment
//! files, see `segment`), the schema-version stamp (a file from a newer hop is refused
//! untouched, as the resource backend does; a version-1 file, which held the events too, is
//! migrated once by `migrate`), the purge boundary record, and the mapping of engine errors into
//! [`StorageError`]. It must never rewrite a file whose schema is newer than it understands.
//!
//! Tables (all times are µs since the Unix epoch, UTC; index strings are stored as their UTF-8
//! bytes, which sort the same and compare without re-validation):
//! - `audit_blocks`: (dimension, value, second, run's first seq + chunk) → the (time, seq) pairs
//!   of that run's events with that value in that second, packed 8 bytes a pair and cut into
//!   chunks of at most 1,984 pairs (see `index`, `block`); events with an empty user or session
//!   id are in no block of those dimensions;
//! - `audit_runs`: run's first seq → its last seq and the keys of its blocks;
//! - `audit_by_id`: id → seq for ids producers supplied, for idempotent appends and look-ups;
//! - `audit_meta`: `schema_version`, `last_seq` (the last seq indexed, so a tail cut off the
//!   segments behind hop's back is noticed), `indexed_through` (every index is complete up to
//!   this seq; see `index`);
//! - `audit_purged`: `boundary` → JSON of the last purged event's seq, chain and hash.
//!
//! Version 1 also had `audit_events` (seq → record), `audit_segments` (chain → first and last
//! seq) and one entry per event in `audit_by_time`, `audit_by_user`, `audit_by_session` and
//! `audit_by_type`; the migration moves the records into segment files, indexes them into
//! blocks, and drops those tables.

use std::path::Path;

use redb::{
    Database, DatabaseError, Durability, ReadOnlyDatabase, ReadableDatabase, TableDefinition,
    TableError, TableHandle, WriteTransaction,
};
use serde::{Deserialize, Serialize};

use crate::error::StorageError;
use crate::redb_backend::map_redb;

pub(crate) const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("audit_events");
pub(crate) const BY_TIME: TableDefinition<(u64, u64), ()> = TableDefinition::new("audit_by_time");
pub(crate) const BY_USER: TableDefinition<(&[u8], u64, u64), ()> =
    TableDefinition::new("audit_by_user");
pub(crate) const BY_SESSION: TableDefinition<(&[u8], u64, u64), ()> =
    TableDefinition::new("audit_by_session");
pub(crate) const BY_TYPE: TableDefinition<(&[u8], u64, u64), ()> =
    TableDefinition::new("audit_by_type");
pub(crate) const BY_ID: TableDefinition<&[u8], u64> = TableDefinition::new("audit_by_id");
pub(crate) const BLOCKS: TableDefinition<(u8, &[u8], u64, u64), &[u8]> =
    TableDefinition::new("audit_blocks");
pub(crate) const RUNS: TableDefinition<u64, &[u8]> = TableDefinition::new("audit_runs");
pub(crate) const SEGMENTS: TableDefinition<&str, (u64, u64)> =
    TableDefinition::new("audit_segments");
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("audit_meta");
pub(crate) const PURGED: TableDefinition<&str, &str> = TableDefinition::new("audit_purged");

pub(crate) const SCHEMA_VERSION_KEY: &str = "schema_version";
pub(crate) const LAST_SEQ_KEY: &str = "last_seq";
pub(crate) const INDEXED_KEY: &str = "indexed_through";
pub(crate) const BOUNDARY_KEY: &str = "boundary";

/// The audit schema version this build writes and the newest it can open.
pub const AUDIT_SCHEMA_VERSION: u64 = 2;
/// The version whose file held the events.
pub(crate) const EVENTS_IN_FILE_VERSION: u64 = 1;

/// Where the retained log starts after a purge: the last purged event's link, so that the first
/// retained event still verifies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Boundary {
    /// The seq of the last purged event; every seq up to it is gone.
    pub(crate) through_seq: u64,
    /// Its chain.
    pub(crate) chain: String,
    /// Its hash, hex.
    pub(crate) hash: String,
}

/// Opens (creating if missing) the audit file at `path`, refusing a newer schema untouched and
/// a second open with [`StorageError::Locked`]; a version-1 file has its events moved into
/// segment files under `segments_dir` first.
pub(crate) fn open(path: &Path, segments_dir: &Path) -> Result<Database, StorageError> {
    // As in `RedbBackend::open`: check an existing file read-only first so a newer one is left
    // byte-for-byte alone; a file left by a crash must be repaired by the writable open.
    if std::fs::metadata(path).is_ok_and(|meta| meta.len() > 0) {
        match ReadOnlyDatabase::open(path) {
            Ok(db) => check_version(path, stored_version(path, &db)?)?,
            Err(DatabaseError::RepairAborted) => {
                tracing::warn!(path = %path.display(), "audit file was not closed cleanly; repairing it");
            }
            Err(err) => return Err(map_redb(path, err.into())),
        }
    }
    // redb caches up to 1 GiB by default; an appliance's audit log is written far more than it
    // is read back, so a small cache keeps its memory flat as the log grows.
    crate::private_file::ensure_private(path)?;
    let db = Database::builder()
        .set_cache_size(crate::REDB_CACHE_BYTES)
        .create(path)
        .map_err(|err| map_redb(path, err.into()))?;
    match stored_version(path, &db)? {
        None => initialize(path, &db)?,
        Some(EVENTS_IN_FILE_VERSION) => super::migrate::from_v1(path, &db, segments_dir)?,
        found => check_version(path, found)?,
    }
    Ok(db)
}

/// A write transaction that is durable (fsynced) when its commit returns.
pub(crate) fn begin_durable(path: &Path, db: &Database) -> Result<WriteTransaction, StorageError> {
    let mut txn = db.begin_write().map_err(|e| map_redb(path, e.into()))?;
    txn.set_durability(Durability::Immediate)
        .map_err(|e| map_redb(path, e.into()))?;
    Ok(txn)
}

fn initialize(path: &Path, db: &Database) -> Result<(), StorageError> {
    let err = |e: redb::Error| map_redb(path, e);
    let txn = begin_durable(path, db)?;
    {
        if let Some(table) = txn.list_tables().map_err(|e| err(e.into()))?.next() {
            return Err(StorageError::Corrupt {
                path: path.to_owned(),
                detail: format!(
                    "not a hop audit file: no schema version, but it holds table {:?}",
                    table.name()
                ),
            });
        }
        let mut meta = txn.open_table(META).map_err(|e| err(e.into()))?;
        meta.insert(SCHEMA_VERSION_KEY, AUDIT_SCHEMA_VERSION)
            .map_err(|e| err(e.into()))?;
        meta.insert(LAST_SEQ_KEY, 0).map_err(|e| err(e.into()))?;
        meta.insert(INDEXED_KEY, 0).map_err(|e| err(e.into()))?;
        txn.open_table(BLOCKS).map_err(|e| err(e.into()))?;
        txn.open_table(RUNS).map_err(|e| err(e.into()))?;
        txn.open_table(BY_ID).map_err(|e| err(e.into()))?;
        txn.open_table(PURGED).map_err(|e| err(e.into()))?;
    }
    txn.commit().map_err(|e| err(e.into()))
}

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

fn check_version(path: &Path, found: Option<u64>) -> Result<(), StorageError> {
    match found {
        None | Some(AUDIT_SCHEMA_VERSION | EVENTS_IN_FILE_VERSION) => Ok(()),
        Some(found) if found > AUDIT_SCHEMA_VERSION => Err(StorageError::NewerSchema {
            found,
            supported: AUDIT_SCHEMA_VERSION,
            path: path.to_owned(),
        }),
        Some(found) => Err(StorageError::Corrupt {
            path: path.to_owned(),
            detail: format!("unknown audit schema version {found}"),
        }),
    }
}

/// Reads the purge boundary, if a purge has happened.
pub(crate) fn read_boundary(
    path: &Path,
    table: &impl redb::ReadableTable<&'static str, &'static str>,
) -> Result<Option<Boundary>, StorageError> {
    let Some(guard) = table
        .get(BOUNDARY_KEY)
        .map_err(|e| map_redb(path, e.into()))?
    else {
        return Ok(None);
    };
    serde_json::from_str(guard.value())
        .map(Some)
        .map_err(|err| StorageError::Corrupt {
            path: path.to_owned(),
            detail: format!("audit purge boundary does not decode: {err}"),
        })
}
