//! The recording module's error vocabulary. This module owns [`RecordingError`] (what is wrong
//! with recording bytes or with a writer's input), [`ChunkError`] (what is wrong inside one
//! chunk) and [`RecordingStoreError`] (what a store operation failed with, and whose fault it
//! is). It must never report a file that merely stops early (a writer that crashed mid-write)
//! as corrupt, nor a corrupt one as merely truncated.

use std::path::PathBuf;

use crate::error::{Fault, StorageError};

/// What is wrong with one chunk's bytes. Positions are given by the enclosing
/// [`RecordingError::CorruptChunk`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// The chunk does not start with the chunk type byte.
    #[error("unknown chunk type byte {found:#04x}")]
    UnknownType {
        /// The byte found.
        found: u8,
    },
    /// The checksum of the chunk's fixed header (type, length, body checksum) does not match.
    #[error("chunk header checksum mismatch")]
    HeaderChecksum,
    /// The declared body length is over the limit.
    #[error("chunk body of {len} bytes is over the {max}-byte limit")]
    TooLong {
        /// The declared length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The body's checksum does not match the header's.
    #[error("chunk body checksum mismatch (header says {expected:#010x}, body has {actual:#010x})")]
    BodyChecksum {
        /// The checksum in the chunk header.
        expected: u32,
        /// The checksum of the body as read.
        actual: u32,
    },
    /// The body passed its checksum but does not decode (a writer bug, or bytes crafted to
    /// pass the checksum).
    #[error("malformed chunk body: {reason}")]
    Malformed {
        /// What did not decode.
        reason: &'static str,
    },
    /// The chunk's sequence number is not the next one.
    #[error("chunk sequence number {found} where {expected} was expected")]
    OutOfSequence {
        /// The index of the chunk in the file.
        expected: u64,
        /// The number in the chunk.
        found: u64,
    },
    /// The chunk starts before the previous chunk's last event.
    #[error("chunk starts at {start_us}µs, before the previous chunk's last event at {prev_us}µs")]
    TimeWentBack {
        /// The chunk's start.
        start_us: u64,
        /// The previous chunk's last event.
        prev_us: u64,
    },
    /// The chunk follows the chunk that held the recording's end event.
    #[error("chunk after the end of the recording")]
    AfterEnd,
}

/// Everything reading or writing recording bytes can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordingError {
    /// The bytes do not start with the recording magic.
    #[error("not a hop session recording (the magic bytes are wrong)")]
    NotARecording,
    /// The file's format version is not one this build reads: a newer hop wrote it (or the
    /// version field is damaged).
    #[error(
        "session recording format version {found} is not supported: this hop reads versions 1 \
         to {supported}; a newer hop wrote the recording, so play it with that version"
    )]
    UnsupportedVersion {
        /// The version in the file.
        found: u16,
        /// The newest version this build reads.
        supported: u16,
    },
    /// The file header is damaged or malformed.
    #[error("session recording header is corrupt: {reason}")]
    CorruptHeader {
        /// What is wrong.
        reason: String,
    },
    /// A chunk is damaged or malformed.
    #[error("session recording chunk {index} at byte {offset} is corrupt: {error}")]
    CorruptChunk {
        /// The chunk's index in the file (0-based).
        index: u64,
        /// The file offset at which the chunk starts.
        offset: u64,
        /// What is wrong with it.
        #[source]
        error: ChunkError,
    },
    /// The bytes stop inside the header or a chunk, as when the writer stopped mid-write; every
    /// chunk before `offset` is intact.
    #[error(
        "session recording is truncated at byte {offset}: {complete_chunks} complete chunks \
         precede an incomplete one"
    )]
    Truncated {
        /// Where the incomplete header or chunk starts (the length of the intact prefix).
        offset: u64,
        /// How many complete chunks precede it.
        complete_chunks: u64,
    },
    /// All chunks are intact but none holds the end event.
    #[error("session recording has no end event after {chunks} chunks")]
    Unfinished {
        /// How many chunks were read.
        chunks: u64,
    },
    /// The metadata given to a writer breaks a rule.
    #[error("invalid session recording metadata: {field} {reason}")]
    InvalidMeta {
        /// The offending field.
        field: &'static str,
        /// Which rule it breaks.
        reason: String,
    },
    /// A writer option is out of range.
    #[error("invalid session recording writer option: {field} {reason}")]
    InvalidOptions {
        /// The offending option.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A structured event given to a writer is not JSON (or cannot be serialized as JSON).
    #[error("invalid session recording event: {reason}")]
    InvalidEvent {
        /// What is wrong with it.
        reason: String,
    },
    /// A structured event is too large for one chunk.
    #[error("session recording event of {len} bytes is over the {max}-byte limit")]
    EventTooLarge {
        /// The event's encoded length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

impl RecordingError {
    /// Whether the error means "the bytes stop early" rather than "the bytes are wrong".
    pub fn is_truncation(&self) -> bool {
        matches!(self, Self::Truncated { .. })
    }
}

/// Everything a [`crate::recording::RecordingStore`] operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum RecordingStoreError {
    /// The session id is not 1–64 hex digits and dashes.
    #[error("invalid session id {id:?}: must be 1 to 64 hex digits or dashes")]
    InvalidSessionId {
        /// The id as given (as a debug string, it may hold anything).
        id: String,
    },
    /// A file operation in the recordings directory failed.
    #[error("session recording I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system reported.
        #[source]
        source: std::io::Error,
    },
    /// There is no upload in progress (for `append`/`complete`) or no completed recording
    /// (for reads) with this id.
    #[error("no session recording {session_id}")]
    NotFound {
        /// The session.
        session_id: String,
    },
    /// `begin_upload` was given a header that differs from the one already received.
    #[error("session recording {session_id} was begun with a different header")]
    HeaderMismatch {
        /// The session.
        session_id: String,
    },
    /// An append starts past the end of what was received.
    #[error(
        "append to session recording {session_id} at offset {offset} leaves a gap: only \
         {received} bytes were received, resume from there"
    )]
    Gap {
        /// The session.
        session_id: String,
        /// The bytes received so far (the offset to resume from).
        received: u64,
        /// The offset of the append.
        offset: u64,
    },
    /// An append overlaps bytes already received but differs from them.
    #[error(
        "append to session recording {session_id} at offset {offset} conflicts with the bytes \
         already received (first difference at offset {first_difference})"
    )]
    Conflict {
        /// The session.
        session_id: String,
        /// The offset of the append.
        offset: u64,
        /// The first offset whose byte differs.
        first_difference: u64,
    },
    /// The recording was completed; it is immutable.
    #[error("session recording {session_id} is complete and can no longer be appended to")]
    AlreadyComplete {
        /// The session.
        session_id: String,
    },
    /// The append would make the recording longer than the store accepts.
    #[error(
        "session recording {session_id} would grow to {len} bytes, over the {limit}-byte limit"
    )]
    TooLarge {
        /// The session.
        session_id: String,
        /// The length the append would reach.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// The uploaded bytes are not a valid recording (a bad header at `begin_upload`, or a
    /// damaged, truncated or unfinished file at `complete`).
    #[error("session recording {session_id} was rejected: {error}")]
    Rejected {
        /// The session.
        session_id: String,
        /// What is wrong with the bytes.
        #[source]
        error: RecordingError,
    },
    /// The recordings index (in the cluster backend) could not be read or written, or holds an
    /// entry that does not decode.
    #[error("session recordings index: {source}")]
    Index {
        /// The backend's error.
        #[source]
        source: StorageError,
    },
    /// The index already holds a different entry for this session: a completed recording and
    /// its entry are immutable.
    #[error(
        "session recording {session_id} is already indexed with different contents; a completed \
         recording cannot be replaced"
    )]
    IndexConflict {
        /// The session.
        session_id: String,
    },
    /// The object store (S3) refused or failed an operation.
    #[error("session recordings object store: {operation} {key}: {detail}")]
    ObjectStore {
        /// What was being done (`put`, `get`, `delete`, …).
        operation: &'static str,
        /// The object's key (or the bucket and prefix).
        key: String,
        /// What the store or the client said.
        detail: String,
    },
    /// A stored, completed recording no longer parses.
    #[error("stored session recording {path} is corrupt: {error}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        error: RecordingError,
    },
}

impl RecordingStoreError {
    /// Whose fault the error is.
    pub fn fault(&self) -> Fault {
        match self {
            Self::InvalidSessionId { .. }
            | Self::NotFound { .. }
            | Self::HeaderMismatch { .. }
            | Self::Gap { .. }
            | Self::Conflict { .. }
            | Self::AlreadyComplete { .. }
            | Self::TooLarge { .. }
            | Self::Rejected { .. }
            | Self::IndexConflict { .. } => Fault::Caller,
            // A failed index operation is never the uploader's doing, whatever the backend says.
            Self::Io { .. }
            | Self::Corrupt { .. }
            | Self::Index { .. }
            | Self::ObjectStore { .. } => Fault::Internal,
        }
    }

    pub(crate) fn index(source: StorageError) -> Self {
        Self::Index { source }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}
