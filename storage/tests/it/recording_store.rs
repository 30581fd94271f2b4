//! The recordings directory: uploads that complete, resume (with overlapping and conflicting
//! appends), refuse changes once complete, refuse session ids that could name another path,
//! list from their index entries (rebuilt when missing) and expire by retention.

use std::time::{Duration, SystemTime};

use hop_storage::Fault;
use hop_storage::recording::{
    Recording, RecordingError, RecordingStore, RecordingStoreError, RecordingWriter, UploadStatus,
    WriterOptions, parse_chunk,
};

use crate::recording_format::{Rng, meta};

/// A finished recording of `id` (header length, whole file) starting `start_s` seconds after
/// the fixture's start, several chunks long.
fn recording(id: &str, start_s: u64) -> (usize, Vec<u8>) {
    let mut m = meta(id);
    m.start_unix_us += start_s * 1_000_000;
    let opts = WriterOptions {
        chunk_size: 512,
        coalesce: None,
    };
    let mut w = RecordingWriter::with_options(m, opts).unwrap();
    let header_len = w.header_bytes().len();
    let mut file = w.header_bytes().to_vec();
    let mut rng = Rng::new(start_s + 1);
    for i in 0..200u64 {
        file.extend(
            w.push_output(Duration::from_millis(i * 10), &rng.bytes(40))
                .unwrap_or_default(),
        );
    }
    file.extend(w.finish(Duration::from_secs(60), Some(0)));
    (header_len, file)
}

fn store() -> (tempfile::TempDir, RecordingStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = RecordingStore::open_dir(&dir.path().join("recordings")).unwrap();
    (dir, store)
}

/// Chunk boundaries after the header.
fn boundaries(file: &[u8], header_len: usize) -> Vec<usize> {
    let mut out = vec![header_len];
    let mut at = header_len;
    while let Some((_, len)) = parse_chunk(&file[at..]).unwrap() {
        at += len;
        out.push(at);
    }
    out
}

const ID: &str = "0190a5c4-0000-7000-8000-000000000001";

#[test]
fn an_upload_completes_and_is_listed_and_readable() {
    let (_tmp, store) = store();
    let (header_len, file) = recording(ID, 0);
    let status = store.begin_upload(ID, &file[..header_len]).unwrap();
    assert_eq!(
        status,
        UploadStatus {
            received: header_len as u64,
            complete: false
        }
    );
    let mut offset = header_len;
    for piece in file[header_len..].chunks(1000) {
        let received = store.append(ID, offset as u64, piece).unwrap();
        offset += piece.len();
        assert_eq!(received, offset as u64);
    }
    let entry = store.complete(ID).unwrap();
    assert_eq!(entry.session_id, ID);
    assert_eq!((entry.kind.as_str(), entry.user.as_str()), ("ssh", "alice"));
    assert_eq!(
        (entry.login.as_str(), entry.server_name.as_str()),
        ("root", "web-1")
    );
    assert_eq!(entry.start_unix_us, meta(ID).start_unix_us);
    assert_eq!(entry.end_unix_us, meta(ID).start_unix_us + 60_000_000);
    assert_eq!(entry.size, file.len() as u64);
    assert_eq!(entry.exit_status, Some(0));
    assert_eq!(entry.events, 201);
    assert_eq!(entry.format_version, 1);

    assert_eq!(store.list().unwrap(), vec![entry.clone()]);
    assert_eq!(store.entry(ID).unwrap(), entry);
    let bytes = store.read(ID).unwrap();
    assert_eq!(bytes, file);
    Recording::parse(&bytes).unwrap().check().unwrap();

    let dir = store.dir();
    assert!(!dir.join(format!("{ID}.part")).exists());
    // The index entry is in the backend; no sidecar is written.
    assert!(!dir.join(format!("{ID}.json")).exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(format!("{ID}.hrec")))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o400);
    }
}

#[test]
fn a_resumed_upload_accepts_overlap_and_refuses_gaps_and_conflicts() {
    let (_tmp, store) = store();
    let (header_len, file) = recording(ID, 0);
    let b = boundaries(&file, header_len);
    store.begin_upload(ID, &file[..header_len]).unwrap();
    // The first connection gets three chunks and half of the fourth through, then breaks.
    let cut = b[3] + (b[4] - b[3]) / 2;
    assert_eq!(
        store
            .append(ID, header_len as u64, &file[header_len..cut])
            .unwrap(),
        cut as u64
    );

    // Reconnect: the incomplete chunk is dropped, resume from the last complete one.
    let status = store.begin_upload(ID, &file[..header_len]).unwrap();
    assert_eq!(status.received, b[3] as u64);
    assert!(!status.complete);

    // The sender, unsure what arrived, resends from an earlier offset: accepted.
    let from = b[1] + 7;
    assert_eq!(
        store.append(ID, from as u64, &file[from..b[5]]).unwrap(),
        b[5] as u64
    );
    // Re-sending bytes entirely inside what was received is a no-op.
    assert_eq!(
        store.append(ID, b[2] as u64, &file[b[2]..b[3]]).unwrap(),
        b[5] as u64
    );

    // A gap names what was received and the offset asked for.
    let err = store
        .append(ID, b[5] as u64 + 1, &file[b[5] + 1..b[6]])
        .unwrap_err();
    assert!(
        matches!(err, RecordingStoreError::Gap { received, offset, .. }
            if received == b[5] as u64 && offset == b[5] as u64 + 1),
        "{err}"
    );
    assert!(err.to_string().contains(&b[5].to_string()), "{err}");
    assert_eq!(err.fault(), Fault::Caller);

    // Different bytes over received ones: a conflict naming the first difference.
    let mut other = file[b[4]..b[6]].to_vec();
    other[10] ^= 0xff;
    let err = store.append(ID, b[4] as u64, &other).unwrap_err();
    assert!(
        matches!(err, RecordingStoreError::Conflict { offset, first_difference, .. }
            if offset == b[4] as u64 && first_difference == b[4] as u64 + 10),
        "{err}"
    );
    // Nothing of the conflicting append was written.
    assert_eq!(
        store
            .begin_upload(ID, &file[..header_len])
            .unwrap()
            .received,
        b[5] as u64
    );

    // A different header for the same session is refused.
    let mut other_meta = meta(ID);
    other_meta.user = "mallory".to_owned();
    let other_header = RecordingWriter::new(other_meta)
        .unwrap()
        .header_bytes()
        .to_vec();
    assert!(matches!(
        store.begin_upload(ID, &other_header),
        Err(RecordingStoreError::HeaderMismatch { .. })
    ));

    store.append(ID, b[5] as u64, &file[b[5]..]).unwrap();
    let entry = store.complete(ID).unwrap();
    assert_eq!(store.read(ID).unwrap(), file);
    assert_eq!(entry.size, file.len() as u64);
}

#[test]
fn a_completed_recording_is_immutable() {
    let (_tmp, store) = store();
    let (header_len, file) = recording(ID, 0);
    store.begin_upload(ID, &file[..header_len]).unwrap();
    store
        .append(ID, header_len as u64, &file[header_len..])
        .unwrap();
    let entry = store.complete(ID).unwrap();

    for (offset, bytes) in [
        (file.len(), &b"more"[..]),
        (header_len, &file[header_len..]),
    ] {
        let err = store.append(ID, offset as u64, bytes).unwrap_err();
        assert!(
            matches!(err, RecordingStoreError::AlreadyComplete { .. }),
            "{err}"
        );
    }
    // Completing or beginning again just reports the completed state.
    assert_eq!(store.complete(ID).unwrap(), entry);
    assert_eq!(
        store.begin_upload(ID, &file[..header_len]).unwrap(),
        UploadStatus {
            received: file.len() as u64,
            complete: true
        }
    );
    assert_eq!(store.read(ID).unwrap(), file);
}

#[test]
fn completion_requires_a_whole_valid_recording() {
    let (_tmp, store) = store();
    let (header_len, file) = recording(ID, 0);
    let b = boundaries(&file, header_len);
    store.begin_upload(ID, &file[..header_len]).unwrap();
    // Without the last chunk (which holds the end event).
    let last = b[b.len() - 2];
    store
        .append(ID, header_len as u64, &file[header_len..last])
        .unwrap();
    assert!(matches!(
        store.complete(ID),
        Err(RecordingStoreError::Rejected {
            error: RecordingError::Unfinished { .. },
            ..
        })
    ));
    // Half of it: truncated.
    store
        .append(ID, last as u64, &file[last..last + 10])
        .unwrap();
    assert!(matches!(
        store.complete(ID),
        Err(RecordingStoreError::Rejected {
            error: RecordingError::Truncated { .. },
            ..
        })
    ));
    store.append(ID, last as u64, &file[last..]).unwrap();
    store.complete(ID).unwrap();

    // Corrupt bytes are caught at completion.
    let id2 = "0190a5c4-0000-7000-8000-000000000002";
    let (header_len, mut file) = recording(id2, 0);
    let b = boundaries(&file, header_len);
    file[b[2] + 30] ^= 1;
    store.begin_upload(id2, &file[..header_len]).unwrap();
    store
        .append(id2, header_len as u64, &file[header_len..])
        .unwrap();
    let err = store.complete(id2).unwrap_err();
    assert!(
        matches!(
            &err,
            RecordingStoreError::Rejected {
                error: RecordingError::CorruptChunk { index: 2, .. },
                ..
            }
        ),
        "{err}"
    );
    // A header for another session, or not a header, is refused up front.
    let (other_len, other) = recording("abcdef", 0);
    assert!(matches!(
        store.begin_upload(id2.replace('2', "3").as_str(), &other[..other_len]),
        Err(RecordingStoreError::Rejected { .. })
    ));
    assert!(matches!(
        store.begin_upload("abcdef", &other[..other_len - 1]),
        Err(RecordingStoreError::Rejected {
            error: RecordingError::Truncated { .. },
            ..
        })
    ));
    // Appending or completing an upload that was never begun.
    assert!(matches!(
        store.append("abcdef", 0, b"x"),
        Err(RecordingStoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.complete("abcdef"),
        Err(RecordingStoreError::NotFound { .. })
    ));
}

#[test]
fn session_ids_that_could_name_other_paths_are_refused() {
    let (tmp, store) = store();
    let (header_len, file) = recording(ID, 0);
    let header = &file[..header_len];
    let long = "a".repeat(65);
    let bad = [
        "",
        "..",
        "../x",
        "../../etc/passwd",
        "/etc/passwd",
        "a/b",
        "ab\\cd",
        "abc.def",
        "ab\0cd",
        "abcdef ",
        "ghij",
        long.as_str(),
    ];
    for id in bad {
        let refused = |r: Result<_, RecordingStoreError>| {
            matches!(r, Err(RecordingStoreError::InvalidSessionId { .. }))
        };
        assert!(
            refused(store.begin_upload(id, header).map(|_| ())),
            "{id:?}"
        );
        assert!(refused(store.append(id, 0, header).map(|_| ())), "{id:?}");
        assert!(refused(store.complete(id).map(|_| ())), "{id:?}");
        assert!(refused(store.open(id).map(|_| ())), "{id:?}");
        assert!(refused(store.read(id).map(|_| ())), "{id:?}");
        assert!(refused(store.entry(id).map(|_| ())), "{id:?}");
    }
    // Nothing was created anywhere.
    let created: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(created, ["recordings"]);
    assert_eq!(std::fs::read_dir(store.dir()).unwrap().count(), 0);
    assert!(hop_storage::recording::is_valid_session_id(&"a".repeat(64)));
    assert!(hop_storage::recording::is_valid_session_id(ID));
}

#[test]
fn a_lost_index_entry_is_rebuilt() {
    let (_tmp, store) = store();
    let (header_len, file) = recording(ID, 0);
    store.begin_upload(ID, &file[..header_len]).unwrap();
    store
        .append(ID, header_len as u64, &file[header_len..])
        .unwrap();
    let entry = store.complete(ID).unwrap();
    // A store over a new, empty index (`open_dir` keeps it in memory): the entry is rebuilt
    // from the file at open.
    let store = RecordingStore::open_dir(store.dir()).unwrap();
    assert_eq!(store.list().unwrap(), vec![entry.clone()]);
    assert_eq!(store.entry(ID).unwrap(), entry);
    // A garbage sidecar (an earlier version's index file) is not believed.
    let sidecar = store.dir().join(format!("{ID}.json"));
    std::fs::write(&sidecar, b"{ garbage").unwrap();
    let store = RecordingStore::open_dir(store.dir()).unwrap();
    assert_eq!(store.entry(ID).unwrap(), entry);
    assert!(!sidecar.exists());
}

#[test]
fn the_size_limit_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let store = RecordingStore::open_dir(dir.path())
        .unwrap()
        .with_max_recording_len(2000);
    let (header_len, file) = recording(ID, 0);
    store.begin_upload(ID, &file[..header_len]).unwrap();
    let err = store
        .append(ID, header_len as u64, &file[header_len..])
        .unwrap_err();
    assert!(
        matches!(err, RecordingStoreError::TooLarge { limit: 2000, .. }),
        "{err}"
    );
}

#[test]
fn retention_deletes_old_recordings_and_abandoned_uploads() {
    let (_tmp, store) = store();
    let ids = [
        "00000000-0000-7000-8000-0000000000a1",
        "00000000-0000-7000-8000-0000000000a2",
        "00000000-0000-7000-8000-0000000000a3",
    ];
    // Sessions start 0, 1000 and 2000 s after the fixture's start and last 60 s each.
    for (i, id) in ids.iter().enumerate() {
        let (header_len, file) = recording(id, i as u64 * 1000);
        store.begin_upload(id, &file[..header_len]).unwrap();
        store
            .append(id, header_len as u64, &file[header_len..])
            .unwrap();
        store.complete(id).unwrap();
    }
    let listed: Vec<_> = store
        .list()
        .unwrap()
        .into_iter()
        .map(|e| e.session_id)
        .collect();
    assert_eq!(listed, ids);

    // An upload abandoned long ago, and one in progress now.
    let (header_len, file) = recording("abc1", 0);
    store.begin_upload("abc1", &file[..header_len]).unwrap();
    let part = store.dir().join("abc1.part");
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    std::fs::File::options()
        .write(true)
        .open(&part)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let (header_len, file) = recording("abc2", 0);
    store.begin_upload("abc2", &file[..header_len]).unwrap();

    // Cut between the first session's end and the second's.
    let start = meta(ids[0]).start_time();
    let report = store
        .delete_older_than(start + Duration::from_secs(500))
        .unwrap();
    assert_eq!((report.recordings, report.abandoned_uploads), (1, 1));
    assert!(report.bytes > 0);
    let listed: Vec<_> = store
        .list()
        .unwrap()
        .into_iter()
        .map(|e| e.session_id)
        .collect();
    assert_eq!(listed, ids[1..]);
    assert!(!store.dir().join(format!("{}.json", ids[0])).exists());
    assert!(!part.exists());
    assert!(store.dir().join("abc2.part").exists());
    assert!(matches!(
        store.read(ids[0]),
        Err(RecordingStoreError::NotFound { .. })
    ));
    // Nothing more to delete at the same cutoff.
    assert_eq!(
        store
            .delete_older_than(start + Duration::from_secs(500))
            .unwrap(),
        Default::default()
    );
}
