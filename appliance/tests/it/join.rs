//! `hop join`: watching (observer) and typing into (peer) a live SSH session, allowed by the
//! roles' `join_sessions`, with the owner told who joined. Sessions are found by their trackers,
//! which `hop sessions ls` lists while they run (and as terminated once they end).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::clock;
use crate::harness::{Appliance, HOP, OS_LOGIN, PASSWORD, os_login, stderr};
use crate::ssh::{
    Killed, TmuxServer, node_token, start_node, tmux, wait_event, wait_for_node, wait_pane,
};

const WATCHER: &str = "kind: role\nversion: v7\nmetadata:\n  name: watcher\nspec:\n  allow:\n    join_sessions:\n      - name: watch-access\n        roles: [access]\n        kinds: [ssh]\n        modes: [observer]\n";

/// `hop sessions ls --format json` with the login in `home`.
fn sessions(home: &std::path::Path) -> Vec<serde_json::Value> {
    let out = Command::new(HOP)
        .args(["sessions", "ls", "--format", "json"])
        .env("HOP_HOME", home)
        .env_remove("HOP_PROXY")
        .env_remove("HOP_CA_PIN")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Waits until the tracker of `id`, as `home` sees it, satisfies `ok`; returns it.
fn wait_tracker(
    home: &std::path::Path,
    id: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = clock::monotonic_now() + Duration::from_secs(20);
    loop {
        let all = sessions(home);
        if let Some(t) = all.iter().find(|t| t["session_id"] == id && ok(t)) {
            return t.clone();
        }
        assert!(
            clock::monotonic_now() < deadline,
            "tracker of {id} never as expected: {all:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn wait_file(path: &std::path::Path, needle: &str) {
    let deadline = clock::monotonic_now() + Duration::from_secs(15);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return;
        }
        assert!(
            clock::monotonic_now() < deadline,
            "{needle:?} never reached the joiner:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn observers_and_peers_join_a_live_session() {
    let a = Appliance::start("");
    let token = node_token(&a);
    let _node = start_node(&a, &a.dir.path().join("node1"), &token, "node1", "env=dev");
    let role = a.dir.path().join("watcher.yaml");
    std::fs::write(&role, WATCHER).unwrap();
    a.ok(&["admin", "create", "-f", role.to_str().unwrap()]);
    os_login();
    let alice = a.add_user("alice", "access", OS_LOGIN);
    let bob = a.add_user("bob", "watcher", "nobody");
    let carol = a.add_user("carol", "access", OS_LOGIN);
    assert!(a.login("alice", PASSWORD, &alice).status.success());
    wait_for_node(&a, "node1");
    // alice keeps her own HOP_HOME; the appliance's default one is used by the others below.
    let alice_home = a.dir.path().join("alice-home");
    let ok = Command::new("cp")
        .arg("-a")
        .arg(&a.home)
        .arg(&alice_home)
        .status()
        .unwrap();
    assert!(ok.success());

    let sock = a.dir.path().join("tmux.sock");
    let script = format!("HOP_HOME={} {HOP} ssh hopuser@node1", alice_home.display());
    let _server = TmuxServer::start(&sock, &script, 100, 30);
    tmux(
        &sock,
        &["send-keys", "-t", "hop", "PS1='remote$ '", "Enter"],
    );
    wait_pane(&sock, "remote$");
    let start = wait_event(&a, "session.start", |e| {
        e["user"] == "alice" && e["interactive"] == true
    });
    let id = start["session_id"].as_str().unwrap().to_string();

    // The session's tracker: written by Auth for the node hosting it, visible to its owner.
    let t = wait_tracker(&alice_home, &id, |t| t["state"] == "active");
    assert_eq!(t["kind"], "ssh");
    assert_eq!(t["user"], "alice");
    assert_eq!(t["login"], OS_LOGIN);
    assert_eq!(t["server"], "node1");
    assert_eq!(t["host_id"], start["server_id"]);

    // bob watches.
    assert!(a.login("bob", PASSWORD, &bob).status.success());
    let seen = a.dir.path().join("bob-sees.txt");
    let _observer = Killed(
        Command::new(HOP)
            .args(["join", &id])
            .env("HOP_HOME", &a.home)
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::fs::File::create(&seen).unwrap()))
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_pane(&sock, "[hop: bob joined as observer]");
    tmux(
        &sock,
        &["send-keys", "-t", "hop", "echo shared-$((2+3))", "Enter"],
    );
    wait_file(&seen, "shared-5");
    wait_event(&a, "session.join", |e| {
        e["user"] == "bob" && e["success"] == true && e["owner"] == "alice"
    });

    // A joiner takes part; users see their own sessions (carol none), auditors all.
    wait_tracker(&alice_home, &id, |t| {
        t["participants"] == serde_json::json!(["alice", "bob"])
    });

    // bob may only watch; carol may do neither.
    let out = a.hop(&["join", &id, "--mode", "peer"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("denied"), "{}", stderr(&out));
    assert!(a.login("carol", PASSWORD, &carol).status.success());
    let out = a.hop(&["join", &id]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("denied"), "{}", stderr(&out));
    wait_event(&a, "session.join", |e| {
        e["user"] == "carol" && e["success"] == false
    });
    assert!(
        sessions(&a.home)
            .iter()
            .all(|t| t["session_id"] != id.as_str()),
        "carol sees alice's session"
    );

    // alice joins her own session as a peer from elsewhere and types into it.
    let mut peer = Command::new(HOP)
        .args(["join", &id, "--mode", "peer"])
        .env("HOP_HOME", &alice_home)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_pane(&sock, "[hop: alice joined as peer]");
    peer.stdin
        .as_mut()
        .unwrap()
        .write_all(b"echo from-peer-$((1+1))\r")
        .unwrap();
    wait_pane(&sock, "from-peer-2");
    let _ = peer.kill();
    let _ = peer.wait();

    // An unknown session is a clear error.
    let out = a.hop(&["join", "00000000000000000000000000000000"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no session"), "{}", stderr(&out));
    tmux(&sock, &["send-keys", "-t", "hop", "exit", "Enter"]);

    // Once it ends, the tracker says so (and lapses a few minutes later); it cannot be joined.
    wait_tracker(&alice_home, &id, |t| t["state"] == "terminated");
    let out = a.hop(&["join", &id]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("ended"), "{}", stderr(&out));

    // The join route goes through admission first: a locked user is told so, and it is audited.
    a.ok(&[
        "admin",
        "lock",
        "--user",
        "carol",
        "--message",
        "join matrix",
    ]);
    let out = a.hop(&["join", &id]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("locked"), "{}", stderr(&out));
    wait_event(&a, "access.refused", |e| {
        e["route"] == "join" && e["reason"] == "locked" && e["user"] == "carol"
    });
}
