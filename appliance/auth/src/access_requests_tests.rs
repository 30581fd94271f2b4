//! The pure access request decisions: who may ask for what, on what terms, who may review,
//! and what reviews resolve a request to.

use hop_rbac::{Resource, Role, parse_resources};

use crate::access_requests::{
    AccessRequest, Ask, RequestError, RequestState, Review, Threshold, check_assumable,
    check_reviewer, decide_create, resolve,
};

const ROLES: &str = "\
kind: role
version: v7
metadata: {name: requester}
spec:
  allow:
    request:
      roles: [node-access]
      thresholds: [{approve: 2, deny: 1}]
      suggested_reviewers: [rev1]
      max_duration: 2h
      reason: {mode: required}
---
kind: role
version: v7
metadata: {name: reviewer}
spec:
  allow:
    review_requests:
      roles: [node-access]
---
kind: role
version: v7
metadata: {name: denied-reviewer}
spec:
  allow:
    review_requests:
      roles: ['*']
  deny:
    review_requests:
      roles: [node-access]
---
kind: role
version: v7
metadata: {name: node-access}
spec:
  options:
    max_session_ttl: 1h
  allow:
    logins: [hopuser]
---
kind: role
version: v7
metadata: {name: admin-ish}
spec:
  allow:
    logins: [root]
";

const NOW: u64 = 1_800_000_000;

fn role(name: &str) -> Role {
    parse_resources(ROLES, "t.yaml")
        .unwrap()
        .into_iter()
        .find_map(|r| match r {
            Resource::Role(r) if r.metadata.name == name => Some(r),
            _ => None,
        })
        .unwrap()
}

fn ask_for<'a>(
    held: &'a [Role],
    requested: &'a [(String, Option<Role>)],
    reason: &'a str,
) -> Ask<'a> {
    Ask {
        held,
        requested,
        reason,
        max_duration_secs: None,
        pending: 0,
        now: NOW,
    }
}

fn requested(name: &str) -> Vec<(String, Option<Role>)> {
    let def = parse_resources(ROLES, "t.yaml")
        .unwrap()
        .into_iter()
        .find_map(|r| match r {
            Resource::Role(r) if r.metadata.name == name => Some(r),
            _ => None,
        });
    vec![(name.to_string(), def)]
}

fn pending(thresholds: Vec<Threshold>) -> AccessRequest {
    AccessRequest {
        id: "r1".into(),
        user: "req".into(),
        roles: vec!["node-access".into()],
        state: RequestState::Pending,
        created_unix: NOW,
        expires_unix: NOW + 600,
        thresholds,
        ..Default::default()
    }
}

fn review(req: &mut AccessRequest, author: &str, approve: bool) -> RequestState {
    req.reviews.push(Review {
        author: author.into(),
        approve,
        reason: String::new(),
        created_unix: NOW,
    });
    req.state = resolve(req);
    req.state
}

#[test]
fn a_role_outside_allow_request_is_refused() {
    let held = [role("requester")];
    let r = requested("admin-ish");
    assert_eq!(
        decide_create(&ask_for(&held, &r, "why")),
        Err(RequestError::NotRequestable("admin-ish".into()))
    );
    let nobody = [role("reviewer")];
    let r = requested("node-access");
    assert_eq!(
        decide_create(&ask_for(&nobody, &r, "why")),
        Err(RequestError::NotRequestable("node-access".into()))
    );
    let r = requested("no-such-role");
    assert_eq!(
        decide_create(&ask_for(&held, &r, "why")),
        Err(RequestError::UnknownRole("no-such-role".into()))
    );
}

#[test]
fn a_reason_is_required_when_the_role_says_so() {
    let held = [role("requester")];
    let r = requested("node-access");
    assert_eq!(
        decide_create(&ask_for(&held, &r, "  ")),
        Err(RequestError::ReasonRequired)
    );
    assert!(decide_create(&ask_for(&held, &r, "ticket 7")).is_ok());
}

#[test]
fn access_is_capped_by_max_duration_the_roles_ttl_and_the_ask() {
    let held = [role("requester")];
    let r = requested("node-access");
    let terms = decide_create(&ask_for(&held, &r, "ticket")).unwrap();
    // max_duration 2h, but node-access's max_session_ttl is 1h.
    assert_eq!(terms.expires_unix, NOW + 3600);
    assert_eq!(
        terms.thresholds,
        vec![Threshold {
            approve: 2,
            deny: 1
        }]
    );
    assert_eq!(terms.suggested_reviewers, vec!["rev1".to_string()]);
    let mut ask = ask_for(&held, &r, "ticket");
    ask.max_duration_secs = Some(30);
    assert_eq!(decide_create(&ask).unwrap().expires_unix, NOW + 30);
    ask.pending = crate::access_requests::MAX_PENDING_PER_USER;
    assert_eq!(decide_create(&ask), Err(RequestError::TooManyPending));
}

#[test]
fn two_different_reviewers_approve_at_threshold_two() {
    let mut req = pending(vec![Threshold {
        approve: 2,
        deny: 1,
    }]);
    let reviewers = [role("reviewer")];
    check_reviewer(&req, "rev1", &reviewers, NOW).unwrap();
    assert_eq!(review(&mut req, "rev1", true), RequestState::Pending);
    assert_eq!(
        check_reviewer(&req, "rev1", &reviewers, NOW),
        Err(RequestError::AlreadyReviewed("r1".into()))
    );
    check_reviewer(&req, "rev2", &reviewers, NOW).unwrap();
    assert_eq!(review(&mut req, "rev2", true), RequestState::Approved);
    assert!(check_assumable(&req, "req", NOW).is_ok());
    assert!(check_assumable(&req, "rev1", NOW).is_err());
    assert_eq!(
        check_assumable(&req, "req", NOW + 600),
        Err(RequestError::Expired("r1".into()))
    );
    // Resolved: no more reviews.
    assert!(matches!(
        check_reviewer(&req, "rev3", &reviewers, NOW),
        Err(RequestError::NotPending { .. })
    ));
}

#[test]
fn a_deny_wins_at_its_threshold() {
    let mut req = pending(vec![Threshold {
        approve: 2,
        deny: 1,
    }]);
    assert_eq!(review(&mut req, "rev1", true), RequestState::Pending);
    assert_eq!(review(&mut req, "rev2", false), RequestState::Denied);
    assert!(matches!(
        check_assumable(&req, "req", NOW),
        Err(RequestError::NotApproved { .. })
    ));
    // Every threshold's approvals are needed; any threshold's denials deny.
    let mut both = pending(vec![
        Threshold {
            approve: 1,
            deny: 2,
        },
        Threshold {
            approve: 2,
            deny: 3,
        },
    ]);
    assert_eq!(review(&mut both, "a", true), RequestState::Pending);
    assert_eq!(review(&mut both, "b", false), RequestState::Pending);
    assert_eq!(review(&mut both, "c", false), RequestState::Denied);
}

#[test]
fn nobody_reviews_their_own_request_or_without_review_rights() {
    let req = pending(vec![]);
    let both = [role("reviewer"), role("requester")];
    assert_eq!(
        check_reviewer(&req, "req", &both, NOW),
        Err(RequestError::OwnRequest)
    );
    assert_eq!(
        check_reviewer(&req, "someone", &[role("requester")], NOW),
        Err(RequestError::MayNotReview("node-access".into()))
    );
    assert_eq!(
        check_reviewer(&req, "someone", &[role("denied-reviewer")], NOW),
        Err(RequestError::MayNotReview("node-access".into()))
    );
    assert_eq!(
        check_reviewer(&req, "someone", &[role("reviewer")], NOW + 600),
        Err(RequestError::Expired("r1".into()))
    );
    // No thresholds: one approval approves.
    let mut one = pending(vec![]);
    assert_eq!(review(&mut one, "rev1", true), RequestState::Approved);
}
