//! A backend that can be cut off, for tests of what the rest of Hop does during an outage: while
//! it is cut off, every call fails with [`StorageError::Unreachable`], as the PostgreSQL
//! backend's calls do when the server is down or out of reach; otherwise every call goes to the
//! backend it wraps. It owns only the switch; it stores nothing itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::backend::{Backend, Item, PutOptions, Snapshot, Watcher};
use crate::error::StorageError;

/// A backend with an on/off switch for outages: see the module documentation.
#[derive(Debug)]
pub struct CutOffBackend {
    inner: Arc<dyn Backend>,
    cut: AtomicBool,
}

impl CutOffBackend {
    /// `inner`, reachable until [`CutOffBackend::cut_off`] says otherwise.
    pub fn new(inner: Arc<dyn Backend>) -> Self {
        Self {
            inner,
            cut: AtomicBool::new(false),
        }
    }

    /// Cuts the backend off (`true`) or brings it back (`false`).
    pub fn cut_off(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
    }

    fn reachable(&self) -> Result<(), StorageError> {
        if self.cut.load(Ordering::SeqCst) {
            return Err(StorageError::Unreachable {
                target: "the cut-off test backend".into(),
                detail: "cut off".into(),
            });
        }
        Ok(())
    }
}

impl Backend for CutOffBackend {
    fn get(&self, key: &str) -> Result<Option<Item>, StorageError> {
        self.reachable()?;
        self.inner.get(key)
    }
    fn put(&self, key: &str, value: &[u8], opts: PutOptions) -> Result<u64, StorageError> {
        self.reachable()?;
        self.inner.put(key, value, opts)
    }
    fn create(&self, key: &str, value: &[u8], opts: PutOptions) -> Result<u64, StorageError> {
        self.reachable()?;
        self.inner.create(key, value, opts)
    }
    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<u64>,
        value: &[u8],
        opts: PutOptions,
    ) -> Result<u64, StorageError> {
        self.reachable()?;
        self.inner.compare_and_swap(key, expected, value, opts)
    }
    fn delete(&self, key: &str) -> Result<bool, StorageError> {
        self.reachable()?;
        self.inner.delete(key)
    }
    fn range(&self, start: &str, end: &str, limit: usize) -> Result<Vec<Item>, StorageError> {
        self.reachable()?;
        self.inner.range(start, end, limit)
    }
    /// The feed itself stays open (as the PostgreSQL follower's does while it reconnects); it
    /// is quiet because nothing can be written while the backend is cut off.
    fn watch(&self) -> Watcher {
        self.inner.watch()
    }
    fn watch_from(&self, after: u64) -> Result<Watcher, StorageError> {
        self.reachable()?;
        self.inner.watch_from(after)
    }
    fn purge_expired(&self) -> Result<usize, StorageError> {
        self.reachable()?;
        self.inner.purge_expired()
    }
    fn current_revision(&self) -> Result<u64, StorageError> {
        self.reachable()?;
        self.inner.current_revision()
    }
    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        self.reachable()?;
        self.inner.snapshot()
    }
    fn restore(&self, snapshot: &Snapshot) -> Result<(), StorageError> {
        self.reachable()?;
        self.inner.restore(snapshot)
    }
}
