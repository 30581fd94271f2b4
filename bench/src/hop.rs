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
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};

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
    // Field order is drop order: the client side first, the agent, then the appliance, then the dir.
    _client: Spawned,
    _agent: Spawned,
    _proxy: Spawned,
    _dir: tempfile::TempDir,
}

fn run(cmd: &mut Command, stdin: &str) -> anyhow::Result<Output> {
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

fn ok(what: &str, out: Output) -> anyhow::Result<String> {
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
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() + offset;
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

/// Starts `hop start` and reads its banner; returns the process, the proxy address and the CA pin.
fn start_appliance(
    opts: &HopOptions,
    dir: &Path,
) -> anyhow::Result<(Spawned, String, String, PathBuf)> {
    let data = dir.join("data");
    let diag = format!("127.0.0.1:{}", procs::free_port()?);
    let workers = opts
        .workers
        .map(|w| format!("  workers: {w}\n"))
        .unwrap_or_default();
    let config = dir.join("hop.yaml");
    std::fs::write(
        &config,
        format!(
            "version: v1\nhop:\n  data_dir: {}\n  diag_addr: {diag}\n  log:\n    severity: warn\n\
             auth_service:\n  cluster_name: bench.cluster\n\
             proxy_service:\n  listen_addr: 127.0.0.1:0\n{workers}",
            data.display()
        ),
    )?;
    let mut cmd = procs::command(&opts.binary);
    cmd.args(["start", "--config"])
        .arg(&config)
        .stdout(Stdio::piped());
    let mut proxy = Spawned::start("hop start", cmd, &dir.join("hop.log"), true)?;
    let rx = stdout_lines(&mut proxy)?;
    let (mut addr, mut pin) = (String::new(), String::new());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
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
    Ok((proxy, addr, pin, data))
}

/// Starts the whole hop path to `target` and returns it as a contender.
pub fn start(opts: &HopOptions, target: SocketAddr) -> anyhow::Result<Contender> {
    let dir = tempfile::Builder::new().prefix("hop-bench-").tempdir()?;
    let (proxy, addr, pin, data) = start_appliance(opts, dir.path())?;
    let home = dir.path().join("home");
    let hop = |args: &[&str], stdin: &str| -> anyhow::Result<Output> {
        run(
            Command::new(&opts.binary)
                .args(args)
                .env("HOP_HOME", &home)
                .env("HOP_DATA_DIR", &data)
                .env_remove("HOP_PROXY")
                .env_remove("HOP_CA_PIN"),
            stdin,
        )
    };

    // A user with the `access` role (every app), signed up and logged in.
    let v: serde_json::Value = serde_json::from_str(
        ok(
            "hop admin users add",
            hop(
                &[
                    "admin", "users", "add", USER, "--roles", "access", "--logins", USER,
                    "--format", "json",
                ],
                "",
            )?,
        )?
        .trim(),
    )?;
    let invite = v["token"]
        .as_str()
        .ok_or_else(|| anyhow!("no invite token in {v}"))?;
    let secret_file = dir.path().join("totp");
    ok(
        "hop signup",
        hop(
            &[
                "signup",
                invite,
                "--proxy",
                &addr,
                "--ca-pin",
                &pin,
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
        hop(
            &[
                "login",
                "--proxy",
                &addr,
                "--ca-pin",
                &pin,
                "--user",
                USER,
                "--password-stdin",
                "--otp",
                &code,
            ],
            &format!("{PASSWORD}\n"),
        )?,
    )?;

    // An app agent joined with a token, publishing the target.
    let tok: serde_json::Value = serde_json::from_str(
        ok(
            "hop admin tokens add",
            hop(
                &[
                    "admin", "tokens", "add", "--type", "app", "--format", "json",
                ],
                "",
            )?,
        )?
        .trim(),
    )?;
    let token = tok["token"]
        .as_str()
        .ok_or_else(|| anyhow!("no join token in {tok}"))?;
    let agent_cfg = dir.path().join("agent.yaml");
    std::fs::write(
        &agent_cfg,
        format!(
            "version: v1\nhop:\n  data_dir: {}\n  roles: [app]\n  proxy_server: {addr}\n  \
             join_token: {token}\n  ca_pin: {pin}\n  log:\n    severity: warn\n\
             app_service:\n  tunnel_pool_size: {}\n  apps:\n    - name: {APP}\n      \
             uri: tcp://{target}\n",
            dir.path().join("agent-data").display(),
            opts.pool_size
        ),
    )?;
    let mut cmd = procs::command(&opts.binary);
    cmd.args(["start", "--config"]).arg(&agent_cfg);
    let mut agent = Spawned::start("hop agent", cmd, &dir.path().join("agent.log"), false)?;
    // Wait until the proxy holds the agent's whole warm pool.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        agent.check_running()?;
        let out = hop(&["admin", "inventory", "ls", "--format", "json"], "")?;
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
        if Instant::now() > deadline {
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
        .env("HOP_HOME", &home)
        .env("HOP_LOG", "warn")
        .stdout(Stdio::piped());
    let mut client = Spawned::start(
        "hop proxy app",
        cmd,
        &dir.path().join("proxy-app.log"),
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
        (Role::Proxy, proxy.pid()),
        (Role::Agent, agent.pid()),
    ];
    Ok(Contender {
        name: "hop".into(),
        entry: procs::loopback(port),
        procs,
        describe: format!(
            "load generator → `hop proxy app` (client: TLS 1.3 + user cert, ALPN hop-tcp) → \
             `hop start` proxy ({} workers; the relay runs on the tokio control-plane runtime) → \
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
            _proxy: proxy,
            _dir: dir,
        }),
    })
}
