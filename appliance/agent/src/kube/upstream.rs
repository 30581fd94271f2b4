//! The way to one cluster's API server: the edge where the kubeconfig's files are read, and the
//! one pooled hyper client per cluster (HTTP/1.1 keep-alive, so that upgrades work on it) whose
//! connector dials the server with a deadline and speaks rustls with the kubeconfig's CA (or the
//! system roots, or nothing checked with `insecure-skip-tls-verify`), its `tls-server-name`, and
//! its client certificate. A bearer token is kept here too and read again from its file once a
//! minute, since service account tokens rotate.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hop_config::services::KubeClusterSpec;
use hop_net::trust::{ClientCert, Trust, TrustError, server_client_config};
use hop_platform::clock;
use http::{HeaderValue, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::kubeconfig::{
    self, ApiServerSpec, Credentials, KubeconfigError, Material, Problem, SERVICE_ACCOUNT_DIR,
    TokenSource,
};

/// How long connecting the API server (TCP and TLS) may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an idle connection to the API server stays pooled.
const POOL_IDLE: Duration = Duration::from_secs(90);
/// A token read from a file is read again after this long.
const TOKEN_REFRESH: Duration = Duration::from_secs(60);

/// A pooled client to one API server.
pub(crate) type ApiClient = Client<Connector, Incoming>;

/// One cluster's API server as the agent reaches it.
pub(crate) struct ApiServer {
    pub client: ApiClient,
    /// `https://host:port` and the path prefix the server URL may carry.
    pub base: Uri,
    /// `Host` for the API server.
    pub host: HeaderValue,
    token: Option<Token>,
}

/// Reads the spec's kubeconfig (or the service account) and builds the cluster's client.
pub(crate) fn load(spec: &KubeClusterSpec) -> Result<ApiServer, KubeconfigError> {
    let api = match &spec.kubeconfig {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| {
                let read = Problem::Read {
                    path: path.clone(),
                    source,
                };
                KubeconfigError::new(format!("kubeconfig {}", path.display()), read)
            })?;
            kubeconfig::parse(&text, path, spec.context.as_deref())?
        }
        None => kubeconfig::in_cluster(
            std::env::var("KUBERNETES_SERVICE_HOST").ok().as_deref(),
            std::env::var("KUBERNETES_SERVICE_PORT").ok().as_deref(),
            Path::new(SERVICE_ACCOUNT_DIR),
        )?,
    };
    ApiServer::new(&api)
}

impl ApiServer {
    pub(crate) fn new(api: &ApiServerSpec) -> Result<Self, KubeconfigError> {
        let fail = |problem| KubeconfigError::new(api.origin.clone(), problem);
        let (tls, token) = tls_and_token(api).map_err(fail)?;
        if api.insecure_skip_tls_verify {
            tracing::warn!(origin = %api.origin, "insecure-skip-tls-verify: the API server's certificate is not checked");
        }
        let authority = api
            .server
            .authority()
            .cloned()
            .unwrap_or_else(|| http::uri::Authority::from_static("localhost"));
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(443);
        let sni = api.tls_server_name.as_deref().unwrap_or(host);
        let name = ServerName::try_from(sni.to_string()).map_err(|_| {
            fail(Problem::Field {
                field: "tls-server-name".into(),
                message: format!("{sni:?} is not a TLS server name"),
            })
        })?;
        let connector = Connector {
            host: host.into(),
            port,
            tls: TlsConnector::from(Arc::new(tls)),
            name,
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_timer(TokioTimer::new())
            .build(connector);
        let host_value = HeaderValue::from_str(authority.as_str()).map_err(|_| {
            fail(Problem::Field {
                field: "server".into(),
                message: "not a valid Host".into(),
            })
        })?;
        Ok(Self {
            client,
            base: api.server.clone(),
            host: host_value,
            token,
        })
    }

    /// The API server's URL for a request's path and query (after the server's path prefix).
    pub(crate) fn uri_for(&self, uri: &Uri) -> Uri {
        let prefix = self.base.path().trim_end_matches('/');
        let pq = uri.path_and_query().map_or("/", |p| p.as_str());
        let mut parts = http::uri::Parts::default();
        parts.scheme = self.base.scheme().cloned();
        parts.authority = self.base.authority().cloned();
        parts.path_and_query = format!("{prefix}{pq}").parse().ok();
        Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
    }

    /// `Authorization: Bearer …` when the agent authenticates with a token.
    pub(crate) async fn authorization(&self) -> io::Result<Option<HeaderValue>> {
        match &self.token {
            None => Ok(None),
            Some(t) => t.header().await.map(Some),
        }
    }
}

/// The rustls configuration (CA, server name check, client certificate) and the token.
fn tls_and_token(api: &ApiServerSpec) -> Result<(rustls::ClientConfig, Option<Token>), Problem> {
    let trust = if api.insecure_skip_tls_verify {
        Trust::Insecure
    } else {
        match &api.ca {
            Some(m) => Trust::CaPem(read_text(m)?),
            None => Trust::System,
        }
    };
    let (cert, token) = match &api.credentials {
        Credentials::ClientCert { cert, key } => (
            Some(ClientCert {
                chain_pem: read_text(cert)?,
                key_pem: read_text(key)?,
            }),
            None,
        ),
        Credentials::Token(source) => (None, Some(Token::new(source)?)),
    };
    let tls = server_client_config(&trust, cert.as_ref(), b"http/1.1").map_err(|e| match e {
        TrustError::ClientCertificate { cause } => Problem::ClientCert(cause.to_string()),
        TrustError::Pem(p) if cert.is_some() && matches!(p, hop_net::pem::PemError::Key(_)) => {
            Problem::ClientCert(p.to_string())
        }
        other => Problem::Tls(other),
    })?;
    Ok((tls, token))
}

fn read_text(m: &Material) -> Result<String, Problem> {
    match m {
        Material::Inline(b) => Ok(String::from_utf8_lossy(b).into_owned()),
        Material::File(p) => std::fs::read_to_string(p).map_err(|source| Problem::Read {
            path: p.clone(),
            source,
        }),
    }
}

/// A bearer token, and for a file the last value read and when.
struct Token {
    file: Option<PathBuf>,
    current: Mutex<(Instant, HeaderValue)>,
}

impl Token {
    /// The token as configured; a file is read now, so that a missing one fails at start.
    fn new(source: &TokenSource) -> Result<Self, Problem> {
        let (file, text) = match source {
            TokenSource::Inline(t) => (None, t.clone()),
            TokenSource::File(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| Problem::Read {
                    path: p.clone(),
                    source,
                })?;
                (Some(p.clone()), text)
            }
        };
        let value = bearer(&text).map_err(|message| Problem::Field {
            field: "token".into(),
            message,
        })?;
        Ok(Self {
            file,
            current: Mutex::new((clock::now(), value)),
        })
    }

    async fn header(&self) -> io::Result<HeaderValue> {
        let (read_at, value) = self.lock().clone();
        let Some(path) = &self.file else {
            return Ok(value);
        };
        if clock::since(read_at) < TOKEN_REFRESH {
            return Ok(value);
        }
        let fresh = match tokio::fs::read_to_string(path).await {
            Ok(text) => bearer(&text).map_err(io::Error::other)?,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the API server token again; using the last one");
                value
            }
        };
        *self.lock() = (clock::now(), fresh.clone());
        Ok(fresh)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Instant, HeaderValue)> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn bearer(text: &str) -> Result<HeaderValue, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("is empty".into());
    }
    let mut v = HeaderValue::from_str(&format!("Bearer {t}"))
        .map_err(|_| "holds characters a header cannot carry".to_string())?;
    v.set_sensitive(true);
    Ok(v)
}

/// Dials the API server (whatever URL the client asks for: it only ever asks for this one).
#[derive(Clone)]
pub(crate) struct Connector {
    host: Arc<str>,
    port: u16,
    tls: TlsConnector,
    name: ServerName<'static>,
}

impl tower::Service<Uri> for Connector {
    type Response = TokioIo<ApiStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let me = self.clone();
        Box::pin(async move {
            let connect = async {
                let tcp = TcpStream::connect((&*me.host, me.port)).await?;
                let _ = tcp.set_nodelay(true);
                me.tls.connect(me.name.clone(), tcp).await
            };
            let tls = tokio::time::timeout(CONNECT_TIMEOUT, connect)
                .await
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no connection within {}s", CONNECT_TIMEOUT.as_secs()),
                    )
                })??;
            Ok(TokioIo::new(ApiStream(Box::new(tls))))
        })
    }
}

/// A TLS connection to the API server.
pub(crate) struct ApiStream(Box<TlsStream<TcpStream>>);

impl Connection for ApiStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for ApiStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ApiStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().0).poll_write(cx, b)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().0).poll_shutdown(cx)
    }
}
