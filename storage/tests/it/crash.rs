//! Crash injection: a child process writes as fast as it can and is killed with SIGKILL at a
//! random moment; every put it acknowledged (printed after `put` returned) must survive.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use hop_storage::{Backend, PutOptions, RedbBackend, SystemClock, prefix_end};

use crate::clock::monotonic_now;
use crate::support::{acknowledged_until_killed, db_path, self_test_command};

const CRASH_DIR_ENV: &str = "HOP_STORAGE_CRASH_DIR";
const ROUNDS: usize = 5;

/// The value stored under `key`: derived from it, and every 10th one spans several pages.
fn value_for(key: &str) -> Vec<u8> {
    let mut value = format!("value-of-{key}").into_bytes();
    if key.ends_with('0') {
        value.resize(10_000, b'.');
    }
    value
}

#[test]
fn acknowledged_puts_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(dir.path());
    let mut acknowledged: Vec<String> = Vec::new();
    for round in 0..ROUNDS {
        let mut cmd = self_test_command(module_path!(), "crash_child_writer");
        cmd.env(CRASH_DIR_ENV, dir.path());
        let round_keys = acknowledged_until_killed(cmd, "KEY ", round);
        acknowledged.extend(round_keys);

        let backend = RedbBackend::open(&path, Arc::new(SystemClock)).unwrap();
        for key in &acknowledged {
            let item = backend
                .get(key)
                .unwrap()
                .unwrap_or_else(|| panic!("round {round}: acknowledged {key} is missing"));
            assert_eq!(item.value, value_for(key), "round {round}: {key}");
        }
        // Nothing but whole puts: the keys form one gapless run, each with its value.
        let stored = backend.range("k", &prefix_end("k"), 0).unwrap();
        assert!(stored.len() >= acknowledged.len());
        for (i, item) in stored.iter().enumerate() {
            assert_eq!(item.key, format!("k{i:06}"));
            assert_eq!(item.value, value_for(&item.key));
        }
        let revisions: Vec<u64> = stored.iter().map(|item| item.revision).collect();
        assert!(revisions.windows(2).all(|w| w[0] < w[1]), "{revisions:?}");
        assert_eq!(
            backend.current_revision().unwrap(),
            revisions.last().copied().unwrap_or(0)
        );
    }
}

/// Child half of `acknowledged_puts_survive_sigkill`; does nothing unless `CRASH_DIR_ENV` is set.
/// Appends keys after those already stored until it is killed (or a minute passes).
#[test]
#[ignore = "runs only as a child process of acknowledged_puts_survive_sigkill"]
fn crash_child_writer() {
    let Some(dir) = std::env::var_os(CRASH_DIR_ENV) else {
        return;
    };
    let backend = RedbBackend::open(&db_path(dir.as_ref()), Arc::new(SystemClock)).unwrap();
    let start = backend.range("k", &prefix_end("k"), 0).unwrap().len();
    let deadline = monotonic_now() + Duration::from_secs(60);
    let mut stdout = std::io::stdout().lock();
    for i in start.. {
        if monotonic_now() > deadline {
            break;
        }
        let key = format!("k{i:06}");
        backend
            .put(&key, &value_for(&key), PutOptions::default())
            .unwrap();
        writeln!(stdout, "KEY {key}").unwrap();
        stdout.flush().unwrap();
    }
}
