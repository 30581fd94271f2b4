//! The on-disk layout of one stored record. This module owns the versioned fixed header that
//! precedes each value in the redb backend (format version, flags, revision, lease expiry) and
//! its exact bytes; it must never change the meaning of an existing version — a new layout gets
//! a new version byte and the old one stays decodable.
//!
//! Layout of version 1, all integers little-endian:
//!
//! | offset | size | field                                                     |
//! |--------|------|-----------------------------------------------------------|
//! | 0      | 1    | record format version (`1`)                               |
//! | 1      | 1    | flags: bit 0 = has expiry; other bits must be zero         |
//! | 2      | 8    | revision                                                  |
//! | 10     | 8    | expiry, nanoseconds since the Unix epoch (0 if no expiry) |
//! | 18     | ..   | value bytes                                               |

use std::time::{Duration, SystemTime};

/// The record format version this code writes.
pub(crate) const RECORD_VERSION: u8 = 1;
const FLAG_HAS_EXPIRY: u8 = 0b1;
const HEADER_LEN: usize = 18;

/// A decoded record, borrowing its value from the stored bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record<'a> {
    pub(crate) revision: u64,
    pub(crate) expires: Option<SystemTime>,
    pub(crate) value: &'a [u8],
}

/// Nanoseconds since the Unix epoch, saturating: times before the epoch are 0, times after
/// the year 2554 are `u64::MAX`.
pub(crate) fn to_unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub(crate) fn from_unix_nanos(nanos: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos)
}

pub(crate) fn encode(revision: u64, expires: Option<SystemTime>, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + value.len());
    out.push(RECORD_VERSION);
    out.push(if expires.is_some() {
        FLAG_HAS_EXPIRY
    } else {
        0
    });
    out.extend_from_slice(&revision.to_le_bytes());
    out.extend_from_slice(&expires.map_or(0, to_unix_nanos).to_le_bytes());
    out.extend_from_slice(value);
    out
}

/// Decodes a record; the error says what is wrong with the bytes.
pub(crate) fn decode(bytes: &[u8]) -> Result<Record<'_>, String> {
    let Some((header, value)) = bytes.split_first_chunk::<HEADER_LEN>() else {
        return Err(format!(
            "record is {} bytes, shorter than its {HEADER_LEN}-byte header",
            bytes.len()
        ));
    };
    let [version, flags, rest @ ..] = header;
    if *version != RECORD_VERSION {
        return Err(format!("unknown record format version {version}"));
    }
    if flags & !FLAG_HAS_EXPIRY != 0 {
        return Err(format!("unknown record flags {flags:#04x}"));
    }
    let (revision, expiry) = rest.split_at(8);
    let revision = u64::from_le_bytes(revision.try_into().map_err(|_| "short revision")?);
    let expiry = u64::from_le_bytes(expiry.try_into().map_err(|_| "short expiry")?);
    let expires = (flags & FLAG_HAS_EXPIRY != 0).then(|| from_unix_nanos(expiry));
    Ok(Record {
        revision,
        expires,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_1_bytes_are_stable() {
        let expires = from_unix_nanos(0x0102_0304_0506_0708);
        let bytes = encode(0x1122_3344_5566_7788, Some(expires), b"hi");
        assert_eq!(
            bytes,
            [
                1, 1, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0x08, 0x07, 0x06, 0x05, 0x04,
                0x03, 0x02, 0x01, b'h', b'i'
            ]
        );
        let bytes = encode(7, None, b"");
        assert_eq!(
            bytes,
            [1, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn round_trips() {
        let expires = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        for (rev, exp, value) in [
            (1, None, &b""[..]),
            (u64::MAX, Some(expires), &b"value"[..]),
            (42, Some(SystemTime::UNIX_EPOCH), &[0u8; 300][..]),
        ] {
            let bytes = encode(rev, exp, value);
            let record = decode(&bytes).unwrap();
            assert_eq!(
                record,
                Record {
                    revision: rev,
                    expires: exp,
                    value
                }
            );
        }
    }

    #[test]
    fn rejects_what_it_did_not_write() {
        let good = encode(1, None, b"x");
        for len in 0..HEADER_LEN {
            assert!(decode(&good[..len]).is_err(), "prefix of {len} bytes");
        }
        let mut newer = good.clone();
        newer[0] = 2;
        assert!(decode(&newer).unwrap_err().contains("version 2"));
        let mut flags = good;
        flags[1] = 0x80;
        assert!(decode(&flags).unwrap_err().contains("flags"));
    }

    #[test]
    fn times_saturate() {
        assert_eq!(
            to_unix_nanos(SystemTime::UNIX_EPOCH - Duration::from_secs(1)),
            0
        );
        assert_eq!(
            to_unix_nanos(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::MAX / 2)),
            u64::MAX
        );
    }
}
