//! What an agent publishes, as the operator describes it (flags or YAML): TCP applications,
//! databases, and selectors of `db` resources. Each spec parses its flag form and validates
//! itself with errors that name the field; agents serve these specs, and `Config::validate`
//! checks them at start.

use std::collections::BTreeMap;
use std::path::PathBuf;

use hop_net::connect::split_host_port;
use hop_protocols::tunnel::ResourceAnnouncement;
use serde::Deserialize;

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
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut spec = DbSpec {
            name: String::new(),
            uri: String::new(),
            ca_file: None,
            ca_pem: None,
            server_name: None,
            labels: BTreeMap::new(),
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("--db: expected key=value, got {part:?}"))?;
            match k {
                "name" => spec.name = v.to_string(),
                "uri" => spec.uri = v.to_string(),
                "ca_file" | "ca" => spec.ca_file = Some(PathBuf::from(v)),
                "server_name" => spec.server_name = Some(v.to_string()),
                "labels" | "label" => {
                    for l in v.split(';').filter(|l| !l.is_empty()) {
                        let (lk, lv) = l
                            .split_once('=')
                            .ok_or_else(|| format!("--db: label {l:?} is not key=value"))?;
                        spec.labels.insert(lk.to_string(), lv.to_string());
                    }
                }
                other => {
                    return Err(format!(
                        "--db: unknown key {other:?}; expected name, uri, ca_file, server_name, labels"
                    ));
                }
            }
        }
        spec.validate()?;
        Ok(spec)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty()
            || self.name.len() > 64
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(format!(
                "database name {:?}: use 1 to 64 letters, digits, '-', '_' and '.'",
                self.name
            ));
        }
        if !PROTOCOLS.contains(&self.protocol()) {
            return Err(format!(
                "database {:?}: uri {:?} must start with postgres:// or mysql://",
                self.name, self.uri
            ));
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
    pub fn target(&self) -> Result<(String, u16), String> {
        let rest = self
            .uri
            .split_once("://")
            .map(|(_, r)| r)
            .ok_or_else(|| format!("database {:?}: uri has no scheme", self.name))?;
        let hostport = rest.split(['/', '?']).next().unwrap_or_default();
        if hostport.is_empty() {
            return Err(format!("database {:?}: uri has no host", self.name));
        }
        let default_port = if self.protocol() == "mysql" {
            3306
        } else {
            5432
        };
        if hostport.contains(':') && !hostport.ends_with(']') {
            split_host_port(hostport).map_err(|e| format!("database {:?}: {e}", self.name))
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
    pub fn server_name(&self) -> Result<String, String> {
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

/// A TCP application this agent publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSpec {
    pub name: String,
    /// `tcp://host:port`
    pub uri: String,
    pub labels: Vec<(String, String)>,
}

impl AppSpec {
    /// Parses `name=echo,uri=tcp://127.0.0.1:7000,labels=env=dev;team=web` (labels may repeat).
    pub fn parse(s: &str) -> Result<Self, String> {
        let (mut name, mut uri, mut labels) = (None, None, Vec::new());
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("--app: expected key=value, got {part:?}"))?;
            match k {
                "name" => name = Some(v.to_string()),
                "uri" => uri = Some(v.to_string()),
                "labels" | "label" => {
                    for l in v.split(';').filter(|l| !l.is_empty()) {
                        let (lk, lv) = l
                            .split_once('=')
                            .ok_or_else(|| format!("--app: label {l:?} is not key=value"))?;
                        labels.push((lk.to_string(), lv.to_string()));
                    }
                }
                other => {
                    return Err(format!(
                        "--app: unknown key {other:?}; expected name, uri, labels"
                    ));
                }
            }
        }
        let app = AppSpec {
            name: name.ok_or("--app: name= is required")?,
            uri: uri.ok_or("--app: uri= is required")?,
            labels,
        };
        app.validate()?;
        Ok(app)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(format!(
                "app name {:?}: use letters, digits, '-', '_' and '.'",
                self.name
            ));
        }
        self.target().map(drop)
    }

    /// The `host:port` behind `tcp://`.
    pub fn target(&self) -> Result<(String, u16), String> {
        let rest = self.uri.strip_prefix("tcp://").ok_or_else(|| {
            format!(
                "app {:?}: uri {:?} must start with tcp://",
                self.name, self.uri
            )
        })?;
        split_host_port(rest)
            .map_err(|e| format!("app {:?}: {e}", self.name))
            .and_then(|(h, p)| {
                if rest.contains(':') {
                    Ok((h, p))
                } else {
                    Err(format!("app {:?}: uri needs a port", self.name))
                }
            })
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
