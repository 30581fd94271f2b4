//! Dynamic databases: the cluster's `db` resources (`hop admin create -f db.yaml`) that a db
//! agent serves because its `db_service.resources` selectors match their labels.
//!
//! This module owns the selectors (a label map; `'*': '*'` matches every database, a value `*`
//! matches any value of that key, otherwise values compare exactly), turning a `db` resource into
//! a [`DbSpec`], and the loop that asks Auth for the resources every few seconds and swaps the
//! agent's list when it changed (the tunnel then announces it again). The configured databases
//! always stay; a resource with the same name as a configured one is ignored.

use std::sync::Arc;
use std::time::Duration;

use hop_rbac::DatabaseResource;
use tokio::sync::watch;

use super::{DbService, DbSpec};
use crate::node::audit::ChannelMaker;
use hop_api::proto::ListDatabaseResourcesRequest;
use hop_api::proto::database_access_client::DatabaseAccessClient;
use hop_config::services::Selector;
use hop_net::connect::{ConnectError, error_chain};

/// How often the agent asks Auth for `db` resources.
const REFRESH: Duration = Duration::from_secs(5);

/// The [`DbSpec`] of a `db` resource.
pub fn spec_of(r: &DatabaseResource) -> DbSpec {
    DbSpec {
        name: r.metadata.name.clone(),
        uri: format!("{}://{}", r.spec.protocol, r.host_port()),
        ca_file: None,
        ca_pem: r.spec.tls.ca_cert.clone(),
        server_name: r.spec.tls.server_name.clone(),
        labels: r.metadata.labels.clone(),
    }
}

/// The databases to serve: the configured ones, then the matching resources (valid ones only,
/// by name, configured names first).
pub fn merge(
    configured: &[DbSpec],
    selectors: &[Selector],
    found: &[DatabaseResource],
) -> Vec<DbSpec> {
    let mut out = configured.to_vec();
    let mut dynamic: Vec<DbSpec> = found
        .iter()
        .filter(|r| selectors.iter().any(|s| s.matches(&r.metadata.labels)))
        .map(spec_of)
        .filter(|s| s.validate().is_ok())
        .filter(|s| !configured.iter().any(|c| c.name == s.name))
        .collect();
    dynamic.sort_by(|a, b| a.name.cmp(&b.name));
    out.extend(dynamic);
    out
}

impl DbService {
    /// Keeps the served databases in step with the cluster's `db` resources until shutdown.
    pub async fn watch_resources(
        self: Arc<Self>,
        connect: ChannelMaker,
        mut shutdown: watch::Receiver<bool>,
    ) {
        if self.selectors.is_empty() {
            return;
        }
        loop {
            match fetch(&connect).await {
                Ok(found) => {
                    let next = merge(&self.static_specs, &self.selectors, &found);
                    let changed = match self.specs.write() {
                        Ok(mut cur) if *cur != next => {
                            *cur = next;
                            true
                        }
                        _ => false,
                    };
                    if changed {
                        tracing::info!(
                            databases = ?self.current().iter().map(|d| d.name.clone()).collect::<Vec<_>>(),
                            "the databases this agent serves changed"
                        );
                        self.changed.send_modify(|n| *n += 1);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %error_chain(&e), "cannot list db resources; keeping the current list")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(REFRESH) => {}
                _ = hop_platform::signals::until_shutdown(&mut shutdown) => return,
            }
        }
    }
}

/// Why the `db` resources could not be listed; the agent keeps the databases it serves.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    /// Auth could not be reached through the proxy.
    #[error(transparent)]
    Reach(#[from] ConnectError),
    /// Auth refused the listing, in its own words.
    #[error("{message}")]
    Refused { message: String },
}

async fn fetch(connect: &ChannelMaker) -> Result<Vec<DatabaseResource>, FetchError> {
    let channel = connect().await?;
    let docs = DatabaseAccessClient::new(channel)
        .list_database_resources(ListDatabaseResourcesRequest {})
        .await
        .map_err(|s| FetchError::Refused {
            message: s.message().to_string(),
        })?
        .into_inner()
        .resources_json;
    Ok(docs
        .iter()
        .filter_map(|d| match serde_json::from_str::<DatabaseResource>(d) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(error = %e, "ignoring a db resource this agent cannot read");
                None
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn resource(name: &str, l: &[(&str, &str)]) -> DatabaseResource {
        DatabaseResource {
            kind: "db".into(),
            version: "v3".into(),
            metadata: hop_rbac::Metadata {
                labels: labels(l),
                ..hop_rbac::Metadata::named(name)
            },
            spec: hop_rbac::DatabaseSpec {
                protocol: "postgres".into(),
                uri: "127.0.0.1:5432".into(),
                tls: Default::default(),
            },
        }
    }

    #[test]
    fn selectors() {
        let all = Selector {
            labels: labels(&[("*", "*")]),
        };
        let prod = Selector {
            labels: labels(&[("env", "prod")]),
        };
        let any_team = Selector {
            labels: labels(&[("team", "*")]),
        };
        assert!(all.matches(&labels(&[])));
        assert!(prod.matches(&labels(&[("env", "prod"), ("x", "y")])));
        assert!(!prod.matches(&labels(&[("env", "Prod")])));
        assert!(any_team.matches(&labels(&[("team", "db")])));
        assert!(!any_team.matches(&labels(&[("env", "prod")])));
        assert!(!Selector::default().matches(&labels(&[])));
    }

    #[test]
    fn configured_databases_win_and_only_matches_are_served() {
        let configured = vec![DbSpec::parse("name=a,uri=postgres://x:1").unwrap()];
        let sel = vec![Selector {
            labels: labels(&[("env", "prod")]),
        }];
        let found = vec![
            resource("a", &[("env", "prod")]),
            resource("c", &[("env", "prod")]),
            resource("b", &[("env", "prod")]),
            resource("d", &[("env", "dev")]),
        ];
        let names: Vec<String> = merge(&configured, &sel, &found)
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(merge(&configured, &sel, &found)[0].uri, "postgres://x:1");
    }
}
