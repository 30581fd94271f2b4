//! The key-value contract every storage implementation keeps. This module owns the [`Backend`]
//! trait and its vocabulary ([`Item`], [`PutOptions`], [`Event`], [`Watcher`]), the TTL rule
//! (an item whose lease has run out reads as absent), the prefix-range helper, and the change
//! feed every backend publishes into ([`EventFeed`]: a broadcast plus a short history, so that a
//! watcher can resume from a revision). It must never know how or where bytes are kept; that
//! belongs to the implementations.
//!
//! Revisions are contiguous: every committed write takes exactly the next revision, so a
//! [`Watcher`] that sees revision `n + 2` after `n` knows it missed one and says so
//! ([`WatchError::Lagged`]) instead of skipping it silently.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

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

impl Event {
    /// The revision of the write this event reports.
    pub fn revision(&self) -> u64 {
        match self {
            Event::Put(item) => item.revision,
            Event::Delete { revision, .. } => *revision,
        }
    }
}

/// Every live item of a store as of one revision: what [`Backend::snapshot`] reads in one read
/// transaction and [`Backend::restore`] loads into an empty store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The store's revision when it was read: every write up to it is in `items`, none after.
    pub revision: u64,
    /// The live items, in key order, with their own revisions and leases.
    pub items: Vec<Item>,
}

impl Snapshot {
    /// Checks the rules a restore relies on: keys strictly increasing (so none repeats), and no
    /// item newer than the snapshot's revision.
    pub fn validate(&self) -> Result<(), StorageError> {
        let invalid = |detail: String| Err(StorageError::InvalidSnapshot { detail });
        let mut previous: Option<&str> = None;
        for item in &self.items {
            if previous.is_some_and(|p| p >= item.key.as_str()) {
                return invalid(format!("key {:?} is out of order or repeated", item.key));
            }
            if item.revision == 0 || item.revision > self.revision {
                return invalid(format!(
                    "key {:?} has revision {}, outside 1..={}",
                    item.key, item.revision, self.revision
                ));
            }
            previous = Some(&item.key);
        }
        Ok(())
    }
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

    /// A feed of every put and delete committed after this call, in revision order. (For a
    /// shared backend, "after" means after the newest change this process has seen; every write
    /// made through this handle that returned before the call is excluded.)
    fn watch(&self) -> Watcher;

    /// A feed of every put and delete with a revision greater than `after`, in revision order,
    /// with no gap and no duplicate: the way to resume after a dropped watcher (pass
    /// [`Watcher::revision`]) or after reading a snapshot at revision `after`.
    ///
    /// Fails with [`StorageError::WatchTooOld`] when the changes after `after` are no longer kept
    /// (re-read the state, then watch from the revision it was read at), and with
    /// [`StorageError::WatchAhead`] when `after` is beyond the newest revision of this store.
    fn watch_from(&self, after: u64) -> Result<Watcher, StorageError>;

    /// Deletes every item whose lease has run out, in one durable write, emitting a
    /// [`Event::Delete`] for each in order of expiry (then key); returns how many were deleted.
    fn purge_expired(&self) -> Result<usize, StorageError>;

    /// The revision of the latest write (0 for a fresh store).
    fn current_revision(&self) -> Result<u64, StorageError>;

    /// Every live item at one revision, in key order, read in one read transaction: a write
    /// that commits while it runs is either wholly in it (its revision is at most the
    /// snapshot's) or wholly absent.
    fn snapshot(&self) -> Result<Snapshot, StorageError>;

    /// Loads `snapshot` into this store in one durable write: every item with its own revision
    /// and lease, and the store's revision set to the snapshot's, so that the next write gets a
    /// higher revision than anything restored. The store must be empty (revision 0, no item,
    /// live or expired), else [`StorageError::NotEmpty`] and nothing changes; a snapshot that
    /// breaks [`Snapshot::validate`] is refused with [`StorageError::InvalidSnapshot`]. No
    /// events are emitted: a watcher opened before sees [`WatchError::Lagged`] and resynchronises
    /// (a restore is meant for a store no appliance has open).
    fn restore(&self, snapshot: &Snapshot) -> Result<(), StorageError>;
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

/// A subscription to a backend's change feed: events replayed from history first (when resuming),
/// then live ones, never one at or below the revision already handed out.
#[derive(Debug)]
pub struct Watcher {
    backlog: VecDeque<Event>,
    rx: broadcast::Receiver<Event>,
    /// The revision of the last event handed out, or the revision the watcher started after.
    last: u64,
    /// The broadcast dropped events; the next live one starts a new run (no gap check).
    lagged: bool,
}

impl Watcher {
    /// Waits for the next event.
    pub async fn recv(&mut self) -> Result<Event, WatchError> {
        loop {
            if let Some(event) = self.backlog.pop_front() {
                return self.accept(event);
            }
            match self.rx.recv().await {
                Ok(event) if event.revision() <= self.last => continue,
                Ok(event) => return self.accept(event),
                Err(broadcast::error::RecvError::Lagged(n)) => return Err(self.lag(n)),
                Err(broadcast::error::RecvError::Closed) => return Err(WatchError::Closed),
            }
        }
    }

    /// The next event if one is queued, without waiting.
    pub fn try_recv(&mut self) -> Result<Option<Event>, WatchError> {
        loop {
            if let Some(event) = self.backlog.pop_front() {
                return self.accept(event).map(Some);
            }
            match self.rx.try_recv() {
                Ok(event) if event.revision() <= self.last => continue,
                Ok(event) => return self.accept(event).map(Some),
                Err(broadcast::error::TryRecvError::Empty) => return Ok(None),
                Err(broadcast::error::TryRecvError::Lagged(n)) => return Err(self.lag(n)),
                Err(broadcast::error::TryRecvError::Closed) => return Err(WatchError::Closed),
            }
        }
    }

    /// The revision of the last event this watcher handed out (or the one it started after):
    /// pass it to [`Backend::watch_from`] to resume with no gap and no duplicate.
    pub fn revision(&self) -> u64 {
        self.last
    }

    fn lag(&mut self, n: u64) -> WatchError {
        self.lagged = true;
        WatchError::Lagged(n)
    }

    fn accept(&mut self, event: Event) -> Result<Event, WatchError> {
        let revision = event.revision();
        let expected = self.last.saturating_add(1);
        if revision > expected && !self.lagged {
            // Revisions are contiguous, so a jump means the feed lost events (a trimmed change
            // table under a slow poller): report it rather than skip silently. The event is put
            // back, so that a caller that carries on after resynchronising still gets it.
            self.backlog.push_front(event);
            self.lagged = true;
            return Err(WatchError::Lagged(revision - expected));
        }
        self.lagged = false;
        self.last = revision;
        Ok(event)
    }
}

/// Why [`EventFeed::subscribe_after`] could not start where it was asked to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResumeError {
    /// The history no longer holds the changes after the requested revision; `oldest` is the
    /// smallest revision it can resume after.
    TooOld { oldest: u64 },
    /// The requested revision is newer than anything published.
    Ahead { current: u64 },
}

impl ResumeError {
    pub(crate) fn into_storage(self, after: u64) -> StorageError {
        match self {
            ResumeError::TooOld { oldest } => StorageError::WatchTooOld { after, oldest },
            ResumeError::Ahead { current } => StorageError::WatchAhead { after, current },
        }
    }
}

/// The sending side of a backend's change feed, with the most recent events kept for watchers
/// that resume. Backends publish in revision order (while holding their write lock, or from the
/// one poller that reads a shared change table), so that events reach watchers in that order.
#[derive(Debug)]
pub(crate) struct EventFeed {
    tx: broadcast::Sender<Event>,
    state: Mutex<FeedState>,
    published: Condvar,
    history_len: usize,
}

/// The smallest revision a watcher can resume after from the history alone.
fn oldest_resumable(state: &FeedState) -> u64 {
    state
        .history
        .front()
        .map_or(state.last, |event| event.revision().saturating_sub(1))
}

#[derive(Debug)]
struct FeedState {
    history: VecDeque<Event>,
    /// The revision of the newest published event (or the store's revision at open).
    last: u64,
}

impl EventFeed {
    /// A feed whose store is at revision `last`, keeping up to `history_len` past events.
    pub(crate) fn new(last: u64, history_len: usize) -> Self {
        let (tx, _) = broadcast::channel(WATCH_CAPACITY);
        Self {
            tx,
            state: Mutex::new(FeedState {
                history: VecDeque::new(),
                last,
            }),
            published: Condvar::new(),
            history_len,
        }
    }

    fn lock(&self) -> MutexGuard<'_, FeedState> {
        // Every update completes before the guard drops; a panic cannot leave it half-written.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A watcher of every event published after this call.
    pub(crate) fn subscribe(&self) -> Watcher {
        let state = self.lock();
        Watcher {
            backlog: VecDeque::new(),
            rx: self.tx.subscribe(),
            last: state.last,
            lagged: false,
        }
    }

    /// A watcher of every event after revision `after`, from the history and then live.
    pub(crate) fn subscribe_from(&self, after: u64) -> Result<Watcher, ResumeError> {
        let state = self.lock();
        if after > state.last {
            return Err(ResumeError::Ahead {
                current: state.last,
            });
        }
        self.subscribe_locked(&state, after, Vec::new(), after)
            .ok_or(ResumeError::TooOld {
                oldest: oldest_resumable(&state),
            })
    }

    /// A watcher of every event after revision `after`, given `prefix`: the events in
    /// `(after, through]` read from elsewhere (a shared change table), in order. The history
    /// supplies what follows `through`; what the feed publishes later up to `through` is
    /// skipped. `None` when the history no longer reaches back to `through` (the caller reads
    /// again, further).
    pub(crate) fn subscribe_after(
        &self,
        after: u64,
        prefix: Vec<Event>,
        through: u64,
    ) -> Option<Watcher> {
        let state = self.lock();
        self.subscribe_locked(&state, after, prefix, through)
    }

    fn subscribe_locked(
        &self,
        state: &FeedState,
        after: u64,
        prefix: Vec<Event>,
        through: u64,
    ) -> Option<Watcher> {
        if through < oldest_resumable(state) {
            return None;
        }
        let mut backlog: VecDeque<Event> = prefix.into();
        backlog.extend(
            state
                .history
                .iter()
                .filter(|event| event.revision() > through)
                .cloned(),
        );
        Some(Watcher {
            backlog,
            rx: self.tx.subscribe(),
            last: after,
            lagged: false,
        })
    }

    pub(crate) fn publish(&self, event: Event) {
        let mut state = self.lock();
        state.last = event.revision();
        if self.history_len > 0 {
            if state.history.len() == self.history_len {
                state.history.pop_front();
            }
            state.history.push_back(event.clone());
        }
        // An error only means nobody is watching right now, which is fine.
        let _ = self.tx.send(event);
        drop(state);
        self.published.notify_all();
    }

    /// Forgets the history and starts again at revision `last` (after a restore, whose items
    /// are not events).
    pub(crate) fn reset(&self, last: u64) {
        let mut state = self.lock();
        state.history.clear();
        state.last = last;
    }

    /// The revision of the newest published event.
    pub(crate) fn last(&self) -> u64 {
        self.lock().last
    }

    /// Waits until revision `revision` has been published, at most `timeout`; whether it was.
    pub(crate) fn wait_published(&self, revision: u64, timeout: Duration) -> bool {
        let state = self.lock();
        let (state, _) = self
            .published
            .wait_timeout_while(state, timeout, |state| state.last < revision)
            .unwrap_or_else(PoisonError::into_inner);
        state.last >= revision
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
