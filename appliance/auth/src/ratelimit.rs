//! Per-source-IP token buckets for login attempts.
//!
//! This module owns the bookkeeping only: callers pass `now`, so tests run on simulated time.
//! The table is bounded: when it is full, buckets that have refilled completely are dropped first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

const MAX_TRACKED: usize = 100_000;

#[derive(Debug)]
pub struct LoginRateLimiter {
    burst: f64,
    per_second: f64,
    buckets: HashMap<IpAddr, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: SystemTime,
}

impl LoginRateLimiter {
    /// `per_minute` attempts, available as a burst and refilled evenly over a minute.
    pub fn new(per_minute: u32) -> Self {
        let burst = f64::from(per_minute.max(1));
        Self {
            burst,
            per_second: burst / 60.0,
            buckets: HashMap::new(),
        }
    }

    /// Takes one token for `ip`; on refusal, says how long until the next one.
    pub fn check(&mut self, ip: IpAddr, now: SystemTime) -> Result<(), Duration> {
        if self.buckets.len() >= MAX_TRACKED && !self.buckets.contains_key(&ip) {
            self.evict_full(now);
        }
        let (burst, rate) = (self.burst, self.per_second);
        let b = self.buckets.entry(ip).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        let elapsed = now
            .duration_since(b.updated)
            .unwrap_or_default()
            .as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.updated = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(((1.0 - b.tokens) / rate).max(0.0))
                .max(Duration::from_secs(1)))
        }
    }

    fn evict_full(&mut self, now: SystemTime) {
        let (burst, rate) = (self.burst, self.per_second);
        self.buckets.retain(|_, b| {
            let elapsed = now
                .duration_since(b.updated)
                .unwrap_or_default()
                .as_secs_f64();
            b.tokens + elapsed * rate < burst
        });
        if self.buckets.len() >= MAX_TRACKED {
            self.buckets.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn burst_then_refill() {
        let mut l = LoginRateLimiter::new(3);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        for _ in 0..3 {
            l.check(ip, t0).unwrap();
        }
        let wait = l.check(ip, t0).unwrap_err();
        assert!(
            wait >= Duration::from_secs(19) && wait <= Duration::from_secs(21),
            "{wait:?}"
        );
        assert!(l.check(other, t0).is_ok(), "buckets are per IP");
        assert!(l.check(ip, t0 + Duration::from_secs(21)).is_ok());
    }
}
