//! X.509 certificates: the CAs' self-signed certificates, user and host leaf certificates for
//! mTLS to the proxy, database client/server certificates, and their verification with webpki.
//! This module owns the certificate profile (subject, SANs, key usages, Hop's private-OID
//! extensions) and the CA pin. It never reads the clock or the OS RNG (serials come from the
//! caller's `rng`), except that aws-lc draws the ECDSA signing nonce internally, which rcgen does
//! not let us inject.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand_core::CryptoRng;
use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;

use crate::authority::{
    self, CA_CERT_TTL, CaKind, CaPublic, CertAuthority, HOP_HOST_ROLE_OID, HOP_IDENTITY_OID,
};
use crate::error::CaError;
use crate::identity::{HostRole, Identity};
use crate::keys;

/// The CA pin: `sha256:<hex>` of the certificate's SubjectPublicKeyInfo DER.
///
/// # Errors
/// [`CaError::MalformedCertificate`] if `cert_der` is not an X.509 certificate.
pub fn ca_pin(cert_der: &[u8]) -> Result<String, CaError> {
    let cert = parse_cert(cert_der)?;
    let digest = Sha256::digest(cert.tbs_certificate.subject_pki.raw);
    Ok(format!("sha256:{}", hex::encode(digest)))
}

/// The DER of every `CERTIFICATE` block in `pem` (other blocks are ignored).
///
/// # Errors
/// [`CaError::MalformedCertificate`] if the PEM is broken or holds no certificate.
pub fn parse_pem_certs(pem: &str) -> Result<Vec<Vec<u8>>, CaError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CaError::MalformedCertificate {
            reason: format!("PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(CaError::MalformedCertificate {
            reason: "no CERTIFICATE block in PEM".into(),
        });
    }
    Ok(certs)
}

/// The self-signed certificate of a new CA: CN `<cluster> <kind> CA`, O `<cluster>`,
/// `CA:TRUE, pathlen:0`, `keyCertSign, cRLSign`, valid for 10 years from `now` (minus skew).
pub(crate) fn self_signed_ca<R: CryptoRng + ?Sized>(
    kind: CaKind,
    cluster: &str,
    key_pkcs8_pem: &str,
    now: SystemTime,
    rng: &mut R,
) -> Result<String, CaError> {
    let key = keys::x509_signing_key(key_pkcs8_pem)?;
    let mut params = base_params(now, CA_CERT_TTL, rng)?;
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{cluster} {kind} CA"));
    params
        .distinguished_name
        .push(DnType::OrganizationName, cluster);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    if kind == CaKind::Spiffe {
        params.subject_alt_names = vec![crate::svid::trust_domain_san(cluster)?];
    }
    let cert = params.self_signed(&key).map_err(issuance)?;
    Ok(cert.pem())
}

impl CertAuthority {
    /// Issues an X.509 user certificate for mTLS to the proxy: CN = username, O = the roles
    /// joined by `,`, the whole [`Identity`] as JSON in the non-critical [`HOP_IDENTITY_OID`]
    /// extension, EKU clientAuth, valid from `now - 1 min` to `now + ttl`, serial from `rng`.
    ///
    /// # Errors
    /// [`CaError::WrongCaKind`] unless this is the user CA; [`CaError::InvalidKey`] for an
    /// unparsable subject SPKI; [`CaError::InvalidRequest`] for an empty username.
    pub fn issue_user_x509<R: CryptoRng + ?Sized>(
        &self,
        subject_spki_der: &[u8],
        id: &Identity,
        now: SystemTime,
        ttl: Duration,
        rng: &mut R,
    ) -> Result<String, CaError> {
        self.require_kind(CaKind::User, "issue X.509 user certificates")?;
        if id.username.is_empty() {
            return Err(CaError::InvalidRequest {
                what: "identity has an empty username".into(),
            });
        }
        let mut params = leaf_params(now, ttl, rng)?;
        let dn = &mut params.distinguished_name;
        dn.push(DnType::CommonName, id.username.as_str());
        if !id.roles.is_empty() {
            dn.push(DnType::OrganizationName, id.roles.join(","));
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let json = serde_json::to_string(id).map_err(|e| CaError::Issuance {
            reason: format!("identity does not serialize: {e}"),
        })?;
        params
            .custom_extensions
            .push(CustomExtension::from_oid_content(
                HOP_IDENTITY_OID,
                der_utf8(&json),
            ));
        self.sign_x509(&params, subject_spki_der)
    }

    /// Issues an X.509 host certificate: CN = `host_id`, O = cluster, OU = role, SANs = `names`
    /// (IP addresses and DNS names), EKU serverAuth + clientAuth, the role also in the
    /// [`HOP_HOST_ROLE_OID`] extension; with `trust_digest` (the proxy's certificates), also the
    /// cluster's [`crate::trust_digest`] in [`crate::HOP_TRUST_DIGEST_OID`], so that a client
    /// learns from the handshake it already verified that the trusted CAs changed.
    ///
    /// # Errors
    /// [`CaError::WrongCaKind`] unless this is the host CA; [`CaError::InvalidKey`] for an
    /// unparsable subject SPKI; [`CaError::InvalidRequest`] for an empty host id or a name that
    /// is neither an IP address nor a DNS name.
    #[allow(clippy::too_many_arguments)] // reason: the signature is the appliance's contract
    pub fn issue_host_x509<R: CryptoRng + ?Sized>(
        &self,
        subject_spki_der: &[u8],
        host_id: &str,
        role: HostRole,
        names: &[String],
        trust_digest: Option<&str>,
        now: SystemTime,
        ttl: Duration,
        rng: &mut R,
    ) -> Result<String, CaError> {
        self.require_kind(CaKind::Host, "issue X.509 host certificates")?;
        if host_id.is_empty() {
            return Err(CaError::InvalidRequest {
                what: "empty host id".into(),
            });
        }
        let mut params = leaf_params(now, ttl, rng)?;
        let dn = &mut params.distinguished_name;
        dn.push(DnType::CommonName, host_id);
        dn.push(DnType::OrganizationName, self.cluster.as_str());
        dn.push(DnType::OrganizationalUnitName, role.as_str());
        params.subject_alt_names = sans(names)?;
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params
            .custom_extensions
            .push(CustomExtension::from_oid_content(
                HOP_HOST_ROLE_OID,
                der_utf8(role.as_str()),
            ));
        if let Some(digest) = trust_digest {
            params
                .custom_extensions
                .push(CustomExtension::from_oid_content(
                    crate::trust::HOP_TRUST_DIGEST_OID,
                    der_utf8(digest),
                ));
        }
        self.sign_x509(&params, subject_spki_der)
    }

    /// Issues a database client certificate from the db CA: CN = `db_user`, O = cluster, EKU
    /// clientAuth. Databases map the CN to the database user.
    ///
    /// # Errors
    /// [`CaError::WrongCaKind`] unless this is the db CA; [`CaError::InvalidKey`];
    /// [`CaError::InvalidRequest`] for an empty user.
    pub fn issue_db_client_x509<R: CryptoRng + ?Sized>(
        &self,
        subject_spki_der: &[u8],
        db_user: &str,
        now: SystemTime,
        ttl: Duration,
        rng: &mut R,
    ) -> Result<String, CaError> {
        self.require_kind(CaKind::Db, "issue database client certificates")?;
        if db_user.is_empty() {
            return Err(CaError::InvalidRequest {
                what: "empty database user".into(),
            });
        }
        let mut params = leaf_params(now, ttl, rng)?;
        let dn = &mut params.distinguished_name;
        dn.push(DnType::CommonName, db_user);
        dn.push(DnType::OrganizationName, self.cluster.as_str());
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign_x509(&params, subject_spki_der)
    }

    /// Issues a database server certificate from the db CA: CN = the first name, O = cluster,
    /// SANs = `names`, EKU serverAuth.
    ///
    /// # Errors
    /// [`CaError::WrongCaKind`] unless this is the db CA; [`CaError::InvalidKey`];
    /// [`CaError::InvalidRequest`] if `names` is empty or holds an invalid name.
    pub fn issue_db_server_x509<R: CryptoRng + ?Sized>(
        &self,
        subject_spki_der: &[u8],
        names: &[String],
        now: SystemTime,
        ttl: Duration,
        rng: &mut R,
    ) -> Result<String, CaError> {
        self.require_kind(CaKind::Db, "issue database server certificates")?;
        let first = names.first().ok_or_else(|| CaError::InvalidRequest {
            what: "a database server certificate needs at least one name".into(),
        })?;
        let mut params = leaf_params(now, ttl, rng)?;
        let dn = &mut params.distinguished_name;
        dn.push(DnType::CommonName, first.as_str());
        dn.push(DnType::OrganizationName, self.cluster.as_str());
        params.subject_alt_names = sans(names)?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign_x509(&params, subject_spki_der)
    }

    /// Signs `params` for the subject key with this CA's X.509 key; returns PEM.
    pub(crate) fn sign_x509(
        &self,
        params: &CertificateParams,
        subject_spki_der: &[u8],
    ) -> Result<String, CaError> {
        let missing = |what| CaError::MissingCaMaterial {
            kind: self.kind,
            what,
        };
        let cert_pem = self
            .x509_cert_pem
            .as_deref()
            .ok_or_else(|| missing("X.509 certificate"))?;
        let key_pem = self
            .x509_key_pem
            .as_deref()
            .ok_or_else(|| missing("X.509 private key"))?;
        let subject = rcgen::SubjectPublicKeyInfo::from_der(subject_spki_der).map_err(|e| {
            CaError::InvalidKey {
                what: "subject SubjectPublicKeyInfo",
                reason: e.to_string(),
            }
        })?;
        let key = keys::x509_signing_key(key_pem)?;
        let issuer =
            Issuer::from_ca_cert_pem(cert_pem, key).map_err(|e| CaError::MalformedCertificate {
                reason: format!("CA certificate: {e}"),
            })?;
        let cert = params.signed_by(&subject, &issuer).map_err(issuance)?;
        Ok(cert.pem())
    }
}

/// Validity and a random positive 128-bit serial; no extensions yet.
fn base_params<R: CryptoRng + ?Sized>(
    now: SystemTime,
    ttl: Duration,
    rng: &mut R,
) -> Result<CertificateParams, CaError> {
    let (not_before, not_after) = authority::validity_window(now, ttl)?;
    let mut params = CertificateParams::default();
    params.not_before = offset_date_time(not_before)?;
    params.not_after = offset_date_time(not_after)?;
    let mut serial = [0u8; 16];
    rng.fill_bytes(&mut serial);
    serial[0] &= 0x7f; // positive
    serial[0] |= 0x01; // and exactly 16 octets long
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params.distinguished_name = DistinguishedName::new();
    Ok(params)
}

/// [`base_params`] plus the leaf profile: `CA:FALSE`, digitalSignature, authority key id.
pub(crate) fn leaf_params<R: CryptoRng + ?Sized>(
    now: SystemTime,
    ttl: Duration,
    rng: &mut R,
) -> Result<CertificateParams, CaError> {
    let mut params = base_params(now, ttl, rng)?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn offset_date_time(unix_secs: u64) -> Result<OffsetDateTime, CaError> {
    i64::try_from(unix_secs)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .ok_or_else(|| CaError::InvalidRequest {
            what: format!("time {unix_secs} is out of the X.509 range"),
        })
}

/// SANs from names: IP addresses as iPAddress, anything else as dNSName.
fn sans(names: &[String]) -> Result<Vec<SanType>, CaError> {
    names
        .iter()
        .map(|name| {
            if let Ok(ip) = name.parse::<IpAddr>() {
                return Ok(SanType::IpAddress(ip));
            }
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._*".contains(&b));
            valid
                .then(|| Ia5String::try_from(name.as_str()).ok())
                .flatten()
                .map(SanType::DnsName)
                .ok_or_else(|| CaError::InvalidRequest {
                    what: format!("{name:?} is neither an IP address nor a DNS name"),
                })
        })
        .collect()
}

/// Verifies an X.509 user certificate: chains to a trusted user CA (webpki), `now` inside its
/// validity, EKU clientAuth, and carries a parsable [`HOP_IDENTITY_OID`] extension. Returns the
/// identity and notAfter.
///
/// # Errors
/// [`CaError::MalformedCertificate`], [`CaError::UntrustedSigner`], [`CaError::BadSignature`],
/// [`CaError::Expired`], [`CaError::NotYetValid`], [`CaError::WrongCertType`],
/// [`CaError::MissingIdentity`] or [`CaError::MalformedIdentity`].
pub fn verify_user_x509(
    cert_der: &[u8],
    trusted: &[CaPublic],
    now: SystemTime,
) -> Result<(Identity, SystemTime), CaError> {
    let cert = verify_leaf(
        cert_der,
        trusted,
        CaKind::User,
        webpki::KeyUsage::client_auth(),
        "X.509 client (user) certificate",
        now,
    )?;
    let value = extension(&cert, HOP_IDENTITY_OID).ok_or(CaError::MissingIdentity)?;
    let json = parse_der_utf8(value).ok_or_else(|| CaError::MalformedIdentity {
        reason: "identity extension is not a UTF8String".into(),
    })?;
    let identity: Identity =
        serde_json::from_str(json).map_err(|e| CaError::MalformedIdentity {
            reason: e.to_string(),
        })?;
    if identity.username.is_empty() {
        return Err(CaError::MissingIdentity);
    }
    Ok((identity, not_after(&cert)))
}

/// Verifies an X.509 host certificate: chains to a trusted host CA, `now` inside its validity,
/// EKU serverAuth, carries a [`HOP_HOST_ROLE_OID`] extension. Returns (host id = CN, role,
/// notAfter).
///
/// # Errors
/// As [`verify_user_x509`].
pub fn verify_host_x509(
    cert_der: &[u8],
    trusted: &[CaPublic],
    now: SystemTime,
) -> Result<(String, HostRole, SystemTime), CaError> {
    let cert = verify_leaf(
        cert_der,
        trusted,
        CaKind::Host,
        webpki::KeyUsage::server_auth(),
        "X.509 server (host) certificate",
        now,
    )?;
    let value = extension(&cert, HOP_HOST_ROLE_OID).ok_or(CaError::MissingIdentity)?;
    let role = parse_der_utf8(value)
        .and_then(|s| s.parse::<HostRole>().ok())
        .ok_or_else(|| CaError::MalformedIdentity {
            reason: "host role extension does not name a role".into(),
        })?;
    let host_id = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .filter(|cn| !cn.is_empty())
        .ok_or(CaError::MissingIdentity)?
        .to_owned();
    Ok((host_id, role, not_after(&cert)))
}

/// The [`HostRole`] a certificate claims in its [`HOP_HOST_ROLE_OID`] extension, read without
/// any verification (the caller verifies the chain): `None` when it has no such extension, as
/// certificates from other CAs (an operator's, a public CA's) do. The host CA puts the extension in
/// every X.509 certificate it issues ([`CertAuthority::issue_host_x509`] is its only issuance), so
/// a certificate without it did not come from a host CA.
///
/// # Errors
/// [`CaError::MalformedCertificate`] if `cert_der` does not parse; [`CaError::MalformedIdentity`]
/// if the extension is there but names no role.
pub fn host_role_x509(cert_der: &[u8]) -> Result<Option<HostRole>, CaError> {
    let cert = parse_cert(cert_der)?;
    let Some(value) = extension(&cert, HOP_HOST_ROLE_OID) else {
        return Ok(None);
    };
    parse_der_utf8(value)
        .and_then(|s| s.parse::<HostRole>().ok())
        .map(Some)
        .ok_or_else(|| CaError::MalformedIdentity {
            reason: "host role extension does not name a role".into(),
        })
}

/// The host id (CN) and role a host CA certificate names, read without any verification (the
/// caller's TLS handshake verified the chain): `None` for a certificate without Hop's host role
/// extension (an operator's, a public CA's).
///
/// # Errors
/// As [`host_role_x509`], and [`CaError::MissingIdentity`] for a role without a host id.
pub fn host_claim_x509(cert_der: &[u8]) -> Result<Option<(String, HostRole)>, CaError> {
    let Some(role) = host_role_x509(cert_der)? else {
        return Ok(None);
    };
    let cert = parse_cert(cert_der)?;
    let host_id = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .filter(|cn| !cn.is_empty())
        .ok_or(CaError::MissingIdentity)?
        .to_owned();
    Ok(Some((host_id, role)))
}

/// Chain, validity and EKU checks shared by the verifiers; returns the parsed leaf.
pub(crate) fn verify_leaf<'a>(
    cert_der: &'a [u8],
    trusted: &[CaPublic],
    kind: CaKind,
    usage: webpki::KeyUsage,
    expected: &'static str,
    now: SystemTime,
) -> Result<X509Certificate<'a>, CaError> {
    let cert = parse_cert(cert_der)?;
    let anchor_ders: Vec<Vec<u8>> = trusted
        .iter()
        .filter(|ca| ca.kind == kind)
        .filter_map(|ca| ca.x509_cert_pem.as_deref())
        .filter_map(|pem| parse_pem_certs(pem).ok())
        .flatten()
        .collect();
    let anchor_certs: Vec<CertificateDer<'_>> = anchor_ders
        .iter()
        .map(|d| CertificateDer::from(d.as_slice()))
        .collect();
    let anchors: Vec<_> = anchor_certs
        .iter()
        .filter_map(|c| webpki::anchor_from_trusted_cert(c).ok())
        .collect();
    if anchors.is_empty() {
        return Err(CaError::UntrustedSigner);
    }
    let leaf = CertificateDer::from(cert_der);
    let ee = webpki::EndEntityCert::try_from(&leaf).map_err(|e| CaError::MalformedCertificate {
        reason: e.to_string(),
    })?;
    let since_epoch = now
        .duration_since(UNIX_EPOCH)
        .map_err(|_| CaError::InvalidRequest {
            what: "time before the Unix epoch".into(),
        })?;
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &[],
        UnixTime::since_unix_epoch(since_epoch),
        usage,
        None,
        None,
    )
    .map_err(|e| webpki_error(e, expected))?;
    Ok(cert)
}

#[allow(deprecated)] // reason: RequiredEkuNotFound is deprecated but may still be returned
fn webpki_error(e: webpki::Error, expected: &'static str) -> CaError {
    use webpki::Error as W;
    match e {
        W::CertExpired { not_after, .. } => CaError::Expired {
            not_after: authority::from_unix(not_after.as_secs()),
        },
        W::CertNotValidYet { not_before, .. } => CaError::NotYetValid {
            not_before: authority::from_unix(not_before.as_secs()),
        },
        W::UnknownIssuer => CaError::UntrustedSigner,
        W::InvalidSignatureForPublicKey => CaError::BadSignature,
        W::RequiredEkuNotFound | W::RequiredEkuNotFoundContext(_) | W::CaUsedAsEndEntity => {
            CaError::WrongCertType { expected }
        }
        other => CaError::MalformedCertificate {
            reason: other.to_string(),
        },
    }
}

pub(crate) fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, CaError> {
    match x509_parser::parse_x509_certificate(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(CaError::MalformedCertificate {
            reason: "trailing bytes after the certificate".into(),
        }),
        Err(e) => Err(CaError::MalformedCertificate {
            reason: e.to_string(),
        }),
    }
}

fn not_after(cert: &X509Certificate<'_>) -> SystemTime {
    let secs = cert.validity().not_after.timestamp();
    authority::from_unix(u64::try_from(secs).unwrap_or(0))
}

/// The value (inside the OCTET STRING) of the extension with `oid`, if present.
pub(crate) fn extension<'a>(cert: &'a X509Certificate<'_>, oid: &[u64]) -> Option<&'a [u8]> {
    cert.extensions()
        .iter()
        .find(|ext| {
            ext.oid
                .iter()
                .is_some_and(|arcs| arcs.eq(oid.iter().copied()))
        })
        .map(|ext| ext.value)
}

/// DER `UTF8String` holding `s`.
pub(crate) fn der_utf8(s: &str) -> Vec<u8> {
    const UTF8_STRING: u8 = 0x0c;
    let len = s.len();
    let mut out = Vec::with_capacity(len + 6);
    out.push(UTF8_STRING);
    match u8::try_from(len) {
        Ok(short) if short < 0x80 => out.push(short),
        _ => {
            let bytes = len.to_be_bytes();
            let skip = bytes.iter().take_while(|b| **b == 0).count();
            let significant = bytes.get(skip..).unwrap_or_default();
            // At most 8 length octets, so this fits the 7-bit count.
            out.push(0x80 | u8::try_from(significant.len()).unwrap_or(0x7f));
            out.extend_from_slice(significant);
        }
    }
    out.extend_from_slice(s.as_bytes());
    out
}

/// The text of a DER `UTF8String` that spans all of `der`, or `None`.
pub(crate) fn parse_der_utf8(der: &[u8]) -> Option<&str> {
    let (&tag, rest) = der.split_first()?;
    if tag != 0x0c {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, body) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > std::mem::size_of::<usize>() {
            return None;
        }
        let len_bytes = rest.get(..count)?;
        let len = len_bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, rest.get(count..)?)
    };
    if body.len() != len {
        return None;
    }
    std::str::from_utf8(body).ok()
}

fn issuance(e: impl std::fmt::Display) -> CaError {
    CaError::Issuance {
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_utf8_round_trips_short_and_long() {
        for len in [0, 1, 127, 128, 255, 256, 70_000] {
            let s = "x".repeat(len);
            let der = der_utf8(&s);
            assert_eq!(parse_der_utf8(&der), Some(s.as_str()), "len {len}");
            // Every truncation is refused, never a panic.
            for cut in 0..der.len().min(300) {
                assert_eq!(parse_der_utf8(der.get(..cut).unwrap()), None);
            }
        }
        assert_eq!(parse_der_utf8(&[0x04, 0x01, b'a']), None);
    }

    #[test]
    fn sans_parse_ips_and_dns_names() {
        let names = ["10.0.0.1", "::1", "node-1.example.com", "*.hop.local"].map(String::from);
        let parsed = sans(&names).unwrap();
        assert!(matches!(parsed[0], SanType::IpAddress(_)));
        assert!(matches!(parsed[1], SanType::IpAddress(_)));
        assert!(matches!(parsed[2], SanType::DnsName(_)));
        assert!(matches!(parsed[3], SanType::DnsName(_)));
        assert!(sans(&["bad name".to_owned()]).is_err());
        assert!(sans(&[String::new()]).is_err());
    }
}
