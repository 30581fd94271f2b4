//! The WebSocket transports of Kubernetes streams, one direction at a time.
//!
//! [`WsFrameDecoder`] reads RFC 6455 frames (client frames masked, server frames not; fragmented
//! messages reassembled; ping, pong and close understood) into whole [`WsMessage`]s.
//! [`WsChannelDecoder`] gives the binary messages their Kubernetes meaning:
//! - `v4.channel.k8s.io` / `v5.channel.k8s.io` (exec, attach): the first byte of each message is
//!   the channel (0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize; v5's 255 closes the channel
//!   named by the next byte);
//! - port-forward (`portforward.k8s.io`): channel `2i` carries port `i`'s data and `2i + 1` its
//!   errors; the server's first message on each channel starts with the port, two bytes
//!   little-endian;
//! - `SPDY/3.1+portforward.k8s.io` (kubectl ≥ 1.31): the binary messages' payloads, end to end,
//!   are a SPDY/3.1 byte stream, handed to a [`SpdyDecoder`].
//!
//! Bounds: a message over [`MAX_MESSAGE`] bytes is refused as soon as its length is read.

use super::{SpdyDecoder, StreamChunk, StreamError, StreamKind};

/// The largest message (all fragments together) either side may send.
pub const MAX_MESSAGE: usize = 4 << 20;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// One whole WebSocket message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsMessage {
    Binary(Vec<u8>),
    Text(Vec<u8>),
    /// The close frame's payload (status code and reason, possibly empty).
    Close(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
}

/// Reads one direction's RFC 6455 frames into messages.
#[derive(Debug)]
pub struct WsFrameDecoder {
    from_client: bool,
    buf: Vec<u8>,
    /// Where the next frame starts in `buf` (the bytes before it are read).
    pos: usize,
    /// The fragmented message being reassembled: whether it is text, and its bytes so far.
    partial: Option<(bool, Vec<u8>)>,
    closed: bool,
}

/// A frame's header, once its bytes are all there.
struct FrameHead {
    fin: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    header_len: usize,
    payload_len: usize,
}

impl WsFrameDecoder {
    /// A decoder for the frames the client (`true`) or the server (`false`) sends.
    #[must_use]
    pub fn new(from_client: bool) -> Self {
        Self {
            from_client,
            buf: Vec::new(),
            pos: 0,
            partial: None,
            closed: false,
        }
    }

    /// Takes the next bytes; answers the messages they complete (an error at the first frame
    /// that breaks a rule: the messages before it are lost, so callers that act on each message
    /// use [`Self::push`] and [`Self::next_message`]).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<WsMessage>, StreamError> {
        self.push(bytes);
        let mut out = Vec::new();
        while let Some(message) = self.next_message()? {
            out.push(message);
        }
        Ok(out)
    }

    /// Takes the next bytes without reading them.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.drain(..self.pos);
        self.pos = 0;
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole message from the bytes pushed so far, in order; `None` until there is one.
    pub fn next_message(&mut self) -> Result<Option<WsMessage>, StreamError> {
        while let Some(head) = self.head(&self.buf[self.pos..])? {
            let start = self.pos + head.header_len;
            let end = start + head.payload_len;
            if self.buf.len() < end {
                return Ok(None);
            }
            let mut payload = self.buf[start..end].to_vec();
            if let Some(key) = head.mask {
                unmask(&mut payload, key);
            }
            self.pos = end;
            if let Some(message) = self.frame(&head, payload)? {
                return Ok(Some(message));
            }
        }
        Ok(None)
    }

    /// Whether the close frame has been read.
    #[must_use]
    pub fn closed(&self) -> bool {
        self.closed
    }

    /// Whether every byte pushed so far belongs to whole frames of whole messages: a frame of
    /// one's own may then go into this direction's byte stream without splitting one of the
    /// peer's (the proxy's notices to a kubectl waiting in a moderated exec).
    #[must_use]
    pub fn at_message_boundary(&self) -> bool {
        self.pos == self.buf.len() && self.partial.is_none()
    }

    /// Parses and checks the header at the start of `buf`; `None` until it is all there.
    fn head(&self, buf: &[u8]) -> Result<Option<FrameHead>, StreamError> {
        let (Some(&b0), Some(&b1)) = (buf.first(), buf.get(1)) else {
            return Ok(None);
        };
        if self.closed {
            return Err(StreamError::WsAfterClose);
        }
        if b0 & 0x70 != 0 {
            return Err(StreamError::WsReservedBits(b0 & 0x70));
        }
        let (fin, opcode, masked) = (b0 & 0x80 != 0, b0 & 0x0F, b1 & 0x80 != 0);
        if !matches!(
            opcode,
            OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
        ) {
            return Err(StreamError::WsOpcode(opcode));
        }
        match (self.from_client, masked) {
            (true, false) => return Err(StreamError::WsUnmasked),
            (false, true) => return Err(StreamError::WsMasked),
            _ => {}
        }
        let (len, mut at) = match b1 & 0x7F {
            126 => match buf.get(2..4) {
                Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
                None => return Ok(None),
            },
            127 => match buf.get(2..10).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
                Some(b) => (u64::from_be_bytes(b), 10),
                None => return Ok(None),
            },
            n => (u64::from(n), 2),
        };
        if len >> 63 != 0 {
            return Err(StreamError::WsLength);
        }
        if opcode >= OP_CLOSE && (!fin || len > 125) {
            return Err(StreamError::WsControlFrame);
        }
        let so_far = self.partial.as_ref().map_or(0, |(_, p)| p.len() as u64);
        if opcode < OP_CLOSE && len.saturating_add(so_far) > MAX_MESSAGE as u64 {
            return Err(StreamError::WsTooLong(len.saturating_add(so_far)));
        }
        let mask = if masked {
            let Some(key) = buf
                .get(at..at + 4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
            else {
                return Ok(None);
            };
            at += 4;
            Some(key)
        } else {
            None
        };
        Ok(Some(FrameHead {
            fin,
            opcode,
            mask,
            header_len: at,
            // Bounded above by MAX_MESSAGE or 125, so it fits.
            payload_len: usize::try_from(len).unwrap_or(usize::MAX),
        }))
    }

    /// Applies one frame: a whole message, a fragment, or a control frame.
    fn frame(
        &mut self,
        head: &FrameHead,
        payload: Vec<u8>,
    ) -> Result<Option<WsMessage>, StreamError> {
        match head.opcode {
            OP_CLOSE => {
                self.closed = true;
                Ok(Some(WsMessage::Close(payload)))
            }
            OP_PING => Ok(Some(WsMessage::Ping(payload))),
            OP_PONG => Ok(Some(WsMessage::Pong(payload))),
            OP_CONTINUATION => {
                let Some((text, mut so_far)) = self.partial.take() else {
                    return Err(StreamError::WsStrayContinuation);
                };
                so_far.extend_from_slice(&payload);
                if head.fin {
                    Ok(Some(message(text, so_far)))
                } else {
                    self.partial = Some((text, so_far));
                    Ok(None)
                }
            }
            opcode => {
                if self.partial.is_some() {
                    return Err(StreamError::WsUnfinishedMessage);
                }
                let text = opcode == OP_TEXT;
                if head.fin {
                    Ok(Some(message(text, payload)))
                } else {
                    self.partial = Some((text, payload));
                    Ok(None)
                }
            }
        }
    }
}

fn message(text: bool, payload: Vec<u8>) -> WsMessage {
    if text {
        WsMessage::Text(payload)
    } else {
        WsMessage::Binary(payload)
    }
}

fn unmask(payload: &mut [u8], key: [u8; 4]) {
    for (byte, k) in payload.iter_mut().zip(key.iter().cycle()) {
        *byte ^= k;
    }
}

/// Encodes one frame (`mask` for client frames): for tests, fuzzing and tools.
#[must_use]
pub fn encode_frame(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | (opcode & 0x0F)];
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n @ 0..=125 => out.push(m | n as u8),
        n @ 126..=0xFFFF => {
            out.push(m | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(m | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let mut body = payload.to_vec();
    if let Some(key) = mask {
        out.extend_from_slice(&key);
        unmask(&mut body, key);
    }
    out.extend_from_slice(&body);
    out
}

/// The Kubernetes meaning of one direction's WebSocket messages.
#[derive(Debug)]
pub struct WsChannelDecoder {
    frames: WsFrameDecoder,
    mode: Mode,
}

#[derive(Debug)]
enum Mode {
    Channels,
    PortForward {
        ports: Vec<u16>,
        /// The port each server channel announced in its first message.
        learned: Box<[Option<u16>; 256]>,
    },
    Spdy(Box<SpdyDecoder>),
}

impl WsChannelDecoder {
    /// Exec and attach (`v4`/`v5.channel.k8s.io`), for the client's (`true`) or the server's bytes.
    #[must_use]
    pub fn new(from_client: bool) -> Self {
        Self::with_mode(from_client, Mode::Channels)
    }

    /// Port-forward over WebSocket, the ports in the order of the request's `ports` parameter
    /// (the client's channels are known only from them).
    #[must_use]
    pub fn port_forward(from_client: bool, ports: Vec<u16>) -> Self {
        let learned = Box::new([None; 256]);
        Self::with_mode(from_client, Mode::PortForward { ports, learned })
    }

    /// SPDY/3.1 tunnelled in WebSocket binary messages (`SPDY/3.1+portforward.k8s.io`).
    #[must_use]
    pub fn spdy(from_client: bool) -> Self {
        let spdy = Box::new(SpdyDecoder::new(from_client));
        Self::with_mode(from_client, Mode::Spdy(spdy))
    }

    fn with_mode(from_client: bool, mode: Mode) -> Self {
        Self {
            frames: WsFrameDecoder::new(from_client),
            mode,
        }
    }

    /// The tunnelled SPDY decoder, when this is one (its streams are opened by the client's
    /// direction: see [`SpdyDecoder::take_opened`]).
    pub fn spdy_mut(&mut self) -> Option<&mut SpdyDecoder> {
        match &mut self.mode {
            Mode::Spdy(s) => Some(s),
            _ => None,
        }
    }

    /// Whether this direction has sent its close frame.
    #[must_use]
    pub fn closed(&self) -> bool {
        self.frames.closed()
    }

    /// Whether the bytes so far end at a message boundary (see
    /// [`WsFrameDecoder::at_message_boundary`]).
    #[must_use]
    pub fn at_message_boundary(&self) -> bool {
        self.frames.at_message_boundary()
    }

    /// Takes the next bytes; answers the payload chunks they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<StreamChunk>, StreamError> {
        let mut out = Vec::new();
        self.frames.push(bytes);
        // Message by message, so the first rule broken is the one reported however bytes come.
        while let Some(message) = self.frames.next_message()? {
            match message {
                WsMessage::Binary(data) => self.binary(data, &mut out)?,
                WsMessage::Text(_) => return Err(StreamError::WsText),
                WsMessage::Close(_) | WsMessage::Ping(_) | WsMessage::Pong(_) => {}
            }
        }
        Ok(out)
    }

    fn binary(&mut self, data: Vec<u8>, out: &mut Vec<StreamChunk>) -> Result<(), StreamError> {
        let from_client = self.frames.from_client;
        match &mut self.mode {
            Mode::Spdy(spdy) => out.extend(spdy.feed(&data)?),
            Mode::Channels => {
                let Some((&channel, rest)) = data.split_first() else {
                    return Ok(());
                };
                out.push(StreamChunk {
                    kind: channel_kind(channel),
                    data: rest.to_vec(),
                });
            }
            Mode::PortForward { ports, learned } => {
                let Some((&channel, rest)) = data.split_first() else {
                    return Ok(());
                };
                let slot = &mut learned[usize::from(channel)];
                let (port, rest) = match (from_client, *slot) {
                    (true, _) => {
                        let port = ports.get(usize::from(channel / 2)).copied();
                        (port.ok_or(StreamError::WsPortChannel(channel))?, rest)
                    }
                    (false, Some(port)) => (port, rest),
                    (false, None) => {
                        let (Some(&lo), Some(&hi)) = (rest.first(), rest.get(1)) else {
                            return Err(StreamError::WsPortPrefix(channel));
                        };
                        let port = u16::from_le_bytes([lo, hi]);
                        *slot = Some(port);
                        (port, &rest[2..])
                    }
                };
                if !rest.is_empty() {
                    let kind = if channel.is_multiple_of(2) {
                        StreamKind::PortData(port)
                    } else {
                        StreamKind::PortError(port)
                    };
                    out.push(StreamChunk {
                        kind,
                        data: rest.to_vec(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// The exec/attach meaning of a channel number.
fn channel_kind(channel: u8) -> StreamKind {
    match channel {
        0 => StreamKind::Stdin,
        1 => StreamKind::Stdout,
        2 => StreamKind::Stderr,
        3 => StreamKind::Error,
        4 => StreamKind::Resize,
        other => StreamKind::Other(other),
    }
}

#[cfg(test)]
#[path = "websocket_tests.rs"]
mod tests;
