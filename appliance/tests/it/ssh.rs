//! SSH access end to end with real programs: a node agent joined by token (no inbound port),
//! `hop ssh`/`hop scp`, OpenSSH's own `ssh`, `scp` and `sftp` through `hop config`, port
//! forwarding, and the refusals a user must see clearly (and the audit log must record).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::clock;
use crate::harness::*;

pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a node agent with `--labels`; it joins with `token` (read from a file, so the
/// secret is not in `ps`) and keeps its identity in `data`.
pub fn start_node(a: &Appliance, data: &Path, token: &str, name: &str, labels: &str) -> Killed {
    start_node_via(&a.addr, &a.pin, data, token, name, labels, &[])
}

/// [`start_node`] tunnelled to `proxy` (an appliance or a load balancer in front of several),
/// with `extra` arguments.
pub fn start_node_via(
    proxy: &str,
    pin: &str,
    data: &Path,
    token: &str,
    name: &str,
    labels: &str,
    extra: &[&str],
) -> Killed {
    let token_file = data.with_extension("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let child = Command::new(HOP)
        .args([
            "start",
            "--roles",
            "node",
            "--proxy",
            proxy,
            "--ca-pin",
            pin,
            "--token-file",
            token_file.to_str().unwrap(),
            "--nodename",
            name,
            "--labels",
            labels,
        ])
        .args(extra)
        .arg("--data-dir")
        .arg(data)
        .env("HOP_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(data.with_extension("log")).unwrap(),
        ))
        .spawn()
        .unwrap();
    Killed(child)
}

/// Waits until `hop ls` (as the current login) lists `node`.
pub fn wait_for_node(a: &Appliance, node: &str) {
    let deadline = clock::monotonic_now() + Duration::from_secs(30);
    loop {
        let out = a.hop(&["ls", "--format", "json"]);
        if out.status.success() && stdout(&out).contains(&format!("\"name\": \"{node}\"")) {
            // The node also needs its roles from Auth (refreshed every few seconds) and a parked
            // data connection.
            std::thread::sleep(Duration::from_millis(300));
            return;
        }
        assert!(
            clock::monotonic_now() < deadline,
            "node {node} did not appear: {} {}",
            stdout(&out),
            stderr(&out)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn node_token(a: &Appliance) -> String {
    a.join_token("node")
}

/// Runs OpenSSH's `prog` with the ssh_config `hop config` printed.
pub fn openssh(a: &Appliance, cfg: &Path, prog: &str, args: &[&str]) -> Output {
    Command::new(prog)
        .arg("-F")
        .arg(cfg)
        .args(args)
        .env("HOP_HOME", &a.home)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

pub fn write_config(a: &Appliance) -> (PathBuf, String) {
    let text = a.ok(&["config"]);
    let cluster = text
        .lines()
        .find_map(|l| l.strip_prefix("Host *."))
        .expect("hop config names the cluster")
        .trim()
        .to_string();
    let path = a.dir.path().join("ssh_config");
    std::fs::write(&path, &text).unwrap();
    (path, cluster)
}

pub fn events(a: &Appliance, kind: &str) -> Vec<serde_json::Value> {
    let out = a.ok(&[
        "admin", "audit", "search", "--type", kind, "--format", "json",
    ]);
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Waits until an audit event of `kind` matching `pred` arrives (agents send theirs in batches).
pub fn wait_event(
    a: &Appliance,
    kind: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = clock::monotonic_now() + Duration::from_secs(15);
    loop {
        if let Some(e) = events(a, kind).into_iter().find(|e| pred(e)) {
            return e;
        }
        assert!(
            clock::monotonic_now() < deadline,
            "no {kind} event matched: {:?}",
            events(a, kind)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn ssh_scp_sftp_and_forwarding_through_a_tunnelled_node() {
    let a = Appliance::start("");
    let token = node_token(&a);
    let node_dir = a.dir.path().join("node1");
    let _node = start_node(&a, &node_dir, &token, "node1", "env=dev,team=web");
    let login = os_login();
    let work = login.scratch_dir();
    let at_node = format!("{}@node1", login.name);
    let secret = a.add_user("alice", "access", login.name);
    let out = a.login("alice", PASSWORD, &secret);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for_node(&a, "node1");
    // The node's identity keys are private to it.
    assert_private_keys(&node_dir);

    let ls = a.ok(&["ls"]);
    assert!(
        ls.contains("node1") && ls.contains("env=dev") && ls.contains(login.name),
        "{ls}"
    );
    let ls = a.ok(&["ls", "env=prod"]);
    assert!(!ls.contains("node1"), "{ls}");

    // hop ssh: a command, its output and its exit status. Sessions through a node agent stay on
    // the worker that accepted them: none is handed to the control plane.
    let handed_off = a.handoffs("session");
    let out = a.hop(&[
        "ssh",
        &at_node,
        "echo",
        "hi from $(hostname -s 2>/dev/null || echo node)",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("hi from"), "{}", stdout(&out));
    let out = a.hop(&["ssh", &at_node, "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    // Environment like sshd's, and the Hop identity.
    let env = a.ok(&[
        "ssh",
        &at_node,
        "echo $USER:$HOME:$HOP_USER:${SSH_CLIENT:+client}",
    ]);
    assert_eq!(
        env.trim(),
        format!("{0}:/home/{0}:alice:client", login.name),
        "{env}"
    );
    // The session runs as the login, exactly: uid, gid and every supplementary group, in its
    // home, and without root's powers.
    let id = a.ok(&["ssh", &at_node, "id; pwd"]);
    let mut lines = id.lines();
    assert_eq!(
        same_ids(lines.next().unwrap_or_default()),
        same_ids(&login.id_line()),
        "{id}"
    );
    assert_eq!(lines.next(), Some(format!("/home/{}", login.name).as_str()));
    let out = a.hop(&["ssh", &at_node, "cat /etc/shadow"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );
    let made = work.path().join("made-by-session");
    a.ok(&["ssh", &at_node, &format!("touch {}", made.display())]);
    assert_eq!(owner(&made), (login.uid, login.gid));
    assert_eq!(
        a.handoffs("session"),
        handed_off,
        "hop ssh sessions left their worker"
    );
    // Label targeting: every node with the labels, output prefixed.
    let out = a.ok(&[
        "ssh",
        &format!("{}@env=dev", login.name),
        "echo",
        "labelled",
    ]);
    assert_eq!(out.trim(), "[node1] labelled", "{out}");

    // hop scp both ways, recursive, modes preserved.
    let src = a.dir.path().join("tree");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a.txt"), b"alpha\n").unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(src.join("sub/big.bin"), &big).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(src.join("a.txt"), std::fs::Permissions::from_mode(0o640))
            .unwrap();
    }
    let remote_dir = work.path().join("remote-copy");
    let dst = format!("{at_node}:{}", remote_dir.display());
    let out = a.hop(&["scp", "-r", "-p", "-q", src.to_str().unwrap(), &dst]);
    assert!(out.status.success(), "scp up: {}", stderr(&out));
    assert_eq!(std::fs::read(remote_dir.join("sub/big.bin")).unwrap(), big);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(remote_dir.join("a.txt"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);
    }
    assert_eq!(
        owner(&remote_dir.join("sub/big.bin")),
        (login.uid, login.gid)
    );
    let back = a.dir.path().join("back.bin");
    let out = a.hop(&[
        "scp",
        "-q",
        &format!("{at_node}:{}/sub/big.bin", remote_dir.display()),
        back.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "scp down: {}", stderr(&out));
    assert_eq!(std::fs::read(&back).unwrap(), big);

    // OpenSSH's own programs with `hop config`.
    let (cfg, cluster) = write_config(&a);
    let host = format!("{}@node1.{cluster}", login.name);
    let out = openssh(&a, &cfg, "ssh", &[&host, "echo", "via-openssh"]);
    assert!(out.status.success(), "ssh: {}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "via-openssh");
    // The proxy as a jump host on its one port (`ssh -J`), with the host certificate checked.
    let jump = format!("proxy.{cluster}");
    let out = openssh(
        &a,
        &cfg,
        "ssh",
        &["-J", &jump, &host, "echo", "via-jump-host"],
    );
    assert!(out.status.success(), "ssh -J: {}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "via-jump-host");
    // Stock OpenSSH, directly and through the jump host: the same ordinary account.
    for args in [
        vec![host.as_str(), "id"],
        vec!["-J", jump.as_str(), host.as_str(), "id"],
    ] {
        let out = openssh(&a, &cfg, "ssh", &args);
        assert!(out.status.success(), "ssh {args:?}: {}", stderr(&out));
        assert_eq!(
            same_ids(stdout(&out).trim()),
            same_ids(&login.id_line()),
            "{args:?}"
        );
    }
    // rsync over OpenSSH with the same configuration (scripts/test installs rsync).
    let rsync_dst = work.path().join("rsynced.txt");
    let out = Command::new("rsync")
        .arg("-e")
        .arg(format!("ssh -F {}", cfg.display()))
        .arg(src.join("a.txt"))
        .arg(format!("{host}:{}", rsync_dst.display()))
        .env("HOP_HOME", &a.home)
        .output()
        .unwrap();
    assert!(out.status.success(), "rsync: {}", stderr(&out));
    assert_eq!(std::fs::read(&rsync_dst).unwrap(), b"alpha\n");
    // The jump host has no shell of its own.
    let out = openssh(&a, &cfg, "ssh", &[&jump, "true"]);
    assert!(!out.status.success());
    let batch = a.dir.path().join("sftp.batch");
    let sftp_dst = work.path().join("sftp-put.txt");
    std::fs::write(
        &batch,
        format!(
            "put {} {}\nls -l {}\n",
            src.join("a.txt").display(),
            sftp_dst.display(),
            sftp_dst.display()
        ),
    )
    .unwrap();
    let out = openssh(&a, &cfg, "sftp", &["-b", batch.to_str().unwrap(), &host]);
    assert!(
        out.status.success(),
        "sftp: {} {}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(std::fs::read(&sftp_dst).unwrap(), b"alpha\n");
    assert_eq!(owner(&sftp_dst), (login.uid, login.gid));
    // Each sftp operation is audited with its path.
    let made = work.path().join("sftp-made");
    std::fs::write(
        &batch,
        format!(
            "mkdir {made}\nrename {dst} {made}/moved.txt\nrm {made}/moved.txt\nrmdir {made}\n",
            made = made.display(),
            dst = sftp_dst.display()
        ),
    )
    .unwrap();
    let out = openssh(&a, &cfg, "sftp", &["-b", batch.to_str().unwrap(), &host]);
    assert!(out.status.success(), "sftp: {}", stderr(&out));
    let dst_text = sftp_dst.display().to_string();
    wait_event(&a, "sftp", |e| {
        e["op"] == "open"
            && e["path"] == dst_text.as_str()
            && e["flags"].as_str().is_some_and(|f| f.contains("write"))
    });
    let made_text = made.display().to_string();
    wait_event(&a, "sftp", |e| {
        e["op"] == "mkdir" && e["path"] == made_text.as_str()
    });
    wait_event(&a, "sftp", |e| {
        e["op"] == "rename"
            && e["path"] == dst_text.as_str()
            && e["to"] == format!("{made_text}/moved.txt").as_str()
    });
    wait_event(&a, "sftp", |e| e["op"] == "rmdir");
    let scp_dst = a.dir.path().join("openssh-scp.bin");
    let out = openssh(
        &a,
        &cfg,
        "scp",
        &[
            "-q",
            &format!("{host}:{}/sub/big.bin", remote_dir.display()),
            scp_dst.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "scp: {}", stderr(&out));
    assert_eq!(std::fs::read(&scp_dst).unwrap(), big);

    // Local port forwarding (-L) to an echo server on the node's side.
    let echo_port = free_port();
    let _echo = Killed(
        Command::new("socat")
            .arg(format!(
                "TCP-LISTEN:{echo_port},bind=127.0.0.1,reuseaddr,fork"
            ))
            .arg("EXEC:cat")
            .spawn()
            .unwrap(),
    );
    let local_port = free_port();
    let _fwd = Killed(
        Command::new(HOP)
            .args([
                "ssh",
                "-N",
                "-L",
                &format!("{local_port}:127.0.0.1:{echo_port}"),
                &at_node,
            ])
            .env("HOP_HOME", &a.home)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = clock::monotonic_now() + Duration::from_secs(15);
    let reply = loop {
        let out = Command::new("socat")
            .arg("-T2")
            .arg("-")
            .arg(format!("TCP:127.0.0.1:{local_port}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .and_then(|mut c| {
                // Before the forward listens, socat exits at once and the write finds a closed
                // pipe: that is "not ready yet", retried below.
                let _ = c.stdin.take().unwrap().write_all(b"ping through -L\n");
                c.wait_with_output()
            })
            .unwrap();
        if stdout(&out).contains("ping") || clock::monotonic_now() > deadline {
            break stdout(&out);
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(reply.trim(), "ping through -L");
    remote_forwards_stay_on_loopback_and_unprivileged(&a, &at_node, echo_port);

    // The audit log has the sessions, with the node's name and the client's address.
    let ev = wait_event(&a, "exec", |e| {
        e["command"].as_str().is_some_and(|c| c.contains("exit 3"))
    });
    assert_eq!(ev["exit_code"], 3, "{ev}");
    assert_eq!(ev["user"], "alice");
    assert_eq!(ev["login"], login.name);
    assert_eq!(ev["server"], "node1");
    // An exec is on record from its start, with its command.
    wait_event(&a, "session.start", |e| {
        e["user"] == "alice" && e["command"].as_str().is_some_and(|c| c.contains("exit 3"))
    });
    wait_event(&a, "sftp", |e| e["user"] == "alice");
    wait_event(&a, "port.forward", |e| {
        e["addr"]
            .as_str()
            .is_some_and(|x| x.ends_with(&format!(":{echo_port}")))
    });
    // hop ssh, scp and sftp reached the node through the proxy's fast path (records re-sealed
    // on a data-plane worker), none through the tokio relay.
    let (_, m) = a.diag_get("/metrics");
    assert!(
        m.contains("hop_relay_sessions_total{path=\"control_plane\"} 0")
            && !m.contains("hop_relay_sessions_total{path=\"worker\"} 0"),
        "{m}"
    );
}

/// The numeric ids in an `id` line (`uid=1001(x) gid=1001(x) groups=1001(x),1000(y)`): uid,
/// gid, and the sorted set of groups.
fn same_ids(line: &str) -> (String, String, Vec<String>) {
    let field = |name: &str| -> String {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(name))
            .unwrap_or_default()
            .to_string()
    };
    let number = |s: &str| s.split('(').next().unwrap_or_default().to_string();
    let mut groups: Vec<String> = field("groups=").split(',').map(number).collect();
    groups.sort();
    (number(&field("uid=")), number(&field("gid=")), groups)
}

fn owner(path: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).unwrap();
    (m.uid(), m.gid())
}

/// A remote forward by an ordinary login: asked for all interfaces, it listens on loopback
/// only; a port below 1024 is refused.
fn remote_forwards_stay_on_loopback_and_unprivileged(a: &Appliance, at_node: &str, echo_port: u16) {
    let port = free_port();
    let _fwd = Killed(
        Command::new(HOP)
            .args(["ssh", "-N", "-o", "ExitOnForwardFailure=yes", "-R"])
            .arg(format!("0.0.0.0:{port}:127.0.0.1:{echo_port}"))
            .arg(at_node)
            .env("HOP_HOME", &a.home)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(a.dir.path().join("forward-r.log")).unwrap(),
            ))
            .spawn()
            .unwrap(),
    );
    let deadline = clock::monotonic_now() + Duration::from_secs(15);
    let listening = loop {
        let out = Command::new("ss")
            .args(["-Htln", &format!("sport = :{port}")])
            .output()
            .unwrap();
        let text = stdout(&out);
        if !text.trim().is_empty() || clock::monotonic_now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        listening.contains(&format!("127.0.0.1:{port}")),
        "{listening}: {}",
        std::fs::read_to_string(a.dir.path().join("forward-r.log")).unwrap_or_default()
    );
    assert!(
        !listening.contains(&format!("0.0.0.0:{port}")),
        "{listening}"
    );
    let out = Command::new("socat")
        .args(["-T2", "-", &format!("TCP:127.0.0.1:{port}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            let _ = c.stdin.take().unwrap().write_all(b"ping through -R\n");
            c.wait_with_output()
        })
        .unwrap();
    assert_eq!(stdout(&out).trim(), "ping through -R");
    // Port 80 is root's: ssh gives up on the refused forward.
    let mut child = Command::new(HOP)
        .args(["ssh", "-N", "-o", "ExitOnForwardFailure=yes", "-R"])
        .arg(format!("80:127.0.0.1:{echo_port}"))
        .arg(at_node)
        .env("HOP_HOME", &a.home)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = clock::monotonic_now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if clock::monotonic_now() > deadline {
            let _ = child.kill();
            panic!("a forward of port 80 by an ordinary login was not refused");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success());
    wait_event(a, "port.forward", |e| {
        e["forward"] == "remote"
            && e["error"]
                .as_str()
                .is_some_and(|x| x.contains("privileged"))
    });
}

#[test]
fn ssh_refusals_are_clear_and_audited() {
    let a = Appliance::start("");
    let token = node_token(&a);
    let node_dir = a.dir.path().join("node1");
    let _node = start_node(&a, &node_dir, &token, "node1", "env=dev");
    // A role limited to prod nodes, and one that denies root everywhere.
    let roles = a.dir.path().join("roles.yaml");
    std::fs::write(
        &roles,
        "kind: role\nversion: v7\nmetadata:\n  name: ssh-basic\nspec:\n  options:\n    forward_agent: false\n  allow:\n    logins: ['{{internal.logins}}']\n    node_labels:\n      '*': '*'\n---\nkind: role\nversion: v7\nmetadata:\n  name: prod-only\nspec:\n  allow:\n    logins: ['{{internal.logins}}']\n    node_labels:\n      env: prod\n---\nkind: role\nversion: v7\nmetadata:\n  name: no-root\nspec:\n  deny:\n    logins: [root]\n",
    )
    .unwrap();
    a.ok(&["admin", "create", "-f", roles.to_str().unwrap()]);
    os_login();
    let secret = a.add_user("alice", "ssh-basic", OS_LOGIN);
    let bob = a.add_user("bob", "prod-only", OS_LOGIN);
    let carol = a.add_user("carol", "access,no-root", "root");

    // A login the certificate does not carry.
    assert!(a.login("alice", PASSWORD, &secret).status.success());
    wait_for_node(&a, "node1");
    let out = a.hop(&["ssh", "nobody@node1", "true"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no role allows login \"nobody\""),
        "{}",
        stderr(&out)
    );

    // LD_PRELOAD in an env request: refused with a message, the command still runs without it.
    let (cfg, cluster) = write_config(&a);
    let host = format!("{OS_LOGIN}@node1.{cluster}");
    let out = openssh(
        &a,
        &cfg,
        "ssh",
        &[
            "-o",
            "SetEnv=LD_PRELOAD=/tmp/evil.so",
            &host,
            "echo [$LD_PRELOAD]",
        ],
    );
    assert_eq!(stdout(&out).trim(), "[]", "{}", stderr(&out));
    assert!(
        stderr(&out).contains("LD_PRELOAD is refused"),
        "{}",
        stderr(&out)
    );
    wait_event(&a, "exec", |e| {
        e["env"] == "LD_PRELOAD" && e["success"] == false
    });

    // Agent forwarding when the role does not allow it.
    // (OpenSSH asks for forwarding only when it has an agent to forward.)
    let agent_sock = a.dir.path().join("agent.sock");
    let _agent = Killed(
        Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&agent_sock)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = clock::monotonic_now() + Duration::from_secs(5);
    while !agent_sock.exists() && clock::monotonic_now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = Command::new("ssh")
        .arg("-F")
        .arg(&cfg)
        .args(["-A", &host, "echo [$SSH_AUTH_SOCK]"])
        .env("HOP_HOME", &a.home)
        .env("SSH_AUTH_SOCK", &agent_sock)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(stdout(&out).trim(), "[]", "{}", stderr(&out));
    wait_event(&a, "agent.forward", |e| e["success"] == false);

    // A certificate from another CA, through the same proxy: the node refuses it.
    let (key, _, _) = key_paths(&a, "alice");
    let rogue_ca = a.dir.path().join("rogue_ca");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&rogue_ca)
        .status()
        .unwrap();
    assert!(st.success());
    let rogue_key = a.dir.path().join("rogue");
    std::fs::copy(&key, &rogue_key).unwrap();
    let pubkey = format!("{}.pub", key.display());
    std::fs::copy(&pubkey, format!("{}.pub", rogue_key.display())).unwrap();
    let st = Command::new("ssh-keygen")
        .args(["-q", "-s"])
        .arg(&rogue_ca)
        .args(["-I", "alice", "-n", OS_LOGIN, "-V", "+1h"])
        .arg(format!("{}.pub", rogue_key.display()))
        .status()
        .unwrap();
    assert!(st.success());
    // The same ssh_config, with the rogue certificate instead of the login's.
    let rogue_cfg = a.dir.path().join("rogue_config");
    let text: String = std::fs::read_to_string(&cfg)
        .unwrap()
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("CertificateFile") {
                format!("    CertificateFile {}-cert.pub", rogue_key.display())
            } else if l.trim_start().starts_with("IdentityFile") {
                format!("    IdentityFile {}", rogue_key.display())
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&rogue_cfg, text).unwrap();
    let out = openssh(
        &a,
        &rogue_cfg,
        "ssh",
        &["-o", "BatchMode=yes", &host, "true"],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );
    wait_event(&a, "ssh.auth", |e| {
        e["error"]
            .as_str()
            .is_some_and(|x| x.contains("certificate refused"))
    });

    // A node whose labels the role does not match.
    assert!(a.login("bob", PASSWORD, &bob).status.success());
    let out = a.hop(&["ssh", "hopuser@node1", "true"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("not connected"), "{err}");
    // Answered exactly as a node that does not exist: a role cannot be probed for names.
    let none = a.hop(&["ssh", "hopuser@node9", "true"]);
    assert_eq!(
        err.replace("node1", "NODE"),
        stderr(&none).replace("node9", "NODE")
    );
    // Through the proxy as a jump host (`ssh -J`) too.
    let (cfg, cluster) = write_config(&a);
    let jump = format!("proxy.{cluster}");
    let via_jump = |node: &str| {
        let target = format!("{OS_LOGIN}@{node}.{cluster}");
        let out = openssh(&a, &cfg, "ssh", &["-J", &jump, &target, "true"]);
        assert!(!out.status.success(), "{node}: {}", stderr(&out));
        stderr(&out).replace(node, "NODE")
    };
    assert_eq!(via_jump("node1"), via_jump("node9"));
    // A deny rule (the one SSH test that logs in as root: the rule is about root).
    assert!(a.login("carol", PASSWORD, &carol).status.success());
    let out = a.hop(&["ssh", "root@node1", "true"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("spec.deny.logins"),
        "{}",
        stderr(&out)
    );
    wait_event(&a, "ssh.auth", |e| {
        e["user"] == "carol" && e["success"] == false
    });

    // A locked user: refused at once, with the reason, and audited.
    let dave = a.add_user("dave", "access", OS_LOGIN);
    assert!(a.login("dave", PASSWORD, &dave).status.success());
    let out = a.hop(&["ssh", "hopuser@node1", "echo", "before-the-lock"]);
    assert!(out.status.success(), "{}", stderr(&out));
    a.ok(&["admin", "users", "lock", "dave", "--reason", "offboarding"]);
    let out = a.hop(&["ssh", "hopuser@node1", "true"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("locked"), "{}", stderr(&out));
    wait_event(&a, "user.locked", |e| {
        e["name"] == "dave" && e["reason"] == "offboarding"
    });
    a.ok(&["admin", "users", "unlock", "dave"]);

    // An expired certificate: a login that lived three seconds.
    let erin = a.add_user("erin", "access", OS_LOGIN);
    let out = a.hop_stdin(
        &[
            "login",
            "--proxy",
            &a.addr,
            "--ca-pin",
            &a.pin,
            "--user",
            "erin",
            "--password-stdin",
            "--otp",
            &crate::harness::totp(&erin, 30),
            "--ttl",
            "3s",
        ],
        &format!("{PASSWORD}\n"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    std::thread::sleep(Duration::from_secs(4));
    let out = a.hop(&["ssh", "hopuser@node1", "true"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("expired") && stderr(&out).contains("hop login"),
        "{}",
        stderr(&out)
    );
}

/// Runs `tmux` on a private server socket.
/// A test's tmux server running `script` in session `hop` of `cols`×`rows`; killed on drop.
pub struct TmuxServer(pub PathBuf);

impl TmuxServer {
    pub fn start(sock: &Path, script: &str, cols: u16, rows: u16) -> Self {
        let (cols, rows) = (cols.to_string(), rows.to_string());
        let out = tmux(
            sock,
            &[
                "new-session",
                "-d",
                "-s",
                "hop",
                "-x",
                &cols,
                "-y",
                &rows,
                "sh",
                "-c",
                script,
            ],
        );
        assert!(out.status.success(), "tmux: {}", stderr(&out));
        Self(sock.to_path_buf())
    }
}

impl Drop for TmuxServer {
    fn drop(&mut self) {
        let _ = tmux(&self.0, &["kill-server"]);
    }
}

pub fn tmux(sock: &Path, args: &[&str]) -> Output {
    Command::new("tmux")
        .arg("-S")
        .arg(sock)
        .args(args)
        .output()
        .unwrap()
}

pub fn wait_pane(sock: &Path, needle: &str) -> String {
    let deadline = clock::monotonic_now() + Duration::from_secs(15);
    loop {
        let pane = stdout(&tmux(sock, &["capture-pane", "-p", "-t", "hop"]));
        if pane.contains(needle) {
            return pane;
        }
        assert!(
            clock::monotonic_now() < deadline,
            "{needle:?} never appeared:\n{pane}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn interactive_pty_session_under_tmux() {
    let a = Appliance::start("");
    let token = node_token(&a);
    let node_dir = a.dir.path().join("node1");
    let _node = start_node(&a, &node_dir, &token, "node1", "env=dev");
    os_login();
    let secret = a.add_user("alice", "access", OS_LOGIN);
    assert!(a.login("alice", PASSWORD, &secret).status.success());
    wait_for_node(&a, "node1");

    let sock = a.dir.path().join("tmux.sock");
    let status_file = a.dir.path().join("exit-status");
    let script = format!(
        "HOP_HOME={} {} ssh hopuser@node1; echo $? > {}",
        a.home.display(),
        HOP,
        status_file.display()
    );
    let out = tmux(
        &sock,
        &[
            "new-session",
            "-d",
            "-s",
            "hop",
            "-x",
            "80",
            "-y",
            "24",
            "sh",
            "-c",
            &script,
        ],
    );
    assert!(out.status.success(), "tmux: {}", stderr(&out));
    struct KillServer(PathBuf);
    impl Drop for KillServer {
        fn drop(&mut self) {
            let _ = tmux(&self.0, &["kill-server"]);
        }
    }
    let _server = KillServer(sock.clone());

    // Typing reaches the remote shell and its output comes back (computed remotely).
    tmux(
        &sock,
        &[
            "send-keys",
            "-t",
            "hop",
            "PS1='remote$ '; echo typed-$((6*7))",
            "Enter",
        ],
    );
    wait_pane(&sock, "typed-42");
    // The shell is the login's, not root's.
    tmux(
        &sock,
        &[
            "send-keys",
            "-t",
            "hop",
            "echo who-$(id -un)-$(id -u)",
            "Enter",
        ],
    );
    wait_pane(&sock, &format!("who-{OS_LOGIN}-{}", os_login().uid));
    // It is a terminal, with the size tmux gave it; a resize reaches it.
    tmux(
        &sock,
        &["send-keys", "-t", "hop", "tty; stty size", "Enter"],
    );
    wait_pane(&sock, "24 80");
    let pane = wait_pane(&sock, "/dev/pts/");
    assert!(pane.contains("/dev/pts/"), "{pane}");
    tmux(
        &sock,
        &["resize-window", "-t", "hop", "-x", "100", "-y", "30"],
    );
    std::thread::sleep(Duration::from_millis(300));
    tmux(
        &sock,
        &["send-keys", "-t", "hop", "clear; stty size", "Enter"],
    );
    wait_pane(&sock, "30 100");
    // The remote exit status becomes hop's.
    tmux(&sock, &["send-keys", "-t", "hop", "exit 7", "Enter"]);
    let deadline = clock::monotonic_now() + Duration::from_secs(15);
    while !status_file.exists() && clock::monotonic_now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(std::fs::read_to_string(&status_file).unwrap().trim(), "7");
    let ev = wait_event(&a, "session.end", |e| e["user"] == "alice");
    assert_eq!(ev["interactive"], true, "{ev}");
    assert_eq!(ev["exit_code"], 7, "{ev}");
}
