//! TLS ClientHello parser: the routing facts in a client's first flight.
//!
//! This module owns reading the plaintext ClientHello that opens every TLS
//! connection (RFC 8446 §4.1.2, RFC 5246 §7.4.1.2) far enough to route it: the
//! SNI host name (RFC 6066 §3), the ALPN protocol list (RFC 7301) and the
//! `supported_versions` list (RFC 8446 §4.2.1). It never terminates TLS, never
//! answers, and never trusts what it reads for anything but routing: the TLS
//! library that later consumes the very same bytes is the authority.
//!
//! The caller passes every byte received so far. The ClientHello may be
//! fragmented across any number of handshake records (down to one byte each),
//! and the records across any number of reads: until the whole message is
//! there the answer is `Ok(None)`. When the message sits in one record the
//! result borrows the caller's buffer; otherwise the handshake body is
//! reassembled into one heap buffer of at most [`MAX_HANDSHAKE_LEN`] bytes.
//!
//! Limits: a record fragment is at most [`MAX_RECORD_LEN`] bytes, the
//! handshake body at most [`MAX_HANDSHAKE_LEN`], the host name at most
//! [`MAX_SERVER_NAME_LEN`] bytes of letters, digits, `-` and `_` in dot-separated
//! labels of 1..=63 bytes, and at most [`MAX_ALPN_PROTOCOLS`] ALPN names of
//! 1..=255 bytes. Every error is the peer's fault.

use std::borrow::Cow;
use std::ops::Range;

use crate::reader::{Reader, array_at};

/// Largest record fragment accepted (2^14 plus the slack RFC 5246 allows).
pub const MAX_RECORD_LEN: usize = 16384 + 256;
/// Largest ClientHello body accepted.
pub const MAX_HANDSHAKE_LEN: usize = 64 * 1024;
/// Largest SNI host name (RFC 1035 name limit).
pub const MAX_SERVER_NAME_LEN: usize = 255;
/// Most ALPN protocol names accepted in one ClientHello.
pub const MAX_ALPN_PROTOCOLS: usize = 64;

const RECORD_HEADER_LEN: usize = 5;
const HANDSHAKE_HEADER_LEN: usize = 4;
const CONTENT_TYPE_HANDSHAKE: u8 = 22;
const HANDSHAKE_TYPE_CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;
const EXT_SUPPORTED_VERSIONS: u16 = 43;
const SERVER_NAME_TYPE_HOST_NAME: u8 = 0;

/// Why the bytes are not an acceptable ClientHello. Always the peer's fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    /// The first record is not a handshake record at all.
    #[error("not a TLS handshake record (content type {content_type})")]
    NotHandshake { content_type: u8 },
    /// A handshake record whose message is not a ClientHello.
    #[error("handshake message is not a ClientHello (handshake type {handshake_type})")]
    NotClientHello { handshake_type: u8 },
    /// A length over one of this module's limits.
    #[error("{what}: {len} exceeds the limit of {limit}")]
    Oversized {
        what: &'static str,
        len: usize,
        limit: usize,
    },
    /// Bytes that break the TLS grammar; `what` names the field.
    #[error("malformed ClientHello: {what}")]
    Malformed { what: &'static str },
}

fn malformed(what: &'static str) -> TlsError {
    TlsError::Malformed { what }
}

/// The routing-relevant view of a ClientHello.
///
/// Borrowed from the caller's buffer when the message sat in one record,
/// owned (reassembled) otherwise; [`ClientHello::is_borrowed`] tells which.
/// Everything the accessors return was validated by
/// [`parse_client_hello`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientHello<'a> {
    /// The handshake message body (after the 4-byte handshake header).
    body: Cow<'a, [u8]>,
    legacy_version: u16,
    server_name: Option<Range<usize>>,
    /// The ALPN `protocol_name_list` contents (without its length).
    alpn: Option<Range<usize>>,
    /// The `supported_versions` list contents (without its length).
    supported_versions: Option<Range<usize>>,
}

impl ClientHello<'_> {
    /// `legacy_version` (0x0303 for TLS 1.2 and 1.3 clients).
    pub fn legacy_version(&self) -> u16 {
        self.legacy_version
    }

    /// The SNI `host_name`, if the client sent one.
    pub fn server_name(&self) -> Option<&str> {
        let range = self.server_name.clone()?;
        std::str::from_utf8(self.body.get(range)?).ok()
    }

    /// Whether the client sent the ALPN extension.
    pub fn has_alpn(&self) -> bool {
        self.alpn.is_some()
    }

    /// The ALPN protocol names in the client's order of preference (empty
    /// when the extension is absent).
    pub fn alpn_protocols(&self) -> AlpnProtocols<'_> {
        AlpnProtocols {
            rest: self.slice(&self.alpn),
        }
    }

    /// Whether the client offers ALPN protocol `name`.
    pub fn offers_alpn(&self, name: &[u8]) -> bool {
        self.alpn_protocols().any(|p| p == name)
    }

    /// The `supported_versions` list (empty when absent, i.e. a TLS ≤ 1.2 client).
    pub fn supported_versions(&self) -> SupportedVersions<'_> {
        SupportedVersions {
            rest: self.slice(&self.supported_versions),
        }
    }

    /// Whether the client offers TLS 1.3 (0x0304) in `supported_versions`.
    pub fn offers_tls13(&self) -> bool {
        self.supported_versions().any(|v| v == 0x0304)
    }

    /// True when this view borrows the caller's buffer (the message came in
    /// one record); false when it was reassembled from several.
    pub fn is_borrowed(&self) -> bool {
        matches!(self.body, Cow::Borrowed(_))
    }

    /// The raw handshake body (without the handshake header).
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Detach from the caller's buffer.
    pub fn into_owned(self) -> ClientHello<'static> {
        ClientHello {
            body: Cow::Owned(self.body.into_owned()),
            legacy_version: self.legacy_version,
            server_name: self.server_name,
            alpn: self.alpn,
            supported_versions: self.supported_versions,
        }
    }

    fn slice(&self, range: &Option<Range<usize>>) -> &[u8] {
        range
            .clone()
            .and_then(|r| self.body.get(r))
            .unwrap_or_default()
    }
}

/// Iterator over ALPN protocol names, see [`ClientHello::alpn_protocols`].
#[derive(Clone, Debug)]
pub struct AlpnProtocols<'h> {
    rest: &'h [u8],
}

impl<'h> Iterator for AlpnProtocols<'h> {
    type Item = &'h [u8];

    fn next(&mut self) -> Option<&'h [u8]> {
        let (&len, tail) = self.rest.split_first()?;
        let (name, rest) = tail.split_at_checked(usize::from(len))?;
        self.rest = rest;
        Some(name)
    }
}

/// Iterator over offered TLS versions, see [`ClientHello::supported_versions`].
#[derive(Clone, Debug)]
pub struct SupportedVersions<'h> {
    rest: &'h [u8],
}

impl Iterator for SupportedVersions<'_> {
    type Item = u16;

    fn next(&mut self) -> Option<u16> {
        let v = array_at::<2>(self.rest, 0)?;
        self.rest = self.rest.get(2..)?;
        Some(u16::from_be_bytes(v))
    }
}

/// Parse a ClientHello from the bytes received so far.
///
/// Returns `Ok(None)` while the message is incomplete, or the parsed message
/// and the number of bytes its records span (always a record boundary). A
/// ClientHello that shares its last record with further handshake bytes is
/// rejected: nothing may follow a ClientHello in the client's first flight.
pub fn parse_client_hello(buf: &[u8]) -> Result<Option<(ClientHello<'_>, usize)>, TlsError> {
    let Some(located) = locate(buf)? else {
        return Ok(None);
    };
    let body: Cow<'_, [u8]> = if located.records == 1 {
        let start = RECORD_HEADER_LEN + HANDSHAKE_HEADER_LEN;
        let body = buf
            .get(start..start + located.body_len)
            .ok_or(malformed("internal: located body out of bounds"))?;
        Cow::Borrowed(body)
    } else {
        Cow::Owned(reassemble(buf, located.body_len))
    };
    let parsed = parse_body(&body)?;
    Ok(Some((
        ClientHello {
            body,
            legacy_version: parsed.legacy_version,
            server_name: parsed.server_name,
            alpn: parsed.alpn,
            supported_versions: parsed.supported_versions,
        },
        located.end,
    )))
}

struct Located {
    /// Records the handshake message spans.
    records: usize,
    /// Handshake body length (without the 4-byte header).
    body_len: usize,
    /// End of the last record.
    end: usize,
}

/// Walk the records, checking each header and the handshake header, until the
/// whole handshake message is present.
fn locate(buf: &[u8]) -> Result<Option<Located>, TlsError> {
    let mut pos = 0usize;
    let mut records = 0usize;
    // Handshake bytes seen so far, and the first four of them.
    let mut seen = 0usize;
    let mut header = [0u8; HANDSHAKE_HEADER_LEN];
    let mut total: Option<usize> = None;
    loop {
        let Some([content_type, major, _minor, len_hi, len_lo]) =
            array_at::<RECORD_HEADER_LEN>(buf, pos)
        else {
            check_partial_record_header(buf.get(pos..).unwrap_or_default(), records)?;
            return Ok(None);
        };
        check_content_type(content_type, records)?;
        if major != 3 {
            return Err(malformed("record version is not 3.x"));
        }
        let len = usize::from(u16::from_be_bytes([len_hi, len_lo]));
        if len > MAX_RECORD_LEN {
            return Err(TlsError::Oversized {
                what: "TLS record",
                len,
                limit: MAX_RECORD_LEN,
            });
        }
        if len == 0 {
            return Err(malformed("empty handshake record"));
        }
        let start = pos + RECORD_HEADER_LEN;
        let fragment = buf.get(start..).unwrap_or_default();
        let fragment = fragment.get(..len).unwrap_or(fragment);
        for (slot, &b) in header.iter_mut().skip(seen).zip(fragment) {
            *slot = b;
        }
        seen += fragment.len();
        if seen >= 1 && header[0] != HANDSHAKE_TYPE_CLIENT_HELLO {
            return Err(TlsError::NotClientHello {
                handshake_type: header[0],
            });
        }
        if total.is_none() && seen >= HANDSHAKE_HEADER_LEN {
            let [_, a, b, c] = header;
            let body_len = u32::from_be_bytes([0, a, b, c]) as usize;
            if body_len > MAX_HANDSHAKE_LEN {
                return Err(TlsError::Oversized {
                    what: "ClientHello",
                    len: body_len,
                    limit: MAX_HANDSHAKE_LEN,
                });
            }
            total = Some(HANDSHAKE_HEADER_LEN + body_len);
        }
        if let Some(total) = total
            && seen > total
        {
            return Err(malformed("data after the ClientHello in its last record"));
        }
        if fragment.len() < len {
            return Ok(None);
        }
        pos = start + len;
        records += 1;
        if let Some(total) = total
            && seen == total
        {
            return Ok(Some(Located {
                records,
                body_len: total - HANDSHAKE_HEADER_LEN,
                end: pos,
            }));
        }
    }
}

fn check_content_type(content_type: u8, records: usize) -> Result<(), TlsError> {
    match (content_type, records) {
        (CONTENT_TYPE_HANDSHAKE, _) => Ok(()),
        (content_type, 0) => Err(TlsError::NotHandshake { content_type }),
        _ => Err(malformed("non-handshake record inside the ClientHello")),
    }
}

/// Reject a partial record header as early as its bytes allow.
fn check_partial_record_header(partial: &[u8], records: usize) -> Result<(), TlsError> {
    if let Some(&content_type) = partial.first() {
        check_content_type(content_type, records)?;
    }
    if let Some(&major) = partial.get(1)
        && major != 3
    {
        return Err(malformed("record version is not 3.x"));
    }
    Ok(())
}

/// Concatenate the handshake fragments of a located message, without the
/// handshake header. Only called once [`locate`] found the message complete.
fn reassemble(buf: &[u8], body_len: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(body_len);
    let mut skip = HANDSHAKE_HEADER_LEN;
    let mut pos = 0usize;
    while body.len() < body_len {
        let Some([_, _, _, hi, lo]) = array_at::<RECORD_HEADER_LEN>(buf, pos) else {
            break;
        };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        let start = pos + RECORD_HEADER_LEN;
        let fragment = buf.get(start..start + len).unwrap_or_default();
        let dropped = skip.min(fragment.len());
        skip -= dropped;
        body.extend_from_slice(fragment.get(dropped..).unwrap_or_default());
        pos = start + len;
    }
    body.truncate(body_len);
    body
}

struct ParsedBody {
    legacy_version: u16,
    server_name: Option<Range<usize>>,
    alpn: Option<Range<usize>>,
    supported_versions: Option<Range<usize>>,
}

fn parse_body(body: &[u8]) -> Result<ParsedBody, TlsError> {
    let mut r = Reader::new(body);
    let legacy_version = r.u16().ok_or(malformed("legacy_version truncated"))?;
    r.take(32).ok_or(malformed("random truncated"))?;
    let session_id_len = r.u8().ok_or(malformed("legacy_session_id truncated"))?;
    if session_id_len > 32 {
        return Err(malformed("legacy_session_id longer than 32 bytes"));
    }
    r.take(usize::from(session_id_len))
        .ok_or(malformed("legacy_session_id truncated"))?;
    let suites_len = r.u16().ok_or(malformed("cipher_suites truncated"))?;
    if suites_len < 2 || suites_len % 2 != 0 {
        return Err(malformed(
            "cipher_suites length is not a positive even number",
        ));
    }
    r.take(usize::from(suites_len))
        .ok_or(malformed("cipher_suites truncated"))?;
    let compression_len = r
        .u8()
        .ok_or(malformed("legacy_compression_methods truncated"))?;
    if compression_len == 0 {
        return Err(malformed("legacy_compression_methods is empty"));
    }
    r.take(usize::from(compression_len))
        .ok_or(malformed("legacy_compression_methods truncated"))?;

    let mut out = ParsedBody {
        legacy_version,
        server_name: None,
        alpn: None,
        supported_versions: None,
    };
    if r.is_empty() {
        // A TLS 1.2 ClientHello may omit the extensions block entirely.
        return Ok(out);
    }
    let extensions_len = r.u16().ok_or(malformed("extensions length truncated"))?;
    let mut extensions = r
        .sub(usize::from(extensions_len))
        .ok_or(malformed("extensions truncated"))?;
    if !r.is_empty() {
        return Err(malformed("trailing bytes after the extensions"));
    }
    let mut seen_sni = false;
    while !extensions.is_empty() {
        let ty = extensions
            .u16()
            .ok_or(malformed("extension type truncated"))?;
        let len = extensions
            .u16()
            .ok_or(malformed("extension length truncated"))?;
        let mut data = extensions
            .sub(usize::from(len))
            .ok_or(malformed("extension data truncated"))?;
        match ty {
            EXT_SERVER_NAME => {
                if std::mem::replace(&mut seen_sni, true) {
                    return Err(malformed("duplicate server_name extension"));
                }
                out.server_name = parse_server_name(&mut data, body)?;
            }
            EXT_ALPN => {
                if out.alpn.is_some() {
                    return Err(malformed("duplicate ALPN extension"));
                }
                out.alpn = Some(parse_alpn(&mut data)?);
            }
            EXT_SUPPORTED_VERSIONS => {
                if out.supported_versions.is_some() {
                    return Err(malformed("duplicate supported_versions extension"));
                }
                out.supported_versions = Some(parse_supported_versions(&mut data)?);
            }
            _ => continue,
        }
        if !data.is_empty() {
            return Err(malformed("trailing bytes inside an extension"));
        }
    }
    Ok(out)
}

fn parse_server_name(data: &mut Reader<'_>, body: &[u8]) -> Result<Option<Range<usize>>, TlsError> {
    let list_len = data
        .u16()
        .ok_or(malformed("server_name_list length truncated"))?;
    if list_len == 0 {
        return Err(malformed("server_name_list is empty"));
    }
    let mut list = data
        .sub(usize::from(list_len))
        .ok_or(malformed("server_name_list truncated"))?;
    let mut host_name = None;
    while !list.is_empty() {
        let name_type = list.u8().ok_or(malformed("server name type truncated"))?;
        let len = list
            .u16()
            .ok_or(malformed("server name length truncated"))?;
        let range = list
            .take_range(usize::from(len))
            .ok_or(malformed("server name truncated"))?;
        if name_type != SERVER_NAME_TYPE_HOST_NAME {
            continue;
        }
        if host_name.is_some() {
            return Err(malformed("more than one host_name in server_name"));
        }
        let name = body
            .get(range.clone())
            .ok_or(malformed("server name truncated"))?;
        check_host_name(name)?;
        host_name = Some(range);
    }
    Ok(host_name)
}

/// Check an SNI host name: ASCII letters, digits, `-` and `_`, in
/// dot-separated labels of 1..=63 bytes, at most [`MAX_SERVER_NAME_LEN`]
/// bytes, no trailing dot (RFC 6066 §3).
pub fn check_host_name(name: &[u8]) -> Result<(), TlsError> {
    if name.len() > MAX_SERVER_NAME_LEN {
        return Err(TlsError::Oversized {
            what: "server name",
            len: name.len(),
            limit: MAX_SERVER_NAME_LEN,
        });
    }
    if name.is_empty() {
        return Err(malformed("server name is empty"));
    }
    for label in name.split(|&b| b == b'.') {
        if label.is_empty() {
            return Err(malformed("server name has an empty label"));
        }
        if label.len() > 63 {
            return Err(malformed("server name label longer than 63 bytes"));
        }
        if !label
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(malformed(
                "server name has a character outside [A-Za-z0-9-_.]",
            ));
        }
    }
    Ok(())
}

fn parse_alpn(data: &mut Reader<'_>) -> Result<Range<usize>, TlsError> {
    let list_len = data
        .u16()
        .ok_or(malformed("ALPN protocol_name_list length truncated"))?;
    if list_len < 2 {
        return Err(malformed("ALPN protocol_name_list is empty"));
    }
    let start = data.pos();
    let mut list = data
        .sub(usize::from(list_len))
        .ok_or(malformed("ALPN protocol_name_list truncated"))?;
    let mut count = 0usize;
    while !list.is_empty() {
        let len = list.u8().ok_or(malformed("ALPN name length truncated"))?;
        if len == 0 {
            return Err(malformed("empty ALPN protocol name"));
        }
        list.take(usize::from(len))
            .ok_or(malformed("ALPN protocol name truncated"))?;
        count += 1;
        if count > MAX_ALPN_PROTOCOLS {
            return Err(TlsError::Oversized {
                what: "ALPN protocol list (entries)",
                len: count,
                limit: MAX_ALPN_PROTOCOLS,
            });
        }
    }
    Ok(start..start + usize::from(list_len))
}

fn parse_supported_versions(data: &mut Reader<'_>) -> Result<Range<usize>, TlsError> {
    let len = data
        .u8()
        .ok_or(malformed("supported_versions length truncated"))?;
    if len < 2 || len % 2 != 0 {
        return Err(malformed(
            "supported_versions length is not a positive even number",
        ));
    }
    data.take_range(usize::from(len))
        .ok_or(malformed("supported_versions truncated"))
}
