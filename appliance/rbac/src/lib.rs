//! Hop's resource model and access evaluation: roles, users, join tokens and cluster settings in
//! Teleport's YAML shape, and the [`AccessChecker`] that answers "may this user do that".
//!
//! This crate owns parsing and validating operator-written resources ([`parse_resources`],
//! [`parse_resources_with_warnings`], [`to_yaml`]), deciding which Teleport role fields Hop
//! enforces, stores while ignoring, or refuses ([`compat`]), Kubernetes resources in roles
//! ([`kube`]), and evaluating roles (deny by
//! default, deny beats allow, Teleport's label and template semantics). It is pure: no IO, no clocks, no storage, no secrets beyond a join token's
//! name (redacted in `Debug`). Passwords and TOTP secrets live with the appliance, not here.
#![forbid(unsafe_code)]

pub mod access_request;
pub mod builtin;
pub mod checker;
pub mod cluster;
pub mod compat;
pub mod database;
pub mod duration;
pub mod github;
pub mod kube;
mod kube_access;
pub mod labels;
pub mod lock;
pub mod moderation;
pub mod node;
pub mod oidc;
pub mod parse;
pub mod predicate;
pub mod resource;
pub mod role;
pub mod rule_context;
pub mod saml;
pub mod spiffe;
mod stored;
pub mod token;
pub mod traits;
pub mod user;
pub mod validation;
mod yaml;

pub use access_request::{
    AccessRequestConditions, AccessReviewConditions, AccessReviewThreshold, RequestReason,
};
pub use builtin::builtin_roles;
pub use checker::{AccessChecker, AccessDenied, DEFAULT_MAX_SESSION_TTL, DbNames};
pub use cluster::{
    AuthPreference, AuthPreferenceSpec, AuthType, CaKeySet, CertAuthType, CertAuthorityResource,
    CertAuthoritySpec, ClusterName, ClusterNameSpec, JwtPublicKey, SecondFactor, SshPublicKey,
    TlsCertificate, Webauthn,
};
pub use compat::{FieldWarning, Verbatim};
pub use database::{DatabaseResource, DatabaseSpec, DatabaseTls};
pub use duration::{Duration, DurationError};
pub use github::{GithubConnector, GithubConnectorSpec, TeamMapping};
pub use kube::{KUBE_VERBS, KubeTarget, KubernetesResource};
pub use kube_access::KubeImpersonation;
pub use labels::{LabelValues, Labels};
pub use lock::{LockResource, LockSpec, LockTarget};
pub use node::{NodeResource, NodeSpec};
pub use oidc::{ClaimMapping, ClientRedirectSettings, OidcConnector, OidcConnectorSpec};
pub use parse::{
    ParseError, ParseProblem, ParseWarning, Parsed, parse_resources, parse_resources_with_warnings,
    to_yaml, to_yaml_stream,
};
pub use predicate::{Predicate, PredicateError};
pub use resource::{KINDS, Kind, Metadata, Resource};
pub use role::{
    ForwardDirection, ForwardingToggle, JoinSessionPolicy, LockingMode, RecordSession,
    RecordingMode, Role, RoleConditions, RoleOptions, RoleSpec, Rule, SshPortForwarding,
};
pub use rule_context::{RuleContext, SessionFacts, Undecidable, UserFacts};
pub use saml::{AttributeMapping, SamlConnector, SamlConnectorSpec, SigningKeyPair};
pub use spiffe::{SpiffeDenied, check_spiffe_path};
pub use token::{
    JoinMethod, ProvisionToken, ProvisionTokenSpec, SystemRole, WeakSecret, check_secret_strength,
};
pub use traits::{CompiledTemplate, TemplateError, Traits};
pub use user::{ConnectorRef, CreatedBy, User, UserSpec, UserStatus};
pub use validation::{FieldPath, Problem, Segment, ValidationError};
