//! The CA rotation and trust messages of the Auth API: `GetTrust` (every trusted key and each
//! CA's phase, public), `RotateCertAuthority` and the rotation part of `Status`. Only the
//! translation between the protos and `server/rotation.rs` lives here.

use std::time::Duration;

use hop_api::proto::{AuthorityStatus, CaTrust, RotateCertAuthorityRequest, TrustResponse};
use hop_ca::CaKind;

use super::rotation::{Mode, Phase};
use super::server::{AuthError, AuthServer, CaRotationStatus, RotateRequest, RotateTarget};

/// What `GetTrust` answers: public keys only.
pub(super) fn trust(auth: &AuthServer) -> TrustResponse {
    let cas = auth.authorities();
    let mut client_facing = cas.trusted(CaKind::User).to_vec();
    client_facing.extend_from_slice(cas.trusted(CaKind::Host));
    TrustResponse {
        cluster_name: auth.cluster_name().to_string(),
        known_hosts: hop_ca::export_known_hosts(cas.trusted(CaKind::Host)),
        trusted_cas_pem: hop_ca::export_pem(&client_facing),
        trust_digest: cas.trust_digest().to_owned(),
        authorities: CaKind::ALL
            .into_iter()
            .map(|kind| {
                let set = cas.set(kind);
                CaTrust {
                    kind: kind.to_string(),
                    phase: set.rotation.phase.to_string(),
                    ssh_public_keys: set
                        .trusted()
                        .iter()
                        .filter_map(|c| c.ssh_public.clone())
                        .collect(),
                    x509_cert_pems: set
                        .trusted()
                        .iter()
                        .filter_map(|c| c.x509_cert_pem.clone())
                        .collect(),
                    signer_tls_pin: set.signer().x509_spki_sha256.clone().unwrap_or_default(),
                    signer_ssh_fingerprint: set
                        .signer()
                        .ssh_fingerprint
                        .clone()
                        .unwrap_or_default(),
                }
            })
            .collect(),
    }
}

/// The request `hop admin auth rotate` sent, checked.
pub(super) fn request(r: &RotateCertAuthorityRequest) -> Result<RotateRequest, AuthError> {
    let target = RotateTarget::parse(if r.r#type.is_empty() {
        "all"
    } else {
        &r.r#type
    })?;
    let phase = if r.phase.is_empty() {
        None
    } else {
        Some(r.phase.parse::<Phase>()?)
    };
    Ok(RotateRequest {
        target,
        mode: if r.manual { Mode::Manual } else { Mode::Auto },
        phase,
        grace_period: (r.grace_period_secs > 0).then(|| Duration::from_secs(r.grace_period_secs)),
    })
}

/// One CA's status as the API says it.
pub(super) fn status(s: &CaRotationStatus) -> AuthorityStatus {
    let (next_phase, next_phase_unix) = s
        .next
        .map(|(p, at)| (p.to_string(), at))
        .unwrap_or_default();
    AuthorityStatus {
        kind: s.kind.to_string(),
        ssh_fingerprint: s.ssh_fingerprints.first().cloned().unwrap_or_default(),
        tls_pin: s.tls_pins.first().cloned().unwrap_or_default(),
        phase: s.phase.to_string(),
        mode: s.mode.as_str().to_string(),
        ssh_fingerprints: s.ssh_fingerprints.clone(),
        tls_pins: s.tls_pins.clone(),
        started_unix: s.started_unix,
        changed_unix: s.changed_unix,
        next_phase,
        next_phase_unix,
        stale: s.stale.clone(),
    }
}
