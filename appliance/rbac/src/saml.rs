//! The `saml` connector resource: how users of a SAML 2.0 identity provider log in, in
//! Teleport's shape (`entity_descriptor` or `entity_descriptor_url`, or `issuer`, `sso` and
//! `cert`; `acs`, `audience`, `service_provider_issuer`, `attributes_to_roles`, `display`,
//! `client_redirect_settings`, `signing_key_pair`).
//!
//! This module owns [`SamlConnector`], its `validate()` and the mapping of assertion attributes
//! onto roles ([`SamlConnectorSpec::roles_for`]). It is pure. The private key of
//! `signing_key_pair` is redacted in `Debug`; the appliance removes it from everything it
//! prints.

use serde::{Deserialize, Serialize};

use crate::labels::Pattern;
use crate::oidc::{ClientRedirectSettings, is_loopback_http};
use crate::resource::{Kind, Metadata};
use crate::traits::Traits;
use crate::validation::{
    FieldPath, Problem, ValidationError, check_kind, check_names, check_version, invalid,
};

/// Versions accepted for SAML connectors.
pub const SAML_VERSIONS: &[&str] = &["v2"];

/// `kind: saml`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamlConnector {
    /// Always `saml`.
    pub kind: String,
    /// `v2`.
    pub version: String,
    /// `name` is what `hop login --auth NAME` names.
    pub metadata: Metadata,
    pub spec: SamlConnectorSpec,
}

impl std::fmt::Debug for SamlConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SamlConnector")
            .field("name", &self.metadata.name)
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

/// `spec` of a SAML connector.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamlConnectorSpec {
    /// The IdP's metadata XML (an `EntityDescriptor`): its entity id, SSO URL and signing
    /// certificates, unless `issuer`, `sso` and `cert` say otherwise.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub entity_descriptor: String,
    /// Where to fetch that metadata (https://, or http:// on loopback), at each login.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub entity_descriptor_url: String,
    /// The IdP's entity id (the assertion's `Issuer`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub issuer: String,
    /// The IdP's SSO URL (HTTP-Redirect binding).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sso: String,
    /// The IdP's signing certificate(s), PEM: the only keys a response may be signed with.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cert: String,
    /// The proxy's assertion consumer service: `https://PROXY/v1/webapi/saml/acs/NAME`.
    pub acs: String,
    /// The audience assertions must name [default: `service_provider_issuer`, else `acs`].
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub audience: String,
    /// Hop's entity id, the AuthnRequest's `Issuer` [default: `acs`].
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_provider_issuer: String,
    /// Attribute values to roles; a login whose attributes map to no role is refused.
    #[serde(default)]
    pub attributes_to_roles: Vec<AttributeMapping>,
    /// The button text on the web login page.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub display: String,
    /// Stored, ignored.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub provider: String,
    /// Where a client's redirect may point besides loopback.
    #[serde(
        default,
        skip_serializing_if = "ClientRedirectSettings::is_empty_settings"
    )]
    pub client_redirect_settings: ClientRedirectSettings,
    /// Hop's own key pair (PEM), published for IdPs that want it; the private key is never
    /// printed. AuthnRequests are sent unsigned (the HTTP-Redirect binding's signature is
    /// optional, and the response's checks do not rest on it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key_pair: Option<SigningKeyPair>,
}

/// `signing_key_pair`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningKeyPair {
    /// Never printed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub private_key: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cert: String,
}

impl std::fmt::Debug for SigningKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyPair")
            .field("private_key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for SamlConnectorSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SamlConnectorSpec")
            .field("issuer", &self.issuer)
            .field("sso", &self.sso)
            .field("acs", &self.acs)
            .field("entity_descriptor_url", &self.entity_descriptor_url)
            .field("signing_key_pair", &self.signing_key_pair)
            .finish_non_exhaustive()
    }
}

/// `attributes_to_roles` entry: when attribute `name` has a value matching `value` (a literal,
/// a glob or an anchored `^regex$`), the user gets `roles` (`$1`… name the regex's groups).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeMapping {
    pub name: String,
    pub value: String,
    pub roles: Vec<String>,
}

impl Kind for SamlConnector {
    const KIND: &'static str = "saml";

    fn name(&self) -> &str {
        &self.metadata.name
    }

    fn metadata(&self) -> &Metadata {
        &self.metadata
    }
}

fn check_url(field: &FieldPath, url: &str) -> Result<(), ValidationError> {
    if url.is_empty() {
        return Err(invalid(field, Problem::Empty));
    }
    let ok = (url.starts_with("https://") && url.len() > "https://".len()) || is_loopback_http(url);
    if !ok || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            field,
            Problem::Invalid(
                "must be an https:// URL (plain http:// only on 127.0.0.1, [::1] or localhost)"
                    .into(),
            ),
        ));
    }
    Ok(())
}

impl SamlConnectorSpec {
    /// Hop's entity id: `service_provider_issuer`, else `acs`.
    #[must_use]
    pub fn sp_entity_id(&self) -> &str {
        if self.service_provider_issuer.is_empty() {
            &self.acs
        } else {
            &self.service_provider_issuer
        }
    }

    /// The audience assertions must name: `audience`, else [`Self::sp_entity_id`].
    #[must_use]
    pub fn audience(&self) -> &str {
        if self.audience.is_empty() {
            self.sp_entity_id()
        } else {
            &self.audience
        }
    }

    /// The roles `attributes` map to, in mapping order without repeats.
    #[must_use]
    pub fn roles_for(&self, attributes: &Traits) -> Vec<String> {
        let mut roles: Vec<String> = Vec::new();
        for m in &self.attributes_to_roles {
            let Some(values) = attributes.get(&m.name) else {
                continue;
            };
            let Ok(pattern) = Pattern::compile(&m.value) else {
                continue; // validation refuses these; fail closed.
            };
            for v in values.iter().filter(|v| pattern.matches(v)) {
                for r in &m.roles {
                    let role = pattern.expand_captures(v, r);
                    if !role.is_empty() && !roles.contains(&role) {
                        roles.push(role);
                    }
                }
            }
        }
        roles
    }
}

impl SamlConnector {
    /// Checks kind, version, metadata, the URLs, where the IdP is described and the mappings.
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_kind(&self.kind, Self::KIND)?;
        check_version(&self.version, SAML_VERSIONS)?;
        self.metadata.validate()?;
        let spec = &self.spec;
        check_url(&FieldPath::new("spec.acs"), &spec.acs)?;
        if !spec.entity_descriptor_url.is_empty() {
            check_url(
                &FieldPath::new("spec.entity_descriptor_url"),
                &spec.entity_descriptor_url,
            )?;
        }
        if !spec.sso.is_empty() {
            check_url(&FieldPath::new("spec.sso"), &spec.sso)?;
        }
        let described =
            !spec.entity_descriptor.is_empty() || !spec.entity_descriptor_url.is_empty();
        if !described && (spec.issuer.is_empty() || spec.sso.is_empty() || spec.cert.is_empty()) {
            return Err(invalid(
                &FieldPath::new("spec"),
                Problem::Invalid(
                    "set entity_descriptor or entity_descriptor_url, or all of issuer, sso and cert"
                        .into(),
                ),
            ));
        }
        if !spec.entity_descriptor.is_empty() && !spec.entity_descriptor_url.is_empty() {
            return Err(invalid(
                &FieldPath::new("spec.entity_descriptor_url"),
                Problem::Invalid("set entity_descriptor or entity_descriptor_url, not both".into()),
            ));
        }
        if !spec.cert.is_empty() && !spec.cert.contains("-----BEGIN CERTIFICATE-----") {
            return Err(invalid(
                &FieldPath::new("spec.cert"),
                Problem::Invalid("expected a PEM certificate".into()),
            ));
        }
        let mappings = FieldPath::new("spec.attributes_to_roles");
        if spec.attributes_to_roles.is_empty() {
            return Err(invalid(
                &mappings,
                Problem::Invalid("map at least one attribute to roles".into()),
            ));
        }
        for (i, m) in spec.attributes_to_roles.iter().enumerate() {
            let at = mappings.index(i);
            if m.name.is_empty() {
                return Err(invalid(&at.key("name"), Problem::Empty));
            }
            if m.value.is_empty() {
                return Err(invalid(&at.key("value"), Problem::Empty));
            }
            Pattern::compile(&m.value).map_err(|p| invalid(&at.key("value"), p))?;
            if m.roles.is_empty() {
                return Err(invalid(&at.key("roles"), Problem::Empty));
            }
            check_names(&at.key("roles"), &m.roles)?;
        }
        for (i, h) in spec
            .client_redirect_settings
            .allowed_https_hostnames
            .iter()
            .enumerate()
        {
            let at =
                FieldPath::new("spec.client_redirect_settings.allowed_https_hostnames").index(i);
            if h.is_empty() {
                return Err(invalid(&at, Problem::Empty));
            }
            Pattern::compile(h).map_err(|p| invalid(&at, p))?;
        }
        if let Some(kp) = &spec.signing_key_pair
            && (kp.cert.is_empty() || kp.private_key.is_empty())
        {
            return Err(invalid(
                &FieldPath::new("spec.signing_key_pair"),
                Problem::Invalid("needs both private_key and cert".into()),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    const OK: &str = "kind: saml\nversion: v2\nmetadata:\n  name: saml-test\nspec:\n  entity_descriptor_url: http://127.0.0.1:7080/saml2/idp/metadata.php\n  acs: https://proxy.example.com/v1/webapi/saml/acs/saml-test\n  attributes_to_roles:\n  - {name: groups, value: devs, roles: [dev]}\n  - {name: groups, value: '^team-(.*)$', roles: ['$1-access']}\n  signing_key_pair:\n    private_key: \"-----BEGIN PRIVATE KEY-----\\nsecretkeybytes\\n-----END PRIVATE KEY-----\"\n    cert: \"-----BEGIN CERTIFICATE-----\\nx\\n-----END CERTIFICATE-----\"\n";

    #[test]
    fn parses_maps_attributes_and_redacts_the_private_key() {
        let r = crate::parse_resources(OK, "saml.yaml").unwrap().remove(0);
        let crate::Resource::Saml(c) = &r else {
            panic!("{r:?}")
        };
        assert!(!format!("{r:?}").contains("secretkeybytes"));
        assert_eq!(
            c.spec.audience(),
            "https://proxy.example.com/v1/webapi/saml/acs/saml-test"
        );
        let mut attrs = std::collections::BTreeMap::new();
        attrs.insert(
            "groups".to_string(),
            vec!["devs".to_string(), "team-web".to_string()],
        );
        assert_eq!(c.spec.roles_for(&attrs), ["dev", "web-access"]);
        attrs.insert("groups".to_string(), vec!["outsiders".to_string()]);
        assert!(c.spec.roles_for(&attrs).is_empty());
        for bad in [
            OK.replace("https://proxy", "http://proxy"),
            OK.replace("  entity_descriptor_url: http://127.0.0.1:7080/saml2/idp/metadata.php\n", ""),
            OK.replace("  - {name: groups, value: devs, roles: [dev]}\n  - {name: groups, value: '^team-(.*)$', roles: ['$1-access']}\n", "  []\n"),
            OK.replace("acs:", "acs_url:"),
        ] {
            assert!(crate::parse_resources(&bad, "saml.yaml").is_err(), "{bad}");
        }
    }
}
