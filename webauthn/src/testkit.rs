//! A software authenticator for tests only (the `testkit` feature; absent from release builds):
//! makes registrations and assertions as a CTAP2 authenticator and a browser would, with ES256
//! or Ed25519 keys, and lets a test spoil any field; [`SoftPin`] is a key's side of the PIN/UV
//! auth protocol.

mod pin;

pub use pin::{AAGUID, SoftPin, get_info};

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use base64::Engine;
use ciborium::value::Value;

/// Which key the authenticator makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Es256,
    Ed25519,
}

enum Key {
    Es256(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// One credential on a software authenticator.
pub struct SoftKey {
    key: Key,
    kind: KeyKind,
    pkcs8: Vec<u8>,
    pub credential_id: Vec<u8>,
    pub rp_id: String,
    pub origin: String,
    pub counter: u32,
    /// The flags byte the authenticator sets (user present and verified by default).
    pub flags: u8,
    /// Whether it keeps a signature counter (synced passkeys send 0 every time).
    pub counts: bool,
}

/// A browser's answer to `navigator.credentials.create`.
pub struct MadeRegistration {
    pub client_data_json: Vec<u8>,
    pub attestation_object: Vec<u8>,
}

/// A browser's answer to `navigator.credentials.get`.
pub struct MadeAssertion {
    pub credential_id: Vec<u8>,
    pub client_data_json: Vec<u8>,
    pub authenticator_data: Vec<u8>,
    pub signature: Vec<u8>,
}

fn cbor(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(v, &mut out).expect("CBOR to a Vec");
    out
}

fn int(i: i64) -> Value {
    Value::Integer(i.into())
}

/// `clientDataJSON` for `kind` with `challenge` from `origin`.
pub fn client_data(kind: &str, challenge: &[u8], origin: &str) -> Vec<u8> {
    let c = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(challenge);
    format!(r#"{{"type":"{kind}","challenge":"{c}","origin":"{origin}","crossOrigin":false}}"#)
        .into_bytes()
}

impl SoftKey {
    /// A new credential for `rp_id`, used from `origin`.
    pub fn new(kind: KeyKind, rp_id: &str, origin: &str) -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = match kind {
            KeyKind::Es256 => {
                EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
                    .expect("P-256 key")
                    .as_ref()
                    .to_vec()
            }
            KeyKind::Ed25519 => Ed25519KeyPair::generate_pkcs8(&rng)
                .expect("Ed25519 key")
                .as_ref()
                .to_vec(),
        };
        let mut credential_id = vec![0u8; 32];
        aws_lc_rs::rand::fill(&mut credential_id).expect("random id");
        Self::from_parts(kind, &pkcs8, credential_id, rp_id, origin).expect("a key just made")
    }

    /// A credential from its saved parts (a key file of a test authenticator): the PKCS#8 key
    /// [`Self::pkcs8`] gave. `None` when the key does not parse as `kind`.
    pub fn from_parts(
        kind: KeyKind,
        pkcs8: &[u8],
        credential_id: Vec<u8>,
        rp_id: &str,
        origin: &str,
    ) -> Option<Self> {
        let key = match kind {
            KeyKind::Es256 => Key::Es256(
                EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8).ok()?,
            ),
            KeyKind::Ed25519 => Key::Ed25519(Ed25519KeyPair::from_pkcs8(pkcs8).ok()?),
        };
        Some(Self {
            key,
            kind,
            pkcs8: pkcs8.to_vec(),
            credential_id,
            rp_id: rp_id.to_string(),
            origin: origin.to_string(),
            counter: 0,
            flags: 0x05,
            counts: true,
        })
    }

    /// The private key, PKCS#8 (for a test authenticator's key file).
    #[must_use]
    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    #[must_use]
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// `authenticatorMakeCredential` as a CTAP2 key answers it: the attestation object (format
    /// `none`) over `client_data_hash`, which the client computed.
    #[must_use]
    pub fn make_credential(&self, _client_data_hash: &[u8]) -> Vec<u8> {
        let object = Value::Map(vec![
            (Value::Text("fmt".into()), Value::Text("none".into())),
            (Value::Text("attStmt".into()), Value::Map(vec![])),
            (
                Value::Text("authData".into()),
                Value::Bytes(self.auth_data(true)),
            ),
        ]);
        cbor(&object)
    }

    /// `authenticatorGetAssertion` as a CTAP2 key answers it: authenticator data and the
    /// signature over it and `client_data_hash` (the counter moves on first).
    pub fn get_assertion(&mut self, client_data_hash: &[u8]) -> (Vec<u8>, Vec<u8>) {
        if self.counts {
            self.counter += 1;
        }
        let authenticator_data = self.auth_data(false);
        let mut signed = authenticator_data.clone();
        signed.extend_from_slice(client_data_hash);
        let signature = self.sign(&signed);
        (authenticator_data, signature)
    }

    /// The COSE encoding of the public key.
    pub fn cose_key(&self) -> Vec<u8> {
        let v = match &self.key {
            Key::Es256(k) => {
                let p = k.public_key().as_ref();
                Value::Map(vec![
                    (int(1), int(2)),
                    (int(3), int(-7)),
                    (int(-1), int(1)),
                    (int(-2), Value::Bytes(p[1..33].to_vec())),
                    (int(-3), Value::Bytes(p[33..65].to_vec())),
                ])
            }
            Key::Ed25519(k) => Value::Map(vec![
                (int(1), int(1)),
                (int(3), int(-8)),
                (int(-1), int(6)),
                (int(-2), Value::Bytes(k.public_key().as_ref().to_vec())),
            ]),
        };
        cbor(&v)
    }

    fn sign(&self, msg: &[u8]) -> Vec<u8> {
        match &self.key {
            Key::Es256(k) => k
                .sign(&SystemRandom::new(), msg)
                .expect("sign")
                .as_ref()
                .to_vec(),
            Key::Ed25519(k) => k.sign(msg).as_ref().to_vec(),
        }
    }

    /// Authenticator data with `flags`, the counter, and the attested credential when asked.
    pub fn auth_data(&self, attested: bool) -> Vec<u8> {
        let mut out = digest(&SHA256, self.rp_id.as_bytes()).as_ref().to_vec();
        out.push(self.flags | if attested { 0x40 } else { 0 });
        out.extend_from_slice(&self.counter.to_be_bytes());
        if attested {
            out.extend_from_slice(&AAGUID);
            out.extend_from_slice(&(self.credential_id.len() as u16).to_be_bytes());
            out.extend_from_slice(&self.credential_id);
            out.extend_from_slice(&self.cose_key());
        }
        out
    }

    /// A registration answering `challenge`, attestation `none` or packed self attestation.
    pub fn register(&self, challenge: &[u8], packed: bool) -> MadeRegistration {
        let client_data_json = client_data("webauthn.create", challenge, &self.origin);
        let auth_data = self.auth_data(true);
        let statement = if packed {
            let mut signed = auth_data.clone();
            signed.extend_from_slice(digest(&SHA256, &client_data_json).as_ref());
            let alg = match self.key {
                Key::Es256(_) => -7,
                Key::Ed25519(_) => -8,
            };
            Value::Map(vec![
                (Value::Text("alg".into()), int(alg)),
                (Value::Text("sig".into()), Value::Bytes(self.sign(&signed))),
            ])
        } else {
            Value::Map(vec![])
        };
        let object = Value::Map(vec![
            (
                Value::Text("fmt".into()),
                Value::Text(if packed { "packed" } else { "none" }.into()),
            ),
            (Value::Text("attStmt".into()), statement),
            (Value::Text("authData".into()), Value::Bytes(auth_data)),
        ]);
        MadeRegistration {
            client_data_json,
            attestation_object: cbor(&object),
        }
    }

    /// An assertion answering `challenge` (the counter moves on first).
    pub fn assert(&mut self, challenge: &[u8]) -> MadeAssertion {
        if self.counts {
            self.counter += 1;
        }
        let client_data_json = client_data("webauthn.get", challenge, &self.origin);
        let authenticator_data = self.auth_data(false);
        let mut signed = authenticator_data.clone();
        signed.extend_from_slice(digest(&SHA256, &client_data_json).as_ref());
        MadeAssertion {
            credential_id: self.credential_id.clone(),
            signature: self.sign(&signed),
            client_data_json,
            authenticator_data,
        }
    }
}
