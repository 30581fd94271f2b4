//! The streams of `kubectl exec`, `attach` and `port-forward` once the API server has answered
//! `101 Switching Protocols`: which bytes are stdin, stdout, stderr, the error (exit status)
//! stream, terminal resizes, or a forwarded port's data. This module owns the shared vocabulary
//! ([`StreamKind`], [`StreamChunk`], [`StreamError`]); [`websocket`] decodes the WebSocket
//! transports (`v4`/`v5.channel.k8s.io`, `portforward.k8s.io`, and SPDY tunnelled in WebSocket
//! as kubectl ≥ 1.31 sends it), [`spdy`] SPDY/3.1 (older kubectl, Helm).
//!
//! Sans-IO: each decoder takes one direction's bytes as they arrive (any split) and answers the
//! payload chunks it has seen whole, or an error naming what the peer got wrong. Memory is
//! bounded by the limits each transport names; nothing here panics on peer bytes. A decoder
//! observes: the caller forwards the original bytes unchanged.

pub mod spdy;
pub mod websocket;

pub use spdy::SpdyDecoder;
pub use websocket::{WsChannelDecoder, WsFrameDecoder, WsMessage};

/// What a stream carries, in Kubernetes' terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKind {
    /// The container's standard input (client to server).
    Stdin,
    /// The container's standard output.
    Stdout,
    /// The container's standard error.
    Stderr,
    /// The error stream: a `Status` JSON, with the exit code when the command failed.
    Error,
    /// Terminal resizes: JSON `{"Width":W,"Height":H}` (client to server).
    Resize,
    /// Bytes of a forwarded port.
    PortData(u16),
    /// The error stream of a forwarded port.
    PortError(u16),
    /// A channel number this crate gives no meaning (the v5 close-channel signal is `Other(255)`
    /// with the closed channel as its data).
    Other(u8),
}

/// One payload seen on a stream, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamChunk {
    pub kind: StreamKind,
    pub data: Vec<u8>,
}

/// Why a direction's bytes cannot be followed (the peer's fault); the session must end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    // WebSocket (RFC 6455).
    #[error("WebSocket frame with reserved bits {0:#x} set (no extension was negotiated)")]
    WsReservedBits(u8),
    #[error("WebSocket frame with unknown opcode {0:#x}")]
    WsOpcode(u8),
    #[error("WebSocket frame from the client is not masked")]
    WsUnmasked,
    #[error("WebSocket frame from the server is masked")]
    WsMasked,
    #[error("WebSocket control frame is fragmented or longer than 125 bytes")]
    WsControlFrame,
    #[error("WebSocket 64-bit length with the top bit set")]
    WsLength,
    #[error("WebSocket message of {0} bytes is over the limit of {limit} bytes", limit = websocket::MAX_MESSAGE)]
    WsTooLong(u64),
    #[error("WebSocket continuation frame with no message started")]
    WsStrayContinuation,
    #[error("WebSocket data frame while a fragmented message is unfinished")]
    WsUnfinishedMessage,
    #[error("WebSocket frame after the close frame")]
    WsAfterClose,
    #[error("WebSocket text message on a binary channel protocol")]
    WsText,
    #[error("port-forward channel {0} is beyond the ports asked for")]
    WsPortChannel(u8),
    #[error("port-forward channel {0}'s first message lacks its two-byte port")]
    WsPortPrefix(u8),
    // SPDY/3.1.
    #[error("SPDY control frame of version {0}, not 3")]
    SpdyVersion(u16),
    #[error("SPDY frame of {len} bytes is over the limit of {limit} bytes")]
    SpdyTooLong { len: usize, limit: usize },
    #[error("SPDY {frame} frame too short ({len} bytes)")]
    SpdyShort { frame: &'static str, len: usize },
    #[error("SPDY header block cannot be decompressed: {0}")]
    SpdyInflate(String),
    #[error("SPDY header block decompresses to more than {limit} bytes", limit = spdy::MAX_HEADER_BLOCK)]
    SpdyHeaderBlockTooLong,
    #[error("SPDY header block is malformed: {0}")]
    SpdyHeaderBlock(&'static str),
    #[error("SPDY stream {0} has no streamtype header")]
    SpdyNoStreamType(u32),
    #[error("SPDY stream {id} has an unknown streamtype {kind:?}")]
    SpdyStreamType { id: u32, kind: String },
    #[error("SPDY port-forward stream {0} has no valid port header")]
    SpdyPort(u32),
    #[error("SPDY stream {0} was opened again (stream ids only grow)")]
    SpdyReopened(u32),
    #[error("SPDY stream id {0} is not valid here")]
    SpdyStreamId(u32),
    #[error("SPDY data on stream {0}, which was never opened")]
    SpdyUnknownStream(u32),
    #[error("more than {limit} SPDY streams open at once", limit = spdy::MAX_STREAMS)]
    SpdyTooManyStreams,
}
