//! Wiring of `hop admin loadtest agents`: its flags (the client's command line) become the agent
//! crate's load-test settings. The binary owns this because neither crate may import the other.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail};
use hop_client::cli::LoadtestCommand;
use hop_config::parse_duration;
use hop_net::trust::{Trust, normalize_pin};

use hop_agent::loadtest::LoadtestSettings;

/// `hop admin loadtest agents`'s flags as the agent crate's settings.
pub fn loadtest_settings(
    cmd: LoadtestCommand,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<LoadtestSettings> {
    let LoadtestCommand::Agents(a) = cmd;
    if a.count == 0 {
        bail!("--count: at least one agent");
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
        cache_dir: data_dir.map(|d| d.join("loadtest-agents")),
        duration,
        heartbeat,
        join_concurrency: a.join_concurrency,
        report: a.report_reconnects,
    })
}
