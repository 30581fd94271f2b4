//! Reaching a database: TCP with a deadline, then TLS with the database user's client
//! certificate, and why that failed ([`DbConnectError`]).
//!
//! This module owns the dial and the TLS handshake both protocols share (MySQL asks for TLS inside
//! its own protocol, PostgreSQL with an SSLRequest, see `postgres`); it never speaks either
//! protocol's login and never sees a password.

use std::time::Duration;

use hop_config::services::DbSpecError;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;

use super::DbSpec;
use super::certs::ClientCertError;

/// The agent's TLS connection to a database.
pub type DbConn = tokio_rustls::client::TlsStream<TcpStream>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the agent could not reach a database over TLS. The words reach the user who asked for the
/// session (and the audit log).
#[derive(Debug, thiserror::Error)]
pub enum DbConnectError {
    /// No client certificate for the database user (Auth's, or the spec's CA file).
    #[error(transparent)]
    Certificate(#[from] ClientCertError),
    /// The database's address or server name is unusable (the configuration's).
    #[error(transparent)]
    Spec(#[from] DbSpecError),
    #[error("server name: {0}")]
    ServerName(rustls_pki_types::InvalidDnsNameError),
    /// The network's or the database's: nothing answered in time.
    #[error("connecting to {host}:{port} timed out")]
    TimedOut { host: String, port: u16 },
    #[error("cannot connect to {host}:{port}")]
    Unreachable {
        host: String,
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("the TLS handshake with the database timed out")]
    TlsTimedOut,
    /// The database's certificate is not trusted, or it refused the agent's.
    #[error("TLS handshake with the database")]
    Tls(#[source] std::io::Error),
    /// Writing to the database failed (the network's or the database's).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// PostgreSQL: no answer to the SSLRequest in time.
    #[error("the database did not answer the SSLRequest")]
    NoSslAnswer,
    #[error("the database closed the connection at the SSLRequest")]
    SslRequestClosed(#[source] std::io::Error),
    /// PostgreSQL without TLS (the database's configuration).
    #[error(
        "the database does not accept TLS (ssl = off); Hop connects to databases over TLS only"
    )]
    NoTls,
    /// The answer to the SSLRequest is neither yes nor no: not PostgreSQL.
    #[error("unexpected answer {0:#04x} to the SSLRequest; is this PostgreSQL?")]
    NotPostgres(u8),
}

/// A TCP connection to the database (no delay), within [`CONNECT_TIMEOUT`].
pub(super) async fn dial_tcp(spec: &DbSpec) -> Result<TcpStream, DbConnectError> {
    let (host, port) = spec.target()?;
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host.as_str(), port)))
        .await
    {
        Err(_) => return Err(DbConnectError::TimedOut { host, port }),
        Ok(Err(source)) => return Err(DbConnectError::Unreachable { host, port, source }),
        Ok(Ok(tcp)) => tcp,
    };
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// The TLS handshake on `tcp` (the protocol has agreed to it), within [`CONNECT_TIMEOUT`].
pub(super) async fn tls_handshake(
    cfg: std::sync::Arc<rustls::ClientConfig>,
    spec: &DbSpec,
    tcp: TcpStream,
) -> Result<DbConn, DbConnectError> {
    let name = ServerName::try_from(spec.server_name()?).map_err(DbConnectError::ServerName)?;
    tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio_rustls::TlsConnector::from(cfg).connect(name, tcp),
    )
    .await
    .map_err(|_| DbConnectError::TlsTimedOut)?
    .map_err(DbConnectError::Tls)
}
