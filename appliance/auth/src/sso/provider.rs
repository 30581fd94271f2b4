//! OpenID providers as Auth sees them: the discovery document
//! (`ISSUER/.well-known/openid-configuration`, cached for [`DISCOVERY_TTL`]), the key set
//! (cached; fetched again when a token names a key it lacks, at most once per
//! [`JWKS_REFETCH_INTERVAL`], so that a rotation is followed and a flood of unknown `kid`s
//! cannot turn into a flood of fetches), the token endpoint (code + PKCE verifier, client secret
//! by HTTP basic), and ID-token verification. Time comes from the caller.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hop_api::jose::{self, Expected, Jwks};
use hop_api::sso::form;
use serde_json::{Map, Value};

use super::SsoError;
use super::http::{IdpRequest, fetch};

/// How long a discovery document is used before it is fetched again.
pub const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
/// How long a key set is used before it is fetched again.
pub const JWKS_TTL: Duration = Duration::from_secs(3600);
/// The least time between two key-set fetches caused by an unknown key.
pub const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(30);

/// The endpoints of one provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderMeta {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    /// Where the user's claims beyond the ID token's are (optional in the discovery document).
    pub userinfo_endpoint: Option<String>,
}

/// Parses a discovery document and checks its issuer is `issuer` exactly (OIDC Discovery §4.3).
pub fn parse_discovery(bytes: &[u8], issuer: &str) -> Result<ProviderMeta, SsoError> {
    let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(bytes) else {
        return Err(SsoError::Provider("discovery document"));
    };
    let field = |k: &str| -> Result<String, SsoError> {
        m.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or(SsoError::Provider("discovery document"))
    };
    let meta = ProviderMeta {
        issuer: field("issuer")?,
        authorization_endpoint: field("authorization_endpoint")?,
        token_endpoint: field("token_endpoint")?,
        jwks_uri: field("jwks_uri")?,
        userinfo_endpoint: field("userinfo_endpoint").ok(),
    };
    if meta.issuer != issuer {
        return Err(SsoError::Provider(
            "discovery document (issuer differs from issuer_url)",
        ));
    }
    Ok(meta)
}

#[derive(Debug, Clone)]
struct Cached {
    meta: Arc<ProviderMeta>,
    meta_at: SystemTime,
    jwks: Option<(Arc<Jwks>, SystemTime)>,
}

/// The providers Auth has talked to, by issuer.
#[derive(Debug, Default)]
pub struct OidcProviders {
    cache: Mutex<HashMap<String, Cached>>,
}

/// A verified ID token: its subject and claims.
#[derive(Debug, Clone)]
pub struct VerifiedIdToken {
    pub subject: String,
    pub claims: Map<String, Value>,
}

fn fresh(at: SystemTime, now: SystemTime, ttl: Duration) -> bool {
    now.duration_since(at).is_ok_and(|age| age < ttl)
}

impl OidcProviders {
    fn cached(&self, issuer: &str) -> Option<Cached> {
        self.cache.lock().ok()?.get(issuer).cloned()
    }

    fn store(&self, issuer: &str, c: Cached) {
        if let Ok(mut m) = self.cache.lock() {
            // A bounded cache: connectors are few; a removed one's entry goes with the rest.
            if m.len() >= 64 && !m.contains_key(issuer) {
                m.clear();
            }
            m.insert(issuer.to_string(), c);
        }
    }

    /// The provider's endpoints, from the cache or its discovery document.
    pub async fn metadata(
        &self,
        issuer: &str,
        now: SystemTime,
    ) -> Result<Arc<ProviderMeta>, SsoError> {
        if let Some(c) = self.cached(issuer)
            && fresh(c.meta_at, now, DISCOVERY_TTL)
        {
            return Ok(c.meta);
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let body = fetch(IdpRequest {
            post_form: None,
            url: &url,
            authorization: None,
        })
        .await?;
        let meta = Arc::new(parse_discovery(&body, issuer)?);
        let jwks = self
            .cached(issuer)
            .filter(|c| c.meta.jwks_uri == meta.jwks_uri)
            .and_then(|c| c.jwks);
        self.store(
            issuer,
            Cached {
                meta: meta.clone(),
                meta_at: now,
                jwks,
            },
        );
        Ok(meta)
    }

    async fn fetch_jwks(
        &self,
        issuer: &str,
        meta: &Arc<ProviderMeta>,
        now: SystemTime,
    ) -> Result<Arc<Jwks>, SsoError> {
        let body = fetch(IdpRequest {
            post_form: None,
            url: &meta.jwks_uri,
            authorization: None,
        })
        .await?;
        let jwks = Arc::new(jose::parse_jwks(&body)?);
        self.store(
            issuer,
            Cached {
                meta: meta.clone(),
                meta_at: self.cached(issuer).map_or(now, |c| c.meta_at),
                jwks: Some((jwks.clone(), now)),
            },
        );
        Ok(jwks)
    }

    /// Verifies an ID token's signature against the provider's keys (fetching them again once
    /// when the token names a key the cached set lacks) and checks its claims.
    pub async fn verify_id_token(
        &self,
        issuer: &str,
        meta: &Arc<ProviderMeta>,
        token: &str,
        want: &Expected<'_>,
    ) -> Result<VerifiedIdToken, SsoError> {
        let jws = jose::parse_jws(token)?;
        let now = want.now;
        let cached = self.cached(issuer).and_then(|c| c.jwks);
        let jwks = match cached {
            Some((set, at)) if fresh(at, now, JWKS_TTL) => {
                if !set.has_key_for(&jws) && !fresh(at, now, JWKS_REFETCH_INTERVAL) {
                    tracing::info!(
                        issuer,
                        "ID token names a key not in the cached key set; fetching the key set again"
                    );
                    self.fetch_jwks(issuer, meta, now).await?
                } else {
                    set
                }
            }
            _ => self.fetch_jwks(issuer, meta, now).await?,
        };
        jwks.verify(&jws)?;
        let subject = jose::check_id_token(&jws.claims, want)?;
        Ok(VerifiedIdToken {
            subject,
            claims: jws.claims,
        })
    }

    /// The provider's userinfo claims for `access_token` (JSON; a signed userinfo answer is not
    /// accepted), which must name the ID token's subject (OIDC Core §5.3.2).
    pub async fn userinfo(
        &self,
        meta: &ProviderMeta,
        access_token: &str,
        subject: &str,
    ) -> Result<Map<String, Value>, SsoError> {
        let Some(url) = &meta.userinfo_endpoint else {
            return Ok(Map::new());
        };
        let body = fetch(IdpRequest {
            post_form: None,
            url,
            authorization: Some(format!("Bearer {access_token}")),
        })
        .await?;
        parse_userinfo(&body, subject)
    }

    /// Trades an authorization code for the ID token (and the access token, for userinfo) at
    /// the token endpoint.
    pub async fn exchange_code(
        &self,
        meta: &ProviderMeta,
        client_id: &str,
        client_secret: &str,
        code: &str,
        pkce_verifier: &str,
        redirect_url: &str,
    ) -> Result<(String, Option<String>), SsoError> {
        let basic = format!(
            "{}:{}",
            hop_api::sso::form_encode(client_id),
            hop_api::sso::form_encode(client_secret)
        );
        let body = fetch(IdpRequest {
            post_form: Some(form(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", redirect_url),
                ("code_verifier", pkce_verifier),
            ])),
            url: &meta.token_endpoint,
            authorization: Some(format!(
                "Basic {}",
                data_encoding::BASE64.encode(basic.as_bytes())
            )),
        })
        .await?;
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(m)) => {
                let id_token = m
                    .get("id_token")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or(SsoError::Provider("token answer (no id_token)"))?;
                let access = m
                    .get("access_token")
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned);
                Ok((id_token, access))
            }
            _ => Err(SsoError::Provider("token answer")),
        }
    }
}

/// A userinfo answer's claims, refused unless its `sub` is the ID token's.
pub fn parse_userinfo(body: &[u8], subject: &str) -> Result<Map<String, Value>, SsoError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) if m.get("sub").and_then(Value::as_str) == Some(subject) => Ok(m),
        Ok(Value::Object(_)) => Err(SsoError::Provider(
            "userinfo answer (its sub is not the ID token's)",
        )),
        _ => Err(SsoError::Provider("userinfo answer")),
    }
}

#[cfg(test)]
#[path = "provider_tests.rs"]
mod rotation_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_must_name_the_subject() {
        let m = parse_userinfo(br#"{"sub":"alice","groups":["devs"]}"#, "alice").unwrap();
        assert_eq!(m["groups"][0], "devs");
        assert!(parse_userinfo(br#"{"sub":"mallory","groups":["admins"]}"#, "alice").is_err());
        assert!(parse_userinfo(br#"{"groups":["admins"]}"#, "alice").is_err());
        assert!(parse_userinfo(b"eyJ.signed.jwt", "alice").is_err());
    }

    #[test]
    fn discovery_must_name_the_configured_issuer() {
        let doc = br#"{"issuer":"http://127.0.0.1:9000","authorization_endpoint":"http://127.0.0.1:9000/auth","token_endpoint":"http://127.0.0.1:9000/token","jwks_uri":"http://127.0.0.1:9000/jwks"}"#;
        let m = parse_discovery(doc, "http://127.0.0.1:9000").unwrap();
        assert_eq!(m.token_endpoint, "http://127.0.0.1:9000/token");
        assert!(parse_discovery(doc, "http://127.0.0.1:9001").is_err());
        assert!(parse_discovery(b"[]", "x").is_err());
        for i in 0..doc.len() {
            assert!(parse_discovery(&doc[..i], "http://127.0.0.1:9000").is_err());
        }
    }
}
