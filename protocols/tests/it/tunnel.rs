use std::net::SocketAddr;

use hop_protocols::tunnel::{
    Dial, DialResult, EncodeError, Frame, GoAway, Hello, HelloAck, MAX_FRAME_LEN, PROTOCOL_VERSION,
    PeerCancel, PeerDial, ResourceAnnouncement, TunnelError,
};

use crate::support::*;

/// One of each frame type, with every optional field both ways.
pub fn sample_frames() -> Vec<Frame> {
    vec![
        Frame::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            agent_id: "agent-7f3a".into(),
            agent_version: "0.1.0".into(),
            services: vec!["ssh".into(), "db".into()],
            resources: vec![
                ResourceAnnouncement {
                    kind: "node".into(),
                    name: "web-1".into(),
                    labels: vec![
                        ("env".into(), "prod".into()),
                        ("région".into(), "eu".into()),
                    ],
                    target: None,
                },
                ResourceAnnouncement {
                    kind: "db".into(),
                    name: "orders".into(),
                    labels: vec![],
                    target: Some("postgres://10.0.0.5:5432".into()),
                },
            ],
        }),
        Frame::Hello(Hello::default()),
        Frame::HelloAck(HelloAck {
            proxy_id: "proxy-1".into(),
            heartbeat_interval_secs: 30,
        }),
        Frame::Heartbeat { seq: 1 },
        Frame::HeartbeatAck { seq: u64::MAX },
        Frame::Dial(Dial {
            session_id: *b"0123456789abcdef",
            target: "127.0.0.1:22".into(),
            client_addr: "203.0.113.9:50123".parse().unwrap(),
        }),
        Frame::Dial(Dial {
            session_id: [0xff; 16],
            target: "".into(),
            client_addr: SocketAddr::V6(std::net::SocketAddrV6::new(
                "fe80::1".parse().unwrap(),
                443,
                7,
                3,
            )),
        }),
        Frame::DialResult(DialResult {
            session_id: [1; 16],
            ok: true,
            error: None,
        }),
        Frame::DialResult(DialResult {
            session_id: [2; 16],
            ok: false,
            error: Some("connection refused".into()),
        }),
        Frame::GoAway(GoAway {
            reason: "draining".into(),
            reconnect_after_ms: 1500,
        }),
        // Only between proxies (peering); agents never see it, so it is no new agent protocol.
        Frame::PeerDial(PeerDial {
            agent_id: "a1b2c3".into(),
            dial: Dial {
                session_id: [3; 16],
                target: "@ssh".into(),
                client_addr: "192.0.2.1:4000".parse().unwrap(),
            },
        }),
        Frame::PeerCancel(PeerCancel {
            process_id: 0x1234_5678,
            key: vec![9; 32],
        }),
    ]
}

fn encode(frame: &Frame) -> Vec<u8> {
    let mut out = Vec::new();
    frame.encode(&mut out).unwrap();
    out
}

fn encode_all(frames: &[Frame]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        f.encode(&mut out).unwrap();
    }
    out
}

/// Regenerate `testdata/tunnel_frames.bin` with `HOP_BLESS=1 cargo test -p hop-protocols`.
#[test]
fn golden_fixture_matches_the_encoder() {
    let bytes = encode_all(&sample_frames());
    if std::env::var_os("HOP_BLESS").is_some() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/tunnel_frames.bin");
        std::fs::write(path, &bytes).unwrap();
        return;
    }
    assert_eq!(
        bytes, TUNNEL_FRAMES,
        "wire format changed: bump PROTOCOL_VERSION and re-bless"
    );
}

#[test]
fn fixture_decodes_every_prefix() {
    let mut rest = TUNNEL_FRAMES;
    let mut decoded = Vec::new();
    while !rest.is_empty() {
        let (frame, len) = assert_every_prefix!(rest, Frame::decode);
        decoded.push(frame);
        rest = &rest[len..];
    }
    assert_eq!(decoded, sample_frames());
}

#[test]
fn decode_encode_is_identity() {
    for frame in sample_frames() {
        let bytes = encode(&frame);
        assert_eq!(
            Frame::decode(&bytes),
            Ok(Some((frame.clone(), bytes.len())))
        );
        hop_protocols::invariants::tunnel_frame(&bytes);
    }
}

#[test]
fn layout_is_as_documented() {
    assert_eq!(
        encode(&Frame::Heartbeat { seq: 0x0102 }),
        [0, 0, 0, 9, 3, 0, 0, 0, 0, 0, 0, 1, 2]
    );
    assert_eq!(
        encode(&Frame::GoAway(GoAway {
            reason: "x".into(),
            reconnect_after_ms: 5
        })),
        [0, 0, 0, 8, 7, 0, 1, b'x', 0, 0, 0, 5]
    );
    assert_eq!(
        encode(&Frame::DialResult(DialResult {
            session_id: [0; 16],
            ok: false,
            error: Some("e".into())
        }))[4..],
        [[6].as_slice(), &[0; 16], &[0, 1, 0, 1, b'e']].concat()
    );
}

#[test]
fn length_prefix_limits() {
    let over = u32::try_from(MAX_FRAME_LEN + 1).unwrap().to_be_bytes();
    assert_eq!(
        Frame::decode(&over),
        Err(TunnelError::Oversized {
            len: u32::try_from(MAX_FRAME_LEN + 1).unwrap()
        })
    );
    assert!(matches!(
        Frame::decode(&[0xff; 4]),
        Err(TunnelError::Oversized { .. })
    ));
    assert!(matches!(
        Frame::decode(&[0, 0, 0, 0]),
        Err(TunnelError::Malformed { .. })
    ));
    // A length within the limit waits for its bytes.
    assert_eq!(Frame::decode(&[0, 0x10, 0, 0, 3]), Ok(None));
}

#[test]
fn largest_frame_round_trips_and_one_more_byte_does_not_encode() {
    // type(1) + version(2) + 2 empty strs (4) + services count (2) + n strs + resources count (2)
    let fixed = 1 + 2 + 4 + 2 + 2;
    let per = 2 + usize::from(u16::MAX);
    let n = (MAX_FRAME_LEN - fixed) / per;
    let last = MAX_FRAME_LEN - fixed - n * per - 2;
    let mut services: Vec<String> = (0..n).map(|_| "s".repeat(usize::from(u16::MAX))).collect();
    services.push("t".repeat(last));
    let mut hello = Hello {
        services,
        ..Hello::default()
    };
    let bytes = encode(&Frame::Hello(hello.clone()));
    assert_eq!(bytes.len(), 4 + MAX_FRAME_LEN);
    let (frame, len) = Frame::decode(&bytes).unwrap().unwrap();
    assert_eq!((frame, len), (Frame::Hello(hello.clone()), bytes.len()));

    hello.services.last_mut().unwrap().push('t');
    let mut out = b"keep".to_vec();
    assert_eq!(
        Frame::Hello(hello).encode(&mut out),
        Err(EncodeError::FrameTooLarge {
            len: 4 + MAX_FRAME_LEN + 1
        })
    );
    assert_eq!(out, b"keep", "a failed encode leaves the buffer as it was");
}

#[test]
fn field_length_limits_on_encode() {
    let mut out = b"x".to_vec();
    let err = Frame::GoAway(GoAway {
        reason: "r".repeat(65536),
        reconnect_after_ms: 0,
    })
    .encode(&mut out);
    assert!(matches!(
        err,
        Err(EncodeError::FieldTooLong {
            what: "reason",
            len: 65536,
            ..
        })
    ));
    assert_eq!(out, b"x");
    let err = Frame::Hello(Hello {
        services: vec![String::new(); 65536],
        ..Hello::default()
    })
    .encode(&mut out);
    assert!(matches!(
        err,
        Err(EncodeError::FieldTooLong {
            what: "services",
            ..
        })
    ));
}

fn frame(ty: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = u32::try_from(payload.len() + 1)
        .unwrap()
        .to_be_bytes()
        .to_vec();
    out.push(ty);
    out.extend(payload);
    out
}

#[test]
fn malformed_payloads() {
    // Unknown type: skippable.
    assert_eq!(
        Frame::decode(&frame(0x7f, &[1, 2, 3])),
        Err(TunnelError::UnknownFrameType {
            frame_type: 0x7f,
            frame_len: 8
        })
    );
    // Trailing bytes.
    assert!(matches!(
        Frame::decode(&frame(3, &[0, 0, 0, 0, 0, 0, 0, 1, 0])),
        Err(TunnelError::Malformed { .. })
    ));
    // Field past the end of the frame (the length lies), though more bytes follow.
    let mut bytes = frame(3, &[0, 0, 0, 0]);
    bytes.extend([0; 8]);
    assert_eq!(
        Frame::decode(&bytes),
        Err(TunnelError::Truncated { what: "seq" })
    );
    // A string length that overflows the frame.
    assert_eq!(
        Frame::decode(&frame(7, &[0xff, 0xff, b'a'])),
        Err(TunnelError::Truncated { what: "reason" })
    );
    // Bad UTF-8.
    assert_eq!(
        Frame::decode(&frame(7, &[0, 2, 0xc3, 0x28, 0, 0, 0, 0])),
        Err(TunnelError::InvalidUtf8 { what: "reason" })
    );
    // Booleans and option tags are 0 or 1 only.
    let mut p = vec![0; 16];
    p.extend([2, 0]);
    assert!(matches!(
        Frame::decode(&frame(6, &p)),
        Err(TunnelError::Malformed { .. })
    ));
    let mut p = vec![0; 16];
    p.extend([1, 2]);
    assert!(matches!(
        Frame::decode(&frame(6, &p)),
        Err(TunnelError::Malformed { .. })
    ));
    // Socket address family.
    let mut p = vec![0; 16];
    p.extend([0, 0, 5, 1, 2, 3, 4, 0, 1]);
    assert!(matches!(
        Frame::decode(&frame(5, &p)),
        Err(TunnelError::Malformed { .. })
    ));
    // A list count larger than what follows.
    let p = [0, 1, 0, 0, 0, 0, 0xff, 0xff, 0, 1];
    assert!(matches!(
        Frame::decode(&frame(1, &p)),
        Err(TunnelError::Truncated { .. })
    ));
}

#[test]
fn truncating_any_frame_anywhere_is_need_more() {
    for f in sample_frames() {
        let bytes = encode(&f);
        for n in 0..bytes.len() {
            assert_eq!(Frame::decode(&bytes[..n]), Ok(None));
        }
    }
}

#[test]
fn mutated_frames_keep_invariants() {
    let mut rng = Rng::new(6);
    let seeds: Vec<Vec<u8>> = sample_frames().iter().map(encode).collect();
    for _ in 0..20_000 {
        let seed = &seeds[rng.below(seeds.len())];
        hop_protocols::invariants::tunnel_frame(&rng.mutate(seed));
    }
}
