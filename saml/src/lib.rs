//! SAML 2.0 for Hop's service provider, sans-IO: the AuthnRequest Hop sends
//! ([`request`]: HTTP-Redirect binding, deflated and base64), the identity provider's metadata
//! ([`metadata`]: entity id, SSO URL, signing certificates), and the checks on the SAML
//! response the browser posts back ([`response`]).
//!
//! The XML underneath is small on purpose: [`xml`] parses with `roxmltree` after refusing a
//! document type, an entity declaration or a processing instruction outright (no DTD is ever
//! read, no entity expanded beyond XML's five and character references), under a size and a
//! node limit; [`c14n`] is exclusive XML canonicalization (the subset SAML signatures use,
//! without comments); [`dsig`] verifies an enveloped XML signature (RSA-SHA256/512 or
//! ECDSA-SHA256 with aws-lc-rs, digests SHA-256/512; SHA-1 is refused) against the connector's
//! certificates, never a key the document carries.
//!
//! Signature wrapping is refused by construction: the signed element is found by the
//! Reference's `#ID` in a document whose `ID`s are unique, it must be the signature's own
//! parent (enveloped), the document holds exactly one Assertion, and every value Hop uses is
//! read from that Assertion node: the node whose digest was checked, not one found again by
//! name. Time comes from the caller. Nothing here does I/O or logs.

#![forbid(unsafe_code)]

pub mod c14n;
pub mod dsig;
#[doc(hidden)]
pub mod fuzz;
pub mod metadata;
pub mod request;
pub mod response;
pub mod xml;

pub use metadata::IdpMetadata;
pub use response::{Expected, VerifiedAssertion, verify_response};

/// The SAML 2.0 assertion namespace.
pub const NS_ASSERTION: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
/// The SAML 2.0 protocol namespace.
pub const NS_PROTOCOL: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
/// The SAML 2.0 metadata namespace.
pub const NS_METADATA: &str = "urn:oasis:names:tc:SAML:2.0:metadata";
/// XML Signature.
pub const NS_DSIG: &str = "http://www.w3.org/2000/09/xmldsig#";
/// The HTTP-Redirect binding.
pub const BINDING_REDIRECT: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect";
/// The HTTP-POST binding.
pub const BINDING_POST: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST";

/// Why a SAML message was refused. Messages name the check, never a secret (a SAML response
/// holds none Hop keeps secret, but the text is shown to users and audited).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SamlError {
    #[error("the SAML message is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the SAML message is not valid base64")]
    Base64,
    #[error("the SAML message holds a document type or an entity declaration (refused)")]
    Doctype,
    #[error("the SAML message holds a processing instruction (refused)")]
    ProcessingInstruction,
    #[error("the SAML message is not well-formed XML: {0}")]
    Xml(String),
    #[error("the SAML message is malformed: {0}")]
    Malformed(&'static str),
    #[error("two elements of the SAML message have the same ID (refused: signature wrapping)")]
    DuplicateId,
    #[error("the SAML response holds {0} assertions; exactly one is accepted")]
    AssertionCount(usize),
    #[error("encrypted assertions are not supported; configure the IdP to sign, not encrypt")]
    Encrypted,
    #[error("the identity provider refused the login (status {0})")]
    Status(String),
    #[error("neither the SAML response nor its assertion is signed")]
    Unsigned,
    #[error("the XML signature is refused: {0}")]
    Signature(&'static str),
    #[error(
        "the XML signature uses {0}, which is refused (SHA-1); configure the IdP for rsa-sha256"
    )]
    Sha1(String),
    #[error("the XML signature's algorithm {0:?} is not supported")]
    Algorithm(String),
    #[error("the digest of the signed element does not match (the signed content was altered)")]
    Digest,
    #[error("the signature does not verify with the connector's IdP certificate")]
    BadSignature,
    #[error("the connector's IdP certificate is unusable: {0}")]
    Certificate(String),
    #[error("the assertion's issuer {got:?} is not the connector's ({want:?})")]
    Issuer { got: String, want: String },
    #[error("the assertion is not for this service provider (audience {0:?})")]
    Audience(String),
    #[error("the assertion's recipient {0:?} is not this proxy's ACS URL")]
    Recipient(String),
    #[error("the SAML response's destination {0:?} is not this proxy's ACS URL")]
    Destination(String),
    #[error("the assertion answers no request (InResponseTo missing or inconsistent)")]
    InResponseTo,
    #[error("the assertion is not yet valid (NotBefore {0})")]
    NotYetValid(String),
    #[error("the assertion has expired (NotOnOrAfter {0})")]
    Expired(String),
    #[error("the assertion names no subject (NameID)")]
    NoSubject,
}

/// The XML Schema `dateTime` SAML uses (UTC, `Z`; fractions allowed) as seconds since the Unix
/// epoch.
pub fn parse_instant(s: &str) -> Result<std::time::SystemTime, SamlError> {
    let t = time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339)
        .map_err(|_| SamlError::Malformed("a time is not an xs:dateTime"))?;
    Ok(std::time::SystemTime::from(t))
}

/// `t` as SAML writes it: `2006-01-02T15:04:05Z`.
#[must_use]
pub fn format_instant(t: std::time::SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}
