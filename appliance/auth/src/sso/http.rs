//! The HTTP client Auth uses to reach identity providers: one HTTP/1.1 request per connection,
//! `https://` (system roots) or plain `http://` on loopback only, a deadline over the whole
//! exchange ([`IDP_DEADLINE`]) and a cap on the answer's body ([`MAX_IDP_BODY`]). It never
//! logs a request body or an answer (they hold codes, secrets and tokens).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;

/// The longest an exchange with a provider may take, connection included.
pub const IDP_DEADLINE: Duration = Duration::from_secs(10);
/// The most bytes of a provider's answer read.
pub const MAX_IDP_BODY: usize = 1024 * 1024;

/// Why a request to the provider failed: each is the provider's (or the network's) fault,
/// except `Url`, which is the connector's.
#[derive(Debug, thiserror::Error)]
pub enum IdpHttpError {
    #[error("the provider URL {0:?} is not usable (https://, or http:// on loopback)")]
    Url(String),
    #[error("cannot reach the provider at {host}: {reason}")]
    Connect { host: String, reason: String },
    #[error("the provider did not answer within {}s", IDP_DEADLINE.as_secs())]
    Deadline,
    #[error("the provider's answer is larger than {MAX_IDP_BODY} bytes or broken: {0}")]
    Body(String),
    #[error("the provider answered HTTP {0}")]
    Status(u16),
}

/// One request. `Debug` shows the URL only (the form and the authorization carry codes,
/// secrets and tokens).
pub struct IdpRequest<'a> {
    pub post_form: Option<String>,
    pub url: &'a str,
    pub authorization: Option<String>,
}

impl std::fmt::Debug for IdpRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdpRequest")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let mut config = match rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
            {
                Ok(b) => b.with_root_certificates(roots).with_no_client_auth(),
                // The default provider supports the default versions; fail closed anyway
                // (no roots: every https provider is refused).
                Err(_) => rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
            };
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Arc::new(config)
        })
        .clone()
}

/// Sends `req` and returns the body of a 200 answer.
pub async fn fetch(req: IdpRequest<'_>) -> Result<Bytes, IdpHttpError> {
    tokio::time::timeout(IDP_DEADLINE, exchange(req))
        .await
        .map_err(|_| IdpHttpError::Deadline)?
}

async fn exchange(req: IdpRequest<'_>) -> Result<Bytes, IdpHttpError> {
    let bad = || IdpHttpError::Url(req.url.to_string());
    let https = req.url.starts_with("https://");
    if !https && !hop_rbac::oidc::is_loopback_http(req.url) {
        return Err(bad());
    }
    let uri: http::Uri = req.url.parse().map_err(|_| bad())?;
    let host = uri.host().ok_or_else(bad)?.to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let path = uri
        .path_and_query()
        .map_or("/".to_string(), |p| p.as_str().to_string());
    let authority = uri.authority().ok_or_else(bad)?.to_string();
    let connect_host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let connect_err = |e: &dyn std::fmt::Display| IdpHttpError::Connect {
        host: authority.clone(),
        reason: e.to_string(),
    };
    let tcp = tokio::net::TcpStream::connect((connect_host.as_str(), port))
        .await
        .map_err(|e| connect_err(&e))?;
    let mut builder = http::Request::builder()
        .uri(path)
        .header(http::header::HOST, authority.as_str())
        .header(http::header::ACCEPT, "application/json")
        .header(http::header::USER_AGENT, "hop-auth");
    if let Some(a) = &req.authorization {
        builder = builder.header(http::header::AUTHORIZATION, a.as_str());
    }
    let request = match req.post_form {
        Some(form) => builder
            .method(http::Method::POST)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(Full::new(Bytes::from(form))),
        None => builder
            .method(http::Method::GET)
            .body(Full::new(Bytes::new())),
    }
    .map_err(|_| bad())?;
    let (response, _driver) = if https {
        let name =
            rustls::pki_types::ServerName::try_from(connect_host.clone()).map_err(|_| bad())?;
        let tls = tokio_rustls::TlsConnector::from(tls_config())
            .connect(name, tcp)
            .await
            .map_err(|e| connect_err(&e))?;
        send(TokioIo::new(tls), request).await?
    } else {
        send(TokioIo::new(tcp), request).await?
    };
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), MAX_IDP_BODY)
        .collect()
        .await
        .map_err(|e| IdpHttpError::Body(e.to_string()))?
        .to_bytes();
    if status != 200 {
        return Err(IdpHttpError::Status(status));
    }
    Ok(body)
}

async fn send<T>(
    io: TokioIo<T>,
    request: http::Request<Full<Bytes>>,
) -> Result<
    (
        http::Response<hyper::body::Incoming>,
        AbortOnDrop<Result<(), hyper::Error>>,
    ),
    IdpHttpError,
>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| IdpHttpError::Body(e.to_string()))?;
    let driver = AbortOnDrop(tokio::spawn(conn));
    let r = sender
        .send_request(request)
        .await
        .map_err(|e| IdpHttpError::Body(e.to_string()))?;
    Ok((r, driver))
}

/// Ends the connection's task when the exchange ends, however it ends (a deadline included).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
