//! The recording byte format, version 1, as a sans-IO codec. This module owns the layout of the
//! file header and of event chunks (see `docs/recording-format.md`), the limits a reader
//! enforces, and the parsers: [`parse_header`], [`parse_chunk`], the stateful [`ChunkCursor`]
//! that checks one chunk follows another, and [`Recording`], a whole file in memory. It must
//! never panic, index or allocate per event on file bytes, never accept a version it does not
//! know, and never stop reading a version it once wrote: readers accept every older version.
//!
//! Layout (all fixed-width integers little-endian, `varint` = unsigned LEB128):
//!
//! ```text
//! file   = header chunk*
//! header = "HOPREC\0" version:u16 meta_len:u32 meta_crc:u32 fixed_crc:u32 meta:[u8; meta_len]
//! chunk  = 0xC1 body_len:u32 body_crc:u32 head_crc:u32 body:[u8; body_len]
//! body   = seq:varint start_us:varint count:varint event{count}
//! event  = kind:u8 delta_us:varint payload
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::crc32c::crc32c;
use super::error::{ChunkError, RecordingError};
use super::wire::{ByteCursor, put_varint, unzigzag, zigzag};

/// The bytes every recording starts with.
pub const MAGIC: &[u8; 7] = b"HOPREC\0";
/// The format version this build writes (and the newest it reads).
pub const FORMAT_VERSION: u16 = 1;
/// The oldest format version this build reads.
pub const OLDEST_READABLE_VERSION: u16 = 1;
/// The longest metadata block a reader accepts.
pub const MAX_META_LEN: usize = 64 * 1024;
/// The longest chunk body a reader accepts.
pub const MAX_CHUNK_BODY: usize = 1024 * 1024;
/// The session kind of an SSH session.
pub const KIND_SSH: &str = "ssh";

/// Magic, version, meta length, meta checksum, fixed-part checksum.
pub(crate) const HEADER_FIXED_LEN: usize = 7 + 2 + 4 + 4 + 4;
/// Type, body length, body checksum, header checksum.
pub(crate) const CHUNK_HEADER_LEN: usize = 1 + 4 + 4 + 4;
/// The type byte of an event chunk (the only chunk type of version 1).
pub(crate) const CHUNK_TYPE_EVENTS: u8 = 0xC1;

pub(crate) const KIND_OUTPUT: u8 = 1;
pub(crate) const KIND_INPUT: u8 = 2;
pub(crate) const KIND_RESIZE: u8 = 3;
pub(crate) const KIND_JSON: u8 = 4;
pub(crate) const KIND_END: u8 = 5;

/// What a recording is of: written once, as JSON, in the file header.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RecordingMeta {
    /// The session id: 1–64 hex digits or dashes (a UUID).
    pub session_id: String,
    /// The kind of session ([`KIND_SSH`]).
    pub kind: String,
    /// The cluster the session belongs to.
    pub cluster: String,
    /// The hop user.
    pub user: String,
    /// The login (OS user) on the server.
    pub login: String,
    /// The server's id.
    pub server_id: String,
    /// The server's host name.
    pub server_name: String,
    /// When the session started, microseconds since the Unix epoch; event times are relative
    /// to it.
    pub start_unix_us: u64,
    /// The terminal's initial width, in columns.
    pub cols: u16,
    /// The terminal's initial height, in rows.
    pub rows: u16,
    /// The terminal type (`TERM`).
    pub term: String,
}

impl RecordingMeta {
    /// Checks the fields a writer relies on; the error names the first bad one.
    pub fn validate(&self) -> Result<(), RecordingError> {
        if !super::is_valid_session_id(&self.session_id) {
            return Err(RecordingError::InvalidMeta {
                field: "session_id",
                reason: "must be 1 to 64 hex digits or dashes".to_owned(),
            });
        }
        if self.kind.is_empty() {
            return Err(RecordingError::InvalidMeta {
                field: "kind",
                reason: "must not be empty".to_owned(),
            });
        }
        Ok(())
    }

    /// When the session started.
    pub fn start_time(&self) -> std::time::SystemTime {
        std::time::SystemTime::UNIX_EPOCH + Duration::from_micros(self.start_unix_us)
    }
}

/// A parsed file header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The format version the file was written in.
    pub version: u16,
    /// The session metadata.
    pub meta: RecordingMeta,
}

/// Encodes the file header for `meta` in the current format version.
pub fn encode_header(meta: &RecordingMeta) -> Result<Vec<u8>, RecordingError> {
    meta.validate()?;
    let json = serde_json::to_vec(meta).map_err(|err| RecordingError::InvalidMeta {
        field: "meta",
        reason: err.to_string(),
    })?;
    if json.len() > MAX_META_LEN {
        return Err(RecordingError::InvalidMeta {
            field: "meta",
            reason: format!(
                "is {} bytes as JSON, over the {MAX_META_LEN}-byte limit",
                json.len()
            ),
        });
    }
    let mut out = Vec::with_capacity(HEADER_FIXED_LEN + json.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c(&json).to_le_bytes());
    let fixed_crc = crc32c(&out);
    out.extend_from_slice(&fixed_crc.to_le_bytes());
    out.extend_from_slice(&json);
    Ok(out)
}

fn corrupt_header(reason: impl Into<String>) -> RecordingError {
    RecordingError::CorruptHeader {
        reason: reason.into(),
    }
}

/// Parses the file header at the start of `buf`: `Ok(None)` if `buf` is a prefix of a header
/// (more bytes needed), else the header and its length in bytes. A file of a version newer than
/// [`FORMAT_VERSION`] is refused with [`RecordingError::UnsupportedVersion`] as soon as its
/// version field is read.
pub fn parse_header(buf: &[u8]) -> Result<Option<(Header, usize)>, RecordingError> {
    let magic_seen = buf.len().min(MAGIC.len());
    if buf.get(..magic_seen) != MAGIC.get(..magic_seen) {
        return Err(RecordingError::NotARecording);
    }
    let mut cur = ByteCursor::new(buf);
    let (Some(_), Some(version)) = (cur.take(MAGIC.len()), cur.array::<2>()) else {
        return Ok(None);
    };
    let version = u16::from_le_bytes(version);
    match version {
        1 => parse_header_v1(buf),
        found => Err(RecordingError::UnsupportedVersion {
            found,
            supported: FORMAT_VERSION,
        }),
    }
}

fn parse_header_v1(buf: &[u8]) -> Result<Option<(Header, usize)>, RecordingError> {
    let Some((fixed, after)) = buf.split_at_checked(HEADER_FIXED_LEN) else {
        return Ok(None);
    };
    // Magic and version were checked by the caller; then three u32 fields.
    let mut cur = ByteCursor::new(fixed.get(MAGIC.len() + 2..).unwrap_or_default());
    let mut field = || cur.array::<4>().map(u32::from_le_bytes);
    let (Some(meta_len), Some(meta_crc), Some(fixed_crc)) = (field(), field(), field()) else {
        return Ok(None);
    };
    if crc32c(fixed.get(..HEADER_FIXED_LEN - 4).unwrap_or_default()) != fixed_crc {
        return Err(corrupt_header("header checksum mismatch"));
    }
    let meta_len = meta_len as usize;
    if meta_len > MAX_META_LEN {
        return Err(corrupt_header(format!(
            "metadata of {meta_len} bytes is over the {MAX_META_LEN}-byte limit"
        )));
    }
    let Some(json) = after.get(..meta_len) else {
        return Ok(None);
    };
    if crc32c(json) != meta_crc {
        return Err(corrupt_header("metadata checksum mismatch"));
    }
    let meta: RecordingMeta = serde_json::from_slice(json)
        .map_err(|err| corrupt_header(format!("metadata is not valid JSON: {err}")))?;
    if !super::is_valid_session_id(&meta.session_id) {
        return Err(corrupt_header("metadata has an invalid session id"));
    }
    Ok(Some((
        Header { version: 1, meta },
        HEADER_FIXED_LEN + meta_len,
    )))
}

/// One recorded event, borrowing its payload from the chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// Bytes the session wrote to the terminal.
    Output(&'a [u8]),
    /// Bytes the user typed.
    Input(&'a [u8]),
    /// The terminal was resized.
    Resize {
        /// New width in columns.
        cols: u16,
        /// New height in rows.
        rows: u16,
    },
    /// A structured event as JSON text (an exec command, an exit status, a port forward …).
    Json(&'a str),
    /// The session ended; always the recording's last event.
    End {
        /// The exit status of the session's process, if known.
        exit_status: Option<i32>,
    },
}

impl Event<'_> {
    /// An owned copy.
    pub fn to_owned_event(&self) -> OwnedEvent {
        match *self {
            Event::Output(b) => OwnedEvent::Output(b.to_vec()),
            Event::Input(b) => OwnedEvent::Input(b.to_vec()),
            Event::Resize { cols, rows } => OwnedEvent::Resize { cols, rows },
            Event::Json(s) => OwnedEvent::Json(s.to_owned()),
            Event::End { exit_status } => OwnedEvent::End { exit_status },
        }
    }
}

/// An owned [`Event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnedEvent {
    /// See [`Event::Output`].
    Output(Vec<u8>),
    /// See [`Event::Input`].
    Input(Vec<u8>),
    /// See [`Event::Resize`].
    Resize {
        /// New width in columns.
        cols: u16,
        /// New height in rows.
        rows: u16,
    },
    /// See [`Event::Json`].
    Json(String),
    /// See [`Event::End`].
    End {
        /// The exit status, if known.
        exit_status: Option<i32>,
    },
}

/// An event and when it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedEvent<'a> {
    /// Time since the session started.
    pub at: Duration,
    /// The event.
    pub event: Event<'a>,
}

/// One parsed, checksum-verified chunk; its events are decoded lazily by [`Chunk::events`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk<'a> {
    seq: u64,
    start_us: u64,
    last_us: u64,
    count: u64,
    has_end: bool,
    events: &'a [u8],
}

impl<'a> Chunk<'a> {
    /// The chunk's sequence number (its index in the file).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// When its first event happened.
    pub fn start(&self) -> Duration {
        Duration::from_micros(self.start_us)
    }

    /// When its last event happened.
    pub fn last(&self) -> Duration {
        Duration::from_micros(self.last_us)
    }

    /// How many events it holds.
    pub fn event_count(&self) -> u64 {
        self.count
    }

    /// Whether it holds the recording's end event (as its last event).
    pub fn has_end(&self) -> bool {
        self.has_end
    }

    /// Its events, in order.
    pub fn events(&self) -> Events<'a> {
        Events {
            cur: ByteCursor::new(self.events),
            prev_us: self.start_us,
            left: self.count,
        }
    }
}

/// The events of one [`Chunk`].
#[derive(Debug, Clone)]
pub struct Events<'a> {
    cur: ByteCursor<'a>,
    prev_us: u64,
    left: u64,
}

impl<'a> Iterator for Events<'a> {
    type Item = TimedEvent<'a>;

    fn next(&mut self) -> Option<TimedEvent<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // The chunk was fully decoded once when it was parsed, so this cannot fail; if it
        // somehow did, the iteration just ends.
        let (at_us, event) = decode_event(&mut self.cur, self.prev_us).ok()?;
        self.prev_us = at_us;
        Some(TimedEvent {
            at: Duration::from_micros(at_us),
            event,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = usize::try_from(self.left).unwrap_or(usize::MAX);
        (left, Some(left))
    }
}

fn decode_bytes<'a>(cur: &mut ByteCursor<'a>) -> Result<&'a [u8], &'static str> {
    let len = cur.varint().ok_or("bad payload length")?;
    let len = usize::try_from(len).map_err(|_| "payload length overflows")?;
    cur.take(len)
        .ok_or("payload runs past the end of the chunk")
}

pub(crate) fn decode_event<'a>(
    cur: &mut ByteCursor<'a>,
    prev_us: u64,
) -> Result<(u64, Event<'a>), &'static str> {
    let kind = cur.u8().ok_or("event runs past the end of the chunk")?;
    let delta = cur.varint().ok_or("bad event time delta")?;
    let at_us = prev_us.checked_add(delta).ok_or("event time overflows")?;
    let event = match kind {
        KIND_OUTPUT => Event::Output(decode_bytes(cur)?),
        KIND_INPUT => Event::Input(decode_bytes(cur)?),
        KIND_RESIZE => {
            let cols = cur.varint().ok_or("bad resize width")?;
            let rows = cur.varint().ok_or("bad resize height")?;
            Event::Resize {
                cols: u16::try_from(cols).map_err(|_| "resize width over 65535")?,
                rows: u16::try_from(rows).map_err(|_| "resize height over 65535")?,
            }
        }
        KIND_JSON => Event::Json(
            std::str::from_utf8(decode_bytes(cur)?).map_err(|_| "JSON event is not UTF-8")?,
        ),
        KIND_END => {
            let code = cur.varint().ok_or("bad exit status")?;
            let exit_status = match code.checked_sub(1) {
                None => None,
                Some(zz) => {
                    Some(i32::try_from(unzigzag(zz)).map_err(|_| "exit status out of range")?)
                }
            };
            Event::End { exit_status }
        }
        _ => return Err("unknown event kind"),
    };
    Ok((at_us, event))
}

/// Appends the encoding of one event (kind, delta, payload) to `out`.
pub(crate) fn encode_event(out: &mut Vec<u8>, delta_us: u64, event: &Event<'_>) {
    let put_bytes = |out: &mut Vec<u8>, kind: u8, bytes: &[u8]| {
        out.push(kind);
        put_varint(out, delta_us);
        put_varint(out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    };
    match *event {
        Event::Output(b) => put_bytes(out, KIND_OUTPUT, b),
        Event::Input(b) => put_bytes(out, KIND_INPUT, b),
        Event::Json(s) => put_bytes(out, KIND_JSON, s.as_bytes()),
        Event::Resize { cols, rows } => {
            out.push(KIND_RESIZE);
            put_varint(out, delta_us);
            put_varint(out, u64::from(cols));
            put_varint(out, u64::from(rows));
        }
        Event::End { exit_status } => {
            out.push(KIND_END);
            put_varint(out, delta_us);
            put_varint(out, exit_status.map_or(0, |c| zigzag(i64::from(c)) + 1));
        }
    }
}

/// Parses one version-1 chunk at the start of `buf`: `Ok(None)` if `buf` is a prefix of a
/// chunk (more bytes needed), else the chunk, verified against its checksums and fully decoded
/// once, and its length in bytes. The error says what is wrong; [`ChunkCursor`] adds where.
pub fn parse_chunk(buf: &[u8]) -> Result<Option<(Chunk<'_>, usize)>, ChunkError> {
    let Some(&kind) = buf.first() else {
        return Ok(None);
    };
    if kind != CHUNK_TYPE_EVENTS {
        return Err(ChunkError::UnknownType { found: kind });
    }
    let Some((head, after)) = buf.split_first_chunk::<CHUNK_HEADER_LEN>() else {
        return Ok(None);
    };
    let mut cur = ByteCursor::new(head);
    let _ = cur.u8();
    let (Some(len), Some(body_crc), Some(head_crc)) = (
        cur.array::<4>().map(u32::from_le_bytes),
        cur.array::<4>().map(u32::from_le_bytes),
        cur.array::<4>().map(u32::from_le_bytes),
    ) else {
        return Ok(None);
    };
    if crc32c(head.get(..CHUNK_HEADER_LEN - 4).unwrap_or_default()) != head_crc {
        return Err(ChunkError::HeaderChecksum);
    }
    if len as usize > MAX_CHUNK_BODY {
        return Err(ChunkError::TooLong {
            len: u64::from(len),
            max: MAX_CHUNK_BODY as u64,
        });
    }
    let Some(body) = after.get(..len as usize) else {
        return Ok(None);
    };
    let actual = crc32c(body);
    if actual != body_crc {
        return Err(ChunkError::BodyChecksum {
            expected: body_crc,
            actual,
        });
    }
    let chunk = decode_body(body).map_err(|reason| ChunkError::Malformed { reason })?;
    Ok(Some((chunk, CHUNK_HEADER_LEN + body.len())))
}

fn decode_body(body: &[u8]) -> Result<Chunk<'_>, &'static str> {
    let mut cur = ByteCursor::new(body);
    let seq = cur.varint().ok_or("bad sequence number")?;
    let start_us = cur.varint().ok_or("bad start time")?;
    let count = cur.varint().ok_or("bad event count")?;
    if count == 0 {
        return Err("chunk holds no events");
    }
    let events = cur.rest();
    let mut prev_us = start_us;
    let mut has_end = false;
    for _ in 0..count {
        if has_end {
            return Err("event after the end event");
        }
        let (at_us, event) = decode_event(&mut cur, prev_us)?;
        has_end = matches!(event, Event::End { .. });
        prev_us = at_us;
    }
    if !cur.is_empty() {
        return Err("bytes after the last event");
    }
    Ok(Chunk {
        seq,
        start_us,
        last_us: prev_us,
        count,
        has_end,
        events,
    })
}

/// Reads the chunks of one file in order, checking that each follows the last (sequence
/// numbers, time, nothing after the end event) and naming the index and offset of a bad one.
/// Sans-IO: the caller hands it the bytes after the previous chunk.
#[derive(Debug, Clone)]
pub struct ChunkCursor {
    version: u16,
    index: u64,
    offset: u64,
    last_us: u64,
    ended: bool,
}

impl ChunkCursor {
    /// A cursor for the chunks after a header of `header_len` bytes.
    pub fn new(header: &Header, header_len: usize) -> Self {
        Self {
            version: header.version,
            index: 0,
            offset: header_len as u64,
            last_us: 0,
            ended: false,
        }
    }

    /// Parses the next chunk at the start of `buf` (which starts at [`ChunkCursor::offset`]):
    /// `Ok(None)` if more bytes are needed, else the chunk and its length.
    pub fn parse_next<'b>(
        &mut self,
        buf: &'b [u8],
    ) -> Result<Option<(Chunk<'b>, usize)>, RecordingError> {
        let at = |error| RecordingError::CorruptChunk {
            index: self.index,
            offset: self.offset,
            error,
        };
        // Every version so far shares the version-1 chunk layout.
        debug_assert!(self.version <= FORMAT_VERSION);
        if self.ended && !buf.is_empty() {
            return Err(at(ChunkError::AfterEnd));
        }
        let Some((chunk, len)) = parse_chunk(buf).map_err(at)? else {
            return Ok(None);
        };
        if chunk.seq != self.index {
            return Err(at(ChunkError::OutOfSequence {
                expected: self.index,
                found: chunk.seq,
            }));
        }
        if chunk.start_us < self.last_us {
            return Err(at(ChunkError::TimeWentBack {
                start_us: chunk.start_us,
                prev_us: self.last_us,
            }));
        }
        self.index += 1;
        self.offset += len as u64;
        self.last_us = chunk.last_us;
        self.ended = chunk.has_end;
        Ok(Some((chunk, len)))
    }

    /// The file offset of the next chunk (the length of the intact prefix so far).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// How many chunks were read.
    pub fn chunks(&self) -> u64 {
        self.index
    }

    /// When the last event read happened.
    pub fn last(&self) -> Duration {
        Duration::from_micros(self.last_us)
    }

    /// Whether the end event was read.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// The error for bytes that stop inside the next chunk.
    pub fn truncated(&self) -> RecordingError {
        RecordingError::Truncated {
            offset: self.offset,
            complete_chunks: self.index,
        }
    }
}

/// What [`Recording::check`] found in an intact, finished recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordingSummary {
    /// Number of chunks.
    pub chunks: u64,
    /// Number of events.
    pub events: u64,
    /// Time of the last (end) event.
    pub duration: Duration,
    /// The exit status in the end event.
    pub exit_status: Option<i32>,
}

/// A whole recording (or the prefix of one) in memory.
#[derive(Debug, Clone)]
pub struct Recording<'a> {
    header: Header,
    header_len: usize,
    bytes: &'a [u8],
}

impl<'a> Recording<'a> {
    /// Parses the header of `bytes`; a header cut short is [`RecordingError::Truncated`] at 0.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, RecordingError> {
        match parse_header(bytes)? {
            Some((header, header_len)) => Ok(Self {
                header,
                header_len,
                bytes,
            }),
            None => Err(RecordingError::Truncated {
                offset: 0,
                complete_chunks: 0,
            }),
        }
    }

    /// The file header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The session metadata.
    pub fn meta(&self) -> &RecordingMeta {
        &self.header.meta
    }

    /// The header's length in bytes (where the first chunk starts).
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    /// The chunks in order. After the last complete chunk the iterator yields
    /// [`RecordingError::Truncated`] if bytes of an incomplete one follow, or the error of a
    /// corrupt chunk, and then ends.
    pub fn chunks(&self) -> Chunks<'a> {
        Chunks {
            cursor: ChunkCursor::new(&self.header, self.header_len),
            rest: self.bytes.get(self.header_len..).unwrap_or_default(),
            done: false,
        }
    }

    /// All events in order, with the errors of [`Recording::chunks`].
    pub fn events(&self) -> RecordingEvents<'a> {
        RecordingEvents {
            chunks: self.chunks(),
            current: None,
        }
    }

    /// Checks the whole recording: every chunk intact and the last one holding the end event.
    pub fn check(&self) -> Result<RecordingSummary, RecordingError> {
        let mut summary = RecordingSummary {
            chunks: 0,
            events: 0,
            duration: Duration::ZERO,
            exit_status: None,
        };
        let mut ended = false;
        for chunk in self.chunks() {
            let chunk = chunk?;
            summary.chunks += 1;
            summary.events += chunk.event_count();
            summary.duration = chunk.last();
            if chunk.has_end() {
                ended = true;
                if let Some(TimedEvent {
                    event: Event::End { exit_status },
                    ..
                }) = chunk.events().last()
                {
                    summary.exit_status = exit_status;
                }
            }
        }
        if !ended {
            return Err(RecordingError::Unfinished {
                chunks: summary.chunks,
            });
        }
        Ok(summary)
    }
}

/// The chunks of a [`Recording`].
#[derive(Debug, Clone)]
pub struct Chunks<'a> {
    cursor: ChunkCursor,
    rest: &'a [u8],
    done: bool,
}

impl Chunks<'_> {
    /// The cursor's state: offset of the next chunk, chunks read, whether the end was seen.
    pub fn cursor(&self) -> &ChunkCursor {
        &self.cursor
    }
}

impl<'a> Iterator for Chunks<'a> {
    type Item = Result<Chunk<'a>, RecordingError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.cursor.parse_next(self.rest) {
            Ok(Some((chunk, len))) => {
                self.rest = self.rest.get(len..).unwrap_or_default();
                Some(Ok(chunk))
            }
            Ok(None) => {
                self.done = true;
                (!self.rest.is_empty()).then(|| Err(self.cursor.truncated()))
            }
            Err(err) => {
                self.done = true;
                Some(Err(err))
            }
        }
    }
}

/// The events of a [`Recording`], across chunks.
#[derive(Debug, Clone)]
pub struct RecordingEvents<'a> {
    chunks: Chunks<'a>,
    current: Option<Events<'a>>,
}

impl<'a> Iterator for RecordingEvents<'a> {
    type Item = Result<TimedEvent<'a>, RecordingError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(event) = self.current.as_mut().and_then(Iterator::next) {
                return Some(Ok(event));
            }
            match self.chunks.next()? {
                Ok(chunk) => self.current = Some(chunk.events()),
                Err(err) => return Some(Err(err)),
            }
        }
    }
}
