//! CA rotation on a live cluster, with real programs: a node agent, an agentless OpenSSH node
//! (real `sshd`), a database agent in front of a real PostgreSQL, `hop ssh`, stock `ssh` through
//! `hop config` and `psql` through the proxy, all as an ordinary login (`hopuser`) of a user
//! whose roles are the built-in `access` and a database role.
//!
//! * A manual rotation of the user and host CAs, phase by phase, while a `hop ssh` loop runs
//!   through every phase with no failure; after each phase every route works (the agentless
//!   node after its files are signed again); an agent that joins during `update_clients` ends on
//!   the new key; after `standby`, a user certificate and an agent identity from the old key
//!   are refused; then a rollback from `update_servers` restores service the same way.
//! * An automatic rotation of every CA with a short grace period completes by itself, with the
//!   node agent and a bot (`hop bot start`) following onto the new keys.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use crate::clock;
use crate::db::{Postgres, psql, start_db_agent, wait_for_db};
use crate::harness::*;
use crate::openssh_node::start_sshd;
use crate::ssh::{Killed, events, openssh, start_node, wait_for_node, write_config};

const CLUSTER: &str = "test.cluster";
const DB_ROLE: &str = "kind: role\nversion: v7\nmetadata:\n  name: db-alice\nspec:\n  allow:\n    db_labels:\n      env: test\n    db_users: [alice]\n    db_names: [postgres]\n";

/// `hop admin auth rotate --manual --type KIND --phase PHASE` for the user and the host CA.
fn rotate_user_and_host(a: &Appliance, phase: &str) {
    for kind in ["user", "host"] {
        let out = a.ok(&[
            "admin", "auth", "rotate", "--manual", "--type", kind, "--phase", phase,
        ]);
        assert!(out.contains(phase), "{out}");
    }
}

/// Each CA's `(phase, tls pins, ssh fingerprints)` from `hop admin status --format json`.
fn ca_status(a: &Appliance) -> serde_json::Value {
    serde_json::from_str(a.ok(&["admin", "status", "--format", "json"]).trim()).unwrap()
}

fn phase_of(a: &Appliance, kind: &str) -> String {
    let status = ca_status(a);
    status["authorities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == kind)
        .map(|c| c["phase"].as_str().unwrap_or("standby").to_owned())
        .unwrap()
}

fn wait_until(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let deadline = clock::monotonic_now() + Duration::from_secs(secs);
    while !ok() {
        assert!(
            clock::monotonic_now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// How many times an agent's log says it saved new trusted CA keys.
fn trust_saves(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches("trusted CA keys changed; saved them")
        .count()
}

/// Waits until every agent in `logs` saved the trusted keys once more than `before` says: an
/// operator lets `init` last until everything learned the new key (agents ask every 5 s).
fn wait_trust_learned(logs: &[PathBuf], before: &[usize]) {
    let deadline = clock::monotonic_now() + Duration::from_secs(20);
    while !logs
        .iter()
        .zip(before)
        .all(|(log, n)| trust_saves(log) > *n)
    {
        if clock::monotonic_now() > deadline {
            let tails: Vec<String> = logs.iter().map(|l| log_tail(l, 15)).collect();
            panic!(
                "the agents did not learn the new keys:\n{}",
                tails.join("\n---\n")
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// How many times an agent's log says it renewed its host certificate.
fn renewals(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches("host certificate renewed")
        .count()
}

/// `hop login` as `user` into `home`, with the pin `hop admin status` shows now (the key the
/// proxy's certificate comes from: the new one from `update_servers` on).
fn login(a: &Appliance, home: &Path, user: &str) {
    let pin = ca_status(a)["ca_pin"].as_str().unwrap().to_owned();
    let mut child = Command::new(HOP)
        .args([
            "login", "--proxy", &a.addr, "--ca-pin", &pin, "--user", user,
        ])
        .arg("--password-stdin")
        .env("HOP_HOME", home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        format!("{PASSWORD}\n").as_bytes(),
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "hop login: {}", stderr(&out));
}

/// The agentless node's files signed (again) by the current CAs, and sshd told to reread them.
fn sign_agentless(a: &Appliance, dir: &Path, sshd: Option<&Killed>) {
    a.ok(&[
        "admin",
        "auth",
        "sign",
        "--format",
        "openssh",
        "--host",
        "web1",
        "--out",
        dir.join("web1").to_str().unwrap(),
    ]);
    if let Some(s) = sshd {
        // sshd re-executes itself on SIGHUP and loads the new host certificate.
        let ok = Command::new("kill")
            .args(["-HUP", &s.0.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Every route, as a user would take it now: `hop ssh` to both node agents, stock `ssh` through
/// `hop config`, `psql` through the proxy, and `hop ssh` to the agentless node.
fn every_route_works(a: &Appliance, cfg: &Path, nodes: &[&str], when: &str) {
    for node in nodes {
        let out = a.hop(&[
            "ssh",
            &format!("{OS_LOGIN}@{node}"),
            "echo",
            &format!("{when}-ok"),
        ]);
        assert!(
            out.status.success() && stdout(&out).contains(&format!("{when}-ok")),
            "{when}: hop ssh {node}: {}{}",
            stdout(&out),
            stderr(&out)
        );
    }
    let out = openssh(
        a,
        cfg,
        "ssh",
        &[
            "-o",
            "BatchMode=yes",
            &format!("{OS_LOGIN}@node1.{CLUSTER}"),
            "echo stock-ok",
        ],
    );
    assert!(
        out.status.success() && stdout(&out).contains("stock-ok"),
        "{when}: stock ssh: {}",
        stderr(&out)
    );
    // A database login derives from the user's login: taken again, as a user would after
    // logging in again.
    a.ok(&[
        "db",
        "login",
        "pg",
        "--db-user",
        "alice",
        "--db-name",
        "postgres",
    ]);
    let out = psql(a, "", &["-A", "-t", "-c", "select 41 + 1"]);
    assert!(
        out.status.success() && stdout(&out).trim() == "42",
        "{when}: psql: {}{}",
        stdout(&out),
        stderr(&out)
    );
    let out = a.hop(&["ssh", &format!("{OS_LOGIN}@web1"), "echo agentless-ok"]);
    assert!(
        out.status.success() && stdout(&out).contains("agentless-ok"),
        "{when}: agentless: {}",
        stderr(&out)
    );
}

/// `hop ssh` over and over as the user, paused while the user logs in again; counts failures.
struct SshLoop {
    stop: AtomicBool,
    runs: AtomicU32,
    failures: Mutex<Vec<String>>,
    /// Held for writing while `hop login` replaces the files a session reads.
    files: RwLock<()>,
}

impl SshLoop {
    fn new() -> Self {
        Self {
            stop: AtomicBool::new(false),
            runs: AtomicU32::new(0),
            failures: Mutex::new(Vec::new()),
            files: RwLock::new(()),
        }
    }

    fn run(&self, a: &Appliance) {
        while !self.stop.load(Ordering::Relaxed) {
            let out = {
                let _files = self.files.read().unwrap();
                a.hop(&["ssh", &format!("{OS_LOGIN}@node1"), "echo", "loop-ok"])
            };
            self.runs.fetch_add(1, Ordering::Relaxed);
            if !(out.status.success() && stdout(&out).contains("loop-ok")) {
                self.failures.lock().unwrap().push(stderr(&out));
            }
        }
    }
}

/// Sets its flag when dropped, panicking or not.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The phases of one rotation with a check after each; `at_phase` runs right after the step.
fn walk(a: &Appliance, phases: &[&str], mut at_phase: impl FnMut(&str)) {
    for phase in phases {
        rotate_user_and_host(a, phase);
        assert_eq!(phase_of(a, "user"), *phase);
        assert_eq!(phase_of(a, "host"), *phase);
        at_phase(phase);
    }
}

/// Waits until every agent log in `logs` shows one renewal more than `before`.
fn wait_renewed(logs: &[PathBuf], before: &[usize], what: &str) {
    let deadline = clock::monotonic_now() + Duration::from_secs(30);
    while !logs.iter().zip(before).all(|(log, n)| renewals(log) > *n) {
        if clock::monotonic_now() > deadline {
            let tails: Vec<String> = logs.iter().map(|l| log_tail(l, 15)).collect();
            panic!("timed out waiting for {what}:\n{}", tails.join("\n---\n"));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The last `n` lines of a log file.
fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[test]
fn a_manual_rotation_of_the_user_and_host_cas_keeps_every_route_working() {
    let a = Appliance::start(NO_SECOND_FACTOR);
    let Some(pg) = Postgres::start(&a) else {
        return;
    };
    let role = a.dir.path().join("db-role.yaml");
    std::fs::write(&role, DB_ROLE).unwrap();
    a.ok(&["admin", "create", "-f", role.to_str().unwrap()]);
    os_login();
    add_password_user(&a, "alice", "access,db-alice", &format!("{OS_LOGIN},alice"));
    login(&a, &a.home, "alice");

    let node1_dir = a.dir.path().join("node1");
    let _node1 = start_node(&a, &node1_dir, &a.join_token("node"), "node1", "env=rot");
    wait_for_node(&a, "node1");
    let _db = start_db_agent(&a, &pg);
    wait_for_db(&a, "pg");
    let web1 = a.dir.path().join("web1");
    std::fs::create_dir_all(&web1).unwrap();
    sign_agentless(&a, &web1, None);
    let Some(sshd) = start_sshd(&web1, free_port()) else {
        return;
    };
    let sshd_port = std::fs::read_to_string(web1.join("sshd_config"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Port ").map(str::to_owned))
        .unwrap();
    a.ok(&[
        "admin",
        "nodes",
        "add",
        "--openssh",
        "--name",
        "web1",
        "--addr",
        &format!("127.0.0.1:{sshd_port}"),
    ]);
    let (cfg, cluster) = write_config(&a);
    assert_eq!(cluster, CLUSTER);
    every_route_works(&a, &cfg, &["node1"], "before");

    // What the old keys signed, kept to be refused after standby.
    let old_home = a.dir.path().join("old-home");
    assert!(
        Command::new("cp")
            .arg("-a")
            .arg(&a.home)
            .arg(&old_home)
            .status()
            .unwrap()
            .success()
    );
    let stale_agent = a.dir.path().join("stale-agent");
    assert!(
        Command::new("cp")
            .arg("-a")
            .arg(&node1_dir)
            .arg(&stale_agent)
            .status()
            .unwrap()
            .success()
    );
    let before = ca_status(&a);

    let ssh_loop = SshLoop::new();
    let node2_dir = a.dir.path().join("node2");
    let agent_logs = vec![
        node1_dir.with_extension("log"),
        a.dir.path().join("db-agent.log"),
    ];
    let learned: Vec<usize> = agent_logs.iter().map(|l| trust_saves(l)).collect();
    std::thread::scope(|s| {
        s.spawn(|| ssh_loop.run(&a));
        // A failed check below must stop the loop too, or the scope would wait for it forever.
        let _stop = StopOnDrop(&ssh_loop.stop);
        let mut node2 = None;
        walk(
            &a,
            &["init", "update_clients", "update_servers", "standby"],
            |phase| match phase {
                "init" => {
                    wait_trust_learned(&agent_logs, &learned);
                    every_route_works(&a, &cfg, &["node1"], phase);
                }
                "update_clients" => {
                    // The old key still serves: a joiner with the pin it was given still gets
                    // in, and gets its certificate from the new key.
                    node2 = Some(start_node(
                        &a,
                        &node2_dir,
                        &a.join_token("node"),
                        "node2",
                        "env=rot",
                    ));
                    wait_for_node(&a, "node2");
                    every_route_works(&a, &cfg, &["node1", "node2"], phase);
                }
                "update_servers" => {
                    let counts: Vec<usize> = agent_logs.iter().map(|l| renewals(l)).collect();
                    wait_renewed(
                        &agent_logs,
                        &counts,
                        "the agents to renew onto the new host key",
                    );
                    sign_agentless(&a, &web1, Some(&sshd));
                    {
                        let _files = ssh_loop.files.write().unwrap();
                        login(&a, &a.home, "alice");
                    }
                    every_route_works(&a, &cfg, &["node1", "node2"], phase);
                }
                _ => every_route_works(&a, &cfg, &["node1", "node2"], phase),
            },
        );
        ssh_loop.stop.store(true, Ordering::Relaxed);
        drop(node2);
    });
    let failures = ssh_loop.failures.lock().unwrap();
    assert!(failures.is_empty(), "the hop ssh loop failed: {failures:?}");
    assert!(
        ssh_loop.runs.load(Ordering::Relaxed) >= 4,
        "the loop hardly ran"
    );
    drop(failures);

    // After standby: one key per CA, a new one for user and host, the others untouched.
    let after = ca_status(&a);
    for (b, n) in before["authorities"]
        .as_array()
        .unwrap()
        .iter()
        .zip(after["authorities"].as_array().unwrap())
    {
        let keys = |field: &str| n[field].as_array().map_or(0, Vec::len);
        assert!(
            keys("tls_pins") <= 1 && keys("ssh_fingerprints") <= 1,
            "{n}"
        );
        assert_eq!(n["phase"], "standby", "{n}");
        let rotated = matches!(n["type"].as_str(), Some("user" | "host"));
        let changed = b["ssh_fingerprint"] != n["ssh_fingerprint"] || b["tls_pin"] != n["tls_pin"];
        assert_eq!(changed, rotated, "{b} {n}");
    }
    // The old user certificate is refused on every route.
    let out = hop_in(&old_home, &["ssh", &format!("{OS_LOGIN}@node1"), "true"]);
    assert!(
        !out.status.success(),
        "an old-key certificate reached node1"
    );
    let out = hop_in(&old_home, &["ssh", &format!("{OS_LOGIN}@web1"), "true"]);
    assert!(
        !out.status.success(),
        "an old-key certificate reached the agentless node"
    );
    // psql with the database login taken before the rotation (its certificate from the old
    // user key), as the old profile's `hop db config` prints it.
    let conninfo = stdout(&hop_in(
        &old_home,
        &["db", "config", "pg", "--format", "uri"],
    ));
    assert!(conninfo.contains("sslcert"), "{conninfo}");
    let out = Command::new("psql")
        .arg(conninfo.trim())
        .args(["-X", "-A", "-t", "-c", "select 1"])
        .env_remove("PGPASSWORD")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "an old-key database certificate reached PostgreSQL: {}",
        stdout(&out)
    );
    let out = hop_in(&old_home, &["ls"]);
    assert!(!out.status.success(), "an old-key certificate listed nodes");
    let old_cfg = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(a.home.to_str().unwrap(), old_home.to_str().unwrap());
    let old_cfg_path = a.dir.path().join("old_ssh_config");
    std::fs::write(&old_cfg_path, old_cfg).unwrap();
    let out = Command::new("ssh")
        .arg("-F")
        .arg(&old_cfg_path)
        .args([
            "-o",
            "BatchMode=yes",
            &format!("{OS_LOGIN}@node1.{CLUSTER}"),
            "true",
        ])
        .env("HOP_HOME", &old_home)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "stock ssh with an old-key certificate got in"
    );

    // An agent identity from the old host key is refused by the proxy, even when it trusts the
    // proxy's new certificate.
    let host_cas = a.ok(&[
        "admin", "auth", "export", "--type", "host", "--format", "pem",
    ]);
    std::fs::write(stale_agent.join("agent/host_ca.pem"), host_cas).unwrap();
    let stale_log = stale_agent.with_extension("log");
    let stale = Killed(
        Command::new(HOP)
            .args(["start", "--roles", "node", "--proxy", &a.addr, "--data-dir"])
            .arg(&stale_agent)
            .env("HOP_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&stale_log).unwrap()))
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_secs(4));
    drop(stale);
    let log = std::fs::read_to_string(&stale_log).unwrap();
    assert!(
        !log.contains("tunnel to the proxy is up"),
        "an old-key agent identity was let in: {log}"
    );

    // Eight steps audited, with who and when.
    let steps = events(&a, "ca.rotate");
    assert_eq!(steps.len(), 8, "{steps:?}");
    assert!(
        steps.iter().all(|e| e["user"] != "" && e["time"] != ""),
        "{steps:?}"
    );

    // A rollback from update_servers restores service the same way.
    let mut counts: Vec<usize> = agent_logs.iter().map(|l| renewals(l)).collect();
    let learned: Vec<usize> = agent_logs.iter().map(|l| trust_saves(l)).collect();
    walk(&a, &["init", "update_clients", "update_servers"], |phase| {
        if phase == "init" {
            wait_trust_learned(&agent_logs, &learned);
        }
        if phase == "update_servers" {
            wait_renewed(
                &agent_logs,
                &counts,
                "the agents to renew onto the new host key",
            );
            counts = agent_logs.iter().map(|l| renewals(l)).collect();
            sign_agentless(&a, &web1, Some(&sshd));
        }
        every_route_works(&a, &cfg, &["node1"], phase);
    });
    walk(&a, &["rollback"], |phase| {
        wait_renewed(
            &agent_logs,
            &counts,
            "the agents to renew back onto the old host key",
        );
        sign_agentless(&a, &web1, Some(&sshd));
        every_route_works(&a, &cfg, &["node1"], phase);
    });
    // The old key signs again: a login now outlives the new key's standby.
    login(&a, &a.home, "alice");
    walk(&a, &["standby"], |phase| {
        every_route_works(&a, &cfg, &["node1"], phase)
    });
    let keys = |status: &serde_json::Value| -> Vec<(String, String, String)> {
        status["authorities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["phase"].to_string(),
                    c["ssh_fingerprints"].to_string(),
                    c["tls_pins"].to_string(),
                )
            })
            .collect()
    };
    assert_eq!(
        keys(&ca_status(&a)),
        keys(&after),
        "rolled back to the same keys"
    );
}

#[test]
fn an_automatic_rotation_completes_with_agents_and_a_bot_following() {
    let a = Appliance::start(NO_SECOND_FACTOR);
    os_login();
    add_password_user(&a, "alice", "access", OS_LOGIN);
    login(&a, &a.home, "alice");
    let node_dir = a.dir.path().join("node1");
    let _node = start_node(&a, &node_dir, &a.join_token("node"), "node1", "env=auto");
    wait_for_node(&a, "node1");

    // A bot with an identity output, as `hop bot start` keeps it.
    let out = a.ok(&[
        "admin", "bots", "add", "runner", "--roles", "access", "--logins", OS_LOGIN, "--format",
        "json",
    ]);
    let token: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let bot_data = a.dir.path().join("bot");
    let bot_out = a.dir.path().join("bot-out");
    let bot_log = a.dir.path().join("bot.log");
    let _bot = Killed(
        Command::new(HOP)
            .args([
                "bot",
                "start",
                "--proxy",
                &a.addr,
                "--ca-pin",
                &a.pin,
                "--data-dir",
            ])
            .arg(&bot_data)
            .args([
                "--token",
                token["token"].as_str().unwrap(),
                "--destination-dir",
            ])
            .arg(&bot_out)
            .env("HOP_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&bot_log).unwrap()))
            .spawn()
            .unwrap(),
    );
    let bot_ssh = || {
        Command::new("ssh")
            .arg("-F")
            .arg(bot_out.join("ssh_config"))
            .args([
                "-o",
                "BatchMode=yes",
                &format!("{OS_LOGIN}@node1.{CLUSTER}"),
                "echo bot-ok",
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    wait_until("the bot's first outputs", 30, || {
        bot_out.join("ssh_config").exists()
    });
    wait_until("the bot to reach node1", 30, || bot_ssh().status.success());
    let before = ca_status(&a);
    let jwt_export = || a.ok(&["admin", "auth", "export", "--type", "jwt"]);
    let jwt_before = jwt_export();

    let started = clock::monotonic_now();
    let out = a.ok(&[
        "admin",
        "auth",
        "rotate",
        "--type",
        "all",
        "--grace-period",
        "30s",
    ]);
    assert!(out.contains("init"), "{out}");
    wait_until("the automatic rotation to complete", 60, || {
        ca_status(&a)["authorities"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["phase"] == "standby")
    });
    assert!(
        clock::monotonic_now() - started >= Duration::from_secs(27),
        "the rotation skipped its grace period"
    );
    let after = ca_status(&a);
    for (b, n) in before["authorities"]
        .as_array()
        .unwrap()
        .iter()
        .zip(after["authorities"].as_array().unwrap())
    {
        if n["type"] == "jwt" {
            continue; // no fingerprint: its export is compared below
        }
        let key = |c: &serde_json::Value| format!("{}{}", c["tls_pin"], c["ssh_fingerprint"]);
        assert_ne!(key(b), key(n), "{} was not rotated", n["type"]);
    }
    assert_ne!(jwt_export(), jwt_before, "the jwt CA was not rotated");
    // Each CA's three scheduled steps were taken by Auth itself.
    let system = events(&a, "ca.rotate")
        .into_iter()
        .filter(|e| e["user"] == "system")
        .count();
    assert_eq!(system, 3 * 6);

    // The bot followed: its certificate is from the new user key and its known_hosts holds the
    // new host key, so stock ssh with its outputs still reaches the node, which followed too.
    let out = bot_ssh();
    assert!(
        out.status.success() && stdout(&out).contains("bot-ok"),
        "the bot did not follow the rotation: {}\n--- bot log ---\n{}",
        stderr(&out),
        std::fs::read_to_string(&bot_log).unwrap_or_default()
    );
    // The user's old certificate is refused; a new login works.
    let out = a.hop(&["ssh", &format!("{OS_LOGIN}@node1"), "true"]);
    assert!(
        !out.status.success(),
        "a certificate from the dropped user key still works"
    );
    login(&a, &a.home, "alice");
    let out = a.hop(&["ssh", &format!("{OS_LOGIN}@node1"), "echo", "after-ok"]);
    assert!(
        out.status.success() && stdout(&out).contains("after-ok"),
        "{}",
        stderr(&out)
    );
}
