//! Kubernetes certificates on disk: what `hop kube login` saves, `hop kube credentials` reads
//! and renews, and `hop kube logout` removes.
//!
//! A Kubernetes login is a user certificate routed to one kube cluster (Auth's
//! `IssueKubeCertificate`). Its files (directory 0700, files 0600):
//! ```text
//! $HOP_HOME/kube/<proxy>/<user>/<name>.key    P-256 key (PKCS#8), fresh for each certificate
//! $HOP_HOME/kube/<proxy>/<user>/<name>.crt    the kube certificate (user CA)
//! $HOP_HOME/kube/<proxy>/<user>/<name>.json   where it is used: proxy, TLS name, CAs, kubeconfig
//! ```
//! This module owns those files; the only connection it opens asks Auth for a certificate
//! (after a security key's tap when a role sets `require_session_mfa`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use serde::{Deserialize, Serialize};

use crate::profile::{Login, Paths};
use hop_api::proto::KubeCertificateRequest;
use hop_api::proto::kube_access_client::KubeAccessClient;
use hop_net::connect::{status_error, tls_channel_with_peer};
use hop_net::files::{ensure_dir, write_private};
use hop_platform::clock;

/// One Kubernetes login, as saved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KubeLogin {
    /// The kube cluster's name, as `hop kube ls` lists it.
    pub name: String,
    /// The kubeconfig entries' name: `<hop cluster>-<name>`.
    pub context: String,
    /// The proxy's public `host:port` (the kubeconfig's server is `https://` this).
    pub proxy_addr: String,
    /// The TLS server name kubectl sends: `kube.PROXYHOST`.
    pub tls_server_name: String,
    /// The CAs that sign the proxy's kube certificate.
    pub trusted_cas_pem: String,
    pub expires_unix: i64,
    /// The kubeconfig file holding the entries (empty until they are written).
    #[serde(default)]
    pub kubeconfig: PathBuf,
    /// A per-session MFA certificate (one minute, marked for this cluster): kubectl reuses it
    /// within its minute, and a tap renews it.
    #[serde(default)]
    pub session_mfa: bool,
}

/// A certificate and its key, PEM.
pub struct KeyPair {
    pub cert_pem: String,
    pub key_pem: String,
}

struct Files {
    key: PathBuf,
    crt: PathBuf,
    meta: PathBuf,
}

/// The directory of one login's Kubernetes files.
pub fn kube_dir(paths: &Paths) -> PathBuf {
    paths
        .home
        .join("kube")
        .join(paths.proxy.replace(':', "_"))
        .join(&paths.user)
}

fn files(paths: &Paths, name: &str) -> Files {
    let dir = kube_dir(paths);
    Files {
        key: dir.join(format!("{name}.key")),
        crt: dir.join(format!("{name}.crt")),
        meta: dir.join(format!("{name}.json")),
    }
}

/// A kube cluster's name becomes a file name and part of a kubeconfig entry's name.
pub fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && !name.starts_with(['-', '.']);
    if !ok {
        bail!(
            "invalid Kubernetes cluster name {name:?}: expected letters, digits, '-', '_' or '.', not starting with '-' or '.' (`hop kube ls` lists them)"
        );
    }
    Ok(())
}

pub fn now_unix() -> i64 {
    clock::wall()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Asks Auth for a certificate for kube cluster `name` with a fresh key and saves both; keeps
/// the saved kubeconfig path of an earlier login. Returns the login and the pair.
pub async fn issue(
    login: &Login,
    paths: &Paths,
    name: &str,
    ttl: Option<Duration>,
) -> anyhow::Result<(KubeLogin, KeyPair)> {
    check_name(name)?;
    let key = hop_ca::generate_x509_keypair(&mut rand::rng()).map_err(|e| anyhow!("{e}"))?;
    // Under a role's require_session_mfa: a tap, and a one-minute certificate for this cluster.
    let (r, session_mfa) =
        match crate::mfa::session::kube_route(login, name, &key.public_spki_der).await? {
            Some(r) => (r, true),
            None => (
                request(login, name, &key.public_spki_der, ttl).await?,
                false,
            ),
        };
    let f = files(paths, name);
    ensure_dir(&kube_dir(paths))?;
    write_private(&f.key, key.private_pkcs8_pem.as_bytes())?;
    write_private(&f.crt, r.tls_certificate_pem.as_bytes())?;
    let kubeconfig = saved(paths, name).map(|l| l.kubeconfig).unwrap_or_default();
    let saved = KubeLogin {
        name: name.to_string(),
        context: format!("{}-{name}", login.profile.cluster),
        proxy_addr: if r.proxy_addr.is_empty() {
            login.profile.proxy.clone()
        } else {
            r.proxy_addr
        },
        tls_server_name: r.tls_server_name,
        trusted_cas_pem: r.trusted_cas_pem,
        expires_unix: r.expires_unix,
        kubeconfig,
        session_mfa,
    };
    save(paths, &saved)?;
    let pair = KeyPair {
        cert_pem: r.tls_certificate_pem,
        key_pem: key.private_pkcs8_pem.clone(),
    };
    Ok((saved, pair))
}

/// Asks Auth, as `login`, for a certificate for kube cluster `name` and the key whose
/// SubjectPublicKeyInfo is `spki_der` (what `hop kube login` saves and a bot's `kubernetes`
/// output writes into its kubeconfig).
pub(crate) async fn request(
    login: &Login,
    name: &str,
    spki_der: &[u8],
    ttl: Option<Duration>,
) -> anyhow::Result<hop_api::proto::KubeCertificateResponse> {
    check_name(name)?;
    let (channel, peer) =
        tls_channel_with_peer(&login.profile.proxy, &login.trust, Some(&login.cert)).await?;
    crate::trust::refresh_trust_or_warn(login, peer.get().as_deref()).await;
    let r = KubeAccessClient::new(channel)
        .issue_kube_certificate(KubeCertificateRequest {
            kube_cluster: name.to_string(),
            tls_public_key: spki_der.to_vec(),
            ttl_seconds: ttl.map_or(0, |t| t.as_secs().max(1)),
        })
        .await
        .map_err(status_error)
        .with_context(|| format!("logging in to Kubernetes cluster {name:?}"))?
        .into_inner();
    if r.tls_server_name.is_empty() || r.tls_certificate_pem.is_empty() {
        bail!("Auth's answer for Kubernetes cluster {name:?} lacks a certificate or a TLS name");
    }
    Ok(r)
}

pub fn save(paths: &Paths, l: &KubeLogin) -> anyhow::Result<()> {
    let f = files(paths, &l.name);
    write_private(&f.meta, serde_json::to_string_pretty(l)?.as_bytes())?;
    Ok(())
}

/// The saved login for kube cluster `name`.
pub fn saved(paths: &Paths, name: &str) -> anyhow::Result<KubeLogin> {
    check_name(name)?;
    let f = files(paths, name);
    let text = std::fs::read_to_string(&f.meta).map_err(|_| {
        anyhow!("not logged in to Kubernetes cluster {name:?}: run `hop kube login {name}`")
    })?;
    serde_json::from_str(&text).with_context(|| format!("corrupt {}", f.meta.display()))
}

/// Every saved Kubernetes login of `paths`' login, by name.
pub fn all_saved(paths: &Paths) -> Vec<KubeLogin> {
    crate::profile::saved_login_names(&kube_dir(paths))
        .iter()
        .filter_map(|n| saved(paths, n).ok())
        .collect()
}

/// The saved certificate and key of kube cluster `name`.
pub fn key_pair(paths: &Paths, name: &str) -> anyhow::Result<KeyPair> {
    let f = files(paths, name);
    let read = |p: &Path, what: &str| {
        std::fs::read_to_string(p).with_context(|| format!("reading {what} ({})", p.display()))
    };
    Ok(KeyPair {
        cert_pem: read(&f.crt, "the Kubernetes certificate")?,
        key_pem: read(&f.key, "its key")?,
    })
}

/// Removes kube cluster `name`'s files.
pub fn remove(paths: &Paths, name: &str) -> anyhow::Result<()> {
    let f = files(paths, name);
    crate::profile::remove_files(&[&f.key, &f.crt, &f.meta])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_safe_file_names() {
        for ok in ["dev", "prod-eu", "a_b", "k8s.example.com", "X1"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "../x",
            "a/b",
            ".hidden",
            "-x",
            "a b",
            "a\0b",
            &"y".repeat(254),
        ] {
            let e = check_name(bad).unwrap_err().to_string();
            assert!(e.contains("invalid Kubernetes cluster name"), "{bad}: {e}");
        }
    }

    #[test]
    fn logins_are_saved_private_and_listed_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path().to_path_buf(), "127.0.0.1:3080", "alice");
        assert!(all_saved(&paths).is_empty());
        let e = saved(&paths, "dev").unwrap_err().to_string();
        assert!(e.contains("run `hop kube login dev`"), "{e}");
        ensure_dir(&kube_dir(&paths)).unwrap();
        for name in ["prod", "dev"] {
            let l = KubeLogin {
                name: name.into(),
                context: format!("c-{name}"),
                proxy_addr: "localhost:3080".into(),
                tls_server_name: "kube.localhost".into(),
                trusted_cas_pem: "CA".into(),
                expires_unix: 1,
                kubeconfig: "/k".into(),
                session_mfa: false,
            };
            save(&paths, &l).unwrap();
            assert_eq!(saved(&paths, name).unwrap(), l);
        }
        let names: Vec<_> = all_saved(&paths).into_iter().map(|l| l.name).collect();
        assert_eq!(names, ["dev", "prod"]);
        let meta = files(&paths, "dev").meta;
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&meta).unwrap().mode() & 0o777, 0o600);
        remove(&paths, "dev").unwrap();
        remove(&paths, "dev").unwrap();
        assert_eq!(all_saved(&paths).len(), 1);
    }
}
