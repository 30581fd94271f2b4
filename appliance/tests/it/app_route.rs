//! The web application route on the real binary: a TLS connection whose SNI is `NAME.P`
//! reaches the route, a browser without an application session is sent to the web UI's launch
//! with a host-only state cookie, a request naming another application on that connection gets
//! 421, the JWKS is served at `/.well-known/jwks.json`, and the launch API refuses an
//! application no agent serves. Under the quick start's `P` = `localhost` (where `*.P` is no
//! name a verifier accepts) an application an agent announces gets a certificate naming it,
//! which rustls and OpenSSL verify with the cluster's host CA; a name no agent announces gets the
//! proxy's own. The flow against real upstreams is in the application end-to-end tests.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::clock;
use crate::ssh::Killed;

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
    // No agent announces grafana: the proxy's own certificate, without the `*.localhost` no
    // verifier accepts.
    let names = served_names(&a, "grafana.localhost");
    assert!(names.contains("DNS:localhost"), "{names}");
    assert!(!names.contains("*.localhost"), "{names}");
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
    // A connection opened for the proxy's own name, reused for an application's (as browsers
    // coalesce HTTP/2 connections): 421, not the web UI under the application's origin.
    let (status, text) = curl(
        &a,
        "localhost",
        "/webapi/ping",
        &[&format!("Host: grafana.localhost:{port}")],
    );
    assert_eq!(status, 421, "{text}");
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

/// A TLS client that verifies the server with `ca_pem` only, for `sni`, speaking HTTP/1.1: the
/// status line of `GET /`, or why the handshake failed.
fn verified_get(a: &Appliance, ca_pem: &str, sni: &str) -> Result<String, rustls::Error> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    assert_eq!(roots.len(), 1, "one host CA certificate");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(&a.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        if let Err(e) = s.conn.complete_io(&mut s.sock) {
            let inner = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
            return Err(inner
                .cloned()
                .unwrap_or(rustls::Error::General(e.to_string())));
        }
    }
    let port = a.addr.rsplit(':').next().unwrap();
    let head = format!("GET /dash HTTP/1.1\r\nHost: {sni}:{port}\r\nConnection: close\r\n\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    Ok(text.lines().next().unwrap_or_default().to_string())
}

/// Starts an app agent announcing `grafana` as a web application (its upstream need not run:
/// only the announcement matters here).
fn start_web_app_agent(a: &Appliance) -> Killed {
    let dir = a.dir.path().join("web-app-agent");
    Killed(
        Command::new(HOP)
            .args([
                "start", "--roles", "app", "--proxy", &a.addr, "--ca-pin", &a.pin,
            ])
            .args(["--token", &a.join_token("app"), "--data-dir"])
            .arg(&dir)
            .args([
                "--app",
                "name=grafana,uri=http://127.0.0.1:9,labels=env=dev",
            ])
            .args(["--app", "name=echo,uri=tcp://127.0.0.1:9,labels=env=dev"])
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.with_extension("log")).unwrap(),
            ))
            .spawn()
            .unwrap(),
    )
}

fn not_valid_for_name(e: &rustls::Error) -> bool {
    matches!(
        e,
        rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName)
            | rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. }
            )
    )
}

#[test]
fn announced_web_apps_under_localhost_get_a_certificate_that_verifies() {
    let a = Appliance::start("");
    let ca = a.ok(&[
        "admin", "auth", "export", "--type", "host", "--format", "pem",
    ]);
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
    // Before any agent announces it, grafana.localhost gets the proxy's own certificate, which
    // does not name it.
    let e = verified_get(&a, &ca, "grafana.localhost").unwrap_err();
    assert!(not_valid_for_name(&e), "{e:?}");
    let _agent = start_web_app_agent(&a);
    let deadline = clock::monotonic_now() + Duration::from_secs(30);
    let status = loop {
        match verified_get(&a, &ca, "grafana.localhost") {
            Ok(status) => break status,
            Err(e) => {
                assert!(not_valid_for_name(&e), "{e:?}");
                assert!(
                    clock::monotonic_now() < deadline,
                    "grafana.localhost never got its certificate: {e:?}\n{}\n--- agent ---\n{}",
                    a.log(),
                    std::fs::read_to_string(a.dir.path().join("web-app-agent.log"))
                        .unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    };
    // Verified, and served by the application route: no session yet, so off to the launch.
    assert_eq!(status, "HTTP/1.1 302 Found");
    let names = served_names(&a, "grafana.localhost");
    assert_eq!(
        names.lines().last().map(str::trim),
        Some("DNS:grafana.localhost"),
        "only the application's name: {names}"
    );
    // The same certificate again (cached), and OpenSSL verifies it too.
    assert_eq!(
        verified_get(&a, &ca, "Grafana.localhost").unwrap(),
        "HTTP/1.1 302 Found"
    );
    let ca_file = a.dir.path().join("host-ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    let port = a.addr.rsplit(':').next().unwrap();
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "20",
        ])
        .arg("--cacert")
        .arg(&ca_file)
        .args(["--resolve", &format!("grafana.localhost:{port}:127.0.0.1")])
        .arg(format!("https://grafana.localhost:{port}/"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "302",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A name no agent announces, and a TCP application's, get the proxy's certificate; the
    // proxy's own name still verifies.
    for other in ["kibana.localhost", "echo.localhost"] {
        let e = verified_get(&a, &ca, other).unwrap_err();
        assert!(not_valid_for_name(&e), "{other}: {e:?}");
    }
    let own = verified_get(&a, &ca, "localhost").unwrap();
    assert!(own.starts_with("HTTP/1.1 "), "{own}");
}
