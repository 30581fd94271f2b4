//! SAML 2.0 single sign-on end to end against a real IdP: Debian's simplesamlphp 1.19 under
//! PHP's built-in server (`tests/fixtures/saml-idp/start.sh`, PEERS §8b), its login page driven
//! in headless Chromium (`tests/fixtures/saml-idp/login.mjs`; where Chromium is absent, by the
//! stdlib `login.py`), with the real binary:
//! `hop login --auth saml-test --browser none` as a non-admin SSO user gets the roles and
//! traits its attributes map to and lists the node its role reaches (`hop ls`).
//!
//! Refused, each with a clear error and a failed `user.login` event (`method: saml`), by
//! posting to the proxy's ACS directly: the SAMLResponse the browser posted, replayed; the
//! same with an attribute altered (the digest), with the signed assertion wrapped beside an
//! unsigned one, and with a DOCTYPE declaring an entity. Attributes that map to no role are
//! refused too. The response checks one by one (expiry, audience, recipient, unknown
//! signer, SHA-1, every prefix) are `hop_saml`'s unit tests over captured simplesamlphp
//! responses.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::clock;
use crate::harness::*;
use crate::ssh::{events, start_node};

const NODE: &str = "saml-node";

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/saml-idp")
}

/// Whether Chromium and playwright-core are installed: the IdP's pages are then driven in
/// headless Chromium (`login.mjs`), else by the stdlib fallback `login.py` (said so).
fn chromium() -> bool {
    let chromium = std::env::var("HOP_CHROMIUM").unwrap_or("/usr/bin/chromium".into());
    let ok = Path::new(&chromium).exists()
        && PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../web/tests/node_modules/playwright-core")
            .exists();
    if !ok {
        eprintln!(
            "NOTE: Chromium or playwright-core is not installed: the IdP's pages are driven by login.py"
        );
    }
    ok
}

/// Whether simplesamlphp and PHP (with DOM) are installed (else the test says SKIP, and why).
fn installed() -> bool {
    let php = Command::new("php")
        .arg("-m")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l == "dom")
        })
        .unwrap_or(false);
    let missing = [
        (
            !Path::new("/usr/share/simplesamlphp/www").exists(),
            "simplesamlphp",
        ),
        (!php, "php-cli with php-xml"),
    ];
    let absent: Vec<&str> = missing.iter().filter(|m| m.0).map(|m| m.1).collect();
    if !absent.is_empty() {
        eprintln!(
            "SKIP: {} not installed (scripts/test installs them)",
            absent.join(", ")
        );
    }
    absent.is_empty()
}

struct Idp {
    dir: PathBuf,
    url: String,
}

impl Drop for Idp {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("php.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

fn start_idp(dir: &Path, acs: &str) -> Idp {
    let port = free_port();
    let idp_dir = dir.join("saml-idp");
    let out = Command::new("sh")
        .arg(fixture_dir().join("start.sh"))
        .args([idp_dir.to_str().unwrap(), &port.to_string(), acs, acs])
        .env("UNIX_LOGIN", OS_LOGIN)
        .output()
        .unwrap();
    assert!(out.status.success(), "start.sh: {}", stderr(&out));
    Idp {
        dir: idp_dir,
        url: format!("http://127.0.0.1:{port}"),
    }
}

/// `hop login --auth saml-test --browser none` as `home`, the IdP's page driven in Chromium
/// as `user`; returns hop's success, stdout, stderr and what the browser reported.
fn saml_login(
    a: &Appliance,
    home: &Path,
    user: &str,
    password: &str,
) -> (bool, String, String, serde_json::Value) {
    let mut child = Command::new(HOP)
        .args([
            "login",
            "--proxy",
            &a.addr,
            "--ca-pin",
            &a.pin,
            "--auth",
            "saml-test",
            "--browser",
            "none",
        ])
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
    let mut browser = serde_json::Value::Null;
    if let Some(url) = url {
        let r = if chromium() {
            Command::new("node")
                .args(["login.mjs", &url, user, password])
                .current_dir(fixture_dir())
                .output()
                .unwrap()
        } else {
            Command::new("python3")
                .args(["login.py", &url, user, password])
                .current_dir(fixture_dir())
                .output()
                .unwrap()
        };
        assert!(r.status.success(), "login driver: {}", stderr(&r));
        browser = serde_json::from_str(stdout(&r).lines().last().unwrap_or("{}")).unwrap();
        eprintln!(
            "login driver: at {} error {} text {}",
            browser["url"]
                .as_str()
                .unwrap_or("")
                .split('?')
                .next()
                .unwrap_or(""),
            browser["error"],
            browser["text"]
                .as_str()
                .unwrap_or("")
                .chars()
                .take(200)
                .collect::<String>()
        );
        if browser["samlResponse"].is_null() {
            let _ = child.kill();
        }
    }
    std::io::Read::read_to_string(&mut out, &mut printed).unwrap();
    let rest = child.wait_with_output().unwrap();
    (
        rest.status.success(),
        printed,
        String::from_utf8_lossy(&rest.stderr).into_owned(),
        browser,
    )
}

/// POSTs `SAMLResponse=b64` to the ACS as an IdP's form would; returns (HTTP status, body).
fn post_acs(acs: &str, b64: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sk", "-w", "\n%{http_code}", "--data-urlencode"])
        .arg(format!("SAMLResponse={b64}"))
        .arg(acs)
        .output()
        .unwrap();
    let text = stdout(&out);
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn failed_with(a: &Appliance, reason: &str) -> bool {
    events(a, "user.login")
        .iter()
        .any(|e| e["method"] == "saml" && e["success"] == false && e["reason"] == reason)
}

#[test]
fn saml_login_maps_attributes_lists_nodes_and_refuses_forgeries() {
    let started = clock::monotonic_now();
    if !installed() {
        return;
    }
    os_login();
    let a = Appliance::start(NO_SECOND_FACTOR);
    let acs = format!("https://{}/v1/webapi/saml/acs/saml-test", a.addr);
    let idp = start_idp(a.dir.path(), &acs);
    let resources = format!(
        "kind: role
version: v7
metadata: {{name: saml-dev}}
spec:
  allow:
    logins: ['{{{{external.unix_login}}}}']
    node_labels: {{env: saml}}
---
kind: saml
version: v2
metadata: {{name: saml-test}}
spec:
  display: Test IdP
  entity_descriptor_url: {}/saml2/idp/metadata.php
  acs: {acs}
  attributes_to_roles:
  - {{name: groups, value: 'dev*', roles: [saml-dev]}}
  signing_key_pair:
    private_key: \"-----BEGIN PRIVATE KEY-----\\nnot-a-real-key-but-secret\\n-----END PRIVATE KEY-----\"
    cert: \"-----BEGIN CERTIFICATE-----\\nMIIB\\n-----END CERTIFICATE-----\"
",
        idp.url
    );
    let file = a.dir.path().join("saml.yaml");
    std::fs::write(&file, resources).unwrap();
    a.ok(&["admin", "create", "-f", file.to_str().unwrap()]);
    let shown = a.ok(&["admin", "get", "saml/saml-test"]);
    assert!(
        shown.contains("/v1/webapi/saml/acs/saml-test") && !shown.contains("not-a-real-key"),
        "{shown}"
    );
    let listed = Command::new("curl")
        .args(["-sk", &format!("https://{}/web/api/sso/connectors", a.addr)])
        .output()
        .unwrap();
    assert!(
        stdout(&listed).contains(r#""name":"saml-test""#)
            && stdout(&listed).contains(r#""type":"saml""#),
        "{}",
        stdout(&listed)
    );
    // The web login page's button starts a SAML login: to the IdP with an AuthnRequest, and
    // the browser-bound cookie set.
    let web_start = Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-D", "-"])
        .arg(format!(
            "https://{}/v1/webapi/saml/login?connector=saml-test",
            a.addr
        ))
        .output()
        .unwrap();
    let head = stdout(&web_start).to_ascii_lowercase();
    assert!(
        head.lines().next().is_some_and(|l| l.contains(" 302"))
            && head.contains(&format!(
                "location: {}/saml2/idp/ssoservice.php?samlrequest=",
                idp.url
            ))
            && head.contains("set-cookie: __host-hop_sso="),
        "{head}"
    );
    let _node = start_node(
        &a,
        &a.dir.path().join("node"),
        &a.join_token("node"),
        NODE,
        "env=saml",
    );

    // alice: groups devs → saml-dev; her attributes are her traits; the NameID her name.
    let home = a.dir.path().join("home-alice");
    let t0 = clock::monotonic_now();
    let (ok, out, err, browser) = saml_login(&a, &home, "alice", "alice-pass");
    eprintln!("the SAML login took {:?}", clock::monotonic_now() - t0);
    assert!(ok, "hop login --auth saml-test: {out}\n{err}\n{browser}");
    assert!(out.contains("Logged in as alice@example.test"), "{out}");
    assert!(out.contains("saml-dev") && out.contains(OS_LOGIN), "{out}");
    assert!(
        out.contains("groups=devs,staff") && out.contains(&format!("unix_login={OS_LOGIN}")),
        "{out}"
    );
    let visited = browser["visited"].to_string();
    assert!(
        visited.contains("/saml2/idp/SSOService.php?SAMLRequest="),
        "{visited}"
    );
    assert!(
        visited.contains("/v1/webapi/saml/acs/saml-test"),
        "{visited}"
    );
    let posted = browser["samlResponse"].as_str().unwrap().to_string();

    // The SSO user lists the node its mapped role reaches.
    let deadline = clock::monotonic_now() + Duration::from_secs(30);
    loop {
        let out = hop_in(&home, &["ls"]);
        if out.status.success() && stdout(&out).contains(NODE) {
            break;
        }
        assert!(
            clock::monotonic_now() < deadline,
            "hop ls as the SAML user: {}{}",
            stdout(&out),
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
        user.contains("\"saml\"") && user.contains("saml-test"),
        "{user}"
    );
    assert!(
        events(&a, "user.login")
            .iter()
            .any(|e| e["method"] == "saml"
                && e["success"] == true
                && e["user"] == "alice@example.test"
                && e["connector"] == "saml-test")
    );

    // The response the browser posted, replayed.
    let (status, body) = post_acs(&acs, &posted);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("already used"), "{body}");
    assert!(failed_with(&a, "SAML assertion replayed"));

    let xml = String::from_utf8(data_encoding::BASE64.decode(posted.as_bytes()).unwrap()).unwrap();
    let b64 = |x: &str| data_encoding::BASE64.encode(x.as_bytes());
    // An attribute altered under the signature.
    let tampered = xml.replacen(">staff<", ">admins<", 1);
    assert_ne!(tampered, xml);
    let (status, body) = post_acs(&acs, &b64(&tampered));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("was altered"), "{body}");
    assert!(failed_with(&a, "SAML signature invalid"));
    // The signature value altered.
    let at = xml.find("<ds:SignatureValue>").unwrap() + 30;
    let mut bad_sig = xml.clone();
    let c = if &bad_sig[at..=at] == "A" { "B" } else { "A" };
    bad_sig.replace_range(at..=at, c);
    let (status, body) = post_acs(&acs, &b64(&bad_sig));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("does not verify"), "{body}");
    // The signed assertion wrapped: moved into Extensions, an unsigned one put where a
    // careless reader would look.
    let s = xml.find("<saml:Assertion").unwrap();
    let e = xml.find("</saml:Assertion>").unwrap() + "</saml:Assertion>".len();
    let signed = &xml[s..e];
    let (ss, se) = (
        signed.find("<ds:Signature").unwrap(),
        signed.find("</ds:Signature>").unwrap() + "</ds:Signature>".len(),
    );
    let evil = format!("{}{}", &signed[..ss], &signed[se..])
        .replacen(" ID=\"", " ID=\"evil", 1)
        .replace(">devs<", ">admins<");
    let wrapped = xml.replacen(
        signed,
        &format!("<samlp:Extensions>{signed}</samlp:Extensions>{evil}"),
        1,
    );
    let (status, body) = post_acs(&acs, &b64(&wrapped));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("exactly one is accepted"), "{body}");
    assert!(failed_with(&a, "SAML signature wrapping"));
    // An external entity.
    let xxe = format!(
        "<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>{}",
        xml.replacen(">alice<", ">&x;<", 1)
    );
    let (status, body) = post_acs(&acs, &b64(&xxe));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("document type"), "{body}");
    assert!(failed_with(&a, "SAML DTD or entity"));
    // No SAMLResponse at all.
    let (status, _) = post_acs(&acs, "");
    assert_eq!(status, 400);

    // Attributes that map to no role.
    let (ok, _, err, _) = saml_login(
        &a,
        &a.dir.path().join("home-mallory"),
        "mallory",
        "mallory-pass",
    );
    assert!(!ok && err.contains("map to no role"), "{err}");
    assert!(failed_with(&a, "no role mapped"));
    eprintln!("sso_saml took {:?}", clock::monotonic_now() - started);
}
