//! An agent's identity: joining with a token once, and the files that keep it.
//!
//! Layout under `<data_dir>/agent/` (directory 0700, files 0600): `identity.json` (host id,
//! cluster, role), `host.key` (PKCS#8), `host.crt`, `host_ca.pem`, `user_ca.pem`. A restarted agent
//! reuses them and needs no token; `renew` replaces the certificate before it expires.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use serde::{Deserialize, Serialize};

use crate::auth::proto::auth_public_client::AuthPublicClient;
use crate::auth::proto::{JoinRequest, JoinResponse, RenewHostCertificateRequest};
use crate::client::connect::{status_error, tls_channel};
use crate::client::profile::{ensure_dir, write_private};
use crate::client::trust::{ClientCert, Trust};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdentityFile {
    pub host_id: String,
    pub cluster: String,
    pub role: String,
    pub expires_unix: i64,
}

/// A loaded agent identity.
#[derive(Debug, Clone)]
pub struct AgentIdentity {
    pub meta: IdentityFile,
    pub cert: ClientCert,
    pub host_ca_pem: String,
}

impl AgentIdentity {
    pub fn expires(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(u64::try_from(self.meta.expires_unix).unwrap_or(0))
    }

    /// Trust for dialing the proxy: its certificate must chain to the cluster's host CA.
    pub fn trust(&self) -> Trust {
        Trust::CaPem(self.host_ca_pem.clone())
    }
}

fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("agent")
}

pub fn load(data_dir: &Path) -> anyhow::Result<Option<AgentIdentity>> {
    let d = dir(data_dir);
    let meta_path = d.join("identity.json");
    if !meta_path.exists() {
        return Ok(None);
    }
    let read = |name: &str| {
        std::fs::read_to_string(d.join(name))
            .with_context(|| format!("reading {}", d.join(name).display()))
    };
    let meta: IdentityFile =
        serde_json::from_str(&read("identity.json")?).context("corrupt agent identity.json")?;
    Ok(Some(AgentIdentity {
        meta,
        cert: ClientCert {
            chain_pem: read("host.crt")?,
            key_pem: read("host.key")?,
        },
        host_ca_pem: read("host_ca.pem")?,
    }))
}

/// The identity in a join or renewal answer, kept in memory only.
fn from_response(role: &str, key_pem: &str, resp: &JoinResponse) -> AgentIdentity {
    AgentIdentity {
        meta: IdentityFile {
            host_id: resp.host_id.clone(),
            cluster: resp.cluster_name.clone(),
            role: role.to_string(),
            expires_unix: resp.expires_unix,
        },
        cert: ClientCert {
            chain_pem: resp.tls_certificate_pem.clone(),
            key_pem: key_pem.to_string(),
        },
        host_ca_pem: resp.host_ca_pem.clone(),
    }
}

fn save(
    data_dir: &Path,
    role: &str,
    key_pem: &str,
    resp: &JoinResponse,
) -> anyhow::Result<AgentIdentity> {
    let d = dir(data_dir);
    ensure_dir(data_dir)?;
    ensure_dir(&d)?;
    let id = from_response(role, key_pem, resp);
    write_private(&d.join("host.key"), key_pem.as_bytes())?;
    write_private(&d.join("host.crt"), resp.tls_certificate_pem.as_bytes())?;
    write_private(&d.join("host_ca.pem"), resp.host_ca_pem.as_bytes())?;
    write_private(&d.join("user_ca.pem"), resp.user_ca_pem.as_bytes())?;
    write_private(
        &d.join("identity.json"),
        serde_json::to_string_pretty(&id.meta)?.as_bytes(),
    )?;
    Ok(id)
}

/// Joins the cluster with a token and stores the identity.
pub async fn join(
    data_dir: &Path,
    proxy: &str,
    token: &str,
    role: &str,
    trust: &Trust,
) -> anyhow::Result<AgentIdentity> {
    join_as(
        Some(data_dir),
        proxy,
        token,
        role,
        trust,
        &crate::host::host_name().unwrap_or_default(),
    )
    .await
}

/// Joins the cluster with a token as `host_name`; stores the identity under `data_dir`, or keeps
/// it in memory only without one (simulated agents of the load test).
pub async fn join_as(
    data_dir: Option<&Path>,
    proxy: &str,
    token: &str,
    role: &str,
    trust: &Trust,
    host_name: &str,
) -> anyhow::Result<AgentIdentity> {
    if token.is_empty() {
        bail!(
            "this agent has no identity yet: pass --token (from `hop admin tokens add --type {role}`)"
        );
    }
    let key = hop_ca::generate_x509_keypair(&mut rand::rng()).map_err(|e| anyhow!("{e}"))?;
    let channel = tls_channel(proxy, trust, None).await?;
    let resp = AuthPublicClient::new(channel)
        .join(JoinRequest {
            token: token.to_string(),
            role: role.to_string(),
            host_name: host_name.to_string(),
            tls_public_key: key.public_spki_der.clone(),
        })
        .await
        .map_err(status_error)
        .context("joining the cluster")?
        .into_inner();
    let id = match data_dir {
        Some(d) => save(d, role, &key.private_pkcs8_pem, &resp)?,
        None => from_response(role, &key.private_pkcs8_pem, &resp),
    };
    tracing::info!(host_id = %id.meta.host_id, cluster = %id.meta.cluster, "joined the cluster");
    Ok(id)
}

/// Replaces the host certificate with a fresh one, proving the current one.
pub async fn renew(
    data_dir: &Path,
    proxy: &str,
    current: &AgentIdentity,
) -> anyhow::Result<AgentIdentity> {
    let key = hop_ca::generate_x509_keypair(&mut rand::rng()).map_err(|e| anyhow!("{e}"))?;
    let channel = tls_channel(proxy, &current.trust(), Some(&current.cert)).await?;
    let resp = AuthPublicClient::new(channel)
        .renew_host_certificate(RenewHostCertificateRequest {
            tls_public_key: key.public_spki_der.clone(),
        })
        .await
        .map_err(status_error)
        .context("renewing the host certificate")?
        .into_inner();
    save(data_dir, &current.meta.role, &key.private_pkcs8_pem, &resp)
}
