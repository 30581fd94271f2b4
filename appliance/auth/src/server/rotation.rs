//! Rotating the cluster's CAs: an administrator's `hop admin auth rotate` (automatic, or one
//! manual phase at a time), Auth moving an automatic rotation on when its schedule says, and the
//! status `hop admin status` shows. Each step is one compare-and-swap of the CA's stored record
//! (so that two appliances on one backend cannot both step), an audit event naming who moved
//! which CA from which phase to which, and a reload that tells every watcher
//! ([`AuthServer::watch_authorities`]). The phase rules themselves are `crate::rotation`'s.

use std::time::Duration;

use hop_ca::CaKind;
use hop_storage::StorageError;

use super::{AuthServer, unix};
use crate::audit::EventKind;
use crate::error::AuthError;
use crate::records::CaKeys;
use crate::rotation::{self, KeyChange, Mode, Phase, RotationError};

/// Which CAs a rotation request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotateTarget {
    One(CaKind),
    /// Every CA of the cluster, moved together.
    All,
}

impl RotateTarget {
    /// `user`, `host`, `db`, `jwt`, `openssh`, `spiffe` or `all`.
    pub fn parse(s: &str) -> Result<Self, AuthError> {
        if s == "all" {
            return Ok(RotateTarget::All);
        }
        s.parse::<CaKind>().map(RotateTarget::One).map_err(|_| {
            AuthError::BadRequest(format!(
                "unknown CA type {s:?} (user, host, db, jwt, openssh, spiffe or all)"
            ))
        })
    }

    fn kinds(self) -> Vec<CaKind> {
        match self {
            RotateTarget::One(k) => vec![k],
            RotateTarget::All => CaKind::ALL.to_vec(),
        }
    }
}

/// `hop admin auth rotate`: without `phase`, an automatic rotation that starts now (init) and
/// walks the phases over `grace_period`; with `phase` (manual mode), that one step.
#[derive(Debug, Clone)]
pub struct RotateRequest {
    pub target: RotateTarget,
    pub mode: Mode,
    pub phase: Option<Phase>,
    pub grace_period: Option<Duration>,
}

/// One CA's rotation as `hop admin status` and `hop admin auth rotate` show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaRotationStatus {
    pub kind: CaKind,
    pub phase: Phase,
    pub mode: Mode,
    pub started_unix: i64,
    pub changed_unix: i64,
    /// An automatic rotation's next phase and when it is due.
    pub next: Option<(Phase, i64)>,
    /// `SHA256:…` / `sha256:…` of the signing key, then of the other trusted key (if any).
    pub ssh_fingerprints: Vec<String>,
    pub tls_pins: Vec<String>,
    /// What still depends on another key than the signing one (see `host_certs.rs`).
    pub stale: Vec<String>,
}

impl AuthServer {
    /// Carries out `req` for `actor` (who is audited) and returns the CAs' status after it.
    ///
    /// # Errors
    /// [`AuthError::Rotation`] for a phase that cannot follow the current one (checked for every
    /// CA of the request before any moves; CAs already at the phase are skipped, so a request
    /// that failed part-way is finished by asking again), a grace period out of bounds or an automatic
    /// rotation of a CA that is already rotating; [`AuthError::Contended`] when another Auth
    /// moved the CA at the same moment.
    pub fn rotate_ca(
        &self,
        actor: &str,
        req: &RotateRequest,
    ) -> Result<Vec<CaRotationStatus>, AuthError> {
        let grace =
            rotation::check_grace(req.grace_period.unwrap_or(rotation::DEFAULT_GRACE_PERIOD))?;
        let to = match (req.mode, req.phase) {
            (Mode::Auto, None | Some(Phase::Init)) => Phase::Init,
            (Mode::Auto, Some(p)) => {
                return Err(AuthError::BadRequest(format!(
                    "an automatic rotation starts at init; move to {p} with --manual --phase {p}"
                )));
            }
            (Mode::Manual, Some(p)) => p,
            (Mode::Manual, None) => {
                return Err(AuthError::BadRequest(
                    "a manual rotation needs --phase (init, update_clients, update_servers, standby or rollback)".into(),
                ));
            }
        };
        let cas = self.authorities();
        // A CA already at the phase asked for is left as it is: a retry of a step that failed
        // part-way through `--type all` finishes the others.
        let kinds: Vec<CaKind> = req
            .target
            .kinds()
            .into_iter()
            .filter(|k| req.mode == Mode::Auto || cas.set(*k).rotation.phase != to)
            .collect();
        if kinds.is_empty() {
            return Ok(self.rotation_status());
        }
        for kind in &kinds {
            let set = cas.set(*kind);
            if req.mode == Mode::Auto && set.rotation.phase != Phase::Standby {
                return Err(RotationError::AlreadyRotating {
                    kind: kind.to_string(),
                    phase: set.rotation.phase,
                }
                .into());
            }
            rotation::transition(kind.as_str(), set.rotation.phase, to)?;
        }
        let result = kinds
            .iter()
            .try_for_each(|kind| self.step(*kind, to, req.mode, grace, actor));
        // Whatever was stored is what everyone must see, even when a later CA failed.
        self.reload_authorities()?;
        result?;
        Ok(self.rotation_status())
    }

    /// Moves each automatic rotation whose next phase is due; `true` when one moved.
    ///
    /// # Errors
    /// The backend's; a rotation another Auth moved first is left to it.
    pub fn advance_rotations(&self) -> Result<bool, AuthError> {
        let now = unix(self.clock.now());
        let cas = self.authorities();
        let mut moved = false;
        for kind in CaKind::ALL {
            let r = &cas.set(kind).rotation;
            let Some((next, at)) = r.next_due() else {
                continue;
            };
            if now < at {
                continue;
            }
            let grace = Duration::from_secs(r.grace_period_secs);
            match self.step(kind, next, Mode::Auto, grace, "system") {
                Ok(()) => moved = true,
                Err(AuthError::Contended { .. }) => moved = true,
                Err(e) => {
                    let _ = self.reload_authorities();
                    return Err(e);
                }
            }
        }
        if moved {
            self.reload_authorities()?;
        }
        Ok(moved)
    }

    /// Every CA's rotation, in [`CaKind::ALL`] order.
    pub fn rotation_status(&self) -> Vec<CaRotationStatus> {
        let cas = self.authorities();
        CaKind::ALL
            .into_iter()
            .map(|kind| {
                let set = cas.set(kind);
                CaRotationStatus {
                    kind,
                    phase: set.rotation.phase,
                    mode: set.rotation.mode,
                    started_unix: set.rotation.started_unix,
                    changed_unix: set.rotation.changed_unix,
                    next: set.rotation.next_due(),
                    ssh_fingerprints: set
                        .trusted()
                        .iter()
                        .filter_map(|p| p.ssh_fingerprint.clone())
                        .collect(),
                    tls_pins: set
                        .trusted()
                        .iter()
                        .filter_map(|p| p.x509_spki_sha256.clone())
                        .collect(),
                    stale: self.stale_hosts(kind),
                }
            })
            .collect()
    }

    /// One CA from its stored phase to `to`: the keys as [`rotation::transition`] says, the
    /// record swapped in at the revision it was read at, the step audited.
    fn step(
        &self,
        kind: CaKind,
        to: Phase,
        mode: Mode,
        grace: Duration,
        actor: &str,
    ) -> Result<(), AuthError> {
        let now = self.clock.now();
        let stored = self
            .store()
            .get::<CaKeys>(kind.as_str())?
            .ok_or_else(|| AuthError::NotFound(format!("{kind} CA")))?;
        let mut keys = stored.value;
        let from = keys.rotation.phase;
        match rotation::transition(kind.as_str(), from, to)? {
            KeyChange::AddNew => {
                let fresh = self
                    .key_maker
                    .make(kind, &self.cluster, now)
                    .map_err(|source| AuthError::CaGeneration { kind, source })?;
                keys.additional = Some(fresh);
            }
            KeyChange::Swap => {
                let other = keys.additional.take().ok_or_else(|| {
                    AuthError::Internal(format!("the {kind} CA is rotating without a second key"))
                })?;
                keys.additional = Some(std::mem::replace(&mut keys.authority, other));
            }
            KeyChange::DropAdditional => keys.additional = None,
            KeyChange::Keep => {}
        }
        keys.rotation = keys.rotation.moved(to, mode, grace, unix(now));
        let signer = keys.authority.public();
        match self.store().update(&keys, stored.revision) {
            Ok(_) => {}
            Err(StorageError::Conflict { .. }) => {
                return Err(AuthError::Contended {
                    subject: format!("the {kind} CA's rotation"),
                    contenders: "rotations",
                });
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!(%kind, %from, %to, mode = mode.as_str(), actor, "CA rotation phase changed");
        self.audit_durable(
            self.event(EventKind::CaRotate, actor)
                .field("ca_type", kind.as_str())
                .field("phase", to.as_str())
                .field("previous_phase", from.as_str())
                .field("mode", mode.as_str())
                .field(
                    "signer_ssh_fingerprint",
                    signer.ssh_fingerprint.unwrap_or_default(),
                )
                .field(
                    "signer_tls_pin",
                    signer.x509_spki_sha256.unwrap_or_default(),
                ),
        );
        Ok(())
    }
}
