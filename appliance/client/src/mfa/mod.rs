//! Security keys on the user's side: the authenticator seam ([`Authenticator`]: a FIDO2 key
//! over USB HID, or in test builds a software key in a file), the WebAuthn client the CLI plays
//! in place of a browser ([`ceremony`]: Auth's options in, client data and the key's answer
//! out), user verification with the key's PIN ([`pin`]: asked on the terminal when the key
//! needs it), and the commands `hop mfa ls|add|rm`.
//!
//! Which authenticator: `HOP_TEST_AUTHENTICATOR=FILE` picks the software key, only in a `hop`
//! built with the test-only cargo feature `test-authenticator` (the e2e tests' build; release
//! builds have no such code); otherwise the first FIDO device under `/dev/hidraw*`.

pub mod ceremony;
pub mod commands;
pub mod hid;
pub mod pin;
#[cfg(test)]
#[cfg(feature = "test-authenticator")]
mod pin_tests;
pub mod session;
#[cfg(feature = "test-authenticator")]
pub mod soft;

use hop_webauthn::ctap::{GetAssertion, GotAssertion, MadeCredential, MakeCredential};

/// A FIDO2 authenticator as the CTAP2 commands see it.
pub trait Authenticator {
    /// What to call it in prompts.
    fn describe(&self) -> String;
    /// `authenticatorMakeCredential`.
    fn make_credential(&mut self, req: &MakeCredential<'_>) -> anyhow::Result<MadeCredential>;
    /// `authenticatorGetAssertion`.
    fn get_assertion(&mut self, req: &GetAssertion<'_>) -> anyhow::Result<GotAssertion>;
    /// Another CTAP2 command (`authenticatorGetInfo`, `authenticatorClientPIN`): the
    /// CTAPHID_CBOR payload in (command byte first), the key's answer out (status byte first).
    fn command(&mut self, request: &[u8]) -> anyhow::Result<Vec<u8>>;
}

/// The environment variable naming a test authenticator's key file.
pub const TEST_AUTHENTICATOR_ENV: &str = "HOP_TEST_AUTHENTICATOR";

/// Whether this build carries the software authenticator (the test-only feature).
#[must_use]
pub fn has_test_authenticator() -> bool {
    cfg!(feature = "test-authenticator")
}

/// The authenticator to use: the test one when this build has it and the environment names
/// its file, else the first FIDO key plugged in.
pub fn open() -> anyhow::Result<Box<dyn Authenticator>> {
    #[cfg(feature = "test-authenticator")]
    if let Some(path) = std::env::var_os(TEST_AUTHENTICATOR_ENV) {
        return Ok(Box::new(soft::SoftAuthenticator::new(path.into())));
    }
    if std::env::var_os(TEST_AUTHENTICATOR_ENV).is_some() {
        eprintln!(
            "{TEST_AUTHENTICATOR_ENV} is set, but this hop has no test authenticator: using a security key"
        );
    }
    Ok(Box::new(hid::HidAuthenticator::open_first()?))
}

/// The authenticator a new key is registered on: in test builds the file
/// `HOP_TEST_AUTHENTICATOR_NEW` names when set (a second key plugged in beside the one that gave
/// the proof), else the same as [`open`].
pub fn open_new() -> anyhow::Result<Box<dyn Authenticator>> {
    #[cfg(feature = "test-authenticator")]
    if let Some(path) = std::env::var_os("HOP_TEST_AUTHENTICATOR_NEW") {
        return Ok(Box::new(soft::SoftAuthenticator::new(path.into())));
    }
    open()
}

#[cfg(test)]
mod tests {
    #[test]
    fn release_builds_have_no_test_authenticator() {
        // Unit tests of this crate build without the feature unless a test build of `hop`
        // unifies it in: either way the answer says what was compiled.
        assert_eq!(
            super::has_test_authenticator(),
            cfg!(feature = "test-authenticator")
        );
    }
}
