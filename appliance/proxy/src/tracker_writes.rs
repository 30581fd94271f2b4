//! The proxy's own session-tracker writes (TCP application sessions, moderated Kubernetes
//! sessions), a few at a time.
//!
//! Each write is a durable backend transaction, and the backend takes them one after another
//! anyway. Run as one blocking task per session, a burst of sessions (a thousand `hop proxy app`
//! connections opened together, each writing its tracker after a second) made the blocking
//! pool grow to its 512 threads, and the threads' stacks and allocator heaps stayed in the
//! proxy's memory: hundreds of KiB per session. Here a write waits for one of [`WRITERS`]
//! places without a thread, and runs on a blocking thread only once it has one.

use tokio::sync::Semaphore;

/// Tracker writes that may run at once.
pub const WRITERS: usize = 4;

static PLACES: Semaphore = Semaphore::const_new(WRITERS);

/// Runs the blocking write `f` once a place is free; `None` when it panicked.
pub async fn write<T, F>(f: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let _place = PLACES.acquire().await.ok()?;
    tokio::task::spawn_blocking(f).await.ok()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_writes_runs_a_few_at_a_time() {
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let writes = (0..40).map(|i| {
            let (running, most) = (running.clone(), most.clone());
            tokio::spawn(write(move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
                running.fetch_sub(1, Ordering::SeqCst);
                i
            }))
        });
        let mut done = Vec::new();
        for w in writes.collect::<Vec<_>>() {
            done.push(w.await.unwrap().unwrap());
        }
        assert_eq!(done, (0..40).collect::<Vec<_>>(), "every write ran");
        let most = most.load(Ordering::SeqCst);
        assert!((1..=WRITERS).contains(&most), "{most} writes ran at once");
    }
}
