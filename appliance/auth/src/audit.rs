//! Where audit events go: the [`AuditSink`] seam every Auth operation emits through, and
//! [`AuditLogSink`], which writes into any durable, hash-chained [`AuditStore`] of `hop-storage`
//! (the local log, `<data_dir>/audit.db` unless `hop.storage.audit_events_uri` moves it). The
//! events' vocabulary is `hop_api::audit`'s.

use std::sync::Arc;

pub use hop_api::audit::{AuditEvent, EventKind};

use hop_metrics::Metrics;
use hop_storage::{AuditError, AuditStore};

/// Where events go.
pub trait AuditSink: Send + Sync + std::fmt::Debug {
    /// Queues an event without waiting (safe on async threads). A full queue is counted and
    /// logged, never silent.
    fn emit(&self, event: AuditEvent);
    /// Records an event and returns once it is durable. Call only from blocking contexts (the
    /// Auth service's operations run on the blocking pool).
    fn emit_durable(&self, event: AuditEvent) {
        self.emit(event);
    }
    /// Records every event and returns once all are durable, or the first failure: an agent
    /// forgets its copy only after this succeeds. Submitting them together lets the log commit
    /// them in one transaction.
    fn append_all_durable(&self, events: Vec<AuditEvent>) -> Result<(), AuditError> {
        for e in events {
            self.emit_durable(e);
        }
        Ok(())
    }
}

/// The same event in the durable log's schema.
pub fn to_stored(event: &AuditEvent) -> hop_storage::AuditEvent {
    let mut e = hop_storage::AuditEvent::new(event.event, event.code.clone())
        .with_id(event.id.clone())
        .with_cluster(event.cluster.clone())
        .with_user(event.user.clone());
    if let Ok(t) = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(event.time) * 1000) {
        e = e.with_time(t);
    }
    if let Some(a) = &event.addr_remote {
        e = e.with_addr_remote(a.clone());
    }
    if let Some(err) = &event.error {
        e = e.with_error(err.clone());
    }
    for (k, v) in &event.fields {
        e = match (k.as_str(), v.as_str()) {
            ("session_id", Some(sid)) => e.with_session_id(sid),
            ("login", Some(l)) => e.with_login(l),
            ("server", Some(sv)) => e.with_server(sv),
            _ => e.with_field(k.clone(), v.clone()),
        };
    }
    e
}

/// The production sink: whichever durable, hash-chained audit store the cluster keeps.
#[derive(Debug)]
pub struct AuditLogSink {
    log: Arc<dyn AuditStore>,
    metrics: Arc<Metrics>,
}

impl AuditLogSink {
    pub fn new(log: Arc<dyn AuditStore>, metrics: Arc<Metrics>) -> Self {
        Self { log, metrics }
    }

    fn outcome(&self, event: &AuditEvent, r: Result<(), &AuditError>) {
        match r {
            Ok(()) => self.metrics.audit_events.inc(),
            Err(e) => {
                self.metrics.audit_failures.inc();
                tracing::error!(event = event.event, error = %e, "audit event not recorded");
            }
        }
    }
}

impl AuditSink for AuditLogSink {
    fn append_all_durable(&self, events: Vec<AuditEvent>) -> Result<(), AuditError> {
        let mut pending = Vec::with_capacity(events.len());
        let mut first_error = None;
        for ev in &events {
            match self.log.append_async(to_stored(ev)) {
                Ok(p) => pending.push((ev, p)),
                Err(e) => {
                    self.outcome(ev, Err(&e));
                    first_error.get_or_insert(e);
                }
            }
        }
        for (ev, p) in pending {
            match p.wait() {
                Ok(_) => self.outcome(ev, Ok(())),
                Err(e) => {
                    self.outcome(ev, Err(&e));
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    fn emit(&self, event: AuditEvent) {
        let r = self.log.submit(to_stored(&event));
        self.outcome(&event, r.as_ref().map(drop));
    }

    fn emit_durable(&self, event: AuditEvent) {
        let r = self.log.append(to_stored(&event));
        self.outcome(&event, r.as_ref().map(drop));
    }
}
