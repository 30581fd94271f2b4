//! The Kubernetes service of a `kube` agent (`hop start --roles kube --kube-cluster …`): the
//! clusters it publishes (announced as `kube_cluster` resources), each reached with the agent's
//! own credentials from its kubeconfig or the in-cluster service account ([`kubeconfig`],
//! [`upstream`]), and the `@kube:` Dials the proxy opens to them: answered, then served as
//! HTTP/1.1 ([`forward`]) under the header rules of [`headers`]. Who may reach a cluster, as
//! whom, and which resources, was decided by the proxy before a request arrives; the proxy
//! audits. The agent's own rule is that every request impersonates exactly one user.

mod forward;
mod headers;
pub mod kubeconfig;
#[cfg(test)]
mod kubeconfig_tests;
#[cfg(test)]
mod tests;
mod upstream;

use std::collections::HashMap;
use std::sync::Arc;

use hop_api::dial::MalformedDial;
use hop_api::dial::kube::KubeDial;
use hop_config::services::KubeClusterSpec;
use hop_net::tunnel::Prefixed;
use hop_protocols::tunnel::ResourceAnnouncement;

pub use kubeconfig::KubeconfigError;

use crate::dial::{DataStream, answer};

/// Why the kube service cannot start: a cluster's kubeconfig (which names its file, context and
/// field).
#[derive(Debug, thiserror::Error)]
#[error("kube cluster {cluster:?}: {source}")]
pub struct KubeServiceError {
    pub cluster: String,
    #[source]
    pub source: KubeconfigError,
}

/// One published cluster: its spec and its API server client.
pub(crate) struct Cluster {
    name: String,
    spec: KubeClusterSpec,
    api: upstream::ApiServer,
}

/// The clusters this agent serves, by name.
pub struct KubeService {
    clusters: HashMap<String, Arc<Cluster>>,
}

/// Why a `@kube:` Dial is refused; the words go back to the proxy.
#[derive(Debug, thiserror::Error)]
enum KubeDialRefusal {
    #[error(transparent)]
    Malformed(#[from] MalformedDial),
    #[error("this agent does not serve kube cluster {0:?}")]
    UnknownCluster(String),
}

impl KubeService {
    /// Reads every cluster's kubeconfig and builds its client; the first that fails stops the
    /// start with an error naming the cluster, the file, the context and the field.
    pub fn new(specs: &[KubeClusterSpec]) -> Result<Arc<Self>, KubeServiceError> {
        let clusters = specs
            .iter()
            .map(|s| {
                let api = upstream::load(s).map_err(|source| KubeServiceError {
                    cluster: s.name.clone(),
                    source,
                })?;
                Ok((s.name.clone(), Arc::new(Cluster::new(s.clone(), api))))
            })
            .collect::<Result<_, KubeServiceError>>()?;
        Ok(Arc::new(Self { clusters }))
    }

    /// What the agent's hello announces: one `kube_cluster` per cluster.
    pub fn announcements(&self) -> Vec<ResourceAnnouncement> {
        let mut all: Vec<_> = self
            .clusters
            .values()
            .map(|c| c.spec.announcement())
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// `(name, API server URL)` of each cluster, for the start banner.
    pub fn describe(&self) -> Vec<(String, String)> {
        let mut all: Vec<_> = self
            .clusters
            .values()
            .map(|c| (c.name.clone(), c.api.base.to_string()))
            .collect();
        all.sort();
        all
    }

    fn cluster_for(
        &self,
        target: Result<KubeDial, MalformedDial>,
    ) -> Result<(Arc<Cluster>, KubeDial), KubeDialRefusal> {
        let dial = target?;
        let cluster = self
            .clusters
            .get(&dial.cluster)
            .cloned()
            .ok_or_else(|| KubeDialRefusal::UnknownCluster(dial.cluster.clone()))?;
        Ok((cluster, dial))
    }

    /// Serves a `@kube:` Dial: refused when malformed or for a cluster not served here; else
    /// answered, then HTTP/1.1 on the data stream.
    pub(crate) async fn serve(
        &self,
        mut framed: DataStream,
        session_id: [u8; 16],
        target: Result<KubeDial, MalformedDial>,
    ) {
        let (cluster, dial) = match self.cluster_for(target) {
            Ok(found) => found,
            Err(e) => {
                answer(&mut framed, session_id, Some(e.to_string())).await;
                return;
            }
        };
        if !answer(&mut framed, session_id, None).await {
            return;
        }
        tracing::debug!(cluster = %dial.cluster, user = %dial.user, client = %dial.client_addr, session = %dial.session_id, "kube connection started");
        let (tunnel, pending) = framed.into_inner();
        forward::serve(cluster, Prefixed::new(tunnel, pending)).await;
    }
}

impl Cluster {
    fn new(spec: KubeClusterSpec, api: upstream::ApiServer) -> Self {
        Self {
            name: spec.name.clone(),
            spec,
            api,
        }
    }
}
