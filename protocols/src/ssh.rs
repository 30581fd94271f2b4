//! SSH identification line (RFC 4253 §4.2).
//!
//! This module owns recognising the `SSH-protoversion-softwareversion
//! [SP comments] CR LF` line an SSH peer sends first, optionally preceded by
//! other lines (the RFC lets servers send a preamble; Hop tolerates one from
//! either side). It never reads past that line: the binary packet protocol
//! (KEXINIT and on) that follows belongs to the SSH implementation.
//!
//! Grammar accepted:
//! - lines end in CR LF or, for compatibility, a lone LF; every line,
//!   terminator included, is at most [`MAX_LINE_LEN`] bytes;
//! - at most [`MAX_PREAMBLE_LINES`] lines that do not start with `SSH-` come
//!   first; they may hold any bytes but NUL;
//! - `protoversion` is `2.0` or `1.99` (a server that also speaks 1.x);
//! - `softwareversion` is non-empty printable US-ASCII without spaces
//!   (a `-` inside it is tolerated, as OpenSSH does);
//! - `comments`, after one space, are printable US-ASCII, space or tab.

use crate::reader::find_byte;

/// Longest line accepted, CR LF included (RFC 4253 §4.2).
pub const MAX_LINE_LEN: usize = 255;
/// Most lines accepted before the identification line.
pub const MAX_PREAMBLE_LINES: usize = 64;

/// Why the bytes are not an acceptable SSH identification. Always the peer's fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SshError {
    /// A line with no LF within [`MAX_LINE_LEN`] bytes.
    #[error("line longer than {MAX_LINE_LEN} bytes")]
    LineTooLong,
    /// More than [`MAX_PREAMBLE_LINES`] lines before `SSH-`.
    #[error("more than {MAX_PREAMBLE_LINES} lines before the identification line")]
    TooManyPreambleLines,
    /// `protoversion` is neither `2.0` nor `1.99`.
    #[error("unsupported SSH protocol version")]
    UnsupportedProtocolVersion,
    /// A line that breaks the grammar; `what` says how.
    #[error("malformed SSH identification: {what}")]
    Malformed { what: &'static str },
}

fn malformed(what: &'static str) -> SshError {
    SshError::Malformed { what }
}

/// `protoversion` of the identification line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolVersion {
    /// `2.0`
    V2_0,
    /// `1.99`: SSH 2.0 from a server that also speaks 1.x.
    V1_99,
}

/// A parsed identification line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identification<'a> {
    pub protocol_version: ProtocolVersion,
    /// `softwareversion`, e.g. `OpenSSH_9.2p1`.
    pub software_version: &'a str,
    /// The text after the first space, e.g. `Debian-2+deb12u6`.
    pub comments: Option<&'a str>,
    /// The whole line without its terminator (what goes into the exchange hash).
    pub line: &'a str,
    /// How many preamble lines came before it.
    pub preamble_lines: usize,
}

/// Parse an SSH identification from the bytes received so far.
///
/// Returns `Ok(None)` until the identification line is complete, then the
/// line and the number of bytes up to and including its LF (preamble
/// included); the bytes after it are not looked at.
pub fn parse_identification(buf: &[u8]) -> Result<Option<(Identification<'_>, usize)>, SshError> {
    let mut pos = 0usize;
    let mut preamble_lines = 0usize;
    loop {
        let rest = buf.get(pos..).unwrap_or_default();
        let window = rest.get(..MAX_LINE_LEN).unwrap_or(rest);
        let Some(lf) = find_byte(window, b'\n') else {
            if rest.len() >= MAX_LINE_LEN {
                return Err(SshError::LineTooLong);
            }
            return Ok(None);
        };
        let line = window.get(..lf).unwrap_or_default();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        pos += lf + 1;
        if let Some(after) = line.strip_prefix(b"SSH-") {
            let id = parse_line(line, after, preamble_lines)?;
            return Ok(Some((id, pos)));
        }
        if preamble_lines == MAX_PREAMBLE_LINES {
            return Err(SshError::TooManyPreambleLines);
        }
        if line.contains(&0) {
            return Err(malformed("NUL byte in a preamble line"));
        }
        preamble_lines += 1;
    }
}

fn parse_line<'a>(
    line: &'a [u8],
    after: &'a [u8],
    preamble_lines: usize,
) -> Result<Identification<'a>, SshError> {
    let dash = find_byte(after, b'-').ok_or(malformed("no '-' after protoversion"))?;
    let (proto, rest) = after.split_at(dash);
    let rest = rest.get(1..).unwrap_or_default();
    let protocol_version = match proto {
        b"2.0" => ProtocolVersion::V2_0,
        b"1.99" => ProtocolVersion::V1_99,
        p if !p.is_empty() && p.iter().all(|&b| b.is_ascii_digit() || b == b'.') => {
            return Err(SshError::UnsupportedProtocolVersion);
        }
        _ => return Err(malformed("protoversion is not a version number")),
    };
    let (software, comments) = match find_byte(rest, b' ') {
        Some(sp) => {
            let (software, comments) = rest.split_at(sp);
            (software, Some(comments.get(1..).unwrap_or_default()))
        }
        None => (rest, None),
    };
    if software.is_empty() {
        return Err(malformed("softwareversion is empty"));
    }
    if !software.iter().all(|&b| b.is_ascii_graphic()) {
        return Err(malformed("softwareversion has a non-printable character"));
    }
    if let Some(c) = comments
        && !c
            .iter()
            .all(|&b| b.is_ascii_graphic() || b == b' ' || b == b'\t')
    {
        return Err(malformed("comments have a non-printable character"));
    }
    let text = |b: &'a [u8]| std::str::from_utf8(b).map_err(|_| malformed("not ASCII"));
    Ok(Identification {
        protocol_version,
        software_version: text(software)?,
        comments: comments.map(text).transpose()?,
        line: text(line)?,
        preamble_lines,
    })
}
