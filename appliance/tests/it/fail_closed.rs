//! Fail closed on every route: certificate lifetimes are capped whatever is asked for (checked
//! with `ssh-keygen` and `openssl`), join tokens are secrets that Hop never stores or shows again
//! and that run out, and the names in host certificates are Auth's to give.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, UNIX_EPOCH};

use crate::clock;
use crate::harness::*;
use crate::ssh::{Killed, start_node, wait_for_node};

const NOLIMIT: &str = "kind: role\nversion: v7\nmetadata:\n  name: nolimit\nspec:\n  allow:\n    logins: ['{{internal.logins}}']\n    node_labels: {'*': '*'}\n";

fn now_unix() -> i64 {
    clock::wall_now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Seconds since the epoch of a UTC time as `date` reads it.
fn date_unix(text: &str) -> i64 {
    let out = Command::new("date")
        .args(["-u", "-d", text, "+%s"])
        .output()
        .unwrap();
    assert!(out.status.success(), "date -d {text:?}: {}", stderr(&out));
    stdout(&out).trim().parse().unwrap()
}

#[test]
fn a_ten_year_login_is_capped_at_30_hours() {
    let a = Appliance::start("");
    let role = a.dir.path().join("nolimit.yaml");
    std::fs::write(&role, NOLIMIT).unwrap();
    a.ok(&["admin", "create", "-f", role.to_str().unwrap()]);
    let secret = a.add_user("erin", "nolimit", "erin");
    let before = now_unix();
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
            &totp(&secret, 30),
            "--ttl",
            "87600h",
        ],
        &format!("{PASSWORD}\n"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("shorter than the --ttl asked for"),
        "{}",
        stdout(&out)
    );
    let after = now_unix();
    let cap = 30 * 3600;
    let within_cap = |t: i64, what: &str| {
        assert!(
            t <= after + cap && t >= before + cap - 120,
            "{what}: expires {t}, expected about {} (30 h)",
            before + cap
        );
    };

    let status: serde_json::Value =
        serde_json::from_str(&a.ok(&["status", "--format", "json"])).unwrap();
    within_cap(date_unix(status["expires"].as_str().unwrap()), "hop status");
    let text = a.ok(&["status"]);
    assert!(text.contains("Valid until:"), "{text}");

    // The SSH certificate, as OpenSSH reads it: "Valid: from X to Y".
    let ssh_cert = status["ssh_certificate"].as_str().unwrap();
    let out = Command::new("ssh-keygen")
        .args(["-L", "-f", ssh_cert])
        .output()
        .unwrap();
    assert!(out.status.success(), "ssh-keygen: {}", stderr(&out));
    let listing = stdout(&out);
    let valid = listing
        .lines()
        .find_map(|l| l.trim().strip_prefix("Valid: from "))
        .unwrap_or_else(|| panic!("no validity in {listing}"));
    let (_, to) = valid.split_once(" to ").unwrap();
    // ssh-keygen prints local time without a zone; the tests run with TZ unset (UTC) or set.
    let to_unix = {
        let out = Command::new("date")
            .args(["-d", to, "+%s"])
            .output()
            .unwrap();
        stdout(&out).trim().parse::<i64>().unwrap()
    };
    within_cap(to_unix, "ssh-keygen -L");

    // The X.509 certificate, as OpenSSL reads it: "notAfter=Nov 22 07:23:26 2026 GMT".
    let tls_cert = status["tls_certificate"].as_str().unwrap();
    let out = Command::new("openssl")
        .args(["x509", "-enddate", "-noout", "-in", tls_cert])
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl: {}", stderr(&out));
    let end = stdout(&out);
    let end = end.trim().strip_prefix("notAfter=").unwrap();
    within_cap(date_unix(end), "openssl x509 -enddate");
}

/// Makes a join token with `args`; returns (id, secret).
fn make_token(a: &Appliance, args: &[&str]) -> (String, String) {
    let mut all = vec!["admin", "tokens", "add", "--format", "json"];
    all.extend_from_slice(args);
    let v: serde_json::Value = serde_json::from_str(a.ok(&all).trim()).unwrap();
    (
        v["id"].as_str().unwrap().to_string(),
        v["token"].as_str().unwrap().to_string(),
    )
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let out = Command::new("grep")
        .args(["-r", "-l", "-a", "-F", needle])
        .arg(dir)
        .output()
        .unwrap();
    stdout(&out).lines().map(str::to_string).collect()
}

/// An app agent that should join and stay up.
fn app_agent(a: &Appliance, data: &Path, token: &str) -> Killed {
    Killed(
        Command::new(HOP)
            .args([
                "start", "--roles", "app", "--proxy", &a.addr, "--ca-pin", &a.pin, "--token", token,
            ])
            .args(["--app", "name=x,uri=tcp://127.0.0.1:9", "--data-dir"])
            .arg(data)
            .env("HOP_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(data.with_extension("log")).unwrap(),
            ))
            .spawn()
            .unwrap(),
    )
}

/// Runs an agent that is expected to fail at its join.
fn refused_join(a: &Appliance, role: &str, data: &Path, token: &str, extra: &[&str]) -> Output {
    Command::new(HOP)
        .args([
            "start", "--roles", role, "--proxy", &a.addr, "--ca-pin", &a.pin, "--token", token,
        ])
        .args(extra)
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap()
}

fn wait_for_inventory(a: &Appliance, n: usize) {
    let deadline = clock::monotonic_now() + Duration::from_secs(30);
    loop {
        let out = a.hop(&["admin", "inventory", "ls", "--format", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if v.as_array().is_some_and(|x| x.len() >= n) {
            return;
        }
        assert!(
            clock::monotonic_now() < deadline,
            "agents did not connect: {}",
            stdout(&out)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn join_tokens_are_stored_hashed_counted_and_strong() {
    let a = Appliance::start("");
    let dir = a.dir.path().to_path_buf();
    let agents = tempfile::tempdir().unwrap();

    // Weak chosen values are refused, with the rule, without echoing the value.
    for (weak, why) in [
        ("short-secret", "at least 16 are required"),
        ("aaaaaaaaaaaaaaaaaaaaaaaa", "bits estimated"),
        ("abcdefghijklmnopqrstuvwxyz", "bits estimated"),
    ] {
        let out = a.hop(&["admin", "tokens", "add", "--type", "node", "--value", weak]);
        assert!(!out.status.success(), "{weak} was accepted");
        assert!(stderr(&out).contains(why), "{weak}: {}", stderr(&out));
        assert!(!stderr(&out).contains(weak), "{}", stderr(&out));
    }
    // A proxy token is made alone, never mixed in.
    let out = a.hop(&["admin", "tokens", "add", "--type", "node,proxy"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("proxy alone"), "{}", stderr(&out));
    make_token(&a, &["--type", "proxy"]);

    // A random token, a single-use one, and a strong chosen value.
    let (app_id, app_secret) = make_token(&a, &["--type", "app"]);
    let (once_id, once_secret) = make_token(&a, &["--type", "app", "--uses", "1"]);
    let chosen = "Vq3x9Lr7Tz2Kp8Wm4Nc6Hb1J";
    let (node_id, _) = make_token(&a, &["--type", "node", "--value", chosen]);
    assert_ne!(app_id, app_secret);

    // Agents of each kind join with them.
    let _app = app_agent(&a, &agents.path().join("app"), &app_secret);
    let _once = app_agent(&a, &agents.path().join("once"), &once_secret);
    let _node = start_node(&a, &agents.path().join("node"), chosen, "web1", "env=dev");
    wait_for_inventory(&a, 3);

    // The single-use token is spent: a second join is refused and told why.
    let out = refused_join(
        &a,
        "app",
        &agents.path().join("twice"),
        &once_secret,
        &["--app", "name=y,uri=tcp://127.0.0.1:9"],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!(
            "join token {once_id} has been used as many times as it allows"
        )),
        "{}",
        stderr(&out)
    );

    // Listings show ids, never secrets.
    for format in ["text", "json", "yaml"] {
        let listed = a.ok(&["admin", "tokens", "ls", "--format", format]);
        for id in [&app_id, &once_id, &node_id] {
            assert!(listed.contains(id.as_str()), "{format}: {listed}");
        }
        for secret in [&app_secret, &once_secret, &chosen.to_string()] {
            assert!(!listed.contains(secret.as_str()), "{format}: {listed}");
        }
        assert!(!listed.contains("secret_hash"), "{format}: {listed}");
    }
    let got = a.ok(&["admin", "get", "token", "--format", "json"]);
    assert!(
        !got.contains(&app_secret) && !got.contains("secret_hash"),
        "{got}"
    );

    // Neither the backend, nor the audit log, nor the appliance's log holds a secret.
    for secret in [&app_secret, &once_secret, &chosen.to_string()] {
        assert_eq!(files_containing(&a.data, secret), Vec::<String>::new());
        assert_eq!(
            files_containing(&dir.join("hop.log"), secret),
            Vec::<String>::new()
        );
        for log in ["app.log", "once.log", "node.log"] {
            assert_eq!(
                files_containing(&agents.path().join(log), secret),
                Vec::<String>::new()
            );
        }
    }
    assert!(a.data.join("hop.db").exists());
}

#[test]
fn node_names_come_from_auth() {
    let a = Appliance::start_with("", "  public_addr: [\"gateway:3080\"]\n");
    let agents = tempfile::tempdir().unwrap();
    let (_, token) = make_token(&a, &["--type", "node", "--uses", "2"]);

    // Names that break the rule get no certificate, and the refusal names the rule. None of
    // them spends a use of the token.
    for (name, rule) in [
        ("10.0.0.1", "is an IP address"),
        ("*.x", "contains '*'"),
        ("localhost", "is reserved"),
        ("proxy", "is reserved"),
        ("gateway", "public name of the proxy"),
        ("test.cluster", "contains a dot"),
        ("web1.example.com", "contains a dot"),
    ] {
        let out = refused_join(
            &a,
            "node",
            &agents
                .path()
                .join(format!("bad-{}", name.replace('*', "star"))),
            &token,
            &["--nodename", name],
        );
        assert!(!out.status.success(), "{name} joined");
        let err = stderr(&out);
        assert!(
            err.contains(&format!("node name {name:?}")) && err.contains(rule),
            "{name}: {err}"
        );
    }

    // A good name is certified, with the host id and both inside the cluster.
    os_login();
    let _web1 = start_node(&a, &agents.path().join("web1"), &token, "web1", "env=dev");
    let secret = a.add_user("alice", "access", OS_LOGIN);
    assert!(a.login("alice", PASSWORD, &secret).status.success());
    wait_for_node(&a, "web1");
    let identity: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(agents.path().join("web1/agent/identity.json")).unwrap(),
    )
    .unwrap();
    let host_id = identity["host_id"].as_str().unwrap();
    assert_eq!(identity["host_name"], "web1");
    let out = Command::new("ssh-keygen")
        .arg("-L")
        .arg("-f")
        .arg(agents.path().join("web1/agent/ssh_host_key-cert.pub"))
        .output()
        .unwrap();
    let listing = stdout(&out);
    for principal in [
        host_id.to_string(),
        format!("{host_id}.test.cluster"),
        "web1".into(),
        "web1.test.cluster".into(),
    ] {
        assert!(
            listing.lines().any(|l| l.trim() == principal),
            "{principal} missing:\n{listing}"
        );
    }
    let principals = listing
        .split("Principals:")
        .nth(1)
        .and_then(|r| r.split("Critical Options:").next())
        .unwrap_or_default();
    assert_eq!(principals.split_whitespace().count(), 4, "{listing}");

    // Another host may not take the name, whatever the case.
    for name in ["web1", "WEB1"] {
        let out = refused_join(
            &a,
            "node",
            &agents.path().join(format!("again-{name}")),
            &token,
            &["--nodename", name],
        );
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("is already used by another host"),
            "{name}: {}",
            stderr(&out)
        );
    }
    // The refusals spent nothing: the token's second use is still there.
    let _web2 = start_node(&a, &agents.path().join("web2"), &token, "web2", "env=dev");
    wait_for_node(&a, "web2");
}
