//! The way to a web app's upstream: one pooled hyper client per app (HTTP/1.1, keep-alive,
//! shared by every tunnel connection), whose connector dials the configured host with a
//! deadline and, for `https://`, speaks TLS with rustls (system roots, or nothing checked with
//! `insecure_skip_verify`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hop_config::services::{AppScheme, AppSpec};
use hop_net::trust::{Trust, server_client_config};
use http::Uri;
use http::uri::{Authority, Scheme};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// How long connecting the upstream (TCP and TLS) may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an idle upstream connection stays pooled.
const POOL_IDLE: Duration = Duration::from_secs(90);

/// A pooled client to one app's upstream.
pub(crate) type UpstreamClient = Client<Connector, Incoming>;

/// Where requests go: the client and the parts of the upstream's URL.
pub(crate) struct Upstream {
    pub client: UpstreamClient,
    pub scheme: Scheme,
    pub authority: Authority,
    /// `Host` for the upstream (its authority).
    pub host: http::HeaderValue,
    /// The upstream's uri as configured, for error messages.
    pub uri: String,
}

/// Why an upstream could not be set up (the operator's configuration).
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error(transparent)]
    Spec(#[from] hop_config::services::AppSpecError),
    #[error("app {name:?}: uri {uri:?} is not a URL hyper accepts")]
    Uri { name: String, uri: String },
}

impl Upstream {
    pub(crate) fn new(spec: &AppSpec) -> Result<Self, UpstreamError> {
        let (host, port) = spec.target()?;
        let https = spec.scheme()? == AppScheme::Https;
        let bad_uri = || UpstreamError::Uri {
            name: spec.name.clone(),
            uri: spec.uri.clone(),
        };
        let base: Uri = spec.uri.parse().map_err(|_| bad_uri())?;
        let authority = base.authority().cloned().ok_or_else(bad_uri)?;
        let host_value = http::HeaderValue::from_str(authority.as_str()).map_err(|_| bad_uri())?;
        let connector = Connector {
            tls: https.then(|| tls(&host, spec.insecure_skip_verify)),
            host: host.into(),
            port,
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_timer(TokioTimer::new())
            .build(connector);
        Ok(Self {
            client,
            scheme: if https { Scheme::HTTPS } else { Scheme::HTTP },
            authority,
            host: host_value,
            uri: spec.uri.clone(),
        })
    }

    /// The upstream URL of a request's path and query.
    pub(crate) fn uri_for(&self, uri: &Uri) -> Uri {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = uri
            .path_and_query()
            .cloned()
            .or_else(|| Some(http::uri::PathAndQuery::from_static("/")));
        Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
    }
}

/// The TLS side of an `https://` upstream, or why there is none (said on every request).
type Tls = Result<(TlsConnector, ServerName<'static>), Arc<str>>;

fn tls(host: &str, insecure: bool) -> Tls {
    let trust = if insecure {
        Trust::Insecure
    } else {
        Trust::System
    };
    let cfg = server_client_config(&trust, None, b"http/1.1")
        .map_err(|e| Arc::<str>::from(format!("TLS to the upstream: {e}")))?;
    let name = ServerName::try_from(host.to_string())
        .map_err(|_| Arc::<str>::from(format!("{host:?} is not a TLS server name")))?;
    Ok((TlsConnector::from(Arc::new(cfg)), name))
}

/// Dials the upstream (whatever URL the client asks for: it only ever asks for this one).
#[derive(Clone)]
pub(crate) struct Connector {
    host: Arc<str>,
    port: u16,
    tls: Option<Tls>,
}

impl tower::Service<Uri> for Connector {
    type Response = TokioIo<UpstreamStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let me = self.clone();
        Box::pin(async move {
            tokio::time::timeout(CONNECT_TIMEOUT, me.connect())
                .await
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no connection within {}s", CONNECT_TIMEOUT.as_secs()),
                    )
                })?
                .map(TokioIo::new)
        })
    }
}

impl Connector {
    async fn connect(self) -> io::Result<UpstreamStream> {
        let tcp = TcpStream::connect((&*self.host, self.port)).await?;
        let _ = tcp.set_nodelay(true);
        match self.tls {
            None => Ok(UpstreamStream::Plain(tcp)),
            Some(Err(why)) => Err(io::Error::other(why.to_string())),
            Some(Ok((connector, name))) => {
                let tls = connector.connect(name, tcp).await?;
                Ok(UpstreamStream::Tls(Box::new(tls)))
            }
        }
    }
}

/// A connection to the upstream, plain or TLS.
pub(crate) enum UpstreamStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection for UpstreamStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, b),
            Self::Tls(s) => Pin::new(s).poll_write(cx, b),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
