//! The security key's side of the PIN/UV auth protocol, for the software authenticator of
//! tests: `authenticatorGetInfo`, the `authenticatorClientPIN` subcommands a client uses to get
//! a token, and the check of a `pinUvAuthParam`. It keeps a key's PIN rules: 8 tries in all
//! (reset by the right PIN), 3 wrong ones in a row block the PIN until the key is plugged in
//! again, a new key agreement key after each wrong PIN, a token bound to its permissions and
//! RP ID. Answers are status byte first, as a key sends them.

use ciborium::value::Value;

use crate::cbor;
use crate::client_pin::{CLIENT_PIN, PinUvAuth, sub};
use crate::ctap::status;
use crate::pin::{AgreementKey, EphemeralKey, PinProtocol, permission};

/// A token the key handed out, with what it may be used for.
struct Granted {
    token: [u8; 32],
    protocol: PinProtocol,
    permissions: u8,
    rp_id: Option<String>,
}

/// A software key's PIN state.
pub struct SoftPin {
    pin_hash: [u8; 16],
    /// Tries left before the PIN is blocked for good.
    pub retries: u8,
    wrong_in_a_row: u8,
    key: EphemeralKey,
    granted: Option<Granted>,
    /// Behave as a CTAP 2.0 key: protocol one, `getPinToken`, tokens without permissions.
    pub legacy: bool,
}

/// The aaguid the software key reports (also in its attested credential data).
pub const AAGUID: [u8; 16] = [7; 16];

fn int(i: i64) -> Value {
    Value::Integer(i.into())
}

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

fn ok(map: Vec<(Value, Value)>) -> Vec<u8> {
    let mut out = vec![0];
    ciborium::ser::into_writer(&Value::Map(map), &mut out).expect("CBOR to a Vec");
    out
}

/// `authenticatorGetInfo`'s answer of a software key: with `pin`, a key with a PIN set and no
/// built-in verification; without, a key that verifies its user itself (as a fingerprint key).
#[must_use]
pub fn get_info(pin: Option<&SoftPin>) -> Vec<u8> {
    let legacy = pin.is_some_and(|p| p.legacy);
    let mut options = vec![
        (text("rk"), Value::Bool(true)),
        (text("up"), Value::Bool(true)),
    ];
    match pin {
        Some(_) => options.push((text("clientPin"), Value::Bool(true))),
        None => options.push((text("uv"), Value::Bool(true))),
    }
    if pin.is_some() && !legacy {
        options.push((text("pinUvAuthToken"), Value::Bool(true)));
    }
    let (versions, protocols) = if legacy {
        (vec![text("FIDO_2_0")], vec![int(1)])
    } else {
        (
            vec![text("FIDO_2_0"), text("FIDO_2_1")],
            vec![int(2), int(1)],
        )
    };
    ok(vec![
        (int(1), Value::Array(versions)),
        (int(3), Value::Bytes(AAGUID.to_vec())),
        (int(4), Value::Map(options)),
        (int(6), Value::Array(protocols)),
    ])
}

fn hash16(pin: &str) -> [u8; 16] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, pin.as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&d.as_ref()[..16]);
    out
}

impl SoftPin {
    /// A key whose PIN is `pin`, with all 8 tries.
    #[must_use]
    pub fn new(pin: &str) -> Self {
        Self::from_state(hash16(pin), 8)
    }

    /// A key from its saved state: the PIN's hash (`LEFT(SHA-256(pin), 16)`) and tries left.
    #[must_use]
    pub fn from_state(pin_hash: [u8; 16], retries: u8) -> Self {
        Self {
            pin_hash,
            retries,
            wrong_in_a_row: 0,
            key: EphemeralKey::generate(),
            granted: None,
            legacy: false,
        }
    }

    #[must_use]
    pub fn pin_hash(&self) -> [u8; 16] {
        self.pin_hash
    }

    /// Answers one `authenticatorClientPIN` request (command byte first).
    pub fn handle(&mut self, request: &[u8]) -> Vec<u8> {
        match self.answer(request) {
            Ok(map) => ok(map),
            Err(code) => vec![code],
        }
    }

    fn answer(&mut self, request: &[u8]) -> Result<Vec<(Value, Value)>, u8> {
        let (&command, body) = request.split_first().ok_or(status::INVALID_LENGTH)?;
        if command != CLIENT_PIN {
            return Err(status::INVALID_COMMAND);
        }
        let req = cbor::whole_item(body).map_err(|_| status::INVALID_CBOR)?;
        let req = cbor::map(&req).map_err(|_| status::INVALID_CBOR)?;
        let get = |k: i64| cbor::by_int(req, k).map_err(|_| status::INVALID_CBOR);
        let num = |k: i64| -> Result<i64, u8> {
            let v = get(k)?.ok_or(status::MISSING_PARAMETER)?;
            cbor::as_int(v, "").map_err(|_| status::INVALID_CBOR)
        };
        let protocol = u64::try_from(num(1)?)
            .ok()
            .and_then(PinProtocol::from_id)
            .filter(|p| !self.legacy || *p == PinProtocol::One)
            .ok_or(status::INVALID_PARAMETER)?;
        match u8::try_from(num(2)?).map_err(|_| status::INVALID_PARAMETER)? {
            sub::GET_PIN_RETRIES => Ok(vec![(int(3), int(i64::from(self.retries)))]),
            sub::GET_KEY_AGREEMENT => Ok(vec![(int(1), self.key.public().to_cose())]),
            s @ (sub::GET_PIN_TOKEN | sub::GET_TOKEN_WITH_PERMISSIONS) => {
                let with_permissions = s == sub::GET_TOKEN_WITH_PERMISSIONS;
                if with_permissions && self.legacy {
                    return Err(status::INVALID_SUBCOMMAND);
                }
                let platform = get(3)?.ok_or(status::MISSING_PARAMETER)?;
                let platform =
                    AgreementKey::from_cose(platform).map_err(|_| status::INVALID_PARAMETER)?;
                let enc = get(6)?.ok_or(status::MISSING_PARAMETER)?;
                let enc = cbor::as_bytes(enc, "").map_err(|_| status::INVALID_CBOR)?;
                let scope = if with_permissions {
                    let bits = u8::try_from(num(9)?).map_err(|_| status::INVALID_PARAMETER)?;
                    if bits == 0 {
                        return Err(status::INVALID_PARAMETER);
                    }
                    let rp = match get(10)? {
                        Some(v) => Some(
                            cbor::as_text(v, "")
                                .map_err(|_| status::INVALID_CBOR)?
                                .to_string(),
                        ),
                        None => None,
                    };
                    (bits, rp)
                } else {
                    (
                        permission::MAKE_CREDENTIAL | permission::GET_ASSERTION,
                        None,
                    )
                };
                self.token(protocol, &platform, enc, scope)
            }
            _ => Err(status::INVALID_SUBCOMMAND),
        }
    }

    fn token(
        &mut self,
        protocol: PinProtocol,
        platform: &AgreementKey,
        pin_hash_enc: &[u8],
        (permissions, rp_id): (u8, Option<String>),
    ) -> Result<Vec<(Value, Value)>, u8> {
        if self.retries == 0 {
            return Err(status::PIN_BLOCKED);
        }
        if self.wrong_in_a_row >= 3 {
            return Err(status::PIN_AUTH_BLOCKED);
        }
        let shared = self.key.agree(protocol, platform);
        let hash = protocol
            .decrypt(&shared, pin_hash_enc)
            .map_err(|_| status::INVALID_PARAMETER)?;
        self.retries -= 1;
        use subtle::ConstantTimeEq;
        if !bool::from(hash.as_slice().ct_eq(&self.pin_hash)) {
            self.key = EphemeralKey::generate();
            self.wrong_in_a_row += 1;
            return Err(if self.retries == 0 {
                status::PIN_BLOCKED
            } else if self.wrong_in_a_row >= 3 {
                status::PIN_AUTH_BLOCKED
            } else {
                status::PIN_INVALID
            });
        }
        self.retries = 8;
        self.wrong_in_a_row = 0;
        let mut token = [0u8; 32];
        aws_lc_rs::rand::fill(&mut token).expect("random token");
        let enc = protocol
            .encrypt(&shared, &token)
            .map_err(|_| status::OTHER)?;
        self.granted = Some(Granted {
            token,
            protocol,
            permissions,
            rp_id,
        });
        Ok(vec![(int(2), Value::Bytes(enc))])
    }

    /// Checks a makeCredential's or getAssertion's `pinUvAuthParam` over `client_data_hash`
    /// for `permission` on `rp_id`: the key's status when it does not pass.
    pub fn approve(
        &mut self,
        client_data_hash: &[u8],
        auth: &PinUvAuth,
        permission: u8,
        rp_id: &str,
    ) -> Result<(), u8> {
        let granted = self.granted.as_mut().ok_or(status::PIN_AUTH_INVALID)?;
        if u64::from(auth.protocol) != u64::from(granted.protocol.id())
            || !granted
                .protocol
                .verify(&granted.token, client_data_hash, &auth.param)
        {
            return Err(status::PIN_AUTH_INVALID);
        }
        if granted.permissions & permission == 0 {
            return Err(status::UNAUTHORIZED_PERMISSION);
        }
        // A CTAP 2.0 token is bound to no RP; a 2.1 token asked without one is bound to the
        // first it approves.
        match &granted.rp_id {
            _ if self.legacy => Ok(()),
            Some(bound) if bound != rp_id => Err(status::UNAUTHORIZED_PERMISSION),
            Some(_) => Ok(()),
            None => {
                granted.rp_id = Some(rp_id.to_string());
                Ok(())
            }
        }
    }
}
