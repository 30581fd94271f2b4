//! The `user` resource: role assignments, traits and lock status.
//!
//! This module owns the user types and their `validate()`. It must never hold credentials:
//! password hashes and TOTP secrets are stored elsewhere by the appliance, so that printing or
//! exporting a user can never leak one.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::resource::{Kind, Metadata};
use crate::traits::Traits;
use crate::validation::{
    FieldPath, Problem, ValidationError, check_kind, check_names, check_version, invalid,
};

/// Versions accepted for users.
pub const USER_VERSIONS: &[&str] = &["v2"];

/// `kind: user`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// Always `user`.
    pub kind: String,
    /// `v2`.
    pub version: String,
    /// Name (the login identity), description, labels.
    pub metadata: Metadata,
    /// Roles and traits.
    pub spec: UserSpec,
    /// Lock state, maintained by the appliance; optional on input.
    #[serde(default, skip_serializing_if = "UserStatus::is_default")]
    pub status: UserStatus,
}

/// `spec` of a user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    /// Role names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Traits that templates read: `logins`, `db_users`, `kubernetes_groups`, …
    #[serde(default, skip_serializing_if = "Traits::is_empty")]
    pub traits: Traits,
    /// Who created the user and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<CreatedBy>,
}

/// `spec.created_by`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatedBy {
    /// When (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// The creating user's name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// Set on the temporary user an SSO login creates: the connector it came through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector: Option<ConnectorRef>,
}

/// `spec.created_by.connector`: the SSO connector that made a temporary user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorRef {
    /// `oidc`, `saml` or `github`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The connector's name.
    pub id: String,
    /// The user's identity at the provider (`sub`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub identity: String,
}

/// `status` of a user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserStatus {
    /// Locked users cannot log in.
    #[serde(default)]
    pub locked: bool,
    /// When a temporary lock ends.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub locked_until: Option<OffsetDateTime>,
    /// Why the user was locked.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub lock_reason: String,
    /// Consecutive failed logins.
    #[serde(default)]
    pub failed_logins: u32,
    /// Certificates issued before this are void (set when the user is locked by an
    /// administrator); absent: none.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub not_before: Option<OffsetDateTime>,
}

impl UserStatus {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

impl Kind for User {
    const KIND: &'static str = "user";

    fn name(&self) -> &str {
        &self.metadata.name
    }

    fn metadata(&self) -> &Metadata {
        &self.metadata
    }
}

impl User {
    /// A user with roles and no traits.
    #[must_use]
    pub fn new(name: impl Into<String>, roles: &[&str]) -> Self {
        Self {
            kind: Self::KIND.to_owned(),
            version: USER_VERSIONS[0].to_owned(),
            metadata: Metadata::named(name),
            spec: UserSpec {
                roles: roles.iter().map(|r| (*r).to_owned()).collect(),
                ..UserSpec::default()
            },
            status: UserStatus::default(),
        }
    }

    /// Kind, version, name, role names and trait names are well formed.
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_kind(&self.kind, Self::KIND)?;
        check_version(&self.version, USER_VERSIONS)?;
        self.metadata.validate()?;
        check_names(&FieldPath::new("spec.roles"), &self.spec.roles)?;
        let traits = FieldPath::new("spec.traits");
        for (name, values) in &self.spec.traits {
            if name.is_empty() {
                return Err(invalid(
                    &traits,
                    Problem::Invalid("empty trait name".into()),
                ));
            }
            if values.iter().any(|v| v.chars().any(char::is_control)) {
                return Err(invalid(
                    &traits.key(name),
                    Problem::Invalid("contains a control character".into()),
                ));
            }
        }
        Ok(())
    }
}
