//! TLS 1.3 records on the relay's fast path: framing, and moving a record from one connection's
//! keys to another's in place.
//!
//! Once both TLS connections of a relayed session (user ↔ proxy and proxy ↔ agent) have finished
//! their handshakes, the proxy no longer needs a TLS library per byte: each record one peer sends
//! is opened in place with that connection's receive key and sealed, in the same bytes, with the
//! other connection's send key ([`reprotect`]). The payload is never copied; what goes out is the
//! buffer that came in. Where the other side of a session is plain TCP (an agent's application,
//! a client's local port), records are opened in place and their data gathered
//! ([`open_records`]), and plaintext is sealed into records ([`seal_application_data`]). This module owns the record framing of RFC 8446 §5 (the outer header,
//! length limits, the inner content type behind zero padding) and what may pass: application
//! data, `close_notify` (the end of one direction) and `user_canceled`. Every other record ends
//! the session with an error that says why: a post-handshake message (a key update or ticket is
//! about one connection's keys and cannot be forwarded), a fatal alert, or bytes that do not
//! decrypt.
//!
//! It is sans-IO and holds no key: the AEAD is the caller's [`RecordProtection`], which also owns
//! the sequence numbers.

/// Bytes of a record header: type, version, length.
pub const HEADER_LEN: usize = 5;
/// The most plaintext one record carries (RFC 8446 §5.1).
pub const MAX_PLAINTEXT_LEN: usize = 1 << 14;
/// The most ciphertext one TLS 1.3 record may carry (RFC 8446 §5.2: 2^14 + 256).
pub const MAX_CIPHERTEXT_LEN: usize = MAX_PLAINTEXT_LEN + 256;
/// The longest record on the wire.
pub const MAX_RECORD_LEN: usize = HEADER_LEN + MAX_CIPHERTEXT_LEN;

const CHANGE_CIPHER_SPEC: u8 = 20;
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
const APPLICATION_DATA: u8 = 23;
/// The legacy record version every TLS 1.3 record carries.
const LEGACY_VERSION: [u8; 2] = [3, 3];
const CLOSE_NOTIFY: u8 = 0;
const USER_CANCELED: u8 = 90;
const ALERT_LEVEL_WARNING: u8 = 1;

/// One direction's AEAD with its sequence number: what opens records received on a connection,
/// or seals records sent on one.
pub trait RecordProtection {
    /// Bytes the AEAD appends (its tag).
    fn tag_len(&self) -> usize;
    /// Decrypts `body` (ciphertext followed by the tag) in place, with `header` as additional
    /// data and the next sequence number; returns the length of the inner plaintext now at the
    /// start of `body`.
    fn open(
        &mut self,
        header: &[u8; HEADER_LEN],
        body: &mut [u8],
    ) -> Result<usize, ProtectionError>;
    /// Encrypts `body[..len]` in place and writes the tag into `body[len..len + tag_len()]`,
    /// with `header` as additional data and the next sequence number.
    fn seal(
        &mut self,
        header: &[u8; HEADER_LEN],
        body: &mut [u8],
        len: usize,
    ) -> Result<(), ProtectionError>;
}

/// Why a [`RecordProtection`] could not open or seal a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProtectionError {
    #[error(
        "the record does not decrypt with the connection's key (corrupt, replayed or reordered)"
    )]
    Decrypt,
    #[error("the connection's key has protected as many records as it safely may")]
    KeyExhausted,
    #[error("the buffer has no room for the record's tag")]
    NoRoomForTag,
}

/// What was wrong with a record a peer sent, or why it cannot pass the fast path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error(
        "record of type {0} after the handshake, where TLS 1.3 sends only application_data (23) records"
    )]
    UnexpectedOuterType(u8),
    #[error("record version {0:#06x}, where TLS 1.3 records carry 0x0303")]
    BadVersion(u16),
    #[error("record of {0} bytes is longer than TLS 1.3 allows (16640)")]
    Oversized(usize),
    #[error("record of {0} bytes is too short to hold a content type and an authentication tag")]
    TooShort(usize),
    #[error("{0}")]
    Protection(#[from] ProtectionError),
    #[error("the record's plaintext is all padding: it has no content type")]
    NoContentType,
    #[error("the record's plaintext of {0} bytes is longer than TLS allows (16384)")]
    PlaintextOversized(usize),
    #[error("a post-handshake message (key update or session ticket) cannot be relayed")]
    PostHandshakeMessage,
    #[error("the peer sent TLS alert {0}")]
    Alert(u8),
    #[error("an alert record of {0} bytes (alerts are 2)")]
    BadAlert(usize),
    #[error("inner content type {0} is not one TLS 1.3 defines")]
    UnknownInnerType(u8),
    #[error(
        "the sealing key's tag ({seal} bytes) is longer than the opening key's ({open}): records cannot be re-sealed in place"
    )]
    TagMismatch { open: usize, seal: usize },
}

/// What [`reprotect`] or [`open_records`] did with a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reprotected {
    /// Bytes at the start of the input that were whole records, now processed; the rest is a
    /// partial record to keep for the next read.
    pub consumed: usize,
    /// Bytes at the start of the buffer ready to send on the other connection (`<= consumed`):
    /// re-sealed records for [`reprotect`], plaintext for [`open_records`].
    pub produced: usize,
    /// Application bytes carried (plaintext, for the session's byte counters).
    pub payload: usize,
    /// A `close_notify` was passed on: this direction has ended; bytes after it were ignored.
    pub closed: bool,
}

fn header(content_type: u8, len: usize) -> [u8; HEADER_LEN] {
    let len = u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes();
    [
        content_type,
        LEGACY_VERSION[0],
        LEGACY_VERSION[1],
        len[0],
        len[1],
    ]
}

/// Checks a record header; returns the body's length.
pub fn parse_header(h: &[u8; HEADER_LEN]) -> Result<usize, RecordError> {
    let [content_type, v0, v1, l0, l1] = *h;
    if content_type != APPLICATION_DATA {
        return Err(RecordError::UnexpectedOuterType(content_type));
    }
    if [v0, v1] != LEGACY_VERSION {
        return Err(RecordError::BadVersion(u16::from_be_bytes([v0, v1])));
    }
    let len = usize::from(u16::from_be_bytes([l0, l1]));
    if len > MAX_CIPHERTEXT_LEN {
        return Err(RecordError::Oversized(len));
    }
    Ok(len)
}

/// What one opened record carries, and where it lies in the buffer.
struct OpenedRecord {
    /// Its inner content type: application data, or an alert that may pass.
    content_type: u8,
    /// Where its data starts (after the header) and how long it is.
    data_start: usize,
    data_len: usize,
    /// Where the record ends: the next record starts here.
    end: usize,
}

/// What a record means for the direction it arrived on.
enum Passes {
    /// Application data (or an alert) to pass on.
    Yes,
    /// Nothing to pass (an empty application record, `user_canceled`).
    Dropped,
}

/// Opens the record at `buf[at..]` in place, if it is whole; `None` when more bytes are needed.
/// Errors for whatever may not pass: see [`reprotect`].
fn open_record(
    buf: &mut [u8],
    at: usize,
    open: &mut impl RecordProtection,
) -> Result<Option<(OpenedRecord, Passes)>, RecordError> {
    let Some(h) = buf.get(at..at + HEADER_LEN) else {
        return Ok(None);
    };
    let mut hdr = [0u8; HEADER_LEN];
    hdr.copy_from_slice(h);
    let len = parse_header(&hdr)?;
    if len < open.tag_len() + 1 {
        return Err(RecordError::TooShort(len));
    }
    let body_start = at + HEADER_LEN;
    let Some(body) = buf.get_mut(body_start..body_start + len) else {
        return Ok(None);
    };
    let inner = open.open(&hdr, body)?;
    let inner_plain = body.get(..inner).unwrap_or_default();
    let Some(type_at) = inner_plain.iter().rposition(|&b| b != 0) else {
        return Err(RecordError::NoContentType);
    };
    let content_type = inner_plain.get(type_at).copied().unwrap_or_default();
    let data_len = type_at;
    if data_len > MAX_PLAINTEXT_LEN {
        return Err(RecordError::PlaintextOversized(data_len));
    }
    let passes = classify(
        content_type,
        inner_plain.get(..data_len).unwrap_or_default(),
    )?;
    let record = OpenedRecord {
        content_type,
        data_start: body_start,
        data_len,
        end: body_start + len,
    };
    Ok(Some((record, passes)))
}

/// Whether a record of `content_type` carrying `data` may pass the fast path.
fn classify(content_type: u8, data: &[u8]) -> Result<Passes, RecordError> {
    match content_type {
        APPLICATION_DATA if data.is_empty() => Ok(Passes::Dropped),
        APPLICATION_DATA => Ok(Passes::Yes),
        ALERT => {
            if data.len() != 2 {
                return Err(RecordError::BadAlert(data.len()));
            }
            match data.get(1).copied().unwrap_or_default() {
                CLOSE_NOTIFY => Ok(Passes::Yes),
                USER_CANCELED => Ok(Passes::Dropped),
                other => Err(RecordError::Alert(other)),
            }
        }
        HANDSHAKE => Err(RecordError::PostHandshakeMessage),
        CHANGE_CIPHER_SPEC => Err(RecordError::UnexpectedOuterType(content_type)),
        other => Err(RecordError::UnknownInnerType(other)),
    }
}

/// Opens every whole record at the start of `buf` with `open` and seals it again with `seal`, in
/// place, compacting the output towards the start of `buf`. Application data passes;
/// `close_notify` passes and ends the direction; `user_canceled` and empty application records
/// are dropped; anything else is an error (the session must end: nothing after an error is
/// trustworthy).
pub fn reprotect(
    buf: &mut [u8],
    open: &mut impl RecordProtection,
    seal: &mut impl RecordProtection,
) -> Result<Reprotected, RecordError> {
    let (open_tag, seal_tag) = (open.tag_len(), seal.tag_len());
    if seal_tag > open_tag {
        return Err(RecordError::TagMismatch {
            open: open_tag,
            seal: seal_tag,
        });
    }
    let mut out = Reprotected::default();
    while let Some((rec, passes)) = open_record(buf, out.consumed, open)? {
        let r = out.consumed;
        out.consumed = rec.end;
        if let Passes::Dropped = passes {
            continue;
        }
        // Re-seal at the output cursor: data + content type + the sealing key's tag. The output
        // record is never longer than the input one, so it never overtakes unread input.
        let (w, data_len, content_type) = (out.produced, rec.data_len, rec.content_type);
        let out_len = data_len + 1 + seal_tag;
        if w != r {
            buf.copy_within(rec.data_start..rec.data_start + data_len, w + HEADER_LEN);
        }
        let out_hdr = header(APPLICATION_DATA, out_len);
        let Some(dst) = buf.get_mut(w..w + HEADER_LEN + out_len) else {
            return Err(RecordError::Protection(ProtectionError::NoRoomForTag));
        };
        dst[..HEADER_LEN].copy_from_slice(&out_hdr);
        let body = &mut dst[HEADER_LEN..];
        body[data_len] = content_type;
        seal.seal(&out_hdr, body, data_len + 1)?;
        out.produced = w + HEADER_LEN + out_len;
        if content_type == APPLICATION_DATA {
            out.payload += data_len;
        } else {
            out.closed = true;
            break;
        }
    }
    Ok(out)
}

/// Opens every whole record at the start of `buf` with `open`, in place, and gathers the
/// application bytes they carry at the start of `buf` (`produced` bytes of plaintext, which is
/// also `payload`): how a TLS connection ends in user space where the other side of the session
/// is plain (an agent's application, a client's local port). What passes and what is an error
/// is as for [`reprotect`]; after a `close_notify` (`closed`) nothing more is read.
pub fn open_records(
    buf: &mut [u8],
    open: &mut impl RecordProtection,
) -> Result<Reprotected, RecordError> {
    let mut out = Reprotected::default();
    while let Some((rec, passes)) = open_record(buf, out.consumed, open)? {
        out.consumed = rec.end;
        match passes {
            Passes::Dropped => continue,
            Passes::Yes if rec.content_type != APPLICATION_DATA => {
                out.closed = true;
                break;
            }
            Passes::Yes => {
                let w = out.produced;
                buf.copy_within(rec.data_start..rec.data_start + rec.data_len, w);
                out.produced += rec.data_len;
                out.payload += rec.data_len;
            }
        }
    }
    Ok(out)
}

/// Appends `data` to `out` as application-data records sealed with `seal` (for bytes that were
/// already decrypted before the fast path took over).
pub fn seal_application_data(
    data: &[u8],
    seal: &mut impl RecordProtection,
    out: &mut Vec<u8>,
) -> Result<(), ProtectionError> {
    for chunk in data.chunks(MAX_PLAINTEXT_LEN) {
        seal_one(APPLICATION_DATA, chunk, seal, out)?;
    }
    Ok(())
}

/// Appends a sealed `close_notify` alert to `out`: how a direction ends when its peer closed the
/// TCP connection without one.
pub fn seal_close_notify(
    seal: &mut impl RecordProtection,
    out: &mut Vec<u8>,
) -> Result<(), ProtectionError> {
    seal_one(ALERT, &[ALERT_LEVEL_WARNING, CLOSE_NOTIFY], seal, out)
}

fn seal_one(
    content_type: u8,
    data: &[u8],
    seal: &mut impl RecordProtection,
    out: &mut Vec<u8>,
) -> Result<(), ProtectionError> {
    let body_len = data.len() + 1 + seal.tag_len();
    let hdr = header(APPLICATION_DATA, body_len);
    let start = out.len();
    out.extend_from_slice(&hdr);
    out.extend_from_slice(data);
    out.push(content_type);
    out.resize(start + HEADER_LEN + body_len, 0);
    let body = out
        .get_mut(start + HEADER_LEN..)
        .ok_or(ProtectionError::NoRoomForTag)?;
    seal.seal(&hdr, body, data.len() + 1)
}

/// A stand-in AEAD for tests and fuzz targets: it XORs with a key byte and appends a 16-byte
/// checksum over the sequence number, header and plaintext. It hides nothing and is never used
/// to protect traffic; it lets the framing be exercised without a crypto library.
#[derive(Debug, Clone)]
pub struct ChecksumOnly {
    key: u8,
    seq: u64,
}

impl ChecksumOnly {
    /// A direction keyed by `key`, starting at sequence number `seq`.
    pub fn new(key: u8, seq: u64) -> Self {
        Self { key, seq }
    }

    fn tag(&self, header: &[u8; HEADER_LEN], plain: &[u8]) -> [u8; 16] {
        // FNV-1a, twice with different offsets, over seq ‖ header ‖ plaintext.
        let mut a: u64 = 0xcbf2_9ce4_8422_2325 ^ u64::from(self.key);
        let mut b: u64 = 0x8422_2325_cbf2_9ce4;
        for byte in self
            .seq
            .to_be_bytes()
            .iter()
            .chain(header.iter())
            .chain(plain.iter())
        {
            a = (a ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
            b = (b ^ u64::from(*byte))
                .wrapping_mul(0x0100_0000_01b3)
                .rotate_left(7);
        }
        let mut t = [0u8; 16];
        t[..8].copy_from_slice(&a.to_be_bytes());
        t[8..].copy_from_slice(&b.to_be_bytes());
        t
    }
}

impl RecordProtection for ChecksumOnly {
    fn tag_len(&self) -> usize {
        16
    }

    fn open(
        &mut self,
        header: &[u8; HEADER_LEN],
        body: &mut [u8],
    ) -> Result<usize, ProtectionError> {
        let len = body.len().checked_sub(16).ok_or(ProtectionError::Decrypt)?;
        let (data, tag) = body.split_at_mut(len);
        for b in data.iter_mut() {
            *b ^= self.key;
        }
        if self.tag(header, data) != *tag {
            return Err(ProtectionError::Decrypt);
        }
        self.seq += 1;
        Ok(len)
    }

    fn seal(
        &mut self,
        header: &[u8; HEADER_LEN],
        body: &mut [u8],
        len: usize,
    ) -> Result<(), ProtectionError> {
        if body.len() < len + 16 {
            return Err(ProtectionError::NoRoomForTag);
        }
        let (data, rest) = body.split_at_mut(len);
        let tag = self.tag(header, data);
        rest[..16].copy_from_slice(&tag);
        for b in data.iter_mut() {
            *b ^= self.key;
        }
        self.seq += 1;
        Ok(())
    }
}
