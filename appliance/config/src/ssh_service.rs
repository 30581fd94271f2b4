//! The `ssh_service` section: a node agent's SSH service (its name and labels, a LAN listener,
//! the spool of session recordings, the authentication deadline), and the rules it must keep.

use std::time::Duration;

use serde::Deserialize;

use crate::{Addr, FieldError, HumanDuration};

/// The SSH service of a `node` agent.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SshServiceConfig {
    /// The node's name in the cluster (defaults to the host name).
    pub nodename: Option<String>,
    /// Static labels announced with the node.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Labels whose value is a command's output, refreshed on an interval.
    pub commands: Vec<CommandLabelConfig>,
    /// Also accept SSH connections directly on this address (LAN use); off when unset.
    pub listen_addr: Option<Addr>,
    /// Idle data connections the agent keeps parked at the proxy.
    pub tunnel_pool_size: Option<usize>,
    /// Session recording at the node: the local spool and the upload to Auth.
    pub recording: NodeRecordingConfig,
    /// Deadline for an SSH client to exchange banners and keys and authenticate; a connection
    /// not authenticated by then is closed.
    pub auth_timeout: HumanDuration,
}

impl Default for SshServiceConfig {
    fn default() -> Self {
        Self {
            nodename: None,
            labels: Default::default(),
            commands: Vec::new(),
            listen_addr: None,
            tunnel_pool_size: None,
            recording: NodeRecordingConfig::default(),
            auth_timeout: HumanDuration(Duration::from_secs(30)),
        }
    }
}

/// A label whose value is the output of a command.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandLabelConfig {
    pub name: String,
    /// The program and its arguments (not run through a shell).
    pub command: Vec<String>,
    /// How often to refresh it (default 1m).
    #[serde(default)]
    pub period: Option<HumanDuration>,
}

/// `ssh_service.recording`: the node's spool of session recordings (`<data_dir>/agent/recordings`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeRecordingConfig {
    /// Most bytes the spool may hold (recordings not yet uploaded to Auth).
    pub max_spool_bytes: u64,
    /// How often recordings still being written are uploaded (finished ones go at once).
    pub upload_interval: HumanDuration,
}

impl Default for NodeRecordingConfig {
    fn default() -> Self {
        Self {
            max_spool_bytes: 1024 * 1024 * 1024,
            upload_interval: HumanDuration(Duration::from_secs(10)),
        }
    }
}

impl SshServiceConfig {
    /// The `ssh_service` section's rules: a spool worth having, command labels with a name and
    /// a command, and an authentication deadline above zero.
    pub(crate) fn check(&self) -> Result<(), FieldError> {
        self.recording.check()?;
        for (i, c) in self.commands.iter().enumerate() {
            if c.name.is_empty() || c.command.is_empty() {
                return Err(FieldError::new(
                    "ssh_service.commands",
                    format!("[{i}]: name and command are required"),
                ));
            }
        }
        FieldError::positive("ssh_service.auth_timeout", self.auth_timeout)
    }
}

impl NodeRecordingConfig {
    fn check(&self) -> Result<(), FieldError> {
        if self.max_spool_bytes < 1024 * 1024 {
            return Err(FieldError::new(
                "ssh_service.recording.max_spool_bytes",
                format!(
                    "{} is too small: at least 1048576 (1 MiB)",
                    self.max_spool_bytes
                ),
            ));
        }
        if self.upload_interval.0 < Duration::from_millis(100) {
            return Err(FieldError::new(
                "ssh_service.recording.upload_interval",
                "must be at least 100ms",
            ));
        }
        Ok(())
    }
}
