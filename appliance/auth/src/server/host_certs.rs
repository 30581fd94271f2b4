//! What Auth last certified for each host, so that a CA rotation can name what still depends on
//! an old key: agents whose certificate is not from the host CA's signing key, and agentless
//! OpenSSH nodes whose files (host certificate, `TrustedUserCAKeys`) were exported before the
//! key changed. Bookkeeping only: a record that cannot be written is logged, never a refusal.

use hop_ca::CaKind;
use hop_storage::StoredResource;
use serde::{Deserialize, Serialize};

use super::{AuthServer, unix};
use crate::error::AuthError;

/// One host's latest certificate from Auth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedHostCert {
    /// The agent's host id, or the agentless node's name.
    pub name: String,
    /// The agent's role (`node`, `db`, …), or `openssh` for an agentless node.
    pub role: String,
    /// `SHA256:…` of the host CA key that signed its SSH certificate, or the `sha256:…` pin of
    /// the one that signed its X.509 certificate (agents).
    pub host_signer: String,
    /// Agentless nodes: the OpenSSH CA keys (fingerprints) its `TrustedUserCAKeys` holds.
    #[serde(default)]
    pub trusts: Vec<String>,
    /// Agents: the serial (hex) of the X.509 certificate Auth issued last, and of the one
    /// before it (a renewal whose answer was lost presents that one again).
    #[serde(default)]
    pub serial: String,
    #[serde(default)]
    pub previous_serial: String,
    pub issued_unix: i64,
    pub expires_unix: i64,
}

impl StoredResource for IssuedHostCert {
    const KIND: &'static str = "issued_host_cert";
    fn name(&self) -> &str {
        &self.name
    }
}

impl AuthServer {
    /// Notes that `name` (an agent of `role`, or `openssh`) was certified now until `expires_unix`
    /// (agents: with the X.509 certificate of serial `serial`).
    pub(crate) fn note_host_cert(&self, name: &str, role: &str, serial: &str, expires_unix: i64) {
        let cas = self.authorities();
        let host = cas.set(CaKind::Host).signer();
        let (host_signer, trusts) = if role == "openssh" {
            let openssh = cas.trusted(CaKind::OpenSsh);
            (
                host.ssh_fingerprint.clone().unwrap_or_default(),
                openssh
                    .iter()
                    .filter_map(|c| c.ssh_fingerprint.clone())
                    .collect(),
            )
        } else {
            (
                host.x509_spki_sha256.clone().unwrap_or_default(),
                Vec::new(),
            )
        };
        let previous_serial = self
            .store()
            .get::<IssuedHostCert>(name)
            .ok()
            .flatten()
            .map(|v| v.value.serial)
            .unwrap_or_default();
        let record = IssuedHostCert {
            name: name.to_owned(),
            role: role.to_owned(),
            host_signer,
            trusts,
            serial: serial.to_owned(),
            previous_serial,
            issued_unix: unix(self.clock.now()),
            expires_unix,
        };
        if let Err(e) = self.store().upsert(&record) {
            tracing::warn!(error = %e, host = name, "cannot note the host certificate for rotation status");
        }
    }

    /// The serial of the certificate Auth last issued to agent `host_id`, if it noted one.
    pub fn last_host_serial(&self, host_id: &str) -> Option<String> {
        self.store()
            .get::<IssuedHostCert>(host_id)
            .ok()
            .flatten()
            .map(|v| v.value.serial)
            .filter(|s| !s.is_empty())
    }

    /// While the host CA rotates, only a certificate Auth itself issued to `host_id` (the last
    /// one, or the one before when an answer was lost) renews: whoever holds a leaked old key
    /// can mint certificates for any host id, and must not get them moved onto the new key.
    pub(super) fn check_renewal_during_rotation(
        &self,
        host_id: &str,
        serial: &str,
    ) -> Result<(), AuthError> {
        if self.authorities().set(CaKind::Host).rotation.phase == crate::rotation::Phase::Standby {
            return Ok(());
        }
        let known = self
            .store()
            .get::<IssuedHostCert>(host_id)?
            .map(|v| v.value)
            .is_some_and(|r| {
                !serial.is_empty() && (r.serial == serial || r.previous_serial == serial)
            });
        if known {
            Ok(())
        } else {
            Err(AuthError::Denied(format!(
                "host {host_id}: during a host CA rotation only the certificate Auth last issued renews; join the agent again with a token"
            )))
        }
    }

    /// What still depends on a key that is not the signing one of its CA, as lines for people:
    /// for the host CA, hosts whose certificate is from another key; for the OpenSSH CA,
    /// agentless nodes whose `TrustedUserCAKeys` lacks a trusted key.
    pub(super) fn stale_hosts(&self, kind: CaKind) -> Vec<String> {
        if !matches!(kind, CaKind::Host | CaKind::OpenSsh) {
            return Vec::new();
        }
        let now = unix(self.clock.now());
        let Ok(records) = self.store().list::<IssuedHostCert>() else {
            return Vec::new();
        };
        let cas = self.authorities();
        let host = cas.set(CaKind::Host).signer();
        let signer = [
            host.ssh_fingerprint.as_deref(),
            host.x509_spki_sha256.as_deref(),
        ];
        let openssh: Vec<&str> = cas
            .trusted(CaKind::OpenSsh)
            .iter()
            .filter_map(|c| c.ssh_fingerprint.as_deref())
            .collect();
        let mut out = Vec::new();
        for r in records.into_iter().map(|v| v.value) {
            if r.expires_unix <= now {
                continue;
            }
            let agentless = r.role == "openssh";
            match kind {
                CaKind::Host if !signer.contains(&Some(r.host_signer.as_str())) => {
                    out.push(if agentless {
                        format!(
                            "{} (agentless: host certificate from another key; sign it again)",
                            r.name
                        )
                    } else {
                        format!(
                            "{} ({} agent: certificate from another key, not renewed yet)",
                            r.name, r.role
                        )
                    });
                }
                CaKind::OpenSsh
                    if agentless && openssh.iter().any(|k| !r.trusts.iter().any(|t| t == k)) =>
                {
                    out.push(format!(
                        "{} (agentless: TrustedUserCAKeys lacks a trusted key; sign it again)",
                        r.name
                    ));
                }
                _ => {}
            }
        }
        out.sort();
        out
    }
}
