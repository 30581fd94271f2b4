//! Audit search, verify and export served through the `AuditStore` seam: a store other than the
//! local log (here one that wraps it and counts what is asked of it) answers every call; and
//! the backup export's authorization and audit events.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hop_storage::audit::PurgeReport;
use hop_storage::{
    AuditAck, AuditError, AuditEvent, AuditLog, AuditStats, AuditStore, Clock, EventPosition,
    ManualClock, MemoryBackend, ResourceStore, SearchPage, SearchQuery, StoreDescription,
    StoredEvent, VerifyReport,
};
use tokio_stream::StreamExt;

use super::*;
use crate::audit::AuditLogSink;
use crate::server::AuthSettings;

/// A store that is not `AuditLog`: it counts reads and hands everything to a local log.
#[derive(Debug)]
struct CountingStore {
    inner: AuditLog,
    reads: AtomicUsize,
}

impl CountingStore {
    fn read(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
    }
}

impl AuditStore for CountingStore {
    fn describe(&self) -> StoreDescription {
        StoreDescription {
            kind: "counting",
            location: "memory".into(),
        }
    }
    fn append_async(&self, ev: AuditEvent) -> Result<AuditAck, AuditError> {
        AuditStore::append_async(&self.inner, ev)
    }
    fn submit(&self, ev: AuditEvent) -> Result<(), AuditError> {
        self.inner.submit(ev)
    }
    fn get(&self, id: &str) -> Result<Option<StoredEvent>, AuditError> {
        self.read();
        self.inner.get(id)
    }
    fn search(&self, q: &SearchQuery) -> Result<SearchPage, AuditError> {
        self.read();
        self.inner.search(q)
    }
    fn verify(&self, since: Option<SystemTime>) -> Result<VerifyReport, AuditError> {
        self.read();
        self.inner.verify(since)
    }
    fn export(
        &self,
        from: Option<SystemTime>,
        to: Option<SystemTime>,
        out: &mut dyn Write,
    ) -> Result<u64, AuditError> {
        self.read();
        self.inner.export(from, to, out)
    }
    fn purge_before(&self, cutoff: SystemTime) -> Result<PurgeReport, AuditError> {
        self.inner.purge_before(cutoff)
    }
    fn stats(&self) -> AuditStats {
        self.inner.stats()
    }
}

fn settings() -> AuthSettings {
    AuthSettings {
        cluster_name: Some("unit.test".into()),
        second_factor: "otp".into(),
        max_failed_attempts: 5,
        lockout: Duration::from_secs(1800),
        attempts_per_ip_per_minute: 1000,
        invite_ttl: Duration::from_secs(3600),
        web_addr: "proxy.unit.test:3080".into(),
        session_recording: "node".into(),
        proxy_public_names: vec![],
        webauthn: Default::default(),
    }
}

/// Auth and its API over a [`CountingStore`], with one event of ours appended through the
/// trait; built off the runtime, since opening Auth waits for its events to be durable.
async fn api(dir: &std::path::Path) -> (AuthApi, Arc<CountingStore>) {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || open_api(&dir))
        .await
        .unwrap()
}

fn open_api(dir: &std::path::Path) -> (AuthApi, Arc<CountingStore>) {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(
        UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    ));
    let metrics = Arc::new(Metrics::default());
    let store = Arc::new(CountingStore {
        inner: AuditLog::open(&dir.join("audit.db"), clock.clone(), Default::default()).unwrap(),
        reads: AtomicUsize::new(0),
    });
    let sink = Arc::new(AuditLogSink::new(store.clone(), metrics.clone()));
    let backend = Arc::new(MemoryBackend::new(clock.clone()));
    let auth = AuthServer::open(
        ResourceStore::new(backend),
        clock,
        settings(),
        sink,
        metrics.clone(),
    )
    .unwrap();
    let ours = hop_storage::AuditEvent::new("user.create", "T1002I").with_id("ours-1");
    let at: EventPosition = AuditStore::append(store.as_ref(), ours).unwrap();
    assert!(!at.duplicate);
    let api = AuthApi::new(Arc::new(auth), metrics, None).with_audit_log(store.clone());
    (api, store)
}

fn admin<T>(msg: T) -> Request<T> {
    let mut req = Request::new(msg);
    req.extensions_mut().insert(Caller::LocalAdmin);
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_verify_and_export_go_through_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let (api, store) = api(dir.path()).await;

    let page = api
        .search_events(admin(SearchEventsRequest {
            oldest_first: true,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(
        page.events_json.iter().any(|e| e.contains("ours-1")),
        "{:?}",
        page.events_json
    );

    let report = api
        .verify_audit(admin(VerifyAuditRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(report.intact, "{}", report.first_break);
    assert_eq!(report.events_checked, page.events_json.len() as u64);

    let mut stream = api
        .export_events(admin(ExportEventsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let mut exported = Vec::new();
    while let Some(chunk) = stream.next().await {
        exported.extend(chunk.unwrap().data);
    }
    let text = String::from_utf8(exported).unwrap();
    assert_eq!(text.lines().count(), page.events_json.len());
    assert!(text.contains("ours-1"), "{text}");

    assert_eq!(store.reads.load(Ordering::Relaxed), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_without_a_store_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (api, _) = api(dir.path()).await;
    let api = AuthApi {
        audit_log: None,
        ..api
    };
    let err = api
        .verify_audit(admin(VerifyAuditRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
}

/// `hop admin backup`'s export: the local admin gets one snapshot as a plain backup file with
/// the CA keys and without soft state, on the record; a caller without the admin socket or the
/// `backup` `read` rule is refused, on the record too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_is_for_admins_and_always_audited() {
    let dir = tempfile::tempdir().unwrap();
    let (api, store) = api(dir.path()).await;
    let mut stream = api
        .export_backup(admin(ExportBackupRequest {}))
        .await
        .unwrap()
        .into_inner();
    let mut file = Vec::new();
    while let Some(chunk) = stream.next().await {
        file.extend(chunk.unwrap().data);
    }
    let backup = hop_storage::backup::decode(&file, None).unwrap();
    let keys: Vec<&str> = backup
        .snapshot
        .items
        .iter()
        .map(|i| i.key.as_str())
        .collect();
    assert!(
        keys.iter().any(|k| k.starts_with("/resources/ca_keys/")),
        "{keys:?}"
    );
    assert!(
        keys.iter()
            .all(|k| hop_storage::backup::is_cluster_state(k))
    );

    let mut anonymous = Request::new(ExportBackupRequest {});
    anonymous
        .extensions_mut()
        .insert(Caller::Anonymous { remote: None });
    let err = api.export_backup(anonymous).await.err().unwrap();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");

    let events = tokio::task::spawn_blocking(move || {
        store
            .search(&SearchQuery {
                event_types: vec!["cluster.backup".into()],
                ..SearchQuery::default()
            })
            .unwrap()
    })
    .await
    .unwrap();
    let outcomes: Vec<(bool, String)> = events
        .events
        .iter()
        .map(|e| (e.event.success, e.event.user.clone()))
        .collect();
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    assert!(outcomes.contains(&(true, "admin (local socket)".into())));
    assert!(outcomes.contains(&(false, "anonymous".into())));
}
