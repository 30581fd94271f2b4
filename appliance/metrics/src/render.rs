//! The Prometheus text exposition of [`Metrics`], one function per group of families (the
//! process and its readiness, logins, the proxy port, audit, application sessions, databases),
//! then each [`Report`]'s own figures. It owns the order, names and help text of the families it
//! writes; it reads the clocks only through the `now`/`wall` it is handed, and never does IO.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime};

use hop_platform::clock;

use crate::{AgentEventRefusals, Metrics};

impl Metrics {
    /// The Prometheus text exposition (version 0.0.4).
    pub fn render(&self) -> String {
        self.render_at(clock::now(), clock::wall())
    }

    /// The exposition as of `now` (uptime) and `wall` (the admission snapshot's age).
    fn render_at(&self, now: Instant, wall: SystemTime) -> String {
        let mut out = String::with_capacity(4096);
        self.render_process(&mut out, now, wall);
        self.render_logins(&mut out);
        self.render_proxy(&mut out);
        self.render_audit(&mut out);
        self.render_app_sessions(&mut out);
        self.render_databases(&mut out);
        self.render_reports(&mut out);
        out
    }

    /// Build, uptime and readiness: what `/readyz` is made of.
    fn render_process(&self, out: &mut String, now: Instant, wall: SystemTime) {
        let flag = |b: &AtomicBool| u64::from(b.load(Ordering::Acquire));
        gauge(
            out,
            "hop_build_info",
            "Build information.",
            &[(format!("version=\"{}\"", env!("CARGO_PKG_VERSION")), 1)],
        );
        gauge(
            out,
            "hop_uptime_seconds",
            "Seconds since the process started.",
            &[(
                String::new(),
                now.saturating_duration_since(self.started).as_secs(),
            )],
        );
        gauge(
            out,
            "hop_storage_ready",
            "1 once the backend is open.",
            &[(String::new(), flag(&self.storage_ready))],
        );
        gauge(
            out,
            "hop_backend_reachable",
            "1 while the backend answers admission's reads (0: deciding from the kept snapshot).",
            &[(String::new(), flag(&self.backend_reachable))],
        );
        gauge(
            out,
            "hop_ca_ready",
            "1 once the certificate authorities are loaded.",
            &[(String::new(), flag(&self.ca_ready))],
        );
        if let Some(age) = self.admission_age_at(wall) {
            gauge(
                out,
                "hop_admission_snapshot_age_seconds",
                "Age of the access data (roles, locks, users) admission decides from.",
                &[(String::new(), age.as_secs())],
            );
        }
    }

    /// Logins, sign-ups, certificates and the Auth API.
    fn render_logins(&self, out: &mut String) {
        counter(
            out,
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
            out,
            "hop_signups_total",
            "Completed invitations.",
            &[(String::new(), self.signups.get())],
        );
        counter(
            out,
            "hop_certificates_issued_total",
            "User and host certificates issued.",
            &[(String::new(), self.certificates_issued.get())],
        );
        counter(
            out,
            "hop_grpc_requests_total",
            "Auth API requests.",
            &[(String::new(), self.grpc_requests.get())],
        );
        counter(
            out,
            "hop_admin_denied_total",
            "Admin API calls refused by RBAC.",
            &[(String::new(), self.admin_denied.get())],
        );
    }

    /// The proxy port: connections and TLS handshakes.
    fn render_proxy(&self, out: &mut String) {
        counter(
            out,
            "hop_proxy_connections_accepted_total",
            "Connections the data plane handed to the control plane's routes (every accepted connection: hop_dataplane_connections_accepted_total).",
            &[(String::new(), self.connections_accepted.get())],
        );
        gauge(
            out,
            "hop_proxy_connections_active",
            "Connections open on the proxy port.",
            &[(String::new(), self.connections_active.get())],
        );
        counter(
            out,
            "hop_proxy_handshakes_shed_total",
            "TLS connections closed at once because max_concurrent_handshakes was reached.",
            &[(String::new(), self.handshakes_shed.get())],
        );
        if let Some(slots) = self.handshake_slots.get() {
            slots.render(out);
        }
        counter(
            out,
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
    }

    /// The audit log: events written, failures, refusals.
    fn render_audit(&self, out: &mut String) {
        counter(
            out,
            "hop_audit_events_total",
            "Audit events written.",
            &[(String::new(), self.audit_events.get())],
        );
        counter(
            out,
            "hop_audit_failures_total",
            "Audit events that could not be written.",
            &[(String::new(), self.audit_failures.get())],
        );
        counter(
            out,
            "hop_auth_agent_events_refused_total",
            "Agents' audit events Auth refused (not written), by reason.",
            &AgentEventRefusals::REASONS
                .map(|r| (format!("reason=\"{r}\""), self.agent_events_refused.get(r))),
        );
        counter(
            out,
            "hop_audit_refusals_dropped_total",
            "Refusals of unauthenticated callers not written to the audit log (rate limit).",
            &[(String::new(), self.audit_refusals_dropped.get())],
        );
    }

    /// TCP application sessions and where relayed bytes moved.
    fn render_app_sessions(&self, out: &mut String) {
        counter(
            out,
            "hop_app_sessions_total",
            "TCP application sessions started.",
            &[(String::new(), self.app_sessions.get())],
        );
        gauge(
            out,
            "hop_app_sessions_active",
            "TCP application sessions open.",
            &[(String::new(), self.app_sessions_active.get())],
        );
        counter(
            out,
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
            out,
            "hop_agent_data_handshakes_total",
            "Agents' data connections by TLS handshake: kind=\"full\" or kind=\"resumed\" (TLS 1.3 resumption, no certificates exchanged).",
            &[
                (
                    "kind=\"full\"".to_string(),
                    self.agent_data_handshakes_full.get(),
                ),
                (
                    "kind=\"resumed\"".to_string(),
                    self.agent_data_handshakes_resumed.get(),
                ),
            ],
        );
        counter(
            out,
            "hop_proxy_peer_sessions_total",
            "Proxy peering: sessions sent to the proxy holding the agent's tunnel (side=\"sent\") and taken from a peer for an agent tunnelled here (side=\"taken\").",
            &[
                ("side=\"sent\"".to_string(), self.peer_sessions_sent.get()),
                ("side=\"taken\"".to_string(), self.peer_sessions_taken.get()),
            ],
        );
    }

    /// Database sessions, refusals and cancels.
    fn render_databases(&self, out: &mut String) {
        counter(
            out,
            "hop_db_sessions_total",
            "Database sessions started.",
            &[(String::new(), self.db_sessions.get())],
        );
        gauge(
            out,
            "hop_db_sessions_active",
            "Database sessions open.",
            &[(String::new(), self.db_sessions_active.get())],
        );
        counter(
            out,
            "hop_db_sessions_refused_total",
            "Database connections refused before reaching a database (no certificate, RBAC, no agent).",
            &[(String::new(), self.db_sessions_refused.get())],
        );
        counter(
            out,
            "hop_db_cancels_total",
            "Query cancel requests routed to a database.",
            &[(String::new(), self.db_cancels.get())],
        );
    }

    /// The figures parts keep themselves, in the order they were added.
    fn render_reports(&self, out: &mut String) {
        for r in self
            .reports
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            r.render(out);
        }
    }
}

/// Writes one counter family (`# HELP`, `# TYPE`, samples) for a [`crate::Report`].
pub fn counter(out: &mut String, name: &str, help: &str, samples: &[(String, u64)]) {
    family(out, name, help, "counter", samples);
}

/// Writes one gauge family for a [`crate::Report`].
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
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::{Counter, Report};

    #[derive(Debug)]
    struct Extra;

    impl Report for Extra {
        fn render(&self, out: &mut String) {
            gauge(
                out,
                "hop_test_extra",
                "A report's own figure.",
                &[("worker=\"0\"".into(), 9)],
            );
        }
    }

    /// Every counter a distinct value, some gauges and flags set, an admission snapshot and a
    /// report: what the exposition looked like before it was split into groups.
    fn busy_metrics() -> Metrics {
        let m = Metrics::default();
        let counters: [&Counter; 22] = [
            &m.logins_ok,
            &m.logins_failed,
            &m.logins_locked,
            &m.logins_rate_limited,
            &m.signups,
            &m.certificates_issued,
            &m.grpc_requests,
            &m.admin_denied,
            &m.connections_accepted,
            &m.handshakes_shed,
            &m.tls_handshakes_ok,
            &m.tls_handshakes_failed,
            &m.tls_handshakes_timed_out,
            &m.audit_events,
            &m.audit_failures,
            &m.audit_refusals_dropped,
            &m.app_sessions,
            &m.relay_fast_sessions,
            &m.relay_tokio_sessions,
            &m.db_sessions,
            &m.db_sessions_refused,
            &m.db_cancels,
        ];
        for (i, c) in counters.iter().enumerate() {
            (0..=i).for_each(|_| c.inc());
        }
        (0..3).for_each(|_| m.connections_active.inc());
        (0..5).for_each(|_| m.app_sessions_active.inc());
        (0..7).for_each(|_| m.db_sessions_active.inc());
        m.storage_ready.store(true, Ordering::Release);
        for (i, r) in AgentEventRefusals::REASONS.iter().enumerate() {
            (0..10 + i).for_each(|_| m.agent_events_refused.count(r));
        }
        m.admission_taken_at.store(1_000, Ordering::Release);
        m.add_report(Arc::new(Extra));
        m
    }

    #[test]
    fn full_render_is_unchanged() {
        let m = busy_metrics();
        let text = m.render_at(m.started, UNIX_EPOCH + Duration::from_secs(1_000));
        let want = FULL_RENDER.replace("{version}", env!("CARGO_PKG_VERSION"));
        assert_eq!(text, want);
    }

    #[test]
    fn handshakes_in_progress_sit_between_the_other_handshake_families() {
        #[derive(Debug)]
        struct Slots;
        impl Report for Slots {
            fn render(&self, out: &mut String) {
                gauge(
                    out,
                    "hop_proxy_tls_handshakes_in_progress",
                    "In progress.",
                    &[(String::new(), 3)],
                );
            }
        }
        let m = busy_metrics();
        m.set_handshake_slots(std::sync::Arc::new(Slots));
        let text = m.render_at(m.started, UNIX_EPOCH + Duration::from_secs(1_000));
        let at = |name: &str| {
            text.find(name)
                .unwrap_or_else(|| panic!("{name} missing: {text}"))
        };
        assert!(
            at("# HELP hop_proxy_handshakes_shed_total")
                < at("hop_proxy_tls_handshakes_in_progress 3")
        );
        assert!(
            at("hop_proxy_tls_handshakes_in_progress 3")
                < at("# HELP hop_proxy_tls_handshakes_total")
        );
    }

    #[test]
    fn uptime_and_admission_age_come_from_the_clocks_handed_in() {
        let m = busy_metrics();
        let text = m.render_at(
            m.started + Duration::from_secs(42),
            UNIX_EPOCH + Duration::from_secs(1_007),
        );
        assert!(text.contains("\nhop_uptime_seconds 42\n"), "{text}");
        assert!(
            text.contains("\nhop_admission_snapshot_age_seconds 7\n"),
            "{text}"
        );
        m.admission_taken_at.store(0, Ordering::Release);
        let text = m.render_at(m.started, UNIX_EPOCH);
        assert!(
            !text.contains("hop_admission_snapshot_age_seconds"),
            "{text}"
        );
    }

    const FULL_RENDER: &str = r#"# HELP hop_build_info Build information.
# TYPE hop_build_info gauge
hop_build_info{version="{version}"} 1
# HELP hop_uptime_seconds Seconds since the process started.
# TYPE hop_uptime_seconds gauge
hop_uptime_seconds 0
# HELP hop_storage_ready 1 once the backend is open.
# TYPE hop_storage_ready gauge
hop_storage_ready 1
# HELP hop_backend_reachable 1 while the backend answers admission's reads (0: deciding from the kept snapshot).
# TYPE hop_backend_reachable gauge
hop_backend_reachable 1
# HELP hop_ca_ready 1 once the certificate authorities are loaded.
# TYPE hop_ca_ready gauge
hop_ca_ready 0
# HELP hop_admission_snapshot_age_seconds Age of the access data (roles, locks, users) admission decides from.
# TYPE hop_admission_snapshot_age_seconds gauge
hop_admission_snapshot_age_seconds 0
# HELP hop_logins_total Password logins by result.
# TYPE hop_logins_total counter
hop_logins_total{result="success"} 1
hop_logins_total{result="failure"} 2
hop_logins_total{result="locked"} 3
hop_logins_total{result="rate_limited"} 4
# HELP hop_signups_total Completed invitations.
# TYPE hop_signups_total counter
hop_signups_total 5
# HELP hop_certificates_issued_total User and host certificates issued.
# TYPE hop_certificates_issued_total counter
hop_certificates_issued_total 6
# HELP hop_grpc_requests_total Auth API requests.
# TYPE hop_grpc_requests_total counter
hop_grpc_requests_total 7
# HELP hop_admin_denied_total Admin API calls refused by RBAC.
# TYPE hop_admin_denied_total counter
hop_admin_denied_total 8
# HELP hop_proxy_connections_accepted_total Connections the data plane handed to the control plane's routes (every accepted connection: hop_dataplane_connections_accepted_total).
# TYPE hop_proxy_connections_accepted_total counter
hop_proxy_connections_accepted_total 9
# HELP hop_proxy_connections_active Connections open on the proxy port.
# TYPE hop_proxy_connections_active gauge
hop_proxy_connections_active 3
# HELP hop_proxy_handshakes_shed_total TLS connections closed at once because max_concurrent_handshakes was reached.
# TYPE hop_proxy_handshakes_shed_total counter
hop_proxy_handshakes_shed_total 10
# HELP hop_proxy_tls_handshakes_total TLS handshakes on the proxy port by result.
# TYPE hop_proxy_tls_handshakes_total counter
hop_proxy_tls_handshakes_total{result="success"} 11
hop_proxy_tls_handshakes_total{result="failure"} 12
hop_proxy_tls_handshakes_total{result="timeout"} 13
# HELP hop_audit_events_total Audit events written.
# TYPE hop_audit_events_total counter
hop_audit_events_total 14
# HELP hop_audit_failures_total Audit events that could not be written.
# TYPE hop_audit_failures_total counter
hop_audit_failures_total 15
# HELP hop_auth_agent_events_refused_total Agents' audit events Auth refused (not written), by reason.
# TYPE hop_auth_agent_events_refused_total counter
hop_auth_agent_events_refused_total{reason="malformed"} 10
hop_auth_agent_events_refused_total{reason="kind"} 11
hop_auth_agent_events_refused_total{reason="session"} 12
hop_auth_agent_events_refused_total{reason="time"} 13
# HELP hop_audit_refusals_dropped_total Refusals of unauthenticated callers not written to the audit log (rate limit).
# TYPE hop_audit_refusals_dropped_total counter
hop_audit_refusals_dropped_total 16
# HELP hop_app_sessions_total TCP application sessions started.
# TYPE hop_app_sessions_total counter
hop_app_sessions_total 17
# HELP hop_app_sessions_active TCP application sessions open.
# TYPE hop_app_sessions_active gauge
hop_app_sessions_active 5
# HELP hop_relay_sessions_total Relayed sessions by where their bytes moved: path="worker" (the data plane's fast path, records re-sealed in place) or path="control_plane" (the tokio relay).
# TYPE hop_relay_sessions_total counter
hop_relay_sessions_total{path="worker"} 18
hop_relay_sessions_total{path="control_plane"} 19
# HELP hop_agent_data_handshakes_total Agents' data connections by TLS handshake: kind="full" or kind="resumed" (TLS 1.3 resumption, no certificates exchanged).
# TYPE hop_agent_data_handshakes_total counter
hop_agent_data_handshakes_total{kind="full"} 0
hop_agent_data_handshakes_total{kind="resumed"} 0
# HELP hop_proxy_peer_sessions_total Proxy peering: sessions sent to the proxy holding the agent's tunnel (side="sent") and taken from a peer for an agent tunnelled here (side="taken").
# TYPE hop_proxy_peer_sessions_total counter
hop_proxy_peer_sessions_total{side="sent"} 0
hop_proxy_peer_sessions_total{side="taken"} 0
# HELP hop_db_sessions_total Database sessions started.
# TYPE hop_db_sessions_total counter
hop_db_sessions_total 20
# HELP hop_db_sessions_active Database sessions open.
# TYPE hop_db_sessions_active gauge
hop_db_sessions_active 7
# HELP hop_db_sessions_refused_total Database connections refused before reaching a database (no certificate, RBAC, no agent).
# TYPE hop_db_sessions_refused_total counter
hop_db_sessions_refused_total 21
# HELP hop_db_cancels_total Query cancel requests routed to a database.
# TYPE hop_db_cancels_total counter
hop_db_cancels_total 22
# HELP hop_test_extra A report's own figure.
# TYPE hop_test_extra gauge
hop_test_extra{worker="0"} 9
"#;
}
