//! The `token` resource: a join token that lets an agent obtain its first host certificate.
//!
//! This module owns [`ProvisionToken`] and its `validate()`. The token's name *is* the secret, so
//! this module must never print it: `Debug` redacts it and validation messages never echo it.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::resource::{Kind, Metadata};
use crate::validation::{FieldPath, Problem, ValidationError, check_kind, check_version, invalid};

/// Versions accepted for tokens.
pub const TOKEN_VERSIONS: &[&str] = &["v2"];

/// Shortest accepted token secret.
pub const MIN_TOKEN_LEN: usize = 16;

/// `kind: token`. `metadata.name` is the secret; `metadata.expires` is required.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionToken {
    /// Always `token`.
    pub kind: String,
    /// `v2`.
    pub version: String,
    /// `name` is the secret; `expires` is required.
    pub metadata: Metadata,
    /// What the token lets an agent become.
    pub spec: ProvisionTokenSpec,
}

/// `spec` of a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionTokenSpec {
    /// Roles an agent joining with this token gets.
    pub roles: Vec<SystemRole>,
    /// How the token is presented; only `token` is supported.
    #[serde(default)]
    pub join_method: JoinMethod,
    /// Remaining uses; absent = until expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses: Option<u32>,
}

/// An agent's role in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SystemRole {
    /// SSH agent.
    Node,
    /// Proxy.
    Proxy,
    /// Database agent.
    Db,
    /// Application agent.
    App,
    /// Kubernetes agent.
    Kube,
    /// Windows desktop agent.
    WindowsDesktop,
    /// Machine identity.
    Bot,
    /// Discovery service.
    Discovery,
}

impl SystemRole {
    /// The YAML spelling.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Node => "node",
            Self::Proxy => "proxy",
            Self::Db => "db",
            Self::App => "app",
            Self::Kube => "kube",
            Self::WindowsDesktop => "windows_desktop",
            Self::Bot => "bot",
            Self::Discovery => "discovery",
        }
    }
}

impl std::str::FromStr for SystemRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            Self::Node,
            Self::Proxy,
            Self::Db,
            Self::App,
            Self::Kube,
            Self::WindowsDesktop,
            Self::Bot,
            Self::Discovery,
        ]
        .into_iter()
        .find(|r| r.as_str() == s.trim())
        .ok_or_else(|| {
            format!(
                "unknown role {s:?}; expected node, proxy, db, app, kube, windows_desktop, bot or discovery"
            )
        })
    }
}

/// How a join token is presented.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JoinMethod {
    /// The agent presents the token's name.
    #[default]
    Token,
}

impl fmt::Debug for ProvisionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = Metadata {
            name: "<redacted>".into(),
            ..self.metadata.clone()
        };
        f.debug_struct("ProvisionToken")
            .field("kind", &self.kind)
            .field("version", &self.version)
            .field("metadata", &redacted)
            .field("spec", &self.spec)
            .finish()
    }
}

impl Kind for ProvisionToken {
    const KIND: &'static str = "token";

    fn name(&self) -> &str {
        &self.metadata.name
    }

    fn metadata(&self) -> &Metadata {
        &self.metadata
    }
}

impl ProvisionToken {
    /// A token with the given secret, roles and expiry.
    #[must_use]
    pub fn new(secret: impl Into<String>, roles: &[SystemRole], expires: OffsetDateTime) -> Self {
        Self {
            kind: Self::KIND.to_owned(),
            version: TOKEN_VERSIONS[0].to_owned(),
            metadata: Metadata {
                expires: Some(expires),
                ..Metadata::named(secret)
            },
            spec: ProvisionTokenSpec {
                roles: roles.to_vec(),
                join_method: JoinMethod::Token,
                uses: None,
            },
        }
    }

    /// Kind, version, secret length, expiry and roles.
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_kind(&self.kind, Self::KIND)?;
        check_version(&self.version, TOKEN_VERSIONS)?;
        self.metadata.validate()?;
        let name = FieldPath::new("metadata.name");
        if self.metadata.name.chars().count() < MIN_TOKEN_LEN {
            return Err(invalid(
                &name,
                Problem::Invalid(format!(
                    "a token must be at least {MIN_TOKEN_LEN} characters long"
                )),
            ));
        }
        if self.metadata.expires.is_none() {
            return Err(invalid(
                &FieldPath::new("metadata.expires"),
                Problem::Required,
            ));
        }
        if self.spec.roles.is_empty() {
            return Err(invalid(&FieldPath::new("spec.roles"), Problem::Empty));
        }
        if self.spec.uses == Some(0) {
            return Err(invalid(
                &FieldPath::new("spec.uses"),
                Problem::Invalid("must be at least 1 (omit it for unlimited uses)".into()),
            ));
        }
        Ok(())
    }
}
