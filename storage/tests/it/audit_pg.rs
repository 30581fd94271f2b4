//! The audit store contract (`hop_storage::audit_store`), checked through the trait against the
//! local log and against PostgreSQL; then what only a shared store shows: two appliances'
//! writers on one database, each with its own chains, searched and verified from either; an id
//! written by one acknowledged as a duplicate by the other; acknowledged means committed (a
//! fresh connection sees every acknowledged event); tampering and a removed tail named by
//! verify.

use std::sync::Arc;
use std::time::Duration;

use hop_storage::{
    AuditEvent, AuditStore, ManualClock, Order, PgAuditStore, SearchQuery, audit::BreakReason,
};

use crate::pg::server;
use crate::support::{numbered_event, open_audit, start_time};

fn pg_store(db: &str, clock: &ManualClock) -> PgAuditStore {
    let server = server().unwrap();
    PgAuditStore::open(&server.socket_url(db), Arc::new(clock.clone()), None).unwrap()
}

/// What every audit store keeps, through the trait only.
fn keeps_the_contract(store: &dyn AuditStore, clock: &ManualClock) {
    let ev = || AuditEvent::new("user.login", "T1000I").with_id("ev-1");
    let first = store.append_async(ev()).unwrap();
    assert_eq!(first.id(), "ev-1");
    let first = first.wait().unwrap();
    assert!(!first.duplicate);
    let again = store.append(ev()).unwrap();
    assert!(again.duplicate && again.seq == first.seq, "{again:?}");
    for i in 0..30 {
        store.append(numbered_event(i)).unwrap();
        clock.advance(Duration::from_secs(1));
    }
    store
        .submit(AuditEvent::new("session.start", "T2000I").with_user("zed"))
        .unwrap();
    let last = store
        .append(AuditEvent::new("user.login", "T1000I").with_user("zed"))
        .unwrap();
    assert!(last.seq > first.seq);
    let got = store.get("ev-1").unwrap().unwrap();
    assert_eq!(got.event.event, "user.login");
    assert!(store.get("nope").unwrap().is_none());
    // Paging in both orders covers every event once.
    for order in [Order::OldestFirst, Order::NewestFirst] {
        let mut q = SearchQuery {
            order,
            limit: 7,
            ..SearchQuery::default()
        };
        let mut seen = Vec::new();
        loop {
            let page = store.search(&q).unwrap();
            seen.extend(page.events.iter().map(|e| e.event.id.clone()));
            match page.next_cursor {
                Some(c) => q.cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen.len(), 33, "{order:?}");
        let unique: std::collections::BTreeSet<_> = seen.iter().collect();
        assert_eq!(unique.len(), 33);
    }
    let by_user = store
        .search(&SearchQuery {
            user: Some("zed".into()),
            ..SearchQuery::default()
        })
        .unwrap();
    assert_eq!(by_user.events.len(), 2);
    let by_type = store
        .search(&SearchQuery {
            event_types: vec!["db.query".into()],
            ..SearchQuery::default()
        })
        .unwrap();
    assert!(by_type.events.iter().all(|e| e.event.event == "db.query"));
    assert!(!by_type.events.is_empty());
    let by_text = store
        .search(&SearchQuery {
            text: Some("NODE-2".into()),
            ..SearchQuery::default()
        })
        .unwrap();
    assert_eq!(by_text.events.len(), 10);
    let report = store.verify(None).unwrap();
    assert!(report.first_break.is_none(), "{report:?}");
    assert_eq!(report.events_checked, 33);
    let mut out = Vec::new();
    assert_eq!(store.export(None, None, &mut out).unwrap(), 33);
    let first_line = out.split(|b| *b == b'\n').next().unwrap();
    let line: serde_json::Value = serde_json::from_slice(first_line).unwrap();
    for field in ["seq", "chain", "prev_hash", "hash", "id", "event", "time"] {
        assert!(line.get(field).is_some(), "{field} in {line}");
    }
    assert_eq!(store.stats().duplicates, 1);
}

#[test]
fn the_local_log_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start_time());
    let log = open_audit(dir.path(), &clock);
    keeps_the_contract(&log, &clock);
}

#[test]
fn postgresql_keeps_the_contract() {
    let Some(server) = server() else { return };
    let db = server.fresh_db();
    let clock = ManualClock::new(start_time());
    let store = pg_store(&db, &clock);
    assert_eq!(store.describe().kind, "postgresql");
    keeps_the_contract(&store, &clock);
}

#[test]
fn two_writers_share_one_database_and_verify_from_either() {
    let Some(server) = server() else { return };
    let db = server.fresh_db();
    let clock = ManualClock::new(start_time());
    let a = pg_store(&db, &clock);
    let b = pg_store(&db, &clock);
    assert_ne!(a.writer(), b.writer());
    let mut acked = Vec::new();
    for i in 0..20 {
        let (w, name) = if i % 2 == 0 { (&a, "a") } else { (&b, "b") };
        let pos = w
            .append(AuditEvent::new("user.login", "T1000I").with_user(name))
            .unwrap();
        acked.push(pos.id);
        // A day boundary halfway: each writer starts a new chain.
        if i == 9 {
            clock.advance(Duration::from_secs(86_400));
        }
    }
    // An id one writer stored is a duplicate for the other.
    let dup = b
        .append(AuditEvent::new("user.login", "T1000I").with_id(acked[0].clone()))
        .unwrap();
    assert!(dup.duplicate);
    // Acknowledged = committed: a third connection sees every acknowledged id.
    let reader = pg_store(&db, &clock);
    for id in &acked {
        assert!(reader.get(id).unwrap().is_some(), "{id}");
    }
    for store in [&a, &b, &reader] {
        let all = store
            .search(&SearchQuery {
                limit: 100,
                ..SearchQuery::default()
            })
            .unwrap();
        assert_eq!(all.events.len(), 20);
        let chains: std::collections::BTreeSet<_> =
            all.events.iter().map(|e| e.chain.clone()).collect();
        assert_eq!(chains.len(), 4, "{chains:?}");
        let report = store.verify(None).unwrap();
        assert!(report.first_break.is_none(), "{report:?}");
        assert_eq!((report.events_checked, report.segments), (20, 4));
    }
    // Retention removes whole days for every writer, and what is left still verifies.
    let purged = a.purge_before(hop_storage::Clock::now(&clock)).unwrap();
    assert_eq!(purged.events, 10);
    assert_eq!(purged.chains.len(), 2);
    assert!(reader.verify(None).unwrap().first_break.is_none());
}

#[test]
fn tampering_and_a_removed_tail_are_named() {
    let Some(server) = server() else { return };
    let db = server.fresh_db();
    let clock = ManualClock::new(start_time());
    let store = pg_store(&db, &clock);
    for i in 0..5 {
        store.append(numbered_event(i)).unwrap();
    }
    server.sql(
        &db,
        "UPDATE hop_audit_events SET canonical = \
         convert_to(replace(convert_from(canonical, 'UTF8'), 'user-3', 'user-9'), 'UTF8') \
         WHERE seq = 4",
    );
    let report = store.verify(None).unwrap();
    let broken = report.first_break.unwrap();
    assert_eq!((broken.seq, broken.reason), (4, BreakReason::HashMismatch));
    let db2 = server.fresh_db();
    let store = pg_store(&db2, &clock);
    for i in 0..5 {
        store.append(numbered_event(i)).unwrap();
    }
    server.sql(&db2, "DELETE FROM hop_audit_events WHERE seq >= 4");
    let broken = store.verify(None).unwrap().first_break.unwrap();
    assert_eq!(
        (broken.seq, broken.reason),
        (4, BreakReason::Truncated { last_written: 5 })
    );
    server.sql(&db2, "DELETE FROM hop_audit_events WHERE seq = 2");
    let broken = store.verify(None).unwrap().first_break.unwrap();
    assert!(matches!(
        broken.reason,
        BreakReason::Gap {
            first_missing: 2,
            last_missing: 2
        }
    ));
}

#[test]
fn retention_removes_whole_days_of_every_writer() {
    let Some(server) = server() else { return };
    let db = server.fresh_db();
    let clock = ManualClock::new(start_time());
    let open = || {
        PgAuditStore::open(
            &server.socket_url(&db),
            Arc::new(clock.clone()),
            Some(Duration::from_secs(86_400)),
        )
        .unwrap()
    };
    let (a, b) = (open(), open());
    let old = a.append(numbered_event(0)).unwrap();
    b.append(numbered_event(1)).unwrap();
    clock.advance(Duration::from_secs(3 * 86_400));
    let new = a.append(numbered_event(2)).unwrap();
    assert!(a.get(&old.id).unwrap().is_none(), "the old day is gone");
    assert!(a.get(&new.id).unwrap().is_some());
    let all = b.search(&SearchQuery::default()).unwrap();
    assert_eq!(all.events.len(), 1);
    let report = b.verify(None).unwrap();
    assert!(report.first_break.is_none(), "{report:?}");
    // A tail removed behind hop's back is still named after retention ran.
    server.sql(&db, "DELETE FROM hop_audit_events WHERE seq = 2");
    let broken = b.verify(None).unwrap().first_break.unwrap();
    assert!(
        matches!(broken.reason, BreakReason::Truncated { last_written: 2 }),
        "{broken:?}"
    );
}

/// Connections the server closes (a restart, an idle timeout) cost nothing: the next write
/// begins on a fresh connection, reads are repeated once.
#[test]
fn closed_connections_are_replaced() {
    let Some(server) = server() else { return };
    let db = server.fresh_db();
    let clock = ManualClock::new(start_time());
    let store = pg_store(&db, &clock);
    store.append(numbered_event(0)).unwrap();
    store.search(&SearchQuery::default()).unwrap();
    let killed: usize = server
        .sql(
            "postgres",
            &format!(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = '{db}' AND pid <> pg_backend_pid()"
            ),
        )
        .parse()
        .unwrap();
    assert!(killed >= 1);
    std::thread::sleep(Duration::from_millis(200));
    store.append(numbered_event(1)).unwrap();
    assert_eq!(
        store.search(&SearchQuery::default()).unwrap().events.len(),
        2
    );
    assert!(store.verify(None).unwrap().first_break.is_none());
}
