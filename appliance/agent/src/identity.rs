//! An agent's identity: joining with a token once, and the files that keep it.
//!
//! Layout under `<data_dir>/agent/` (directory 0700, files 0600): `identity.json` (host id,
//! cluster, role), `host.key` (PKCS#8), `host.crt`, `host_ca.pem`, `user_ca.pem`; SSH nodes also
//! keep `ssh_host_key` (OpenSSH private key), `ssh_host_key-cert.pub` and `ssh_user_ca.pub` (the
//! user CA keys they trust). A restarted agent reuses them and needs no token; `renew` replaces
//! the certificates before they expire. While a CA rotates, `fetch_trust` asks Auth for every
//! trusted CA key, `follow_trust` keeps the CA files (and the identity in memory) in step with
//! it, and `rotation_renewal` says when the host certificate must move to the key that signs.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use hop_api::proto::auth_public_client::AuthPublicClient;
use hop_api::proto::{
    CaTrust, GetTrustRequest, JoinRequest, JoinResponse, RenewHostCertificateRequest, TrustResponse,
};
use hop_net::connect::{ApiError, ConnectError, status_error, tls_channel};
use hop_net::files::{FileError, ensure_dir, write_private};
use hop_net::trust::{ClientCert, Trust};

/// Why the identity files under `<data_dir>/agent/` cannot be read or written (the disk's, or
/// an operator who edited them).
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt agent identity.json")]
    Corrupt(#[source] serde_json::Error),
    #[error(transparent)]
    Write(#[from] FileError),
    /// The identity's metadata could not be encoded (internal).
    #[error(transparent)]
    Encode(serde_json::Error),
}

/// Why joining the cluster, or renewing the host certificate, failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// No identity and no token to get one (the operator's to fix).
    #[error(
        "this agent has no identity yet: pass --token (from `hop admin tokens add --type {role}`)"
    )]
    NoToken { role: String },
    /// A fresh key pair could not be made (internal).
    #[error(transparent)]
    Keys(#[from] hop_ca::CaError),
    /// The proxy could not be reached, or is not the one trusted (network or configuration).
    #[error(transparent)]
    Reach(#[from] ConnectError),
    /// Auth refused the join (a bad or used token, a name taken) or did not answer.
    #[error("joining the cluster")]
    Join(#[source] ApiError),
    /// Auth refused to renew the host certificate, or did not answer.
    #[error("renewing the host certificate")]
    Renew(#[source] ApiError),
    /// Auth did not say which CA keys the cluster trusts (`GetTrust`).
    #[error("asking for the cluster's trusted CAs")]
    Trust(#[source] ApiError),
    /// The new identity could not be stored.
    #[error(transparent)]
    Store(#[from] IdentityError),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdentityFile {
    pub host_id: String,
    pub cluster: String,
    pub role: String,
    pub expires_unix: i64,
    /// The node name Auth certified at the join (empty for none); asked for again on renewal.
    #[serde(default)]
    pub host_name: String,
}

/// A loaded agent identity.
#[derive(Debug, Clone)]
pub struct AgentIdentity {
    pub meta: IdentityFile,
    pub cert: ClientCert,
    pub host_ca_pem: String,
    /// SSH nodes: the host key and its certificate, and the user CA keys to trust.
    pub ssh: Option<SshHostIdentity>,
}

/// An SSH node's host identity.
#[derive(Debug, Clone)]
pub struct SshHostIdentity {
    pub private_key_openssh: String,
    pub certificate_openssh: String,
    pub user_ca_keys: Vec<String>,
}

impl AgentIdentity {
    pub fn expires(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(u64::try_from(self.meta.expires_unix).unwrap_or(0))
    }

    /// Trust for dialing the proxy: its certificate must chain to the cluster's host CA (and,
    /// as `client_config` checks for every proxy connection, carry the proxy role).
    pub fn trust(&self) -> Trust {
        Trust::CaPem(self.host_ca_pem.clone())
    }
}

fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("agent")
}

/// The stored identity, or `None` when this agent has not joined yet.
pub fn load(data_dir: &Path) -> Result<Option<AgentIdentity>, IdentityError> {
    let d = dir(data_dir);
    let meta_path = d.join("identity.json");
    if !meta_path.exists() {
        return Ok(None);
    }
    let read = |name: &str| {
        let path = d.join(name);
        std::fs::read_to_string(&path).map_err(|source| IdentityError::Read { path, source })
    };
    let meta: IdentityFile =
        serde_json::from_str(&read("identity.json")?).map_err(IdentityError::Corrupt)?;
    Ok(Some(AgentIdentity {
        meta,
        cert: ClientCert {
            chain_pem: read("host.crt")?,
            key_pem: read("host.key")?,
        },
        host_ca_pem: read("host_ca.pem")?,
        ssh: match read("ssh_host_key-cert.pub") {
            Ok(cert) => Some(SshHostIdentity {
                private_key_openssh: read("ssh_host_key")?,
                certificate_openssh: cert,
                user_ca_keys: read("ssh_user_ca.pub")?
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(str::to_owned)
                    .collect(),
            }),
            Err(_) => None,
        },
    }))
}

/// The identity in a join or renewal answer, kept in memory only.
fn from_response(
    role: &str,
    key_pem: &str,
    ssh_key: Option<&str>,
    resp: &JoinResponse,
) -> AgentIdentity {
    AgentIdentity {
        meta: IdentityFile {
            host_id: resp.host_id.clone(),
            cluster: resp.cluster_name.clone(),
            role: role.to_string(),
            expires_unix: resp.expires_unix,
            // Auth's name, which may differ from the one asked for (it is lower case).
            host_name: resp.host_name.clone(),
        },
        cert: ClientCert {
            chain_pem: resp.tls_certificate_pem.clone(),
            key_pem: key_pem.to_string(),
        },
        host_ca_pem: resp.host_ca_pem.clone(),
        ssh: ssh_key
            .filter(|_| !resp.ssh_host_certificate.is_empty())
            .map(|k| SshHostIdentity {
                private_key_openssh: k.to_string(),
                certificate_openssh: resp.ssh_host_certificate.clone(),
                user_ca_keys: resp.ssh_user_ca_keys.clone(),
            }),
    }
}

fn save(
    data_dir: &Path,
    role: &str,
    key_pem: &str,
    ssh_key: Option<&str>,
    resp: &JoinResponse,
) -> Result<AgentIdentity, IdentityError> {
    let d = dir(data_dir);
    ensure_dir(data_dir)?;
    ensure_dir(&d)?;
    let id = from_response(role, key_pem, ssh_key, resp);
    if let Some(ssh) = &id.ssh {
        write_private(&d.join("ssh_host_key"), ssh.private_key_openssh.as_bytes())?;
        write_private(
            &d.join("ssh_host_key-cert.pub"),
            ssh.certificate_openssh.as_bytes(),
        )?;
        write_private(
            &d.join("ssh_user_ca.pub"),
            format!("{}\n", ssh.user_ca_keys.join("\n")).as_bytes(),
        )?;
    }
    write_private(&d.join("host.key"), key_pem.as_bytes())?;
    write_private(&d.join("host.crt"), resp.tls_certificate_pem.as_bytes())?;
    write_private(&d.join("host_ca.pem"), resp.host_ca_pem.as_bytes())?;
    write_private(&d.join("user_ca.pem"), resp.user_ca_pem.as_bytes())?;
    write_private(
        &d.join("identity.json"),
        serde_json::to_string_pretty(&id.meta)
            .map_err(IdentityError::Encode)?
            .as_bytes(),
    )?;
    Ok(id)
}

/// Joins the cluster with a token, asking to be certified as `host_name` (empty: no name, as app
/// and db agents); stores the identity under `data_dir`, or keeps it in memory only without one
/// (simulated agents of the load test). Auth refuses a name that breaks its rule or is taken.
pub async fn join_as(
    data_dir: Option<&Path>,
    proxy: &str,
    token: &str,
    role: &str,
    trust: &Trust,
    host_name: &str,
) -> Result<AgentIdentity, JoinError> {
    if token.is_empty() {
        return Err(JoinError::NoToken {
            role: role.to_string(),
        });
    }
    let key = hop_ca::generate_x509_keypair(&mut rand::rng())?;
    let ssh_key = ssh_host_key(role)?;
    let channel = tls_channel(proxy, trust, None).await?;
    let resp = AuthPublicClient::new(channel)
        .join(JoinRequest {
            token: token.to_string(),
            role: role.to_string(),
            host_name: host_name.to_string(),
            tls_public_key: key.public_spki_der.clone(),
            ssh_public_key: ssh_key
                .as_ref()
                .map(|k| k.public_openssh.clone())
                .unwrap_or_default(),
        })
        .await
        .map_err(|s| JoinError::Join(status_error(s)))?
        .into_inner();
    let ssh_private = ssh_key.as_ref().map(|k| k.private_openssh.as_str());
    let id = match data_dir {
        Some(d) => save(d, role, &key.private_pkcs8_pem, ssh_private, &resp)?,
        None => from_response(role, &key.private_pkcs8_pem, ssh_private, &resp),
    };
    tracing::info!(host_id = %id.meta.host_id, cluster = %id.meta.cluster, "joined the cluster");
    Ok(id)
}

/// Replaces the host certificate with a fresh one, proving the current one.
pub async fn renew(
    data_dir: &Path,
    proxy: &str,
    current: &AgentIdentity,
) -> Result<AgentIdentity, JoinError> {
    let key = hop_ca::generate_x509_keypair(&mut rand::rng())?;
    let ssh_key = ssh_host_key(&current.meta.role)?;
    let channel = tls_channel(proxy, &current.trust(), Some(&current.cert)).await?;
    let resp = AuthPublicClient::new(channel)
        .renew_host_certificate(RenewHostCertificateRequest {
            tls_public_key: key.public_spki_der.clone(),
            ssh_public_key: ssh_key
                .as_ref()
                .map(|k| k.public_openssh.clone())
                .unwrap_or_default(),
            host_name: current.meta.host_name.clone(),
        })
        .await
        .map_err(|s| JoinError::Renew(status_error(s)))?
        .into_inner();
    Ok(save(
        data_dir,
        &current.meta.role,
        &key.private_pkcs8_pem,
        ssh_key.as_ref().map(|k| k.private_openssh.as_str()),
        &resp,
    )?)
}

/// A fresh SSH host key for agents that serve SSH (`node`), none for the others.
fn ssh_host_key(role: &str) -> Result<Option<hop_ca::SshKeyPair>, hop_ca::CaError> {
    if role != "node" {
        return Ok(None);
    }
    hop_ca::generate_ssh_keypair(&mut rand::rng()).map(Some)
}

/// Asks Auth, through the proxy, for every trusted CA key and each CA's rotation phase. With
/// the host certificate first; without it when that fails (a certificate of a key the cluster
/// dropped is refused at the handshake, and `GetTrust` needs no identity), so that the agent
/// can tell that it must join again.
pub async fn fetch_trust(
    proxy: &str,
    current: &AgentIdentity,
    cached: &mut Option<tonic::transport::Channel>,
) -> Result<TrustResponse, JoinError> {
    let channel = match cached {
        Some(c) => c.clone(),
        None => {
            let c = match tls_channel(proxy, &current.trust(), Some(&current.cert)).await {
                Ok(c) => c,
                Err(_) => tls_channel(proxy, &current.trust(), None).await?,
            };
            cached.insert(c).clone()
        }
    };
    let answer = AuthPublicClient::new(channel)
        .get_trust(GetTrustRequest {})
        .await
        .map_err(|s| JoinError::Trust(status_error(s)));
    if answer.is_err() {
        // The next poll dials again (with the trust and certificate current then).
        *cached = None;
    }
    Ok(answer?.into_inner())
}

/// The authority of `kind` in a `GetTrust` answer.
pub fn authority<'a>(trust: &'a TrustResponse, kind: &str) -> Option<&'a CaTrust> {
    trust.authorities.iter().find(|a| a.kind == kind)
}

/// PEM certificates one after another, each ending with a newline.
fn joined_pems(pems: &[String]) -> String {
    pems.iter().map(|p| format!("{}\n", p.trim_end())).collect()
}

/// Keeps the CA files under `<data_dir>/agent/` in step with `trust` (`host_ca.pem`,
/// `user_ca.pem`, an SSH node's `ssh_user_ca.pub`), so that the proxy's certificate from a host
/// key a rotation added is trusted. Returns the identity to use from now on when what it holds
/// in memory changed, `None` when nothing did. A CA the answer lists without keys is left as it
/// is (an answer from an older Auth).
pub fn follow_trust(
    data_dir: &Path,
    current: &AgentIdentity,
    trust: &TrustResponse,
) -> Result<Option<AgentIdentity>, IdentityError> {
    let d = dir(data_dir);
    let mut next = current.clone();
    let mut changed = false;
    if let Some(host) = authority(trust, "host").filter(|a| !a.x509_cert_pems.is_empty())
        && !hop_net::rotation::same_certificates(&current.host_ca_pem, &host.x509_cert_pems)
    {
        next.host_ca_pem = joined_pems(&host.x509_cert_pems);
        write_private(&d.join("host_ca.pem"), next.host_ca_pem.as_bytes())?;
        changed = true;
    }
    if let Some(user) = authority(trust, "user") {
        let path = d.join("user_ca.pem");
        let saved = std::fs::read_to_string(&path).unwrap_or_default();
        if !user.x509_cert_pems.is_empty()
            && !hop_net::rotation::same_certificates(&saved, &user.x509_cert_pems)
        {
            write_private(&path, joined_pems(&user.x509_cert_pems).as_bytes())?;
        }
        if let Some(ssh) = next.ssh.as_mut()
            && !user.ssh_public_keys.is_empty()
            && !same_keys(&ssh.user_ca_keys, &user.ssh_public_keys)
        {
            ssh.user_ca_keys = user.ssh_public_keys.clone();
            write_private(
                &d.join("ssh_user_ca.pub"),
                format!("{}\n", ssh.user_ca_keys.join("\n")).as_bytes(),
            )?;
            changed = true;
        }
    }
    Ok(changed.then_some(next))
}

/// Whether two lists of SSH public keys name the same keys (order and comments aside).
fn same_keys(a: &[String], b: &[String]) -> bool {
    let set = |keys: &[String]| -> std::collections::BTreeSet<String> {
        keys.iter()
            .map(|k| k.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
            .collect()
    };
    set(a) == set(b)
}

/// The host CA's phase when `current`'s host certificate must move to the key that signs now
/// (see `hop_net::rotation::must_renew`), `None` when it need not.
pub fn rotation_renewal(
    current: &AgentIdentity,
    trust: &TrustResponse,
    now: SystemTime,
) -> Option<String> {
    let host = authority(trust, "host")?;
    let signer = hop_net::rotation::cert_signer(
        &current.cert.chain_pem,
        &host.x509_cert_pems,
        hop_ca::CaKind::Host,
        now,
    );
    hop_net::rotation::must_renew(
        hop_net::rotation::Holder::Host,
        &host.phase,
        &host.signer_tls_pin,
        signer.as_deref(),
    )
    .then(|| host.phase.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem() -> String {
        rcgen::generate_simple_self_signed(vec!["ca.test".to_string()])
            .unwrap()
            .cert
            .pem()
    }

    fn node(host_ca_pem: &str) -> AgentIdentity {
        AgentIdentity {
            meta: IdentityFile {
                host_id: "h".into(),
                cluster: "c".into(),
                role: "node".into(),
                expires_unix: 0,
                host_name: String::new(),
            },
            cert: ClientCert {
                chain_pem: pem(),
                key_pem: String::new(),
            },
            host_ca_pem: host_ca_pem.to_string(),
            ssh: Some(SshHostIdentity {
                private_key_openssh: String::new(),
                certificate_openssh: String::new(),
                user_ca_keys: vec!["ssh-ed25519 AAAAold hop-c-user-ca".into()],
            }),
        }
    }

    fn trust(phase: &str, host: &[String], user_keys: &[&str]) -> TrustResponse {
        TrustResponse {
            authorities: vec![
                CaTrust {
                    kind: "host".into(),
                    phase: phase.into(),
                    x509_cert_pems: host.to_vec(),
                    signer_tls_pin: "sha256:signer".into(),
                    ..Default::default()
                },
                CaTrust {
                    kind: "user".into(),
                    phase: phase.into(),
                    ssh_public_keys: user_keys.iter().map(|k| k.to_string()).collect(),
                    x509_cert_pems: vec![pem()],
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn the_ca_files_follow_the_trusted_keys_and_hosts_renew_onto_the_signer() {
        let data = std::env::temp_dir().join(format!("hop-agent-trust-{}", uuid::Uuid::new_v4()));
        ensure_dir(&data).unwrap();
        ensure_dir(&dir(&data)).unwrap();
        let (old, new) = (pem(), pem());
        let id = node(&old);
        let t = trust(
            "init",
            &[new.clone(), old.clone()],
            &["ssh-ed25519 AAAAnew x", "ssh-ed25519 AAAAold y"],
        );
        let next = follow_trust(&data, &id, &t).unwrap().expect("new trust");
        assert!(hop_net::rotation::same_certificates(
            &next.host_ca_pem,
            &[old.clone(), new.clone()]
        ));
        let saved = std::fs::read_to_string(dir(&data).join("host_ca.pem")).unwrap();
        assert_eq!(saved, next.host_ca_pem);
        assert_eq!(next.ssh.as_ref().unwrap().user_ca_keys.len(), 2);
        assert!(
            std::fs::read_to_string(dir(&data).join("ssh_user_ca.pub"))
                .unwrap()
                .contains("AAAAnew")
        );
        assert!(dir(&data).join("user_ca.pem").exists());
        // Nothing new: nothing changes.
        assert!(follow_trust(&data, &next, &t).unwrap().is_none());
        // The certificate is from no trusted key: hosts move in update_servers, not in init.
        assert_eq!(
            rotation_renewal(&next, &t, hop_platform::clock::wall()),
            None
        );
        let t = trust("update_servers", &[new, old], &[]);
        assert_eq!(
            rotation_renewal(&next, &t, hop_platform::clock::wall()).as_deref(),
            Some("update_servers")
        );
        let _ = std::fs::remove_dir_all(&data);
    }
}
