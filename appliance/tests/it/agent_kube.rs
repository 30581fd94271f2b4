//! `hop start --roles kube`: a kube agent joins with a `kube` token, reads its kubeconfig
//! (CA, client certificate and key in files beside it) before joining, and announces its cluster
//! to the proxy, which keeps it; a kubeconfig the agent cannot use stops the start with an
//! error naming the cluster, the file, the context and the field. (kubectl through the proxy is
//! tested in the `kube*` modules.)

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

use crate::clock;
use crate::harness::{Appliance, HOP, stderr};
use crate::ssh::Killed;

/// A CA and a client certificate from it, with a kubeconfig for `https://127.0.0.1:port`
/// that uses them (in files next to it, named relative to it).
fn kubeconfig(dir: &Path, port: u16, user: &str) -> PathBuf {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "test kube CA");
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name
        .push(DnType::CommonName, "hop-kube-agent");
    std::fs::write(
        dir.join("agent.crt"),
        p.signed_by(&key, &issuer).unwrap().pem(),
    )
    .unwrap();
    std::fs::write(dir.join("agent.key"), key.serialize_pem()).unwrap();
    std::fs::write(dir.join("ca.crt"), ca_pem).unwrap();
    let path = dir.join("dev.kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: admin@dev\nclusters:\n- name: dev\n  cluster:\n    server: https://127.0.0.1:{port}\n    certificate-authority: ca.crt\nusers:\n- name: admin\n  user:\n{user}contexts:\n- name: admin@dev\n  context: {{cluster: dev, user: admin}}\n"
        ),
    )
    .unwrap();
    path
}

const CERT_USER: &str = "    client-certificate: agent.crt\n    client-key: agent.key\n";

#[test]
fn a_kube_agent_joins_and_its_cluster_is_kept_by_the_proxy() {
    let a = Appliance::start("");
    let dir = a.dir.path().join("kube");
    std::fs::create_dir_all(&dir).unwrap();
    let config = kubeconfig(&dir, 1, CERT_USER);
    let agent_log = dir.join("agent.log");
    let child = Command::new(HOP)
        .args([
            "start", "--roles", "kube", "--proxy", &a.addr, "--ca-pin", &a.pin,
        ])
        .args(["--token", &a.join_token("kube"), "--data-dir"])
        .arg(dir.join("data"))
        .arg("--kube-cluster")
        .arg(format!(
            "name=dev,kubeconfig={},labels=env=dev;team=k",
            config.display()
        ))
        .stdout(Stdio::from(std::fs::File::create(&agent_log).unwrap()))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _agent = Killed(child);
    let deadline = clock::monotonic_now() + Duration::from_secs(20);
    loop {
        let log = plain(&a.log());
        let connected = log
            .lines()
            .any(|l| l.contains("agent connected") && l.contains("[\"kube\"]"));
        if connected {
            assert!(
                log.lines()
                    .any(|l| l.contains("agent connected") && l.contains("resources=1")),
                "{log}"
            );
            assert!(!log.contains("announcement refused"), "{log}");
            break;
        }
        assert!(
            clock::monotonic_now() < deadline,
            "the kube agent never connected:\n{log}\n--- agent ---\n{}",
            std::fs::read_to_string(&agent_log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let inventory = a.ok(&["admin", "inventory", "ls", "--format", "json"]);
    let agents: serde_json::Value = serde_json::from_str(&inventory).unwrap();
    assert_eq!(
        agents[0]["services"],
        serde_json::json!(["kube"]),
        "{inventory}"
    );
    let out = std::fs::read_to_string(&agent_log).unwrap();
    assert!(
        out.contains("Kubernetes cluster dev (https://127.0.0.1:1/) is served"),
        "{out}"
    );
}

/// The log without its colours (`\x1b[…m`), so that `key=value` reads as written.
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Runs `hop start --roles kube` with `flags`; it must fail before joining. Returns stderr.
fn refused_start(dir: &Path, flags: &[&str]) -> String {
    let out = Command::new(HOP)
        .args([
            "start",
            "--roles",
            "kube",
            "--proxy",
            "127.0.0.1:9",
            "--token",
            "x",
        ])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(flags)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    assert!(!out.status.success());
    stderr(&out)
}

#[test]
fn an_unusable_kubeconfig_stops_the_start_naming_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let exec =
        "    exec:\n      apiVersion: client.authentication.k8s.io/v1beta1\n      command: aws\n";
    let config = kubeconfig(dir.path(), 6443, exec);
    let flag = format!("name=dev,kubeconfig={},context=admin@dev", config.display());
    let e = refused_start(dir.path(), &["--kube-cluster", &flag]);
    let want = format!(
        "kube cluster \"dev\": kubeconfig {}, context \"admin@dev\": users[\"admin\"].user.exec: an exec credential plugin is not supported",
        config.display()
    );
    assert!(e.contains(&want), "{e}");
    let e = refused_start(dir.path(), &["--kube-cluster", "name=here"]);
    assert!(e.contains("not running in a Kubernetes cluster"), "{e}");
    let e = refused_start(dir.path(), &[]);
    assert!(
        e.contains("kubernetes_service.kube_clusters: a kube agent needs clusters"),
        "{e}"
    );
}
