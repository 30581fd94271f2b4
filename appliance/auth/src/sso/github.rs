//! GitHub (and GitHub Enterprise) as an SSO provider: OAuth 2 at `ENDPOINT/login/oauth/*`
//! (code + PKCE verifier + client secret for an access token), then the user (`API/user`) and
//! their teams (`API/user/teams`, paged) with that token. The answers are parsed sans-IO
//! ([`parse_token_answer`], [`parse_user`], [`parse_teams`]); the token is used for these two
//! calls only, never stored or logged.

use hop_api::sso::form;
use hop_rbac::GithubConnectorSpec;
use serde_json::Value;

use super::SsoError;
use super::http::{IdpRequest, fetch};

/// Teams asked for per page, and the most pages read (1,000 teams).
const TEAMS_PER_PAGE: usize = 100;
const MAX_TEAM_PAGES: usize = 10;

/// The access token of a token endpoint answer, or the provider's refusal.
pub fn parse_token_answer(body: &[u8]) -> Result<String, SsoError> {
    let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(body) else {
        return Err(SsoError::Provider("token answer"));
    };
    if let Some(Value::String(e)) = m.get("error") {
        let d = m
            .get("error_description")
            .and_then(Value::as_str)
            .unwrap_or("");
        return Err(SsoError::ProviderRefused(
            format!("{e}: {d}").chars().take(200).collect(),
        ));
    }
    m.get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .ok_or(SsoError::Provider("token answer (no access_token)"))
}

/// The `login` of a `/user` answer.
pub fn parse_user(body: &[u8]) -> Result<String, SsoError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => m
            .get("login")
            .and_then(Value::as_str)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .ok_or(SsoError::Provider("user answer (no login)")),
        _ => Err(SsoError::Provider("user answer")),
    }
}

/// `(organization login, team slug)` of each team of a `/user/teams` page.
pub fn parse_teams(body: &[u8]) -> Result<Vec<(String, String)>, SsoError> {
    let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(body) else {
        return Err(SsoError::Provider("teams answer"));
    };
    items
        .iter()
        .map(|t| {
            let slug = t.get("slug").and_then(Value::as_str);
            let org = t
                .get("organization")
                .and_then(|o| o.get("login"))
                .and_then(Value::as_str);
            match (org, slug) {
                (Some(o), Some(s)) if !o.is_empty() && !s.is_empty() => {
                    Ok((o.to_string(), s.to_string()))
                }
                _ => Err(SsoError::Provider(
                    "teams answer (a team without slug or organization)",
                )),
            }
        })
        .collect()
}

/// The user's GitHub login and teams, from an authorization code.
pub async fn login_and_teams(
    spec: &GithubConnectorSpec,
    code: &str,
    pkce_verifier: &str,
    redirect_url: &str,
) -> Result<(String, Vec<(String, String)>), SsoError> {
    let body = fetch(IdpRequest {
        post_form: Some(form(&[
            ("client_id", &spec.client_id),
            ("client_secret", &spec.client_secret),
            ("code", code),
            ("redirect_uri", redirect_url),
            ("code_verifier", pkce_verifier),
        ])),
        url: &format!("{}/login/oauth/access_token", spec.endpoint()),
        authorization: None,
    })
    .await?;
    let token = parse_token_answer(&body)?;
    let bearer = Some(format!("Bearer {token}"));
    let user = parse_user(
        &fetch(IdpRequest {
            post_form: None,
            url: &format!("{}/user", spec.api_endpoint()),
            authorization: bearer.clone(),
        })
        .await?,
    )?;
    let mut teams = Vec::new();
    for page in 1..=MAX_TEAM_PAGES {
        let url = format!(
            "{}/user/teams?per_page={TEAMS_PER_PAGE}&page={page}",
            spec.api_endpoint()
        );
        let got = parse_teams(
            &fetch(IdpRequest {
                post_form: None,
                url: &url,
                authorization: bearer.clone(),
            })
            .await?,
        )?;
        let last = got.len() < TEAMS_PER_PAGE;
        teams.extend(got);
        if last {
            break;
        }
    }
    Ok((user, teams))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_or_are_refused() {
        assert_eq!(
            parse_token_answer(br#"{"access_token":"gho_x","token_type":"bearer"}"#).unwrap(),
            "gho_x"
        );
        assert!(matches!(
            parse_token_answer(br#"{"error":"bad_verification_code","error_description":"The code passed is incorrect or expired."}"#),
            Err(SsoError::ProviderRefused(_))
        ));
        assert_eq!(parse_user(br#"{"login":"octo","id":1}"#).unwrap(), "octo");
        let teams = br#"[{"slug":"admins","organization":{"login":"octocats"}},{"slug":"devs","organization":{"login":"octocats"}}]"#;
        assert_eq!(parse_teams(teams).unwrap().len(), 2);
        for bad in [&b"{}"[..], b"[{\"slug\":\"x\"}]", b"[1]", b""] {
            assert!(parse_teams(bad).is_err());
        }
        for i in 0..teams.len() {
            assert!(parse_teams(&teams[..i]).is_err());
        }
        assert!(parse_user(b"{}").is_err() && parse_token_answer(b"{}").is_err());
    }
}
