//! `hop bench ssh|app|db` against a real cluster: a tunnelled node agent, an app agent in front
//! of an echo server, and PostgreSQL behind a db agent; the JSON report's counts, errors and
//! percentiles, and errors reported (not hangs) when the target does not exist.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::clock;
use crate::harness::*;
use crate::ssh::{Killed, node_token, start_node, wait_for_node};

/// Runs `hop bench ARGS --format json`; returns the parsed report and the process output.
fn bench(a: &Appliance, args: &[&str]) -> (serde_json::Value, Output) {
    let mut all = vec!["bench"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--format", "json"]);
    let started = clock::monotonic_now();
    let out = a.hop(&all);
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "hop {all:?} printed no JSON report ({e}):\n{}\n{}\n--- appliance log ---\n{}",
            stdout(&out),
            stderr(&out),
            a.log()
        )
    });
    eprintln!(
        "hop {all:?} ({:.1} s):\n{}",
        clock::since(started).as_secs_f64(),
        stdout(&out)
    );
    (v, out)
}

/// Every operation succeeded, `n` of them, with ordered percentiles.
fn assert_clean(v: &serde_json::Value, n: u64) {
    assert_eq!(v["operations"], n, "{v:#}");
    assert_eq!(v["succeeded"], n, "{v:#}");
    assert_eq!(v["errors"], 0, "{v:#}");
    let l = &v["latency_ms"];
    let ms: Vec<f64> = ["min", "p50", "p90", "p99", "p99_9", "max"]
        .iter()
        .map(|k| {
            l[k].as_f64()
                .unwrap_or_else(|| panic!("latency_ms.{k}: {v:#}"))
        })
        .collect();
    assert!(ms[0] > 0.0, "{v:#}");
    assert!(ms.windows(2).all(|w| w[0] <= w[1]), "{v:#}");
}

#[test]
fn bench_ssh_sessions_through_a_tunnelled_node() {
    let a = Appliance::start("");
    let token = node_token(&a);
    let _node = start_node(&a, &a.dir.path().join("node1"), &token, "node1", "env=dev");
    let secret = a.add_user("alice", "access", "root");
    assert!(a.login("alice", PASSWORD, &secret).status.success());
    wait_for_node(&a, "node1");

    // 5/s for 2 s: ten full SSH sessions, each `true` with exit status 0.
    let (v, out) = bench(
        &a,
        &["ssh", "root@node1", "--rate", "5", "--duration", "2s"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_clean(&v, 10);
    assert_eq!(v["workload"], "ssh");
    assert_eq!(v["scheduled"], 10);

    // A PTY and a shell, typed into.
    let (v, out) = bench(
        &a,
        &[
            "ssh",
            "root@node1",
            "--interactive",
            "--command",
            "echo hi",
            "--rate",
            "4",
            "--duration",
            "1s",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_clean(&v, 4);

    // A failing command is an error with its status.
    let (v, out) = bench(
        &a,
        &[
            "ssh",
            "root@node1",
            "--command",
            "exit 3",
            "--rate",
            "2",
            "--duration",
            "1s",
        ],
    );
    assert!(!out.status.success());
    assert_eq!(v["errors"], 2, "{v:#}");
    assert_eq!(
        v["error_messages"][0]["message"],
        "the command exited with status 3"
    );

    // An unknown node: every operation fails quickly with the proxy's words, nothing hangs.
    let started = clock::monotonic_now();
    let (v, out) = bench(&a, &["ssh", "root@nope", "--rate", "5", "--duration", "1s"]);
    assert!(clock::since(started) < Duration::from_secs(10));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("every operation failed"),
        "{}",
        stderr(&out)
    );
    assert_eq!(v["operations"], 5, "{v:#}");
    assert_eq!(v["errors"], 5, "{v:#}");
    assert_eq!(v["succeeded"], 0, "{v:#}");
    assert!(v["latency_ms"]["p50"].is_null(), "{v:#}");
    let msg = v["error_messages"][0]["message"].as_str().unwrap();
    assert!(msg.contains("node \"nope\" is not connected"), "{msg}");
    assert_eq!(v["error_messages"][0]["count"], 5);

    // Ctrl-C stops the schedule and still reports what was done.
    let child = Command::new(HOP)
        .args([
            "bench",
            "ssh",
            "root@node1",
            "--rate",
            "2",
            "--duration",
            "60s",
        ])
        .args(["--format", "json"])
        .env("HOP_HOME", &a.home)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1700));
    let started = clock::monotonic_now();
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let out = child.wait_with_output().unwrap();
    assert!(clock::since(started) < Duration::from_secs(5));
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["interrupted"], true, "{v:#}");
    let n = v["operations"].as_u64().unwrap();
    assert!((2..=5).contains(&n), "{v:#}");
    assert_clean(&v, n);

    // The text report names the same things.
    let out = a.hop(&[
        "bench",
        "ssh",
        "root@node1",
        "--rate",
        "4",
        "--duration",
        "500ms",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    eprintln!("{text}");
    assert!(
        text.contains("2 operations") && text.contains("errors:      0") && text.contains("p99.9"),
        "{text}"
    );
}

/// An echo server on a free port, one thread per connection, until the test ends.
fn echo_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { break };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = c.read(&mut buf) {
                    if n == 0 || c.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

/// Waits until `hop apps ls` lists `name` and its agent has a parked data connection.
fn wait_for_app(a: &Appliance, name: &str) {
    let deadline = clock::monotonic_now() + Duration::from_secs(30);
    loop {
        let apps = a.hop(&["apps", "ls", "--format", "json"]);
        let inv = a.hop(&["admin", "inventory", "ls", "--format", "json"]);
        let pooled = serde_json::from_slice::<serde_json::Value>(&inv.stdout)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .any(|x| x["pooled_data_connections"].as_u64().unwrap_or(0) > 0);
        if pooled && stdout(&apps).contains(&format!("\"name\": \"{name}\"")) {
            return;
        }
        assert!(
            clock::monotonic_now() < deadline,
            "app {name} did not appear: {} {}",
            stdout(&apps),
            stderr(&apps)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn bench_app_sessions_against_an_echo_service() {
    let a = Appliance::start("");
    let token = a.join_token("app");
    let port = echo_server();
    let data = a.dir.path().join("app-agent");
    let _agent = Killed(
        Command::new(HOP)
            .args([
                "start", "--roles", "app", "--proxy", &a.addr, "--ca-pin", &a.pin,
            ])
            .args(["--token", &token, "--data-dir"])
            .arg(&data)
            .args(["--app", &format!("name=echo,uri=tcp://127.0.0.1:{port}")])
            .env("HOP_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(data.with_extension("log")).unwrap(),
            ))
            .spawn()
            .unwrap(),
    );
    let secret = a.add_user("alice", "access", "alice");
    assert!(a.login("alice", PASSWORD, &secret).status.success());
    wait_for_app(&a, "echo");

    let (v, out) = bench(&a, &["app", "echo", "--rate", "10", "--duration", "1s"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_clean(&v, 10);
    let (v, out) = bench(
        &a,
        &[
            "app",
            "echo",
            "--payload-size",
            "100000",
            "--rate",
            "5",
            "--duration",
            "1s",
            "--concurrency",
            "2",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_clean(&v, 5);
    let (v, out) = bench(
        &a,
        &[
            "app",
            "echo",
            "--connect-only",
            "--rate",
            "10",
            "--duration",
            "1s",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_clean(&v, 10);

    // An application that does not exist: errors, quickly.
    let (v, out) = bench(&a, &["app", "nope", "--rate", "4", "--duration", "1s"]);
    assert!(!out.status.success());
    assert_eq!(v["errors"], 4, "{v:#}");
    assert!(
        !v["error_messages"][0]["message"]
            .as_str()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn bench_db_queries_through_the_proxy() {
    let Some((a, _pg, _agent)) = crate::db::setup() else {
        return;
    };
    a.ok(&[
        "db",
        "login",
        "pg",
        "--db-user",
        "alice",
        "--db-name",
        "hopdb",
    ]);

    // One connection per worker, made before the clock starts; 20 queries.
    let (v, out) = bench(
        &a,
        &[
            "db",
            "pg",
            "--rate",
            "20",
            "--duration",
            "1s",
            "--concurrency",
            "4",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_clean(&v, 20);
    // A new connection per operation.
    let (v, out) = bench(
        &a,
        &[
            "db",
            "pg",
            "--new-connections",
            "--rate",
            "5",
            "--duration",
            "1s",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_clean(&v, 5);
    // The database's own error, and the connection goes on being used.
    let (v, out) = bench(
        &a,
        &[
            "db",
            "pg",
            "--query",
            "SELEC 1",
            "--rate",
            "4",
            "--duration",
            "1s",
            "--concurrency",
            "1",
        ],
    );
    assert!(!out.status.success());
    assert_eq!(v["errors"], 4, "{v:#}");
    let msg = v["error_messages"][0]["message"].as_str().unwrap();
    assert!(msg.starts_with("ERROR 42601"), "{msg}");
    assert_eq!(v["error_messages"][0]["count"], 4);

    // Not logged in to that database: a clear refusal before any load.
    let out = a.hop(&["bench", "db", "other", "--rate", "1", "--duration", "1s"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("hop db login other"),
        "{}",
        stderr(&out)
    );
}
