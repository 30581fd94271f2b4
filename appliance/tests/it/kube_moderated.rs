//! Moderated Kubernetes exec sessions (`require_session_join` for `k8s`), end to end with the
//! real kubectl 1.32 (WebSocket streams) and ordinary users on `kube.rs`'s harness: bob's exec
//! waits (the stand-in API server sees no exec and his typed line reaches nothing), bob cannot
//! moderate it himself, a user without the moderator role's `join_sessions` is refused, it
//! starts when alice joins with `hop join --mode moderator` (she sees its output), and ends
//! when she leaves (`on_leave: terminate`), or at once when she types `t`; the join, the
//! departure and the end are audited and the recording shows who took part. His port-forward
//! and an exec over SPDY (kubectl 1.20) are refused, his `kubectl get` is not.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::clock;
use crate::harness::*;
use crate::kube::{KubeCluster, KubeUser, tools};
use crate::ssh::Killed;

const ROLES: &str = "\
kind: role
version: v7
metadata:
  name: kube-moderated
spec:
  allow:
    require_session_join:
    - name: kube-auditors
      filter: 'contains(user.spec.roles, \"kube-moderator\")'
      kinds: [k8s]
      count: 1
      modes: [moderator]
      on_leave: terminate
---
kind: role
version: v7
metadata:
  name: kube-moderator
spec:
  allow:
    join_sessions:
    - name: moderate-kube
      roles: [kube-moderated]
      kinds: [k8s]
      modes: [moderator, observer]
";

/// Lines a child writes on stdout and stderr, as they come.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    for r in [Box::new(out) as Box<dyn Read + Send>, Box::new(err)] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(r).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
    }
    rx
}

/// Waits (15 s at most) for a line matching `pred`; every line read goes into `seen`.
fn wait_line(
    rx: &mpsc::Receiver<String>,
    seen: &mut Vec<String>,
    pred: impl Fn(&str) -> bool,
) -> String {
    let deadline = clock::monotonic_now() + Duration::from_secs(15);
    loop {
        if let Some(l) = seen.iter().find(|l| pred(l)) {
            return l.clone();
        }
        let left = deadline.saturating_duration_since(clock::monotonic_now());
        match rx.recv_timeout(left) {
            Ok(l) => seen.push(l),
            Err(_) => panic!("no matching line among {seen:#?}"),
        }
    }
}

/// `hop join ID --mode MODE` as `u`, run to its end.
fn join(u: &KubeUser, id: &str, mode: &str) -> std::process::Output {
    u.hop(&["join", id, "--mode", mode])
}

#[test]
fn a_moderated_kubectl_exec_waits_for_its_moderator_and_ends_when_they_leave() {
    let Some(tools) = tools() else { return };
    let Some(kubectl) = tools.kubectl_new.clone() else {
        eprintln!("skipped: no kubectl 1.30 or later (moderated sessions need its WebSocket exec)");
        return;
    };
    let c = KubeCluster::start(tools);
    let roles = c.a.dir.path().join("moderated-roles.yaml");
    std::fs::write(&roles, ROLES).unwrap();
    c.a.ok(&["admin", "create", "-f", roles.to_str().unwrap()]);
    let bob = c.user("kube-dev,kube-moderated");
    let alice = c.user("kube-moderator");
    let carol = c.user("kube-dev");
    bob.kube_login("dev");

    // Requests that are no session go on; a port-forward cannot be moderated.
    let out = bob.run(&kubectl, &["get", "pods", "-o", "name"], "");
    assert!(stdout(&out).contains("pod/web-1"), "{}", stderr(&out));
    let out = bob.run(&kubectl, &["port-forward", "pod/web-1", "0:80"], "");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot be moderated"),
        "{}",
        stderr(&out)
    );
    // Nor can a pod's proxy (nor a node's, which reaches the kubelet's /run, nor an ephemeral
    // container: the same rule).
    let raw = "/api/v1/namespaces/default/pods/web-1/proxy/";
    let out = bob.run(&kubectl, &["get", "--raw", raw], "");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no moderator can watch"),
        "{}",
        stderr(&out)
    );

    // An exec over SPDY (kubectl 1.20) cannot be held: refused, saying why.
    let out = bob.run(
        &c.tools.kubectl_old,
        &["exec", "web-1", "--", "echo", "x"],
        "",
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("WebSocket exec protocol"),
        "{}",
        stderr(&out)
    );

    // bob's exec waits, saying how to moderate it; what he types goes nowhere yet.
    let mut exec = Killed(bob.spawn(&kubectl, &["exec", "-i", "web-1", "--", "sh"]));
    let rx = lines_of(&mut exec.0);
    let mut seen = Vec::new();
    let waiting = wait_line(&rx, &mut seen, |l| l.contains("this session is moderated"));
    let id = waiting
        .split("hop join ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no session id in {waiting:?}"))
        .to_string();
    let mut stdin = exec.0.stdin.take().unwrap();
    stdin
        .write_all(b"echo moderated-$((6*7))\necho held-line\n")
        .unwrap();
    stdin.flush().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let execs = |c: &KubeCluster| {
        c.apiserver_audit()
            .into_iter()
            .filter(|e| e["path"].as_str().is_some_and(|p| p.contains("/exec")))
            .count()
    };
    assert_eq!(
        execs(&c),
        0,
        "the exec reached the API server before its moderator"
    );
    assert!(!seen.iter().any(|l| l.contains("held-line")), "{seen:#?}");

    // Its tracker lists it, kind kube; bob cannot moderate it; carol may not join it.
    let ls = bob.hop(&["sessions", "ls"]);
    assert!(stdout(&ls).contains(&id), "{}{}", stdout(&ls), stderr(&ls));
    let out = join(&bob, &id, "moderator");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot moderate your own session"),
        "{}",
        stderr(&out)
    );
    let out = join(&carol, &id, "moderator");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("denied"), "{}", stderr(&out));
    c.wait_event("session.join", |e| {
        e["user"] == carol.name.as_str() && e["success"] == false
    });

    // alice moderates: the exec starts, bob's held lines run, she sees the output.
    let mut moderator = Killed(
        Command::new(HOP)
            .args(["join", &id, "--mode", "moderator"])
            .env("HOP_HOME", &alice.home)
            .env("HOME", &alice.home)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let alice_rx = lines_of(&mut moderator.0);
    wait_line(&rx, &mut seen, |l| {
        l.contains(&format!("{} joined as moderator", alice.name))
    });
    wait_line(&rx, &mut seen, |l| l.contains("the session starts"));
    wait_line(&rx, &mut seen, |l| l.contains("held-line"));
    let mut alice_seen = Vec::new();
    wait_line(&alice_rx, &mut alice_seen, |l| l.contains("held-line"));
    assert_eq!(execs(&c), 1);
    stdin.write_all(b"echo after-start\n").unwrap();
    stdin.flush().unwrap();
    wait_line(&rx, &mut seen, |l| l.contains("after-start"));

    // alice leaves: the exec ends, saying why.
    let _ = moderator.0.kill();
    let _ = moderator.0.wait();
    wait_line(&rx, &mut seen, |l| l.contains("the session ends"));
    let deadline = clock::monotonic_now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = exec.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            clock::monotonic_now() < deadline,
            "kubectl went on after its moderator left: {seen:#?}\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success(), "{seen:#?}");
    let end = c.wait_event("kube.exec", |e| {
        e["session_id"] == id.as_str() && e["phase"] == "end"
    });
    assert_eq!(end["ended_by"], "terminated", "{end}");
    assert!(
        end["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("moderators left"),
        "{end}"
    );
    for kind in ["session.join", "session.leave"] {
        c.wait_event(kind, |e| {
            e["user"] == alice.name.as_str() && e["session_id"] == id.as_str()
        });
    }

    // A moderator's `t` ends a second session for everyone.
    let mut exec = Killed(bob.spawn(&kubectl, &["exec", "-i", "web-1", "--", "sh"]));
    let rx = lines_of(&mut exec.0);
    let mut seen2 = Vec::new();
    let waiting = wait_line(&rx, &mut seen2, |l| l.contains("this session is moderated"));
    let second = waiting
        .split("hop join ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_string();
    let mut moderator = Killed(
        Command::new(HOP)
            .args(["join", &second, "--mode", "moderator"])
            .env("HOP_HOME", &alice.home)
            .env("HOME", &alice.home)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_line(&rx, &mut seen2, |l| l.contains("the session starts"));
    let mut keys = moderator.0.stdin.take().unwrap();
    keys.write_all(b"t\n").unwrap();
    keys.flush().unwrap();
    wait_line(&rx, &mut seen2, |l| {
        l.contains(&format!("{} ended the session", alice.name))
    });
    let end = c.wait_event("kube.exec", |e| {
        e["session_id"] == second.as_str() && e["phase"] == "end"
    });
    assert_eq!(end["ended_by"], "moderator", "{end}");
    assert_eq!(end["terminated_by"], alice.name.as_str(), "{end}");
    drop((keys, exec));

    // The recording shows who took part.
    let auditor = c.user("auditor");
    let deadline = clock::monotonic_now() + Duration::from_secs(10);
    loop {
        let raw = stdout(&auditor.hop(&["play", &id, "--format", "raw"]));
        if raw.contains("joined as moderator") && raw.contains("held-line") {
            break;
        }
        assert!(clock::monotonic_now() < deadline, "hop play {id}: {raw}");
        std::thread::sleep(Duration::from_millis(300));
    }
}
