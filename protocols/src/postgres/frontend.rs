//! PostgreSQL frontend (client → server) messages after startup.
//!
//! This module owns the typed grammar of what a client sends once the
//! startup packet is through: the simple and extended query protocols
//! (Query, Parse, Bind, Describe, Execute, Close, Sync, Flush), FunctionCall,
//! COPY (CopyData, CopyDone, CopyFail), Terminate and the `p` authentication
//! responses. [`parse_frontend`] reads one message from a buffer;
//! [`FrontendScanner`] follows a relayed stream chunk by chunk and hands out
//! messages in place, for audit, with bounded memory. It never answers, never
//! tracks the session (whether `p` is a password or a SASL message depends on
//! what the server asked; see [`parse_password`] and
//! [`parse_sasl_initial_response`]) and never interprets SQL.
//!
//! Strings (queries, statement and portal names) are the raw bytes in the
//! session's `client_encoding` (almost always UTF-8), without their NUL.

use super::message::{
    Fields, Formats, Oids, PgMessageError, Values, begin, check_len, finish, put_cstr,
    split_message,
};
use super::{DEFAULT_MAX_MESSAGE_LEN, HEADER_LEN};
use crate::scan::{Engine, FrameInfo, RawEvent};

/// Default cap on the bytes a [`FrontendScanner`] buffers for one message.
pub const DEFAULT_SCAN_CAP: usize = 1024 * 1024;

/// Whether `tag` is a frontend message type.
pub fn is_frontend_type(tag: u8) -> bool {
    matches!(
        tag,
        b'Q' | b'P'
            | b'B'
            | b'E'
            | b'D'
            | b'C'
            | b'S'
            | b'H'
            | b'F'
            | b'd'
            | b'c'
            | b'f'
            | b'X'
            | b'p'
    )
}

/// What Describe and Close refer to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// `S`: a prepared statement.
    Statement,
    /// `P`: a portal.
    Portal,
}

impl Target {
    fn byte(self) -> u8 {
        match self {
            Target::Statement => b'S',
            Target::Portal => b'P',
        }
    }
}

/// Parse (`P`): prepare a statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parse<'a> {
    /// Empty for the unnamed statement.
    pub statement: &'a [u8],
    pub query: &'a [u8],
    param_count: u16,
    param_types: &'a [u8],
}

impl<'a> Parse<'a> {
    /// Parameter type OIDs (0 = unspecified).
    pub fn param_types(&self) -> Oids<'a> {
        Oids::new(self.param_types)
    }

    /// Number of parameter types given.
    pub fn param_type_count(&self) -> usize {
        usize::from(self.param_count)
    }
}

/// Bind (`B`): bind parameters to a prepared statement, creating a portal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bind<'a> {
    /// Empty for the unnamed portal.
    pub portal: &'a [u8],
    /// Empty for the unnamed statement.
    pub statement: &'a [u8],
    param_format_count: u16,
    param_formats: &'a [u8],
    param_count: u16,
    params: &'a [u8],
    result_format_count: u16,
    result_formats: &'a [u8],
}

impl<'a> Bind<'a> {
    /// Parameter format codes (0 text, 1 binary): none (all text), one (for
    /// all) or one per parameter.
    pub fn param_formats(&self) -> Formats<'a> {
        Formats::new(self.param_formats)
    }

    /// Parameter values in order; `None` is SQL NULL.
    pub fn params(&self) -> Values<'a> {
        Values::new(self.params)
    }

    /// Number of parameter values.
    pub fn param_count(&self) -> usize {
        usize::from(self.param_count)
    }

    /// Result column format codes.
    pub fn result_formats(&self) -> Formats<'a> {
        Formats::new(self.result_formats)
    }
}

/// FunctionCall (`F`): the legacy fast-path function call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionCall<'a> {
    pub function_oid: u32,
    arg_format_count: u16,
    arg_formats: &'a [u8],
    arg_count: u16,
    args: &'a [u8],
    pub result_format: i16,
}

impl<'a> FunctionCall<'a> {
    /// Argument format codes.
    pub fn arg_formats(&self) -> Formats<'a> {
        Formats::new(self.arg_formats)
    }

    /// Argument values; `None` is SQL NULL.
    pub fn args(&self) -> Values<'a> {
        Values::new(self.args)
    }
}

/// One frontend message, borrowing the caller's buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrontendMessage<'a> {
    /// `Q`: simple query (one or more statements).
    Query { sql: &'a [u8] },
    /// `P`
    Parse(Parse<'a>),
    /// `B`
    Bind(Bind<'a>),
    /// `E`: run a portal; `max_rows` 0 = no limit.
    Execute { portal: &'a [u8], max_rows: u32 },
    /// `D`
    Describe { target: Target, name: &'a [u8] },
    /// `C`
    Close { target: Target, name: &'a [u8] },
    /// `S`
    Sync,
    /// `H`
    Flush,
    /// `F`
    FunctionCall(FunctionCall<'a>),
    /// `d`: COPY FROM STDIN data.
    CopyData { data: &'a [u8] },
    /// `c`
    CopyDone,
    /// `f`: abort a COPY with an error message.
    CopyFail { message: &'a [u8] },
    /// `X`
    Terminate,
    /// `p`: PasswordMessage, SASLInitialResponse, SASLResponse or GSS
    /// response; which one depends on the authentication request the server
    /// sent. The body is raw.
    AuthResponse { body: &'a [u8] },
}

impl<'a> FrontendMessage<'a> {
    /// The message type byte.
    pub fn tag(&self) -> u8 {
        match self {
            FrontendMessage::Query { .. } => b'Q',
            FrontendMessage::Parse(_) => b'P',
            FrontendMessage::Bind(_) => b'B',
            FrontendMessage::Execute { .. } => b'E',
            FrontendMessage::Describe { .. } => b'D',
            FrontendMessage::Close { .. } => b'C',
            FrontendMessage::Sync => b'S',
            FrontendMessage::Flush => b'H',
            FrontendMessage::FunctionCall(_) => b'F',
            FrontendMessage::CopyData { .. } => b'd',
            FrontendMessage::CopyDone => b'c',
            FrontendMessage::CopyFail { .. } => b'f',
            FrontendMessage::Terminate => b'X',
            FrontendMessage::AuthResponse { .. } => b'p',
        }
    }

    /// The SQL text this message submits, if any (Query and Parse): what an
    /// audit log records.
    pub fn sql(&self) -> Option<&'a [u8]> {
        match self {
            FrontendMessage::Query { sql } => Some(sql),
            FrontendMessage::Parse(p) => Some(p.query),
            _ => None,
        }
    }

    /// Parse one message body of type `tag` (the bytes after the header).
    pub fn parse_body(tag: u8, body: &'a [u8]) -> Result<Self, PgMessageError> {
        let mut f = Fields::new(tag, body);
        let msg = match tag {
            b'Q' => FrontendMessage::Query {
                sql: f.cstr("query")?,
            },
            b'P' => {
                let statement = f.cstr("statement name")?;
                let query = f.cstr("query")?;
                let (param_count, param_types) = f.array(4, "parameter types")?;
                FrontendMessage::Parse(Parse {
                    statement,
                    query,
                    param_count,
                    param_types,
                })
            }
            b'B' => {
                let portal = f.cstr("portal name")?;
                let statement = f.cstr("statement name")?;
                let (param_format_count, param_formats) = f.array(2, "parameter formats")?;
                let (param_count, params) = f.values("parameter values")?;
                let (result_format_count, result_formats) = f.array(2, "result formats")?;
                FrontendMessage::Bind(Bind {
                    portal,
                    statement,
                    param_format_count,
                    param_formats,
                    param_count,
                    params,
                    result_format_count,
                    result_formats,
                })
            }
            b'E' => FrontendMessage::Execute {
                portal: f.cstr("portal name")?,
                max_rows: f.u32("row limit")?,
            },
            b'D' | b'C' => {
                let target = match f.u8("target")? {
                    b'S' => Target::Statement,
                    b'P' => Target::Portal,
                    _ => return Err(f.invalid("target (not S or P)")),
                };
                let name = f.cstr("name")?;
                if tag == b'D' {
                    FrontendMessage::Describe { target, name }
                } else {
                    FrontendMessage::Close { target, name }
                }
            }
            b'S' => FrontendMessage::Sync,
            b'H' => FrontendMessage::Flush,
            b'c' => FrontendMessage::CopyDone,
            b'X' => FrontendMessage::Terminate,
            b'F' => {
                let function_oid = f.u32("function oid")?;
                let (arg_format_count, arg_formats) = f.array(2, "argument formats")?;
                let (arg_count, args) = f.values("arguments")?;
                let result_format = f.u16("result format")? as i16;
                FrontendMessage::FunctionCall(FunctionCall {
                    function_oid,
                    arg_format_count,
                    arg_formats,
                    arg_count,
                    args,
                    result_format,
                })
            }
            b'd' => FrontendMessage::CopyData { data: f.rest() },
            b'f' => FrontendMessage::CopyFail {
                message: f.cstr("error message")?,
            },
            b'p' => FrontendMessage::AuthResponse { body: f.rest() },
            tag => return Err(PgMessageError::UnknownType { tag }),
        };
        f.end()?;
        Ok(msg)
    }

    /// Append this message's wire form. For a parsed message the bytes are
    /// exactly those it was parsed from.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let at = begin(self.tag(), out);
        match self {
            FrontendMessage::Query { sql } => put_cstr(sql, out),
            FrontendMessage::Parse(p) => {
                put_cstr(p.statement, out);
                put_cstr(p.query, out);
                out.extend_from_slice(&p.param_count.to_be_bytes());
                out.extend_from_slice(p.param_types);
            }
            FrontendMessage::Bind(b) => {
                put_cstr(b.portal, out);
                put_cstr(b.statement, out);
                for (n, raw) in [
                    (b.param_format_count, b.param_formats),
                    (b.param_count, b.params),
                    (b.result_format_count, b.result_formats),
                ] {
                    out.extend_from_slice(&n.to_be_bytes());
                    out.extend_from_slice(raw);
                }
            }
            FrontendMessage::Execute { portal, max_rows } => {
                put_cstr(portal, out);
                out.extend_from_slice(&max_rows.to_be_bytes());
            }
            FrontendMessage::Describe { target, name }
            | FrontendMessage::Close { target, name } => {
                out.push(target.byte());
                put_cstr(name, out);
            }
            FrontendMessage::Sync
            | FrontendMessage::Flush
            | FrontendMessage::CopyDone
            | FrontendMessage::Terminate => {}
            FrontendMessage::FunctionCall(c) => {
                out.extend_from_slice(&c.function_oid.to_be_bytes());
                for (n, raw) in [(c.arg_format_count, c.arg_formats), (c.arg_count, c.args)] {
                    out.extend_from_slice(&n.to_be_bytes());
                    out.extend_from_slice(raw);
                }
                out.extend_from_slice(&c.result_format.to_be_bytes());
            }
            FrontendMessage::CopyData { data } => out.extend_from_slice(data),
            FrontendMessage::CopyFail { message } => put_cstr(message, out),
            FrontendMessage::AuthResponse { body } => out.extend_from_slice(body),
        }
        finish(at, out);
    }
}

/// Parse one frontend message from the bytes received so far, with the
/// default 1 GiB length limit.
///
/// Returns `Ok(None)` until the message is complete, then the message and
/// the number of bytes it spans. The type and length are checked as soon as
/// they arrive.
pub fn parse_frontend(buf: &[u8]) -> Result<Option<(FrontendMessage<'_>, usize)>, PgMessageError> {
    parse_frontend_with_limit(buf, DEFAULT_MAX_MESSAGE_LEN)
}

/// [`parse_frontend`] with a limit on the `length` field.
pub fn parse_frontend_with_limit(
    buf: &[u8],
    max_len: usize,
) -> Result<Option<(FrontendMessage<'_>, usize)>, PgMessageError> {
    let Some((super::message::RawMessage { tag, body }, len)) =
        split_message(buf, max_len, is_frontend_type)?
    else {
        return Ok(None);
    };
    Ok(Some((FrontendMessage::parse_body(tag, body)?, len)))
}

/// A `p` body read as a PasswordMessage (cleartext or MD5): the password
/// without its NUL.
pub fn parse_password(body: &[u8]) -> Result<&[u8], PgMessageError> {
    let mut f = Fields::new(b'p', body);
    let password = f.cstr("password")?;
    f.end()?;
    Ok(password)
}

/// A SASLInitialResponse (`p` body after an AuthenticationSASL request).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SaslInitialResponse<'a> {
    /// The chosen mechanism, e.g. `SCRAM-SHA-256`.
    pub mechanism: &'a [u8],
    /// The client-first message; `None` when the length was -1.
    pub data: Option<&'a [u8]>,
}

/// A `p` body read as a SASLInitialResponse.
pub fn parse_sasl_initial_response(body: &[u8]) -> Result<SaslInitialResponse<'_>, PgMessageError> {
    let mut f = Fields::new(b'p', body);
    let mechanism = f.cstr("SASL mechanism")?;
    let len = f.u32("SASL data length")? as i32;
    let data = match len {
        -1 => None,
        n => {
            let n = usize::try_from(n).map_err(|_| f.invalid("SASL data length"))?;
            Some(f.take(n, "SASL data")?)
        }
    };
    f.end()?;
    Ok(SaslInitialResponse { mechanism, data })
}

/// What a long message's kept head ([`Scanned::Truncated`]) says that an
/// audit follows: the names a Parse, Bind, Execute or Close refers to, and
/// the start of a statement's text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TruncatedHead<'a> {
    /// Query: the start of its text.
    Query { sql: &'a [u8] },
    /// Parse: the statement's name and the start of its text.
    Parse {
        statement: &'a [u8],
        query: &'a [u8],
    },
    /// Bind (its parameters are what is long): the portal and statement.
    Bind {
        portal: &'a [u8],
        statement: &'a [u8],
    },
    /// FunctionCall (its arguments are long): the function.
    FunctionCall { function_oid: u32 },
    /// Describe, Sync, CopyFail, …: nothing that an audit follows.
    Other,
}

/// Reads the head of a message that a [`FrontendScanner`] cut at its cap.
///
/// An error means that what an audit must know lies beyond the head: a
/// name longer than the cap, an Execute or Close (whose only variable field
/// is a name), or a Query whose text ends before the cut (with bytes after
/// it, the message is malformed).
pub fn parse_truncated_head(tag: u8, head: &[u8]) -> Result<TruncatedHead<'_>, PgMessageError> {
    let beyond = |what| PgMessageError::BeyondCap {
        tag,
        what,
        cap: head.len(),
    };
    fn name<'h>(bytes: &mut &'h [u8], beyond: PgMessageError) -> Result<&'h [u8], PgMessageError> {
        let (name, rest) = split_cstr(bytes).ok_or(beyond)?;
        *bytes = rest;
        Ok(name)
    }
    let mut rest = head;
    Ok(match tag {
        b'Q' => match split_cstr(head) {
            None => TruncatedHead::Query { sql: head },
            Some(_) => return Err(PgMessageError::TrailingBytes { tag, extra: 0 }),
        },
        b'P' => {
            let statement = name(&mut rest, beyond("statement name"))?;
            let query = split_cstr(rest).map_or(rest, |(q, _)| q);
            TruncatedHead::Parse { statement, query }
        }
        b'B' => {
            let portal = name(&mut rest, beyond("portal name"))?;
            let statement = name(&mut rest, beyond("statement name"))?;
            TruncatedHead::Bind { portal, statement }
        }
        b'F' => TruncatedHead::FunctionCall {
            function_oid: crate::reader::array_at::<4>(head, 0)
                .map(u32::from_be_bytes)
                .ok_or(beyond("function oid"))?,
        },
        b'E' => return Err(beyond("portal name")),
        b'C' => return Err(beyond("name")),
        tag if is_frontend_type(tag) => TruncatedHead::Other,
        tag => return Err(PgMessageError::UnknownType { tag }),
    })
}

/// The bytes before the first NUL and those after it.
fn split_cstr(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = crate::reader::find_byte(bytes, 0)?;
    Some((bytes.get(..nul)?, bytes.get(nul.checked_add(1)?..)?))
}

/// What a [`FrontendScanner`] saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scanned<'a> {
    /// A whole message no longer than the scanner's cap.
    Message(FrontendMessage<'a>),
    /// A message longer than the cap: its type, its total length on the wire
    /// and the first `cap` bytes of its body (e.g. the start of a huge query).
    Truncated { tag: u8, len: usize, head: &'a [u8] },
    /// A CopyData message of `len` bytes on the wire; its body is never
    /// buffered or exposed.
    CopyData { len: usize },
}

/// Follows a client→server byte stream (after the startup packet) chunk by
/// chunk and reports each message, reading in place where a message lies
/// whole in a chunk and buffering at most `cap` bytes of body otherwise.
///
/// The scanner only observes: the caller relays every chunk unchanged. The
/// events are the same however the stream is split. An error is final (the
/// stream cannot be re-synchronised) and is returned again on every later
/// call.
#[derive(Clone, Debug)]
pub struct FrontendScanner {
    engine: Engine<HEADER_LEN>,
    max_message_len: usize,
    failed: Option<PgMessageError>,
}

impl Default for FrontendScanner {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_MESSAGE_LEN, DEFAULT_SCAN_CAP)
    }
}

impl FrontendScanner {
    /// A scanner that rejects messages longer than `max_message_len` and
    /// buffers at most `cap` bytes of any one body.
    pub fn new(max_message_len: usize, cap: usize) -> Self {
        Self {
            engine: Engine::new(cap),
            max_message_len,
            failed: None,
        }
    }

    /// The most body bytes this scanner ever buffers.
    pub fn cap(&self) -> usize {
        self.engine.cap()
    }

    /// Bytes held right now for a message that is not complete yet.
    pub fn buffered(&self) -> usize {
        self.engine.buffered()
    }

    /// True when the stream is between messages (a clean place to stop).
    pub fn is_between_messages(&self) -> bool {
        self.engine.is_idle()
    }

    /// Start reading the next chunk; call [`FrontendFeed::next`] until it
    /// returns `Ok(None)` (the chunk is used up).
    pub fn feed<'s, 'c>(&'s mut self, chunk: &'c [u8]) -> FrontendFeed<'s, 'c> {
        FrontendFeed {
            scanner: self,
            rest: chunk,
        }
    }
}

/// One chunk being scanned; see [`FrontendScanner::feed`].
#[derive(Debug)]
pub struct FrontendFeed<'s, 'c> {
    scanner: &'s mut FrontendScanner,
    rest: &'c [u8],
}

impl FrontendFeed<'_, '_> {
    /// The next event in this chunk, or `Ok(None)` when the chunk is used up
    /// (a partial message is remembered for the next chunk).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Scanned<'_>>, PgMessageError> {
        if let Some(e) = &self.scanner.failed {
            return Err(e.clone());
        }
        let max = self.scanner.max_message_len;
        let input = self.rest;
        let stepped = self.scanner.engine.step(input, |h: &[u8; HEADER_LEN]| {
            let [tag, a, b, c, d] = *h;
            if !is_frontend_type(tag) {
                return Err(PgMessageError::UnknownType { tag });
            }
            let body_len = check_len(tag, u32::from_be_bytes([a, b, c, d]), max)?;
            Ok(FrameInfo {
                body_len,
                skip: tag == b'd',
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
                header: [tag, ..],
                body,
            }) => FrontendMessage::parse_body(tag, body).map(Scanned::Message),
            Some(RawEvent::Head {
                header: [tag, ..],
                body_len,
                head,
            }) => Ok(Scanned::Truncated {
                tag,
                len: HEADER_LEN + body_len,
                head,
            }),
            Some(RawEvent::Skipped { body_len, .. }) => Ok(Scanned::CopyData {
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

    fn body(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    /// Every cut of a body gives the whole message's names and a prefix of its text, or an
    /// error when a name is not whole yet.
    #[test]
    fn truncated_heads_read_every_prefix_consistently() {
        let parse = body(&[b"stmt\0", b"SELECT $1\0", &[0, 1, 0, 0, 0, 23]]);
        let bind = body(&[b"portal\0stmt\0", &[0, 0, 0, 1, 0, 0, 0, 2], b"42", &[0, 0]]);
        let call = body(&[&[0, 0, 4, 0xd2], &[0, 0, 0, 0, 0, 0]]);
        let query = b"SELECT 1\0".to_vec();
        for (tag, body) in [(b'P', parse), (b'B', bind), (b'F', call), (b'Q', query)] {
            let whole = FrontendMessage::parse_body(tag, &body).unwrap();
            let mut decided = 0;
            for cut in 0..=body.len() {
                let Ok(h) = parse_truncated_head(tag, &body[..cut]) else {
                    continue;
                };
                decided += 1;
                match (h, &whole) {
                    (TruncatedHead::Parse { statement, query }, FrontendMessage::Parse(p)) => {
                        assert_eq!(statement, b"stmt");
                        assert!(p.query.starts_with(query));
                    }
                    (TruncatedHead::Bind { portal, statement }, FrontendMessage::Bind(_)) => {
                        assert_eq!((portal, statement), (&b"portal"[..], &b"stmt"[..]));
                    }
                    (
                        TruncatedHead::FunctionCall { function_oid },
                        FrontendMessage::FunctionCall(f),
                    ) => assert_eq!(function_oid, f.function_oid),
                    (TruncatedHead::Query { sql }, FrontendMessage::Query { sql: full }) => {
                        assert!(full.starts_with(sql));
                    }
                    other => panic!("{other:?}"),
                }
            }
            assert!(decided > 0, "{}", tag as char);
        }
    }

    #[test]
    fn truncated_heads_without_what_an_audit_needs_are_errors() {
        // A name longer than the head.
        assert!(matches!(
            parse_truncated_head(b'P', b"a-very-long-statement-na"),
            Err(PgMessageError::BeyondCap { tag: b'P', .. })
        ));
        assert!(parse_truncated_head(b'B', b"portal\0stmt-without-end").is_err());
        assert!(parse_truncated_head(b'F', &[0, 0]).is_err());
        // Execute and Close are only long when their name is.
        assert!(parse_truncated_head(b'E', b"portal\0\0\0\0\0").is_err());
        assert!(parse_truncated_head(b'C', b"Sname\0").is_err());
        // A Query whose text ends before the cut has bytes after its text: malformed.
        assert!(parse_truncated_head(b'Q', b"SELECT 1\0garbage").is_err());
        assert!(matches!(
            parse_truncated_head(b'Z', b""),
            Err(PgMessageError::UnknownType { tag: b'Z' })
        ));
        assert_eq!(
            parse_truncated_head(b'D', b"Sname"),
            Ok(TruncatedHead::Other)
        );
    }
}
