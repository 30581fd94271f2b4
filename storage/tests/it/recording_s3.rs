//! Recordings in an S3-compatible bucket, against moto's standalone server (a stand-in: no real
//! S3 can be reached here; see `moto.rs`). Without moto the tests print SKIP.
//!
//! What they show: an upload completes into the bucket and is listed, read whole, by range and
//! streamed; a second store on the same index and bucket (another appliance) reads it; a
//! recording over the multipart threshold round-trips; a recording completed in staging but not
//! yet put (a crash) is put at the next open; retention deletes object and entry; a wrong
//! bucket fails the open with a clear error.

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hop_storage::recording::{
    RecordingBackend, RecordingMeta, RecordingStore, RecordingStoreError, RecordingWriter,
    S3Environment, S3Location, S3RecordingStore, WriterOptions,
};
use hop_storage::{Backend, ManualClock, MemoryBackend};

use crate::moto::{Moto, moto};
use crate::recording_format::Rng;

/// Moto accepts any credentials; the client needs some (it never reads them from the URI).
fn credentials() -> S3Environment {
    S3Environment::from_pairs([
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
    ])
}

fn location(moto: &Moto, bucket: &str) -> S3Location {
    S3Location::parse(&moto.uri(bucket)).unwrap()
}

fn index() -> Arc<dyn Backend> {
    Arc::new(MemoryBackend::new(Arc::new(ManualClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    ))))
}

fn open(
    moto: &Moto,
    bucket: &str,
    staging: &std::path::Path,
    index: Arc<dyn Backend>,
) -> S3RecordingStore {
    S3RecordingStore::open(location(moto, bucket), &credentials(), staging, index).unwrap()
}

/// A finished recording of `id` whose output totals about `bytes` bytes.
fn recording(id: &str, bytes: usize) -> (Vec<u8>, Vec<u8>) {
    let meta = RecordingMeta {
        session_id: id.to_owned(),
        kind: "ssh".to_owned(),
        cluster: "c1".to_owned(),
        user: "alice".to_owned(),
        login: "hopuser".to_owned(),
        server_id: "node-1".to_owned(),
        server_name: "web-1".to_owned(),
        start_unix_us: 1_700_000_000_000_000,
        cols: 80,
        rows: 24,
        term: "xterm".to_owned(),
    };
    let opts = WriterOptions {
        chunk_size: 64 * 1024,
        coalesce: None,
    };
    let mut w = RecordingWriter::with_options(meta, opts).unwrap();
    let header = w.header_bytes().to_vec();
    let mut file = header.clone();
    let mut rng = Rng::new(bytes as u64);
    let mut i = 0u64;
    while file.len() < bytes {
        file.extend(
            w.push_output(Duration::from_millis(i), &rng.bytes(4096))
                .unwrap_or_default(),
        );
        i += 1;
    }
    file.extend(w.finish(Duration::from_secs(60), Some(0)));
    (header, file)
}

fn upload(store: &dyn RecordingBackend, id: &str, header: &[u8], file: &[u8]) {
    let status = store.begin_upload(id, header).unwrap();
    assert!(!status.complete);
    let mut at = status.received as usize;
    for piece in file[at..].chunks(300_000) {
        at = store.append(id, at as u64, piece).unwrap() as usize;
    }
    assert_eq!(at, file.len());
    let entry = store.complete(id).unwrap();
    assert_eq!(entry.size, file.len() as u64);
}

const ID: &str = "0190a5c4-0000-7000-8000-00000000a001";

#[test]
fn a_recording_goes_to_the_bucket_and_every_appliance_reads_it() {
    let Some(moto) = moto() else { return };
    let bucket = moto.bucket();
    let tmp = tempfile::tempdir().unwrap();
    let shared_index = index();
    let a = open(moto, &bucket, &tmp.path().join("a"), shared_index.clone());
    let (header, file) = recording(ID, 200_000);
    upload(&a, ID, &header, &file);
    assert_eq!(a.describe().kind, "s3");

    // Nothing left staged; the object is where the prefix says.
    let staged: Vec<_> = std::fs::read_dir(tmp.path().join("a")).unwrap().collect();
    assert!(staged.is_empty(), "staging kept {staged:?}");
    assert_eq!(
        moto.keys(&bucket),
        [format!("cluster-a/recordings/{ID}.hrec")]
    );

    // Another appliance: its own staging dir, the same index and bucket.
    let b = open(moto, &bucket, &tmp.path().join("b"), shared_index);
    assert_eq!(b.list().unwrap().len(), 1);
    assert_eq!(b.read(ID).unwrap(), file);
    assert_eq!(b.read_range(ID, 10, 100).unwrap(), file[10..110]);
    assert_eq!(
        b.read_range(ID, file.len() as u64 - 5, 100).unwrap(),
        file[file.len() - 5..]
    );
    assert!(
        b.read_range(ID, file.len() as u64 + 1, 10)
            .unwrap()
            .is_empty()
    );
    let mut streamed = Vec::new();
    b.open_reader(ID)
        .unwrap()
        .read_to_end(&mut streamed)
        .unwrap();
    assert_eq!(streamed, file);

    // Complete and immutable, from either side.
    let again = b.begin_upload(ID, &header).unwrap();
    assert!(again.complete);
    assert_eq!(again.received, file.len() as u64);
    assert!(matches!(
        b.append(ID, 0, &header),
        Err(RecordingStoreError::AlreadyComplete { .. })
    ));
    let mut other_header = header.clone();
    *other_header.last_mut().unwrap() ^= 1;
    assert!(matches!(
        a.begin_upload(ID, &other_header),
        Err(RecordingStoreError::HeaderMismatch { .. }) | Err(RecordingStoreError::Rejected { .. })
    ));
}

#[test]
fn a_recording_over_the_part_size_goes_up_in_parts() {
    let Some(moto) = moto() else { return };
    let bucket = moto.bucket();
    let tmp = tempfile::tempdir().unwrap();
    let store = open(moto, &bucket, tmp.path(), index());
    let id = "0190a5c4-0000-7000-8000-00000000a002";
    let (header, file) = recording(id, 20 * 1024 * 1024);
    upload(&store, id, &header, &file);
    assert_eq!(store.read(id).unwrap(), file);
}

#[test]
fn a_recording_completed_before_a_crash_is_put_at_the_next_open() {
    let Some(moto) = moto() else { return };
    let bucket = moto.bucket();
    let tmp = tempfile::tempdir().unwrap();
    let id = "0190a5c4-0000-7000-8000-00000000a003";
    let (header, file) = recording(id, 50_000);
    // Completed in the staging directory, as if the process died before the put.
    let staging = RecordingStore::open_dir(tmp.path()).unwrap();
    upload(&staging, id, &header, &file);
    drop(staging);
    let shared_index = index();
    let store = open(moto, &bucket, tmp.path(), shared_index.clone());
    assert_eq!(store.entry(id).unwrap().size, file.len() as u64);
    assert_eq!(store.read(id).unwrap(), file);
    assert!(std::fs::read_dir(tmp.path()).unwrap().next().is_none());
}

#[test]
fn retention_deletes_the_object_and_its_entry() {
    let Some(moto) = moto() else { return };
    let bucket = moto.bucket();
    let tmp = tempfile::tempdir().unwrap();
    let store = open(moto, &bucket, tmp.path(), index());
    let (header, file) = recording(ID, 10_000);
    upload(&store, ID, &header, &file);
    let before_end = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    assert_eq!(store.delete_older_than(before_end).unwrap().recordings, 0);
    let report = store
        .delete_older_than(before_end + Duration::from_secs(3600))
        .unwrap();
    assert_eq!(report.recordings, 1);
    assert_eq!(report.bytes, file.len() as u64);
    assert!(store.list().unwrap().is_empty());
    assert!(matches!(
        store.read(ID),
        Err(RecordingStoreError::NotFound { .. })
    ));
    assert_eq!(moto.keys(&bucket), Vec::<String>::new());
}

#[test]
fn a_missing_bucket_fails_the_open_clearly() {
    let Some(moto) = moto() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let err = S3RecordingStore::open(
        location(moto, "no-such-bucket"),
        &credentials(),
        tmp.path(),
        index(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("session recordings object store") && err.contains("list"),
        "{err}"
    );
}

#[test]
fn a_different_recording_under_a_published_id_is_refused_and_replaces_nothing() {
    let Some(moto) = moto() else { return };
    let bucket = moto.bucket();
    let tmp = tempfile::tempdir().unwrap();
    let shared_index = index();
    let a = open(moto, &bucket, &tmp.path().join("a"), shared_index.clone());
    let b = open(moto, &bucket, &tmp.path().join("b"), shared_index);
    let (header, file) = recording(ID, 30_000);
    upload(&a, ID, &header, &file);
    // Another appliance is handed other bytes under the same session id.
    let (_, other) = recording(ID, 60_000);
    let staging = RecordingStore::open_dir(&tmp.path().join("b")).unwrap();
    staging.begin_upload(ID, &header).unwrap();
    staging
        .append(ID, header.len() as u64, &other[header.len()..])
        .unwrap();
    drop(staging);
    let refused = b.complete(ID);
    assert!(
        matches!(refused, Err(RecordingStoreError::IndexConflict { .. })),
        "{refused:?}"
    );
    assert_eq!(
        b.read(ID).unwrap(),
        file,
        "the published recording is unchanged"
    );
}

#[test]
fn the_environment_cannot_move_recordings_elsewhere() {
    let Some(moto) = moto() else { return };
    let bucket = moto.bucket();
    let tmp = tempfile::tempdir().unwrap();
    let env = S3Environment::from_pairs([
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
        ("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9"),
        ("AWS_SKIP_SIGNATURE", "true"),
    ]);
    let store = S3RecordingStore::open(location(moto, &bucket), &env, tmp.path(), index()).unwrap();
    let (header, file) = recording(ID, 5_000);
    upload(&store, ID, &header, &file);
    assert_eq!(moto.keys(&bucket).len(), 1, "the URI's endpoint was used");
}
