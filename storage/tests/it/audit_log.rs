//! The audit log's write path: acknowledgement means durable, seqs are gapless and ordered, ids
//! are stored once, a full queue is counted, and the file obeys the same lock and schema rules as
//! the resource backend.

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hop_storage::audit::MAX_LIMIT;
use hop_storage::{
    AuditConfig, AuditError, AuditEvent, AuditLog, Fault, ManualClock, SearchQuery, StorageError,
    StoredEvent, SystemClock,
};
use redb::{Database, TableDefinition};

use crate::clock::{monotonic_now, since};
use crate::support::{audit_path, numbered_event, open_audit, start_time};

/// Every stored event, oldest first.
fn all_events(log: &AuditLog) -> Vec<StoredEvent> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let page = log
            .search(&SearchQuery {
                order: hop_storage::Order::OldestFirst,
                limit: MAX_LIMIT,
                cursor,
                ..SearchQuery::default()
            })
            .unwrap();
        out.extend(page.events);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return out,
        }
    }
}

#[test]
fn acknowledged_events_survive_a_reopen_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start_time());
    let mut ids = Vec::new();
    {
        let log = open_audit(dir.path(), &clock);
        for i in 0..100 {
            let pos = log.append(numbered_event(i)).unwrap();
            assert_eq!(pos.seq, i as u64 + 1);
            assert!(!pos.duplicate);
            assert_eq!(pos.id, format!("ev-{i:06}"));
            ids.push(pos.id);
            clock.advance(Duration::from_millis(10));
        }
        // An event without an id gets a UUID.
        let pos = log
            .append(AuditEvent::new("user.login", "T1000I").with_user("bob"))
            .unwrap();
        assert_eq!(pos.seq, 101);
        assert_eq!(pos.id.len(), 36, "{}", pos.id);
        let stats = log.stats();
        assert_eq!(stats.written, 101);
        assert_eq!(stats.queue_depth, 0);
        log.close();
    }
    let log = open_audit(dir.path(), &clock);
    for (i, id) in ids.iter().enumerate() {
        let stored = log.get(id).unwrap().unwrap();
        assert_eq!(stored.seq, i as u64 + 1);
        let mut expected = numbered_event(i);
        expected.time = stored.event.time;
        assert_eq!(stored.event, expected);
        assert_eq!(stored.chain, "2023-11-14");
        assert_eq!(stored.hash.len(), 64);
    }
    assert_eq!(all_events(&log).len(), 101);
    let report = log.verify(None).unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!((report.events_checked, report.segments), (101, 1));
    assert_eq!(log.append(numbered_event(500)).unwrap().seq, 102);
}

#[test]
fn concurrent_producers_get_distinct_gapless_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start_time());
    let log = open_audit(dir.path(), &clock);
    let seqs: Vec<u64> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..8)
            .map(|t| {
                let log = &log;
                s.spawn(move || {
                    (0..200)
                        .map(|i| log.append(numbered_event(t * 1000 + i)).unwrap().seq)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let distinct: BTreeSet<u64> = seqs.iter().copied().collect();
    assert_eq!(distinct, (1..=1600).collect());
    assert!(log.verify(None).unwrap().is_intact());
}

#[test]
fn queued_events_share_one_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start_time());
    let log = open_audit(dir.path(), &clock);
    let hold = log.hold_writer();
    let handles: Vec<_> = (0..100)
        .map(|i| log.append_async(numbered_event(i)).unwrap())
        .collect();
    drop(hold);
    let seqs: Vec<u64> = handles.into_iter().map(|h| h.wait().unwrap().seq).collect();
    assert_eq!(seqs, (1..=100).collect::<Vec<_>>());
    assert_eq!(log.stats().batches, 1);
}

#[test]
fn a_repeated_id_is_acknowledged_but_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start_time());
    {
        let log = open_audit(dir.path(), &clock);
        let first = log.append(numbered_event(1)).unwrap();
        let again = log.append(numbered_event(1)).unwrap();
        assert_eq!(again.seq, first.seq);
        assert!(again.duplicate);

        // Repeats inside one batch, too.
        let hold = log.hold_writer();
        let handles: Vec<_> = (0..3)
            .map(|_| log.append_async(numbered_event(2)).unwrap())
            .collect();
        log.submit(numbered_event(2)).unwrap();
        drop(hold);
        let positions: Vec<_> = handles.into_iter().map(|h| h.wait().unwrap()).collect();
        assert!(!positions[0].duplicate);
        assert!(
            positions[1..]
                .iter()
                .all(|p| p.duplicate && p.seq == positions[0].seq)
        );
        let next = log.append(numbered_event(3)).unwrap();
        assert_eq!(next.seq, positions[0].seq + 1, "a repeat consumes no seq");
        let stats = log.stats();
        assert_eq!((stats.written, stats.duplicates), (3, 4));
    }
    // And across a restart (a spool replayed after a crash).
    let log = open_audit(dir.path(), &clock);
    let replay = log.append(numbered_event(1)).unwrap();
    assert!(replay.duplicate);
    assert_eq!(replay.seq, 1);
    assert_eq!(all_events(&log).len(), 3);
    assert!(log.verify(None).unwrap().is_intact());
}

#[test]
fn repeats_are_found_in_the_id_index_below_at_and_above_its_greatest_id() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start_time());
    {
        let log = open_audit(dir.path(), &clock);
        for i in [20, 40] {
            log.append(numbered_event(i)).unwrap();
        }
        // Closing writes the index: the ids are now in the id index, not the unindexed ones.
        log.close();
    }
    let log = open_audit(dir.path(), &clock);
    // ev-000020 sorts below the greatest id (ev-000040), ev-000040 is it: both are looked up
    // and found; ev-000010 is looked up and not found; ev-000050 sorts above and is new.
    for (i, repeat) in [(20, true), (40, true), (10, false), (50, false)] {
        let p = log.append(numbered_event(i)).unwrap();
        assert_eq!(p.duplicate, repeat, "ev-{i:06}");
    }
    assert_eq!(all_events(&log).len(), 4);
}

/// A UUID v7 in canonical text: millisecond `ms`, `n` in its other bits.
fn v7(ms: u64, n: u64) -> String {
    format!(
        "{:08x}-{:04x}-7{:03x}-{:04x}-{:012x}",
        ms >> 16,
        ms & 0xffff,
        n & 0xfff,
        0x8000 | (n & 0x3fff),
        n
    )
}

#[test]
fn time_ordered_ids_from_producers_are_found_in_the_id_blocks() {
    use redb::{ReadableDatabase as _, ReadableTable as _};
    const BLOCKS: TableDefinition<(u8, &[u8], u64, u64), &[u8]> =
        TableDefinition::new("audit_blocks");
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start_time());
    let ms = 1_700_000_000_000;
    // Two ids in one millisecond, one in the next; an uppercase spelling is another id.
    let ids = [v7(ms, 1), v7(ms, 2), v7(ms + 1, 3)];
    {
        let log = open_audit(dir.path(), &clock);
        for (i, id) in ids.iter().enumerate() {
            log.append(numbered_event(i).with_id(id.clone())).unwrap();
        }
        log.close();
    }
    {
        let db = Database::open(audit_path(dir.path())).unwrap();
        let txn = db.begin_read().unwrap();
        let blocks = txn.open_table(BLOCKS).unwrap();
        let id_blocks = blocks
            .iter()
            .unwrap()
            .filter(|b| b.as_ref().unwrap().0.value().0 == 4)
            .count();
        assert_eq!(id_blocks, 2, "one block per millisecond of the run");
    }
    let log = open_audit(dir.path(), &clock);
    // Below, at and above the newest millisecond of the blocks.
    for (id, repeat) in [
        (ids[0].clone(), true),
        (ids[2].clone(), true),
        (v7(ms, 4), false),
        (v7(ms + 2, 5), false),
        (ids[1].to_uppercase(), false),
    ] {
        let p = log.append(numbered_event(9).with_id(id.clone())).unwrap();
        assert_eq!(p.duplicate, repeat, "{id}");
    }
    for id in &ids {
        assert_eq!(log.get(id).unwrap().unwrap().event.id, *id);
    }
    assert!(log.get(&v7(ms, 99)).unwrap().is_none());
    assert_eq!(all_events(&log).len(), 6);
    // Retention removes a run's id blocks with it: a purged id is stored again if resent.
    let purged = log
        .purge_before(start_time() + Duration::from_secs(86_400 * 3))
        .unwrap();
    assert_eq!(purged.events, 6);
    assert!(
        !log.append(numbered_event(0).with_id(ids[0].clone()))
            .unwrap()
            .duplicate
    );
}

#[test]
fn a_full_queue_refuses_fire_and_forget_events_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start_time());
    let cfg = AuditConfig {
        queue_capacity: 8,
        ..AuditConfig::default()
    };
    let accepted = {
        let log = AuditLog::open(&audit_path(dir.path()), Arc::new(clock.clone()), cfg).unwrap();
        let hold = log.hold_writer();
        let mut accepted = 0;
        let mut refused = 0;
        for i in 0..100 {
            match log.submit(numbered_event(i)) {
                Ok(()) => accepted += 1,
                Err(err @ AuditError::Overloaded { capacity: 8 }) => {
                    assert_eq!(err.fault(), Fault::Internal);
                    refused += 1;
                }
                Err(other) => panic!("{other:?}"),
            }
        }
        // The writer may already hold one event, stalled, besides the 8 queued.
        assert!((8..=9).contains(&accepted), "{accepted}");
        let stats = log.stats();
        assert_eq!(stats.overflowed, refused);
        assert!(stats.queue_depth <= 8, "{stats:?}");
        drop(hold);
        log.close();
        accepted
    };
    let log = open_audit(dir.path(), &clock);
    assert_eq!(all_events(&log).len(), accepted);
}

#[test]
fn async_producers_await_their_acknowledgement() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start_time());
    let log = open_audit(dir.path(), &clock);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let positions = runtime.block_on(async {
        let mut out = Vec::new();
        for i in 0..10 {
            let handle = log.append_async(numbered_event(i)).unwrap();
            assert_eq!(handle.id(), format!("ev-{i:06}"));
            out.push(handle.await.unwrap());
        }
        out
    });
    assert_eq!(positions.last().unwrap().seq, 10);
}

#[test]
fn events_break_no_schema_rule() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start_time());
    let log = open_audit(dir.path(), &clock);
    let err = log
        .append(AuditEvent::new("user.login", "T1000I").with_field("hash", "x"))
        .unwrap_err();
    assert!(matches!(&err, AuditError::InvalidEvent { field, .. } if field == "fields.hash"));
    assert_eq!(err.fault(), Fault::Caller);
    let err = log.submit(AuditEvent::new("", "T1000I")).unwrap_err();
    assert!(matches!(&err, AuditError::InvalidEvent { field, .. } if field == "event"));
    let err = AuditLog::open(
        &audit_path(dir.path()),
        Arc::new(SystemClock),
        AuditConfig {
            max_batch: 0,
            ..AuditConfig::default()
        },
    )
    .unwrap_err();
    assert!(matches!(
        err,
        AuditError::InvalidConfig {
            field: "max_batch",
            ..
        }
    ));
    assert_eq!(log.stats().written, 0);
}

#[test]
fn chains_start_afresh_each_utc_day() {
    let dir = tempfile::tempdir().unwrap();
    // 23:59:59 UTC on 2023-11-14.
    let clock = ManualClock::new(start_time() + Duration::from_secs(6_399));
    let log = open_audit(dir.path(), &clock);
    let a = log.append(numbered_event(0)).unwrap();
    clock.advance(Duration::from_secs(2));
    let b = log.append(numbered_event(1)).unwrap();
    let (a, b) = (
        log.get(&a.id).unwrap().unwrap(),
        log.get(&b.id).unwrap().unwrap(),
    );
    assert_eq!(
        (a.chain.as_str(), b.chain.as_str()),
        ("2023-11-14", "2023-11-15")
    );
    use sha2::Digest;
    assert_eq!(
        b.prev_hash,
        hex::encode(sha2::Sha256::digest(b"2023-11-15"))
    );
    assert_eq!(
        a.prev_hash,
        hex::encode(sha2::Sha256::digest(b"2023-11-14"))
    );
    // A clock that steps back does not reopen an old chain.
    clock.set(start_time());
    let c = log.append(numbered_event(2)).unwrap();
    let c = log.get(&c.id).unwrap().unwrap();
    assert_eq!(c.chain, "2023-11-15");
    assert_eq!(c.prev_hash, b.hash);
    let report = log.verify(None).unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!((report.events_checked, report.segments), (3, 2));
}

#[derive(Clone, Default)]
struct SharedSink(Arc<Mutex<Vec<u8>>>);

impl Write for SharedSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn forwarded_lines_are_the_stored_events() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start_time());
    let sink = SharedSink::default();
    let cfg = AuditConfig {
        forward: Some(Box::new(sink.clone())),
        ..AuditConfig::default()
    };
    let log = AuditLog::open(&audit_path(dir.path()), Arc::new(clock.clone()), cfg).unwrap();
    for i in 0..20 {
        log.append(numbered_event(i)).unwrap();
    }
    log.append(numbered_event(3)).unwrap(); // a repeat is not forwarded again
    let stored = all_events(&log);
    log.close();
    let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    let forwarded: Vec<StoredEvent> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(forwarded, stored);
}

#[test]
fn a_second_open_is_locked_out() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start_time());
    let first = open_audit(dir.path(), &clock);
    let err = AuditLog::open(
        &audit_path(dir.path()),
        Arc::new(SystemClock),
        AuditConfig::default(),
    )
    .unwrap_err();
    assert!(
        matches!(err, AuditError::Storage(StorageError::Locked { .. })),
        "{err:?}"
    );
    assert_eq!(err.fault(), Fault::Operator);
    drop(first);
    drop(open_audit(dir.path(), &clock));
}

#[test]
fn a_file_from_a_newer_hop_is_refused_and_left_alone() {
    const META: TableDefinition<&str, u64> = TableDefinition::new("audit_meta");
    let dir = tempfile::tempdir().unwrap();
    let path = audit_path(dir.path());
    let clock = ManualClock::new(start_time());
    open_audit(dir.path(), &clock)
        .append(numbered_event(0))
        .unwrap();
    {
        let db = Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        let mut meta = txn.open_table(META).unwrap();
        assert_eq!(
            meta.insert("schema_version", 999).unwrap().unwrap().value(),
            2
        );
        drop(meta);
        txn.commit().unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let err = AuditLog::open(&path, Arc::new(clock.clone()), AuditConfig::default()).unwrap_err();
    assert!(
        matches!(
            err,
            AuditError::Storage(StorageError::NewerSchema {
                found: 999,
                supported: 2,
                ..
            })
        ),
        "{err:?}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn the_resource_file_is_not_mistaken_for_an_audit_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = crate::support::db_path(dir.path());
    drop(crate::support::redb_backend(dir.path()));
    let err = AuditLog::open(&path, Arc::new(SystemClock), AuditConfig::default()).unwrap_err();
    assert!(
        matches!(err, AuditError::Storage(StorageError::Corrupt { .. })),
        "{err:?}"
    );
    let log = open_audit(dir.path(), &ManualClock::new(start_time()));
    let report = log.verify(None).unwrap();
    assert!(report.is_intact());
    assert_eq!((report.events_checked, report.segments), (0, 0));
}

/// Waits until `n` events are durable.
fn until_written(log: &AuditLog, n: u64) {
    let deadline = monotonic_now() + Duration::from_secs(20);
    while log.stats().written < n {
        assert!(monotonic_now() < deadline, "{:?}", log.stats());
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// An audit log in `dir` whose batches of unwatched events linger up to `linger`.
fn open_lingering(dir: &std::path::Path, linger: Duration) -> AuditLog {
    AuditLog::open(
        &audit_path(dir),
        Arc::new(SystemClock),
        AuditConfig {
            unwatched_linger: linger,
            ..AuditConfig::default()
        },
    )
    .unwrap()
}

/// A steady trickle nobody waits for: 100 events, one every millisecond, all written.
fn trickle(log: &AuditLog) {
    for i in 0..100 {
        log.submit(numbered_event(i)).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    until_written(log, 100);
}

#[test]
fn unwatched_events_share_commits_and_a_watched_one_does_not_wait_for_them() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_lingering(dir.path(), Duration::from_millis(200));
    trickle(&log);
    let lingering = log.stats().batches;
    assert!(
        lingering <= 10,
        "100 trickled events took {lingering} commits"
    );

    // While a batch of unwatched events lingers, an event someone waits for is written at once.
    log.submit(numbered_event(100)).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let started = monotonic_now();
    log.append(numbered_event(101)).unwrap();
    assert!(
        since(started) < Duration::from_millis(150),
        "a watched event waited {:?} behind the linger",
        since(started)
    );
    assert_eq!(log.stats().written, 102);
    assert_eq!(all_events(&log).len(), 102);

    // With no lingering, the same trickle is written about as it comes.
    let dir = tempfile::tempdir().unwrap();
    let log = open_lingering(dir.path(), Duration::ZERO);
    trickle(&log);
    assert!(log.stats().batches > lingering, "{:?}", log.stats());
}

#[test]
fn an_id_the_log_assigned_is_found_after_it_is_indexed() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start_time());
    let log = open_audit(dir.path(), &clock);
    let pos = log
        .append(AuditEvent::new("user.login", "T1000I").with_user("alice"))
        .unwrap();
    let fresh = pos.id.clone();
    assert_eq!(log.get(&fresh).unwrap().unwrap().seq, pos.seq);
    drop(log);
    // Indexed now (close writes the index); such ids have no id-index entry of their own.
    let log = open_audit(dir.path(), &clock);
    let got = log.get(&fresh).unwrap().unwrap();
    assert_eq!((got.seq, got.event.user.as_str()), (pos.seq, "alice"));
    assert!(
        log.get("0190b3c4-0000-7000-8000-000000000000")
            .unwrap()
            .is_none()
    );
    // Idempotency covers the ids producers supply, indexed or not.
    let again = log.append(numbered_event(3).with_id("supplied-1")).unwrap();
    drop(log);
    let log = open_audit(dir.path(), &clock);
    let repeat = log.append(numbered_event(3).with_id("supplied-1")).unwrap();
    assert!(repeat.duplicate);
    assert_eq!(repeat.seq, again.seq);
}
