//! The contract between `hop login --auth` and Auth for single sign-on: the one-time key the
//! client sends, the sealed result the browser carries back to the client's loopback listener,
//! and the rules for the client's redirect URL.
//!
//! Sealing is ChaCha20-Poly1305 (aws-lc-rs) under the client's 32-byte key with a random nonce,
//! the login's request id as associated data: a result cannot be read, altered, or passed off
//! as another login's. This module does no I/O and never logs a key or a result.

use aws_lc_rs::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use data_encoding::BASE64URL_NOPAD;

/// Bytes of the client's one-time key.
pub const SEAL_KEY_LEN: usize = 32;
/// The longest sealed result (base64url) accepted: certificates and CAs fit well within it.
pub const MAX_SEALED_LEN: usize = 64 * 1024;
/// The query parameter of the client's redirect URL that carries the sealed result.
pub const RESPONSE_PARAM: &str = "response";
/// The proxy's callback for OIDC providers.
pub const OIDC_CALLBACK_PATH: &str = "/v1/webapi/oidc/callback";
/// The proxy's callback for GitHub.
pub const GITHUB_CALLBACK_PATH: &str = "/v1/webapi/github/callback";
/// The proxy's SAML assertion consumer service (HTTP-POST binding); `/NAME` names the connector.
pub const SAML_ACS_PATH: &str = "/v1/webapi/saml/acs";

/// Why a sealed result was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the one-time key must be {SEAL_KEY_LEN} bytes")]
    KeyLength,
    #[error("the sealed result is longer than {MAX_SEALED_LEN} bytes")]
    TooLong,
    #[error("the sealed result is malformed")]
    Malformed,
    #[error("the sealed result does not open with this login's key (altered, or another login's)")]
    Open,
}

fn key(k: &[u8]) -> Result<LessSafeKey, SealError> {
    if k.len() != SEAL_KEY_LEN {
        return Err(SealError::KeyLength);
    }
    UnboundKey::new(&CHACHA20_POLY1305, k)
        .map(LessSafeKey::new)
        .map_err(|_| SealError::KeyLength)
}

fn aad(request_id: &str) -> Vec<u8> {
    let mut a = b"hop-sso-result-v1\0".to_vec();
    a.extend_from_slice(request_id.as_bytes());
    a
}

/// Seals `plaintext` for the login `request_id`: base64url(nonce || ciphertext || tag).
pub fn seal(seal_key: &[u8], request_id: &str, plaintext: &[u8]) -> Result<String, SealError> {
    let k = key(seal_key)?;
    let mut nonce = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| SealError::Malformed)?;
    let mut buf = plaintext.to_vec();
    k.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad(request_id)),
        &mut buf,
    )
    .map_err(|_| SealError::Malformed)?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&buf);
    let text = BASE64URL_NOPAD.encode(&out);
    if text.len() > MAX_SEALED_LEN {
        return Err(SealError::TooLong);
    }
    Ok(text)
}

/// Opens what [`seal`] made for `request_id` with `seal_key`.
pub fn unseal(seal_key: &[u8], request_id: &str, sealed: &str) -> Result<Vec<u8>, SealError> {
    if sealed.len() > MAX_SEALED_LEN {
        return Err(SealError::TooLong);
    }
    let k = key(seal_key)?;
    let raw = BASE64URL_NOPAD
        .decode(sealed.as_bytes())
        .map_err(|_| SealError::Malformed)?;
    let (nonce, body) = raw
        .split_at_checked(NONCE_LEN)
        .ok_or(SealError::Malformed)?;
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Malformed)?;
    let mut body = body.to_vec();
    let plain = k
        .open_in_place(nonce, Aad::from(aad(request_id)), &mut body)
        .map_err(|_| SealError::Open)?;
    Ok(plain.to_vec())
}

/// Why a client redirect URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedirectError {
    #[error(
        "the client redirect URL must be http://127.0.0.1:PORT/…, http://localhost:PORT/… or an https host the connector's client_redirect_settings allow"
    )]
    NotAllowed,
}

/// The host of an `https://` URL, or `None` (userinfo, or not https).
#[must_use]
pub fn https_host(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("https://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.contains('@') || authority.is_empty() {
        return None;
    }
    Some(authority.split(':').next().unwrap_or(authority))
}

/// Checks a client redirect URL: loopback over http with an explicit port, or an https host
/// `allow_https` accepts. No fragment; at most 2 KiB; no whitespace or control characters.
pub fn check_client_redirect(
    url: &str,
    allow_https: &dyn Fn(&str) -> bool,
) -> Result<(), RedirectError> {
    if url.len() > 2048
        || url.contains('#')
        || url.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(RedirectError::NotAllowed);
    }
    if hop_rbac::oidc::is_loopback_http(url) {
        return Ok(());
    }
    match https_host(url) {
        Some(h) if allow_https(h) => Ok(()),
        _ => Err(RedirectError::NotAllowed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_results_open_only_with_their_key_and_request() {
        let k = [7u8; 32];
        let s = seal(&k, "req-1", b"certs").unwrap();
        assert_eq!(unseal(&k, "req-1", &s).unwrap(), b"certs");
        assert_eq!(unseal(&[8u8; 32], "req-1", &s), Err(SealError::Open));
        assert_eq!(unseal(&k, "req-2", &s), Err(SealError::Open));
        let mut raw = BASE64URL_NOPAD.decode(s.as_bytes()).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        assert_eq!(
            unseal(&k, "req-1", &BASE64URL_NOPAD.encode(&raw)),
            Err(SealError::Open)
        );
        for i in 0..s.len() {
            assert!(unseal(&k, "req-1", &s[..i]).is_err());
        }
        assert_eq!(seal(&[1u8; 16], "r", b"x"), Err(SealError::KeyLength));
        assert_eq!(
            unseal(&k, "r", &"A".repeat(MAX_SEALED_LEN + 1)),
            Err(SealError::TooLong)
        );
    }

    #[test]
    fn client_redirects_are_loopback_or_allowed_https() {
        let none = |_: &str| false;
        let corp = |h: &str| h == "login.example.com";
        assert!(check_client_redirect("http://127.0.0.1:4000/callback", &none).is_ok());
        assert!(check_client_redirect("http://localhost:4000/callback", &none).is_ok());
        for bad in [
            "http://evil.example.com/cb",
            "http://127.0.0.1.evil.example.com/cb",
            "http://127.0.0.1@evil.example.com/cb",
            "https://evil.example.com/cb",
            "https://login.example.com@evil.example.com/cb",
            "http://127.0.0.1:4000/cb#frag",
            "javascript:alert(1)",
            "",
        ] {
            assert!(check_client_redirect(bad, &corp).is_err(), "{bad}");
        }
        assert!(check_client_redirect("https://login.example.com/cb", &corp).is_ok());
    }
}

/// `application/x-www-form-urlencoded` (and query string) encoding of one value: unreserved
/// characters as they are, everything else `%XX`.
#[must_use]
pub fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `k1=v1&k2=v2`, each key and value encoded.
#[must_use]
pub fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Decodes one `%XX`/`+` encoded query value; `None` when malformed or not UTF-8.
#[must_use]
pub fn form_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match c {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            _ => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The value of query parameter `name` in `query` (the part after `?`); `None` when absent,
/// repeated (a second value could smuggle a choice past a check) or malformed.
#[must_use]
pub fn query_param(query: &str, name: &str) -> Option<String> {
    let mut found = None;
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if form_decode(k).as_deref() == Some(name) {
            if found.is_some() {
                return None;
            }
            found = Some(form_decode(v)?);
        }
    }
    found
}

#[cfg(test)]
mod form_tests {
    use super::*;

    #[test]
    fn form_values_round_trip_and_repeats_are_refused() {
        let v = "a b&c=d/é%";
        let q = form(&[("state", v), ("code", "x")]);
        assert_eq!(query_param(&q, "state").as_deref(), Some(v));
        assert_eq!(query_param(&q, "code").as_deref(), Some("x"));
        assert_eq!(query_param("state=1&state=2", "state"), None);
        assert_eq!(query_param("state=%zz", "state"), None);
        assert_eq!(query_param("state=%4", "state"), None);
        assert_eq!(query_param("other=1", "state"), None);
        for i in 0..q.len() {
            let _ = query_param(&q[..i], "state");
        }
    }
}
