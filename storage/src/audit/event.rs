//! The audit event schema. This module owns [`AuditEvent`] (what producers hand in),
//! [`StoredEvent`] (what the log hands back: the event plus its place in the hash chain), their
//! exact JSON form, the validation rules an event must pass before it is queued, and the
//! producer-side preparation that turns an event into its canonical JSON body. It must never
//! read the clock or the random source on its own: the log passes "now" and fresh ids in.
//!
//! JSON form, fields in this order: `event`, `code`, `time` (UTC, RFC 3339 with exactly six
//! fractional digits, e.g. `2024-05-01T12:00:00.000123Z`), `id`, `cluster`, `user`, `login`,
//! `server`, `addr.remote`, `session_id`, `success`, `error`, then the kind's own fields, then
//! (stored events only) `seq`, `chain`, `prev_hash`, `hash`. Empty optional fields are omitted.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::{OffsetDateTime, UtcOffset};

use super::error::AuditError;

/// Field names the schema itself uses; an event's own [`AuditEvent::fields`] may not reuse them.
pub const RESERVED_FIELDS: [&str; 16] = [
    "event",
    "code",
    "time",
    "id",
    "cluster",
    "user",
    "login",
    "server",
    "addr.remote",
    "session_id",
    "success",
    "error",
    "seq",
    "chain",
    "prev_hash",
    "hash",
];

/// The longest `event` type and `id`, in bytes.
pub const MAX_NAME_LEN: usize = 256;
/// The longest identity field (`user`, `login`, `server`, `session_id`, …), in bytes.
pub const MAX_FIELD_LEN: usize = 4096;
/// The largest serialized event, in bytes.
pub const MAX_EVENT_LEN: usize = 256 * 1024;

/// The latest representable event time: 9999-12-31T23:59:59.999999Z, in µs since the epoch.
pub(crate) const MAX_TIME_US: u64 = 253_402_300_799_999_999;

/// One audit event as a producer describes it.
///
/// `time` and `id` may be left unset: the log stamps the time from its clock when the event is
/// handed in and assigns a time-ordered (v7) UUID from the log's clock. A producer that may send the same event twice
/// (a retry after a timeout, a spool replayed after a restart) sets `id` itself: the log stores
/// an id only once and acknowledges the repeat with the original's position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// The event type, e.g. `user.login`, `session.start`, `db.query`.
    pub event: String,
    /// A stable short code per event kind and outcome, e.g. `T1000I`.
    pub code: String,
    /// When it happened (UTC, microsecond precision); `None`: when it was handed to the log.
    #[serde(default, with = "time_format", skip_serializing_if = "Option::is_none")]
    pub time: Option<OffsetDateTime>,
    /// Unique id; empty: the log assigns a UUID.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// The cluster the event happened in.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster: String,
    /// The hop user who acted.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// The login (OS user, database user) used on the target.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub login: String,
    /// The target server or resource.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub server: String,
    /// The remote peer's address.
    #[serde(
        rename = "addr.remote",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub addr_remote: String,
    /// The session the event belongs to.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub session_id: String,
    /// Whether the action succeeded.
    pub success: bool,
    /// Why it failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The event kind's own fields (none may use a [`RESERVED_FIELDS`] name).
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

impl AuditEvent {
    /// A successful event of type `event` with outcome code `code` and nothing else set.
    pub fn new(event: impl Into<String>, code: impl Into<String>) -> Self {
        Self {
            event: event.into(),
            code: code.into(),
            time: None,
            id: String::new(),
            cluster: String::new(),
            user: String::new(),
            login: String::new(),
            server: String::new(),
            addr_remote: String::new(),
            session_id: String::new(),
            success: true,
            error: None,
            fields: Map::new(),
        }
    }

    /// Sets the id (for idempotent resubmission).
    #[must_use]
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// Sets the time the event happened.
    #[must_use]
    pub fn with_time(mut self, time: OffsetDateTime) -> Self {
        self.time = Some(time);
        self
    }

    /// Sets the cluster.
    #[must_use]
    pub fn with_cluster(mut self, cluster: impl Into<String>) -> Self {
        self.cluster = cluster.into();
        self
    }

    /// Sets the acting user.
    #[must_use]
    pub fn with_user(mut self, user: impl Into<String>) -> Self {
        self.user = user.into();
        self
    }

    /// Sets the login used on the target.
    #[must_use]
    pub fn with_login(mut self, login: impl Into<String>) -> Self {
        self.login = login.into();
        self
    }

    /// Sets the target server.
    #[must_use]
    pub fn with_server(mut self, server: impl Into<String>) -> Self {
        self.server = server.into();
        self
    }

    /// Sets the remote address.
    #[must_use]
    pub fn with_addr_remote(mut self, addr: impl Into<String>) -> Self {
        self.addr_remote = addr.into();
        self
    }

    /// Sets the session id.
    #[must_use]
    pub fn with_session_id(mut self, session_id: impl Into<String>) -> Self {
        self.session_id = session_id.into();
        self
    }

    /// Marks the event failed with `error`.
    #[must_use]
    pub fn with_error(mut self, error: impl Into<String>) -> Self {
        self.success = false;
        self.error = Some(error.into());
        self
    }

    /// Adds one of the kind's own fields.
    #[must_use]
    pub fn with_field(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.fields.insert(name.into(), value.into());
        self
    }

    /// Checks the schema rules that do not depend on the time or id being set.
    pub fn validate(&self) -> Result<(), AuditError> {
        check_name("event", &self.event)?;
        check_name("code", &self.code)?;
        if self.id.len() > MAX_NAME_LEN {
            return Err(AuditError::invalid_event(
                "id",
                format!("is longer than {MAX_NAME_LEN} bytes"),
            ));
        }
        for (field, value) in [
            ("cluster", &self.cluster),
            ("user", &self.user),
            ("login", &self.login),
            ("server", &self.server),
            ("addr.remote", &self.addr_remote),
            ("session_id", &self.session_id),
        ] {
            if value.len() > MAX_FIELD_LEN {
                return Err(AuditError::invalid_event(
                    field,
                    format!("is longer than {MAX_FIELD_LEN} bytes"),
                ));
            }
        }
        if let Some(name) = self
            .fields
            .keys()
            .find(|name| RESERVED_FIELDS.contains(&name.as_str()))
        {
            return Err(AuditError::invalid_event(
                format!("fields.{name}"),
                "uses a name reserved by the event schema",
            ));
        }
        Ok(())
    }
}

fn check_name(field: &'static str, value: &str) -> Result<(), AuditError> {
    if value.is_empty() {
        return Err(AuditError::invalid_event(field, "is empty"));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(AuditError::invalid_event(
            field,
            format!("is longer than {MAX_NAME_LEN} bytes"),
        ));
    }
    Ok(())
}

/// An event as stored: the producer's event (with `time` and `id` always set) and its link in
/// the day's hash chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// The event.
    #[serde(flatten)]
    pub event: AuditEvent,
    /// Global position in the log, gapless from 1 (until a purge removes a prefix).
    pub seq: u64,
    /// The hash chain (segment) it belongs to: the UTC day it was written, `YYYY-MM-DD`.
    pub chain: String,
    /// Hex SHA-256 of the previous event in the chain, or of the chain name for the first.
    pub prev_hash: String,
    /// Hex SHA-256 of `prev_hash`'s raw bytes followed by this event's canonical JSON.
    #[serde(default)]
    pub hash: String,
}

impl StoredEvent {
    /// When the event happened.
    pub fn time(&self) -> OffsetDateTime {
        self.event.time.unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

/// An event checked and serialized on the producer's thread, ready for the writer.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) id: String,
    /// The id was assigned by the log just now, so it cannot already be stored.
    pub(crate) fresh_id: bool,
    /// The id's parts when it is a producer's canonical v7 (`id_block::v7_parts`), parsed once
    /// here for the writer's repeat check and the indexer's id blocks.
    pub(crate) v7: Option<(u64, super::id_block::Rest)>,
    pub(crate) time_us: u64,
    pub(crate) event_type: String,
    pub(crate) user: String,
    pub(crate) session_id: String,
    /// The event's JSON object without its closing `}`; the writer appends the chain fields.
    pub(crate) body: Vec<u8>,
}

/// Validates `ev`, stamps its time (`now_us` when unset) and id (`new_id()` when unset), and
/// serializes it.
pub(crate) fn prepare(
    mut ev: AuditEvent,
    now_us: u64,
    new_id: impl FnOnce() -> String,
) -> Result<Prepared, AuditError> {
    ev.validate()?;
    let time_us = match ev.time {
        Some(t) => datetime_to_us(t)
            .ok_or_else(|| AuditError::invalid_event("time", "is before 1970 or after 9999"))?,
        None => now_us.min(MAX_TIME_US),
    };
    ev.time = Some(us_to_datetime(time_us));
    let fresh_id = ev.id.is_empty();
    if fresh_id {
        ev.id = new_id();
    }
    let mut body = serde_json::to_vec(&ev)
        .map_err(|err| AuditError::invalid_event("fields", err.to_string()))?;
    if body.len() > MAX_EVENT_LEN {
        return Err(AuditError::invalid_event(
            "event",
            format!(
                "serializes to {} bytes, more than {MAX_EVENT_LEN}",
                body.len()
            ),
        ));
    }
    // A struct always serializes as a non-empty object: `{"event":…}`.
    if body.pop() != Some(b'}') {
        return Err(AuditError::invalid_event(
            "event",
            "did not serialize as a JSON object",
        ));
    }
    let v7 = if fresh_id {
        None
    } else {
        super::id_block::v7_parts(&ev.id)
    };
    Ok(Prepared {
        id: ev.id,
        fresh_id,
        v7,
        time_us,
        event_type: ev.event,
        user: ev.user,
        session_id: ev.session_id,
        body,
    })
}

/// The canonical bytes of a stored event: its JSON without `hash`. Equal, byte for byte, to
/// `serde_json::to_vec` of the [`StoredEvent`] minus its last field (a unit test holds that).
#[cfg(test)]
pub(crate) fn canonical_bytes(body: &[u8], seq: u64, chain: &str, prev_hash_hex: &str) -> Vec<u8> {
    let mut out = Vec::new();
    append_canonical(&mut out, body, seq, chain, prev_hash_hex.as_bytes());
    out
}

/// Appends the canonical bytes of a stored event to `out` (see [`canonical_bytes`]).
pub(crate) fn append_canonical(
    out: &mut Vec<u8>,
    body: &[u8],
    seq: u64,
    chain: &str,
    prev_hash_hex: &[u8],
) {
    out.reserve(body.len() + 120);
    out.extend_from_slice(body);
    out.extend_from_slice(b",\"seq\":");
    push_decimal(out, seq);
    out.extend_from_slice(b",\"chain\":\"");
    out.extend_from_slice(chain.as_bytes());
    out.extend_from_slice(b"\",\"prev_hash\":\"");
    out.extend_from_slice(prev_hash_hex);
    out.extend_from_slice(b"\"}");
}

/// Appends `n` in decimal without allocating.
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// The stored event's full JSON (with `hash`, as exported and forwarded), from its canonical
/// bytes.
pub(crate) fn json_line(canonical: &[u8], hash: &[u8; 32]) -> Vec<u8> {
    let body = canonical.strip_suffix(b"}").unwrap_or(canonical);
    let mut out = Vec::with_capacity(canonical.len() + 80);
    out.extend_from_slice(body);
    out.extend_from_slice(b",\"hash\":\"");
    out.extend_from_slice(hex::encode(hash).as_bytes());
    out.extend_from_slice(b"\"}");
    out
}

/// Microseconds since the Unix epoch, saturating: 0 before it, [`MAX_TIME_US`] after 9999.
pub(crate) fn system_time_to_us(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
        .min(MAX_TIME_US)
}

/// Microseconds since the Unix epoch, `None` outside 1970..=9999.
pub(crate) fn datetime_to_us(t: OffsetDateTime) -> Option<u64> {
    let us = t.unix_timestamp_nanos().div_euclid(1000);
    u64::try_from(us).ok().filter(|us| *us <= MAX_TIME_US)
}

/// The UTC date-time `us` microseconds after the Unix epoch (clamped to year 9999).
pub(crate) fn us_to_datetime(us: u64) -> OffsetDateTime {
    let nanos = i128::from(us.min(MAX_TIME_US)) * 1000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// The fixed-width UTC form of an event time: `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
pub(crate) fn format_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// Serde for `time`: written in the fixed UTC form, read as any RFC 3339 time (truncated to
/// microseconds).
mod time_format {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;

    pub(super) fn serialize<S: Serializer>(
        t: &Option<OffsetDateTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&super::format_time(*t)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<OffsetDateTime>, D::Error> {
        let Some(text) = Option::<std::borrow::Cow<'de, str>>::deserialize(d)? else {
            return Ok(None);
        };
        let t = OffsetDateTime::parse(&text, &Rfc3339).map_err(serde::de::Error::custom)?;
        let us = super::datetime_to_us(t)
            .ok_or_else(|| serde::de::Error::custom("time is before 1970 or after 9999"))?;
        Ok(Some(super::us_to_datetime(us)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_written_as_rust_formats_them() {
        for n in [0, 1, 9, 10, 99, 100, 12_345, u64::MAX / 3, u64::MAX] {
            let mut out = b"x".to_vec();
            push_decimal(&mut out, n);
            assert_eq!(out, format!("x{n}").into_bytes());
        }
    }

    fn sample() -> AuditEvent {
        AuditEvent::new("db.query", "TDB02I")
            .with_user("alice")
            .with_login("postgres")
            .with_server("db-1")
            .with_addr_remote("10.0.0.1:5555")
            .with_session_id("s-1")
            .with_field("query", "select 1")
            .with_field("rows", 3)
    }

    #[test]
    fn spliced_canonical_bytes_equal_serde_of_the_stored_event() {
        let prepared = prepare(sample(), 1_700_000_000_123_456, || "id-1".into()).unwrap();
        let canonical = canonical_bytes(&prepared.body, 42, "2023-11-14", &"ab".repeat(32));
        let hash = [7u8; 32];
        let line = json_line(&canonical, &hash);
        let stored: StoredEvent = serde_json::from_slice(&line).unwrap();
        assert_eq!(stored.seq, 42);
        assert_eq!(stored.hash, hex::encode(hash));
        assert_eq!(stored.event.fields.len(), 2);
        assert_eq!(serde_json::to_vec(&stored).unwrap(), line);
        let text = String::from_utf8(line).unwrap();
        assert!(
            text.starts_with(
                r#"{"event":"db.query","code":"TDB02I","time":"2023-11-14T22:13:20.123456Z","id":"id-1","user":"alice","login":"postgres","server":"db-1","addr.remote":"10.0.0.1:5555","session_id":"s-1","success":true,"query":"select 1","rows":3,"seq":42,"chain":"2023-11-14","prev_hash":"abab"#
            ),
            "{text}"
        );
    }

    #[test]
    fn reserved_and_oversized_fields_are_rejected() {
        let err = prepare(sample().with_field("seq", 1), 0, String::new).unwrap_err();
        assert!(err.to_string().contains("fields.seq"), "{err}");
        let err = prepare(AuditEvent::new("", "X"), 0, String::new).unwrap_err();
        assert!(err.to_string().contains("event is empty"), "{err}");
        let big = sample().with_field("blob", "x".repeat(MAX_EVENT_LEN));
        assert!(prepare(big, 0, || "id".into()).is_err());
    }

    #[test]
    fn times_are_truncated_to_microseconds_and_read_back_in_any_offset() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap();
        let p = prepare(sample().with_time(t), 0, || "x".into()).unwrap();
        assert_eq!(p.time_us, 1_700_000_000_123_456);
        let ev: AuditEvent = serde_json::from_str(
            r#"{"event":"a","code":"b","time":"2023-11-15T00:13:20.5+02:00","success":false}"#,
        )
        .unwrap();
        assert_eq!(format_time(ev.time.unwrap()), "2023-11-14T22:13:20.500000Z");
    }
}
