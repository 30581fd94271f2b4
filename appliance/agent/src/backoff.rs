//! Reconnect delays for agents: jittered exponential backoff.
//!
//! The first retry is spread uniformly over a few seconds, later ones grow exponentially to a cap
//! with "equal jitter" (half fixed, half random), so that thousands of agents losing the same proxy
//! do not return in the same second. Pure: the caller passes the random source.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    attempt: u32,
    first_spread: Duration,
    base: Duration,
    cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(
            Duration::from_secs(5),
            Duration::from_secs(2),
            Duration::from_secs(120),
        )
    }
}

impl Backoff {
    pub fn new(first_spread: Duration, base: Duration, cap: Duration) -> Self {
        Self {
            attempt: 0,
            first_spread,
            base,
            cap,
        }
    }

    /// Forget past failures (after a connection that lasted).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The delay before the next attempt; `unit` is a uniform random number in [0, 1).
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        let unit = unit.clamp(0.0, 1.0);
        let d = if self.attempt == 0 {
            self.first_spread.mul_f64(unit)
        } else {
            let exp = self
                .base
                .saturating_mul(1u32 << self.attempt.min(16))
                .min(self.cap);
            exp / 2 + (exp / 2).mul_f64(unit)
        };
        self.attempt = self.attempt.saturating_add(1);
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_retry_is_spread_and_later_ones_grow_to_the_cap() {
        let mut b = Backoff::default();
        assert_eq!(b.next_delay(0.0), Duration::ZERO);
        let mut b2 = Backoff::default();
        assert_eq!(b2.next_delay(0.5), Duration::from_millis(2500));
        let d1 = b.next_delay(0.0);
        let d2 = b.next_delay(0.0);
        assert!(d2 > d1, "{d1:?} {d2:?}");
        for _ in 0..30 {
            assert!(b.next_delay(0.999) <= Duration::from_secs(120));
        }
        assert!(
            b.next_delay(0.0) >= Duration::from_secs(60),
            "half of the cap is fixed"
        );
        b.reset();
        assert!(b.next_delay(0.9) <= Duration::from_secs(5));
    }
}
