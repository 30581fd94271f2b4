//! The one-time upgrade of a version-1 audit file, which held every event in its
//! `audit_events` table and one index entry per event, to version 2, where events live in
//! segment files and the indexes are blocks. This module owns moving the records — byte for
//! byte, so every hash still links — into segments, indexing them into blocks, and the single
//! transaction that then drops the old tables and stamps version 2. It must never change
//! a record, and never leave a half-migrated log behind: until that transaction commits the
//! file is still a complete version-1 log, and an interrupted migration starts over.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable};

use super::chain::{decode_record, parse_view};
use super::index::{self, Entry};
use super::segment::{self, Appender, Pending, Segments};
use super::tables::{
    self, AUDIT_SCHEMA_VERSION, BLOCKS, BY_SESSION, BY_TIME, BY_TYPE, BY_USER, EVENTS,
    LAST_SEQ_KEY, META, RUNS, SCHEMA_VERSION_KEY, SEGMENTS,
};
use crate::error::StorageError;
use crate::redb_backend::map_redb;

/// Records buffered before a write.
const FLUSH_BYTES: usize = 4 << 20;
/// Events per index run.
const RUN: usize = 65_536;

/// Moves the events of the version-1 file `path` into segments under `dir` and stamps the file
/// version 2.
pub(crate) fn from_v1(path: &Path, db: &Database, dir: &Path) -> Result<(), StorageError> {
    let err = |e: redb::Error| map_redb(path, e);
    segment::fresh_dir(dir)?;
    // What an interrupted upgrade indexed goes too.
    let txn = tables::begin_durable(path, db)?;
    txn.delete_table(BLOCKS).map_err(|e| err(e.into()))?;
    txn.delete_table(RUNS).map_err(|e| err(e.into()))?;
    txn.commit().map_err(|e| err(e.into()))?;
    let segments = Segments::new(dir.to_owned(), Vec::new(), 0);
    let (moved, last_seq) = {
        let txn = db.begin_read().map_err(|e| err(e.into()))?;
        let events = txn.open_table(EVENTS).map_err(|e| err(e.into()))?;
        let mut copier = Copier::new(db, &segments);
        for entry in events.iter().map_err(|e| err(e.into()))? {
            let (key, value) = entry.map_err(|e| err(e.into()))?;
            copier.push(path, key.value(), value.value())?;
        }
        copier.finish()?
    };
    let txn = tables::begin_durable(path, db)?;
    {
        let mut meta = txn.open_table(META).map_err(|e| err(e.into()))?;
        let recorded = meta
            .get(LAST_SEQ_KEY)
            .map_err(|e| err(e.into()))?
            .map_or(0, |v| v.value());
        meta.insert(LAST_SEQ_KEY, recorded.max(last_seq))
            .map_err(|e| err(e.into()))?;
        meta.insert(SCHEMA_VERSION_KEY, AUDIT_SCHEMA_VERSION)
            .map_err(|e| err(e.into()))?;
    }
    txn.delete_table(EVENTS).map_err(|e| err(e.into()))?;
    txn.delete_table(SEGMENTS).map_err(|e| err(e.into()))?;
    txn.delete_table(BY_TIME).map_err(|e| err(e.into()))?;
    txn.delete_table(BY_USER).map_err(|e| err(e.into()))?;
    txn.delete_table(BY_SESSION).map_err(|e| err(e.into()))?;
    txn.delete_table(BY_TYPE).map_err(|e| err(e.into()))?;
    txn.commit().map_err(|e| err(e.into()))?;
    tracing::info!(
        path = %path.display(),
        segments = %dir.display(),
        events = moved,
        "audit log upgraded: events moved into segment files"
    );
    Ok(())
}

/// Copies records in seq order into segments (a new segment at each new chain and after any
/// gap in the seqs, so a segment's seqs stay contiguous) and indexes them in runs.
struct Copier<'a> {
    db: &'a Database,
    entries: Vec<Entry>,
    segments: &'a Segments,
    appender: Option<Appender>,
    pending: Pending,
    next_seq: u64,
    moved: u64,
}

impl<'a> Copier<'a> {
    fn new(db: &'a Database, segments: &'a Segments) -> Self {
        Self {
            db,
            entries: Vec::new(),
            segments,
            appender: None,
            pending: Pending::default(),
            next_seq: 0,
            moved: 0,
        }
    }

    fn push(&mut self, path: &Path, seq: u64, record: &[u8]) -> Result<(), StorageError> {
        let corrupt = |detail: String| StorageError::Corrupt {
            path: path.to_owned(),
            detail: format!("audit event {seq}: {detail}"),
        };
        let parsed = decode_record(record).map_err(corrupt)?;
        let view = parse_view(parsed.canonical).map_err(corrupt)?;
        let same_segment = self
            .appender
            .as_ref()
            .is_some_and(|a| a.chain() == view.chain && seq == self.next_seq);
        if !same_segment {
            self.flush()?;
            if let Some(done) = self.appender.take() {
                done.seal();
            }
            self.appender = Some(Appender::create(self.segments, &view.chain, seq, None)?);
        }
        let time_us = view
            .time_us()
            .ok_or_else(|| corrupt("bad time".to_owned()))?;
        self.entries.push(Entry {
            time_us,
            seq,
            event_type: view.event.into_owned(),
            user: view.user.into_owned(),
            session_id: view.session_id.into_owned(),
            v7: super::id_block::v7_parts(&view.id),
            id: view.id.into_owned(),
            // Version 1 indexed every id; keep them all findable.
            fresh_id: false,
        });
        self.pending.push(record);
        self.next_seq = seq + 1;
        self.moved += 1;
        if self.pending.frames.len() >= FLUSH_BYTES || self.entries.len() >= RUN {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the buffered records, then indexes them.
    fn flush(&mut self) -> Result<(), StorageError> {
        let Some(appender) = self.appender.as_mut() else {
            return Ok(());
        };
        if self.pending.relative.is_empty() {
            return Ok(());
        }
        appender.write(&self.pending).map_err(|e| match e {
            segment::AppendError::NotWritten(err) | segment::AppendError::Wedged(err) => err,
        })?;
        self.pending = Pending::default();
        index::commit_run(self.db, &self.entries).map_err(|e| map_redb(&self.segments.dir, e))?;
        self.entries.clear();
        Ok(())
    }

    /// Writes what is left; returns how many records moved and the last seq.
    fn finish(mut self) -> Result<(u64, u64), StorageError> {
        self.flush()?;
        if let Some(done) = self.appender.take() {
            done.seal();
        }
        Ok((self.moved, self.next_seq.saturating_sub(1)))
    }
}
