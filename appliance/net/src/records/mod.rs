//! TLS 1.3 connections carried on in user space once their handshake is over: the traffic keys
//! taken from rustls, the record AEAD ([`aead`]), reading a socket one record at a time until
//! then ([`bounded`]), and relaying between such a connection and a plain socket ([`relay`]).
//!
//! This module owns what the proxy's fast path (`hop-proxy`'s `relay`, between two TLS
//! connections) and the agents and clients (between a TLS connection to the proxy and an
//! application's or a local plain socket) share: rustls does the handshake and the first
//! messages (the Dial and its answer), then the connection's keys leave rustls and each record
//! is opened or sealed in place, with no TLS library per byte. Whatever rustls cannot hand over
//! whole (a record partly read, records queued to send) keeps the connection on rustls.

#![deny(clippy::disallowed_types)] // the data plane's workers never block on a lock (clippy.toml)

pub mod aead;
pub mod bounded;
pub mod relay;
#[cfg(test)]
mod tests;

use aead::RecordKey;
use bounded::RecordReads;
use rustls::{CommonState, Connection, ProtocolVersion};
use tokio::net::TcpStream;

/// One direction's traffic secret as rustls handed it over, with its next sequence number.
pub struct DirectionSecret {
    pub seq: u64,
    pub secret: rustls::ConnectionTrafficSecrets,
}

impl std::fmt::Debug for DirectionSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key material.
        f.debug_struct("DirectionSecret")
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl DirectionSecret {
    /// The key for sealing or opening records in user space.
    pub fn record_key(&self) -> Result<RecordKey, aead::UnsupportedCipher> {
        RecordKey::new(self.seq, &self.secret)
    }

    /// The key for the kernel (`hop_platform::ktls`), if the kernel implements its cipher.
    pub fn kernel_key(&self) -> Option<hop_platform::ktls::KernelKey<'_>> {
        use hop_platform::ktls::KernelCipher;
        use rustls::ConnectionTrafficSecrets as S;
        let (cipher, key, iv) = match &self.secret {
            S::Aes128Gcm { key, iv } => (KernelCipher::Aes128Gcm, key, iv),
            S::Aes256Gcm { key, iv } => (KernelCipher::Aes256Gcm, key, iv),
            S::Chacha20Poly1305 { key, iv } => (KernelCipher::Chacha20Poly1305, key, iv),
            _ => return None,
        };
        Some(hop_platform::ktls::KernelKey {
            cipher,
            key: key.as_ref(),
            iv: iv.as_ref().try_into().ok()?,
            seq: self.seq,
        })
    }
}

/// The keys of one TLS connection, taken from rustls.
#[derive(Debug)]
pub struct ConnectionKeys {
    /// Opens the records the peer sends.
    pub rx: DirectionSecret,
    /// Seals the records sent to the peer.
    pub tx: DirectionSecret,
}

/// Why a connection's keys could not leave rustls once the move had begun (rustls no longer
/// holds it: the session is lost). Internal: a rustls or tokio surprise, or a cipher the
/// eligibility check should have kept on rustls.
#[derive(Debug, thiserror::Error)]
pub enum HandOffError {
    #[error("reading buffered plaintext: {0}")]
    BufferedPlaintext(#[source] std::io::Error),
    /// rustls already read the peer's `close_notify`: what follows it is not the session's, and
    /// the keys must not carry on as if the connection were open.
    #[error("the peer had already closed the connection (close_notify)")]
    PeerClosed,
    #[error("taking the traffic keys from rustls: {0}")]
    Secrets(#[source] rustls::Error),
    #[error("{0}")]
    Cipher(#[source] aead::UnsupportedCipher),
    #[error("releasing the socket from tokio: {0}")]
    Release(#[source] std::io::Error),
}

/// The traffic keys of a TLS 1.3 connection (one the proxy terminated or opened to a peer proxy,
/// or an agent's or client's connection to the proxy), and the plaintext rustls decrypted that
/// nobody read yet (after `pending`, what was read but not consumed): both belong
/// to the session. The caller checked that nothing is queued to send and no record is partly
/// read.
pub fn keys_of(
    mut conn: Connection,
    mut pending: Vec<u8>,
) -> Result<(ConnectionKeys, Vec<u8>), HandOffError> {
    if drain_plaintext(conn.reader(), &mut pending).map_err(HandOffError::BufferedPlaintext)? {
        return Err(HandOffError::PeerClosed);
    }
    let secrets = conn
        .dangerous_extract_secrets()
        .map_err(HandOffError::Secrets)?;
    let keys = ConnectionKeys {
        rx: DirectionSecret {
            seq: secrets.rx.0,
            secret: secrets.rx.1,
        },
        tx: DirectionSecret {
            seq: secrets.tx.0,
            secret: secrets.tx.1,
        },
    };
    // Both must be usable before the session is handed over.
    keys.rx.record_key().map_err(HandOffError::Cipher)?;
    keys.tx.record_key().map_err(HandOffError::Cipher)?;
    Ok((keys, pending))
}

/// Appends the plaintext rustls decrypted that nobody read to `pending`; true when rustls has
/// also read the peer's `close_notify` (the connection's end, after that plaintext).
fn drain_plaintext(mut reader: rustls::Reader<'_>, pending: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut chunk = [0u8; 4096];
    loop {
        match std::io::Read::read(&mut reader, &mut chunk) {
            Ok(0) => return Ok(true),
            Ok(n) => pending.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
}

/// Why a TLS connection read through `reads` must stay on rustls; `None` when its keys can leave
/// (what was read so far ends between records, TLS 1.3, nothing queued to send).
pub fn stays_on_rustls<S>(reads: &RecordReads<S>, tls: &CommonState) -> Option<&'static str> {
    if !reads.knows_boundaries() {
        return Some("the connection's record boundaries were not counted");
    }
    if reads.mid_record() {
        return Some("a record is partly read");
    }
    if tls.protocol_version() != Some(ProtocolVersion::TLSv1_3) {
        return Some("not TLS 1.3");
    }
    if tls.wants_write() {
        return Some("TLS records still queued to send");
    }
    None
}

/// A client connection to the proxy, its record boundaries counted, that has exchanged what
/// rustls was needed for.
pub type ClientStream = tokio_rustls::client::TlsStream<RecordReads<TcpStream>>;

/// Takes `tls`'s keys out of rustls (the caller checked [`stays_on_rustls`]): its socket, its
/// keys, and the plaintext that belongs to the session (`pending`, what was read past the last
/// message, then what rustls decrypted that nobody read).
pub fn take_client(
    tls: ClientStream,
    pending: Vec<u8>,
) -> Result<(TcpStream, ConnectionKeys, Vec<u8>), HandOffError> {
    let (reads, conn) = tls.into_inner();
    let (keys, pending) = keys_of(Connection::Client(conn), pending)?;
    Ok((reads.into_inner(), keys, pending))
}

/// Why a session between a TLS connection and a plain socket ended with an error.
#[derive(Debug, thiserror::Error)]
pub enum PlainRelayError {
    #[error("taking the keys out of rustls: {0}")]
    HandOff(#[from] HandOffError),
    #[error("{0}")]
    Records(#[from] relay::RecordRelayError),
    #[error("{0}")]
    Rustls(#[from] std::io::Error),
}

/// Relays a session between `tls`, past its first messages (`pending`: read past them), and a
/// plain socket: with the keys out of rustls ([`relay::relay`]) where [`stays_on_rustls`]
/// allows, else through rustls. Returns the application bytes moved (to `plain`, to `tls`). A
/// session that ends with an error resets `plain` rather than closing it: the application must
/// never take a cut (a truncation, a record that does not open) for an orderly end of file.
pub async fn relay_with_plain(
    tls: ClientStream,
    pending: Vec<u8>,
    mut plain: TcpStream,
) -> Result<(u64, u64), PlainRelayError> {
    let moved = relay_either(tls, pending, &mut plain).await;
    if moved.is_err() {
        let _ = plain.set_zero_linger();
    }
    moved
}

async fn relay_either(
    mut tls: ClientStream,
    mut pending: Vec<u8>,
    plain: &mut TcpStream,
) -> Result<(u64, u64), PlainRelayError> {
    // A read that took more than the last message may have brought the peer's close_notify
    // too (counted reads are not cut at records): rustls then ends the session properly.
    let closed = drain_plaintext(tls.get_mut().1.reader(), &mut pending)?;
    let (reads, conn) = tls.get_ref();
    if closed || stays_on_rustls(reads, conn).is_some() {
        tls.get_mut().0.unbound();
        return Ok(crate::tunnel::relay(tls, pending, plain, Vec::new()).await?);
    }
    let (tcp, keys, pending) = take_client(tls, pending)?;
    Ok(relay::relay(tcp, keys, pending, plain, Vec::new()).await?)
}
