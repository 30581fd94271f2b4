//! User verification with a security key's PIN: which way a key verifies its user (its own
//! fingerprint reader, its PIN, or neither), asking the PIN on the terminal without echo,
//! exchanging it for a PIN/UV auth token (`hop-webauthn`'s `client_pin`), and running a
//! makeCredential or getAssertion again with the token's `pinUvAuthParam` when the key answered
//! that it needs its PIN. The PIN and the token live only for one ceremony: they are zeroed when
//! dropped and never printed or logged.

use std::io::IsTerminal;

use anyhow::{Context, anyhow, bail};
use hop_webauthn::client_pin::{
    self, Info, Permissions, PinUvAuth, PinUvToken, TokenExchange, encode_get_info,
    encode_get_key_agreement, encode_get_retries,
};
use hop_webauthn::ctap::{CtapError, status};
use hop_webauthn::pin::{EphemeralKey, Pin, PinProtocol, permission};
use zeroize::Zeroizing;

use super::Authenticator;

/// Where the PIN comes from: the terminal, or a test's script.
pub trait PinPrompt {
    /// Asks for a PIN; `prompt` says for which key and why (a wrong PIN, the tries left).
    fn ask(&mut self, prompt: &str) -> anyhow::Result<Zeroizing<String>>;
}

/// The PIN typed at the terminal, without echo.
pub struct TerminalPin;

impl PinPrompt for TerminalPin {
    fn ask(&mut self, prompt: &str) -> anyhow::Result<Zeroizing<String>> {
        if !std::io::stdin().is_terminal() {
            bail!(
                "the security key needs its PIN and standard input is not a terminal to type it on"
            );
        }
        rpassword::prompt_password(format!("{prompt}: "))
            .map(Zeroizing::new)
            .context("cannot read the PIN from the terminal")
    }
}

/// How a key verifies its user when a ceremony needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// It has its own (a fingerprint reader): the `uv` option.
    BuiltIn,
    /// With its PIN: a token from the PIN approves the command.
    Pin,
}

const SET_A_PIN: &str = "set a PIN on it with the key vendor's tool, then try again";

/// How the key that `info` describes verifies its user; an error naming what to do when it
/// cannot.
pub fn verification(info: &Info, key: &str) -> anyhow::Result<Verification> {
    if info.option("uv") == Some(true) {
        return Ok(Verification::BuiltIn);
    }
    match info.option("clientPin") {
        Some(true) => Ok(Verification::Pin),
        Some(false) => {
            bail!("the {key} has no PIN set and cannot verify you otherwise: {SET_A_PIN}")
        }
        None => bail!(
            "the {key} cannot verify you (it has neither a PIN nor a fingerprint reader): use a key that can"
        ),
    }
}

/// The key's `authenticatorGetInfo`.
pub fn info(auth: &mut dyn Authenticator) -> anyhow::Result<Info> {
    let answer = auth.command(&encode_get_info())?;
    client_pin::parse_get_info(&answer).context("the security key's getInfo")
}

fn retries(auth: &mut dyn Authenticator, protocol: PinProtocol) -> anyhow::Result<u64> {
    let answer = auth.command(&encode_get_retries(protocol))?;
    Ok(client_pin::parse_retries(&answer)?)
}

fn tries(left: u64) -> String {
    match left {
        1 => "1 PIN try left".into(),
        n => format!("{n} PIN tries left"),
    }
}

fn blocked(key: &str) -> anyhow::Error {
    anyhow!(
        "the {key}'s PIN is blocked (no tries left): only a reset with the vendor's tool, which erases the key's credentials, makes it usable again"
    )
}

/// A PIN/UV auth token for `permission` on `rp_id`: asks the PIN until the key takes it,
/// saying after a wrong one how many tries are left; stops when the key blocks PINs.
pub fn token(
    auth: &mut dyn Authenticator,
    prompt: &mut dyn PinPrompt,
    info: &Info,
    permission: u8,
    rp_id: &str,
) -> anyhow::Result<PinUvToken> {
    let key = auth.describe();
    let protocol = info.pin_protocol().ok_or_else(|| {
        anyhow!(
            "the {key} offers only PIN protocols Hop does not speak ({:?})",
            info.pin_uv_auth_protocols
        )
    })?;
    let permissions = info.tokens_with_permissions().then_some(Permissions {
        bits: permission,
        rp_id,
    });
    let left = retries(auth, protocol)?;
    if left == 0 {
        return Err(blocked(&key));
    }
    let mut note = if left <= 3 {
        format!("{} before the key locks. ", tries(left))
    } else {
        String::new()
    };
    loop {
        let typed = prompt.ask(&format!("{note}PIN for your {key}"))?;
        let pin = match Pin::new(typed) {
            Ok(p) => p,
            Err(e) => {
                note = format!("Not a PIN: {e}. ");
                continue;
            }
        };
        let answer = auth.command(&encode_get_key_agreement(protocol))?;
        let theirs = client_pin::parse_key_agreement(&answer)?;
        let (exchange, request) = TokenExchange::start(
            protocol,
            &theirs,
            &EphemeralKey::generate(),
            &pin,
            permissions,
        )?;
        drop(pin);
        let answer = auth.command(&request)?;
        match exchange.finish(&answer) {
            Ok(t) => return Ok(t),
            Err(CtapError::Status(status::PIN_INVALID)) => {
                let left = retries(auth, protocol)?;
                note = format!("Wrong PIN ({}). ", tries(left));
            }
            Err(CtapError::Status(status::PIN_AUTH_BLOCKED)) => bail!(
                "three wrong PINs in a row: the {key} takes no more until you remove it and plug it in again"
            ),
            Err(CtapError::Status(status::PIN_BLOCKED)) => return Err(blocked(&key)),
            Err(CtapError::Status(status::PIN_NOT_SET)) => {
                bail!("the {key} has no PIN set: {SET_A_PIN}")
            }
            Err(e) => return Err(e).context("the security key's answer to the PIN"),
        }
    }
}

/// The CTAP2 status an authenticator's error carries, if it is one.
fn status_of(e: &anyhow::Error) -> Option<u8> {
    match e.downcast_ref::<CtapError>() {
        Some(CtapError::Status(s)) => Some(*s),
        _ => None,
    }
}

/// What one ceremony needs to get a token: the permission, the RP ID, the client data hash
/// the token approves.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    pub permission: u8,
    pub rp_id: &'a str,
    pub client_data_hash: &'a [u8],
}

/// Runs `attempt` (a makeCredential or getAssertion, given the `uv` option and the PIN's
/// approval) with the user verification it needs: when `need_uv`, the key's own or its PIN's.
/// Otherwise none, except that a key with a PIN set (and no verification of its own) gets its
/// PIN to make a credential (CTAP 2.0 keys always want it, 2.1 keys for a passkey), and that a
/// key which answers that it wants its PIN (`PIN_REQUIRED`), or whose own verification failed
/// while it has a PIN to fall back on, is asked again with the PIN.
pub fn run_verified<T>(
    auth: &mut dyn Authenticator,
    prompt: &mut dyn PinPrompt,
    need_uv: bool,
    scope: Scope<'_>,
    attempt: impl FnMut(&mut dyn Authenticator, bool, Option<PinUvAuth>) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let mut known = None;
    if need_uv || scope.permission == permission::MAKE_CREDENTIAL {
        let i = info(auth)?;
        let pin_first = if need_uv {
            verification(&i, &auth.describe())? == Verification::Pin
        } else {
            i.option("clientPin") == Some(true) && i.option("uv") != Some(true)
        };
        if pin_first {
            return with_pin(auth, prompt, &i, scope, attempt);
        }
        known = Some(i);
    }
    retry_with_pin(auth, prompt, need_uv, scope, known, attempt)
}

fn retry_with_pin<T>(
    auth: &mut dyn Authenticator,
    prompt: &mut dyn PinPrompt,
    need_uv: bool,
    scope: Scope<'_>,
    known: Option<Info>,
    mut attempt: impl FnMut(&mut dyn Authenticator, bool, Option<PinUvAuth>) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let first = attempt(auth, need_uv, None);
    let Err(e) = first else { return first };
    let Some(code @ (status::PIN_REQUIRED | status::UV_BLOCKED | status::UV_INVALID)) =
        status_of(&e)
    else {
        return Err(e);
    };
    let info = match known {
        Some(i) => i,
        None => info(auth)?,
    };
    match info.option("clientPin") {
        Some(true) => with_pin(auth, prompt, &info, scope, attempt),
        _ if code == status::PIN_REQUIRED => {
            bail!(
                "the {} asks for its PIN but has none set: {SET_A_PIN}",
                auth.describe()
            )
        }
        _ => Err(e),
    }
}

fn with_pin<T>(
    auth: &mut dyn Authenticator,
    prompt: &mut dyn PinPrompt,
    info: &Info,
    scope: Scope<'_>,
    mut attempt: impl FnMut(&mut dyn Authenticator, bool, Option<PinUvAuth>) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let token = token(auth, prompt, info, scope.permission, scope.rp_id)?;
    let approval = token.auth(scope.client_data_hash);
    drop(token);
    attempt(auth, false, Some(approval))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(options: &[(&str, bool)]) -> Info {
        Info {
            options: options.iter().map(|(n, v)| (n.to_string(), *v)).collect(),
            ..Info::default()
        }
    }

    #[test]
    fn each_key_verifies_its_user_its_own_way_or_says_why_not() {
        assert_eq!(
            verification(&info(&[("uv", true), ("clientPin", true)]), "key").unwrap(),
            Verification::BuiltIn
        );
        assert_eq!(
            verification(&info(&[("uv", false), ("clientPin", true)]), "key").unwrap(),
            Verification::Pin
        );
        let e = verification(&info(&[("clientPin", false)]), "key").unwrap_err();
        assert!(e.to_string().contains("set a PIN"), "{e}");
        let e = verification(&info(&[]), "key").unwrap_err();
        assert!(e.to_string().contains("neither a PIN"), "{e}");
    }
}
