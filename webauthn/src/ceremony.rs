//! The two ceremonies' checks, in the order WebAuthn §7.1 and §7.2 give them: client data (type,
//! challenge, origin), then authenticator data (RP ID hash, presence, verification), then the
//! attestation statement or the assertion signature, then the signature counter.

use aws_lc_rs::digest::{SHA256, digest};
use subtle::ConstantTimeEq;

use crate::attestation::{Attestation, AttestationKind};
use crate::auth_data::AuthenticatorData;
use crate::client_data::{CeremonyType, ClientData};
use crate::cose::CoseKey;
use crate::error::WebauthnError;

/// What the server expects of a registration.
#[derive(Debug, Clone, Copy)]
pub struct RegistrationCheck<'a> {
    /// The challenge this server issued for the ceremony.
    pub challenge: &'a [u8],
    /// The web origins allowed (`https://proxy.example.com`).
    pub origins: &'a [String],
    pub rp_id: &'a str,
    pub require_user_verification: bool,
}

/// What the browser sent back from `navigator.credentials.create`.
#[derive(Debug, Clone, Copy)]
pub struct Registration<'a> {
    pub client_data_json: &'a [u8],
    pub attestation_object: &'a [u8],
}

/// A credential to store after a registration passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredCredential {
    pub credential_id: Vec<u8>,
    pub public_key_cbor: Vec<u8>,
    pub sign_count: u32,
    pub aaguid: [u8; 16],
    pub attestation: AttestationKind,
    pub user_verified: bool,
    /// A synced passkey (backup eligible).
    pub backup_eligible: bool,
}

/// What the server expects of an assertion, with the stored credential.
#[derive(Debug, Clone, Copy)]
pub struct AssertionCheck<'a> {
    pub challenge: &'a [u8],
    pub origins: &'a [String],
    pub rp_id: &'a str,
    pub require_user_verification: bool,
    pub credential_id: &'a [u8],
    pub public_key_cbor: &'a [u8],
    pub stored_count: u32,
}

/// What the browser sent back from `navigator.credentials.get`.
#[derive(Debug, Clone, Copy)]
pub struct Assertion<'a> {
    pub credential_id: &'a [u8],
    pub client_data_json: &'a [u8],
    pub authenticator_data: &'a [u8],
    pub signature: &'a [u8],
}

fn check_auth_data(
    data: &AuthenticatorData,
    rp_id: &str,
    require_user_verification: bool,
) -> Result<(), WebauthnError> {
    let want = digest(&SHA256, rp_id.as_bytes());
    if !bool::from(data.rp_id_hash.as_slice().ct_eq(want.as_ref())) {
        return Err(WebauthnError::WrongRelyingParty);
    }
    if !data.flags.user_present() {
        return Err(WebauthnError::NoUserPresence);
    }
    if require_user_verification && !data.flags.user_verified() {
        return Err(WebauthnError::NoUserVerification);
    }
    Ok(())
}

/// Checks a registration; returns the credential to store.
pub fn verify_registration(
    r: &Registration<'_>,
    c: &RegistrationCheck<'_>,
) -> Result<RegisteredCredential, WebauthnError> {
    let client = ClientData::parse(r.client_data_json)?;
    client.check(CeremonyType::Create, c.challenge, c.origins)?;
    let attestation = Attestation::parse(r.attestation_object)?;
    let data = &attestation.auth_data;
    check_auth_data(data, c.rp_id, c.require_user_verification)?;
    let credential = data.attested.as_ref().ok_or_else(|| {
        WebauthnError::AuthenticatorData("a registration without an attested credential".into())
    })?;
    let client_hash = digest(&SHA256, r.client_data_json);
    let kind = attestation.verify(client_hash.as_ref())?;
    Ok(RegisteredCredential {
        credential_id: credential.credential_id.clone(),
        public_key_cbor: credential.public_key_cbor.clone(),
        sign_count: data.sign_count,
        aaguid: credential.aaguid,
        attestation: kind,
        user_verified: data.flags.user_verified(),
        backup_eligible: data.flags.backup_eligible(),
    })
}

/// Checks an assertion made with the stored credential; returns the counter to store.
pub fn verify_assertion(a: &Assertion<'_>, c: &AssertionCheck<'_>) -> Result<u32, WebauthnError> {
    if !bool::from(a.credential_id.ct_eq(c.credential_id)) {
        return Err(WebauthnError::WrongCredential);
    }
    let client = ClientData::parse(a.client_data_json)?;
    client.check(CeremonyType::Get, c.challenge, c.origins)?;
    let data = AuthenticatorData::parse(a.authenticator_data)?;
    check_auth_data(&data, c.rp_id, c.require_user_verification)?;
    let key = CoseKey::from_cbor(c.public_key_cbor)?;
    let mut signed = a.authenticator_data.to_vec();
    signed.extend_from_slice(digest(&SHA256, a.client_data_json).as_ref());
    key.verify(&signed, a.signature)?;
    // Authenticators that keep no counter (synced passkeys) send 0 every time.
    if (data.sign_count != 0 || c.stored_count != 0) && data.sign_count <= c.stored_count {
        return Err(WebauthnError::CounterRegressed {
            stored: c.stored_count,
            presented: data.sign_count,
        });
    }
    Ok(data.sign_count)
}
