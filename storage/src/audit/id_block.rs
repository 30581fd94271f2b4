//! The id index of time-ordered ids, in blocks: producers' ids that are UUID v7 in their
//! canonical text (what Hop's agents' events carry: `hop_api::ids`) are indexed one block per
//! (millisecond of the id, run) instead of one B-tree entry per event, in the blocks table under
//! dimension [`DIM_ID`] (which no search reads; a run's row lists them, so retention removes
//! them with the run). Any other id keeps its entry in the `audit_by_id` table.
//!
//! A block is a tag byte [`ID_TAG`], the smallest seq of its entries (u64 LE), then per entry
//! the id's 10 bytes after its millisecond and the seq minus that base (u32 LE): 14 bytes an
//! entry. This module owns that encoding, the mapping of an id's text to its millisecond and
//! its other bytes (one-to-one: only the lowercase hyphenated form qualifies, so two different
//! texts never meet in a block), and the look-ups. It does no IO but through the table it is
//! handed, and must never answer "absent" for an id one of its blocks holds.

use redb::{ReadableTable, StorageError as RedbStorageError};

use super::index::DIM_ID;

/// The first byte of an id block.
pub(crate) const ID_TAG: u8 = 5;
const HEADER_LEN: usize = 9;
const ENTRY_LEN: usize = 14;
/// The most entries in one block (9 + 1,100 × 14 = 15,409 bytes: a block and its key fit a
/// 16 KiB page, as posting blocks do).
pub(crate) const MAX_ENTRIES: usize = 1100;
const _: () = assert!(HEADER_LEN + MAX_ENTRIES * ENTRY_LEN <= 16 * 1024 - 480);

/// The bytes of an id after its 48-bit millisecond.
pub(crate) type Rest = [u8; 10];

/// A producer's id as the log's maps key it: its millisecond and other bytes when it is a
/// canonical v7 (parsed once, when the event is prepared: [`v7_parts`]), else its text. The
/// mapping is one-to-one, so two different ids never compare equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum IdRef<'a> {
    V7(u64, Rest),
    Text(&'a str),
}

impl<'a> IdRef<'a> {
    /// `id` keyed by the parts [`v7_parts`] found in it (`None`: not a canonical v7).
    pub(crate) fn new(id: &'a str, v7: Option<(u64, Rest)>) -> Self {
        match v7 {
            Some((ms, rest)) => IdRef::V7(ms, rest),
            None => IdRef::Text(id),
        }
    }
}

/// The millisecond and the other bytes of `id`, when it is a UUID v7 written in canonical form
/// (lowercase, hyphenated); `None` for any other id.
pub(crate) fn v7_parts(id: &str) -> Option<(u64, Rest)> {
    let u = uuid::Uuid::try_parse(id).ok()?;
    if u.get_version_num() != 7 {
        return None;
    }
    let mut canonical = [0u8; uuid::fmt::Hyphenated::LENGTH];
    if u.hyphenated().encode_lower(&mut canonical).as_bytes() != id.as_bytes() {
        return None;
    }
    let b = u.as_bytes();
    let ms = u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]]);
    let mut rest = [0u8; 10];
    rest.copy_from_slice(&b[6..]);
    Some((ms, rest))
}

/// Encodes `entries` (at most [`MAX_ENTRIES`], seqs within `u32::MAX` of the smallest, as a
/// run's are) as one block; `None` if a seq does not fit (the caller keeps those in the id
/// table instead).
pub(crate) fn encode(entries: &[(Rest, u64)]) -> Option<Vec<u8>> {
    let base = entries.iter().map(|&(_, seq)| seq).min().unwrap_or(0);
    let mut out = Vec::with_capacity(HEADER_LEN + entries.len() * ENTRY_LEN);
    out.push(ID_TAG);
    out.extend_from_slice(&base.to_le_bytes());
    for (rest, seq) in entries {
        out.extend_from_slice(rest);
        out.extend_from_slice(&u32::try_from(seq - base).ok()?.to_le_bytes());
    }
    Some(out)
}

/// A block's bytes that are not an id block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DamagedIdBlock {
    pub(crate) len: usize,
}

/// The seq `rest` has in `block`, if it is there.
pub(crate) fn find(block: &[u8], rest: &Rest) -> Result<Option<u64>, DamagedIdBlock> {
    let damaged = DamagedIdBlock { len: block.len() };
    let (header, body) = block.split_at_checked(HEADER_LEN).ok_or(damaged)?;
    let (tag, base) = header.split_first().ok_or(damaged)?;
    if *tag != ID_TAG || !body.len().is_multiple_of(ENTRY_LEN) {
        return Err(damaged);
    }
    let base = u64::from_le_bytes(base.try_into().map_err(|_| damaged)?);
    Ok(body.chunks_exact(ENTRY_LEN).find_map(|e| {
        let (id, delta) = e.split_at(10);
        (id == rest).then(|| {
            let delta: [u8; 4] = delta.try_into().unwrap_or_default();
            base.saturating_add(u64::from(u32::from_le_bytes(delta)))
        })
    }))
}

/// What a look-up in the id blocks can fail with.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IdLookupError {
    #[error(transparent)]
    Storage(#[from] RedbStorageError),
    #[error("audit id block of millisecond {ms} is damaged ({len} bytes)")]
    Damaged { ms: u64, len: usize },
}

/// The seq of the id whose parts are `(ms, rest)`, from the id blocks of `table`.
pub(crate) fn lookup<T>(table: &T, (ms, rest): (u64, &Rest)) -> Result<Option<u64>, IdLookupError>
where
    T: ReadableTable<(u8, &'static [u8], u64, u64), &'static [u8]>,
{
    let empty: &[u8] = &[];
    for item in table.range((DIM_ID, empty, ms, 0)..=(DIM_ID, empty, ms, u64::MAX))? {
        let (_, value) = item?;
        let bytes = value.value();
        match find(bytes, rest) {
            Ok(Some(seq)) => return Ok(Some(seq)),
            Ok(None) => {}
            Err(DamagedIdBlock { len }) => return Err(IdLookupError::Damaged { ms, len }),
        }
    }
    Ok(None)
}

/// The greatest millisecond of any id block in `table`: an id of a later millisecond is in
/// none of them.
pub(crate) fn newest_ms<T>(table: &T) -> Result<Option<u64>, RedbStorageError>
where
    T: ReadableTable<(u8, &'static [u8], u64, u64), &'static [u8]>,
{
    // Ids are the last dimension, so the table's last key is the newest id block, if any.
    Ok(table.last()?.and_then(|(k, _)| {
        let (dim, _, ms, _) = k.value();
        (dim == DIM_ID).then_some(ms)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0190a5c4-7d2e-7b3a-9f10-3c5d2e8a4b61";

    #[test]
    fn only_canonical_v7_ids_have_parts() {
        let (ms, rest) = v7_parts(ID).unwrap();
        assert_eq!(ms, 0x0190_a5c4_7d2e);
        assert_eq!(rest[0], 0x7b);
        for other in [
            "0190A5C4-7D2E-7B3A-9F10-3C5D2E8A4B61",
            "0190a5c47d2e7b3a9f103c5d2e8a4b61",
            "{0190a5c4-7d2e-7b3a-9f10-3c5d2e8a4b61}",
            "0190a5c4-7d2e-4b3a-9f10-3c5d2e8a4b61",
            "ev-000001",
            "",
        ] {
            assert_eq!(v7_parts(other), None, "{other}");
        }
    }

    #[test]
    fn a_block_finds_each_of_its_ids_and_no_other() {
        let entries: Vec<(Rest, u64)> = (0..MAX_ENTRIES as u64)
            .map(|i| {
                let mut r = [0u8; 10];
                r[..8].copy_from_slice(&i.to_le_bytes());
                (r, 1_000_000 + i * 3)
            })
            .collect();
        let block = encode(&entries).unwrap();
        for (rest, seq) in &entries {
            assert_eq!(find(&block, rest), Ok(Some(*seq)));
        }
        assert_eq!(find(&block, &[0xff; 10]), Ok(None));
        // A seq too far from the base does not pack.
        assert_eq!(encode(&[([0; 10], 0), ([1; 10], 1 << 33)]), None);
    }

    #[test]
    fn every_prefix_and_damaged_bytes_are_errors_never_panics() {
        let block = encode(&[([1; 10], 7), ([2; 10], 9)]).unwrap();
        for n in 0..block.len() {
            let cut = &block[..n];
            let r = find(cut, &[2; 10]);
            assert!(
                r.is_err() || n == HEADER_LEN || n == HEADER_LEN + ENTRY_LEN,
                "{n}"
            );
        }
        let mut wrong_tag = block.clone();
        wrong_tag[0] = 3;
        assert!(find(&wrong_tag, &[1; 10]).is_err());
    }
}
