use std::time::{Duration, UNIX_EPOCH};

use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use super::*;
use crate::keys::generate_x509_keypair;

fn spiffe_ca() -> CertAuthority {
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    CertAuthority::generate(CaKind::Spiffe, "Hop.Example", now, &mut rand::rng()).unwrap()
}

fn der(pem: &str) -> Vec<u8> {
    x509::parse_pem_certs(pem).unwrap().remove(0)
}

/// The URI SANs of a certificate.
fn uris(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    let san = cert.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::URI(u) => (*u).to_owned(),
            other => panic!("unexpected SAN {other:?}"),
        })
        .collect()
}

#[test]
fn svid_has_one_uri_san_and_the_leaf_profile() {
    let ca = spiffe_ca();
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_100);
    let key = generate_x509_keypair(&mut rand::rng()).unwrap();
    let ttl = Duration::from_secs(600);
    let pem = ca
        .issue_svid(&key.public_spki_der, "/svc/foo", now, ttl, &mut rand::rng())
        .unwrap();
    let der = der(&pem);
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&der).unwrap();
    assert_eq!(uris(&cert), ["spiffe://hop.example/svc/foo"]);
    let bc = cert.basic_constraints().unwrap().unwrap().value;
    assert!(!bc.ca);
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature());
    assert_eq!(ku.flags, 1, "digitalSignature only");
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    assert!(!eku.code_signing && !eku.any);
    let life = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    assert_eq!(life, 600 + 60, "ttl plus the clock-skew allowance");
    // The CA's own certificate names the trust domain and is a CA.
    let ca_der = der_of_ca(&ca);
    let (_, ca_cert) = x509_parser::certificate::X509Certificate::from_der(&ca_der).unwrap();
    assert_eq!(uris(&ca_cert), ["spiffe://hop.example"]);
    assert!(ca_cert.basic_constraints().unwrap().unwrap().value.ca);
    assert!(cert.extensions().iter().all(|e| !matches!(
        e.parsed_extension(),
        ParsedExtension::UnsupportedExtension { .. }
    )));
}

fn der_of_ca(ca: &CertAuthority) -> Vec<u8> {
    der(ca.x509_cert_pem.as_deref().unwrap())
}

#[test]
fn only_the_spiffe_ca_issues_svids() {
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let user = CertAuthority::generate(CaKind::User, "c", now, &mut rand::rng()).unwrap();
    let key = generate_x509_keypair(&mut rand::rng()).unwrap();
    let got = user.issue_svid(
        &key.public_spki_der,
        "/svc",
        now,
        Duration::from_secs(60),
        &mut rand::rng(),
    );
    assert!(matches!(got, Err(CaError::WrongCaKind { .. })), "{got:?}");
}

#[test]
fn spiffe_paths_are_checked() {
    for ok in ["/svc", "/svc/foo", "/ns/prod/sa/web-1", "/a.b_c-D"] {
        assert!(check_spiffe_path(ok).is_ok(), "{ok}");
    }
    for bad in [
        "",
        "svc",
        "/",
        "/svc/",
        "//svc",
        "/svc//foo",
        "/./svc",
        "/svc/..",
        "/svc foo",
        "/svc?x",
        "/svc#x",
        "/svc%20",
        "/sv*",
    ] {
        assert!(check_spiffe_path(bad).is_err(), "{bad:?} accepted");
    }
    assert!(spiffe_id("c", &format!("/{}", "a".repeat(3000))).is_err());
    assert_eq!(spiffe_id("Hop-1", "/x").unwrap(), "spiffe://hop-1/x");
    assert!(spiffe_trust_domain("bad:domain").is_err());
}
