//! The editor and account pages end to end: in real headless Chromium (Debian's package, driven
//! by `web/tests/admin.mjs`), an `editor` user adds a user (whose invitation link works: the new
//! user chooses a password and enrolls a one-time-code device on the invitation page, then logs
//! in), saves a role (first with an error shown inline with its line and field, then valid),
//! creates and deletes a join token, and locks and unlocks a user; markup in a user name, a role
//! name and a lock reason shows as text. The new user changes their password on the account
//! page and logs in with the new one. Over the API (curl), the same editor calls made with an
//! `access` user's cookie and CSRF token are refused (403), and the editor API's rows of the
//! web refusal matrix (locked, deleted, role removed, CSRF token missing, expired); a reset ends
//! the user's web sessions. On the account page the new user also adds a second one-time-code
//! device, removes the first, and cannot remove the last. Screenshots
//! are kept under `$CARGO_TARGET_DIR/tmp/web-artifacts/admin/`.

use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::clock;
use crate::harness::*;
use crate::web::{add_user, web, web_login};
use crate::web_browser::{Browser, artifacts};

const XSS_NAME: &str = "<img src=x onerror=window.__xss=1>";
const XSS_ROLE: &str = "dev<img src=x onerror=window.__xss=3><script>window.__xss=4";
const XSS_REASON: &str = "<script>window.__xss=5</script>";
const NEW_PASSWORD: &str = "a different horse battery staple";

/// A role whose line 8 has an invalid regular expression.
const BAD_ROLE: &str = "kind: role\nversion: v7\nmetadata:\n  name: web-dev\nspec:\n  allow:\n    node_labels:\n      env: '^(dev$'\n";

impl Browser {
    fn text(&mut self, who: &str, sel: &str, has: &str) -> String {
        let v = self.send(json!({"do": "text", "who": who, "sel": sel, "has": has}));
        v["text"].as_str().unwrap().to_string()
    }

    fn fill(&mut self, who: &str, sel: &str, value: &str) {
        self.send(json!({"do": "fill", "who": who, "sel": sel, "value": value}));
    }

    fn click(&mut self, who: &str, sel: &str, wait: &str) {
        self.send(json!({"do": "click", "who": who, "sel": sel, "wait": wait}));
    }

    fn open(&mut self, who: &str, path: &str, wait: &str) {
        self.send(json!({"do": "open", "who": who, "path": path, "wait": wait}));
    }

    fn shot(&mut self, who: &str, name: &str) {
        self.send(json!({"do": "screenshot", "who": who, "name": name}));
    }
}

pub(crate) fn step_now() -> u64 {
    clock::wall_now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 30
}

/// The code of TOTP step `step`.
fn code_of(secret: &str, step: u64) -> String {
    let out = Command::new("oathtool")
        .args(["--totp", "-b", "--now", &format!("@{}", step * 30), secret])
        .output()
        .expect("oathtool is installed by scripts/test");
    assert!(out.status.success(), "oathtool: {}", stderr(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A code Auth accepts now after step `last` was used (the earliest acceptable step, so that
/// several codes can be used in a row), waiting for the clock when that step is not yet in the
/// window of one step either side; the code and its step.
pub(crate) fn code_after(secret: &str, last: Option<u64>) -> (String, u64) {
    loop {
        let now = step_now();
        // The current step at first: under load, a code of the step before may be two steps old
        // by the time the server checks it.
        let step = last.map_or(now, |l| (l + 1).max(now));
        if step <= now + 1 {
            return (code_of(secret, step), step);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Every editor call, with a plausible body.
fn editor_calls() -> Vec<(&'static str, &'static str, Option<Value>)> {
    let role = json!({"yaml": "kind: role\nversion: v7\nmetadata:\n  name: sneaky\nspec:\n  allow:\n    rules:\n    - resources: ['*']\n      verbs: ['*']\n"});
    vec![
        ("GET", "/web/api/users", None),
        (
            "POST",
            "/web/api/users",
            Some(json!({"name": "mallory", "roles": ["editor"]})),
        ),
        ("DELETE", "/web/api/users/eddie", None),
        ("POST", "/web/api/users/eddie/lock", Some(json!({}))),
        ("POST", "/web/api/users/eddie/unlock", Some(json!({}))),
        ("POST", "/web/api/users/eddie/reset", Some(json!({}))),
        ("GET", "/web/api/roles", None),
        ("POST", "/web/api/roles", Some(role.clone())),
        ("GET", "/web/api/roles/access", None),
        ("PUT", "/web/api/roles/access", Some(role)),
        ("DELETE", "/web/api/roles/access", None),
        ("GET", "/web/api/tokens", None),
        ("POST", "/web/api/tokens", Some(json!({"roles": ["node"]}))),
        ("DELETE", "/web/api/tokens/anything", None),
        ("GET", "/web/api/locks", None),
        (
            "POST",
            "/web/api/locks",
            Some(json!({"user": "eddie", "message": "x"})),
        ),
        ("DELETE", "/web/api/locks/anything", None),
    ]
}

/// With an `access` user's cookie and CSRF token, every editor call is refused by the API.
fn access_user_is_refused(a: &Appliance, secret: &str) {
    let (token, csrf) = web_login(a, "ann", secret, None);
    for (method, path, body) in editor_calls() {
        let r = web(a, method, path, Some(&token), Some(&csrf), body.as_ref());
        assert_eq!(r.status, 403, "{method} {path}: {}", r.body);
        assert_eq!(r.body["code"], "access_denied", "{method} {path}");
    }
    let hint = web(a, "GET", "/web/api/editor", Some(&token), None, None);
    assert_eq!(
        hint.body,
        json!({"users": false, "roles": false, "tokens": false, "locks": false})
    );
    // Nothing changed: no user made, the role and the editor as they were.
    let users = a.ok(&["admin", "users", "ls"]);
    assert!(!users.contains("mallory"), "{users}");
    assert!(!a.ok(&["admin", "get", "role/access"]).contains("sneaky"));
    let bye = web(
        a,
        "POST",
        "/web/api/logout",
        Some(&token),
        Some(&csrf),
        Some(&json!({})),
    );
    assert_eq!(bye.status, 200, "{}", bye.body);
}

fn audit(a: &Appliance, kind: &str) -> Vec<Value> {
    a.ok(&[
        "admin", "audit", "search", "--type", kind, "--format", "json",
    ])
    .lines()
    .filter_map(|l| serde_json::from_str(l).ok())
    .collect()
}

/// The items `sel` matches, and whether any markup ran.
fn items(b: &mut Browser, who: &str, sel: &str) -> Vec<Value> {
    let v = b.send(json!({"do": "all", "who": who, "sel": sel}));
    assert_eq!(v["xss"], Value::Null, "markup ran on the page");
    v["items"].as_array().unwrap().clone()
}

fn no_markup(item: &Value) {
    let tags = item["elements"].as_array().unwrap();
    assert!(!tags.iter().any(|t| t == "img" || t == "script"), "{item}");
}

#[test]
fn editors_and_accounts_in_chromium() {
    let a = Appliance::start("");
    let shots = artifacts("admin");
    let Some(mut b) = Browser::start("admin.mjs", &format!("https://{}", a.addr), &shots) else {
        return;
    };
    let started = clock::monotonic_now();
    let eddie = add_user(&a, "eddie", "editor", &[]);
    let ann = add_user(&a, "ann", "access", &[]);
    access_user_is_refused(&a, &ann);
    // The editor logs in; the editor pages are in the nav.
    let e = "e";
    let ok = b.send(json!({"do": "login", "who": e, "user": "eddie", "password": PASSWORD, "otp": totp(&eddie, 30)}));
    assert_eq!(ok["error"], "", "{ok}");
    b.text(e, "#nav a[data-editor=users]", "Users");
    let nav = items(&mut b, e, "#nav a[data-editor]");
    assert!(nav.iter().all(|l| l["hidden"] == false), "{nav:?}");
    // Users: a name made of markup is refused, the message shown as text; a real user gets an
    // invitation link.
    b.open(e, "/web/users", "#add-user");
    b.fill(e, "#new-user", XSS_NAME);
    b.fill(e, "#new-user-roles", "access");
    b.click(e, "#add-user-submit", "");
    b.text(e, "#users-error", "invalid user name");
    no_markup(&items(&mut b, e, "#users-error")[0]);
    b.fill(e, "#new-user", "nina");
    b.click(e, "#add-user-submit", "#invite-link");
    let link = items(&mut b, e, "#invite-link");
    let path = link[0]["data"]["path"].as_str().unwrap().to_string();
    assert!(path.starts_with("/web/invite/"), "{link:?}");
    b.shot(e, "users-invite");
    // The invitation page: a password and a device, then the new user logs in.
    let n = "n";
    b.open(n, &path, "#invite-form");
    let secret = b.text(n, "#enroll-secret", "");
    assert_eq!(items(&mut b, n, "#enroll-qr").len(), 1);
    b.shot(n, "invite");
    b.fill(n, "#invite-password", PASSWORD);
    b.fill(n, "#invite-password2", PASSWORD);
    let (code, step) = code_after(&secret, None);
    b.fill(n, "#invite-otp", &code);
    b.click(n, "#invite-submit", "#invite-done");
    let (code, step) = code_after(&secret, Some(step));
    let ok =
        b.send(json!({"do": "login", "who": n, "user": "nina", "password": PASSWORD, "otp": code}));
    assert_eq!(ok["error"], "", "{ok}");
    let nav = items(&mut b, n, "#nav a[data-editor]");
    assert!(nav.iter().all(|l| l["hidden"] == true), "{nav:?}");
    // The link was used up.
    let again = web(
        &a,
        "POST",
        "/web/api/invite/check",
        None,
        None,
        Some(&json!({"token": path.trim_start_matches("/web/invite/")})),
    );
    assert_eq!(again.status, 403, "{}", again.body);
    // Roles: an invalid role is not saved, its error shown with line and field.
    b.open(e, "/web/roles", "#role-yaml");
    b.fill(e, "#role-yaml", BAD_ROLE);
    b.click(e, "#role-save", "#role-error-where");
    let r#where = b.text(e, "#role-error-where", "line 8");
    assert!(r#where.contains("node_labels"), "{where}");
    b.text(e, "#role-error-message", "invalid regex");
    assert!(!a.hop(&["admin", "get", "role/web-dev"]).status.success());
    b.shot(e, "role-error");
    let good = format!(
        "kind: role\nversion: v7\nmetadata:\n  name: '{XSS_ROLE}'\nspec:\n  allow:\n    logins: [dev]\n"
    );
    b.fill(e, "#role-yaml", &good);
    b.click(e, "#role-save", "");
    b.text(e, "#role-saved", "Saved role");
    b.open(e, "/web/roles", "li.role");
    let roles = items(&mut b, e, "li.role");
    let made = roles
        .iter()
        .find(|r| r["data"]["name"] == XSS_ROLE)
        .unwrap_or_else(|| panic!("{roles:?}"));
    assert_eq!(made["text"], XSS_ROLE);
    no_markup(made);
    b.shot(e, "roles");
    // Join tokens: the secret once, then the token deleted.
    b.open(e, "/web/tokens", "#add-token");
    b.fill(e, "#token-roles", "node");
    b.click(e, "#add-token-submit", "#token-secret");
    let token_secret = b.text(e, "#token-secret", "");
    assert!(token_secret.len() >= 16, "{token_secret}");
    let rows = items(&mut b, e, "tr.token");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(!rows[0]["text"].as_str().unwrap().contains(&token_secret));
    let id = rows[0]["data"]["id"].as_str().unwrap().to_string();
    b.shot(e, "tokens");
    b.click(e, &format!("tr.token[data-id='{id}'] button.remove"), "");
    b.send(json!({"do": "gone", "who": e, "sel": format!("tr.token[data-id='{id}']")}));
    // Lock and unlock a user; the reason, markup, shows as text.
    b.open(e, "/web/users", "#add-user");
    b.fill(e, "#new-user", "lou");
    b.fill(e, "#new-user-roles", "access");
    b.click(e, "#add-user-submit", "#invite-link");
    b.fill(e, "#lock-reason", XSS_REASON);
    b.click(
        e,
        "tr.user[data-name=lou] button.lock",
        "tr.user[data-name=lou] button.unlock",
    );
    let lou = items(&mut b, e, "tr.user[data-name=lou]");
    assert!(
        lou[0]["text"].as_str().unwrap().contains(XSS_REASON),
        "{lou:?}"
    );
    no_markup(&lou[0]);
    b.shot(e, "users-locked");
    b.open(e, "/web/locks", "#locks");
    let locks = items(&mut b, e, "tr.lock");
    assert!(
        locks
            .iter()
            .any(|l| l["text"].as_str().unwrap().contains("lou")),
        "{locks:?}"
    );
    b.shot(e, "locks");
    b.open(e, "/web/users", "tr.user[data-name=lou]");
    b.click(
        e,
        "tr.user[data-name=lou] button.unlock",
        "tr.user[data-name=lou] button.lock",
    );
    assert!(!a.ok(&["admin", "users", "ls"]).contains("until"));
    // The account page: a new password, which then logs in.
    b.open(n, "/web/account", "#password-form");
    b.fill(n, "#old-password", PASSWORD);
    let (code, step) = code_after(&secret, Some(step));
    b.fill(n, "#password-otp", &code);
    b.fill(n, "#new-password", NEW_PASSWORD);
    b.click(n, "#password-submit", "");
    b.text(n, "#password-message", "has been changed");
    b.shot(n, "account");
    let (code, step) = code_after(&secret, Some(step));
    let ok = b.send(
        json!({"do": "login", "who": "n2", "user": "nina", "password": NEW_PASSWORD, "otp": code}),
    );
    assert_eq!(ok["error"], "", "{ok}");
    // A second device (its secret shown once, confirmed by its first code), then the first one
    // removed; the last one cannot be.
    b.open(n, "/web/account", "#device-add");
    b.click(n, "#device-add", "#enroll-secret");
    let phone = b.text(n, "#enroll-secret", "");
    b.fill(n, "#device-password", NEW_PASSWORD);
    b.fill(n, "#device-name", "phone");
    b.fill(n, "#device-code", &code_of(&phone, step_now()));
    // Without a code from the device she has, a password alone adds nothing.
    b.click(n, "#device-submit", "");
    b.text(n, "#devices-message", "wrong password or one-time code");
    assert_eq!(items(&mut b, n, "tr.device").len(), 1);
    let (existing, step) = code_after(&secret, Some(step));
    b.fill(n, "#device-existing-code", &existing);
    b.fill(n, "#device-code", &code_of(&phone, step_now()));
    b.click(n, "#device-submit", "");
    b.text(n, "#devices-message", "added");
    assert_eq!(items(&mut b, n, "tr.device").len(), 2);
    b.shot(n, "account-devices");
    // Removing needs a fresh code from a device too: the password alone removes nothing.
    b.fill(n, "#device-password", NEW_PASSWORD);
    b.click(n, "tr.device[data-id=signup] button.remove", "");
    b.text(n, "#devices-message", "wrong password or one-time code");
    assert_eq!(items(&mut b, n, "tr.device").len(), 2);
    let (proof, step) = code_after(&secret, Some(step));
    b.fill(n, "#device-proof-code", &proof);
    b.click(n, "tr.device[data-id=signup] button.remove", "");
    b.send(json!({"do": "gone", "who": n, "sel": "tr.device[data-id=signup]"}));
    b.fill(n, "#device-password", NEW_PASSWORD);
    let (proof, _) = code_after(&phone, Some(step));
    b.fill(n, "#device-proof-code", &proof);
    b.click(n, "tr.device button.remove", "");
    b.text(n, "#devices-message", "only second-factor device");
    assert_eq!(items(&mut b, n, "tr.device").len(), 1);
    // Audited as for the CLI, with the web user as the actor.
    let created = audit(&a, "user.create");
    assert!(
        created
            .iter()
            .any(|e| e["user"] == "eddie" && e["name"] == "nina"),
        "{created:?}"
    );
    let changed = audit(&a, "user.password_change");
    assert!(
        changed
            .iter()
            .any(|e| e["user"] == "nina" && e["success"] == true),
        "{changed:?}"
    );
    let logouts = audit(&a, "user.logout");
    assert!(
        logouts
            .iter()
            .any(|e| e["user"] == "ann" && e["client"] == "web"),
        "{logouts:?}"
    );
    let errors = b.send(json!({"do": "errors"}));
    for e in errors["errors"].as_array().unwrap() {
        let e = e.as_str().unwrap();
        assert!(
            ["400", "401", "403", "422"].iter().any(|c| e.contains(c)),
            "{errors}"
        );
    }
    eprintln!(
        "the editor and account pages took {:?}",
        clock::since(started)
    );
}

/// How an editor's identity or request is spoiled, the status and code the editor API answers.
struct Row {
    what: &'static str,
    spoil: fn(&Appliance, &str),
    forged: bool,
    status: u16,
    code: &'static str,
}

const ROWS: &[Row] = &[
    Row {
        what: "locked",
        spoil: |a, u| {
            a.ok(&["admin", "lock", "--user", u]);
        },
        forged: false,
        status: 401,
        code: "locked",
    },
    Row {
        what: "deleted",
        spoil: |a, u| {
            a.ok(&["admin", "users", "rm", u]);
        },
        forged: false,
        status: 401,
        code: "deleted",
    },
    Row {
        what: "role removed",
        spoil: |a, u| {
            let doc = a.dir.path().join(format!("{u}.yaml"));
            std::fs::write(
                &doc,
                format!(
                    "kind: user\nversion: v2\nmetadata:\n  name: {u}\nspec:\n  roles: [access]\n"
                ),
            )
            .unwrap();
            a.ok(&["admin", "create", "--force", "-f", doc.to_str().unwrap()]);
        },
        forged: false,
        status: 401,
        code: "role_removed",
    },
    Row {
        what: "CSRF token missing",
        spoil: |_, _| {},
        forged: true,
        status: 403,
        code: "cross_site",
    },
];

#[test]
fn the_editor_api_rows_of_the_web_refusal_matrix() {
    let a = Appliance::start("");
    let started = clock::monotonic_now();
    let secret = add_user(&a, "eexp", "editor", &[]);
    let (expiring, _) = web_login(&a, "eexp", &secret, Some(3));
    let new_user = json!({"name": "made-by-a-refused-call", "roles": ["access"]});
    for (i, row) in ROWS.iter().enumerate() {
        let user = format!("ed{i}");
        let secret = add_user(&a, &user, "editor", &[]);
        let (token, csrf) = web_login(&a, &user, &secret, None);
        let ok = web(&a, "GET", "/web/api/users", Some(&token), None, None);
        assert_eq!(
            ok.status, 200,
            "positive control, {}: {}",
            row.what, ok.body
        );
        (row.spoil)(&a, &user);
        let csrf = (!row.forged).then_some(csrf.as_str());
        let seen = web(
            &a,
            "POST",
            "/web/api/users",
            Some(&token),
            csrf,
            Some(&new_user),
        );
        assert_eq!(seen.status, row.status, "{}: {}", row.what, seen.body);
        assert_eq!(seen.body["code"], row.code, "{}: {}", row.what, seen.body);
    }
    // A reset makes a new link and ends the user's web sessions at once.
    let secret = add_user(&a, "rita", "access", &[]);
    let (rita, _) = web_login(&a, "rita", &secret, None);
    let secret = add_user(&a, "edna", "editor", &[]);
    let (edna, csrf) = web_login(&a, "edna", &secret, None);
    let reset = web(
        &a,
        "POST",
        "/web/api/users/rita/reset",
        Some(&edna),
        Some(&csrf),
        Some(&json!({})),
    );
    assert_eq!(reset.status, 200, "{}", reset.body);
    let token = reset.body["path"]
        .as_str()
        .unwrap()
        .trim_start_matches("/web/invite/");
    let check = web(
        &a,
        "POST",
        "/web/api/invite/check",
        None,
        None,
        Some(&json!({"token": token})),
    );
    assert_eq!(check.body["reset"], true, "{}", check.body);
    let gone = web(&a, "GET", "/web/api/resources", Some(&rita), None, None);
    assert_eq!(gone.status, 401, "{}", gone.body);
    std::thread::sleep(Duration::from_secs(4).saturating_sub(clock::since(started)));
    let seen = web(&a, "GET", "/web/api/users", Some(&expiring), None, None);
    assert_eq!(seen.status, 401, "{}", seen.body);
    assert_eq!(seen.body["code"], "expired", "{}", seen.body);
    assert!(
        !a.ok(&["admin", "users", "ls"])
            .contains("made-by-a-refused-call")
    );
}
