//! CA rotation's phases as a pure state machine: which phase may follow which, what each step
//! does to the CA's two keys, and when an automatic rotation's next phase is due. Teleport's
//! phases and names:
//!
//! ```text
//! standby ──► init ──► update_clients ──► update_servers ──► standby
//!               │            │                  │
//!               └────────────┴──────► rollback ─┴──────────► standby
//! ```
//!
//! * `init`: a new key is generated and trusted everywhere; the old key still signs.
//! * `update_clients`: the new key signs; the old one stays trusted, so that certificates it
//!   signed keep working while clients and bots renew.
//! * `update_servers`: servers (agents, the proxy) take certificates from the new key.
//! * `standby` (from `update_servers`): the old key is dropped; what it signed is refused.
//! * `rollback` (from any phase before standby): the old key signs again and the new one stays
//!   trusted until `standby` drops it.
//!
//! It reads no clock (times are arguments) and does no IO; `server/rotation.rs` applies it.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Teleport's default grace period of an automatic rotation (its longest certificate).
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(30 * 3600);
/// The shortest grace period accepted: a third of it per phase leaves agents and bots, which ask
/// for the phase every 5 s, two chances to learn each phase before the next one.
pub const MIN_GRACE_PERIOD: Duration = Duration::from_secs(30);
/// The longest: a rotation that takes longer than this is a forgotten one.
pub const MAX_GRACE_PERIOD: Duration = Duration::from_secs(30 * 24 * 3600);

/// Where a CA is in its rotation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// One key; no rotation under way.
    #[default]
    Standby,
    Init,
    UpdateClients,
    UpdateServers,
    Rollback,
}

impl Phase {
    pub const ALL: [Phase; 5] = [
        Phase::Standby,
        Phase::Init,
        Phase::UpdateClients,
        Phase::UpdateServers,
        Phase::Rollback,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Phase::Standby => "standby",
            Phase::Init => "init",
            Phase::UpdateClients => "update_clients",
            Phase::UpdateServers => "update_servers",
            Phase::Rollback => "rollback",
        }
    }

    /// The phase an automatic rotation moves to after this one; `None` at standby.
    pub const fn next(self) -> Option<Phase> {
        match self {
            Phase::Standby => None,
            Phase::Init => Some(Phase::UpdateClients),
            Phase::UpdateClients => Some(Phase::UpdateServers),
            Phase::UpdateServers | Phase::Rollback => Some(Phase::Standby),
        }
    }

    /// Whether the key that signs now is the new one (hosts renew onto it in these phases).
    pub const fn new_key_signs(self) -> bool {
        matches!(self, Phase::UpdateClients | Phase::UpdateServers)
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Phase {
    type Err = RotationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Phase::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| RotationError::UnknownPhase(s.to_owned()))
    }
}

/// Who moves the phases on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// An administrator, one `--phase` at a time.
    #[default]
    Manual,
    /// Auth, on the [`Schedule`] the grace period sets.
    Auto,
}

impl Mode {
    pub const fn as_str(self) -> &'static str {
        match self {
            Mode::Manual => "manual",
            Mode::Auto => "auto",
        }
    }
}

/// When an automatic rotation's phases are due (Unix seconds): a third of the grace period each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub update_clients_unix: i64,
    pub update_servers_unix: i64,
    pub standby_unix: i64,
}

impl Schedule {
    /// The schedule of a rotation started at `now_unix` with `grace`.
    pub fn starting(now_unix: i64, grace: Duration) -> Self {
        let g = i64::try_from(grace.as_secs()).unwrap_or(i64::MAX / 4);
        Self {
            update_clients_unix: now_unix + g / 3,
            update_servers_unix: now_unix + (2 * g) / 3,
            standby_unix: now_unix + g,
        }
    }

    /// When the phase after `phase` is due.
    pub fn due_after(&self, phase: Phase) -> Option<i64> {
        match phase {
            Phase::Init => Some(self.update_clients_unix),
            Phase::UpdateClients => Some(self.update_servers_unix),
            Phase::UpdateServers => Some(self.standby_unix),
            Phase::Rollback | Phase::Standby => None,
        }
    }
}

/// A CA's rotation state, stored beside its keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotation {
    pub phase: Phase,
    #[serde(default)]
    pub mode: Mode,
    /// When the current (or last) rotation began, Unix seconds; 0 for never.
    #[serde(default)]
    pub started_unix: i64,
    /// When the phase last changed, Unix seconds.
    #[serde(default)]
    pub changed_unix: i64,
    #[serde(default)]
    pub grace_period_secs: u64,
    /// Automatic rotations only.
    #[serde(default)]
    pub schedule: Option<Schedule>,
    /// When the last rotation ended at standby with the new key (0 for never).
    #[serde(default)]
    pub completed_unix: i64,
}

impl Rotation {
    /// When the next phase of an automatic rotation is due, and which phase that is.
    pub fn next_due(&self) -> Option<(Phase, i64)> {
        if self.mode != Mode::Auto {
            return None;
        }
        let next = self.phase.next()?;
        let at = self.schedule?.due_after(self.phase)?;
        Some((next, at))
    }

    /// The state after moving to `to` at `now_unix` (the transition must be allowed).
    pub fn moved(&self, to: Phase, mode: Mode, grace: Duration, now_unix: i64) -> Rotation {
        let mut r = self.clone();
        if self.phase == Phase::Standby && to == Phase::Init {
            r.started_unix = now_unix;
            r.grace_period_secs = grace.as_secs();
            r.mode = mode;
            r.schedule = (mode == Mode::Auto).then(|| Schedule::starting(now_unix, grace));
        }
        if self.phase == Phase::UpdateServers && to == Phase::Standby {
            r.completed_unix = now_unix;
        }
        // A rollback is an operator's decision: it ends at standby when they say so, not on the
        // automatic schedule (what the new key signed meanwhile stays trusted until then).
        if matches!(to, Phase::Standby | Phase::Rollback) {
            r.schedule = None;
            r.mode = Mode::Manual;
        }
        r.phase = to;
        r.changed_unix = now_unix;
        r
    }
}

/// What a phase change does to a CA's two keys (`active` signs, `additional` is only trusted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyChange {
    /// A new key becomes `additional` (trusted, not yet signing).
    AddNew,
    /// `active` and `additional` change places.
    Swap,
    /// `additional` is dropped: what it signed is no longer trusted.
    DropAdditional,
    /// The keys stay as they are.
    Keep,
}

/// Why a rotation request cannot be carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RotationError {
    #[error(
        "unknown rotation phase {0:?} (init, update_clients, update_servers, standby, rollback)"
    )]
    UnknownPhase(String),
    #[error("cannot move the {kind} CA from {from} to {to}: {hint}")]
    Transition {
        kind: String,
        from: Phase,
        to: Phase,
        hint: String,
    },
    #[error("grace period {secs} s is outside {min}..={max} s")]
    GracePeriod { secs: u64, min: u64, max: u64 },
    #[error("the {kind} CA is already rotating (phase {phase}): finish it or roll it back first")]
    AlreadyRotating { kind: String, phase: Phase },
}

/// What moving from `from` to `to` does to the keys, or why it is not allowed.
pub fn transition(kind: &str, from: Phase, to: Phase) -> Result<KeyChange, RotationError> {
    use Phase::*;
    let change = match (from, to) {
        (Standby, Init) => KeyChange::AddNew,
        (Init, UpdateClients) => KeyChange::Swap,
        (UpdateClients, UpdateServers) => KeyChange::Keep,
        (UpdateServers, Standby) | (Rollback, Standby) => KeyChange::DropAdditional,
        (Init, Rollback) => KeyChange::Keep,
        (UpdateClients, Rollback) | (UpdateServers, Rollback) => KeyChange::Swap,
        _ => {
            let hint = match (from.next(), from) {
                (_, Standby) => "a rotation starts with init".to_owned(),
                (Some(n), Rollback) => format!("a rollback ends with {n}"),
                (Some(n), _) => format!("the next phase is {n}, or rollback"),
                (None, _) => String::new(),
            };
            return Err(RotationError::Transition {
                kind: kind.to_owned(),
                from,
                to,
                hint,
            });
        }
    };
    Ok(change)
}

/// `grace`, or why it is refused.
pub fn check_grace(grace: Duration) -> Result<Duration, RotationError> {
    if (MIN_GRACE_PERIOD..=MAX_GRACE_PERIOD).contains(&grace) {
        Ok(grace)
    } else {
        Err(RotationError::GracePeriod {
            secs: grace.as_secs(),
            min: MIN_GRACE_PERIOD.as_secs(),
            max: MAX_GRACE_PERIOD.as_secs(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forward_path_and_rollback_are_the_only_moves() {
        use Phase::*;
        let allowed = [
            (Standby, Init, KeyChange::AddNew),
            (Init, UpdateClients, KeyChange::Swap),
            (UpdateClients, UpdateServers, KeyChange::Keep),
            (UpdateServers, Standby, KeyChange::DropAdditional),
            (Init, Rollback, KeyChange::Keep),
            (UpdateClients, Rollback, KeyChange::Swap),
            (UpdateServers, Rollback, KeyChange::Swap),
            (Rollback, Standby, KeyChange::DropAdditional),
        ];
        for from in Phase::ALL {
            for to in Phase::ALL {
                let want = allowed
                    .iter()
                    .find(|(f, t, _)| *f == from && *t == to)
                    .map(|a| a.2);
                match (transition("user", from, to), want) {
                    (Ok(got), Some(want)) => assert_eq!(got, want, "{from} -> {to}"),
                    (Err(e), None) => assert!(e.to_string().contains("user CA"), "{e}"),
                    (got, want) => panic!("{from} -> {to}: {got:?}, wanted {want:?}"),
                }
            }
        }
        // No way from standby to rollback: there is nothing to roll back.
        assert!(transition("host", Standby, Rollback).is_err());
    }

    #[test]
    fn the_error_says_what_comes_next() {
        let e = transition("host", Phase::Init, Phase::UpdateServers).unwrap_err();
        assert!(
            e.to_string().contains("next phase is update_clients"),
            "{e}"
        );
        let e = transition("host", Phase::Standby, Phase::UpdateClients).unwrap_err();
        assert!(e.to_string().contains("starts with init"), "{e}");
    }

    #[test]
    fn an_automatic_rotation_walks_its_schedule() {
        let grace = Duration::from_secs(90);
        let r = Rotation::default().moved(Phase::Init, Mode::Auto, grace, 1000);
        assert_eq!(r.started_unix, 1000);
        assert_eq!(r.next_due(), Some((Phase::UpdateClients, 1030)));
        let r = r.moved(Phase::UpdateClients, Mode::Auto, grace, 1030);
        assert_eq!(r.next_due(), Some((Phase::UpdateServers, 1060)));
        let r = r.moved(Phase::UpdateServers, Mode::Auto, grace, 1060);
        assert_eq!(r.next_due(), Some((Phase::Standby, 1090)));
        let r = r.moved(Phase::Standby, Mode::Auto, grace, 1090);
        assert_eq!(r.next_due(), None);
        assert_eq!(r.completed_unix, 1090);
        assert_eq!(r.mode, Mode::Manual);
        // Rolling an automatic rotation back hands it to the operator: no scheduled standby.
        let r = Rotation::default()
            .moved(Phase::Init, Mode::Auto, grace, 1000)
            .moved(Phase::UpdateClients, Mode::Auto, grace, 1030)
            .moved(Phase::Rollback, Mode::Manual, grace, 1040);
        assert_eq!((r.mode, r.next_due()), (Mode::Manual, None));
        // A manual rotation has no schedule.
        let m = Rotation::default().moved(Phase::Init, Mode::Manual, grace, 5);
        assert_eq!(m.next_due(), None);
    }

    #[test]
    fn phases_parse_and_grace_periods_are_bounded() {
        for p in Phase::ALL {
            assert_eq!(p.as_str().parse::<Phase>().unwrap(), p);
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{p}\""));
        }
        assert!("done".parse::<Phase>().is_err());
        assert!(check_grace(Duration::from_secs(1)).is_err());
        assert!(check_grace(Duration::from_secs(31 * 24 * 3600)).is_err());
        assert!(check_grace(DEFAULT_GRACE_PERIOD).is_ok());
        // Old records without rotation fields read as standby.
        let r: Rotation = serde_json::from_str(r#"{"phase":"standby"}"#).unwrap();
        assert_eq!(r, Rotation::default());
    }
}
