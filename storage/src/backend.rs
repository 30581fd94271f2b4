//! The key-value contract every storage implementation keeps. This module owns the [`Backend`]
//! trait and its vocabulary ([`Item`], [`PutOptions`], [`Event`], [`Watcher`]), the TTL rule
//! (an item whose lease has run out reads as absent) and the prefix-range helper. It must never
//! know how or where bytes are kept; that belongs to the implementations.

use std::time::SystemTime;

use tokio::sync::broadcast;

use crate::error::{StorageError, WatchError};

/// How many events a watcher may fall behind before it sees [`WatchError::Lagged`].
pub(crate) const WATCH_CAPACITY: usize = 4096;

/// One stored key with its value and bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The key.
    pub key: String,
    /// The value bytes, opaque to the backend.
    pub value: Vec<u8>,
    /// The backend-wide revision at which this value was written.
    pub revision: u64,
    /// When the item's lease runs out, if it has one.
    pub expires: Option<SystemTime>,
}

/// Options for a write.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// TTL lease: from this instant on the item reads as absent, and
    /// [`Backend::purge_expired`] deletes it.
    pub expires: Option<SystemTime>,
}

/// A committed change, as seen by a [`Watcher`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The key now holds this item.
    Put(Item),
    /// The key was deleted (explicitly or because its lease ran out) at `revision`.
    Delete {
        /// The deleted key.
        key: String,
        /// The revision of the delete.
        revision: u64,
    },
}

/// A transactional key-value store with revisions, TTL leases and a change feed.
///
/// Every successful write (put, create, compare-and-swap, delete, and each key removed by a
/// purge) bumps one backend-wide monotonic revision; the new value is the write's revision and
/// is stored with the item. A write that fails (conflict, already exists, nothing to delete)
/// changes nothing and emits nothing. An item whose lease has run out behaves as absent for
/// every operation, though it stays stored until [`Backend::purge_expired`] removes it.
pub trait Backend: Send + Sync + std::fmt::Debug + 'static {
    /// The live item at `key`; expired items are `None`.
    fn get(&self, key: &str) -> Result<Option<Item>, StorageError>;

    /// Stores `value` at `key` whatever was there; returns the new revision.
    fn put(&self, key: &str, value: &[u8], opts: PutOptions) -> Result<u64, StorageError>;

    /// Stores `value` only if `key` holds no live item, else [`StorageError::AlreadyExists`].
    fn create(&self, key: &str, value: &[u8], opts: PutOptions) -> Result<u64, StorageError>;

    /// `expected = Some(rev)`: succeed only if the current item has that revision; `None`: only
    /// if absent. Else `Err(Conflict{key})`.
    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<u64>,
        value: &[u8],
        opts: PutOptions,
    ) -> Result<u64, StorageError>;

    /// Deletes the live item at `key`; `false` (and no revision bump) if there was none.
    fn delete(&self, key: &str) -> Result<bool, StorageError>;

    /// Live items with keys in `[start, end)` in key order, at most `limit` (0 = unlimited).
    /// An empty `end` means no upper bound (see [`prefix_end`]).
    fn range(&self, start: &str, end: &str, limit: usize) -> Result<Vec<Item>, StorageError>;

    /// A feed of every put and delete committed after this call, in revision order.
    fn watch(&self) -> Watcher;

    /// Deletes every item whose lease has run out, in one durable write, emitting a
    /// [`Event::Delete`] for each in order of expiry (then key); returns how many were deleted.
    fn purge_expired(&self) -> Result<usize, StorageError>;

    /// The revision of the latest write (0 for a fresh store).
    fn current_revision(&self) -> Result<u64, StorageError>;
}

/// The exclusive end key of the range holding every key that starts with `prefix`: the prefix
/// with its last character incremented. Returns `""` (no upper bound) when no such key exists,
/// e.g. for the empty prefix.
pub fn prefix_end(prefix: &str) -> String {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        if let Some(next) = next_char(last) {
            chars.push(next);
            return chars.into_iter().collect();
        }
    }
    String::new()
}

/// The smallest `char` greater than `c`, skipping the surrogate gap.
fn next_char(c: char) -> Option<char> {
    let mut code = u32::from(c).checked_add(1)?;
    if (0xD800..=0xDFFF).contains(&code) {
        code = 0xE000;
    }
    char::from_u32(code)
}

/// Whether a lease ending at `expires` has run out at `now`.
pub(crate) fn is_expired(expires: Option<SystemTime>, now: SystemTime) -> bool {
    expires.is_some_and(|at| at <= now)
}

/// Whether `key` lies in `[start, end)`, an empty `end` being unbounded.
pub(crate) fn in_range(key: &str, start: &str, end: &str) -> bool {
    key >= start && (end.is_empty() || key < end)
}

/// A subscription to a backend's change feed.
#[derive(Debug)]
pub struct Watcher {
    rx: broadcast::Receiver<Event>,
}

impl Watcher {
    /// Waits for the next event.
    pub async fn recv(&mut self) -> Result<Event, WatchError> {
        self.rx.recv().await.map_err(|err| match err {
            broadcast::error::RecvError::Lagged(n) => WatchError::Lagged(n),
            broadcast::error::RecvError::Closed => WatchError::Closed,
        })
    }

    /// The next event if one is queued, without waiting.
    pub fn try_recv(&mut self) -> Result<Option<Event>, WatchError> {
        match self.rx.try_recv() {
            Ok(event) => Ok(Some(event)),
            Err(broadcast::error::TryRecvError::Empty) => Ok(None),
            Err(broadcast::error::TryRecvError::Lagged(n)) => Err(WatchError::Lagged(n)),
            Err(broadcast::error::TryRecvError::Closed) => Err(WatchError::Closed),
        }
    }
}

/// The sending side of a backend's change feed. Backends publish while still holding their write
/// lock, so that events reach watchers in revision order.
#[derive(Debug)]
pub(crate) struct EventFeed {
    tx: broadcast::Sender<Event>,
}

impl EventFeed {
    pub(crate) fn new() -> Self {
        let (tx, _) = broadcast::channel(WATCH_CAPACITY);
        Self { tx }
    }

    pub(crate) fn subscribe(&self) -> Watcher {
        Watcher {
            rx: self.tx.subscribe(),
        }
    }

    pub(crate) fn publish(&self, event: Event) {
        // An error only means nobody is watching right now, which is fine.
        let _ = self.tx.send(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_character() {
        assert_eq!(prefix_end("/resources/role/"), "/resources/role0");
        assert_eq!(prefix_end("a"), "b");
        assert_eq!(prefix_end(""), "");
        assert_eq!(prefix_end("a\u{10FFFF}"), "b");
        assert_eq!(prefix_end("\u{10FFFF}"), "");
        assert_eq!(prefix_end("x\u{D7FF}"), "x\u{E000}");
    }

    #[test]
    fn prefix_end_bounds_exactly_the_keys_with_the_prefix() {
        let prefix = "ab";
        let end = prefix_end(prefix);
        for key in ["ab", "ab\u{0}", "abz", "ab\u{10FFFF}\u{10FFFF}"] {
            assert!(in_range(key, prefix, &end), "{key:?}");
        }
        for key in ["a", "aa", "ac", "b", "ac\u{0}"] {
            assert!(!in_range(key, prefix, &end), "{key:?}");
        }
    }

    #[test]
    fn expiry_is_inclusive_of_the_instant() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(10);
        assert!(!is_expired(None, t));
        assert!(is_expired(Some(t), t));
        assert!(!is_expired(Some(t + std::time::Duration::from_nanos(1)), t));
    }
}

/// What a conditional write requires of the key's current state; shared by the backends so that
/// put, create and compare-and-swap mean the same everywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Precondition {
    None,
    Absent,
    Revision(u64),
}

impl Precondition {
    /// The precondition of [`Backend::compare_and_swap`]'s `expected`.
    pub(crate) fn for_cas(expected: Option<u64>) -> Self {
        match expected {
            Some(revision) => Precondition::Revision(revision),
            None => Precondition::Absent,
        }
    }

    /// Checks the precondition against the live revision of `key` (None: absent or expired).
    pub(crate) fn check(self, key: &str, live: Option<u64>) -> Result<(), StorageError> {
        match (self, live) {
            (Precondition::None, _) | (Precondition::Absent, None) => Ok(()),
            (Precondition::Absent, Some(_)) => Err(StorageError::AlreadyExists {
                key: key.to_owned(),
            }),
            (Precondition::Revision(want), Some(have)) if want == have => Ok(()),
            (Precondition::Revision(_), _) => Err(StorageError::Conflict {
                key: key.to_owned(),
            }),
        }
    }
}

/// A failed compare-and-swap is a conflict, whatever precondition failed.
pub(crate) fn cas_error(err: StorageError) -> StorageError {
    match err {
        StorageError::AlreadyExists { key } => StorageError::Conflict { key },
        other => other,
    }
}
