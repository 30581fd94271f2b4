//! Per-session MFA for `hop ssh`, `hop db login|connect`, `hop kube login|credentials`, `hop
//! apps login` and `hop proxy app`: when a role of the user sets
//! `require_session_mfa`, Auth hands out a challenge for one target; a tap on a security key
//! answers it, and Auth issues one-minute certificates marked for that target.
//!
//! For SSH (one node and login): an SSH certificate and an X.509 certificate (new keys, kept
//! beside the login's under `keys/…/session-mfa/LOGIN@NODE.CLUSTER/`, the name OpenSSH knows
//! the node by). OpenSSH then presents the SSH certificate to the node, and `hop proxy ssh`
//! (its ProxyCommand) the X.509 one to the proxy: both check the mark. `hop ssh` prepares them
//! before it runs OpenSSH; OpenSSH run directly with `hop config`'s configuration has them
//! prepared by that configuration's `Match exec` line (`hop mfa session LOGIN@HOST`, which
//! reuses certificates of the same target that still have [`REUSE_MIN_LEFT`] to run).
//!
//! For a database (one service, database user and name), a kube cluster or an application: the
//! route certificate itself, which `hop db login` saves where psql takes it, `hop kube login` /
//! `hop kube credentials` where kubectl does, `hop apps login` beside the application's other
//! logins, and `hop proxy app` (a TCP application) keeps in memory for the connections it
//! opens within the minute; the proxy checks the mark against the session.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow};
use hop_api::proto::auth_public_client::AuthPublicClient;
use hop_api::proto::{
    AppCertificateResponse, BeginSessionMfaRequest, DatabaseRouteResponse,
    IssueSessionMfaCertRequest, KubeCertificateResponse, SessionMfaCert, SessionMfaDatabase,
};
use hop_net::connect::{status_error, tls_channel};
use hop_net::trust::ClientCert;

use super::ceremony;
use crate::profile::Login;

/// The environment variable that points `hop proxy ssh` at a session's MFA certificate.
pub const SESSION_MFA_DIR_ENV: &str = "HOP_SESSION_MFA_DIR";

/// How long certificates already made for a target must still run for `hop mfa session` to
/// use them instead of asking for another tap (OpenSSH may read its configuration twice, and
/// `hop ssh` prepares them before OpenSSH's `Match exec` asks again).
pub const REUSE_MIN_LEFT: Duration = Duration::from_secs(20);

/// The files of one session's MFA certificates.
#[derive(Debug, Clone)]
pub struct SessionMfaFiles {
    pub dir: PathBuf,
}

impl SessionMfaFiles {
    /// The files for `os_login` on `host` (the node's name as OpenSSH has it: `NODE.CLUSTER`).
    #[must_use]
    pub fn for_target(login: &Login, os_login: &str, host: &str) -> Self {
        Self {
            dir: login
                .paths
                .keys_dir()
                .join("session-mfa")
                .join(format!("{os_login}@{host}")),
        }
    }

    /// Whether both certificates are there and the X.509 one (issued with the SSH one, for
    /// the same minute) runs at least `left` more.
    #[must_use]
    pub fn valid_for(&self, left: Duration) -> bool {
        let Ok(pem) = std::fs::read_to_string(self.tls_cert()) else {
            return false;
        };
        let Some(end) = crate::profile::not_after(&pem) else {
            return false;
        };
        self.ssh_cert().is_file()
            && self.ssh_key().is_file()
            && end
                .duration_since(hop_platform::clock::wall())
                .unwrap_or_default()
                >= left
    }

    fn client_cert(&self) -> anyhow::Result<ClientCert> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
        };
        Ok(ClientCert {
            chain_pem: read(&self.tls_cert())?,
            key_pem: read(&self.tls_key())?,
        })
    }

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

/// The X.509 certificate `hop proxy ssh LOGIN@HOST[:PORT]` presents: a session's MFA one when
/// the environment names it or when one for that very login and host is still valid, else the
/// login's.
pub fn proxy_cert(login: &Login, target: &str) -> anyhow::Result<ClientCert> {
    if let Some(dir) = std::env::var_os(SESSION_MFA_DIR_ENV) {
        return SessionMfaFiles {
            dir: PathBuf::from(dir),
        }
        .client_cert();
    }
    let user_host = target
        .rsplit_once(':')
        .filter(|(_, port)| port.parse::<u16>().is_ok())
        .map_or(target, |(user_host, _)| user_host);
    if let Some((os_login, host)) = user_host.rsplit_once('@') {
        let files = SessionMfaFiles::for_target(login, os_login, host);
        if files.valid_for(Duration::from_secs(1)) {
            return files.client_cert();
        }
    }
    Ok(login.cert.clone())
}

/// What a session is for, as the client names it to Auth.
#[derive(Debug, Clone, Copy)]
enum Target<'a> {
    /// An SSH session: one login on one node.
    Node { node: &'a str, login: &'a str },
    /// A database session: one service, as one database user on one database name.
    Database {
        service: &'a str,
        db_user: &'a str,
        db_name: &'a str,
    },
    /// A Kubernetes session: one kube cluster.
    KubeCluster { cluster: &'a str },
    /// An application session: one application.
    App { app: &'a str },
}

impl Target<'_> {
    fn describe(&self) -> String {
        match self {
            Self::Node { node, login } => format!("{login}@{node}"),
            Self::Database {
                service,
                db_user,
                db_name,
            } => format!("database {service} as {db_user} on {db_name}"),
            Self::KubeCluster { cluster } => format!("Kubernetes cluster {cluster}"),
            Self::App { app } => format!("application {app}"),
        }
    }

    fn begin(&self) -> BeginSessionMfaRequest {
        let mut req = BeginSessionMfaRequest::default();
        match *self {
            Self::Node { node, login } => {
                req.node = node.to_string();
                req.login = login.to_string();
            }
            Self::Database { .. } => req.database = self.database(),
            Self::KubeCluster { cluster } => req.kube_cluster = cluster.to_string(),
            Self::App { app } => req.app = app.to_string(),
        }
        req
    }

    fn issue(
        &self,
        webauthn_json: String,
        ssh_public_key: String,
        tls_public_key: Vec<u8>,
    ) -> IssueSessionMfaCertRequest {
        let begin = self.begin();
        IssueSessionMfaCertRequest {
            node: begin.node,
            login: begin.login,
            database: begin.database,
            kube_cluster: begin.kube_cluster,
            app: begin.app,
            webauthn_json,
            ssh_public_key,
            tls_public_key,
        }
    }

    fn database(&self) -> Option<SessionMfaDatabase> {
        match *self {
            Self::Database {
                service,
                db_user,
                db_name,
            } => Some(SessionMfaDatabase {
                service: service.to_string(),
                db_user: db_user.to_string(),
                db_name: db_name.to_string(),
            }),
            Self::Node { .. } | Self::KubeCluster { .. } | Self::App { .. } => None,
        }
    }
}

/// Asks Auth whether a session to `target` needs a fresh assertion; if so, taps the key and
/// returns the one-minute certificates for the keys given. `None`: no role requires it.
async fn tap_for(
    login: &Login,
    target: Target<'_>,
    (ssh_public_key, tls_public_key): (&str, &[u8]),
) -> anyhow::Result<Option<SessionMfaCert>> {
    let channel = tls_channel(&login.profile.proxy, &login.trust, Some(&login.cert)).await?;
    let mut client = AuthPublicClient::new(channel);
    let asked = client.begin_session_mfa(target.begin()).await;
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
    eprintln!(
        "A role requires a security key tap for each session ({}).",
        target.describe()
    );
    let origin = ceremony::pick_origin(&challenge.origins, &login.profile.proxy)?;
    // The key is closed before the next await (an authenticator is not `Send`).
    let answer = {
        let mut key = super::open()?;
        ceremony::assert(key.as_mut(), &challenge.options_json, &origin, false)?
    };
    let certs = client
        .issue_session_mfa_cert(target.issue(
            answer.to_string(),
            ssh_public_key.to_string(),
            tls_public_key.to_vec(),
        ))
        .await
        .map_err(status_error)?
        .into_inner();
    Ok(Some(certs))
}

/// Asks Auth whether a session on `node` as `os_login` needs a fresh assertion; if so, taps
/// the key and writes the one-minute certificates for `host` (the node's name as OpenSSH has
/// it). `None`: no role requires it.
pub async fn prepare(
    login: &Login,
    (node, host): (&str, &str),
    os_login: &str,
) -> anyhow::Result<Option<SessionMfaFiles>> {
    let mut rng = rand::rng();
    let ssh = hop_ca::generate_ssh_keypair(&mut rng).map_err(|e| anyhow!("{e}"))?;
    let tls = hop_ca::generate_x509_keypair(&mut rng).map_err(|e| anyhow!("{e}"))?;
    let target = Target::Node {
        node,
        login: os_login,
    };
    let Some(certs) = tap_for(login, target, (&ssh.public_openssh, &tls.public_spki_der)).await?
    else {
        return Ok(None);
    };
    let files = SessionMfaFiles::for_target(login, os_login, host);
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

/// Asks Auth whether a session to database `service` as `db_user` on `db_name` needs a fresh
/// assertion; if so, taps the key and returns the one-minute route certificate for the key
/// `tls_public_key` (DER SubjectPublicKeyInfo), marked for that database. `None`: no role
/// requires it (the ordinary route certificate serves).
pub async fn database_route(
    login: &Login,
    (service, db_user, db_name): (&str, &str, &str),
    tls_public_key: &[u8],
) -> anyhow::Result<Option<DatabaseRouteResponse>> {
    let target = Target::Database {
        service,
        db_user,
        db_name,
    };
    Ok(tap_for(login, target, ("", tls_public_key))
        .await?
        .map(|c| DatabaseRouteResponse {
            tls_certificate_pem: c.tls_certificate_pem,
            expires_unix: c.expires_unix,
            trusted_cas_pem: c.trusted_cas_pem,
        }))
}

/// Asks Auth whether a session on kube cluster `cluster` needs a fresh assertion; if so, taps
/// the key and returns the one-minute certificate for the key `tls_public_key`, marked for
/// that cluster. `None`: no role requires it (the ordinary kube certificate serves).
pub async fn kube_route(
    login: &Login,
    cluster: &str,
    tls_public_key: &[u8],
) -> anyhow::Result<Option<KubeCertificateResponse>> {
    let target = Target::KubeCluster { cluster };
    Ok(tap_for(login, target, ("", tls_public_key))
        .await?
        .map(|c| KubeCertificateResponse {
            tls_certificate_pem: c.tls_certificate_pem,
            expires_unix: c.expires_unix,
            trusted_cas_pem: c.trusted_cas_pem,
            tls_server_name: c.kube_tls_server_name,
            proxy_addr: c.kube_proxy_addr,
        }))
}

/// Asks Auth whether a session to application `app` needs a fresh assertion; if so, taps the
/// key and returns the one-minute certificate for the key `tls_public_key`, marked for that
/// application (with its uri and public address). `None`: no role requires it (the ordinary
/// application certificate serves).
pub async fn app_route(
    login: &Login,
    app: &str,
    tls_public_key: &[u8],
) -> anyhow::Result<Option<AppCertificateResponse>> {
    let target = Target::App { app };
    Ok(tap_for(login, target, ("", tls_public_key))
        .await?
        .map(|c| AppCertificateResponse {
            tls_certificate_pem: c.tls_certificate_pem,
            expires_unix: c.expires_unix,
            trusted_cas_pem: c.trusted_cas_pem,
            uri: c.app_uri,
            public_addr: c.app_public_addr,
        }))
}

/// `hop mfa session LOGIN@NODE.CLUSTER`, which `hop config`'s `Match exec` line runs before
/// OpenSSH connects: `true` when marked certificates for that login and node are ready (made
/// now with a tap, or made earlier and still [`REUSE_MIN_LEFT`] from their end), `false` when
/// no role asks for a tap (OpenSSH then uses the login's own certificate).
pub async fn prepare_for_openssh(target: &str) -> anyhow::Result<bool> {
    let login = crate::profile::current_login()?;
    let (os_login, host) = target
        .rsplit_once('@')
        .filter(|(l, h)| !l.is_empty() && !h.is_empty())
        .ok_or_else(|| anyhow!("{target:?} is not LOGIN@NODE.{}", login.profile.cluster))?;
    if SessionMfaFiles::for_target(&login, os_login, host).valid_for(REUSE_MIN_LEFT) {
        return Ok(true);
    }
    let node = host
        .strip_suffix(&format!(".{}", login.profile.cluster))
        .unwrap_or(host);
    Ok(prepare(&login, (node, host), os_login).await?.is_some())
}
