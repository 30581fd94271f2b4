//! The claims of an application session's identity assertion (`Hop-Jwt-Assertion`): issuer (the
//! cluster), subject and `username` (the user), `roles`, `traits` (with the user's `logins`),
//! `aud` (the application's uri), `iat`/`nbf` (the session's start) and `exp` (its end).

use std::time::{SystemTime, UNIX_EPOCH};

use super::AppGrant;

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// The claims of a session started at `now` for `grant`, ending at `expires`.
pub fn claims(
    cluster: &str,
    grant: &AppGrant,
    now: SystemTime,
    expires: SystemTime,
) -> serde_json::Value {
    let id = &grant.identity;
    let mut traits = id.traits.clone();
    traits
        .entry("logins".to_string())
        .or_insert_with(|| id.logins.clone());
    let mut claims = serde_json::json!({
        "iss": cluster,
        "sub": id.username,
        "username": id.username,
        "roles": id.roles,
        "traits": traits,
        "iat": secs(now),
        "nbf": secs(now),
        "exp": secs(expires),
    });
    if !grant.app_uri.is_empty() {
        claims["aud"] = serde_json::json!([grant.app_uri]);
    }
    claims
}
