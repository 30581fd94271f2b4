//! SSH certificate issue/verify round trips and refusals.

use std::time::Duration;

use hop_ca::{
    CaError, CaKind, CertAuthority, DEFAULT_CERT_TTL, Identity, NO_LOGIN_PRINCIPAL,
    generate_ssh_keypair, verify_host_ssh, verify_user_ssh,
};

use crate::support::{Cas, HOUR, alice, now, rng};

#[test]
fn user_cert_round_trips_identity_and_expiry() {
    let cas = Cas::generate("hop.example.com", 1);
    let mut rng = rng(2);
    let client = generate_ssh_keypair(&mut rng).unwrap();
    let id = alice();
    let cert = cas
        .user
        .issue_user_ssh(
            &client.public_openssh,
            &id,
            now(),
            DEFAULT_CERT_TTL,
            &mut rng,
        )
        .unwrap();
    assert!(cert.starts_with("ssh-ed25519-cert-v01@openssh.com AAAA"));
    let (got, expires) = verify_user_ssh(&cert, &cas.public(), now()).unwrap();
    assert_eq!(got, id);
    assert_eq!(expires, now() + DEFAULT_CERT_TTL);
}

#[test]
fn minimal_identity_round_trips_and_never_gets_empty_principals() {
    let cas = Cas::generate("c", 1);
    let mut rng = rng(3);
    let client = generate_ssh_keypair(&mut rng).unwrap();
    let id = Identity {
        username: "bob".into(),
        ..Identity::default()
    };
    let cert = cas
        .user
        .issue_user_ssh(&client.public_openssh, &id, now(), HOUR, &mut rng)
        .unwrap();
    let parsed = russh::keys::ssh_key::Certificate::from_openssh(&cert).unwrap();
    assert_eq!(parsed.valid_principals(), [NO_LOGIN_PRINCIPAL.to_owned()]);
    let (got, _) = verify_user_ssh(&cert, &cas.public(), now()).unwrap();
    assert_eq!(got, id);
}

#[test]
fn user_cert_from_another_ca_is_untrusted() {
    let ours = Cas::generate("hop.example.com", 1);
    let theirs = Cas::generate("hop.example.com", 99);
    let mut rng = rng(4);
    let client = generate_ssh_keypair(&mut rng).unwrap();
    let cert = theirs
        .user
        .issue_user_ssh(&client.public_openssh, &alice(), now(), HOUR, &mut rng)
        .unwrap();
    assert!(matches!(
        verify_user_ssh(&cert, &ours.public(), now()),
        Err(CaError::UntrustedSigner)
    ));
}

#[test]
fn expired_and_not_yet_valid_user_certs_are_refused() {
    let cas = Cas::generate("c", 1);
    let mut rng = rng(5);
    let client = generate_ssh_keypair(&mut rng).unwrap();
    let cert = cas
        .user
        .issue_user_ssh(&client.public_openssh, &alice(), now(), HOUR, &mut rng)
        .unwrap();
    let trusted = cas.public();
    match verify_user_ssh(&cert, &trusted, now() + HOUR) {
        Err(CaError::Expired { not_after }) => assert_eq!(not_after, now() + HOUR),
        other => panic!("expected Expired, got {other:?}"),
    }
    // Still valid one second before the end, and one minute before issue (clock skew).
    verify_user_ssh(&cert, &trusted, now() + HOUR - Duration::from_secs(1)).unwrap();
    verify_user_ssh(&cert, &trusted, now() - Duration::from_secs(60)).unwrap();
    assert!(matches!(
        verify_user_ssh(&cert, &trusted, now() - Duration::from_secs(61)),
        Err(CaError::NotYetValid { .. })
    ));
}

#[test]
fn host_cert_is_not_a_user_cert() {
    let cas = Cas::generate("c", 1);
    let mut rng = rng(6);
    let host = generate_ssh_keypair(&mut rng).unwrap();
    let cert = cas
        .host
        .issue_host_ssh(&host.public_openssh, "node-1", &[], now(), HOUR, &mut rng)
        .unwrap();
    // Only user CAs are trusted for user certs: the host CA's signature does not count …
    assert!(matches!(
        verify_user_ssh(&cert, &cas.public(), now()),
        Err(CaError::UntrustedSigner)
    ));
    // … and a host-type certificate is refused even if the host CA key were listed as user CA.
    let mut confused = cas.host.public();
    confused.kind = CaKind::User;
    assert!(matches!(
        verify_user_ssh(&cert, &[confused], now()),
        Err(CaError::WrongCertType { .. })
    ));
}

#[test]
fn host_cert_round_trip_and_principal_check() {
    let cas = Cas::generate("c", 1);
    let mut rng = rng(7);
    let host = generate_ssh_keypair(&mut rng).unwrap();
    let names = ["node-1.example.com".to_owned(), "10.0.0.5".to_owned()];
    let cert = cas
        .host
        .issue_host_ssh(
            &host.public_openssh,
            "3f2a-uuid",
            &names,
            now(),
            HOUR,
            &mut rng,
        )
        .unwrap();
    let trusted = cas.public();
    for name in ["3f2a-uuid", "node-1.example.com", "10.0.0.5"] {
        assert_eq!(
            verify_host_ssh(&cert, &trusted, name, now()).unwrap(),
            "3f2a-uuid"
        );
    }
    assert!(matches!(
        verify_host_ssh(&cert, &trusted, "evil.example.com", now()),
        Err(CaError::PrincipalNotAllowed { .. })
    ));
    // A user certificate is not a host certificate.
    let user_key = generate_ssh_keypair(&mut rng).unwrap();
    let user_cert = cas
        .user
        .issue_user_ssh(&user_key.public_openssh, &alice(), now(), HOUR, &mut rng)
        .unwrap();
    assert!(verify_host_ssh(&user_cert, &trusted, "alice", now()).is_err());
}

#[test]
fn tampered_cert_is_refused() {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;

    let cas = Cas::generate("c", 1);
    let mut rng = rng(8);
    let client = generate_ssh_keypair(&mut rng).unwrap();
    let cert = cas
        .user
        .issue_user_ssh(&client.public_openssh, &alice(), now(), HOUR, &mut rng)
        .unwrap();
    let mut parts = cert.split_whitespace();
    let algo = parts.next().unwrap();
    let blob = STANDARD.decode(parts.next().unwrap()).unwrap();
    // Replace "editor" in the hop-roles extension by "admins": still well-formed, but signed
    // bytes changed.
    let at = blob
        .windows(6)
        .position(|w| w == b"editor")
        .expect("role name in the certificate");
    let mut forged = blob.clone();
    forged[at..at + 6].copy_from_slice(b"admins");
    let forged = format!("{algo} {}", STANDARD.encode(&forged));
    assert!(matches!(
        verify_user_ssh(&forged, &cas.public(), now()),
        Err(CaError::BadSignature)
    ));
    // Flipping any single byte never verifies (and never panics).
    for i in (0..blob.len()).step_by(7) {
        let mut bad = blob.clone();
        bad[i] ^= 0x01;
        let bad = format!("{algo} {}", STANDARD.encode(&bad));
        assert!(
            verify_user_ssh(&bad, &cas.public(), now()).is_err(),
            "byte {i}"
        );
    }
}

#[test]
fn wrong_ca_kind_cannot_issue() {
    let cas = Cas::generate("c", 1);
    let mut rng = rng(9);
    let client = generate_ssh_keypair(&mut rng).unwrap();
    assert!(matches!(
        cas.host
            .issue_user_ssh(&client.public_openssh, &alice(), now(), HOUR, &mut rng),
        Err(CaError::WrongCaKind {
            kind: CaKind::Host,
            ..
        })
    ));
    assert!(matches!(
        cas.user
            .issue_host_ssh(&client.public_openssh, "h", &[], now(), HOUR, &mut rng),
        Err(CaError::WrongCaKind { .. })
    ));
    assert!(matches!(
        cas.db
            .issue_user_ssh(&client.public_openssh, &alice(), now(), HOUR, &mut rng),
        Err(CaError::WrongCaKind { .. })
    ));
}

#[test]
fn bad_subject_key_is_invalid_key() {
    let cas = Cas::generate("c", 1);
    let mut rng = rng(10);
    assert!(matches!(
        cas.user
            .issue_user_ssh("ssh-ed25519 notbase64!", &alice(), now(), HOUR, &mut rng),
        Err(CaError::InvalidKey { .. })
    ));
}

#[test]
fn seeded_rng_is_deterministic() {
    let a = generate_ssh_keypair(&mut rng(42)).unwrap();
    let b = generate_ssh_keypair(&mut rng(42)).unwrap();
    let c = generate_ssh_keypair(&mut rng(43)).unwrap();
    assert_eq!(a.private_openssh, b.private_openssh);
    assert_eq!(a.public_openssh, b.public_openssh);
    assert_ne!(a.public_openssh, c.public_openssh);
    let ca1 = CertAuthority::generate(CaKind::User, "c", now(), &mut rng(7)).unwrap();
    let ca2 = CertAuthority::generate(CaKind::User, "c", now(), &mut rng(7)).unwrap();
    assert_eq!(ca1.ssh_private_openssh, ca2.ssh_private_openssh);
    assert_eq!(ca1.x509_key_pem, ca2.x509_key_pem);
    assert_eq!(ca1.public().ssh_public, ca2.public().ssh_public);
}

#[test]
fn a_session_mfa_certificate_carries_its_target_as_a_critical_option() {
    let cas = Cas::generate("c", 1);
    let mut rng = rng(21);
    let client = generate_ssh_keypair(&mut rng).unwrap();
    let id = Identity {
        session_mfa: Some(hop_ca::SessionMfaTarget::Node {
            node: "web1".into(),
            login: "alice".into(),
        }),
        mfa_verified: true,
        ..alice()
    };
    let minute = Duration::from_secs(60);
    let cert = cas
        .user
        .issue_user_ssh(&client.public_openssh, &id, now(), minute, &mut rng)
        .unwrap();
    let parsed = russh::keys::ssh_key::Certificate::from_openssh(&cert).unwrap();
    assert_eq!(
        parsed
            .critical_options()
            .get(hop_ca::OPT_SESSION_MFA)
            .map(String::as_str),
        Some("alice@web1")
    );
    let (got, expires) = verify_user_ssh(&cert, &cas.public(), now()).unwrap();
    assert_eq!(got, id);
    assert_eq!(expires, now() + minute);
    assert!(matches!(
        verify_user_ssh(&cert, &cas.public(), now() + minute),
        Err(CaError::Expired { .. })
    ));
    // A login that cannot be told from the node is not issued.
    let bad = Identity {
        session_mfa: Some(hop_ca::SessionMfaTarget::Node {
            node: "web1".into(),
            login: "a@b".into(),
        }),
        ..alice()
    };
    assert!(
        cas.user
            .issue_user_ssh(&client.public_openssh, &bad, now(), minute, &mut rng)
            .is_err()
    );
    // A database's or a cluster's mark never goes into an SSH certificate.
    let db = Identity {
        session_mfa: Some(hop_ca::SessionMfaTarget::Database {
            db_service: "pg".into(),
            db_user: "alice".into(),
            db_name: "orders".into(),
        }),
        ..alice()
    };
    assert!(
        cas.user
            .issue_user_ssh(&client.public_openssh, &db, now(), minute, &mut rng)
            .is_err()
    );
}
