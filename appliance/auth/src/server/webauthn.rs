//! WebAuthn security keys and passkeys as a second factor: the relying party's state around the
//! sans-IO checks of `hop-webauthn`. It owns the challenges (one-time backend records under a
//! 5-minute lease, bound to a user and a purpose), the options the browser passes to
//! `navigator.credentials.create` / `.get`, the devices stored beside the one-time-code devices
//! (public keys and counters only: no secret), the check of an assertion at login or for an
//! account change, and the counter update (one compare-and-swap: a counter that does not move
//! forward is refused and audited as a possibly cloned key).
//!
//! The CLI's FIDO2 login (`hop login` over CTAP2, `grpc_mfa`) and per-session MFA take a
//! challenge with [`AuthServer::begin_webauthn_assertion`] and present the answer as
//! [`SecondFactor::Webauthn`]. Passwordless login (the browser's, and `hop login --auth
//! passwordless`) takes a challenge bound to no user ([`AuthServer::begin_passwordless`]) and a
//! passkey's assertion naming its user by the user handle ([`AuthServer::login_passwordless`],
//! user verification required).

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use data_encoding::BASE64URL_NOPAD;
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use super::account::account_check;
use super::login::{LoginCertificates, LoginRequest, SecondFactor};
use super::{AuthServer, unix};
use crate::audit::EventKind;
use crate::error::AuthError;
use crate::records::{
    ChallengePurpose, UserSecrets, WebauthnChallenge, WebauthnDevice, WebauthnUserHandle,
    token_hash,
};
use hop_webauthn::{WebauthnError, verify_assertion, verify_registration};

/// How long a challenge may be answered.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(300);

/// The most WebAuthn devices a user may have.
pub const MAX_WEBAUTHN_DEVICES: usize = 8;

/// The longest name a device may have.
const MAX_DEVICE_NAME: usize = 64;

/// The relying party: the RP ID the credentials are scoped to and the web origins ceremonies
/// may run in (`https://` + each public address of the proxy, with its port unless 443).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebauthnSettings {
    pub rp_id: String,
    pub origins: Vec<String>,
}

impl WebauthnSettings {
    /// The settings for a proxy reached at `public_addrs` (`host[:port]`, the first one names
    /// the RP ID unless `rp_id` is given).
    #[must_use]
    pub fn for_public_addrs(rp_id: Option<&str>, public_addrs: &[String]) -> Self {
        let mut origins: Vec<String> = public_addrs
            .iter()
            .map(|a| match a.rsplit_once(':') {
                Some((h, "443")) => format!("https://{h}"),
                _ => format!("https://{a}"),
            })
            .collect();
        origins.dedup();
        let host = |a: &str| match a.rsplit_once(':') {
            Some((h, p)) if p.parse::<u16>().is_ok() && !h.is_empty() => {
                h.trim_matches(['[', ']']).to_string()
            }
            _ => a.to_string(),
        };
        let rp_id = rp_id
            .map(str::to_string)
            .or_else(|| public_addrs.first().map(|a| host(a)))
            .unwrap_or_default();
        Self { rp_id, origins }
    }
}

/// A browser's answer to `navigator.credentials.get`, each field base64url as the web API
/// carries it.
#[derive(Debug, Clone, Deserialize)]
pub struct WebauthnAssertion {
    pub credential_id: String,
    pub client_data_json: String,
    pub authenticator_data: String,
    pub signature: String,
}

/// A browser's answer to `navigator.credentials.create`, base64url.
#[derive(Debug, Clone, Deserialize)]
pub struct WebauthnRegistration {
    pub client_data_json: String,
    pub attestation_object: String,
}

/// A WebAuthn device as its owner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebauthnDeviceView {
    pub id: String,
    pub name: String,
    pub added: SystemTime,
    pub last_used: Option<SystemTime>,
    /// The authenticator model, hex (zeros when the authenticator does not say).
    pub aaguid: String,
}

/// An assertion that passed, before its counter is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct AcceptedAssertion {
    pub device_id: String,
    pub counter: u32,
}

pub(super) fn b64(bytes: &[u8]) -> String {
    BASE64URL_NOPAD.encode(bytes)
}

fn unb64(field: &'static str, s: &str) -> Result<Vec<u8>, AuthError> {
    BASE64URL_NOPAD
        .decode(s.trim_end_matches('=').as_bytes())
        .map_err(|_| AuthError::BadRequest(format!("{field} is not base64url")))
}

fn from_unix(secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

fn random_id() -> String {
    let mut b = [0u8; 8];
    rand::fill(&mut b[..]);
    hex::encode(b)
}

/// What the audit log and the caller's refusal say of a WebAuthn check that failed.
fn refusal(e: &WebauthnError) -> &'static str {
    match e {
        WebauthnError::CounterRegressed { .. } => {
            "security key signature counter did not move forward: possibly a cloned key"
        }
        WebauthnError::WrongOrigin(_) | WebauthnError::CrossOrigin => {
            "security key used from another web origin"
        }
        WebauthnError::WrongRelyingParty => "security key signed for another relying party",
        WebauthnError::WrongChallenge => "security key answered another challenge",
        WebauthnError::BadSignature => "security key signature does not verify",
        WebauthnError::NoUserPresence | WebauthnError::NoUserVerification => {
            "security key did not confirm the user"
        }
        WebauthnError::WrongType { .. } => "security key ceremony of the wrong type",
        WebauthnError::WrongCredential => "security key is not the one registered",
        WebauthnError::ClientData(_)
        | WebauthnError::AuthenticatorData(_)
        | WebauthnError::Attestation(_)
        | WebauthnError::PublicKey(_) => "malformed security key response",
    }
}

/// The devices that let `s` log in under `second_factor`.
pub(super) fn usable_devices(s: &UserSecrets, second_factor: &str) -> usize {
    let otp = if second_factor == "webauthn" {
        0
    } else {
        s.totp_secrets().count()
    };
    let keys = if webauthn_allowed(second_factor) {
        s.webauthn_devices.len()
    } else {
        0
    };
    otp + keys
}

/// Whether `second_factor` lets users log in with WebAuthn.
pub(super) fn webauthn_allowed(second_factor: &str) -> bool {
    matches!(second_factor, "on" | "optional" | "webauthn")
}

impl AuthServer {
    /// The relying party this cluster is.
    pub fn webauthn_settings(&self) -> &WebauthnSettings {
        &self.settings.webauthn
    }

    pub(super) fn require_webauthn(&self) -> Result<(), AuthError> {
        if !webauthn_allowed(&self.settings.second_factor) {
            return Err(AuthError::BadRequest(format!(
                "this cluster's second_factor is {}: security keys need on, optional or webauthn",
                self.settings.second_factor
            )));
        }
        if self.settings.webauthn.rp_id.is_empty() || self.settings.webauthn.origins.is_empty() {
            return Err(AuthError::BadRequest(
                "WebAuthn needs the proxy's public address (proxy_service.public_addr) or webauthn.rp_id".into(),
            ));
        }
        Ok(())
    }

    /// A new challenge for `user` and `purpose`, stored under a lease of [`CHALLENGE_TTL`].
    pub(super) fn issue_challenge(
        &self,
        user: &str,
        purpose: ChallengePurpose,
    ) -> Result<Vec<u8>, AuthError> {
        let mut challenge = vec![0u8; 32];
        rand::fill(&mut challenge[..]);
        let expires = self.now() + CHALLENGE_TTL;
        let record = WebauthnChallenge {
            challenge_hash: token_hash(&b64(&challenge)),
            user: user.to_string(),
            purpose,
            expires_unix: unix(expires),
        };
        self.store.swap_leased(&record, None, expires)?;
        Ok(challenge)
    }

    /// The challenge `client_data_json` answers, if Auth issued it to `user` for `purpose` and
    /// it is unused and unexpired; used up by this call whatever follows.
    fn take_challenge(
        &self,
        user: &str,
        purpose: ChallengePurpose,
        client_data_json: &[u8],
    ) -> Result<Vec<u8>, &'static str> {
        let client = hop_webauthn::ClientData::parse(client_data_json)
            .map_err(|_| "malformed security key response")?;
        let hash = token_hash(&b64(&client.challenge));
        let record = self
            .store
            .get::<WebauthnChallenge>(&hash)
            .ok()
            .flatten()
            .map(|v| v.value)
            .ok_or("security key challenge unknown, expired or already used")?;
        // Whoever deletes it first uses it.
        if !self
            .store
            .delete::<WebauthnChallenge>(&hash)
            .map_err(|_| "security key challenge could not be used")?
        {
            return Err("security key challenge unknown, expired or already used");
        }
        if record.user != user || record.purpose != purpose {
            return Err("security key challenge issued for another user or purpose");
        }
        if unix(self.now()) >= record.expires_unix {
            return Err("security key challenge unknown, expired or already used");
        }
        Ok(client.challenge)
    }

    /// The `PublicKeyCredentialCreationOptions` for a new device of `user` (its challenge is
    /// stored for [`CHALLENGE_TTL`]).
    pub fn begin_webauthn_registration(&self, user: &str) -> Result<Value, AuthError> {
        self.require_webauthn()?;
        let (handle, exclude) = self.update_secrets(user, |s| {
            let handle = match &s.webauthn_user_handle {
                Some(h) => h.clone(),
                None => {
                    let mut h = [0u8; 32];
                    rand::fill(&mut h[..]);
                    let h = b64(&h);
                    self.store.upsert(&WebauthnUserHandle {
                        handle: h.clone(),
                        user: user.to_string(),
                    })?;
                    s.webauthn_user_handle = Some(h.clone());
                    h
                }
            };
            let exclude: Vec<Value> = s
                .webauthn_devices
                .iter()
                .map(|d| json!({"type": "public-key", "id": d.credential_id}))
                .collect();
            Ok((handle, exclude))
        })?;
        let challenge = self.issue_challenge(user, ChallengePurpose::Register)?;
        let params: Vec<Value> = hop_webauthn::SUPPORTED_ALGORITHMS
            .iter()
            .map(|alg| json!({"type": "public-key", "alg": alg}))
            .collect();
        Ok(json!({"publicKey": {
            "rp": {"id": self.settings.webauthn.rp_id, "name": self.cluster},
            "user": {"id": handle, "name": user, "displayName": user},
            "challenge": b64(&challenge),
            "pubKeyCredParams": params,
            "timeout": CHALLENGE_TTL.as_secs() * 1000,
            "excludeCredentials": exclude,
            "authenticatorSelection": {
                "userVerification": "preferred",
                "residentKey": "preferred",
                "requireResidentKey": false,
            },
            "attestation": "none",
        }}))
    }

    /// The `PublicKeyCredentialRequestOptions` for an assertion by `user`: at login
    /// (`Login`, rate limited per address: anyone may ask) or to prove a device is at hand for
    /// an account change (`Manage`). A user without keys gets an empty `allowCredentials`.
    pub fn begin_webauthn_assertion(
        &self,
        user: &str,
        purpose: ChallengePurpose,
        remote: Option<SocketAddr>,
    ) -> Result<Value, AuthError> {
        self.require_webauthn()?;
        if matches!(
            purpose,
            ChallengePurpose::Register
                | ChallengePurpose::Passwordless
                | ChallengePurpose::SessionMfa
        ) {
            return Err(AuthError::BadRequest(
                "an assertion challenge is for a login or an account change".into(),
            ));
        }
        self.rate_limit(remote)?;
        let allow: Vec<Value> = self
            .store
            .get::<UserSecrets>(user)?
            .map(|v| v.value.webauthn_devices)
            .unwrap_or_default()
            .iter()
            .map(|d| json!({"type": "public-key", "id": d.credential_id}))
            .collect();
        let challenge = self.issue_challenge(user, purpose)?;
        Ok(json!({"publicKey": {
            "challenge": b64(&challenge),
            "rpId": self.settings.webauthn.rp_id,
            "timeout": CHALLENGE_TTL.as_secs() * 1000,
            "allowCredentials": allow,
            "userVerification": "preferred",
        }}))
    }

    /// Checks assertion `a` of `user` (whose secrets are `secrets`) against a challenge issued
    /// for `purpose` and the stored device; the counter is stored by
    /// [`Self::store_webauthn_use`] once the rest of the check passed.
    pub(super) fn check_webauthn_assertion(
        &self,
        user: &str,
        secrets: Option<&UserSecrets>,
        a: &WebauthnAssertion,
        purpose: ChallengePurpose,
    ) -> Result<AcceptedAssertion, &'static str> {
        let challenge_user = if purpose == ChallengePurpose::Passwordless {
            ""
        } else {
            user
        };
        self.check_webauthn_assertion_scoped(user, challenge_user, secrets, a, purpose)
    }

    /// [`Self::check_webauthn_assertion`] against a challenge issued to `challenge_user` (a
    /// user, nobody for a passkey, or a user and a session target for per-session MFA).
    pub(super) fn check_webauthn_assertion_scoped(
        &self,
        user: &str,
        challenge_user: &str,
        secrets: Option<&UserSecrets>,
        a: &WebauthnAssertion,
        purpose: ChallengePurpose,
    ) -> Result<AcceptedAssertion, &'static str> {
        if !webauthn_allowed(&self.settings.second_factor) {
            return Err("security keys are not a second factor of this cluster");
        }
        let decode = |s: &str| BASE64URL_NOPAD.decode(s.trim_end_matches('=').as_bytes());
        let (Ok(credential_id), Ok(client_data_json), Ok(authenticator_data), Ok(signature)) = (
            decode(&a.credential_id),
            decode(&a.client_data_json),
            decode(&a.authenticator_data),
            decode(&a.signature),
        ) else {
            return Err("malformed security key response");
        };
        let passwordless = purpose == ChallengePurpose::Passwordless;
        let challenge = self.take_challenge(challenge_user, purpose, &client_data_json)?;
        let mut device = None;
        for d in secrets
            .map(|s| s.webauthn_devices.as_slice())
            .unwrap_or(&[])
        {
            let stored = decode(&d.credential_id).unwrap_or_default();
            if bool::from(stored.as_slice().ct_eq(&credential_id)) {
                device = Some(d);
            }
        }
        let device = device.ok_or("unknown security key")?;
        let public_key = decode(&device.public_key_cbor).map_err(|_| "unusable stored key")?;
        let settings = &self.settings.webauthn;
        let counter = verify_assertion(
            &hop_webauthn::Assertion {
                credential_id: &credential_id,
                client_data_json: &client_data_json,
                authenticator_data: &authenticator_data,
                signature: &signature,
            },
            &hop_webauthn::AssertionCheck {
                challenge: &challenge,
                origins: &settings.origins,
                rp_id: &settings.rp_id,
                require_user_verification: passwordless,
                credential_id: &credential_id,
                public_key_cbor: &public_key,
                stored_count: device.counter,
            },
        )
        .map_err(|e| {
            if matches!(e, WebauthnError::CounterRegressed { .. }) {
                tracing::warn!(user = %user, device = %device.id, "security key counter did not move forward: possibly a cloned key");
            }
            refusal(&e)
        })?;
        Ok(AcceptedAssertion {
            device_id: device.id.clone(),
            counter,
        })
    }

    /// Stores the counter and last use of an accepted assertion in one compare-and-swap of
    /// `user`'s secrets: refused when the stored counter moved on meanwhile (a concurrent use,
    /// or a clone) or the device is gone. The caller holds the login-state lock.
    pub(super) fn store_webauthn_use(
        &self,
        user: &str,
        used: &AcceptedAssertion,
    ) -> Result<(), AuthError> {
        let refused = |reason| AuthError::LoginRefused { reason };
        let Some(current) = self.store.get::<UserSecrets>(user)? else {
            return Err(refused("the user has no second factor"));
        };
        let mut s = current.value;
        let Some(d) = s
            .webauthn_devices
            .iter_mut()
            .find(|d| d.id == used.device_id)
        else {
            return Err(refused("the security key was removed"));
        };
        if (used.counter != 0 || d.counter != 0) && used.counter <= d.counter {
            return Err(refused(
                "security key signature counter did not move forward: possibly a cloned key",
            ));
        }
        d.counter = used.counter;
        d.last_used_unix = Some(unix(self.now()));
        match self.store.update(&s, current.revision) {
            Ok(_) => Ok(()),
            Err(hop_storage::StorageError::Conflict { .. }) => {
                Err(refused("the security key was used concurrently; try again"))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// `user`'s WebAuthn devices.
    pub fn webauthn_devices(&self, user: &str) -> Result<Vec<WebauthnDeviceView>, AuthError> {
        let Some(s) = self.store.get::<UserSecrets>(user)?.map(|v| v.value) else {
            return Ok(Vec::new());
        };
        Ok(s.webauthn_devices
            .iter()
            .map(|d| WebauthnDeviceView {
                id: d.id.clone(),
                name: d.name.clone(),
                added: from_unix(d.added_unix),
                last_used: d.last_used_unix.map(from_unix),
                aaguid: d.aaguid.clone(),
            })
            .collect())
    }

    /// The account password of `user` and, when the user has any second-factor device (or the
    /// cluster requires one), a fresh proof from one of them, checked as a login checks them.
    fn check_account_change(
        &self,
        user: &str,
        password_now: &str,
        proof: SecondFactor<'_>,
        remote: Option<SocketAddr>,
    ) -> Result<(), AuthError> {
        self.rate_limit(remote)?;
        let totp = match proof {
            SecondFactor::Otp(code) => code,
            SecondFactor::Webauthn(_) => "",
        };
        let req = account_check(user, password_now, totp, remote);
        self.check_credentials_with(&req, self.now(), proof, ChallengePurpose::Manage)
            .map(|_| ())
    }

    /// Registers a WebAuthn device for `user` from the browser's `response` to the options of
    /// [`Self::begin_webauthn_registration`], after checking the account password and a fresh
    /// proof from a device the user already has. Audited (`mfa.add`) either way.
    pub fn add_webauthn_device(
        &self,
        user: &str,
        (password_now, proof): (&str, SecondFactor<'_>),
        name: &str,
        response: &WebauthnRegistration,
        remote: Option<SocketAddr>,
    ) -> Result<WebauthnDeviceView, AuthError> {
        let added =
            self.check_and_add_webauthn(user, (password_now, proof), name, response, remote);
        if let Err(e) = &added {
            self.audit_refused_device_change(EventKind::MfaAdd, user, remote, e);
        }
        added.map_err(super::account::hide_login_detail)
    }

    fn check_and_add_webauthn(
        &self,
        user: &str,
        (password_now, proof): (&str, SecondFactor<'_>),
        name: &str,
        response: &WebauthnRegistration,
        remote: Option<SocketAddr>,
    ) -> Result<WebauthnDeviceView, AuthError> {
        self.require_webauthn()?;
        let name = name.trim();
        if name.is_empty() || name.chars().count() > MAX_DEVICE_NAME {
            return Err(AuthError::BadRequest(format!(
                "a device needs a name of 1 to {MAX_DEVICE_NAME} characters"
            )));
        }
        let client_data_json = unb64("client_data_json", &response.client_data_json)?;
        let attestation_object = unb64("attestation_object", &response.attestation_object)?;
        let challenge = self
            .take_challenge(user, ChallengePurpose::Register, &client_data_json)
            .map_err(|r| AuthError::BadRequest(r.into()))?;
        let settings = &self.settings.webauthn;
        let credential = verify_registration(
            &hop_webauthn::Registration {
                client_data_json: &client_data_json,
                attestation_object: &attestation_object,
            },
            &hop_webauthn::RegistrationCheck {
                challenge: &challenge,
                origins: &settings.origins,
                rp_id: &settings.rp_id,
                require_user_verification: false,
            },
        )
        .map_err(|e| AuthError::BadRequest(format!("the security key's registration: {e}")))?;
        self.check_account_change(user, password_now, proof, remote)?;
        let now = self.now();
        let device = WebauthnDevice {
            id: random_id(),
            name: name.to_string(),
            credential_id: b64(&credential.credential_id),
            public_key_cbor: b64(&credential.public_key_cbor),
            counter: credential.sign_count,
            aaguid: hex::encode(credential.aaguid),
            added_unix: unix(now),
            last_used_unix: None,
        };
        let view = WebauthnDeviceView {
            id: device.id.clone(),
            name: device.name.clone(),
            added: now,
            last_used: None,
            aaguid: device.aaguid.clone(),
        };
        self.update_secrets(user, |s| {
            if s.webauthn_devices.len() >= MAX_WEBAUTHN_DEVICES {
                return Err(AuthError::BadRequest(format!(
                    "a user has at most {MAX_WEBAUTHN_DEVICES} security keys"
                )));
            }
            if s.webauthn_devices
                .iter()
                .any(|d| d.credential_id == device.credential_id)
            {
                return Err(AuthError::AlreadyExists(
                    "this security key is already registered".into(),
                ));
            }
            s.webauthn_devices.push(device);
            Ok(())
        })?;
        self.audit.emit_durable(
            self.event(EventKind::MfaAdd, user)
                .remote(remote)
                .field("device", view.id.clone())
                .field("name", view.name.clone())
                .field("kind", "webauthn")
                .field("aaguid", view.aaguid.clone())
                .field(
                    "attestation",
                    match credential.attestation {
                        hop_webauthn::AttestationKind::None => "none",
                        hop_webauthn::AttestationKind::SelfSigned => "packed self",
                        hop_webauthn::AttestationKind::Basic => "packed basic",
                    },
                ),
        );
        Ok(view)
    }

    /// Removes WebAuthn device `id` of `user` after checking the account password and a fresh
    /// proof from one of the user's devices; never the last device while logins need a second
    /// factor. Audited (`mfa.delete`) either way.
    pub fn remove_webauthn_device(
        &self,
        user: &str,
        (password_now, proof): (&str, SecondFactor<'_>),
        id: &str,
        remote: Option<SocketAddr>,
    ) -> Result<(), AuthError> {
        let removed = self
            .check_account_change(user, password_now, proof, remote)
            .and_then(|()| {
                let required = self.otp_required();
                let second_factor = self.settings.second_factor.clone();
                self.update_secrets(user, |s| {
                    if !s.webauthn_devices.iter().any(|d| d.id == id) {
                        return Err(AuthError::NotFound(format!("security key {id:?}")));
                    }
                    if required && usable_devices(s, &second_factor) <= 1 {
                        return Err(AuthError::BadRequest(
                            "this is your only second-factor device: add another before removing it"
                                .into(),
                        ));
                    }
                    s.webauthn_devices.retain(|d| d.id != id);
                    Ok(())
                })
            });
        match &removed {
            Ok(()) => self.audit.emit_durable(
                self.event(EventKind::MfaDelete, user)
                    .remote(remote)
                    .field("device", id.to_string())
                    .field("kind", "webauthn"),
            ),
            Err(e) => self.audit_refused_device_change(EventKind::MfaDelete, user, remote, e),
        }
        removed.map_err(super::account::hide_login_detail)
    }
}

impl AuthServer {
    /// Removes one-time-code device `id` of `user` as [`Self::remove_otp_device`] does, after
    /// a fresh proof from one of the user's devices too (the CLI's `hop mfa rm`, where every
    /// device change is proven by a tap or a code). Audited (`mfa.delete`) either way.
    pub fn remove_otp_device_proven(
        &self,
        user: &str,
        (password_now, proof): (&str, SecondFactor<'_>),
        id: &str,
        remote: Option<SocketAddr>,
    ) -> Result<(), AuthError> {
        if let Err(e) = self.check_account_change(user, password_now, proof, remote) {
            self.audit_refused_device_change(EventKind::MfaDelete, user, remote, &e);
            return Err(super::account::hide_login_detail(e));
        }
        self.remove_otp_device(user, password_now, id, remote)
    }
}

/// A passkey's answer at a passwordless login: the assertion and the user handle the
/// authenticator returned with it (base64url).
#[derive(Debug, Clone, Deserialize)]
pub struct PasskeyAssertion {
    #[serde(flatten)]
    pub assertion: WebauthnAssertion,
    pub user_handle: String,
}

impl AuthServer {
    /// The `PublicKeyCredentialRequestOptions` of a passwordless login: no user named, no
    /// credentials listed (the authenticator offers its discoverable ones), user verification
    /// required. Rate limited per address.
    pub fn begin_passwordless(&self, remote: Option<SocketAddr>) -> Result<Value, AuthError> {
        self.require_webauthn()?;
        self.rate_limit(remote)?;
        let challenge = self.issue_challenge("", ChallengePurpose::Passwordless)?;
        Ok(json!({"publicKey": {
            "challenge": b64(&challenge),
            "rpId": self.settings.webauthn.rp_id,
            "timeout": CHALLENGE_TTL.as_secs() * 1000,
            "allowCredentials": [],
            "userVerification": "required",
        }}))
    }

    /// A passwordless login: the passkey's assertion (answering [`Self::begin_passwordless`],
    /// with user verification: the PIN or biometric stands in for the password) names its user
    /// by the handle; a locked user is refused. `req.username`, `password` and `totp_code` are
    /// not looked at. Audited `user.login` with `method: passwordless`, `mfa: webauthn`.
    pub fn login_passwordless(
        &self,
        req: &LoginRequest<'_>,
        passkey: &PasskeyAssertion,
    ) -> Result<LoginCertificates, AuthError> {
        let now = self.now();
        if let Err(e) = self.rate_limit(req.remote) {
            self.audit.emit(
                self.event(EventKind::UserLogin, "")
                    .remote(req.remote)
                    .field("client", req.client.name())
                    .field("method", "passwordless")
                    .failed(EventKind::UserLogin, "rate limited"),
            );
            return Err(e);
        }
        let (name, checked) = self.check_passwordless(passkey, now);
        let issued = checked.and_then(|user| {
            let named = LoginRequest {
                username: &name,
                ..req.clone()
            };
            self.issue_login_certificates(&user, &named, now)
        });
        let event = self
            .event(EventKind::UserLogin, &name)
            .remote(req.remote)
            .field("client", req.client.name())
            .field("method", "passwordless");
        match &issued {
            Ok(c) => {
                self.metrics.logins_ok.inc();
                self.audit.emit_durable(
                    event
                        .field("mfa", "webauthn")
                        .field("roles", c.roles.clone())
                        .field("expires", hop_api::timestamps::rfc3339(c.expires)),
                );
            }
            Err(e) => {
                self.metrics.logins_failed.inc();
                let reason = match e {
                    AuthError::LoginRefused { reason } => (*reason).to_string(),
                    other => other.to_string(),
                };
                self.audit
                    .emit_durable(event.failed(EventKind::UserLogin, reason));
            }
        }
        issued.map_err(super::account::hide_login_detail)
    }

    /// The user a passkey's assertion names and proves, or why not (with the name when known).
    fn check_passwordless(
        &self,
        passkey: &PasskeyAssertion,
        now: SystemTime,
    ) -> (String, Result<hop_rbac::User, AuthError>) {
        let refused = |reason| Err(AuthError::LoginRefused { reason });
        let handle = passkey.user_handle.trim_end_matches('=');
        let name = match self.store.get::<WebauthnUserHandle>(handle) {
            Ok(Some(v)) => v.value.user,
            Ok(None) => {
                // The challenge is used up all the same.
                let _ = self.check_webauthn_assertion(
                    "",
                    None,
                    &passkey.assertion,
                    ChallengePurpose::Passwordless,
                );
                return (String::new(), refused("unknown passkey user handle"));
            }
            Err(e) => return (String::new(), Err(e.into())),
        };
        let result = (|| {
            let secrets = self.store.get::<UserSecrets>(&name)?.map(|v| v.value);
            let handle_ok = secrets
                .as_ref()
                .and_then(|s| s.webauthn_user_handle.as_deref())
                .is_some_and(|h| bool::from(h.as_bytes().ct_eq(handle.as_bytes())));
            let checked = self.check_webauthn_assertion(
                &name,
                secrets.as_ref(),
                &passkey.assertion,
                ChallengePurpose::Passwordless,
            );
            if !handle_ok {
                return refused("the passkey's user handle is not the user's");
            }
            let used = checked.map_err(|reason| AuthError::LoginRefused { reason })?;
            let Some(user) = self.store.get::<hop_rbac::User>(&name)? else {
                return refused("unknown user");
            };
            let locked = super::resources::locked_until(&user.value, now).is_some()
                || self.user_lock_in_force(&name)?.is_some();
            if locked {
                return refused("the user is locked");
            }
            let _guard = self
                .login_state
                .lock()
                .map_err(|_| AuthError::Poisoned("login state lock"))?;
            self.store_webauthn_use(&name, &used)?;
            Ok(user.value)
        })();
        (name, result)
    }
}
