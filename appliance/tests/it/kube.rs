//! The Kubernetes end-to-end tests' harness (`kube_kubectl.rs`, `kube_refusals.rs`): one appliance whose
//! public address is `localhost:PORT` (so the kube endpoint is TLS name `kube.localhost` on the
//! one port), the stand-in API server of `tests/fixtures/kube_apiserver.py` (named a stand-in: no
//! kube-apiserver can be installed here) with its own PKI made by openssl, a kube agent joined by
//! token publishing it as `dev` (`env=dev`), roles that grant only Kubernetes access, users with
//! their own `HOP_HOME`, `HOME` and kubeconfig, and the real kubectl: the image's 1.32
//! (WebSocket streams) and Debian's 1.20 (SPDY), both from `scripts/kube-test-tools`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::apps_http::wait_output;
use crate::clock;
use crate::harness::*;
use crate::ssh::Killed;

/// The roles: `kube-dev` reaches `env=dev` clusters as the Kubernetes user named by the user's
/// `logins` trait, with two groups, and sees the pods of `default` but `web-2` and the one Secret
/// it needs; `kube-prod` reaches `env=prod` clusters only; `kube-many` may act as two users (so
/// kubectl must say which with `--as`); `kube-other` grants nothing on Kubernetes (a role
/// taken away leaves it).
pub(crate) const ROLES: &str = "\
kind: role
version: v7
metadata:
  name: kube-dev
spec:
  allow:
    kubernetes_labels:
      env: dev
    kubernetes_users: ['{{internal.logins}}']
    kubernetes_groups: [developers, viewers]
    kubernetes_resources:
    - kind: pod
      namespace: default
      name: '*'
      verbs: ['*']
    - kind: secret
      namespace: default
      name: db-password
      verbs: [get]
  deny:
    kubernetes_labels:
      '*': '*'
    kubernetes_resources:
    - kind: pod
      namespace: default
      name: web-2
      verbs: ['*']
---
kind: role
version: v7
metadata:
  name: kube-prod
spec:
  allow:
    kubernetes_labels:
      env: prod
    kubernetes_groups: [ops]
---
kind: role
version: v7
metadata:
  name: kube-many
spec:
  allow:
    kubernetes_labels:
      env: dev
    kubernetes_users: [alice-k, bob-k]
    kubernetes_groups: [developers]
---
kind: role
version: v7
metadata:
  name: kube-other
spec:
  allow:
    app_labels:
      env: nowhere
";

/// Where the tools the Kubernetes tests drive are.
#[derive(Debug, Clone)]
pub(crate) struct Tools {
    /// The image's kubectl (1.32: WebSocket for exec and port-forward), when there is one.
    pub kubectl_new: Option<PathBuf>,
    /// Debian's kubectl 1.20 (SPDY/3.1), unpacked by `scripts/kube-test-tools`.
    pub kubectl_old: PathBuf,
    /// A Python with aiohttp, for the stand-in.
    pub python: PathBuf,
}

/// The tools, installed by `scripts/kube-test-tools` when missing; `None` (with the reason
/// printed) only when they cannot be installed here.
pub(crate) fn tools() -> Option<Tools> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/kube-test-tools");
    let out = Command::new(script).output().unwrap();
    if !out.status.success() {
        println!(
            "SKIPPED: the Kubernetes test tools cannot be installed here (scripts/kube-test-tools): {}",
            stderr(&out)
        );
        return None;
    }
    let dir = PathBuf::from(stdout(&out).trim());
    let kubectl_new = Command::new("kubectl")
        .args(["version", "--client", "-o", "json"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| serde_json::from_slice::<Value>(&o.stdout).ok())
        .filter(|v| {
            let minor = v["clientVersion"]["minor"].as_str().unwrap_or("0");
            minor.trim_end_matches('+').parse::<u32>().unwrap_or(0) >= 30
        })
        .map(|_| PathBuf::from("kubectl"));
    if kubectl_new.is_none() {
        println!(
            "NOTE: no kubectl >= 1.30 on PATH (Debian ships none): the WebSocket half is not run"
        );
    }
    Some(Tools {
        kubectl_new,
        kubectl_old: dir.join("kubectl-1.20/usr/bin/kubectl"),
        python: dir.join("kube-venv/bin/python"),
    })
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures")).join(name)
}

/// The stand-in's PKI: a CA, the server's certificate for 127.0.0.1, and the agent's client
/// certificate (`system:masters`); and the agent's kubeconfig that uses them.
fn make_pki(dir: &Path, api_port: u16) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let script = "set -e
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=test-kube-ca -keyout ca.key -out ca.crt
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=kube-apiserver -keyout server.key -out server.csr
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > san.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -out server.crt -extfile san.ext
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /O=system:masters/CN=hop-kube-agent -keyout client.key -out client.csr
printf 'extendedKeyUsage=clientAuth\\n' > client.ext
openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -out client.crt -extfile client.ext
";
    let out = Command::new("sh")
        .args(["-c", script])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl: {}", stderr(&out));
    let kubeconfig = dir.join("agent.kubeconfig");
    let p = |f: &str| dir.join(f).display().to_string();
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster:\n    server: https://127.0.0.1:{api_port}\n    certificate-authority: {}\nusers:\n- name: agent\n  user:\n    client-certificate: {}\n    client-key: {}\ncontexts:\n- name: standin\n  context:\n    cluster: standin\n    user: agent\ncurrent-context: standin\n",
            p("ca.crt"),
            p("client.crt"),
            p("client.key")
        ),
    )
    .unwrap();
    kubeconfig
}

/// The appliance, the stand-in API server and the kube agent.
pub(crate) struct KubeCluster {
    pub a: Appliance,
    pub tools: Tools,
    /// The proxy's port (its public address is `localhost:PORT`).
    pub port: u16,
    /// The Hop cluster's name (the kubeconfig context is `<it>-dev`).
    pub cluster: String,
    pub pki: PathBuf,
    pub api_port: u16,
    _api: Killed,
    _agent: Killed,
    users: std::sync::atomic::AtomicU32,
}

/// A user logged in with their own `HOP_HOME`, `HOME` and kubeconfig.
pub(crate) struct KubeUser {
    pub name: String,
    pub home: PathBuf,
    pub kubeconfig: PathBuf,
}

impl KubeCluster {
    pub fn start(tools: Tools) -> Self {
        Self::start_with_auth(tools, "")
    }

    /// Like [`KubeCluster::start`], with extra lines (indented by two spaces) under
    /// `auth_service` (a second factor that allows security keys, say).
    pub fn start_with_auth(tools: Tools, extra_auth: &str) -> Self {
        let mut a = Appliance::start(extra_auth);
        // The public address needs the port, known only now: restart on it with that address.
        a.stop();
        let port: u16 = a.addr.rsplit_once(':').unwrap().1.parse().unwrap();
        let cfg = a.dir.path().join("hop.yaml");
        let mut text = std::fs::read_to_string(&cfg).unwrap();
        text.push_str(&format!("  public_addr: [\"localhost:{port}\"]\n"));
        std::fs::write(&cfg, text).unwrap();
        a.restart_same_port();
        let roles = a.dir.path().join("kube-roles.yaml");
        std::fs::write(&roles, ROLES).unwrap();
        a.ok(&["admin", "create", "-f", roles.to_str().unwrap()]);
        let pki = a.dir.path().join("kube-pki");
        let api_port = free_port();
        let kubeconfig = make_pki(&pki, api_port);
        let api = start_apiserver(&tools, &pki, api_port, &a.dir.path().join("apiserver.log"));
        let agent = start_kube_agent(&a, &kubeconfig);
        let status: Value =
            serde_json::from_str(&a.ok(&["admin", "status", "--format", "json"])).unwrap();
        let cluster = status["cluster"].as_str().unwrap().to_string();
        let c = Self {
            a,
            tools,
            port,
            cluster,
            pki,
            api_port,
            _api: api,
            _agent: agent,
            users: std::sync::atomic::AtomicU32::new(0),
        };
        let probe = c.user("kube-dev");
        let deadline = clock::monotonic_now() + Duration::from_secs(30);
        loop {
            let ls = stdout(&probe.hop(&["kube", "ls"]));
            if ls.lines().any(|l| l.starts_with("dev ")) {
                break;
            }
            assert!(
                clock::monotonic_now() < deadline,
                "kube cluster dev was never listed: {ls}\n{}",
                c.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        c
    }

    /// A fresh user holding only `roles`, logged in.
    pub fn user(&self, roles: &str) -> KubeUser {
        self.user_with_ttl(roles, None)
    }

    pub fn user_with_ttl(&self, roles: &str, ttl: Option<&str>) -> KubeUser {
        let n = 1 + self
            .users
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("kuser{n}");
        let secret = self.a.add_user(&name, roles, &format!("k8s-{name}"));
        let home = self.a.dir.path().join(format!("home-{name}"));
        std::fs::create_dir_all(&home).unwrap();
        let u = KubeUser {
            kubeconfig: home.join("kubeconfig"),
            home,
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

    /// The kubeconfig context `hop kube login dev` makes.
    pub fn context(&self) -> String {
        format!("{}-dev", self.cluster)
    }

    /// The ends of the appliance's, the agent's and the stand-in's logs, for failure messages.
    pub fn logs(&self) -> String {
        let tail = |s: String| {
            let mut i = s.len().saturating_sub(3000);
            while !s.is_char_boundary(i) {
                i += 1;
            }
            s[i..].to_string()
        };
        let read = |f: &str| std::fs::read_to_string(self.a.dir.path().join(f)).unwrap_or_default();
        format!(
            "--- appliance ---\n{}\n--- kube agent ---\n{}\n--- stand-in ---\n{}",
            tail(self.a.log()),
            tail(read("kube-agent.log")),
            tail(read("apiserver.log"))
        )
    }

    /// Audit events of `kind` (as JSON), now.
    pub fn events(&self, kind: &str) -> Vec<Value> {
        self.a
            .ok(&[
                "admin", "audit", "search", "--type", kind, "--format", "json", "--limit", "1000",
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

    /// What the stand-in saw: every request with its client certificate's CN and impersonation
    /// headers (its `/_fake/audit`), asked with the agent's own certificate.
    pub fn apiserver_audit(&self) -> Vec<Value> {
        let p = |f: &str| self.pki.join(f).display().to_string();
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert", &p("ca.crt")])
            .args(["--cert", &p("client.crt"), "--key", &p("client.key")])
            .arg(format!("https://127.0.0.1:{}/_fake/audit", self.api_port))
            .output()
            .unwrap();
        assert!(out.status.success(), "stand-in audit: {}", stderr(&out));
        let v: Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)));
        match v {
            Value::Array(items) => items,
            other => other["items"].as_array().cloned().unwrap_or_default(),
        }
    }

    /// Every audit event, exported as JSON lines.
    pub fn audit_export(&self) -> String {
        self.a.ok(&["admin", "audit", "export"])
    }
}

impl KubeUser {
    fn command(&self, program: &Path) -> Command {
        let mut c = Command::new(program);
        c.env("HOP_HOME", &self.home)
            .env("HOME", &self.home)
            .env("KUBECONFIG", &self.kubeconfig)
            .env_remove("HOP_PROXY")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    pub fn hop(&self, args: &[&str]) -> Output {
        self.hop_stdin(args, "")
    }

    pub fn hop_stdin(&self, args: &[&str], stdin: &str) -> Output {
        self.run(Path::new(HOP), args, stdin)
    }

    /// Runs `program ARGS` as this user (30 s at most), `stdin` written then closed.
    pub fn run(&self, program: &Path, args: &[&str], stdin: &str) -> Output {
        let mut child = self.command(program).args(args).spawn().unwrap();
        let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        wait_output(child, Duration::from_secs(30))
    }

    /// Starts `program ARGS` as this user, its standard streams piped.
    pub fn spawn(&self, program: &Path, args: &[&str]) -> Child {
        self.command(program).args(args).spawn().unwrap()
    }

    /// `hop kube login NAME`, which must succeed.
    pub fn kube_login(&self, name: &str) -> String {
        let out = self.hop(&["kube", "login", name]);
        assert!(
            out.status.success(),
            "hop kube login {name}: {}",
            stderr(&out)
        );
        stdout(&out)
    }

    /// The kube certificate kubectl would get, written to files: (CA, certificate, key).
    pub fn cert_files(&self, c: &KubeCluster) -> (PathBuf, PathBuf, PathBuf) {
        let out = self.hop(&["kube", "credentials", "--cluster", "dev"]);
        assert!(out.status.success(), "credentials: {}", stderr(&out));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let cert = self.home.join("kube-cert.pem");
        let key = self.home.join("kube-key.pem");
        std::fs::write(
            &cert,
            v["status"]["clientCertificateData"].as_str().unwrap(),
        )
        .unwrap();
        std::fs::write(&key, v["status"]["clientKeyData"].as_str().unwrap()).unwrap();
        let ca = self.home.join("kube-ca.pem");
        let saved = self
            .home
            .join("kube")
            .join(c.a.addr.replace(':', "_"))
            .join(&self.name)
            .join("dev.json");
        let meta: Value = serde_json::from_str(&std::fs::read_to_string(saved).unwrap()).unwrap();
        std::fs::write(&ca, meta["trusted_cas_pem"].as_str().unwrap()).unwrap();
        (ca, cert, key)
    }

    /// The kube certificate as `hop kube login` saved it (not renewed): (CA, certificate, key).
    pub fn saved_cert_files(&self, c: &KubeCluster) -> (PathBuf, PathBuf, PathBuf) {
        let dir = self
            .home
            .join("kube")
            .join(c.a.addr.replace(':', "_"))
            .join(&self.name);
        let meta: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("dev.json")).unwrap()).unwrap();
        let ca = self.home.join("kube-ca.pem");
        std::fs::write(&ca, meta["trusted_cas_pem"].as_str().unwrap()).unwrap();
        (ca, dir.join("dev.crt"), dir.join("dev.key"))
    }

    /// curl to the kube endpoint with `files` (CA, certificate, key) and `extra` arguments;
    /// returns (status, body).
    pub fn curl_kube(
        &self,
        c: &KubeCluster,
        files: &(PathBuf, PathBuf, PathBuf),
        path: &str,
        extra: &[&str],
    ) -> (u16, String) {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "20", "-w", "\n%{http_code}"])
            .arg("--cacert")
            .arg(&files.0)
            .arg("--cert")
            .arg(&files.1)
            .arg("--key")
            .arg(&files.2)
            .args(["--resolve", &format!("kube.localhost:{}:127.0.0.1", c.port)])
            .args(extra)
            .arg(format!("https://kube.localhost:{}{path}", c.port))
            .output()
            .unwrap();
        let text = stdout(&out);
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (
            code.trim().parse().unwrap_or(0),
            format!("{body}{}", stderr(&out)),
        )
    }
}

fn start_apiserver(tools: &Tools, pki: &Path, port: u16, log: &Path) -> Killed {
    let child = Command::new(&tools.python)
        .arg(fixture("kube_apiserver.py"))
        .arg(pki)
        .arg(port.to_string())
        .stdout(Stdio::from(std::fs::File::create(log).unwrap()))
        .stderr(Stdio::from(
            std::fs::OpenOptions::new().append(true).open(log).unwrap(),
        ))
        .spawn()
        .unwrap();
    let api = Killed(child);
    let deadline = clock::monotonic_now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            clock::monotonic_now() < deadline,
            "the stand-in API server did not listen on {port}: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    api
}

fn start_kube_agent(a: &Appliance, kubeconfig: &Path) -> Killed {
    let dir = a.dir.path().join("kube-agent");
    let token_file = a.dir.path().join("kube-agent.token");
    std::fs::write(&token_file, format!("{}\n", a.join_token("kube"))).unwrap();
    Killed(
        Command::new(HOP)
            .args([
                "start", "--roles", "kube", "--proxy", &a.addr, "--ca-pin", &a.pin,
            ])
            .arg("--token-file")
            .arg(&token_file)
            .arg("--data-dir")
            .arg(&dir)
            .arg("--kube-cluster")
            .arg(format!(
                "name=dev,kubeconfig={},labels=env=dev",
                kubeconfig.display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.with_extension("log")).unwrap(),
            ))
            .spawn()
            .unwrap(),
    )
}

/// A TCP echo server on loopback (for port-forward), serving connections until the test ends.
pub(crate) fn echo_server() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut r = s.try_clone().unwrap();
                let mut w = s;
                let _ = std::io::copy(&mut r, &mut w);
            });
        }
    });
    port
}

/// Reads lines from `child`'s standard output until `want` of them match `pred` (or 20 s
/// pass); returns every line read.
pub(crate) fn read_lines_until(
    child: &mut Child,
    want: usize,
    pred: impl Fn(&str) -> bool,
) -> Vec<String> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Keep reading after the caller stops listening: kubectl dies of SIGPIPE when its
        // output has no reader (port-forward prints a line for each connection).
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let deadline = clock::monotonic_now() + Duration::from_secs(20);
    let mut lines = vec![];
    while lines.iter().filter(|l: &&String| pred(l)).count() < want {
        let left = deadline.saturating_duration_since(clock::monotonic_now());
        match rx.recv_timeout(left) {
            Ok(l) => lines.push(l),
            Err(_) => break,
        }
    }
    lines
}
