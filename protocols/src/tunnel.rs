//! Hop's agent↔proxy control framing.
//!
//! This module owns the wire format of the control connection an agent opens
//! to the proxy (ALPN `hop-tunnel`): hello, heartbeat, dial and drain
//! messages. It never carries session bytes (those travel on their own
//! pooled connections), never authenticates (mTLS did) and never keeps state:
//! [`Frame::encode`] appends one frame to a caller-owned buffer and
//! [`Frame::decode`] reads one from the bytes received so far.
//!
//! # Layout
//!
//! All integers are big-endian.
//!
//! ```text
//! frame       = length:u32 type:u8 payload      ; length counts type + payload, 1..=MAX_FRAME_LEN
//! str         = len:u16 utf8-bytes[len]
//! list<T>     = count:u16 T[count]
//! option<T>   = 0x00 | 0x01 T
//! bool        = 0x00 | 0x01
//! socket_addr = 0x04 ip:[4] port:u16
//!             | 0x06 ip:[16] port:u16 flowinfo:u32 scope_id:u32
//!
//! 0x01 Hello        protocol_version:u16 agent_id:str agent_version:str
//!                   services:list<str> resources:list<resource>
//!      resource     = kind:str name:str labels:list<label> target:option<str>
//!      label        = key:str value:str
//! 0x02 HelloAck     proxy_id:str heartbeat_interval_secs:u32
//! 0x03 Heartbeat    seq:u64
//! 0x04 HeartbeatAck seq:u64
//! 0x05 Dial         session_id:[16] target:str client_addr:socket_addr
//! 0x06 DialResult   session_id:[16] ok:bool error:option<str>
//! 0x07 GoAway       reason:str reconnect_after_ms:u32
//! ```
//!
//! The encoding is canonical: a payload must be consumed exactly (no trailing
//! bytes), booleans and option tags are only 0 or 1, so
//! `encode(decode(bytes)) == bytes` for every frame that decodes. A frame
//! type this version does not know is an error that carries the frame's
//! length ([`TunnelError::UnknownFrameType`]), so a caller may skip it.
//! Compatibility is negotiated with `Hello.protocol_version`
//! ([`PROTOCOL_VERSION`]): a proxy serves agents whose version is within
//! [`OLDEST_PROTOCOL_VERSION`]`..=`[`PROTOCOL_VERSION`] and answers any other
//! hello with a [`Frame::GoAway`] that names both sides' versions. Because
//! decoding is exact, a new field in an existing frame breaks every older
//! peer: a change to this layout is a new protocol version, and what can be
//! negotiated below this framing (TLS resumption, for one) is left to TLS.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::reader::{Reader, array_at};

/// The version of this framing that [`Hello::protocol_version`] announces.
pub const PROTOCOL_VERSION: u16 = 1;
/// The oldest [`Hello::protocol_version`] this release still serves.
pub const OLDEST_PROTOCOL_VERSION: u16 = 1;

/// Whether a peer announcing `version` speaks a framing this release serves.
pub fn serves_protocol_version(version: u16) -> bool {
    (OLDEST_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&version)
}
/// Largest `length` field accepted (type byte + payload).
pub const MAX_FRAME_LEN: usize = 1024 * 1024;
/// Bytes before the type byte.
pub const LENGTH_PREFIX_LEN: usize = 4;

const TYPE_HELLO: u8 = 0x01;
const TYPE_HELLO_ACK: u8 = 0x02;
const TYPE_HEARTBEAT: u8 = 0x03;
const TYPE_HEARTBEAT_ACK: u8 = 0x04;
const TYPE_DIAL: u8 = 0x05;
const TYPE_DIAL_RESULT: u8 = 0x06;
const TYPE_GO_AWAY: u8 = 0x07;
const TYPE_PEER_DIAL: u8 = 0x08;
const TYPE_PEER_CANCEL: u8 = 0x09;

/// Why received bytes are not a valid frame. Always the peer's fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TunnelError {
    /// `length` over [`MAX_FRAME_LEN`].
    #[error("frame length {len} exceeds the limit of {MAX_FRAME_LEN}")]
    Oversized { len: u32 },
    /// A frame type this version does not know. `frame_len` is the whole
    /// frame's size (prefix included), so the caller may skip it.
    #[error("unknown frame type {frame_type:#04x} ({frame_len} bytes)")]
    UnknownFrameType { frame_type: u8, frame_len: usize },
    /// A field runs past the end of its frame.
    #[error("frame field {what} runs past the end of the frame")]
    Truncated { what: &'static str },
    /// A string field that is not UTF-8.
    #[error("frame field {what} is not valid UTF-8")]
    InvalidUtf8 { what: &'static str },
    /// Bytes that break the layout; `what` says how.
    #[error("malformed frame: {what}")]
    Malformed { what: &'static str },
}

/// Why a locally built frame cannot be encoded. The caller's fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A string or list longer than its 16-bit length prefix allows.
    #[error("frame field {what} has {len} entries/bytes, over the limit of {limit}")]
    FieldTooLong {
        what: &'static str,
        len: usize,
        limit: usize,
    },
    /// The whole frame is over [`MAX_FRAME_LEN`].
    #[error("frame would be {len} bytes, over the limit of {MAX_FRAME_LEN}")]
    FrameTooLarge { len: usize },
}

/// One control message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Agent → proxy, first frame: who the agent is and what it serves.
    Hello(Hello),
    /// Proxy → agent, answer to [`Frame::Hello`].
    HelloAck(HelloAck),
    /// Agent → proxy, every `heartbeat_interval_secs`.
    Heartbeat { seq: u64 },
    /// Proxy → agent, echoing [`Frame::Heartbeat`]'s `seq`.
    HeartbeatAck { seq: u64 },
    /// Proxy → agent: connect `target` for a session.
    Dial(Dial),
    /// Agent → proxy, the outcome of a [`Frame::Dial`].
    DialResult(DialResult),
    /// Either side: stop using this connection.
    GoAway(GoAway),
    /// Proxy → peer proxy (proxy peering, never to an agent): take a pooled data connection of
    /// agent `agent_id` and send it `dial`; the peer answers with the agent's
    /// [`Frame::DialResult`] and then relays the session's bytes.
    PeerDial(PeerDial),
    /// Proxy → peer proxy: a PostgreSQL CancelRequest that named no session of the sending proxy
    /// (a load balancer sent it to another appliance than its session's); no answer.
    PeerCancel(PeerCancel),
}

/// A PostgreSQL cancel key one proxy passes to another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCancel {
    pub process_id: u32,
    /// The secret key (4 to 256 bytes in PostgreSQL's protocol).
    pub key: Vec<u8>,
}

/// A Dial one proxy asks another to send to an agent tunnelled to that other proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerDial {
    /// The agent's host id.
    pub agent_id: String,
    pub dial: Dial,
}

/// Agent hello.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Hello {
    pub protocol_version: u16,
    pub agent_id: String,
    pub agent_version: String,
    /// Roles the agent runs (`ssh`, `db`, `app`, …).
    pub services: Vec<String>,
    pub resources: Vec<ResourceAnnouncement>,
}

/// One resource an agent serves.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ResourceAnnouncement {
    /// `node`, `db`, `app`, `kube_cluster`, `windows_desktop`, …
    pub kind: String,
    pub name: String,
    pub labels: Vec<(String, String)>,
    /// Where the agent connects for it (`host:port`, URI), if it says.
    pub target: Option<String>,
}

/// Proxy's answer to [`Hello`].
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct HelloAck {
    pub proxy_id: String,
    pub heartbeat_interval_secs: u32,
}

/// A dial request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dial {
    pub session_id: [u8; 16],
    pub target: String,
    /// The end user's address, for the agent's audit events.
    pub client_addr: SocketAddr,
}

/// The outcome of a dial.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct DialResult {
    pub session_id: [u8; 16],
    pub ok: bool,
    pub error: Option<String>,
}

/// A drain notice.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct GoAway {
    pub reason: String,
    pub reconnect_after_ms: u32,
}

impl Frame {
    /// The frame's type byte.
    pub fn frame_type(&self) -> u8 {
        match self {
            Frame::Hello(_) => TYPE_HELLO,
            Frame::HelloAck(_) => TYPE_HELLO_ACK,
            Frame::Heartbeat { .. } => TYPE_HEARTBEAT,
            Frame::HeartbeatAck { .. } => TYPE_HEARTBEAT_ACK,
            Frame::Dial(_) => TYPE_DIAL,
            Frame::DialResult(_) => TYPE_DIAL_RESULT,
            Frame::GoAway(_) => TYPE_GO_AWAY,
            Frame::PeerDial(_) => TYPE_PEER_DIAL,
            Frame::PeerCancel(_) => TYPE_PEER_CANCEL,
        }
    }

    /// Append this frame to `out`. On error `out` is left as it was.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        let result = self.encode_unchecked(out, start);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    fn encode_unchecked(&self, out: &mut Vec<u8>, start: usize) -> Result<(), EncodeError> {
        out.extend_from_slice(&[0; LENGTH_PREFIX_LEN]);
        out.push(self.frame_type());
        match self {
            Frame::Hello(h) => {
                out.extend_from_slice(&h.protocol_version.to_be_bytes());
                put_str(out, "agent_id", &h.agent_id)?;
                put_str(out, "agent_version", &h.agent_version)?;
                put_count(out, "services", h.services.len())?;
                for s in &h.services {
                    put_str(out, "services[]", s)?;
                }
                put_count(out, "resources", h.resources.len())?;
                for r in &h.resources {
                    put_str(out, "resource.kind", &r.kind)?;
                    put_str(out, "resource.name", &r.name)?;
                    put_count(out, "resource.labels", r.labels.len())?;
                    for (k, v) in &r.labels {
                        put_str(out, "label.key", k)?;
                        put_str(out, "label.value", v)?;
                    }
                    put_option_str(out, "resource.target", r.target.as_deref())?;
                }
            }
            Frame::HelloAck(a) => {
                put_str(out, "proxy_id", &a.proxy_id)?;
                out.extend_from_slice(&a.heartbeat_interval_secs.to_be_bytes());
            }
            Frame::Heartbeat { seq } | Frame::HeartbeatAck { seq } => {
                out.extend_from_slice(&seq.to_be_bytes());
            }
            Frame::Dial(d) => put_dial(out, d)?,
            Frame::PeerDial(p) => {
                put_str(out, "agent_id", &p.agent_id)?;
                put_dial(out, &p.dial)?;
            }
            Frame::PeerCancel(c) => {
                out.extend_from_slice(&c.process_id.to_be_bytes());
                put_count(out, "key", c.key.len())?;
                out.extend_from_slice(&c.key);
            }
            Frame::DialResult(r) => {
                out.extend_from_slice(&r.session_id);
                out.push(u8::from(r.ok));
                put_option_str(out, "error", r.error.as_deref())?;
            }
            Frame::GoAway(g) => {
                put_str(out, "reason", &g.reason)?;
                out.extend_from_slice(&g.reconnect_after_ms.to_be_bytes());
            }
        }
        let len = out.len() - start - LENGTH_PREFIX_LEN;
        if len > MAX_FRAME_LEN {
            return Err(EncodeError::FrameTooLarge {
                len: len + LENGTH_PREFIX_LEN,
            });
        }
        let prefix = u32::try_from(len)
            .map_err(|_| EncodeError::FrameTooLarge { len })?
            .to_be_bytes();
        if let Some(slot) = out.get_mut(start..start + LENGTH_PREFIX_LEN) {
            slot.copy_from_slice(&prefix);
        }
        Ok(())
    }

    /// Decode one frame from the bytes received so far.
    ///
    /// Returns `Ok(None)` until the whole frame is there, then the frame and
    /// its size (prefix included). The length is checked as soon as it arrives.
    pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, TunnelError> {
        let Some(len) = array_at::<LENGTH_PREFIX_LEN>(buf, 0).map(u32::from_be_bytes) else {
            return Ok(None);
        };
        if len as usize > MAX_FRAME_LEN {
            return Err(TunnelError::Oversized { len });
        }
        if len == 0 {
            return Err(TunnelError::Malformed {
                what: "empty frame (no type byte)",
            });
        }
        let frame_len = LENGTH_PREFIX_LEN + len as usize;
        let Some(body) = buf.get(LENGTH_PREFIX_LEN..frame_len) else {
            return Ok(None);
        };
        let Some((&frame_type, payload)) = body.split_first() else {
            return Ok(None);
        };
        let mut r = Reader::new(payload);
        let frame = match frame_type {
            TYPE_HELLO => Frame::Hello(decode_hello(&mut r)?),
            TYPE_HELLO_ACK => Frame::HelloAck(HelloAck {
                proxy_id: get_str(&mut r, "proxy_id")?,
                heartbeat_interval_secs: get_u32(&mut r, "heartbeat_interval_secs")?,
            }),
            TYPE_HEARTBEAT => Frame::Heartbeat {
                seq: get_u64(&mut r, "seq")?,
            },
            TYPE_HEARTBEAT_ACK => Frame::HeartbeatAck {
                seq: get_u64(&mut r, "seq")?,
            },
            TYPE_DIAL => Frame::Dial(get_dial(&mut r)?),
            TYPE_PEER_DIAL => Frame::PeerDial(PeerDial {
                agent_id: get_str(&mut r, "agent_id")?,
                dial: get_dial(&mut r)?,
            }),
            TYPE_PEER_CANCEL => Frame::PeerCancel(PeerCancel {
                process_id: get_u32(&mut r, "process_id")?,
                key: get_bytes(&mut r, "key")?,
            }),
            TYPE_DIAL_RESULT => Frame::DialResult(DialResult {
                session_id: get_session_id(&mut r)?,
                ok: get_bool(&mut r, "ok")?,
                error: get_option_str(&mut r, "error")?,
            }),
            TYPE_GO_AWAY => Frame::GoAway(GoAway {
                reason: get_str(&mut r, "reason")?,
                reconnect_after_ms: get_u32(&mut r, "reconnect_after_ms")?,
            }),
            frame_type => {
                return Err(TunnelError::UnknownFrameType {
                    frame_type,
                    frame_len,
                });
            }
        };
        if !r.is_empty() {
            return Err(TunnelError::Malformed {
                what: "trailing bytes after the last field",
            });
        }
        Ok(Some((frame, frame_len)))
    }
}

fn get_dial(r: &mut Reader<'_>) -> Result<Dial, TunnelError> {
    Ok(Dial {
        session_id: get_session_id(r)?,
        target: get_str(r, "target")?,
        client_addr: get_socket_addr(r)?,
    })
}

fn put_dial(out: &mut Vec<u8>, d: &Dial) -> Result<(), EncodeError> {
    out.extend_from_slice(&d.session_id);
    put_str(out, "target", &d.target)?;
    put_socket_addr(out, d.client_addr);
    Ok(())
}

fn decode_hello(r: &mut Reader<'_>) -> Result<Hello, TunnelError> {
    let protocol_version = get_u16(r, "protocol_version")?;
    let agent_id = get_str(r, "agent_id")?;
    let agent_version = get_str(r, "agent_version")?;
    // Every list entry takes at least 2 bytes: cap the allocation by what is there.
    let count = get_u16(r, "services")?;
    let mut services = Vec::with_capacity(capacity(count, r, 2));
    for _ in 0..count {
        services.push(get_str(r, "services[]")?);
    }
    let count = get_u16(r, "resources")?;
    let mut resources = Vec::with_capacity(capacity(count, r, 7));
    for _ in 0..count {
        let kind = get_str(r, "resource.kind")?;
        let name = get_str(r, "resource.name")?;
        let label_count = get_u16(r, "resource.labels")?;
        let mut labels = Vec::with_capacity(capacity(label_count, r, 4));
        for _ in 0..label_count {
            labels.push((get_str(r, "label.key")?, get_str(r, "label.value")?));
        }
        let target = get_option_str(r, "resource.target")?;
        resources.push(ResourceAnnouncement {
            kind,
            name,
            labels,
            target,
        });
    }
    Ok(Hello {
        protocol_version,
        agent_id,
        agent_version,
        services,
        resources,
    })
}

fn capacity(count: u16, r: &Reader<'_>, min_entry_len: usize) -> usize {
    usize::from(count).min(r.remaining() / min_entry_len)
}

fn put_count(out: &mut Vec<u8>, what: &'static str, len: usize) -> Result<(), EncodeError> {
    let len = u16::try_from(len).map_err(|_| EncodeError::FieldTooLong {
        what,
        len,
        limit: usize::from(u16::MAX),
    })?;
    out.extend_from_slice(&len.to_be_bytes());
    Ok(())
}

fn put_str(out: &mut Vec<u8>, what: &'static str, s: &str) -> Result<(), EncodeError> {
    put_count(out, what, s.len())?;
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn put_option_str(
    out: &mut Vec<u8>,
    what: &'static str,
    s: Option<&str>,
) -> Result<(), EncodeError> {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_str(out, what, s)?;
        }
    }
    Ok(())
}

fn put_socket_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(a) => {
            out.push(4);
            out.extend_from_slice(&a.ip().octets());
            out.extend_from_slice(&a.port().to_be_bytes());
        }
        SocketAddr::V6(a) => {
            out.push(6);
            out.extend_from_slice(&a.ip().octets());
            out.extend_from_slice(&a.port().to_be_bytes());
            out.extend_from_slice(&a.flowinfo().to_be_bytes());
            out.extend_from_slice(&a.scope_id().to_be_bytes());
        }
    }
}

fn truncated(what: &'static str) -> TunnelError {
    TunnelError::Truncated { what }
}

fn get_u16(r: &mut Reader<'_>, what: &'static str) -> Result<u16, TunnelError> {
    r.u16().ok_or(truncated(what))
}

fn get_u32(r: &mut Reader<'_>, what: &'static str) -> Result<u32, TunnelError> {
    r.u32().ok_or(truncated(what))
}

fn get_u64(r: &mut Reader<'_>, what: &'static str) -> Result<u64, TunnelError> {
    r.u64().ok_or(truncated(what))
}

fn get_bool(r: &mut Reader<'_>, what: &'static str) -> Result<bool, TunnelError> {
    match r.u8().ok_or(truncated(what))? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(TunnelError::Malformed {
            what: "boolean is neither 0 nor 1",
        }),
    }
}

fn get_session_id(r: &mut Reader<'_>) -> Result<[u8; 16], TunnelError> {
    r.array().ok_or(truncated("session_id"))
}

fn get_str(r: &mut Reader<'_>, what: &'static str) -> Result<String, TunnelError> {
    let len = get_u16(r, what)?;
    let bytes = r.take(usize::from(len)).ok_or(truncated(what))?;
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| TunnelError::InvalidUtf8 { what })
}

fn get_bytes(r: &mut Reader<'_>, what: &'static str) -> Result<Vec<u8>, TunnelError> {
    let len = get_u16(r, what)?;
    Ok(r.take(usize::from(len)).ok_or(truncated(what))?.to_vec())
}

fn get_option_str(r: &mut Reader<'_>, what: &'static str) -> Result<Option<String>, TunnelError> {
    match r.u8().ok_or(truncated(what))? {
        0 => Ok(None),
        1 => get_str(r, what).map(Some),
        _ => Err(TunnelError::Malformed {
            what: "option tag is neither 0 nor 1",
        }),
    }
}

fn get_socket_addr(r: &mut Reader<'_>) -> Result<SocketAddr, TunnelError> {
    const WHAT: &str = "client_addr";
    match r.u8().ok_or(truncated(WHAT))? {
        4 => {
            let ip = r.array::<4>().ok_or(truncated(WHAT))?;
            let port = r.u16().ok_or(truncated(WHAT))?;
            Ok(SocketAddrV4::new(Ipv4Addr::from(ip), port).into())
        }
        6 => {
            let ip = r.array::<16>().ok_or(truncated(WHAT))?;
            let port = r.u16().ok_or(truncated(WHAT))?;
            let flowinfo = r.u32().ok_or(truncated(WHAT))?;
            let scope_id = r.u32().ok_or(truncated(WHAT))?;
            Ok(SocketAddrV6::new(Ipv6Addr::from(ip), port, flowinfo, scope_id).into())
        }
        _ => Err(TunnelError::Malformed {
            what: "client_addr family is neither 4 nor 6",
        }),
    }
}
