//! The hash chain and the stored record. This module owns how one stored event is laid out in
//! the events table (a version byte, its 32-byte hash, its canonical JSON), how the hash links
//! it to its predecessor (`sha256(prev_hash || canonical)`), where a chain starts
//! (`sha256(chain name)`), and how a UTC day names its chain. It must never change the meaning
//! of an existing record version.
//!
//! Record layout, version 1:
//!
//! | offset | size | field                                                        |
//! |--------|------|--------------------------------------------------------------|
//! | 0      | 1    | record format version (`1`)                                  |
//! | 1      | 32   | the event's hash                                             |
//! | 33     | ..   | canonical JSON: the stored event without `hash` (see `event`) |

use std::borrow::Cow;

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The record format version this code writes.
pub(crate) const RECORD_VERSION: u8 = 1;
const HEADER_LEN: usize = 33;
const MICROS_PER_DAY: u64 = 86_400 * 1_000_000;

/// A stored record, borrowing from the stored bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Record<'a> {
    pub(crate) hash: &'a [u8; 32],
    pub(crate) canonical: &'a [u8],
}

#[cfg(test)]
pub(crate) fn encode_record(hash: &[u8; 32], canonical: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + canonical.len());
    out.push(RECORD_VERSION);
    out.extend_from_slice(hash);
    out.extend_from_slice(canonical);
    out
}

/// Builds a record in a buffer of its own (see [`append_record`]). Returns the record and the
/// hash.
#[cfg(test)]
pub(crate) fn build_record(
    prev: &[u8; 32],
    capacity: usize,
    write_canonical: impl FnOnce(&mut Vec<u8>),
) -> (Vec<u8>, [u8; 32]) {
    let mut out = Vec::with_capacity(HEADER_LEN + capacity);
    out.push(RECORD_VERSION);
    out.extend_from_slice(&[0; 32]);
    write_canonical(&mut out);
    let hash = link_hash(prev, &out[HEADER_LEN..]);
    out[1..HEADER_LEN].copy_from_slice(&hash);
    (out, hash)
}

/// Appends a record to `out` — a version byte, room for the hash, then the canonical JSON that
/// `write_canonical` appends — fills in its link hash from `prev`, and returns the hash.
pub(crate) fn append_record(
    out: &mut Vec<u8>,
    prev: &[u8; 32],
    write_canonical: impl FnOnce(&mut Vec<u8>),
) -> [u8; 32] {
    let start = out.len();
    out.push(RECORD_VERSION);
    out.extend_from_slice(&[0; 32]);
    write_canonical(out);
    let hash = link_hash(prev, &out[start + HEADER_LEN..]);
    out[start + 1..start + HEADER_LEN].copy_from_slice(&hash);
    hash
}

/// The canonical JSON of a record.
pub(crate) fn record_canonical(record: &[u8]) -> &[u8] {
    record.get(HEADER_LEN..).unwrap_or_default()
}

/// Splits a stored record; the error says what is wrong with the bytes.
pub(crate) fn decode_record(bytes: &[u8]) -> Result<Record<'_>, String> {
    let Some((&version, rest)) = bytes.split_first() else {
        return Err("record is empty".to_owned());
    };
    if version != RECORD_VERSION {
        return Err(format!("unknown record format version {version}"));
    }
    let Some((hash, canonical)) = rest.split_first_chunk::<32>() else {
        return Err(format!(
            "record is {} bytes, shorter than its {HEADER_LEN}-byte header",
            bytes.len()
        ));
    };
    Ok(Record { hash, canonical })
}

/// `sha256(prev || canonical)`: the link from one event to the next.
pub(crate) fn link_hash(prev: &[u8; 32], canonical: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(prev);
    hasher.update(canonical);
    hasher.finalize().into()
}

/// What the first event of chain `name` links to: `sha256(name)`.
pub(crate) fn genesis(name: &str) -> [u8; 32] {
    Sha256::digest(name.as_bytes()).into()
}

/// Days since the Unix epoch of a time in µs.
pub(crate) fn day_of(time_us: u64) -> u64 {
    time_us / MICROS_PER_DAY
}

/// The chain name of a day since the epoch: `YYYY-MM-DD` (UTC).
pub(crate) fn chain_name(day: u64) -> String {
    let t = super::event::us_to_datetime(day.saturating_mul(MICROS_PER_DAY));
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}

/// The day since the epoch a chain name stands for, `None` if it is not one.
pub(crate) fn chain_day(name: &str) -> Option<u64> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(name, &format).ok()?;
    let t = date.midnight().assume_utc();
    super::event::datetime_to_us(t).map(day_of)
}

/// The fields of a stored event that linking and indexing need, read without building the
/// whole event.
#[derive(Debug, Deserialize)]
pub(crate) struct EventView<'a> {
    #[serde(borrow)]
    pub(crate) event: Cow<'a, str>,
    #[serde(borrow)]
    pub(crate) time: Cow<'a, str>,
    #[serde(borrow)]
    pub(crate) id: Cow<'a, str>,
    #[serde(default, borrow)]
    pub(crate) user: Cow<'a, str>,
    #[serde(default, borrow)]
    pub(crate) session_id: Cow<'a, str>,
    pub(crate) seq: u64,
    #[serde(borrow)]
    pub(crate) chain: Cow<'a, str>,
    #[serde(borrow)]
    pub(crate) prev_hash: Cow<'a, str>,
}

impl EventView<'_> {
    /// The event time in µs since the epoch, `None` if it does not parse.
    pub(crate) fn time_us(&self) -> Option<u64> {
        let t =
            time::OffsetDateTime::parse(&self.time, &time::format_description::well_known::Rfc3339)
                .ok()?;
        super::event::datetime_to_us(t)
    }
}

pub(crate) fn parse_view(canonical: &[u8]) -> Result<EventView<'_>, String> {
    serde_json::from_slice(canonical).map_err(|err| format!("event JSON does not parse: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_reject_what_was_not_written() {
        let (built, hash) = build_record(&[1; 32], 2, |out| out.extend_from_slice(b"{}"));
        assert_eq!(built, encode_record(&link_hash(&[1; 32], b"{}"), b"{}"));
        assert_eq!(decode_record(&built).unwrap().hash, &hash);
        assert_eq!(record_canonical(&built), b"{}");
        let bytes = encode_record(&[9; 32], b"{}");
        let record = decode_record(&bytes).unwrap();
        assert_eq!(record.hash, &[9; 32]);
        assert_eq!(record.canonical, b"{}");
        for len in 0..HEADER_LEN {
            assert!(decode_record(&bytes[..len]).is_err());
        }
        let mut newer = bytes;
        newer[0] = 2;
        assert!(decode_record(&newer).unwrap_err().contains("version 2"));
    }

    #[test]
    fn chains_are_named_by_utc_day() {
        let day = day_of(1_700_000_000_000_000);
        assert_eq!(chain_name(day), "2023-11-14");
        assert_eq!(chain_day("2023-11-14"), Some(day));
        assert_eq!(chain_name(0), "1970-01-01");
        assert_eq!(chain_day("not-a-day"), None);
    }

    #[test]
    fn genesis_is_sha256_of_the_name() {
        assert_eq!(
            hex::encode(genesis("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
