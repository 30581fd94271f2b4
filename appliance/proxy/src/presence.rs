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
/// The most resources of one agent a summary carries whole (other proxies route to these).
const MAX_ANNOUNCED_PER_AGENT: usize = 1_000;

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
            announced: a
                .resources
                .iter()
                .take(MAX_ANNOUNCED_PER_AGENT)
                .map(Into::into)
                .collect(),
        })
        .collect();
    PresenceSummary {
        proxy_id: registry.proxy_id().to_string(),
        written_unix: unix(now),
        agents,
        peer_addr: registry.peer_addr().to_string(),
    }
}

/// Holds this appliance's proxy id in its data dir.
const PROXY_ID_FILE: &str = "proxy_id";

/// Why the proxy id cannot be read or made.
#[derive(Debug, thiserror::Error)]
pub enum ProxyIdError {
    #[error(
        "{path} does not hold a proxy id (32 lowercase hex digits); remove it to make a new one"
    )]
    Unreadable { path: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// This appliance's proxy id: made once (random) and kept in the data dir, so that appliances
/// sharing a backend never share one, whatever their host names. It keys the presence summary
/// and names the peering certificate (a DNS label).
pub fn proxy_id(data_dir: &std::path::Path) -> Result<String, ProxyIdError> {
    let path = data_dir.join(PROXY_ID_FILE);
    let shown = path.display().to_string();
    match std::fs::read_to_string(&path) {
        Ok(id) if is_proxy_id(id.trim()) => return Ok(id.trim().to_string()),
        Ok(_) => return Err(ProxyIdError::Unreadable { path: shown }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(ProxyIdError::Io {
                path: shown,
                source,
            });
        }
    }
    let id = hex::encode(rand::random::<[u8; 16]>());
    std::fs::write(&path, format!("{id}\n")).map_err(|source| ProxyIdError::Io {
        path: shown,
        source,
    })?;
    Ok(id)
}

fn is_proxy_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
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

/// Publishes `registry`'s summary every interval, and soon after an agent connects or leaves
/// (at most one write a second), until shutdown, then withdraws it. Between publications it
/// reads the other proxies' summaries every [`REFRESH_INTERVAL`] into the registry (the agents
/// reached through them, `crate::peering`).
pub async fn run(
    registry: Arc<TunnelRegistry>,
    backend: Arc<dyn Backend>,
    mut shutdown: watch::Receiver<bool>,
) {
    let key = format!("{PREFIX}{}", registry.proxy_id());
    let changes = registry.changes();
    let mut next_publish = clock::tokio_now();
    loop {
        let now = clock::tokio_now();
        if now >= next_publish {
            publish_now(&registry, &backend).await;
            next_publish = now + PUBLISH_INTERVAL;
        }
        refresh_peers(&registry, &backend).await;
        tokio::select! {
            _ = tokio::time::sleep(REFRESH_INTERVAL) => {}
            _ = changes.notified() => {
                // Several agents arriving together make one write.
                tokio::time::sleep(CHANGE_DEBOUNCE).await;
                next_publish = clock::tokio_now();
            }
            _ = hop_platform::signals::until_shutdown(&mut shutdown) => break,
        }
    }
    let b = backend.clone();
    let _ = tokio::task::spawn_blocking(move || b.delete(&key)).await;
}

/// How often the other proxies' summaries are read.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(2);
/// How long after an agent connects or leaves the summary is written.
const CHANGE_DEBOUNCE: Duration = Duration::from_secs(1);

async fn publish_now(registry: &Arc<TunnelRegistry>, backend: &Arc<dyn Backend>) {
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
}

/// Reads the other proxies' live summaries into the registry; on a read failure the view of
/// before stays (their leases bound how stale it may be once reads work again).
async fn refresh_peers(registry: &Arc<TunnelRegistry>, backend: &Arc<dyn Backend>) {
    let (r, b) = (registry.clone(), backend.clone());
    let res = tokio::task::spawn_blocking(move || {
        hop_auth::inventory::try_others(b.as_ref(), r.proxy_id()).map(|o| r.set_remote(&o))
    })
    .await;
    match res {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "cannot read other proxies' summaries"),
        Err(e) => tracing::warn!(error = %e, "reading other proxies' summaries failed"),
    }
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
                announced: vec![],
            }],
            peer_addr: String::new(),
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
