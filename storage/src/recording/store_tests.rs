//! The recordings index in the backend: written once on completion, listed from the backend in
//! pages, removed with its file by retention, and migrated at open from the `<id>.json` sidecars
//! of earlier versions or, without one, by scanning the file.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::*;
use crate::backend::PutOptions;
use crate::recording::index::{INDEX_PAGE, index_key};
use crate::recording::{RecordingMeta, RecordingWriter};
use crate::{ManualClock, MemoryBackend, RedbBackend};

const ID: &str = "0190a5c4-0000-7000-8000-0000000000b1";
const START_US: u64 = 1_700_000_000_000_000;

/// A finished recording of `id` starting `start_s` seconds after `START_US`, 60 s long.
fn recording(id: &str, start_s: u64) -> (usize, Vec<u8>) {
    let mut w = RecordingWriter::new(RecordingMeta {
        session_id: id.to_owned(),
        kind: "ssh".to_owned(),
        cluster: "c1".to_owned(),
        user: "alice".to_owned(),
        login: "root".to_owned(),
        server_id: "node-1".to_owned(),
        server_name: "web-1".to_owned(),
        start_unix_us: START_US + start_s * 1_000_000,
        cols: 80,
        rows: 24,
        term: "xterm".to_owned(),
    })
    .unwrap();
    let header_len = w.header_bytes().len();
    let mut file = w.header_bytes().to_vec();
    for i in 0..20u64 {
        file.extend(
            w.push_output(
                Duration::from_millis(i * 100),
                format!("line {i}\r\n").as_bytes(),
            )
            .unwrap_or_default(),
        );
    }
    file.extend(w.finish(Duration::from_secs(60), Some(3)));
    (header_len, file)
}

fn backend() -> Arc<MemoryBackend> {
    Arc::new(MemoryBackend::new(Arc::new(ManualClock::new(
        SystemTime::UNIX_EPOCH,
    ))))
}

fn upload(store: &RecordingStore, id: &str, start_s: u64) -> RecordingIndexEntry {
    let (header_len, file) = recording(id, start_s);
    store.begin_upload(id, &file[..header_len]).unwrap();
    store
        .append(id, header_len as u64, &file[header_len..])
        .unwrap();
    store.complete(id).unwrap()
}

/// The entry a store computes for `recording(id, start_s)`.
fn expected_entry(id: &str, start_s: u64) -> RecordingIndexEntry {
    let tmp = tempfile::tempdir().unwrap();
    upload(&RecordingStore::open_dir(tmp.path()).unwrap(), id, start_s)
}

fn stored_json(backend: &dyn Backend, id: &str) -> Option<serde_json::Value> {
    let item = backend.get(&index_key(id)).unwrap()?;
    Some(serde_json::from_slice(&item.value).unwrap())
}

/// Writes `<id>.hrec` as a completed recording of an earlier version: read-only, no entry.
fn write_old_recording(dir: &Path, id: &str, start_s: u64) -> Vec<u8> {
    let (_, file) = recording(id, start_s);
    let path = dir.join(format!("{id}.hrec"));
    fs::write(&path, &file).unwrap();
    make_read_only(&path).unwrap();
    file
}

fn write_sidecar(dir: &Path, entry: &RecordingIndexEntry) {
    let json = serde_json::to_vec_pretty(&StoredEntry {
        index_version: INDEX_VERSION,
        entry: entry.clone(),
    })
    .unwrap();
    fs::write(dir.join(format!("{}.json", entry.session_id)), json).unwrap();
}

#[test]
fn the_index_entry_is_written_once_on_completion() {
    let tmp = tempfile::tempdir().unwrap();
    let b = backend();
    let store = RecordingStore::open_with_backend(tmp.path(), b.clone()).unwrap();
    assert_eq!(b.current_revision().unwrap(), 0);
    let entry = upload(&store, ID, 0);
    let json = stored_json(b.as_ref(), ID).unwrap();
    assert_eq!(json["index_version"], 1);
    assert_eq!(json["session_id"], ID);
    assert_eq!(json["user"], "alice");
    assert_eq!(json["login"], "root");
    assert_eq!(json["kind"], "ssh");
    assert_eq!(json["start_unix_us"], START_US);
    assert_eq!(json["end_unix_us"], START_US + 60_000_000);
    assert_eq!(json["size"], entry.size);
    assert_eq!(json["exit_status"], 3);
    let revision = b.current_revision().unwrap();
    assert_eq!(revision, 1);
    // No sidecar any more: the backend is the index.
    assert!(!tmp.path().join(format!("{ID}.json")).exists());

    // Completing or beginning again, or reading the entry, writes nothing.
    assert_eq!(store.complete(ID).unwrap(), entry);
    let (header_len, file) = recording(ID, 0);
    assert!(
        store
            .begin_upload(ID, &file[..header_len])
            .unwrap()
            .complete
    );
    assert_eq!(store.entry(ID).unwrap(), entry);
    assert_eq!(store.list().unwrap(), vec![entry.clone()]);
    assert_eq!(b.current_revision().unwrap(), revision);

    // Another store on the same backend and directory (a restart) finds it, writing nothing.
    let store = RecordingStore::open_with_backend(tmp.path(), b.clone()).unwrap();
    assert_eq!(store.list().unwrap(), vec![entry]);
    assert_eq!(b.current_revision().unwrap(), revision);
}

#[test]
fn an_identical_entry_already_there_is_success_and_a_different_one_a_conflict() {
    let tmp = tempfile::tempdir().unwrap();
    let b = backend();
    let store = RecordingStore::open_with_backend(tmp.path(), b.clone()).unwrap();

    // The same entry was indexed already (its file lost, the same recording uploaded again).
    let entry = expected_entry(ID, 0);
    let json = serde_json::to_vec(&StoredEntry {
        index_version: INDEX_VERSION,
        entry: entry.clone(),
    })
    .unwrap();
    b.create(&index_key(ID), &json, PutOptions::default())
        .unwrap();
    let revision = b.current_revision().unwrap();
    assert_eq!(upload(&store, ID, 0), entry);
    assert_eq!(b.current_revision().unwrap(), revision);

    // A different entry for the id: refused before the upload is made immutable.
    let other = "0190a5c4-0000-7000-8000-0000000000b2";
    let mut different = expected_entry(other, 0);
    different.size += 1;
    let json = serde_json::to_vec(&StoredEntry {
        index_version: INDEX_VERSION,
        entry: different.clone(),
    })
    .unwrap();
    b.create(&index_key(other), &json, PutOptions::default())
        .unwrap();
    let (header_len, file) = recording(other, 0);
    store.begin_upload(other, &file[..header_len]).unwrap();
    store
        .append(other, header_len as u64, &file[header_len..])
        .unwrap();
    let err = store.complete(other).unwrap_err();
    assert!(
        matches!(err, RecordingStoreError::IndexConflict { .. }),
        "{err}"
    );
    assert_eq!(err.fault(), crate::Fault::Caller);
    assert!(tmp.path().join(format!("{other}.part")).exists());
    assert!(!tmp.path().join(format!("{other}.hrec")).exists());
    assert_eq!(store.entry(other).unwrap(), different);
}

#[test]
fn list_reads_the_backend_in_pages() {
    let tmp = tempfile::tempdir().unwrap();
    let b = backend();
    let store = RecordingStore::open_with_backend(tmp.path(), b.clone()).unwrap();
    let a = upload(&store, "00000000-0000-7000-8000-0000000000a2", 1000);
    let c = upload(&store, "00000000-0000-7000-8000-0000000000a1", 2000);
    let d = upload(&store, "00000000-0000-7000-8000-0000000000a3", 0);
    // Oldest start first.
    assert_eq!(store.list().unwrap(), vec![d.clone(), a.clone(), c.clone()]);

    // The list is the backend's: an entry whose file is elsewhere (another appliance sharing
    // the backend) is listed, a file in the directory is not consulted.
    fs::remove_file(tmp.path().join(format!("{}.hrec", c.session_id))).unwrap();
    assert_eq!(store.list().unwrap(), vec![d.clone(), a.clone(), c.clone()]);

    // More entries than a page, and one that does not decode (logged, left out).
    let mut more = Vec::new();
    for i in 0..(INDEX_PAGE * 2 + 17) {
        let mut e = d.clone();
        e.session_id = format!("{i:08x}-ffff");
        e.start_unix_us = START_US + 3_000_000_000 + i as u64;
        let json = serde_json::to_vec(&StoredEntry {
            index_version: INDEX_VERSION,
            entry: e.clone(),
        })
        .unwrap();
        b.create(&index_key(&e.session_id), &json, PutOptions::default())
            .unwrap();
        more.push(e);
    }
    b.create(
        &index_key("ffffffff-bad"),
        b"{ not json",
        PutOptions::default(),
    )
    .unwrap();
    b.create(
        &index_key("ffffffff-new"),
        br#"{"index_version":2}"#,
        PutOptions::default(),
    )
    .unwrap();
    // Keys just outside the prefix are not the index's.
    b.create("/recordings/index", b"{}", PutOptions::default())
        .unwrap();
    b.create("/recordings/indey", b"{}", PutOptions::default())
        .unwrap();
    let listed = store.list().unwrap();
    assert_eq!(listed.len(), 3 + more.len());
    assert_eq!(listed[..3], [d, a, c]);
    assert_eq!(listed[3..], more[..]);
    assert!(matches!(
        store.entry("ffffffff-bad"),
        Err(RecordingStoreError::Index { .. })
    ));
}

#[test]
fn retention_removes_the_file_and_its_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let b = backend();
    let store = RecordingStore::open_with_backend(tmp.path(), b.clone()).unwrap();
    let old = upload(&store, "00000000-0000-7000-8000-0000000000a1", 0);
    let kept = upload(&store, "00000000-0000-7000-8000-0000000000a2", 1000);
    // An expired entry whose file is already gone (a crash between the two deletions).
    let gone = upload(&store, "00000000-0000-7000-8000-0000000000a3", 10);
    fs::remove_file(tmp.path().join(format!("{}.hrec", gone.session_id))).unwrap();
    // Expired and recent files without an entry (a crash before the entry was written).
    let orphan_old = upload(&store, "00000000-0000-7000-8000-0000000000a4", 20);
    let orphan_new = upload(&store, "00000000-0000-7000-8000-0000000000a5", 2000);
    for e in [&orphan_old, &orphan_new] {
        assert!(b.delete(&index_key(&e.session_id)).unwrap());
    }

    let cutoff = SystemTime::UNIX_EPOCH + Duration::from_micros(START_US + 500_000_000);
    let report = store.delete_older_than(cutoff).unwrap();
    assert_eq!(report.recordings, 3);
    assert_eq!(report.bytes, old.size + orphan_old.size);
    for e in [&old, &gone, &orphan_old] {
        assert!(stored_json(b.as_ref(), &e.session_id).is_none());
        assert!(!tmp.path().join(format!("{}.hrec", e.session_id)).exists());
    }
    // The recent orphan is indexed again.
    assert_eq!(
        store.list().unwrap(),
        vec![kept.clone(), orphan_new.clone()]
    );
    assert_eq!(
        store.delete_older_than(cutoff).unwrap(),
        RetentionReport::default()
    );
    let mut files: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            format!("{}.hrec", kept.session_id),
            format!("{}.hrec", orphan_new.session_id)
        ]
    );
}

#[test]
fn open_migrates_a_directory_of_sidecars() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ids = [
        "00000000-0000-7000-8000-0000000000c1",
        "00000000-0000-7000-8000-0000000000c2",
        "00000000-0000-7000-8000-0000000000c3",
        "00000000-0000-7000-8000-0000000000c4",
    ];
    let mut expected = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        write_old_recording(dir, id, i as u64 * 10);
        expected.push(expected_entry(id, i as u64 * 10));
    }
    // A current sidecar is taken as it is (marked here to tell it from a scan).
    let mut from_sidecar = expected[0].clone();
    from_sidecar.server_name = "from-the-sidecar".to_owned();
    write_sidecar(dir, &from_sidecar);
    // A sidecar of another size, of another index version, or garbage: the file is scanned.
    let mut stale = expected[1].clone();
    stale.size -= 1;
    stale.server_name = "stale".to_owned();
    write_sidecar(dir, &stale);
    let mut json: serde_json::Value = serde_json::to_value(StoredEntry {
        index_version: INDEX_VERSION,
        entry: expected[2].clone(),
    })
    .unwrap();
    json["index_version"] = 9.into();
    json["server_name"] = "newer".into();
    fs::write(dir.join(format!("{}.json", ids[2])), json.to_string()).unwrap();
    fs::write(dir.join(format!("{}.json", ids[3])), b"{ garbage").unwrap();
    // An upload in progress and a stray sidecar stay as they are.
    let (header_len, part) = recording("abc1", 0);
    fs::write(dir.join("abc1.part"), &part[..header_len]).unwrap();
    fs::write(dir.join("abc2.json"), b"{}").unwrap();

    let b = backend();
    let store = RecordingStore::open_with_backend(dir, b.clone()).unwrap();
    let mut want = expected.clone();
    want[0] = from_sidecar;
    assert_eq!(store.list().unwrap(), want);
    for id in ids {
        assert!(stored_json(b.as_ref(), id).is_some(), "{id}");
        assert!(!dir.join(format!("{id}.json")).exists(), "{id}");
        assert!(dir.join(format!("{id}.hrec")).exists(), "{id}");
    }
    assert!(dir.join("abc1.part").exists());
    assert!(dir.join("abc2.json").exists());
    assert_eq!(
        store.begin_upload("abc1", &part[..header_len]).unwrap(),
        UploadStatus {
            received: header_len as u64,
            complete: false
        }
    );

    // A second open finds everything indexed and writes nothing.
    let revision = b.current_revision().unwrap();
    let store = RecordingStore::open_with_backend(dir, b.clone()).unwrap();
    assert_eq!(store.list().unwrap(), want);
    assert_eq!(b.current_revision().unwrap(), revision);
}

#[test]
fn open_migrates_bare_recordings_by_scanning_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let file = write_old_recording(dir, ID, 0);
    // A damaged recording: logged and left out, the open goes on.
    let damaged = "0190a5c4-0000-7000-8000-0000000000d1";
    let (_, mut bad) = recording(damaged, 5);
    let n = bad.len();
    bad[n - 3] ^= 0xff;
    fs::write(dir.join(format!("{damaged}.hrec")), &bad).unwrap();

    // A recording whose entry is there but does not decode: left as it is, the open goes on.
    let unreadable = "0190a5c4-0000-7000-8000-0000000000d2";
    write_old_recording(dir, unreadable, 7);
    let b = backend();
    b.create(&index_key(unreadable), b"{ garbage", PutOptions::default())
        .unwrap();

    let store = RecordingStore::open_with_backend(dir, b.clone()).unwrap();
    let entry = expected_entry(ID, 0);
    assert_eq!(store.list().unwrap(), vec![entry.clone()]);
    assert!(matches!(
        store.entry(unreadable),
        Err(RecordingStoreError::Index { .. })
    ));
    assert_eq!(
        b.get(&index_key(unreadable)).unwrap().unwrap().value,
        b"{ garbage"
    );
    assert_eq!(store.entry(ID).unwrap(), entry);
    assert_eq!(store.read(ID).unwrap(), file);
    assert!(stored_json(b.as_ref(), damaged).is_none());
    assert!(matches!(
        store.entry(damaged),
        Err(RecordingStoreError::Corrupt { .. })
    ));
    // Still immutable.
    assert!(matches!(
        store.append(ID, 0, b"x"),
        Err(RecordingStoreError::AlreadyComplete { .. })
    ));
}

#[test]
fn a_completed_recording_without_an_entry_is_indexed_when_it_is_next_touched() {
    let tmp = tempfile::tempdir().unwrap();
    let b = backend();
    let store = RecordingStore::open_with_backend(tmp.path(), b.clone()).unwrap();
    let entry = upload(&store, ID, 0);
    // As if the process had stopped between the rename and the index write.
    assert!(b.delete(&index_key(ID)).unwrap());
    assert_eq!(store.list().unwrap(), vec![]);
    // The node, told the upload is complete, does not complete again: begin heals it.
    let (header_len, file) = recording(ID, 0);
    assert!(
        store
            .begin_upload(ID, &file[..header_len])
            .unwrap()
            .complete
    );
    assert_eq!(store.list().unwrap(), vec![entry.clone()]);
    // So do entry() and complete().
    assert!(b.delete(&index_key(ID)).unwrap());
    assert_eq!(store.entry(ID).unwrap(), entry);
    assert!(b.delete(&index_key(ID)).unwrap());
    assert_eq!(store.complete(ID).unwrap(), entry);
    assert_eq!(store.list().unwrap(), vec![entry]);
}

#[test]
fn the_index_survives_a_restart_in_redb() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("hop.db");
    let dir = tmp.path().join("recordings");
    let clock = Arc::new(ManualClock::new(SystemTime::UNIX_EPOCH));
    let entry = {
        let b = Arc::new(RedbBackend::open(&db, clock.clone()).unwrap());
        let store = RecordingStore::open_with_backend(&dir, b).unwrap();
        upload(&store, ID, 0)
    };
    let b = Arc::new(RedbBackend::open(&db, clock).unwrap());
    let revision = b.current_revision().unwrap();
    let store = RecordingStore::open_with_backend(&dir, b.clone()).unwrap();
    assert_eq!(store.list().unwrap(), vec![entry]);
    assert_eq!(b.current_revision().unwrap(), revision);
}
