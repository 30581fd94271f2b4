//! Time as the storage layer sees it. This module owns the [`Clock`] seam through which every
//! backend learns "now" (for TTL leases), so that tests can drive expiry with a [`ManualClock`]
//! instead of sleeping. Nothing else in the crate may read the system time: only
//! [`SystemClock`] calls `SystemTime::now()`, and only `monotonic_now` calls `Instant::now()`
//! (clippy's `disallowed_methods` refuses both anywhere but a `clock.rs`).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

/// A source of wall-clock time, injected into every backend.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;
}

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    // The one read of the wall clock in this crate; everything else is handed a `Clock`.
    #[allow(clippy::disallowed_methods)]
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// The monotonic clock, for the audit writer's own waits (how long to hold a batch open, when
/// the index backlog is due). Those deadlines bound real `recv_timeout` waits on the writer's
/// queue, so they follow real time; the index backlog takes this `now` as an argument.
// The one read of the monotonic clock in this crate.
#[allow(clippy::disallowed_methods)]
pub(crate) fn monotonic_now() -> Instant {
    Instant::now()
}

/// A clock that only moves when told to; clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<SystemTime>>,
}

impl ManualClock {
    /// A clock stopped at `t`.
    pub fn new(t: SystemTime) -> Self {
        Self {
            now: Arc::new(Mutex::new(t)),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        *now += by;
    }

    /// Sets the clock to `t`, which may be earlier than the current time.
    pub fn set(&self, t: SystemTime) {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner) = t;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told_and_clones_share_time() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let clock = ManualClock::new(start);
        let shared = clock.clone();
        assert_eq!(clock.now(), start);
        clock.advance(Duration::from_secs(5));
        assert_eq!(shared.now(), start + Duration::from_secs(5));
        shared.set(start);
        assert_eq!(clock.now(), start);
    }
}
