//! PostgreSQL stopped under a running appliance (its cluster state there): what the proxy and
//! the node agent hold keeps existing identities working, and what needs the database fails
//! clearly instead of hanging. With ordinary users and an ordinary login: a user logged in before
//! the outage still lists and reaches the node; a user locked before the outage stays refused;
//! a new login is refused with an error that says the cluster state cannot be reached; `/readyz`
//! says the backend is down.

use std::time::Duration;

use crate::backup_restore::Postgres;
use crate::clock;
use crate::harness::*;
use crate::ssh::{node_token, start_node};

/// How long a new login may take to fail while the database is down.
const CLEAR_FAILURE_WITHIN: Duration = Duration::from_secs(45);

#[test]
fn existing_identities_keep_working_while_postgresql_is_down() {
    let Some(mut pg) = Postgres::start() else {
        return;
    };
    pg.create_db("hop_outage");
    let a = Appliance::start_configured(&pg.storage_yaml("hop_outage"), NO_SECOND_FACTOR, "");
    os_login();
    for user in ["alice", "bob", "carol"] {
        add_password_user(&a, user, "access", OS_LOGIN);
    }
    let node_dir = a.dir.path().join("node1");
    let _node = start_node(&a, &node_dir, &node_token(&a), "node1", "env=test");
    let home = |user: &str| a.dir.path().join(format!("home-{user}"));
    for user in ["alice", "bob"] {
        let out = password_login(&a, user, &home(user));
        assert!(out.status.success(), "login {user}: {}", stderr(&out));
    }
    let ssh = |user: &str| {
        hop_in(
            &home(user),
            &["ssh", &format!("{OS_LOGIN}@node1"), "echo", "up"],
        )
    };
    wait_until("alice reaches node1", || {
        stdout(&ssh("alice")).contains("up")
    });
    a.ok(&[
        "admin",
        "lock",
        "--user",
        "bob",
        "--message",
        "before the outage",
    ]);
    wait_until("bob's lock takes effect", || !ssh("bob").status.success());

    pg.stop();

    // Existing identities, from what the proxy and the agent hold.
    for round in 0..3 {
        let out = ssh("alice");
        assert!(
            out.status.success() && stdout(&out).contains("up"),
            "round {round} during the outage: {}\n--- appliance log ---\n{}",
            stderr(&out),
            a.log()
        );
        let listed = hop_in(&home("alice"), &["ls", "--format", "json"]);
        assert!(stdout(&listed).contains("node1"), "{}", stderr(&listed));
        std::thread::sleep(Duration::from_secs(1));
    }
    let out = ssh("bob");
    assert!(
        !out.status.success(),
        "a lock placed before the outage must hold"
    );
    assert!(stderr(&out).contains("locked"), "{}", stderr(&out));

    // New logins fail, clearly and in bounded time.
    let started = clock::monotonic_now();
    let out = password_login(&a, "carol", &home("carol"));
    assert!(!out.status.success(), "a login needs the cluster state");
    assert!(
        clock::monotonic_now() - started < CLEAR_FAILURE_WITHIN,
        "the refused login took {:?}",
        clock::monotonic_now() - started
    );
    let said = stderr(&out).to_lowercase();
    assert!(
        said.contains("unavailable") || said.contains("unreachable") || said.contains("backend"),
        "{said}"
    );
    assert!(
        !said.contains("/tmp"),
        "the user is told no path of the appliance: {said}"
    );
    eprintln!("the refused login said: {said}");
    let (code, body) = a.diag_get("/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("cluster state unreachable"), "{body}");
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = clock::monotonic_now() + Duration::from_secs(30);
    while !done() {
        assert!(clock::monotonic_now() < deadline, "{what}: not within 30 s");
        std::thread::sleep(Duration::from_millis(300));
    }
}
