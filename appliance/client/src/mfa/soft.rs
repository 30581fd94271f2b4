//! The software authenticator of test builds (cargo feature `test-authenticator`, never in a
//! release build): `hop-webauthn`'s `SoftKey` credentials kept in the JSON file that
//! `HOP_TEST_AUTHENTICATOR` names, so that one test's `hop` processes share a key, as one USB
//! key would be plugged into each. It answers CTAP2 as a key does: excluded credentials,
//! discoverable credentials with their user handle, a counter that moves on, always present.
//! Without a PIN it verifies its user itself (as a fingerprint key would: `uv` is set on every
//! answer); with one ([`SoftAuthenticator::with_pin`], kept in the file as its hash and the
//! tries left) it speaks the key's side of the PIN/UV auth protocol (`hop-webauthn`'s
//! `SoftPin`): it wants a `pinUvAuthParam` to make a credential or to verify the user, and sets
//! `uv` only when one was given and checked. Each `hop` process is one plugging in of the key:
//! tokens and the count of wrong PINs in a row last as long as the process.

use std::path::PathBuf;

use anyhow::{Context, anyhow};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hop_webauthn::client_pin::{CLIENT_PIN, GET_INFO, PinUvAuth};
use hop_webauthn::ctap::{
    CtapError, GetAssertion, GotAssertion, MadeCredential, MakeCredential, status,
};
use hop_webauthn::pin::permission;
use hop_webauthn::testkit::{self, KeyKind, SoftKey, SoftPin};
use serde::{Deserialize, Serialize};

use super::Authenticator;

#[derive(Debug, Default, Serialize, Deserialize)]
struct KeyFile {
    credentials: Vec<Stored>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pin: Option<StoredPin>,
}

/// What a key keeps of its PIN across pluggings: the hash and the tries left.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredPin {
    hash: String,
    retries: u8,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    rp_id: String,
    credential_id: String,
    pkcs8: String,
    user_id: String,
    user_name: String,
    counter: u32,
    resident: bool,
}

pub struct SoftAuthenticator {
    path: PathBuf,
    /// The PIN side while this process has the key "plugged in"; read from the file at first
    /// use.
    pin: Option<SoftPin>,
}

impl SoftAuthenticator {
    #[must_use]
    pub fn new(path: PathBuf) -> Self {
        Self { path, pin: None }
    }

    /// The key with `pin` set (all 8 tries), as a vendor's tool would set it.
    pub fn with_pin(mut self, pin: &str) -> anyhow::Result<Self> {
        let mut file = self.load()?;
        let soft = SoftPin::new(pin);
        file.pin = Some(StoredPin {
            hash: B64.encode(soft.pin_hash()),
            retries: soft.retries,
        });
        self.save(&file)?;
        self.pin = Some(soft);
        Ok(self)
    }

    /// The PIN side, if the key has a PIN.
    fn pin_side(&mut self) -> anyhow::Result<Option<&mut SoftPin>> {
        if self.pin.is_none()
            && let Some(stored) = self.load()?.pin
        {
            let hash: [u8; 16] = unb64(&stored.hash)?
                .try_into()
                .map_err(|_| anyhow!("test authenticator file: a PIN hash of the wrong size"))?;
            self.pin = Some(SoftPin::from_state(hash, stored.retries));
        }
        Ok(self.pin.as_mut())
    }

    /// The flags the key sets for a command (user present; verified when it may say so), or
    /// the status a key answers: a key with a PIN checks the PIN's approval, refuses `uv` (it
    /// has no verification of its own) and makes no credential without its PIN.
    fn verify(
        &mut self,
        client_data_hash: &[u8],
        (uv, auth): (bool, Option<&PinUvAuth>),
        permission: u8,
        rp_id: &str,
    ) -> anyhow::Result<u8> {
        let Some(pin) = self.pin_side()? else {
            return match auth {
                Some(_) => Err(CtapError::Status(status::PIN_NOT_SET).into()),
                None => Ok(0x05),
            };
        };
        match auth {
            Some(a) => {
                pin.approve(client_data_hash, a, permission, rp_id)
                    .map_err(CtapError::Status)?;
                Ok(0x05)
            }
            None if uv => Err(CtapError::Status(status::INVALID_OPTION).into()),
            None if permission == permission::MAKE_CREDENTIAL => {
                Err(CtapError::Status(status::PIN_REQUIRED).into())
            }
            None => Ok(0x01),
        }
    }

    fn load(&self) -> anyhow::Result<KeyFile> {
        match std::fs::read(&self.path) {
            Ok(b) => serde_json::from_slice(&b)
                .with_context(|| format!("test authenticator {}", self.path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KeyFile::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", self.path.display())),
        }
    }

    fn save(&self, f: &KeyFile) -> anyhow::Result<()> {
        hop_net::files::write_private(&self.path, &serde_json::to_vec_pretty(f)?)?;
        Ok(())
    }
}

fn unb64(s: &str) -> anyhow::Result<Vec<u8>> {
    B64.decode(s)
        .map_err(|e| anyhow!("test authenticator file: {e}"))
}

impl Authenticator for SoftAuthenticator {
    fn describe(&self) -> String {
        format!("test authenticator {}", self.path.display())
    }

    fn make_credential(&mut self, req: &MakeCredential<'_>) -> anyhow::Result<MadeCredential> {
        let flags = self.verify(
            req.client_data_hash,
            (req.user_verification, req.pin_uv_auth.as_ref()),
            permission::MAKE_CREDENTIAL,
            req.rp_id,
        )?;
        let mut file = self.load()?;
        let excluded = file.credentials.iter().any(|c| {
            c.rp_id == req.rp_id
                && req
                    .exclude
                    .iter()
                    .any(|id| B64.encode(id) == c.credential_id)
        });
        if excluded {
            return Err(CtapError::Status(0x19).into());
        }
        let mut key = SoftKey::new(KeyKind::Es256, req.rp_id, "");
        key.flags = flags;
        let attestation_object = key.make_credential(req.client_data_hash);
        file.credentials.push(Stored {
            rp_id: req.rp_id.to_string(),
            credential_id: B64.encode(&key.credential_id),
            pkcs8: B64.encode(key.pkcs8()),
            user_id: B64.encode(req.user_id),
            user_name: req.user_name.to_string(),
            counter: key.counter,
            resident: req.resident_key,
        });
        self.save(&file)?;
        Ok(MadeCredential { attestation_object })
    }

    fn get_assertion(&mut self, req: &GetAssertion<'_>) -> anyhow::Result<GotAssertion> {
        let flags = self.verify(
            req.client_data_hash,
            (req.user_verification, req.pin_uv_auth.as_ref()),
            permission::GET_ASSERTION,
            req.rp_id,
        )?;
        let mut file = self.load()?;
        let allowed: Vec<String> = req.allow.iter().map(|id| B64.encode(id)).collect();
        // The most recent credential first, as CTAP2 keys order them.
        let Some(stored) = file.credentials.iter_mut().rev().find(|c| {
            c.rp_id == req.rp_id
                && if allowed.is_empty() {
                    c.resident
                } else {
                    allowed.contains(&c.credential_id)
                }
        }) else {
            return Err(CtapError::Status(0x2e).into());
        };
        let mut key = SoftKey::from_parts(
            KeyKind::Es256,
            &unb64(&stored.pkcs8)?,
            unb64(&stored.credential_id)?,
            req.rp_id,
            "",
        )
        .ok_or_else(|| anyhow!("test authenticator file: a key that does not parse"))?;
        key.counter = stored.counter;
        key.flags = flags;
        let (authenticator_data, signature) = key.get_assertion(req.client_data_hash);
        stored.counter = key.counter;
        let got = GotAssertion {
            credential_id: Some(key.credential_id.clone()),
            authenticator_data,
            signature,
            user_handle: stored
                .resident
                .then(|| unb64(&stored.user_id))
                .transpose()?,
        };
        self.save(&file)?;
        Ok(got)
    }

    fn command(&mut self, request: &[u8]) -> anyhow::Result<Vec<u8>> {
        match request.first() {
            Some(&GET_INFO) => Ok(testkit::get_info(self.pin_side()?.as_deref())),
            Some(&CLIENT_PIN) => {
                let Some(pin) = self.pin_side()? else {
                    return Ok(vec![status::PIN_NOT_SET]);
                };
                let answer = pin.handle(request);
                let retries = pin.retries;
                let mut file = self.load()?;
                if let Some(stored) = file.pin.as_mut() {
                    stored.retries = retries;
                }
                self.save(&file)?;
                Ok(answer)
            }
            _ => Ok(vec![status::INVALID_COMMAND]),
        }
    }
}
