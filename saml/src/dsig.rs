//! Enveloped XML signatures (XML-DSig 1.0 as SAML uses them), checked against the connector's
//! certificates only (a `KeyInfo` in the document is ignored).
//!
//! One `Signature` is verified against its parent element: `SignedInfo` canonicalized with
//! exclusive c14n, exactly one `Reference` whose URI is `#` + the parent's `ID`, resolved in a
//! document whose IDs are unique ([`id_index`]) to that very parent; transforms
//! enveloped-signature and exclusive c14n only; the digest (SHA-256/512) of the parent without
//! this signature compared; the signature value verified (RSA PKCS#1 v1.5 with SHA-256/512, or
//! ECDSA P-256/P-384). SHA-1 in any place is refused.

use std::collections::HashMap;

use aws_lc_rs::{digest, signature};
use roxmltree::{Document, Node, NodeId};

use crate::xml::{b64, children, only_child, text};
use crate::{NS_DSIG, SamlError};

const EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";

/// A trusted signing key: the public key of an IdP certificate.
#[derive(Clone, PartialEq, Eq)]
pub struct IdpKey {
    /// `true`: RSA (PKCS#1 RSAPublicKey); `false`: EC (an uncompressed point).
    rsa: bool,
    ec_curve: Option<&'static str>,
    key: Vec<u8>,
}

impl std::fmt::Debug for IdpKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdpKey")
            .field("rsa", &self.rsa)
            .field("ec_curve", &self.ec_curve)
            .finish_non_exhaustive()
    }
}

impl IdpKey {
    /// The key of a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, SamlError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| SamlError::Certificate(format!("not an X.509 certificate: {e}")))?;
        let spki = cert.public_key();
        let oid = spki.algorithm.algorithm.to_id_string();
        let key = spki.subject_public_key.data.to_vec();
        match oid.as_str() {
            "1.2.840.113549.1.1.1" => Ok(Self {
                rsa: true,
                ec_curve: None,
                key,
            }),
            "1.2.840.10045.2.1" => {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok())
                    .map(|o| o.to_id_string());
                let curve = match curve.as_deref() {
                    Some("1.2.840.10045.3.1.7") => "P-256",
                    Some("1.3.132.0.34") => "P-384",
                    _ => return Err(SamlError::Certificate("an unsupported EC curve".into())),
                };
                Ok(Self {
                    rsa: false,
                    ec_curve: Some(curve),
                    key,
                })
            }
            other => Err(SamlError::Certificate(format!(
                "an unsupported key algorithm {other}"
            ))),
        }
    }

    /// The keys of PEM certificates, or of one bare base64 certificate (as metadata holds it).
    pub fn from_pem_or_base64(text: &str) -> Result<Vec<Self>, SamlError> {
        let mut keys = Vec::new();
        if text.contains("-----BEGIN") {
            let mut rest = text;
            while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
                let body = &rest[start + "-----BEGIN CERTIFICATE-----".len()..];
                let end = body
                    .find("-----END CERTIFICATE-----")
                    .ok_or_else(|| SamlError::Certificate("an unterminated PEM block".into()))?;
                let der = b64(&body[..end])
                    .map_err(|_| SamlError::Certificate("PEM that is not base64".into()))?;
                keys.push(Self::from_der(&der)?);
                rest = &body[end..];
            }
        } else {
            let der =
                b64(text).map_err(|_| SamlError::Certificate("neither PEM nor base64".into()))?;
            keys.push(Self::from_der(&der)?);
        }
        if keys.is_empty() {
            return Err(SamlError::Certificate("no certificate".into()));
        }
        Ok(keys)
    }

    fn verify(&self, alg: &str, msg: &[u8], sig: &[u8]) -> Result<(), SamlError> {
        let algorithm: &'static dyn signature::VerificationAlgorithm =
            match (alg, self.rsa, self.ec_curve) {
                ("http://www.w3.org/2001/04/xmldsig-more#rsa-sha256", true, _) => {
                    &signature::RSA_PKCS1_2048_8192_SHA256
                }
                ("http://www.w3.org/2001/04/xmldsig-more#rsa-sha512", true, _) => {
                    &signature::RSA_PKCS1_2048_8192_SHA512
                }
                ("http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256", false, Some("P-256")) => {
                    &signature::ECDSA_P256_SHA256_FIXED
                }
                ("http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384", false, Some("P-384")) => {
                    &signature::ECDSA_P384_SHA384_FIXED
                }
                _ => return Err(SamlError::BadSignature),
            };
        signature::UnparsedPublicKey::new(algorithm, &self.key)
            .verify(msg, sig)
            .map_err(|_| SamlError::BadSignature)
    }
}

/// Every element's `ID` attribute, refusing a repeated one (XML-DSig resolves `#ID` by ID type;
/// two elements with one ID are the first step of a wrapping attack).
pub fn id_index(doc: &Document<'_>) -> Result<HashMap<String, NodeId>, SamlError> {
    let mut ids = HashMap::new();
    for n in doc.descendants().filter(Node::is_element) {
        // `ID` (SAML), and the spellings other schemas use: none may repeat or shadow another.
        for a in n
            .attributes()
            .filter(|a| a.namespace().is_none() && matches!(a.name(), "ID" | "Id" | "id"))
        {
            if ids.insert(a.value().to_string(), n.id()).is_some() {
                return Err(SamlError::DuplicateId);
            }
        }
    }
    Ok(ids)
}

fn alg<'a>(n: Node<'a, '_>) -> Result<&'a str, SamlError> {
    n.attribute("Algorithm")
        .ok_or(SamlError::Signature("an algorithm is missing"))
}

fn refuse_sha1(uri: &str) -> Result<(), SamlError> {
    if uri.ends_with("sha1") || uri.contains("#sha1") {
        return Err(SamlError::Sha1(uri.to_string()));
    }
    Ok(())
}

fn prefix_list(t: Node<'_, '_>) -> Vec<String> {
    t.children()
        .find(|c| c.is_element() && c.tag_name().name() == "InclusiveNamespaces")
        .and_then(|i| i.attribute("PrefixList"))
        .map(|l| l.split_ascii_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Verifies the enveloped `sig` (a `ds:Signature`) over its parent element, which must be the
/// element its one Reference names (`ids` is [`id_index`] of the document). Returns the parent.
pub fn verify_enveloped<'a, 'i>(
    sig: Node<'a, 'i>,
    ids: &HashMap<String, NodeId>,
    keys: &[IdpKey],
) -> Result<Node<'a, 'i>, SamlError> {
    let parent = sig
        .parent_element()
        .ok_or(SamlError::Signature("a signature outside any element"))?;
    let signed_info = only_child(sig, NS_DSIG, "SignedInfo", "two SignedInfo")?
        .ok_or(SamlError::Signature("no SignedInfo"))?;
    let c14n = only_child(
        signed_info,
        NS_DSIG,
        "CanonicalizationMethod",
        "two c14n methods",
    )?
    .ok_or(SamlError::Signature("no CanonicalizationMethod"))?;
    if alg(c14n)? != EXC_C14N {
        return Err(SamlError::Algorithm(alg(c14n)?.to_string()));
    }
    let sig_method = only_child(signed_info, NS_DSIG, "SignatureMethod", "two methods")?
        .ok_or(SamlError::Signature("no SignatureMethod"))?;
    let sig_alg = alg(sig_method)?;
    refuse_sha1(sig_alg)?;
    let mut refs = children(signed_info, NS_DSIG, "Reference");
    let reference = refs.next().ok_or(SamlError::Signature("no Reference"))?;
    if refs.next().is_some() {
        return Err(SamlError::Signature("more than one Reference"));
    }
    let uri = reference
        .attribute("URI")
        .ok_or(SamlError::Signature("a Reference without URI"))?;
    let id = uri
        .strip_prefix('#')
        .filter(|i| !i.is_empty())
        .ok_or(SamlError::Signature("a Reference that is not #ID"))?;
    let target = ids
        .get(id)
        .ok_or(SamlError::Signature("a Reference to no element"))?;
    if *target != parent.id() || parent.attribute("ID") != Some(id) {
        return Err(SamlError::Signature(
            "the Reference names another element than the signature's parent",
        ));
    }
    let mut enveloped = false;
    let mut inclusive = Vec::new();
    let mut c14n_seen = false;
    if let Some(ts) = only_child(reference, NS_DSIG, "Transforms", "two Transforms")? {
        for t in ts.children().filter(Node::is_element) {
            if t.tag_name().namespace() != Some(NS_DSIG) || t.tag_name().name() != "Transform" {
                return Err(SamlError::Signature("an unknown element in Transforms"));
            }
            match alg(t)? {
                ENVELOPED if !enveloped => enveloped = true,
                EXC_C14N if !c14n_seen => {
                    c14n_seen = true;
                    inclusive = prefix_list(t);
                }
                other => return Err(SamlError::Algorithm(other.to_string())),
            }
        }
    }
    if !enveloped {
        return Err(SamlError::Signature("not an enveloped signature"));
    }
    let digest_method = only_child(reference, NS_DSIG, "DigestMethod", "two DigestMethod")?
        .ok_or(SamlError::Signature("no DigestMethod"))?;
    let digest_alg = match alg(digest_method)? {
        "http://www.w3.org/2001/04/xmlenc#sha256" => &digest::SHA256,
        "http://www.w3.org/2001/04/xmlenc#sha512" => &digest::SHA512,
        other => {
            refuse_sha1(other)?;
            return Err(SamlError::Algorithm(other.to_string()));
        }
    };
    let want_digest = b64(&text(
        only_child(reference, NS_DSIG, "DigestValue", "two DigestValue")?
            .ok_or(SamlError::Signature("no DigestValue"))?,
    ))?;
    let canonical = crate::c14n::canonicalize(parent, Some(sig.id()), &inclusive);
    let got = digest::digest(digest_alg, canonical.as_bytes());
    if aws_lc_rs::constant_time::verify_slices_are_equal(got.as_ref(), &want_digest).is_err() {
        return Err(SamlError::Digest);
    }
    let sig_value = b64(&text(
        only_child(sig, NS_DSIG, "SignatureValue", "two SignatureValue")?
            .ok_or(SamlError::Signature("no SignatureValue"))?,
    ))?;
    let signed = crate::c14n::canonicalize(signed_info, None, &prefix_list(c14n));
    if keys.is_empty() {
        return Err(SamlError::Certificate("no certificate configured".into()));
    }
    if keys
        .iter()
        .any(|k| k.verify(sig_alg, signed.as_bytes(), &sig_value).is_ok())
    {
        Ok(parent)
    } else if !sig_alg.starts_with("http://www.w3.org/2001/04/xmldsig-more#") {
        Err(SamlError::Algorithm(sig_alg.to_string()))
    } else {
        Err(SamlError::BadSignature)
    }
}
