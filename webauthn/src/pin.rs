//! The PIN/UV auth protocols one and two of CTAP 2.1 (§6.5.6 and §6.5.7), sans IO: the P-256
//! key agreement between a client and a security key, the shared secret each protocol derives
//! from it, the encryption that carries a PIN hash and a token between them, and the MAC
//! (`authenticate`) that proves a command was approved with the token. Both sides are here (a
//! security key's side is what the test authenticator uses). This module owns the PIN's own
//! rules too: its length, its hash, its padded form. Secrets (PIN, shared secrets, tokens) are
//! zeroed when dropped and never printed.
//!
//! The CBOR of the `authenticatorClientPIN` commands that carry these values is in
//! [`crate::client_pin`].

use aes::Aes256;
use cbc::cipher::block_padding::NoPadding;
use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use ciborium::value::Value;
use hmac::{Hmac, KeyInit, Mac};
use p256::elliptic_curve::sec1::ToSec1Point;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::cbor;

/// Why a PIN, a key agreement key or a ciphertext was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinError {
    #[error("a PIN has at least 4 characters")]
    TooShort,
    #[error("a PIN has at most 63 bytes (this one has {0})")]
    TooLong(usize),
    #[error("the security key's key agreement key: {0}")]
    KeyAgreement(String),
    #[error("the security key's encrypted answer: {0}")]
    Ciphertext(&'static str),
}

/// The PIN/UV auth protocol version in use (`pinUvAuthProtocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinProtocol {
    One,
    Two,
}

/// The permissions a token is asked for (`getPinUvAuthTokenUsingPinWithPermissions`).
pub mod permission {
    pub const MAKE_CREDENTIAL: u8 = 0x01;
    pub const GET_ASSERTION: u8 = 0x02;
}

/// A user's PIN, checked for the lengths CTAP allows; zeroed when dropped.
pub struct Pin(Zeroizing<String>);

impl std::fmt::Debug for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pin(..)")
    }
}

impl Pin {
    /// At least 4 Unicode code points, at most 63 bytes of UTF-8 (the PIN is taken as typed:
    /// CTAP does not ask the client to normalise it).
    pub fn new(pin: Zeroizing<String>) -> Result<Self, PinError> {
        if pin.chars().count() < 4 {
            return Err(PinError::TooShort);
        }
        if pin.len() > 63 {
            return Err(PinError::TooLong(pin.len()));
        }
        Ok(Self(pin))
    }

    /// `LEFT(SHA-256(pin), 16)`, what `pinHashEnc` encrypts.
    #[must_use]
    pub fn hash16(&self) -> Zeroizing<[u8; 16]> {
        let full = Sha256::digest(self.0.as_bytes());
        let mut out = Zeroizing::new([0u8; 16]);
        out.copy_from_slice(&full[..16]);
        out
    }

    /// The PIN padded with zero bytes to 64 (what `setPIN` and `changePIN` encrypt as
    /// `newPinEnc`).
    #[must_use]
    pub fn padded(&self) -> Zeroizing<[u8; 64]> {
        let mut out = Zeroizing::new([0u8; 64]);
        out[..self.0.len()].copy_from_slice(self.0.as_bytes());
        out
    }
}

/// The secret both sides derive from the key agreement: an HMAC key and an AES key (one
/// 32-byte value for both in protocol one).
pub struct SharedSecret {
    hmac_key: Zeroizing<[u8; 32]>,
    aes_key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedSecret(..)")
    }
}

impl SharedSecret {
    /// The key `authenticate` uses with this secret.
    #[must_use]
    pub fn hmac_key(&self) -> &[u8] {
        &self.hmac_key[..]
    }
}

/// A public key agreement key (`COSE_Key` of kty EC2, crv P-256, alg -25).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgreementKey(p256::PublicKey);

/// A private key agreement key: the client's, made for one exchange, or a key's.
pub struct EphemeralKey(p256::SecretKey);

impl std::fmt::Debug for EphemeralKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EphemeralKey(..)")
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    aws_lc_rs::rand::fill(&mut out).expect("the system's random source");
    out
}

impl EphemeralKey {
    /// A new random key.
    #[must_use]
    pub fn generate() -> Self {
        loop {
            let bytes = Zeroizing::new(random::<32>());
            if let Ok(k) = Self::from_bytes(&bytes) {
                return k;
            }
        }
    }

    /// The key whose scalar is `bytes` (big-endian; zero or beyond the group order is refused).
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, PinError> {
        p256::SecretKey::from_slice(bytes)
            .map(Self)
            .map_err(|_| PinError::KeyAgreement("not a P-256 scalar".into()))
    }

    #[must_use]
    pub fn public(&self) -> AgreementKey {
        AgreementKey(self.0.public_key())
    }

    /// ECDH with `peer`, and `protocol`'s derivation of the shared secret from its x coordinate.
    #[must_use]
    pub fn agree(&self, protocol: PinProtocol, peer: &AgreementKey) -> SharedSecret {
        let z = self.0.diffie_hellman(&peer.0);
        let mut x = Zeroizing::new([0u8; 32]);
        x.copy_from_slice(z.raw_secret_bytes());
        protocol.kdf(&x)
    }
}

const EC2: i64 = 2;
const P256: i64 = 1;
const ECDH_ES_HKDF_256: i64 = -25;

fn coord(entries: &[(Value, Value)], key: i64, name: &str) -> Result<[u8; 32], PinError> {
    let v = cbor::by_int(entries, key)
        .map_err(PinError::KeyAgreement)?
        .ok_or_else(|| PinError::KeyAgreement(format!("{name} is missing")))?;
    let b = cbor::as_bytes(v, name).map_err(PinError::KeyAgreement)?;
    b.try_into()
        .map_err(|_| PinError::KeyAgreement(format!("{name} has {} bytes, not 32", b.len())))
}

fn int_entry(entries: &[(Value, Value)], key: i64, name: &str) -> Result<Option<i64>, PinError> {
    cbor::by_int(entries, key)
        .map_err(PinError::KeyAgreement)?
        .map(|v| cbor::as_int(v, name).map_err(PinError::KeyAgreement))
        .transpose()
}

impl AgreementKey {
    /// Reads a `COSE_Key` as `getKeyAgreement` returns it; a point off the curve is refused.
    pub fn from_cose(v: &Value) -> Result<Self, PinError> {
        let entries = cbor::map(v).map_err(PinError::KeyAgreement)?;
        if int_entry(entries, 1, "kty")? != Some(EC2) {
            return Err(PinError::KeyAgreement("not an EC2 key".into()));
        }
        if int_entry(entries, -1, "crv")? != Some(P256) {
            return Err(PinError::KeyAgreement("not on P-256".into()));
        }
        // The algorithm is -25 (ECDH-ES + HKDF-256); some 2.0 keys leave it out.
        if let Some(alg) = int_entry(entries, 3, "alg")?
            && alg != ECDH_ES_HKDF_256
        {
            return Err(PinError::KeyAgreement(format!("algorithm {alg}, not -25")));
        }
        let mut sec1 = [0u8; 65];
        sec1[0] = 0x04;
        sec1[1..33].copy_from_slice(&coord(entries, -2, "x")?);
        sec1[33..].copy_from_slice(&coord(entries, -3, "y")?);
        p256::PublicKey::from_sec1_bytes(&sec1)
            .map(Self)
            .map_err(|_| PinError::KeyAgreement("the point is not on P-256".into()))
    }

    /// The `COSE_Key` a client sends as its `keyAgreement`.
    #[must_use]
    pub fn to_cose(&self) -> Value {
        let point = self.0.as_affine().to_sec1_point(false);
        let bytes = point.as_bytes();
        let int = |i: i64| Value::Integer(i.into());
        Value::Map(vec![
            (int(1), int(EC2)),
            (int(3), int(ECDH_ES_HKDF_256)),
            (int(-1), int(P256)),
            (int(-2), Value::Bytes(bytes[1..33].to_vec())),
            (int(-3), Value::Bytes(bytes[33..65].to_vec())),
        ])
    }
}

type HmacSha256 = Hmac<Sha256>;

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

fn cbc_encrypt(key: &[u8; 32], iv: &[u8; 16], plaintext: &[u8]) -> Result<Vec<u8>, PinError> {
    let mut buf = plaintext.to_vec();
    cbc::Encryptor::<Aes256>::new(key.into(), iv.into())
        .encrypt_padded::<NoPadding>(&mut buf, plaintext.len())
        .map_err(|_| PinError::Ciphertext("not a whole number of AES blocks"))?;
    Ok(buf)
}

fn cbc_decrypt(
    key: &[u8; 32],
    iv: &[u8; 16],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, PinError> {
    if ciphertext.is_empty() || !ciphertext.len().is_multiple_of(16) {
        return Err(PinError::Ciphertext("not a whole number of AES blocks"));
    }
    let mut buf = Zeroizing::new(ciphertext.to_vec());
    cbc::Decryptor::<Aes256>::new(key.into(), iv.into())
        .decrypt_padded::<NoPadding>(&mut buf)
        .map_err(|_| PinError::Ciphertext("not a whole number of AES blocks"))?;
    Ok(buf)
}

impl PinProtocol {
    /// The protocol numbered `id` in CTAP, if Hop speaks it.
    #[must_use]
    pub fn from_id(id: u64) -> Option<Self> {
        match id {
            1 => Some(Self::One),
            2 => Some(Self::Two),
            _ => None,
        }
    }

    #[must_use]
    pub fn id(self) -> u8 {
        match self {
            Self::One => 1,
            Self::Two => 2,
        }
    }

    /// The shared secret from the ECDH x coordinate `z`: SHA-256(z) in protocol one; in
    /// protocol two, HKDF-SHA-256 with 32 zero bytes of salt, once for the HMAC key
    /// ("CTAP2 HMAC key") and once for the AES key ("CTAP2 AES key").
    #[must_use]
    pub fn kdf(self, z: &[u8; 32]) -> SharedSecret {
        match self {
            Self::One => {
                let k: [u8; 32] = Sha256::digest(z).into();
                SharedSecret {
                    hmac_key: Zeroizing::new(k),
                    aes_key: Zeroizing::new(k),
                }
            }
            Self::Two => {
                let hk = hkdf::Hkdf::<Sha256>::new(Some(&[0u8; 32]), z);
                let mut hmac_key = Zeroizing::new([0u8; 32]);
                let mut aes_key = Zeroizing::new([0u8; 32]);
                hk.expand(b"CTAP2 HMAC key", &mut hmac_key[..])
                    .expect("32 bytes is a valid HKDF-SHA-256 length");
                hk.expand(b"CTAP2 AES key", &mut aes_key[..])
                    .expect("32 bytes is a valid HKDF-SHA-256 length");
                SharedSecret { hmac_key, aes_key }
            }
        }
    }

    /// Encrypts `plaintext` (whole AES blocks) under `secret`: AES-256-CBC with a zero IV in
    /// protocol one, a random IV sent ahead of the ciphertext in protocol two.
    pub fn encrypt(self, secret: &SharedSecret, plaintext: &[u8]) -> Result<Vec<u8>, PinError> {
        self.encrypt_with_iv(secret, &random::<16>(), plaintext)
    }

    /// [`Self::encrypt`] with the IV given (protocol one ignores it).
    pub fn encrypt_with_iv(
        self,
        secret: &SharedSecret,
        iv: &[u8; 16],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, PinError> {
        match self {
            Self::One => cbc_encrypt(&secret.aes_key, &[0; 16], plaintext),
            Self::Two => {
                let mut out = iv.to_vec();
                out.extend(cbc_encrypt(&secret.aes_key, iv, plaintext)?);
                Ok(out)
            }
        }
    }

    /// The inverse of [`Self::encrypt`].
    pub fn decrypt(
        self,
        secret: &SharedSecret,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, PinError> {
        match self {
            Self::One => cbc_decrypt(&secret.aes_key, &[0; 16], ciphertext),
            Self::Two => {
                let Some((iv, body)) = ciphertext.split_first_chunk::<16>() else {
                    return Err(PinError::Ciphertext("shorter than its IV"));
                };
                cbc_decrypt(&secret.aes_key, iv, body)
            }
        }
    }

    /// The MAC of `message` under `key` (a shared secret's HMAC key, or a token): the first 16
    /// bytes of HMAC-SHA-256 in protocol one, all 32 in protocol two.
    #[must_use]
    pub fn authenticate(self, key: &[u8], message: &[u8]) -> Vec<u8> {
        let mac = hmac_sha256(key, message);
        match self {
            Self::One => mac[..16].to_vec(),
            Self::Two => mac.to_vec(),
        }
    }

    /// Whether `signature` is [`Self::authenticate`] of `message` under `key` (in constant
    /// time).
    #[must_use]
    pub fn verify(self, key: &[u8], message: &[u8], signature: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(self.authenticate(key, message).ct_eq(signature))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin(s: &str) -> Pin {
        Pin::new(Zeroizing::new(s.to_string())).unwrap()
    }

    #[test]
    fn pins_have_the_lengths_ctap_allows() {
        let p = |s: &str| Pin::new(Zeroizing::new(s.to_string()));
        assert_eq!(p("123").unwrap_err(), PinError::TooShort);
        assert!(p("1234").is_ok());
        // Four code points of several bytes each are four characters.
        assert!(p("ééé").is_err());
        assert!(p("éééé").is_ok());
        assert!(p(&"x".repeat(63)).is_ok());
        assert_eq!(p(&"x".repeat(64)).unwrap_err(), PinError::TooLong(64));
        assert_eq!(format!("{:?}", pin("1234")), "Pin(..)");
        let padded = pin("1234").padded();
        assert_eq!(&padded[..4], b"1234");
        assert!(padded[4..].iter().all(|b| *b == 0));
        let full = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b"1234");
        assert_eq!(&pin("1234").hash16()[..], &full.as_ref()[..16]);
    }

    /// The ECDH of two fixed scalars, agreed on by both sides, against aws-lc-rs's own
    /// computation of the same x coordinate (an independent implementation).
    #[test]
    fn both_sides_agree_and_match_an_independent_ecdh() {
        let a = EphemeralKey::from_bytes(&[0x11; 32]).unwrap();
        let b = EphemeralKey::from_bytes(&[0x22; 32]).unwrap();
        let cose = a.public().to_cose();
        let a_pub = AgreementKey::from_cose(&cose).unwrap();
        assert_eq!(a_pub, a.public());

        let aws_b = aws_lc_rs::agreement::PrivateKey::from_private_key(
            &aws_lc_rs::agreement::ECDH_P256,
            &[0x22; 32],
        )
        .unwrap();
        let sec1 = a.public().0.as_affine().to_sec1_point(false);
        let peer = aws_lc_rs::agreement::UnparsedPublicKey::new(
            &aws_lc_rs::agreement::ECDH_P256,
            sec1.as_bytes(),
        );
        let z: [u8; 32] =
            aws_lc_rs::agreement::agree(&aws_b, peer, (), |z| Ok(z.try_into().unwrap())).unwrap();

        // Protocol one: SHA-256(z) for both keys.
        let s1 = a.agree(PinProtocol::One, &b.public());
        let want = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &z);
        assert_eq!(s1.hmac_key(), want.as_ref());
        assert_eq!(&s1.aes_key[..], want.as_ref());
        assert_eq!(
            b.agree(PinProtocol::One, &a.public()).hmac_key(),
            want.as_ref()
        );

        // Protocol two: HKDF-SHA-256 (salt 32 zero bytes) with the two labels, computed with
        // aws-lc-rs's HKDF.
        let s2 = b.agree(PinProtocol::Two, &a.public());
        let hkdf = |info: &[u8]| {
            let salt = aws_lc_rs::hkdf::Salt::new(aws_lc_rs::hkdf::HKDF_SHA256, &[0; 32]);
            let prk = salt.extract(&z);
            let info = [info];
            let okm = prk.expand(&info, aws_lc_rs::hkdf::HKDF_SHA256).unwrap();
            let mut out = [0u8; 32];
            okm.fill(&mut out).unwrap();
            out
        };
        assert_eq!(s2.hmac_key(), hkdf(b"CTAP2 HMAC key"));
        assert_eq!(&s2.aes_key[..], hkdf(b"CTAP2 AES key"));
        assert_ne!(s2.hmac_key(), &s2.aes_key[..]);
    }

    #[test]
    fn encryption_matches_an_independent_aes_cbc() {
        let secret = PinProtocol::Two.kdf(&[7; 32]);
        let plaintext = [0x5a; 32];
        let iv = [9u8; 16];
        let v2 = PinProtocol::Two
            .encrypt_with_iv(&secret, &iv, &plaintext)
            .unwrap();
        assert_eq!(v2.len(), 48);
        assert_eq!(&v2[..16], &iv);
        // The same with aws-lc-rs: CBC over whole blocks is PKCS#7 CBC minus its last block.
        let key = aws_lc_rs::cipher::UnboundCipherKey::new(
            &aws_lc_rs::cipher::AES_256,
            &secret.aes_key[..],
        )
        .unwrap();
        let enc = aws_lc_rs::cipher::PaddedBlockEncryptingKey::cbc_pkcs7(key).unwrap();
        let mut buf = plaintext.to_vec();
        enc.less_safe_encrypt(
            &mut buf,
            aws_lc_rs::cipher::EncryptionContext::Iv128(iv.into()),
        )
        .unwrap();
        assert_eq!(&v2[16..], &buf[..32]);
        assert_eq!(
            &PinProtocol::Two.decrypt(&secret, &v2).unwrap()[..],
            &plaintext
        );

        let secret1 = PinProtocol::One.kdf(&[7; 32]);
        let v1 = PinProtocol::One.encrypt(&secret1, &plaintext).unwrap();
        assert_eq!(v1.len(), 32);
        assert_eq!(
            &PinProtocol::One.decrypt(&secret1, &v1).unwrap()[..],
            &plaintext
        );
        // A random IV each time in protocol two; none in protocol one.
        assert_ne!(
            PinProtocol::Two.encrypt(&secret, &plaintext).unwrap(),
            PinProtocol::Two.encrypt(&secret, &plaintext).unwrap()
        );
        assert_eq!(v1, PinProtocol::One.encrypt(&secret1, &plaintext).unwrap());
    }

    #[test]
    fn broken_ciphertexts_are_refused() {
        let s = PinProtocol::Two.kdf(&[1; 32]);
        for n in 0..=48 {
            let got = PinProtocol::Two.decrypt(&s, &vec![0; n]);
            assert_eq!(got.is_ok(), n == 32 || n == 48, "{n}");
            let got = PinProtocol::One.decrypt(&s, &vec![0; n]);
            assert_eq!(got.is_ok(), n > 0 && n % 16 == 0, "{n}");
        }
        assert!(PinProtocol::One.encrypt(&s, &[0; 15]).is_err());
    }

    #[test]
    fn authenticate_is_hmac_sha256_cut_for_protocol_one() {
        let key = [3u8; 32];
        let mac = aws_lc_rs::hmac::sign(
            &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &key),
            b"client data hash",
        );
        let v1 = PinProtocol::One.authenticate(&key, b"client data hash");
        let v2 = PinProtocol::Two.authenticate(&key, b"client data hash");
        assert_eq!(v1, &mac.as_ref()[..16]);
        assert_eq!(v2, mac.as_ref());
        assert!(PinProtocol::Two.verify(&key, b"client data hash", &v2));
        assert!(!PinProtocol::Two.verify(&key, b"client data hash", &v1));
        assert!(!PinProtocol::One.verify(&key, b"other", &v1));
        assert_eq!(PinProtocol::from_id(2), Some(PinProtocol::Two));
        assert_eq!(PinProtocol::from_id(3), None);
    }

    #[test]
    fn key_agreement_keys_are_checked() {
        let good = EphemeralKey::from_bytes(&[0x33; 32])
            .unwrap()
            .public()
            .to_cose();
        let Value::Map(entries) = &good else { panic!() };
        let without = |k: i64| {
            Value::Map(
                entries
                    .iter()
                    .filter(|(key, _)| *key != Value::Integer(k.into()))
                    .cloned()
                    .collect(),
            )
        };
        let with = |k: i64, v: Value| {
            let mut e = entries.clone();
            for (key, val) in &mut e {
                if *key == Value::Integer(k.into()) {
                    *val = v.clone();
                }
            }
            Value::Map(e)
        };
        assert!(AgreementKey::from_cose(&without(3)).is_ok());
        for k in [1, -1, -2, -3] {
            assert!(AgreementKey::from_cose(&without(k)).is_err(), "{k}");
        }
        let int = |i: i64| Value::Integer(i.into());
        assert!(AgreementKey::from_cose(&with(1, int(1))).is_err());
        assert!(AgreementKey::from_cose(&with(3, int(-7))).is_err());
        assert!(AgreementKey::from_cose(&with(-1, int(2))).is_err());
        assert!(AgreementKey::from_cose(&with(-2, Value::Bytes(vec![1; 31]))).is_err());
        assert!(AgreementKey::from_cose(&with(-3, Value::Bytes(vec![1; 32]))).is_err());
        assert!(AgreementKey::from_cose(&with(-3, Value::Text("y".into()))).is_err());
        assert!(AgreementKey::from_cose(&Value::Bytes(vec![])).is_err());
        let mut twice = entries.clone();
        twice.push((int(-2), Value::Bytes(vec![0; 32])));
        assert!(AgreementKey::from_cose(&Value::Map(twice)).is_err());
        assert!(EphemeralKey::from_bytes(&[0; 32]).is_err());
        assert!(EphemeralKey::from_bytes(&[0xff; 32]).is_err());
    }
}
