//! The kube forwarder driven as the proxy drives it: HTTP/1.1 (hyper client) on an in-memory
//! stream standing for the tunnel's data connection, against an in-process API server on
//! loopback (rustls, asking for a client certificate from its own CA, certificate only for the
//! name `kube.test` so that `tls-server-name` must be used) that reports the headers it saw,
//! streams a watch chunk by chunk, echoes a request body as it arrives, and switches protocols.

use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use hop_config::services::KubeClusterSpec;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    PKCS_ECDSA_P256_SHA256,
};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};

use super::{Cluster, KubeService, forward};

type TestBody = BoxBody<Bytes, std::io::Error>;

/// The CA, the API server's certificate (for `kube.test` only) and the agent's client
/// certificate, as PEM.
struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "test kube CA");
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let leaf = |name: &str, eku| {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::new(vec![name.to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![eku];
        (
            p.signed_by(&key, &issuer).unwrap().pem(),
            key.serialize_pem(),
        )
    };
    Pki {
        ca: ca_pem,
        server: leaf("kube.test", ExtendedKeyUsagePurpose::ServerAuth),
        client: leaf("hop-kube-agent", ExtendedKeyUsagePurpose::ClientAuth),
    }
}

/// What the test API server saw: each request's headers, and whether it came with a client
/// certificate.
#[derive(Default)]
struct Seen {
    requests: Mutex<Vec<(String, HeaderMap, bool)>>,
    watch_gate: Notify,
}

impl Seen {
    fn last(&self) -> (String, HeaderMap, bool) {
        self.requests
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("no request reached the API server")
    }
    fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

fn full(b: impl Into<Bytes>) -> TestBody {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

async fn api_route(
    seen: Arc<Seen>,
    with_cert: bool,
    mut req: Request<Incoming>,
) -> Result<Response<TestBody>, Infallible> {
    let path = req.uri().path_and_query().unwrap().to_string();
    seen.requests
        .lock()
        .unwrap()
        .push((path.clone(), req.headers().clone(), with_cert));
    let resp = match req.uri().path() {
        "/api/v1/namespaces/default/pods" if path.contains("watch=1") => {
            let seen = seen.clone();
            let events = futures_util::stream::unfold(0, move |n| {
                let seen = seen.clone();
                async move {
                    match n {
                        0 => Some((Ok(Frame::data(Bytes::from("{\"type\":\"ADDED\"}\n"))), 1)),
                        1 => {
                            seen.watch_gate.notified().await;
                            Some((Ok(Frame::data(Bytes::from("{\"type\":\"MODIFIED\"}\n"))), 2))
                        }
                        _ => None,
                    }
                }
            });
            Response::new(BodyExt::boxed(StreamBody::new(events)))
        }
        "/api/v1/namespaces/default/pods/web-1/exec" => {
            let up = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let mut io = TokioIo::new(up.await.unwrap());
                let mut buf = [0u8; 256];
                loop {
                    let n = io.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    let mut out = b"api:".to_vec();
                    out.extend_from_slice(&buf[..n]);
                    io.write_all(&out).await.unwrap();
                }
            });
            let mut r = Response::new(full(""));
            *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            r.headers_mut()
                .insert("connection", "Upgrade".parse().unwrap());
            r.headers_mut()
                .insert("upgrade", "SPDY/3.1".parse().unwrap());
            r.headers_mut().insert(
                "x-stream-protocol-version",
                "v4.channel.k8s.io".parse().unwrap(),
            );
            r
        }
        "/slow-head" => {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Response::new(full(""))
        }
        "/echo-body" => {
            let body = req
                .into_body()
                .map_frame(|f| f)
                .map_err(std::io::Error::other);
            Response::new(BodyExt::boxed(body))
        }
        _ => Response::new(full("{\"kind\":\"PodList\",\"items\":[]}")),
    };
    Ok(resp)
}

/// Starts the API server on loopback; returns its port.
async fn api_server(pki: &Pki, seen: Arc<Seen>) -> u16 {
    let provider = hop_net::pem::provider();
    let mut roots = rustls::RootCertStore::empty();
    for c in hop_net::pem::parse_chain(&pki.ca).unwrap() {
        roots.add(c).unwrap();
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            hop_net::pem::parse_chain(&pki.server.0).unwrap(),
            hop_net::pem::parse_key(&pki.server.1).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let with_cert = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .is_some_and(|c| !c.is_empty());
                let svc = service_fn(move |req| api_route(seen.clone(), with_cert, req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    port
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A kubeconfig for the API server at `port`: CA inline, the client certificate in files next
/// to it (relative names), or a token.
fn kubeconfig(dir: &Path, pki: &Pki, port: u16, token: bool) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("certs")).unwrap();
    std::fs::write(dir.join("certs/agent.crt"), &pki.client.0).unwrap();
    std::fs::write(dir.join("certs/agent.key"), &pki.client.1).unwrap();
    let user = if token {
        "    token: agent-token\n".to_string()
    } else {
        "    client-certificate: certs/agent.crt\n    client-key: certs/agent.key\n".to_string()
    };
    let text = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: k\n  cluster:\n    server: https://127.0.0.1:{port}\n    certificate-authority-data: {}\n    tls-server-name: kube.test\nusers:\n- name: u\n  user:\n{user}contexts:\n- name: c\n  context: {{cluster: k, user: u}}\n",
        b64(&pki.ca)
    );
    let path = dir.join(if token {
        "token.kubeconfig"
    } else {
        "cert.kubeconfig"
    });
    std::fs::write(&path, text).unwrap();
    path
}

fn cluster(name: &str, kubeconfig: &Path) -> Arc<Cluster> {
    let spec = KubeClusterSpec {
        name: name.into(),
        kubeconfig: Some(kubeconfig.to_path_buf()),
        ..Default::default()
    };
    let svc = KubeService::new(&[spec]).unwrap();
    svc.clusters[name].clone()
}

/// A hyper client on an in-memory stream served by the forwarder, as the proxy's.
async fn agent(cluster: Arc<Cluster>) -> SendRequest<TestBody> {
    let (near, far) = tokio::io::duplex(64 * 1024);
    tokio::spawn(forward::serve(cluster, far));
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(near))
        .await
        .unwrap();
    tokio::spawn(conn.with_upgrades());
    send
}

fn get(path: &str) -> http::request::Builder {
    Request::get(path).header("host", "kube.proxy.test")
}

struct Setup {
    _dir: tempfile::TempDir,
    seen: Arc<Seen>,
    cert: Arc<Cluster>,
    token: Arc<Cluster>,
}

async fn setup() -> Setup {
    let pki = pki();
    let seen = Arc::new(Seen::default());
    let port = api_server(&pki, seen.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let cert = cluster("dev", &kubeconfig(dir.path(), &pki, port, false));
    let token = cluster("dev-token", &kubeconfig(dir.path(), &pki, port, true));
    Setup {
        _dir: dir,
        seen,
        cert,
        token,
    }
}

async fn body_text(resp: Response<Incoming>) -> String {
    String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap()
}

#[tokio::test]
async fn the_api_server_sees_the_impersonation_and_the_agents_credentials_only() {
    let s = setup().await;
    let mut send = agent(s.cert.clone()).await;
    let req = get("/api/v1/namespaces/default/pods?limit=500")
        .header("impersonate-user", "alice@dev")
        .header("impersonate-group", "developers")
        .header("impersonate-group", "system:authenticated")
        .header("authorization", "Bearer client-token")
        .header("impersonate-uid", "0")
        .header("impersonate-extra-scopes", "cluster-admin")
        .header("hop-jwt-assertion", "forged")
        .header("accept", "application/json")
        .body(full(""))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(body_text(resp).await.contains("PodList"));
    let (path, h, with_cert) = s.seen.last();
    assert_eq!(path, "/api/v1/namespaces/default/pods?limit=500");
    assert!(
        with_cert,
        "the agent's client certificate was not presented"
    );
    assert_eq!(h["impersonate-user"], "alice@dev");
    let groups: Vec<_> = h.get_all("impersonate-group").iter().collect();
    assert_eq!(groups, ["developers", "system:authenticated"]);
    for gone in [
        "authorization",
        "impersonate-uid",
        "impersonate-extra-scopes",
        "hop-jwt-assertion",
    ] {
        assert!(!h.contains_key(gone), "{gone} reached the API server");
    }
    assert_eq!(
        h["host"],
        format!("127.0.0.1:{}", s.cert.api.base.port_u16().unwrap())
    );
    assert_eq!(h["accept"], "application/json");

    // The same connection carries the next request (keep-alive), with a token this time.
    let mut send = agent(s.token.clone()).await;
    let req = get("/version")
        .header("impersonate-user", "bob")
        .header("authorization", "Bearer client-token")
        .body(full(""))
        .unwrap();
    assert_eq!(send.send_request(req).await.unwrap().status(), 200);
    let (_, h, with_cert) = s.seen.last();
    assert!(!with_cert);
    assert_eq!(h["authorization"], "Bearer agent-token");
    assert_eq!(h.get_all("authorization").iter().count(), 1);
}

#[tokio::test]
async fn without_exactly_one_user_to_impersonate_nothing_is_forwarded() {
    let s = setup().await;
    let mut send = agent(s.cert.clone()).await;
    for users in [vec![], vec!["alice", "system:admin"], vec![""]] {
        let mut req = get("/api/v1/secrets");
        for u in &users {
            req = req.header("impersonate-user", *u);
        }
        let resp = send
            .send_request(req.body(full("")).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{users:?}");
        assert_eq!(resp.headers()["content-type"], "application/json");
        let status: serde_json::Value = serde_json::from_str(&body_text(resp).await).unwrap();
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["apiVersion"], "v1");
        assert_eq!(status["status"], "Failure");
        assert_eq!(status["reason"], "Forbidden");
        assert_eq!(status["code"], 403);
        assert!(
            status["message"]
                .as_str()
                .unwrap()
                .contains("impersonate-user")
        );
    }
    assert_eq!(
        s.seen.count(),
        0,
        "a refused request reached the API server"
    );
}

#[tokio::test]
async fn a_watch_streams_event_by_event() {
    let s = setup().await;
    let mut send = agent(s.cert.clone()).await;
    let req = get("/api/v1/namespaces/default/pods?watch=1")
        .header("impersonate-user", "alice")
        .body(full(""))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("the first event was held back")
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "{\"type\":\"ADDED\"}\n");
    s.seen.watch_gate.notify_one();
    let second = body.frame().await.unwrap().unwrap();
    assert_eq!(second.into_data().unwrap(), "{\"type\":\"MODIFIED\"}\n");
}

/// An API server that sends no response head within the deadline is a 504 `Status`; a watch
/// whose body outlasts the deadline is not cut by it.
#[tokio::test]
async fn an_api_server_that_does_not_answer_in_time_is_a_504() {
    let s = setup().await;
    let mut send = agent(s.cert.clone()).await;
    let req = get("/slow-head")
        .header("impersonate-user", "alice")
        .body(full(""))
        .unwrap();
    let asked = hop_platform::clock::now();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(hop_platform::clock::since(asked) < Duration::from_secs(5));
    let status: serde_json::Value = serde_json::from_str(&body_text(resp).await).unwrap();
    assert_eq!(status["reason"], "Timeout", "{status}");
    let mut send = agent(s.cert.clone()).await;
    let req = get("/api/v1/namespaces/default/pods?watch=1")
        .header("impersonate-user", "alice")
        .body(full(""))
        .unwrap();
    let mut body = send.send_request(req).await.unwrap().into_body();
    assert!(body.frame().await.is_some());
    tokio::time::sleep(forward::RESPONSE_HEAD * 2).await;
    s.seen.watch_gate.notify_one();
    let second = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("the watch was cut")
        .unwrap()
        .unwrap();
    assert_eq!(second.into_data().unwrap(), "{\"type\":\"MODIFIED\"}\n");
}

#[tokio::test]
async fn a_request_body_streams_to_the_api_server_as_it_is_sent() {
    let s = setup().await;
    let mut send = agent(s.cert.clone()).await;
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok(Frame::data(b)), rx))
    });
    let req = Request::post("/echo-body")
        .header("impersonate-user", "alice")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap();
    let pending = tokio::spawn(async move { send.send_request(req).await });
    tx.send(Bytes::from("one")).await.unwrap();
    let resp = pending.await.unwrap().unwrap();
    let mut body = resp.into_body();
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .unwrap();
    assert_eq!(first.unwrap().unwrap().into_data().unwrap(), "one");
    tx.send(Bytes::from("two")).await.unwrap();
    assert_eq!(
        body.frame().await.unwrap().unwrap().into_data().unwrap(),
        "two"
    );
    drop(tx);
    assert!(
        body.frame()
            .await
            .is_none_or(|f| f.is_ok_and(|f| !f.is_data()))
    );
}

#[tokio::test]
async fn an_upgrade_is_relayed_byte_for_byte() {
    let s = setup().await;
    let mut send = agent(s.cert.clone()).await;
    let req = Request::post("/api/v1/namespaces/default/pods/web-1/exec?command=sh&stdin=true")
        .header("host", "kube.proxy.test")
        .header("impersonate-user", "alice")
        .header("connection", "Upgrade")
        .header("upgrade", "SPDY/3.1")
        .header("x-stream-protocol-version", "v4.channel.k8s.io")
        .body(BodyExt::boxed(Empty::new().map_err(|e| match e {})))
        .unwrap();
    let mut resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(resp.headers()["upgrade"], "SPDY/3.1");
    assert_eq!(
        resp.headers()["x-stream-protocol-version"],
        "v4.channel.k8s.io"
    );
    let (_, h, _) = s.seen.last();
    assert_eq!(h["connection"], "Upgrade");
    assert_eq!(h["upgrade"], "SPDY/3.1");
    let mut io = TokioIo::new(hyper::upgrade::on(&mut resp).await.unwrap());
    let frame: Vec<u8> = (0u8..=255).collect();
    io.write_all(&frame[..200]).await.unwrap();
    let mut got = vec![0u8; 204];
    tokio::time::timeout(Duration::from_secs(5), io.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got[..4], b"api:");
    assert_eq!(&got[4..], &frame[..200]);
}

#[tokio::test]
async fn an_unreachable_api_server_is_a_502_naming_the_cluster() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let c = cluster("gone", &kubeconfig(dir.path(), &pki, port, false));
    let mut send = agent(c).await;
    let req = get("/version")
        .header("impersonate-user", "alice")
        .body(full(""))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let status: serde_json::Value = serde_json::from_str(&body_text(resp).await).unwrap();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["code"], 502);
    let msg = status["message"].as_str().unwrap();
    assert!(
        msg.contains("kube cluster \"gone\"") && msg.contains("cannot connect"),
        "{msg}"
    );
}

#[tokio::test]
async fn start_errors_name_the_cluster_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.kubeconfig");
    let spec = KubeClusterSpec {
        name: "dev".into(),
        kubeconfig: Some(missing.clone()),
        ..Default::default()
    };
    let e = KubeService::new(&[spec]).err().unwrap().to_string();
    assert!(e.starts_with("kube cluster \"dev\": kubeconfig "), "{e}");
    assert!(e.contains(&missing.display().to_string()), "{e}");
    let pki = pki();
    let path = kubeconfig(dir.path(), &pki, 1, false);
    std::fs::remove_file(dir.path().join("certs/agent.key")).unwrap();
    let spec = KubeClusterSpec {
        name: "dev".into(),
        kubeconfig: Some(path),
        context: Some("c".into()),
        ..Default::default()
    };
    let e = KubeService::new(std::slice::from_ref(&spec))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("context \"c\"") && e.contains("agent.key"),
        "{e}"
    );
    // A key that is not the certificate's.
    std::fs::write(dir.path().join("certs/agent.key"), &pki.server.1).unwrap();
    let e = KubeService::new(&[spec]).err().unwrap().to_string();
    let want = "context \"c\": client-certificate/client-key: not usable";
    assert!(e.contains(want), "{e}");
}

#[tokio::test]
async fn dials_for_other_clusters_or_malformed_are_refused_with_their_reason() {
    let s = setup().await;
    let svc = KubeService {
        clusters: [("dev".to_string(), s.cert.clone())].into_iter().collect(),
    };
    let refusal = |target: &str| {
        let ctx = hop_api::dial::kube::KubeDial::from_target(target).expect("a kube target");
        svc.cluster_for(ctx).err().map(|e| e.to_string())
    };
    let e = refusal("@kube:{\"cluster\":").unwrap();
    assert!(e.starts_with("kubernetes session context: "), "{e}");
    let other = hop_api::dial::kube::KubeDial {
        cluster: "prod".into(),
        user: "alice".into(),
        session_id: "00".into(),
        client_addr: "127.0.0.1:1".into(),
    };
    let e = refusal(&other.to_target()).unwrap();
    assert_eq!(e, "this agent does not serve kube cluster \"prod\"");
    let dev = hop_api::dial::kube::KubeDial {
        cluster: "dev".into(),
        ..other
    };
    assert_eq!(refusal(&dev.to_target()), None);
    let announced = svc.announcements();
    assert_eq!(announced.len(), 1);
    assert_eq!(
        (announced[0].kind.as_str(), announced[0].name.as_str()),
        ("kube_cluster", "dev")
    );
    assert_eq!(announced[0].target, None);
}
