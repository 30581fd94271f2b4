//! What goes into the certificates Auth issues: the identity of a user who logged in (roles,
//! logins, traits, TTL capped by the roles), and the names and lifetime of a host's or a
//! service's certificate. Callers decide whether to issue (login, join, renewal); this module
//! only builds and signs, and never decides who may have a certificate.

use std::time::{Duration, SystemTime};

use hop_ca::{CaKind, HostRole, Identity};
use hop_rbac::User;

use super::agents::{JoinRequest, JoinedHost};
use super::login::{LoginCertificates, LoginRequest};
use super::{AuthServer, resources};
use crate::error::AuthError;

/// Lifetime of an agent's host certificate; agents renew at two thirds of it.
pub const HOST_CERT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

impl AuthServer {
    /// The certificate pair of a user whose credentials were checked: the identity their roles
    /// grant now, for the TTL asked for within the roles' maximum.
    pub(super) fn issue_login_certificates(
        &self,
        user: &User,
        req: &LoginRequest<'_>,
        now: SystemTime,
    ) -> Result<LoginCertificates, AuthError> {
        let (role_names, traits) = resources::user_roles_and_traits(user);
        let checker = self.checker_for(&role_names, &traits)?;
        let ttl = hop_ca::effective_ttl(req.ttl, checker.max_session_ttl());
        let identity = self.user_identity(req.username, &checker, traits);
        self.sign_user_pair(
            identity,
            req.ssh_public_key,
            req.tls_public_key_der,
            ttl,
            now,
        )
    }

    /// The certificate pair of bot user `user` at `generation` (carried in the reserved trait),
    /// for the TTL asked for within the bots' bounds and the roles' maximum.
    pub(super) fn issue_bot_certificates(
        &self,
        user: &User,
        generation: u64,
        keys: (&str, &[u8]),
        ttl: Option<Duration>,
        now: SystemTime,
    ) -> Result<LoginCertificates, AuthError> {
        let (role_names, mut traits) = resources::user_roles_and_traits(user);
        traits.insert(
            crate::bots::GENERATION_TRAIT.to_string(),
            vec![generation.to_string()],
        );
        let checker = self.checker_for(&role_names, &traits)?;
        let ttl = crate::bots::bot_ttl(ttl, checker.max_session_ttl());
        let identity = self.user_identity(&user.metadata.name, &checker, traits);
        self.sign_user_pair(identity, keys.0, keys.1, ttl, now)
    }

    /// The identity a user's roles grant now.
    pub(super) fn user_identity(
        &self,
        username: &str,
        checker: &hop_rbac::AccessChecker,
        traits: std::collections::BTreeMap<String, Vec<String>>,
    ) -> Identity {
        Identity {
            username: username.to_string(),
            roles: checker.role_names(),
            logins: checker.logins(),
            traits,
            cluster: self.cluster.clone(),
            route_to_cluster: self.cluster.clone(),
            permit_agent_forwarding: checker.permit_agent_forwarding(),
            permit_port_forwarding: checker.permit_port_forwarding(),
            permit_pty: true,
            route_to_database: None,
            route_to_app: None,
            route_to_kube_cluster: None,
            mfa_verified: false,
            active_requests: Vec::new(),
            session_mfa: None,
        }
    }

    /// Signs `identity` into an SSH and an X.509 certificate for the caller's keys.
    pub(super) fn sign_user_pair(
        &self,
        identity: Identity,
        ssh_public_key: &str,
        tls_public_key_der: &[u8],
        ttl: Duration,
        now: SystemTime,
    ) -> Result<LoginCertificates, AuthError> {
        let mut rng = rand::rng();
        let cas = self.authorities();
        let ssh = cas
            .user
            .issue_user_ssh(ssh_public_key, &identity, now, ttl, &mut rng)
            .map_err(|source| AuthError::UnusableKey {
                field: "ssh_public_key",
                source,
            })?;
        let tls = cas
            .user
            .issue_user_x509(tls_public_key_der, &identity, now, ttl, &mut rng)
            .map_err(|source| AuthError::UnusableKey {
                field: "tls_public_key",
                source,
            })?;
        self.metrics.certificates_issued.inc();
        self.metrics.certificates_issued.inc();
        let (known_hosts, trusted_cas_pem, trust_digest) = self.user_trust_bundle();
        Ok(LoginCertificates {
            trust_digest,
            ssh_certificate: ssh,
            tls_certificate_pem: tls,
            known_hosts,
            trusted_cas_pem,
            username: identity.username.clone(),
            roles: identity.roles.clone(),
            logins: identity.logins.clone(),
            expires: now + ttl,
            identity,
            issued_at: now,
        })
    }

    /// What a user's client trusts: the host CA as `known_hosts` lines, and the user and host
    /// CAs as PEM (every trusted key: two of a CA during its rotation).
    pub(super) fn user_trust_bundle(&self) -> (String, String, String) {
        let cas = self.authorities();
        let mut both = cas.trusted(CaKind::User).to_vec();
        both.extend_from_slice(cas.trusted(CaKind::Host));
        (
            hop_ca::export_known_hosts(cas.trusted(CaKind::Host)),
            hop_ca::export_pem(&both),
            cas.trust_digest().to_owned(),
        )
    }

    /// Every trusted user and host X.509 CA certificate as PEM: what a client's `cas.pem` holds.
    pub fn client_cas_pem(&self) -> String {
        self.user_trust_bundle().1
    }

    /// A TLS identity for a service of this cluster (the proxy's listener): a fresh P-256 key and
    /// a host certificate for `names`, returned as (key PEM, certificate chain PEM with the CA).
    pub fn issue_host_tls(
        &self,
        host_id: &str,
        role: HostRole,
        names: &[String],
        ttl: Duration,
    ) -> Result<(String, String), AuthError> {
        let mut rng = rand::rng();
        let key = hop_ca::generate_x509_keypair(&mut rng).map_err(AuthError::Issuance)?;
        let cas = self.authorities();
        // The proxy's certificate tells clients, in a handshake they verify anyway, which
        // trusted keys they should hold (a rotation adds one); it comes from the key servers
        // use in this phase, which every client that kept up trusts.
        let digest = (role == HostRole::Proxy).then(|| cas.trust_digest());
        let (issuer, issuer_public) = if role == HostRole::Proxy {
            cas.set(CaKind::Host).server_key()
        } else {
            let set = cas.set(CaKind::Host);
            (&set.active, set.signer())
        };
        let cert = issuer
            .issue_host_x509(
                &key.public_spki_der,
                host_id,
                role,
                names,
                digest,
                self.clock.now(),
                ttl,
                &mut rng,
            )
            .map_err(AuthError::Issuance)?;
        self.metrics.certificates_issued.inc();
        let chain = format!(
            "{}{}",
            cert,
            issuer_public.x509_cert_pem.clone().unwrap_or_default()
        );
        Ok((key.private_pkcs8_pem.clone(), chain))
    }

    /// Host certificates for `host_id` and, when given, the node name Auth approved.
    pub(super) fn issue_host_identity(
        &self,
        host_id: &str,
        role: HostRole,
        name: Option<&str>,
        req: &JoinRequest<'_>,
    ) -> Result<JoinedHost, AuthError> {
        let now = self.clock.now();
        let in_cluster = |n: &str| format!("{n}.{}", self.cluster);
        // The host is reachable by its id, its name, and either inside the cluster (what
        // `hop config` puts in `Host *.CLUSTER`).
        let mut names = vec![host_id.to_string(), in_cluster(host_id)];
        if let Some(n) = name {
            names.push(n.to_string());
            names.push(in_cluster(n));
        }
        let mut rng = rand::rng();
        let cas = self.authorities();
        let cert = cas
            .host
            .issue_host_x509(
                req.tls_public_key_der,
                host_id,
                role,
                &names,
                None,
                now,
                HOST_CERT_TTL,
                &mut rng,
            )
            .map_err(|source| AuthError::UnusableKey {
                field: "tls_public_key",
                source,
            })?;
        self.metrics.certificates_issued.inc();
        let ssh_host_certificate = if req.ssh_public_key.trim().is_empty() {
            None
        } else {
            let c = cas
                .host
                .issue_host_ssh(
                    req.ssh_public_key.trim(),
                    host_id,
                    &names,
                    now,
                    HOST_CERT_TTL,
                    &mut rng,
                )
                .map_err(|source| AuthError::UnusableKey {
                    field: "ssh_public_key",
                    source,
                })?;
            self.metrics.certificates_issued.inc();
            Some(c)
        };
        let serial = hop_ca::parse_pem_certs(&cert)
            .ok()
            .and_then(|ders| ders.first().and_then(|d| hop_ca::x509_serial_hex(d)))
            .unwrap_or_default();
        self.note_host_cert(
            host_id,
            role.as_str(),
            &serial,
            super::unix(now + HOST_CERT_TTL),
        );
        Ok(JoinedHost {
            host_id: host_id.to_string(),
            host_name: name.map(str::to_string),
            certificate_pem: cert,
            host_ca_pem: hop_ca::export_pem(cas.trusted(CaKind::Host)),
            user_ca_pem: hop_ca::export_pem(cas.trusted(CaKind::User)),
            ssh_host_certificate,
            ssh_user_ca_keys: ssh_keys(cas.trusted(CaKind::User)),
            ssh_host_ca_keys: ssh_keys(cas.trusted(CaKind::Host)),
            expires: now + HOST_CERT_TTL,
        })
    }
}

/// The SSH public keys (OpenSSH lines) of every trusted key in `cas`.
pub(super) fn ssh_keys(cas: &[hop_ca::CaPublic]) -> Vec<String> {
    cas.iter().filter_map(|c| c.ssh_public.clone()).collect()
}
