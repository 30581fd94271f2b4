//! OpenID Connect ID tokens as an identity provider sends them: a compact JWS ([`parse_jws`]),
//! the provider's key set ([`parse_jwks`]), signature verification against one of its keys
//! ([`Jwks::verify`]) and the claim checks of OpenID Connect Core §3.1.3.7
//! ([`check_id_token`]).
//!
//! This module owns the bytes of the provider; it does no I/O and takes `now` as an argument.
//! Signatures are checked by aws-lc-rs (RS256/384/512, ES256/384); `none`, HMAC and any
//! header with `crit` are refused. It never logs a token: errors name what was wrong, never the
//! token's text.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature;
use data_encoding::BASE64URL_NOPAD;
use serde_json::{Map, Value};

/// The longest ID token accepted (bytes of its compact form).
pub const MAX_TOKEN_LEN: usize = 32 * 1024;
/// The longest key set accepted.
pub const MAX_JWKS_LEN: usize = 256 * 1024;
/// The most keys a key set may hold.
pub const MAX_JWKS_KEYS: usize = 64;
/// How far the provider's clock may be from ours.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);
/// The oldest `iat` a token may have at the moment it is checked (it was just issued).
pub const MAX_TOKEN_AGE: Duration = Duration::from_secs(10 * 60);

/// Why an ID token was refused. Each variant is the provider's (or an attacker's) fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdTokenError {
    #[error("the ID token is longer than {MAX_TOKEN_LEN} bytes")]
    TooLong,
    #[error("the ID token is malformed: {0}")]
    Malformed(&'static str),
    #[error("the ID token's algorithm {0:?} is not accepted (RS256, RS384, RS512, ES256, ES384)")]
    Algorithm(String),
    #[error("the ID token's header has critical extensions Hop does not understand")]
    Critical,
    #[error("no key of the provider's key set matches the ID token (kid {0:?})")]
    UnknownKey(String),
    #[error("the ID token's signature does not verify")]
    BadSignature,
    #[error("the ID token's issuer is not the connector's issuer_url")]
    Issuer,
    #[error("the ID token is not meant for this client (aud/azp)")]
    Audience,
    #[error("the ID token has expired")]
    Expired,
    #[error("the ID token was issued in the future or too long ago (iat)")]
    IssuedAt,
    #[error("the ID token's nonce does not match the login's")]
    Nonce,
    #[error("the user authenticated at the provider longer ago than max_age (auth_time)")]
    AuthTime,
    #[error("the ID token has no subject (sub)")]
    Subject,
}

/// Why a key set was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("the provider's key set is longer than {MAX_JWKS_LEN} bytes")]
    TooLong,
    #[error("the provider's key set is malformed: {0}")]
    Malformed(&'static str),
    #[error("the provider's key set holds more than {MAX_JWKS_KEYS} keys")]
    TooManyKeys,
}

/// A signature algorithm Hop accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Rs256,
    Rs384,
    Rs512,
    Es256,
    Es384,
}

impl Alg {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "RS256" => Self::Rs256,
            "RS384" => Self::Rs384,
            "RS512" => Self::Rs512,
            "ES256" => Self::Es256,
            "ES384" => Self::Es384,
            _ => return None,
        })
    }

    /// The JOSE name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Rs384 => "RS384",
            Self::Rs512 => "RS512",
            Self::Es256 => "ES256",
            Self::Es384 => "ES384",
        }
    }
}

/// A parsed compact JWS: what was signed, the header's algorithm and key id, the claims and
/// the signature. Nothing in it is trusted until [`Jwks::verify`] says so.
#[derive(Debug, Clone)]
pub struct Jws {
    signing_input: Vec<u8>,
    pub alg: Alg,
    pub kid: Option<String>,
    pub claims: Map<String, Value>,
    signature: Vec<u8>,
}

fn b64(part: &str, what: &'static str) -> Result<Vec<u8>, IdTokenError> {
    BASE64URL_NOPAD
        .decode(part.as_bytes())
        .map_err(|_| IdTokenError::Malformed(what))
}

fn json_object(bytes: &[u8], what: &'static str) -> Result<Map<String, Value>, IdTokenError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(IdTokenError::Malformed(what)),
    }
}

/// Parses a compact JWS (`header.payload.signature`, base64url without padding).
pub fn parse_jws(token: &str) -> Result<Jws, IdTokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(IdTokenError::TooLong);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(IdTokenError::Malformed("not three dot-separated parts"));
    };
    let header = json_object(
        &b64(h, "header is not base64url")?,
        "header is not a JSON object",
    )?;
    if header.contains_key("crit") {
        return Err(IdTokenError::Critical);
    }
    let alg = match header.get("alg") {
        Some(Value::String(a)) => {
            Alg::parse(a).ok_or_else(|| IdTokenError::Algorithm(a.clone()))?
        }
        _ => return Err(IdTokenError::Malformed("header has no alg")),
    };
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(IdTokenError::Malformed("kid is not a string")),
    };
    let claims = json_object(
        &b64(p, "payload is not base64url")?,
        "payload is not a JSON object",
    )?;
    let signature = b64(s, "signature is not base64url")?;
    if signature.is_empty() {
        return Err(IdTokenError::Malformed("empty signature"));
    }
    Ok(Jws {
        signing_input: token
            .get(..h.len() + 1 + p.len())
            .ok_or(IdTokenError::Malformed("signing input"))?
            .as_bytes()
            .to_vec(),
        alg,
        kid,
        claims,
        signature,
    })
}

/// One verification key of the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwk {
    pub kid: Option<String>,
    /// `alg` when the provider pins the key to one.
    pub alg: Option<String>,
    pub key: PublicKey,
}

/// The public key material of a [`Jwk`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// Modulus and exponent, big-endian.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// An uncompressed P-256 point (`04 || x || y`).
    P256(Vec<u8>),
    /// An uncompressed P-384 point.
    P384(Vec<u8>),
}

impl PublicKey {
    fn fits(&self, alg: Alg) -> bool {
        matches!(
            (self, alg),
            (Self::Rsa { .. }, Alg::Rs256 | Alg::Rs384 | Alg::Rs512)
                | (Self::P256(_), Alg::Es256)
                | (Self::P384(_), Alg::Es384)
        )
    }
}

/// A provider's key set (`jwks_uri`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

fn str_field<'a>(m: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    m.get(k).and_then(Value::as_str)
}

fn key_bytes(m: &Map<String, Value>, k: &str) -> Result<Vec<u8>, JwksError> {
    let s = str_field(m, k).ok_or(JwksError::Malformed("a key lacks a parameter"))?;
    let b = BASE64URL_NOPAD
        .decode(s.as_bytes())
        .map_err(|_| JwksError::Malformed("a key parameter is not base64url"))?;
    if b.is_empty() {
        return Err(JwksError::Malformed("a key parameter is empty"));
    }
    Ok(b)
}

fn ec_point(m: &Map<String, Value>, len: usize) -> Result<Vec<u8>, JwksError> {
    let (x, y) = (key_bytes(m, "x")?, key_bytes(m, "y")?);
    if x.len() != len || y.len() != len {
        return Err(JwksError::Malformed(
            "an EC key's coordinates have the wrong length",
        ));
    }
    let mut p = Vec::with_capacity(1 + 2 * len);
    p.push(4);
    p.extend_from_slice(&x);
    p.extend_from_slice(&y);
    Ok(p)
}

/// Parses a JWK Set. Keys of other types (`oct`, `OKP`), other curves, or marked for
/// encryption (`use: enc`) are skipped; a malformed RSA or EC key refuses the whole set.
pub fn parse_jwks(bytes: &[u8]) -> Result<Jwks, JwksError> {
    if bytes.len() > MAX_JWKS_LEN {
        return Err(JwksError::TooLong);
    }
    let Ok(Value::Object(top)) = serde_json::from_slice::<Value>(bytes) else {
        return Err(JwksError::Malformed("not a JSON object"));
    };
    let Some(Value::Array(items)) = top.get("keys") else {
        return Err(JwksError::Malformed("no keys array"));
    };
    if items.len() > MAX_JWKS_KEYS {
        return Err(JwksError::TooManyKeys);
    }
    let mut keys = Vec::new();
    for item in items {
        let Value::Object(m) = item else {
            return Err(JwksError::Malformed("a key is not a JSON object"));
        };
        if str_field(m, "use").is_some_and(|u| u != "sig") {
            continue;
        }
        let key = match (str_field(m, "kty"), str_field(m, "crv")) {
            (Some("RSA"), _) => {
                let (n, e) = (key_bytes(m, "n")?, key_bytes(m, "e")?);
                PublicKey::Rsa { n, e }
            }
            (Some("EC"), Some("P-256")) => PublicKey::P256(ec_point(m, 32)?),
            (Some("EC"), Some("P-384")) => PublicKey::P384(ec_point(m, 48)?),
            _ => continue,
        };
        keys.push(Jwk {
            kid: str_field(m, "kid").map(str::to_owned),
            alg: str_field(m, "alg").map(str::to_owned),
            key,
        });
    }
    Ok(Jwks { keys })
}

impl Jwks {
    /// Whether some key could verify `jws` (a key of its `kid`, or without a `kid` in the token
    /// any key of its algorithm's type). `false`: the key set may be stale (a rotation).
    #[must_use]
    pub fn has_key_for(&self, jws: &Jws) -> bool {
        self.candidates(jws).next().is_some()
    }

    fn candidates<'a>(&'a self, jws: &'a Jws) -> impl Iterator<Item = &'a Jwk> + 'a {
        self.keys.iter().filter(move |k| {
            k.key.fits(jws.alg)
                && k.alg.as_deref().is_none_or(|a| a == jws.alg.name())
                && match &jws.kid {
                    Some(kid) => k.kid.as_deref() == Some(kid.as_str()),
                    None => true,
                }
        })
    }

    /// Verifies the signature of `jws` with the matching key.
    pub fn verify(&self, jws: &Jws) -> Result<(), IdTokenError> {
        let mut any = false;
        for k in self.candidates(jws) {
            any = true;
            if verify_with(&k.key, jws).is_ok() {
                return Ok(());
            }
        }
        if any {
            Err(IdTokenError::BadSignature)
        } else {
            Err(IdTokenError::UnknownKey(
                jws.kid.clone().unwrap_or_default(),
            ))
        }
    }
}

fn verify_with(key: &PublicKey, jws: &Jws) -> Result<(), IdTokenError> {
    let msg = &jws.signing_input;
    let sig = &jws.signature;
    let ok = match key {
        PublicKey::Rsa { n, e } => {
            let params = match jws.alg {
                Alg::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                Alg::Rs384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                Alg::Rs512 => &signature::RSA_PKCS1_2048_8192_SHA512,
                _ => return Err(IdTokenError::BadSignature),
            };
            signature::RsaPublicKeyComponents {
                n: n.as_slice(),
                e: e.as_slice(),
            }
            .verify(params, msg, sig)
            .is_ok()
        }
        PublicKey::P256(point) => {
            signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point.as_slice())
                .verify(msg, sig)
                .is_ok()
        }
        PublicKey::P384(point) => {
            signature::UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, point.as_slice())
                .verify(msg, sig)
                .is_ok()
        }
    };
    if ok {
        Ok(())
    } else {
        Err(IdTokenError::BadSignature)
    }
}

/// What the login expects of its ID token.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub nonce: &'a str,
    /// The connector's `max_age`: `auth_time` must then be present and at most this long ago.
    pub max_age: Option<Duration>,
    pub now: SystemTime,
}

fn numeric_date(claims: &Map<String, Value>, k: &str) -> Result<Option<SystemTime>, IdTokenError> {
    match claims.get(k) {
        None => Ok(None),
        Some(v) => {
            let secs = v
                .as_u64()
                .or_else(|| {
                    v.as_f64()
                        .filter(|f| f.is_finite() && *f >= 0.0 && *f < 1e12)
                        .map(|f| f as u64)
                })
                .ok_or(IdTokenError::Malformed("a time claim is not a number"))?;
            Ok(Some(
                UNIX_EPOCH + Duration::from_secs(secs.min(253_402_300_799)),
            ))
        }
    }
}

/// Checks the claims of a token whose signature verified: issuer, audience (and `azp` when
/// there are several), expiry and issue time with [`CLOCK_SKEW`], nonce (constant time),
/// `auth_time` against `max_age`, and a subject. Returns `sub`.
pub fn check_id_token(
    claims: &Map<String, Value>,
    want: &Expected<'_>,
) -> Result<String, IdTokenError> {
    if str_field(claims, "iss") != Some(want.issuer) {
        return Err(IdTokenError::Issuer);
    }
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => return Err(IdTokenError::Audience),
    };
    if !audiences.contains(&want.client_id) {
        return Err(IdTokenError::Audience);
    }
    match claims.get("azp") {
        Some(Value::String(azp)) if azp == want.client_id => {}
        None if audiences.len() == 1 => {}
        _ => return Err(IdTokenError::Audience),
    }
    let exp = numeric_date(claims, "exp")?.ok_or(IdTokenError::Expired)?;
    if want.now >= exp + CLOCK_SKEW {
        return Err(IdTokenError::Expired);
    }
    let iat = numeric_date(claims, "iat")?.ok_or(IdTokenError::IssuedAt)?;
    if iat > want.now + CLOCK_SKEW || iat + MAX_TOKEN_AGE + CLOCK_SKEW < want.now {
        return Err(IdTokenError::IssuedAt);
    }
    let nonce = str_field(claims, "nonce").unwrap_or("");
    let same: bool = subtle::ConstantTimeEq::ct_eq(nonce.as_bytes(), want.nonce.as_bytes()).into();
    if !same || want.nonce.is_empty() {
        return Err(IdTokenError::Nonce);
    }
    if let Some(max_age) = want.max_age {
        let at = numeric_date(claims, "auth_time")?.ok_or(IdTokenError::AuthTime)?;
        if at + max_age + CLOCK_SKEW < want.now {
            return Err(IdTokenError::AuthTime);
        }
    }
    match str_field(claims, "sub") {
        Some(s) if !s.is_empty() => Ok(s.to_owned()),
        _ => Err(IdTokenError::Subject),
    }
}

/// The fuzz entry point: parses a token and a key set from one input (split at the first
/// newline) and checks that neither panics and that a parsed token verifies or is refused.
pub fn fuzz_parse(data: &[u8]) {
    let (a, b) = match data.iter().position(|c| *c == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let jwks = parse_jwks(b);
    if let Ok(token) = std::str::from_utf8(a)
        && let Ok(jws) = parse_jws(token)
    {
        assert!(!jws.signature.is_empty());
        if let Ok(set) = jwks {
            let _ = set.verify(&jws);
        }
        let want = Expected {
            issuer: "https://idp",
            client_id: "hop",
            nonce: "n",
            max_age: Some(Duration::from_secs(60)),
            now: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        };
        let _ = check_id_token(&jws.claims, &want);
    }
}

#[cfg(test)]
#[path = "jose_tests.rs"]
mod tests;
