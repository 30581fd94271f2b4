//! Go-style duration strings (`8h`, `1h30m`, `90s`, `0s`) as they appear in role options.
//!
//! This module owns the [`Duration`] newtype, its parser and its canonical formatting. It must
//! never accept a negative or overflowing duration, and formatting must always produce a string
//! that the parser reads back to the same value.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A non-negative duration written the way Teleport (and Go's `time.ParseDuration`) writes it.
///
/// Serialized as a string: `8h`, `30m`, `1h30m`, `1.5h`, `90s`, `250ms`, `0s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(std::time::Duration);

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The string was empty.
    #[error("empty duration")]
    Empty,
    /// A leading `-` sign: durations in roles are never negative.
    #[error("invalid duration {0:?}: negative durations are not allowed")]
    Negative(String),
    /// A number was not followed by a unit (only `0` may stand alone).
    #[error("invalid duration {0:?}: missing unit (one of h, m, s, ms, us, ns)")]
    MissingUnit(String),
    /// A unit that Go does not know.
    #[error("invalid duration {input:?}: unknown unit {unit:?} (one of h, m, s, ms, us, ns)")]
    UnknownUnit {
        /// The whole input.
        input: String,
        /// The offending unit.
        unit: String,
    },
    /// Characters where a number was expected.
    #[error("invalid duration {0:?}: expected a number")]
    ExpectedNumber(String),
    /// The value does not fit.
    #[error("invalid duration {0:?}: too large")]
    Overflow(String),
}

impl Duration {
    /// Zero.
    pub const ZERO: Self = Self(std::time::Duration::ZERO);

    /// Wraps a standard duration.
    #[must_use]
    pub const fn from_std(d: std::time::Duration) -> Self {
        Self(d)
    }

    /// Whole hours.
    #[must_use]
    pub const fn from_hours(h: u64) -> Self {
        Self(std::time::Duration::from_secs(h * 3600))
    }

    /// Whole minutes.
    #[must_use]
    pub const fn from_mins(m: u64) -> Self {
        Self(std::time::Duration::from_secs(m * 60))
    }

    /// Whole seconds.
    #[must_use]
    pub const fn from_secs(s: u64) -> Self {
        Self(std::time::Duration::from_secs(s))
    }

    /// The standard library value.
    #[must_use]
    pub const fn as_std(&self) -> std::time::Duration {
        self.0
    }

    /// True for `0s`.
    #[must_use]
    pub const fn is_zero(&self) -> bool {
        self.0.is_zero()
    }
}

impl From<std::time::Duration> for Duration {
    fn from(d: std::time::Duration) -> Self {
        Self(d)
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        d.0
    }
}

/// Nanoseconds per unit, longest unit names first so that `ms` is not read as `m` + `s`.
const UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60 * 1_000_000_000),
    ("h", 3600 * 1_000_000_000),
];

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let owned = || input.to_owned();
        let mut rest = input;
        if rest.is_empty() {
            return Err(DurationError::Empty);
        }
        if rest.starts_with('-') {
            return Err(DurationError::Negative(owned()));
        }
        rest = rest.strip_prefix('+').unwrap_or(rest);
        if rest == "0" {
            return Ok(Self::ZERO);
        }
        if rest.is_empty() {
            return Err(DurationError::ExpectedNumber(owned()));
        }
        // Total in nanoseconds; u128 so that intermediate products cannot overflow silently.
        let mut total: u128 = 0;
        while !rest.is_empty() {
            let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            let (int_part, after_int) = rest.split_at(int_len);
            let (frac_part, after_num) = match after_int.strip_prefix('.') {
                Some(after_dot) => {
                    let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
                    after_dot.split_at(frac_len)
                }
                None => ("", after_int),
            };
            if int_part.is_empty() && frac_part.is_empty() {
                return Err(DurationError::ExpectedNumber(owned()));
            }
            let unit_len = after_num
                .char_indices()
                .find(|(_, c)| c.is_ascii_digit() || *c == '.')
                .map_or(after_num.len(), |(i, _)| i);
            let (unit, after_unit) = after_num.split_at(unit_len);
            if unit.is_empty() {
                return Err(DurationError::MissingUnit(owned()));
            }
            let Some(&(_, scale)) = UNITS.iter().find(|(name, _)| *name == unit) else {
                return Err(DurationError::UnknownUnit {
                    input: owned(),
                    unit: unit.to_owned(),
                });
            };
            let int_value: u128 = if int_part.is_empty() {
                0
            } else {
                int_part
                    .parse::<u128>()
                    .map_err(|_| DurationError::Overflow(owned()))?
            };
            let mut value = int_value
                .checked_mul(scale)
                .ok_or_else(|| DurationError::Overflow(owned()))?;
            // Fractional digits beyond nanosecond precision are dropped, as Go does.
            let mut divisor: u128 = 1;
            for digit in frac_part.bytes().take(30) {
                divisor *= 10;
                let d = u128::from(digit - b'0');
                value = value
                    .checked_add(d * scale / divisor)
                    .ok_or_else(|| DurationError::Overflow(owned()))?;
            }
            total = total
                .checked_add(value)
                .ok_or_else(|| DurationError::Overflow(owned()))?;
            rest = after_unit;
        }
        let secs =
            u64::try_from(total / 1_000_000_000).map_err(|_| DurationError::Overflow(owned()))?;
        let nanos =
            u32::try_from(total % 1_000_000_000).map_err(|_| DurationError::Overflow(owned()))?;
        Ok(Self(std::time::Duration::new(secs, nanos)))
    }
}

impl fmt::Display for Duration {
    /// Compact Go-like form: `8h`, `1h30m`, `1m30s`, `1.5s`, `250ms`, `0s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        let nanos = self.0.subsec_nanos();
        if secs == 0 && nanos == 0 {
            return f.write_str("0s");
        }
        if secs == 0 {
            // Sub-second: the largest unit that represents it exactly.
            return if nanos.is_multiple_of(1_000_000) {
                write!(f, "{}ms", nanos / 1_000_000)
            } else if nanos.is_multiple_of(1_000) {
                write!(f, "{}us", nanos / 1_000)
            } else {
                write!(f, "{nanos}ns")
            };
        }
        let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if m > 0 {
            write!(f, "{m}m")?;
        }
        if s > 0 || nanos > 0 {
            write!(f, "{s}")?;
            if nanos > 0 {
                let frac = format!("{nanos:09}");
                write!(f, ".{}", frac.trim_end_matches('0'))?;
            }
            f.write_str("s")?;
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;

        impl Visitor<'_> for DurationVisitor {
            type Value = Duration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"8h\", \"30m\" or \"1h30m\"")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                v.parse().map_err(E::custom)
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                // A bare `0` is unambiguous; any other bare number lacks a unit.
                if v == 0 {
                    Ok(Duration::ZERO)
                } else {
                    Err(E::custom(DurationError::MissingUnit(v.to_string())))
                }
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(DurationError::Negative(v.to_string()))),
                }
            }
        }

        deserializer.deserialize_any(DurationVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Duration {
        s.parse().unwrap()
    }

    #[test]
    fn parses_go_forms() {
        assert_eq!(d("8h"), Duration::from_hours(8));
        assert_eq!(d("30m"), Duration::from_mins(30));
        assert_eq!(d("1h30m"), Duration::from_mins(90));
        assert_eq!(d("90s"), Duration::from_secs(90));
        assert_eq!(d("0s"), Duration::ZERO);
        assert_eq!(d("0"), Duration::ZERO);
        assert_eq!(d("1.5h"), Duration::from_mins(90));
        assert_eq!(
            d("250ms"),
            Duration::from_std(std::time::Duration::from_millis(250))
        );
        assert_eq!(
            d("1h2m3s4ms5us6ns"),
            Duration::from_std(std::time::Duration::new(3723, 4_005_006))
        );
        assert_eq!(d("+5m"), Duration::from_mins(5));
        assert_eq!(
            d(".5s"),
            Duration::from_std(std::time::Duration::from_millis(500))
        );
    }

    #[test]
    fn rejects_bad_forms() {
        for bad in [
            "",
            "8",
            "8x",
            "h",
            "-1h",
            "1h-",
            "1..5h",
            ".s",
            "1d",
            "8 h",
            "+",
            "99999999999999999999999999999999999999999h",
        ] {
            assert!(bad.parse::<Duration>().is_err(), "{bad:?} should fail");
        }
        assert_eq!(
            "8x".parse::<Duration>().unwrap_err().to_string(),
            "invalid duration \"8x\": unknown unit \"x\" (one of h, m, s, ms, us, ns)"
        );
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "8h", "30m", "1h30m", "1m30s", "0s", "250ms", "1.5s", "3us", "7ns", "26h0m1s",
        ] {
            let v = d(s);
            assert_eq!(d(&v.to_string()), v, "{s}");
        }
        assert_eq!(d("90s").to_string(), "1m30s");
        assert_eq!(d("8h").to_string(), "8h");
        assert_eq!(d("1.5s").to_string(), "1.5s");
        assert_eq!(
            Duration::from_std(std::time::Duration::MAX)
                .to_string()
                .parse::<Duration>()
                .unwrap()
                .as_std(),
            std::time::Duration::MAX
        );
    }
}
