//! Session recordings. This module owns the recording file format (a versioned header followed
//! by checksummed, self-delimiting chunks of timestamped PTY output, input, resizes and
//! structured events), its sans-IO writer and readers, the exports (asciicast v2 for
//! `asciinema play`, JSON lines), the playback schedule of `hop play`, and [`RecordingStore`],
//! the directory of uploaded recordings on the Auth service and their index in the cluster
//! backend. It must never panic on, or trust the lengths in, recording bytes; never let a
//! session id name a path outside the store; never change a completed recording or its index
//! entry; and never stop reading a format version it once wrote.
//!
//! How the pieces fit:
//! - an SSH node agent encodes its session with a [`RecordingWriter`] (`writer`), appends the
//!   header and each completed chunk to a local file, and uploads that file in the background
//!   with [`RecordingStore::begin_upload`] / [`RecordingStore::append`] /
//!   [`RecordingStore::complete`] (`store`), resuming at the offset `begin_upload` reports;
//!   `complete` indexes the recording once under [`RECORDINGS_INDEX_PREFIX`] in the backend,
//!   which [`RecordingStore::list`] reads;
//! - readers parse with [`parse_header`] and a [`ChunkCursor`] (or [`Recording`] for bytes in
//!   memory) (`format`, on the primitives of `wire` and `crc32c`); a file cut short by a crash
//!   reads up to its last complete chunk and then reports [`RecordingError::Truncated`];
//! - `asciicast` and `jsonl` export, `player` computes when each event is due at a given speed;
//! - Auth and the proxy hold a store as a [`RecordingBackend`] (`seam`), the seam an
//!   S3-compatible store will implement beside the local directory.
//!
//! The byte layout, the versioning rules and the upload protocol are specified in
//! `docs/recording-format.md`.

mod asciicast;
mod crc32c;
mod error;
mod format;
mod index;
mod jsonl;
mod player;
mod s3;
mod seam;
mod store;
mod wire;
mod writer;

pub use asciicast::{
    AsciicastOptions, AsciicastWriter, ExportError, ExportSummary, export_asciicast,
};
pub use crc32c::crc32c;
pub use error::{ChunkError, RecordingError, RecordingStoreError};
pub use format::{
    Chunk, ChunkCursor, Chunks, Event, Events, FORMAT_VERSION, Header, KIND_SSH, MAGIC,
    MAX_CHUNK_BODY, MAX_META_LEN, OLDEST_READABLE_VERSION, OwnedEvent, Recording, RecordingEvents,
    RecordingMeta, RecordingSummary, TimedEvent, encode_header, parse_chunk, parse_header,
};
pub use index::RECORDINGS_INDEX_PREFIX;
pub use jsonl::export_json_lines;
pub use player::{MAX_SPEED, MIN_SPEED, PlaybackError, PlaybackOptions, PlaybackSchedule};
pub use s3::{S3Environment, S3Location, S3RecordingStore, S3UriError};
pub use seam::RecordingBackend;
pub use store::{
    DEFAULT_MAX_RECORDING_LEN, RecordingIndexEntry, RecordingStore, RetentionReport, UploadStatus,
};
pub use writer::{MAX_WRITER_CHUNK_SIZE, RecordingWriter, WriterOptions};

/// The longest session id.
pub const MAX_SESSION_ID_LEN: usize = 64;

/// Whether `id` is a valid session id: 1 to [`MAX_SESSION_ID_LEN`] ASCII hex digits or dashes
/// (a UUID in any case). Such an id can never be, or contain, a path separator or `..`.
pub fn is_valid_session_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_SESSION_ID_LEN
        && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// The invariants the `recording_reader` fuzz target checks on arbitrary bytes: parsing the
/// header, every chunk and every event never panics; the chunks read cover exactly the intact
/// prefix; and a recording that parses completely decodes to the same events after it is
/// re-encoded by a [`RecordingWriter`].
#[doc(hidden)]
pub fn fuzz_reader(data: &[u8]) {
    let Ok(recording) = Recording::parse(data) else {
        return;
    };
    let mut chunks = recording.chunks();
    let mut events = Vec::new();
    let mut outcome = Ok(());
    for chunk in chunks.by_ref() {
        match chunk {
            Ok(chunk) => {
                let before = events.len();
                events.extend(chunk.events().map(|e| (e.at, e.event.to_owned_event())));
                assert_eq!((events.len() - before) as u64, chunk.event_count());
            }
            Err(err) => outcome = Err(err),
        }
    }
    let cursor = chunks.cursor();
    assert!(events.windows(2).all(|w| w[0].0 <= w[1].0));
    assert!(cursor.offset() <= data.len() as u64);
    if let Err(err) = outcome {
        if err.is_truncation() {
            assert!(cursor.offset() < data.len() as u64);
        }
        return;
    }
    assert_eq!(cursor.offset(), data.len() as u64);
    if !cursor.ended() {
        return;
    }
    // Re-encode and compare, merging adjacent same-time output (or input) on both sides, since
    // the writer may split a large payload.
    let opts = WriterOptions {
        chunk_size: MAX_WRITER_CHUNK_SIZE,
        coalesce: None,
    };
    // Readers are more lenient with metadata than writers (an empty kind, say).
    let Ok(mut writer) = RecordingWriter::with_options(recording.meta().clone(), opts) else {
        return;
    };
    let mut file = writer.header_bytes().to_vec();
    let mut end = None;
    for (at, event) in &events {
        let bytes = match event {
            OwnedEvent::Output(b) => writer.push_output(*at, b),
            OwnedEvent::Input(b) => writer.push_input(*at, b),
            OwnedEvent::Resize { cols, rows } => writer.push_resize(*at, *cols, *rows),
            // Text that is not JSON cannot have been written by a writer: no round trip.
            OwnedEvent::Json(s) => match writer.push_event_json(*at, s) {
                Ok(bytes) => bytes,
                Err(_) => return,
            },
            OwnedEvent::End { exit_status } => {
                end = Some((*at, *exit_status));
                None
            }
        };
        file.extend(bytes.unwrap_or_default());
    }
    let Some((at, exit_status)) = end else {
        return;
    };
    file.extend(writer.finish(at, exit_status));
    let again = Recording::parse(&file).unwrap_or_else(|err| panic!("re-encoded header: {err}"));
    let again: Vec<_> = again
        .events()
        .map(|e| {
            let e = e.unwrap_or_else(|err| panic!("re-encoded recording: {err}"));
            (e.at, e.event.to_owned_event())
        })
        .collect();
    assert_eq!(merge_adjacent(again), merge_adjacent(events));
}

fn merge_adjacent(
    events: Vec<(std::time::Duration, OwnedEvent)>,
) -> Vec<(std::time::Duration, OwnedEvent)> {
    let mut out: Vec<(std::time::Duration, OwnedEvent)> = Vec::with_capacity(events.len());
    for (at, event) in events {
        match (out.last_mut(), event) {
            (Some((last_at, OwnedEvent::Output(acc))), OwnedEvent::Output(b)) if *last_at == at => {
                acc.extend_from_slice(&b);
            }
            (Some((last_at, OwnedEvent::Input(acc))), OwnedEvent::Input(b)) if *last_at == at => {
                acc.extend_from_slice(&b);
            }
            (_, event) => out.push((at, event)),
        }
    }
    out
}
