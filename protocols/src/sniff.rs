//! First-bytes classifier for Hop's multiplexed port.
//!
//! This module owns the decision "which protocol is this connection speaking",
//! made from the bytes peeked so far and nothing else. It never consumes,
//! buffers or waits: the caller peeks, calls [`sniff`], and peeks again on
//! [`Sniff::NeedMore`] (up to [`MAX_SNIFF_LEN`] bytes, under its own first-byte
//! deadline). It must never look further than it needs to, and it never
//! validates a whole message: once the protocol is known the bytes go to that
//! protocol's parser (for example [`crate::tls::parse_client_hello`]).
//!
//! | protocol | decided by | bytes |
//! |---|---|---|
//! | [`Protocol::Tls`] | handshake record `0x16 0x03 0x00..=0x04` | 3 |
//! | [`Protocol::Ssh`] | `SSH-` | 4 |
//! | [`Protocol::ProxyV1`] | `PROXY ` | 6 |
//! | [`Protocol::ProxyV2`] | `\r\n\r\n\0\r\nQUIT\n` | 12 |
//! | [`Protocol::Http1`] | a method token and a space (`GET `, `OPTIONS `…) | 4–8 |
//! | [`Protocol::PostgresSsl`] | length 8, code 80877103 | 8 |
//! | [`Protocol::PostgresGss`] | length 8, code 80877104 | 8 |
//! | [`Protocol::PostgresStartup`] | length 9..=10240 and protocol 3.x, or a CancelRequest | 8 |
//! | [`Protocol::Unknown`] | as soon as none of the above can match | 1–8 |

use crate::postgres;

/// The most bytes [`sniff`] ever needs: with this many bytes it always decides.
pub const MAX_SNIFF_LEN: usize = 12;

/// What a connection's first bytes say it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// A TLS handshake record (normally a ClientHello).
    Tls,
    /// An SSH identification line (`SSH-…`), e.g. `ssh -J`.
    Ssh,
    /// A PostgreSQL SSLRequest: answer `S` and continue with TLS.
    PostgresSsl,
    /// A PostgreSQL GSSENCRequest: Hop answers `N`.
    PostgresGss,
    /// A plaintext PostgreSQL StartupMessage (protocol 3.x) or CancelRequest.
    PostgresStartup,
    /// A plaintext HTTP/1.x request (redirected to https).
    Http1,
    /// A PROXY protocol v1 (text) header.
    ProxyV1,
    /// A PROXY protocol v2 (binary) header.
    ProxyV2,
    /// None of the above: close, count, log one line.
    Unknown,
}

impl Protocol {
    /// A short stable name for logs and metric labels.
    pub const fn name(self) -> &'static str {
        match self {
            Protocol::Tls => "tls",
            Protocol::Ssh => "ssh",
            Protocol::PostgresSsl => "postgres_ssl",
            Protocol::PostgresGss => "postgres_gss",
            Protocol::PostgresStartup => "postgres_startup",
            Protocol::Http1 => "http1",
            Protocol::ProxyV1 => "proxy_v1",
            Protocol::ProxyV2 => "proxy_v2",
            Protocol::Unknown => "unknown",
        }
    }
}

/// The classifier's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sniff {
    /// The bytes so far are a strict prefix of at least one known protocol's
    /// signature: peek more.
    NeedMore,
    /// Decided. `decided_after` is the number of leading bytes that decided it
    /// (always `<= buf.len()` and `<= MAX_SNIFF_LEN`); the bytes are not
    /// consumed and belong to the protocol's own parser.
    Detected {
        protocol: Protocol,
        decided_after: usize,
    },
}

/// Per-signature verdict.
#[derive(Clone, Copy)]
enum Verdict {
    Need,
    No(usize),
    Yes(Protocol, usize),
}

const HTTP_METHODS: [&[u8]; 9] = [
    b"GET ",
    b"HEAD ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"CONNECT ",
    b"OPTIONS ",
    b"TRACE ",
    b"PATCH ",
];
const PROXY_V1_SIGNATURE: &[u8] = b"PROXY ";

/// Classify a connection from the bytes peeked so far.
///
/// ```
/// use hop_protocols::sniff::{sniff, Protocol, Sniff};
/// assert_eq!(sniff(b"SS"), Sniff::NeedMore);
/// assert_eq!(
///     sniff(b"SSH-2.0-OpenSSH_9.6\r\n"),
///     Sniff::Detected { protocol: Protocol::Ssh, decided_after: 4 }
/// );
/// ```
pub fn sniff(buf: &[u8]) -> Sniff {
    let verdicts = [
        tls(buf),
        literal(buf, b"SSH-", Protocol::Ssh),
        literal(buf, PROXY_V1_SIGNATURE, Protocol::ProxyV1),
        literal(buf, &crate::proxy_protocol::V2_SIGNATURE, Protocol::ProxyV2),
        http1(buf),
        postgres(buf),
    ];
    let mut need = false;
    let mut ruled_out_after = 0;
    for v in verdicts {
        match v {
            Verdict::Yes(protocol, decided_after) => {
                return Sniff::Detected {
                    protocol,
                    decided_after,
                };
            }
            Verdict::Need => need = true,
            Verdict::No(n) => ruled_out_after = ruled_out_after.max(n),
        }
    }
    if need {
        Sniff::NeedMore
    } else {
        Sniff::Detected {
            protocol: Protocol::Unknown,
            decided_after: ruled_out_after,
        }
    }
}

/// `buf` against a fixed signature.
fn literal(buf: &[u8], signature: &[u8], protocol: Protocol) -> Verdict {
    for (i, (&got, &want)) in buf.iter().zip(signature).enumerate() {
        if got != want {
            return Verdict::No(i + 1);
        }
    }
    if buf.len() >= signature.len() {
        Verdict::Yes(protocol, signature.len())
    } else {
        Verdict::Need
    }
}

fn tls(buf: &[u8]) -> Verdict {
    // ContentType handshake(22), ProtocolVersion major 3, minor 0 (SSL 3.0,
    // still used as the record version by some clients) ..= 4.
    match *buf {
        [] => Verdict::Need,
        [b, ..] if b != 0x16 => Verdict::No(1),
        [_] => Verdict::Need,
        [_, b, ..] if b != 0x03 => Verdict::No(2),
        [_, _] => Verdict::Need,
        [_, _, minor, ..] if minor > 0x04 => Verdict::No(3),
        [_, _, _, ..] => Verdict::Yes(Protocol::Tls, 3),
    }
}

fn http1(buf: &[u8]) -> Verdict {
    let mut need = false;
    let mut ruled_out_after = 0;
    for method in HTTP_METHODS {
        match literal(buf, method, Protocol::Http1) {
            yes @ Verdict::Yes(..) => return yes,
            Verdict::Need => need = true,
            Verdict::No(n) => ruled_out_after = ruled_out_after.max(n),
        }
    }
    if need {
        Verdict::Need
    } else {
        Verdict::No(ruled_out_after)
    }
}

fn postgres(buf: &[u8]) -> Verdict {
    // Int32 length (8..=MAX_STARTUP_LEN, so the two high bytes are zero),
    // then Int32 code: a request code (1234 << 16 | 5678..) or protocol 3.x.
    let max = postgres::MAX_STARTUP_LEN;
    let max_hi = u8::try_from(max >> 8).unwrap_or(u8::MAX);
    match *buf {
        [] => return Verdict::Need,
        [b, ..] if b != 0 => return Verdict::No(1),
        [_] => return Verdict::Need,
        [_, b, ..] if b != 0 => return Verdict::No(2),
        [_, _] => return Verdict::Need,
        [_, _, hi, ..] if hi > max_hi => return Verdict::No(3),
        _ => {}
    }
    let Some(len) = crate::reader::array_at::<4>(buf, 0).map(u32::from_be_bytes) else {
        return Verdict::Need;
    };
    let len = len as usize;
    if !(8..=max).contains(&len) {
        return Verdict::No(4);
    }
    // Reject on the code's major half as soon as it is there.
    let Some(major) = crate::reader::array_at::<2>(buf, 4).map(u16::from_be_bytes) else {
        return Verdict::Need;
    };
    if major != 3 && major != postgres::REQUEST_CODE_MAJOR {
        return Verdict::No(6);
    }
    let Some(code) = crate::reader::array_at::<4>(buf, 4).map(u32::from_be_bytes) else {
        return Verdict::Need;
    };
    let protocol = match code {
        postgres::SSL_REQUEST_CODE if len == 8 => Protocol::PostgresSsl,
        postgres::GSSENC_REQUEST_CODE if len == 8 => Protocol::PostgresGss,
        postgres::CANCEL_REQUEST_CODE if postgres::CANCEL_REQUEST_LEN.contains(&len) => {
            Protocol::PostgresStartup
        }
        c if c >> 16 == 3 && len > 8 => Protocol::PostgresStartup,
        _ => return Verdict::No(8),
    };
    Verdict::Yes(protocol, 8)
}
