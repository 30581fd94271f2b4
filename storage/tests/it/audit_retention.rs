//! Retention and export: whole days are purged (with their index entries) and the rest still
//! verifies; exports are JSON lines whose chain an outside tool can re-check.

use std::sync::Arc;
use std::time::Duration;

use hop_storage::audit::PurgeReport;
use hop_storage::{AuditConfig, AuditLog, ManualClock, SearchQuery, StoredEvent};
use sha2::{Digest, Sha256};

use crate::clock::monotonic_now;
use crate::support::{audit_path, numbered_event, open_audit, start_time};

const DAY: Duration = Duration::from_secs(86_400);
const PER_DAY: usize = 30;

/// Writes `PER_DAY` events on each of `days` days from 2023-11-14, one a minute.
fn write_days(log: &AuditLog, clock: &ManualClock, days: usize) {
    for d in 0..days {
        clock.set(start_time() + DAY * d as u32);
        for i in 0..PER_DAY {
            log.append(numbered_event(d * PER_DAY + i)).unwrap();
            clock.advance(Duration::from_secs(60));
        }
    }
}

fn count(log: &AuditLog) -> usize {
    log.search(&SearchQuery {
        limit: 10_000,
        ..SearchQuery::default()
    })
    .unwrap()
    .events
    .len()
}

fn parse_lines(bytes: &[u8]) -> Vec<StoredEvent> {
    std::str::from_utf8(bytes)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[test]
fn purging_removes_whole_earlier_days_and_the_rest_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start_time());
    let log = open_audit(dir.path(), &clock);
    write_days(&log, &clock, 4);

    // A cutoff during day three purges days one and two, never part of day three.
    let report = log
        .purge_before(start_time() + DAY * 2 + Duration::from_secs(3600))
        .unwrap();
    assert_eq!(
        report,
        PurgeReport {
            chains: vec!["2023-11-14".into(), "2023-11-15".into()],
            events: 2 * PER_DAY as u64,
        }
    );
    assert_eq!(count(&log), 2 * PER_DAY);
    assert!(log.get("ev-000000").unwrap().is_none());
    assert!(
        log.get(&format!("ev-{:06}", 2 * PER_DAY))
            .unwrap()
            .is_some()
    );
    for q in [
        SearchQuery {
            user: Some("user-1".into()),
            ..SearchQuery::default()
        },
        SearchQuery {
            session_id: Some("sess-1".into()),
            ..SearchQuery::default()
        },
        SearchQuery {
            event_types: vec!["db.query".into()],
            ..SearchQuery::default()
        },
    ] {
        let page = log.search(&q).unwrap();
        assert!(
            page.events.iter().all(|e| e.seq > 2 * PER_DAY as u64),
            "{q:?}"
        );
    }
    let report = log.verify(None).unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!((report.events_checked, report.segments), (60, 2));

    // Nothing more to purge for the same cutoff; the log goes on and still verifies, also
    // after a reopen.
    assert_eq!(
        log.purge_before(start_time() + DAY * 2).unwrap(),
        PurgeReport::default()
    );
    log.append(numbered_event(1000)).unwrap();
    drop(log);
    let log = open_audit(dir.path(), &clock);
    assert!(log.verify(None).unwrap().is_intact());
    assert_eq!(log.append(numbered_event(1001)).unwrap().seq, 122);
}

#[test]
fn purging_the_day_being_written_keeps_its_chain_verifiable() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start_time());
    let log = open_audit(dir.path(), &clock);
    write_days(&log, &clock, 2);
    let report = log.purge_before(start_time() + DAY * 10).unwrap();
    assert_eq!(report.events, 2 * PER_DAY as u64);
    assert_eq!(count(&log), 0);
    let report = log.verify(None).unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.events_checked, 0);

    // The next event continues day two's chain from the purged boundary.
    let pos = log.append(numbered_event(500)).unwrap();
    assert_eq!(pos.seq, 61);
    assert_eq!(log.get(&pos.id).unwrap().unwrap().chain, "2023-11-15");
    assert!(log.verify(None).unwrap().is_intact());
    drop(log);
    let log = open_audit(dir.path(), &clock);
    assert_eq!(log.append(numbered_event(501)).unwrap().seq, 62);
    let report = log.verify(None).unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.events_checked, 2);
}

#[test]
fn configured_retention_purges_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start_time());
    write_days(&open_audit(dir.path(), &clock), &clock, 4);
    // On day four, keeping two days means day one and two go (days are purged whole, strictly
    // before the cutoff's day).
    clock.set(start_time() + DAY * 3 + Duration::from_secs(7200));
    let cfg = AuditConfig {
        retention: Some(DAY * 2),
        ..AuditConfig::default()
    };
    let log = AuditLog::open(&audit_path(dir.path()), Arc::new(clock.clone()), cfg).unwrap();
    let deadline = monotonic_now() + Duration::from_secs(20);
    while count(&log) != 2 * PER_DAY {
        assert!(monotonic_now() < deadline, "retention did not purge");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(log.verify(None).unwrap().is_intact());
    log.close();
}

#[test]
fn exports_are_json_lines_whose_chain_can_be_rechecked_outside_hop() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start_time());
    let log = open_audit(dir.path(), &clock);
    write_days(&log, &clock, 2);

    let mut out = Vec::new();
    assert_eq!(
        log.export(None, None, &mut out).unwrap(),
        2 * PER_DAY as u64
    );
    let text = String::from_utf8(out.clone()).unwrap();
    let events = parse_lines(&out);
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=60).collect::<Vec<_>>());
    // Each line is `canonical JSON` with `"hash"` as its last field; sha256(prev || canonical)
    // must give that hash and the next line's prev_hash.
    let mut prev: Option<(String, [u8; 32])> = None;
    for (line, event) in text.lines().zip(&events) {
        let suffix = format!(",\"hash\":\"{}\"}}", event.hash);
        let canonical = format!("{}}}", line.strip_suffix(&suffix).unwrap());
        let prev_hash: [u8; 32] = match &prev {
            Some((chain, hash)) if *chain == event.chain => *hash,
            _ => Sha256::digest(event.chain.as_bytes()).into(),
        };
        assert_eq!(event.prev_hash, hex::encode(prev_hash));
        let mut hasher = Sha256::new();
        hasher.update(prev_hash);
        hasher.update(canonical.as_bytes());
        let hash: [u8; 32] = hasher.finalize().into();
        assert_eq!(hex::encode(hash), event.hash, "seq {}", event.seq);
        prev = Some((event.chain.clone(), hash));
    }

    // A time range: day two's first ten minutes (from inclusive, to exclusive).
    let from = start_time() + DAY;
    let mut out = Vec::new();
    let n = log
        .export(Some(from), Some(from + Duration::from_secs(600)), &mut out)
        .unwrap();
    assert_eq!(n, 10);
    let seqs: Vec<u64> = parse_lines(&out).iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (31..=40).collect::<Vec<_>>());
}

/// A block's key as stored: (dimension, value, second, key seq).
type StoredKey = (u8, Vec<u8>, u64, u64);

/// The index's blocks as stored: their keys and lengths.
fn stored_blocks(dir: &std::path::Path) -> Vec<(StoredKey, usize)> {
    use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
    const BLOCKS: TableDefinition<(u8, &[u8], u64, u64), &[u8]> =
        TableDefinition::new("audit_blocks");
    let db = Database::open(audit_path(dir)).unwrap();
    let txn = db.begin_read().unwrap();
    let table = txn.open_table(BLOCKS).unwrap();
    table
        .iter()
        .unwrap()
        .map(|row| {
            let (k, v) = row.unwrap();
            let (dim, value, second, seq) = k.value();
            ((dim, value.to_vec(), second, seq), v.value().len())
        })
        .collect()
}

#[test]
fn a_busy_second_is_cut_into_chunks_that_search_reads_whole_and_retention_removes() {
    const BUSY: usize = 5_000;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start_time());
    let log = open_audit(dir.path(), &clock);
    // Every event in the same microsecond: one block per dimension for the whole run.
    let handles: Vec<_> = (0..BUSY)
        .map(|i| {
            let ev = hop_storage::AuditEvent::new("db.query", "TDB02I")
                .with_user("alice")
                .with_session_id("busy")
                .with_field("query", format!("SELECT {i}"));
            log.append_async(ev).unwrap()
        })
        .collect();
    for h in handles {
        h.wait().unwrap();
    }
    log.close();

    let busy_type: Vec<_> = stored_blocks(dir.path())
        .into_iter()
        .filter(|((dim, value, _, _), _)| *dim == 1 && value == b"db.query")
        .collect();
    assert!(busy_type.len() >= BUSY.div_ceil(1984), "{busy_type:?}");
    for (key, len) in &busy_type {
        // Packed (tag, base, 8 bytes a pair), and small enough for a 16 KiB page.
        assert!(len % 8 == 1 && *len <= 9 + 1984 * 8, "{key:?}: {len}");
    }

    let log = open_audit(dir.path(), &clock);
    let page = log
        .search(&SearchQuery {
            event_types: vec!["db.query".into()],
            user: Some("alice".into()),
            limit: 10_000,
            ..SearchQuery::default()
        })
        .unwrap();
    let seqs: Vec<u64> = page.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs.len(), BUSY);
    assert!(
        seqs.windows(2).all(|w| w[0] > w[1]),
        "newest first, each once"
    );

    // The next day, then purge the busy one: none of its chunks stays behind.
    clock.set(start_time() + DAY);
    log.append(numbered_event(0)).unwrap();
    let report = log.purge_before(start_time() + DAY).unwrap();
    assert_eq!(report.events, BUSY as u64);
    log.close();
    let busy_second = start_time()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let left: Vec<_> = stored_blocks(dir.path())
        .into_iter()
        .filter(|((_, _, second, _), _)| *second == busy_second)
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
