use hop_protocols::postgres::{
    CancelRequest, MAX_STARTUP_LEN, ProtocolVersion, StartupError, StartupPacket, parse_startup,
};

use crate::support::*;

fn packet(code: u32, body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(8 + body.len()).unwrap();
    let mut out = len.to_be_bytes().to_vec();
    out.extend(code.to_be_bytes());
    out.extend(body);
    out
}

fn startup(minor: u16, params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in params {
        body.extend(k.as_bytes());
        body.push(0);
        body.extend(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    packet(3 << 16 | u32::from(minor), &body)
}

fn err(bytes: &[u8]) -> StartupError {
    parse_startup(bytes).unwrap_err()
}

#[test]
fn ssl_request_capture_every_prefix() {
    let (p, len) = assert_every_prefix!(PG_SSL_REQUEST, parse_startup);
    assert_eq!((p, len), (StartupPacket::SslRequest, 8));
}

#[test]
fn startup_captures_every_prefix() {
    for capture in [PG_STARTUP, PG_STARTUP_AFTER_SSL] {
        let (p, len) = assert_every_prefix!(capture, parse_startup);
        assert_eq!(len, capture.len());
        let StartupPacket::Startup(m) = p else {
            panic!("{p:?}")
        };
        assert_eq!(m.protocol, ProtocolVersion { major: 3, minor: 0 });
        assert_eq!(m.user(), "alice");
        assert_eq!(m.database(), Some("app"));
        assert_eq!(m.application_name(), Some("psql"));
        assert_eq!(m.options(), None);
        assert_eq!(
            m.parameters().collect::<Vec<_>>(),
            [
                ("user", "alice"),
                ("database", "app"),
                ("application_name", "psql")
            ]
        );
    }
}

#[test]
fn gss_and_cancel() {
    let gss = packet(80_877_104, &[]);
    assert_eq!(
        assert_every_prefix!(&gss, parse_startup).0,
        StartupPacket::GssEncRequest
    );

    let cancel = packet(80_877_102, &[0, 0, 0x30, 0x39, 1, 2, 3, 4]);
    assert_eq!(
        assert_every_prefix!(&cancel, parse_startup),
        (
            StartupPacket::Cancel(CancelRequest {
                process_id: 12345,
                secret_key: &[1, 2, 3, 4]
            }),
            16
        )
    );
    // Protocol 3.2 keys are up to 256 bytes.
    let mut body = vec![0, 0, 0, 1];
    body.extend([9; 256]);
    let long = packet(80_877_102, &body);
    let (StartupPacket::Cancel(c), 268) = parse_startup(&long).unwrap().unwrap() else {
        panic!()
    };
    assert_eq!(c.secret_key.len(), 256);
    body.push(9);
    assert!(matches!(
        err(&packet(80_877_102, &body)),
        StartupError::Malformed { .. }
    ));
    // Too short for a key: rejected from the header alone.
    assert!(matches!(
        err(&packet(80_877_102, &[0, 0, 0, 1])[..8]),
        StartupError::Malformed { .. }
    ));
}

#[test]
fn request_lengths_must_match() {
    assert!(matches!(
        err(&packet(80_877_103, &[0; 4])),
        StartupError::Malformed { .. }
    ));
    assert!(matches!(
        err(&packet(80_877_104, &[0; 4])[..8]),
        StartupError::Malformed { .. }
    ));
    assert_eq!(
        err(&packet(80_877_105, &[])),
        StartupError::UnknownRequestCode { code: 80_877_105 }
    );
}

#[test]
fn length_limits() {
    assert_eq!(err(&[0, 0, 0, 7]), StartupError::TooShort { len: 7 });
    assert_eq!(err(&[0, 0, 0, 0]), StartupError::TooShort { len: 0 });
    assert_eq!(
        err(&[0xff, 0xff, 0xff, 0xff]),
        StartupError::Oversized { len: u32::MAX }
    );
    let over = u32::try_from(MAX_STARTUP_LEN + 1).unwrap().to_be_bytes();
    assert_eq!(
        err(&over),
        StartupError::Oversized {
            len: u32::try_from(MAX_STARTUP_LEN + 1).unwrap()
        }
    );
    // Exactly the limit is accepted.
    let fixed = startup(0, &[("user", "u"), ("options", "")]).len();
    let pad = "x".repeat(MAX_STARTUP_LEN - fixed);
    let max = startup(0, &[("user", "u"), ("options", &pad)]);
    assert_eq!(max.len(), MAX_STARTUP_LEN);
    let (StartupPacket::Startup(m), len) = parse_startup(&max).unwrap().unwrap() else {
        panic!()
    };
    assert_eq!(len, MAX_STARTUP_LEN);
    assert_eq!(m.options().map(str::len), Some(pad.len()));
    // A length that promises more than was sent waits.
    assert_eq!(parse_startup(&max[..max.len() - 1]), Ok(None));
}

#[test]
fn protocol_versions() {
    let p = startup(2, &[("user", "bob")]);
    let (StartupPacket::Startup(m), _) = parse_startup(&p).unwrap().unwrap() else {
        panic!()
    };
    assert_eq!(m.protocol, ProtocolVersion { major: 3, minor: 2 });
    for (major, minor) in [(3u16, 1u16), (2, 0), (4, 0), (3, 3)] {
        let code = u32::from(major) << 16 | u32::from(minor);
        assert_eq!(
            err(&packet(code, &[0])[..8]),
            StartupError::UnsupportedProtocolVersion { major, minor }
        );
    }
}

#[test]
fn parameter_block_errors() {
    assert_eq!(
        err(&startup(0, &[("database", "x")])),
        StartupError::MissingUser
    );
    assert_eq!(err(&startup(0, &[])), StartupError::MissingUser);
    assert!(matches!(
        err(&startup(0, &[("user", "")])),
        StartupError::Malformed { .. }
    ));
    // Missing final terminator.
    let mut p = startup(0, &[("user", "a")]);
    p.pop();
    let p = packet(196_608, &p[8..]);
    assert!(matches!(err(&p), StartupError::Malformed { .. }));
    // Name without value.
    assert!(matches!(
        err(&packet(196_608, b"user\0")),
        StartupError::Malformed { .. }
    ));
    // Bytes after the terminator.
    assert!(matches!(
        err(&packet(196_608, b"user\0a\0\0x")),
        StartupError::Malformed { .. }
    ));
    // Bad UTF-8 in a value and in a name.
    assert_eq!(
        err(&packet(196_608, b"user\0\xff\0\0")),
        StartupError::InvalidUtf8 { what: "value" }
    );
    assert_eq!(
        err(&packet(196_608, b"\xc3\0x\0user\0a\0\0")),
        StartupError::InvalidUtf8 { what: "name" }
    );
    // Only the terminator, no parameters: also missing user. Empty body: malformed.
    assert!(matches!(
        err(&packet(196_608, b"")),
        StartupError::Malformed { .. }
    ));
}

#[test]
fn last_parameter_wins() {
    let p = startup(0, &[("user", "a"), ("user", "b"), ("_pq_.x", "y")]);
    let (StartupPacket::Startup(m), _) = parse_startup(&p).unwrap().unwrap() else {
        panic!()
    };
    assert_eq!(m.user(), "b");
    assert_eq!(m.get("_pq_.x"), Some("y"));
    assert_eq!(m.database(), None);
}

#[test]
fn mutated_captures_keep_invariants() {
    let mut rng = Rng::new(3);
    for seed in [PG_STARTUP, PG_SSL_REQUEST] {
        for _ in 0..5000 {
            hop_protocols::invariants::postgres_startup(&rng.mutate(seed));
        }
    }
}
