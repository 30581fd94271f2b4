//! The WebAuthn client the CLI plays in place of a browser: it reads the options Auth sends
//! (`{"publicKey": {...}}`, as `navigator.credentials.get` / `.create` take them), writes the
//! client data for the cluster's web origin, has the authenticator sign, and gives back the
//! answer as the web API encodes it (base64url fields), which Auth checks exactly as it checks
//! a browser's. User verification: asked of the key when the options require it (a
//! passwordless login), else left to the key, which may still want its PIN (a passkey
//! registered on a PIN-protected key); the PIN is asked then ([`super::pin`]).

use anyhow::{Context, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hop_webauthn::ctap::{self, GetAssertion, MakeCredential};
use hop_webauthn::pin::permission;
use serde_json::{Value, json};

use super::Authenticator;
use super::pin::{PinPrompt, Scope, TerminalPin, run_verified};

fn unb64(what: &str, s: &str) -> anyhow::Result<Vec<u8>> {
    B64.decode(s.trim_end_matches('='))
        .map_err(|_| anyhow!("Auth's WebAuthn options: {what} is not base64url"))
}

fn public_key(options_json: &str) -> anyhow::Result<Value> {
    let v: Value = serde_json::from_str(options_json).context("Auth's WebAuthn options")?;
    v.get("publicKey")
        .cloned()
        .ok_or_else(|| anyhow!("Auth's WebAuthn options have no publicKey"))
}

fn str_field<'v>(v: &'v Value, path: &[&str]) -> anyhow::Result<&'v str> {
    let mut cur = v;
    for p in path {
        cur = cur
            .get(*p)
            .ok_or_else(|| anyhow!("Auth's WebAuthn options have no {}", path.join(".")))?;
    }
    cur.as_str()
        .ok_or_else(|| anyhow!("Auth's WebAuthn options: {} is not text", path.join(".")))
}

fn credential_ids(list: Option<&Value>) -> anyhow::Result<Vec<Vec<u8>>> {
    list.and_then(Value::as_array)
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            unb64(
                "a credential id",
                c.get("id").and_then(Value::as_str).unwrap_or(""),
            )
        })
        .collect()
}

/// The credentials an assertion's options allow (none: the user has no key, or passwordless).
pub fn allowed_credentials(options_json: &str) -> anyhow::Result<usize> {
    Ok(credential_ids(public_key(options_json)?.get("allowCredentials"))?.len())
}

/// The origin to claim in client data: `https://` + the address the user named with `--proxy`
/// when the cluster lists it, else the cluster's first public address.
pub fn pick_origin(origins: &[String], proxy: &str) -> anyhow::Result<String> {
    let named = match proxy.strip_suffix(":443") {
        Some(h) => format!("https://{h}"),
        None => format!("https://{proxy}"),
    };
    if origins.contains(&named) {
        return Ok(named);
    }
    origins.first().cloned().ok_or_else(|| {
        anyhow!("the cluster has no web address for security keys (proxy_service.public_addr)")
    })
}

/// An assertion answering `options_json` (Auth's request options) from `origin`, as the JSON
/// Auth takes; with `passwordless`, user verification and the user handle.
pub fn assert(
    auth: &mut dyn Authenticator,
    options_json: &str,
    origin: &str,
    passwordless: bool,
) -> anyhow::Result<Value> {
    assert_with(auth, &mut TerminalPin, options_json, origin, passwordless)
}

/// [`assert`] with the PIN, when the key needs one, from `prompt`.
pub fn assert_with(
    auth: &mut dyn Authenticator,
    prompt: &mut dyn PinPrompt,
    options_json: &str,
    origin: &str,
    passwordless: bool,
) -> anyhow::Result<Value> {
    let pk = public_key(options_json)?;
    let challenge = unb64("challenge", str_field(&pk, &["challenge"])?)?;
    let rp_id = str_field(&pk, &["rpId"])?;
    let allow = credential_ids(pk.get("allowCredentials"))?;
    let uv = passwordless || pk.get("userVerification").and_then(Value::as_str) == Some("required");
    let client_data = ctap::client_data_json("webauthn.get", &challenge, origin);
    let hash = ctap::sha256(&client_data);
    let scope = Scope {
        permission: permission::GET_ASSERTION,
        rp_id,
        client_data_hash: &hash,
    };
    let got = run_verified(auth, prompt, uv, scope, |auth, uv, pin_uv_auth| {
        eprintln!("Tap your {} to continue.", auth.describe());
        auth.get_assertion(&GetAssertion {
            rp_id,
            client_data_hash: &hash,
            allow: &allow,
            user_verification: uv,
            pin_uv_auth,
        })
    })?;
    let credential_id = match (got.credential_id, allow.as_slice()) {
        (Some(id), _) => id,
        (None, [only]) => only.clone(),
        (None, _) => bail!("the security key did not say which credential it used"),
    };
    let mut out = json!({
        "credential_id": B64.encode(credential_id),
        "client_data_json": B64.encode(&client_data),
        "authenticator_data": B64.encode(&got.authenticator_data),
        "signature": B64.encode(&got.signature),
    });
    if passwordless {
        let handle = got.user_handle.ok_or_else(|| {
            anyhow!("the security key's credential is not a passkey (no user handle): log in with a password")
        })?;
        out["user_handle"] = json!(B64.encode(handle));
    }
    Ok(out)
}

/// A new credential answering `options_json` (Auth's creation options) from `origin`, as the
/// JSON Auth takes.
pub fn register(
    auth: &mut dyn Authenticator,
    options_json: &str,
    origin: &str,
) -> anyhow::Result<Value> {
    register_with(auth, &mut TerminalPin, options_json, origin)
}

/// [`register`] with the PIN, when the key needs one, from `prompt`.
pub fn register_with(
    auth: &mut dyn Authenticator,
    prompt: &mut dyn PinPrompt,
    options_json: &str,
    origin: &str,
) -> anyhow::Result<Value> {
    let pk = public_key(options_json)?;
    let challenge = unb64("challenge", str_field(&pk, &["challenge"])?)?;
    let user_id = unb64("user.id", str_field(&pk, &["user", "id"])?)?;
    let algorithms: Vec<i64> = pk
        .get("pubKeyCredParams")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|p| p.get("alg")?.as_i64()).collect())
        .unwrap_or_default();
    let exclude = credential_ids(pk.get("excludeCredentials"))?;
    let selection = pk.get("authenticatorSelection");
    let wants = |k: &str| {
        selection
            .and_then(|s| s.get(k))
            .and_then(Value::as_str)
            .is_some_and(|v| v == "required" || v == "preferred")
    };
    let uv = selection
        .and_then(|s| s.get("userVerification"))
        .and_then(Value::as_str)
        == Some("required");
    let rp_id = str_field(&pk, &["rp", "id"])?;
    let rp_name = str_field(&pk, &["rp", "name"]).unwrap_or("Hop");
    let user_name = str_field(&pk, &["user", "name"])?;
    let client_data = ctap::client_data_json("webauthn.create", &challenge, origin);
    let hash = ctap::sha256(&client_data);
    let scope = Scope {
        permission: permission::MAKE_CREDENTIAL,
        rp_id,
        client_data_hash: &hash,
    };
    let made = run_verified(auth, prompt, uv, scope, |auth, uv, pin_uv_auth| {
        eprintln!("Tap your {} to register it.", auth.describe());
        auth.make_credential(&MakeCredential {
            client_data_hash: &hash,
            rp_id,
            rp_name,
            user_id: &user_id,
            user_name,
            algorithms: &algorithms,
            exclude: &exclude,
            // A passkey when the key can: passwordless logins need one.
            resident_key: wants("residentKey"),
            user_verification: uv,
            pin_uv_auth,
        })
    })?;
    Ok(json!({
        "client_data_json": B64.encode(&client_data),
        "attestation_object": B64.encode(&made.attestation_object),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_origin_is_the_named_proxy_when_the_cluster_lists_it() {
        let origins = vec![
            "https://hop.example".to_string(),
            "https://localhost:3080".to_string(),
        ];
        assert_eq!(
            pick_origin(&origins, "localhost:3080").unwrap(),
            "https://localhost:3080"
        );
        assert_eq!(
            pick_origin(&origins, "hop.example:443").unwrap(),
            "https://hop.example"
        );
        assert_eq!(
            pick_origin(&origins, "127.0.0.1:3080").unwrap(),
            "https://hop.example"
        );
        assert!(pick_origin(&[], "x").is_err());
    }

    #[test]
    fn options_without_their_fields_are_refused() {
        assert!(allowed_credentials("{}").is_err());
        assert_eq!(allowed_credentials(r#"{"publicKey":{}}"#).unwrap(), 0);
        assert!(
            allowed_credentials(r#"{"publicKey":{"allowCredentials":[{"id":"!!"}]}}"#).is_err()
        );
    }
}
