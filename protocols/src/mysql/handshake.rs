//! The connection phase: the server's Initial Handshake v10, the client's
//! SSLRequest and HandshakeResponse41, and AuthSwitchRequest.

use super::packet::{
    MysqlEncodeError, MysqlError, array, cstr, end, lenenc_bytes, take, u16le, u32le,
};
use crate::reader::Reader;

/// Capability flags used by this codec (protocol docs, "Capabilities Flags").
pub mod capabilities {
    pub const CLIENT_LONG_PASSWORD: u32 = 1;
    pub const CLIENT_CONNECT_WITH_DB: u32 = 8;
    pub const CLIENT_PROTOCOL_41: u32 = 0x200;
    pub const CLIENT_SSL: u32 = 0x800;
    pub const CLIENT_SECURE_CONNECTION: u32 = 0x8000;
    pub const CLIENT_PLUGIN_AUTH: u32 = 0x8_0000;
    pub const CLIENT_CONNECT_ATTRS: u32 = 0x10_0000;
    pub const CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA: u32 = 0x20_0000;
    pub const CLIENT_SESSION_TRACK: u32 = 0x80_0000;
    pub const CLIENT_DEPRECATE_EOF: u32 = 0x100_0000;
    pub const CLIENT_ZSTD_COMPRESSION_ALGORITHM: u32 = 0x400_0000;
    pub const CLIENT_QUERY_ATTRIBUTES: u32 = 0x800_0000;
}
use capabilities::*;

/// Initial Handshake Packet, protocol version 10 (server → client).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handshake<'a> {
    /// e.g. `8.0.36` or `5.5.5-10.11.6-MariaDB`.
    pub server_version: &'a [u8],
    pub connection_id: u32,
    /// The first 8 bytes of the scramble.
    pub auth_plugin_data_1: [u8; 8],
    /// Lower and upper capability halves together.
    pub capabilities: u32,
    pub charset: u8,
    pub status: u16,
    /// The length byte sent for the whole scramble (0 without
    /// `CLIENT_PLUGIN_AUTH`).
    pub auth_plugin_data_len: u8,
    /// Reserved bytes; MariaDB puts its extended capabilities in the last 4.
    pub reserved: [u8; 10],
    /// The rest of the scramble, including MySQL's trailing NUL.
    pub auth_plugin_data_2: &'a [u8],
    /// Present with `CLIENT_PLUGIN_AUTH`.
    pub auth_plugin_name: Option<&'a [u8]>,
}

impl<'a> Handshake<'a> {
    /// Parse a handshake payload.
    pub fn parse(payload: &'a [u8]) -> Result<Self, MysqlError> {
        let mut r = Reader::new(payload);
        let [version] = array(&mut r, "protocol version")?;
        if version != 10 {
            return Err(MysqlError::UnsupportedProtocolVersion { version });
        }
        let server_version = cstr(&mut r, "server version")?;
        let connection_id = u32le(&mut r, "connection id")?;
        let auth_plugin_data_1 = array(&mut r, "auth plugin data part 1")?;
        if array::<1>(&mut r, "filler")? != [0] {
            return Err(MysqlError::Invalid {
                what: "handshake filler",
            });
        }
        let lower = u16le(&mut r, "capability flags")?;
        let [charset] = array(&mut r, "character set")?;
        let status = u16le(&mut r, "status flags")?;
        let upper = u16le(&mut r, "capability flags (upper)")?;
        let capabilities = u32::from(lower) | u32::from(upper) << 16;
        if capabilities & CLIENT_PROTOCOL_41 == 0 {
            return Err(MysqlError::Protocol41Required);
        }
        let [auth_plugin_data_len] = array(&mut r, "auth plugin data length")?;
        let reserved = array(&mut r, "reserved")?;
        let auth_plugin_data_2 = if capabilities & CLIENT_SECURE_CONNECTION != 0 {
            let n = usize::from(auth_plugin_data_len).saturating_sub(8).max(13);
            take(&mut r, n, "auth plugin data part 2")?
        } else {
            &[]
        };
        let auth_plugin_name = if capabilities & CLIENT_PLUGIN_AUTH != 0 {
            Some(cstr(&mut r, "auth plugin name")?)
        } else {
            None
        };
        end(&r, "handshake")?;
        Ok(Self {
            server_version,
            connection_id,
            auth_plugin_data_1,
            capabilities,
            charset,
            status,
            auth_plugin_data_len,
            reserved,
            auth_plugin_data_2,
            auth_plugin_name,
        })
    }

    /// MariaDB's extended capabilities (the last 4 reserved bytes).
    pub fn mariadb_capabilities(&self) -> u32 {
        let [.., a, b, c, d] = self.reserved;
        u32::from_le_bytes([a, b, c, d])
    }

    /// Append the payload (without packet header). A parsed handshake
    /// encodes to exactly the bytes it came from. Fails when the server
    /// version or plugin name contains NUL or part 2 has the wrong length.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), MysqlEncodeError> {
        let secure = self.capabilities & CLIENT_SECURE_CONNECTION != 0;
        let want = if secure {
            usize::from(self.auth_plugin_data_len)
                .saturating_sub(8)
                .max(13)
        } else {
            0
        };
        if self.auth_plugin_data_2.len() != want {
            return Err(MysqlEncodeError::TooLong {
                field: "auth plugin data part 2",
                len: self.auth_plugin_data_2.len(),
                max: want,
            });
        }
        check_no_nul(self.server_version, "server version")?;
        if let Some(name) = self.auth_plugin_name {
            check_no_nul(name, "auth plugin name")?;
        }
        out.push(10);
        out.extend_from_slice(self.server_version);
        out.push(0);
        out.extend_from_slice(&self.connection_id.to_le_bytes());
        out.extend_from_slice(&self.auth_plugin_data_1);
        out.push(0);
        let [a, b, c, d] = self.capabilities.to_le_bytes();
        out.extend_from_slice(&[a, b, self.charset]);
        out.extend_from_slice(&self.status.to_le_bytes());
        out.extend_from_slice(&[c, d, self.auth_plugin_data_len]);
        out.extend_from_slice(&self.reserved);
        out.extend_from_slice(self.auth_plugin_data_2);
        if self.capabilities & CLIENT_PLUGIN_AUTH != 0 {
            out.extend_from_slice(self.auth_plugin_name.unwrap_or_default());
            out.push(0);
        }
        Ok(())
    }
}

fn check_no_nul(s: &[u8], field: &'static str) -> Result<(), MysqlEncodeError> {
    if s.contains(&0) {
        return Err(MysqlEncodeError::InteriorNul { field });
    }
    Ok(())
}

/// SSLRequest: the first 32 bytes of a HandshakeResponse41 with `CLIENT_SSL`;
/// TLS follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SslRequest {
    pub capabilities: u32,
    pub max_packet_size: u32,
    pub charset: u8,
    /// Zero in MySQL; MariaDB puts extended capabilities in the last 4.
    pub filler: [u8; 23],
}

/// HandshakeResponse41 (client → server).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandshakeResponse<'a> {
    pub capabilities: u32,
    pub max_packet_size: u32,
    pub charset: u8,
    pub filler: [u8; 23],
    pub username: &'a [u8],
    /// The scrambled password (or plugin-specific first packet).
    pub auth_response: &'a [u8],
    /// With `CLIENT_CONNECT_WITH_DB`.
    pub database: Option<&'a [u8]>,
    /// With `CLIENT_PLUGIN_AUTH`.
    pub auth_plugin_name: Option<&'a [u8]>,
    /// With `CLIENT_CONNECT_ATTRS`: the key/value block (validated).
    connect_attrs: Option<&'a [u8]>,
    /// With `CLIENT_ZSTD_COMPRESSION_ALGORITHM`.
    pub zstd_level: Option<u8>,
}

impl<'a> HandshakeResponse<'a> {
    /// Connection attributes (`_client_name`, `program_name`, …) in order.
    pub fn connect_attrs(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        let mut r = Reader::new(self.connect_attrs.unwrap_or_default());
        std::iter::from_fn(move || {
            let k = lenenc_bytes(&mut r, "attribute name").ok()?;
            let v = lenenc_bytes(&mut r, "attribute value").ok()?;
            Some((k, v))
        })
    }
}

/// What a client sends in answer to the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientHandshake<'a> {
    /// TLS follows; the HandshakeResponse comes after it.
    SslRequest(SslRequest),
    Response(HandshakeResponse<'a>),
}

impl<'a> ClientHandshake<'a> {
    /// Parse the client's handshake payload (sequence id 1).
    pub fn parse(payload: &'a [u8]) -> Result<Self, MysqlError> {
        let mut r = Reader::new(payload);
        let capabilities = u32le(&mut r, "capability flags")?;
        if capabilities & CLIENT_PROTOCOL_41 == 0 {
            return Err(MysqlError::Protocol41Required);
        }
        let max_packet_size = u32le(&mut r, "max packet size")?;
        let [charset] = array(&mut r, "character set")?;
        let filler = array(&mut r, "filler")?;
        if r.is_empty() {
            if capabilities & CLIENT_SSL == 0 {
                return Err(MysqlError::Invalid {
                    what: "32-byte handshake response without CLIENT_SSL",
                });
            }
            return Ok(ClientHandshake::SslRequest(SslRequest {
                capabilities,
                max_packet_size,
                charset,
                filler,
            }));
        }
        let username = cstr(&mut r, "username")?;
        let auth_response = if capabilities & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
            lenenc_bytes(&mut r, "auth response")?
        } else if capabilities & CLIENT_SECURE_CONNECTION != 0 {
            let [n] = array(&mut r, "auth response length")?;
            take(&mut r, usize::from(n), "auth response")?
        } else {
            cstr(&mut r, "auth response")?
        };
        let database = if capabilities & CLIENT_CONNECT_WITH_DB != 0 {
            Some(cstr(&mut r, "database")?)
        } else {
            None
        };
        let auth_plugin_name = if capabilities & CLIENT_PLUGIN_AUTH != 0 {
            Some(cstr(&mut r, "auth plugin name")?)
        } else {
            None
        };
        let connect_attrs = if capabilities & CLIENT_CONNECT_ATTRS != 0 {
            let block = lenenc_bytes(&mut r, "connection attributes")?;
            let mut a = Reader::new(block);
            while !a.is_empty() {
                lenenc_bytes(&mut a, "attribute name")?;
                lenenc_bytes(&mut a, "attribute value")?;
            }
            Some(block)
        } else {
            None
        };
        let zstd_level = if capabilities & CLIENT_ZSTD_COMPRESSION_ALGORITHM != 0 {
            let [level] = array(&mut r, "zstd compression level")?;
            Some(level)
        } else {
            None
        };
        end(&r, "handshake response")?;
        Ok(ClientHandshake::Response(HandshakeResponse {
            capabilities,
            max_packet_size,
            charset,
            filler,
            username,
            auth_response,
            database,
            auth_plugin_name,
            connect_attrs,
            zstd_level,
        }))
    }
}

impl SslRequest {
    /// Append the 32-byte payload.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.capabilities | CLIENT_SSL).to_le_bytes());
        out.extend_from_slice(&self.max_packet_size.to_le_bytes());
        out.push(self.charset);
        out.extend_from_slice(&self.filler);
    }
}

/// AuthSwitchRequest (`0xfe` in the connection phase): use another plugin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthSwitchRequest<'a> {
    pub plugin_name: &'a [u8],
    /// The new scramble (usually NUL-terminated).
    pub plugin_data: &'a [u8],
}

impl<'a> AuthSwitchRequest<'a> {
    /// Parse an AuthSwitchRequest payload.
    pub fn parse(payload: &'a [u8]) -> Result<Self, MysqlError> {
        let mut r = Reader::new(payload);
        if array::<1>(&mut r, "auth switch header")? != [0xfe] {
            return Err(MysqlError::Invalid {
                what: "auth switch header (not 0xfe)",
            });
        }
        let plugin_name = cstr(&mut r, "auth plugin name")?;
        Ok(Self {
            plugin_name,
            plugin_data: r.rest(),
        })
    }

    /// Append the payload.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), MysqlEncodeError> {
        check_no_nul(self.plugin_name, "auth plugin name")?;
        out.push(0xfe);
        out.extend_from_slice(self.plugin_name);
        out.push(0);
        out.extend_from_slice(self.plugin_data);
        Ok(())
    }
}
