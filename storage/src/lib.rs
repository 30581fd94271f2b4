//! Hop's persistent state. This crate owns the [`Backend`] contract (a revisioned key-value store
//! with TTL leases and a change feed), its implementations — [`RedbBackend`], the embedded
//! default kept in one file in the data directory, [`PgBackend`] for several appliances sharing one
//! PostgreSQL database, and [`MemoryBackend`] for tests — and the
//! typed [`ResourceStore`] layered on top — the [`backup`] file format a backend's [`Snapshot`] is
//! written in and restored from — and the durable, hash-chained [`AuditLog`], kept in a redb
//! file of its own, and [`PgAuditStore`], the same events shared in PostgreSQL, behind the
//! [`AuditStore`] seam every audit store implements — and the
//! [`recording`] module: the session-recording format, its exports and playback schedule, and the
//! [`RecordingStore`] directory of uploaded recordings behind the [`RecordingBackend`] seam. It
//! must never read the wall clock except through an injected
//! [`Clock`], never hold a write that is not durable when it returns, and never contain `unsafe`
//! code.
#![forbid(unsafe_code)]

pub mod audit;
pub mod audit_store;
pub mod backend;
pub mod backup;
pub mod clock;
mod codec;
pub mod cut_off_backend;
pub mod error;
pub mod memory_backend;
pub mod postgres;
pub mod private_file;
pub mod recording;
pub mod redb_backend;
pub mod resources;

pub use audit::{
    AckHandle, AuditConfig, AuditError, AuditEvent, AuditLog, AuditStats, EventPosition, Order,
    PgAuditStore, SearchPage, SearchQuery, StoredEvent, VerifyReport,
};
pub use audit_store::{AckSender, AuditAck, AuditStore, StoreDescription};
pub use backend::{Backend, Event, Item, PutOptions, Snapshot, Watcher, prefix_end};
pub use clock::{Clock, ManualClock, SystemClock};
pub use cut_off_backend::CutOffBackend;
pub use error::{Fault, StorageError, WatchError};
pub use memory_backend::MemoryBackend;
pub use postgres::{PgBackend, PgOptions};
pub use recording::{
    RecordingBackend, RecordingError, RecordingIndexEntry, RecordingMeta, RecordingStore,
    RecordingStoreError, RecordingWriter,
};
pub use redb_backend::RedbBackend;
pub use resources::{MAX_NAME_LEN, ResourceStore, StoredResource, Versioned};

/// Page cache of each redb file (the backend and the audit log). redb's default is 1 GiB per
/// file, which an appliance would grow into as its audit log grows; 64 MiB keeps memory flat and
/// is enough for the hot pages of both.
pub const REDB_CACHE_BYTES: usize = 64 * 1024 * 1024;
