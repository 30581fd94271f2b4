//! Session recording at the node.
//!
//! This module owns the node's spool of recordings, `<data_dir>/agent/recordings/`: one file per
//! recorded session in hop-storage's recording format, `<id>.part` while the session runs and
//! `<id>.rec` once its End event is on disk; the spool's byte budget
//! (`ssh_service.recording.max_spool_bytes`); closing files whose writer died with the process;
//! and, per session, a writer thread fed over a bounded channel. It must never make the PTY
//! relay wait on the disk (a full channel drops the bytes and the recording says how many),
//! never grow the spool past its budget except for the few bytes that close a file, and never
//! delete a recording: the uploader (`upload.rs`) does, once Auth confirms it holds it.
//!
//! What happens when a recording cannot be written (the spool is full, a disk error) depends on
//! the grant's mode, as in Teleport: `node` (best effort) closes the file with a
//! `recording.stopped` event, lets the session go on unrecorded and says so in the log and in a
//! `session.recording` audit event; `node-sync` (strict) refuses new sessions while the spool is
//! full and ends a running session whose recording fails. `proxy` and `proxy-sync` are recorded
//! by the proxy, not here (the proxy does not record yet); `off` records nothing.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use hop_platform::clock;
use hop_storage::recording::{
    ChunkCursor, RecordingMeta, RecordingWriter, WriterOptions, is_valid_session_id, parse_header,
};
use tokio::sync::{Notify, watch};

/// The spool directory under the agent's directory.
pub const SPOOL_DIR: &str = "recordings";
/// A recording still being written.
pub const PART_EXT: &str = "part";
/// A recording whose End event is on disk: ready to upload and complete.
pub const DONE_EXT: &str = "rec";
/// Recordings Auth refused for good, kept for the operator.
pub const REJECTED_DIR: &str = "rejected";
/// A new recording starts only with this much of the budget free (the largest chunk).
const MIN_FREE: u64 = 256 * 1024;
/// Events (output, input, resizes) waiting for a session's writer: with the relay's 16 KiB reads, at
/// most 16 MiB of output per session.
const QUEUE: usize = 1024;
/// A chunk left open this long is written out, so that a long idle session's recording reaches
/// the disk (and can be uploaded) without waiting for 32 KiB.
const FLUSH_AFTER: Duration = Duration::from_secs(2);

/// The spool's settings (`ssh_service.recording`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolSettings {
    pub max_bytes: u64,
    pub upload_interval: Duration,
}

impl Default for SpoolSettings {
    fn default() -> Self {
        Self {
            max_bytes: 1024 * 1024 * 1024,
            upload_interval: Duration::from_secs(10),
        }
    }
}

/// How a grant's recording mode applies at the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRecording {
    /// `off`: nothing is recorded.
    Off,
    /// `proxy`, `proxy-sync`: the proxy records (not implemented yet); the node does not.
    AtProxy,
    /// `node`: best effort.
    Node,
    /// `node-sync`: no session without its recording.
    NodeSync,
}

impl NodeRecording {
    /// Reads a grant's mode. An unknown mode (never sent by a valid Auth) records strictly.
    pub fn from_mode(mode: &str) -> Self {
        match mode {
            "off" => Self::Off,
            "proxy" | "proxy-sync" => Self::AtProxy,
            "node" => Self::Node,
            _ => Self::NodeSync,
        }
    }
}

/// Why a session's recording did not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordingRefused {
    /// The spool holds as much as it may (less than the largest chunk is free).
    #[error(
        "the node's session recording spool is full ({used} of {max} bytes: recordings are waiting for Auth)"
    )]
    SpoolFull { used: u64, max: u64 },
    /// The recording file could not be created or its metadata is invalid.
    #[error("cannot start the session recording: {0}")]
    Io(String),
}

/// The node's spool of recordings; see the module documentation.
#[derive(Debug)]
pub struct RecordingSpool {
    dir: PathBuf,
    settings: SpoolSettings,
    used: AtomicU64,
    /// Wakes the uploader: a recording was completed.
    pub changed: Notify,
}

impl RecordingSpool {
    /// Opens (creating, mode 0700) `<agent_dir>/recordings`, closes the recordings of sessions
    /// that were running when the agent stopped, and counts the bytes the spool holds.
    pub fn open(agent_dir: &Path, settings: SpoolSettings) -> io::Result<Arc<Self>> {
        let dir = agent_dir.join(SPOOL_DIR);
        let mut b = fs::DirBuilder::new();
        b.recursive(true);
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(&dir)?;
        for (id, path) in list(&dir, PART_EXT)? {
            match close_orphan(&path) {
                Ok(()) => {
                    tracing::warn!(session_id = %id, "closed the recording of a session that was running when the agent stopped");
                }
                Err(e) => {
                    tracing::error!(session_id = %id, error = %e, "cannot close an interrupted session recording; setting it aside");
                    let _ = set_aside(&dir, &path);
                }
            }
        }
        let used = dir_size(&dir)? + dir_size(&dir.join(REJECTED_DIR)).unwrap_or(0);
        Ok(Arc::new(Self {
            dir,
            settings,
            used: AtomicU64::new(used),
            changed: Notify::new(),
        }))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn settings(&self) -> SpoolSettings {
        self.settings
    }

    /// Bytes the spool holds (as its writers and the uploader account for them).
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Takes `n` bytes of the budget, unless that would exceed it.
    fn try_reserve(&self, n: u64) -> bool {
        let max = self.settings.max_bytes;
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(n).filter(|&t| t <= max)
            })
            .is_ok()
    }

    fn force_reserve(&self, n: u64) {
        self.used.fetch_add(n, Ordering::AcqRel);
    }

    /// Gives back `n` bytes (a recording was deleted after its upload).
    pub fn release(&self, n: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                Some(u.saturating_sub(n))
            });
    }

    /// Starts recording a session: creates `<id>.part` with its header and a writer thread.
    /// `on_failure` is called once if the recording stops early (it writes the audit event).
    pub fn start(
        self: &Arc<Self>,
        meta: RecordingMeta,
        strict: bool,
        started: Instant,
        on_failure: Box<dyn FnOnce(String) + Send>,
    ) -> Result<SessionRecorder, RecordingRefused> {
        let used = self.used();
        if used.saturating_add(MIN_FREE) > self.settings.max_bytes {
            return Err(RecordingRefused::SpoolFull {
                used,
                max: self.settings.max_bytes,
            });
        }
        if !is_valid_session_id(&meta.session_id) {
            return Err(RecordingRefused::Io(format!(
                "invalid session id {:?}",
                meta.session_id
            )));
        }
        let id = meta.session_id.clone();
        let writer =
            RecordingWriter::new(meta.clone()).map_err(|e| RecordingRefused::Io(e.to_string()))?;
        let path = self.dir.join(format!("{id}.{PART_EXT}"));
        let mut opts = OpenOptions::new();
        opts.read(true).write(true).create_new(true);
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut file = opts
            .open(&path)
            .map_err(|e| RecordingRefused::Io(format!("{}: {e}", path.display())))?;
        let header = writer.header_bytes().to_vec();
        let header = header.as_slice();
        self.force_reserve(header.len() as u64);
        if let Err(e) = file.write_all(header) {
            let _ = fs::remove_file(&path);
            self.release(header.len() as u64);
            return Err(RecordingRefused::Io(format!("{}: {e}", path.display())));
        }
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let (fail_tx, fail_rx) = watch::channel(None);
        let dropped = Arc::new(AtomicU64::new(0));
        let task = WriterTask {
            spool: self.clone(),
            path,
            file,
            good_len: header.len() as u64,
            writer: Some(writer),
            dropped: dropped.clone(),
            fail_tx,
            strict,
            started,
            on_failure: Some(on_failure),
        };
        std::thread::Builder::new()
            .name(format!("hop-rec-{}", id.get(..8).unwrap_or(&id)))
            .spawn(move || task.run(rx))
            .map_err(|e| RecordingRefused::Io(format!("cannot start the writer thread: {e}")))?;
        Ok(SessionRecorder {
            tx,
            dropped,
            failed: fail_rx,
        })
    }
}

/// What a session hands its writer.
#[derive(Debug)]
enum Record {
    Output(Duration, Vec<u8>),
    Input(Duration, Vec<u8>),
    Resize(Duration, u16, u16),
    Event(Duration, serde_json::Value),
    Finish(Duration, Option<i32>),
}

/// A session's side of its recording. Every method returns at once; times are since the
/// session started. Dropping every clone without [`SessionRecorder::finish`] ends the recording
/// without an exit status.
#[derive(Debug, Clone)]
pub struct SessionRecorder {
    tx: mpsc::SyncSender<Record>,
    dropped: Arc<AtomicU64>,
    failed: watch::Receiver<Option<String>>,
}

impl SessionRecorder {
    fn send(&self, r: Record, len: usize) {
        if let Err(mpsc::TrySendError::Full(_)) = self.tx.try_send(r) {
            self.dropped.fetch_add(len as u64, Ordering::Relaxed);
        }
    }

    /// Terminal output.
    pub fn output(&self, at: Duration, data: &[u8]) {
        self.send(Record::Output(at, data.to_vec()), data.len());
    }

    /// What the user typed.
    pub fn input(&self, at: Duration, data: &[u8]) {
        self.send(Record::Input(at, data.to_vec()), data.len());
    }

    /// A window change.
    pub fn resize(&self, at: Duration, cols: u16, rows: u16) {
        self.send(Record::Resize(at, cols, rows), 0);
    }

    /// A structured event (the exec command, …).
    pub fn event(&self, at: Duration, event: serde_json::Value) {
        self.send(Record::Event(at, event), 0);
    }

    /// The session ended. Waits for room in the queue on a separate thread: the End event is
    /// never dropped.
    pub fn finish(self, at: Duration, exit_status: Option<i32>) {
        let tx = self.tx.clone();
        if let Err(mpsc::TrySendError::Full(r)) = tx.try_send(Record::Finish(at, exit_status)) {
            std::thread::spawn(move || {
                let _ = tx.send(r);
            });
        }
    }

    /// Resolves with the reason once a strict (`node-sync`) recording has failed and the
    /// session must end; never resolves otherwise.
    pub async fn failure(&self) -> String {
        let mut rx = self.failed.clone();
        let why = rx.wait_for(|v| v.is_some()).await.ok().map(|v| v.clone());
        match why {
            Some(why) => why.unwrap_or_default(),
            None => std::future::pending().await,
        }
    }
}

/// One session's writer thread.
struct WriterTask {
    spool: Arc<RecordingSpool>,
    path: PathBuf,
    file: File,
    /// The file's length after the last complete write: a recording stopped early continues
    /// with its closing events from there (the chunk that could not be written is dropped).
    good_len: u64,
    /// `None` once the recording is closed.
    writer: Option<RecordingWriter>,
    dropped: Arc<AtomicU64>,
    fail_tx: watch::Sender<Option<String>>,
    strict: bool,
    started: Instant,
    on_failure: Option<Box<dyn FnOnce(String) + Send>>,
}

impl WriterTask {
    fn run(mut self, rx: mpsc::Receiver<Record>) {
        loop {
            let record = match rx.recv_timeout(FLUSH_AFTER) {
                Ok(r) => Some(r),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let at = clock::since(self.started);
                    self.close(at, None, None);
                    return;
                }
            };
            let Some(w) = self.writer.as_mut() else {
                // Closed early: keep draining until the session ends.
                continue;
            };
            let dropped = self.dropped.swap(0, Ordering::Relaxed);
            let mut bytes = Vec::new();
            if dropped > 0
                && let Some(r) = &record
            {
                let at = match r {
                    Record::Output(at, _)
                    | Record::Input(at, _)
                    | Record::Resize(at, ..)
                    | Record::Event(at, _)
                    | Record::Finish(at, _) => *at,
                };
                let gap = serde_json::json!({"type": "recording.gap", "dropped_bytes": dropped});
                bytes.extend(w.push_event(at, &gap).ok().flatten().unwrap_or_default());
                tracing::warn!(path = %self.path.display(), dropped, "session recording fell behind: bytes dropped (a gap event marks the place)");
            }
            let mut finish = None;
            let more = match record {
                None => w.flush_stale(clock::since(self.started), FLUSH_AFTER),
                Some(Record::Output(at, d)) => w.push_output(at, &d),
                Some(Record::Input(at, d)) => w.push_input(at, &d),
                Some(Record::Resize(at, c, r)) => w.push_resize(at, c, r),
                Some(Record::Event(at, v)) => w.push_event(at, &v).ok().flatten(),
                Some(Record::Finish(at, status)) => {
                    finish = Some((at, status));
                    None
                }
            };
            bytes.extend(more.unwrap_or_default());
            self.append(&bytes);
            if let Some((at, status)) = finish {
                self.close(at, status, None);
                return;
            }
        }
    }

    /// Appends completed chunks within the budget; stops the recording when it cannot.
    fn append(&mut self, bytes: &[u8]) {
        if bytes.is_empty() || self.writer.is_none() {
            return;
        }
        let n = bytes.len() as u64;
        if !self.spool.try_reserve(n) {
            let why = format!(
                "the node's session recording spool is full ({} of {} bytes)",
                self.spool.used(),
                self.spool.settings.max_bytes
            );
            let at = clock::since(self.started);
            self.close(at, None, Some(why));
            return;
        }
        if let Err(e) = self.file.write_all(bytes) {
            self.spool.release(n);
            let _ = self.file.set_len(self.good_len);
            let _ = self.file.seek(SeekFrom::Start(self.good_len));
            let why = format!("writing {}: {e}", self.path.display());
            let at = clock::since(self.started);
            self.close(at, None, Some(why));
            return;
        }
        self.good_len += n;
    }

    /// Writes the End event (after a `recording.stopped` event when `stopped` says why), makes
    /// the file durable, renames it to `<id>.rec` and wakes the uploader.
    fn close(&mut self, at: Duration, exit_status: Option<i32>, stopped: Option<String>) {
        let Some(mut w) = self.writer.take() else {
            return;
        };
        if stopped.is_some() {
            // Events the writer holds (and a chunk that could not be written) are dropped: the
            // closing events follow the last chunk in the file (a rare path: the file is read
            // back rather than every write being parsed).
            let reopened = self
                .file
                .set_len(self.good_len)
                .and_then(|()| intact_end(&mut self.file))
                .and_then(|(meta, end, cursor)| {
                    self.file.seek(SeekFrom::Start(end))?;
                    resumed(meta, &cursor)
                });
            match reopened {
                Ok(r) => w = r,
                Err(e) => tracing::error!(error = %e, "cannot close a stopped session recording"),
            }
        }
        let mut bytes = Vec::new();
        if let Some(why) = &stopped {
            let ev = serde_json::json!({"type": "recording.stopped", "reason": why});
            bytes.extend(w.push_event(at, &ev).ok().flatten().unwrap_or_default());
        }
        bytes.extend(w.finish(at, exit_status));
        self.spool.force_reserve(bytes.len() as u64);
        let done = self.path.with_extension(DONE_EXT);
        let result = self
            .file
            .write_all(&bytes)
            .and_then(|()| self.file.sync_all())
            .and_then(|()| fs::rename(&self.path, &done))
            .and_then(|()| sync_dir(&self.spool.dir));
        if let Err(e) = &result {
            // The file keeps its intact prefix; the next start of the agent closes it.
            tracing::error!(path = %self.path.display(), error = %e, "cannot finish a session recording");
        }
        self.spool.changed.notify_one();
        let failure = match (stopped, result) {
            (Some(why), _) => Some(why),
            (None, Err(e)) => Some(format!("finishing {}: {e}", self.path.display())),
            (None, Ok(())) => None,
        };
        if let Some(why) = failure {
            tracing::warn!(path = %self.path.display(), reason = %why, strict = self.strict, "session recording stopped early");
            if self.strict {
                let _ = self.fail_tx.send(Some(why.clone()));
            }
            if let Some(f) = self.on_failure.take() {
                f(why);
            }
        }
    }
}

/// `(session id, path)` of the files in `dir` with extension `ext`.
pub fn list(dir: &Path, ext: &str) -> io::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some(ext) {
            continue;
        }
        let Some(id) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if is_valid_session_id(id) {
            out.push((id.to_string(), path));
        }
    }
    out.sort();
    Ok(out)
}

fn dir_size(dir: &Path) -> io::Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let meta = entry?.metadata()?;
        if meta.is_file() {
            total += meta.len();
        }
    }
    Ok(total)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Moves a recording that can never be uploaded to `rejected/`, for the operator.
pub fn set_aside(dir: &Path, path: &Path) -> io::Result<PathBuf> {
    let rejected = dir.join(REJECTED_DIR);
    fs::create_dir_all(&rejected)?;
    let to = rejected.join(path.file_name().unwrap_or_default());
    fs::rename(path, &to)?;
    Ok(to)
}

/// Reads a recording from `offset` (a chunk boundary) to the end of its intact chunks, at most
/// about `max` bytes (always at least one whole chunk). Returns the whole chunks read and
/// whether they reach the end of the intact part of the file.
pub fn read_whole_chunks(file: &mut File, offset: u64, max: usize) -> io::Result<(Vec<u8>, bool)> {
    use hop_storage::recording::parse_chunk;
    file.seek(SeekFrom::Start(offset))?;
    let mut buf: Vec<u8> = Vec::new();
    let mut whole = 0usize;
    let mut block = vec![0u8; 64 * 1024];
    loop {
        // Take every complete chunk already in the buffer.
        loop {
            let rest = buf.get(whole..).unwrap_or_default();
            match parse_chunk(rest) {
                Ok(Some((_, len))) => {
                    if whole > 0 && whole + len > max {
                        buf.truncate(whole);
                        return Ok((buf, false));
                    }
                    whole += len;
                }
                Ok(None) => break,
                // A damaged chunk ends the intact part.
                Err(_) => {
                    buf.truncate(whole);
                    return Ok((buf, true));
                }
            }
        }
        let n = file.read(&mut block)?;
        if n == 0 {
            buf.truncate(whole);
            return Ok((buf, true));
        }
        buf.extend_from_slice(block.get(..n).unwrap_or_default());
    }
}

/// Reads the header at the start of a recording file: its bytes and metadata.
pub fn read_header(file: &mut File) -> io::Result<(Vec<u8>, RecordingMeta)> {
    file.seek(SeekFrom::Start(0))?;
    let mut buf = Vec::new();
    let mut block = vec![0u8; 4096];
    loop {
        match parse_header(&buf) {
            Ok(Some((h, len))) => {
                buf.truncate(len);
                return Ok((buf, h.meta));
            }
            Ok(None) => {}
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
        }
        let n = file.read(&mut block)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the recording's header is incomplete",
            ));
        }
        buf.extend_from_slice(block.get(..n).unwrap_or_default());
    }
}

/// Closes `<id>.part` left by a writer that stopped with the process: keeps its intact chunks,
/// adds a `recording.interrupted` event and an End event, and renames it to `<id>.rec`.
/// Where a recording file's intact chunks end: its metadata, that offset, and the cursor
/// after the last intact chunk.
fn intact_end(file: &mut File) -> io::Result<(RecordingMeta, u64, ChunkCursor)> {
    let (header_bytes, meta) = read_header(file)?;
    let header = parse_header(&header_bytes)
        .ok()
        .flatten()
        .map(|(h, _)| h)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad header"))?;
    let mut cursor = ChunkCursor::new(&header, header_bytes.len());
    let mut offset = header_bytes.len() as u64;
    loop {
        let (bytes, end) = read_whole_chunks(file, offset, 4 * 1024 * 1024)?;
        let mut pos = 0usize;
        while let Ok(Some((_, len))) = cursor.parse_next(bytes.get(pos..).unwrap_or_default()) {
            pos += len;
        }
        offset += pos as u64;
        if end || pos < bytes.len() || bytes.is_empty() {
            return Ok((meta, offset, cursor));
        }
    }
}

/// A writer that continues the file after `cursor` (its last intact chunk).
fn resumed(meta: RecordingMeta, cursor: &ChunkCursor) -> io::Result<RecordingWriter> {
    RecordingWriter::resume(
        meta,
        WriterOptions::default(),
        cursor.chunks(),
        cursor.last(),
    )
    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
}

/// Closes `<id>.part` left by a writer that stopped with the process: keeps its intact chunks,
/// adds a `recording.interrupted` event and an End event, and renames it to `<id>.rec`.
fn close_orphan(path: &Path) -> io::Result<()> {
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    let (meta, offset, cursor) = intact_end(&mut file)?;
    file.set_len(offset)?;
    if !cursor.ended() {
        let mut w = resumed(meta, &cursor)?;
        let ev = serde_json::json!({"type": "recording.interrupted"});
        let mut bytes = w
            .push_event(cursor.last(), &ev)
            .ok()
            .flatten()
            .unwrap_or_default();
        bytes.extend(w.finish(cursor.last(), None));
        file.seek(SeekFrom::Start(offset))?;
        file.write_all(&bytes)?;
    }
    file.sync_all()?;
    fs::rename(path, path.with_extension(DONE_EXT))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use hop_platform::clock;
    use hop_storage::recording::{OwnedEvent, Recording};

    use super::*;

    fn meta(id: &str) -> RecordingMeta {
        RecordingMeta {
            session_id: id.into(),
            kind: "ssh".into(),
            cluster: "c1".into(),
            user: "alice".into(),
            login: "root".into(),
            server_id: "host-1".into(),
            server_name: "node1".into(),
            start_unix_us: 1_700_000_000_000_000,
            cols: 80,
            rows: 24,
            term: "xterm".into(),
        }
    }

    fn events(path: &Path) -> Vec<OwnedEvent> {
        let bytes = fs::read(path).unwrap();
        Recording::parse(&bytes)
            .unwrap()
            .events()
            .map(|e| e.unwrap().event.to_owned_event())
            .collect()
    }

    fn wait_for(path: &Path) {
        let deadline = clock::now() + Duration::from_secs(10);
        while !path.exists() {
            assert!(clock::now() < deadline, "{} never appeared", path.display());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[tokio::test]
    async fn a_session_is_recorded_and_closed() {
        let dir = tempfile::tempdir().unwrap();
        let spool = RecordingSpool::open(dir.path(), SpoolSettings::default()).unwrap();
        let rec = spool
            .start(meta("aa-01"), false, clock::now(), Box::new(|_| {}))
            .unwrap();
        let ms = Duration::from_millis;
        rec.output(ms(1), b"$ ");
        rec.input(ms(2), b"echo hi\r");
        rec.resize(ms(3), 100, 30);
        rec.output(ms(4), b"hi\r\n");
        rec.finish(ms(5), Some(7));
        let done = spool.dir().join("aa-01.rec");
        wait_for(&done);
        assert_eq!(
            events(&done),
            vec![
                OwnedEvent::Output(b"$ ".to_vec()),
                OwnedEvent::Input(b"echo hi\r".to_vec()),
                OwnedEvent::Resize {
                    cols: 100,
                    rows: 30
                },
                OwnedEvent::Output(b"hi\r\n".to_vec()),
                OwnedEvent::End {
                    exit_status: Some(7)
                },
            ]
        );
        assert_eq!(spool.used(), fs::metadata(&done).unwrap().len());
    }

    #[tokio::test]
    async fn a_full_spool_refuses_or_stops_recordings() {
        let dir = tempfile::tempdir().unwrap();
        let settings = SpoolSettings {
            max_bytes: 1024 * 1024,
            ..Default::default()
        };
        let spool = RecordingSpool::open(dir.path(), settings).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let rec = spool
            .start(
                meta("bb-01"),
                true,
                clock::now(),
                Box::new(move |why| tx.send(why).unwrap()),
            )
            .unwrap();
        // 2 MiB of output, in pieces the queue can hold.
        for i in 0..64u64 {
            rec.output(Duration::from_millis(i), &[b'x'; 32 * 1024]);
            std::thread::sleep(Duration::from_millis(2));
        }
        let why = tokio::time::timeout(Duration::from_secs(10), rec.failure())
            .await
            .expect("a strict recording reports its failure");
        assert!(why.contains("spool is full"), "{why}");
        assert!(rx.recv().unwrap().contains("spool is full"));
        let done = spool.dir().join("bb-01.rec");
        wait_for(&done);
        let ev = events(&done);
        assert!(matches!(ev.last(), Some(OwnedEvent::End { .. })), "{ev:?}");
        assert!(
            ev.iter()
                .any(|e| matches!(e, OwnedEvent::Json(j) if j.contains("recording.stopped"))),
            "{ev:?}"
        );
        assert!(spool.used() <= settings.max_bytes);
        assert!(spool.used() + MIN_FREE > settings.max_bytes);
        // A new session finds the spool full.
        let err = spool
            .start(meta("bb-02"), true, clock::now(), Box::new(|_| {}))
            .unwrap_err();
        assert!(matches!(err, RecordingRefused::SpoolFull { .. }), "{err}");
    }

    #[test]
    fn an_interrupted_recording_is_closed_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let spool_dir = dir.path().join(SPOOL_DIR);
        fs::create_dir_all(&spool_dir).unwrap();
        let mut w = RecordingWriter::new(meta("cc-01")).unwrap();
        let mut file = w.header_bytes().to_vec();
        file.extend(
            w.push_output(Duration::from_millis(3), b"kept")
                .unwrap_or_default(),
        );
        file.extend(w.flush_chunk().unwrap_or_default());
        file.extend(
            w.push_output(Duration::from_millis(4), b"torn")
                .unwrap_or_default(),
        );
        file.extend(w.flush_chunk().unwrap_or_default());
        file.truncate(file.len() - 2);
        fs::write(spool_dir.join("cc-01.part"), &file).unwrap();
        let spool = RecordingSpool::open(dir.path(), SpoolSettings::default()).unwrap();
        let done = spool.dir().join("cc-01.rec");
        let ev = events(&done);
        assert_eq!(ev[0], OwnedEvent::Output(b"kept".to_vec()));
        assert!(matches!(&ev[1], OwnedEvent::Json(j) if j.contains("interrupted")));
        assert_eq!(ev[2], OwnedEvent::End { exit_status: None });
        assert_eq!(spool.used(), fs::metadata(&done).unwrap().len());
    }
}
