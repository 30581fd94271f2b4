//! The `lock` resource: a standing refusal of everything one target does, in Teleport's shape.
//!
//! This module owns [`LockResource`], its target ([`LockTarget`]) and `validate()`. A lock names
//! its target by value (a user name, a role, an OS login, an agent's host id, an access
//! request, a bot), so it holds whether or not the target exists: SSO users and bots come and
//! go, and a lock made before a user is created still applies to that user. Deciding whether a
//! lock applies to a session is the admission crate's; this module only describes locks.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::resource::{Kind, Metadata};
use crate::validation::{FieldPath, Problem, ValidationError, check_kind, check_version, invalid};

/// Versions accepted for locks.
pub const LOCK_VERSIONS: &[&str] = &["v2"];

/// `kind: lock`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockResource {
    /// Always `lock`.
    pub kind: String,
    /// `v2`.
    pub version: String,
    /// `name` is the lock's id; `expires` (optional) is when the lock lapses.
    pub metadata: Metadata,
    pub spec: LockSpec,
}

/// `spec` of a lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockSpec {
    /// What is locked: exactly one field set.
    pub target: LockTarget,
    /// Shown to whoever the lock refuses.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// When the lock lapses (RFC 3339); absent = until removed. Teleport writes it here
    /// rather than in `metadata.expires`; both are honoured.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub expires: Option<OffsetDateTime>,
    /// Who made the lock.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub created_by: String,
    /// When it was made.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub created: Option<OffsetDateTime>,
}

/// The one thing a lock refuses. Field names are Teleport's (`server_id` is an agent's host
/// id; `bot` is Hop's shorthand for the user `bot-NAME`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockTarget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_request: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot: Option<String>,
}

impl LockTarget {
    /// `(field, value)` for every field that is set.
    #[must_use]
    pub fn fields(&self) -> Vec<(&'static str, &str)> {
        [
            ("user", &self.user),
            ("role", &self.role),
            ("login", &self.login),
            ("server_id", &self.server_id),
            ("access_request", &self.access_request),
            ("bot", &self.bot),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
        .collect()
    }

    /// How messages name the target: `user "alice"`.
    #[must_use]
    pub fn describe(&self) -> String {
        self.fields()
            .first()
            .map(|(k, v)| format!("{k} {v:?}"))
            .unwrap_or_else(|| "nothing".into())
    }
}

impl Kind for LockResource {
    const KIND: &'static str = "lock";

    fn name(&self) -> &str {
        &self.metadata.name
    }

    fn metadata(&self) -> &Metadata {
        &self.metadata
    }
}

impl LockResource {
    /// A lock named `id` on `target`.
    #[must_use]
    pub fn new(id: &str, target: LockTarget, message: &str, created_by: &str) -> Self {
        Self {
            kind: Self::KIND.into(),
            version: "v2".into(),
            metadata: Metadata::named(id),
            spec: LockSpec {
                target,
                message: message.into(),
                expires: None,
                created_by: created_by.into(),
                created: None,
            },
        }
    }

    /// When the lock lapses: the earlier of `spec.expires` and `metadata.expires`.
    #[must_use]
    pub fn expires(&self) -> Option<OffsetDateTime> {
        match (self.spec.expires, self.metadata.expires) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Checks kind, version, metadata, and that the target names exactly one non-empty thing.
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_kind(&self.kind, Self::KIND)?;
        check_version(&self.version, LOCK_VERSIONS)?;
        self.metadata.validate()?;
        let fields = self.spec.target.fields();
        let path = FieldPath::new("spec.target");
        match fields.as_slice() {
            [] => Err(invalid(
                &path,
                Problem::Invalid(
                    "name one target: user, role, login, server_id, access_request or bot".into(),
                ),
            )),
            [(k, v)] if v.trim().is_empty() => Err(invalid(
                &FieldPath::new(&format!("spec.target.{k}")),
                Problem::Empty,
            )),
            [_] => Ok(()),
            _ => Err(invalid(
                &path,
                Problem::Invalid(format!(
                    "a lock has one target; this one names {}",
                    fields
                        .iter()
                        .map(|(k, _)| *k)
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            )),
        }
    }
}
