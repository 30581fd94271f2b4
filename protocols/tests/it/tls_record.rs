//! The fast path's TLS 1.3 record re-protection, with the checksum stand-in for the AEAD.

use hop_protocols::tls_record::{
    ChecksumOnly, HEADER_LEN, MAX_PLAINTEXT_LEN, ProtectionError, RecordError, RecordProtection,
    Reprotected, open_records, reprotect, seal_application_data, seal_close_notify,
};

/// A record whose inner plaintext is `data ‖ content_type ‖ padding zeros`.
fn record(key: &mut ChecksumOnly, content_type: u8, data: &[u8], padding: usize) -> Vec<u8> {
    let body_len = data.len() + 1 + padding + 16;
    let hdr = [23, 3, 3, (body_len >> 8) as u8, body_len as u8];
    let mut out = hdr.to_vec();
    out.extend_from_slice(data);
    out.push(content_type);
    out.resize(HEADER_LEN + body_len, 0);
    key.seal(&hdr, &mut out[HEADER_LEN..], data.len() + 1 + padding)
        .unwrap();
    out
}

/// Opens every record of `wire` with `key`: the application bytes, and whether a close_notify
/// came.
fn open_all(wire: &[u8], key: &mut ChecksumOnly) -> (Vec<u8>, bool) {
    let mut data = Vec::new();
    let mut rest = wire.to_vec();
    let mut at = 0;
    while at < rest.len() {
        let len = usize::from(u16::from_be_bytes([rest[at + 3], rest[at + 4]]));
        let mut hdr = [0u8; HEADER_LEN];
        hdr.copy_from_slice(&rest[at..at + HEADER_LEN]);
        let body = &mut rest[at + HEADER_LEN..at + HEADER_LEN + len];
        let n = key.open(&hdr, body).unwrap();
        let t = body[..n].iter().rposition(|b| *b != 0).unwrap();
        match body[t] {
            23 => data.extend_from_slice(&body[..t]),
            21 => {
                assert_eq!(&body[..t], &[1, 0], "only close_notify is expected");
                return (data, true);
            }
            other => panic!("unexpected inner type {other}"),
        }
        at += HEADER_LEN + len;
    }
    (data, false)
}

fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[test]
fn records_pass_to_the_other_key_unchanged_in_content() {
    let mut a_send = ChecksumOnly::new(0xA5, 7);
    let sizes = [1usize, 100, MAX_PLAINTEXT_LEN, 5000, 3];
    let mut wire = Vec::new();
    let mut expected = Vec::new();
    for n in sizes {
        let d = payload(n);
        wire.extend(record(&mut a_send, 23, &d, 0));
        expected.extend(d);
    }
    let mut open = ChecksumOnly::new(0xA5, 7);
    let mut seal = ChecksumOnly::new(0x3C, 2);
    let r = reprotect(&mut wire, &mut open, &mut seal).unwrap();
    assert_eq!(r.consumed, wire.len());
    assert_eq!(
        r.produced,
        wire.len(),
        "no padding: records keep their length"
    );
    assert_eq!(r.payload, expected.len());
    assert!(!r.closed);
    let (got, closed) = open_all(&wire[..r.produced], &mut ChecksumOnly::new(0x3C, 2));
    assert_eq!(got, expected);
    assert!(!closed);
}

#[test]
fn every_split_of_the_input_gives_the_same_output() {
    let mut a_send = ChecksumOnly::new(1, 0);
    let mut wire = Vec::new();
    for n in [10usize, 300, 2, 1000] {
        wire.extend(record(&mut a_send, 23, &payload(n), 0));
    }
    wire.extend(record(&mut a_send, 21, &[1, 0], 0));
    let mut whole = wire.clone();
    let reference = reprotect(
        &mut whole,
        &mut ChecksumOnly::new(1, 0),
        &mut ChecksumOnly::new(2, 0),
    )
    .unwrap();
    let reference_out = whole[..reference.produced].to_vec();
    for split in 0..=wire.len() {
        let (mut open, mut seal) = (ChecksumOnly::new(1, 0), ChecksumOnly::new(2, 0));
        let mut out = Vec::new();
        let mut buf = wire[..split].to_vec();
        let first = reprotect(&mut buf, &mut open, &mut seal).unwrap();
        assert!(first.consumed <= split);
        out.extend_from_slice(&buf[..first.produced]);
        let mut rest = buf[first.consumed..].to_vec();
        rest.extend_from_slice(&wire[split..]);
        let second = reprotect(&mut rest, &mut open, &mut seal).unwrap();
        out.extend_from_slice(&rest[..second.produced]);
        assert_eq!(out, reference_out, "split at {split}");
        assert_eq!(first.payload + second.payload, reference.payload);
        assert!(first.closed || second.closed, "split at {split}");
    }
}

#[test]
fn padding_is_removed_and_the_output_compacted() {
    let mut a = ChecksumOnly::new(9, 0);
    let mut wire = record(&mut a, 23, b"first", 300);
    wire.extend(record(&mut a, 23, b"second", 0));
    wire.extend(record(&mut a, 23, b"third", 17));
    let r = reprotect(
        &mut wire,
        &mut ChecksumOnly::new(9, 0),
        &mut ChecksumOnly::new(4, 0),
    )
    .unwrap();
    assert!(r.produced < r.consumed);
    let (got, _) = open_all(&wire[..r.produced], &mut ChecksumOnly::new(4, 0));
    assert_eq!(got, b"firstsecondthird");
}

#[test]
fn close_notify_passes_and_ends_the_direction() {
    let mut a = ChecksumOnly::new(9, 0);
    let mut wire = record(&mut a, 23, b"bye", 0);
    wire.extend(record(&mut a, 21, &[1, 0], 0));
    let after = wire.len();
    wire.extend(b"garbage after the end that is never looked at");
    let r = reprotect(
        &mut wire,
        &mut ChecksumOnly::new(9, 0),
        &mut ChecksumOnly::new(4, 0),
    )
    .unwrap();
    assert!(r.closed);
    assert_eq!(r.consumed, after);
    let (got, closed) = open_all(&wire[..r.produced], &mut ChecksumOnly::new(4, 0));
    assert_eq!((got.as_slice(), closed), (&b"bye"[..], true));
}

#[test]
fn user_canceled_and_empty_records_are_dropped() {
    let mut a = ChecksumOnly::new(9, 0);
    let mut wire = record(&mut a, 23, b"", 0);
    wire.extend(record(&mut a, 21, &[1, 90], 0));
    wire.extend(record(&mut a, 23, b"x", 0));
    let r = reprotect(
        &mut wire,
        &mut ChecksumOnly::new(9, 0),
        &mut ChecksumOnly::new(4, 0),
    )
    .unwrap();
    let (got, closed) = open_all(&wire[..r.produced], &mut ChecksumOnly::new(4, 0));
    assert_eq!((got.as_slice(), closed), (&b"x"[..], false));
}

fn reprotect_err(mut wire: Vec<u8>) -> RecordError {
    reprotect(
        &mut wire,
        &mut ChecksumOnly::new(9, 0),
        &mut ChecksumOnly::new(4, 0),
    )
    .unwrap_err()
}

#[test]
fn what_cannot_pass_is_named() {
    let mut a = ChecksumOnly::new(9, 0);
    assert_eq!(
        reprotect_err(record(&mut a, 22, &[24, 0, 0, 1, 0], 0)),
        RecordError::PostHandshakeMessage
    );
    let mut a = ChecksumOnly::new(9, 0);
    assert_eq!(
        reprotect_err(record(&mut a, 21, &[2, 40], 0)),
        RecordError::Alert(40)
    );
    let mut a = ChecksumOnly::new(9, 0);
    assert_eq!(
        reprotect_err(record(&mut a, 21, &[2, 40, 1], 0)),
        RecordError::BadAlert(3)
    );
    let mut a = ChecksumOnly::new(9, 0);
    assert_eq!(
        reprotect_err(record(&mut a, 99, b"?", 0)),
        RecordError::UnknownInnerType(99)
    );
    // All padding: seal zeros only.
    let mut a = ChecksumOnly::new(9, 0);
    let mut rec = record(&mut a, 23, b"", 4);
    let mut a = ChecksumOnly::new(9, 0);
    let hdr: [u8; 5] = rec[..5].try_into().unwrap();
    for b in &mut rec[5..] {
        *b = 0;
    }
    let inner = rec.len() - 5 - 16;
    a.seal(&hdr, &mut rec[5..], inner).unwrap();
    assert_eq!(reprotect_err(rec), RecordError::NoContentType);
}

#[test]
fn bad_headers_and_bad_bytes_are_errors() {
    let mut a = ChecksumOnly::new(9, 0);
    let good = record(&mut a, 23, b"data", 0);
    let mut t = good.clone();
    t[0] = 22;
    assert_eq!(reprotect_err(t), RecordError::UnexpectedOuterType(22));
    let mut t = good.clone();
    t[2] = 1;
    assert_eq!(reprotect_err(t), RecordError::BadVersion(0x0301));
    assert_eq!(
        reprotect_err(vec![23, 3, 3, 0x41, 0x01]),
        RecordError::Oversized(0x4101)
    );
    assert_eq!(
        reprotect_err(vec![23, 3, 3, 0, 16]),
        RecordError::TooShort(16)
    );
    for i in HEADER_LEN..good.len() {
        let mut t = good.clone();
        t[i] ^= 0x40;
        assert_eq!(
            reprotect_err(t),
            RecordError::Protection(ProtectionError::Decrypt),
            "flipped byte {i}"
        );
    }
    // Replayed: the same record twice fails the second time (sequence numbers).
    let mut twice = good.clone();
    twice.extend_from_slice(&good);
    assert_eq!(
        reprotect_err(twice),
        RecordError::Protection(ProtectionError::Decrypt)
    );
}

#[test]
fn a_longer_sealing_tag_is_refused() {
    struct LongTag;
    impl RecordProtection for LongTag {
        fn tag_len(&self) -> usize {
            32
        }
        fn open(&mut self, _: &[u8; 5], _: &mut [u8]) -> Result<usize, ProtectionError> {
            unreachable!()
        }
        fn seal(&mut self, _: &[u8; 5], _: &mut [u8], _: usize) -> Result<(), ProtectionError> {
            unreachable!()
        }
    }
    let err = reprotect(&mut [0u8; 10], &mut ChecksumOnly::new(1, 0), &mut LongTag).unwrap_err();
    assert_eq!(err, RecordError::TagMismatch { open: 16, seal: 32 });
}

#[test]
fn incomplete_input_waits_for_more() {
    let mut a = ChecksumOnly::new(9, 0);
    let good = record(&mut a, 23, b"data", 0);
    for cut in 0..good.len() {
        let mut t = good[..cut].to_vec();
        let r = reprotect(
            &mut t,
            &mut ChecksumOnly::new(9, 0),
            &mut ChecksumOnly::new(4, 0),
        )
        .unwrap();
        assert_eq!(r, Reprotected::default(), "cut at {cut}");
    }
}

#[test]
fn sealed_prefixes_and_close_notify_open_on_the_other_side() {
    let data = payload(MAX_PLAINTEXT_LEN * 2 + 10);
    let mut seal = ChecksumOnly::new(5, 11);
    let mut out = Vec::new();
    seal_application_data(&data, &mut seal, &mut out).unwrap();
    seal_close_notify(&mut seal, &mut out).unwrap();
    assert_eq!(
        out.len(),
        data.len() + 4 * (HEADER_LEN + 1 + 16) + 2,
        "three data records and one alert"
    );
    let (got, closed) = open_all(&out, &mut ChecksumOnly::new(5, 11));
    assert_eq!(got, data);
    assert!(closed);
}

#[test]
fn random_bytes_never_panic() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..2000 {
        let len = (round * 37) % 600;
        let mut buf: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        if round % 3 == 0 && buf.len() > 5 {
            // A plausible header so the body is reached.
            buf[..3].copy_from_slice(&[23, 3, 3]);
            let l = (buf.len() - 5) as u16;
            buf[3..5].copy_from_slice(&l.to_be_bytes());
        }
        let _ = reprotect(
            &mut buf,
            &mut ChecksumOnly::new(9, 0),
            &mut ChecksumOnly::new(4, 0),
        );
    }
}

#[test]
fn the_fuzz_invariant_holds_on_built_inputs() {
    let mut x: u32 = 12345;
    for len in 0..400usize {
        let data: Vec<u8> = (0..len)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect();
        hop_protocols::invariants::tls_record(&data);
    }
    hop_protocols::invariants::tls_record(b"\x03\x00\x05hello\x03\x02\x03abc\x00\x00\x00");
}

/// `open_records` over `wire` cut at `split`, as two reads: the plaintext and whether a
/// close_notify ended it.
fn open_in_two_reads(wire: &[u8], split: usize) -> (Vec<u8>, bool) {
    let mut open = ChecksumOnly::new(1, 0);
    let mut buf = wire[..split].to_vec();
    let first = open_records(&mut buf, &mut open).unwrap();
    assert!(first.produced <= first.consumed && first.consumed <= split);
    assert_eq!(first.produced, first.payload);
    let mut out = buf[..first.produced].to_vec();
    if first.closed {
        return (out, true);
    }
    let mut rest = buf[first.consumed..].to_vec();
    rest.extend_from_slice(&wire[split..]);
    let second = open_records(&mut rest, &mut open).unwrap();
    out.extend_from_slice(&rest[..second.produced]);
    (out, second.closed)
}

#[test]
fn opened_records_give_their_data_at_every_split() {
    let mut a_send = ChecksumOnly::new(1, 0);
    let mut wire = Vec::new();
    let mut expected = Vec::new();
    for (n, pad) in [
        (10usize, 0usize),
        (300, 7),
        (0, 0),
        (2, 0),
        (MAX_PLAINTEXT_LEN, 0),
    ] {
        let d = payload(n);
        wire.extend(record(&mut a_send, 23, &d, pad));
        expected.extend(d);
    }
    wire.extend(record(&mut a_send, 21, &[1, 90], 0)); // user_canceled: dropped
    wire.extend(record(&mut a_send, 21, &[1, 0], 0)); // close_notify: the end
    wire.extend_from_slice(b"after the end: never read");
    for split in 0..=wire.len() {
        let (got, closed) = open_in_two_reads(&wire, split);
        assert_eq!(got, expected, "split at {split}");
        assert!(closed, "split at {split}");
    }
}

#[test]
fn opening_refuses_what_cannot_pass() {
    let open_err = |mut wire: Vec<u8>| open_records(&mut wire, &mut ChecksumOnly::new(1, 0));
    let mut a = ChecksumOnly::new(1, 0);
    assert_eq!(
        open_err(record(&mut a, 22, &[4, 0, 0, 1, 0], 0)).unwrap_err(),
        RecordError::PostHandshakeMessage
    );
    let mut a = ChecksumOnly::new(1, 0);
    assert_eq!(
        open_err(record(&mut a, 21, &[2, 40], 0)).unwrap_err(),
        RecordError::Alert(40)
    );
    // Sealed with another key (or replayed): does not decrypt.
    let mut other = ChecksumOnly::new(9, 0);
    assert_eq!(
        open_err(record(&mut other, 23, b"x", 0)).unwrap_err(),
        RecordError::Protection(ProtectionError::Decrypt)
    );
    assert_eq!(
        open_err(vec![22, 3, 3, 0, 20]).unwrap_err(),
        RecordError::UnexpectedOuterType(22)
    );
    // A partial record is not an error: it waits for more.
    let mut a = ChecksumOnly::new(1, 0);
    let whole = record(&mut a, 23, b"hello", 0);
    for cut in 0..whole.len() {
        let r = open_err(whole[..cut].to_vec()).unwrap();
        assert_eq!(
            (r.consumed, r.produced, r.closed),
            (0, 0, false),
            "cut {cut}"
        );
    }
}
