//! Processes the harness starts, and what it reads about them from `/proc`.
//!
//! This module owns the life of every child process (hop, agents, `hop proxy app`, HAProxy, nginx):
//! each is a [`Spawned`] that is killed by PID when dropped, so a scenario that fails half-way
//! still stops everything it started. Where util-linux `setpriv` is present, children also get
//! `SIGKILL` as their parent-death signal, so even a harness killed with `SIGKILL` leaves nothing
//! behind. It reads CPU time (`/proc/PID/stat` utime+stime) and resident memory
//! (`/proc/PID/status` VmRSS); it never signals a process it did not start.

use std::fs::File;
use std::io::Read as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};

use crate::clock::monotonic_now;

/// A child process that is killed (by its PID) and reaped when dropped.
#[derive(Debug)]
pub struct Spawned {
    pub name: String,
    child: Child,
    pub log: PathBuf,
}

impl Spawned {
    /// Starts `cmd` with standard output and error appended to `log` (standard output is left
    /// alone when the caller already set it, e.g. to read a banner).
    pub fn start(
        name: &str,
        mut cmd: Command,
        log: &Path,
        keep_stdout: bool,
    ) -> anyhow::Result<Self> {
        let f = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        if !keep_stdout {
            cmd.stdout(Stdio::from(f.try_clone()?));
        }
        cmd.stderr(Stdio::from(f)).stdin(Stdio::null());
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({cmd:?})"))?;
        Ok(Self {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Sends `signal` (a name `kill` knows: `TERM`, `INT`) to this process by its PID, then waits
    /// at most `limit` for it to exit. `None`: still running (it is killed when dropped).
    pub fn signal_and_wait(
        &mut self,
        signal: &str,
        limit: Duration,
    ) -> anyhow::Result<Option<std::process::ExitStatus>> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(Some(status));
        }
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .context("running kill")?;
        if !sent.success() {
            bail!("kill -{signal} {} ({}) failed", self.pid(), self.name);
        }
        let deadline = monotonic_now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            if monotonic_now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// An error naming the process and the end of its log, if it has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}); end of its log {}:\n{}",
                self.name,
                self.log.display(),
                log_tail(&self.log, 30)
            );
        }
        Ok(())
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last `lines` lines of a log file.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn have_setpriv() -> bool {
    static HAVE: OnceLock<bool> = OnceLock::new();
    *HAVE.get_or_init(|| {
        Command::new("setpriv")
            .arg("--help")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("--pdeathsig"))
            .unwrap_or(false)
    })
}

/// A command for a long-running child. With `setpriv`, the child gets SIGKILL when the harness
/// dies (setpriv execs the program, so the PID is the program's). The parent-death signal follows
/// the spawning thread: long-running children are started from the main thread only.
pub fn command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    if have_setpriv() {
        let mut c = Command::new("setpriv");
        c.args(["--pdeathsig", "KILL", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Like [`command`], run as the OS user `user` when given (the harness must be root): with
/// `setpriv` the user is switched and the program exec'd, so the PID is still the program's.
pub fn command_as(user: Option<&str>, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let Some(user) = user else {
        return command(program);
    };
    if have_setpriv() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid", user, "--regid", user, "--init-groups"])
            .args(["--pdeathsig", "KILL", "--"])
            .arg(program);
        c
    } else {
        let mut c = Command::new("runuser");
        c.args(["-u", user, "--"]).arg(program);
        c
    }
}

fn clock_ticks() -> f64 {
    static TCK: OnceLock<f64> = OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Parses utime+stime (clock ticks) out of a `/proc/PID/stat` line.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces and parentheses: fields restart after the last ')'.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Parses cutime+cstime (clock ticks: the CPU time of the children it has waited for) out of a
/// `/proc/PID/stat` line.
pub fn parse_stat_child_ticks(stat: &str) -> Option<u64> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // cutime is field 16, cstime field 17.
    let cutime: u64 = f.get(13)?.parse().ok()?;
    let cstime: u64 = f.get(14)?.parse().ok()?;
    Some(cutime + cstime)
}

/// The parent PID out of a `/proc/PID/stat` line.
pub fn parse_stat_ppid(stat: &str) -> Option<u32> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// CPU seconds the children a process has waited for (reaped) have used.
pub fn children_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(parse_stat_child_ticks(&stat)? as f64 / clock_ticks())
}

/// The PIDs whose parent is `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| parse_stat_ppid(&s))
                == Some(pid)
        })
        .collect()
}

/// CPU seconds of a server that forks a process per connection (PostgreSQL): the process itself,
/// its live children, and the children it has already reaped. A child alive at one reading and
/// reaped by the next moves from the live sum into the parent's reaped total, so the difference
/// between two readings is right as long as the children that ended were reaped before the second.
pub fn tree_cpu_seconds(pid: u32) -> Option<f64> {
    let own = cpu_seconds(pid)? + children_cpu_seconds(pid)?;
    Some(
        own + children(pid)
            .into_iter()
            .filter_map(cpu_seconds)
            .sum::<f64>(),
    )
}

/// CPU seconds (user + system, all threads) a process has used so far.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(parse_stat_ticks(&stat)? as f64 / clock_ticks())
}

/// Nanoseconds each live thread of a process has run, by thread id: the first field of
/// `/proc/PID/task/TID/schedstat`. Finer than clock ticks ([`cpu_seconds`], 10 ms each), for
/// figures of a few milliseconds; see [`threads_cpu_seconds_since`].
pub fn threads_cpu_ns(pid: u32) -> std::collections::BTreeMap<u32, u64> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Default::default();
    };
    tasks
        .filter_map(|e| e.ok())
        .filter_map(|t| {
            let tid = t.file_name().to_str()?.parse::<u32>().ok()?;
            let text = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
            Some((tid, text.split_whitespace().next()?.parse::<u64>().ok()?))
        })
        .collect()
}

/// CPU seconds a process's threads have run since `before` ([`threads_cpu_ns`]): each live
/// thread's time since then (all of it for threads started since). What threads that ended in
/// between ran after `before` is missing, so this can only under-count; `None` when the
/// process's threads cannot be read.
pub fn threads_cpu_seconds_since(
    pid: u32,
    before: &std::collections::BTreeMap<u32, u64>,
) -> Option<f64> {
    let now = threads_cpu_ns(pid);
    if now.is_empty() {
        return None;
    }
    let ns: u64 = now
        .iter()
        .map(|(tid, ns)| ns.saturating_sub(before.get(tid).copied().unwrap_or(0)))
        .sum();
    Some(ns as f64 / 1e9)
}

/// CPU seconds the whole machine has spent busy (all CPUs; user, nice, system, irq, softirq,
/// steal) since boot, from the first line of `/proc/stat`.
pub fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let f: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy = f.first()? + f.get(1)? + f.get(2)? + f.get(5)? + f.get(6)? + f.get(7)?;
    Some(busy as f64 / clock_ticks())
}

/// Parses VmRSS (KiB) out of `/proc/PID/status`.
pub fn parse_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Resident memory of a process in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    parse_rss_kib(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Waits until something listens on 127.0.0.1:`port`, read from `/proc/net/tcp` so that no probe
/// connection reaches the listener.
pub fn wait_listening(port: u16, limit: Duration) -> anyhow::Result<()> {
    let needle = format!(":{port:04X} 00000000:0000 0A");
    let deadline = monotonic_now() + limit;
    while monotonic_now() < deadline {
        let mut text = String::new();
        if let Ok(mut f) = File::open("/proc/net/tcp") {
            let _ = f.read_to_string(&mut text);
        }
        if text.contains(&needle) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(anyhow!(
        "nothing listens on 127.0.0.1:{port} after {limit:?}"
    ))
}

/// The body of `GET path` from an HTTP/1 server at `addr` (the appliance's diagnostics listener).
pub fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    use std::io::Write as _;
    let sa: SocketAddr = addr.parse().with_context(|| format!("address {addr}"))?;
    let mut s = std::net::TcpStream::connect_timeout(&sa, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("GET {path}: no HTTP response"))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_string())
}

/// Total size in bytes of the files under `dir` (recursively).
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.filter_map(|e| e.ok())
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

/// A program on PATH (or in /usr/sbin, where Debian puts haproxy and nginx).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The first line a command prints (standard output, else standard error), for version notes.
pub fn first_line(program: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    String::from_utf8_lossy(&text)
        .lines()
        .next()
        .map(|l| l.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_and_status_parsing() {
        let stat = "1234 (hop (x) y) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 1000 \
                    100000 2000 18446744073709551615";
        assert_eq!(parse_stat_ticks(stat), Some(325));
        assert_eq!(parse_stat_child_ticks(stat), Some(0));
        assert_eq!(parse_stat_ppid(stat), Some(1));
        let stat = "77 (postgres) S 70 77 77 0 -1 4194560 100 0 0 0 10 5 300 45 20 0 1 0 1000";
        assert_eq!(parse_stat_child_ticks(stat), Some(345));
        assert_eq!(parse_stat_ppid(stat), Some(70));
        assert_eq!(parse_stat_ticks("garbage"), None);
        let status = "Name:\thop\nVmPeak:\t  9999 kB\nVmRSS:\t   20480 kB\nThreads:\t5\n";
        assert_eq!(parse_rss_kib(status), Some(20480));
        assert_eq!(parse_rss_kib("Name: x\n"), None);
    }

    #[test]
    fn own_process_is_readable() {
        let pid = std::process::id();
        assert!(cpu_seconds(pid).is_some());
        assert!(rss_kib(pid).unwrap() > 0);
        assert!(children_cpu_seconds(pid).is_some());
        assert!(tree_cpu_seconds(pid).is_some());
        let before = threads_cpu_ns(pid);
        assert!(!before.is_empty());
        assert!(threads_cpu_seconds_since(pid, &before).unwrap() >= 0.0);
    }
}
