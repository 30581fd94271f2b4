//! The storage layer's error vocabulary. This module owns [`StorageError`] and [`WatchError`] and
//! the rule that every failure says whose fault it is ([`Fault`]): the caller (a conflict, a bad
//! name), the operator (a locked or too-new data directory) or hop itself (I/O, corruption). It
//! must never grow a catch-all variant that hides which of those applies.

use std::path::PathBuf;

/// Who has to act to resolve a [`StorageError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The request itself was wrong or raced another writer; retrying or fixing it helps.
    Caller,
    /// The deployment is wrong (another process holds the data dir, hop is too old for it).
    Operator,
    /// Something inside hop or under it failed (disk, corruption, a bug).
    Internal,
}

/// Everything a storage operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// Reading or writing the database file failed.
    #[error("storage I/O error on {path}: {source}")]
    Io {
        /// The database file.
        path: PathBuf,
        /// What the operating system reported.
        #[source]
        source: std::io::Error,
    },
    /// The database file, or a record in it, is not in a shape this code wrote.
    #[error("storage file {path} is corrupt: {detail}")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What was wrong and where.
        detail: String,
    },
    /// The storage engine failed in a way that is neither I/O nor corruption (a poisoned
    /// transaction, an engine limit); a bug in hop or in the engine.
    #[error("storage engine failure on {path}: {detail}")]
    Engine {
        /// The database file.
        path: PathBuf,
        /// The engine's own description.
        detail: String,
    },
    /// The database was written by a newer hop with a storage schema this build cannot read.
    /// The file has not been modified.
    #[error(
        "the data in {path} uses storage schema version {found}, but this hop only supports \
         versions up to {supported}; it was written by a newer hop. Upgrade hop to at least the \
         version that wrote it (the file was left untouched)"
    )]
    NewerSchema {
        /// The schema version stored in the file.
        found: u64,
        /// The newest schema version this build understands.
        supported: u64,
        /// The database file.
        path: PathBuf,
    },
    /// Another process (or another handle in this one) has the database open.
    #[error(
        "another hop process is using this data directory ({path} is locked); stop that process \
         or point this one at a different data directory"
    )]
    Locked {
        /// The database file.
        path: PathBuf,
    },
    /// A compare-and-swap found a different revision (or presence) than expected.
    #[error("{key} was changed concurrently (revision mismatch); re-read it and retry")]
    Conflict {
        /// The contended key.
        key: String,
    },
    /// A create found the key already present.
    #[error("{key} already exists")]
    AlreadyExists {
        /// The existing key.
        key: String,
    },
    /// An operation that needs an existing item found none.
    #[error("{key} does not exist")]
    NotFound {
        /// The missing key.
        key: String,
    },
    /// A resource kind or name breaks the naming rules.
    #[error("invalid resource {what} {value:?}: {reason}")]
    InvalidName {
        /// `"kind"` or `"name"`.
        what: &'static str,
        /// The rejected value.
        value: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// The changes after revision `after` are no longer kept (the change feed was trimmed, or
    /// this process has not kept them): the watcher must resynchronise.
    #[error(
        "cannot resume watching after revision {after}: the changes since then are no longer \
         kept (resuming is possible after revision {oldest} or later); too old, resynchronize: \
         re-read the state and watch from the revision it was read at"
    )]
    WatchTooOld {
        /// The revision the watcher asked to resume after.
        after: u64,
        /// The oldest revision a watcher can resume after now.
        oldest: u64,
    },
    /// A watcher asked to resume after a revision this store has not reached: its state came
    /// from another store (a restored or replaced database).
    #[error(
        "cannot resume watching after revision {after}: this store is only at revision \
         {current} (the watcher's state comes from another store); resynchronize"
    )]
    WatchAhead {
        /// The revision the watcher asked to resume after.
        after: u64,
        /// The store's newest revision.
        current: u64,
    },
    /// The PostgreSQL connection string, or a file it names, is not usable.
    #[error("invalid PostgreSQL storage settings: {reason}")]
    PostgresConfig {
        /// What is wrong, naming the setting.
        reason: String,
    },
    /// PostgreSQL could not be reached, or the connection to it was lost.
    #[error("PostgreSQL at {target} is unreachable: {detail}")]
    Unreachable {
        /// The server and database (never the password).
        target: String,
        /// What the client reported.
        detail: String,
    },
    /// PostgreSQL refused or failed a statement (not a conflict hop expects).
    #[error("PostgreSQL at {target} failed: {detail}")]
    Database {
        /// The server and database (never the password).
        target: String,
        /// The server's error.
        detail: String,
    },
    /// The PostgreSQL database was migrated by a newer hop to a schema this build cannot use.
    /// Nothing was changed.
    #[error(
        "the PostgreSQL database at {target} uses storage schema version {found}, but this hop \
         only supports versions up to {supported}; it was migrated by a newer hop. Upgrade hop \
         (the database was left untouched)"
    )]
    NewerDatabaseSchema {
        /// The server and database.
        target: String,
        /// The schema version recorded in the database.
        found: u64,
        /// The newest schema version this build knows.
        supported: u64,
    },
    /// A restore was pointed at a store that already holds cluster state: restoring merges
    /// nothing and overwrites nothing, so it needs a fresh data dir or an empty database.
    #[error(
        "cannot restore into {target}: it is not empty (revision {revision}, {items} items); \
         restore needs a new data directory or an empty PostgreSQL database"
    )]
    NotEmpty {
        /// The store (a file or `user@host:port/database`).
        target: String,
        /// The store's revision.
        revision: u64,
        /// How many items it holds, live or expired.
        items: u64,
    },
    /// A snapshot handed to a restore breaks the snapshot rules (keys out of order or repeated,
    /// an item newer than the snapshot's revision).
    #[error("invalid snapshot: {detail}")]
    InvalidSnapshot {
        /// What is wrong.
        detail: String,
    },
    /// A resource could not be serialized to JSON.
    #[error("cannot encode {key} as JSON: {source}")]
    Encode {
        /// The key it was to be stored under.
        key: String,
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },
    /// A stored resource does not decode as the type asked for.
    #[error("stored value at {key} does not decode: {source}")]
    Decode {
        /// The key it was read from.
        key: String,
        /// The deserializer's error.
        #[source]
        source: serde_json::Error,
    },
}

impl StorageError {
    /// Whose fault the error is.
    pub fn fault(&self) -> Fault {
        match self {
            Self::Conflict { .. }
            | Self::AlreadyExists { .. }
            | Self::NotFound { .. }
            | Self::InvalidName { .. }
            | Self::WatchTooOld { .. }
            | Self::WatchAhead { .. }
            | Self::InvalidSnapshot { .. } => Fault::Caller,
            Self::NewerSchema { .. }
            | Self::Locked { .. }
            | Self::PostgresConfig { .. }
            | Self::Unreachable { .. }
            | Self::NewerDatabaseSchema { .. }
            | Self::NotEmpty { .. } => Fault::Operator,
            Self::Io { .. }
            | Self::Corrupt { .. }
            | Self::Engine { .. }
            | Self::Database { .. }
            | Self::Encode { .. }
            | Self::Decode { .. } => Fault::Internal,
        }
    }
}

/// Why a [`crate::Watcher`] produced no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    /// The watcher fell behind and this many events were dropped; it must resynchronise
    /// (re-read the state it mirrors) before trusting further events.
    #[error("watcher fell behind and missed {0} events")]
    Lagged(u64),
    /// The backend was dropped; no further events will come.
    #[error("the storage backend was closed")]
    Closed,
}
