//! The session-recording format: the checked-in version-1 fixture keeps reading with exactly
//! its events (and must keep doing so after the format moves on), round trips, every prefix of
//! a real file, every single-byte corruption, arbitrary read splits, the exports and the
//! playback schedule.

use std::path::PathBuf;
use std::time::Duration;

use hop_storage::recording::{
    AsciicastOptions, ChunkCursor, ChunkError, FORMAT_VERSION, OwnedEvent, PlaybackOptions,
    PlaybackSchedule, Recording, RecordingError, RecordingMeta, RecordingWriter, WriterOptions,
    crc32c, export_asciicast, export_json_lines, parse_chunk, parse_header,
};

const WRITE_FIXTURES_ENV: &str = "HOP_STORAGE_WRITE_FIXTURES";
pub const FIXTURE_SESSION: &str = "0190a5c4-7d2e-7b3a-9f10-3c5d2e8a4b61";

pub fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

/// Metadata for a test recording of `session_id`.
pub fn meta(session_id: &str) -> RecordingMeta {
    RecordingMeta {
        session_id: session_id.to_owned(),
        kind: "ssh".to_owned(),
        cluster: "hop.example.com".to_owned(),
        user: "alice".to_owned(),
        login: "root".to_owned(),
        server_id: "5f0c1e2d-node".to_owned(),
        server_name: "web-1".to_owned(),
        start_unix_us: 1_700_000_000_250_000,
        cols: 80,
        rows: 24,
        term: "xterm-256color".to_owned(),
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn us(n: u64) -> Duration {
    Duration::from_micros(n)
}

/// Appends what a writer returned.
fn put(file: &mut Vec<u8>, bytes: Option<Vec<u8>>) {
    file.extend(bytes.unwrap_or_default());
}

const LONG_OUTPUT: &[u8] =
    b"0123456789abcdefghij0123456789abcdefghij0123456789abcdefghij0123456789abcdefghij0123456789";

/// The session the version-1 fixture holds, written with today's writer.
fn write_fixture_session() -> Vec<u8> {
    let opts = WriterOptions {
        chunk_size: 48,
        coalesce: Some(ms(1)),
    };
    let mut w = RecordingWriter::with_options(meta(FIXTURE_SESSION), opts).unwrap();
    let mut f = w.header_bytes().to_vec();
    put(&mut f, w.push_output(ms(0), b"$ "));
    put(&mut f, w.push_input(ms(1200), b"l"));
    put(&mut f, w.push_input(us(1_200_500), b"s")); // coalesced with "l"
    put(&mut f, w.push_input(ms(1400), b"\r"));
    put(&mut f, w.push_output(ms(1401), b"ls\r\n"));
    // "café €" with both multi-byte characters split across events.
    put(&mut f, w.push_output(ms(1450), b"caf\xc3"));
    put(&mut f, w.push_output(ms(1460), b"\xa9 \xe2\x82"));
    put(&mut f, w.push_output(ms(1470), b"\xac\r\n"));
    put(&mut f, w.push_output(ms(1500), b"bad \xff byte\r\n"));
    put(&mut f, w.push_resize(ms(2000), 100, 30));
    put(
        &mut f,
        w.push_event_json(ms(2100), r#"{"type":"exec","command":"ls -la"}"#)
            .unwrap(),
    );
    put(&mut f, w.push_output(ms(2200), LONG_OUTPUT)); // split at the chunk size
    put(&mut f, w.push_output(ms(9000), b"$ "));
    f.extend(w.finish(ms(9500), Some(3)));
    f
}

/// Exactly what the version-1 fixture holds. Never change this list: the fixture is a file
/// written by the first release of the format and must read the same forever.
fn fixture_events() -> Vec<(Duration, OwnedEvent)> {
    use OwnedEvent::*;
    vec![
        (ms(0), Output(b"$ ".to_vec())),
        (ms(1200), Input(b"ls".to_vec())),
        (ms(1400), Input(b"\r".to_vec())),
        (ms(1401), Output(b"ls\r\n".to_vec())),
        (ms(1450), Output(b"caf\xc3".to_vec())),
        (ms(1460), Output(b"\xa9 \xe2\x82".to_vec())),
        (ms(1470), Output(b"\xac\r\n".to_vec())),
        (ms(1500), Output(b"bad \xff byte\r\n".to_vec())),
        (
            ms(2000),
            Resize {
                cols: 100,
                rows: 30,
            },
        ),
        (
            ms(2100),
            Json(r#"{"type":"exec","command":"ls -la"}"#.to_owned()),
        ),
        (ms(2200), Output(LONG_OUTPUT[..48].to_vec())),
        (ms(2200), Output(LONG_OUTPUT[48..].to_vec())),
        (ms(9000), Output(b"$ ".to_vec())),
        (
            ms(9500),
            End {
                exit_status: Some(3),
            },
        ),
    ]
}

fn fixture() -> Vec<u8> {
    std::fs::read(testdata("recording_v1.hrec")).unwrap()
}

fn events_of(bytes: &[u8]) -> Vec<(Duration, OwnedEvent)> {
    Recording::parse(bytes)
        .unwrap()
        .events()
        .map(|e| {
            let e = e.unwrap();
            (e.at, e.event.to_owned_event())
        })
        .collect()
}

/// The file offsets at which chunks end (the first entry is the end of the header).
fn boundaries(bytes: &[u8]) -> Vec<usize> {
    let rec = Recording::parse(bytes).unwrap();
    let mut out = vec![rec.header_len()];
    let mut at = rec.header_len();
    while let Some((_, len)) = parse_chunk(&bytes[at..]).unwrap() {
        at += len;
        out.push(at);
    }
    assert_eq!(at, bytes.len());
    out
}

/// A small deterministic PRNG (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn the_v1_fixture_reads_its_exact_events() {
    let bytes = fixture();
    let rec = Recording::parse(&bytes).unwrap();
    assert_eq!(rec.header().version, 1);
    assert_eq!(rec.meta(), &meta(FIXTURE_SESSION));
    assert_eq!(events_of(&bytes), fixture_events());
    let summary = rec.check().unwrap();
    assert_eq!(summary.events, fixture_events().len() as u64);
    assert!(summary.chunks >= 4, "{summary:?}");
    assert_eq!(summary.duration, ms(9500));
    assert_eq!(summary.exit_status, Some(3));
}

#[test]
fn todays_writer_still_writes_the_v1_fixture_byte_for_byte() {
    // Only meaningful while version 1 is current: a change to the bytes written needs a new
    // format version (and a new fixture beside this one).
    if FORMAT_VERSION == 1 {
        assert_eq!(write_fixture_session(), fixture());
    }
}

/// Rewrites the fixtures; run only when `WRITE_FIXTURES_ENV` is set, and only when creating
/// them: an existing version's fixture must never change.
#[test]
#[ignore = "writes testdata; run explicitly with HOP_STORAGE_WRITE_FIXTURES=1"]
fn write_recording_v1_fixture() {
    if std::env::var_os(WRITE_FIXTURES_ENV).is_none() {
        return;
    }
    assert_eq!(
        FORMAT_VERSION, 1,
        "the v1 fixture can only be written by a v1 writer"
    );
    let bytes = write_fixture_session();
    std::fs::write(testdata("recording_v1.hrec"), &bytes).unwrap();
    let rec = Recording::parse(&bytes).unwrap();
    let mut cast = Vec::new();
    export_asciicast(&rec, &AsciicastOptions::default(), &mut cast).unwrap();
    std::fs::write(testdata("recording_v1.cast"), &cast).unwrap();
}

#[test]
fn many_events_round_trip_exactly() {
    let mut rng = Rng::new(7);
    let opts = WriterOptions {
        chunk_size: 4096,
        coalesce: None,
    };
    let mut w = RecordingWriter::with_options(meta("abcdef01"), opts).unwrap();
    let mut file = w.header_bytes().to_vec();
    let mut expected = Vec::new();
    let mut at = Duration::ZERO;
    for _ in 0..20_000 {
        at += us(rng.below(50_000));
        let event = match rng.below(10) {
            0..=5 => {
                let len = [1, 3, 20, 200, 3000][rng.below(5) as usize];
                OwnedEvent::Output(rng.bytes(len))
            }
            6 | 7 => {
                let len = 1 + rng.below(4) as usize;
                OwnedEvent::Input(rng.bytes(len))
            }
            8 => OwnedEvent::Resize {
                cols: rng.below(500) as u16,
                rows: rng.below(200) as u16,
            },
            _ => OwnedEvent::Json(format!(r#"{{"n":{}}}"#, rng.next())),
        };
        let bytes = match &event {
            OwnedEvent::Output(b) => w.push_output(at, b),
            OwnedEvent::Input(b) => w.push_input(at, b),
            OwnedEvent::Resize { cols, rows } => w.push_resize(at, *cols, *rows),
            OwnedEvent::Json(s) => w.push_event_json(at, s).unwrap(),
            OwnedEvent::End { .. } => unreachable!(),
        };
        put(&mut file, bytes);
        expected.push((at, event));
        if rng.below(1000) == 0 {
            put(&mut file, w.flush_chunk());
        }
    }
    at += ms(5);
    file.extend(w.finish(at, Some(-1)));
    expected.push((
        at,
        OwnedEvent::End {
            exit_status: Some(-1),
        },
    ));
    assert_eq!(events_of(&file), expected);
    let summary = Recording::parse(&file).unwrap().check().unwrap();
    assert!(summary.chunks > 100, "{summary:?}");
}

#[test]
fn coalesced_writes_keep_every_byte_in_order() {
    let mut w = RecordingWriter::new(meta("abcdef02")).unwrap();
    let mut file = w.header_bytes().to_vec();
    let mut output = Vec::new();
    let mut input = Vec::new();
    let mut at = Duration::ZERO;
    let mut rng = Rng::new(11);
    for i in 0..100_000u32 {
        // A burst of one-byte writes (a program writing unbuffered), with an occasional key.
        at += us(rng.below(40));
        let byte = [(i % 251) as u8];
        if rng.below(500) == 0 {
            input.push(byte[0]);
            put(&mut file, w.push_input(at, &byte));
        } else {
            output.push(byte[0]);
            put(&mut file, w.push_output(at, &byte));
        }
    }
    file.extend(w.finish(at, None));
    let mut got_output = Vec::new();
    let mut got_input = Vec::new();
    let mut events = 0;
    for (_, e) in events_of(&file) {
        events += 1;
        match e {
            OwnedEvent::Output(b) => got_output.extend(b),
            OwnedEvent::Input(b) => got_input.extend(b),
            OwnedEvent::End { exit_status: None } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got_output, output);
    assert_eq!(got_input, input);
    // Coalescing merged the runs of output between inputs.
    assert!(events < 5_000, "{events} events for 100000 writes");
    assert!(file.len() < 120_000, "{} bytes", file.len());
}

#[test]
fn the_writer_splits_large_writes_and_clamps_time() {
    let opts = WriterOptions {
        chunk_size: 1024,
        coalesce: Some(ms(1)),
    };
    let mut w = RecordingWriter::with_options(meta("abcdef03"), opts).unwrap();
    let mut file = w.header_bytes().to_vec();
    let big = Rng::new(3).bytes(10_000);
    put(&mut file, w.push_output(ms(10), &big));
    // Backwards in time: clamped to 10 ms.
    put(&mut file, w.push_output(ms(5), b"late"));
    put(&mut file, w.push_resize(ms(4), 10, 10));
    file.extend(w.finish(ms(3), None));
    let events = events_of(&file);
    assert!(events.iter().all(|(at, _)| *at == ms(10)), "{events:?}");
    let mut output = Vec::new();
    for (_, e) in &events {
        if let OwnedEvent::Output(b) = e {
            assert!(b.len() <= 1024);
            output.extend_from_slice(b);
        }
    }
    assert_eq!(output, [big.as_slice(), b"late"].concat());
    let rec = Recording::parse(&file).unwrap();
    for chunk in rec.chunks() {
        let chunk = chunk.unwrap();
        assert!(chunk.event_count() >= 1);
    }
    assert!(rec.chunks().count() >= 10);
}

#[test]
fn writer_options_and_events_are_validated() {
    let bad = WriterOptions {
        chunk_size: 0,
        coalesce: None,
    };
    assert!(matches!(
        RecordingWriter::with_options(meta("abcdef04"), bad),
        Err(RecordingError::InvalidOptions {
            field: "chunk_size",
            ..
        })
    ));
    assert!(matches!(
        RecordingWriter::new(meta("../etc")),
        Err(RecordingError::InvalidMeta {
            field: "session_id",
            ..
        })
    ));
    let mut w = RecordingWriter::new(meta("abcdef04")).unwrap();
    assert!(matches!(
        w.push_event_json(ms(1), "not json"),
        Err(RecordingError::InvalidEvent { .. })
    ));
    let huge = format!("\"{}\"", "x".repeat(40_000));
    assert!(matches!(
        w.push_event_json(ms(1), &huge),
        Err(RecordingError::EventTooLarge { .. })
    ));
    assert!(
        w.push_event(ms(1), &serde_json::json!({"type": "exec"}))
            .unwrap()
            .is_none()
    );
}

#[test]
fn flush_stale_only_flushes_old_chunks() {
    let mut w = RecordingWriter::new(meta("abcdef05")).unwrap();
    assert!(w.flush_stale(ms(10_000), ms(5_000)).is_none());
    assert!(w.push_output(ms(1_000), b"x").is_none());
    assert!(w.flush_stale(ms(5_999), ms(5_000)).is_none());
    assert!(w.buffered_len() > 0);
    let chunk = w.flush_stale(ms(6_000), ms(5_000)).unwrap();
    assert!(parse_chunk(&chunk).unwrap().is_some());
    assert_eq!(w.buffered_len(), 0);
}

#[test]
fn every_prefix_parses_to_complete_chunks_then_needs_more() {
    let bytes = fixture();
    let bounds = boundaries(&bytes);
    let all = fixture_events();
    for len in 0..=bytes.len() {
        let prefix = &bytes[..len];
        if len < bounds[0] {
            assert!(parse_header(prefix).unwrap().is_none(), "len {len}");
            assert_eq!(
                Recording::parse(prefix).unwrap_err(),
                RecordingError::Truncated {
                    offset: 0,
                    complete_chunks: 0
                }
            );
            continue;
        }
        let rec = Recording::parse(prefix).unwrap();
        let complete = bounds.iter().filter(|&&b| b <= len).count() - 1;
        let results: Vec<_> = rec.chunks().collect();
        let oks = results.iter().take_while(|r| r.is_ok()).count();
        assert_eq!(oks, complete, "len {len}");
        let last_boundary = bounds[complete];
        if last_boundary == len {
            assert_eq!(results.len(), complete, "len {len}");
        } else {
            assert_eq!(results.len(), complete + 1, "len {len}");
            assert_eq!(
                results.last().unwrap().as_ref().unwrap_err(),
                &RecordingError::Truncated {
                    offset: last_boundary as u64,
                    complete_chunks: complete as u64,
                },
                "len {len}"
            );
            assert!(parse_chunk(&bytes[last_boundary..len]).unwrap().is_none());
        }
        let events: Vec<_> = rec
            .events()
            .filter_map(Result::ok)
            .map(|e| (e.at, e.event.to_owned_event()))
            .collect();
        assert_eq!(events, all[..events.len()], "len {len}");
        if len < bytes.len() {
            assert!(rec.check().is_err());
        }
    }
}

#[test]
fn every_single_byte_corruption_is_detected() {
    let bytes = fixture();
    for i in 0..bytes.len() {
        for mask in [0x01u8, 0x80, 0xff, 0x5a] {
            let mut bad = bytes.clone();
            bad[i] ^= mask;
            let err = match Recording::parse(&bad) {
                Err(err) => err,
                Ok(rec) => rec
                    .chunks()
                    .find_map(Result::err)
                    .unwrap_or_else(|| panic!("flip {mask:#x} at {i} went unnoticed")),
            };
            assert!(
                !err.is_truncation(),
                "flip {mask:#x} at {i} reads as truncation: {err}"
            );
            if i >= boundaries(&bytes)[0] {
                assert!(
                    matches!(err, RecordingError::CorruptChunk { .. }),
                    "flip at {i}: {err}"
                );
            }
        }
    }
}

#[test]
fn a_checksum_mismatch_names_the_chunk_and_its_offset() {
    let bytes = fixture();
    let bounds = boundaries(&bytes);
    let mut bad = bytes.clone();
    bad[bounds[2] + 20] ^= 1;
    let err = Recording::parse(&bad)
        .unwrap()
        .chunks()
        .find_map(Result::err)
        .unwrap();
    assert!(matches!(
        err,
        RecordingError::CorruptChunk {
            index: 2,
            error: ChunkError::BodyChecksum { .. },
            ..
        }
    ));
    let RecordingError::CorruptChunk { offset, .. } = err else {
        unreachable!()
    };
    assert_eq!(offset, bounds[2] as u64);
    let text = err.to_string();
    assert!(
        text.contains("chunk 2") && text.contains(&format!("byte {}", bounds[2])),
        "{text}"
    );
}

#[test]
fn random_read_splits_yield_the_same_events() {
    let bytes = fixture();
    let expected = fixture_events();
    let mut rng = Rng::new(42);
    for _ in 0..300 {
        // Deliver the file in random pieces, parsing whatever is complete, as a reader of a
        // socket or a growing file would.
        let mut buf: Vec<u8> = Vec::new();
        let mut fed = 0;
        let mut header = None;
        let mut cursor: Option<ChunkCursor> = None;
        let mut events = Vec::new();
        while fed < bytes.len() || !buf.is_empty() {
            let piece = (1 + rng.below(64) as usize).min(bytes.len() - fed);
            buf.extend_from_slice(&bytes[fed..fed + piece]);
            fed += piece;
            loop {
                if header.is_none() {
                    match parse_header(&buf).unwrap() {
                        Some((h, len)) => {
                            cursor = Some(ChunkCursor::new(&h, len));
                            header = Some(h);
                            buf.drain(..len);
                        }
                        None => break,
                    }
                }
                let cur = cursor.as_mut().unwrap();
                match cur.parse_next(&buf).unwrap() {
                    Some((chunk, len)) => {
                        events.extend(chunk.events().map(|e| (e.at, e.event.to_owned_event())));
                        buf.drain(..len);
                    }
                    None => break,
                }
            }
            if fed == bytes.len() {
                assert!(buf.is_empty());
            }
        }
        assert_eq!(events, expected);
        assert!(cursor.unwrap().ended());
    }
}

#[test]
fn a_newer_version_is_refused_by_number() {
    let mut bytes = fixture();
    bytes[7..9].copy_from_slice(&2u16.to_le_bytes());
    let err = Recording::parse(&bytes).unwrap_err();
    assert_eq!(
        err,
        RecordingError::UnsupportedVersion {
            found: 2,
            supported: 1
        }
    );
    assert!(err.to_string().contains("version 2"), "{err}");
    // Refused as soon as the version is readable, whatever follows.
    assert!(matches!(
        parse_header(&bytes[..9]),
        Err(RecordingError::UnsupportedVersion { found: 2, .. })
    ));
    bytes[7..9].copy_from_slice(&0u16.to_le_bytes());
    assert!(matches!(
        parse_header(&bytes),
        Err(RecordingError::UnsupportedVersion { found: 0, .. })
    ));
}

#[test]
fn other_files_are_not_recordings() {
    assert_eq!(parse_header(b"").unwrap(), None);
    assert_eq!(parse_header(b"HOPR").unwrap(), None);
    for junk in [
        &b"HOPRECX"[..],
        b"\x1b[0m",
        b"{\"version\": 2}",
        b"HOPREC\x01",
    ] {
        assert_eq!(
            parse_header(junk).unwrap_err(),
            RecordingError::NotARecording
        );
    }
}

/// A chunk with the given body and valid checksums.
fn chunk_with_body(body: &[u8]) -> Vec<u8> {
    let mut head = vec![0xC1];
    head.extend_from_slice(&(body.len() as u32).to_le_bytes());
    head.extend_from_slice(&crc32c(body).to_le_bytes());
    let head_crc = crc32c(&head);
    head.extend_from_slice(&head_crc.to_le_bytes());
    head.extend_from_slice(body);
    head
}

#[test]
fn chunk_limits_and_malformed_bodies_are_refused() {
    // A length over the limit is refused from the header alone.
    let mut head = vec![0xC1];
    head.extend_from_slice(&(2u32 << 20).to_le_bytes());
    head.extend_from_slice(&0u32.to_le_bytes());
    let head_crc = crc32c(&head);
    head.extend_from_slice(&head_crc.to_le_bytes());
    assert!(matches!(
        parse_chunk(&head),
        Err(ChunkError::TooLong { len, .. }) if len == 2 << 20
    ));
    assert_eq!(
        parse_chunk(&[0x00]).unwrap_err(),
        ChunkError::UnknownType { found: 0 }
    );

    let malformed = |body: &[u8]| match parse_chunk(&chunk_with_body(body)) {
        Err(ChunkError::Malformed { reason }) => reason,
        other => panic!("{body:?}: {other:?}"),
    };
    // seq, start, count, then events.
    assert_eq!(malformed(&[0, 0, 0]), "chunk holds no events");
    assert_eq!(malformed(&[0, 0, 1, 9, 0]), "unknown event kind");
    assert_eq!(
        malformed(&[0, 0, 1, 1, 0, 5, b'a']),
        "payload runs past the end of the chunk"
    );
    assert_eq!(
        malformed(&[0, 0, 2, 1, 0, 1, b'a']),
        "event runs past the end of the chunk"
    );
    assert_eq!(
        malformed(&[0, 0, 1, 1, 0, 1, b'a', 0]),
        "bytes after the last event"
    );
    assert_eq!(
        malformed(&[0, 0, 2, 5, 0, 0, 1, 0, 1, b'a']),
        "event after the end event"
    );
    assert_eq!(
        malformed(&[0, 0, 1, 4, 0, 1, 0xff]),
        "JSON event is not UTF-8"
    );
    assert_eq!(
        malformed(&[0, 0, 1, 3, 0, 0xff, 0xff, 0x04, 1]),
        "resize width over 65535"
    );
    let mut overflow = vec![
        0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 1, 3,
    ];
    overflow.extend([0x01, 1, 1]);
    assert_eq!(malformed(&overflow), "event time overflows");
    // A valid body parses.
    let good = chunk_with_body(&[0, 7, 1, 1, 0, 1, b'a']);
    let (chunk, len) = parse_chunk(&good).unwrap().unwrap();
    assert_eq!((len, chunk.event_count(), chunk.start()), (20, 1, us(7)));
}

#[test]
fn chunks_must_follow_each_other() {
    let bytes = fixture();
    let b = boundaries(&bytes);
    // Swap chunks 1 and 2.
    let swapped = [
        &bytes[..b[1]],
        &bytes[b[2]..b[3]],
        &bytes[b[1]..b[2]],
        &bytes[b[3]..],
    ]
    .concat();
    let err = Recording::parse(&swapped)
        .unwrap()
        .chunks()
        .find_map(Result::err)
        .unwrap();
    assert!(matches!(
        err,
        RecordingError::CorruptChunk {
            index: 1,
            error: ChunkError::OutOfSequence {
                expected: 1,
                found: 2
            },
            ..
        }
    ));
    // Anything after the end.
    let mut doubled = bytes.clone();
    doubled.extend_from_slice(&bytes[b[b.len() - 2]..]);
    let err = Recording::parse(&doubled)
        .unwrap()
        .chunks()
        .find_map(Result::err)
        .unwrap();
    assert!(matches!(
        err,
        RecordingError::CorruptChunk {
            error: ChunkError::AfterEnd,
            ..
        }
    ));
    // Even a few stray bytes after the end are damage, not a chunk cut short.
    let mut tail = bytes.clone();
    tail.extend_from_slice(&[0xC1, 0, 0]);
    let err = Recording::parse(&tail)
        .unwrap()
        .chunks()
        .find_map(Result::err)
        .unwrap();
    assert!(
        matches!(
            err,
            RecordingError::CorruptChunk {
                error: ChunkError::AfterEnd,
                ..
            }
        ),
        "{err}"
    );
    // No end at all.
    let unfinished = &bytes[..b[b.len() - 2]];
    assert!(matches!(
        Recording::parse(unfinished).unwrap().check(),
        Err(RecordingError::Unfinished { .. })
    ));
}

#[test]
fn the_fixture_exports_to_the_expected_asciicast() {
    let bytes = fixture();
    let rec = Recording::parse(&bytes).unwrap();
    let mut cast = Vec::new();
    let summary = export_asciicast(&rec, &AsciicastOptions::default(), &mut cast).unwrap();
    let expected = std::fs::read_to_string(testdata("recording_v1.cast")).unwrap();
    assert_eq!(String::from_utf8(cast).unwrap(), expected);
    assert!(!summary.truncated);
    assert_eq!(summary.lines as usize, expected.lines().count() - 1);
    // Every line is JSON; the header is asciicast v2.
    let mut lines = expected.lines();
    let header: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(header["version"], 2);
    assert_eq!(header["width"], 80);
    assert_eq!(header["env"]["TERM"], "xterm-256color");
    let mut text = String::new();
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v[1] == "o" {
            text.push_str(v[2].as_str().unwrap());
        }
    }
    assert!(text.contains("café €\r\n"), "{text:?}");
    assert!(text.contains("bad \u{FFFD} byte"), "{text:?}");
}

#[test]
fn asciicast_input_is_exported_only_when_asked() {
    let bytes = fixture();
    let rec = Recording::parse(&bytes).unwrap();
    let opts = AsciicastOptions {
        include_input: true,
        title: Some("demo".to_owned()),
        idle_time_limit: Some(ms(2500)),
    };
    let mut cast = Vec::new();
    export_asciicast(&rec, &opts, &mut cast).unwrap();
    let cast = String::from_utf8(cast).unwrap();
    let header: serde_json::Value = serde_json::from_str(cast.lines().next().unwrap()).unwrap();
    assert_eq!(header["title"], "demo");
    assert_eq!(header["idle_time_limit"], 2.5);
    assert!(cast.contains("[1.200000, \"i\", \"ls\"]\n"), "{cast}");
    assert!(cast.contains("[2.000000, \"r\", \"100x30\"]\n"), "{cast}");
}

#[test]
fn a_truncated_recording_exports_its_complete_chunks() {
    let bytes = fixture();
    let b = boundaries(&bytes);
    let cut = &bytes[..b[3] + 5];
    let rec = Recording::parse(cut).unwrap();
    let mut cast = Vec::new();
    let summary = export_asciicast(&rec, &AsciicastOptions::default(), &mut cast).unwrap();
    assert!(summary.truncated);
    assert!(summary.lines > 0);
    let mut corrupt = bytes.clone();
    corrupt[b[3] + 15] ^= 0x10;
    let rec = Recording::parse(&corrupt).unwrap();
    assert!(export_asciicast(&rec, &AsciicastOptions::default(), &mut Vec::new()).is_err());
}

#[test]
fn json_lines_export_is_lossless() {
    let bytes = fixture();
    let rec = Recording::parse(&bytes).unwrap();
    let mut out = Vec::new();
    let summary = export_json_lines(&rec, &mut out).unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(summary.lines as usize, fixture_events().len());
    assert_eq!(lines.len(), fixture_events().len() + 1);
    assert_eq!(lines[0]["type"], "header");
    assert_eq!(lines[0]["meta"]["user"], "alice");
    assert_eq!(lines[1]["type"], "output");
    assert_eq!(lines[1]["text"], "$ ");
    assert_eq!(lines[5]["hex"], hex::encode(b"caf\xc3"));
    assert_eq!(lines[9]["type"], "resize");
    assert_eq!(lines[9]["cols"], 100);
    assert_eq!(lines[10]["event"]["command"], "ls -la");
    assert_eq!(lines[10]["at_us"], 2_100_000);
    let end = lines.last().unwrap();
    assert_eq!(
        (end["type"].as_str(), end["exit_status"].as_i64()),
        (Some("end"), Some(3))
    );
}

#[test]
fn playback_schedule_scales_and_caps_gaps() {
    let times = [0u64, 1200, 1400, 1401, 9000, 9500].map(ms);
    let due = |opts: PlaybackOptions| {
        let mut s = PlaybackSchedule::new(opts).unwrap();
        times.map(|t| s.due(t))
    };
    assert_eq!(due(PlaybackOptions::default()), times);
    assert_eq!(
        due(PlaybackOptions {
            speed: 2.0,
            idle_limit: None
        }),
        [0, 600, 700, 700_500, 4500, 4750].map(|n| if n == 700_500 { us(n) } else { ms(n) })
    );
    // Idle gaps are capped before the speed applies (the 7.6 s pause becomes 1 s).
    assert_eq!(
        due(PlaybackOptions {
            speed: 1.0,
            idle_limit: Some(ms(1000))
        }),
        [0, 1000, 1200, 1201, 2201, 2701].map(ms)
    );
    assert_eq!(
        due(PlaybackOptions {
            speed: 4.0,
            idle_limit: Some(ms(1000))
        }),
        [0, 250, 300, 300_250, 550_250, 675_250].map(|n| if n < 1000 { ms(n) } else { us(n) })
    );
}

#[test]
fn playback_speed_changes_apply_to_later_gaps() {
    let mut s = PlaybackSchedule::new(PlaybackOptions::default()).unwrap();
    assert_eq!(s.due(ms(1000)), ms(1000));
    s.set_speed(4.0).unwrap();
    assert_eq!(s.due(ms(3000)), ms(1500));
    // Out-of-order times never schedule earlier.
    assert_eq!(s.due(ms(2000)), ms(1500));
    s.skip_to(ms(60_000));
    assert_eq!(s.due(ms(60_400)), ms(1600));
    s.pause_for(ms(10_000));
    assert_eq!(s.due(ms(60_400)), ms(11_600));
    assert_eq!(PlaybackSchedule::wait(ms(11_600), ms(11_000)), ms(600));
    assert_eq!(
        PlaybackSchedule::wait(ms(11_600), ms(12_000)),
        Duration::ZERO
    );
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e9] {
        assert!(s.set_speed(bad).is_err(), "{bad}");
        assert!(
            PlaybackSchedule::new(PlaybackOptions {
                speed: bad,
                idle_limit: None
            })
            .is_err()
        );
    }
    assert!(
        PlaybackSchedule::new(PlaybackOptions {
            speed: 1.0,
            idle_limit: Some(Duration::ZERO)
        })
        .is_err()
    );
}

#[test]
fn the_fuzz_invariants_hold_on_real_and_damaged_files() {
    let bytes = fixture();
    hop_storage::recording::fuzz_reader(&bytes);
    for len in 0..bytes.len() {
        hop_storage::recording::fuzz_reader(&bytes[..len]);
    }
    let mut rng = Rng::new(5);
    for _ in 0..2000 {
        let mut bad = bytes.clone();
        for _ in 0..1 + rng.below(3) {
            let i = rng.below(bad.len() as u64) as usize;
            bad[i] = rng.next() as u8;
        }
        hop_storage::recording::fuzz_reader(&bad);
    }
}

#[test]
fn a_resumed_writer_closes_a_file_whose_writer_stopped() {
    let mut w = RecordingWriter::new(meta(FIXTURE_SESSION)).unwrap();
    let mut file = w.header_bytes().to_vec();
    put(&mut file, w.push_output(ms(5), b"before the crash"));
    put(&mut file, w.flush_chunk());
    put(&mut file, w.push_output(ms(9), b"lost"));
    put(&mut file, w.flush_chunk());
    // The process died inside the second chunk: only a prefix of it reached the disk.
    file.truncate(file.len() - 3);
    let (header, header_len) = parse_header(&file).unwrap().unwrap();
    let mut cursor = ChunkCursor::new(&header, header_len);
    let mut offset = header_len;
    while let Ok(Some((_, len))) = cursor.parse_next(&file[offset..]) {
        offset += len;
    }
    file.truncate(offset);
    let mut w = RecordingWriter::resume(
        header.meta.clone(),
        WriterOptions::default(),
        cursor.chunks(),
        cursor.last(),
    )
    .unwrap();
    put(
        &mut file,
        w.push_event_json(ms(1), r#"{"type":"recording.interrupted"}"#)
            .unwrap(),
    );
    file.extend(w.finish(ms(2), None));
    let events = events_of(&file);
    assert_eq!(
        events,
        vec![
            (ms(5), OwnedEvent::Output(b"before the crash".to_vec())),
            (
                ms(5),
                OwnedEvent::Json(r#"{"type":"recording.interrupted"}"#.into())
            ),
            (ms(5), OwnedEvent::End { exit_status: None }),
        ]
    );
}
