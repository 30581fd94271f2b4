//! The `oidc` connector resource: how users of an OpenID Connect provider log in, in Teleport's
//! shape (`issuer_url`, `client_id`, `client_secret`, `redirect_url`, `claims_to_roles`, …).
//!
//! This module owns [`OidcConnector`], its `validate()` and the mapping of ID-token claims onto
//! roles ([`OidcConnectorSpec::roles_for`]). It is pure: no network, no clock. It holds the
//! client secret only as operator input: `Debug` redacts it, and the appliance removes it from
//! everything it prints.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::labels::Pattern;
use crate::resource::{Kind, Metadata};
use crate::traits::Traits;
use crate::validation::{
    FieldPath, Problem, ValidationError, check_kind, check_name, check_names, check_version,
    invalid,
};

/// Versions accepted for OIDC connectors.
pub const OIDC_VERSIONS: &[&str] = &["v3", "v2"];

/// `kind: oidc`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConnector {
    /// Always `oidc`.
    pub kind: String,
    /// `v3`.
    pub version: String,
    /// `name` is what `hop login --auth NAME` names.
    pub metadata: Metadata,
    pub spec: OidcConnectorSpec,
}

impl std::fmt::Debug for OidcConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcConnector")
            .field("name", &self.metadata.name)
            .field("issuer_url", &self.spec.issuer_url)
            .field("client_id", &self.spec.client_id)
            .finish_non_exhaustive()
    }
}

/// `spec` of an OIDC connector.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConnectorSpec {
    /// The provider's issuer (`iss`); discovery is at `ISSUER/.well-known/openid-configuration`.
    pub issuer_url: String,
    pub client_id: String,
    /// Sent to the token endpoint (HTTP basic); never printed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_secret: String,
    /// The proxy's callback the provider sends the browser to:
    /// `https://PROXY/v1/webapi/oidc/callback`. Teleport also accepts a list; the first is used.
    #[serde(with = "one_or_many")]
    pub redirect_url: Vec<String>,
    /// Scopes asked for besides `openid`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scope: Vec<String>,
    /// Claim values to roles; a login whose claims map to no role is refused.
    #[serde(default)]
    pub claims_to_roles: Vec<ClaimMapping>,
    /// The longest time since the user last authenticated at the provider (`max_age`, and the
    /// ID token's `auth_time` is checked against it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<crate::Duration>,
    /// `prompt` sent to the provider (`login`, `consent`, `select_account`, `none`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// The button text on the web login page.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub display: String,
    /// The claim the Hop user name comes from [default: `email`, then `sub`].
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub username_claim: String,
    /// Stored, ignored.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub acr_values: String,
    /// Stored, ignored.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub provider: String,
    /// Where a client's redirect may point besides loopback.
    #[serde(
        default,
        skip_serializing_if = "ClientRedirectSettings::is_empty_settings"
    )]
    pub client_redirect_settings: ClientRedirectSettings,
}

impl std::fmt::Debug for OidcConnectorSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcConnectorSpec")
            .field("issuer_url", &self.issuer_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("redirect_url", &self.redirect_url)
            .finish_non_exhaustive()
    }
}

/// `claims_to_roles` entry: when claim `claim` has a value matching `value` (a literal, a glob
/// `dev-*` or an anchored `^regex$`), the user gets `roles` (in which `$1`… name the regex's
/// groups).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimMapping {
    pub claim: String,
    pub value: String,
    pub roles: Vec<String>,
}

/// `client_redirect_settings`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientRedirectSettings {
    /// `https://` hosts (exact, or globs such as `*.example.com`) a client may ask the result to
    /// be sent to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_https_hostnames: Vec<String>,
    /// Stored, ignored: Hop only allows loopback over plain HTTP.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub insecure_allowed_cidr_ranges: Vec<String>,
}

impl ClientRedirectSettings {
    /// Whether nothing is set (it is then not printed).
    #[must_use]
    pub fn is_empty_settings(&self) -> bool {
        self.allowed_https_hostnames.is_empty() && self.insecure_allowed_cidr_ranges.is_empty()
    }

    /// Whether `host` (of an `https://` URL) is allowed.
    #[must_use]
    pub fn allows_https_host(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.allowed_https_hostnames
            .iter()
            .any(|p| Pattern::compile(&p.to_ascii_lowercase()).is_ok_and(|pat| pat.matches(&host)))
    }
}

mod one_or_many {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }

    pub fn serialize<S: Serializer>(v: &[String], s: S) -> Result<S::Ok, S::Error> {
        match v {
            [one] => one.serialize(s),
            many => many.serialize(s),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        Ok(match OneOrMany::deserialize(d)? {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        })
    }
}

impl Kind for OidcConnector {
    const KIND: &'static str = "oidc";

    fn name(&self) -> &str {
        &self.metadata.name
    }

    fn metadata(&self) -> &Metadata {
        &self.metadata
    }
}

/// Whether `url` is `http://` on a loopback host (`127.0.0.1`, `[::1]`, `localhost`).
#[must_use]
pub fn is_loopback_http(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return false;
    }
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.split(':').next().unwrap_or("")
    };
    matches!(host, "127.0.0.1" | "::1" | "localhost")
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

impl OidcConnector {
    /// Checks kind, version, metadata, the URLs, the client and the claim mappings.
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_kind(&self.kind, Self::KIND)?;
        check_version(&self.version, OIDC_VERSIONS)?;
        self.metadata.validate()?;
        let spec = &self.spec;
        check_url(&FieldPath::new("spec.issuer_url"), &spec.issuer_url)?;
        check_name(&FieldPath::new("spec.client_id"), &spec.client_id)?;
        let redirects = FieldPath::new("spec.redirect_url");
        if spec.redirect_url.is_empty() {
            return Err(invalid(&redirects, Problem::Empty));
        }
        for (i, u) in spec.redirect_url.iter().enumerate() {
            check_url(&redirects.index(i), u)?;
        }
        let mappings = FieldPath::new("spec.claims_to_roles");
        if spec.claims_to_roles.is_empty() {
            return Err(invalid(
                &mappings,
                Problem::Invalid("map at least one claim to roles".into()),
            ));
        }
        for (i, m) in spec.claims_to_roles.iter().enumerate() {
            let at = mappings.index(i);
            check_name(&at.key("claim"), &m.claim)?;
            if m.value.is_empty() {
                return Err(invalid(&at.key("value"), Problem::Empty));
            }
            Pattern::compile(&m.value).map_err(|p| invalid(&at.key("value"), p))?;
            if m.roles.is_empty() {
                return Err(invalid(&at.key("roles"), Problem::Empty));
            }
            check_names(&at.key("roles"), &m.roles)?;
        }
        if let Some(p) = &spec.prompt
            && !matches!(
                p.as_str(),
                "" | "none" | "login" | "consent" | "select_account"
            )
        {
            return Err(invalid(
                &FieldPath::new("spec.prompt"),
                Problem::Invalid("expected none, login, consent or select_account".into()),
            ));
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
        Ok(())
    }
}

impl OidcConnectorSpec {
    /// The roles `claims` map to, in mapping order without repeats. A claim's values are its
    /// strings (a list claim: each element; a number or boolean: its text).
    #[must_use]
    pub fn roles_for(&self, claims: &Traits) -> Vec<String> {
        let mut roles: Vec<String> = Vec::new();
        for m in &self.claims_to_roles {
            let Some(values) = claims.get(&m.claim) else {
                continue;
            };
            let Ok(pattern) = Pattern::compile(&m.value) else {
                continue; // validation refuses these; fail closed.
            };
            for v in values {
                if !pattern.matches(v) {
                    continue;
                }
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

    /// The traits a login's claims give: every claim whose value is a string, a list of
    /// strings, a number or a boolean, under the claim's name (`{{external.groups}}`).
    #[must_use]
    pub fn traits_from_claims(claims: &serde_json::Map<String, serde_json::Value>) -> Traits {
        let mut traits = BTreeMap::new();
        for (k, v) in claims {
            let values: Vec<String> = match v {
                serde_json::Value::String(s) => vec![s.clone()],
                serde_json::Value::Bool(b) => vec![b.to_string()],
                serde_json::Value::Number(n) => vec![n.to_string()],
                serde_json::Value::Array(items) => items
                    .iter()
                    .filter_map(|i| match i {
                        serde_json::Value::String(s) => Some(s.clone()),
                        serde_json::Value::Number(n) => Some(n.to_string()),
                        serde_json::Value::Bool(b) => Some(b.to_string()),
                        _ => None,
                    })
                    .collect(),
                _ => continue,
            };
            if !values.is_empty() {
                traits.insert(k.clone(), values);
            }
        }
        traits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connector(yaml: &str) -> Result<crate::Resource, crate::ParseError> {
        crate::parse_resources(yaml, "test.yaml").map(|mut v| v.remove(0))
    }

    const OK: &str = "kind: oidc\nversion: v3\nmetadata:\n  name: okta\nspec:\n  issuer_url: https://idp.example.com\n  client_id: hop\n  client_secret: s3cret\n  redirect_url: https://proxy.example.com/v1/webapi/oidc/callback\n  scope: [email, groups]\n  max_age: 1h\n  prompt: login\n  claims_to_roles:\n  - {claim: groups, value: admins, roles: [editor]}\n  - {claim: groups, value: '^dev-(.*)$', roles: ['dev-$1', access]}\n  client_redirect_settings:\n    allowed_https_hostnames: ['*.example.com']\n";

    #[test]
    fn parses_teleport_shape_and_redacts_secret_in_debug() {
        let r = connector(OK).unwrap();
        let crate::Resource::Oidc(c) = &r else {
            panic!("not an oidc connector: {r:?}")
        };
        assert_eq!(c.spec.redirect_url.len(), 1);
        assert_eq!(
            c.spec.max_age.map(std::time::Duration::from),
            Some(std::time::Duration::from_secs(3600))
        );
        assert!(!format!("{r:?}").contains("s3cret"));
        assert!(
            c.spec
                .client_redirect_settings
                .allows_https_host("app.example.com")
        );
        assert!(
            !c.spec
                .client_redirect_settings
                .allows_https_host("example.org")
        );
    }

    #[test]
    fn maps_claims_with_globs_regex_and_captures() {
        let crate::Resource::Oidc(c) = connector(OK).unwrap() else {
            panic!()
        };
        let claims: Traits = [(
            "groups".to_string(),
            vec!["dev-web".to_string(), "admins".to_string()],
        )]
        .into();
        assert_eq!(c.spec.roles_for(&claims), ["editor", "dev-web", "access"]);
        let none: Traits = [("groups".to_string(), vec!["x".to_string()])].into();
        assert!(c.spec.roles_for(&none).is_empty());
    }

    #[test]
    fn refuses_plain_http_off_loopback_and_empty_mappings() {
        let bad = OK.replace("https://idp.example.com", "http://idp.example.com");
        assert!(
            connector(&bad)
                .unwrap_err()
                .to_string()
                .contains("issuer_url")
        );
        let ok = OK.replace("https://idp.example.com", "http://127.0.0.1:9000");
        connector(&ok).unwrap();
        let bad = OK.replace("value: admins", "value: '^(admins$'");
        assert!(connector(&bad).unwrap_err().to_string().contains("regex"));
        let bad = OK.replace("prompt: login", "prompt: sometimes");
        assert!(connector(&bad).is_err());
    }

    #[test]
    fn loopback_http_is_exact() {
        assert!(is_loopback_http("http://127.0.0.1:1234/callback"));
        assert!(is_loopback_http("http://localhost:1/x"));
        assert!(is_loopback_http("http://[::1]:8/x"));
        assert!(!is_loopback_http("http://127.0.0.1.evil.test/x"));
        assert!(!is_loopback_http("http://localhost@evil.test/x"));
        assert!(!is_loopback_http("https://127.0.0.1/x"));
        assert!(!is_loopback_http("http://10.0.0.1/x"));
    }
}
