//! The web-app forwarder driven as the proxy drives it: HTTP/1.1 (hyper client) on an in-memory
//! stream standing for the tunnel's data connection, against a real hyper upstream on loopback
//! (plain or TLS with a self-signed certificate) that echoes headers, redirects, streams SSE and
//! large bodies, and echoes WebSocket messages.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hop_config::services::AppSpec;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::http::{WebApp, serve};
use super::jwt_claims::tests::token;

type TestBody = BoxBody<Bytes, std::io::Error>;

const PUBLIC: &str = "grafana.proxy.test:3080";
const CHUNK: usize = 64 * 1024;

fn full(b: impl Into<Bytes>) -> TestBody {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

/// A body of `chunks` chunks made as they are consumed; `made` counts the bytes made.
fn paced_body(chunks: usize, made: Arc<AtomicUsize>) -> TestBody {
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    tokio::spawn(async move {
        for i in 0..chunks {
            let chunk = Bytes::from(vec![(i % 251) as u8; CHUNK]);
            made.fetch_add(CHUNK, Ordering::SeqCst);
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok(Frame::data(b)), rx))
    });
    BodyExt::boxed(StreamBody::new(stream))
}

/// What the test upstream shares with the test.
#[derive(Default)]
struct Upstream {
    hits: AtomicUsize,
    connections: AtomicUsize,
    sse_gate: Notify,
    made: Arc<AtomicUsize>,
}

fn user(name: &str, logins: &[&str]) -> String {
    token(&serde_json::json!({
        "iss": "hop.test", "sub": name, "username": name, "roles": ["app-user"],
        "traits": {"logins": logins, "email": [format!("{name}@example.com")]},
        "iat": 1, "nbf": 1, "exp": 4_000_000_000u64,
    }))
}

async fn upstream_route(
    up: Arc<Upstream>,
    me: SocketAddr,
    mut req: Request<Incoming>,
) -> Result<Response<TestBody>, Infallible> {
    up.hits.fetch_add(1, Ordering::SeqCst);
    let resp = |status: u16, body: TestBody| {
        let mut r = Response::new(body);
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        r
    };
    Ok(match req.uri().path() {
        "/echo" => {
            let mut lines = format!("path: {}\n", req.uri());
            for (k, v) in req.headers() {
                lines.push_str(&format!("{k}: {}\n", v.to_str().unwrap()));
            }
            resp(200, full(lines))
        }
        "/redirect" => {
            let mut r = resp(302, full(""));
            let loc = format!("http://{me}/login?next=%2Fd#top");
            r.headers_mut().insert("location", loc.parse().unwrap());
            r.headers_mut().append(
                "set-cookie",
                "__Host-hop_app_session=fixed; Path=/".parse().unwrap(),
            );
            r.headers_mut()
                .append("set-cookie", "grafana_session=g; Path=/".parse().unwrap());
            r
        }
        "/redirect-away" => {
            let mut r = resp(302, full(""));
            let loc = "https://accounts.example.com/auth".parse().unwrap();
            r.headers_mut().insert("location", loc);
            r
        }
        "/sse" => {
            let up = up.clone();
            let stream = futures_util::stream::unfold(0, move |n| {
                let up = up.clone();
                async move {
                    match n {
                        0 => Some((Ok(Frame::data(Bytes::from("data: one\n\n"))), 1)),
                        1 => {
                            up.sse_gate.notified().await;
                            Some((Ok(Frame::data(Bytes::from("data: two\n\n"))), 2))
                        }
                        _ => None,
                    }
                }
            });
            let mut r = resp(200, BodyExt::boxed(StreamBody::new(stream)));
            r.headers_mut()
                .insert("content-type", "text/event-stream".parse().unwrap());
            r
        }
        "/big" => resp(200, paced_body(1024, up.made.clone())),
        "/upload" => {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let (mut n, mut sum) = (0usize, 0u64);
            let body = req.body_mut();
            while let Some(f) = body.frame().await {
                if let Ok(d) = f.unwrap().into_data() {
                    n += d.len();
                    sum += d.iter().map(|&b| u64::from(b)).sum::<u64>();
                }
            }
            resp(200, full(format!("{n} {sum}")))
        }
        "/ws" => ws_accept(req),
        _ => resp(404, full("no such page")),
    })
}

/// Accepts a WebSocket upgrade and echoes every message.
fn ws_accept(mut req: Request<Incoming>) -> Response<TestBody> {
    let key = req.headers()["sec-websocket-key"].as_bytes().to_vec();
    let on = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let io = TokioIo::new(on.await.unwrap());
        let mut ws =
            tokio_tungstenite::WebSocketStream::from_raw_socket(io, Role::Server, None).await;
        while let Some(Ok(m)) = ws.next().await {
            if m.is_close() {
                break;
            }
            ws.send(m).await.unwrap();
        }
    });
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
    Response::builder()
        .status(101)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", accept)
        .body(full(""))
        .unwrap()
}

/// Starts the upstream on loopback (TLS with a self-signed certificate for 127.0.0.1 when
/// `tls`); its address and shared state.
async fn start_upstream(tls: bool) -> (SocketAddr, Arc<Upstream>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let me = listener.local_addr().unwrap();
    let up = Arc::new(Upstream::default());
    let acceptor = tls.then(tls_acceptor);
    let state = up.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            state.connections.fetch_add(1, Ordering::SeqCst);
            let (up, acceptor) = (state.clone(), acceptor.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req| upstream_route(up.clone(), me, req));
                let http = hyper::server::conn::http1::Builder::new();
                let _ = match acceptor {
                    Some(a) => match a.accept(tcp).await {
                        Ok(t) => {
                            http.serve_connection(TokioIo::new(t), svc)
                                .with_upgrades()
                                .await
                        }
                        Err(_) => return,
                    },
                    None => {
                        http.serve_connection(TokioIo::new(tcp), svc)
                            .with_upgrades()
                            .await
                    }
                };
            });
        }
    });
    (me, up)
}

fn tls_acceptor() -> tokio_rustls::TlsAcceptor {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let cert = ck.cert.der().clone();
    let key = rustls_pki_types::PrivateKeyDer::try_from(ck.signing_key.serialize_der()).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(hop_net::pem::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
}

fn spec(uri: String, headers: &[&str]) -> AppSpec {
    let mut s = AppSpec::parse(&format!("name=grafana,uri={uri}")).unwrap();
    s.rewrite.headers = headers.iter().map(|h| h.to_string()).collect();
    s.validate().unwrap();
    s
}

/// A data connection to the forwarder for `spec`, as the proxy's HTTP/1.1 client holds it;
/// also the forwarder's task.
async fn tunnel(spec: &AppSpec) -> (SendRequest<TestBody>, tokio::task::JoinHandle<()>) {
    let app = Arc::new(WebApp::new(spec).unwrap());
    let (proxy_end, agent_end) = tokio::io::duplex(64 * 1024);
    let agent = tokio::spawn(serve(app, agent_end));
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(proxy_end))
        .await
        .unwrap();
    tokio::spawn(conn.with_upgrades());
    (sender, agent)
}

fn request(path: &str, jwt: Option<&str>, body: TestBody) -> Request<TestBody> {
    let mut b = Request::builder()
        .uri(path)
        .header("host", PUBLIC)
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", PUBLIC)
        .header("x-forwarded-for", "203.0.113.9");
    if let Some(jwt) = jwt {
        b = b.header("hop-jwt-assertion", jwt);
    }
    b.body(body).unwrap()
}

async fn text_of(resp: Response<Incoming>) -> (u16, String) {
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

fn header_lines<'a>(echo: &'a str, name: &str) -> Vec<&'a str> {
    let prefix = format!("{name}: ");
    echo.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .collect()
}

#[tokio::test]
async fn requests_carry_identity_and_rewrites_and_no_junk() {
    let (addr, up) = start_upstream(false).await;
    let app = spec(
        format!("http://{addr}"),
        &[
            "X-Login: {{internal.logins}}",
            "X-Email: {{external.email}}",
            "X-Jwt: {{jwt}}",
        ],
    );
    let (mut tx, _agent) = tunnel(&app).await;
    let alice = user("alice", &["alice", "root"]);
    let mut req = request("/echo?q=1", Some(&alice), full(""));
    let h = req.headers_mut();
    h.insert("x-login", "admin".parse().unwrap());
    h.insert("connection", "X-Junk".parse().unwrap());
    h.insert("x-junk", "j".parse().unwrap());
    h.insert(
        "cookie",
        "a=1; __Host-hop_app_session=secret".parse().unwrap(),
    );
    let (status, echo) = text_of(tx.send_request(req).await.unwrap()).await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(header_lines(&echo, "path"), ["/echo?q=1"]);
    assert_eq!(header_lines(&echo, "host"), [addr.to_string()]);
    assert_eq!(header_lines(&echo, "hop-jwt-assertion"), [alice.as_str()]);
    assert_eq!(header_lines(&echo, "x-jwt"), [alice.as_str()]);
    assert_eq!(header_lines(&echo, "x-login"), ["alice", "root"]);
    assert_eq!(header_lines(&echo, "x-email"), ["alice@example.com"]);
    assert_eq!(header_lines(&echo, "cookie"), ["a=1"]);
    assert_eq!(header_lines(&echo, "x-forwarded-for"), ["203.0.113.9"]);
    assert_eq!(header_lines(&echo, "x-forwarded-host"), [PUBLIC]);
    assert!(header_lines(&echo, "x-junk").is_empty(), "{echo}");

    // The same connection, another user: that user's identity, nothing of alice's.
    let bob = user("bob", &["bob"]);
    let (_, echo) = text_of(
        tx.send_request(request("/echo", Some(&bob), full("")))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(header_lines(&echo, "x-login"), ["bob"]);
    assert_eq!(header_lines(&echo, "hop-jwt-assertion"), [bob.as_str()]);

    // Unidentified requests stop at the agent.
    let hits = up.hits.load(Ordering::SeqCst);
    let (status, body) = text_of(
        tx.send_request(request("/echo", None, full("")))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (400, "the request carries no Hop-Jwt-Assertion")
    );
    let (status, body) = text_of(
        tx.send_request(request("/echo", Some("x.y.z"), full("")))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(body.contains("not base64url"), "{body}");
    let mut twice = request("/echo", Some(&alice), full(""));
    twice
        .headers_mut()
        .append("hop-jwt-assertion", bob.parse().unwrap());
    let (status, body) = text_of(tx.send_request(twice).await.unwrap()).await;
    assert_eq!(
        (status, body.as_str()),
        (400, "the request carries more than one Hop-Jwt-Assertion")
    );
    assert_eq!(
        up.hits.load(Ordering::SeqCst),
        hits,
        "no unidentified request reached the app"
    );
}

#[tokio::test]
async fn data_connections_share_the_upstream_pool() {
    let (addr, up) = start_upstream(false).await;
    let app = Arc::new(WebApp::new(&spec(format!("http://{addr}"), &[])).unwrap());
    let jwt = user("alice", &[]);
    for _ in 0..3 {
        let (proxy_end, agent_end) = tokio::io::duplex(64 * 1024);
        tokio::spawn(serve(app.clone(), agent_end));
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(proxy_end))
            .await
            .unwrap();
        tokio::spawn(conn);
        for _ in 0..3 {
            let resp = tx
                .send_request(request("/echo", Some(&jwt), full("")))
                .await;
            assert_eq!(text_of(resp.unwrap()).await.0, 200);
        }
    }
    assert_eq!(up.hits.load(Ordering::SeqCst), 9);
    assert_eq!(
        up.connections.load(Ordering::SeqCst),
        1,
        "one pooled upstream connection"
    );
}

#[tokio::test]
async fn redirects_to_the_upstream_point_at_the_public_address() {
    let (addr, _up) = start_upstream(false).await;
    let (mut tx, _agent) = tunnel(&spec(format!("http://{addr}"), &[])).await;
    let jwt = user("alice", &[]);
    let resp = tx
        .send_request(request("/redirect", Some(&jwt), full("")))
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    let loc = resp.headers()["location"].to_str().unwrap();
    assert_eq!(loc, format!("https://{PUBLIC}/login?next=%2Fd#top"));
    let cookies: Vec<_> = resp.headers().get_all("set-cookie").iter().collect();
    assert_eq!(
        cookies,
        ["grafana_session=g; Path=/"],
        "the app cannot set Hop's cookies"
    );
    text_of(resp).await;
    let resp = tx
        .send_request(request("/redirect-away", Some(&jwt), full("")))
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["location"],
        "https://accounts.example.com/auth"
    );
}

#[tokio::test]
async fn sse_events_arrive_one_by_one() {
    let (addr, up) = start_upstream(false).await;
    let (mut tx, _agent) = tunnel(&spec(format!("http://{addr}"), &[])).await;
    let resp = tx
        .send_request(request("/sse", Some(&user("alice", &[])), full("")))
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    // The second event is only sent once the first has arrived here: a buffering forwarder
    // would hold the first back and this would time out.
    assert_eq!(next_frame(&mut body).await, "data: one\n\n");
    up.sse_gate.notify_one();
    assert_eq!(next_frame(&mut body).await, "data: two\n\n");
}

async fn next_frame(body: &mut Incoming) -> Bytes {
    let f = tokio::time::timeout(Duration::from_secs(5), body.frame()).await;
    let f = f.expect("an event within 5 s").unwrap().unwrap();
    f.into_data().unwrap()
}

#[tokio::test]
async fn large_bodies_stream_with_bounded_memory() {
    let (addr, up) = start_upstream(false).await;
    let (mut tx, _agent) = tunnel(&spec(format!("http://{addr}"), &[])).await;
    let jwt = user("alice", &[]);
    let resp = tx
        .send_request(request("/big", Some(&jwt), full("")))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ahead = up.made.load(Ordering::SeqCst);
    assert!(
        ahead < 16 << 20,
        "the upstream got {ahead} bytes ahead of a reader that reads nothing"
    );
    let mut body = resp.into_body();
    let (mut n, mut i) = (0usize, 0usize);
    while let Some(f) = body.frame().await {
        for b in f.unwrap().into_data().unwrap() {
            assert_eq!(b, ((i / CHUNK) % 251) as u8, "byte {i}");
            i += 1;
        }
        n = i;
    }
    assert_eq!(n, 1024 * CHUNK);

    // Upload (a GET with a chunked body, the case hyper would otherwise send without one):
    // the upstream waits 300 ms before reading; the sender is held back meanwhile.
    let sent = Arc::new(AtomicUsize::new(0));
    let body = paced_body(512, sent.clone());
    let mut req = request("/upload", Some(&jwt), body);
    let chunked = "chunked".parse().unwrap();
    req.headers_mut().insert("transfer-encoding", chunked);
    let upload = tokio::spawn(async move { tx.send_request(req).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ahead = sent.load(Ordering::SeqCst);
    assert!(
        ahead < 16 << 20,
        "{ahead} bytes were taken before the upstream read any"
    );
    let (status, answer) = text_of(upload.await.unwrap().unwrap()).await;
    let sum: u64 = (0..512u64).map(|i| (i % 251) * CHUNK as u64).sum();
    assert_eq!((status, answer), (200, format!("{} {sum}", 512 * CHUNK)));
}

#[tokio::test]
async fn websocket_messages_echo_through_the_upgrade() {
    let (addr, _up) = start_upstream(false).await;
    let app = Arc::new(WebApp::new(&spec(format!("http://{addr}"), &[])).unwrap());
    let (proxy_end, agent_end) = tokio::io::duplex(64 * 1024);
    let agent = tokio::spawn(serve(app, agent_end));
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://{PUBLIC}/ws"),
    )
    .unwrap();
    req.headers_mut()
        .insert("hop-jwt-assertion", user("alice", &[]).parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::client_async(req, proxy_end)
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    for m in [
        Message::text("hello"),
        Message::binary(vec![0u8, 1, 2, 255]),
    ] {
        ws.send(m.clone()).await.unwrap();
        let back = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap();
        assert_eq!(back.unwrap().unwrap(), m);
    }
    ws.close(None).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), agent)
        .await
        .expect("the data connection ends with the WebSocket")
        .unwrap();
}

#[tokio::test]
async fn a_websocket_without_identity_is_refused() {
    let (addr, up) = start_upstream(false).await;
    let app = Arc::new(WebApp::new(&spec(format!("http://{addr}"), &[])).unwrap());
    let (proxy_end, agent_end) = tokio::io::duplex(64 * 1024);
    tokio::spawn(serve(app, agent_end));
    let err = tokio_tungstenite::client_async(format!("ws://{PUBLIC}/ws"), proxy_end)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("400"), "{err}");
    assert_eq!(up.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn https_upstreams_are_verified_unless_told_not_to() {
    let (addr, _up) = start_upstream(true).await;
    let jwt = user("alice", &[]);
    let strict = spec(format!("https://{addr}"), &[]);
    let (mut tx, _agent) = tunnel(&strict).await;
    let (status, body) = text_of(
        tx.send_request(request("/echo", Some(&jwt), full("")))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains("cannot connect to the upstream https://"),
        "{body}"
    );
    assert!(body.to_lowercase().contains("certificate"), "{body}");

    let mut lax = strict.clone();
    lax.insecure_skip_verify = true;
    let (mut tx, _agent) = tunnel(&lax).await;
    let (status, echo) = text_of(
        tx.send_request(request("/echo", Some(&jwt), full("")))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(header_lines(&echo, "host"), [addr.to_string()]);
}

#[tokio::test]
async fn a_dead_upstream_is_a_502_naming_it() {
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = dead.local_addr().unwrap();
    drop(dead);
    let (mut tx, _agent) = tunnel(&spec(format!("http://{addr}"), &[])).await;
    let req = request("/", Some(&user("alice", &[])), full(""));
    let (status, body) = text_of(tx.send_request(req).await.unwrap()).await;
    assert_eq!(status, 502);
    let want = format!("hop: app \"grafana\": cannot connect to the upstream http://{addr}: ");
    assert!(body.starts_with(&want), "{body}");
    assert!(body.to_lowercase().contains("refused"), "{body}");
}

#[tokio::test(start_paused = true)]
async fn a_slow_request_head_is_cut() {
    use tokio::io::AsyncWriteExt;
    let app = Arc::new(WebApp::new(&spec("http://127.0.0.1:9".into(), &[])).unwrap());
    let (mut proxy_end, agent_end) = tokio::io::duplex(64 * 1024);
    let mut agent = tokio::spawn(serve(app, agent_end));
    proxy_end
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let early = super::http::HEAD_TIMEOUT - Duration::from_secs(1);
    let waited = tokio::time::timeout(early, &mut agent).await;
    assert!(waited.is_err(), "closed before the deadline");
    tokio::time::timeout(Duration::from_secs(2), agent)
        .await
        .expect("closed at the deadline")
        .unwrap();
}

/// A Python `http.server` upstream (a real peer other than hyper) that echoes headers on GET
/// and redirects `/go` to its own address; its port, and the child (killed on drop).
async fn python_upstream() -> (u16, tokio::process::Child) {
    use tokio::io::AsyncBufReadExt;
    const SCRIPT: &str = r#"
import http.server
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        if self.path == "/go":
            self.send_response(303)
            self.send_header("Location", "http://127.0.0.1:%d/landed" % self.server.server_address[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = "".join("%s: %s\n" % (k.lower(), v) for k, v in self.headers.items()).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;
    let mut child = tokio::process::Command::new("python3")
        .args(["-c", SCRIPT])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs");
    let out = child.stdout.take().unwrap();
    let mut line = String::new();
    tokio::io::BufReader::new(out)
        .read_line(&mut line)
        .await
        .unwrap();
    (line.trim().parse().expect("the port"), child)
}

#[tokio::test]
async fn a_python_upstream_sees_the_identity_and_redirects_go_public() {
    let (port, _python) = python_upstream().await;
    let app = spec(
        format!("http://127.0.0.1:{port}"),
        &["X-Webauth-User: {{internal.logins}}"],
    );
    let (mut tx, _agent) = tunnel(&app).await;
    let jwt = user("alice", &["alice"]);
    for _ in 0..2 {
        let mut req = request("/echo", Some(&jwt), full(""));
        let forged = "admin".parse().unwrap();
        req.headers_mut().insert("x-webauth-user", forged);
        let (status, echo) = text_of(tx.send_request(req).await.unwrap()).await;
        assert_eq!(status, 200, "{echo}");
        assert_eq!(header_lines(&echo, "x-webauth-user"), ["alice"]);
        assert_eq!(header_lines(&echo, "hop-jwt-assertion"), [jwt.as_str()]);
        assert_eq!(header_lines(&echo, "host"), [format!("127.0.0.1:{port}")]);
    }
    let resp = tx
        .send_request(request("/go", Some(&jwt), full("")))
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(
        resp.headers()["location"],
        format!("https://{PUBLIC}/landed")
    );
}
