//! Tamper evidence. This module owns the walk that re-derives every link of the hash chains
//! from the stored bytes and reports the first place where the log is not what the writer
//! wrote: a modified event (its bytes no longer hash to its hash, or its `prev_hash` is not its
//! predecessor's hash), removed events (a gap in seq, or a log that ends before the last seq
//! written), or a record that is not an event at all. It must never trust a stored hash without
//! recomputing it, and never stop at a purge boundary as if it were a break.

use std::fmt;
use std::time::SystemTime;

use redb::ReadableDatabase;
use time::OffsetDateTime;

use super::chain::{chain_name, day_of, decode_record, genesis, link_hash, parse_view};
use super::error::AuditError;
use super::event::{system_time_to_us, us_to_datetime};
use super::segment::Segment;
use super::tables::{self, LAST_SEQ_KEY, META, PURGED};
use super::writer::Shared;

/// The outcome of [`super::AuditLog::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Events whose links were checked (up to the first break).
    pub events_checked: u64,
    /// Chains (days) those events belong to.
    pub segments: u64,
    /// The first broken link, `None` if every link held.
    pub first_break: Option<BrokenLink>,
}

impl VerifyReport {
    /// Whether every link held.
    pub fn is_intact(&self) -> bool {
        self.first_break.is_none()
    }
}

/// Where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenLink {
    /// The seq of the event at which the break shows (for removed events: the first event
    /// after them, or the first missing seq if the log's tail was removed).
    pub seq: u64,
    /// That event's id, as stored (empty if it cannot be read or does not exist).
    pub id: String,
    /// That event's time, as stored (`None` if it cannot be read or does not exist).
    pub time: Option<OffsetDateTime>,
    /// What is wrong.
    pub reason: BreakReason,
}

/// Why a link is broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BreakReason {
    /// The event's bytes do not hash to its stored hash: the event was modified.
    HashMismatch,
    /// The event's `prev_hash` is not the hash of the event before it in its chain (or of the
    /// chain's name, for a chain's first event): the event was modified or moved.
    PrevHashMismatch,
    /// Events with these seqs, just before this one, are missing.
    Gap {
        /// The first missing seq.
        first_missing: u64,
        /// The last missing seq.
        last_missing: u64,
    },
    /// The log ends at `seq - 1`, but the writer recorded events up to `last_written`.
    Truncated {
        /// The last seq the writer recorded.
        last_written: u64,
    },
    /// The stored record is not an event this code wrote.
    Undecodable {
        /// What is wrong with it.
        detail: String,
    },
    /// The event claims a seq or chain that does not fit where it is stored.
    Misplaced {
        /// What does not fit.
        detail: String,
    },
}

impl fmt::Display for BreakReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::HashMismatch => {
                f.write_str("the event's content does not match its hash (it was modified)")
            }
            Self::PrevHashMismatch => f.write_str(
                "the event's prev_hash is not the hash of the event before it (it was modified \
                 or moved)",
            ),
            Self::Gap {
                first_missing,
                last_missing,
            } if first_missing == last_missing => {
                write!(f, "the event before it (seq {first_missing}) is missing")
            }
            Self::Gap {
                first_missing,
                last_missing,
            } => write!(
                f,
                "the events before it (seq {first_missing} to {last_missing}) are missing"
            ),
            Self::Truncated { last_written } => write!(
                f,
                "the log ends before this seq, but events up to seq {last_written} were written"
            ),
            Self::Undecodable { detail } => write!(f, "the stored record is unreadable: {detail}"),
            Self::Misplaced { detail } => write!(f, "the event is out of place: {detail}"),
        }
    }
}

impl fmt::Display for BrokenLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seq {}", self.seq)?;
        if !self.id.is_empty() {
            write!(f, " (id {})", self.id)?;
        }
        if let Some(time) = self.time {
            write!(f, " at {}", super::event::format_time(time))?;
        }
        write!(f, ": {}", self.reason)
    }
}

pub(crate) fn verify(
    shared: &Shared,
    since: Option<SystemTime>,
) -> Result<VerifyReport, AuditError> {
    let err = |e: redb::Error| AuditError::from(shared.err(e));
    let txn = shared.db.begin_read().map_err(|e| err(e.into()))?;
    let meta = txn.open_table(META).map_err(|e| err(e.into()))?;
    let purged = txn.open_table(PURGED).map_err(|e| err(e.into()))?;
    let boundary = tables::read_boundary(&shared.path, &purged)?;
    let last_written = meta
        .get(LAST_SEQ_KEY)
        .map_err(|e| err(e.into()))?
        .map_or(0, |v| v.value())
        .max(shared.segments.durable_through());
    drop(txn);
    let retained_from = boundary.as_ref().map_or(1, |b| b.through_seq + 1);

    let mut report = VerifyReport {
        events_checked: 0,
        segments: 0,
        first_break: None,
    };
    let start = match since {
        None => retained_from,
        Some(since) => {
            let first_chain = chain_name(day_of(system_time_to_us(since)));
            let later = shared
                .segments
                .snapshot()
                .into_iter()
                .find(|s: &std::sync::Arc<Segment>| s.chain >= first_chain);
            match later {
                Some(segment) => segment.first_seq.max(retained_from),
                None => return Ok(report),
            }
        }
    };

    let mut prev: Option<(String, [u8; 32])> = None;
    if start > 1 {
        if let Some(bytes) = shared.segments.record(start - 1)? {
            if let Ok(record) = decode_record(&bytes)
                && let Ok(view) = parse_view(record.canonical)
            {
                prev = Some((view.chain.into_owned(), *record.hash));
            }
        } else if let Some(b) = boundary.as_ref().filter(|b| b.through_seq == start - 1) {
            let hash = hex::decode(&b.hash)
                .ok()
                .and_then(|h| <[u8; 32]>::try_from(h).ok());
            if let Some(hash) = hash {
                prev = Some((b.chain.clone(), hash));
            }
        }
    }

    let mut expected_seq = start;
    for (position, _, bytes) in shared.segments.records_from(start) {
        // Where a frame cannot be followed, what follows is unframed: the walk resumes at the
        // next segment, so the break is reported at the position expected here.
        let seq = position.max(expected_seq);
        let broken = |id: &str, time: Option<OffsetDateTime>, reason| {
            Some(BrokenLink {
                seq,
                id: id.to_owned(),
                time,
                reason,
            })
        };
        let bytes = match bytes {
            Ok(bytes) => bytes,
            Err(err) => {
                let detail = err.to_string();
                report.first_break = broken("", None, BreakReason::Undecodable { detail });
                break;
            }
        };
        let record = match decode_record(&bytes) {
            Ok(record) => record,
            Err(detail) => {
                report.first_break = broken("", None, BreakReason::Undecodable { detail });
                break;
            }
        };
        let view = match parse_view(record.canonical) {
            Ok(view) => view,
            Err(detail) => {
                report.first_break = broken("", None, BreakReason::Undecodable { detail });
                break;
            }
        };
        let time = view.time_us().map(us_to_datetime);
        // A frame's seq is its position; a removed frame shows as a later seq than expected.
        let seq = view.seq;
        let broken = |id: &str, time: Option<OffsetDateTime>, reason| {
            Some(BrokenLink {
                seq,
                id: id.to_owned(),
                time,
                reason,
            })
        };
        if seq < expected_seq {
            let detail =
                format!("it says seq {seq} but is stored where seq {expected_seq} belongs");
            report.first_break = broken(&view.id, time, BreakReason::Misplaced { detail });
            break;
        }
        if seq != expected_seq {
            let reason = BreakReason::Gap {
                first_missing: expected_seq,
                last_missing: seq - 1,
            };
            report.first_break = broken(&view.id, time, reason);
            break;
        }
        let expected_prev = match &prev {
            Some((chain, hash)) if *chain == view.chain => *hash,
            Some((chain, _)) if view.chain.as_ref() < chain.as_str() => {
                let detail = format!("chain {} follows the later chain {chain}", view.chain);
                report.first_break = broken(&view.id, time, BreakReason::Misplaced { detail });
                break;
            }
            Some(_) | None => genesis(&view.chain),
        };
        if prev.as_ref().is_none_or(|(chain, _)| *chain != view.chain) {
            report.segments += 1;
        }
        if view.prev_hash != hex::encode(expected_prev) {
            report.first_break = broken(&view.id, time, BreakReason::PrevHashMismatch);
            break;
        }
        if link_hash(&expected_prev, record.canonical) != *record.hash {
            report.first_break = broken(&view.id, time, BreakReason::HashMismatch);
            break;
        }
        report.events_checked += 1;
        expected_seq = seq + 1;
        prev = Some((view.chain.into_owned(), *record.hash));
    }
    if report.first_break.is_none() && expected_seq <= last_written {
        report.first_break = Some(BrokenLink {
            seq: expected_seq,
            id: String::new(),
            time: None,
            reason: BreakReason::Truncated { last_written },
        });
    }
    Ok(report)
}
