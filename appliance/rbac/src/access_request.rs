//! The access request sections of a role, in Teleport's shape: `allow.request` (which roles the
//! holder may request, with review thresholds, suggested reviewers, the longest access and
//! whether a reason is required) and `allow.review_requests` (whose requests, by the roles
//! requested, the holder may review).
//!
//! This module owns the types and their validation only; what a request or a review may do is
//! decided by Auth (`hop_auth::access_requests`), which reads these sections from the roles.

use serde::{Deserialize, Serialize};

use crate::compat::Verbatim;
use crate::duration::Duration;
use crate::validation::{FieldPath, Problem, ValidationError, check_names, invalid};

/// `request`: which roles the holder may request, and on what terms.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRequestConditions {
    /// Role names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Claim to role mappings. Stored, ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claims_to_roles: Option<Verbatim>,
    /// Annotations for request plugins. Stored, ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Verbatim>,
    /// How many approvals resolve a request, and how many denials. Hop applies every threshold
    /// of every role that allows the request (all approval counts must be met; any denial
    /// count denies). None: one approval, one denial.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub thresholds: Vec<AccessReviewThreshold>,
    /// Users suggested as reviewers (shown on the request).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suggested_reviewers: Vec<String>,
    /// Roles to search resources as. Stored, ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_as_roles: Option<Verbatim>,
    /// The longest an approved request grants access, counted from its creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration: Option<Duration>,
    /// Requestable Kubernetes resource kinds. Stored, ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_resources: Option<Verbatim>,
    /// Whether a request must give a reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<RequestReason>,
}

/// `request.thresholds[i]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessReviewThreshold {
    /// A name for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Teleport's predicate selecting the requests it applies to. Not evaluated: Hop applies
    /// the threshold to every request, which is stricter (all thresholds must be met).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Approvals that approve (0: 1).
    #[serde(default)]
    pub approve: u32,
    /// Denials that deny (0: 1).
    #[serde(default)]
    pub deny: u32,
}

/// `request.reason`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestReason {
    /// `required` or `optional` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// `review_requests`: the roles whose requests the holder may review.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessReviewConditions {
    /// Requested role names the holder may review.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Claim to role mappings. Stored, ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claims_to_roles: Option<Verbatim>,
    /// Teleport's predicate over the request; refused under `allow` (ignoring it would let
    /// more people review), stored under `deny`.
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    pub where_: Option<String>,
    /// Roles whose resources a reviewer may preview. Stored, ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_as_roles: Option<Verbatim>,
}

impl AccessRequestConditions {
    /// Whether requests under these conditions must carry a reason.
    #[must_use]
    pub fn reason_required(&self) -> bool {
        self.reason
            .as_ref()
            .and_then(|r| r.mode.as_deref())
            .is_some_and(|m| m == "required")
    }

    pub(crate) fn validate(&self, field: &FieldPath) -> Result<(), ValidationError> {
        check_names(&field.key("roles"), &self.roles)?;
        check_names(&field.key("suggested_reviewers"), &self.suggested_reviewers)?;
        if let Some(mode) = self.reason.as_ref().and_then(|r| r.mode.as_deref())
            && !matches!(mode, "required" | "optional")
        {
            return Err(invalid(
                &field.key("reason").key("mode"),
                Problem::Invalid(format!(
                    "unknown mode {mode:?}, expected required or optional"
                )),
            ));
        }
        if self.max_duration.is_some_and(|d| d.as_std().is_zero()) {
            return Err(invalid(
                &field.key("max_duration"),
                Problem::Invalid("must be longer than zero".into()),
            ));
        }
        Ok(())
    }
}

impl AccessReviewThreshold {
    /// Approvals needed (at least one).
    #[must_use]
    pub fn approvals(&self) -> u32 {
        self.approve.max(1)
    }

    /// Denials needed (at least one).
    #[must_use]
    pub fn denials(&self) -> u32 {
        self.deny.max(1)
    }
}
