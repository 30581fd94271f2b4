//! X.509 certificate issue/verify round trips, refusals, CA material and exports.

use std::time::Duration;

use hop_ca::{
    CaError, CaKind, CertAuthority, HOP_IDENTITY_OID, HostRole, Identity, ca_pin,
    generate_x509_keypair, host_claim_x509, host_role_x509, parse_pem_certs, verify_host_x509,
    verify_user_x509,
};
use x509_parser::prelude::*;

use crate::support::{Cas, HOUR, NOW_SECS, alice, now, rng};

fn der(pem: &str) -> Vec<u8> {
    let mut certs = parse_pem_certs(pem).unwrap();
    assert_eq!(certs.len(), 1);
    certs.remove(0)
}

#[test]
fn user_cert_round_trips_identity() {
    let cas = Cas::generate("hop.example.com", 1);
    let mut rng = rng(2);
    let key = generate_x509_keypair(&mut rng).unwrap();
    let id = alice();
    let pem = cas
        .user
        .issue_user_x509(&key.public_spki_der, &id, now(), 8 * HOUR, &mut rng)
        .unwrap();
    let der = der(&pem);
    let (got, expires) = verify_user_x509(&der, &cas.public(), now()).unwrap();
    assert_eq!(got, id);
    assert_eq!(expires, now() + 8 * HOUR);

    // The profile: CN = username, O = roles, identity extension non-critical, the subject key.
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    let cn = cert.subject().iter_common_name().next().unwrap();
    assert_eq!(cn.as_str().unwrap(), "alice@example.com");
    let o = cert.subject().iter_organization().next().unwrap();
    assert_eq!(o.as_str().unwrap(), "access,editor");
    let ext = cert
        .extensions()
        .iter()
        .find(|e| e.oid.iter().unwrap().eq(HOP_IDENTITY_OID.iter().copied()))
        .unwrap();
    assert!(!ext.critical);
    assert_eq!(cert.public_key().raw, key.public_spki_der.as_slice());
    assert!(!cert.is_ca());
}

#[test]
fn identity_json_survives_unusual_content() {
    let cas = Cas::generate("c", 1);
    let mut rng = rng(3);
    let key = generate_x509_keypair(&mut rng).unwrap();
    let mut id = Identity {
        username: "ünïcode \"quoted\" user".into(),
        roles: (0..200).map(|i| format!("role-{i}")).collect(),
        ..Identity::default()
    };
    id.traits
        .insert("k".into(), vec!["v,with=odd/chars".into()]);
    let pem = cas
        .user
        .issue_user_x509(&key.public_spki_der, &id, now(), HOUR, &mut rng)
        .unwrap();
    let (got, _) = verify_user_x509(&der(&pem), &cas.public(), now()).unwrap();
    assert_eq!(got, id);
}

#[test]
fn user_cert_from_another_ca_is_untrusted() {
    let ours = Cas::generate("hop.example.com", 1);
    let theirs = Cas::generate("other.example.com", 2);
    let mut rng = rng(4);
    let key = generate_x509_keypair(&mut rng).unwrap();
    let pem = theirs
        .user
        .issue_user_x509(&key.public_spki_der, &alice(), now(), HOUR, &mut rng)
        .unwrap();
    assert!(matches!(
        verify_user_x509(&der(&pem), &ours.public(), now()),
        Err(CaError::UntrustedSigner)
    ));
    // Same cluster name (same issuer DN), different key: still refused.
    let twin = Cas::generate("hop.example.com", 3);
    let pem = twin
        .user
        .issue_user_x509(&key.public_spki_der, &alice(), now(), HOUR, &mut rng)
        .unwrap();
    assert!(matches!(
        verify_user_x509(&der(&pem), &ours.public(), now()),
        Err(CaError::UntrustedSigner | CaError::BadSignature)
    ));
    // During a rotation both CAs are trusted and either signer is accepted.
    let both: Vec<_> = ours.public().into_iter().chain(twin.public()).collect();
    verify_user_x509(&der(&pem), &both, now()).unwrap();
}

#[test]
fn expired_user_cert_is_refused() {
    let cas = Cas::generate("c", 1);
    let mut rng = rng(5);
    let key = generate_x509_keypair(&mut rng).unwrap();
    let pem = cas
        .user
        .issue_user_x509(&key.public_spki_der, &alice(), now(), HOUR, &mut rng)
        .unwrap();
    let der = der(&pem);
    match verify_user_x509(&der, &cas.public(), now() + HOUR + Duration::from_secs(1)) {
        Err(CaError::Expired { not_after }) => assert_eq!(not_after, now() + HOUR),
        other => panic!("expected Expired, got {other:?}"),
    }
    assert!(matches!(
        verify_user_x509(&der, &cas.public(), now() - Duration::from_secs(120)),
        Err(CaError::NotYetValid { .. })
    ));
}

#[test]
fn host_cert_round_trip_and_not_a_user_cert() {
    let cas = Cas::generate("c", 1);
    let mut rng = rng(6);
    let key = generate_x509_keypair(&mut rng).unwrap();
    let names = vec!["node-1.example.com".to_owned(), "10.1.2.3".to_owned()];
    let pem = cas
        .host
        .issue_host_x509(
            &key.public_spki_der,
            "3f2a-uuid",
            HostRole::Node,
            &names,
            None,
            now(),
            HOUR,
            &mut rng,
        )
        .unwrap();
    let der = der(&pem);
    let trusted = cas.public();
    let (host_id, role, expires) = verify_host_x509(&der, &trusted, now()).unwrap();
    assert_eq!((host_id.as_str(), role), ("3f2a-uuid", HostRole::Node));
    assert_eq!(expires, now() + HOUR);
    assert!(matches!(
        verify_user_x509(&der, &trusted, now()),
        Err(CaError::UntrustedSigner)
    ));
    // Even if the host CA were (mis)listed as a user CA, there is no identity in a host cert.
    let mut confused = cas.host.public();
    confused.kind = CaKind::User;
    assert!(matches!(
        verify_user_x509(&der, &[confused], now()),
        Err(CaError::MissingIdentity)
    ));
    // And a user certificate is not a host certificate.
    let user = cas
        .user
        .issue_user_x509(&key.public_spki_der, &alice(), now(), HOUR, &mut rng)
        .unwrap();
    assert!(verify_host_x509(&self::der(&user), &trusted, now()).is_err());
}

#[test]
fn every_host_certificate_names_its_role_and_other_certificates_none() {
    let cas = Cas::generate("c", 1);
    let mut rng = rng(8);
    let key = generate_x509_keypair(&mut rng).unwrap();
    for role in HostRole::ALL {
        let pem = cas
            .host
            .issue_host_x509(
                &key.public_spki_der,
                "h",
                role,
                &[],
                None,
                now(),
                HOUR,
                &mut rng,
            )
            .unwrap();
        assert_eq!(host_role_x509(&der(&pem)).unwrap(), Some(role));
        assert_eq!(
            host_claim_x509(&der(&pem)).unwrap(),
            Some(("h".to_string(), role))
        );
    }
    let user = cas
        .user
        .issue_user_x509(&key.public_spki_der, &alice(), now(), HOUR, &mut rng)
        .unwrap();
    assert_eq!(host_role_x509(&der(&user)).unwrap(), None);
    assert_eq!(host_claim_x509(&der(&user)).unwrap(), None);
    let db = cas
        .db
        .issue_db_server_x509(
            &key.public_spki_der,
            &["db.example.com".to_owned()],
            now(),
            HOUR,
            &mut rng,
        )
        .unwrap();
    assert_eq!(host_role_x509(&der(&db)).unwrap(), None);
    assert!(matches!(
        host_role_x509(b"junk"),
        Err(CaError::MalformedCertificate { .. })
    ));
}

#[test]
fn tampered_cert_is_refused() {
    let cas = Cas::generate("c", 1);
    let mut rng = rng(7);
    let key = generate_x509_keypair(&mut rng).unwrap();
    let pem = cas
        .user
        .issue_user_x509(&key.public_spki_der, &alice(), now(), HOUR, &mut rng)
        .unwrap();
    let der = der(&pem);
    let at = der
        .windows(6)
        .position(|w| w == b"editor")
        .expect("role in the certificate");
    let mut forged = der.clone();
    forged[at..at + 6].copy_from_slice(b"admins");
    assert!(matches!(
        verify_user_x509(&forged, &cas.public(), now()),
        Err(CaError::BadSignature | CaError::UntrustedSigner)
    ));
    for i in (0..der.len()).step_by(5) {
        let mut bad = der.clone();
        bad[i] ^= 0x01;
        assert!(
            verify_user_x509(&bad, &cas.public(), now()).is_err(),
            "byte {i}"
        );
    }
}

#[test]
fn db_certs_chain_to_the_db_ca() {
    let cas = Cas::generate("c", 1);
    let mut rng = rng(8);
    let key = generate_x509_keypair(&mut rng).unwrap();
    let client = cas
        .db
        .issue_db_client_x509(&key.public_spki_der, "app_user", now(), HOUR, &mut rng)
        .unwrap();
    let server = cas
        .db
        .issue_db_server_x509(
            &key.public_spki_der,
            &["pg.internal".to_owned(), "10.9.9.9".to_owned()],
            now(),
            HOUR,
            &mut rng,
        )
        .unwrap();
    let db_ca = webpki_anchor_der(&cas.db);
    let db_ca = rustls_pki_types::CertificateDer::from(db_ca.as_slice());
    let anchor = webpki::anchor_from_trusted_cert(&db_ca).unwrap();
    let time = rustls_pki_types::UnixTime::since_unix_epoch(Duration::from_secs(NOW_SECS));
    let client_der = der(&client);
    webpki::EndEntityCert::try_from(&client_der.as_slice().into())
        .unwrap()
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            std::slice::from_ref(&anchor),
            &[],
            time,
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .unwrap();
    let server_der = der(&server);
    let server_der = rustls_pki_types::CertificateDer::from(server_der.as_slice());
    let ee = webpki::EndEntityCert::try_from(&server_der).unwrap();
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &[anchor],
        &[],
        time,
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .unwrap();
    ee.verify_is_valid_for_subject_name(
        &rustls_pki_types::ServerName::try_from("pg.internal").unwrap(),
    )
    .unwrap();
    assert!(matches!(
        cas.db
            .issue_db_server_x509(&key.public_spki_der, &[], now(), HOUR, &mut rng),
        Err(CaError::InvalidRequest { .. })
    ));
    assert!(matches!(
        cas.user
            .issue_db_client_x509(&key.public_spki_der, "u", now(), HOUR, &mut rng),
        Err(CaError::WrongCaKind { .. })
    ));
}

fn webpki_anchor_der(ca: &CertAuthority) -> Vec<u8> {
    der(ca.x509_cert_pem.as_deref().unwrap())
}

#[test]
fn ca_material_matches_the_profile() {
    let cas = Cas::generate("hop.example.com", 1);
    for (ca, kind) in [
        (&cas.user, CaKind::User),
        (&cas.host, CaKind::Host),
        (&cas.db, CaKind::Db),
    ] {
        let public = ca.try_public().unwrap();
        assert_eq!(public, ca.public());
        let der = der(public.x509_cert_pem.as_deref().unwrap());
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        assert!(cert.is_ca());
        let cn = cert.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), format!("hop.example.com {kind} CA"));
        let validity = cert.validity();
        assert_eq!(validity.not_before.timestamp(), NOW_SECS as i64 - 60);
        assert_eq!(
            validity.not_after.timestamp(),
            NOW_SECS as i64 + 10 * 365 * 86_400
        );
        assert_eq!(
            public.x509_spki_sha256.as_deref(),
            Some(ca_pin(&der).unwrap().as_str())
        );
        assert!(public.x509_spki_sha256.unwrap().starts_with("sha256:"));
        assert_eq!(public.ssh_public.is_some(), kind != CaKind::Db);
        assert!(public.jwt_public_pem.is_none());
    }
    let jwt = cas.jwt.public();
    assert!(
        jwt.jwt_public_pem
            .unwrap()
            .starts_with("-----BEGIN PUBLIC KEY-----")
    );
    assert!(jwt.ssh_public.is_none() && jwt.x509_cert_pem.is_none());
    let user = cas.user.public();
    assert!(
        user.ssh_public
            .unwrap()
            .ends_with(" hop-hop.example.com-user-ca")
    );
    assert!(user.ssh_fingerprint.unwrap().starts_with("SHA256:"));
}

#[test]
fn ca_debug_never_prints_private_keys() {
    let cas = Cas::generate("c", 1);
    for ca in [&cas.user, &cas.jwt] {
        let debug = format!("{ca:?}");
        assert!(!debug.contains("PRIVATE KEY"), "{debug}");
        assert!(debug.contains("redacted"));
    }
    let key = generate_x509_keypair(&mut rng(1)).unwrap();
    assert!(!format!("{key:?}").contains("PRIVATE KEY"));
}

#[test]
fn ca_record_round_trips_through_json() {
    let cas = Cas::generate("c", 1);
    let json = serde_json::to_string(&cas.user).unwrap();
    let back: CertAuthority = serde_json::from_str(&json).unwrap();
    assert_eq!(back.public(), cas.user.public());
    let mut rng = rng(2);
    let key = generate_x509_keypair(&mut rng).unwrap();
    let pem = back
        .issue_user_x509(&key.public_spki_der, &alice(), now(), HOUR, &mut rng)
        .unwrap();
    verify_user_x509(&der(&pem), &cas.public(), now()).unwrap();
}

#[test]
fn invalid_names_and_keys_are_refused() {
    let cas = Cas::generate("c", 1);
    let mut rng = rng(9);
    let key = generate_x509_keypair(&mut rng).unwrap();
    assert!(matches!(
        cas.host.issue_host_x509(
            &key.public_spki_der,
            "h",
            HostRole::Proxy,
            &["not a name".to_owned()],
            None,
            now(),
            HOUR,
            &mut rng
        ),
        Err(CaError::InvalidRequest { .. })
    ));
    assert!(matches!(
        cas.user
            .issue_user_x509(b"garbage", &alice(), now(), HOUR, &mut rng),
        Err(CaError::InvalidKey { .. })
    ));
    assert!(parse_pem_certs("no pem here").is_err());
    assert!(ca_pin(b"\x30\x03\x02\x01\x00").is_err());
    assert!(CertAuthority::generate(CaKind::User, "", now(), &mut rng).is_err());
}

#[test]
fn every_session_mfa_target_round_trips_and_node_marks_keep_their_shape() {
    let cas = Cas::generate("c", 1);
    let mut rng = rng(31);
    let key = generate_x509_keypair(&mut rng).unwrap();
    let targets = [
        hop_ca::SessionMfaTarget::Node {
            node: "web1".into(),
            login: "alice".into(),
        },
        hop_ca::SessionMfaTarget::Database {
            db_service: "pg".into(),
            db_user: "alice".into(),
            db_name: "orders".into(),
        },
        hop_ca::SessionMfaTarget::KubeCluster {
            kube_cluster: "prod".into(),
        },
        hop_ca::SessionMfaTarget::App {
            app: "grafana".into(),
        },
    ];
    for target in targets {
        let id = Identity {
            session_mfa: Some(target),
            mfa_verified: true,
            ..alice()
        };
        let pem = cas
            .user
            .issue_user_x509(&key.public_spki_der, &id, now(), HOUR, &mut rng)
            .unwrap();
        let (got, _) = verify_user_x509(&der(&pem), &cas.public(), now()).unwrap();
        assert_eq!(got, id);
    }
    // A node mark is the `{node, login}` object certificates carried before the other shapes.
    let node: hop_ca::SessionMfaTarget =
        serde_json::from_str(r#"{"node":"web1","login":"alice"}"#).unwrap();
    assert_eq!(node.describe(), "alice@web1");
    // An application's mark is its own shape, never read as another target's.
    let app: hop_ca::SessionMfaTarget = serde_json::from_str(r#"{"app":"grafana"}"#).unwrap();
    assert_eq!(
        app,
        hop_ca::SessionMfaTarget::App {
            app: "grafana".into()
        }
    );
    assert_eq!(app.describe(), "application \"grafana\"");
}
