//! The access data a decision is made from: roles, locks, which identities exist (with the
//! roles they hold now and the instant before which their certificates are void), and how old
//! the data is, and the approved access requests a certificate may name.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hop_rbac::{LockResource, LockingMode, Role};
use serde::{Deserialize, Serialize};

/// In `strict` locking mode, a snapshot older than this refuses new sessions and ends live
/// ones (Teleport's bound).
pub const STALE_AFTER: Duration = Duration::from_secs(300);

/// One identity that exists, as Auth sends it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityStamp {
    /// A user name, or an agent's host id.
    pub name: String,
    /// The roles a user holds now (agents: empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Certificates issued before this (Unix seconds) are void: bumped by a lock on the
    /// identity and when a role is taken away. 0: none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub not_before: u64,
}

/// An approved access request, as Auth sends it: a certificate naming it may carry its roles
/// until it expires. Pending, denied and deleted requests are absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestStamp {
    /// The request's id.
    pub id: String,
    /// Who asked for it (only their certificates may name it).
    pub user: String,
    /// The roles it grants.
    pub roles: Vec<String>,
    /// When its access ends (Unix seconds).
    pub expires: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// The snapshot as Auth builds it and sends it to proxies and agents (JSON).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SnapshotData {
    pub cluster: String,
    pub roles: Vec<Role>,
    pub locks: Vec<LockResource>,
    /// Every user (and bot) that exists.
    pub users: Vec<IdentityStamp>,
    /// Every agent that exists (host ids), when the receiver needs them (proxies); `None`
    /// when not sent (nodes never admit other agents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agents: Option<Vec<IdentityStamp>>,
    /// `cluster_auth_preference.locking_mode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locking_mode: Option<LockingMode>,
    /// Approved access requests (the only ones a certificate may name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requests: Vec<RequestStamp>,
    /// When Auth took it (Unix seconds).
    pub taken_at: u64,
}

/// Why a snapshot could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("the access snapshot from Auth is unreadable: {0}")]
    Malformed(#[from] serde_json::Error),
}

/// A parsed [`SnapshotData`], indexed for decisions.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub(crate) cluster: String,
    pub(crate) roles: HashMap<String, Role>,
    pub(crate) locks: Vec<LockResource>,
    pub(crate) users: HashMap<String, IdentityStamp>,
    pub(crate) agents: Option<HashMap<String, IdentityStamp>>,
    pub(crate) locking_mode: LockingMode,
    pub(crate) requests: HashMap<String, RequestStamp>,
    pub(crate) taken_at: SystemTime,
    /// The role checkers compiled from this snapshot's roles (shared by its clones).
    pub(crate) checkers: Arc<crate::checkers::Checkers>,
}

impl Snapshot {
    /// Indexes `data`.
    #[must_use]
    pub fn new(data: SnapshotData) -> Self {
        let index = |v: Vec<IdentityStamp>| v.into_iter().map(|s| (s.name.clone(), s)).collect();
        Self {
            cluster: data.cluster,
            roles: data
                .roles
                .into_iter()
                .map(|r| (r.metadata.name.clone(), r))
                .collect(),
            locks: data.locks,
            users: index(data.users),
            agents: data.agents.map(index),
            locking_mode: data.locking_mode.unwrap_or(LockingMode::BestEffort),
            requests: data
                .requests
                .into_iter()
                .map(|r| (r.id.clone(), r))
                .collect(),
            taken_at: UNIX_EPOCH + Duration::from_secs(data.taken_at),
            checkers: Arc::default(),
        }
    }

    /// Takes over the role checkers `previous` compiled when both hold the same roles: a
    /// snapshot rebuilt for a change elsewhere (a user, a lock, a tracker) does not compile
    /// every user's roles again.
    pub fn keep_checkers_of(&mut self, previous: &Snapshot) {
        if self.roles == previous.roles {
            self.checkers = previous.checkers.clone();
        }
    }

    /// Parses the JSON form Auth sends.
    pub fn from_json(text: &str) -> Result<Self, SnapshotError> {
        Ok(Self::new(serde_json::from_str(text)?))
    }

    /// How old the data is at `now`.
    #[must_use]
    pub fn age(&self, now: SystemTime) -> Duration {
        now.duration_since(self.taken_at).unwrap_or_default()
    }

    /// When Auth took it.
    #[must_use]
    pub fn taken_at(&self) -> SystemTime {
        self.taken_at
    }

    /// The cluster the snapshot is for.
    #[must_use]
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// A role by name.
    #[must_use]
    pub fn role(&self, name: &str) -> Option<&Role> {
        self.roles.get(name)
    }

    /// Every lock (in force or lapsed).
    #[must_use]
    pub fn locks(&self) -> &[LockResource] {
        &self.locks
    }

    /// The cluster's locking mode.
    #[must_use]
    pub fn locking_mode(&self) -> LockingMode {
        self.locking_mode
    }
}
