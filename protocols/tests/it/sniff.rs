use hop_protocols::sniff::{MAX_SNIFF_LEN, Protocol, Sniff, sniff};

use crate::support::*;

fn detected(protocol: Protocol, decided_after: usize) -> Sniff {
    Sniff::Detected {
        protocol,
        decided_after,
    }
}

/// Every prefix of a capture: need-more before the decisive byte, the same
/// verdict from it on.
fn assert_capture(bytes: &[u8], protocol: Protocol, decided_after: usize) {
    for n in 0..=bytes.len() {
        let got = sniff(&bytes[..n]);
        if n < decided_after {
            assert_eq!(got, Sniff::NeedMore, "prefix {n}");
        } else {
            assert_eq!(got, detected(protocol, decided_after), "prefix {n}");
        }
    }
}

#[test]
fn captures_every_prefix() {
    assert_capture(TLS_OPENSSL, Protocol::Tls, 3);
    assert_capture(TLS_CURL, Protocol::Tls, 3);
    assert_capture(SSH_BANNER_KEXINIT, Protocol::Ssh, 4);
    assert_capture(PG_SSL_REQUEST, Protocol::PostgresSsl, 8);
    assert_capture(PG_STARTUP, Protocol::PostgresStartup, 8);
    assert_capture(PG_STARTUP_AFTER_SSL, Protocol::PostgresStartup, 8);
    assert_capture(HTTP_GET, Protocol::Http1, 4);
    assert_capture(HTTP_WEBSOCKET, Protocol::Http1, 4);
    assert_capture(PROXY_V1_CURL, Protocol::ProxyV1, 6);
    assert_capture(PROXY_V2_HAPROXY, Protocol::ProxyV2, 12);
}

#[test]
fn http_methods() {
    for (method, len) in [
        ("GET ", 4),
        ("HEAD ", 5),
        ("POST ", 5),
        ("PUT ", 4),
        ("DELETE ", 7),
        ("CONNECT ", 8),
        ("OPTIONS ", 8),
        ("TRACE ", 6),
        ("PATCH ", 6),
    ] {
        let line = format!("{method}/ HTTP/1.1\r\n");
        assert_capture(line.as_bytes(), Protocol::Http1, len);
    }
    // A method name without its space is not decided yet.
    assert_eq!(sniff(b"OPTIONS"), Sniff::NeedMore);
    // Lower-case or unknown methods are not HTTP/1 to the sniffer.
    assert_eq!(sniff(b"get / HTTP/1.1"), detected(Protocol::Unknown, 1));
    assert_eq!(sniff(b"GETX"), detected(Protocol::Unknown, 4));
}

#[test]
fn p_prefixes_are_disambiguated() {
    // PROXY, POST, PUT and PATCH share 'P'.
    assert_eq!(sniff(b"P"), Sniff::NeedMore);
    assert_eq!(sniff(b"PU"), Sniff::NeedMore);
    assert_eq!(sniff(b"PUT "), detected(Protocol::Http1, 4));
    assert_eq!(sniff(b"PROXY"), Sniff::NeedMore);
    assert_eq!(sniff(b"PROXY "), detected(Protocol::ProxyV1, 6));
    // HTTP/2 prior knowledge is not something Hop accepts in clear.
    assert_eq!(sniff(b"PRI * HTTP/2.0\r\n"), detected(Protocol::Unknown, 3));
}

#[test]
fn tls_record_versions() {
    for minor in 0..=4 {
        assert_eq!(sniff(&[0x16, 3, minor]), detected(Protocol::Tls, 3));
    }
    assert_eq!(sniff(&[0x16, 3, 5]), detected(Protocol::Unknown, 3));
    assert_eq!(sniff(&[0x16, 2, 0]), detected(Protocol::Unknown, 2));
    // An application-data record is not a new TLS connection.
    assert_eq!(sniff(&[0x17, 3, 3]), detected(Protocol::Unknown, 1));
}

#[test]
fn postgres_requests() {
    let gss = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30];
    assert_capture(&gss, Protocol::PostgresGss, 8);
    let cancel = [0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 1, 2, 3, 4, 5];
    assert_capture(&cancel, Protocol::PostgresStartup, 8);
    // SSLRequest code with the wrong length.
    assert_eq!(
        sniff(&[0, 0, 0, 12, 0x04, 0xd2, 0x16, 0x2f]),
        detected(Protocol::Unknown, 8)
    );
    // Protocol 2.0 and a length over 10 KiB are not ours.
    assert_eq!(
        sniff(&[0, 0, 0, 40, 0, 2, 0, 0]),
        detected(Protocol::Unknown, 6)
    );
    assert_eq!(sniff(&[0, 0, 0x29, 0]), detected(Protocol::Unknown, 3));
    assert_eq!(sniff(&[0, 1, 0, 0]), detected(Protocol::Unknown, 2));
    assert_eq!(sniff(&[0, 0, 0, 4]), detected(Protocol::Unknown, 4));
    // A 3.x startup with any minor version is classified; the postgres parser
    // rejects the minor versions it does not speak.
    assert_eq!(
        sniff(&[0, 0, 0, 9, 0, 3, 0, 7]),
        detected(Protocol::PostgresStartup, 8)
    );
}

#[test]
fn unknown_and_empty() {
    assert_eq!(sniff(b""), Sniff::NeedMore);
    assert_eq!(sniff(b"hello"), detected(Protocol::Unknown, 1));
    assert_eq!(
        sniff(b"\r\n\r\n\0\r\nQUIX\n"),
        detected(Protocol::Unknown, 11)
    );
    assert_eq!(sniff(b"SSH-"), detected(Protocol::Ssh, 4));
    assert_eq!(sniff(b"SSX"), detected(Protocol::Unknown, 3));
}

#[test]
fn always_decides_within_max_sniff_len() {
    let mut rng = Rng::new(7);
    for _ in 0..20_000 {
        let len = MAX_SNIFF_LEN + rng.below(4);
        let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        assert_ne!(sniff(&bytes), Sniff::NeedMore);
        hop_protocols::invariants::sniff(&bytes);
    }
}

#[test]
fn protocol_names_are_distinct() {
    let all = [
        Protocol::Tls,
        Protocol::Ssh,
        Protocol::PostgresSsl,
        Protocol::PostgresGss,
        Protocol::PostgresStartup,
        Protocol::Http1,
        Protocol::ProxyV1,
        Protocol::ProxyV2,
        Protocol::Unknown,
    ];
    let mut names: Vec<_> = all.iter().map(|p| p.name()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), all.len());
}
