use super::*;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, RsaKeyPair};
use serde_json::json;

const NOW: u64 = 1_800_000_000;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW)
}

fn enc(v: &Value) -> String {
    BASE64URL_NOPAD.encode(&serde_json::to_vec(v).unwrap())
}

struct Es {
    pair: EcdsaKeyPair,
    kid: String,
}

impl Es {
    fn new(kid: &str) -> Self {
        let pair = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        Self {
            pair,
            kid: kid.into(),
        }
    }

    fn jwk(&self) -> Value {
        let p = self.pair.public_key().as_ref();
        json!({"kty": "EC", "crv": "P-256", "kid": self.kid, "use": "sig",
            "x": BASE64URL_NOPAD.encode(&p[1..33]), "y": BASE64URL_NOPAD.encode(&p[33..65])})
    }

    fn sign(&self, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            enc(&json!({"alg": "ES256", "kid": self.kid, "typ": "JWT"})),
            enc(claims)
        );
        let sig = self
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", BASE64URL_NOPAD.encode(sig.as_ref()))
    }
}

fn rsa() -> (RsaKeyPair, Value) {
    let pair = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let pk = pair.public_key();
    let jwk = json!({"kty": "RSA", "kid": "r1", "alg": "RS256",
        "n": BASE64URL_NOPAD.encode(pk.modulus().big_endian_without_leading_zero()),
        "e": BASE64URL_NOPAD.encode(pk.exponent().big_endian_without_leading_zero())});
    (pair, jwk)
}

fn rsa_sign(pair: &RsaKeyPair, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        enc(&json!({"alg": "RS256", "kid": "r1"})),
        enc(claims)
    );
    let mut sig = vec![0; pair.public_modulus_len()];
    pair.sign(
        &signature::RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .unwrap();
    format!("{input}.{}", BASE64URL_NOPAD.encode(&sig))
}

fn claims() -> Value {
    json!({"iss": "http://127.0.0.1:9000", "aud": "hop", "sub": "alice", "nonce": "n-1",
        "exp": NOW + 300, "iat": NOW - 5, "auth_time": NOW - 30, "groups": ["devs"]})
}

fn want() -> Expected<'static> {
    Expected {
        issuer: "http://127.0.0.1:9000",
        client_id: "hop",
        nonce: "n-1",
        max_age: Some(Duration::from_secs(3600)),
        now: now(),
    }
}

fn verify(token: &str, set: &Jwks, w: &Expected<'_>) -> Result<String, IdTokenError> {
    let jws = parse_jws(token)?;
    set.verify(&jws)?;
    check_id_token(&jws.claims, w)
}

fn set(keys: Vec<Value>) -> Jwks {
    parse_jwks(&serde_json::to_vec(&json!({ "keys": keys })).unwrap()).unwrap()
}

#[test]
fn es256_and_rs256_tokens_verify() {
    let es = Es::new("e1");
    let (rsa, rsa_jwk) = rsa();
    let jwks = set(vec![es.jwk(), rsa_jwk]);
    assert_eq!(
        verify(&es.sign(&claims()), &jwks, &want()).unwrap(),
        "alice"
    );
    assert_eq!(
        verify(&rsa_sign(&rsa, &claims()), &jwks, &want()).unwrap(),
        "alice"
    );
}

#[test]
fn tampered_tokens_are_refused() {
    let es = Es::new("e1");
    let jwks = set(vec![es.jwk()]);
    let token = es.sign(&claims());
    let (head, rest) = token.split_once('.').unwrap();
    let (_, sig) = rest.split_once('.').unwrap();
    let mut evil = claims();
    evil["groups"] = json!(["admins"]);
    let forged = format!("{head}.{}.{sig}", enc(&evil));
    assert_eq!(
        verify(&forged, &jwks, &want()),
        Err(IdTokenError::BadSignature)
    );
    // Signed by a key the provider never published, under the provider's kid.
    let other = Es::new("e1");
    assert_eq!(
        verify(&other.sign(&claims()), &jwks, &want()),
        Err(IdTokenError::BadSignature)
    );
    // alg none and HMAC are refused before any key is looked at.
    let none = format!("{}.{}.c2ln", enc(&json!({"alg": "none"})), enc(&claims()));
    assert!(matches!(parse_jws(&none), Err(IdTokenError::Algorithm(_))));
    let hs = format!("{}.{}.c2ln", enc(&json!({"alg": "HS256"})), enc(&claims()));
    assert!(matches!(parse_jws(&hs), Err(IdTokenError::Algorithm(_))));
    let crit = format!(
        "{}.{}.c2ln",
        enc(&json!({"alg": "ES256", "crit": ["x"]})),
        enc(&claims())
    );
    assert_eq!(parse_jws(&crit).unwrap_err(), IdTokenError::Critical);
}

#[test]
fn an_unknown_kid_asks_for_the_key_set_again() {
    let old = Es::new("old");
    let new = Es::new("new");
    let jwks = set(vec![old.jwk()]);
    let jws = parse_jws(&new.sign(&claims())).unwrap();
    assert!(!jwks.has_key_for(&jws));
    assert_eq!(
        jwks.verify(&jws),
        Err(IdTokenError::UnknownKey("new".into()))
    );
    let rotated = set(vec![old.jwk(), new.jwk()]);
    assert!(rotated.has_key_for(&jws));
    rotated.verify(&jws).unwrap();
}

#[test]
fn claim_checks_refuse_each_wrong_claim() {
    let es = Es::new("e1");
    let jwks = set(vec![es.jwk()]);
    let cases: Vec<(&str, Value, IdTokenError)> = vec![
        ("iss", json!("http://evil"), IdTokenError::Issuer),
        ("aud", json!("other"), IdTokenError::Audience),
        ("aud", json!(["hop", "other"]), IdTokenError::Audience), // several, no azp
        ("exp", json!(NOW - 61), IdTokenError::Expired),
        ("iat", json!(NOW + 120), IdTokenError::IssuedAt),
        ("iat", json!(NOW - 3600), IdTokenError::IssuedAt),
        ("nonce", json!("n-2"), IdTokenError::Nonce),
        ("auth_time", json!(NOW - 7200), IdTokenError::AuthTime),
        ("sub", json!(""), IdTokenError::Subject),
        (
            "exp",
            json!("soon"),
            IdTokenError::Malformed("a time claim is not a number"),
        ),
    ];
    for (k, v, e) in cases {
        let mut c = claims();
        c[k] = v.clone();
        assert_eq!(verify(&es.sign(&c), &jwks, &want()), Err(e), "{k}={v}");
    }
    let mut c = claims();
    c.as_object_mut().unwrap().remove("nonce");
    assert_eq!(
        verify(&es.sign(&c), &jwks, &want()),
        Err(IdTokenError::Nonce)
    );
    let mut c = claims();
    c.as_object_mut().unwrap().remove("auth_time");
    assert_eq!(
        verify(&es.sign(&c), &jwks, &want()),
        Err(IdTokenError::AuthTime)
    );
    // Without max_age, auth_time is not needed; several audiences with azp are fine.
    let w = Expected {
        max_age: None,
        ..want()
    };
    assert!(verify(&es.sign(&c), &jwks, &w).is_ok());
    let mut c = claims();
    c["aud"] = json!(["hop", "other"]);
    c["azp"] = json!("hop");
    assert!(verify(&es.sign(&c), &jwks, &want()).is_ok());
    // Within the skew, expiry holds.
    let mut c = claims();
    c["exp"] = json!(NOW - 30);
    assert!(verify(&es.sign(&c), &jwks, &want()).is_ok());
}

#[test]
fn every_prefix_of_a_token_and_a_key_set_is_refused_or_parsed_without_panic() {
    let es = Es::new("e1");
    let token = es.sign(&claims());
    for i in 0..token.len() {
        let r = parse_jws(&token[..i]);
        if let Ok(jws) = r {
            // A prefix that still parses cannot carry the whole signature.
            assert!(set(vec![es.jwk()]).verify(&jws).is_err());
        }
    }
    let jwks = serde_json::to_vec(&json!({"keys": [es.jwk(), rsa().1]})).unwrap();
    for i in 0..jwks.len() {
        assert!(parse_jwks(&jwks[..i]).is_err(), "prefix {i} parsed");
    }
    assert_eq!(parse_jwks(&jwks).unwrap().keys.len(), 2);
}

#[test]
fn malformed_inputs_are_refused() {
    for t in [
        "",
        "a",
        "a.b",
        "a.b.c.d",
        "..",
        "e30.e30.",
        "e30.e30.c2ln",
        "!!.e30.c2ln",
    ] {
        assert!(parse_jws(t).is_err(), "{t:?}");
    }
    assert_eq!(
        parse_jws(&"a".repeat(MAX_TOKEN_LEN + 1)).unwrap_err(),
        IdTokenError::TooLong
    );
    for j in [
        &b"[]"[..],
        b"{}",
        b"{\"keys\": 1}",
        b"{\"keys\": [1]}",
        b"{\"keys\": [{\"kty\":\"RSA\",\"n\":\"\",\"e\":\"AQAB\"}]}",
        b"{\"keys\": [{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AQAB\",\"y\":\"AQAB\"}]}",
    ] {
        assert!(parse_jwks(j).is_err(), "{}", String::from_utf8_lossy(j));
    }
    // Keys Hop cannot use are skipped, not fatal.
    let skipped = parse_jwks(br#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"AA"},{"kty":"RSA","use":"enc","n":"AQ","e":"AQ"}]}"#).unwrap();
    assert!(skipped.keys.is_empty());
    let many = json!({"keys": vec![json!({"kty": "oct"}); MAX_JWKS_KEYS + 1]});
    assert_eq!(
        parse_jwks(&serde_json::to_vec(&many).unwrap()),
        Err(JwksError::TooManyKeys)
    );
    fuzz_parse(b"e30.e30.c2ln\n{\"keys\":[]}");
}
