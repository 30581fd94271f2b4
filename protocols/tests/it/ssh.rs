use hop_protocols::ssh::{
    Identification, MAX_LINE_LEN, MAX_PREAMBLE_LINES, ProtocolVersion, SshError,
    parse_identification,
};

use crate::support::*;

fn ok(bytes: &[u8]) -> (Identification<'_>, usize) {
    parse_identification(bytes).unwrap().unwrap()
}

fn err(bytes: &[u8]) -> SshError {
    parse_identification(bytes).unwrap_err()
}

#[test]
fn openssh_capture_every_prefix() {
    let (id, len) = assert_every_prefix!(SSH_BANNER_KEXINIT, parse_identification);
    // e.g. "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u6" (the suffix follows the distro).
    assert_eq!(&SSH_BANNER_KEXINIT[len - 2..len], b"\r\n");
    assert_eq!(id.line.as_bytes(), &SSH_BANNER_KEXINIT[..len - 2]);
    assert_eq!(id.protocol_version, ProtocolVersion::V2_0);
    assert!(id.software_version.starts_with("OpenSSH_"), "{id:?}");
    assert!(id.comments.unwrap().starts_with("Debian-"), "{id:?}");
    assert_eq!(id.preamble_lines, 0);
    // What follows is the binary packet protocol: a KEXINIT (type 20).
    assert_eq!(SSH_BANNER_KEXINIT[len + 5], 20);
}

#[test]
fn preamble_lines_and_terminators() {
    let input = b"Welcome\r\nto the server\nSSH-1.99-Srv_1.0\nrest";
    let (id, len) = assert_every_prefix!(input, parse_identification);
    assert_eq!(len, input.len() - 4);
    assert_eq!(id.preamble_lines, 2);
    assert_eq!(id.protocol_version, ProtocolVersion::V1_99);
    assert_eq!(id.software_version, "Srv_1.0");
    assert_eq!(id.comments, None);
    // Non-UTF-8 preamble lines are tolerated; NUL is not.
    assert_eq!(ok(b"\xff\xfe\r\nSSH-2.0-x\r\n").0.preamble_lines, 1);
    assert!(matches!(err(b"a\0b\r\n"), SshError::Malformed { .. }));
}

#[test]
fn line_length_limit() {
    // 255 bytes including CR LF is the maximum.
    let mut line = b"SSH-2.0-".to_vec();
    line.resize(MAX_LINE_LEN - 2, b'x');
    line.extend(b"\r\n");
    assert_eq!(line.len(), 255);
    assert_eq!(ok(&line).1, 255);
    // 256 bytes: the LF is beyond the limit.
    let mut long = b"SSH-2.0-".to_vec();
    long.resize(MAX_LINE_LEN - 1, b'x');
    long.extend(b"\r\n");
    assert_eq!(err(&long), SshError::LineTooLong);
    // Rejected as soon as 255 bytes without LF are there, not before.
    assert_eq!(parse_identification(&long[..254]), Ok(None));
    assert_eq!(err(&long[..255]), SshError::LineTooLong);
    // Same for preamble lines.
    let mut pre = vec![b'p'; 300];
    pre.extend(b"\r\nSSH-2.0-x\r\n");
    assert_eq!(err(&pre), SshError::LineTooLong);
}

#[test]
fn preamble_line_limit() {
    let mut input = b"x\r\n".repeat(MAX_PREAMBLE_LINES);
    input.extend(b"SSH-2.0-x\r\n");
    assert_eq!(ok(&input).0.preamble_lines, MAX_PREAMBLE_LINES);
    let mut input = b"x\r\n".repeat(MAX_PREAMBLE_LINES + 1);
    input.extend(b"SSH-2.0-x\r\n");
    assert_eq!(err(&input), SshError::TooManyPreambleLines);
}

#[test]
fn versions() {
    assert_eq!(
        err(b"SSH-1.5-old\r\n"),
        SshError::UnsupportedProtocolVersion
    );
    assert_eq!(
        err(b"SSH-3.0-new\r\n"),
        SshError::UnsupportedProtocolVersion
    );
    assert!(matches!(err(b"SSH-two-x\r\n"), SshError::Malformed { .. }));
    assert!(matches!(err(b"SSH-2.0\r\n"), SshError::Malformed { .. }));
    assert!(matches!(err(b"SSH--x\r\n"), SshError::Malformed { .. }));
}

#[test]
fn malformed_lines() {
    for bad in [
        &b"SSH-2.0-\r\n"[..],
        b"SSH-2.0- comment\r\n",
        b"SSH-2.0-a\tb\r\n",
        b"SSH-2.0-a\rb\r\n",
        b"SSH-2.0-x comment\x01\r\n",
        b"SSH-2.0-x \xc3\xa9\r\n",
        b"SSH-2.0-\xff\r\n",
        b"SSH-2.0-x\0\r\n",
    ] {
        assert!(matches!(err(bad), SshError::Malformed { .. }), "{bad:?}");
    }
    // A '-' inside softwareversion is tolerated (libssh-style names exist).
    assert_eq!(
        ok(b"SSH-2.0-lib-ssh_0.10\r\n").0.software_version,
        "lib-ssh_0.10"
    );
    // Comments may contain spaces and tabs.
    assert_eq!(ok(b"SSH-2.0-x a b\tc\r\n").0.comments, Some("a b\tc"));
    assert_eq!(ok(b"SSH-2.0-x \r\n").0.comments, Some(""));
}

#[test]
fn mutated_capture_keeps_invariants() {
    let mut rng = Rng::new(2);
    for _ in 0..5000 {
        hop_protocols::invariants::ssh_banner(&rng.mutate(&SSH_BANNER_KEXINIT[..60]));
    }
}
