//! Per-session MFA in the web terminal, end to end in headless Chromium (`web/tests/terminal.mjs`)
//! with a CDP virtual authenticator (CTAP2, resident keys, user verification), against an
//! appliance whose public address names `localhost` (WebAuthn needs a secure context and an RP
//! ID that is a domain). An ordinary user (roles `access` and `mfa-ssh`, which sets
//! `require_session_mfa`; an ordinary login) registers a security key on the account page,
//! opens the web terminal to a node, passes the prompt with the key, and a command's output
//! appears; the audit log holds the `mfa.session` event for that node and login. A key that
//! signs wrongly, a prompt the user cancels, and a user with no key each end the terminal with
//! the reason shown, audited as a failed `mfa.session`. And the prompt's refusal rows from a
//! script in the page (as a forged page would answer): a forged assertion and a frame that is
//! no answer, each ending the socket with a refusal (close 1008).

use std::time::Duration;

use serde_json::{Value, json};

use crate::clock;
use crate::harness::*;
use crate::ssh::{node_token, start_node};
use crate::web::add_user;
use crate::web_admin::{code_after, step_now};
use crate::web_browser::{Browser, artifacts};

/// Waits until an `mfa.session` event of `user` matching `pick` is in the audit log.
fn wait_mfa_event(a: &Appliance, user: &str, pick: impl Fn(&Value) -> bool) -> Value {
    let deadline = clock::monotonic_now() + Duration::from_secs(10);
    loop {
        let out = a.ok(&[
            "admin",
            "audit",
            "search",
            "--type",
            "mfa.session",
            "--format",
            "json",
        ]);
        let found = out
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|e| e["user"] == user && pick(e));
        if let Some(e) = found {
            return e;
        }
        assert!(clock::monotonic_now() < deadline, "{out}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The `end` status frame among `frames`.
fn end_of(frames: &Value) -> Value {
    frames
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| serde_json::from_str::<Value>(f.as_str()?).ok())
        .rfind(|f| f["type"] == "end")
        .unwrap_or(Value::Null)
}

#[test]
fn the_web_terminal_asks_a_security_key_for_each_session() {
    let t0 = clock::monotonic_now();
    os_login();
    let port = free_port();
    let a = Appliance::start_listening(
        "",
        "  authentication:\n    second_factor: \"optional\"\n",
        &format!("  public_addr: [\"localhost:{port}\"]\n"),
        &format!("127.0.0.1:{port}"),
    );
    let roles = a.dir.path().join("roles.yaml");
    std::fs::write(&roles, crate::mfa_cli::mfa_role(true)).unwrap();
    a.ok(&["admin", "create", "-f", roles.to_str().unwrap()]);
    let _node = start_node(
        &a,
        &a.dir.path().join("node1"),
        &node_token(&a),
        "node1",
        "env=dev",
    );
    let kim = add_user(&a, "kim", "access,mfa-ssh", &[]);
    let lee = add_user(&a, "lee", "access,mfa-ssh", &[]);
    let base = format!("https://localhost:{port}");
    let Some(mut b) = Browser::start("terminal.mjs", &base, &artifacts("session-mfa")) else {
        return;
    };
    let terminal = format!("/web/terminal/{OS_LOGIN}@node1");
    let ended = "#terminal[data-ended]";

    // Kim registers a security key on the account page (password + a fresh one-time code).
    b.send(json!({"do": "authenticator", "who": "k"}));
    let (code, step) = code_after(&kim, Some(step_now()));
    b.send(json!({"do": "login", "who": "k", "user": "kim", "password": PASSWORD, "otp": code}));
    b.send(json!({"do": "goto", "who": "k", "path": "/web/account", "wait": "#keys-section"}));
    let (proof, _) = code_after(&kim, Some(step));
    b.send(json!({"do": "fill", "who": "k", "sel": "#key-password", "value": PASSWORD}));
    b.send(json!({"do": "fill", "who": "k", "sel": "#key-existing-code", "value": proof}));
    b.send(json!({"do": "fill", "who": "k", "sel": "#key-name", "value": "usb key"}));
    b.send(json!({"do": "click", "who": "k", "selector": "#key-add", "wait": "#keys tr.key"}));

    // The terminal asks for the key, gets a one-minute certificate for node1 as the ordinary
    // login, and the shell runs.
    let opened = b.send(json!({"do": "connect", "who": "k", "node": "node1", "login": OS_LOGIN}));
    assert_eq!(opened["ended"], "", "{opened}");
    let frames = b.send(json!({"do": "frames", "who": "k"}));
    let prompt = frames["frames"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| serde_json::from_str::<Value>(f.as_str()?).ok())
        .find(|f| f["type"] == "mfa")
        .unwrap_or_else(|| panic!("no MFA prompt: {frames}"));
    assert_eq!(prompt["target"], format!("{OS_LOGIN}@node1"), "{prompt}");
    b.send(json!({"do": "type", "who": "k", "text": "echo mfa-$((6*7))"}));
    let seen = b.send(json!({"do": "wait_text", "who": "k", "want": "mfa-42", "ms": 10000}));
    assert!(seen["missing"].is_null(), "{seen}");
    b.send(json!({"do": "screenshot", "who": "k", "name": "mfa-terminal"}));
    let ok = wait_mfa_event(&a, "kim", |e| e.get("error").is_none());
    assert_eq!(ok["node"], "node1", "{ok}");
    assert_eq!(ok["login"], OS_LOGIN, "{ok}");

    // A key whose signature is wrong: Auth refuses the assertion; the terminal says so.
    b.send(json!({"do": "bogus_signature", "who": "k"}));
    let refused = b.send(json!({"do": "goto", "who": "k", "path": terminal, "wait": ended}));
    assert_eq!(refused["ended"], "mfa_refused", "{refused}");
    assert!(
        refused["status"]
            .as_str()
            .unwrap()
            .contains("per-session MFA"),
        "{refused}"
    );
    wait_mfa_event(&a, "kim", |e| e.get("error").is_some());

    // The user cancels the browser's prompt: the terminal says so, audited.
    b.send(json!({"do": "cancel_keys", "who": "k"}));
    let cancelled = b.send(json!({"do": "goto", "who": "k", "path": terminal, "wait": ended}));
    assert_eq!(cancelled["ended"], "mfa_cancelled", "{cancelled}");
    assert!(
        cancelled["status"]
            .as_str()
            .unwrap()
            .contains("NotAllowedError"),
        "{cancelled}"
    );
    wait_mfa_event(&a, "kim", |e| {
        e["error"]
            .as_str()
            .is_some_and(|w| w.contains("NotAllowedError"))
    });

    // Lee has no security key: no challenge, the terminal says how to add one, audited.
    let (code, _) = code_after(&lee, Some(step_now()));
    b.send(json!({"do": "login", "who": "l", "user": "lee", "password": PASSWORD, "otp": code}));
    let keyless = b.send(json!({"do": "goto", "who": "l", "path": terminal, "wait": ended}));
    assert_eq!(keyless["ended"], "mfa_refused", "{keyless}");
    assert!(
        keyless["status"]
            .as_str()
            .unwrap()
            .contains("no security key"),
        "{keyless}"
    );
    wait_mfa_event(&a, "lee", |e| e.get("error").is_some());

    // Refusal rows: what a forged page could answer to the prompt.
    let rows = [
        (
            "a forged assertion",
            "mfa-assertion AAAA AAAA AAAA AAAA",
            "mfa_refused",
        ),
        ("a frame that is no answer", "hello", "mfa_cancelled"),
    ];
    for (what, answer, code) in rows {
        let raw = b.send(json!({"do": "raw_mfa", "who": "k", "node": "node1", "login": OS_LOGIN, "answer": answer}));
        let end = end_of(&raw["frames"]);
        assert_eq!(end["code"], code, "{what}: {raw}");
        assert_eq!(raw["closed"], 1008, "{what}: {raw}");
    }
    eprintln!(
        "web session MFA: {:.1} s",
        clock::monotonic_now().duration_since(t0).as_secs_f64()
    );
}
