//! What a client, a bot or an agent does about the cluster's trust while a CA rotates (see
//! `appliance/auth/src/rotation.rs` for the phases): whether the trust it saved is stale, whether
//! its own certificate must move to the key that signs now, and which trusted CA key signed it.
//!
//! Pure decisions over what Auth's `GetTrust` said and what the proxy's certificate carries;
//! fetching and saving trust are the callers'. It reads no clock (times are arguments).

use std::time::SystemTime;

use hop_ca::{CaKind, CaPublic};

/// How often agents and bots ask Auth for the cluster's trust (`GetTrust`): twice within a phase
/// of the shortest automatic rotation Auth accepts (30 s, 10 s a phase). Manual steps taken
/// faster than this outrun them: an operator waits for `hop admin status` to list nothing still
/// on the old key before `update_servers` and `standby`.
pub const TRUST_POLL: std::time::Duration = std::time::Duration::from_secs(5);

/// Who holds a certificate, which decides in which phases it moves to the key that signs now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// An agent's host certificate: moves in `update_servers` (and back in `rollback`).
    Host,
    /// A user's or bot's certificate: moves from `update_clients` on.
    Client,
}

/// Whether trust saved with digest `saved` is stale, given the digest `presented` by the
/// proxy's certificate. A proxy whose certificate carries none (an older one) says nothing; a
/// missing or empty saved digest (a profile from before digests) counts as stale.
#[must_use]
pub fn digest_is_stale(saved: Option<&str>, presented: Option<&str>) -> bool {
    let Some(presented) = presented.map(str::trim).filter(|d| !d.is_empty()) else {
        return false;
    };
    saved.map(str::trim).filter(|d| !d.is_empty()) != Some(presented)
}

/// Whether `holder` must renew now, its CA being in `phase` with `signer_pin` signing, when its
/// certificate was signed by `cert_signer` (`None`: by no key trusted now, or expired).
///
/// Hosts renew in `update_servers`, `rollback` and `standby`; clients (users, bots) from
/// `update_clients` on. In `init` the old key still signs, so nothing moves. In `standby` a
/// certificate of a dropped key is refused by the proxy: the renewal fails, and the caller must
/// say that a new join is needed rather than retry hot.
#[must_use]
pub fn must_renew(
    holder: Holder,
    phase: &str,
    signer_pin: &str,
    cert_signer: Option<&str>,
) -> bool {
    let moving = match holder {
        Holder::Host => matches!(phase, "update_servers" | "rollback" | "standby"),
        Holder::Client => matches!(
            phase,
            "update_clients" | "update_servers" | "rollback" | "standby"
        ),
    };
    moving && !signer_pin.is_empty() && cert_signer != Some(signer_pin)
}

/// The SPKI pin (`sha256:<hex>`) of the CA among `ca_pems` (CA certificates of `kind`, one PEM
/// each, as `GetTrust` lists them) whose key signed the first certificate of `cert_pem`, verified at
/// `now`; `None` when none did, the certificate is not valid at `now`, or a PEM does not parse.
#[must_use]
pub fn cert_signer(
    cert_pem: &str,
    ca_pems: &[String],
    kind: CaKind,
    now: SystemTime,
) -> Option<String> {
    let der = hop_ca::parse_pem_certs(cert_pem).ok()?.into_iter().next()?;
    let trusted: Vec<CaPublic> = ca_pems
        .iter()
        .filter_map(|pem| {
            let ca_der = hop_ca::parse_pem_certs(pem).ok()?.into_iter().next()?;
            Some(CaPublic {
                kind,
                cluster: String::new(),
                ssh_public: None,
                x509_cert_pem: Some(pem.clone()),
                jwt_public_pem: None,
                ssh_fingerprint: None,
                x509_spki_sha256: Some(hop_ca::ca_pin(&ca_der).ok()?),
            })
        })
        .collect();
    hop_ca::x509_signer_pin(&der, &trusted, kind, now)
}

/// Whether the CA certificates in `saved` (PEM, any order) are exactly those in `current`:
/// compared as DER sets, so that order and line endings do not matter. PEM that does not parse
/// compares unequal.
#[must_use]
pub fn same_certificates(saved: &str, current: &[String]) -> bool {
    let set =
        |pems: &mut dyn Iterator<Item = &str>| -> Option<std::collections::BTreeSet<Vec<u8>>> {
            let mut out = std::collections::BTreeSet::new();
            for p in pems {
                out.extend(hop_ca::parse_pem_certs(p).ok()?);
            }
            Some(out)
        };
    match (
        set(&mut std::iter::once(saved)),
        set(&mut current.iter().map(String::as_str)),
    ) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_is_stale_when_missing_or_different_and_only_then() {
        assert!(!digest_is_stale(Some("t1:a"), Some("t1:a")));
        assert!(!digest_is_stale(Some("t1:a\n"), Some("t1:a")));
        assert!(digest_is_stale(Some("t1:a"), Some("t1:b")));
        // Profiles from before digests.
        assert!(digest_is_stale(None, Some("t1:a")));
        assert!(digest_is_stale(Some(""), Some("t1:a")));
        // A proxy that carries none says nothing.
        assert!(!digest_is_stale(Some("t1:a"), None));
        assert!(!digest_is_stale(None, None));
        assert!(!digest_is_stale(None, Some(" ")));
    }

    #[test]
    fn renewals_follow_the_phase_and_the_signer() {
        let (old, new) = ("sha256:old", "sha256:new");
        // (phase, signer, the certificate's signer, host renews, client renews)
        let table: &[(&str, &str, Option<&str>, bool, bool)] = &[
            ("standby", old, Some(old), false, false),
            ("init", old, Some(old), false, false),
            ("init", old, None, false, false),
            ("update_clients", new, Some(old), false, true),
            ("update_clients", new, Some(new), false, false),
            ("update_servers", new, Some(old), true, true),
            ("update_servers", new, Some(new), false, false),
            ("rollback", old, Some(new), true, true),
            ("rollback", old, Some(old), false, false),
            // After standby, a certificate of the dropped key: renew (which fails: rejoin).
            ("standby", new, None, true, true),
            ("standby", new, Some(new), false, false),
            // Auth named no signer (a CA without X.509): nothing to move onto.
            ("update_servers", "", None, false, false),
            ("unknown", new, Some(old), false, false),
        ];
        for &(phase, signer, cert, host, client) in table {
            assert_eq!(
                must_renew(Holder::Host, phase, signer, cert),
                host,
                "host in {phase} with {cert:?}"
            );
            assert_eq!(
                must_renew(Holder::Client, phase, signer, cert),
                client,
                "client in {phase} with {cert:?}"
            );
        }
    }

    fn ca(name: &str) -> (rcgen::Certificate, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        (params.self_signed(&key).unwrap(), key)
    }

    #[test]
    fn the_signer_is_the_ca_whose_key_signed() {
        let (old, old_key) = ca("old");
        let (new, _) = ca("new");
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["h.test".to_string()]).unwrap();
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let issuer = rcgen::Issuer::from_ca_cert_der(old.der(), &old_key).unwrap();
        let leaf = params.signed_by(&leaf_key, &issuer).unwrap();
        let pems = vec![new.pem(), old.pem()];
        let now = hop_platform::clock::wall();
        assert_eq!(
            cert_signer(&leaf.pem(), &pems, CaKind::Host, now),
            Some(hop_ca::ca_pin(old.der()).unwrap())
        );
        assert_eq!(
            cert_signer(&leaf.pem(), &[new.pem()], CaKind::Host, now),
            None
        );
        assert!(same_certificates(
            &format!("{}{}", old.pem(), new.pem()),
            &pems
        ));
        assert!(!same_certificates(&old.pem(), &pems));
    }
}
