//! The recordings index in the cluster backend. This module owns the key layout
//! (`/recordings/index/<session id>`, one immutable entry per completed recording), the JSON
//! shape of an entry and its version, and the operations every recordings store performs on
//! it: read one, create one once, delete one, and walk them all in pages of bounded size. The
//! local directory store and the S3 store keep their index here, so a recording completed by one
//! appliance is listed by every appliance on the same backend.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::error::RecordingStoreError;
use super::store::RecordingIndexEntry;
use crate::backend::{Backend, Item, PutOptions, prefix_end};
use crate::error::StorageError;

/// The backend key prefix of the recordings index: `/recordings/index/<session id>` holds the
/// JSON of the completed recording's [`RecordingIndexEntry`] and `index_version`.
pub const RECORDINGS_INDEX_PREFIX: &str = "/recordings/index/";

/// The version of an index entry's JSON shape (in the backend, and in the old sidecars).
pub(super) const INDEX_VERSION: u32 = 1;
/// Index entries read from the backend per range call.
pub(super) const INDEX_PAGE: usize = 1000;

/// The JSON of an index entry: in the backend, and in the `<id>.json` sidecars of earlier
/// versions (the same shape).
#[derive(Serialize, Deserialize)]
pub(super) struct StoredEntry {
    pub(super) index_version: u32,
    #[serde(flatten)]
    pub(super) entry: RecordingIndexEntry,
}

/// The index, in the backend it lives in.
#[derive(Debug, Clone)]
pub(super) struct RecordingIndex {
    backend: Arc<dyn Backend>,
}

impl RecordingIndex {
    pub(super) fn new(backend: Arc<dyn Backend>) -> Self {
        Self { backend }
    }

    /// The backend holding the index.
    pub(super) fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// Whether the index has an entry for `id` (readable or not).
    pub(super) fn has(&self, id: &str) -> Result<bool, RecordingStoreError> {
        Ok(self
            .backend
            .get(&index_key(id))
            .map_err(RecordingStoreError::index)?
            .is_some())
    }

    /// The index entry of `id`, if there is one.
    pub(super) fn get(&self, id: &str) -> Result<Option<RecordingIndexEntry>, RecordingStoreError> {
        self.backend
            .get(&index_key(id))
            .map_err(RecordingStoreError::index)?
            .map(|item| decode_entry(&item))
            .transpose()
    }

    /// Creates the index entry, once: an identical entry already there is success, a different
    /// one an [`RecordingStoreError::IndexConflict`].
    pub(super) fn create(&self, entry: &RecordingIndexEntry) -> Result<(), RecordingStoreError> {
        let key = index_key(&entry.session_id);
        let stored = StoredEntry {
            index_version: INDEX_VERSION,
            entry: entry.clone(),
        };
        let value = serde_json::to_vec(&stored).map_err(|source| {
            RecordingStoreError::index(StorageError::Encode {
                key: key.clone(),
                source,
            })
        })?;
        match self.backend.create(&key, &value, PutOptions::default()) {
            Ok(_) => Ok(()),
            Err(StorageError::AlreadyExists { .. }) => match self.get(&entry.session_id)? {
                Some(existing) if existing == *entry => Ok(()),
                _ => Err(RecordingStoreError::IndexConflict {
                    session_id: entry.session_id.clone(),
                }),
            },
            Err(err) => Err(RecordingStoreError::index(err)),
        }
    }

    /// Deletes the entry of `id` (none there is success).
    pub(super) fn delete(&self, id: &str) -> Result<(), RecordingStoreError> {
        self.backend
            .delete(&index_key(id))
            .map(|_| ())
            .map_err(RecordingStoreError::index)
    }

    /// Calls `f` with each page of the index, in key order.
    pub(super) fn for_each_page(
        &self,
        mut f: impl FnMut(&[Item]) -> Result<(), RecordingStoreError>,
    ) -> Result<(), RecordingStoreError> {
        let end = prefix_end(RECORDINGS_INDEX_PREFIX);
        let mut start = RECORDINGS_INDEX_PREFIX.to_owned();
        loop {
            let page = self
                .backend
                .range(&start, &end, INDEX_PAGE)
                .map_err(RecordingStoreError::index)?;
            f(&page)?;
            match page.last() {
                Some(last) if page.len() == INDEX_PAGE => start = format!("{}\0", last.key),
                _ => return Ok(()),
            }
        }
    }

    /// Every readable entry, oldest start first (an entry that does not decode is logged and
    /// left out).
    pub(super) fn list(&self) -> Result<Vec<RecordingIndexEntry>, RecordingStoreError> {
        let mut entries = Vec::new();
        self.for_each_page(|page| {
            entries.extend(page.iter().filter_map(decode_logged));
            Ok(())
        })?;
        entries.sort_by(|a, b| {
            (a.start_unix_us, &a.session_id).cmp(&(b.start_unix_us, &b.session_id))
        });
        Ok(entries)
    }

    /// The ids of the readable entries whose recording ended before `cutoff_us` (microseconds
    /// since the Unix epoch).
    pub(super) fn ended_before(&self, cutoff_us: u64) -> Result<Vec<String>, RecordingStoreError> {
        let mut expired = Vec::new();
        self.for_each_page(|page| {
            expired.extend(
                page.iter()
                    .filter_map(decode_logged)
                    .filter(|e| e.end_unix_us < cutoff_us)
                    .map(|e| e.session_id),
            );
            Ok(())
        })?;
        Ok(expired)
    }
}

pub(super) fn index_key(id: &str) -> String {
    format!("{RECORDINGS_INDEX_PREFIX}{id}")
}

/// Decodes an index entry; one of another index version, or under another key, is refused.
fn decode_entry(item: &Item) -> Result<RecordingIndexEntry, RecordingStoreError> {
    let decode_error = |source| {
        RecordingStoreError::index(StorageError::Decode {
            key: item.key.clone(),
            source,
        })
    };
    let stored: StoredEntry = serde_json::from_slice(&item.value).map_err(decode_error)?;
    if stored.index_version != INDEX_VERSION {
        return Err(decode_error(serde::de::Error::custom(format_args!(
            "index_version {} is not {INDEX_VERSION}",
            stored.index_version
        ))));
    }
    if index_key(&stored.entry.session_id) != item.key {
        return Err(decode_error(serde::de::Error::custom(format_args!(
            "the entry is of session {:?}",
            stored.entry.session_id
        ))));
    }
    Ok(stored.entry)
}

/// Like [`decode_entry`], logging and skipping an entry that does not decode.
fn decode_logged(item: &Item) -> Option<RecordingIndexEntry> {
    decode_entry(item)
        .map_err(
            |err| tracing::warn!(key = %item.key, %err, "unreadable session recording index entry"),
        )
        .ok()
}
