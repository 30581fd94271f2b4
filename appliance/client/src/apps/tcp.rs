//! `hop proxy app NAME` for a TCP application.
//!
//! This module owns the user's side of a TCP application session: a local listener, and for each
//! local connection a TLS connection to the proxy (ALPN `hop-tcp`, the login certificate), a Dial
//! naming the application, the proxy's answer (an error is shown to the user and the local
//! connection closed), then the byte relay. Under a role's `require_session_mfa` the certificate
//! is a one-minute one marked for the application, from a security key tap ([`Certs`]): the
//! connections opened within its minute use it and go on after it; a connection after it asks
//! for a new tap.

use std::net::IpAddr;
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use tokio::net::TcpListener;

use crate::profile;
use hop_api::proto::ListAppsRequest;
use hop_api::proto::auth_public_client::AuthPublicClient;
use hop_net::connect::{open_session_by_record, status_error, tls_channel};
use hop_net::records;
use hop_net::trust::{ClientCert, client_config};
use hop_net::tunnel::ALPN_TCP;

/// How long before a marked certificate's end a new connection asks for a new tap (the
/// connection's own handshake and Dial must fit in what is left).
const MARKED_MARGIN_SECS: i64 = 10;

/// The TLS configuration each new connection to the application uses.
struct Certs {
    login: Arc<profile::Login>,
    app: String,
    /// The login certificate's (no role requires a tap).
    plain: Option<Arc<rustls::ClientConfig>>,
    /// Under per-session MFA: the latest marked certificate's, and its end (unix seconds).
    marked: tokio::sync::Mutex<Option<(Arc<rustls::ClientConfig>, i64)>>,
}

impl Certs {
    /// Asks Auth whether the application's sessions need a tap (and taps once if so).
    async fn new(login: Arc<profile::Login>, app: &str) -> anyhow::Result<Self> {
        let mut certs = Self {
            login,
            app: app.to_string(),
            plain: None,
            marked: tokio::sync::Mutex::new(None),
        };
        match certs.tap().await? {
            Some(m) => *certs.marked.get_mut() = Some(m),
            None => {
                let cfg = session_config(&certs.login.trust, &certs.login.cert)?;
                certs.plain = Some(Arc::new(cfg));
            }
        }
        Ok(certs)
    }

    /// A tap for a new marked certificate, or `None` when no role requires one.
    async fn tap(&self) -> anyhow::Result<Option<(Arc<rustls::ClientConfig>, i64)>> {
        let key = hop_ca::generate_x509_keypair(&mut rand::rng()).map_err(|e| anyhow!("{e}"))?;
        let Some(r) =
            crate::mfa::session::app_route(&self.login, &self.app, &key.public_spki_der).await?
        else {
            return Ok(None);
        };
        let cert = ClientCert {
            chain_pem: r.tls_certificate_pem,
            key_pem: key.private_pkcs8_pem.clone(),
        };
        let cfg = session_config(&self.login.trust, &cert)?;
        Ok(Some((Arc::new(cfg), r.expires_unix)))
    }

    /// The configuration for a connection opened now.
    async fn for_connection(&self) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        if let Some(plain) = &self.plain {
            return Ok(plain.clone());
        }
        let mut marked = self.marked.lock().await;
        let now = super::certificates::now_unix();
        if let Some((cfg, until)) = marked.as_ref()
            && until - now > MARKED_MARGIN_SECS
        {
            return Ok(cfg.clone());
        }
        let fresh = self.tap().await?.ok_or_else(|| {
            anyhow!("Auth no longer asks a tap for this application: run `hop proxy app` again")
        })?;
        let cfg = fresh.0.clone();
        *marked = Some(fresh);
        Ok(cfg)
    }
}

/// The TLS configuration of an application session presenting `cert`: its keys leave rustls once
/// the Dial is answered (`hop_net::records`).
fn session_config(
    trust: &hop_net::trust::Trust,
    cert: &ClientCert,
) -> Result<rustls::ClientConfig, hop_net::trust::TrustError> {
    let mut cfg = client_config(trust, Some(cert), ALPN_TCP)?;
    cfg.enable_secret_extraction = true;
    Ok(cfg)
}

pub async fn proxy_tcp_app(app: String, bind: IpAddr, port: u16) -> anyhow::Result<()> {
    let login = Arc::new(profile::current_login()?);
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
    let certs = Arc::new(Certs::new(login.clone(), &app).await?);
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
        let (login, certs, app) = (login.clone(), certs.clone(), app.clone());
        tokio::spawn(async move {
            let _ = conn.set_nodelay(true);
            let cfg = match certs.for_connection().await {
                Ok(c) => c,
                Err(e) => return eprintln!("ERROR: {app}: {e:#}"),
            };
            match open_session_by_record(&login.profile.proxy, cfg, &app, peer).await {
                Ok((remote, pending)) => {
                    if let Err(e) = records::relay_with_plain(remote, pending, conn).await {
                        tracing::debug!(error = %e, "session ended with an error");
                    }
                }
                Err(e) => eprintln!("ERROR: {app}: {e}"),
            }
        });
    }
}
