//! The client's side of getInfo and clientPIN against the test key's side: whole exchanges in
//! both protocols, wrong PINs, blocked PINs, and every prefix and malformed form of each
//! answer the client parses.

use ciborium::value::Value;
use zeroize::Zeroizing;

use crate::client_pin::{
    Info, Permissions, TokenExchange, encode_get_info, encode_get_key_agreement,
    encode_get_retries, parse_get_info, parse_key_agreement, parse_retries,
};
use crate::ctap::{CtapError, status};
use crate::pin::{EphemeralKey, Pin, PinProtocol, permission};
use crate::testkit::{SoftPin, get_info};

fn pin(s: &str) -> Pin {
    Pin::new(Zeroizing::new(s.to_string())).unwrap()
}

fn cbor_answer(v: &Value) -> Vec<u8> {
    let mut out = vec![0];
    ciborium::ser::into_writer(v, &mut out).unwrap();
    out
}

fn int(i: i64) -> Value {
    Value::Integer(i.into())
}

/// A token exchange with `key`, returning the key's answer and the exchange to finish.
fn ask(
    key: &mut SoftPin,
    protocol: PinProtocol,
    typed: &str,
    permissions: Option<Permissions<'_>>,
) -> (TokenExchange, Vec<u8>) {
    let theirs = parse_key_agreement(&key.handle(&encode_get_key_agreement(protocol))).unwrap();
    let ours = EphemeralKey::generate();
    let (exchange, request) =
        TokenExchange::start(protocol, &theirs, &ours, &pin(typed), permissions).unwrap();
    (exchange, key.handle(&request))
}

fn every_prefix_fails<T: std::fmt::Debug>(
    answer: &[u8],
    parse: impl Fn(&[u8]) -> Result<T, CtapError>,
) {
    for n in 0..answer.len() {
        assert!(parse(&answer[..n]).is_err(), "prefix {n} of {answer:02x?}");
    }
}

#[test]
fn get_info_reads_what_a_key_says_of_itself() {
    assert_eq!(encode_get_info(), vec![0x04]);
    let with_pin = SoftPin::new("1234");
    let answer = get_info(Some(&with_pin));
    let info = parse_get_info(&answer).unwrap();
    assert_eq!(info.versions, ["FIDO_2_0", "FIDO_2_1"]);
    assert_eq!(info.option("clientPin"), Some(true));
    assert_eq!(info.option("uv"), None);
    assert!(info.tokens_with_permissions());
    assert_eq!(info.pin_protocol(), Some(PinProtocol::Two));
    every_prefix_fails(&answer, parse_get_info);

    let info = parse_get_info(&get_info(None)).unwrap();
    assert_eq!(info.option("uv"), Some(true));
    assert_eq!(info.option("clientPin"), None);

    let mut legacy = SoftPin::new("1234");
    legacy.legacy = true;
    let info = parse_get_info(&get_info(Some(&legacy))).unwrap();
    assert!(!info.tokens_with_permissions());
    assert_eq!(info.pin_protocol(), Some(PinProtocol::One));
    // A 2.0 key that lists no protocol speaks one; a key with only unknown ones, none.
    let bare = Info::default();
    assert_eq!(bare.pin_protocol(), Some(PinProtocol::One));
    let odd = Info {
        pin_uv_auth_protocols: vec![7],
        ..Info::default()
    };
    assert_eq!(odd.pin_protocol(), None);
}

#[test]
fn malformed_get_info_answers_are_refused() {
    let aaguid = Value::Bytes(vec![0; 16]);
    let versions = Value::Array(vec![Value::Text("FIDO_2_0".into())]);
    let good = vec![(int(1), versions.clone()), (int(3), aaguid.clone())];
    assert!(parse_get_info(&cbor_answer(&Value::Map(good.clone()))).is_ok());
    let spoiled = |k: i64, v: Value| {
        let mut m = good.clone();
        m.retain(|(key, _)| *key != int(k));
        m.push((int(k), v));
        cbor_answer(&Value::Map(m))
    };
    for bad in [
        spoiled(1, Value::Text("FIDO_2_0".into())),
        spoiled(1, Value::Array(vec![int(2)])),
        spoiled(3, Value::Bytes(vec![0; 15])),
        spoiled(3, Value::Text("x".into())),
        spoiled(4, Value::Array(vec![])),
        spoiled(4, Value::Map(vec![(int(1), Value::Bool(true))])),
        spoiled(4, Value::Map(vec![(Value::Text("uv".into()), int(1))])),
        spoiled(6, Value::Map(vec![])),
        spoiled(6, Value::Array(vec![int(-1)])),
        spoiled(6, Value::Array(vec![Value::Text("2".into())])),
        cbor_answer(&Value::Map(vec![(int(3), aaguid.clone())])),
        cbor_answer(&Value::Map(vec![(int(1), versions.clone())])),
        cbor_answer(&Value::Array(vec![])),
    ] {
        assert!(parse_get_info(&bad).is_err(), "{bad:02x?}");
    }
    // A key listed twice, and a status other than success.
    let mut twice = good.clone();
    twice.push((int(1), versions));
    assert!(parse_get_info(&cbor_answer(&Value::Map(twice))).is_err());
    assert_eq!(parse_get_info(&[0x01]), Err(CtapError::Status(0x01)));
}

fn token_round(protocol: PinProtocol, legacy: bool) {
    let mut key = SoftPin::new("1234");
    key.legacy = legacy;
    let permissions = (!legacy).then_some(Permissions {
        bits: permission::GET_ASSERTION,
        rp_id: "hop.example",
    });
    let (exchange, answer) = ask(&mut key, protocol, "1234", permissions);
    let token = exchange.finish(&answer).unwrap();
    let hash = [5u8; 32];
    let auth = token.auth(&hash);
    assert_eq!(auth.protocol, protocol.id());
    assert_eq!(
        auth.param.len(),
        if protocol == PinProtocol::One { 16 } else { 32 }
    );
    assert_eq!(
        key.approve(&hash, &auth, permission::GET_ASSERTION, "hop.example"),
        Ok(())
    );
    // Another hash, a cut MAC, another protocol, another RP or permission: refused.
    assert_eq!(
        key.approve(&[6; 32], &auth, permission::GET_ASSERTION, "hop.example"),
        Err(status::PIN_AUTH_INVALID)
    );
    let mut cut = auth.clone();
    cut.param.truncate(8);
    assert!(
        key.approve(&hash, &cut, permission::GET_ASSERTION, "hop.example")
            .is_err()
    );
    let mut other = auth.clone();
    other.protocol = 3 - other.protocol;
    assert!(
        key.approve(&hash, &other, permission::GET_ASSERTION, "hop.example")
            .is_err()
    );
    // A 2.1 token is for its RP and permission only; a 2.0 token for any.
    assert_eq!(
        key.approve(&hash, &auth, permission::GET_ASSERTION, "evil.example"),
        if legacy {
            Ok(())
        } else {
            Err(status::UNAUTHORIZED_PERMISSION)
        }
    );
    if !legacy {
        assert_eq!(
            key.approve(&hash, &auth, permission::MAKE_CREDENTIAL, "hop.example"),
            Err(status::UNAUTHORIZED_PERMISSION)
        );
    }
    every_prefix_fails(&answer, |a| {
        let (exchange, _) = ask(&mut SoftPin::new("1234"), protocol, "1234", None);
        exchange.finish(a)
    });
}

#[test]
fn the_right_pin_yields_a_token_that_approves_a_ceremony() {
    token_round(PinProtocol::Two, false);
    token_round(PinProtocol::One, false);
    token_round(PinProtocol::One, true);
}

#[test]
fn wrong_pins_count_down_and_block() {
    let mut key = SoftPin::new("1234");
    let retries = |key: &mut SoftPin| {
        let answer = key.handle(&encode_get_retries(PinProtocol::Two));
        every_prefix_fails(&answer, parse_retries);
        parse_retries(&answer).unwrap()
    };
    assert_eq!(retries(&mut key), 8);
    for left in [7, 6] {
        let (exchange, answer) = ask(&mut key, PinProtocol::Two, "0000", None);
        assert_eq!(answer, vec![status::PIN_INVALID]);
        assert_eq!(
            exchange.finish(&answer).unwrap_err(),
            CtapError::Status(status::PIN_INVALID)
        );
        assert_eq!(retries(&mut key), left);
    }
    // The third in a row blocks the PIN until the key is plugged in again.
    let (_, answer) = ask(&mut key, PinProtocol::Two, "0000", None);
    assert_eq!(answer, vec![status::PIN_AUTH_BLOCKED]);
    let (_, answer) = ask(&mut key, PinProtocol::Two, "1234", None);
    assert_eq!(answer, vec![status::PIN_AUTH_BLOCKED]);
    // Plugged in again (the state a key keeps across power), the right PIN resets the count.
    let mut key = SoftPin::from_state(key.pin_hash(), key.retries);
    assert_eq!(retries(&mut key), 5);
    let (exchange, answer) = ask(&mut key, PinProtocol::Two, "1234", None);
    assert!(exchange.finish(&answer).is_ok());
    assert_eq!(retries(&mut key), 8);
    // The last try used up blocks the PIN for good.
    let mut key = SoftPin::from_state(key.pin_hash(), 1);
    let (_, answer) = ask(&mut key, PinProtocol::Two, "0000", None);
    assert_eq!(answer, vec![status::PIN_BLOCKED]);
    let (_, answer) = ask(&mut key, PinProtocol::Two, "1234", None);
    assert_eq!(answer, vec![status::PIN_BLOCKED]);
}

#[test]
fn malformed_client_pin_answers_are_refused() {
    // A key agreement answer without its key, or with a key that is no P-256 point.
    assert!(parse_key_agreement(&cbor_answer(&Value::Map(vec![]))).is_err());
    assert!(parse_key_agreement(&cbor_answer(&Value::Map(vec![(int(1), int(1))]))).is_err());
    let key = EphemeralKey::from_bytes(&[9; 32])
        .unwrap()
        .public()
        .to_cose();
    let answer = cbor_answer(&Value::Map(vec![(int(1), key)]));
    assert!(parse_key_agreement(&answer).is_ok());
    every_prefix_fails(&answer, parse_key_agreement);
    // Retries that are negative or text.
    assert!(parse_retries(&cbor_answer(&Value::Map(vec![(int(3), int(-1))]))).is_err());
    assert!(
        parse_retries(&cbor_answer(&Value::Map(vec![(
            int(3),
            Value::Text("8".into())
        )])))
        .is_err()
    );
    assert!(parse_retries(&cbor_answer(&Value::Map(vec![]))).is_err());
    // A token that is missing, not bytes, not whole blocks, or of a size no key gives.
    let mut soft = SoftPin::new("1234");
    for bad in [
        Value::Map(vec![]),
        Value::Map(vec![(int(2), int(5))]),
        Value::Map(vec![(int(2), Value::Bytes(vec![0; 40]))]),
        Value::Map(vec![(int(2), Value::Bytes(vec![0; 16 + 48]))]),
        Value::Map(vec![(int(2), Value::Bytes(vec![0; 16]))]),
    ] {
        let (exchange, _) = ask(&mut soft, PinProtocol::Two, "1234", None);
        assert!(exchange.finish(&cbor_answer(&bad)).is_err(), "{bad:?}");
    }
    crate::fuzz::parse_ctap(&[0, 0xa1, 0x02, 0x58, 0x30]);
    crate::fuzz::parse_ctap(&[0, 0xa1, 0x01, 0xa5, 0x01, 0x02]);
}

#[test]
fn requests_carry_the_fields_ctap_names() {
    let decode = |req: &[u8]| -> Vec<(Value, Value)> {
        assert_eq!(req[0], 0x06);
        let Value::Map(m) = ciborium::de::from_reader(&req[1..]).unwrap() else {
            panic!()
        };
        m
    };
    // {1: 2, 2: 1}
    assert_eq!(
        encode_get_retries(PinProtocol::Two),
        [0x06, 0xa2, 0x01, 0x02, 0x02, 0x01]
    );
    assert_eq!(
        encode_get_key_agreement(PinProtocol::One),
        [0x06, 0xa2, 0x01, 0x01, 0x02, 0x02]
    );
    let theirs = EphemeralKey::from_bytes(&[1; 32]).unwrap().public();
    let ours = EphemeralKey::from_bytes(&[2; 32]).unwrap();
    let perms = Permissions {
        bits: permission::MAKE_CREDENTIAL,
        rp_id: "hop.example",
    };
    let (_, req) =
        TokenExchange::start(PinProtocol::Two, &theirs, &ours, &pin("1234"), Some(perms)).unwrap();
    let m = decode(&req);
    let keys: Vec<Value> = m.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(keys, [int(1), int(2), int(3), int(6), int(9), int(10)]);
    assert_eq!(m[1].1, int(9));
    assert_eq!(m[2].1, ours.public().to_cose());
    // pinHashEnc is LEFT(SHA-256(PIN), 16) under the shared secret: IV + one block.
    let Value::Bytes(enc) = &m[3].1 else { panic!() };
    assert_eq!(enc.len(), 32);
    let shared = ours.agree(PinProtocol::Two, &theirs);
    assert_eq!(
        &PinProtocol::Two.decrypt(&shared, enc).unwrap()[..],
        &pin("1234").hash16()[..]
    );
    assert_eq!(m[4].1, int(1));
    assert_eq!(m[5].1, Value::Text("hop.example".into()));
    let (_, req) =
        TokenExchange::start(PinProtocol::One, &theirs, &ours, &pin("1234"), None).unwrap();
    let m = decode(&req);
    assert_eq!(m.len(), 4);
    assert_eq!(m[1].1, int(5));
}

#[test]
fn the_fuzz_seeds_are_answers_the_parsers_take() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus/ctap_response/");
    let read = |name: &str| std::fs::read(format!("{dir}{name}")).unwrap();
    let info = parse_get_info(&read("get_info.bin")).unwrap();
    assert_eq!(info.option("pinUvAuthToken"), Some(true));
    assert_eq!(parse_retries(&read("pin_retries.bin")).unwrap(), 8);
    // The key agreement seed is P-256's base point, whose scalar is 1.
    let mut one = [0u8; 32];
    one[31] = 1;
    assert_eq!(
        parse_key_agreement(&read("key_agreement.bin")).unwrap(),
        EphemeralKey::from_bytes(&one).unwrap().public()
    );
}
