//! Per-session MFA on applications from the CLI, with the test-only software authenticator: an
//! ordinary user whose only role (`app-tap`) grants the `env=dev` applications and sets
//! `require_session_mfa`, on the HTTP application cluster of `apps_http` (plus two TCP
//! applications in front of the same upstream). A user without a security key is refused
//! `hop apps login` with a message saying how to add one; with a key, `hop apps login web`
//! taps and saves a one-minute certificate marked for `web`, which curl uses; `hop proxy app`
//! for a TCP application taps and relays; the mark for one TCP application is refused for
//! another, naming both. Then in headless Chromium holding the same credential (a CDP virtual
//! authenticator given the software key's): the user logs in to the web UI with the key, and
//! opening `web` asks the key again before the launch, then lands on the application. Each tap
//! is an `mfa.session` event naming the application.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::apps_http::*;
use crate::harness::*;
use crate::web_admin::{code_after, step_now};
use crate::web_browser::{Browser, artifacts};

const TAP_ROLE: &str = "kind: role\nversion: v7\nmetadata:\n  name: app-tap\nspec:\n  options:\n    require_session_mfa: true\n  allow:\n    app_labels:\n      env: dev\n";

/// `hop` as `u` with the software key in `key`.
fn hop_key(u: &AppUser, key: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(HOP)
        .args(args)
        .env("HOP_HOME", &u.home)
        .env("HOP_TEST_AUTHENTICATOR", key)
        .env_remove("HOP_TEST_AUTHENTICATOR_NEW")
        .env_remove("HOP_PROXY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    wait_output(child, Duration::from_secs(30))
}

/// User `name` with role `app-tap`, logged in with a one-time code; with a security key (the
/// file `key`) added when `with_key`.
fn tap_user(c: &AppCluster, name: &str, key: &Path, with_key: bool) -> AppUser {
    let secret = c.a.add_user(name, "app-tap", "nobody");
    let u = AppUser {
        name: name.into(),
        home: c.a.dir.path().join(format!("home-{name}")),
    };
    let (code, step) = code_after(&secret, Some(step_now()));
    let pw = format!("{PASSWORD}\n");
    let login = [
        "login",
        "--proxy",
        &c.a.addr,
        "--ca-pin",
        &c.a.pin,
        "--user",
        name,
        "--password-stdin",
        "--otp",
        &code,
    ];
    let out = hop_key(&u, key, &login, &pw);
    assert!(out.status.success(), "login {name}: {}", stderr(&out));
    if with_key {
        let (proof, _) = code_after(&secret, Some(step));
        let add = [
            "mfa",
            "add",
            "--name",
            "usb",
            "--password-stdin",
            "--otp",
            &proof,
        ];
        let out = hop_key(&u, key, &add, &pw);
        assert!(out.status.success(), "mfa add: {}", stderr(&out));
    }
    u
}

/// `hop proxy app APP` as `u` on a local port, one plain HTTP GET of `/landed` through it.
fn tcp_app_get(u: &AppUser, key: &Path, app: &str) -> Result<String, String> {
    let port = free_port();
    let log = u.home.join("proxy-app.log");
    let mut child = Command::new(HOP)
        .args(["proxy", "app", app, "--port", &port.to_string()])
        .env("HOP_HOME", &u.home)
        .env("HOP_TEST_AUTHENTICATOR", key)
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .unwrap();
    let mut line = String::new();
    let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
    let got = if line.contains("Proxying") {
        let out = curl(&[format!("http://127.0.0.1:{port}/landed")]);
        Ok(stdout(&out))
    } else {
        Err(line)
    };
    let _ = child.kill();
    let _ = child.wait();
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    got.map(|body| format!("{body}\n{said}"))
        .map_err(|e| format!("{e} {said}"))
}

#[test]
fn application_sessions_need_a_tap_when_a_role_requires_it() {
    let t0 = crate::clock::monotonic_now();
    let tcp = |name: &str| format!("name={name},uri=tcp://127.0.0.1:{{upstream}},labels=env=dev");
    let c = AppCluster::start_with(
        "  authentication:\n    second_factor: \"optional\"\n",
        &[tcp("tcpweb"), tcp("tcpother")],
    );
    let roles = c.a.dir.path().join("tap-role.yaml");
    std::fs::write(&roles, TAP_ROLE).unwrap();
    c.a.ok(&["admin", "create", "-f", roles.to_str().unwrap()]);
    let dir = c.a.dir.path().to_path_buf();
    let key = dir.join("key.json");

    // Without a security key: refused, saying how to add one.
    let nokey = tap_user(&c, "nokey", &dir.join("none.json"), false);
    let out = hop_key(
        &nokey,
        &dir.join("none.json"),
        &["apps", "login", "web"],
        "",
    );
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(stderr(&out).contains("no security key"), "{}", stderr(&out));

    // With a key: a tap, a one-minute certificate marked for `web`; curl reaches the app.
    let u = tap_user(&c, "tapper", &key, true);
    let out = hop_key(&u, &key, &["apps", "login", "web"], "");
    assert!(out.status.success(), "{}\n{}", stderr(&out), c.logs());
    assert!(
        stderr(&out).contains("security key tap"),
        "{}",
        stderr(&out)
    );
    let mut args = cert_args(&c, &u, "web");
    args.push(format!("{}/landed", c.app_url("web")));
    let got = curl(&args);
    assert!(stdout(&got).contains("landed"), "{}", stderr(&got));

    // A TCP application through `hop proxy app`: a tap, then the bytes flow.
    let body = tcp_app_get(&u, &key, "tcpweb").unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    assert!(body.contains("landed"), "{body}");
    assert!(body.contains("security key tap"), "{body}");

    // The mark for `tcpweb` (its `hop apps login` certificate) is refused for `tcpother`.
    let out = hop_key(&u, &key, &["apps", "login", "tcpweb"], "");
    assert!(out.status.success(), "{}", stderr(&out));
    let (ca, cert, key_file) = u.app_files("tcpweb");
    let mut s = tls_to(
        c.port,
        DOMAIN,
        Path::new(&ca),
        b"hop-tcp",
        Some((Path::new(&cert), Path::new(&key_file))),
    );
    let target = "tcpother";
    let mut dial = vec![0x05u8];
    dial.extend_from_slice(&[7u8; 16]);
    dial.extend_from_slice(&(target.len() as u16).to_be_bytes());
    dial.extend_from_slice(target.as_bytes());
    dial.extend_from_slice(&[0x04, 127, 0, 0, 1, 0x30, 0x39]);
    let mut frame = (dial.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&dial);
    s.write_all(&frame).unwrap();
    s.flush().unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = s.read(&mut buf) {
        answer.extend_from_slice(&buf[..n]);
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.contains("MFA mark is for application \"tcpweb\", not application \"tcpother\""),
        "{answer:?}"
    );

    // Each tap is audited with the application it was for.
    let taps = c.events("mfa.session");
    for app in ["web", "tcpweb"] {
        assert!(
            taps.iter()
                .any(|e| e["user"] == "tapper" && e["app"] == app && e.get("error").is_none()),
            "{app}: {taps:?}"
        );
    }

    // The browser: the same credential in a virtual authenticator; the launch asks for it.
    let Some(mut b) = Browser::start("app_flow.mjs", &c.proxy_url(), &artifacts("mfa-apps")) else {
        return;
    };
    let file: Value = serde_json::from_slice(&std::fs::read(&key).unwrap()).unwrap();
    b.send(json!({"do": "key", "who": "t", "cred": file["credentials"][0]}));
    let opened =
        b.send(json!({"do": "open", "who": "t", "url": format!("{}/landed", c.app_url("web"))}));
    assert!(
        opened["url"].as_str().unwrap().starts_with(&c.proxy_url()),
        "{opened}"
    );
    let landed = b.send(json!({
        "do": "loginKey", "who": "t", "user": "tapper", "password": PASSWORD,
        "until": c.app_url("web"),
    }));
    assert_eq!(
        landed["landed"],
        true,
        "{landed}
{}",
        c.logs()
    );
    assert!(
        landed["text"].as_str().unwrap().contains("landed"),
        "{landed}"
    );
    let browser_taps = c
        .events("mfa.session")
        .iter()
        .filter(|e| e["user"] == "tapper" && e["app"] == "web" && e.get("error").is_none())
        .count();
    assert!(browser_taps >= 2, "the launch's tap is not audited");
    eprintln!(
        "application MFA: {:.1} s",
        crate::clock::monotonic_now()
            .duration_since(t0)
            .as_secs_f64()
    );
}
