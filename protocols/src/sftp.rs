//! SFTP (version 3, as OpenSSH speaks it) client requests, sans IO, for auditing.
//!
//! This module owns reading the client→server half of an SFTP session: packet framing
//! (`length:u32 type:u8 body`), the requests whose operation and paths an audit log records
//! ([`SftpRequest`]: open, remove, rename, mkdir, rmdir, setstat, opendir, symlink, and the
//! OpenSSH extensions `posix-rename@openssh.com` and `hardlink@openssh.com`), and a bounded
//! streaming [`SftpScanner`] that never buffers WRITE data. It never answers, never tracks
//! handles and never decides what is allowed: the node's sftp-server does the work.

use crate::reader::Reader;
use crate::scan::{Engine, FrameInfo, RawEvent};

/// The header: length (of type + body) and type.
pub const HEADER_LEN: usize = 5;
/// The longest packet accepted (OpenSSH's sftp-server allows 256 KiB; leave room).
pub const MAX_PACKET_LEN: usize = 1024 * 1024;
/// Body bytes a scanner keeps of one packet by default (paths are short; WRITE is skipped).
pub const DEFAULT_SCAN_CAP: usize = 16 * 1024;

pub const SSH_FXP_INIT: u8 = 1;
pub const SSH_FXP_OPEN: u8 = 3;
pub const SSH_FXP_CLOSE: u8 = 4;
pub const SSH_FXP_READ: u8 = 5;
pub const SSH_FXP_WRITE: u8 = 6;
pub const SSH_FXP_SETSTAT: u8 = 9;
pub const SSH_FXP_OPENDIR: u8 = 11;
pub const SSH_FXP_REMOVE: u8 = 13;
pub const SSH_FXP_MKDIR: u8 = 14;
pub const SSH_FXP_RMDIR: u8 = 15;
pub const SSH_FXP_RENAME: u8 = 18;
pub const SSH_FXP_SYMLINK: u8 = 20;
pub const SSH_FXP_EXTENDED: u8 = 200;

/// `pflags` of OPEN.
pub mod open_flags {
    pub const READ: u32 = 0x01;
    pub const WRITE: u32 = 0x02;
    pub const APPEND: u32 = 0x04;
    pub const CREAT: u32 = 0x08;
    pub const TRUNC: u32 = 0x10;
    pub const EXCL: u32 = 0x20;
}

/// Why the client's bytes are not SFTP.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SftpError {
    /// A length below 1 (no type byte) or above [`MAX_PACKET_LEN`].
    #[error("SFTP packet length {len} is out of range (1..={MAX_PACKET_LEN})")]
    BadLength { len: u32 },
    /// A request that ends before its fields do.
    #[error("SFTP {what} is truncated")]
    Truncated { what: &'static str },
}

/// A client request an audit log cares about; paths are raw bytes (UTF-8 in practice).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SftpRequest<'a> {
    Init {
        version: u32,
    },
    Open {
        id: u32,
        path: &'a [u8],
        pflags: u32,
    },
    Remove {
        id: u32,
        path: &'a [u8],
    },
    Rename {
        id: u32,
        from: &'a [u8],
        to: &'a [u8],
    },
    Mkdir {
        id: u32,
        path: &'a [u8],
    },
    Rmdir {
        id: u32,
        path: &'a [u8],
    },
    SetStat {
        id: u32,
        path: &'a [u8],
    },
    OpenDir {
        id: u32,
        path: &'a [u8],
    },
    /// `linkpath` then `targetpath` as OpenSSH sends them.
    Symlink {
        id: u32,
        link: &'a [u8],
        target: &'a [u8],
    },
    /// `hardlink@openssh.com`.
    Hardlink {
        id: u32,
        from: &'a [u8],
        to: &'a [u8],
    },
    /// Any other request (read, write, close, stat, …): its type only.
    Other {
        kind: u8,
    },
}

impl SftpRequest<'_> {
    /// The audit name of the operation, or `None` for requests that are not audited.
    pub fn op(&self) -> Option<&'static str> {
        Some(match self {
            SftpRequest::Open { .. } => "open",
            SftpRequest::Remove { .. } => "remove",
            SftpRequest::Rename { .. } => "rename",
            SftpRequest::Mkdir { .. } => "mkdir",
            SftpRequest::Rmdir { .. } => "rmdir",
            SftpRequest::SetStat { .. } => "setstat",
            SftpRequest::OpenDir { .. } => "opendir",
            SftpRequest::Symlink { .. } => "symlink",
            SftpRequest::Hardlink { .. } => "link",
            SftpRequest::Init { .. } | SftpRequest::Other { .. } => return None,
        })
    }
}

fn string<'a>(r: &mut Reader<'a>, what: &'static str) -> Result<&'a [u8], SftpError> {
    let n = r.u32().ok_or(SftpError::Truncated { what })? as usize;
    r.take(n).ok_or(SftpError::Truncated { what })
}

fn u32_of(r: &mut Reader<'_>, what: &'static str) -> Result<u32, SftpError> {
    r.u32().ok_or(SftpError::Truncated { what })
}

/// Parses one request body (after the type byte). Trailing bytes (attributes, extension data)
/// are allowed: only the leading fields are read.
pub fn parse_request(kind: u8, body: &[u8]) -> Result<SftpRequest<'_>, SftpError> {
    let mut r = Reader::new(body);
    Ok(match kind {
        SSH_FXP_INIT => SftpRequest::Init {
            version: u32_of(&mut r, "INIT")?,
        },
        SSH_FXP_OPEN => {
            let id = u32_of(&mut r, "OPEN")?;
            let path = string(&mut r, "OPEN path")?;
            let pflags = u32_of(&mut r, "OPEN flags")?;
            SftpRequest::Open { id, path, pflags }
        }
        SSH_FXP_REMOVE | SSH_FXP_MKDIR | SSH_FXP_RMDIR | SSH_FXP_SETSTAT | SSH_FXP_OPENDIR => {
            let id = u32_of(&mut r, "request id")?;
            let path = string(&mut r, "path")?;
            match kind {
                SSH_FXP_REMOVE => SftpRequest::Remove { id, path },
                SSH_FXP_MKDIR => SftpRequest::Mkdir { id, path },
                SSH_FXP_RMDIR => SftpRequest::Rmdir { id, path },
                SSH_FXP_SETSTAT => SftpRequest::SetStat { id, path },
                _ => SftpRequest::OpenDir { id, path },
            }
        }
        SSH_FXP_RENAME | SSH_FXP_SYMLINK => {
            let id = u32_of(&mut r, "request id")?;
            let a = string(&mut r, "first path")?;
            let b = string(&mut r, "second path")?;
            if kind == SSH_FXP_RENAME {
                SftpRequest::Rename { id, from: a, to: b }
            } else {
                SftpRequest::Symlink {
                    id,
                    link: a,
                    target: b,
                }
            }
        }
        SSH_FXP_EXTENDED => {
            let id = u32_of(&mut r, "EXTENDED")?;
            let name = string(&mut r, "extension name")?;
            match name {
                b"posix-rename@openssh.com" => SftpRequest::Rename {
                    id,
                    from: string(&mut r, "rename from")?,
                    to: string(&mut r, "rename to")?,
                },
                b"hardlink@openssh.com" => SftpRequest::Hardlink {
                    id,
                    from: string(&mut r, "link from")?,
                    to: string(&mut r, "link to")?,
                },
                _ => SftpRequest::Other { kind },
            }
        }
        other => SftpRequest::Other { kind: other },
    })
}

/// What an [`SftpScanner`] saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScannedRequest<'a> {
    /// A whole request no longer than the cap.
    Request(SftpRequest<'a>),
    /// A request longer than the cap (its type and total length), or a WRITE (never buffered).
    Skipped { kind: u8, len: usize },
}

/// Follows the client→server bytes of an SFTP session chunk by chunk, reading in place where a
/// packet lies whole in a chunk and buffering at most `cap` body bytes otherwise. The caller
/// relays every chunk unchanged. An error is final and returned again on every later call.
#[derive(Clone, Debug)]
pub struct SftpScanner {
    engine: Engine<HEADER_LEN>,
    failed: Option<SftpError>,
}

impl Default for SftpScanner {
    fn default() -> Self {
        Self::new(DEFAULT_SCAN_CAP)
    }
}

impl SftpScanner {
    pub fn new(cap: usize) -> Self {
        Self {
            engine: Engine::new(cap),
            failed: None,
        }
    }

    /// Start reading the next chunk; call [`SftpFeed::next`] until it returns `Ok(None)`.
    pub fn feed<'s, 'c>(&'s mut self, chunk: &'c [u8]) -> SftpFeed<'s, 'c> {
        SftpFeed {
            scanner: self,
            rest: chunk,
        }
    }
}

/// One chunk being scanned; see [`SftpScanner::feed`].
#[derive(Debug)]
pub struct SftpFeed<'s, 'c> {
    scanner: &'s mut SftpScanner,
    rest: &'c [u8],
}

impl SftpFeed<'_, '_> {
    /// The next request in this chunk, or `Ok(None)` when the chunk is used up.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<ScannedRequest<'_>>, SftpError> {
        if let Some(e) = &self.scanner.failed {
            return Err(e.clone());
        }
        let input = self.rest;
        let stepped = self.scanner.engine.step(input, |h: &[u8; HEADER_LEN]| {
            let [a, b, c, d, kind] = *h;
            let len = u32::from_be_bytes([a, b, c, d]);
            if len == 0 || len as usize > MAX_PACKET_LEN {
                return Err(SftpError::BadLength { len });
            }
            Ok(FrameInfo {
                body_len: len as usize - 1,
                skip: kind == SSH_FXP_WRITE,
            })
        });
        let (used, event) = match stepped {
            Ok(v) => v,
            Err(e) => {
                self.scanner.failed = Some(e.clone());
                self.rest = &[];
                return Err(e);
            }
        };
        self.rest = input.get(used..).unwrap_or_default();
        let result = match event {
            None => return Ok(None),
            Some(RawEvent::Whole {
                header: [.., kind],
                body,
            }) => parse_request(kind, body).map(ScannedRequest::Request),
            Some(RawEvent::Head {
                header: [.., kind],
                body_len,
                ..
            })
            | Some(RawEvent::Skipped {
                header: [.., kind],
                body_len,
            }) => Ok(ScannedRequest::Skipped {
                kind,
                len: HEADER_LEN + body_len,
            }),
        };
        if let Err(e) = &result {
            self.scanner.failed = Some(e.clone());
        }
        result.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut v = ((body.len() + 1) as u32).to_be_bytes().to_vec();
        v.push(kind);
        v.extend_from_slice(body);
        v
    }

    fn s(b: &[u8]) -> Vec<u8> {
        let mut v = (b.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(b);
        v
    }

    fn body(id: u32, parts: &[&[u8]]) -> Vec<u8> {
        let mut v = id.to_be_bytes().to_vec();
        for p in parts {
            v.extend_from_slice(p);
        }
        v
    }

    fn session() -> Vec<u8> {
        let mut out = packet(SSH_FXP_INIT, &3u32.to_be_bytes());
        out.extend(packet(
            SSH_FXP_OPEN,
            &body(
                1,
                &[
                    &s(b"/tmp/a.txt"),
                    &0x1au32.to_be_bytes(),
                    &0u32.to_be_bytes(),
                ],
            ),
        ));
        let mut write = body(2, &[&s(b"handle"), &0u64.to_be_bytes()]);
        write.extend(s(&[7u8; 3000]));
        out.extend(packet(SSH_FXP_WRITE, &write));
        out.extend(packet(SSH_FXP_REMOVE, &body(3, &[&s(b"/tmp/old")])));
        out.extend(packet(
            SSH_FXP_EXTENDED,
            &body(4, &[&s(b"posix-rename@openssh.com"), &s(b"/a"), &s(b"/b")]),
        ));
        out.extend(packet(
            SSH_FXP_MKDIR,
            &body(5, &[&s(b"/d"), &0u32.to_be_bytes()]),
        ));
        out
    }

    fn scan(data: &[u8], cuts: &[usize], cap: usize) -> Result<Vec<String>, SftpError> {
        let mut sc = SftpScanner::new(cap);
        let mut out = Vec::new();
        let mut at = 0;
        for &cut in cuts {
            let mut feed = sc.feed(&data[at..cut]);
            at = cut;
            while let Some(e) = feed.next()? {
                out.push(format!("{e:?}"));
            }
        }
        Ok(out)
    }

    #[test]
    fn requests_are_found_however_the_stream_is_split() {
        let data = session();
        let whole = scan(&data, &[data.len()], 256).unwrap();
        assert_eq!(whole.len(), 6);
        assert!(whole[1].contains("Open"), "{whole:?}");
        assert!(whole[2].contains("Skipped") && whole[2].contains("kind: 6"));
        assert!(whole[4].contains("Rename"));
        for cut in 0..=data.len() {
            assert_eq!(
                scan(&data, &[cut, data.len()], 256).unwrap(),
                whole,
                "cut {cut}"
            );
        }
        // Every prefix is either incomplete or a prefix of the events.
        for n in 0..data.len() {
            let part = scan(&data[..n], &[n], 256).unwrap();
            assert!(whole.starts_with(&part), "prefix {n}");
        }
    }

    #[test]
    fn parsed_fields_and_ops() {
        let b = body(
            1,
            &[
                &s(b"/x"),
                &(open_flags::WRITE | open_flags::CREAT).to_be_bytes(),
            ],
        );
        let r = parse_request(SSH_FXP_OPEN, &b).unwrap();
        assert_eq!(
            r,
            SftpRequest::Open {
                id: 1,
                path: b"/x",
                pflags: 0x0a
            }
        );
        assert_eq!(r.op(), Some("open"));
        assert_eq!(parse_request(SSH_FXP_READ, b"").unwrap().op(), None);
        let b = body(9, &[&s(b"hardlink@openssh.com"), &s(b"/a"), &s(b"/b")]);
        assert_eq!(
            parse_request(SSH_FXP_EXTENDED, &b).unwrap().op(),
            Some("link")
        );
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        assert!(matches!(
            scan(&[0, 0, 0, 0, 1], &[5], 64),
            Err(SftpError::BadLength { len: 0 })
        ));
        assert!(scan(&[0x7f, 0, 0, 0, 1], &[5], 64).is_err());
        let short = packet(SSH_FXP_OPEN, &body(1, &[&(100u32).to_be_bytes(), b"/x"]));
        assert!(matches!(
            scan(&short, &[short.len()], 64),
            Err(SftpError::Truncated { .. })
        ));
        // The error sticks.
        let mut sc = SftpScanner::new(64);
        assert!(sc.feed(&[0, 0, 0, 0, 1]).next().is_err());
        assert!(sc.feed(&session()).next().is_err());
    }
}
