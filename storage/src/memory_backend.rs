//! A [`Backend`] that keeps everything in process memory. This module owns an ordered map of
//! items plus the revision counter behind one mutex, with exactly the redb backend's semantics,
//! so that other crates can unit-test against storage without files. It must never be used where
//! data has to survive a restart.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use crate::backend::{
    Backend, Event, EventFeed, Item, Precondition, PutOptions, Snapshot, Watcher, cas_error,
    in_range, is_expired,
};
use crate::clock::Clock;

/// How many past events are kept for watchers that resume ([`Backend::watch_from`]).
const HISTORY: usize = 1024;
use crate::error::StorageError;

/// An in-memory [`Backend`] with the same semantics as [`crate::RedbBackend`].
#[derive(Debug)]
pub struct MemoryBackend {
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
    feed: EventFeed,
}

#[derive(Debug, Default)]
struct State {
    items: BTreeMap<String, Item>,
    revision: u64,
}

impl State {
    fn live(&self, key: &str, clock: &dyn Clock) -> Option<&Item> {
        self.items
            .get(key)
            .filter(|item| !is_expired(item.expires, clock.now()))
    }
}

impl MemoryBackend {
    /// An empty store reading time from `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            state: Mutex::new(State::default()),
            feed: EventFeed::new(0, HISTORY),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is updated only after every check, so a panic cannot leave it half-written.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(
        &self,
        key: &str,
        value: &[u8],
        opts: PutOptions,
        pre: Precondition,
    ) -> Result<u64, StorageError> {
        let mut state = self.lock();
        let current = state
            .live(key, self.clock.as_ref())
            .map(|item| item.revision);
        pre.check(key, current)?;
        state.revision += 1;
        let item = Item {
            key: key.to_owned(),
            value: value.to_vec(),
            revision: state.revision,
            expires: opts.expires,
        };
        state.items.insert(key.to_owned(), item.clone());
        self.feed.publish(Event::Put(item));
        Ok(state.revision)
    }
}

impl Backend for MemoryBackend {
    fn get(&self, key: &str) -> Result<Option<Item>, StorageError> {
        Ok(self.lock().live(key, self.clock.as_ref()).cloned())
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
        let mut state = self.lock();
        if state.live(key, self.clock.as_ref()).is_none() {
            return Ok(false);
        }
        state.items.remove(key);
        state.revision += 1;
        self.feed.publish(Event::Delete {
            key: key.to_owned(),
            revision: state.revision,
        });
        Ok(true)
    }

    fn range(&self, start: &str, end: &str, limit: usize) -> Result<Vec<Item>, StorageError> {
        if !end.is_empty() && end <= start {
            return Ok(Vec::new());
        }
        let now = self.clock.now();
        let state = self.lock();
        let upper = if end.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(end)
        };
        let limit = if limit == 0 { usize::MAX } else { limit };
        Ok(state
            .items
            .range::<str, _>((Bound::Included(start), upper))
            .map(|(_, item)| item)
            .filter(|item| in_range(&item.key, start, end) && !is_expired(item.expires, now))
            .take(limit)
            .cloned()
            .collect())
    }

    fn watch(&self) -> Watcher {
        let _state = self.lock();
        self.feed.subscribe()
    }

    fn watch_from(&self, after: u64) -> Result<Watcher, StorageError> {
        let _state = self.lock();
        self.feed
            .subscribe_from(after)
            .map_err(|err| err.into_storage(after))
    }

    fn purge_expired(&self) -> Result<usize, StorageError> {
        let now = self.clock.now();
        let mut state = self.lock();
        let mut expired: Vec<(SystemTime, String)> = state
            .items
            .values()
            .filter_map(|item| match item.expires {
                Some(at) if is_expired(Some(at), now) => Some((at, item.key.clone())),
                _ => None,
            })
            .collect();
        expired.sort();
        for (_, key) in &expired {
            state.items.remove(key);
            state.revision += 1;
            self.feed.publish(Event::Delete {
                key: key.clone(),
                revision: state.revision,
            });
        }
        Ok(expired.len())
    }

    fn current_revision(&self) -> Result<u64, StorageError> {
        Ok(self.lock().revision)
    }

    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        let state = self.lock();
        let now = self.clock.now();
        Ok(Snapshot {
            revision: state.revision,
            items: state
                .items
                .values()
                .filter(|item| !is_expired(item.expires, now))
                .cloned()
                .collect(),
        })
    }

    fn restore(&self, snapshot: &Snapshot) -> Result<(), StorageError> {
        snapshot.validate()?;
        let mut state = self.lock();
        if state.revision != 0 || !state.items.is_empty() {
            return Err(StorageError::NotEmpty {
                target: "memory".to_owned(),
                revision: state.revision,
                items: u64::try_from(state.items.len()).unwrap_or(u64::MAX),
            });
        }
        state.items = snapshot
            .items
            .iter()
            .map(|item| (item.key.clone(), item.clone()))
            .collect();
        state.revision = snapshot.revision;
        self.feed.reset(snapshot.revision);
        Ok(())
    }
}
