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
mod render;

pub use render::{counter, gauge};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use hop_platform::clock;

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
    /// Whether the last read of the access data reached the backend (false while it cannot be
    /// reached: admission then decides from the snapshot it kept, within `locking_mode`'s bound).
    pub backend_reachable: AtomicBool,
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
    /// Agents' data connections (ALPN `hop-tunnel-data`) by handshake: full, or TLS 1.3
    /// resumption from a ticket of an earlier one. Counted before admission, so refused ones too.
    pub agent_data_handshakes_full: Counter,
    pub agent_data_handshakes_resumed: Counter,
    /// Proxy peering: sessions this proxy sent to the proxy that holds their agent's tunnel,
    /// and sessions it took from a peer for an agent tunnelled here.
    pub peer_sessions_sent: Counter,
    pub peer_sessions_taken: Counter,
    pub db_sessions: Counter,
    pub db_sessions_active: Gauge,
    pub db_sessions_refused: Counter,
    pub db_cancels: Counter,
    /// The handshake slots' gauge, rendered beside the other handshake families.
    handshake_slots: std::sync::OnceLock<std::sync::Arc<dyn Report>>,
    /// Parts that render their own figures after the process-wide ones, in the order they were
    /// added (the data plane, the tunnel registry).
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
            started: clock::now(),
            storage_ready: AtomicBool::new(false),
            backend_reachable: AtomicBool::new(true),
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
            agent_data_handshakes_full: Counter::default(),
            agent_data_handshakes_resumed: Counter::default(),
            peer_sessions_sent: Counter::default(),
            peer_sessions_taken: Counter::default(),
            db_sessions: Counter::default(),
            db_sessions_active: Gauge::default(),
            db_sessions_refused: Counter::default(),
            db_cancels: Counter::default(),
            handshake_slots: std::sync::OnceLock::new(),
            reports: std::sync::RwLock::new(Vec::new()),
        }
    }
}

impl Metrics {
    /// Ready means: storage open and the CAs loaded (and the proxy listening, where it runs),
    /// and, in strict locking mode, access data no older than admission's bound.
    pub fn is_ready(&self, proxy_expected: bool) -> bool {
        self.storage_ready.load(Ordering::Acquire)
            && self.backend_reachable.load(Ordering::Acquire)
            && self.ca_ready.load(Ordering::Acquire)
            && (!proxy_expected || self.proxy_ready.load(Ordering::Acquire))
            && !(self.admission_strict.load(Ordering::Acquire)
                && self
                    .admission_age()
                    .is_some_and(|a| a > hop_admission::STALE_AFTER))
    }

    /// How old the admission snapshot is now, once there is one.
    pub fn admission_age(&self) -> Option<Duration> {
        self.admission_age_at(clock::wall())
    }

    /// How old the admission snapshot is at `wall`, once there is one.
    fn admission_age_at(&self, wall: SystemTime) -> Option<Duration> {
        let taken = self.admission_taken_at.load(Ordering::Acquire);
        (taken != 0).then(|| {
            let now = wall
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            Duration::from_secs(now.saturating_sub(taken))
        })
    }
}

impl Metrics {
    /// Sets the gauge of TLS handshakes in progress (the proxy's handshake slots), which
    /// [`Metrics::render`] writes right after `hop_proxy_handshakes_shed_total`. Set once.
    pub fn set_handshake_slots(&self, report: std::sync::Arc<dyn Report>) {
        let _ = self.handshake_slots.set(report);
    }

    /// Adds a part's own figures to what [`Metrics::render`] writes.
    pub fn add_report(&self, report: std::sync::Arc<dyn Report>) {
        self.reports
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(report);
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
        m.backend_reachable.store(false, Ordering::Release);
        assert!(
            !m.is_ready(false),
            "not ready while the backend cannot be reached"
        );
    }
}
