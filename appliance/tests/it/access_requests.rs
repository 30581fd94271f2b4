//! Access requests end to end, all as non-admin users with the real binary: a requester whose
//! role may request `node-access` (two approvals, one denial, a reason required), two reviewers
//! whose role may review it, and a node agent only `node-access` reaches, as the ordinary login
//! `hopuser`.
//!
//! Refused: a role outside `allow.request`, a request without a reason, a review of one's own
//! request, a second review by the same reviewer, assuming a request one approval short, a
//! denied request. Shown: two approvals let `hop login --request-id` reach the node with
//! `hop ssh`; `hop request drop` goes back; a lock on the request refuses new sessions and ends
//! a live one within 5 s; a request's expiry ends access within 5 s; the `access_request.*`
//! events are in the audit log.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::clock;
use crate::harness::*;
use crate::ssh::{Killed, events, start_node};

const NODE: &str = "restricted1";

const ROLES: &str = "\
kind: role
version: v7
metadata: {name: requester}
spec:
  allow:
    request:
      roles: [node-access]
      thresholds: [{approve: 2, deny: 1}]
      suggested_reviewers: [rev1, rev2]
      max_duration: 1h
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
metadata: {name: node-access}
spec:
  allow:
    logins: [hopuser]
    node_labels:
      env: restricted
---
kind: role
version: v7
metadata: {name: other}
spec:
  allow:
    logins: [root]
";

fn ok_in(home: &Path, args: &[&str]) -> String {
    let out = hop_in(home, args);
    assert!(out.status.success(), "hop {args:?}: {}", stderr(&out));
    stdout(&out)
}

fn refused_in(home: &Path, args: &[&str], why: &str) {
    let out = hop_in(home, args);
    assert!(
        !out.status.success() && stderr(&out).contains(why),
        "hop {args:?} should be refused with {why:?}: {}{}",
        stdout(&out),
        stderr(&out)
    );
}

/// A user's own HOP_HOME, logged in with a password (no second factor in this cluster).
fn login(a: &Appliance, user: &str) -> PathBuf {
    let home = a.dir.path().join(format!("home-{user}"));
    let out = password_login(a, user, &home);
    assert!(out.status.success(), "hop login {user}: {}", stderr(&out));
    home
}

fn login_with_request(a: &Appliance, home: &Path, id: &str) -> Output {
    hop_in(
        home,
        &[
            "login",
            "--proxy",
            &a.addr,
            "--ca-pin",
            &a.pin,
            "--user",
            "alice",
            "--request-id",
            id,
        ],
    )
}

/// Makes a request as the user of `home`; returns its id.
fn create(home: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "request",
        "create",
        "--roles",
        "node-access",
        "--reason",
        "ticket 42",
    ];
    args.extend_from_slice(extra);
    let out = ok_in(home, &args);
    out.split_whitespace()
        .nth(2)
        .unwrap_or_default()
        .to_string()
}

fn review(home: &Path, id: &str, verdict: &str) -> String {
    ok_in(home, &["request", "review", id, verdict, "--reason", "ok"])
}

fn ssh_ok(home: &Path) -> bool {
    let out = hop_in(
        home,
        &["ssh", &format!("{OS_LOGIN}@{NODE}"), "echo", "req-ok"],
    );
    out.status.success() && stdout(&out).contains("req-ok")
}

/// Waits at most `secs` for `hop ssh` to answer `want`; returns how long it took.
fn ssh_becomes(home: &Path, want: bool, secs: u64) -> Duration {
    let start = clock::monotonic_now();
    loop {
        if ssh_ok(home) == want {
            return clock::monotonic_now() - start;
        }
        assert!(
            clock::monotonic_now() - start < Duration::from_secs(secs),
            "hop ssh did not become {} within {secs}s",
            if want { "possible" } else { "refused" }
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn wait_node_listed(a: &Appliance) {
    let deadline = clock::monotonic_now() + Duration::from_secs(30);
    while !a
        .ok(&["admin", "nodes", "ls", "--format", "json"])
        .contains("\"node\"")
    {
        assert!(
            clock::monotonic_now() < deadline,
            "node {NODE} did not join"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // The node also needs its access data from Auth and a parked data connection.
    std::thread::sleep(Duration::from_millis(300));
}

/// The second reviewer opens the web UI's access requests page in headless Chromium, sees
/// alice's pending request with its roles, reason and the first approval, and approves it
/// there (with the CLI where Chromium is not installed).
fn reviewer_approves_in_the_web_ui(a: &Appliance, cli_home: &Path, id: &str) {
    use serde_json::json;
    let shots = crate::web_browser::artifacts("access_requests");
    let Some(mut b) =
        crate::web_browser::Browser::start("admin.mjs", &format!("https://{}", a.addr), &shots)
    else {
        assert!(review(cli_home, id, "--approve").contains("APPROVED"));
        return;
    };
    let login = b.send(
        json!({"do": "login", "who": "rev2", "user": "rev2", "password": PASSWORD, "otp": ""}),
    );
    assert_eq!(login["error"], "", "{login}");
    let row = format!("tr.request[data-id=\"{id}\"]");
    b.send(json!({"do": "open", "who": "rev2", "path": "/web/requests", "wait": row}));
    let shown = b.send(json!({"do": "text", "who": "rev2", "sel": row, "has": "rev1: approved"}));
    let text = shown["text"].as_str().unwrap();
    for want in ["alice", "node-access", "ticket 42", "pending"] {
        assert!(text.contains(want), "{want} not in the row: {text}");
    }
    b.send(json!({"do": "fill", "who": "rev2", "sel": format!("{row} .review-reason"), "value": "looks fine"}));
    b.send(json!({"do": "screenshot", "who": "rev2", "name": "request-pending"}));
    b.send(
        json!({"do": "click", "who": "rev2", "sel": format!("{row} button.approve"),
        "wait": format!("tr.request[data-id=\"{id}\"][data-state=\"approved\"]")}),
    );
    // The login page's own check for a session answers 401 before the login; nothing else.
    let errors = b.send(json!({"do": "errors"}));
    for e in errors["errors"].as_array().unwrap() {
        assert!(e.as_str().unwrap().contains("401"), "{errors}");
    }
    // The page's approval is rev2's review, as the CLI's would be.
    let shown = ok_in(cli_home, &["request", "show", id]);
    assert!(
        shown.contains("APPROVED") && shown.contains("looks fine"),
        "{shown}"
    );
}

#[test]
fn access_requests_with_two_reviewers_a_lock_and_expiry() {
    os_login();
    let a = Appliance::start(NO_SECOND_FACTOR);
    let roles = a.dir.path().join("roles.yaml");
    std::fs::write(&roles, ROLES).unwrap();
    a.ok(&["admin", "create", "-f", roles.to_str().unwrap()]);
    add_password_user(&a, "alice", "requester", OS_LOGIN);
    add_password_user(&a, "rev1", "reviewer", OS_LOGIN);
    add_password_user(&a, "rev2", "reviewer", OS_LOGIN);
    let node_data = a.dir.path().join("node");
    let _node = start_node(
        &a,
        &node_data,
        &a.join_token("node"),
        NODE,
        "env=restricted",
    );
    wait_node_listed(&a);
    let (alice, rev1, rev2) = (login(&a, "alice"), login(&a, "rev1"), login(&a, "rev2"));
    assert!(!ssh_ok(&alice), "alice reached the node without a request");

    // Refused requests: outside allow.request, and without the required reason.
    refused_in(
        &alice,
        &["request", "create", "--roles", "other", "--reason", "x"],
        "do not allow requesting role \"other\"",
    );
    refused_in(
        &alice,
        &["request", "create", "--roles", "node-access"],
        "reason is required",
    );
    let id = create(&alice, &[]);
    let shown = ok_in(&rev1, &["request", "show", &id]);
    assert!(
        shown.contains("PENDING") && shown.contains("ticket 42"),
        "{shown}"
    );
    assert!(ok_in(&rev2, &["request", "ls"]).contains(&id));

    // Nobody approves their own request; one approval of two is not enough.
    refused_in(
        &alice,
        &["request", "review", &id, "--approve"],
        "own access request",
    );
    assert!(review(&rev1, &id, "--approve").contains("PENDING"));
    refused_in(
        &rev1,
        &["request", "review", &id, "--approve"],
        "already reviewed",
    );
    let out = login_with_request(&a, &alice, &id);
    assert!(
        !out.status.success() && stderr(&out).contains("not approved"),
        "{}",
        stderr(&out)
    );
    reviewer_approves_in_the_web_ui(&a, &rev2, &id);

    // Approved: the node is reachable as the ordinary login; dropping the request goes back.
    let out = login_with_request(&a, &alice, &id);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("node-access"), "{}", stdout(&out));
    assert!(ok_in(&alice, &["status"]).contains(&id));
    ssh_becomes(&alice, true, 5);
    let out = ok_in(&alice, &["request", "drop"]);
    assert!(!out.contains("node-access"), "{out}");
    assert!(
        !ssh_ok(&alice),
        "the node is reachable after `hop request drop`"
    );
    assert!(login_with_request(&a, &alice, &id).status.success());
    ssh_becomes(&alice, true, 5);

    // A lock on the request ends its use within 5 s: a live session and new ones.
    let mut live = Command::new(HOP)
        .args(["ssh", &format!("{OS_LOGIN}@{NODE}"), "echo live; sleep 60"])
        .env("HOP_HOME", &alice)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = [0u8; 4];
    std::io::Read::read_exact(live.stdout.as_mut().unwrap(), &mut first).unwrap();
    let mut live = Killed(live);
    let locked_at = clock::monotonic_now();
    a.ok(&[
        "admin",
        "lock",
        "--access-request",
        &id,
        "--message",
        "revoked",
    ]);
    let took = ssh_becomes(&alice, false, 5);
    eprintln!("lock on the request refused new sessions in {took:?}");
    while live.0.try_wait().unwrap().is_none() {
        assert!(
            clock::since(locked_at) < Duration::from_secs(5),
            "the live session outlived the lock on its request"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "and ended the live session in {:?}",
        clock::since(locked_at)
    );

    // A denial (threshold 1) denies, and a denied request is never assumed.
    let alice = login(&a, "alice");
    let denied = create(&alice, &[]);
    assert!(review(&rev1, &denied, "--deny").contains("DENIED"));
    let out = login_with_request(&a, &alice, &denied);
    assert!(!out.status.success(), "a denied request was assumed");

    // Expiry ends access: a request for 8 s.
    let short = create(&alice, &["--max-duration", "8s"]);
    review(&rev1, &short, "--approve");
    review(&rev2, &short, "--approve");
    let out = login_with_request(&a, &alice, &short);
    assert!(out.status.success(), "{}", stderr(&out));
    ssh_becomes(&alice, true, 5);
    let shown = ok_in(&alice, &["request", "show", &short, "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&shown).unwrap();
    let expires = time::OffsetDateTime::parse(
        v["expires"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    ssh_becomes(&alice, false, 14);
    let late = time::OffsetDateTime::from(clock::wall_now()) - expires;
    assert!(
        late < time::Duration::seconds(5),
        "access outlived the request by {late}"
    );

    for kind in [
        "access_request.create",
        "access_request.review",
        "access_request.update",
    ] {
        assert!(!events(&a, kind).is_empty(), "no {kind} event");
    }
    let reviews = events(&a, "access_request.review");
    assert!(
        reviews
            .iter()
            .any(|e| e["success"] == false && e["user"] == "alice"),
        "the self-review refusal is not audited: {reviews:?}"
    );
}
