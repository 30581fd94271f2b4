//! A proxy restart under many agents: `hop admin loadtest agents` holds N real tunnels (each agent
//! joined with its own host certificate), the appliance is stopped with SIGTERM (it tells every
//! agent to come back after its own jittered delay) and, after a second down, started again on
//! the same port, so that the agents that come back early are refused and retry with their
//! jittered backoff. Every agent must come back within a bound, none may give up, and the returns
//! must be spread: no second may see more than three times the mean reconnect rate.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::process::{Child, Command};
use std::time::{Duration, Instant, UNIX_EPOCH};

use crate::clock;
use crate::harness::*;

/// Agents simulated (override with HOP_TEST_RECONNECT_AGENTS).
const AGENTS: usize = 1000;
/// Every agent is back within this long of the SIGTERM.
const RECONNECT_BOUND: Duration = Duration::from_secs(90);
/// No second holds more than this many times the mean reconnect rate.
const MAX_PEAK_TO_MEAN: f64 = 3.0;
/// How long the appliance stays down at least (a quick restart): the agents whose goaway delay
/// ends sooner are refused and retry with their backoff.
const DOWNTIME: Duration = Duration::from_secs(1);

/// The load test's process, interrupted (then killed) when the test ends, pass or fail.
struct Loadtest(Child);

impl Drop for Loadtest {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn now_ms() -> u64 {
    clock::wall_now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// `hop_proxy_tunnels_connected` from `/metrics`, or `None` while the appliance is down.
fn tunnels_connected(a: &Appliance) -> Option<u64> {
    let mut s = std::net::TcpStream::connect(&a.diag).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {}\r\n\r\n", a.diag).ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    resp.lines()
        .find_map(|l| l.strip_prefix("hop_proxy_tunnels_connected "))
        .and_then(|v| v.trim().parse().ok())
}

/// Waits until the proxy holds `n` tunnels, at most until `deadline`; false if it never did.
fn wait_for_tunnels(a: &Appliance, lt: &mut Loadtest, n: u64, deadline: Instant) -> bool {
    loop {
        if tunnels_connected(a) == Some(n) {
            return true;
        }
        if let Ok(Some(status)) = lt.0.try_wait() {
            panic!("the load test exited early: {status}");
        }
        if clock::monotonic_now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn proxy_restart_under_many_agents_all_come_back_spread_out() {
    let n: usize = std::env::var("HOP_TEST_RECONNECT_AGENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(AGENTS);
    // Joins count against the per-IP login rate limit; N agents join from one address here.
    let mut a = Appliance::start("  login:\n    attempts_per_ip_per_minute: 1000000\n");
    let tok: serde_json::Value = serde_json::from_str(
        a.ok(&[
            "admin", "tokens", "add", "--type", "app", "--ttl", "1h", "--format", "json",
        ])
        .trim(),
    )
    .unwrap();
    let token = tok["token"].as_str().unwrap().to_string();
    let dir = a.dir.path().to_path_buf();
    let report = dir.join("reconnects.jsonl");
    let out_path = dir.join("loadtest.out");
    let mut lt = Loadtest(
        Command::new(HOP)
            .args(["admin", "loadtest", "agents", "--count", &n.to_string()])
            .args(["--proxy", &a.addr, "--ca-pin", &a.pin, "--token", &token])
            .arg("--report-reconnects")
            .arg(&report)
            .env_remove("HOP_DATA_DIR")
            .env("HOP_LOG", "error")
            .stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(std::fs::File::create(dir.join("loadtest.err")).unwrap())
            .spawn()
            .unwrap(),
    );
    let loadtest_output = || std::fs::read_to_string(&out_path).unwrap_or_default();

    let started = clock::monotonic_now();
    assert!(
        wait_for_tunnels(&a, &mut lt, n as u64, started + Duration::from_secs(60)),
        "{n} agents did not connect in 60 s: {:?} tunnels\n--- load test ---\n{}",
        tunnels_connected(&a),
        loadtest_output()
    );
    eprintln!(
        "{n} agents joined and connected in {:.1} s",
        clock::since(started).as_secs_f64()
    );

    // Restart: SIGTERM (goaway to every agent with its own delay), start on the same port.
    let sigterm_ms = now_ms();
    let restart = clock::monotonic_now();
    let status = a.stop();
    assert!(status.success(), "hop exited with {status} on SIGTERM");
    let stopped_in = clock::since(restart);
    std::thread::sleep(DOWNTIME.saturating_sub(stopped_in));
    a.restart_same_port();
    let down_for = clock::since(restart);
    let all_back = wait_for_tunnels(&a, &mut lt, n as u64, restart + RECONNECT_BOUND);
    let back_after = clock::since(restart);

    // Stop the load test: it writes its summary and flushes the report.
    let _ = Command::new("kill")
        .args(["-INT", &lt.0.id().to_string()])
        .status();
    let deadline = clock::monotonic_now() + Duration::from_secs(20);
    while lt.0.try_wait().unwrap().is_none() {
        assert!(
            clock::monotonic_now() < deadline,
            "the load test did not stop on SIGINT"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = loadtest_output();
    assert!(
        all_back,
        "not all {n} agents came back within {RECONNECT_BOUND:?}: {:?} tunnels\n--- load test ---\n{output}",
        tunnels_connected(&a)
    );
    assert!(
        output.contains("gave up:         0\n"),
        "some agents gave up:\n{output}"
    );

    // Per agent: its first disconnect after the SIGTERM, and its first connect after that.
    let mut down: HashMap<u64, u64> = HashMap::new();
    let mut back: HashMap<u64, u64> = HashMap::new();
    let mut refused = 0;
    let mut without_goaway = 0;
    for line in std::fs::read_to_string(&report).unwrap().lines() {
        let e: serde_json::Value = serde_json::from_str(line).unwrap();
        let (agent, t) = (e["agent"].as_u64().unwrap(), e["t_ms"].as_u64().unwrap());
        match e["event"].as_str().unwrap() {
            "gave_up" => panic!("agent {agent} gave up: {line}"),
            "disconnected" if t >= sigterm_ms => {
                if let std::collections::hash_map::Entry::Vacant(v) = down.entry(agent) {
                    v.insert(t);
                    if e["reason"] != "goaway" {
                        without_goaway += 1;
                    }
                }
            }
            "connected" if down.contains_key(&agent) => {
                back.entry(agent).or_insert(t);
            }
            "attempt_failed" if t >= sigterm_ms => refused += 1,
            _ => {}
        }
    }
    assert_eq!(down.len(), n, "every agent must see the restart");
    assert_eq!(back.len(), n, "every agent must reconnect");
    // The reconnect window: from the first agent back to the last.
    let first_back = *back.values().min().unwrap();
    let last_back = *back.values().max().unwrap();
    let window_s = (last_back - first_back) as f64 / 1000.0;
    let mean = n as f64 / window_s.max(1.0);
    let mut per_second: BTreeMap<u64, usize> = BTreeMap::new();
    for t in back.values() {
        *per_second.entry((t - first_back) / 1000).or_default() += 1;
    }
    let peak = per_second.values().copied().max().unwrap_or(0);
    let mut outages: Vec<u64> = back.iter().map(|(a, t)| t - down[a]).collect();
    outages.sort_unstable();
    let pct = |q: f64| outages[((outages.len() - 1) as f64 * q).round() as usize];
    let mut histogram = String::new();
    for s in 0..=per_second.keys().max().copied().unwrap_or(0) {
        let c = per_second.get(&s).copied().unwrap_or(0);
        histogram.push_str(&format!(
            "  {s:>3} s  {c:>5}  {}\n",
            "#".repeat(c * 60 / peak.max(1))
        ));
    }
    eprintln!(
        "proxy restart under {n} agents: stopped in {:.1} s, serving again after {:.1} s, all back after {:.1} s\n\
         {without_goaway} agents lost their tunnel without a goaway; {refused} attempts refused while it was down (each retried after the agents' backoff)\n\
         first agent back {:.1} s after the SIGTERM; reconnects over {window_s:.1} s: mean {mean:.0}/s, peak {peak}/s ({:.2}x the mean)\n\
         outage per agent: p50 {:.1} s, p90 {:.1} s, p99 {:.1} s, max {:.1} s\n\
         reconnects per second since the first one:\n{histogram}",
        stopped_in.as_secs_f64(),
        down_for.as_secs_f64(),
        back_after.as_secs_f64(),
        (first_back - sigterm_ms) as f64 / 1000.0,
        peak as f64 / mean,
        pct(0.5) as f64 / 1000.0,
        pct(0.9) as f64 / 1000.0,
        pct(0.99) as f64 / 1000.0,
        pct(1.0) as f64 / 1000.0,
    );
    assert!(
        refused > 0,
        "no agent came back while the proxy was down: the backoff path was not exercised"
    );
    assert!(
        last_back - sigterm_ms <= RECONNECT_BOUND.as_millis() as u64,
        "the last agent came back {} ms after the SIGTERM",
        last_back - sigterm_ms
    );
    assert!(
        peak as f64 <= MAX_PEAK_TO_MEAN * mean,
        "a reconnect storm: {peak} in one second against a mean of {mean:.0}/s\n{histogram}"
    );
}
