//! The proxy's certificate: an operator-supplied one, replaced on disk and reloaded on SIGHUP, as
//! the real `openssl s_client` sees it; and a relay that presents an agent's certificate from the
//! same host CA in the proxy's place, which `hop` clients and agents refuse.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::clock;
use crate::harness::*;
use crate::ssh::{Killed, node_token, start_node};

const NOT_THE_PROXY: &str = "the server presented an agent's certificate (role node), not the \
                             proxy's: this is not the cluster's proxy";

fn make_cert(dir: &Path, name: &str) {
    let key = dir.join(format!("{name}.key"));
    let crt = dir.join(format!("{name}.crt"));
    let st = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
        ])
        .arg(format!("/CN={name}"))
        .args([
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
}

/// The subject CN of the certificate the proxy presents.
fn served_cn(addr: &str) -> String {
    let child = Command::new("openssl")
        .args(["s_client", "-connect", addr, "-alpn", "http/1.1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.trim_start().starts_with("subject="))
        .map(|l| l.to_string())
        .unwrap_or_else(|| format!("no subject in: {text}"))
}

#[test]
fn operator_certificate_files_reload_on_sighup() {
    let certs = tempfile::tempdir().unwrap();
    make_cert(certs.path(), "first");
    make_cert(certs.path(), "second");
    let live_crt = certs.path().join("proxy.crt");
    let live_key = certs.path().join("proxy.key");
    std::fs::copy(certs.path().join("first.crt"), &live_crt).unwrap();
    std::fs::copy(certs.path().join("first.key"), &live_key).unwrap();
    let a = Appliance::start_with(
        "",
        &format!(
            "  tls:\n    cert_file: {}\n    key_file: {}\n",
            live_crt.display(),
            live_key.display()
        ),
    );
    assert!(
        served_cn(&a.addr).contains("CN = first") || served_cn(&a.addr).contains("CN=first"),
        "{}",
        served_cn(&a.addr)
    );

    std::fs::copy(certs.path().join("second.crt"), &live_crt).unwrap();
    std::fs::copy(certs.path().join("second.key"), &live_key).unwrap();
    let config = a.dir.path().join("hop.yaml");
    let st = Command::new("pkill")
        .arg("-HUP")
        .arg("-f")
        .arg(format!("hop start --config {}", config.display()))
        .status()
        .unwrap();
    assert!(st.success(), "no hop process to signal");
    let deadline = clock::monotonic_now() + Duration::from_secs(10);
    loop {
        let cn = served_cn(&a.addr);
        if cn.contains("second") {
            break;
        }
        assert!(
            clock::monotonic_now() < deadline,
            "still serving {cn}\n{}",
            a.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        a.log().contains("proxy certificate reloaded"),
        "{}",
        a.log()
    );
}

/// Waits for a file an agent writes once it has joined.
fn wait_path(path: &Path, what: &str) {
    let deadline = clock::monotonic_now() + Duration::from_secs(30);
    while !path.exists() {
        assert!(
            clock::monotonic_now() < deadline,
            "no {what} at {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `openssl s_server` on a free loopback port with `cert` (followed by `chain`) and `key`,
/// writing what it receives to `received`; returns it once it accepts connections. A port taken
/// between `free_port` and openssl's bind (tests run side by side) makes openssl exit: it is
/// started again on another port.
fn relay(cert: &Path, chain: &Path, key: &Path, received: &Path) -> (Killed, String) {
    for _ in 0..5 {
        let port = free_port();
        let child = Command::new("openssl")
            .args([
                "s_server",
                "-quiet",
                "-alpn",
                "hop-auth,hop-join",
                "-accept",
            ])
            .arg(port.to_string())
            .arg("-cert")
            .arg(cert)
            .arg("-cert_chain")
            .arg(chain)
            .arg("-key")
            .arg(key)
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::fs::File::create(received).unwrap()))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut relay = Killed(child);
        let addr = format!("127.0.0.1:{port}");
        let deadline = clock::monotonic_now() + Duration::from_secs(20);
        loop {
            if std::net::TcpStream::connect(&addr).is_ok() {
                return (relay, addr);
            }
            if relay.0.try_wait().unwrap().is_some() {
                break;
            }
            assert!(
                clock::monotonic_now() < deadline,
                "openssl s_server did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("openssl s_server exited five times without listening");
}

#[test]
fn login_through_a_relay_presenting_an_agents_certificate_fails_clearly() {
    let a = Appliance::start("");
    let node_dir = a.dir.path().join("node1");
    let _node = start_node(&a, &node_dir, &node_token(&a), "node1", "env=dev");
    let agent: PathBuf = node_dir.join("agent");
    wait_path(&agent.join("identity.json"), "agent identity");
    let secret = a.add_user("alice", "access", "nobody");

    // The node agent's own certificate, from the cluster's host CA, and its key: all a
    // compromised agent has.
    let received = a.dir.path().join("relay-received");
    let (_relay, relay_addr) = relay(
        &agent.join("host.crt"),
        &agent.join("host_ca.pem"),
        &agent.join("host.key"),
        &received,
    );
    let out = a.hop_stdin(
        &[
            "login",
            "--proxy",
            &relay_addr,
            "--ca-pin",
            &a.pin,
            "--user",
            "alice",
            "--password-stdin",
            "--otp",
            &totp(&secret, 30),
        ],
        &format!("{PASSWORD}\n"),
    );
    assert!(!out.status.success(), "login through an agent succeeded");
    assert!(stderr(&out).contains(NOT_THE_PROXY), "{}", stderr(&out));
    // Refused in the handshake: no credential reached the relay, nothing was saved.
    let got = std::fs::read_to_string(&received).unwrap_or_default();
    assert!(!got.contains(PASSWORD), "the password reached the relay");
    assert!(!a.home.join("keys").join(&relay_addr).exists());

    // The same relay cannot pose as the proxy to an agent joining the cluster either.
    let token_file = a.dir.path().join("node2.token");
    std::fs::write(&token_file, format!("{}\n", node_token(&a))).unwrap();
    let node2_log = a.dir.path().join("node2.log");
    let mut node2 = Command::new(HOP)
        .args([
            "start",
            "--roles",
            "node",
            "--proxy",
            &relay_addr,
            "--ca-pin",
        ])
        .arg(&a.pin)
        .arg("--token-file")
        .arg(&token_file)
        .args(["--nodename", "node2", "--data-dir"])
        .arg(a.dir.path().join("node2"))
        .env("HOP_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&node2_log).unwrap()))
        .spawn()
        .unwrap();
    let deadline = clock::monotonic_now() + Duration::from_secs(20);
    loop {
        let exited = node2.try_wait().unwrap().is_some();
        let log = std::fs::read_to_string(&node2_log).unwrap_or_default();
        if log.contains(NOT_THE_PROXY) {
            break;
        }
        if exited || clock::monotonic_now() > deadline {
            panic!("the agent did not refuse the relay clearly:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = node2.kill();
    let _ = node2.wait();
    assert!(!a.dir.path().join("node2/agent/identity.json").exists());

    // The real proxy, with its proxy certificate, is accepted; the known_hosts saved at login
    // trusts the host CA for the cluster's names only.
    let out = a.login("alice", PASSWORD, &secret);
    assert!(out.status.success(), "{}", stderr(&out));
    let known_hosts = a.home.join("keys").join(&a.addr).join("known_hosts");
    let text = std::fs::read_to_string(&known_hosts).unwrap();
    assert!(
        text.starts_with("@cert-authority *.test.cluster ssh-ed25519 "),
        "{text}"
    );
    let lookup = |host: &str| {
        let out = Command::new("ssh-keygen")
            .args(["-F", host, "-f"])
            .arg(&known_hosts)
            .output()
            .unwrap();
        stdout(&out).contains("@cert-authority")
    };
    assert!(lookup("node1.test.cluster") && lookup("proxy.test.cluster"));
    assert!(!lookup("127.0.0.1") && !lookup("node1.example.com"));
}
