//! Runs the real `hop` binary for end-to-end tests: an appliance on loopback ports in a temp dir,
//! and client commands with their own `HOP_HOME`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, UNIX_EPOCH};

use crate::clock;

pub const HOP: &str = env!("CARGO_BIN_EXE_hop");
pub const PASSWORD: &str = "correct horse battery staple";

/// A free loopback port (bound, then released: a small race other tests do not hit in practice).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Appliance {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub data: PathBuf,
    pub home: PathBuf,
    pub addr: String,
    pub diag: String,
    pub pin: String,
    pub banner: Vec<String>,
}

impl Appliance {
    /// Starts `hop start` with a config made of the defaults for tests plus `extra` YAML
    /// (top-level sections to merge are written whole, so `extra` must not repeat them).
    pub fn start(extra_auth: &str) -> Self {
        Self::start_with(extra_auth, "")
    }

    /// Like [`Appliance::start`], with extra lines (indented by two spaces) under `proxy_service`.
    pub fn start_with(extra_auth: &str, extra_proxy: &str) -> Self {
        Self::start_configured("", extra_auth, extra_proxy)
    }

    /// Like [`Appliance::start_with`], with extra lines (indented by two spaces) under `hop`.
    pub fn start_configured(extra_hop: &str, extra_auth: &str, extra_proxy: &str) -> Self {
        Self::start_listening(extra_hop, extra_auth, extra_proxy, "127.0.0.1:0")
    }

    /// Like [`Appliance::start_configured`], with the proxy on `listen` (HOST:PORT).
    pub fn start_listening(
        extra_hop: &str,
        extra_auth: &str,
        extra_proxy: &str,
        listen: &str,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let home = dir.path().join("home");
        let diag = format!("127.0.0.1:{}", free_port());
        let config = dir.path().join("hop.yaml");
        std::fs::write(
            &config,
            format!(
                "version: v1\nhop:\n  data_dir: {}\n  diag_addr: {diag}\n{extra_hop}auth_service:\n  cluster_name: test.cluster\n{extra_auth}proxy_service:\n  listen_addr: {listen}\n{extra_proxy}",
                data.display()
            ),
        )
        .unwrap();
        let mut a = Self {
            child: None,
            dir,
            data,
            home,
            addr: String::new(),
            diag,
            pin: String::new(),
            banner: vec![],
        };
        a.spawn(&config);
        a
    }

    /// Starts the appliance again on the same data dir and config (after [`Appliance::stop`]).
    pub fn restart(&mut self) {
        self.addr.clear();
        self.pin.clear();
        self.banner.clear();
        let config = self.dir.path().join("hop.yaml");
        self.spawn(&config);
    }

    /// Like [`Appliance::restart`], but on the proxy port it had, as an operator's restart:
    /// agents come back to the address they know.
    pub fn restart_same_port(&mut self) {
        let addr = self.addr.clone();
        let config = std::fs::read_to_string(self.dir.path().join("hop.yaml"))
            .unwrap()
            .replace(
                "listen_addr: 127.0.0.1:0\n",
                &format!("listen_addr: {addr}\n"),
            );
        let same_port = self.dir.path().join("hop-same-port.yaml");
        std::fs::write(&same_port, config).unwrap();
        self.addr.clear();
        self.pin.clear();
        self.banner.clear();
        self.spawn(&same_port);
        assert_eq!(self.addr, addr, "the restarted proxy must keep its port");
    }

    fn spawn(&mut self, config: &Path) {
        let mut child = Command::new(HOP)
            .args(["start", "--config"])
            .arg(config)
            .env("HOP_LOG", "info")
            // The S3 stand-in's throwaway credentials (moto takes any): read only by an
            // appliance whose recordings are in an s3:// bucket.
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let err = child.stderr.take().unwrap();
        let log = self.dir.path().join("hop.log");
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .unwrap();
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = writeln!(f, "{line}");
            }
        });
        let deadline = clock::monotonic_now() + Duration::from_secs(60);
        while !self.banner.last().is_some_and(|l| l.contains("hop login")) {
            let left = deadline.saturating_duration_since(clock::monotonic_now());
            let line = match rx.recv_timeout(left) {
                Ok(l) => l,
                Err(_) => {
                    // The process may have just exited: give its last lines time to land.
                    std::thread::sleep(Duration::from_millis(500));
                    let log = std::fs::read_to_string(self.dir.path().join("hop.log"))
                        .unwrap_or_default();
                    panic!("hop start did not print its banner in time; log:\n{log}");
                }
            };
            if let Some(rest) = line.split("listening on ").nth(1) {
                self.addr = rest.trim_end_matches(')').to_string();
            }
            if let Some(pin) = line.trim().strip_prefix("CA pin:") {
                self.pin = pin.trim().to_string();
            }
            self.banner.push(line);
        }
        self.child = Some(child);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("hop.log")).unwrap_or_default()
    }

    /// Runs a client command with this test's HOP_HOME and data dir.
    pub fn hop(&self, args: &[&str]) -> Output {
        self.hop_stdin(args, "")
    }

    pub fn hop_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(HOP)
            .args(args)
            .env("HOP_HOME", &self.home)
            .env("HOP_DATA_DIR", &self.data)
            .env_remove("HOP_PROXY")
            .env_remove("HOP_CA_PIN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs a command that must succeed; returns its standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.hop(args);
        assert!(
            out.status.success(),
            "hop {args:?} failed:\n{}\n--- appliance log ---\n{}",
            stderr(&out),
            self.log()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = clock::monotonic_now() + Duration::from_secs(20);
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            if clock::monotonic_now() > deadline {
                let _ = child.kill();
                panic!("hop did not stop within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the process at once (SIGKILL), as a crash or a power cut would.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Creates a user and completes the sign-up; returns the TOTP secret.
    /// A new join token for agents of `role` (`node`, `app`, `db`), with the defaults.
    pub fn join_token(&self, role: &str) -> String {
        let out = self.ok(&["admin", "tokens", "add", "--type", role, "--format", "json"]);
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        v["token"].as_str().unwrap().to_string()
    }

    pub fn add_user(&self, name: &str, roles: &str, logins: &str) -> String {
        let out = self.ok(&[
            "admin", "users", "add", name, "--roles", roles, "--logins", logins, "--format", "json",
        ]);
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        let token = v["token"].as_str().unwrap().to_string();
        assert_eq!(v["ca_pin"].as_str().unwrap(), self.pin);
        let secret_file = self.dir.path().join(format!("{name}.totp"));
        let out = self.hop_stdin(
            &[
                "signup",
                &token,
                "--proxy",
                &self.addr,
                "--ca-pin",
                &self.pin,
                "--password-stdin",
                "--totp-secret-file",
                secret_file.to_str().unwrap(),
            ],
            &format!("{PASSWORD}\n"),
        );
        assert!(out.status.success(), "signup failed: {}", stderr(&out));
        std::fs::read_to_string(secret_file)
            .unwrap()
            .trim()
            .to_string()
    }

    /// `hop login` with a password and a code computed by oathtool for the next time step (the
    /// current one may have been used by the sign-up: codes work once).
    pub fn login(&self, user: &str, password: &str, secret: &str) -> Output {
        let code = totp(secret, 30);
        self.hop_stdin(
            &[
                "login",
                "--proxy",
                &self.addr,
                "--ca-pin",
                &self.pin,
                "--user",
                user,
                "--password-stdin",
                "--otp",
                &code,
            ],
            &format!("{password}\n"),
        )
    }

    pub fn diag_get(&self, path: &str) -> (u16, String) {
        http_get(&self.diag, path)
    }

    /// Connections the proxy's workers handed to the control plane's tokio routes, of one
    /// `route` (`session`, `jump`, `agent`, `api`: `hop_dataplane_handoffs_by_route_total`).
    pub fn handoffs(&self, route: &str) -> u64 {
        self.metric(&format!(
            "hop_dataplane_handoffs_by_route_total{{route=\"{route}\"}}"
        ))
    }

    /// Connections the proxy accepted (`hop_proxy_connections_accepted_total`).
    pub fn connections_accepted(&self) -> u64 {
        self.metric("hop_proxy_connections_accepted_total")
    }

    /// The value of the metric line `name` (with its labels) on `/metrics`.
    pub fn metric(&self, name: &str) -> u64 {
        let (_, m) = self.diag_get("/metrics");
        let prefix = format!("{name} ");
        m.lines()
            .find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in the metrics:\n{m}"))
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A TOTP code from the real `oathtool`, `offset` seconds from now.
pub fn totp(secret_b32: &str, offset: u64) -> String {
    let now = clock::wall_now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + offset;
    let out = Command::new("oathtool")
        .args(["--totp", "-b", "--now", &format!("@{now}"), secret_b32])
        .output()
        .expect("oathtool is installed by scripts/test");
    assert!(out.status.success(), "oathtool: {}", stderr(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A minimal HTTP/1.0 GET for the diagnostics port.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let code = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// Paths of the current login's files under HOP_HOME.
pub fn key_paths(a: &Appliance, user: &str) -> (PathBuf, PathBuf, PathBuf) {
    let dir = a.home.join("keys").join(&a.addr);
    (
        dir.join(user),
        dir.join(format!("{user}-cert.pub")),
        dir.join(format!("{user}-tls.crt")),
    )
}

/// An ordinary operating-system account for end-to-end SSH tests, so that sessions run as a
/// user who is not root: `hopuser`, with its own primary group and two supplementary groups.
#[derive(Debug, Clone)]
pub struct OsLogin {
    pub name: &'static str,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

pub const OS_LOGIN: &str = "hopuser";

/// Makes sure [`OS_LOGIN`] exists on this machine (created once, under a file lock, when the
/// tests run as root; `scripts/test` creates it too) and returns it.
pub fn os_login() -> OsLogin {
    let script = format!(
        "id -u {OS_LOGIN} >/dev/null 2>&1 || {{ groupadd -f hopgrp1 && groupadd -f hopgrp2 && \
         useradd -m -p '*' -s /bin/bash -G hopgrp1,hopgrp2 {OS_LOGIN}; }}"
    );
    let out = Command::new("flock")
        .args(["/tmp/hop-tests-os-login.lock", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cannot create the test login {OS_LOGIN} (the SSH tests run as root, or need it made \
         with `useradd -m -p '*' -G hopgrp1,hopgrp2 {OS_LOGIN}`): {}",
        stderr(&out)
    );
    let id = |flag: &str| -> u32 {
        let out = Command::new("id").args([flag, OS_LOGIN]).output().unwrap();
        stdout(&out).trim().parse().unwrap()
    };
    OsLogin {
        name: OS_LOGIN,
        uid: id("-u"),
        gid: id("-g"),
        home: PathBuf::from(format!("/home/{OS_LOGIN}")),
    }
}

impl OsLogin {
    /// A fresh directory in the login's home that the login owns (removed on drop).
    pub fn scratch_dir(&self) -> tempfile::TempDir {
        let dir = tempfile::Builder::new()
            .prefix("hop-test-")
            .tempdir_in(&self.home)
            .unwrap();
        std::os::unix::fs::chown(dir.path(), Some(self.uid), Some(self.gid)).unwrap();
        dir
    }

    /// What `id LOGIN` prints on this machine (the node's, in these tests).
    pub fn id_line(&self) -> String {
        let out = Command::new("id").arg(self.name).output().unwrap();
        stdout(&out).trim().to_string()
    }
}

/// `stat -c %a` of `path`, from the real `stat`.
pub fn file_mode(path: &Path) -> u32 {
    let out = Command::new("stat")
        .arg("-c")
        .arg("%a")
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "stat {}: {}",
        path.display(),
        stderr(&out)
    );
    u32::from_str_radix(stdout(&out).trim(), 8).unwrap()
}

/// Asserts that every private key under `dir` (a file whose name ends in `key`, or `.key`,
/// or `.pem` holding a private key) has mode 0600, and that there is at least one.
pub fn assert_private_keys(dir: &Path) {
    let mut found = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().filter_map(Result::ok) {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let text = std::fs::read(&p).unwrap_or_default();
            let private = String::from_utf8_lossy(&text).contains("PRIVATE KEY");
            if private {
                found += 1;
                assert_eq!(file_mode(&p), 0o600, "{}", p.display());
            }
        }
    }
    assert!(found > 0, "no private key under {}", dir.display());
}

/// The cluster setting for tests whose users log in again and again: no second factor, so that
/// a login needs no fresh one-time code (codes work once per 30 s step).
pub const NO_SECOND_FACTOR: &str = "  authentication:\n    second_factor: \"off\"\n";

/// Creates `name` with `roles` and `logins` and completes the sign-up with a password only (on
/// a cluster started with [`NO_SECOND_FACTOR`]).
pub fn add_password_user(a: &Appliance, name: &str, roles: &str, logins: &str) {
    let out = a.ok(&[
        "admin", "users", "add", name, "--roles", roles, "--logins", logins, "--format", "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let token = v["token"].as_str().unwrap();
    let out = a.hop_stdin(
        &[
            "signup",
            token,
            "--proxy",
            &a.addr,
            "--ca-pin",
            &a.pin,
            "--password-stdin",
        ],
        &format!("{PASSWORD}\n"),
    );
    assert!(out.status.success(), "signup: {}", stderr(&out));
}

/// `hop login` of `user` with [`PASSWORD`] only (a cluster with [`NO_SECOND_FACTOR`]), keeping
/// the user's files in `home`.
pub fn password_login(a: &Appliance, user: &str, home: &Path) -> Output {
    password_login_via(&a.addr, &a.pin, user, home)
}

/// [`password_login`] through `proxy` (an appliance, or a load balancer in front of several).
pub fn password_login_via(proxy: &str, pin: &str, user: &str, home: &Path) -> Output {
    let mut child = Command::new(HOP)
        .args(["login", "--proxy", proxy, "--ca-pin", pin, "--user", user])
        .arg("--password-stdin")
        .env("HOP_HOME", home)
        .env_remove("HOP_PROXY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        format!("{PASSWORD}\n").as_bytes(),
    )
    .unwrap();
    child.wait_with_output().unwrap()
}

/// `hop` as the user whose files are in `home` (another `HOP_HOME` than the appliance's).
pub fn hop_in(home: &Path, args: &[&str]) -> Output {
    Command::new(HOP)
        .args(args)
        .env("HOP_HOME", home)
        .env_remove("HOP_PROXY")
        .env_remove("HOP_DATA_DIR")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `hop bot start --oneshot` for a new bot `name` (made with `roles`, and `logins` when given)
/// from a tbot v2 file whose one output is `output` (its YAML lines after `- `, each indented
/// by four spaces, without the destination), written to `dest`. Returns the bot's run.
pub fn oneshot_bot(
    a: &Appliance,
    name: &str,
    (roles, logins): (&str, Option<&str>),
    output: &str,
    dest: &Path,
) -> Output {
    let mut add = vec![
        "admin", "bots", "add", name, "--roles", roles, "--format", "json",
    ];
    if let Some(l) = logins {
        add.extend(["--logins", l]);
    }
    let added = a.ok(&add);
    let token = serde_json::from_str::<serde_json::Value>(added.trim()).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let dir = a.dir.path().join(format!("{name}-bot"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("tbot.yaml");
    let yaml = format!(
        "version: v2\nonboarding: {{join_method: token, token: {token}}}\nstorage: {{type: directory, path: {}}}\noutputs:\n  - {output}\n    destination: {{type: directory, path: {}}}\n",
        dir.join("data").display(),
        dest.display()
    );
    std::fs::write(&config, yaml).unwrap();
    Command::new(HOP)
        .args(["bot", "start", "--oneshot", "--config"])
        .arg(&config)
        .args(["--proxy", &a.addr, "--ca-pin", &a.pin])
        .env_remove("HOP_PROXY")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}
