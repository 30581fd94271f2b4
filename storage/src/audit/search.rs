//! Search. This module owns [`SearchQuery`] and its answer, [`SearchPage`]: which index serves
//! a query (the narrowest one its filters allow: session, then user, then event types, else
//! time), how the remaining filters and the free-text match are applied, and the opaque cursor
//! that resumes a listing exactly after the last event of a page. It must never write, and never
//! return an event twice across the pages of one listing.

use std::collections::BTreeSet;
use std::iter::Peekable;
use std::time::SystemTime;

use redb::{ReadOnlyTable, ReadableDatabase};
use serde_json::Value;

use super::block;
use super::chain::{EventView, chain_name, day_of, decode_record, parse_view};
use super::error::AuditError;
use super::event::{StoredEvent, system_time_to_us};
use super::index::{BUCKET_US, DIM_SESSION, DIM_TIME, DIM_TYPE, DIM_USER};
use super::segment::frame_corrupt;
use super::tables::{BLOCKS, BY_ID, INDEXED_KEY, META};
use super::writer::Shared;

/// The page size when a query asks for none.
pub const DEFAULT_LIMIT: usize = 100;
/// The largest page; larger limits are clamped to it.
pub const MAX_LIMIT: usize = 10_000;

/// Which end of the time range a listing starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Latest event time first.
    #[default]
    NewestFirst,
    /// Earliest event time first.
    OldestFirst,
}

/// What to look for. Every set filter must match; `Default` matches everything, newest first,
/// [`DEFAULT_LIMIT`] per page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery {
    /// Earliest event time, inclusive.
    pub from: Option<SystemTime>,
    /// Latest event time, exclusive.
    pub to: Option<SystemTime>,
    /// Any of these event types (empty: all).
    pub event_types: Vec<String>,
    /// Exactly this user.
    pub user: Option<String>,
    /// Exactly this session.
    pub session_id: Option<String>,
    /// A case-insensitive substring of `event`, `user`, `login`, `server`, `error` or any string
    /// value among the event's own fields. ASCII text matches ignoring ASCII case; other text is
    /// compared after Unicode lower-casing.
    pub text: Option<String>,
    /// Sort order (by event time, then seq).
    pub order: Order,
    /// Page size: 0 means [`DEFAULT_LIMIT`], more than [`MAX_LIMIT`] means [`MAX_LIMIT`].
    pub limit: usize,
    /// Where the previous page ended ([`SearchPage::next_cursor`]); `None` for the first page.
    pub cursor: Option<String>,
}

impl Default for SearchQuery {
    fn default() -> Self {
        Self {
            from: None,
            to: None,
            event_types: Vec::new(),
            user: None,
            session_id: None,
            text: None,
            order: Order::NewestFirst,
            limit: DEFAULT_LIMIT,
            cursor: None,
        }
    }
}

/// One page of results.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchPage {
    /// The matching events, in the query's order.
    pub events: Vec<StoredEvent>,
    /// Set when the page is full: pass it back as [`SearchQuery::cursor`] (with the same
    /// filters) for the next page, which may turn out empty.
    pub next_cursor: Option<String>,
}

/// A position in every index: (event time in µs, seq).
pub(crate) type Position = (u64, u64);
pub(crate) type Positions = Box<dyn Iterator<Item = Result<Position, redb::StorageError>>>;

/// Which index a query walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    Session,
    User,
    Types,
    Time,
}

pub(crate) fn search(shared: &Shared, q: &SearchQuery) -> Result<SearchPage, AuditError> {
    let limit = match q.limit {
        0 => DEFAULT_LIMIT,
        n => n.min(MAX_LIMIT),
    };
    let types: BTreeSet<&str> = q.event_types.iter().map(String::as_str).collect();
    if types.contains("") {
        return Err(AuditError::InvalidQuery {
            field: "event_types",
            reason: "contains an empty event type".to_owned(),
        });
    }
    let text = q
        .text
        .as_deref()
        .filter(|t| !t.is_empty())
        .map(TextNeedle::new);
    let plan = if q.session_id.is_some() {
        Plan::Session
    } else if q.user.is_some() {
        Plan::User
    } else if !types.is_empty() {
        Plan::Types
    } else {
        Plan::Time
    };

    // The half-open position range [lo, hi) still to list.
    let mut lo: Position = (q.from.map_or(0, system_time_to_us), 0);
    let mut hi: Position = (q.to.map_or(u64::MAX, system_time_to_us), 0);
    if let Some(cursor) = &q.cursor {
        let at = decode_cursor(cursor)?;
        match q.order {
            Order::OldestFirst => lo = lo.max(after(at)),
            Order::NewestFirst => hi = hi.min(at),
        }
    }
    let mut page = SearchPage {
        events: Vec::new(),
        next_cursor: None,
    };
    if lo >= hi {
        return Ok(page);
    }

    let txn = shared.db.begin_read().map_err(|e| shared.err(e))?;
    let indexed_through = indexed_through(shared, &txn)?;
    let blocks_table = txn.open_table(BLOCKS).map_err(|e| shared.err(e))?;
    let newest_first = q.order == Order::NewestFirst;
    let range = Window {
        lo,
        hi,
        newest_first,
        indexed_through,
    };
    let positions: Positions = match plan {
        Plan::Session => {
            let session = q.session_id.as_deref().unwrap_or_default();
            let tail = tail_positions(shared, &range, &[("session_id", session)], |v| {
                v.session_id == session
            })?;
            let indexed =
                blocks(&blocks_table, DIM_SESSION, session, &range).map_err(|e| shared.err(e))?;
            merge(vec![indexed, tail], newest_first)
        }
        Plan::User => {
            let user = q.user.as_deref().unwrap_or_default();
            let tail = tail_positions(shared, &range, &[("user", user)], |v| v.user == user)?;
            let indexed =
                blocks(&blocks_table, DIM_USER, user, &range).map_err(|e| shared.err(e))?;
            merge(vec![indexed, tail], newest_first)
        }
        Plan::Types => {
            let needles: Vec<(&str, &str)> = types.iter().map(|t| ("event", *t)).collect();
            let mut sources = vec![tail_positions(shared, &range, &needles, |v| {
                types.contains(v.event.as_ref())
            })?];
            for t in &types {
                sources
                    .push(blocks(&blocks_table, DIM_TYPE, t, &range).map_err(|e| shared.err(e))?);
            }
            merge(sources, newest_first)
        }
        Plan::Time => {
            let tail = tail_positions(shared, &range, &[], |_| true)?;
            let indexed = blocks(&blocks_table, DIM_TIME, "", &range).map_err(|e| shared.err(e))?;
            merge(vec![indexed, tail], newest_first)
        }
    };

    for position in positions {
        let (_, seq) = position.map_err(|e| shared.err(e))?;
        let Some(bytes) = shared.segments.record(seq)? else {
            // A run that reaches into a purged day keeps its blocks until that day goes too.
            if shared.segments.holds_after(seq) {
                tracing::warn!(seq, "audit index entry without its event; skipping it");
            }
            continue;
        };
        let record = decode_record(&bytes)
            .map_err(|detail| shared.corrupt(format!("audit event {seq}: {detail}")))?;
        let view = parse_view(record.canonical)
            .map_err(|detail| shared.corrupt(format!("audit event {seq}: {detail}")))?;
        if view.seq != seq {
            // A segment whose frames no longer sit where their seqs say (edited behind hop's
            // back): `verify` names it; search shows nothing in the wrong place.
            tracing::warn!(
                seq,
                found = view.seq,
                "audit segment out of order; skipping"
            );
            continue;
        }
        if plan != Plan::Types && !types.is_empty() && !types.contains(view.event.as_ref()) {
            continue;
        }
        if plan != Plan::User
            && let Some(user) = &q.user
            && view.user != user.as_str()
        {
            continue;
        }
        if let Some(needle) = &text
            && !needle.may_match_raw(record.canonical)
        {
            continue;
        }
        let event = decode_stored(shared, seq, record.canonical, record.hash)?;
        if let Some(needle) = &text
            && !needle.matches(&event)
        {
            continue;
        }
        page.events.push(event);
        if page.events.len() == limit {
            let last = page.events.last().map(|e| (e.time(), e.seq));
            page.next_cursor = last.map(|(time, seq)| {
                let us = super::event::datetime_to_us(time).unwrap_or(0);
                encode_cursor((us, seq))
            });
            break;
        }
    }
    Ok(page)
}

/// The stored event with this id, from the id index or the not yet indexed tail.
pub(crate) fn get(shared: &Shared, id: &str) -> Result<Option<StoredEvent>, AuditError> {
    let txn = shared.db.begin_read().map_err(|e| shared.err(e))?;
    let by_id = txn.open_table(BY_ID).map_err(|e| shared.err(e))?;
    if let Some(seq) = by_id
        .get(id.as_bytes())
        .map_err(|e| shared.err(e))?
        .map(|v| v.value())
    {
        return load(shared, seq);
    }
    if let Some((ms, rest)) = super::id_block::v7_parts(id) {
        let blocks = txn.open_table(BLOCKS).map_err(|e| shared.err(e))?;
        if let Some(seq) = super::id_block::lookup(&blocks, (ms, &rest))
            .map_err(|e| AuditError::from(shared.id_lookup_err(e)))?
        {
            return load(shared, seq);
        }
    }
    let range = Window {
        lo: (0, 0),
        hi: (u64::MAX, 0),
        newest_first: false,
        indexed_through: indexed_through(shared, &txn)?,
    };
    let mut found = tail_positions(shared, &range, &[("id", id)], |v| v.id == id)?;
    match found.next() {
        Some(Ok((_, seq))) => load(shared, seq),
        Some(Err(e)) => Err(shared.err(e).into()),
        None => find_assigned_id(shared, id),
    }
}

/// An id the log assigned (a v7 UUID, in no id index entry) is found in the segments of the
/// day its embedded time names (or the days either side, for a write across midnight).
fn find_assigned_id(shared: &Shared, id: &str) -> Result<Option<StoredEvent>, AuditError> {
    let Some(ms) = uuid::Uuid::try_parse(id)
        .ok()
        .and_then(|u| u.get_timestamp())
        .map(|t| t.to_unix().0)
    else {
        return Ok(None);
    };
    let day = day_of(ms.saturating_mul(1_000_000));
    let days: Vec<String> = (day.saturating_sub(1)..=day + 1).map(chain_name).collect();
    let needle = format!("\"id\":{}", serde_json::to_string(id).unwrap_or_default());
    for segment in shared.segments.snapshot() {
        if !days.contains(&segment.chain) {
            continue;
        }
        for item in segment.frames_from(super::segment::HEADER_LEN) {
            let (_, bytes) = item.map_err(|e| AuditError::from(frame_corrupt(&segment, &e)))?;
            let Ok(record) = decode_record(&bytes) else {
                continue;
            };
            if !contains(record.canonical, needle.as_bytes()) {
                continue;
            }
            if let Ok(view) = parse_view(record.canonical)
                && view.id == id
            {
                return decode_stored(shared, view.seq, record.canonical, record.hash).map(Some);
            }
        }
    }
    Ok(None)
}

/// The stored event with `seq`, if it is (still) in the log.
pub(crate) fn load(shared: &Shared, seq: u64) -> Result<Option<StoredEvent>, AuditError> {
    let Some(bytes) = shared.segments.record(seq)? else {
        return Ok(None);
    };
    let record = decode_record(&bytes)
        .map_err(|detail| shared.corrupt(format!("audit event {seq}: {detail}")))?;
    let event = decode_stored(shared, seq, record.canonical, record.hash)?;
    Ok((event.seq == seq).then_some(event))
}

fn decode_stored(
    shared: &Shared,
    seq: u64,
    canonical: &[u8],
    hash: &[u8; 32],
) -> Result<StoredEvent, AuditError> {
    let mut event: StoredEvent = serde_json::from_slice(canonical)
        .map_err(|err| shared.corrupt(format!("audit event {seq} does not decode: {err}")))?;
    event.hash = hex::encode(hash);
    Ok(event)
}

/// The part of an index a query walks.
pub(crate) struct Window {
    /// Half-open position range [lo, hi).
    pub(crate) lo: Position,
    pub(crate) hi: Position,
    pub(crate) newest_first: bool,
    /// Index entries for later seqs may be incomplete; those events are scanned instead.
    pub(crate) indexed_through: u64,
}

pub(crate) fn indexed_through(
    shared: &Shared,
    txn: &redb::ReadTransaction,
) -> Result<u64, AuditError> {
    let meta = txn.open_table(META).map_err(|e| shared.err(e))?;
    Ok(meta
        .get(INDEXED_KEY)
        .map_err(|e| shared.err(e))?
        .map_or(0, |v| v.value()))
}

/// The positions of `value`'s blocks of dimension `dim` within the window, for events up to
/// the index watermark, in window order.
pub(crate) fn blocks(
    table: &ReadOnlyTable<(u8, &'static [u8], u64, u64), &'static [u8]>,
    dim: u8,
    value: &str,
    w: &Window,
) -> Result<Positions, redb::StorageError> {
    let value = value.as_bytes();
    let first = w.lo.0 / BUCKET_US;
    let last = w.hi.0 / BUCKET_US;
    let range = table.range((dim, value, first, 0)..=(dim, value, last, u64::MAX))?;
    type Row<'a> = (
        redb::AccessGuard<'a, (u8, &'static [u8], u64, u64)>,
        redb::AccessGuard<'a, &'static [u8]>,
    );
    let row =
        |r: Result<Row<'_>, redb::StorageError>| r.map(|(k, v)| (k.value().2, v.value().to_vec()));
    let rows: Box<dyn Iterator<Item = BlockRow>> = if w.newest_first {
        Box::new(range.rev().map(row))
    } else {
        Box::new(range.map(row))
    };
    Ok(Box::new(BlockWalk {
        rows: rows.peekable(),
        buffer: Vec::new().into_iter(),
        lo: w.lo,
        hi: w.hi,
        newest_first: w.newest_first,
        through: w.indexed_through,
    }))
}

/// A block: its second and its (time, seq) pairs.
type BlockRow = Result<(u64, Vec<u8>), redb::StorageError>;

/// Positions from blocks, a second at a time: every block of a second is read, its pairs in
/// the window kept and sorted, and handed out before the next second is read.
struct BlockWalk {
    rows: Peekable<Box<dyn Iterator<Item = BlockRow>>>,
    buffer: std::vec::IntoIter<Position>,
    lo: Position,
    hi: Position,
    newest_first: bool,
    through: u64,
}

impl BlockWalk {
    /// Reads the next second's blocks into the buffer; `Err` on a read failure, `Ok(false)`
    /// when no block is left.
    fn fill(&mut self) -> Result<bool, redb::StorageError> {
        let mut second = None;
        let mut positions = Vec::new();
        loop {
            let same = match self.rows.peek() {
                None => false,
                Some(Err(_)) => true,
                Some(Ok((bucket, _))) => second.is_none_or(|s| s == *bucket),
            };
            if !same {
                break;
            }
            let Some(row) = self.rows.next() else { break };
            let (bucket, bytes) = row?;
            second = Some(bucket);
            let pairs = block::decode(bucket, &bytes).map_err(|damaged| {
                redb::StorageError::Corrupted(format!(
                    "audit index block of second {bucket}: {} bytes in neither block encoding",
                    damaged.len
                ))
            })?;
            positions
                .extend(pairs.filter(|p| (self.lo..self.hi).contains(p) && p.1 <= self.through));
        }
        if second.is_none() {
            return Ok(false);
        }
        positions.sort_unstable();
        if self.newest_first {
            positions.reverse();
        }
        self.buffer = positions.into_iter();
        Ok(true)
    }
}

impl Iterator for BlockWalk {
    type Item = Result<Position, redb::StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(p) = self.buffer.next() {
                return Some(Ok(p));
            }
            match self.fill() {
                Ok(true) => {}
                Ok(false) => return None,
                Err(err) => return Some(Err(err)),
            }
        }
    }
}

/// The positions, in window order, of the events after the index watermark that `matches`.
/// `needles` are (field, value) pairs one of which must appear verbatim in the event's JSON
/// (a cheap test before the JSON is parsed).
pub(crate) fn tail_positions(
    shared: &Shared,
    w: &Window,
    needles: &[(&str, &str)],
    matches: impl Fn(&EventView<'_>) -> bool,
) -> Result<Positions, AuditError> {
    let needles: Vec<Vec<u8>> = needles
        .iter()
        .map(|(field, value)| {
            let value = serde_json::to_string(value).unwrap_or_default();
            format!("\"{field}\":{value}").into_bytes()
        })
        .collect();
    let mut out = Vec::new();
    for (seq, segment, bytes) in shared
        .segments
        .records_from(w.indexed_through.saturating_add(1))
    {
        let bytes = bytes.map_err(|e| frame_corrupt(&segment, &e))?;
        let corrupt = |detail| shared.corrupt(format!("audit event {seq}: {detail}"));
        let record = decode_record(&bytes).map_err(corrupt)?;
        if !needles.is_empty() && !needles.iter().any(|n| contains(record.canonical, n)) {
            continue;
        }
        let view = parse_view(record.canonical).map_err(corrupt)?;
        if !matches(&view) {
            continue;
        }
        let Some(time) = view.time_us() else {
            continue;
        };
        if (w.lo..w.hi).contains(&(time, seq)) {
            out.push((time, seq));
        }
    }
    out.sort_unstable();
    if w.newest_first {
        out.reverse();
    }
    Ok(Box::new(out.into_iter().map(Ok)))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else {
        return true;
    };
    let mut from = 0;
    while let Some(i) = hay[from..].iter().position(|b| *b == first) {
        let at = from + i + 1;
        if hay[at..].starts_with(rest) {
            return true;
        }
        from = at;
    }
    false
}

pub(crate) fn merge(sources: Vec<Positions>, newest_first: bool) -> Positions {
    Box::new(Merge {
        sources: sources.into_iter().map(Iterator::peekable).collect(),
        newest_first,
    })
}

/// Merges per-type index walks into one walk in position order.
struct Merge {
    sources: Vec<Peekable<Positions>>,
    newest_first: bool,
}

impl Iterator for Merge {
    type Item = Result<Position, redb::StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut best: Option<(usize, Position)> = None;
        for (i, source) in self.sources.iter_mut().enumerate() {
            match source.peek() {
                None => {}
                Some(Err(_)) => return source.next(),
                Some(Ok(pos)) => {
                    let better = best.is_none_or(|(_, b)| {
                        if self.newest_first {
                            *pos > b
                        } else {
                            *pos < b
                        }
                    });
                    if better {
                        best = Some((i, *pos));
                    }
                }
            }
        }
        let (i, _) = best?;
        self.sources[i].next()
    }
}

/// The position right after `at`.
fn after((time, seq): Position) -> Position {
    match seq.checked_add(1) {
        Some(seq) => (time, seq),
        None => (time.saturating_add(1), 0),
    }
}

fn encode_cursor((time, seq): Position) -> String {
    format!("{time:016x}{seq:016x}")
}

fn decode_cursor(cursor: &str) -> Result<Position, AuditError> {
    let bad = || AuditError::InvalidQuery {
        field: "cursor",
        reason: format!("{cursor:?} is not a cursor this log handed out"),
    };
    if cursor.len() != 32 || !cursor.is_ascii() {
        return Err(bad());
    }
    let (time, seq) = cursor.split_at(16);
    let time = u64::from_str_radix(time, 16).map_err(|_| bad())?;
    let seq = u64::from_str_radix(seq, 16).map_err(|_| bad())?;
    Ok((time, seq))
}

/// A prepared free-text filter (the PostgreSQL store matches with it too).
pub(crate) struct TextNeedle {
    lower: String,
    ascii: bool,
    /// Whether the needle appears verbatim (modulo ASCII case) in the JSON of any event it
    /// matches, so the raw bytes can rule an event out before it is decoded: true for ASCII
    /// text that JSON does not escape.
    raw_checkable: bool,
}

impl TextNeedle {
    pub(crate) fn new(text: &str) -> Self {
        let ascii = text.is_ascii();
        Self {
            lower: if ascii {
                text.to_ascii_lowercase()
            } else {
                text.to_lowercase()
            },
            ascii,
            raw_checkable: ascii && text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\'),
        }
    }

    fn may_match_raw(&self, json: &[u8]) -> bool {
        !self.raw_checkable || contains_ascii_ci(json, self.lower.as_bytes())
    }

    fn matches_str(&self, hay: &str) -> bool {
        if self.ascii {
            contains_ascii_ci(hay.as_bytes(), self.lower.as_bytes())
        } else {
            hay.to_lowercase().contains(&self.lower)
        }
    }

    fn matches_value(&self, value: &Value) -> bool {
        match value {
            Value::String(s) => self.matches_str(s),
            Value::Array(items) => items.iter().any(|v| self.matches_value(v)),
            Value::Object(map) => map.values().any(|v| self.matches_value(v)),
            Value::Null | Value::Bool(_) | Value::Number(_) => false,
        }
    }

    pub(crate) fn matches(&self, stored: &StoredEvent) -> bool {
        let ev = &stored.event;
        [&ev.event, &ev.user, &ev.login, &ev.server]
            .into_iter()
            .any(|s| self.matches_str(s))
            || ev.error.as_deref().is_some_and(|s| self.matches_str(s))
            || ev.fields.values().any(|v| self.matches_value(v))
    }
}

/// Whether `hay` contains `needle_lower` (already ASCII-lower-cased), ignoring ASCII case.
fn contains_ascii_ci(hay: &[u8], needle_lower: &[u8]) -> bool {
    let Some((&first, rest)) = needle_lower.split_first() else {
        return true;
    };
    if hay.len() < needle_lower.len() {
        return false;
    }
    let last_start = hay.len() - needle_lower.len();
    (0..=last_start).any(|i| {
        hay[i].to_ascii_lowercase() == first
            && hay[i + 1..i + needle_lower.len()]
                .iter()
                .zip(rest)
                .all(|(a, b)| a.to_ascii_lowercase() == *b)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let at = (1_700_000_000_000_000, 42);
        assert_eq!(decode_cursor(&encode_cursor(at)).unwrap(), at);
        for bad in ["", "zz", &"g".repeat(32), "é".repeat(16).as_str()] {
            assert!(decode_cursor(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ascii_case_insensitive_contains() {
        assert!(contains_ascii_ci(b"Hello World", b"o w"));
        assert!(contains_ascii_ci(b"abc", b""));
        assert!(!contains_ascii_ci(b"ab", b"abc"));
        assert!(contains_ascii_ci(b"xxABC", b"abc"));
        let needle = TextNeedle::new("ÄRGER");
        assert!(needle.matches_str("großer ärger"));
        assert!(needle.may_match_raw(b"anything"));
    }
}
