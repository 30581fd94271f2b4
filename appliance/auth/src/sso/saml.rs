//! SAML 2.0 connectors, Auth's part around the sans-IO `hop_saml` crate: what the connector
//! says of its IdP (inline metadata, metadata fetched from `entity_descriptor_url` at each
//! login over the same capped client as OIDC discovery, or `issuer`/`sso`/`cert`; explicit
//! fields win), and the assertion IDs already accepted, remembered in the backend until the
//! assertion's own expiry so that a replay is refused by any Auth instance.

use hop_rbac::SamlConnectorSpec;
use hop_saml::dsig::IdpKey;
use hop_storage::StoredResource;
use serde::{Deserialize, Serialize};

use super::SsoError;
use super::http::{IdpRequest, fetch};

/// Clock skew allowed each way on a SAML assertion's times.
pub const SAML_SKEW: std::time::Duration = std::time::Duration::from_secs(60);

/// The IdP a connector names.
#[derive(Debug, Clone)]
pub struct ResolvedIdp {
    pub issuer: String,
    pub sso_url: String,
    pub keys: Vec<IdpKey>,
}

/// Reads the connector's description of its IdP (fetching the metadata when it names a URL).
pub async fn resolve_idp(spec: &SamlConnectorSpec) -> Result<ResolvedIdp, SsoError> {
    let fetched;
    let xml = if !spec.entity_descriptor.is_empty() {
        Some(spec.entity_descriptor.as_str())
    } else if !spec.entity_descriptor_url.is_empty() {
        let body = fetch(IdpRequest {
            post_form: None,
            url: &spec.entity_descriptor_url,
            authorization: None,
        })
        .await?;
        fetched = String::from_utf8(body.to_vec())
            .map_err(|_| SsoError::Provider("SAML metadata (not UTF-8)"))?;
        Some(fetched.as_str())
    } else {
        None
    };
    let meta = xml.map(hop_saml::metadata::parse_metadata).transpose()?;
    let issuer = if spec.issuer.is_empty() {
        meta.as_ref()
            .map(|m| m.entity_id.clone())
            .unwrap_or_default()
    } else {
        spec.issuer.clone()
    };
    let sso_url = if spec.sso.is_empty() {
        meta.as_ref().map(|m| m.sso_url.clone()).unwrap_or_default()
    } else {
        spec.sso.clone()
    };
    let keys = if spec.cert.is_empty() {
        match &meta {
            Some(m) => m.keys()?,
            None => Vec::new(),
        }
    } else {
        IdpKey::from_pem_or_base64(&spec.cert)?
    };
    if issuer.is_empty() || sso_url.is_empty() || keys.is_empty() {
        return Err(SsoError::Provider(
            "SAML connector (no IdP issuer, HTTP-Redirect SSO URL or signing certificate)",
        ));
    }
    Ok(ResolvedIdp {
        issuer,
        sso_url,
        keys,
    })
}

/// An assertion already accepted: stored under hex(sha256(issuer NUL id)) on a lease that ends
/// when the assertion could no longer be accepted anyway.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeenAssertion {
    pub key: String,
    pub connector: String,
}

impl StoredResource for SeenAssertion {
    const KIND: &'static str = "saml_assertion_seen";
    fn name(&self) -> &str {
        &self.key
    }
}

/// The storage name of an assertion.
#[must_use]
pub fn seen_key(issuer: &str, assertion_id: &str) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(issuer.as_bytes());
    h.update([0u8]);
    h.update(assertion_id.as_bytes());
    hex::encode(h.finalize())
}
