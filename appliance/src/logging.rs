//! Structured logs with `tracing`: human text by default, JSON lines with `--log-format json`.
//!
//! Logs go to standard error so that commands' output on standard output stays clean for pipes.

use tracing_subscriber::EnvFilter;

use hop_config::LogFormat;

pub fn init(level: Option<&str>, format: LogFormat) -> anyhow::Result<()> {
    let filter = match level {
        Some(l) => EnvFilter::try_new(l).map_err(|e| anyhow::anyhow!("--log-level {l:?}: {e}"))?,
        None => EnvFilter::new("info"),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_target(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    }
    .map_err(|e| anyhow::anyhow!("cannot initialise logging: {e}"))
}
