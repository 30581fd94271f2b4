//! The kube route end to end on a real Auth service, served over TCP to a hyper client (the
//! listener's TLS and certificate identification are its own tests), against an in-process
//! fake agent that answers like a kube agent would (it refuses a request without exactly one
//! `impersonate-user`, and reports what it received): the identity the agent sees (HTTP/1.1 and
//! HTTP/2 clients), refusals as `Status` objects (no kube certificate, an expired one, a
//! client's `Impersonate-User: system:admin`, a namespace outside the role, a cluster the
//! role's labels do not allow, an unknown cluster, an unreachable agent), the `kube.request`
//! audit event, a listing the role shows only part of never showing the rest, an upgrade
//! relayed, and a streaming response cut within seconds of a lock.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use hop_auth::audit::{AuditEvent, AuditSink};
use hop_auth::caller::Caller;
use hop_auth::{AuthServer, AuthSettings};
use hop_storage::{Clock, ManualClock, MemoryBackend, ResourceStore};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::routes::http_conn::HttpDeadlines;

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

/// What the fake agent received.
#[derive(Default)]
struct Seen {
    requests: AtomicUsize,
}

const POD_LIST: &str = r#"{"kind":"PodList","apiVersion":"v1","metadata":{},"items":[{"metadata":{"name":"web-1","namespace":"default"}},{"metadata":{"name":"dns-1","namespace":"kube-system"}}]}"#;

/// The fake agent: refuses a request without exactly one `impersonate-user` (as a kube agent
/// does), echoes what reached it as JSON, lists pods, streams `/watch-forever`, and switches
/// an upgrade to a byte echo.
async fn agent(
    seen: Arc<Seen>,
    mut req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, String> {
    seen.requests.fetch_add(1, Ordering::Relaxed);
    if req.uri().path().ends_with("/slow-head") {
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    if req.headers().get_all("impersonate-user").iter().count() != 1 {
        let mut r = Response::new(Body::from("exactly one impersonate-user"));
        *r.status_mut() = StatusCode::FORBIDDEN;
        return Ok(r);
    }
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
            .insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        return Ok(r);
    }
    let path = req.uri().path().to_string();
    if path.ends_with("/pods") && !path.contains("/namespaces/default/") {
        if req.headers().contains_key(header::ACCEPT_ENCODING) {
            let mut r = Response::new(Body::from("a listing to filter was asked for compressed"));
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            return Ok(r);
        }
        let content_type = req
            .headers()
            .get("x-fake-content-type")
            .cloned()
            .unwrap_or(HeaderValue::from_static("application/json"));
        let mut r = Response::new(Body::from(POD_LIST));
        r.headers_mut().insert(header::CONTENT_TYPE, content_type);
        if let Some(e) = req.headers().get("x-fake-content-encoding") {
            r.headers_mut().insert(header::CONTENT_ENCODING, e.clone());
        }
        return Ok(r);
    }
    if req.uri().query().is_some_and(|q| q.contains("watch=1")) {
        let stream = futures_util::stream::unfold(0u8, |n| async move {
            if n > 0 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Some((
                Ok::<_, std::io::Error>(Bytes::from_static(b"{\"type\":\"MODIFIED\"}\n")),
                n.saturating_add(1),
            ))
        });
        return Ok(Response::new(Body::from_stream(stream)));
    }
    let headers: BTreeMap<String, Vec<String>> =
        req.headers().keys().fold(BTreeMap::new(), |mut m, k| {
            let vals = req
                .headers()
                .get_all(k)
                .iter()
                .map(|v| v.to_str().unwrap_or("").to_string())
                .collect();
            m.insert(k.to_string(), vals);
            m
        });
    let echo = serde_json::json!({"path": req.uri().to_string(), "headers": headers});
    Ok(Response::new(Body::from(echo.to_string())))
}

async fn start_agent(seen: Arc<Seen>) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |r| agent(seen.clone(), r));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

const KUBE_ROLE: &str = "kind: role
version: v7
metadata:
  name: kube-dev
spec:
  allow:
    kubernetes_labels:
      env: dev
    kubernetes_users: [dev-user]
    kubernetes_groups: [viewers]
    kubernetes_resources:
      - kind: pod
        namespace: default
        name: '*'
        verbs: ['*']
  deny:
    kubernetes_labels:
      '*': '*'
    kubernetes_resources:
      - kind: pod
        namespace: '*'
        name: 'db-*'
        verbs: [exec, portforward]
";

struct Fixture {
    route: Arc<KubeProxy>,
    auth: Arc<AuthServer>,
    audit: Arc<Recorded>,
    seen: Arc<Seen>,
    addr: SocketAddr,
    /// Who the next connection is (the listener learns it from the client certificate).
    caller: Arc<Mutex<Caller>>,
    _shutdown: tokio::sync::watch::Sender<bool>,
}

fn cluster(name: &str, env: &str) -> KubeRoute {
    KubeRoute {
        name: name.into(),
        labels: BTreeMap::from([("env".to_string(), env.to_string())]),
        host_id: "kube-agent-1".into(),
    }
}

async fn fixture() -> Fixture {
    fixture_to(None).await
}

/// The fixture, its agent at `agent` when given (else the fake agent).
async fn fixture_to(agent: Option<SocketAddr>) -> Fixture {
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
    auth.create_resources(KUBE_ROLE, "kube.yaml", false, "test", &|_, _| Ok(()))
        .unwrap();
    for user in ["alice", "bob"] {
        auth.create_user(user, &["kube-dev".to_string()], BTreeMap::new(), "test")
            .unwrap();
    }
    let seen = Arc::new(Seen::default());
    let agents = pool::Agents::Direct {
        clusters: vec![cluster("dev", "dev"), cluster("prod", "prod")],
        upstream: match agent {
            Some(a) => a,
            None => start_agent(seen.clone()).await,
        },
    };
    let deadlines = HttpDeadlines {
        header_read: Duration::from_secs(1),
        idle: Duration::from_secs(30),
    };
    let route = KubeProxy::with_agents(auth.clone(), agents, "proxy:3080", deadlines, None);
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(route.clone().run(rx.clone()));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let caller = Arc::new(Mutex::new(Caller::Anonymous { remote: None }));
    let (r, who) = (route.clone(), caller.clone());
    tokio::spawn(async move {
        while let Ok((s, remote)) = l.accept().await {
            let c = who.lock().unwrap().clone();
            tokio::spawn(r.clone().serve_io(s, c, remote, rx.clone()));
        }
    });
    Fixture {
        route,
        auth,
        audit,
        seen,
        addr,
        caller,
        _shutdown: tx,
    }
}

impl Fixture {
    /// The next connections present `user`'s certificate routed to `cluster` (`None`: a login
    /// certificate).
    fn present(&self, user: &str, cluster: Option<&str>) {
        let now = self.auth.now();
        let identity = hop_ca::Identity {
            username: user.into(),
            roles: vec!["kube-dev".into()],
            cluster: "unit.test".into(),
            route_to_kube_cluster: cluster.map(str::to_string),
            ..Default::default()
        };
        *self.caller.lock().unwrap() = Caller::User {
            identity: Box::new(identity),
            remote: "127.0.0.1:1".parse().unwrap(),
            expires: now + Duration::from_secs(3600),
            issued_at: now,
        };
    }

    async fn client(&self) -> Client {
        let s = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Client { send }
    }
}

/// kubectl's connection to the route.
struct Client {
    send: hyper::client::conn::http1::SendRequest<Body>,
}

impl Client {
    async fn get(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Response<hyper::body::Incoming>, hyper::Error> {
        let mut req = Request::get(path).header(header::HOST, "kube.proxy:3080");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send.ready().await?;
        self.send
            .send_request(req.body(Body::empty()).unwrap())
            .await
    }
}

async fn json(r: Response<hyper::body::Incoming>) -> serde_json::Value {
    let b = axum::body::to_bytes(Body::new(r.into_body()), 1 << 20)
        .await
        .unwrap();
    serde_json::from_slice(&b).unwrap_or_else(|_| String::from_utf8_lossy(&b).into())
}

async fn text(r: Response<hyper::body::Incoming>) -> String {
    let b = axum::body::to_bytes(Body::new(r.into_body()), 1 << 20)
        .await
        .unwrap();
    String::from_utf8_lossy(&b).into_owned()
}

/// Waits (up to 5 s) for `n` audit events named `name`.
async fn events(f: &Fixture, name: &str, n: usize) -> Vec<serde_json::Value> {
    for _ in 0..100 {
        let found = f.audit.named(name);
        if found.len() >= n {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f.audit.named(name)
}

#[tokio::test]
async fn the_agent_sees_the_roles_identity_and_no_client_credentials() {
    let f = fixture().await;
    f.present("alice", Some("dev"));
    let mut c = f.client().await;
    let r = c
        .get(
            "/api/v1/namespaces/default/pods/web-1",
            &[("authorization", "Bearer stolen-token")],
        )
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let echo = json(r).await;
    let h = &echo["headers"];
    assert_eq!(h["impersonate-user"], serde_json::json!(["dev-user"]));
    assert_eq!(h["impersonate-group"], serde_json::json!(["viewers"]));
    assert!(h.get("authorization").is_none(), "{echo}");
    assert_eq!(echo["path"], "/api/v1/namespaces/default/pods/web-1");
    let ev = events(&f, "kube.request", 1).await;
    assert_eq!(ev.len(), 1, "{ev:?}");
    let e = &ev[0];
    assert_eq!(e["user"], "alice");
    assert_eq!(e["kube_cluster"], "dev");
    assert_eq!(e["verb"], "get");
    assert_eq!(e["resource"], "pods");
    assert_eq!(e["namespace"], "default");
    assert_eq!(e["name"], "web-1");
    assert_eq!(e["status"], 200);
    assert_eq!(e["kubernetes_user"], "dev-user");
    assert_eq!(e["kubernetes_groups"], serde_json::json!(["viewers"]));
    assert_eq!(e["success"], true);
    // A second request reuses the agent connection (keyed by cluster and user).
    let r = c.get("/version", &[]).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let _ = text(r).await;
    let ev = events(&f, "kube.request", 2).await;
    assert_eq!(ev[1]["path"], "/version");
}

#[tokio::test]
async fn http2_requests_reach_the_agent_as_http1_with_their_host() {
    let f = fixture().await;
    f.present("alice", Some("dev"));
    let s = tokio::net::TcpStream::connect(f.addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(s),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    // Concurrent streams of one connection, each on an agent connection of its own.
    let mut answers = Vec::new();
    for _ in 0..3 {
        let req = Request::get("https://kube.proxy:3080/api/v1/namespaces/default/pods/web-1")
            .header("authorization", "Bearer stolen")
            .body(Body::empty())
            .unwrap();
        answers.push(send.send_request(req));
    }
    for a in answers {
        let r = a.await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let echo = json(r).await;
        assert_eq!(
            echo["headers"]["host"],
            serde_json::json!(["kube.proxy:3080"])
        );
        assert_eq!(echo["path"], "/api/v1/namespaces/default/pods/web-1");
        assert!(echo["headers"].get("authorization").is_none(), "{echo}");
        assert_eq!(
            echo["headers"]["impersonate-user"],
            serde_json::json!(["dev-user"])
        );
    }
    assert_eq!(events(&f, "kube.request", 3).await.len(), 3);
}

#[tokio::test]
async fn a_clients_impersonation_beyond_the_role_is_refused_before_the_agent() {
    let f = fixture().await;
    f.present("alice", Some("dev"));
    let mut c = f.client().await;
    for headers in [
        vec![("impersonate-user", "system:admin")],
        vec![("impersonate-group", "system:masters")],
        vec![("impersonate-uid", "0")],
        vec![("impersonate-extra-scopes", "all")],
    ] {
        let r = c
            .get("/api/v1/namespaces/default/pods", &headers)
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{headers:?}");
        let s = json(r).await;
        assert_eq!(s["kind"], "Status", "{s}");
        assert_eq!(s["reason"], "Forbidden");
    }
    assert_eq!(f.seen.requests.load(Ordering::Relaxed), 0);
    // `--as` within the role is fine.
    let r = c
        .get(
            "/api/v1/namespaces/default/pods/web-1",
            &[("impersonate-user", "dev-user")],
        )
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let refused = events(&f, "access.refused", 1).await;
    assert!(
        refused
            .iter()
            .any(|e| e["route"] == "kube" && e["user"] == "alice"),
        "{refused:?}"
    );
}

#[tokio::test]
async fn resources_outside_the_role_are_refused_and_listings_never_show_hidden_items() {
    let f = fixture().await;
    f.present("alice", Some("dev"));
    let mut c = f.client().await;
    for path in [
        "/api/v1/namespaces/kube-system/pods/dns-1",
        "/api/v1/namespaces/default/secrets/db-password",
    ] {
        let r = c.get(path, &[]).await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{path}");
        let s = json(r).await;
        assert_eq!(s["code"], 403, "{s}");
    }
    assert_eq!(f.seen.requests.load(Ordering::Relaxed), 0);
    // Every namespace's pods: the role shows only `default`'s, so the listing is filtered:
    // kube-system's pod never reaches the client, default's does.
    let r = c
        .get("/api/v1/pods", &[("accept-encoding", "gzip")])
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body = text(r).await;
    assert!(!body.contains("dns-1"), "{body}");
    assert!(body.contains("web-1"), "{body}");
    let ev = events(&f, "kube.request", 1).await;
    assert_eq!(ev[0]["verb"], "list");
    assert_eq!(ev[0]["status"], 200);
    // A listing that came back compressed anyway is refused, never passed through.
    let r = c
        .get("/api/v1/pods", &[("x-fake-content-encoding", "gzip")])
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body = text(r).await;
    assert!(!body.contains("dns-1"), "{body}");
    // A listing the filter cannot read (not JSON) is refused, never passed through.
    let r = c
        .get(
            "/api/v1/pods",
            &[("x-fake-content-type", "application/vnd.kubernetes.protobuf")],
        )
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body = text(r).await;
    assert!(!body.contains("dns-1"), "{body}");
}

#[tokio::test]
async fn without_a_kube_certificate_kubectl_is_told_to_log_in() {
    let f = fixture().await;
    let mut c = f.client().await;
    let r = c.get("/api/v1/namespaces/default/pods", &[]).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let s = json(r).await;
    assert!(
        s["message"].as_str().unwrap().contains("hop kube login"),
        "{s}"
    );
    f.present("alice", None);
    let mut c = f.client().await;
    let r = c.get("/api/v1/namespaces/default/pods", &[]).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(f.seen.requests.load(Ordering::Relaxed), 0);
    let refused = events(&f, "access.refused", 2).await;
    assert!(refused.iter().all(|e| e["route"] == "kube"), "{refused:?}");
}

#[tokio::test]
async fn an_expired_certificate_gets_a_401_so_kubectl_renews_it() {
    let f = fixture().await;
    f.present("alice", Some("dev"));
    if let Caller::User { expires, .. } = &mut *f.caller.lock().unwrap() {
        *expires = f.auth.now() - Duration::from_secs(1);
    }
    let mut c = f.client().await;
    let r = c.get("/api/v1/namespaces/default/pods", &[]).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let s = json(r).await;
    assert!(
        s["message"]
            .as_str()
            .unwrap()
            .contains("hop kube credentials"),
        "{s}"
    );
    assert_eq!(f.seen.requests.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn an_unreachable_agent_is_a_502_status() {
    // A port nothing listens on (bound, then let go).
    let gone = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let f = fixture_to(Some(gone)).await;
    f.present("alice", Some("dev"));
    let mut c = f.client().await;
    let r = c.get("/api/v1/namespaces/default/pods", &[]).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    let s = json(r).await;
    assert_eq!(s["kind"], "Status", "{s}");
    assert!(s["message"].as_str().unwrap().contains("\"dev\""), "{s}");
    let ev = events(&f, "kube.request", 1).await;
    assert_eq!(ev[0]["status"], 502);
    assert_eq!(ev[0]["success"], false);
}

#[tokio::test]
async fn other_clusters_are_refused_or_unknown() {
    let f = fixture().await;
    f.present("alice", Some("prod"));
    let mut c = f.client().await;
    let r = c.get("/api/v1/namespaces/default/pods", &[]).await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let _ = text(r).await;
    f.present("alice", Some("staging"));
    let mut c = f.client().await;
    let r = c.get("/api/v1/namespaces/default/pods", &[]).await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let s = json(r).await;
    assert!(s["message"].as_str().unwrap().contains("staging"), "{s}");
    assert_eq!(f.seen.requests.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_lock_ends_a_live_watch_within_seconds() {
    let f = fixture().await;
    f.present("bob", Some("dev"));
    let mut c = f.client().await;
    let r = c
        .get("/api/v1/namespaces/default/pods?watch=1", &[])
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let mut body = r.into_body();
    use http_body_util_free::next_frame;
    assert!(next_frame(&mut body).await.is_some());
    assert_eq!(f.route.live_connections(), 1);
    f.auth.lock_user("bob", None, "left", "test").unwrap();
    let locked_at = hop_platform::clock::now();
    let cut = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = next_frame(&mut body).await {}
    })
    .await;
    assert!(cut.is_ok(), "the watch still streams 5 s after the lock");
    assert!(hop_platform::clock::since(locked_at) < Duration::from_secs(5));
    // A new request is refused with the lock's reason.
    let mut c = f.client().await;
    let r = c.get("/api/v1/namespaces/default/pods", &[]).await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let s = json(r).await;
    assert!(s["message"].as_str().unwrap().contains("locked"), "{s}");
}

#[tokio::test]
async fn an_upgrade_is_relayed_both_ways() {
    let f = fixture().await;
    f.present("alice", Some("dev"));
    let mut c = f.client().await;
    let r = c
        .get(
            "/api/v1/namespaces/default/pods/web-1/exec?command=sh&stdin=true",
            &[("connection", "Upgrade"), ("upgrade", "SPDY/3.1")],
        )
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(r.headers()[header::UPGRADE], "SPDY/3.1");
    let up = hyper::upgrade::on(r).await.unwrap();
    let mut io = TokioIo::new(up);
    io.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 5];
    tokio::time::timeout(Duration::from_secs(5), io.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"hello");
    let ev = events(&f, "kube.request", 1).await;
    assert_eq!(ev[0]["subresource"], "exec");
    assert_eq!(ev[0]["status"], 101);
    // The stream relay audits the session itself.
    let exec = events(&f, "kube.exec", 1).await;
    assert!(!exec.is_empty(), "no kube.exec event");
    assert_eq!(exec[0]["user"], "alice");
}

/// Roles name exec and port-forward by their own verbs: a deny of `exec` holds even though
/// Kubernetes sees the request as a `create`.
#[tokio::test]
async fn a_denied_exec_or_port_forward_is_refused_before_the_agent() {
    let f = fixture().await;
    f.present("alice", Some("dev"));
    let mut c = f.client().await;
    for path in [
        "/api/v1/namespaces/default/pods/db-0/exec?command=sh&stdin=true",
        "/api/v1/namespaces/default/pods/db-0/attach?stdin=true",
        "/api/v1/namespaces/default/pods/db-0/portforward",
    ] {
        let upgrade = [("connection", "Upgrade"), ("upgrade", "SPDY/3.1")];
        let r = c.get(path, &upgrade).await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{path}");
    }
    assert_eq!(f.seen.requests.load(Ordering::Relaxed), 0);
}

/// Upgrade headers on a request that is not exec, attach or port-forward are dropped: its
/// answer takes the normal path, so a listing is still filtered.
#[tokio::test]
async fn upgrade_headers_on_a_listing_do_not_skip_the_filter() {
    let f = fixture().await;
    f.present("alice", Some("dev"));
    let mut c = f.client().await;
    let r = c
        .get(
            "/api/v1/pods",
            &[("connection", "Upgrade"), ("upgrade", "websocket")],
        )
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body = text(r).await;
    assert!(!body.contains("dns-1"), "{body}");
    assert!(body.contains("web-1"), "{body}");
}

/// Replaces the `kube-dev` role's `kubernetes_users` and its pod rule's namespace and verbs.
fn update_role(f: &Fixture, users: &str, namespace: &str, verbs: &str) {
    let yaml = KUBE_ROLE
        .replace(
            "kubernetes_users: [dev-user]",
            &format!("kubernetes_users: [{users}]"),
        )
        .replace(
            "        namespace: default\n        name: '*'\n        verbs: ['*']",
            &format!("        namespace: {namespace}\n        name: '*'\n        verbs: {verbs}"),
        );
    assert_ne!(yaml, KUBE_ROLE, "the role's text changed shape");
    f.auth
        .create_resources(&yaml, "kube.yaml", true, "test", &|_, _| Ok(()))
        .unwrap();
}

/// A live watch of alice's in `default`.
async fn live_watch(f: &Fixture) -> hyper::body::Incoming {
    let mut c = f.client().await;
    let r = c
        .get("/api/v1/namespaces/default/pods?watch=1", &[])
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let mut body = r.into_body();
    assert!(http_body_util_free::next_frame(&mut body).await.is_some());
    body
}

/// Whether `body` is cut within `within` (`false`: it still streams).
async fn cut_within(body: &mut hyper::body::Incoming, within: Duration) -> bool {
    tokio::time::timeout(within, async {
        while let Some(Ok(_)) = http_body_util_free::next_frame(body).await {}
    })
    .await
    .is_ok()
}

/// A live watch is decided again on the whole role: a change that still allows it leaves it
/// alone; a namespace taken out of the role, or another Kubernetes user, ends it within
/// seconds, audited with the reason.
#[tokio::test]
async fn a_role_change_ends_the_live_watches_it_no_longer_allows() {
    let f = fixture().await;
    f.present("alice", Some("dev"));
    let mut body = live_watch(&f).await;
    assert_eq!(f.route.live_streams(), 1);
    update_role(&f, "dev-user", "default", "[get, list, watch]");
    assert!(
        !cut_within(&mut body, Duration::from_secs(2)).await,
        "a role that still allows the watch ended it"
    );
    update_role(&f, "other-user", "default", "[get, list, watch]");
    assert!(
        cut_within(&mut body, Duration::from_secs(5)).await,
        "the watch still runs as dev-user 5 s after the role maps alice to other-user"
    );
    let mut body = live_watch(&f).await;
    update_role(&f, "other-user", "staging", "[get, list, watch]");
    assert!(
        cut_within(&mut body, Duration::from_secs(5)).await,
        "the watch in default still streams 5 s after the role dropped the namespace"
    );
    let ended: Vec<_> = events(&f, "kube.request", 3)
        .await
        .into_iter()
        .filter(|e| e["ended_by"] == "terminated")
        .collect();
    assert_eq!(ended.len(), 2, "{ended:?}");
    let reason = ended[1]["reason"].as_str().unwrap();
    assert!(reason.contains("no longer allow"), "{reason}");
    // A new request in `default` is refused by the role, as the stream was.
    let mut c = f.client().await;
    let r = c.get("/api/v1/namespaces/default/pods", &[]).await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

/// A live exec ends within seconds of the role dropping the `exec` verb, with `kube.exec`'s
/// end event saying it was terminated and why.
#[tokio::test]
async fn a_role_without_exec_ends_a_live_exec() {
    let f = fixture().await;
    f.present("alice", Some("dev"));
    let mut c = f.client().await;
    let r = c
        .get(
            "/api/v1/namespaces/default/pods/web-1/exec?command=sh&stdin=true",
            &[("connection", "Upgrade"), ("upgrade", "SPDY/3.1")],
        )
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SWITCHING_PROTOCOLS);
    let mut io = TokioIo::new(hyper::upgrade::on(r).await.unwrap());
    // A role change that keeps exec keeps the session.
    update_role(&f, "dev-user", "default", "[get, exec]");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    io.write_all(b"still").await.unwrap();
    let mut buf = [0u8; 5];
    tokio::time::timeout(Duration::from_secs(5), io.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"still");
    update_role(&f, "dev-user", "default", "[get, list, watch]");
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        let mut b = [0u8; 64];
        loop {
            match io.read(&mut b).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the exec still runs 5 s after the role dropped exec"
    );
    let end = events(&f, "kube.exec", 2).await;
    let end = end
        .iter()
        .find(|e| e["phase"] == "end")
        .expect("no end event");
    assert_eq!(end["ended_by"], "terminated", "{end}");
    assert!(
        end["reason"].as_str().unwrap().contains("no longer allow"),
        "{end}"
    );
}

/// An agent that sends no response head within the deadline gets a 504 `Status`, audited;
/// a watch whose body streams longer than the deadline is not cut by it.
#[tokio::test]
async fn an_agent_that_does_not_answer_in_time_is_a_504() {
    let f = fixture().await;
    f.present("alice", Some("dev"));
    let mut c = f.client().await;
    let asked = hop_platform::clock::now();
    let r = c
        .get("/api/v1/namespaces/default/pods/slow-head", &[])
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(hop_platform::clock::since(asked) < Duration::from_secs(5));
    let s = json(r).await;
    assert_eq!(s["reason"], "Timeout", "{s}");
    assert!(
        s["message"].as_str().unwrap().contains("did not answer"),
        "{s}"
    );
    let ev = events(&f, "kube.request", 1).await;
    assert_eq!(ev[0]["status"], 504);
    let mut body = live_watch(&f).await;
    assert!(
        !cut_within(&mut body, forward::RESPONSE_HEAD * 2).await,
        "the response-head deadline cut a streaming body"
    );
}

/// A filtered listing when the listings held take the whole budget is a 503 `Status` that
/// kubectl retries, never the unfiltered listing; once the budget is back, it is answered.
#[tokio::test]
async fn a_filtered_listing_over_the_budget_is_a_503_not_a_pass_through() {
    let f = fixture().await;
    f.present("alice", Some("dev"));
    let held = f
        .route
        .listing_budget
        .hold(f.route.listing_budget.available() - 16);
    let mut c = f.client().await;
    let r = c.get("/api/v1/pods", &[]).await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()[header::RETRY_AFTER], "1");
    let body = text(r).await;
    assert!(!body.contains("web-1") && !body.contains("dns-1"), "{body}");
    let s: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(s["reason"], "ServiceUnavailable", "{s}");
    assert!(s["message"].as_str().unwrap().contains("try again"), "{s}");
    drop(held);
    let r = c.get("/api/v1/pods", &[]).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body = text(r).await;
    assert!(body.contains("web-1") && !body.contains("dns-1"), "{body}");
}

/// Reading a body frame by frame without another crate.
mod http_body_util_free {
    use axum::body::Bytes;
    use http_body::Body as _;

    pub async fn next_frame(
        body: &mut hyper::body::Incoming,
    ) -> Option<Result<http_body::Frame<Bytes>, hyper::Error>> {
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut *body).poll_frame(cx)).await
    }
}

#[test]
fn a_marked_certificate_s_minute_ends_no_live_stream_but_a_refusal_does() {
    let cert = |marked: bool| UserCert {
        identity: hop_ca::Identity {
            username: "mona".into(),
            route_to_kube_cluster: Some("dev".into()),
            session_mfa: marked.then(|| hop_ca::SessionMfaTarget::KubeCluster {
                kube_cluster: "dev".into(),
            }),
            ..hop_ca::Identity::default()
        },
        issued_at: UNIX_EPOCH,
        expires: UNIX_EPOCH,
    };
    let expired = Refusal::Expired { ago: 1 };
    let locked = Refusal::Locked {
        target: "user \"mona\"".into(),
        message: String::new(),
    };
    assert!(!ends_live(&cert(true), &expired));
    assert!(ends_live(&cert(true), &locked));
    assert!(ends_live(&cert(false), &expired));
}
