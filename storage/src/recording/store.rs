//! The uploaded session recordings on the Auth service. This module owns [`RecordingStore`]:
//! the file layout under its directory (`<id>.part` while an upload is in progress, `<id>.hrec`
//! once complete, read-only), the recordings index in the cluster [`Backend`] (one immutable
//! entry per completed recording at `/recordings/index/<id>`), the resumable upload protocol
//! (`begin_upload` reports where to resume, `append` is idempotent for bytes already received,
//! `complete` validates the whole file, makes it immutable and indexes it), listing (from the
//! index), retention (file and entry together) and the migration of the `<id>.json` sidecars
//! that earlier versions kept as the index. It must never write outside its directory (session
//! ids are hex digits and dashes only), never change a completed recording or its index entry,
//! never report a recording complete before it, its directory entry and its index entry are
//! durable, and never read a clock: retention is given its cutoff.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::error::{RecordingError, RecordingStoreError};
use super::format::{ChunkCursor, Event, Header, TimedEvent, parse_header};
use super::index::{INDEX_VERSION, RecordingIndex, StoredEntry};
use super::is_valid_session_id;
use crate::backend::Backend;
use crate::clock::ManualClock;
use crate::memory_backend::MemoryBackend;

/// The default limit on one recording's size.
pub const DEFAULT_MAX_RECORDING_LEN: u64 = 4 * 1024 * 1024 * 1024;

const PART: &str = "part";
const DONE: &str = "hrec";
/// The index sidecar of earlier versions (migrated into the backend at open, then removed).
const SIDECAR: &str = "json";
const SIDECAR_TMP: &str = "json.tmp";
const LOCK_STRIPES: usize = 64;
const READ_BLOCK: u64 = 256 * 1024;

/// One completed recording, as listed (and kept in the backend's recordings index).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingIndexEntry {
    /// The session id.
    pub session_id: String,
    /// The kind of session (`ssh`).
    pub kind: String,
    /// The cluster.
    pub cluster: String,
    /// The hop user.
    pub user: String,
    /// The login on the server.
    pub login: String,
    /// The server's id.
    pub server_id: String,
    /// The server's host name.
    pub server_name: String,
    /// Session start, microseconds since the Unix epoch.
    pub start_unix_us: u64,
    /// Session end (the end event), microseconds since the Unix epoch.
    pub end_unix_us: u64,
    /// The file's size in bytes.
    pub size: u64,
    /// Number of chunks.
    pub chunks: u64,
    /// Number of events.
    pub events: u64,
    /// Exit status recorded in the end event.
    pub exit_status: Option<i32>,
    /// The file's format version.
    pub format_version: u16,
}

impl RecordingIndexEntry {
    /// When the session started.
    pub fn start(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_micros(self.start_unix_us)
    }

    /// When the session ended.
    pub fn end(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_micros(self.end_unix_us)
    }
}

/// Where an upload stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadStatus {
    /// Bytes received and kept: the offset to resume appending from.
    pub received: u64,
    /// Whether the recording was already completed (nothing more to send).
    pub complete: bool,
}

/// What [`RecordingStore::delete_older_than`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Completed recordings deleted.
    pub recordings: u64,
    /// Unfinished uploads (last written before the cutoff) deleted.
    pub abandoned_uploads: u64,
    /// Bytes freed.
    pub bytes: u64,
}

/// The recordings directory and its index: see the module documentation.
#[derive(Debug)]
pub struct RecordingStore {
    dir: PathBuf,
    /// Where the index entries are kept.
    index: RecordingIndex,
    max_len: u64,
    /// Per-session mutual exclusion, striped by the id's hash.
    locks: [Mutex<()>; LOCK_STRIPES],
}

/// What a scan of a file found.
struct Scan {
    header: Header,
    /// Length of the intact prefix (header and complete chunks).
    valid_len: u64,
    chunks: u64,
    events: u64,
    last: Duration,
    /// The end event's exit status, if the end event was read.
    end: Option<Option<i32>>,
    /// Why the scan stopped before the end of the file, if it did.
    stopped: Option<RecordingError>,
}

impl RecordingStore {
    /// Opens the store in `dir`, creating the directory (mode 0700) if missing, with its index
    /// in `index` (the cluster backend). Every completed recording in the directory that has no
    /// index entry (one written by a version that kept `<id>.json` sidecars, or one whose
    /// completion was cut short before its entry was written) is indexed now, from its sidecar
    /// if that is current, else by scanning the file; the sidecars of indexed recordings are
    /// removed. A file that cannot be indexed is logged and left out of the list; an index
    /// (backend) failure fails the open.
    pub fn open_with_backend(
        dir: &Path,
        index: Arc<dyn Backend>,
    ) -> Result<Self, RecordingStoreError> {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir).map_err(RecordingStoreError::io(dir))?;
        let store = Self {
            dir: dir.to_owned(),
            index: RecordingIndex::new(index),
            max_len: DEFAULT_MAX_RECORDING_LEN,
            locks: std::array::from_fn(|_| Mutex::new(())),
        };
        store.index_unindexed()?;
        Ok(store)
    }

    /// Opens the store in `dir` with its index in a private in-memory backend, rebuilt from the
    /// files at every open (as [`RecordingStore::open_with_backend`] migrates them). For tests
    /// and tools; the Auth service keeps the index in the cluster backend.
    pub fn open_dir(dir: &Path) -> Result<Self, RecordingStoreError> {
        // The index sets no leases, so the backend's clock is never consulted for expiry.
        let clock = Arc::new(ManualClock::new(SystemTime::UNIX_EPOCH));
        Self::open_with_backend(dir, Arc::new(MemoryBackend::new(clock)))
    }

    /// Sets the largest recording accepted (default [`DEFAULT_MAX_RECORDING_LEN`]).
    pub fn with_max_recording_len(mut self, max_len: u64) -> Self {
        self.max_len = max_len;
        self
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The backend holding the index.
    pub fn index(&self) -> &Arc<dyn Backend> {
        self.index.backend()
    }

    fn path(&self, id: &str, ext: &str) -> PathBuf {
        self.dir.join(format!("{id}.{ext}"))
    }

    fn lock(&self, id: &str) -> MutexGuard<'_, ()> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::hash::DefaultHasher::new();
        id.hash(&mut hasher);
        let stripe = (hasher.finish() % LOCK_STRIPES as u64) as usize;
        self.locks[stripe]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts, or resumes, the upload of `session_id`, whose file starts with `header` (a
    /// [`super::RecordingWriter::header_bytes`]). Returns the offset to append from: the length
    /// of the header for a new upload, or, for a resumed one, of the intact prefix received so
    /// far (a chunk cut short by a crash of either side is dropped and must be re-sent).
    pub fn begin_upload(
        &self,
        session_id: &str,
        header: &[u8],
    ) -> Result<UploadStatus, RecordingStoreError> {
        check_id(session_id)?;
        let rejected = |error| RecordingStoreError::Rejected {
            session_id: session_id.to_owned(),
            error,
        };
        let parsed = match parse_header(header) {
            Ok(Some((parsed, len))) if len == header.len() => parsed,
            Ok(Some(_)) => {
                return Err(rejected(RecordingError::CorruptHeader {
                    reason: "bytes follow the header".to_owned(),
                }));
            }
            Ok(None) => {
                return Err(rejected(RecordingError::Truncated {
                    offset: 0,
                    complete_chunks: 0,
                }));
            }
            Err(err) => return Err(rejected(err)),
        };
        if parsed.meta.session_id != session_id {
            return Err(rejected(RecordingError::InvalidMeta {
                field: "session_id",
                reason: format!("is {:?}, not the upload's", parsed.meta.session_id),
            }));
        }
        let _guard = self.lock(session_id);
        let mismatch = || RecordingStoreError::HeaderMismatch {
            session_id: session_id.to_owned(),
        };

        let done = self.path(session_id, DONE);
        if let Some(mut file) = open_existing(&done, false)? {
            let size = file_len(&file, &done)?;
            if read_prefix(&mut file, &done, header.len())? != header {
                return Err(mismatch());
            }
            // A completion cut short between the rename and the index write is healed here
            // (the sender will not complete again), best effort: the file is what counts.
            if let Err(err) = self.ensure_indexed(session_id) {
                tracing::warn!(session_id, %err, "cannot index a completed session recording");
            }
            return Ok(UploadStatus {
                received: size,
                complete: true,
            });
        }

        let part = self.path(session_id, PART);
        let Some(mut file) = open_existing(&part, true)? else {
            let mut opts = OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut file = opts.open(&part).map_err(RecordingStoreError::io(&part))?;
            file.write_all(header)
                .map_err(RecordingStoreError::io(&part))?;
            tracing::debug!(session_id, "session recording upload begun");
            return Ok(UploadStatus {
                received: header.len() as u64,
                complete: false,
            });
        };
        let existing = read_prefix(&mut file, &part, header.len())?;
        if header.get(..existing.len()) != Some(existing.as_slice()) {
            return Err(mismatch());
        }
        if existing.len() < header.len() {
            write_at(&mut file, &part, 0, header)?;
        }
        file.seek(SeekFrom::Start(0))
            .map_err(RecordingStoreError::io(&part))?;
        let received = match scan(&mut file, &part)? {
            Ok(scan) => {
                if let Some(why) = &scan.stopped {
                    tracing::info!(session_id, kept = scan.valid_len, %why,
                        "resumed session recording upload: dropping an incomplete tail");
                }
                scan.valid_len
            }
            // The header was just checked and written: unreachable unless the disk lies.
            Err(error) => {
                return Err(RecordingStoreError::Corrupt { path: part, error });
            }
        };
        file.set_len(received)
            .map_err(RecordingStoreError::io(&part))?;
        Ok(UploadStatus {
            received,
            complete: false,
        })
    }

    /// Writes `bytes` at `offset` of the upload of `session_id` and returns the bytes received
    /// so far. Bytes that overlap what was already received must equal it (a resumed sender
    /// re-sending them is harmless); an offset past the end is a [`RecordingStoreError::Gap`].
    pub fn append(
        &self,
        session_id: &str,
        offset: u64,
        bytes: &[u8],
    ) -> Result<u64, RecordingStoreError> {
        check_id(session_id)?;
        let _guard = self.lock(session_id);
        if self.path(session_id, DONE).exists() {
            return Err(RecordingStoreError::AlreadyComplete {
                session_id: session_id.to_owned(),
            });
        }
        let part = self.path(session_id, PART);
        let Some(mut file) = open_existing(&part, true)? else {
            return Err(RecordingStoreError::NotFound {
                session_id: session_id.to_owned(),
            });
        };
        let received = file_len(&file, &part)?;
        if offset > received {
            return Err(RecordingStoreError::Gap {
                session_id: session_id.to_owned(),
                received,
                offset,
            });
        }
        let end = offset.saturating_add(bytes.len() as u64);
        if end > self.max_len {
            return Err(RecordingStoreError::TooLarge {
                session_id: session_id.to_owned(),
                len: end,
                limit: self.max_len,
            });
        }
        let overlap = usize::try_from(end.min(received) - offset).unwrap_or(usize::MAX);
        let (old, new) = bytes.split_at_checked(overlap).unwrap_or((bytes, &[]));
        if let Some(at) = first_difference(&mut file, &part, offset, old)? {
            return Err(RecordingStoreError::Conflict {
                session_id: session_id.to_owned(),
                offset,
                first_difference: at,
            });
        }
        if !new.is_empty() {
            write_at(&mut file, &part, received, new)?;
        }
        Ok(end.max(received))
    }

    /// Completes the upload of `session_id`: checks that the file is a whole recording (every
    /// chunk intact, the last holding the end event), makes it durable and read-only, renames it
    /// into place and creates its index entry. Completing a completed recording returns its
    /// entry. An index entry already there for this id that differs from the file's is an
    /// [`RecordingStoreError::IndexConflict`], found before the file is made immutable.
    pub fn complete(&self, session_id: &str) -> Result<RecordingIndexEntry, RecordingStoreError> {
        check_id(session_id)?;
        let _guard = self.lock(session_id);
        let done = self.path(session_id, DONE);
        if done.exists() {
            return self.ensure_indexed(session_id);
        }
        let part = self.path(session_id, PART);
        let Some(mut file) = open_existing(&part, false)? else {
            return Err(RecordingStoreError::NotFound {
                session_id: session_id.to_owned(),
            });
        };
        let rejected = |error| RecordingStoreError::Rejected {
            session_id: session_id.to_owned(),
            error,
        };
        let scan = scan(&mut file, &part)?.map_err(rejected)?;
        if let Some(error) = scan.stopped {
            return Err(rejected(error));
        }
        if scan.end.is_none() {
            return Err(rejected(RecordingError::Unfinished {
                chunks: scan.chunks,
            }));
        }
        let entry = entry_from_scan(&scan, scan.valid_len);
        if self.index.get(session_id)?.is_some_and(|e| e != entry) {
            return Err(RecordingStoreError::IndexConflict {
                session_id: session_id.to_owned(),
            });
        }
        file.sync_all().map_err(RecordingStoreError::io(&part))?;
        make_read_only(&part)?;
        fs::rename(&part, &done).map_err(RecordingStoreError::io(&done))?;
        sync_dir(&self.dir)?;
        self.index.create(&entry)?;
        tracing::debug!(session_id, size = entry.size, "session recording completed");
        Ok(entry)
    }

    /// The completed recording of `session_id`, opened for reading.
    pub fn open(&self, session_id: &str) -> Result<File, RecordingStoreError> {
        check_id(session_id)?;
        let done = self.path(session_id, DONE);
        open_existing(&done, false)?.ok_or_else(|| RecordingStoreError::NotFound {
            session_id: session_id.to_owned(),
        })
    }

    /// Removes the completed recording of `session_id` and its index entry, for a store that
    /// hands completed recordings on to where they are kept (the S3 store's staging directory).
    pub fn remove_completed(&self, session_id: &str) -> Result<(), RecordingStoreError> {
        check_id(session_id)?;
        let _guard = self.lock(session_id);
        remove(&self.path(session_id, DONE))?;
        self.index.delete(session_id)?;
        sync_dir(&self.dir)
    }

    /// The completed recording of `session_id`, read into memory (parse it with
    /// [`super::Recording::parse`]).
    pub fn read(&self, session_id: &str) -> Result<Vec<u8>, RecordingStoreError> {
        let mut file = self.open(session_id)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(RecordingStoreError::io(self.path(session_id, DONE)))?;
        Ok(bytes)
    }

    /// The index entry of the completed recording of `session_id`. A completed recording in
    /// the directory without an entry is indexed first.
    pub fn entry(&self, session_id: &str) -> Result<RecordingIndexEntry, RecordingStoreError> {
        check_id(session_id)?;
        if let Some(entry) = self.index.get(session_id)? {
            return Ok(entry);
        }
        let _guard = self.lock(session_id);
        self.ensure_indexed(session_id)
    }

    /// The index entries of every completed recording, oldest start first, read from the index
    /// in pages of bounded size. An entry that does not decode is logged and left out.
    pub fn list(&self) -> Result<Vec<RecordingIndexEntry>, RecordingStoreError> {
        self.index.list()
    }

    /// Deletes every completed recording that ended before `cutoff` (its file, then its index
    /// entry), every upload last written before it, and stray sidecar and temporary files; then
    /// makes the deletions durable. A completed recording found without an index entry is
    /// judged by its contents (or, if they no longer parse, its modification time) and indexed
    /// if it is kept.
    pub fn delete_older_than(
        &self,
        cutoff: SystemTime,
    ) -> Result<RetentionReport, RecordingStoreError> {
        let cutoff_us = cutoff
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        let mut report = RetentionReport::default();

        // The index: each expired entry goes with its file. The file goes first, so a crash in
        // between leaves an expired entry, which the next run deletes.
        let expired = self.index.ended_before(cutoff_us)?;
        for id in &expired {
            let _guard = self.lock(id);
            let path = self.path(id, DONE);
            if let Some(meta) = metadata(&path)? {
                remove(&path)?;
                report.bytes += meta.len();
            }
            remove(&self.path(id, SIDECAR))?;
            self.index.delete(id)?;
            report.recordings += 1;
        }

        // The directory: abandoned uploads, stray files, and recordings without an entry.
        for (id, ext) in &self.dir_entries()? {
            let _guard = self.lock(id);
            let path = self.path(id, ext);
            let Some(meta) = metadata(&path)? else {
                continue;
            };
            let expired = match ext.as_str() {
                DONE => {
                    if self.index.has(id)? {
                        continue;
                    }
                    match self.entry_from_file(id) {
                        Ok(entry) if entry.end_unix_us < cutoff_us => true,
                        Ok(entry) => {
                            self.index.create(&entry)?;
                            remove_sidecar(&self.path(id, SIDECAR));
                            false
                        }
                        // A recording that no longer parses is judged by its modification time.
                        Err(_) => modified_before(&meta, cutoff),
                    }
                }
                PART | SIDECAR_TMP => modified_before(&meta, cutoff),
                SIDECAR => !self.path(id, DONE).exists() && modified_before(&meta, cutoff),
                _ => false,
            };
            if !expired {
                continue;
            }
            remove(&path)?;
            match ext.as_str() {
                DONE => {
                    remove(&self.path(id, SIDECAR))?;
                    report.recordings += 1;
                    report.bytes += meta.len();
                }
                PART => {
                    report.abandoned_uploads += 1;
                    report.bytes += meta.len();
                }
                _ => {}
            }
        }
        if report != RetentionReport::default() {
            sync_dir(&self.dir)?;
            tracing::info!(?report, "session recording retention");
        }
        Ok(report)
    }

    /// (session id, extension) of each file in the directory that the store could have made.
    fn dir_entries(&self) -> Result<Vec<(String, String)>, RecordingStoreError> {
        let read = fs::read_dir(&self.dir).map_err(RecordingStoreError::io(&self.dir))?;
        let mut out = Vec::new();
        for item in read {
            let item = item.map_err(RecordingStoreError::io(&self.dir))?;
            let name = item.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some((id, ext)) = name.split_once('.') else {
                continue;
            };
            if is_valid_session_id(id) && [DONE, PART, SIDECAR, SIDECAR_TMP].contains(&ext) {
                out.push((id.to_owned(), ext.to_owned()));
            }
        }
        Ok(out)
    }

    /// Indexes every completed recording of the directory that has no index entry (see
    /// [`RecordingStore::open_with_backend`]).
    fn index_unindexed(&self) -> Result<(), RecordingStoreError> {
        let (mut migrated, mut failed) = (0u64, 0u64);
        for (id, ext) in self.dir_entries()? {
            if ext != DONE {
                continue;
            }
            let _guard = self.lock(&id);
            if self.index.has(&id)? {
                // Indexed; a sidecar left by a crash right after the migration goes now.
                remove_sidecar(&self.path(&id, SIDECAR));
                continue;
            }
            match self.ensure_indexed(&id) {
                Ok(_) => migrated += 1,
                Err(err @ RecordingStoreError::Index { .. }) => return Err(err),
                Err(err) => {
                    failed += 1;
                    tracing::warn!(session_id = %id, %err,
                        "cannot index a stored session recording; it is left out of the list");
                }
            }
        }
        if migrated + failed > 0 {
            tracing::info!(
                migrated,
                failed,
                "session recordings indexed in the backend"
            );
        }
        Ok(())
    }

    /// The index entry of the completed recording `id`, created if missing (from a current
    /// sidecar, else by scanning the file); its sidecar, if any, is then removed. The caller
    /// holds the session's lock.
    fn ensure_indexed(&self, id: &str) -> Result<RecordingIndexEntry, RecordingStoreError> {
        if let Some(entry) = self.index.get(id)? {
            return Ok(entry);
        }
        let entry = self.entry_from_file(id)?;
        self.index.create(&entry)?;
        remove_sidecar(&self.path(id, SIDECAR));
        Ok(entry)
    }

    /// The entry of the completed recording `id` as its files say: its sidecar (from an earlier
    /// version) if that is readable, current and of the file's size, else by scanning the file.
    fn entry_from_file(&self, id: &str) -> Result<RecordingIndexEntry, RecordingStoreError> {
        let done = self.path(id, DONE);
        let Some(mut file) = open_existing(&done, false)? else {
            return Err(RecordingStoreError::NotFound {
                session_id: id.to_owned(),
            });
        };
        let size = file_len(&file, &done)?;
        let sidecar = fs::read(self.path(id, SIDECAR))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<StoredEntry>(&bytes).ok())
            .filter(|s| {
                s.index_version == INDEX_VERSION && s.entry.session_id == id && s.entry.size == size
            });
        if let Some(sidecar) = sidecar {
            return Ok(sidecar.entry);
        }
        let scan = scan(&mut file, &done)?.map_err(|error| RecordingStoreError::Corrupt {
            path: done.clone(),
            error,
        })?;
        if let Some(error) = scan.stopped.clone().or_else(|| {
            scan.end.is_none().then_some(RecordingError::Unfinished {
                chunks: scan.chunks,
            })
        }) {
            return Err(RecordingStoreError::Corrupt { path: done, error });
        }
        Ok(entry_from_scan(&scan, size))
    }
}

/// Removes an earlier version's sidecar of an indexed recording, best effort (the entry is in
/// the backend; a sidecar left behind is removed at the next open or by retention).
fn remove_sidecar(path: &Path) {
    if let Err(err) = remove(path) {
        tracing::warn!(%err, "cannot remove a session recording's old index sidecar");
    }
}

fn check_id(id: &str) -> Result<(), RecordingStoreError> {
    if is_valid_session_id(id) {
        Ok(())
    } else {
        Err(RecordingStoreError::InvalidSessionId {
            id: id.chars().take(80).collect(),
        })
    }
}

fn entry_from_scan(scan: &Scan, size: u64) -> RecordingIndexEntry {
    let meta = &scan.header.meta;
    let last_us = u64::try_from(scan.last.as_micros()).unwrap_or(u64::MAX);
    RecordingIndexEntry {
        session_id: meta.session_id.clone(),
        kind: meta.kind.clone(),
        cluster: meta.cluster.clone(),
        user: meta.user.clone(),
        login: meta.login.clone(),
        server_id: meta.server_id.clone(),
        server_name: meta.server_name.clone(),
        start_unix_us: meta.start_unix_us,
        end_unix_us: meta.start_unix_us.saturating_add(last_us),
        size,
        chunks: scan.chunks,
        events: scan.events,
        exit_status: scan.end.flatten(),
        format_version: scan.header.version,
    }
}

/// Reads `file` from the start, chunk by chunk, in bounded memory. The outer error is I/O; the
/// inner one a header that does not parse. Damage after the header stops the scan and is
/// reported in [`Scan::stopped`].
fn scan(file: &mut File, path: &Path) -> Result<Result<Scan, RecordingError>, RecordingStoreError> {
    file.seek(SeekFrom::Start(0))
        .map_err(RecordingStoreError::io(path))?;
    let mut buf = Vec::new();
    let mut eof = false;
    let mut fill = |buf: &mut Vec<u8>, eof: &mut bool| -> Result<(), RecordingStoreError> {
        let n = Read::take(&mut *file, READ_BLOCK)
            .read_to_end(buf)
            .map_err(RecordingStoreError::io(path))?;
        *eof = n == 0;
        Ok(())
    };
    let (header, header_len) = loop {
        match parse_header(&buf) {
            Ok(Some(parsed)) => break parsed,
            Ok(None) if eof => {
                return Ok(Err(RecordingError::Truncated {
                    offset: 0,
                    complete_chunks: 0,
                }));
            }
            Ok(None) => fill(&mut buf, &mut eof)?,
            Err(err) => return Ok(Err(err)),
        }
    };
    let mut cursor = ChunkCursor::new(&header, header_len);
    let mut scan = Scan {
        header,
        valid_len: header_len as u64,
        chunks: 0,
        events: 0,
        last: Duration::ZERO,
        end: None,
        stopped: None,
    };
    let mut start = header_len;
    loop {
        match cursor.parse_next(buf.get(start..).unwrap_or_default()) {
            Ok(Some((chunk, len))) => {
                scan.chunks += 1;
                scan.events += chunk.event_count();
                scan.last = chunk.last();
                if chunk.has_end()
                    && let Some(TimedEvent {
                        event: Event::End { exit_status },
                        ..
                    }) = chunk.events().last()
                {
                    scan.end = Some(exit_status);
                }
                start += len;
            }
            Ok(None) if eof => {
                if start < buf.len() {
                    scan.stopped = Some(cursor.truncated());
                }
                break;
            }
            Ok(None) => {
                buf.drain(..start.min(buf.len()));
                start = 0;
                fill(&mut buf, &mut eof)?;
            }
            Err(err) => {
                scan.stopped = Some(err);
                break;
            }
        }
    }
    scan.valid_len = cursor.offset();
    Ok(Ok(scan))
}

/// Opens `path` (read-only, or read-write); `None` if it does not exist.
fn open_existing(path: &Path, write: bool) -> Result<Option<File>, RecordingStoreError> {
    match OpenOptions::new().read(true).write(write).open(path) {
        Ok(file) => Ok(Some(file)),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(None),
        Err(err) => Err(RecordingStoreError::io(path)(err)),
    }
}

fn metadata(path: &Path) -> Result<Option<fs::Metadata>, RecordingStoreError> {
    match fs::metadata(path) {
        Ok(meta) => Ok(Some(meta)),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(None),
        Err(err) => Err(RecordingStoreError::io(path)(err)),
    }
}

fn modified_before(meta: &fs::Metadata, cutoff: SystemTime) -> bool {
    meta.modified().is_ok_and(|t| t < cutoff)
}

fn remove(path: &Path) -> Result<(), RecordingStoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(()),
        Err(err) => Err(RecordingStoreError::io(path)(err)),
    }
}

fn file_len(file: &File, path: &Path) -> Result<u64, RecordingStoreError> {
    Ok(file
        .metadata()
        .map_err(RecordingStoreError::io(path))?
        .len())
}

/// Up to `len` bytes from the start of `file`.
fn read_prefix(file: &mut File, path: &Path, len: usize) -> Result<Vec<u8>, RecordingStoreError> {
    let mut out = Vec::with_capacity(len);
    file.seek(SeekFrom::Start(0))
        .and_then(|_| Read::take(&mut *file, len as u64).read_to_end(&mut out))
        .map_err(RecordingStoreError::io(path))?;
    Ok(out)
}

fn write_at(
    file: &mut File,
    path: &Path,
    offset: u64,
    bytes: &[u8],
) -> Result<(), RecordingStoreError> {
    file.seek(SeekFrom::Start(offset))
        .and_then(|_| file.write_all(bytes))
        .map_err(RecordingStoreError::io(path))
}

/// The offset of the first byte of `expected` that differs from the file's bytes at `offset`
/// (which must all exist), compared in bounded blocks.
fn first_difference(
    file: &mut File,
    path: &Path,
    offset: u64,
    expected: &[u8],
) -> Result<Option<u64>, RecordingStoreError> {
    if expected.is_empty() {
        return Ok(None);
    }
    file.seek(SeekFrom::Start(offset))
        .map_err(RecordingStoreError::io(path))?;
    let mut block = vec![0u8; expected.len().min(READ_BLOCK as usize)];
    let mut at = offset;
    for want in expected.chunks(block.len()) {
        let have = block.get_mut(..want.len()).unwrap_or_default();
        file.read_exact(have)
            .map_err(RecordingStoreError::io(path))?;
        if let Some(i) = want.iter().zip(have.iter()).position(|(a, b)| a != b) {
            return Ok(Some(at + i as u64));
        }
        at += want.len() as u64;
    }
    Ok(None)
}

fn make_read_only(path: &Path) -> Result<(), RecordingStoreError> {
    let perms = {
        #[cfg(unix)]
        {
            std::os::unix::fs::PermissionsExt::from_mode(0o400)
        }
        #[cfg(not(unix))]
        {
            let mut perms = fs::metadata(path)
                .map_err(RecordingStoreError::io(path))?
                .permissions();
            perms.set_readonly(true);
            perms
        }
    };
    fs::set_permissions(path, perms).map_err(RecordingStoreError::io(path))
}

/// Makes the directory's entries (creations, renames, removals) durable.
fn sync_dir(dir: &Path) -> Result<(), RecordingStoreError> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(RecordingStoreError::io(dir))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
