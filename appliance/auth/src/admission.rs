//! Auth's side of admission: the snapshot of roles, locks, users (with the roles they hold
//! now and the instant before which their certificates are void) and approved access
//! requests, built from the backend and kept until the backend changes; locks made and lifted; and the decision for the routes
//! that run in this process.
//!
//! This module never decides on its own: every decision is [`hop_admission::Snapshot::admit`].
//! When the backend cannot be reached, decisions come from the snapshot built last (its age, and
//! strict locking's bound on it, say how long); with none, or on any other error, routes are
//! refused, never let through.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hop_admission::{
    Admitted, IdentityStamp, Refusal, RequestStamp, Route, SessionTarget, Snapshot, SnapshotData,
    Subject, SubjectKind,
};
use hop_ca::Identity;
use hop_rbac::{AuthPreference, LockResource, LockTarget, Role, User};

use super::access_requests::{AccessRequest, RequestState};
use super::audit::EventKind;
use super::error::AuthError;
use super::resources;
use super::server::AuthServer;
use hop_api::timestamps::rfc3339;

/// Changes of roles, users, locks and the auth preference, from the backend's change feed.
pub struct AccessChanges {
    watcher: hop_storage::Watcher,
}

impl AccessChanges {
    /// Returns at the next change a decision reads (or when the feed fails: the caller then
    /// rebuilds anyway). Other writes (session trackers, presence, counters) are skipped.
    pub async fn next_relevant(&mut self) {
        loop {
            match self.watcher.recv().await {
                Ok(hop_storage::Event::Put(item)) if access_key(&item.key) => return,
                Ok(hop_storage::Event::Delete { key, .. }) if access_key(&key) => return,
                Ok(_) => {}
                Err(_) => return,
            }
        }
    }
}

/// Whether a backend key holds what an admission decision reads.
fn access_key(key: &str) -> bool {
    [
        "role",
        "user",
        "lock",
        "cluster_auth_preference",
        <AccessRequest as hop_storage::StoredResource>::KIND,
    ]
    .iter()
    .any(|kind| key.starts_with(&format!("/resources/{kind}/")))
}

/// How old the cached snapshot may grow before it is rebuilt even without a change.
const REBUILD_AFTER: Duration = Duration::from_secs(30);

/// A user certificate as a route received it (after its signature was verified).
#[derive(Debug, Clone, Copy)]
pub struct Presented<'a> {
    pub identity: &'a Identity,
    pub issued_at: SystemTime,
    pub expires: SystemTime,
    /// The OS login asked for, on SSH routes.
    pub login: Option<&'a str>,
    /// The session's target, on routes that know it (checked against a per-session MFA mark):
    /// node and login, database, kube cluster, or application.
    pub target: Option<SessionTarget<'a>>,
}

impl Presented<'_> {
    /// For deciding again a live session whose certificate's expiry does not end it (a role
    /// without `disconnect_expired_cert`, a per-session MFA certificate whose minute was for
    /// the start): the same certificate with its expiry moved just past `now`, so that the
    /// other checks (locks, deletion, roles, the mark's target) still run on it. Without this,
    /// the expiry would be the first refusal found and hide every later one.
    #[must_use]
    pub fn outliving_expiry(self, now: SystemTime) -> Self {
        Self {
            expires: self.expires.max(now + Duration::from_secs(1)),
            ..self
        }
    }

    /// The subject admission sees.
    fn subject(&self) -> Subject<'_> {
        let id = self.identity;
        let bound_route = if id.route_to_database.is_some() {
            Some(Route::Postgres)
        } else if id.route_to_app.is_some() {
            Some(Route::App)
        } else if id.route_to_kube_cluster.is_some() {
            Some(Route::Kube)
        } else {
            None
        };
        Subject {
            kind: if id.username.starts_with("bot-") {
                SubjectKind::Bot
            } else {
                SubjectKind::User
            },
            name: &id.username,
            roles: &id.roles,
            active_requests: &id.active_requests,
            traits: &id.traits,
            login: self.login,
            issued_at: self.issued_at,
            expires: self.expires,
            cluster: &id.cluster,
            bound_route,
            agent_role: "",
            target: self.target,
            session_mfa: id.session_mfa.as_ref().map(session_target),
        }
    }
}

/// A certificate's per-session MFA target as admission compares it with a session's.
#[must_use]
pub fn session_target(t: &hop_ca::SessionMfaTarget) -> SessionTarget<'_> {
    match t {
        hop_ca::SessionMfaTarget::Node { node, login } => SessionTarget::Node { node, login },
        hop_ca::SessionMfaTarget::Database {
            db_service,
            db_user,
            db_name,
        } => SessionTarget::Database {
            service: db_service,
            db_user,
            db_name,
        },
        hop_ca::SessionMfaTarget::KubeCluster { kube_cluster } => SessionTarget::KubeCluster {
            cluster: kube_cluster,
        },
        hop_ca::SessionMfaTarget::App { app } => SessionTarget::App { app },
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// Whole seconds, rounded up: a stamp voids every certificate issued in its second.
fn unix_secs_ceil(t: SystemTime) -> u64 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl AuthServer {
    /// The snapshot's data as it is in the backend now.
    pub fn admission_data(&self) -> Result<SnapshotData, AuthError> {
        let roles: Vec<Role> = self
            .store()
            .list::<Role>()?
            .into_iter()
            .map(|v| v.value)
            .collect();
        let locks = self
            .store()
            .list::<LockResource>()?
            .into_iter()
            .map(|v| v.value)
            .collect();
        let users = self
            .store()
            .list::<User>()?
            .into_iter()
            .map(|v| IdentityStamp {
                roles: resources::user_roles_and_traits(&v.value).0,
                not_before: v
                    .value
                    .status
                    .not_before
                    .map_or(0, |t| unix_secs(SystemTime::from(t))),
                name: v.value.metadata.name,
            })
            .collect();
        let locking_mode = self
            .store()
            .get::<AuthPreference>("cluster-auth-preference")?
            .and_then(|p| p.value.spec.locking_mode);
        let requests = self
            .store()
            .list::<AccessRequest>()?
            .into_iter()
            .map(|v| v.value)
            .filter(|r| r.state == RequestState::Approved)
            .map(|r| RequestStamp {
                id: r.id,
                user: r.user,
                roles: r.roles,
                expires: r.expires_unix,
            })
            .collect();
        Ok(SnapshotData {
            cluster: self.cluster_name().to_string(),
            requests,
            roles,
            locks,
            users,
            agents: None,
            locking_mode,
            taken_at: unix_secs(self.now()),
        })
    }

    /// A subscription to changes of what admission decisions read.
    pub fn access_changes(&self) -> AccessChanges {
        AccessChanges {
            watcher: self.store().backend().watch(),
        }
    }

    /// The current snapshot: rebuilt when the backend has changed since it was built, and at
    /// least every [`REBUILD_AFTER`] so that its age says how current it is. While the backend
    /// cannot be reached, the snapshot built last is returned as it is: existing identities are
    /// decided from it, and its growing age bounds how long (in strict locking mode an older
    /// snapshot than `hop_admission::STALE_AFTER` refuses everything; best effort serves it
    /// until the backend is back). Without one, or on any other error, the error is returned and
    /// every decision is refused.
    pub fn admission_snapshot(&self) -> Result<Arc<Snapshot>, AuthError> {
        let reachable = &self.metrics().backend_reachable;
        match self.rebuilt_admission_snapshot() {
            Ok(snap) => {
                reachable.store(true, std::sync::atomic::Ordering::Release);
                Ok(snap)
            }
            Err(e @ AuthError::Storage(hop_storage::StorageError::Unreachable { .. })) => {
                reachable.store(false, std::sync::atomic::Ordering::Release);
                let kept = self
                    .admission
                    .lock()
                    .map_err(|_| AuthError::Poisoned("admission cache"))?
                    .as_ref()
                    .map(|(revision, snap)| (*revision, snap.clone()));
                let floor = self
                    .admission_floor
                    .load(std::sync::atomic::Ordering::Acquire);
                match kept {
                    Some((revision, snap)) if revision >= floor => {
                        self.log_kept_snapshot(&snap, &e);
                        Ok(snap)
                    }
                    // Older than an access write this process confirmed: refuse instead.
                    _ => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    fn rebuilt_admission_snapshot(&self) -> Result<Arc<Snapshot>, AuthError> {
        let revision = self.store().backend().current_revision()?;
        let now = self.now();
        let mut cache = self
            .admission
            .lock()
            .map_err(|_| AuthError::Poisoned("admission cache"))?;
        if let Some((built_at, snap)) = cache.as_ref()
            && *built_at == revision
            && snap.age(now) < REBUILD_AFTER
        {
            return Ok(snap.clone());
        }
        let mut snap = Snapshot::new(self.admission_data()?);
        if let Some((_, previous)) = cache.as_ref() {
            snap.keep_checkers_of(previous);
        }
        let snap = Arc::new(snap);
        *cache = Some((revision, snap.clone()));
        let m = self.metrics();
        m.admission_taken_at.store(
            unix_secs(snap.taken_at()),
            std::sync::atomic::Ordering::Release,
        );
        m.admission_strict.store(
            snap.locking_mode() == hop_rbac::LockingMode::Strict,
            std::sync::atomic::Ordering::Release,
        );
        Ok(snap)
    }

    /// Raises the floor a kept snapshot must reach to be served during an outage to the
    /// backend's revision now, after this process wrote access data (best effort: when the
    /// revision cannot be read the backend is gone and nothing more was written).
    pub(super) fn note_access_write(&self) {
        if let Ok(revision) = self.store().backend().current_revision() {
            self.admission_floor
                .fetch_max(revision, std::sync::atomic::Ordering::AcqRel);
        }
    }

    /// Says, at most once every ten seconds, that decisions come from a kept snapshot.
    fn log_kept_snapshot(&self, snap: &Snapshot, e: &AuthError) {
        use std::sync::atomic::Ordering;
        let now = unix_secs(self.now());
        let last = KEPT_LOGGED.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= UNAVAILABLE_LOG_EVERY_S
            && KEPT_LOGGED
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                error = %e,
                age_s = snap.age(self.now()).as_secs(),
                locking_mode = ?snap.locking_mode(),
                "the cluster state cannot be read: deciding from the access data kept (strict \
                 locking refuses once it is older than five minutes)"
            );
        }
    }

    /// Decides whether the holder of `presented` may start on `route` now.
    pub fn admit(&self, presented: &Presented<'_>, route: Route) -> Result<Admitted, Refusal> {
        let snap = self.admission_snapshot().map_err(|e| self.unavailable(e))?;
        self.admit_on(&snap, presented, route)
    }

    /// Decides on a given snapshot (a live session deciding again when the snapshot changed).
    pub fn admit_on(
        &self,
        snap: &Snapshot,
        presented: &Presented<'_>,
        route: Route,
    ) -> Result<Admitted, Refusal> {
        snap.admit(&presented.subject(), route, self.now())
    }

    /// Decides on `snap`, a snapshot a route keeps between its refreshes. A refusal there is
    /// decided again on the current snapshot when the backend has moved on since, so that an
    /// identity created (or a role granted, a lock lifted) a moment ago is not refused for the
    /// kept snapshot's age; what the current snapshot refuses stays refused.
    pub fn admit_on_kept(
        &self,
        snap: &Arc<Snapshot>,
        presented: &Presented<'_>,
        route: Route,
    ) -> Result<Admitted, Refusal> {
        let refusal = match self.admit_on(snap, presented, route) {
            Ok(admitted) => return Ok(admitted),
            Err(refusal) => refusal,
        };
        match self.admission_snapshot() {
            Ok(current) if !Arc::ptr_eq(&current, snap) => {
                self.admit_on(&current, presented, route)
            }
            _ => Err(refusal),
        }
    }

    /// Decides whether agent `host_id` (host certificate valid until `expires`) may use
    /// `route` now: refused once a lock names its server id.
    pub fn admit_agent(
        &self,
        host_id: &str,
        expires: SystemTime,
        route: Route,
    ) -> Result<Admitted, Refusal> {
        let snap = self.admission_snapshot().map_err(|e| self.unavailable(e))?;
        self.admit_agent_on(&snap, host_id, expires, route)
    }

    /// [`Self::admit_agent`] on a snapshot already taken: a sweep over every connected agent
    /// takes one snapshot per sweep, not one per agent (each asks the backend for its current
    /// revision: a round trip per agent on PostgreSQL).
    pub fn admit_agent_on(
        &self,
        snap: &Snapshot,
        host_id: &str,
        expires: SystemTime,
        route: Route,
    ) -> Result<Admitted, Refusal> {
        let traits = std::collections::BTreeMap::new();
        let subject = Subject {
            kind: SubjectKind::Agent,
            name: host_id,
            roles: &[],
            active_requests: &[],
            traits: &traits,
            login: None,
            issued_at: UNIX_EPOCH,
            expires,
            cluster: self.cluster_name(),
            bound_route: None,
            agent_role: "",
            target: None,
            session_mfa: None,
        };
        snap.admit(&subject, route, self.now())
    }

    /// Writes an audit event for a refusal of verified identity `user` on `route`, with the
    /// reason code; at most a burst then one a second per identity, the rest counted and
    /// summarized (a locked user with a still valid certificate cannot flood the log).
    pub fn audit_refusal(
        &self,
        route: Route,
        user: &str,
        refusal: &Refusal,
        remote: Option<std::net::SocketAddr>,
    ) {
        use super::refusal_limit::{
            IDENTITY_REFUSAL_BURST, IDENTITY_REFUSALS_PER_SECOND, MAX_TRACKED_IDENTITIES,
            RefusalLimiter,
        };
        let verdict = {
            let mut table = self
                .refusals_by_identity
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if table.len() >= MAX_TRACKED_IDENTITIES && !table.contains_key(user) {
                table.clear();
            }
            table
                .entry(user.to_string())
                .or_insert_with(|| {
                    RefusalLimiter::new(IDENTITY_REFUSALS_PER_SECOND, IDENTITY_REFUSAL_BURST)
                })
                .admit(self.now())
        };
        if let Some(n) = verdict.summary {
            self.emit(
                self.event(EventKind::AccessRefused, user)
                    .field("reason", "rate_limited")
                    .field("unwritten", n)
                    .failed(
                        EventKind::AccessRefused,
                        format!("{n} more refusals of {user:?} not written"),
                    ),
            );
        }
        if verdict.write {
            self.write_refusal(route, user, refusal, remote);
        } else {
            self.metrics().audit_refusals_dropped.inc();
        }
    }

    fn write_refusal(
        &self,
        route: Route,
        user: &str,
        refusal: &Refusal,
        remote: Option<std::net::SocketAddr>,
    ) {
        self.emit(
            self.event(EventKind::AccessRefused, user)
                .remote(remote)
                .field("route", route.name())
                .field("reason", refusal.code())
                .failed(EventKind::AccessRefused, refusal.to_string()),
        );
    }

    /// [`Self::audit_refusal`] for a caller that proved no identity (no certificate, or one
    /// that did not verify): rate-limited (`auth::refusal_limit`), so strangers cannot flood the
    /// audit log. What is not written is counted and summarized in one event per interval.
    pub fn audit_unverified_refusal(
        &self,
        route: Route,
        refusal: &Refusal,
        remote: Option<std::net::SocketAddr>,
    ) {
        let verdict = self
            .refusals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .admit(self.now());
        if let Some(n) = verdict.summary {
            let why = format!(
                "{n} refusals of unauthenticated callers not written (more than {} per second)",
                super::refusal_limit::REFUSALS_PER_SECOND
            );
            self.emit(
                self.event(EventKind::AccessRefused, "anonymous")
                    .field("reason", "rate_limited")
                    .field("unwritten", n)
                    .failed(EventKind::AccessRefused, why),
            );
        }
        if verdict.write {
            self.write_refusal(route, "anonymous", refusal, remote);
        } else {
            self.metrics().audit_refusals_dropped.inc();
        }
    }

    /// Makes a lock on `target` (until `ttl` runs out, or until removed), voiding the
    /// certificates a locked user holds now; returns it.
    pub fn create_lock(
        &self,
        target: LockTarget,
        message: &str,
        ttl: Option<Duration>,
        actor: &str,
    ) -> Result<LockResource, AuthError> {
        let now = self.now();
        let mut lock = LockResource::new(
            &uuid::Uuid::new_v4().to_string(),
            target,
            message.trim(),
            actor,
        );
        lock.spec.created = Some(now.into());
        lock.spec.expires = ttl
            .map(|t| self.expiry_after(t))
            .transpose()?
            .map(Into::into);
        lock.validate()
            .map_err(|e| AuthError::BadRequest(e.to_string()))?;
        self.store().upsert(&lock)?;
        self.after_lock_written(&lock, actor)?;
        Ok(lock)
    }

    /// What follows a lock being written, whichever way it was: a locked user's certificates
    /// are void from now on, and the audit log has it.
    pub(super) fn after_lock_written(
        &self,
        lock: &LockResource,
        actor: &str,
    ) -> Result<(), AuthError> {
        let t = &lock.spec.target;
        let user = t
            .user
            .clone()
            .or_else(|| t.bot.as_ref().map(|b| format!("bot-{b}")));
        if let Some(name) = user {
            self.void_certificates(&name)?;
        }
        let mut ev = self
            .event(EventKind::LockCreated, actor)
            .field("lock", lock.metadata.name.clone())
            .field("target", t.describe())
            .field("message", lock.spec.message.clone());
        if let Some(e) = lock.expires() {
            ev = ev.field("expires", rfc3339(SystemTime::from(e)));
        }
        self.note_access_write();
        self.audit_durable(ev);
        Ok(())
    }

    /// Certificates `name` holds now stop being accepted (a user that does not exist: nothing
    /// to do, the lock alone holds).
    pub(super) fn void_certificates(&self, name: &str) -> Result<(), AuthError> {
        let Some(v) = self.store().get::<User>(name)? else {
            return Ok(());
        };
        let mut user = v.value;
        let stamp = UNIX_EPOCH + Duration::from_secs(unix_secs_ceil(self.now()));
        user.status.not_before = Some(stamp.into());
        self.store().update(&user, v.revision)?;
        self.note_access_write();
        Ok(())
    }

    /// Removes every lock whose target is user `name`; returns how many.
    pub(super) fn remove_user_locks(&self, name: &str) -> Result<usize, AuthError> {
        let mut removed = 0;
        for v in self.store().list::<LockResource>()? {
            if v.value.spec.target.user.as_deref() == Some(name) {
                self.store()
                    .delete::<LockResource>(&v.value.metadata.name)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The lock in force now that names user `name`, if any.
    pub(super) fn user_lock_in_force(&self, name: &str) -> Result<Option<LockResource>, AuthError> {
        // The user, a bot name, or any role the user holds now: `hop login` issues nothing a
        // lock would refuse everywhere anyway.
        let roles = self
            .store()
            .get::<User>(name)?
            .map(|u| resources::user_roles_and_traits(&u.value).0)
            .unwrap_or_default();
        let traits = std::collections::BTreeMap::new();
        let now = self.now();
        let subject = Subject {
            kind: if name.starts_with("bot-") {
                SubjectKind::Bot
            } else {
                SubjectKind::User
            },
            name,
            roles: &roles,
            active_requests: &[],
            traits: &traits,
            login: None,
            issued_at: now,
            expires: now + Duration::from_secs(3600),
            cluster: self.cluster_name(),
            bound_route: None,
            agent_role: "",
            target: None,
            session_mfa: None,
        };
        Ok(self
            .store()
            .list::<LockResource>()?
            .into_iter()
            .map(|v| v.value)
            .find(|l| hop_admission::lock_applies(l, &subject, now)))
    }
}

/// When deciding from a kept snapshot was last logged (seconds since the epoch).
static KEPT_LOGGED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// When the failure to read the access data was last logged (seconds since the epoch).
static UNAVAILABLE_LOGGED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// At most one log line about it in this many seconds (every decision fails alike meanwhile).
const UNAVAILABLE_LOG_EVERY_S: u64 = 10;

impl AuthServer {
    /// The refusal while the access data cannot be read (`e`): the words a user sees name no
    /// file or path of the appliance; the operator's log has the error itself, at most once
    /// every ten seconds however many decisions fail.
    pub fn unavailable(&self, e: AuthError) -> Refusal {
        use std::sync::atomic::Ordering;
        let now = self
            .now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = UNAVAILABLE_LOGGED.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= UNAVAILABLE_LOG_EVERY_S
            && UNAVAILABLE_LOGGED
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::error!(error = %e, "admission cannot read the access data; refusing every decision until it can");
        }
        Refusal::Unavailable {
            reason: "the access data cannot be read now (the operator's log says why)".into(),
        }
    }
}
