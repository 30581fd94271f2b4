//! Records the Auth service keeps in the backend besides operator-visible resources: user secrets,
//! invite tokens, CA private keys, and the claims on node names.
//!
//! This module owns their shape and their storage kinds. None of the secret kinds is reachable
//! through the generic admin `get`, and none is ever logged: their Debug output is redacted. Node
//! name claims hold no secret; operators may list and remove them (`host_name`).

use hop_ca::{CaKind, CertAuthority};
use hop_storage::StoredResource;
use serde::{Deserialize, Serialize};

/// A local user's credentials.
#[derive(Clone, Serialize, Deserialize, Default)]
pub struct UserSecrets {
    pub user: String,
    /// argon2id PHC string.
    pub password_hash: Option<String>,
    /// Base32 TOTP secret.
    pub totp_secret: Option<String>,
    /// The last TOTP step accepted, so that a code works once (shared by every device: one
    /// code per step per user).
    pub totp_last_step: Option<u64>,
    /// One-time-code devices added from the account page, besides the one enrolled at sign-up
    /// (`totp_secret`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub otp_devices: Vec<OtpDevice>,
    /// WebAuthn security keys and passkeys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webauthn_devices: Vec<WebauthnDevice>,
    /// The WebAuthn user handle (random, stable, never the name), base64url; made when the
    /// first key is registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webauthn_user_handle: Option<String>,
}

/// A WebAuthn credential (security key or passkey). Holds no secret, only a public key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WebauthnDevice {
    /// Random, shown to the user to name the device in a removal.
    pub id: String,
    pub name: String,
    /// The authenticator's credential id, base64url.
    pub credential_id: String,
    /// The COSE public key, base64url.
    pub public_key_cbor: String,
    /// The last signature counter accepted.
    pub counter: u32,
    /// The authenticator model, hex.
    pub aaguid: String,
    /// Unix seconds.
    pub added_unix: i64,
    /// Unix seconds of the last assertion accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_unix: Option<i64>,
}

/// What a WebAuthn challenge may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChallengePurpose {
    /// `navigator.credentials.create`: a new device.
    Register,
    /// `navigator.credentials.get` at login.
    Login,
    /// `navigator.credentials.get` proving a device is at hand for an account change (adding
    /// or removing a device).
    Manage,
    /// `navigator.credentials.get` of a passkey at a passwordless login: bound to no user
    /// (the authenticator names the user by its handle).
    Passwordless,
    /// `navigator.credentials.get` before one session under `require_session_mfa`: bound to a
    /// user, a node and a login.
    SessionMfa,
}

/// Which user a WebAuthn user handle belongs to (a passkey's assertion names its user only by
/// the handle). Checked against the user's secrets at each use: a stale entry names nobody.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebauthnUserHandle {
    pub handle: String,
    pub user: String,
}

impl StoredResource for WebauthnUserHandle {
    const KIND: &'static str = "webauthn_user_handle";
    fn name(&self) -> &str {
        &self.handle
    }
}

/// A WebAuthn challenge Auth issued: used once (deleted when used), for one user and one
/// purpose, until it expires. Stored under the SHA-256 of the challenge.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebauthnChallenge {
    pub challenge_hash: String,
    pub user: String,
    pub purpose: ChallengePurpose,
    /// Unix seconds.
    pub expires_unix: i64,
}

impl StoredResource for WebauthnChallenge {
    const KIND: &'static str = "webauthn_challenge";
    fn name(&self) -> &str {
        &self.challenge_hash
    }
}

/// A one-time-code (TOTP) device added after sign-up.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OtpDevice {
    /// Random, shown to the user to name the device in a removal.
    pub id: String,
    /// The user's name for it ("phone").
    pub name: String,
    /// Base32 TOTP secret.
    pub secret: String,
    /// Unix seconds.
    pub added_unix: i64,
}

/// The id under which the device enrolled at sign-up (`totp_secret`) is listed.
pub const SIGNUP_DEVICE: &str = "signup";

impl UserSecrets {
    /// Every TOTP secret of the user (the sign-up device first), base32.
    pub fn totp_secrets(&self) -> impl Iterator<Item = &str> {
        self.totp_secret
            .as_deref()
            .into_iter()
            .chain(self.otp_devices.iter().map(|d| d.secret.as_str()))
    }
}

impl std::fmt::Debug for OtpDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtpDevice")
            .field("id", &self.id)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for UserSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserSecrets")
            .field("user", &self.user)
            .field(
                "password_hash",
                &self.password_hash.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "totp_secret",
                &self.totp_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("otp_devices", &self.otp_devices)
            .finish()
    }
}

impl StoredResource for UserSecrets {
    const KIND: &'static str = "user_secrets";
    fn name(&self) -> &str {
        &self.user
    }
}

/// What an invite token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InviteKind {
    /// First password and second factor of a new user.
    Signup,
    /// Replaces a user's password and second factor.
    Reset,
}

/// An invite or reset token. Stored under the SHA-256 of the token, never the token itself.
#[derive(Clone, Serialize, Deserialize)]
pub struct InviteToken {
    /// hex(sha256(token)).
    pub token_hash: String,
    pub user: String,
    pub kind: InviteKind,
    /// Unix seconds.
    pub expires_unix: i64,
}

impl std::fmt::Debug for InviteToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InviteToken")
            .field("user", &self.user)
            .field("kind", &self.kind)
            .field("expires_unix", &self.expires_unix)
            .finish_non_exhaustive()
    }
}

impl StoredResource for InviteToken {
    const KIND: &'static str = "invite_token";
    fn name(&self) -> &str {
        &self.token_hash
    }
}

/// A CA with its private keys.
#[derive(Clone, Serialize, Deserialize)]
pub struct CaKeys {
    pub name: String,
    /// The key that signs.
    pub authority: CertAuthority,
    /// During a rotation, the other key: trusted, never signing (the new one in `init` and
    /// `rollback`, the old one in `update_clients` and `update_servers`).
    #[serde(default)]
    pub additional: Option<CertAuthority>,
    #[serde(default)]
    pub rotation: crate::rotation::Rotation,
}

impl std::fmt::Debug for CaKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaKeys")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl CaKeys {
    pub fn new(kind: CaKind, authority: CertAuthority) -> Self {
        Self {
            name: kind.to_string(),
            authority,
            additional: None,
            rotation: crate::rotation::Rotation::default(),
        }
    }
}

impl StoredResource for CaKeys {
    const KIND: &'static str = "ca_keys";
    fn name(&self) -> &str {
        &self.name
    }
}

/// A node name held by one host, so that no other host is certified for it (see
/// `auth::host_names`). Stored under the (lower-case) name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostNameClaim {
    pub name: String,
    /// The Auth-generated id of the host holding it.
    pub host_id: String,
    /// Unix seconds: when the host's certificate lapses, and the claim with it.
    pub expires_unix: i64,
}

impl StoredResource for HostNameClaim {
    const KIND: &'static str = "host_name";
    fn name(&self) -> &str {
        &self.name
    }
}

/// Kinds an operator may read, write or delete through the admin API.
pub const PUBLIC_KINDS: &[&str] = &[
    "role",
    "user",
    "token",
    "db",
    "node",
    "lock",
    "oidc",
    "github",
    "saml",
    "cert_authority",
    "cluster_name",
    "cluster_auth_preference",
    "host_name",
];

/// hex(sha256(token)): the storage name of a secret token.
pub fn token_hash(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}
