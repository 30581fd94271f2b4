//! Search: every filter against a model of the log, in both orders, and cursor pagination that
//! yields each matching event exactly once.

use std::time::{Duration, SystemTime};

use hop_storage::audit::{DEFAULT_LIMIT, MAX_LIMIT};
use hop_storage::{
    AuditError, AuditEvent, AuditLog, AuditStore, Clock, ManualClock, Order, SearchQuery,
    StoredEvent,
};
use time::OffsetDateTime;

use crate::clock::{monotonic_now, since};
use crate::support::{numbered_event, open_audit, start_time};

const EVENTS: usize = 1_200;

/// A log of `EVENTS` events, one a second, where every 13th event says it happened an hour
/// earlier than it was written (so time order differs from seq order), and some carry text.
fn build(dir: &std::path::Path) -> (AuditLog, Vec<StoredEvent>) {
    let clock = ManualClock::new(start_time());
    let log = open_audit(dir, &clock);
    let all = fill(&log, &clock);
    (log, all)
}

/// Writes the events of [`build`] into any store through the trait; every event as exported.
fn fill(log: &dyn AuditStore, clock: &ManualClock) -> Vec<StoredEvent> {
    let handles: Vec<_> = (0..EVENTS)
        .map(|i| {
            clock.advance(Duration::from_secs(1));
            let mut ev = numbered_event(i);
            if i % 13 == 0 {
                let t = OffsetDateTime::from(clock.now()) - Duration::from_secs(3600);
                ev = ev.with_time(t);
            }
            if i % 7 == 0 {
                ev = ev.with_error(format!("Permission DENIED on table t{i}"));
            }
            if i % 4 == 2 {
                ev = ev.with_field("query", format!("SELECT * FROM Accounts WHERE id = {i}"));
            }
            if i == 77 {
                ev = ev.with_field("note", "großer Ärger");
            }
            log.append_async(ev).unwrap()
        })
        .collect();
    for handle in handles {
        handle.wait().unwrap();
    }
    let mut all = Vec::new();
    log.export(None, None, &mut all).unwrap();
    let all: Vec<StoredEvent> = String::from_utf8(all)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(all.len(), EVENTS);
    all
}

fn time_us(ev: &StoredEvent) -> i128 {
    ev.time().unix_timestamp_nanos() / 1000
}

fn to_us(t: SystemTime) -> i128 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i128
}

/// What `q` must return, in order, according to the model.
fn expected(all: &[StoredEvent], q: &SearchQuery) -> Vec<u64> {
    let text = q.text.as_ref().map(|t| t.to_lowercase());
    let mut hits: Vec<&StoredEvent> = all
        .iter()
        .filter(|e| q.from.is_none_or(|from| time_us(e) >= to_us(from)))
        .filter(|e| q.to.is_none_or(|to| time_us(e) < to_us(to)))
        .filter(|e| q.event_types.is_empty() || q.event_types.contains(&e.event.event))
        .filter(|e| q.user.as_ref().is_none_or(|u| *u == e.event.user))
        .filter(|e| {
            q.session_id
                .as_ref()
                .is_none_or(|s| *s == e.event.session_id)
        })
        .filter(|e| {
            text.as_ref().is_none_or(|t| {
                let ev = &e.event;
                let mut hay = vec![
                    ev.event.clone(),
                    ev.user.clone(),
                    ev.login.clone(),
                    ev.server.clone(),
                ];
                hay.extend(ev.error.clone());
                hay.extend(
                    ev.fields
                        .values()
                        .filter_map(|v| v.as_str().map(str::to_owned)),
                );
                hay.iter().any(|h| h.to_lowercase().contains(t.as_str()))
            })
        })
        .collect();
    hits.sort_by_key(|e| (time_us(e), e.seq));
    if q.order == Order::NewestFirst {
        hits.reverse();
    }
    hits.iter().map(|e| e.seq).collect()
}

/// Every page of `q`, followed by cursors.
fn all_pages(log: &dyn AuditStore, q: &SearchQuery) -> Vec<StoredEvent> {
    let mut q = q.clone();
    let mut out = Vec::new();
    for _ in 0..10_000 {
        let page = log.search(&q).unwrap();
        assert!(page.events.len() <= q.limit);
        out.extend(page.events);
        match page.next_cursor {
            Some(cursor) => q.cursor = Some(cursor),
            None => return out,
        }
    }
    panic!("pagination did not end");
}

fn queries() -> Vec<SearchQuery> {
    let t = |secs: u64| start_time() + Duration::from_secs(secs);
    let q = SearchQuery::default;
    let types = |ts: &[&str]| ts.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    vec![
        q(),
        SearchQuery {
            event_types: types(&["db.query"]),
            ..q()
        },
        SearchQuery {
            event_types: types(&["user.login", "session.end", "user.login"]),
            ..q()
        },
        SearchQuery {
            user: Some("user-3".into()),
            ..q()
        },
        SearchQuery {
            user: Some("user-3".into()),
            event_types: types(&["db.query", "session.start"]),
            ..q()
        },
        SearchQuery {
            session_id: Some("sess-7".into()),
            ..q()
        },
        SearchQuery {
            session_id: Some("sess-7".into()),
            user: Some("user-7".into()),
            event_types: types(&["session.end"]),
            ..q()
        },
        SearchQuery {
            session_id: Some("sess-7".into()),
            user: Some("user-2".into()),
            ..q()
        },
        SearchQuery {
            user: Some("nobody".into()),
            ..q()
        },
        SearchQuery {
            text: Some("denied".into()),
            ..q()
        },
        SearchQuery {
            text: Some("ACCOUNTS where id = 1".into()),
            ..q()
        },
        SearchQuery {
            text: Some("Node-1".into()),
            event_types: types(&["db.query"]),
            ..q()
        },
        SearchQuery {
            text: Some("ärger".into()),
            ..q()
        },
        SearchQuery {
            from: Some(t(100)),
            to: Some(t(400)),
            ..q()
        },
        SearchQuery {
            from: Some(t(0)),
            to: Some(t(900)),
            user: Some("user-1".into()),
            text: Some("denied".into()),
            ..q()
        },
        SearchQuery {
            from: Some(t(500)),
            to: Some(t(500)),
            ..q()
        },
    ]
}

#[test]
fn every_filter_in_both_orders_pages_through_each_match_once() {
    let dir = tempfile::tempdir().unwrap();
    let (log, all) = build(dir.path());
    every_filter_pages_through_each_match_once(&log, &all);
}

/// The same model check on the PostgreSQL audit store (one writer, so the model's order by time
/// and seq is the store's order by time, writer and seq).
#[test]
fn every_filter_in_both_orders_pages_through_each_match_once_on_postgresql() {
    let Some(server) = crate::pg::server() else {
        return;
    };
    let db = server.fresh_db();
    let clock = ManualClock::new(start_time());
    let store = hop_storage::PgAuditStore::open(
        &server.socket_url(&db),
        std::sync::Arc::new(clock.clone()),
        None,
    )
    .unwrap();
    let all = fill(&store, &clock);
    every_filter_pages_through_each_match_once(&store, &all);
}

fn every_filter_pages_through_each_match_once(log: &dyn AuditStore, all: &[StoredEvent]) {
    for base in queries() {
        for order in [Order::NewestFirst, Order::OldestFirst] {
            let want = expected(
                all,
                &SearchQuery {
                    order,
                    ..base.clone()
                },
            );
            for limit in [7, MAX_LIMIT] {
                let q = SearchQuery {
                    order,
                    limit,
                    ..base.clone()
                };
                let got: Vec<u64> = all_pages(log, &q).iter().map(|e| e.seq).collect();
                assert_eq!(got, want, "{q:?}");
            }
        }
    }
    // The text filters found something, so they were exercised.
    let hits = |text: &str| {
        expected(
            all,
            &SearchQuery {
                text: Some(text.into()),
                ..SearchQuery::default()
            },
        )
        .len()
    };
    assert!(hits("denied") > 100 && hits("ärger") == 1 && hits("accounts") > 100);
}

#[test]
fn pages_and_limits() {
    let dir = tempfile::tempdir().unwrap();
    let (log, all) = build(dir.path());
    let first = log
        .search(&SearchQuery {
            limit: 0,
            ..SearchQuery::default()
        })
        .unwrap();
    assert_eq!(first.events.len(), DEFAULT_LIMIT);
    assert!(first.next_cursor.is_some());
    // The newest event first, with every field as stored.
    let newest = all.iter().max_by_key(|e| (time_us(e), e.seq)).unwrap();
    assert_eq!(&first.events[0], newest);

    let everything = log
        .search(&SearchQuery {
            limit: usize::MAX,
            ..SearchQuery::default()
        })
        .unwrap();
    assert_eq!(everything.events.len(), EVENTS);
    assert_eq!(everything.next_cursor, None);

    for cursor in ["", "not-a-cursor", "0123456789abcdef0123456789abcdeg"] {
        let err = log
            .search(&SearchQuery {
                cursor: Some(cursor.into()),
                ..SearchQuery::default()
            })
            .unwrap_err();
        assert!(
            matches!(
                err,
                AuditError::InvalidQuery {
                    field: "cursor",
                    ..
                }
            ),
            "{err:?}"
        );
    }
}

#[test]
fn a_narrow_query_over_200k_events_finds_exactly_its_events() {
    const N: u64 = 200_000;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start_time());
    let log = open_audit(dir.path(), &clock);
    let base = OffsetDateTime::from(start_time());
    let build = monotonic_now();
    let mut pending = Vec::new();
    for i in 0..N {
        // One event every 100 ms: 200k events span about 5.5 hours, 1000 users.
        let ev = AuditEvent::new("session.start", "T2000I")
            .with_id(format!("big-{i}"))
            .with_user(format!("user-{}", i % 1000))
            .with_session_id(format!("s-{i}"))
            .with_time(base + Duration::from_millis(i * 100));
        pending.push(log.append_async(ev).unwrap());
        if pending.len() == 20_000 {
            pending.drain(..).for_each(|h| drop(h.wait().unwrap()));
        }
    }
    pending.into_iter().for_each(|h| drop(h.wait().unwrap()));
    eprintln!("wrote {N} events in {:?}", since(build));

    let hour = |h: u64| start_time() + Duration::from_secs(h * 3600);
    let q = SearchQuery {
        user: Some("user-42".into()),
        from: Some(hour(2)),
        to: Some(hour(3)),
        ..SearchQuery::default()
    };
    let started = monotonic_now();
    let page = log.search(&q).unwrap();
    eprintln!("narrow query over {N} events: {:?}", since(started));
    // user-42 writes every 1000th event (every 100 s): 36 of them in that hour.
    let want: Vec<String> = (0..N)
        .rev()
        .filter(|i| i % 1000 == 42 && (72_000..108_000).contains(i))
        .map(|i| format!("big-{i}"))
        .collect();
    let got: Vec<String> = page.events.iter().map(|e| e.event.id.clone()).collect();
    assert_eq!(want.len(), 36);
    assert_eq!(got, want);
    assert_eq!(page.next_cursor, None);
}

/// Enough small batches (16 concurrent producers) that index entries are written in slices
/// over many transactions: every search must still see every event exactly once, before and
/// after a reopen (which rebuilds the unwritten part of the index backlog).
#[test]
fn search_sees_every_event_while_the_index_catches_up() {
    const THREADS: usize = 16;
    const PER_THREAD: usize = 700;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start_time());
    let log = open_audit(dir.path(), &clock);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let log = &log;
            s.spawn(move || {
                for i in 0..PER_THREAD {
                    log.append(numbered_event(i * THREADS + t)).unwrap();
                }
            });
        }
    });
    let mut all = Vec::new();
    log.export(None, None, &mut all).unwrap();
    let all: Vec<StoredEvent> = String::from_utf8(all)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(all.len(), THREADS * PER_THREAD);
    let check = |log: &AuditLog| {
        for base in [
            SearchQuery {
                user: Some("user-4".into()),
                ..SearchQuery::default()
            },
            SearchQuery {
                session_id: Some("sess-33".into()),
                ..SearchQuery::default()
            },
            SearchQuery {
                event_types: vec!["session.end".into(), "user.login".into()],
                ..SearchQuery::default()
            },
        ] {
            for order in [Order::NewestFirst, Order::OldestFirst] {
                let q = SearchQuery {
                    order,
                    limit: 333,
                    ..base.clone()
                };
                let got: Vec<u64> = all_pages(log, &q).iter().map(|e| e.seq).collect();
                assert_eq!(got, expected(&all, &q), "{q:?}");
            }
        }
        for ev in all.iter().step_by(97) {
            assert_eq!(log.get(&ev.event.id).unwrap().as_ref(), Some(ev));
        }
        assert!(log.get("no-such-id").unwrap().is_none());
    };
    check(&log);
    // A repeat of an id whose index entry may not be written yet is still caught.
    let last = all.iter().max_by_key(|e| e.seq).unwrap();
    let mut again = last.event.clone();
    again.time = None;
    let pos = log.append(again).unwrap();
    assert!(pos.duplicate);
    assert_eq!(pos.seq, last.seq);
    drop(log);
    let log = open_audit(dir.path(), &clock);
    check(&log);
    assert!(log.verify(None).unwrap().is_intact());
}

/// Two runs whose events all fall in one second, each cut into several chunks: pages of every
/// size read each event once, in order, whichever chunk or run it is in.
#[test]
fn pages_walk_a_busy_second_across_chunks_and_runs() {
    const PER_RUN: usize = 2_500;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start_time());
    for round in 0..2 {
        let log = open_audit(dir.path(), &clock);
        let handles: Vec<_> = (0..PER_RUN)
            .map(|i| {
                let ev = AuditEvent::new("db.query", "TDB02I")
                    .with_user("alice")
                    .with_field("n", format!("{round}-{i}"));
                log.append_async(ev).unwrap()
            })
            .collect();
        for h in handles {
            h.wait().unwrap();
        }
        // Closing indexes what is pending: one run per round.
        log.close();
    }
    let log = open_audit(dir.path(), &clock);
    for (order, user) in [
        (Order::NewestFirst, Some("alice")),
        (Order::OldestFirst, Some("alice")),
        (Order::NewestFirst, None),
        (Order::OldestFirst, None),
    ] {
        for limit in [700, 1984, 2_501] {
            let mut seqs = Vec::new();
            let mut cursor = None;
            loop {
                let page = log
                    .search(&SearchQuery {
                        user: user.map(str::to_string),
                        order,
                        limit,
                        cursor: cursor.take(),
                        ..SearchQuery::default()
                    })
                    .unwrap();
                // Only the busy events (the log may add events of its own).
                seqs.extend(
                    page.events
                        .iter()
                        .filter(|e| e.event.event == "db.query")
                        .map(|e| e.seq),
                );
                match page.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            let label = format!("{order:?} user {user:?} limit {limit}");
            let busy = seqs;
            assert_eq!(busy.len(), 2 * PER_RUN, "{label}");
            let ordered = match order {
                Order::NewestFirst => busy.windows(2).all(|w| w[0] > w[1]),
                Order::OldestFirst => busy.windows(2).all(|w| w[0] < w[1]),
            };
            assert!(ordered, "{label}: each once, in order");
        }
    }
}
