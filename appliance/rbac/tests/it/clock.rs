//! The real monotonic clock for these tests' own deadlines and timings (how long to poll, how
//! long a step took).

use std::time::{Duration, Instant};

/// Now, on the monotonic clock.
// The one read of the clock in these tests; clippy's `disallowed_methods` refuses it elsewhere.
#[allow(clippy::disallowed_methods)]
pub fn monotonic_now() -> Instant {
    Instant::now()
}

/// How long ago `earlier` was on the monotonic clock (zero if it is in the future), as
/// `earlier.elapsed()` would say.
pub fn since(earlier: Instant) -> Duration {
    monotonic_now().saturating_duration_since(earlier)
}
