//! Framing shared by frontend and backend messages: `type:u8 length:u32
//! body`, the errors, and the field readers and writers both directions use.

use crate::reader::{Reader, array_at, find_byte};

/// Largest `length` accepted by default: 1 GiB, PostgreSQL's own limit
/// (`PQ_LARGE_MESSAGE_LIMIT`).
pub const DEFAULT_MAX_MESSAGE_LEN: usize = 1 << 30;
/// Bytes of `type` + `length`.
pub const HEADER_LEN: usize = 5;

/// Why received bytes are not an acceptable message. Always the peer's fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PgMessageError {
    /// A `length` below 4 (it counts itself).
    #[error("message type {tag:#04x} has length {len}, below the minimum of 4")]
    TooShort { tag: u8, len: u32 },
    /// A `length` over the configured limit.
    #[error("message type {tag:#04x} has length {len}, over the limit of {max}")]
    Oversized { tag: u8, len: u32, max: usize },
    /// A type byte that is not a message of this direction.
    #[error("unknown message type {tag:#04x}")]
    UnknownType { tag: u8 },
    /// A field runs past the end of its message.
    #[error("message type {tag:#04x}: field {what} runs past the end of the message")]
    Truncated { tag: u8, what: &'static str },
    /// Bytes left after the last field.
    #[error("message type {tag:#04x}: {extra} bytes after the last field")]
    TrailingBytes { tag: u8, extra: usize },
    /// A field value the protocol does not allow; `what` says which.
    #[error("message type {tag:#04x}: invalid {what}")]
    Invalid { tag: u8, what: &'static str },
    /// A field a reader needs lies past the part of a long message that a
    /// scanner keeps (its cap), e.g. a statement name of kilobytes.
    #[error(
        "message type {tag:#04x}: field {what} is longer than the {cap} bytes kept of the message"
    )]
    BeyondCap {
        tag: u8,
        what: &'static str,
        cap: usize,
    },
}

/// Why a message built locally cannot be encoded. The caller's fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PgEncodeError {
    /// A string that would be NUL-terminated on the wire contains NUL.
    #[error("{field} contains a NUL byte")]
    InteriorNul { field: &'static str },
    /// A parameter with an empty name.
    #[error("parameter name is empty")]
    EmptyName,
    /// A StartupMessage without a non-empty `user`.
    #[error("StartupMessage needs a non-empty user parameter")]
    MissingUser,
    /// A cancel/backend secret key outside 4..=256 bytes.
    #[error("secret key of {len} bytes (4..=256 allowed)")]
    SecretKeyLength { len: usize },
    /// An SQLSTATE that is not five ASCII digits or upper-case letters.
    #[error("SQLSTATE {code:?} is not five characters 0-9/A-Z")]
    InvalidSqlState { code: String },
    /// The message would exceed a limit.
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLong { len: usize, max: usize },
}

/// One message's type and body, not yet interpreted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawMessage<'a> {
    pub tag: u8,
    pub body: &'a [u8],
}

/// Split one message off the front of `buf` without looking at its body:
/// the message and its total length. Checks `length` against 4..=`max_len` and the
/// type with `known` as soon as those bytes arrive.
pub fn split_message(
    buf: &[u8],
    max_len: usize,
    known: impl Fn(u8) -> bool,
) -> Result<Option<(RawMessage<'_>, usize)>, PgMessageError> {
    let Some(&tag) = buf.first() else {
        return Ok(None);
    };
    if !known(tag) {
        return Err(PgMessageError::UnknownType { tag });
    }
    let Some(len) = array_at::<4>(buf, 1).map(u32::from_be_bytes) else {
        return Ok(None);
    };
    let body_len = check_len(tag, len, max_len)?;
    let Some(body) = buf.get(HEADER_LEN..HEADER_LEN + body_len) else {
        return Ok(None);
    };
    Ok(Some((RawMessage { tag, body }, HEADER_LEN + body_len)))
}

/// The body length for a `length` field, or why it is unacceptable.
pub(crate) fn check_len(tag: u8, len: u32, max_len: usize) -> Result<usize, PgMessageError> {
    if len < 4 {
        return Err(PgMessageError::TooShort { tag, len });
    }
    if len as usize > max_len {
        return Err(PgMessageError::Oversized {
            tag,
            len,
            max: max_len,
        });
    }
    Ok(len as usize - 4)
}

/// Field reader over one message body, naming the message in its errors.
pub(crate) struct Fields<'a> {
    pub r: Reader<'a>,
    pub tag: u8,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(tag: u8, body: &'a [u8]) -> Self {
        Self {
            r: Reader::new(body),
            tag,
        }
    }

    fn truncated(&self, what: &'static str) -> PgMessageError {
        PgMessageError::Truncated {
            tag: self.tag,
            what,
        }
    }

    pub(crate) fn invalid(&self, what: &'static str) -> PgMessageError {
        PgMessageError::Invalid {
            tag: self.tag,
            what,
        }
    }

    /// A NUL-terminated string, without its NUL.
    pub(crate) fn cstr(&mut self, what: &'static str) -> Result<&'a [u8], PgMessageError> {
        let rest = self.r.clone().rest();
        let nul = find_byte(rest, 0).ok_or(self.truncated(what))?;
        let s = self.r.take(nul).ok_or(self.truncated(what))?;
        self.r.take(1);
        Ok(s)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, PgMessageError> {
        self.r.u8().ok_or(self.truncated(what))
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, PgMessageError> {
        self.r.u16().ok_or(self.truncated(what))
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, PgMessageError> {
        self.r.u32().ok_or(self.truncated(what))
    }

    pub(crate) fn take(
        &mut self,
        n: usize,
        what: &'static str,
    ) -> Result<&'a [u8], PgMessageError> {
        self.r.take(n).ok_or(self.truncated(what))
    }

    /// An `Int16` count that must not be negative.
    pub(crate) fn count(&mut self, what: &'static str) -> Result<usize, PgMessageError> {
        let n = self.u16(what)?;
        if n > i16::MAX as u16 {
            return Err(self.invalid(what));
        }
        Ok(usize::from(n))
    }

    /// `count:i16` then `count` fixed-size items; returns (count, raw items).
    pub(crate) fn array(
        &mut self,
        size: usize,
        what: &'static str,
    ) -> Result<(u16, &'a [u8]), PgMessageError> {
        let n = self.count(what)?;
        let raw = self.take(n * size, what)?;
        Ok((n as u16, raw))
    }

    /// `count:i16` then `count` values of `len:i32 bytes` (`-1` = NULL).
    pub(crate) fn values(&mut self, what: &'static str) -> Result<(u16, &'a [u8]), PgMessageError> {
        let n = self.count(what)?;
        let start = self.r.clone();
        let mut used = 0usize;
        for _ in 0..n {
            let len = self.u32(what)? as i32;
            used += 4;
            if len == -1 {
                continue;
            }
            let len = usize::try_from(len).map_err(|_| self.invalid(what))?;
            self.take(len, what)?;
            used += len;
        }
        let raw = start.clone().take(used).unwrap_or_default();
        Ok((n as u16, raw))
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        self.r.rest()
    }

    pub(crate) fn end(&self) -> Result<(), PgMessageError> {
        match self.r.remaining() {
            0 => Ok(()),
            extra => Err(PgMessageError::TrailingBytes {
                tag: self.tag,
                extra,
            }),
        }
    }
}

/// Iterator over `len:i32 bytes` values (`None` = NULL), pre-validated.
#[derive(Clone, Debug)]
pub struct Values<'a> {
    r: Reader<'a>,
}

impl<'a> Values<'a> {
    pub(crate) fn new(raw: &'a [u8]) -> Self {
        Self {
            r: Reader::new(raw),
        }
    }
}

impl<'a> Iterator for Values<'a> {
    type Item = Option<&'a [u8]>;

    fn next(&mut self) -> Option<Self::Item> {
        let len = self.r.u32()? as i32;
        if len < 0 {
            return Some(None);
        }
        Some(Some(self.r.take(len as usize)?))
    }
}

/// Iterator over big-endian `i16` items (format codes).
#[derive(Clone, Debug)]
pub struct Formats<'a> {
    r: Reader<'a>,
}

impl<'a> Formats<'a> {
    pub(crate) fn new(raw: &'a [u8]) -> Self {
        Self {
            r: Reader::new(raw),
        }
    }
}

impl Iterator for Formats<'_> {
    type Item = i16;

    fn next(&mut self) -> Option<i16> {
        self.r.u16().map(|v| v as i16)
    }
}

/// Iterator over big-endian `u32` items (type OIDs).
#[derive(Clone, Debug)]
pub struct Oids<'a> {
    r: Reader<'a>,
}

impl<'a> Oids<'a> {
    pub(crate) fn new(raw: &'a [u8]) -> Self {
        Self {
            r: Reader::new(raw),
        }
    }
}

impl Iterator for Oids<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        self.r.u32()
    }
}

/// Append `tag`, a length placeholder; returns where the length goes.
pub(crate) fn begin(tag: u8, out: &mut Vec<u8>) -> usize {
    out.push(tag);
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    at
}

/// Fill in the length started by [`begin`].
pub(crate) fn finish(at: usize, out: &mut [u8]) {
    let len = (out.len() - at) as u32;
    if let Some(dst) = out.get_mut(at..at + 4) {
        dst.copy_from_slice(&len.to_be_bytes());
    }
}

pub(crate) fn put_cstr(s: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(s);
    out.push(0);
}

/// A string for a NUL-terminated field, or the caller's error.
pub(crate) fn checked_cstr<'s>(s: &'s str, field: &'static str) -> Result<&'s [u8], PgEncodeError> {
    if s.contains('\0') {
        return Err(PgEncodeError::InteriorNul { field });
    }
    Ok(s.as_bytes())
}
