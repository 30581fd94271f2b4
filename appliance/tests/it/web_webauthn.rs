//! Security keys in the browser end to end: headless Chromium (Debian's package, driven by
//! `web/tests/admin.mjs`) with a CDP virtual authenticator, against an appliance whose public
//! address names `localhost` (WebAuthn needs a secure context and an RP ID that is a domain)
//! and whose `second_factor` is `on`. An ordinary user logs in with a one-time code, registers
//! a security key on the account page (password + a fresh code from the device they have),
//! then logs in with password + key; a wrong password with the key, and a login without the
//! key (no code either), are refused; the key logs in alone as a passkey (passwordless); then
//! the key is removed, proven by a tap on it. The audit log holds the key's `mfa.add` and
//! `mfa.delete`, a `user.login` with `mfa: webauthn` and one with `method: passwordless`.

use serde_json::{Value, json};

use crate::harness::*;
use crate::web::add_user;
use crate::web_admin::{code_after, step_now};
use crate::web_browser::{Browser, artifacts};

const SECOND_FACTOR_ON: &str = "  authentication:\n    second_factor: \"on\"\n";

fn events(a: &Appliance, kind: &str) -> Vec<Value> {
    a.ok(&[
        "admin", "audit", "search", "--type", kind, "--format", "json",
    ])
    .lines()
    .filter_map(|l| serde_json::from_str(l).ok())
    .collect()
}

#[test]
fn a_user_registers_a_security_key_and_logs_in_with_it() {
    let mut a = Appliance::start(SECOND_FACTOR_ON);
    // The public address needs the port, known only now: restart on it with that address.
    a.stop();
    let port: u16 = a.addr.rsplit_once(':').unwrap().1.parse().unwrap();
    let cfg = a.dir.path().join("hop.yaml");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!("  public_addr: [\"localhost:{port}\"]\n"));
    std::fs::write(&cfg, text).unwrap();
    a.restart_same_port();
    let secret = add_user(&a, "kim", "access", &[]);
    let base = format!("https://localhost:{port}");
    let Some(mut b) = Browser::start("admin.mjs", &base, &artifacts("webauthn")) else {
        return;
    };
    let added = b.send(json!({"do": "authenticator", "who": "kim"}));
    assert_eq!(added["credentials"], 0, "{added}");

    // A login with the one-time code, then the account page.
    let (code, step) = code_after(&secret, Some(step_now()));
    let v = b.send(
        json!({"do": "login", "who": "kim", "user": "kim", "password": PASSWORD, "otp": code}),
    );
    assert_eq!(v["error"], "", "{v}");
    b.send(json!({"do": "open", "who": "kim", "path": "/web/account", "wait": "#keys-section"}));
    let (proof, _) = code_after(&secret, Some(step));
    b.send(json!({"do": "fill", "who": "kim", "sel": "#key-password", "value": PASSWORD}));
    b.send(json!({"do": "fill", "who": "kim", "sel": "#key-existing-code", "value": proof}));
    b.send(json!({"do": "fill", "who": "kim", "sel": "#key-name", "value": "usb key"}));
    b.send(json!({"do": "click", "who": "kim", "sel": "#key-add"}));
    let said =
        b.send(json!({"do": "text", "who": "kim", "sel": "#keys-section", "has": "usb key"}));
    assert!(said["text"].as_str().unwrap().contains("added"), "{said}");
    b.send(json!({"do": "screenshot", "who": "kim", "name": "key-added"}));

    // A wrong password with the key is refused; so is a login without the key (nor a code).
    let v = b.send(
        json!({"do": "loginKey", "who": "kim", "user": "kim", "password": "not the password"}),
    );
    assert_ne!(v["error"], "", "{v}");
    let v = b
        .send(json!({"do": "login", "who": "kim", "user": "kim", "password": PASSWORD, "otp": ""}));
    assert_ne!(v["error"], "", "{v}");
    // Password + key logs in.
    let v = b.send(json!({"do": "loginKey", "who": "kim", "user": "kim", "password": PASSWORD}));
    assert_eq!(v["error"], "", "{v}");

    // The key is a passkey too (a discoverable credential with user verification): it logs in
    // alone, naming its user.
    let v = b.send(json!({"do": "loginPasskey", "who": "kim"}));
    assert_eq!(v["error"], "", "{v}");
    assert!(v["who"].as_str().unwrap().contains("kim"), "{v}");

    // The key goes again, proven by a tap on it (no code), the one-time-code device remains.
    b.send(json!({"do": "open", "who": "kim", "path": "/web/account", "wait": "#keys tr.key"}));
    b.send(json!({"do": "fill", "who": "kim", "sel": "#key-password", "value": PASSWORD}));
    b.send(json!({"do": "click", "who": "kim", "sel": "#keys tr.key button.remove"}));
    b.send(json!({"do": "gone", "who": "kim", "sel": "#keys tr.key"}));
    let deletes = events(&a, "mfa.delete");
    assert!(
        deletes
            .iter()
            .any(|e| e["user"] == "kim" && e["kind"] == "webauthn" && e.get("error").is_none()),
        "{deletes:?}"
    );

    let adds = events(&a, "mfa.add");
    assert!(
        adds.iter()
            .any(|e| e["user"] == "kim" && e["kind"] == "webauthn" && e.get("error").is_none()),
        "{adds:?}"
    );
    let logins = events(&a, "user.login");
    assert!(
        logins.iter().any(|e| e["user"] == "kim"
            && e["method"] == "passwordless"
            && e.get("error").is_none()),
        "{logins:?}"
    );
    assert!(
        logins
            .iter()
            .any(|e| e["user"] == "kim" && e["mfa"] == "webauthn" && e.get("error").is_none()),
        "{logins:?}"
    );
    assert!(
        logins
            .iter()
            .any(|e| e["user"] == "kim" && e.get("error").is_some()),
        "{logins:?}"
    );
}
