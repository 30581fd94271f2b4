//! Session recordings on the Auth service: the `SessionRecordings` gRPC API.
//!
//! This module owns who may do what with recordings and the checks on uploaded bytes before they
//! reach a hop-storage [`RecordingBackend`] (the local directory `<data_dir>/recordings/` unless
//! `hop.storage.audit_sessions_uri` moves it): a node may upload
//! only recordings whose header names it as the server and this cluster, an upload must be begun
//! on this process before parts are appended (so the owner check cannot be skipped), every part
//! must be whole, checksum-valid chunks, and a completed recording is immutable (sending its own
//! bytes again succeeds and changes nothing; different bytes are refused). Listing and reading
//! need the RBAC rule `session` `list`/`read`. It must never trust a node for another node's
//! recording, never store bytes the format parser refuses, and never block the async runtime on
//! file IO. The layout, the index and the final whole-file validation are the backend's.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex, PoisonError};

use hop_storage::recording::{
    KIND_SSH, RecordingBackend, RecordingIndexEntry, RecordingStoreError, UploadStatus,
    parse_chunk, parse_header,
};
use tonic::{Request, Response, Status, Streaming};

use super::audit::EventKind;
use super::caller::Caller;
use super::grpc::{authorize, to_status};
use super::server::AuthServer;
use hop_api::proto::session_recordings_server::{SessionRecordings, SessionRecordingsServer};
use hop_api::proto::*;

/// The largest `data` of one upload part (tonic refuses messages over 4 MiB anyway).
pub const MAX_PART: usize = 4 * 1024 * 1024 - 1024;
/// Bytes per message when a recording is streamed to a client.
const READ_MESSAGE: usize = 64 * 1024;

/// Why an upload step was refused, and whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The header names a different server than the calling node.
    #[error(
        "recording {session_id} names server {named:?}; host {caller:?} may upload only its own recordings"
    )]
    NotYourRecording {
        session_id: String,
        named: String,
        caller: String,
    },
    /// The header names another cluster, or a kind this Auth does not store.
    #[error("recording {session_id} is refused: {reason}")]
    BadMeta { session_id: String, reason: String },
    /// Parts arrived for an upload not begun on this process by this host.
    #[error(
        "no upload of recording {session_id} was begun by this host here: call BeginRecordingUpload first"
    )]
    NotBegun { session_id: String },
    /// A part is not a sequence of whole, intact chunks.
    #[error("recording {session_id}: bad chunk at offset {offset}: {reason}")]
    BadChunk {
        session_id: String,
        offset: u64,
        reason: String,
    },
    /// The store refused the step.
    #[error(transparent)]
    Store(#[from] RecordingStoreError),
}

impl UploadError {
    /// The gRPC status a node acts on: `FAILED_PRECONDITION` means "begin again and resume",
    /// `INVALID_ARGUMENT`/`PERMISSION_DENIED` mean "these bytes will never be accepted".
    pub fn to_status(&self) -> Status {
        let msg = self.to_string();
        match self {
            Self::NotYourRecording { .. } => Status::permission_denied(msg),
            Self::BadMeta { .. } | Self::BadChunk { .. } => Status::invalid_argument(msg),
            Self::NotBegun { .. } => Status::failed_precondition(msg),
            Self::Store(e) => match e {
                RecordingStoreError::Gap { .. } | RecordingStoreError::NotFound { .. } => {
                    Status::failed_precondition(msg)
                }
                // I/O, a corrupt stored file, the index (backend) failing: the node keeps its
                // file and retries; only the uploader's own faults refuse the bytes for good.
                e if e.fault() != hop_storage::Fault::Caller => {
                    // The detail (paths, the store's URL and answer) stays in the log.
                    tracing::error!(error = %msg, "session recording store error");
                    Status::internal(
                        "the recordings store failed; keep the file and retry (the Auth \
                         service's log says why)",
                    )
                }
                _ => Status::invalid_argument(msg),
            },
        }
    }
}

/// The upload checks over a store; no gRPC, so that they are unit-tested directly.
#[derive(Debug)]
pub struct RecordingUploads {
    store: Arc<dyn RecordingBackend>,
    cluster: String,
    /// Who began each upload on this process: session id → host id.
    owners: Mutex<HashMap<String, String>>,
}

impl RecordingUploads {
    pub fn new(store: Arc<dyn RecordingBackend>, cluster: &str) -> Self {
        Self {
            store,
            cluster: cluster.to_string(),
            owners: Mutex::new(HashMap::new()),
        }
    }

    pub fn store(&self) -> &dyn RecordingBackend {
        self.store.as_ref()
    }

    /// Starts or resumes `host_id`'s upload of `session_id`, whose file begins with `header`.
    pub fn begin(
        &self,
        host_id: &str,
        session_id: &str,
        header: &[u8],
    ) -> Result<UploadStatus, UploadError> {
        let bad = |reason: String| UploadError::BadMeta {
            session_id: session_id.to_string(),
            reason,
        };
        let meta = match parse_header(header) {
            Ok(Some((h, _))) => h.meta,
            Ok(None) => return Err(bad("the header is incomplete".into())),
            Err(e) => return Err(bad(format!("bad header: {e}"))),
        };
        if meta.server_id != host_id {
            return Err(UploadError::NotYourRecording {
                session_id: session_id.to_string(),
                named: meta.server_id,
                caller: host_id.to_string(),
            });
        }
        if meta.cluster != self.cluster {
            return Err(bad(format!(
                "it belongs to cluster {:?}, not {:?}",
                meta.cluster, self.cluster
            )));
        }
        if meta.kind != KIND_SSH {
            return Err(bad(format!("kind {:?} is not stored", meta.kind)));
        }
        let status = self.store.begin_upload(session_id, header)?;
        self.owners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(session_id.to_string(), host_id.to_string());
        Ok(status)
    }

    fn check_owner(&self, host_id: &str, session_id: &str) -> Result<(), UploadError> {
        let owners = self.owners.lock().unwrap_or_else(PoisonError::into_inner);
        if owners.get(session_id).map(String::as_str) == Some(host_id) {
            Ok(())
        } else {
            Err(UploadError::NotBegun {
                session_id: session_id.to_string(),
            })
        }
    }

    /// Writes one part (whole chunks at `offset`); returns the bytes now held.
    pub fn append(
        &self,
        host_id: &str,
        session_id: &str,
        offset: u64,
        data: &[u8],
    ) -> Result<u64, UploadError> {
        self.check_owner(host_id, session_id)?;
        check_whole_chunks(session_id, offset, data)?;
        match self.store.append(session_id, offset, data) {
            Err(RecordingStoreError::AlreadyComplete { .. }) => {
                self.same_as_completed(session_id, offset, data)
            }
            other => Ok(other?),
        }
    }

    /// A part sent again for a completed recording: accepted only if it is the stored bytes.
    fn same_as_completed(
        &self,
        session_id: &str,
        offset: u64,
        data: &[u8],
    ) -> Result<u64, UploadError> {
        let size = self.store.entry(session_id)?.size;
        let end = offset.saturating_add(data.len() as u64);
        let conflict = |first_difference| {
            UploadError::Store(RecordingStoreError::Conflict {
                session_id: session_id.to_string(),
                offset,
                first_difference,
            })
        };
        if end > size {
            return Err(conflict(size.max(offset)));
        }
        let stored = self.store.read_range(session_id, offset, data.len())?;
        if stored.len() != data.len() {
            return Err(conflict(offset + stored.len() as u64));
        }
        if let Some(i) = stored.iter().zip(data).position(|(a, b)| a != b) {
            return Err(conflict(offset + i as u64));
        }
        Ok(size)
    }

    /// Validates the whole file and makes it immutable.
    pub fn finish(
        &self,
        host_id: &str,
        session_id: &str,
    ) -> Result<RecordingIndexEntry, UploadError> {
        self.check_owner(host_id, session_id)?;
        let entry = self.store.complete(session_id)?;
        self.owners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(session_id);
        Ok(entry)
    }
}

/// `data` must be a sequence of whole chunks, each checksum-valid and well-formed. (Sequence
/// numbers and times across chunks are checked when the upload completes.)
fn check_whole_chunks(session_id: &str, offset: u64, data: &[u8]) -> Result<(), UploadError> {
    let mut pos = 0usize;
    while pos < data.len() {
        let at = offset + pos as u64;
        let bad = |reason: String| UploadError::BadChunk {
            session_id: session_id.to_string(),
            offset: at,
            reason,
        };
        let rest = data.get(pos..).unwrap_or_default();
        match parse_chunk(rest) {
            Ok(Some((_, len))) => pos += len,
            Ok(None) => return Err(bad("the part ends inside a chunk".into())),
            Err(e) => return Err(bad(e.to_string())),
        }
    }
    Ok(())
}

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct RecordingsApi {
    auth: Arc<AuthServer>,
    uploads: Arc<RecordingUploads>,
}

impl RecordingsApi {
    pub fn new(auth: Arc<AuthServer>, store: Arc<dyn RecordingBackend>) -> Self {
        let uploads = Arc::new(RecordingUploads::new(store, auth.cluster_name()));
        Self { auth, uploads }
    }

    pub fn into_server(self) -> SessionRecordingsServer<Self> {
        SessionRecordingsServer::new(self)
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&RecordingUploads) -> Result<T, UploadError> + Send + 'static,
    {
        let uploads = self.uploads.clone();
        tokio::task::spawn_blocking(move || f(&uploads))
            .await
            .map_err(|e| Status::internal(format!("task failed: {e}")))?
            .map_err(|e| e.to_status())
    }

    /// The recordings of `entries` the caller may `verb`: all for the local admin socket, else
    /// those the caller's roles admit (a `where` clause decided per recording).
    async fn visible(
        &self,
        caller: Caller,
        verb: &'static str,
        entries: Vec<RecordingIndexEntry>,
    ) -> Result<Vec<RecordingIndexEntry>, Status> {
        let auth = self.auth.clone();
        tokio::task::spawn_blocking(move || match &caller {
            Caller::User { identity, .. } => {
                let checker = auth
                    .checker_for(&identity.roles, &identity.traits)
                    .map_err(to_status)?;
                auth.visible_recordings(&checker, identity, verb, entries)
                    .map_err(|e| Status::permission_denied(e.to_string()))
            }
            _ => authorize(&auth, &caller, "session", verb)
                .map(|_| entries)
                .map_err(to_status),
        })
        .await
        .map_err(|e| Status::internal(format!("task failed: {e}")))?
    }
}

fn caller<T>(req: &Request<T>) -> Caller {
    req.extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or(Caller::Anonymous { remote: None })
}

fn host_of<T>(req: &Request<T>) -> Result<String, Status> {
    match caller(req) {
        Caller::Host {
            host_id,
            role: hop_ca::HostRole::Node,
            ..
        } => Ok(host_id),
        _ => Err(Status::permission_denied(
            "only SSH nodes with a host certificate may upload session recordings",
        )),
    }
}

fn info(e: RecordingIndexEntry) -> RecordingInfo {
    RecordingInfo {
        session_id: e.session_id,
        kind: e.kind,
        cluster: e.cluster,
        user: e.user,
        login: e.login,
        server_id: e.server_id,
        server_name: e.server_name,
        start_unix_micros: e.start_unix_us,
        end_unix_micros: e.end_unix_us,
        size: e.size,
        events: e.events,
        exit_status: e.exit_status.map_or(-1, i64::from),
    }
}

#[tonic::async_trait]
impl SessionRecordings for RecordingsApi {
    type GetRecordingStream =
        std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<RecordingData, Status>> + Send>>;

    async fn begin_recording_upload(
        &self,
        req: Request<BeginRecordingUploadRequest>,
    ) -> Result<Response<RecordingUploadStatus>, Status> {
        let host = host_of(&req)?;
        let r = req.into_inner();
        let status = self
            .blocking(move |u| u.begin(&host, &r.session_id, &r.header))
            .await?;
        Ok(Response::new(RecordingUploadStatus {
            received: status.received,
            complete: status.complete,
        }))
    }

    async fn upload_recording(
        &self,
        req: Request<Streaming<RecordingUploadPart>>,
    ) -> Result<Response<RecordingUploadStatus>, Status> {
        let host = host_of(&req)?;
        let mut stream = req.into_inner();
        let mut session: Option<String> = None;
        let mut received = 0u64;
        while let Some(part) = stream.message().await? {
            let id = session.get_or_insert_with(|| part.session_id.clone());
            if *id != part.session_id {
                return Err(Status::invalid_argument(
                    "every part of one upload stream must name the same session",
                ));
            }
            if part.data.len() > MAX_PART {
                return Err(Status::invalid_argument(format!(
                    "an upload part carries at most {MAX_PART} bytes"
                )));
            }
            let (h, sid) = (host.clone(), id.clone());
            if !part.data.is_empty() {
                received = self
                    .blocking(move |u| u.append(&h, &sid, part.offset, &part.data))
                    .await?;
            }
            if part.finish {
                let (h, sid) = (host.clone(), id.clone());
                let entry = self.blocking(move |u| u.finish(&h, &sid)).await?;
                let ev = self
                    .auth
                    .event(EventKind::SessionUpload, &entry.user)
                    .field("session_id", entry.session_id.clone())
                    .field("login", entry.login.clone())
                    .field("server", entry.server_name.clone())
                    .field("server_id", entry.server_id.clone())
                    .field("size", entry.size);
                self.auth.emit(ev);
                return Ok(Response::new(RecordingUploadStatus {
                    received: entry.size,
                    complete: true,
                }));
            }
        }
        Ok(Response::new(RecordingUploadStatus {
            received,
            complete: false,
        }))
    }

    async fn list_recordings(
        &self,
        req: Request<ListRecordingsRequest>,
    ) -> Result<Response<ListRecordingsResponse>, Status> {
        let who = caller(&req);
        let r = req.into_inner();
        let entries = self.blocking(|u| Ok(u.store().list()?)).await?;
        let recordings = self
            .visible(who, "list", entries)
            .await?
            .into_iter()
            .filter(|e| e.start_unix_us >= r.since_unix_micros)
            .filter(|e| r.user.is_empty() || e.user == r.user)
            .map(info)
            .collect();
        Ok(Response::new(ListRecordingsResponse { recordings }))
    }

    async fn get_recording(
        &self,
        req: Request<GetRecordingRequest>,
    ) -> Result<Response<Self::GetRecordingStream>, Status> {
        let who = caller(&req);
        let id = req.into_inner().session_id;
        let lookup = id.clone();
        let entry = self
            .blocking(move |u| Ok(u.store().entry(&lookup)?))
            .await
            .map_err(|s| match s.code() {
                // Who may not read any recording learns nothing of which ones exist.
                tonic::Code::FailedPrecondition => Status::not_found(s.message()),
                _ => s,
            });
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                // Who may read no recording at all is refused before learning whether it exists.
                self.visible(who, "read", Vec::new()).await?;
                return Err(e);
            }
        };
        if self
            .visible(who.clone(), "read", vec![entry.clone()])
            .await?
            .is_empty()
        {
            return Err(Status::permission_denied(format!(
                "no role allows read on session {id}"
            )));
        }
        self.auth.emit(
            self.auth
                .event(EventKind::SessionRecordingAccess, &who.actor())
                .field("session_id", entry.session_id.clone())
                .field("owner", entry.user.clone()),
        );
        let uploads = self.uploads.clone();
        let file = tokio::task::spawn_blocking(move || uploads.store().open_reader(&id))
            .await
            .map_err(|e| Status::internal(format!("task failed: {e}")))?
            .map_err(|e| match e {
                RecordingStoreError::NotFound { .. } => Status::not_found(e.to_string()),
                other => UploadError::from(other).to_status(),
            })?;
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tokio::task::spawn_blocking(move || {
            let mut file = file;
            loop {
                let mut buf = vec![0u8; READ_MESSAGE];
                match file.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        buf.truncate(n);
                        if tx.blocking_send(Ok(RecordingData { data: buf })).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "reading a session recording failed");
                        let _ = tx.blocking_send(Err(Status::internal(
                            "reading the recording failed (the Auth service's log says why)",
                        )));
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hop_storage::recording::{RecordingMeta, RecordingStore, RecordingWriter};

    use super::*;

    const ID: &str = "0123abcd-0000-0000-0000-000000000001";

    fn recording(server_id: &str, text: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let mut w = RecordingWriter::new(RecordingMeta {
            session_id: ID.into(),
            kind: KIND_SSH.into(),
            cluster: "c1".into(),
            user: "alice".into(),
            login: "root".into(),
            server_id: server_id.into(),
            server_name: "node1".into(),
            start_unix_us: 1_700_000_000_000_000,
            cols: 80,
            rows: 24,
            term: "xterm".into(),
        })
        .unwrap();
        let header = w.header_bytes().to_vec();
        let mut body = Vec::new();
        body.extend(
            w.push_output(Duration::from_millis(1), text)
                .unwrap_or_default(),
        );
        body.extend(w.flush_chunk().unwrap_or_default());
        body.extend(
            w.push_input(Duration::from_millis(2), b"ls\r")
                .unwrap_or_default(),
        );
        body.extend(w.finish(Duration::from_millis(3), Some(0)));
        (header, body)
    }

    fn uploads() -> (tempfile::TempDir, RecordingUploads) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(RecordingStore::open_dir(&dir.path().join("rec")).unwrap());
        (dir, RecordingUploads::new(store, "c1"))
    }

    #[test]
    fn an_upload_resumes_and_completes() {
        let (_d, u) = uploads();
        let (header, body) = recording("host-1", b"hello");
        let st = u.begin("host-1", ID, &header).unwrap();
        assert_eq!(st.received, header.len() as u64);
        let first = parse_chunk(&body).unwrap().unwrap().1;
        let off = header.len() as u64;
        assert_eq!(
            u.append("host-1", ID, off, &body[..first]).unwrap(),
            off + first as u64
        );
        // A new process (or a broken stream): begin again reports what arrived.
        let st = u.begin("host-1", ID, &header).unwrap();
        assert_eq!(st.received, off + first as u64);
        // Re-sending the first chunk is harmless; then the rest.
        u.append("host-1", ID, off, &body).unwrap();
        let entry = u.finish("host-1", ID).unwrap();
        assert_eq!(entry.size, (header.len() + body.len()) as u64);
        assert_eq!(entry.user, "alice");
    }

    #[test]
    fn offsets_past_what_arrived_are_a_gap_to_resume_from() {
        let (_d, u) = uploads();
        let (header, body) = recording("host-1", b"hello");
        u.begin("host-1", ID, &header).unwrap();
        let first = parse_chunk(&body).unwrap().unwrap().1;
        let second = &body[first..];
        let err = u
            .append("host-1", ID, (header.len() + first) as u64, second)
            .unwrap_err();
        assert!(
            matches!(err, UploadError::Store(RecordingStoreError::Gap { received, .. }) if received == header.len() as u64),
            "{err}"
        );
        assert_eq!(err.to_status().code(), tonic::Code::FailedPrecondition);
    }

    #[test]
    fn corrupt_or_partial_chunks_are_refused_before_they_are_stored() {
        let (_d, u) = uploads();
        let (header, mut body) = recording("host-1", b"hello");
        u.begin("host-1", ID, &header).unwrap();
        let off = header.len() as u64;
        let err = u
            .append("host-1", ID, off, &body[..body.len() - 1])
            .unwrap_err();
        assert!(matches!(err, UploadError::BadChunk { .. }), "{err}");
        let last = body.len() - 1;
        body[last] ^= 0xff;
        let err = u.append("host-1", ID, off, &body).unwrap_err();
        assert!(matches!(err, UploadError::BadChunk { .. }), "{err}");
        assert_eq!(err.to_status().code(), tonic::Code::InvalidArgument);
        // Nothing was written.
        assert_eq!(u.begin("host-1", ID, &header).unwrap().received, off);
    }

    #[test]
    fn a_node_uploads_only_its_own_recordings_after_beginning() {
        let (_d, u) = uploads();
        let (header, body) = recording("host-1", b"hello");
        let err = u.begin("host-2", ID, &header).unwrap_err();
        assert_eq!(err.to_status().code(), tonic::Code::PermissionDenied);
        let err = u
            .append("host-1", ID, header.len() as u64, &body)
            .unwrap_err();
        assert!(matches!(err, UploadError::NotBegun { .. }), "{err}");
        u.begin("host-1", ID, &header).unwrap();
        let err = u
            .append("host-2", ID, header.len() as u64, &body)
            .unwrap_err();
        assert!(matches!(err, UploadError::NotBegun { .. }), "{err}");
        let (other, _) = recording("host-1", b"x");
        let mut foreign = RecordingUploads::new(u.store.clone(), "c2");
        foreign.owners = Mutex::new(HashMap::new());
        assert!(matches!(
            foreign.begin("host-1", ID, &other).unwrap_err(),
            UploadError::BadMeta { .. }
        ));
    }

    #[test]
    fn index_failures_are_retried_and_index_conflicts_refused() {
        let index = UploadError::Store(RecordingStoreError::Index {
            source: hop_storage::StorageError::Engine {
                path: "hop.db".into(),
                detail: "injected".into(),
            },
        });
        assert_eq!(index.to_status().code(), tonic::Code::Internal);
        let conflict = UploadError::Store(RecordingStoreError::IndexConflict {
            session_id: ID.into(),
        });
        assert_eq!(conflict.to_status().code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn a_completed_recording_is_immutable() {
        let (_d, u) = uploads();
        let (header, body) = recording("host-1", b"hello");
        u.begin("host-1", ID, &header).unwrap();
        u.append("host-1", ID, header.len() as u64, &body).unwrap();
        u.finish("host-1", ID).unwrap();
        // The same upload again: begin says complete, the same bytes are a no-op, finish too.
        let st = u.begin("host-1", ID, &header).unwrap();
        assert!(st.complete);
        assert_eq!(st.received, (header.len() + body.len()) as u64);
        u.append("host-1", ID, header.len() as u64, &body).unwrap();
        u.finish("host-1", ID).unwrap();
        // Different bytes (same length, same header) are refused.
        let (_, other) = recording("host-1", b"HELLO");
        u.begin("host-1", ID, &header).unwrap();
        let err = u
            .append("host-1", ID, header.len() as u64, &other)
            .unwrap_err();
        assert!(
            matches!(
                err,
                UploadError::Store(RecordingStoreError::Conflict { .. })
            ),
            "{err}"
        );
        assert_eq!(err.to_status().code(), tonic::Code::InvalidArgument);
        assert_eq!(
            u.store().read(ID).unwrap(),
            [header.as_slice(), body.as_slice()].concat()
        );
    }
}
