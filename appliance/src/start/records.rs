//! Where a cluster's records are kept at start: the audit log (with its forward copy for a log
//! shipper) and the session recordings, with their retention. It opens them in the data dir and
//! runs the retention sweep; what goes into them is Auth's business.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use hop_config::Config;
use hop_storage::recording::RecordingStore;
use hop_storage::{AuditConfig, AuditLog, Backend, Clock};
use tokio::sync::watch;

/// File name of the audit log inside the data dir.
pub const AUDIT_FILE: &str = "audit.db";
/// The directory of uploaded session recordings in the data dir.
pub const RECORDINGS_DIR: &str = "recordings";
/// How often recordings past the retention are looked for.
const RETENTION_SWEEP: Duration = Duration::from_secs(3600);

/// The audit log in `data_dir`, with the retention and forward copy `auth_service.audit` sets.
pub(super) fn open_audit_log(
    cfg: &Config,
    data_dir: &Path,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<AuditLog> {
    let mut settings = AuditConfig {
        retention: cfg.auth_service.audit.retention.map(|d| d.0),
        forward: audit_forward(cfg)?,
        ..Default::default()
    };
    if let Some(linger) = cfg.auth_service.audit.unwatched_linger {
        settings.unwatched_linger = linger.0;
    }
    let path = data_dir.join(AUDIT_FILE);
    AuditLog::open(&path, clock, settings)
        .map_err(|e| anyhow!("cannot open the audit log {}: {e}", path.display()))
}

/// Where durable events are also written as JSON lines: nowhere, stdout, or a file (appended).
fn audit_forward(cfg: &Config) -> anyhow::Result<Option<Box<dyn std::io::Write + Send>>> {
    Ok(match cfg.auth_service.audit.forward.as_deref() {
        None | Some("") => None,
        Some("stdout") => Some(Box::new(std::io::stdout())),
        Some(path) => Some(Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("auth_service.audit.forward: cannot open {path}"))?,
        )),
    })
}

/// The recordings directory, indexed in the cluster backend (recordings from before the index
/// moved there are indexed now: blocking, run it off the runtime).
pub(super) fn open_recordings(
    data_dir: &Path,
    backend: Arc<dyn Backend>,
) -> anyhow::Result<Arc<RecordingStore>> {
    let dir = data_dir.join(RECORDINGS_DIR);
    RecordingStore::open_with_backend(&dir, backend)
        .map(Arc::new)
        .map_err(|e| anyhow!("cannot open the session recordings: {e}"))
}

/// Deletes recordings older than the audit log's retention, at start and then hourly.
pub(super) async fn recording_retention(
    store: Arc<RecordingStore>,
    clock: Arc<dyn Clock>,
    retention: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        if let Some(cutoff) = clock.now().checked_sub(retention) {
            delete_recordings_before(&store, cutoff).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(RETENTION_SWEEP) => {}
            _ = hop_platform::signals::until_shutdown(&mut shutdown) => return,
        }
    }
}

async fn delete_recordings_before(store: &Arc<RecordingStore>, cutoff: std::time::SystemTime) {
    let s = store.clone();
    match tokio::task::spawn_blocking(move || s.delete_older_than(cutoff)).await {
        Ok(Ok(r)) if r.recordings + r.abandoned_uploads > 0 => tracing::info!(
            recordings = r.recordings,
            abandoned_uploads = r.abandoned_uploads,
            bytes = r.bytes,
            "deleted session recordings past the retention"
        ),
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "recording retention failed"),
        Err(e) => tracing::warn!(error = %e, "recording retention task failed"),
    }
}
