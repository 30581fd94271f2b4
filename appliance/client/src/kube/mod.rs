//! `hop kube ls|login|logout|credentials|exec`: the user's side of Kubernetes access.
//!
//! Listing asks Auth for the kube clusters the user's roles allow. A Kubernetes login is a
//! certificate routed to one kube cluster ([`certificates`]) and a kubeconfig context whose
//! server is the proxy's one port, reached with the TLS name `kube.PROXYHOST`
//! ([`kubeconfig`]); its user entry runs `hop kube credentials` ([`credentials`]), which hands
//! kubectl the certificate and renews it, so a plain kubectl works after login. `hop kube exec`
//! runs kubectl exec on that context ([`exec`]).

pub(crate) mod certificates;
mod credentials;
mod exec;
pub(crate) mod kubeconfig;
mod lock;
mod node;

use std::time::Duration;

use anyhow::{Context, anyhow};

use crate::cli::{KubeCommand, OutputFormat};
use crate::profile::{self, Paths};
use certificates::KubeLogin;
use hop_api::proto::kube_access_client::KubeAccessClient;
use hop_api::proto::{KubeCluster, ListKubeClustersRequest};
use hop_net::connect::{status_error, tls_channel};

pub use certificates::kube_dir;

pub async fn run(cmd: KubeCommand) -> anyhow::Result<()> {
    match cmd {
        KubeCommand::Ls(out) => ls(out.format).await,
        KubeCommand::Login { name, ttl } => login(&name, ttl).await,
        KubeCommand::Logout { name } => logout(name),
        KubeCommand::Credentials { cluster, proxy } => credentials::print(cluster, proxy).await,
        KubeCommand::Exec(a) => exec::run(a),
    }
}

async fn list() -> anyhow::Result<Vec<KubeCluster>> {
    let login = profile::current_login()?;
    let channel = tls_channel(&login.profile.proxy, &login.trust, Some(&login.cert)).await?;
    Ok(KubeAccessClient::new(channel)
        .list_kube_clusters(ListKubeClustersRequest {})
        .await
        .map_err(status_error)?
        .into_inner()
        .clusters)
}

fn labels_text(c: &KubeCluster) -> String {
    let mut labels: Vec<String> = c.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    labels.sort();
    labels.join(",")
}

async fn ls(format: OutputFormat) -> anyhow::Result<()> {
    let clusters = list().await?;
    let (_, paths) = profile::current_profile(&profile::hop_home()?)?;
    let logged_in: Vec<String> = certificates::all_saved(&paths)
        .into_iter()
        .map(|l| l.name)
        .collect();
    if format != OutputFormat::Text {
        let v: Vec<_> = clusters
            .iter()
            .map(|c| {
                serde_json::json!({
                    "name": c.name, "labels": c.labels, "agent_id": c.agent_id,
                    "kubernetes_users": c.kubernetes_users,
                    "kubernetes_groups": c.kubernetes_groups,
                    "logged_in": logged_in.contains(&c.name),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if clusters.is_empty() {
        println!("No Kubernetes clusters you can reach are connected.");
        return Ok(());
    }
    let rows: Vec<[String; 4]> = clusters
        .iter()
        .map(|c| {
            let mark = if logged_in.contains(&c.name) {
                "> "
            } else {
                ""
            };
            [
                format!("{mark}{}", c.name),
                labels_text(c),
                c.kubernetes_users.join(","),
                c.kubernetes_groups.join(","),
            ]
        })
        .collect();
    print!("{}", table(["NAME", "LABELS", "USERS", "GROUPS"], &rows));
    Ok(())
}

/// Columns padded to their widest cell, two spaces apart (the last one unpadded).
fn table(head: [&str; 4], rows: &[[String; 4]]) -> String {
    let mut w = head.map(str::len);
    for r in rows {
        for (i, cell) in r.iter().enumerate() {
            w[i] = w[i].max(cell.len());
        }
    }
    let line = |cells: [&str; 4]| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i == 3 {
                l.push_str(c);
            } else {
                l.push_str(&format!("{c:<width$}  ", width = w[i]));
            }
        }
        l.trim_end().to_string() + "\n"
    };
    let mut out = line(head);
    for r in rows {
        out.push_str(&line([&r[0], &r[1], &r[2], &r[3]]));
    }
    out
}

/// The kubeconfig entries for `l`: its user runs this very `hop` as the exec plugin, for the
/// login to `proxy` under `home`.
fn entry(l: &KubeLogin, proxy: &str, home: &std::path::Path) -> anyhow::Result<kubeconfig::Entry> {
    let hop = std::env::current_exe().context("finding the path of the running hop")?;
    let home = std::path::absolute(home).unwrap_or_else(|_| home.to_path_buf());
    Ok(kubeconfig::Entry {
        name: l.context.clone(),
        server: format!("https://{}", l.proxy_addr),
        tls_server_name: l.tls_server_name.clone(),
        ca_pem: l.trusted_cas_pem.clone(),
        command: hop.display().to_string(),
        args: [
            "kube",
            "credentials",
            "--cluster",
            &l.name,
            "--proxy",
            proxy,
        ]
        .map(String::from)
        .to_vec(),
        env: vec![("HOP_HOME".into(), home.display().to_string())],
    })
}

async fn login(name: &str, ttl: Option<Duration>) -> anyhow::Result<()> {
    let home = profile::hop_home()?;
    let (p, paths) = profile::current_profile(&home)?;
    let proxy = p.proxy.clone();
    let login = profile::login_of(p, &paths)?;
    let (mut l, _) = certificates::issue(&login, &paths, name, ttl).await?;
    let path = kubeconfig::default_path()?;
    // A login made with another KUBECONFIG leaves no entries behind in that file.
    if !l.kubeconfig.as_os_str().is_empty() && l.kubeconfig != path && l.kubeconfig.exists() {
        let ctx = l.context.clone();
        kubeconfig::edit_file(&l.kubeconfig, |doc| Ok(kubeconfig::remove(doc, &ctx)))?;
    }
    let e = entry(&l, &proxy, &home)?;
    kubeconfig::edit_file(&path, |doc| kubeconfig::add(doc, &e))?;
    l.kubeconfig = path;
    certificates::save(&paths, &l)?;
    println!(
        "Logged in to Kubernetes cluster {} (certificate until {}).\nContext {} in {} is now current: try `kubectl get pods`.",
        l.name,
        hop_api::timestamps::rfc3339_unix(l.expires_unix),
        l.context,
        l.kubeconfig.display()
    );
    Ok(())
}

/// Removes `l`'s kubeconfig entries (when its file is still there), then its files.
fn forget(paths: &Paths, l: &KubeLogin) -> anyhow::Result<()> {
    if l.kubeconfig.exists() {
        kubeconfig::edit_file(&l.kubeconfig, |doc| Ok(kubeconfig::remove(doc, &l.context)))?;
    }
    certificates::remove(paths, &l.name)
}

/// Forgets every Kubernetes login of `paths`' login (`hop logout`), as far as it can.
pub fn forget_all(paths: &Paths) {
    for l in certificates::all_saved(paths) {
        if let Err(e) = forget(paths, &l) {
            eprintln!("WARNING: Kubernetes cluster {}: {e:#}", l.name);
        }
    }
    let _ = std::fs::remove_dir_all(kube_dir(paths));
}

fn logout(name: Option<String>) -> anyhow::Result<()> {
    let (_, paths) = profile::current_profile(&profile::hop_home()?)?;
    let logins = match name {
        Some(n) => vec![certificates::saved(&paths, &n)?],
        None => certificates::all_saved(&paths),
    };
    if logins.is_empty() {
        println!("Not logged in to any Kubernetes cluster.");
    }
    for l in &logins {
        forget(&paths, l).map_err(|e| anyhow!("logging out of {}: {e:#}", l.name))?;
        if l.kubeconfig.as_os_str().is_empty() {
            println!("Logged out of Kubernetes cluster {}.", l.name);
        } else {
            println!(
                "Logged out of Kubernetes cluster {} (context {} removed from {}).",
                l.name,
                l.context,
                l.kubeconfig.display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_aligns_its_columns() {
        let rows = [
            [
                "> dev".to_string(),
                "env=dev".into(),
                "alice".into(),
                "devs,viewers".into(),
            ],
            [
                "production".to_string(),
                String::new(),
                String::new(),
                "ops".into(),
            ],
        ];
        assert_eq!(
            table(["NAME", "LABELS", "USERS", "GROUPS"], &rows),
            "NAME        LABELS   USERS  GROUPS\n> dev       env=dev  alice  devs,viewers\nproduction                  ops\n"
        );
    }
}
