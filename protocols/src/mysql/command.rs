//! Command-phase packets (client → server, sequence id 0).

use super::packet::{MysqlError, array, cstr, end, u32le};
use crate::reader::Reader;

pub const COM_QUIT: u8 = 0x01;
pub const COM_INIT_DB: u8 = 0x02;
pub const COM_QUERY: u8 = 0x03;
pub const COM_FIELD_LIST: u8 = 0x04;
pub const COM_PING: u8 = 0x0e;
pub const COM_CHANGE_USER: u8 = 0x11;
pub const COM_STMT_PREPARE: u8 = 0x16;
pub const COM_STMT_EXECUTE: u8 = 0x17;
pub const COM_STMT_SEND_LONG_DATA: u8 = 0x18;
pub const COM_STMT_CLOSE: u8 = 0x19;
pub const COM_STMT_RESET: u8 = 0x1a;
pub const COM_SET_OPTION: u8 = 0x1b;
pub const COM_RESET_CONNECTION: u8 = 0x1f;

/// COM_SET_OPTION's body (u16le) that turns multi-statements on for the connection.
pub const MYSQL_OPTION_MULTI_STATEMENTS_ON: [u8; 2] = 0u16.to_le_bytes();
/// COM_SET_OPTION's body that turns them off.
pub const MYSQL_OPTION_MULTI_STATEMENTS_OFF: [u8; 2] = 1u16.to_le_bytes();

/// One command, borrowing the caller's buffer. Text is raw bytes in the
/// connection's character set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command<'a> {
    Quit,
    /// Change the default schema.
    InitDb {
        schema: &'a [u8],
    },
    /// Text protocol query (without `CLIENT_QUERY_ATTRIBUTES`, which a proxy
    /// should not grant).
    Query {
        sql: &'a [u8],
    },
    /// Deprecated column listing.
    FieldList {
        table: &'a [u8],
        wildcard: &'a [u8],
    },
    Ping,
    /// Re-authenticate as `user`; `rest` is the auth data, schema, charset,
    /// plugin and attributes, whose layout depends on the capabilities.
    ChangeUser {
        user: &'a [u8],
        rest: &'a [u8],
    },
    StmtPrepare {
        sql: &'a [u8],
    },
    /// Run a prepared statement. `params` (null bitmap, types, values) can
    /// only be decoded knowing the statement's parameter count; it is raw.
    StmtExecute {
        statement_id: u32,
        flags: u8,
        iteration_count: u32,
        params: &'a [u8],
    },
    /// Stream a parameter value in pieces before StmtExecute.
    StmtSendLongData {
        statement_id: u32,
        param_id: u16,
        data: &'a [u8],
    },
    StmtClose {
        statement_id: u32,
    },
    StmtReset {
        statement_id: u32,
    },
    ResetConnection,
    /// Any other command byte (COM_STMT_FETCH, COM_SET_OPTION, …), raw.
    Other {
        code: u8,
        body: &'a [u8],
    },
}

impl<'a> Command<'a> {
    /// Parse a command payload (the command byte first).
    pub fn parse(payload: &'a [u8]) -> Result<Self, MysqlError> {
        let mut r = Reader::new(payload);
        let [code] = array(&mut r, "command byte")?;
        let cmd = match code {
            COM_QUIT => Command::Quit,
            COM_INIT_DB => Command::InitDb { schema: r.rest() },
            COM_QUERY => Command::Query { sql: r.rest() },
            COM_FIELD_LIST => Command::FieldList {
                table: cstr(&mut r, "table name")?,
                wildcard: r.rest(),
            },
            COM_PING => Command::Ping,
            COM_CHANGE_USER => Command::ChangeUser {
                user: cstr(&mut r, "user name")?,
                rest: r.rest(),
            },
            COM_STMT_PREPARE => Command::StmtPrepare { sql: r.rest() },
            COM_STMT_EXECUTE => {
                let statement_id = u32le(&mut r, "statement id")?;
                let [flags] = array(&mut r, "cursor flags")?;
                let iteration_count = u32le(&mut r, "iteration count")?;
                Command::StmtExecute {
                    statement_id,
                    flags,
                    iteration_count,
                    params: r.rest(),
                }
            }
            COM_STMT_SEND_LONG_DATA => {
                let statement_id = u32le(&mut r, "statement id")?;
                let param_id = u16::from_le_bytes(array(&mut r, "parameter id")?);
                Command::StmtSendLongData {
                    statement_id,
                    param_id,
                    data: r.rest(),
                }
            }
            COM_STMT_CLOSE => Command::StmtClose {
                statement_id: u32le(&mut r, "statement id")?,
            },
            COM_STMT_RESET => Command::StmtReset {
                statement_id: u32le(&mut r, "statement id")?,
            },
            COM_RESET_CONNECTION => Command::ResetConnection,
            code => Command::Other {
                code,
                body: r.rest(),
            },
        };
        end(&r, "command")?;
        Ok(cmd)
    }

    /// The command byte.
    pub fn code(&self) -> u8 {
        match self {
            Command::Quit => COM_QUIT,
            Command::InitDb { .. } => COM_INIT_DB,
            Command::Query { .. } => COM_QUERY,
            Command::FieldList { .. } => COM_FIELD_LIST,
            Command::Ping => COM_PING,
            Command::ChangeUser { .. } => COM_CHANGE_USER,
            Command::StmtPrepare { .. } => COM_STMT_PREPARE,
            Command::StmtExecute { .. } => COM_STMT_EXECUTE,
            Command::StmtSendLongData { .. } => COM_STMT_SEND_LONG_DATA,
            Command::StmtClose { .. } => COM_STMT_CLOSE,
            Command::StmtReset { .. } => COM_STMT_RESET,
            Command::ResetConnection => COM_RESET_CONNECTION,
            Command::Other { code, .. } => *code,
        }
    }

    /// The SQL text this command submits, if any (COM_QUERY and
    /// COM_STMT_PREPARE): what an audit log records.
    pub fn sql(&self) -> Option<&'a [u8]> {
        match self {
            Command::Query { sql } | Command::StmtPrepare { sql } => Some(sql),
            _ => None,
        }
    }

    /// Append the payload (without packet header); a parsed command encodes
    /// to exactly the bytes it came from.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.code());
        match self {
            Command::Quit | Command::Ping | Command::ResetConnection => {}
            Command::InitDb { schema: s }
            | Command::Query { sql: s }
            | Command::StmtPrepare { sql: s }
            | Command::Other { body: s, .. } => out.extend_from_slice(s),
            Command::FieldList { table, wildcard } => {
                out.extend_from_slice(table);
                out.push(0);
                out.extend_from_slice(wildcard);
            }
            Command::ChangeUser { user, rest } => {
                out.extend_from_slice(user);
                out.push(0);
                out.extend_from_slice(rest);
            }
            Command::StmtExecute {
                statement_id,
                flags,
                iteration_count,
                params,
            } => {
                out.extend_from_slice(&statement_id.to_le_bytes());
                out.push(*flags);
                out.extend_from_slice(&iteration_count.to_le_bytes());
                out.extend_from_slice(params);
            }
            Command::StmtSendLongData {
                statement_id,
                param_id,
                data,
            } => {
                out.extend_from_slice(&statement_id.to_le_bytes());
                out.extend_from_slice(&param_id.to_le_bytes());
                out.extend_from_slice(data);
            }
            Command::StmtClose { statement_id } | Command::StmtReset { statement_id } => {
                out.extend_from_slice(&statement_id.to_le_bytes());
            }
        }
    }
}
