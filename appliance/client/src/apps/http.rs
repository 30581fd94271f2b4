//! `hop proxy app NAME` for an HTTP application: a plain-HTTP listener on loopback for tools
//! that cannot present a certificate.
//!
//! Each local connection is carried byte for byte over its own TLS connection to the proxy with
//! the application certificate, SNI `NAME.PROXYHOST` and ALPN `http/1.1` (the proxy's certificate
//! valid for that host or for the proxy's address the user logged in to); the proxy takes the
//! application from the certificate, so nothing here parses HTTP. A certificate about to expire
//! is renewed (`hop apps login` again) before the next connection. A connection the proxy cannot
//! be reached for gets a `502` naming why, never a silent close.

use std::net::IpAddr;
use std::sync::Arc;

use anyhow::{Context, anyhow};
use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

use super::certificates::{self, AppLogin, Credentials};
use hop_net::connect::{dial_tls, split_host_port};
use hop_net::trust::client_config_verified_as;
use hop_net::tunnel::relay;
use hop_platform::clock;

const ALPN_HTTP1: &[u8] = b"http/1.1";
/// Renew the certificate when it has less than this left.
const RENEW_BEFORE_SECS: i64 = 60;

/// Where and how to dial the proxy for one application.
struct Route {
    proxy_host: String,
    proxy_port: u16,
    server_name: ServerName<'static>,
    tls: Arc<rustls::ClientConfig>,
    expires_unix: i64,
    app: String,
}

impl Route {
    fn new(c: &Credentials) -> anyhow::Result<Self> {
        let (proxy_host, proxy_port) = split_host_port(&c.proxy)?;
        let (app_host, _) = split_host_port(&c.login.public_addr)?;
        let server_name = ServerName::try_from(app_host.clone())
            .map_err(|_| anyhow!("the application's address {app_host:?} is not a host name"))?;
        // SNI names the app (the proxy routes by it); the certificate must be valid for the
        // app's host or for the proxy's own address (as every other connection to it is).
        let proxy_name = ServerName::try_from(proxy_host.clone())
            .map_err(|_| anyhow!("the proxy's address {proxy_host:?} is not a host name"))?;
        let tls = client_config_verified_as(&c.trust, Some(&c.cert), ALPN_HTTP1, proxy_name)?;
        Ok(Self {
            proxy_host,
            proxy_port,
            server_name,
            tls: Arc::new(tls),
            expires_unix: c.login.expires_unix,
            app: c.login.name.clone(),
        })
    }

    fn expiring(&self) -> bool {
        self.expires_unix - RENEW_BEFORE_SECS <= now_unix()
    }
}

fn now_unix() -> i64 {
    clock::wall()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub async fn proxy_http_app(saved: AppLogin, bind: IpAddr, port: u16) -> anyhow::Result<()> {
    let creds = certificates::credentials(saved)?;
    let route = Route::new(&creds)?;
    let listener = TcpListener::bind((bind, port))
        .await
        .with_context(|| format!("cannot listen on {bind}:{port}"))?;
    let local = listener.local_addr()?;
    announce(local, &creds);
    let route = Arc::new(Mutex::new(Arc::new(route)));
    loop {
        let (conn, _) = tokio::select! {
            r = listener.accept() => r?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let route = route.clone();
        tokio::spawn(async move {
            let _ = conn.set_nodelay(true);
            match current(&route).await {
                Ok(r) => carry(conn, &r).await,
                Err(e) => refuse(conn, &format!("{e:#}")).await,
            }
        });
    }
}

/// The route, renewed first when its certificate is about to expire.
async fn current(route: &Mutex<Arc<Route>>) -> anyhow::Result<Arc<Route>> {
    let mut r = route.lock().await;
    if r.expiring() {
        let renewed = certificates::login(&r.app, None)
            .await
            .context("the application certificate expired and could not be renewed")?;
        *r = Arc::new(Route::new(&certificates::credentials(renewed)?)?);
    }
    Ok(r.clone())
}

/// Carries one local connection to the proxy.
async fn carry(conn: TcpStream, r: &Route) {
    match dial_tls(
        &r.proxy_host,
        r.proxy_port,
        r.server_name.clone(),
        r.tls.clone(),
    )
    .await
    {
        Ok(remote) => {
            if let Err(e) = relay(conn, Vec::new(), remote, Vec::new()).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        Err(e) => {
            let why = format!(
                "cannot reach application {:?} through the proxy at {}:{}: {e}",
                r.app, r.proxy_host, r.proxy_port
            );
            eprintln!("ERROR: {why}");
            refuse(conn, &why).await;
        }
    }
}

/// Answers a local client that cannot be carried with a `502` naming why.
async fn refuse(mut conn: TcpStream, why: &str) {
    let body = format!("hop proxy app: {why}\n");
    let head = format!(
        "HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = conn.write_all(head.as_bytes()).await;
    let _ = conn.write_all(body.as_bytes()).await;
    let _ = conn.shutdown().await;
}

fn announce(local: std::net::SocketAddr, c: &Credentials) {
    // A long-running command must not die because whoever started it stopped reading.
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "Proxying http://{local} to application {:?} (https://{}) through {}",
        c.login.name, c.login.public_addr, c.proxy
    );
    let _ = writeln!(out, "Use it, for example: curl http://{local}/");
    let _ = out.flush();
}
