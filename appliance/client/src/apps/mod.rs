//! `hop apps ls|login|logout|config` and `hop proxy app`: the user's side of application access.
//!
//! Listing asks Auth for the applications the user's roles allow. An application login is a
//! certificate routed to one application ([`certificates`]); with it, `hop proxy app` carries
//! local plain-HTTP connections to an HTTP application ([`http`]), and clients such as curl reach
//! the application at its public address directly. TCP applications keep their own relay
//! ([`tcp`]), which uses the login certificate.

pub(crate) mod certificates;
mod http;
mod tcp;

use std::net::IpAddr;

use anyhow::bail;

pub use certificates::apps_dir;

use crate::cli::{AppsCommand, OutputFormat};
use crate::profile::{self, Login};
use hop_api::proto::auth_public_client::AuthPublicClient;
use hop_api::proto::{App, ListAppsRequest};
use hop_net::connect::{status_error, tls_channel};

pub async fn run(cmd: AppsCommand) -> anyhow::Result<()> {
    match cmd {
        AppsCommand::Ls(out) => ls(out.format).await,
        AppsCommand::Login { name, ttl } => {
            let saved = certificates::login(&name, ttl).await?;
            println!("{}", certificates::logged_in_message(&saved));
            Ok(())
        }
        AppsCommand::Logout { name } => certificates::logout(name),
        AppsCommand::Config { name, format } => certificates::config(name, format),
    }
}

/// The applications the current login may reach.
pub(crate) async fn list(login: &Login) -> anyhow::Result<Vec<App>> {
    let channel = tls_channel(&login.profile.proxy, &login.trust, Some(&login.cert)).await?;
    Ok(AuthPublicClient::new(channel)
        .list_apps(ListAppsRequest {})
        .await
        .map_err(status_error)?
        .into_inner()
        .apps)
}

/// Whether an announced uri is an HTTP application's (by its scheme).
pub(crate) fn is_http(uri: &str) -> bool {
    let scheme = uri.split_once("://").map_or("", |(s, _)| s);
    scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")
}

pub async fn ls(format: OutputFormat) -> anyhow::Result<()> {
    let login = profile::current_login()?;
    let apps = list(&login).await?;
    let logged_in = certificates::logged_in_names();
    if format != OutputFormat::Text {
        let v: Vec<_> = apps
            .iter()
            .map(|a| {
                serde_json::json!({
                    "name": a.name, "uri": a.uri, "labels": a.labels, "agent_id": a.agent_id,
                    "kind": if is_http(&a.uri) { "http" } else { "tcp" },
                    "logged_in": logged_in.contains(&a.name),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if apps.is_empty() {
        println!("No applications you can reach are connected.");
        return Ok(());
    }
    let name = |a: &App| {
        if logged_in.contains(&a.name) {
            format!("> {}", a.name)
        } else {
            a.name.clone()
        }
    };
    let w = apps.iter().map(|a| name(a).len()).max().unwrap_or(4).max(4);
    println!("{:<w$}  KIND  LABELS", "NAME");
    for a in &apps {
        let mut labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        let kind = if is_http(&a.uri) { "http" } else { "tcp" };
        println!("{:<w$}  {kind:<4}  {}", name(a), labels.join(","));
    }
    Ok(())
}

/// `hop proxy app NAME`: an HTTP application through its certificate (logging in to it first
/// when there is no valid one), a TCP application as before.
pub async fn proxy_app(app: String, bind: IpAddr, port: u16) -> anyhow::Result<()> {
    if let Some(saved) = certificates::valid_saved(&app)
        && is_http(&saved.uri)
    {
        return http::proxy_http_app(saved, bind, port).await;
    }
    let login = profile::current_login()?;
    let apps = list(&login).await?;
    let Some(found) = apps.iter().find(|a| a.name == app) else {
        bail!(
            "application {app:?} is not among the applications you can reach (`hop apps ls`): it does not exist, its agent is offline, or your roles deny it"
        );
    };
    if is_http(&found.uri) {
        let saved = certificates::login(&app, None).await?;
        return http::proxy_http_app(saved, bind, port).await;
    }
    tcp::proxy_tcp_app(app, bind, port).await
}
