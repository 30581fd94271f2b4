//! Files written by an earlier release must keep opening: a schema-v1 database, written once by
//! `write_schema_v1_fixture` and checked in, is read back with today's code.

use std::path::PathBuf;
use std::time::Duration;

use hop_storage::{Backend, PutOptions, ResourceStore, StoredResource};
use serde::{Deserialize, Serialize};

use crate::support::{redb_backend, start_time};

const WRITE_FIXTURES_ENV: &str = "HOP_STORAGE_WRITE_FIXTURES";

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/schema-v1.redb")
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Role {
    name: String,
    logins: Vec<String>,
}

impl StoredResource for Role {
    const KIND: &'static str = "role";
    fn name(&self) -> &str {
        &self.name
    }
}

#[test]
fn a_schema_v1_file_still_opens() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture(), crate::support::db_path(dir.path())).unwrap();
    let (b, clock) = redb_backend(dir.path());
    assert_eq!(b.current_revision().unwrap(), 5);

    let plain = b.get("plain").unwrap().unwrap();
    assert_eq!((plain.value.as_slice(), plain.revision), (&b"p"[..], 1));
    assert_eq!(plain.expires, None);
    let leased = b.get("leased").unwrap().unwrap();
    assert_eq!(
        leased.expires,
        Some(start_time() + Duration::from_secs(3600))
    );
    assert_eq!(b.get("deleted").unwrap(), None);

    let store = ResourceStore::new(std::sync::Arc::new(b));
    let admin = store.get::<Role>("admin").unwrap().unwrap();
    assert_eq!(admin.value.logins, ["root"]);

    clock.advance(Duration::from_secs(3600));
    assert_eq!(store.backend().purge_expired().unwrap(), 1);
    assert!(
        store
            .backend()
            .put("new", b"", PutOptions::default())
            .unwrap()
            > 5
    );
}

/// Rewrites the fixture; run only when `WRITE_FIXTURES_ENV` is set, and only for a new schema
/// version (an existing version's fixture must never change).
#[test]
#[ignore = "writes tests/fixtures; run explicitly with HOP_STORAGE_WRITE_FIXTURES=1"]
fn write_schema_v1_fixture() {
    if std::env::var_os(WRITE_FIXTURES_ENV).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    {
        let (b, clock) = redb_backend(dir.path());
        b.put("plain", b"p", PutOptions::default()).unwrap();
        let expires = Some(hop_storage::Clock::now(&clock) + Duration::from_secs(3600));
        b.put("leased", b"l", PutOptions { expires }).unwrap();
        b.put("deleted", b"d", PutOptions::default()).unwrap();
        assert!(b.delete("deleted").unwrap());
        let store = ResourceStore::new(std::sync::Arc::new(b));
        store
            .create(&Role {
                name: "admin".into(),
                logins: vec!["root".into()],
            })
            .unwrap();
    }
    std::fs::create_dir_all(fixture().parent().unwrap()).unwrap();
    std::fs::copy(crate::support::db_path(dir.path()), fixture()).unwrap();
}
