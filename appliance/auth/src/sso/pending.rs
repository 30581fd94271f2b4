//! Pending SSO logins: what Auth remembers between starting a login and the provider's
//! callback. A record lives in the backend under the SHA-256 of its `state` (so the state
//! itself is stored nowhere), on a lease of [`SSO_REQUEST_TTL`], and is deleted by the first
//! callback that names it: a state works once, on any Auth instance. `Debug` shows no secret.

use std::time::Duration;

use hop_storage::StoredResource;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// How long a started login waits for the provider's callback.
pub const SSO_REQUEST_TTL: Duration = Duration::from_secs(10 * 60);

/// A login started and not yet completed.
#[derive(Clone, Serialize, Deserialize)]
pub struct PendingSsoLogin {
    /// hex(sha256(state)): the storage name.
    pub state_hash: String,
    /// The public name of the login; the sealed result is bound to it.
    pub request_id: String,
    /// `oidc`.
    pub connector_kind: String,
    pub connector: String,
    pub nonce: String,
    pub pkce_verifier: String,
    /// The redirect URL the provider was given (the connector's, at the start).
    pub redirect_url: String,
    pub client_redirect_url: String,
    pub ssh_public_key: String,
    /// DER SubjectPublicKeyInfo, hex.
    pub tls_public_key: String,
    pub ttl_secs: u64,
    /// The client's one-time key, hex.
    pub seal_key: String,
    pub created_unix: i64,
    /// Started by the web UI's login page (the result makes a web session).
    #[serde(default)]
    pub web: bool,
}

impl std::fmt::Debug for PendingSsoLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingSsoLogin")
            .field("request_id", &self.request_id)
            .field("connector", &self.connector)
            .finish_non_exhaustive()
    }
}

impl StoredResource for PendingSsoLogin {
    const KIND: &'static str = "sso_auth_request";
    fn name(&self) -> &str {
        &self.state_hash
    }
}

/// hex(sha256(state)).
#[must_use]
pub fn state_hash(state: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(state.as_bytes()))
}

impl PendingSsoLogin {
    /// Whether `state` is this record's (constant time).
    #[must_use]
    pub fn is_for(&self, state: &str) -> bool {
        state_hash(state)
            .as_bytes()
            .ct_eq(self.state_hash.as_bytes())
            .into()
    }
}

/// 32 random bytes, base64url: a `state`, a nonce, a PKCE verifier (RFC 7636: 43 characters).
#[must_use]
pub fn random_b64() -> String {
    let mut b = [0u8; 32];
    rand::fill(&mut b[..]);
    data_encoding::BASE64URL_NOPAD.encode(&b)
}

/// The PKCE S256 challenge of `verifier`.
#[must_use]
pub fn pkce_challenge(verifier: &str) -> String {
    use sha2::Digest;
    data_encoding::BASE64URL_NOPAD.encode(&sha2::Sha256::digest(verifier.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_rfc7636_appendix_b() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert_eq!(random_b64().len(), 43);
    }
}
