//! The entry point of the `saml_response` fuzz target: every parser of IdP bytes on arbitrary
//! input (the response checks, as XML and as the base64 form value, against a real IdP
//! certificate; metadata; the hardened parse and canonicalization of anything that parses;
//! the AuthnRequest inflater). An error, never a panic.

use std::time::{Duration, SystemTime};

use crate::dsig::IdpKey;
use crate::response::{Expected, verify_response, verify_response_xml};

const CERT: &str = include_str!("../tests/fixtures/simplesamlphp-idp.crt");

/// Runs every parser on `data`.
pub fn parse_all(data: &[u8]) {
    let keys = IdpKey::from_pem_or_base64(CERT).unwrap_or_default();
    let want = Expected {
        idp_issuer: "http://127.0.0.1:7081/saml2/idp/metadata.php",
        audience: "http://127.0.0.1:3080/v1/webapi/saml/acs/saml-test",
        acs_url: "http://127.0.0.1:3080/v1/webapi/saml/acs/saml-test",
        keys: &keys,
        now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_620_870),
        skew: Duration::from_secs(60),
    };
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = verify_response_xml(text, &want);
        let _ = verify_response(text, &want);
        let _ = crate::metadata::parse_metadata(text);
        let _ = crate::request::inflate_b64(text, 64 * 1024);
        let _ = IdpKey::from_pem_or_base64(text);
        if let Ok(doc) = crate::xml::parse(text) {
            let ids = crate::dsig::id_index(&doc);
            for n in doc.descendants().filter(|n| n.is_element()).take(64) {
                let _ = crate::c14n::canonicalize(n, None, &["#default".into()]);
                if let Ok(ids) = &ids
                    && crate::xml::is(n, crate::NS_DSIG, "Signature")
                {
                    let _ = crate::dsig::verify_enveloped(n, ids, &keys);
                }
            }
        }
    }
    let _ = IdpKey::from_der(data);
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_fixtures_and_garbage_go_through() {
        super::parse_all(include_bytes!(
            "../tests/fixtures/simplesamlphp-assertion-signed.xml"
        ));
        super::parse_all(include_bytes!(
            "../tests/fixtures/simplesamlphp-response-signed.xml"
        ));
        super::parse_all(include_bytes!(
            "../tests/fixtures/simplesamlphp-metadata.xml"
        ));
        super::parse_all(b"\xff\x00<");
    }
}
