//! Audit events emitted by the Auth service, and the one interface they go through.
//!
//! This module owns the event shape (`event`, `code`, `time`, `id`, `cluster`, `user`,
//! `addr.remote`, `success`/`error`, plus the kind's own fields) and the [`AuditSink`] seam. The
//! sink here writes each event into the backend as one durable record under `/audit/events/`,
//! keyed by time so that a range read returns events in order; the full audit log (group commit,
//! hash chain, search) replaces this sink without changing emitters. Secrets never enter events.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use hop_storage::{Backend, PutOptions};
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

/// Where events go. Implementations must not block for long: login latency includes this call.
pub trait AuditSink: Send + Sync + std::fmt::Debug {
    fn emit(&self, event: AuditEvent);
}

/// Writes each event as one durable backend record.
#[derive(Debug)]
pub struct BackendAuditSink {
    backend: Arc<dyn Backend>,
    metrics: Arc<Metrics>,
}

pub const AUDIT_PREFIX: &str = "/audit/events/";

impl BackendAuditSink {
    pub fn new(backend: Arc<dyn Backend>, metrics: Arc<Metrics>) -> Self {
        Self { backend, metrics }
    }
}

impl AuditSink for BackendAuditSink {
    fn emit(&self, event: AuditEvent) {
        let key = format!("{AUDIT_PREFIX}{:020}/{}", event.time, event.id);
        let written = serde_json::to_vec(&event)
            .map_err(|e| e.to_string())
            .and_then(|v| {
                self.backend
                    .put(&key, &v, PutOptions::default())
                    .map_err(|e| e.to_string())
            });
        match written {
            Ok(_) => {
                self.metrics.audit_events.inc();
                tracing::info!(target: "audit", event = event.event, code = %event.code, user = %event.user, success = event.success, "audit");
            }
            Err(e) => {
                self.metrics.audit_failures.inc();
                tracing::error!(event = event.event, error = %e, "could not write audit event");
            }
        }
    }
}

/// Reads events back, oldest first.
#[cfg(test)]
pub fn read_events(backend: &dyn Backend, limit: usize) -> Vec<serde_json::Value> {
    backend
        .range(AUDIT_PREFIX, &hop_storage::prefix_end(AUDIT_PREFIX), limit)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|i| serde_json::from_slice(&i.value).ok())
        .collect()
}
