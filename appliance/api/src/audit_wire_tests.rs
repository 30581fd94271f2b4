use std::time::{Duration, UNIX_EPOCH};

use serde_json::json;

use super::*;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

/// A realistic event of `kind`, with fields of every value type.
fn sample(kind: EventKind, i: usize) -> AuditEvent {
    let ev = AuditEvent::new(kind, "prod", "alice", now())
        .remote_str("10.0.0.7:51234")
        .field("server", "db-1")
        .field("session_id", "6c0f2a52-1b2e-4d8e-9a57-3c1f5d2b7e11")
        .field(
            "statement",
            format!("SELECT * FROM accounts WHERE id = {i}"),
        )
        .field("bytes_sent", 12_345u64)
        .field("delta", -42i64)
        .field("ratio", 0.25f64)
        .field("truncated", false)
        .field("portal", serde_json::Value::Null)
        .field("parameters", json!(["1", null, "x"]))
        .field("labels", json!({"env": "dev", "n": [1, {"deep": true}]}));
    if i % 2 == 1 {
        ev.failed(kind, "denied by role")
    } else {
        ev
    }
}

fn as_values(events: &[AuditEvent]) -> Vec<Value> {
    events.iter().map(as_json).collect()
}

fn decode_ok(bytes: &[u8]) -> Vec<AuditEvent> {
    decode_batch(bytes, now())
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect()
}

/// A batch holding the given event bodies.
fn batch_of(bodies: &[&[u8]]) -> Vec<u8> {
    let mut out = vec![VERSION];
    put_varint(&mut out, bodies.len() as u64);
    for b in bodies {
        put_varint(&mut out, b.len() as u64);
        out.extend_from_slice(b);
    }
    out
}

/// The body of a `db.query` event with `extra` appended.
fn body_with(extra: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    put_str_field(&mut b, tag::KIND, "db.query");
    b.extend_from_slice(extra);
    b
}

fn event_error(body: &[u8]) -> EventError {
    let mut d = decode_batch(&batch_of(&[body]), now()).unwrap();
    d.remove(0).unwrap_err()
}

#[test]
fn every_kind_an_agent_sends_round_trips() {
    let events: Vec<AuditEvent> = EventKind::FROM_AGENTS
        .iter()
        .enumerate()
        .map(|(i, k)| sample(*k, i))
        .collect();
    let bytes = encode_batch(&events).unwrap();
    assert_eq!(as_values(&decode_ok(&bytes)), as_values(&events));
}

#[test]
fn every_kind_round_trips_with_the_fewest_parts() {
    for kind in EventKind::ALL {
        let mut ev = AuditEvent::new(*kind, "", "", now());
        ev.id = String::new();
        let back = decode_ok(&encode_batch(std::slice::from_ref(&ev)).unwrap());
        assert_eq!(as_values(&back), as_values(&[ev]), "{}", kind.name());
    }
}

#[test]
fn extreme_numbers_round_trip() {
    let ev = AuditEvent::new(EventKind::DbQuery, "c", "u", now())
        .field("max", u64::MAX)
        .field("min", i64::MIN)
        .field("minus_one", -1i64)
        .field("tiny", f64::MIN_POSITIVE)
        .field("neg_zero", -0.0f64)
        .field("whole", 3.0f64);
    let back = decode_ok(&encode_batch(std::slice::from_ref(&ev)).unwrap());
    assert_eq!(as_values(&back), as_values(&[ev]));
}

#[test]
fn an_empty_batch_round_trips() {
    let bytes = encode_batch(&[]).unwrap();
    assert_eq!(bytes, [VERSION, 0]);
    assert!(decode_ok(&bytes).is_empty());
}

/// The layout is a contract between agent and Auth versions: this event's bytes never change.
#[test]
fn the_layout_is_stable() {
    let mut ev = AuditEvent::new(EventKind::Exec, "c", "al", UNIX_EPOCH);
    ev.time = 300;
    ev.id = "i".into();
    let ev = ev.field("n", 1u64);
    let bytes = encode_batch(&[ev]).unwrap();
    let want: &[u8] = &[
        1, 1, 26, // version, count, length
        0x01, 4, b'e', b'x', b'e', b'c', // kind
        0x02, 0xac, 0x02, // time 300
        0x03, 1, b'i', // id
        0x04, 1, b'c', // cluster
        0x05, 2, b'a', b'l', // user
        0x07, 1, // success
        0x09, 1, b'n', 0x04, 1, // field n = 1
    ];
    assert_eq!(bytes, want);
}

#[test]
fn every_prefix_of_a_batch_is_refused_whole() {
    let events: Vec<AuditEvent> = (0..3).map(|i| sample(EventKind::DbQuery, i)).collect();
    let bytes = encode_batch(&events).unwrap();
    for n in 0..bytes.len() {
        let r = decode_batch(&bytes[..n], now());
        assert!(
            matches!(r, Err(BatchError::Empty | BatchError::Truncated { .. })),
            "prefix {n}: {r:?}"
        );
    }
}

#[test]
fn every_prefix_of_an_event_body_fails_cleanly() {
    let ev = sample(EventKind::DbQuery, 1);
    let mut body = Vec::new();
    encode_event(&mut body, &ev);
    for n in 0..body.len() {
        // A cut body, framed as a whole event: refused alone or (cut between fields) a shorter
        // event; never a panic.
        let _ = decode_batch(&batch_of(&[&body[..n]]), now()).unwrap();
    }
    assert_eq!(event_error(&[]), EventError::MissingKind);
    assert_eq!(
        event_error(&body[..body.len() - 1]),
        EventError::Truncated {
            what: "field value"
        }
    );
}

#[test]
fn broken_framing_is_named() {
    assert_eq!(decode_batch(&[], now()).unwrap_err(), BatchError::Empty);
    assert_eq!(
        decode_batch(&[2, 0], now()).unwrap_err(),
        BatchError::UnknownVersion(2)
    );
    let mut over = vec![VERSION];
    put_varint(&mut over, MAX_EVENTS as u64 + 1);
    assert_eq!(
        decode_batch(&over, now()).unwrap_err(),
        BatchError::TooManyEvents {
            count: MAX_EVENTS as u64 + 1
        }
    );
    // One event announced as 9 bytes, 2 there.
    assert_eq!(
        decode_batch(&[VERSION, 1, 9, 0x01, 0], now()).unwrap_err(),
        BatchError::Truncated {
            what: "an event",
            at: 3
        }
    );
    assert_eq!(
        decode_batch(&[VERSION, 1], now()).unwrap_err(),
        BatchError::Truncated {
            what: "an event's length",
            at: 2
        }
    );
    let mut trailing = batch_of(&[&body_with(&[])]);
    trailing.push(0);
    assert_eq!(
        decode_batch(&trailing, now()).unwrap_err(),
        BatchError::TrailingBytes { extra: 1 }
    );
    let long = [
        VERSION, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
    ];
    assert_eq!(
        decode_batch(&long, now()).unwrap_err(),
        BatchError::BadVarint { at: 1 }
    );
    assert!(matches!(
        encode_batch(&vec![sample(EventKind::Exec, 0); MAX_EVENTS + 1]),
        Err(EncodeError::TooManyEvents { count: 1001 })
    ));
}

#[test]
fn a_bad_field_refuses_its_event_alone() {
    let good = body_with(&[]);
    let bad = body_with(&[0x7e]);
    let d = decode_batch(&batch_of(&[&good, &bad, &good]), now()).unwrap();
    assert!(d[0].is_ok() && d[2].is_ok());
    assert_eq!(d[1].as_ref().unwrap_err(), &EventError::UnknownTag(0x7e));
}

#[test]
fn malformed_fields_are_named() {
    assert_eq!(
        event_error(&body_with(&[0x05, 2, 0xc3, 0x28])),
        EventError::InvalidUtf8 { what: "user" }
    );
    assert_eq!(
        event_error(&body_with(&[0x05, 9, b'a'])),
        EventError::Truncated { what: "user" }
    );
    assert_eq!(event_error(&body_with(&[0x07, 2])), EventError::BadBool(2));
    assert_eq!(
        event_error(&body_with(&[0x09, 1, b'k', 0x42])),
        EventError::UnknownValueTag {
            key: "k".into(),
            tag: 0x42
        }
    );
    assert_eq!(
        event_error(&body_with(&[0x01, 1, b'x'])),
        EventError::Repeated {
            what: "kind".into()
        }
    );
    assert_eq!(
        event_error(&body_with(&[0x09, 1, b'k', 0, 0x09, 1, b'k', 0])),
        EventError::Repeated {
            what: "field \"k\"".into()
        }
    );
    let mut reserved = Vec::new();
    put_str_field(&mut reserved, tag::FIELD, "code");
    reserved.push(vtag::NULL);
    assert_eq!(
        event_error(&body_with(&reserved)),
        EventError::ReservedKey { key: "code".into() }
    );
    let mut nan = vec![0x09, 1, b'k', vtag::FLOAT];
    nan.extend_from_slice(&f64::NAN.to_le_bytes());
    assert!(matches!(
        event_error(&body_with(&nan)),
        EventError::BadNumber { .. }
    ));
    let mut unknown = Vec::new();
    put_str_field(&mut unknown, tag::KIND, "no.such.kind");
    assert_eq!(
        event_error(&unknown),
        EventError::UnknownKind {
            name: "no.such.kind".into()
        }
    );
    // An array that claims more elements than bytes remain: refused before any allocation.
    let huge = [0x09, 1, b'k', vtag::ARRAY, 0xff, 0xff, 0xff, 0xff, 0x0f];
    assert_eq!(
        event_error(&body_with(&huge)),
        EventError::Truncated {
            what: "field value"
        }
    );
}

#[test]
fn nesting_is_bounded() {
    let mut deep = vec![0x09, 1, b'k'];
    deep.extend(std::iter::repeat_n([vtag::ARRAY, 1], MAX_DEPTH).flatten());
    deep.push(vtag::NULL);
    assert!(decode_batch(&batch_of(&[&body_with(&deep)]), now()).unwrap()[0].is_ok());
    let mut deeper = vec![0x09, 1, b'k'];
    deeper.extend(std::iter::repeat_n([vtag::ARRAY, 1], MAX_DEPTH + 1).flatten());
    deeper.push(vtag::NULL);
    assert_eq!(
        event_error(&body_with(&deeper)),
        EventError::TooDeep { key: "k".into() }
    );
}

#[test]
fn a_large_event_is_refused_alone() {
    let big = AuditEvent::new(EventKind::Exec, "c", "u", now())
        .field("command", "x".repeat(MAX_EVENT_BYTES));
    let small = sample(EventKind::Exec, 0);
    let d = decode_batch(&encode_batch(&[small, big]).unwrap(), now()).unwrap();
    assert!(d[0].is_ok());
    assert!(matches!(d[1], Err(EventError::TooLarge { .. })));
}

#[test]
fn missing_parts_get_the_json_paths_defaults() {
    let ev = decode_batch(&batch_of(&[&body_with(&[0x08, 1, b'e'])]), now())
        .unwrap()
        .remove(0)
        .unwrap();
    let from_json = AuditEvent::from_json(r#"{"event":"db.query","error":"e"}"#, now()).unwrap();
    assert_eq!(ev.time, from_json.time);
    assert_eq!((ev.success, &ev.code), (false, &from_json.code));
    assert_eq!(ev.user, "");
    assert_eq!(ev.id, "");
}

#[test]
fn the_fuzz_invariants_hold_on_samples() {
    let events: Vec<AuditEvent> = (0..4).map(|i| sample(EventKind::Sftp, i)).collect();
    let bytes = encode_batch(&events).unwrap();
    fuzz_decode(&bytes);
    for n in 0..bytes.len() {
        fuzz_decode(&bytes[..n]);
    }
    fuzz_decode(&batch_of(&[&body_with(&[0x7e]), &body_with(&[])]));
}
