//! Security keys from the CLI end to end, with the test-only software authenticator (the
//! `test-authenticator` feature `cargo test` builds `hop` with; its key is a file that
//! `HOP_TEST_AUTHENTICATOR` names). An ordinary user (role `access`) on a cluster whose
//! `second_factor` is `optional` and whose public address names `localhost` logs in with a
//! one-time code: `hop mfa add` refused without a fresh proof, then a key added with the next
//! code as the proof (this waits for the next 30 s step: one code per step); `hop login`
//! with password + key (a wrong password with the key refused); `hop login --auth
//! passwordless`; a second key added with a tap on the first as the proof, listed, removed;
//! the one-time-code device removed with a tap; then the last device, the key, cannot be
//! removed. The audit log holds
//! the CLI's `mfa.add`, `mfa.delete` and its `user.login` with `mfa: webauthn` and `method:
//! passwordless`. Per-session MFA (role `mfa-ssh`) on SSH and on PostgreSQL through the proxy:
//! a tap per session, a one-minute certificate good for its one target only and refused after
//! 61 s, an unmarked certificate refused, and OpenSSH's own `ssh` tapping through `hop config`.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::clock;

use serde_json::Value;

use crate::harness::*;
use crate::ssh::{Killed, node_token, start_node, wait_event, wait_for_node, write_config};
use crate::web_admin::{code_after, step_now};

/// `hop` as the appliance's user, with the software key in `key` (and a new key in `new_key`
/// for a registration), `stdin` on standard input.
fn hop_key(
    a: &Appliance,
    key: &Path,
    new_key: Option<&Path>,
    args: &[&str],
    stdin: &str,
) -> Output {
    let mut cmd = Command::new(HOP);
    cmd.args(args)
        .env("HOP_HOME", &a.home)
        .env("HOP_DATA_DIR", &a.data)
        .env("HOP_TEST_AUTHENTICATOR", key)
        .env_remove("HOP_PROXY")
        .env_remove("HOP_CA_PIN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match new_key {
        Some(k) => cmd.env("HOP_TEST_AUTHENTICATOR_NEW", k),
        None => cmd.env_remove("HOP_TEST_AUTHENTICATOR_NEW"),
    };
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn events(a: &Appliance, kind: &str) -> Vec<Value> {
    a.ok(&[
        "admin", "audit", "search", "--type", kind, "--format", "json",
    ])
    .lines()
    .filter_map(|l| serde_json::from_str(l).ok())
    .collect()
}

/// The role `mfa-ssh`: SSH on every node and PostgreSQL as `alice` on `hopdb` and `postgres`,
/// each session after a tap when `tap` (require_session_mfa).
pub(crate) fn mfa_role(tap: bool) -> String {
    format!(
        "kind: role\nversion: v7\nmetadata:\n  name: mfa-ssh\nspec:\n  options:\n    require_session_mfa: {tap}\n  allow:\n    logins: ['{{{{internal.logins}}}}']\n    node_labels:\n      '*': '*'\n    db_labels:\n      '*': '*'\n    db_users: [alice]\n    db_names: [hopdb, postgres]\n"
    )
}

fn login_args<'a>(a: &'a Appliance, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["login", "--proxy", &a.addr, "--ca-pin", &a.pin];
    v.extend_from_slice(extra);
    v
}

#[test]
fn a_user_manages_security_keys_and_logs_in_with_them_from_the_cli() {
    let port = free_port();
    let a = Appliance::start_listening(
        "",
        "  authentication:\n    second_factor: \"optional\"\n",
        &format!("  public_addr: [\"localhost:{port}\"]\n"),
        &format!("127.0.0.1:{port}"),
    );
    // A role that asks for a tap before each session; two nodes join meanwhile.
    let roles = a.dir.path().join("roles.yaml");
    std::fs::write(&roles, mfa_role(true)).unwrap();
    a.ok(&["admin", "create", "-f", roles.to_str().unwrap()]);
    os_login();
    let _nodes: Vec<Killed> = ["node1", "node2"]
        .iter()
        .map(|n| start_node(&a, &a.dir.path().join(n), &node_token(&a), n, "env=dev"))
        .collect();
    let secret = a.add_user("kim", "access,mfa-ssh", OS_LOGIN);
    let dir = a.dir.path().to_path_buf();
    let (key1, key2) = (dir.join("key1.json"), dir.join("key2.json"));
    let pw = format!("{PASSWORD}\n");

    // The first login with a one-time code (the user has no key yet).
    let (code, step) = code_after(&secret, Some(step_now()));
    let out = hop_key(
        &a,
        &key1,
        None,
        &login_args(&a, &["--user", "kim", "--password-stdin", "--otp", &code]),
        &pw,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let ls = a.ok(&["mfa", "ls", "--format", "json"]);
    let devices: Vec<Value> = serde_json::from_str(&ls).unwrap();
    assert!(devices.iter().all(|d| d["kind"] == "totp"), "{ls}");

    // Adding a key without a fresh proof (a wrong code) is refused; no key is stored.
    let out = hop_key(
        &a,
        &key1,
        None,
        &[
            "mfa",
            "add",
            "--name",
            "usb",
            "--password-stdin",
            "--otp",
            "000000",
        ],
        &pw,
    );
    assert!(!out.status.success());
    assert!(!a.ok(&["mfa", "ls"]).contains("usb"));
    // With a fresh code from the sign-up device (the next time step: codes work once), the key
    // is added.
    let (code, _) = code_after(&secret, Some(step));
    let out = hop_key(
        &a,
        &key1,
        None,
        &[
            "mfa",
            "add",
            "--name",
            "usb",
            "--password-stdin",
            "--otp",
            &code,
        ],
        &pw,
    );
    assert!(out.status.success(), "{}\n{}", stderr(&out), a.log());
    assert!(stdout(&out).contains("added"), "{}", stdout(&out));

    // Password + key logs in (no code asked); a wrong password with the key does not.
    let out = hop_key(
        &a,
        &key1,
        None,
        &login_args(&a, &["--user", "kim", "--password-stdin"]),
        "not the password\n",
    );
    assert!(!out.status.success());
    let out = hop_key(
        &a,
        &key1,
        None,
        &login_args(&a, &["--user", "kim", "--password-stdin"]),
        &pw,
    );
    assert!(
        out.status.success(),
        "{}\n{:?}",
        stderr(&out),
        events(&a, "user.login")
    );
    assert!(
        stdout(&out).contains("Logged in as kim"),
        "{}",
        stdout(&out)
    );
    // The key alone, as a passkey.
    let out = hop_key(
        &a,
        &key1,
        None,
        &login_args(&a, &["--auth", "passwordless"]),
        "",
    );
    assert!(
        out.status.success(),
        "{}\n{:?}",
        stderr(&out),
        events(&a, "user.login")
    );
    assert!(
        stdout(&out).contains("Logged in as kim"),
        "{}",
        stdout(&out)
    );
    // A key that holds no credential of this cluster logs nobody in.
    let out = hop_key(
        &a,
        &dir.join("empty.json"),
        None,
        &login_args(&a, &["--auth", "passwordless"]),
        "",
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no credentials"), "{}", stderr(&out));

    let minute_old = ssh_sessions_need_a_tap_each(&a, &key1);
    db_sessions_need_a_tap_each(&a, &key1);

    // A second key, proven by a tap on the first; then removed, proven by a tap again.
    let out = hop_key(
        &a,
        &key1,
        Some(&key2),
        &["mfa", "add", "--name", "spare", "--password-stdin"],
        &pw,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let ls = a.ok(&["mfa", "ls"]);
    assert!(ls.contains("usb") && ls.contains("spare"), "{ls}");
    let out = hop_key(
        &a,
        &key1,
        None,
        &["mfa", "rm", "spare", "--password-stdin"],
        &pw,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!a.ok(&["mfa", "ls"]).contains("spare"));

    // The sign-up's one-time-code device goes too (proven by a tap); the last device, the
    // key, stays while the cluster requires a second factor.
    let out = hop_key(
        &a,
        &key1,
        None,
        &["mfa", "rm", "enrolled at sign-up", "--password-stdin"],
        &pw,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = hop_key(
        &a,
        &key1,
        None,
        &["mfa", "rm", "usb", "--password-stdin"],
        &pw,
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("only second-factor device"),
        "{}",
        stderr(&out)
    );
    assert!(a.ok(&["mfa", "ls"]).contains("usb"));

    let adds = events(&a, "mfa.add");
    assert_eq!(
        adds.iter()
            .filter(|e| e["user"] == "kim" && e["kind"] == "webauthn" && e.get("error").is_none())
            .count(),
        2,
        "{adds:?}"
    );
    assert!(
        adds.iter()
            .any(|e| e["user"] == "kim" && e.get("error").is_some()),
        "{adds:?}"
    );
    let deletes = events(&a, "mfa.delete");
    assert!(
        deletes
            .iter()
            .any(|e| e["user"] == "kim" && e.get("error").is_none()),
        "{deletes:?}"
    );
    assert!(
        deletes
            .iter()
            .any(|e| e["user"] == "kim" && e.get("error").is_some()),
        "{deletes:?}"
    );
    let logins = events(&a, "user.login");
    assert!(
        logins.iter().any(|e| e["user"] == "kim"
            && e["client"] == "cli"
            && e["mfa"] == "webauthn"
            && e.get("error").is_none()),
        "{logins:?}"
    );
    assert!(
        logins.iter().any(|e| e["user"] == "kim"
            && e["method"] == "passwordless"
            && e.get("error").is_none()),
        "{logins:?}"
    );
    a_session_certificate_is_refused_after_its_minute(&a, minute_old);
}

/// The one-minute certificate `hop ssh` made for `login@node` (under the profile's keys).
fn session_cert_dir(a: &Appliance, target: &str) -> std::path::PathBuf {
    fn find(dir: &Path, name: &str) -> Option<std::path::PathBuf> {
        for e in std::fs::read_dir(dir).ok()?.flatten() {
            let p = e.path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n == name) && p.parent()?.ends_with("session-mfa")
                {
                    return Some(p);
                }
                if let Some(found) = find(&p, name) {
                    return Some(found);
                }
            }
        }
        None
    }
    find(&a.home, target)
        .unwrap_or_else(|| panic!("no session-mfa/{target} under {}", a.home.display()))
}

/// Per-session MFA on SSH (the role `mfa-ssh`): `hop ssh` taps the key and gets a one-minute
/// certificate marked for that node and login; it is refused on another node; an unmarked
/// certificate is refused, by the proxy (the X.509 one) and by the node (the SSH one). Returns
/// a copy of the first certificates (for node1) and when they were made, for the check after
/// their minute.
fn ssh_sessions_need_a_tap_each(a: &Appliance, key: &Path) -> (std::path::PathBuf, Instant) {
    wait_for_node(a, "node1");
    wait_for_node(a, "node2");
    let out = hop_key(
        a,
        key,
        None,
        &["ssh", &format!("{OS_LOGIN}@node1"), "echo", "hello"],
        "",
    );
    assert!(out.status.success(), "{}\n{}", stderr(&out), a.log());
    assert_eq!(stdout(&out).trim(), "hello");
    assert!(
        stderr(&out).contains("security key tap"),
        "{}",
        stderr(&out)
    );
    let ev = wait_event(a, "mfa.session", |e| {
        e["node"] == "node1" && e.get("error").is_none()
    });
    assert_eq!(ev["login"], OS_LOGIN, "{ev}");

    // The certificate: one login, the target as a critical option, one minute (plus the
    // minute of clock skew every certificate allows before its issue). It is kept under the
    // name OpenSSH knows the node by.
    let (cfg, cluster) = write_config(a);
    let dir = session_cert_dir(a, &format!("{OS_LOGIN}@node1.{cluster}"));
    let kept = a.dir.path().join("node1-session-mfa");
    let copied = Command::new("cp")
        .arg("-a")
        .arg(&dir)
        .arg(&kept)
        .output()
        .unwrap();
    assert!(copied.status.success(), "{}", stderr(&copied));
    let made = clock::monotonic_now();
    let cert = dir.join("key-cert.pub");
    let out = Command::new("ssh-keygen")
        .arg("-L")
        .arg("-f")
        .arg(&cert)
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(text.contains("hop-session-mfa"), "{text}");
    assert!(text.contains("hop-mfa-verified"), "{text}");
    let valid = text
        .lines()
        .find(|l| l.trim().starts_with("Valid:"))
        .unwrap()
        .to_string();
    let stamps: Vec<&str> = valid
        .split_whitespace()
        .filter(|w| w.contains('T'))
        .collect();
    let secs = |t: &str| {
        let out = Command::new("date")
            .args(["-u", "-d", t, "+%s"])
            .output()
            .unwrap();
        stdout(&out).trim().parse::<i64>().unwrap()
    };
    assert_eq!(secs(stamps[1]) - secs(stamps[0]), 120, "{valid}");

    // OpenSSH with the node1 certificate pair, to node2: refused. These runs use `hop
    // config`'s configuration without its `Match exec` block (which would tap or take the
    // certificates made for the target): each names the certificates it presents.
    let plain = without_session_mfa_block(&cfg);
    let proxy = |mfa_dir: &Path| {
        format!(
            "ProxyCommand=env HOP_HOME={} HOP_SESSION_MFA_DIR={} {HOP} proxy ssh %r@%h:%p",
            a.home.display(),
            mfa_dir.display()
        )
    };
    let ssh = |args: &[String]| {
        Command::new("ssh")
            .arg("-F")
            .arg(&plain)
            .args(args)
            .env("HOP_HOME", &a.home)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let marked = |node: &str| -> Vec<String> {
        vec![
            "-o".into(),
            format!("IdentityFile={}", dir.join("key").display()),
            "-o".into(),
            format!("CertificateFile={}", cert.display()),
            "-o".into(),
            proxy(&dir),
            format!("{OS_LOGIN}@{node}.{cluster}"),
            "echo".into(),
            "through".into(),
        ]
    };
    let out = ssh(&marked("node2"));
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(!stdout(&out).contains("through"));
    // The same pair to node1 still starts a session within its minute.
    let out = ssh(&marked("node1"));
    assert_eq!(stdout(&out).trim(), "through", "{}", stderr(&out));
    // The login's own certificates (no mark) to node2, for which no marked ones were made:
    // the proxy refuses.
    let out = ssh(&[format!("{OS_LOGIN}@node2.{cluster}"), "true".into()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("require_session_mfa"),
        "{}",
        stderr(&out)
    );
    // The marked X.509 certificate to the proxy, the unmarked SSH one to the node: the node
    // refuses.
    let out = ssh(&[
        "-o".into(),
        proxy(&dir),
        format!("{OS_LOGIN}@node1.{cluster}"),
        "true".into(),
    ]);
    assert!(!out.status.success());
    wait_event(a, "ssh.auth", |e| {
        e.get("error")
            .is_some_and(|m| m.to_string().contains("no per-session MFA mark"))
    });
    // node2 with its own tap.
    let out = hop_key(
        a,
        key,
        None,
        &["ssh", &format!("{OS_LOGIN}@node2"), "echo", "two"],
        "",
    );
    assert_eq!(stdout(&out).trim(), "two", "{}", stderr(&out));
    openssh_taps_through_hop_config(a, key, (&cfg, &cluster));
    (kept, made)
}

/// The certificates `hop ssh` made for node1, 61 s after they were made (the test waits out
/// what is left of that): the session they were good for cannot start any more.
fn a_session_certificate_is_refused_after_its_minute(
    a: &Appliance,
    (dir, made): (std::path::PathBuf, Instant),
) {
    let left = Duration::from_secs(61).saturating_sub(clock::monotonic_now() - made);
    std::thread::sleep(left);
    let (cfg, cluster) = write_config(a);
    let plain = without_session_mfa_block(&cfg);
    let out = Command::new("ssh")
        .arg("-F")
        .arg(&plain)
        .args([
            "-o".to_string(),
            format!("IdentityFile={}", dir.join("key").display()),
            "-o".to_string(),
            format!("CertificateFile={}", dir.join("key-cert.pub").display()),
            "-o".to_string(),
            format!(
                "ProxyCommand=env HOP_HOME={} HOP_SESSION_MFA_DIR={} {HOP} proxy ssh %r@%h:%p",
                a.home.display(),
                dir.display()
            ),
            format!("{OS_LOGIN}@node1.{cluster}"),
            "echo".to_string(),
            "late".to_string(),
        ])
        .env("HOP_HOME", &a.home)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(!stdout(&out).contains("late"));
    assert!(
        stderr(&out).to_lowercase().contains("expired"),
        "{}",
        stderr(&out)
    );
}

/// `hop config` with its `Match exec` block left out.
fn without_session_mfa_block(cfg: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(cfg).unwrap();
    let mut out = String::new();
    let mut skipping = false;
    for line in text.lines() {
        if line.starts_with("Match ") {
            skipping = true;
        } else if !line.starts_with(' ') {
            skipping = false;
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert_ne!(out, text, "hop config has a Match exec block");
    let path = cfg.with_extension("plain");
    std::fs::write(&path, out).unwrap();
    path
}

/// OpenSSH's own `ssh` with `hop config`'s configuration: its `Match exec` line runs `hop mfa
/// session`, which taps the key for that login and node before OpenSSH connects; a second
/// session within the certificates' minute takes them again without a tap; with no key to tap,
/// the proxy refuses and says why.
fn openssh_taps_through_hop_config(a: &Appliance, key: &Path, (cfg, cluster): (&Path, &str)) {
    let taps = |a: &Appliance| {
        events(a, "mfa.session")
            .iter()
            .filter(|e| e["node"] == "node1" && e.get("error").is_none())
            .count()
    };
    // Whatever `hop ssh` made for node1 earlier is removed: this run must tap.
    std::fs::remove_dir_all(session_cert_dir(a, &format!("{OS_LOGIN}@node1.{cluster}"))).unwrap();
    let before = taps(a);
    let ssh = |with_key: bool| {
        let mut cmd = Command::new("ssh");
        cmd.arg("-F")
            .arg(cfg)
            .arg(format!("{OS_LOGIN}@node1.{cluster}"))
            .args(["echo", "openssh"])
            .env("HOP_HOME", &a.home)
            .stdin(Stdio::null());
        if with_key {
            cmd.env("HOP_TEST_AUTHENTICATOR", key);
        } else {
            cmd.env_remove("HOP_TEST_AUTHENTICATOR");
        }
        cmd.output().unwrap()
    };
    let out = ssh(true);
    assert_eq!(stdout(&out).trim(), "openssh", "{}", stderr(&out));
    assert!(
        stderr(&out).contains("security key tap"),
        "{}",
        stderr(&out)
    );
    let out = ssh(true);
    assert_eq!(stdout(&out).trim(), "openssh", "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("security key tap"),
        "{}",
        stderr(&out)
    );
    wait_event(a, "mfa.session", |e| {
        e["node"] == "node1" && e.get("error").is_none()
    });
    assert_eq!(
        taps(a),
        before + 1,
        "one tap for two sessions within the minute"
    );
    // Without a key: the exec fails, OpenSSH falls back to the login's certificate, refused.
    std::fs::remove_dir_all(session_cert_dir(a, &format!("{OS_LOGIN}@node1.{cluster}"))).unwrap();
    let out = ssh(false);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("require_session_mfa"),
        "{}",
        stderr(&out)
    );
}

/// Per-session MFA on PostgreSQL (the role `mfa-ssh` allows `alice` on `hopdb` and
/// `postgres`): `hop db login` taps the key and saves a one-minute route certificate marked for
/// `pg` as `alice` on `hopdb`, which psql uses through the proxy; the same certificate is
/// refused for another database name; a certificate without the mark (issued while the role
/// did not ask for a tap) is refused once the role asks again.
fn db_sessions_need_a_tap_each(a: &Appliance, key: &Path) {
    let Some(pg) = crate::db::Postgres::start(a) else {
        return;
    };
    let _agent = crate::db::start_db_agent(a, &pg);
    crate::db::wait_for_db(a, "pg");
    let db_login = |key: &Path| {
        hop_key(
            a,
            key,
            None,
            &[
                "db",
                "login",
                "pg",
                "--db-user",
                "alice",
                "--db-name",
                "hopdb",
            ],
            "",
        )
    };
    let out = db_login(key);
    assert!(out.status.success(), "{}\n{}", stderr(&out), a.log());
    assert!(
        stderr(&out).contains("security key tap"),
        "{}",
        stderr(&out)
    );
    let ev = wait_event(a, "mfa.session", |e| {
        e["db_service"] == "pg" && e.get("error").is_none()
    });
    assert_eq!(
        (&ev["db_user"], &ev["db_name"]),
        (&"alice".into(), &"hopdb".into()),
        "{ev}"
    );
    // One minute (and the saved login says so).
    let cfg: Value =
        serde_json::from_str(&a.ok(&["db", "config", "pg", "--format", "json"])).unwrap();
    let now = crate::clock::wall_now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let left = cfg["expires_unix"].as_i64().unwrap() - now;
    assert!((0..=61).contains(&left), "{cfg}");

    // psql through the proxy with the marked certificate.
    let out = crate::db::psql(
        a,
        "",
        &["-Atc", "SELECT current_user || '@' || current_database()"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "alice@hopdb");
    // Another database (its roles allow it): the certificate was marked for hopdb alone.
    let out = crate::db::psql(a, "dbname=postgres", &["-Atc", "SELECT 1"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(stderr(&out).contains("MFA mark is for"), "{}", stderr(&out));

    // Without a saved certificate, `hop db connect` taps and runs psql with a fresh one.
    a.ok(&["db", "logout", "pg"]);
    let out = hop_key(
        a,
        key,
        None,
        &[
            "db",
            "connect",
            "pg",
            "--db-user",
            "alice",
            "--db-name",
            "hopdb",
            "--",
            "-Atc",
            "SELECT 'tapped'",
        ],
        "",
    );
    assert_eq!(stdout(&out).trim(), "tapped", "{}", stderr(&out));
    assert!(
        stderr(&out).contains("security key tap"),
        "{}",
        stderr(&out)
    );

    // A certificate without the mark: issued while the role did not ask, refused once it does.
    let role = a.dir.path().join("mfa-role.yaml");
    let set_role = |tap: bool| {
        std::fs::write(&role, mfa_role(tap)).unwrap();
        a.ok(&["admin", "create", "--force", "-f", role.to_str().unwrap()]);
    };
    set_role(false);
    let out = db_login(key);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("security key tap"),
        "{}",
        stderr(&out)
    );
    set_role(true);
    let deadline = crate::clock::monotonic_now() + std::time::Duration::from_secs(10);
    loop {
        let out = crate::db::psql(a, "", &["-Atc", "SELECT 1"]);
        if !out.status.success() {
            assert!(
                stderr(&out).contains("no per-session MFA mark"),
                "{}",
                stderr(&out)
            );
            break;
        }
        assert!(
            crate::clock::monotonic_now() < deadline,
            "an unmarked certificate kept working"
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}
