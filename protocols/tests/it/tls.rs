use hop_protocols::tls::{
    ClientHello, MAX_ALPN_PROTOCOLS, MAX_HANDSHAKE_LEN, MAX_RECORD_LEN, TlsError,
    parse_client_hello,
};

use crate::support::*;

// ---------------------------------------------------------------------------
// Builders

fn u16be(n: usize) -> [u8; 2] {
    u16::try_from(n).unwrap().to_be_bytes()
}

fn ext(ty: u16, data: &[u8]) -> Vec<u8> {
    let mut out = ty.to_be_bytes().to_vec();
    out.extend(u16be(data.len()));
    out.extend(data);
    out
}

fn sni_ext(name: &[u8]) -> Vec<u8> {
    let mut entry = vec![0u8];
    entry.extend(u16be(name.len()));
    entry.extend(name);
    let mut list = u16be(entry.len()).to_vec();
    list.extend(entry);
    ext(0, &list)
}

fn alpn_ext(names: &[&[u8]]) -> Vec<u8> {
    let mut entries = Vec::new();
    for n in names {
        entries.push(u8::try_from(n.len()).unwrap());
        entries.extend(*n);
    }
    let mut list = u16be(entries.len()).to_vec();
    list.extend(entries);
    ext(16, &list)
}

fn versions_ext(versions: &[u16]) -> Vec<u8> {
    let mut data = vec![u8::try_from(versions.len() * 2).unwrap()];
    for v in versions {
        data.extend(v.to_be_bytes());
    }
    ext(43, &data)
}

/// A ClientHello body with the given extension block (`None`: no block).
fn body(extensions: Option<&[Vec<u8>]>) -> Vec<u8> {
    let mut b = vec![3, 3];
    b.extend([0x42; 32]); // random
    b.push(32);
    b.extend([7; 32]); // session id
    b.extend([0, 4, 0x13, 0x01, 0x13, 0x02]); // two cipher suites
    b.extend([1, 0]); // null compression
    if let Some(exts) = extensions {
        let all: Vec<u8> = exts.concat();
        b.extend(u16be(all.len()));
        b.extend(all);
    }
    b
}

fn handshake(body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(body.len()).unwrap().to_be_bytes();
    let mut h = vec![1, len[1], len[2], len[3]];
    h.extend(body);
    h
}

/// Wrap handshake bytes in handshake records of at most `max` bytes each.
fn records(handshake: &[u8], max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in handshake.chunks(max) {
        out.extend([0x16, 3, 1]);
        out.extend(u16be(chunk.len()));
        out.extend(chunk);
    }
    out
}

fn hello_with(exts: &[Vec<u8>]) -> Vec<u8> {
    records(&handshake(&body(Some(exts))), MAX_RECORD_LEN)
}

/// Split the records of a capture back into handshake bytes.
fn unwrap_records(mut wire: &[u8]) -> Vec<u8> {
    let mut hs = Vec::new();
    while !wire.is_empty() {
        let len = usize::from(u16::from_be_bytes([wire[3], wire[4]]));
        hs.extend(&wire[5..5 + len]);
        wire = &wire[5 + len..];
    }
    hs
}

fn err(bytes: &[u8]) -> TlsError {
    parse_client_hello(bytes).expect_err("should be rejected")
}

fn malformed(bytes: &[u8]) {
    assert!(
        matches!(err(bytes), TlsError::Malformed { .. }),
        "{:?}",
        err(bytes)
    );
}

fn alpn(h: &ClientHello<'_>) -> Vec<Vec<u8>> {
    h.alpn_protocols().map(<[u8]>::to_vec).collect()
}

// ---------------------------------------------------------------------------
// Real captures

fn assert_capture(bytes: &[u8]) -> ClientHello<'static> {
    let (hello, len) = assert_every_prefix!(bytes, parse_client_hello);
    assert_eq!(len, bytes.len());
    assert!(hello.is_borrowed(), "a one-record ClientHello is zero-copy");
    assert_eq!(hello.server_name(), Some("example.test"));
    assert_eq!(alpn(&hello), [b"h2".to_vec(), b"http/1.1".to_vec()]);
    assert!(hello.offers_alpn(b"h2"));
    assert!(!hello.offers_alpn(b"hop-tunnel"));
    assert!(hello.offers_tls13());
    assert!(hello.supported_versions().any(|v| v == 0x0303));
    assert_eq!(hello.legacy_version(), 0x0303);
    hello.into_owned()
}

#[test]
fn openssl_capture_every_prefix() {
    assert_capture(TLS_OPENSSL);
}

#[test]
fn curl_capture_every_prefix() {
    assert_capture(TLS_CURL);
}

#[test]
fn capture_refragmented_into_small_records() {
    for capture in [TLS_OPENSSL, TLS_CURL] {
        let expected = parse_client_hello(capture).unwrap().unwrap().0;
        let hs = unwrap_records(capture);
        for max in [1, 2, 3, 5, 100, 255] {
            let wire = records(&hs, max);
            let (hello, len) = parse_client_hello(&wire).unwrap().unwrap();
            assert_eq!(len, wire.len());
            assert!(!hello.is_borrowed(), "reassembled from {max}-byte records");
            assert_eq!(hello.server_name(), expected.server_name());
            assert_eq!(alpn(&hello), alpn(&expected));
            assert_eq!(hello.body(), expected.body());
        }
    }
}

#[test]
fn one_byte_records_every_prefix() {
    let wire = records(&unwrap_records(TLS_OPENSSL), 1);
    let (hello, len) = assert_every_prefix!(&wire, parse_client_hello);
    assert_eq!(len, wire.len());
    assert_eq!(hello.server_name(), Some("example.test"));
}

#[test]
fn bytes_after_the_last_record_are_not_read() {
    let mut wire = TLS_CURL.to_vec();
    wire.extend([0x14, 3, 3, 0, 1, 1]); // a ChangeCipherSpec that follows
    let (_, len) = parse_client_hello(&wire).unwrap().unwrap();
    assert_eq!(len, TLS_CURL.len());
}

// ---------------------------------------------------------------------------
// SNI

fn name_of_len(len: usize) -> Vec<u8> {
    // Labels of 63 bytes joined by dots, then trimmed to `len`.
    let mut name = Vec::new();
    while name.len() < len {
        if !name.is_empty() {
            name.push(b'.');
        }
        name.extend([b'a'; 63]);
    }
    name.truncate(len);
    if name.last() == Some(&b'.') {
        name.pop();
        name.push(b'b');
    }
    name
}

#[test]
fn sni_of_exactly_255_bytes_is_accepted() {
    let name = name_of_len(255);
    assert_eq!(name.len(), 255);
    let wire = hello_with(&[sni_ext(&name)]);
    let (hello, _) = parse_client_hello(&wire).unwrap().unwrap();
    assert_eq!(hello.server_name().unwrap().as_bytes(), name.as_slice());
}

#[test]
fn sni_of_256_bytes_is_oversized() {
    let name = name_of_len(256);
    assert_eq!(name.len(), 256);
    assert_eq!(
        err(&hello_with(&[sni_ext(&name)])),
        TlsError::Oversized {
            what: "server name",
            len: 256,
            limit: 255
        }
    );
}

#[test]
fn sni_must_be_a_dns_name() {
    for bad in [
        &b"exa mple.test"[..],
        b"example.test.",
        b".example.test",
        b"example..test",
        b"ex\x00ample.test",
        b"\xc3\xa9xample.test",
        b"",
    ] {
        malformed(&hello_with(&[sni_ext(bad)]));
    }
    let long_label = [b'a'; 64];
    malformed(&hello_with(&[sni_ext(&long_label)]));
    for good in [
        &b"a"[..],
        b"under_score.example",
        b"xn--bcher-kva.example",
        b"10.0.0.1",
    ] {
        let wire = hello_with(&[sni_ext(good)]);
        let (hello, _) = parse_client_hello(&wire).unwrap().unwrap();
        assert_eq!(hello.server_name().unwrap().as_bytes(), good);
    }
}

#[test]
fn sni_edge_cases() {
    // Empty server_name_list.
    malformed(&hello_with(&[ext(0, &[0, 0])]));
    // Two host_names.
    let mut list = vec![0, 0, 1, b'a', 0, 0, 1, b'b'];
    list.splice(0..0, u16be(list.len()));
    malformed(&hello_with(&[ext(0, &list)]));
    // An unknown name type is skipped.
    let list = [0, 4, 9, 0, 1, b'x'];
    let wire = hello_with(&[ext(0, &list)]);
    assert_eq!(
        parse_client_hello(&wire).unwrap().unwrap().0.server_name(),
        None
    );
    // Duplicate extension.
    malformed(&hello_with(&[sni_ext(b"a.test"), sni_ext(b"b.test")]));
    // Name length past the list.
    malformed(&hello_with(&[ext(0, &[0, 4, 0, 0, 9, b'a'])]));
}

// ---------------------------------------------------------------------------
// ALPN and versions

#[test]
fn alpn_limits() {
    let names: Vec<Vec<u8>> = (0..MAX_ALPN_PROTOCOLS)
        .map(|i| format!("p{i}").into_bytes())
        .collect();
    let refs: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
    let wire = hello_with(&[alpn_ext(&refs)]);
    let (hello, _) = parse_client_hello(&wire).unwrap().unwrap();
    assert_eq!(hello.alpn_protocols().count(), MAX_ALPN_PROTOCOLS);

    let mut too_many = refs.clone();
    too_many.push(b"one-more");
    assert!(matches!(
        err(&hello_with(&[alpn_ext(&too_many)])),
        TlsError::Oversized { .. }
    ));
    malformed(&hello_with(&[alpn_ext(&[b"h2", b""])]));
    malformed(&hello_with(&[ext(16, &[0, 0])]));
    // Entry length past the list.
    malformed(&hello_with(&[ext(16, &[0, 3, 5, b'h', b'2'])]));
    // Trailing bytes after the list inside the extension.
    malformed(&hello_with(&[ext(16, &[0, 3, 2, b'h', b'2', 0])]));
    // 255-byte names are fine.
    let long = [b'x'; 255];
    let wire = hello_with(&[alpn_ext(&[&long])]);
    assert_eq!(
        parse_client_hello(&wire)
            .unwrap()
            .unwrap()
            .0
            .alpn_protocols()
            .next(),
        Some(&long[..])
    );
}

#[test]
fn no_extensions_at_all() {
    let wire = records(&handshake(&body(None)), MAX_RECORD_LEN);
    let (hello, _) = parse_client_hello(&wire).unwrap().unwrap();
    assert_eq!(hello.server_name(), None);
    assert!(!hello.has_alpn());
    assert_eq!(hello.supported_versions().count(), 0);
    assert!(!hello.offers_tls13());
}

#[test]
fn supported_versions() {
    let wire = hello_with(&[versions_ext(&[0x0a0a, 0x0304, 0x0303])]);
    let (hello, _) = parse_client_hello(&wire).unwrap().unwrap();
    assert_eq!(
        hello.supported_versions().collect::<Vec<_>>(),
        [0x0a0a, 0x0304, 0x0303]
    );
    malformed(&hello_with(&[ext(43, &[3, 3, 4, 3])]));
    malformed(&hello_with(&[ext(43, &[0])]));
    malformed(&hello_with(&[ext(43, &[4, 3, 4])]));
}

// ---------------------------------------------------------------------------
// Record and handshake layer

#[test]
fn not_a_handshake_record() {
    assert_eq!(err(&[0x17]), TlsError::NotHandshake { content_type: 0x17 });
    assert_eq!(
        err(b"GET / HTTP/1.1\r\n"),
        TlsError::NotHandshake { content_type: b'G' }
    );
}

#[test]
fn not_a_client_hello() {
    // A ServerHello, rejected as soon as its type byte arrives.
    assert_eq!(
        err(&[0x16, 3, 3, 0, 10, 2]),
        TlsError::NotClientHello { handshake_type: 2 }
    );
}

#[test]
fn record_limits() {
    let too_big = MAX_RECORD_LEN + 1;
    let mut wire = vec![0x16, 3, 1];
    wire.extend(u16be(too_big));
    assert!(matches!(
        err(&wire),
        TlsError::Oversized {
            what: "TLS record",
            ..
        }
    ));
    malformed(&[0x16, 3, 1, 0, 0]);
    malformed(&[0x16, 2, 0, 0, 5]);
    malformed(&[0x16, 2]);
}

#[test]
fn handshake_limits() {
    // Body length of 64 KiB + 1: rejected from the header alone.
    let len = u32::try_from(MAX_HANDSHAKE_LEN + 1).unwrap().to_be_bytes();
    let wire = [0x16, 3, 1, 0, 4, 1, len[1], len[2], len[3]];
    assert!(matches!(
        err(&wire),
        TlsError::Oversized {
            what: "ClientHello",
            ..
        }
    ));
    // The header split across records is still read.
    let wire = records(&[1, len[1], len[2], len[3]], 1);
    assert!(matches!(err(&wire), TlsError::Oversized { .. }));
    // A maximum-size ClientHello (padding extension) in 4 records is fine.
    let pad_len = MAX_HANDSHAKE_LEN - body(Some(&[])).len() - 4;
    let padded = body(Some(&[ext(21, &vec![0; pad_len])]));
    assert_eq!(padded.len(), MAX_HANDSHAKE_LEN);
    let wire = records(&handshake(&padded), 16384);
    let (_, len) = assert_every_prefix!(&wire, parse_client_hello);
    assert_eq!(len, wire.len());
}

#[test]
fn interleaved_and_trailing_records() {
    let hs = handshake(&body(Some(&[sni_ext(b"a.test")])));
    // An alert in the middle of the fragmented message.
    let mut wire = records(&hs[..10], 10);
    wire.extend([0x15, 3, 3, 0, 2, 2, 40]);
    wire.extend(records(&hs[10..], 1000));
    malformed(&wire);
    // More handshake bytes in the ClientHello's last record.
    let mut extra = hs.clone();
    extra.extend([20, 0, 0, 0]);
    malformed(&records(&extra, MAX_RECORD_LEN));
}

#[test]
fn body_field_errors() {
    let good = body(Some(&[sni_ext(b"a.test")]));
    let wire = |b: &[u8]| records(&handshake(b), MAX_RECORD_LEN);
    // Truncated at every length inside the body (but the one where a
    // TLS 1.2 ClientHello without extensions ends).
    for n in (0..good.len()).filter(|&n| n != body(None).len()) {
        let e = err(&wire(&good[..n]));
        assert!(
            matches!(e, TlsError::Malformed { .. }),
            "truncated at {n}: {e:?}"
        );
    }
    // session id longer than 32.
    let mut b = good.clone();
    b[34] = 33;
    malformed(&wire(&b));
    // Odd cipher_suites length.
    let mut b = good.clone();
    b[68] = 3;
    malformed(&wire(&b));
    // Empty compression methods.
    let mut b = body(None);
    let n = b.len();
    b[n - 2] = 0;
    malformed(&wire(&b[..n - 1]));
    // Extensions length past the end, and bytes after the extensions.
    let mut b = good.clone();
    b.push(0);
    malformed(&wire(&b));
    let mut b = good.clone();
    let at = body(None).len();
    b[at] = 0xff;
    malformed(&wire(&b));
    // An extension whose length overflows the block.
    malformed(&wire(&body(Some(&[vec![0, 16, 0xff, 0xff]]))));
}

#[test]
fn mutated_captures_keep_invariants() {
    let mut rng = Rng::new(1);
    let fragmented = records(&unwrap_records(TLS_CURL), 7);
    for seed in [TLS_OPENSSL, TLS_CURL, fragmented.as_slice()] {
        for _ in 0..3000 {
            hop_protocols::invariants::tls_client_hello(&rng.mutate(seed));
        }
    }
}
