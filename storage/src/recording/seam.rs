//! The recordings seam. This module owns [`RecordingBackend`], what every place that keeps
//! uploaded session recordings must offer (the local directory of [`RecordingStore`] today; an
//! S3-compatible bucket with high availability), and its implementation for the local store. It
//! never stores anything itself.
//!
//! The contract every backend keeps: uploads resume ([`RecordingBackend::begin_upload`] reports
//! the offset to resume from; re-sent bytes must equal what was received); a recording is
//! reported complete only once it and its index entry are durable, and never changes after; a
//! session id never names anything outside the backend; retention is handed its cutoff and
//! removes a recording with its index entry. An object store keeps in-progress uploads wherever
//! it likes (a local staging directory, multipart uploads) and puts the finished recording whole
//! on [`RecordingBackend::complete`].

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::time::SystemTime;

use super::error::RecordingStoreError;
use super::store::{RecordingIndexEntry, RecordingStore, RetentionReport, UploadStatus};
use crate::audit_store::StoreDescription;

/// Where uploaded recordings are kept: see the module documentation for the contract.
pub trait RecordingBackend: Send + Sync + std::fmt::Debug {
    /// The kind of backend and where it keeps recordings.
    fn describe(&self) -> StoreDescription;

    /// Starts, or resumes, the upload of `session_id` whose file starts with `header`; returns
    /// where to resume appending.
    fn begin_upload(
        &self,
        session_id: &str,
        header: &[u8],
    ) -> Result<UploadStatus, RecordingStoreError>;

    /// Writes `bytes` at `offset` of an upload in progress; returns the bytes received so far.
    fn append(
        &self,
        session_id: &str,
        offset: u64,
        bytes: &[u8],
    ) -> Result<u64, RecordingStoreError>;

    /// Checks the upload is a whole recording, keeps it for good and indexes it.
    fn complete(&self, session_id: &str) -> Result<RecordingIndexEntry, RecordingStoreError>;

    /// The completed recording, streamed from its first byte.
    fn open_reader(&self, session_id: &str) -> Result<Box<dyn Read + Send>, RecordingStoreError>;

    /// The completed recording, whole, in memory.
    fn read(&self, session_id: &str) -> Result<Vec<u8>, RecordingStoreError>;

    /// Up to `len` bytes of the completed recording from `offset` (fewer at its end, none past
    /// it).
    fn read_range(
        &self,
        session_id: &str,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>, RecordingStoreError>;

    /// The index entry of a completed recording.
    fn entry(&self, session_id: &str) -> Result<RecordingIndexEntry, RecordingStoreError>;

    /// Every completed recording, oldest start first.
    fn list(&self) -> Result<Vec<RecordingIndexEntry>, RecordingStoreError>;

    /// Deletes the recordings that ended before `cutoff` and uploads abandoned before it.
    fn delete_older_than(&self, cutoff: SystemTime)
    -> Result<RetentionReport, RecordingStoreError>;
}

/// The local directory.
impl RecordingBackend for RecordingStore {
    fn describe(&self) -> StoreDescription {
        StoreDescription {
            kind: "local",
            location: self.dir().display().to_string(),
        }
    }

    fn begin_upload(
        &self,
        session_id: &str,
        header: &[u8],
    ) -> Result<UploadStatus, RecordingStoreError> {
        RecordingStore::begin_upload(self, session_id, header)
    }

    fn append(
        &self,
        session_id: &str,
        offset: u64,
        bytes: &[u8],
    ) -> Result<u64, RecordingStoreError> {
        RecordingStore::append(self, session_id, offset, bytes)
    }

    fn complete(&self, session_id: &str) -> Result<RecordingIndexEntry, RecordingStoreError> {
        RecordingStore::complete(self, session_id)
    }

    fn open_reader(&self, session_id: &str) -> Result<Box<dyn Read + Send>, RecordingStoreError> {
        Ok(Box::new(self.open(session_id)?))
    }

    fn read(&self, session_id: &str) -> Result<Vec<u8>, RecordingStoreError> {
        RecordingStore::read(self, session_id)
    }

    fn read_range(
        &self,
        session_id: &str,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>, RecordingStoreError> {
        let file = self.open(session_id)?;
        let io = RecordingStoreError::io(self.dir().join(format!("{session_id}.hrec")));
        read_range_of(file, offset, len).map_err(io)
    }

    fn entry(&self, session_id: &str) -> Result<RecordingIndexEntry, RecordingStoreError> {
        RecordingStore::entry(self, session_id)
    }

    fn list(&self) -> Result<Vec<RecordingIndexEntry>, RecordingStoreError> {
        RecordingStore::list(self)
    }

    fn delete_older_than(
        &self,
        cutoff: SystemTime,
    ) -> Result<RetentionReport, RecordingStoreError> {
        RecordingStore::delete_older_than(self, cutoff)
    }
}

fn read_range_of(mut file: File, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::with_capacity(len.min(1 << 20));
    file.take(len as u64).read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::recording::{RecordingMeta, RecordingWriter};

    const ID: &str = "0123abcd-0000-0000-0000-00000000beef";

    fn recording() -> (Vec<u8>, Vec<u8>) {
        let mut w = RecordingWriter::new(RecordingMeta {
            session_id: ID.to_owned(),
            kind: crate::recording::KIND_SSH.to_owned(),
            cluster: "c1".to_owned(),
            user: "alice".to_owned(),
            login: "root".to_owned(),
            server_id: "host-1".to_owned(),
            server_name: "web".to_owned(),
            start_unix_us: 1_700_000_000_000_000,
            cols: 80,
            rows: 24,
            term: "xterm".to_owned(),
        })
        .unwrap();
        let header = w.header_bytes().to_vec();
        let mut body = w
            .push_output(Duration::from_millis(5), b"hello")
            .unwrap_or_default();
        body.extend(w.finish(Duration::from_millis(9), Some(0)));
        (header, body)
    }

    #[test]
    fn the_local_directory_keeps_the_contract_through_the_trait() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn RecordingBackend> =
            Arc::new(RecordingStore::open_dir(&dir.path().join("rec")).unwrap());
        assert_eq!(store.describe().kind, "local");
        let (header, body) = recording();
        let at = store.begin_upload(ID, &header).unwrap().received;
        let end = store.append(ID, at, &body).unwrap();
        let entry = store.complete(ID).unwrap();
        assert_eq!(entry.size, end);
        assert_eq!(store.entry(ID).unwrap(), entry);
        assert_eq!(store.list().unwrap(), vec![entry.clone()]);

        let mut whole = Vec::new();
        store
            .open_reader(ID)
            .unwrap()
            .read_to_end(&mut whole)
            .unwrap();
        assert_eq!(whole, [header.as_slice(), body.as_slice()].concat());
        assert_eq!(store.read(ID).unwrap(), whole);
        assert_eq!(store.read_range(ID, 2, 3).unwrap(), whole[2..5]);
        assert_eq!(
            store.read_range(ID, end - 1, 9).unwrap(),
            whole[whole.len() - 1..]
        );
        assert!(store.read_range(ID, end + 5, 9).unwrap().is_empty());

        let report = store.delete_older_than(entry.end() + Duration::from_secs(1));
        assert_eq!(report.unwrap().recordings, 1);
        assert!(store.list().unwrap().is_empty());
    }
}
