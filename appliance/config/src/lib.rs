//! Operator configuration: the `hop.yaml` file, its defaults, and its validation.
//!
//! This crate owns the shape of the configuration file and the rules that make a file valid. It
//! parses with serde-saphyr (panic-free, with line numbers in its errors) into plain
//! `serde(default)` structs that reject unknown keys, then `validate()` checks what types cannot,
//! section by section: each section's module (`process` for `hop`, `storage` for `hop.storage`,
//! `auth_service`, `proxy_service`, `ssh_service`, `app_service`, `db_service`,
//! `kube_service` for `kubernetes_service`) holds its structs
//! and its rules.
//! It never opens sockets or files other than the config file itself (and a join token's file),
//! and never imports the services it configures: what an agent publishes is described here
//! (`services`) and served there.

#![forbid(unsafe_code)]

pub mod app_rewrite;
mod app_service;
mod app_spec;
mod auth_service;
mod db_service;
mod default_yaml;
mod join_token;
mod kube_service;
mod process;
mod proxy_service;
pub mod services;
mod ssh_service;
mod storage;
mod values;

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use app_service::{AppConfig, AppServiceConfig};
pub use auth_service::{
    AuditSettings, AuthServiceConfig, AuthenticationConfig, LoginLimits, validate_cluster_name,
};
pub use db_service::{DbAuditConfig, DbConfig, DbServiceConfig};
pub use default_yaml::DEFAULT_CONFIG_YAML;
pub use join_token::{JoinTokenError, read_join_token};
pub use kube_service::{
    KUBE_CLUSTER_KIND, KubeClusterConfig, KubeClusterSpec, KubeServiceConfig, KubeSpecError,
};
pub use process::{LogConfig, LogFormat, ProcessConfig, ServiceRole};
pub use proxy_service::{
    IoDriverChoice, KernelTlsChoice, ProxyProtocolConfig, ProxyServiceConfig, TlsFiles,
};
pub use ssh_service::{CommandLabelConfig, NodeRecordingConfig, SshServiceConfig};
pub use storage::{
    StateStore, StateStoreKind, StorageConfig, StoreLocation, StoreUriError, UriList,
};
pub use values::{Addr, Cidr, HumanDuration, Secret, ValueError, parse_addr, parse_duration};

/// Default port of the proxy: every protocol on one TLS port (443 in production).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:3080";
/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "hop-data";
/// The embedded cluster-state database (redb) inside the data directory.
pub const STATE_FILE: &str = "hop.db";

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {field}: {message}")]
    Invalid {
        path: PathBuf,
        field: &'static str,
        message: String,
    },
}

/// A field that breaks one of its section's rules: its dotted name and what is wrong with it.
/// [`Config::validate`] adds the file's path to make a [`ConfigError::Invalid`].
#[derive(Debug)]
pub(crate) struct FieldError {
    field: &'static str,
    message: String,
}

impl FieldError {
    pub(crate) fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }

    /// A deadline must be greater than zero.
    pub(crate) fn positive(field: &'static str, d: HumanDuration) -> Result<(), Self> {
        if d.0.is_zero() {
            return Err(Self::new(field, "must be greater than 0s"));
        }
        Ok(())
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// File format version; only `v1` exists.
    pub version: Option<String>,
    pub hop: ProcessConfig,
    pub auth_service: AuthServiceConfig,
    pub proxy_service: ProxyServiceConfig,
    pub app_service: AppServiceConfig,
    pub ssh_service: SshServiceConfig,
    pub db_service: DbServiceConfig,
    pub kubernetes_service: KubeServiceConfig,
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates configuration text; `path` is used in error messages only.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let cfg: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            serde_saphyr::from_str(text).map_err(|e| ConfigError::Parse {
                path: path.to_path_buf(),
                message: one_line(&e.to_string()),
            })?
        };
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// Checks what the types cannot, section by section; each error names its field.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        self.check()
            .map_err(|FieldError { field, message }| ConfigError::Invalid {
                path: path.to_path_buf(),
                field,
                message,
            })
    }

    fn check(&self) -> Result<(), FieldError> {
        if let Some(v) = &self.version
            && v != "v1"
        {
            return Err(FieldError::new(
                "version",
                format!("unsupported version {v:?}; expected v1"),
            ));
        }
        self.hop.check()?;
        self.app_service.check()?;
        self.db_service.check(self.runs(ServiceRole::Db))?;
        self.kubernetes_service
            .check(self.runs(ServiceRole::Kube))?;
        self.ssh_service.check()?;
        self.auth_service.check()?;
        self.proxy_service.check()
    }

    pub fn runs(&self, role: ServiceRole) -> bool {
        self.hop.roles.contains(&role)
    }
}

/// Errors from the YAML parser may span lines (a snippet); keep the first meaningful lines joined.
fn one_line(msg: &str) -> String {
    let lines: Vec<&str> = msg
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines.join(" ")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("hop.yaml"))
    }

    #[test]
    fn default_config_text_parses_to_the_defaults() {
        let cfg = parse(DEFAULT_CONFIG_YAML).unwrap();
        assert_eq!(cfg.proxy_service.listen_addr.0.port(), 3080);
        assert_eq!(cfg.auth_service.login.max_failed_attempts, 5);
        assert_eq!(cfg.hop.roles, vec![ServiceRole::Auth, ServiceRole::Proxy]);
        let (p, d) = (&cfg.proxy_service, ProxyServiceConfig::default());
        assert_eq!(p.ssh_auth_timeout.0, d.ssh_auth_timeout.0);
        assert_eq!(p.http_header_timeout.0, d.http_header_timeout.0);
        assert_eq!(p.http_idle_timeout.0, d.http_idle_timeout.0);
        assert_eq!(p.web_idle_timeout.0, d.web_idle_timeout.0);
        assert_eq!(p.tunnel_hello_timeout.0, d.tunnel_hello_timeout.0);
        assert_eq!(p.db_startup_timeout.0, d.db_startup_timeout.0);
        assert_eq!(p.max_preauth_connections_per_ip, 64);
        assert_eq!(p.max_preauth_connections_percent, 1.0);
        assert_eq!(cfg.ssh_service.auth_timeout.0, Duration::from_secs(30));
    }

    #[test]
    fn unknown_key_names_the_key_and_line() {
        let err = parse("version: v1\nhop:\n  data_dri: /tmp/x\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("data_dri"), "{err}");
        assert!(err.contains("hop.yaml"), "{err}");
        assert!(err.contains('3'), "line number missing: {err}");
        assert!(!err.contains('\n'));
    }

    #[test]
    fn bad_values_name_the_field() {
        let err = parse("proxy_service:\n  listen_addr: nowhere\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid address"), "{err}");
        let err = parse("auth_service:\n  login:\n    lockout: 5 minutes\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid duration"), "{err}");
        let err = parse("auth_service:\n  authentication:\n    second_factor: sms\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("auth_service.authentication.second_factor"),
            "{err}"
        );
    }

    #[test]
    fn webauthn_rp_id_is_read() {
        let cfg = parse(
            "auth_service:\n  authentication:\n    second_factor: \"on\"\n    webauthn:\n      rp_id: example.com\n",
        )
        .unwrap();
        let auth = &cfg.auth_service.authentication;
        assert_eq!(auth.second_factor, "on");
        assert_eq!(auth.webauthn.rp_id.as_deref(), Some("example.com"));
        let cfg = parse("").unwrap();
        assert_eq!(cfg.auth_service.authentication.webauthn.rp_id, None);
    }

    #[test]
    fn zero_deadlines_and_budgets_are_refused_by_name() {
        for field in [
            "first_byte_timeout",
            "handshake_timeout",
            "ssh_auth_timeout",
            "http_header_timeout",
            "http_idle_timeout",
            "web_idle_timeout",
            "tunnel_hello_timeout",
            "db_startup_timeout",
        ] {
            let err = parse(&format!("proxy_service:\n  {field}: 0s\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("proxy_service.{field}")), "{err}");
        }
        let err = parse("ssh_service:\n  auth_timeout: 0s\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("ssh_service.auth_timeout"), "{err}");
        let err = parse("proxy_service:\n  max_preauth_connections_per_ip: 0\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("proxy_service.max_preauth_connections_per_ip"),
            "{err}"
        );
        for pct in ["0", "101", "-1"] {
            let err = parse(&format!(
                "proxy_service:\n  max_preauth_connections_percent: {pct}\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(
                err.contains("proxy_service.max_preauth_connections_percent"),
                "{err}"
            );
        }
        let cfg = parse("proxy_service:\n  max_preauth_connections_percent: 0.5\n").unwrap();
        assert_eq!(cfg.proxy_service.max_preauth_connections_percent, 0.5);
    }

    #[test]
    fn malformed_yaml_is_an_error_not_a_panic() {
        for text in [
            "hop: [",
            "\t- x",
            "a: b: c",
            "hop:\n  roles: {",
            "\u{0}\u{1}",
            "*x",
        ] {
            assert!(parse(text).is_err(), "accepted {text:?}");
        }
    }
}
