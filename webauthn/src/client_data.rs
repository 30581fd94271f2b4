//! `clientDataJSON`: what the browser says it asked the authenticator to sign (the ceremony's
//! type, the challenge, the origin). Parsed as JSON, bounded in size.

use base64::Engine;
use serde::Deserialize;

use crate::error::WebauthnError;

/// Longer client data is refused (browsers send a few hundred bytes).
const MAX_LEN: usize = 4096;

/// Which ceremony the client data is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CeremonyType {
    Create,
    Get,
}

impl CeremonyType {
    fn name(self) -> &'static str {
        match self {
            Self::Create => "webauthn.create",
            Self::Get => "webauthn.get",
        }
    }
}

/// The fields of `clientDataJSON` Hop checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientData {
    pub kind: String,
    pub challenge: Vec<u8>,
    pub origin: String,
    pub cross_origin: bool,
}

#[derive(Deserialize)]
struct Raw {
    #[serde(rename = "type")]
    kind: String,
    challenge: String,
    origin: String,
    #[serde(default, rename = "crossOrigin")]
    cross_origin: Option<bool>,
}

fn err(m: impl Into<String>) -> WebauthnError {
    WebauthnError::ClientData(m.into())
}

impl ClientData {
    /// Parses `clientDataJSON`.
    pub fn parse(bytes: &[u8]) -> Result<Self, WebauthnError> {
        if bytes.len() > MAX_LEN {
            return Err(err(format!("{} bytes (at most {MAX_LEN})", bytes.len())));
        }
        let raw: Raw = serde_json::from_slice(bytes).map_err(|e| err(e.to_string()))?;
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(raw.challenge.trim_end_matches('='))
            .map_err(|_| err("the challenge is not base64url"))?;
        Ok(Self {
            kind: raw.kind,
            challenge,
            origin: raw.origin,
            cross_origin: raw.cross_origin.unwrap_or(false),
        })
    }

    /// Checks the type, the challenge (in constant time) and the origin.
    pub fn check(
        &self,
        want: CeremonyType,
        challenge: &[u8],
        origins: &[String],
    ) -> Result<(), WebauthnError> {
        use subtle::ConstantTimeEq;
        if self.kind != want.name() {
            return Err(WebauthnError::WrongType {
                got: self.kind.clone(),
                want: want.name(),
            });
        }
        if !bool::from(self.challenge.ct_eq(challenge)) {
            return Err(WebauthnError::WrongChallenge);
        }
        if !origins.iter().any(|o| o == &self.origin) {
            return Err(WebauthnError::WrongOrigin(self.origin.clone()));
        }
        if self.cross_origin {
            return Err(WebauthnError::CrossOrigin);
        }
        Ok(())
    }
}
