//! Upgrade: a log written by the redb-only store (schema 1, every event inside `audit.db`; the
//! committed fixture was written by that code: 300 events over three days, then the first day
//! purged) opens after upgrade with every event moved into segments byte for byte, so its chain
//! still verifies across the purge boundary, and search, get and export return its events.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hop_storage::{AuditConfig, AuditLog, ManualClock, SearchQuery};

use crate::support::{numbered_event, start_time};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/audit-v1.db")
}

fn open(path: &Path, clock: &ManualClock) -> AuditLog {
    AuditLog::open(path, Arc::new(clock.clone()), AuditConfig::default()).unwrap()
}

fn all(log: &AuditLog) -> Vec<hop_storage::StoredEvent> {
    let mut out = Vec::new();
    let mut q = SearchQuery {
        limit: 1000,
        order: hop_storage::Order::OldestFirst,
        ..SearchQuery::default()
    };
    loop {
        let page = log.search(&q).unwrap();
        out.extend(page.events);
        match page.next_cursor {
            Some(c) => q.cursor = Some(c),
            None => return out,
        }
    }
}

#[test]
fn a_v1_log_is_upgraded_once_and_keeps_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    std::fs::copy(fixture(), &path).unwrap();
    let clock = ManualClock::new(start_time() + Duration::from_secs(3 * 86_400));

    let log = open(&path, &clock);
    let report = log.verify(None).unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!((report.events_checked, report.segments), (200, 2));
    let events = all(&log);
    assert_eq!(events.len(), 200);
    assert_eq!(events.first().unwrap().seq, 101);
    assert_eq!(events.last().unwrap().seq, 300);
    assert_eq!(events[0].event.id, "ev-000100");
    let got = log.get("ev-000250").unwrap().unwrap();
    assert_eq!(got.seq, 251);
    let by_user = log
        .search(&SearchQuery {
            user: Some("user-3".to_owned()),
            limit: 1000,
            ..SearchQuery::default()
        })
        .unwrap();
    assert_eq!(by_user.events.len(), 20);
    let mut export = Vec::new();
    assert_eq!(log.export(None, None, &mut export).unwrap(), 200);
    assert_eq!(
        export
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count(),
        200
    );

    // New events continue the last chain, after the last seq.
    let pos = log.append(numbered_event(1000)).unwrap();
    assert_eq!(pos.seq, 301);
    drop(log);

    // The second open finds schema 2 and the segments; nothing moves again.
    let log = open(&path, &clock);
    let report = log.verify(None).unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.events_checked, 201);
    assert_eq!(all(&log).len(), 201);
    // A repeated id is still recognised after the upgrade.
    let again = log.append(numbered_event(250)).unwrap();
    assert!(again.duplicate);
    assert_eq!(again.seq, 251);
}

#[test]
fn an_interrupted_upgrade_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    std::fs::copy(fixture(), &path).unwrap();
    // What a crash during the copy leaves: a segment directory with part of the events, and
    // the file still at schema 1.
    let segments = dir.path().join("audit.segments");
    std::fs::create_dir(&segments).unwrap();
    std::fs::write(
        segments.join("2023-11-15.00000000000000000101.seg"),
        b"HOPAUDS1",
    )
    .unwrap();
    let clock = ManualClock::new(start_time() + Duration::from_secs(3 * 86_400));
    let log = open(&path, &clock);
    let report = log.verify(None).unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.events_checked, 200);
}
