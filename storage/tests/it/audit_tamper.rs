//! Tamper evidence: edits made to the audit segments behind hop's back — a flipped byte, a
//! removed event, a cut-off tail — are reported by `verify` at exactly the event where they
//! show.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hop_storage::audit::{BreakReason, VerifyReport};
use hop_storage::{ManualClock, StoredEvent};

use crate::support::{audit_path, numbered_event, open_audit, start_time};

/// The segment layout, spelled out independently of the crate so a layout change fails here:
/// `audit.segments/*.seg`, a 16-byte header (`HOPAUDS1`, first seq as u64 LE), then frames of
/// a u32 LE length and the record.
const MAGIC: &[u8; 8] = b"HOPAUDS1";

/// Every segment file's path and bytes, in seq order.
fn segment_files(index: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = index.with_extension("segments");
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    for (_, bytes) in &files {
        assert_eq!(&bytes[..8], MAGIC);
    }
    files.sort_by_key(|(_, b)| u64::from_le_bytes(b[8..16].try_into().unwrap()));
    files
}

/// The (start, end) of each frame's record in a segment's bytes, with its seq.
fn frames(bytes: &[u8]) -> Vec<(u64, usize, usize)> {
    let mut seq = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
    let mut at = 16;
    let mut out = Vec::new();
    while at < bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        out.push((seq, at + 4, at + 4 + len));
        at += 4 + len;
        seq += 1;
    }
    out
}

/// Applies `edit` to the stored record of `seq`, in place in its segment file.
fn edit_record(path: &Path, seq: u64, edit: impl FnOnce(&mut [u8])) {
    for (file, mut bytes) in segment_files(path) {
        if let Some((_, start, end)) = frames(&bytes).into_iter().find(|f| f.0 == seq) {
            edit(&mut bytes[start..end]);
            std::fs::write(&file, &bytes).unwrap();
            return;
        }
    }
    panic!("no frame for seq {seq}");
}

/// The length of the stored record of `seq`.
fn record_len(path: &Path, seq: u64) -> usize {
    for (_, bytes) in segment_files(path) {
        if let Some((_, start, end)) = frames(&bytes).into_iter().find(|f| f.0 == seq) {
            return end - start;
        }
    }
    panic!("no frame for seq {seq}");
}

/// Writes 50 events over two days (25 each) and returns them.
fn write_log(dir: &Path) -> Vec<StoredEvent> {
    let clock = ManualClock::new(start_time());
    let log = open_audit(dir, &clock);
    let mut stored = Vec::new();
    for i in 0..50 {
        if i == 25 {
            clock.advance(Duration::from_secs(86_400));
        }
        let pos = log.append(numbered_event(i)).unwrap();
        stored.push(log.get(&pos.id).unwrap().unwrap());
    }
    stored
}

fn verify(dir: &Path) -> VerifyReport {
    open_audit(dir, &ManualClock::new(start_time()))
        .verify(None)
        .unwrap()
}

/// Turns `"user":"user-9"` into `"user":"vser-9"`: still valid JSON, different content.
fn flip_user(bytes: &mut [u8]) {
    let at = bytes.windows(8).position(|w| w == b"\"user\":\"").unwrap();
    bytes[at + 8] ^= 0x03;
}

/// Cuts the frames of `seqs` out of their segment files.
fn remove_records(path: &Path, seqs: &[u64]) {
    let mut removed = 0;
    for (file, bytes) in segment_files(path) {
        let mut kept = bytes[..16].to_vec();
        for (seq, start, end) in frames(&bytes) {
            if seqs.contains(&seq) {
                removed += 1;
            } else {
                kept.extend_from_slice(&bytes[start - 4..end]);
            }
        }
        std::fs::write(&file, &kept).unwrap();
    }
    assert_eq!(removed, seqs.len());
}

#[test]
fn an_intact_log_verifies() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path());
    let report = verify(dir.path());
    assert_eq!(
        report,
        VerifyReport {
            events_checked: 50,
            segments: 2,
            first_break: None
        }
    );
}

#[test]
fn a_flipped_byte_in_a_field_is_reported_as_that_event() {
    let dir = tempfile::tempdir().unwrap();
    let stored = write_log(dir.path());
    let path = audit_path(dir.path());
    let target = &stored[19];
    assert_eq!(target.seq, 20);
    edit_record(&path, 20, flip_user);
    let report = verify(dir.path());
    let broken = report.first_break.unwrap();
    assert_eq!(broken.seq, 20);
    assert_eq!(broken.id, target.event.id);
    assert_eq!(broken.time, target.event.time);
    assert_eq!(broken.reason, BreakReason::HashMismatch);
    assert_eq!(report.events_checked, 19);
    assert!(broken.to_string().contains("seq 20"), "{broken}");
}

#[test]
fn a_flipped_byte_anywhere_in_the_record_is_reported_as_that_event() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path());
    let path = audit_path(dir.path());
    let len = record_len(&path, 30);
    // The version byte, the stored hash, the JSON's start, middle and end, and every byte of
    // a stretch in the middle.
    let mut positions = vec![0, 1, 20, 32, 33, 34, len / 2, len - 2, len - 1];
    positions.extend(len / 3..len / 3 + 40);
    for at in positions {
        edit_record(&path, 30, |bytes| bytes[at] ^= 0x01);
        let broken = verify(dir.path()).first_break.unwrap();
        assert_eq!(broken.seq, 30, "byte {at}: {broken}");
        edit_record(&path, 30, |bytes| bytes[at] ^= 0x01);
    }
    assert!(verify(dir.path()).is_intact());
}

#[test]
fn a_removed_event_is_reported_at_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let stored = write_log(dir.path());
    remove_records(&audit_path(dir.path()), &[20]);
    let broken = verify(dir.path()).first_break.unwrap();
    assert_eq!(broken.seq, 21);
    assert_eq!(broken.id, stored[20].event.id);
    assert_eq!(
        broken.reason,
        BreakReason::Gap {
            first_missing: 20,
            last_missing: 20
        }
    );
}

#[test]
fn removed_events_at_a_day_boundary_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path());
    // The last event of day one and the first of day two.
    remove_records(&audit_path(dir.path()), &[25, 26]);
    let broken = verify(dir.path()).first_break.unwrap();
    assert_eq!(broken.seq, 27);
    assert_eq!(
        broken.reason,
        BreakReason::Gap {
            first_missing: 25,
            last_missing: 26
        }
    );
}

#[test]
fn a_removed_tail_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path());
    remove_records(&audit_path(dir.path()), &[49, 50]);
    let broken = verify(dir.path()).first_break.unwrap();
    assert_eq!(broken.seq, 49);
    assert_eq!(broken.reason, BreakReason::Truncated { last_written: 50 });
}

#[test]
fn verify_since_checks_only_later_days_but_still_links_them() {
    let dir = tempfile::tempdir().unwrap();
    let stored = write_log(dir.path());
    let log = open_audit(dir.path(), &ManualClock::new(start_time()));
    let day_two = start_time() + Duration::from_secs(86_400);
    let report = log.verify(Some(day_two)).unwrap();
    assert_eq!((report.events_checked, report.segments), (25, 1));
    assert!(report.is_intact());
    drop(log);

    // A break on day one is outside the range; one on day two is not.
    edit_record(&audit_path(dir.path()), 3, flip_user);
    let log = open_audit(dir.path(), &ManualClock::new(start_time()));
    assert!(log.verify(Some(day_two)).unwrap().is_intact());
    assert_eq!(log.verify(None).unwrap().first_break.unwrap().seq, 3);
    drop(log);
    edit_record(&audit_path(dir.path()), 40, flip_user);
    let log = open_audit(dir.path(), &ManualClock::new(start_time()));
    let broken = log.verify(Some(day_two)).unwrap().first_break.unwrap();
    assert_eq!(
        (broken.seq, broken.id.as_str()),
        (40, stored[39].event.id.as_str())
    );
}

#[test]
fn events_after_a_cut_tail_go_to_a_new_segment_and_are_found_by_their_seq() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path());
    // Seqs 49 and 50 cut off the end while hop was stopped; the index had them.
    remove_records(&audit_path(dir.path()), &[49, 50]);
    let clock = ManualClock::new(start_time() + Duration::from_secs(86_400));
    let log = open_audit(dir.path(), &clock);
    let pos = log.append(numbered_event(900)).unwrap();
    assert_eq!(pos.seq, 51, "a seq is never handed out again");
    assert_eq!(log.get(&pos.id).unwrap().unwrap().seq, 51);
    assert_eq!(log.get("ev-000047").unwrap().unwrap().seq, 48);
    // The cut events are gone, not replaced by others at their seqs.
    assert!(log.get("ev-000048").unwrap().is_none());
    let broken = log.verify(None).unwrap().first_break.unwrap();
    assert_eq!(
        broken.reason,
        BreakReason::Gap {
            first_missing: 49,
            last_missing: 50
        }
    );
    assert_eq!(segment_files(&audit_path(dir.path())).len(), 3);
}

#[test]
fn a_segment_left_empty_by_a_crash_does_not_stop_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start_time());
    // What a crash right after a new segment was made leaves: its header and nothing else.
    let segments = audit_path(dir.path()).with_extension("segments");
    std::fs::create_dir(&segments).unwrap();
    let mut header = MAGIC.to_vec();
    header.extend_from_slice(&1u64.to_le_bytes());
    std::fs::write(
        segments.join("2023-11-14.00000000000000000001.seg"),
        &header,
    )
    .unwrap();
    let log = open_audit(dir.path(), &clock);
    let pos = log.append(numbered_event(1)).unwrap();
    assert_eq!(pos.seq, 1);
    assert!(log.verify(None).unwrap().is_intact());
}
