//! The node's uploader of session recordings.
//!
//! This module owns moving the spool's recordings (`recorder.rs`) to Auth with the
//! `SessionRecordings` API, resumably: for each file it asks Auth where the upload stands
//! (`BeginRecordingUpload`), streams whole chunks from there (`UploadRecording`), and completes
//! the upload once the file's End event is sent. Finished recordings go at once; recordings of
//! sessions still running go every `upload_interval`, so a long session is mostly on Auth
//! before it ends. While Auth is away it retries with a jittered backoff; a broken stream
//! resumes where Auth's copy ends. It must never delete a local file before Auth has confirmed
//! the recording complete, and never retry forever what Auth refused for good (such a file is
//! set aside under `rejected/` and logged).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hop_platform::clock;
use hop_storage::recording::UploadStatus;

use super::audit::ChannelMaker;
use super::recorder::{
    DONE_EXT, PART_EXT, RecordingSpool, list, read_header, read_whole_chunks, set_aside,
};
use crate::backoff::Backoff;
use hop_api::proto::session_recordings_client::SessionRecordingsClient;
use hop_api::proto::{BeginRecordingUploadRequest, RecordingUploadPart};

/// Most bytes in one upload message.
const PART: usize = 1024 * 1024;
/// Most bytes in one upload stream (one call).
const STREAM: usize = 8 * 1024 * 1024;

/// One message of an upload stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub offset: u64,
    pub data: Vec<u8>,
    pub finish: bool,
}

/// Why an upload step did not go through, by what the uploader does next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UploadFailure {
    /// Auth is unreachable or failing: retry later with backoff.
    #[error("Auth is unavailable: {0}")]
    Unavailable(String),
    /// Auth lost track of the upload (it restarted, or bytes are missing): begin again.
    #[error("the upload must be resumed: {0}")]
    Resume(String),
    /// Auth will never accept these bytes: set the file aside.
    #[error("Auth refused the recording: {0}")]
    Refused(String),
    /// The local file cannot be read right now.
    #[error("reading the local recording: {0}")]
    Local(String),
}

/// Where recordings go: Auth over gRPC, or a fake in tests.
pub trait UploadTarget {
    /// Starts or resumes the upload; says how many bytes Auth holds and whether it is complete.
    fn begin(
        &mut self,
        session_id: &str,
        header: &[u8],
    ) -> impl Future<Output = Result<UploadStatus, UploadFailure>> + Send;
    /// Sends parts in one stream.
    fn send(
        &mut self,
        session_id: &str,
        parts: Vec<Part>,
    ) -> impl Future<Output = Result<UploadStatus, UploadFailure>> + Send;
}

/// What the uploader remembers about one file between rounds: the bytes Auth confirmed, or
/// `None` when the next step must begin (again).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub acked: Option<u64>,
}

/// What one upload round achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uploaded {
    /// Auth holds the whole recording: the local file may go.
    Complete,
    /// Auth holds this many bytes of a recording still being written.
    Partial(u64),
}

/// How much one round sends.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub part: usize,
    pub stream: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            part: PART,
            stream: STREAM,
        }
    }
}

fn local(e: std::io::Error) -> UploadFailure {
    if e.kind() == std::io::ErrorKind::InvalidData {
        UploadFailure::Refused(format!("the local file is damaged: {e}"))
    } else {
        UploadFailure::Local(e.to_string())
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, UploadFailure> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| UploadFailure::Local(e.to_string()))?
        .map_err(local)
}

/// Uploads what Auth does not hold yet of the recording at `path` (`complete`: its End event is
/// written and the upload is to be completed). Resumes from `progress`, and begins again when
/// Auth asks for it.
pub async fn upload_file<T: UploadTarget>(
    target: &mut T,
    session_id: &str,
    path: &Path,
    complete: bool,
    progress: &mut Progress,
    limits: Limits,
) -> Result<Uploaded, UploadFailure> {
    let p = path.to_path_buf();
    let (header, local_len) = blocking(move || {
        let mut f = std::fs::File::open(&p)?;
        let (header, _) = read_header(&mut f)?;
        Ok((header, f.metadata()?.len()))
    })
    .await?;
    let mut resumes = 0;
    loop {
        let acked = match progress.acked {
            Some(a) => a,
            None => {
                let st = target.begin(session_id, &header).await?;
                if st.complete {
                    return if complete && st.received == local_len {
                        Ok(Uploaded::Complete)
                    } else {
                        Err(UploadFailure::Refused(format!(
                            "Auth already holds a completed recording of {} bytes for this session; this node's copy has {local_len}",
                            st.received
                        )))
                    };
                }
                progress.acked = Some(st.received);
                st.received
            }
        };
        if acked > local_len {
            progress.acked = None;
            return Err(UploadFailure::Refused(format!(
                "Auth holds {acked} bytes of this session, more than this node's {local_len}"
            )));
        }
        let (parts, reached_end) = read_parts(path, acked, limits).await?;
        let mut parts = parts;
        if complete && reached_end {
            match parts.last_mut() {
                Some(last) => last.finish = true,
                None => parts.push(Part {
                    offset: acked,
                    data: Vec::new(),
                    finish: true,
                }),
            }
        }
        if parts.is_empty() {
            return Ok(Uploaded::Partial(acked));
        }
        match target.send(session_id, parts).await {
            Ok(st) if st.complete => return Ok(Uploaded::Complete),
            Ok(st) => {
                progress.acked = Some(st.received);
                if reached_end {
                    return Ok(Uploaded::Partial(st.received));
                }
            }
            Err(UploadFailure::Resume(why)) => {
                progress.acked = None;
                resumes += 1;
                if resumes > 2 {
                    return Err(UploadFailure::Unavailable(format!(
                        "the upload keeps needing to be resumed: {why}"
                    )));
                }
            }
            Err(e) => {
                progress.acked = None;
                return Err(e);
            }
        }
    }
}

/// Whole chunks from `offset`, in parts, up to a stream's worth; and whether they reach the
/// end of the file's intact chunks.
async fn read_parts(
    path: &Path,
    offset: u64,
    limits: Limits,
) -> Result<(Vec<Part>, bool), UploadFailure> {
    let p = path.to_path_buf();
    blocking(move || {
        let mut f = std::fs::File::open(&p)?;
        let mut parts = Vec::new();
        let (mut at, mut total) = (offset, 0usize);
        loop {
            let (data, end) = read_whole_chunks(&mut f, at, limits.part)?;
            let n = data.len();
            if n > 0 {
                parts.push(Part {
                    offset: at,
                    data,
                    finish: false,
                });
            }
            at += n as u64;
            total += n;
            if end || n == 0 {
                return Ok((parts, end));
            }
            if total >= limits.stream {
                return Ok((parts, false));
            }
        }
    })
    .await
}

/// The gRPC [`UploadTarget`]: Auth through the proxy, with the node's host certificate.
pub struct AuthTarget {
    connect: ChannelMaker,
    client: Option<SessionRecordingsClient<tonic::transport::Channel>>,
}

impl AuthTarget {
    pub fn new(connect: ChannelMaker) -> Self {
        Self {
            connect,
            client: None,
        }
    }

    async fn client(
        &mut self,
    ) -> Result<SessionRecordingsClient<tonic::transport::Channel>, UploadFailure> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let ch = (self.connect)()
            .await
            .map_err(|e| UploadFailure::Unavailable(hop_net::connect::error_chain(&e)))?;
        let c = SessionRecordingsClient::new(ch);
        self.client = Some(c.clone());
        Ok(c)
    }

    fn failure(&mut self, s: tonic::Status) -> UploadFailure {
        use tonic::Code;
        let msg = s.message().to_string();
        match s.code() {
            Code::FailedPrecondition => UploadFailure::Resume(msg),
            Code::InvalidArgument | Code::PermissionDenied | Code::AlreadyExists => {
                UploadFailure::Refused(msg)
            }
            _ => {
                self.client = None;
                UploadFailure::Unavailable(hop_net::connect::error_chain(&s))
            }
        }
    }
}

impl UploadTarget for AuthTarget {
    async fn begin(
        &mut self,
        session_id: &str,
        header: &[u8],
    ) -> Result<UploadStatus, UploadFailure> {
        let mut c = self.client().await?;
        let r = c
            .begin_recording_upload(BeginRecordingUploadRequest {
                session_id: session_id.to_string(),
                header: header.to_vec(),
            })
            .await;
        match r {
            Ok(r) => {
                let r = r.into_inner();
                Ok(UploadStatus {
                    received: r.received,
                    complete: r.complete,
                })
            }
            Err(s) => Err(self.failure(s)),
        }
    }

    async fn send(
        &mut self,
        session_id: &str,
        parts: Vec<Part>,
    ) -> Result<UploadStatus, UploadFailure> {
        let mut c = self.client().await?;
        let msgs: Vec<RecordingUploadPart> = parts
            .into_iter()
            .map(|p| RecordingUploadPart {
                session_id: session_id.to_string(),
                offset: p.offset,
                data: p.data,
                finish: p.finish,
            })
            .collect();
        match c.upload_recording(tokio_stream::iter(msgs)).await {
            Ok(r) => {
                let r = r.into_inner();
                Ok(UploadStatus {
                    received: r.received,
                    complete: r.complete,
                })
            }
            Err(s) => Err(self.failure(s)),
        }
    }
}

/// Uploads the spool's recordings until the process stops; see the module documentation.
pub async fn run(spool: Arc<RecordingSpool>, connect: ChannelMaker) {
    let mut target = AuthTarget::new(connect);
    let mut progress: HashMap<String, Progress> = HashMap::new();
    let mut backoff = Backoff::new(
        Duration::from_secs(1),
        Duration::from_secs(1),
        Duration::from_secs(30),
    );
    let interval = spool.settings().upload_interval;
    let mut last_partial: Option<Instant> = None;
    let mut warned = false;
    loop {
        let files = match spool_files(&spool).await {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(error = %e, dir = %spool.dir().display(), "cannot list the session recording spool");
                Vec::new()
            }
        };
        let partial_due = last_partial.is_none_or(|t| clock::since(t) >= interval);
        let mut unavailable = None;
        for (id, path, complete) in &files {
            if !complete && !partial_due {
                continue;
            }
            let prog = progress.entry(id.clone()).or_default();
            let result =
                upload_file(&mut target, id, path, *complete, prog, Limits::default()).await;
            match result {
                Ok(Uploaded::Complete) => {
                    progress.remove(id);
                    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
                    match std::fs::remove_file(path) {
                        Ok(()) => spool.release(size),
                        Err(e) => {
                            tracing::error!(path = %path.display(), error = %e, "cannot remove an uploaded session recording")
                        }
                    }
                    tracing::info!(session_id = %id, size, "session recording uploaded to Auth");
                }
                Ok(Uploaded::Partial(_)) => {}
                Err(UploadFailure::Refused(why)) => {
                    progress.remove(id);
                    match set_aside(spool.dir(), path) {
                        Ok(to) => {
                            tracing::error!(session_id = %id, reason = %why, kept = %to.display(), "Auth refused a session recording; it is set aside and will not be retried")
                        }
                        Err(e) => {
                            tracing::error!(session_id = %id, reason = %why, error = %e, "Auth refused a session recording and it cannot be set aside")
                        }
                    }
                }
                Err(UploadFailure::Local(why)) => {
                    tracing::debug!(session_id = %id, reason = %why, "session recording not readable now; retrying later");
                }
                Err(e @ (UploadFailure::Unavailable(_) | UploadFailure::Resume(_))) => {
                    unavailable = Some(e.to_string());
                    break;
                }
            }
        }
        if partial_due && unavailable.is_none() {
            last_partial = Some(clock::now());
        }
        progress.retain(|id, _| files.iter().any(|(f, ..)| f == id));
        match unavailable {
            Some(why) => {
                let delay = backoff.next_delay(rand::random::<f64>());
                if !warned {
                    tracing::warn!(reason = %why, waiting = files.len(), "cannot upload session recordings to Auth; retrying with backoff");
                    warned = true;
                }
                tokio::time::sleep(delay).await;
            }
            None => {
                if warned {
                    tracing::info!("uploading session recordings to Auth again");
                    warned = false;
                }
                backoff.reset();
                tokio::select! {
                    _ = spool.changed.notified() => {}
                    _ = tokio::time::sleep(interval) => {}
                }
            }
        }
    }
}

/// `(session id, path, complete)` of every recording in the spool, finished ones first.
async fn spool_files(spool: &RecordingSpool) -> std::io::Result<Vec<(String, PathBuf, bool)>> {
    let dir = spool.dir().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut out: Vec<(String, PathBuf, bool)> = list(&dir, DONE_EXT)?
            .into_iter()
            .map(|(id, p)| (id, p, true))
            .collect();
        out.extend(
            list(&dir, PART_EXT)?
                .into_iter()
                .map(|(id, p)| (id, p, false)),
        );
        Ok(out)
    })
    .await
    .map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use hop_storage::recording::{RecordingMeta, RecordingStore, RecordingWriter, WriterOptions};

    use super::*;
    use hop_auth::recordings::{RecordingUploads, UploadError};

    const ID: &str = "feed-0001";
    const HOST: &str = "host-1";

    /// Auth in memory, with a failure to inject: the stream breaks after `break_after` parts.
    struct FakeAuth {
        dir: PathBuf,
        uploads: RecordingUploads,
        break_after: Option<usize>,
        begins: usize,
        down: bool,
    }

    impl FakeAuth {
        fn new(dir: &Path) -> Self {
            let store = Arc::new(RecordingStore::open_dir(&dir.join("auth")).unwrap());
            Self {
                dir: dir.to_path_buf(),
                uploads: RecordingUploads::new(store, "c1"),
                break_after: None,
                begins: 0,
                down: false,
            }
        }

        /// Auth restarts: same directory, no memory of who began what.
        fn restart(&mut self) {
            let store = Arc::new(RecordingStore::open_dir(&self.dir.join("auth")).unwrap());
            self.uploads = RecordingUploads::new(store, "c1");
        }
    }

    fn failure(e: UploadError) -> UploadFailure {
        let s = e.to_status();
        match s.code() {
            tonic::Code::FailedPrecondition => UploadFailure::Resume(s.message().into()),
            _ => UploadFailure::Refused(s.message().into()),
        }
    }

    impl UploadTarget for FakeAuth {
        async fn begin(
            &mut self,
            session_id: &str,
            header: &[u8],
        ) -> Result<UploadStatus, UploadFailure> {
            if self.down {
                return Err(UploadFailure::Unavailable("down".into()));
            }
            self.begins += 1;
            self.uploads
                .begin(HOST, session_id, header)
                .map_err(failure)
        }

        async fn send(
            &mut self,
            session_id: &str,
            parts: Vec<Part>,
        ) -> Result<UploadStatus, UploadFailure> {
            if self.down {
                return Err(UploadFailure::Unavailable("down".into()));
            }
            let mut received = 0;
            for (i, p) in parts.into_iter().enumerate() {
                if self.break_after == Some(i) {
                    self.break_after = None;
                    return Err(UploadFailure::Unavailable("connection reset".into()));
                }
                if !p.data.is_empty() {
                    received = self
                        .uploads
                        .append(HOST, session_id, p.offset, &p.data)
                        .map_err(failure)?;
                }
                if p.finish {
                    let e = self.uploads.finish(HOST, session_id).map_err(failure)?;
                    return Ok(UploadStatus {
                        received: e.size,
                        complete: true,
                    });
                }
            }
            Ok(UploadStatus {
                received,
                complete: false,
            })
        }
    }

    fn writer() -> RecordingWriter {
        let meta = RecordingMeta {
            session_id: ID.into(),
            kind: "ssh".into(),
            cluster: "c1".into(),
            user: "alice".into(),
            login: "root".into(),
            server_id: HOST.into(),
            server_name: "node1".into(),
            start_unix_us: 1,
            cols: 80,
            rows: 24,
            term: "xterm".into(),
        };
        let opts = WriterOptions {
            chunk_size: 1024,
            coalesce: None,
        };
        RecordingWriter::with_options(meta, opts).unwrap()
    }

    /// Output events `from..to` (many small chunks).
    fn outputs(w: &mut RecordingWriter, from: usize, to: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for i in from..to {
            let line = format!("line {i} {}\r\n", "x".repeat(200));
            let at = Duration::from_millis(i as u64);
            out.extend(w.push_output(at, line.as_bytes()).unwrap_or_default());
        }
        out
    }

    /// A finished recording of `n` outputs.
    fn write_recording(path: &Path, n: usize) -> Vec<u8> {
        let mut w = writer();
        let mut file = w.header_bytes().to_vec();
        file.extend(outputs(&mut w, 0, n));
        file.extend(w.finish(Duration::from_millis(n as u64), Some(0)));
        std::fs::write(path, &file).unwrap();
        file
    }

    const SMALL: Limits = Limits {
        part: 2048,
        stream: 8192,
    };

    #[tokio::test]
    async fn a_broken_upload_resumes_where_auth_stopped_even_after_auth_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("{ID}.rec"));
        let file = write_recording(&path, 200);
        let mut auth = FakeAuth::new(dir.path());
        auth.break_after = Some(2);
        let mut prog = Progress::default();
        let err = upload_file(&mut auth, ID, &path, true, &mut prog, SMALL)
            .await
            .unwrap_err();
        assert!(matches!(err, UploadFailure::Unavailable(_)), "{err}");
        assert_eq!(prog.acked, None, "a failed stream begins again");
        // Auth is away for a while, then comes back with no memory of the upload.
        auth.down = true;
        assert!(
            upload_file(&mut auth, ID, &path, true, &mut prog, SMALL)
                .await
                .is_err()
        );
        auth.down = false;
        auth.restart();
        let begins = auth.begins;
        let got = upload_file(&mut auth, ID, &path, true, &mut prog, SMALL)
            .await
            .unwrap();
        assert_eq!(got, Uploaded::Complete);
        assert_eq!(auth.begins, begins + 1);
        assert_eq!(auth.uploads.store().read(ID).unwrap(), file);
        // Uploading it again is a no-op success.
        let mut prog = Progress::default();
        let got = upload_file(&mut auth, ID, &path, true, &mut prog, SMALL)
            .await
            .unwrap();
        assert_eq!(got, Uploaded::Complete);
    }

    #[tokio::test]
    async fn a_running_session_is_uploaded_in_rounds_then_completed() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join(format!("{ID}.part"));
        let mut w = writer();
        let mut file = w.header_bytes().to_vec();
        file.extend(outputs(&mut w, 0, 50));
        file.extend(w.flush_chunk().unwrap_or_default());
        std::fs::write(&part, &file).unwrap();
        let mut auth = FakeAuth::new(dir.path());
        let mut prog = Progress::default();
        let got = upload_file(&mut auth, ID, &part, false, &mut prog, SMALL)
            .await
            .unwrap();
        assert_eq!(got, Uploaded::Partial(file.len() as u64));
        // A chunk being written (a torn tail) is not sent.
        let mut torn = file.clone();
        torn.extend_from_slice(&[0xC1, 9, 9]);
        std::fs::write(&part, &torn).unwrap();
        let got = upload_file(&mut auth, ID, &part, false, &mut prog, SMALL)
            .await
            .unwrap();
        assert_eq!(got, Uploaded::Partial(file.len() as u64));
        // The session ends: only the rest is sent, without beginning again.
        file.extend(outputs(&mut w, 50, 80));
        file.extend(w.finish(Duration::from_secs(1), Some(0)));
        let done = dir.path().join(format!("{ID}.rec"));
        std::fs::write(&done, &file).unwrap();
        let got = upload_file(&mut auth, ID, &done, true, &mut prog, SMALL)
            .await
            .unwrap();
        assert_eq!(got, Uploaded::Complete);
        assert_eq!(auth.begins, 1);
        assert_eq!(auth.uploads.store().read(ID).unwrap(), file);
    }

    #[tokio::test]
    async fn a_recording_of_another_size_on_auth_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("{ID}.rec"));
        write_recording(&path, 20);
        let mut auth = FakeAuth::new(dir.path());
        let mut prog = Progress::default();
        upload_file(&mut auth, ID, &path, true, &mut prog, SMALL)
            .await
            .unwrap();
        write_recording(&path, 30);
        let got = upload_file(&mut auth, ID, &path, true, &mut Progress::default(), SMALL).await;
        assert!(
            matches!(&got, Err(UploadFailure::Refused(m)) if m.contains("completed recording")),
            "{got:?}"
        );
    }
}
