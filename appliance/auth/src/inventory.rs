//! What this appliance knows of the agents connected to it, as Auth's API reports it: the
//! [`Inventory`] seam (filled by the proxy's tunnel registry, read by `ListNodes`, `ListApps`,
//! `ListDatabases`, `ListKubeClusters` and `ListInventory`), the routes agents announce, and the presence summaries
//! each proxy publishes to the shared backend so another appliance can list its agents.
//!
//! Auth never holds a tunnel: it reads the inventory through the trait, so the proxy depends on
//! Auth and never the other way round.

use std::net::SocketAddr;
use std::time::SystemTime;

use hop_protocols::tunnel::ResourceAnnouncement;
use hop_storage::{Backend, prefix_end};
use serde::{Deserialize, Serialize};

use crate::AuthServer;

/// The agents connected to this appliance's proxy, as a live view.
pub trait Inventory: Send + Sync + std::fmt::Debug {
    /// This proxy's id (its presence summary's key).
    fn proxy_id(&self) -> &str;
    /// Every connected agent.
    fn list(&self) -> Vec<AgentInfo>;
    /// Applications connected agents announce.
    fn apps(&self) -> Vec<AppRoute>;
    /// Databases connected database agents announce.
    fn databases(&self) -> Vec<DbRoute>;
    /// SSH nodes connected node agents announce.
    fn nodes(&self) -> Vec<NodeRoute>;
    /// Kubernetes clusters connected kube agents announce.
    fn kube_clusters(&self) -> Vec<KubeRoute>;
}

/// One connected agent, as the proxy sees it.
#[derive(Debug, Clone)]
pub struct AgentInfo {
    pub host_id: String,
    pub version: String,
    pub services: Vec<String>,
    pub resources: Vec<ResourceAnnouncement>,
    pub remote: SocketAddr,
    pub connected: SystemTime,
    pub last_heartbeat: SystemTime,
    pub pooled: usize,
}

/// An application announced by a connected agent.
#[derive(Debug, Clone)]
pub struct AppRoute {
    pub name: String,
    pub uri: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub host_id: String,
}

/// A database announced by a connected database agent.
#[derive(Debug, Clone)]
pub struct DbRoute {
    pub name: String,
    /// `postgres://host:port` or `mysql://host:port`: what the agent connects to.
    pub uri: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub host_id: String,
}

impl DbRoute {
    /// `postgres` or `mysql`, from the URI's scheme.
    pub fn protocol(&self) -> &str {
        self.uri.split_once("://").map(|(s, _)| s).unwrap_or("")
    }
}

/// A Kubernetes cluster announced by a connected kube agent (`kind: kube_cluster`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeRoute {
    pub name: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub host_id: String,
}

/// An SSH node announced by a connected agent.
#[derive(Debug, Clone)]
pub struct NodeRoute {
    pub name: String,
    /// Where the node also listens directly, if it does.
    pub addr: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub host_id: String,
    /// An agentless OpenSSH node (a `node` resource): reached by the proxy at `addr`, its
    /// sessions terminated and recorded by the proxy.
    pub openssh: bool,
}

impl NodeRoute {
    /// Does `wanted` name this node? Its name, its host id, or either followed by `.CLUSTER`.
    pub fn answers_to(&self, wanted: &str, cluster: &str) -> bool {
        let bare = wanted
            .strip_suffix(cluster)
            .and_then(|w| w.strip_suffix('.'))
            .unwrap_or(wanted);
        bare == self.name || bare == self.host_id
    }
}

/// Where presence summaries live in the backend.
pub const PRESENCE_PREFIX: &str = "/presence/proxies/";
const PREFIX: &str = PRESENCE_PREFIX;

/// One agent as a summary lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSummary {
    pub host_id: String,
    pub version: String,
    pub services: Vec<String>,
    /// Announced resources as `kind/name`.
    pub resources: Vec<String>,
    pub remote_addr: String,
    pub connected_unix: i64,
    pub last_heartbeat_unix: i64,
    /// The announced resources whole (labels, target): what another proxy needs to route a
    /// session to this agent through the proxy that holds its tunnel (proxy peering). Absent
    /// in summaries of releases before peering.
    #[serde(default)]
    pub announced: Vec<AnnouncedResource>,
}

/// A resource as an agent announced it, kept in a presence summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnouncedResource {
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub labels: Vec<(String, String)>,
    #[serde(default)]
    pub target: Option<String>,
}

impl From<&ResourceAnnouncement> for AnnouncedResource {
    fn from(r: &ResourceAnnouncement) -> Self {
        Self {
            kind: r.kind.clone(),
            name: r.name.clone(),
            labels: r.labels.clone(),
            target: r.target.clone(),
        }
    }
}

impl From<&AnnouncedResource> for ResourceAnnouncement {
    fn from(r: &AnnouncedResource) -> Self {
        Self {
            kind: r.kind.clone(),
            name: r.name.clone(),
            labels: r.labels.clone(),
            target: r.target.clone(),
        }
    }
}

/// What one proxy published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceSummary {
    pub proxy_id: String,
    pub written_unix: i64,
    pub agents: Vec<AgentSummary>,
    /// Where other proxies reach this one for peering (`host:port` of its one port); empty
    /// when it takes no peer connections.
    #[serde(default)]
    pub peer_addr: String,
}

/// Every live summary except `own_proxy`'s, sorted by proxy id. Unreadable values are skipped
/// (and logged): one bad summary must not hide the others. A failed read is logged and lists
/// none.
pub fn others(backend: &dyn Backend, own_proxy: &str) -> Vec<PresenceSummary> {
    try_others(backend, own_proxy).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot read other proxies' presence summaries");
        Vec::new()
    })
}

/// [`others`], telling a failed read apart from no other proxy.
pub fn try_others(
    backend: &dyn Backend,
    own_proxy: &str,
) -> Result<Vec<PresenceSummary>, hop_storage::StorageError> {
    let items = backend.range(PREFIX, &prefix_end(PREFIX), 10_000)?;
    let mut out: Vec<PresenceSummary> = items
        .iter()
        .filter_map(|item| match serde_json::from_slice(&item.value) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(key = %item.key, error = %e, "unreadable presence summary skipped");
                None
            }
        })
        .filter(|s: &PresenceSummary| s.proxy_id != own_proxy)
        .collect();
    out.sort_by(|a, b| a.proxy_id.cmp(&b.proxy_id));
    Ok(out)
}

/// Every node a user may name: connected node agents and registered OpenSSH nodes (whose host
/// id is `openssh:NAME`).
pub fn all_nodes(inventory: &dyn Inventory, auth: &AuthServer) -> Vec<NodeRoute> {
    let mut nodes = inventory.nodes();
    match auth.get_resources("node", None) {
        Ok(docs) => {
            for d in docs {
                let Ok(n) = serde_json::from_value::<hop_rbac::NodeResource>(d) else {
                    continue;
                };
                nodes.push(NodeRoute {
                    host_id: format!("openssh:{}", n.metadata.name),
                    name: n.metadata.name,
                    addr: n.spec.addr,
                    labels: n.metadata.labels,
                    openssh: true,
                });
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read the OpenSSH nodes"),
    }
    nodes
}
