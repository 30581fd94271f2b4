//! The decision: [`Snapshot::admit`], its typed refusal, and what an admitted subject carries.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hop_rbac::{AccessChecker, AccessDenied, LockingMode, Role};

use crate::locks::lock_applies;
use crate::snapshot::{IdentityStamp, STALE_AFTER, Snapshot};
use crate::subject::{Route, Subject, SubjectKind};

/// Why admission refused. Each variant has a stable [`code`](Refusal::code) for audit events;
/// the message is what the user is shown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the certificate expired {ago}s ago; run `hop login`")]
    Expired { ago: u64 },
    #[error("the certificate was issued by cluster {presented:?}, not by this cluster ({ours:?})")]
    OtherCluster { presented: String, ours: String },
    #[error("{what} cannot be used on the {route} route")]
    WrongCertificate {
        what: &'static str,
        route: &'static str,
    },
    #[error(
        "access data from Auth is {age_secs}s old and locking mode is strict (limit {limit_secs}s); try again when Auth is reachable"
    )]
    Stale { age_secs: u64, limit_secs: u64 },
    #[error("{kind} {name:?} no longer exists")]
    Deleted { kind: &'static str, name: String },
    #[error("{target} is locked{}", message_suffix(.message))]
    Locked { target: String, message: String },
    #[error(
        "this certificate of {name:?} was issued before its last lock or role change; run `hop login` again"
    )]
    Voided { name: String },
    #[error(
        "access request {id} of {name:?} is no longer approved or has expired; run `hop request drop` or `hop login`"
    )]
    RequestEnded { name: String, id: String },
    #[error("role {role:?} was taken away from {name:?}; run `hop login` again")]
    RoleRemoved { name: String, role: String },
    #[error(
        "a role of {name:?} sets require_session_mfa, and per-session MFA is not available on the {route} route yet: the session is refused"
    )]
    SessionMfaUnavailable { name: String, route: &'static str },
    #[error(
        "a role of {name:?} sets require_session_mfa: {reason} (`hop ssh`, `hop db login`, `hop kube login`, `hop apps login`, `hop proxy app` and the web terminal ask for a security key tap and get a one-minute certificate for that one target)"
    )]
    SessionMfaRequired { name: String, reason: String },
    #[error("access denied to {name:?}: {reason}")]
    Denied { name: String, reason: String },
    #[error("the roles of {name:?} cannot be evaluated: {reason}")]
    RoleError { name: String, reason: String },
    #[error("access data is unavailable ({reason}); refusing until it is back")]
    Unavailable { reason: String },
    /// The CA key that signed the certificate was dropped by a CA rotation (`standby`).
    #[error(
        "the certificate of {name:?} is from a CA key a rotation dropped; run `hop login` (or log in again in the browser)"
    )]
    KeyRotatedOut { name: String },
    /// A state-changing web request without the session's CSRF token or from another origin.
    #[error("{reason}: the request is refused as possibly forged from another site")]
    CrossSite { reason: &'static str },
}

fn message_suffix(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

impl Refusal {
    /// The reason code audit events carry.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::Expired { .. } => "expired",
            Self::OtherCluster { .. } => "other_cluster",
            Self::WrongCertificate { .. } => "wrong_certificate",
            Self::Stale { .. } => "snapshot_stale",
            Self::Deleted { .. } => "deleted",
            Self::Locked { .. } => "locked",
            Self::Voided { .. } => "voided",
            Self::RoleRemoved { .. } => "role_removed",
            Self::RequestEnded { .. } => "access_request_ended",
            Self::SessionMfaUnavailable { .. } => "session_mfa_unavailable",
            Self::SessionMfaRequired { .. } => "session_mfa_required",
            Self::Denied { .. } => "access_denied",
            Self::RoleError { .. } => "role_error",
            Self::Unavailable { .. } => "admission_unavailable",
            Self::CrossSite { .. } => "cross_site",
            Self::KeyRotatedOut { .. } => "ca_untrusted",
        }
    }
}

/// A subject admission let through, with the roles it holds now, for the route's own question
/// (which node login, which database, which rule).
#[derive(Debug)]
pub struct Admitted {
    name: String,
    checker: AccessChecker,
}

impl Admitted {
    /// The role checker built from the roles the identity holds now.
    #[must_use]
    pub fn checker(&self) -> &AccessChecker {
        &self.checker
    }

    /// Turns a route's RBAC answer into a refusal naming the subject.
    pub fn require(&self, answer: Result<(), AccessDenied>) -> Result<(), Refusal> {
        answer.map_err(|e| Refusal::Denied {
            name: self.name.clone(),
            reason: e.to_string(),
        })
    }
}

impl Snapshot {
    /// Decides whether `subject` may start on `route` at `now`. Live sessions call it again
    /// with each new snapshot; a refusal then ends them.
    pub fn admit(
        &self,
        subject: &Subject<'_>,
        route: Route,
        now: SystemTime,
    ) -> Result<Admitted, Refusal> {
        check_validity(subject, &self.cluster, now)?;
        check_certificate_kind(subject, route)?;
        self.check_fresh(subject, now)?;
        let stamp = self.existing(subject)?;
        if let Some(lock) = self.locks.iter().find(|l| lock_applies(l, subject, now)) {
            return Err(Refusal::Locked {
                target: lock.spec.target.describe(),
                message: lock.spec.message.clone(),
            });
        }
        let granted = self.requested_roles(subject, now)?;
        if let Some(stamp) = stamp {
            check_stamp(subject, stamp, &granted)?;
        }
        let checker = self
            .checkers
            .get_or_compile(subject.roles, subject.traits, || {
                let roles: Vec<Role> = subject
                    .roles
                    .iter()
                    .filter_map(|r| self.roles.get(r).cloned())
                    .collect();
                AccessChecker::new(&roles, subject.traits)
            })
            .map_err(|e| Refusal::RoleError {
                name: subject.name.into(),
                reason: e.to_string(),
            })?;
        if route.is_session() && checker.require_session_mfa() {
            check_session_mfa(subject, route)?;
        }
        Ok(Admitted {
            name: subject.name.into(),
            checker,
        })
    }

    /// In strict mode (the cluster's, or a role's `lock: strict`), too old a snapshot refuses.
    fn check_fresh(&self, subject: &Subject<'_>, now: SystemTime) -> Result<(), Refusal> {
        let strict = self.locking_mode == LockingMode::Strict
            || subject.roles.iter().any(|r| {
                self.roles
                    .get(r)
                    .is_some_and(|r| r.spec.options.lock == Some(LockingMode::Strict))
            });
        let age = self.age(now);
        if strict && age > STALE_AFTER {
            return Err(Refusal::Stale {
                age_secs: age.as_secs(),
                limit_secs: STALE_AFTER.as_secs(),
            });
        }
        Ok(())
    }

    /// The roles the access requests the certificate names grant: each must be in the
    /// snapshot (approved), the subject's own, and unexpired at `now`.
    fn requested_roles(
        &self,
        subject: &Subject<'_>,
        now: SystemTime,
    ) -> Result<Vec<&str>, Refusal> {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let mut granted = Vec::new();
        for id in subject.active_requests {
            match self.requests.get(id) {
                Some(r) if r.user == subject.name && now < r.expires => {
                    granted.extend(r.roles.iter().map(String::as_str));
                }
                _ => {
                    return Err(Refusal::RequestEnded {
                        name: subject.name.into(),
                        id: id.clone(),
                    });
                }
            }
        }
        Ok(granted)
    }

    /// The identity's stamp: `Deleted` when it no longer exists; `None` when this snapshot does
    /// not list that kind of identity (agents, on a node).
    fn existing(&self, subject: &Subject<'_>) -> Result<Option<&IdentityStamp>, Refusal> {
        let (kind, stamps) = match subject.kind {
            SubjectKind::User => ("user", Some(&self.users)),
            SubjectKind::Bot => ("bot", Some(&self.users)),
            SubjectKind::Agent => ("agent", self.agents.as_ref()),
        };
        let Some(map) = stamps else {
            return Ok(None);
        };
        map.get(subject.name)
            .map(Some)
            .ok_or_else(|| Refusal::Deleted {
                kind,
                name: subject.name.into(),
            })
    }
}

/// The certificate is not void (issued before the identity's last lock), and the roles it
/// carries are all still the identity's own or granted by its access requests.
fn check_stamp(
    subject: &Subject<'_>,
    stamp: &IdentityStamp,
    granted: &[&str],
) -> Result<(), Refusal> {
    let issued = subject
        .issued_at
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    if stamp.not_before > issued {
        return Err(Refusal::Voided {
            name: subject.name.into(),
        });
    }
    if subject.kind != SubjectKind::Agent
        && let Some(gone) = subject
            .roles
            .iter()
            .find(|r| !stamp.roles.contains(r) && !granted.contains(&r.as_str()))
    {
        return Err(Refusal::RoleRemoved {
            name: subject.name.into(),
            role: gone.clone(),
        });
    }
    Ok(())
}

/// A session under `require_session_mfa`: on SSH, database, Kubernetes and application routes,
/// only a certificate marked for this very target (node and login; database service, user and
/// name; kube cluster; application); the other routes have no per-session MFA flow yet and are
/// refused by name.
fn check_session_mfa(subject: &Subject<'_>, route: Route) -> Result<(), Refusal> {
    if !route.has_session_mfa() {
        return Err(Refusal::SessionMfaUnavailable {
            name: subject.name.into(),
            route: route.name(),
        });
    }
    let refuse = |reason: String| {
        Err(Refusal::SessionMfaRequired {
            name: subject.name.into(),
            reason,
        })
    };
    let Some(mark) = subject.session_mfa else {
        return refuse("the certificate carries no per-session MFA mark".into());
    };
    match subject.target {
        Some(target) if target == mark && target.served_on(route) => Ok(()),
        Some(target) => refuse(format!(
            "the certificate's MFA mark is for {}, not {}",
            mark.describe(),
            target.describe()
        )),
        None => refuse("the session's target is not known to check the MFA mark against".into()),
    }
}

fn check_validity(subject: &Subject<'_>, cluster: &str, now: SystemTime) -> Result<(), Refusal> {
    if now >= subject.expires {
        return Err(Refusal::Expired {
            ago: now
                .duration_since(subject.expires)
                .unwrap_or_default()
                .as_secs(),
        });
    }
    if !cluster.is_empty() && subject.cluster != cluster {
        return Err(Refusal::OtherCluster {
            presented: subject.cluster.into(),
            ours: cluster.into(),
        });
    }
    Ok(())
}

/// A host certificate only on agent routes, a user certificate only on user routes, and a
/// route certificate only on its own route.
fn check_certificate_kind(subject: &Subject<'_>, route: Route) -> Result<(), Refusal> {
    let wrong = |what| {
        Err(Refusal::WrongCertificate {
            what,
            route: route.name(),
        })
    };
    match (subject.kind, route.is_agent_route()) {
        (SubjectKind::Agent, false) => return wrong("an agent's host certificate"),
        (SubjectKind::User | SubjectKind::Bot, true) => return wrong("a user certificate"),
        _ => {}
    }
    match subject.bound_route {
        Some(bound) if !same_route_family(bound, route) => wrong(bound_name(bound)),
        _ => Ok(()),
    }
}

/// A database route certificate serves either database protocol (the database's resource
/// says which); other route certificates serve exactly their route.
fn same_route_family(bound: Route, route: Route) -> bool {
    let db = |r| matches!(r, Route::Postgres | Route::MySql);
    bound == route || (db(bound) && db(route))
}

fn bound_name(route: Route) -> &'static str {
    match route {
        Route::Postgres | Route::MySql => "a database route certificate",
        Route::App => "an application route certificate",
        Route::Kube => "a Kubernetes route certificate",
        _ => "a route certificate",
    }
}
