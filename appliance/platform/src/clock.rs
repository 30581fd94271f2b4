//! The appliance's one place that reads the real clocks. Everything else asks here (or is handed
//! a `now`), so that time can be injected in tests and a CI lint finds any other reader.

use std::time::{Instant, SystemTime};

/// The monotonic clock, for deadlines and durations.
#[allow(clippy::disallowed_methods)] // the one reader of Instant::now
pub fn now() -> Instant {
    Instant::now()
}

/// Wall-clock time, for certificates, audit events and what people read.
#[allow(clippy::disallowed_methods)] // the one reader of SystemTime::now
pub fn wall() -> SystemTime {
    SystemTime::now()
}
