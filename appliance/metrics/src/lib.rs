//! Process-wide counters and gauges, rendered in the Prometheus text format.
//!
//! This crate owns the process-wide metric names and their help text. Counters are plain atomics
//! so that hot paths pay one relaxed add and never take a lock; the registry is fixed at compile
//! time (a struct of fields), which keeps names from drifting. Parts that keep their own figures
//! (the data plane's per-worker counters, the handshake slots, the tunnel registry) report into it
//! through [`Report`]; this crate is a leaf and never imports them. It never does IO: `render`
//! returns text. [`diag`] serves it over HTTP.

#![forbid(unsafe_code)]

pub mod diag;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// One monotonic counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Agents' audit events refused by Auth, one counter per reason.
#[derive(Debug, Default)]
pub struct AgentEventRefusals {
    malformed: Counter,
    kind: Counter,
    session: Counter,
    time: Counter,
}

impl AgentEventRefusals {
    /// The reasons, as the metric's `reason` label names them.
    pub const REASONS: [&'static str; 4] = ["malformed", "kind", "session", "time"];

    /// Counts one refusal for `reason` (one of [`Self::REASONS`]; others count as malformed).
    pub fn count(&self, reason: &str) {
        match reason {
            "kind" => self.kind.inc(),
            "session" => self.session.inc(),
            "time" => self.time.inc(),
            _ => self.malformed.inc(),
        }
    }

    pub fn get(&self, reason: &str) -> u64 {
        match reason {
            "kind" => self.kind.get(),
            "session" => self.session.get(),
            "time" => self.time.get(),
            _ => self.malformed.get(),
        }
    }
}

/// Every metric the process exports.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    pub storage_ready: AtomicBool,
    pub ca_ready: AtomicBool,
    pub proxy_ready: AtomicBool,
    /// When the admission snapshot this process decides from was taken (Unix seconds; 0: none).
    pub admission_taken_at: std::sync::atomic::AtomicU64,
    /// Whether `cluster_auth_preference.locking_mode` is `strict`.
    pub admission_strict: AtomicBool,
    pub logins_ok: Counter,
    pub logins_failed: Counter,
    pub logins_locked: Counter,
    pub logins_rate_limited: Counter,
    pub signups: Counter,
    pub certificates_issued: Counter,
    pub grpc_requests: Counter,
    pub admin_denied: Counter,
    pub connections_accepted: Counter,
    pub connections_active: Gauge,
    pub handshakes_shed: Counter,
    pub tls_handshakes_ok: Counter,
    pub tls_handshakes_failed: Counter,
    pub tls_handshakes_timed_out: Counter,
    pub audit_events: Counter,
    pub audit_failures: Counter,
    /// Agents' audit events Auth refused, by reason.
    pub agent_events_refused: AgentEventRefusals,
    /// Refusals of unauthenticated callers not written to the audit log (rate limit).
    pub audit_refusals_dropped: Counter,
    pub app_sessions: Counter,
    pub app_sessions_active: Gauge,
    /// Sessions relayed by a data-plane worker (the fast path) or on the control plane.
    pub relay_fast_sessions: Counter,
    pub relay_tokio_sessions: Counter,
    pub db_sessions: Counter,
    pub db_sessions_active: Gauge,
    pub db_sessions_refused: Counter,
    pub db_cancels: Counter,
    /// Parts that render their own figures, in the order they were added (the data plane, the
    /// handshake slots, the tunnel registry).
    reports: std::sync::RwLock<Vec<std::sync::Arc<dyn Report>>>,
}

/// A part of the process that keeps its own figures and renders them (Prometheus text) after the
/// process-wide ones.
pub trait Report: Send + Sync + std::fmt::Debug {
    fn render(&self, out: &mut String);
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            storage_ready: AtomicBool::new(false),
            ca_ready: AtomicBool::new(false),
            proxy_ready: AtomicBool::new(false),
            admission_taken_at: std::sync::atomic::AtomicU64::new(0),
            admission_strict: AtomicBool::new(false),
            logins_ok: Counter::default(),
            logins_failed: Counter::default(),
            logins_locked: Counter::default(),
            logins_rate_limited: Counter::default(),
            signups: Counter::default(),
            certificates_issued: Counter::default(),
            grpc_requests: Counter::default(),
            admin_denied: Counter::default(),
            connections_accepted: Counter::default(),
            connections_active: Gauge::default(),
            handshakes_shed: Counter::default(),
            tls_handshakes_ok: Counter::default(),
            tls_handshakes_failed: Counter::default(),
            tls_handshakes_timed_out: Counter::default(),
            audit_events: Counter::default(),
            audit_failures: Counter::default(),
            agent_events_refused: AgentEventRefusals::default(),
            audit_refusals_dropped: Counter::default(),
            app_sessions: Counter::default(),
            app_sessions_active: Gauge::default(),
            relay_fast_sessions: Counter::default(),
            relay_tokio_sessions: Counter::default(),
            db_sessions: Counter::default(),
            db_sessions_active: Gauge::default(),
            db_sessions_refused: Counter::default(),
            db_cancels: Counter::default(),
            reports: std::sync::RwLock::new(Vec::new()),
        }
    }
}

impl Metrics {
    /// Ready means: storage open and the CAs loaded (and the proxy listening, where it runs),
    /// and, in strict locking mode, access data no older than admission's bound.
    pub fn is_ready(&self, proxy_expected: bool) -> bool {
        self.storage_ready.load(Ordering::Acquire)
            && self.ca_ready.load(Ordering::Acquire)
            && (!proxy_expected || self.proxy_ready.load(Ordering::Acquire))
            && !(self.admission_strict.load(Ordering::Acquire)
                && self
                    .admission_age()
                    .is_some_and(|a| a > hop_admission::STALE_AFTER))
    }

    /// How old the admission snapshot is now, once there is one.
    pub fn admission_age(&self) -> Option<std::time::Duration> {
        let taken = self.admission_taken_at.load(Ordering::Acquire);
        (taken != 0).then(|| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            std::time::Duration::from_secs(now.saturating_sub(taken))
        })
    }

    /// The Prometheus text exposition (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let flag = |b: &AtomicBool| u64::from(b.load(Ordering::Acquire));
        gauge(
            &mut out,
            "hop_build_info",
            "Build information.",
            &[(format!("version=\"{}\"", env!("CARGO_PKG_VERSION")), 1)],
        );
        gauge(
            &mut out,
            "hop_uptime_seconds",
            "Seconds since the process started.",
            &[(String::new(), self.started.elapsed().as_secs())],
        );
        gauge(
            &mut out,
            "hop_storage_ready",
            "1 once the backend is open.",
            &[(String::new(), flag(&self.storage_ready))],
        );
        gauge(
            &mut out,
            "hop_ca_ready",
            "1 once the certificate authorities are loaded.",
            &[(String::new(), flag(&self.ca_ready))],
        );
        if let Some(age) = self.admission_age() {
            gauge(
                &mut out,
                "hop_admission_snapshot_age_seconds",
                "Age of the access data (roles, locks, users) admission decides from.",
                &[(String::new(), age.as_secs())],
            );
        }
        counter(
            &mut out,
            "hop_logins_total",
            "Password logins by result.",
            &[
                ("result=\"success\"".into(), self.logins_ok.get()),
                ("result=\"failure\"".into(), self.logins_failed.get()),
                ("result=\"locked\"".into(), self.logins_locked.get()),
                (
                    "result=\"rate_limited\"".into(),
                    self.logins_rate_limited.get(),
                ),
            ],
        );
        counter(
            &mut out,
            "hop_signups_total",
            "Completed invitations.",
            &[(String::new(), self.signups.get())],
        );
        counter(
            &mut out,
            "hop_certificates_issued_total",
            "User and host certificates issued.",
            &[(String::new(), self.certificates_issued.get())],
        );
        counter(
            &mut out,
            "hop_grpc_requests_total",
            "Auth API requests.",
            &[(String::new(), self.grpc_requests.get())],
        );
        counter(
            &mut out,
            "hop_admin_denied_total",
            "Admin API calls refused by RBAC.",
            &[(String::new(), self.admin_denied.get())],
        );
        counter(
            &mut out,
            "hop_proxy_connections_accepted_total",
            "Connections the data plane handed to the control plane's routes (every accepted connection: hop_dataplane_connections_accepted_total).",
            &[(String::new(), self.connections_accepted.get())],
        );
        gauge(
            &mut out,
            "hop_proxy_connections_active",
            "Connections open on the proxy port.",
            &[(String::new(), self.connections_active.get())],
        );
        counter(
            &mut out,
            "hop_proxy_handshakes_shed_total",
            "TLS connections closed at once because max_concurrent_handshakes was reached.",
            &[(String::new(), self.handshakes_shed.get())],
        );
        counter(
            &mut out,
            "hop_proxy_tls_handshakes_total",
            "TLS handshakes on the proxy port by result.",
            &[
                ("result=\"success\"".into(), self.tls_handshakes_ok.get()),
                (
                    "result=\"failure\"".into(),
                    self.tls_handshakes_failed.get(),
                ),
                (
                    "result=\"timeout\"".into(),
                    self.tls_handshakes_timed_out.get(),
                ),
            ],
        );
        counter(
            &mut out,
            "hop_audit_events_total",
            "Audit events written.",
            &[(String::new(), self.audit_events.get())],
        );
        counter(
            &mut out,
            "hop_audit_failures_total",
            "Audit events that could not be written.",
            &[(String::new(), self.audit_failures.get())],
        );
        counter(
            &mut out,
            "hop_auth_agent_events_refused_total",
            "Agents' audit events Auth refused (not written), by reason.",
            &AgentEventRefusals::REASONS
                .map(|r| (format!("reason=\"{r}\""), self.agent_events_refused.get(r))),
        );
        counter(
            &mut out,
            "hop_audit_refusals_dropped_total",
            "Refusals of unauthenticated callers not written to the audit log (rate limit).",
            &[(String::new(), self.audit_refusals_dropped.get())],
        );
        counter(
            &mut out,
            "hop_app_sessions_total",
            "TCP application sessions started.",
            &[(String::new(), self.app_sessions.get())],
        );
        gauge(
            &mut out,
            "hop_app_sessions_active",
            "TCP application sessions open.",
            &[(String::new(), self.app_sessions_active.get())],
        );
        counter(
            &mut out,
            "hop_relay_sessions_total",
            "Relayed sessions by where their bytes moved: path=\"worker\" (the data plane's fast path, records re-sealed in place) or path=\"control_plane\" (the tokio relay).",
            &[
                (
                    "path=\"worker\"".to_string(),
                    self.relay_fast_sessions.get(),
                ),
                (
                    "path=\"control_plane\"".to_string(),
                    self.relay_tokio_sessions.get(),
                ),
            ],
        );
        counter(
            &mut out,
            "hop_db_sessions_total",
            "Database sessions started.",
            &[(String::new(), self.db_sessions.get())],
        );
        gauge(
            &mut out,
            "hop_db_sessions_active",
            "Database sessions open.",
            &[(String::new(), self.db_sessions_active.get())],
        );
        counter(
            &mut out,
            "hop_db_sessions_refused_total",
            "Database connections refused before reaching a database (no certificate, RBAC, no agent).",
            &[(String::new(), self.db_sessions_refused.get())],
        );
        counter(
            &mut out,
            "hop_db_cancels_total",
            "Query cancel requests routed to a database.",
            &[(String::new(), self.db_cancels.get())],
        );
        for r in self
            .reports
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            r.render(&mut out);
        }
        out
    }
}

impl Metrics {
    /// Adds a part's own figures to what [`Metrics::render`] writes.
    pub fn add_report(&self, report: std::sync::Arc<dyn Report>) {
        self.reports
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(report);
    }
}

/// Writes one counter family (`# HELP`, `# TYPE`, samples) for a [`Report`].
pub fn counter(out: &mut String, name: &str, help: &str, samples: &[(String, u64)]) {
    family(out, name, help, "counter", samples);
}

/// Writes one gauge family for a [`Report`].
pub fn gauge(out: &mut String, name: &str, help: &str, samples: &[(String, u64)]) {
    family(out, name, help, "gauge", samples);
}

fn family(out: &mut String, name: &str, help: &str, kind: &str, samples: &[(String, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, v) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {v}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.logins_failed.inc();
        let text = m.render();
        assert!(text.contains("# TYPE hop_logins_total counter"));
        assert!(text.contains("hop_logins_total{result=\"failure\"} 1"));
        assert!(!m.is_ready(false));
        m.storage_ready.store(true, Ordering::Release);
        m.ca_ready.store(true, Ordering::Release);
        assert!(m.is_ready(false));
        assert!(!m.is_ready(true));
    }
}
