//! An HTTP application from the command line, as a user whose only role grants `env=dev` apps:
//! `hop apps login|config|logout`, curl with the application certificate (the identity the
//! upstream receives: a JWT that verifies against the JWKS, no client-sent assertion, none of
//! Hop's cookies), a redirect to the internal address rewritten, SSE events arriving one by one,
//! a 1 GiB download byte-exact, a WebSocket echo, `hop proxy app` for tools without certificates,
//! and the refusals of `hop apps login`.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::apps_http::*;
use crate::clock;
use crate::harness::*;

#[test]
fn an_http_app_through_an_app_certificate() {
    let c = AppCluster::start();
    let u = c.user("app-dev");
    logs_in_with_private_files(&c, &u);
    a_raw_relay_to_the_agent_is_refused(&c, &u);
    the_upstream_sees_hops_identity_and_nothing_forged(&c, &u);
    redirects_to_the_internal_address_are_rewritten(&c, &u);
    server_sent_events_arrive_one_by_one(&c, &u);
    hop_proxy_app_serves_plain_http_locally(&c, &u);
    a_gibibyte_downloads_byte_exact(&c, &u);
    a_websocket_echoes(&c, &u);
    a_bots_application_output_works_with_curl(&c);
    let out = u.hop(&["apps", "logout", "web"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = u.hop(&["apps", "config", "web"]);
    assert!(
        stderr(&out).contains("hop apps login web"),
        "{}",
        stderr(&out)
    );
}

/// A bot with the app role and tbot's `application` output: `hop bot start --oneshot` writes
/// `tls.crt`, `tls.key`, `tls.cas` (0600) that curl uses as is; the upstream's JWT names the bot.
fn a_bots_application_output_works_with_curl(c: &AppCluster) {
    let dest = c.a.dir.path().join("appbot-web");
    let run = oneshot_bot(
        &c.a,
        "appbot",
        ("app-dev", None),
        "type: application\n    app_name: web",
        &dest,
    );
    assert!(run.status.success(), "hop bot start: {}", stderr(&run));
    let file = |n: &str| dest.join(n).display().to_string();
    for f in ["tls.crt", "tls.key", "tls.cas"] {
        assert_eq!(file_mode(&dest.join(f)) & 0o777, 0o600, "{f}");
    }
    let mut args = vec![
        "--cacert".to_string(),
        file("tls.cas"),
        "--cert".into(),
        file("tls.crt"),
        "--key".into(),
        file("tls.key"),
    ];
    args.extend(c.resolve_args());
    args.push(format!("{}/headers", c.app_url("web")));
    // At once: the proxy's kept snapshot may predate the bot, and a refusal there is decided
    // again on the current one.
    let out = curl(&args);
    assert!(out.status.success(), "curl as the bot: {}", stderr(&out));
    let seen = upstream_headers(&stdout(&out));
    let jwt = header(&seen, "hop-jwt-assertion").expect("no assertion reached the app");
    let claims: serde_json::Value =
        serde_json::from_slice(&b64url(jwt.split('.').nth(1).unwrap())).unwrap();
    assert_eq!(claims["username"], "bot-appbot", "{claims}");
}

/// A `hop-tcp` Dial for an HTTP application (with the login certificate, or with the
/// application certificate of `web` for `web` or `other`) is refused by the proxy: else the
/// client would speak HTTP straight to the agent, with an assertion of its own making naming
/// anyone, and the upstream would take it.
fn a_raw_relay_to_the_agent_is_refused(c: &AppCluster, u: &AppUser) {
    let (ca, app_cert, app_key) = u.app_files("web");
    let keys = u.home.join("keys").join(&c.a.addr);
    let login = (
        keys.join(format!("{}-tls.crt", u.name)),
        keys.join(format!("{}-tls.key", u.name)),
    );
    let app = (
        Path::new(&app_cert).to_path_buf(),
        Path::new(&app_key).to_path_buf(),
    );
    // header {"alg":"ES256","typ":"JWT"}, payload naming "forged-admin", 64 zero bytes.
    let forged = "eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiAiZm9yZ2VkLWFkbWluIiwgInVzZXJuYW1lIjogImZvcmdlZC1hZG1pbiIsICJyb2xlcyI6IFsiZWRpdG9yIl0sICJ0cmFpdHMiOiB7ImxvZ2lucyI6IFsicm9vdCJdfSwgImV4cCI6IDQxMDI0NDQ4MDB9.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    for (who, (cert, key), target, expect) in [
        ("login", &login, "web", "is an HTTP application"),
        ("app cert", &app, "web", "is an HTTP application"),
        ("app cert", &app, "other", "for application \"web\" only"),
    ] {
        let mut s = tls_to(
            c.port,
            DOMAIN,
            Path::new(&ca),
            b"hop-tcp",
            Some((cert.as_path(), key.as_path())),
        );
        let mut dial = vec![0x05u8];
        dial.extend_from_slice(&[9u8; 16]);
        dial.extend_from_slice(&(target.len() as u16).to_be_bytes());
        dial.extend_from_slice(target.as_bytes());
        dial.extend_from_slice(&[0x04, 127, 0, 0, 1, 0x30, 0x39]);
        let mut frame = (dial.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&dial);
        let request = format!(
            "GET /headers HTTP/1.1\r\nHost: x\r\nHop-Jwt-Assertion: {forged}\r\nConnection: close\r\n\r\n"
        );
        frame.extend_from_slice(request.as_bytes());
        s.write_all(&frame).unwrap();
        s.flush().unwrap();
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = s.read(&mut buf) {
            answer.extend_from_slice(&buf[..n]);
        }
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            !answer.contains(forged.split('.').nth(1).unwrap()),
            "{who} -> {target}: the upstream took a forged assertion: {answer}"
        );
        assert!(answer.contains(expect), "{who} -> {target}: {answer:?}");
    }
}

fn logs_in_with_private_files(c: &AppCluster, u: &AppUser) {
    let ls = stdout(&u.hop(&["apps", "ls"]));
    assert!(
        ls.lines().any(|l| l.contains("web") && l.contains("http")),
        "{ls}"
    );
    let out = u.hop(&["apps", "login", "web"]);
    assert!(out.status.success(), "apps login: {}", stderr(&out));
    assert!(stdout(&out).contains(&c.app_url("web")), "{}", stdout(&out));
    assert_eq!(u.config("web", "uri"), c.app_url("web"));
    let (ca, cert, key) = u.app_files("web");
    for f in [&ca, &cert, &key] {
        assert_eq!(file_mode(Path::new(f)) & 0o777, 0o600, "{f}");
    }
    let dir = Path::new(&key).parent().unwrap();
    assert_eq!(file_mode(dir) & 0o777, 0o700);
    // The printed curl line works as printed (the upstream answers / with its 404 text).
    let line = u.config("web", "curl");
    assert!(line.contains("--resolve"), "{line}");
    let out = Command::new("sh").arg("-c").arg(&line).output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no route /"),
        "{line}: {} {}",
        stdout(&out),
        stderr(&out)
    );
}

fn the_upstream_sees_hops_identity_and_nothing_forged(c: &AppCluster, u: &AppUser) {
    let mut args = cert_args(c, u, "web");
    args.extend([
        "-H".to_string(),
        "Hop-Jwt-Assertion: forged.by.client".into(),
        "-H".into(),
        "Cookie: __Host-hop_app_session=stolen; hop_x=1; keep=yes".into(),
        format!("{}/headers", c.app_url("web")),
    ]);
    let out = curl(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let seen = upstream_headers(&stdout(&out));
    let jwts: Vec<_> = seen
        .iter()
        .filter(|(k, _)| k == "hop-jwt-assertion")
        .map(|(_, v)| v.clone())
        .collect();
    assert_eq!(jwts.len(), 1, "{seen:?}");
    assert!(!jwts[0].contains("forged"), "{seen:?}");
    let cookies = header(&seen, "cookie").unwrap_or_default();
    assert!(
        !cookies.contains("hop_"),
        "Hop's cookies reached the app: {cookies}"
    );
    assert!(cookies.contains("keep=yes"), "{cookies}");
    assert_eq!(
        header(&seen, "x-forwarded-host"),
        Some(format!("web.{DOMAIN}:{}", c.port).as_str())
    );
    assert_eq!(header(&seen, "x-forwarded-proto"), Some("https"));
    // The JWT verifies against the proxy's JWKS and names the user and roles.
    let (ca, _, _) = u.app_files("web");
    let mut args = vec!["--cacert".to_string(), ca];
    args.extend(c.resolve_args());
    args.push(format!("{}/.well-known/jwks.json", c.proxy_url()));
    let out = curl(&args);
    assert!(out.status.success(), "jwks: {}", stderr(&out));
    let jwks: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let claims = verify_jwt(&jwts[0], &jwks);
    assert_eq!(claims["sub"], u.name.as_str(), "{claims}");
    assert_eq!(claims["username"], u.name.as_str(), "{claims}");
    assert_eq!(claims["roles"], serde_json::json!(["app-dev"]), "{claims}");
    let now = clock::wall_now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(claims["exp"].as_u64().unwrap() > now, "{claims}");
    assert!(claims["iat"].as_u64().unwrap() <= now + 5, "{claims}");
}

fn redirects_to_the_internal_address_are_rewritten(c: &AppCluster, u: &AppUser) {
    let mut args = cert_args(c, u, "web");
    args.extend(["-i".to_string(), format!("{}/redirect", c.app_url("web"))]);
    let (status, headers, _) = response(&curl(&args));
    assert_eq!(status, 302);
    assert_eq!(
        header(&headers, "location"),
        Some(format!("{}/landed?from=redirect", c.app_url("web")).as_str()),
        "{headers:?}"
    );
}

fn server_sent_events_arrive_one_by_one(c: &AppCluster, u: &AppUser) {
    let mut args = cert_args(c, u, "web");
    args.extend([
        "-N".to_string(),
        format!("{}/sse?n=5&delay_ms=400", c.app_url("web")),
    ]);
    let mut child = Command::new("curl")
        .args(["-sS", "--max-time", "30"])
        .args(&args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let started = clock::monotonic_now();
    let mut arrivals = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        if line.starts_with("data: event") {
            arrivals.push(clock::since(started));
        }
    }
    let _ = child.wait();
    assert_eq!(arrivals.len(), 5, "{arrivals:?}");
    // Sent 400 ms apart: buffered, they would arrive together at the end.
    for pair in arrivals.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(250),
            "events arrived together: {arrivals:?}"
        );
    }
}

fn a_websocket_echoes(c: &AppCluster, u: &AppUser) {
    let (ca, cert, key) = u.app_files("web");
    let host = format!("web.{DOMAIN}:{}", c.port);
    let mut s = tls_to(
        c.port,
        &format!("web.{DOMAIN}"),
        Path::new(&ca),
        b"http/1.1",
        Some((Path::new(&cert), Path::new(&key))),
    );
    let origin = c.app_url("web");
    s.write_all(ws_upgrade(&host, Some(&origin), None).as_bytes())
        .unwrap();
    s.flush().unwrap();
    let (status, headers) = read_head(&mut s);
    check_ws_accept(status, &headers);
    for msg in ["hello", "second message", &"x".repeat(70_000)] {
        let back = ws_echo(&mut s, msg);
        assert!(
            back.as_ref()
                .is_some_and(|(op, p)| *op == 1 && p == msg.as_bytes()),
            "sent {} bytes, got {:?}\n{}",
            msg.len(),
            back.map(|(op, p)| (op, p.len())),
            c.logs()
        );
    }
}

fn hop_proxy_app_serves_plain_http_locally(c: &AppCluster, u: &AppUser) {
    let port = free_port();
    let mut child = Command::new(HOP)
        .args(["proxy", "app", "web", "--port", &port.to_string()])
        .env("HOP_HOME", &u.home)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
    assert!(line.contains("Proxying http://127.0.0.1"), "{line}");
    // Keep-alive: several requests on one local connection.
    let out = curl(&[
        format!("http://127.0.0.1:{port}/headers"),
        format!("http://127.0.0.1:{port}/landed"),
    ]);
    let _ = child.kill();
    let _ = child.wait();
    let text = stdout(&out);
    assert!(
        text.contains("hop-jwt-assertion") || text.contains("Hop-Jwt-Assertion"),
        "{text}"
    );
    assert!(text.ends_with("landed"), "{text}");
    let _ = c;
}

fn a_gibibyte_downloads_byte_exact(c: &AppCluster, u: &AppUser) {
    const SIZE: u64 = 1 << 30;
    let expected = {
        let (_, body) = http_get(
            &format!("127.0.0.1:{}", c.upstream),
            &format!("/download-sha256?size={SIZE}"),
        );
        body.trim().to_string()
    };
    let mut args = cert_args(c, u, "web");
    args.push(format!("{}/download?size={SIZE}", c.app_url("web")));
    let started = clock::monotonic_now();
    let mut child = Command::new("curl")
        .args(["-sS", "--max-time", "120"])
        .args(&args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut hash = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = out.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        total += n as u64;
    }
    assert!(child.wait().unwrap().success());
    let got: String = hash
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    eprintln!(
        "1 GiB through the app route in {:.1} s",
        clock::since(started).as_secs_f64()
    );
    assert_eq!(total, SIZE);
    assert_eq!(got, expected);
}

#[test]
fn app_logins_are_refused_with_reasons() {
    let c = AppCluster::start();
    let prod = c.user("app-prod");
    let out = prod.hop(&["apps", "login", "web"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("\"web\"") && err.contains("roles"), "{err}");
    c.wait_event("access.refused", |e| {
        e["user"] == prod.name.as_str() && e["route"] == "app"
    });
    let dev = c.user("app-dev");
    let out = dev.hop(&["apps", "login", "nope"]);
    assert!(stderr(&out).contains("\"nope\""), "{}", stderr(&out));
    let out = dev.hop(&["apps", "login", "../etc"]);
    assert!(
        stderr(&out).contains("invalid application name"),
        "{}",
        stderr(&out)
    );
    // The certificate of a user locked after getting it stops working at the proxy.
    assert!(dev.hop(&["apps", "login", "web"]).status.success());
    c.a.ok(&[
        "admin",
        "lock",
        "--user",
        &dev.name,
        "--message",
        "apps test",
    ]);
    let mut args = cert_args(&c, &dev, "web");
    args.extend(["-i".to_string(), format!("{}/headers", c.app_url("web"))]);
    // Within 5 s of the lock (the proxy's admission snapshot follows the backend).
    let t0 = clock::monotonic_now();
    // A request admitted just before the proxy saw the lock is cut while in flight ("the
    // application session ended"); the next one is refused as locked.
    let (status, body) = loop {
        let (status, _, body) = response(&curl(&args));
        let in_flight_cut = status == 403 && body.contains("application session ended");
        if (status == 403 && !in_flight_cut) || clock::since(t0) > Duration::from_secs(5) {
            break (status, body);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!(
        "a lock refused the certificate after {:?}",
        clock::since(t0)
    );
    assert_eq!(status, 403, "{body}\n{}", c.logs());
    assert!(body.contains("locked"), "{body}");
    c.wait_event("access.refused", |e| {
        e["user"] == dev.name.as_str() && e["reason"] == "locked"
    });
}
