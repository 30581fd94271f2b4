//! `hop admin backup`'s server side: the cluster state of one backend revision as an unsealed
//! backup file (`hop_storage::backup`), audited. It decides what a backup holds (the storage
//! crate's `cluster_state`: everything but soft state and the recordings index) and that every
//! export is on the record; it never seals the file (the client does, so that the passphrase
//! never reaches the server) and never logs what it exports.

use hop_storage::backup;

use super::AuthServer;
use crate::audit::EventKind;
use crate::error::AuthError;

impl AuthServer {
    /// The cluster state as an unsealed backup file, for `actor` (already authorized). The
    /// export is audited (revision, number of items) durably before the file is handed out; an
    /// export that cannot be put on the record is refused. Call from a blocking context.
    pub fn export_backup(&self, actor: &str) -> Result<Vec<u8>, AuthError> {
        let snapshot = backup::cluster_state(self.store.backend().snapshot()?);
        let file = backup::encode(&snapshot, self.clock.now(), None)
            .map_err(|e| AuthError::Internal(format!("cannot write the backup: {e}")))?;
        self.audit
            .append_all_durable(vec![
                self.event(EventKind::ClusterBackup, actor)
                    .field("revision", snapshot.revision)
                    .field("items", snapshot.items.len()),
            ])
            .map_err(|e| {
                AuthError::Internal(format!(
                    "the backup was not handed out: its audit event could not be written ({e})"
                ))
            })?;
        Ok(file)
    }

    /// Puts a restore on the record once: the marker `hop admin restore` left in the store
    /// becomes a durable `cluster.restore` event, then goes. A marker that cannot be read or
    /// audited is left for the next start (logged). Call once at start, from a blocking context.
    pub fn audit_restore(&self) {
        let backend = self.store.backend();
        let item = match backend.get(backup::RESTORE_MARKER_KEY) {
            Ok(Some(item)) => item,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the restore marker");
                return;
            }
        };
        let marker: backup::RestoreMarker = match serde_json::from_slice(&item.value) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "the restore marker is unreadable: left in place");
                return;
            }
        };
        // Claimed first (a compare-and-swap on its revision): of appliances starting together on
        // one database, only the one that claims it writes the event.
        if let Err(e) = backend.compare_and_swap(
            backup::RESTORE_MARKER_KEY,
            Some(item.revision),
            &item.value,
            hop_storage::PutOptions::default(),
        ) {
            tracing::debug!(error = %e, "another appliance is recording the restore");
            return;
        }
        let event = self
            .event(EventKind::ClusterRestore, "hop admin restore")
            .field("backup_created", marker.backup_created.as_str())
            .field("revision", marker.revision)
            .field("items", marker.items)
            .field("restored_at", marker.restored_at.as_str())
            .field("sealed", marker.sealed)
            .field("file_sha256", marker.file_sha256.as_str());
        if let Err(e) = self.audit.append_all_durable(vec![event]) {
            tracing::warn!(error = %e, "the restore could not be put on the record yet");
            return;
        }
        if let Err(e) = backend.delete(backup::RESTORE_MARKER_KEY) {
            tracing::warn!(error = %e, "cannot remove the restore marker");
        }
        tracing::info!(backup_created = %marker.backup_created, items = marker.items,
            "this store was restored from a backup: recorded as cluster.restore");
    }

    /// Records a refused export (the caller lacked the `backup` `read` rule), durably.
    pub fn refuse_backup(&self, actor: &str, reason: &str) {
        self.audit.emit_durable(
            self.event(EventKind::ClusterBackup, actor)
                .failed(EventKind::ClusterBackup, reason),
        );
    }
}
