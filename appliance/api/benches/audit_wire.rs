//! What Auth spends reading an agent's batch: 256 realistic `db.query` events (a pgbench
//! statement, the session's fields, the agent's address), decoded packed (`audit_wire`) against
//! the same events parsed from JSON one by one (`AuditEvent::from_agent_json`, today's path).

// reason: a benchmark that cannot set up or run should stop at once, and its helpers are not
// #[test] functions that clippy's allow-unwrap-in-tests would cover.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hop_api::audit::{AuditEvent, EventKind};
use hop_api::audit_wire;

const EVENTS: usize = 256;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn query(i: usize) -> AuditEvent {
    AuditEvent::new(
        EventKind::DbQuery,
        "prod.example.com",
        "alice@example.com",
        now(),
    )
    .remote_str("10.20.30.40:51234")
    .field("server", "db-agent-1")
    .field("db_service", "pg-main")
    .field("db_user", "app")
    .field("db_name", "pgbench")
    .field("session_id", "6c0f2a52-1b2e-4d8e-9a57-3c1f5d2b7e11")
    .field("via", "execute")
    .field("statement_name", "P0_1")
    .field(
        "statement",
        format!(
            "SELECT abalance FROM pgbench_accounts WHERE aid = {}",
            1 + i * 7919
        ),
    )
}

fn bench(c: &mut Criterion) {
    let events: Vec<AuditEvent> = (0..EVENTS).map(query).collect();
    let packed = audit_wire::encode_batch(&events).unwrap();
    let json: Vec<String> = events
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect();
    let mut g = c.benchmark_group("audit_wire_256_db_query");
    g.throughput(Throughput::Elements(EVENTS as u64));
    g.bench_function("decode_packed", |b| {
        b.iter(|| audit_wire::decode_batch(black_box(&packed), now()).unwrap())
    });
    g.bench_function("from_agent_json_each", |b| {
        b.iter(|| {
            json.iter()
                .map(|j| AuditEvent::from_agent_json(black_box(j), "c", "h", now()).unwrap())
                .collect::<Vec<_>>()
        })
    });
    g.bench_function("encode_packed", |b| {
        b.iter(|| audit_wire::encode_batch(black_box(&events)).unwrap())
    });
    g.finish();
    eprintln!(
        "batch bytes: packed {}, JSON {}",
        packed.len(),
        json.iter().map(String::len).sum::<usize>()
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
