//! What a party trusts while a CA rotates: the digest that names a set of trusted CA keys, the
//! certificate extension that carries it in the proxy's certificate, and which of several trusted
//! keys signed a given certificate.
//!
//! During a rotation a CA has two keys (the one that signs, and the other one still trusted);
//! clients, agents and bots must learn of the second key before anything presents a certificate
//! it signed. The digest lets them tell, from a handshake they already verified, that what they
//! saved is stale; [`x509_signer_pin`] lets a host tell whether its own certificate is on the key
//! that signs now. Nothing here decides when to rotate; that is Auth's.

use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::authority::{CaKind, CaPublic};
use crate::error::CaError;
use crate::x509;

/// OID of the extension (a UTF8String) in which the proxy's certificate carries the cluster's
/// [`trust_digest`], under Hop's private arc (see [`crate::HOP_IDENTITY_OID`]).
pub const HOP_TRUST_DIGEST_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 59327, 1, 3];

/// `t1:` and the first 32 hex digits of SHA-256 over the sorted public keys of `cas` (each X.509
/// CA's SPKI pin and each SSH key's fingerprint, prefixed by its kind): equal for equal sets of
/// trusted keys whatever their order, different when a key is added or dropped.
#[must_use]
pub fn trust_digest(cas: &[CaPublic]) -> String {
    let mut parts: Vec<String> = Vec::new();
    for ca in cas {
        if let Some(pin) = &ca.x509_spki_sha256 {
            parts.push(format!("{}/x509/{pin}", ca.kind));
        }
        if let Some(fp) = &ca.ssh_fingerprint {
            parts.push(format!("{}/ssh/{fp}", ca.kind));
        }
        if let Some(jwt) = &ca.jwt_public_pem {
            parts.push(format!("{}/jwt/{}", ca.kind, jwt.trim()));
        }
    }
    parts.sort();
    parts.dedup();
    let mut h = Sha256::new();
    for p in &parts {
        h.update(p.as_bytes());
        h.update(b"\n");
    }
    let digest = h.finalize();
    format!("t1:{}", hex::encode(&digest[..16]))
}

/// The [`trust_digest`] a certificate carries in [`HOP_TRUST_DIGEST_OID`], read without any
/// verification (the caller has verified the chain): `None` when it carries none.
///
/// # Errors
/// [`CaError::MalformedCertificate`] if `cert_der` does not parse; [`CaError::MalformedIdentity`]
/// if the extension is there but is no UTF8String.
pub fn trust_digest_x509(cert_der: &[u8]) -> Result<Option<String>, CaError> {
    let cert = x509::parse_cert(cert_der)?;
    let Some(value) = x509::extension(&cert, HOP_TRUST_DIGEST_OID) else {
        return Ok(None);
    };
    x509::parse_der_utf8(value)
        .map(|s| Some(s.to_owned()))
        .ok_or_else(|| CaError::MalformedIdentity {
            reason: "trust digest extension is no UTF8String".into(),
        })
}

/// The SPKI pin of the CA among `trusted` (of `kind`) whose key signed the X.509 certificate
/// `cert_der`, checked as a full verification at `now` against each CA alone; `None` when none
/// of them did (or the certificate is not valid at `now`).
#[must_use]
pub fn x509_signer_pin(
    cert_der: &[u8],
    trusted: &[CaPublic],
    kind: CaKind,
    now: SystemTime,
) -> Option<String> {
    let usage = match kind {
        CaKind::User => webpki::KeyUsage::client_auth(),
        _ => webpki::KeyUsage::server_auth(),
    };
    trusted
        .iter()
        .filter(|ca| ca.kind == kind)
        .find(|ca| {
            x509::verify_leaf(
                cert_der,
                std::slice::from_ref(*ca),
                kind,
                usage,
                "certificate",
                now,
            )
            .is_ok()
        })
        .and_then(|ca| ca.x509_spki_sha256.clone())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::{CertAuthority, HostRole, generate_x509_keypair};

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn host_ca() -> CertAuthority {
        CertAuthority::generate(CaKind::Host, "c", now(), &mut rand::rng()).unwrap()
    }

    #[test]
    fn the_digest_names_the_set_not_its_order() {
        let (a, b) = (host_ca().public(), host_ca().public());
        let one = trust_digest(&[a.clone(), b.clone()]);
        assert_eq!(one, trust_digest(&[b.clone(), a.clone()]));
        assert_ne!(one, trust_digest(std::slice::from_ref(&a)));
        assert_ne!(trust_digest(&[a]), trust_digest(&[b]));
        assert!(one.starts_with("t1:") && one.len() == 35, "{one}");
    }

    #[test]
    fn the_proxy_certificate_carries_the_digest_and_names_its_signer() {
        let (old, new) = (host_ca(), host_ca());
        let key = generate_x509_keypair(&mut rand::rng()).unwrap();
        let issue = |ca: &CertAuthority, digest: Option<&str>| {
            let pem = ca
                .issue_host_x509(
                    &key.public_spki_der,
                    "proxy-1",
                    HostRole::Proxy,
                    &["proxy.c".into()],
                    digest,
                    now(),
                    Duration::from_secs(3600),
                    &mut rand::rng(),
                )
                .unwrap();
            x509::parse_pem_certs(&pem).unwrap().remove(0)
        };
        let plain = issue(&old, None);
        assert_eq!(trust_digest_x509(&plain).unwrap(), None);
        let tagged = issue(&new, Some("t1:abc"));
        assert_eq!(
            trust_digest_x509(&tagged).unwrap().as_deref(),
            Some("t1:abc")
        );

        let both = [old.public(), new.public()];
        assert_eq!(
            x509_signer_pin(&plain, &both, CaKind::Host, now()),
            old.public().x509_spki_sha256
        );
        assert_eq!(
            x509_signer_pin(&tagged, &both, CaKind::Host, now()),
            new.public().x509_spki_sha256
        );
        assert_eq!(
            x509_signer_pin(&tagged, &both[..1], CaKind::Host, now()),
            None
        );
        let later = now() + Duration::from_secs(7200);
        assert_eq!(x509_signer_pin(&plain, &both, CaKind::Host, later), None);
        assert!(trust_digest_x509(b"not a certificate").is_err());
    }
}
