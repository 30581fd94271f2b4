//! Audit log benchmarks: durable append throughput with 1, 16 and 256 concurrent producers,
//! every event acknowledged only once its batch is fsynced, with events/s and the
//! time-to-acknowledgement percentiles printed after each group, in three producer modes:
//! - `audit_append_durable`: a thread per producer calling the blocking `append` (one event in
//!   flight per producer);
//! - `audit_append_inflight`: a thread per producer keeping several events in flight with
//!   `append_async` (a window of `HOP_AUDIT_BENCH_WINDOW` events, default 512, split among the
//!   producers, at least one each);
//! - `audit_append_tasks`: a tokio task per producer (two worker threads) awaiting each
//!   `append_async` handle (one event in flight per producer);
//!
//! and the latency of the first page of a narrow search (one user, one hour) over a large log.
//!
//! The large log holds `HOP_AUDIT_BENCH_EVENTS` events (default 1,000,000; 0 skips the search
//! benchmark), spread over one day
//! across 200 users, so one user's hour holds about 200 events and the first page (100) is full.
//!
//! Run: `cargo bench -p hop-storage --bench audit -- --warm-up-time 1 --measurement-time 3`
//! (`HOP_AUDIT_BENCH_EVENTS=0 … -- audit_append …` for the append groups alone).
//!
//! Knobs for the append groups, read from the environment:
//! - `HOP_AUDIT_BENCH_AGE_EVENTS` (default 0): events appended, untimed, before the first group,
//!   so a single group measures an aged log (the index's B-trees deep and wide);
//! - `HOP_AUDIT_BENCH_SESSION_EVENTS` (default 16): events per session id;
//! - `HOP_AUDIT_BENCH_SESSION_IDS`: how session ids look: `v7` (default: time-ordered UUIDs, as
//!   Hop mints them), `v4` (random UUIDs: a producer that scatters its ids), `counter`
//!   (`sess-N`, what this bench used before);
//! - `HOP_AUDIT_BENCH_EVENT_IDS`: `log` (default: the log assigns each id) or `v7`/`v4`
//!   (producers supply ids, as agents do; each then has an entry in the id index).

// reason: a benchmark that cannot set up or run should stop at once, and its helpers are not
// #[test] functions that clippy's allow-unwrap-in-tests would cover.
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hop_storage::{AckHandle, AuditConfig, AuditEvent, AuditLog, SearchQuery, SystemClock};
use time::OffsetDateTime;

// The allocator `hop` ships with (appliance/src/main.rs): CPU per event is measured as Auth runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "support/clock.rs"]
mod clock;
use clock::{monotonic_now, since};

const TYPES: [&str; 4] = ["user.login", "session.start", "db.query", "session.end"];

/// Events per session (`HOP_AUDIT_BENCH_SESSION_EVENTS`, default 16: a new session id every 16
/// events, which at 200k events/s is 12k new sessions a second).
fn session_events() -> u64 {
    static N: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *N.get_or_init(|| {
        std::env::var("HOP_AUDIT_BENCH_SESSION_EVENTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|n| *n > 0)
            .unwrap_or(16)
    })
}

/// How ids are made (`HOP_AUDIT_BENCH_SESSION_IDS`, `HOP_AUDIT_BENCH_EVENT_IDS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ids {
    /// None supplied: the log assigns event ids.
    Log,
    /// `sess-N`.
    Counter,
    /// Time-ordered UUIDs: the time of the first use, then random bits.
    V7,
    /// Random UUIDs.
    V4,
}

fn ids_knob(name: &str, default: Ids) -> Ids {
    match std::env::var(name).as_deref() {
        Ok("log") => Ids::Log,
        Ok("counter") => Ids::Counter,
        Ok("v7") => Ids::V7,
        Ok("v4") => Ids::V4,
        Ok(other) => panic!("{name}={other}: expected log, counter, v7 or v4"),
        Err(_) => default,
    }
}

fn session_ids() -> Ids {
    static IDS: std::sync::OnceLock<Ids> = std::sync::OnceLock::new();
    *IDS.get_or_init(|| ids_knob("HOP_AUDIT_BENCH_SESSION_IDS", Ids::V7))
}

fn event_ids() -> Ids {
    static IDS: std::sync::OnceLock<Ids> = std::sync::OnceLock::new();
    *IDS.get_or_init(|| ids_knob("HOP_AUDIT_BENCH_EVENT_IDS", Ids::Log))
}

/// 64 well-mixed bits of `x` (splitmix64), the "random" part of a made-up id.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The id of thing `n` (a session or an event, `salt` tells them apart) first used at about
/// `ms` since the epoch.
fn made_id(ids: Ids, n: u64, salt: u64, ms: u64, counter_prefix: &str) -> String {
    let mut random = [0u8; 16];
    random[..8].copy_from_slice(&mix(n ^ salt).to_le_bytes());
    random[8..].copy_from_slice(&mix(n.rotate_left(17) ^ salt).to_le_bytes());
    match ids {
        Ids::Log | Ids::Counter => format!("{counter_prefix}{n}"),
        Ids::V4 => uuid::Builder::from_random_bytes(random)
            .into_uuid()
            .to_string(),
        Ids::V7 => {
            let rest: [u8; 10] = random[..10].try_into().unwrap();
            uuid::Builder::from_unix_timestamp_millis(ms, &rest)
                .into_uuid()
                .to_string()
        }
    }
}

/// Milliseconds since the epoch now (made-up ids carry the time they are first used).
fn now_ms() -> u64 {
    clock::wall_now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A typical event: identity fields, a session, and one field of its own.
fn event(i: u64, users: u64) -> AuditEvent {
    let ms = now_ms();
    let session = i / session_events();
    let ev = AuditEvent::new(TYPES[(i % 4) as usize], "T2000I")
        .with_cluster("bench.example.com")
        .with_user(format!("user-{}", i % users))
        .with_login("postgres")
        .with_server(format!("db-{}", i % 17))
        .with_addr_remote("10.1.2.3:51234")
        .with_session_id(session_id(session, i, ms))
        .with_field("query", format!("SELECT * FROM accounts WHERE id = {i}"));
    match event_ids() {
        Ids::Log => ev,
        ids => ev.with_id(made_id(ids, i, 0xe7e7, ms, "ev-")),
    }
}

/// Session `n`'s id for its event `i`. A v7 id takes the time of the session's first event:
/// ids of open sessions are kept in a shared map (a producer may be a task that moves between
/// threads) until the session's last event.
fn session_id(n: u64, i: u64, ms: u64) -> String {
    static OPEN: std::sync::LazyLock<Mutex<std::collections::HashMap<u64, String>>> =
        std::sync::LazyLock::new(Default::default);
    let last = (i + 1).is_multiple_of(session_events());
    let mut open = OPEN.lock().unwrap();
    let id = match open.get(&n) {
        Some(id) => id.clone(),
        None => {
            let id = made_id(session_ids(), n, 0x5e55, ms, "sess-");
            open.insert(n, id.clone());
            id
        }
    };
    if last {
        open.remove(&n);
    }
    id
}

/// Appends `n` events, untimed, pipelined from one thread (`HOP_AUDIT_BENCH_AGE_EVENTS`).
fn age(log: &AuditLog) {
    let n: u64 = std::env::var("HOP_AUDIT_BENCH_AGE_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if n == 0 {
        return;
    }
    let started = monotonic_now();
    let mut pending = VecDeque::new();
    for i in 0..n {
        // Producer numbers far from the groups' (t * 1e9), so no session id repeats.
        pending.push_back(log.append_async(event(999_000_000_000 + i, 1000)).unwrap());
        if pending.len() >= 4096 {
            pending.pop_front().unwrap().wait().unwrap();
        }
    }
    for h in pending {
        h.wait().unwrap();
    }
    let written = since(started);
    // The indexer writes a run every 250 ms at most; let it take in the last ones.
    std::thread::sleep(Duration::from_secs(2));
    println!("aged the log with {n} events in {written:.2?}");
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

/// How the producers of a group hand in their events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A thread per producer calling the blocking `append`: one event in flight each.
    Blocking,
    /// A thread per producer keeping `window / producers` events in flight with `append_async`
    /// (the total window is `HOP_AUDIT_BENCH_WINDOW`, default 512, at least one per producer).
    InFlight,
    /// A task per producer on a two-worker tokio runtime, awaiting each `append_async` handle:
    /// one event in flight each, as the appliance's async producers do.
    Tasks,
}

impl Mode {
    fn group(self) -> &'static str {
        match self {
            Mode::Blocking => "audit_append_durable",
            Mode::InFlight => "audit_append_inflight",
            Mode::Tasks => "audit_append_tasks",
        }
    }

    fn describe(self, producers: u64) -> String {
        match self {
            Mode::Blocking => format!("{producers} producers"),
            Mode::InFlight => format!("{producers} producers x {} in flight", in_flight(producers)),
            Mode::Tasks => format!("{producers} async tasks"),
        }
    }
}

fn window() -> u64 {
    std::env::var("HOP_AUDIT_BENCH_WINDOW")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512)
}

fn in_flight(producers: u64) -> u64 {
    (window() / producers).max(1)
}

/// Appends `per` events from producer `t`, returning each one's time to acknowledgement in µs.
fn produce_blocking(log: &AuditLog, t: u64, per: u64) -> Vec<u32> {
    let mut mine = Vec::with_capacity(per as usize);
    for i in 0..per {
        let ev = event(t * 1_000_000_000 + i, 1000);
        let sent = monotonic_now();
        log.append(ev).unwrap();
        mine.push(since(sent).as_micros() as u32);
    }
    mine
}

/// As [`produce_blocking`], keeping up to `depth` events in flight (acknowledgements arrive in
/// order, so waiting for the oldest first measures each one when it arrives).
fn produce_in_flight(log: &AuditLog, t: u64, per: u64, depth: u64) -> Vec<u32> {
    let mut mine = Vec::with_capacity(per as usize);
    let mut pending = VecDeque::with_capacity(depth as usize);
    for i in 0..per {
        if pending.len() as u64 >= depth {
            let (sent, handle): (Instant, AckHandle) = pending.pop_front().unwrap();
            handle.wait().unwrap();
            mine.push(since(sent).as_micros() as u32);
        }
        let ev = event(t * 1_000_000_000 + i, 1000);
        let sent = monotonic_now();
        pending.push_back((sent, log.append_async(ev).unwrap()));
    }
    for (sent, handle) in pending {
        handle.wait().unwrap();
        mine.push(since(sent).as_micros() as u32);
    }
    mine
}

/// Runs `per` events from each of `n` producers; returns the wall time.
fn run_producers(
    log: &Arc<AuditLog>,
    runtime: &tokio::runtime::Runtime,
    mode: Mode,
    n: u64,
    per: u64,
    latencies: &Mutex<Vec<u32>>,
) -> Duration {
    let start = monotonic_now();
    match mode {
        Mode::Blocking | Mode::InFlight => std::thread::scope(|s| {
            for t in 0..n {
                let log = &**log;
                s.spawn(move || {
                    let mine = match mode {
                        Mode::Blocking => produce_blocking(log, t, per),
                        _ => produce_in_flight(log, t, per, in_flight(n)),
                    };
                    latencies.lock().unwrap().extend(mine);
                });
            }
        }),
        Mode::Tasks => runtime.block_on(async {
            let tasks: Vec<_> = (0..n)
                .map(|t| {
                    let log = Arc::clone(log);
                    tokio::spawn(async move {
                        let mut mine = Vec::with_capacity(per as usize);
                        for i in 0..per {
                            let ev = event(t * 1_000_000_000 + i, 1000);
                            let sent = monotonic_now();
                            log.append_async(ev).unwrap().await.unwrap();
                            mine.push(since(sent).as_micros() as u32);
                        }
                        mine
                    })
                })
                .collect();
            for task in tasks {
                let mine = task.await.unwrap();
                latencies.lock().unwrap().extend(mine);
            }
        }),
    }
    since(start)
}

fn append_throughput(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(open(&dir.path().join("audit.db")));
    age(&log);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    for mode in [Mode::Blocking, Mode::InFlight, Mode::Tasks] {
        let mut group = c.benchmark_group(mode.group());
        group.throughput(Throughput::Elements(1));
        group.sample_size(10);
        for producers in [1u64, 16, 256] {
            // Time from handing in an event to its acknowledgement, in µs, for every event.
            let latencies: Mutex<Vec<u32>> = Mutex::new(Vec::new());
            let events = Mutex::new((0u64, Duration::ZERO));
            let batches_before = log.stats().batches;
            let written_before = log.stats().written;
            let (cpu_before, log_cpu_before) = cpu_times();
            group.bench_with_input(
                BenchmarkId::from_parameter(producers),
                &producers,
                |b, &n| {
                    b.iter_custom(|iters| {
                        let per = iters.div_ceil(n);
                        let elapsed = run_producers(&log, &runtime, mode, n, per, &latencies);
                        let mut total = events.lock().unwrap();
                        total.0 += per * n;
                        total.1 += elapsed;
                        // Scale to the `iters` events criterion asked for.
                        elapsed.mul_f64(iters as f64 / (per * n) as f64)
                    });
                },
            );
            let (cpu_after, log_cpu_after) = cpu_times();
            let mut lat = latencies.into_inner().unwrap();
            lat.sort_unstable();
            let (count, busy) = events.into_inner().unwrap();
            let stats = log.stats();
            let batches = stats.batches - batches_before;
            let written = stats.written - written_before;
            let (log_cpu, log_roles) = log_cpu_per_event(&log_cpu_before, &log_cpu_after, written);
            if count == 0 {
                continue;
            }
            println!(
                "audit append, {}: {count} events in {busy:.2?} = {:.0} events/s; \
                 ack latency µs p50 {} p90 {} p99 {} p99.9 {} max {}; {batches} fsynced \
                 batches, {:.1} events/batch; CPU µs/event: log threads {log_cpu:.2} ({log_roles}), \
                 whole process (producers included) {:.2}",
                mode.describe(producers),
                count as f64 / busy.as_secs_f64(),
                percentile(&lat, 0.50),
                percentile(&lat, 0.90),
                percentile(&lat, 0.99),
                percentile(&lat, 0.999),
                lat.last().copied().unwrap_or(0),
                written as f64 / batches.max(1) as f64,
                (cpu_after - cpu_before).as_secs_f64() * 1e6 / written.max(1) as f64,
            );
        }
        group.finish();
    }
    println!(
        "audit log after append benches: {} events, index {:.1} MiB, segments {:.1} MiB",
        log.stats().written,
        file_mib(&dir.path().join("audit.db")),
        dir_mib(&dir.path().join("audit.segments"))
    );
}

/// CPU time (user + system) of this process and of the log's own threads (named
/// `hop-audit-*`: writer, indexer, acknowledger), from `/proc`.
fn cpu_times() -> (Duration, LogCpu) {
    let ticks = |stat: &str| -> Duration {
        // Fields after the parenthesised name: state is the 3rd, utime the 14th, stime the 15th.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let t = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Duration::from_millis((t(11) + t(12)) * 10)
    };
    let process = std::fs::read_to_string("/proc/self/stat").map_or(Duration::ZERO, |s| ticks(&s));
    let mut log = LogCpu::new();
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if let Some(role) = comm.trim().strip_prefix("hop-audit-") {
                let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
                *log.entry(role.to_owned()).or_default() += ticks(&stat);
                let io = std::fs::read_to_string(task.path().join("io")).unwrap_or_default();
                *log.entry(format!("{role} wrote")).or_default() +=
                    Duration::from_micros(wchar(&io));
            }
        }
    }
    (process, log)
}

/// The bytes a thread passed to write calls (`wchar` of `/proc/…/io`): how much of the index
/// a run rewrote shows here whatever the machine's load.
fn wchar(io: &str) -> u64 {
    io.lines()
        .find_map(|l| l.strip_prefix("wchar:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// CPU time of the log's threads by role (the thread name after `hop-audit-`), and the bytes
/// each wrote (`ROLE wrote`, carried as µs of a Duration to share the map).
type LogCpu = std::collections::BTreeMap<String, Duration>;

/// The log threads' CPU µs per event between two readings: in all, and by role.
fn log_cpu_per_event(before: &LogCpu, after: &LogCpu, events: u64) -> (f64, String) {
    let per_event = |d: Duration| d.as_secs_f64() * 1e6 / events.max(1) as f64;
    let mut total = Duration::ZERO;
    let mut roles = Vec::new();
    for (role, t) in after {
        let spent = t.saturating_sub(before.get(role).copied().unwrap_or_default());
        if let Some(role) = role.strip_suffix(" wrote") {
            let bytes = spent.as_micros() as f64 / events.max(1) as f64;
            if bytes > 0.0 {
                roles.push(format!("{role} wrote {bytes:.0} B"));
            }
            continue;
        }
        total += spent;
        roles.push(format!("{role} {:.2}", per_event(spent)));
    }
    (per_event(total), roles.join(", "))
}

fn dir_mib(path: &Path) -> f64 {
    std::fs::read_dir(path).map_or(0.0, |entries| {
        entries
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len() as f64 / (1024.0 * 1024.0))
            .sum()
    })
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
    let started = monotonic_now();
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
    let build = since(started);
    let hour_start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_006_400 + 13 * 3600);
    let query = SearchQuery {
        user: Some("user-42".into()),
        from: Some(hour_start),
        to: Some(hour_start + Duration::from_secs(3600)),
        ..SearchQuery::default()
    };
    // Right after writing, the newest events may not be indexed yet, so this search also scans
    // that tail.
    let live = monotonic_now();
    let page = log.search(&query).unwrap();
    println!(
        "narrow search right after the writes (index backlog still being written): {} events \
         in {:.2?}",
        page.events.len(),
        since(live)
    );
    drop(log);
    println!(
        "search log: {n} events written in {build:.2?} ({:.0} events/s pipelined from one \
         thread), index {:.1} MiB, segments {:.1} MiB",
        n as f64 / build.as_secs_f64(),
        file_mib(&path),
        dir_mib(&dir.path().join("audit.segments"))
    );
    let log = open(&path);
    let first = monotonic_now();
    let page = log.search(&query).unwrap();
    println!(
        "narrow search (one user, one hour) over {n} events: first page of {} events, first \
         call {:.2?}",
        page.events.len(),
        since(first)
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
