//! What to do with a new connection, decided from the bytes peeked so far.
//!
//! This module owns the routing table of the one port (DESIGN.md §4) as a pure function over the
//! peeked bytes, the peer's address and the trusted load-balancer networks: no IO, so every case
//! is a unit test. The worker does what the [`Decision`] says.

use std::net::{IpAddr, SocketAddr};

use hop_protocols::sniff::{Protocol, Sniff, sniff};
use hop_protocols::{http1, proxy_protocol, tls};

use hop_config::Cidr;

/// Why a connection was closed without being served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// The first bytes match no protocol the port speaks.
    UnknownProtocol,
    /// A TLS record that is not a well-formed ClientHello.
    MalformedTls,
    /// An HTTP/1 request head that does not parse.
    MalformedHttp,
    /// A PROXY header that does not parse.
    MalformedProxy,
    /// A PROXY header from a peer outside `proxy_protocol.trusted_cidrs`.
    ProxyUntrusted,
    /// A second PROXY header after the first.
    ProxyRepeated,
    /// A protocol whose route is not served by this build or this process.
    RouteUnavailable,
    /// Nothing classifiable arrived before `first_byte_timeout`.
    FirstByteTimeout,
    /// The peer closed before sending anything classifiable.
    ClosedEarly,
    /// `max_connections` reached.
    OverConnectionLimit,
    /// `max_connections_per_ip` reached.
    OverPerIpLimit,
    /// The control plane's queue was full.
    ControlPlaneBusy,
    /// The source's budget of unauthenticated connections was full
    /// (`max_preauth_connections_per_ip`, `max_preauth_connections_percent`).
    OverPreAuthLimit,
    /// An authenticated agent's host id already held `max_connections_per_ip` connections.
    OverPerHostLimit,
}

impl RejectReason {
    pub const ALL: [RejectReason; 14] = [
        Self::UnknownProtocol,
        Self::MalformedTls,
        Self::MalformedHttp,
        Self::MalformedProxy,
        Self::ProxyUntrusted,
        Self::ProxyRepeated,
        Self::RouteUnavailable,
        Self::FirstByteTimeout,
        Self::ClosedEarly,
        Self::OverConnectionLimit,
        Self::OverPerIpLimit,
        Self::ControlPlaneBusy,
        Self::OverPreAuthLimit,
        Self::OverPerHostLimit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::UnknownProtocol => "unknown_protocol",
            Self::MalformedTls => "malformed_tls",
            Self::MalformedHttp => "malformed_http",
            Self::MalformedProxy => "malformed_proxy",
            Self::ProxyUntrusted => "proxy_untrusted",
            Self::ProxyRepeated => "proxy_repeated",
            Self::RouteUnavailable => "route_unavailable",
            Self::FirstByteTimeout => "first_byte_timeout",
            Self::ClosedEarly => "closed_early",
            Self::OverConnectionLimit => "over_connection_limit",
            Self::OverPerIpLimit => "over_per_ip_limit",
            Self::ControlPlaneBusy => "control_plane_busy",
            Self::OverPreAuthLimit => "over_pre_auth_limit",
            Self::OverPerHostLimit => "over_per_host_limit",
        }
    }

    pub fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// The routes a classified connection can take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Peek again when more bytes arrive.
    NeedMore,
    /// TLS for the web UI and the Auth API (ALPN `h2`, `http/1.1`, `hop-auth`, or none): hand the
    /// untouched socket to the control plane, which terminates TLS.
    ControlPlane {
        alpn: Option<String>,
        sni: Option<String>,
    },
    /// A PostgreSQL SSLRequest (its 8 bytes): answer `S`, terminate TLS on the worker, and hand
    /// the connection to the control plane's PostgreSQL route.
    PostgresTls,
    /// Any other PostgreSQL start (GSSENCRequest, plaintext StartupMessage or CancelRequest):
    /// hand the untouched socket to the control plane, which answers it.
    Postgres,
    /// An SSH client (the proxy as a jump host): hand the untouched socket to the control plane.
    Ssh,
    /// Plain HTTP: read `head_len` bytes and answer with a redirect to `location`.
    RedirectHttps { location: String, head_len: usize },
    /// Plain HTTP that cannot be redirected (no usable Host): answer 400 after `head_len` bytes.
    BadHttp { head_len: usize },
    /// A trusted PROXY header: consume `len` bytes, take `client` as the peer, classify again.
    ProxyHeader {
        client: Option<SocketAddr>,
        len: usize,
    },
    /// Close and count.
    Reject(RejectReason),
}

/// Characters allowed in a Host header that is echoed into a Location header.
fn safe_host(h: &[u8]) -> Option<&str> {
    let ok = !h.is_empty()
        && h.len() <= 261
        && h.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b':' | b'[' | b']'));
    if ok {
        std::str::from_utf8(h).ok()
    } else {
        None
    }
}

/// Decides from the bytes peeked so far. `proxy_seen` is true once a PROXY header was consumed.
pub fn decide(buf: &[u8], peer: IpAddr, trusted: &[Cidr], proxy_seen: bool) -> Decision {
    let protocol = match sniff(buf) {
        Sniff::NeedMore => return Decision::NeedMore,
        Sniff::Detected { protocol, .. } => protocol,
    };
    match protocol {
        Protocol::Tls => match tls::parse_client_hello(buf) {
            Ok(None) => Decision::NeedMore,
            Ok(Some((hello, _))) => {
                let alpn = hello
                    .alpn_protocols()
                    .next()
                    .map(|p| String::from_utf8_lossy(p).into_owned());
                let sni = hello.server_name().map(str::to_owned);
                Decision::ControlPlane { alpn, sni }
            }
            Err(_) => Decision::Reject(RejectReason::MalformedTls),
        },
        Protocol::Http1 => match http1::parse_request(buf) {
            Ok(None) => Decision::NeedMore,
            Ok(Some((req, head_len))) => {
                let Some(host) = req.host().and_then(safe_host) else {
                    return Decision::BadHttp { head_len };
                };
                let path = if req.target.starts_with('/')
                    && !req.target.bytes().any(|c| c.is_ascii_control())
                {
                    req.target
                } else {
                    "/"
                };
                Decision::RedirectHttps {
                    location: format!("https://{host}{path}"),
                    head_len,
                }
            }
            Err(_) => Decision::Reject(RejectReason::MalformedHttp),
        },
        Protocol::ProxyV1 | Protocol::ProxyV2 => {
            if proxy_seen {
                return Decision::Reject(RejectReason::ProxyRepeated);
            }
            if !trusted.iter().any(|c| c.contains(peer)) {
                return Decision::Reject(RejectReason::ProxyUntrusted);
            }
            match proxy_protocol::parse(buf) {
                Ok(None) => Decision::NeedMore,
                Ok(Some((h, len))) => Decision::ProxyHeader {
                    client: h.source(),
                    len,
                },
                Err(_) => Decision::Reject(RejectReason::MalformedProxy),
            }
        }
        Protocol::PostgresSsl => Decision::PostgresTls,
        Protocol::PostgresGss | Protocol::PostgresStartup => Decision::Postgres,
        Protocol::Ssh => Decision::Ssh,
        Protocol::Unknown => Decision::Reject(RejectReason::UnknownProtocol),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &[u8] =
        include_bytes!("../../../../protocols/testdata/tls_openssl_client_hello.bin");

    fn peer() -> IpAddr {
        "192.0.2.1".parse().unwrap()
    }

    #[test]
    fn tls_goes_to_the_control_plane_once_the_hello_is_complete() {
        for n in 0..HELLO.len() {
            assert_eq!(
                decide(&HELLO[..n], peer(), &[], false),
                Decision::NeedMore,
                "prefix {n}"
            );
        }
        match decide(HELLO, peer(), &[], false) {
            Decision::ControlPlane { sni, .. } => assert_eq!(sni.as_deref(), Some("example.test")),
            d => panic!("{d:?}"),
        }
        let mut bad = HELLO.to_vec();
        bad[5] = 2; // ServerHello
        assert_eq!(
            decide(&bad, peer(), &[], false),
            Decision::Reject(RejectReason::MalformedTls)
        );
    }

    #[test]
    fn plain_http_is_redirected_and_hostile_hosts_are_not_echoed() {
        let d = decide(
            b"GET /web/login?x=1 HTTP/1.1\r\nHost: hop.example:3080\r\n\r\n",
            peer(),
            &[],
            false,
        );
        assert_eq!(
            d,
            Decision::RedirectHttps {
                location: "https://hop.example:3080/web/login?x=1".into(),
                head_len: 55
            }
        );
        let d = decide(
            b"GET / HTTP/1.1\r\nHost: evil\"><script>\r\n\r\n",
            peer(),
            &[],
            false,
        );
        assert!(matches!(d, Decision::BadHttp { .. }), "{d:?}");
        assert_eq!(
            decide(b"GET / HTTP/1.1\r\n", peer(), &[], false),
            Decision::NeedMore
        );
    }

    #[test]
    fn proxy_headers_only_from_trusted_networks() {
        let hdr = b"PROXY TCP4 203.0.113.9 192.0.2.1 51000 3080\r\n";
        assert_eq!(
            decide(hdr, peer(), &[], false),
            Decision::Reject(RejectReason::ProxyUntrusted)
        );
        let trusted = ["192.0.2.0/24".parse().unwrap()];
        assert_eq!(
            decide(hdr, peer(), &trusted, false),
            Decision::ProxyHeader {
                client: Some("203.0.113.9:51000".parse().unwrap()),
                len: hdr.len()
            }
        );
        assert_eq!(
            decide(hdr, peer(), &trusted, true),
            Decision::Reject(RejectReason::ProxyRepeated)
        );
        assert_eq!(
            decide(b"PROXY TCP4 bogus\r\n", peer(), &trusted, false),
            Decision::Reject(RejectReason::MalformedProxy)
        );
    }

    #[test]
    fn everything_else() {
        assert_eq!(decide(b"", peer(), &[], false), Decision::NeedMore);
        assert_eq!(
            decide(b"\x00\x01\x02\x03garbage!", peer(), &[], false),
            Decision::Reject(RejectReason::UnknownProtocol)
        );
        assert_eq!(
            decide(b"SSH-2.0-OpenSSH_9.2\r\n", peer(), &[], false),
            Decision::Ssh
        );
        // psql's SSLRequest is answered on the worker; a GSSENCRequest goes to the control plane.
        assert_eq!(
            decide(&[0, 0, 0, 8, 4, 210, 22, 47], peer(), &[], false),
            Decision::PostgresTls
        );
        assert_eq!(
            decide(&[0, 0, 0, 8, 4, 210, 22, 48], peer(), &[], false),
            Decision::Postgres
        );
        for r in RejectReason::ALL {
            assert_eq!(RejectReason::ALL[r.index()], r);
        }
    }
}
