//! The `Backend` contract, checked identically against every implementation: memory, redb and
//! PostgreSQL (when its binaries are installed; `pg` starts one server per run). What only a
//! shared backend can show (several writers on one database, a dropped follower, TLS) is in the
//! `postgres` module.

use std::time::Duration;

use hop_storage::{
    Backend, Event, Item, ManualClock, PutOptions, StorageError, WatchError, prefix_end,
};

use crate::pg::pg_backend;
use crate::support::{memory_backend, redb_backend, start_time};

/// Runs `check` against a fresh backend of each kind.
fn for_each_backend(check: impl Fn(&dyn Backend, &ManualClock)) {
    let (memory, clock) = memory_backend();
    check(&memory, &clock);
    let dir = tempfile::tempdir().unwrap();
    let (redb, clock) = redb_backend(dir.path());
    check(&redb, &clock);
    match pg_backend() {
        Some((pg, clock, _)) => check(&pg, &clock),
        None => eprintln!("SKIP: the PostgreSQL part of this check"),
    }
}

fn no_lease() -> PutOptions {
    PutOptions::default()
}

fn lease(clock: &ManualClock, secs: u64) -> PutOptions {
    use hop_storage::Clock;
    PutOptions {
        expires: Some(clock.now() + Duration::from_secs(secs)),
    }
}

fn drain(watcher: &mut hop_storage::Watcher) -> Vec<Event> {
    let mut events = Vec::new();
    while let Some(event) = watcher.try_recv().unwrap() {
        events.push(event);
    }
    events
}

#[test]
fn revisions_increase_with_every_write() {
    for_each_backend(|b, _| {
        assert_eq!(b.current_revision().unwrap(), 0);
        assert_eq!(b.get("a").unwrap(), None);
        let r1 = b.put("a", b"1", no_lease()).unwrap();
        let r2 = b.put("b", b"2", no_lease()).unwrap();
        let r3 = b.put("a", b"3", no_lease()).unwrap();
        assert!(0 < r1 && r1 < r2 && r2 < r3, "{r1} {r2} {r3}");
        assert_eq!(b.current_revision().unwrap(), r3);
        assert_eq!(
            b.get("a").unwrap(),
            Some(Item {
                key: "a".into(),
                value: b"3".to_vec(),
                revision: r3,
                expires: None,
            })
        );
        assert_eq!(b.get("b").unwrap().unwrap().revision, r2);
        let r4 = b.create("c", b"", no_lease()).unwrap();
        let r5 = b.compare_and_swap("c", Some(r4), b"x", no_lease()).unwrap();
        assert!(b.delete("c").unwrap());
        let r6 = b.current_revision().unwrap();
        assert!(r3 < r4 && r4 < r5 && r5 < r6);
    });
}

#[test]
fn create_refuses_an_existing_key() {
    for_each_backend(|b, _| {
        let rev = b.create("k", b"first", no_lease()).unwrap();
        match b.create("k", b"second", no_lease()) {
            Err(StorageError::AlreadyExists { key }) => assert_eq!(key, "k"),
            other => panic!("{other:?}"),
        }
        let item = b.get("k").unwrap().unwrap();
        assert_eq!((item.value.as_slice(), item.revision), (&b"first"[..], rev));
        assert_eq!(
            b.current_revision().unwrap(),
            rev,
            "a failed write bumps nothing"
        );
    });
}

#[test]
fn compare_and_swap_checks_revision_and_presence() {
    for_each_backend(|b, _| {
        let conflict = |r: Result<u64, StorageError>| match r {
            Err(StorageError::Conflict { key }) => assert_eq!(key, "k"),
            other => panic!("expected conflict, got {other:?}"),
        };
        conflict(b.compare_and_swap("k", Some(1), b"x", no_lease()));
        let r1 = b.compare_and_swap("k", None, b"v1", no_lease()).unwrap();
        conflict(b.compare_and_swap("k", None, b"x", no_lease()));
        conflict(b.compare_and_swap("k", Some(r1 + 100), b"x", no_lease()));
        let r2 = b
            .compare_and_swap("k", Some(r1), b"v2", no_lease())
            .unwrap();
        assert!(r2 > r1);
        conflict(b.compare_and_swap("k", Some(r1), b"stale", no_lease()));
        assert_eq!(b.get("k").unwrap().unwrap().value, b"v2");
        assert_eq!(b.current_revision().unwrap(), r2);
        assert!(b.delete("k").unwrap());
        conflict(b.compare_and_swap("k", Some(r2), b"x", no_lease()));
    });
}

#[test]
fn delete_reports_whether_something_was_deleted() {
    for_each_backend(|b, _| {
        assert!(!b.delete("k").unwrap());
        assert_eq!(b.current_revision().unwrap(), 0);
        b.put("k", b"v", no_lease()).unwrap();
        assert!(b.delete("k").unwrap());
        assert_eq!(b.get("k").unwrap(), None);
        assert!(!b.delete("k").unwrap());
        assert_eq!(b.current_revision().unwrap(), 2);
    });
}

#[test]
fn expired_items_read_as_absent() {
    for_each_backend(|b, clock| {
        b.put("lease/a", b"a", lease(clock, 10)).unwrap();
        b.put("lease/b", b"b", lease(clock, 20)).unwrap();
        b.put("lease/c", b"c", no_lease()).unwrap();
        let item = b.get("lease/a").unwrap().unwrap();
        assert_eq!(item.expires, Some(start_time() + Duration::from_secs(10)));

        clock.advance(Duration::from_secs(10));
        assert_eq!(
            b.get("lease/a").unwrap(),
            None,
            "gone at the expiry instant"
        );
        let keys: Vec<String> = b
            .range("lease/", &prefix_end("lease/"), 0)
            .unwrap()
            .into_iter()
            .map(|i| i.key)
            .collect();
        assert_eq!(keys, ["lease/b", "lease/c"]);
        // The expired item behaves as absent for writes too.
        assert!(!b.delete("lease/a").unwrap());
        b.compare_and_swap("lease/a", None, b"again", no_lease())
            .unwrap();
        assert_eq!(b.get("lease/a").unwrap().unwrap().value, b"again");

        clock.advance(Duration::from_secs(10));
        b.create("lease/b", b"new", lease(clock, 5)).unwrap();
        assert_eq!(b.get("lease/b").unwrap().unwrap().value, b"new");
    });
}

#[test]
fn purge_deletes_expired_items_and_announces_them() {
    for_each_backend(|b, clock| {
        b.put("s/1", b"", lease(clock, 5)).unwrap();
        b.put("s/2", b"", lease(clock, 15)).unwrap();
        b.put("s/3", b"", lease(clock, 5)).unwrap();
        b.put("s/4", b"", no_lease()).unwrap();
        // Re-leasing moves the expiry: s/3 now outlives the first purge.
        b.put("s/3", b"", lease(clock, 30)).unwrap();
        let mut watcher = b.watch();
        assert_eq!(b.purge_expired().unwrap(), 0);

        clock.advance(Duration::from_secs(10));
        let before = b.current_revision().unwrap();
        assert_eq!(b.purge_expired().unwrap(), 1);
        assert_eq!(
            drain(&mut watcher),
            [Event::Delete {
                key: "s/1".into(),
                revision: before + 1
            }]
        );
        assert_eq!(b.current_revision().unwrap(), before + 1);

        clock.advance(Duration::from_secs(100));
        assert_eq!(b.purge_expired().unwrap(), 2);
        let events = drain(&mut watcher);
        assert_eq!(
            events,
            [
                Event::Delete {
                    key: "s/2".into(),
                    revision: before + 2
                },
                Event::Delete {
                    key: "s/3".into(),
                    revision: before + 3
                },
            ]
        );
        assert_eq!(b.purge_expired().unwrap(), 0);

        // Purged items are really gone, not merely hidden by the clock.
        clock.set(start_time());
        let keys: Vec<String> = b
            .range("", "", 0)
            .unwrap()
            .into_iter()
            .map(|i| i.key)
            .collect();
        assert_eq!(keys, ["s/4"]);
    });
}

#[test]
fn watch_sees_later_writes_in_order() {
    for_each_backend(|b, _| {
        b.put("before", b"x", no_lease()).unwrap();
        let mut watcher = b.watch();
        let mut second = b.watch();
        let r1 = b.put("a", b"1", no_lease()).unwrap();
        let r2 = b.create("b", b"2", no_lease()).unwrap();
        assert!(b.create("b", b"dup", no_lease()).is_err());
        let r3 = b.compare_and_swap("a", Some(r1), b"3", no_lease()).unwrap();
        assert!(b.delete("b").unwrap());
        assert!(!b.delete("b").unwrap());
        let put = |key: &str, value: &[u8], revision| {
            Event::Put(Item {
                key: key.into(),
                value: value.to_vec(),
                revision,
                expires: None,
            })
        };
        let expected = vec![
            put("a", b"1", r1),
            put("b", b"2", r2),
            put("a", b"3", r3),
            Event::Delete {
                key: "b".into(),
                revision: r3 + 1,
            },
        ];
        assert_eq!(drain(&mut watcher), expected);
        assert_eq!(drain(&mut second), expected);
    });
}

#[test]
fn watch_recv_waits_for_events() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for_each_backend(|b, _| {
        let mut watcher = b.watch();
        let rev = b.put("k", b"v", no_lease()).unwrap();
        let event = runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), watcher.recv())
                .await
                .unwrap()
        });
        match event.unwrap() {
            Event::Put(item) => assert_eq!((item.key.as_str(), item.revision), ("k", rev)),
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn a_watcher_that_falls_behind_is_told_so() {
    let (b, _) = memory_backend();
    let mut watcher = b.watch();
    for i in 0..5000 {
        b.put(&format!("k{i}"), b"", no_lease()).unwrap();
    }
    assert!(matches!(watcher.try_recv(), Err(WatchError::Lagged(n)) if n > 0));
    assert!(
        watcher.try_recv().unwrap().is_some(),
        "resumes after the lag"
    );
}

#[test]
fn watchers_learn_when_the_backend_is_gone() {
    let (b, _) = memory_backend();
    let mut watcher = b.watch();
    b.put("k", b"", no_lease()).unwrap();
    drop(b);
    assert!(watcher.try_recv().unwrap().is_some());
    assert_eq!(watcher.try_recv(), Err(WatchError::Closed));

    let dir = tempfile::tempdir().unwrap();
    let (b, _) = redb_backend(dir.path());
    let mut watcher = b.watch();
    drop(b);
    assert_eq!(watcher.try_recv(), Err(WatchError::Closed));
}

#[test]
fn range_is_ordered_half_open_and_limited() {
    for_each_backend(|b, clock| {
        for key in ["b/3", "a", "b/1", "c", "b/2", "b", "b0"] {
            b.put(key, key.as_bytes(), no_lease()).unwrap();
        }
        let keys = |items: Vec<Item>| -> Vec<String> { items.into_iter().map(|i| i.key).collect() };
        assert_eq!(
            keys(b.range("b/", &prefix_end("b/"), 0).unwrap()),
            ["b/1", "b/2", "b/3"]
        );
        assert_eq!(
            keys(b.range("b/", &prefix_end("b/"), 2).unwrap()),
            ["b/1", "b/2"]
        );
        assert_eq!(
            keys(b.range("b", "b0", 0).unwrap()),
            ["b", "b/1", "b/2", "b/3"]
        );
        assert_eq!(
            keys(b.range("b/2", "", 0).unwrap()),
            ["b/2", "b/3", "b0", "c"]
        );
        assert_eq!(keys(b.range("", "", 3).unwrap()), ["a", "b", "b/1"]);
        assert!(b.range("c", "a", 0).unwrap().is_empty());
        assert!(b.range("b", "b", 0).unwrap().is_empty());
        let item = &b.range("c", "d", 0).unwrap()[0];
        assert_eq!(item.value, b"c");

        // Expired items neither appear nor count against the limit.
        b.put("b/1", b"", lease(clock, 1)).unwrap();
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            keys(b.range("b/", &prefix_end("b/"), 2).unwrap()),
            ["b/2", "b/3"]
        );
    });
}

#[test]
fn keys_and_values_are_opaque() {
    for_each_backend(|b, _| {
        let big = vec![0xA5u8; 100_000];
        for key in ["", "ü/ñ", "\u{10FFFF}", "with\0nul"] {
            b.put(key, &big, no_lease()).unwrap();
            assert_eq!(b.get(key).unwrap().unwrap().value, big);
        }
        b.put("empty", b"", no_lease()).unwrap();
        assert_eq!(b.get("empty").unwrap().unwrap().value, b"");
    });
}

#[test]
fn redb_keeps_everything_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let rev = {
        let (b, clock) = redb_backend(dir.path());
        b.put("plain", b"p", no_lease()).unwrap();
        b.put("leased", b"l", lease(&clock, 60)).unwrap();
        b.put("gone", b"g", no_lease()).unwrap();
        assert!(b.delete("gone").unwrap());
        b.current_revision().unwrap()
    };
    let (b, clock) = redb_backend(dir.path());
    assert_eq!(b.current_revision().unwrap(), rev);
    assert_eq!(b.get("plain").unwrap().unwrap().value, b"p");
    assert_eq!(b.get("gone").unwrap(), None);
    let leased = b.get("leased").unwrap().unwrap();
    assert_eq!(leased.expires, Some(start_time() + Duration::from_secs(60)));
    assert!(b.put("next", b"", no_lease()).unwrap() > rev);
    // The expiry index survived too.
    clock.advance(Duration::from_secs(60));
    assert_eq!(b.purge_expired().unwrap(), 1);
}

#[test]
fn purge_announces_in_order_of_expiry() {
    for_each_backend(|b, clock| {
        b.put("a", b"", lease(clock, 30)).unwrap();
        b.put("b", b"", lease(clock, 10)).unwrap();
        b.put("c", b"", lease(clock, 20)).unwrap();
        let mut watcher = b.watch();
        clock.advance(Duration::from_secs(60));
        assert_eq!(b.purge_expired().unwrap(), 3);
        let keys: Vec<String> = drain(&mut watcher)
            .into_iter()
            .map(|event| match event {
                Event::Delete { key, .. } => key,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(keys, ["b", "c", "a"]);
    });
}

#[test]
fn concurrent_compare_and_swap_loses_no_update() {
    const THREADS: usize = 4;
    const INCREMENTS: usize = 20;
    for_each_backend(|b, _| {
        b.put("counter", b"0", no_lease()).unwrap();
        let mut watcher = b.watch();
        std::thread::scope(|scope| {
            for _ in 0..THREADS {
                scope.spawn(|| {
                    for _ in 0..INCREMENTS {
                        loop {
                            let item = b.get("counter").unwrap().unwrap();
                            let n: usize =
                                std::str::from_utf8(&item.value).unwrap().parse().unwrap();
                            let next = (n + 1).to_string();
                            match b.compare_and_swap(
                                "counter",
                                Some(item.revision),
                                next.as_bytes(),
                                no_lease(),
                            ) {
                                Ok(_) => break,
                                Err(StorageError::Conflict { .. }) => continue,
                                Err(err) => panic!("{err}"),
                            }
                        }
                    }
                });
            }
        });
        let total = (THREADS * INCREMENTS).to_string();
        assert_eq!(b.get("counter").unwrap().unwrap().value, total.as_bytes());
        let events = drain(&mut watcher);
        assert_eq!(events.len(), THREADS * INCREMENTS);
        let revisions: Vec<u64> = events
            .iter()
            .map(|event| match event {
                Event::Put(item) => item.revision,
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(
            revisions.windows(2).all(|w| w[0] + 1 == w[1]),
            "{revisions:?}"
        );
    });
}

#[test]
fn watch_from_resumes_without_gap_or_duplicate() {
    for_each_backend(|b, _| {
        let mut revisions = Vec::new();
        for i in 0..5 {
            revisions.push(b.put(&format!("k{i}"), b"v", no_lease()).unwrap());
        }
        let mut watcher = b.watch_from(revisions[1]).unwrap();
        assert_eq!(watcher.revision(), revisions[1]);
        let got: Vec<u64> = drain(&mut watcher).iter().map(Event::revision).collect();
        assert_eq!(got, revisions[2..]);
        let next = b.put("k5", b"v", no_lease()).unwrap();
        let got: Vec<u64> = drain(&mut watcher).iter().map(Event::revision).collect();
        assert_eq!(got, [next]);
        assert_eq!(watcher.revision(), next);

        // Resuming at the newest revision: only what comes next.
        let mut current = b.watch_from(next).unwrap();
        assert!(drain(&mut current).is_empty());
        assert!(b.delete("k0").unwrap());
        assert_eq!(
            drain(&mut current),
            [Event::Delete {
                key: "k0".into(),
                revision: next + 1
            }]
        );
        // From the start of the store (nothing trimmed yet): everything, once.
        let mut all = b.watch_from(0).unwrap();
        let got: Vec<u64> = drain(&mut all).iter().map(Event::revision).collect();
        assert_eq!(got, (1..=next + 1).collect::<Vec<_>>());

        match b.watch_from(next + 10) {
            Err(StorageError::WatchAhead { after, current }) => {
                assert_eq!((after, current), (next + 10, next + 1));
            }
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn memory_and_redb_say_too_old_beyond_their_history() {
    let (memory, _) = memory_backend();
    let dir = tempfile::tempdir().unwrap();
    let (redb, _) = redb_backend(dir.path());
    let backends: [&dyn Backend; 2] = [&memory, &redb];
    for b in backends {
        for i in 0..1100 {
            b.put(&format!("k{i}"), b"", no_lease()).unwrap();
        }
        let err = b.watch_from(3).unwrap_err();
        match &err {
            StorageError::WatchTooOld { after, oldest } => {
                assert_eq!((*after, *oldest), (3, 1100 - 1024));
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains("too old, resynchronize"), "{err}");
        assert_eq!(err.fault(), hop_storage::Fault::Caller);
        let mut watcher = b.watch_from(1100 - 1024).unwrap();
        assert_eq!(drain(&mut watcher).len(), 1024);
    }
    // A reopened redb store resumes from its revision on, not before.
    drop(redb);
    let (redb, _) = redb_backend(dir.path());
    assert!(matches!(
        redb.watch_from(1099),
        Err(StorageError::WatchTooOld { oldest: 1100, .. })
    ));
    let mut watcher = redb.watch_from(1100).unwrap();
    redb.put("after", b"", no_lease()).unwrap();
    assert_eq!(drain(&mut watcher).len(), 1);
}

#[test]
fn a_lagged_watcher_resumes_from_its_revision() {
    let (b, _) = memory_backend();
    let mut watcher = b.watch();
    b.put("first", b"", no_lease()).unwrap();
    assert_eq!(watcher.try_recv().unwrap().unwrap().revision(), 1);
    for i in 0..5000 {
        b.put(&format!("k{i}"), b"", no_lease()).unwrap();
    }
    assert!(matches!(watcher.try_recv(), Err(WatchError::Lagged(_))));
    assert_eq!(watcher.revision(), 1, "the last event handed out");
    // The broadcast kept the newest 4096; the history reaches back 1024 events: too old.
    assert!(matches!(
        b.watch_from(watcher.revision()),
        Err(StorageError::WatchTooOld { .. })
    ));
}
