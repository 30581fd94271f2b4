//! The `github` connector resource: logging in with GitHub (or GitHub Enterprise) OAuth, in
//! Teleport's shape (`client_id`, `client_secret`, `redirect_url`, `endpoint_url`,
//! `api_endpoint_url`, `teams_to_roles`).
//!
//! This module owns [`GithubConnector`], its `validate()` and the mapping of a user's teams to
//! roles ([`GithubConnectorSpec::roles_for`]). It is pure. The client secret is redacted in
//! `Debug`; the appliance removes it from everything it prints.

use serde::{Deserialize, Serialize};

use crate::labels::Pattern;
use crate::oidc::{ClientRedirectSettings, is_loopback_http};
use crate::resource::{Kind, Metadata};
use crate::validation::{
    FieldPath, Problem, ValidationError, check_kind, check_name, check_names, check_version,
    invalid,
};

/// Versions accepted for GitHub connectors.
pub const GITHUB_VERSIONS: &[&str] = &["v3"];
/// GitHub's own endpoints, when the connector names none.
pub const GITHUB_ENDPOINT: &str = "https://github.com";
pub const GITHUB_API_ENDPOINT: &str = "https://api.github.com";

/// `kind: github`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubConnector {
    /// Always `github`.
    pub kind: String,
    /// `v3`.
    pub version: String,
    pub metadata: Metadata,
    pub spec: GithubConnectorSpec,
}

impl std::fmt::Debug for GithubConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubConnector")
            .field("name", &self.metadata.name)
            .field("client_id", &self.spec.client_id)
            .finish_non_exhaustive()
    }
}

/// `spec` of a GitHub connector.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubConnectorSpec {
    pub client_id: String,
    /// Sent to the token endpoint; never printed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_secret: String,
    /// The proxy's callback: `https://PROXY/v1/webapi/github/callback`.
    pub redirect_url: String,
    /// The web endpoint (`/login/oauth/*`) [default: https://github.com].
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub endpoint_url: String,
    /// The API (`/user`, `/user/teams`) [default: https://api.github.com; GitHub Enterprise:
    /// `https://HOST/api/v3`].
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_endpoint_url: String,
    /// Teams to roles; a login whose teams map to no role is refused.
    #[serde(default)]
    pub teams_to_roles: Vec<TeamMapping>,
    /// The button text on the web login page.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub display: String,
    #[serde(
        default,
        skip_serializing_if = "ClientRedirectSettings::is_empty_settings"
    )]
    pub client_redirect_settings: ClientRedirectSettings,
}

impl std::fmt::Debug for GithubConnectorSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubConnectorSpec")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("endpoint_url", &self.endpoint_url)
            .finish_non_exhaustive()
    }
}

/// `teams_to_roles` entry: members of `team` (its slug) in `organization` get `roles`. Both may
/// be globs or `^regex$`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamMapping {
    pub organization: String,
    pub team: String,
    pub roles: Vec<String>,
}

impl Kind for GithubConnector {
    const KIND: &'static str = "github";

    fn name(&self) -> &str {
        &self.metadata.name
    }

    fn metadata(&self) -> &Metadata {
        &self.metadata
    }
}

fn check_url(field: &FieldPath, url: &str) -> Result<(), ValidationError> {
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

impl GithubConnectorSpec {
    /// `endpoint_url`, or GitHub's.
    #[must_use]
    pub fn endpoint(&self) -> &str {
        if self.endpoint_url.is_empty() {
            GITHUB_ENDPOINT
        } else {
            self.endpoint_url.trim_end_matches('/')
        }
    }

    /// `api_endpoint_url`, or GitHub's.
    #[must_use]
    pub fn api_endpoint(&self) -> &str {
        if self.api_endpoint_url.is_empty() {
            GITHUB_API_ENDPOINT
        } else {
            self.api_endpoint_url.trim_end_matches('/')
        }
    }

    /// The roles the user's `(organization, team slug)` memberships map to, in mapping order
    /// without repeats.
    #[must_use]
    pub fn roles_for(&self, teams: &[(String, String)]) -> Vec<String> {
        let mut roles: Vec<String> = Vec::new();
        for m in &self.teams_to_roles {
            let (Ok(org), Ok(team)) =
                (Pattern::compile(&m.organization), Pattern::compile(&m.team))
            else {
                continue;
            };
            if teams.iter().any(|(o, t)| org.matches(o) && team.matches(t)) {
                for r in &m.roles {
                    if !roles.contains(r) {
                        roles.push(r.clone());
                    }
                }
            }
        }
        roles
    }
}

impl GithubConnector {
    /// Checks kind, version, metadata, the URLs, the client and the team mappings.
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_kind(&self.kind, Self::KIND)?;
        check_version(&self.version, GITHUB_VERSIONS)?;
        self.metadata.validate()?;
        let spec = &self.spec;
        check_name(&FieldPath::new("spec.client_id"), &spec.client_id)?;
        check_url(&FieldPath::new("spec.redirect_url"), &spec.redirect_url)?;
        if !spec.endpoint_url.is_empty() {
            check_url(&FieldPath::new("spec.endpoint_url"), &spec.endpoint_url)?;
        }
        if !spec.api_endpoint_url.is_empty() {
            check_url(
                &FieldPath::new("spec.api_endpoint_url"),
                &spec.api_endpoint_url,
            )?;
        }
        let mappings = FieldPath::new("spec.teams_to_roles");
        if spec.teams_to_roles.is_empty() {
            return Err(invalid(
                &mappings,
                Problem::Invalid("map at least one team to roles".into()),
            ));
        }
        for (i, m) in spec.teams_to_roles.iter().enumerate() {
            let at = mappings.index(i);
            for (k, v) in [("organization", &m.organization), ("team", &m.team)] {
                if v.is_empty() {
                    return Err(invalid(&at.key(k), Problem::Empty));
                }
                Pattern::compile(v).map_err(|p| invalid(&at.key(k), p))?;
            }
            if m.roles.is_empty() {
                return Err(invalid(&at.key("roles"), Problem::Empty));
            }
            check_names(&at.key("roles"), &m.roles)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    const OK: &str = "kind: github\nversion: v3\nmetadata:\n  name: gh\nspec:\n  client_id: abc\n  client_secret: s3cret\n  redirect_url: https://proxy.example.com/v1/webapi/github/callback\n  endpoint_url: https://ghe.example.com\n  api_endpoint_url: https://ghe.example.com/api/v3\n  teams_to_roles:\n  - {organization: octocats, team: admins, roles: [editor, access]}\n  - {organization: octocats, team: 'dev-*', roles: [access]}\n";

    #[test]
    fn parses_maps_teams_and_redacts_the_secret() {
        let r = crate::parse_resources(OK, "gh.yaml").unwrap().remove(0);
        let crate::Resource::Github(c) = &r else {
            panic!("{r:?}")
        };
        assert!(!format!("{r:?}").contains("s3cret"));
        assert_eq!(c.spec.api_endpoint(), "https://ghe.example.com/api/v3");
        let t = |o: &str, t: &str| (o.to_string(), t.to_string());
        assert_eq!(c.spec.roles_for(&[t("octocats", "dev-web")]), ["access"]);
        assert_eq!(
            c.spec
                .roles_for(&[t("octocats", "admins"), t("octocats", "dev-x")]),
            ["editor", "access"]
        );
        assert!(c.spec.roles_for(&[t("other", "admins")]).is_empty());
        let default = OK.replace("  endpoint_url: https://ghe.example.com\n  api_endpoint_url: https://ghe.example.com/api/v3\n", "");
        let r = crate::parse_resources(&default, "gh.yaml")
            .unwrap()
            .remove(0);
        let crate::Resource::Github(c) = &r else {
            panic!()
        };
        assert_eq!(c.spec.endpoint(), "https://github.com");
        assert!(
            crate::parse_resources(&OK.replace("https://ghe", "http://ghe"), "gh.yaml").is_err()
        );
    }
}
