//! Authenticator data (WebAuthn §6.1): the RP ID hash, the flags, the signature counter, and on
//! registration the attested credential (AAGUID, credential id, COSE public key), then any
//! extensions. Every byte must be accounted for: trailing bytes are refused.

use crate::cbor::{map, take_item};
use crate::cose::CoseKey;
use crate::error::WebauthnError;

/// Credential ids longer than this are refused (WebAuthn: at most 1023 bytes).
const MAX_CREDENTIAL_ID: usize = 1023;

/// The flags byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flags(pub u8);

impl Flags {
    pub fn user_present(self) -> bool {
        self.0 & 0x01 != 0
    }
    pub fn user_verified(self) -> bool {
        self.0 & 0x04 != 0
    }
    /// The credential may be backed up (synced: a passkey).
    pub fn backup_eligible(self) -> bool {
        self.0 & 0x08 != 0
    }
    pub fn backed_up(self) -> bool {
        self.0 & 0x10 != 0
    }
    fn attested(self) -> bool {
        self.0 & 0x40 != 0
    }
    fn extensions(self) -> bool {
        self.0 & 0x80 != 0
    }
}

/// The credential a registration creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestedCredential {
    pub aaguid: [u8; 16],
    pub credential_id: Vec<u8>,
    pub public_key: CoseKey,
    /// The key's CBOR, as stored.
    pub public_key_cbor: Vec<u8>,
}

/// Parsed authenticator data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatorData {
    pub rp_id_hash: [u8; 32],
    pub flags: Flags,
    pub sign_count: u32,
    pub attested: Option<AttestedCredential>,
}

fn err(m: impl Into<String>) -> WebauthnError {
    WebauthnError::AuthenticatorData(m.into())
}

fn split(bytes: &[u8], n: usize, what: &str) -> Result<(Vec<u8>, usize), WebauthnError> {
    bytes
        .get(..n)
        .map(|b| (b.to_vec(), n))
        .ok_or_else(|| err(format!("cut short in the {what}")))
}

impl AuthenticatorData {
    /// Parses authenticator data (all of `bytes`).
    pub fn parse(bytes: &[u8]) -> Result<Self, WebauthnError> {
        let (head, _) = split(bytes, 37, "header (37 bytes)")?;
        let mut rp_id_hash = [0u8; 32];
        rp_id_hash.copy_from_slice(&head[..32]);
        let flags = Flags(head[32]);
        let sign_count = u32::from_be_bytes([head[33], head[34], head[35], head[36]]);
        let mut rest = &bytes[37..];
        let attested = if flags.attested() {
            let (credential, after) = attested_credential(rest)?;
            rest = after;
            Some(credential)
        } else {
            None
        };
        if flags.extensions() {
            let (ext, after) = take_item(rest).map_err(|e| err(format!("extensions: {e}")))?;
            map(&ext).map_err(|e| err(format!("extensions: {e}")))?;
            rest = after;
        }
        if !rest.is_empty() {
            return Err(err(format!("{} bytes after the data", rest.len())));
        }
        Ok(Self {
            rp_id_hash,
            flags,
            sign_count,
            attested,
        })
    }
}

fn attested_credential(bytes: &[u8]) -> Result<(AttestedCredential, &[u8]), WebauthnError> {
    let (aaguid, _) = split(bytes, 16, "AAGUID")?;
    let (len, _) = split(&bytes[16..], 2, "credential id length")?;
    let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    if len == 0 || len > MAX_CREDENTIAL_ID {
        return Err(err(format!(
            "credential id of {len} bytes (1 to {MAX_CREDENTIAL_ID})"
        )));
    }
    let (credential_id, _) = split(&bytes[18..], len, "credential id")?;
    let key_bytes = &bytes[18 + len..];
    let (key, rest) = take_item(key_bytes).map_err(|e| err(format!("public key: {e}")))?;
    let public_key = CoseKey::from_value(&key)?;
    let public_key_cbor = key_bytes[..key_bytes.len() - rest.len()].to_vec();
    let mut a = [0u8; 16];
    a.copy_from_slice(&aaguid);
    Ok((
        AttestedCredential {
            aaguid: a,
            credential_id,
            public_key,
            public_key_cbor,
        },
        rest,
    ))
}
