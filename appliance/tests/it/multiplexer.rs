//! The one port with real sockets: classification, redirects, refusals and their counters, limits,
//! and a login that succeeds while thousands of idle sockets sit on the port.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use crate::clock;
use crate::harness::*;

fn metric(a: &Appliance, line_prefix: &str) -> u64 {
    let (_, m) = a.diag_get("/metrics");
    m.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("metric {line_prefix} missing:\n{m}"))
}

/// Sends `bytes` and returns what the server answered before closing (or timing out).
fn exchange(addr: &str, bytes: &[u8], wait: Duration) -> (Vec<u8>, bool) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    (out, closed)
}

#[test]
fn metrics_show_the_data_plane() {
    let a = Appliance::start_with("", "  workers: 2\n");
    let (_, m) = a.diag_get("/metrics");
    assert!(m.contains("hop_dataplane_workers 2"), "{m}");
    assert!(
        m.contains("hop_dataplane_io_driver{driver=\"io_uring\"} 1")
            || m.contains("hop_dataplane_io_driver{driver=\"epoll\"} 1"),
        "{m}"
    );
    assert!(
        a.banner.iter().any(|l| l.contains("2 workers on")),
        "{:?}",
        a.banner
    );
}

/// The sum of a per-worker metric over the workers.
fn per_worker_sum(a: &Appliance, name: &str) -> u64 {
    let (_, m) = a.diag_get("/metrics");
    m.lines()
        .filter(|l| l.starts_with(&format!("{name}{{worker=")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn tls_is_terminated_on_the_workers_under_the_handshake_deadline() {
    let a = Appliance::start_with("", "  workers: 2\n  handshake_timeout: 1s\n");
    let before = per_worker_sum(&a, "hop_dataplane_tls_handshakes_total");
    for _ in 0..4 {
        let out = Command::new("curl")
            .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!("https://{}/web/login", a.addr))
            .output()
            .unwrap();
        assert_eq!(stdout(&out), "200");
    }
    let after = per_worker_sum(&a, "hop_dataplane_tls_handshakes_total");
    assert!(after >= before + 4, "workers terminated {before} → {after}");

    // A PostgreSQL client's SSLRequest is answered and its TLS terminated on a worker too.
    let out = Command::new("openssl")
        .args(["s_client", "-starttls", "postgres", "-connect", &a.addr])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("TLSv1.3"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let with_pg = per_worker_sum(&a, "hop_dataplane_tls_handshakes_total");
    assert!(with_pg > after, "workers terminated {after} → {with_pg}");
    let ok = metric(&a, "hop_proxy_tls_handshakes_total{result=\"success\"}");
    assert!(ok >= 4, "{ok}");

    // A ClientHello offering nothing the proxy accepts: the handshake fails with an alert.
    let (out, closed) = exchange(
        &a.addr,
        &client_hello("example.test"),
        Duration::from_secs(5),
    );
    assert!(closed);
    assert_eq!(out.first(), Some(&0x15), "expected a TLS alert: {out:?}");
    assert_eq!(
        metric(&a, "hop_proxy_tls_handshakes_total{result=\"failure\"}"),
        1
    );

    // A real ClientHello, and then silence: the worker's handshake deadline closes it.
    let hello = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../protocols/testdata/tls_openssl_client_hello.bin"
    ))
    .unwrap();
    let started = clock::monotonic_now();
    let (out, closed) = exchange(&a.addr, &hello, Duration::from_secs(5));
    assert!(closed, "a stalled handshake was left open");
    assert_eq!(out.first(), Some(&0x16), "expected a ServerHello: {out:?}");
    assert!(
        clock::since(started) < Duration::from_secs(4),
        "{:?}",
        clock::since(started)
    );
    assert_eq!(
        metric(&a, "hop_proxy_tls_handshakes_total{result=\"timeout\"}"),
        1
    );
}

#[test]
fn plain_http_is_redirected_to_https_by_a_real_client() {
    let a = Appliance::start("");
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
            &format!("http://{}/web/login", a.addr),
        ])
        .output()
        .unwrap();
    assert_eq!(stdout(&out), format!("308 https://{}/web/login", a.addr));
    assert_eq!(
        metric(&a, "hop_dataplane_classified_total{protocol=\"http1\"}"),
        1
    );
}

#[test]
fn malformed_first_bytes_are_closed_and_counted() {
    let a = Appliance::start_with("", "  first_byte_timeout: 1s\n");
    // Random bytes.
    let (out, closed) = exchange(
        &a.addr,
        b"\x00\x07\xffnot a protocol at all",
        Duration::from_secs(5),
    );
    assert!(out.is_empty() && closed);
    assert_eq!(
        metric(
            &a,
            "hop_dataplane_rejected_total{reason=\"unknown_protocol\"}"
        ),
        1
    );

    // A PROXY header from an address that is not a trusted load balancer.
    let (out, closed) = exchange(
        &a.addr,
        b"PROXY TCP4 203.0.113.9 127.0.0.1 5000 3080\r\n",
        Duration::from_secs(5),
    );
    assert!(out.is_empty() && closed);
    assert_eq!(
        metric(
            &a,
            "hop_dataplane_rejected_total{reason=\"proxy_untrusted\"}"
        ),
        1
    );

    // A ClientHello with an SNI longer than DNS allows.
    let sni = "a".repeat(300);
    let hello = client_hello(&sni);
    let (_, closed) = exchange(&a.addr, &hello, Duration::from_secs(5));
    assert!(closed);
    assert_eq!(
        metric(&a, "hop_dataplane_rejected_total{reason=\"malformed_tls\"}"),
        1
    );

    // A truncated ClientHello and a client that says nothing: both meet the first-byte deadline.
    let started = clock::monotonic_now();
    let (_, closed) = exchange(
        &a.addr,
        &client_hello("example.test")[..40],
        Duration::from_secs(5),
    );
    assert!(closed, "truncated hello left open");
    let (_, closed) = exchange(&a.addr, b"", Duration::from_secs(5));
    assert!(closed, "silent client left open");
    assert!(
        clock::since(started) < Duration::from_secs(5),
        "deadline not enforced: {:?}",
        clock::since(started)
    );
    assert_eq!(
        metric(
            &a,
            "hop_dataplane_rejected_total{reason=\"first_byte_timeout\"}"
        ),
        2
    );

    // SSH on the port reaches the jump host, which answers with its own identification line.
    let (reply, _) = exchange(&a.addr, b"SSH-2.0-OpenSSH_9.2\r\n", Duration::from_secs(2));
    assert!(
        String::from_utf8_lossy(&reply).starts_with("SSH-2.0-Hop_"),
        "{:?}",
        String::from_utf8_lossy(&reply)
    );

    // And the port still serves.
    let (_, body) = a.diag_get("/readyz");
    assert!(body.contains("ready"));
    a.ok(&["admin", "status"]);
}

#[test]
fn trusted_proxy_header_is_honoured() {
    let a = Appliance::start_with("", "  proxy_protocol:\n    trusted_cidrs: [127.0.0.0/8]\n");
    // curl's --haproxy-protocol sends a PROXY v1 header before the HTTP request.
    let out = Command::new("curl")
        .args([
            "-s",
            "--haproxy-protocol",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://{}/", a.addr),
        ])
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "308");
    assert_eq!(
        metric(&a, "hop_dataplane_classified_total{protocol=\"proxy_v1\"}"),
        1
    );
}

#[test]
fn connection_limits_shed_new_connections() {
    let a = Appliance::start_with(
        "",
        "  max_connections_per_ip: 3\n  first_byte_timeout: 3s\n",
    );
    let held: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(&a.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let (_, closed) = exchange(&a.addr, b"", Duration::from_secs(2));
    assert!(closed);
    assert!(
        metric(
            &a,
            "hop_dataplane_rejected_total{reason=\"over_per_ip_limit\"}"
        ) >= 1
    );
    drop(held);
}

/// A TCP connection to `addr` from `source` (another loopback address).
fn connect_from(source: &str, addr: &str) -> std::io::Result<TcpStream> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    let from: std::net::SocketAddr = format!("{source}:0").parse().unwrap();
    s.bind(&from.into())?;
    let to: std::net::SocketAddr = addr.parse().unwrap();
    s.connect(&to.into())?;
    Ok(s.into())
}

/// Whether the server has closed `s` (a read finds the end of the stream, or a reset).
fn server_closed(s: &mut TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 1];
    let closed = match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    s.set_nonblocking(false).unwrap();
    closed
}

/// The acceptance check: one address (127.0.0.2) holding 5,000 idle, unauthenticated
/// connections does not delay another address's login by more than 1 s; its connections beyond
/// the per-address budget (64) are refused at once and counted.
#[test]
fn one_address_holding_thousands_of_idle_connections_does_not_delay_another_login() {
    let a = Appliance::start_with("", "  first_byte_timeout: 20s\n");
    let alice = a.add_user("alice", "access", "alice");
    let bob = a.add_user("bob", "access", "bob");
    let started = clock::monotonic_now();
    let out = a.login("alice", PASSWORD, &alice);
    assert!(out.status.success(), "{}", stderr(&out));
    let baseline = clock::since(started);

    let mut idle = Vec::with_capacity(5000);
    for _ in 0..5000 {
        match connect_from("127.0.0.2", &a.addr) {
            Ok(s) => idle.push(s),
            Err(e) => panic!("could only open {} sockets: {e}", idle.len()),
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let started = clock::monotonic_now();
    let out = a.login("bob", PASSWORD, &bob);
    let loaded = clock::since(started);
    assert!(
        out.status.success(),
        "login under slowloris failed: {}",
        stderr(&out)
    );
    eprintln!("login: {baseline:?} alone, {loaded:?} beside 5,000 idle connections");
    assert!(
        loaded < baseline + Duration::from_secs(1),
        "login took {loaded:?} beside the idle connections, {baseline:?} alone"
    );

    // The budget held 64 of them; the proxy closed every other one at once.
    let open = idle.iter_mut().map(server_closed).filter(|c| !c).count();
    assert_eq!(open, 64, "idle connections still open");
    let refused = metric(
        &a,
        "hop_dataplane_rejected_total{reason=\"over_pre_auth_limit\"}",
    );
    assert!(refused >= 5000 - 64, "{refused}");
    let mut one_more = connect_from("127.0.0.2", &a.addr).unwrap();
    one_more
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let started = clock::monotonic_now();
    let mut b = [0u8; 1];
    let n = one_more.read(&mut b).unwrap_or(0);
    assert_eq!(n, 0);
    assert!(
        clock::since(started) < Duration::from_millis(500),
        "refusal took {:?}",
        clock::since(started)
    );
    drop(idle);
}

#[test]
fn epoll_driver_serves_logins_too() {
    let a = Appliance::start_with("", "  io_driver: epoll\n");
    let (_, m) = a.diag_get("/metrics");
    assert!(
        m.contains("hop_dataplane_io_driver{driver=\"epoll\"} 1"),
        "{m}"
    );
    let secret = a.add_user("erin", "access", "erin");
    let out = a.login("erin", PASSWORD, &secret);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// A minimal TLS 1.2/1.3 ClientHello with one SNI entry, built by hand so the SNI can be invalid.
fn client_hello(sni: &str) -> Vec<u8> {
    let name = sni.as_bytes();
    let mut sni_ext = Vec::new();
    let list_len = name.len() + 3;
    sni_ext.extend_from_slice(&[0, 0]); // server_name
    sni_ext.extend_from_slice(&((list_len + 2) as u16).to_be_bytes());
    sni_ext.extend_from_slice(&(list_len as u16).to_be_bytes());
    sni_ext.push(0);
    sni_ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sni_ext.extend_from_slice(name);
    let mut body = Vec::new();
    body.extend_from_slice(&[3, 3]);
    body.extend_from_slice(&[7u8; 32]);
    body.push(0); // session id
    body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one cipher suite
    body.extend_from_slice(&[1, 0]); // null compression
    body.extend_from_slice(&(sni_ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&sni_ext);
    let mut hs = vec![1];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 3, 1];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}
