//! An IdP's SAML metadata (`EntityDescriptor`): its entity id, the HTTP-Redirect
//! SingleSignOnService location and its signing certificates. Parsed with the same hardened
//! front as responses. Metadata is trusted as the connector trusts it (pasted by the operator,
//! or fetched over https / loopback http); it is not signature-checked.

use roxmltree::Node;

use crate::dsig::IdpKey;
use crate::xml::{children, is, text};
use crate::{BINDING_REDIRECT, NS_DSIG, NS_METADATA, SamlError};

/// What Hop uses of an IdP's metadata.
#[derive(Debug, Clone)]
pub struct IdpMetadata {
    pub entity_id: String,
    /// The HTTP-Redirect SSO URL (empty when the IdP offers none).
    pub sso_url: String,
    /// The signing certificates, base64 DER as the metadata writes them.
    pub certificates: Vec<String>,
}

impl IdpMetadata {
    /// The certificates' keys.
    pub fn keys(&self) -> Result<Vec<IdpKey>, SamlError> {
        let mut keys = Vec::new();
        for c in &self.certificates {
            keys.extend(IdpKey::from_pem_or_base64(c)?);
        }
        Ok(keys)
    }
}

/// Parses an `EntityDescriptor` (or the first of an `EntitiesDescriptor`) with an
/// `IDPSSODescriptor`.
pub fn parse_metadata(xml: &str) -> Result<IdpMetadata, SamlError> {
    let doc = crate::xml::parse(xml)?;
    let root = doc.root_element();
    let entity: Node<'_, '_> = if is(root, NS_METADATA, "EntityDescriptor") {
        root
    } else if is(root, NS_METADATA, "EntitiesDescriptor") {
        children(root, NS_METADATA, "EntityDescriptor")
            .find(|e| {
                children(*e, NS_METADATA, "IDPSSODescriptor")
                    .next()
                    .is_some()
            })
            .ok_or(SamlError::Malformed("the metadata holds no IdP"))?
    } else {
        return Err(SamlError::Malformed("not SAML metadata (EntityDescriptor)"));
    };
    let entity_id = entity
        .attribute("entityID")
        .filter(|e| !e.is_empty())
        .ok_or(SamlError::Malformed("the metadata has no entityID"))?
        .to_string();
    let idp = children(entity, NS_METADATA, "IDPSSODescriptor")
        .next()
        .ok_or(SamlError::Malformed("the metadata has no IDPSSODescriptor"))?;
    let sso_url = children(idp, NS_METADATA, "SingleSignOnService")
        .find(|s| s.attribute("Binding") == Some(BINDING_REDIRECT))
        .and_then(|s| s.attribute("Location"))
        .unwrap_or("")
        .to_string();
    let mut certificates = Vec::new();
    for kd in children(idp, NS_METADATA, "KeyDescriptor") {
        if kd.attribute("use").is_some_and(|u| u != "signing") {
            continue;
        }
        for c in kd
            .descendants()
            .filter(|n| is(*n, NS_DSIG, "X509Certificate"))
        {
            let t: String = text(c).split_ascii_whitespace().collect();
            if !t.is_empty() && !certificates.contains(&t) {
                certificates.push(t);
            }
        }
    }
    if certificates.is_empty() {
        return Err(SamlError::Malformed(
            "the metadata has no signing certificate",
        ));
    }
    Ok(IdpMetadata {
        entity_id,
        sso_url,
        certificates,
    })
}
