//! The appliance's one place that reads the clocks: std's `Instant::now` and `SystemTime::now`,
//! and tokio's `Instant::now` (which follows tokio's paused test time). Everything else asks here
//! (or is handed a `now`), and a CI lint (clippy.toml) finds any other caller of those, of
//! `Instant::elapsed`/`SystemTime::elapsed` (std's and tokio's) and of `OffsetDateTime::now_utc`.
//! These free functions cannot be swapped in tests, so code that must be tested against time
//! takes a `now` or a `hop_storage::Clock`.

#![forbid(unsafe_code)]

use std::time::{Duration, Instant, SystemTime};

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

/// How long ago `earlier` was on the monotonic clock (zero if it is in the future), as
/// `earlier.elapsed()` would say.
pub fn since(earlier: Instant) -> Duration {
    now().saturating_duration_since(earlier)
}

/// tokio's monotonic clock, for deadlines handed to tokio's timers (it stands still while a
/// test has paused tokio's time).
#[allow(clippy::disallowed_methods)] // the one reader of tokio's Instant::now
pub fn tokio_now() -> tokio::time::Instant {
    tokio::time::Instant::now()
}

/// How long ago `earlier` was on tokio's clock (zero if it is in the future), as
/// `earlier.elapsed()` would say.
pub fn tokio_since(earlier: tokio::time::Instant) -> Duration {
    tokio_now().saturating_duration_since(earlier)
}
