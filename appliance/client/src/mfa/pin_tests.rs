//! The ceremonies with a PIN-protected software key, end to end through the client's code: the
//! key answers that it needs its PIN, the PIN is asked (from a script here), a wrong one
//! counts down, the right one yields a token whose `pinUvAuthParam` the key checks, and the
//! relying party's checks (user verification required) pass on what comes back.

use std::collections::VecDeque;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use hop_webauthn::ctap::{
    CtapError, GetAssertion, GotAssertion, MadeCredential, MakeCredential, status,
};

use super::Authenticator;
use super::ceremony::{assert_with, register_with};
use super::pin::PinPrompt;
use super::soft::SoftAuthenticator;

const ORIGIN: &str = "https://hop.example";

/// PINs typed in turn; what each prompt said is kept.
#[derive(Default)]
struct Script {
    pins: VecDeque<&'static str>,
    prompts: Vec<String>,
}

impl Script {
    fn new(pins: &[&'static str]) -> Self {
        Self {
            pins: pins.iter().copied().collect(),
            prompts: Vec::new(),
        }
    }
}

impl PinPrompt for Script {
    fn ask(&mut self, prompt: &str) -> anyhow::Result<Zeroizing<String>> {
        self.prompts.push(prompt.to_string());
        let pin = self
            .pins
            .pop_front()
            .ok_or_else(|| anyhow::anyhow!("asked for a PIN once more than the test typed"))?;
        Ok(Zeroizing::new(pin.to_string()))
    }
}

fn creation_options(challenge: &[u8]) -> String {
    json!({"publicKey": {
        "rp": {"id": "hop.example", "name": "Hop"},
        "user": {"id": B64.encode([9u8; 16]), "name": "kim"},
        "challenge": B64.encode(challenge),
        "pubKeyCredParams": [{"type": "public-key", "alg": -7}],
        "authenticatorSelection": {"userVerification": "preferred", "residentKey": "preferred"},
    }})
    .to_string()
}

fn request_options(challenge: &[u8], allow: &[Vec<u8>], uv: &str) -> String {
    let allow: Vec<Value> = allow
        .iter()
        .map(|id| json!({"type": "public-key", "id": B64.encode(id)}))
        .collect();
    json!({"publicKey": {
        "challenge": B64.encode(challenge),
        "rpId": "hop.example",
        "allowCredentials": allow,
        "userVerification": uv,
    }})
    .to_string()
}

fn field(v: &Value, k: &str) -> Vec<u8> {
    B64.decode(v[k].as_str().unwrap()).unwrap()
}

/// Registers on `key` (answering PINs from `script`) and checks it as Auth would, user
/// verification required.
fn register(
    key: &mut dyn Authenticator,
    script: &mut Script,
) -> anyhow::Result<hop_webauthn::RegisteredCredential> {
    let challenge = [1u8; 32];
    let answer = register_with(key, script, &creation_options(&challenge), ORIGIN)?;
    Ok(hop_webauthn::verify_registration(
        &hop_webauthn::Registration {
            client_data_json: &field(&answer, "client_data_json"),
            attestation_object: &field(&answer, "attestation_object"),
        },
        &hop_webauthn::RegistrationCheck {
            challenge: &challenge,
            origins: &[ORIGIN.to_string()],
            rp_id: "hop.example",
            require_user_verification: true,
        },
    )?)
}

/// An assertion from `key`, checked as Auth would; whether the key verified the user.
fn assert(
    key: &mut dyn Authenticator,
    script: &mut Script,
    registered: &hop_webauthn::RegisteredCredential,
    passwordless: bool,
) -> anyhow::Result<bool> {
    let challenge = [2u8; 32];
    let allow = if passwordless {
        vec![]
    } else {
        vec![registered.credential_id.clone()]
    };
    let uv = if passwordless {
        "required"
    } else {
        "preferred"
    };
    let options = request_options(&challenge, &allow, uv);
    let answer = assert_with(key, script, &options, ORIGIN, passwordless)?;
    let auth_data = field(&answer, "authenticator_data");
    hop_webauthn::verify_assertion(
        &hop_webauthn::Assertion {
            credential_id: &field(&answer, "credential_id"),
            client_data_json: &field(&answer, "client_data_json"),
            authenticator_data: &auth_data,
            signature: &field(&answer, "signature"),
        },
        &hop_webauthn::AssertionCheck {
            challenge: &challenge,
            origins: &[ORIGIN.to_string()],
            rp_id: "hop.example",
            require_user_verification: passwordless,
            credential_id: &registered.credential_id,
            public_key_cbor: &registered.public_key_cbor,
            stored_count: 0,
        },
    )?;
    if passwordless {
        assert_eq!(field(&answer, "user_handle"), [9u8; 16]);
    }
    Ok(auth_data[32] & 0x04 != 0)
}

#[test]
fn a_pin_protected_key_registers_and_logs_in_passwordless_with_its_pin() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key.json");
    let mut key = SoftAuthenticator::new(path.clone())
        .with_pin("1234")
        .unwrap();

    // A key with a PIN gets it to make a passkey: a wrong PIN, then the right one.
    let mut script = Script::new(&["0000", "1234"]);
    let registered = register(&mut key, &mut script).unwrap();
    assert_eq!(script.prompts.len(), 2);
    assert!(script.prompts[0].starts_with("PIN for your test authenticator"));
    assert!(
        script.prompts[1].starts_with("Wrong PIN (7 PIN tries left). PIN for"),
        "{:?}",
        script.prompts
    );

    // A login's second factor asks for no verification: no PIN, no uv flag.
    let mut script = Script::new(&[]);
    assert!(!assert(&mut key, &mut script, &registered, false).unwrap());
    assert!(script.prompts.is_empty());

    // Passwordless requires it: the PIN, in a new process (a new plugging in of the key).
    let mut key = SoftAuthenticator::new(path.clone());
    let mut script = Script::new(&["12", "1234"]);
    assert!(assert(&mut key, &mut script, &registered, true).unwrap());
    assert!(script.prompts[1].starts_with("Not a PIN: a PIN has at least 4 characters."));
}

#[test]
fn wrong_pins_stop_at_the_keys_block_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key.json");
    let mut key = SoftAuthenticator::new(path.clone())
        .with_pin("1234")
        .unwrap();
    let mut script = Script::new(&["1111", "2222", "3333", "1234"]);
    let e = register(&mut key, &mut script).unwrap_err().to_string();
    assert!(e.contains("remove it and plug it in again"), "{e}");
    assert_eq!(script.prompts.len(), 3);
    assert!(script.prompts[2].starts_with("Wrong PIN (6 PIN tries left)."));

    // Plugged in again: the tries left (5) are shown before the first PIN once few are left.
    let mut key = SoftAuthenticator::new(path.clone());
    let mut script = Script::new(&["1111", "2222", "1234"]);
    assert!(register(&mut key, &mut script).is_ok());
    assert!(script.prompts[2].starts_with("Wrong PIN (3 PIN tries left)."));
    // The right PIN gave all 8 back; three rounds of two wrong ones bring it to 2, which the
    // next round says before the first PIN; its two wrong ones use up the last.
    for _ in 0..3 {
        let mut key = SoftAuthenticator::new(path.clone());
        let mut script = Script::new(&["1111", "1111"]);
        assert!(register(&mut key, &mut script).is_err());
    }
    let mut key = SoftAuthenticator::new(path.clone());
    let mut script = Script::new(&["1111", "1111"]);
    let e = register(&mut key, &mut script).unwrap_err().to_string();
    assert!(
        script.prompts[0].starts_with("2 PIN tries left before the key locks."),
        "{:?}",
        script.prompts
    );
    assert!(e.contains("blocked"), "{e}");
    // Blocked for good: no PIN is asked at all.
    let mut key = SoftAuthenticator::new(path);
    let mut script = Script::new(&["1234"]);
    let e = register(&mut key, &mut script).unwrap_err().to_string();
    assert!(e.contains("blocked (no tries left)"), "{e}");
    assert!(script.prompts.is_empty());
}

#[test]
fn a_key_that_verifies_its_user_itself_needs_no_pin() {
    let dir = tempfile::tempdir().unwrap();
    let mut key = SoftAuthenticator::new(dir.path().join("key.json"));
    let mut script = Script::new(&[]);
    let registered = register(&mut key, &mut script).unwrap();
    assert!(assert(&mut key, &mut script, &registered, true).unwrap());
    assert!(script.prompts.is_empty());
}

/// A key that wants its PIN for every assertion (CTAP 2.1's `alwaysUv`), even when the
/// ceremony asks for no verification.
struct AlwaysUv(SoftAuthenticator);

impl Authenticator for AlwaysUv {
    fn describe(&self) -> String {
        self.0.describe()
    }

    fn make_credential(&mut self, req: &MakeCredential<'_>) -> anyhow::Result<MadeCredential> {
        self.0.make_credential(req)
    }

    fn get_assertion(&mut self, req: &GetAssertion<'_>) -> anyhow::Result<GotAssertion> {
        if req.pin_uv_auth.is_none() {
            return Err(CtapError::Status(status::PIN_REQUIRED).into());
        }
        self.0.get_assertion(req)
    }

    fn command(&mut self, request: &[u8]) -> anyhow::Result<Vec<u8>> {
        self.0.command(request)
    }
}

#[test]
fn a_key_that_answers_pin_required_is_asked_again_with_its_pin() {
    let dir = tempfile::tempdir().unwrap();
    let soft = SoftAuthenticator::new(dir.path().join("key.json"))
        .with_pin("1234")
        .unwrap();
    let mut key = AlwaysUv(soft);
    let mut script = Script::new(&["1234", "1234"]);
    let registered = register(&mut key, &mut script).unwrap();
    assert_eq!(script.prompts.len(), 1);
    // A login's second factor asks for no verification; the key wants its PIN all the same.
    assert!(assert(&mut key, &mut script, &registered, false).unwrap());
    assert_eq!(script.prompts.len(), 2);

    // A key without a PIN that asks for one: the error says to set one.
    let mut bare = AlwaysUv(SoftAuthenticator::new(dir.path().join("bare.json")));
    let mut script = Script::new(&[]);
    let registered = register(&mut bare, &mut script).unwrap();
    let e = assert(&mut bare, &mut script, &registered, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("asks for its PIN but has none set"), "{e}");
}
