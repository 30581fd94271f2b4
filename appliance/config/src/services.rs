//! What an agent publishes, as the operator describes it (flags or YAML): applications (their
//! spec lives in `app_spec`, re-exported here), Kubernetes clusters (`kube_service`, re-exported
//! here), databases, and selectors of `db` resources.
//! Each spec parses its flag form and validates itself with errors that name the field; agents
//! serve these specs, and `Config::validate` checks them at start.

use std::collections::BTreeMap;
use std::path::PathBuf;

use hop_net::connect::split_host_port;
use hop_protocols::tunnel::ResourceAnnouncement;
use serde::Deserialize;

pub use crate::app_rewrite::{AppRewrite, HeaderRewrite, RewriteError, ValueTemplate};
pub use crate::app_spec::{AppScheme, AppSpec, AppSpecError};
pub use crate::kube_service::{KubeClusterSpec, KubeSpecError};

/// Why a `--db`, `--app` or `--kube-cluster` flag does not parse (the operator's text): its syntax, or a spec that
/// is not valid once read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecFlagError {
    #[error("{flag}: expected key=value, got {part:?}")]
    NotKeyValue { flag: &'static str, part: String },
    #[error("{flag}: label {label:?} is not key=value")]
    LabelNotKeyValue { flag: &'static str, label: String },
    #[error("{flag}: unknown key {key:?}; expected {expected}")]
    UnknownKey {
        flag: &'static str,
        key: String,
        expected: &'static str,
    },
    #[error("{flag}: {key}= is required")]
    Missing {
        flag: &'static str,
        key: &'static str,
    },
    #[error("{flag}: {key}={value:?}: expected true or false")]
    NotBool {
        flag: &'static str,
        key: &'static str,
        value: String,
    },
    #[error(transparent)]
    Db(#[from] DbSpecError),
    #[error(transparent)]
    App(#[from] AppSpecError),
    #[error(transparent)]
    Kube(#[from] KubeSpecError),
}

/// Why a database spec is not one an agent can serve (the operator's configuration).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DbSpecError {
    #[error("database name {name:?}: use 1 to 64 letters, digits, '-', '_' and '.'")]
    Name { name: String },
    #[error("database {name:?}: uri {uri:?} must start with postgres:// or mysql://")]
    Protocol { name: String, uri: String },
    #[error("database {name:?}: uri has no scheme")]
    NoScheme { name: String },
    #[error("database {name:?}: uri has no host")]
    NoHost { name: String },
    #[error("database {name:?}: {reason}")]
    Address { name: String, reason: String },
}

/// Splits a flag's `key=value` part.
pub(crate) fn key_value<'a>(
    flag: &'static str,
    part: &'a str,
) -> Result<(&'a str, &'a str), SpecFlagError> {
    part.split_once('=')
        .ok_or_else(|| SpecFlagError::NotKeyValue {
            flag,
            part: part.into(),
        })
}

/// The labels of a flag's `labels=k=v;k2=v2` value, in order.
pub(crate) fn flag_labels(
    flag: &'static str,
    value: &str,
) -> Result<Vec<(String, String)>, SpecFlagError> {
    value
        .split(';')
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| SpecFlagError::LabelNotKeyValue {
                    flag,
                    label: l.into(),
                })
        })
        .collect()
}

/// Statement text kept in a `db.query` event before it is cut (configurable).
pub const DEFAULT_MAX_STATEMENT: usize = 4096;

/// A database an agent publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbSpec {
    pub name: String,
    /// `postgres://host:port` or `mysql://host:port`.
    pub uri: String,
    /// CA certificates (PEM) that sign the database's server certificate; system roots if
    /// neither this nor `ca_pem` is set.
    pub ca_file: Option<PathBuf>,
    /// The same, inline (from a `db` resource's `spec.tls.ca_cert`).
    pub ca_pem: Option<String>,
    /// The name the database's certificate is checked against [default: the URI's host].
    pub server_name: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// Protocols a db agent speaks to databases.
pub const PROTOCOLS: &[&str] = &["postgres", "mysql"];

impl DbSpec {
    /// Parses `name=pg,uri=postgres://127.0.0.1:5432,ca_file=/etc/pg/ca.crt,labels=env=dev;team=x`
    /// (or `uri=mysql://…`).
    pub fn parse(s: &str) -> Result<Self, SpecFlagError> {
        const FLAG: &str = "--db";
        let mut spec = DbSpec {
            name: String::new(),
            uri: String::new(),
            ca_file: None,
            ca_pem: None,
            server_name: None,
            labels: BTreeMap::new(),
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = key_value(FLAG, part)?;
            match k {
                "name" => spec.name = v.to_string(),
                "uri" => spec.uri = v.to_string(),
                "ca_file" | "ca" => spec.ca_file = Some(PathBuf::from(v)),
                "server_name" => spec.server_name = Some(v.to_string()),
                "labels" | "label" => spec.labels.extend(flag_labels(FLAG, v)?),
                other => {
                    return Err(SpecFlagError::UnknownKey {
                        flag: FLAG,
                        key: other.into(),
                        expected: "name, uri, ca_file, server_name, labels",
                    });
                }
            }
        }
        spec.validate()?;
        Ok(spec)
    }

    pub fn validate(&self) -> Result<(), DbSpecError> {
        if self.name.is_empty()
            || self.name.len() > 64
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(DbSpecError::Name {
                name: self.name.clone(),
            });
        }
        if !PROTOCOLS.contains(&self.protocol()) {
            return Err(DbSpecError::Protocol {
                name: self.name.clone(),
                uri: self.uri.clone(),
            });
        }
        self.target().map(drop)
    }

    /// `postgres`, from the URI's scheme (`postgresql://` too).
    pub fn protocol(&self) -> &str {
        match self.uri.split_once("://").map(|(s, _)| s) {
            Some("postgres" | "postgresql") => "postgres",
            Some("mysql" | "mariadb") => "mysql",
            Some(other) => other,
            None => "",
        }
    }

    /// The `host:port` of the URI (5432 for PostgreSQL, 3306 for MySQL when none is given).
    pub fn target(&self) -> Result<(String, u16), DbSpecError> {
        let name = || self.name.clone();
        let rest = self
            .uri
            .split_once("://")
            .map(|(_, r)| r)
            .ok_or_else(|| DbSpecError::NoScheme { name: name() })?;
        let hostport = rest.split(['/', '?']).next().unwrap_or_default();
        if hostport.is_empty() {
            return Err(DbSpecError::NoHost { name: name() });
        }
        let default_port = if self.protocol() == "mysql" {
            3306
        } else {
            5432
        };
        if hostport.contains(':') && !hostport.ends_with(']') {
            split_host_port(hostport).map_err(|e| DbSpecError::Address {
                name: name(),
                reason: e.to_string(),
            })
        } else {
            Ok((
                hostport
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string(),
                default_port,
            ))
        }
    }

    /// The name the database's certificate must carry.
    pub fn server_name(&self) -> Result<String, DbSpecError> {
        match &self.server_name {
            Some(n) => Ok(n.clone()),
            None => self.target().map(|(h, _)| h),
        }
    }

    /// How the agent announces this database to the proxy.
    pub fn announcement(&self) -> ResourceAnnouncement {
        ResourceAnnouncement {
            kind: "db".into(),
            name: self.name.clone(),
            labels: self
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            target: Some(format!(
                "{}://{}",
                self.protocol(),
                self.uri.split_once("://").map(|(_, r)| r).unwrap_or("")
            )),
        }
    }
}

/// One entry of `db_service.resources`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    pub labels: BTreeMap<String, String>,
}

impl Selector {
    /// Does this selector take a database with `labels`? An empty selector takes nothing.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        if self.labels.is_empty() {
            return false;
        }
        self.labels.iter().all(|(k, v)| {
            (k == "*" && v == "*") || labels.get(k).is_some_and(|have| v == "*" || have == v)
        })
    }
}
