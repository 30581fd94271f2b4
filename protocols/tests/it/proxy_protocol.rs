use std::net::SocketAddr;

use hop_protocols::proxy_protocol::{
    Addresses, Command, ProxyError, Transport, V1_MAX_LEN, V2_MAX_PAYLOAD_LEN, V2_SIGNATURE,
    Version, crc32c, parse, tlv,
};

use crate::support::*;

fn malformed(bytes: &[u8]) {
    let e = parse(bytes).unwrap_err();
    assert!(
        matches!(e, ProxyError::Malformed { .. }),
        "{e:?} for {bytes:?}"
    );
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A v2 header: `ver_cmd`, `family`, then `payload` (addresses + TLVs).
fn v2(ver_cmd: u8, family: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(ver_cmd);
    out.push(family);
    out.extend(u16::try_from(payload.len()).unwrap().to_be_bytes());
    out.extend(payload);
    out
}

fn tlv_bytes(kind: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend(u16::try_from(value.len()).unwrap().to_be_bytes());
    out.extend(value);
    out
}

// ---------------------------------------------------------------------------
// v1

#[test]
fn curl_v1_capture_every_prefix() {
    let (h, len) = assert_every_prefix!(PROXY_V1_CURL, parse);
    assert_eq!(&PROXY_V1_CURL[len..len + 4], b"GET ");
    assert_eq!(h.version, Version::V1);
    assert_eq!(h.command, Command::Proxy);
    assert_eq!(h.transport, Transport::Stream);
    let (src, dst) = (h.source().unwrap(), h.destination().unwrap());
    assert_eq!(src.ip().to_string(), "127.0.0.1");
    assert_eq!(dst.ip().to_string(), "127.0.0.1");
    assert_ne!(src.port(), 0);
    assert_eq!(h.tlvs().count(), 0);
    // The request behind the header is classified and parsed again.
    let rest = &PROXY_V1_CURL[len..];
    let (req, _) = hop_protocols::http1::parse_request(rest).unwrap().unwrap();
    assert_eq!(
        req.host().unwrap(),
        format!("127.0.0.1:{}", dst.port()).as_bytes()
    );
}

#[test]
fn v1_tcp6_and_unknown() {
    let line = b"PROXY TCP6 2001:db8::1 ::1 65535 0\r\nxyz";
    let (h, len) = assert_every_prefix!(line, parse);
    assert_eq!(len, line.len() - 3);
    assert_eq!(
        h.addresses,
        Addresses::Inet {
            source: sa("[2001:db8::1]:65535"),
            destination: sa("[::1]:0")
        }
    );
    for unknown in [
        &b"PROXY UNKNOWN\r\n"[..],
        b"PROXY UNKNOWN ff 1.2.3.4 1 2\r\n",
    ] {
        let (h, len) = parse(unknown).unwrap().unwrap();
        assert_eq!(len, unknown.len());
        assert_eq!(h.addresses, Addresses::Unspecified);
        assert_eq!(h.transport, Transport::Unspecified);
        assert_eq!(h.source(), None);
    }
    // The longest legal line (UNKNOWN with padding) is exactly 107 bytes.
    let mut longest = b"PROXY UNKNOWN ".to_vec();
    longest.resize(V1_MAX_LEN - 2, b'x');
    longest.extend(b"\r\n");
    assert_eq!(parse(&longest).unwrap().unwrap().1, V1_MAX_LEN);
}

#[test]
fn v1_errors() {
    let mut endless = b"PROXY TCP4 ".to_vec();
    endless.resize(V1_MAX_LEN, b'1');
    assert_eq!(parse(&endless[..V1_MAX_LEN - 1]), Ok(None));
    assert!(matches!(parse(&endless), Err(ProxyError::Oversized { .. })));
    for bad in [
        &b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"[..],
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
        b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
        b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
        b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
        b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
        b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\x00\r\n",
        b"PROXY \xff\r\n",
        b"PROXY \r\n",
    ] {
        malformed(bad);
    }
}

#[test]
fn not_proxy_protocol() {
    assert_eq!(
        parse(b"GET / HTTP/1.1\r\n"),
        Err(ProxyError::NotProxyProtocol)
    );
    assert_eq!(parse(b"PROXX"), Err(ProxyError::NotProxyProtocol));
    assert_eq!(
        parse(b"\r\n\r\n\0\r\nQUIX"),
        Err(ProxyError::NotProxyProtocol)
    );
    assert_eq!(parse(b""), Ok(None));
    assert_eq!(parse(b"\r\n"), Ok(None));
}

// ---------------------------------------------------------------------------
// v2

#[test]
fn haproxy_v2_capture_every_prefix() {
    let (h, len) = assert_every_prefix!(PROXY_V2_HAPROXY, parse);
    assert_eq!(&PROXY_V2_HAPROXY[len..len + 4], b"GET ");
    assert_eq!(h.version, Version::V2);
    assert_eq!(h.command, Command::Proxy);
    assert_eq!(h.transport, Transport::Stream);
    assert_eq!(h.source().unwrap().ip().to_string(), "127.0.0.1");
    let kinds: Vec<_> = h.tlvs().map(|t| t.kind).collect();
    assert_eq!(kinds, [tlv::CRC32C, tlv::UNIQUE_ID]);
    let id = h.tlv(tlv::UNIQUE_ID).unwrap();
    assert!(id.starts_with(b"hop-capture-127.0.0.1-"));
    // haproxy's CRC32c is verified: flipping a bit anywhere after the fixed
    // header is refused, except in the CRC TLV's own type byte (at 28), which
    // turns it into another TLV.
    assert_eq!(PROXY_V2_HAPROXY[28], tlv::CRC32C);
    for i in (16..len).filter(|&i| i != 28) {
        let mut bad = PROXY_V2_HAPROXY[..len].to_vec();
        bad[i] ^= 0x01;
        assert!(
            !matches!(parse(&bad), Ok(Some(_))),
            "flipped byte {i} accepted"
        );
    }
}

#[test]
fn v2_inet_with_tlvs() {
    let mut payload = vec![192, 0, 2, 1, 198, 51, 100, 7, 0x30, 0x39, 0x01, 0xbb];
    payload.extend(tlv_bytes(tlv::ALPN, b"h2"));
    payload.extend(tlv_bytes(tlv::AUTHORITY, b"example.test"));
    payload.extend(tlv_bytes(tlv::NOOP, b""));
    let bytes = v2(0x21, 0x11, &payload);
    let (h, len) = assert_every_prefix!(&bytes, parse);
    assert_eq!(len, bytes.len());
    assert_eq!(h.source(), Some(sa("192.0.2.1:12345")));
    assert_eq!(h.destination(), Some(sa("198.51.100.7:443")));
    assert_eq!(h.tlv(tlv::ALPN), Some(&b"h2"[..]));
    assert_eq!(h.tlv(tlv::AUTHORITY), Some(&b"example.test"[..]));
    assert_eq!(h.tlv(tlv::NOOP), Some(&b""[..]));
    assert_eq!(h.tlv(tlv::SSL), None);
    // UDP over IPv4.
    let b1 = v2(0x21, 0x12, &payload);
    let (h, _) = parse(&b1).unwrap().unwrap();
    assert_eq!(h.transport, Transport::Datagram);
}

#[test]
fn v2_inet6_and_unix() {
    let mut payload = vec![0x20, 0x01, 0x0d, 0xb8];
    payload.extend([0; 11]);
    payload.push(1);
    payload.extend([0; 15]);
    payload.push(1);
    payload.extend([0, 80, 0, 81]);
    let b2 = v2(0x21, 0x21, &payload);
    let (h, _) = parse(&b2).unwrap().unwrap();
    assert_eq!(h.source(), Some(sa("[2001:db8::1]:80")));
    assert_eq!(h.destination(), Some(sa("[::1]:81")));

    let mut payload = vec![0u8; 216];
    payload[..9].copy_from_slice(b"/run/a.sk");
    payload[108..113].copy_from_slice(b"/b.sk");
    let b3 = v2(0x21, 0x31, &payload);
    let (h, _) = parse(&b3).unwrap().unwrap();
    assert_eq!(
        h.addresses,
        Addresses::Unix {
            source: b"/run/a.sk",
            destination: b"/b.sk"
        }
    );
    assert_eq!(h.source(), None);
}

#[test]
fn v2_local_and_unspec_skip_addresses() {
    // LOCAL (health check): whatever follows is skipped, even a bogus family.
    let b4 = v2(0x20, 0xff, &[1, 2, 3]);
    let (h, len) = parse(&b4).unwrap().unwrap();
    assert_eq!(
        (h.command, h.addresses, len),
        (Command::Local, Addresses::Unspecified, 19)
    );
    assert_eq!(h.tlvs().count(), 0);
    let b5 = v2(0x21, 0x00, &[9; 5]);
    let (h, _) = parse(&b5).unwrap().unwrap();
    assert_eq!(
        (h.command, h.addresses),
        (Command::Proxy, Addresses::Unspecified)
    );
}

#[test]
fn v2_errors() {
    let addr = [1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2];
    assert_eq!(
        parse(&v2(0x11, 0x11, &addr)),
        Err(ProxyError::UnsupportedVersion { version: 1 })
    );
    // Version is checked as soon as its byte arrives.
    assert_eq!(
        parse(&v2(0x31, 0x11, &addr)[..13]),
        Err(ProxyError::UnsupportedVersion { version: 3 })
    );
    malformed(&v2(0x22, 0x11, &addr));
    malformed(&v2(0x21, 0x13, &addr));
    malformed(&v2(0x21, 0x10, &addr));
    malformed(&v2(0x21, 0x41, &addr));
    // Length shorter than the address block: rejected from the header alone.
    malformed(&v2(0x21, 0x11, &addr[..11])[..16]);
    malformed(&v2(0x21, 0x21, &addr));
    // TLVs that overrun or underrun.
    let mut p = addr.to_vec();
    p.extend([tlv::ALPN, 0, 5, b'h', b'2']);
    malformed(&v2(0x21, 0x11, &p));
    let mut p = addr.to_vec();
    p.extend([tlv::ALPN, 0]);
    malformed(&v2(0x21, 0x11, &p));
}

#[test]
fn v2_length_limit() {
    let mut p = vec![0u8; 12];
    p.extend(tlv_bytes(0xe0, &vec![0; V2_MAX_PAYLOAD_LEN - 15]));
    assert_eq!(p.len(), V2_MAX_PAYLOAD_LEN);
    assert!(parse(&v2(0x21, 0x11, &p)).unwrap().is_some());
    let mut p = vec![0u8; 12];
    p.extend(tlv_bytes(0xe0, &vec![0; V2_MAX_PAYLOAD_LEN - 14]));
    let bytes = v2(0x21, 0x11, &p);
    assert!(matches!(
        parse(&bytes[..16]),
        Err(ProxyError::Oversized { .. })
    ));
    let huge = v2(0x21, 0x11, &[]);
    let mut huge = huge[..14].to_vec();
    huge.extend([0xff, 0xff]);
    assert!(matches!(parse(&huge), Err(ProxyError::Oversized { .. })));
}

#[test]
fn v2_crc32c() {
    // RFC 3720 test vector: 32 bytes of zeros.
    assert_eq!(crc32c(&[0; 32]), 0x8a91_36aa);
    let addr = [10, 0, 0, 1, 10, 0, 0, 2, 0, 1, 0, 2];
    let mut p = addr.to_vec();
    p.extend(tlv_bytes(tlv::CRC32C, &[0; 4]));
    let mut bytes = v2(0x21, 0x11, &p);
    let sum = crc32c(&bytes).to_be_bytes();
    let at = bytes.len() - 4;
    bytes[at..].copy_from_slice(&sum);
    assert!(parse(&bytes).unwrap().is_some());
    bytes[at] ^= 0xff;
    assert!(matches!(
        parse(&bytes),
        Err(ProxyError::ChecksumMismatch { .. })
    ));
    // A CRC32C TLV that is not 4 bytes.
    let mut p = addr.to_vec();
    p.extend(tlv_bytes(tlv::CRC32C, &[0; 3]));
    malformed(&v2(0x21, 0x11, &p));
}

#[test]
fn mutated_captures_keep_invariants() {
    let mut rng = Rng::new(5);
    for seed in [PROXY_V1_CURL, PROXY_V2_HAPROXY] {
        for _ in 0..5000 {
            hop_protocols::invariants::proxy_protocol(&rng.mutate(seed));
        }
    }
}
