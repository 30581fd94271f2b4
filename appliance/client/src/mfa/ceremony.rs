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
/// when the cluster lists it. A proxy named by a DNS name the cluster does not list is refused:
/// the key would otherwise sign for whatever site the server names (a browser signs only for
/// the page's own origin). A proxy named by an IP address has no name to compare, so the
/// cluster's first public address is used, and said.
pub fn pick_origin(origins: &[String], proxy: &str) -> anyhow::Result<String> {
    let named = match proxy.strip_suffix(":443") {
        Some(h) => format!("https://{h}"),
        None => format!("https://{proxy}"),
    };
    if origins.contains(&named) {
        return Ok(named);
    }
    let first = origins.first().cloned().ok_or_else(|| {
        anyhow!("the cluster has no web address for security keys (proxy_service.public_addr)")
    })?;
    let host = hop_net::connect::split_host_port(proxy)
        .map(|(h, _)| h)
        .unwrap_or_else(|_| proxy.to_string());
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<std::net::IpAddr>().is_err() {
        bail!(
            "the proxy you named ({proxy}) is not one of the cluster's web addresses ({}): log in with --proxy set to one of them, so that your key signs for the site you named",
            origins.join(", ")
        );
    }
    eprintln!(
        "hop: {proxy} is an IP address; your key signs for the cluster's web address {first}"
    );
    Ok(first)
}

/// A browser's rule for the relying party a key signs for: its id is the origin's host or a
/// domain the host is under (`example.com` for `https://hop.example.com`), so a server cannot
/// have the key sign for another site.
fn check_rp_id(rp_id: &str, origin: &str) -> anyhow::Result<()> {
    let host = origin
        .strip_prefix("https://")
        .map(|rest| rest.rsplit_once(':').map_or(rest, |(h, _)| h))
        .unwrap_or_default()
        .to_ascii_lowercase();
    let rp = rp_id.to_ascii_lowercase();
    if !rp.is_empty() && (host == rp || host.ends_with(&format!(".{rp}"))) {
        return Ok(());
    }
    bail!("the server asked for a signature for {rp_id:?}, which is not the site {origin}")
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
    check_rp_id(rp_id, origin)?;
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
    check_rp_id(rp_id, origin)?;
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
        // A name the cluster does not list: refused, naming what it lists.
        let err = pick_origin(&origins, "victim.example:3080").unwrap_err();
        assert!(err.to_string().contains("hop.example"), "{err}");
    }

    #[test]
    fn the_key_signs_only_for_the_origin_host_or_a_domain_it_is_under() {
        for (rp, origin) in [
            ("hop.example", "https://hop.example"),
            ("example", "https://hop.example:3080"),
            ("localhost", "https://localhost:3080"),
            ("HOP.example", "https://hop.example"),
        ] {
            assert!(check_rp_id(rp, origin).is_ok(), "{rp} {origin}");
        }
        for (rp, origin) in [
            ("victim.example", "https://hop.example"),
            ("op.example", "https://hop.example"),
            ("", "https://hop.example"),
            ("hop.example", "http://hop.example"),
            ("hop.example.evil", "https://hop.example"),
        ] {
            assert!(check_rp_id(rp, origin).is_err(), "{rp} {origin}");
        }
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
