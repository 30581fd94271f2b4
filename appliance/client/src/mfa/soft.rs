//! The software authenticator of test builds (cargo feature `test-authenticator`, never in a
//! release build): `hop-webauthn`'s `SoftKey` credentials kept in the JSON file that
//! `HOP_TEST_AUTHENTICATOR` names, so that one test's `hop` processes share a key, as one USB
//! key would be plugged into each. It answers CTAP2 as a key does: excluded credentials,
//! discoverable credentials with their user handle, a counter that moves on, always present
//! and verified.

use std::path::PathBuf;

use anyhow::{Context, anyhow};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hop_webauthn::ctap::{CtapError, GetAssertion, GotAssertion, MadeCredential, MakeCredential};
use hop_webauthn::testkit::{KeyKind, SoftKey};
use serde::{Deserialize, Serialize};

use super::Authenticator;

#[derive(Debug, Default, Serialize, Deserialize)]
struct KeyFile {
    credentials: Vec<Stored>,
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
}

impl SoftAuthenticator {
    #[must_use]
    pub fn new(path: PathBuf) -> Self {
        Self { path }
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
        let key = SoftKey::new(KeyKind::Es256, req.rp_id, "");
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
}
