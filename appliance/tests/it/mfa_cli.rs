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
//! passwordless`.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::harness::*;
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
    let secret = a.add_user("kim", "access", "");
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
}
