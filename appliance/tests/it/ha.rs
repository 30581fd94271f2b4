//! Several appliances, one cluster: two `hop start` processes (own data dirs and ports) on one
//! PostgreSQL (cluster state and audit events), behind HAProxy (TCP, round robin, PROXY protocol
//! v2 to the appliances). A node agent joined through the load balancer keeps tunnels to both
//! (`agent_connection_count` 2, the default); a db agent to one only
//! (`--agent-connection-count 1`), so that a user who lands on the other appliance reaches it
//! through proxy peering. Ordinary users and an ordinary login throughout. Then one appliance
//! is killed (SIGKILL): a session through the other goes on, new sessions through the load
//! balancer succeed within 10 s, the db agent comes back on the survivor, every event the killed
//! appliance acknowledged to a producer (user creations) is found from the survivor, and the
//! survivor's audit log holds both appliances' events and verifies.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::backup_restore::Postgres as SharedState;
use crate::clock;
use crate::db::{Postgres as Database, raw_tls, start_db_agent_via};
use crate::harness::*;
use crate::ssh::{node_token, start_node_via, wait_event};

const PROXY_PROTOCOL: &str = "  proxy_protocol:\n    trusted_cidrs: [127.0.0.0/8]\n";
const DB_ROLE: &str = "kind: role\nversion: v7\nmetadata:\n  name: db-ha\nspec:\n  allow:\n    db_labels:\n      env: test\n    db_users: [alice]\n    db_names: [hopdb]\n";
/// New sessions through the load balancer must work again this soon after an appliance dies.
const FAILOVER_WITHIN: Duration = Duration::from_secs(10);

/// HAProxy in front of the appliances, stopped (by its PID) on drop.
struct Haproxy {
    child: Child,
    addr: String,
    dir: tempfile::TempDir,
}

impl Haproxy {
    /// Runs a command of HAProxy's runtime API (`disable server appliances/a0`).
    fn command(&self, line: &str) {
        use std::io::{Read, Write};
        let mut s =
            std::os::unix::net::UnixStream::connect(self.dir.path().join("admin.sock")).unwrap();
        s.write_all(format!("{line}\n").as_bytes()).unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        assert!(answer.trim().is_empty(), "{line}: {answer}");
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn haproxy_bin() -> Option<PathBuf> {
    ["/usr/sbin/haproxy", "/usr/bin/haproxy"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// HAProxy balancing over `backends` round robin, health-checked every 500 ms, each connection
/// preceded by a PROXY v2 header; a connection that cannot reach one backend goes to another.
fn haproxy(backends: &[&str]) -> Option<Haproxy> {
    let Some(bin) = haproxy_bin() else {
        eprintln!("SKIP: HAProxy is not installed");
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let servers: String = backends
        .iter()
        .enumerate()
        .map(|(i, b)| format!("  server a{i} {b} send-proxy-v2 check inter 500ms fall 2 rise 1\n"))
        .collect();
    let cfg = format!(
        "global\n  maxconn 2000\n  stats socket {}/admin.sock level admin\ndefaults\n  mode tcp\n  timeout connect 2s\n  timeout client 1h\n  timeout server 1h\n  retries 3\n  option redispatch\nfrontend hop\n  bind {addr}\n  default_backend appliances\nbackend appliances\n  balance roundrobin\n{servers}",
        dir.path().display()
    );
    let path = dir.path().join("haproxy.cfg");
    std::fs::write(&path, cfg).unwrap();
    let log = std::fs::File::create(dir.path().join("haproxy.log")).unwrap();
    let child = Command::new(bin)
        .args(["-db", "-f"])
        .arg(&path)
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let lb = Haproxy { child, addr, dir };
    wait_until("HAProxy listens", Duration::from_secs(10), || {
        std::net::TcpStream::connect(&lb.addr).is_ok()
    });
    Some(lb)
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = clock::monotonic_now() + limit;
    while !done() {
        assert!(
            clock::monotonic_now() < deadline,
            "{what}: not within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `psql` of the user of `home` to database `pg` through Hop, running `sql` (`hop db login`
/// first); what it printed, or the login's failure.
fn psql_in(home: &Path, sql: &str) -> Output {
    match psql_command(home, sql) {
        Ok(mut psql) => psql.output().unwrap(),
        Err(login) => login,
    }
}

/// The psql command of [`psql_in`], after `hop db login`; the login's output when it failed.
fn psql_command(home: &Path, sql: &str) -> Result<Command, Output> {
    let login = hop_in(
        home,
        &[
            "db",
            "login",
            "pg",
            "--db-user",
            "alice",
            "--db-name",
            "hopdb",
        ],
    );
    if !login.status.success() {
        return Err(login);
    }
    let conninfo = hop_in(home, &["db", "config", "pg", "--format", "uri"]);
    let mut psql = Command::new("psql");
    psql.arg(stdout(&conninfo).trim())
        .args(["-X", "-Atc", sql])
        .env("HOP_HOME", home)
        .env_remove("PGPASSWORD")
        .stdin(Stdio::null());
    Ok(psql)
}

/// Creates users `p0`, `p1`, … through the appliance whose data dir and home are given until a
/// creation fails (the appliance died); the names it acknowledged.
fn acknowledged_creations(data: &Path, home: &Path) -> Vec<String> {
    let mut done = Vec::new();
    for i in 0.. {
        let name = format!("p{i}");
        let out = Command::new(HOP)
            .args(["admin", "users", "add", &name, "--roles", "access"])
            .env("HOP_DATA_DIR", data)
            .env("HOP_HOME", home)
            .env_remove("HOP_PROXY")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        if !out.status.success() {
            break;
        }
        done.push(name);
    }
    done
}

fn cancel_through_the_other_appliance(lb: &Haproxy, appliances: [&Appliance; 2], home: &Path) {
    let query = psql_command(home, "SELECT pg_sleep(60)")
        .unwrap_or_else(|login| panic!("hop db login: {}", stderr(&login)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let active = |x: &Appliance| x.metric("hop_db_sessions_active");
    let mut held_by = None;
    wait_until("the query's session", Duration::from_secs(20), || {
        held_by = appliances.iter().position(|x| active(x) == 1);
        held_by.is_some()
    });
    let held_by = held_by.unwrap();
    lb.command(&format!("disable server appliances/a{held_by}"));
    let started = clock::monotonic_now();
    let sent = Command::new("kill")
        .args(["-INT", &query.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = query.wait_with_output().unwrap();
    lb.command(&format!("enable server appliances/a{held_by}"));
    assert!(
        stderr(&out).contains("canceling statement due to user request"),
        "psql: {} {}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        clock::monotonic_now() - started < Duration::from_secs(10),
        "the cancel took {:?}",
        clock::monotonic_now() - started
    );
}

/// A PeerDial frame (the tunnel protocol's framing) for an SSH session on `agent_id`.
fn peer_dial(agent_id: &str) -> Vec<u8> {
    let mut body = vec![0x08u8];
    body.extend_from_slice(&(agent_id.len() as u16).to_be_bytes());
    body.extend_from_slice(agent_id.as_bytes());
    body.extend_from_slice(&[7u8; 16]);
    body.extend_from_slice(&4u16.to_be_bytes());
    body.extend_from_slice(b"@ssh");
    body.extend_from_slice(&[0x04, 127, 0, 0, 1, 0x30, 0x39]);
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}

fn ssh_in(home: &Path, command: &str) -> Output {
    hop_in(home, &["ssh", &format!("{OS_LOGIN}@node1"), command])
}

fn tunnels(a: &Appliance) -> u64 {
    a.metric("hop_proxy_tunnels_connected")
}

fn peered(a: &Appliance, side: &str) -> u64 {
    a.metric(&format!("hop_proxy_peer_sessions_total{{side=\"{side}\"}}"))
}

#[test]
fn two_appliances_behind_haproxy_share_agents_through_peering_and_survive_a_kill() {
    let Some(state) = SharedState::start() else {
        return;
    };
    let Some(_) = haproxy_bin() else {
        eprintln!("SKIP: HAProxy is not installed");
        return;
    };
    state.create_db("hop_ha");
    let hop_lines = format!(
        "{}    audit_events_uri: \"{}\"\n",
        state.storage_yaml("hop_ha"),
        state.url("hop_ha")
    );
    let a = Appliance::start_configured(&hop_lines, NO_SECOND_FACTOR, PROXY_PROTOCOL);
    let mut b = Appliance::start_configured(&hop_lines, NO_SECOND_FACTOR, PROXY_PROTOCOL);
    assert_eq!(a.pin, b.pin, "one cluster, one CA");
    let lb = haproxy(&[&a.addr, &b.addr]).unwrap();

    let Some(database) = Database::start(&a) else {
        return;
    };
    let role = a.dir.path().join("db-role.yaml");
    std::fs::write(&role, DB_ROLE).unwrap();
    a.ok(&["admin", "create", "-f", role.to_str().unwrap()]);
    os_login();
    add_password_user(&a, "alice", "access,db-ha", OS_LOGIN);

    // Agents join through the load balancer: the node keeps tunnels to both appliances, the
    // db agent to one.
    let node_dir = a.dir.path().join("node1");
    let _node = start_node_via(
        &lb.addr,
        &a.pin,
        &node_dir,
        &node_token(&a),
        "node1",
        "env=test",
        &[],
    );
    let _db = start_db_agent_via(&b, &lb.addr, &database, &["--agent-connection-count", "1"]);
    wait_until(
        "the node on both appliances, the db agent on one",
        Duration::from_secs(60),
        || tunnels(&a) + tunnels(&b) == 3 && tunnels(&a) >= 1 && tunnels(&b) >= 1,
    );

    // Alice logs in through either appliance and through the load balancer.
    let home = |at: &str| a.dir.path().join(format!("home-{at}"));
    for (at, proxy) in [("a", &a.addr), ("b", &b.addr), ("lb", &lb.addr)] {
        let out = password_login_via(proxy, &a.pin, "alice", &home(at));
        assert!(out.status.success(), "login through {at}: {}", stderr(&out));
    }
    // SSH and psql reach the agents through either appliance: the db agent's sessions on the
    // appliance without its tunnel go through the other (peering).
    for at in ["a", "b"] {
        wait_until(
            &format!("node1 through {at}"),
            Duration::from_secs(30),
            || stdout(&ssh_in(&home(at), "echo up")).contains("up"),
        );
        wait_until(
            &format!("psql through {at}"),
            Duration::from_secs(30),
            || {
                stdout(&psql_in(&home(at), "SELECT 'reached ' || current_user"))
                    .contains("reached alice")
            },
        );
    }
    assert_eq!(
        peered(&a, "sent") + peered(&b, "sent"),
        peered(&a, "taken") + peered(&b, "taken"),
        "every peered session was taken by the other appliance"
    );
    assert!(
        peered(&a, "sent") + peered(&b, "sent") >= 1,
        "the appliance without the db agent's tunnel reached it through the other\n--- a ---\n{}\n--- b ---\n{}",
        a.log(),
        b.log()
    );

    // psql's Ctrl-C through the load balancer reaches the query when the cancel lands on the
    // other appliance (HAProxy sends it there: the session's appliance is disabled for new
    // connections meanwhile).
    cancel_through_the_other_appliance(&lb, [&a, &b], &home("lb"));

    // The audit log from either appliance holds both appliances' events (the three logins).
    for x in [&a, &b] {
        let found = x.ok(&[
            "admin",
            "audit",
            "search",
            "--type",
            "user.login",
            "--format",
            "json",
        ]);
        assert!(found.matches("alice").count() >= 3, "{found}");
        x.ok(&["admin", "audit", "verify"]);
    }

    // The peering route admits only the cluster's proxies: an agent's host certificate and a
    // user's certificate are refused there, and audited.
    let agent = node_dir.join("agent");
    let answer = raw_tls(
        &a,
        "hop-peer",
        &agent.join("host.crt"),
        &agent.join("host.key"),
        &peer_dial("any-agent"),
    );
    assert!(answer.is_empty(), "an agent was answered: {answer:?}");
    wait_event(&a, "access.refused", |e| {
        e["route"] == "proxy_peer"
            && e["error"]
                .as_str()
                .is_some_and(|x| x.contains("host certificate"))
    });
    let keys = home("a").join("keys").join(&a.addr);
    let answer = raw_tls(
        &a,
        "hop-peer",
        &keys.join("alice-tls.crt"),
        &keys.join("alice-tls.key"),
        &peer_dial("any-agent"),
    );
    assert!(answer.is_empty(), "a user was answered: {answer:?}");
    wait_event(&a, "access.refused", |e| {
        e["route"] == "proxy_peer" && e["reason"] == "wrong_certificate"
    });

    // A session through `a` is under way when `b` dies; it goes on.
    let long = Command::new(HOP)
        .args([
            "ssh",
            &format!("{OS_LOGIN}@node1"),
            "sleep 4; echo survived",
        ])
        .env("HOP_HOME", home("a"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A producer writes through `b` until it dies, keeping the names `b` acknowledged (a user's
    // creation answers once its `user.create` event is committed).
    let producer = {
        let (data, home) = (b.data.clone(), b.home.clone());
        std::thread::spawn(move || acknowledged_creations(&data, &home))
    };
    std::thread::sleep(Duration::from_secs(1));
    b.kill();
    let killed_at = clock::monotonic_now();
    let acknowledged = producer.join().unwrap();
    assert!(
        acknowledged.len() >= 3,
        "the producer ran: {acknowledged:?}"
    );

    // New sessions through the load balancer, within the bound.
    wait_until(
        "ssh through the load balancer after the kill",
        FAILOVER_WITHIN,
        || stdout(&ssh_in(&home("lb"), "echo again")).contains("again"),
    );
    let ssh_back = clock::monotonic_now() - killed_at;
    wait_until(
        "psql through the load balancer after the kill",
        FAILOVER_WITHIN + Duration::from_secs(20),
        || stdout(&psql_in(&home("lb"), "SELECT 'still ' || current_user")).contains("still alice"),
    );
    let db_back = clock::monotonic_now() - killed_at;
    eprintln!("after SIGKILL: ssh back in {ssh_back:?}, psql back in {db_back:?}");
    let out = long.wait_with_output().unwrap();
    assert!(
        stdout(&out).contains("survived"),
        "the session through the survivor: {}",
        stderr(&out)
    );
    assert!(
        tunnels(&a) >= 2,
        "both agents are tunnelled to the survivor"
    );

    // The survivor's audit log holds both appliances' events and verifies.
    let found = a.ok(&[
        "admin",
        "audit",
        "search",
        "--type",
        "user.login",
        "--format",
        "json",
    ]);
    assert!(found.matches("alice").count() >= 3, "{found}");
    let created = a.ok(&[
        "admin",
        "audit",
        "search",
        "--type",
        "user.create",
        "--limit",
        "100000",
        "--format",
        "json",
    ]);
    for name in &acknowledged {
        assert!(
            created.contains(&format!("\"{name}\"")),
            "{name} was acknowledged by the killed appliance but is not in the log: {created}"
        );
    }
    a.ok(&["admin", "audit", "verify"]);
}
