//! JWT signing with the cluster's jwt CA: the ES256 assertions the proxy hands to web
//! applications (`Hop-Jwt-Assertion`) and the JSON Web Key Set they verify them with.
//!
//! This module owns the compact serialization (`header.payload.signature`, base64url without
//! padding), the key id (base64url of the first 16 bytes of SHA-256 over the key's SPKI DER) and
//! the JWK of a P-256 public key. It signs whatever claims the caller passes (Auth decides
//! them) and never reads a clock. Signatures are deterministic (RFC 6979), so signing needs no
//! randomness.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use p256::ecdsa::signature::Signer as _;
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey};
use sha2::{Digest, Sha256};

use crate::authority::{CaKind, CaPublic, CertAuthority};
use crate::error::CaError;

/// The signing half of the jwt CA, parsed once.
pub struct JwtSigner {
    key: p256::ecdsa::SigningKey,
    kid: String,
    /// The header every token carries (base64url), built once.
    header_b64: String,
}

impl std::fmt::Debug for JwtSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSigner")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl JwtSigner {
    /// The signer of the jwt CA `ca`.
    ///
    /// # Errors
    /// [`CaError::WrongCaKind`] for another CA; [`CaError::InvalidKey`] when its key does not
    /// parse.
    pub fn from_authority(ca: &CertAuthority) -> Result<Self, CaError> {
        ca.require_kind(CaKind::Jwt, "sign JWTs")?;
        let pem = ca.jwt_key_pem.as_deref().ok_or(CaError::InvalidKey {
            what: "jwt CA key",
            reason: "the jwt CA has no key".into(),
        })?;
        let secret = p256::SecretKey::from_pkcs8_pem(pem).map_err(|e| CaError::InvalidKey {
            what: "jwt CA key",
            reason: e.to_string(),
        })?;
        let kid = kid_of(&secret.public_key())?;
        let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": kid});
        Ok(Self {
            key: p256::ecdsa::SigningKey::from(&secret),
            header_b64: B64.encode(header.to_string()),
            kid,
        })
    }

    /// The key id tokens name in their header.
    #[must_use]
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// A compact ES256 JWT over `claims` (a JSON object).
    #[must_use]
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        let mut token = String::with_capacity(512);
        token.push_str(&self.header_b64);
        token.push('.');
        token.push_str(&B64.encode(claims.to_string()));
        let sig: p256::ecdsa::Signature = self.key.sign(token.as_bytes());
        token.push('.');
        token.push_str(&B64.encode(sig.to_bytes()));
        token
    }
}

/// The key id of a P-256 public key: base64url of the first 16 bytes of SHA-256(SPKI DER).
fn kid_of(public: &p256::PublicKey) -> Result<String, CaError> {
    let spki = public.to_public_key_der().map_err(|e| CaError::Issuance {
        reason: e.to_string(),
    })?;
    let digest = Sha256::digest(spki.as_bytes());
    Ok(B64.encode(digest.get(..16).unwrap_or_default()))
}

/// The JWK of a jwt CA's public key (SPKI PEM, as [`CaPublic::jwt_public_pem`] holds it).
///
/// # Errors
/// [`CaError::InvalidKey`] when the PEM is not a P-256 public key.
pub fn jwk_of(public_pem: &str) -> Result<serde_json::Value, CaError> {
    let public =
        p256::PublicKey::from_public_key_pem(public_pem).map_err(|e| CaError::InvalidKey {
            what: "jwt CA public key",
            reason: e.to_string(),
        })?;
    let sec1 = public.to_sec1_bytes();
    let (x, y) = match (sec1.first(), sec1.get(1..33), sec1.get(33..65)) {
        (Some(4), Some(x), Some(y)) if sec1.len() == 65 => (x, y),
        _ => {
            return Err(CaError::InvalidKey {
                what: "jwt CA public key",
                reason: "not an uncompressed P-256 point".into(),
            });
        }
    };
    Ok(serde_json::json!({
        "kty": "EC",
        "crv": "P-256",
        "x": B64.encode(x),
        "y": B64.encode(y),
        "use": "sig",
        "alg": "ES256",
        "kid": kid_of(&public)?,
    }))
}

/// The JSON Web Key Set of the given jwt CAs' public halves (`{"keys": [...]}`); a CA without a
/// usable key is left out.
#[must_use]
pub fn jwks(cas: &[CaPublic]) -> serde_json::Value {
    let keys: Vec<serde_json::Value> = cas
        .iter()
        .filter_map(|c| c.jwt_public_pem.as_deref())
        .filter_map(|pem| jwk_of(pem).ok())
        .collect();
    serde_json::json!({ "keys": keys })
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Verifier as _;

    fn jwt_ca() -> CertAuthority {
        CertAuthority::generate(
            CaKind::Jwt,
            "example",
            std::time::SystemTime::UNIX_EPOCH,
            &mut rand::rng(),
        )
        .unwrap()
    }

    #[test]
    fn a_token_verifies_with_the_key_its_jwks_entry_describes() {
        let ca = jwt_ca();
        let signer = JwtSigner::from_authority(&ca).unwrap();
        let token = signer.sign(&serde_json::json!({"sub": "alice", "exp": 10}));
        let set = jwks(&[ca.public()]);
        let key = &set["keys"][0];
        assert_eq!(key["kid"], signer.kid());
        assert_eq!(key["alg"], "ES256");
        let mut sec1 = vec![4u8];
        sec1.extend(B64.decode(key["x"].as_str().unwrap()).unwrap());
        sec1.extend(B64.decode(key["y"].as_str().unwrap()).unwrap());
        let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).unwrap();
        let (signed, sig) = token.rsplit_once('.').unwrap();
        let sig = p256::ecdsa::Signature::from_slice(&B64.decode(sig).unwrap()).unwrap();
        vk.verify(signed.as_bytes(), &sig).unwrap();
        // A changed payload does not verify.
        let (header, _) = signed.split_once('.').unwrap();
        let forged = format!("{header}.{}", B64.encode(r#"{"sub":"root","exp":10}"#));
        assert!(vk.verify(forged.as_bytes(), &sig).is_err());
        let header: serde_json::Value =
            serde_json::from_slice(&B64.decode(header).unwrap()).unwrap();
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["typ"], "JWT");
        assert_eq!(header["kid"], signer.kid());
    }

    #[test]
    fn only_the_jwt_ca_signs() {
        let user = CertAuthority::generate(
            CaKind::User,
            "example",
            std::time::SystemTime::UNIX_EPOCH,
            &mut rand::rng(),
        )
        .unwrap();
        assert!(matches!(
            JwtSigner::from_authority(&user),
            Err(CaError::WrongCaKind { .. })
        ));
        assert!(jwk_of("not a key").is_err());
    }
}
