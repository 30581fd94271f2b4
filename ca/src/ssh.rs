//! OpenSSH certificates: issuing user and host certificates from the user and host CAs' Ed25519
//! keys, and verifying them against trusted [`CaPublic`]s. This module owns the mapping between an
//! [`Identity`] and the certificate's key id, principals and extensions (`permit-*`, `hop-*`); it
//! never decides what an identity may do (that is RBAC), and it refuses certificates that carry
//! critical options other than the one Hop issues and enforces: `hop-session-mfa` (`LOGIN@NODE`,
//! the target of a per-session MFA certificate, which admission checks).

use std::time::{Duration, SystemTime};

use rand_core::CryptoRng;
use russh::keys::ssh_key::certificate::{Builder, CertType};
use russh::keys::ssh_key::public::KeyData;
use russh::keys::ssh_key::{Algorithm, Certificate, HashAlg, PrivateKey, PublicKey};

use crate::authority::{self, CaKind, CaPublic, CertAuthority};
use crate::error::CaError;
use crate::identity::{Identity, RouteToDatabase};
use crate::keys;

/// The principal put in a user certificate whose identity has no logins. An empty principal list
/// would make the certificate valid for *every* login, so Hop lists this name instead; a leading
/// `-` makes it an impossible Unix user name. It is dropped again by [`verify_user_ssh`].
pub const NO_LOGIN_PRINCIPAL: &str = "-hop-nologin";

const EXT_PERMIT_PTY: &str = "permit-pty";
const EXT_PERMIT_PORT_FORWARDING: &str = "permit-port-forwarding";
const EXT_PERMIT_AGENT_FORWARDING: &str = "permit-agent-forwarding";
const EXT_PERMIT_USER_RC: &str = "permit-user-rc";
const EXT_ROLES: &str = "hop-roles";
const EXT_TRAITS: &str = "hop-traits";
const EXT_CLUSTER: &str = "hop-cluster";
const EXT_ROUTE_TO_CLUSTER: &str = "hop-route-to-cluster";
const EXT_ROUTE_TO_DATABASE: &str = "hop-route-to-database";
const EXT_ROUTE_TO_APP: &str = "hop-route-to-app";
const EXT_ROUTE_TO_KUBE_CLUSTER: &str = "hop-route-to-kube-cluster";
const EXT_MFA_VERIFIED: &str = "hop-mfa-verified";
const EXT_ACTIVE_REQUESTS: &str = "hop-access-requests";
/// The critical option of a per-session MFA certificate: `LOGIN@NODE`.
pub const OPT_SESSION_MFA: &str = "hop-session-mfa";

impl CertAuthority {
    /// Issues an OpenSSH user certificate for `subject_public_openssh`: key id = username,
    /// principals = `id.logins` (or [`NO_LOGIN_PRINCIPAL`] when there are none), valid from
    /// `now - 1 min` (clock skew) to `now + ttl`, with the `permit-*` extensions the identity
    /// allows (`permit-user-rc` always) and the identity in `hop-*` extensions.
    ///
    /// # Errors
    /// [`CaError::WrongCaKind`] unless this is the user CA; [`CaError::InvalidKey`] for an
    /// unparsable or unaccepted subject key; [`CaError::InvalidRequest`] for an empty username or
    /// an overflowing TTL.
    pub fn issue_user_ssh<R: CryptoRng + ?Sized>(
        &self,
        subject_public_openssh: &str,
        id: &Identity,
        now: SystemTime,
        ttl: Duration,
        rng: &mut R,
    ) -> Result<String, CaError> {
        if self.kind != CaKind::OpenSsh {
            self.require_kind(CaKind::User, "issue SSH user certificates")?;
        }
        if id.username.is_empty() {
            return Err(CaError::InvalidRequest {
                what: "identity has an empty username".into(),
            });
        }
        let mut builder = cert_builder(subject_public_openssh, now, ttl, rng)?;
        builder.cert_type(CertType::User).map_err(issuance)?;
        builder.key_id(id.username.as_str()).map_err(issuance)?;
        if id.logins.is_empty() {
            builder
                .valid_principal(NO_LOGIN_PRINCIPAL)
                .map_err(issuance)?;
        }
        for login in &id.logins {
            builder.valid_principal(login.as_str()).map_err(issuance)?;
        }
        for (name, value) in identity_extensions(id)? {
            builder.extension(name, value).map_err(issuance)?;
        }
        match &id.session_mfa {
            None => {}
            Some(crate::identity::SessionMfaTarget::Node { node, login })
                if !login.contains('@') && !node.is_empty() && !login.is_empty() =>
            {
                builder
                    .critical_option(OPT_SESSION_MFA, format!("{login}@{node}"))
                    .map_err(issuance)?;
            }
            Some(crate::identity::SessionMfaTarget::Node { .. }) => {
                return Err(CaError::InvalidRequest {
                    what: "a per-session MFA target needs a login without '@' and a node".into(),
                });
            }
            Some(_) => {
                return Err(CaError::InvalidRequest {
                    what: "an SSH certificate's per-session MFA target is a node".into(),
                });
            }
        }
        self.sign_ssh(builder)
    }

    /// Issues an OpenSSH host certificate: key id = `host_id`, principals = `host_id` followed by
    /// `names` (host names and addresses, duplicates dropped), no extensions.
    ///
    /// # Errors
    /// [`CaError::WrongCaKind`] unless this is the host CA; [`CaError::InvalidKey`] for an
    /// unparsable subject key; [`CaError::InvalidRequest`] for an empty host id.
    pub fn issue_host_ssh<R: CryptoRng + ?Sized>(
        &self,
        subject_public_openssh: &str,
        host_id: &str,
        names: &[String],
        now: SystemTime,
        ttl: Duration,
        rng: &mut R,
    ) -> Result<String, CaError> {
        self.require_kind(CaKind::Host, "issue SSH host certificates")?;
        if host_id.is_empty() {
            return Err(CaError::InvalidRequest {
                what: "empty host id".into(),
            });
        }
        let mut builder = cert_builder(subject_public_openssh, now, ttl, rng)?;
        builder.cert_type(CertType::Host).map_err(issuance)?;
        builder.key_id(host_id).map_err(issuance)?;
        let mut principals: Vec<&str> = vec![host_id];
        for name in names {
            if !name.is_empty() && !principals.contains(&name.as_str()) {
                principals.push(name);
            }
        }
        for principal in principals {
            builder.valid_principal(principal).map_err(issuance)?;
        }
        self.sign_ssh(builder)
    }

    fn sign_ssh(&self, builder: Builder) -> Result<String, CaError> {
        let key = self.ssh_key()?;
        let cert = builder.sign(&key).map_err(issuance)?;
        cert.to_openssh().map_err(issuance)
    }

    fn ssh_key(&self) -> Result<PrivateKey, CaError> {
        let pem = self
            .ssh_private_openssh
            .as_deref()
            .ok_or(CaError::MissingCaMaterial {
                kind: self.kind,
                what: "SSH private key",
            })?;
        keys::ssh_signing_key(pem)
    }
}

/// A certificate builder for the subject key with a random nonce and serial and the validity
/// window of `now` + `ttl`.
fn cert_builder<R: CryptoRng + ?Sized>(
    subject_public_openssh: &str,
    now: SystemTime,
    ttl: Duration,
    rng: &mut R,
) -> Result<Builder, CaError> {
    let subject = PublicKey::from_openssh(subject_public_openssh.trim()).map_err(|e| {
        CaError::InvalidKey {
            what: "subject SSH public key",
            reason: e.to_string(),
        }
    })?;
    if matches!(subject.algorithm(), Algorithm::Dsa | Algorithm::Other(_)) {
        return Err(CaError::InvalidKey {
            what: "subject SSH public key",
            reason: format!("algorithm {} is not accepted", subject.algorithm()),
        });
    }
    let (valid_after, valid_before) = authority::validity_window(now, ttl)?;
    let mut nonce = vec![0u8; Builder::RECOMMENDED_NONCE_SIZE];
    rng.fill_bytes(&mut nonce);
    let mut builder = Builder::new(nonce, subject.key_data().clone(), valid_after, valid_before)
        .map_err(issuance)?;
    builder.serial(rng.next_u64()).map_err(issuance)?;
    Ok(builder)
}

/// The extensions that carry `id` (sorted by name by the certificate encoder).
fn identity_extensions(id: &Identity) -> Result<Vec<(&'static str, String)>, CaError> {
    let mut ext = Vec::new();
    if id.permit_pty {
        ext.push((EXT_PERMIT_PTY, String::new()));
    }
    if id.permit_port_forwarding {
        ext.push((EXT_PERMIT_PORT_FORWARDING, String::new()));
    }
    if id.permit_agent_forwarding {
        ext.push((EXT_PERMIT_AGENT_FORWARDING, String::new()));
    }
    ext.push((EXT_PERMIT_USER_RC, String::new()));
    ext.push((EXT_ROLES, to_json(&id.roles)?));
    ext.push((EXT_TRAITS, to_json(&id.traits)?));
    if !id.cluster.is_empty() {
        ext.push((EXT_CLUSTER, id.cluster.clone()));
    }
    if !id.route_to_cluster.is_empty() {
        ext.push((EXT_ROUTE_TO_CLUSTER, id.route_to_cluster.clone()));
    }
    if let Some(db) = &id.route_to_database {
        ext.push((EXT_ROUTE_TO_DATABASE, to_json(db)?));
    }
    if let Some(app) = &id.route_to_app {
        ext.push((EXT_ROUTE_TO_APP, app.clone()));
    }
    if let Some(kube) = &id.route_to_kube_cluster {
        ext.push((EXT_ROUTE_TO_KUBE_CLUSTER, kube.clone()));
    }
    if id.mfa_verified {
        ext.push((EXT_MFA_VERIFIED, String::new()));
    }
    if !id.active_requests.is_empty() {
        ext.push((EXT_ACTIVE_REQUESTS, to_json(&id.active_requests)?));
    }
    Ok(ext)
}

/// `v` as JSON, for the `hop-*` extensions.
fn to_json<T: serde::Serialize + ?Sized>(v: &T) -> Result<String, CaError> {
    serde_json::to_string(v).map_err(|e| CaError::Issuance {
        reason: format!("identity does not serialize: {e}"),
    })
}

/// Reads the identity back out of a verified user certificate.
fn identity_from_cert(cert: &Certificate) -> Result<Identity, CaError> {
    let ext = cert.extensions();
    if cert.key_id().is_empty() {
        return Err(CaError::MissingIdentity);
    }
    let roles = ext.get(EXT_ROLES).ok_or(CaError::MissingIdentity)?;
    let parse_err = |what: &str, e: serde_json::Error| CaError::MalformedIdentity {
        reason: format!("{what}: {e}"),
    };
    let traits = match ext.get(EXT_TRAITS) {
        Some(t) => serde_json::from_str(t).map_err(|e| parse_err(EXT_TRAITS, e))?,
        None => Default::default(),
    };
    let active_requests = match ext.get(EXT_ACTIVE_REQUESTS) {
        Some(t) => serde_json::from_str(t).map_err(|e| parse_err(EXT_ACTIVE_REQUESTS, e))?,
        None => Vec::new(),
    };
    let route_to_database = ext
        .get(EXT_ROUTE_TO_DATABASE)
        .map(|s| serde_json::from_str::<RouteToDatabase>(s))
        .transpose()
        .map_err(|e| parse_err(EXT_ROUTE_TO_DATABASE, e))?;
    Ok(Identity {
        username: cert.key_id().to_owned(),
        roles: serde_json::from_str(roles).map_err(|e| parse_err(EXT_ROLES, e))?,
        logins: cert
            .valid_principals()
            .iter()
            .filter(|p| p.as_str() != NO_LOGIN_PRINCIPAL)
            .cloned()
            .collect(),
        traits,
        cluster: ext.get(EXT_CLUSTER).cloned().unwrap_or_default(),
        route_to_cluster: ext.get(EXT_ROUTE_TO_CLUSTER).cloned().unwrap_or_default(),
        permit_agent_forwarding: ext.contains_key(EXT_PERMIT_AGENT_FORWARDING),
        permit_port_forwarding: ext.contains_key(EXT_PERMIT_PORT_FORWARDING),
        permit_pty: ext.contains_key(EXT_PERMIT_PTY),
        route_to_database,
        route_to_app: ext.get(EXT_ROUTE_TO_APP).cloned(),
        route_to_kube_cluster: ext.get(EXT_ROUTE_TO_KUBE_CLUSTER).cloned(),
        mfa_verified: ext.contains_key(EXT_MFA_VERIFIED),
        active_requests,
        session_mfa: match cert.critical_options().get(OPT_SESSION_MFA) {
            Some(v) => Some(
                v.split_once('@')
                    .filter(|(l, n)| !l.is_empty() && !n.is_empty())
                    .map(|(login, node)| crate::identity::SessionMfaTarget::Node {
                        node: node.to_owned(),
                        login: login.to_owned(),
                    })
                    .ok_or_else(|| CaError::MalformedIdentity {
                        reason: format!("{OPT_SESSION_MFA}: {v:?} is not LOGIN@NODE"),
                    })?,
            ),
            None => None,
        },
    })
}

/// Verifies an OpenSSH user certificate: signed by a trusted user CA, `now` inside its validity
/// window, of type user, without critical options. Returns the identity and the expiry time.
///
/// # Errors
/// [`CaError::MalformedCertificate`], [`CaError::UntrustedSigner`], [`CaError::Expired`],
/// [`CaError::NotYetValid`], [`CaError::BadSignature`], [`CaError::WrongCertType`],
/// [`CaError::UnsupportedCriticalOption`], [`CaError::MissingIdentity`] or
/// [`CaError::MalformedIdentity`].
pub fn verify_user_ssh(
    cert_openssh: &str,
    trusted: &[CaPublic],
    now: SystemTime,
) -> Result<(Identity, SystemTime), CaError> {
    let cert = verify_cert(cert_openssh, trusted, CaKind::User, CertType::User, now)?;
    let identity = identity_from_cert(&cert)?;
    Ok((identity, authority::from_unix(cert.valid_before())))
}

/// Verifies an OpenSSH host certificate: signed by a trusted host CA, `now` inside its validity
/// window, of type host, listing `host_name` among its principals. Returns the host id (key id).
///
/// # Errors
/// As [`verify_user_ssh`], plus [`CaError::PrincipalNotAllowed`] if `host_name` is not listed.
pub fn verify_host_ssh(
    cert_openssh: &str,
    trusted: &[CaPublic],
    host_name: &str,
    now: SystemTime,
) -> Result<String, CaError> {
    let cert = verify_cert(cert_openssh, trusted, CaKind::Host, CertType::Host, now)?;
    if !cert.valid_principals().iter().any(|p| p == host_name) {
        return Err(CaError::PrincipalNotAllowed {
            principal: host_name.to_owned(),
        });
    }
    if cert.key_id().is_empty() {
        return Err(CaError::MissingIdentity);
    }
    Ok(cert.key_id().to_owned())
}

/// The checks shared by user and host certificates.
fn verify_cert(
    cert_openssh: &str,
    trusted: &[CaPublic],
    ca_kind: CaKind,
    cert_type: CertType,
    now: SystemTime,
) -> Result<Certificate, CaError> {
    let cert = Certificate::from_openssh(cert_openssh.trim()).map_err(|e| {
        CaError::MalformedCertificate {
            reason: e.to_string(),
        }
    })?;
    let signer = trusted_ssh_keys(trusted, ca_kind)
        .find(|key| key == cert.signature_key())
        .ok_or(CaError::UntrustedSigner)?;
    let now = authority::unix_secs(now)?;
    if now < cert.valid_after() {
        return Err(CaError::NotYetValid {
            not_before: authority::from_unix(cert.valid_after()),
        });
    }
    if now >= cert.valid_before() {
        return Err(CaError::Expired {
            not_after: authority::from_unix(cert.valid_before()),
        });
    }
    // The authoritative check (signature, signer fingerprint, window) is ssh-key's; the checks
    // above only make the error say what was wrong.
    cert.validate_at(now, [&signer.fingerprint(HashAlg::Sha256)])
        .map_err(|_| CaError::BadSignature)?;
    if cert.cert_type() != cert_type {
        return Err(CaError::WrongCertType {
            expected: match cert_type {
                CertType::User => "SSH user certificate",
                CertType::Host => "SSH host certificate",
            },
        });
    }
    let known = |name: &str| cert_type == CertType::User && name == OPT_SESSION_MFA;
    if let Some(name) = cert.critical_options().keys().find(|n| !known(n)) {
        return Err(CaError::UnsupportedCriticalOption { name: name.clone() });
    }
    Ok(cert)
}

/// The SSH keys of the trusted CAs of `kind` (unparsable entries are skipped).
fn trusted_ssh_keys(trusted: &[CaPublic], kind: CaKind) -> impl Iterator<Item = KeyData> + '_ {
    trusted
        .iter()
        .filter(move |ca| ca.kind == kind)
        .filter_map(|ca| ca.ssh_public.as_deref())
        .filter_map(|line| PublicKey::from_openssh(line.trim()).ok())
        .map(|key| key.key_data().clone())
}

fn issuance(e: impl std::fmt::Display) -> CaError {
    CaError::Issuance {
        reason: e.to_string(),
    }
}
