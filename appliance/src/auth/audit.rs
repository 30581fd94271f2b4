//! Audit events emitted by the Auth service, and the one interface they go through.
//!
//! This module owns the event kinds and codes the Auth service emits, their shape (`event`,
//! `code`, `time`, `id`, `cluster`, `user`, `addr.remote`, `success`/`error`, plus the kind's own
//! fields) and the [`AuditSink`] seam. [`AuditLogSink`] writes into the durable, hash-chained
//! audit log of `hop-storage` (`<data_dir>/audit.db`). Secrets never enter events.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::metrics::Metrics;

/// The kinds of event the Auth service emits, each with its stable code per outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    UserLogin,
    UserSignup,
    UserCreate,
    UserUpdate,
    UserDelete,
    UserLocked,
    UserUnlocked,
    ResourceCreate,
    ResourceDelete,
    JoinTokenCreate,
    AgentJoin,
    AppSessionStart,
    AppSessionEnd,
}

impl EventKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::UserLogin => "user.login",
            Self::UserSignup => "user.signup",
            Self::UserCreate => "user.create",
            Self::UserUpdate => "user.update",
            Self::UserDelete => "user.delete",
            Self::UserLocked => "user.locked",
            Self::UserUnlocked => "user.unlocked",
            Self::ResourceCreate => "resource.create",
            Self::ResourceDelete => "resource.delete",
            Self::JoinTokenCreate => "join_token.create",
            Self::AgentJoin => "agent.join",
            Self::AppSessionStart => "app.session.start",
            Self::AppSessionEnd => "app.session.end",
        }
    }

    /// Stable short code: `H` + number + `I` (success) or `W` (failure).
    pub fn code(self, success: bool) -> String {
        let n = match self {
            Self::UserLogin => 1000,
            Self::UserSignup => 1001,
            Self::UserCreate => 1002,
            Self::UserUpdate => 1003,
            Self::UserDelete => 1004,
            Self::UserLocked => 1005,
            Self::UserUnlocked => 1006,
            Self::ResourceCreate => 2000,
            Self::ResourceDelete => 2001,
            Self::JoinTokenCreate => 3000,
            Self::AgentJoin => 3001,
            Self::AppSessionStart => 4000,
            Self::AppSessionEnd => 4001,
        };
        format!("H{n}{}", if success { 'I' } else { 'W' })
    }
}

/// One audit event.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEvent {
    pub event: &'static str,
    pub code: String,
    /// UTC, microseconds since the Unix epoch.
    pub time: u64,
    pub id: String,
    pub cluster: String,
    pub user: String,
    #[serde(rename = "addr.remote", skip_serializing_if = "Option::is_none")]
    pub addr_remote: Option<String>,
    pub success: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The kind's own fields.
    #[serde(flatten)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

impl AuditEvent {
    pub fn new(kind: EventKind, cluster: &str, user: &str, now: SystemTime) -> Self {
        Self {
            event: kind.name(),
            code: kind.code(true),
            time: now
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_micros() as u64)
                .unwrap_or(0),
            id: uuid::Uuid::new_v4().to_string(),
            cluster: cluster.to_string(),
            user: user.to_string(),
            addr_remote: None,
            success: true,
            error: None,
            fields: serde_json::Map::new(),
        }
    }

    pub fn failed(mut self, kind: EventKind, error: impl Into<String>) -> Self {
        self.success = false;
        self.code = kind.code(false);
        self.error = Some(error.into());
        self
    }

    pub fn remote(mut self, addr: Option<SocketAddr>) -> Self {
        self.addr_remote = addr.map(|a| a.to_string());
        self
    }

    pub fn field(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.fields.insert(key.to_string(), value.into());
        self
    }
}

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
}

impl AuditEvent {
    /// The same event in the durable log's schema.
    pub fn to_stored(&self) -> hop_storage::AuditEvent {
        let mut e = hop_storage::AuditEvent::new(self.event, self.code.clone())
            .with_id(self.id.clone())
            .with_cluster(self.cluster.clone())
            .with_user(self.user.clone());
        if let Ok(t) = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.time) * 1000)
        {
            e = e.with_time(t);
        }
        if let Some(a) = &self.addr_remote {
            e = e.with_addr_remote(a.clone());
        }
        if let Some(err) = &self.error {
            e = e.with_error(err.clone());
        }
        for (k, v) in &self.fields {
            e = match (k.as_str(), v.as_str()) {
                ("session_id", Some(sid)) => e.with_session_id(sid),
                ("login", Some(l)) => e.with_login(l),
                ("server", Some(sv)) => e.with_server(sv),
                _ => e.with_field(k.clone(), v.clone()),
            };
        }
        e
    }
}

/// The production sink: the durable, hash-chained audit log of `hop-storage`.
#[derive(Debug)]
pub struct AuditLogSink {
    log: Arc<hop_storage::AuditLog>,
    metrics: Arc<Metrics>,
}

impl AuditLogSink {
    pub fn new(log: Arc<hop_storage::AuditLog>, metrics: Arc<Metrics>) -> Self {
        Self { log, metrics }
    }

    fn outcome(&self, event: &AuditEvent, r: Result<(), String>) {
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
    fn emit(&self, event: AuditEvent) {
        let r = self
            .log
            .submit(event.to_stored())
            .map_err(|e| e.to_string());
        self.outcome(&event, r);
    }

    fn emit_durable(&self, event: AuditEvent) {
        let r = self
            .log
            .append(event.to_stored())
            .map(drop)
            .map_err(|e| e.to_string());
        self.outcome(&event, r);
    }
}
