//! Reading and writing resource files: `parse_resources` and `to_yaml`.
//!
//! This module owns the operator-facing contract: a YAML stream of resources is either accepted
//! entirely (every document parsed and validated) or rejected with one line that names the file,
//! the line, the resource and the field. An accepted stream may carry warnings, one line each,
//! for fields stored but ignored. It never returns a partial result and never panics on any
//! input.

use std::fmt;

use crate::cluster::{AuthPreference, CertAuthorityResource, ClusterName};
use crate::compat::FieldWarning;
use crate::database::DatabaseResource;
use crate::lock::LockResource;
use crate::node::NodeResource;
use crate::resource::{KINDS, Kind, Resource, describe};
use crate::role::Role;
use crate::token::ProvisionToken;
use crate::user::User;
use crate::validation::{FieldPath, ValidationError};
use crate::yaml::{self, DeError, Node, Value};

/// Why a resource file was rejected. Display is one line:
/// `roles.yaml:7: role "dev": spec.allow.node_labels: invalid regex "^(env$": unclosed group`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{}{problem}", line.map(|l| format!("{l}: ")).unwrap_or_else(|| " ".into()))]
pub struct ParseError {
    /// The file name given to `parse_resources`.
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<u64>,
    /// What is wrong.
    pub problem: ParseProblem,
}

/// The three ways a resource file can be wrong; all are the author's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseProblem {
    /// Not valid YAML, or over a size/depth/alias limit.
    Syntax(String),
    /// Valid YAML of the wrong shape: unknown or missing field, wrong type, unknown kind.
    Schema {
        /// `role "dev"` when known (never a token's name).
        resource: Option<String>,
        /// Where in the document.
        path: FieldPath,
        /// What is wrong.
        message: String,
    },
    /// Well-formed but invalid (bad regex, template, duration bounds, missing expiry, …).
    Invalid {
        /// `role "dev"` when known (never a token's name).
        resource: Option<String>,
        /// The validation failure.
        error: ValidationError,
    },
}

/// `resource: path: message`, leaving out what is unknown.
impl fmt::Display for ParseProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Syntax(m) => f.write_str(m),
            Self::Schema {
                resource,
                path,
                message,
            } => {
                if let Some(r) = resource {
                    write!(f, "{r}: ")?;
                }
                if !path.is_root() {
                    write!(f, "{path}: ")?;
                }
                f.write_str(message)
            }
            Self::Invalid { resource, error } => {
                if let Some(r) = resource {
                    write!(f, "{r}: ")?;
                }
                write!(f, "{error}")
            }
        }
    }
}

impl ParseError {
    fn new(file: &str, line: Option<u64>, problem: ParseProblem) -> Self {
        Self {
            file: file.to_owned(),
            line: line.filter(|l| *l > 0),
            problem,
        }
    }
}

/// A field that was accepted and stored but that Hop ignores. Display is one line:
/// `roles.yaml:12: role "dev": spec.options.permit_x11_forwarding: ignored: Hop offers no X11
/// forwarding`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseWarning {
    /// The file name given to the parser.
    pub file: String,
    /// 1-based line of the field, when known.
    pub line: Option<u64>,
    /// `role "dev"`.
    pub resource: String,
    /// The field and why it is ignored.
    pub warning: FieldWarning,
}

impl fmt::Display for ParseWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": {}: {}", self.resource, self.warning)
    }
}

/// An accepted resource stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// Every resource, in document order.
    pub resources: Vec<Resource>,
    /// Fields stored but ignored, in document order.
    pub warnings: Vec<ParseWarning>,
}

/// Parses a YAML stream of one or more (`---`-separated) resource documents and validates each.
/// Returns every resource or the first error; `file` is used in error messages. Warnings are
/// dropped: use [`parse_resources_with_warnings`] where an operator can see them.
pub fn parse_resources(text: &str, file: &str) -> Result<Vec<Resource>, ParseError> {
    parse_resources_with_warnings(text, file).map(|p| p.resources)
}

/// Like [`parse_resources`], and also names every field that was stored but is ignored (with
/// its line).
pub fn parse_resources_with_warnings(text: &str, file: &str) -> Result<Parsed, ParseError> {
    let docs = yaml::parse_stream(text)
        .map_err(|e| ParseError::new(file, e.line, ParseProblem::Syntax(e.message)))?;
    let mut parsed = Parsed {
        resources: Vec::with_capacity(docs.len()),
        warnings: Vec::new(),
    };
    for doc in &docs {
        let resource = parse_document(doc, text, file)?;
        parsed
            .warnings
            .extend(locate_warnings(&resource, doc, file));
        parsed.resources.push(resource);
    }
    Ok(parsed)
}

fn locate_warnings(resource: &Resource, doc: &Node, file: &str) -> Vec<ParseWarning> {
    resource
        .warnings()
        .into_iter()
        .map(|warning| ParseWarning {
            file: file.to_owned(),
            line: Some(doc.locate(&warning.field)).filter(|l| *l > 0),
            resource: resource.display_name(),
            warning,
        })
        .collect()
}

fn parse_document(doc: &Node, text: &str, file: &str) -> Result<Resource, ParseError> {
    let schema = |line: u64, resource: Option<String>, path: FieldPath, message: String| {
        ParseError::new(
            file,
            Some(line),
            ParseProblem::Schema {
                resource,
                path,
                message,
            },
        )
    };
    if !matches!(doc.value, Value::Map(_)) {
        return Err(schema(
            doc.line,
            None,
            FieldPath::root(),
            "expected a resource (a mapping with kind, version, metadata and spec)".into(),
        ));
    }
    let Some(kind_node) = doc.get("kind") else {
        return Err(schema(
            doc.line,
            None,
            FieldPath::root(),
            "missing field \"kind\"".into(),
        ));
    };
    let Some(kind) = kind_node.as_str() else {
        return Err(schema(
            kind_node.line,
            None,
            FieldPath::new("kind"),
            "expected a string".into(),
        ));
    };
    let resource_name = doc
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Node::as_str)
        .filter(|name| !name.is_empty())
        .map(|name| describe(kind, name));
    let typed = |e: DeError| {
        // Name the resource only for errors inside it; a top-level error is about the document.
        let resource = (!e.path.is_root()).then(|| resource_name.clone()).flatten();
        schema(e.line.unwrap_or(doc.line), resource, e.path, e.message)
    };
    let resource: Resource = match kind {
        Role::KIND => yaml::from_node::<Role>(doc, text).map_err(typed)?.into(),
        User::KIND => yaml::from_node::<User>(doc, text).map_err(typed)?.into(),
        ProvisionToken::KIND => yaml::from_node::<ProvisionToken>(doc, text)
            .map_err(typed)?
            .into(),
        ClusterName::KIND => yaml::from_node::<ClusterName>(doc, text)
            .map_err(typed)?
            .into(),
        AuthPreference::KIND => yaml::from_node::<AuthPreference>(doc, text)
            .map_err(typed)?
            .into(),
        CertAuthorityResource::KIND => yaml::from_node::<CertAuthorityResource>(doc, text)
            .map_err(typed)?
            .into(),
        DatabaseResource::KIND => yaml::from_node::<DatabaseResource>(doc, text)
            .map_err(typed)?
            .into(),
        NodeResource::KIND => yaml::from_node::<NodeResource>(doc, text)
            .map_err(typed)?
            .into(),
        LockResource::KIND => yaml::from_node::<LockResource>(doc, text)
            .map_err(typed)?
            .into(),
        crate::oidc::OidcConnector::KIND => {
            yaml::from_node::<crate::oidc::OidcConnector>(doc, text)
                .map_err(typed)?
                .into()
        }
        crate::github::GithubConnector::KIND => {
            yaml::from_node::<crate::github::GithubConnector>(doc, text)
                .map_err(typed)?
                .into()
        }
        crate::saml::SamlConnector::KIND => {
            yaml::from_node::<crate::saml::SamlConnector>(doc, text)
                .map_err(typed)?
                .into()
        }
        other => {
            return Err(schema(
                kind_node.line,
                None,
                FieldPath::root(),
                format!(
                    "unknown kind {other:?}, expected one of {}",
                    KINDS.join(", ")
                ),
            ));
        }
    };
    resource.validate().map_err(|error| {
        let line = doc.locate(&error.location_path());
        let named = !error.field().is_root() && !resource.name().is_empty();
        let resource = named.then(|| resource.display_name());
        ParseError::new(file, Some(line), ParseProblem::Invalid { resource, error })
    })?;
    Ok(resource)
}

/// Writes `r` as a YAML document that [`parse_resources`] accepts back.
#[must_use]
pub fn to_yaml(r: &Resource) -> String {
    // Serialization of these types cannot fail (string keys, finite values); keep the function
    // total anyway and make any failure visible and unparseable.
    serde_saphyr::to_string(r).unwrap_or_else(|e| format!("!serialization-failed {e:?}\n"))
}

/// Writes several resources as one `---`-separated stream.
#[must_use]
pub fn to_yaml_stream(resources: &[Resource]) -> String {
    let mut out = String::new();
    for r in resources {
        out.push_str("---\n");
        out.push_str(&to_yaml(r));
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}
