//! The compact form of a batch of audit events, as agents send it to Auth
//! (`EmitEventsPacked`): length-prefixed events of tagged fields, so that Auth reads an event
//! without parsing JSON.
//!
//! This module owns the byte layout, its limits, [`encode_batch`] and [`decode_batch`]. It never
//! decides whether an event is allowed (that is Auth's `agent_events`, which checks packed events
//! exactly as JSON ones), never does I/O, and never parses JSON.
//!
//! Layout (integers are unsigned LEB128 varints unless said otherwise; `str` is a varint byte
//! length and that many bytes of UTF-8):
//!
//! ```text
//! batch = version (1 byte, 1) · count · event × count
//! event = length · body (length bytes): field*
//! field = 0x01 kind str | 0x02 time varint (µs since the Unix epoch) | 0x03 id str
//!       | 0x04 cluster str | 0x05 user str | 0x06 addr.remote str | 0x07 success (1 byte, 0|1)
//!       | 0x08 error str | 0x09 key str · value (the kind's own fields, one each)
//! value = 0x00 null | 0x01 false | 0x02 true | 0x03 str | 0x04 integer ≥ 0 varint
//!       | 0x05 integer < 0 (varint of −1 − n) | 0x06 f64 (8 bytes LE, finite)
//!       | 0x07 array: count · value × count | 0x08 object: count · (str · value) × count
//! ```
//!
//! The code is not sent: it follows from the kind and the outcome. Limits: at most
//! [`MAX_EVENTS`] events per batch and [`MAX_EVENT_BYTES`] per event (as for JSON events), and
//! values nested at most [`MAX_DEPTH`] deep (as deep as JSON parsing goes). A batch whose framing
//! is broken (version, count, a length past the end, bytes after the last event) is refused
//! whole ([`BatchError`]); a well-framed event with a bad field is refused alone
//! ([`EventError`]), the others of its batch still decode.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Number, Value};

use super::audit::{AuditEvent, EventKind};

/// The layout version this module writes and reads.
pub const VERSION: u8 = 1;
/// Most events in one batch.
pub const MAX_EVENTS: usize = 1000;
/// Most bytes of one event.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;
/// How deep values may nest (arrays and objects within the kind's own fields).
pub const MAX_DEPTH: usize = 128;

/// Names of an event's own parts, which the kind's fields may not reuse.
const RESERVED_KEYS: &[&str] = &[
    "event",
    "code",
    "time",
    "id",
    "cluster",
    "user",
    "addr.remote",
    "success",
    "error",
];

mod tag {
    pub const KIND: u8 = 0x01;
    pub const TIME: u8 = 0x02;
    pub const ID: u8 = 0x03;
    pub const CLUSTER: u8 = 0x04;
    pub const USER: u8 = 0x05;
    pub const ADDR_REMOTE: u8 = 0x06;
    pub const SUCCESS: u8 = 0x07;
    pub const ERROR: u8 = 0x08;
    pub const FIELD: u8 = 0x09;
}

mod vtag {
    pub const NULL: u8 = 0x00;
    pub const FALSE: u8 = 0x01;
    pub const TRUE: u8 = 0x02;
    pub const STR: u8 = 0x03;
    pub const UINT: u8 = 0x04;
    pub const NEG_INT: u8 = 0x05;
    pub const FLOAT: u8 = 0x06;
    pub const ARRAY: u8 = 0x07;
    pub const OBJECT: u8 = 0x08;
}

/// Why a batch cannot be encoded (the caller's fault).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("{count} events in one batch (at most {MAX_EVENTS})")]
    TooManyEvents { count: usize },
}

/// Why a whole batch is refused: its framing is broken (the sender's fault, or damage on the
/// way), so no event of it can be trusted to be where it seems.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("empty batch (no version byte)")]
    Empty,
    #[error("batch version {0} (this Auth reads version {VERSION})")]
    UnknownVersion(u8),
    #[error("malformed varint at byte {at}")]
    BadVarint { at: usize },
    #[error("the batch ends inside {what} at byte {at}")]
    Truncated { what: &'static str, at: usize },
    #[error("{count} events in one batch (at most {MAX_EVENTS})")]
    TooManyEvents { count: u64 },
    #[error("{extra} bytes after the last event")]
    TrailingBytes { extra: usize },
}

/// Why one well-framed event is refused (the sender's fault); the others of its batch stand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("the event is {len} bytes (at most {MAX_EVENT_BYTES})")]
    TooLarge { len: usize },
    #[error("the event ends inside its {what}")]
    Truncated { what: &'static str },
    #[error("malformed varint in the event's {what}")]
    BadVarint { what: &'static str },
    #[error("unknown field tag {0:#04x}")]
    UnknownTag(u8),
    #[error("unknown value tag {tag:#04x} in field {key:?}")]
    UnknownValueTag { key: String, tag: u8 },
    #[error("the event's {what} is not UTF-8")]
    InvalidUtf8 { what: &'static str },
    #[error("the event names its {what} twice")]
    Repeated { what: String },
    #[error("field {key:?} reuses the name of one of the event's own parts")]
    ReservedKey { key: String },
    #[error("success is byte {0} (0 or 1)")]
    BadBool(u8),
    #[error("field {key:?} holds {what}")]
    BadNumber { key: String, what: &'static str },
    #[error("field {key:?} nests deeper than {MAX_DEPTH}")]
    TooDeep { key: String },
    #[error("the event names no kind")]
    MissingKind,
    #[error("event kind {name:?} is unknown")]
    UnknownKind { name: String },
}

/// Encodes `events` as one batch. Each event's own fields are written in the map's order; its
/// code is left out (the reader derives it).
pub fn encode_batch(events: &[AuditEvent]) -> Result<Vec<u8>, EncodeError> {
    if events.len() > MAX_EVENTS {
        return Err(EncodeError::TooManyEvents {
            count: events.len(),
        });
    }
    let mut out = Vec::with_capacity(16 + events.len() * 256);
    out.push(VERSION);
    put_varint(&mut out, events.len() as u64);
    let mut body = Vec::with_capacity(512);
    for ev in events {
        body.clear();
        encode_event(&mut body, ev);
        put_varint(&mut out, body.len() as u64);
        out.extend_from_slice(&body);
    }
    Ok(out)
}

fn encode_event(out: &mut Vec<u8>, ev: &AuditEvent) {
    put_str_field(out, tag::KIND, ev.event);
    out.push(tag::TIME);
    put_varint(out, ev.time);
    put_str_field(out, tag::ID, &ev.id);
    put_str_field(out, tag::CLUSTER, &ev.cluster);
    put_str_field(out, tag::USER, &ev.user);
    if let Some(a) = &ev.addr_remote {
        put_str_field(out, tag::ADDR_REMOTE, a);
    }
    out.extend_from_slice(&[tag::SUCCESS, u8::from(ev.success)]);
    if let Some(e) = &ev.error {
        put_str_field(out, tag::ERROR, e);
    }
    for (k, v) in &ev.fields {
        put_str_field(out, tag::FIELD, k);
        put_value(out, v);
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_str_field(out: &mut Vec<u8>, tag: u8, s: &str) {
    out.push(tag);
    put_str(out, s);
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.push(vtag::NULL),
        Value::Bool(false) => out.push(vtag::FALSE),
        Value::Bool(true) => out.push(vtag::TRUE),
        Value::String(s) => {
            out.push(vtag::STR);
            put_str(out, s);
        }
        Value::Number(n) => put_number(out, n),
        Value::Array(a) => {
            out.push(vtag::ARRAY);
            put_varint(out, a.len() as u64);
            a.iter().for_each(|v| put_value(out, v));
        }
        Value::Object(m) => {
            out.push(vtag::OBJECT);
            put_varint(out, m.len() as u64);
            for (k, v) in m {
                put_str(out, k);
                put_value(out, v);
            }
        }
    }
}

fn put_number(out: &mut Vec<u8>, n: &Number) {
    if let Some(u) = n.as_u64() {
        out.push(vtag::UINT);
        put_varint(out, u);
    } else if let Some(i) = n.as_i64() {
        // Negative here (non-negative ones are u64): −1 − i fits in u64.
        out.push(vtag::NEG_INT);
        put_varint(out, (-1 - i) as u64);
    } else {
        out.push(vtag::FLOAT);
        out.extend_from_slice(&n.as_f64().unwrap_or_default().to_le_bytes());
    }
}

/// Decodes a batch. An event without a time gets `now`'s; one without an id gets an empty one
/// (Auth gives it a new id, as for JSON), one without an outcome is a success unless it names
/// an error.
pub fn decode_batch(
    bytes: &[u8],
    now: SystemTime,
) -> Result<Vec<Result<AuditEvent, EventError>>, BatchError> {
    let now_micros = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    let (&version, rest) = bytes.split_first().ok_or(BatchError::Empty)?;
    if version != VERSION {
        return Err(BatchError::UnknownVersion(version));
    }
    let mut r = Reader { buf: rest, pos: 0 };
    let count = r.batch_varint(1, "the event count")?;
    if count > MAX_EVENTS as u64 {
        return Err(BatchError::TooManyEvents { count });
    }
    let mut events = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let len = r.batch_varint(1, "an event's length")?;
        let body = usize::try_from(len)
            .ok()
            .and_then(|len| r.take(len))
            .ok_or(BatchError::Truncated {
                what: "an event",
                at: 1 + r.pos,
            })?;
        events.push(if body.len() > MAX_EVENT_BYTES {
            Err(EventError::TooLarge { len: body.len() })
        } else {
            decode_event(body, now_micros)
        });
    }
    match r.buf.len() - r.pos {
        0 => Ok(events),
        extra => Err(BatchError::TrailingBytes { extra }),
    }
}

/// One event's parts as they arrive, before the kind is known.
#[derive(Default)]
struct Parts {
    kind: Option<String>,
    time: Option<u64>,
    id: Option<String>,
    cluster: Option<String>,
    user: Option<String>,
    addr_remote: Option<String>,
    success: Option<bool>,
    error: Option<String>,
    fields: Map<String, Value>,
}

fn decode_event(body: &[u8], now_micros: u64) -> Result<AuditEvent, EventError> {
    let mut r = Reader { buf: body, pos: 0 };
    let mut p = Parts::default();
    while let Some(t) = r.byte() {
        match t {
            tag::KIND => once(&mut p.kind, r.str("kind")?, "kind")?,
            tag::TIME => once(&mut p.time, r.varint("time")?, "time")?,
            tag::ID => once(&mut p.id, r.str("id")?, "id")?,
            tag::CLUSTER => once(&mut p.cluster, r.str("cluster")?, "cluster")?,
            tag::USER => once(&mut p.user, r.str("user")?, "user")?,
            tag::ADDR_REMOTE => once(&mut p.addr_remote, r.str("addr.remote")?, "addr.remote")?,
            tag::SUCCESS => once(&mut p.success, r.bool()?, "success")?,
            tag::ERROR => once(&mut p.error, r.str("error")?, "error")?,
            tag::FIELD => field(&mut r, &mut p.fields)?,
            other => return Err(EventError::UnknownTag(other)),
        }
    }
    let name = p.kind.ok_or(EventError::MissingKind)?;
    let kind = EventKind::from_name(&name).ok_or_else(|| EventError::UnknownKind {
        name: name.chars().take(64).collect(),
    })?;
    let success = p.success.unwrap_or(p.error.is_none());
    Ok(AuditEvent {
        event: kind.name(),
        code: kind.code(success),
        time: p.time.unwrap_or(now_micros),
        id: p.id.unwrap_or_default(),
        cluster: p.cluster.unwrap_or_default(),
        user: p.user.unwrap_or_default(),
        addr_remote: p.addr_remote,
        success,
        error: p.error,
        fields: p.fields,
    })
}

fn once<T>(slot: &mut Option<T>, v: T, what: &str) -> Result<(), EventError> {
    if slot.replace(v).is_some() {
        return Err(EventError::Repeated { what: what.into() });
    }
    Ok(())
}

/// One of the kind's own fields: a key and its value.
fn field(r: &mut Reader<'_>, fields: &mut Map<String, Value>) -> Result<(), EventError> {
    let key = r.str("field name")?;
    if RESERVED_KEYS.contains(&key.as_str()) {
        return Err(EventError::ReservedKey { key });
    }
    let value = r.value(&key, 0)?;
    if fields.contains_key(&key) {
        return Err(EventError::Repeated {
            what: format!("field {key:?}"),
        });
    }
    fields.insert(key, value);
    Ok(())
}

/// A cursor over peer bytes; every read is checked.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    /// A varint: `Ok(None)` if the bytes end inside it, `Err(())` if it is longer than a u64.
    fn raw_varint(&mut self) -> Result<Option<u64>, ()> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let Some(b) = self.byte() else {
                return Ok(None);
            };
            if i == 9 && b > 1 {
                return Err(());
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(Some(v));
            }
        }
        Err(())
    }

    fn batch_varint(&mut self, offset: usize, what: &'static str) -> Result<u64, BatchError> {
        let at = offset + self.pos;
        match self.raw_varint() {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err(BatchError::Truncated { what, at }),
            Err(()) => Err(BatchError::BadVarint { at }),
        }
    }

    fn varint(&mut self, what: &'static str) -> Result<u64, EventError> {
        match self.raw_varint() {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err(EventError::Truncated { what }),
            Err(()) => Err(EventError::BadVarint { what }),
        }
    }

    fn len(&mut self, what: &'static str) -> Result<usize, EventError> {
        usize::try_from(self.varint(what)?).map_err(|_| EventError::Truncated { what })
    }

    fn str(&mut self, what: &'static str) -> Result<String, EventError> {
        let n = self.len(what)?;
        let bytes = self.take(n).ok_or(EventError::Truncated { what })?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| EventError::InvalidUtf8 { what })
    }

    fn bool(&mut self) -> Result<bool, EventError> {
        match self.byte() {
            Some(0) => Ok(false),
            Some(1) => Ok(true),
            Some(b) => Err(EventError::BadBool(b)),
            None => Err(EventError::Truncated { what: "success" }),
        }
    }

    /// A value of field `key`, `depth` arrays or objects deep.
    fn value(&mut self, key: &str, depth: usize) -> Result<Value, EventError> {
        const WHAT: &str = "field value";
        let t = self.byte().ok_or(EventError::Truncated { what: WHAT })?;
        Ok(match t {
            vtag::NULL => Value::Null,
            vtag::FALSE => Value::Bool(false),
            vtag::TRUE => Value::Bool(true),
            vtag::STR => Value::String(self.str(WHAT)?),
            vtag::UINT => Value::from(self.varint(WHAT)?),
            vtag::NEG_INT => {
                let n = i64::try_from(self.varint(WHAT)?).map_err(|_| EventError::BadNumber {
                    key: key.into(),
                    what: "an integer below i64::MIN",
                })?;
                Value::from(-1 - n)
            }
            vtag::FLOAT => {
                let b = self.take(8).ok_or(EventError::Truncated { what: WHAT })?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Number::from_f64(f64::from_le_bytes(a))
                    .map(Value::Number)
                    .ok_or_else(|| EventError::BadNumber {
                        key: key.into(),
                        what: "a number that is not finite",
                    })?
            }
            vtag::ARRAY | vtag::OBJECT if depth >= MAX_DEPTH => {
                return Err(EventError::TooDeep { key: key.into() });
            }
            vtag::ARRAY => {
                let n = self.len(WHAT)?;
                // Each element takes a byte at least: a count past the end is refused here,
                // before anything is allocated for it.
                if n > self.buf.len() - self.pos {
                    return Err(EventError::Truncated { what: WHAT });
                }
                let mut a = Vec::with_capacity(n);
                for _ in 0..n {
                    a.push(self.value(key, depth + 1)?);
                }
                Value::Array(a)
            }
            vtag::OBJECT => {
                let n = self.len(WHAT)?;
                if n > self.buf.len() - self.pos {
                    return Err(EventError::Truncated { what: WHAT });
                }
                let mut m = Map::new();
                for _ in 0..n {
                    let k = self.str(WHAT)?;
                    let v = self.value(key, depth + 1)?;
                    m.insert(k, v);
                }
                Value::Object(m)
            }
            other => {
                return Err(EventError::UnknownValueTag {
                    key: key.into(),
                    tag: other,
                });
            }
        })
    }
}

/// The invariants the `audit_wire` fuzz target checks on arbitrary bytes: decoding never
/// panics, and the events that decode encode to a batch that decodes to the same events.
#[doc(hidden)]
pub fn fuzz_decode(data: &[u8]) {
    let now = UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
    let Ok(decoded) = decode_batch(data, now) else {
        return;
    };
    let events: Vec<AuditEvent> = decoded.into_iter().filter_map(Result::ok).collect();
    let Ok(bytes) = encode_batch(&events) else {
        panic!("a decoded batch is too large to encode");
    };
    let again = match decode_batch(&bytes, now) {
        Ok(d) => d,
        Err(e) => panic!("a re-encoded batch does not decode: {e}"),
    };
    assert_eq!(again.len(), events.len());
    for (ev, back) in events.iter().zip(again) {
        match back {
            Ok(back) => assert_eq!(as_json(ev), as_json(&back)),
            // The encoder writes every part; one the input left out can make it too large.
            Err(EventError::TooLarge { .. }) => {}
            Err(e) => panic!("a re-encoded event does not decode: {e}"),
        }
    }
}

fn as_json(ev: &AuditEvent) -> Value {
    serde_json::to_value(ev).unwrap_or_default()
}

#[cfg(test)]
#[path = "audit_wire_tests.rs"]
mod tests;
