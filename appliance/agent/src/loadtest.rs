//! `hop admin loadtest agents`: many simulated agents in one process, to measure a proxy.
//!
//! This module owns the simulated agents' life: an identity for each (a real join with the token,
//! a bounded number at once, cached under `--data-dir` so that a rerun does not join again), each
//! one's control connection run by the agents' own code ([`super::control_loop`]: TLS with its
//! own host certificate, a hello announcing one app — or, with `--nodes K`, a node agent's hello
//! announcing K SSH nodes —, heartbeats, goaway, the same jittered backoff), and what it saw: a progress line per second, a summary at the end or on Ctrl-C, and
//! optionally every connect and disconnect as JSON lines. Simulated agents keep no data
//! connections (no warm pool), so sessions to their apps or nodes cannot start; they listen on nothing,
//! and once they have an identity they never give up reconnecting, like real agents. The load
//! test never uses the admin socket or the admin API: it is a client of the proxy only.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use tokio::sync::{RwLock, Semaphore, watch};

use super::backoff::Backoff;
use super::identity::{self, AgentIdentity, IdentityError, JoinError};
use super::{AgentSettings, AppSpec, ControlObserver, Shared};
use hop_net::connect::error_chain;
use hop_net::files::FileError;
use hop_net::pem::PemError;
use hop_net::trust::Trust;
use hop_platform::clock;
use hop_protocols::tunnel::ResourceAnnouncement;

/// The role simulated agents join as and announce, unless they announce nodes (`--nodes`).
const ROLE: &str = "app";
/// The role of simulated agents that announce nodes.
const NODE_ROLE: &str = "node";
/// Join attempts per agent before it gives up.
const JOIN_ATTEMPTS: u32 = 4;
/// A cached identity with less left than this is renewed (or joined again once expired).
const RENEW_WITHIN: Duration = Duration::from_secs(24 * 3600);
/// How many simulated agents start their first connection per second (those with a cached
/// identity would otherwise all dial in the same instant).
const START_RATE_PER_SEC: u64 = 1000;

/// What `hop admin loadtest agents` was asked to do (the binary builds it from the flags).
#[derive(Debug, Clone)]
pub struct LoadtestSettings {
    pub count: usize,
    pub proxy: String,
    /// For joining; tunnels then trust the host CA the join returned.
    pub trust: Trust,
    /// The pinned CA, to check that cached identities belong to this cluster.
    pub pin: Option<String>,
    pub token: hop_config::Secret,
    /// `<data dir>/loadtest-agents`, when identities are cached.
    pub cache_dir: Option<PathBuf>,
    pub duration: Option<Duration>,
    pub heartbeat: Option<Duration>,
    pub join_concurrency: usize,
    pub report: Option<PathBuf>,
    /// Nodes each simulated agent announces (`--nodes`): 0 makes app agents (one app each),
    /// more makes node agents announcing that many SSH nodes.
    pub nodes: usize,
    /// The number of this process's first agent in names (`--first-index`), so that load tests
    /// run side by side on one cluster claim distinct node names.
    pub first_index: usize,
}

impl LoadtestSettings {
    /// The role simulated agents join as.
    fn role(&self) -> &'static str {
        if self.nodes > 0 { NODE_ROLE } else { ROLE }
    }

    /// Agent `index`'s name: its one app's, or the name its node certificate asks for.
    fn agent_name(&self, index: usize) -> String {
        format!("loadtest-{:05}", self.first_index.saturating_add(index))
    }

    /// The nodes agent `index` announces when the load test simulates node agents: `nodes` of
    /// them, named after the agent, none reachable (the address is the discard port).
    fn node_announcements(&self, index: usize) -> Vec<ResourceAnnouncement> {
        (0..self.nodes)
            .map(|k| ResourceAnnouncement {
                kind: NODE_ROLE.into(),
                name: format!("{}-{k:03}", self.agent_name(index)),
                labels: vec![("loadtest".into(), "true".into())],
                target: Some("127.0.0.1:9".into()),
            })
            .collect()
    }
}

/// Why the load test could not run: what [`run`] returns to `hop admin loadtest agents`.
#[derive(Debug, thiserror::Error)]
pub enum LoadtestError {
    /// The runtime or the signal handlers could not be set up (the machine's).
    #[error(transparent)]
    Setup(std::io::Error),
    /// The identity cache directory cannot be created (the disk's, or `--data-dir`).
    #[error(transparent)]
    Cache(#[from] FileError),
    /// `--report-reconnects` names a file that cannot be created.
    #[error("creating {}", path.display())]
    Report {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The first agent found no identity: a wrong token, pin or address. `reason` is the whole
    /// chain of causes, with a hint when the cluster's rate limit refused the join.
    #[error("simulated agent 0 could not get an identity: {reason}")]
    FirstIdentity { reason: String },
}

/// Why a simulated agent has no identity.
#[derive(Debug, thiserror::Error)]
enum SimulatedIdentityError {
    /// The cached identity cannot be read.
    #[error(transparent)]
    Cached(#[from] IdentityError),
    /// The cached identity's CA cannot be read.
    #[error(transparent)]
    CachedCa(#[from] PemError),
    /// The cache belongs to another cluster than `--ca-pin` names (the operator's).
    #[error(
        "the identities cached in {} belong to another cluster (CA pin {pin}); use another --data-dir or remove that directory",
        cache.display()
    )]
    OtherCluster { cache: PathBuf, pin: String },
    #[error(transparent)]
    Join(#[from] JoinError),
    #[error("the load test is stopping")]
    Stopping,
}

/// Runs the load test on its own runtime (one thread per core: the simulated agents' TLS is the
/// work) until `--duration` passes or a signal arrives.
pub fn run(settings: LoadtestSettings) -> Result<(), LoadtestError> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .map_err(LoadtestError::Setup)?
        .block_on(run_agents(settings))
}

fn unix_ms() -> u64 {
    clock::wall()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Every event of every agent, one JSON object a line (`--report-reconnects`).
struct Report {
    out: Mutex<BufWriter<File>>,
}

impl Report {
    fn create(path: &Path) -> Result<Self, LoadtestError> {
        let f = File::create(path).map_err(|source| LoadtestError::Report {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            out: Mutex::new(BufWriter::new(f)),
        })
    }

    fn record(&self, mut event: serde_json::Value) {
        if let Some(o) = event.as_object_mut() {
            o.insert("t_ms".into(), unix_ms().into());
        }
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        // A full disk must not stop the agents; the summary still counts everything.
        let _ = serde_json::to_writer(&mut *out, &event);
        let _ = out.write_all(b"\n");
    }

    fn flush(&self) {
        let _ = self.out.lock().unwrap_or_else(|p| p.into_inner()).flush();
    }
}

/// What all simulated agents did, counted as it happens.
struct Counters {
    started: Instant,
    count: usize,
    identities: AtomicUsize,
    joined: AtomicUsize,
    cached: AtomicUsize,
    /// Tunnels up now.
    connected: AtomicUsize,
    peak: AtomicUsize,
    /// Agents that have been up at least once.
    ever_up: AtomicUsize,
    /// When the last agent first came up, in ms since `started` (0: not yet).
    all_up_ms: AtomicU64,
    reconnects: AtomicU64,
    disconnects: AtomicU64,
    failed_attempts: AtomicU64,
    gave_up: AtomicUsize,
    /// Why the first agent that gave up did.
    first_give_up: Mutex<Option<String>>,
    /// Disconnect → connected again, per reconnect.
    outages: Mutex<Vec<Duration>>,
}

impl Counters {
    fn new(count: usize) -> Self {
        Self {
            started: clock::now(),
            count,
            identities: AtomicUsize::new(0),
            joined: AtomicUsize::new(0),
            cached: AtomicUsize::new(0),
            connected: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            ever_up: AtomicUsize::new(0),
            all_up_ms: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            failed_attempts: AtomicU64::new(0),
            gave_up: AtomicUsize::new(0),
            first_give_up: Mutex::new(None),
            outages: Mutex::new(Vec::new()),
        }
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(clock::since(self.started).as_millis()).unwrap_or(u64::MAX)
    }
}

/// One simulated agent's view of its control connection, fed by the agents' control loop.
struct SimulatedAgent {
    index: usize,
    host_id: String,
    counters: Arc<Counters>,
    report: Option<Arc<Report>>,
    up: bool,
    ever_up: bool,
    down_since: Option<Instant>,
}

impl ControlObserver for SimulatedAgent {
    fn up(&mut self) {
        let c = &self.counters;
        self.up = true;
        let now = c.connected.fetch_add(1, Ordering::Relaxed) + 1;
        c.peak.fetch_max(now, Ordering::Relaxed);
        let reconnect = self.ever_up;
        if reconnect {
            c.reconnects.fetch_add(1, Ordering::Relaxed);
        } else {
            self.ever_up = true;
            if c.ever_up.fetch_add(1, Ordering::Relaxed) + 1 == c.count {
                c.all_up_ms.store(c.elapsed_ms().max(1), Ordering::Relaxed);
            }
        }
        let outage = self.down_since.take().map(clock::since);
        if let Some(d) = outage {
            c.outages.lock().unwrap_or_else(|p| p.into_inner()).push(d);
        }
        if let Some(r) = &self.report {
            r.record(serde_json::json!({
                "agent": self.index,
                "event": "connected",
                "host_id": self.host_id,
                "reconnect": reconnect,
                "outage_ms": outage.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            }));
        }
    }

    fn down(&mut self, why: &str, retry_after: Duration) {
        let c = &self.counters;
        let retry_ms = u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX);
        let event = if self.up {
            self.up = false;
            self.down_since = Some(clock::now());
            c.connected.fetch_sub(1, Ordering::Relaxed);
            c.disconnects.fetch_add(1, Ordering::Relaxed);
            "disconnected"
        } else {
            c.failed_attempts.fetch_add(1, Ordering::Relaxed);
            "attempt_failed"
        };
        if let Some(r) = &self.report {
            r.record(serde_json::json!({
                "agent": self.index,
                "event": event,
                "reason": why,
                "retry_after_ms": retry_ms,
            }));
        }
    }
}

/// Agent `index`'s directory in the identity cache.
fn agent_dir(s: &LoadtestSettings, index: usize) -> Option<PathBuf> {
    s.cache_dir.as_ref().map(|d| d.join(format!("{index:05}")))
}

/// The cached identity of agent `index`, if it is usable (renewed when close to expiry).
async fn cached_identity(
    s: &LoadtestSettings,
    dir: &Path,
) -> Result<Option<AgentIdentity>, SimulatedIdentityError> {
    let Some(id) = identity::load(dir)? else {
        return Ok(None);
    };
    if let Some(pin) = &s.pin {
        let ca = hop_net::pem::parse_chain(&id.host_ca_pem)?;
        let theirs = ca
            .first()
            .and_then(|c| hop_ca::ca_pin(c.as_ref()).ok())
            .unwrap_or_default();
        if &theirs != pin {
            return Err(SimulatedIdentityError::OtherCluster {
                cache: dir.parent().unwrap_or(dir).to_path_buf(),
                pin: theirs,
            });
        }
    }
    let left = id
        .expires()
        .duration_since(clock::wall())
        .unwrap_or_default();
    if left > RENEW_WITHIN {
        return Ok(Some(id));
    }
    if left > Duration::from_secs(60) {
        return Ok(Some(identity::renew(dir, &s.proxy, &id).await?));
    }
    Ok(None)
}

/// An identity for agent `index`: cached, or joined (at most `joins` at once, retried).
async fn identity_for(
    s: &LoadtestSettings,
    index: usize,
    joins: &Semaphore,
    counters: &Counters,
) -> Result<AgentIdentity, SimulatedIdentityError> {
    let dir = agent_dir(s, index);
    if let Some(d) = &dir
        && let Some(id) = cached_identity(s, d).await?
    {
        counters.cached.fetch_add(1, Ordering::Relaxed);
        return Ok(id);
    }
    let mut backoff = Backoff::default();
    let mut attempt = 1;
    loop {
        let result = {
            let _permit = joins
                .acquire()
                .await
                .map_err(|_| SimulatedIdentityError::Stopping)?;
            identity::join_as(
                dir.as_deref(),
                &s.proxy,
                s.token.expose(),
                s.role(),
                &s.trust,
                // App agents are known by host id; node agents claim their name.
                &if s.nodes > 0 {
                    s.agent_name(index)
                } else {
                    String::new()
                },
            )
            .await
        };
        match result {
            Ok(id) => {
                counters.joined.fetch_add(1, Ordering::Relaxed);
                return Ok(id);
            }
            Err(e) if attempt >= JOIN_ATTEMPTS => return Err(e.into()),
            Err(e) => {
                tracing::debug!(agent = index, error = %error_chain(&e), "join failed; retrying");
                tokio::time::sleep(backoff.next_delay(rand::random::<f64>())).await;
                attempt += 1;
            }
        }
    }
}

/// The agent as the shared control-loop code sees it: one app (or `--nodes` nodes), no data
/// pool.
fn simulated(s: &LoadtestSettings, index: usize, id: AgentIdentity) -> Shared {
    let apps = if s.nodes > 0 {
        Vec::new()
    } else {
        vec![AppSpec {
            name: s.agent_name(index),
            // Never dialed: simulated agents keep no data connections.
            uri: "tcp://127.0.0.1:9".into(),
            labels: vec![("loadtest".into(), "true".into())],
            ..AppSpec::default()
        }]
    };
    Shared {
        settings: AgentSettings {
            proxy: s.proxy.clone(),
            token: hop_config::Secret::default(),
            ca_pin: None,
            insecure: false,
            data_dir: agent_dir(s, index).unwrap_or_default(),
            role: s.role().into(),
            apps,
            pool_size: 0,
            connection_count: 1,
            node: None,
            databases: Vec::new(),
            db_selectors: Vec::new(),
            db_audit: Default::default(),
            kube_clusters: Vec::new(),
        },
        identity: RwLock::new(id),
        heartbeat: s.heartbeat,
        node: std::sync::OnceLock::new(),
        db: std::sync::OnceLock::new(),
        kube: std::sync::OnceLock::new(),
        data_tls: Default::default(),
        apps: Default::default(),
        rekeyed: watch::Sender::new(0),
        links: Default::default(),
        simulated_nodes: s.node_announcements(index),
    }
}

/// A join error, with what to do when it is the cluster's per-IP rate limit (joins count as
/// login attempts: thousands of agents joining from one address need a higher limit).
fn join_hint(error: String) -> String {
    if error.contains("too many") {
        format!(
            "{error} (for load tests, raise auth_service.login.attempts_per_ip_per_minute on the cluster, or keep identities with --data-dir)"
        )
    } else {
        error
    }
}

/// Obtains agent `index`'s identity, then keeps its tunnel up until shutdown.
async fn run_one(
    s: Arc<LoadtestSettings>,
    index: usize,
    first: Option<AgentIdentity>,
    joins: Arc<Semaphore>,
    counters: Arc<Counters>,
    report: Option<Arc<Report>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let id = match first {
        Some(id) => id,
        None => {
            let got = tokio::select! {
                r = identity_for(&s, index, &joins, &counters) => r,
                _ = hop_platform::signals::until_shutdown(&mut shutdown) => return,
            };
            match got {
                Ok(id) => id,
                Err(e) => {
                    let why = join_hint(error_chain(&e));
                    tracing::error!(agent = index, error = %why, "simulated agent gave up: no identity");
                    counters.gave_up.fetch_add(1, Ordering::Relaxed);
                    counters
                        .first_give_up
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert_with(|| why.clone());
                    if let Some(r) = &report {
                        r.record(
                            serde_json::json!({"agent": index, "event": "gave_up", "reason": why}),
                        );
                    }
                    return;
                }
            }
        }
    };
    counters.identities.fetch_add(1, Ordering::Relaxed);
    // Spread first connections (cached identities are all ready at once).
    let start_at = counters.started
        + Duration::from_millis(
            u64::try_from(index)
                .unwrap_or(u64::MAX)
                .saturating_mul(1000)
                / START_RATE_PER_SEC,
        );
    tokio::select! {
        _ = tokio::time::sleep_until(start_at.into()) => {}
        _ = hop_platform::signals::until_shutdown(&mut shutdown) => return,
    }
    let observer = SimulatedAgent {
        index,
        host_id: id.meta.host_id.clone(),
        counters,
        report,
        up: false,
        ever_up: false,
        down_since: None,
    };
    super::control_loop(Arc::new(simulated(&s, index, id)), shutdown, observer).await;
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// The `q` quantile of sorted durations.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

fn progress_line(c: &Counters) -> String {
    format!(
        "[{:>5.0}s] connected {}/{}  identities {}  reconnects {}  disconnects {}  failed attempts {}  gave up {}",
        clock::since(c.started).as_secs_f64(),
        c.connected.load(Ordering::Relaxed),
        c.count,
        c.identities.load(Ordering::Relaxed),
        c.reconnects.load(Ordering::Relaxed),
        c.disconnects.load(Ordering::Relaxed),
        c.failed_attempts.load(Ordering::Relaxed),
        c.gave_up.load(Ordering::Relaxed),
    )
}

fn summary(s: &LoadtestSettings, c: &Counters, connected_at_end: usize) -> String {
    let mut outages = c.outages.lock().unwrap_or_else(|p| p.into_inner()).clone();
    outages.sort();
    let all_up = match c.all_up_ms.load(Ordering::Relaxed) {
        0 => "not all agents came up".to_string(),
        ms => format!("all first up after {}", secs(Duration::from_millis(ms))),
    };
    let outage_line = if outages.is_empty() {
        "none".to_string()
    } else {
        format!(
            "p50 {}, p90 {}, p99 {}, max {}",
            secs(quantile(&outages, 0.5)),
            secs(quantile(&outages, 0.9)),
            secs(quantile(&outages, 0.99)),
            secs(quantile(&outages, 1.0)),
        )
    };
    format!(
        "Load test summary: {n} simulated agents against {proxy}, {ran}\n\
         \x20 identities:      {ids} ({joined} joined, {cached} cached)\n\
         \x20 connected:       {connected_at_end} at the end, {peak} at peak; {all_up}\n\
         \x20 disconnects:     {disc}\n\
         \x20 reconnects:      {rec}\n\
         \x20 failed attempts: {failed}\n\
         \x20 gave up:         {gave_up}{first_reason}\n\
         \x20 outages (disconnect to connected again): {outage_line}",
        n = s.count,
        proxy = s.proxy,
        ran = secs(clock::since(c.started)),
        ids = c.identities.load(Ordering::Relaxed),
        joined = c.joined.load(Ordering::Relaxed),
        cached = c.cached.load(Ordering::Relaxed),
        peak = c.peak.load(Ordering::Relaxed),
        disc = c.disconnects.load(Ordering::Relaxed),
        rec = c.reconnects.load(Ordering::Relaxed),
        failed = c.failed_attempts.load(Ordering::Relaxed),
        gave_up = c.gave_up.load(Ordering::Relaxed),
        first_reason = c
            .first_give_up
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_deref()
            .map(|r| format!(" (first: {r})"))
            .unwrap_or_default(),
    )
}

async fn run_agents(s: LoadtestSettings) -> Result<(), LoadtestError> {
    // A control connection per agent, joins in flight, and some slack for files and the runtime.
    let wanted = u64::try_from(s.count)
        .unwrap_or(u64::MAX)
        .saturating_add(u64::try_from(s.join_concurrency).unwrap_or(0))
        .saturating_add(256);
    match hop_platform::raise_nofile_limit(wanted) {
        Ok(l) if l.now < wanted => eprintln!(
            "warning: {} agents need about {wanted} open files; the limit is {} (hard {}): raise it with ulimit -n",
            s.count, l.now, l.hard
        ),
        Ok(l) if l.now > l.before => {
            println!("Raised the open-files limit from {} to {}", l.before, l.now)
        }
        Ok(_) => {}
        Err(e) => eprintln!("warning: cannot read or raise the open-files limit: {e}"),
    }
    if let Some(d) = &s.cache_dir {
        hop_net::files::ensure_dir(d.parent().unwrap_or(d))?;
        hop_net::files::ensure_dir(d)?;
    }
    let report = s
        .report
        .as_deref()
        .map(Report::create)
        .transpose()?
        .map(Arc::new);
    let (stop_tx, stop_rx) = watch::channel(false);
    hop_platform::signals::watch_signals(stop_tx.clone(), || {}, || {})
        .map_err(LoadtestError::Setup)?;
    let counters = Arc::new(Counters::new(s.count));
    let joins = Arc::new(Semaphore::new(s.join_concurrency));
    let s = Arc::new(s);
    println!(
        "Starting {} simulated agents against {} (identities {})",
        s.count,
        s.proxy,
        match &s.cache_dir {
            Some(d) => format!("cached in {}", d.display()),
            None => "in memory only".into(),
        }
    );
    // The first agent alone: a wrong token, pin or address fails here, once, with its reason.
    let first =
        identity_for(&s, 0, &joins, &counters)
            .await
            .map_err(|e| LoadtestError::FirstIdentity {
                reason: join_hint(error_chain(&e)),
            })?;
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..s.count {
        tasks.spawn(run_one(
            s.clone(),
            index,
            (index == 0).then(|| first.clone()),
            joins.clone(),
            counters.clone(),
            report.clone(),
            stop_rx.clone(),
        ));
    }
    let deadline = s.duration.map(|d| counters.started + d);
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    let mut stop = stop_rx.clone();
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                println!("{}", progress_line(&counters));
                if let Some(r) = &report {
                    r.flush();
                }
                if deadline.is_some_and(|d| clock::now() >= d) {
                    break;
                }
            }
            _ = hop_platform::signals::until_shutdown(&mut stop) => break,
        }
    }
    let connected_at_end = counters.connected.load(Ordering::Relaxed);
    let _ = stop_tx.send(true);
    // Each agent says goodbye to the proxy (a goaway), as a real agent does when it stops.
    joins.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    if let Some(r) = &report {
        r.flush();
    }
    println!("{}", summary(&s, &counters, connected_at_end));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_sorted_durations() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&v, 0.5), Duration::from_millis(51));
        assert_eq!(quantile(&v, 1.0), Duration::from_millis(100));
        assert_eq!(quantile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn observer_counts_connects_disconnects_and_failed_attempts() {
        let counters = Arc::new(Counters::new(1));
        let mut a = SimulatedAgent {
            index: 0,
            host_id: "h".into(),
            counters: counters.clone(),
            report: None,
            up: false,
            ever_up: false,
            down_since: None,
        };
        a.down("connection refused", Duration::from_secs(1));
        a.up();
        assert_eq!(counters.connected.load(Ordering::Relaxed), 1);
        assert_ne!(counters.all_up_ms.load(Ordering::Relaxed), 0);
        a.down("goaway", Duration::from_secs(2));
        a.down("connection refused", Duration::from_secs(3));
        a.up();
        assert_eq!(counters.connected.load(Ordering::Relaxed), 1);
        assert_eq!(counters.peak.load(Ordering::Relaxed), 1);
        assert_eq!(counters.failed_attempts.load(Ordering::Relaxed), 2);
        assert_eq!(counters.disconnects.load(Ordering::Relaxed), 1);
        assert_eq!(counters.reconnects.load(Ordering::Relaxed), 1);
        assert_eq!(counters.outages.lock().unwrap().len(), 1);
    }
}
