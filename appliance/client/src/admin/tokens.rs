//! `hop admin tokens`: join tokens for agents: add (the secret shown once), list, remove.

use anyhow::anyhow;
use tonic::transport::Channel;

use super::{doc_name, get_docs, print_docs, strs, table};
use crate::cli::{Output, OutputFormat, TokensCommand};
use hop_api::proto::auth_admin_client::AuthAdminClient;
use hop_api::proto::{CreateTokenRequest, CreateTokenResponse, DeleteResourceRequest};
use hop_api::timestamps::rfc3339_unix as ts;
use hop_config::parse_duration;
use hop_net::connect::status_error;

pub(super) async fn run(
    c: &mut AuthAdminClient<Channel>,
    cmd: TokensCommand,
) -> anyhow::Result<()> {
    match cmd {
        TokensCommand::Add {
            roles,
            ttl,
            value,
            uses,
            out: Output { format },
        } => {
            let ttl = parse_duration(&ttl).map_err(|e| anyhow!("--ttl: {e}"))?;
            let r = c
                .create_token(CreateTokenRequest {
                    roles,
                    ttl_seconds: ttl.as_secs(),
                    value: value.unwrap_or_default(),
                    uses: uses.unwrap_or(0),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            print_token(&r, uses, format);
            Ok(())
        }
        TokensCommand::Ls(out) => list(c, out).await,
        TokensCommand::Rm { id } => {
            c.delete_resource(DeleteResourceRequest {
                kind: "token".into(),
                name: id.clone(),
            })
            .await
            .map_err(status_error)?;
            println!("Join token {id} has been deleted");
            Ok(())
        }
    }
}

/// A new token and its secret, shown this once.
fn print_token(r: &CreateTokenResponse, uses: Option<u32>, format: OutputFormat) {
    let uses_text = uses.map_or_else(|| "any number of".into(), |n| n.to_string());
    if format == OutputFormat::Json {
        println!(
            "{}",
            serde_json::json!({"id": r.id, "token": r.token, "roles": r.roles, "uses": uses, "expires": ts(r.expires_unix)})
        );
    } else {
        println!(
            "Join token {id} is valid until {until} for {uses_text} joins as: {roles}.\n\
             Its secret is shown this once (Hop keeps only a hash):\n\n  {secret}\n\n\
             Start an agent with the secret in a file readable only by it:\n\n  \
             hop start --roles {types} --proxy PROXY:3080 --token-file FILE\n",
            id = r.id,
            until = ts(r.expires_unix),
            roles = r.roles.join(", "),
            secret = r.token,
            types = r.roles.join(","),
        );
    }
}

async fn list(c: &mut AuthAdminClient<Channel>, Output { format }: Output) -> anyhow::Result<()> {
    let docs = get_docs(c, "token", "").await?;
    if format != OutputFormat::Text {
        return print_docs(&docs, format);
    }
    let rows: Vec<Vec<String>> = docs
        .iter()
        .map(|d| {
            vec![
                doc_name(d),
                strs(&d["spec"]["roles"]).join(","),
                d["metadata"]["expires"].as_str().unwrap_or("-").to_string(),
                d["spec"]["uses"]
                    .as_u64()
                    .map(|u| u.to_string())
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(&["ID", "TYPE", "EXPIRES", "USES LEFT"], &rows);
    Ok(())
}
