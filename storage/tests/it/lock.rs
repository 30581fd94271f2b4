//! One process per data directory: a second open fails with `Locked`, in-process or not.

use std::process::Stdio;
use std::sync::Arc;

use hop_storage::{Fault, RedbBackend, StorageError, SystemClock};

use crate::support::{db_path, redb_backend, self_test_command};

const PROBE_ENV: &str = "HOP_STORAGE_LOCK_PROBE";

fn assert_locked(result: Result<RedbBackend, StorageError>, path: &std::path::Path) {
    match result {
        Err(err @ StorageError::Locked { .. }) => {
            assert_eq!(err.fault(), Fault::Operator);
            let message = err.to_string();
            assert!(
                message.contains("another hop process is using this data directory"),
                "{message}"
            );
            assert!(message.contains(&path.display().to_string()), "{message}");
        }
        other => panic!("expected Locked, got {other:?}"),
    }
}

#[test]
fn a_second_open_in_the_same_process_is_locked_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(dir.path());
    let (first, _) = redb_backend(dir.path());
    assert_locked(RedbBackend::open(&path, Arc::new(SystemClock)), &path);
    drop(first);
    drop(RedbBackend::open(&path, Arc::new(SystemClock)).unwrap());
}

/// What the probe child reports for an open of the database named by `PROBE_ENV`.
fn probe_from_child(path: &std::path::Path) -> String {
    let output = self_test_command(module_path!(), "lock_probe_child")
        .env(PROBE_ENV, path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "probe failed: {output:?}");
    stdout
        .lines()
        .find_map(|line| line.strip_prefix("PROBE "))
        .unwrap_or_else(|| panic!("no probe result in {stdout}"))
        .to_owned()
}

#[test]
fn a_second_process_is_locked_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(dir.path());
    let first = redb_backend(dir.path());
    let seen = probe_from_child(&path);
    assert!(
        seen.starts_with("locked: another hop process is using this data directory"),
        "{seen}"
    );
    drop(first);
    assert_eq!(probe_from_child(&path), "opened");
}

/// Child half of `a_second_process_is_locked_out`; does nothing unless `PROBE_ENV` is set.
#[test]
#[ignore = "runs only as a child process of a_second_process_is_locked_out"]
fn lock_probe_child() {
    let Some(path) = std::env::var_os(PROBE_ENV) else {
        return;
    };
    match RedbBackend::open(path.as_ref(), Arc::new(SystemClock)) {
        Ok(_) => println!("PROBE opened"),
        Err(err @ StorageError::Locked { .. }) => println!("PROBE locked: {err}"),
        Err(err) => println!("PROBE error: {err}"),
    }
}
