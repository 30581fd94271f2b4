//! Field paths and the validation error that names them.
//!
//! This module owns [`FieldPath`] (`spec.allow.rules[0].verbs`), [`ValidationError`] and the small
//! checks shared by every resource kind (names, kinds, versions). It never looks at YAML: mapping a
//! path back to a line number is the parser's job.

use std::fmt;

/// One step in a [`FieldPath`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// A mapping key (a struct field or a label key).
    Key(String),
    /// A sequence index.
    Index(usize),
}

/// Where a field lives in a resource document, e.g. `spec.allow.node_labels`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct FieldPath(Vec<Segment>);

impl FieldPath {
    /// The document itself.
    #[must_use]
    pub const fn root() -> Self {
        Self(Vec::new())
    }

    /// A dotted path of plain keys: `FieldPath::new("spec.allow")`.
    #[must_use]
    pub fn new(dotted: &str) -> Self {
        Self(
            dotted
                .split('.')
                .filter(|s| !s.is_empty())
                .map(|s| Segment::Key(s.to_owned()))
                .collect(),
        )
    }

    /// This path extended by a key.
    #[must_use]
    pub fn key(&self, key: &str) -> Self {
        let mut v = self.0.clone();
        v.push(Segment::Key(key.to_owned()));
        Self(v)
    }

    /// This path extended by a sequence index.
    #[must_use]
    pub fn index(&self, index: usize) -> Self {
        let mut v = self.0.clone();
        v.push(Segment::Index(index));
        Self(v)
    }

    /// The steps, outermost first.
    #[must_use]
    pub fn segments(&self) -> &[Segment] {
        &self.0
    }

    /// True for the document root.
    #[must_use]
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

fn is_plain_key(k: &str) -> bool {
    !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Segment::Key(k) if is_plain_key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                Segment::Key(k) => write!(f, "[{k:?}]")?,
                Segment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// What is wrong with a field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// A required value is empty or absent.
    #[error("must not be empty")]
    Empty,
    /// A required field is absent.
    #[error("is required")]
    Required,
    /// `kind` does not match the type.
    #[error("expected {expected:?}, found {found:?}")]
    WrongKind {
        /// The type's kind.
        expected: &'static str,
        /// What the document says.
        found: String,
    },
    /// `version` is not one this kind supports.
    #[error("unsupported version {found:?}, expected one of {}", .supported.join(", "))]
    UnsupportedVersion {
        /// What the document says.
        found: String,
        /// The versions accepted for this kind.
        supported: &'static [&'static str],
    },
    /// A `^regex$` pattern that does not compile.
    #[error("invalid regex {pattern:?}: {reason}")]
    InvalidRegex {
        /// The pattern as written.
        pattern: String,
        /// One-line reason from the regex engine.
        reason: String,
    },
    /// A `{{...}}` trait template that does not parse (including an unknown namespace).
    #[error("invalid template {template:?}: {reason}")]
    InvalidTemplate {
        /// The template as written.
        template: String,
        /// Why.
        reason: String,
    },
    /// Any other invalid value; the text says why.
    #[error("{0}")]
    Invalid(String),
    /// A restriction Hop cannot enforce: accepting it would grant more than the resource says.
    #[error("Hop cannot enforce this restriction: {0}")]
    Unenforceable(String),
}

/// A resource that parsed but does not make sense, naming the field at fault.
///
/// Display: `spec.allow.node_labels: invalid regex "^(env$": unclosed group`, prefixed with
/// `role "dev": ` when the error came from evaluating a named role. Boxed: it travels in every
/// `validate()` result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError(Box<Inner>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Inner {
    field: FieldPath,
    problem: Problem,
    /// Steps below `field` that point at the exact entry (a label key, a list item); used only
    /// to find a line number, not displayed.
    detail: Vec<Segment>,
    /// `role "dev"`, when the error is reported outside of a parse (e.g. by the checker).
    context: Option<String>,
}

impl ValidationError {
    /// A problem with `field`.
    #[must_use]
    pub fn new(field: FieldPath, problem: Problem) -> Self {
        Self(Box::new(Inner {
            field,
            problem,
            detail: Vec::new(),
            context: None,
        }))
    }

    /// The field at fault.
    #[must_use]
    pub fn field(&self) -> &FieldPath {
        &self.0.field
    }

    /// What is wrong with it.
    #[must_use]
    pub fn problem(&self) -> &Problem {
        &self.0.problem
    }

    /// The resource named by [`Self::with_context`], if any.
    #[must_use]
    pub fn context(&self) -> Option<&str> {
        self.0.context.as_deref()
    }

    /// Points the error at an entry below the displayed field (for line numbers only).
    #[must_use]
    pub(crate) fn at_entry(mut self, seg: Segment) -> Self {
        self.0.detail.push(seg);
        self
    }

    /// Names the resource the error belongs to, e.g. `role "dev"`.
    #[must_use]
    pub fn with_context(mut self, context: impl Into<String>) -> Self {
        self.0.context = Some(context.into());
        self
    }

    /// The path used to find the line of the error: `field` plus the hidden entry steps.
    #[must_use]
    pub fn location_path(&self) -> FieldPath {
        let mut v = self.0.field.segments().to_vec();
        v.extend(self.0.detail.iter().cloned());
        FieldPath(v)
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(c) = &self.0.context {
            write!(f, "{c}: ")?;
        }
        if self.0.field.is_root() {
            write!(f, "{}", self.0.problem)
        } else {
            write!(f, "{}: {}", self.0.field, self.0.problem)
        }
    }
}

impl std::error::Error for ValidationError {}

/// Shorthand for building an error at a dotted path.
pub(crate) fn invalid(field: &FieldPath, problem: Problem) -> ValidationError {
    ValidationError::new(field.clone(), problem)
}

/// `kind` must equal the type's kind.
pub(crate) fn check_kind(found: &str, expected: &'static str) -> Result<(), ValidationError> {
    if found == expected {
        Ok(())
    } else {
        Err(ValidationError::new(
            FieldPath::new("kind"),
            Problem::WrongKind {
                expected,
                found: found.to_owned(),
            },
        ))
    }
}

/// `version` must be one of `supported`.
pub(crate) fn check_version(
    found: &str,
    supported: &'static [&'static str],
) -> Result<(), ValidationError> {
    if supported.contains(&found) {
        Ok(())
    } else {
        Err(ValidationError::new(
            FieldPath::new("version"),
            Problem::UnsupportedVersion {
                found: found.to_owned(),
                supported,
            },
        ))
    }
}

/// Longest accepted resource name.
pub(crate) const MAX_NAME_LEN: usize = 253;

/// A resource or reference name: non-empty, at most 253 bytes, no surrounding whitespace, no
/// control characters, no `/` (names become storage keys). The message never echoes the value,
/// so this is safe for secret names too.
pub(crate) fn check_name(field: &FieldPath, name: &str) -> Result<(), ValidationError> {
    let reason = if name.is_empty() {
        return Err(invalid(field, Problem::Empty));
    } else if name.len() > MAX_NAME_LEN {
        "is longer than 253 bytes"
    } else if name.trim() != name {
        "has leading or trailing whitespace"
    } else if name.chars().any(char::is_control) {
        "contains a control character"
    } else if name.contains('/') {
        "contains \"/\""
    } else {
        return Ok(());
    };
    Err(invalid(field, Problem::Invalid(reason.to_owned())))
}

/// Every entry of a list of names passes [`check_name`].
pub(crate) fn check_names(field: &FieldPath, names: &[String]) -> Result<(), ValidationError> {
    for (i, n) in names.iter().enumerate() {
        check_name(&field.index(i), n)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_display() {
        let p = FieldPath::new("spec.allow")
            .key("rules")
            .index(0)
            .key("verbs");
        assert_eq!(p.to_string(), "spec.allow.rules[0].verbs");
        let p = FieldPath::new("spec.allow.node_labels").key("teleport.dev/origin");
        assert_eq!(
            p.to_string(),
            "spec.allow.node_labels[\"teleport.dev/origin\"]"
        );
        assert_eq!(FieldPath::root().to_string(), "");
    }

    #[test]
    fn error_display() {
        let e = ValidationError::new(
            FieldPath::new("spec.allow.node_labels"),
            Problem::InvalidRegex {
                pattern: "^(env$".into(),
                reason: "unclosed group".into(),
            },
        )
        .with_context("role \"dev\"");
        assert_eq!(
            e.to_string(),
            "role \"dev\": spec.allow.node_labels: invalid regex \"^(env$\": unclosed group"
        );
    }

    #[test]
    fn names() {
        let f = FieldPath::new("metadata.name");
        assert!(check_name(&f, "dev").is_ok());
        assert!(check_name(&f, "alice@example.com").is_ok());
        for bad in ["", " dev", "a/b", "a\nb"] {
            assert!(check_name(&f, bad).is_err(), "{bad:?}");
        }
        assert!(check_name(&f, &"x".repeat(254)).is_err());
    }
}
