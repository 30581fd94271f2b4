//! HTTP/1.x request head (RFC 9112 §2–§5).
//!
//! This module owns parsing the request line and header fields of a plaintext
//! HTTP/1.0 or HTTP/1.1 request, borrowing everything from the caller's
//! buffer and storing at most [`MAX_HEADERS`] headers inline (no allocation).
//! It never reads the body, never decodes the target and never acts on what it
//! finds: the proxy decides (redirect to https, route an upgrade).
//!
//! Grammar accepted: optional empty lines before the request line (§2.2);
//! `method SP request-target SP HTTP-version`; header fields
//! `token ":" OWS value OWS` whose value is visible ASCII, space, tab or
//! obs-text; lines ending in CR LF or a lone LF. Rejected: a bare CR, obsolete
//! line folding, whitespace before the colon, more than one `Host`, a head
//! over [`MAX_HEAD_LEN`] bytes or with more than [`MAX_HEADERS`] fields.

use crate::reader::find_byte;

/// Longest request head accepted, final empty line included.
pub const MAX_HEAD_LEN: usize = 16 * 1024;
/// Most header fields accepted.
pub const MAX_HEADERS: usize = 64;

/// Why the bytes are not an acceptable request head. Always the peer's fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// No end of head within [`MAX_HEAD_LEN`] bytes.
    #[error("request head longer than {MAX_HEAD_LEN} bytes")]
    HeadTooLarge,
    /// More than [`MAX_HEADERS`] header fields.
    #[error("more than {MAX_HEADERS} header fields")]
    TooManyHeaders,
    /// A well-formed `HTTP/x.y` other than 1.0 and 1.1.
    #[error("unsupported HTTP version {major}.{minor}")]
    UnsupportedVersion { major: u8, minor: u8 },
    /// Bytes that break the grammar; `what` says how.
    #[error("malformed HTTP request head: {what}")]
    Malformed { what: &'static str },
}

fn malformed(what: &'static str) -> HttpError {
    HttpError::Malformed { what }
}

/// HTTP version of the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// One header field. The name is a token (ASCII); the value may carry
/// obs-text, so it stays bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Header<'a> {
    pub name: &'a str,
    pub value: &'a [u8],
}

/// A parsed request head, borrowing the caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The request-target as sent (origin-form, absolute-form, authority-form or `*`).
    pub target: &'a str,
    pub version: Version,
    headers: [Header<'a>; MAX_HEADERS],
    header_count: usize,
}

impl<'a> Request<'a> {
    /// The header fields in the order sent.
    pub fn headers(&self) -> &[Header<'a>] {
        self.headers.get(..self.header_count).unwrap_or_default()
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers()
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    /// The `Host` header (at most one is accepted).
    pub fn host(&self) -> Option<&'a [u8]> {
        self.header("host")
    }

    /// Whether any `Connection` header lists `token` (case-insensitive).
    pub fn connection_has(&self, token: &str) -> bool {
        self.headers()
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("connection"))
            .flat_map(|h| h.value.split(|&b| b == b','))
            .any(|t| trim_ows(t).eq_ignore_ascii_case(token.as_bytes()))
    }

    /// The `Upgrade` header, if the request asks for an upgrade
    /// (`Connection: upgrade` and an `Upgrade` header, RFC 9110 §7.8).
    pub fn upgrade(&self) -> Option<&'a [u8]> {
        if self.connection_has("upgrade") {
            self.header("upgrade")
        } else {
            None
        }
    }
}

/// Parse a request head from the bytes received so far.
///
/// Returns `Ok(None)` until the empty line that ends the head has arrived,
/// then the request and the head's length (the body, if any, is not read).
pub fn parse_request(buf: &[u8]) -> Result<Option<(Request<'_>, usize)>, HttpError> {
    let mut pos = 0usize;
    // Skip empty lines before the request line.
    let request_line = loop {
        let Some((line, next)) = next_line(buf, pos)? else {
            return Ok(None);
        };
        pos = next;
        if !line.is_empty() {
            break line;
        }
    };
    let (method, target, version) = parse_request_line(request_line)?;
    let mut request = Request {
        method,
        target,
        version,
        headers: [Header::default(); MAX_HEADERS],
        header_count: 0,
    };
    let mut has_host = false;
    loop {
        let Some((line, next)) = next_line(buf, pos)? else {
            return Ok(None);
        };
        pos = next;
        if line.is_empty() {
            return Ok(Some((request, pos)));
        }
        let header = parse_header(line)?;
        if header.name.eq_ignore_ascii_case("host") && std::mem::replace(&mut has_host, true) {
            return Err(malformed("more than one Host header"));
        }
        let slot = request
            .headers
            .get_mut(request.header_count)
            .ok_or(HttpError::TooManyHeaders)?;
        *slot = header;
        request.header_count += 1;
    }
}

/// The next line starting at `pos` (without its terminator) and the position
/// after it; `None` if its LF has not arrived yet.
fn next_line(buf: &[u8], pos: usize) -> Result<Option<(&[u8], usize)>, HttpError> {
    let window = buf
        .get(pos..MAX_HEAD_LEN.min(buf.len()))
        .unwrap_or_default();
    let Some(lf) = find_byte(window, b'\n') else {
        if buf.len() >= MAX_HEAD_LEN {
            return Err(HttpError::HeadTooLarge);
        }
        return Ok(None);
    };
    let line = window.get(..lf).unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.contains(&b'\r') {
        return Err(malformed("bare CR"));
    }
    Ok(Some((line, pos + lf + 1)))
}

fn parse_request_line(line: &[u8]) -> Result<(&str, &str, Version), HttpError> {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed(
            "request line is not 'method SP target SP version'",
        ));
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(malformed("method is not a token"));
    }
    if target.is_empty() || !target.iter().all(|b| b.is_ascii_graphic()) {
        return Err(malformed("request-target has a byte outside visible ASCII"));
    }
    let version = match version {
        b"HTTP/1.1" => Version::Http11,
        b"HTTP/1.0" => Version::Http10,
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            return Err(HttpError::UnsupportedVersion {
                major: major - b'0',
                minor: minor - b'0',
            });
        }
        _ => return Err(malformed("HTTP-version is not HTTP/d.d")),
    };
    let text = |b| std::str::from_utf8(b).map_err(|_| malformed("not ASCII"));
    Ok((text(method)?, text(target)?, version))
}

fn parse_header(line: &[u8]) -> Result<Header<'_>, HttpError> {
    if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
        return Err(malformed("obsolete line folding"));
    }
    let colon = find_byte(line, b':').ok_or(malformed("header line has no colon"))?;
    let (name, value) = line.split_at(colon);
    let value = trim_ows(value.get(1..).unwrap_or_default());
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(malformed("header name is not a token"));
    }
    if !value
        .iter()
        .all(|&b| b == b'\t' || b == b' ' || b.is_ascii_graphic() || b >= 0x80)
    {
        return Err(malformed("header value has a control character"));
    }
    Ok(Header {
        name: std::str::from_utf8(name).map_err(|_| malformed("not ASCII"))?,
        value,
    })
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}
