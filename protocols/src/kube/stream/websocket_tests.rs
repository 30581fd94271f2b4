use super::*;

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn client_binary(payload: &[u8]) -> Vec<u8> {
    encode_frame(true, OP_BINARY, payload, Some(KEY))
}

fn server_binary(payload: &[u8]) -> Vec<u8> {
    encode_frame(true, OP_BINARY, payload, None)
}

/// Feeds `bytes` split at every position (and byte by byte); every way gives `whole`'s answer.
fn every_split(from_client: bool, bytes: &[u8]) -> Vec<StreamChunk> {
    let whole = WsChannelDecoder::new(from_client).feed(bytes).unwrap();
    for cut in 0..=bytes.len() {
        let mut d = WsChannelDecoder::new(from_client);
        let mut got = d.feed(&bytes[..cut]).unwrap();
        got.extend(d.feed(&bytes[cut..]).unwrap());
        assert_eq!(got, whole, "split at {cut}");
    }
    let mut d = WsChannelDecoder::new(from_client);
    let mut got = Vec::new();
    for b in bytes {
        got.extend(d.feed(std::slice::from_ref(b)).unwrap());
    }
    assert_eq!(got, whole, "byte by byte");
    whole
}

fn chunk(kind: StreamKind, data: &[u8]) -> StreamChunk {
    StreamChunk {
        kind,
        data: data.to_vec(),
    }
}

#[test]
fn an_rfc_6455_example_frame_reads() {
    // RFC 6455 §5.7: a single-frame masked text message "Hello".
    let bytes = [
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    let got = WsFrameDecoder::new(true).feed(&bytes).unwrap();
    assert_eq!(got, vec![WsMessage::Text(b"Hello".to_vec())]);
    // §5.7: a fragmented unmasked text message "Hel" + "lo".
    let bytes = [0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f];
    let got = WsFrameDecoder::new(false).feed(&bytes).unwrap();
    assert_eq!(got, vec![WsMessage::Text(b"Hello".to_vec())]);
}

#[test]
fn exec_channels_from_both_sides() {
    let mut client = client_binary(b"\x00ls -l\n");
    client.extend(client_binary(b"\x04{\"Width\":80,\"Height\":24}"));
    client.extend(encode_frame(true, OP_PING, b"hi", Some(KEY)));
    client.extend(client_binary(b"\xff\x00"));
    assert_eq!(
        every_split(true, &client),
        vec![
            chunk(StreamKind::Stdin, b"ls -l\n"),
            chunk(StreamKind::Resize, b"{\"Width\":80,\"Height\":24}"),
            chunk(StreamKind::Other(255), b"\x00"),
        ]
    );
    let mut server = server_binary(b"\x01total 0\r\n");
    server.extend(server_binary(b"\x02oops"));
    server.extend(server_binary(b"\x03{\"status\":\"Success\"}"));
    server.extend(encode_frame(true, OP_CLOSE, &[0x03, 0xe8], None));
    assert_eq!(
        every_split(false, &server),
        vec![
            chunk(StreamKind::Stdout, b"total 0\r\n"),
            chunk(StreamKind::Stderr, b"oops"),
            chunk(StreamKind::Error, b"{\"status\":\"Success\"}"),
        ]
    );
}

#[test]
fn fragments_and_long_lengths_reassemble() {
    let big = vec![b'x'; 70_000];
    let mut first = vec![1u8];
    first.extend_from_slice(&big[..300]);
    let mut bytes = encode_frame(false, OP_BINARY, &first, Some(KEY));
    bytes.extend(encode_frame(true, OP_PING, b"", Some(KEY)));
    bytes.extend(encode_frame(
        false,
        OP_CONTINUATION,
        &big[300..1000],
        Some(KEY),
    ));
    bytes.extend(encode_frame(true, OP_CONTINUATION, &big[1000..], Some(KEY)));
    let got = WsChannelDecoder::new(true).feed(&bytes).unwrap();
    assert_eq!(got, vec![chunk(StreamKind::Stdout, &big)]);
    // A 64-bit length (over 65535 bytes) in one frame.
    let mut whole = vec![2u8];
    whole.extend_from_slice(&big);
    let bytes = server_binary(&whole);
    assert_eq!(bytes[1], 127);
    let got = WsChannelDecoder::new(false).feed(&bytes).unwrap();
    assert_eq!(got, vec![chunk(StreamKind::Stderr, &big)]);
}

#[test]
fn malformed_frames_are_named() {
    let cases: Vec<(bool, Vec<u8>, StreamError)> = vec![
        (false, vec![0xC2, 0x00], StreamError::WsReservedBits(0x40)),
        (false, vec![0x83, 0x00], StreamError::WsOpcode(3)),
        (true, server_binary(b"\x00a"), StreamError::WsUnmasked),
        (false, client_binary(b"\x01a"), StreamError::WsMasked),
        (false, vec![0x09, 0x00], StreamError::WsControlFrame),
        (false, vec![0x89, 126, 0, 126], StreamError::WsControlFrame),
        (
            false,
            vec![0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0],
            StreamError::WsLength,
        ),
        (
            false,
            vec![0x82, 127, 0, 0, 0, 0, 0, 0x50, 0, 0],
            StreamError::WsTooLong(0x50_0000),
        ),
        (false, vec![0x80, 0x01, 1], StreamError::WsStrayContinuation),
        (
            false,
            vec![0x02, 0x01, 1, 0x82, 0x01, 1],
            StreamError::WsUnfinishedMessage,
        ),
        (
            false,
            [
                encode_frame(true, OP_CLOSE, b"", None),
                server_binary(b"\x01"),
            ]
            .concat(),
            StreamError::WsAfterClose,
        ),
        (false, vec![0x81, 0x01, b'a'], StreamError::WsText),
    ];
    for (from_client, bytes, want) in cases {
        let got = WsChannelDecoder::new(from_client).feed(&bytes);
        assert_eq!(got, Err(want.clone()), "{bytes:x?}");
        assert!(!want.to_string().is_empty());
    }
}

#[test]
fn fragments_over_the_limit_are_refused_before_they_are_buffered() {
    let mut d = WsFrameDecoder::new(false);
    let half = vec![0u8; MAX_MESSAGE / 2 + 1];
    d.feed(&encode_frame(false, OP_BINARY, &half, None))
        .unwrap();
    let head = &encode_frame(true, OP_CONTINUATION, &half, None)[..10];
    assert!(matches!(d.feed(head), Err(StreamError::WsTooLong(_))));
}

#[test]
fn port_forward_channels_carry_their_ports() {
    // The server announces each channel's port (little-endian) in its first message.
    let mut server = server_binary(&[0, 0x90, 0x1f]);
    server.extend(server_binary(&[1, 0x90, 0x1f]));
    server.extend(server_binary(b"\x00HTTP/1.0 200 OK\r\n"));
    server.extend(server_binary(&[2, 0x50, 0x00, b'h', b'i']));
    let mut d = WsChannelDecoder::port_forward(false, vec![]);
    assert_eq!(
        d.feed(&server).unwrap(),
        vec![
            chunk(StreamKind::PortData(8080), b"HTTP/1.0 200 OK\r\n"),
            chunk(StreamKind::PortData(80), b"hi"),
        ]
    );
    let client = [client_binary(b"\x00GET /"), client_binary(b"\x02x")].concat();
    let mut d = WsChannelDecoder::port_forward(true, vec![8080, 80]);
    assert_eq!(
        d.feed(&client).unwrap(),
        vec![
            chunk(StreamKind::PortData(8080), b"GET /"),
            chunk(StreamKind::PortData(80), b"x"),
        ]
    );
    let mut d = WsChannelDecoder::port_forward(true, vec![8080]);
    assert_eq!(
        d.feed(&client_binary(b"\x05x")),
        Err(StreamError::WsPortChannel(5))
    );
    let mut d = WsChannelDecoder::port_forward(false, vec![]);
    assert_eq!(
        d.feed(&server_binary(&[3, 1])),
        Err(StreamError::WsPortPrefix(3))
    );
}

#[test]
fn spdy_tunnelled_in_websocket_reads_across_messages() {
    let mut enc = spdy::SpdyEncoder::new();
    let mut stream = enc.syn_stream(1, &[("streamtype", "data"), ("port", "8080")]);
    stream.extend(spdy::SpdyEncoder::data(1, b"GET / HTTP/1.0\r\n", false));
    // Cut the SPDY bytes across WebSocket messages at an awkward place.
    let (a, b) = stream.split_at(5);
    let bytes = [client_binary(a), client_binary(b)].concat();
    let mut d = WsChannelDecoder::spdy(true);
    let got = d.feed(&bytes).unwrap();
    assert_eq!(
        got,
        vec![chunk(StreamKind::PortData(8080), b"GET / HTTP/1.0\r\n")]
    );
    let opened = d.spdy_mut().unwrap().take_opened();
    assert_eq!(opened, vec![(1, StreamKind::PortData(8080))]);
}

use super::super::spdy;

#[test]
fn the_fuzz_invariants_hold_on_real_frames() {
    let mut enc = spdy::SpdyEncoder::new();
    let spdy_bytes = enc.syn_stream(1, &[("streamtype", "stdout")]);
    let inputs = [
        [server_binary(b"\x01hi"), server_binary(&[0, 0x50, 0, b'x'])].concat(),
        [client_binary(b"\x00ls\n"), client_binary(&spdy_bytes)].concat(),
        server_binary(&spdy_bytes),
    ];
    for input in inputs {
        for pick in 0..=255u8 {
            crate::invariants::kube_ws(&[&[pick], input.as_slice()].concat());
        }
    }
}

#[test]
fn the_first_broken_rule_is_reported_however_the_bytes_come() {
    // Found by the fuzzer: an empty text message, then a stray continuation. Whole or cut, the
    // text message is the first fault.
    let bytes = [0x81, 0x00, 0x00, 0x00];
    for cut in 0..=bytes.len() {
        let mut d = WsChannelDecoder::new(false);
        let got = d.feed(&bytes[..cut]).and_then(|_| d.feed(&bytes[cut..]));
        assert_eq!(got, Err(StreamError::WsText), "cut at {cut}");
    }
    crate::invariants::kube_ws(&[&[0x3a][..], &[0x81, 0, 0, 0, 0, 0x10]].concat());
}

#[test]
fn a_message_boundary_is_known_at_every_prefix() {
    // Two server messages on stdout, the second in two fragments.
    let mut bytes = encode_frame(true, 2, b"\x01first", None);
    let first_end = bytes.len();
    bytes.extend(encode_frame(false, 2, b"\x01sec", None));
    let fragment_end = bytes.len();
    bytes.extend(encode_frame(true, 0, b"ond", None));
    for cut in 0..=bytes.len() {
        let mut d = WsChannelDecoder::new(false);
        d.feed(&bytes[..cut]).unwrap();
        let whole = cut == 0 || cut == first_end || cut == bytes.len();
        assert_eq!(d.at_message_boundary(), whole, "cut at {cut}");
    }
    let mut d = WsChannelDecoder::new(false);
    d.feed(&bytes[..fragment_end]).unwrap();
    assert!(!d.at_message_boundary(), "inside a fragmented message");
}
