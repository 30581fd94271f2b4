//! Time-based one-time passwords (RFC 6238: HMAC-SHA1, 30 s steps, 6 digits), the second factor
//! of local users.
//!
//! This module owns code generation, verification with a ±1 step window and replay refusal, and
//! the `otpauth://` URI authenticator apps scan. It takes `now` as an argument and never reads the
//! clock; secrets are compared in constant time.

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

pub const STEP_SECONDS: u64 = 30;
pub const DIGITS: u32 = 6;
/// Secrets shorter than this (in bytes) are refused: RFC 4226 asks for at least 128 bits.
pub const MIN_SECRET_BYTES: usize = 16;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TotpError {
    #[error("the TOTP secret is not valid base32")]
    NotBase32,
    #[error(
        "the TOTP secret is too short: {bytes} bytes, at least {MIN_SECRET_BYTES} are required"
    )]
    TooShort { bytes: usize },
}

/// Decodes a base32 secret as authenticator apps show it (case and padding insensitive, spaces ignored).
pub fn decode_secret(b32: &str) -> Result<Vec<u8>, TotpError> {
    let cleaned: String = b32
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '=')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let bytes = data_encoding::BASE32_NOPAD
        .decode(cleaned.as_bytes())
        .map_err(|_| TotpError::NotBase32)?;
    if bytes.len() < MIN_SECRET_BYTES {
        return Err(TotpError::TooShort { bytes: bytes.len() });
    }
    Ok(bytes)
}

pub fn encode_secret(bytes: &[u8]) -> String {
    data_encoding::BASE32_NOPAD.encode(bytes)
}

/// The time step a moment falls in.
pub fn step_at(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        / STEP_SECONDS
}

/// The code for one time step (RFC 4226 dynamic truncation).
pub fn code_for_step(secret: &[u8], step: u64) -> String {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let Ok(mut mac) = <Hmac<Sha1> as KeyInit>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(&step.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = usize::from(digest[digest.len() - 1] & 0x0f);
    let bin = (u32::from(digest[offset] & 0x7f) << 24)
        | (u32::from(digest[offset + 1]) << 16)
        | (u32::from(digest[offset + 2]) << 8)
        | u32::from(digest[offset + 3]);
    format!(
        "{:0width$}",
        bin % 10u32.pow(DIGITS),
        width = DIGITS as usize
    )
}

/// The current code.
pub fn code_at(secret: &[u8], now: SystemTime) -> String {
    code_for_step(secret, step_at(now))
}

/// Checks `code` against the steps around `now`. Returns the matching step, refusing steps at or
/// before `last_used_step` (a code is good once). Every candidate is compared, in constant time.
pub fn verify(
    secret: &[u8],
    code: &str,
    now: SystemTime,
    last_used_step: Option<u64>,
) -> Option<u64> {
    let code = code.trim();
    let current = step_at(now);
    let mut found = None;
    for step in [current.saturating_sub(1), current, current + 1] {
        let expected = code_for_step(secret, step);
        let matches: bool = expected.as_bytes().ct_eq(code.as_bytes()).into();
        let fresh = last_used_step.is_none_or(|last| step > last);
        if matches && fresh && found.is_none() {
            found = Some(step);
        }
    }
    found
}

/// The URI an authenticator app scans (Google Authenticator key URI format).
pub fn otpauth_uri(secret_b32: &str, account: &str, issuer: &str) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'@' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
        enc(issuer),
        enc(account),
        secret_b32,
        enc(issuer)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn rfc6238_sha1_vectors() {
        // RFC 6238 appendix B, SHA1 seed "12345678901234567890", last 6 digits of the 8-digit values.
        let secret = b"12345678901234567890";
        assert_eq!(code_at(secret, at(59)), "287082");
        assert_eq!(code_at(secret, at(1_111_111_109)), "081804");
        assert_eq!(code_at(secret, at(1_234_567_890)), "005924");
        assert_eq!(code_at(secret, at(2_000_000_000)), "279037");
    }

    #[test]
    fn window_and_replay() {
        let secret = b"12345678901234567890";
        let now = at(1_234_567_890);
        let code = code_at(secret, now);
        let step = verify(secret, &code, now, None).unwrap();
        assert_eq!(
            verify(secret, &code, now, Some(step)),
            None,
            "replay accepted"
        );
        let next = code_at(secret, now + Duration::from_secs(30));
        assert_eq!(verify(secret, &next, now, Some(step)), Some(step + 1));
        assert_eq!(verify(secret, "000000", now, None), None);
        assert_eq!(verify(secret, "", now, None), None);
        let old = code_at(secret, now - Duration::from_secs(90));
        assert_eq!(verify(secret, &old, now, None), None);
    }

    #[test]
    fn secrets() {
        let s = encode_secret(&[7u8; 20]);
        assert_eq!(decode_secret(&s.to_lowercase()).unwrap(), vec![7u8; 20]);
        assert_eq!(decode_secret("!!!"), Err(TotpError::NotBase32));
        assert_eq!(
            decode_secret("AAAA"),
            Err(TotpError::NotBase32).or(Err(TotpError::TooShort { bytes: 2 }))
        );
        let uri = otpauth_uri(&s, "alice@example.com", "Hop example");
        assert!(uri.starts_with("otpauth://totp/Hop%20example:alice@example.com?secret="));
    }
}
