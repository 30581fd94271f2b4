//! The typed resource store over both backends.

use std::sync::Arc;

use hop_storage::{Backend, Fault, PutOptions, ResourceStore, StorageError, StoredResource};
use serde::{Deserialize, Serialize};

use crate::support::{memory_backend, redb_backend};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    name: String,
    roles: Vec<String>,
}

impl StoredResource for User {
    const KIND: &'static str = "user";
    fn name(&self) -> &str {
        &self.name
    }
}

fn role(name: &str, logins: &[&str]) -> Role {
    Role {
        name: name.into(),
        logins: logins.iter().map(|s| s.to_string()).collect(),
    }
}

fn for_each_store(check: fn(&ResourceStore)) {
    let (memory, _) = memory_backend();
    check(&ResourceStore::new(Arc::new(memory)));
    let dir = tempfile::tempdir().unwrap();
    let (redb, _) = redb_backend(dir.path());
    check(&ResourceStore::new(Arc::new(redb)));
}

#[test]
fn create_get_update_delete() {
    for_each_store(|store| {
        assert!(store.get::<Role>("admin").unwrap().is_none());
        let rev = store.create(&role("admin", &["root"])).unwrap();
        match store.create(&role("admin", &[])) {
            Err(err @ StorageError::AlreadyExists { .. }) => {
                assert_eq!(err.fault(), Fault::Caller);
                assert!(err.to_string().contains("/resources/role/admin"), "{err}");
            }
            other => panic!("{other:?}"),
        }
        let got = store.get::<Role>("admin").unwrap().unwrap();
        assert_eq!((got.value, got.revision), (role("admin", &["root"]), rev));

        let rev2 = store
            .update(&role("admin", &["root", "ubuntu"]), rev)
            .unwrap();
        assert!(matches!(
            store.update(&role("admin", &["stale"]), rev),
            Err(StorageError::Conflict { .. })
        ));
        assert!(matches!(
            store.update(&role("ghost", &[]), rev2),
            Err(StorageError::NotFound { .. })
        ));
        assert_eq!(
            store.get::<Role>("admin").unwrap().unwrap().value.logins,
            ["root", "ubuntu"]
        );

        let rev3 = store.upsert(&role("admin", &[])).unwrap();
        assert!(rev3 > rev2);
        store.upsert(&role("fresh", &[])).unwrap();
        assert!(store.delete::<Role>("admin").unwrap());
        assert!(!store.delete::<Role>("admin").unwrap());
        assert!(store.get::<Role>("admin").unwrap().is_none());
    });
}

#[test]
fn list_is_per_kind_and_sorted_by_name() {
    for_each_store(|store| {
        for name in ["ops", "dev", "admin", "dev-2"] {
            store.create(&role(name, &[])).unwrap();
        }
        store
            .create(&User {
                name: "alice".into(),
                roles: vec!["dev".into()],
            })
            .unwrap();
        // A kind that is a prefix of another must not see its items.
        store
            .backend()
            .put("/resources/roles/x", b"{}", PutOptions::default())
            .unwrap();

        let names: Vec<String> = store
            .list::<Role>()
            .unwrap()
            .into_iter()
            .map(|v| v.value.name)
            .collect();
        assert_eq!(names, ["admin", "dev", "dev-2", "ops"]);
        assert_eq!(store.list::<User>().unwrap().len(), 1);

        let raw = store.list_raw("role").unwrap();
        assert_eq!(raw.len(), 4);
        assert_eq!(raw[0].value["name"], "admin");
        let one = store.get_raw("user", "alice").unwrap().unwrap();
        assert_eq!(one.value["roles"][0], "dev");
        assert!(store.get_raw("user", "bob").unwrap().is_none());
        assert!(store.list_raw("nothing").unwrap().is_empty());
    });
}

#[test]
fn names_are_validated() {
    for_each_store(|store| {
        let long = "x".repeat(254);
        for name in ["", "a/b", long.as_str()] {
            let err = store.create(&role(name, &[])).unwrap_err();
            assert!(
                matches!(err, StorageError::InvalidName { what: "name", .. }),
                "{err:?}"
            );
            assert_eq!(err.fault(), Fault::Caller);
            assert!(store.get::<Role>(name).is_err());
            assert!(store.delete::<Role>(name).is_err());
        }
        assert!(store.create(&role(&"x".repeat(253), &[])).is_ok());
        assert!(matches!(
            store.list_raw("a/b"),
            Err(StorageError::InvalidName { what: "kind", .. })
        ));
        assert!(matches!(
            store.get_raw("", "x"),
            Err(StorageError::InvalidName { what: "kind", .. })
        ));
    });
}

#[test]
fn a_stored_value_of_the_wrong_shape_is_a_decode_error() {
    for_each_store(|store| {
        store
            .backend()
            .put("/resources/role/broken", b"not json", PutOptions::default())
            .unwrap();
        match store.get::<Role>("broken") {
            Err(err @ StorageError::Decode { .. }) => {
                assert_eq!(err.fault(), Fault::Internal);
                assert!(err.to_string().contains("/resources/role/broken"), "{err}");
            }
            other => panic!("{other:?}"),
        }
        assert!(store.list::<Role>().is_err());
        assert!(store.get_raw("role", "broken").is_err());
    });
}

#[test]
fn the_store_shares_its_backend() {
    let (memory, _) = memory_backend();
    let backend: Arc<dyn Backend> = Arc::new(memory);
    let store = ResourceStore::new(Arc::clone(&backend));
    let copy = store.clone();
    let mut watcher = store.backend().watch();
    copy.create(&role("r", &[])).unwrap();
    assert!(watcher.try_recv().unwrap().is_some());
    assert!(backend.get("/resources/role/r").unwrap().is_some());
}
