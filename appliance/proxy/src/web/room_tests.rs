//! The web room's handlers on a real Auth service over a backend that can be made to fail:
//! what a session may still do while admission cannot answer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use hop_auth::audit::{AuditEvent, AuditSink};
use hop_auth::inventory::{AgentInfo, AppRoute, DbRoute, Inventory, KubeRoute, NodeRoute};
use hop_auth::{AuthServer, AuthSettings};
use hop_storage::{
    Backend, Clock, Item, ManualClock, MemoryBackend, PutOptions, ResourceStore, StorageError,
    Watcher,
};

use super::WebRoom;
use super::guard::{CSRF_HEADER, WebRequest};
use super::sessions::{COOKIE, NewSession, SessionCredentials};
use crate::admission::UserCert;

/// A memory backend whose revision reads fail while `down` is set: Auth cannot build an
/// admission snapshot, so admission answers `Unavailable`.
#[derive(Debug)]
struct FlakyBackend {
    inner: MemoryBackend,
    down: AtomicBool,
}

impl FlakyBackend {
    fn fault(&self) -> Result<(), StorageError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StorageError::Engine {
                path: "/var/lib/hop-secret-dir/backend.db".into(),
                detail: "down for the test".into(),
            });
        }
        Ok(())
    }
}

impl Backend for FlakyBackend {
    fn get(&self, key: &str) -> Result<Option<Item>, StorageError> {
        self.inner.get(key)
    }
    fn put(&self, key: &str, value: &[u8], opts: PutOptions) -> Result<u64, StorageError> {
        self.inner.put(key, value, opts)
    }
    fn create(&self, key: &str, value: &[u8], opts: PutOptions) -> Result<u64, StorageError> {
        self.inner.create(key, value, opts)
    }
    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<u64>,
        value: &[u8],
        opts: PutOptions,
    ) -> Result<u64, StorageError> {
        self.inner.compare_and_swap(key, expected, value, opts)
    }
    fn delete(&self, key: &str) -> Result<bool, StorageError> {
        self.inner.delete(key)
    }
    fn range(&self, start: &str, end: &str, limit: usize) -> Result<Vec<Item>, StorageError> {
        self.inner.range(start, end, limit)
    }
    fn watch(&self) -> Watcher {
        self.inner.watch()
    }
    fn watch_from(&self, after: u64) -> Result<Watcher, StorageError> {
        self.inner.watch_from(after)
    }
    fn purge_expired(&self) -> Result<usize, StorageError> {
        self.inner.purge_expired()
    }
    fn current_revision(&self) -> Result<u64, StorageError> {
        self.fault()?;
        self.inner.current_revision()
    }
    fn snapshot(&self) -> Result<hop_storage::Snapshot, StorageError> {
        self.inner.snapshot()
    }
    fn restore(&self, snapshot: &hop_storage::Snapshot) -> Result<(), StorageError> {
        self.inner.restore(snapshot)
    }
}

/// The audit events Auth wrote, kept for the test to read.
#[derive(Debug, Default)]
struct Recorded(std::sync::Mutex<Vec<AuditEvent>>);

impl AuditSink for Recorded {
    fn emit(&self, event: AuditEvent) {
        self.0.lock().unwrap().push(event);
    }
}

impl Recorded {
    fn as_json(&self) -> Vec<serde_json::Value> {
        let events = self.0.lock().unwrap();
        events
            .iter()
            .map(|e| serde_json::to_value(e).unwrap())
            .collect()
    }
}

#[derive(Debug)]
struct NoAgents;

impl Inventory for NoAgents {
    fn proxy_id(&self) -> &str {
        "proxy"
    }
    fn list(&self) -> Vec<AgentInfo> {
        Vec::new()
    }
    fn apps(&self) -> Vec<AppRoute> {
        Vec::new()
    }
    fn databases(&self) -> Vec<DbRoute> {
        Vec::new()
    }
    fn nodes(&self) -> Vec<NodeRoute> {
        Vec::new()
    }
    fn kube_clusters(&self) -> Vec<KubeRoute> {
        Vec::new()
    }
}

struct Fixture {
    room: Arc<WebRoom>,
    audit: Arc<Recorded>,
    backend: Arc<FlakyBackend>,
    clock: ManualClock,
}

fn fixture() -> Fixture {
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let c: Arc<dyn Clock> = Arc::new(clock.clone());
    let backend = Arc::new(FlakyBackend {
        inner: MemoryBackend::new(c.clone()),
        down: AtomicBool::new(false),
    });
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
    let audit = Arc::new(Recorded::default());
    let auth = AuthServer::open(
        ResourceStore::new(backend.clone()),
        c,
        settings,
        audit.clone(),
        Arc::new(hop_metrics::Metrics::default()),
    )
    .unwrap();
    let room = WebRoom::new(
        Arc::new(auth),
        Arc::new(NoAgents),
        Duration::from_secs(1800),
    );
    Fixture {
        room,
        audit,
        backend,
        clock,
    }
}

fn credentials() -> SessionCredentials {
    let mut rng = rand::rng();
    SessionCredentials {
        ssh: hop_ca::generate_ssh_keypair(&mut rng).unwrap(),
        ssh_certificate: String::new(),
        tls: hop_ca::generate_x509_keypair(&mut rng).unwrap(),
        tls_certificate_pem: String::new(),
    }
}

impl Fixture {
    fn session(&self, user: &str) -> NewSession {
        let now = self.clock.now();
        let cert = UserCert {
            identity: hop_ca::Identity {
                username: user.into(),
                ..Default::default()
            },
            issued_at: now,
            expires: now + Duration::from_secs(3600),
        };
        self.room.sessions.create(cert, credentials(), now)
    }
}

/// What the page sends with a state-changing request of session `s`.
fn page_headers(s: &NewSession) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::HOST, HeaderValue::from_static("proxy:3080"));
    h.insert(
        header::ORIGIN,
        HeaderValue::from_static("https://proxy:3080"),
    );
    h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
    let cookie = format!("{COOKIE}={}", s.token);
    h.insert(header::COOKIE, HeaderValue::from_str(&cookie).unwrap());
    h.insert(CSRF_HEADER, HeaderValue::from_str(&s.csrf).unwrap());
    h
}

fn remote() -> SocketAddr {
    "192.0.2.9:4000".parse().unwrap()
}

/// A request as a handler receives it: no authority in its URI (as over HTTP/1 with `Host`),
/// from `remote`.
fn web_request(method: Method, headers: HeaderMap, remote: SocketAddr) -> WebRequest {
    WebRequest {
        method,
        authority: None,
        headers,
        remote,
        pre_auth: Default::default(),
    }
}

/// The address a handler sees when the connection carried none.
fn no_remote() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

async fn logout(f: &Fixture, headers: HeaderMap) -> Result<StatusCode, StatusCode> {
    super::api::logout(
        State(f.room.clone()),
        web_request(Method::POST, headers, no_remote()),
    )
    .await
    .map(|r| r.status())
    .map_err(|e| e.status)
}

#[tokio::test]
async fn logout_ends_the_session_while_admission_cannot_answer() {
    let f = fixture();
    let s = f.session("alice");
    f.backend.down.store(true, Ordering::SeqCst);
    // Admission is down: requests that need it are refused, and the session stays for later.
    let refused = f.room.guard(
        &web_request(Method::GET, page_headers(&s), remote()),
        super::guard::Renew::No,
    );
    let refused = refused.err().unwrap();
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    // The user is told the access data cannot be read, never where the appliance keeps it.
    let words = format!("{refused:?}");
    assert!(words.contains("cannot be read"), "{words}");
    assert!(!words.contains("hop-secret-dir"), "{words}");
    assert_eq!(f.room.sessions.live(), 1);
    // Logging out still ends it: its cookie must not work once Auth is back.
    assert_eq!(logout(&f, page_headers(&s)).await, Ok(StatusCode::OK));
    assert_eq!(f.room.sessions.live(), 0);
    f.backend.down.store(false, Ordering::SeqCst);
    let after = f.room.sessions.lookup(&s.token, f.clock.now());
    assert!(matches!(after, super::sessions::Lookup::Unknown));
}

#[tokio::test]
async fn logout_still_needs_the_csrf_token_and_this_origin() {
    let f = fixture();
    let s = f.session("alice");
    f.backend.down.store(true, Ordering::SeqCst);
    let mut no_csrf = page_headers(&s);
    no_csrf.remove(CSRF_HEADER);
    let mut other_origin = page_headers(&s);
    other_origin.insert(
        header::ORIGIN,
        HeaderValue::from_static("https://evil:3080"),
    );
    for h in [no_csrf, other_origin] {
        assert_eq!(logout(&f, h).await, Err(StatusCode::FORBIDDEN));
    }
    assert_eq!(f.room.sessions.live(), 1);
}

/// `GET /web/api/session` with the session's cookie and `extra` headers: the status.
async fn read_session(f: &Fixture, s: &NewSession, extra: &[(&'static str, &'static str)]) -> u16 {
    let mut h = HeaderMap::new();
    h.insert(header::HOST, HeaderValue::from_static("proxy:3080"));
    let cookie = format!("{COOKIE}={}", s.token);
    h.insert(header::COOKIE, HeaderValue::from_str(&cookie).unwrap());
    for (k, v) in extra {
        h.insert(*k, HeaderValue::from_static(v));
    }
    let answer = super::api::session(
        State(f.room.clone()),
        web_request(Method::GET, h, no_remote()),
    )
    .await;
    match answer {
        Ok(r) => r.status().as_u16(),
        Err(e) => e.status.as_u16(),
    }
}

#[tokio::test]
async fn another_site_cannot_even_read_through_the_session() {
    let f = fixture();
    let s = f.session("alice");
    // A sibling host (`SameSite=Strict` sends it the cookie: same site), any other site, a
    // WebSocket handshake from another origin: refused before the handler, whatever the method.
    for foreign in [
        &[("sec-fetch-site", "same-site")][..],
        &[("sec-fetch-site", "cross-site")],
        &[("origin", "https://evil.proxy:3080")],
        &[("origin", "null")],
    ] {
        assert_eq!(read_session(&f, &s, foreign).await, 403, "{foreign:?}");
    }
    // The page itself, an address typed in the bar, and a script without fetch metadata pass
    // the origin check (admission then refuses the test's user, who does not exist).
    for own in [
        &[][..],
        &[("sec-fetch-site", "same-origin")],
        &[("sec-fetch-site", "none")],
        &[
            ("origin", "https://proxy:3080"),
            ("sec-fetch-site", "same-origin"),
        ],
    ] {
        assert_ne!(read_session(&f, &s, own).await, 403, "{own:?}");
    }
}

/// Sends `req` through the web room's router.
async fn send(f: &Fixture, req: axum::http::Request<axum::body::Body>) -> axum::response::Response {
    use tower::Service;
    let mut router = f.room.router();
    router.call(req).await.unwrap()
}

fn request(
    method: &str,
    path: &str,
    headers: &[(&str, &[u8])],
    body: Vec<u8>,
) -> axum::http::Request<axum::body::Body> {
    let mut b = axum::http::Request::builder().method(method).uri(path);
    for (k, v) in headers {
        b = b.header(*k, HeaderValue::from_bytes(v).unwrap());
    }
    b.body(axum::body::Body::from(body)).unwrap()
}

#[tokio::test]
async fn malformed_requests_get_a_clear_4xx_with_the_security_headers() {
    let f = fixture();
    let json: &[(&str, &[u8])] = &[
        ("content-type", b"application/json"),
        ("host", b"proxy:3080"),
        ("origin", b"https://proxy:3080"),
    ];
    let login = |body: &[u8]| request("POST", "/web/api/login", json, body.to_vec());
    let huge = format!(
        "{{\"user\":\"{}\",\"password\":\"p\",\"otp\":\"1\"}}",
        "a".repeat(3 << 20)
    );
    let cases = [
        (
            "no content type",
            request("POST", "/web/api/login", &[], b"{}".to_vec()),
        ),
        ("not JSON", login(b"{")),
        (
            "a number for a name",
            login(br#"{"user":1,"password":"p","otp":"1"}"#),
        ),
        (
            "an unknown field",
            login(br#"{"user":"a","password":"p","otp":"1","admin":true}"#),
        ),
        ("a body of 3 MiB", login(huge.as_bytes())),
        (
            "a wrong method",
            request("PUT", "/web/api/login", json, b"{}".to_vec()),
        ),
        (
            "another origin",
            request(
                "POST",
                "/web/api/login",
                &[
                    ("content-type", b"application/json"),
                    ("host", b"proxy:3080"),
                    ("origin", b"https://evil"),
                ],
                br#"{"user":"a","password":"p","otp":"1"}"#.to_vec(),
            ),
        ),
        (
            "unknown user",
            login(br#"{"user":"nobody","password":"p","otp":"123456"}"#),
        ),
        (
            "bad escape in an asset",
            request("GET", "/web/assets/%ff%fe", &[], Vec::new()),
        ),
        (
            "traversal",
            request("GET", "/web/assets/..%2F..%2Fetc%2Fpasswd", &[], Vec::new()),
        ),
        (
            "asset name of the page",
            request("GET", "/web/assets/index.html", &[], Vec::new()),
        ),
        (
            "a cookie of raw bytes",
            request(
                "GET",
                "/web/api/session",
                &[("cookie", b"__Host-hop_session=\xff\xfe")],
                Vec::new(),
            ),
        ),
        (
            "a made-up token",
            request(
                "GET",
                "/web/api/resources",
                &[("cookie", format!("{COOKIE}={}", "ab".repeat(32)).as_bytes())],
                Vec::new(),
            ),
        ),
        (
            "logout without a session",
            request("POST", "/web/api/logout", json, b"{}".to_vec()),
        ),
    ];
    for (what, req) in cases {
        let r = send(&f, req).await;
        assert!(r.status().is_client_error(), "{what}: {}", r.status());
        let h = r.headers();
        assert!(
            h.contains_key(header::CONTENT_SECURITY_POLICY),
            "{what}: {h:?}"
        );
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{what}");
    }
}

#[tokio::test]
async fn an_unknown_api_call_is_a_json_404_and_an_unknown_page_is_the_page() {
    let f = fixture();
    let host: &[(&str, &[u8])] = &[("host", b"proxy:3080")];
    let api = send(&f, request("GET", "/web/api/no-such-call", host, vec![])).await;
    assert_eq!(api.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        api.headers()[axum::http::header::CONTENT_TYPE],
        "application/json"
    );
    let page = send(&f, request("GET", "/web/sessions/x", host, vec![])).await;
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.headers()[axum::http::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
}

/// `method path` with the page's headers of session `s` (none when `None`) and `body`.
async fn call_with(
    f: &Fixture,
    s: Option<&NewSession>,
    method: &str,
    path: &str,
    body: &[u8],
) -> (StatusCode, serde_json::Value) {
    let mut b = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json");
    let headers = s.map(page_headers).unwrap_or_else(|| {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("proxy:3080"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://proxy:3080"),
        );
        h
    });
    for (k, v) in &headers {
        b = b.header(k, v);
    }
    let r = send(f, b.body(axum::body::Body::from(body.to_vec())).unwrap()).await;
    let status = r.status();
    let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, json)
}

/// A session of `ann`, an existing user with only the `access` role.
fn access_user(f: &Fixture) -> NewSession {
    f.room
        .auth
        .create_user(
            "ann",
            &["access".to_string()],
            std::collections::BTreeMap::new(),
            "test",
        )
        .unwrap();
    let now = f.clock.now();
    let cert = UserCert {
        identity: hop_ca::Identity {
            username: "ann".into(),
            roles: vec!["access".into()],
            cluster: "unit.test".into(),
            ..Default::default()
        },
        issued_at: now,
        expires: now + Duration::from_secs(3600),
    };
    f.room.sessions.create(cert, credentials(), now)
}

const EDITOR_CALLS: [(&str, &str); 6] = [
    ("POST", "/web/api/users"),
    ("POST", "/web/api/users/bob/lock"),
    ("POST", "/web/api/roles"),
    ("PUT", "/web/api/roles/access"),
    ("POST", "/web/api/tokens"),
    ("POST", "/web/api/locks"),
];

#[tokio::test]
async fn a_body_is_read_only_after_the_caller_is_let_through() {
    let f = fixture();
    let ann = access_user(&f);
    let account_calls = [
        ("POST", "/web/api/account/password"),
        ("POST", "/web/api/account/devices"),
        ("POST", "/web/api/account/devices/signup/remove"),
        ("POST", "/web/api/account/webauthn"),
        ("POST", "/web/api/account/webauthn/k1/remove"),
    ];
    let bodies: [&[u8]; 3] = [b"{", br#"{"admin":true}"#, b"[1,2]"];
    for (method, path) in EDITOR_CALLS.iter().chain(&account_calls) {
        for body in bodies {
            // No session: told so (as JSON), whatever the body says.
            let (status, json) = call_with(&f, None, method, path, body).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} {json}");
            assert_eq!(json["code"], "no_session", "{method} {path}");
        }
    }
    for (method, path) in EDITOR_CALLS {
        for body in bodies {
            // A user with only `access`: refused by the rules, not told how the form looks.
            let (status, json) = call_with(&f, Some(&ann), method, path, body).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path} {json}");
            assert_eq!(json["code"], "access_denied", "{method} {path}");
        }
    }
    for (method, path) in account_calls {
        // Let through: a malformed form is a JSON 400.
        let (status, json) = call_with(&f, Some(&ann), method, path, b"{").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {path} {json}");
        assert_eq!(json["code"], "bad_request", "{method} {path}");
    }
}

#[tokio::test]
async fn an_editor_call_the_rules_refuse_is_audited() {
    let f = fixture();
    let ann = access_user(&f);
    for (method, path) in EDITOR_CALLS {
        let (status, _) = call_with(&f, Some(&ann), method, path, b"{}").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}");
    }
    // Each refusal is audited with the web user and the route (the identity's refusals are
    // rate limited: the first ones are written).
    let refused: Vec<serde_json::Value> = f
        .audit
        .as_json()
        .into_iter()
        .filter(|e| e["event"] == "access.refused" && e["user"] == "ann")
        .collect();
    assert!(refused.len() >= 3, "{refused:?}");
    assert!(
        refused
            .iter()
            .all(|e| e["route"] == "web" && e["reason"] == "access_denied"),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_lock_past_the_end_of_time_is_a_bad_request() {
    let f = fixture();
    f.room
        .auth
        .create_user(
            "ed",
            &["editor".to_string()],
            std::collections::BTreeMap::new(),
            "test",
        )
        .unwrap();
    let now = f.clock.now();
    let cert = UserCert {
        identity: hop_ca::Identity {
            username: "ed".into(),
            roles: vec!["editor".into()],
            cluster: "unit.test".into(),
            ..Default::default()
        },
        issued_at: now,
        expires: now + Duration::from_secs(3600),
    };
    let ed = f.room.sessions.create(cert, credentials(), now);
    let forever = format!("{{\"ttl_seconds\":{}}}", u64::MAX);
    for path in [
        "/web/api/users/ed/lock",
        "/web/api/locks",
        "/web/api/tokens",
    ] {
        let body = if path.ends_with("locks") {
            format!("{{\"user\":\"bob\",\"ttl_seconds\":{}}}", u64::MAX)
        } else if path.ends_with("tokens") {
            format!("{{\"roles\":[\"node\"],\"ttl_seconds\":{}}}", u64::MAX)
        } else {
            forever.clone()
        };
        let (status, json) = call_with(&f, Some(&ed), "POST", path, body.as_bytes()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {json}");
    }
}

#[tokio::test]
async fn an_admitted_request_takes_its_connection_out_of_the_pre_authentication_budget() {
    use crate::dataplane::limits::{PreAuthBudget, PreAuthHold};
    let f = fixture();
    let s = access_user(&f);
    let budget = Arc::new(PreAuthBudget::new(1));
    let hold = PreAuthHold::of(budget.admit(remote().ip()).unwrap());
    let full = || budget.admit(remote().ip()).is_err();
    let on_this_connection = |headers: HeaderMap| WebRequest {
        pre_auth: hold.clone(),
        ..web_request(Method::GET, headers, remote())
    };
    // No session: the connection is still a stranger's.
    let no_session = f.room.guard(
        &on_this_connection(HeaderMap::new()),
        super::guard::Renew::No,
    );
    assert_eq!(no_session.err().unwrap().status, StatusCode::UNAUTHORIZED);
    assert!(
        full(),
        "a request without a session freed the connection's place"
    );
    // Admitted: the place is given back.
    let admitted = f.room.guard(
        &on_this_connection(page_headers(&s)),
        super::guard::Renew::No,
    );
    assert!(admitted.is_ok());
    assert!(!full(), "the admitted connection still holds its place");
}

#[tokio::test]
async fn a_web_request_carries_its_connections_pre_authentication_hold() {
    use crate::dataplane::limits::{PreAuthBudget, PreAuthHold};
    use axum::extract::FromRequestParts as _;
    let budget = Arc::new(PreAuthBudget::new(1));
    let hold = PreAuthHold::of(budget.admit(remote().ip()).unwrap());
    // As the listener layers it onto the router of each connection.
    let (mut parts, ()) = axum::http::Request::get("/web/api/session")
        .extension(hold)
        .body(())
        .unwrap()
        .into_parts();
    let req = WebRequest::from_request_parts(&mut parts, &())
        .await
        .unwrap();
    assert!(budget.admit(remote().ip()).is_err());
    req.pre_auth.release();
    assert!(
        budget.admit(remote().ip()).is_ok(),
        "the request's hold is the connection's"
    );
}
