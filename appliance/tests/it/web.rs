//! The web UI end to end in real headless Chromium (Debian's package, driven by playwright-core
//! through `web/tests/driver.mjs`), as a user with only the `access` role: login with password
//! and one-time code, the resources page (a node, an application and a database listed, a node
//! the role denies not), search, markup in labels shown as text, the cookie's attributes, CSRF,
//! logout, and a lock that sends an open page back to the login form within 5 s. Screenshots
//! are kept under `$CARGO_TARGET_DIR/tmp/web-artifacts/`. The web API helpers (curl) here are
//! shared with `web_matrix.rs`.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::clock;
use crate::harness::*;
use crate::ssh::{Killed, node_token, start_node};
use crate::web_browser::{Browser, artifacts};

/// The `access` preset with one change an operator may make: nodes labelled `env=restricted`
/// are denied.
const ACCESS: &str = "kind: role\nversion: v7\nmetadata:\n  name: access\nspec:\n  options:\n    max_session_ttl: 8h\n  allow:\n    logins: ['{{internal.logins}}']\n    node_labels: {'*': '*'}\n    app_labels: {'*': '*'}\n    db_labels: {'*': '*'}\n    db_users: ['{{internal.db_users}}']\n    db_names: ['{{internal.db_names}}']\n  deny:\n    node_labels: {env: restricted}\n";

/// What an XSS attempt in a node label looks like: if either ever runs, `window.__xss` is set.
const XSS_IMG: &str = "<img src=x onerror=window.__xss=1>";
const XSS_SCRIPT: &str = "<script>window.__xss=2</script>";

/// Creates `name` with `roles` and extra `hop admin users add` flags, signs up; the TOTP secret.
pub(crate) fn add_user(a: &Appliance, name: &str, roles: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "admin", "users", "add", name, "--roles", roles, "--logins", OS_LOGIN, "--format", "json",
    ];
    args.extend_from_slice(extra);
    let v: Value = serde_json::from_str(a.ok(&args).trim()).unwrap();
    let secret_file = a.dir.path().join(format!("{name}.totp"));
    let out = a.hop_stdin(
        &[
            "signup",
            v["token"].as_str().unwrap(),
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
    assert!(out.status.success(), "signup: {}", stderr(&out));
    std::fs::read_to_string(secret_file)
        .unwrap()
        .trim()
        .to_string()
}

/// A web answer: status, JSON body, `Set-Cookie` values.
pub(crate) struct Answer {
    pub status: u16,
    pub body: Value,
    pub cookies: Vec<String>,
}

/// One request to the web API with curl, from this origin (`Origin` set) unless `origin` says
/// otherwise.
pub(crate) fn web(
    a: &Appliance,
    method: &str,
    path: &str,
    token: Option<&str>,
    csrf: Option<&str>,
    body: Option<&Value>,
) -> Answer {
    let mut cmd = Command::new("curl");
    cmd.args(["-sSk", "-i", "--max-time", "20", "-X", method])
        .arg(format!("https://{}{path}", a.addr))
        .args(["-H", &format!("Origin: https://{}", a.addr)]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Cookie: __Host-hop_session={t}")]);
    }
    if let Some(c) = csrf {
        cmd.args(["-H", &format!("X-Hop-Csrf: {c}")]);
    }
    if let Some(b) = body {
        cmd.args([
            "-H",
            "Content-Type: application/json",
            "--data",
            &b.to_string(),
        ]);
    }
    let out = cmd.output().unwrap();
    let text = stdout(&out);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let cookies = head
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("set-cookie")
                .then(|| v.trim().to_string())
        })
        .collect();
    // No answer at all: say what curl saw, so a failure names it.
    let body = if status == 0 {
        Value::String(format!(
            "no HTTP answer: curl {:?}: {}",
            out.status.code(),
            stderr(&out)
        ))
    } else {
        serde_json::from_str(body).unwrap_or(Value::Null)
    };
    Answer {
        status,
        body,
        cookies,
    }
}

/// A web session made over the API: (token, CSRF token).
pub(crate) fn web_login(
    a: &Appliance,
    user: &str,
    secret: &str,
    ttl: Option<u64>,
) -> (String, String) {
    let mut form = json!({"user": user, "password": PASSWORD, "otp": totp(secret, 30)});
    if let Some(t) = ttl {
        form["ttl_seconds"] = json!(t);
    }
    let r = web(a, "POST", "/web/api/login", None, None, Some(&form));
    assert_eq!(r.status, 200, "web login of {user}: {}", r.body);
    let cookie = r.cookies.first().expect("a session cookie");
    let token = cookie
        .strip_prefix("__Host-hop_session=")
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_string();
    (token, r.body["csrf_token"].as_str().unwrap().to_string())
}

/// The cluster of the browser test: `access` with a deny on `env=restricted`, two nodes (one
/// restricted, one with HTML in its labels), an application and a database.
struct WebCluster {
    a: Appliance,
    _agents: Vec<Killed>,
}

fn start_agent(a: &Appliance, name: &str, role: &str, flags: &[&str]) -> Killed {
    let data = a.dir.path().join(name);
    let child = Command::new(HOP)
        .args([
            "start", "--roles", role, "--proxy", &a.addr, "--ca-pin", &a.pin,
        ])
        .args(["--token", &a.join_token(role), "--data-dir"])
        .arg(&data)
        .args(flags)
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(data.with_extension("log")).unwrap(),
        ))
        .spawn()
        .unwrap();
    Killed(child)
}

impl WebCluster {
    fn start() -> Self {
        os_login();
        let a = Appliance::start("");
        let roles = a.dir.path().join("access.yaml");
        std::fs::write(&roles, ACCESS).unwrap();
        a.ok(&["admin", "create", "--force", "-f", roles.to_str().unwrap()]);
        let open = start_node(
            &a,
            &a.dir.path().join("node1"),
            &node_token(&a),
            "node1",
            &format!("env=dev,note={XSS_IMG},xss={XSS_SCRIPT}"),
        );
        let restricted = start_node(
            &a,
            &a.dir.path().join("vault"),
            &node_token(&a),
            "vault",
            "env=restricted",
        );
        let app = start_agent(
            &a,
            "app1",
            "app",
            &["--app", "name=wiki,uri=tcp://127.0.0.1:9,labels=team=docs"],
        );
        let db = start_agent(
            &a,
            "db1",
            "db",
            &[
                "--db",
                "name=orders,uri=postgres://127.0.0.1:9,labels=env=dev",
            ],
        );
        Self {
            a,
            _agents: vec![open, restricted, app, db],
        }
    }
}

/// Waits until agent `name` (started with its data dir `name`) is connected: its log says its
/// tunnel is up, and `hop admin inventory ls` lists its host id.
fn wait_connected(a: &Appliance, name: &str) {
    let log = a.dir.path().join(format!("{name}.log"));
    let deadline = clock::monotonic_now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let host_id = text
            .lines()
            .find(|l| l.contains("tunnel to the proxy is up"))
            .and_then(|l| {
                // The host id is the line's UUID (the log may colour the field's name).
                l.split(|c: char| !(c.is_ascii_hexdigit() || c == '-'))
                    .find(|w| w.len() == 36 && w.matches('-').count() == 4)
            })
            .map(str::to_string);
        if host_id.is_some_and(|h| stdout(&a.hop(&["admin", "inventory", "ls"])).contains(&h)) {
            return;
        }
        assert!(
            clock::monotonic_now() < deadline,
            "{name} never connected:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn rows(answer: &Value) -> Vec<Value> {
    answer["rows"].as_array().unwrap().clone()
}

fn named<'a>(rows: &'a [Value], name: &str) -> Option<&'a Value> {
    rows.iter().find(|r| r["name"] == name)
}

#[test]
fn the_web_ui_in_chromium_for_an_access_user() {
    let c = WebCluster::start();
    let a = &c.a;
    let shots = artifacts("access_user");
    let Some(mut b) = Browser::start("driver.mjs", &format!("https://{}", a.addr), &shots) else {
        return;
    };
    let wanda = add_user(
        a,
        "wanda",
        "access",
        &["--trait", "db_users=reader", "--trait", "db_names=shop"],
    );
    // `/` leads to the page, which shows the login form.
    let opened = b.send(json!({"do": "open", "who": "w", "path": "/"}));
    assert!(
        opened["url"].as_str().unwrap().ends_with("/web/login"),
        "{opened}"
    );
    b.send(json!({"do": "screenshot", "who": "w", "name": "login"}));
    // A wrong code, and a user name made of markup: refused, the message shown as text.
    let wrong = b.send(
        json!({"do": "login", "who": "w", "user": XSS_IMG, "password": PASSWORD, "otp": "000000"}),
    );
    assert!(
        wrong["error"]
            .as_str()
            .unwrap()
            .contains("invalid user name, password or one-time code"),
        "{wrong}"
    );
    // Password and code: the resources page.
    let ok = b.send(json!({"do": "login", "who": "w", "user": "wanda", "password": PASSWORD, "otp": totp(&wanda, 30)}));
    assert_eq!(ok["error"], "", "{ok}");
    assert!(
        ok["who"].as_str().unwrap().contains("wanda (access)"),
        "{ok}"
    );
    let listed =
        b.send(json!({"do": "resources", "who": "w", "want": ["node1", "wiki", "orders"]}));
    let all = rows(&listed);
    let node = named(&all, "node1").unwrap_or_else(|| panic!("node1 not listed: {listed}"));
    assert!(node["text"].as_str().unwrap().contains(OS_LOGIN), "{node}");
    assert!(named(&all, "wiki").is_some(), "{listed}");
    let db = named(&all, "orders").unwrap_or_else(|| panic!("orders not listed: {listed}"));
    assert!(db["text"].as_str().unwrap().contains("reader"), "{db}");
    assert!(db["text"].as_str().unwrap().contains("shop"), "{db}");
    // The node the role denies is not listed, though its agent is connected (`hop admin` sees
    // it, and the page, loaded again, still does not).
    wait_connected(a, "vault");
    let again = rows(&b.send(json!({"do": "resources", "who": "w", "want": ["node1"]})));
    assert!(named(&again, "vault").is_none(), "{again:?}");
    assert!(named(&all, "vault").is_none(), "{listed}");
    // Markup in labels is text: shown as written, no element made of it, nothing ran.
    let text = node["text"].as_str().unwrap();
    assert!(
        text.contains(XSS_IMG) && text.contains(XSS_SCRIPT),
        "{node}"
    );
    let tags: Vec<&str> = node["elements"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        !tags.contains(&"img") && !tags.contains(&"script"),
        "{tags:?}"
    );
    assert_eq!(listed["xss"], Value::Null, "a label's markup ran");
    b.send(json!({"do": "screenshot", "who": "w", "name": "resources"}));
    // The search box filters the rows.
    let found = rows(&b.send(json!({"do": "search", "who": "w", "q": "shop"})));
    let shown: Vec<&Value> = found.iter().filter(|r| r["hidden"] == false).collect();
    assert_eq!(shown.len(), 1, "{found:?}");
    assert_eq!(shown[0]["name"], "orders");
    b.send(json!({"do": "screenshot", "who": "w", "name": "search"}));
    // The cookie: HttpOnly (no script sees it), Secure, SameSite=Strict, __Host- prefixed.
    let jar = b.send(json!({"do": "cookies", "who": "w"}));
    let cookie = jar["cookies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "__Host-hop_session")
        .unwrap_or_else(|| panic!("{jar}"))
        .clone();
    assert_eq!(cookie["httpOnly"], true, "{cookie}");
    assert_eq!(cookie["secure"], true, "{cookie}");
    assert_eq!(cookie["sameSite"], "Strict", "{cookie}");
    assert_eq!(jar["script_sees"], "", "{jar}");
    let token = cookie["value"].as_str().unwrap().to_string();
    assert_eq!(
        web(a, "GET", "/web/api/resources", Some(&token), None, None).status,
        200
    );
    // A state-changing request without the CSRF token is refused, even from the page itself.
    let forged =
        b.send(json!({"do": "fetch", "who": "w", "method": "POST", "path": "/web/api/logout"}));
    assert_eq!(forged["status"], 403, "{forged}");
    assert!(
        forged["body"].as_str().unwrap().contains("cross_site"),
        "{forged}"
    );
    // Logout ends the web session: the page shows the login form, the cookie no longer works.
    let out = b.send(json!({"do": "logout", "who": "w"}));
    assert!(
        out["notice"].as_str().unwrap().contains("logged out"),
        "{out}"
    );
    let after = web(a, "GET", "/web/api/resources", Some(&token), None, None);
    assert_eq!(after.status, 401, "{}", after.body);
    b.send(json!({"do": "screenshot", "who": "w", "name": "logged-out"}));
    // A lock ends another user's open session within 5 s: the page is back at the login form
    // and says why.
    let lara = add_user(a, "lara", "access", &[]);
    b.send(json!({"do": "open", "who": "l", "path": "/web"}));
    b.send(json!({"do": "login", "who": "l", "user": "lara", "password": PASSWORD, "otp": totp(&lara, 30)}));
    b.send(json!({"do": "resources", "who": "l", "want": ["node1"]}));
    a.ok(&["admin", "lock", "--user", "lara", "--message", "web test"]);
    let ended = b.send(json!({"do": "wait_login", "who": "l", "ms": 5000}));
    eprintln!(
        "the locked user's page was back at the login form {} ms after the lock",
        ended["after_ms"]
    );
    assert!(
        ended["notice"].as_str().unwrap().contains("locked"),
        "{ended}"
    );
    b.send(json!({"do": "screenshot", "who": "l", "name": "locked"}));
    let errors = b.send(json!({"do": "errors"}));
    // The page's own requests that the server refused (401 after logout and lock) are the only
    // console errors allowed.
    for e in errors["errors"].as_array().unwrap() {
        assert!(
            e.as_str().unwrap().contains("401") || e.as_str().unwrap().contains("403"),
            "{errors}"
        );
    }
}
