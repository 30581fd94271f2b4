//! Session trackers: the cluster's live sessions, as backend records under a TTL lease.
//!
//! This module owns the tracker's shape (`session_tracker` records), their lifetimes and who may
//! write them. A tracker is written by Auth only: an agent asks for the trackers of the sessions
//! it hosts (`UpdateSessionTracker`; Auth stamps the host id from the caller's certificate, so an
//! agent writes only its own), the proxy writes those of application sessions in-process. An
//! active tracker lives [`TRACKER_LEASE`](hop_api::trackers::TRACKER_LEASE) after its last write and its host renews it every
//! [`TRACKER_KEEPALIVE`](hop_api::trackers::TRACKER_KEEPALIVE); a host that dies leaves nothing behind for longer than the lease. An
//! ended session's tracker stays, `terminated`, for [`ENDED_RETENTION`], so that its last events
//! (which travel separately, through the agent's audit queue) still find it. `hop join`,
//! `hop sessions ls` and the check of agents' events read trackers, never the audit log.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use hop_ca::{HostRole, Identity};
use hop_storage::{StorageError, StoredResource};
use serde::{Deserialize, Serialize};

use super::error::AuthError;
use super::records::HostNameClaim;
use super::server::AuthServer;
use hop_api::proto::{SessionTrackerInfo, UpdateSessionTrackerRequest};
use hop_api::timestamps::rfc3339;

use hop_api::trackers::TRACKER_LEASE;
/// How long an ended session's tracker stays (terminated) for its late events.
pub const ENDED_RETENTION: Duration = Duration::from_secs(5 * 60);
/// Most participants kept on one tracker.
const MAX_PARTICIPANTS: usize = 64;

/// What kind of session a tracker follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionKind {
    Ssh,
    Db,
    App,
    /// A moderated `kubectl exec`/`attach`, tracked by the proxy that relays it.
    Kube,
}

impl SessionKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Ssh => "ssh",
            Self::Db => "db",
            Self::App => "app",
            Self::Kube => "kube",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Ssh, Self::Db, Self::App, Self::Kube]
            .into_iter()
            .find(|k| k.name() == s)
    }

    /// The kind of session an agent of `role` hosts (and may track), if any. Application
    /// sessions and moderated Kubernetes sessions are tracked by the proxy, not by agents.
    pub fn hosted_by(role: HostRole) -> Option<Self> {
        match role {
            HostRole::Node => Some(Self::Ssh),
            HostRole::Db => Some(Self::Db),
            _ => None,
        }
    }
}

/// Whether the session still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackerState {
    Active,
    Terminated,
}

impl TrackerState {
    pub fn name(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Terminated => "terminated",
        }
    }
}

/// One live (or just ended) session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionTracker {
    pub session_id: String,
    pub kind: SessionKind,
    /// How users reach it: `node`, `db`, `app`.
    pub route: String,
    /// The session's owner (the Hop user who started it).
    pub user: String,
    /// Everyone who took part: the owner first, then joiners.
    pub participants: Vec<String>,
    /// The agent hosting the session (from its host certificate, never from a claim).
    pub host_id: String,
    /// The node name certified for the host, when it has one.
    pub server: String,
    /// What the session reaches on the host: a database service or an application's name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target: String,
    /// The OS login (SSH) or database user.
    pub login: String,
    pub state: TrackerState,
    /// RFC 3339.
    pub created: String,
    /// RFC 3339: the last write by the host.
    pub last_seen: String,
}

impl StoredResource for SessionTracker {
    const KIND: &'static str = "session_tracker";
    fn name(&self) -> &str {
        &self.session_id
    }
}

/// What a session's host asks for: create or renew its tracker (`Active`), or end it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackerUpdate {
    pub session_id: String,
    pub kind: SessionKind,
    pub user: String,
    pub login: String,
    pub target: String,
    pub participants: Vec<String>,
    pub state: TrackerState,
}

/// The host writing a tracker, as its certificate proves it.
#[derive(Debug, Clone, Copy)]
pub struct TrackerHost<'a> {
    pub host_id: &'a str,
    pub role: HostRole,
}

/// New trackers one agent may open per second, once its burst is spent.
pub const NEW_TRACKERS_PER_SECOND: u32 = 50;
/// New trackers one agent may open back to back.
pub const NEW_TRACKERS_BURST: f64 = 500.0;

/// Why a tracker write was refused.
#[derive(Debug, thiserror::Error)]
pub enum TrackerError {
    #[error("session id {0:?} is not valid: 1 to 64 letters, digits, '-', '_' or '.'")]
    BadSessionId(String),
    #[error("a {role} agent hosts no {kind} sessions")]
    WrongKind { role: HostRole, kind: &'static str },
    #[error("session {session_id} is hosted by another agent")]
    ForeignSession { session_id: String },
    #[error("session {session_id} has ended; its tracker cannot be revived")]
    Ended { session_id: String },
    #[error("agent {host_id} opens sessions faster than {per_second} a second; tracker refused")]
    TooMany { host_id: String, per_second: u32 },
    #[error("session {session_id}: {source}")]
    Storage {
        session_id: String,
        source: StorageError,
    },
}

impl From<TrackerError> for AuthError {
    fn from(e: TrackerError) -> Self {
        match e {
            TrackerError::BadSessionId(_) | TrackerError::Ended { .. } => {
                AuthError::BadRequest(e.to_string())
            }
            TrackerError::WrongKind { .. } | TrackerError::ForeignSession { .. } => {
                AuthError::Denied(e.to_string())
            }
            TrackerError::TooMany { .. } => AuthError::Denied(e.to_string()),
            TrackerError::Storage { .. } => AuthError::TrackerStorage(e),
        }
    }
}

/// Session ids are uuids in practice; anything that is a safe storage name of modest length is
/// accepted.
pub fn check_session_id(id: &str) -> Result<(), TrackerError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && id != "."
        && id != "..";
    if ok {
        Ok(())
    } else {
        Err(TrackerError::BadSessionId(id.chars().take(80).collect()))
    }
}

/// The owner first, then the others once each, at most [`MAX_PARTICIPANTS`].
fn merge_participants(owner: &str, lists: &[&[String]]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    std::iter::once(owner)
        .chain(lists.iter().flat_map(|l| l.iter().map(String::as_str)))
        .filter(|p| !p.is_empty() && seen.insert(p.to_string()))
        .take(MAX_PARTICIPANTS)
        .map(str::to_owned)
        .collect()
}

/// When a tracker in `state`, written at `now`, lapses.
fn lease_end(state: TrackerState, now: SystemTime) -> SystemTime {
    match state {
        TrackerState::Active => now + TRACKER_LEASE,
        TrackerState::Terminated => now + ENDED_RETENTION,
    }
}

/// The next version of a tracker: `existing` (if any) updated by its own host with `update`.
fn next_version(
    existing: Option<&SessionTracker>,
    host: TrackerHost<'_>,
    server: &str,
    update: &TrackerUpdate,
    now: SystemTime,
) -> Result<SessionTracker, TrackerError> {
    let session_id = update.session_id.clone();
    let Some(old) = existing else {
        return Ok(SessionTracker {
            session_id,
            kind: update.kind,
            route: route_of(update.kind).into(),
            user: update.user.clone(),
            participants: merge_participants(&update.user, &[&update.participants]),
            host_id: host.host_id.to_string(),
            server: server.to_string(),
            target: update.target.clone(),
            login: update.login.clone(),
            state: update.state,
            created: rfc3339(now),
            last_seen: rfc3339(now),
        });
    };
    if old.host_id != host.host_id {
        return Err(TrackerError::ForeignSession { session_id });
    }
    if old.state == TrackerState::Terminated && update.state == TrackerState::Active {
        return Err(TrackerError::Ended { session_id });
    }
    let mut next = old.clone();
    next.participants = merge_participants(&old.user, &[&old.participants, &update.participants]);
    next.state = update.state;
    next.last_seen = rfc3339(now);
    Ok(next)
}

fn route_of(kind: SessionKind) -> &'static str {
    match kind {
        SessionKind::Ssh => "node",
        SessionKind::Db => "db",
        SessionKind::App => "app",
        SessionKind::Kube => "kube",
    }
}

impl AuthServer {
    /// Creates, renews or ends the tracker of a session `host` hosts. The host id is the
    /// caller's; the node name is the one certified for that host.
    pub fn update_tracker(
        &self,
        host: TrackerHost<'_>,
        update: &TrackerUpdate,
    ) -> Result<SessionTracker, TrackerError> {
        check_session_id(&update.session_id)?;
        if SessionKind::hosted_by(host.role) != Some(update.kind) {
            return Err(TrackerError::WrongKind {
                role: host.role,
                kind: update.kind.name(),
            });
        }
        let server = self.certified_name(host.host_id).unwrap_or_default();
        self.write_tracker(host, &server, update)
    }

    /// The proxy's own write of an application session's tracker: `host_id` is the app agent
    /// that serves it.
    pub fn update_app_tracker(
        &self,
        host_id: &str,
        update: &TrackerUpdate,
    ) -> Result<SessionTracker, TrackerError> {
        check_session_id(&update.session_id)?;
        let host = TrackerHost {
            host_id,
            role: HostRole::App,
        };
        self.write_tracker(host, "", update)
    }

    /// The proxy's own write of a moderated Kubernetes session's tracker: `proxy_id` is the
    /// proxy that relays the session (and the only one a moderator can join it through).
    pub fn update_kube_tracker(
        &self,
        proxy_id: &str,
        update: &TrackerUpdate,
    ) -> Result<SessionTracker, TrackerError> {
        check_session_id(&update.session_id)?;
        let host = TrackerHost {
            host_id: proxy_id,
            role: HostRole::Proxy,
        };
        self.write_tracker(host, "", update)
    }

    /// A tracker for a session whose opening event arrived before any tracker (see
    /// `auth::agent_events`): created for `host` only if nobody tracks the session, and kept
    /// [`ENDED_RETENTION`] (its host renews or ends it once it reaches Auth again).
    pub fn adopt_tracker(
        &self,
        host: TrackerHost<'_>,
        update: &TrackerUpdate,
    ) -> Result<SessionTracker, TrackerError> {
        check_session_id(&update.session_id)?;
        self.count_new_tracker(host.host_id)?;
        let now = self.now();
        let server = self.certified_name(host.host_id).unwrap_or_default();
        let t = next_version(None, host, &server, update, now)?;
        self.store()
            .swap_leased(&t, None, now + ENDED_RETENTION)
            .map_err(|source| TrackerError::Storage {
                session_id: update.session_id.clone(),
                source,
            })?;
        Ok(t)
    }

    /// Adds `user` to a live session's participants (a joiner, as the proxy admitted them).
    pub fn add_participant(&self, session_id: &str, user: &str) -> Result<(), TrackerError> {
        let storage = |source| TrackerError::Storage {
            session_id: session_id.to_string(),
            source,
        };
        for _ in 0..3 {
            let Some(v) = self.tracker(session_id)? else {
                return Ok(());
            };
            let mut t = v.value;
            t.participants = merge_participants(&t.user, &[&t.participants, &[user.to_string()]]);
            let lease = lease_end(t.state, self.now());
            match self.store().swap_leased(&t, Some(v.revision), lease) {
                Err(StorageError::Conflict { .. }) => continue,
                other => return other.map(drop).map_err(storage),
            }
        }
        Ok(())
    }

    /// The tracker of `session_id`, live or recently ended.
    pub fn tracker(
        &self,
        session_id: &str,
    ) -> Result<Option<hop_storage::Versioned<SessionTracker>>, TrackerError> {
        check_session_id(session_id)?;
        self.store()
            .get::<SessionTracker>(session_id)
            .map_err(|source| TrackerError::Storage {
                session_id: session_id.to_string(),
                source,
            })
    }

    /// Every tracker (active and recently ended), oldest first.
    pub fn trackers(&self) -> Result<Vec<SessionTracker>, AuthError> {
        let mut all: Vec<SessionTracker> = self
            .store()
            .list::<SessionTracker>()?
            .into_iter()
            .map(|v| v.value)
            .collect();
        all.sort_by(|a, b| a.created.cmp(&b.created));
        Ok(all)
    }

    /// The trackers `identity` may see: all of them with the `session` `list` rule, else the
    /// sessions they own or take part in, and those a rule's `where` clause admits.
    pub fn trackers_for(&self, identity: &Identity) -> Result<Vec<SessionTracker>, AuthError> {
        let all = self.trackers()?;
        if self.authorize_rule(identity, "session", "list").is_ok() {
            return Ok(all);
        }
        let checker = self.checker_for(&identity.roles, &identity.traits).ok();
        let me = identity.username.as_str();
        let admitted = |t: &SessionTracker| {
            let Some(checker) = checker.as_ref() else {
                return false;
            };
            let ctx = hop_rbac::RuleContext {
                user: Some(hop_rbac::UserFacts {
                    name: me,
                    roles: &identity.roles,
                    traits: &identity.traits,
                }),
                session: Some(hop_rbac::SessionFacts {
                    participants: &t.participants,
                    user: &t.user,
                    login: &t.login,
                }),
                labels: None,
            };
            checker.check_rule_in("session", "list", &ctx).is_ok()
        };
        Ok(all
            .into_iter()
            .filter(|t| t.user == me || t.participants.iter().any(|p| p == me) || admitted(t))
            .collect())
    }

    fn write_tracker(
        &self,
        host: TrackerHost<'_>,
        server: &str,
        update: &TrackerUpdate,
    ) -> Result<SessionTracker, TrackerError> {
        let storage = |source| TrackerError::Storage {
            session_id: update.session_id.clone(),
            source,
        };
        let mut attempts = 0;
        let mut counted = false;
        loop {
            let existing = self.tracker(&update.session_id)?;
            // Agents' own trackers are counted; the proxy writes app and kube sessions' itself.
            if existing.is_none()
                && !counted
                && !matches!(host.role, HostRole::App | HostRole::Proxy)
            {
                self.count_new_tracker(host.host_id)?;
                counted = true;
            }
            let now = self.now();
            let next = next_version(
                existing.as_ref().map(|v| &v.value),
                host,
                server,
                update,
                now,
            )?;
            let expected = existing.as_ref().map(|v| v.revision);
            match self
                .store()
                .swap_leased(&next, expected, lease_end(next.state, now))
            {
                Ok(_) => return Ok(next),
                Err(StorageError::Conflict { .. }) if attempts < 3 => attempts += 1,
                Err(e) => return Err(storage(e)),
            }
        }
    }

    /// Counts a tracker `host_id` creates: an agent (even a malicious one) creates at most
    /// [`NEW_TRACKERS_PER_SECOND`] a second after a burst, so the trackers it can make stay
    /// bounded by the rate times their retention.
    fn count_new_tracker(&self, host_id: &str) -> Result<(), TrackerError> {
        use super::refusal_limit::RefusalLimiter;
        let mut table = self
            .tracker_creations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if table.len() >= super::refusal_limit::MAX_TRACKED_IDENTITIES
            && !table.contains_key(host_id)
        {
            table.clear();
        }
        let verdict = table
            .entry(host_id.to_string())
            .or_insert_with(|| {
                RefusalLimiter::new(f64::from(NEW_TRACKERS_PER_SECOND), NEW_TRACKERS_BURST)
            })
            .admit(self.now());
        if verdict.write {
            Ok(())
        } else {
            Err(TrackerError::TooMany {
                host_id: host_id.to_string(),
                per_second: NEW_TRACKERS_PER_SECOND,
            })
        }
    }

    /// The node name certified for `host_id`, if it holds one.
    fn certified_name(&self, host_id: &str) -> Option<String> {
        let claims = self.store().list::<HostNameClaim>().ok()?;
        claims
            .into_iter()
            .find(|c| c.value.host_id == host_id)
            .map(|c| c.value.name)
    }
}

/// An agent's request, checked for shape (the rules are [`AuthServer::update_tracker`]'s).
pub fn update_from_proto(r: UpdateSessionTrackerRequest) -> Result<TrackerUpdate, AuthError> {
    let kind = SessionKind::parse(&r.kind).ok_or_else(|| {
        AuthError::BadRequest(format!("unknown session kind {:?}: ssh or db", r.kind))
    })?;
    let state = match r.state.as_str() {
        "active" => TrackerState::Active,
        "terminated" => TrackerState::Terminated,
        other => {
            return Err(AuthError::BadRequest(format!(
                "unknown tracker state {other:?}: active or terminated"
            )));
        }
    };
    let short = |what: &str, v: &str| {
        if v.len() > 256 {
            Err(AuthError::BadRequest(format!(
                "{what} is longer than 256 bytes"
            )))
        } else {
            Ok(())
        }
    };
    short("user", &r.user)?;
    short("login", &r.login)?;
    short("target", &r.target)?;
    if r.participants.len() > MAX_PARTICIPANTS || r.participants.iter().any(|p| p.len() > 256) {
        return Err(AuthError::BadRequest(format!(
            "at most {MAX_PARTICIPANTS} participants of at most 256 bytes each"
        )));
    }
    Ok(TrackerUpdate {
        session_id: r.session_id,
        kind,
        user: r.user,
        login: r.login,
        target: r.target,
        participants: r.participants,
        state,
    })
}

/// The wire form of a tracker.
pub fn tracker_to_proto(t: SessionTracker) -> SessionTrackerInfo {
    SessionTrackerInfo {
        session_id: t.session_id,
        kind: t.kind.name().into(),
        route: t.route,
        user: t.user,
        participants: t.participants,
        host_id: t.host_id,
        server: t.server,
        target: t.target,
        login: t.login,
        state: t.state.name().into(),
        created: t.created,
        last_seen: t.last_seen,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(state: TrackerState) -> TrackerUpdate {
        TrackerUpdate {
            session_id: "3f2b8c1e-0000-4000-8000-000000000001".into(),
            kind: SessionKind::Ssh,
            user: "alice".into(),
            login: "root".into(),
            target: String::new(),
            participants: vec!["alice".into()],
            state,
        }
    }

    const NODE_A: TrackerHost<'static> = TrackerHost {
        host_id: "host-a",
        role: HostRole::Node,
    };
    const NODE_B: TrackerHost<'static> = TrackerHost {
        host_id: "host-b",
        role: HostRole::Node,
    };

    #[test]
    fn a_new_tracker_names_its_host_from_the_certificate() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let t = next_version(None, NODE_A, "web1", &update(TrackerState::Active), now).unwrap();
        assert_eq!(t.host_id, "host-a");
        assert_eq!(t.server, "web1");
        assert_eq!(t.route, "node");
        assert_eq!(t.participants, vec!["alice".to_string()]);
        assert_eq!(t.created, t.last_seen);
    }

    #[test]
    fn only_the_host_writes_its_tracker_and_an_ended_one_stays_ended() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let t = next_version(None, NODE_A, "", &update(TrackerState::Active), now).unwrap();
        assert!(matches!(
            next_version(Some(&t), NODE_B, "", &update(TrackerState::Active), now),
            Err(TrackerError::ForeignSession { .. })
        ));
        let ended =
            next_version(Some(&t), NODE_A, "", &update(TrackerState::Terminated), now).unwrap();
        assert_eq!(ended.state, TrackerState::Terminated);
        assert!(matches!(
            next_version(Some(&ended), NODE_A, "", &update(TrackerState::Active), now),
            Err(TrackerError::Ended { .. })
        ));
    }

    #[test]
    fn participants_are_merged_owner_first_once_each() {
        let others = vec!["bob".to_string(), "alice".to_string(), "bob".to_string()];
        assert_eq!(
            merge_participants("alice", &[&others]),
            vec!["alice".to_string(), "bob".to_string()]
        );
    }

    #[test]
    fn session_ids_are_checked() {
        assert!(check_session_id("3f2b8c1e-0000-4000-8000-000000000001").is_ok());
        for bad in ["", "..", "a/b", &"x".repeat(65), "a b"] {
            assert!(check_session_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn leases_depend_on_the_state() {
        let now = SystemTime::UNIX_EPOCH;
        assert_eq!(lease_end(TrackerState::Active, now), now + TRACKER_LEASE);
        assert_eq!(
            lease_end(TrackerState::Terminated, now),
            now + ENDED_RETENTION
        );
    }
}
