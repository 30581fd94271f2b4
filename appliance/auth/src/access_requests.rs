//! Access requests: a user asks for roles they may request (`allow.request`), others who may
//! review those roles (`allow.review_requests`) approve or deny, and an approved request lets
//! its requester's certificates carry the roles until it expires.
//!
//! This module owns what a request is in the backend ([`AccessRequest`], kind
//! `access_request`) and the pure decisions: whether a user may ask ([`decide_create`]: the
//! roles, the reason, the thresholds and expiry that apply), whether a user may review
//! ([`check_reviewer`]: not their own, review rights for every role asked, once), what the
//! reviews so far resolve to ([`resolve`]: every approval threshold met approves, any denial
//! threshold met denies), and whether a request may be assumed ([`check_assumable`]). It never
//! does IO and never reads a clock: `now` is passed in (Unix seconds).

use std::collections::BTreeSet;

use hop_rbac::{AccessReviewThreshold, Role};
use hop_storage::StoredResource;
use serde::{Deserialize, Serialize};

/// How long an approved request grants access when no role bounds it.
pub const DEFAULT_REQUEST_TTL_SECS: u64 = 8 * 3600;
/// The longest reason kept.
pub const MAX_REASON: usize = 4096;
/// The most pending, unexpired requests one user may have at once.
pub const MAX_PENDING_PER_USER: usize = 16;
const WILDCARD: &str = "*";

/// Where a request stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RequestState {
    #[default]
    Pending,
    Approved,
    Denied,
}

impl RequestState {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Approved => "APPROVED",
            Self::Denied => "DENIED",
        }
    }
}

/// One reviewer's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    pub author: String,
    pub approve: bool,
    #[serde(default)]
    pub reason: String,
    pub created_unix: u64,
}

/// The approvals and denials that resolve a request (at least one each).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Threshold {
    pub approve: u32,
    pub deny: u32,
}

impl From<&AccessReviewThreshold> for Threshold {
    fn from(t: &AccessReviewThreshold) -> Self {
        Self {
            approve: t.approvals(),
            deny: t.denials(),
        }
    }
}

/// An access request as the backend keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRequest {
    pub id: String,
    pub user: String,
    pub roles: Vec<String>,
    #[serde(default)]
    pub reason: String,
    pub state: RequestState,
    pub created_unix: u64,
    /// When the access (and a pending request) ends.
    pub expires_unix: u64,
    /// Fixed at creation from the requester's roles.
    pub thresholds: Vec<Threshold>,
    #[serde(default)]
    pub suggested_reviewers: Vec<String>,
    #[serde(default)]
    pub reviews: Vec<Review>,
}

impl StoredResource for AccessRequest {
    const KIND: &'static str = "access_request";
    fn name(&self) -> &str {
        &self.id
    }
}

impl AccessRequest {
    /// Whether its access time is over at `now`.
    #[must_use]
    pub fn expired(&self, now: u64) -> bool {
        now >= self.expires_unix
    }
}

/// Why a request, a review or an assumption was refused (the caller's fault in every case).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("no role was asked for")]
    NoRoles,
    #[error("your roles do not allow requesting role {0:?}")]
    NotRequestable(String),
    #[error("role {0:?} does not exist")]
    UnknownRole(String),
    #[error("you already hold role {0:?}")]
    AlreadyHeld(String),
    #[error("you have {MAX_PENDING_PER_USER} pending access requests already")]
    TooManyPending,
    #[error("a reason is required to request these roles (--reason)")]
    ReasonRequired,
    #[error("the reason is longer than {MAX_REASON} bytes")]
    ReasonTooLong,
    #[error("nobody may review their own access request")]
    OwnRequest,
    #[error("your roles do not allow reviewing requests for role {0:?}")]
    MayNotReview(String),
    #[error("you already reviewed access request {0}")]
    AlreadyReviewed(String),
    #[error("access request {id} is {state}, not pending")]
    NotPending { id: String, state: &'static str },
    #[error("access request {0} has expired")]
    Expired(String),
    #[error("access request {0} is not yours")]
    NotYours(String),
    #[error("access request {id} is {state}, not approved")]
    NotApproved { id: String, state: &'static str },
}

/// The terms a new request gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestTerms {
    pub thresholds: Vec<Threshold>,
    pub suggested_reviewers: Vec<String>,
    pub expires_unix: u64,
}

/// What a request asks for, as it reaches [`decide_create`].
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    /// The requester's roles now (their definitions).
    pub held: &'a [Role],
    /// The definitions of the roles asked for (`None`: no such role).
    pub requested: &'a [(String, Option<Role>)],
    pub reason: &'a str,
    /// A shorter access than the roles allow, if asked.
    pub max_duration_secs: Option<u64>,
    /// The requester's pending, unexpired requests.
    pub pending: usize,
    pub now: u64,
}

/// Whether the requester may ask for these roles, and on what terms: each role must be allowed
/// by some held role's `allow.request.roles` and not denied by any; a reason is needed when a
/// role allowing it says `reason.mode: required`; the thresholds and suggested reviewers of
/// every allowing role apply; access lasts at most the allowing roles' `max_duration`, the
/// requested roles' `max_session_ttl`, and what was asked.
pub fn decide_create(ask: &Ask<'_>) -> Result<RequestTerms, RequestError> {
    if ask.requested.is_empty() {
        return Err(RequestError::NoRoles);
    }
    if ask.reason.len() > MAX_REASON {
        return Err(RequestError::ReasonTooLong);
    }
    if ask.pending >= MAX_PENDING_PER_USER {
        return Err(RequestError::TooManyPending);
    }
    let denied: BTreeSet<&str> = ask
        .held
        .iter()
        .filter_map(|r| r.spec.deny.request.as_ref())
        .flat_map(|c| c.roles.iter().map(String::as_str))
        .collect();
    let mut terms = RequestTerms {
        thresholds: Vec::new(),
        suggested_reviewers: Vec::new(),
        expires_unix: ask.now + DEFAULT_REQUEST_TTL_SECS,
    };
    let mut longest = None::<u64>;
    let mut reason_required = false;
    for (name, def) in ask.requested {
        let def = def
            .as_ref()
            .ok_or_else(|| RequestError::UnknownRole(name.clone()))?;
        if ask.held.iter().any(|r| &r.metadata.name == name) {
            return Err(RequestError::AlreadyHeld(name.clone()));
        }
        if denied.contains(name.as_str()) || denied.contains(WILDCARD) {
            return Err(RequestError::NotRequestable(name.clone()));
        }
        let allowing: Vec<_> = ask
            .held
            .iter()
            .filter_map(|r| r.spec.allow.request.as_ref())
            .filter(|c| c.roles.iter().any(|x| x == name || x == WILDCARD))
            .collect();
        if allowing.is_empty() {
            return Err(RequestError::NotRequestable(name.clone()));
        }
        for c in &allowing {
            reason_required |= c.reason_required();
            terms
                .thresholds
                .extend(c.thresholds.iter().map(Threshold::from));
            terms
                .suggested_reviewers
                .extend(c.suggested_reviewers.iter().cloned());
            if let Some(d) = c.max_duration {
                longest =
                    Some(longest.map_or(d.as_std().as_secs(), |l| l.max(d.as_std().as_secs())));
            }
        }
        if let Some(ttl) = def.spec.options.max_session_ttl {
            terms.expires_unix = terms.expires_unix.min(ask.now + ttl.as_std().as_secs());
        }
    }
    if reason_required && ask.reason.trim().is_empty() {
        return Err(RequestError::ReasonRequired);
    }
    for cap in [longest, ask.max_duration_secs].into_iter().flatten() {
        terms.expires_unix = terms.expires_unix.min(ask.now + cap);
    }
    if terms.thresholds.is_empty() {
        terms.thresholds.push(Threshold {
            approve: 1,
            deny: 1,
        });
    }
    terms.thresholds.dedup();
    terms.suggested_reviewers.sort();
    terms.suggested_reviewers.dedup();
    Ok(terms)
}

/// Whether `reviewer` (holding `roles`) may review `req` at `now`: not their own, still
/// pending and unexpired, not reviewed by them before, and every requested role within their
/// `allow.review_requests.roles` and outside their `deny.review_requests.roles`.
pub fn check_reviewer(
    req: &AccessRequest,
    reviewer: &str,
    roles: &[Role],
    now: u64,
) -> Result<(), RequestError> {
    if req.user == reviewer {
        return Err(RequestError::OwnRequest);
    }
    if req.state != RequestState::Pending {
        return Err(RequestError::NotPending {
            id: req.id.clone(),
            state: req.state.name(),
        });
    }
    if req.expired(now) {
        return Err(RequestError::Expired(req.id.clone()));
    }
    if req.reviews.iter().any(|r| r.author == reviewer) {
        return Err(RequestError::AlreadyReviewed(req.id.clone()));
    }
    for name in &req.roles {
        if !may_review_role(roles, name) {
            return Err(RequestError::MayNotReview(name.clone()));
        }
    }
    Ok(())
}

/// Whether `roles` let their holder review requests for role `name`.
#[must_use]
pub fn may_review_role(roles: &[Role], name: &str) -> bool {
    let names = |c: Option<&hop_rbac::AccessReviewConditions>| {
        c.is_some_and(|c| c.roles.iter().any(|x| x == name || x == WILDCARD))
    };
    let allowed = roles
        .iter()
        .any(|r| names(r.spec.allow.review_requests.as_ref()));
    let denied = roles
        .iter()
        .any(|r| names(r.spec.deny.review_requests.as_ref()));
    allowed && !denied
}

/// What the reviews so far resolve `req` to: denied once any threshold's denial count is met,
/// approved once every threshold's approval count is met, else pending.
#[must_use]
pub fn resolve(req: &AccessRequest) -> RequestState {
    let count = |approve: bool| {
        let n = req.reviews.iter().filter(|r| r.approve == approve).count();
        u32::try_from(n).unwrap_or(u32::MAX)
    };
    let (approvals, denials) = (count(true), count(false));
    let default = [Threshold {
        approve: 1,
        deny: 1,
    }];
    let thresholds = if req.thresholds.is_empty() {
        &default[..]
    } else {
        &req.thresholds[..]
    };
    if thresholds.iter().any(|t| denials >= t.deny.max(1)) {
        RequestState::Denied
    } else if thresholds.iter().all(|t| approvals >= t.approve.max(1)) {
        RequestState::Approved
    } else {
        RequestState::Pending
    }
}

/// Whether `user` may put `req`'s roles in a certificate at `now`.
pub fn check_assumable(req: &AccessRequest, user: &str, now: u64) -> Result<(), RequestError> {
    if req.user != user {
        return Err(RequestError::NotYours(req.id.clone()));
    }
    if req.state != RequestState::Approved {
        return Err(RequestError::NotApproved {
            id: req.id.clone(),
            state: req.state.name(),
        });
    }
    if req.expired(now) {
        return Err(RequestError::Expired(req.id.clone()));
    }
    Ok(())
}
