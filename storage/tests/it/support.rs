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

/// Runs `child` (a writer that prints `<prefix><id>` after each acknowledged write), kills it
/// with SIGKILL 50–400 ms after its first acknowledgement, and returns every id it acknowledged
/// (a line cut short by the kill does not count).
pub fn acknowledged_until_killed(
    mut child: Command,
    prefix: &'static str,
    round: usize,
) -> Vec<String> {
    use std::io::{BufRead, BufReader};
    let mut child = child
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        while stdout.read_line(&mut line).unwrap_or(0) > 0 && line.ends_with('\n') {
            if let Some(id) = line.trim_end().strip_prefix(prefix)
                && tx.send(id.to_owned()).is_err()
            {
                break;
            }
            line.clear();
        }
    });
    // Time the kill from the first acknowledgement, so it lands mid-stream even when the child is
    // slow to start on a busy machine.
    let first = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(id) => id,
        Err(err) => {
            let _ = child.kill();
            panic!(
                "round {round}: child acknowledged nothing ({err}): {:?}",
                child.wait()
            );
        }
    };
    let delay = kill_delay();
    std::thread::sleep(delay);
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap();
    let ids: Vec<String> = std::iter::once(first).chain(rx.try_iter()).collect();
    eprintln!(
        "round {round}: killed after {delay:?} and {} acknowledged writes",
        ids.len()
    );
    ids
}

/// A random kill delay in 50..400 ms, from std's per-process random hash keys.
fn kill_delay() -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u8(0);
    Duration::from_millis(50 + hasher.finish() % 350)
}
