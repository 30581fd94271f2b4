//! COSE public keys (RFC 9052/9053) as authenticators send them in attested credential data, and
//! the signature checks Hop does with them: ES256 (P-256), EdDSA (Ed25519) and RS256.

use aws_lc_rs::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use ciborium::value::Value;

use crate::cbor::{as_bytes, as_int, by_int, map, whole_item};
use crate::error::WebauthnError;

/// A COSE signature algorithm Hop accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoseAlgorithm {
    /// ECDSA with SHA-256 on P-256 (-7).
    Es256,
    /// Ed25519 (-8).
    EdDsa,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (-257).
    Rs256,
}

impl CoseAlgorithm {
    /// The algorithm COSE number `alg` names, if Hop accepts it.
    pub fn from_cose(alg: i64) -> Option<Self> {
        match alg {
            -7 => Some(Self::Es256),
            -8 => Some(Self::EdDsa),
            -257 => Some(Self::Rs256),
            _ => None,
        }
    }
}

/// A credential's public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoseKey {
    /// An uncompressed P-256 point (`04 || x || y`).
    Es256 { point: Vec<u8> },
    /// An Ed25519 public key.
    EdDsa { x: Vec<u8> },
    /// An RSA modulus and exponent (big-endian).
    Rs256 { n: Vec<u8>, e: Vec<u8> },
}

fn key_err(m: impl Into<String>) -> WebauthnError {
    WebauthnError::PublicKey(m.into())
}

fn field<'a>(
    entries: &'a [(Value, Value)],
    label: i64,
    what: &str,
) -> Result<&'a Value, WebauthnError> {
    by_int(entries, label)
        .map_err(key_err)?
        .ok_or_else(|| key_err(format!("no {what} (label {label})")))
}

fn bytes_of<'a>(
    entries: &'a [(Value, Value)],
    label: i64,
    what: &str,
) -> Result<&'a [u8], WebauthnError> {
    as_bytes(field(entries, label, what)?, what).map_err(key_err)
}

impl CoseKey {
    /// Parses a COSE key from its CBOR encoding (all of `bytes`).
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, WebauthnError> {
        Self::from_value(&whole_item(bytes).map_err(key_err)?)
    }

    pub(crate) fn from_value(v: &Value) -> Result<Self, WebauthnError> {
        let entries = map(v).map_err(key_err)?;
        let kty = as_int(field(entries, 1, "key type")?, "key type").map_err(key_err)?;
        let alg = as_int(field(entries, 3, "algorithm")?, "algorithm").map_err(key_err)?;
        let alg = CoseAlgorithm::from_cose(alg).ok_or_else(|| {
            key_err(format!(
                "algorithm {alg} is not ES256 (-7), EdDSA (-8) or RS256 (-257)"
            ))
        })?;
        match (kty, alg) {
            (2, CoseAlgorithm::Es256) => {
                let crv = as_int(field(entries, -1, "curve")?, "curve").map_err(key_err)?;
                if crv != 1 {
                    return Err(key_err(format!("curve {crv} is not P-256 (1)")));
                }
                let (x, y) = (bytes_of(entries, -2, "x")?, bytes_of(entries, -3, "y")?);
                if x.len() != 32 || y.len() != 32 {
                    return Err(key_err("P-256 coordinates are not 32 bytes each"));
                }
                let mut point = Vec::with_capacity(65);
                point.push(4);
                point.extend_from_slice(x);
                point.extend_from_slice(y);
                Ok(Self::Es256 { point })
            }
            (1, CoseAlgorithm::EdDsa) => {
                let crv = as_int(field(entries, -1, "curve")?, "curve").map_err(key_err)?;
                if crv != 6 {
                    return Err(key_err(format!("curve {crv} is not Ed25519 (6)")));
                }
                let x = bytes_of(entries, -2, "x")?;
                if x.len() != 32 {
                    return Err(key_err("an Ed25519 key is not 32 bytes"));
                }
                Ok(Self::EdDsa { x: x.to_vec() })
            }
            (3, CoseAlgorithm::Rs256) => {
                let (n, e) = (
                    bytes_of(entries, -1, "modulus")?,
                    bytes_of(entries, -2, "exponent")?,
                );
                if !(256..=1024).contains(&n.len()) || e.is_empty() || e.len() > 8 {
                    return Err(key_err("an RSA key of 2048 to 8192 bits is required"));
                }
                Ok(Self::Rs256 {
                    n: n.to_vec(),
                    e: e.to_vec(),
                })
            }
            (kty, alg) => Err(key_err(format!("key type {kty} does not go with {alg:?}"))),
        }
    }

    /// The algorithm this key signs with.
    pub fn algorithm(&self) -> CoseAlgorithm {
        match self {
            Self::Es256 { .. } => CoseAlgorithm::Es256,
            Self::EdDsa { .. } => CoseAlgorithm::EdDsa,
            Self::Rs256 { .. } => CoseAlgorithm::Rs256,
        }
    }

    /// Checks `sig` over `message` (ES256 signatures are DER, as WebAuthn sends them).
    pub fn verify(&self, message: &[u8], sig: &[u8]) -> Result<(), WebauthnError> {
        let ok = match self {
            Self::Es256 { point } => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, point)
                    .verify(message, sig)
                    .is_ok()
            }
            Self::EdDsa { x } => UnparsedPublicKey::new(&signature::ED25519, x)
                .verify(message, sig)
                .is_ok(),
            Self::Rs256 { n, e } => RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, sig)
                .is_ok(),
        };
        if ok {
            Ok(())
        } else {
            Err(WebauthnError::BadSignature)
        }
    }
}
