//! Helpers shared by the test modules: backends under a manual clock, and re-running this test
//! binary as a child process.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hop_storage::{ManualClock, MemoryBackend, RedbBackend};

/// A fixed, arbitrary start time for manual clocks.
pub fn start_time() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

/// The database file inside a test's data directory.
pub fn db_path(dir: &Path) -> PathBuf {
    dir.join("hop.redb")
}

pub fn memory_backend() -> (MemoryBackend, ManualClock) {
    let clock = ManualClock::new(start_time());
    (MemoryBackend::new(Arc::new(clock.clone())), clock)
}

pub fn redb_backend(dir: &Path) -> (RedbBackend, ManualClock) {
    let clock = ManualClock::new(start_time());
    let backend = RedbBackend::open(&db_path(dir), Arc::new(clock.clone())).unwrap();
    (backend, clock)
}

/// A command that runs exactly one test of this binary, ignored or not, in a child process.
/// `module` is the caller's `module_path!()` and `test` the test fn's name. Works the same
/// whether the parent runs under `cargo test` (all tests in one process) or `cargo nextest`
/// (one process per test), since both start the same libtest harness binary.
pub fn self_test_command(module: &str, test: &str) -> Command {
    // Test names omit the crate name that module_path!() starts with.
    let module = module.split_once("::").map_or("", |(_, rest)| rest);
    let name = if module.is_empty() {
        test.to_owned()
    } else {
        format!("{module}::{test}")
    };
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", &name, "--include-ignored", "--nocapture"]);
    cmd
}

/// The audit file inside a test's data directory.
pub fn audit_path(dir: &Path) -> PathBuf {
    dir.join("audit.db")
}

/// An audit log in `dir` under `clock`, with default settings.
pub fn open_audit(dir: &Path, clock: &ManualClock) -> hop_storage::AuditLog {
    hop_storage::AuditLog::open(
        &audit_path(dir),
        Arc::new(clock.clone()),
        hop_storage::AuditConfig::default(),
    )
    .unwrap()
}

/// A numbered event: type, user and session cycle so that filters have something to select.
pub fn numbered_event(i: usize) -> hop_storage::AuditEvent {
    const TYPES: [&str; 4] = ["user.login", "session.start", "db.query", "session.end"];
    hop_storage::AuditEvent::new(TYPES[i % TYPES.len()], format!("T{:04}I", i % TYPES.len()))
        .with_id(format!("ev-{i:06}"))
        .with_cluster("test")
        .with_user(format!("user-{}", i % 10))
        .with_login("root")
        .with_server(format!("node-{}", i % 3))
        .with_session_id(format!("sess-{}", i % 50))
        .with_field("n", i)
}
