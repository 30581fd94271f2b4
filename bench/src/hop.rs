//! The hop contender: a real `hop start` (Auth + Proxy) on loopback, a user who signs up and
//! logs in, an app agent joined by token that publishes the scenario's target, and
//! `hop proxy app` as the client-side entry — the same steps an operator and a user take, and the
//! same the end-to-end tests take (`appliance/tests/it/harness.rs`, `tunnels.rs`).
//!
//! It owns nothing of hop's internals: it drives the binary through its CLI and config file only.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};

use crate::clock::{monotonic_now, wall_now};
use crate::contender::{Contender, Role};
use crate::procs::{self, Spawned};

const PASSWORD: &str = "hop-bench correct horse battery staple";
const USER: &str = "bench";
const APP: &str = "target";

/// How the hop contender is set up.
#[derive(Debug, Clone)]
pub struct HopOptions {
    pub binary: PathBuf,
    /// `proxy_service.workers` (None: hop's default, one per core).
    pub workers: Option<usize>,
    /// `app_service.tunnel_pool_size` of the agent.
    pub pool_size: usize,
}

struct HopGuard {
    // Field order is drop order: the client side first, the agent, then the appliance (and its dir).
    _client: Spawned,
    _agent: Spawned,
    _appliance: Appliance,
}

pub fn run(cmd: &mut Command, stdin: &str) -> anyhow::Result<Output> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {cmd:?}"))?;
    if let Some(mut i) = child.stdin.take() {
        i.write_all(stdin.as_bytes())?;
    }
    Ok(child.wait_with_output()?)
}

pub fn ok(what: &str, out: Output) -> anyhow::Result<String> {
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A TOTP code for `offset` seconds from now, from `oathtool` (as the e2e tests compute it).
fn totp(secret: &str, offset: u64) -> anyhow::Result<String> {
    let now = wall_now().duration_since(UNIX_EPOCH)?.as_secs() + offset;
    let out = Command::new("oathtool")
        .args(["--totp", "-b", "--now", &format!("@{now}"), secret])
        .output()
        .context("running oathtool (apt-get install oathtool)")?;
    Ok(ok("oathtool", out)?.trim().to_string())
}

/// The lines a child prints on standard output, read by a thread that keeps draining the pipe
/// (so the child never blocks on it, nor sees it closed).
fn stdout_lines(p: &mut Spawned) -> anyhow::Result<mpsc::Receiver<String>> {
    let out = p
        .child_mut()
        .stdout
        .take()
        .ok_or_else(|| anyhow!("{}: no standard output to read", p.name))?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    Ok(rx)
}

/// Spawns `hop start --config CONFIG` (output to `log`) and reads its banner: the process, the
/// proxy address and the CA pin.
fn launch(binary: &Path, config: &Path, log: &Path) -> anyhow::Result<(Spawned, String, String)> {
    let mut cmd = procs::command(binary);
    cmd.args(["start", "--config"])
        .arg(config)
        .stdout(Stdio::piped());
    let mut proxy = Spawned::start("hop start", cmd, log, true)?;
    let rx = stdout_lines(&mut proxy)?;
    let (mut addr, mut pin) = (String::new(), String::new());
    let deadline = monotonic_now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(monotonic_now());
        let line = match rx.recv_timeout(left) {
            Ok(l) => l,
            Err(_) => {
                proxy.check_running()?;
                bail!(
                    "hop start printed no banner within 60 s; log:\n{}",
                    procs::log_tail(&proxy.log, 30)
                );
            }
        };
        if let Some(rest) = line.split("listening on ").nth(1) {
            addr = rest.trim_end_matches(')').to_string();
        }
        if let Some(p) = line.trim().strip_prefix("CA pin:") {
            pin = p.trim().to_string();
        }
        if line.contains("hop login") {
            break;
        }
    }
    if addr.is_empty() || pin.is_empty() {
        bail!("could not read the proxy address and CA pin from hop's banner");
    }
    Ok((proxy, addr, pin))
}

/// A running `hop start` (Auth + Proxy) on loopback and what the CLI needs to drive it.
pub struct Appliance {
    pub binary: PathBuf,
    /// The proxy's one port, `127.0.0.1:PORT`.
    pub addr: String,
    pub pin: String,
    /// The diagnostics listener (`/metrics`).
    pub diag: String,
    pub data: PathBuf,
    /// `HOP_HOME` of the benchmark's user.
    pub home: PathBuf,
    /// Its `hop.yaml`.
    pub config: PathBuf,
    /// How many times `hop start` was started (names the log of each).
    starts: usize,
    // Field order is drop order: the process before its directory.
    pub proxy: Spawned,
    pub dir: tempfile::TempDir,
}

/// What an [`Appliance`] adds to the harness's usual `hop.yaml`.
#[derive(Debug, Clone, Default)]
pub struct ApplianceConfig {
    /// The proxy's port on 127.0.0.1 (0: any free one). A fixed port lets the appliance be
    /// restarted where its agents look for it.
    pub port: u16,
    /// Lines under `auth_service:` (two-space indented YAML).
    pub auth: String,
    /// Lines under `proxy_service:` (two-space indented YAML).
    pub proxy: String,
    /// Lines under `hop:` (two-space indented YAML), e.g. `storage:` for a shared backend.
    pub hop: String,
}

impl Appliance {
    /// Starts `hop start` in a new temp dir and reads its banner (the proxy address, the CA pin).
    pub fn start(opts: &HopOptions) -> anyhow::Result<Self> {
        Self::start_with(opts, &ApplianceConfig::default())
    }

    /// [`Appliance::start`] with `extra` settings in its `hop.yaml`.
    pub fn start_with(opts: &HopOptions, extra: &ApplianceConfig) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("hop-bench-").tempdir()?;
        let data = dir.path().join("data");
        let diag = format!("127.0.0.1:{}", procs::free_port()?);
        let workers = opts
            .workers
            .map(|w| format!("  workers: {w}\n"))
            .unwrap_or_default();
        let config = dir.path().join("hop.yaml");
        std::fs::write(
            &config,
            format!(
                "version: v1\nhop:\n  data_dir: {}\n  diag_addr: {diag}\n  log:\n    severity: warn\n{}\
                 auth_service:\n  cluster_name: bench.cluster\n{}\
                 proxy_service:\n  listen_addr: 127.0.0.1:{}\n{workers}{}",
                data.display(),
                extra.hop,
                extra.auth,
                extra.port,
                extra.proxy,
            ),
        )?;
        let (proxy, addr, pin) = launch(&opts.binary, &config, &dir.path().join("hop.log"))?;
        let home = dir.path().join("home");
        Ok(Self {
            binary: opts.binary.clone(),
            addr,
            pin,
            diag,
            data,
            home,
            config,
            starts: 1,
            proxy,
            dir,
        })
    }

    /// Stops `hop start` as an operator does: SIGTERM (the proxy sends every agent a goaway with
    /// its own delay and drains), waiting at most `limit` for it to exit; `None` if it had not by
    /// then (it is killed when the appliance is dropped or started again).
    pub fn stop(&mut self, limit: Duration) -> anyhow::Result<Option<std::process::ExitStatus>> {
        self.proxy.signal_and_wait("TERM", limit)
    }

    /// Starts `hop start` again with the same config: the same data dir (CA, users, tokens) and,
    /// when the port was fixed, the same port (the previous process is killed if still running).
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        self.starts += 1;
        let log = self.dir.path().join(format!("hop-{}.log", self.starts));
        let (proxy, addr, pin) = launch(&self.binary, &self.config, &log)?;
        // Dropping the old one kills it by PID if it still runs (it has normally exited).
        self.proxy = proxy;
        if addr != self.addr || pin != self.pin {
            bail!(
                "the restarted appliance listens on {addr} with CA pin {pin}, not {} / {}",
                self.addr,
                self.pin
            );
        }
        Ok(())
    }

    /// Runs the hop CLI as the benchmark's user and administrator (`HOP_HOME`, `HOP_DATA_DIR`).
    pub fn hop(&self, args: &[&str], stdin: &str) -> anyhow::Result<Output> {
        run(
            Command::new(&self.binary)
                .args(args)
                .env("HOP_HOME", &self.home)
                .env("HOP_DATA_DIR", &self.data)
                .env_remove("HOP_PROXY")
                .env_remove("HOP_CA_PIN"),
            stdin,
        )
    }

    /// [`Appliance::hop`], failing unless it succeeds; its standard output.
    pub fn ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let what = format!(
            "hop {}",
            args.iter().take(3).copied().collect::<Vec<_>>().join(" ")
        );
        ok(&what, self.hop(args, "")?)
    }

    /// Adds `user` with `roles` (comma separated), signs them up and logs them in (TOTP codes
    /// from `oathtool`), as the end-to-end tests do.
    pub fn add_user(&self, user: &str, roles: &str, logins: &str) -> anyhow::Result<()> {
        let v: serde_json::Value = serde_json::from_str(
            self.ok(&[
                "admin", "users", "add", user, "--roles", roles, "--logins", logins, "--format",
                "json",
            ])?
            .trim(),
        )?;
        let invite = v["token"]
            .as_str()
            .ok_or_else(|| anyhow!("no invite token in {v}"))?;
        let secret_file = self.dir.path().join(format!("{user}.totp"));
        ok(
            "hop signup",
            self.hop(
                &[
                    "signup",
                    invite,
                    "--proxy",
                    &self.addr,
                    "--ca-pin",
                    &self.pin,
                    "--password-stdin",
                    "--totp-secret-file",
                    &secret_file.to_string_lossy(),
                ],
                &format!("{PASSWORD}\n"),
            )?,
        )?;
        let secret = std::fs::read_to_string(&secret_file)?.trim().to_string();
        // The sign-up used the current code; codes work once, so log in with the next step's.
        let code = totp(&secret, 30)?;
        ok(
            "hop login",
            self.hop(
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
                &format!("{PASSWORD}\n"),
            )?,
        )?;
        Ok(())
    }

    /// Adds `user` with `roles` and signs them up with a password only (a cluster whose
    /// `auth_service.authentication.second_factor` is off), as the HA end-to-end test does.
    pub fn add_password_user(&self, user: &str, roles: &str, logins: &str) -> anyhow::Result<()> {
        let v: serde_json::Value = serde_json::from_str(
            self.ok(&[
                "admin", "users", "add", user, "--roles", roles, "--logins", logins, "--format",
                "json",
            ])?
            .trim(),
        )?;
        let invite = v["token"]
            .as_str()
            .ok_or_else(|| anyhow!("no invite token in {v}"))?;
        let args = [
            "signup",
            invite,
            "--proxy",
            &self.addr,
            "--ca-pin",
            &self.pin,
            "--password-stdin",
        ];
        ok("hop signup", self.hop(&args, &format!("{PASSWORD}\n"))?).map(drop)
    }

    /// `hop login` of `user` through this appliance with the password only, keeping the user's
    /// files in `home` (`HOP_HOME`).
    pub fn password_login(&self, user: &str, home: &Path) -> anyhow::Result<()> {
        let out = run(
            Command::new(&self.binary)
                .args(["login", "--proxy", &self.addr, "--ca-pin", &self.pin])
                .args(["--user", user, "--password-stdin"])
                .env("HOP_HOME", home)
                .env_remove("HOP_DATA_DIR")
                .env_remove("HOP_PROXY")
                .env_remove("HOP_CA_PIN"),
            &format!("{PASSWORD}\n"),
        )?;
        ok("hop login", out).map(drop)
    }

    /// A new join token for an agent of `kind` (`app`, `db`, ...).
    pub fn join_token(&self, kind: &str) -> anyhow::Result<String> {
        let tok: serde_json::Value = serde_json::from_str(
            self.ok(&["admin", "tokens", "add", "--type", kind, "--format", "json"])?
                .trim(),
        )?;
        Ok(tok["token"]
            .as_str()
            .ok_or_else(|| anyhow!("no join token in {tok}"))?
            .to_string())
    }

    /// One unlabelled counter or gauge from the appliance's `/metrics` (diagnostics listener).
    pub fn metric(&self, name: &str) -> Option<f64> {
        let text = procs::http_get(&self.diag, "/metrics").ok()?;
        text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == name || k.strip_prefix(name)?.starts_with('{'))
                .then(|| v.trim().parse().ok())
                .flatten()
        })
    }
}

/// Starts the whole hop path to `target` and returns it as a contender.
pub fn start(opts: &HopOptions, target: SocketAddr) -> anyhow::Result<Contender> {
    let a = Appliance::start(opts)?;
    // A user with the `access` role (every app), signed up and logged in.
    a.add_user(USER, "access", USER)?;

    // An app agent joined with a token, publishing the target.
    let token = a.join_token("app")?;
    let agent_cfg = a.dir.path().join("agent.yaml");
    std::fs::write(
        &agent_cfg,
        format!(
            "version: v1\nhop:\n  data_dir: {}\n  roles: [app]\n  proxy_server: {}\n  \
             join_token: {token}\n  ca_pin: {}\n  log:\n    severity: warn\n\
             app_service:\n  tunnel_pool_size: {}\n  apps:\n    - name: {APP}\n      \
             uri: tcp://{target}\n",
            a.dir.path().join("agent-data").display(),
            a.addr,
            a.pin,
            opts.pool_size
        ),
    )?;
    let mut cmd = procs::command(&opts.binary);
    cmd.args(["start", "--config"]).arg(&agent_cfg);
    let mut agent = Spawned::start("hop agent", cmd, &a.dir.path().join("agent.log"), false)?;
    // Wait until the proxy holds the agent's whole warm pool.
    let deadline = monotonic_now() + Duration::from_secs(60);
    loop {
        agent.check_running()?;
        let out = a.hop(&["admin", "inventory", "ls", "--format", "json"], "")?;
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            let pooled = v
                .as_array()
                .and_then(|a| a.first())
                .and_then(|a| a["pooled_data_connections"].as_u64())
                .unwrap_or(0);
            if pooled as usize >= opts.pool_size.min(64) {
                break;
            }
        }
        if monotonic_now() > deadline {
            bail!(
                "the agent did not fill its pool within 60 s; agent log:\n{}",
                procs::log_tail(&agent.log, 30)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    // The user's local entry: hop proxy app.
    let port = procs::free_port()?;
    let mut cmd = procs::command(&opts.binary);
    cmd.args(["proxy", "app", APP, "--port", &port.to_string()])
        .env("HOP_HOME", &a.home)
        .env("HOP_LOG", "warn")
        .stdout(Stdio::piped());
    let mut client = Spawned::start(
        "hop proxy app",
        cmd,
        &a.dir.path().join("proxy-app.log"),
        true,
    )?;
    let line = stdout_lines(&mut client)?
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_default();
    if !line.contains("Proxying") {
        client.check_running()?;
        bail!("hop proxy app said {line:?}");
    }
    procs::wait_listening(port, Duration::from_secs(10))?;

    let procs = vec![
        (Role::Client, client.pid()),
        (Role::Proxy, a.proxy.pid()),
        (Role::Agent, agent.pid()),
    ];
    Ok(Contender {
        name: "hop".into(),
        entry: procs::loopback(port),
        procs,
        describe: format!(
            "load generator → `hop proxy app` (client: TLS 1.3 + user cert, ALPN hop-tcp) → \
             `hop start` proxy ({} workers; the session's records are re-sealed in place on a worker) → \
             the agent's pooled TLS data connection (host cert, pool {}) → `hop start --roles app` \
             agent → plain TCP → target; each session also writes two durable audit events",
            opts.workers
                .map(|w| w.to_string())
                .unwrap_or_else(|| "default".into()),
            opts.pool_size
        ),
        _guard: Box::new(HopGuard {
            _client: client,
            _agent: agent,
            _appliance: a,
        }),
    })
}

/// Starts a db agent (`hop start --roles db`) joined to `a` by token, publishing one PostgreSQL
/// database (`spec` is the `--db` value), and waits until `hop db ls` lists it.
pub fn start_db_agent(a: &Appliance, name: &str, spec: &str) -> anyhow::Result<Spawned> {
    let token = a.join_token("db")?;
    let data = a.dir.path().join("db-agent");
    let mut cmd = procs::command(&a.binary);
    cmd.args([
        "start", "--roles", "db", "--proxy", &a.addr, "--ca-pin", &a.pin,
    ])
    .args(["--token", &token, "--db", spec, "--data-dir"])
    .arg(&data)
    .env("HOP_LOG", "warn");
    let mut agent = Spawned::start(
        "hop db agent",
        cmd,
        &a.dir.path().join("db-agent.log"),
        false,
    )?;
    let deadline = monotonic_now() + Duration::from_secs(60);
    let needle = format!("\"name\": \"{name}\"");
    loop {
        agent.check_running()?;
        let out = a.hop(&["db", "ls", "--format", "json"], "")?;
        if out.status.success() && String::from_utf8_lossy(&out.stdout).contains(&needle) {
            return Ok(agent);
        }
        if monotonic_now() > deadline {
            bail!(
                "database {name} was not listed within 60 s; agent log:\n{}",
                procs::log_tail(&agent.log, 30)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
