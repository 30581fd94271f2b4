//! The ceremonies against a software authenticator, each check spoiled once, and every prefix
//! and flipped byte of each parser's input.

use crate::testkit::{KeyKind, SoftKey, client_data};
use crate::*;

const RP: &str = "proxy.example.com";
const ORIGIN: &str = "https://proxy.example.com:3080";
const CHALLENGE: &[u8] = b"0123456789abcdef0123456789abcdef";

fn origins() -> Vec<String> {
    vec![ORIGIN.to_string()]
}

fn reg_check(origins: &[String]) -> RegistrationCheck<'_> {
    RegistrationCheck {
        challenge: CHALLENGE,
        origins,
        rp_id: RP,
        require_user_verification: true,
    }
}

fn register(k: &SoftKey, packed: bool) -> Result<RegisteredCredential, WebauthnError> {
    let made = k.register(CHALLENGE, packed);
    let o = origins();
    verify_registration(
        &Registration {
            client_data_json: &made.client_data_json,
            attestation_object: &made.attestation_object,
        },
        &reg_check(&o),
    )
}

fn assert_with(
    k: &mut SoftKey,
    cred: &RegisteredCredential,
    stored: u32,
) -> Result<u32, WebauthnError> {
    let a = k.assert(CHALLENGE);
    let o = origins();
    verify_assertion(
        &Assertion {
            credential_id: &a.credential_id,
            client_data_json: &a.client_data_json,
            authenticator_data: &a.authenticator_data,
            signature: &a.signature,
        },
        &AssertionCheck {
            challenge: CHALLENGE,
            origins: &o,
            rp_id: RP,
            require_user_verification: true,
            credential_id: &cred.credential_id,
            public_key_cbor: &cred.public_key_cbor,
            stored_count: stored,
        },
    )
}

#[test]
fn es256_and_ed25519_register_and_assert_with_none_and_packed_attestation() {
    for kind in [KeyKind::Es256, KeyKind::Ed25519] {
        for packed in [false, true] {
            let mut k = SoftKey::new(kind, RP, ORIGIN);
            let cred = register(&k, packed).unwrap();
            assert_eq!(cred.credential_id, k.credential_id);
            assert_eq!(
                cred.attestation,
                if packed {
                    AttestationKind::SelfSigned
                } else {
                    AttestationKind::None
                }
            );
            assert!(cred.user_verified);
            assert_eq!(assert_with(&mut k, &cred, 0).unwrap(), 1);
            assert_eq!(assert_with(&mut k, &cred, 1).unwrap(), 2);
        }
    }
}

#[test]
fn a_registration_is_refused_for_each_spoiled_check() {
    let k = SoftKey::new(KeyKind::Es256, RP, ORIGIN);
    let o = origins();
    let good = k.register(CHALLENGE, false);
    let try_with = |client: &[u8], object: &[u8], check: RegistrationCheck<'_>| {
        verify_registration(
            &Registration {
                client_data_json: client,
                attestation_object: object,
            },
            &check,
        )
    };
    let obj = &good.attestation_object;
    let cases: Vec<(Vec<u8>, WebauthnError)> = vec![
        (
            client_data("webauthn.get", CHALLENGE, ORIGIN),
            WebauthnError::WrongType {
                got: "webauthn.get".into(),
                want: "webauthn.create",
            },
        ),
        (
            client_data("webauthn.create", b"another challenge", ORIGIN),
            WebauthnError::WrongChallenge,
        ),
        (
            client_data("webauthn.create", CHALLENGE, "https://evil.example"),
            WebauthnError::WrongOrigin("https://evil.example".into()),
        ),
    ];
    for (client, want) in cases {
        assert_eq!(try_with(&client, obj, reg_check(&o)).unwrap_err(), want);
    }
    let cross = String::from_utf8(good.client_data_json.clone())
        .unwrap()
        .replace("\"crossOrigin\":false", "\"crossOrigin\":true");
    assert_eq!(
        try_with(cross.as_bytes(), obj, reg_check(&o)).unwrap_err(),
        WebauthnError::CrossOrigin
    );
    let mut other_rp = reg_check(&o);
    other_rp.rp_id = "evil.example";
    assert_eq!(
        try_with(&good.client_data_json, obj, other_rp).unwrap_err(),
        WebauthnError::WrongRelyingParty
    );
    // No user verification, when required; accepted when not.
    let mut no_uv = SoftKey::new(KeyKind::Es256, RP, ORIGIN);
    no_uv.flags = 0x01;
    let made = no_uv.register(CHALLENGE, false);
    assert_eq!(
        try_with(
            &made.client_data_json,
            &made.attestation_object,
            reg_check(&o)
        )
        .unwrap_err(),
        WebauthnError::NoUserVerification
    );
    let mut lax = reg_check(&o);
    lax.require_user_verification = false;
    assert!(try_with(&made.client_data_json, &made.attestation_object, lax).is_ok());
    no_uv.flags = 0x04;
    let made = no_uv.register(CHALLENGE, false);
    assert_eq!(
        try_with(&made.client_data_json, &made.attestation_object, lax).unwrap_err(),
        WebauthnError::NoUserPresence
    );
}

#[test]
fn an_unknown_attestation_format_and_a_forged_packed_signature_are_refused() {
    let k = SoftKey::new(KeyKind::Es256, RP, ORIGIN);
    let o = origins();
    let made = k.register(CHALLENGE, true);
    let tpm = replace_text(&made.attestation_object, "packed", "tpm\0\0\0");
    let e = verify_registration(
        &Registration {
            client_data_json: &made.client_data_json,
            attestation_object: &tpm,
        },
        &reg_check(&o),
    )
    .unwrap_err();
    assert!(e.to_string().contains("tpm"), "{e}");
    // The packed signature over other client data does not verify.
    let other = client_data("webauthn.create", CHALLENGE, ORIGIN)
        .into_iter()
        .chain(b" ".iter().copied())
        .collect::<Vec<u8>>();
    let e = verify_registration(
        &Registration {
            client_data_json: &other,
            attestation_object: &made.attestation_object,
        },
        &reg_check(&o),
    )
    .unwrap_err();
    assert_eq!(e, WebauthnError::BadSignature);
}

/// `bytes` with the first `from` replaced by `to` (same length, so CBOR lengths still hold).
fn replace_text(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let at = bytes
        .windows(from.len())
        .position(|w| w == from.as_bytes())
        .unwrap();
    let mut out = bytes.to_vec();
    out[at..at + to.len()].copy_from_slice(to.as_bytes());
    out
}

#[test]
fn an_assertion_is_refused_with_another_key_a_spoiled_signature_or_a_counter_that_went_back() {
    let mut k = SoftKey::new(KeyKind::Es256, RP, ORIGIN);
    let cred = register(&k, false).unwrap();
    let other = SoftKey::new(KeyKind::Es256, RP, ORIGIN);
    let other_cred = register(&other, false).unwrap();
    let mut forged = other_cred.clone();
    forged.credential_id = cred.credential_id.clone();
    assert_eq!(
        assert_with(&mut k, &forged, 0).unwrap_err(),
        WebauthnError::BadSignature
    );
    assert_eq!(
        assert_with(&mut k, &other_cred, 0).unwrap_err(),
        WebauthnError::WrongCredential
    );
    // The counter is now 3 on the key; a stored 5 says a clone signed meanwhile.
    assert_eq!(
        assert_with(&mut k, &cred, 5).unwrap_err(),
        WebauthnError::CounterRegressed {
            stored: 5,
            presented: 3
        }
    );
    // Authenticators without a counter (0 every time) pass, again and again.
    let mut zero = SoftKey::new(KeyKind::Es256, RP, ORIGIN);
    zero.counts = false;
    let zc = register(&zero, false).unwrap();
    assert_eq!(assert_with(&mut zero, &zc, 0).unwrap(), 0);
    assert_eq!(assert_with(&mut zero, &zc, 0).unwrap(), 0);
    let o = origins();
    let check = AssertionCheck {
        challenge: CHALLENGE,
        origins: &o,
        rp_id: RP,
        require_user_verification: true,
        credential_id: &zc.credential_id,
        public_key_cbor: &zc.public_key_cbor,
        stored_count: 0,
    };
    // A flipped signature byte fails.
    let mut a = k.assert(CHALLENGE);
    let last = a.signature.len() - 1;
    a.signature[last] ^= 1;
    let check = AssertionCheck {
        credential_id: &cred.credential_id,
        public_key_cbor: &cred.public_key_cbor,
        stored_count: 0,
        ..check
    };
    let got = verify_assertion(
        &Assertion {
            credential_id: &a.credential_id,
            client_data_json: &a.client_data_json,
            authenticator_data: &a.authenticator_data,
            signature: &a.signature,
        },
        &check,
    );
    assert_eq!(got.unwrap_err(), WebauthnError::BadSignature);
}

#[test]
fn every_prefix_and_flipped_byte_of_authenticator_bytes_is_refused_or_parsed_without_panic() {
    let k = SoftKey::new(KeyKind::Es256, RP, ORIGIN);
    let made = k.register(CHALLENGE, true);
    let auth = k.auth_data(true);
    assert!(AuthenticatorData::parse(&auth).is_ok());
    assert!(Attestation::parse(&made.attestation_object).is_ok());
    assert!(ClientData::parse(&made.client_data_json).is_ok());
    assert!(CoseKey::from_cbor(&k.cose_key()).is_ok());
    for input in [
        &auth,
        &made.attestation_object,
        &made.client_data_json,
        &k.cose_key(),
    ] {
        for cut in 0..input.len() {
            crate::fuzz::parse_all(&input[..cut]);
        }
        for i in 0..input.len() {
            let mut flipped = input.clone();
            flipped[i] ^= 0xff;
            crate::fuzz::parse_all(&flipped);
        }
    }
    for cut in 0..auth.len() {
        assert!(
            AuthenticatorData::parse(&auth[..cut]).is_err(),
            "prefix {cut} parsed"
        );
    }
    for cut in 0..made.attestation_object.len() {
        assert!(
            Attestation::parse(&made.attestation_object[..cut]).is_err(),
            "prefix {cut}"
        );
    }
    let mut trailing = auth.clone();
    trailing.push(0);
    assert!(
        AuthenticatorData::parse(&trailing)
            .unwrap_err()
            .to_string()
            .contains("after")
    );
}
