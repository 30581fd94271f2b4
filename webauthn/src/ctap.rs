//! The client side of a FIDO2 security key, sans IO: CTAPHID framing (the 64-byte HID reports a
//! USB key speaks, FIDO CTAP 2.1 §11.2) and the CBOR of the two CTAP2 commands a WebAuthn client
//! needs, `authenticatorMakeCredential` (0x01) and `authenticatorGetAssertion` (0x02), with the
//! `pinUvAuthParam` that approves them when the user verified with the key's PIN. The caller
//! moves the reports to and from the device (`hop-platform`'s hidraw device on Linux) and
//! builds client data; this module turns requests into reports and reports into answers, and
//! never panics on what a device sends.
//!
//! The PIN/UV auth protocol that yields that parameter is in [`crate::pin`] (its cryptography)
//! and [`crate::client_pin`] (`authenticatorGetInfo` and the `authenticatorClientPIN`
//! subcommands); the client drives it (asks the PIN, gets a token, retries).

use ciborium::value::Value;

pub use crate::client_pin::PinUvAuth;

/// The size of a CTAPHID report.
pub const PACKET: usize = 64;
/// The channel every device listens on before `CTAPHID_INIT` allocates one.
pub const BROADCAST_CID: u32 = 0xffff_ffff;
/// The most payload one message carries (one init packet and 128 continuations).
pub const MAX_PAYLOAD: usize = (PACKET - 7) + 128 * (PACKET - 5);

/// CTAPHID commands (with the init-packet bit set).
pub mod cmd {
    pub const PING: u8 = 0x81;
    pub const MSG: u8 = 0x83;
    pub const INIT: u8 = 0x86;
    pub const WINK: u8 = 0x88;
    pub const CBOR: u8 = 0x90;
    pub const CANCEL: u8 = 0x91;
    pub const KEEPALIVE: u8 = 0xbb;
    pub const ERROR: u8 = 0xbf;
}

/// Why a CTAP exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CtapError {
    #[error("CTAPHID framing: {0}")]
    Framing(&'static str),
    #[error("the security key reported CTAPHID error 0x{0:02x}")]
    Hid(u8),
    #[error("the security key answered {name} (0x{0:02x})", name = status_name(*.0))]
    Status(u8),
    #[error("the security key's answer: {0}")]
    Response(String),
    #[error("the request is too large for CTAPHID ({0} bytes)")]
    TooLarge(usize),
    #[error(transparent)]
    Pin(#[from] crate::pin::PinError),
}

/// CTAP2 status codes the client and the test key act on (CTAP 2.1 §8.2).
pub mod status {
    pub const INVALID_COMMAND: u8 = 0x01;
    pub const INVALID_PARAMETER: u8 = 0x02;
    pub const INVALID_LENGTH: u8 = 0x03;
    pub const INVALID_CBOR: u8 = 0x11;
    pub const MISSING_PARAMETER: u8 = 0x14;
    pub const UNSUPPORTED_OPTION: u8 = 0x2b;
    pub const INVALID_OPTION: u8 = 0x2c;
    pub const PIN_INVALID: u8 = 0x31;
    pub const PIN_BLOCKED: u8 = 0x32;
    pub const PIN_AUTH_INVALID: u8 = 0x33;
    pub const PIN_AUTH_BLOCKED: u8 = 0x34;
    pub const PIN_NOT_SET: u8 = 0x35;
    /// `PUAT_REQUIRED` in CTAP 2.1, `PIN_REQUIRED` in 2.0.
    pub const PIN_REQUIRED: u8 = 0x36;
    pub const UV_BLOCKED: u8 = 0x3c;
    pub const INVALID_SUBCOMMAND: u8 = 0x3e;
    pub const UV_INVALID: u8 = 0x3f;
    pub const UNAUTHORIZED_PERMISSION: u8 = 0x40;
    pub const OTHER: u8 = 0x7f;
}

/// CTAP2 status codes a person may meet, by name.
#[must_use]
pub fn status_name(code: u8) -> &'static str {
    match code {
        0x01 => "invalid command",
        0x02 => "invalid parameter",
        0x03 => "invalid length",
        0x11 => "invalid CBOR",
        0x14 => "missing parameter",
        0x19 => "credential excluded: this key is already registered",
        0x26 => "unsupported algorithm",
        0x27 => "operation denied",
        0x2b => "unsupported option",
        0x2c => "invalid option",
        0x2d => "keepalive cancelled",
        0x2e => "no credentials: this key holds no credential for this cluster",
        0x2f => "user action timeout: the key was not touched in time",
        0x31 => "PIN invalid",
        0x32 => "PIN blocked: too many wrong PINs, the key must be reset",
        0x33 => "PIN auth invalid",
        0x34 => "PIN auth blocked: remove the key and plug it in again",
        0x35 => "PIN not set",
        0x36 => "PIN required",
        0x37 => "PIN policy violation",
        0x3c => "user verification blocked",
        0x3e => "invalid subcommand",
        0x3f => "user verification failed",
        0x40 => "unauthorized permission",
        _ => "an error",
    }
}

/// The reports that carry `payload` as command `command` on channel `cid` (each [`PACKET`]
/// bytes; a hidraw write prefixes report id 0).
pub fn frames(cid: u32, command: u8, payload: &[u8]) -> Result<Vec<[u8; PACKET]>, CtapError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(CtapError::TooLarge(payload.len()));
    }
    let len = u16::try_from(payload.len()).map_err(|_| CtapError::TooLarge(payload.len()))?;
    let mut out = Vec::new();
    let mut first = [0u8; PACKET];
    first[..4].copy_from_slice(&cid.to_be_bytes());
    first[4] = command | 0x80;
    first[5..7].copy_from_slice(&len.to_be_bytes());
    let (head, mut rest) = payload.split_at(payload.len().min(PACKET - 7));
    first[7..7 + head.len()].copy_from_slice(head);
    out.push(first);
    let mut seq = 0u8;
    while !rest.is_empty() {
        let mut p = [0u8; PACKET];
        p[..4].copy_from_slice(&cid.to_be_bytes());
        p[4] = seq;
        let (chunk, tail) = rest.split_at(rest.len().min(PACKET - 5));
        p[5..5 + chunk.len()].copy_from_slice(chunk);
        out.push(p);
        rest = tail;
        seq += 1;
    }
    Ok(out)
}

/// What one report did to a message being read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// More reports are needed (or this one was for another channel and ignored).
    More,
    /// The key is still working (1: processing, 2: waiting for a touch).
    KeepAlive(u8),
    /// The whole message: its command and payload.
    Done { command: u8, payload: Vec<u8> },
}

/// Reassembles one response on channel `cid` from the reports the device sends.
#[derive(Debug)]
pub struct Reassembler {
    cid: u32,
    command: u8,
    want: usize,
    data: Vec<u8>,
    next_seq: u8,
    started: bool,
}

impl Reassembler {
    #[must_use]
    pub fn new(cid: u32) -> Self {
        Self {
            cid,
            command: 0,
            want: 0,
            data: Vec::new(),
            next_seq: 0,
            started: false,
        }
    }

    /// Takes one report (64 bytes; a longer read is cut, a shorter one refused).
    pub fn push(&mut self, report: &[u8]) -> Result<Progress, CtapError> {
        let Some(report) = report.get(..PACKET) else {
            return Err(CtapError::Framing("a short report"));
        };
        let cid = u32::from_be_bytes([report[0], report[1], report[2], report[3]]);
        if cid != self.cid {
            return Ok(Progress::More);
        }
        let kind = report[4];
        if kind & 0x80 != 0 {
            if kind == cmd::KEEPALIVE {
                return Ok(Progress::KeepAlive(report[7]));
            }
            if kind == cmd::ERROR {
                return Err(CtapError::Hid(report[7]));
            }
            if self.started {
                return Err(CtapError::Framing(
                    "a new message before the last one ended",
                ));
            }
            let len = usize::from(u16::from_be_bytes([report[5], report[6]]));
            if len > MAX_PAYLOAD {
                return Err(CtapError::Framing("a message longer than CTAPHID allows"));
            }
            self.started = true;
            self.command = kind;
            self.want = len;
            let take = len.min(PACKET - 7);
            self.data.extend_from_slice(&report[7..7 + take]);
        } else {
            if !self.started {
                return Err(CtapError::Framing("a continuation before any init report"));
            }
            if kind != self.next_seq {
                return Err(CtapError::Framing("a continuation out of sequence"));
            }
            self.next_seq = self.next_seq.wrapping_add(1);
            let take = (self.want - self.data.len()).min(PACKET - 5);
            self.data.extend_from_slice(&report[5..5 + take]);
        }
        if self.data.len() >= self.want {
            self.started = false;
            return Ok(Progress::Done {
                command: self.command,
                payload: std::mem::take(&mut self.data),
            });
        }
        Ok(Progress::More)
    }
}

/// A device's answer to `CTAPHID_INIT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitResponse {
    pub cid: u32,
    pub protocol: u8,
    pub version: (u8, u8, u8),
    /// Bit 2 (0x04): the device speaks CTAP2 (CBOR).
    pub capabilities: u8,
}

impl InitResponse {
    /// Parses the payload of an `INIT` answer to `nonce` (an answer to another nonce is an
    /// error: it was for another client on the broadcast channel).
    pub fn parse(nonce: &[u8; 8], payload: &[u8]) -> Result<Self, CtapError> {
        let Some(p) = payload.get(..17) else {
            return Err(CtapError::Framing("a short INIT answer"));
        };
        if p[..8] != nonce[..] {
            return Err(CtapError::Framing("an INIT answer to another nonce"));
        }
        Ok(Self {
            cid: u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
            protocol: p[12],
            version: (p[13], p[14], p[15]),
            capabilities: p[16],
        })
    }

    #[must_use]
    pub fn speaks_cbor(&self) -> bool {
        self.capabilities & 0x04 != 0
    }
}

/// A relying party and user for `authenticatorMakeCredential`.
#[derive(Debug, Clone)]
pub struct MakeCredential<'a> {
    pub client_data_hash: &'a [u8],
    pub rp_id: &'a str,
    pub rp_name: &'a str,
    pub user_id: &'a [u8],
    pub user_name: &'a str,
    pub algorithms: &'a [i64],
    pub exclude: &'a [Vec<u8>],
    /// A discoverable credential (a passkey).
    pub resident_key: bool,
    /// The `uv` option: the key verifies the user itself (a fingerprint reader).
    pub user_verification: bool,
    /// The user verified with the key's PIN (left out with `uv`).
    pub pin_uv_auth: Option<PinUvAuth>,
}

/// `authenticatorGetAssertion`'s request.
#[derive(Debug, Clone)]
pub struct GetAssertion<'a> {
    pub rp_id: &'a str,
    pub client_data_hash: &'a [u8],
    /// Empty: the key offers its discoverable credentials for `rp_id`.
    pub allow: &'a [Vec<u8>],
    /// The `uv` option: the key verifies the user itself (a fingerprint reader).
    pub user_verification: bool,
    /// The user verified with the key's PIN (left out with `uv`).
    pub pin_uv_auth: Option<PinUvAuth>,
}

/// `authenticatorMakeCredential`'s answer, as a WebAuthn attestation object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MadeCredential {
    pub attestation_object: Vec<u8>,
}

/// `authenticatorGetAssertion`'s answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GotAssertion {
    /// Absent when the request allowed exactly one credential (the key may leave it out).
    pub credential_id: Option<Vec<u8>>,
    pub authenticator_data: Vec<u8>,
    pub signature: Vec<u8>,
    /// The user handle of a discoverable credential.
    pub user_handle: Option<Vec<u8>>,
}

/// The `clientDataJSON` a client (the CLI, standing in for a browser) sends for a ceremony
/// (`webauthn.create` or `webauthn.get`) answering `challenge` in `origin`.
#[must_use]
pub fn client_data_json(ceremony: &str, challenge: &[u8], origin: &str) -> Vec<u8> {
    use base64::Engine;
    let c = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(challenge);
    serde_json::json!({"type": ceremony, "challenge": c, "origin": origin, "crossOrigin": false})
        .to_string()
        .into_bytes()
}

/// SHA-256 of `data` (the client data hash an authenticator signs over).
#[must_use]
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn int(i: i64) -> Value {
    Value::Integer(i.into())
}

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

fn descriptor(id: &[u8]) -> Value {
    Value::Map(vec![
        (text("id"), Value::Bytes(id.to_vec())),
        (text("type"), text("public-key")),
    ])
}

fn encode(command: u8, map: Vec<(Value, Value)>) -> Vec<u8> {
    let mut out = vec![command];
    ciborium::ser::into_writer(&Value::Map(map), &mut out)
        .expect("CBOR of a request into a Vec cannot fail");
    out
}

/// The CTAPHID_CBOR payload of `authenticatorMakeCredential` (canonical CTAP2 CBOR: integer
/// keys ascending, text keys shorter first).
#[must_use]
pub fn encode_make_credential(r: &MakeCredential<'_>) -> Vec<u8> {
    let mut map = vec![
        (int(1), Value::Bytes(r.client_data_hash.to_vec())),
        (
            int(2),
            Value::Map(vec![
                (text("id"), text(r.rp_id)),
                (text("name"), text(r.rp_name)),
            ]),
        ),
        (
            int(3),
            Value::Map(vec![
                (text("id"), Value::Bytes(r.user_id.to_vec())),
                (text("name"), text(r.user_name)),
                (text("displayName"), text(r.user_name)),
            ]),
        ),
        (
            int(4),
            Value::Array(
                r.algorithms
                    .iter()
                    .map(|a| {
                        Value::Map(vec![
                            (text("alg"), int(*a)),
                            (text("type"), text("public-key")),
                        ])
                    })
                    .collect(),
            ),
        ),
    ];
    if !r.exclude.is_empty() {
        map.push((
            int(5),
            Value::Array(r.exclude.iter().map(|id| descriptor(id)).collect()),
        ));
    }
    let mut options = Vec::new();
    if r.resident_key {
        options.push((text("rk"), Value::Bool(true)));
    }
    if r.user_verification && r.pin_uv_auth.is_none() {
        options.push((text("uv"), Value::Bool(true)));
    }
    if !options.is_empty() {
        map.push((int(7), Value::Map(options)));
    }
    push_pin_uv_auth(&mut map, r.pin_uv_auth.as_ref(), 8);
    encode(0x01, map)
}

/// The CTAPHID_CBOR payload of `authenticatorGetAssertion`.
#[must_use]
pub fn encode_get_assertion(r: &GetAssertion<'_>) -> Vec<u8> {
    let mut map = vec![
        (int(1), text(r.rp_id)),
        (int(2), Value::Bytes(r.client_data_hash.to_vec())),
    ];
    if !r.allow.is_empty() {
        map.push((
            int(3),
            Value::Array(r.allow.iter().map(|id| descriptor(id)).collect()),
        ));
    }
    let mut options = vec![(text("up"), Value::Bool(true))];
    if r.user_verification && r.pin_uv_auth.is_none() {
        options.push((text("uv"), Value::Bool(true)));
    }
    map.push((int(5), Value::Map(options)));
    push_pin_uv_auth(&mut map, r.pin_uv_auth.as_ref(), 6);
    encode(0x02, map)
}

/// `pinUvAuthParam` and `pinUvAuthProtocol` under `key` and `key + 1`.
fn push_pin_uv_auth(map: &mut Vec<(Value, Value)>, auth: Option<&PinUvAuth>, key: i64) {
    if let Some(a) = auth {
        map.push((int(key), Value::Bytes(a.param.clone())));
        map.push((int(key + 1), int(i64::from(a.protocol))));
    }
}

/// The CBOR map of a CTAP2 answer (after its status byte), or the status as an error.
pub(crate) fn answer_map(payload: &[u8]) -> Result<Vec<(Value, Value)>, CtapError> {
    let (&status, body) = payload
        .split_first()
        .ok_or(CtapError::Framing("an empty CBOR answer"))?;
    if status != 0 {
        return Err(CtapError::Status(status));
    }
    let value: Value = ciborium::de::from_reader(body)
        .map_err(|e| CtapError::Response(format!("not CBOR: {e}")))?;
    match value {
        Value::Map(m) => Ok(m),
        _ => Err(CtapError::Response("not a CBOR map".into())),
    }
}

fn field(map: &[(Value, Value)], key: i64) -> Option<&Value> {
    map.iter().find_map(|(k, v)| match k {
        Value::Integer(i) if i128::from(*i) == i128::from(key) => Some(v),
        _ => None,
    })
}

fn text_field<'v>(map: &'v [(Value, Value)], key: &str) -> Option<&'v Value> {
    map.iter().find_map(|(k, v)| match k {
        Value::Text(t) if t == key => Some(v),
        _ => None,
    })
}

fn bytes(v: Option<&Value>, what: &str) -> Result<Vec<u8>, CtapError> {
    match v {
        Some(Value::Bytes(b)) => Ok(b.clone()),
        Some(_) => Err(CtapError::Response(format!("{what} is not a byte string"))),
        None => Err(CtapError::Response(format!("{what} is missing"))),
    }
}

/// Parses `authenticatorMakeCredential`'s answer (status byte first) into an attestation
/// object (`fmt`, `attStmt`, `authData`), as a browser hands it to the relying party.
pub fn parse_make_credential(payload: &[u8]) -> Result<MadeCredential, CtapError> {
    let map = answer_map(payload)?;
    let fmt = match field(&map, 1) {
        Some(Value::Text(t)) => t.clone(),
        _ => return Err(CtapError::Response("fmt is missing".into())),
    };
    let auth_data = bytes(field(&map, 2), "authData")?;
    let statement = match field(&map, 3) {
        Some(v @ Value::Map(_)) => v.clone(),
        _ => return Err(CtapError::Response("attStmt is missing".into())),
    };
    let object = Value::Map(vec![
        (text("fmt"), Value::Text(fmt)),
        (text("attStmt"), statement),
        (text("authData"), Value::Bytes(auth_data)),
    ]);
    let mut attestation_object = Vec::new();
    ciborium::ser::into_writer(&object, &mut attestation_object)
        .map_err(|e| CtapError::Response(e.to_string()))?;
    Ok(MadeCredential { attestation_object })
}

/// Parses `authenticatorGetAssertion`'s answer (status byte first).
pub fn parse_get_assertion(payload: &[u8]) -> Result<GotAssertion, CtapError> {
    let map = answer_map(payload)?;
    let credential_id = match field(&map, 1) {
        Some(Value::Map(c)) => Some(bytes(text_field(c, "id"), "credential id")?),
        Some(_) => return Err(CtapError::Response("credential is not a map".into())),
        None => None,
    };
    let user_handle = match field(&map, 4) {
        Some(Value::Map(u)) => Some(bytes(text_field(u, "id"), "user id")?),
        Some(_) => return Err(CtapError::Response("user is not a map".into())),
        None => None,
    };
    Ok(GotAssertion {
        credential_id,
        authenticator_data: bytes(field(&map, 2), "authData")?,
        signature: bytes(field(&map, 3), "signature")?,
        user_handle,
    })
}

/// Fuzz entry: every CTAP answer parser and the reassembler on arbitrary bytes.
pub fn fuzz_parse(data: &[u8]) {
    crate::client_pin::fuzz_parse(data);
    let _ = parse_make_credential(data);
    let _ = parse_get_assertion(data);
    let _ = InitResponse::parse(&[0; 8], data);
    let cid = data
        .get(..4)
        .map_or(0, |c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    let mut r = Reassembler::new(cid);
    for report in data.chunks(PACKET) {
        if r.push(report).is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{KeyKind, SoftKey};

    fn reassemble(cid: u32, reports: &[[u8; PACKET]]) -> (u8, Vec<u8>) {
        let mut r = Reassembler::new(cid);
        for (i, p) in reports.iter().enumerate() {
            match r.push(p).unwrap() {
                Progress::Done { command, payload } => {
                    assert_eq!(i, reports.len() - 1, "done early");
                    return (command, payload);
                }
                Progress::More => {}
                Progress::KeepAlive(_) => panic!("keepalive"),
            }
        }
        panic!("never done")
    }

    #[test]
    fn frames_round_trip_at_every_boundary() {
        for len in [0, 1, 56, 57, 58, 116, 117, 1000, MAX_PAYLOAD] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let reports = frames(0x0102_0304, cmd::CBOR, &payload).unwrap();
            let want = 1 + len.saturating_sub(57).div_ceil(59);
            assert_eq!(reports.len(), want, "len {len}");
            let (command, got) = reassemble(0x0102_0304, &reports);
            assert_eq!(command, cmd::CBOR);
            assert_eq!(got, payload, "len {len}");
        }
        assert_eq!(
            frames(1, cmd::CBOR, &vec![0; MAX_PAYLOAD + 1]),
            Err(CtapError::TooLarge(MAX_PAYLOAD + 1))
        );
    }

    #[test]
    fn a_recorded_init_exchange() {
        // CTAPHID_INIT on the broadcast channel, as a key answers it (recorded layout: nonce,
        // new channel 0x1a2b3c4d, protocol 2, firmware 5.4.3, capabilities WINK|CBOR).
        let nonce = [1, 2, 3, 4, 5, 6, 7, 8];
        let request = frames(BROADCAST_CID, cmd::INIT, &nonce).unwrap();
        assert_eq!(request.len(), 1);
        assert_eq!(
            &request[0][..15],
            &[0xff, 0xff, 0xff, 0xff, 0x86, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]
        );
        let mut answer = [0u8; PACKET];
        answer[..7].copy_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x86, 0x00, 0x11]);
        answer[7..24].copy_from_slice(&[
            1, 2, 3, 4, 5, 6, 7, 8, 0x1a, 0x2b, 0x3c, 0x4d, 2, 5, 4, 3, 0x05,
        ]);
        let (command, payload) = reassemble(BROADCAST_CID, &[answer]);
        assert_eq!(command, cmd::INIT);
        let init = InitResponse::parse(&nonce, &payload).unwrap();
        assert_eq!(init.cid, 0x1a2b_3c4d);
        assert_eq!(init.version, (5, 4, 3));
        assert!(init.speaks_cbor());
        assert!(InitResponse::parse(&[9; 8], &payload).is_err());
        for n in 0..payload.len().min(17) {
            assert!(InitResponse::parse(&nonce, &payload[..n]).is_err(), "{n}");
        }
    }

    #[test]
    fn the_reassembler_refuses_broken_framing() {
        let cid = 7;
        let reports = frames(cid, cmd::CBOR, &[0xaa; 200]).unwrap();
        // Another channel's reports are skipped.
        let mut r = Reassembler::new(cid);
        let other = frames(8, cmd::CBOR, &[1]).unwrap();
        assert_eq!(r.push(&other[0]).unwrap(), Progress::More);
        // A keepalive says what the key waits for; an error report is an error.
        let mut ka = [0u8; PACKET];
        ka[..8].copy_from_slice(&[0, 0, 0, 7, cmd::KEEPALIVE, 0, 1, 2]);
        assert_eq!(r.push(&ka).unwrap(), Progress::KeepAlive(2));
        let mut err = [0u8; PACKET];
        err[..8].copy_from_slice(&[0, 0, 0, 7, cmd::ERROR, 0, 1, 0x06]);
        assert_eq!(r.push(&err), Err(CtapError::Hid(6)));
        // A continuation first, out of order, or a second init mid-message.
        assert!(Reassembler::new(cid).push(&reports[1]).is_err());
        let mut r = Reassembler::new(cid);
        r.push(&reports[0]).unwrap();
        assert!(r.push(&reports[2]).is_err());
        let mut r = Reassembler::new(cid);
        r.push(&reports[0]).unwrap();
        assert!(r.push(&reports[0]).is_err());
        // A short report, and a length beyond what CTAPHID allows.
        assert!(Reassembler::new(cid).push(&reports[0][..63]).is_err());
        let mut big = reports[0];
        big[5..7].copy_from_slice(&u16::MAX.to_be_bytes());
        assert!(Reassembler::new(cid).push(&big).is_err());
    }

    /// A software key answering the CBOR a client sends, as a device would: the request is
    /// decoded from its frames, the answer framed back and parsed.
    fn device_answer(key: &mut SoftKey, request: &[u8]) -> Vec<u8> {
        let reports = frames(0x55, cmd::CBOR, request).unwrap();
        let (_, payload) = reassemble(0x55, &reports);
        let (&command, body) = payload.split_first().unwrap();
        let req: Value = ciborium::de::from_reader(body).unwrap();
        let Value::Map(req) = req else { panic!() };
        let hash = bytes(field(&req, if command == 1 { 1 } else { 2 }), "hash").unwrap();
        let answer = if command == 1 {
            let object: Value = ciborium::de::from_reader(&key.make_credential(&hash)[..]).unwrap();
            let Value::Map(o) = object else { panic!() };
            Value::Map(vec![
                (int(1), text_field(&o, "fmt").unwrap().clone()),
                (int(2), text_field(&o, "authData").unwrap().clone()),
                (int(3), text_field(&o, "attStmt").unwrap().clone()),
            ])
        } else {
            let (auth_data, sig) = key.get_assertion(&hash);
            Value::Map(vec![
                (int(1), descriptor(&key.credential_id)),
                (int(2), Value::Bytes(auth_data)),
                (int(3), Value::Bytes(sig)),
                (
                    int(4),
                    Value::Map(vec![(text("id"), Value::Bytes(vec![9; 16]))]),
                ),
            ])
        };
        let mut out = vec![0];
        ciborium::ser::into_writer(&answer, &mut out).unwrap();
        let (_, back) = reassemble(0x55, &frames(0x55, cmd::CBOR, &out).unwrap());
        back
    }

    #[test]
    fn a_key_registers_and_asserts_through_the_codec() {
        let mut key = SoftKey::new(KeyKind::Es256, "hop.example", "https://hop.example");
        let challenge = [3u8; 32];
        let client_data =
            crate::testkit::client_data("webauthn.create", &challenge, "https://hop.example");
        let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &client_data);
        let request = encode_make_credential(&MakeCredential {
            client_data_hash: hash.as_ref(),
            rp_id: "hop.example",
            rp_name: "test",
            user_id: &[9; 16],
            user_name: "kim",
            algorithms: &crate::SUPPORTED_ALGORITHMS,
            exclude: &[vec![1, 2, 3]],
            resident_key: true,
            user_verification: false,
            pin_uv_auth: None,
        });
        assert_eq!(request[0], 0x01);
        let answer = device_answer(&mut key, &request);
        let made = parse_make_credential(&answer).unwrap();
        let registered = crate::verify_registration(
            &crate::Registration {
                client_data_json: &client_data,
                attestation_object: &made.attestation_object,
            },
            &crate::RegistrationCheck {
                challenge: &challenge,
                origins: &["https://hop.example".to_string()],
                rp_id: "hop.example",
                require_user_verification: false,
            },
        )
        .unwrap();
        assert_eq!(registered.credential_id, key.credential_id);
        // Every prefix of the answer is refused, never a panic.
        for n in 0..answer.len() {
            assert!(parse_make_credential(&answer[..n]).is_err(), "prefix {n}");
        }

        let client_data =
            crate::testkit::client_data("webauthn.get", &challenge, "https://hop.example");
        let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &client_data);
        let request = encode_get_assertion(&GetAssertion {
            rp_id: "hop.example",
            client_data_hash: hash.as_ref(),
            allow: &[key.credential_id.clone()],
            user_verification: true,
            pin_uv_auth: None,
        });
        assert_eq!(request[0], 0x02);
        let answer = device_answer(&mut key, &request);
        let got = parse_get_assertion(&answer).unwrap();
        assert_eq!(got.credential_id.as_deref(), Some(&key.credential_id[..]));
        assert_eq!(got.user_handle.as_deref(), Some(&[9u8; 16][..]));
        let counter = crate::verify_assertion(
            &crate::Assertion {
                credential_id: &key.credential_id,
                client_data_json: &client_data,
                authenticator_data: &got.authenticator_data,
                signature: &got.signature,
            },
            &crate::AssertionCheck {
                challenge: &challenge,
                origins: &["https://hop.example".to_string()],
                rp_id: "hop.example",
                require_user_verification: true,
                credential_id: &key.credential_id,
                public_key_cbor: &registered.public_key_cbor,
                stored_count: 0,
            },
        )
        .unwrap();
        assert_eq!(counter, 1);
        for n in 0..answer.len() {
            assert!(parse_get_assertion(&answer[..n]).is_err(), "prefix {n}");
        }
    }

    #[test]
    fn requests_are_canonical_cbor() {
        let request = encode_get_assertion(&GetAssertion {
            rp_id: "a",
            client_data_hash: &[0; 32],
            allow: &[],
            user_verification: false,
            pin_uv_auth: None,
        });
        // {1: "a", 2: h'00'*32, 5: {"up": true}}
        let mut want = vec![0x02, 0xa3, 0x01, 0x61, b'a', 0x02, 0x58, 0x20];
        want.extend_from_slice(&[0; 32]);
        want.extend_from_slice(&[0x05, 0xa1, 0x62, b'u', b'p', 0xf5]);
        assert_eq!(request, want);
    }

    #[test]
    fn a_pin_approval_replaces_the_uv_option() {
        let auth = PinUvAuth {
            param: vec![0xab; 32],
            protocol: 2,
        };
        let request = encode_get_assertion(&GetAssertion {
            rp_id: "a",
            client_data_hash: &[0; 32],
            allow: &[],
            user_verification: true,
            pin_uv_auth: Some(auth.clone()),
        });
        // {1: "a", 2: h'00'*32, 5: {"up": true}, 6: h'ab'*32, 7: 2}
        let mut want = vec![0x02, 0xa5, 0x01, 0x61, b'a', 0x02, 0x58, 0x20];
        want.extend_from_slice(&[0; 32]);
        want.extend_from_slice(&[0x05, 0xa1, 0x62, b'u', b'p', 0xf5, 0x06, 0x58, 0x20]);
        want.extend_from_slice(&[0xab; 32]);
        want.extend_from_slice(&[0x07, 0x02]);
        assert_eq!(request, want);

        let request = encode_make_credential(&MakeCredential {
            client_data_hash: &[0; 32],
            rp_id: "a",
            rp_name: "a",
            user_id: &[1],
            user_name: "u",
            algorithms: &[-7],
            exclude: &[],
            resident_key: false,
            user_verification: true,
            pin_uv_auth: Some(auth),
        });
        let Value::Map(m) = ciborium::de::from_reader(&request[1..]).unwrap() else {
            panic!()
        };
        let keys: Vec<i64> = m
            .iter()
            .map(|(k, _)| i64::try_from(i128::from(k.as_integer().unwrap())).unwrap())
            .collect();
        assert_eq!(keys, [1, 2, 3, 4, 8, 9]);
        assert_eq!(field(&m, 8), Some(&Value::Bytes(vec![0xab; 32])));
        assert_eq!(field(&m, 9), Some(&int(2)));
    }

    #[test]
    fn malformed_answers_are_refused_by_name() {
        assert_eq!(
            parse_get_assertion(&[]),
            Err(CtapError::Framing("an empty CBOR answer"))
        );
        assert_eq!(parse_get_assertion(&[0x2e]), Err(CtapError::Status(0x2e)));
        assert!(
            CtapError::Status(0x2e)
                .to_string()
                .contains("no credentials")
        );
        // Not a map; a map without authData; a signature of the wrong type.
        assert!(parse_get_assertion(&[0, 0x01]).is_err());
        assert!(parse_get_assertion(&[0, 0xa0]).is_err());
        let mut bad = vec![0];
        let v = Value::Map(vec![(int(2), Value::Bytes(vec![1])), (int(3), text("x"))]);
        ciborium::ser::into_writer(&v, &mut bad).unwrap();
        assert!(parse_get_assertion(&bad).is_err());
        let mut bad = vec![0];
        let v = Value::Map(vec![(int(1), text("fmt")), (int(2), Value::Bytes(vec![]))]);
        ciborium::ser::into_writer(&v, &mut bad).unwrap();
        assert!(parse_make_credential(&bad).is_err());
        // Trailing garbage after the status, and deep nesting, never panic.
        fuzz_parse(&[0, 0x9f, 0x9f, 0x9f, 0x9f]);
        fuzz_parse(&[0xff; 300]);
    }
}
