//! The web application route on the real binary, without an agent: a TLS connection whose SNI
//! is `NAME.P` reaches the route (the proxy's certificate names `*.P`), a browser without an
//! application session is sent to the web UI's launch with a host-only state cookie, a
//! request naming another application on that connection gets 421, the JWKS is served at
//! `/.well-known/jwks.json`, and the launch API refuses an application no agent serves. The
//! flow against real upstreams through an agent is in the application end-to-end tests.

use std::process::Command;

use serde_json::{Value, json};

use crate::harness::*;
use crate::web::{add_user, web, web_login};

/// `curl -i` to `https://HOST:PORT/PATH` with HOST resolved to the appliance: (status,
/// headers and body as text).
fn curl(a: &Appliance, host: &str, path: &str, headers: &[&str]) -> (u16, String) {
    let port = a.addr.rsplit(':').next().unwrap();
    let mut cmd = Command::new("curl");
    cmd.args(["-sSk", "-i", "--max-time", "20", "--http1.1"])
        .args(["--resolve", &format!("{host}:{port}:127.0.0.1")])
        .arg(format!("https://{host}:{port}{path}"));
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// The subjectAltName of the certificate the proxy serves for `sni`.
fn served_names(a: &Appliance, sni: &str) -> String {
    let port = a.addr.rsplit(':').next().unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} -servername {sni} </dev/null 2>/dev/null | openssl x509 -noout -ext subjectAltName"
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn application_hosts_reach_the_application_route() {
    let a = Appliance::start("");
    let port = a.addr.rsplit(':').next().unwrap().to_string();
    let names = served_names(&a, "grafana.localhost");
    assert!(names.contains("DNS:*.localhost"), "{names}");
    let (status, text) = curl(&a, "grafana.localhost", "/dash?x=1", &[]);
    assert_eq!(status, 302, "{text}");
    let lower = text.to_ascii_lowercase();
    assert!(
        lower.contains(&format!(
            "location: https://localhost:{port}/web/launch/grafana?state="
        )),
        "{text}"
    );
    assert!(
        lower.contains("set-cookie: __host-hop_app_state="),
        "{text}"
    );
    assert!(
        lower.contains("secure") && lower.contains("httponly"),
        "{text}"
    );
    // Another application's name on a connection opened for grafana: 421.
    let (status, text) = curl(
        &a,
        "grafana.localhost",
        "/",
        &[&format!("Host: kibana.localhost:{port}")],
    );
    assert_eq!(status, 421, "{text}");
    // The proxy's own name still serves the web UI.
    let (status, _) = curl(&a, "localhost", "/webapi/ping", &[]);
    assert_eq!(status, 200);
}

#[test]
fn the_jwks_is_served_and_launches_need_an_agent() {
    let a = Appliance::start("");
    let (status, text) = curl(&a, "localhost", "/.well-known/jwks.json", &[]);
    assert_eq!(status, 200, "{text}");
    let body = text.split("\r\n\r\n").nth(1).unwrap();
    let jwks: Value = serde_json::from_str(body).unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "EC");
    assert_eq!(key["crv"], "P-256");
    assert_eq!(key["alg"], "ES256");
    assert!(key["kid"].as_str().is_some_and(|k| !k.is_empty()));
    let secret = add_user(&a, "appuser", "access", &[]);
    let (token, csrf) = web_login(&a, "appuser", &secret, None);
    let state = "a".repeat(64);
    let r = web(
        &a,
        "POST",
        "/web/api/apps/grafana/launch",
        Some(&token),
        Some(&csrf),
        Some(&json!({ "state": state })),
    );
    assert_eq!(r.status, 404, "{}", r.body);
    // Without the CSRF token the launch is refused before anything else.
    let r = web(
        &a,
        "POST",
        "/web/api/apps/grafana/launch",
        Some(&token),
        None,
        Some(&json!({ "state": state })),
    );
    assert_eq!(r.status, 403, "{}", r.body);
}

/// The web UI's launch page in Chromium: opened without a web session it waits for the login,
/// then asks for the launch and shows why it failed (no agent serves the application).
#[test]
fn the_launch_page_waits_for_the_login_and_says_why_a_launch_fails() {
    let a = Appliance::start("");
    let secret = add_user(&a, "lena", "access", &[]);
    let shots = crate::web_browser::artifacts("app_launch");
    let base = format!("https://{}", a.addr);
    let Some(mut b) = crate::web_browser::Browser::start("driver.mjs", &base, &shots) else {
        return;
    };
    let path = format!("/web/launch/grafana?state={}", "a".repeat(64));
    b.send(json!({"do": "open", "who": "l", "path": path}));
    let login = b.send(json!({"do": "login", "who": "l", "user": "lena", "password": PASSWORD, "otp": totp(&secret, 30)}));
    assert_eq!(login["error"], "", "{login}");
    let shown = b.send(json!({"do": "text", "who": "l", "sel": "#launch-error"}));
    let text = shown["text"].as_str().unwrap();
    assert!(
        text.contains("grafana") && text.contains("not available"),
        "{shown}"
    );
    assert!(
        shown["url"]
            .as_str()
            .unwrap()
            .contains("/web/launch/grafana"),
        "{shown}"
    );
}
