use super::*;

fn chunk(kind: StreamKind, data: &[u8]) -> StreamChunk {
    StreamChunk {
        kind,
        data: data.to_vec(),
    }
}

/// What kubectl's exec sends: five streams, typed input, a resize.
fn client_exec() -> Vec<u8> {
    let mut enc = SpdyEncoder::new();
    let mut out = Vec::new();
    for (id, t) in [(1, "error"), (3, "stdin"), (5, "stdout"), (7, "resize")] {
        out.extend(enc.syn_stream(id, &[("streamtype", t), ("requestid", "0")]));
    }
    out.extend(SpdyEncoder::ping(1));
    out.extend(SpdyEncoder::data(3, b"echo hi\n", false));
    out.extend(SpdyEncoder::data(7, b"{\"Width\":80,\"Height\":24}", false));
    out.extend(SpdyEncoder::data(3, b"", true));
    out
}

#[test]
fn exec_streams_are_classified_at_every_split() {
    let bytes = client_exec();
    let want = vec![
        chunk(StreamKind::Stdin, b"echo hi\n"),
        chunk(StreamKind::Resize, b"{\"Width\":80,\"Height\":24}"),
    ];
    for cut in 0..=bytes.len() {
        let mut d = SpdyDecoder::new(true);
        let mut got = d.feed(&bytes[..cut]).unwrap();
        got.extend(d.feed(&bytes[cut..]).unwrap());
        assert_eq!(got, want, "split at {cut}");
        assert_eq!(d.take_opened().len(), 4);
    }
}

#[test]
fn the_server_direction_learns_its_streams_from_the_client() {
    let mut client = SpdyDecoder::new(true);
    client.feed(&client_exec()).unwrap();
    let mut server = SpdyDecoder::new(false);
    let mut enc = SpdyEncoder::new();
    let reply = enc.syn_reply(5, &[]);
    let out = SpdyEncoder::data(5, b"hi\r\n", false);
    assert_eq!(
        SpdyDecoder::new(false).feed(&out),
        Err(StreamError::SpdyUnknownStream(5))
    );
    for (id, kind) in client.take_opened() {
        server.note_opened(id, kind);
    }
    let mut bytes = reply;
    bytes.extend(out);
    bytes.extend(SpdyEncoder::data(1, b"{\"status\":\"Success\"}", true));
    assert_eq!(
        server.feed(&bytes).unwrap(),
        vec![
            chunk(StreamKind::Stdout, b"hi\r\n"),
            chunk(StreamKind::Error, b"{\"status\":\"Success\"}"),
        ]
    );
}

#[test]
fn port_forward_streams_carry_their_port() {
    let mut enc = SpdyEncoder::new();
    let mut bytes = enc.syn_stream(1, &[("streamtype", "error"), ("port", "8080")]);
    bytes.extend(enc.syn_stream(3, &[("streamtype", "data"), ("port", "8080")]));
    bytes.extend(SpdyEncoder::data(3, b"GET /", false));
    let mut d = SpdyDecoder::new(true);
    assert_eq!(
        d.feed(&bytes).unwrap(),
        vec![chunk(StreamKind::PortData(8080), b"GET /")]
    );
    assert_eq!(
        d.take_opened(),
        vec![
            (1, StreamKind::PortError(8080)),
            (3, StreamKind::PortData(8080))
        ]
    );
}

#[test]
fn malformed_frames_are_named() {
    let mut enc = SpdyEncoder::new();
    let cases: Vec<(Vec<u8>, StreamError)> = vec![
        (vec![0x80, 2, 0, 1, 0, 0, 0, 0], StreamError::SpdyVersion(2)),
        (
            vec![0x80, 3, 0, 1, 0, 0x01, 0, 1],
            StreamError::SpdyTooLong {
                len: 0x10001,
                limit: MAX_CONTROL_FRAME,
            },
        ),
        (
            vec![0, 0, 0, 1, 0, 0x10, 0, 1],
            StreamError::SpdyTooLong {
                len: 0x100001,
                limit: MAX_DATA_FRAME,
            },
        ),
        (
            vec![0x80, 3, 0, 1, 0, 0, 0, 4, 0, 0, 0, 1],
            StreamError::SpdyShort {
                frame: "SYN_STREAM",
                len: 4,
            },
        ),
        (
            SpdyEncoder::data(9, b"x", false),
            StreamError::SpdyUnknownStream(9),
        ),
        (
            enc.syn_stream(2, &[("streamtype", "stdin")]),
            StreamError::SpdyStreamId(2),
        ),
        (
            SpdyEncoder::new().syn_stream(1, &[("requestid", "0")]),
            StreamError::SpdyNoStreamType(1),
        ),
        (
            SpdyEncoder::new().syn_stream(1, &[("streamtype", "video")]),
            StreamError::SpdyStreamType {
                id: 1,
                kind: "video".into(),
            },
        ),
        (
            SpdyEncoder::new().syn_stream(1, &[("streamtype", "data"), ("port", "http")]),
            StreamError::SpdyPort(1),
        ),
        (
            [
                SpdyEncoder::new().syn_stream(1, &[("streamtype", "stdin")]),
                SpdyEncoder::new().syn_stream(1, &[("streamtype", "stdin")]),
            ]
            .concat(),
            StreamError::SpdyInflate("placeholder".into()),
        ),
    ];
    for (bytes, want) in cases {
        let got = SpdyDecoder::new(true).feed(&bytes);
        match want {
            // A second zlib stream header inside the first stream's context does not inflate.
            StreamError::SpdyInflate(_) => assert!(
                matches!(
                    got,
                    Err(StreamError::SpdyInflate(_)) | Err(StreamError::SpdyReopened(1))
                ),
                "{got:?}"
            ),
            want => assert_eq!(got, Err(want), "{bytes:x?}"),
        }
    }
}

#[test]
fn a_stream_opened_twice_is_refused() {
    let mut enc = SpdyEncoder::new();
    let mut bytes = enc.syn_stream(1, &[("streamtype", "stdin")]);
    bytes.extend(enc.syn_stream(1, &[("streamtype", "stdout")]));
    assert_eq!(
        SpdyDecoder::new(true).feed(&bytes),
        Err(StreamError::SpdyReopened(1))
    );
}

#[test]
fn header_blocks_with_bad_pairs_are_named() {
    assert_eq!(
        parse_pairs(&[0, 0, 0, 1, 0, 0, 0, 9, b'a']),
        Err(StreamError::SpdyHeaderBlock("cut short"))
    );
    assert_eq!(
        parse_pairs(&[0, 0, 1, 0]),
        Err(StreamError::SpdyHeaderBlock("too many headers"))
    );
    assert_eq!(
        parse_pairs(&[0, 0, 0, 0, 1]),
        Err(StreamError::SpdyHeaderBlock("bytes after the last header"))
    );
    assert_eq!(
        parse_pairs(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]),
        Err(StreamError::SpdyHeaderBlock("empty header name"))
    );
}

#[test]
fn a_header_block_inflating_past_the_limit_is_refused() {
    let big = "x".repeat(MAX_HEADER_BLOCK);
    let bytes = SpdyEncoder::new().syn_stream(1, &[("streamtype", "stdin"), ("pad", &big)]);
    assert!(bytes.len() < MAX_CONTROL_FRAME);
    assert_eq!(
        SpdyDecoder::new(true).feed(&bytes),
        Err(StreamError::SpdyHeaderBlockTooLong)
    );
}

#[test]
fn the_dictionary_is_spdy_3s() {
    assert_eq!(DICTIONARY.len(), 1423);
    assert!(DICTIONARY.starts_with(b"\0\0\0\x07options\0\0\0\x04head"));
    assert!(DICTIONARY.ends_with(b"charset=iso-8859-1,utf-,*,enq=0."));
}

/// kubectl 1.32's first SYN_STREAM of `kubectl exec -i web-1 -- sh` over SPDY/3.1 (captured
/// from the real binary against a socket that answered 101): the error stream. Its zlib header
/// names the dictionary by its Adler-32 (e3c6a7c2), so this also proves the dictionary.
const KUBECTL_EXEC_SYN: [u8; 49] = [
    0x80, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x29, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x78, 0xf9, 0xe3, 0xc6, 0xa7, 0xc2, 0x62, 0x60, 0x60, 0x60, 0x04, 0xa7, 0xb3, 0x92,
    0xa2, 0xd4, 0xc4, 0x5c, 0x68, 0x51, 0xc2, 0x9a, 0x0a, 0x0a, 0x68, 0x00, 0x00, 0x00, 0x00, 0xff,
    0xff,
];

/// kubectl 1.32's first SYN_STREAM of `kubectl port-forward pod/web-1 18556:80` (SPDY/3.1):
/// the error stream of port 80.
const KUBECTL_PORTFORWARD_SYN: [u8; 69] = [
    0x80, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x3d, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x78, 0xf9, 0xe3, 0xc6, 0xa7, 0xc2, 0x02, 0x25, 0x3a, 0x70, 0x3a, 0x2b, 0x29, 0x4a,
    0x4d, 0xcc, 0x85, 0x16, 0x25, 0xac, 0xa9, 0xa0, 0x80, 0x86, 0x14, 0xcb, 0x45, 0xa0, 0x24, 0xcc,
    0x64, 0x61, 0xc0, 0xc0, 0xc0, 0xc0, 0x59, 0x04, 0x89, 0xc4, 0x4c, 0x50, 0xe2, 0x66, 0x34, 0x00,
    0x00, 0x00, 0x00, 0xff, 0xff,
];

#[test]
fn real_kubectl_syn_streams_decode() {
    let mut d = SpdyDecoder::new(true);
    assert_eq!(d.feed(&KUBECTL_EXEC_SYN).unwrap(), vec![]);
    assert_eq!(d.take_opened(), vec![(1, StreamKind::Error)]);
    let mut d = SpdyDecoder::new(true);
    for b in KUBECTL_PORTFORWARD_SYN {
        assert_eq!(d.feed(&[b]).unwrap(), vec![]);
    }
    assert_eq!(d.take_opened(), vec![(1, StreamKind::PortError(80))]);
}

#[test]
fn the_fuzz_invariants_hold_on_real_frames() {
    let mut server = SpdyEncoder::new().syn_reply(3, &[]);
    server.extend(SpdyEncoder::data(3, b"hi", false));
    for input in [client_exec(), KUBECTL_EXEC_SYN.to_vec(), server] {
        for pick in 0..=255u8 {
            crate::invariants::kube_spdy(&[&[pick], input.as_slice()].concat());
        }
    }
}

#[test]
fn streams_are_forgotten_once_ended_so_long_sessions_go_on() {
    let mut enc = SpdyEncoder::new();
    let mut d = SpdyDecoder::new(true);
    // Many more connections over one port-forward than streams may be open at once.
    for n in 0..(MAX_STREAMS as u32 * 2) {
        let (err, data) = (4 * n + 1, 4 * n + 3);
        let mut bytes = enc.syn_stream(err, &[("streamtype", "error"), ("port", "80")]);
        bytes.extend(enc.syn_stream(data, &[("streamtype", "data"), ("port", "80")]));
        bytes.extend(SpdyEncoder::data(err, b"", true));
        bytes.extend(SpdyEncoder::data(data, b"x", false));
        bytes.extend(SpdyEncoder::rst_stream(data));
        assert_eq!(d.feed(&bytes).unwrap().len(), 1, "connection {n}");
    }
    // Data after this direction's FIN, or after a reset, is refused.
    assert_eq!(
        d.feed(&SpdyEncoder::data(1, b"late", false)),
        Err(StreamError::SpdyUnknownStream(1))
    );
    let mut d = SpdyDecoder::new(true);
    let mut bytes = enc_fresh(5);
    bytes.extend(SpdyEncoder::rst_stream(5));
    bytes.extend(SpdyEncoder::data(5, b"x", false));
    assert_eq!(d.feed(&bytes), Err(StreamError::SpdyUnknownStream(5)));
}

fn enc_fresh(id: u32) -> Vec<u8> {
    SpdyEncoder::new().syn_stream(id, &[("streamtype", "stdin")])
}

#[test]
fn stream_ids_only_grow() {
    let mut enc = SpdyEncoder::new();
    let mut bytes = enc.syn_stream(5, &[("streamtype", "stdin")]);
    bytes.extend(SpdyEncoder::data(5, b"", true));
    bytes.extend(enc.syn_stream(3, &[("streamtype", "stdout")]));
    assert_eq!(
        SpdyDecoder::new(true).feed(&bytes),
        Err(StreamError::SpdyReopened(3))
    );
}

#[test]
fn too_many_open_streams_are_refused() {
    let mut enc = SpdyEncoder::new();
    let mut d = SpdyDecoder::new(true);
    for n in 0..MAX_STREAMS as u32 {
        d.feed(&enc.syn_stream(2 * n + 1, &[("streamtype", "stdin")]))
            .unwrap();
    }
    let next = enc.syn_stream(2 * MAX_STREAMS as u32 + 1, &[("streamtype", "stdin")]);
    assert_eq!(d.feed(&next), Err(StreamError::SpdyTooManyStreams));
}
