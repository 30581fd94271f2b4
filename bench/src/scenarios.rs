//! The scenarios: what each one starts, how it interleaves the contenders and repetitions, what it
//! samples, and the table it prints.
//!
//! Every scenario starts its own target (a sink or an echo server in this process), then every
//! contender (each keeps its processes up for the whole run), then runs repetition by
//! repetition, contender by contender inside each repetition, so that slow drifts of a noisy
//! machine spread over all contenders alike. CPU is sampled per process at the start and end of
//! each measured window; memory is read from VmRSS.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;

use crate::contender::{Contender, Role, cpu_delta};
use crate::hop::{self, HopOptions};
use crate::load::{self, Echo, Sink};
use crate::peers::{self, Resumption};
use crate::pki::Pki;
use crate::procs;
use crate::report::{Report, Row, Sample, num, ratio};

/// What every scenario needs: the hop binary and options, the peers' binaries and certificates.
pub struct Env {
    pub hop: HopOptions,
    pub haproxy: Option<PathBuf>,
    pub nginx: Option<PathBuf>,
    pub pki: Pki,
    pub repeat: usize,
    pub window: Duration,
    pub warmup: Duration,
    pub _dir: tempfile::TempDir,
}

/// A CPU snapshot of a contender's processes, this process, and the whole machine.
pub struct Snap {
    cpu: BTreeMap<Role, f64>,
    machine: f64,
}

fn snap(c: &Contender) -> Snap {
    Snap {
        cpu: c.cpu(),
        machine: procs::machine_busy_seconds().unwrap_or(f64::NAN),
    }
}

/// Fills the CPU figures of a sample from two snapshots; `unattributed_cpu_s` is the machine's
/// busy time that none of the path's processes nor the harness was charged for (other
/// processes on a shared machine, and interrupt/softirq time not charged to any process).
fn fill_cpu(s: &mut Sample, a: &Snap, b: &Snap) {
    s.cpu = cpu_delta(&a.cpu, &b.cpu);
    let ours: f64 = s.cpu.values().sum();
    let machine = b.machine - a.machine;
    s.extra.insert("machine_cpu_s".into(), machine);
    s.extra.insert("unattributed_cpu_s".into(), machine - ours);
}

/// Starts the named contenders towards `target`; a peer that is not installed is skipped (noted).
pub fn start_contenders(
    names: &[String],
    env: &Env,
    target: SocketAddr,
    notes: &mut Vec<String>,
) -> anyhow::Result<Vec<Contender>> {
    let mut out = Vec::new();
    for name in names {
        eprintln!("hop-bench: starting {name}");
        let c = match name.as_str() {
            "direct" => Contender::direct(target),
            "hop" => hop::start(&env.hop, target)?,
            "haproxy" | "haproxy-resume" => {
                let Some(bin) = &env.haproxy else {
                    notes.push(format!("{name}: skipped, HAProxy is not installed"));
                    continue;
                };
                let res = if name == "haproxy" {
                    Resumption::Off
                } else {
                    Resumption::On
                };
                peers::haproxy(bin, &env.pki, target, res, name)?
            }
            "nginx" => {
                let Some(bin) = &env.nginx else {
                    notes.push(
                        "nginx: skipped, nginx (with the stream module) is not installed".into(),
                    );
                    continue;
                };
                peers::nginx(bin, &env.pki, target)?
            }
            other => bail!(
                "unknown contender {other:?}; expected direct, hop, haproxy, haproxy-resume or nginx"
            ),
        };
        out.push(c);
    }
    Ok(out)
}

/// Runs `f` for every repetition × case × live contender, interleaved; a contender whose process
/// died is noted and left out of later runs instead of ending the scenario.
fn interleave<C: Clone + ToString>(
    env: &Env,
    scenario: &str,
    cases: &[C],
    contenders: &[Contender],
    report: &mut Report,
    mut f: impl FnMut(&Contender, &C) -> anyhow::Result<Sample>,
) {
    let mut dead: Vec<String> = Vec::new();
    for rep in 1..=env.repeat {
        for case in cases {
            for c in contenders {
                if dead.contains(&c.name) {
                    continue;
                }
                if let Err(e) = c.check_alive() {
                    report
                        .notes
                        .push(format!("{e:#}; later runs of it skipped"));
                    dead.push(c.name.clone());
                    continue;
                }
                eprintln!(
                    "hop-bench: {scenario} {}/{}: {} [{}]",
                    rep,
                    env.repeat,
                    c.name,
                    case.to_string()
                );
                let sample = f(c, case).unwrap_or_else(|e| Sample {
                    value: f64::NAN,
                    errors: 1,
                    first_error: Some(format!("{e:#}")),
                    ..Default::default()
                });
                if let Some(e) = &sample.first_error {
                    eprintln!("hop-bench:   {} errors, first: {e}", sample.errors);
                }
                report
                    .row_mut(&case.to_string(), &c.name)
                    .samples
                    .push(sample);
            }
        }
    }
}

fn header(cols: &[&str]) -> Vec<String> {
    cols.iter().map(|c| c.to_string()).collect()
}

/// The reference row's median of `f` in the same case (NaN when absent).
fn reference(r: &Report, case: &str, who: &str, f: impl Fn(&Sample) -> f64) -> f64 {
    r.row(case, who).map(|row| row.med(f)).unwrap_or(f64::NAN)
}

fn per_s(s: &Sample, key: &str) -> f64 {
    s.extra(key) / s.seconds
}

fn first_errors(r: &Report) -> Vec<String> {
    r.rows
        .iter()
        .filter_map(|row| {
            row.samples
                .iter()
                .find_map(|s| s.first_error.clone())
                .map(|e| {
                    format!(
                        "{} [{}]: {} error(s); first: {e}",
                        row.contender,
                        row.case,
                        row.errors()
                    )
                })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// relay

pub fn relay(
    env: &Env,
    names: &[String],
    streams: &[usize],
    report: &mut Report,
) -> anyhow::Result<()> {
    let sink = Sink::start()?;
    let contenders = start_contenders(names, env, sink.addr, &mut report.notes)?;
    report.contenders = contenders.iter().map(info).collect();
    interleave(env, "relay", streams, &contenders, report, |c, &n| {
        let w = load::blast(c.entry, n, env.warmup, env.window, &sink, || snap(c))?;
        let mut s = Sample {
            value: w.work as f64 / 1e6 / w.seconds,
            seconds: w.seconds,
            work: w.work as f64 / 1e9,
            errors: w.errors,
            first_error: w.first_error,
            ..Default::default()
        };
        fill_cpu(&mut s, &w.start, &w.end);
        Ok(s)
    });
    let per_gb = |role: &'static str| move |s: &Sample| s.cpu(role) / s.work;
    let eff_proxy = |s: &Sample| s.work * 1000.0 / s.cpu("proxy");
    let eff_pa = |s: &Sample| s.work * 1000.0 / (s.cpu("proxy") + s.cpu("agent"));
    let mut t = vec![header(&[
        "streams",
        "contender",
        "MB/s",
        "spread",
        "× direct",
        "proxy CPU-s/GB",
        "agent CPU-s/GB",
        "client CPU-s/GB",
        "loadgen CPU-s/GB",
        "MB per proxy CPU-s",
        "× haproxy",
        "MB per (proxy+agent) CPU-s",
        "× haproxy",
        "unattributed CPU-s/s",
        "errors",
    ])];
    for row in &report.rows {
        let direct = reference(report, &row.case, "direct", |s| s.value);
        let h_eff = reference(report, &row.case, "haproxy", eff_proxy);
        let h_pa = reference(report, &row.case, "haproxy", eff_pa);
        t.push(vec![
            row.case.clone(),
            row.contender.clone(),
            num(row.med(|s| s.value), 0),
            row.spread(|s| s.value, 0),
            ratio(row.med(|s| s.value), direct),
            num(row.med(per_gb("proxy")), 2),
            num(row.med(per_gb("agent")), 2),
            num(row.med(per_gb("client")), 2),
            num(row.med(per_gb("loadgen")), 2),
            num(row.med(eff_proxy), 0),
            ratio(row.med(eff_proxy), h_eff),
            num(row.med(eff_pa), 0),
            ratio(row.med(eff_pa), h_pa),
            num(row.med(|s| per_s(s, "unattributed_cpu_s")), 2),
            row.errors().to_string(),
        ]);
    }
    report.table = t;
    report.notes.extend(first_errors(report));
    report.notes.push(
        "MB/s = bytes the target received in the window / window (1 MB = 10^6 B); CPU-s/GB = CPU \
         seconds of that role's process(es) in the window per 10^9 bytes moved; \"× haproxy\" \
         compares work per CPU-second with the full-handshake HAProxy chain in the same run"
            .into(),
    );
    drop(contenders);
    Ok(())
}

fn info(c: &Contender) -> crate::report::ContenderInfo {
    crate::report::ContenderInfo {
        name: c.name.clone(),
        describe: c.describe.clone(),
    }
}

// ---------------------------------------------------------------------------------------------
// handshake

pub fn handshake(
    env: &Env,
    names: &[String],
    concurrency: usize,
    report: &mut Report,
) -> anyhow::Result<()> {
    let echo = Echo::start()?;
    let contenders = start_contenders(names, env, echo.addr, &mut report.notes)?;
    report.contenders = contenders.iter().map(info).collect();
    let case = format!("c={concurrency}");
    interleave(env, "handshake", &[case], &contenders, report, |c, _| {
        let w = load::session_rate(c.entry, concurrency, env.warmup, env.window, || snap(c))?;
        load::wait_until_at_most(|| echo.active(), 0, Duration::from_secs(20));
        let mut s = Sample {
            value: w.work as f64 / w.seconds,
            seconds: w.seconds,
            work: w.work as f64,
            errors: w.errors,
            first_error: w.first_error,
            ..Default::default()
        };
        fill_cpu(&mut s, &w.start, &w.end);
        Ok(s)
    });
    let us_per = |role: &'static str| move |s: &Sample| s.cpu(role) * 1e6 / s.work;
    let eff_proxy = |s: &Sample| s.work / s.cpu("proxy");
    let eff_pa = |s: &Sample| s.work / (s.cpu("proxy") + s.cpu("agent"));
    let mut t = vec![header(&[
        "clients",
        "contender",
        "sessions/s",
        "spread",
        "× direct",
        "proxy CPU µs/session",
        "agent CPU µs/session",
        "client CPU µs/session",
        "loadgen CPU µs/session",
        "sessions per proxy CPU-s",
        "× haproxy",
        "sessions per (proxy+agent) CPU-s",
        "× haproxy",
        "unattributed CPU-s/s",
        "errors",
    ])];
    for row in &report.rows {
        let direct = reference(report, &row.case, "direct", |s| s.value);
        let h_eff = reference(report, &row.case, "haproxy", eff_proxy);
        let h_pa = reference(report, &row.case, "haproxy", eff_pa);
        t.push(vec![
            row.case.clone(),
            row.contender.clone(),
            num(row.med(|s| s.value), 0),
            row.spread(|s| s.value, 0),
            ratio(row.med(|s| s.value), direct),
            num(row.med(us_per("proxy")), 0),
            num(row.med(us_per("agent")), 0),
            num(row.med(us_per("client")), 0),
            num(row.med(us_per("loadgen")), 0),
            num(row.med(eff_proxy), 0),
            ratio(row.med(eff_proxy), h_eff),
            num(row.med(eff_pa), 0),
            ratio(row.med(eff_pa), h_pa),
            num(row.med(|s| per_s(s, "unattributed_cpu_s")), 2),
            row.errors().to_string(),
        ]);
    }
    report.table = t;
    report.notes.extend(first_errors(report));
    report.notes.push(
        "a session = connect to the entry, send 1 byte, read its echo from the target, close; \
         through a chain each session is a new TCP connection and a new TLS session on both TLS \
         links (hop: a new client→proxy TLS session, a pooled agent data connection, and the \
         agent's replacement TLS connection for its pool)"
            .into(),
    );
    drop(contenders);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// latency

pub fn latency(
    env: &Env,
    names: &[String],
    size: usize,
    report: &mut Report,
) -> anyhow::Result<()> {
    let echo = Echo::start()?;
    let contenders = start_contenders(names, env, echo.addr, &mut report.notes)?;
    report.contenders = contenders.iter().map(info).collect();
    let case = format!("{size} B");
    interleave(env, "latency", &[case], &contenders, report, |c, _| {
        let (w, mut rtts) = load::pingpong(c.entry, size, env.warmup, env.window, || snap(c))?;
        load::wait_until_at_most(|| echo.active(), 0, Duration::from_secs(20));
        rtts.sort_unstable();
        let us = |p: f64| load::percentile(&rtts, p) as f64 / 1000.0;
        let mean = rtts.iter().sum::<u64>() as f64 / rtts.len().max(1) as f64 / 1000.0;
        let mut s = Sample {
            value: us(50.0),
            seconds: w.seconds,
            work: w.work as f64,
            ..Default::default()
        };
        s.extra.insert("p90_us".into(), us(90.0));
        s.extra.insert("p99_us".into(), us(99.0));
        s.extra.insert("p999_us".into(), us(99.9));
        s.extra.insert("max_us".into(), us(100.0));
        s.extra.insert("mean_us".into(), mean);
        fill_cpu(&mut s, &w.start, &w.end);
        Ok(s)
    });
    let mut t = vec![header(&[
        "size",
        "contender",
        "p50 µs",
        "p50 spread",
        "p99 µs",
        "p99.9 µs",
        "mean µs",
        "p50 × direct",
        "round trips/s",
        "proxy CPU µs per round trip",
        "unattributed CPU-s/s",
        "errors",
    ])];
    for row in &report.rows {
        let direct = reference(report, &row.case, "direct", |s| s.value);
        t.push(vec![
            row.case.clone(),
            row.contender.clone(),
            num(row.med(|s| s.value), 1),
            row.spread(|s| s.value, 1),
            num(row.med(|s| s.extra("p99_us")), 1),
            num(row.med(|s| s.extra("p999_us")), 1),
            num(row.med(|s| s.extra("mean_us")), 1),
            ratio(row.med(|s| s.value), direct),
            num(row.med(|s| s.work / s.seconds), 0),
            num(row.med(|s| s.cpu("proxy") * 1e6 / s.work), 1),
            num(row.med(|s| per_s(s, "unattributed_cpu_s")), 2),
            row.errors().to_string(),
        ]);
    }
    report.table = t;
    report.notes.extend(first_errors(report));
    report.notes.push(format!(
        "one connection per contender; each round trip writes {size} bytes and reads the same {size} \
         bytes back from the echo target; percentiles by nearest rank over every round trip of \
         the window, then the median across repetitions"
    ));
    drop(contenders);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// idle

pub fn idle(
    env: &Env,
    names: &[String],
    sessions: usize,
    report: &mut Report,
) -> anyhow::Result<()> {
    let echo = Echo::start()?;
    let contenders = start_contenders(names, env, echo.addr, &mut report.notes)?;
    report.contenders = contenders.iter().map(info).collect();
    // Each contender's memory before its first session (after a small warm-up), per role.
    let mut baselines: BTreeMap<String, BTreeMap<Role, u64>> = BTreeMap::new();
    let openers = 8;
    let case = sessions.to_string();
    interleave(env, "idle", &[case], &contenders, report, |c, _| {
        if !baselines.contains_key(&c.name) {
            let warm = load::open_sessions(c.entry, 32, openers)?;
            drop(warm);
            load::wait_until_at_most(|| echo.active(), 0, Duration::from_secs(20));
            std::thread::sleep(Duration::from_secs(2));
            baselines.insert(c.name.clone(), c.rss());
        }
        let base = baselines.get(&c.name).cloned().unwrap_or_default();
        let t0 = crate::clock::monotonic_now();
        let a = snap(c);
        let open = load::open_sessions(c.entry, sessions, openers)?;
        let b = snap(c);
        let open_s = crate::clock::since(t0).as_secs_f64();
        // Let pools refill and lazy work finish before reading memory.
        std::thread::sleep(Duration::from_secs(2));
        let held = c.rss();
        let still_open = echo.active();
        drop(open);
        load::wait_until_at_most(|| echo.active(), 0, Duration::from_secs(30));
        std::thread::sleep(Duration::from_secs(1));
        let after = c.rss();
        let kib = |m: &BTreeMap<Role, u64>, r: Role| m.get(&r).copied().map(|v| v as f64);
        let per = |r: Role| {
            (kib(&held, r).unwrap_or(f64::NAN) - kib(&base, r).unwrap_or(f64::NAN))
                / sessions as f64
        };
        let mut s = Sample {
            value: per(Role::Proxy),
            seconds: open_s,
            work: sessions as f64,
            ..Default::default()
        };
        for r in [Role::Client, Role::Proxy, Role::Agent] {
            s.extra
                .insert(format!("{}_kib_per_session", r.name()), per(r));
            s.extra.insert(
                format!("{}_rss_before_kib", r.name()),
                kib(&base, r).unwrap_or(f64::NAN),
            );
            s.extra.insert(
                format!("{}_rss_open_kib", r.name()),
                kib(&held, r).unwrap_or(f64::NAN),
            );
            s.extra.insert(
                format!("{}_rss_after_close_kib", r.name()),
                kib(&after, r).unwrap_or(f64::NAN),
            );
        }
        s.extra
            .insert("target_connections_open".into(), still_open as f64);
        if still_open < sessions {
            s.errors = (sessions - still_open) as u64;
            s.first_error = Some(format!(
                "only {still_open} of {sessions} sessions reached the target"
            ));
        }
        fill_cpu(&mut s, &a, &b);
        Ok(s)
    });
    let mib = |k: f64| num(k / 1024.0, 1);
    let mut t = vec![header(&[
        "sessions",
        "contender",
        "proxy KiB/session",
        "spread",
        "× haproxy",
        "agent KiB/session",
        "client KiB/session",
        "proxy RSS MiB before / open / after close",
        "sessions opened/s",
        "proxy CPU µs per session opened",
        "errors",
    ])];
    for row in &report.rows {
        let h = reference(report, &row.case, "haproxy", |s| s.value);
        let rss = |k: &'static str| row.med(move |s| s.extra(k));
        t.push(vec![
            row.case.clone(),
            row.contender.clone(),
            num(row.med(|s| s.value), 1),
            row.spread(|s| s.value, 1),
            ratio(row.med(|s| s.value), h),
            num(row.med(|s| s.extra("agent_kib_per_session")), 1),
            num(row.med(|s| s.extra("client_kib_per_session")), 1),
            format!(
                "{} / {} / {}",
                mib(rss("proxy_rss_before_kib")),
                mib(rss("proxy_rss_open_kib")),
                mib(rss("proxy_rss_after_close_kib"))
            ),
            num(row.med(|s| s.work / s.seconds), 0),
            num(row.med(|s| s.cpu("proxy") * 1e6 / s.work), 0),
            row.errors().to_string(),
        ]);
    }
    report.table = t;
    report.notes.extend(first_errors(report));
    report.notes.push(format!(
        "KiB/session = (VmRSS with {sessions} established idle sessions − VmRSS before the first \
         session, after a 32-session warm-up) / {sessions}, per process role; each session was \
         proven established by one echoed byte and then left idle for 2 s before the reading"
    ));
    drop(contenders);
    Ok(())
}

/// Adds a last column with the primary figure's ratio to a saved baseline's.
pub fn add_baseline_column(report: &mut Report, baseline: &Report) {
    let Some(head) = report.table.first_mut() else {
        return;
    };
    head.push(format!("÷ baseline ({})", baseline.meta.commit));
    let cells: Vec<String> = report
        .rows
        .iter()
        .map(|row: &Row| {
            let b = baseline
                .row(&row.case, &row.contender)
                .map(|r| r.med(|s| s.value))
                .unwrap_or(f64::NAN);
            ratio(row.med(|s| s.value), b)
        })
        .collect();
    for (line, cell) in report.table.iter_mut().skip(1).zip(cells) {
        line.push(cell);
    }
}
