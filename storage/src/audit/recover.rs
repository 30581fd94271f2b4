//! Opening a log again. This module owns reading back, from the segments and the index file,
//! what the writer and the indexer need to go on: the chain head (next seq, chain, last hash)
//! and the index entries of the durable events after the index watermark. It also finishes a
//! purge a crash interrupted (segments wholly behind the purge boundary are deleted). It must
//! never hand out a seq again, even one whose event was removed behind hop's back.

use redb::ReadableDatabase;

use super::chain::{chain_day, decode_record, parse_view};
use super::index::Entry;
use super::segment::{self, Segment, frame_corrupt};
use super::tables::{self, INDEXED_KEY, LAST_SEQ_KEY, META, PURGED};
use super::writer::{Head, Shared};
use crate::error::StorageError;

/// The head and the unindexed entries of the log behind `shared`.
pub(crate) fn recover(shared: &Shared) -> Result<(Head, Vec<Entry>), StorageError> {
    let txn = shared.db.begin_read().map_err(|e| shared.err(e))?;
    let meta = txn.open_table(META).map_err(|e| shared.err(e))?;
    let meta_value = |key| -> Result<u64, StorageError> {
        Ok(meta
            .get(key)
            .map_err(|e| shared.err(e))?
            .map_or(0, |v| v.value()))
    };
    let last_indexed = meta_value(LAST_SEQ_KEY)?;
    let indexed_through = meta_value(INDEXED_KEY)?;
    let purged = txn.open_table(PURGED).map_err(|e| shared.err(e))?;
    let boundary = tables::read_boundary(&shared.path, &purged)?;
    drop(txn);
    if let Some(b) = &boundary {
        finish_purge(shared, b.through_seq)?;
    }

    let unindexed = unindexed_entries(shared, indexed_through)?;
    if !unindexed.is_empty() {
        tracing::debug!(events = unindexed.len(), "audit index backlog re-read");
    }
    let last = shared.segments.durable_through();
    let floor = last_indexed.max(boundary.as_ref().map_or(0, |b| b.through_seq));
    if let Some(record) = shared.segments.record(last)? {
        let corrupt = |detail| shared.corrupt(format!("audit event {last}: {detail}"));
        let parsed = decode_record(&record).map_err(corrupt)?;
        let view = parse_view(parsed.canonical).map_err(corrupt)?;
        let day = chain_day(&view.chain).ok_or_else(|| {
            shared.corrupt(format!("audit chain name {:?} is not a day", view.chain))
        })?;
        // A seq is never reused, even if the events after the last one were removed.
        let seq = view.seq.max(last).max(floor);
        return Ok((
            Head::after(seq, day, view.chain.into_owned(), *parsed.hash),
            unindexed,
        ));
    }
    if let Some(b) = boundary {
        let hash = hex::decode(&b.hash)
            .ok()
            .and_then(|h| <[u8; 32]>::try_from(h).ok())
            .ok_or_else(|| shared.corrupt("audit purge boundary has a bad hash".to_owned()))?;
        let day = chain_day(&b.chain).ok_or_else(|| {
            shared.corrupt(format!("audit chain name {:?} is not a day", b.chain))
        })?;
        return Ok((
            Head::after(b.through_seq.max(floor), day, b.chain, hash),
            unindexed,
        ));
    }
    Ok((Head::empty(floor), unindexed))
}

/// The seq up to which the segments hold events: the last segment's first seq plus its frames.
pub(crate) fn durable_end(segments: &[std::sync::Arc<Segment>]) -> Result<u64, StorageError> {
    match segments.last() {
        Some(last) => Ok((last.first_seq + last.listed()?).saturating_sub(1)),
        None => Ok(0),
    }
}

fn unindexed_entries(shared: &Shared, indexed_through: u64) -> Result<Vec<Entry>, StorageError> {
    let mut out = Vec::new();
    for (expected, seg, record) in shared.segments.records_from(indexed_through + 1) {
        let record = record.map_err(|e| frame_corrupt(&seg, &e))?;
        let corrupt = |detail| shared.corrupt(format!("audit event {expected}: {detail}"));
        let parsed = decode_record(&record).map_err(corrupt)?;
        let view = parse_view(parsed.canonical).map_err(corrupt)?;
        let time_us = view
            .time_us()
            .ok_or_else(|| corrupt("bad time".to_owned()))?;
        out.push(Entry {
            time_us,
            seq: view.seq,
            event_type: view.event.into_owned(),
            user: view.user.into_owned(),
            session_id: view.session_id.into_owned(),
            v7: super::id_block::v7_parts(&view.id),
            id: view.id.into_owned(),
            // Whether the log assigned it is not recorded; index it as a producer's.
            fresh_id: false,
        });
    }
    Ok(out)
}

/// Deletes the segments a purge up to `through_seq` committed but did not get to delete.
fn finish_purge(shared: &Shared, through_seq: u64) -> Result<(), StorageError> {
    for seg in shared.segments.snapshot() {
        if shared.segments.end_of(&seg) <= through_seq + 1 {
            shared.segments.remove(seg.first_seq);
            segment::delete_files(&seg)?;
        }
    }
    Ok(())
}
