//! Reading whole PostgreSQL packets from async streams during a session's start-up, for the
//! proxy and the agent alike: the startup packet (with a size limit and a deadline) and backend
//! messages until the session is ready. After start-up, bytes are relayed, never reframed.
//!
//! Parsing is `hop_protocols::postgres`'s; this module only accumulates bytes for it.

use std::time::Duration;

use hop_protocols::postgres::backend::is_backend_type;
use hop_protocols::postgres::{
    self, BackendMessage, DEFAULT_MAX_MESSAGE_LEN, Severity, StartupPacket,
};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Why start-up bytes could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("the peer closed the connection")]
    Closed,
    #[error("no complete packet within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("malformed startup packet: {0}")]
    Startup(#[from] postgres::StartupError),
    #[error("malformed message: {0}")]
    Message(#[from] postgres::PgMessageError),
}

/// Reads into `buf` until it starts with a whole startup packet; returns its length. Bytes after
/// it stay in `buf`.
pub async fn read_startup<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    deadline: Duration,
) -> Result<usize, WireError> {
    let fill = async {
        loop {
            if let Some((_, len)) = postgres::parse_startup(buf)? {
                return Ok(len);
            }
            read_more(r, buf).await?;
        }
    };
    tokio::time::timeout(deadline, fill)
        .await
        .map_err(|_| WireError::Timeout(deadline))?
}

/// Parses the startup packet at the front of `buf` (after [`read_startup`]).
pub fn startup_packet(buf: &[u8]) -> Result<StartupPacket<'_>, WireError> {
    match postgres::parse_startup(buf)? {
        Some((p, _)) => Ok(p),
        None => Err(WireError::Closed),
    }
}

/// Reads into `buf` until it starts with a whole backend message; returns its length.
pub async fn read_backend<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> Result<usize, WireError> {
    loop {
        if let Some((_, len)) =
            postgres::split_message(buf, DEFAULT_MAX_MESSAGE_LEN, is_backend_type)?
        {
            return Ok(len);
        }
        read_more(r, buf).await?;
    }
}

/// Parses the backend message at the front of `buf` (after [`read_backend`]).
pub fn backend_message(buf: &[u8]) -> Result<BackendMessage<'_>, WireError> {
    match postgres::parse_backend(buf)? {
        Some((m, _)) => Ok(m),
        None => Err(WireError::Closed),
    }
}

async fn read_more<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> Result<(), WireError> {
    let mut chunk = [0u8; 4096];
    let n = r.read(&mut chunk).await?;
    if n == 0 {
        return Err(WireError::Closed);
    }
    buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    Ok(())
}

/// A FATAL ErrorResponse with `sqlstate` and `message`, as a client shows it
/// (`psql: error: … FATAL:  message`).
pub fn fatal(sqlstate: &str, message: &str) -> Vec<u8> {
    let mut out = Vec::new();
    // Only an invalid SQLSTATE or a NUL in the message can fail; neither comes from Hop's words,
    // but fall back to a generic message rather than send nothing.
    if postgres::encode_error_response(
        Severity::Fatal,
        sqlstate,
        &message.replace('\0', " "),
        &mut out,
    )
    .is_err()
    {
        out.clear();
        let _ = postgres::encode_error_response(
            Severity::Fatal,
            "XX000",
            "the connection was refused",
            &mut out,
        );
    }
    out
}

/// SQLSTATE for refused authorization (`invalid_authorization_specification`).
pub const SQLSTATE_DENIED: &str = "28000";
/// SQLSTATE for a connection that cannot be made (`sqlclient_unable_to_establish_sqlconnection`).
pub const SQLSTATE_UNAVAILABLE: &str = "08001";
/// SQLSTATE for a protocol violation.
pub const SQLSTATE_PROTOCOL: &str = "08P01";
