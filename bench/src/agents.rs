//! `agents` and `reconnect`: agent tunnels held by one proxy, and a proxy restart under them.
//!
//! Both drive `hop admin loadtest agents` (many simulated agents in one process, each with its own
//! host certificate and control connection: hello, heartbeats, goaway, the agents' own jittered
//! backoff; `appliance/agent/src/loadtest.rs`) against a real `hop start` on a fixed loopback
//! port. The preparation is shared: the appliance (with the per-IP login rate limit and the
//! per-IP connection limit raised, since every agent comes from 127.0.0.1), an app join token, one
//! load-test run that joins every agent and caches its identity, then a restart of the appliance,
//! so that what is measured is a fresh proxy that holds tunnels and nothing else. Then:
//!
//! - `agents`: the load test again with the cached identities; the time until the proxy holds N
//!   tunnels; after a settling time, the proxy's CPU over a window (one heartbeat interval by
//!   default) and its RSS growth per agent.
//! - `reconnect`: with N tunnels up, SIGTERM to the appliance (it sends every agent a goaway with
//!   its own delay) and a new `hop start` on the same port and data dir; from the load test's
//!   `--report-reconnects` JSON lines: when each agent came back, the distribution, the arrivals
//!   per second and the peak second against the mean rate.
//!
//! Every process is a [`Spawned`] (killed by PID when dropped); the load test is stopped with
//! SIGINT first, so that its agents say goodbye, it prints its summary and flushes its report.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};

use crate::clock::{monotonic_now, since, wall_now};
use crate::hop::{Appliance, ApplianceConfig, HopOptions};
use crate::procs::{self, Spawned};
use crate::report::{ContenderInfo, Report, Row, Sample, num};

/// When the harness started, for the progress lines' timestamps.
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

/// The heartbeat interval the proxy asks agents for (`TUNNEL_HEARTBEAT` in
/// `appliance/src/start.rs`; not configurable).
pub const PROXY_HEARTBEAT: Duration = Duration::from_secs(30);
/// Issue 7's target size and goals.
pub const GOAL_AGENTS: usize = 10_000;
const GOAL_CPU_PCT: f64 = 25.0;
const GOAL_KIB_PER_AGENT: f64 = 4.0;
const GOAL_BACK_S: f64 = 60.0;
const GOAL_PEAK_TO_MEAN: f64 = 3.0;
/// How long the harness waits for every agent to come back after a restart.
const BACK_LIMIT: Duration = Duration::from_secs(180);
/// How long `hop start` may take to exit on SIGTERM (it drains for up to about 15 s).
pub(crate) const STOP_LIMIT: Duration = Duration::from_secs(40);

/// What `agents` and `reconnect` were asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub hop: HopOptions,
    /// Simulated agents (`--agents`).
    pub agents: usize,
    /// `agents`: measured windows in a row; `reconnect`: restarts in a row.
    pub repeat: usize,
    /// `agents`: the measured window.
    pub window: Duration,
    /// Quiet time before the agents start (the idle proxy is measured over its second half) and
    /// after all tunnels are up, before anything is measured.
    pub settle: Duration,
    /// The simulated agents' heartbeat instead of the proxy's 30 s (`--heartbeat`).
    pub heartbeat: Option<Duration>,
    /// `reconnect`: the least time the appliance stays down (SIGTERM to the new `hop start`).
    pub downtime: Duration,
}

impl Options {
    fn heartbeat(&self) -> Duration {
        self.heartbeat.unwrap_or(PROXY_HEARTBEAT)
    }
}

pub(crate) fn unix_ms() -> u64 {
    wall_now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Every sample of the appliance's `/metrics`, by its full name (labels included).
fn metrics(a: &Appliance) -> BTreeMap<String, f64> {
    procs::http_get(&a.diag, "/metrics")
        .map(|t| parse_metrics(&t))
        .unwrap_or_default()
}

fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

pub(crate) fn tunnels(a: &Appliance) -> Option<u64> {
    a.metric("hop_proxy_tunnels_connected").map(|v| v as u64)
}

/// `hop admin -d CACHE loadtest agents ...` against `a`, with the identities cached in `cache`.
fn start_loadtest(
    a: &Appliance,
    o: &Options,
    token: &str,
    cache: &Path,
    report: Option<&Path>,
    log: &Path,
) -> anyhow::Result<Spawned> {
    let mut cmd = procs::command(&a.binary);
    cmd.args(["admin", "-d"])
        .arg(cache)
        .args(["loadtest", "agents", "--count", &o.agents.to_string()])
        .args(["--proxy", &a.addr, "--ca-pin", &a.pin, "--token", token]);
    if let Some(hb) = o.heartbeat {
        cmd.args(["--heartbeat", &format!("{}ms", hb.as_millis())]);
    }
    if let Some(r) = report {
        cmd.arg("--report-reconnects").arg(r);
    }
    cmd.env_remove("HOP_DATA_DIR")
        .env_remove("HOP_PROXY")
        .env_remove("HOP_CA_PIN")
        .env_remove("HOP_JOIN_TOKEN")
        .env("HOP_LOG", "error");
    Spawned::start("hop admin loadtest agents", cmd, log, false)
}

/// Starts the load test with the cached identities (its reconnect report to `events`) and waits
/// until the proxy holds all its tunnels: the load test and how long that took.
fn connect_all(
    p: &mut Prepared,
    o: &Options,
    events: &Path,
    log: &Path,
) -> anyhow::Result<(Spawned, Duration)> {
    let n = o.agents as u64;
    let mut lt = start_loadtest(&p.a, o, &p.token, &p.cache, Some(events), log)?;
    let limit = Duration::from_secs(60) + Duration::from_millis(10 * n);
    let up = wait_tunnels(&mut p.a, Some(&mut lt), limit, |c| c >= n)?.ok_or_else(|| {
        anyhow!(
            "only {:?} of {n} tunnels were up within {limit:?}; load test:\n{}",
            tunnels(&p.a),
            procs::log_tail(&lt.log, 12)
        )
    })?;
    say!(
        "all {n} tunnels up after {:.1} s; settling {:.0} s",
        up.as_secs_f64(),
        o.settle.as_secs_f64()
    );
    Ok((lt, up))
}

/// Stops the load test with SIGINT (its agents send a goaway, it prints its summary and flushes
/// its report); the end of its output.
pub(crate) fn stop_loadtest(lt: &mut Spawned) -> anyhow::Result<String> {
    if lt
        .signal_and_wait("INT", Duration::from_secs(30))?
        .is_none()
    {
        bail!("the load test did not stop within 30 s of SIGINT");
    }
    Ok(procs::log_tail(&lt.log, 12))
}

/// Waits until `done(tunnels held by the proxy)`, at most `limit`; how long it took. Fails at once
/// if the load test or the appliance exits.
fn wait_tunnels(
    a: &mut Appliance,
    mut lt: Option<&mut Spawned>,
    limit: Duration,
    done: impl Fn(u64) -> bool,
) -> anyhow::Result<Option<Duration>> {
    let t = monotonic_now();
    loop {
        if tunnels(a).is_some_and(&done) {
            return Ok(Some(since(t)));
        }
        if let Some(lt) = lt.as_deref_mut() {
            lt.check_running()?;
        }
        a.proxy.check_running()?;
        if since(t) > limit {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A process's CPU time at one moment: per thread in nanoseconds (the proxy's figures are tens
/// of milliseconds per window, where 10 ms clock ticks are too coarse) and in clock ticks.
pub(crate) struct CpuMark {
    pid: u32,
    threads: BTreeMap<u32, u64>,
    ticks: f64,
}

impl CpuMark {
    pub(crate) fn now(pid: u32) -> Self {
        Self {
            pid,
            threads: procs::threads_cpu_ns(pid),
            ticks: cpu_ticks(pid),
        }
    }

    /// CPU seconds since this mark: from the threads' nanosecond counters, else from ticks.
    pub(crate) fn seconds(&self) -> f64 {
        procs::threads_cpu_seconds_since(self.pid, &self.threads)
            .unwrap_or_else(|| self.ticks_seconds())
    }

    /// CPU seconds since this mark in clock ticks (threads that ended included).
    fn ticks_seconds(&self) -> f64 {
        cpu_ticks(self.pid) - self.ticks
    }
}

/// CPU seconds from `/proc/PID/stat` (clock ticks; exited threads included).
fn cpu_ticks(pid: u32) -> f64 {
    procs::cpu_seconds(pid).unwrap_or(f64::NAN)
}

pub(crate) fn rss(pid: u32) -> f64 {
    procs::rss_kib(pid).map(|k| k as f64).unwrap_or(f64::NAN)
}

/// The appliance with every agent's identity cached, restarted and idle.
struct Prepared {
    a: Appliance,
    token: String,
    cache: PathBuf,
    /// Joining every agent and bringing its tunnel up the first time.
    join: Duration,
    /// The restarted proxy with no agent: CPU % of a core and RSS (KiB) at the end.
    idle_cpu_pct: f64,
    rss_before: f64,
}

fn prepare(o: &Options) -> anyhow::Result<Prepared> {
    STARTED.get_or_init(monotonic_now);
    let port = procs::free_port()?;
    let extra = ApplianceConfig {
        port,
        // Joins count as login attempts, all from 127.0.0.1.
        auth: "  login:\n    attempts_per_ip_per_minute: 1000000\n".into(),
        proxy: format!(
            "  max_connections_per_ip: {}\n",
            (o.agents * 2 + 1000).max(10_000)
        ),
        ..Default::default()
    };
    say!("starting the appliance on 127.0.0.1:{port}");
    let mut a = Appliance::start_with(&o.hop, &extra)?;
    let tok: serde_json::Value = serde_json::from_str(
        a.ok(&[
            "admin", "tokens", "add", "--type", "app", "--ttl", "2h", "--format", "json",
        ])?
        .trim(),
    )?;
    let token = tok["token"]
        .as_str()
        .ok_or_else(|| anyhow!("no join token in {tok}"))?
        .to_string();
    let cache = a.dir.path().join("loadtest-cache");
    let n = o.agents as u64;
    say!(
        "joining {} simulated agents (identities cached in {})",
        o.agents,
        cache.display()
    );
    let log = a.dir.path().join("loadtest-join.log");
    let mut lt = start_loadtest(&a, o, &token, &cache, None, &log)?;
    let limit = Duration::from_secs(120) + Duration::from_millis(60 * n);
    let join = wait_tunnels(&mut a, Some(&mut lt), limit, |c| c >= n)?.ok_or_else(|| {
        anyhow!(
            "only {:?} of {n} agents joined and connected within {limit:?}; load test:\n{}",
            tunnels(&a),
            procs::log_tail(&lt.log, 12)
        )
    })?;
    say!(
        "{n} agents joined and connected in {:.1} s",
        join.as_secs_f64()
    );
    stop_loadtest(&mut lt)?;
    drop(lt);
    say!("restarting the appliance (a fresh proxy, identities cached)");
    if a.stop(STOP_LIMIT)?.is_none() {
        bail!("hop start did not exit within {STOP_LIMIT:?} of SIGTERM");
    }
    a.start_again()?;
    // Let start-up settle, then measure the idle proxy over the second half.
    std::thread::sleep(o.settle / 2);
    let pid = a.proxy.pid();
    let (c0, t0) = (CpuMark::now(pid), monotonic_now());
    std::thread::sleep(o.settle / 2);
    let idle_cpu_pct = c0.seconds() / since(t0).as_secs_f64() * 100.0;
    let rss_before = rss(pid);
    Ok(Prepared {
        a,
        token,
        cache,
        join,
        idle_cpu_pct,
        rss_before,
    })
}

/// One event of `--report-reconnects` (JSON lines written by the load test).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub t_ms: u64,
    pub agent: u64,
    /// `connected`, `disconnected`, `attempt_failed`, `gave_up`.
    pub event: String,
    pub reason: String,
}

pub fn parse_events(text: &str) -> Vec<Event> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|e| {
            Some(Event {
                t_ms: e["t_ms"].as_u64()?,
                agent: e["agent"].as_u64()?,
                event: e["event"].as_str()?.to_string(),
                reason: e["reason"].as_str().unwrap_or_default().to_string(),
            })
        })
        .collect()
}

/// The nearest-rank `q` quantile of sorted values (0 when empty).
fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// What the agents did around one restart, from their events in `[from_ms, until_ms)`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Restart {
    /// Agents that lost their tunnel after the SIGTERM.
    pub down: usize,
    /// Of those, agents that came back.
    pub back: usize,
    /// Lost without a goaway (the connection just closed).
    pub without_goaway: usize,
    /// Connection attempts that failed while the proxy was away (each retried after the backoff).
    pub refused: usize,
    pub gave_up: usize,
    /// First and last agent back, ms after the SIGTERM.
    pub first_back_ms: u64,
    pub last_back_ms: u64,
    /// Per agent, disconnect → connected again (ms), sorted.
    pub outages: Vec<u64>,
    /// Per agent, SIGTERM → connected again (ms), sorted.
    pub since_sigterm: Vec<u64>,
    /// Agents back in each second since the first one came back.
    pub per_second: Vec<u64>,
}

impl Restart {
    /// Reconnects per second from the first agent back to the last (at least one second).
    pub fn mean_rate(&self) -> f64 {
        let window_s = (self.last_back_ms - self.first_back_ms) as f64 / 1000.0;
        self.back as f64 / window_s.max(1.0)
    }
    pub fn peak(&self) -> u64 {
        self.per_second.iter().copied().max().unwrap_or(0)
    }
}

/// Per agent: its first disconnect at or after `from_ms`, and its first connect after that.
pub fn analyse_restart(events: &[Event], from_ms: u64, until_ms: u64) -> Restart {
    let mut down: HashMap<u64, u64> = HashMap::new();
    let mut back: HashMap<u64, u64> = HashMap::new();
    let mut r = Restart::default();
    for e in events
        .iter()
        .filter(|e| e.t_ms >= from_ms && e.t_ms < until_ms)
    {
        match e.event.as_str() {
            "disconnected" => {
                if let std::collections::hash_map::Entry::Vacant(v) = down.entry(e.agent) {
                    v.insert(e.t_ms);
                    if e.reason != "goaway" {
                        r.without_goaway += 1;
                    }
                }
            }
            "connected" if down.contains_key(&e.agent) => {
                back.entry(e.agent).or_insert(e.t_ms);
            }
            "attempt_failed" => r.refused += 1,
            "gave_up" => r.gave_up += 1,
            _ => {}
        }
    }
    r.down = down.len();
    r.back = back.len();
    if back.is_empty() {
        return r;
    }
    let first = back.values().copied().min().unwrap_or(from_ms);
    let last = back.values().copied().max().unwrap_or(from_ms);
    r.first_back_ms = first.saturating_sub(from_ms);
    r.last_back_ms = last.saturating_sub(from_ms);
    r.outages = back
        .iter()
        .map(|(a, t)| t.saturating_sub(down[a]))
        .collect();
    r.outages.sort_unstable();
    r.since_sigterm = back.values().map(|t| t.saturating_sub(from_ms)).collect();
    r.since_sigterm.sort_unstable();
    r.per_second = vec![0; ((last - first) / 1000 + 1) as usize];
    for t in back.values() {
        r.per_second[((t - first) / 1000) as usize] += 1;
    }
    r
}

fn goal(met: bool) -> &'static str {
    if met { "met" } else { "**not met**" }
}

pub(crate) fn kib_mib(k: f64) -> String {
    num(k / 1024.0, 1)
}

/// `agents`: N tunnels held by one proxy; its CPU at steady state and memory per agent.
pub fn agents(o: &Options, report: &mut Report) -> anyhow::Result<()> {
    let mut p = prepare(o)?;
    let n = o.agents as u64;
    let events_path = p.a.dir.path().join("events.jsonl");
    let log = p.a.dir.path().join("loadtest.log");
    say!(
        "{n} agents with cached identities against the fresh proxy (idle: {:.2} % of a core, {} MiB)",
        p.idle_cpu_pct,
        kib_mib(p.rss_before)
    );
    let (mut lt, up) = connect_all(&mut p, o, &events_path, &log)?;
    let at_up = metrics(&p.a);
    let up_ms = unix_ms();
    std::thread::sleep(o.settle);
    let proxy = p.a.proxy.pid();
    let agents_pid = lt.pid();
    let rss_settled = rss(proxy);
    let hb = o.heartbeat();
    let mut windows = Vec::new();
    let mut samples = Vec::new();
    for i in 0..o.repeat {
        say!(
            "window {}/{}: {:.0} s",
            i + 1,
            o.repeat,
            o.window.as_secs_f64()
        );
        let (p0, l0, m0, t0, ms0) = (
            CpuMark::now(proxy),
            CpuMark::now(agents_pid),
            procs::machine_busy_seconds().unwrap_or(f64::NAN),
            monotonic_now(),
            unix_ms(),
        );
        std::thread::sleep(o.window);
        let (proxy_s, agents_s, m1, secs, ms1) = (
            p0.seconds(),
            l0.seconds(),
            procs::machine_busy_seconds().unwrap_or(f64::NAN),
            since(t0).as_secs_f64(),
            unix_ms(),
        );
        let proxy_ticks_s = p0.ticks_seconds();
        let held = tunnels(&p.a).unwrap_or(0);
        let rss_end = rss(proxy);
        let heartbeats = n as f64 * secs / hb.as_secs_f64();
        let mut s = Sample {
            value: (rss_end - p.rss_before) / n as f64,
            seconds: secs,
            work: n as f64,
            ..Default::default()
        };
        s.cpu.insert("proxy".into(), proxy_s);
        s.cpu.insert("agents".into(), agents_s);
        s.cpu
            .insert("unattributed".into(), (m1 - m0) - proxy_s - agents_s);
        let x = &mut s.extra;
        x.insert("proxy_cpu_pct".into(), proxy_s / secs * 100.0);
        x.insert("proxy_cpu_pct_ticks".into(), proxy_ticks_s / secs * 100.0);
        x.insert("agents_cpu_pct".into(), agents_s / secs * 100.0);
        x.insert(
            "unattributed_cpu_pct".into(),
            ((m1 - m0) - proxy_s - agents_s) / secs * 100.0,
        );
        x.insert("idle_proxy_cpu_pct".into(), p.idle_cpu_pct);
        x.insert("heartbeats_estimated".into(), heartbeats);
        x.insert(
            "proxy_cpu_us_per_heartbeat".into(),
            (proxy_s - p.idle_cpu_pct / 100.0 * secs) / heartbeats * 1e6,
        );
        x.insert("all_connected_s".into(), up.as_secs_f64());
        x.insert("join_s".into(), p.join.as_secs_f64());
        x.insert("proxy_rss_before_kib".into(), p.rss_before);
        x.insert("proxy_rss_settled_kib".into(), rss_settled);
        x.insert("proxy_rss_end_kib".into(), rss_end);
        x.insert(
            "proxy_kib_per_agent_settled".into(),
            (rss_settled - p.rss_before) / n as f64,
        );
        x.insert("tunnels_at_end".into(), held as f64);
        if held != n {
            s.errors += n.abs_diff(held);
            s.first_error = Some(format!("{held} of {n} tunnels held at the window's end"));
        }
        windows.push((ms0, ms1));
        samples.push(s);
    }
    say!("stopping the agents");
    let summary = stop_loadtest(&mut lt)?;
    drop(lt);
    let gone = wait_tunnels(&mut p.a, None, Duration::from_secs(20), |c| c == 0).unwrap_or(None);
    std::thread::sleep(Duration::from_secs(2));
    let rss_after = rss(proxy);
    let events = parse_events(&std::fs::read_to_string(&events_path).unwrap_or_default());
    for (s, (from, until)) in samples.iter_mut().zip(&windows) {
        let churn = events
            .iter()
            .filter(|e| e.t_ms >= *from && e.t_ms < *until && e.event != "connected")
            .count();
        s.extra.insert("disconnects_in_window".into(), churn as f64);
        s.extra
            .insert("proxy_rss_after_agents_left_kib".into(), rss_after);
        if churn > 0 {
            s.errors += churn as u64;
            s.first_error.get_or_insert_with(|| {
                format!("{churn} disconnects or failed attempts in the window")
            });
        }
    }
    let gave_up = events.iter().filter(|e| e.event == "gave_up").count();
    // Connection attempts that failed before all were up, by reason.
    let mut failed: BTreeMap<&str, usize> = BTreeMap::new();
    for e in events
        .iter()
        .filter(|e| e.t_ms <= up_ms && e.event == "attempt_failed")
    {
        *failed.entry(e.reason.as_str()).or_default() += 1;
    }
    let failed_total: usize = failed.values().sum();
    let mut reasons: Vec<(&str, usize)> = failed.into_iter().collect();
    reasons.sort_by_key(|r| std::cmp::Reverse(r.1));
    for s in &mut samples {
        s.extra
            .insert("failed_attempts_first_connect".into(), failed_total as f64);

        for (k, key) in [
            (
                "handshakes_shed_first_connect",
                "hop_proxy_handshakes_shed_total",
            ),
            (
                "tls_handshake_failures_first_connect",
                "hop_proxy_tls_handshakes_total{result=\"failure\"}",
            ),
        ] {
            s.extra
                .insert(k.into(), at_up.get(key).copied().unwrap_or(f64::NAN));
        }
    }
    say!("stopping the appliance");
    let _ = p.a.stop(STOP_LIMIT);
    say!("done");

    let case = o.agents.to_string();
    report.contenders = vec![ContenderInfo {
        name: "hop".into(),
        describe: format!(
            "`hop admin loadtest agents --count {n}` (one process, {n} control connections, each \
             TLS 1.3 with its own host certificate, hello announcing one app, heartbeat every {} s, \
             no data connections) → `hop start` (Auth + Proxy, {} workers) on 127.0.0.1, restarted \
             after the agents joined so that it holds tunnels only",
            hb.as_secs_f64(),
            o.hop
                .workers
                .map(|w| w.to_string())
                .unwrap_or_else(|| "default".into())
        ),
    }];
    report.row_mut(&case, "hop").samples = samples;
    let row = report
        .row(&case, "hop")
        .cloned()
        .ok_or_else(|| anyhow!("no row"))?;
    agents_table(report, &row);
    let cpu_pct = row.med(|s| s.extra("proxy_cpu_pct"));
    let kib = row.med(|s| s.value);
    let projected =
        p.idle_cpu_pct + (cpu_pct - p.idle_cpu_pct).max(0.0) * GOAL_AGENTS as f64 / n as f64;
    let notes = &mut report.notes;
    notes.push(format!(
        "goal (issue 7): {GOAL_AGENTS} agents under {GOAL_CPU_PCT} % of a core at steady state: \
         {} % with {n} agents{} — {}",
        num(cpu_pct, 2),
        if o.agents == GOAL_AGENTS {
            String::new()
        } else {
            format!(
                " (projected linearly to {GOAL_AGENTS}: {} %)",
                num(projected, 2)
            )
        },
        goal(projected < GOAL_CPU_PCT)
    ));
    notes.push(format!(
        "goal (issue 7): under {GOAL_KIB_PER_AGENT} KiB of proxy memory per agent: {} KiB — {}",
        num(kib, 1),
        goal(kib < GOAL_KIB_PER_AGENT)
    ));
    notes.push(format!(
        "proxy CPU = CPU time of `hop start`'s threads (/proc/PID/task/*/schedstat, ns; the \
         clock-tick figure of /proc/PID/stat is `proxy_cpu_pct_ticks` in --json) over each \
         window, which starts \
         {:.0} s after the last tunnel came up; heartbeats are every {} s (agents started at up to \
         1,000/s, so they are spread over the interval), about {:.0} per window; µs per heartbeat \
         subtracts the idle proxy's CPU ({} % of a core, measured with no agent before they \
         started){}",
        o.settle.as_secs_f64(),
        hb.as_secs_f64(),
        row.med(|s| s.extra("heartbeats_estimated")),
        num(p.idle_cpu_pct, 2),
        if o.heartbeat.is_some() {
            "; --heartbeat makes the simulated agents beat faster than the proxy asks, \
             so the window's CPU is that many times a 30 s cadence's heartbeat work"
        } else {
            ""
        }
    ));
    notes.push(format!(
        "KiB/agent = (proxy VmRSS at the window's end − VmRSS of the fresh proxy before any agent) \
         / {n}; {} KiB/agent {:.0} s after all were up; after the agents left (tunnels {}): \
         {} MiB",
        num(row.med(|s| s.extra("proxy_kib_per_agent_settled")), 1),
        o.settle.as_secs_f64(),
        if gone.is_some() {
            "0".to_string()
        } else {
            format!("{:?}", tunnels(&p.a))
        },
        kib_mib(rss_after)
    ));
    notes.push(format!(
        "all connected = from starting the load test (cached identities; it starts at most \
         1,000 agents/s, so {n} need at least {:.1} s) until the proxy's \
         hop_proxy_tunnels_connected reached {n}; joining them the first time took {:.1} s",
        n as f64 / 1000.0,
        p.join.as_secs_f64()
    ));
    if failed_total > 0 {
        notes.push(format!(
            "{failed_total} connection attempts failed before all {n} were up (each agent retried \
             after its backoff; the proxy counted {} handshakes shed at max_concurrent_handshakes \
             and {} failed TLS handshakes by then): {}",
            num(
                at_up
                    .get("hop_proxy_handshakes_shed_total")
                    .copied()
                    .unwrap_or(f64::NAN),
                0
            ),
            num(
                at_up
                    .get("hop_proxy_tls_handshakes_total{result=\"failure\"}")
                    .copied()
                    .unwrap_or(f64::NAN),
                0
            ),
            reasons
                .iter()
                .take(3)
                .map(|(r, c)| format!("{c} × {r:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if gave_up > 0 {
        notes.push(format!("{gave_up} simulated agents gave up (no identity)"));
    }
    notes.push(format!("load test summary: {}", summary_line(&summary)));
    Ok(())
}

/// The load test's summary, on one line.
pub(crate) fn summary_line(tail: &str) -> String {
    let from = tail.find("Load test summary").unwrap_or(0);
    tail[from..]
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

fn agents_table(report: &mut Report, row: &Row) {
    let med = |k: &'static str| row.med(move |s| s.extra(k));
    report.table = vec![
        [
            "agents",
            "contender",
            "proxy KiB/agent",
            "spread",
            "proxy CPU % of a core",
            "spread",
            "idle proxy CPU %",
            "proxy CPU µs/heartbeat",
            "all connected (s)",
            "proxy RSS MiB before / with agents / after they left",
            "agents' CPU % (load test)",
            "unattributed CPU %",
            "errors",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        vec![
            row.case.clone(),
            row.contender.clone(),
            num(row.med(|s| s.value), 1),
            row.spread(|s| s.value, 1),
            num(med("proxy_cpu_pct"), 2),
            row.spread(|s| s.extra("proxy_cpu_pct"), 2),
            num(med("idle_proxy_cpu_pct"), 2),
            num(med("proxy_cpu_us_per_heartbeat"), 0),
            num(med("all_connected_s"), 1),
            format!(
                "{} / {} / {}",
                kib_mib(med("proxy_rss_before_kib")),
                kib_mib(med("proxy_rss_end_kib")),
                kib_mib(med("proxy_rss_after_agents_left_kib"))
            ),
            num(med("agents_cpu_pct"), 1),
            num(med("unattributed_cpu_pct"), 1),
            row.errors().to_string(),
        ],
    ];
}

/// `reconnect`: a proxy restart under N agents; when and how evenly they come back.
pub fn reconnect(o: &Options, report: &mut Report) -> anyhow::Result<()> {
    let mut p = prepare(o)?;
    let n = o.agents as u64;
    let events_path = p.a.dir.path().join("events.jsonl");
    let log = p.a.dir.path().join("loadtest.log");
    let (mut lt, up) = connect_all(&mut p, o, &events_path, &log)?;
    std::thread::sleep(o.settle);
    struct Timing {
        sigterm_ms: u64,
        stopped_s: f64,
        serving_s: f64,
        metric_back_s: f64,
        proxy_cpu_s: f64,
        metrics: BTreeMap<String, f64>,
    }
    let mut timings = Vec::new();
    for i in 0..o.repeat {
        say!("restart {}/{}: SIGTERM", i + 1, o.repeat);
        let sigterm_ms = unix_ms();
        let t = monotonic_now();
        if p.a.stop(STOP_LIMIT)?.is_none() {
            bail!("hop start did not exit within {STOP_LIMIT:?} of SIGTERM");
        }
        let stopped = since(t);
        std::thread::sleep(o.downtime.saturating_sub(stopped));
        p.a.start_again()?;
        let serving = since(t);
        let back = wait_tunnels(&mut p.a, Some(&mut lt), BACK_LIMIT, |c| c >= n)?;
        let metric_back_s = back.map(|_| since(t).as_secs_f64()).unwrap_or(f64::NAN);
        let proxy_cpu_s = cpu_ticks(p.a.proxy.pid());
        let m = metrics(&p.a);
        say!(
            "stopped in {:.1} s, serving again after {:.1} s, {}",
            stopped.as_secs_f64(),
            serving.as_secs_f64(),
            match back {
                Some(_) => format!("all {n} back after {metric_back_s:.1} s"),
                None => format!("only {:?} back after {BACK_LIMIT:?}", tunnels(&p.a)),
            }
        );
        timings.push(Timing {
            sigterm_ms,
            stopped_s: stopped.as_secs_f64(),
            serving_s: serving.as_secs_f64(),
            metric_back_s,
            proxy_cpu_s,
            metrics: m,
        });
        // Late events (and the report's once-a-second flush) before the next restart or the end.
        std::thread::sleep(o.settle.max(Duration::from_secs(2)));
    }
    say!("stopping the agents");
    let summary = stop_loadtest(&mut lt)?;
    drop(lt);
    say!("stopping the appliance");
    let _ = p.a.stop(STOP_LIMIT);
    let events = parse_events(
        &std::fs::read_to_string(&events_path)
            .with_context(|| format!("reading {}", events_path.display()))?,
    );
    let gave_up_total = events.iter().filter(|e| e.event == "gave_up").count();
    let case = o.agents.to_string();
    let mut histograms = Vec::new();
    for (i, t) in timings.iter().enumerate() {
        let until = timings
            .get(i + 1)
            .map(|next| next.sigterm_ms)
            .unwrap_or(u64::MAX);
        let r = analyse_restart(&events, t.sigterm_ms, until);
        let mut s = Sample {
            value: r.last_back_ms as f64 / 1000.0,
            seconds: r.last_back_ms as f64 / 1000.0,
            work: r.back as f64,
            ..Default::default()
        };
        s.cpu.insert("proxy".into(), t.proxy_cpu_s);
        let pct = |v: &[u64], q: f64| quantile(v, q) as f64 / 1000.0;
        let x = &mut s.extra;
        x.insert("stopped_s".into(), t.stopped_s);
        x.insert("serving_again_s".into(), t.serving_s);
        x.insert("all_back_metric_s".into(), t.metric_back_s);
        x.insert("first_back_s".into(), r.first_back_ms as f64 / 1000.0);
        for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0)] {
            x.insert(format!("outage_{name}_s"), pct(&r.outages, q));
            x.insert(format!("since_sigterm_{name}_s"), pct(&r.since_sigterm, q));
        }
        x.insert("mean_per_s".into(), r.mean_rate());
        x.insert("peak_per_s".into(), r.peak() as f64);
        x.insert("peak_to_mean".into(), r.peak() as f64 / r.mean_rate());
        x.insert("down".into(), r.down as f64);
        x.insert("back".into(), r.back as f64);
        x.insert("refused_attempts".into(), r.refused as f64);
        x.insert("without_goaway".into(), r.without_goaway as f64);
        x.insert("gave_up".into(), r.gave_up as f64);
        x.insert("proxy_cpu_s_start_to_all_back".into(), t.proxy_cpu_s);
        for (k, key) in [
            ("handshakes_shed", "hop_proxy_handshakes_shed_total"),
            (
                "tls_handshake_failures",
                "hop_proxy_tls_handshakes_total{result=\"failure\"}",
            ),
            (
                "tls_handshake_timeouts",
                "hop_proxy_tls_handshakes_total{result=\"timeout\"}",
            ),
        ] {
            x.insert(k.into(), t.metrics.get(key).copied().unwrap_or(f64::NAN));
        }
        s.series.insert(
            "back_per_second".into(),
            r.per_second.iter().map(|&c| c as f64).collect(),
        );
        if (r.back as u64) < n || r.gave_up > 0 {
            s.errors = n.saturating_sub(r.back as u64) + r.gave_up as u64;
            s.first_error = Some(format!(
                "{} of {n} agents lost their tunnel, {} came back, {} gave up",
                r.down, r.back, r.gave_up
            ));
        }
        histograms.push((i, r));
        report.row_mut(&case, "hop").samples.push(s);
    }
    report.contenders = vec![ContenderInfo {
        name: "hop".into(),
        describe: format!(
            "`hop admin loadtest agents --count {n}` (cached identities, the agents' own control \
             loop and jittered backoff) → `hop start` on a fixed 127.0.0.1 port; restart = SIGTERM \
             (the proxy sends each agent a goaway with its own delay, spread over 10 s, and \
             drains), then, at least {:.1} s after the SIGTERM, a new `hop start` with the same \
             config and data dir",
            o.downtime.as_secs_f64()
        ),
    }];
    let row = report
        .row(&case, "hop")
        .cloned()
        .ok_or_else(|| anyhow!("no row"))?;
    reconnect_table(report, &row);
    let back_s = row.med(|s| s.value);
    let ratio = row.med(|s| s.extra("peak_to_mean"));
    let worst_ratio = row
        .samples
        .iter()
        .map(|s| s.extra("peak_to_mean"))
        .fold(f64::NAN, f64::max);
    let all_back = row.errors() == 0;
    let notes = &mut report.notes;
    notes.push(format!(
        "goal (issue 7): {GOAL_AGENTS} agents back within {GOAL_BACK_S} s of a proxy restart: \
         {n} agents, all back {} s after the SIGTERM{} — {}",
        num(back_s, 1),
        if o.agents == GOAL_AGENTS {
            ""
        } else {
            " (not the target size)"
        },
        goal(all_back && back_s <= GOAL_BACK_S)
    ));
    notes.push(format!(
        "goal (issue 7): no second above {GOAL_PEAK_TO_MEAN}× the mean reconnect rate: peak ÷ \
         mean {} (worst restart {}) — {}",
        num(ratio, 2),
        num(worst_ratio, 2),
        goal(worst_ratio <= GOAL_PEAK_TO_MEAN)
    ));
    notes.push(
        "all back = SIGTERM → the last agent's `connected` event in the load test's \
         --report-reconnects file (the proxy's hop_proxy_tunnels_connected agrees within its \
         100 ms polling: `all_back_metric_s` in --json); outage = an agent's disconnect → its \
         connect; mean rate = agents back ÷ the seconds from the first agent back to the last; \
         peak = the most agents back in one second, counted from the first one back"
            .into(),
    );
    for (i, r) in &histograms {
        let bars: Vec<String> = r.per_second.iter().map(|c| c.to_string()).collect();
        notes.push(format!(
            "restart {}: agents back per second from the first one back ({} s after the \
             SIGTERM): {}",
            i + 1,
            num(r.first_back_ms as f64 / 1000.0, 1),
            bars.join(" ")
        ));
        say!("restart {}: agents back per second:", i + 1);
        let peak = r.peak().max(1);
        for (sec, c) in r.per_second.iter().enumerate() {
            eprintln!(
                "  {sec:>3} s {c:>6} {}",
                "#".repeat((*c * 60 / peak) as usize)
            );
        }
    }
    notes.push(format!(
        "first connect of all {n} (cached identities, at most 1,000 agents/s) took {:.1} s; \
         joining them took {:.1} s; agents that gave up in the whole run: {gave_up_total}",
        up.as_secs_f64(),
        p.join.as_secs_f64()
    ));
    notes.push(format!("load test summary: {}", summary_line(&summary)));
    Ok(())
}

fn reconnect_table(report: &mut Report, row: &Row) {
    let med = |k: &'static str| row.med(move |s| s.extra(k));
    report.table = vec![
        [
            "agents",
            "contender",
            "all back after SIGTERM (s)",
            "spread",
            "proxy stopped / serving again (s)",
            "first back (s)",
            "outage p50 / p90 / p99 / max (s)",
            "mean back/s",
            "peak back/s",
            "peak ÷ mean",
            "refused attempts",
            "lost without goaway",
            "gave up",
            "errors",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        vec![
            row.case.clone(),
            row.contender.clone(),
            num(row.med(|s| s.value), 1),
            row.spread(|s| s.value, 1),
            format!(
                "{} / {}",
                num(med("stopped_s"), 1),
                num(med("serving_again_s"), 1)
            ),
            num(med("first_back_s"), 1),
            format!(
                "{} / {} / {} / {}",
                num(med("outage_p50_s"), 1),
                num(med("outage_p90_s"), 1),
                num(med("outage_p99_s"), 1),
                num(med("outage_max_s"), 1)
            ),
            num(med("mean_per_s"), 0),
            num(med("peak_per_s"), 0),
            num(med("peak_to_mean"), 2),
            num(med("refused_attempts"), 0),
            num(med("without_goaway"), 0),
            num(med("gave_up"), 0),
            row.errors().to_string(),
        ],
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(t_ms: u64, agent: u64, event: &str, reason: &str) -> String {
        serde_json::json!({"t_ms": t_ms, "agent": agent, "event": event, "reason": reason})
            .to_string()
    }

    #[test]
    fn restarts_are_analysed_per_agent() {
        let lines = [
            ev(900, 0, "connected", ""),
            ev(900, 1, "connected", ""),
            ev(900, 2, "connected", ""),
            // SIGTERM at 1000.
            ev(1_010, 0, "disconnected", "goaway"),
            ev(1_020, 1, "disconnected", "goaway"),
            ev(1_030, 2, "disconnected", "connection reset"),
            ev(1_500, 2, "attempt_failed", "connection refused"),
            ev(3_000, 0, "connected", ""),
            ev(3_500, 1, "connected", ""),
            ev(4_100, 2, "connected", ""),
            "not json".to_string(),
        ];
        let events = parse_events(&lines.join("\n"));
        assert_eq!(events.len(), 10);
        let r = analyse_restart(&events, 1_000, u64::MAX);
        assert_eq!((r.down, r.back, r.without_goaway, r.refused), (3, 3, 1, 1));
        assert_eq!((r.first_back_ms, r.last_back_ms), (2_000, 3_100));
        assert_eq!(r.outages, vec![1_990, 2_480, 3_070]);
        assert_eq!(r.since_sigterm, vec![2_000, 2_500, 3_100]);
        assert_eq!(r.per_second, vec![2, 1]);
        assert_eq!(r.peak(), 2);
        // 3 agents over 1.1 s.
        assert!((r.mean_rate() - 3.0 / 1.1).abs() < 1e-9);
        assert_eq!(quantile(&r.outages, 0.5), 2_480);
        assert_eq!(quantile(&r.outages, 1.0), 3_070);
        // A later window sees nothing of this restart.
        assert_eq!(
            analyse_restart(&events, 5_000, u64::MAX),
            Restart::default()
        );
    }

    #[test]
    fn metrics_text_is_parsed_with_labels() {
        let m = parse_metrics(
            "# HELP x y\nhop_proxy_tunnels_connected 1000\n\
             hop_proxy_tls_handshakes_total{result=\"failure\"} 3\n",
        );
        assert_eq!(m["hop_proxy_tunnels_connected"], 1000.0);
        assert_eq!(m["hop_proxy_tls_handshakes_total{result=\"failure\"}"], 3.0);
        assert_eq!(
            summary_line("x\nLoad test summary: 5 agents\n  gave up: 0\n"),
            "Load test summary: 5 agents; gave up: 0"
        );
    }
}
