//! The appliance's one place that calls std's `Instant::now` and `SystemTime::now`. Everything
//! else asks here (or is handed a `now`), and a CI lint (clippy.toml) finds any other caller.
//! Not yet covered by that lint: `Instant::elapsed`, tokio's `Instant::now` and
//! `OffsetDateTime::now_utc` (see docs/ARCHITECTURE.md); these free functions cannot be swapped
//! in tests, so code that must be tested against time takes a `now` or a `hop_storage::Clock`.

#![forbid(unsafe_code)]

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
