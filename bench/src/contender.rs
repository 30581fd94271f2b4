//! A contender: one path from the load generator to the target (direct, hop, an HAProxy chain,
//! an nginx chain), with the processes that make it up and the role each plays.
//!
//! Roles line the peers up with hop's processes so that CPU and memory compare like for like:
//! `client` is the local TLS originator (`hop proxy app`; HAProxy/nginx A), `proxy` is the hop in
//! the middle that terminates the client's TLS and relays over TLS to the agent side (hop's proxy;
//! HAProxy/nginx B), `agent` terminates that and speaks plain TCP to the target (hop's app agent;
//! HAProxy/nginx C). `loadgen` is the harness itself (sources, sinks, echo target).

use std::any::Any;
use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::Serialize;

use crate::procs;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Client,
    Proxy,
    Agent,
    Loadgen,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Proxy => "proxy",
            Role::Agent => "agent",
            Role::Loadgen => "loadgen",
        }
    }
}

pub struct Contender {
    pub name: String,
    /// Where the load generator connects.
    pub entry: SocketAddr,
    /// The processes of the path (the harness's own process is added as `loadgen`).
    pub procs: Vec<(Role, u32)>,
    /// What the path includes, for the report.
    pub describe: String,
    /// Keeps the processes (and their temp dirs) alive; dropping it stops them.
    pub _guard: Box<dyn Any>,
}

impl std::fmt::Debug for Contender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Contender")
            .field("name", &self.name)
            .field("entry", &self.entry)
            .field("procs", &self.procs)
            .finish()
    }
}

impl Contender {
    pub fn direct(entry: SocketAddr) -> Self {
        Self {
            name: "direct".into(),
            entry,
            procs: vec![],
            describe: "load generator → target, one loopback TCP connection per stream, no proxy"
                .into(),
            _guard: Box::new(()),
        }
    }

    /// CPU seconds used so far by each role (summed when a role has several processes).
    pub fn cpu(&self) -> BTreeMap<Role, f64> {
        let mut m = BTreeMap::new();
        for (role, pid) in &self.procs {
            *m.entry(*role).or_insert(0.0) += procs::cpu_seconds(*pid).unwrap_or(f64::NAN);
        }
        m.insert(
            Role::Loadgen,
            procs::cpu_seconds(std::process::id()).unwrap_or(f64::NAN),
        );
        m
    }

    /// Resident memory (KiB) of each role's processes.
    pub fn rss(&self) -> BTreeMap<Role, u64> {
        let mut m = BTreeMap::new();
        for (role, pid) in &self.procs {
            *m.entry(*role).or_insert(0) += procs::rss_kib(*pid).unwrap_or(0);
        }
        m
    }

    /// An error if one of the path's processes has gone (exited or zombie).
    pub fn check_alive(&self) -> anyhow::Result<()> {
        for (role, pid) in &self.procs {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat
                .rfind(')')
                .and_then(|i| stat.get(i + 2..i + 3))
                .unwrap_or("?");
            if stat.is_empty() || state == "Z" || state == "X" {
                anyhow::bail!(
                    "{}: its {} process (pid {pid}) is gone",
                    self.name,
                    role.name()
                );
            }
        }
        Ok(())
    }
}

/// CPU seconds per role between two snapshots.
pub fn cpu_delta(a: &BTreeMap<Role, f64>, b: &BTreeMap<Role, f64>) -> BTreeMap<String, f64> {
    b.iter()
        .map(|(r, v)| {
            (
                r.name().to_string(),
                v - a.get(r).copied().unwrap_or(f64::NAN),
            )
        })
        .collect()
}
