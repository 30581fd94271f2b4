//! Audit log benchmarks: durable append throughput with 1, 16 and 256 concurrent producers
//! (each producer calls the blocking `append`, so every event is acknowledged only once its
//! batch is fsynced), with the time-to-acknowledgement percentiles printed after each group, and
//! the latency of the first page of a narrow search (one user, one hour) over a large log.
//!
//! The large log holds `HOP_AUDIT_BENCH_EVENTS` events (default 1,000,000; 0 skips the search
//! benchmark), spread over one day
//! across 200 users, so one user's hour holds about 200 events and the first page (100) is full.
//!
//! Run: `cargo bench -p hop-storage --bench audit -- --warm-up-time 1 --measurement-time 3`

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hop_storage::{AuditConfig, AuditEvent, AuditLog, SearchQuery, SystemClock};
use time::OffsetDateTime;

const TYPES: [&str; 4] = ["user.login", "session.start", "db.query", "session.end"];

/// A typical event: identity fields, a session, and one field of its own.
fn event(i: u64, users: u64) -> AuditEvent {
    AuditEvent::new(TYPES[(i % 4) as usize], "T2000I")
        .with_cluster("bench.example.com")
        .with_user(format!("user-{}", i % users))
        .with_login("postgres")
        .with_server(format!("db-{}", i % 17))
        .with_addr_remote("10.1.2.3:51234")
        .with_session_id(format!("sess-{}", i / 16))
        .with_field("query", format!("SELECT * FROM accounts WHERE id = {i}"))
}

fn open(path: &Path) -> AuditLog {
    AuditLog::open(path, Arc::new(SystemClock), AuditConfig::default()).unwrap()
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn append_throughput(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir.path().join("audit.db"));
    let mut group = c.benchmark_group("audit_append_durable");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    for producers in [1u64, 16, 256] {
        // Time from calling `append` to its return, in µs, for every event of the run.
        let latencies: Mutex<Vec<u32>> = Mutex::new(Vec::new());
        let events = Mutex::new((0u64, Duration::ZERO));
        let batches_before = log.stats().batches;
        let written_before = log.stats().written;
        group.bench_with_input(
            BenchmarkId::from_parameter(producers),
            &producers,
            |b, &n| {
                b.iter_custom(|iters| {
                    let per = iters.div_ceil(n);
                    let start = Instant::now();
                    std::thread::scope(|s| {
                        for t in 0..n {
                            let (log, latencies) = (&log, &latencies);
                            s.spawn(move || {
                                let mut mine = Vec::with_capacity(per as usize);
                                for i in 0..per {
                                    let ev = event(t * 1_000_000_000 + i, 1000);
                                    let sent = Instant::now();
                                    log.append(ev).unwrap();
                                    mine.push(sent.elapsed().as_micros() as u32);
                                }
                                latencies.lock().unwrap().extend(mine);
                            });
                        }
                    });
                    let elapsed = start.elapsed();
                    let mut total = events.lock().unwrap();
                    total.0 += per * n;
                    total.1 += elapsed;
                    // Scale to the `iters` events criterion asked for.
                    elapsed.mul_f64(iters as f64 / (per * n) as f64)
                });
            },
        );
        let mut lat = latencies.into_inner().unwrap();
        lat.sort_unstable();
        let (count, busy) = events.into_inner().unwrap();
        let stats = log.stats();
        let batches = stats.batches - batches_before;
        let written = stats.written - written_before;
        println!(
            "audit append, {producers} producers: {count} events in {busy:.2?} = {:.0} events/s; \
             ack latency µs p50 {} p90 {} p99 {} p99.9 {} max {}; {batches} fsynced batches, \
             {:.1} events/batch",
            count as f64 / busy.as_secs_f64(),
            percentile(&lat, 0.50),
            percentile(&lat, 0.90),
            percentile(&lat, 0.99),
            percentile(&lat, 0.999),
            lat.last().copied().unwrap_or(0),
            written as f64 / batches.max(1) as f64,
        );
    }
    group.finish();
    println!(
        "audit file after append benches: {} events, {:.1} MiB",
        log.stats().written,
        file_mib(&dir.path().join("audit.db"))
    );
}

fn file_mib(path: &Path) -> f64 {
    std::fs::metadata(path).map_or(0.0, |m| m.len() as f64 / (1024.0 * 1024.0))
}

fn narrow_search(c: &mut Criterion) {
    let n: u64 = std::env::var("HOP_AUDIT_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    if n == 0 {
        return;
    }
    const USERS: u64 = 200;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let log = open(&path);
    // One day of events, evenly spaced, starting at a fixed midnight.
    let day_start = OffsetDateTime::from_unix_timestamp(1_700_006_400).unwrap();
    let step = Duration::from_nanos(86_400_000_000_000 / n);
    let started = Instant::now();
    let mut pending = std::collections::VecDeque::new();
    for i in 0..n {
        let ev = event(i, USERS).with_time(day_start + step * i as u32);
        pending.push_back(log.append_async(ev).unwrap());
        if pending.len() >= 50_000 {
            pending.pop_front().unwrap().wait().unwrap();
        }
    }
    for h in pending {
        h.wait().unwrap();
    }
    let build = started.elapsed();
    let hour_start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_006_400 + 13 * 3600);
    let query = SearchQuery {
        user: Some("user-42".into()),
        from: Some(hour_start),
        to: Some(hour_start + Duration::from_secs(3600)),
        ..SearchQuery::default()
    };
    // Right after writing, the newest events' index entries may still be in the writer's
    // backlog, so this search also scans that tail.
    let live = Instant::now();
    let page = log.search(&query).unwrap();
    println!(
        "narrow search right after the writes (index backlog still being written): {} events \
         in {:.2?}",
        page.events.len(),
        live.elapsed()
    );
    drop(log);
    println!(
        "search log: {n} events written in {build:.2?} ({:.0} events/s pipelined from one \
         thread), file {:.1} MiB",
        n as f64 / build.as_secs_f64(),
        file_mib(&path)
    );
    let log = open(&path);
    let first = Instant::now();
    let page = log.search(&query).unwrap();
    println!(
        "narrow search (one user, one hour) over {n} events: first page of {} events, first \
         call {:.2?}",
        page.events.len(),
        first.elapsed()
    );
    let mut group = c.benchmark_group("audit_search");
    group.bench_function(BenchmarkId::new("user_hour_first_page", n), |b| {
        b.iter(|| log.search(&query).unwrap())
    });
    let text = SearchQuery {
        text: Some("accounts where id = 4242".into()),
        ..query.clone()
    };
    group.bench_function(BenchmarkId::new("user_hour_text_first_page", n), |b| {
        b.iter(|| log.search(&text).unwrap())
    });
    group.finish();
}

criterion_group!(benches, append_throughput, narrow_search);
criterion_main!(benches);
