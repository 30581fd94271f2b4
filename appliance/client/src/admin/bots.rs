//! `hop admin bots`: add a bot (its one-time join token shown once), list, change its recovery
//! limit, remove.

use anyhow::anyhow;
use tonic::transport::Channel;

use super::table;
use crate::cli::{BotsCommand, Output, OutputFormat};
use hop_api::proto::bots_client::BotsClient;
use hop_api::proto::{AddBotRequest, ListBotsRequest, RemoveBotRequest, UpdateBotRequest};
use hop_api::timestamps::rfc3339_unix as ts;
use hop_config::parse_duration;
use hop_net::connect::status_error;

pub(super) async fn run(ch: Channel, cmd: BotsCommand) -> anyhow::Result<()> {
    let mut c = BotsClient::new(ch);
    match cmd {
        BotsCommand::Add {
            name,
            roles,
            logins,
            ttl,
            recoveries,
            out: Output { format },
        } => {
            let ttl = parse_duration(&ttl).map_err(|e| anyhow!("--ttl: {e}"))?;
            let r = c
                .add_bot(AddBotRequest {
                    name,
                    roles,
                    logins,
                    token_ttl_seconds: ttl.as_secs(),
                    recovery_limit: recoveries,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            if format == OutputFormat::Json {
                println!(
                    "{}",
                    serde_json::json!({"name": r.name, "user": r.user, "roles": r.roles,
                        "token": r.token, "token_expires": ts(r.token_expires_unix)})
                );
                return Ok(());
            }
            println!(
                "Bot {} added (user {}, roles {}).",
                r.name,
                r.user,
                r.roles.join(",")
            );
            println!(
                "Its one-time join token, valid until {} (shown only now):",
                ts(r.token_expires_unix)
            );
            println!("  {}", r.token);
            println!("Start the bot with:");
            println!(
                "  hop bot start --proxy {} --token {} --data-dir DIR --destination-dir OUT",
                r.proxy_addr, r.token
            );
            Ok(())
        }
        BotsCommand::Ls(Output { format }) => {
            let bots = c
                .list_bots(ListBotsRequest {})
                .await
                .map_err(status_error)?
                .into_inner()
                .bots;
            if format != OutputFormat::Text {
                let docs: Vec<_> = bots
                    .iter()
                    .map(|b| {
                        serde_json::json!({"name": b.name, "roles": b.roles, "logins": b.logins,
                        "generation": b.generation, "instances": b.instances,
                        "recoveries": b.recoveries, "recovery_limit": b.recovery_limit,
                        "bound_key": b.bound_key,
                        "last_renewal": (b.last_renewal_unix > 0).then(|| ts(b.last_renewal_unix))})
                    })
                    .collect();
                return super::print_docs(&docs, format);
            }
            let rows: Vec<Vec<String>> = bots
                .iter()
                .map(|b| {
                    vec![
                        b.name.clone(),
                        b.roles.join(","),
                        if b.last_renewal_unix > 0 {
                            ts(b.last_renewal_unix)
                        } else {
                            "never".into()
                        },
                        b.generation.to_string(),
                        b.instances.to_string(),
                        if b.bound_key {
                            format!("{}/{}", b.recoveries, b.recovery_limit)
                        } else {
                            "no bound key".into()
                        },
                    ]
                })
                .collect();
            table(
                &[
                    "Name",
                    "Roles",
                    "Last renewal",
                    "Generation",
                    "Instances",
                    "Recoveries",
                ],
                &rows,
            );
            Ok(())
        }
        BotsCommand::Update { name, recoveries } => {
            c.update_bot(UpdateBotRequest {
                name: name.clone(),
                recovery_limit: recoveries,
            })
            .await
            .map_err(status_error)?;
            println!("Bot {name} may now recover {recoveries} times in all");
            Ok(())
        }
        BotsCommand::Rm { name } => {
            c.remove_bot(RemoveBotRequest { name: name.clone() })
                .await
                .map_err(status_error)?;
            println!("Bot {name} has been removed; its certificates are refused from now on");
            Ok(())
        }
    }
}
