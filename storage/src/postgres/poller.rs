//! The change-feed follower of the PostgreSQL backend: one task per backend that reads
//! `hop_changes` in revision order past the last revision it published and publishes each row to
//! the backend's [`crate::backend::EventFeed`]. This module owns when it reads (at once when a
//! local write asks, on a `NOTIFY hop_changes` from any appliance, and every poll interval
//! regardless, since a notification can be lost) and what happens when its connection drops:
//! it reconnects with backoff and carries on from the last published revision, so the feed has
//! no gap and no duplicate. It never writes.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::pool::map_pg;
use super::{Shared, row_to_event};
use crate::error::StorageError;

/// `application_name` of the follower's connection (tests terminate it by this name).
pub const WATCH_APPLICATION_NAME: &str = "hop-watch";
/// Rows read per query.
const BATCH: i64 = 1000;
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Follows the change table until the backend's runtime shuts down.
pub(super) async fn run(shared: Arc<Shared>) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let Err(err) = follow(&shared, &mut backoff).await;
        tracing::warn!(
            target = %shared.target,
            error = %err,
            retry_in = ?backoff,
            "storage change feed lost its PostgreSQL connection; resuming from revision {}",
            shared.feed.last()
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection's worth of following; returns only with the error that ended it.
async fn follow(shared: &Shared, backoff: &mut Duration) -> Result<Infallible, StorageError> {
    let (tx, mut notifications) = mpsc::unbounded_channel();
    let client = shared
        .pool
        .connector()
        .connect(WATCH_APPLICATION_NAME, Some(tx))
        .await?;
    let db = |err| map_pg(&shared.target, err);
    // Listen first, then read: a change committed in between is read, not missed.
    client
        .batch_execute("LISTEN hop_changes")
        .await
        .map_err(db)?;
    *backoff = MIN_BACKOFF;
    let query = client
        .prepare(
            "SELECT revision, key, value, expires_ns FROM hop_changes \
             WHERE revision > $1 ORDER BY revision LIMIT $2",
        )
        .await
        .map_err(db)?;
    loop {
        loop {
            let last = i64::try_from(shared.feed.last()).unwrap_or(i64::MAX);
            let rows = client.query(&query, &[&last, &BATCH]).await.map_err(db)?;
            let full = rows.len() == usize::try_from(BATCH).unwrap_or(usize::MAX);
            for row in &rows {
                // Revisions are contiguous; a jump means the table was trimmed past what this
                // process had published. Watchers see the jump and resynchronise.
                shared.feed.publish(row_to_event(row));
            }
            if !full {
                break;
            }
        }
        tokio::select! {
            note = notifications.recv() => if note.is_none() {
                return Err(StorageError::Unreachable {
                    target: shared.target.clone(),
                    detail: "the change feed's connection closed".to_owned(),
                });
            },
            () = shared.wake.notified() => {}
            () = tokio::time::sleep(shared.options.poll_interval) => {}
        }
        // One read covers every notification queued meanwhile.
        while notifications.try_recv().is_ok() {}
    }
}
