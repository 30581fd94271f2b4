//! The value types a configuration file and the command line share: socket addresses, durations
//! written like Go's, and networks in CIDR notation. Each parses from text with an error that
//! quotes what it was given; none knows which field it sits in (the caller names that).

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Why a value written in the file or on the command line does not parse (the operator's text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("invalid address {text:?}: expected IP:PORT such as 0.0.0.0:3080 or 127.0.0.1:3000")]
    Address { text: String },
    #[error("invalid duration {text:?}: expected a number and unit such as 90s, 15m, 8h or 1h30m")]
    Duration { text: String },
    #[error("invalid network {text:?}: expected CIDR such as 10.0.0.0/8 or ::1/128")]
    Network { text: String },
    #[error(
        "unknown role {text:?}; expected auth, proxy, node, app, db, kube, windows_desktop or discovery"
    )]
    Role { text: String },
    #[error("invalid cluster name {text:?}: use letters, digits, '-', '_' and '.' (at most 253)")]
    ClusterName { text: String },
}

/// A socket address that fails to deserialize with a clear message (and so a line number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addr(pub SocketAddr);

impl<'de> Deserialize<'de> for Addr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_addr(&s).map(Addr).map_err(serde::de::Error::custom)
    }
}

/// Parses `host:port`, `:port` (all interfaces) or `[v6]:port`.
pub fn parse_addr(s: &str) -> Result<SocketAddr, ValueError> {
    let s = s.trim();
    let full = if let Some(port) = s.strip_prefix(':') {
        format!("0.0.0.0:{port}")
    } else {
        s.to_string()
    };
    if let Ok(a) = full.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Some((host, port)) = full.rsplit_once(':')
        && host == "localhost"
        && let Ok(p) = port.parse::<u16>()
    {
        return Ok(SocketAddr::from(([127, 0, 0, 1], p)));
    }
    Err(ValueError::Address { text: s.into() })
}

/// A duration written like Go and Teleport do: `30m`, `1h30m`, `90s`, `500ms`, `0s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s)
            .map(HumanDuration)
            .map_err(serde::de::Error::custom)
    }
}

/// Parses `1h30m`, `90s`, `500ms`, `2d`; refuses empty strings, unknown units and overflow.
pub fn parse_duration(s: &str) -> Result<Duration, ValueError> {
    let s = s.trim();
    let bad = || ValueError::Duration { text: s.into() };
    if s.is_empty() {
        return Err(bad());
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let (part, after) = duration_term(rest).ok_or_else(bad)?;
        total = total.checked_add(part).ok_or_else(bad)?;
        rest = after;
    }
    Ok(total)
}

/// The first `<number><unit>` of `text` and what follows it; `None` when it is not one.
fn duration_term(text: &str) -> Option<(Duration, &str)> {
    let digits = text.find(|c: char| !c.is_ascii_digit())?;
    if digits == 0 {
        return None;
    }
    let n: u64 = text[..digits].parse().ok()?;
    let rest = &text[digits..];
    let unit_len = rest
        .find(|c: char| c.is_ascii_digit())
        .unwrap_or(rest.len());
    let unit = match &rest[..unit_len] {
        "ms" => Duration::from_millis(1),
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        "d" => Duration::from_secs(86_400),
        _ => return None,
    };
    let part = u32::try_from(n).ok().and_then(|n| unit.checked_mul(n))?;
    Some((part, &rest[unit_len..]))
}

/// An IP network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            _ => ip,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ValueError::Network { text: s.into() };
        let (ip, prefix) = match s.trim().split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = ip.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A secret the operator hands Hop (a join token): kept as given, never shown by `Debug`, so a
/// settings struct that holds one can be logged or printed in a panic without leaking it. It has
/// no `==`: where a secret is checked (Auth, against a hash), it is compared in constant time.
#[derive(Clone, Default, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() {
            "Secret(<empty>)"
        } else {
            "Secret(<redacted>)"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        for bad in ["", "h", "10", "1x", "99999999999999999999h", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cidrs() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.0.0.1".parse().unwrap()));
        let one: Cidr = "192.0.2.7".parse().unwrap();
        assert!(
            one.contains("192.0.2.7".parse().unwrap())
                && !one.contains("192.0.2.8".parse().unwrap())
        );
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.1".parse().unwrap()));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(
            v6.contains("2001:db8::1".parse().unwrap())
                && !v6.contains("2001:db9::1".parse().unwrap())
        );
        for bad in ["10.0.0.0/33", "x/8", "::/129", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn addresses() {
        assert_eq!(parse_addr(":3080").unwrap().port(), 3080);
        assert_eq!(
            parse_addr("localhost:1").unwrap().ip().to_string(),
            "127.0.0.1"
        );
        assert!(parse_addr("example.com:1").is_err());
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let s = Secret::new("tok-very-secret-value");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some(Secret(<redacted>))");
        assert_eq!(s.expose(), "tok-very-secret-value");
    }
}
