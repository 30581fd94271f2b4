//! PostgreSQL startup-phase frontend messages: parsing and encoding.
//!
//! This module owns the untyped packets a PostgreSQL client sends before
//! anything else (protocol docs, "Message Formats"): SSLRequest,
//! GSSENCRequest, CancelRequest and StartupMessage. Each is an `Int32` length
//! (counting itself) and an `Int32` code, then a body. It never answers and
//! never authenticates: choosing `S`/`N` and routing by user and database is
//! the proxy's job.
//!
//! Limits and rules: the length is 8..=[`MAX_STARTUP_LEN`]; SSLRequest and
//! GSSENCRequest are exactly 8 bytes; a CancelRequest carries a secret key of
//! 4..=256 bytes (4 in protocol 3.0, up to 256 in 3.2); a StartupMessage is
//! protocol 3.0 or 3.2 and carries NUL-terminated UTF-8 `name`/`value` pairs,
//! ended by one more NUL, including `user`. Lengths are checked as soon as
//! they arrive, so a bad packet is rejected without waiting for its body.
//! The encoders ([`encode_startup_message`], [`encode_cancel_request`],
//! [`encode_ssl_request`]) build what the agent re-sends to the real server.

use super::PgEncodeError;
use crate::reader::{Reader, array_at, find_byte};

/// Longest startup packet accepted (the server's own limit is 10000).
pub const MAX_STARTUP_LEN: usize = 10 * 1024;
/// SSLRequest code (1234 << 16 | 5679).
pub const SSL_REQUEST_CODE: u32 = 80_877_103;
/// GSSENCRequest code (1234 << 16 | 5680).
pub const GSSENC_REQUEST_CODE: u32 = 80_877_104;
/// CancelRequest code (1234 << 16 | 5678).
pub const CANCEL_REQUEST_CODE: u32 = 80_877_102;
/// The major half of every request code.
pub const REQUEST_CODE_MAJOR: u16 = 1234;
/// Lengths a CancelRequest may have: 12 + a 4..=256-byte secret key.
pub const CANCEL_REQUEST_LEN: std::ops::RangeInclusive<usize> = 16..=12 + 256;

/// Why the bytes are not an acceptable startup packet. Always the peer's fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StartupError {
    /// The length field is over [`MAX_STARTUP_LEN`].
    #[error("startup packet length {len} exceeds the limit of {MAX_STARTUP_LEN}")]
    Oversized { len: u32 },
    /// The length field is below the 8-byte minimum.
    #[error("startup packet length {len} is below the minimum of 8")]
    TooShort { len: u32 },
    /// A StartupMessage for a protocol other than 3.0 or 3.2.
    #[error("unsupported frontend protocol {major}.{minor} (3.0 and 3.2 are supported)")]
    UnsupportedProtocolVersion { major: u16, minor: u16 },
    /// A request code (1234.x) that is none of SSL, GSSENC or cancel.
    #[error("unknown startup request code {code}")]
    UnknownRequestCode { code: u32 },
    /// A StartupMessage without the required `user` parameter.
    #[error("StartupMessage has no user parameter")]
    MissingUser,
    /// A parameter name or value that is not UTF-8.
    #[error("startup parameter {what} is not valid UTF-8")]
    InvalidUtf8 { what: &'static str },
    /// Bytes that break the grammar; `what` says how.
    #[error("malformed startup packet: {what}")]
    Malformed { what: &'static str },
}

fn malformed(what: &'static str) -> StartupError {
    StartupError::Malformed { what }
}

/// One startup-phase packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartupPacket<'a> {
    /// Asks for TLS; answer `S` (then TLS) or `N`.
    SslRequest,
    /// Asks for GSSAPI encryption; answer `G` or `N`.
    GssEncRequest,
    /// Cancels a running query on another connection.
    Cancel(CancelRequest<'a>),
    /// Opens a session.
    Startup(StartupMessage<'a>),
}

/// A CancelRequest's target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CancelRequest<'a> {
    pub process_id: u32,
    /// 4 bytes in protocol 3.0; up to 256 in 3.2.
    pub secret_key: &'a [u8],
}

/// Frontend protocol version of a StartupMessage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProtocolVersion {
    pub major: u16,
    pub minor: u16,
}

/// A validated StartupMessage, borrowing the caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartupMessage<'a> {
    pub protocol: ProtocolVersion,
    /// The parameter block: `name\0value\0`… without the final NUL.
    params: &'a [u8],
}

impl<'a> StartupMessage<'a> {
    /// All parameters in the order sent.
    pub fn parameters(&self) -> Parameters<'a> {
        Parameters { rest: self.params }
    }

    /// The last value sent for `name` (the server also keeps the last).
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.parameters()
            .filter(|(n, _)| *n == name)
            .last()
            .map(|(_, v)| v)
    }

    /// `user` (always present in a parsed message).
    pub fn user(&self) -> &'a str {
        self.get("user").unwrap_or_default()
    }

    /// `database`; the server defaults it to the user name when absent.
    pub fn database(&self) -> Option<&'a str> {
        self.get("database")
    }

    /// `application_name`.
    pub fn application_name(&self) -> Option<&'a str> {
        self.get("application_name")
    }

    /// `options` (command-line arguments for the backend).
    pub fn options(&self) -> Option<&'a str> {
        self.get("options")
    }
}

/// Iterator over `(name, value)` pairs of a [`StartupMessage`].
#[derive(Clone, Debug)]
pub struct Parameters<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Parameters<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let (name, rest) = split_cstr(self.rest)?;
        let (value, rest) = split_cstr(rest)?;
        self.rest = rest;
        Some((
            std::str::from_utf8(name).ok()?,
            std::str::from_utf8(value).ok()?,
        ))
    }
}

/// Split at the first NUL: (before, after).
fn split_cstr(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = find_byte(buf, 0)?;
    Some((buf.get(..nul)?, buf.get(nul + 1..)?))
}

/// Parse one startup-phase packet from the bytes received so far.
///
/// Returns `Ok(None)` until the packet is complete, then the packet and its
/// length. Lengths and codes are checked as soon as their bytes are there.
pub fn parse_startup(buf: &[u8]) -> Result<Option<(StartupPacket<'_>, usize)>, StartupError> {
    let Some(len) = array_at::<4>(buf, 0).map(u32::from_be_bytes) else {
        return Ok(None);
    };
    if len < 8 {
        return Err(StartupError::TooShort { len });
    }
    if len as usize > MAX_STARTUP_LEN {
        return Err(StartupError::Oversized { len });
    }
    let len = len as usize;
    let Some(code) = array_at::<4>(buf, 4).map(u32::from_be_bytes) else {
        return Ok(None);
    };
    let major = (code >> 16) as u16;
    let minor = (code & 0xffff) as u16;
    match code {
        SSL_REQUEST_CODE | GSSENC_REQUEST_CODE if len != 8 => {
            return Err(malformed("SSLRequest/GSSENCRequest length is not 8"));
        }
        SSL_REQUEST_CODE => return Ok(Some((StartupPacket::SslRequest, 8))),
        GSSENC_REQUEST_CODE => return Ok(Some((StartupPacket::GssEncRequest, 8))),
        CANCEL_REQUEST_CODE if !CANCEL_REQUEST_LEN.contains(&len) => {
            return Err(malformed("CancelRequest length is not 16..=268"));
        }
        CANCEL_REQUEST_CODE => {}
        _ if major == REQUEST_CODE_MAJOR => return Err(StartupError::UnknownRequestCode { code }),
        _ if major != 3 || (minor != 0 && minor != 2) => {
            return Err(StartupError::UnsupportedProtocolVersion { major, minor });
        }
        _ => {}
    }
    let Some(packet) = buf.get(..len) else {
        return Ok(None);
    };
    let mut r = Reader::new(packet);
    r.take(8);
    if code == CANCEL_REQUEST_CODE {
        let process_id = r.u32().ok_or(malformed("CancelRequest truncated"))?;
        let secret_key = r.rest();
        return Ok(Some((
            StartupPacket::Cancel(CancelRequest {
                process_id,
                secret_key,
            }),
            len,
        )));
    }
    let params = check_parameters(r.rest())?;
    Ok(Some((
        StartupPacket::Startup(StartupMessage {
            protocol: ProtocolVersion { major, minor },
            params,
        }),
        len,
    )))
}

/// Validate the parameter block and return it without its final NUL.
fn check_parameters(block: &[u8]) -> Result<&[u8], StartupError> {
    let mut rest = block;
    let mut has_user = false;
    loop {
        let (name, after) =
            split_cstr(rest).ok_or(malformed("parameter list is not NUL-terminated"))?;
        if name.is_empty() {
            if !after.is_empty() {
                return Err(malformed("bytes after the parameter list terminator"));
            }
            break;
        }
        let (value, after) =
            split_cstr(after).ok_or(malformed("parameter value is not NUL-terminated"))?;
        std::str::from_utf8(name).map_err(|_| StartupError::InvalidUtf8 { what: "name" })?;
        std::str::from_utf8(value).map_err(|_| StartupError::InvalidUtf8 { what: "value" })?;
        if name == b"user" {
            if value.is_empty() {
                return Err(malformed("user parameter is empty"));
            }
            has_user = true;
        }
        rest = after;
    }
    if !has_user {
        return Err(StartupError::MissingUser);
    }
    Ok(block
        .get(..block.len().saturating_sub(1))
        .unwrap_or_default())
}

/// Append an SSLRequest (8 bytes).
pub fn encode_ssl_request(out: &mut Vec<u8>) {
    out.extend_from_slice(&8u32.to_be_bytes());
    out.extend_from_slice(&SSL_REQUEST_CODE.to_be_bytes());
}

/// Append a CancelRequest; the key must be 4..=256 bytes.
pub fn encode_cancel_request(
    request: &CancelRequest<'_>,
    out: &mut Vec<u8>,
) -> Result<(), PgEncodeError> {
    let len = 12 + request.secret_key.len();
    if !CANCEL_REQUEST_LEN.contains(&len) {
        return Err(PgEncodeError::SecretKeyLength {
            len: request.secret_key.len(),
        });
    }
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.extend_from_slice(&CANCEL_REQUEST_CODE.to_be_bytes());
    out.extend_from_slice(&request.process_id.to_be_bytes());
    out.extend_from_slice(request.secret_key);
    Ok(())
}

/// Append a StartupMessage for `protocol` with `params` in order (`user`
/// must be among them). Names and values must not contain NUL, and the
/// packet must fit [`MAX_STARTUP_LEN`], so that [`parse_startup`] accepts it.
pub fn encode_startup_message(
    protocol: ProtocolVersion,
    params: &[(&str, &str)],
    out: &mut Vec<u8>,
) -> Result<(), PgEncodeError> {
    let mut len = 9;
    let mut has_user = false;
    for (name, value) in params {
        if name.is_empty() {
            return Err(PgEncodeError::EmptyName);
        }
        if name.contains('\0') || value.contains('\0') {
            return Err(PgEncodeError::InteriorNul {
                field: "startup parameter",
            });
        }
        has_user |= *name == "user" && !value.is_empty();
        len += name.len() + value.len() + 2;
    }
    if !has_user {
        return Err(PgEncodeError::MissingUser);
    }
    if len > MAX_STARTUP_LEN {
        return Err(PgEncodeError::TooLong {
            len,
            max: MAX_STARTUP_LEN,
        });
    }
    out.reserve(len);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.extend_from_slice(&protocol.major.to_be_bytes());
    out.extend_from_slice(&protocol.minor.to_be_bytes());
    for (name, value) in params {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    }
    out.push(0);
    Ok(())
}

impl StartupMessage<'_> {
    /// Re-encode this message exactly as it was received.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let len = 8 + self.params.len() + 1;
        out.extend_from_slice(&(len as u32).to_be_bytes());
        out.extend_from_slice(&self.protocol.major.to_be_bytes());
        out.extend_from_slice(&self.protocol.minor.to_be_bytes());
        out.extend_from_slice(self.params);
        out.push(0);
    }
}
