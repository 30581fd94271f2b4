//! `hop admin create`, `get` and `rm`: any kind of resource, as YAML documents.

use std::path::Path;

use anyhow::{Context, bail};
use tonic::transport::Channel;

use super::{get_docs, print_docs};
use crate::cli::{Output, OutputFormat};
use hop_api::proto::auth_admin_client::AuthAdminClient;
use hop_api::proto::{CreateResourcesRequest, DeleteResourceRequest};
use hop_net::connect::status_error;

/// `hop admin create -f FILE` (`-` for stdin); `--force` updates what exists.
pub(super) async fn create(
    c: &mut AuthAdminClient<Channel>,
    file: &Path,
    force: bool,
) -> anyhow::Result<()> {
    let (yaml, source) = read_source(file)?;
    let r = c
        .create_resources(CreateResourcesRequest {
            yaml,
            source,
            force,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    for w in r.written {
        println!(
            "{w} has been {}",
            if force {
                "created or updated"
            } else {
                "created"
            }
        );
    }
    Ok(())
}

/// The YAML text and the name it is reported under.
fn read_source(file: &Path) -> anyhow::Result<(String, String)> {
    if file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
        return Ok((s, "<stdin>".to_string()));
    }
    Ok((
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?,
        file.display().to_string(),
    ))
}

/// `hop admin get KIND[/NAME]`: YAML unless JSON is asked for.
pub(super) async fn get(
    c: &mut AuthAdminClient<Channel>,
    resource: &str,
    Output { format }: Output,
) -> anyhow::Result<()> {
    let (kind, name) = split_kind_name(resource);
    let docs = get_docs(c, &kind, name.as_deref().unwrap_or_default()).await?;
    print_docs(
        &docs,
        if format == OutputFormat::Text {
            OutputFormat::Yaml
        } else {
            format
        },
    )
}

/// `hop admin rm KIND/NAME`.
pub(super) async fn remove(c: &mut AuthAdminClient<Channel>, resource: &str) -> anyhow::Result<()> {
    let (kind, name) = split_kind_name(resource);
    let Some(name) = name else {
        bail!("expected KIND/NAME, for example role/dev")
    };
    c.delete_resource(DeleteResourceRequest {
        kind: kind.clone(),
        name: name.clone(),
    })
    .await
    .map_err(status_error)?;
    println!("{kind}/{name} has been deleted");
    Ok(())
}

fn split_kind_name(resource: &str) -> (String, Option<String>) {
    match resource.split_once('/') {
        Some((k, n)) if !n.is_empty() => (k.to_string(), Some(n.to_string())),
        Some((k, _)) => (k.to_string(), None),
        None => (resource.to_string(), None),
    }
}
