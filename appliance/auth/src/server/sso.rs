//! SSO logins, the server's part, for OIDC, GitHub and SAML connectors alike: starting one (the
//! connector, the client's redirect rules, the pending record with `state`, nonce and PKCE
//! verifier), and completing one from the provider's callback (the state used once, the code
//! traded, the ID token verified and userinfo merged, or GitHub's user and teams read; claims
//! or teams mapped to roles and traits, the temporary user written, certificates issued
//! through the password login's own issuance, the result sealed to the client's key). Every
//! refusal is audited as a failed `user.login` with `method` (`oidc`, `github`, `saml`), the connector
//! and the reason.
//!
//! It never logs or audits a code, a token, a state, a nonce, a secret or a sealing key, and
//! never lets an SSO login take the name of a local user or a bot.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hop_api::jose::Expected;
use hop_api::sso::{self as contract, RESPONSE_PARAM, SEAL_KEY_LEN};
use hop_rbac::{
    ConnectorRef, CreatedBy, GithubConnector, OidcConnector, OidcConnectorSpec, SamlConnector, User,
};
use prost::Message;

use super::{AuthServer, LoginClient, LoginRequest, resources};
use crate::audit::EventKind;
use crate::error::AuthError;
use crate::sso::pending::{PendingSsoLogin, pkce_challenge, random_b64, state_hash};
use crate::sso::{SSO_REQUEST_TTL, SsoError};
use hop_api::timestamps::rfc3339;

/// Claims that describe the token rather than the user: not made into traits.
const TOKEN_CLAIMS: &[&str] = &[
    "iss",
    "aud",
    "exp",
    "iat",
    "nbf",
    "nonce",
    "at_hash",
    "c_hash",
    "auth_time",
    "azp",
    "jti",
    "sid",
    "acr",
    "amr",
];

/// A client's request to start an SSO login. `Debug` leaves the one-time key out.
#[derive(Clone)]
pub struct SsoStart {
    pub connector: String,
    pub ssh_public_key: String,
    pub tls_public_key_der: Vec<u8>,
    pub ttl: Option<Duration>,
    pub client_redirect_url: String,
    pub seal_key: Vec<u8>,
    pub remote: Option<SocketAddr>,
    /// The proxy's own web login: `client_redirect_url` is the proxy's `/web/sso/finish`,
    /// built by the proxy from its own address (never set from the network).
    pub proxy_redirect: bool,
}

/// A started login: where to send the browser.
#[derive(Debug, Clone)]
pub struct SsoStarted {
    pub request_id: String,
    pub redirect_url: String,
}

impl std::fmt::Debug for SsoStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SsoStart")
            .field("connector", &self.connector)
            .field("client_redirect_url", &self.client_redirect_url)
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

/// What the provider's redirect to the proxy's callback carried. `Debug` leaves the code and
/// the state out.
#[derive(Clone, Default)]
pub struct SsoCallback {
    pub state: String,
    pub code: String,
    /// `error` (and `error_description`) when the provider refused.
    pub error: Option<String>,
    pub remote: Option<SocketAddr>,
}

/// What the IdP had the browser post to the proxy's ACS. `Debug` leaves the response out.
#[derive(Clone, Default)]
pub struct SamlPost {
    /// The connector the ACS URL (or the RelayState) names.
    pub connector: String,
    /// The `SAMLResponse` form value (base64).
    pub saml_response: String,
    pub remote: Option<SocketAddr>,
}

impl std::fmt::Debug for SamlPost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SamlPost")
            .field("connector", &self.connector)
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

/// A refused callback: the error, and (once the state named a login) where to send the
/// browser so that the waiting client learns why at once.
#[derive(Debug)]
pub struct SsoCallbackRefusal {
    pub error: AuthError,
    pub client_redirect: Option<String>,
}

impl From<AuthError> for SsoCallbackRefusal {
    fn from(error: AuthError) -> Self {
        Self {
            error,
            client_redirect: None,
        }
    }
}

/// The client's redirect URL with `error=` the refusal's text (it is no secret; a forged one
/// can only end a login early).
fn refusal_redirect(client_redirect: &str, error: &AuthError) -> String {
    let sep = if client_redirect.contains('?') {
        '&'
    } else {
        '?'
    };
    let text: String = error.to_string().chars().take(300).collect();
    format!(
        "{client_redirect}{sep}{}",
        contract::form(&[("error", &text)])
    )
}

impl std::fmt::Debug for SsoCallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SsoCallback")
            .field("error", &self.error)
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

/// A name, roles and traits a verified login maps to (pure: [`map_login`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedLogin {
    pub username: String,
    pub roles: Vec<String>,
    pub traits: BTreeMap<String, Vec<String>>,
}

/// The user name, roles and traits that verified claims give under `spec`: traits are the
/// user's claims (not the token's own), the name is `username_claim`, else `email`, else `sub`.
pub fn map_login(
    connector: &str,
    spec: &OidcConnectorSpec,
    subject: &str,
    claims: &serde_json::Map<String, serde_json::Value>,
) -> Result<MappedLogin, SsoError> {
    let mut user_claims = claims.clone();
    for k in TOKEN_CLAIMS {
        user_claims.remove(*k);
    }
    let traits = OidcConnectorSpec::traits_from_claims(&user_claims);
    let roles = spec.roles_for(&traits);
    if roles.is_empty() {
        return Err(SsoError::NoRoles {
            connector: connector.to_string(),
        });
    }
    let pick = |k: &str| {
        traits
            .get(k)
            .and_then(|v| v.first())
            .filter(|s| !s.is_empty())
            .cloned()
    };
    let username = if spec.username_claim.is_empty() {
        match pick("email") {
            // An address the provider says it has not verified names nobody: a user of a
            // provider that lets users type any address must not become someone else.
            Some(_) if claims.get("email_verified") == Some(&serde_json::Value::Bool(false)) => {
                return Err(SsoError::Provider(
                    "ID token (email not verified; set username_claim)",
                ));
            }
            Some(email) => email,
            None => subject.to_string(),
        }
    } else {
        pick(&spec.username_claim).ok_or(SsoError::Provider("ID token (no username_claim)"))?
    };
    Ok(MappedLogin {
        username,
        roles,
        traits,
    })
}

/// A connector a login names.
#[derive(Debug, Clone)]
enum SsoConnector {
    Oidc(OidcConnector),
    Github(GithubConnector),
    Saml(SamlConnector),
}

impl SsoConnector {
    fn kind(&self) -> &'static str {
        match self {
            Self::Oidc(_) => "oidc",
            Self::Github(_) => "github",
            Self::Saml(_) => "saml",
        }
    }

    fn redirect_settings(&self) -> &hop_rbac::ClientRedirectSettings {
        match self {
            Self::Oidc(c) => &c.spec.client_redirect_settings,
            Self::Github(g) => &g.spec.client_redirect_settings,
            Self::Saml(c) => &c.spec.client_redirect_settings,
        }
    }

    /// The proxy callback the provider sends the browser to.
    fn redirect_url(&self) -> String {
        match self {
            Self::Oidc(c) => c.spec.redirect_url.first().cloned().unwrap_or_default(),
            Self::Github(g) => g.spec.redirect_url.clone(),
            Self::Saml(c) => c.spec.acs.clone(),
        }
    }
}

/// The user name, roles and traits a GitHub login gives: the name is the GitHub login; the
/// traits are `github_username`, `github_orgs` and `github_teams` (`ORG/SLUG`).
pub fn map_github_login(
    connector: &str,
    spec: &hop_rbac::GithubConnectorSpec,
    login: &str,
    teams: &[(String, String)],
) -> Result<MappedLogin, SsoError> {
    let roles = spec.roles_for(teams);
    if roles.is_empty() {
        return Err(SsoError::NoRoles {
            connector: connector.to_string(),
        });
    }
    let mut orgs: Vec<String> = teams.iter().map(|(o, _)| o.clone()).collect();
    orgs.sort();
    orgs.dedup();
    let mut traits = BTreeMap::new();
    traits.insert("github_username".to_string(), vec![login.to_string()]);
    traits.insert("github_orgs".to_string(), orgs);
    traits.insert(
        "github_teams".to_string(),
        teams.iter().map(|(o, t)| format!("{o}/{t}")).collect(),
    );
    Ok(MappedLogin {
        username: login.to_string(),
        roles,
        traits,
    })
}

impl AuthServer {
    /// The connectors a login page lists: (name, type, display).
    pub fn sso_connectors(&self) -> Result<Vec<(String, String, String)>, AuthError> {
        let shown = |name: String, display: &str, kind: &str| {
            let display = if display.is_empty() {
                name.clone()
            } else {
                display.to_string()
            };
            (name, kind.to_string(), display)
        };
        let mut out: Vec<_> = self
            .store()
            .list::<OidcConnector>()?
            .into_iter()
            .map(|c| shown(c.value.metadata.name, &c.value.spec.display, "oidc"))
            .collect();
        out.extend(
            self.store()
                .list::<GithubConnector>()?
                .into_iter()
                .map(|c| shown(c.value.metadata.name, &c.value.spec.display, "github")),
        );
        out.extend(
            self.store()
                .list::<SamlConnector>()?
                .into_iter()
                .map(|c| shown(c.value.metadata.name, &c.value.spec.display, "saml")),
        );
        Ok(out)
    }

    /// The connector `name` names (an OIDC or a GitHub connector; both of one name is
    /// ambiguous and refused).
    fn sso_connector(&self, name: &str) -> Result<SsoConnector, SsoError> {
        let read = |e: hop_storage::StorageError| {
            tracing::error!(error = %e, "reading an SSO connector");
            SsoError::UnknownConnector(name.to_string())
        };
        let oidc = self.store().get::<OidcConnector>(name).map_err(read)?;
        let github = self.store().get::<GithubConnector>(name).map_err(read)?;
        let saml = self.store().get::<SamlConnector>(name).map_err(read)?;
        match (oidc, github, saml) {
            (Some(o), None, None) => Ok(SsoConnector::Oidc(o.value)),
            (None, Some(g), None) => Ok(SsoConnector::Github(g.value)),
            (None, None, Some(c)) => Ok(SsoConnector::Saml(c.value)),
            (None, None, None) => Err(SsoError::UnknownConnector(name.to_string())),
            _ => Err(SsoError::BadRequest(format!(
                "more than one connector (oidc, github, saml) is named {name:?}; rename one"
            ))),
        }
    }

    /// The `method` of a connector's audit events (`sso` when the login names none yet).
    fn sso_method(&self, connector: &str) -> &'static str {
        if connector.is_empty() {
            return "sso";
        }
        if matches!(self.store().get::<SamlConnector>(connector), Ok(Some(_))) {
            return "saml";
        }
        match self.store().get::<GithubConnector>(connector) {
            Ok(Some(_)) => "github",
            _ => "oidc",
        }
    }

    /// Audits a refused SSO login (or start) and hands the refusal back.
    fn sso_refused(
        &self,
        user: &str,
        connector: &str,
        remote: Option<SocketAddr>,
        e: SsoError,
    ) -> AuthError {
        self.metrics.logins_failed.inc();
        let method = self.sso_method(connector);
        self.audit.emit_durable(
            self.event(EventKind::UserLogin, user)
                .remote(remote)
                .field("method", method)
                .field("connector", connector)
                .field("reason", e.reason())
                .failed(EventKind::UserLogin, e.to_string()),
        );
        AuthError::Sso(e)
    }

    /// [`Self::sso_refused`] from async code: the durable audit write runs off the runtime.
    async fn refused_async(
        self: &Arc<Self>,
        user: &str,
        connector: &str,
        remote: Option<SocketAddr>,
        e: SsoError,
    ) -> AuthError {
        let me = self.clone();
        let (user, connector) = (user.to_string(), connector.to_string());
        match tokio::task::spawn_blocking(move || me.sso_refused(&user, &connector, remote, e))
            .await
        {
            Ok(err) => err,
            Err(join) => AuthError::Internal(format!("task failed: {join}")),
        }
    }

    /// Starts an OIDC login: checks the request, fetches the provider's endpoints, stores the
    /// pending login and returns the provider's authorization URL.
    pub async fn start_sso_login(self: &Arc<Self>, req: SsoStart) -> Result<SsoStarted, AuthError> {
        let remote = req.remote;
        let name = req.connector.clone();
        let me = self.clone();
        let checked =
            tokio::task::spawn_blocking(move || -> Result<(SsoConnector, SsoStart), AuthError> {
                me.rate_limit(req.remote)?;
                let c = me.sso_connector(&req.connector)?;
                if req.seal_key.len() != SEAL_KEY_LEN {
                    return Err(SsoError::BadRequest(format!(
                        "the one-time key must be {SEAL_KEY_LEN} bytes"
                    ))
                    .into());
                }
                if req.ssh_public_key.is_empty() || req.tls_public_key_der.is_empty() {
                    return Err(SsoError::BadRequest(
                        "the SSH and TLS public keys are required".into(),
                    )
                    .into());
                }
                if !req.proxy_redirect {
                    contract::check_client_redirect(&req.client_redirect_url, &|h| {
                        c.redirect_settings().allows_https_host(h)
                    })
                    .map_err(SsoError::from)?;
                }
                Ok((c, req))
            })
            .await
            .map_err(|e| AuthError::Internal(format!("task failed: {e}")))?;
        let (connector, req) = match checked {
            Ok(v) => v,
            Err(AuthError::Sso(e)) => return Err(self.refused_async("", &name, remote, e).await),
            Err(e) => return Err(e),
        };
        let now = self.now();
        let authorize_url = match &connector {
            SsoConnector::Oidc(c) => match self.oidc.metadata(&c.spec.issuer_url, now).await {
                Ok(m) => m.authorization_endpoint.clone(),
                Err(e) => return Err(self.refused_async("", &name, remote, e).await),
            },
            SsoConnector::Github(g) => format!("{}/login/oauth/authorize", g.spec.endpoint()),
            SsoConnector::Saml(c) => match crate::sso::saml::resolve_idp(&c.spec).await {
                Ok(idp) => idp.sso_url,
                Err(e) => return Err(self.refused_async("", &name, remote, e).await),
            },
        };
        // SAML: the AuthnRequest's ID is the state (the response's InResponseTo names it).
        let state = match &connector {
            SsoConnector::Saml(_) => hop_saml::request::new_request_id(),
            _ => random_b64(),
        };
        if state.is_empty() {
            return Err(AuthError::Internal("no random request ID".into()));
        }
        let nonce = random_b64();
        let verifier = random_b64();
        let redirect_url = connector.redirect_url();
        let record = PendingSsoLogin {
            state_hash: state_hash(&state),
            request_id: uuid::Uuid::new_v4().to_string(),
            connector_kind: connector.kind().into(),
            connector: name.clone(),
            nonce: nonce.clone(),
            pkce_verifier: verifier.clone(),
            redirect_url: redirect_url.clone(),
            client_redirect_url: req.client_redirect_url,
            ssh_public_key: req.ssh_public_key,
            tls_public_key: hex::encode(&req.tls_public_key_der),
            ttl_secs: req.ttl.map_or(0, |t| t.as_secs()),
            seal_key: hex::encode(&req.seal_key),
            created_unix: super::unix(now),
            web: req.proxy_redirect,
        };
        let me = self.clone();
        let stored = record.clone();
        tokio::task::spawn_blocking(move || {
            me.store()
                .swap_leased(&stored, None, now + SSO_REQUEST_TTL)
                .map(drop)
        })
        .await
        .map_err(|e| AuthError::Internal(format!("task failed: {e}")))??;
        let challenge = pkce_challenge(&verifier);
        let params = match &connector {
            SsoConnector::Oidc(c) => {
                let mut scope = vec!["openid".to_string()];
                for s in &c.spec.scope {
                    if !scope.contains(s) {
                        scope.push(s.clone());
                    }
                }
                let mut params: Vec<(&str, String)> = vec![
                    ("response_type", "code".into()),
                    ("client_id", c.spec.client_id.clone()),
                    ("redirect_uri", redirect_url.clone()),
                    ("scope", scope.join(" ")),
                    ("state", state.clone()),
                    ("nonce", nonce.clone()),
                    ("code_challenge", challenge.clone()),
                    ("code_challenge_method", "S256".into()),
                ];
                if let Some(d) = c.spec.max_age {
                    params.push((
                        "max_age",
                        std::time::Duration::from(d).as_secs().to_string(),
                    ));
                }
                if let Some(p) = c.spec.prompt.as_deref().filter(|p| !p.is_empty()) {
                    params.push(("prompt", p.to_string()));
                }
                params
            }
            // GitHub: no OpenID (no ID token, no nonce); `read:org` lists the user's teams.
            SsoConnector::Github(g) => vec![
                ("client_id", g.spec.client_id.clone()),
                ("redirect_uri", redirect_url.clone()),
                ("scope", "read:org".into()),
                ("state", state.clone()),
                ("code_challenge", challenge.clone()),
                ("code_challenge_method", "S256".into()),
            ],
            // SAML: the HTTP-Redirect binding; RelayState names the connector (no secret), for
            // an ACS URL that does not.
            SsoConnector::Saml(c) => {
                let xml = hop_saml::request::authn_request(
                    &state,
                    now,
                    &authorize_url,
                    &c.spec.acs,
                    c.spec.sp_entity_id(),
                );
                vec![
                    ("SAMLRequest", hop_saml::request::deflate_b64(&xml)),
                    ("RelayState", name.clone()),
                ]
            }
        };
        let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let sep = if authorize_url.contains('?') {
            '&'
        } else {
            '?'
        };
        Ok(SsoStarted {
            request_id: record.request_id,
            redirect_url: format!("{authorize_url}{sep}{}", contract::form(&pairs)),
        })
    }

    /// Completes an SSO login from the provider's callback (OIDC or GitHub: the state says
    /// which): returns the client's redirect URL with the sealed result. Each refusal is
    /// audited.
    pub async fn complete_sso_login(
        self: &Arc<Self>,
        cb: SsoCallback,
    ) -> Result<String, SsoCallbackRefusal> {
        let remote = cb.remote;
        // The per-IP bucket of logins: a flood of forged callbacks must not become a flood of
        // audit writes (a refusal here is queued, not awaited).
        let me = self.clone();
        let limited = tokio::task::spawn_blocking(move || me.rate_limit(remote))
            .await
            .map_err(|e| AuthError::Internal(format!("task failed: {e}")))?;
        if let Err(e) = limited {
            self.audit.emit(
                self.event(EventKind::UserLogin, "")
                    .remote(remote)
                    .field("method", "sso")
                    .field("reason", "rate limited")
                    .failed(EventKind::UserLogin, "rate limited"),
            );
            return Err(e.into());
        }
        let me = self.clone();
        let state = cb.state.clone();
        // The state is used once: the record is deleted before anything else happens, whatever
        // the outcome.
        let taken = tokio::task::spawn_blocking(
            move || -> Result<Option<(PendingSsoLogin, SsoConnector)>, AuthError> {
                let key = state_hash(&state);
                let Some(p) = me.store().get::<PendingSsoLogin>(&key)? else {
                    return Ok(None);
                };
                if !me.store().delete::<PendingSsoLogin>(&key)? || !p.value.is_for(&state) {
                    return Ok(None);
                }
                let c = me.sso_connector(&p.value.connector)?;
                if c.kind() != p.value.connector_kind {
                    return Err(SsoError::UnknownConnector(p.value.connector.clone()).into());
                }
                Ok(Some((p.value, c)))
            },
        )
        .await
        .map_err(|e| AuthError::Internal(format!("task failed: {e}")))?;
        let bare = |error| SsoCallbackRefusal {
            error,
            client_redirect: None,
        };
        let (pending, connector) = match taken {
            Ok(Some(v)) => v,
            Ok(None) => {
                return Err(bare(
                    self.refused_async("", "", remote, SsoError::UnknownState)
                        .await,
                ));
            }
            Err(AuthError::Sso(e)) => {
                return Err(bare(self.refused_async("", "", remote, e).await));
            }
            Err(e) => return Err(bare(e)),
        };
        let client_redirect = pending.client_redirect_url.clone();
        self.complete_pending(cb, pending, connector)
            .await
            .map_err(|error| SsoCallbackRefusal {
                client_redirect: Some(refusal_redirect(&client_redirect, &error)),
                error,
            })
    }

    /// Completes a SAML login from the response the IdP had the browser post to the proxy's
    /// ACS: the response verified against the connector (signature over the one assertion,
    /// issuer, audience, recipient, times; `hop_saml`), the assertion ID remembered until it
    /// expires (a replay is refused), the request it answers (`InResponseTo`) taken once, the
    /// attributes mapped to roles and traits and the NameID made the user name. Each refusal is
    /// audited (`method: saml`). Returns the client's redirect URL with the sealed result.
    pub async fn complete_saml_login(
        self: &Arc<Self>,
        post: SamlPost,
    ) -> Result<String, SsoCallbackRefusal> {
        let remote = post.remote;
        let me = self.clone();
        let limited = tokio::task::spawn_blocking(move || me.rate_limit(remote))
            .await
            .map_err(|e| AuthError::Internal(format!("task failed: {e}")))?;
        if let Err(e) = limited {
            self.audit.emit(
                self.event(EventKind::UserLogin, "")
                    .remote(remote)
                    .field("method", "saml")
                    .field("reason", "rate limited")
                    .failed(EventKind::UserLogin, "rate limited"),
            );
            return Err(e.into());
        }
        let bare = |error| SsoCallbackRefusal {
            error,
            client_redirect: None,
        };
        let name = post.connector.clone();
        let me = self.clone();
        let lookup = name.clone();
        let found = tokio::task::spawn_blocking(move || me.sso_connector(&lookup))
            .await
            .map_err(|e| AuthError::Internal(format!("task failed: {e}")))?;
        let connector = match found {
            Ok(SsoConnector::Saml(c)) => c,
            Ok(_) => {
                let e = SsoError::UnknownConnector(name.clone());
                return Err(bare(self.refused_async("", "", remote, e).await));
            }
            Err(e) => return Err(bare(self.refused_async("", "", remote, e).await)),
        };
        let verified = match crate::sso::saml::resolve_idp(&connector.spec).await {
            Ok(idp) => hop_saml::verify_response(
                &post.saml_response,
                &hop_saml::Expected {
                    idp_issuer: &idp.issuer,
                    audience: connector.spec.audience(),
                    acs_url: &connector.spec.acs,
                    keys: &idp.keys,
                    now: self.now(),
                    skew: crate::sso::saml::SAML_SKEW,
                },
            )
            .map_err(SsoError::from),
            Err(e) => Err(e),
        };
        let v = match verified {
            Ok(v) => v,
            Err(e) => return Err(bare(self.refused_async("", &name, remote, e).await)),
        };
        // The assertion is remembered first (a replay fails here even once its request is
        // gone), then the request it answers is taken: both work once, on any Auth instance.
        let me = self.clone();
        let (issuer, assertion_id, irt, until) = (
            v.issuer.clone(),
            v.assertion_id.clone(),
            v.in_response_to.clone(),
            v.remember_until,
        );
        let conn = name.clone();
        let taken = tokio::task::spawn_blocking(move || -> Result<PendingSsoLogin, AuthError> {
            let seen = crate::sso::saml::SeenAssertion {
                key: crate::sso::saml::seen_key(&issuer, &assertion_id),
                connector: conn.clone(),
            };
            match me.store().swap_leased(&seen, None, until) {
                Ok(_) => {}
                Err(hop_storage::StorageError::Conflict { .. }) => {
                    return Err(SsoError::SamlReplay.into());
                }
                Err(e) => return Err(e.into()),
            }
            let key = state_hash(&irt);
            let Some(p) = me.store().get::<PendingSsoLogin>(&key)? else {
                return Err(SsoError::UnknownSamlRequest.into());
            };
            if !me.store().delete::<PendingSsoLogin>(&key)?
                || !p.value.is_for(&irt)
                || p.value.connector != conn
                || p.value.connector_kind != "saml"
            {
                return Err(SsoError::UnknownSamlRequest.into());
            }
            Ok(p.value)
        })
        .await
        .map_err(|e| AuthError::Internal(format!("task failed: {e}")))?;
        let pending = match taken {
            Ok(p) => p,
            Err(AuthError::Sso(e)) => {
                return Err(bare(self.refused_async(&v.name_id, &name, remote, e).await));
            }
            Err(e) => return Err(bare(e)),
        };
        let client_redirect = pending.client_redirect_url.clone();
        let refusal = |error: AuthError| SsoCallbackRefusal {
            client_redirect: Some(refusal_redirect(&client_redirect, &error)),
            error,
        };
        let traits: BTreeMap<String, Vec<String>> = v.attributes.clone();
        let roles = connector.spec.roles_for(&traits);
        if roles.is_empty() {
            let e = SsoError::NoRoles {
                connector: name.clone(),
            };
            return Err(refusal(
                self.refused_async(&v.name_id, &name, remote, e).await,
            ));
        }
        let mapped = MappedLogin {
            username: v.name_id.clone(),
            roles,
            traits,
        };
        let me = self.clone();
        let subject = v.name_id.clone();
        tokio::task::spawn_blocking(move || {
            me.finish_sso_login("saml", &name, &subject, mapped, &pending, remote)
        })
        .await
        .map_err(|e| AuthError::Internal(format!("task failed: {e}")))?
        .map_err(refusal)
    }

    async fn complete_pending(
        self: &Arc<Self>,
        cb: SsoCallback,
        pending: PendingSsoLogin,
        connector: SsoConnector,
    ) -> Result<String, AuthError> {
        let remote = cb.remote;
        let name = pending.connector.clone();
        if let Some(err) = cb.error {
            return Err(self
                .refused_async("", &name, remote, SsoError::ProviderRefused(err))
                .await);
        }
        let identified = match &connector {
            SsoConnector::Oidc(c) => {
                self.verify_callback(c, &pending, &cb.code)
                    .await
                    .and_then(|v| {
                        map_login(&name, &c.spec, &v.subject, &v.claims).map(|m| (v.subject, m))
                    })
            }
            SsoConnector::Github(g) => {
                if cb.code.is_empty() {
                    Err(SsoError::ProviderRefused("no authorization code".into()))
                } else {
                    crate::sso::github::login_and_teams(
                        &g.spec,
                        &cb.code,
                        &pending.pkce_verifier,
                        &pending.redirect_url,
                    )
                    .await
                    .and_then(|(login, teams)| {
                        map_github_login(&name, &g.spec, &login, &teams).map(|m| (login, m))
                    })
                }
            }
            // A SAML login ends at the ACS (`complete_saml_login`), never at this callback.
            SsoConnector::Saml(_) => Err(SsoError::UnknownState),
        };
        let (subject, mapped) = match identified {
            Ok(v) => v,
            Err(e) => return Err(self.refused_async("", &name, remote, e).await),
        };
        let me = self.clone();
        let kind = connector.kind();
        tokio::task::spawn_blocking(move || {
            me.finish_sso_login(kind, &name, &subject, mapped, &pending, remote)
        })
        .await
        .map_err(|e| AuthError::Internal(format!("task failed: {e}")))?
    }

    async fn verify_callback(
        &self,
        connector: &OidcConnector,
        pending: &PendingSsoLogin,
        code: &str,
    ) -> Result<crate::sso::provider::VerifiedIdToken, SsoError> {
        if code.is_empty() {
            return Err(SsoError::ProviderRefused("no authorization code".into()));
        }
        let spec = &connector.spec;
        let meta = self.oidc.metadata(&spec.issuer_url, self.now()).await?;
        let (token, access_token) = self
            .oidc
            .exchange_code(
                &meta,
                &spec.client_id,
                &spec.client_secret,
                code,
                &pending.pkce_verifier,
                &pending.redirect_url,
            )
            .await?;
        let want = Expected {
            issuer: &spec.issuer_url,
            client_id: &spec.client_id,
            nonce: &pending.nonce,
            max_age: spec.max_age.map(Into::into),
            now: self.now(),
        };
        let mut verified = self
            .oidc
            .verify_id_token(&spec.issuer_url, &meta, &token, &want)
            .await?;
        // Claims the provider keeps for userinfo (groups, often) join the ID token's; the ID
        // token's win where both say something.
        if let Some(access) = access_token {
            let extra = self
                .oidc
                .userinfo(&meta, &access, &verified.subject)
                .await?;
            for (k, v) in extra {
                verified.claims.entry(k).or_insert(v);
            }
        }
        Ok(verified)
    }

    /// Writes the temporary user and issues its certificates; returns the client redirect URL
    /// with the sealed result.
    fn finish_sso_login(
        &self,
        kind: &'static str,
        connector: &str,
        subject: &str,
        mapped: MappedLogin,
        pending: &PendingSsoLogin,
        remote: Option<SocketAddr>,
    ) -> Result<String, AuthError> {
        let refuse = |user: &str, e: SsoError| self.sso_refused(user, connector, remote, e);
        let client = if pending.web {
            LoginClient::Web
        } else {
            LoginClient::Cli
        };
        let name = mapped.username.clone();
        if super::validate_username(&name).is_err() {
            return Err(refuse(
                &name,
                SsoError::Provider("ID token (the user name is not a valid Hop user name)"),
            ));
        }
        if name.starts_with(crate::bots::BOT_USER_PREFIX) {
            return Err(refuse(&name, SsoError::NameTaken(name.clone())));
        }
        let now = self.now();
        let existing = self.store().get::<User>(&name)?;
        let not_before = match &existing {
            Some(u) => {
                let ours = u
                    .value
                    .spec
                    .created_by
                    .as_ref()
                    .and_then(|c| c.connector.as_ref());
                // Another identity at the provider under the same name (an address handed on)
                // waits until the earlier user's certificates have expired.
                if !ours.is_some_and(|c| {
                    c.kind == kind
                        && c.id == connector
                        && (c.identity.is_empty() || c.identity == subject)
                }) {
                    return Err(refuse(&name, SsoError::NameTaken(name.clone())));
                }
                u.value.status.not_before
            }
            None => Some(resources::created_stamp(now)),
        };
        let existing_roles: Vec<String> = mapped
            .roles
            .iter()
            .filter(|r| matches!(self.store().get::<hop_rbac::Role>(r), Ok(Some(_))))
            .cloned()
            .collect();
        if existing_roles.is_empty() {
            return Err(refuse(
                &name,
                SsoError::NoRoles {
                    connector: connector.to_string(),
                },
            ));
        }
        let checker = self.checker_for(&existing_roles, &mapped.traits)?;
        let requested = (pending.ttl_secs > 0).then(|| Duration::from_secs(pending.ttl_secs));
        let ttl = hop_ca::effective_ttl(requested, checker.max_session_ttl());
        let expires = self.expiry_after(ttl)?;
        let mut user = User::new(name.clone(), &[]);
        user.spec.roles = existing_roles;
        user.spec.traits = mapped.traits.clone();
        user.spec.created_by = Some(CreatedBy {
            time: resources::odt(now),
            user: String::new(),
            connector: Some(ConnectorRef {
                kind: kind.into(),
                id: connector.to_string(),
                identity: subject.to_string(),
            }),
        });
        user.metadata.expires = Some(resources::odt(expires));
        user.status.not_before = not_before;
        user.validate()
            .map_err(|e| AuthError::BadRequest(e.to_string()))?;
        // The user lives as long as its certificate: a lease on the record.
        let lease_until = match &existing {
            Some(u) => u
                .value
                .metadata
                .expires
                .map_or(expires, resources::from_odt)
                .max(expires),
            None => expires,
        };
        self.store()
            .swap_leased(&user, existing.as_ref().map(|u| u.revision), lease_until)
            .map_err(AuthError::from)?;
        if self.user_lock_in_force(&name)?.is_some() {
            return Err(refuse(&name, SsoError::Locked(name.clone())));
        }
        let tls_key = hex::decode(&pending.tls_public_key)
            .map_err(|_| AuthError::Internal("stored TLS key".into()))?;
        let login = LoginRequest {
            username: &name,
            password: "",
            totp_code: "",
            ssh_public_key: &pending.ssh_public_key,
            tls_public_key_der: &tls_key,
            ttl: Some(ttl),
            remote,
            client,
        };
        let certs = match self.issue_login_certificates(&user, &login, now) {
            Ok(c) => c,
            Err(e) => {
                self.metrics.logins_failed.inc();
                self.audit.emit_durable(
                    self.event(EventKind::UserLogin, &name)
                        .remote(remote)
                        .field("method", kind)
                        .field("connector", connector)
                        .failed(EventKind::UserLogin, e.to_string()),
                );
                return Err(e);
            }
        };
        self.metrics.logins_ok.inc();
        self.audit.emit_durable(
            self.event(EventKind::UserLogin, &name)
                .remote(remote)
                .field("client", client.name())
                .field("method", kind)
                .field("connector", connector)
                .field("identity", subject)
                .field("roles", certs.roles.clone())
                .field("expires", rfc3339(certs.expires)),
        );
        let result = hop_api::proto::SsoLoginResult {
            request_id: pending.request_id.clone(),
            login: Some(hop_api::proto::LoginResponse {
                ssh_certificate: certs.ssh_certificate,
                tls_certificate_pem: certs.tls_certificate_pem,
                known_hosts: certs.known_hosts,
                trusted_cas_pem: certs.trusted_cas_pem,
                cluster_name: self.cluster_name().to_string(),
                username: certs.username,
                roles: certs.roles,
                logins: certs.logins,
                expires_unix: super::unix(certs.expires),
                trust_digest: certs.trust_digest,
            }),
            traits_json: serde_json::to_string(&mapped.traits).unwrap_or_default(),
        };
        let key = hex::decode(&pending.seal_key)
            .map_err(|_| AuthError::Internal("stored sealing key".into()))?;
        let sealed = contract::seal(&key, &pending.request_id, &result.encode_to_vec())
            .map_err(|e| AuthError::Internal(format!("sealing the SSO result: {e}")))?;
        let sep = if pending.client_redirect_url.contains('?') {
            '&'
        } else {
            '?'
        };
        Ok(format!(
            "{}{sep}{RESPONSE_PARAM}={sealed}",
            pending.client_redirect_url
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec() -> OidcConnectorSpec {
        OidcConnectorSpec {
            claims_to_roles: vec![hop_rbac::ClaimMapping {
                claim: "groups".into(),
                value: "devs".into(),
                roles: vec!["dev".into()],
            }],
            ..Default::default()
        }
    }

    #[test]
    fn claims_become_traits_and_roles_and_the_name_is_the_email() {
        let claims = json!({"iss": "x", "nonce": "n", "sub": "u1", "email": "alice@example.test",
            "groups": ["devs", "web"], "unix_login": "alice"});
        let m = map_login("c", &spec(), "u1", claims.as_object().unwrap()).unwrap();
        assert_eq!(m.username, "alice@example.test");
        assert_eq!(m.roles, ["dev"]);
        assert_eq!(m.traits["groups"], ["devs", "web"]);
        assert_eq!(m.traits["unix_login"], ["alice"]);
        assert!(!m.traits.contains_key("nonce") && !m.traits.contains_key("iss"));
        let mut s = spec();
        s.username_claim = "unix_login".into();
        assert_eq!(
            map_login("c", &s, "u1", claims.as_object().unwrap())
                .unwrap()
                .username,
            "alice"
        );
    }

    #[test]
    fn an_unverified_email_names_nobody() {
        let claims = json!({"sub": "u1", "email": "boss@example.test", "email_verified": false,
            "groups": ["devs"]});
        assert!(matches!(
            map_login("c", &spec(), "u1", claims.as_object().unwrap()),
            Err(SsoError::Provider(_))
        ));
        let claims = json!({"sub": "u1", "groups": ["devs"]});
        assert_eq!(
            map_login("c", &spec(), "u1", claims.as_object().unwrap())
                .unwrap()
                .username,
            "u1"
        );
    }

    #[test]
    fn github_teams_map_to_roles_and_traits() {
        let spec = hop_rbac::GithubConnectorSpec {
            teams_to_roles: vec![hop_rbac::TeamMapping {
                organization: "octocats".into(),
                team: "admins".into(),
                roles: vec!["dev".into()],
            }],
            ..Default::default()
        };
        let teams = [("octocats".to_string(), "admins".to_string())];
        let m = map_github_login("gh", &spec, "octo", &teams).unwrap();
        assert_eq!(m.username, "octo");
        assert_eq!(m.roles, ["dev"]);
        assert_eq!(m.traits["github_teams"], ["octocats/admins"]);
        assert!(map_github_login("gh", &spec, "octo", &[]).is_err());
    }

    #[test]
    fn claims_that_map_to_no_role_are_refused() {
        let claims = json!({"sub": "u1", "groups": ["outsiders"]});
        assert!(matches!(
            map_login("c", &spec(), "u1", claims.as_object().unwrap()),
            Err(SsoError::NoRoles { .. })
        ));
    }
}
