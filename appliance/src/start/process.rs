//! What every step of `hop start` shares: the metrics registry, the clock, the shutdown signal
//! and the background tasks that shutdown waits for; and the steps that only need those (the
//! signal watcher, the diagnostics server, lease expiry, and shutdown itself).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hop_config::Config;
use hop_metrics::Metrics;
use hop_proxy::dataplane::DataPlane;
use hop_proxy::tunnels::TunnelRegistry;
use hop_storage::{Backend, Clock, SystemClock};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How often expired TTL leases are purged.
const LEASE_PURGE: Duration = Duration::from_secs(30);
/// Agents are told to move over this long, each after its own delay.
const AGENT_DRAIN_SPREAD: Duration = Duration::from_secs(10);
/// How long shutdown waits for agents to leave.
const AGENT_DRAIN_WAIT: Duration = Duration::from_secs(5);
/// How long shutdown lets connections and tasks finish before stopping them.
const TASK_DRAIN: Duration = Duration::from_secs(12);

/// The running process's shared parts.
pub(super) struct Process {
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    pub shutdown: watch::Receiver<bool>,
    pub tasks: JoinSet<()>,
    /// Held for as long as the process runs, so that the signal never reads as closed.
    _shutdown_tx: watch::Sender<bool>,
}

impl Process {
    /// Fresh metrics and the shutdown signal, with the signal watcher running.
    pub fn start() -> anyhow::Result<Self> {
        let metrics = Arc::new(Metrics::default());
        let (shutdown_tx, shutdown) = watch::channel(false);
        watch_signals(shutdown_tx.clone())?;
        Ok(Self {
            metrics,
            clock: Arc::new(SystemClock),
            shutdown,
            tasks: JoinSet::new(),
            _shutdown_tx: shutdown_tx,
        })
    }

    /// The diagnostics server (`/healthz`, `/readyz`, `/metrics`), where `hop.diag_addr` is set.
    pub fn spawn_diagnostics(&mut self, cfg: &Config, run_proxy: bool) {
        if let Some(addr) = cfg.hop.diag_addr {
            let (m, rx) = (self.metrics.clone(), self.shutdown.clone());
            self.tasks.spawn(async move {
                if let Err(e) = hop_metrics::diag::serve(addr.0, m, run_proxy, rx).await {
                    tracing::error!(error = %e, "diagnostics server stopped");
                }
            });
        }
    }

    /// TTL leases expire in the background.
    pub fn spawn_lease_expiry(&mut self, backend: Arc<dyn Backend>) {
        let mut rx = self.shutdown.clone();
        self.tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(LEASE_PURGE) => {}
                    _ = hop_platform::signals::until_shutdown(&mut rx) => break,
                }
                let b = backend.clone();
                let _ = tokio::task::spawn_blocking(move || b.purge_expired()).await;
            }
        });
    }

    /// Waits for the first SIGTERM/SIGINT.
    pub async fn until_shutdown(&self) {
        let mut rx = self.shutdown.clone();
        hop_platform::signals::until_shutdown(&mut rx).await;
    }

    /// Moves agents away, stops accepting, lets connections drain, then stops what is left and
    /// removes the admin socket.
    pub async fn shut_down(
        mut self,
        registry: &TunnelRegistry,
        dataplane: Option<DataPlane>,
        admin_socket: &Path,
    ) {
        // Tell agents to move before the port closes, each after its own delay, so that they do
        // not all come back in the same second.
        registry.drain(AGENT_DRAIN_SPREAD);
        registry.wait_drained(AGENT_DRAIN_WAIT).await;
        if let Some(dp) = dataplane {
            dp.stop();
        }
        // Let connections drain, then stop whatever is left.
        let _ = tokio::time::timeout(TASK_DRAIN, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        self.tasks.abort_all();
        let _ = std::fs::remove_file(admin_socket);
        tracing::info!("stopped");
    }
}

/// Spawns the signal watcher: the first signal asks for shutdown, a second exits at once.
pub(super) fn watch_signals(tx: watch::Sender<bool>) -> anyhow::Result<()> {
    hop_platform::signals::watch_signals(
        tx,
        || {
            tracing::info!(
                "shutting down: no new connections; send the signal again to exit at once"
            )
        },
        || tracing::warn!("second signal: exiting now"),
    )?;
    Ok(())
}
