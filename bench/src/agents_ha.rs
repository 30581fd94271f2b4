//! `agents-ha`: N simulated agents across two appliances on one PostgreSQL, and `hop ls` over
//! every node they announce.
//!
//! The harness starts its own PostgreSQL 15 (Unix socket only, trust authentication, in a temp
//! dir; as the OS user `postgres` when it runs as root) and two `hop start` (Auth + Proxy), each
//! with its own port and data dir and `hop.storage` on the same database, the second started
//! once the first has created the cluster. Two `hop admin loadtest agents --nodes K` processes,
//! one per appliance, simulate N/2 node agents each, every agent announcing K SSH nodes; as in
//! `agents`, they join once (identities cached), both appliances restart, and the load tests
//! connect again to fresh proxies. Each appliance lists its own agents and, through the presence
//! summaries in the backend, the other's; once `hop ls` shows all N × K nodes on both, the
//! harness measures over one window:
//!
//! - backend writes at steady state, on PostgreSQL: deltas of `pg_stat_database` for the
//!   cluster's database (rows inserted + updated + deleted, transactions committed, reads
//!   included) and of the WAL insert position (bytes, the whole server), plus rows written per
//!   table (and its TOAST table) from `pg_stat_all_tables`: `hop_items` rows are the values
//!   hop puts;
//! - each proxy's CPU (% of a core) and its RSS growth per agent it holds.
//!
//! Then `hop ls --format json` as an ordinary user (password login, one `HOP_HOME` per
//! appliance), several times on each appliance in turn: wall time of the whole command.
//!
//! Everything is a [`Spawned`] child, killed by PID when dropped; PostgreSQL gets a fast
//! shutdown first.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};

use crate::agents::{
    CpuMark, STOP_LIMIT, kib_mib, parse_events, rss, stop_loadtest, summary_line, tunnels, unix_ms,
};
use crate::clock::{monotonic_now, since};
use crate::hop::{self, Appliance, ApplianceConfig, HopOptions};
use crate::peers;
use crate::procs::{self, Spawned};
use crate::report::{ContenderInfo, Report, Sample, median, num, range};

/// When the scenario started, for the progress lines' timestamps.
static STARTED: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// A progress line on standard error, with the seconds since the scenario started.
macro_rules! say {
    ($($arg:tt)*) => {
        eprintln!(
            "hop-bench [{:>6.1} s]: {}",
            since(*STARTED.get_or_init(monotonic_now)).as_secs_f64(),
            format!($($arg)*)
        )
    };
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// The cluster's database.
const DB: &str = "hop_ha";
const USER: &str = "bench";
/// The PostgreSQL backend's table of values (a row per key).
const ITEMS_TABLE: &str = "hop_items";
/// Issue 24's listing goal.
const GOAL_LS_S: f64 = 1.0;
/// How long both appliances may take to list every node after the agents are up (presence
/// summaries are published every 10 s and read every 2 s).
const LISTED_LIMIT: Duration = Duration::from_secs(90);

/// What `agents-ha` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub hop: HopOptions,
    /// Simulated agents in all (`--agents`), split evenly across the two appliances.
    pub agents: usize,
    /// Nodes each simulated agent announces (`--nodes`).
    pub nodes: usize,
    /// The measured window.
    pub window: Duration,
    /// Quiet time before the agents start and after every node is listed.
    pub settle: Duration,
    /// `hop ls` runs per appliance (`--ls-runs`).
    pub ls_runs: usize,
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

/// A PostgreSQL 15 on a Unix socket in its own temp dir (trust authentication, tuned for
/// benchmarking like `pgbench`'s server), stopped (fast shutdown, by PID) when dropped.
struct Postgres {
    port: u16,
    dir: PathBuf,
    server: Spawned,
    _tmp: tempfile::TempDir,
}

impl Postgres {
    fn start() -> anyhow::Result<Self> {
        if !Path::new(PG_BIN).join("postgres").exists() {
            bail!("PostgreSQL 15 is not installed ({PG_BIN}; apt-get install postgresql-15)");
        }
        let os_user = peers::is_root().then_some("postgres");
        let tmp = tempfile::Builder::new().prefix("hop-bench-pg-").tempdir()?;
        let d = tmp.path().to_path_buf();
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
            "\n# hop-bench agents-ha\nlisten_addresses = ''\nport = {port}\n\
             unix_socket_directories = '{d}'\nmax_connections = 300\nshared_buffers = 256MB\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
             max_wal_size = 4GB\ncheckpoint_timeout = 1h\n",
            d = d.display()
        );
        let pgconf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&pgconf)?;
        text.push_str(&conf);
        std::fs::write(&pgconf, text)?;
        let mut cmd = procs::command_as(os_user, Path::new(PG_BIN).join("postgres"));
        cmd.arg("-D").arg(&data).current_dir(&d);
        let server = Spawned::start("postgres", cmd, &d.join("pg.log"), false)?;
        let mut pg = Self {
            port,
            dir: d,
            server,
            _tmp: tmp,
        };
        pg.wait_ready()?;
        Ok(pg)
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = monotonic_now() + Duration::from_secs(60);
        loop {
            self.server.check_running()?;
            let ready = Command::new(Path::new(PG_BIN).join("pg_isready"))
                .arg("-h")
                .arg(&self.dir)
                .args(["-p", &self.port.to_string(), "-U", "postgres", "-q"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                return Ok(());
            }
            if monotonic_now() > deadline {
                bail!(
                    "PostgreSQL was not ready within 60 s; its log:\n{}",
                    procs::log_tail(&self.server.log, 30)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `sql` in database `db` over the local socket, as `postgres`: rows, fields split on `|`.
    fn query(&self, db: &str, sql: &str) -> anyhow::Result<Vec<Vec<String>>> {
        let out = Command::new(Path::new(PG_BIN).join("psql"))
            .arg("-h")
            .arg(&self.dir)
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", db])
            .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .stdin(Stdio::null())
            .output()
            .context("running psql")?;
        let text = hop::ok("psql", out)?;
        Ok(text
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.split('|').map(str::to_string).collect())
            .collect())
    }

    /// `hop.storage` lines (under `hop:`) putting an appliance's state in database `db`.
    fn storage_yaml(&self, db: &str) -> String {
        format!(
            "  storage:\n    type: postgresql\n    conn_string: \"postgresql://postgres@/{db}?host={}&port={}&sslmode=disable\"\n",
            self.dir.display(),
            self.port
        )
    }

    fn pid(&self) -> u32 {
        self.server.pid()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Fast shutdown (SIGINT to the postmaster, by PID); SIGKILL by Spawned's drop if it lingers.
        let _ = Command::new("kill")
            .args(["-INT", &self.pid().to_string()])
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

/// A WAL position (`X/Y`, hex) as a byte offset.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    Some((hi << 32) | lo)
}

/// The cluster database's counters at one moment (`pg_stat_database`, the WAL position).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DbMark {
    pub commits: f64,
    pub rollbacks: f64,
    /// Rows inserted + updated + deleted.
    pub rows: f64,
    pub wal_bytes: f64,
}

/// Parses `xact_commit|xact_rollback|tup_inserted|tup_updated|tup_deleted|wal_lsn`.
pub fn parse_db_mark(fields: &[String]) -> Option<DbMark> {
    let n = |i: usize| fields.get(i)?.trim().parse::<f64>().ok();
    Some(DbMark {
        commits: n(0)?,
        rollbacks: n(1)?,
        rows: n(2)? + n(3)? + n(4)?,
        wal_bytes: parse_lsn(fields.get(5)?)? as f64,
    })
}

impl Postgres {
    /// Read from the `postgres` database, so that the reading adds no transaction to `db`'s.
    fn db_mark(&self, db: &str) -> anyhow::Result<DbMark> {
        let rows = self.query(
            "postgres",
            &format!(
                "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted, \
                 pg_current_wal_insert_lsn() FROM pg_stat_database WHERE datname = '{db}'"
            ),
        )?;
        rows.first()
            .and_then(|r| parse_db_mark(r))
            .ok_or_else(|| anyhow!("no pg_stat_database row for {db}: {rows:?}"))
    }

    /// Rows inserted + updated + deleted per table of `db` (`pg_stat_all_tables`), the TOAST
    /// table of each (where PostgreSQL keeps large values, in chunks of about 2 KB) apart.
    fn table_rows(&self, db: &str) -> anyhow::Result<BTreeMap<String, f64>> {
        Ok(self
            .query(
                db,
                "SELECT coalesce(o.relname || ' (TOAST)', s.relname), \
                 s.n_tup_ins + s.n_tup_upd + s.n_tup_del \
                 FROM pg_stat_all_tables s LEFT JOIN pg_class o ON o.reltoastrelid = s.relid \
                 WHERE s.schemaname = 'public' OR o.relnamespace = 'public'::regnamespace",
            )?
            .into_iter()
            .filter_map(|r| Some((r.first()?.clone(), r.get(1)?.trim().parse().ok()?)))
            .collect())
    }
}

// ---------------------------------------------------------------------------------------------
// The two appliances and their load tests

/// One appliance, the user logged in through it, and the agents pointed at it.
struct Side {
    name: &'static str,
    a: Appliance,
    /// `HOP_HOME` of the user's login through this appliance.
    home: PathBuf,
    agents: usize,
    /// The number of its first agent in node names (the other side's agents come first).
    first_index: usize,
    /// `hop admin -d` of this side's load test (its identities are cached beneath).
    cache: PathBuf,
    idle_cpu_pct: f64,
    rss_before: f64,
}

fn start_appliance(o: &Options, pg: &Postgres) -> anyhow::Result<Appliance> {
    let extra = ApplianceConfig {
        port: procs::free_port()?,
        hop: pg.storage_yaml(DB),
        // Joins count as login attempts, all from 127.0.0.1; the user logs in with a password.
        auth: "  login:\n    attempts_per_ip_per_minute: 1000000\n  authentication:\n    second_factor: \"off\"\n".into(),
        proxy: format!(
            "  max_connections_per_ip: {}\n",
            (o.agents * 2 + 1000).max(10_000)
        ),
    };
    Appliance::start_with(&o.hop, &extra)
}

/// `hop admin -d CACHE loadtest agents --count N --nodes K` against `side`'s appliance.
fn start_loadtest(
    side: &Side,
    o: &Options,
    token: &str,
    events: Option<&Path>,
    log: &Path,
) -> anyhow::Result<Spawned> {
    let a = &side.a;
    let mut cmd = procs::command(&a.binary);
    cmd.args(["admin", "-d"])
        .arg(&side.cache)
        .args(["loadtest", "agents", "--count", &side.agents.to_string()])
        .args(["--nodes", &o.nodes.to_string()])
        .args(["--first-index", &side.first_index.to_string()])
        .args(["--proxy", &a.addr, "--ca-pin", &a.pin, "--token", token]);
    if let Some(r) = events {
        cmd.arg("--report-reconnects").arg(r);
    }
    cmd.env_remove("HOP_DATA_DIR")
        .env_remove("HOP_PROXY")
        .env_remove("HOP_CA_PIN")
        .env_remove("HOP_JOIN_TOKEN")
        .env("HOP_LOG", "error");
    Spawned::start(
        &format!("hop admin loadtest agents ({})", side.name),
        cmd,
        log,
        false,
    )
}

/// Starts a load test per side and waits until every proxy holds its agents' tunnels.
fn connect_sides(
    sides: &mut [Side],
    o: &Options,
    token: &str,
    label: &str,
    limit: Duration,
) -> anyhow::Result<(Vec<Spawned>, Duration)> {
    let mut lts = Vec::new();
    for s in sides.iter() {
        let dir = s.a.dir.path();
        let events = (label == "run").then(|| dir.join("events.jsonl"));
        let log = dir.join(format!("loadtest-{label}.log"));
        lts.push(start_loadtest(s, o, token, events.as_deref(), &log)?);
    }
    let t = monotonic_now();
    loop {
        if sides
            .iter()
            .all(|s| tunnels(&s.a).is_some_and(|c| c >= s.agents as u64))
        {
            return Ok((lts, since(t)));
        }
        for (s, lt) in sides.iter_mut().zip(&mut lts) {
            lt.check_running()?;
            s.a.proxy.check_running()?;
        }
        if since(t) > limit {
            let held: Vec<String> = sides
                .iter()
                .zip(&lts)
                .map(|(s, lt)| {
                    format!(
                        "{}: {:?} of {}; load test:\n{}",
                        s.name,
                        tunnels(&s.a),
                        s.agents,
                        procs::log_tail(&lt.log, 8)
                    )
                })
                .collect();
            bail!(
                "not every tunnel was up within {limit:?}: {}",
                held.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The two appliances, the user, a node join token; every agent joined once (identities
/// cached), then both appliances restarted and measured idle.
fn prepare(o: &Options, pg: &Postgres) -> anyhow::Result<(Vec<Side>, String, Duration)> {
    say!("starting appliance a (creates the cluster in PostgreSQL database {DB})");
    let a = start_appliance(o, pg)?;
    say!("starting appliance b on the same database");
    let b = start_appliance(o, pg)?;
    if a.pin != b.pin {
        bail!(
            "the two appliances have different CA pins ({} / {})",
            a.pin,
            b.pin
        );
    }
    a.add_password_user(USER, "access", "root")?;
    let token: serde_json::Value = serde_json::from_str(
        a.ok(&[
            "admin", "tokens", "add", "--type", "node", "--ttl", "2h", "--format", "json",
        ])?
        .trim(),
    )?;
    let token = token["token"]
        .as_str()
        .ok_or_else(|| anyhow!("no join token in {token}"))?
        .to_string();
    let half = o.agents / 2;
    let mut sides = Vec::new();
    for (name, a, agents, first_index) in [
        ("a", a, o.agents - half, 0),
        ("b", b, half, o.agents - half),
    ] {
        let home = a.dir.path().join("home-ls");
        a.password_login(USER, &home)?;
        let cache = a.dir.path().join("loadtest");
        sides.push(Side {
            name,
            a,
            home,
            agents,
            first_index,
            cache,
            idle_cpu_pct: f64::NAN,
            rss_before: f64::NAN,
        });
    }
    say!(
        "joining {} simulated node agents ({} nodes each), {} through a and {} through b",
        o.agents,
        o.nodes,
        sides[0].agents,
        sides[1].agents
    );
    let limit = Duration::from_secs(120) + Duration::from_millis(60 * o.agents as u64);
    let (mut lts, join) = connect_sides(&mut sides, o, &token, "join", limit)?;
    say!("all joined and connected in {:.1} s", join.as_secs_f64());
    for lt in &mut lts {
        stop_loadtest(lt)?;
    }
    drop(lts);
    say!("restarting both appliances (fresh proxies, identities cached)");
    for s in &mut sides {
        if s.a.stop(STOP_LIMIT)?.is_none() {
            bail!(
                "appliance {} did not exit within {STOP_LIMIT:?} of SIGTERM",
                s.name
            );
        }
    }
    for s in &mut sides {
        s.a.start_again()?;
    }
    std::thread::sleep(o.settle / 2);
    let t0 = monotonic_now();
    let marks: Vec<CpuMark> = sides
        .iter()
        .map(|s| CpuMark::now(s.a.proxy.pid()))
        .collect();
    std::thread::sleep(o.settle / 2);
    let secs = since(t0).as_secs_f64();
    for (s, m) in sides.iter_mut().zip(&marks) {
        s.idle_cpu_pct = m.seconds() / secs * 100.0;
        s.rss_before = rss(s.a.proxy.pid());
    }
    Ok((sides, token, join))
}

// ---------------------------------------------------------------------------------------------
// hop ls

/// `hop ls --format json` as the user logged in through `side`: wall time and nodes listed.
fn ls(side: &Side) -> anyhow::Result<(Duration, usize)> {
    let t = monotonic_now();
    let out = hop::run(
        Command::new(&side.a.binary)
            .args(["ls", "--format", "json"])
            .env("HOP_HOME", &side.home)
            .env_remove("HOP_DATA_DIR")
            .env_remove("HOP_PROXY")
            .env_remove("HOP_CA_PIN"),
        "",
    )?;
    let took = since(t);
    let text = hop::ok(&format!("hop ls (through {})", side.name), out)?;
    Ok((took, count_listed(&text)?))
}

/// Nodes in `hop ls --format json`'s output (an array, or an object with a `nodes` array).
pub fn count_listed(text: &str) -> anyhow::Result<usize> {
    let v: serde_json::Value =
        serde_json::from_str(text.trim()).context("hop ls --format json printed no JSON")?;
    v.as_array()
        .or_else(|| v["nodes"].as_array())
        .map(Vec::len)
        .ok_or_else(|| anyhow!("hop ls --format json printed no list of nodes"))
}

/// Waits until `hop ls` lists `want` nodes through every side: how long it took.
fn wait_listed(sides: &[Side], want: usize) -> anyhow::Result<Duration> {
    let t = monotonic_now();
    for s in sides {
        loop {
            let (_, n) = ls(s)?;
            if n >= want {
                say!("{} lists {n} nodes", s.name);
                break;
            }
            if since(t) > LISTED_LIMIT {
                bail!(
                    "appliance {} listed {n} of {want} nodes after {LISTED_LIMIT:?}",
                    s.name
                );
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    }
    Ok(since(t))
}

/// `runs` timed `hop ls` per side, the sides alternating: seconds per run, per side.
fn time_ls(sides: &[Side], runs: usize, want: usize) -> anyhow::Result<Vec<Vec<f64>>> {
    let mut out = vec![Vec::new(); sides.len()];
    for _ in 0..runs {
        for (i, s) in sides.iter().enumerate() {
            let (took, n) = ls(s)?;
            if n != want {
                bail!("hop ls through {} listed {n} nodes, not {want}", s.name);
            }
            out[i].push(took.as_secs_f64());
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// The run

/// What one window measured.
struct Window {
    secs: f64,
    /// Wall-clock bounds (Unix ms), to pick the load tests' events in the window.
    from_ms: u64,
    until_ms: u64,
    db: DbMark,
    tables: Vec<(String, f64)>,
    /// Per side: CPU seconds of `hop start`, RSS at the end (KiB).
    proxy_cpu_s: Vec<f64>,
    proxy_rss: Vec<f64>,
    loadtest_cpu_s: f64,
    busy_s: f64,
}

fn measure(o: &Options, pg: &Postgres, sides: &[Side], lts: &[Spawned]) -> anyhow::Result<Window> {
    let tables0 = pg.table_rows(DB)?;
    // Let that reading's statistics reach the shared counters before the window opens.
    std::thread::sleep(Duration::from_millis(500));
    let procs0: Vec<CpuMark> = sides
        .iter()
        .map(|s| CpuMark::now(s.a.proxy.pid()))
        .collect();
    let lt0: Vec<CpuMark> = lts.iter().map(|l| CpuMark::now(l.pid())).collect();
    let (busy0, db0, t0, from_ms) = (
        procs::machine_busy_seconds().unwrap_or(f64::NAN),
        pg.db_mark(DB)?,
        monotonic_now(),
        unix_ms(),
    );
    std::thread::sleep(o.window);
    let (db1, secs, until_ms) = (pg.db_mark(DB)?, since(t0).as_secs_f64(), unix_ms());
    let busy_s = procs::machine_busy_seconds().unwrap_or(f64::NAN) - busy0;
    let proxy_cpu_s = procs0.iter().map(CpuMark::seconds).collect();
    let loadtest_cpu_s = lt0.iter().map(CpuMark::seconds).sum();
    let proxy_rss = sides.iter().map(|s| rss(s.a.proxy.pid())).collect();
    std::thread::sleep(Duration::from_millis(500));
    let tables1 = pg.table_rows(DB)?;
    let mut tables: Vec<(String, f64)> = tables1
        .iter()
        .map(|(k, v)| (k.clone(), v - tables0.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d > 0.0)
        .collect();
    tables.sort_by(|x, y| y.1.total_cmp(&x.1));
    Ok(Window {
        secs,
        from_ms,
        until_ms,
        db: DbMark {
            commits: db1.commits - db0.commits,
            rollbacks: db1.rollbacks - db0.rollbacks,
            rows: db1.rows - db0.rows,
            wal_bytes: db1.wal_bytes - db0.wal_bytes,
        },
        tables,
        proxy_cpu_s,
        proxy_rss,
        loadtest_cpu_s,
        busy_s,
    })
}

/// `agents-ha`: N agents across two appliances on PostgreSQL; backend writes, proxy CPU and
/// memory per agent, and `hop ls` over all their nodes from either appliance.
pub fn run(o: &Options, report: &mut Report) -> anyhow::Result<()> {
    STARTED.get_or_init(monotonic_now);
    if o.agents < 2 || o.nodes == 0 {
        bail!("agents-ha needs --agents of at least 2 and --nodes of at least 1");
    }
    say!("starting PostgreSQL 15");
    let pg = Postgres::start()?;
    pg.query("postgres", &format!("CREATE DATABASE {DB}"))?;
    let (mut sides, token, join) = prepare(o, &pg)?;
    for s in &sides {
        say!(
            "{}: idle proxy {:.2} % of a core, {} MiB",
            s.name,
            s.idle_cpu_pct,
            kib_mib(s.rss_before)
        );
    }
    let limit = Duration::from_secs(60) + Duration::from_millis(10 * o.agents as u64);
    let (mut lts, up) = connect_sides(&mut sides, o, &token, "run", limit)?;
    say!(
        "all {} tunnels up after {:.1} s",
        o.agents,
        up.as_secs_f64()
    );
    let want = o.agents * o.nodes;
    let listed = wait_listed(&sides, want)?;
    say!("settling {:.0} s", o.settle.as_secs_f64());
    std::thread::sleep(o.settle);
    say!("window: {:.0} s", o.window.as_secs_f64());
    let w = measure(o, &pg, &sides, &lts)?;
    say!("hop ls: {} runs per appliance", o.ls_runs);
    let ls_times = time_ls(&sides, o.ls_runs, want)?;
    let held: Vec<Option<u64>> = sides.iter().map(|s| tunnels(&s.a)).collect();
    say!("stopping the agents");
    let mut summaries = Vec::new();
    for lt in &mut lts {
        summaries.push(summary_line(&stop_loadtest(lt)?));
    }
    drop(lts);
    let (churn, failed): (Vec<usize>, Vec<usize>) = sides
        .iter()
        .map(|s| {
            let text =
                std::fs::read_to_string(s.a.dir.path().join("events.jsonl")).unwrap_or_default();
            let events = parse_events(&text);
            let in_window = events
                .iter()
                .filter(|e| e.t_ms >= w.from_ms && e.t_ms < w.until_ms && e.event != "connected")
                .count();
            let failed = events
                .iter()
                .filter(|e| e.t_ms < w.from_ms && e.event == "attempt_failed")
                .count();
            (in_window, failed)
        })
        .unzip();
    say!("stopping the appliances");
    for s in &mut sides {
        let _ = s.a.stop(STOP_LIMIT);
    }
    say!("done");
    fill_report(
        o,
        report,
        &Outcome {
            sides: &sides,
            w: &w,
            ls_times: &ls_times,
            held: &held,
            join,
            up,
            listed,
            summaries: &summaries,
            churn: &churn,
            failed: &failed,
        },
    );
    Ok(())
}

/// Everything the report is made of.
struct Outcome<'a> {
    sides: &'a [Side],
    w: &'a Window,
    ls_times: &'a [Vec<f64>],
    held: &'a [Option<u64>],
    join: Duration,
    up: Duration,
    listed: Duration,
    summaries: &'a [String],
    /// Per side: disconnects and failed attempts in the window.
    churn: &'a [usize],
    /// Per side: connection attempts that failed before the window (while connecting).
    failed: &'a [usize],
}

fn fill_report(o: &Options, report: &mut Report, r: &Outcome) {
    let w = r.w;
    let n_nodes = o.agents * o.nodes;
    report.contenders = vec![ContenderInfo {
        name: "hop".into(),
        describe: format!(
            "two `hop start` (Auth + Proxy, own ports and data dirs) on one PostgreSQL 15 \
             database; per appliance one `hop admin loadtest agents --nodes {}` process with half \
             of the {} simulated node agents (TLS 1.3 control connections, each with its own host \
             certificate, a hello announcing {} nodes, heartbeats every 30 s, no data \
             connections); `hop ls --format json` as user {USER} (role access, password login) \
             through each appliance",
            o.nodes, o.agents, o.nodes
        ),
    }];
    let mut header: Vec<String> = [
        "appliance",
        "agents held",
        "proxy CPU % of a core",
        "idle CPU %",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    header.extend(
        [
            "proxy KiB/agent",
            "RSS MiB before / with agents",
            &format!("hop ls {n_nodes} nodes: median s"),
            "min–max s",
            "goal < 1 s",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    let mut table = vec![header];
    for (i, s) in r.sides.iter().enumerate() {
        let case = format!("{} agents, {n_nodes} nodes, appliance {}", o.agents, s.name);
        let times = &r.ls_times[i];
        let ls_med = median(times.iter().copied());
        let (lo, hi) = range(times.iter().copied());
        let cpu_pct = w.proxy_cpu_s[i] / w.secs * 100.0;
        let kib = (w.proxy_rss[i] - s.rss_before) / s.agents as f64;
        let mut sample = Sample {
            value: ls_med,
            seconds: w.secs,
            work: s.agents as f64,
            errors: r.churn[i] as u64,
            ..Default::default()
        };
        sample.cpu.insert("proxy".into(), w.proxy_cpu_s[i]);
        let x = &mut sample.extra;
        x.insert("proxy_cpu_pct".into(), cpu_pct);
        x.insert("idle_proxy_cpu_pct".into(), s.idle_cpu_pct);
        x.insert("proxy_kib_per_agent".into(), kib);
        x.insert("proxy_rss_before_kib".into(), s.rss_before);
        x.insert("proxy_rss_end_kib".into(), w.proxy_rss[i]);
        x.insert("failed_attempts_before_window".into(), r.failed[i] as f64);
        // The backend's figures are the cluster's (both appliances), the same in each row.
        x.insert("backend_rows_written_per_s".into(), w.db.rows / w.secs);
        x.insert("backend_commits_per_s".into(), w.db.commits / w.secs);
        x.insert(
            "backend_wal_kib_per_s".into(),
            w.db.wal_bytes / 1024.0 / w.secs,
        );
        x.insert("ls_min_s".into(), lo);
        x.insert("ls_max_s".into(), hi);
        for (k, t) in times.iter().enumerate() {
            x.insert(format!("ls_run_{k}_s"), *t);
        }
        report.row_mut(&case, "hop").samples = vec![sample];
        table.push(vec![
            s.name.to_string(),
            r.held[i]
                .map(|h| h.to_string())
                .unwrap_or_else(|| "?".into()),
            num(cpu_pct, 2),
            num(s.idle_cpu_pct, 2),
            num(kib, 1),
            format!("{} / {}", kib_mib(s.rss_before), kib_mib(w.proxy_rss[i])),
            num(ls_med, 3),
            format!("{}–{}", num(lo, 3), num(hi, 3)),
            if ls_med < GOAL_LS_S {
                "met"
            } else {
                "**not met**"
            }
            .into(),
        ]);
    }
    report.table = table;
    let per_s = |v: f64| num(v / w.secs, 2);
    let items = w
        .tables
        .iter()
        .find(|(t, _)| t == ITEMS_TABLE)
        .map_or(0.0, |(_, d)| *d);
    let notes = &mut report.notes;
    notes.push(format!(
        "backend writes at steady state: {} values written/s by both appliances ({} rows of \
         {ITEMS_TABLE}, the PostgreSQL backend's key-value table, inserted, updated or deleted \
         in {:.0} s)",
        per_s(items),
        num(items, 0),
        w.secs
    ));
    notes.push(format!(
        "PostgreSQL over the same window ({:.0} s, both appliances): {} rows written/s (pg_stat_database tup_inserted + tup_updated + tup_deleted \
         of database {DB}, TOAST chunks included), {} transactions committed/s (xact_commit, reads included; {} rolled \
         back), {} KiB/s of WAL (pg_current_wal_insert_lsn, whole server)",
        w.secs,
        per_s(w.db.rows),
        per_s(w.db.commits),
        num(w.db.rollbacks, 0),
        num(w.db.wal_bytes / 1024.0 / w.secs, 1)
    ));
    if !w.tables.is_empty() {
        notes.push(format!(
            "rows written per table over the window (pg_stat_all_tables n_tup_ins + n_tup_upd + \
             n_tup_del; a table's TOAST rows are the chunks of its large values, such as the \
             presence summaries): {}",
            w.tables
                .iter()
                .map(|(t, d)| format!("{t} {d:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    notes.push(format!(
        "proxy CPU = CPU time of each `hop start`'s threads over the window; KiB/agent = (VmRSS \
         at the window's end − VmRSS of the fresh proxy before any agent) / agents it holds (each \
         proxy also keeps the other's {} nodes from the presence summaries); the load tests used \
         {} % of a core in all; machine busy {} % of its {} cores (all processes)",
        n_nodes / 2,
        num(w.loadtest_cpu_s / w.secs * 100.0, 1),
        num(w.busy_s / w.secs * 100.0, 1),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    ));
    notes.push(format!(
        "hop ls = wall time of the whole `hop ls --format json` command (process start, TLS to \
         the proxy, ListNodes, RBAC per node, {n_nodes} nodes printed), {} runs per appliance \
         alternating; every run listed all {n_nodes}",
        o.ls_runs
    ));
    notes.push(format!(
        "joining all {} agents the first time took {:.1} s; with cached identities all tunnels \
         were up {:.1} s after the load tests started, and both appliances listed all \
         {n_nodes} nodes {:.1} s later",
        o.agents,
        r.join.as_secs_f64(),
        r.up.as_secs_f64(),
        r.listed.as_secs_f64()
    ));
    let churn: usize = r.churn.iter().sum();
    notes.push(format!(
        "disconnects or failed connection attempts in the window: {churn}; connection attempts \
         that failed while the {} agents connected to the fresh proxies (each retried after its \
         backoff): {}",
        o.agents,
        r.failed.iter().sum::<usize>()
    ));
    for (s, line) in r.sides.iter().zip(r.summaries) {
        notes.push(format!("load test {}: {line}", s.name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_and_db_marks_parse() {
        assert_eq!(parse_lsn("0/16B3748"), Some(0x16B_3748));
        assert_eq!(parse_lsn("1/0"), Some(1 << 32));
        assert_eq!(parse_lsn("nope"), None);
        let f: Vec<String> = ["10", "1", "5", "6", "7", "0/100"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            parse_db_mark(&f),
            Some(DbMark {
                commits: 10.0,
                rollbacks: 1.0,
                rows: 18.0,
                wal_bytes: 256.0
            })
        );
        assert_eq!(parse_db_mark(&f[..5]), None);
    }

    #[test]
    fn listed_nodes_are_counted() {
        assert_eq!(
            count_listed("[{\"name\":\"a\"},{\"name\":\"b\"}]\n").unwrap(),
            2
        );
        assert_eq!(count_listed("{\"nodes\":[]}").unwrap(), 0);
        assert!(count_listed("not json").is_err());
    }
}
