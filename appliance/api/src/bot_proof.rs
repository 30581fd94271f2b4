//! What a bot and Auth must agree on byte for byte: the fingerprint of the keys a bot asks to
//! have certified, and the message a bot signs with its bound key to recover after its
//! certificates expired. Building bytes only: signing and verifying are `hop-ca`'s, deciding is
//! Auth's.

use sha2::Digest;

/// The domain of a recovery proof, so that a signature made for anything else never verifies.
const RECOVERY_DOMAIN: &[u8] = b"hop-bot-recovery-v1";

/// hex(sha256) over the SSH public key (trimmed) and the TLS public key (DER), each
/// length-prefixed.
#[must_use]
pub fn key_fingerprint(ssh_public_key: &str, tls_public_key_der: &[u8]) -> String {
    let mut h = sha2::Sha256::new();
    for part in [ssh_public_key.trim().as_bytes(), tls_public_key_der] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    hex_lower(&h.finalize())
}

/// The message bot `bot` signs at `timestamp_unix` to have `key_fingerprint`'s keys certified,
/// registering `next_bound_key` (DER SubjectPublicKeyInfo; empty: keep the current one).
#[must_use]
pub fn recovery_message(
    bot: &str,
    timestamp_unix: i64,
    key_fingerprint: &str,
    next_bound_key: &[u8],
) -> Vec<u8> {
    let mut m = Vec::new();
    for part in [
        RECOVERY_DOMAIN,
        bot.as_bytes(),
        timestamp_unix.to_string().as_bytes(),
        key_fingerprint.as_bytes(),
        next_bound_key,
    ] {
        m.extend_from_slice(&(part.len() as u64).to_be_bytes());
        m.extend_from_slice(part);
    }
    m
}

fn hex_lower(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cannot_slide_into_each_other() {
        assert_ne!(key_fingerprint("a", b"bc"), key_fingerprint("ab", b"c"));
        assert_eq!(key_fingerprint("a ", b"x"), key_fingerprint("a", b"x"));
        assert_ne!(
            recovery_message("ab", 1, "c", b""),
            recovery_message("a", 1, "bc", b"")
        );
        assert_ne!(
            recovery_message("a", 1, "f", b""),
            recovery_message("a", 2, "f", b"")
        );
        assert_eq!(key_fingerprint("k", b"t").len(), 64);
    }
}
