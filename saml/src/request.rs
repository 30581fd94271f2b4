//! The AuthnRequest Hop sends with the HTTP-Redirect binding (SAML Bindings §3.4): the XML,
//! deflated (raw DEFLATE), base64, as the `SAMLRequest` query parameter, with `RelayState`.
//! The request's `ID` is what the response's `InResponseTo` must name.

use std::io::Write;
use std::time::SystemTime;

use crate::{BINDING_POST, NS_ASSERTION, NS_PROTOCOL, format_instant};

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// A new request ID: `_` and 32 random bytes in hex (an XML NCName).
#[must_use]
pub fn new_request_id() -> String {
    let mut b = [0u8; 32];
    if aws_lc_rs::rand::fill(&mut b).is_err() {
        // aws-lc's RNG does not fail; if it ever did, a request must not go out with a
        // predictable ID.
        return String::new();
    }
    format!("_{}", data_encoding::HEXLOWER.encode(&b))
}

/// The AuthnRequest XML.
#[must_use]
pub fn authn_request(
    id: &str,
    now: SystemTime,
    destination: &str,
    acs_url: &str,
    sp_issuer: &str,
) -> String {
    format!(
        "<samlp:AuthnRequest xmlns:samlp=\"{NS_PROTOCOL}\" xmlns:saml=\"{NS_ASSERTION}\" ID=\"{}\" Version=\"2.0\" IssueInstant=\"{}\" Destination=\"{}\" AssertionConsumerServiceURL=\"{}\" ProtocolBinding=\"{BINDING_POST}\"><saml:Issuer>{}</saml:Issuer><samlp:NameIDPolicy AllowCreate=\"true\"/></samlp:AuthnRequest>",
        escape(id),
        format_instant(now),
        escape(destination),
        escape(acs_url),
        escape(sp_issuer),
    )
}

/// The `SAMLRequest` value: base64(deflate(xml)).
#[must_use]
pub fn deflate_b64(xml: &str) -> String {
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    // Writing to a Vec does not fail.
    let _ = enc.write_all(xml.as_bytes());
    let bytes = enc.finish().unwrap_or_default();
    data_encoding::BASE64.encode(&bytes)
}

/// Inflates a `SAMLRequest` value (tests, and the fuzz target), at most `limit` bytes.
pub fn inflate_b64(value: &str, limit: usize) -> Option<String> {
    use std::io::Read;
    let raw = crate::xml::b64(value).ok()?;
    let mut out = Vec::new();
    flate2::read::DeflateDecoder::new(raw.as_slice())
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .ok()?;
    if out.len() > limit {
        return None;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_round_trips_and_escapes() {
        let id = new_request_id();
        assert_eq!(id.len(), 65);
        let xml = authn_request(
            &id,
            SystemTime::UNIX_EPOCH,
            "https://idp/sso",
            "https://p/acs?a=1&b=2",
            "hop<",
        );
        let back = inflate_b64(&deflate_b64(&xml), 1 << 16).unwrap();
        assert_eq!(back, xml);
        let doc = crate::xml::parse(&back).unwrap();
        let root = doc.root_element();
        assert_eq!(root.attribute("ID"), Some(id.as_str()));
        assert_eq!(
            root.attribute("AssertionConsumerServiceURL"),
            Some("https://p/acs?a=1&b=2")
        );
        assert_eq!(root.attribute("IssueInstant"), Some("1970-01-01T00:00:00Z"));
        assert!(inflate_b64(&deflate_b64(&"a".repeat(100)), 10).is_none());
    }
}
