//! Tests' Auth: an in-memory cluster on a manual clock, and one manual CA rotation step.

use std::sync::Arc;
use std::time::Duration;

use hop_auth::audit::{AuditEvent, AuditSink};
use hop_auth::rotation::{Mode, Phase};
use hop_auth::server::{RotateRequest, RotateTarget};
use hop_auth::{AuthServer, AuthSettings};
use hop_ca::CaKind;
use hop_storage::{Clock, MemoryBackend, ResourceStore};

#[derive(Debug)]
struct Discard;

impl AuditSink for Discard {
    fn emit(&self, _: AuditEvent) {}
}

/// A cluster `unit.test` whose time is `clock`'s.
pub(crate) fn auth(clock: Arc<dyn Clock>) -> Arc<AuthServer> {
    let settings = AuthSettings {
        cluster_name: Some("unit.test".into()),
        second_factor: "otp".into(),
        max_failed_attempts: 5,
        lockout: Duration::from_secs(1800),
        attempts_per_ip_per_minute: 1000,
        invite_ttl: Duration::from_secs(3600),
        web_addr: "localhost:3080".into(),
        session_recording: "node".into(),
        proxy_public_names: Vec::new(),
        webauthn: Default::default(),
    };
    Arc::new(
        AuthServer::open(
            ResourceStore::new(Arc::new(MemoryBackend::new(clock.clone()))),
            clock,
            settings,
            Arc::new(Discard),
            Arc::new(hop_metrics::Metrics::default()),
        )
        .unwrap(),
    )
}

/// Moves `kind`'s rotation to `phase` (manual mode).
pub(crate) fn rotate(auth: &AuthServer, kind: CaKind, phase: Phase) {
    auth.rotate_ca(
        "admin",
        &RotateRequest {
            target: RotateTarget::One(kind),
            mode: Mode::Manual,
            phase: Some(phase),
            grace_period: None,
        },
    )
    .unwrap();
}
