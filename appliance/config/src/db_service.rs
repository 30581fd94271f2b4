//! The `db_service` section: the databases a `db` agent publishes (listed, or selected among
//! `db` resources), what its `db.query` events keep, and the rules that section must keep.

use std::path::PathBuf;

use serde::Deserialize;

use crate::FieldError;
use crate::services::{DEFAULT_MAX_STATEMENT, DbSpec, Selector};

/// Databases a `db` agent publishes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DbServiceConfig {
    pub databases: Vec<DbConfig>,
    /// Which `db` resources (`hop admin create -f`) this agent serves, by labels:
    /// `[{labels: {'*': '*'}}]` for all of them.
    pub resources: Vec<Selector>,
    /// What `db.query` events keep.
    pub audit: DbAuditConfig,
    /// Idle data connections the agent keeps parked at the proxy.
    pub tunnel_pool_size: Option<usize>,
}

/// `db_service.audit`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DbAuditConfig {
    /// Statement text kept per event; longer statements are cut and marked `truncated`.
    pub max_statement_bytes: usize,
    /// Record the parameters bound to extended-protocol statements (PostgreSQL).
    pub parameters: bool,
}

impl Default for DbAuditConfig {
    fn default() -> Self {
        Self {
            max_statement_bytes: DEFAULT_MAX_STATEMENT,
            parameters: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbConfig {
    pub name: String,
    /// `postgres://host:port`
    pub uri: String,
    /// CA certificates (PEM) that sign the database's server certificate [default: system roots].
    pub ca_file: Option<PathBuf>,
    /// The name the database's certificate is checked against [default: the URI's host].
    pub server_name: Option<String>,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

impl DbConfig {
    pub fn spec(&self) -> DbSpec {
        DbSpec {
            name: self.name.clone(),
            uri: self.uri.clone(),
            ca_file: self.ca_file.clone(),
            ca_pem: None,
            server_name: self.server_name.clone(),
            labels: self.labels.clone(),
        }
    }
}

impl DbServiceConfig {
    /// The `db_service` section's rules: every database is one an agent can serve, statements
    /// are kept at a sane length, and a process that runs `db` has something to serve.
    pub(crate) fn check(&self, runs_db: bool) -> Result<(), FieldError> {
        for (i, db) in self.databases.iter().enumerate() {
            db.spec()
                .validate()
                .map_err(|e| FieldError::new("db_service.databases", format!("[{i}]: {e}")))?;
        }
        if !(64..=1024 * 1024).contains(&self.audit.max_statement_bytes) {
            return Err(FieldError::new(
                "db_service.audit.max_statement_bytes",
                "must be between 64 and 1048576",
            ));
        }
        if runs_db && self.databases.is_empty() && self.resources.is_empty() {
            return Err(FieldError::new(
                "db_service.databases",
                "a db agent needs databases: db_service.databases (or --db name=…,uri=postgres://…), or db_service.resources selecting `db` resources",
            ));
        }
        Ok(())
    }
}
