//! Proof of possession of a P-256 key: a signature over a message the verifier checks against
//! the public key it registered earlier (a bot's bound key pair). This module owns only the
//! signing and the verification (ECDSA P-256, SHA-256, DER signatures); what the message says
//! and whether it is fresh is the caller's business.

use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{DerSignature, SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _};

use crate::CaError;

/// Signs `message` with the P-256 key in `private_pkcs8_pem`; the DER signature.
///
/// # Errors
/// [`CaError::InvalidKey`] when the key does not parse as a P-256 PKCS#8 key.
pub fn sign_proof(private_pkcs8_pem: &str, message: &[u8]) -> Result<Vec<u8>, CaError> {
    let key = SigningKey::from_pkcs8_pem(private_pkcs8_pem).map_err(|e| CaError::InvalidKey {
        what: "proof key",
        reason: e.to_string(),
    })?;
    let sig: DerSignature = key.sign(message);
    Ok(sig.to_bytes().to_vec())
}

/// The public part (DER SubjectPublicKeyInfo) of the P-256 key in `private_pkcs8_pem`.
///
/// # Errors
/// [`CaError::InvalidKey`] when the key does not parse as a P-256 PKCS#8 key.
pub fn proof_public_key(private_pkcs8_pem: &str) -> Result<Vec<u8>, CaError> {
    use p256::pkcs8::EncodePublicKey as _;
    let invalid = |reason: String| CaError::InvalidKey {
        what: "proof key",
        reason,
    };
    let key = SigningKey::from_pkcs8_pem(private_pkcs8_pem).map_err(|e| invalid(e.to_string()))?;
    let der = key
        .verifying_key()
        .to_public_key_der()
        .map_err(|e| invalid(e.to_string()))?;
    Ok(der.as_bytes().to_vec())
}

/// Checks that `public_spki_der` is a P-256 public key a proof can be verified with.
///
/// # Errors
/// [`CaError::InvalidKey`] when it is not.
pub fn check_proof_key(public_spki_der: &[u8]) -> Result<(), CaError> {
    VerifyingKey::from_public_key_der(public_spki_der)
        .map(|_| ())
        .map_err(|e| CaError::InvalidKey {
            what: "proof public key",
            reason: e.to_string(),
        })
}

/// Checks that `signature` (DER) over `message` was made with the key whose public part is
/// `public_spki_der`.
///
/// # Errors
/// [`CaError::InvalidKey`] when the public key does not parse, [`CaError::BadSignature`] when
/// the signature does not parse or verify.
pub fn verify_proof(
    public_spki_der: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<(), CaError> {
    let key =
        VerifyingKey::from_public_key_der(public_spki_der).map_err(|e| CaError::InvalidKey {
            what: "proof public key",
            reason: e.to_string(),
        })?;
    let sig = DerSignature::from_bytes(signature).map_err(|_| CaError::BadSignature)?;
    key.verify(message, &sig).map_err(|_| CaError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_verifies_only_with_its_key_and_message() {
        let mut rng = rand::rng();
        let k = crate::generate_x509_keypair(&mut rng).unwrap();
        let other = crate::generate_x509_keypair(&mut rng).unwrap();
        let sig = sign_proof(&k.private_pkcs8_pem, b"hello").unwrap();
        assert!(verify_proof(&k.public_spki_der, b"hello", &sig).is_ok());
        assert!(verify_proof(&k.public_spki_der, b"hellO", &sig).is_err());
        assert!(verify_proof(&other.public_spki_der, b"hello", &sig).is_err());
        assert!(verify_proof(&k.public_spki_der, b"hello", b"junk").is_err());
        assert!(verify_proof(b"junk", b"hello", &sig).is_err());
        assert!(check_proof_key(&k.public_spki_der).is_ok());
        assert!(check_proof_key(b"junk").is_err());
        assert_eq!(
            proof_public_key(&k.private_pkcs8_pem).unwrap(),
            k.public_spki_der
        );
    }
}
