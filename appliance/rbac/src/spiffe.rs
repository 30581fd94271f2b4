//! Which SPIFFE paths a set of roles lets its holder obtain SVIDs for, from Teleport's
//! `spec.allow.spiffe` / `spec.deny.spiffe` shape: a list of `{path: "/svc/*", ...}` entries whose
//! `path` is a glob (`*` matches anything, `/` included) or a `^regex$`. Deny wins across all
//! roles; nothing is allowed by default. Other keys of an entry (`dns_sans`, `ip_sans`) are not
//! honoured: Hop's SVIDs carry only the URI SAN, so ignoring them only narrows what is issued.
//! An allow entry this module cannot read grants nothing; a deny entry it cannot read denies
//! every path (fail closed).

use crate::compat::Verbatim;
use crate::labels::Pattern;
use crate::role::Role;

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeDenied {
    /// A deny entry of role `role` matches the path (or cannot be read).
    #[error("SPIFFE path {path:?} is denied by role {role:?}")]
    Denied {
        /// The path asked for.
        path: String,
        /// The denying role.
        role: String,
    },
    /// No allow entry of any role matches.
    #[error("no role of this identity allows SPIFFE path {path:?} (spec.allow.spiffe)")]
    NotAllowed {
        /// The path asked for.
        path: String,
    },
}

/// One side's entries as patterns; `None` for an entry that cannot be read.
fn patterns(side: Option<&Verbatim>) -> Vec<Option<Pattern>> {
    let Some(Verbatim(value)) = side else {
        return Vec::new();
    };
    let serde_json::Value::Array(entries) = value else {
        return vec![None];
    };
    entries
        .iter()
        .map(|e| {
            e.get("path")
                .and_then(serde_json::Value::as_str)
                .filter(|p| !p.is_empty())
                .and_then(|p| Pattern::compile(p).ok())
        })
        .collect()
}

/// Whether `roles` let their holder obtain an SVID for `path` (a checked SPIFFE path).
///
/// # Errors
/// [`SpiffeDenied`] saying which role denies it, or that none allows it.
pub fn check_spiffe_path(roles: &[Role], path: &str) -> Result<(), SpiffeDenied> {
    for role in roles {
        let deny = patterns(role.spec.deny.spiffe.as_ref().filter(|v| v.is_set()));
        if deny
            .iter()
            .any(|p| p.as_ref().is_none_or(|p| p.matches(path)))
        {
            return Err(SpiffeDenied::Denied {
                path: path.to_owned(),
                role: role.metadata.name.clone(),
            });
        }
    }
    let allowed = roles.iter().any(|role| {
        patterns(role.spec.allow.spiffe.as_ref())
            .iter()
            .flatten()
            .any(|p| p.matches(path))
    });
    if allowed {
        Ok(())
    } else {
        Err(SpiffeDenied::NotAllowed {
            path: path.to_owned(),
        })
    }
}

#[cfg(test)]
#[path = "spiffe_tests.rs"]
mod tests;
