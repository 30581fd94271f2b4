//! Agentless OpenSSH nodes: a real `sshd` on loopback that trusts Hop's user CA and presents a
//! host certificate from `hop admin auth sign --format openssh`; sessions through the proxy are
//! terminated and recorded there.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::clock;
use crate::harness::{Appliance, OS_LOGIN, PASSWORD, free_port, os_login, stderr, stdout};
use crate::ssh::{Killed, openssh, wait_event, write_config};

/// Starts sshd with the files Hop wrote under `dir/web1*`.
pub(crate) fn start_sshd(dir: &Path, port: u16) -> Option<Killed> {
    start_sshd_with(dir, "web1", port)
}

/// Starts sshd with the host key `dir/STEM`, `STEM-cert.pub` and `STEM-user-ca.pub`.
pub(crate) fn start_sshd_with(dir: &Path, stem: &str, port: u16) -> Option<Killed> {
    if !Path::new("/usr/sbin/sshd").exists() {
        eprintln!("SKIP: sshd is not installed");
        return None;
    }
    let _ = std::fs::create_dir_all("/run/sshd");
    let cfg = dir.join("sshd_config");
    std::fs::write(
        &cfg,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/{stem}\nHostCertificate {d}/{stem}-cert.pub\nTrustedUserCAKeys {d}/{stem}-user-ca.pub\nPidFile {d}/sshd.pid\nUsePAM no\nAuthorizedKeysFile none\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nStrictModes no\nPermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\nLogLevel VERBOSE\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let child = Command::new("/usr/sbin/sshd")
        .args(["-D", "-e", "-f"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("sshd.log")).unwrap(),
        ))
        .spawn()
        .unwrap();
    let deadline = clock::monotonic_now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(clock::monotonic_now() < deadline, "sshd did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(Killed(child))
}

/// `cat` on the node with 24 MiB going in while its echo comes back: both directions of the
/// proxy's bridge full at once.
fn echo_both_ways_at_once(a: &Appliance, target: &str) {
    use std::io::{Read, Write};
    const SIZE: usize = 24 << 20;
    let mut child = Command::new(crate::harness::HOP)
        .args(["ssh", target, "cat"])
        .env("HOP_HOME", &a.home)
        .env("HOP_DATA_DIR", &a.data)
        .env_remove("HOP_PROXY")
        .env_remove("HOP_CA_PIN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let chunk: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
        for _ in 0..SIZE / chunk.len() {
            if input.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    let mut output = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut seen, mut buf, mut exact) = (0usize, vec![0u8; 64 * 1024], true);
        loop {
            match output.read(&mut buf) {
                Ok(0) | Err(_) => return (seen, exact),
                Ok(n) => {
                    exact &= buf[..n]
                        .iter()
                        .enumerate()
                        .all(|(i, b)| *b == ((seen + i) % (64 * 1024) % 251) as u8);
                    seen += n;
                }
            }
        }
    });
    let deadline = clock::monotonic_now() + Duration::from_secs(60);
    while !reader.is_finished() {
        if clock::monotonic_now() > deadline {
            let _ = child.kill();
            panic!("an echo of 24 MiB through the proxy's bridge stalled");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    writer.join().unwrap();
    let (seen, exact) = reader.join().unwrap();
    assert_eq!(seen, SIZE, "the echo came back whole");
    assert!(exact, "the echo came back byte-exact");
    let _ = child.wait();
}

/// `hop bot start --oneshot` with one `ssh_host` output (node `web2`) into `out`, as bot
/// `name` (created with `roles`).
fn ssh_host_bot(a: &Appliance, name: &str, roles: &str, out: &Path) -> std::process::Output {
    crate::harness::oneshot_bot(
        a,
        name,
        (roles, None),
        "type: ssh_host\n    principals: [web2]",
        out,
    )
}

/// tbot's `ssh_host` output: a bot whose role allows `host_cert` `create` writes a host key,
/// certificate and user CA keys that a stock sshd serves as an agentless node; a bot without
/// that rule gets no host certificate.
#[test]
fn a_bots_ssh_host_output_serves_a_stock_sshd_as_an_agentless_node() {
    let a = Appliance::start("");
    let roles = a.dir.path().join("host-roles.yaml");
    std::fs::write(
        &roles,
        "kind: role\nversion: v7\nmetadata:\n  name: host-certs\nspec:\n  allow:\n    rules:\n    - resources: [host_cert]\n      verbs: [create]\n---\nkind: role\nversion: v7\nmetadata:\n  name: plain\nspec:\n  allow:\n    logins: [nobody]\n",
    )
    .unwrap();
    a.ok(&["admin", "create", "-f", roles.to_str().unwrap()]);
    let refused_dir = a.dir.path().join("refused-out");
    let out = ssh_host_bot(&a, "plainbot", "plain", &refused_dir);
    assert!(!out.status.success(), "a bot without host_cert got one");
    assert!(stderr(&out).contains("host_cert"), "{}", stderr(&out));
    assert!(!refused_dir.join("ssh_host-cert.pub").exists());

    let dir = a.dir.path().join("web2-out");
    let out = ssh_host_bot(&a, "hostbot", "host-certs", &dir);
    assert!(out.status.success(), "hop bot start: {}", stderr(&out));
    for f in ["ssh_host", "ssh_host-cert.pub", "ssh_host-user-ca.pub"] {
        assert_eq!(
            crate::harness::file_mode(&dir.join(f)) & 0o777,
            0o600,
            "{f}"
        );
    }
    let port = free_port();
    let Some(_sshd) = start_sshd_with(&dir, "ssh_host", port) else {
        return;
    };
    a.ok(&[
        "admin",
        "nodes",
        "add",
        "--openssh",
        "--name",
        "web2",
        "--addr",
        &format!("127.0.0.1:{port}"),
    ]);
    let secret = a.add_user("carol", "access", OS_LOGIN);
    let out = a.login("carol", PASSWORD, &secret);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = a.hop(&[
        "ssh",
        &format!("{OS_LOGIN}@web2"),
        "echo via-bot-host-$((6*7))",
    ]);
    assert!(
        out.status.success(),
        "hop ssh: {} {}",
        stderr(&out),
        std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default()
    );
    assert_eq!(stdout(&out).trim(), "via-bot-host-42");
}

/// Signs a host certificate for `web1` into `dir`, starts sshd with it on a free port and
/// registers it as an agentless node (labels `env=legacy`): sshd and its port, or `None` when
/// sshd is not installed.
fn serve_web1(a: &Appliance, dir: &Path) -> Option<(Killed, u16)> {
    std::fs::create_dir_all(dir).unwrap();
    let out = a.ok(&[
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
    assert!(out.contains("HostCertificate"), "{out}");
    let port = free_port();
    let sshd = start_sshd(dir, port)?;
    let out = a.ok(&[
        "admin",
        "nodes",
        "add",
        "--openssh",
        "--name",
        "web1",
        "--addr",
        &format!("127.0.0.1:{port}"),
        "--labels",
        "env=legacy",
    ]);
    assert!(out.contains("registered"), "{out}");
    Some((sshd, port))
}

/// Known to fail, kept to show it (docs/security.md, known limitations): russh re-opens a
/// channel's window as data arrives, not as it is consumed, so the only brake on a sender is
/// TCP, and a session whose reader waits on one channel stops reading the window adjustments
/// of the other direction behind it. `cat` echoing 24 MiB stalls after about 2 MiB (OpenSSH's
/// window) through the proxy to an agentless node and through a node agent alike; direct to
/// sshd it takes under a second.
#[test]
#[ignore = "stalls: russh's receive windows follow arrival, not consumption (known limitation)"]
fn a_large_echo_both_ways_at_once_through_the_proxy() {
    let a = Appliance::start("");
    let Some((_sshd, _)) = serve_web1(&a, &a.dir.path().join("web1")) else {
        return;
    };
    let secret = a.add_user("alice", "access", OS_LOGIN);
    let out = a.login("alice", PASSWORD, &secret);
    assert!(out.status.success(), "{}", stderr(&out));
    echo_both_ways_at_once(&a, "hopuser@web1");
}

#[test]
fn agentless_openssh_node_through_the_proxy_is_recorded() {
    let a = Appliance::start("");
    let dir = a.dir.path().join("web1");
    let Some((_sshd, port)) = serve_web1(&a, &dir) else {
        return;
    };
    let listed = a.ok(&["admin", "nodes", "ls", "--format", "json"]);
    assert!(listed.contains("\"openssh\""), "{listed}");

    let login = os_login();
    let secret = a.add_user("alice", "access,auditor", OS_LOGIN);
    let out = a.login("alice", PASSWORD, &secret);
    assert!(out.status.success(), "{}", stderr(&out));
    let ls = a.ok(&["ls"]);
    assert!(ls.contains("web1") && ls.contains("env=legacy"), "{ls}");

    // A command through the proxy, which logs in to sshd with its own short-lived certificate:
    // the proxy's SSH server (russh) runs on tokio, so the worker hands the session over.
    let handed_off = a.handoffs("session");
    let all_handed_off = || {
        ["session", "jump", "agent", "api"]
            .map(|r| a.handoffs(r))
            .iter()
            .sum::<u64>()
    };
    let (accepted, all_before) = (a.connections_accepted(), all_handed_off());
    let out = a.hop(&["ssh", "hopuser@web1", "echo", "agentless-$((6*7))"]);
    assert!(
        out.status.success(),
        "hop ssh: {} {}",
        stderr(&out),
        std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default()
    );
    assert_eq!(stdout(&out).trim(), "agentless-42");
    assert_eq!(a.handoffs("session"), handed_off + 1);
    // Every connection of that command went to tokio and is counted once as accepted (the
    // session's worker asked the control plane, which answered with a hand-off).
    assert_eq!(
        a.connections_accepted() - accepted,
        all_handed_off() - all_before
    );
    // sshd runs the agentless session as the login itself.
    let out = a.hop(&["ssh", "hopuser@web1", "id -u; id -G"]);
    let text = stdout(&out);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(login.uid.to_string().as_str()), "{text}");
    let mut groups: Vec<&str> = lines.next().unwrap_or_default().split(' ').collect();
    groups.sort_unstable();
    assert_eq!(
        groups.len(),
        3,
        "the login's own group and two more: {text}"
    );
    let out = a.hop(&["ssh", "hopuser@web1", "exit 5"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));

    // An interactive session (a PTY) with OpenSSH's own client: recorded at the proxy.
    let (cfg, cluster) = write_config(&a);
    let host = format!("{OS_LOGIN}@web1.{cluster}");
    let out = openssh(
        &a,
        &cfg,
        "ssh",
        &["-tt", &host, "echo recorded-at-the-proxy"],
    );
    assert!(out.status.success(), "ssh -tt: {}", stderr(&out));
    assert!(stdout(&out).contains("recorded-at-the-proxy"));
    let deadline = clock::monotonic_now() + Duration::from_secs(20);
    let rec = loop {
        let list: serde_json::Value =
            serde_json::from_str(a.ok(&["recordings", "ls", "--format", "json"]).trim()).unwrap();
        if let Some(r) = list
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["node"] == "web1")
        {
            break r.clone();
        }
        assert!(
            clock::monotonic_now() < deadline,
            "no recording of the web1 session: {list}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(rec["login"], OS_LOGIN, "{rec}");
    assert_eq!(rec["user"], "alice", "{rec}");
    let id = rec["session_id"].as_str().unwrap();
    let played = a.ok(&["play", id, "--format", "raw"]);
    assert!(played.contains("recorded-at-the-proxy"), "{played}");
    let start = wait_event(&a, "session.start", |e| e["session_id"] == id);
    assert_eq!(start["recorded_at"], "proxy", "{start}");

    // sftp through the proxy.
    let batch = a.dir.path().join("sftp.batch");
    std::fs::write(&batch, format!("ls {}\n", dir.display())).unwrap();
    let out = openssh(&a, &cfg, "sftp", &["-b", batch.to_str().unwrap(), &host]);
    assert!(out.status.success(), "sftp: {}", stderr(&out));
    assert!(stdout(&out).contains("sshd_config"), "{}", stdout(&out));

    // The jump host will not carry a session the proxy must record.
    let out = openssh(
        &a,
        &cfg,
        "ssh",
        &["-J", &format!("proxy.{cluster}"), &host, "true"],
    );
    assert!(!out.status.success());
    wait_event(&a, "ssh.auth", |e| {
        e["server"] == "web1"
            && e["error"]
                .as_str()
                .is_some_and(|m| m.contains("recorded by the proxy"))
    });

    // The node trusts only the OpenSSH CA, which signs the proxy's own logins: a user's
    // certificate presented to its sshd directly (bypassing the proxy) is refused.
    let (key, cert, _) = crate::harness::key_paths(&a, "alice");
    let out = Command::new("ssh")
        .args(["-p", &port.to_string(), "-i"])
        .arg(&key)
        .arg("-o")
        .arg(format!("CertificateFile={}", cert.display()))
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            &format!("{OS_LOGIN}@127.0.0.1"),
            "true",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a user certificate went around the proxy"
    );
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );

    // The agentless route goes through admission: a live PTY session ends within 5 s of a lock
    // (the proxy terminates it), and the next session is refused with the reason.
    let mut live = Command::new("ssh")
        .arg("-F")
        .arg(&cfg)
        .args(["-tt", &host, "echo live-started; sleep 60"])
        .env("HOP_HOME", &a.home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead;
        let mut line = String::new();
        let mut r = std::io::BufReader::new(live.stdout.take().unwrap());
        while !line.contains("live-started") {
            line.clear();
            assert!(
                r.read_line(&mut line).unwrap() > 0,
                "the session never started"
            );
        }
    }
    a.ok(&[
        "admin",
        "lock",
        "--user",
        "alice",
        "--message",
        "agentless matrix",
    ]);
    let t0 = clock::monotonic_now();
    while live.try_wait().unwrap().is_none() {
        assert!(
            clock::since(t0) < Duration::from_secs(5),
            "the agentless session outlived the lock"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_event(&a, "session.terminated", |e| {
        e["route"] == "agentless" && e["reason"] == "locked"
    });
    let out = a.hop(&["ssh", "hopuser@web1", "true"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("locked"), "{}", stderr(&out));
    wait_event(&a, "access.refused", |e| {
        e["route"] == "agentless" && e["reason"] == "locked"
    });

    // Removing the node: it is no longer reachable by name.
    a.ok(&["admin", "nodes", "rm", "web1"]);
    let out = a.hop(&["ssh", "hopuser@web1", "true"]);
    assert!(!out.status.success());
}
