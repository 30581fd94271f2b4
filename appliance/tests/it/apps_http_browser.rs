//! An HTTP application in headless Chromium, as a user whose only role grants `env=dev` apps:
//! the flow from the application through the web UI's login and back lands on the application
//! with a host-only `__Host-` cookie; a WebSocket echoes from the page. With that session's
//! cookie on a raw TLS connection: a request for app B on a connection opened for app A gets 421,
//! a cross-origin WebSocket is refused. Refusals, each with a page naming why and an audit event:
//! a role without the app's labels, a locked user, an expired app session, a deleted user (whose
//! live WebSocket closes within 5 s).

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::apps_http::*;
use crate::clock;
use crate::harness::*;
use crate::web_browser::{Browser, artifacts};

const SESSION_COOKIE: &str = "__Host-hop_app_session";

/// A user with `roles` and no login yet: (name, TOTP secret).
fn browser_user(c: &AppCluster, roles: &str, name: &str) -> (String, String) {
    (name.to_string(), c.a.add_user(name, roles, "nobody"))
}

/// Opens `path` of app `app` in `who`'s browser, goes through the web UI's login, and returns
/// where it landed and the page's text.
fn launch(b: &mut Browser, c: &AppCluster, who: &(String, String), app: &str, path: &str) -> Value {
    let opened =
        b.send(json!({"do": "open", "who": who.0, "url": format!("{}{path}", c.app_url(app))}));
    let url = opened["url"].as_str().unwrap();
    assert!(
        url.starts_with(&c.proxy_url()),
        "no session: the app must send the browser to the web UI, not {url}"
    );
    b.send(json!({
        "do": "login", "who": who.0, "user": who.0, "password": PASSWORD,
        "otp": totp(&who.1, 30), "until": c.app_url(app),
    }))
}

/// The value of `who`'s app session cookie for `app`, checked to be host-only and locked down.
fn session_cookie(b: &mut Browser, c: &AppCluster, who: &str, app: &str) -> String {
    let all = b.send(json!({"do": "cookies", "who": who}))["cookies"].clone();
    let ours: Vec<&Value> = all
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["name"] == SESSION_COOKIE)
        .collect();
    assert_eq!(ours.len(), 1, "{all}");
    let k = ours[0];
    assert_eq!(k["domain"], format!("{app}.{DOMAIN}"), "host-only: {k}");
    assert_eq!(k["path"], "/", "{k}");
    assert_eq!(k["secure"], true, "{k}");
    assert_eq!(k["httpOnly"], true, "{k}");
    assert_ne!(k["sameSite"], "None", "{k}");
    // Not sent to another app under the same domain, nor to the proxy itself.
    for other in [c.app_url("other"), c.proxy_url()] {
        let there = b.send(json!({"do": "cookies", "who": who, "url": other}))["cookies"].clone();
        assert!(
            !there.to_string().contains(SESSION_COOKIE),
            "the session cookie reaches {other}: {there}"
        );
    }
    k["value"].as_str().unwrap().to_string()
}

/// A raw TLS connection opened for `sni_app`, a request with `host_app`'s Host and `cookie`.
fn request_on(
    c: &AppCluster,
    ca: &Path,
    sni_app: &str,
    host_app: &str,
    cookie: &str,
    extra: &str,
) -> (u16, Vec<(String, String)>) {
    let mut s = tls_to(
        c.port,
        &format!("{sni_app}.{DOMAIN}"),
        ca,
        b"http/1.1",
        None,
    );
    write!(
        s,
        "GET /headers HTTP/1.1\r\nHost: {host_app}.{DOMAIN}:{}\r\nCookie: {SESSION_COOKIE}={cookie}\r\n{extra}Connection: close\r\n\r\n",
        c.port
    )
    .unwrap();
    s.flush().unwrap();
    read_head(&mut s)
}

/// Opens `url` in `who`'s browser until it is refused (403), at most 5 s: a lock or a deletion
/// reaches the proxy's admission snapshot within that. Answers the page and how long it took.
/// A navigation that fails at the network level meanwhile (the proxy ending the session's
/// connection while a request is on it) is tried again, as a user reloading would.
fn refused_page(b: &mut Browser, who: &str, url: &str) -> (Value, Duration) {
    let t0 = clock::monotonic_now();
    loop {
        let page = b.try_send(json!({"do": "open", "who": who, "url": url}));
        let network_error = page["ok"] != true
            && page["error"]
                .as_str()
                .is_some_and(|e| e.contains("net::ERR_"));
        assert!(page["ok"] == true || network_error, "open {url}: {page}");
        if page["status"] == 403 || clock::since(t0) > Duration::from_secs(5) {
            return (page, clock::since(t0));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The cluster CAs of a CLI login (to verify the proxy's wildcard certificate).
fn cluster_ca(c: &AppCluster) -> std::path::PathBuf {
    let u = c.user("app-dev");
    assert!(u.hop(&["apps", "login", "web"]).status.success());
    std::path::PathBuf::from(u.config("web", "ca"))
}

#[test]
fn the_browser_flow_and_what_a_session_cookie_allows() {
    let c = AppCluster::start();
    let Some(mut b) = Browser::start(
        "app_flow.mjs",
        &c.proxy_url(),
        &artifacts("apps_http_browser"),
    ) else {
        return;
    };
    let dana = browser_user(&c, "app-dev", "dana");
    let landed = launch(&mut b, &c, &dana, "web", "/headers?from=browser");
    b.send(json!({"do": "screenshot", "who": "dana", "name": "landed"}));
    assert_eq!(landed["landed"], true, "{landed}");
    assert_eq!(
        landed["url"],
        format!("{}/headers?from=browser", c.app_url("web")),
        "the saved path is where the flow ends"
    );
    let seen = upstream_headers(landed["text"].as_str().unwrap());
    assert!(header(&seen, "hop-jwt-assertion").is_some(), "{seen:?}");
    assert!(
        !header(&seen, "cookie").unwrap_or_default().contains("hop_"),
        "{seen:?}"
    );
    let cookie = session_cookie(&mut b, &c, "dana", "web");
    c.wait_event("app.session.start", |e| e["user"] == "dana");

    let ca = cluster_ca(&c);
    // The cookie works on its own app's connection...
    assert_eq!(request_on(&c, &ca, "web", "web", &cookie, "").0, 200);
    // ...and a request for app B on the connection opened for app A is misdirected.
    assert_eq!(request_on(&c, &ca, "web", "other", &cookie, "").0, 421);
    // A WebSocket from another origin is refused, from the app's own origin it opens.
    let host = format!("web.{DOMAIN}:{}", c.port);
    let cookie_header = format!("{SESSION_COOKIE}={cookie}");
    let mut evil = tls_to(c.port, &format!("web.{DOMAIN}"), &ca, b"http/1.1", None);
    evil.write_all(
        ws_upgrade(&host, Some("https://evil.example"), Some(&cookie_header)).as_bytes(),
    )
    .unwrap();
    assert_eq!(read_head(&mut evil).0, 403);
    let mut live = tls_to(c.port, &format!("web.{DOMAIN}"), &ca, b"http/1.1", None);
    live.write_all(ws_upgrade(&host, Some(&c.app_url("web")), Some(&cookie_header)).as_bytes())
        .unwrap();
    let (status, headers) = read_head(&mut live);
    check_ws_accept(status, &headers);
    let back = ws_echo(&mut live, "still here");
    assert_eq!(back, Some((1, b"still here".to_vec())), "{}", c.logs());

    // A WebSocket from the app's own page echoes.
    let ws = b.send(json!({"do": "ws", "who": "dana",
        "url": format!("wss://web.{DOMAIN}:{}/ws", c.port), "messages": ["one", "two"]}));
    assert_eq!(ws["echoes"], json!(["one", "two"]));

    // A deleted user: the live WebSocket closes within 5 s, the next page says why.
    c.a.ok(&["admin", "users", "rm", "dana"]);
    let t0 = clock::monotonic_now();
    live.sock
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    while let Some((op, _)) = ws_read(&mut live) {
        if op == 8 {
            break;
        }
    }
    let closed_after = clock::since(t0);
    assert!(
        closed_after <= Duration::from_secs(5),
        "closed after {closed_after:?}"
    );
    let (page, _) = refused_page(&mut b, "dana", &format!("{}/headers", c.app_url("web")));
    assert_eq!(page["status"], 403, "{page}\n{}", c.logs());
    assert!(
        page["text"].as_str().unwrap().contains("no longer exists"),
        "{page}"
    );
    c.wait_event("access.refused", |e| {
        e["user"] == "dana" && e["reason"] == "deleted"
    });
}

#[test]
fn browser_refusals_say_why_and_are_audited() {
    let c = AppCluster::start();
    let short = "kind: role\nversion: v7\nmetadata:\n  name: app-short\nspec:\n  options:\n    max_session_ttl: 12s\n  allow:\n    app_labels:\n      env: dev\n";
    let doc = c.a.dir.path().join("short.yaml");
    std::fs::write(&doc, short).unwrap();
    c.a.ok(&["admin", "create", "-f", doc.to_str().unwrap()]);
    let Some(mut b) = Browser::start(
        "app_flow.mjs",
        &c.proxy_url(),
        &artifacts("apps_http_refusals"),
    ) else {
        return;
    };
    // A role without the app's labels: the launch is refused with a page that says so.
    let pat = browser_user(&c, "app-prod", "pat");
    let refused = launch(&mut b, &c, &pat, "web", "/");
    b.send(json!({"do": "screenshot", "who": "pat", "name": "no-labels"}));
    assert_eq!(refused["landed"], false, "{refused}");
    let text = refused["text"].as_str().unwrap().to_lowercase();
    assert!(text.contains("web") && text.contains("denied"), "{text}");
    c.wait_event("access.refused", |e| {
        e["user"] == "pat" && e["reason"] == "access_denied"
    });

    // A locked user: the next request gets a page naming the lock.
    let lee = browser_user(&c, "app-dev", "lee");
    assert_eq!(launch(&mut b, &c, &lee, "web", "/landed")["landed"], true);
    c.a.ok(&[
        "admin",
        "lock",
        "--user",
        "lee",
        "--message",
        "browser refusal test",
    ]);
    let (page, after) = refused_page(&mut b, "lee", &format!("{}/landed", c.app_url("web")));
    eprintln!("a lock refused the next page after {after:?}");
    assert_eq!(page["status"], 403, "{page}\n{}", c.logs());
    assert!(page["text"].as_str().unwrap().contains("locked"), "{page}");
    c.wait_event("access.refused", |e| {
        e["user"] == "lee" && e["reason"] == "locked"
    });

    // An expired app session (its login's role allows 12 s): a GET goes through the flow
    // again, anything else gets 401 saying the session expired.
    let kim = browser_user(&c, "app-short", "kim");
    assert_eq!(launch(&mut b, &c, &kim, "web", "/landed")["landed"], true);
    // The session cannot outlive the certificate the launch was made with, issued at the
    // latest when the launch landed (the web session may have renewed it on the way).
    let landed = clock::monotonic_now();
    let cookie = session_cookie(&mut b, &c, "kim", "web");
    let ca = cluster_ca(&c);
    std::thread::sleep(Duration::from_secs(13).saturating_sub(clock::since(landed)));
    let (status, headers) = request_on(&c, &ca, "web", "web", &cookie, "");
    assert_eq!(status, 302);
    let to = header(&headers, "location").unwrap_or_default();
    assert!(to.starts_with(&c.proxy_url()), "{to}");
    let mut s = tls_to(c.port, &format!("web.{DOMAIN}"), &ca, b"http/1.1", None);
    write!(
        s,
        "POST /headers HTTP/1.1\r\nHost: web.{DOMAIN}:{}\r\nCookie: {SESSION_COOKIE}={cookie}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        c.port
    )
    .unwrap();
    let (status, _) = read_head(&mut s);
    let mut body = String::new();
    let _ = std::io::Read::read_to_string(&mut s, &mut body);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("expired"), "{body}");
}
