//! One direction's TLS 1.3 record key, taken from rustls once the handshake is over, for the
//! fast path's in-place re-protection.
//!
//! This module owns turning rustls' extracted traffic secrets into an AEAD (aws-lc-rs), the
//! per-record nonce of RFC 8446 §5.3 (the IV XOR the sequence number), and the key's usage
//! limit: a key that has sealed as many records as RFC 8446 §5.5 allows for its cipher refuses to
//! seal more, which ends the session (the fast path cannot send a key update; see
//! `docs/ARCHITECTURE.md`).

use aws_lc_rs::aead::{
    AES_128_GCM, AES_256_GCM, Aad, Algorithm, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce,
    UnboundKey,
};
use hop_protocols::tls_record::{HEADER_LEN, ProtectionError, RecordProtection};
use rustls::ConnectionTrafficSecrets;

/// Records one AES-GCM key may seal: RFC 8446 §5.5 allows 2^24.5 full-size records; this stays
/// under it with a round number (about 256 GiB of 16 KiB records).
const AES_GCM_RECORD_LIMIT: u64 = 1 << 24;
/// ChaCha20-Poly1305 has no practical limit below the sequence number space.
const CHACHA_RECORD_LIMIT: u64 = u64::MAX - 1;
/// Every TLS 1.3 AEAD appends a 16-byte tag.
const TAG_LEN: usize = 16;

/// The traffic secrets use a cipher the fast path does not implement.
#[derive(Debug, thiserror::Error)]
#[error("the negotiated cipher is not one the relay's fast path implements")]
pub struct UnsupportedCipher;

/// One direction of one connection: its AEAD key, IV and next sequence number.
pub struct RecordKey {
    key: LessSafeKey,
    iv: [u8; NONCE_LEN],
    seq: u64,
    limit: u64,
}

impl std::fmt::Debug for RecordKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key or the IV.
        f.debug_struct("RecordKey")
            .field("algorithm", self.key.algorithm())
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl RecordKey {
    /// The key for `secrets`, whose next record has sequence number `seq`.
    pub fn new(seq: u64, secrets: &ConnectionTrafficSecrets) -> Result<Self, UnsupportedCipher> {
        let (alg, limit, key, iv): (&'static Algorithm, u64, _, _) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => {
                (&AES_128_GCM, AES_GCM_RECORD_LIMIT, key, iv)
            }
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => {
                (&AES_256_GCM, AES_GCM_RECORD_LIMIT, key, iv)
            }
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&CHACHA20_POLY1305, CHACHA_RECORD_LIMIT, key, iv)
            }
            _ => return Err(UnsupportedCipher),
        };
        let unbound = UnboundKey::new(alg, key.as_ref()).map_err(|_| UnsupportedCipher)?;
        let iv: [u8; NONCE_LEN] = iv.as_ref().try_into().map_err(|_| UnsupportedCipher)?;
        Ok(Self {
            key: LessSafeKey::new(unbound),
            iv,
            seq,
            limit,
        })
    }

    /// RFC 8446 §5.3: the sequence number, left-padded to the IV's length, XOR the IV.
    fn next_nonce(&mut self) -> Result<Nonce, ProtectionError> {
        if self.seq >= self.limit {
            return Err(ProtectionError::KeyExhausted);
        }
        let mut nonce = self.iv;
        for (n, s) in nonce[NONCE_LEN - 8..]
            .iter_mut()
            .zip(self.seq.to_be_bytes())
        {
            *n ^= s;
        }
        self.seq += 1;
        Ok(Nonce::assume_unique_for_key(nonce))
    }
}

impl RecordProtection for RecordKey {
    fn tag_len(&self) -> usize {
        TAG_LEN
    }

    fn open(
        &mut self,
        header: &[u8; HEADER_LEN],
        body: &mut [u8],
    ) -> Result<usize, ProtectionError> {
        let nonce = self.next_nonce()?;
        self.key
            .open_in_place(nonce, Aad::from(*header), body)
            .map(|plain| plain.len())
            .map_err(|_| ProtectionError::Decrypt)
    }

    fn seal(
        &mut self,
        header: &[u8; HEADER_LEN],
        body: &mut [u8],
        len: usize,
    ) -> Result<(), ProtectionError> {
        if body.len() < len + TAG_LEN {
            return Err(ProtectionError::NoRoomForTag);
        }
        let nonce = self.next_nonce()?;
        let (data, rest) = body.split_at_mut(len);
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(*header), data)
            .map_err(|_| ProtectionError::KeyExhausted)?;
        rest[..TAG_LEN].copy_from_slice(tag.as_ref());
        Ok(())
    }
}
