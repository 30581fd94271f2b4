//! The bytes of a posting block: the (time, seq) pairs of one (dimension, value, second) of one
//! run. This module owns their encoding and reads both encodings the log has written:
//! - **packed** (what the indexer writes): a tag byte [`PACKED_TAG`], the block's base seq (u64
//!   LE), then per pair the microsecond within the block's second (u32 LE) and the seq minus the
//!   base (u32 LE) — 8 bytes a pair, `9 + 8n` bytes in all, an odd length;
//! - **wide** (written before packing, and still what a pair that does not pack falls back to):
//!   per pair the time and the seq as u64 LE — 16 bytes a pair, a length that is a multiple
//!   of 16. The two can never be mistaken for each other, so old blocks are read in place.
//!
//! A block holds at most [`MAX_PAIRS`] pairs, so that a block and its key fit one 16 KiB page
//! of redb (which sizes pages in powers of two: a value just over a power of two would take a
//! page twice its size); a run's pairs of one second beyond that go in further chunks. It does
//! no IO, and must never write a block it could not read back.

use super::index::BUCKET_US;

/// The first byte of a packed block.
pub(crate) const PACKED_TAG: u8 = 3;
/// The most pairs in one block: 9 + 1,984 × 8 = 15,881 bytes, leaving about 500 bytes of a
/// 16 KiB page for the leaf's header and the key.
pub(crate) const MAX_PAIRS: usize = 1984;
const _: () = assert!(HEADER_LEN + MAX_PAIRS * PACKED_PAIR_LEN <= 16 * 1024 - 480);

const HEADER_LEN: usize = 9;
const PACKED_PAIR_LEN: usize = 8;
const WIDE_PAIR_LEN: usize = 16;

/// Encodes `pairs` (each within `bucket`'s second) as one block: packed when every pair fits
/// (a seq within `u32::MAX` of the smallest, which a run of at most 64k events always is), wide
/// otherwise.
pub(crate) fn encode(bucket: u64, pairs: &[(u64, u64)]) -> Vec<u8> {
    packed(bucket, pairs).unwrap_or_else(|| wide(pairs))
}

fn packed(bucket: u64, pairs: &[(u64, u64)]) -> Option<Vec<u8>> {
    let second_start = bucket.checked_mul(BUCKET_US)?;
    let base = pairs.iter().map(|&(_, seq)| seq).min().unwrap_or(0);
    let mut out = Vec::with_capacity(HEADER_LEN + pairs.len() * PACKED_PAIR_LEN);
    out.push(PACKED_TAG);
    out.extend_from_slice(&base.to_le_bytes());
    for &(time, seq) in pairs {
        let micros = time.checked_sub(second_start).filter(|m| *m < BUCKET_US)?;
        let delta = u32::try_from(seq - base).ok()?;
        // Below BUCKET_US (one million), so it fits.
        out.extend_from_slice(&(micros as u32).to_le_bytes());
        out.extend_from_slice(&delta.to_le_bytes());
    }
    Some(out)
}

fn wide(pairs: &[(u64, u64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pairs.len() * WIDE_PAIR_LEN);
    for &(time, seq) in pairs {
        out.extend_from_slice(&time.to_le_bytes());
        out.extend_from_slice(&seq.to_le_bytes());
    }
    out
}

/// A block's bytes that are neither encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DamagedBlock {
    pub(crate) len: usize,
}

/// The (time, seq) pairs of a block of `bucket`'s second, in the order they were written.
pub(crate) fn decode(bucket: u64, bytes: &[u8]) -> Result<Pairs<'_>, DamagedBlock> {
    let damaged = DamagedBlock { len: bytes.len() };
    if bytes.len().is_multiple_of(WIDE_PAIR_LEN) {
        return Ok(Pairs::Wide(bytes.chunks_exact(WIDE_PAIR_LEN)));
    }
    let (header, body) = bytes.split_at_checked(HEADER_LEN).ok_or(damaged)?;
    let (tag, base) = header.split_first().ok_or(damaged)?;
    if *tag != PACKED_TAG || !body.len().is_multiple_of(PACKED_PAIR_LEN) {
        return Err(damaged);
    }
    let base = u64::from_le_bytes(base.try_into().map_err(|_| damaged)?);
    Ok(Pairs::Packed {
        second_start: bucket.saturating_mul(BUCKET_US),
        base,
        pairs: body.chunks_exact(PACKED_PAIR_LEN),
    })
}

/// The pairs of one block.
pub(crate) enum Pairs<'a> {
    Wide(std::slice::ChunksExact<'a, u8>),
    Packed {
        second_start: u64,
        base: u64,
        pairs: std::slice::ChunksExact<'a, u8>,
    },
}

impl Iterator for Pairs<'_> {
    type Item = (u64, u64);

    fn next(&mut self) -> Option<(u64, u64)> {
        match self {
            Pairs::Wide(chunks) => {
                let c = chunks.next()?;
                Some((le_u64(&c[..8]), le_u64(&c[8..])))
            }
            Pairs::Packed {
                second_start,
                base,
                pairs,
            } => {
                let c = pairs.next()?;
                let micros = u64::from(le_u32(&c[..4]));
                let delta = u64::from(le_u32(&c[4..]));
                Some((
                    second_start.saturating_add(micros),
                    base.saturating_add(delta),
                ))
            }
        }
    }
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    u64::from_le_bytes(a)
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(b);
    u32::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(bucket: u64, pairs: &[(u64, u64)]) -> Vec<(u64, u64)> {
        decode(bucket, &encode(bucket, pairs)).unwrap().collect()
    }

    #[test]
    fn packed_blocks_round_trip_at_eight_bytes_a_pair() {
        let bucket = 1_765_000_000;
        let start = bucket * BUCKET_US;
        let pairs = vec![(start, 70), (start + 5, 12), (start + 999_999, 65_600)];
        let bytes = encode(bucket, &pairs);
        assert_eq!(bytes.len(), 9 + 3 * 8);
        assert_eq!(bytes[0], PACKED_TAG);
        assert_eq!(round_trip(bucket, &pairs), pairs);
    }

    #[test]
    fn pairs_that_do_not_pack_fall_back_to_wide_and_still_round_trip() {
        let bucket = 10;
        let start = bucket * BUCKET_US;
        // A seq more than u32::MAX above the smallest.
        let far = vec![(start, 1), (start + 1, 1 + (1 << 33))];
        assert_eq!(encode(bucket, &far).len(), 32);
        assert_eq!(round_trip(bucket, &far), far);
        // A time outside the block's second.
        let outside = vec![(start + BUCKET_US, 4)];
        assert_eq!(encode(bucket, &outside).len(), 16);
        assert_eq!(round_trip(bucket, &outside), outside);
    }

    #[test]
    fn wide_blocks_written_before_packing_are_read_in_place() {
        let pairs = [(7_000_123u64, 9u64), (7_000_500, 3)];
        let mut old = Vec::new();
        for (t, s) in pairs {
            old.extend_from_slice(&t.to_le_bytes());
            old.extend_from_slice(&s.to_le_bytes());
        }
        let read: Vec<_> = decode(7, &old).unwrap().collect();
        assert_eq!(read, pairs);
    }

    #[test]
    fn an_empty_block_has_no_pairs_in_either_encoding() {
        assert_eq!(decode(1, &[]).unwrap().count(), 0);
        assert_eq!(round_trip(1, &[]), vec![]);
    }

    #[test]
    fn every_prefix_and_damaged_bytes_are_refused_or_read_without_panic() {
        let bucket = 3;
        let start = bucket * BUCKET_US;
        let pairs: Vec<_> = (0..5).map(|i| (start + i, 100 + i)).collect();
        let bytes = encode(bucket, &pairs);
        for cut in 0..bytes.len() {
            // A prefix is damaged unless it happens to be a whole block of either encoding.
            if let Ok(p) = decode(bucket, &bytes[..cut]) {
                let _ = p.count();
            }
        }
        let mut wrong_tag = bytes.clone();
        wrong_tag[0] = 9;
        assert_eq!(
            decode(bucket, &wrong_tag).err(),
            Some(DamagedBlock { len: bytes.len() })
        );
        assert!(decode(bucket, &bytes[..bytes.len() - 3]).is_err());
    }
}
