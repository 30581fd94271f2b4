//! The real monotonic clock, for the benchmarks' own timings (time to acknowledgement, wall
//! time of a run). A bench target includes it with `#[path = "support/clock.rs"] mod clock;`
//! (it lives in a folder so that cargo does not take it for a benchmark of its own).

use std::time::{Duration, Instant, SystemTime};

/// Now, on the monotonic clock.
// The one read of the clock in these benchmarks; clippy's `disallowed_methods` refuses it
// elsewhere.
#[allow(clippy::disallowed_methods)]
pub fn monotonic_now() -> Instant {
    Instant::now()
}

/// How long ago `earlier` was on the monotonic clock (zero if it is in the future), as
/// `earlier.elapsed()` would say.
pub fn since(earlier: Instant) -> Duration {
    monotonic_now().saturating_duration_since(earlier)
}

/// Now, on the wall clock (for the time made-up ids carry).
#[allow(clippy::disallowed_methods)]
pub fn wall_now() -> SystemTime {
    SystemTime::now()
}
