//! The `db` resource: a database registered with the cluster (`hop admin create -f db.yaml`),
//! served by the db agents whose `db_service.resources` selectors match its labels.
//!
//! This module owns [`DatabaseResource`] and its `validate()`: the protocol, the URI's
//! `host:port` shape, and the optional CA certificate (PEM) and server name used to verify the
//! database's certificate.

use serde::{Deserialize, Serialize};

use crate::resource::{Kind, Metadata};
use crate::validation::{FieldPath, Problem, ValidationError, check_kind, check_version, invalid};

/// Versions accepted for databases.
pub const DATABASE_VERSIONS: &[&str] = &["v3"];

/// Protocols a database resource may name.
pub const DATABASE_PROTOCOLS: &[&str] = &["postgres", "mysql"];

/// `kind: db`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseResource {
    /// Always `db`.
    pub kind: String,
    /// `v3`.
    pub version: String,
    /// `name` is how users name the database; `labels` are what roles' `db_labels` match.
    pub metadata: Metadata,
    pub spec: DatabaseSpec,
}

/// `spec` of a database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSpec {
    /// `postgres` or `mysql`.
    pub protocol: String,
    /// `host:port` the agent connects to.
    pub uri: String,
    /// How the database's certificate is verified.
    #[serde(default, skip_serializing_if = "DatabaseTls::is_default")]
    pub tls: DatabaseTls,
}

/// `spec.tls` of a database.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseTls {
    /// PEM CA certificates that sign the database's certificate; the system roots when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<String>,
    /// The name the certificate must carry; the URI's host when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

impl DatabaseTls {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

impl Kind for DatabaseResource {
    const KIND: &'static str = "db";

    fn name(&self) -> &str {
        &self.metadata.name
    }

    fn metadata(&self) -> &Metadata {
        &self.metadata
    }
}

impl DatabaseResource {
    /// Checks kind, version, metadata, protocol, URI and CA certificate.
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_kind(&self.kind, Self::KIND)?;
        check_version(&self.version, DATABASE_VERSIONS)?;
        self.metadata.validate()?;
        if !DATABASE_PROTOCOLS.contains(&self.spec.protocol.as_str()) {
            return Err(invalid(
                &FieldPath::new("spec.protocol"),
                Problem::Invalid(format!(
                    "unknown protocol {:?}, expected one of {}",
                    self.spec.protocol,
                    DATABASE_PROTOCOLS.join(", ")
                )),
            ));
        }
        let uri = FieldPath::new("spec.uri");
        let hostport = self
            .spec
            .uri
            .split_once("://")
            .map_or(self.spec.uri.as_str(), |(_, rest)| rest);
        let ok = match hostport.rsplit_once(':') {
            Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
            None => false,
        };
        if !ok || hostport.chars().any(|c| c.is_whitespace() || c == '/') {
            return Err(invalid(
                &uri,
                Problem::Invalid(format!(
                    "{:?} is not host:port (e.g. db.example.com:5432)",
                    self.spec.uri
                )),
            ));
        }
        if let Some(pem) = &self.spec.tls.ca_cert
            && !pem.contains("-----BEGIN CERTIFICATE-----")
        {
            return Err(invalid(
                &FieldPath::new("spec.tls.ca_cert"),
                Problem::Invalid("expected PEM certificates (-----BEGIN CERTIFICATE-----)".into()),
            ));
        }
        Ok(())
    }

    /// The URI's `host:port`.
    #[must_use]
    pub fn host_port(&self) -> &str {
        self.spec
            .uri
            .split_once("://")
            .map_or(self.spec.uri.as_str(), |(_, rest)| rest)
    }
}

#[cfg(test)]
mod tests {
    use crate::{Resource, parse_resources};

    #[test]
    fn databases_parse_and_bad_ones_are_named() {
        let ok = "kind: db\nversion: v3\nmetadata:\n  name: orders\n  labels: {env: prod}\nspec:\n  protocol: postgres\n  uri: db.example.com:5432\n";
        let r = parse_resources(ok, "db.yaml").unwrap();
        match &r[0] {
            Resource::Database(d) => assert_eq!(d.host_port(), "db.example.com:5432"),
            other => panic!("{other:?}"),
        }
        for (bad, needle) in [
            (ok.replace("postgres\n", "oracle\n"), "spec.protocol"),
            (
                ok.replace("db.example.com:5432", "db.example.com"),
                "spec.uri",
            ),
            (ok.replace("db.example.com:5432", "db:0"), "spec.uri"),
            (
                ok.replace(
                    "uri: db.example.com:5432\n",
                    "uri: db:1\n  tls:\n    ca_cert: nope\n",
                ),
                "spec.tls.ca_cert",
            ),
            (ok.replace("v3", "v9"), "version"),
            (ok.replace("protocol", "protocl"), "protocl"),
        ] {
            let e = parse_resources(&bad, "db.yaml").unwrap_err().to_string();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }
}
