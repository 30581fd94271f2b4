//! Counters of the data plane, one block per worker.
//!
//! Each worker writes only its own block (relaxed atomic adds on its own cache lines), so counting
//! costs no contention; readers (the `/metrics` handler) sum or label by worker.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use hop_protocols::sniff::Protocol;

use super::route::RejectReason;

/// The kernel interface a data plane runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoDriver {
    Uring,
    Epoll,
}

impl IoDriver {
    pub fn name(self) -> &'static str {
        match self {
            IoDriver::Uring => "io_uring",
            IoDriver::Epoll => "epoll",
        }
    }
}

const PROTOCOLS: [Protocol; 9] = [
    Protocol::Tls,
    Protocol::Ssh,
    Protocol::PostgresSsl,
    Protocol::PostgresGss,
    Protocol::PostgresStartup,
    Protocol::Http1,
    Protocol::ProxyV1,
    Protocol::ProxyV2,
    Protocol::Unknown,
];

fn protocol_index(p: Protocol) -> usize {
    PROTOCOLS
        .iter()
        .position(|x| *x == p)
        .unwrap_or(PROTOCOLS.len() - 1)
}

/// One worker's counters, padded to its own cache lines.
#[repr(align(128))]
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub accepted: AtomicU64,
    pub active: AtomicU64,
    pub handed_off: AtomicU64,
    /// `handed_off` by [`HandoffRoute`].
    handed_off_by_route: [AtomicU64; HandoffRoute::ALL.len()],
    /// TLS handshakes this worker completed.
    pub tls_terminated: AtomicU64,
    pub redirected: AtomicU64,
    /// Fast-path sessions relayed by this worker (ended), open now, and their application bytes.
    pub relayed: AtomicU64,
    pub relay_active: AtomicU64,
    pub relay_bytes: AtomicU64,
    classified: [AtomicU64; 9],
    rejected: [AtomicU64; RejectReason::ALL.len()],
}

/// What a connection handed to the control plane is, for `hop_dataplane_handoffs_by_route_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandoffRoute {
    /// A user session (`hop-tcp`, `hop-ssh`, `hop-join`, PostgreSQL, MySQL): one its worker does
    /// not keep, such as one the proxy's SSH server terminates.
    Session,
    /// The jump host (`ssh -J`, russh).
    Jump,
    /// An agent's tunnel (`hop-tunnel`, `hop-tunnel-data`).
    Agent,
    /// The web and gRPC API (HTTP).
    Api,
}

impl HandoffRoute {
    pub const ALL: [HandoffRoute; 4] = [Self::Session, Self::Jump, Self::Agent, Self::Api];

    pub fn name(self) -> &'static str {
        match self {
            Self::Session => "session",
            Self::Jump => "jump",
            Self::Agent => "agent",
            Self::Api => "api",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

impl WorkerStats {
    /// Counts one connection handed to the control plane.
    pub fn handed_off(&self, route: HandoffRoute) {
        self.handed_off.fetch_add(1, Ordering::Relaxed);
        if let Some(c) = self.handed_off_by_route.get(route.index()) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn classified(&self, p: Protocol) {
        if let Some(c) = self.classified.get(protocol_index(p)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
    pub fn rejected(&self, r: RejectReason) {
        if let Some(c) = self.rejected.get(r.index()) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
    pub fn rejected_count(&self, r: RejectReason) -> u64 {
        self.rejected
            .get(r.index())
            .map(|c| c.load(Ordering::Relaxed))
            .unwrap_or(0)
    }
}

/// Whether relayed sessions use kernel TLS, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelTls {
    On,
    Off(String),
}

#[derive(Debug)]
pub struct DataPlaneStats {
    pub driver: IoDriver,
    pub kernel_tls: KernelTls,
    pub workers: Vec<WorkerStats>,
}

impl DataPlaneStats {
    pub fn new(n: usize, driver: IoDriver, kernel_tls: KernelTls) -> Self {
        Self {
            driver,
            kernel_tls,
            workers: (0..n).map(|_| WorkerStats::default()).collect(),
        }
    }

    pub fn worker(&self, i: usize) -> &WorkerStats {
        // Workers are created with indexes 0..n; a wrong index would be a bug, so fall back to 0.
        self.workers
            .get(i)
            .or_else(|| self.workers.first())
            .expect("at least one worker")
    }

    pub fn total_rejected(&self, r: RejectReason) -> u64 {
        self.workers.iter().map(|w| w.rejected_count(r)).sum()
    }

    /// Prometheus text for the data plane.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP hop_dataplane_workers Data-plane worker threads.\n# TYPE hop_dataplane_workers gauge\nhop_dataplane_workers {}",
            self.workers.len()
        );
        let _ = writeln!(
            out,
            "# HELP hop_dataplane_io_driver The IO driver of the data plane (1 = in use).\n# TYPE hop_dataplane_io_driver gauge\nhop_dataplane_io_driver{{driver=\"{}\"}} 1",
            self.driver.name()
        );
        let _ = writeln!(
            out,
            "# HELP hop_dataplane_kernel_tls Whether relayed sessions use kernel TLS (state=\"on\") or re-seal records in user space (state=\"off\").\n# TYPE hop_dataplane_kernel_tls gauge\nhop_dataplane_kernel_tls{{state=\"{}\"}} 1",
            if self.kernel_tls == KernelTls::On {
                "on"
            } else {
                "off"
            }
        );
        let per_worker = |out: &mut String,
                          name: &str,
                          help: &str,
                          kind: &str,
                          get: &dyn Fn(&WorkerStats) -> u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (i, w) in self.workers.iter().enumerate() {
                let _ = writeln!(out, "{name}{{worker=\"{i}\"}} {}", get(w));
            }
        };
        per_worker(
            out,
            "hop_dataplane_connections_accepted_total",
            "Connections accepted, per worker.",
            "counter",
            &|w| w.accepted.load(Ordering::Relaxed),
        );
        per_worker(
            out,
            "hop_dataplane_connections_active",
            "Connections a worker is classifying, answering or keeping to their end (handed-off ones count in hop_proxy_connections_active, as kept sessions do too).",
            "gauge",
            &|w| w.active.load(Ordering::Relaxed),
        );
        per_worker(
            out,
            "hop_dataplane_handoffs_total",
            "Connections handed to their route on the control plane, per worker.",
            "counter",
            &|w| w.handed_off.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP hop_dataplane_handoffs_by_route_total Connections handed to the control plane, by what they are (a session its worker keeps is never handed off).\n# TYPE hop_dataplane_handoffs_by_route_total counter"
        );
        for r in HandoffRoute::ALL {
            let n: u64 = self
                .workers
                .iter()
                .map(|w| {
                    w.handed_off_by_route
                        .get(r.index())
                        .map_or(0, |c| c.load(Ordering::Relaxed))
                })
                .sum();
            let _ = writeln!(
                out,
                "hop_dataplane_handoffs_by_route_total{{route=\"{}\"}} {n}",
                r.name()
            );
        }
        per_worker(
            out,
            "hop_dataplane_tls_handshakes_total",
            "TLS handshakes completed on this worker (all results: hop_proxy_tls_handshakes_total).",
            "counter",
            &|w| w.tls_terminated.load(Ordering::Relaxed),
        );
        per_worker(
            out,
            "hop_dataplane_http_redirects_total",
            "Plain HTTP requests redirected to https, per worker.",
            "counter",
            &|w| w.redirected.load(Ordering::Relaxed),
        );
        per_worker(
            out,
            "hop_dataplane_relay_sessions_active",
            "Sessions this worker relays on the fast path now.",
            "gauge",
            &|w| w.relay_active.load(Ordering::Relaxed),
        );
        per_worker(
            out,
            "hop_dataplane_relay_sessions_total",
            "Fast-path sessions this worker relayed to their end.",
            "counter",
            &|w| w.relayed.load(Ordering::Relaxed),
        );
        per_worker(
            out,
            "hop_dataplane_relay_bytes_total",
            "Application bytes of ended fast-path sessions (both directions).",
            "counter",
            &|w| w.relay_bytes.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP hop_dataplane_classified_total Connections by the protocol of their first bytes.\n# TYPE hop_dataplane_classified_total counter"
        );
        for (j, p) in PROTOCOLS.iter().enumerate() {
            let n: u64 = self
                .workers
                .iter()
                .map(|w| w.classified[j].load(Ordering::Relaxed))
                .sum();
            let _ = writeln!(
                out,
                "hop_dataplane_classified_total{{protocol=\"{}\"}} {n}",
                p.name()
            );
        }
        let _ = writeln!(
            out,
            "# HELP hop_dataplane_rejected_total Connections closed without being served, by reason.\n# TYPE hop_dataplane_rejected_total counter"
        );
        for r in RejectReason::ALL {
            let _ = writeln!(
                out,
                "hop_dataplane_rejected_total{{reason=\"{}\"}} {}",
                r.name(),
                self.total_rejected(r)
            );
        }
    }
}

impl hop_metrics::Report for DataPlaneStats {
    fn render(&self, out: &mut String) {
        DataPlaneStats::render(self, out);
    }
}
