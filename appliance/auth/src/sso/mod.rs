//! Single sign-on with external identity providers: the framework every connector kind plugs
//! into, OpenID Connect, GitHub ([`github`]: OAuth 2, teams from the REST API), and SAML 2.0
//! ([`saml`]: the IdP a connector names, assertion IDs remembered against replay; the XML is
//! `hop_saml`, sans-IO and fuzzed).
//!
//! This room owns the pending login requests ([`pending`]: `state`, `nonce`, the PKCE verifier
//! and the client's keys, one-time records in the backend with a short lease, so that any Auth
//! instance serves the callback), talking to providers ([`http`]: deadlines and size caps on
//! every answer; [`provider`]: discovery, the key-set cache that follows key rotation, the
//! token endpoint), and the errors of a login. Turning verified claims into a temporary user
//! and certificates is the server's (`server/sso.rs`), through the same issuance as a password
//! login. ID-token and key-set parsing is `hop_api::jose` (sans-IO, fuzzed); the sealed result
//! is `hop_api::sso`.
//!
//! It never logs a code, a token, a client secret, a `state`, a nonce or a sealing key.

pub mod github;
pub mod http;
pub mod pending;
pub mod provider;
pub mod saml;

use hop_api::jose::{IdTokenError, JwksError};
use hop_api::sso::RedirectError;

pub use http::IdpHttpError;
pub use pending::{PendingSsoLogin, SSO_REQUEST_TTL};
pub use provider::OidcProviders;

/// Why an SSO login was refused. The message is shown to the user and written to the audit
/// log; it never carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum SsoError {
    /// The client named a connector that does not exist (the client's fault).
    #[error("no SSO connector named {0:?} (hop login --auth NAME; see `hop admin get oidc`)")]
    UnknownConnector(String),
    /// The client's redirect URL is neither loopback nor allowed (the client's fault).
    #[error(transparent)]
    Redirect(#[from] RedirectError),
    /// The client sent something unusable (a short key, no public keys).
    #[error("{0}")]
    BadRequest(String),
    /// The callback's `state` names no pending login: forged, expired or already used.
    #[error("the SSO login request is unknown, expired or already used (state)")]
    UnknownState,
    /// The provider sent the browser back with an error instead of a code.
    #[error("the identity provider refused the login: {0}")]
    ProviderRefused(String),
    /// The provider could not be reached or answered badly.
    #[error(transparent)]
    Http(#[from] IdpHttpError),
    /// The provider's discovery document or token answer does not make sense.
    #[error("the identity provider's {0} is invalid")]
    Provider(&'static str),
    #[error(transparent)]
    Jwks(#[from] JwksError),
    #[error(transparent)]
    IdToken(#[from] IdTokenError),
    /// The user's claims map to no role: no login.
    #[error(
        "the identity provider's claims map to no role of connector {connector:?} (claims_to_roles, attributes_to_roles)"
    )]
    NoRoles { connector: String },
    /// The name the claims give is a local user's (or a bot's): an SSO login never takes one
    /// over.
    #[error("the user name {0:?} belongs to a local user or bot; an SSO login cannot use it")]
    NameTaken(String),
    /// A lock in force names the user or one of the roles.
    #[error("user {0:?} is locked")]
    Locked(String),
    /// The SAML response (or the IdP's metadata) was refused.
    #[error(transparent)]
    Saml(#[from] hop_saml::SamlError),
    /// The SAML response answers no request Hop sent, or one already answered.
    #[error(
        "the SAML response answers no login request Hop sent, or one already answered (InResponseTo)"
    )]
    UnknownSamlRequest,
    /// The assertion was accepted before.
    #[error("the SAML assertion was already used (replay refused)")]
    SamlReplay,
}

impl SsoError {
    /// The short reason the audit log's `reason` field holds.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::UnknownConnector(_) => "unknown connector",
            Self::Redirect(_) => "client redirect not allowed",
            Self::BadRequest(_) => "bad request",
            Self::UnknownState => "unknown or replayed state",
            Self::ProviderRefused(_) => "provider refused",
            Self::Http(_) => "provider unreachable",
            Self::Provider(_) => "provider answer invalid",
            Self::Jwks(_) => "provider key set invalid",
            Self::IdToken(_) => "ID token refused",
            Self::NoRoles { .. } => "no role mapped",
            Self::NameTaken(_) => "name of a local user",
            Self::Locked(_) => "locked",
            Self::Saml(hop_saml::SamlError::Doctype) => "SAML DTD or entity",
            Self::Saml(
                hop_saml::SamlError::DuplicateId
                | hop_saml::SamlError::AssertionCount(_)
                | hop_saml::SamlError::Signature(_),
            ) => "SAML signature wrapping",
            Self::Saml(
                hop_saml::SamlError::Digest
                | hop_saml::SamlError::BadSignature
                | hop_saml::SamlError::Unsigned,
            ) => "SAML signature invalid",
            Self::Saml(_) => "SAML response refused",
            Self::UnknownSamlRequest => "unknown or replayed SAML request",
            Self::SamlReplay => "SAML assertion replayed",
        }
    }

    /// Whether the client (as opposed to the provider or the user's standing) is at fault.
    #[must_use]
    pub fn is_bad_request(&self) -> bool {
        matches!(
            self,
            Self::UnknownConnector(_) | Self::Redirect(_) | Self::BadRequest(_)
        )
    }
}
