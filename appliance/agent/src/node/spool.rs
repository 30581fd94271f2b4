//! An agent's disk spool of audit events waiting for Auth.
//!
//! This module owns one directory under the agent's directory (`audit-spool` for the SSH
//! service, `audit-spool-db` for the database service): segment files of JSON lines, one event a
//! line, named by an increasing number (`00000001.jsonl`), appended with one fsync per batch and
//! rolled at [`SEGMENT_BYTES`]; the spool's byte budget (events that do not fit are dropped, and
//! the caller counts and logs them); the order in which events are read back (oldest segment
//! first, each from its start); and when a segment may go: only once Auth has acknowledged every
//! event in it. [`SpoolState`] makes those decisions without IO; [`AuditSpool`] is the thin file
//! layer around it. It must never delete an event Auth has not acknowledged, never append to a
//! segment an earlier process left (its last line may be torn), and never fail on a torn last
//! line: that line is skipped with a warning. What Auth acknowledged inside a segment is not
//! remembered across restarts: a restarted agent resends a partly acknowledged segment from its
//! start, which Auth's idempotent event ids make harmless.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The SSH service's spool, under the agent's directory.
pub const NODE_SPOOL_DIR: &str = "audit-spool";
/// The database service's spool, under the agent's directory.
pub const DB_SPOOL_DIR: &str = "audit-spool-db";
/// The default budget of a spool.
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// A segment takes no more lines once it holds this much.
pub const SEGMENT_BYTES: u64 = 4 * 1024 * 1024;
/// Segment file names end with this.
const SEGMENT_EXT: &str = "jsonl";

/// Where a spool lives and how much it may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSpoolSettings {
    pub dir: PathBuf,
    pub max_bytes: u64,
    pub segment_bytes: u64,
}

impl AuditSpoolSettings {
    /// The spool `<data_dir>/agent/<name>` with the default budget.
    pub fn under(data_dir: &Path, name: &str) -> Self {
        Self {
            dir: data_dir.join("agent").join(name),
            max_bytes: DEFAULT_MAX_BYTES,
            segment_bytes: SEGMENT_BYTES,
        }
    }

    /// The SSH service's spool, `<data_dir>/agent/audit-spool`.
    pub fn node(data_dir: &Path) -> Self {
        Self::under(data_dir, NODE_SPOOL_DIR)
    }

    /// The database service's spool, `<data_dir>/agent/audit-spool-db`.
    pub fn db(data_dir: &Path) -> Self {
        Self::under(data_dir, DB_SPOOL_DIR)
    }
}

/// Why the spool could not do its work (all of them local disk trouble, none the peer's).
#[derive(Debug, thiserror::Error)]
pub enum AuditSpoolError {
    /// The directory could not be created or listed.
    #[error("cannot open the audit spool {}: {source}", dir.display())]
    Open { dir: PathBuf, source: io::Error },
    /// A segment could not be written or synced; `written` events of the batch are on disk.
    #[error("cannot write the audit spool segment {}: {source}", path.display())]
    Write {
        path: PathBuf,
        written: usize,
        source: io::Error,
    },
    /// A segment could not be read.
    #[error("cannot read the audit spool segment {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
}

/// One segment as the state knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    number: u64,
    /// Bytes of whole lines known to be on disk; anything after them is ignored.
    bytes: u64,
    /// No more lines go into it: full, left by an earlier process, or its last write failed.
    sealed: bool,
}

/// Where the next line goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// At the end of the open segment with this number.
    Append(u64),
    /// Into a new segment with this number.
    Create(u64),
    /// Nowhere: the budget is spent.
    Full,
}

/// The part of a segment to read next: bytes `offset..end` of segment `segment`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadAt {
    pub segment: u64,
    pub offset: u64,
    pub end: u64,
    /// Whether the segment may end in a torn line (it was not written by this process in full).
    pub sealed: bool,
}

/// The spool's bookkeeping, without IO: which segments exist, how much they hold, where reading
/// stands and where new lines go. See the module documentation.
#[derive(Debug, Clone)]
pub struct SpoolState {
    /// Oldest first.
    segments: VecDeque<Segment>,
    /// Bytes of the oldest segment already acknowledged.
    read_offset: u64,
    next_number: u64,
    used: u64,
    max_bytes: u64,
    segment_bytes: u64,
}

impl SpoolState {
    /// An empty spool.
    #[cfg(test)]
    pub fn new(max_bytes: u64, segment_bytes: u64) -> Self {
        Self::recovered([], max_bytes, segment_bytes).0
    }

    /// The state of a spool whose directory holds `found` (segment number, file length), in any
    /// order. Every found segment is sealed; empty ones are returned for deletion.
    pub fn recovered(
        found: impl IntoIterator<Item = (u64, u64)>,
        max_bytes: u64,
        segment_bytes: u64,
    ) -> (Self, Vec<u64>) {
        let mut found: Vec<(u64, u64)> = found.into_iter().collect();
        found.sort_unstable();
        let next_number = found.last().map_or(1, |(n, _)| n.saturating_add(1));
        let (empty, full): (Vec<_>, Vec<_>) = found.into_iter().partition(|(_, b)| *b == 0);
        let segments: VecDeque<Segment> = full
            .into_iter()
            .map(|(number, bytes)| Segment {
                number,
                bytes,
                sealed: true,
            })
            .collect();
        let used = segments.iter().map(|s| s.bytes).sum();
        let state = Self {
            segments,
            read_offset: 0,
            next_number,
            used,
            max_bytes,
            segment_bytes: segment_bytes.max(1),
        };
        (state, empty.into_iter().map(|(n, _)| n).collect())
    }

    /// Whether no event waits in the spool.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Bytes the segments hold (acknowledged lines count until their segment is deleted).
    pub fn used(&self) -> u64 {
        self.used
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Segment numbers, oldest first.
    #[cfg(test)]
    pub fn segment_numbers(&self) -> Vec<u64> {
        self.segments.iter().map(|s| s.number).collect()
    }

    /// Where a line of `len` bytes (newline included) would go.
    pub fn place(&self, len: u64) -> Placement {
        if self.used.saturating_add(len) > self.max_bytes {
            return Placement::Full;
        }
        match self.segments.back() {
            Some(s) if !s.sealed && s.bytes < self.segment_bytes => Placement::Append(s.number),
            _ => Placement::Create(self.next_number),
        }
    }

    /// Records `len` bytes of whole lines made durable at `placement` (from [`Self::place`]).
    pub fn appended(&mut self, placement: Placement, len: u64) {
        match placement {
            Placement::Append(n) => {
                if let Some(s) = self.segments.back_mut().filter(|s| s.number == n) {
                    s.bytes += len;
                    self.used += len;
                }
            }
            Placement::Create(n) => {
                if let Some(s) = self.segments.back_mut() {
                    s.sealed = true;
                }
                self.segments.push_back(Segment {
                    number: n,
                    bytes: len,
                    sealed: false,
                });
                self.next_number = n.saturating_add(1);
                self.used += len;
            }
            Placement::Full => {}
        }
    }

    /// A write at `placement` failed: the open segment takes no more lines (what follows its
    /// known bytes on disk is ignored), and a segment number that may now name a file is not
    /// used again.
    pub fn failed(&mut self, placement: Placement) {
        if let Some(s) = self.segments.back_mut() {
            s.sealed = true;
        }
        if let Placement::Create(n) = placement {
            self.next_number = self.next_number.max(n.saturating_add(1));
        }
    }

    /// Of lines of these lengths (newlines included), in order: where the first goes, how many
    /// go there with it in one write, and their bytes. `(Full, 0, 0)` when the first does not
    /// fit the budget.
    pub fn plan_run(&self, lens: &[u64]) -> (Placement, usize, u64) {
        let Some(&first) = lens.first() else {
            return (Placement::Full, 0, 0);
        };
        let placement = self.place(first);
        let start = match placement {
            Placement::Full => return (Placement::Full, 0, 0),
            Placement::Append(_) => self.segments.back().map_or(0, |s| s.bytes),
            Placement::Create(_) => 0,
        };
        let (mut n, mut bytes) = (0usize, 0u64);
        for &len in lens {
            let budget_ok = self.used.saturating_add(bytes).saturating_add(len) <= self.max_bytes;
            let segment_ok = n == 0 || start + bytes < self.segment_bytes;
            if !(budget_ok && segment_ok) {
                break;
            }
            n += 1;
            bytes += len;
        }
        (placement, n, bytes)
    }

    /// What to read next: the unacknowledged rest of the oldest segment.
    pub fn next_read(&self) -> Option<ReadAt> {
        self.segments.front().map(|s| ReadAt {
            segment: s.number,
            offset: self.read_offset,
            end: s.bytes,
            sealed: s.sealed,
        })
    }

    /// Auth acknowledged (or the reader skipped) segment `segment` up to byte `through`; returns
    /// the segments now fully acknowledged, to delete.
    pub fn consumed(&mut self, segment: u64, through: u64) -> Vec<u64> {
        let mut done = Vec::new();
        let Some(front) = self.segments.front() else {
            return done;
        };
        if front.number != segment || through < self.read_offset {
            return done;
        }
        self.read_offset = through.min(front.bytes);
        if self.read_offset >= front.bytes {
            self.used = self.used.saturating_sub(front.bytes);
            done.push(front.number);
            self.segments.pop_front();
            self.read_offset = 0;
        }
        done
    }
}

/// What a read of the spool found: the events of one segment's range, and how far it reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolBatch {
    pub segment: u64,
    /// Consuming the batch acknowledges the segment up to here.
    pub end: u64,
    /// The events, oldest first.
    pub events: Vec<String>,
    /// Lines skipped as unreadable (a torn last line, a line that is not a JSON object).
    pub skipped: usize,
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Appended {
    /// Events now on disk (the first ones of the batch).
    pub written: usize,
    /// Events after those, dropped because the budget is spent.
    pub dropped: usize,
}

/// The spool on disk; see the module documentation.
#[derive(Debug)]
pub struct AuditSpool {
    dir: PathBuf,
    state: SpoolState,
    /// The open segment's file, by number.
    open: Option<(u64, File)>,
}

impl AuditSpool {
    /// Opens (creating, mode 0700) the spool's directory and takes stock of the segments an
    /// earlier process left, which are read first and never appended to.
    pub fn open(settings: &AuditSpoolSettings) -> Result<Self, AuditSpoolError> {
        let dir = settings.dir.clone();
        let open_err = |source| AuditSpoolError::Open {
            dir: dir.clone(),
            source,
        };
        let mut b = fs::DirBuilder::new();
        b.recursive(true);
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(&dir).map_err(open_err)?;
        let mut found = Vec::new();
        for entry in fs::read_dir(&dir).map_err(open_err)? {
            let entry = entry.map_err(open_err)?;
            let Some(number) = entry.file_name().to_str().and_then(segment_number) else {
                continue;
            };
            let meta = entry.metadata().map_err(open_err)?;
            if meta.is_file() {
                found.push((number, meta.len()));
            }
        }
        let (state, empty) =
            SpoolState::recovered(found, settings.max_bytes, settings.segment_bytes);
        let spool = Self {
            dir,
            state,
            open: None,
        };
        for n in empty {
            let _ = fs::remove_file(spool.path(n));
        }
        if !spool.state.is_empty() {
            tracing::info!(
                dir = %spool.dir.display(),
                segments = spool.state.segments.len(),
                bytes = spool.state.used(),
                "audit events spooled by an earlier run will be sent to Auth first"
            );
        }
        Ok(spool)
    }

    pub fn state(&self) -> &SpoolState {
        &self.state
    }

    pub fn is_empty(&self) -> bool {
        self.state.is_empty()
    }

    /// The file of segment `n`.
    pub fn path(&self, n: u64) -> PathBuf {
        self.dir.join(format!("{n:08}.{SEGMENT_EXT}"))
    }

    /// Appends `events` (JSON without newlines) in order, with one fsync per segment written.
    /// Once the budget is spent, the rest are dropped (and reported in [`Appended::dropped`]).
    /// On an error, the events before the failing segment's are on disk
    /// ([`AuditSpoolError::Write`]'s `written`) and the segment takes no more lines.
    pub fn append(&mut self, events: &[String]) -> Result<Appended, AuditSpoolError> {
        let lens: Vec<u64> = events.iter().map(|e| line_len(e)).collect();
        let mut done = Appended::default();
        let mut i = 0;
        while i < events.len() {
            let (placement, n, bytes) = self.state.plan_run(&lens[i..]);
            let segment = match placement {
                Placement::Append(s) | Placement::Create(s) if n > 0 => s,
                _ => {
                    done.dropped = events.len() - i;
                    break;
                }
            };
            let mut buf = Vec::with_capacity(bytes as usize);
            for e in &events[i..i + n] {
                buf.extend_from_slice(e.as_bytes());
                buf.push(b'\n');
            }
            if let Err(source) = self.write_run(placement, &buf) {
                self.state.failed(placement);
                self.open = None;
                return Err(AuditSpoolError::Write {
                    path: self.path(segment),
                    written: done.written,
                    source,
                });
            }
            self.state.appended(placement, bytes);
            done.written += n;
            i += n;
        }
        Ok(done)
    }

    fn write_run(&mut self, placement: Placement, buf: &[u8]) -> io::Result<()> {
        let n = match placement {
            Placement::Append(n) => n,
            Placement::Create(n) => {
                let mut o = OpenOptions::new();
                o.create_new(true).append(true);
                std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
                let f = o.open(self.path(n))?;
                // The new name must survive a crash too.
                File::open(&self.dir)?.sync_all()?;
                self.open = Some((n, f));
                n
            }
            Placement::Full => return Ok(()),
        };
        let f = match &mut self.open {
            Some((open, f)) if *open == n => f,
            _ => {
                let f = OpenOptions::new().append(true).open(self.path(n))?;
                &mut self.open.insert((n, f)).1
            }
        };
        f.write_all(buf)?;
        f.sync_data()
    }

    /// Reads the oldest unacknowledged events: at most `max_events`, and no more than
    /// `max_bytes` of them unless the first alone is larger. `None` when the spool is empty.
    /// A segment that vanished is forgotten with an error in the log; a torn last line and lines
    /// that are not JSON objects are skipped with a warning.
    pub fn read(
        &mut self,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<Option<SpoolBatch>, AuditSpoolError> {
        loop {
            let Some(at) = self.state.next_read() else {
                return Ok(None);
            };
            let path = self.path(at.segment);
            match read_range(&path, at, max_bytes.max(1)) {
                Ok(bytes) => {
                    let batch = split_batch(at, &bytes, max_events.max(1), max_bytes);
                    if batch.skipped > 0 {
                        tracing::warn!(
                            segment = %path.display(),
                            skipped = batch.skipped,
                            "skipped unreadable lines in the audit spool (a torn last line is left by a crash mid-write)"
                        );
                    }
                    return Ok(Some(batch));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    tracing::error!(
                        segment = %path.display(),
                        lost_bytes = at.end - at.offset,
                        "an audit spool segment vanished; its events are lost"
                    );
                    self.forget(at.segment, at.end);
                }
                Err(source) => return Err(AuditSpoolError::Read { path, source }),
            }
        }
    }

    /// Auth acknowledged `batch` (or it held nothing to send): deletes the segments now fully
    /// acknowledged.
    pub fn consumed(&mut self, batch: &SpoolBatch) {
        self.forget(batch.segment, batch.end);
    }

    fn forget(&mut self, segment: u64, through: u64) {
        for n in self.state.consumed(segment, through) {
            if self.open.as_ref().is_some_and(|(o, _)| *o == n) {
                self.open = None;
            }
            let path = self.path(n);
            if let Err(e) = fs::remove_file(&path)
                && e.kind() != io::ErrorKind::NotFound
            {
                // Its events would be sent again after a restart, which ids make harmless.
                tracing::warn!(segment = %path.display(), error = %e, "cannot delete a sent audit spool segment");
            }
        }
    }
}

/// The number of a segment file's name, `None` for other files.
fn segment_number(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".jsonl")?;
    if stem.is_empty() || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

fn line_len(event: &str) -> u64 {
    event.len() as u64 + 1
}

/// Reads from `at.offset` at least `want` bytes, more until a newline is in or the range ends.
fn read_range(path: &Path, at: ReadAt, want: usize) -> io::Result<Vec<u8>> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(at.offset))?;
    let left = at.end.saturating_sub(at.offset);
    let mut buf = Vec::new();
    let mut chunk = want as u64;
    loop {
        let target = (buf.len() as u64 + chunk).min(left);
        let got = (&mut f)
            .take(target - buf.len() as u64)
            .read_to_end(&mut buf)?;
        if buf.len() as u64 >= left || got == 0 || buf.contains(&b'\n') {
            return Ok(buf);
        }
        chunk = chunk.saturating_mul(2);
    }
}

/// Splits the bytes read at `at` into a batch. Pure.
fn split_batch(at: ReadAt, bytes: &[u8], max_events: usize, max_bytes: usize) -> SpoolBatch {
    let mut events = Vec::new();
    let mut skipped = 0;
    let mut pos = 0usize;
    let mut taken = 0usize;
    let reaches_end = at.offset + bytes.len() as u64 >= at.end;
    while pos < bytes.len() && events.len() < max_events {
        let Some(nl) = bytes[pos..].iter().position(|&b| b == b'\n') else {
            // No newline before the end of the range: a torn last line, skipped. (Short of the
            // end, the rest is left for the next read.)
            if reaches_end {
                skipped += 1;
                pos = bytes.len();
            }
            break;
        };
        let line = &bytes[pos..pos + nl];
        if !events.is_empty() && taken + line.len() > max_bytes {
            break;
        }
        pos += nl + 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match std::str::from_utf8(line).ok().filter(|s| {
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(s).is_ok()
        }) {
            Some(s) => {
                taken += line.len();
                events.push(s.to_owned());
            }
            None => skipped += 1,
        }
    }
    SpoolBatch {
        segment: at.segment,
        end: at.offset + pos as u64,
        events,
        skipped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(i: usize) -> String {
        format!(r#"{{"event":"exec","id":"id-{i}","command":"echo {i}"}}"#)
    }

    fn settings(dir: &Path, max_bytes: u64, segment_bytes: u64) -> AuditSpoolSettings {
        AuditSpoolSettings {
            dir: dir.join("spool"),
            max_bytes,
            segment_bytes,
        }
    }

    /// Reads and acknowledges everything, as the sender would after Auth said yes.
    fn drain(s: &mut AuditSpool) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(b) = s.read(7, 1 << 20).unwrap() {
            out.extend(b.events.iter().cloned());
            s.consumed(&b);
        }
        out
    }

    fn files(s: &AuditSpool) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(&s.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn state_places_rolls_and_bounds() {
        let mut st = SpoolState::new(100, 30);
        assert!(st.is_empty());
        assert_eq!(st.place(10), Placement::Create(1));
        st.appended(Placement::Create(1), 10);
        assert_eq!(st.place(10), Placement::Append(1));
        st.appended(Placement::Append(1), 25);
        // 35 bytes: the segment is full, the next line starts segment 2.
        assert_eq!(st.place(10), Placement::Create(2));
        st.appended(Placement::Create(2), 60);
        assert_eq!(st.used(), 95);
        assert_eq!(st.place(6), Placement::Full);
        assert_eq!(st.place(5), Placement::Create(3));
        assert_eq!(
            st.next_read(),
            Some(ReadAt {
                segment: 1,
                offset: 0,
                end: 35,
                sealed: true
            })
        );
        // Partly acknowledged: nothing to delete yet, reading goes on from there.
        assert!(st.consumed(1, 20).is_empty());
        assert_eq!(st.next_read().unwrap().offset, 20);
        // A stale or foreign acknowledgement changes nothing.
        assert!(st.consumed(2, 60).is_empty());
        assert!(st.consumed(1, 10).is_empty());
        assert_eq!(st.consumed(1, 35), vec![1]);
        assert_eq!(st.used(), 60);
        assert_eq!(st.consumed(2, 60), vec![2]);
        assert!(st.is_empty());
        // Numbers never repeat within a run.
        assert_eq!(st.place(5), Placement::Create(3));
    }

    #[test]
    fn state_recovers_sealed_segments_in_order() {
        let (st, empty) = SpoolState::recovered([(7, 40), (3, 0), (5, 10)], 1000, 100);
        assert_eq!(empty, vec![3]);
        assert_eq!(st.segment_numbers(), vec![5, 7]);
        assert_eq!(st.used(), 50);
        // Never appended to: new lines go to a new segment after the last one found.
        assert_eq!(st.place(1), Placement::Create(8));
        assert!(st.next_read().unwrap().sealed);
    }

    #[test]
    fn order_is_kept_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = AuditSpool::open(&settings(dir.path(), 1 << 20, 200)).unwrap();
        let events: Vec<String> = (0..50).map(ev).collect();
        for chunk in events.chunks(6) {
            let a = s.append(chunk).unwrap();
            assert_eq!(a.written, chunk.len());
            assert_eq!(a.dropped, 0);
        }
        assert!(files(&s).len() > 5, "{:?}", files(&s));
        assert_eq!(drain(&mut s), events);
        assert!(files(&s).is_empty());
        assert!(s.is_empty());
    }

    #[test]
    fn a_segment_is_deleted_only_once_all_of_it_is_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = AuditSpool::open(&settings(dir.path(), 1 << 20, 1 << 20)).unwrap();
        let events: Vec<String> = (0..10).map(ev).collect();
        s.append(&events).unwrap();
        assert_eq!(files(&s), vec!["00000001.jsonl"]);
        let b = s.read(4, 1 << 20).unwrap().unwrap();
        assert_eq!(b.events, events[..4]);
        // Read but not acknowledged (Auth did not answer): read again, file kept.
        let again = s.read(4, 1 << 20).unwrap().unwrap();
        assert_eq!(again, b);
        s.consumed(&b);
        assert_eq!(files(&s), vec!["00000001.jsonl"]);
        let b = s.read(100, 1 << 20).unwrap().unwrap();
        assert_eq!(b.events, events[4..]);
        assert_eq!(files(&s), vec!["00000001.jsonl"]);
        s.consumed(&b);
        assert!(files(&s).is_empty());
        // New events after a full drain go to a new segment.
        s.append(&events[..1]).unwrap();
        assert_eq!(files(&s), vec!["00000002.jsonl"]);
    }

    #[test]
    fn the_byte_budget_drops_new_events_and_says_how_many() {
        let dir = tempfile::tempdir().unwrap();
        let per = line_len(&ev(0));
        let mut s = AuditSpool::open(&settings(dir.path(), per * 5, per * 2)).unwrap();
        let events: Vec<String> = (0..8).map(ev).collect();
        let a = s.append(&events).unwrap();
        assert_eq!(
            a,
            Appended {
                written: 5,
                dropped: 3
            }
        );
        let a = s.append(&events[..1]).unwrap();
        assert_eq!(
            a,
            Appended {
                written: 0,
                dropped: 1
            }
        );
        assert!(s.state().used() <= s.state().max_bytes());
        // What was kept is the oldest, in order; once sent, there is room again.
        assert_eq!(drain(&mut s), events[..5]);
        assert_eq!(s.append(&events[5..]).unwrap().written, 3);
        assert_eq!(drain(&mut s), events[5..]);
    }

    #[test]
    fn a_restarted_spool_sends_old_segments_first_and_never_appends_to_them() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = settings(dir.path(), 1 << 20, 300);
        let events: Vec<String> = (0..20).map(ev).collect();
        {
            let mut s = AuditSpool::open(&cfg).unwrap();
            s.append(&events[..12]).unwrap();
            // Part of the first segment was acknowledged before the stop.
            let b = s.read(2, 1 << 20).unwrap().unwrap();
            s.consumed(&b);
        }
        let mut s = AuditSpool::open(&cfg).unwrap();
        let before = files(&s);
        s.append(&events[12..]).unwrap();
        let after = files(&s);
        assert!(after.len() > before.len());
        for f in &before {
            let old = fs::read(s.dir.join(f)).unwrap();
            assert!(after.contains(f));
            assert_eq!(fs::read(s.dir.join(f)).unwrap(), old);
        }
        // The partly acknowledged segment is sent again whole (ids make that harmless).
        assert_eq!(drain(&mut s), events);
        assert!(files(&s).is_empty());
    }

    #[test]
    fn a_torn_last_line_is_skipped_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = settings(dir.path(), 1 << 20, 1 << 20);
        fs::create_dir_all(&cfg.dir).unwrap();
        let mut text = format!("{}\n{}\n", ev(1), ev(2));
        let torn = ev(3);
        text.push_str(&torn[..torn.len() / 2]);
        fs::write(cfg.dir.join("00000004.jsonl"), &text).unwrap();
        fs::write(cfg.dir.join("00000005.jsonl"), format!("{}\n", ev(4))).unwrap();
        fs::write(cfg.dir.join("notes.txt"), "not a segment").unwrap();
        let mut s = AuditSpool::open(&cfg).unwrap();
        let b = s.read(100, 1 << 20).unwrap().unwrap();
        assert_eq!(b.events, vec![ev(1), ev(2)]);
        assert_eq!(b.skipped, 1);
        assert_eq!(b.end, text.len() as u64);
        s.consumed(&b);
        assert_eq!(drain(&mut s), vec![ev(4)]);
        assert_eq!(files(&s), vec!["notes.txt"]);
    }

    #[test]
    fn garbage_lines_are_skipped_and_batches_respect_their_byte_cap() {
        let at = ReadAt {
            segment: 1,
            offset: 0,
            end: 0,
            sealed: true,
        };
        let text = format!("{}\nnot json\n\n[1]\n{}\n{}\n", ev(1), ev(2), ev(3));
        let at = ReadAt {
            end: text.len() as u64,
            ..at
        };
        let b = split_batch(at, text.as_bytes(), 100, 1 << 20);
        assert_eq!(b.events, vec![ev(1), ev(2), ev(3)]);
        assert_eq!(b.skipped, 2);
        assert_eq!(b.end, text.len() as u64);
        // Two events fit in the cap; the batch stops before the third.
        let cap = ev(1).len() + ev(2).len();
        let b = split_batch(at, text.as_bytes(), 100, cap);
        assert_eq!(b.events, vec![ev(1), ev(2)]);
        assert_eq!(
            &text.as_bytes()[b.end as usize..],
            format!("{}\n", ev(3)).as_bytes()
        );
        // A first event larger than the cap still goes alone.
        let b = split_batch(at, text.as_bytes(), 100, 3);
        assert_eq!(b.events, vec![ev(1)]);
        // A line cut by the read (not the range's end) is left for the next read.
        let short = &text.as_bytes()[..ev(1).len() + 5];
        let b = split_batch(at, short, 100, 1 << 20);
        assert_eq!(b.events, vec![ev(1)]);
        assert_eq!(b.skipped, 0);
        assert_eq!(b.end, ev(1).len() as u64 + 1);
    }

    #[test]
    fn a_failed_write_seals_the_segment_and_burns_its_number() {
        let mut st = SpoolState::new(1000, 1000);
        st.appended(Placement::Create(1), 10);
        st.failed(Placement::Append(1));
        assert_eq!(st.place(10), Placement::Create(2));
        assert_eq!(st.next_read().unwrap().end, 10);
        st.failed(Placement::Create(2));
        assert_eq!(st.place(10), Placement::Create(3));
    }

    #[test]
    fn runs_stop_at_the_segment_size_and_the_budget() {
        let mut st = SpoolState::new(100, 30);
        assert_eq!(st.plan_run(&[]), (Placement::Full, 0, 0));
        // A segment takes lines until it holds 30 bytes: the line that crosses it is its last.
        assert_eq!(
            st.plan_run(&[10, 10, 10, 10]),
            (Placement::Create(1), 3, 30)
        );
        assert_eq!(st.plan_run(&[25, 25]), (Placement::Create(1), 2, 50));
        st.appended(Placement::Create(1), 20);
        assert_eq!(st.plan_run(&[5, 5, 5]), (Placement::Append(1), 2, 10));
        st.appended(Placement::Append(1), 10);
        assert_eq!(st.plan_run(&[40, 40, 40]), (Placement::Create(2), 1, 40));
        st.appended(Placement::Create(2), 40);
        // 70 used: 30 left in the budget.
        assert_eq!(st.plan_run(&[20, 20]), (Placement::Create(3), 1, 20));
        assert_eq!(st.plan_run(&[31]), (Placement::Full, 0, 0));
    }
}
