//! The proxy's own session-tracker writes (TCP application sessions, moderated Kubernetes
//! sessions), a few at a time.
//!
//! Each write is a durable backend transaction, and the backend takes them one after another
//! anyway. Run as one blocking task per session, a burst of sessions (a thousand `hop proxy app`
//! connections opened together, each writing its tracker after a second) made the blocking
//! pool grow to its 512 threads, and the threads' stacks and allocator heaps stayed in the
//! proxy's memory: hundreds of KiB per session. Here a write waits for one of a lane's
//! [`WRITERS`] places without a thread, and holds the place until the write itself is done
//! (also when the session that asked for it ends meanwhile). Moderated Kubernetes sessions have
//! a lane of their own: `hop join` finds such a session only through its tracker, so its writes
//! must not wait behind thousands of application sessions' renewals.

use std::sync::{Arc, LazyLock};

use tokio::sync::Semaphore;

/// Tracker writes of one lane that may run at once.
pub const WRITERS: usize = 4;

/// Where a write waits for its place.
pub struct Lane(LazyLock<Arc<Semaphore>>);

/// TCP application sessions' trackers.
pub static APPS: Lane = Lane::new();
/// Moderated Kubernetes sessions' trackers.
pub static MODERATED: Lane = Lane::new();

impl Lane {
    const fn new() -> Self {
        Self(LazyLock::new(|| Arc::new(Semaphore::new(WRITERS))))
    }

    /// Runs the blocking write `f` once a place is free; `None` when it panicked. The place is
    /// held by the write, not by this future: dropping the future (a session ending) leaves the
    /// write running and its place taken until it is done.
    pub async fn write<T, F>(&self, f: F) -> Option<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let place = self.0.clone().acquire_owned().await.ok()?;
        tokio::task::spawn_blocking(move || {
            let written = f();
            drop(place);
            written
        })
        .await
        .ok()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_writes_runs_a_few_at_a_time_even_when_their_sessions_end() {
        static LANE: Lane = Lane::new();
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let ran = Arc::new(AtomicUsize::new(0));
        let writes: Vec<_> = (0..40)
            .map(|_| {
                let (running, most, ran) = (running.clone(), most.clone(), ran.clone());
                tokio::spawn(LANE.write(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(5));
                    running.fetch_sub(1, Ordering::SeqCst);
                    ran.fetch_add(1, Ordering::SeqCst);
                }))
            })
            .collect();
        // Half the sessions end while their writes wait or run: the running ones keep their
        // places, so no more than WRITERS ever run together.
        tokio::time::sleep(Duration::from_millis(8)).await;
        for w in writes.iter().step_by(2) {
            w.abort();
        }
        for w in writes {
            let _ = w.await;
        }
        while running.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let most = most.load(Ordering::SeqCst);
        assert!((1..=WRITERS).contains(&most), "{most} writes ran at once");
        assert!(
            ran.load(Ordering::SeqCst) >= 20,
            "the writes not cancelled all ran"
        );
    }
}
