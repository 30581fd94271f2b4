//! Snapshots and restores (what `hop admin backup` and `hop admin restore` stand on), checked
//! identically against memory, redb and PostgreSQL: one revision's live items in key order; a
//! restore only into an empty store, keeping every item's revision and lease and the store's
//! revision; the redb → PostgreSQL migration through a backup file.

use std::time::Duration;

use hop_storage::backup::{self, KdfParams, Sealing};
use hop_storage::{Backend, Clock, Event, PutOptions, Snapshot, StorageError};

use crate::pg::pg_backend;
use crate::support::{memory_backend, redb_backend};

/// Runs `check` against a fresh backend of each kind.
fn for_each_backend(check: impl Fn(&dyn Backend, &hop_storage::ManualClock)) {
    let (memory, clock) = memory_backend();
    check(&memory, &clock);
    let dir = tempfile::tempdir().unwrap();
    let (redb, clock) = redb_backend(dir.path());
    check(&redb, &clock);
    match pg_backend() {
        Some((pg, clock, _)) => check(&pg, &clock),
        None => eprintln!("SKIP: the PostgreSQL part of this check"),
    }
}

/// A store with live items, a leased one, an expired one and a deleted one.
fn fill(b: &dyn Backend, clock: &hop_storage::ManualClock) {
    b.put("/resources/user/bob", b"bob", PutOptions::default())
        .unwrap();
    b.put("/resources/user/alice", b"alice", PutOptions::default())
        .unwrap();
    b.put(
        "/resources/token/t1",
        b"lease",
        PutOptions {
            expires: Some(clock.now() + Duration::from_secs(3600)),
        },
    )
    .unwrap();
    b.put(
        "/presence/proxies/p1",
        b"gone soon",
        PutOptions {
            expires: Some(clock.now() + Duration::from_secs(1)),
        },
    )
    .unwrap();
    b.put("/resources/role/dev", b"dev", PutOptions::default())
        .unwrap();
    b.delete("/resources/role/dev").unwrap();
    clock.advance(Duration::from_secs(2));
}

#[test]
fn a_snapshot_holds_the_live_items_of_one_revision_in_key_order() {
    for_each_backend(|b, clock| {
        assert_eq!(b.snapshot().unwrap(), Snapshot::default());
        fill(b, clock);
        let s = b.snapshot().unwrap();
        assert_eq!(s.revision, b.current_revision().unwrap());
        assert_eq!(s.revision, 6);
        let keys: Vec<&str> = s.items.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "/resources/token/t1",
                "/resources/user/alice",
                "/resources/user/bob"
            ]
        );
        assert!(s.items[0].expires.is_some());
        assert_eq!(s.items[2].revision, 1);
        s.validate().unwrap();
    });
}

#[test]
fn a_restore_fills_an_empty_store_with_revisions_and_leases_kept() {
    let (source, source_clock) = memory_backend();
    fill(&source, &source_clock);
    let snapshot = source.snapshot().unwrap();
    for_each_backend(|b, _| {
        let mut watcher = b.watch();
        b.restore(&snapshot).unwrap();
        assert_eq!(b.snapshot().unwrap(), snapshot);
        assert_eq!(b.current_revision().unwrap(), snapshot.revision);
        // The next write is newer than anything restored.
        let next = b
            .put("/resources/user/carol", b"c", PutOptions::default())
            .unwrap();
        assert_eq!(next, snapshot.revision + 1);
        // Changes before the restore cannot be resumed from: resynchronise.
        assert!(matches!(
            b.watch_from(0),
            Err(StorageError::WatchTooOld { .. })
        ));
        let mut resumed = b.watch_from(snapshot.revision).unwrap();
        assert!(matches!(
            resumed.try_recv().unwrap(),
            Some(Event::Put(item)) if item.revision == next
        ));
        // A watcher from before the restore is told it missed changes, not fed a silent jump.
        let seen = wait_event(&mut watcher);
        assert!(seen.is_err(), "{seen:?}");
        // Restoring again: the store is not empty any more.
        let err = b.restore(&snapshot).unwrap_err();
        assert!(
            matches!(err, StorageError::NotEmpty { items: 4, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("not empty"), "{err}");
    });
}

fn wait_event(w: &mut hop_storage::Watcher) -> Result<Option<Event>, hop_storage::WatchError> {
    for _ in 0..100 {
        match w.try_recv() {
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            other => return other,
        }
    }
    Ok(None)
}

#[test]
fn a_store_that_was_written_to_refuses_a_restore_and_stays_as_it_was() {
    let (source, source_clock) = memory_backend();
    fill(&source, &source_clock);
    let snapshot = source.snapshot().unwrap();
    for_each_backend(|b, _| {
        b.put("/resources/user/zed", b"z", PutOptions::default())
            .unwrap();
        b.delete("/resources/user/zed").unwrap();
        // No item left, but revision 2: a store that was used is not empty.
        let err = b.restore(&snapshot).unwrap_err();
        assert!(
            matches!(err, StorageError::NotEmpty { revision: 2, .. }),
            "{err:?}"
        );
        assert_eq!(b.snapshot().unwrap().items, vec![]);
        assert_eq!(b.current_revision().unwrap(), 2);
    });
}

#[test]
fn an_invalid_snapshot_is_refused() {
    let (source, source_clock) = memory_backend();
    fill(&source, &source_clock);
    let mut unordered = source.snapshot().unwrap();
    unordered.items.swap(0, 1);
    let mut future = source.snapshot().unwrap();
    future.revision = 1;
    for_each_backend(|b, _| {
        for bad in [&unordered, &future] {
            assert!(matches!(
                b.restore(bad),
                Err(StorageError::InvalidSnapshot { .. })
            ));
        }
        assert_eq!(b.current_revision().unwrap(), 0);
    });
}

/// redb → PostgreSQL, the migration path: a sealed backup file of a redb store restored into
/// an empty database holds the same items at the same revisions.
#[test]
fn a_redb_store_moves_to_postgresql_through_a_backup_file() {
    let Some((pg, _, _)) = pg_backend() else {
        eprintln!("SKIP: PostgreSQL is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (redb, clock) = redb_backend(dir.path());
    fill(&redb, &clock);
    let snapshot = backup::cluster_state(redb.snapshot().unwrap());
    let sealing = Sealing {
        passphrase: b"migrate me",
        salt: [1; 16],
        nonce: [2; 12],
        kdf: KdfParams {
            m_cost: 256,
            t_cost: 1,
            p_cost: 1,
        },
    };
    let file = backup::encode(&snapshot, clock.now(), Some(sealing)).unwrap();
    let restored = backup::decode(&file, Some(b"migrate me")).unwrap();
    pg.restore(&restored.snapshot).unwrap();
    assert_eq!(pg.snapshot().unwrap(), redb.snapshot().unwrap());
}
