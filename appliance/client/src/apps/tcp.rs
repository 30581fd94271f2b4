//! `hop proxy app NAME` for a TCP application.
//!
//! This module owns the user's side of a TCP application session: a local listener, and for each
//! local connection a TLS connection to the proxy (ALPN `hop-tcp`, the login certificate), a Dial
//! naming the application, the proxy's answer (an error is shown to the user and the local
//! connection closed), then the byte relay.

use std::net::IpAddr;
use std::sync::Arc;

use anyhow::{Context, bail};
use tokio::net::TcpListener;

use crate::profile;
use hop_api::proto::ListAppsRequest;
use hop_api::proto::auth_public_client::AuthPublicClient;
use hop_net::connect::{open_session, status_error, tls_channel};
use hop_net::trust::client_config;
use hop_net::tunnel::{ALPN_TCP, relay};

pub async fn proxy_tcp_app(app: String, bind: IpAddr, port: u16) -> anyhow::Result<()> {
    let login = Arc::new(profile::current_login()?);
    let cfg = Arc::new(client_config(&login.trust, Some(&login.cert), ALPN_TCP)?);
    let listener = TcpListener::bind((bind, port))
        .await
        .with_context(|| format!("cannot listen on {bind}:{port}"))?;
    let local = listener.local_addr()?;
    // Check the application is known and allowed before announcing the port (without dialing it:
    // a probe connection would have side effects on the application).
    let channel = tls_channel(&login.profile.proxy, &login.trust, Some(&login.cert)).await?;
    let apps = AuthPublicClient::new(channel)
        .list_apps(ListAppsRequest {})
        .await
        .map_err(status_error)?
        .into_inner()
        .apps;
    if !apps.iter().any(|a| a.name == app) {
        bail!(
            "application {app:?} is not among the applications you can reach (`hop apps ls`): it does not exist, its agent is offline, or your roles deny it"
        );
    }
    {
        // A long-running command must not die because whoever started it stopped reading.
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "Proxying connections to {local} to application {app:?} through {}",
            login.profile.proxy
        );
        let _ = writeln!(
            out,
            "Use it, for example: nc {} {}",
            local.ip(),
            local.port()
        );
        let _ = out.flush();
    }
    loop {
        let (conn, peer) = tokio::select! {
            r = listener.accept() => r?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let (login, cfg, app) = (login.clone(), cfg.clone(), app.clone());
        tokio::spawn(async move {
            let _ = conn.set_nodelay(true);
            match open_session(&login.profile.proxy, cfg, &app, peer).await {
                Ok((remote, pending)) => {
                    if let Err(e) = relay(conn, Vec::new(), remote, pending).await {
                        tracing::debug!(error = %e, "session ended with an error");
                    }
                }
                Err(e) => eprintln!("ERROR: {app}: {e}"),
            }
        });
    }
}
