//! Segment files: where the audit log's events live. This module owns the on-disk layout of
//! the events (append-only segment files, one per chain — a UTC day — unless a day's seqs were
//! interrupted, each beside an offsets
//! file that finds a seq's frame in one read), the registry of segments that readers share with
//! the writer, the appender the writer thread uses, sequential and random reads, and the repair
//! of a segment whose tail a crash cut short. It must never let a reader see bytes past what has
//! been made durable, never shorten a segment except to cut off a torn tail (whose bytes it
//! keeps in a `.torn-<offset>` file beside it), and never reuse a segment file name.
//!
//! Layout (all integers little-endian):
//!
//! - `<dir>/<chain>.<first seq, 20 digits>.seg`: a 16-byte header (`HOPAUDS1`, then the first seq as u64), then one
//!   frame per event in seq order: a u32 length and the `chain` module's record (version byte,
//!   hash, canonical JSON). A segment holds the contiguous seqs from its first to the one before
//!   the next segment's first.
//! - the same name ending `.off`: one u64 per event, the offset of seq `first + i`'s frame. Derived data:
//!   written after the frames are durable, fsynced when the segment is left, and rebuilt from
//!   the frames when it does not match them.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, ErrorKind, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use super::prealloc::Prealloc;
use crate::error::StorageError;
use crate::private_file::PRIVATE_MODE;

/// The first bytes of every segment file.
pub(crate) const MAGIC: &[u8; 8] = b"HOPAUDS1";
/// Header length: the magic and the first seq.
pub(crate) const HEADER_LEN: u64 = 16;
/// A frame's length prefix.
const PREFIX_LEN: u64 = 4;
/// No record is longer (an event is at most 64 KiB; the rest is the chain fields): a longer
/// length prefix is damage, not an event.
pub(crate) const MAX_RECORD_LEN: usize = 1 << 20;
const DATA_EXT: &str = "seg";
/// A segment being created: its header is written and fsynced under this name first.
const NEW_EXT: &str = "new";
const OFFSETS_EXT: &str = "off";

/// One segment: a chain's events.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) chain: String,
    pub(crate) first_seq: u64,
    pub(crate) data_path: PathBuf,
    pub(crate) offsets_path: PathBuf,
    pub(crate) data: File,
    offsets: File,
    /// Bytes of `data` that are durable and whole frames; readers stop here.
    durable_len: AtomicU64,
    /// Purged (set under the append lock): nothing more may be appended to it.
    retired: std::sync::atomic::AtomicBool,
}

impl Segment {
    /// The durable length of the data file.
    pub(crate) fn durable_len(&self) -> u64 {
        self.durable_len.load(Ordering::Acquire)
    }

    /// Where the last listed frame starts (the header's end when none is listed).
    pub(crate) fn offset_of_last(&self) -> Result<u64, StorageError> {
        match self.listed()? {
            0 => Ok(HEADER_LEN),
            n => self
                .offset_of(self.first_seq + n - 1)
                .map_err(|err| frame_corrupt(self, &err)),
        }
    }

    /// How many frames the offsets file lists.
    pub(crate) fn listed(&self) -> Result<u64, StorageError> {
        let len = self
            .offsets
            .metadata()
            .map_err(io_error(&self.offsets_path))?
            .len();
        Ok(len / 8)
    }

    /// The record of `seq`, which must be in this segment and durable.
    fn record(&self, seq: u64) -> Result<Vec<u8>, FrameError> {
        let at = self.offset_of(seq)?;
        read_frame_at(&self.data, at, self.durable_len()).map(|(record, _)| record)
    }

    /// Frames from `offset` up to the durable length, in order.
    pub(crate) fn frames_from(&self, offset: u64) -> Frames<'_> {
        let from = ReadAt {
            file: &self.data,
            at: offset,
        };
        Frames {
            reader: BufReader::with_capacity(256 * 1024, from),
            at: offset,
            end: self.durable_len(),
        }
    }

    /// The offset of `seq`'s frame, from the offsets file.
    pub(crate) fn offset_of(&self, seq: u64) -> Result<u64, FrameError> {
        let mut offset = [0u8; 8];
        self.offsets
            .read_exact_at(
                &mut offset,
                seq.saturating_sub(self.first_seq).saturating_mul(8),
            )
            .map_err(FrameError::Io)?;
        Ok(u64::from_le_bytes(offset))
    }
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("reading the segment failed: {0}")]
    Io(#[source] std::io::Error),
    #[error("frame at offset {offset} is cut short (the segment ends at {end})")]
    Short { offset: u64, end: u64 },
    #[error("frame at offset {offset} claims {len} bytes (at most {MAX_RECORD_LEN}, at least 1)")]
    BadLength { offset: u64, len: u64 },
    #[error("frame at offset {offset} does not hash to the hash it carries (a write cut short)")]
    Inconsistent { offset: u64 },
}

/// Whether a record is whole: it decodes and its hash is the link from the `prev_hash` it
/// names. A write cut short inside space already zero-filled leaves a frame whose length fits
/// but whose bytes are partly zeros; this is how the repair tells it from a whole frame.
fn self_consistent(record: &[u8]) -> bool {
    let Ok(parsed) = super::chain::decode_record(record) else {
        return false;
    };
    let Ok(view) = super::chain::parse_view(parsed.canonical) else {
        return false;
    };
    let prev = hex::decode(view.prev_hash.as_bytes())
        .ok()
        .and_then(|h| <[u8; 32]>::try_from(h).ok());
    prev.is_some_and(|prev| super::chain::link_hash(&prev, parsed.canonical) == *parsed.hash)
}

/// Reads the frame at `offset` of `file`, not past `end`; returns its record and the offset
/// after it.
fn read_frame_at(file: &File, offset: u64, end: u64) -> Result<(Vec<u8>, u64), FrameError> {
    if offset.saturating_add(PREFIX_LEN) > end {
        return Err(FrameError::Short { offset, end });
    }
    let mut prefix = [0u8; 4];
    file.read_exact_at(&mut prefix, offset)
        .map_err(FrameError::Io)?;
    let len = u64::from(u32::from_le_bytes(prefix));
    if len == 0 || len > MAX_RECORD_LEN as u64 {
        return Err(FrameError::BadLength { offset, len });
    }
    let next = offset + PREFIX_LEN + len;
    if next > end {
        return Err(FrameError::Short { offset, end });
    }
    let mut record = vec![0u8; len as usize];
    file.read_exact_at(&mut record, offset + PREFIX_LEN)
        .map_err(FrameError::Io)?;
    Ok((record, next))
}

/// Reads a file forward from a position with positional reads. A segment's `File` is shared by
/// every reader (searches, exports, the indexer, verify) at once, so nothing may read it through
/// the descriptor's one file offset: a seek by one walk would move every other walk, which then
/// reads another part of the file (or the zeros past the frames) as if it were its next frame.
struct ReadAt<'a> {
    file: &'a File,
    at: u64,
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

/// Sequential frames of one segment: (offset, record).
pub(crate) struct Frames<'a> {
    reader: BufReader<ReadAt<'a>>,
    at: u64,
    end: u64,
}

impl Iterator for Frames<'_> {
    type Item = Result<(u64, Vec<u8>), FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.at >= self.end {
            return None;
        }
        let offset = self.at;
        let result = self.read_one(offset);
        match &result {
            Ok(_) => {}
            // A frame that cannot be followed ends the walk: what comes after is unframed.
            Err(_) => self.at = self.end,
        }
        Some(result.map(|record| (offset, record)))
    }
}

impl Frames<'_> {
    fn read_one(&mut self, offset: u64) -> Result<Vec<u8>, FrameError> {
        if offset + PREFIX_LEN > self.end {
            return Err(FrameError::Short {
                offset,
                end: self.end,
            });
        }
        let mut prefix = [0u8; 4];
        self.reader
            .read_exact(&mut prefix)
            .map_err(FrameError::Io)?;
        let len = u64::from(u32::from_le_bytes(prefix));
        if len == 0 || len > MAX_RECORD_LEN as u64 {
            return Err(FrameError::BadLength { offset, len });
        }
        if offset + PREFIX_LEN + len > self.end {
            return Err(FrameError::Short {
                offset,
                end: self.end,
            });
        }
        let mut record = vec![0u8; len as usize];
        self.reader
            .read_exact(&mut record)
            .map_err(FrameError::Io)?;
        self.at = offset + PREFIX_LEN + len;
        Ok(record)
    }
}

/// Appends `record` as a frame to `out`.
pub(crate) fn push_frame(out: &mut Vec<u8>, record: &[u8]) {
    // A record is bounded far below 4 GiB by the event size limit.
    out.extend_from_slice(&(record.len() as u32).to_le_bytes());
    out.extend_from_slice(record);
}

/// The segments of one log, shared by the writer and every reader.
#[derive(Debug)]
pub(crate) struct Segments {
    pub(crate) dir: PathBuf,
    list: RwLock<BTreeMap<u64, Arc<Segment>>>,
    /// Every seq up to here is durable and readable.
    durable_through: AtomicU64,
    /// Held while a batch is appended and while a purge decides to retire a segment, so that
    /// nothing is appended to a segment being purged.
    append_lock: std::sync::Mutex<()>,
}

impl Segments {
    /// The segment directory for the index file `path` (`audit.db` → `audit.segments`).
    pub(crate) fn dir_for(path: &Path) -> PathBuf {
        path.with_extension("segments")
    }

    pub(crate) fn new(dir: PathBuf, segments: Vec<Arc<Segment>>, durable_through: u64) -> Self {
        let list = segments.into_iter().map(|s| (s.first_seq, s)).collect();
        Self {
            dir,
            list: RwLock::new(list),
            durable_through: AtomicU64::new(durable_through),
            append_lock: std::sync::Mutex::new(()),
        }
    }

    pub(crate) fn durable_through(&self) -> u64 {
        self.durable_through.load(Ordering::Acquire)
    }

    /// Holds off appends (see `append_lock`).
    pub(crate) fn lock_appends(&self) -> std::sync::MutexGuard<'_, ()> {
        self.append_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Retires `segment` for a purge if its last seq is at most `limit` (under the append lock,
    /// so no later append can reach it); returns its last seq if it was retired.
    pub(crate) fn retire_if_through(&self, segment: &Segment, limit: u64) -> Option<u64> {
        let _appends = self.lock_appends();
        let last = self.end_of(segment).saturating_sub(1);
        if last > limit {
            return None;
        }
        segment.retired.store(true, Ordering::Release);
        Some(last)
    }

    /// Every segment, oldest first.
    pub(crate) fn snapshot(&self) -> Vec<Arc<Segment>> {
        let list = self.list.read().unwrap_or_else(PoisonError::into_inner);
        list.values().cloned().collect()
    }

    /// Whether `seq` is at or after the first retained segment (so not purged).
    pub(crate) fn holds_after(&self, seq: u64) -> bool {
        let list = self.list.read().unwrap_or_else(PoisonError::into_inner);
        list.keys().next().is_some_and(|first| seq >= *first)
    }

    /// The segment holding `seq`, if `seq` is durable and not purged.
    pub(crate) fn containing(&self, seq: u64) -> Option<Arc<Segment>> {
        if seq == 0 || seq > self.durable_through() {
            return None;
        }
        let list = self.list.read().unwrap_or_else(PoisonError::into_inner);
        list.range(..=seq).next_back().map(|(_, s)| Arc::clone(s))
    }

    /// The record of `seq`; `None` if it is not (or no longer) in the log.
    pub(crate) fn record(&self, seq: u64) -> Result<Option<Vec<u8>>, StorageError> {
        let Some(segment) = self.containing(seq) else {
            return Ok(None);
        };
        // Between a segment's last frame and the next segment's first seq, seqs can be missing
        // (cut off behind hop's back): no frame holds them.
        if seq >= segment.first_seq + segment.listed()? {
            return Ok(None);
        }
        segment
            .record(seq)
            .map(Some)
            .map_err(|err| frame_corrupt(&segment, &err))
    }

    fn insert(&self, segment: Arc<Segment>) {
        let mut list = self.list.write().unwrap_or_else(PoisonError::into_inner);
        list.insert(segment.first_seq, segment);
    }

    /// Forgets the segment starting at `first_seq` (its files are the caller's to delete).
    pub(crate) fn remove(&self, first_seq: u64) -> Option<Arc<Segment>> {
        let mut list = self.list.write().unwrap_or_else(PoisonError::into_inner);
        list.remove(&first_seq)
    }

    /// The seq after the last one of `segment`: the next segment's first, or the durable end.
    pub(crate) fn end_of(&self, segment: &Segment) -> u64 {
        let list = self.list.read().unwrap_or_else(PoisonError::into_inner);
        list.range(segment.first_seq + 1..)
            .next()
            .map_or(self.durable_through() + 1, |(first, _)| *first)
    }

    /// Records from `from` on (seq order), up to the durable end: `(expected seq, record)`.
    /// The expected seq is the frame's position; a frame that cannot be read ends its segment.
    pub(crate) fn records_from(&self, from: u64) -> impl Iterator<Item = RecordItem> + '_ {
        let segments: Vec<Arc<Segment>> = self
            .snapshot()
            .into_iter()
            .filter(|s| self.end_of(s) > from)
            .collect();
        segments.into_iter().flat_map(move |segment| {
            let start_seq = from.max(segment.first_seq);
            let start = if start_seq == segment.first_seq {
                Ok(HEADER_LEN)
            } else {
                segment.offset_of(start_seq)
            };
            SegmentRecords::new(segment, start_seq, start)
        })
    }
}

/// One record of a walk: its expected seq, and the record or why its frame is unreadable.
pub(crate) type RecordItem = (u64, Arc<Segment>, Result<Vec<u8>, FrameError>);

/// The records of one segment from a seq on.
struct SegmentRecords {
    segment: Arc<Segment>,
    seq: u64,
    buffered: std::vec::IntoIter<Result<(u64, Vec<u8>), FrameError>>,
    next_offset: Option<u64>,
}

impl SegmentRecords {
    fn new(segment: Arc<Segment>, seq: u64, start: Result<u64, FrameError>) -> Self {
        let (buffered, next_offset) = match start {
            Ok(offset) => (Vec::new().into_iter(), Some(offset)),
            Err(err) => (vec![Err(err)].into_iter(), None),
        };
        Self {
            segment,
            seq,
            buffered,
            next_offset,
        }
    }

    /// Reads the next chunk of frames (bounded, so a walk never holds a whole day).
    fn refill(&mut self) {
        let Some(offset) = self.next_offset.take() else {
            return;
        };
        let mut chunk = Vec::new();
        let mut bytes = 0usize;
        let mut frames = self.segment.frames_from(offset);
        for item in frames.by_ref() {
            let stop = match &item {
                Ok((at, record)) => {
                    bytes += record.len();
                    self.next_offset = Some(at + PREFIX_LEN + record.len() as u64);
                    bytes >= 4 << 20
                }
                Err(_) => {
                    self.next_offset = None;
                    true
                }
            };
            chunk.push(item);
            if stop {
                break;
            }
        }
        if chunk.is_empty() {
            self.next_offset = None;
        }
        self.buffered = chunk.into_iter();
    }
}

impl Iterator for SegmentRecords {
    type Item = RecordItem;

    fn next(&mut self) -> Option<Self::Item> {
        let item = match self.buffered.next() {
            Some(item) => item,
            None => {
                self.refill();
                self.buffered.next()?
            }
        };
        let seq = self.seq;
        self.seq += 1;
        Some((seq, Arc::clone(&self.segment), item.map(|(_, r)| r)))
    }
}

/// The error for an unreadable frame of `segment`.
pub(crate) fn frame_corrupt(segment: &Segment, err: &FrameError) -> StorageError {
    match err {
        FrameError::Io(source) => StorageError::Io {
            path: segment.data_path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        other => StorageError::Corrupt {
            path: segment.data_path.clone(),
            detail: other.to_string(),
        },
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.to_owned(),
        source,
    }
}

fn corrupt(path: &Path, detail: String) -> StorageError {
    StorageError::Corrupt {
        path: path.to_owned(),
        detail,
    }
}

/// Creates the segment directory (0700) if missing.
pub(crate) fn ensure_dir(dir: &Path) -> Result<(), StorageError> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => sync_dir(dir.parent().unwrap_or(Path::new("."))),
        Err(err) if err.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(err) => Err(io_error(dir)(err)),
    }
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

fn open_rw(path: &Path, create: bool) -> Result<File, StorageError> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).mode(PRIVATE_MODE);
    if create {
        options.create_new(true);
    }
    options.open(path).map_err(io_error(path))
}

/// The file stems (`<chain>.<first seq>`) of the segments in `dir`.
fn stems_in(dir: &Path) -> Result<Vec<String>, StorageError> {
    let mut chains = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(chains),
        Err(err) => return Err(io_error(dir)(err)),
    };
    for entry in entries {
        let path = entry.map_err(io_error(dir))?.path();
        if path.extension().and_then(|e| e.to_str()) == Some(NEW_EXT) {
            // A segment whose creation a crash interrupted before it had a whole header.
            std::fs::remove_file(&path).map_err(io_error(&path))?;
            continue;
        }
        if path.extension().and_then(|e| e.to_str()) == Some(DATA_EXT)
            && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
        {
            chains.push(stem.to_owned());
        }
    }
    chains.sort();
    Ok(chains)
}

fn stem(chain: &str, first_seq: u64) -> String {
    format!("{chain}.{first_seq:020}")
}

fn paths(dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{stem}.{DATA_EXT}")),
        dir.join(format!("{stem}.{OFFSETS_EXT}")),
    )
}

/// Opens an existing segment, checking its header against its name.
fn open_segment(dir: &Path, stem: &str) -> Result<Segment, StorageError> {
    let (data_path, offsets_path) = paths(dir, stem);
    let Some((chain, named_first)) = stem.split_once('.') else {
        return Err(corrupt(
            &data_path,
            "segment name has no first seq".to_owned(),
        ));
    };
    crate::private_file::ensure_private(&data_path)?;
    let data = open_rw(&data_path, false)?;
    let mut header = [0u8; HEADER_LEN as usize];
    data.read_exact_at(&mut header, 0).map_err(|err| {
        if err.kind() == ErrorKind::UnexpectedEof {
            corrupt(&data_path, "segment is shorter than its header".to_owned())
        } else {
            io_error(&data_path)(err)
        }
    })?;
    let (magic, first) = header.split_at(8);
    if magic != MAGIC {
        return Err(corrupt(&data_path, "not a hop audit segment".to_owned()));
    }
    let mut first_seq = [0u8; 8];
    first_seq.copy_from_slice(first);
    let first_seq = u64::from_le_bytes(first_seq);
    if named_first.parse::<u64>().ok() != Some(first_seq) {
        return Err(corrupt(
            &data_path,
            format!("segment header says first seq {first_seq}, its name {named_first}"),
        ));
    }
    let len = data.metadata().map_err(io_error(&data_path))?.len();
    let offsets = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(PRIVATE_MODE)
        .open(&offsets_path)
        .map_err(io_error(&offsets_path))?;
    Ok(Segment {
        chain: chain.to_owned(),
        first_seq,
        data_path,
        offsets_path,
        data,
        offsets,
        durable_len: AtomicU64::new(len),
        retired: Default::default(),
    })
}

/// Opens every segment of `dir`, repairing what a crash left: offsets files that do not match
/// their frames are rebuilt, and a torn tail of the last segment is moved aside. Returns the
/// segments, oldest first.
pub(crate) fn open_all(dir: &Path) -> Result<Vec<Arc<Segment>>, StorageError> {
    let mut segments: Vec<Segment> = Vec::new();
    for stem in stems_in(dir)? {
        segments.push(open_segment(dir, &stem)?);
    }
    segments.sort_by_key(|s| s.first_seq);
    for (i, segment) in segments.iter().enumerate() {
        let next_first = segments.get(i + 1).map(|s| s.first_seq);
        repair(segment, next_first)?;
    }
    // A last segment with no frame was created by a batch that never became durable (or a
    // crash right after it was made): it holds nothing, and the writer makes it again.
    if let Some(last) = segments.last()
        && last.durable_len() <= HEADER_LEN
        && let Some(empty) = segments.pop()
    {
        delete_files(&empty)?;
        sync_dir(dir)?;
    }
    Ok(segments.into_iter().map(Arc::new).collect())
}

/// Makes `segment`'s offsets match its frames, and cuts a torn tail. `next_first` is the next
/// segment's first seq (the number of frames this one must hold), `None` for the last.
fn repair(segment: &Segment, next_first: Option<u64>) -> Result<(), StorageError> {
    let offsets_len = segment
        .offsets
        .metadata()
        .map_err(io_error(&segment.offsets_path))?
        .len();
    let listed = offsets_len / 8;
    if let Some(next) = next_first
        && listed == next.saturating_sub(segment.first_seq)
        && offsets_len % 8 == 0
        && last_offset_fits(segment, listed)
    {
        return Ok(());
    }
    // Resume from the last listed frame if it is where the offsets say; else from the start.
    let (mut offsets, resume, vouched) = match trusted_prefix(segment, listed)? {
        Some((prefix, last)) => (prefix, last, Some(last)),
        None => (Vec::new(), HEADER_LEN, None),
    };
    // Only the segment being written can end in a write cut short (the others were fsynced
    // whole before they were left), and there only what the offsets do not vouch for: a frame
    // whose bytes do not hash to its hash is damage elsewhere, for `verify` to name.
    let check = next_first.is_none();
    let mut end = resume;
    let mut torn = None;
    for item in segment.frames_from(resume) {
        match item {
            Ok((at, record)) if check && Some(at) != vouched && !self_consistent(&record) => {
                torn = Some(FrameError::Inconsistent { offset: at });
                break;
            }
            Ok((at, record)) => {
                offsets.push(at);
                end = at + PREFIX_LEN + record.len() as u64;
            }
            Err(err) => {
                torn = Some(err);
                break;
            }
        }
    }
    if let Some(err) = torn {
        cut_tail(segment, end, &err)?;
    }
    let bytes: Vec<u8> = offsets.iter().flat_map(|o| o.to_le_bytes()).collect();
    segment
        .offsets
        .set_len(0)
        .and_then(|()| segment.offsets.write_all_at(&bytes, 0))
        .and_then(|()| segment.offsets.sync_data())
        .map_err(io_error(&segment.offsets_path))?;
    segment.durable_len.store(end, Ordering::Release);
    Ok(())
}

fn last_offset_fits(segment: &Segment, listed: u64) -> bool {
    if listed == 0 {
        return segment.durable_len() == HEADER_LEN;
    }
    segment
        .offset_of(segment.first_seq + listed - 1)
        .ok()
        .and_then(|at| read_frame_at(&segment.data, at, segment.durable_len()).ok())
        .is_some_and(|(_, next)| next == segment.durable_len())
}

/// The offsets listed before the last one and the last one's offset, if the last listed frame
/// is a whole frame there.
fn trusted_prefix(segment: &Segment, listed: u64) -> Result<Option<(Vec<u64>, u64)>, StorageError> {
    if listed == 0 {
        return Ok(None);
    }
    let mut bytes = vec![0u8; (listed * 8) as usize];
    segment
        .offsets
        .read_exact_at(&mut bytes, 0)
        .map_err(io_error(&segment.offsets_path))?;
    let offsets: Vec<u64> = bytes
        .chunks_exact(8)
        .map(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            u64::from_le_bytes(b)
        })
        .collect();
    let Some(&last) = offsets.last() else {
        return Ok(None);
    };
    let sorted = offsets.windows(2).all(|w| w[0] < w[1]);
    let fits = read_frame_at(&segment.data, last, segment.durable_len()).is_ok();
    if !sorted || !fits || offsets.first() != Some(&HEADER_LEN) {
        return Ok(None);
    }
    let mut prefix = offsets;
    prefix.pop();
    Ok(Some((prefix, last)))
}

/// Moves the bytes from `end` on into `<segment>.torn-<end>` and cuts the segment there.
fn cut_tail(segment: &Segment, end: u64, why: &FrameError) -> Result<(), StorageError> {
    let len = segment.durable_len();
    let path = &segment.data_path;
    let mut tail = vec![0u8; (len - end) as usize];
    segment
        .data
        .read_exact_at(&mut tail, end)
        .map_err(io_error(path))?;
    // Zeros are space made ready ahead of the writer (see `prealloc`), not a torn write.
    let written = tail.iter().rposition(|b| *b != 0).map_or(0, |at| at + 1);
    tail.truncate(written);
    if tail.is_empty() {
        return segment
            .data
            .set_len(end)
            .and_then(|()| segment.data.sync_all())
            .map_err(io_error(path));
    }
    let mut torn_path = path.with_extension(format!("{DATA_EXT}.torn-{end}"));
    let mut n = 1;
    while torn_path.exists() {
        torn_path = path.with_extension(format!("{DATA_EXT}.torn-{end}.{n}"));
        n += 1;
    }
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_MODE)
        .open(&torn_path)
        .and_then(|f| {
            use std::io::Write;
            let mut f = f;
            f.write_all(&tail)?;
            f.sync_all()
        })
        .map_err(io_error(&torn_path))?;
    segment
        .data
        .set_len(end)
        .and_then(|()| segment.data.sync_all())
        .map_err(io_error(path))?;
    tracing::warn!(
        segment = %path.display(),
        kept_in = %torn_path.display(),
        bytes = tail.len(),
        reason = %why,
        "audit segment ended in a torn write (a crash during a batch that was never \
         acknowledged); its tail was moved aside"
    );
    Ok(())
}

/// The writer's handle on the segment it appends to.
#[derive(Debug)]
pub(crate) struct Appender {
    segment: Arc<Segment>,
    /// Zero-fills ahead of `end` (`None` where nobody waits on the fsyncs, as in an upgrade).
    prealloc: Option<Arc<Prealloc>>,
    /// The data file's length.
    end: u64,
    /// Entries in the offsets file.
    listed: u64,
}

/// A batch's bytes for one segment, built before anything is written.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    pub(crate) frames: Vec<u8>,
    /// Each frame's offset relative to the start of `frames`.
    pub(crate) relative: Vec<u64>,
}

impl Pending {
    /// Room for `events` frames of `bytes` in all, so a batch is built without growing.
    pub(crate) fn with_capacity(bytes: usize, events: usize) -> Self {
        Self {
            frames: Vec::with_capacity(bytes),
            relative: Vec::with_capacity(events),
        }
    }

    pub(crate) fn push(&mut self, record: &[u8]) {
        self.relative.push(self.frames.len() as u64);
        push_frame(&mut self.frames, record);
    }

    /// Appends a frame whose record `write` appends in place; returns what `write` returned
    /// and the record's bytes.
    pub(crate) fn push_with<T>(&mut self, write: impl FnOnce(&mut Vec<u8>) -> T) -> (T, &[u8]) {
        let at = self.frames.len();
        self.relative.push(at as u64);
        self.frames.extend_from_slice(&[0; PREFIX_LEN as usize]);
        let out = write(&mut self.frames);
        let len = self.frames.len() - at - PREFIX_LEN as usize;
        // A record is bounded far below 4 GiB by the event size limit.
        self.frames[at..at + PREFIX_LEN as usize].copy_from_slice(&(len as u32).to_le_bytes());
        (out, &self.frames[at + PREFIX_LEN as usize..])
    }
}

impl Appender {
    /// Appends to the last segment of `segments`, if it is `chain`'s.
    pub(crate) fn resume(
        segments: &Segments,
        chain: &str,
        prealloc: Option<Arc<Prealloc>>,
    ) -> Option<Self> {
        let last = segments.snapshot().pop()?;
        if last.chain != chain {
            return None;
        }
        let end = last.durable_len();
        let listed = segments.end_of(&last) - last.first_seq;
        if let Some(p) = &prealloc {
            p.follow(&last, end);
        }
        Some(Self {
            segment: last,
            prealloc,
            end,
            listed,
        })
    }

    /// Creates the segment of `chain` starting at `first_seq` and registers it.
    pub(crate) fn create(
        segments: &Segments,
        chain: &str,
        first_seq: u64,
        prealloc: Option<Arc<Prealloc>>,
    ) -> Result<Self, StorageError> {
        let (data_path, offsets_path) = paths(&segments.dir, &stem(chain, first_seq));
        let fresh = data_path.with_extension(format!("{DATA_EXT}.{NEW_EXT}"));
        let _ = std::fs::remove_file(&fresh);
        let data = open_rw(&fresh, true)?;
        let mut header = [0u8; HEADER_LEN as usize];
        header[..8].copy_from_slice(MAGIC);
        header[8..].copy_from_slice(&first_seq.to_le_bytes());
        data.write_all_at(&header, 0)
            .and_then(|()| data.sync_data())
            .map_err(io_error(&fresh))?;
        // Never over a segment holding frames (a name is never reused for data).
        if std::fs::metadata(&data_path).is_ok_and(|m| m.len() > HEADER_LEN) {
            let _ = std::fs::remove_file(&fresh);
            return Err(corrupt(
                &data_path,
                "a segment of this name already holds events".to_owned(),
            ));
        }
        std::fs::rename(&fresh, &data_path).map_err(io_error(&data_path))?;
        let _ = std::fs::remove_file(&offsets_path);
        let offsets = open_rw(&offsets_path, true)?;
        sync_dir(&segments.dir)?;
        let segment = Arc::new(Segment {
            chain: chain.to_owned(),
            first_seq,
            data_path,
            offsets_path,
            data,
            offsets,
            durable_len: AtomicU64::new(HEADER_LEN),
            retired: Default::default(),
        });
        segments.insert(Arc::clone(&segment));
        if let Some(p) = &prealloc {
            p.follow(&segment, HEADER_LEN);
        }
        Ok(Self {
            segment,
            prealloc,
            end: HEADER_LEN,
            listed: 0,
        })
    }

    pub(crate) fn chain(&self) -> &str {
        &self.segment.chain
    }

    /// The seq the next frame of this segment would hold.
    pub(crate) fn next_seq(&self) -> u64 {
        self.segment.first_seq + self.listed
    }

    /// Whether a purge took this segment: appends go to a new one.
    pub(crate) fn is_retired(&self) -> bool {
        self.segment.retired.load(Ordering::Acquire)
    }

    /// Writes `pending` and makes it durable. On error the segment is cut back to where it
    /// was; if even that fails the error says so and the log must stop writing.
    pub(crate) fn write(&mut self, pending: &Pending) -> Result<(), AppendError> {
        let seg = &self.segment;
        let write = || {
            seg.data
                .write_all_at(&pending.frames, self.end)
                .and_then(|()| seg.data.sync_data())
        };
        let written = match &self.prealloc {
            Some(p) => p.write_at(self.end, pending.frames.len() as u64, write),
            None => write(),
        };
        if let Err(err) = written {
            return Err(self.cut_back(io_error(&seg.data_path)(err)));
        }
        let offsets: Vec<u8> = pending
            .relative
            .iter()
            .flat_map(|r| (self.end + r).to_le_bytes())
            .collect();
        // Without its offsets a frame cannot be found by seq: the batch is cut back off and
        // fails as a whole.
        if let Err(err) = seg.offsets.write_all_at(&offsets, self.listed * 8) {
            return Err(self.cut_back(io_error(&seg.offsets_path)(err)));
        }
        self.end += pending.frames.len() as u64;
        self.listed += pending.relative.len() as u64;
        seg.durable_len.store(self.end, Ordering::Release);
        Ok(())
    }

    /// After a failed batch: cuts the segment back to where the batch began (and tells the
    /// filler), so nothing of it remains. `failure` is why the batch failed.
    fn cut_back(&self, failure: StorageError) -> AppendError {
        let seg = &self.segment;
        let cut = seg
            .data
            .set_len(self.end)
            .and_then(|()| seg.data.sync_data());
        if let Some(p) = &self.prealloc {
            p.follow(seg, self.end);
        }
        match cut {
            Ok(()) => AppendError::NotWritten(failure),
            Err(cut) => AppendError::Wedged(io_error(&seg.data_path)(cut)),
        }
    }

    /// Makes the offsets file durable and cuts the spare zeros off: the segment is being left
    /// for the next day's, or the log is closing.
    pub(crate) fn seal(&self) {
        if let Some(p) = &self.prealloc {
            p.trim(&self.segment, self.end);
        }
        if let Err(err) = self.segment.offsets.sync_data() {
            tracing::warn!(path = %self.segment.offsets_path.display(), error = %err, "audit offsets not synced; rebuilt at the next open if needed");
        }
    }

    /// Removes a segment created for a batch that failed.
    pub(crate) fn discard(self, segments: &Segments) {
        segments.remove(self.segment.first_seq);
        let _ = std::fs::remove_file(&self.segment.data_path);
        let _ = std::fs::remove_file(&self.segment.offsets_path);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.listed == 0
    }
}

impl Segments {
    /// Publishes that every seq up to `seq` is durable.
    pub(crate) fn made_durable(&self, seq: u64) {
        self.durable_through.store(seq, Ordering::Release);
    }
}

/// Why a batch could not be appended.
#[derive(Debug)]
pub(crate) enum AppendError {
    /// Nothing of the batch remains.
    NotWritten(StorageError),
    /// The batch could not be cut back off the segment: the log must stop writing.
    Wedged(StorageError),
}

/// Deletes a purged segment's files.
pub(crate) fn delete_files(segment: &Segment) -> Result<(), StorageError> {
    for path in [&segment.data_path, &segment.offsets_path] {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(err) if err.kind() == ErrorKind::NotFound => {}
            Err(err) => return Err(io_error(path)(err)),
        }
    }
    Ok(())
}

/// Creates an empty segment directory for a migration, removing what an interrupted one left.
pub(crate) fn fresh_dir(dir: &Path) -> Result<(), StorageError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(err) if err.kind() == ErrorKind::NotFound => {}
        Err(err) => return Err(io_error(dir)(err)),
    }
    ensure_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A whole record (it hashes to the hash it carries), of a length that grows with `n`.
    fn record(n: u8) -> Vec<u8> {
        let prev = [n; 32];
        let canonical = format!(
            r#"{{"event":"x","time":"2023-11-14T00:00:00Z","id":"{}","seq":{n},"chain":"2023-11-14","prev_hash":"{}"}}"#,
            "i".repeat(usize::from(n)),
            hex::encode(prev)
        );
        super::super::chain::build_record(&prev, canonical.len(), |out| {
            out.extend_from_slice(canonical.as_bytes())
        })
        .0
    }

    fn write_segment(dir: &Path, n: u8) -> Segments {
        ensure_dir(dir).unwrap();
        let segments = Segments::new(dir.to_owned(), Vec::new(), 0);
        let mut app = Appender::create(&segments, "2023-11-14", 1, None).unwrap();
        let mut pending = Pending::default();
        for i in 0..n {
            pending.push(&record(i));
        }
        app.write(&pending).unwrap();
        segments.made_durable(u64::from(n));
        segments
    }

    #[test]
    fn records_are_read_back_by_seq_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let segments = write_segment(&dir.path().join("s"), 20);
        for i in 0..20u8 {
            assert_eq!(
                segments.record(u64::from(i) + 1).unwrap().unwrap(),
                record(i)
            );
        }
        assert!(segments.record(21).unwrap().is_none());
        let walked: Vec<_> = segments
            .records_from(5)
            .map(|(seq, _, r)| (seq, r.unwrap()))
            .collect();
        assert_eq!(walked.len(), 16);
        assert_eq!(walked[0], (5, record(4)));
    }

    #[test]
    fn walks_of_one_segment_at_once_each_read_their_own_frames() {
        // Searches, exports and the indexer walk the same segment file at the same time; a
        // walk that moved the descriptor's shared offset made the others read the wrong bytes
        // ("frame at offset N claims 0 bytes", or another frame in place of theirs).
        let dir = tempfile::tempdir().unwrap();
        let segments = Arc::new(write_segment(&dir.path().join("s"), 60));
        let walkers: Vec<_> = (0..4u64)
            .map(|w| {
                let segments = Arc::clone(&segments);
                std::thread::spawn(move || {
                    for round in 0..200u64 {
                        let from = 1 + (w * 7 + round) % 60;
                        for (seq, _, r) in segments.records_from(from) {
                            let want = record(u8::try_from(seq - 1).unwrap());
                            assert_eq!(r.unwrap(), want, "walker {w} round {round} seq {seq}");
                        }
                    }
                })
            })
            .collect();
        for w in walkers {
            w.join().unwrap();
        }
    }

    #[test]
    fn every_cut_of_the_tail_is_repaired_to_whole_frames() {
        let dir = tempfile::tempdir().unwrap();
        let seg_dir = dir.path().join("s");
        drop(write_segment(&seg_dir, 5));
        let (data, _) = paths(&seg_dir, &stem("2023-11-14", 1));
        let full = std::fs::read(&data).unwrap();
        let mut ends = vec![HEADER_LEN as usize];
        for i in 0..5u8 {
            ends.push(ends.last().unwrap() + 4 + record(i).len());
        }
        for cut in HEADER_LEN as usize..=full.len() {
            std::fs::write(&data, &full[..cut]).unwrap();
            let segments = open_all(&seg_dir).unwrap();
            let whole = ends.iter().filter(|e| **e <= cut).count() as u64 - 1;
            if whole == 0 {
                // No whole frame: a segment that never held an event is removed.
                assert!(segments.is_empty(), "cut at {cut}");
                assert!(!data.exists(), "cut at {cut}");
                drop(write_segment(&seg_dir, 5));
                continue;
            }
            let kept = segments[0].durable_len() as usize;
            assert_eq!(kept, ends[whole as usize], "cut at {cut}");
            let reg = Segments::new(seg_dir.clone(), segments, whole);
            assert_eq!(reg.records_from(1).count() as u64, whole, "cut at {cut}");
            for torn in std::fs::read_dir(&seg_dir).unwrap() {
                let p = torn.unwrap().path();
                if p.to_string_lossy().contains(".torn-") {
                    std::fs::remove_file(p).unwrap();
                }
            }
        }
    }

    #[test]
    fn zeros_after_the_frames_are_spare_space_and_a_frame_cut_short_in_them_is_torn() {
        let dir = tempfile::tempdir().unwrap();
        let seg_dir = dir.path().join("s");
        drop(write_segment(&seg_dir, 5));
        let (data, _) = paths(&seg_dir, &stem("2023-11-14", 1));
        let full = std::fs::read(&data).unwrap();
        // Spare zeros: cut off quietly, nothing kept aside.
        let mut spare = full.clone();
        spare.extend_from_slice(&[0; 4096]);
        std::fs::write(&data, &spare).unwrap();
        let segments = open_all(&seg_dir).unwrap();
        assert_eq!(segments[0].durable_len() as usize, full.len());
        assert_eq!(std::fs::read(&data).unwrap(), full);
        assert_eq!(std::fs::read_dir(&seg_dir).unwrap().count(), 2);
        drop(segments);
        // A sixth frame whose length was written but whose record is half zeros: torn.
        let mut torn = full.clone();
        let sixth = record(5);
        torn.extend_from_slice(&(sixth.len() as u32).to_le_bytes());
        torn.extend_from_slice(&sixth[..sixth.len() / 2]);
        torn.extend_from_slice(&vec![0; sixth.len() + 4096]);
        std::fs::write(&data, &torn).unwrap();
        let segments = open_all(&seg_dir).unwrap();
        assert_eq!(segments[0].durable_len() as usize, full.len());
        let kept: Vec<_> = std::fs::read_dir(&seg_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains(".torn-"))
            .collect();
        assert_eq!(kept.len(), 1);
        // The zeros after the last written byte are not kept.
        assert_eq!(std::fs::read(&kept[0]).unwrap().len(), 4 + sixth.len() / 2);
    }

    #[test]
    fn a_damaged_length_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let segments = write_segment(&dir.path().join("s"), 3);
        let seg = segments.snapshot().pop().unwrap();
        seg.data
            .write_all_at(&u32::MAX.to_le_bytes(), HEADER_LEN)
            .unwrap();
        let err = segments.record(1).unwrap_err().to_string();
        assert!(err.contains("claims"), "{err}");
        let walked: Vec<_> = segments.records_from(1).collect();
        assert_eq!(walked.len(), 1);
        assert!(walked[0].2.is_err());
    }

    #[test]
    fn a_file_that_is_not_a_segment_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let seg_dir = dir.path().join("s");
        ensure_dir(&seg_dir).unwrap();
        std::fs::write(
            seg_dir.join("2023-11-14.00000000000000000001.seg"),
            b"not a segment at all",
        )
        .unwrap();
        let err = open_all(&seg_dir).unwrap_err().to_string();
        assert!(err.contains("not a hop audit segment"), "{err}");
    }
}
