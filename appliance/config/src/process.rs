//! The `hop` section: settings of the process as a whole (data dir, where the audit events and
//! recordings are kept (`storage`), diagnostics, logging, which services it runs, and how an
//! agent reaches the proxy), and the rules that section must keep.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::Deserialize;

use crate::{Addr, DEFAULT_DATA_DIR, FieldError, StorageConfig, ValueError};

/// Proxies an agent keeps tunnels to by default.
pub const DEFAULT_AGENT_CONNECTION_COUNT: usize = 2;
/// The most proxies an agent keeps tunnels to.
const MAX_AGENT_CONNECTION_COUNT: usize = 16;

/// Settings of the process as a whole.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProcessConfig {
    pub data_dir: PathBuf,
    /// Where the audit events and session recordings are kept (Teleport's `storage` URIs).
    pub storage: StorageConfig,
    /// Address of the diagnostics HTTP server (`/healthz`, `/readyz`, `/metrics`); off when empty.
    pub diag_addr: Option<Addr>,
    pub log: LogConfig,
    /// Services this process runs.
    pub roles: Vec<ServiceRole>,
    /// Agents: the proxy to join and to keep tunnels to (`host:port`).
    pub proxy_server: Option<String>,
    /// Agents: the join token used the first time (then the stored identity is used), or the
    /// absolute path of a file that holds it.
    pub join_token: Option<crate::Secret>,
    /// Agents: the cluster's CA pin, checked when joining.
    pub ca_pin: Option<String>,
    /// Agents: how many of the cluster's proxies (behind `proxy_server`) to keep tunnels to,
    /// Teleport's `agent_connection_count`; fewer while fewer answer.
    pub agent_connection_count: usize,
}

impl Default for ProcessConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            storage: StorageConfig::default(),
            diag_addr: None,
            log: LogConfig::default(),
            roles: vec![ServiceRole::Auth, ServiceRole::Proxy],
            proxy_server: None,
            join_token: None,
            ca_pin: None,
            agent_connection_count: DEFAULT_AGENT_CONNECTION_COUNT,
        }
    }
}

impl ProcessConfig {
    /// The `hop` section's rules: a data dir, stores this build can open, at least one role, a
    /// log level the filter takes, and agents apart from Auth with the proxy's address.
    pub(crate) fn check(&self) -> Result<(), FieldError> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(FieldError::new("hop.data_dir", "must not be empty"));
        }
        self.storage.check()?;
        if self.roles.is_empty() {
            return Err(FieldError::new(
                "hop.roles",
                "at least one service role is required",
            ));
        }
        if let Some(level) = &self.log.severity
            && tracing_subscriber::EnvFilter::try_new(level).is_err()
        {
            return Err(FieldError::new(
                "hop.log.severity",
                format!("invalid level {level:?}; expected error, warn, info, debug or trace"),
            ));
        }
        if !(1..=MAX_AGENT_CONNECTION_COUNT).contains(&self.agent_connection_count) {
            return Err(FieldError::new(
                "hop.agent_connection_count",
                format!("must be 1 to {MAX_AGENT_CONNECTION_COUNT}"),
            ));
        }
        self.check_agent_roles()
    }

    fn check_agent_roles(&self) -> Result<(), FieldError> {
        let agent_roles = self
            .roles
            .iter()
            .any(|r| !matches!(r, ServiceRole::Auth | ServiceRole::Proxy));
        if agent_roles && self.roles.contains(&ServiceRole::Auth) {
            return Err(FieldError::new(
                "hop.roles",
                "agent services (node, app, db, ...) run in their own process with --proxy for now; start auth,proxy and the agent separately",
            ));
        }
        let kube_with_others = self.roles.contains(&ServiceRole::Kube)
            && self
                .roles
                .iter()
                .any(|r| matches!(r, ServiceRole::Node | ServiceRole::App | ServiceRole::Db));
        if kube_with_others {
            return Err(FieldError::new(
                "hop.roles",
                "the kube agent joins with its own identity; run it in its own process (--roles kube)",
            ));
        }
        if agent_roles && self.proxy_server.is_none() {
            return Err(FieldError::new(
                "hop.proxy_server",
                "an agent needs the proxy address (--proxy HOST:PORT)",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `error`, `warn`, `info` (default), `debug`, `trace`, or a tracing filter directive.
    pub severity: Option<String>,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// A service a `hop start` process can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceRole {
    Auth,
    Proxy,
    Node,
    App,
    Db,
    Kube,
    WindowsDesktop,
    Discovery,
}

impl FromStr for ServiceRole {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.trim() {
            "auth" => Self::Auth,
            "proxy" => Self::Proxy,
            "node" | "ssh" => Self::Node,
            "app" => Self::App,
            "db" => Self::Db,
            "kube" => Self::Kube,
            "windows_desktop" | "desktop" => Self::WindowsDesktop,
            "discovery" => Self::Discovery,
            other => return Err(ValueError::Role { text: other.into() }),
        })
    }
}

impl fmt::Display for ServiceRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auth => "auth",
            Self::Proxy => "proxy",
            Self::Node => "node",
            Self::App => "app",
            Self::Db => "db",
            Self::Kube => "kube",
            Self::WindowsDesktop => "windows_desktop",
            Self::Discovery => "discovery",
        })
    }
}
