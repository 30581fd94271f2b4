//! Per-session MFA for `hop ssh`: when a role of the user sets `require_session_mfa`, Auth
//! hands out a challenge for one node and login; a tap on a security key answers it, and Auth
//! issues a one-minute SSH certificate and X.509 certificate marked for that target (new keys,
//! kept beside the login's under `keys/…/session-mfa/LOGIN@NODE/`). OpenSSH then presents the
//! SSH certificate to the node, and `hop proxy ssh` (its ProxyCommand, told by
//! `HOP_SESSION_MFA_DIR`) the X.509 one to the proxy: both check the mark.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use hop_api::proto::auth_public_client::AuthPublicClient;
use hop_api::proto::{BeginSessionMfaRequest, IssueSessionMfaCertRequest};
use hop_net::connect::{status_error, tls_channel};
use hop_net::trust::ClientCert;

use super::ceremony;
use crate::profile::Login;

/// The environment variable that points `hop proxy ssh` at a session's MFA certificate.
pub const SESSION_MFA_DIR_ENV: &str = "HOP_SESSION_MFA_DIR";

/// The files of one session's MFA certificates.
#[derive(Debug, Clone)]
pub struct SessionMfaFiles {
    pub dir: PathBuf,
}

impl SessionMfaFiles {
    #[must_use]
    pub fn ssh_key(&self) -> PathBuf {
        self.dir.join("key")
    }

    #[must_use]
    pub fn ssh_cert(&self) -> PathBuf {
        self.dir.join("key-cert.pub")
    }

    #[must_use]
    pub fn tls_key(&self) -> PathBuf {
        self.dir.join("tls.key")
    }

    #[must_use]
    pub fn tls_cert(&self) -> PathBuf {
        self.dir.join("tls.crt")
    }
}

/// The X.509 certificate `hop proxy ssh` presents: a session's MFA one when the environment
/// names it, else the login's.
pub fn proxy_cert(login: &Login) -> anyhow::Result<ClientCert> {
    let Some(dir) = std::env::var_os(SESSION_MFA_DIR_ENV) else {
        return Ok(login.cert.clone());
    };
    let files = SessionMfaFiles {
        dir: PathBuf::from(dir),
    };
    let read =
        |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    Ok(ClientCert {
        chain_pem: read(&files.tls_cert())?,
        key_pem: read(&files.tls_key())?,
    })
}

/// Asks Auth whether a session on `node` as `os_login` needs a fresh assertion; if so, taps
/// the key and writes the one-minute certificates. `None`: no role requires it.
pub async fn prepare(
    login: &Login,
    node: &str,
    os_login: &str,
) -> anyhow::Result<Option<SessionMfaFiles>> {
    let channel = tls_channel(&login.profile.proxy, &login.trust, Some(&login.cert)).await?;
    let mut client = AuthPublicClient::new(channel);
    let asked = client
        .begin_session_mfa(BeginSessionMfaRequest {
            node: node.to_string(),
            login: os_login.to_string(),
        })
        .await;
    let challenge = match asked {
        Ok(c) => c.into_inner(),
        // Admission turned the caller down (a lock, a role taken away), or the Auth is older
        // than per-session MFA: the session's own route then says why, as it would have.
        Err(s)
            if matches!(
                s.code(),
                tonic::Code::PermissionDenied | tonic::Code::Unimplemented
            ) =>
        {
            return Ok(None);
        }
        Err(s) => return Err(status_error(s).into()),
    };
    if !challenge.required {
        return Ok(None);
    }
    eprintln!("A role requires a security key tap for each session ({os_login}@{node}).");
    let origin = ceremony::pick_origin(&challenge.origins, &login.profile.proxy)?;
    let mut key = super::open()?;
    let answer = ceremony::assert(key.as_mut(), &challenge.options_json, &origin, false)?;
    let mut rng = rand::rng();
    let ssh = hop_ca::generate_ssh_keypair(&mut rng).map_err(|e| anyhow!("{e}"))?;
    let tls = hop_ca::generate_x509_keypair(&mut rng).map_err(|e| anyhow!("{e}"))?;
    let certs = client
        .issue_session_mfa_cert(IssueSessionMfaCertRequest {
            node: node.to_string(),
            login: os_login.to_string(),
            webauthn_json: answer.to_string(),
            ssh_public_key: ssh.public_openssh.clone(),
            tls_public_key: tls.public_spki_der.clone(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let files = SessionMfaFiles {
        dir: login
            .paths
            .keys_dir()
            .join("session-mfa")
            .join(format!("{os_login}@{node}")),
    };
    hop_net::files::ensure_dir(&files.dir)?;
    hop_net::files::write_private(&files.ssh_key(), ssh.private_openssh.as_bytes())?;
    hop_net::files::write_private(
        &files.ssh_cert(),
        format!("{}\n", certs.ssh_certificate.trim()).as_bytes(),
    )?;
    hop_net::files::write_private(&files.tls_key(), tls.private_pkcs8_pem.as_bytes())?;
    hop_net::files::write_private(&files.tls_cert(), certs.tls_certificate_pem.as_bytes())?;
    Ok(Some(files))
}
