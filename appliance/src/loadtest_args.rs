//! Wiring of `hop admin loadtest agents`: its flags (the client's command line) become the agent
//! crate's load-test settings. The binary owns this because neither crate may import the other.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail};
use hop_client::cli::LoadtestCommand;
use hop_config::parse_duration;
use hop_net::trust::{Trust, normalize_pin};

use hop_agent::loadtest::LoadtestSettings;

/// The most nodes one simulated agent may announce (`--nodes`): a hello stays small.
const MAX_NODES_PER_AGENT: usize = 1000;

/// `hop admin loadtest agents`'s flags as the agent crate's settings.
pub fn loadtest_settings(
    cmd: LoadtestCommand,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<LoadtestSettings> {
    let LoadtestCommand::Agents(a) = cmd;
    if a.count == 0 {
        bail!("--count: at least one agent");
    }
    if a.nodes > MAX_NODES_PER_AGENT {
        bail!("--nodes: at most {MAX_NODES_PER_AGENT} per simulated agent");
    }
    if a.join_concurrency == 0 {
        bail!("--join-concurrency: at least 1");
    }
    let duration = a
        .duration
        .as_deref()
        .map(parse_duration)
        .transpose()
        .map_err(|e| anyhow!("--duration: {e}"))?;
    let heartbeat = a
        .heartbeat
        .as_deref()
        .map(parse_duration)
        .transpose()
        .map_err(|e| anyhow!("--heartbeat: {e}"))?;
    if heartbeat.is_some_and(|h| h < Duration::from_millis(100)) {
        bail!("--heartbeat: at least 100ms");
    }
    let pin = a.trust.ca_pin.as_deref().map(normalize_pin).transpose()?;
    let trust = if a.trust.insecure {
        Trust::Insecure
    } else if let Some(p) = &pin {
        Trust::Pin(p.clone())
    } else {
        Trust::System
    };
    Ok(LoadtestSettings {
        count: a.count,
        proxy: a.trust.proxy,
        trust,
        pin,
        token: hop_config::Secret::new(a.token.unwrap_or_default()),
        cache_dir: data_dir.map(|d| d.join(cache_name(a.nodes))),
        duration,
        heartbeat,
        join_concurrency: a.join_concurrency,
        report: a.report_reconnects,
        nodes: a.nodes,
        first_index: a.first_index,
    })
}

/// The identity cache's directory under `--data-dir`: app and node agents hold identities of
/// different roles, so they are kept apart.
fn cache_name(nodes: usize) -> &'static str {
    if nodes > 0 {
        "loadtest-nodes"
    } else {
        "loadtest-agents"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// `hop admin loadtest` on its own, to parse its flags.
    #[derive(Debug, Parser)]
    struct Loadtest {
        #[command(subcommand)]
        cmd: LoadtestCommand,
    }

    fn settings(args: &[&str]) -> anyhow::Result<LoadtestSettings> {
        let base = [
            "loadtest",
            "agents",
            "--count",
            "4",
            "--proxy",
            "127.0.0.1:1",
        ];
        let cli = Loadtest::try_parse_from(base.iter().chain(args))?;
        loadtest_settings(cli.cmd, Some(PathBuf::from("/cache")))
    }

    #[test]
    fn app_agents_by_default() {
        let s = settings(&[]).unwrap();
        assert_eq!((s.nodes, s.first_index), (0, 0));
        assert_eq!(s.cache_dir, Some(PathBuf::from("/cache/loadtest-agents")));
    }

    #[test]
    fn node_agents_with_nodes_and_first_index() {
        let s = settings(&["--nodes", "5", "--first-index", "5000"]).unwrap();
        assert_eq!((s.nodes, s.first_index), (5, 5000));
        assert_eq!(s.cache_dir, Some(PathBuf::from("/cache/loadtest-nodes")));
        let too_many = settings(&["--nodes", "1001"]).unwrap_err().to_string();
        assert!(too_many.contains("--nodes"), "{too_many}");
    }
}
