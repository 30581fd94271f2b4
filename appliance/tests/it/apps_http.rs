//! HTTP applications end to end, the support the `apps_http_*` tests share: one appliance whose
//! public address is `apps.test:PORT` (so applications live at `NAME.apps.test:PORT`, resolved to
//! loopback by each client), an app agent publishing two web apps (`web` and `other`, `env=dev`)
//! in front of the real Python upstream of `tests/fixtures/app_upstream.py`, roles that grant only
//! application access (`app-dev`: `env=dev`; `app-prod`: `env=prod`, which these apps are not),
//! users with their own `HOP_HOME`, curl as the HTTP client, a raw TLS socket for what curl cannot
//! send, and the checks of the identity the upstream receives (ES256 JWT against the JWKS).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::clock;
use crate::harness::*;
use crate::ssh::Killed;

pub(crate) const DOMAIN: &str = "apps.test";

const ROLES: &str = "kind: role\nversion: v7\nmetadata:\n  name: app-dev\nspec:\n  allow:\n    app_labels:\n      env: dev\n---\nkind: role\nversion: v7\nmetadata:\n  name: app-prod\nspec:\n  allow:\n    app_labels:\n      env: prod\n";

/// The appliance, the upstream and the app agent.
pub(crate) struct AppCluster {
    pub a: Appliance,
    pub port: u16,
    pub upstream: u16,
    _upstream: Killed,
    _agent: Killed,
    users: std::cell::Cell<u32>,
}

/// A user logged in with their own `HOP_HOME`.
pub(crate) struct AppUser {
    pub name: String,
    pub home: PathBuf,
}

impl AppCluster {
    pub fn start() -> Self {
        Self::start_with("", &[])
    }

    /// [`Self::start`] with extra lines under `auth_service` and extra `--app` specs for the
    /// agent (`name=N,uri=U,labels=L`; `{upstream}` stands for the upstream's port).
    pub fn start_with(extra_auth: &str, extra_apps: &[String]) -> Self {
        let mut a = Appliance::start(extra_auth);
        // The public address needs the port, known only now: restart on it with that address.
        a.stop();
        let port: u16 = a.addr.rsplit_once(':').unwrap().1.parse().unwrap();
        let cfg = a.dir.path().join("hop.yaml");
        let mut text = std::fs::read_to_string(&cfg).unwrap();
        text.push_str(&format!("  public_addr: [\"{DOMAIN}:{port}\"]\n"));
        std::fs::write(&cfg, text).unwrap();
        a.restart_same_port();
        let roles = a.dir.path().join("app-roles.yaml");
        std::fs::write(&roles, ROLES).unwrap();
        a.ok(&["admin", "create", "-f", roles.to_str().unwrap()]);
        let (upstream_child, upstream) = start_upstream();
        let agent = start_app_agent(&a, upstream, extra_apps);
        let c = Self {
            a,
            port,
            upstream,
            _upstream: upstream_child,
            _agent: agent,
            users: std::cell::Cell::new(0),
        };
        let probe = c.user("app-dev");
        let deadline = clock::monotonic_now() + Duration::from_secs(30);
        loop {
            let ls = stdout(&probe.hop(&["apps", "ls"]));
            if ls.contains("web") && ls.contains("other") {
                break;
            }
            assert!(
                clock::monotonic_now() < deadline,
                "the web apps were never listed: {ls}\n{}",
                c.a.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        c
    }

    /// A fresh user holding only `roles`, logged in.
    pub fn user(&self, roles: &str) -> AppUser {
        self.user_with_ttl(roles, None)
    }

    pub fn user_with_ttl(&self, roles: &str, ttl: Option<&str>) -> AppUser {
        let n = self.users.get() + 1;
        self.users.set(n);
        let name = format!("appuser{n}");
        let secret = self.a.add_user(&name, roles, "nobody");
        let u = AppUser {
            home: self.a.dir.path().join(format!("home-{name}")),
            name,
        };
        let code = totp(&secret, 30);
        let mut args = vec![
            "login",
            "--proxy",
            &self.a.addr,
            "--ca-pin",
            &self.a.pin,
            "--user",
            &u.name,
            "--password-stdin",
            "--otp",
            &code,
        ];
        if let Some(t) = ttl {
            args.extend(["--ttl", t]);
        }
        let out = u.hop_stdin(&args, &format!("{PASSWORD}\n"));
        assert!(out.status.success(), "login {}: {}", u.name, stderr(&out));
        u
    }

    /// The ends of the appliance's and the app agent's logs, for failure messages.
    pub fn logs(&self) -> String {
        let tail = |s: String| {
            let mut i = s.len().saturating_sub(3000);
            while !s.is_char_boundary(i) {
                i += 1;
            }
            s[i..].to_string()
        };
        let agent =
            std::fs::read_to_string(self.a.dir.path().join("app-agent.log")).unwrap_or_default();
        format!(
            "--- appliance ---\n{}\n--- app agent ---\n{}",
            tail(self.a.log()),
            tail(agent)
        )
    }

    /// `https://NAME.apps.test:PORT`
    pub fn app_url(&self, app: &str) -> String {
        format!("https://{app}.{DOMAIN}:{}", self.port)
    }

    /// The proxy's own address, as browsers reach it (`https://apps.test:PORT`).
    pub fn proxy_url(&self) -> String {
        format!("https://{DOMAIN}:{}", self.port)
    }

    /// curl's `--resolve` for the proxy and both apps, to loopback.
    pub fn resolve_args(&self) -> Vec<String> {
        ["", "web.", "other."]
            .iter()
            .flat_map(|p| {
                [
                    "--resolve".to_string(),
                    format!("{p}{DOMAIN}:{}:127.0.0.1", self.port),
                ]
            })
            .collect()
    }

    /// Audit events of `kind` (as JSON), now.
    pub fn events(&self, kind: &str) -> Vec<Value> {
        self.a
            .ok(&[
                "admin", "audit", "search", "--type", kind, "--format", "json",
            ])
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits (10 s at most) for an audit event of `kind` matching `pred`.
    pub fn wait_event(&self, kind: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = clock::monotonic_now() + Duration::from_secs(10);
        loop {
            let events = self.events(kind);
            if let Some(e) = events.iter().find(|e| pred(e)) {
                return e.clone();
            }
            assert!(
                clock::monotonic_now() < deadline,
                "no matching {kind} event among {events:#?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl AppUser {
    pub fn hop(&self, args: &[&str]) -> Output {
        self.hop_stdin(args, "")
    }

    pub fn hop_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(HOP)
            .args(args)
            .env("HOP_HOME", &self.home)
            .env_remove("HOP_PROXY")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        wait_output(child, Duration::from_secs(30))
    }

    /// `hop apps config APP --format FORMAT`, which must succeed.
    pub fn config(&self, app: &str, format: &str) -> String {
        let out = self.hop(&["apps", "config", app, "--format", format]);
        assert!(out.status.success(), "apps config: {}", stderr(&out));
        stdout(&out).trim().to_string()
    }

    /// The app certificate's files: (ca, cert, key).
    pub fn app_files(&self, app: &str) -> (String, String, String) {
        (
            self.config(app, "ca"),
            self.config(app, "cert"),
            self.config(app, "key"),
        )
    }
}

/// Waits for `child` at most `limit`, killing it then.
pub(crate) fn wait_output(mut child: Child, limit: Duration) -> Output {
    let deadline = clock::monotonic_now() + limit;
    while child.try_wait().unwrap().is_none() {
        if clock::monotonic_now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures")).join(name)
}

/// The Python upstream on a port of its choosing.
fn start_upstream() -> (Killed, u16) {
    let mut child = Command::new("python3")
        .arg(fixture("app_upstream.py"))
        .arg("0")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 runs the app upstream fixture");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("the upstream said {line:?}"));
    (Killed(child), port)
}

fn start_app_agent(a: &Appliance, upstream: u16, extra_apps: &[String]) -> Killed {
    let dir = a.dir.path().join("app-agent");
    let uri = format!("http://127.0.0.1:{upstream}");
    Killed(
        Command::new(HOP)
            .args([
                "start", "--roles", "app", "--proxy", &a.addr, "--ca-pin", &a.pin,
            ])
            .args(["--token", &a.join_token("app"), "--data-dir"])
            .arg(&dir)
            .args(["--app", &format!("name=web,uri={uri},labels=env=dev")])
            .args(["--app", &format!("name=other,uri={uri},labels=env=dev")])
            .args(extra_apps.iter().flat_map(|spec| {
                [
                    "--app".to_string(),
                    spec.replace("{upstream}", &upstream.to_string()),
                ]
            }))
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.with_extension("log")).unwrap(),
            ))
            .spawn()
            .unwrap(),
    )
}

/// Runs curl (silent, errors shown, 60 s at most) and returns its output.
pub(crate) fn curl(args: &[String]) -> Output {
    let child = Command::new("curl")
        .args(["-sS", "--max-time", "60"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_output(child, Duration::from_secs(70))
}

/// curl's arguments to reach `app` with `u`'s application certificate.
pub(crate) fn cert_args(c: &AppCluster, u: &AppUser, app: &str) -> Vec<String> {
    let (ca, cert, key) = u.app_files(app);
    let mut args = vec![
        "--cacert".to_string(),
        ca,
        "--cert".into(),
        cert,
        "--key".into(),
        key,
    ];
    args.extend(c.resolve_args());
    args
}

/// Splits curl `-i` output into (status, lower-cased headers, body).
pub(crate) fn response(out: &Output) -> (u16, Vec<(String, String)>, String) {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // Skip interim responses (100 Continue).
    let mut rest = text.as_str();
    loop {
        let (head, body) = rest.split_once("\r\n\r\n").unwrap_or((rest, ""));
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if status == 100 {
            rest = body;
            continue;
        }
        let headers = head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        return (status, headers, body.to_string());
    }
}

/// A header of a parsed response.
pub(crate) fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The headers the upstream received, from its `/headers` echo (lower-cased names).
pub(crate) fn upstream_headers(body: &str) -> Vec<(String, String)> {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0].as_str().unwrap().to_ascii_lowercase(),
                p[1].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// base64url without padding (RFC 7515), decoded.
pub(crate) fn b64url(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for ch in s.trim_end_matches('=').bytes() {
        let v = ALPHABET
            .iter()
            .position(|&a| a == ch)
            .unwrap_or_else(|| panic!("not base64url: {s:?}")) as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// Verifies an ES256 JWT against a JWKS document; returns its claims.
pub(crate) fn verify_jwt(jwt: &str, jwks: &Value) -> Value {
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "not a JWS compact serialization: {jwt}");
    let header: Value = serde_json::from_slice(&b64url(parts[0])).unwrap();
    assert_eq!(header["alg"], "ES256", "{header}");
    let kid = header["kid"].as_str().unwrap();
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid)
        .unwrap_or_else(|| panic!("kid {kid} is not in the JWKS {jwks}"));
    assert_eq!(key["kty"], "EC");
    assert_eq!(key["crv"], "P-256");
    let mut point = vec![4u8];
    point.extend(b64url(key["x"].as_str().unwrap()));
    point.extend(b64url(key["y"].as_str().unwrap()));
    let signed = format!("{}.{}", parts[0], parts[1]);
    aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
        &point,
    )
    .verify(signed.as_bytes(), &b64url(parts[2]))
    .unwrap_or_else(|_| panic!("the JWT's signature does not verify with kid {kid}"));
    serde_json::from_slice(&b64url(parts[1])).unwrap()
}

/// A TLS connection to the proxy as `sni` with `alpn`, verifying the proxy's certificate
/// against `ca_pem` for that name, with a client certificate when given.
pub(crate) type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

pub(crate) fn tls_to(
    port: u16,
    sni: &str,
    ca_pem: &Path,
    alpn: &[u8],
    identity: Option<(&Path, &Path)>,
) -> Tls {
    use rustls::pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(ca_pem).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => {
            let chain: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(cert)
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn
            .complete_io(&mut s.sock)
            .unwrap_or_else(|e| panic!("TLS to {sni}: {e}"));
    }
    s
}

/// Reads one HTTP/1.1 response head from `s`: (status, lower-cased headers).
pub(crate) fn read_head(s: &mut impl Read) -> (u16, Vec<(String, String)>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
        assert!(head.len() < 64 * 1024, "response head too long");
    }
    let text = String::from_utf8_lossy(&head);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = text
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers)
}

/// A masked client WebSocket frame (RFC 6455 §5.2).
pub(crate) fn ws_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x5a, 0x17, 0xc3, 0x88];
    let mut f = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n < 65536 => {
            f.push(0x80 | 126);
            f.extend((n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend((n as u64).to_be_bytes());
        }
    }
    f.extend(mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Reads one server frame: (opcode, payload); `None` at EOF or error.
pub(crate) fn ws_read(s: &mut impl Read) -> Option<(u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).ok()?;
    let mut len = u64::from(h[1] & 0x7f);
    if len == 126 {
        let mut b = [0u8; 2];
        s.read_exact(&mut b).ok()?;
        len = u64::from(u16::from_be_bytes(b));
    } else if len == 127 {
        let mut b = [0u8; 8];
        s.read_exact(&mut b).ok()?;
        len = u64::from_be_bytes(b);
    }
    let mut payload = vec![0u8; usize::try_from(len).ok()?];
    s.read_exact(&mut payload).ok()?;
    Some((h[0] & 0x0f, payload))
}

/// A WebSocket upgrade request for `/ws` on `host`, with `origin` and `cookie` if given.
pub(crate) fn ws_upgrade(host: &str, origin: Option<&str>, cookie: Option<&str>) -> String {
    let mut req = format!(
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    if let Some(o) = origin {
        req.push_str(&format!("Origin: {o}\r\n"));
    }
    if let Some(c) = cookie {
        req.push_str(&format!("Cookie: {c}\r\n"));
    }
    req.push_str("\r\n");
    req
}

/// Checks a `101` answer to [`ws_upgrade`] as a browser would: the upgrade named and the key
/// answered (RFC 6455 §4.1; the sample key's accept value).
pub(crate) fn check_ws_accept(status: u16, headers: &[(String, String)]) {
    assert_eq!(status, 101, "{headers:?}");
    assert_eq!(
        header(headers, "upgrade")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("websocket"),
        "{headers:?}"
    );
    assert!(
        header(headers, "connection").is_some_and(|v| v.to_ascii_lowercase().contains("upgrade")),
        "{headers:?}"
    );
    assert_eq!(
        header(headers, "sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "{headers:?}"
    );
}

/// Sends `msg` as a text frame; answers what came back (`None`: nothing, the stream ended).
pub(crate) fn ws_echo(s: &mut Tls, msg: &str) -> Option<(u8, Vec<u8>)> {
    s.write_all(&ws_frame(1, msg.as_bytes())).unwrap();
    s.flush().unwrap();
    ws_read(s)
}
