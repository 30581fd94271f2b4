//! The foundation flow with real processes: start → users add → signup → login → status, and the
//! issued certificates read by the real `ssh-keygen` and `openssl`.

use std::process::Command;

use crate::harness::*;

#[test]
fn start_add_signup_login_status_and_certificates() {
    let a = Appliance::start("");
    assert!(a.pin.starts_with("sha256:"), "banner: {:?}", a.banner);
    assert!(
        a.banner.iter().any(|l| l.contains("hop admin")),
        "banner says how to add a user: {:?}",
        a.banner
    );

    let (code, _) = a.diag_get("/readyz");
    assert_eq!(code, 200);
    let (code, body) = a.diag_get("/healthz");
    assert_eq!((code, body.trim()), (200, "ok"));

    let secret = a.add_user("alice", "access", "alice,ops");
    let out = a.login("alice", PASSWORD, &secret);
    assert!(
        out.status.success(),
        "login failed: {}\n{}",
        stderr(&out),
        a.log()
    );
    let text = stdout(&out);
    assert!(text.contains("Logged in as alice"), "{text}");
    // The CA database, the audit log and every key file are the appliance's own (0600), even
    // under a umask that would leave them readable.
    for db in ["hop.db", "audit.db"] {
        assert_eq!(file_mode(&a.data.join(db)), 0o600, "{db}");
    }
    assert_private_keys(&a.home);

    let status = a.ok(&["status"]);
    assert!(status.contains("Logged in as: alice"), "{status}");
    assert!(status.contains("access"), "{status}");
    assert!(status.contains("alice, ops"), "{status}");
    assert!(status.contains("test.cluster"), "{status}");
    let json: serde_json::Value =
        serde_json::from_str(&a.ok(&["status", "--format", "json"])).unwrap();
    assert_eq!(json["user"], "alice");
    assert_eq!(json["valid"], true);

    // The SSH certificate, as OpenSSH reads it.
    let (key, cert, tls) = key_paths(&a, "alice");
    for p in [&key, &cert, &tls] {
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            std::fs::metadata(p).unwrap().mode() & 0o777,
            0o600,
            "{}",
            p.display()
        );
    }
    let out = Command::new("ssh-keygen")
        .arg("-L")
        .arg("-f")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(out.status.success(), "ssh-keygen -L: {}", stderr(&out));
    let l = stdout(&out);
    assert!(
        l.contains("ssh-ed25519-cert-v01@openssh.com user certificate"),
        "{l}"
    );
    let principals: Vec<&str> = l
        .split("Principals:")
        .nth(1)
        .unwrap()
        .split("Critical Options:")
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(principals, vec!["alice", "ops"], "{l}");
    assert!(l.contains("hop-roles"), "{l}");
    assert!(l.contains("permit-pty"), "{l}");
    let valid = l
        .lines()
        .find(|x| x.trim_start().starts_with("Valid:"))
        .unwrap();
    let times: Vec<&str> = valid
        .split_whitespace()
        .filter(|w| w.contains('T'))
        .collect();
    assert_eq!(times.len(), 2, "{valid}");
    let secs = |s: &str| {
        let f = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
        time::PrimitiveDateTime::parse(s, &f)
            .unwrap()
            .assume_utc()
            .unix_timestamp()
    };
    let span = secs(times[1]) - secs(times[0]);
    // 8 h, plus the minute of back-dating for clock skew.
    assert!(
        (8 * 3600..=8 * 3600 + 120).contains(&span),
        "validity span {span} s: {valid}"
    );

    // The X.509 certificate, as OpenSSL reads it, and chained to the CA saved at login.
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&tls)
        .output()
        .unwrap();
    assert!(out.status.success());
    let x = stdout(&out);
    assert!(x.contains("CN=alice") || x.contains("CN = alice"), "{x}");
    assert!(
        x.contains("1.3.6.1.4.1.59327.1.1"),
        "identity extension missing: {x}"
    );
    assert!(x.contains("TLS Web Client Authentication"), "{x}");
    let cas = a.home.join("keys").join(&a.addr).join("cas.pem");
    let out = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(&cas)
        .arg(&tls)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl verify: {} {}",
        stdout(&out),
        stderr(&out)
    );

    // Metrics saw the login; logout removes the keys.
    let (_, metrics) = a.diag_get("/metrics");
    assert!(
        metrics.contains("hop_logins_total{result=\"success\"} 1"),
        "{metrics}"
    );
    let out = a.ok(&["logout"]);
    assert!(out.contains("Logged out alice"), "{out}");
    assert!(!cert.exists() && !key.exists());
    let out = a.hop(&["status"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not logged in"), "{}", stderr(&out));
}

#[test]
fn wrong_credentials_lockout_and_unlock() {
    let a = Appliance::start("");
    let secret = a.add_user("bob", "access", "bob");

    // Unknown user and wrong password read the same.
    let unknown = a.login("mallory", PASSWORD, &secret);
    let wrong = a.login("bob", "not the password at all", &secret);
    for o in [&unknown, &wrong] {
        assert!(!o.status.success());
        let e = stderr(o);
        assert!(
            e.contains("invalid username, password or second factor"),
            "{e}"
        );
        assert_eq!(e.lines().count(), 1, "one-line error: {e}");
    }
    // A right password with a wrong code fails the same way.
    let out = a.hop_stdin(
        &[
            "login",
            "--proxy",
            &a.addr,
            "--ca-pin",
            &a.pin,
            "--user",
            "bob",
            "--password-stdin",
            "--otp",
            "000000",
        ],
        &format!("{PASSWORD}\n"),
    );
    assert!(
        stderr(&out).contains("invalid username, password or second factor"),
        "{}",
        stderr(&out)
    );

    // Three more failures make five: the account locks, and even the right password is refused.
    for _ in 0..3 {
        let o = a.login("bob", "still not the password", &secret);
        assert!(!o.status.success());
    }
    // Locked, wrong password and unknown user: byte-identical answers (the reason is only in
    // the audit log, and the administrator's listing).
    let locked = a.login("bob", PASSWORD, &secret);
    let wrong = a.login("bob", "not the password at all", &secret);
    let unknown = a.login("mallory", PASSWORD, &secret);
    assert!(!locked.status.success());
    for other in [&wrong, &unknown] {
        assert_eq!(locked.status.code(), other.status.code());
        assert_eq!(locked.stdout, other.stdout);
        assert_eq!(stderr(&locked), stderr(other));
    }
    let ls = a.ok(&["admin", "users", "ls"]);
    assert!(ls.contains("until"), "{ls}");
    let refusals = a.ok(&[
        "admin",
        "audit",
        "search",
        "--type",
        "user.login",
        "--format",
        "json",
    ]);
    assert!(refusals.contains("locked until"), "{refusals}");
    assert!(refusals.contains("unknown user"), "{refusals}");

    a.ok(&["admin", "users", "unlock", "bob"]);
    let ok = a.login("bob", PASSWORD, &secret);
    assert!(ok.status.success(), "{}", stderr(&ok));

    // A bad pin is refused before any credential is sent.
    let bad_pin = format!("sha256:{}", "0".repeat(64));
    let o = a.hop_stdin(
        &[
            "login",
            "--proxy",
            &a.addr,
            "--ca-pin",
            &bad_pin,
            "--user",
            "bob",
            "--password-stdin",
            "--otp",
            "1",
        ],
        &format!("{PASSWORD}\n"),
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("pin"), "{}", stderr(&o));
}

#[test]
fn expired_invite_is_refused_with_a_clear_message() {
    let a = Appliance::start("  login:\n    invite_ttl: 1s\n");
    let out = a.ok(&[
        "admin", "users", "add", "carol", "--roles", "access", "--format", "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let token = v["token"].as_str().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let secret_file = a.dir.path().join("carol.totp");
    let o = a.hop_stdin(
        &[
            "signup",
            token,
            "--proxy",
            &a.addr,
            "--ca-pin",
            &a.pin,
            "--password-stdin",
            "--totp-secret-file",
            secret_file.to_str().unwrap(),
        ],
        &format!("{PASSWORD}\n"),
    );
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("invite token expired"), "{e}");
    assert!(e.contains("hop admin users reset carol"), "{e}");
    // And a token that never existed.
    let o = a.hop_stdin(
        &[
            "signup",
            "deadbeef",
            "--proxy",
            &a.addr,
            "--ca-pin",
            &a.pin,
            "--password-stdin",
            "--totp-secret-file",
            secret_file.to_str().unwrap(),
        ],
        &format!("{PASSWORD}\n"),
    );
    assert!(
        stderr(&o).contains("invite token is not valid"),
        "{}",
        stderr(&o)
    );
}
