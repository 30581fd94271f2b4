//! Admission decisions, table-driven: every refusal reason on every route, after a positive
//! control, with the same snapshot shape Auth sends.

// reason: a failed unwrap in a test helper fails the test, as it should; clippy's
// allow-unwrap-in-tests covers only #[test] functions and #[cfg(test)] modules, not helpers.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hop_admission::{
    IdentityStamp, Refusal, RequestStamp, Route, STALE_AFTER, SessionMfaMark, SessionTarget,
    Snapshot, SnapshotData, Subject, SubjectKind,
};
use hop_rbac::{LockResource, LockTarget, LockingMode, Resource, parse_resources};

const T0: u64 = 1_800_000_000;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn roles(yaml: &str) -> Vec<hop_rbac::Role> {
    parse_resources(yaml, "test.yaml")
        .unwrap()
        .into_iter()
        .filter_map(|r| match r {
            Resource::Role(r) => Some(r),
            _ => None,
        })
        .collect()
}

const ROLES: &str = "kind: role\nversion: v7\nmetadata:\n  name: dev\nspec:\n  allow:\n    logins: [alice]\n    node_labels: {'*': '*'}\n---\nkind: role\nversion: v7\nmetadata:\n  name: ops\nspec:\n  allow:\n    logins: [ops]\n---\nkind: role\nversion: v7\nmetadata:\n  name: mfa\nspec:\n  options:\n    require_session_mfa: true\n---\nkind: role\nversion: v7\nmetadata:\n  name: strict\nspec:\n  options:\n    lock: strict\n---\nkind: role\nversion: v7\nmetadata:\n  name: prod\nspec:\n  allow:\n    logins: [root]\n";

fn data() -> SnapshotData {
    SnapshotData {
        cluster: "c1".into(),
        roles: roles(ROLES),
        locks: vec![],
        users: vec![
            IdentityStamp {
                name: "alice".into(),
                roles: vec!["dev".into(), "ops".into(), "strict".into()],
                not_before: 0,
            },
            IdentityStamp {
                name: "mona".into(),
                roles: vec!["dev".into(), "mfa".into()],
                not_before: 0,
            },
            IdentityStamp {
                name: "bot-ci".into(),
                roles: vec!["dev".into()],
                not_before: 0,
            },
        ],
        agents: Some(vec![IdentityStamp {
            name: "host-1".into(),
            ..Default::default()
        }]),
        locking_mode: None,
        requests: vec![],
        taken_at: T0,
    }
}

#[derive(Clone)]
struct Cert {
    kind: SubjectKind,
    name: &'static str,
    roles: Vec<String>,
    login: Option<&'static str>,
    issued: u64,
    expires: u64,
    cluster: &'static str,
    bound: Option<Route>,
    requests: Vec<String>,
    target: Option<SessionTarget<'static>>,
    mark: Option<SessionMfaMark<'static>>,
}

fn alice() -> Cert {
    Cert {
        kind: SubjectKind::User,
        name: "alice",
        roles: vec!["dev".into(), "ops".into()],
        login: Some("alice"),
        issued: T0 - 60,
        expires: T0 + 3600,
        cluster: "c1",
        bound: None,
        requests: vec![],
        target: None,
        mark: None,
    }
}

fn decide(snap: &Snapshot, c: &Cert, route: Route, now: u64) -> Result<(), Refusal> {
    let traits = BTreeMap::new();
    let s = Subject {
        kind: c.kind,
        name: c.name,
        roles: &c.roles,
        active_requests: &c.requests,
        traits: &traits,
        login: c.login,
        issued_at: at(c.issued),
        expires: at(c.expires),
        cluster: c.cluster,
        bound_route: c.bound,
        agent_role: "",
        target: c.target,
        session_mfa: c.mark,
    };
    snap.admit(&s, route, at(now)).map(drop)
}

fn lock(target: LockTarget) -> LockResource {
    LockResource::new("l1", target, "offboarding", "admin")
}

const USER_ROUTES: &[Route] = &[
    Route::AdminApi,
    Route::HopSsh,
    Route::JumpHost,
    Route::Agentless,
    Route::Node,
    Route::App,
    Route::Postgres,
    Route::MySql,
    Route::Join,
    Route::Recordings,
];

/// One row: how the snapshot and certificate are changed, and the code every user route must
/// refuse with.
type Row = (&'static str, fn(&mut SnapshotData, &mut Cert), &'static str);

#[test]
fn the_refusal_matrix_on_every_user_route() {
    let rows: &[Row] = &[
        ("expired", |_, c| c.expires = T0 - 1, "expired"),
        ("other CA", |_, c| c.cluster = "evil", "other_cluster"),
        (
            "locked user",
            |d, _| {
                d.locks.push(lock(LockTarget {
                    user: Some("alice".into()),
                    ..Default::default()
                }))
            },
            "locked",
        ),
        (
            "role lock",
            |d, _| {
                d.locks.push(lock(LockTarget {
                    role: Some("ops".into()),
                    ..Default::default()
                }))
            },
            "locked",
        ),
        (
            "login lock",
            |d, _| {
                d.locks.push(lock(LockTarget {
                    login: Some("alice".into()),
                    ..Default::default()
                }))
            },
            "locked",
        ),
        (
            "deleted user",
            |d, _| d.users.retain(|u| u.name != "alice"),
            "deleted",
        ),
        (
            "role removed",
            |d, _| d.users[0].roles.retain(|r| r != "ops"),
            "role_removed",
        ),
        (
            "older than the last lock",
            |d, _| d.users[0].not_before = T0 - 10,
            "voided",
        ),
        (
            "agent certificate",
            |_, c| c.kind = SubjectKind::Agent,
            "wrong_certificate",
        ),
    ];
    for route in USER_ROUTES {
        let snap = Snapshot::new(data());
        assert_eq!(
            decide(&snap, &alice(), *route, T0),
            Ok(()),
            "positive control on {route:?}"
        );
        for (what, change, code) in rows {
            let mut d = data();
            let mut c = alice();
            change(&mut d, &mut c);
            let got = decide(&Snapshot::new(d), &c, *route, T0);
            let refusal = got.expect_err(&format!("{what} on {route:?} was admitted"));
            assert_eq!(refusal.code(), *code, "{what} on {route:?}: {refusal}");
            assert!(!refusal.to_string().is_empty());
        }
    }
}

#[test]
fn route_certificates_serve_only_their_route() {
    let snap = Snapshot::new(data());
    let mut c = alice();
    c.bound = Some(Route::Postgres);
    assert_eq!(decide(&snap, &c, Route::Postgres, T0), Ok(()));
    assert_eq!(decide(&snap, &c, Route::MySql, T0), Ok(()));
    for route in [Route::App, Route::HopSsh, Route::AdminApi, Route::Node] {
        let e = decide(&snap, &c, route, T0).unwrap_err();
        assert_eq!(e.code(), "wrong_certificate", "{route:?}");
        assert!(e.to_string().contains("database route certificate"), "{e}");
    }
}

#[test]
fn agents_only_on_agent_routes_and_only_while_they_exist() {
    let agent = || Cert {
        kind: SubjectKind::Agent,
        name: "host-1",
        roles: vec![],
        login: None,
        issued: T0 - 60,
        expires: T0 + 3600,
        cluster: "c1",
        bound: None,
        requests: vec![],
        target: None,
        mark: None,
    };
    let snap = Snapshot::new(data());
    assert_eq!(decide(&snap, &agent(), Route::Tunnel, T0), Ok(()));
    assert_eq!(decide(&snap, &agent(), Route::HostRenewal, T0), Ok(()));
    assert_eq!(
        decide(&snap, &alice(), Route::Tunnel, T0)
            .unwrap_err()
            .code(),
        "wrong_certificate"
    );
    let mut d = data();
    d.locks.push(lock(LockTarget {
        server_id: Some("host-1".into()),
        ..Default::default()
    }));
    assert_eq!(
        decide(&Snapshot::new(d), &agent(), Route::Tunnel, T0)
            .unwrap_err()
            .code(),
        "locked"
    );
    let mut d = data();
    d.agents = Some(vec![]);
    assert_eq!(
        decide(&Snapshot::new(d), &agent(), Route::HostRenewal, T0)
            .unwrap_err()
            .code(),
        "deleted"
    );
    // A server-id lock does not lock a user who happens to share the name.
    let mut d = data();
    d.locks.push(lock(LockTarget {
        server_id: Some("alice".into()),
        ..Default::default()
    }));
    assert_eq!(
        decide(&Snapshot::new(d), &alice(), Route::HopSsh, T0),
        Ok(())
    );
}

#[test]
fn locks_hold_before_their_target_exists_and_lapse_at_expiry() {
    let mut d = data();
    let mut l = lock(LockTarget {
        bot: Some("ci".into()),
        ..Default::default()
    });
    l.spec.expires = Some(time::OffsetDateTime::from(at(T0 + 100)));
    d.locks.push(l);
    let snap = Snapshot::new(d);
    let bot = Cert {
        kind: SubjectKind::Bot,
        name: "bot-ci",
        roles: vec!["dev".into()],
        ..alice()
    };
    assert_eq!(
        decide(&snap, &bot, Route::HopSsh, T0).unwrap_err().code(),
        "locked"
    );
    assert_eq!(decide(&snap, &bot, Route::HopSsh, T0 + 100), Ok(()));
    // A lock on a user who does not exist yet is kept and applies once the user appears.
    let mut d = data();
    d.locks.push(lock(LockTarget {
        user: Some("zed".into()),
        ..Default::default()
    }));
    d.users.push(IdentityStamp {
        name: "zed".into(),
        roles: vec!["dev".into()],
        not_before: 0,
    });
    let zed = Cert {
        name: "zed",
        roles: vec!["dev".into()],
        ..alice()
    };
    assert_eq!(
        decide(&Snapshot::new(d), &zed, Route::Node, T0)
            .unwrap_err()
            .code(),
        "locked"
    );
}

#[test]
fn a_certificate_issued_after_the_lock_was_lifted_is_admitted() {
    let mut d = data();
    d.users[0].not_before = T0 - 10;
    let snap = Snapshot::new(d);
    let fresh = Cert {
        issued: T0 - 5,
        ..alice()
    };
    assert_eq!(decide(&snap, &fresh, Route::HopSsh, T0), Ok(()));
    assert_eq!(
        decide(&snap, &alice(), Route::HopSsh, T0)
            .unwrap_err()
            .code(),
        "voided"
    );
}

#[test]
fn strict_locking_refuses_on_a_stale_snapshot_best_effort_does_not() {
    let late = T0 + STALE_AFTER.as_secs() + 1;
    let mut c = alice();
    c.expires = late + 3600;
    // best effort: old data still decides.
    assert_eq!(
        decide(&Snapshot::new(data()), &c, Route::HopSsh, late),
        Ok(())
    );
    // cluster-wide strict.
    let mut d = data();
    d.locking_mode = Some(LockingMode::Strict);
    let e = decide(&Snapshot::new(d), &c, Route::HopSsh, late).unwrap_err();
    assert_eq!(e.code(), "snapshot_stale", "{e}");
    // a role's `lock: strict`.
    c.roles.push("strict".into());
    let e = decide(&Snapshot::new(data()), &c, Route::HopSsh, late).unwrap_err();
    assert_eq!(e.code(), "snapshot_stale");
    assert_eq!(
        decide(&Snapshot::new(data()), &c, Route::HopSsh, T0 + 10),
        Ok(())
    );
}

const WEB1: SessionTarget<'static> = SessionTarget::Node {
    node: "web1",
    login: "alice",
};

#[test]
fn require_session_mfa_admits_ssh_only_with_the_mark_for_that_target() {
    let snap = Snapshot::new(data());
    let mark: SessionMfaMark<'static> = WEB1;
    let mona = Cert {
        name: "mona",
        roles: vec!["dev".into(), "mfa".into()],
        target: Some(WEB1),
        ..alice()
    };
    // Without a mark, every SSH route refuses, saying what is needed.
    for route in [
        Route::HopSsh,
        Route::JumpHost,
        Route::Agentless,
        Route::Node,
    ] {
        let e = decide(&snap, &mona, route, T0).unwrap_err();
        assert_eq!(e.code(), "session_mfa_required", "{route:?}");
        assert!(e.to_string().contains("no per-session MFA mark"), "{e}");
    }
    // Marked for this node and login: admitted on SSH routes.
    let marked = Cert {
        mark: Some(mark),
        ..mona.clone()
    };
    for route in [Route::HopSsh, Route::Node] {
        assert_eq!(decide(&snap, &marked, route, T0), Ok(()), "{route:?}");
    }
    // Another node, another login, or a route that does not say its node: refused.
    let elsewhere = Cert {
        target: Some(SessionTarget::Node {
            node: "web2",
            login: "alice",
        }),
        ..marked.clone()
    };
    let e = decide(&snap, &elsewhere, Route::Node, T0).unwrap_err();
    assert_eq!(e.code(), "session_mfa_required");
    assert!(e.to_string().contains("alice@web1, not alice@web2"), "{e}");
    let other_login = Cert {
        login: Some("root"),
        target: Some(SessionTarget::Node {
            node: "web1",
            login: "root",
        }),
        ..marked.clone()
    };
    assert!(decide(&snap, &other_login, Route::Node, T0).is_err());
    let unknown = Cert {
        target: None,
        ..marked.clone()
    };
    assert!(decide(&snap, &unknown, Route::HopSsh, T0).is_err());
    // A node's mark is no database's or cluster's: refused there.
    for route in [Route::Postgres, Route::MySql, Route::Kube] {
        let e = decide(&snap, &marked, route, T0).unwrap_err();
        assert_eq!(e.code(), "session_mfa_required", "{route:?}");
    }
    // A node's mark is no application's.
    let e = decide(&snap, &marked, Route::App, T0).unwrap_err();
    assert_eq!(e.code(), "session_mfa_required");
    // The route without an MFA flow yet is refused by name, marked or not.
    let e = decide(&snap, &marked, Route::Join, T0).unwrap_err();
    assert_eq!(e.code(), "session_mfa_unavailable");
    assert!(e.to_string().contains(Route::Join.name()), "{e}");
    // The API is no session.
    assert_eq!(decide(&snap, &mona, Route::AdminApi, T0), Ok(()));
    // A marked certificate's expiry is its own (one minute): a new session after it is refused.
    let expired = Cert {
        expires: T0 + 60,
        ..marked
    };
    assert_eq!(decide(&snap, &expired, Route::Node, T0 + 59), Ok(()));
    assert_eq!(
        decide(&snap, &expired, Route::Node, T0 + 61)
            .unwrap_err()
            .code(),
        "expired"
    );
}

const ORDERS: SessionTarget<'static> = SessionTarget::Database {
    service: "pg",
    db_user: "alice",
    db_name: "orders",
};

#[test]
fn require_session_mfa_admits_a_database_only_with_the_mark_for_that_database() {
    let snap = Snapshot::new(data());
    let mona = Cert {
        name: "mona",
        roles: vec!["dev".into(), "mfa".into()],
        login: None,
        bound: Some(Route::Postgres),
        target: Some(ORDERS),
        ..alice()
    };
    let e = decide(&snap, &mona, Route::Postgres, T0).unwrap_err();
    assert_eq!(e.code(), "session_mfa_required");
    assert!(e.to_string().contains("no per-session MFA mark"), "{e}");
    let marked = Cert {
        mark: Some(ORDERS),
        ..mona.clone()
    };
    for route in [Route::Postgres, Route::MySql] {
        assert_eq!(decide(&snap, &marked, route, T0), Ok(()), "{route:?}");
    }
    // Another service, database user or database name: refused, naming both.
    for other in [
        SessionTarget::Database {
            service: "pg2",
            db_user: "alice",
            db_name: "orders",
        },
        SessionTarget::Database {
            service: "pg",
            db_user: "postgres",
            db_name: "orders",
        },
        SessionTarget::Database {
            service: "pg",
            db_user: "alice",
            db_name: "billing",
        },
    ] {
        let c = Cert {
            target: Some(other),
            ..marked.clone()
        };
        let e = decide(&snap, &c, Route::Postgres, T0).unwrap_err();
        assert_eq!(e.code(), "session_mfa_required", "{other:?}");
        assert!(
            e.to_string().contains("database \"pg\" as alice on orders"),
            "{e}"
        );
    }
    // A database's mark names no node: an SSH session is refused with it.
    let ssh = Cert {
        bound: None,
        target: Some(WEB1),
        ..marked.clone()
    };
    assert!(decide(&snap, &ssh, Route::Node, T0).is_err());
    // After its minute no new session starts.
    let minute = Cert {
        expires: T0 + 60,
        ..marked
    };
    assert_eq!(
        decide(&snap, &minute, Route::Postgres, T0 + 61)
            .unwrap_err()
            .code(),
        "expired"
    );
}

#[test]
fn require_session_mfa_admits_a_kube_cluster_only_with_its_mark() {
    let snap = Snapshot::new(data());
    let prod = SessionTarget::KubeCluster { cluster: "prod" };
    let marked = Cert {
        name: "mona",
        roles: vec!["dev".into(), "mfa".into()],
        login: None,
        bound: Some(Route::Kube),
        target: Some(prod),
        mark: Some(prod),
        ..alice()
    };
    assert_eq!(decide(&snap, &marked, Route::Kube, T0), Ok(()));
    let unmarked = Cert {
        mark: None,
        ..marked.clone()
    };
    assert!(decide(&snap, &unmarked, Route::Kube, T0).is_err());
    let staging = Cert {
        target: Some(SessionTarget::KubeCluster { cluster: "staging" }),
        ..marked
    };
    let e = decide(&snap, &staging, Route::Kube, T0).unwrap_err();
    assert!(
        e.to_string()
            .contains("\"prod\", not kube cluster \"staging\""),
        "{e}"
    );
}

#[test]
fn require_session_mfa_admits_an_application_only_with_its_mark() {
    let snap = Snapshot::new(data());
    let grafana = SessionTarget::App { app: "grafana" };
    let marked = Cert {
        name: "mona",
        roles: vec!["dev".into(), "mfa".into()],
        login: None,
        bound: Some(Route::App),
        target: Some(grafana),
        mark: Some(grafana),
        ..alice()
    };
    assert_eq!(decide(&snap, &marked, Route::App, T0), Ok(()));
    let unmarked = Cert {
        mark: None,
        ..marked.clone()
    };
    let e = decide(&snap, &unmarked, Route::App, T0).unwrap_err();
    assert_eq!(e.code(), "session_mfa_required");
    // The mark for application A is no use for application B, nor on another route.
    let other = Cert {
        target: Some(SessionTarget::App { app: "billing" }),
        ..marked.clone()
    };
    let e = decide(&snap, &other, Route::App, T0).unwrap_err();
    assert_eq!(e.code(), "session_mfa_required");
    assert!(
        e.to_string()
            .contains("application \"grafana\", not application \"billing\""),
        "{e}"
    );
    let kube = Cert {
        bound: None,
        target: Some(grafana),
        ..marked.clone()
    };
    assert!(decide(&snap, &kube, Route::Kube, T0).is_err());
    let minute = Cert {
        expires: T0 + 60,
        ..marked
    };
    assert_eq!(
        decide(&snap, &minute, Route::App, T0 + 61)
            .unwrap_err()
            .code(),
        "expired"
    );
}

#[test]
fn the_route_question_uses_the_roles_held_now() {
    let mut d = data();
    // `ops` is redefined to deny the login it used to allow.
    d.roles.retain(|r| r.metadata.name != "ops");
    let snap = Snapshot::new(d);
    let traits = BTreeMap::new();
    let c = alice();
    let s = Subject {
        kind: c.kind,
        name: c.name,
        roles: &c.roles,
        active_requests: &c.requests,
        traits: &traits,
        login: Some("ops"),
        issued_at: at(c.issued),
        expires: at(c.expires),
        cluster: c.cluster,
        bound_route: None,
        agent_role: "",
        target: None,
        session_mfa: None,
    };
    let admitted = snap.admit(&s, Route::Node, at(T0)).unwrap();
    let labels = BTreeMap::new();
    let e = admitted
        .require(admitted.checker().check_node_login(&labels, "ops"))
        .unwrap_err();
    assert_eq!(e.code(), "access_denied");
    admitted
        .require(admitted.checker().check_node_login(&labels, "alice"))
        .unwrap();
}

#[test]
fn the_wire_form_round_trips() {
    let mut d = data();
    d.locks.push(lock(LockTarget {
        role: Some("ops".into()),
        ..Default::default()
    }));
    let json = serde_json::to_string(&d).unwrap();
    let snap = Snapshot::from_json(&json).unwrap();
    assert_eq!(snap.locks().len(), 1);
    assert_eq!(
        decide(&snap, &alice(), Route::HopSsh, T0)
            .unwrap_err()
            .code(),
        "locked"
    );
    assert!(Snapshot::from_json("{\"cluster\": 1}").is_err());
}

fn prod_request(user: &str, expires: u64) -> RequestStamp {
    RequestStamp {
        id: "r1".into(),
        user: user.into(),
        roles: vec!["prod".into()],
        expires,
    }
}

fn requester() -> Cert {
    let mut c = alice();
    c.name = "mona";
    c.roles = vec!["dev".into(), "prod".into()];
    c.requests = vec!["r1".into()];
    c
}

#[test]
fn an_access_request_grants_its_roles_while_approved_unexpired_and_unlocked() {
    let mut d = data();
    d.requests.push(prod_request("mona", T0 + 600));
    let snap = Snapshot::new(d.clone());
    for route in USER_ROUTES.iter().filter(|r| !r.is_session()) {
        assert_eq!(decide(&snap, &requester(), *route, T0), Ok(()), "{route:?}");
    }
    // The role without naming the request is a role mona does not hold.
    let mut bare = requester();
    bare.requests.clear();
    let code =
        |snap: &Snapshot, c: &Cert| decide(snap, c, Route::AdminApi, T0 + 1).unwrap_err().code();
    assert_eq!(code(&snap, &bare), "role_removed");
    // Expired, absent (pending, denied, deleted) or another user's: ended.
    let mut expired = d.clone();
    expired.requests = vec![prod_request("mona", T0)];
    assert_eq!(
        code(&Snapshot::new(expired), &requester()),
        "access_request_ended"
    );
    let mut absent = d.clone();
    absent.requests.clear();
    assert_eq!(
        code(&Snapshot::new(absent), &requester()),
        "access_request_ended"
    );
    let mut other = d.clone();
    other.requests = vec![prod_request("alice", T0 + 600)];
    assert_eq!(
        code(&Snapshot::new(other), &requester()),
        "access_request_ended"
    );
    // A lock on the request ends it; the wire form carries the requests.
    let mut locked = d;
    locked.locks.push(lock(LockTarget {
        access_request: Some("r1".into()),
        ..Default::default()
    }));
    let json = serde_json::to_string(&locked).unwrap();
    let snap = Snapshot::from_json(&json).unwrap();
    assert_eq!(code(&snap, &requester()), "locked");
    assert_eq!(decide(&snap, &alice(), Route::AdminApi, T0), Ok(()));
}

/// The logins alice's admitted checker allows on `snap`.
fn alice_logins(snap: &Snapshot) -> Vec<String> {
    let traits = BTreeMap::new();
    let roles = vec!["dev".to_string(), "ops".to_string()];
    let s = Subject {
        kind: SubjectKind::User,
        name: "alice",
        roles: &roles,
        active_requests: &[],
        traits: &traits,
        login: None,
        issued_at: at(T0 - 10),
        expires: at(T0 + 3600),
        cluster: "c1",
        bound_route: None,
        agent_role: "",
        target: None,
        session_mfa: None,
    };
    snap.admit(&s, Route::AdminApi, at(T0))
        .unwrap()
        .checker()
        .logins()
}

#[test]
fn kept_role_checkers_follow_the_roles_of_the_snapshot_that_decides() {
    let first = Snapshot::new(data());
    assert_eq!(alice_logins(&first), ["alice", "ops"]);
    assert_eq!(
        alice_logins(&first),
        ["alice", "ops"],
        "kept, the same answer"
    );
    // Rebuilt for a change elsewhere (a lock): the checkers are taken over, same answers.
    let mut d = data();
    d.locks.push(lock(LockTarget {
        user: Some("mona".into()),
        ..Default::default()
    }));
    let mut second = Snapshot::new(d);
    second.keep_checkers_of(&first);
    assert_eq!(alice_logins(&second), ["alice", "ops"]);
    // Rebuilt after a role changed: nothing compiled from the old role is used.
    let mut d = data();
    d.roles = roles(&ROLES.replace("logins: [ops]", "logins: [ops2]"));
    let mut third = Snapshot::new(d);
    third.keep_checkers_of(&second);
    assert_eq!(alice_logins(&third), ["alice", "ops2"]);
}
