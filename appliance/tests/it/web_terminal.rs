//! The web terminal end to end in real headless Chromium (`web/tests/terminal.mjs`), as a user
//! with only the `access` role and an ordinary login: a shell on a node agent from the resources
//! page, `echo` of a Unicode string, a resize seen by `stty size`, a paste, the session on the
//! active sessions page and joined there as an observer and a peer, `hop join` of the browser's
//! session from the CLI, `hop play` of its recording, a login the role does not allow refused
//! and audited, and logout and a lock each ending an open terminal with the reason shown; the
//! same shell where the proxy records (`session_recording: proxy`). And the WebSocket upgrade's
//! refusal matrix (curl): another origin (a look-alike host, `null`, plain http), no or a wrong
//! CSRF token (another session's too), no origin, and a locked, deleted, role-removed or expired
//! user. And a raw WebSocket that stops reading a flood of output on an agentless node: a lock
//! still ends the session at sshd. Screenshots are kept under
//! `$CARGO_TARGET_DIR/tmp/web-artifacts/terminal/`.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::clock;
use crate::harness::*;
use crate::ssh::{Killed, node_token, start_node, wait_event};
use crate::web::{add_user, web, web_login};
use crate::web_browser::{Browser, artifacts};

/// May watch sessions of `access` users (as `hop join` in `join.rs`).
const WATCHER: &str = "kind: role\nversion: v7\nmetadata:\n  name: watcher\nspec:\n  allow:\n    join_sessions:\n      - name: watch-access\n        roles: [access]\n        kinds: [ssh]\n        modes: [observer]\n";

/// What the browser types: Unicode the terminal must carry both ways.
const UNICODE: &str = "grüße-世界-🎉";

impl Browser {
    /// Waits until `who`'s terminal shows `want`.
    fn sees(&mut self, who: &str, want: &str) -> Value {
        let seen = self.send(json!({"do": "wait_text", "who": who, "want": want, "ms": 10000}));
        assert!(
            seen["missing"].is_null(),
            "{who} never saw {want:?}: {seen}"
        );
        seen
    }
}

/// The `end` status frame a terminal received, if any.
fn end_frame(answer: &Value) -> Value {
    answer["frames"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| serde_json::from_str::<Value>(f.as_str()?).ok())
        .rfind(|f| f["type"] == "end")
        .unwrap_or(Value::Null)
}

fn wait_file(path: &std::path::Path, needle: &str) -> String {
    let deadline = clock::monotonic_now() + Duration::from_secs(15);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            clock::monotonic_now() < deadline,
            "{needle:?} never reached the joiner:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `hop play ID --format raw` once the recording is uploaded.
fn played(a: &Appliance, id: &str, needle: &str) -> String {
    let deadline = clock::monotonic_now() + Duration::from_secs(30);
    loop {
        let out = a.hop(&["play", id, "--format", "raw"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && text.contains(needle) {
            return text;
        }
        assert!(
            clock::monotonic_now() < deadline,
            "the recording of {id} never played {needle:?}: {}\n{text}",
            stderr(&out)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn the_web_terminal_in_chromium_for_an_access_user() {
    os_login();
    let a = Appliance::start("");
    let started = clock::monotonic_now();
    let _node = start_node(
        &a,
        &a.dir.path().join("node1"),
        &node_token(&a),
        "node1",
        "env=dev",
    );
    let Some(mut b) = Browser::start(
        "terminal.mjs",
        &format!("https://{}", a.addr),
        &artifacts("terminal"),
    ) else {
        return;
    };
    let role = a.dir.path().join("watcher.yaml");
    std::fs::write(&role, WATCHER).unwrap();
    a.ok(&["admin", "create", "-f", role.to_str().unwrap()]);
    let tina = add_user(&a, "tina", "access", &[]);
    let otto = a.add_user("otto", "watcher,auditor", "nobody");
    assert!(a.login("otto", PASSWORD, &otto).status.success());

    // A shell from the resources page's link, as the ordinary login; Unicode both ways.
    b.send(json!({"do": "login", "who": "t", "user": "tina", "password": PASSWORD, "otp": totp(&tina, 30)}));
    let opened = b.send(json!({"do": "connect", "who": "t", "node": "node1", "login": OS_LOGIN}));
    assert_eq!(opened["ended"], "", "{opened}");
    assert!(
        opened["url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/web/terminal/{OS_LOGIN}@node1")),
        "{opened}"
    );
    b.sees("t", "$ ");
    b.send(json!({"do": "type", "who": "t", "text": format!("echo {UNICODE}-$((6*7)); id -un")}));
    b.sees("t", "grüße-世界");
    b.sees("t", &format!("-42\n{OS_LOGIN}"));
    b.send(json!({"do": "screenshot", "who": "t", "name": "terminal"}));
    // A resize reaches the node's terminal.
    let resized = b.send(json!({"do": "resize", "who": "t", "width": 760, "height": 520}));
    let size = format!("{} {}", resized["rows"], resized["cols"]);
    b.send(json!({"do": "type", "who": "t", "text": "clear; stty size"}));
    b.sees("t", &size);

    // Paste (Ctrl+Shift+V) goes in like typing.
    b.send(json!({"do": "paste", "who": "t", "text": "echo pasted-ü-$((3*3))"}));
    b.sees("t", "pasted-ü-9");
    // The node recorded and tracks it as tina's session on node1.
    let start = wait_event(&a, "session.start", |e| {
        e["user"] == "tina" && e["login"] == OS_LOGIN
    });
    let id = start["session_id"].as_str().unwrap().to_string();

    // The active sessions page (a second tab of tina's) lists it; she joins it as an observer.
    let listed = b.send(json!({"do": "sessions", "who": "t#2"}));
    let row = listed["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} not listed: {listed}"))
        .clone();
    assert!(row["text"].as_str().unwrap().contains("node1"), "{row}");
    assert_eq!(row["join"], json!(["observer", "peer"]), "{row}");
    b.send(json!({"do": "screenshot", "who": "t#2", "name": "sessions"}));
    b.send(json!({"do": "click", "who": "t#2", "selector": format!("tr.session[data-id=\"{id}\"] a.join[data-mode=observer]"), "wait": "#terminal[data-ready], #terminal[data-ended]"}));

    // `hop join` from the CLI, as a user whose role may watch `access` sessions.
    let seen = a.dir.path().join("otto-sees.txt");
    let _observer = Killed(
        Command::new(HOP)
            .args(["join", &id])
            .env("HOP_HOME", &a.home)
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::fs::File::create(&seen).unwrap()))
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_event(&a, "session.join", |e| {
        e["user"] == "otto" && e["success"] == true
    });
    b.send(json!({"do": "type", "who": "t", "text": "echo watched-$((2+2))"}));
    wait_file(&seen, "watched-4");
    b.sees("t#2", "watched-4");
    b.send(json!({"do": "screenshot", "who": "t#2", "name": "joined"}));
    // As a peer (her own session: every mode), the second tab's keys go into the session.
    b.send(json!({"do": "goto", "who": "t#2", "path": format!("/web/join/{id}/peer"), "wait": "#terminal[data-ready], #terminal[data-ended]"}));
    b.send(json!({"do": "type", "who": "t#2", "text": "echo from-peer-$((1+1))"}));
    b.sees("t", "from-peer-2");

    // The shell's end ends the terminal, with the reason shown; the recording plays the echo.
    b.send(json!({"do": "type", "who": "t", "text": "exit"}));
    let ended = b.send(json!({"do": "wait_end", "who": "t", "ms": 10000}));
    assert_eq!(ended["ended"], "exit", "{ended}");
    assert!(
        ended["status"].as_str().unwrap().contains("exited"),
        "{ended}"
    );
    let raw = played(&a, &id, "watched-4");
    assert!(raw.contains(&format!("{UNICODE}-42")), "{raw}");
    // The same session is in this user's recordings page, and its player plays it to its last
    // marker (the screen at the end; the echo above has scrolled away by then).
    let replayed = b.send(json!({"do": "replay", "who": "t", "id": id, "want": "watched-4"}));
    assert_eq!(replayed["listed"], true, "{replayed}");

    // A login the role does not allow: refused with the reason, and audited.
    let refused = b.send(json!({"do": "goto", "who": "t", "path": "/web/terminal/root@node1", "wait": "#terminal[data-ended]"}));
    assert_eq!(refused["ended"], "refused", "{refused}");
    assert!(
        refused["status"].as_str().unwrap().contains("root"),
        "{refused}"
    );
    wait_event(&a, "ssh.auth", |e| {
        e["user"] == "tina" && e["success"] == false && e["login"] == "root"
    });

    // Logout (from elsewhere: the cookie's session ends) ends an open terminal: the page says so,
    // and the proxy ends a socket the app does not manage with the reason.
    b.send(json!({"do": "connect", "who": "t", "node": "node1", "login": OS_LOGIN}));
    let raw = b.send(json!({"do": "raw_open", "who": "t#3", "node": "node1", "login": OS_LOGIN}));
    assert!(
        raw["frames"][0].as_str().unwrap().contains("ready"),
        "{raw}"
    );
    let jar = b.send(json!({"do": "cookie", "who": "t"}));
    let token = jar["value"].as_str().unwrap().to_string();
    let csrf = web(&a, "GET", "/web/api/session", Some(&token), None, None).body["csrf_token"]
        .as_str()
        .unwrap()
        .to_string();
    let out = web(
        &a,
        "POST",
        "/web/api/logout",
        Some(&token),
        Some(&csrf),
        Some(&json!({})),
    );
    assert_eq!(out.status, 200, "{}", out.body);
    let ended = b.send(json!({"do": "wait_end", "who": "t", "ms": 5000}));
    let shown = format!("{} {}", ended["status"], ended["login_notice"]);
    assert!(shown.contains("logged out"), "{ended}");
    let raw = b.send(json!({"do": "raw_wait_end", "who": "t#3", "ms": 5000}));
    assert_eq!(end_frame(&raw)["code"], "logged_out", "{raw}");
    assert_eq!(raw["closed"], 1008, "{raw}");

    // A lock ends another user's open terminal within 5 s, with the reason.
    let lena = add_user(&a, "lena", "access", &[]);
    b.send(json!({"do": "login", "who": "l", "user": "lena", "password": PASSWORD, "otp": totp(&lena, 30)}));
    b.send(json!({"do": "connect", "who": "l", "node": "node1", "login": OS_LOGIN}));
    b.sees("l", "$ ");
    b.send(json!({"do": "type", "who": "l", "text": "echo before-lock"}));
    b.sees("l", "before-lock");
    b.send(json!({"do": "raw_open", "who": "l#2", "node": "node1", "login": OS_LOGIN}));
    a.ok(&[
        "admin",
        "lock",
        "--user",
        "lena",
        "--message",
        "web terminal test",
    ]);
    let ended = b.send(json!({"do": "wait_end", "who": "l", "ms": 5000}));
    eprintln!(
        "the locked user's terminal ended {} ms after the lock",
        ended["after_ms"]
    );
    let shown = format!("{} {}", ended["status"], ended["login_notice"]);
    assert!(shown.contains("locked"), "{ended}");
    let raw = b.send(json!({"do": "raw_wait_end", "who": "l#2", "ms": 5000}));
    assert_eq!(end_frame(&raw)["code"], "locked", "{raw}");
    b.send(json!({"do": "screenshot", "who": "l", "name": "locked"}));
    // No script error and no refused style or script (the CSP holds with the terminal open);
    // the only console errors allowed are the page's own requests refused after logout/lock.
    let errors = b.send(json!({"do": "errors"}));
    for e in errors["errors"].as_array().unwrap() {
        let e = e.as_str().unwrap();
        assert!(
            (e.contains("401") || e.contains("403")) && !e.contains("Content Security Policy"),
            "{errors}"
        );
    }
    eprintln!("web terminal test took {:?}", clock::since(started));
}

/// Where the proxy terminates and records sessions (`session_recording: proxy`), the web
/// terminal goes through the same terminating server as `hop ssh`: the recording is the
/// proxy's, and plays.
#[test]
fn the_web_terminal_where_the_proxy_records() {
    os_login();
    let a = Appliance::start("  session_recording: proxy\n");
    let _node = start_node(
        &a,
        &a.dir.path().join("node1"),
        &node_token(&a),
        "node1",
        "env=dev",
    );
    let Some(mut b) = Browser::start(
        "terminal.mjs",
        &format!("https://{}", a.addr),
        &artifacts("terminal"),
    ) else {
        return;
    };
    let pia = add_user(&a, "pia", "access", &[]);
    b.send(json!({"do": "login", "who": "p", "user": "pia", "password": PASSWORD, "otp": totp(&pia, 30)}));
    let opened = b.send(json!({"do": "connect", "who": "p", "node": "node1", "login": OS_LOGIN}));
    assert_eq!(opened["ended"], "", "{opened}");
    b.sees("p", "$ ");
    b.send(json!({"do": "type", "who": "p", "text": "echo at-the-proxy-$((20+1)) ü; exit"}));
    let ended = b.send(json!({"do": "wait_end", "who": "p", "ms": 10000}));
    assert_eq!(ended["ended"], "exit", "{ended}");
    let start = wait_event(&a, "session.start", |e| {
        e["user"] == "pia" && e["recorded_at"] == "proxy"
    });
    let id = start["session_id"].as_str().unwrap();
    let aud = a.add_user("aud", "auditor", "nobody");
    assert!(a.login("aud", PASSWORD, &aud).status.success());
    played(&a, id, "at-the-proxy-21 ü");
}

/// A WebSocket upgrade of `/web/api/terminal` with curl (HTTP/1.1): the status code and body.
fn upgrade(
    a: &Appliance,
    token: &str,
    origin: Option<&str>,
    csrf: Option<&str>,
    max_time: &str,
) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sSk", "-i", "--http1.1", "--max-time", max_time])
        .arg(format!(
            "https://{}/web/api/terminal?login={OS_LOGIN}&node=node1",
            a.addr
        ))
        .args(["-H", "Connection: Upgrade", "-H", "Upgrade: websocket"])
        .args(["-H", "Sec-WebSocket-Version: 13"])
        .args(["-H", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="])
        .args(["-H", &format!("Cookie: __Host-hop_session={token}")]);
    let protocols = match csrf {
        Some(c) => format!("hop-terminal, hop-csrf.{c}"),
        None => "hop-terminal".into(),
    };
    cmd.args(["-H", &format!("Sec-WebSocket-Protocol: {protocols}")]);
    if let Some(o) = origin {
        cmd.args(["-H", &format!("Origin: {o}")]);
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// Spoils `user`'s standing; the terminal's upgrade must then be refused with `code`.
type Spoil = fn(&Appliance, &str);

#[test]
fn the_web_terminal_refusal_matrix() {
    let a = Appliance::start("");
    let origin = format!("https://{}", a.addr);
    let secret = add_user(&a, "wt", "access", &[]);
    let (token, csrf) = web_login(&a, "wt", &secret, None);
    // Positive control: this origin and the CSRF token: switched to a WebSocket.
    let (status, text) = upgrade(&a, &token, Some(&origin), Some(&csrf), "2");
    assert_eq!(status, 101, "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("sec-websocket-protocol: hop-terminal"),
        "{text}"
    );
    // Another user's session: its CSRF token is no use with this cookie.
    let other = add_user(&a, "wtother", "access", &[]);
    let (_, other_csrf) = web_login(&a, "wtother", &other, None);
    let look_alike = format!("https://{}.evil.example", a.addr);
    let plain = format!("http://{}", a.addr);
    let forged: [(&str, Option<&str>, Option<&str>, &str); 8] = [
        (
            "another origin",
            Some("https://evil.example"),
            Some(&csrf),
            "another origin",
        ),
        ("no origin", None, Some(&csrf), "no Origin"),
        ("no CSRF token", Some(&origin), None, "no CSRF token"),
        (
            "a wrong CSRF token",
            Some(&origin),
            Some(&token),
            "CSRF token is wrong",
        ),
        (
            "another session's CSRF token",
            Some(&origin),
            Some(&other_csrf),
            "CSRF token is wrong",
        ),
        (
            "a look-alike origin",
            Some(&look_alike),
            Some(&csrf),
            "another origin",
        ),
        (
            "an opaque origin",
            Some("null"),
            Some(&csrf),
            "another origin",
        ),
        ("plain http", Some(&plain), Some(&csrf), "another origin"),
    ];
    for (what, origin, csrf, says) in forged {
        let (status, text) = upgrade(&a, &token, origin, csrf, "10");
        assert_eq!(status, 403, "{what}: {text}");
        assert!(
            text.contains(says) && text.contains("cross_site"),
            "{what}: {text}"
        );
    }
    // Each refusal is audited.
    let deadline = clock::monotonic_now() + Duration::from_secs(10);
    loop {
        let refusals = a.ok(&[
            "admin",
            "audit",
            "search",
            "--type",
            "access.refused",
            "--format",
            "json",
        ]);
        let cross = refusals
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["user"] == "wt" && e["route"] == "web" && e["reason"] == "cross_site")
            .count();
        if cross >= forged.len() {
            break;
        }
        assert!(clock::monotonic_now() < deadline, "{refusals}");
        std::thread::sleep(Duration::from_millis(200));
    }

    let rows: [(&str, Spoil, &str); 3] = [
        (
            "locked user",
            |a, u| {
                a.ok(&[
                    "admin",
                    "lock",
                    "--user",
                    u,
                    "--message",
                    "web terminal matrix",
                ]);
            },
            "locked",
        ),
        (
            "deleted user",
            |a, u| {
                a.ok(&["admin", "users", "rm", u]);
            },
            "deleted",
        ),
        (
            "role removed",
            |a, u| {
                let doc = a.dir.path().join(format!("{u}.yaml"));
                std::fs::write(
                &doc,
                format!("kind: user\nversion: v2\nmetadata:\n  name: {u}\nspec:\n  roles: [auditor]\n  traits:\n    logins: [{OS_LOGIN}]\n"),
            )
            .unwrap();
                a.ok(&["admin", "create", "--force", "-f", doc.to_str().unwrap()]);
            },
            "role_removed",
        ),
    ];
    let expiring = add_user(&a, "wtexp", "access", &[]);
    let (expired, expired_csrf) = web_login(&a, "wtexp", &expiring, Some(3));
    let expires = clock::monotonic_now() + Duration::from_secs(4);
    for (i, (what, spoil, code)) in rows.iter().enumerate() {
        let user = format!("wt{i}");
        let secret = add_user(&a, &user, "access", &[]);
        let (token, csrf) = web_login(&a, &user, &secret, None);
        spoil(&a, &user);
        let (status, text) = upgrade(&a, &token, Some(&origin), Some(&csrf), "10");
        assert_eq!(status, 401, "{what}: {text}");
        assert!(
            text.contains(&format!("\"code\":\"{code}\"")),
            "{what}: {text}"
        );
    }
    // The 3-second session has expired by now.
    std::thread::sleep(expires.saturating_duration_since(clock::monotonic_now()));
    let (status, text) = upgrade(&a, &expired, Some(&origin), Some(&expired_csrf), "10");
    assert_eq!(status, 401, "expired: {text}");
    assert!(text.contains("\"code\":\"expired\""), "expired: {text}");
}

/// A raw WebSocket client of the terminal over TLS (HTTP/1.1), which can stop reading.
struct RawSocket(crate::deadlines::Tls);

impl RawSocket {
    /// Upgrades `/web/api/terminal?QUERY` with the cookie, this origin and the CSRF token;
    /// panics unless switched (101).
    fn open(a: &Appliance, token: &str, csrf: &str, query: &str) -> Self {
        use std::io::Read;
        let mut s = crate::deadlines::tls(&a.addr, b"http/1.1", None);
        s.sock
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        write!(
            s,
            "GET /web/api/terminal?{query} HTTP/1.1\r\nHost: {h}\r\nOrigin: https://{h}\r\n\
             Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Protocol: hop-terminal, hop-csrf.{csrf}\r\n\
             Cookie: __Host-hop_session={token}\r\n\r\n",
            h = a.addr
        )
        .unwrap();
        s.flush().unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        Self(s)
    }

    /// The next message's opcode and payload (the proxy sends whole, unmasked frames); `None`
    /// at the end of the stream.
    fn next(&mut self) -> Option<(u8, Vec<u8>)> {
        use std::io::Read;
        let mut h = [0u8; 2];
        self.0.read_exact(&mut h).ok()?;
        let len = match h[1] & 0x7f {
            126 => {
                let mut l = [0u8; 2];
                self.0.read_exact(&mut l).ok()?;
                u64::from(u16::from_be_bytes(l))
            }
            127 => {
                let mut l = [0u8; 8];
                self.0.read_exact(&mut l).ok()?;
                u64::from_be_bytes(l)
            }
            n => u64::from(n),
        };
        let mut payload = vec![0u8; usize::try_from(len).unwrap()];
        self.0.read_exact(&mut payload).ok()?;
        Some((h[0] & 0x0f, payload))
    }

    /// Sends keys in one masked binary frame (under 126 bytes).
    fn keys(&mut self, keys: &[u8]) {
        let mask = [0x12u8, 0x34, 0x56, 0x78];
        let mut frame = vec![0x82, 0x80 | u8::try_from(keys.len()).unwrap()];
        frame.extend_from_slice(&mask);
        frame.extend(keys.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
        self.0.write_all(&frame).unwrap();
        self.0.flush().unwrap();
    }
}

/// A page that stops reading while the node floods its terminal cannot keep the session past a
/// lock: on an agentless node nothing but the terminal's own check ends the proxy's SSH
/// connection to sshd, and that check must go on while the write to the page waits.
#[test]
fn a_page_that_stops_reading_does_not_keep_an_agentless_session_past_a_lock() {
    let a = Appliance::start("");
    let dir = a.dir.path().join("web1");
    std::fs::create_dir_all(&dir).unwrap();
    a.ok(&[
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
    let port = crate::harness::free_port();
    let Some(_sshd) = crate::openssh_node::start_sshd(&dir, port) else {
        return;
    };
    a.ok(&[
        "admin",
        "nodes",
        "add",
        "--openssh",
        "--name",
        "web1",
        "--addr",
        &format!("127.0.0.1:{port}"),
    ]);
    let secret = add_user(&a, "stall", "access", &[]);
    let (token, csrf) = web_login(&a, "stall", &secret, None);
    let mut ws = RawSocket::open(&a, &token, &csrf, &format!("login={OS_LOGIN}&node=web1"));
    let ready = loop {
        let (op, payload) = ws.next().expect("the terminal opens");
        if op == 1 {
            break String::from_utf8(payload).unwrap();
        }
    };
    assert!(ready.contains("\"ready\""), "{ready}");
    // A flood of output the page no longer reads: every buffer on the way fills.
    ws.keys(b"exec yes flood\r");
    std::thread::sleep(Duration::from_secs(3));
    let log = dir.join("sshd.log");
    // sshd says its session ended in one of these ways, depending on whether it was writing
    // (the flood) when the proxy's connection went away.
    let closed = |log: &str| {
        [
            "Disconnected from user",
            "Close session",
            "Broken pipe",
            "Connection reset by",
        ]
        .iter()
        .any(|said| log.contains(said))
    };
    assert!(!closed(&std::fs::read_to_string(&log).unwrap()));
    a.ok(&[
        "admin",
        "lock",
        "--user",
        "stall",
        "--message",
        "stalled page",
    ]);
    let locked = clock::monotonic_now();
    loop {
        let text = std::fs::read_to_string(&log).unwrap();
        if closed(&text) {
            break;
        }
        assert!(
            clock::monotonic_now() < locked + Duration::from_secs(10),
            "sshd still serves the locked user's session 10 s after the lock:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "the stalled terminal's sshd session ended {} ms after the lock",
        (clock::monotonic_now() - locked).as_millis()
    );
    // Reading again, the page gets what was buffered, then the end of the socket.
    let drained = clock::monotonic_now();
    while ws.next().is_some() {
        assert!(clock::monotonic_now() < drained + Duration::from_secs(20));
    }
}
