//! Per-source-IP token buckets for login attempts. An IPv6 source counts by its /64 (the
//! prefix one host or one customer line is given: one machine can take any address of it, so
//! per address it would have 2^64 buckets), an IPv4-mapped IPv6 address as its IPv4 address.
//!
//! This module owns the bookkeeping only: callers pass `now`, so tests run on simulated time.
//! The table is bounded: when it is full, buckets that have refilled completely are dropped
//! first, then the tenth with the most tokens (the most throttled stay).

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
        let ip = source(ip);
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
            self.evict_fullest(now);
        }
    }

    /// Drops the tenth of the buckets with the most tokens: the sources least throttled lose
    /// the least. (Clearing the table would hand a flood of new sources a way to reset the
    /// throttle of every source, its own included.)
    fn evict_fullest(&mut self, now: SystemTime) {
        let rate = self.per_second;
        let mut tokens: Vec<(f64, IpAddr)> = self
            .buckets
            .iter()
            .map(|(ip, b)| {
                let elapsed = now
                    .duration_since(b.updated)
                    .unwrap_or_default()
                    .as_secs_f64();
                (b.tokens + elapsed * rate, *ip)
            })
            .collect();
        let keep = MAX_TRACKED - MAX_TRACKED / 10;
        if tokens.len() <= keep {
            return;
        }
        // Fewest tokens first; the ones from `keep` on go.
        tokens.select_nth_unstable_by(keep, |a, b| a.0.total_cmp(&b.0));
        for (_, ip) in &tokens[keep..] {
            self.buckets.remove(ip);
        }
    }
}

/// The bucket an address counts in: an IPv6 address's /64, an IPv4 address (mapped or not)
/// itself.
fn source(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
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

    #[test]
    fn an_ipv6_host_counts_by_its_slash_64_and_a_mapped_ipv4_as_itself() {
        let mut l = LoginRateLimiter::new(2);
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        // One machine rotating through the addresses of its /64 gets one bucket.
        for ip in ["2001:db8:1:2::1", "2001:db8:1:2::2"] {
            l.check(ip.parse().unwrap(), t0).unwrap();
        }
        let rotated: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:fffe".parse().unwrap();
        assert!(
            l.check(rotated, t0).is_err(),
            "a new address of the same /64"
        );
        assert!(l.check("2001:db8:1:3::1".parse().unwrap(), t0).is_ok());
        // The same IPv4 client, seen plain or mapped on a dual-stack socket.
        l.check("192.0.2.9".parse().unwrap(), t0).unwrap();
        l.check("::ffff:192.0.2.9".parse().unwrap(), t0).unwrap();
        assert!(l.check("192.0.2.9".parse().unwrap(), t0).is_err());
    }

    #[test]
    fn a_flood_of_new_sources_does_not_reset_a_throttled_one() {
        let mut l = LoginRateLimiter::new(2);
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let attacker: IpAddr = "198.51.100.7".parse().unwrap();
        l.check(attacker, t0).unwrap();
        l.check(attacker, t0).unwrap();
        assert!(l.check(attacker, t0).is_err());
        // As many other sources, one attempt each, as the table tracks, and one more.
        for i in 0..=MAX_TRACKED as u32 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            l.check(ip, t0).unwrap();
        }
        assert!(l.buckets.len() <= MAX_TRACKED);
        assert!(
            l.check(attacker, t0).is_err(),
            "the throttled source is still throttled"
        );
    }
}
