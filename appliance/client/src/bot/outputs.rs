//! The bot's outputs: files other programs use, written from the bot's identity after each join
//! or renewal.
//!
//! `identity` writes a `$HOP_HOME` layout (so that `HOP_HOME=DIR hop ls`, `hop --identity
//! DIR/identity ls` and `hop proxy ssh` use the bot's identity), the `identity` file, `ssh_config` (what `hop config` prints for it) and `known_hosts`.
//! `database` asks Auth for a certificate routed to one database and writes `tls.crt`, `tls.key`,
//! `tls.cas` and a libpq `conninfo`. `application` writes `tls.crt`, `tls.key` and `tls.cas`
//! routed to one application (for `curl --cert` at `https://NAME.PROXYHOST`); `kubernetes` a
//! `kubeconfig.yaml` of its own with the routed certificate and key in it (kubectl reads it at
//! each run, so no credential plugin is needed). `ssh_host` writes a host key, its certificate
//! from the host CA (valid as long as the bot's own certificate) and the user CA keys a stock
//! sshd serving as an agentless node trusts; sshd reads them when it starts or is sent SIGHUP.
//! `spiffe-svid` is `svid`'s. Every file is 0600, written through a temporary file, fsync
//! and rename; keys are written before the certificates that name them and never change between
//! renewals of one bot process, so a reader never sees a mismatched pair.

use std::path::Path;

use anyhow::{Context, anyhow};

use super::config::Output;
use super::identity::{BotIdentity, sync_dir};
use crate::profile::{self, Paths};
use hop_api::proto::DatabaseRouteRequest;
use hop_net::files::{ensure_dir, write_private};

/// Keys a bot process made for its database outputs, by destination.
#[derive(Debug, Default)]
pub struct OutputKeys {
    db: std::collections::BTreeMap<std::path::PathBuf, std::sync::Arc<hop_ca::X509KeyPair>>,
    svid: std::collections::BTreeMap<std::path::PathBuf, std::sync::Arc<hop_ca::X509KeyPair>>,
    app: std::collections::BTreeMap<std::path::PathBuf, std::sync::Arc<hop_ca::X509KeyPair>>,
    kube: std::collections::BTreeMap<std::path::PathBuf, std::sync::Arc<hop_ca::X509KeyPair>>,
    ssh_host: std::collections::BTreeMap<std::path::PathBuf, std::sync::Arc<hop_ca::SshKeyPair>>,
}

/// The key of the output in `dir` from `keys`, made on first use.
fn key_for(
    keys: &mut std::collections::BTreeMap<std::path::PathBuf, std::sync::Arc<hop_ca::X509KeyPair>>,
    dir: &Path,
) -> anyhow::Result<std::sync::Arc<hop_ca::X509KeyPair>> {
    if let Some(k) = keys.get(dir) {
        return Ok(k.clone());
    }
    let k = std::sync::Arc::new(
        hop_ca::generate_x509_keypair(&mut rand::rng()).map_err(|e| anyhow!("{e}"))?,
    );
    keys.insert(dir.to_path_buf(), k.clone());
    Ok(k)
}

/// Writes every output for `id`; the first failure is returned (the other outputs are still
/// attempted, and the last good files stay in place).
pub async fn write_all(
    outputs: &[Output],
    id: &BotIdentity,
    keys: &mut OutputKeys,
) -> anyhow::Result<()> {
    let mut first_err = None;
    for o in outputs {
        let r = match o {
            Output::Identity { dir } => {
                identity(dir, id).with_context(|| format!("identity output {}", dir.display()))
            }
            Output::Database {
                dir,
                service,
                username,
                database,
            } => database_output(dir, id, keys, (service, username, database))
                .await
                .with_context(|| format!("database output {}", dir.display())),
            Output::SpiffeSvid { dir, path } => match key_for(&mut keys.svid, dir) {
                Ok(key) => super::svid::write_svid(dir, path, id, &key).await,
                Err(e) => Err(e),
            }
            .with_context(|| format!("spiffe-svid output {}", dir.display())),
            Output::Application { dir, app } => application_output(dir, id, keys, app)
                .await
                .with_context(|| format!("application output {}", dir.display())),
            Output::Kubernetes { dir, cluster } => kubernetes_output(dir, id, keys, cluster)
                .await
                .with_context(|| format!("kubernetes output {}", dir.display())),
            Output::SshHost { dir, principals } => ssh_host_output(dir, id, keys, principals)
                .await
                .with_context(|| format!("ssh_host output {}", dir.display())),
        };
        if let Err(e) = r {
            tracing::error!(error = %format!("{e:#}"), "cannot write an output; the last good files stay");
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// The bot's identity in `dir` as a `$HOP_HOME`, with `ssh_config` and `known_hosts`.
fn identity(dir: &Path, id: &BotIdentity) -> anyhow::Result<()> {
    let p = &id.login.profile;
    let out = Paths::new(dir.to_path_buf(), &p.proxy, &p.user);
    ensure_dir(dir)?;
    ensure_dir(&out.keys_dir())?;
    for (from, to) in [
        (id.paths.ssh_key(), out.ssh_key()),
        (id.paths.ssh_pub(), out.ssh_pub()),
        (id.paths.tls_key(), out.tls_key()),
        (id.paths.cas(), out.cas()),
        (id.paths.known_hosts(), out.known_hosts()),
        (id.paths.ssh_cert(), out.ssh_cert()),
        (id.paths.tls_cert(), out.tls_cert()),
    ] {
        copy_private(&from, &to)?;
    }
    // The digest of the CAs copied above, so that `hop --identity` refreshes them when stale.
    if id.paths.trust_digest().exists() {
        copy_private(&id.paths.trust_digest(), &out.trust_digest())?;
    }
    copy_private(&id.paths.known_hosts(), &dir.join("known_hosts"))?;
    profile::save_profile(dir, p)?;
    let marker = profile::IdentityFile {
        version: 1,
        proxy: p.proxy.clone(),
        user: p.user.clone(),
        cluster: p.cluster.clone(),
    };
    write_private(
        &dir.join(profile::IDENTITY_FILE),
        serde_json::to_string_pretty(&marker)?.as_bytes(),
    )?;
    let config = crate::ssh::ssh_config_for(dir, &p.proxy, &p.user, &p.cluster)?;
    write_private(&dir.join("ssh_config"), config.as_bytes())?;
    sync_dir(&out.keys_dir());
    sync_dir(dir);
    Ok(())
}

/// Copies `from` to `to` (0600, atomically), unless `to` holds the same bytes already.
fn copy_private(from: &Path, to: &Path) -> anyhow::Result<()> {
    let data = std::fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    if std::fs::read(to).is_ok_and(|old| old == data) {
        return Ok(());
    }
    Ok(write_private(to, &data)?)
}

/// A certificate routed to database `service` as `user` on `name`, for libpq.
async fn database_output(
    dir: &Path,
    id: &BotIdentity,
    keys: &mut OutputKeys,
    (service, user, name): (&str, &str, &str),
) -> anyhow::Result<()> {
    let key = key_for(&mut keys.db, dir)?;
    let r = crate::db::issue_route(
        &id.login,
        DatabaseRouteRequest {
            service: service.to_string(),
            db_user: user.to_string(),
            db_name: name.to_string(),
            tls_public_key: key.public_spki_der.clone(),
        },
    )
    .await?;
    write_tls_triple(
        dir,
        &key.private_pkcs8_pem,
        &r.trusted_cas_pem,
        &r.tls_certificate_pem,
    )?;
    let (crt, key_path, cas) = (
        dir.join("tls.crt"),
        dir.join("tls.key"),
        dir.join("tls.cas"),
    );
    let (host, port) = hop_net::connect::split_host_port(&id.login.profile.proxy)?;
    let conninfo = crate::db::libpq_conninfo(&crate::db::LibpqFiles {
        host: &host,
        port,
        root: &cas,
        cert: &crt,
        key: &key_path,
        db_user: user,
        db_name: name,
    });
    write_private(&dir.join("conninfo"), format!("{conninfo}\n").as_bytes())?;
    sync_dir(dir);
    Ok(())
}

/// Writes `tls.key` (when it changed), `tls.cas`, then `tls.crt`: the key first, so that a
/// reader never sees a certificate for a key not yet there.
fn write_tls_triple(dir: &Path, key_pem: &str, cas_pem: &str, crt_pem: &str) -> anyhow::Result<()> {
    ensure_dir(dir)?;
    let key_path = dir.join("tls.key");
    if std::fs::read(&key_path).ok().as_deref() != Some(key_pem.as_bytes()) {
        write_private(&key_path, key_pem.as_bytes())?;
    }
    write_private(&dir.join("tls.cas"), cas_pem.as_bytes())?;
    write_private(&dir.join("tls.crt"), crt_pem.as_bytes())?;
    Ok(())
}

/// A certificate routed to application `app`.
async fn application_output(
    dir: &Path,
    id: &BotIdentity,
    keys: &mut OutputKeys,
    app: &str,
) -> anyhow::Result<()> {
    let key = key_for(&mut keys.app, dir)?;
    let r = crate::apps::certificates::issue(&id.login, app, &key.public_spki_der, None).await?;
    write_tls_triple(
        dir,
        &key.private_pkcs8_pem,
        &r.trusted_cas_pem,
        &r.tls_certificate_pem,
    )?;
    sync_dir(dir);
    Ok(())
}

/// `kubeconfig.yaml` for kube cluster `cluster`, written whole at each renewal.
async fn kubernetes_output(
    dir: &Path,
    id: &BotIdentity,
    keys: &mut OutputKeys,
    cluster: &str,
) -> anyhow::Result<()> {
    use crate::kube::kubeconfig;
    let key = key_for(&mut keys.kube, dir)?;
    let r =
        crate::kube::certificates::request(&id.login, cluster, &key.public_spki_der, None).await?;
    let proxy = if r.proxy_addr.is_empty() {
        id.login.profile.proxy.clone()
    } else {
        r.proxy_addr
    };
    let doc = kubeconfig::embedded(&kubeconfig::Embedded {
        name: format!("{}-{cluster}", id.login.profile.cluster),
        server: format!("https://{proxy}"),
        tls_server_name: r.tls_server_name,
        ca_pem: r.trusted_cas_pem,
        cert_pem: r.tls_certificate_pem,
        key_pem: key.private_pkcs8_pem.clone(),
    });
    let text = kubeconfig::render(&doc).map_err(|e| anyhow!("{e}"))?;
    ensure_dir(dir)?;
    write_private(&dir.join("kubeconfig.yaml"), text.as_bytes())?;
    sync_dir(dir);
    Ok(())
}

/// `ssh_host`, `ssh_host.pub`, `ssh_host-cert.pub` and `ssh_host-user-ca.pub` for a stock sshd
/// named `principals` (the first is the node's name). Needs a role allowing `host_cert`
/// `create`.
async fn ssh_host_output(
    dir: &Path,
    id: &BotIdentity,
    keys: &mut OutputKeys,
    principals: &[String],
) -> anyhow::Result<()> {
    use hop_api::proto::SignOpensshHostRequest;
    use hop_api::proto::openssh_nodes_client::OpensshNodesClient;
    let key = match keys.ssh_host.get(dir) {
        Some(k) => k.clone(),
        None => {
            let k = std::sync::Arc::new(
                hop_ca::generate_ssh_keypair(&mut rand::rng()).map_err(|e| anyhow!("{e}"))?,
            );
            keys.ssh_host.insert(dir.to_path_buf(), k.clone());
            k
        }
    };
    let login = &id.login;
    let channel =
        hop_net::connect::tls_channel(&login.profile.proxy, &login.trust, Some(&login.cert))
            .await?;
    let r = OpensshNodesClient::new(channel)
        .sign_openssh_host(SignOpensshHostRequest {
            names: principals.to_vec(),
            ssh_public_key: key.public_openssh.clone(),
            ttl_seconds: id.lifetime().as_secs().max(60),
        })
        .await
        .map_err(hop_net::connect::status_error)
        .context("asking Auth for a host certificate (the bot's roles need `host_cert` `create`)")?
        .into_inner();
    ensure_dir(dir)?;
    let key_path = dir.join("ssh_host");
    if std::fs::read(&key_path).ok().as_deref() != Some(key.private_openssh.as_bytes()) {
        write_private(&key_path, key.private_openssh.as_bytes())?;
    }
    for (name, text) in [
        ("ssh_host.pub", format!("{}\n", key.public_openssh.trim())),
        ("ssh_host-user-ca.pub", r.trusted_user_ca_keys.clone()),
        (
            "ssh_host-cert.pub",
            format!("{}\n", r.ssh_host_certificate.trim()),
        ),
    ] {
        write_private(&dir.join(name), text.as_bytes())?;
    }
    sync_dir(dir);
    Ok(())
}
