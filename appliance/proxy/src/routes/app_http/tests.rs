//! The application route's rules one by one (names, cookies, saved paths, headers, origins),
//! then the whole route on a real Auth service against a small upstream: the browser flow,
//! what the upstream sees (the JWT verified with the JWKS), 421, WebSockets, refusals and a
//! long response cut when its user is locked.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hop_auth::audit::{AuditEvent, AuditSink};
use hop_auth::{AuthServer, AuthSettings};
use hop_storage::{Clock, ManualClock, MemoryBackend, ResourceStore};
use http_body::Body as _;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::flow::{self, SESSION_COOKIE, STATE_COOKIE};
use super::headers::{self, JWT_HEADER};
use super::websocket::origin_allowed;
use super::*;
use crate::dataplane::limits::PreAuthHold;
use crate::tunnels::AppRoute;

// ---- the rules ----

#[test]
fn applications_are_single_labels_under_the_public_host() {
    let p = PublicHost::parse("proxy.example:3080");
    assert_eq!(
        p.app_of("grafana.proxy.example").as_deref(),
        Some("grafana")
    );
    assert_eq!(
        p.app_of("Grafana.PROXY.example").as_deref(),
        Some("grafana")
    );
    assert_eq!(p.app_of("proxy.example"), None);
    assert_eq!(p.app_of("a.b.proxy.example"), None);
    assert_eq!(p.app_of("grafanaproxy.example"), None);
    assert_eq!(p.app_of("grafana.proxy.example.evil"), None);
    assert_eq!(
        p.app_of_authority("grafana.proxy.example:3080").as_deref(),
        Some("grafana")
    );
    assert_eq!(
        p.app_origin("grafana"),
        "https://grafana.proxy.example:3080"
    );
    assert_eq!(
        p.launch_url("grafana", "s"),
        "https://proxy.example:3080/web/launch/grafana?state=s"
    );
    let p = PublicHost::parse("proxy.example:443");
    assert_eq!(p.app_origin("grafana"), "https://grafana.proxy.example");
    let p = PublicHost::parse("localhost:3080");
    assert_eq!(p.app_of("echo.localhost").as_deref(), Some("echo"));
    assert!(p.is_app_label("grafana-2"));
    assert!(!p.is_app_label("evil.test/x"));
    assert!(!p.is_app_label("a@b"));
    assert!(!p.is_app_label(""));
    assert!(is_http_app("http://127.0.0.1:3000"));
    assert!(is_http_app("HTTPS://internal:8443/"));
    assert!(!is_http_app("tcp://127.0.0.1:7000"));
}

#[test]
fn saved_paths_stay_on_the_same_host() {
    assert_eq!(flow::same_host_path("/dash?x=1"), "/dash?x=1");
    for hostile in [
        "//evil.test/",
        "/\\evil.test",
        "https://evil.test/",
        "evil",
        "/a\r\nSet-Cookie: x=1",
        "",
    ] {
        assert_eq!(flow::same_host_path(hostile), "/", "{hostile:?}");
    }
    let v = flow::state_cookie_value("abc", "/dash?x=1");
    assert_eq!(
        flow::parse_state_cookie(&v),
        Some(("abc", "/dash?x=1".to_string()))
    );
    // A cookie forged to carry an off-site path still returns on the same host.
    let forged = format!("abc.{}", B64.encode("//evil.test/"));
    assert_eq!(
        flow::parse_state_cookie(&forged),
        Some(("abc", "/".to_string()))
    );
    assert_eq!(flow::parse_state_cookie("no-dot"), None);
}

#[test]
fn cookies_are_host_only_secure_and_hidden_from_scripts() {
    let c = flow::set_cookie(SESSION_COOKIE, "v", Duration::from_secs(60));
    let c = c.to_str().unwrap();
    assert!(c.starts_with("__Host-hop_app_session=v;"), "{c}");
    for attr in ["Path=/", "Secure", "HttpOnly", "SameSite=Lax", "Max-Age=60"] {
        assert!(c.contains(attr), "{c}");
    }
    assert!(!c.to_ascii_lowercase().contains("domain"), "{c}");
    let cleared = flow::clear_cookie(STATE_COOKIE);
    assert!(cleared.to_str().unwrap().contains("Max-Age=0"));
}

#[test]
fn the_upstream_never_sees_a_clients_assertion_or_hops_cookies() {
    let mut h = HeaderMap::new();
    h.insert(JWT_HEADER, HeaderValue::from_static("forged"));
    h.append(
        header::COOKIE,
        HeaderValue::from_static("theme=dark; __Host-hop_app_session=s"),
    );
    h.append(
        header::COOKIE,
        HeaderValue::from_static("hop_x=1; lang=en; __Host-hop_session=t"),
    );
    h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
    h.insert("x-real-ip", HeaderValue::from_static("6.6.6.6"));
    h.insert("x-original-url", HeaderValue::from_static("/admin"));
    h.insert("x_forwarded_prefix", HeaderValue::from_static("/admin"));
    h.insert(header::CONNECTION, HeaderValue::from_static("x-secret"));
    h.insert("x-secret", HeaderValue::from_static("1"));
    h.insert("x-kept", HeaderValue::from_static("1"));
    headers::to_upstream(
        &mut h,
        &HeaderValue::from_static("the.jwt"),
        "grafana.proxy:3080",
        "192.0.2.9".parse().unwrap(),
        false,
    );
    assert_eq!(h.get_all(JWT_HEADER).iter().count(), 1);
    assert_eq!(h[JWT_HEADER], "the.jwt");
    assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
    assert_eq!(h[header::COOKIE], "theme=dark; lang=en");
    assert_eq!(h[header::HOST], "grafana.proxy:3080");
    assert_eq!(h["x-forwarded-host"], "grafana.proxy:3080");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["x-forwarded-for"], "192.0.2.9");
    assert_eq!(h.get_all("x-real-ip").iter().count(), 1);
    assert_eq!(h["x-real-ip"], "192.0.2.9");
    assert!(h.get("x-original-url").is_none());
    assert!(h.get("x_forwarded_prefix").is_none());
    assert!(h.get("x-secret").is_none());
    assert!(h.get(header::CONNECTION).is_none());
    assert_eq!(h["x-kept"], "1");
    // Only Hop's cookies: no Cookie header at all.
    let mut h = HeaderMap::new();
    h.insert(
        header::COOKIE,
        HeaderValue::from_static("__Host-hop_app_session=s"),
    );
    headers::to_upstream(
        &mut h,
        &HeaderValue::from_static("j"),
        "a.p",
        "192.0.2.9".parse().unwrap(),
        true,
    );
    assert!(h.get(header::COOKIE).is_none());
    assert_eq!(h[header::UPGRADE], "websocket");
}

#[test]
fn the_upstream_never_sees_hops_headers_spelled_with_underscores() {
    let mut h = HeaderMap::new();
    for name in [
        "hop_jwt_assertion",
        "hop-jwt_assertion",
        "x_forwarded_for",
        "x_forwarded-host",
        "x-forwarded_proto",
    ] {
        h.insert(
            header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_static("forged"),
        );
    }
    h.insert("x_kept", HeaderValue::from_static("1"));
    headers::to_upstream(
        &mut h,
        &HeaderValue::from_static("the.jwt"),
        "grafana.proxy:3080",
        "192.0.2.9".parse().unwrap(),
        false,
    );
    let forged: Vec<_> = h
        .iter()
        .filter(|(_, v)| *v == "forged")
        .map(|(k, _)| k.as_str())
        .collect();
    assert!(forged.is_empty(), "{forged:?}");
    assert_eq!(h["x_kept"], "1");
    assert_eq!(h[JWT_HEADER], "the.jwt");
}

#[test]
fn websockets_only_from_the_applications_origin() {
    let host = "grafana.proxy:3080";
    assert!(origin_allowed(
        Some("https://grafana.proxy:3080"),
        host,
        false
    ));
    assert!(!origin_allowed(Some("https://evil.test"), host, false));
    assert!(!origin_allowed(
        Some("http://grafana.proxy:3080"),
        host,
        false
    ));
    assert!(!origin_allowed(
        Some("https://kibana.proxy:3080"),
        host,
        false
    ));
    assert!(!origin_allowed(None, host, false));
    assert!(origin_allowed(None, host, true));
}

// ---- the route against an upstream ----

#[derive(Debug, Default)]
struct Recorded(Mutex<Vec<AuditEvent>>);

impl AuditSink for Recorded {
    fn emit(&self, event: AuditEvent) {
        self.0.lock().unwrap().push(event);
    }
}

impl Recorded {
    fn named(&self, name: &str) -> Vec<serde_json::Value> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|e| serde_json::to_value(e).unwrap())
            .filter(|e| e["event"] == name)
            .collect()
    }
}

/// The upstream: echoes what it received as JSON; `/slow` sends a chunk and then waits;
/// an upgrade is switched and echoed byte for byte.
async fn upstream(mut req: Request<hyper::body::Incoming>) -> Result<Response<Body>, String> {
    if req.headers().contains_key(header::UPGRADE) {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let (mut r, mut w) = tokio::io::split(TokioIo::new(up));
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        r.headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        return Ok(r);
    }
    if req.uri().path() == "/hang" {
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    if req.uri().path() == "/slow" {
        let stream = futures_util::stream::unfold(0u8, |n| async move {
            if n > 0 {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            Some((
                Ok::<_, std::io::Error>(Bytes::from_static(b"tick\n")),
                n + 1,
            ))
        });
        return Ok(Response::new(Body::from_stream(stream)));
    }
    let headers: BTreeMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let echo = serde_json::json!({"path": req.uri().to_string(), "headers": headers});
    Ok(Response::new(Body::from(echo.to_string())))
}

async fn start_upstream() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(upstream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

struct Fixture {
    route: Arc<AppHttp>,
    auth: Arc<AuthServer>,
    audit: Arc<Recorded>,
    addr: SocketAddr,
    _shutdown: tokio::sync::watch::Sender<bool>,
}

fn app_route(name: &str) -> AppRoute {
    AppRoute {
        name: name.into(),
        uri: "http://127.0.0.1:3000".into(),
        labels: BTreeMap::from([("env".to_string(), "dev".to_string())]),
        host_id: "h1".into(),
    }
}

async fn fixture() -> Fixture {
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let c: Arc<dyn Clock> = Arc::new(clock);
    let audit = Arc::new(Recorded::default());
    let settings = AuthSettings {
        cluster_name: Some("unit.test".into()),
        second_factor: "otp".into(),
        max_failed_attempts: 5,
        lockout: Duration::from_secs(1800),
        attempts_per_ip_per_minute: 1000,
        invite_ttl: Duration::from_secs(3600),
        web_addr: "proxy:3080".into(),
        session_recording: "node".into(),
        proxy_public_names: Vec::new(),
        webauthn: Default::default(),
    };
    let auth = Arc::new(
        AuthServer::open(
            ResourceStore::new(Arc::new(MemoryBackend::new(c.clone()))),
            c,
            settings,
            audit.clone(),
            Arc::new(hop_metrics::Metrics::default()),
        )
        .unwrap(),
    );
    for (user, role) in [("alice", "access"), ("bob", "auditor")] {
        auth.create_user(user, &[role.to_string()], BTreeMap::new(), "test")
            .unwrap();
    }
    let agents = pool::Agents::Direct {
        apps: vec![app_route("grafana"), app_route("kibana")],
        upstream: start_upstream().await,
    };
    let deadlines = HttpDeadlines {
        header_read: Duration::from_secs(1),
        idle: Duration::from_secs(30),
    };
    let route = AppHttp::with_agents(auth.clone(), agents, "proxy:3080", deadlines);
    let (tx, rx) = tokio::sync::watch::channel(false);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let r = route.clone();
    tokio::spawn(async move {
        while let Ok((s, remote)) = l.accept().await {
            let app = "grafana".to_string();
            tokio::spawn(r.clone().serve_io(
                s,
                app,
                None,
                (remote, PreAuthHold::default()),
                rx.clone(),
            ));
        }
    });
    Fixture {
        route,
        auth,
        audit,
        addr,
        _shutdown: tx,
    }
}

/// A browser's connection to the route.
struct Browser {
    send: hyper::client::conn::http1::SendRequest<Body>,
}

impl Browser {
    async fn open(addr: SocketAddr) -> Self {
        let s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Self { send }
    }

    async fn get(
        &mut self,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Response<hyper::body::Incoming> {
        let mut req = Request::get(path).header(header::HOST, host);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send.ready().await.unwrap();
        self.send
            .send_request(req.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }
}

async fn text(r: Response<hyper::body::Incoming>) -> String {
    let b = axum::body::to_bytes(Body::new(r.into_body()), 1 << 20)
        .await
        .unwrap();
    String::from_utf8_lossy(&b).into_owned()
}

fn set_cookie<'a>(r: &'a Response<hyper::body::Incoming>, name: &str) -> Option<&'a str> {
    r.headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
}

fn cookie_value(set_cookie: &str) -> String {
    let pair = set_cookie.split(';').next().unwrap();
    pair.split_once('=').unwrap().1.to_string()
}

const HOST: &str = "grafana.proxy:3080";

/// Walks the browser flow for `user` on `b`; returns the session cookie's value.
async fn sign_in(f: &Fixture, b: &mut Browser, user: &str, role: &str) -> String {
    let r = b.get(HOST, "/dash?x=1", &[]).await;
    assert_eq!(r.status(), StatusCode::FOUND);
    let location = r.headers()[header::LOCATION].to_str().unwrap().to_string();
    let state = location
        .strip_prefix("https://proxy:3080/web/launch/grafana?state=")
        .unwrap_or_else(|| panic!("{location}"))
        .to_string();
    let state_cookie = set_cookie(&r, STATE_COOKIE).unwrap().to_string();
    for attr in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(state_cookie.contains(attr), "{state_cookie}");
    }
    let state_cookie = cookie_value(&state_cookie);
    let _ = text(r).await;
    // The web UI's launch, as `/web/api/apps/grafana/launch` asks Auth for it.
    let grant = grant_for(f, user, role, "http://127.0.0.1:3000");
    let code = f
        .auth
        .launch_app(grant, &app_route("grafana"), &state, None)
        .unwrap();
    let callback = format!("/hop-app/callback?code={code}&state={state}");
    let cookie = format!("{STATE_COOKIE}={state_cookie}");
    let r = b.get(HOST, &callback, &[("cookie", &cookie)]).await;
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(r.headers()[header::LOCATION], "/dash?x=1");
    let session = set_cookie(&r, SESSION_COOKIE).unwrap().to_string();
    assert!(
        !session.to_ascii_lowercase().contains("domain="),
        "{session}"
    );
    assert!(set_cookie(&r, STATE_COOKIE).unwrap().contains("Max-Age=0"));
    let _ = text(r).await;
    // The code is spent.
    let r = b.get(HOST, &callback, &[("cookie", &cookie)]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let _ = text(r).await;
    cookie_value(&session)
}

fn verify_jwt(auth: &AuthServer, jwt: &str) -> serde_json::Value {
    let jwks = auth.jwks();
    let key = &jwks["keys"][0];
    let mut sec1 = vec![4u8];
    sec1.extend(B64.decode(key["x"].as_str().unwrap()).unwrap());
    sec1.extend(B64.decode(key["y"].as_str().unwrap()).unwrap());
    let (signed, sig) = jwt.rsplit_once('.').unwrap();
    let sig = B64.decode(sig).unwrap();
    aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
        &sec1,
    )
    .verify(signed.as_bytes(), &sig)
    .expect("the JWT verifies against the JWKS");
    let payload = signed.split_once('.').unwrap().1;
    serde_json::from_slice(&B64.decode(payload).unwrap()).unwrap()
}

#[tokio::test]
async fn a_browser_signs_in_and_the_upstream_sees_only_hops_identity() {
    let f = fixture().await;
    let mut b = Browser::open(f.addr).await;
    let secret = sign_in(&f, &mut b, "alice", "access").await;
    let cookies = format!("theme=dark; {SESSION_COOKIE}={secret}; hop_other=1");
    let r = b
        .get(
            HOST,
            "/dash?x=1",
            &[
                ("cookie", &cookies),
                ("hop-jwt-assertion", "forged.by.client"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let echo: serde_json::Value = serde_json::from_str(&text(r).await).unwrap();
    let h = &echo["headers"];
    assert_eq!(echo["path"], "/dash?x=1");
    assert_eq!(h["host"], HOST);
    assert_eq!(h["cookie"], "theme=dark");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["x-forwarded-host"], HOST);
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    let claims = verify_jwt(&f.auth, h["hop-jwt-assertion"].as_str().unwrap());
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["username"], "alice");
    assert_eq!(claims["roles"], serde_json::json!(["access"]));
    assert_eq!(claims["iss"], "unit.test");
    // Another application's name on this connection: 421.
    let r = b
        .get("kibana.proxy:3080", "/", &[("cookie", &cookies)])
        .await;
    assert_eq!(r.status(), StatusCode::MISDIRECTED_REQUEST);
    let _ = text(r).await;
    // Audited: the start, and each request with its status and path (never the query).
    assert_eq!(f.audit.named("app.session.start").len(), 1);
    let requests = f.audit.named("app.session.request");
    let ok = requests.iter().find(|e| e["status"] == 200).unwrap();
    assert_eq!(ok["path"], "/dash");
    assert_eq!(ok["method"], "GET");
    assert_eq!(ok["app"], "grafana");
    assert_eq!(ok["user"], "alice");
    assert!(!serde_json::to_string(&requests).unwrap().contains(&secret));
    // Keep-alive requests share one pooled upstream connection.
    for _ in 0..3 {
        let r = b.get(HOST, "/again", &[("cookie", &cookies)]).await;
        assert_eq!(r.status(), StatusCode::OK);
        let _ = text(r).await;
    }
    assert_eq!(f.route.pools.idle(&app_route("grafana")), 1);
    // An idle connection is let go before the agent would close it under a request.
    let pools = &f.route.pools;
    assert!(
        pools
            .take_idle_after(&app_route("grafana"), pool::IDLE_FOR)
            .is_none()
    );
    assert_eq!(pools.idle(&app_route("grafana")), 0);
    let r = b.get(HOST, "/after", &[("cookie", &cookies)]).await;
    assert_eq!(r.status(), StatusCode::OK);
    let _ = text(r).await;
    let kept = pools.take_idle_after(&app_route("grafana"), pool::IDLE_FOR / 2);
    assert!(kept.is_some());
    // A CONNECT is not an application's business.
    let req = Request::builder()
        .method(hyper::Method::CONNECT)
        .uri(HOST)
        .header(header::HOST, HOST)
        .header("cookie", &cookies)
        .body(Body::empty())
        .unwrap();
    b.send.ready().await.unwrap();
    let r = b.send.send_request(req).await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn a_certificate_naming_the_application_needs_no_cookie_and_its_own_or_a_loopback_host() {
    let f = fixture().await;
    let now = f.auth.now();
    let cert = crate::admission::UserCert {
        identity: hop_ca::Identity {
            username: "alice".into(),
            roles: vec!["access".into()],
            cluster: "unit.test".into(),
            route_to_app: Some("kibana".into()),
            ..Default::default()
        },
        issued_at: now,
        expires: now + Duration::from_secs(3600),
    };
    let (client, server) = tokio::io::duplex(1 << 16);
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let remote: SocketAddr = "192.0.2.5:4000".parse().unwrap();
    // The SNI said grafana; the certificate names kibana: the certificate wins.
    tokio::spawn(f.route.clone().serve_io(
        server,
        "grafana".into(),
        Some(cert),
        (remote, PreAuthHold::default()),
        rx,
    ));
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(client))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/api")
        .header(header::HOST, "127.0.0.1:8080")
        .body(Body::empty())
        .unwrap();
    let r = send.send_request(req).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let echo: serde_json::Value = serde_json::from_str(&text(r).await).unwrap();
    let claims = verify_jwt(
        &f.auth,
        echo["headers"]["hop-jwt-assertion"].as_str().unwrap(),
    );
    assert_eq!(claims["sub"], "alice");
    assert_eq!(echo["headers"]["x-forwarded-for"], "192.0.2.5");
    // The application's own address, or loopback (`hop proxy app`), under any port; never
    // another site's name (DNS rebinding to the local listener, a forged Host for the upstream).
    for (host, status) in [
        ("kibana.proxy:3080", StatusCode::OK),
        ("localhost:1234", StatusCode::OK),
        ("[::1]:5", StatusCode::OK),
        ("127.0.0.1", StatusCode::OK),
        ("rebind.evil.example:8080", StatusCode::MISDIRECTED_REQUEST),
        ("grafana.proxy:3080", StatusCode::MISDIRECTED_REQUEST),
        ("localhost.evil.example", StatusCode::MISDIRECTED_REQUEST),
    ] {
        let req = Request::get("/api")
            .header(header::HOST, host)
            .body(Body::empty())
            .unwrap();
        send.ready().await.unwrap();
        let r = send.send_request(req).await.unwrap();
        assert_eq!(r.status(), status, "{host}");
        let _ = text(r).await;
    }
    let started = f.audit.named("app.session.start");
    assert_eq!(started.len(), 1);
    assert_eq!(started[0]["app"], "kibana");
    drop(send);
    // The connection's end ends its session.
    tokio::time::timeout(Duration::from_secs(5), async {
        while f.audit.named("app.session.end").is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("app.session.end when the connection closes");
}

#[tokio::test]
async fn a_callback_without_the_browsers_state_is_refused_without_a_loop() {
    let f = fixture().await;
    let mut b = Browser::open(f.addr).await;
    let r = b.get(HOST, "/hop-app/callback?code=c&state=s", &[]).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.headers().get(header::LOCATION).is_none());
    let _ = text(r).await;
    let cookie = format!("{STATE_COOKIE}={}", flow::state_cookie_value("other", "/"));
    let r = b
        .get(
            HOST,
            "/hop-app/callback?code=c&state=s",
            &[("cookie", &cookie)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(text(r).await.contains("state"));
}

#[tokio::test]
async fn a_code_sent_to_a_browser_without_its_state_is_spent() {
    // Mallory starts a launch in her browser (she holds the state cookie), then sends Alice's
    // browser through the launch page with Mallory's state: Alice's code lands in a browser
    // that cannot use it. It must not stay good for Mallory's browser.
    let f = fixture().await;
    let mut mallory = Browser::open(f.addr).await;
    let r = mallory.get(HOST, "/", &[]).await;
    let location = r.headers()[header::LOCATION].to_str().unwrap().to_string();
    let state = location.rsplit_once("state=").unwrap().1.to_string();
    let mallory_cookie = format!(
        "{STATE_COOKIE}={}",
        cookie_value(set_cookie(&r, STATE_COOKIE).unwrap())
    );
    let _ = text(r).await;
    let now = f.auth.now();
    let alice = || hop_auth::apps::AppGrant {
        identity: Arc::new(hop_ca::Identity {
            username: "alice".into(),
            roles: vec!["access".into()],
            cluster: "unit.test".into(),
            ..Default::default()
        }),
        issued_at: now,
        expires: now + Duration::from_secs(3600),
        app: "grafana".into(),
        app_uri: "http://127.0.0.1:3000".into(),
    };
    let alices_state = format!("{STATE_COOKIE}={}", flow::state_cookie_value("alices", "/"));
    for alices_cookies in [vec![], vec![("cookie", alices_state.as_str())]] {
        let code = f
            .auth
            .launch_app(alice(), &app_route("grafana"), &state, None)
            .unwrap();
        let callback = format!("/hop-app/callback?code={code}&state={state}");
        let mut alices = Browser::open(f.addr).await;
        let r = alices.get(HOST, &callback, &alices_cookies).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let _ = text(r).await;
        // Mallory learns the code: it is spent.
        let r = mallory
            .get(HOST, &callback, &[("cookie", &mallory_cookie)])
            .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{alices_cookies:?}");
        assert!(set_cookie(&r, SESSION_COOKIE).is_none());
        let _ = text(r).await;
    }
}

#[tokio::test]
async fn a_role_without_the_apps_labels_gets_a_page_and_an_audit_event() {
    let f = fixture().await;
    let mut b = Browser::open(f.addr).await;
    let cookie = session_cookie(&f, "bob", "auditor");
    let r = b.get(HOST, "/", &[("cookie", &cookie)]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        r.headers()[header::CONTENT_TYPE],
        "text/html; charset=utf-8"
    );
    let page = text(r).await;
    assert!(page.contains("no role allows application"), "{page}");
    let refused = f.audit.named("access.refused");
    assert!(
        refused
            .iter()
            .any(|e| e["user"] == "bob" && e["route"] == "app"),
        "{refused:?}"
    );
}

/// What the web UI's launch grants `user` holding `role` for grafana, for an hour from now.
fn grant_for(f: &Fixture, user: &str, role: &str, app_uri: &str) -> hop_auth::apps::AppGrant {
    let now = f.auth.now();
    hop_auth::apps::AppGrant {
        identity: Arc::new(hop_ca::Identity {
            username: user.into(),
            roles: vec![role.into()],
            cluster: "unit.test".into(),
            ..Default::default()
        }),
        issued_at: now,
        expires: now + Duration::from_secs(3600),
        app: "grafana".into(),
        app_uri: app_uri.into(),
    }
}

/// A session for `user` holding `role` on grafana, as the launch would start it; its cookie.
fn session_cookie(f: &Fixture, user: &str, role: &str) -> String {
    let new = f
        .auth
        .apps()
        .start(grant_for(f, user, role, ""), f.auth.now())
        .unwrap();
    format!("{SESSION_COOKIE}={}", new.secret)
}

#[tokio::test]
async fn a_browsers_connection_leaves_the_pre_authentication_budget_once_admitted() {
    use crate::dataplane::limits::PreAuthBudget;
    let f = fixture().await;
    let remote: SocketAddr = "192.0.2.7:4000".parse().unwrap();
    let budget = Arc::new(PreAuthBudget::new(1));
    let slot = budget.admit(remote.ip()).unwrap();
    let (client, server) = tokio::io::duplex(1 << 16);
    let (_tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(f.route.clone().serve_io(
        server,
        "grafana".into(),
        None,
        (remote, PreAuthHold::of(slot)),
        rx,
    ));
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(client))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut b = Browser { send };
    let full = |budget: &Arc<PreAuthBudget>| budget.admit(remote.ip()).is_err();
    // No cookie (into the flow), and a session whose role does not grant the application: the
    // connection is still a stranger's.
    let r = b.get(HOST, "/", &[]).await;
    assert_eq!(r.status(), StatusCode::FOUND);
    let _ = text(r).await;
    assert!(
        full(&budget),
        "a connection without a session left the budget"
    );
    let refused = session_cookie(&f, "bob", "auditor");
    let r = b.get(HOST, "/", &[("cookie", &refused)]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let _ = text(r).await;
    assert!(
        full(&budget),
        "a refused request freed the connection's place"
    );
    // An admitted request: the place is given back.
    let admitted = session_cookie(&f, "alice", "access");
    let r = b.get(HOST, "/", &[("cookie", &admitted)]).await;
    assert_eq!(r.status(), StatusCode::OK);
    let _ = text(r).await;
    assert!(
        !full(&budget),
        "the admitted connection still holds its place"
    );
}

#[tokio::test]
async fn websockets_from_another_origin_are_refused_and_the_apps_own_are_spliced() {
    let f = fixture().await;
    let mut b = Browser::open(f.addr).await;
    let secret = sign_in(&f, &mut b, "alice", "access").await;
    let cookie = format!("{SESSION_COOKIE}={secret}");
    let ws = |origin: &'static str| {
        vec![
            ("cookie", cookie.clone()),
            ("upgrade", "websocket".to_string()),
            ("connection", "Upgrade".to_string()),
            ("sec-websocket-version", "13".to_string()),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==".to_string()),
            ("origin", origin.to_string()),
        ]
    };
    let evil = ws("https://evil.test");
    let evil: Vec<(&str, &str)> = evil.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = b.get(HOST, "/socket", &evil).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let _ = text(r).await;
    let mut b = Browser::open(f.addr).await;
    let own = ws("https://grafana.proxy:3080");
    let own: Vec<(&str, &str)> = own.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = b.get(HOST, "/socket", &own).await;
    assert_eq!(r.status(), StatusCode::SWITCHING_PROTOCOLS);
    let up = hyper::upgrade::on(r).await.unwrap();
    let mut io = TokioIo::new(up);
    io.write_all(b"hello through hop").await.unwrap();
    let mut got = [0u8; 17];
    tokio::time::timeout(Duration::from_secs(5), io.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got, b"hello through hop");
}

#[tokio::test]
async fn a_locked_users_long_response_is_cut_and_the_session_ends() {
    let f = fixture().await;
    let mut b = Browser::open(f.addr).await;
    let secret = sign_in(&f, &mut b, "alice", "access").await;
    let cookie = format!("{SESSION_COOKIE}={secret}");
    let r = b.get(HOST, "/slow", &[("cookie", &cookie)]).await;
    assert_eq!(r.status(), StatusCode::OK);
    let mut body = r.into_body();
    let first = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.data_ref().unwrap().as_ref(), b"tick\n");
    f.auth
        .lock_user("alice", None, "left the company", "admin")
        .unwrap();
    let started = hop_platform::clock::now();
    f.route.refresh();
    let next = tokio::time::timeout(
        Duration::from_secs(5),
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)),
    )
    .await
    .expect("the response is cut within 5 s");
    assert!(!matches!(next, Some(Ok(_))), "{next:?}");
    assert!(hop_platform::clock::since(started) < Duration::from_secs(5));
    let ended = f.audit.named("app.session.end");
    assert!(
        ended
            .iter()
            .any(|e| e["user"] == "alice" && e["reason"].as_str().unwrap().contains("locked")),
        "{ended:?}"
    );
    // The next request is told why, once, and its cookie is cleared; after that it finds no
    // session and goes into the flow (where the launch is refused).
    let mut b = Browser::open(f.addr).await;
    let r = b.get(HOST, "/", &[("cookie", &cookie)]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let cleared = r.headers().get_all("set-cookie").iter().any(|v| {
        let v = v.to_str().unwrap_or_default();
        v.starts_with(SESSION_COOKIE) && v.contains("Max-Age=0")
    });
    assert!(cleared, "{:?}", r.headers());
    let r = b.get(HOST, "/", &[("cookie", &cookie)]).await;
    assert_eq!(r.status(), StatusCode::FOUND);
}

#[tokio::test]
async fn http2_requests_are_routed_by_their_authority() {
    let f = fixture().await;
    let mut b = Browser::open(f.addr).await;
    let secret = sign_in(&f, &mut b, "alice", "access").await;
    let cookie = format!("{SESSION_COOKIE}={secret}");
    let s = tokio::net::TcpStream::connect(f.addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(s),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let get = |uri: &str| {
        Request::get(uri)
            .header(header::COOKIE, cookie.as_str())
            .body(Body::empty())
            .unwrap()
    };
    let r = send
        .send_request(get("https://grafana.proxy:3080/h2?q=1"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let echo: serde_json::Value = serde_json::from_str(&text(r).await).unwrap();
    assert_eq!(echo["path"], "/h2?q=1");
    assert_eq!(echo["headers"]["host"], HOST);
    // A browser reusing the connection for another application's name is told to open its own.
    let r = send
        .send_request(get("https://kibana.proxy:3080/"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::MISDIRECTED_REQUEST);
}

#[tokio::test]
async fn the_proxys_own_router_sends_application_names_away() {
    use tower::ServiceExt as _;
    let router = axum::Router::new().route("/web", axum::routing::get(|| async { "web ui" }));
    let router = misdirected_away(PublicHost::parse("proxy:3080"), router);
    let status = |uri: &str, host: Option<&str>| {
        let mut req = Request::get(uri);
        if let Some(h) = host {
            req = req.header(header::HOST, h);
        }
        let router = router.clone();
        async move {
            router
                .oneshot(req.body(Body::empty()).unwrap())
                .await
                .unwrap()
                .status()
        }
    };
    // A browser's HTTP/2 connection to the web UI, reused for an application's name.
    assert_eq!(
        status("https://grafana.proxy:3080/web", None).await,
        StatusCode::MISDIRECTED_REQUEST
    );
    assert_eq!(
        status("/web", Some("Grafana.proxy:3080")).await,
        StatusCode::MISDIRECTED_REQUEST
    );
    assert_eq!(status("https://proxy:3080/web", None).await, StatusCode::OK);
    assert_eq!(status("/web", Some("proxy:3080")).await, StatusCode::OK);
    assert_eq!(status("/web", Some("127.0.0.1:3080")).await, StatusCode::OK);
}

#[tokio::test]
async fn a_request_head_slow_to_arrive_is_cut() {
    let f = fixture().await;
    let mut s = tokio::net::TcpStream::connect(f.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: grafana.pro")
        .await
        .unwrap();
    let started = hop_platform::clock::now();
    let mut buf = Vec::new();
    // The route closes the connection (after a 408, if hyper sends one) at the deadline.
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .expect("the connection is closed by the header deadline")
        .ok();
    let waited = hop_platform::clock::since(started);
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));
}

#[tokio::test]
async fn a_request_waiting_on_its_upstream_ends_when_the_user_is_deleted() {
    let f = fixture().await;
    let mut b = Browser::open(f.addr).await;
    let secret = sign_in(&f, &mut b, "alice", "access").await;
    let cookie = format!("{SESSION_COOKIE}={secret}");
    let waiting =
        tokio::spawn(async move { b.get(HOST, "/hang", &[("cookie", &cookie)]).await.status() });
    tokio::time::sleep(Duration::from_millis(200)).await;
    f.auth.delete_resource("user", "alice", "admin").unwrap();
    f.route.refresh();
    let status = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("answered within 5 s")
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN);
    let ended = f.audit.named("app.session.end");
    assert!(
        ended
            .iter()
            .any(|e| e["reason"].as_str().unwrap().contains("no longer exists")),
        "{ended:?}"
    );
}
