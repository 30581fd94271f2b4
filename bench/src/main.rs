//! `hop-bench`: scenario benchmarks that run the real `hop` binary beside its peers on loopback.
//!
//! One command per scenario (`relay`, `handshake`, `latency`, `idle`) starts everything itself —
//! hop (Auth + Proxy), an app agent joined by token, `hop proxy app`, HAProxy and nginx chains of
//! the same shape, and Rust targets and load generators in this process — runs every contender
//! in turn for each repetition, and prints one table (Markdown) or JSON with medians, spreads,
//! ratios to the reference contenders and CPU-seconds per process. `pgbench` does the same for
//! database access: PostgreSQL 15 directly over TLS and through a db agent. Everything it starts
//! is stopped by PID when the run ends, also on error. `agents` and `reconnect` drive
//! `hop admin loadtest agents` against one appliance: tunnels held (proxy CPU and memory per
//! agent) and a proxy restart under them (how fast and how evenly the agents come back);
//! `agents-ha` splits simulated node agents across two appliances on one PostgreSQL (backend
//! writes, proxy CPU and memory per agent, `hop ls` over all their nodes from either). See
//! `bench/README.md`.

#![forbid(unsafe_code)]

mod agents;
mod agents_ha;
mod clock;
mod contender;
mod hop;
mod load;
mod peers;
mod pgbench;
mod pki;
mod procs;
mod report;
mod scenarios;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Bulk throughput through the full path (1 and 16 streams), CPU-seconds per GB per process.
    Relay,
    /// New sessions per second through the full path, CPU per session per process.
    Handshake,
    /// Request/response round trips on one connection: p50/p99.
    Latency,
    /// Proxy memory (RSS growth) per idle established session.
    Idle,
    /// pgbench against PostgreSQL 15: directly over TLS, and through Hop's database access.
    Pgbench,
    /// N simulated agents' tunnels held by one proxy: its CPU at steady state, memory per agent.
    Agents,
    /// A proxy restart under N agents: when they are all back, and how evenly they return.
    Reconnect,
    /// N simulated node agents across two appliances on one PostgreSQL: backend writes per
    /// second, each proxy's CPU and memory per agent, `hop ls` over all nodes from either.
    AgentsHa,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Relay => "relay",
            Scenario::Handshake => "handshake",
            Scenario::Latency => "latency",
            Scenario::Idle => "idle",
            Scenario::Pgbench => "pgbench",
            Scenario::Agents => "agents",
            Scenario::Reconnect => "reconnect",
            Scenario::AgentsHa => "agents-ha",
        }
    }
    fn default_contenders(self) -> &'static [&'static str] {
        match self {
            Scenario::Relay | Scenario::Latency => &["direct", "hop", "haproxy", "nginx"],
            Scenario::Handshake => &["direct", "hop", "haproxy", "haproxy-resume", "nginx"],
            Scenario::Idle => &["hop", "haproxy", "nginx"],
            Scenario::Pgbench => &["direct", "hop"],
            Scenario::Agents | Scenario::Reconnect | Scenario::AgentsHa => &["hop"],
        }
    }
    /// Default repetitions (pgbench: 2, so that a default run stays within about 5 minutes;
    /// agents and reconnect: 1 window or restart, after a join that dominates the run).
    fn default_repeat(self) -> usize {
        match self {
            Scenario::Pgbench => 2,
            Scenario::Agents | Scenario::Reconnect | Scenario::AgentsHa => 1,
            _ => 3,
        }
    }
    /// Default measured window per run, seconds.
    fn default_seconds(self) -> f64 {
        match self {
            Scenario::Relay | Scenario::Handshake => 3.0,
            Scenario::Latency => 2.0,
            Scenario::Idle | Scenario::Reconnect => 0.0,
            Scenario::Pgbench => 20.0,
            // One heartbeat interval: every agent beats once in the window.
            Scenario::Agents | Scenario::AgentsHa => 30.0,
        }
    }
}

/// Scenario benchmarks: hop beside direct, HAProxy and nginx, on loopback.
#[derive(Debug, Parser)]
#[command(name = "hop-bench", version)]
struct Cli {
    /// Which scenario to run.
    #[arg(value_enum)]
    scenario: Scenario,
    /// Print the report as JSON (raw samples, medians table, settings) instead of Markdown.
    #[arg(long)]
    json: bool,
    /// Repetitions of every contender (interleaved) [default: 3; pgbench 2; agents 1 measured
    /// window, reconnect 1 restart, each after the one join and first connect].
    #[arg(long, visible_alias = "repeats")]
    repeat: Option<usize>,
    /// Measured window per run in seconds [default: relay 3, handshake 3, latency 2, pgbench
    /// 20 (its -T), agents and agents-ha 30 (one heartbeat interval)].
    #[arg(long, visible_alias = "duration")]
    seconds: Option<f64>,
    /// Warm-up before each measured window, in seconds (pgbench: one unrecorded select-only run
    /// per contender before the first repetition, whole seconds; agents, reconnect: the quiet
    /// time before the agents start and after all tunnels are up; agents-ha: after every node
    /// is listed) [default: 0.5; pgbench 3; agents, reconnect and agents-ha 10].
    #[arg(long)]
    warmup: Option<f64>,
    /// Contenders to run, comma separated: direct, hop, haproxy, haproxy-resume, nginx
    /// (pgbench: direct, hop) [default: per scenario].
    #[arg(long, value_delimiter = ',')]
    contenders: Vec<String>,
    /// relay: parallel streams per case, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    streams: Vec<usize>,
    /// handshake: concurrent clients opening sessions.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// latency: bytes per request and per response.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// idle: sessions held open at once.
    #[arg(long, default_value_t = 2000)]
    sessions: usize,
    /// pgbench: clients (-c).
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// pgbench: worker threads (-j).
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// pgbench: scale factor of `pgbench -i -s` (10: 1,000,000 accounts).
    #[arg(long, default_value_t = 10)]
    scale: usize,
    /// pgbench: workloads, comma separated: select (-S), tpcb (the default TPC-B-like script),
    /// each with -simple (default) or -prepared (-M prepared), e.g. select,tpcb,select-prepared.
    #[arg(long, value_delimiter = ',', default_value = "select,tpcb")]
    workloads: Vec<String>,
    /// agents, reconnect: simulated agents (`hop admin loadtest agents --count`); agents-ha: in
    /// all, half per appliance.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// agents-ha: nodes each simulated node agent announces (`hop admin loadtest agents
    /// --nodes`); 10,000 agents × 5 = 50,000 nodes.
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// agents-ha: timed `hop ls --format json` runs per appliance.
    #[arg(long, default_value_t = 5)]
    ls_runs: usize,
    /// agents, reconnect: the simulated agents heartbeat every this many seconds instead of the
    /// proxy's 30 (under 90, or the proxy drops them), to put more heartbeats in a short window.
    #[arg(long)]
    heartbeat: Option<f64>,
    /// reconnect: the least time the appliance stays down, SIGTERM to the new `hop start`, in
    /// seconds (agents whose goaway delay ends sooner are refused and back off).
    #[arg(long, default_value_t = 1.0)]
    downtime: f64,
    /// The hop binary [default: build and use <workspace>/target/release/hop].
    #[arg(long)]
    hop: Option<PathBuf>,
    /// Do not run `cargo build --release -p hop` first.
    #[arg(long)]
    no_build: bool,
    /// Do not apt-get install missing peers (they are skipped instead).
    #[arg(long)]
    no_install: bool,
    /// hop: `proxy_service.workers` [default: hop's, one per core].
    #[arg(long)]
    hop_workers: Option<usize>,
    /// hop: the agent's warm pool of data connections (`app_service.tunnel_pool_size`).
    #[arg(long, default_value_t = 16)]
    pool_size: usize,
    /// Save this run as baseline NAME (target/hop-bench/SCENARIO/NAME.json).
    #[arg(long, value_name = "NAME")]
    save_baseline: Option<String>,
    /// Compare with saved baseline NAME: adds a column with the primary figure's ratio.
    #[arg(long, value_name = "NAME")]
    baseline: Option<String>,
}

/// agents, reconnect: default quiet time (seconds) before the agents start and after all are up.
const AGENTS_SETTLE_S: f64 = 10.0;

fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| if p.is_relative() { root.join(p) } else { p })
        .unwrap_or_else(|| root.join("target"))
}

/// The hop binary: `--hop`, else the workspace's release build (built first unless --no-build).
fn hop_binary(cli: &Cli, root: &Path) -> anyhow::Result<PathBuf> {
    if let Some(p) = &cli.hop {
        return Ok(p.clone());
    }
    if !cli.no_build {
        eprintln!("hop-bench: cargo build --release -p hop");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "--release", "-p", "hop"])
            .current_dir(root)
            .status()
            .context("running cargo build --release -p hop")?;
        if !st.success() {
            bail!("cargo build --release -p hop failed");
        }
    }
    let p = target_dir(root).join("release").join("hop");
    if !p.is_file() {
        bail!(
            "{} does not exist: run `cargo build --release -p hop` or pass --hop PATH",
            p.display()
        );
    }
    Ok(p)
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(&cli) {
        eprintln!("ERROR: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    let root = workspace_root();
    let scenario = cli.scenario;
    let names: Vec<String> = if cli.contenders.is_empty() {
        scenario
            .default_contenders()
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        cli.contenders.clone()
    };
    const KNOWN: [&str; 5] = ["direct", "hop", "haproxy", "haproxy-resume", "nginx"];
    let agent_scenario = matches!(
        scenario,
        Scenario::Agents | Scenario::Reconnect | Scenario::AgentsHa
    );
    let known: &[&str] = match scenario {
        Scenario::Pgbench => &KNOWN[..2],
        Scenario::Agents | Scenario::Reconnect | Scenario::AgentsHa => &KNOWN[1..2],
        _ => &KNOWN,
    };
    if let Some(bad) = names.iter().find(|n| !known.contains(&n.as_str())) {
        bail!("unknown contender {bad:?}; expected {}", known.join(", "));
    }
    let workloads = cli
        .workloads
        .iter()
        .map(|w| pgbench::Workload::parse(w))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let repeat = cli.repeat.unwrap_or(scenario.default_repeat());
    if repeat == 0 {
        bail!("--repeat must be at least 1");
    }
    let baseline = match &cli.baseline {
        Some(name) => Some(report::load(&report::baseline_path(
            &target_dir(&root),
            scenario.name(),
            name,
        ))?),
        None => None,
    };
    if agent_scenario {
        if cli.agents == 0 {
            bail!("--agents must be at least 1");
        }
        if let Some(h) = cli.heartbeat
            && !(0.1..90.0).contains(&h)
        {
            bail!("--heartbeat must be from 0.1 to under 90 seconds (three proxy heartbeats)");
        }
        // The proxy and the load test each hold one descriptor per agent (each raises its soft
        // limit to the hard one).
        let needed = cli.agents + 512;
        let hard = std::fs::read_to_string("/proc/self/limits")
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| {
                l.split_whitespace()
                    .nth(4)
                    .and_then(|v| v.parse::<usize>().ok())
            })
            .unwrap_or(usize::MAX);
        if needed > hard {
            bail!(
                "--agents {} needs about {needed} open files in the proxy and in the load test; \
                 the hard limit is {hard} (raise it with `ulimit -Hn`)",
                cli.agents
            );
        }
    }
    let hop_bin = hop_binary(cli, &root)?;
    if names.iter().any(|n| n == "hop") && !agent_scenario {
        peers::ensure("oathtool", &["oathtool"], !cli.no_install);
    }
    let wants = |p: &str| names.iter().any(|n| n.starts_with(p));
    let haproxy = wants("haproxy")
        .then(|| peers::ensure("haproxy", &["haproxy"], !cli.no_install))
        .flatten();
    let nginx = wants("nginx")
        .then(|| peers::ensure_nginx(!cli.no_install))
        .flatten();
    if scenario == Scenario::Idle {
        let needed = cli.sessions * 2 + 256;
        let limit = std::fs::read_to_string("/proc/self/limits")
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| {
                l.split_whitespace()
                    .nth(3)
                    .and_then(|v| v.parse::<usize>().ok())
            })
            .unwrap_or(usize::MAX);
        if needed > limit {
            bail!(
                "--sessions {} needs about {needed} open files in this process and in each proxy; \
                 the limit is {limit} (raise it with `ulimit -n`)",
                cli.sessions
            );
        }
    }

    let dir = tempfile::Builder::new()
        .prefix("hop-bench-pki-")
        .tempdir()?;
    let pki = pki::Pki::write(dir.path())?;
    let env = scenarios::Env {
        hop: hop::HopOptions {
            binary: hop_bin.clone(),
            workers: cli.hop_workers,
            pool_size: cli.pool_size,
        },
        haproxy: haproxy.clone(),
        nginx: nginx.clone(),
        pki,
        repeat,
        window: Duration::from_secs_f64(cli.seconds.unwrap_or(scenario.default_seconds())),
        warmup: Duration::from_secs_f64(cli.warmup.unwrap_or(0.5)),
        _dir: dir,
    };

    // pgbench takes whole seconds (-T).
    let pg_seconds = cli
        .seconds
        .unwrap_or(Scenario::Pgbench.default_seconds())
        .round()
        .max(1.0) as u64;
    let pg_warmup = cli.warmup.unwrap_or(3.0).round().max(0.0) as u64;
    let mut meta = report::Meta::collect(&root);
    if let Some(v) = procs::first_line(&hop_bin, &["--version"]) {
        meta.versions.insert("hop".into(), v);
    }
    if let Some(b) = &haproxy
        && let Some(v) = procs::first_line(b, &["-v"])
    {
        meta.versions.insert("haproxy".into(), v);
    }
    if let Some(b) = &nginx
        && let Some(v) = procs::first_line(b, &["-v"])
    {
        meta.versions.insert("nginx".into(), v);
    }
    let mut settings = BTreeMap::new();
    settings.insert("repeat".to_string(), json!(repeat));
    match scenario {
        Scenario::Relay => {
            settings.insert("seconds".into(), json!(env.window.as_secs_f64()));
            settings.insert("warmup".into(), json!(env.warmup.as_secs_f64()));
            settings.insert("streams".into(), json!(cli.streams));
        }
        Scenario::Handshake => {
            settings.insert("seconds".into(), json!(env.window.as_secs_f64()));
            settings.insert("warmup".into(), json!(env.warmup.as_secs_f64()));
            settings.insert("concurrency".into(), json!(cli.concurrency));
        }
        Scenario::Latency => {
            settings.insert("seconds".into(), json!(env.window.as_secs_f64()));
            settings.insert("warmup".into(), json!(env.warmup.as_secs_f64()));
            settings.insert("size".into(), json!(cli.size));
        }
        Scenario::Idle => {
            settings.insert("sessions".into(), json!(cli.sessions));
        }
        Scenario::Agents | Scenario::Reconnect => {
            settings.insert("agents".into(), json!(cli.agents));
            if scenario == Scenario::Agents {
                settings.insert("seconds".into(), json!(env.window.as_secs_f64()));
            } else {
                settings.insert("downtime".into(), json!(cli.downtime));
            }
            settings.insert(
                "settle".into(),
                json!(cli.warmup.unwrap_or(AGENTS_SETTLE_S)),
            );
            settings.insert(
                "heartbeat".into(),
                json!(
                    cli.heartbeat
                        .unwrap_or(agents::PROXY_HEARTBEAT.as_secs_f64())
                ),
            );
        }
        Scenario::AgentsHa => {
            settings.insert("agents".into(), json!(cli.agents));
            settings.insert("nodes_per_agent".into(), json!(cli.nodes));
            settings.insert("appliances".into(), json!(2));
            settings.insert("seconds".into(), json!(env.window.as_secs_f64()));
            settings.insert("ls_runs".into(), json!(cli.ls_runs));
            settings.insert(
                "settle".into(),
                json!(cli.warmup.unwrap_or(AGENTS_SETTLE_S)),
            );
        }
        Scenario::Pgbench => {
            settings.insert("seconds".into(), json!(pg_seconds));
            settings.insert("warmup".into(), json!(pg_warmup));
            settings.insert("clients".into(), json!(cli.clients));
            settings.insert("jobs".into(), json!(cli.jobs));
            settings.insert("scale".into(), json!(cli.scale));
            settings.insert(
                "workloads".into(),
                json!(workloads.iter().map(|w| w.name()).collect::<Vec<_>>()),
            );
        }
    }
    if names.iter().any(|n| n == "hop") {
        settings.insert(
            "hop_workers".into(),
            json!(
                cli.hop_workers
                    .map(|w| w.to_string())
                    .unwrap_or_else(|| "default".into())
            ),
        );
        if scenario != Scenario::Pgbench && !agent_scenario {
            settings.insert("hop_pool_size".into(), json!(cli.pool_size));
        }
    }
    let mut report = report::Report {
        scenario: scenario.name().into(),
        meta,
        settings,
        contenders: vec![],
        rows: vec![],
        notes: vec![],
        table: vec![],
    };
    match scenario {
        Scenario::Relay => scenarios::relay(&env, &names, &cli.streams, &mut report)?,
        Scenario::Handshake => scenarios::handshake(&env, &names, cli.concurrency, &mut report)?,
        Scenario::Latency => scenarios::latency(&env, &names, cli.size, &mut report)?,
        Scenario::Idle => scenarios::idle(&env, &names, cli.sessions, &mut report)?,
        Scenario::Pgbench => {
            let o = pgbench::Options {
                hop: env.hop.clone(),
                contenders: names.clone(),
                repeat,
                seconds: pg_seconds,
                clients: cli.clients,
                jobs: cli.jobs,
                scale: cli.scale,
                workloads: workloads.clone(),
                warmup: pg_warmup,
                install: !cli.no_install,
            };
            pgbench::run(&o, &mut report)?
        }
        Scenario::Agents | Scenario::Reconnect => {
            let o = agents::Options {
                hop: env.hop.clone(),
                agents: cli.agents,
                repeat,
                window: env.window,
                settle: Duration::from_secs_f64(cli.warmup.unwrap_or(AGENTS_SETTLE_S)),
                heartbeat: cli.heartbeat.map(Duration::from_secs_f64),
                downtime: Duration::from_secs_f64(cli.downtime.max(0.0)),
            };
            if scenario == Scenario::Agents {
                agents::agents(&o, &mut report)?
            } else {
                agents::reconnect(&o, &mut report)?
            }
        }
        Scenario::AgentsHa => {
            let o = agents_ha::Options {
                hop: env.hop.clone(),
                agents: cli.agents,
                nodes: cli.nodes,
                window: env.window,
                settle: Duration::from_secs_f64(cli.warmup.unwrap_or(AGENTS_SETTLE_S)),
                ls_runs: cli.ls_runs.max(1),
            };
            agents_ha::run(&o, &mut report)?
        }
    }
    report.meta.loadavg_after = report::loadavg();
    if names.iter().any(|n| n == "hop") && scenario != Scenario::Pgbench && !agent_scenario {
        report.notes.push(
            "hop's proxy terminates TLS on its io_uring workers, runs the Dial and RBAC on its \
             tokio control plane, then hands each hop-tcp session's two sockets and TLS keys back \
             to a worker, which re-seals the records in place (no kernel TLS on this machine); \
             the agent and `hop proxy app` relay with tokio"
                .into(),
        );
    }
    if let Some(b) = &baseline {
        scenarios::add_baseline_column(&mut report, b);
    }
    if let Some(name) = &cli.save_baseline {
        let path = report::baseline_path(&target_dir(&root), scenario.name(), name);
        report::save(&report, &path)?;
        eprintln!("hop-bench: saved baseline {}", path.display());
    }
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        report::print_text(&report);
    }
    Ok(())
}
