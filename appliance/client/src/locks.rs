//! `hop admin lock` and `hop admin locks ls`: locks as the operator makes and reads them.
//!
//! A lock is a `kind: lock` resource; this module builds one from the command line and sends it
//! through `CreateResources` (Auth stamps who made it and when, and voids a locked user's
//! certificates), and lists them. Removing one is `hop admin rm lock/ID`.

use anyhow::anyhow;
use hop_platform::clock;
use hop_rbac::{LockResource, LockTarget};
use tonic::transport::Channel;

use super::admin::{get_docs, print_docs, table};
use crate::cli::{LockArgs, LocksCommand, Output, OutputFormat};
use hop_api::proto::CreateResourcesRequest;
use hop_api::proto::auth_admin_client::AuthAdminClient;
use hop_config::parse_duration;
use hop_net::connect::status_error;

/// Creates the lock `args` describe and prints its id.
pub async fn lock(c: &mut AuthAdminClient<Channel>, args: LockArgs) -> anyhow::Result<()> {
    let target = LockTarget {
        user: args.user,
        role: args.role,
        login: args.login,
        server_id: args.server_id,
        access_request: args.access_request,
        bot: args.bot,
    };
    let id = uuid::Uuid::new_v4().to_string();
    let mut lock = LockResource::new(&id, target, args.message.as_deref().unwrap_or(""), "");
    if let Some(ttl) = &args.ttl {
        let ttl = parse_duration(ttl).map_err(|e| anyhow!("--ttl: {e}"))?;
        lock.spec.expires = Some((clock::wall() + ttl).into());
    }
    lock.validate().map_err(|e| anyhow!("{e}"))?;
    c.create_resources(CreateResourcesRequest {
        yaml: hop_rbac::to_yaml(&hop_rbac::Resource::Lock(lock.clone())),
        source: "hop admin lock".into(),
        force: false,
    })
    .await
    .map_err(status_error)?;
    println!(
        "Locked {} (lock {id}); remove it with `hop admin rm lock/{id}`",
        lock.spec.target.describe()
    );
    Ok(())
}

/// `hop admin locks ls`.
pub async fn locks(c: &mut AuthAdminClient<Channel>, cmd: LocksCommand) -> anyhow::Result<()> {
    let LocksCommand::Ls(Output { format }) = cmd;
    let docs = get_docs(c, "lock", "").await?;
    if format != OutputFormat::Text {
        return print_docs(&docs, format);
    }
    let rows: Vec<Vec<String>> = docs
        .iter()
        .filter_map(|d| serde_json::from_value::<LockResource>(d.clone()).ok())
        .map(|l| {
            vec![
                l.metadata.name.clone(),
                l.spec.target.describe(),
                l.spec.message.clone(),
                l.expires()
                    .map(|e| hop_api::timestamps::rfc3339(e.into()))
                    .unwrap_or_else(|| "never".into()),
                l.spec.created_by.clone(),
            ]
        })
        .collect();
    table(&["ID", "TARGET", "MESSAGE", "EXPIRES", "CREATED BY"], &rows);
    Ok(())
}
