//! What only the shared PostgreSQL backend can show: several backends (appliances) on one
//! database with overlapping transactions, a change-feed connection killed mid-stream, a watcher
//! that resumes in another process's backend, the "too old" answer after trimming, schema
//! migrations, TLS with client certificates, and an unreachable server.

use std::sync::{Arc, mpsc};
use std::time::Duration;

use hop_storage::{
    Backend, Clock, Event, ManualClock, PgBackend, PgOptions, PutOptions, StorageError, Watcher,
};

use crate::clock::{monotonic_now, since};
use crate::pg::{PgServer, open, server, test_options};
use crate::support::start_time;

fn no_lease() -> PutOptions {
    PutOptions::default()
}

/// The server and a fresh database, or `None` (SKIP) without PostgreSQL.
fn setup() -> Option<(&'static PgServer, String, ManualClock)> {
    let Some(server) = server() else {
        eprintln!("SKIP: PostgreSQL is not installed");
        return None;
    };
    Some((server, server.fresh_db(), ManualClock::new(start_time())))
}

/// Waits for `n` events (10 s at most each), then checks that no more come within 300 ms.
fn collect(watcher: &mut Watcher, n: usize) -> Vec<Event> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut events = Vec::new();
        while events.len() < n {
            let event = tokio::time::timeout(Duration::from_secs(10), watcher.recv())
                .await
                .unwrap_or_else(|_| panic!("only {} of {n} events came: {events:?}", events.len()))
                .unwrap();
            events.push(event);
        }
        let extra = tokio::time::timeout(Duration::from_millis(300), watcher.recv()).await;
        assert!(
            extra.is_err(),
            "an event beyond the {n} expected: {extra:?}"
        );
        events
    })
}

fn revisions(events: &[Event]) -> Vec<u64> {
    events.iter().map(Event::revision).collect()
}

#[test]
fn a_late_committing_writer_never_lets_a_higher_revision_be_seen_first() {
    let Some((server, db, clock)) = setup() else {
        return;
    };
    let slow = open(server, &db, &clock, test_options());
    let fast = open(server, &db, &clock, test_options());
    let observer = open(server, &db, &clock, test_options());
    let mut watcher = observer.watch();

    // The slow writer takes its revision, then holds its transaction open.
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let release_rx = std::sync::Mutex::new(release_rx);
    slow.set_commit_hook(Some(Arc::new(move |revision| {
        entered_tx.send(revision).unwrap();
        release_rx.lock().unwrap().recv().unwrap();
    })));
    std::thread::scope(|scope| {
        let slow_put = scope.spawn(|| slow.put("slow", b"s", no_lease()).unwrap());
        let slow_rev = entered.recv_timeout(Duration::from_secs(10)).unwrap();
        // The fast writer starts after and overlaps: it waits for the slow one's revision lock.
        let fast_put = scope.spawn(|| fast.put("fast", b"f", no_lease()).unwrap());
        std::thread::sleep(Duration::from_millis(300));
        assert!(!fast_put.is_finished(), "the second writer must wait");
        assert_eq!(observer.current_revision().unwrap(), slow_rev - 1);
        assert_eq!(observer.get("slow").unwrap(), None, "not committed yet");
        assert!(watcher.try_recv().unwrap().is_none());

        release.send(()).unwrap();
        assert_eq!(slow_put.join().unwrap(), slow_rev);
        assert_eq!(fast_put.join().unwrap(), slow_rev + 1);
    });
    let events = collect(&mut watcher, 2);
    assert_eq!(revisions(&events), [1, 2]);
    assert!(matches!(&events[0], Event::Put(item) if item.key == "slow"));
    assert!(matches!(&events[1], Event::Put(item) if item.key == "fast"));

    // A conflicting writer that overlaps a late commit sees it: the precondition is checked
    // after the lock is granted.
    slow.set_commit_hook(None);
    let cas = open(server, &db, &clock, test_options());
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let release_rx = std::sync::Mutex::new(release_rx);
    slow.set_commit_hook(Some(Arc::new(move |revision| {
        entered_tx.send(revision).unwrap();
        release_rx.lock().unwrap().recv().unwrap();
    })));
    std::thread::scope(|scope| {
        let slow_put = scope.spawn(|| slow.put("fast", b"by slow", no_lease()).unwrap());
        entered.recv_timeout(Duration::from_secs(10)).unwrap();
        let swap = scope.spawn(|| cas.compare_and_swap("fast", Some(2), b"by cas", no_lease()));
        std::thread::sleep(Duration::from_millis(200));
        release.send(()).unwrap();
        assert_eq!(slow_put.join().unwrap(), 3);
        assert!(matches!(
            swap.join().unwrap(),
            Err(StorageError::Conflict { .. })
        ));
    });
    assert_eq!(observer.get("fast").unwrap().unwrap().value, b"by slow");
    assert_eq!(
        observer.current_revision().unwrap(),
        3,
        "the failed swap took no revision"
    );
    assert_eq!(revisions(&collect(&mut watcher, 1)), [3]);
}

#[test]
fn writers_on_two_backends_produce_one_contiguous_feed() {
    const PER_THREAD: usize = 25;
    let Some((server, db, clock)) = setup() else {
        return;
    };
    let a = open(server, &db, &clock, test_options());
    let b = open(server, &db, &clock, test_options());
    let observer = open(server, &db, &clock, test_options());
    let mut watcher = observer.watch();
    a.put("counter", b"0", no_lease()).unwrap();
    std::thread::scope(|scope| {
        for backend in [&a, &a, &b, &b] {
            scope.spawn(move || {
                for _ in 0..PER_THREAD {
                    loop {
                        let item = backend.get("counter").unwrap().unwrap();
                        let n: usize = std::str::from_utf8(&item.value).unwrap().parse().unwrap();
                        match backend.compare_and_swap(
                            "counter",
                            Some(item.revision),
                            (n + 1).to_string().as_bytes(),
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
    let total = 4 * PER_THREAD;
    let value = observer.get("counter").unwrap().unwrap().value;
    assert_eq!(value, total.to_string().as_bytes());
    let events = collect(&mut watcher, total + 1);
    assert_eq!(
        revisions(&events),
        (1..=total as u64 + 1).collect::<Vec<_>>()
    );
    // Every event carries the value its revision committed: 0, 1, 2, … in order.
    for (i, event) in events.iter().enumerate() {
        let Event::Put(item) = event else {
            panic!("{event:?}")
        };
        assert_eq!(item.value, i.to_string().as_bytes());
    }
}

#[test]
fn a_killed_feed_connection_resumes_without_gap_or_duplicate() {
    let Some((server, db, clock)) = setup() else {
        return;
    };
    let writer = open(server, &db, &clock, test_options());
    let reader = open(server, &db, &clock, test_options());
    let mut watcher = reader.watch();
    for i in 0..5 {
        writer.put(&format!("before/{i}"), b"", no_lease()).unwrap();
    }
    let first = collect(&mut watcher, 5);
    // Mid-stream: kill every follower on this database, then write while they reconnect.
    assert!(server.kill_followers(&db) >= 2);
    for i in 0..5 {
        writer.put(&format!("during/{i}"), b"", no_lease()).unwrap();
    }
    assert!(server.kill_followers(&db) <= 2);
    for i in 0..5 {
        writer.put(&format!("after/{i}"), b"", no_lease()).unwrap();
    }
    let rest = collect(&mut watcher, 10);
    let all: Vec<u64> = revisions(&first)
        .into_iter()
        .chain(revisions(&rest))
        .collect();
    assert_eq!(all, (1..=15).collect::<Vec<_>>());

    // The pooled connections dropped too (as after a server restart): the next operations open
    // fresh ones.
    let pooled = server.sql(
        "postgres",
        &format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = '{db}' AND application_name = 'hop'"
        ),
    );
    assert_ne!(pooled, "0");
    assert_eq!(writer.put("after/restart", b"", no_lease()).unwrap(), 16);
    assert_eq!(reader.get("after/restart").unwrap().unwrap().revision, 16);
    assert_eq!(revisions(&collect(&mut watcher, 1)), [16]);
}

#[test]
fn a_watcher_resumes_on_another_backend_from_its_last_revision() {
    let Some((server, db, clock)) = setup() else {
        return;
    };
    let writer = open(server, &db, &clock, test_options());
    let (resume_at, seen) = {
        // An appliance that watches, handles three events, and goes away mid-stream.
        let reader = open(server, &db, &clock, test_options());
        let mut watcher = reader.watch();
        for i in 0..6 {
            writer
                .put(&format!("k{i}"), i.to_string().as_bytes(), no_lease())
                .unwrap();
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut seen = Vec::new();
        for _ in 0..3 {
            let event = runtime
                .block_on(async {
                    tokio::time::timeout(Duration::from_secs(10), watcher.recv()).await
                })
                .unwrap()
                .unwrap();
            seen.push(event.revision());
        }
        (watcher.revision(), seen)
    };
    assert_eq!(seen, [1, 2, 3]);
    assert!(writer.delete("k0").unwrap());
    writer.put("k6", b"6", no_lease()).unwrap();
    // A new backend (nothing in its history) resumes from the change table.
    let again = open(server, &db, &clock, test_options());
    let mut watcher = again.watch_from(resume_at).unwrap();
    writer.put("k7", b"7", no_lease()).unwrap();
    let events = collect(&mut watcher, 6);
    assert_eq!(revisions(&events), [4, 5, 6, 7, 8, 9]);
    assert_eq!(
        events[3],
        Event::Delete {
            key: "k0".into(),
            revision: 7
        }
    );
    let Event::Put(item) = &events[0] else {
        panic!("{:?}", events[0])
    };
    assert_eq!(
        (item.key.as_str(), item.value.as_slice()),
        ("k3", &b"3"[..])
    );
}

#[test]
fn a_trimmed_change_table_answers_too_old() {
    let Some((server, db, clock)) = setup() else {
        return;
    };
    let options = PgOptions {
        change_retention: Duration::from_secs(60),
        max_changes: 1000,
        ..test_options()
    };
    let b = open(server, &db, &clock, options.clone());
    for i in 0..5 {
        b.put(&format!("old/{i}"), b"", no_lease()).unwrap();
    }
    clock.advance(Duration::from_secs(120));
    b.put("new", b"", no_lease()).unwrap();
    assert_eq!(b.purge_expired().unwrap(), 0);

    // Another appliance, whose history is empty, must go to the table.
    let other = open(server, &db, &clock, options);
    let err = other.watch_from(2).unwrap_err();
    match &err {
        StorageError::WatchTooOld { after, oldest } => assert_eq!((*after, *oldest), (2, 5)),
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("too old, resynchronize"), "{err}");
    let mut watcher = other.watch_from(5).unwrap();
    assert_eq!(revisions(&collect(&mut watcher, 1)), [6]);
    assert!(matches!(
        other.watch_from(7),
        Err(StorageError::WatchAhead {
            after: 7,
            current: 6
        })
    ));

    // The row cap trims too, whatever the age.
    let capped = PgOptions {
        max_changes: 3,
        ..test_options()
    };
    let b = open(server, &db, &clock, capped);
    for i in 0..5 {
        b.put(&format!("more/{i}"), b"", no_lease()).unwrap();
    }
    b.purge_expired().unwrap();
    let fresh = open(server, &db, &clock, test_options());
    assert!(matches!(
        fresh.watch_from(7),
        Err(StorageError::WatchTooOld { oldest: 8, .. })
    ));
    assert_eq!(
        revisions(&collect(&mut fresh.watch_from(8).unwrap(), 3)),
        [9, 10, 11]
    );
}

#[test]
fn ttl_follows_the_injected_clock_across_backends() {
    let Some((server, db, clock)) = setup() else {
        return;
    };
    let a = open(server, &db, &clock, test_options());
    let b = open(server, &db, &clock, test_options());
    let lease = PutOptions {
        expires: Some(clock.now() + Duration::from_secs(30)),
    };
    a.put("lease", b"x", lease).unwrap();
    assert!(b.get("lease").unwrap().is_some());
    // Another appliance's writes: read the revision, then watch from it.
    let mut watcher = b.watch_from(b.current_revision().unwrap()).unwrap();
    clock.advance(Duration::from_secs(30));
    assert_eq!(b.get("lease").unwrap(), None);
    assert!(b.range("", "", 0).unwrap().is_empty());
    assert_eq!(a.purge_expired().unwrap(), 1);
    assert_eq!(
        collect(&mut watcher, 1),
        [Event::Delete {
            key: "lease".into(),
            revision: 2
        }]
    );
}

#[test]
fn schema_is_migrated_once_and_a_newer_one_is_refused_untouched() {
    let Some((server, db, clock)) = setup() else {
        return;
    };
    let rev = {
        let b = open(server, &db, &clock, test_options());
        b.put("k", b"v", no_lease()).unwrap()
    };
    // Reopening keeps everything and applies nothing twice.
    let b = open(server, &db, &clock, test_options());
    assert_eq!(b.current_revision().unwrap(), rev);
    assert_eq!(b.get("k").unwrap().unwrap().value, b"v");
    drop(b);
    let versions = || {
        server.sql(
            &db,
            "SELECT string_agg(version::text, ',' ORDER BY version) FROM hop_schema_version",
        )
    };
    assert_eq!(versions(), PgBackend::SCHEMA_VERSION.to_string());

    server.sql(&db, "INSERT INTO hop_schema_version (version) VALUES (99)");
    let err = PgBackend::open(
        &server.socket_url(&db),
        Arc::new(clock.clone()),
        test_options(),
    )
    .unwrap_err();
    match &err {
        StorageError::NewerDatabaseSchema {
            found, supported, ..
        } => {
            assert_eq!((*found, *supported), (99, PgBackend::SCHEMA_VERSION));
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("Upgrade hop"), "{err}");
    assert_eq!(err.fault(), hop_storage::Fault::Operator);
    assert_eq!(versions(), format!("{},99", PgBackend::SCHEMA_VERSION));
    assert_eq!(
        server.sql(&db, "SELECT revision FROM hop_meta"),
        rev.to_string()
    );
}

#[test]
fn tls_with_a_client_certificate() {
    let Some((server, db, clock)) = setup() else {
        return;
    };
    let b = PgBackend::open(
        &server.tls_url(&db, "ca.crt"),
        Arc::new(clock.clone()),
        test_options(),
    )
    .unwrap();
    assert_eq!(
        b.target(),
        format!("hopcert@localhost:{}/{db}", server.port())
    );
    let rev = b.put("over/tls", b"v", no_lease()).unwrap();
    let mut watcher = b.watch_from(0).unwrap();
    assert_eq!(revisions(&collect(&mut watcher, 1)), [rev]);
    let ssl = server.sql(
        "postgres",
        &format!(
            "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.datname = '{db}' AND a.usename = 'hopcert'"
        ),
    );
    assert_eq!(ssl, "t", "every connection of the backend is TLS");

    // A server certificate from a CA we do not trust is refused.
    let err = PgBackend::open(
        &server.tls_url(&db, "other-ca.crt"),
        Arc::new(clock.clone()),
        test_options(),
    )
    .unwrap_err();
    assert!(matches!(err, StorageError::Unreachable { .. }), "{err:?}");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
    // A missing file is a configuration error naming the setting.
    let url = server.tls_url(&db, "nonexistent.crt");
    let err = PgBackend::open(&url, Arc::new(clock.clone()), test_options()).unwrap_err();
    assert!(
        matches!(&err, StorageError::PostgresConfig { reason } if reason.contains("sslrootcert")),
        "{err:?}"
    );
}

#[test]
fn an_unreachable_server_is_reported_as_such() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let clock = ManualClock::new(start_time());
    let err = PgBackend::open(
        &format!("postgresql://hop@127.0.0.1:{port}/hop?sslmode=disable"),
        Arc::new(clock),
        PgOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, StorageError::Unreachable { .. }), "{err:?}");
    assert_eq!(err.fault(), hop_storage::Fault::Operator);
    let err = PgBackend::open(
        "mysql://x@y/z",
        Arc::new(ManualClock::new(start_time())),
        PgOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(err, StorageError::PostgresConfig { .. }),
        "{err:?}"
    );
}

/// Not a check: what a write and a cross-appliance watch cost on this machine (run with
/// `--ignored --nocapture`; docs/ARCHITECTURE.md quotes it).
#[test]
#[ignore]
fn measure_write_rate_and_feed_latency() {
    let Some((server, db, clock)) = setup() else {
        return;
    };
    let writer = open(server, &db, &clock, test_options());
    let reader = open(server, &db, &clock, test_options());
    let mut watcher = reader.watch();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let n = 500;
    let timer = monotonic_now();
    for i in 0..n {
        writer
            .put(&format!("k{}", i % 50), b"value", no_lease())
            .unwrap();
    }
    let writes = since(timer);
    let mut worst = Duration::ZERO;
    for i in 0..20 {
        let at = monotonic_now();
        writer
            .put("latency", i.to_string().as_bytes(), no_lease())
            .unwrap();
        loop {
            let event = runtime
                .block_on(async {
                    tokio::time::timeout(Duration::from_secs(5), watcher.recv()).await
                })
                .unwrap()
                .unwrap();
            if matches!(&event, Event::Put(item) if item.key == "latency" && item.value == i.to_string().as_bytes())
            {
                break;
            }
        }
        worst = worst.max(since(at));
    }
    eprintln!(
        "PostgreSQL backend: {n} sequential puts in {writes:?} ({:.0}/s); worst put-to-other-appliance-event latency {worst:?}",
        f64::from(n) / writes.as_secs_f64()
    );
}
