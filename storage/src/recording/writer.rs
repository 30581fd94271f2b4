//! The recording encoder. This module owns [`RecordingWriter`], which turns a session's PTY
//! traffic into header and chunk bytes without doing any IO: the caller appends what it returns
//! to a file or an upload. It must never produce a chunk a reader would refuse (over the size
//! limit, times going backwards, events after the end), never copy a tiny write more than
//! once on its way into a chunk, and never read a clock: every event carries its own time.

use std::time::Duration;

use serde::Serialize;

use super::crc32c::crc32c;
use super::error::RecordingError;
use super::format::{
    CHUNK_HEADER_LEN, CHUNK_TYPE_EVENTS, Event, KIND_INPUT, KIND_OUTPUT, RecordingMeta,
    encode_event, encode_header,
};
use super::wire::put_varint;

/// The largest [`WriterOptions::chunk_size`]; with it a chunk body stays well under
/// [`super::MAX_CHUNK_BODY`] (at most two chunk sizes plus one event header).
pub const MAX_WRITER_CHUNK_SIZE: usize = 256 * 1024;

/// How a [`RecordingWriter`] cuts chunks and merges writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterOptions {
    /// A chunk is completed once its events reach this many bytes (also the largest payload of
    /// one event: bigger writes are split). 1 to [`MAX_WRITER_CHUNK_SIZE`].
    pub chunk_size: usize,
    /// Consecutive output (or input) writes within this time of the first are merged into one
    /// event stamped with the first's time, so a stream of one-byte echoes costs one event
    /// header, not one each. `None`: every write is its own event.
    pub coalesce: Option<Duration>,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            chunk_size: 32 * 1024,
            coalesce: Some(Duration::from_millis(1)),
        }
    }
}

impl WriterOptions {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), RecordingError> {
        if self.chunk_size == 0 || self.chunk_size > MAX_WRITER_CHUNK_SIZE {
            return Err(RecordingError::InvalidOptions {
                field: "chunk_size",
                reason: format!("must be 1 to {MAX_WRITER_CHUNK_SIZE} bytes"),
            });
        }
        Ok(())
    }
}

/// Encodes one session's recording, sans IO. Feed it events with their time since the session
/// started ([`RecordingMeta::start_unix_us`]); times that go backwards (clock jitter between
/// threads) are clamped to the latest time seen. Every `push_*` returns the bytes of any chunks
/// it completed, to be appended after [`RecordingWriter::header_bytes`] and the bytes returned
/// before; [`RecordingWriter::finish`] returns the last ones.
#[derive(Debug)]
pub struct RecordingWriter {
    header: Vec<u8>,
    chunk_size: usize,
    coalesce_us: Option<u64>,
    /// Sequence number of the open chunk.
    seq: u64,
    /// Encoded events of the open chunk.
    body: Vec<u8>,
    count: u64,
    chunk_start_us: u64,
    /// Time of the last encoded event.
    prev_us: u64,
    /// Latest time pushed (for clamping).
    latest_us: u64,
    /// A write being coalesced: its kind (0: none), time and bytes.
    pending_kind: u8,
    pending_at_us: u64,
    pending: Vec<u8>,
    /// Completed chunks not yet handed out.
    ready: Vec<u8>,
}

fn micros(at: Duration) -> u64 {
    u64::try_from(at.as_micros()).unwrap_or(u64::MAX)
}

impl RecordingWriter {
    /// A writer with default options.
    pub fn new(meta: RecordingMeta) -> Result<Self, RecordingError> {
        Self::with_options(meta, WriterOptions::default())
    }

    /// A writer with `opts`. Fails if the metadata or options are invalid.
    pub fn with_options(meta: RecordingMeta, opts: WriterOptions) -> Result<Self, RecordingError> {
        opts.validate()?;
        let header = encode_header(&meta)?;
        Ok(Self {
            header,
            chunk_size: opts.chunk_size,
            coalesce_us: opts.coalesce.map(micros),
            seq: 0,
            body: Vec::with_capacity(opts.chunk_size + 64),
            count: 0,
            chunk_start_us: 0,
            prev_us: 0,
            latest_us: 0,
            pending_kind: 0,
            pending_at_us: 0,
            pending: Vec::new(),
            ready: Vec::new(),
        })
    }

    /// A writer that continues a file whose intact prefix holds `chunks` complete chunks, the
    /// last event at `last` (a [`super::ChunkCursor`]'s `chunks()` and `last()` after reading
    /// it): the next chunk gets sequence number `chunks` and no event is stamped before `last`.
    /// Used to close a recording whose writer stopped (a crash) with an End event.
    pub fn resume(
        meta: RecordingMeta,
        opts: WriterOptions,
        chunks: u64,
        last: Duration,
    ) -> Result<Self, RecordingError> {
        let mut w = Self::with_options(meta, opts)?;
        w.seq = chunks;
        w.prev_us = micros(last);
        w.latest_us = w.prev_us;
        Ok(w)
    }

    /// The file header: the first bytes of the recording.
    pub fn header_bytes(&self) -> &[u8] {
        &self.header
    }

    /// Records terminal output.
    pub fn push_output(&mut self, at: Duration, data: &[u8]) -> Option<Vec<u8>> {
        self.push_bytes(KIND_OUTPUT, at, data);
        self.take_ready()
    }

    /// Records user input.
    pub fn push_input(&mut self, at: Duration, data: &[u8]) -> Option<Vec<u8>> {
        self.push_bytes(KIND_INPUT, at, data);
        self.take_ready()
    }

    /// Records a window resize.
    pub fn push_resize(&mut self, at: Duration, cols: u16, rows: u16) -> Option<Vec<u8>> {
        let at_us = self.clamp(at);
        self.flush_pending();
        self.encode(at_us, &Event::Resize { cols, rows });
        self.take_ready()
    }

    /// Records a structured event (serialized as JSON), e.g. an exec command. Fails if it is
    /// larger than the chunk size.
    pub fn push_event<T: Serialize + ?Sized>(
        &mut self,
        at: Duration,
        event: &T,
    ) -> Result<Option<Vec<u8>>, RecordingError> {
        let json = serde_json::to_string(event).map_err(|err| RecordingError::InvalidEvent {
            reason: err.to_string(),
        })?;
        self.push_event_json(at, &json)
    }

    /// Records a structured event given as JSON text, stored verbatim. Fails if it is not JSON
    /// or is larger than the chunk size.
    pub fn push_event_json(
        &mut self,
        at: Duration,
        json: &str,
    ) -> Result<Option<Vec<u8>>, RecordingError> {
        if json.len() > self.chunk_size {
            return Err(RecordingError::EventTooLarge {
                len: json.len(),
                max: self.chunk_size,
            });
        }
        if let Err(err) = serde_json::from_str::<serde::de::IgnoredAny>(json) {
            return Err(RecordingError::InvalidEvent {
                reason: format!("not JSON: {err}"),
            });
        }
        let at_us = self.clamp(at);
        self.flush_pending();
        self.encode(at_us, &Event::Json(json));
        Ok(self.take_ready())
    }

    /// Completes the open chunk, if it holds anything, and returns every completed chunk not
    /// yet handed out. Call it periodically so a quiet session's output is not held in memory
    /// (and lost with the process) for long; see also [`RecordingWriter::flush_stale`].
    pub fn flush_chunk(&mut self) -> Option<Vec<u8>> {
        self.flush_pending();
        self.seal();
        self.take_ready()
    }

    /// Like [`RecordingWriter::flush_chunk`], but only if the open chunk's first event happened
    /// `max_age` or longer before `now` (both since the session started).
    pub fn flush_stale(&mut self, now: Duration, max_age: Duration) -> Option<Vec<u8>> {
        let first_us = if self.count > 0 {
            Some(self.chunk_start_us)
        } else if self.pending_kind != 0 {
            Some(self.pending_at_us)
        } else {
            None
        };
        match first_us {
            Some(first) if micros(now).saturating_sub(first) >= micros(max_age) => {
                self.flush_chunk()
            }
            _ => None,
        }
    }

    /// Bytes accepted but not yet handed out in a completed chunk.
    pub fn buffered_len(&self) -> usize {
        self.body.len() + self.pending.len() + self.ready.len()
    }

    /// Records the end of the session and returns the last chunk bytes. No event can follow.
    pub fn finish(mut self, at: Duration, exit_status: Option<i32>) -> Vec<u8> {
        let at_us = self.clamp(at);
        self.flush_pending();
        self.encode(at_us, &Event::End { exit_status });
        self.seal();
        self.ready
    }

    fn clamp(&mut self, at: Duration) -> u64 {
        self.latest_us = self.latest_us.max(micros(at));
        self.latest_us
    }

    fn push_bytes(&mut self, kind: u8, at: Duration, data: &[u8]) {
        let at_us = self.clamp(at);
        if data.is_empty() {
            return;
        }
        let Some(window) = self.coalesce_us else {
            for piece in data.chunks(self.chunk_size) {
                self.encode(at_us, &bytes_event(kind, piece));
            }
            return;
        };
        if self.pending_kind == kind
            && at_us.saturating_sub(self.pending_at_us) <= window
            && self.pending.len() + data.len() <= self.chunk_size
        {
            self.pending.extend_from_slice(data);
            return;
        }
        self.flush_pending();
        let mut pieces = data.chunks(self.chunk_size);
        let last = pieces.next_back().unwrap_or_default();
        for piece in pieces {
            self.encode(at_us, &bytes_event(kind, piece));
        }
        self.pending_kind = kind;
        self.pending_at_us = at_us;
        self.pending.extend_from_slice(last);
    }

    fn flush_pending(&mut self) {
        if self.pending_kind == 0 {
            return;
        }
        let pending = std::mem::take(&mut self.pending);
        self.encode(
            self.pending_at_us,
            &bytes_event(self.pending_kind, &pending),
        );
        self.pending = pending;
        self.pending.clear();
        self.pending_kind = 0;
    }

    fn encode(&mut self, at_us: u64, event: &Event<'_>) {
        if self.count == 0 {
            self.chunk_start_us = at_us;
            self.prev_us = at_us;
        }
        encode_event(&mut self.body, at_us.saturating_sub(self.prev_us), event);
        self.prev_us = at_us;
        self.count += 1;
        if self.body.len() >= self.chunk_size {
            self.seal();
        }
    }

    /// Completes the open chunk into `ready`.
    fn seal(&mut self) {
        if self.count == 0 {
            return;
        }
        let out = &mut self.ready;
        let head_at = out.len();
        out.extend_from_slice(&[0; CHUNK_HEADER_LEN]);
        let body_at = out.len();
        put_varint(out, self.seq);
        put_varint(out, self.chunk_start_us);
        put_varint(out, self.count);
        out.extend_from_slice(&self.body);
        let body = out.get(body_at..).unwrap_or_default();
        let body_len = u32::try_from(body.len()).unwrap_or(u32::MAX);
        let body_crc = crc32c(body);
        let mut head = [0u8; CHUNK_HEADER_LEN];
        head[0] = CHUNK_TYPE_EVENTS;
        head[1..5].copy_from_slice(&body_len.to_le_bytes());
        head[5..9].copy_from_slice(&body_crc.to_le_bytes());
        let head_crc = crc32c(&head[..9]);
        head[9..].copy_from_slice(&head_crc.to_le_bytes());
        if let Some(slot) = out.get_mut(head_at..body_at) {
            slot.copy_from_slice(&head);
        }
        self.seq += 1;
        self.body.clear();
        self.count = 0;
    }

    fn take_ready(&mut self) -> Option<Vec<u8>> {
        (!self.ready.is_empty()).then(|| std::mem::take(&mut self.ready))
    }
}

fn bytes_event(kind: u8, bytes: &[u8]) -> Event<'_> {
    if kind == KIND_INPUT {
        Event::Input(bytes)
    } else {
        Event::Output(bytes)
    }
}
