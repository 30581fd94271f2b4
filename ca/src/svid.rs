//! SPIFFE X.509 SVIDs from the `spiffe` CA: the trust domain (the cluster's name), the SPIFFE ID
//! syntax this CA accepts, and the SVID profile (exactly one URI SAN `spiffe://DOMAIN/PATH`,
//! `CA:FALSE`, `digitalSignature` only, EKU serverAuth + clientAuth). Who may obtain which path is
//! not decided here (roles do, at Auth); this module refuses only what is not a SPIFFE ID.

use std::time::{Duration, SystemTime};

use rand_core::CryptoRng;
use rcgen::string::Ia5String;
use rcgen::{DnType, ExtendedKeyUsagePurpose, SanType};

use crate::authority::{CaKind, CertAuthority};
use crate::error::CaError;
use crate::x509;

/// The longest SPIFFE ID accepted, in bytes (the SPIFFE spec's limit).
const MAX_ID_LEN: usize = 2048;

/// The trust domain of `cluster`: its name in lower case, refused unless it uses only the
/// characters a SPIFFE trust domain may (`a-z 0-9 . - _`).
///
/// # Errors
/// [`CaError::InvalidRequest`] when the cluster name cannot be a trust domain.
pub fn spiffe_trust_domain(cluster: &str) -> Result<String, CaError> {
    let domain = cluster.to_ascii_lowercase();
    let valid = !domain.is_empty()
        && domain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if valid {
        Ok(domain)
    } else {
        Err(CaError::InvalidRequest {
            what: format!("cluster name {cluster:?} is not a valid SPIFFE trust domain"),
        })
    }
}

/// Checks a SPIFFE ID path: `/` then segments of `A-Z a-z 0-9 . - _`, none empty, `.` or `..`,
/// no trailing `/`.
///
/// # Errors
/// [`CaError::InvalidRequest`] naming what is wrong.
pub fn check_spiffe_path(path: &str) -> Result<(), CaError> {
    let bad = |why: &str| CaError::InvalidRequest {
        what: format!("SPIFFE path {path:?}: {why}"),
    };
    let Some(rest) = path.strip_prefix('/') else {
        return Err(bad("must start with /"));
    };
    for segment in rest.split('/') {
        if segment.is_empty() {
            return Err(bad("empty segment"));
        }
        if segment == "." || segment == ".." {
            return Err(bad("segments . and .. are not allowed"));
        }
        if !segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(bad("only A-Z a-z 0-9 . - _ are allowed in a segment"));
        }
    }
    Ok(())
}

/// `spiffe://DOMAIN/PATH` for `cluster` and `path`, both checked.
///
/// # Errors
/// As [`spiffe_trust_domain`] and [`check_spiffe_path`], or when the ID is too long.
pub fn spiffe_id(cluster: &str, path: &str) -> Result<String, CaError> {
    check_spiffe_path(path)?;
    let id = format!("spiffe://{}{path}", spiffe_trust_domain(cluster)?);
    if id.len() > MAX_ID_LEN {
        return Err(CaError::InvalidRequest {
            what: format!("SPIFFE ID longer than {MAX_ID_LEN} bytes"),
        });
    }
    Ok(id)
}

/// The URI SAN of the spiffe CA's own certificate: `spiffe://DOMAIN`.
pub(crate) fn trust_domain_san(cluster: &str) -> Result<SanType, CaError> {
    uri_san(&format!("spiffe://{}", spiffe_trust_domain(cluster)?))
}

fn uri_san(uri: &str) -> Result<SanType, CaError> {
    Ia5String::try_from(uri)
        .map(SanType::URI)
        .map_err(|e| CaError::InvalidRequest {
            what: format!("URI {uri:?}: {e}"),
        })
}

impl CertAuthority {
    /// Issues an X.509 SVID for `path` in this cluster's trust domain to the subject key, valid
    /// from `now - 1 min` to `now + ttl`: one URI SAN, `CA:FALSE`, `digitalSignature`, EKU
    /// serverAuth + clientAuth, subject O = cluster.
    ///
    /// # Errors
    /// [`CaError::WrongCaKind`] unless this is the spiffe CA; [`CaError::InvalidRequest`] for a
    /// path that is not a SPIFFE path; [`CaError::InvalidKey`] for an unparsable subject SPKI.
    pub fn issue_svid<R: CryptoRng + ?Sized>(
        &self,
        subject_spki_der: &[u8],
        path: &str,
        now: SystemTime,
        ttl: Duration,
        rng: &mut R,
    ) -> Result<String, CaError> {
        self.require_kind(CaKind::Spiffe, "issue SPIFFE SVIDs")?;
        let id = spiffe_id(&self.cluster, path)?;
        let mut params = x509::leaf_params(now, ttl, rng)?;
        params
            .distinguished_name
            .push(DnType::OrganizationName, self.cluster.as_str());
        params.subject_alt_names = vec![uri_san(&id)?];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        self.sign_x509(&params, subject_spki_der)
    }
}

#[cfg(test)]
#[path = "svid_tests.rs"]
mod tests;
