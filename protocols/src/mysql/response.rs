//! Generic server responses: OK, ERR, EOF, and the first packet of a result.

use super::packet::{MysqlEncodeError, MysqlError, array, encode_packet, end, lenenc_int, u16le};
use crate::reader::Reader;

/// OK packet (`0x00`, or `0xfe` ending a result set with
/// `CLIENT_DEPRECATE_EOF`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OkPacket<'a> {
    pub header: u8,
    pub affected_rows: u64,
    pub last_insert_id: u64,
    pub status: u16,
    pub warnings: u16,
    /// Human-readable info and, with `CLIENT_SESSION_TRACK`, session state
    /// changes, raw.
    pub info: &'a [u8],
}

/// ERR packet (`0xff`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrPacket<'a> {
    pub code: u16,
    /// After the `#` marker; absent in pre-handshake errors.
    pub sql_state: Option<[u8; 5]>,
    pub message: &'a [u8],
}

/// EOF packet (`0xfe`, under 9 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EofPacket {
    pub warnings: u16,
    pub status: u16,
}

/// The first packet of a server's answer to a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Response<'a> {
    Ok(OkPacket<'a>),
    Err(ErrPacket<'a>),
    Eof(EofPacket),
    /// LOCAL INFILE request (`0xfb` then a file name).
    LocalInfile {
        filename: &'a [u8],
    },
    /// A result set of `column_count` columns follows. With MariaDB's
    /// `MARIADB_CLIENT_CACHE_METADATA` or MySQL's
    /// `CLIENT_OPTIONAL_RESULTSET_METADATA`, one more byte says whether
    /// column definitions are sent.
    ResultSet {
        column_count: u64,
        metadata_follows: Option<u8>,
    },
}

impl<'a> Response<'a> {
    /// Parse a response payload (protocol 4.1).
    pub fn parse(payload: &'a [u8]) -> Result<Self, MysqlError> {
        let mut r = Reader::new(payload);
        match payload.first() {
            None => Err(MysqlError::Truncated { what: "response" }),
            Some(0xff) => ErrPacket::parse(payload).map(Response::Err),
            Some(0xfe) if payload.len() < 9 => {
                r.take(1);
                let warnings = u16le(&mut r, "EOF warnings")?;
                let status = u16le(&mut r, "EOF status")?;
                end(&r, "EOF packet")?;
                Ok(Response::Eof(EofPacket { warnings, status }))
            }
            Some(0x00 | 0xfe) => {
                let [header] = array(&mut r, "OK header")?;
                let affected_rows = lenenc_int(&mut r, "affected rows")?;
                let last_insert_id = lenenc_int(&mut r, "last insert id")?;
                let status = u16le(&mut r, "status flags")?;
                let warnings = u16le(&mut r, "warnings")?;
                Ok(Response::Ok(OkPacket {
                    header,
                    affected_rows,
                    last_insert_id,
                    status,
                    warnings,
                    info: r.rest(),
                }))
            }
            Some(0xfb) => {
                r.take(1);
                Ok(Response::LocalInfile { filename: r.rest() })
            }
            Some(_) => {
                let column_count = lenenc_int(&mut r, "column count")?;
                let metadata_follows = r.u8();
                end(&r, "column count")?;
                Ok(Response::ResultSet {
                    column_count,
                    metadata_follows,
                })
            }
        }
    }
}

impl<'a> ErrPacket<'a> {
    /// Parse an ERR payload.
    pub fn parse(payload: &'a [u8]) -> Result<Self, MysqlError> {
        let mut r = Reader::new(payload);
        if array::<1>(&mut r, "ERR header")? != [0xff] {
            return Err(MysqlError::Invalid {
                what: "ERR header (not 0xff)",
            });
        }
        let code = u16le(&mut r, "error code")?;
        let sql_state = if r.clone().u8() == Some(b'#') {
            r.take(1);
            Some(array(&mut r, "SQL state")?)
        } else {
            None
        };
        Ok(Self {
            code,
            sql_state,
            message: r.rest(),
        })
    }

    /// Append the payload; a parsed ERR encodes to exactly its bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(0xff);
        out.extend_from_slice(&self.code.to_le_bytes());
        if let Some(state) = self.sql_state {
            out.push(b'#');
            out.extend_from_slice(&state);
        }
        out.extend_from_slice(self.message);
    }
}

/// Append a whole ERR packet (header with sequence id `seq`, then `0xff`,
/// `code`, `#`, the five-character `sqlstate` and `message`).
pub fn encode_err(
    seq: u8,
    code: u16,
    sqlstate: &str,
    message: &str,
    out: &mut Vec<u8>,
) -> Result<(), MysqlEncodeError> {
    let sql_state: [u8; 5] = sqlstate
        .as_bytes()
        .try_into()
        .ok()
        .filter(|s: &[u8; 5]| s.iter().all(u8::is_ascii_alphanumeric))
        .ok_or_else(|| MysqlEncodeError::InvalidSqlState {
            code: sqlstate.to_owned(),
        })?;
    let max = super::packet::MAX_PACKET_PAYLOAD - 9;
    if message.len() > max {
        return Err(MysqlEncodeError::TooLong {
            field: "error message",
            len: message.len(),
            max,
        });
    }
    let mut payload = Vec::with_capacity(9 + message.len());
    ErrPacket {
        code,
        sql_state: Some(sql_state),
        message: message.as_bytes(),
    }
    .encode(&mut payload);
    encode_packet(seq, &payload, out);
    Ok(())
}

/// Append an OK payload (protocol 4.1, header `0x00`).
pub fn encode_ok(ok: &OkPacket<'_>, out: &mut Vec<u8>) {
    out.push(ok.header);
    super::packet::encode_lenenc_int(ok.affected_rows, out);
    super::packet::encode_lenenc_int(ok.last_insert_id, out);
    out.extend_from_slice(&ok.status.to_le_bytes());
    out.extend_from_slice(&ok.warnings.to_le_bytes());
    out.extend_from_slice(ok.info);
}
