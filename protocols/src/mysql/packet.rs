//! MySQL packet framing, length-encoded values and the errors of the codec.

use crate::reader::{Reader, find_byte};

/// Bytes of `length:u24le seq:u8`.
pub const PACKET_HEADER_LEN: usize = 4;
/// Largest payload of one packet; a payload of exactly this length continues
/// in the next packet.
pub const MAX_PACKET_PAYLOAD: usize = 0x00ff_ffff;

/// Why received bytes are not acceptable MySQL protocol. Always the peer's
/// fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MysqlError {
    /// A field runs past the end of its packet.
    #[error("{what} runs past the end of the packet")]
    Truncated { what: &'static str },
    /// Bytes left after the last field.
    #[error("{extra} bytes after the last field of {what}")]
    TrailingBytes { what: &'static str, extra: usize },
    /// A field value the protocol does not allow; `what` says which.
    #[error("invalid {what}")]
    Invalid { what: &'static str },
    /// A server greeting that is not protocol version 10.
    #[error("handshake protocol version {version} (only 10 is supported)")]
    UnsupportedProtocolVersion { version: u8 },
    /// A peer that does not speak the 4.1 protocol (`CLIENT_PROTOCOL_41`).
    #[error("peer does not support CLIENT_PROTOCOL_41")]
    Protocol41Required,
}

/// Why a packet built locally cannot be encoded. The caller's fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MysqlEncodeError {
    /// An SQLSTATE that is not five ASCII characters.
    #[error("SQLSTATE {code:?} is not five ASCII characters")]
    InvalidSqlState { code: String },
    /// A string that is NUL-terminated on the wire contains NUL.
    #[error("{field} contains a NUL byte")]
    InteriorNul { field: &'static str },
    /// A field longer than its length prefix allows.
    #[error("{field} is {len} bytes, over the limit of {max}")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
}

/// One physical packet, borrowing the caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet<'a> {
    pub seq: u8,
    pub payload: &'a [u8],
}

impl Packet<'_> {
    /// True when the payload continues in the next packet (it is exactly
    /// [`MAX_PACKET_PAYLOAD`] bytes).
    pub fn is_continued(&self) -> bool {
        self.payload.len() == MAX_PACKET_PAYLOAD
    }
}

/// Parse one packet from the bytes received so far: `Ok(None)` until it is
/// complete, then the packet and its length on the wire.
pub fn parse_packet(buf: &[u8]) -> Result<Option<(Packet<'_>, usize)>, MysqlError> {
    let mut r = Reader::new(buf);
    let Some([a, b, c, seq]) = r.array::<4>() else {
        return Ok(None);
    };
    let len = u32::from_le_bytes([a, b, c, 0]) as usize;
    let Some(payload) = r.take(len) else {
        return Ok(None);
    };
    Ok(Some((Packet { seq, payload }, PACKET_HEADER_LEN + len)))
}

/// Append `payload` as packets starting at sequence id `seq`, splitting at
/// [`MAX_PACKET_PAYLOAD`] (with an empty packet after an exact multiple).
/// Returns the sequence id of the next packet.
pub fn encode_packet(seq: u8, payload: &[u8], out: &mut Vec<u8>) -> u8 {
    let mut seq = seq;
    let mut rest = payload;
    loop {
        let n = rest.len().min(MAX_PACKET_PAYLOAD);
        let (chunk, tail) = rest.split_at(n);
        let [a, b, c, _] = (n as u32).to_le_bytes();
        out.extend_from_slice(&[a, b, c, seq]);
        out.extend_from_slice(chunk);
        seq = seq.wrapping_add(1);
        rest = tail;
        if n < MAX_PACKET_PAYLOAD {
            return seq;
        }
    }
}

/// Decode a length-encoded integer at the start of `buf`: the value and how
/// many bytes it took. `0xfb` (NULL) and `0xff` are not integers.
pub fn decode_lenenc_int(buf: &[u8]) -> Result<(u64, usize), MysqlError> {
    let mut r = Reader::new(buf);
    let v = lenenc_int(&mut r, "length-encoded integer")?;
    Ok((v, r.pos()))
}

/// Decode a length-encoded string at the start of `buf`: its bytes and how
/// many bytes it took in all.
pub fn decode_lenenc_bytes(buf: &[u8]) -> Result<(&[u8], usize), MysqlError> {
    let mut r = Reader::new(buf);
    let v = lenenc_bytes(&mut r, "length-encoded string")?;
    Ok((v, r.pos()))
}

/// Append `v` as a length-encoded integer (shortest form).
pub fn encode_lenenc_int(v: u64, out: &mut Vec<u8>) {
    match v {
        0..=250 => out.push(v as u8),
        251..=0xffff => {
            out.push(0xfc);
            out.extend_from_slice(&(v as u16).to_le_bytes());
        }
        0x1_0000..=0xff_ffff => {
            out.push(0xfd);
            out.extend_from_slice(&(v as u32).to_le_bytes()[..3]);
        }
        _ => {
            out.push(0xfe);
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// Append `bytes` as a length-encoded string.
pub fn encode_lenenc_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    encode_lenenc_int(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

pub(crate) fn lenenc_int(r: &mut Reader<'_>, what: &'static str) -> Result<u64, MysqlError> {
    let t = || MysqlError::Truncated { what };
    Ok(match r.u8().ok_or_else(t)? {
        n @ 0..=250 => u64::from(n),
        0xfc => u64::from(u16::from_le_bytes(r.array().ok_or_else(t)?)),
        0xfd => {
            let [a, b, c] = r.array().ok_or_else(t)?;
            u64::from(u32::from_le_bytes([a, b, c, 0]))
        }
        0xfe => u64::from_le_bytes(r.array().ok_or_else(t)?),
        _ => return Err(MysqlError::Invalid { what }),
    })
}

pub(crate) fn lenenc_bytes<'a>(
    r: &mut Reader<'a>,
    what: &'static str,
) -> Result<&'a [u8], MysqlError> {
    let n = lenenc_int(r, what)?;
    let n = usize::try_from(n).map_err(|_| MysqlError::Truncated { what })?;
    r.take(n).ok_or(MysqlError::Truncated { what })
}

/// A NUL-terminated string, without its NUL.
pub(crate) fn cstr<'a>(r: &mut Reader<'a>, what: &'static str) -> Result<&'a [u8], MysqlError> {
    let rest = r.clone().rest();
    let nul = find_byte(rest, 0).ok_or(MysqlError::Truncated { what })?;
    let s = r.take(nul).ok_or(MysqlError::Truncated { what })?;
    r.take(1);
    Ok(s)
}

pub(crate) fn take<'a>(
    r: &mut Reader<'a>,
    n: usize,
    what: &'static str,
) -> Result<&'a [u8], MysqlError> {
    r.take(n).ok_or(MysqlError::Truncated { what })
}

pub(crate) fn array<const N: usize>(
    r: &mut Reader<'_>,
    what: &'static str,
) -> Result<[u8; N], MysqlError> {
    r.array().ok_or(MysqlError::Truncated { what })
}

pub(crate) fn u16le(r: &mut Reader<'_>, what: &'static str) -> Result<u16, MysqlError> {
    array(r, what).map(u16::from_le_bytes)
}

pub(crate) fn u32le(r: &mut Reader<'_>, what: &'static str) -> Result<u32, MysqlError> {
    array(r, what).map(u32::from_le_bytes)
}

pub(crate) fn end(r: &Reader<'_>, what: &'static str) -> Result<(), MysqlError> {
    match r.remaining() {
        0 => Ok(()),
        extra => Err(MysqlError::TrailingBytes { what, extra }),
    }
}
