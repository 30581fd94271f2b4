//! The provider cache against a stand-in provider on loopback (discovery + a key set that
//! rotates): a token under a new key is verified after one fetch of the key set, the fetches
//! an unknown key causes are throttled, and an answer past the size cap is refused.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use data_encoding::BASE64URL_NOPAD;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

struct StandIn {
    issuer: String,
    jwks: Arc<Mutex<String>>,
    jwks_fetches: Arc<AtomicUsize>,
}

async fn stand_in() -> StandIn {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let jwks = Arc::new(Mutex::new(r#"{"keys":[]}"#.to_string()));
    let jwks_fetches = Arc::new(AtomicUsize::new(0));
    let (iss, set, count) = (issuer.clone(), jwks.clone(), jwks_fetches.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let (iss, set, count) = (iss.clone(), set.clone(), count.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = conn.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let head = String::from_utf8_lossy(&buf);
                let path = head.split(' ').nth(1).unwrap_or("");
                let body = match path {
                    "/.well-known/openid-configuration" => json!({"issuer": iss,
                        "authorization_endpoint": format!("{iss}/auth"),
                        "token_endpoint": format!("{iss}/token"),
                        "jwks_uri": format!("{iss}/jwks")})
                    .to_string(),
                    "/jwks" => {
                        count.fetch_add(1, Ordering::SeqCst);
                        set.lock().unwrap().clone()
                    }
                    "/huge" => "x".repeat(crate::sso::http::MAX_IDP_BODY + 10),
                    _ => String::new(),
                };
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(resp.as_bytes()).await;
            });
        }
    });
    StandIn {
        issuer,
        jwks,
        jwks_fetches,
    }
}

struct Key(EcdsaKeyPair, &'static str);

impl Key {
    fn new(kid: &'static str) -> Self {
        Self(
            EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap(),
            kid,
        )
    }

    fn jwk(&self) -> serde_json::Value {
        let p = self.0.public_key().as_ref();
        json!({"kty": "EC", "crv": "P-256", "kid": self.1,
            "x": BASE64URL_NOPAD.encode(&p[1..33]), "y": BASE64URL_NOPAD.encode(&p[33..65])})
    }

    fn token(&self, iss: &str, now: u64) -> String {
        let enc = |v: serde_json::Value| BASE64URL_NOPAD.encode(v.to_string().as_bytes());
        let input = format!(
            "{}.{}",
            enc(json!({"alg": "ES256", "kid": self.1})),
            enc(
                json!({"iss": iss, "aud": "hop", "sub": "alice", "nonce": "n",
                "exp": now + 300, "iat": now})
            )
        );
        let sig = self.0.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
        format!("{input}.{}", BASE64URL_NOPAD.encode(sig.as_ref()))
    }
}

#[tokio::test]
async fn a_rotated_key_is_fetched_once_and_unknown_keys_are_throttled() {
    let idp = stand_in().await;
    let (k1, k2) = (Key::new("k1"), Key::new("k2"));
    *idp.jwks.lock().unwrap() = json!({"keys": [k1.jwk()]}).to_string();
    let providers = OidcProviders::default();
    let t0 = 1_800_000_000;
    let at = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
    let want = |now: SystemTime| Expected {
        issuer: &idp.issuer,
        client_id: "hop",
        nonce: "n",
        max_age: None,
        now,
    };
    let meta = providers.metadata(&idp.issuer, at(t0)).await.unwrap();
    let ok = providers
        .verify_id_token(
            &idp.issuer,
            &meta,
            &k1.token(&idp.issuer, t0),
            &want(at(t0)),
        )
        .await
        .unwrap();
    assert_eq!(ok.subject, "alice");
    assert_eq!(idp.jwks_fetches.load(Ordering::SeqCst), 1);

    // The provider rotates to k2. Within the refetch interval an unknown key is refused
    // without a fetch (a flood of made-up kids costs the provider nothing).
    *idp.jwks.lock().unwrap() = json!({"keys": [k1.jwk(), k2.jwk()]}).to_string();
    let t1 = t0 + 5;
    let r = providers
        .verify_id_token(
            &idp.issuer,
            &meta,
            &k2.token(&idp.issuer, t1),
            &want(at(t1)),
        )
        .await;
    assert!(
        matches!(r, Err(SsoError::IdToken(jose::IdTokenError::UnknownKey(_)))),
        "{r:?}"
    );
    assert_eq!(idp.jwks_fetches.load(Ordering::SeqCst), 1);

    // After it, the key set is fetched again once and the new key verifies.
    let t2 = t0 + JWKS_REFETCH_INTERVAL.as_secs() + 1;
    providers
        .verify_id_token(
            &idp.issuer,
            &meta,
            &k2.token(&idp.issuer, t2),
            &want(at(t2)),
        )
        .await
        .unwrap();
    assert_eq!(idp.jwks_fetches.load(Ordering::SeqCst), 2);
    providers
        .verify_id_token(
            &idp.issuer,
            &meta,
            &k1.token(&idp.issuer, t2),
            &want(at(t2)),
        )
        .await
        .unwrap();
    assert_eq!(idp.jwks_fetches.load(Ordering::SeqCst), 2);

    // A token signed by a key the provider never published under a known kid.
    let forged = Key::new("k2");
    let r = providers
        .verify_id_token(
            &idp.issuer,
            &meta,
            &forged.token(&idp.issuer, t2),
            &want(at(t2)),
        )
        .await;
    assert!(
        matches!(r, Err(SsoError::IdToken(jose::IdTokenError::BadSignature))),
        "{r:?}"
    );
}

#[tokio::test]
async fn answers_past_the_cap_and_non_loopback_http_are_refused() {
    let idp = stand_in().await;
    let r = crate::sso::http::fetch(crate::sso::http::IdpRequest {
        post_form: None,
        url: &format!("{}/huge", idp.issuer),
        authorization: None,
    })
    .await;
    assert!(matches!(r, Err(crate::sso::IdpHttpError::Body(_))), "{r:?}");
    let r = crate::sso::http::fetch(crate::sso::http::IdpRequest {
        post_form: None,
        url: "http://example.com/.well-known/openid-configuration",
        authorization: None,
    })
    .await;
    assert!(matches!(r, Err(crate::sso::IdpHttpError::Url(_))), "{r:?}");
}
