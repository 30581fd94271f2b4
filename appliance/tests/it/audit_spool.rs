//! An agent's audit events outlive an outage of Auth and a restart of the agent: an SSH node
//! serving direct connections while the appliance is down spools its events to disk, keeps them
//! when it is killed and started again, and sends each exactly once when Auth is back.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::clock;
use crate::harness::*;
use crate::ssh::{Killed, events, node_token, wait_for_node};

/// Starts the node agent `node1` with a direct SSH listener on `ssh_port`; `token` only for the
/// first start (the identity is then kept in `data`). Its log is `<data>.<run>.log`.
fn start_node(a: &Appliance, data: &Path, token: Option<&str>, ssh_port: u16, run: u32) -> Killed {
    let mut cmd = Command::new(HOP);
    cmd.args([
        "start",
        "--roles",
        "node",
        "--proxy",
        &a.addr,
        "--ca-pin",
        &a.pin,
        "--nodename",
        "node1",
        "--ssh-listen",
        &format!("127.0.0.1:{ssh_port}"),
        "--data-dir",
    ])
    .arg(data);
    if let Some(t) = token {
        cmd.args(["--token", t]);
    }
    let log = std::fs::File::create(data.with_extension(format!("{run}.log"))).unwrap();
    let child = cmd
        .env("HOP_LOG", "info")
        .env_remove("HOP_JOIN_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    Killed(child)
}

/// Runs `command` with OpenSSH straight to the node's own listener (no proxy, no Auth), as alice.
fn direct_ssh(a: &Appliance, port: u16, command: &str) -> Output {
    let (key, cert, _) = key_paths(a, "alice");
    Command::new("ssh")
        .arg("-p")
        .arg(port.to_string())
        .arg("-i")
        .arg(&key)
        .arg("-o")
        .arg(format!("CertificateFile={}", cert.display()))
        .args([
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "ConnectTimeout=10",
            "root@127.0.0.1",
            command,
        ])
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Runs `echo <word>` on the node until it answers (the listener may still be starting).
fn run_numbered(a: &Appliance, port: u16, word: &str, node_log: &Path) {
    let deadline = clock::monotonic_now() + Duration::from_secs(30);
    loop {
        let out = direct_ssh(a, port, &format!("echo {word}"));
        if out.status.success() {
            assert_eq!(stdout(&out).trim(), word);
            return;
        }
        assert!(
            clock::monotonic_now() < deadline,
            "ssh to the node's listener failed: {}\n--- node log ---\n{}",
            stderr(&out),
            std::fs::read_to_string(node_log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn spool_dir(node_dir: &Path) -> PathBuf {
    node_dir.join("agent").join("audit-spool")
}

/// Every line in the spool's segments.
fn spooled(node_dir: &Path) -> String {
    let mut files: Vec<PathBuf> = std::fs::read_dir(spool_dir(node_dir))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "jsonl"))
        .map(|f| std::fs::read_to_string(f).unwrap_or_default())
        .collect()
}

/// Waits until the spool holds the `exec` events of `echo <word>` for every word. The session's
/// `session.start` names the command too, but it is written first: waiting for it alone would
/// let a test kill the node while the `exec` event is still in memory (where a crash loses it).
fn wait_spooled(node_dir: &Path, words: &[String]) {
    let deadline = clock::monotonic_now() + Duration::from_secs(20);
    loop {
        let text = spooled(node_dir);
        let exec_of = |w: &String| {
            let command = format!("\"command\":\"echo {w}\"");
            text.lines()
                .any(|l| l.contains("\"event\":\"exec\"") && l.contains(&command))
        };
        if words.iter().all(exec_of) {
            return;
        }
        assert!(
            clock::monotonic_now() < deadline,
            "the node did not spool {words:?}; spool:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How many stored `exec` events ran `echo <word>`, per word.
fn stored_counts(a: &Appliance, words: &[String]) -> Vec<usize> {
    let all = events(a, "exec");
    words
        .iter()
        .map(|w| {
            let cmd = format!("echo {w}");
            all.iter().filter(|e| e["command"] == cmd.as_str()).count()
        })
        .collect()
}

#[test]
fn agent_events_wait_on_disk_while_auth_is_away_and_arrive_once() {
    let mut a = Appliance::start("");
    let token = node_token(&a);
    let node_dir = a.dir.path().join("node1");
    let port = free_port();
    let node = start_node(&a, &node_dir, Some(&token), port, 1);
    let secret = a.add_user("alice", "access", "root");
    let out = a.login("alice", PASSWORD, &secret);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for_node(&a, "node1");
    let words: Vec<String> = (0..=6).map(|i| format!("spool-{i}")).collect();

    // Auth is up: a direct session's event goes straight to it, nothing stays on disk.
    run_numbered(&a, port, &words[0], &node_dir.with_extension("1.log"));
    let deadline = clock::monotonic_now() + Duration::from_secs(20);
    while stored_counts(&a, &words[..1]) != [1] {
        assert!(
            clock::monotonic_now() < deadline,
            "spool-0 never reached Auth"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Auth (the whole appliance) crashes. The node still decides from its cached access data,
    // and its events go to the spool.
    a.kill();
    for w in &words[1..=3] {
        run_numbered(&a, port, w, &node_dir.with_extension("1.log"));
    }
    wait_spooled(&node_dir, &words[1..=3]);

    // The node crashes too and starts again while Auth is still away (no token: it kept its
    // identity). Its earlier events are now only on disk; new ones queue behind them.
    drop(node);
    let _node = start_node(&a, &node_dir, None, port, 2);
    for w in &words[4..=6] {
        run_numbered(&a, port, w, &node_dir.with_extension("2.log"));
    }
    wait_spooled(&node_dir, &words[1..=6]);

    // Auth comes back where the node expects it: every event arrives, the spool empties.
    a.restart_same_port();
    let deadline = clock::monotonic_now() + Duration::from_secs(90);
    loop {
        let counts = stored_counts(&a, &words);
        if counts.iter().all(|&c| c >= 1) && spooled(&node_dir).is_empty() {
            break;
        }
        assert!(
            clock::monotonic_now() < deadline,
            "not every event arrived: {counts:?}; spool:\n{}\n--- node log ---\n{}",
            spooled(&node_dir),
            std::fs::read_to_string(node_dir.with_extension("2.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // Each exactly once, in the order they ran.
    assert_eq!(stored_counts(&a, &words), vec![1; words.len()]);
    let order: Vec<String> = events(&a, "exec")
        .iter()
        .filter_map(|e| e["command"].as_str())
        .filter_map(|c| c.strip_prefix("echo "))
        .map(str::to_owned)
        .collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order.len(), words.len(), "{order:?}");
    assert!(
        order == sorted || order.iter().rev().eq(sorted.iter()),
        "events out of order: {order:?}"
    );
    let ok = a.ok(&["admin", "audit", "verify"]);
    assert!(ok.contains("intact"), "{ok}");
}
