//! Deadlines before authentication, with real sockets against the real binary: an SSH client
//! that sends its banner and then nothing (at the proxy's jump host and at a node agent's own
//! listener), an HTTP/1.1 request head cut short, an HTTP/2 connection that never sends a
//! request, and an agent tunnel that never says hello. Each must be closed near its (shortened)
//! deadline.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clock;
use crate::harness::*;

/// The deadline every test here configures.
const DEADLINE: Duration = Duration::from_secs(2);
/// How late a close may come: scheduling, and HTTP/2's graceful GOAWAY (1 s grace).
const SLACK: Duration = Duration::from_millis(1800);

/// Reads until the peer closes; how long that took from `since`, or `None` if it had not closed
/// within `DEADLINE + SLACK + 3 s`.
fn closed_after(s: &mut impl Read, since: Instant) -> Option<Duration> {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(clock::since(since)),
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return None;
            }
            // A reset, or TLS ending without close_notify: closed either way.
            Err(_) => return Some(clock::since(since)),
        }
    }
}

fn assert_near_deadline(what: &str, took: Option<Duration>) {
    let took = took.unwrap_or_else(|| panic!("{what}: still open well after the deadline"));
    assert!(
        took + Duration::from_millis(100) >= DEADLINE && took <= DEADLINE + SLACK,
        "{what}: closed after {took:?}, deadline {DEADLINE:?}"
    );
    eprintln!("{what}: closed after {took:?}");
}

fn tcp(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE + SLACK + Duration::from_secs(3)))
        .unwrap();
    s
}

/// An SSH client that sends its identification line and then nothing.
fn ssh_banner_then_silence(addr: &str) -> Option<Duration> {
    let mut s = tcp(addr);
    let started = clock::monotonic_now();
    s.write_all(b"SSH-2.0-x\r\n").unwrap();
    closed_after(&mut s, started)
}

/// Accepts any server certificate: these tests are about deadlines, not trust.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

pub(crate) type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS connection to the proxy with `alpn`, and a client certificate when `identity` names
/// a PEM certificate and key; the handshake is complete when this returns.
pub(crate) fn tls(addr: &str, alpn: &[u8], identity: Option<(&Path, &Path)>) -> Tls {
    use rustls::pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)));
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
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp(addr));
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).unwrap();
    }
    // TLS 1.3: the server reads the client's Finished (and certificate) with its first read.
    s.flush().unwrap();
    s
}

/// TLS to the web route, then half a request head: `GET / HTTP/1.1`, one header, no end.
fn partial_http1_head(addr: &str) -> Option<Duration> {
    let mut s = tls(addr, b"http/1.1", None);
    let started = clock::monotonic_now();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    closed_after(&mut s, started)
}

/// TLS with ALPN h2, the client preface and an empty SETTINGS frame, then nothing.
fn idle_http2(addr: &str) -> Option<Duration> {
    let mut s = tls(addr, b"h2", None);
    let started = clock::monotonic_now();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).unwrap();
    closed_after(&mut s, started)
}

/// An agent's tunnel connection, with the agent's own certificate, that never says hello.
fn silent_tunnel(addr: &str, agent_dir: &Path) -> Option<Duration> {
    let (cert, key) = (agent_dir.join("host.crt"), agent_dir.join("host.key"));
    let mut s = tls(addr, b"hop-tunnel", Some((&cert, &key)));
    closed_after(&mut s, clock::monotonic_now())
}

/// A child process killed when the test ends, pass or fail.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a node agent listening for SSH directly on `ssh_port`, with the shortened deadline.
fn start_node(a: &Appliance, data: &Path, ssh_port: u16) -> Killed {
    let config = data.with_extension("yaml");
    std::fs::write(
        &config,
        format!("ssh_service:\n  listen_addr: 127.0.0.1:{ssh_port}\n  auth_timeout: 2s\n"),
    )
    .unwrap();
    let child = Command::new(HOP)
        .args(["start", "--config"])
        .arg(&config)
        .args(["--roles", "node", "--proxy", &a.addr, "--ca-pin", &a.pin])
        .args([
            "--token",
            &a.join_token("node"),
            "--nodename",
            "n1",
            "--data-dir",
        ])
        .arg(data)
        .env("HOP_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(data.with_extension("log")).unwrap(),
        ))
        .spawn()
        .unwrap();
    Killed(child)
}

/// Waits until something accepts connections on `port`.
fn wait_listening(port: u16, what: &str) {
    let deadline = clock::monotonic_now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(clock::monotonic_now() < deadline, "{what} never listened");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn stalled_clients_are_closed_at_their_pre_authentication_deadlines() {
    let a = Appliance::start_with(
        "",
        "  ssh_auth_timeout: 2s\n  http_header_timeout: 2s\n  http_idle_timeout: 2s\n  tunnel_hello_timeout: 2s\n",
    );
    let data = a.dir.path().join("node");
    let ssh_port = free_port();
    let _node = start_node(&a, &data, ssh_port);
    wait_listening(ssh_port, "the node's SSH listener");

    let addr = a.addr.clone();
    let node_addr = format!("127.0.0.1:{ssh_port}");
    let agent_dir = data.join("agent");
    let checks: Vec<(&str, std::thread::JoinHandle<Option<Duration>>)> = vec![
        ("jump host SSH banner", {
            let addr = addr.clone();
            std::thread::spawn(move || ssh_banner_then_silence(&addr))
        }),
        ("node SSH banner", {
            std::thread::spawn(move || ssh_banner_then_silence(&node_addr))
        }),
        ("partial HTTP/1.1 head", {
            let addr = addr.clone();
            std::thread::spawn(move || partial_http1_head(&addr))
        }),
        ("idle HTTP/2 connection", {
            let addr = addr.clone();
            std::thread::spawn(move || idle_http2(&addr))
        }),
        ("tunnel without hello", {
            std::thread::spawn(move || silent_tunnel(&addr, &agent_dir))
        }),
    ];
    for (what, t) in checks {
        assert_near_deadline(what, t.join().unwrap());
    }

    // A client that does speak is served as before.
    let out = Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("https://{}/webapi/ping", a.addr))
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "200");
}
