//! The `pgbench` scenario: PostgreSQL 15 reached directly over TLS, and through Hop's database
//! access (proxy + db agent), with the same `pgbench` workloads, interleaved.
//!
//! This module owns the PostgreSQL server of the scenario (its own temp dir and free port, TLS
//! with a server certificate Hop issues, `cert` authentication only, tuned for benchmarking), the
//! Hop side (a role allowing the database, a user who signs up, logs in and runs
//! `hop db login`, a db agent joined by token), running `pgbench` and reading its summary, and
//! the CPU time of every process of the path from `/proc`:
//!
//! - `postgres`: the postmaster, its live children and the backends it has reaped (one backend
//!   per connection, so the whole server's CPU is counted);
//! - `proxy`: `hop start` (Auth + Proxy, which also appends every audit event);
//! - `agent`: `hop start --roles db`;
//! - `pgbench`: the CPU of the children this process has reaped (`cutime`/`cstime`), which in the
//!   measured window is pgbench alone.
//!
//! Both contenders use the same server and the same tables: `direct` logs in with a client
//! certificate from a throwaway CA that is added to the server's `ssl_ca_file` next to Hop's db
//! CA, so that its path is TLS + certificate login, as the agent's leg to the database is.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::clock::{monotonic_now, since};
use crate::hop::{self, Appliance, HopOptions};
use crate::peers;
use crate::pki;
use crate::procs::{self, Spawned};
use crate::report::{ContenderInfo, Report, Sample, num, ratio};

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
const DB_USER: &str = "bench";
const DB_NAME: &str = "bench";
const DB_SERVICE: &str = "pg";
const HOP_USER: &str = "bench";
const ROLE: &str = "kind: role\nversion: v7\nmetadata:\n  name: db-bench\nspec:\n  allow:\n    \
                    db_labels:\n      env: bench\n    db_users: [bench]\n    db_names: [bench]\n";
/// The goal of issue 5: Hop's TPS at least this fraction of direct TLS.
const GOAL: f64 = 0.9;

/// One pgbench workload: a built-in script and a query mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    /// `-S` (select-only) rather than the default TPC-B-like script.
    pub select_only: bool,
    /// `-M prepared` rather than `-M simple`.
    pub prepared: bool,
}

impl Workload {
    /// `select`, `tpcb`, each with an optional `-simple` or `-prepared` suffix.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        let (base, prepared) = match s.strip_suffix("-prepared") {
            Some(b) => (b, true),
            None => (s.strip_suffix("-simple").unwrap_or(s), false),
        };
        let select_only = match base {
            "select" | "select-only" => true,
            "tpcb" | "tpcb-like" => false,
            _ => bail!(
                "unknown pgbench workload {s:?}; expected select, tpcb, select-prepared or \
                 tpcb-prepared"
            ),
        };
        Ok(Self {
            select_only,
            prepared,
        })
    }

    pub fn name(&self) -> String {
        format!(
            "{} {}",
            if self.select_only {
                "select-only"
            } else {
                "tpcb-like"
            },
            if self.prepared { "prepared" } else { "simple" }
        )
    }

    fn args(&self) -> Vec<&'static str> {
        let mut a = vec!["-M", if self.prepared { "prepared" } else { "simple" }];
        if self.select_only {
            a.push("-S");
        }
        a
    }

    /// Statements per transaction (each is one `db.query` audit event through Hop).
    fn statements(&self) -> f64 {
        if self.select_only { 1.0 } else { 7.0 }
    }
}

/// What the scenario is asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub hop: HopOptions,
    pub contenders: Vec<String>,
    pub repeat: usize,
    /// pgbench `-T`.
    pub seconds: u64,
    /// pgbench `-c`.
    pub clients: usize,
    /// pgbench `-j`.
    pub jobs: usize,
    /// pgbench `-i -s`.
    pub scale: usize,
    pub workloads: Vec<Workload>,
    /// Unrecorded select-only run per contender before the first repetition, seconds (0: none).
    pub warmup: u64,
    /// apt-get install PostgreSQL 15 when it is missing.
    pub install: bool,
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

/// A PostgreSQL 15 server in its own temp dir, stopped (fast shutdown, by PID) when dropped.
struct Postgres {
    port: u16,
    dir: PathBuf,
    server: Spawned,
    _dir: tempfile::TempDir,
}

impl Postgres {
    /// Writes Hop's server certificate for the database (`hop admin auth sign --format db`) and a
    /// CA bundle (Hop's db CA and `direct_ca`), runs initdb, configures TLS and `cert`
    /// authentication, and starts the server (as the OS user `postgres` when the harness is root:
    /// PostgreSQL refuses to run as root).
    fn start(a: &Appliance, direct_ca: &Path) -> anyhow::Result<Self> {
        let os_user = peers::is_root().then_some("postgres");
        let tmp = tempfile::Builder::new().prefix("hop-bench-pg-").tempdir()?;
        let d = tmp.path().to_path_buf();
        a.ok(&[
            "admin",
            "auth",
            "sign",
            "--format",
            "db",
            "--host",
            "localhost,127.0.0.1",
            "--out",
            &d.join("server").to_string_lossy(),
        ])?;
        let bundle = format!(
            "{}\n{}",
            std::fs::read_to_string(d.join("server.cas"))?.trim_end(),
            std::fs::read_to_string(direct_ca)?
        );
        std::fs::write(d.join("ca-bundle.pem"), bundle)?;
        if let Some(u) = os_user {
            let out = Command::new("chown")
                .arg("-R")
                .arg(format!("{u}:{u}"))
                .arg(&d)
                .output()?;
            hop::ok("chown", out)?;
        }
        let data = d.join("data");
        let out = procs::command_as(os_user, Path::new(PG_BIN).join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth-local=trust", "--auth-host=reject"])
            .args(["-E", "UTF8", "--locale=C"])
            .current_dir(&d)
            .output()
            .context("running initdb")?;
        hop::ok("initdb", out)?;
        let port = procs::free_port()?;
        let conf = format!(
            "\n# hop-bench\nlisten_addresses = '127.0.0.1'\nport = {port}\n\
             unix_socket_directories = '{d}'\nmax_connections = 200\nshared_buffers = 256MB\n\
             ssl = on\nssl_cert_file = '{d}/server.crt'\nssl_key_file = '{d}/server.key'\n\
             ssl_ca_file = '{d}/ca-bundle.pem'\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
             max_wal_size = 4GB\ncheckpoint_timeout = 1h\nautovacuum = off\n",
            d = d.display()
        );
        let pgconf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&pgconf)?;
        text.push_str(&conf);
        std::fs::write(&pgconf, text)?;
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 cert\n",
        )?;
        let mut cmd = procs::command_as(os_user, Path::new(PG_BIN).join("postgres"));
        cmd.arg("-D").arg(&data).current_dir(&d);
        let mut server = Spawned::start("postgres", cmd, &d.join("pg.log"), false)?;
        let deadline = monotonic_now() + Duration::from_secs(60);
        loop {
            server.check_running()?;
            let ready = Command::new(Path::new(PG_BIN).join("pg_isready"))
                .arg("-h")
                .arg(&d)
                .args(["-p", &port.to_string(), "-U", "postgres", "-q"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                break;
            }
            if monotonic_now() > deadline {
                bail!(
                    "PostgreSQL was not ready within 60 s; its log:\n{}",
                    procs::log_tail(&server.log, 30)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(Self {
            port,
            dir: d,
            server,
            _dir: tmp,
        })
    }

    fn pid(&self) -> u32 {
        self.server.pid()
    }

    /// Runs each of `sqls` (a separate `-c`, so outside any transaction block) as `user` over
    /// the local socket.
    fn sql(&self, user: &str, db: &str, sqls: &[&str]) -> anyhow::Result<String> {
        let mut cmd = Command::new("psql");
        cmd.arg("-h")
            .arg(&self.dir)
            .args(["-p", &self.port.to_string(), "-U", user, "-d", db])
            .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1"]);
        for s in sqls {
            cmd.args(["-c", s]);
        }
        let out = cmd.stdin(Stdio::null()).output().context("running psql")?;
        hop::ok(&format!("psql {sqls:?}"), out)
    }

    /// `pgbench -i -s SCALE` over the local socket, as the benchmark's database user.
    fn init(&self, scale: usize) -> anyhow::Result<()> {
        let out = Command::new("pgbench")
            .arg("-i")
            .args(["-s", &scale.to_string(), "-q", "-h"])
            .arg(&self.dir)
            .args(["-p", &self.port.to_string(), "-U", DB_USER, DB_NAME])
            .stdin(Stdio::null())
            .output()
            .context("running pgbench -i")?;
        hop::ok("pgbench -i", out).map(drop)
    }

    /// The same state before every run: what pgbench itself does before a run (vacuum of the
    /// small tables, history emptied; the runs use `-n`), then a checkpoint, so that no
    /// contender inherits the previous one's dirty pages.
    fn reset(&self) -> anyhow::Result<()> {
        self.sql(
            DB_USER,
            DB_NAME,
            &[
                "VACUUM pgbench_branches",
                "VACUUM pgbench_tellers",
                "TRUNCATE pgbench_history",
            ],
        )?;
        self.sql("postgres", "postgres", &["CHECKPOINT"])?;
        Ok(())
    }

    /// Processes of the server: the postmaster's children (background processes and backends).
    fn children(&self) -> usize {
        procs::children(self.pid()).len()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Fast shutdown (SIGINT to the postmaster, by PID); SIGKILL by Spawned's drop if it lingers.
        let pid = self.pid().to_string();
        let _ = Command::new("kill")
            .args(["-INT", &pid])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = monotonic_now() + Duration::from_secs(15);
        while monotonic_now() < deadline {
            match self.server.child_mut().try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// pgbench

/// What pgbench printed at the end of a run.
#[derive(Debug, Clone, Default)]
struct PgbenchOut {
    tps: f64,
    latency_ms: f64,
    transactions: f64,
    failed: f64,
    connection_ms: f64,
}

fn field(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(prefix))
        .and_then(|v| {
            v.trim_start_matches([' ', '=', ':'])
                .split_whitespace()
                .next()
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

fn parse_pgbench(text: &str) -> PgbenchOut {
    PgbenchOut {
        tps: field(text, "tps"),
        latency_ms: field(text, "latency average"),
        transactions: field(text, "number of transactions actually processed"),
        failed: field(text, "number of failed transactions"),
        connection_ms: field(text, "initial connection time"),
    }
}

/// Runs pgbench for `seconds` against `conninfo`; its output goes to files in `log_dir`. A run
/// that does not end within a minute past its duration is killed (a stall) and is an error.
fn pgbench(
    conninfo: &str,
    w: Workload,
    o: &Options,
    seconds: u64,
    log_dir: &Path,
) -> anyhow::Result<PgbenchOut> {
    let out_path = log_dir.join("pgbench.out");
    let err_path = log_dir.join("pgbench.err");
    let mut cmd = procs::command("pgbench");
    cmd.arg("-n")
        .args(["-c", &o.clients.to_string(), "-j", &o.jobs.to_string()])
        .args(["-T", &seconds.to_string()])
        .args(w.args())
        .arg(conninfo)
        .stdin(Stdio::null())
        .stdout(File::create(&out_path)?)
        .stderr(File::create(&err_path)?);
    let mut child = cmd.spawn().context("starting pgbench")?;
    let deadline = monotonic_now() + Duration::from_secs(seconds + 60);
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if monotonic_now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "pgbench did not end within 60 s after its {seconds} s run (stalled); \
                 standard error: {}",
                procs::log_tail(&err_path, 5)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    if !status.success() {
        bail!(
            "pgbench exited with {status}: {} {}",
            procs::log_tail(&err_path, 5),
            procs::log_tail(&out_path, 3)
        );
    }
    let r = parse_pgbench(&text);
    if !r.tps.is_finite() || !r.transactions.is_finite() {
        bail!("could not read pgbench's summary:\n{text}");
    }
    Ok(r)
}

// ---------------------------------------------------------------------------------------------
// measuring

/// CPU seconds of every process of the path, this process, and the machine.
struct Snap {
    cpu: BTreeMap<&'static str, f64>,
    /// Kernel threads (children of kthreadd, PID 2): writeback, journal, softirq work.
    kernel: f64,
    machine: f64,
    at: Instant,
}

struct Pids {
    postgres: u32,
    proxy: u32,
    agent: u32,
}

impl Snap {
    fn take(p: &Pids) -> Self {
        let me = std::process::id();
        let nan = f64::NAN;
        let mut cpu = BTreeMap::new();
        cpu.insert(
            "postgres",
            procs::tree_cpu_seconds(p.postgres).unwrap_or(nan),
        );
        cpu.insert("proxy", procs::cpu_seconds(p.proxy).unwrap_or(nan));
        cpu.insert("agent", procs::cpu_seconds(p.agent).unwrap_or(nan));
        cpu.insert("pgbench", procs::children_cpu_seconds(me).unwrap_or(nan));
        cpu.insert("harness", procs::cpu_seconds(me).unwrap_or(nan));
        Self {
            cpu,
            kernel: procs::tree_cpu_seconds(2).unwrap_or(nan),
            machine: procs::machine_busy_seconds().unwrap_or(nan),
            at: monotonic_now(),
        }
    }
}

/// Waits (at most `limit`) until `read` has not changed for a second; returns when it last
/// changed, measured from `since` (zero when it did not change).
fn settle(read: impl Fn() -> Option<f64>, since: Instant, limit: Duration) -> Duration {
    let mut last = read();
    let mut changed: Option<Instant> = None;
    let start = monotonic_now();
    let mut quiet = monotonic_now();
    while crate::clock::since(start) < limit && crate::clock::since(quiet) < Duration::from_secs(1)
    {
        std::thread::sleep(Duration::from_millis(100));
        let now = read();
        if now != last {
            last = now;
            quiet = monotonic_now();
            changed = Some(quiet);
        }
    }
    changed
        .map(|c| c.saturating_duration_since(since))
        .unwrap_or_default()
}

/// One contender: a connection string for pgbench.
struct Route {
    name: &'static str,
    conninfo: String,
    describe: String,
}

/// One measured run: reset, snapshot, pgbench, wait for the server's backends to be reaped and
/// for Hop's audit events to stop arriving, snapshot.
fn measure(
    pg: &Postgres,
    a: &Appliance,
    pids: &Pids,
    route: &Route,
    w: Workload,
    o: &Options,
) -> anyhow::Result<Sample> {
    pg.reset()?;
    let base_children = pg.children();
    let audit = || a.metric("hop_audit_events_total");
    // Events of an earlier run may still be arriving: they are not this run's.
    settle(audit, monotonic_now(), Duration::from_secs(60));
    let audit0 = audit().unwrap_or(f64::NAN);
    let data0 = procs::dir_bytes(&a.data) as f64;
    let s0 = Snap::take(pids);
    let r = pgbench(&route.conninfo, w, o, o.seconds, &pg.dir);
    let ended = monotonic_now();
    let mid = Snap::take(pids);
    let audit_mid = audit().unwrap_or(f64::NAN);
    // The backends of the run exit and are reaped by the postmaster after pgbench disconnects.
    let reap = monotonic_now();
    while pg.children() > base_children && since(reap) < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let lag = settle(audit, ended, Duration::from_secs(60));
    let s1 = Snap::take(pids);
    let r = r?;
    let mut s = Sample {
        value: r.tps,
        seconds: o.seconds as f64,
        work: r.transactions,
        ..Default::default()
    };
    for (k, v) in &s1.cpu {
        s.cpu.insert(
            k.to_string(),
            v - s0.cpu.get(k).copied().unwrap_or(f64::NAN),
        );
    }
    let window = s1.at.duration_since(s0.at).as_secs_f64();
    let ours: f64 = s.cpu.values().sum::<f64>() + (s1.kernel - s0.kernel);
    let machine = s1.machine - s0.machine;
    let x = &mut s.extra;
    x.insert("latency_avg_ms".into(), r.latency_ms);
    x.insert("statements".into(), r.transactions * w.statements());
    x.insert("initial_connection_ms".into(), r.connection_ms);
    x.insert("failed_transactions".into(), r.failed);
    x.insert("cpu_window_s".into(), window);
    x.insert("machine_cpu_s".into(), machine);
    x.insert("unattributed_cpu_s".into(), machine - ours);
    x.insert("audit_events".into(), audit().unwrap_or(f64::NAN) - audit0);
    x.insert("audit_lag_s".into(), lag.as_secs_f64());
    // What the processes did after pgbench ended (the appliance ingesting the agent's backlog of
    // audit events): part of the CPU-s above.
    x.insert(
        "audit_events_after_run".into(),
        audit().unwrap_or(f64::NAN) - audit_mid,
    );
    for (k, v) in &s1.cpu {
        x.insert(
            format!("{k}_cpu_s_after_run"),
            v - mid.cpu.get(k).copied().unwrap_or(f64::NAN),
        );
    }
    x.insert("kernel_threads_cpu_s".into(), s1.kernel - s0.kernel);
    x.insert("run_s".into(), ended.duration_since(s0.at).as_secs_f64());
    x.insert(
        "appliance_data_bytes".into(),
        procs::dir_bytes(&a.data) as f64 - data0,
    );
    x.insert(
        "proxy_rss_kib".into(),
        procs::rss_kib(pids.proxy)
            .map(|v| v as f64)
            .unwrap_or(f64::NAN),
    );
    x.insert(
        "agent_rss_kib".into(),
        procs::rss_kib(pids.agent)
            .map(|v| v as f64)
            .unwrap_or(f64::NAN),
    );
    x.insert(
        "db_sessions_active_after".into(),
        a.metric("hop_db_sessions_active").unwrap_or(f64::NAN),
    );
    if r.failed > 0.0 {
        s.errors = r.failed as u64;
        s.first_error = Some(format!("{} failed transactions", r.failed));
    }
    Ok(s)
}

/// A log line without terminal colour sequences (`ESC [ … m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
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

/// The WARN and ERROR lines of a hop log, grouped by message (the words before the first
/// `key=value` field): "N× LEVEL message", most frequent first; and the largest
/// `dropped_total=` seen (the agent's count of audit events it dropped).
fn log_findings(path: &Path) -> (Vec<String>, u64) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut groups: BTreeMap<String, usize> = BTreeMap::new();
    let mut dropped = 0u64;
    for line in text.lines() {
        let line = strip_ansi(line);
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(at) = words.iter().position(|w| *w == "WARN" || *w == "ERROR") else {
            continue;
        };
        let msg: Vec<&str> = words[at..]
            .iter()
            .take_while(|w| !w.contains('='))
            .copied()
            .collect();
        *groups.entry(msg.join(" ")).or_insert(0) += 1;
        if let Some(n) = words
            .iter()
            .find_map(|w| w.strip_prefix("dropped_total="))
            .and_then(|n| n.parse().ok())
        {
            dropped = dropped.max(n);
        }
    }
    let mut v: Vec<(String, usize)> = groups.into_iter().collect();
    v.sort_by_key(|g| std::cmp::Reverse(g.1));
    (
        v.into_iter().map(|(m, n)| format!("{n}× {m}")).collect(),
        dropped,
    )
}

// ---------------------------------------------------------------------------------------------
// the scenario

pub fn run(o: &Options, report: &mut Report) -> anyhow::Result<()> {
    if o.jobs == 0 || o.clients == 0 || o.jobs > o.clients {
        bail!(
            "--jobs ({}) must be at least 1 and at most --clients ({})",
            o.jobs,
            o.clients
        );
    }
    let postgres = Path::new(PG_BIN).join("postgres");
    if !postgres.is_file() && o.install {
        peers::apt_install(&["postgresql-15", "postgresql-client-15"]);
    }
    if !postgres.is_file() {
        bail!(
            "PostgreSQL 15 is not installed ({}); apt-get install postgresql-15",
            postgres.display()
        );
    }
    for p in ["pgbench", "psql"] {
        if procs::find_program(p).is_none() {
            bail!("{p} is not installed (apt-get install postgresql-client-15)");
        }
    }
    if let Some(v) = procs::first_line(&postgres, &["--version"]) {
        report.meta.versions.insert("postgres".into(), v);
    }
    if let Some(v) = procs::first_line(Path::new("pgbench"), &["--version"]) {
        report.meta.versions.insert("pgbench".into(), v);
    }

    eprintln!("hop-bench: starting hop (Auth + Proxy)");
    let mut a = Appliance::start(&o.hop)?;
    let client = pki::client_cert(&a.dir.path().join("direct-client"), DB_USER)?;
    eprintln!("hop-bench: starting PostgreSQL 15");
    let pg = Postgres::start(&a, &client.ca)?;
    pg.sql(
        "postgres",
        "postgres",
        &[
            &format!("CREATE ROLE {DB_USER} LOGIN"),
            &format!("CREATE DATABASE {DB_NAME} OWNER {DB_USER}"),
        ],
    )?;
    eprintln!("hop-bench: pgbench -i -s {}", o.scale);
    let t = monotonic_now();
    pg.init(o.scale)?;
    report.notes.push(format!(
        "tables: `pgbench -i -s {}` once, over the local socket ({:.1} s)",
        o.scale,
        since(t).as_secs_f64()
    ));

    eprintln!("hop-bench: hop user, role and db agent");
    let role = a.dir.path().join("db-role.yaml");
    std::fs::write(&role, ROLE)?;
    a.ok(&["admin", "create", "-f", &role.to_string_lossy()])?;
    a.add_user(HOP_USER, "db-bench", HOP_USER)?;
    let spec = format!(
        "name={DB_SERVICE},uri=postgres://127.0.0.1:{},ca_file={},labels=env=bench",
        pg.port,
        pg.dir.join("server.cas").display()
    );
    let mut agent = hop::start_db_agent(&a, DB_SERVICE, &spec)?;
    a.ok(&[
        "db",
        "login",
        DB_SERVICE,
        "--db-user",
        DB_USER,
        "--db-name",
        DB_NAME,
    ])?;
    let hop_conninfo = a
        .ok(&["db", "config", DB_SERVICE, "--format", "uri"])?
        .trim()
        .to_string();
    let q = |p: &Path| format!("'{}'", p.display());
    let direct_conninfo = format!(
        "host=127.0.0.1 port={} sslmode=verify-full sslrootcert={} sslcert={} sslkey={} \
         user={DB_USER} dbname={DB_NAME}",
        pg.port,
        q(&pg.dir.join("server.cas")),
        q(&client.crt),
        q(&client.key),
    );
    let mut paths: Vec<Route> = Vec::new();
    for name in &o.contenders {
        match name.as_str() {
            "direct" => paths.push(Route {
                name: "direct",
                conninfo: direct_conninfo.clone(),
                describe: "pgbench → PostgreSQL over TLS (libpq, sslmode=verify-full against \
                           Hop's db CA) with `cert` authentication: a client certificate for the \
                           database user from a throwaway CA added to the server's ssl_ca_file \
                           next to Hop's db CA — the same TLS + certificate login as Hop's \
                           agent→database leg"
                    .into(),
            }),
            "hop" => paths.push(Route {
                name: "hop",
                conninfo: hop_conninfo.clone(),
                describe: format!(
                    "pgbench with `hop db config {DB_SERVICE} --format uri` → TLS (verify-full, \
                     the user's db certificate from `hop db login`) to the proxy's one port \
                     (`hop start`, Auth + Proxy: SSLRequest, TLS, RBAC on the startup message, \
                     {} workers) → the agent's TLS data connection → `hop start --roles db` \
                     (client certificate from the db CA, TLS to PostgreSQL; every statement is a \
                     `db.query` audit event, batched to Auth, which appends it to its durable \
                     audit log) → PostgreSQL",
                    o.hop
                        .workers
                        .map(|w| w.to_string())
                        .unwrap_or_else(|| "default".into())
                ),
            }),
            other => bail!("pgbench: unknown contender {other:?}; expected direct or hop"),
        }
    }
    report.contenders = paths
        .iter()
        .map(|p| ContenderInfo {
            name: p.name.into(),
            describe: p.describe.clone(),
        })
        .collect();
    let pids = Pids {
        postgres: pg.pid(),
        proxy: a.proxy.pid(),
        agent: agent.pid(),
    };

    if o.warmup > 0 {
        let w = Workload {
            select_only: true,
            prepared: false,
        };
        for p in &paths {
            eprintln!("hop-bench: pgbench warm-up: {} ({} s)", p.name, o.warmup);
            pg.reset()?;
            pgbench(&p.conninfo, w, o, o.warmup, &pg.dir)
                .with_context(|| format!("warm-up run of {}", p.name))?;
        }
    }
    let rss = |pid| {
        procs::rss_kib(pid)
            .map(|v| v as f64 / 1024.0)
            .unwrap_or(f64::NAN)
    };
    let rss_start = (rss(pids.proxy), rss(pids.agent));

    let mut hop_dead: Option<String> = None;
    for rep in 1..=o.repeat {
        for &w in &o.workloads {
            // Alternate the order per repetition so that neither contender always goes first.
            let mut order: Vec<&Route> = paths.iter().collect();
            if rep % 2 == 0 {
                order.reverse();
            }
            for p in order {
                if p.name == "hop" {
                    if hop_dead.is_some() {
                        continue;
                    }
                    let alive = a.proxy.check_running().is_ok() && agent.check_running().is_ok();
                    if !alive {
                        hop_dead = Some(format!(
                            "hop: the appliance or the db agent exited before repetition {rep}; \
                             later runs of it skipped. Agent log:\n{}",
                            procs::log_tail(&agent.log, 10)
                        ));
                        continue;
                    }
                }
                eprintln!(
                    "hop-bench: pgbench {rep}/{}: {} [{}]",
                    o.repeat,
                    p.name,
                    w.name()
                );
                let s = measure(&pg, &a, &pids, p, w, o).unwrap_or_else(|e| Sample {
                    value: f64::NAN,
                    errors: 1,
                    first_error: Some(format!("{e:#}")),
                    ..Default::default()
                });
                if let Some(e) = &s.first_error {
                    eprintln!("hop-bench:   {} errors, first: {e}", s.errors);
                } else {
                    eprintln!(
                        "hop-bench:   {:.0} tps, latency {:.3} ms",
                        s.value,
                        s.extra("latency_avg_ms")
                    );
                }
                report.row_mut(&w.name(), p.name).samples.push(s);
            }
        }
    }
    let rss_end = (rss(pids.proxy), rss(pids.agent));

    table(report);
    if let Some(d) = hop_dead {
        report.notes.push(d);
    }
    for row in &report.rows {
        if let Some(e) = row.samples.iter().find_map(|s| s.first_error.clone()) {
            report.notes.push(format!(
                "{} [{}]: {} error(s); first: {e}",
                row.contender,
                row.case,
                row.errors()
            ));
        }
    }
    if paths.iter().any(|p| p.name == "hop") {
        report.notes.push(format!(
            "hop RSS after the warm-up → after the last run: proxy {:.1} → {:.1} MiB, agent \
             {:.1} → {:.1} MiB",
            rss_start.0, rss_end.0, rss_start.1, rss_end.1
        ));
        for (who, log) in [
            ("appliance", a.proxy.log.clone()),
            ("db agent", agent.log.clone()),
        ] {
            let (groups, dropped) = log_findings(&log);
            if groups.is_empty() {
                report
                    .notes
                    .push(format!("hop {who} log: no warnings or errors"));
            } else {
                report.notes.push(format!(
                    "hop {who} log, warnings and errors over the whole run (warm-up included): {}",
                    groups.join("; ")
                ));
            }
            if dropped > 0 {
                report.notes.push(format!(
                    "the {who} dropped {dropped} audit events (\"audit queue full\") over the \
                     whole run, warm-up included"
                ));
            }
        }
    }
    let pg_log = std::fs::read_to_string(&pg.server.log).unwrap_or_default();
    let pg_problems: Vec<&str> = pg_log
        .lines()
        .filter(|l| l.contains("ERROR:") || l.contains("FATAL:") || l.contains("WARNING:"))
        .collect();
    if !pg_problems.is_empty() {
        report.notes.push(format!(
            "PostgreSQL log: {} ERROR/FATAL/WARNING lines; first: {}",
            pg_problems.len(),
            pg_problems
                .iter()
                .take(3)
                .copied()
                .collect::<Vec<_>>()
                .join(" | ")
        ));
    }
    report.notes.push(format!(
        "pgbench -n -c {} -j {} -T {} per run; TPS and latency average are pgbench's own (tps \
         without initial connection time); CPU-s are utime+stime from /proc over the run plus \
         the wait for PostgreSQL's backends to be reaped and for Hop's audit events to stop \
         arriving (`audit lag`: how long after pgbench ended the appliance still recorded \
         events); unattributed = machine busy time not charged to these processes, this \
         harness or kernel threads (other work on a shared machine, interrupts); postgres = postmaster + live children + reaped backends; \
         pgbench = this harness's reaped children; µs/txn = CPU-s × 10^6 / transactions; \
         audit events/statement = the appliance's hop_audit_events_total over the run / \
         statements run (1 per select-only transaction, 7 per tpcb-like one; each session adds \
         a start and an end event); \
         PostgreSQL: fsync, synchronous_commit, full_page_writes and autovacuum off, \
         shared_buffers 256MB, the same server for both contenders; before every run \
         pgbench_branches and pgbench_tellers are vacuumed, pgbench_history emptied and a \
         checkpoint taken; contenders alternate order per repetition{}",
        o.clients,
        o.jobs,
        o.seconds,
        if o.warmup > 0 {
            format!(
                "; one unrecorded {} s select-only run per contender first",
                o.warmup
            )
        } else {
            String::new()
        }
    ));
    drop(agent);
    drop(pg);
    drop(a);
    Ok(())
}

fn table(report: &mut Report) {
    let mut t = vec![
        [
            "workload",
            "contender",
            "TPS",
            "spread",
            "× direct",
            "latency avg ms",
            "added latency µs",
            "CPU-s postgres",
            "CPU-s proxy",
            "CPU-s agent",
            "CPU-s pgbench",
            "CPU µs/txn postgres",
            "CPU µs/txn proxy",
            "CPU µs/txn agent",
            "CPU µs/txn hop (proxy+agent)",
            "CPU µs/txn pgbench",
            "CPU µs/txn all four",
            "audit events/statement",
            "audit lag s",
            "kernel threads CPU-s",
            "unattributed CPU-s/s",
            "failed txns",
        ]
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>(),
    ];
    let per_txn = |role: &'static str| move |s: &crate::report::Sample| s.cpu(role) * 1e6 / s.work;
    let hop_txn = |s: &crate::report::Sample| (s.cpu("proxy") + s.cpu("agent")) * 1e6 / s.work;
    let all_txn = |s: &crate::report::Sample| {
        (s.cpu("postgres") + s.cpu("proxy") + s.cpu("agent") + s.cpu("pgbench")) * 1e6 / s.work
    };
    let mut goals = Vec::new();
    for row in &report.rows {
        let direct = report.row(&row.case, "direct");
        let d_tps = direct.map(|r| r.med(|s| s.value)).unwrap_or(f64::NAN);
        let d_lat = direct
            .map(|r| r.med(|s| s.extra("latency_avg_ms")))
            .unwrap_or(f64::NAN);
        let tps = row.med(|s| s.value);
        let lat = row.med(|s| s.extra("latency_avg_ms"));
        let added = if row.contender == "direct" {
            "-".to_string()
        } else {
            num((lat - d_lat) * 1000.0, 0)
        };
        t.push(vec![
            row.case.clone(),
            row.contender.clone(),
            num(tps, 0),
            row.spread(|s| s.value, 0),
            ratio(tps, d_tps),
            num(lat, 3),
            added,
            num(row.med(|s| s.cpu("postgres")), 2),
            num(row.med(|s| s.cpu("proxy")), 2),
            num(row.med(|s| s.cpu("agent")), 2),
            num(row.med(|s| s.cpu("pgbench")), 2),
            num(row.med(per_txn("postgres")), 0),
            num(row.med(per_txn("proxy")), 0),
            num(row.med(per_txn("agent")), 0),
            num(row.med(hop_txn), 0),
            num(row.med(per_txn("pgbench")), 0),
            num(row.med(all_txn), 0),
            num(
                row.med(|s| s.extra("audit_events") / s.extra("statements")),
                2,
            ),
            num(row.med(|s| s.extra("audit_lag_s")), 1),
            num(row.med(|s| s.extra("kernel_threads_cpu_s")), 2),
            num(
                row.med(|s| s.extra("unattributed_cpu_s") / s.extra("cpu_window_s")),
                2,
            ),
            num(
                row.samples
                    .iter()
                    .map(|s| s.extra("failed_transactions"))
                    .filter(|v| v.is_finite())
                    .sum::<f64>(),
                0,
            ),
        ]);
        if row.contender == "hop" && tps.is_finite() && d_tps.is_finite() {
            let r = tps / d_tps;
            goals.push(format!(
                "{}: hop at {r:.2}× direct TPS (issue 5 goal ≥ {GOAL:.2}×: {})",
                row.case,
                if r >= GOAL { "met" } else { "not met" }
            ));
        }
    }
    report.table = t;
    report.notes.extend(goals);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgbench_summary_is_read() {
        let text = "pgbench (15.18 (Debian 15.18-0+deb12u1))\ntransaction type: <builtin: select only>\n\
                    scaling factor: 10\nquery mode: simple\nnumber of clients: 8\nnumber of threads: 2\n\
                    maximum number of tries: 1\nduration: 20 s\n\
                    number of transactions actually processed: 123456\n\
                    number of failed transactions: 0 (0.000%)\nlatency average = 1.296 ms\n\
                    initial connection time = 40.123 ms\ntps = 6172.123456 (without initial connection time)\n";
        let r = parse_pgbench(text);
        assert_eq!(r.transactions, 123456.0);
        assert_eq!(r.failed, 0.0);
        assert_eq!(r.latency_ms, 1.296);
        assert_eq!(r.connection_ms, 40.123);
        assert!((r.tps - 6172.123456).abs() < 1e-9);
        assert!(parse_pgbench("nothing").tps.is_nan());
    }

    #[test]
    fn workloads_parse() {
        let w = Workload::parse("select").unwrap();
        assert!(w.select_only && !w.prepared);
        assert_eq!(w.name(), "select-only simple");
        assert_eq!(w.args(), ["-M", "simple", "-S"]);
        let w = Workload::parse("tpcb-prepared").unwrap();
        assert!(!w.select_only && w.prepared);
        assert_eq!(w.statements(), 7.0);
        assert!(Workload::parse("tpcc").is_err());
    }

    #[test]
    fn log_lines_are_grouped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("agent.log");
        std::fs::write(
            &p,
            "Agent x is connecting\n\
             \u{1b}[2m2026-11-21T10:00:33Z\u{1b}[0m \u{1b}[31mERROR\u{1b}[0m audit queue full: event dropped \u{1b}[3mevent\u{1b}[0m\u{1b}[2m=\u{1b}[0m\"db.query\" dropped_total=1\n\
             2026-11-21T10:00:34Z ERROR audit queue full: event dropped event=\"db.query\" dropped_total=7\n\
             2026-11-21T10:00:35Z  WARN sending audit events failed; retrying error=x\n",
        )
        .unwrap();
        let (groups, dropped) = log_findings(&p);
        assert_eq!(dropped, 7);
        assert_eq!(
            groups,
            [
                "2× ERROR audit queue full: event dropped",
                "1× WARN sending audit events failed; retrying"
            ]
        );
    }
}
