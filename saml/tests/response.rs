//! SAML responses signed by a real simplesamlphp 1.19.7 (captured with
//! `appliance/tests/fixtures/saml-idp/capture.py`), verified at their capture time, and the
//! refusals: tampering, signature wrapping, DTDs and entities, time, audience, recipient,
//! issuer, another key, SHA-1, and malformed input (every prefix, flipped bytes).

#![allow(clippy::unwrap_used)] // reason: test helpers outside #[test] functions

use std::time::{Duration, SystemTime};

use hop_saml::dsig::IdpKey;
use hop_saml::response::{Expected, verify_response, verify_response_xml};
use hop_saml::{SamlError, parse_instant};

const ASSERTION_SIGNED: &str = include_str!("fixtures/simplesamlphp-assertion-signed.xml");
const RESPONSE_SIGNED: &str = include_str!("fixtures/simplesamlphp-response-signed.xml");
const IDP_CERT: &str = include_str!("fixtures/simplesamlphp-idp.crt");
const METADATA: &str = include_str!("fixtures/simplesamlphp-metadata.xml");
const ACS: &str = "http://127.0.0.1:3080/v1/webapi/saml/acs/saml-test";
const IDP: &str = "http://127.0.0.1:7081/saml2/idp/metadata.php";

fn keys() -> Vec<IdpKey> {
    IdpKey::from_pem_or_base64(IDP_CERT).unwrap()
}

fn issued(xml: &str) -> SystemTime {
    let at = xml.find("IssueInstant=\"").unwrap() + "IssueInstant=\"".len();
    parse_instant(&xml[at..at + 20]).unwrap()
}

fn check(xml: &str, now: SystemTime) -> Result<hop_saml::VerifiedAssertion, SamlError> {
    let keys = keys();
    verify_response_xml(
        xml,
        &Expected {
            idp_issuer: IDP,
            audience: ACS,
            acs_url: ACS,
            keys: &keys,
            now,
            skew: Duration::from_secs(60),
        },
    )
}

fn ok(xml: &str) -> Result<hop_saml::VerifiedAssertion, SamlError> {
    check(xml, issued(xml) + Duration::from_secs(10))
}

#[test]
fn real_simplesamlphp_responses_verify() {
    let v = ok(ASSERTION_SIGNED).unwrap();
    assert_eq!(v.name_id, "alice@example.test");
    assert_eq!(v.in_response_to, "_req0001");
    assert_eq!(v.issuer, IDP);
    assert_eq!(v.attributes["groups"], ["devs", "staff"]);
    assert_eq!(v.attributes["uid"], ["alice"]);
    assert!(v.assertion_id.starts_with('_'));
    assert!(v.remember_until > issued(ASSERTION_SIGNED) + Duration::from_secs(300));
    // Response and assertion both signed.
    let v = ok(RESPONSE_SIGNED).unwrap();
    assert_eq!(v.in_response_to, "_req0002");
    // The base64 form value, as the browser posts it.
    let b64 = data_encoding::BASE64.encode(ASSERTION_SIGNED.as_bytes());
    let keys = keys();
    let want = Expected {
        idp_issuer: IDP,
        audience: ACS,
        acs_url: ACS,
        keys: &keys,
        now: issued(ASSERTION_SIGNED) + Duration::from_secs(10),
        skew: Duration::from_secs(60),
    };
    assert!(verify_response(&b64, &want).is_ok());
    assert_eq!(verify_response("%%%", &want), Err(SamlError::Base64));
}

#[test]
fn the_metadata_names_the_idp_and_its_certificate() {
    let m = hop_saml::metadata::parse_metadata(METADATA).unwrap();
    assert_eq!(m.entity_id, IDP);
    assert_eq!(m.sso_url, "http://127.0.0.1:7081/saml2/idp/SSOService.php");
    assert_eq!(m.keys().unwrap(), keys());
    for i in 0..METADATA.trim_end().len() {
        if METADATA.is_char_boundary(i) {
            assert!(hop_saml::metadata::parse_metadata(&METADATA[..i]).is_err());
        }
    }
}

#[test]
fn a_tampered_attribute_or_subject_is_refused() {
    for (from, to) in [
        (">devs<", ">admins<"),
        (
            ">alice@example.test</saml:NameID>",
            ">root@example.test</saml:NameID>",
        ),
        // Only whitespace inside the signed assertion.
        ("<saml:Subject>", "<saml:Subject> "),
    ] {
        let t = ASSERTION_SIGNED.replacen(from, to, 1);
        assert_ne!(t, ASSERTION_SIGNED);
        assert_eq!(ok(&t).err(), Some(SamlError::Digest), "{from}");
    }
    // The signature value itself.
    let at = ASSERTION_SIGNED.find("<ds:SignatureValue>").unwrap() + 25;
    let mut t = ASSERTION_SIGNED.to_string();
    let c = if &t[at..=at] == "A" { "B" } else { "A" };
    t.replace_range(at..=at, c);
    assert_eq!(ok(&t).err(), Some(SamlError::BadSignature));
    // A signed response whose assertion was altered: both signatures catch it.
    let t = RESPONSE_SIGNED.replacen(">devs<", ">admins<", 1);
    assert_eq!(ok(&t).err(), Some(SamlError::Digest));
    // Another IdP's key.
    let other = "-----BEGIN CERTIFICATE-----\nMIIBfTCCASOgAwIBAgIUb3+Yo0WUb6wL3HbT/xvXm3yaYXQwCgYIKoZIzj0EAwIwFDESMBAGA1UEAwwJb3RoZXItaWRwMB4XDTI2MDEwMTAwMDAwMFoXDTM2MDEwMTAwMDAwMFowFDESMBAGA1UEAwwJb3RoZXItaWRwMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END CERTIFICATE-----\n";
    assert!(IdpKey::from_pem_or_base64(other).is_err());
}

fn assertion_of(xml: &str) -> &str {
    let s = xml.find("<saml:Assertion").unwrap();
    let e = xml.find("</saml:Assertion>").unwrap() + "</saml:Assertion>".len();
    &xml[s..e]
}

/// The signed assertion with its signature removed and its content changed: what a wrapping
/// attacker would like Hop to read.
fn evil(xml: &str) -> String {
    let a = assertion_of(xml);
    let s = a.find("<ds:Signature").unwrap();
    let e = a.find("</ds:Signature>").unwrap() + "</ds:Signature>".len();
    format!("{}{}", &a[..s], &a[e..])
        .replace(">alice@example.test<", ">root@example.test<")
        .replace(">devs<", ">admins<")
}

#[test]
fn signature_wrapping_is_refused() {
    let signed = assertion_of(ASSERTION_SIGNED);
    let id_at = signed.find("ID=\"").unwrap() + 4;
    let id = &signed[id_at..id_at + signed[id_at..].find('"').unwrap()];
    // 1. The signed assertion moved into Extensions, an unsigned one where Hop reads.
    let moved = ASSERTION_SIGNED.replacen(
        signed,
        &format!(
            "<samlp:Extensions>{signed}</samlp:Extensions>{}",
            evil(ASSERTION_SIGNED).replacen(id, "_evil", 1)
        ),
        1,
    );
    assert_eq!(ok(&moved).err(), Some(SamlError::AssertionCount(2)));
    // 2. The same, with the injected assertion reusing the signed one's ID.
    let dup = ASSERTION_SIGNED.replacen(
        signed,
        &format!(
            "<samlp:Extensions>{signed}</samlp:Extensions>{}",
            evil(ASSERTION_SIGNED)
        ),
        1,
    );
    assert_eq!(ok(&dup).err(), Some(SamlError::DuplicateId));
    // 3. The signed assertion nested inside the evil one (its signature's parent is then the
    //    signed assertion, not the one Hop would read).
    let e = evil(ASSERTION_SIGNED).replacen(id, "_evil", 1);
    let nested = ASSERTION_SIGNED.replacen(
        signed,
        &e.replacen("</saml:Issuer>", &format!("</saml:Issuer>{signed}"), 1),
        1,
    );
    assert!(ok(&nested).is_err());
    // 4. The unsigned assertion alone.
    let alone = ASSERTION_SIGNED.replacen(signed, &evil(ASSERTION_SIGNED), 1);
    assert_eq!(ok(&alone).err(), Some(SamlError::Unsigned));
    // 5. A signed Response whose Reference is made to name the assertion: the reference must
    //    be the signature's own parent.
    let rs = RESPONSE_SIGNED;
    let resp_id_at = rs.find("ID=\"").unwrap() + 4;
    let resp_id = &rs[resp_id_at..resp_id_at + rs[resp_id_at..].find('"').unwrap()];
    let a_id_at = rs.find("<saml:Assertion").unwrap();
    let a_id_at = a_id_at + rs[a_id_at..].find("ID=\"").unwrap() + 4;
    let a_id = &rs[a_id_at..a_id_at + rs[a_id_at..].find('"').unwrap()];
    let swapped = rs.replacen(
        &format!("URI=\"#{resp_id}\""),
        &format!("URI=\"#{a_id}\""),
        1,
    );
    assert_ne!(swapped, rs);
    assert!(matches!(ok(&swapped), Err(SamlError::Signature(_))));
    // 6. An evil assertion replacing the signed one in a signed Response: the Response's digest.
    let replaced = rs.replacen(assertion_of(rs), &evil(rs), 1);
    assert_eq!(ok(&replaced).err(), Some(SamlError::Digest));
}

#[test]
fn doctypes_entities_and_processing_instructions_are_refused() {
    let xxe = format!(
        "<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>{}",
        ASSERTION_SIGNED.replacen(">alice<", ">&x;<", 1)
    );
    assert_eq!(ok(&xxe).err(), Some(SamlError::Doctype));
    let laughs = format!(
        "<!DOCTYPE r [<!ENTITY a \"aaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;\">]>{ASSERTION_SIGNED}"
    );
    assert_eq!(ok(&laughs).err(), Some(SamlError::Doctype));
    let pi = ASSERTION_SIGNED.replacen("<saml:Subject>", "<saml:Subject><?x y?>", 1);
    assert_eq!(ok(&pi).err(), Some(SamlError::ProcessingInstruction));
}

#[test]
fn time_audience_recipient_and_issuer_are_checked() {
    let at = issued(ASSERTION_SIGNED);
    // Valid for 5 minutes, with 60 s of skew allowed each way.
    assert!(check(ASSERTION_SIGNED, at + Duration::from_secs(300 + 59)).is_ok());
    assert!(matches!(
        check(ASSERTION_SIGNED, at + Duration::from_secs(300 + 60)),
        Err(SamlError::Expired(_))
    ));
    assert!(matches!(
        check(ASSERTION_SIGNED, at - Duration::from_secs(30 + 61)),
        Err(SamlError::NotYetValid(_))
    ));
    let keys = keys();
    let base = Expected {
        idp_issuer: IDP,
        audience: ACS,
        acs_url: ACS,
        keys: &keys,
        now: at,
        skew: Duration::from_secs(60),
    };
    let other_sp = Expected {
        audience: "https://other.example/sp",
        ..base.clone()
    };
    assert!(matches!(
        verify_response_xml(ASSERTION_SIGNED, &other_sp),
        Err(SamlError::Audience(_))
    ));
    let other_acs = Expected {
        acs_url: "https://other.example/acs",
        ..base.clone()
    };
    assert!(matches!(
        verify_response_xml(ASSERTION_SIGNED, &other_acs),
        Err(SamlError::Destination(_))
    ));
    // The Response's Destination is not signed here: without it, the signed Recipient decides.
    let no_dest = ASSERTION_SIGNED.replacen(&format!(" Destination=\"{ACS}\""), "", 1);
    assert!(verify_response_xml(&no_dest, &base).is_ok());
    assert!(matches!(
        verify_response_xml(&no_dest, &other_acs),
        Err(SamlError::Recipient(_))
    ));
    let other_idp = Expected {
        idp_issuer: "https://other-idp.example",
        ..base.clone()
    };
    assert!(matches!(
        verify_response_xml(ASSERTION_SIGNED, &other_idp),
        Err(SamlError::Issuer { .. })
    ));
    // An unsigned Response claiming another request than the signed assertion.
    let irt = ASSERTION_SIGNED.replacen("InResponseTo=\"_req0001\"", "InResponseTo=\"_other\"", 1);
    assert_eq!(
        verify_response_xml(&irt, &base).err(),
        Some(SamlError::InResponseTo)
    );
    // The skew is capped.
    let huge = Expected {
        skew: Duration::from_secs(86_400),
        now: at + Duration::from_secs(3600),
        ..base.clone()
    };
    assert!(matches!(
        verify_response_xml(ASSERTION_SIGNED, &huge),
        Err(SamlError::Expired(_))
    ));
}

#[test]
fn sha1_and_unknown_algorithms_are_refused() {
    let t = ASSERTION_SIGNED.replacen(
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
        "http://www.w3.org/2000/09/xmldsig#rsa-sha1",
        1,
    );
    assert!(matches!(ok(&t), Err(SamlError::Sha1(_))));
    let t = ASSERTION_SIGNED.replacen(
        "http://www.w3.org/2001/04/xmlenc#sha256",
        "http://www.w3.org/2000/09/xmldsig#sha1",
        1,
    );
    assert!(matches!(ok(&t), Err(SamlError::Sha1(_))));
    let t = ASSERTION_SIGNED.replacen(
        "<ds:Transform Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/>",
        "<ds:Transform Algorithm=\"http://www.w3.org/TR/1999/REC-xslt-19991116\"/>",
        1,
    );
    assert!(matches!(ok(&t), Err(SamlError::Algorithm(_))));
}

#[test]
fn every_prefix_and_flipped_bytes_are_refused_without_panic() {
    for xml in [ASSERTION_SIGNED, RESPONSE_SIGNED] {
        let now = issued(xml) + Duration::from_secs(10);
        for i in 0..xml.trim_end().len() {
            if xml.is_char_boundary(i) {
                assert!(check(&xml[..i], now).is_err());
            }
        }
        let bytes = xml.as_bytes();
        for i in (0..bytes.len()).step_by(7) {
            let mut b = bytes.to_vec();
            b[i] ^= 0x20;
            if let Ok(s) = std::str::from_utf8(&b) {
                // Flipping case or a space may leave an equivalent document (an attribute
                // value Hop does not read); it must never be accepted with other content.
                if let Ok(v) = check(s, now) {
                    assert_eq!(v, check(xml, now).unwrap(), "flip at {i}");
                }
            }
        }
    }
}
