//! The cluster's certificate authorities as stored records: [`CertAuthority`] (private material,
//! persisted by Auth as JSON) and [`CaPublic`] (what every proxy, agent and client may trust),
//! their generation, and the validity-window and TTL rules shared by every issuer. Issuance itself
//! is split by format into `ssh.rs` and `x509.rs`. Nothing here reads the clock or the OS RNG, and
//! the `Debug` output of a CA never contains private keys.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand_core::CryptoRng;
use russh::keys::ssh_key::HashAlg;

use crate::error::CaError;
use crate::keys;
use crate::x509;

/// OID of the X.509 extension that carries a user's [`crate::Identity`] as JSON (a UTF8String).
/// `1.3.6.1.4.1.59327` is the private enterprise arc Hop uses; `.1.1` is Hop's identity.
pub const HOP_IDENTITY_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 59327, 1, 1];
/// OID of the X.509 extension that carries a host certificate's [`crate::HostRole`] (a
/// UTF8String such as `node`), under Hop's private arc (see [`HOP_IDENTITY_OID`]).
pub const HOP_HOST_ROLE_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 59327, 1, 2];

/// Default lifetime of a user certificate when neither the request nor the roles say otherwise.
pub const DEFAULT_CERT_TTL: Duration = Duration::from_secs(8 * 3600);

/// How far back `valid_after` / `notBefore` is set, to tolerate clock skew between machines.
pub(crate) const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// Lifetime of a CA's self-signed X.509 certificate (10 years of 365 days).
pub(crate) const CA_CERT_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The TTL rule: `requested` (default [`DEFAULT_CERT_TTL`]), clamped (never refused) to
/// `ceiling`, the longest the caller's roles allow (`max_session_ttl`, 30 h where a role sets
/// none).
#[must_use]
pub fn effective_ttl(requested: Option<Duration>, ceiling: Duration) -> Duration {
    requested.unwrap_or(DEFAULT_CERT_TTL).min(ceiling)
}

/// The lifetime of a certificate derived at `now` from a parent certificate that expires at
/// `parent_not_after`: `ttl`, shortened so that it ends no later than its parent. `None` when the
/// parent has already expired (nothing may be derived from it).
#[must_use]
pub fn derived_ttl(
    now: SystemTime,
    parent_not_after: SystemTime,
    ttl: Duration,
) -> Option<Duration> {
    let left = parent_not_after.duration_since(now).ok()?;
    // Whole seconds: certificates carry second precision, and rounding up could pass the parent.
    let left = Duration::from_secs(left.as_secs());
    (!left.is_zero()).then(|| ttl.min(left))
}

/// Which of the cluster's CAs this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaKind {
    /// Signs user SSH and X.509 certificates.
    User,
    /// Signs host (agent, proxy, auth) SSH and X.509 certificates.
    Host,
    /// Signs certificates that databases trust (client certs for DB users, server certs).
    Db,
    /// Signs JWT assertions for application access.
    Jwt,
    /// Signs the short-lived SSH user certificates the proxy logs in to agentless OpenSSH nodes
    /// with; those nodes trust only this CA, so users' own certificates cannot bypass the proxy.
    #[serde(rename = "openssh")]
    OpenSsh,
    /// Signs X.509 SVIDs for workloads; its trust domain is the cluster's name.
    Spiffe,
}

impl CaKind {
    /// Every kind, in declaration order.
    pub const ALL: [CaKind; 6] = [
        CaKind::User,
        CaKind::Host,
        CaKind::Db,
        CaKind::Jwt,
        CaKind::OpenSsh,
        CaKind::Spiffe,
    ];

    /// "user", "host", "db", "jwt", "openssh" or "spiffe".
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            CaKind::User => "user",
            CaKind::Host => "host",
            CaKind::Db => "db",
            CaKind::Jwt => "jwt",
            CaKind::OpenSsh => "openssh",
            CaKind::Spiffe => "spiffe",
        }
    }

    const fn has_ssh(self) -> bool {
        matches!(self, CaKind::User | CaKind::Host | CaKind::OpenSsh)
    }

    const fn has_x509(self) -> bool {
        matches!(
            self,
            CaKind::User | CaKind::Host | CaKind::Db | CaKind::Spiffe
        )
    }
}

impl fmt::Display for CaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CaKind {
    type Err = CaError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CaKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| CaError::UnknownName {
                what: "CA kind",
                value: s.to_owned(),
            })
    }
}

/// The private material of one CA, as stored in the backend (JSON via serde). Key PEMs are
/// PKCS#8 PEM (X.509, JWT) or OpenSSH private key PEM (SSH).
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct CertAuthority {
    /// Which CA.
    pub kind: CaKind,
    /// The cluster it belongs to.
    pub cluster: String,
    /// user & host: Ed25519 OpenSSH private key, comment `hop-<cluster>-<kind>-ca`.
    pub ssh_private_openssh: Option<String>,
    /// user, host, db: self-signed ECDSA P-256 CA certificate (PEM).
    pub x509_cert_pem: Option<String>,
    /// user, host, db: the CA certificate's P-256 key (PKCS#8 PEM).
    pub x509_key_pem: Option<String>,
    /// jwt: ECDSA P-256 signing key (PKCS#8 PEM).
    pub jwt_key_pem: Option<String>,
}

impl fmt::Debug for CertAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("CertAuthority")
            .field("kind", &self.kind)
            .field("cluster", &self.cluster)
            .field("ssh_private_openssh", &redacted(&self.ssh_private_openssh))
            .field(
                "x509_cert_pem",
                &self.x509_cert_pem.as_ref().map(|_| "<cert>"),
            )
            .field("x509_key_pem", &redacted(&self.x509_key_pem))
            .field("jwt_key_pem", &redacted(&self.jwt_key_pem))
            .finish()
    }
}

/// The public half of a CA: what proxies, agents and clients trust.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct CaPublic {
    /// Which CA.
    pub kind: CaKind,
    /// The cluster it belongs to.
    pub cluster: String,
    /// `ssh-ed25519 AAAA… hop-<cluster>-<kind>-ca` (user and host CAs).
    pub ssh_public: Option<String>,
    /// The self-signed CA certificate PEM (user, host and db CAs).
    pub x509_cert_pem: Option<String>,
    /// The JWT verification key, SPKI PEM (jwt CA).
    pub jwt_public_pem: Option<String>,
    /// `SHA256:…` fingerprint of the SSH key, as `ssh-keygen -l` prints it.
    pub ssh_fingerprint: Option<String>,
    /// `sha256:<hex>` of the CA certificate's SubjectPublicKeyInfo DER: the CA pin.
    pub x509_spki_sha256: Option<String>,
}

impl CertAuthority {
    /// Generates a new CA of `kind` for `cluster`: an Ed25519 SSH key (user, host), a self-signed
    /// P-256 X.509 CA certificate valid for 10 years from `now` (user, host, db), or a P-256 JWT
    /// key (jwt). All keys come from `rng`.
    ///
    /// # Errors
    /// [`CaError::InvalidRequest`] if `cluster` is empty or contains whitespace or control
    /// characters; [`CaError::Issuance`] if signing fails.
    pub fn generate<R: CryptoRng + ?Sized>(
        kind: CaKind,
        cluster: &str,
        now: SystemTime,
        rng: &mut R,
    ) -> Result<Self, CaError> {
        if cluster.is_empty() || cluster.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(CaError::InvalidRequest {
                what: format!("cluster name {cluster:?} must be non-empty, without whitespace"),
            });
        }
        let mut ca = CertAuthority {
            kind,
            cluster: cluster.to_owned(),
            ssh_private_openssh: None,
            x509_cert_pem: None,
            x509_key_pem: None,
            jwt_key_pem: None,
        };
        if kind.has_ssh() {
            let key = keys::ed25519_private(rng, &format!("hop-{cluster}-{kind}-ca"))?;
            ca.ssh_private_openssh = Some(keys::encode_ssh_private(&key)?.as_str().to_owned());
        }
        if kind.has_x509() {
            let (key_pem, _spki) = keys::p256_keypair(rng)?;
            let cert_pem = x509::self_signed_ca(kind, cluster, &key_pem, now, rng)?;
            ca.x509_cert_pem = Some(cert_pem);
            ca.x509_key_pem = Some(key_pem.as_str().to_owned());
        }
        if kind == CaKind::Jwt {
            let (key_pem, _spki) = keys::p256_keypair(rng)?;
            ca.jwt_key_pem = Some(key_pem.as_str().to_owned());
        }
        Ok(ca)
    }

    /// The public half of this CA. Material that does not parse is left out (`None`); use
    /// [`CertAuthority::try_public`] to see why.
    #[must_use]
    pub fn public(&self) -> CaPublic {
        let (ssh_public, ssh_fingerprint) = self.ssh_public_parts().ok().flatten().unzip();
        let (x509_cert_pem, x509_spki_sha256) = self.x509_public_parts().ok().flatten().unzip();
        CaPublic {
            kind: self.kind,
            cluster: self.cluster.clone(),
            ssh_public,
            x509_cert_pem,
            jwt_public_pem: self.jwt_public_pem().ok().flatten(),
            ssh_fingerprint,
            x509_spki_sha256,
        }
    }

    /// The public half of this CA, failing if any stored material does not parse.
    ///
    /// # Errors
    /// [`CaError::InvalidKey`] or [`CaError::MalformedCertificate`] for unparsable material.
    pub fn try_public(&self) -> Result<CaPublic, CaError> {
        let (ssh_public, ssh_fingerprint) = self.ssh_public_parts()?.unzip();
        let (x509_cert_pem, x509_spki_sha256) = self.x509_public_parts()?.unzip();
        Ok(CaPublic {
            kind: self.kind,
            cluster: self.cluster.clone(),
            ssh_public,
            x509_cert_pem,
            jwt_public_pem: self.jwt_public_pem()?,
            ssh_fingerprint,
            x509_spki_sha256,
        })
    }

    /// (`ssh-ed25519 AAAA… comment`, `SHA256:…`) of the SSH key, if this CA has one.
    fn ssh_public_parts(&self) -> Result<Option<(String, String)>, CaError> {
        let Some(pem) = &self.ssh_private_openssh else {
            return Ok(None);
        };
        let key = keys::ssh_signing_key(pem)?;
        let line = keys::encode_ssh_public(key.public_key())?;
        let fingerprint = key.public_key().fingerprint(HashAlg::Sha256).to_string();
        Ok(Some((line, fingerprint)))
    }

    /// (certificate PEM, `sha256:<hex>` pin) of the X.509 CA certificate, if this CA has one.
    fn x509_public_parts(&self) -> Result<Option<(String, String)>, CaError> {
        let Some(pem) = &self.x509_cert_pem else {
            return Ok(None);
        };
        let der = x509::parse_pem_certs(pem)?
            .into_iter()
            .next()
            .ok_or_else(|| CaError::MalformedCertificate {
                reason: "no certificate in CA PEM".into(),
            })?;
        Ok(Some((pem.clone(), x509::ca_pin(&der)?)))
    }

    /// SPKI PEM of the JWT key, if this CA has one.
    fn jwt_public_pem(&self) -> Result<Option<String>, CaError> {
        self.jwt_key_pem
            .as_deref()
            .map(keys::p256_public_pem)
            .transpose()
    }

    /// Fails with [`CaError::WrongCaKind`] unless this CA is of kind `want`.
    pub(crate) fn require_kind(
        &self,
        want: CaKind,
        operation: &'static str,
    ) -> Result<(), CaError> {
        if self.kind == want {
            Ok(())
        } else {
            Err(CaError::WrongCaKind {
                kind: self.kind,
                operation,
            })
        }
    }
}

/// Seconds since the Unix epoch of `t`.
pub(crate) fn unix_secs(t: SystemTime) -> Result<u64, CaError> {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|_| CaError::InvalidRequest {
            what: "time before the Unix epoch".into(),
        })
}

/// The `SystemTime` `secs` seconds after the Unix epoch.
pub(crate) fn from_unix(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// The validity window of a certificate issued at `now` for `ttl`, in Unix seconds:
/// `(now - CLOCK_SKEW, now + ttl)`.
pub(crate) fn validity_window(now: SystemTime, ttl: Duration) -> Result<(u64, u64), CaError> {
    let now = unix_secs(now)?;
    let not_after = now
        .checked_add(ttl.as_secs())
        .filter(|t| i64::try_from(*t).is_ok())
        .ok_or_else(|| CaError::InvalidRequest {
            what: format!("ttl {ttl:?} overflows the clock"),
        })?;
    Ok((now.saturating_sub(CLOCK_SKEW.as_secs()), not_after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_kind_names_round_trip() {
        for kind in CaKind::ALL {
            assert_eq!(kind.to_string().parse::<CaKind>().unwrap(), kind);
            assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{kind}\""));
        }
        assert!(matches!(
            "root".parse::<CaKind>(),
            Err(CaError::UnknownName { .. })
        ));
    }

    #[test]
    fn ttl_rule() {
        let h = |n: u64| Duration::from_secs(n * 3600);
        assert_eq!(effective_ttl(None, h(30)), DEFAULT_CERT_TTL);
        assert_eq!(effective_ttl(None, h(2)), h(2));
        assert_eq!(effective_ttl(Some(h(30)), h(30)), h(30));
        assert_eq!(effective_ttl(Some(h(87_600)), h(30)), h(30));
        assert_eq!(effective_ttl(Some(h(1)), h(2)), h(1));
        assert_eq!(effective_ttl(Some(h(30)), h(12)), h(12));
    }

    #[test]
    fn derived_certificates_never_outlive_their_parent() {
        let now = from_unix(1_000_000);
        let h = |n: u64| Duration::from_secs(n * 3600);
        // Shorter than what is left of the parent: unchanged.
        assert_eq!(derived_ttl(now, now + h(8), h(1)), Some(h(1)));
        // Longer: cut to the parent's end, to the second.
        assert_eq!(derived_ttl(now, now + h(2), h(30)), Some(h(2)));
        assert_eq!(
            derived_ttl(now, now + Duration::from_millis(2_500), h(1)),
            Some(Duration::from_secs(2))
        );
        // An expired (or about to expire) parent yields nothing.
        assert_eq!(derived_ttl(now, now, h(1)), None);
        assert_eq!(derived_ttl(now, now - h(1), h(1)), None);
        assert_eq!(
            derived_ttl(now, now + Duration::from_millis(500), h(1)),
            None
        );
    }

    #[test]
    fn validity_window_allows_skew_and_rejects_overflow() {
        let now = from_unix(1_000_000);
        assert_eq!(
            validity_window(now, Duration::from_secs(10)).unwrap(),
            (1_000_000 - 60, 1_000_010)
        );
        assert!(validity_window(now, Duration::from_secs(u64::MAX)).is_err());
        assert!(validity_window(UNIX_EPOCH - Duration::from_secs(1), DEFAULT_CERT_TTL).is_err());
    }
}
