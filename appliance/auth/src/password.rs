//! Password hashing (argon2id) and verification.
//!
//! This module owns how passwords are stored and checked. Verification of an unknown user runs
//! against a fixed dummy hash so that "no such user" and "wrong password" cost the same time.

use std::sync::LazyLock;

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

use hop_api::password::MAX_PASSWORD_BYTES;

/// A password could not be hashed (the rules a password must meet are `hop_api::password`'s).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PasswordError {
    #[error("could not hash the password: {0}")]
    Hash(String),
}

/// A PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`).
pub fn hash(password: &str) -> Result<String, PasswordError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// A hash of a random password nobody knows, computed once, used when the user does not exist.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    let mut secret = [0u8; 24];
    rand::fill(&mut secret[..]);
    hash(&data_encoding::HEXLOWER.encode(&secret)).unwrap_or_default()
});

/// Checks a password against a stored hash, or against the dummy when there is none: the same
/// work either way. Never true without a stored hash.
pub fn verify(password: &str, stored: Option<&str>) -> bool {
    let target = stored.unwrap_or(DUMMY_HASH.as_str());
    let ok = password.len() <= MAX_PASSWORD_BYTES
        && Argon2::default()
            .verify_password(password.as_bytes(), target)
            .is_ok();
    ok && stored.is_some()
}

/// Computes the dummy hash ahead of the first login, so the first unknown-user login is not slower.
pub fn warm_up() {
    LazyLock::force(&DUMMY_HASH);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let h = hash("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("correct horse battery", Some(&h)));
        assert!(!verify("wrong horse battery!", Some(&h)));
        assert!(!verify("correct horse battery", None));
        assert!(!verify("x", Some("not a phc string")));
    }
}
