//! Agent presence, summarized from the proxy's memory into the shared backend in batches.
//!
//! Presence itself is soft state in each proxy (`TunnelRegistry`: no write per heartbeat). This
//! module owns the summary a proxy publishes every [`PUBLISH_INTERVAL`]: one backend value per
//! proxy, `/presence/proxies/<proxy id>`, listing its connected agents, with a lease of three
//! intervals, so a proxy that stops (or dies) disappears from every listing on its own. Another
//! appliance sharing the backend lists those agents next to its own (`hop admin inventory ls`).
//! One write per proxy per interval, whatever the number of agents.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hop_platform::clock;
use hop_storage::{Backend, PutOptions};
use tokio::sync::watch;

use super::tunnels::TunnelRegistry;
use hop_auth::inventory::{AgentSummary, PRESENCE_PREFIX as PREFIX, PresenceSummary};

/// How often a proxy publishes its summary.
pub const PUBLISH_INTERVAL: Duration = Duration::from_secs(10);
/// The most agents one summary lists (a bound on one backend value).
const MAX_AGENTS: usize = 200_000;

fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The summary of `registry` now.
pub fn summarize(registry: &TunnelRegistry, now: SystemTime) -> PresenceSummary {
    let agents = registry
        .list()
        .into_iter()
        .take(MAX_AGENTS)
        .map(|a| AgentSummary {
            resources: a
                .resources
                .iter()
                .map(|r| format!("{}/{}", r.kind, r.name))
                .collect(),
            host_id: a.host_id,
            version: a.version,
            services: a.services,
            remote_addr: a.remote.to_string(),
            connected_unix: unix(a.connected),
            last_heartbeat_unix: unix(a.last_heartbeat),
        })
        .collect();
    PresenceSummary {
        proxy_id: registry.proxy_id().to_string(),
        written_unix: unix(now),
        agents,
    }
}

/// Why a presence summary was not published (the next interval tries again).
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Encode(#[from] serde_json::Error),
    #[error(transparent)]
    Store(#[from] hop_storage::StorageError),
}

/// Writes `summary` with a lease of three publishing intervals.
pub fn publish(
    backend: &dyn Backend,
    summary: &PresenceSummary,
    now: SystemTime,
) -> Result<(), PublishError> {
    let value = serde_json::to_vec(summary)?;
    backend.put(
        &format!("{PREFIX}{}", summary.proxy_id),
        &value,
        PutOptions {
            expires: Some(now + PUBLISH_INTERVAL * 3),
        },
    )?;
    Ok(())
}

/// Publishes `registry`'s summary every interval until shutdown, then withdraws it.
pub async fn run(
    registry: Arc<TunnelRegistry>,
    backend: Arc<dyn Backend>,
    mut shutdown: watch::Receiver<bool>,
) {
    let key = format!("{PREFIX}{}", registry.proxy_id());
    loop {
        let (r, b) = (registry.clone(), backend.clone());
        let res = tokio::task::spawn_blocking(move || {
            let now = clock::wall();
            publish(b.as_ref(), &summarize(&r, now), now)
        })
        .await;
        match res {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot publish the presence summary"),
            Err(e) => tracing::warn!(error = %e, "presence summary task failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(PUBLISH_INTERVAL) => {}
            _ = hop_platform::signals::until_shutdown(&mut shutdown) => break,
        }
    }
    let b = backend.clone();
    let _ = tokio::task::spawn_blocking(move || b.delete(&key)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use hop_auth::inventory::others;
    use hop_storage::{Clock, ManualClock, MemoryBackend};

    #[test]
    fn summaries_of_other_proxies_are_listed_until_their_lease_ends() {
        let clock = Arc::new(ManualClock::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
        ));
        let backend = MemoryBackend::new(clock.clone());
        let now = clock.now();
        let summary = |proxy: &str| PresenceSummary {
            proxy_id: proxy.into(),
            written_unix: unix(now),
            agents: vec![AgentSummary {
                host_id: format!("agent-of-{proxy}"),
                version: "0.1.0".into(),
                services: vec!["app".into()],
                resources: vec!["app/echo".into()],
                remote_addr: "127.0.0.1:5000".into(),
                connected_unix: unix(now),
                last_heartbeat_unix: unix(now),
            }],
        };
        publish(&backend, &summary("proxy-a"), now).unwrap();
        publish(&backend, &summary("proxy-b"), now).unwrap();
        backend
            .put(
                &format!("{PREFIX}broken"),
                b"not json",
                PutOptions::default(),
            )
            .unwrap();
        let seen = others(&backend, "proxy-a");
        assert_eq!(seen, vec![summary("proxy-b")]);
        // proxy-b stops publishing: after three intervals it is gone.
        clock.advance(PUBLISH_INTERVAL * 3);
        assert!(others(&backend, "proxy-a").is_empty());
    }

    #[test]
    fn an_empty_registry_summarizes_to_no_agents() {
        let registry = TunnelRegistry::new("p1".into(), Duration::from_secs(30));
        let s = summarize(&registry, SystemTime::UNIX_EPOCH);
        assert_eq!((s.proxy_id.as_str(), s.agents.len()), ("p1", 0));
    }
}
