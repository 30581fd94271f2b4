//! WebAuthn security keys with the software authenticator: registration (with the password and
//! a fresh proof from an existing device), login with password + assertion and its audit event,
//! refusals (wrong origin, replayed challenge, regressed counter, wrong password, no proof), and
//! the last device that cannot be removed while a second factor is required.

use std::time::Duration;

use data_encoding::BASE64URL_NOPAD;
use hop_api::totp;
use hop_webauthn::testkit::{KeyKind, MadeAssertion, SoftKey};

use super::server::{
    AuthError, ChallengePurpose, LoginClient, LoginRequest, PasskeyAssertion, SecondFactor,
    WebauthnAssertion, WebauthnRegistration,
};
use super::server_tests::{Fixture, PASSWORD, fixture};

const RP: &str = "proxy.unit.test";
const ORIGIN: &str = "https://proxy.unit.test:3080";

fn b64(b: &[u8]) -> String {
    BASE64URL_NOPAD.encode(b)
}

fn challenge(options: &serde_json::Value) -> Vec<u8> {
    let c = options["publicKey"]["challenge"].as_str().unwrap();
    BASE64URL_NOPAD.decode(c.as_bytes()).unwrap()
}

fn wire(a: &MadeAssertion) -> WebauthnAssertion {
    WebauthnAssertion {
        credential_id: b64(&a.credential_id),
        client_data_json: b64(&a.client_data_json),
        authenticator_data: b64(&a.authenticator_data),
        signature: b64(&a.signature),
    }
}

/// A fresh one-time code of the sign-up device (the clock moves past the last step used).
fn code(f: &Fixture, secret: &[u8]) -> String {
    f.clock.advance(Duration::from_secs(30));
    totp::code_at(secret, f.auth.now())
}

/// Registers `key` for `user`, proven by a one-time code.
fn register(f: &Fixture, user: &str, secret: &[u8], key: &SoftKey) -> Result<String, AuthError> {
    let options = f.auth.begin_webauthn_registration(user)?;
    let made = key.register(&challenge(&options), false);
    let code = code(f, secret);
    f.auth
        .add_webauthn_device(
            user,
            (PASSWORD, SecondFactor::Otp(&code)),
            "yubikey",
            &WebauthnRegistration {
                client_data_json: b64(&made.client_data_json),
                attestation_object: b64(&made.attestation_object),
            },
            None,
        )
        .map(|v| v.id)
}

fn login(f: &Fixture, user: &str, password: &str, a: &WebauthnAssertion) -> Result<(), AuthError> {
    f.auth
        .login_webauthn(
            &LoginRequest {
                username: user,
                password,
                totp_code: "",
                ssh_public_key: &f.ssh_pub,
                tls_public_key_der: &f.tls_spki,
                ttl: None,
                remote: None,
                client: LoginClient::Web,
            },
            a,
        )
        .map(|_| ())
}

fn login_challenge(f: &Fixture, user: &str) -> Vec<u8> {
    challenge(
        &f.auth
            .begin_webauthn_assertion(user, ChallengePurpose::Login, None)
            .unwrap(),
    )
}

fn last_login_event(f: &Fixture) -> serde_json::Value {
    f.events()
        .into_iter()
        .rev()
        .find(|e| e["event"] == "user.login")
        .unwrap()
}

#[test]
fn register_then_login_with_password_and_key() {
    let f = fixture("on");
    let secret = f.user("alice", &["access"]);
    let key = SoftKey::new(KeyKind::Es256, RP, ORIGIN);
    let options = f.auth.begin_webauthn_registration("alice").unwrap();
    let pk = &options["publicKey"];
    assert_eq!(pk["rp"]["id"], RP);
    assert_ne!(pk["user"]["id"], "alice", "the user handle is not the name");
    assert_eq!(pk["attestation"], "none");
    assert_eq!(
        pk["authenticatorSelection"]["userVerification"],
        "preferred"
    );
    assert_eq!(pk["pubKeyCredParams"][0]["alg"], -7);
    let id = register(&f, "alice", &secret, &key).unwrap();
    let devices = f.auth.webauthn_devices("alice").unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].id, id);
    assert!(
        f.events().iter().any(|e| e["event"] == "mfa.add"
            && e["kind"] == "webauthn"
            && e["device"] == id.as_str())
    );
    // The next registration's options exclude the key.
    let options = f.auth.begin_webauthn_registration("alice").unwrap();
    assert_eq!(
        options["publicKey"]["excludeCredentials"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let mut key = key;
    let a = key.assert(&login_challenge(&f, "alice"));
    login(&f, "alice", PASSWORD, &wire(&a)).unwrap();
    let e = last_login_event(&f);
    assert_eq!(e["mfa"], "webauthn", "{e}");
    assert!(e.get("error").is_none(), "{e}");
    let devices = f.auth.webauthn_devices("alice").unwrap();
    assert!(devices[0].last_used.is_some());

    // A wrong password with the key is refused.
    let a = key.assert(&login_challenge(&f, "alice"));
    assert!(matches!(
        login(&f, "alice", "wrong password", &wire(&a)),
        Err(AuthError::InvalidCredentials)
    ));
}

#[test]
fn key_used_from_another_origin_is_refused() {
    let f = fixture("on");
    let secret = f.user("alice", &["access"]);
    let mut key = SoftKey::new(KeyKind::Ed25519, RP, ORIGIN);
    register(&f, "alice", &secret, &key).unwrap();
    key.origin = "https://proxy.evil.test".into();
    let a = key.assert(&login_challenge(&f, "alice"));
    assert!(matches!(
        login(&f, "alice", PASSWORD, &wire(&a)),
        Err(AuthError::InvalidCredentials)
    ));
    let e = last_login_event(&f);
    assert!(e.to_string().contains("another web origin"), "{e}");
}

#[test]
fn registration_from_another_origin_is_refused() {
    let f = fixture("on");
    let secret = f.user("alice", &["access"]);
    let key = SoftKey::new(KeyKind::Es256, RP, "https://proxy.evil.test");
    let e = register(&f, "alice", &secret, &key).unwrap_err();
    assert!(e.to_string().contains("origin"), "{e}");
    assert!(f.auth.webauthn_devices("alice").unwrap().is_empty());
}

#[test]
fn replayed_challenge_is_refused() {
    let f = fixture("on");
    let secret = f.user("alice", &["access"]);
    let mut key = SoftKey::new(KeyKind::Es256, RP, ORIGIN);
    register(&f, "alice", &secret, &key).unwrap();
    let c = login_challenge(&f, "alice");
    let a = key.assert(&c);
    login(&f, "alice", PASSWORD, &wire(&a)).unwrap();
    // The same assertion again, and a new assertion of the same challenge.
    assert!(login(&f, "alice", PASSWORD, &wire(&a)).is_err());
    let again = key.assert(&c);
    assert!(login(&f, "alice", PASSWORD, &wire(&again)).is_err());
    let e = last_login_event(&f);
    assert!(e.to_string().contains("already used"), "{e}");
    // An expired challenge too.
    let c = login_challenge(&f, "alice");
    f.clock.advance(Duration::from_secs(301));
    let late = key.assert(&c);
    assert!(login(&f, "alice", PASSWORD, &wire(&late)).is_err());
    // Another user's challenge does not log alice in.
    f.user("bob", &["access"]);
    let c = login_challenge(&f, "bob");
    let others = key.assert(&c);
    assert!(login(&f, "alice", PASSWORD, &wire(&others)).is_err());
    let e = last_login_event(&f);
    assert!(e.to_string().contains("another user"), "{e}");
    // A registration challenge does not log in.
    let c = challenge(&f.auth.begin_webauthn_registration("alice").unwrap());
    let wrong_purpose = key.assert(&c);
    assert!(login(&f, "alice", PASSWORD, &wire(&wrong_purpose)).is_err());
}

#[test]
fn regressed_counter_is_refused_as_a_possible_clone() {
    let f = fixture("on");
    let secret = f.user("alice", &["access"]);
    let mut key = SoftKey::new(KeyKind::Es256, RP, ORIGIN);
    register(&f, "alice", &secret, &key).unwrap();
    for _ in 0..2 {
        let a = key.assert(&login_challenge(&f, "alice"));
        login(&f, "alice", PASSWORD, &wire(&a)).unwrap();
    }
    key.counter = 0; // a clone made before the two logins: its next assertion carries 1
    let a = key.assert(&login_challenge(&f, "alice"));
    assert!(login(&f, "alice", PASSWORD, &wire(&a)).is_err());
    let e = last_login_event(&f);
    assert!(e.to_string().contains("cloned"), "{e}");
}

#[test]
fn adding_a_key_needs_a_proof_from_an_existing_device() {
    let f = fixture("on");
    let _secret = f.user("alice", &["access"]);
    let key = SoftKey::new(KeyKind::Es256, RP, ORIGIN);
    let options = f.auth.begin_webauthn_registration("alice").unwrap();
    let made = key.register(&challenge(&options), false);
    let e = f
        .auth
        .add_webauthn_device(
            "alice",
            (PASSWORD, SecondFactor::Otp("")),
            "yubikey",
            &WebauthnRegistration {
                client_data_json: b64(&made.client_data_json),
                attestation_object: b64(&made.attestation_object),
            },
            None,
        )
        .unwrap_err();
    assert!(matches!(e, AuthError::InvalidCredentials), "{e}");
    assert!(f.auth.webauthn_devices("alice").unwrap().is_empty());
    assert!(
        f.events()
            .iter()
            .any(|e| e["event"] == "mfa.add" && e.get("error").is_some())
    );
}

#[test]
fn last_device_cannot_be_removed_while_required() {
    let f = fixture("on");
    let secret = f.user("alice", &["access"]);
    let mut key = SoftKey::new(KeyKind::Es256, RP, ORIGIN);
    let id = register(&f, "alice", &secret, &key).unwrap();
    // The sign-up one-time-code device goes (the key remains).
    f.auth
        .remove_otp_device("alice", PASSWORD, "signup", None)
        .unwrap();
    // The key is the last device now.
    let c = challenge(
        &f.auth
            .begin_webauthn_assertion("alice", ChallengePurpose::Manage, None)
            .unwrap(),
    );
    let proof = wire(&key.assert(&c));
    let e = f
        .auth
        .remove_webauthn_device(
            "alice",
            (PASSWORD, SecondFactor::Webauthn(&proof)),
            &id,
            None,
        )
        .unwrap_err();
    assert!(e.to_string().contains("only second-factor device"), "{e}");
    assert_eq!(f.auth.webauthn_devices("alice").unwrap().len(), 1);
    // The key still logs in.
    let a = key.assert(&login_challenge(&f, "alice"));
    login(&f, "alice", PASSWORD, &wire(&a)).unwrap();
}

#[test]
fn keys_are_refused_where_the_cluster_asks_for_codes() {
    let f = fixture("otp");
    f.user("alice", &["access"]);
    let e = f.auth.begin_webauthn_registration("alice").unwrap_err();
    assert!(e.to_string().contains("second_factor is otp"), "{e}");
}

#[test]
fn a_key_proves_an_account_change_and_a_login_challenge_does_not() {
    let f = fixture("on");
    let secret = f.user("alice", &["access"]);
    let mut key = SoftKey::new(KeyKind::Es256, RP, ORIGIN);
    register(&f, "alice", &secret, &key).unwrap();
    f.auth
        .remove_otp_device("alice", PASSWORD, "signup", None)
        .unwrap();
    // Only a key now: a new one-time-code device is proven by a tap.
    let phone = vec![7u8; 20];
    let add = |proof: &WebauthnAssertion| {
        f.auth.add_otp_device_proven(
            "alice",
            (PASSWORD, SecondFactor::Webauthn(proof)),
            "phone",
            &totp::encode_secret(&phone),
            &totp::code_at(&phone, f.auth.now()),
            None,
        )
    };
    // A login's challenge does not prove an account change.
    let wrong = wire(&key.assert(&login_challenge(&f, "alice")));
    assert!(matches!(add(&wrong), Err(AuthError::InvalidCredentials)));
    let c = challenge(
        &f.auth
            .begin_webauthn_assertion("alice", ChallengePurpose::Manage, None)
            .unwrap(),
    );
    let proof = wire(&key.assert(&c));
    add(&proof).unwrap();
    assert_eq!(f.auth.otp_devices("alice").unwrap().len(), 1);
    // A second key needs a proof too: a code of the new device will do.
    let second = SoftKey::new(KeyKind::Ed25519, RP, ORIGIN);
    register(&f, "alice", &phone, &second).unwrap();
    assert_eq!(f.auth.webauthn_devices("alice").unwrap().len(), 2);
}

#[test]
fn a_passkey_logs_in_without_a_password_only_with_user_verification() {
    let f = fixture("on");
    let secret = f.user("alice", &["access"]);
    let handle = f.auth.begin_webauthn_registration("alice").unwrap()["publicKey"]["user"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut key = SoftKey::new(KeyKind::Es256, RP, ORIGIN);
    register(&f, "alice", &secret, &key).unwrap();
    let req = LoginRequest {
        username: "",
        password: "",
        totp_code: "",
        ssh_public_key: &f.ssh_pub,
        tls_public_key_der: &f.tls_spki,
        ttl: None,
        remote: None,
        client: LoginClient::Web,
    };
    let passkey = |key: &mut SoftKey, handle: &str| {
        let c = challenge(&f.auth.begin_passwordless(None).unwrap());
        PasskeyAssertion {
            assertion: wire(&key.assert(&c)),
            user_handle: handle.to_string(),
        }
    };
    let certs = f
        .auth
        .login_passwordless(&req, &passkey(&mut key, &handle))
        .unwrap();
    assert_eq!(certs.username, "alice");
    let e = last_login_event(&f);
    assert_eq!(e["method"], "passwordless", "{e}");
    assert_eq!(e["mfa"], "webauthn", "{e}");
    // Another user's handle, or none known, is refused.
    assert!(matches!(
        f.auth
            .login_passwordless(&req, &passkey(&mut key, "bm9ib2R5")),
        Err(AuthError::InvalidCredentials)
    ));
    // Without user verification (presence only) a passkey is not a password.
    key.flags = 0x01;
    assert!(matches!(
        f.auth.login_passwordless(&req, &passkey(&mut key, &handle)),
        Err(AuthError::InvalidCredentials)
    ));
    let e = last_login_event(&f);
    assert!(e.to_string().contains("did not confirm the user"), "{e}");
    // A passwordless challenge is not a second factor's.
    key.flags = 0x05;
    let c = challenge(&f.auth.begin_passwordless(None).unwrap());
    let a = key.assert(&c);
    assert!(login(&f, "alice", PASSWORD, &wire(&a)).is_err());
}

/// The identity of a login certificate of `user` with `roles` (what the gRPC caller carries).
fn identity_of(user: &str, roles: &[&str]) -> hop_ca::Identity {
    hop_ca::Identity {
        username: user.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        logins: vec![user.into()],
        cluster: "test.cluster".into(),
        ..Default::default()
    }
}

fn node_target(node: &str, login: &str) -> hop_ca::SessionMfaTarget {
    hop_ca::SessionMfaTarget::Node {
        node: node.into(),
        login: login.into(),
    }
}

fn target_challenge(
    f: &Fixture,
    id: &hop_ca::Identity,
    target: &hop_ca::SessionMfaTarget,
) -> Option<Vec<u8>> {
    f.auth
        .begin_session_mfa(id, target, None)
        .unwrap()
        .map(|o| challenge(&o))
}

fn session_challenge(f: &Fixture, id: &hop_ca::Identity, node: &str) -> Option<Vec<u8>> {
    target_challenge(f, id, &node_target(node, &id.username))
}

#[test]
fn per_session_mfa_is_scoped_to_one_node_and_login_for_one_minute() {
    let f = fixture("on");
    f.auth
        .create_resources(
            "kind: role\nversion: v7\nmetadata:\n  name: tap\nspec:\n  options:\n    require_session_mfa: true\n",
            "tap.yaml",
            false,
            "test",
            &|_, _| Ok(()),
        )
        .unwrap();
    let secret = f.user("mia", &["access", "tap"]);
    let mut key = SoftKey::new(KeyKind::Es256, RP, ORIGIN);
    register(&f, "mia", &secret, &key).unwrap();
    let plain = identity_of("mia", &["access"]);
    let tapper = identity_of("mia", &["access", "tap"]);
    let expires = f.auth.now() + Duration::from_secs(3600);
    let issue = |id: &hop_ca::Identity, node: &str, login: &str, a: &WebauthnAssertion| {
        f.auth.issue_session_mfa(
            (id, expires),
            &node_target(node, login),
            a,
            (&f.ssh_pub, &f.tls_spki),
            None,
        )
    };

    // No role asks: no challenge.
    assert!(session_challenge(&f, &plain, "web1").is_none());
    // A challenge for web1 answers for web1 only (and once).
    let c = session_challenge(&f, &tapper, "web1").unwrap();
    let a = wire(&key.assert(&c));
    assert!(issue(&tapper, "web2", "mia", &a).is_err());
    let c = session_challenge(&f, &tapper, "web1").unwrap();
    let a = wire(&key.assert(&c));
    let certs = issue(&tapper, "web1", "mia", &a).unwrap();
    assert_eq!(certs.expires, f.auth.now() + Duration::from_secs(60));
    assert!(
        issue(&tapper, "web1", "mia", &a).is_err(),
        "a replayed challenge"
    );
    let trusted = vec![f.auth.authorities().user.public()];
    let (id, _) = hop_ca::verify_user_ssh(&certs.ssh_certificate, &trusted, f.auth.now()).unwrap();
    assert_eq!(id.session_mfa, Some(node_target("web1", "mia")));
    assert_eq!(id.logins, ["mia"]);
    assert!(id.mfa_verified);
    // A login challenge does not answer a session's; a login not in the certificate is refused.
    let c = login_challenge(&f, "mia");
    assert!(issue(&tapper, "web1", "mia", &wire(&key.assert(&c))).is_err());
    let c = session_challenge(&f, &tapper, "web1").unwrap();
    assert!(issue(&tapper, "web1", "root", &wire(&key.assert(&c))).is_err());
    // A marked certificate does not beget another.
    let c = session_challenge(&f, &tapper, "web1").unwrap();
    assert!(issue(&id, "web1", "mia", &wire(&key.assert(&c))).is_err());
    // Each try is on the record, with its target.
    let events: Vec<_> = f
        .events()
        .into_iter()
        .filter(|e| e["event"] == "mfa.session")
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["node"] == "web1" && e.get("error").is_none())
    );
    assert!(
        events
            .iter()
            .any(|e| e["node"] == "web2" && e.get("error").is_some())
    );
}

#[test]
fn per_session_mfa_for_a_database_yields_a_one_minute_route_certificate_for_it_alone() {
    let f = fixture("on");
    f.auth
        .create_resources(
            "kind: role\nversion: v7\nmetadata:\n  name: tap\nspec:\n  options:\n    require_session_mfa: true\n",
            "tap.yaml",
            false,
            "test",
            &|_, _| Ok(()),
        )
        .unwrap();
    let secret = f.user("mia", &["access", "tap"]);
    let mut key = SoftKey::new(KeyKind::Es256, RP, ORIGIN);
    register(&f, "mia", &secret, &key).unwrap();
    let tapper = identity_of("mia", &["access", "tap"]);
    let expires = f.auth.now() + Duration::from_secs(3600);
    let db = |name: &str| hop_ca::SessionMfaTarget::Database {
        db_service: "pg".into(),
        db_user: "mia".into(),
        db_name: name.into(),
    };
    let issue = |target: &hop_ca::SessionMfaTarget, a: &WebauthnAssertion| {
        f.auth
            .issue_session_mfa((&tapper, expires), target, a, ("", &f.tls_spki), None)
    };
    // A challenge for one database name does not answer for another, nor for a node.
    let c = target_challenge(&f, &tapper, &db("orders")).unwrap();
    assert!(issue(&db("billing"), &wire(&key.assert(&c))).is_err());
    let c = target_challenge(&f, &tapper, &db("orders")).unwrap();
    assert!(issue(&node_target("orders", "mia"), &wire(&key.assert(&c))).is_err());
    // Answered for its own target: an X.509 route certificate only, one minute, marked.
    let c = target_challenge(&f, &tapper, &db("orders")).unwrap();
    let certs = issue(&db("orders"), &wire(&key.assert(&c))).unwrap();
    assert!(certs.ssh_certificate.is_empty());
    assert!(!certs.trusted_cas_pem.is_empty());
    assert_eq!(certs.expires, f.auth.now() + Duration::from_secs(60));
    let trusted = vec![f.auth.authorities().user.public()];
    let der = hop_ca::parse_pem_certs(&certs.tls_certificate_pem).unwrap();
    let (id, _) = hop_ca::verify_user_x509(&der[0], &trusted, f.auth.now()).unwrap();
    assert_eq!(id.session_mfa, Some(db("orders")));
    let route = id.route_to_database.unwrap();
    assert_eq!(
        (route.service.as_str(), route.database.as_str()),
        ("pg", "orders")
    );
    // A database name PostgreSQL would not take is refused before any challenge.
    assert!(f.auth.begin_session_mfa(&tapper, &db(""), None).is_err());
    // The assertion and its target are on the record.
    let events: Vec<_> = f
        .events()
        .into_iter()
        .filter(|e| e["event"] == "mfa.session")
        .collect();
    assert!(
        events.iter().any(|e| e["db_service"] == "pg"
            && e["db_name"] == "orders"
            && e.get("error").is_none()),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["db_name"] == "billing" && e.get("error").is_some()),
        "{events:?}"
    );
}

#[test]
fn per_session_mfa_for_a_kube_cluster_yields_a_one_minute_certificate_routed_to_it() {
    let f = fixture("on");
    f.auth
        .create_resources(
            "kind: role\nversion: v7\nmetadata:\n  name: tap\nspec:\n  options:\n    require_session_mfa: true\n",
            "tap.yaml",
            false,
            "test",
            &|_, _| Ok(()),
        )
        .unwrap();
    let secret = f.user("mia", &["access", "tap"]);
    let mut key = SoftKey::new(KeyKind::Es256, RP, ORIGIN);
    register(&f, "mia", &secret, &key).unwrap();
    let tapper = identity_of("mia", &["access", "tap"]);
    let expires = f.auth.now() + Duration::from_secs(3600);
    let cluster = |name: &str| hop_ca::SessionMfaTarget::KubeCluster {
        kube_cluster: name.into(),
    };
    let issue = |target: &hop_ca::SessionMfaTarget, a: &WebauthnAssertion| {
        f.auth
            .issue_session_mfa((&tapper, expires), target, a, ("", &f.tls_spki), None)
    };
    // A challenge for dev answers for dev alone.
    let c = target_challenge(&f, &tapper, &cluster("dev")).unwrap();
    assert!(issue(&cluster("prod"), &wire(&key.assert(&c))).is_err());
    let c = target_challenge(&f, &tapper, &cluster("dev")).unwrap();
    let certs = issue(&cluster("dev"), &wire(&key.assert(&c))).unwrap();
    assert!(certs.ssh_certificate.is_empty());
    assert_eq!(certs.expires, f.auth.now() + Duration::from_secs(60));
    let trusted = vec![f.auth.authorities().user.public()];
    let der = hop_ca::parse_pem_certs(&certs.tls_certificate_pem).unwrap();
    let (id, _) = hop_ca::verify_user_x509(&der[0], &trusted, f.auth.now()).unwrap();
    assert_eq!(id.route_to_kube_cluster.as_deref(), Some("dev"));
    assert_eq!(id.session_mfa, Some(cluster("dev")));
    let events: Vec<_> = f
        .events()
        .into_iter()
        .filter(|e| e["event"] == "mfa.session")
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["kube_cluster"] == "dev" && e.get("error").is_none()),
        "{events:?}"
    );
}
