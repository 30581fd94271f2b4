//! The schema-version gate: new files are stamped, files from a newer hop are refused untouched.

use std::sync::Arc;

use hop_storage::{Backend, Fault, PutOptions, RedbBackend, StorageError, SystemClock};
use redb::{Database, ReadableDatabase, TableDefinition};

use crate::support::{db_path, redb_backend};

/// The backend's meta table, spelled out independently so that a change to the on-disk layout
/// shows up here as a failing test.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

fn stored_schema_version(path: &std::path::Path) -> Option<u64> {
    let db = Database::open(path).unwrap();
    let txn = db.begin_read().unwrap();
    let meta = txn.open_table(META).unwrap();
    meta.get("schema_version").unwrap().map(|v| v.value())
}

#[test]
fn a_new_file_gets_the_current_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    drop(redb_backend(dir.path()));
    assert_eq!(
        stored_schema_version(&db_path(dir.path())),
        Some(RedbBackend::SCHEMA_VERSION)
    );
    assert_eq!(RedbBackend::SCHEMA_VERSION, 1);
}

#[test]
fn a_file_from_a_newer_hop_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(dir.path());
    {
        let (b, _) = redb_backend(dir.path());
        b.put("k", b"v", PutOptions::default()).unwrap();
    }
    {
        // Stand in for a future hop: rewrite the version directly with redb.
        let db = Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("schema_version", 999)
            .unwrap();
        txn.commit().unwrap();
    }
    let before = std::fs::read(&path).unwrap();

    let err = RedbBackend::open(&path, Arc::new(SystemClock)).unwrap_err();
    match &err {
        StorageError::NewerSchema {
            found,
            supported,
            path: reported,
        } => {
            assert_eq!((*found, *supported), (999, 1));
            assert_eq!(reported, &path);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(err.fault(), Fault::Operator);
    let message = err.to_string();
    assert!(message.contains("Upgrade hop"), "{message}");
    assert!(message.contains("999"), "{message}");
    assert!(message.contains(&path.display().to_string()), "{message}");

    let after = std::fs::read(&path).unwrap();
    let first_difference = before.iter().zip(&after).position(|(a, b)| a != b);
    assert!(
        before.len() == after.len() && first_difference.is_none(),
        "file changed: {} -> {} bytes, first difference at {first_difference:?}",
        before.len(),
        after.len()
    );
    assert_eq!(stored_schema_version(&path), Some(999));
}

#[test]
fn a_file_that_is_not_a_database_is_reported_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(dir.path());
    std::fs::write(&path, vec![0x5Au8; 8192]).unwrap();
    let err = RedbBackend::open(&path, Arc::new(SystemClock)).unwrap_err();
    assert_eq!(err.fault(), Fault::Internal, "{err:?}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );

    let missing_dir = dir.path().join("no/such/dir/hop.redb");
    let err = RedbBackend::open(&missing_dir, Arc::new(SystemClock)).unwrap_err();
    assert!(matches!(err, StorageError::Io { .. }), "{err:?}");
}

#[test]
fn a_record_this_code_did_not_write_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(dir.path());
    drop(redb_backend(dir.path()));
    {
        const ITEMS: TableDefinition<&str, &[u8]> = TableDefinition::new("items");
        let db = Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(ITEMS)
            .unwrap()
            .insert("bad", &[9u8, 0, 0][..])
            .unwrap();
        txn.commit().unwrap();
    }
    let (b, _) = redb_backend(dir.path());
    match b.get("bad") {
        Err(StorageError::Corrupt { path: p, detail }) => {
            assert_eq!(p, path);
            assert!(detail.contains("\"bad\""), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        b.range("", "", 0),
        Err(StorageError::Corrupt { .. })
    ));
}

#[test]
fn a_foreign_redb_file_is_not_adopted() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(dir.path());
    {
        const OTHER: TableDefinition<&str, &str> = TableDefinition::new("someone_elses");
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(OTHER).unwrap().insert("a", "b").unwrap();
        txn.commit().unwrap();
    }
    match RedbBackend::open(&path, Arc::new(SystemClock)) {
        Err(StorageError::Corrupt { detail, .. }) => {
            assert!(detail.contains("someone_elses"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    let db = Database::open(&path).unwrap();
    let txn = db.begin_read().unwrap();
    assert!(txn.open_table(META).is_err(), "must not be stamped");
}
