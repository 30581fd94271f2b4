//! The CBOR of `authenticatorGetInfo` (0x04) and of the `authenticatorClientPIN` (0x06)
//! subcommands a client needs to get a PIN/UV auth token (CTAP 2.1 §6.4, §6.5.5): the PIN
//! retries left, the key's key agreement key, and a token, by `getPinToken` (CTAP 2.0 keys,
//! protocol one) or by `getPinUvAuthTokenUsingPinWithPermissions` (CTAP 2.1 keys: the token is
//! bound to permissions and an RP ID). Sans IO like [`crate::ctap`]: requests out, answers
//! (status byte first) in, an error for anything a key sends that is not what CTAP says.
//!
//! Not built: setting or changing a PIN (`setPIN`, `changePIN`; the vendor's tool does that),
//! and tokens from built-in user verification (`getPinUvAuthTokenUsingUvWithPermissions`; a key
//! with a fingerprint reader is asked for `uv` directly).

use ciborium::value::Value;
use zeroize::Zeroizing;

use crate::cbor;
use crate::ctap::{CtapError, answer_map};
use crate::pin::{AgreementKey, EphemeralKey, Pin, PinProtocol, SharedSecret};

/// The `authenticatorGetInfo` command byte.
pub const GET_INFO: u8 = 0x04;
/// The `authenticatorClientPIN` command byte.
pub const CLIENT_PIN: u8 = 0x06;

/// `authenticatorClientPIN` subcommands.
pub mod sub {
    pub const GET_PIN_RETRIES: u8 = 0x01;
    pub const GET_KEY_AGREEMENT: u8 = 0x02;
    pub const GET_PIN_TOKEN: u8 = 0x05;
    pub const GET_TOKEN_WITH_PERMISSIONS: u8 = 0x09;
}

/// What a key says of itself (`authenticatorGetInfo`), the parts a client needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Info {
    /// `FIDO_2_0`, `FIDO_2_1`, `U2F_V2`, ...
    pub versions: Vec<String>,
    pub aaguid: Vec<u8>,
    /// Options and their values (`clientPin`, `uv`, `pinUvAuthToken`, `rk`, ...).
    pub options: Vec<(String, bool)>,
    /// The PIN/UV auth protocols the key speaks, in its order of preference.
    pub pin_uv_auth_protocols: Vec<u64>,
}

impl Info {
    /// An option's value; `None` when the key does not list it (it lacks the feature).
    #[must_use]
    pub fn option(&self, name: &str) -> Option<bool> {
        self.options
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
    }

    /// The protocol to use: two when the key offers it, else one (a CTAP 2.0 key that lists
    /// none speaks one); `None` when it offers only protocols Hop does not speak.
    #[must_use]
    pub fn pin_protocol(&self) -> Option<PinProtocol> {
        if self.pin_uv_auth_protocols.is_empty() {
            return Some(PinProtocol::One);
        }
        [2, 1]
            .into_iter()
            .find(|p| self.pin_uv_auth_protocols.contains(p))
            .and_then(PinProtocol::from_id)
    }

    /// Whether the key hands out tokens bound to permissions (CTAP 2.1, `pinUvAuthToken`).
    #[must_use]
    pub fn tokens_with_permissions(&self) -> bool {
        self.option("pinUvAuthToken") == Some(true)
    }
}

fn int(i: i64) -> Value {
    Value::Integer(i.into())
}

fn encode(command: u8, map: Vec<(Value, Value)>) -> Vec<u8> {
    let mut out = vec![command];
    ciborium::ser::into_writer(&Value::Map(map), &mut out)
        .expect("CBOR of a request into a Vec cannot fail");
    out
}

fn bad(e: String) -> CtapError {
    CtapError::Response(e)
}

/// The request `authenticatorGetInfo` (no parameters).
#[must_use]
pub fn encode_get_info() -> Vec<u8> {
    vec![GET_INFO]
}

fn text_list(v: &Value, what: &str) -> Result<Vec<String>, CtapError> {
    match v {
        Value::Array(a) => a
            .iter()
            .map(|x| cbor::as_text(x, what).map(str::to_string).map_err(bad))
            .collect(),
        _ => Err(bad(format!("{what} is not an array"))),
    }
}

fn options(v: &Value) -> Result<Vec<(String, bool)>, CtapError> {
    let entries = cbor::map(v).map_err(|_| bad("options is not a map".into()))?;
    entries
        .iter()
        .map(|(k, v)| {
            let name = cbor::as_text(k, "an option name").map_err(bad)?;
            match v {
                Value::Bool(b) => Ok((name.to_string(), *b)),
                _ => Err(bad(format!("option {name} is not a boolean"))),
            }
        })
        .collect()
}

fn protocols(v: &Value) -> Result<Vec<u64>, CtapError> {
    match v {
        Value::Array(a) => a
            .iter()
            .map(|x| {
                let i = cbor::as_int(x, "a PIN protocol").map_err(bad)?;
                u64::try_from(i).map_err(|_| bad("a negative PIN protocol".into()))
            })
            .collect(),
        _ => Err(bad("pinUvAuthProtocols is not an array".into())),
    }
}

/// Parses `authenticatorGetInfo`'s answer; `versions` and `aaguid` are required, the rest
/// optional, fields this client does not use are skipped.
pub fn parse_get_info(payload: &[u8]) -> Result<Info, CtapError> {
    let map = answer_map(payload)?;
    let get = |k: i64| cbor::by_int(&map, k).map_err(bad);
    let versions = text_list(
        get(1)?.ok_or_else(|| bad("versions is missing".into()))?,
        "a version",
    )?;
    let aaguid = cbor::as_bytes(
        get(3)?.ok_or_else(|| bad("aaguid is missing".into()))?,
        "aaguid",
    )
    .map_err(bad)?
    .to_vec();
    if aaguid.len() != 16 {
        return Err(bad(format!("aaguid has {} bytes, not 16", aaguid.len())));
    }
    Ok(Info {
        versions,
        aaguid,
        options: get(4)?.map(options).transpose()?.unwrap_or_default(),
        pin_uv_auth_protocols: get(6)?.map(protocols).transpose()?.unwrap_or_default(),
    })
}

fn client_pin(protocol: PinProtocol, sub: u8, mut rest: Vec<(Value, Value)>) -> Vec<u8> {
    let mut map = vec![
        (int(1), int(i64::from(protocol.id()))),
        (int(2), int(i64::from(sub))),
    ];
    map.append(&mut rest);
    encode(CLIENT_PIN, map)
}

/// `getPINRetries`.
#[must_use]
pub fn encode_get_retries(protocol: PinProtocol) -> Vec<u8> {
    client_pin(protocol, sub::GET_PIN_RETRIES, vec![])
}

/// Parses `getPINRetries`' answer: the PIN tries left before the key locks.
pub fn parse_retries(payload: &[u8]) -> Result<u64, CtapError> {
    let map = answer_map(payload)?;
    let v = cbor::by_int(&map, 3)
        .map_err(bad)?
        .ok_or_else(|| bad("pinRetries is missing".into()))?;
    let n = cbor::as_int(v, "pinRetries").map_err(bad)?;
    u64::try_from(n).map_err(|_| bad("pinRetries is negative".into()))
}

/// `getKeyAgreement`.
#[must_use]
pub fn encode_get_key_agreement(protocol: PinProtocol) -> Vec<u8> {
    client_pin(protocol, sub::GET_KEY_AGREEMENT, vec![])
}

/// Parses `getKeyAgreement`'s answer: the key's key agreement key.
pub fn parse_key_agreement(payload: &[u8]) -> Result<AgreementKey, CtapError> {
    let map = answer_map(payload)?;
    let v = cbor::by_int(&map, 1)
        .map_err(bad)?
        .ok_or_else(|| bad("keyAgreement is missing".into()))?;
    Ok(AgreementKey::from_cose(v)?)
}

/// What a token may be used for, where the key binds tokens to permissions (CTAP 2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permissions<'a> {
    /// [`crate::pin::permission`] bits.
    pub bits: u8,
    pub rp_id: &'a str,
}

/// `pinUvAuthParam` and `pinUvAuthProtocol` of a makeCredential or getAssertion request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinUvAuth {
    pub param: Vec<u8>,
    pub protocol: u8,
}

/// A PIN/UV auth token the key gave; zeroed when dropped.
pub struct PinUvToken {
    protocol: PinProtocol,
    token: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for PinUvToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PinUvToken({:?}, ..)", self.protocol)
    }
}

impl PinUvToken {
    /// What approves a makeCredential or getAssertion over `client_data_hash`:
    /// `authenticate(token, clientDataHash)`.
    #[must_use]
    pub fn auth(&self, client_data_hash: &[u8]) -> PinUvAuth {
        PinUvAuth {
            param: self.protocol.authenticate(&self.token, client_data_hash),
            protocol: self.protocol.id(),
        }
    }
}

/// One exchange of a PIN for a token: started from the key's key agreement key, finished with
/// the key's answer to the request [`TokenExchange::start`] made.
pub struct TokenExchange {
    protocol: PinProtocol,
    shared: SharedSecret,
}

impl std::fmt::Debug for TokenExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenExchange({:?}, ..)", self.protocol)
    }
}

impl TokenExchange {
    /// The request for a token with `pin`, given the key's key agreement key `theirs` and the
    /// client's fresh key `ours`: `getPinUvAuthTokenUsingPinWithPermissions` when
    /// `permissions` are given, else `getPinToken`.
    pub fn start(
        protocol: PinProtocol,
        theirs: &AgreementKey,
        ours: &EphemeralKey,
        pin: &Pin,
        permissions: Option<Permissions<'_>>,
    ) -> Result<(Self, Vec<u8>), CtapError> {
        let shared = ours.agree(protocol, theirs);
        let pin_hash_enc = protocol.encrypt(&shared, &pin.hash16()[..])?;
        let mut rest = vec![
            (int(3), ours.public().to_cose()),
            (int(6), Value::Bytes(pin_hash_enc)),
        ];
        let sub = match permissions {
            Some(p) => {
                rest.push((int(9), int(i64::from(p.bits))));
                rest.push((int(10), Value::Text(p.rp_id.to_string())));
                sub::GET_TOKEN_WITH_PERMISSIONS
            }
            None => sub::GET_PIN_TOKEN,
        };
        Ok((Self { protocol, shared }, client_pin(protocol, sub, rest)))
    }

    /// The token in the key's answer (a wrong PIN is the key's status, `PIN_INVALID`).
    pub fn finish(self, payload: &[u8]) -> Result<PinUvToken, CtapError> {
        let map = answer_map(payload)?;
        let v = cbor::by_int(&map, 2)
            .map_err(bad)?
            .ok_or_else(|| bad("pinUvAuthToken is missing".into()))?;
        let enc = cbor::as_bytes(v, "pinUvAuthToken").map_err(bad)?;
        let token = self.protocol.decrypt(&self.shared, enc)?;
        // Protocol one tokens are 16 or 32 bytes, protocol two's 32.
        let ok = match self.protocol {
            PinProtocol::One => token.len() == 16 || token.len() == 32,
            PinProtocol::Two => token.len() == 32,
        };
        if !ok {
            return Err(bad(format!("a token of {} bytes", token.len())));
        }
        Ok(PinUvToken {
            protocol: self.protocol,
            token,
        })
    }
}

/// Fuzz entry: the getInfo and clientPIN answer parsers on arbitrary bytes (the token's under
/// a fixed shared secret: no key agreement per input, which would slow the fuzzer a hundredfold).
pub fn fuzz_parse(data: &[u8]) {
    let _ = parse_get_info(data);
    let _ = parse_retries(data);
    let _ = parse_key_agreement(data);
    for protocol in [PinProtocol::One, PinProtocol::Two] {
        let exchange = TokenExchange {
            protocol,
            shared: protocol.kdf(&[0x42; 32]),
        };
        let _ = exchange.finish(data);
    }
}
