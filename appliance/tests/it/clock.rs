//! The real clocks for these tests' own deadlines and timings (how long to poll, how long a step
//! took) and for the wall time they compare against. The processes under test read their own.

use std::time::{Duration, Instant, SystemTime};

/// Now, on the monotonic clock.
// One of the two reads of the clock in these tests; clippy's `disallowed_methods` refuses them
// anywhere but a `clock.rs`.
#[allow(clippy::disallowed_methods)]
pub fn monotonic_now() -> Instant {
    Instant::now()
}

/// How long ago `earlier` was on the monotonic clock (zero if it is in the future), as
/// `earlier.elapsed()` would say.
pub fn since(earlier: Instant) -> Duration {
    monotonic_now().saturating_duration_since(earlier)
}

/// Now, on the wall clock.
// The other read of the clock in these tests.
#[allow(clippy::disallowed_methods)]
pub fn wall_now() -> SystemTime {
    SystemTime::now()
}
