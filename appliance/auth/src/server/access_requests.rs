//! Access requests as Auth serves them: made by their requester, read by the requester and by
//! those who may review them, reviewed with a compare-and-swap on the stored record (so any
//! Auth instance serves them and concurrent reviews count once each), and assumed into a
//! certificate pair that carries the request's roles and names the request.
//!
//! Every decision is in [`crate::access_requests`]; this module reads and writes the backend,
//! issues certificates and writes the `access_request.*` audit events. Each call is admitted
//! first, so a locked or voided certificate can neither ask, review nor assume.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hop_rbac::{Role, User};

use super::login::LoginCertificates;
use super::{AuthServer, resources};
use crate::access_requests::{
    AccessRequest, Ask, RequestState, Review, check_assumable, check_reviewer, decide_create,
    may_review_role, resolve,
};
use crate::admission::Presented;
use crate::audit::EventKind;
use crate::error::AuthError;
use hop_api::timestamps::rfc3339;

/// How many times a review retries its compare-and-swap against concurrent reviews.
const REVIEW_ATTEMPTS: usize = 8;

/// How long a request is kept after its access (or its wait for reviews) ended, so that
/// `hop request show` and the web page still show how it ended.
pub const ENDED_REQUEST_RETENTION: Duration = Duration::from_secs(3600);

/// A new request as the caller asks it.
#[derive(Debug, Clone, Copy)]
pub struct NewAccessRequest<'a> {
    pub roles: &'a [String],
    pub reason: &'a str,
    pub max_duration: Option<Duration>,
}

/// A review as the caller gives it.
#[derive(Debug, Clone, Copy)]
pub struct ReviewAsk<'a> {
    pub id: &'a str,
    pub approve: bool,
    pub reason: &'a str,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

impl AuthServer {
    fn admit_caller(&self, presented: &Presented<'_>) -> Result<(), AuthError> {
        self.admit(presented, hop_admission::Route::AdminApi)
            .map(drop)
            .map_err(|r| AuthError::Denied(r.to_string()))
    }

    /// The definitions of the roles `user` holds now (from the backend, not the certificate).
    fn held_roles(&self, user: &str) -> Result<Vec<Role>, AuthError> {
        let u = self
            .store()
            .get::<User>(user)?
            .ok_or_else(|| AuthError::Denied(format!("user {user:?} no longer exists")))?;
        let mut roles = Vec::new();
        for name in resources::user_roles_and_traits(&u.value).0 {
            if let Some(r) = self.store().get::<Role>(&name)? {
                roles.push(r.value);
            }
        }
        Ok(roles)
    }

    fn stored_request(&self, id: &str) -> Result<hop_storage::Versioned<AccessRequest>, AuthError> {
        self.store()
            .get::<AccessRequest>(id)?
            .ok_or_else(|| AuthError::NotFound(format!("access request {id:?}")))
    }

    /// Deletes the requests that ended more than [`ENDED_REQUEST_RETENTION`] ago (approved,
    /// denied or never reviewed: each ends at its expiry); returns how many. Nothing can be
    /// assumed from an ended request, so this only bounds what the backend keeps; locks that
    /// name a request stay until removed.
    pub fn purge_ended_access_requests(&self) -> Result<usize, AuthError> {
        let cutoff = unix(self.now()).saturating_sub(ENDED_REQUEST_RETENTION.as_secs());
        let mut purged = 0;
        for v in self.store().list::<AccessRequest>()? {
            if v.value.expires_unix < cutoff && self.store().delete::<AccessRequest>(&v.value.id)? {
                purged += 1;
            }
        }
        Ok(purged)
    }

    /// Makes a pending request for the caller; audited as `access_request.create`.
    pub fn create_access_request(
        &self,
        presented: &Presented<'_>,
        ask: &NewAccessRequest<'_>,
    ) -> Result<AccessRequest, AuthError> {
        let user = presented.identity.username.clone();
        let result = self.create_access_request_inner(presented, ask);
        let mut ev = self
            .event(EventKind::AccessRequestCreate, &user)
            .field("roles", ask.roles.to_vec())
            .field("reason", ask.reason.to_string());
        match &result {
            Ok(r) => {
                ev = ev
                    .field("request_id", r.id.clone())
                    .field("state", r.state.name())
                    .field(
                        "expires",
                        rfc3339(UNIX_EPOCH + Duration::from_secs(r.expires_unix)),
                    );
            }
            Err(e) => ev = ev.failed(EventKind::AccessRequestCreate, e.to_string()),
        }
        self.audit_durable(ev);
        result
    }

    fn create_access_request_inner(
        &self,
        presented: &Presented<'_>,
        ask: &NewAccessRequest<'_>,
    ) -> Result<AccessRequest, AuthError> {
        self.admit_caller(presented)?;
        let user = &presented.identity.username;
        let held = self.held_roles(user)?;
        let mut names = ask.roles.to_vec();
        names.sort();
        names.dedup();
        let mut requested = Vec::new();
        for name in &names {
            let def = self.store().get::<Role>(name)?.map(|v| v.value);
            requested.push((name.clone(), def));
        }
        let now = unix(self.now());
        let pending = self
            .store()
            .list::<AccessRequest>()?
            .iter()
            .filter(|v| {
                v.value.user == *user
                    && v.value.state == RequestState::Pending
                    && !v.value.expired(now)
            })
            .count();
        let terms = decide_create(&Ask {
            held: &held,
            requested: &requested,
            reason: ask.reason,
            max_duration_secs: ask.max_duration.map(|d| d.as_secs().max(1)),
            pending,
            now,
        })?;
        let req = AccessRequest {
            id: uuid::Uuid::new_v4().to_string(),
            user: user.clone(),
            roles: names,
            reason: ask.reason.trim().to_string(),
            state: RequestState::Pending,
            created_unix: now,
            expires_unix: terms.expires_unix,
            thresholds: terms.thresholds,
            suggested_reviewers: terms.suggested_reviewers,
            reviews: Vec::new(),
        };
        self.store().create(&req)?;
        Ok(req)
    }

    /// The requests the caller made or may review, newest first.
    pub fn list_access_requests(
        &self,
        presented: &Presented<'_>,
    ) -> Result<Vec<AccessRequest>, AuthError> {
        self.admit_caller(presented)?;
        let user = &presented.identity.username;
        let held = self.held_roles(user)?;
        let mut out: Vec<AccessRequest> = self
            .store()
            .list::<AccessRequest>()?
            .into_iter()
            .map(|v| v.value)
            .filter(|r| visible(r, user, &held))
            .collect();
        out.sort_by_key(|r| std::cmp::Reverse(r.created_unix));
        Ok(out)
    }

    /// One request the caller made or may review.
    pub fn get_access_request(
        &self,
        presented: &Presented<'_>,
        id: &str,
    ) -> Result<AccessRequest, AuthError> {
        self.admit_caller(presented)?;
        let user = &presented.identity.username;
        let req = self.stored_request(id)?.value;
        if !visible(&req, user, &self.held_roles(user)?) {
            return Err(AuthError::NotFound(format!("access request {id:?}")));
        }
        Ok(req)
    }

    /// Records the caller's review and what it resolves the request to; audited as
    /// `access_request.review`, and `access_request.update` when the state changed.
    pub fn review_access_request(
        &self,
        presented: &Presented<'_>,
        ask: &ReviewAsk<'_>,
    ) -> Result<AccessRequest, AuthError> {
        let reviewer = presented.identity.username.clone();
        let result = self.review_inner(presented, ask);
        let mut ev = self
            .event(EventKind::AccessRequestReview, &reviewer)
            .field("request_id", ask.id.to_string())
            .field(
                "proposed_state",
                if ask.approve { "APPROVED" } else { "DENIED" },
            )
            .field("reason", ask.reason.to_string());
        match &result {
            Ok(r) => {
                ev = ev
                    .field("state", r.state.name())
                    .field("requester", r.user.clone())
                    .field("roles", r.roles.clone());
            }
            Err(e) => ev = ev.failed(EventKind::AccessRequestReview, e.to_string()),
        }
        self.audit_durable(ev);
        if let Ok(r) = &result
            && r.state != RequestState::Pending
            && r.reviews.last().is_some_and(|x| x.author == reviewer)
        {
            self.audit_durable(
                self.event(EventKind::AccessRequestUpdate, &reviewer)
                    .field("request_id", r.id.clone())
                    .field("state", r.state.name())
                    .field("requester", r.user.clone())
                    .field("roles", r.roles.clone())
                    .field("reviews", r.reviews.len()),
            );
        }
        result
    }

    fn review_inner(
        &self,
        presented: &Presented<'_>,
        ask: &ReviewAsk<'_>,
    ) -> Result<AccessRequest, AuthError> {
        self.admit_caller(presented)?;
        if ask.reason.len() > crate::access_requests::MAX_REASON {
            return Err(crate::access_requests::RequestError::ReasonTooLong.into());
        }
        let reviewer = &presented.identity.username;
        let held = self.held_roles(reviewer)?;
        for _ in 0..REVIEW_ATTEMPTS {
            let stored = self.stored_request(ask.id)?;
            let mut req = stored.value;
            let now = unix(self.now());
            check_reviewer(&req, reviewer, &held, now)?;
            req.reviews.push(Review {
                author: reviewer.clone(),
                approve: ask.approve,
                reason: ask.reason.trim().to_string(),
                created_unix: now,
            });
            req.state = resolve(&req);
            match self.store().update(&req, stored.revision) {
                Ok(_) => return Ok(req),
                Err(hop_storage::StorageError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(AuthError::Internal(
            "the access request kept changing under concurrent reviews; try again".into(),
        ))
    }

    /// A certificate pair for the caller with the roles of the approved requests `ids` added
    /// (none: back to the roles the user holds), until the earliest of the requests' expiry,
    /// the caller's certificate's expiry and the roles' `max_session_ttl`. Audited as
    /// `access_request.update` (`assumed` or `dropped`).
    pub fn assume_access_requests(
        &self,
        presented: &Presented<'_>,
        ids: &[String],
        keys: (&str, &[u8]),
    ) -> Result<LoginCertificates, AuthError> {
        let user = presented.identity.username.clone();
        let result = self.assume_inner(presented, ids, keys);
        let action = if ids.is_empty() { "dropped" } else { "assumed" };
        let mut ev = self
            .event(EventKind::AccessRequestUpdate, &user)
            .field("action", action)
            .field("ids", ids.to_vec());
        match &result {
            Ok(c) => {
                ev = ev
                    .field("roles", c.roles.clone())
                    .field("expires", rfc3339(c.expires));
            }
            Err(e) => ev = ev.failed(EventKind::AccessRequestUpdate, e.to_string()),
        }
        self.audit_durable(ev);
        result
    }

    fn assume_inner(
        &self,
        presented: &Presented<'_>,
        ids: &[String],
        keys: (&str, &[u8]),
    ) -> Result<LoginCertificates, AuthError> {
        self.admit_caller(presented)?;
        let identity = presented.identity;
        let user = self
            .store()
            .get::<User>(&identity.username)?
            .ok_or_else(|| AuthError::Denied("the user no longer exists".into()))?
            .value;
        let (mut role_names, traits) = resources::user_roles_and_traits(&user);
        let now = self.now();
        let mut until = presented.expires;
        for id in ids {
            let req = self.stored_request(id)?.value;
            check_assumable(&req, &identity.username, unix(now))?;
            until = until.min(UNIX_EPOCH + Duration::from_secs(req.expires_unix));
            for r in req.roles {
                if !role_names.contains(&r) {
                    role_names.push(r);
                }
            }
        }
        let checker = self.checker_for(&role_names, &traits)?;
        let left = until.duration_since(now).unwrap_or_default();
        let ttl = left.min(checker.max_session_ttl());
        if ttl < Duration::from_secs(1) {
            return Err(AuthError::Denied(
                "no time is left on this login or request; run `hop login`".into(),
            ));
        }
        let mut identity = self.user_identity(&user.metadata.name, &checker, traits);
        identity.active_requests = ids.to_vec();
        self.sign_user_pair(identity, keys.0, keys.1, ttl, now)
    }
}

/// Whether `user` (holding `held`) may see `req`: their own, or one they may review.
fn visible(req: &AccessRequest, user: &str, held: &[Role]) -> bool {
    req.user == user || req.roles.iter().all(|r| may_review_role(held, r))
}
