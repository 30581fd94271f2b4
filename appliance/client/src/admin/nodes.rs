//! `hop admin nodes` and `hop admin inventory`: agentless OpenSSH nodes registered by hand, and
//! the agents connected to the cluster (with those nodes, where only nodes are asked for).

use std::collections::BTreeMap;

use anyhow::{anyhow, bail};
use tonic::transport::Channel;

use super::{doc_name, get_docs, table};
use crate::cli::{NodesCommand, Output, OutputFormat};
use hop_api::proto::auth_admin_client::AuthAdminClient;
use hop_api::proto::{Agent, CreateResourcesRequest, DeleteResourceRequest, ListInventoryRequest};
use hop_api::timestamps::rfc3339_unix as ts;
use hop_net::connect::status_error;

pub(super) async fn run(c: &mut AuthAdminClient<Channel>, cmd: NodesCommand) -> anyhow::Result<()> {
    match cmd {
        NodesCommand::Add {
            openssh,
            name,
            addr,
            labels,
        } => add_openssh(c, openssh, &name, &addr, labels.as_deref()).await,
        NodesCommand::Rm { name } => remove(c, &name).await,
        NodesCommand::Ls(out) => list(c, out, true).await,
    }
}

/// `hop admin inventory ls`: every connected agent.
pub(super) async fn inventory(c: &mut AuthAdminClient<Channel>, out: Output) -> anyhow::Result<()> {
    list(c, out, false).await
}

async fn add_openssh(
    c: &mut AuthAdminClient<Channel>,
    openssh: bool,
    name: &str,
    addr: &str,
    labels: Option<&str>,
) -> anyhow::Result<()> {
    if !openssh {
        bail!(
            "only agentless OpenSSH nodes are registered (--openssh); node agents join with a token: `hop admin tokens add --type node`"
        );
    }
    let node = hop_rbac::NodeResource::openssh(name, addr, parse_labels(labels)?);
    node.validate().map_err(|e| anyhow!("{e}"))?;
    c.create_resources(CreateResourcesRequest {
        yaml: hop_rbac::to_yaml(&hop_rbac::Resource::Node(node)),
        source: "hop admin nodes add".into(),
        force: false,
    })
    .await
    .map_err(status_error)?;
    println!(
        "OpenSSH node {name} ({addr}) registered. Its sshd needs `hop admin auth sign --format openssh --host {name} --out FILE` (HostKey, HostCertificate, TrustedUserCAKeys)."
    );
    Ok(())
}

/// `--labels k=v,k2=v2`.
fn parse_labels(labels: Option<&str>) -> anyhow::Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for part in labels.into_iter().flat_map(|l| l.split(',')) {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| anyhow!("--labels: {part:?} is not key=value"))?;
        map.insert(k.to_string(), v.to_string());
    }
    Ok(map)
}

async fn remove(c: &mut AuthAdminClient<Channel>, name: &str) -> anyhow::Result<()> {
    c.delete_resource(DeleteResourceRequest {
        kind: "node".into(),
        name: name.to_string(),
    })
    .await
    .map_err(status_error)?;
    println!("OpenSSH node {name} removed");
    Ok(())
}

/// Connected agents; with `only_nodes`, the node agents and the registered OpenSSH nodes.
async fn list(
    c: &mut AuthAdminClient<Channel>,
    Output { format }: Output,
    only_nodes: bool,
) -> anyhow::Result<()> {
    let mut r = c
        .list_inventory(ListInventoryRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    let mut openssh: Vec<serde_json::Value> = Vec::new();
    if only_nodes {
        r.agents.retain(|a| a.services.iter().any(|s| s == "node"));
        openssh = get_docs(c, "node", "").await?;
    }
    if format != OutputFormat::Text {
        print_json(&r.agents, &openssh)
    } else {
        print_table(&r.agents, &openssh);
        Ok(())
    }
}

fn print_json(agents: &[Agent], openssh: &[serde_json::Value]) -> anyhow::Result<()> {
    let v: Vec<serde_json::Value> = agents
        .iter()
        .map(|a| {
            serde_json::json!({
                "host_id": a.host_id, "version": a.version, "services": a.services,
                "remote_addr": a.remote_addr, "connected": ts(a.connected_unix),
                "last_heartbeat": ts(a.last_heartbeat_unix), "pooled_data_connections": a.pooled_data_connections,
                "apps": a.apps.iter().map(|x| &x.name).collect::<Vec<_>>(),
                "proxy": a.proxy_id,
            })
        })
        .chain(openssh.iter().map(|n| {
            serde_json::json!({
                "name": n["metadata"]["name"], "services": ["openssh"],
                "addr": n["spec"]["addr"], "labels": n["metadata"]["labels"],
            })
        }))
        .collect();
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

fn print_table(agents: &[Agent], openssh: &[serde_json::Value]) {
    let openssh_rows = openssh.iter().map(|n| {
        vec![
            doc_name(n),
            "openssh".to_string(),
            n["spec"]["addr"].as_str().unwrap_or_default().to_string(),
            String::new(),
            "-".to_string(),
        ]
    });
    let rows: Vec<Vec<String>> = agents
        .iter()
        .map(|a| {
            vec![
                a.host_id.clone(),
                a.services.join(","),
                a.remote_addr.clone(),
                a.apps
                    .iter()
                    .map(|x| x.name.clone())
                    .collect::<Vec<_>>()
                    .join(","),
                ts(a.last_heartbeat_unix),
            ]
        })
        .chain(openssh_rows)
        .collect();
    table(
        &["HOST ID", "SERVICES", "ADDRESS", "APPS", "LAST HEARTBEAT"],
        &rows,
    );
}
