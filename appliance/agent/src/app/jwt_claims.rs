//! The identity a request carries to a web app: the `Hop-Jwt-Assertion` header's JWT, decoded
//! (not verified: the proxy that minted it is authenticated by mTLS, and the upstream verifies
//! the signature against the JWKS) into the claims that header templates read. Sans-IO.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

/// The header the proxy puts the assertion in.
pub(crate) const ASSERTION_HEADER: &str = "hop-jwt-assertion";

/// Why a request's assertion is unusable; the words go back in a 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ClaimsError {
    #[error("the request carries no Hop-Jwt-Assertion")]
    Missing,
    #[error("the request carries more than one Hop-Jwt-Assertion")]
    Several,
    #[error("Hop-Jwt-Assertion is not a JWT (header.payload.signature)")]
    NotAJwt,
    #[error("Hop-Jwt-Assertion: the {0} is not base64url")]
    Encoding(&'static str),
    #[error("Hop-Jwt-Assertion: the {part} is not the expected JSON: {reason}")]
    Json { part: &'static str, reason: String },
    #[error("Hop-Jwt-Assertion: algorithm {0:?} where ES256 was expected")]
    Algorithm(String),
    #[error("Hop-Jwt-Assertion: the signature is not 64 bytes of ES256")]
    Signature,
    #[error("Hop-Jwt-Assertion names no user")]
    NoUser,
}

/// The claims the agent reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub(crate) struct Claims {
    #[serde(default)]
    pub sub: String,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub traits: hop_rbac::Traits,
    pub exp: u64,
}

#[derive(Deserialize)]
struct JoseHeader {
    alg: String,
}

/// Decodes a compact JWS's header (which must say ES256), payload and signature length.
pub(crate) fn decode(token: &[u8]) -> Result<Claims, ClaimsError> {
    let mut parts = token.split(|&b| b == b'.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ClaimsError::NotAJwt);
    };
    let b64 = |part: &'static str, bytes: &[u8]| {
        URL_SAFE_NO_PAD
            .decode(bytes)
            .map_err(|_| ClaimsError::Encoding(part))
    };
    let json_err = |part| {
        move |e: serde_json::Error| ClaimsError::Json {
            part,
            reason: e.to_string(),
        }
    };
    let jose: JoseHeader =
        serde_json::from_slice(&b64("header", header)?).map_err(json_err("header"))?;
    if jose.alg != "ES256" {
        return Err(ClaimsError::Algorithm(jose.alg));
    }
    if b64("signature", signature)?.len() != 64 {
        return Err(ClaimsError::Signature);
    }
    let mut claims: Claims =
        serde_json::from_slice(&b64("payload", payload)?).map_err(json_err("payload"))?;
    if claims.username.is_empty() {
        claims.username.clone_from(&claims.sub);
    }
    if claims.username.is_empty() {
        return Err(ClaimsError::NoUser);
    }
    Ok(claims)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A token shaped like the proxy's (the signature is 64 arbitrary bytes: nothing here
    /// verifies it).
    pub(crate) fn token(payload: &serde_json::Value) -> String {
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256","typ":"JWT","kid":"k1"}"#);
        let p = URL_SAFE_NO_PAD.encode(payload.to_string());
        let s = URL_SAFE_NO_PAD.encode([7u8; 64]);
        format!("{h}.{p}.{s}")
    }

    fn alice() -> serde_json::Value {
        serde_json::json!({
            "iss": "hop.test", "sub": "alice", "username": "alice", "roles": ["app-dev"],
            "traits": {"logins": ["alice", "root"], "email": ["alice@example.com"]},
            "iat": 1, "nbf": 1, "exp": 2,
        })
    }

    #[test]
    fn claims_decode() {
        let c = decode(token(&alice()).as_bytes()).unwrap();
        assert_eq!(c.username, "alice");
        assert_eq!(c.roles, ["app-dev"]);
        assert_eq!(c.traits["logins"], ["alice", "root"]);
        assert!(!c.traits.contains_key("nothing"));
        let sub_only = serde_json::json!({"sub": "bob", "exp": 5});
        assert_eq!(decode(token(&sub_only).as_bytes()).unwrap().username, "bob");
    }

    #[test]
    fn malformed_tokens_are_refused_by_name() {
        let good = token(&alice());
        let e = |t: &str| decode(t.as_bytes()).unwrap_err().to_string();
        assert!(e("abc").contains("not a JWT"));
        assert!(e(&format!("{good}.x")).contains("not a JWT"));
        let (h, rest) = good.split_once('.').unwrap();
        assert!(e(&format!("{h}!.{rest}")).contains("header is not base64url"));
        assert!(
            e(&format!("{h}.e30.{}", "A".repeat(86))).contains("payload is not the expected JSON")
        );
        let none = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
        assert!(e(&format!("{none}.{rest}")).contains("\"none\""));
        let short = good.rsplit_once('.').unwrap().0.to_string() + ".AAAA";
        assert!(e(&short).contains("64 bytes"));
        let nobody = token(&serde_json::json!({"exp": 1}));
        assert!(e(&nobody).contains("names no user"));
        let bad_traits = token(&serde_json::json!({"sub": "a", "exp": 1, "traits": {"x": "y"}}));
        assert!(e(&bad_traits).contains("payload is not the expected JSON"));
    }

    #[test]
    fn every_prefix_is_refused_not_a_panic() {
        let good = token(&alice());
        for i in 0..good.len() {
            assert!(decode(&good.as_bytes()[..i]).is_err(), "prefix {i}");
        }
        let mut flipped = good.into_bytes();
        for i in 0..flipped.len() {
            flipped[i] ^= 0x20;
            let _ = decode(&flipped);
            flipped[i] ^= 0x20;
        }
    }
}
