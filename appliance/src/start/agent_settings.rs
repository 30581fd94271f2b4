//! An agent's settings from the configuration file: which service it runs, what it publishes
//! (applications, databases, Kubernetes clusters, the node's SSH service) and how it reaches the proxy. It only
//! translates `hop.yaml` into `hop_agent`'s settings; it never opens anything itself.

use std::path::PathBuf;
use std::time::Duration;

use hop_agent::AgentSettings;
use hop_agent::node::{CommandLabel, NodeSettings, recorder::SpoolSettings};
use hop_config::{AppConfig, Config, DbConfig, KubeClusterConfig, ServiceRole, SshServiceConfig};

/// How often a command label is refreshed when its `period` is not set.
const COMMAND_LABEL_PERIOD: Duration = Duration::from_secs(60);
/// Idle data connections an agent parks at the proxy when no service sets a pool size.
const TUNNEL_POOL_SIZE: usize = 4;

/// The settings of the agent `cfg` describes, keeping its identity in `data_dir`.
pub(super) fn from_config(cfg: &Config, data_dir: PathBuf) -> AgentSettings {
    AgentSettings {
        proxy: cfg.hop.proxy_server.clone().unwrap_or_default(),
        token: cfg.hop.join_token.clone().unwrap_or_default(),
        ca_pin: cfg.hop.ca_pin.clone(),
        insecure: false,
        data_dir,
        role: role(cfg).into(),
        apps: cfg.app_service.apps.iter().map(AppConfig::spec).collect(),
        pool_size: pool_size(cfg),
        connection_count: cfg.hop.agent_connection_count,
        db_selectors: cfg.db_service.resources.clone(),
        db_audit: cfg.db_service.audit.clone(),
        kube_clusters: if cfg.runs(ServiceRole::Kube) {
            cfg.kubernetes_service
                .kube_clusters
                .iter()
                .map(KubeClusterConfig::spec)
                .collect()
        } else {
            Vec::new()
        },
        databases: if cfg.runs(ServiceRole::Db) {
            cfg.db_service
                .databases
                .iter()
                .map(DbConfig::spec)
                .collect()
        } else {
            Vec::new()
        },
        node: cfg
            .runs(ServiceRole::Node)
            .then(|| node_settings(&cfg.ssh_service)),
    }
}

/// The service the agent announces: `kube` (which runs alone), else `node` wins over `db`,
/// `db` over `app`.
fn role(cfg: &Config) -> &'static str {
    if cfg.runs(ServiceRole::Kube) {
        "kube"
    } else if cfg.runs(ServiceRole::Node) {
        "node"
    } else if cfg.runs(ServiceRole::Db) {
        "db"
    } else {
        "app"
    }
}

/// The first pool size a service sets: SSH, then applications, then databases, then kube.
fn pool_size(cfg: &Config) -> usize {
    cfg.ssh_service
        .tunnel_pool_size
        .or(cfg.app_service.tunnel_pool_size)
        .or(cfg.db_service.tunnel_pool_size)
        .or(cfg.kubernetes_service.tunnel_pool_size)
        .unwrap_or(TUNNEL_POOL_SIZE)
}

/// A node agent's SSH service.
fn node_settings(ssh: &SshServiceConfig) -> NodeSettings {
    NodeSettings {
        nodename: ssh.nodename.clone().unwrap_or_default(),
        labels: ssh.labels.clone(),
        commands: ssh
            .commands
            .iter()
            .map(|c| CommandLabel {
                name: c.name.clone(),
                command: c.command.clone(),
                period: c.period.as_ref().map_or(COMMAND_LABEL_PERIOD, |p| p.0),
            })
            .collect(),
        listen_addr: ssh.listen_addr.as_ref().map(|a| a.0),
        recording: SpoolSettings {
            max_bytes: ssh.recording.max_spool_bytes,
            upload_interval: ssh.recording.upload_interval.0,
        },
        auth_timeout: ssh.auth_timeout.0,
    }
}
