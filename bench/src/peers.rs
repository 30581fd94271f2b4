//! The peers hop is compared with: HAProxy and nginx, each built into the same shape as hop's
//! path — three processes, two mutual-TLS 1.3 links (ECDSA P-256), plain TCP at both ends:
//!
//! ```text
//! load generator ─plain→ A (client) ─mTLS→ B (proxy) ─mTLS→ C (agent) ─plain→ target
//! hop:                  hop proxy app     hop start        hop agent
//! ```
//!
//! B is "HAProxy #1" of the baselines (terminates the client's TLS, TLS to the second hop), C is
//! "HAProxy #2" (terminates, plain to the target); A exists only because the load generator speaks
//! plain TCP, as `hop proxy app` does for hop. Each process runs one thread (`nbthread 1`,
//! `worker_processes 1`, no master process) so that its CPU time is one figure.
//!
//! This module owns writing their configs, installing them when missing (Debian packages), and
//! starting them; it never touches a system-wide service.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::contender::{Contender, Role};
use crate::pki::Pki;
use crate::procs::{self, Spawned};

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next().map(|u| u == "0"))
        .unwrap_or(false)
}

/// `apt-get install` of Debian packages (as root only); true on success.
pub fn apt_install(packages: &[&str]) -> bool {
    if !is_root() {
        return false;
    }
    eprintln!("hop-bench: installing {} ...", packages.join(" "));
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(["-o", "DPkg::Lock::Timeout=600"])
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    let mut install_args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    install_args.extend_from_slice(packages);
    apt(&install_args) || (apt(&["update", "-qq"]) && apt(&install_args))
}

/// Finds `program`; installs `packages` with apt-get when it is missing and `install` allows it.
/// `None` (with a line on standard error) when it stays missing.
pub fn ensure(program: &str, packages: &[&str], install: bool) -> Option<PathBuf> {
    if let Some(p) = procs::find_program(program) {
        return Some(p);
    }
    if install
        && apt_install(packages)
        && let Some(p) = procs::find_program(program)
    {
        return Some(p);
    }
    eprintln!(
        "hop-bench: {program} is not installed; skipping it (install: apt-get install {})",
        packages.join(" ")
    );
    None
}

/// nginx with its `stream` module (Debian ships it as a dynamic module package).
pub fn ensure_nginx(install: bool) -> Option<PathBuf> {
    let bin = ensure("nginx", &["nginx", "libnginx-mod-stream"], install)?;
    let has_stream = || {
        Path::new(STREAM_MODULE).is_file()
            || Command::new(&bin)
                .arg("-V")
                .output()
                .map(|o| String::from_utf8_lossy(&o.stderr).contains("--with-stream "))
                .unwrap_or(false)
    };
    if has_stream() || (install && apt_install(&["libnginx-mod-stream"]) && has_stream()) {
        return Some(bin);
    }
    eprintln!(
        "hop-bench: nginx has no stream module; skipping it (install: apt-get install libnginx-mod-stream)"
    );
    None
}

const STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

/// Connections a peer process may hold, from the hard limit on open files (two per connection).
fn max_connections() -> usize {
    let hard = std::fs::read_to_string("/proc/self/limits")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| {
            l.split_whitespace()
                .nth(4)
                .and_then(|v| v.parse::<usize>().ok())
        })
        .unwrap_or(4096);
    (hard.saturating_sub(256) / 2).clamp(1000, 200_000)
}

struct Guard {
    _procs: Vec<Spawned>,
    _dir: tempfile::TempDir,
}

/// Which variant of TLS session handling a peer chain uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resumption {
    /// No session cache, no tickets, no client-side reuse: every handshake is a full one.
    Off,
    /// The peer's defaults: session cache, tickets, and client-side session reuse.
    On,
}

fn start_chain(
    name: &str,
    dir: tempfile::TempDir,
    configs: [(Role, String); 3],
    cmd_for: impl Fn(&Path) -> Command,
    ports: [u16; 3],
    describe: String,
) -> anyhow::Result<Contender> {
    let mut spawned = Vec::new();
    let mut pids = Vec::new();
    // Start from the target end (C, B, A) so that each hop's next hop already listens.
    for ((role, text), port) in configs.iter().zip(ports).rev() {
        let letter = match role {
            Role::Client => "a",
            Role::Proxy => "b",
            _ => "c",
        };
        let cfg = dir.path().join(format!("{letter}.conf"));
        std::fs::write(&cfg, text)?;
        let mut p = Spawned::start(
            &format!("{name} {}", letter.to_uppercase()),
            cmd_for(&cfg),
            &dir.path().join(format!("{letter}.log")),
            false,
        )?;
        if let Err(e) = procs::wait_listening(port, Duration::from_secs(10)) {
            p.check_running()?;
            return Err(e.context(format!("{name} {}", letter.to_uppercase())));
        }
        pids.push((*role, p.pid()));
        spawned.push(p);
    }
    Ok(Contender {
        name: name.to_string(),
        entry: procs::loopback(ports[0]),
        procs: pids,
        describe,
        _guard: Box::new(Guard {
            _procs: spawned,
            _dir: dir,
        }),
    })
}

/// HAProxy 3-process chain to `target`.
pub fn haproxy(
    binary: &Path,
    pki: &Pki,
    target: SocketAddr,
    resumption: Resumption,
    name: &str,
) -> anyhow::Result<Contender> {
    let dir = tempfile::Builder::new()
        .prefix("hop-bench-haproxy-")
        .tempdir()?;
    let ports = [
        procs::free_port()?,
        procs::free_port()?,
        procs::free_port()?,
    ];
    let full = resumption == Resumption::Off;
    let global = format!(
        "global\n  nbthread 1\n  maxconn {max}\n{cache}  ssl-default-bind-options ssl-min-ver TLSv1.3{tickets}\n  \
         ssl-default-server-options ssl-min-ver TLSv1.3\n\
         defaults\n  mode tcp\n  timeout connect 10s\n  timeout client 1h\n  timeout server 1h\n",
        max = max_connections(),
        cache = if full { "  tune.ssl.cachesize 0\n" } else { "" },
        tickets = if full { " no-tls-tickets" } else { "" },
    );
    let server_tls = format!(
        "ssl crt {} ca-file {} verify required verifyhost localhost sni str(localhost){}",
        pki.client_bundle.display(),
        pki.ca.display(),
        if full { " no-ssl-reuse" } else { "" }
    );
    let bind_tls = format!(
        "ssl crt {} ca-file {} verify required",
        pki.server_bundle.display(),
        pki.ca.display()
    );
    let [pa, pb, pc] = ports;
    let configs = [
        (
            Role::Client,
            format!(
                "{global}frontend in\n  bind 127.0.0.1:{pa}\n  default_backend out\n\
                 backend out\n  server b 127.0.0.1:{pb} {server_tls}\n"
            ),
        ),
        (
            Role::Proxy,
            format!(
                "{global}frontend in\n  bind 127.0.0.1:{pb} {bind_tls}\n  default_backend out\n\
                 backend out\n  server c 127.0.0.1:{pc} {server_tls}\n"
            ),
        ),
        (
            Role::Agent,
            format!(
                "{global}frontend in\n  bind 127.0.0.1:{pc} {bind_tls}\n  default_backend out\n\
                 backend out\n  server t {target}\n"
            ),
        ),
    ];
    let describe = format!(
        "load generator → HAProxy A (client: plain in, mTLS out) → HAProxy B (proxy: terminates \
         mTLS, mTLS to C) → HAProxy C (agent: terminates mTLS, plain out) → target; `mode tcp`, \
         `nbthread 1` each, TLS 1.3 only, ECDSA P-256; {}",
        if full {
            "session cache, tickets and client-side reuse off (every handshake full)"
        } else {
            "HAProxy's default session cache, tickets and client-side reuse (resumed handshakes)"
        }
    );
    let bin = binary.to_path_buf();
    start_chain(
        name,
        dir,
        configs,
        |cfg| {
            let mut c = procs::command(&bin);
            c.arg("-db").arg("-f").arg(cfg);
            c
        },
        ports,
        describe,
    )
}

/// nginx `stream` 3-process chain to `target` (full handshakes).
pub fn nginx(binary: &Path, pki: &Pki, target: SocketAddr) -> anyhow::Result<Contender> {
    let dir = tempfile::Builder::new()
        .prefix("hop-bench-nginx-")
        .tempdir()?;
    let ports = [
        procs::free_port()?,
        procs::free_port()?,
        procs::free_port()?,
    ];
    let module = Path::new(STREAM_MODULE);
    let load = if module.is_file() {
        format!("load_module {};\n", module.display())
    } else {
        String::new()
    };
    let max = max_connections();
    let d = dir.path().display();
    let head = |letter: &str| {
        format!(
            "{load}daemon off;\nmaster_process off;\nworker_processes 1;\nworker_rlimit_nofile {fds};\n\
             pid {d}/{letter}.pid;\nerror_log {d}/{letter}.err warn;\n\
             events {{ worker_connections {conns}; }}\n",
            fds = max * 2 + 128,
            conns = max * 2,
        )
    };
    let upstream_tls = format!(
        "    proxy_ssl on;\n    proxy_ssl_protocols TLSv1.3;\n    proxy_ssl_certificate {};\n    \
         proxy_ssl_certificate_key {};\n    proxy_ssl_trusted_certificate {};\n    \
         proxy_ssl_verify on;\n    proxy_ssl_name localhost;\n    proxy_ssl_server_name on;\n    \
         proxy_ssl_session_reuse off;\n",
        pki.client_crt.display(),
        pki.client_key.display(),
        pki.ca.display()
    );
    let listen_tls = format!(
        "    ssl_certificate {};\n    ssl_certificate_key {};\n    ssl_protocols TLSv1.3;\n    \
         ssl_verify_client on;\n    ssl_client_certificate {};\n    ssl_session_cache off;\n    \
         ssl_session_tickets off;\n",
        pki.server_crt.display(),
        pki.server_key.display(),
        pki.ca.display()
    );
    let [pa, pb, pc] = ports;
    let configs = [
        (
            Role::Client,
            format!(
                "{}stream {{\n  server {{\n    listen 127.0.0.1:{pa};\n    proxy_pass 127.0.0.1:{pb};\n{upstream_tls}  }}\n}}\n",
                head("a")
            ),
        ),
        (
            Role::Proxy,
            format!(
                "{}stream {{\n  server {{\n    listen 127.0.0.1:{pb} ssl;\n{listen_tls}    proxy_pass 127.0.0.1:{pc};\n{upstream_tls}  }}\n}}\n",
                head("b")
            ),
        ),
        (
            Role::Agent,
            format!(
                "{}stream {{\n  server {{\n    listen 127.0.0.1:{pc} ssl;\n{listen_tls}    proxy_pass {target};\n  }}\n}}\n",
                head("c")
            ),
        ),
    ];
    let bin = binary.to_path_buf();
    let prefix = dir.path().to_path_buf();
    let test = Command::new(&bin)
        .arg("-v")
        .output()
        .context("running nginx -v")?;
    if !test.status.success() {
        bail!("nginx -v failed");
    }
    start_chain(
        "nginx",
        dir,
        configs,
        move |cfg| {
            let mut c = procs::command(&bin);
            c.arg("-p")
                .arg(&prefix)
                .arg("-e")
                .arg(prefix.join("startup.err"))
                .arg("-c")
                .arg(cfg);
            c
        },
        ports,
        "load generator → nginx A (client: plain in, mTLS out) → nginx B (proxy: terminates \
         mTLS, mTLS to C) → nginx C (agent: terminates mTLS, plain out) → target; `stream` module, \
         one worker process each (no master), TLS 1.3 only, ECDSA P-256, 16 KiB proxy buffers, \
         no session cache, tickets or reuse"
            .into(),
    )
}
