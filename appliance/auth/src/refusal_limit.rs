//! How many refusals of unauthenticated callers reach the audit log.
//!
//! This module owns one shared token bucket ([`REFUSALS_PER_SECOND`], burst [`REFUSAL_BURST`])
//! for `access.refused` events whose caller proved no identity (no certificate, or one that did
//! not verify), so that strangers cannot flood the audit log. Refusals over the budget are not
//! written; they are counted (`hop_audit_refusals_dropped_total`) and reported in one summary
//! event per [`SUMMARY_INTERVAL`] ("N refusals not written"), written with the first refusal
//! after the interval whatever the bucket says. Refusals of callers with a verified identity
//! never pass through here. The bookkeeping only: callers pass `now` (the Auth service's
//! injected clock), so tests run on simulated time.

use std::time::{Duration, SystemTime};

/// Refusals written per second, on average, once the burst is spent.
pub const REFUSALS_PER_SECOND: f64 = 20.0;
/// Refusals written back to back before the rate applies.
pub const REFUSAL_BURST: f64 = 100.0;
/// Refusals of one verified identity written per second, once its burst is spent.
pub const IDENTITY_REFUSALS_PER_SECOND: f64 = 1.0;
/// Refusals of one verified identity written back to back.
pub const IDENTITY_REFUSAL_BURST: f64 = 20.0;
/// Identities tracked at most; past this the table starts again (a flood from that many
/// identities is bounded by their certificates, which only Auth issues).
pub const MAX_TRACKED_IDENTITIES: usize = 10_000;

/// At most one summary of unwritten refusals per this long.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(60);

/// What to do with one refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefusalVerdict {
    /// Write this refusal's event.
    pub write: bool,
    /// Write a summary first: this many refusals were not written since the last one.
    pub summary: Option<u64>,
}

/// The shared bucket and the count of refusals not written since the last summary.
#[derive(Debug)]
pub struct RefusalLimiter {
    per_second: f64,
    burst: f64,
    tokens: f64,
    updated: Option<SystemTime>,
    unwritten: u64,
    last_summary: Option<SystemTime>,
}

impl Default for RefusalLimiter {
    fn default() -> Self {
        Self::new(REFUSALS_PER_SECOND, REFUSAL_BURST)
    }
}

impl RefusalLimiter {
    pub fn new(per_second: f64, burst: f64) -> Self {
        Self {
            per_second,
            burst,
            tokens: burst,
            updated: None,
            unwritten: 0,
            last_summary: None,
        }
    }

    /// Decides one unauthenticated refusal at `now`.
    pub fn admit(&mut self, now: SystemTime) -> RefusalVerdict {
        self.refill(now);
        let write = self.tokens >= 1.0;
        if write {
            self.tokens -= 1.0;
        } else {
            self.unwritten += 1;
        }
        RefusalVerdict {
            write,
            summary: self.take_summary(now),
        }
    }

    fn refill(&mut self, now: SystemTime) {
        if let Some(before) = self.updated {
            // A clock that went back refills nothing.
            let elapsed = now.duration_since(before).unwrap_or_default();
            self.tokens = (self.tokens + elapsed.as_secs_f64() * self.per_second).min(self.burst);
        }
        if self.updated.is_none_or(|u| now > u) {
            self.updated = Some(now);
        }
    }

    /// The count to report, once per [`SUMMARY_INTERVAL`], when refusals went unwritten.
    fn take_summary(&mut self, now: SystemTime) -> Option<u64> {
        if self.unwritten == 0 {
            return None;
        }
        let due = self
            .last_summary
            .is_none_or(|at| now.duration_since(at).unwrap_or_default() >= SUMMARY_INTERVAL);
        if !due {
            return None;
        }
        self.last_summary = Some(now);
        Some(std::mem::take(&mut self.unwritten))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    #[test]
    fn the_burst_is_written_then_the_rate() {
        let mut l = RefusalLimiter::new(20.0, 100.0);
        let now = t0();
        let written = (0..150).filter(|_| l.admit(now).write).count();
        assert_eq!(written, 100);
        // One second later: 20 more.
        let later = now + Duration::from_secs(1);
        let written = (0..50).filter(|_| l.admit(later).write).count();
        assert_eq!(written, 20);
    }

    #[test]
    fn unwritten_refusals_are_summarized_once_per_interval() {
        let mut l = RefusalLimiter::new(20.0, 100.0);
        let now = t0();
        let mut summaries = Vec::new();
        for _ in 0..150 {
            if let Some(n) = l.admit(now).summary {
                summaries.push(n);
            }
        }
        // The first unwritten refusal is reported at once (no summary was written before).
        assert_eq!(summaries, vec![1]);
        // 49 more went unwritten; within the interval nothing more is summarized…
        let soon = now + Duration::from_secs(1);
        for _ in 0..20 {
            assert_eq!(l.admit(soon).summary, None);
        }
        let v = l.admit(soon);
        assert!(!v.write);
        assert_eq!(v.summary, None);
        // …and after it, the next refusal carries the whole count, written or not.
        let after = now + SUMMARY_INTERVAL;
        let v = l.admit(after);
        assert!(v.write);
        assert_eq!(v.summary, Some(50));
        assert_eq!(l.admit(after + SUMMARY_INTERVAL).summary, None);
    }

    #[test]
    fn a_clock_going_back_refills_nothing() {
        let mut l = RefusalLimiter::new(20.0, 2.0);
        assert!(l.admit(t0()).write);
        assert!(l.admit(t0()).write);
        assert!(!l.admit(t0() - Duration::from_secs(10)).write);
        assert!(!l.admit(t0()).write);
        assert!(l.admit(t0() + Duration::from_secs(1)).write);
    }
}
