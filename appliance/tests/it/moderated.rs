//! Moderated sessions (`require_session_join`), end to end with ordinary users and an ordinary
//! login: bob's role requires a session moderator. His interactive session waits (a command
//! is refused), starts when alice joins with `hop join --mode moderator`, and ends when she
//! leaves (`on_leave: terminate`); its recording shows who took part. With `on_leave: pause`,
//! her leaving makes the session ignore keystrokes until she is back.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::{Appliance, HOP, OS_LOGIN, PASSWORD, os_login, stderr};
use crate::recordings::wait_recording;
use crate::ssh::{
    Killed, TmuxServer, node_token, start_node, tmux, wait_event, wait_for_node, wait_pane,
};

const MODERATED: &str = "kind: role\nversion: v7\nmetadata:\n  name: moderated\nspec:\n  allow:\n    logins: [hopuser]\n    node_labels: {'*': '*'}\n    require_session_join:\n      - name: auditors\n        filter: 'contains(user.spec.roles, \"session-moderator\")'\n        kinds: [ssh]\n        count: 1\n        modes: [moderator]\n        on_leave: terminate\n";
const AUDITOR: &str = "kind: role\nversion: v7\nmetadata:\n  name: session-moderator\nspec:\n  allow:\n    join_sessions:\n      - name: moderate\n        roles: [moderated]\n        kinds: [ssh]\n        modes: [moderator, observer]\n";

#[test]
fn a_moderated_session_waits_for_its_moderator_and_ends_when_they_leave() {
    let a = Appliance::start("");
    let _node = start_node(
        &a,
        &a.dir.path().join("node1"),
        &node_token(&a),
        "node1",
        "env=dev",
    );
    for (name, text) in [("moderated", MODERATED), ("session-moderator", AUDITOR)] {
        let path = a.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, text).unwrap();
        a.ok(&["admin", "create", "-f", path.to_str().unwrap()]);
    }
    os_login();
    let bob = a.add_user("bob", "moderated", OS_LOGIN);
    let alice = a.add_user("alice", "session-moderator,auditor", "nobody");
    assert!(a.login("bob", PASSWORD, &bob).status.success());
    wait_for_node(&a, "node1");
    // bob keeps his own HOP_HOME; alice logs in to the appliance's default one below.
    let bob_home = a.dir.path().join("bob-home");
    assert!(
        Command::new("cp")
            .arg("-a")
            .arg(&a.home)
            .arg(&bob_home)
            .status()
            .unwrap()
            .success()
    );

    // A command cannot be moderated, with a terminal or without: refused, saying why.
    for tty in [&[][..], &["-t"][..]] {
        let out = Command::new(HOP)
            .arg("ssh")
            .args(tty)
            .args([&format!("{OS_LOGIN}@node1"), "echo", "unmoderated"])
            .env("HOP_HOME", &bob_home)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{tty:?}");
        assert!(
            stderr(&out).contains("moderated sessions"),
            "{tty:?}: {}",
            stderr(&out)
        );
    }

    let sock = a.dir.path().join("tmux.sock");
    let script = format!("HOP_HOME={} {HOP} ssh {OS_LOGIN}@node1", bob_home.display());
    let server = TmuxServer::start(&sock, &script, 120, 40);
    tmux(&sock, &["set-option", "-t", "hop", "remain-on-exit", "on"]);
    wait_pane(&sock, "this session is moderated");
    // Keystrokes before the start go nowhere.
    tmux(
        &sock,
        &["send-keys", "-t", "hop", "touch /tmp/hop-early-$$", "Enter"],
    );
    let start = wait_event(&a, "session.start", |e| {
        e["user"] == "bob" && e["interactive"] == true
    });
    let id = start["session_id"].as_str().unwrap().to_string();

    // bob cannot moderate his own session.
    let out = Command::new(HOP)
        .args(["join", &id, "--mode", "moderator"])
        .env("HOP_HOME", &bob_home)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot moderate your own session"),
        "{}",
        stderr(&out)
    );

    // alice moderates: the shell starts.
    assert!(a.login("alice", PASSWORD, &alice).status.success());
    let mut moderator = Killed(
        Command::new(HOP)
            .args(["join", &id, "--mode", "moderator"])
            .env("HOP_HOME", &a.home)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_pane(&sock, "alice joined as moderator");
    wait_pane(&sock, "the session starts");
    tmux(
        &sock,
        &["send-keys", "-t", "hop", "echo moderated-$((6*7))", "Enter"],
    );
    wait_pane(&sock, "moderated-42");

    // alice leaves: the session ends.
    let _ = moderator.0.kill();
    let _ = moderator.0.wait();
    wait_pane(&sock, "the session ends");
    wait_event(&a, "session.end", |e| e["session_id"] == id.as_str());

    // The recording shows who took part.
    let rec = wait_recording(&a, "bob", Duration::from_secs(30));
    assert_eq!(rec["session_id"], id.as_str());
    let raw = a.ok(&["play", &id, "--format", "raw"]);
    assert!(raw.contains("alice joined as moderator"), "{raw}");
    assert!(raw.contains("moderated-42"), "{raw}");

    // on_leave: pause.
    let paused = a.dir.path().join("paused.yaml");
    std::fs::write(
        &paused,
        MODERATED.replace("on_leave: terminate", "on_leave: pause"),
    )
    .unwrap();
    a.ok(&["admin", "create", "--force", "-f", paused.to_str().unwrap()]);
    std::thread::sleep(Duration::from_secs(2));
    drop(server);
    // A new server on its own socket: the first one may still be exiting.
    let sock = a.dir.path().join("tmux-paused.sock");
    let _server = TmuxServer::start(&sock, &script, 120, 40);
    tmux(&sock, &["set-option", "-t", "hop", "remain-on-exit", "on"]);
    wait_pane(&sock, "this session is moderated");
    let start = wait_event(&a, "session.start", |e| {
        e["user"] == "bob" && e["interactive"] == true && e["session_id"] != id.as_str()
    });
    let second = start["session_id"].as_str().unwrap().to_string();
    let join = || {
        Killed(
            Command::new(HOP)
                .args(["join", &second, "--mode", "moderator"])
                .env("HOP_HOME", &a.home)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let mut moderator = join();
    wait_pane(&sock, "the session starts");
    let _ = moderator.0.kill();
    let _ = moderator.0.wait();
    wait_pane(&sock, "the session is paused");
    tmux(
        &sock,
        &["send-keys", "-t", "hop", "echo ignored-$((2*2))", "Enter"],
    );
    std::thread::sleep(Duration::from_millis(500));
    let mut moderator = join();
    wait_pane(&sock, "the session resumes");
    tmux(
        &sock,
        &["send-keys", "-t", "hop", "echo resumed-$((3*3))", "Enter"],
    );
    let pane = wait_pane(&sock, "resumed-9");
    assert!(!pane.contains("ignored-4"), "{pane}");

    // The moderator ends the session for everyone (`t`); the first moderator's departure was
    // audited.
    let mut keys = moderator.0.stdin.take().unwrap();
    keys.write_all(b"t\n").unwrap();
    keys.flush().unwrap();
    wait_pane(&sock, "moderator alice ended the session");
    let end = wait_event(&a, "session.end", |e| e["session_id"] == second.as_str());
    assert_eq!(end["terminated_by"], "alice", "{end}");
    assert_eq!(end["ended_by"], "moderator", "{end}");
    let _ = moderator.0.wait();
    let left = wait_event(&a, "session.leave", |e| {
        e["session_id"] == second.as_str() && e["user"] == "alice"
    });
    assert_eq!(left["mode"], "moderator", "{left}");
}
