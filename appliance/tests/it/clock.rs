//! The real clocks for these tests' own deadlines and timings (how long to poll, how long a step
//! took) and for the wall time they compare against. The processes under test read their own.

use std::time::{Instant, SystemTime};

/// Now, on the monotonic clock.
// One of the two reads of the clock in these tests; clippy's `disallowed_methods` refuses them
// anywhere but a `clock.rs`.
#[allow(clippy::disallowed_methods)]
pub fn monotonic_now() -> Instant {
    Instant::now()
}

/// Now, on the wall clock.
// The other read of the clock in these tests.
#[allow(clippy::disallowed_methods)]
pub fn wall_now() -> SystemTime {
    SystemTime::now()
}
