//! Crash injection for the audit log: a child process appends numbered events from 8 threads as
//! fast as it can and is killed with SIGKILL at a random moment; every event it acknowledged
//! (printed after `append` returned) must be stored exactly once, the chain must verify, and a
//! replay of already stored ids must be recognised as repeats.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hop_storage::{
    AuditConfig, AuditEvent, AuditLog, Order, SearchQuery, StoredEvent, SystemClock,
};

use crate::clock::monotonic_now;
use crate::support::{acknowledged_until_killed, audit_path, self_test_command};

const CRASH_DIR_ENV: &str = "HOP_AUDIT_CRASH_DIR";
const ROUND_ENV: &str = "HOP_AUDIT_CRASH_ROUND";
/// Rounds in the test command; a bench run sets `HOP_AUDIT_CRASH_ROUNDS` (e.g. 1000) and
/// `HOP_AUDIT_CRASH_FRESH_EVERY` (start a new log every N rounds, so a long run does not spend
/// its time re-reading an ever larger log).
const ROUNDS: usize = 5;
const ROUNDS_ENV: &str = "HOP_AUDIT_CRASH_ROUNDS";
const FRESH_ENV: &str = "HOP_AUDIT_CRASH_FRESH_EVERY";

fn env_count(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}
const THREADS: usize = 8;

fn open(dir: &std::path::Path) -> AuditLog {
    AuditLog::open(
        &audit_path(dir),
        Arc::new(SystemClock),
        AuditConfig::default(),
    )
    .unwrap()
}

/// The event with id `id`: its content derives from the id, so a stored copy can be checked.
fn event_for(id: &str) -> AuditEvent {
    AuditEvent::new("admin.action", "TADM01I")
        .with_id(id)
        .with_user(format!("admin-{}", id.len() % 3))
        .with_field("payload", format!("payload-of-{id}"))
}

/// Event `i` of thread `t` in round `round`: half the threads use time-ordered ids in canonical
/// UUID v7 text (indexed in the id blocks, as agents' events are), the other half plain text ids
/// (the id table).
fn crash_id(round: &str, t: usize, i: u64) -> String {
    if t.is_multiple_of(2) {
        let round: u64 = round.parse().unwrap_or(0);
        let ms = 1_700_000_000_000 + round * 100_000 + i / 8;
        let n = (t as u64) << 40 | i;
        format!(
            "{:08x}-{:04x}-7{:03x}-{:04x}-{:012x}",
            ms >> 16,
            ms & 0xffff,
            (n >> 48) & 0xfff,
            0x8000 | ((n >> 34) & 0x3fff),
            n & 0xffff_ffff_ffff
        )
    } else {
        format!("r{round}-t{t}-{i}")
    }
}

#[test]
fn acknowledged_events_survive_sigkill_exactly_once() {
    let rounds = env_count(ROUNDS_ENV).unwrap_or(ROUNDS);
    let fresh_every = env_count(FRESH_ENV).unwrap_or(usize::MAX).max(1);
    let mut dir = tempfile::tempdir().unwrap();
    let mut acknowledged: Vec<String> = Vec::new();
    for round in 0..rounds {
        if round > 0 && round % fresh_every == 0 {
            dir = tempfile::tempdir().unwrap();
            acknowledged.clear();
        }
        let mut cmd = self_test_command(module_path!(), "audit_crash_child_writer");
        cmd.env(CRASH_DIR_ENV, dir.path());
        cmd.env(ROUND_ENV, round.to_string());
        let round_ids = acknowledged_until_killed(cmd, "ACK ", round);
        acknowledged.extend(round_ids);

        let log = open(dir.path());
        let mut out = Vec::new();
        log.export(None, None, &mut out).unwrap();
        let stored: Vec<StoredEvent> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let mut copies: HashMap<&str, usize> = HashMap::new();
        for ev in &stored {
            *copies.entry(ev.event.id.as_str()).or_default() += 1;
            assert_eq!(ev.event, {
                let mut want = event_for(&ev.event.id);
                want.time = ev.event.time;
                want
            });
        }
        assert!(
            copies.values().all(|n| *n == 1),
            "round {round}: an id is stored twice"
        );
        for id in &acknowledged {
            assert!(
                copies.contains_key(id.as_str()),
                "round {round}: acknowledged {id} is missing"
            );
        }
        let report = log.verify(None).unwrap();
        assert!(report.is_intact(), "round {round}: {report:?}");
        assert_eq!(report.events_checked, stored.len() as u64);
        // The user index (whose backlog the kill may have cut short) finds every event.
        for user in ["admin-0", "admin-1", "admin-2"] {
            let want = stored.iter().filter(|e| e.event.user == user).count();
            let mut found = 0;
            let mut q = SearchQuery {
                user: Some(user.into()),
                limit: 10_000,
                ..SearchQuery::default()
            };
            loop {
                let page = log.search(&q).unwrap();
                found += page.events.len();
                match page.next_cursor {
                    Some(cursor) => q.cursor = Some(cursor),
                    None => break,
                }
            }
            assert_eq!(found, want, "round {round}: {user}");
        }
        // Progress for long bench runs (shown with `--no-capture`).
        eprintln!(
            "round {round}: {} events stored, all acknowledged ones once",
            stored.len()
        );
    }
}

/// Child half of `acknowledged_events_survive_sigkill_exactly_once`; does nothing unless
/// `CRASH_DIR_ENV` is set. Replays the newest stored events (which must be repeats), then
/// appends new ones from 8 threads until killed (or a minute passes).
#[test]
#[ignore = "runs only as a child process of acknowledged_events_survive_sigkill_exactly_once"]
fn audit_crash_child_writer() {
    let Some(dir) = std::env::var_os(CRASH_DIR_ENV) else {
        return;
    };
    let round = std::env::var(ROUND_ENV).unwrap();
    let log = open(dir.as_ref());
    let newest = log
        .search(&SearchQuery {
            order: Order::NewestFirst,
            limit: 16,
            ..SearchQuery::default()
        })
        .unwrap();
    for ev in newest.events {
        let replay = log.append(event_for(&ev.event.id)).unwrap();
        assert!(replay.duplicate, "{} was stored twice", ev.event.id);
        assert_eq!(replay.seq, ev.seq);
    }
    let stdout = Mutex::new(std::io::stdout());
    let deadline = monotonic_now() + Duration::from_secs(60);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (log, stdout, round) = (&log, &stdout, &round);
            s.spawn(move || {
                for i in 0.. {
                    if monotonic_now() > deadline {
                        break;
                    }
                    let id = crash_id(round, t, i);
                    log.append(event_for(&id)).unwrap();
                    let mut out = stdout.lock().unwrap();
                    writeln!(out, "ACK {id}").unwrap();
                    out.flush().unwrap();
                }
            });
        }
    });
}
