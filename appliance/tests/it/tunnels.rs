//! Reverse tunnels and TCP application access with real processes: an appliance, an app agent
//! joined by token (it listens on no port), socat as the target and as the client.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::clock;
use crate::harness::*;

/// A child process killed when the test ends, pass or fail.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Reaped {
    /// Waits for the process to exit on its own, at most `limit`.
    fn wait_for_exit(&mut self, limit: Duration) -> bool {
        let deadline = clock::monotonic_now() + limit;
        while clock::monotonic_now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

struct Agent {
    child: Child,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_agent(a: &Appliance, data: &Path, token: Option<&str>, app: &str) -> Agent {
    let mut cmd = Command::new(HOP);
    cmd.args([
        "start",
        "--roles",
        "app",
        "--proxy",
        &a.addr,
        "--ca-pin",
        &a.pin,
        "--data-dir",
    ])
    .arg(data)
    .args(["--app", app])
    .env("HOP_LOG", "info")
    .stdout(Stdio::null())
    .stderr(Stdio::from(
        std::fs::File::create(data.with_extension("log")).unwrap(),
    ));
    if let Some(t) = token {
        cmd.args(["--token", t]);
    }
    Agent {
        child: cmd.spawn().unwrap(),
    }
}

/// Waits until the proxy lists `n` agents with a parked data connection; returns their ids.
fn wait_for_agents(a: &Appliance, n: usize) -> Vec<String> {
    let deadline = clock::monotonic_now() + Duration::from_secs(30);
    loop {
        let out = a.hop(&["admin", "inventory", "ls", "--format", "json"]);
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let ready: Vec<String> = v
                .as_array()
                .unwrap()
                .iter()
                .filter(|x| x["pooled_data_connections"].as_u64().unwrap_or(0) > 0)
                .map(|x| x["host_id"].as_str().unwrap().to_string())
                .collect();
            if ready.len() == n {
                return ready;
            }
        }
        assert!(
            clock::monotonic_now() < deadline,
            "agents did not connect: {}",
            stdout(&out)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A target that writes whatever one connection sends into `out` (socat).
fn sink(port: u16, out: &Path) -> Reaped {
    Reaped(
        Command::new("socat")
            .arg("-u")
            .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr"))
            .arg(format!("CREATE:{}", out.display()))
            .spawn()
            .unwrap(),
    )
}

/// Waits until something listens on 127.0.0.1:`port` (read from /proc/net/tcp, so that no probe
/// connection reaches a one-shot listener).
fn wait_listening(port: u16) {
    let needle = format!(":{port:04X} 00000000:0000 0A");
    let deadline = clock::monotonic_now() + Duration::from_secs(10);
    while clock::monotonic_now() < deadline {
        if std::fs::read_to_string("/proc/net/tcp")
            .unwrap_or_default()
            .contains(&needle)
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing listens on port {port}");
}

fn start_proxy_app(a: &Appliance, app: &str) -> (Reaped, u16) {
    let port = free_port();
    let mut child = Command::new(HOP)
        .args(["proxy", "app", app, "--port", &port.to_string()])
        .env("HOP_HOME", &a.home)
        .env("HOP_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(
            std::fs::File::create(a.dir.path().join("proxy-app.log")).unwrap(),
        ))
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("Proxying"), "hop proxy app said: {line:?}");
    (Reaped(child), port)
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    stdout(&out)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn tcp_app_through_an_agent_tunnel_byte_exact_rbac_and_rejoin() {
    let a = Appliance::start("");
    let dir = a.dir.path().to_path_buf();
    let token = a.join_token("app");

    let target_port = free_port();
    let app_spec = format!("name=sink,uri=tcp://127.0.0.1:{target_port},labels=env=dev");
    let agent_dir = dir.join("agent-data");
    let agent = start_agent(&a, &agent_dir, Some(&token), &app_spec);
    let ids = wait_for_agents(&a, 1);
    // An app agent is inventory, not an SSH node.
    let nodes = a.ok(&["admin", "nodes", "ls", "--format", "json"]);
    assert_eq!(nodes.trim(), "[]", "{nodes}");
    let (_, m) = a.diag_get("/metrics");
    assert!(m.contains("hop_proxy_tunnels_connected 1"), "{m}");

    // alice (role access: every app) sees and uses it.
    let secret = a.add_user("alice", "access", "alice");
    assert!(a.login("alice", PASSWORD, &secret).status.success());
    let apps = a.ok(&["apps", "ls"]);
    assert!(apps.contains("sink") && apps.contains("env=dev"), "{apps}");

    // 256 MiB through client → proxy (TLS) → agent tunnel (TLS) → plain target, byte-exact.
    let payload = dir.join("payload.bin");
    let size_mib = std::env::var("HOP_TEST_PAYLOAD_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256u64);
    let st = Command::new("head")
        .arg("-c")
        .arg(format!("{}", size_mib * 1024 * 1024))
        .arg("/dev/urandom")
        .stdout(std::fs::File::create(&payload).unwrap())
        .status()
        .unwrap();
    assert!(st.success());
    let received = dir.join("received.bin");
    let mut target = sink(target_port, &received);
    wait_listening(target_port);
    let (_proxy_app, local_port) = start_proxy_app(&a, "sink");
    let started = clock::monotonic_now();
    let st = Command::new("socat")
        .arg("-u")
        .arg(format!("FILE:{}", payload.display()))
        .arg(format!("TCP:127.0.0.1:{local_port}"))
        .status()
        .unwrap();
    assert!(
        st.success(),
        "socat client failed\n--- hop proxy app ---\n{}\n--- agent ---\n{}\n--- appliance ---\n{}",
        std::fs::read_to_string(dir.join("proxy-app.log")).unwrap_or_default(),
        std::fs::read_to_string(agent_dir.with_extension("log")).unwrap_or_default(),
        a.log()
    );
    assert!(
        target.wait_for_exit(Duration::from_secs(60)),
        "the target never saw the end of the stream (half-close lost)"
    );
    let secs = clock::since(started).as_secs_f64();
    eprintln!(
        "{size_mib} MiB through hop proxy app in {secs:.2} s ({:.0} MiB/s, debug build)",
        size_mib as f64 / secs
    );
    assert_eq!(
        std::fs::metadata(&received).unwrap().len(),
        size_mib * 1024 * 1024
    );
    assert_eq!(
        sha256(&received),
        sha256(&payload),
        "payload arrived altered"
    );
    let (_, m) = a.diag_get("/metrics");
    assert!(m.contains("hop_app_sessions_total 1"), "{m}");
    // The bytes moved on a data-plane worker (records re-sealed in place), not on tokio.
    assert!(
        m.contains("hop_relay_sessions_total{path=\"worker\"} 1"),
        "{m}"
    );
    std::fs::remove_file(&payload).ok();
    std::fs::remove_file(&received).ok();

    // bob's role allows only env=prod apps: refused with a clear error, and audited.
    let role = dir.join("prodapps.yaml");
    std::fs::write(&role, "kind: role\nversion: v7\nmetadata:\n  name: prodapps\nspec:\n  allow:\n    logins: [bob]\n    app_labels:\n      env: prod\n").unwrap();
    a.ok(&["admin", "create", "-f", role.to_str().unwrap()]);
    let bob = a.add_user("bob", "prodapps", "bob");
    assert!(a.login("bob", PASSWORD, &bob).status.success());
    assert!(
        !a.ok(&["apps", "ls"]).contains("sink"),
        "bob must not see the app"
    );
    let out = Command::new(HOP)
        .args(["proxy", "app", "sink"])
        .env("HOP_HOME", &a.home)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("your roles deny it"),
        "{}",
        stderr(&out)
    );
    // The proxy enforces it too: a raw Dial with bob's certificate (openssl s_client as the client).
    let keys = a.home.join("keys").join(&a.addr);
    let mut dial = vec![0x05u8];
    dial.extend_from_slice(&[7u8; 16]);
    dial.extend_from_slice(&(4u16).to_be_bytes());
    dial.extend_from_slice(b"sink");
    dial.extend_from_slice(&[0x04, 127, 0, 0, 1, 0x30, 0x39]);
    let mut frame = (dial.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&dial);
    let mut s_client = Command::new("openssl")
        .args([
            "s_client", "-quiet", "-alpn", "hop-tcp", "-connect", &a.addr, "-cert",
        ])
        .arg(keys.join("bob-tls.crt"))
        .arg("-key")
        .arg(keys.join("bob-tls.key"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = s_client.stdin.take().unwrap();
        stdin.write_all(&frame).unwrap();
        std::thread::sleep(Duration::from_millis(1500));
    }
    let out = s_client.wait_with_output().unwrap();
    let answer = String::from_utf8_lossy(&out.stdout);
    assert!(
        answer.contains("access to application \"sink\" denied"),
        "proxy answered: {answer:?}"
    );

    // Kill the agent: it drops out of the inventory; restart it without a token: same identity.
    drop(agent);
    let deadline = clock::monotonic_now() + Duration::from_secs(20);
    while a
        .ok(&["admin", "inventory", "ls", "--format", "json"])
        .contains(&ids[0])
    {
        assert!(
            clock::monotonic_now() < deadline,
            "killed agent still listed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let _agent = start_agent(&a, &agent_dir, None, &app_spec);
    let again = wait_for_agents(&a, 1);
    assert_eq!(again, ids, "the restarted agent must keep its identity");
}

/// Starts an app agent that is expected to fail at its join; returns how it ended.
fn join_once(a: &Appliance, data: &Path, token: &str) -> std::process::Output {
    Command::new(HOP)
        .args([
            "start", "--roles", "app", "--proxy", &a.addr, "--ca-pin", &a.pin, "--token", token,
        ])
        .args(["--app", "name=x,uri=tcp://127.0.0.1:9", "--data-dir"])
        .arg(data)
        .output()
        .unwrap()
}

#[test]
fn join_tokens_are_checked() {
    let a = Appliance::start("");
    let dir = a.dir.path().to_path_buf();
    // A wrong token.
    let out = join_once(&a, &dir.join("bad"), "0123456789abcdef0123");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("join token is not valid"),
        "{}",
        stderr(&out)
    );
    // A token for another role.
    let tok: serde_json::Value = serde_json::from_str(
        a.ok(&[
            "admin", "tokens", "add", "--type", "node", "--format", "json",
        ])
        .trim(),
    )
    .unwrap();
    let out = join_once(&a, &dir.join("bad2"), tok["token"].as_str().unwrap());
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("does not allow the app role"),
        "{}",
        stderr(&out)
    );
    // A single-use token works once.
    let tok: serde_json::Value = serde_json::from_str(
        a.ok(&[
            "admin", "tokens", "add", "--type", "app", "--uses", "1", "--format", "json",
        ])
        .trim(),
    )
    .unwrap();
    let t = tok["token"].as_str().unwrap().to_string();
    let _first = start_agent(
        &a,
        &dir.join("one"),
        Some(&t),
        "name=x,uri=tcp://127.0.0.1:9",
    );
    wait_for_agents(&a, 1);
    // Used up: the second join is told so, by the token's id (never its secret).
    let out = join_once(&a, &dir.join("two"), &t);
    assert!(!out.status.success());
    let id = tok["id"].as_str().unwrap();
    assert!(
        stderr(&out).contains(&format!("join token {id} has been used as many times")),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains(&t), "{}", stderr(&out));
}

/// An echo target written in the test: each connection's bytes come back; its end (FIN) is
/// answered with the target's own end, so half-close is visible both ways.
fn echo_target() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut back = conn.try_clone().unwrap();
                let _ = std::io::copy(&mut conn, &mut back);
                let _ = back.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    port
}

#[test]
fn tcp_app_both_ways_half_close_and_idle_timeout_on_a_worker() {
    use std::io::{Read, Write};
    let a = Appliance::start("");
    let dir = a.dir.path().to_path_buf();
    let token = a.join_token("app");
    let target_port = echo_target();
    let app_spec = format!("name=echo,uri=tcp://127.0.0.1:{target_port},labels=env=dev");
    let _agent = start_agent(&a, &dir.join("agent-data"), Some(&token), &app_spec);
    wait_for_agents(&a, 1);
    let role = dir.join("idle.yaml");
    std::fs::write(&role, "kind: role\nversion: v7\nmetadata:\n  name: idleapps\nspec:\n  options:\n    client_idle_timeout: 3s\n  allow:\n    app_labels:\n      '*': '*'\n").unwrap();
    a.ok(&["admin", "create", "-f", role.to_str().unwrap()]);
    let secret = a.add_user("carol", "idleapps", "carol");
    assert!(a.login("carol", PASSWORD, &secret).status.success());
    let (_proxy_app, local_port) = start_proxy_app(&a, "echo");
    let handed_off = a.handoffs("session");

    // 24 MiB up while reading the echo down; the client's FIN reaches the target, and the
    // target's FIN comes back as the end of the stream.
    let payload: Vec<u8> = (0..24u32 * 1024 * 1024)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", local_port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut writer = conn.try_clone().unwrap();
    let up = payload.clone();
    let sender = std::thread::spawn(move || {
        writer.write_all(&up).unwrap();
        writer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut back = Vec::with_capacity(payload.len());
    conn.read_to_end(&mut back).unwrap();
    sender.join().unwrap();
    assert_eq!(back.len(), payload.len());
    assert!(back == payload, "the echo came back altered");

    // A session that goes quiet ends after the role's client_idle_timeout.
    let mut quiet = std::net::TcpStream::connect(("127.0.0.1", local_port)).unwrap();
    quiet.write_all(b"ping").unwrap();
    let mut four = [0u8; 4];
    quiet.read_exact(&mut four).unwrap();
    assert_eq!(&four, b"ping");
    let went_quiet = clock::monotonic_now();
    quiet
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut rest = Vec::new();
    let _ = quiet.read_to_end(&mut rest);
    let after = clock::since(went_quiet);
    assert!(
        after >= Duration::from_secs(2) && after < Duration::from_secs(10),
        "an idle session ended after {after:?} (idle timeout 3 s)"
    );

    let (_, m) = a.diag_get("/metrics");
    assert!(
        m.contains("hop_relay_sessions_total{path=\"worker\"} 2"),
        "{m}"
    );
    // Both sessions stayed on the worker that accepted them; a gRPC call is handed off.
    assert_eq!(a.handoffs("session"), handed_off, "{m}");
    let api = a.handoffs("api");
    a.ok(&["apps", "ls"]);
    assert!(a.handoffs("api") > api);
    let events = a.ok(&[
        "admin",
        "audit",
        "search",
        "--type",
        "app.session.end",
        "--format",
        "json",
    ]);
    let size = payload.len().to_string();
    assert!(
        events.contains(&format!("\"bytes_sent\":{size}"))
            && events.contains(&format!("\"bytes_received\":{size}")),
        "{events}"
    );
}

/// The proxy's count of agents' data connections by handshake kind (`full`, `resumed`).
fn data_handshakes(a: &Appliance, kind: &str) -> u64 {
    let (_, m) = a.diag_get("/metrics");
    let prefix = format!("hop_agent_data_handshakes_total{{kind=\"{kind}\"}} ");
    m.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in {m}"))
}

/// One short session through `hop proxy app` on `port`: `msg` echoed back.
fn echo_once(port: u16, msg: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port))?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    conn.write_all(msg)?;
    conn.shutdown(std::net::Shutdown::Write)?;
    let mut back = Vec::new();
    conn.read_to_end(&mut back)?;
    Ok(back)
}

/// The states of the application sessions' trackers the logged-in user sees.
fn app_trackers(a: &Appliance) -> Vec<String> {
    let out = a.ok(&["sessions", "ls", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    v.as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["kind"] == "app")
        .map(|t| t["state"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Waits until [`app_trackers`] are `want`.
fn wait_app_trackers(a: &Appliance, want: &[&str]) {
    let deadline = clock::monotonic_now() + Duration::from_secs(10);
    loop {
        let states = app_trackers(a);
        if states == want {
            return;
        }
        assert!(
            clock::monotonic_now() < deadline,
            "application trackers {states:?}, expected {want:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Sequential sessions through one agent each take a data connection; the agent's replacements
/// resume TLS 1.3 instead of a full handshake, each with a fresh Dial. A lock on the agent is
/// still refused on a resumed connection: admission runs on every data connection.
#[test]
fn sequential_sessions_resume_data_connections_and_a_locked_agent_is_still_refused() {
    let a = Appliance::start("");
    let dir = a.dir.path().to_path_buf();
    let token = a.join_token("app");
    let target_port = echo_target();
    let app_spec = format!("name=echo,uri=tcp://127.0.0.1:{target_port},labels=env=dev");
    let _agent = start_agent(&a, &dir.join("agent-data"), Some(&token), &app_spec);
    let ids = wait_for_agents(&a, 1);
    let secret = a.add_user("dana", "access", "dana");
    assert!(a.login("dana", PASSWORD, &secret).status.success());
    let (_proxy_app, port) = start_proxy_app(&a, "echo");

    const SESSIONS: u64 = 24;
    for i in 0..SESSIONS {
        let msg = format!("session {i}");
        let back = echo_once(port, msg.as_bytes()).unwrap();
        assert_eq!(back, msg.as_bytes(), "session {i}");
    }
    // Each session's replacement data connection resumed (the first pool was full handshakes).
    let deadline = clock::monotonic_now() + Duration::from_secs(10);
    while data_handshakes(&a, "resumed") < SESSIONS {
        assert!(
            clock::monotonic_now() < deadline,
            "{} of {SESSIONS} replacement data connections resumed ({} full)",
            data_handshakes(&a, "resumed"),
            data_handshakes(&a, "full")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let full = data_handshakes(&a, "full");
    assert!(
        full < SESSIONS / 2,
        "{full} full handshakes for {SESSIONS} sessions"
    );

    // Sessions shorter than a second leave no tracker; a longer one is listed while it runs and
    // as terminated once it ends.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(app_trackers(&a), Vec::<String>::new());
    {
        use std::io::{Read, Write};
        let mut long = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        long.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        long.write_all(b"long").unwrap();
        let mut four = [0u8; 4];
        long.read_exact(&mut four).unwrap();
        wait_app_trackers(&a, &["active"]);
    }
    wait_app_trackers(&a, &["terminated"]);

    // A lock on the agent: its pool is dropped and each of its data slots (4) dials again,
    // resuming. An admitted data connection would stay parked, so more resumed connections than
    // slots means resumed ones were refused and dialed again; no full handshake among them.
    let (resumed_before, full_before) = (data_handshakes(&a, "resumed"), full);
    a.ok(&[
        "admin",
        "lock",
        "--server-id",
        &ids[0],
        "--message",
        "compromised",
    ]);
    let deadline = clock::monotonic_now() + Duration::from_secs(40);
    while data_handshakes(&a, "resumed") <= resumed_before + 4 {
        assert!(
            clock::monotonic_now() < deadline,
            "the locked agent's data slots did not dial again: {} resumed since the lock",
            data_handshakes(&a, "resumed") - resumed_before
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(data_handshakes(&a, "full"), full_before);
    let refusals = a.ok(&[
        "admin",
        "audit",
        "search",
        "--type",
        "access.refused",
        "--format",
        "json",
    ]);
    assert!(
        refusals.contains("\"tunnel\"") && refusals.contains(&format!("host {}", ids[0])),
        "{refusals}"
    );
    assert!(
        echo_once(port, b"after the lock").map_or(true, |b| b.is_empty()),
        "a session reached the locked agent"
    );
}
