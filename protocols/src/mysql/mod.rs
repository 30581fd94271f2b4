//! MySQL/MariaDB client/server protocol (4.1+), sans IO.
//!
//! This module owns the byte grammar Hop's database proxy and agent need for
//! MySQL: packet framing ([`parse_packet`], [`encode_packet`]: a 3-byte
//! little-endian length and a sequence id; a payload of exactly 0xFFFFFF
//! bytes continues in the next packet), length-encoded integers and strings,
//! the connection phase ([`Handshake`] v10, [`SslRequest`],
//! [`HandshakeResponse`] 41, [`AuthSwitchRequest`]), generic responses
//! ([`Response`]: OK, ERR, EOF; [`encode_err`] for refusals), command-phase
//! packets ([`Command`]), a bounded-memory [`CommandScanner`] that audits
//! a relayed client stream in place, and [`schema_switch`]: which default
//! schema one statement's text switches to (`USE`, also inside executable
//! comments), for the agent's schema guard. It never does IO, never authenticates
//! (scrambles are handed over, not checked) and never tracks the session:
//! which parser applies to a packet (an `0xfe` is EOF, OK or AuthSwitch
//! depending on the phase) is the caller's call.
//!
//! Parsers take one packet's payload (or, for framing, the bytes received so
//! far), borrow it, require it to be consumed exactly where the grammar
//! allows, and report the peer's faults as [`MysqlError`].

mod command;
mod handshake;
mod packet;
mod response;
mod schema;

pub use command::*;
pub use handshake::{
    AuthSwitchRequest, ClientHandshake, Handshake, HandshakeResponse, SslRequest, capabilities,
};
pub use packet::{
    MAX_PACKET_PAYLOAD, MysqlEncodeError, MysqlError, PACKET_HEADER_LEN, Packet,
    decode_lenenc_bytes, decode_lenenc_int, encode_lenenc_bytes, encode_lenenc_int, encode_packet,
    parse_packet,
};
pub use response::{EofPacket, ErrPacket, OkPacket, Response, encode_err, encode_ok};
pub use schema::{SchemaSwitch, SchemaSwitchError, schema_switch};

use crate::scan::{Engine, FrameInfo, RawEvent};

/// Default cap on the payload bytes a [`CommandScanner`] buffers.
pub const DEFAULT_SCAN_CAP: usize = 1024 * 1024;

/// What a [`CommandScanner`] saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScannedPacket<'a> {
    /// A packet with sequence id 0 (a new command) that fits the cap.
    Command(Command<'a>),
    /// Any other packet that fits the cap: the handshake response, an
    /// auth-switch answer, LOAD DATA LOCAL contents.
    Packet { seq: u8, payload: &'a [u8] },
    /// A packet longer than the cap: its sequence id, payload length and the
    /// first `cap` payload bytes (for sequence id 0, the command byte first).
    Truncated { seq: u8, len: usize, head: &'a [u8] },
    /// A packet continuing a 0xFFFFFF-byte payload; never buffered.
    Continuation { seq: u8, len: usize },
}

/// Follows a client→server byte stream chunk by chunk and reports each
/// packet (commands parsed), reading in place where a packet lies whole in a
/// chunk and buffering at most `cap` payload bytes otherwise.
///
/// It assumes sequence id 0 starts a command, which holds in the command
/// phase (and the handshake response has id 1, so it may be fed from the
/// start of a plaintext connection). The events are the same however the
/// stream is split. An error (a malformed command) is final.
#[derive(Clone, Debug)]
pub struct CommandScanner {
    engine: Engine<PACKET_HEADER_LEN>,
    /// The previous packet was 0xFFFFFF bytes: the next one continues it.
    continued: bool,
    failed: Option<MysqlError>,
}

impl Default for CommandScanner {
    fn default() -> Self {
        Self::new(DEFAULT_SCAN_CAP)
    }
}

impl CommandScanner {
    /// A scanner buffering at most `cap` payload bytes (clamped below
    /// 0xFFFFFF, so a continued payload is always reported truncated).
    pub fn new(cap: usize) -> Self {
        Self {
            engine: Engine::new(cap.min(MAX_PACKET_PAYLOAD - 1)),
            continued: false,
            failed: None,
        }
    }

    /// The most payload bytes this scanner ever buffers.
    pub fn cap(&self) -> usize {
        self.engine.cap()
    }

    /// Bytes held right now for a packet that is not complete yet.
    pub fn buffered(&self) -> usize {
        self.engine.buffered()
    }

    /// True when the stream is between packets.
    pub fn is_between_packets(&self) -> bool {
        self.engine.is_idle()
    }

    /// Start reading the next chunk; call [`CommandFeed::next`] until it
    /// returns `Ok(None)`.
    pub fn feed<'s, 'c>(&'s mut self, chunk: &'c [u8]) -> CommandFeed<'s, 'c> {
        CommandFeed {
            scanner: self,
            rest: chunk,
        }
    }
}

/// One chunk being scanned; see [`CommandScanner::feed`].
#[derive(Debug)]
pub struct CommandFeed<'s, 'c> {
    scanner: &'s mut CommandScanner,
    rest: &'c [u8],
}

impl CommandFeed<'_, '_> {
    /// The next event in this chunk, or `Ok(None)` when it is used up.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<ScannedPacket<'_>>, MysqlError> {
        if let Some(e) = &self.scanner.failed {
            return Err(e.clone());
        }
        let input = self.rest;
        let continued = std::cell::Cell::new(self.scanner.continued);
        let (used, event) = self
            .scanner
            .engine
            .step(input, |&[a, b, c, _]: &[u8; PACKET_HEADER_LEN]| {
                let len = u32::from_le_bytes([a, b, c, 0]) as usize;
                let skip = continued.replace(len == MAX_PACKET_PAYLOAD);
                Ok::<_, std::convert::Infallible>(FrameInfo {
                    body_len: len,
                    skip,
                })
            })
            .unwrap_or_else(|never| match never {});
        self.scanner.continued = continued.get();
        self.rest = input.get(used..).unwrap_or_default();
        let result = match event {
            None => return Ok(None),
            Some(RawEvent::Whole {
                header: [.., 0],
                body,
            }) => Command::parse(body).map(ScannedPacket::Command),
            Some(RawEvent::Whole {
                header: [.., seq],
                body,
            }) => Ok(ScannedPacket::Packet { seq, payload: body }),
            Some(RawEvent::Head {
                header: [.., seq],
                body_len,
                head,
            }) => Ok(ScannedPacket::Truncated {
                seq,
                len: body_len,
                head,
            }),
            Some(RawEvent::Skipped {
                header: [.., seq],
                body_len,
            }) => Ok(ScannedPacket::Continuation { seq, len: body_len }),
        };
        if let Err(e) = &result {
            self.scanner.failed = Some(e.clone());
        }
        result.map(Some)
    }
}
