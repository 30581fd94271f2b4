//! The real monotonic clock for these tests' own deadlines and timings (how long to poll, how
//! long a step took). The storage under test is handed a `Clock` instead.

use std::time::Instant;

/// Now, on the monotonic clock.
// The one read of the clock in these tests; clippy's `disallowed_methods` refuses it elsewhere.
#[allow(clippy::disallowed_methods)]
pub fn monotonic_now() -> Instant {
    Instant::now()
}
