//! An operator-supplied proxy certificate, replaced on disk and reloaded on SIGHUP, as the real
//! `openssl s_client` sees it.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

fn make_cert(dir: &Path, name: &str) {
    let key = dir.join(format!("{name}.key"));
    let crt = dir.join(format!("{name}.crt"));
    let st = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
        ])
        .arg(format!("/CN={name}"))
        .args([
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
}

/// The subject CN of the certificate the proxy presents.
fn served_cn(addr: &str) -> String {
    let child = Command::new("openssl")
        .args(["s_client", "-connect", addr, "-alpn", "http/1.1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.trim_start().starts_with("subject="))
        .map(|l| l.to_string())
        .unwrap_or_else(|| format!("no subject in: {text}"))
}

#[test]
fn operator_certificate_files_reload_on_sighup() {
    let certs = tempfile::tempdir().unwrap();
    make_cert(certs.path(), "first");
    make_cert(certs.path(), "second");
    let live_crt = certs.path().join("proxy.crt");
    let live_key = certs.path().join("proxy.key");
    std::fs::copy(certs.path().join("first.crt"), &live_crt).unwrap();
    std::fs::copy(certs.path().join("first.key"), &live_key).unwrap();
    let a = Appliance::start_with(
        "",
        &format!(
            "  tls:\n    cert_file: {}\n    key_file: {}\n",
            live_crt.display(),
            live_key.display()
        ),
    );
    assert!(
        served_cn(&a.addr).contains("CN = first") || served_cn(&a.addr).contains("CN=first"),
        "{}",
        served_cn(&a.addr)
    );

    std::fs::copy(certs.path().join("second.crt"), &live_crt).unwrap();
    std::fs::copy(certs.path().join("second.key"), &live_key).unwrap();
    let config = a.dir.path().join("hop.yaml");
    let st = Command::new("pkill")
        .arg("-HUP")
        .arg("-f")
        .arg(format!("hop start --config {}", config.display()))
        .status()
        .unwrap();
    assert!(st.success(), "no hop process to signal");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let cn = served_cn(&a.addr);
        if cn.contains("second") {
            break;
        }
        assert!(Instant::now() < deadline, "still serving {cn}\n{}", a.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        a.log().contains("proxy certificate reloaded"),
        "{}",
        a.log()
    );
}
