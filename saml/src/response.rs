//! The checks on a SAML response (HTTP-POST binding) before Hop believes a word of it.
//!
//! In order: size, base64, the hardened parse (no DTD, no entity, no PI), unique IDs, the root
//! is a `samlp:Response` holding exactly one `saml:Assertion` (anywhere in the document) as its
//! child and no encrypted one, success status, then signatures: every `ds:Signature` directly
//! under the Response or the Assertion must verify, and one of them must; the Assertion is
//! trusted only as the child of a verified Response or as the parent of its own verified
//! signature. Only then is the Assertion read, and only that node: issuer, audience (the SP
//! entity id), bearer subject confirmation (recipient = the ACS URL, `InResponseTo` present and
//! equal to the Response's when that names one too, not after `NotOnOrAfter`), conditions
//! (`NotBefore`/`NotOnOrAfter` within the allowed skew), NameID and attributes.
//!
//! Whether `InResponseTo` names a request Hop sent and has not seen answered, and whether the
//! assertion ID was seen before, are the caller's checks (they need storage); this module hands
//! back both, and the time until which the ID must be remembered.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use roxmltree::Node;

use crate::dsig::{IdpKey, id_index, verify_enveloped};
use crate::xml::{children, is, only_child, text};
use crate::{NS_ASSERTION, NS_DSIG, NS_PROTOCOL, SamlError, format_instant, parse_instant};

/// The largest `SAMLResponse` form value accepted (base64 of [`crate::xml::MAX_XML`]).
pub const MAX_RESPONSE_B64: usize = crate::xml::MAX_XML / 3 * 4 + 4096;
/// The most clock skew ever allowed between Hop and an IdP.
pub const MAX_SKEW: Duration = Duration::from_secs(5 * 60);
const SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";
const BEARER: &str = "urn:oasis:names:tc:SAML:2.0:cm:bearer";

/// What the response must match.
#[derive(Debug, Clone)]
pub struct Expected<'a> {
    /// The IdP's entity id (the Assertion's `Issuer`).
    pub idp_issuer: &'a str,
    /// Hop's entity id (`service_provider_issuer`, the `Audience`).
    pub audience: &'a str,
    /// The ACS URL the response was posted to (`Recipient`, `Destination`).
    pub acs_url: &'a str,
    pub keys: &'a [IdpKey],
    pub now: SystemTime,
    /// Clock skew allowed each way (capped at [`MAX_SKEW`]).
    pub skew: Duration,
}

/// A verified assertion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedAssertion {
    pub assertion_id: String,
    pub issuer: String,
    /// The ID of Hop's AuthnRequest this answers.
    pub in_response_to: String,
    pub name_id: String,
    /// Attribute `Name` → values.
    pub attributes: BTreeMap<String, Vec<String>>,
    /// Until when the assertion ID must be remembered (the latest expiry it carries, plus skew).
    pub remember_until: SystemTime,
}

fn instant_attr(n: Node<'_, '_>, name: &str) -> Result<Option<SystemTime>, SamlError> {
    n.attribute(name).map(parse_instant).transpose()
}

/// Decodes the base64 `SAMLResponse` form value and verifies it.
pub fn verify_response(b64: &str, want: &Expected<'_>) -> Result<VerifiedAssertion, SamlError> {
    if b64.len() > MAX_RESPONSE_B64 {
        return Err(SamlError::TooLarge(crate::xml::MAX_XML));
    }
    let raw = crate::xml::b64(b64)?;
    let text = String::from_utf8(raw).map_err(|_| SamlError::Malformed("not UTF-8"))?;
    verify_response_xml(&text, want)
}

/// [`verify_response`] of the decoded XML.
pub fn verify_response_xml(xml: &str, want: &Expected<'_>) -> Result<VerifiedAssertion, SamlError> {
    let doc = crate::xml::parse(xml)?;
    let ids = id_index(&doc)?;
    let root = doc.root_element();
    if !is(root, NS_PROTOCOL, "Response") {
        return Err(SamlError::Malformed("the root is not a samlp:Response"));
    }
    if doc
        .descendants()
        .any(|n| is(n, NS_ASSERTION, "EncryptedAssertion"))
    {
        return Err(SamlError::Encrypted);
    }
    let assertions = doc
        .descendants()
        .filter(|n| is(*n, NS_ASSERTION, "Assertion"))
        .count();
    if assertions != 1 {
        return Err(SamlError::AssertionCount(assertions));
    }
    let assertion = only_child(root, NS_ASSERTION, "Assertion", "two assertions")?.ok_or(
        SamlError::Malformed("the assertion is not the response's child"),
    )?;

    // Status first: a refusal by the IdP is reported as such (it is not signed, and says only
    // that the login failed).
    let status = only_child(root, NS_PROTOCOL, "Status", "two Status")?
        .and_then(|s| {
            only_child(s, NS_PROTOCOL, "StatusCode", "two StatusCode")
                .ok()
                .flatten()
        })
        .and_then(|c| c.attribute("Value"))
        .unwrap_or("");
    if status != SUCCESS {
        return Err(SamlError::Status(
            status
                .rsplit(':')
                .next()
                .unwrap_or("none")
                .chars()
                .take(60)
                .collect(),
        ));
    }

    // Signatures: all present must verify; one must cover the assertion.
    let mut covered = false;
    for holder in [root, assertion] {
        let mut sigs = children(holder, NS_DSIG, "Signature");
        if let Some(sig) = sigs.next() {
            if sigs.next().is_some() {
                return Err(SamlError::Signature("two signatures on one element"));
            }
            let signed = verify_enveloped(sig, &ids, want.keys)?;
            if signed.id() == holder.id() {
                covered = true;
            }
        }
    }
    if !covered {
        return Err(SamlError::Unsigned);
    }
    // A signature anywhere else is not one Hop checked: refuse it rather than leave it be.
    let stray = doc
        .descendants()
        .filter(|n| is(*n, NS_DSIG, "Signature"))
        .any(|s| {
            s.parent_element()
                .is_none_or(|p| p.id() != root.id() && p.id() != assertion.id())
        });
    if stray {
        return Err(SamlError::Signature("a signature in an unexpected place"));
    }

    let skew = want.skew.min(MAX_SKEW);
    let now = want.now;
    let late = |until: SystemTime| now >= until + skew;

    // Response-level fields, checked when present (they are covered only by a Response
    // signature, so nothing is taken from them).
    if let Some(d) = root.attribute("Destination")
        && d != want.acs_url
    {
        return Err(SamlError::Destination(d.chars().take(200).collect()));
    }

    let issuer = only_child(assertion, NS_ASSERTION, "Issuer", "two issuers")?
        .map(text)
        .ok_or(SamlError::Malformed("the assertion has no Issuer"))?;
    if issuer.trim() != want.idp_issuer {
        return Err(SamlError::Issuer {
            got: issuer.chars().take(200).collect(),
            want: want.idp_issuer.to_string(),
        });
    }
    let assertion_id = assertion
        .attribute("ID")
        .filter(|i| !i.is_empty())
        .ok_or(SamlError::Malformed("the assertion has no ID"))?
        .to_string();

    // Conditions.
    let conditions = only_child(assertion, NS_ASSERTION, "Conditions", "two Conditions")?
        .ok_or(SamlError::Malformed("the assertion has no Conditions"))?;
    let mut remember_until = now;
    if let Some(nb) = instant_attr(conditions, "NotBefore")?
        && now + skew < nb
    {
        return Err(SamlError::NotYetValid(format_instant(nb)));
    }
    let cond_until = instant_attr(conditions, "NotOnOrAfter")?.ok_or(SamlError::Malformed(
        "the assertion's Conditions have no NotOnOrAfter",
    ))?;
    if late(cond_until) {
        return Err(SamlError::Expired(format_instant(cond_until)));
    }
    remember_until = remember_until.max(cond_until);
    let restrictions: Vec<_> = children(conditions, NS_ASSERTION, "AudienceRestriction").collect();
    if restrictions.is_empty() {
        return Err(SamlError::Audience(String::new()));
    }
    for r in restrictions {
        let audiences: Vec<String> = children(r, NS_ASSERTION, "Audience")
            .map(|a| text(a).trim().to_string())
            .collect();
        if !audiences.iter().any(|a| a == want.audience) {
            return Err(SamlError::Audience(
                audiences.join(" ").chars().take(200).collect(),
            ));
        }
    }

    // Subject: a bearer confirmation for this ACS, answering a request.
    let subject = only_child(assertion, NS_ASSERTION, "Subject", "two Subject")?
        .ok_or(SamlError::NoSubject)?;
    let name_id = only_child(subject, NS_ASSERTION, "NameID", "two NameID")?
        .map(|n| text(n).trim().to_string())
        .filter(|n| !n.is_empty())
        .ok_or(SamlError::NoSubject)?;
    let mut in_response_to = None;
    let mut last_err = SamlError::Malformed("no bearer SubjectConfirmation");
    for sc in children(subject, NS_ASSERTION, "SubjectConfirmation") {
        if sc.attribute("Method") != Some(BEARER) {
            continue;
        }
        let Some(data) = only_child(sc, NS_ASSERTION, "SubjectConfirmationData", "two data")?
        else {
            continue;
        };
        let recipient = data.attribute("Recipient").unwrap_or("");
        if recipient != want.acs_url {
            last_err = SamlError::Recipient(recipient.chars().take(200).collect());
            continue;
        }
        let Some(until) = instant_attr(data, "NotOnOrAfter")? else {
            last_err = SamlError::Malformed("SubjectConfirmationData has no NotOnOrAfter");
            continue;
        };
        if late(until) {
            last_err = SamlError::Expired(format_instant(until));
            continue;
        }
        if let Some(nb) = instant_attr(data, "NotBefore")?
            && now + skew < nb
        {
            last_err = SamlError::NotYetValid(format_instant(nb));
            continue;
        }
        let Some(irt) = data.attribute("InResponseTo").filter(|i| !i.is_empty()) else {
            last_err = SamlError::InResponseTo;
            continue;
        };
        remember_until = remember_until.max(until);
        in_response_to = Some(irt.to_string());
        break;
    }
    let in_response_to = in_response_to.ok_or(last_err)?;
    if let Some(r) = root.attribute("InResponseTo")
        && r != in_response_to
    {
        return Err(SamlError::InResponseTo);
    }

    let mut attributes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for st in children(assertion, NS_ASSERTION, "AttributeStatement") {
        for a in children(st, NS_ASSERTION, "Attribute") {
            let Some(name) = a.attribute("Name").filter(|n| !n.is_empty()) else {
                continue;
            };
            let values: Vec<String> = children(a, NS_ASSERTION, "AttributeValue")
                .map(|v| text(v).trim().to_string())
                .collect();
            attributes
                .entry(name.to_string())
                .or_default()
                .extend(values);
        }
    }
    Ok(VerifiedAssertion {
        assertion_id,
        issuer: issuer.trim().to_string(),
        in_response_to,
        name_id,
        attributes,
        remember_until: remember_until + skew,
    })
}
