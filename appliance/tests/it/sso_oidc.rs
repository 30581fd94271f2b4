//! OIDC single sign-on end to end against a real OpenID provider (panva's `oidc-provider`, its
//! dev login and consent pages driven without a browser by `tests/fixtures/oidc-idp/login.mjs`)
//! with the real binary: `hop login --auth oidc-test --browser none` as a non-admin SSO user
//! gets the roles and traits its claims map to, and reaches a node as the ordinary login its
//! `unix_login` claim names (a role template, `{{external.unix_login}}`).
//!
//! Refused, each with a clear error and a failed `user.login` event (`method: oidc`): a
//! callback with a forged state, the same callback replayed, a client redirect that is not
//! loopback (`--callback`), claims that map to no role, a name a local user holds, and a user
//! locked by name (whose certificate is refused too). The web UI's login page lists the
//! connector, and its button's flow (browserless, and in headless Chromium where installed)
//! ends in a web session; a result without the browser's binding cookie makes none.
//!
//! The ID token's own refusals are `hop_api::jose`'s unit tests (tokens signed by test keys),
//! and end to end against a forging stand-in provider: tampered, signed by an unpublished key,
//! expired, another audience, nonce or issuer, `alg: none`. GitHub logins run against a
//! stand-in for GitHub Enterprise's endpoints.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::clock;
use crate::harness::*;
use crate::ssh::{Killed, events, start_node};

const NODE: &str = "sso-node";

fn idp_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/oidc-idp")
}

/// Whether the provider's package is installed (else the tests say SKIP).
fn idp_installed() -> bool {
    let dir = idp_dir();
    let ok = dir.join("node_modules/oidc-provider").exists();
    if !ok {
        eprintln!(
            "SKIP: oidc-provider is not installed (scripts/test runs npm ci in {})",
            dir.display()
        );
    }
    ok
}

/// Runs `node SCRIPT ARGS` in the fixture directory until it prints `ready`; its output goes
/// to `dir` (the test's temp dir).
fn start_script(dir: &Path, script: &str, args: &[String], ready: &str) -> Killed {
    // The output goes to a file: a pipe closed under it would end the process.
    let log = dir.join(format!("{script}.log"));
    let child = Command::new("node")
        .arg(script)
        .args(args)
        .current_dir(idp_dir())
        .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
        .stderr(Stdio::from(
            std::fs::File::create(log.with_extension("err")).unwrap(),
        ))
        .spawn()
        .unwrap();
    let deadline = clock::monotonic_now() + Duration::from_secs(15);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains(ready)
    {
        assert!(
            clock::monotonic_now() < deadline,
            "{script} did not start: {}",
            std::fs::read_to_string(log.with_extension("err")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Killed(child)
}

/// Starts the OpenID provider on a free port; `None` (a SKIP) where it is not installed.
fn start_idp(dir: &Path, redirect: &str) -> Option<(Killed, String)> {
    if !idp_installed() {
        return None;
    }
    let port = free_port();
    let accounts = serde_json::json!({
        "alice": {"groups": ["devs", "staff"], "unix_login": OS_LOGIN},
        "mallory": {"groups": ["outsiders"]},
        "carol": {"groups": ["devs"], "unix_login": OS_LOGIN},
    });
    let idp = start_script(
        dir,
        "idp.mjs",
        &[port.to_string(), redirect.to_string(), accounts.to_string()],
        "OIDC issuer",
    );
    Some((idp, format!("http://127.0.0.1:{port}")))
}

fn node_js(args: &[&str]) -> serde_json::Value {
    let out = Command::new("node")
        .arg("login.mjs")
        .args(args)
        .current_dir(idp_dir())
        // The proxy's certificate is the test cluster's own.
        .env("NODE_TLS_REJECT_UNAUTHORIZED", "0")
        .env("NODE_NO_WARNINGS", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "login.mjs: {}", stderr(&out));
    serde_json::from_str(stdout(&out).lines().last().unwrap_or("{}")).unwrap()
}

/// Runs `hop login --auth oidc-test --browser none` (plus `extra`) as `home`, drives the
/// provider's pages as `who`; returns hop's exit status, stdout, stderr and the URLs visited.
fn sso_login(
    a: &Appliance,
    connector: &str,
    home: &Path,
    who: &str,
    extra: &[&str],
) -> (bool, String, String, Vec<String>) {
    let mut child = Command::new(HOP)
        .args([
            "login",
            "--proxy",
            &a.addr,
            "--ca-pin",
            &a.pin,
            "--auth",
            connector,
            "--browser",
            "none",
        ])
        .args(extra)
        .env("HOP_HOME", home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut printed = String::new();
    let mut url = None;
    for _ in 0..5 {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            break;
        }
        printed.push_str(&line);
        if let Some(u) = line.trim().strip_prefix("http") {
            url = Some(format!("http{u}"));
            break;
        }
    }
    let mut visited = Vec::new();
    if let Some(url) = url {
        let r = node_js(&[&url, who]);
        let last = r["visited"]
            .as_array()
            .and_then(|v| v.last())
            .and_then(|u| u.as_str())
            .unwrap_or("");
        eprintln!(
            "login.mjs: status {} at {} {}",
            r["status"],
            last.split('?').next().unwrap_or(""),
            r["text"]
                .as_str()
                .unwrap_or("")
                .chars()
                .take(300)
                .collect::<String>()
        );
        if r["status"] == 0 {
            let _ = child.kill();
        }
        visited = r["visited"]
            .as_array()
            .map(|v| {
                v.iter()
                    .filter_map(|u| u.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
    }
    std::io::Read::read_to_string(&mut out, &mut printed).unwrap();
    let rest = child.wait_with_output().unwrap();
    (
        rest.status.success(),
        printed,
        String::from_utf8_lossy(&rest.stderr).into_owned(),
        visited,
    )
}

fn oidc_failures(a: &Appliance) -> Vec<serde_json::Value> {
    events(a, "user.login")
        .into_iter()
        .filter(|e| (e["method"] == "oidc" || e["method"] == "sso") && e["success"] == false)
        .collect()
}

fn failure_with(a: &Appliance, reason: &str) -> bool {
    oidc_failures(a).iter().any(|e| e["reason"] == reason)
}

#[test]
fn oidc_login_maps_claims_reaches_a_node_and_refuses_forgeries() {
    let started = clock::monotonic_now();
    os_login();
    let a = Appliance::start(NO_SECOND_FACTOR);
    let redirect = format!("https://{}/v1/webapi/oidc/callback", a.addr);
    let Some((_idp, issuer)) = start_idp(a.dir.path(), &redirect) else {
        return;
    };
    let resources = format!(
        "kind: role
version: v7
metadata: {{name: sso-dev}}
spec:
  allow:
    logins: ['{{{{external.unix_login}}}}']
    node_labels: {{env: sso}}
---
kind: oidc
version: v3
metadata: {{name: oidc-test}}
spec:
  issuer_url: {issuer}
  client_id: hop-proxy
  client_secret: hop-proxy-secret
  redirect_url: {redirect}
  scope: [email, groups]
  max_age: 1h
  claims_to_roles:
  - {{claim: groups, value: 'dev*', roles: [sso-dev]}}
"
    );
    let file = a.dir.path().join("sso.yaml");
    std::fs::write(&file, resources).unwrap();
    a.ok(&["admin", "create", "-f", file.to_str().unwrap()]);
    let shown = a.ok(&["admin", "get", "oidc/oidc-test"]);
    assert!(
        shown.contains("hop-proxy") && !shown.contains("hop-proxy-secret"),
        "{shown}"
    );
    let _node = start_node(
        &a,
        &a.dir.path().join("node"),
        &a.join_token("node"),
        NODE,
        "env=sso",
    );

    // alice: groups devs → sso-dev; her claims are her traits.
    let home = a.dir.path().join("home-alice");
    let (ok, out, err, visited) = sso_login(&a, "oidc-test", &home, "alice", &[]);
    assert!(ok, "hop login --auth: {out}\n{err}");
    assert!(out.contains("Logged in as alice@example.test"), "{out}");
    assert!(out.contains("sso-dev") && out.contains(OS_LOGIN), "{out}");
    assert!(
        out.contains("groups=devs,staff") && out.contains(&format!("unix_login={OS_LOGIN}")),
        "{out}"
    );
    let callback = visited
        .iter()
        .find(|u| u.contains("/v1/webapi/oidc/callback?"))
        .expect("the browser went through the proxy's callback")
        .clone();
    // The redirect to the client carried only the sealed result.
    let to_client = visited
        .iter()
        .find(|u| u.starts_with("http://127.0.0.1:") && u.contains("/callback?"))
        .unwrap();
    assert!(to_client.contains("response=") && !to_client.contains("BEGIN CERTIFICATE"));

    // An ordinary login on a node the mapped role reaches.
    let deadline = clock::monotonic_now() + Duration::from_secs(30);
    loop {
        let out = hop_in(
            &home,
            &["ssh", &format!("{OS_LOGIN}@{NODE}"), "echo", "sso-ok"],
        );
        if out.status.success() && stdout(&out).contains("sso-ok") {
            break;
        }
        assert!(
            clock::monotonic_now() < deadline,
            "hop ssh as the SSO user: {}",
            stderr(&out)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let user = a.ok(&[
        "admin",
        "get",
        "user/alice@example.test",
        "--format",
        "json",
    ]);
    assert!(
        user.contains("\"connector\"") && user.contains("oidc-test"),
        "{user}"
    );

    // The web UI: the login page lists the connector; its button ends in a web session.
    let listed = node_js(&[
        "--get",
        &format!("https://{}/web/api/sso/connectors", a.addr),
    ]);
    assert!(
        listed["text"].as_str().unwrap().contains("\"oidc-test\""),
        "{listed}"
    );
    let web = node_js(&[
        &format!(
            "https://{}/v1/webapi/oidc/login?connector=oidc-test",
            a.addr
        ),
        "alice",
        &format!("https://{}/web/api/session", a.addr),
    ]);
    assert_eq!(web["then"]["status"], 200, "{web}");
    let session = web["then"]["text"].as_str().unwrap();
    assert!(
        session.contains("alice@example.test") && session.contains("sso-dev"),
        "{web}"
    );
    // A login started under a `Host` that is not the proxy's is refused: the sealed result
    // would go back to that host.
    let forged = std::process::Command::new("curl")
        .args([
            "-sk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "Host: evil.example",
        ])
        .arg(format!(
            "https://{}/v1/webapi/oidc/login?connector=oidc-test",
            a.addr
        ))
        .output()
        .unwrap();
    assert_eq!(stdout(&forged).trim(), "421", "{}", stderr(&forged));
    // The same in headless Chromium: the page shows the button; the flow ends on the
    // resources page as the SSO user.
    if let Some(mut browser) = crate::web_browser::Browser::start(
        "driver.mjs",
        &format!("https://{}", a.addr),
        &crate::web_browser::artifacts("sso_oidc"),
    ) {
        let r = browser.send(serde_json::json!({"do": "sso_login", "who": "alice",
            "connector": "oidc-test", "login": "alice"}));
        assert!(
            r["who"].as_str().unwrap().contains("alice@example.test"),
            "{r}"
        );
        assert!(r["buttons"].to_string().contains("oidc-test"), "{r}");
        // No script error on Hop's pages (the provider's dev pages fetch fonts from the
        // internet, and the page's first session check is a 401: console lines, not errors).
        let errors = browser.send(serde_json::json!({"do": "errors"}));
        let thrown: Vec<_> = errors["errors"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| !e.as_str().unwrap_or("").contains("console:"))
            .collect();
        assert!(thrown.is_empty(), "{errors}");
    }
    // A finish without the browser's binding cookie makes no session.
    let finish = web["visited"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u.as_str())
        .find(|u| u.contains("/web/sso/finish?"))
        .unwrap()
        .to_string();
    let stolen = node_js(&["--get", &finish]);
    assert_eq!(stolen["status"], 403, "{stolen}");

    // The callback replayed: the state worked once.
    let replay = node_js(&["--get", &callback]);
    assert_eq!(replay["status"], 403, "{replay}");
    assert!(
        replay["text"].as_str().unwrap().contains("already used"),
        "{replay}"
    );
    assert!(failure_with(&a, "unknown or replayed state"));
    // A forged state.
    let forged = format!(
        "https://{}/v1/webapi/oidc/callback?code=abc&state=forged",
        a.addr
    );
    let r = node_js(&["--get", &forged]);
    assert_eq!(r["status"], 403, "{r}");

    // A client redirect that is not loopback is refused before the provider is involved.
    let (ok, _, err, _) = sso_login(
        &a,
        "oidc-test",
        &home,
        "alice",
        &["--callback", "https://evil.example.com"],
    );
    assert!(!ok && err.contains("client redirect URL must be"), "{err}");
    assert!(failure_with(&a, "client redirect not allowed"));

    // Claims that map to no role.
    let (ok, _, err, _) = sso_login(
        &a,
        "oidc-test",
        &a.dir.path().join("home-mallory"),
        "mallory",
        &[],
    );
    assert!(!ok && err.contains("map to no role"), "{err}");
    assert!(failure_with(&a, "no role mapped"));

    // A local user's name is never taken over.
    add_password_user(&a, "carol@example.test", "access", OS_LOGIN);
    let (ok, _, err, _) = sso_login(
        &a,
        "oidc-test",
        &a.dir.path().join("home-carol"),
        "carol",
        &[],
    );
    assert!(!ok && err.contains("belongs to a local user"), "{err}");
    assert!(failure_with(&a, "name of a local user"));

    // A lock on the SSO user by name refuses the next SSO login.
    a.ok(&[
        "admin",
        "lock",
        "--user",
        "alice@example.test",
        "--message",
        "sso test",
    ]);
    let (ok, _, err, _) = sso_login(&a, "oidc-test", &home, "alice", &[]);
    assert!(!ok && err.contains("locked"), "{err}");
    // The certificate the SSO login gave is refused too (admission: locks by name).
    let out = hop_in(&home, &["ssh", &format!("{OS_LOGIN}@{NODE}"), "true"]);
    assert!(
        !out.status.success() && stderr(&out).contains("locked"),
        "{}",
        stderr(&out)
    );
    assert!(failure_with(&a, "locked"));

    let ok_events: Vec<_> = events(&a, "user.login")
        .into_iter()
        .filter(|e| e["method"] == "oidc" && e["success"] == true)
        .collect();
    // The CLI's, the browserless web flow's, and Chromium's where it is installed.
    assert!(ok_events.len() >= 2, "{ok_events:?}");
    for e in &ok_events {
        assert_eq!(e["connector"], "oidc-test");
        assert_eq!(e["user"], "alice@example.test");
    }
    assert!(
        ok_events.iter().any(|e| e["client"] == "web")
            && ok_events.iter().any(|e| e["client"] == "cli")
    );
    eprintln!("sso_oidc took {:?}", clock::monotonic_now() - started);
}

/// GitHub SSO against a stand-in for GitHub Enterprise's endpoints
/// (`tests/fixtures/oidc-idp/github-standin.mjs`: not GitHub): teams map to roles, the GitHub
/// login is the user, the teams are traits; a user in no mapped team is refused.
#[test]
fn github_login_through_a_stand_in_maps_teams() {
    if !idp_installed() {
        return;
    }
    let a = Appliance::start(NO_SECOND_FACTOR);
    let port = free_port();
    let teams = serde_json::json!({
        "octo": [["octocats", "admins"], ["octocats", "web"]],
        "stranger": [["elsewhere", "admins"]],
    });
    let _gh = start_script(
        a.dir.path(),
        "github-standin.mjs",
        &[
            port.to_string(),
            "gh-client".into(),
            "gh-secret".into(),
            teams.to_string(),
        ],
        "GitHub stand-in",
    );
    let resources = format!(
        "kind: role
version: v7
metadata: {{name: gh-dev}}
spec:
  allow:
    logins: [{OS_LOGIN}]
---
kind: github
version: v3
metadata: {{name: github}}
spec:
  client_id: gh-client
  client_secret: gh-secret
  display: GitHub
  redirect_url: https://{addr}/v1/webapi/github/callback
  endpoint_url: http://127.0.0.1:{port}
  api_endpoint_url: http://127.0.0.1:{port}/api/v3
  teams_to_roles:
  - {{organization: octocats, team: admins, roles: [gh-dev]}}
",
        addr = a.addr
    );
    let file = a.dir.path().join("github.yaml");
    std::fs::write(&file, resources).unwrap();
    a.ok(&["admin", "create", "-f", file.to_str().unwrap()]);
    assert!(
        !a.ok(&["admin", "get", "github/github"])
            .contains("gh-secret")
    );

    let (ok, out, err, _) = sso_login(&a, "github", &a.dir.path().join("home-octo"), "octo", &[]);
    assert!(ok, "{out}\n{err}");
    assert!(
        out.contains("Logged in as octo") && out.contains("gh-dev"),
        "{out}"
    );
    assert!(
        out.contains("github_teams=octocats/admins,octocats/web"),
        "{out}"
    );
    // The web login page's GitHub button, browserless.
    let web = node_js(&[
        &format!("https://{}/v1/webapi/github/login?connector=github", a.addr),
        "octo",
        &format!("https://{}/web/api/session", a.addr),
    ]);
    assert_eq!(web["then"]["status"], 200, "{web}");
    assert!(
        web["then"]["text"].as_str().unwrap().contains("gh-dev"),
        "{web}"
    );
    let status = hop_in(&a.dir.path().join("home-octo"), &["status"]);
    assert!(stdout(&status).contains("octo"), "{}", stderr(&status));

    let (ok, _, err, _) = sso_login(&a, "github", &a.dir.path().join("home-x"), "stranger", &[]);
    assert!(!ok && err.contains("map to no role"), "{err}");
    let logins = events(&a, "user.login");
    assert!(
        logins
            .iter()
            .any(|e| e["method"] == "github" && e["success"] == true && e["user"] == "octo")
    );
    assert!(logins.iter().any(|e| e["method"] == "github"
        && e["success"] == false
        && e["reason"] == "no role mapped"));
}

/// Broken ID tokens from a forging provider (`tests/fixtures/oidc-idp/forging-idp.mjs`: a
/// stand-in that signs what it is told to): each is refused with its reason, end to end, and
/// audited; a correct token from the same stand-in is accepted (the stand-in is right).
#[test]
fn forged_id_tokens_are_refused_with_their_reason() {
    if !idp_installed() {
        return;
    }
    let a = Appliance::start(NO_SECOND_FACTOR);
    let port = free_port();
    let _idp = start_script(
        a.dir.path(),
        "forging-idp.mjs",
        &[port.to_string(), "hop-proxy".into()],
        "forging OIDC issuer",
    );
    let resources = format!(
        "kind: role
version: v7
metadata: {{name: forge-dev}}
spec:
  allow:
    logins: [{OS_LOGIN}]
---
kind: oidc
version: v3
metadata: {{name: forging}}
spec:
  issuer_url: http://127.0.0.1:{port}
  client_id: hop-proxy
  client_secret: unused
  redirect_url: https://{addr}/v1/webapi/oidc/callback
  claims_to_roles:
  - {{claim: groups, value: devs, roles: [forge-dev]}}
",
        addr = a.addr
    );
    let file = a.dir.path().join("forging.yaml");
    std::fs::write(&file, resources).unwrap();
    a.ok(&["admin", "create", "-f", file.to_str().unwrap()]);
    let home = a.dir.path().join("home-forging");
    let (ok, out, err, _) = sso_login(&a, "forging", &home, "ok", &[]);
    assert!(ok && out.contains("forge-dev"), "{out}\n{err}");
    for (mode, why) in [
        ("tampered", "signature does not verify"),
        ("forged", "signature does not verify"),
        ("expired", "has expired"),
        ("audience", "not meant for this client"),
        ("nonce", "nonce does not match"),
        ("issuer", "issuer is not the connector's"),
        ("none", "algorithm \"none\" is not accepted"),
    ] {
        let (ok, _, err, _) = sso_login(&a, "forging", &home, mode, &[]);
        assert!(!ok && err.contains(why), "{mode}: {err}");
    }
    let refused = events(&a, "user.login")
        .into_iter()
        .filter(|e| e["success"] == false && e["reason"] == "ID token refused")
        .count();
    assert_eq!(refused, 7);
}
