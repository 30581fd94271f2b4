//! The audit seam. This module owns [`AuditStore`], what every place that keeps audit events must
//! offer (the local log in `audit/` today; a PostgreSQL store with high availability), the
//! store-neutral acknowledgement [`AuditAck`], and [`StoreDescription`], how a store names itself
//! in logs. It never stores anything itself and must never relax the contract below for one
//! store: search, verify and export must mean the same on every store.
//!
//! The contract every store keeps:
//! - an event is acknowledged ([`AuditStore::append`], or the [`AuditAck`] of
//!   [`AuditStore::append_async`] resolving) only once it is durable; [`AuditStore::submit`]
//!   accepts without waiting, and a refusal is counted, never silent;
//! - ids are idempotent: an event whose id is already stored writes nothing and is acknowledged
//!   with the original's position and `duplicate: true`;
//! - events are hash-chained per UTC day, and [`AuditStore::verify`] names the first break;
//! - [`AuditStore::search`] pages by cursor in either order, and [`AuditStore::export`] writes
//!   JSON lines, oldest first;
//! - retention deletes whole days ([`AuditStore::purge_before`]), and what is left still
//!   verifies.

use std::fmt;
use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;

use tokio::sync::oneshot;

use crate::audit::{
    AckHandle, AuditError, AuditEvent, AuditLog, AuditStats, EventPosition, PurgeReport,
    SearchPage, SearchQuery, StoredEvent, VerifyReport,
};

/// How a store names itself: the kind of store and where it keeps its data (for the start log
/// and status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreDescription {
    /// The kind of store (`local` for files on this host).
    pub kind: &'static str,
    /// Where it keeps its data (a path, a database, a bucket).
    pub location: String,
}

impl fmt::Display for StoreDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.location)
    }
}

/// Where audit events are kept: see the module documentation for the contract.
pub trait AuditStore: Send + Sync + fmt::Debug {
    /// The kind of store and where it keeps the events.
    fn describe(&self) -> StoreDescription;

    /// Queues `ev` and returns a handle that resolves once it is durable.
    fn append_async(&self, ev: AuditEvent) -> Result<AuditAck, AuditError>;

    /// Appends `ev` and blocks until it is durable. Never call it on an async runtime's thread:
    /// `.await` an [`AuditStore::append_async`] handle there.
    fn append(&self, ev: AuditEvent) -> Result<EventPosition, AuditError> {
        self.append_async(ev)?.wait()
    }

    /// Accepts `ev` without waiting for it to be durable; refused (and counted) when the store
    /// cannot take more.
    fn submit(&self, ev: AuditEvent) -> Result<(), AuditError>;

    /// The stored event with this id, if any.
    fn get(&self, id: &str) -> Result<Option<StoredEvent>, AuditError>;

    /// One page of the events matching `q`.
    fn search(&self, q: &SearchQuery) -> Result<SearchPage, AuditError>;

    /// Checks every chain (or those of days from `since` on) and names the first break.
    fn verify(&self, since: Option<SystemTime>) -> Result<VerifyReport, AuditError>;

    /// Writes the events with `from <= time < to` to `out` as JSON lines, oldest first, and
    /// returns how many.
    fn export(
        &self,
        from: Option<SystemTime>,
        to: Option<SystemTime>,
        out: &mut dyn Write,
    ) -> Result<u64, AuditError>;

    /// Deletes every whole day strictly before `cutoff`'s UTC day.
    fn purge_before(&self, cutoff: SystemTime) -> Result<PurgeReport, AuditError>;

    /// Counters since the store was opened.
    fn stats(&self) -> AuditStats;
}

/// A pending acknowledgement from any [`AuditStore`]: resolves once the event is durable. Wait
/// for it with [`AuditAck::wait`] from a plain thread, or `.await` it from async code.
#[derive(Debug)]
pub struct AuditAck {
    inner: Pending,
}

#[derive(Debug)]
enum Pending {
    /// The local log's own handle.
    Log(AckHandle),
    /// Any other store's: resolved through an [`AckSender`].
    Channel {
        id: String,
        rx: oneshot::Receiver<Result<EventPosition, AuditError>>,
    },
}

/// The store's end of an [`AuditAck`] made by [`AuditAck::pending`]. Dropping it unresolved
/// resolves the acknowledgement with [`AuditError::Closed`].
#[derive(Debug)]
pub struct AckSender {
    tx: oneshot::Sender<Result<EventPosition, AuditError>>,
}

impl AckSender {
    /// Resolves the acknowledgement: a position only once the event is durable.
    pub fn resolve(self, outcome: Result<EventPosition, AuditError>) {
        // The producer may have stopped waiting; the outcome is the store's to count.
        let _ = self.tx.send(outcome);
    }
}

impl AuditAck {
    /// An acknowledgement of the event `id` that the store resolves later through the returned
    /// sender (for stores other than the local log).
    pub fn pending(id: String) -> (AuditAck, AckSender) {
        let (tx, rx) = oneshot::channel();
        let inner = Pending::Channel { id, rx };
        (AuditAck { inner }, AckSender { tx })
    }

    /// The event's id (known before it is durable).
    pub fn id(&self) -> &str {
        match &self.inner {
            Pending::Log(handle) => handle.id(),
            Pending::Channel { id, .. } => id,
        }
    }

    /// Blocks until the event is durable. Never call it on an async runtime's thread (`.await`
    /// the acknowledgement there).
    pub fn wait(self) -> Result<EventPosition, AuditError> {
        match self.inner {
            Pending::Log(handle) => handle.wait(),
            Pending::Channel { rx, .. } => rx.blocking_recv().map_err(|_| AuditError::Closed)?,
        }
    }
}

impl From<AckHandle> for AuditAck {
    fn from(handle: AckHandle) -> Self {
        AuditAck {
            inner: Pending::Log(handle),
        }
    }
}

impl Future for AuditAck {
    type Output = Result<EventPosition, AuditError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().inner {
            Pending::Log(handle) => Pin::new(handle).poll(cx),
            Pending::Channel { rx, .. } => Pin::new(rx)
                .poll(cx)
                .map(|r| r.map_err(|_| AuditError::Closed)?),
        }
    }
}

/// The local log: the events in files beside [`AuditLog::path`].
impl AuditStore for AuditLog {
    fn describe(&self) -> StoreDescription {
        StoreDescription {
            kind: "local",
            location: self.path().display().to_string(),
        }
    }

    fn append_async(&self, ev: AuditEvent) -> Result<AuditAck, AuditError> {
        AuditLog::append_async(self, ev).map(AuditAck::from)
    }

    fn append(&self, ev: AuditEvent) -> Result<EventPosition, AuditError> {
        AuditLog::append(self, ev)
    }

    fn submit(&self, ev: AuditEvent) -> Result<(), AuditError> {
        AuditLog::submit(self, ev)
    }

    fn get(&self, id: &str) -> Result<Option<StoredEvent>, AuditError> {
        AuditLog::get(self, id)
    }

    fn search(&self, q: &SearchQuery) -> Result<SearchPage, AuditError> {
        AuditLog::search(self, q)
    }

    fn verify(&self, since: Option<SystemTime>) -> Result<VerifyReport, AuditError> {
        AuditLog::verify(self, since)
    }

    fn export(
        &self,
        from: Option<SystemTime>,
        to: Option<SystemTime>,
        out: &mut dyn Write,
    ) -> Result<u64, AuditError> {
        AuditLog::export(self, from, to, out)
    }

    fn purge_before(&self, cutoff: SystemTime) -> Result<PurgeReport, AuditError> {
        AuditLog::purge_before(self, cutoff)
    }

    fn stats(&self) -> AuditStats {
        AuditLog::stats(self)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::clock::ManualClock;

    fn open(dir: &std::path::Path) -> Arc<dyn AuditStore> {
        let clock = Arc::new(ManualClock::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        ));
        Arc::new(AuditLog::open(&dir.join("audit.db"), clock, Default::default()).unwrap())
    }

    #[test]
    fn the_local_log_keeps_the_contract_through_the_trait() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        assert_eq!(store.describe().kind, "local");
        assert!(store.describe().location.ends_with("audit.db"));

        let ev = || AuditEvent::new("user.login", "T1000I").with_id("ev-1");
        let first = store.append_async(ev()).unwrap();
        assert_eq!(first.id(), "ev-1");
        let first = first.wait().unwrap();
        let again = store.append(ev()).unwrap();
        assert!(again.duplicate && again.seq == first.seq, "{again:?}");
        store
            .submit(AuditEvent::new("session.start", "T2000I"))
            .unwrap();
        store
            .append(AuditEvent::new("user.login", "T1000I"))
            .unwrap();

        assert!(store.get("ev-1").unwrap().is_some());
        let page = store.search(&SearchQuery::default()).unwrap();
        assert_eq!(page.events.len(), 3);
        assert!(store.verify(None).unwrap().first_break.is_none());
        let mut out = Vec::new();
        assert_eq!(store.export(None, None, &mut out).unwrap(), 3);
        let first_line = out.split(|b| *b == b'\n').next().unwrap();
        assert!(String::from_utf8_lossy(first_line).contains("ev-1"));
        assert_eq!(store.stats().duplicates, 1);
    }

    #[tokio::test]
    async fn an_acknowledgement_resolves_for_any_store() {
        let (ack, sender) = AuditAck::pending("x".into());
        assert_eq!(ack.id(), "x");
        sender.resolve(Ok(EventPosition {
            seq: 7,
            id: "x".into(),
            duplicate: false,
        }));
        assert_eq!(ack.await.unwrap().seq, 7);

        let (ack, sender) = AuditAck::pending("y".into());
        drop(sender);
        assert!(matches!(ack.await, Err(AuditError::Closed)));
    }

    #[test]
    fn an_unresolved_acknowledgement_fails_a_blocking_wait() {
        let (ack, sender) = AuditAck::pending("z".into());
        drop(sender);
        assert!(matches!(ack.wait(), Err(AuditError::Closed)));
    }
}
