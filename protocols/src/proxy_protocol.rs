//! HAProxy PROXY protocol, versions 1 (text) and 2 (binary).
//!
//! This module owns decoding the header a trusted load balancer puts in front
//! of a connection to say who the real client was (haproxy
//! `doc/proxy-protocol.txt`). It never decides whether to trust it: the proxy
//! only calls [`parse`] on connections from configured load-balancer
//! addresses, and classifies the bytes after the header again.
//!
//! - v1: `PROXY TCP4|TCP6 src dst sport dport\r\n` or `PROXY UNKNOWN…\r\n`,
//!   at most [`V1_MAX_LEN`] bytes, single spaces, canonical ports.
//! - v2: the 12-byte [`V2_SIGNATURE`], version 2, command LOCAL or PROXY,
//!   family AF_UNSPEC/AF_INET/AF_INET6/AF_UNIX over STREAM or DGRAM, a 16-bit
//!   length (at most [`V2_MAX_PAYLOAD_LEN`] here), the addresses and then TLVs,
//!   which must exactly fill the rest; a `PP2_TYPE_CRC32C` TLV, when present,
//!   must match the header's CRC32c (checksum field zeroed). For LOCAL (health checks) and
//!   AF_UNSPEC the address block is skipped as the specification requires.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::reader::{Reader, array_at};

/// The v2 signature.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Longest v1 header, CR LF included.
pub const V1_MAX_LEN: usize = 107;
/// Longest v2 payload (addresses + TLVs) accepted; the format allows 65535.
pub const V2_MAX_PAYLOAD_LEN: usize = 8 * 1024;
const V1_PREFIX: &[u8] = b"PROXY ";
const V2_HEADER_LEN: usize = 16;

/// Well-known v2 TLV types.
pub mod tlv {
    pub const ALPN: u8 = 0x01;
    pub const AUTHORITY: u8 = 0x02;
    pub const CRC32C: u8 = 0x03;
    pub const NOOP: u8 = 0x04;
    pub const UNIQUE_ID: u8 = 0x05;
    pub const SSL: u8 = 0x20;
    pub const NETNS: u8 = 0x30;
}

/// Why the bytes are not an acceptable PROXY header. Always the peer's fault
/// (or the load balancer's).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// The bytes start with neither signature.
    #[error("not a PROXY protocol header")]
    NotProxyProtocol,
    /// A v1 line with no CR LF within [`V1_MAX_LEN`] bytes, or a v2 length
    /// over [`V2_MAX_PAYLOAD_LEN`].
    #[error("PROXY header length {len} exceeds the limit of {limit}")]
    Oversized { len: usize, limit: usize },
    /// A v2 signature with a version other than 2.
    #[error("unsupported PROXY protocol v2 version nibble {version}")]
    UnsupportedVersion { version: u8 },
    /// A v2 `PP2_TYPE_CRC32C` TLV that does not match the header.
    #[error("PROXY v2 CRC32c mismatch (header says {expected:#010x}, computed {computed:#010x})")]
    ChecksumMismatch { expected: u32, computed: u32 },
    /// Bytes that break the grammar; `what` says how.
    #[error("malformed PROXY header: {what}")]
    Malformed { what: &'static str },
}

fn malformed(what: &'static str) -> ProxyError {
    ProxyError::Malformed { what }
}

/// Which format the header used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// v2 command (v1 is always [`Command::Proxy`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Sent by the load balancer itself (health check): use the real endpoints.
    Local,
    /// Relayed on behalf of a client.
    Proxy,
}

/// Transport protocol of the proxied connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Unspecified,
    Stream,
    Datagram,
}

/// The proxied connection's endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addresses<'a> {
    /// LOCAL, v1 `UNKNOWN` or v2 AF_UNSPEC: use the real connection's endpoints.
    Unspecified,
    Inet {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// AF_UNIX paths, up to their first NUL.
    Unix {
        source: &'a [u8],
        destination: &'a [u8],
    },
}

/// A parsed PROXY header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxyHeader<'a> {
    pub version: Version,
    pub command: Command,
    pub transport: Transport,
    pub addresses: Addresses<'a>,
    /// Validated TLV block (empty for v1).
    tlvs: &'a [u8],
}

impl<'a> ProxyHeader<'a> {
    /// The client's address, when the header carries an IP one.
    pub fn source(&self) -> Option<SocketAddr> {
        match self.addresses {
            Addresses::Inet { source, .. } => Some(source),
            _ => None,
        }
    }

    /// The address the client connected to, when the header carries an IP one.
    pub fn destination(&self) -> Option<SocketAddr> {
        match self.addresses {
            Addresses::Inet { destination, .. } => Some(destination),
            _ => None,
        }
    }

    /// The v2 TLVs in order.
    pub fn tlvs(&self) -> Tlvs<'a> {
        Tlvs { rest: self.tlvs }
    }

    /// The first TLV of type `kind`.
    pub fn tlv(&self, kind: u8) -> Option<&'a [u8]> {
        self.tlvs().find(|t| t.kind == kind).map(|t| t.value)
    }
}

/// One v2 type-length-value entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tlv<'a> {
    pub kind: u8,
    pub value: &'a [u8],
}

/// Iterator over v2 TLVs.
#[derive(Clone, Debug)]
pub struct Tlvs<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Tlvs<'a> {
    type Item = Tlv<'a>;

    fn next(&mut self) -> Option<Tlv<'a>> {
        let mut r = Reader::new(self.rest);
        let kind = r.u8()?;
        let len = r.u16()?;
        let value = r.take(usize::from(len))?;
        self.rest = r.rest();
        Some(Tlv { kind, value })
    }
}

/// Parse a PROXY v1 or v2 header from the bytes received so far.
///
/// Returns `Ok(None)` until the header is complete, then the header and its
/// length; the connection's own bytes follow it. Bytes that cannot start
/// either version give [`ProxyError::NotProxyProtocol`] as soon as they
/// differ from both signatures.
pub fn parse(buf: &[u8]) -> Result<Option<(ProxyHeader<'_>, usize)>, ProxyError> {
    if is_prefix_of(buf, V1_PREFIX) {
        parse_v1(buf)
    } else if is_prefix_of(buf, &V2_SIGNATURE) {
        parse_v2(buf)
    } else {
        Err(ProxyError::NotProxyProtocol)
    }
}

/// Whether `buf` and `signature` agree on their common length.
fn is_prefix_of(buf: &[u8], signature: &[u8]) -> bool {
    buf.iter().zip(signature).all(|(a, b)| a == b)
}

fn parse_v1(buf: &[u8]) -> Result<Option<(ProxyHeader<'_>, usize)>, ProxyError> {
    let window = buf.get(..V1_MAX_LEN).unwrap_or(buf);
    let Some(lf) = crate::reader::find_byte(window, b'\n') else {
        if buf.len() >= V1_MAX_LEN {
            return Err(ProxyError::Oversized {
                len: buf.len(),
                limit: V1_MAX_LEN,
            });
        }
        return Ok(None);
    };
    let line = window
        .get(..lf)
        .and_then(|l| l.strip_suffix(b"\r"))
        .ok_or(malformed("v1 line does not end in CR LF"))?;
    let len = lf + 1;
    let rest = line.get(V1_PREFIX.len()..).unwrap_or_default();
    if !rest.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        return Err(malformed("v1 line has a non-printable byte"));
    }
    if rest == b"UNKNOWN" || rest.starts_with(b"UNKNOWN ") {
        return Ok(Some((
            ProxyHeader {
                version: Version::V1,
                command: Command::Proxy,
                transport: Transport::Unspecified,
                addresses: Addresses::Unspecified,
                tlvs: &[],
            },
            len,
        )));
    }
    let text = std::str::from_utf8(rest).map_err(|_| malformed("v1 line is not ASCII"))?;
    let mut fields = text.split(' ');
    let (Some(family), Some(src), Some(dst), Some(sport), Some(dport), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(malformed(
            "v1 line is not 'PROXY family src dst sport dport'",
        ));
    };
    let (src, dst): (IpAddr, IpAddr) = match family {
        "TCP4" => (
            src.parse::<Ipv4Addr>()
                .map_err(|_| malformed("v1 TCP4 source is not an IPv4 address"))?
                .into(),
            dst.parse::<Ipv4Addr>()
                .map_err(|_| malformed("v1 TCP4 destination is not an IPv4 address"))?
                .into(),
        ),
        "TCP6" => (
            src.parse::<Ipv6Addr>()
                .map_err(|_| malformed("v1 TCP6 source is not an IPv6 address"))?
                .into(),
            dst.parse::<Ipv6Addr>()
                .map_err(|_| malformed("v1 TCP6 destination is not an IPv6 address"))?
                .into(),
        ),
        _ => return Err(malformed("v1 family is not TCP4, TCP6 or UNKNOWN")),
    };
    Ok(Some((
        ProxyHeader {
            version: Version::V1,
            command: Command::Proxy,
            transport: Transport::Stream,
            addresses: Addresses::Inet {
                source: SocketAddr::new(src, parse_port(sport)?),
                destination: SocketAddr::new(dst, parse_port(dport)?),
            },
            tlvs: &[],
        },
        len,
    )))
}

/// A decimal port 0..=65535 without leading zeros.
fn parse_port(s: &str) -> Result<u16, ProxyError> {
    let canonical = !s.is_empty()
        && s.len() <= 5
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'));
    if !canonical {
        return Err(malformed("v1 port is not a canonical decimal number"));
    }
    s.parse().map_err(|_| malformed("v1 port is over 65535"))
}

fn parse_v2(buf: &[u8]) -> Result<Option<(ProxyHeader<'_>, usize)>, ProxyError> {
    // Check the version/command byte as soon as it arrives.
    let Some(ver_cmd) = buf.get(V2_SIGNATURE.len()).copied() else {
        return Ok(None);
    };
    let version = ver_cmd >> 4;
    if version != 2 {
        return Err(ProxyError::UnsupportedVersion { version });
    }
    let command = match ver_cmd & 0x0f {
        0 => Command::Local,
        1 => Command::Proxy,
        _ => return Err(malformed("v2 command is neither LOCAL nor PROXY")),
    };
    let Some([_, family, len_hi, len_lo]) = array_at::<4>(buf, V2_SIGNATURE.len()) else {
        return Ok(None);
    };
    let len = usize::from(u16::from_be_bytes([len_hi, len_lo]));
    if len > V2_MAX_PAYLOAD_LEN {
        return Err(ProxyError::Oversized {
            len: V2_HEADER_LEN + len,
            limit: V2_HEADER_LEN + V2_MAX_PAYLOAD_LEN,
        });
    }
    let transport = match family & 0x0f {
        0 => Transport::Unspecified,
        1 => Transport::Stream,
        2 => Transport::Datagram,
        _ => Transport::Unspecified,
    };
    // LOCAL ignores the family entirely; PROXY must use a defined pair.
    let address_len = match (command, family) {
        (Command::Local, _) | (Command::Proxy, 0x00) => None,
        (Command::Proxy, 0x11 | 0x12) => Some(12),
        (Command::Proxy, 0x21 | 0x22) => Some(36),
        (Command::Proxy, 0x31 | 0x32) => Some(216),
        (Command::Proxy, _) => return Err(malformed("v2 address family/transport is undefined")),
    };
    if let Some(address_len) = address_len
        && len < address_len
    {
        return Err(malformed("v2 length is shorter than its address block"));
    }
    let total = V2_HEADER_LEN + len;
    let Some(payload) = buf.get(V2_HEADER_LEN..total) else {
        return Ok(None);
    };
    let header = |transport, addresses, tlvs| ProxyHeader {
        version: Version::V2,
        command,
        transport,
        addresses,
        tlvs,
    };
    let Some(address_len) = address_len else {
        let transport = if command == Command::Local {
            Transport::Unspecified
        } else {
            transport
        };
        return Ok(Some((
            header(transport, Addresses::Unspecified, &[]),
            total,
        )));
    };
    let mut r = Reader::new(payload);
    let mut a = r
        .sub(address_len)
        .ok_or(malformed("v2 address block truncated"))?;
    let addresses = match family >> 4 {
        1 => {
            let (src, dst) = (a.array::<4>(), a.array::<4>());
            let (sport, dport) = (a.u16(), a.u16());
            let (Some(src), Some(dst), Some(sport), Some(dport)) = (src, dst, sport, dport) else {
                return Err(malformed("v2 IPv4 address block truncated"));
            };
            Addresses::Inet {
                source: SocketAddr::new(Ipv4Addr::from(src).into(), sport),
                destination: SocketAddr::new(Ipv4Addr::from(dst).into(), dport),
            }
        }
        2 => {
            let (src, dst) = (a.array::<16>(), a.array::<16>());
            let (sport, dport) = (a.u16(), a.u16());
            let (Some(src), Some(dst), Some(sport), Some(dport)) = (src, dst, sport, dport) else {
                return Err(malformed("v2 IPv6 address block truncated"));
            };
            Addresses::Inet {
                source: SocketAddr::new(Ipv6Addr::from(src).into(), sport),
                destination: SocketAddr::new(Ipv6Addr::from(dst).into(), dport),
            }
        }
        _ => {
            let (Some(src), Some(dst)) = (a.take(108), a.take(108)) else {
                return Err(malformed("v2 unix address block truncated"));
            };
            Addresses::Unix {
                source: until_nul(src),
                destination: until_nul(dst),
            }
        }
    };
    let tlvs_start = V2_HEADER_LEN + r.pos();
    let tlvs = r.rest();
    check_tlvs(tlvs)?;
    let header = header(transport, addresses, tlvs);
    check_crc32c(&header, buf.get(..total).unwrap_or_default(), tlvs_start)?;
    Ok(Some((header, total)))
}

fn until_nul(path: &[u8]) -> &[u8] {
    let end = crate::reader::find_byte(path, 0).unwrap_or(path.len());
    path.get(..end).unwrap_or(path)
}

/// Verify a `PP2_TYPE_CRC32C` TLV, if any: CRC32c of the whole header with
/// the checksum's own four bytes taken as zero.
fn check_crc32c(
    header: &ProxyHeader<'_>,
    bytes: &[u8],
    tlvs_start: usize,
) -> Result<(), ProxyError> {
    let mut offset = tlvs_start;
    for t in header.tlvs() {
        let value_at = offset + 3;
        offset = value_at + t.value.len();
        if t.kind != tlv::CRC32C {
            continue;
        }
        let expected = <[u8; 4]>::try_from(t.value)
            .map(u32::from_be_bytes)
            .map_err(|_| malformed("v2 CRC32C TLV is not 4 bytes"))?;
        let before = bytes.get(..value_at).unwrap_or_default();
        let after = bytes.get(value_at + 4..).unwrap_or_default();
        let computed = !crc32c_update(crc32c_update(crc32c_update(!0, before), &[0; 4]), after);
        if computed != expected {
            return Err(ProxyError::ChecksumMismatch { expected, computed });
        }
        return Ok(());
    }
    Ok(())
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), bitwise: headers
/// are small and this runs once per connection.
fn crc32c_update(mut crc: u32, bytes: &[u8]) -> u32 {
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0x82F6_3B78 & (crc & 1).wrapping_neg());
        }
    }
    crc
}

/// CRC-32C of `bytes` (for building test headers).
pub fn crc32c(bytes: &[u8]) -> u32 {
    !crc32c_update(!0, bytes)
}

fn check_tlvs(block: &[u8]) -> Result<(), ProxyError> {
    let mut r = Reader::new(block);
    while !r.is_empty() {
        let (Some(_kind), Some(len)) = (r.u8(), r.u16()) else {
            return Err(malformed("v2 TLV header truncated"));
        };
        r.take(usize::from(len))
            .ok_or(malformed("v2 TLV value overruns the header"))?;
    }
    Ok(())
}
