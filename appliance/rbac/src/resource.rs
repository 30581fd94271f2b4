//! The resource envelope shared by every kind: `kind`, `version`, `metadata`, `spec`.
//!
//! This module owns [`Metadata`], the [`Kind`] trait and the [`Resource`] sum type that
//! `parse_resources` returns. It knows the list of kinds; it never parses YAML itself and never
//! holds secrets other than a token's name (whose `Debug` is redacted by the token type).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;

use crate::cluster::{AuthPreference, CertAuthorityResource, ClusterName};
use crate::compat::FieldWarning;
use crate::database::DatabaseResource;
use crate::github::GithubConnector;
use crate::lock::LockResource;
use crate::node::NodeResource;
use crate::oidc::OidcConnector;
use crate::role::Role;
use crate::saml::SamlConnector;
use crate::token::ProvisionToken;
use crate::user::User;
use crate::validation::{FieldPath, Problem, ValidationError, check_name, invalid};

/// `metadata`: name, description, labels, optional expiry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// The resource's name; unique per kind.
    pub name: String,
    /// Free text for operators.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The resource's own labels (not selectors).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// When the resource stops existing (RFC 3339).
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub expires: Option<OffsetDateTime>,
    /// Storage revision as printed by `get`; accepted on input so that `get` output can be fed
    /// back to `create`, and otherwise ignored by this crate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

impl Metadata {
    /// Metadata with just a name.
    #[must_use]
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// Name and label keys are well formed.
    pub(crate) fn validate(&self) -> Result<(), ValidationError> {
        check_name(&FieldPath::new("metadata.name"), &self.name)?;
        let labels = FieldPath::new("metadata.labels");
        for key in self.labels.keys() {
            if key.is_empty() || key.chars().any(char::is_control) {
                return Err(invalid(
                    &labels,
                    Problem::Invalid(format!("invalid label key {key:?}")),
                ));
            }
        }
        Ok(())
    }
}

/// Implemented by every resource type; the appliance adapts it to its storage trait.
pub trait Kind {
    /// The `kind:` string, e.g. `role`.
    const KIND: &'static str;
    /// `metadata.name`.
    fn name(&self) -> &str;
    /// The whole `metadata`.
    fn metadata(&self) -> &Metadata;
}

/// One resource document: kind + version + metadata + spec, like Teleport's.
///
/// Serializes as the inner document. Deserializing (e.g. from JSON in storage) dispatches on
/// `kind` but does not validate; `parse_resources` is the validating entry point for operator
/// input.
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    /// `kind: role`
    Role(Role),
    /// `kind: user`
    User(User),
    /// `kind: token`
    Token(ProvisionToken),
    /// `kind: cluster_name`
    ClusterName(ClusterName),
    /// `kind: cluster_auth_preference`
    ClusterAuthPreference(AuthPreference),
    /// `kind: cert_authority`
    CertAuthority(CertAuthorityResource),
    /// `kind: db`
    Database(DatabaseResource),
    /// `kind: node` (`sub_kind: openssh`)
    Node(NodeResource),
    /// `kind: lock`
    Lock(LockResource),
    /// `kind: oidc`
    Oidc(OidcConnector),
    /// `kind: github`
    Github(GithubConnector),
    /// `kind: saml`
    Saml(SamlConnector),
}

/// Every kind this crate knows, in the order error messages list them.
pub const KINDS: &[&str] = &[
    Role::KIND,
    User::KIND,
    ProvisionToken::KIND,
    ClusterName::KIND,
    AuthPreference::KIND,
    CertAuthorityResource::KIND,
    DatabaseResource::KIND,
    NodeResource::KIND,
    LockResource::KIND,
    OidcConnector::KIND,
    GithubConnector::KIND,
    SamlConnector::KIND,
];

impl Resource {
    /// The `kind:` string.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Role(_) => Role::KIND,
            Self::User(_) => User::KIND,
            Self::Token(_) => ProvisionToken::KIND,
            Self::ClusterName(_) => ClusterName::KIND,
            Self::ClusterAuthPreference(_) => AuthPreference::KIND,
            Self::CertAuthority(_) => CertAuthorityResource::KIND,
            Self::Database(_) => DatabaseResource::KIND,
            Self::Node(_) => NodeResource::KIND,
            Self::Lock(_) => LockResource::KIND,
            Self::Oidc(_) => OidcConnector::KIND,
            Self::Github(_) => GithubConnector::KIND,
            Self::Saml(_) => SamlConnector::KIND,
        }
    }

    /// `metadata.name` (for a token, the secret itself).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.metadata().name
    }

    /// The whole `metadata`.
    #[must_use]
    pub fn metadata(&self) -> &Metadata {
        match self {
            Self::Role(r) => r.metadata(),
            Self::User(r) => r.metadata(),
            Self::Token(r) => r.metadata(),
            Self::ClusterName(r) => r.metadata(),
            Self::ClusterAuthPreference(r) => r.metadata(),
            Self::CertAuthority(r) => r.metadata(),
            Self::Database(r) => r.metadata(),
            Self::Node(r) => r.metadata(),
            Self::Lock(r) => r.metadata(),
            Self::Oidc(r) => r.metadata(),
            Self::Github(r) => r.metadata(),
            Self::Saml(r) => r.metadata(),
        }
    }

    /// Runs the kind's `validate`.
    pub fn validate(&self) -> Result<(), ValidationError> {
        match self {
            Self::Role(r) => r.validate(),
            Self::User(r) => r.validate(),
            Self::Token(r) => r.validate(),
            Self::ClusterName(r) => r.validate(),
            Self::ClusterAuthPreference(r) => r.validate(),
            Self::CertAuthority(r) => r.validate(),
            Self::Database(r) => r.validate(),
            Self::Node(r) => r.validate(),
            Self::Lock(r) => r.validate(),
            Self::Oidc(r) => r.validate(),
            Self::Github(r) => r.validate(),
            Self::Saml(r) => r.validate(),
        }
    }

    /// Fields this resource sets that Hop stores but ignores (only roles have any).
    #[must_use]
    pub fn warnings(&self) -> Vec<FieldWarning> {
        match self {
            Self::Role(r) => r.warnings(),
            _ => Vec::new(),
        }
    }

    /// How error messages name this resource: `role "dev"`, or just `token` (a token's name is
    /// its secret and is never printed).
    #[must_use]
    pub fn display_name(&self) -> String {
        describe(self.kind(), self.name())
    }
}

/// `role "dev"`; tokens are never named.
pub(crate) fn describe(kind: &str, name: &str) -> String {
    if kind == ProvisionToken::KIND {
        kind.to_owned()
    } else {
        format!("{kind} {name:?}")
    }
}

macro_rules! from_variant {
    ($($ty:ty => $variant:ident),* $(,)?) => {$(
        impl From<$ty> for Resource {
            fn from(r: $ty) -> Self {
                Self::$variant(r)
            }
        }
    )*};
}

from_variant! {
    Role => Role,
    User => User,
    ProvisionToken => Token,
    ClusterName => ClusterName,
    AuthPreference => ClusterAuthPreference,
    CertAuthorityResource => CertAuthority,
    DatabaseResource => Database,
    NodeResource => Node,
    LockResource => Lock,
    OidcConnector => Oidc,
    GithubConnector => Github,
    SamlConnector => Saml,
}

impl Serialize for Resource {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Role(r) => r.serialize(serializer),
            Self::User(r) => r.serialize(serializer),
            Self::Token(r) => r.serialize(serializer),
            Self::ClusterName(r) => r.serialize(serializer),
            Self::ClusterAuthPreference(r) => r.serialize(serializer),
            Self::CertAuthority(r) => r.serialize(serializer),
            Self::Database(r) => r.serialize(serializer),
            Self::Node(r) => r.serialize(serializer),
            Self::Lock(r) => r.serialize(serializer),
            Self::Oidc(r) => r.serialize(serializer),
            Self::Github(r) => r.serialize(serializer),
            Self::Saml(r) => r.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Resource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let value = serde_json::Value::deserialize(deserializer)?;
        let kind = value
            .get("kind")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| D::Error::missing_field("kind"))?
            .to_owned();
        let typed = |e: serde_json::Error| D::Error::custom(e);
        Ok(match kind.as_str() {
            Role::KIND => Self::Role(serde_json::from_value(value).map_err(typed)?),
            User::KIND => Self::User(serde_json::from_value(value).map_err(typed)?),
            ProvisionToken::KIND => Self::Token(serde_json::from_value(value).map_err(typed)?),
            ClusterName::KIND => Self::ClusterName(serde_json::from_value(value).map_err(typed)?),
            AuthPreference::KIND => {
                Self::ClusterAuthPreference(serde_json::from_value(value).map_err(typed)?)
            }
            CertAuthorityResource::KIND => {
                Self::CertAuthority(serde_json::from_value(value).map_err(typed)?)
            }
            DatabaseResource::KIND => Self::Database(serde_json::from_value(value).map_err(typed)?),
            NodeResource::KIND => Self::Node(serde_json::from_value(value).map_err(typed)?),
            LockResource::KIND => Self::Lock(serde_json::from_value(value).map_err(typed)?),
            OidcConnector::KIND => Self::Oidc(serde_json::from_value(value).map_err(typed)?),
            GithubConnector::KIND => Self::Github(serde_json::from_value(value).map_err(typed)?),
            SamlConnector::KIND => Self::Saml(serde_json::from_value(value).map_err(typed)?),
            other => return Err(D::Error::unknown_variant(other, KINDS)),
        })
    }
}
