//! PostgreSQL backend (server → client) messages the proxy and agent read or
//! write.
//!
//! This module owns the typed grammar of the backend messages that matter
//! for access control: authentication requests (`R`), ParameterStatus (`S`),
//! BackendKeyData (`K`), ReadyForQuery (`Z`), ErrorResponse and
//! NoticeResponse (`E`/`N`) and CommandComplete (`C`); every other backend
//! type is recognised and handed over raw. It also owns the encoders for what
//! Hop itself answers (a refusal as ErrorResponse, a synthetic
//! AuthenticationOk/ParameterStatus/BackendKeyData/ReadyForQuery, the
//! one-byte answers to SSLRequest and GSSENCRequest). It never decides what
//! to answer and never runs an authentication exchange.

use super::message::{
    Fields, PgEncodeError, PgMessageError, begin, checked_cstr, finish, put_cstr, split_message,
};
use super::{DEFAULT_MAX_MESSAGE_LEN, HEADER_LEN};
use crate::reader::Reader;

/// Whether `tag` is a backend message type.
pub fn is_backend_type(tag: u8) -> bool {
    matches!(
        tag,
        b'R' | b'S'
            | b'K'
            | b'Z'
            | b'E'
            | b'N'
            | b'C'
            | b'T'
            | b'D'
            | b'I'
            | b'1'
            | b'2'
            | b'3'
            | b'n'
            | b's'
            | b't'
            | b'G'
            | b'H'
            | b'W'
            | b'c'
            | b'd'
            | b'A'
            | b'V'
            | b'v'
    )
}

/// An authentication request (`R`), by its Int32 code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authentication<'a> {
    /// 0
    Ok,
    /// 3
    CleartextPassword,
    /// 5, with a 4-byte salt.
    Md5Password { salt: [u8; 4] },
    /// 10: a list of mechanisms (each NUL-terminated, then one more NUL).
    Sasl { mechanisms: &'a [u8] },
    /// 11: server-first message.
    SaslContinue { data: &'a [u8] },
    /// 12: server-final message.
    SaslFinal { data: &'a [u8] },
    /// Any other code (Kerberos 2, SCM 6, GSS 7, GSSContinue 8, SSPI 9), raw.
    Other { code: u32, data: &'a [u8] },
}

impl<'a> Authentication<'a> {
    /// The SASL mechanism names offered.
    pub fn sasl_mechanisms(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let list = match self {
            Authentication::Sasl { mechanisms } => *mechanisms,
            _ => &[],
        };
        list.split(|&b| b == 0).filter(|m| !m.is_empty())
    }
}

/// ReadyForQuery's transaction status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransactionStatus {
    /// `I`
    Idle,
    /// `T`
    InTransaction,
    /// `E`: in a failed transaction block.
    Failed,
}

impl TransactionStatus {
    fn byte(self) -> u8 {
        match self {
            TransactionStatus::Idle => b'I',
            TransactionStatus::InTransaction => b'T',
            TransactionStatus::Failed => b'E',
        }
    }
}

/// The fields of an ErrorResponse or NoticeResponse: `code:u8 value\0`…
/// (validated, without the final NUL).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorFields<'a> {
    raw: &'a [u8],
}

impl<'a> ErrorFields<'a> {
    /// `(field code, value)` pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (u8, &'a [u8])> + 'a {
        let mut r = Reader::new(self.raw);
        std::iter::from_fn(move || {
            let code = r.u8()?;
            let rest = r.clone().rest();
            let nul = crate::reader::find_byte(rest, 0)?;
            let value = r.take(nul)?;
            r.take(1);
            Some((code, value))
        })
    }

    /// The value of field `code` (the last if repeated).
    pub fn get(&self, code: u8) -> Option<&'a [u8]> {
        self.iter()
            .filter(|(c, _)| *c == code)
            .last()
            .map(|(_, v)| v)
    }

    /// `V` (non-localised severity, 9.6+) or else `S`.
    pub fn severity(&self) -> Option<&'a [u8]> {
        self.get(b'V').or_else(|| self.get(b'S'))
    }

    /// `C`: the SQLSTATE.
    pub fn code(&self) -> Option<&'a [u8]> {
        self.get(b'C')
    }

    /// `M`: the primary message.
    pub fn message(&self) -> Option<&'a [u8]> {
        self.get(b'M')
    }
}

/// One backend message, borrowing the caller's buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendMessage<'a> {
    /// `R`
    Authentication(Authentication<'a>),
    /// `S`
    ParameterStatus { name: &'a [u8], value: &'a [u8] },
    /// `K`: the key to cancel this session's queries (4..=256 bytes).
    BackendKeyData {
        process_id: u32,
        secret_key: &'a [u8],
    },
    /// `Z`
    ReadyForQuery(TransactionStatus),
    /// `E`
    ErrorResponse(ErrorFields<'a>),
    /// `N`
    NoticeResponse(ErrorFields<'a>),
    /// `C`: the command tag, e.g. `SELECT 1`.
    CommandComplete { tag: &'a [u8] },
    /// Any other backend message (RowDescription, DataRow, …), raw.
    Other { tag: u8, body: &'a [u8] },
}

impl<'a> BackendMessage<'a> {
    /// The message type byte.
    pub fn tag(&self) -> u8 {
        match self {
            BackendMessage::Authentication(_) => b'R',
            BackendMessage::ParameterStatus { .. } => b'S',
            BackendMessage::BackendKeyData { .. } => b'K',
            BackendMessage::ReadyForQuery(_) => b'Z',
            BackendMessage::ErrorResponse(_) => b'E',
            BackendMessage::NoticeResponse(_) => b'N',
            BackendMessage::CommandComplete { .. } => b'C',
            BackendMessage::Other { tag, .. } => *tag,
        }
    }

    /// Parse one message body of type `tag`.
    pub fn parse_body(tag: u8, body: &'a [u8]) -> Result<Self, PgMessageError> {
        let mut f = Fields::new(tag, body);
        let msg = match tag {
            b'R' => {
                let code = f.u32("authentication code")?;
                BackendMessage::Authentication(match code {
                    0 => Authentication::Ok,
                    3 => Authentication::CleartextPassword,
                    5 => Authentication::Md5Password {
                        salt: f.r.array().ok_or(f.invalid("MD5 salt (not 4 bytes)"))?,
                    },
                    10 => {
                        let mechanisms = f.rest();
                        check_name_list(&f, mechanisms)?;
                        Authentication::Sasl {
                            mechanisms: mechanisms
                                .get(..mechanisms.len().saturating_sub(1))
                                .unwrap_or_default(),
                        }
                    }
                    11 => Authentication::SaslContinue { data: f.rest() },
                    12 => Authentication::SaslFinal { data: f.rest() },
                    1 | 4 | 13.. => return Err(f.invalid("authentication code")),
                    code => Authentication::Other {
                        code,
                        data: f.rest(),
                    },
                })
            }
            b'S' => BackendMessage::ParameterStatus {
                name: f.cstr("parameter name")?,
                value: f.cstr("parameter value")?,
            },
            b'K' => {
                let process_id = f.u32("process id")?;
                let secret_key = f.rest();
                if !(4..=256).contains(&secret_key.len()) {
                    return Err(f.invalid("secret key length (not 4..=256)"));
                }
                BackendMessage::BackendKeyData {
                    process_id,
                    secret_key,
                }
            }
            b'Z' => BackendMessage::ReadyForQuery(match f.u8("transaction status")? {
                b'I' => TransactionStatus::Idle,
                b'T' => TransactionStatus::InTransaction,
                b'E' => TransactionStatus::Failed,
                _ => return Err(f.invalid("transaction status (not I, T or E)")),
            }),
            b'E' | b'N' => {
                let raw = f.rest();
                check_error_fields(&f, raw)?;
                let fields = ErrorFields {
                    raw: raw.get(..raw.len().saturating_sub(1)).unwrap_or_default(),
                };
                if tag == b'E' {
                    BackendMessage::ErrorResponse(fields)
                } else {
                    BackendMessage::NoticeResponse(fields)
                }
            }
            b'C' => BackendMessage::CommandComplete {
                tag: f.cstr("command tag")?,
            },
            tag if is_backend_type(tag) => BackendMessage::Other {
                tag,
                body: f.rest(),
            },
            tag => return Err(PgMessageError::UnknownType { tag }),
        };
        f.end()?;
        Ok(msg)
    }

    /// Append this message's wire form (for a parsed message, exactly the
    /// bytes it came from).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let at = begin(self.tag(), out);
        match self {
            BackendMessage::Authentication(a) => {
                let (code, data): (u32, &[u8]) = match a {
                    Authentication::Ok => (0, &[]),
                    Authentication::CleartextPassword => (3, &[]),
                    Authentication::Md5Password { salt } => (5, salt),
                    Authentication::Sasl { mechanisms } => (10, mechanisms),
                    Authentication::SaslContinue { data } => (11, data),
                    Authentication::SaslFinal { data } => (12, data),
                    Authentication::Other { code, data } => (*code, data),
                };
                out.extend_from_slice(&code.to_be_bytes());
                out.extend_from_slice(data);
                if matches!(a, Authentication::Sasl { .. }) {
                    out.push(0);
                }
            }
            BackendMessage::ParameterStatus { name, value } => {
                put_cstr(name, out);
                put_cstr(value, out);
            }
            BackendMessage::BackendKeyData {
                process_id,
                secret_key,
            } => {
                out.extend_from_slice(&process_id.to_be_bytes());
                out.extend_from_slice(secret_key);
            }
            BackendMessage::ReadyForQuery(s) => out.push(s.byte()),
            BackendMessage::ErrorResponse(f) | BackendMessage::NoticeResponse(f) => {
                put_cstr(f.raw, out);
            }
            BackendMessage::CommandComplete { tag } => put_cstr(tag, out),
            BackendMessage::Other { body, .. } => out.extend_from_slice(body),
        }
        finish(at, out);
    }
}

/// `name\0`… then a final `\0`, every name non-empty.
fn check_name_list(f: &Fields<'_>, list: &[u8]) -> Result<(), PgMessageError> {
    let Some((&0, names)) = list.split_last() else {
        return Err(f.invalid("SASL mechanism list (not NUL-terminated)"));
    };
    if names.is_empty() {
        return Err(f.invalid("SASL mechanism list (empty)"));
    }
    let Some((&0, names)) = names.split_last() else {
        return Err(f.invalid("SASL mechanism list (not NUL-terminated)"));
    };
    if names.split(|&b| b == 0).any(<[u8]>::is_empty) {
        return Err(f.invalid("SASL mechanism list (empty name)"));
    }
    Ok(())
}

/// `code:u8 value\0`… then a final `\0`; codes are non-zero.
fn check_error_fields(f: &Fields<'_>, raw: &[u8]) -> Result<(), PgMessageError> {
    let mut r = Reader::new(raw);
    loop {
        match r.u8() {
            None => return Err(f.invalid("error fields (no terminator)")),
            Some(0) if r.is_empty() => return Ok(()),
            Some(0) => return Err(f.invalid("error fields (bytes after terminator)")),
            Some(_) => {
                let rest = r.clone().rest();
                let nul = crate::reader::find_byte(rest, 0)
                    .ok_or(f.invalid("error field value (not NUL-terminated)"))?;
                r.take(nul + 1);
            }
        }
    }
}

/// Parse one backend message from the bytes received so far (1 GiB limit).
pub fn parse_backend(buf: &[u8]) -> Result<Option<(BackendMessage<'_>, usize)>, PgMessageError> {
    parse_backend_with_limit(buf, DEFAULT_MAX_MESSAGE_LEN)
}

/// [`parse_backend`] with a limit on the `length` field.
pub fn parse_backend_with_limit(
    buf: &[u8],
    max_len: usize,
) -> Result<Option<(BackendMessage<'_>, usize)>, PgMessageError> {
    let Some((super::message::RawMessage { tag, body }, len)) =
        split_message(buf, max_len, is_backend_type)?
    else {
        return Ok(None);
    };
    Ok(Some((BackendMessage::parse_body(tag, body)?, len)))
}

/// The server's one-byte answer to SSLRequest or GSSENCRequest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncryptionResponse {
    /// `S`: TLS follows.
    SslAccepted,
    /// `G`: GSSAPI encryption follows.
    GssAccepted,
    /// `N`: continue in plaintext (or close).
    Refused,
}

impl EncryptionResponse {
    /// The byte on the wire.
    pub fn byte(self) -> u8 {
        match self {
            EncryptionResponse::SslAccepted => b'S',
            EncryptionResponse::GssAccepted => b'G',
            EncryptionResponse::Refused => b'N',
        }
    }

    /// Append the byte.
    pub fn encode(self, out: &mut Vec<u8>) {
        out.push(self.byte());
    }
}

/// Parse the one-byte answer to an SSLRequest/GSSENCRequest.
pub fn parse_encryption_response(
    buf: &[u8],
) -> Result<Option<(EncryptionResponse, usize)>, PgMessageError> {
    match buf.first() {
        None => Ok(None),
        Some(b'S') => Ok(Some((EncryptionResponse::SslAccepted, 1))),
        Some(b'G') => Ok(Some((EncryptionResponse::GssAccepted, 1))),
        Some(b'N') => Ok(Some((EncryptionResponse::Refused, 1))),
        Some(&tag) => Err(PgMessageError::UnknownType { tag }),
    }
}

/// ErrorResponse severity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    Fatal,
    Panic,
    Warning,
    Notice,
    Debug,
    Info,
    Log,
}

impl Severity {
    /// The non-localised name sent in `S` and `V`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
            Severity::Panic => "PANIC",
            Severity::Warning => "WARNING",
            Severity::Notice => "NOTICE",
            Severity::Debug => "DEBUG",
            Severity::Info => "INFO",
            Severity::Log => "LOG",
        }
    }
}

/// Append an ErrorResponse with fields `S` and `V` (severity), `C`
/// (`sqlstate`, five characters `0-9A-Z`, e.g. `28000`) and `M` (`message`).
pub fn encode_error_response(
    severity: Severity,
    sqlstate: &str,
    message: &str,
    out: &mut Vec<u8>,
) -> Result<(), PgEncodeError> {
    if sqlstate.len() != 5
        || !sqlstate
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
    {
        return Err(PgEncodeError::InvalidSqlState {
            code: sqlstate.to_owned(),
        });
    }
    let message = checked_cstr(message, "error message")?;
    check_total(HEADER_LEN + 2 * (2 + severity.as_str().len()) + 7 + 2 + message.len() + 1)?;
    let at = begin(b'E', out);
    for (code, value) in [
        (b'S', severity.as_str().as_bytes()),
        (b'V', severity.as_str().as_bytes()),
        (b'C', sqlstate.as_bytes()),
        (b'M', message),
    ] {
        out.push(code);
        put_cstr(value, out);
    }
    out.push(0);
    finish(at, out);
    Ok(())
}

fn check_total(len: usize) -> Result<(), PgEncodeError> {
    if len > DEFAULT_MAX_MESSAGE_LEN {
        return Err(PgEncodeError::TooLong {
            len,
            max: DEFAULT_MAX_MESSAGE_LEN,
        });
    }
    Ok(())
}

/// Append ReadyForQuery.
pub fn encode_ready_for_query(status: TransactionStatus, out: &mut Vec<u8>) {
    BackendMessage::ReadyForQuery(status).encode(out);
}

/// Append AuthenticationOk.
pub fn encode_authentication_ok(out: &mut Vec<u8>) {
    BackendMessage::Authentication(Authentication::Ok).encode(out);
}

/// Append BackendKeyData; the key must be 4..=256 bytes.
pub fn encode_backend_key_data(
    process_id: u32,
    secret_key: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), PgEncodeError> {
    if !(4..=256).contains(&secret_key.len()) {
        return Err(PgEncodeError::SecretKeyLength {
            len: secret_key.len(),
        });
    }
    BackendMessage::BackendKeyData {
        process_id,
        secret_key,
    }
    .encode(out);
    Ok(())
}

/// Append ParameterStatus.
pub fn encode_parameter_status(
    name: &str,
    value: &str,
    out: &mut Vec<u8>,
) -> Result<(), PgEncodeError> {
    let name = checked_cstr(name, "parameter name")?;
    let value = checked_cstr(value, "parameter value")?;
    if name.is_empty() {
        return Err(PgEncodeError::EmptyName);
    }
    check_total(HEADER_LEN + name.len() + value.len() + 2)?;
    BackendMessage::ParameterStatus { name, value }.encode(out);
    Ok(())
}
