//! Where a cluster's records are kept at start: the audit store (with its forward copy for a log
//! shipper) and the session recordings, with their retention. It opens each where
//! `hop.storage.audit_events_uri` / `audit_sessions_uri` say (the data dir when unset), names
//! them in the log, hands them on behind their seams (`AuditStore`, `RecordingBackend`) and runs
//! the retention sweep; what goes into them is Auth's business.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use hop_config::{Config, StoreLocation};
use hop_storage::recording::{RecordingBackend, RecordingStore, S3Environment, S3RecordingStore};
use hop_storage::{AuditConfig, AuditLog, AuditStore, Backend, Clock};
use tokio::sync::watch;

/// File name of the audit log inside the data dir (or the `file://` directory of
/// `hop.storage.audit_events_uri`).
pub const AUDIT_FILE: &str = "audit.db";
/// The directory of uploaded session recordings in the data dir.
pub const RECORDINGS_DIR: &str = "recordings";
/// Where uploads are staged in the data dir when recordings are kept in S3.
pub const RECORDINGS_STAGING_DIR: &str = "recordings-staging";
/// How often recordings past the retention are looked for.
const RETENTION_SWEEP: Duration = Duration::from_secs(3600);

/// The audit store `hop.storage.audit_events_uri` names (the log in `data_dir` when unset), with
/// the retention and forward copy `auth_service.audit` sets.
pub(super) fn open_audit_store(
    cfg: &Config,
    data_dir: &Path,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Arc<dyn AuditStore>> {
    let location = cfg
        .hop
        .storage
        .audit_events()
        .map_err(|e| anyhow!("hop.storage.audit_events_uri: {e}"))?;
    let dir = match location {
        StoreLocation::DataDir => data_dir.to_owned(),
        StoreLocation::Dir(dir) => create_store_dir(dir, "hop.storage.audit_events_uri")?,
        StoreLocation::Postgres { conn_string } => return open_audit_pg(cfg, &conn_string, clock),
        StoreLocation::S3(_) => {
            anyhow::bail!("hop.storage.audit_events_uri: audit events cannot be kept in S3")
        }
    };
    let store: Arc<dyn AuditStore> = Arc::new(open_audit_log(cfg, &dir.join(AUDIT_FILE), clock)?);
    tracing::info!(store = %store.describe(), "audit events store opened");
    Ok(store)
}

/// The audit store in the PostgreSQL database `conn_string` names, shared with the cluster's
/// other appliances (each writes its own chains), with `auth_service.audit.retention`. The
/// forward copy is the local log's (a
/// shipper reads one host's file) and is refused here rather than silently not written.
fn open_audit_pg(
    cfg: &Config,
    conn_string: &str,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Arc<dyn AuditStore>> {
    if cfg
        .auth_service
        .audit
        .forward
        .as_deref()
        .is_some_and(|f| !f.is_empty())
    {
        anyhow::bail!(
            "auth_service.audit.forward is not supported with a PostgreSQL audit store \
             (hop.storage.audit_events_uri: postgresql://…) yet; remove it, or ship the events \
             from the database"
        );
    }
    let retention = cfg.auth_service.audit.retention.map(|d| d.0);
    let store: Arc<dyn AuditStore> = Arc::new(
        hop_storage::PgAuditStore::open(conn_string, clock, retention)
            .map_err(|e| anyhow!("hop.storage.audit_events_uri: {e}"))?,
    );
    tracing::info!(store = %store.describe(), "audit events store opened");
    Ok(store)
}

/// The local audit log at `path`.
fn open_audit_log(cfg: &Config, path: &Path, clock: Arc<dyn Clock>) -> anyhow::Result<AuditLog> {
    let mut settings = AuditConfig {
        retention: cfg.auth_service.audit.retention.map(|d| d.0),
        forward: audit_forward(cfg)?,
        ..Default::default()
    };
    if let Some(linger) = cfg.auth_service.audit.unwatched_linger {
        settings.unwatched_linger = linger.0;
    }
    AuditLog::open(path, clock, settings)
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

/// The recordings store `hop.storage.audit_sessions_uri` names (`<data_dir>/recordings` when
/// unset), indexed in the cluster backend (recordings from before the index moved there are
/// indexed now: blocking, run it off the runtime).
pub(super) fn open_recordings(
    cfg: &Config,
    data_dir: &Path,
    backend: Arc<dyn Backend>,
) -> anyhow::Result<Arc<dyn RecordingBackend>> {
    let location = cfg
        .hop
        .storage
        .audit_sessions()
        .map_err(|e| anyhow!("hop.storage.audit_sessions_uri: {e}"))?;
    let store: Arc<dyn RecordingBackend> = match location {
        StoreLocation::DataDir => Arc::new(open_dir(&data_dir.join(RECORDINGS_DIR), backend)?),
        StoreLocation::Dir(dir) => Arc::new(open_dir(&dir, backend)?),
        StoreLocation::S3(location) => Arc::new(
            S3RecordingStore::open(
                location,
                &S3Environment::from_process(),
                &data_dir.join(RECORDINGS_STAGING_DIR),
                backend,
            )
            .map_err(|e| anyhow!("cannot open the session recordings bucket: {e}"))?,
        ),
        StoreLocation::Postgres { .. } => {
            anyhow::bail!("hop.storage.audit_sessions_uri: recordings cannot be kept in PostgreSQL")
        }
    };
    tracing::info!(store = %store.describe(), "session recordings store opened");
    Ok(store)
}

fn open_dir(dir: &Path, backend: Arc<dyn Backend>) -> anyhow::Result<RecordingStore> {
    RecordingStore::open_with_backend(dir, backend)
        .map_err(|e| anyhow!("cannot open the session recordings: {e}"))
}

/// `dir` (from `field`), created with mode 0700 if missing.
fn create_store_dir(dir: PathBuf, field: &str) -> anyhow::Result<PathBuf> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(&dir)
        .with_context(|| format!("{field}: cannot create {}", dir.display()))?;
    Ok(dir)
}

/// Deletes recordings older than the audit log's retention, at start and then hourly.
pub(super) async fn recording_retention(
    store: Arc<dyn RecordingBackend>,
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

async fn delete_recordings_before(
    store: &Arc<dyn RecordingBackend>,
    cutoff: std::time::SystemTime,
) {
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
