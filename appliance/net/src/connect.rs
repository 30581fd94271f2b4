//! Connections from the client to the Auth API: over TLS through the proxy's one port, or over
//! the admin socket in a local data dir.
//!
//! This module owns dialing (with deadlines) and wrapping the stream for tonic; it decides nothing
//! about trust (see `trust`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tonic::transport::{Channel, Endpoint};

use crate::trust::{ClientCert, Trust, TrustError, client_config, not_the_proxy};
use crate::tunnel::FrameIoError;

/// A proxy address that is not `host[:port]` (the user's or the configuration's to fix).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("invalid address {addr:?}")]
    Invalid { addr: String },
    #[error("invalid port in {addr:?}")]
    InvalidPort { addr: String },
    #[error("empty proxy address")]
    Empty,
}

/// Why no connection to the proxy (or the admin socket) was made, or the proxy refused the
/// session asked for. Causes whose words are already in the message are kept as fields, not as
/// sources, so that error chains do not repeat them.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Address(#[from] AddressError),
    #[error(transparent)]
    Trust(#[from] TrustError),
    /// The host cannot be a TLS server name.
    #[error("invalid proxy host {host:?}")]
    InvalidHost { host: String },
    #[error("invalid proxy host name {host:?}")]
    InvalidHostName { host: String },
    /// TCP or TLS to the proxy failed (or timed out, or the server is not the proxy).
    #[error("cannot reach the proxy at {addr}: {cause}")]
    Unreachable { addr: String, cause: std::io::Error },
    /// The gRPC channel through the proxy did not come up; the message holds every cause.
    #[error("cannot reach the proxy at {addr}: {}", error_chain(cause))]
    NoChannel {
        addr: String,
        cause: tonic::transport::Error,
    },
    #[error(
        "no admin socket at {}: is `hop start` running with this data dir? (use --data-dir or HOP_DATA_DIR)",
        path.display()
    )]
    NoAdminSocket { path: PathBuf },
    #[error("cannot connect to the admin socket {}", path.display())]
    AdminSocket {
        path: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    /// Sending the Dial or reading the proxy's answer failed.
    #[error(transparent)]
    Frame(#[from] FrameIoError),
    /// The proxy (or the agent behind it) refused the session, in its own words.
    #[error("{reason}")]
    SessionRefused { reason: String },
    #[error("unexpected frame {frame_type} from the proxy")]
    UnexpectedFrame { frame_type: u8 },
}

/// An Auth API call answered with an error: the server's own words (see [`status_error`]).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// The proxy or Auth did not answer (a transport failure without words).
    #[error("the cluster is unavailable")]
    Unavailable,
    /// The proxy or Auth did not answer; `causes` is the status's chain of causes.
    #[error("the cluster is unavailable: {causes}")]
    UnavailableBecause { causes: String },
    /// Auth answered `code` with `message` (a refusal, a bad request, an internal error).
    #[error("{message}")]
    Refused { code: tonic::Code, message: String },
}

const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Splits `host:port` (`[v6]:port` too); a missing port means 3080.
pub fn split_host_port(addr: &str) -> Result<(String, u16), AddressError> {
    let addr = addr
        .trim()
        .trim_start_matches("https://")
        .trim_end_matches('/');
    if let Some(rest) = addr.strip_prefix('[') {
        let (host, port) = rest.split_once(']').ok_or_else(|| AddressError::Invalid {
            addr: addr.to_string(),
        })?;
        let port = port
            .strip_prefix(':')
            .map(str::parse)
            .transpose()
            .map_err(|_| AddressError::InvalidPort {
                addr: addr.to_string(),
            })?;
        return Ok((host.to_string(), port.unwrap_or(3080)));
    }
    match addr.rsplit_once(':') {
        Some((h, p)) => Ok((
            h.to_string(),
            p.parse().map_err(|_| AddressError::InvalidPort {
                addr: addr.to_string(),
            })?,
        )),
        None if !addr.is_empty() => Ok((addr.to_string(), 3080)),
        None => Err(AddressError::Empty),
    }
}

/// The proxy's TLS stream.
pub type ProxyStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// Connects to `host:port` and completes TLS as `server_name`, each step under [`DIAL_TIMEOUT`].
pub async fn dial_tls(
    host: &str,
    port: u16,
    server_name: ServerName<'static>,
    cfg: Arc<rustls::ClientConfig>,
) -> std::io::Result<ProxyStream> {
    let tcp = connect_tcp(host, port).await?;
    tls_over(tcp, host, port, server_name, cfg).await
}

/// Connects to `host:port` with [`DIAL_TIMEOUT`], without Nagle's delay.
async fn connect_tcp(host: &str, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    use std::io::{Error, ErrorKind};
    let tcp = tokio::time::timeout(DIAL_TIMEOUT, tokio::net::TcpStream::connect((host, port)))
        .await
        .map_err(|_| {
            Error::new(
                ErrorKind::TimedOut,
                format!("connecting to {host}:{port} timed out"),
            )
        })??;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

/// Completes TLS as `server_name` over `io`, connected to `host:port`, under [`DIAL_TIMEOUT`].
async fn tls_over<IO>(
    io: IO,
    host: &str,
    port: u16,
    server_name: ServerName<'static>,
    cfg: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<IO>>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use std::io::{Error, ErrorKind};
    tokio::time::timeout(
        DIAL_TIMEOUT,
        tokio_rustls::TlsConnector::from(cfg).connect(server_name, io),
    )
    .await
    .map_err(|_| {
        Error::new(
            ErrorKind::TimedOut,
            format!("TLS handshake with {host}:{port} timed out"),
        )
    })?
    .map_err(|e| match not_the_proxy(&e) {
        // In its own words, not as rustls's "invalid peer certificate: Other(…)".
        Some(why) => Error::new(ErrorKind::PermissionDenied, why.to_string()),
        None => e,
    })
}

/// [`dial_tls`] to a proxy address (`host:port`).
pub async fn dial_proxy(
    addr: &str,
    cfg: Arc<rustls::ClientConfig>,
) -> Result<ProxyStream, ConnectError> {
    let (host, port, name) = proxy_target(addr)?;
    dial_tls(&host, port, name, cfg)
        .await
        .map_err(|cause| ConnectError::Unreachable {
            addr: addr.to_string(),
            cause,
        })
}

/// [`dial_proxy`], read with its TLS record boundaries counted (`records::bounded`) so that,
/// once the session's first messages are exchanged, its keys can leave rustls
/// (`records::take_client`; the config must allow secret extraction) if the reads so far ended
/// between records. [`RecordReads::unbound`] it to stay on rustls.
///
/// [`RecordReads::unbound`]: crate::records::bounded::RecordReads::unbound
pub async fn dial_proxy_by_record(
    addr: &str,
    cfg: Arc<rustls::ClientConfig>,
) -> Result<crate::records::ClientStream, ConnectError> {
    let (host, port, name) = proxy_target(addr)?;
    let dialed = async {
        let tcp = connect_tcp(&host, port).await?;
        let reads = crate::records::bounded::RecordReads::counting(tcp);
        tls_over(reads, &host, port, name, cfg).await
    };
    dialed.await.map_err(|cause| ConnectError::Unreachable {
        addr: addr.to_string(),
        cause,
    })
}

/// The host, port and TLS server name of a proxy address (`host:port`).
fn proxy_target(addr: &str) -> Result<(String, u16, ServerName<'static>), ConnectError> {
    let (host, port) = split_host_port(addr)?;
    let name = ServerName::try_from(host.clone())
        .map_err(|_| ConnectError::InvalidHost { host: host.clone() })?;
    Ok((host, port, name))
}

/// A channel to the Auth API through the proxy at `addr`.
pub async fn tls_channel(
    addr: &str,
    trust: &Trust,
    client_cert: Option<&ClientCert>,
) -> Result<Channel, ConnectError> {
    Ok(tls_channel_with_peer(addr, trust, client_cert).await?.0)
}

/// The leaf certificate (DER) the proxy presented on the latest connection of a channel, kept
/// so that a caller can read what it carries (the trust digest) once the handshake, verified
/// with the caller's trust, succeeded.
#[derive(Debug, Clone, Default)]
pub struct PeerLeaf(Arc<std::sync::Mutex<Option<Vec<u8>>>>);

impl PeerLeaf {
    /// The leaf of the latest handshake; `None` before one succeeded.
    #[must_use]
    pub fn get(&self) -> Option<Vec<u8>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn keep(&self, tls: &ProxyStream) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = peer_leaf(tls);
    }
}

/// The leaf certificate (DER) the proxy presented on `tls`.
#[must_use]
pub fn peer_leaf(tls: &ProxyStream) -> Option<Vec<u8>> {
    tls.get_ref()
        .1
        .peer_certificates()?
        .first()
        .map(|c| c.as_ref().to_vec())
}

/// [`tls_channel`], and the leaf certificate the proxy presented (see [`PeerLeaf`]).
pub async fn tls_channel_with_peer(
    addr: &str,
    trust: &Trust,
    client_cert: Option<&ClientCert>,
) -> Result<(Channel, PeerLeaf), ConnectError> {
    let (host, port) = split_host_port(addr)?;
    let cfg = Arc::new(client_config(trust, client_cert, b"hop-auth")?);
    let server_name = ServerName::try_from(host.clone())
        .map_err(|_| ConnectError::InvalidHostName { host: host.clone() })?;
    let peer = PeerLeaf::default();
    let seen = peer.clone();
    let connector = tower::service_fn(move |_uri| {
        let (host, cfg, server_name, seen) =
            (host.clone(), cfg.clone(), server_name.clone(), seen.clone());
        async move {
            let tls = dial_tls(&host, port, server_name, cfg).await?;
            seen.keep(&tls);
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
    let channel = Endpoint::from_static("http://hop-proxy.invalid")
        .timeout(REQUEST_TIMEOUT)
        .connect_with_connector(connector)
        .await
        .map_err(|cause| ConnectError::NoChannel {
            addr: addr.to_string(),
            cause,
        })?;
    Ok((channel, peer))
}

/// A channel over the admin socket of a local data dir.
pub async fn admin_socket_channel(path: PathBuf) -> Result<Channel, ConnectError> {
    if !path.exists() {
        return Err(ConnectError::NoAdminSocket { path });
    }
    let p = path.clone();
    let connector = tower::service_fn(move |_uri| {
        let p = p.clone();
        async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(p).await?)) }
    });
    Endpoint::from_static("http://hop-admin.invalid")
        .timeout(REQUEST_TIMEOUT)
        .connect_with_connector(connector)
        .await
        .map_err(|source| ConnectError::AdminSocket { path, source })
}

/// The full chain of causes, joined, for errors that hide the useful part several levels down.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ")
}

/// Turns a gRPC status into a one-line error with the server's own words.
pub fn status_error(s: tonic::Status) -> ApiError {
    use tonic::Code;
    let msg = s.message().to_string();
    match s.code() {
        Code::Unavailable | Code::Unknown if msg.is_empty() => ApiError::Unavailable,
        Code::Unavailable => ApiError::UnavailableBecause {
            causes: error_chain(&s),
        },
        code => ApiError::Refused { code, message: msg },
    }
}

/// Opens one session through the proxy on a connection already negotiated for a session ALPN
/// (`hop-tcp`, `hop-ssh`): sends the Dial naming `target`, waits for the proxy's answer, and
/// returns the stream with any bytes read past the answer. A refusal is the proxy's own words.
pub async fn open_session(
    proxy: &str,
    cfg: Arc<rustls::ClientConfig>,
    target: &str,
    client: std::net::SocketAddr,
) -> Result<(ProxyStream, Vec<u8>), ConnectError> {
    let tls = dial_proxy(proxy, cfg).await?;
    dial_session(tls, target, client).await
}

/// [`open_session`] on a connection read one record at a time, whose keys can then leave rustls
/// (`records::relay_with_plain`).
pub async fn open_session_by_record(
    proxy: &str,
    cfg: Arc<rustls::ClientConfig>,
    target: &str,
    client: std::net::SocketAddr,
) -> Result<(crate::records::ClientStream, Vec<u8>), ConnectError> {
    let tls = dial_proxy_by_record(proxy, cfg).await?;
    dial_session(tls, target, client).await
}

/// The Dial naming `target` on `tls` and the proxy's answer.
async fn dial_session<S>(
    tls: S,
    target: &str,
    client: std::net::SocketAddr,
) -> Result<(S, Vec<u8>), ConnectError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use hop_protocols::tunnel::{Dial, Frame};
    let mut framed = crate::tunnel::FramedStream::new(tls);
    // Time-ordered (UUID v7), as every session id Hop mints: the audit log indexes them.
    let since = hop_platform::clock::wall()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let ts = uuid::Timestamp::from_unix(uuid::NoContext, since.as_secs(), since.subsec_nanos());
    let session_id = *uuid::Uuid::new_v7(ts).as_bytes();
    framed
        .write_frame(&Frame::Dial(Dial {
            session_id,
            target: target.to_string(),
            client_addr: client,
        }))
        .await?;
    match framed.read_frame(Duration::from_secs(30)).await? {
        Frame::DialResult(r) if r.ok => Ok(framed.into_inner()),
        Frame::DialResult(r) => Err(ConnectError::SessionRefused {
            reason: r
                .error
                .unwrap_or_else(|| "the proxy refused the session".into()),
        }),
        other => Err(ConnectError::UnexpectedFrame {
            frame_type: other.frame_type(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port() {
        assert_eq!(
            split_host_port("localhost:3080").unwrap(),
            ("localhost".into(), 3080)
        );
        assert_eq!(
            split_host_port("example.com").unwrap(),
            ("example.com".into(), 3080)
        );
        assert_eq!(split_host_port("[::1]:443").unwrap(), ("::1".into(), 443));
        assert_eq!(split_host_port("https://h:1/").unwrap(), ("h".into(), 1));
        assert!(split_host_port("h:x").is_err());
        assert!(split_host_port("").is_err());
    }
}
