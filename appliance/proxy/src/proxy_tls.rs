//! A TLS connection the proxy holds as a tokio stream, over a rustls [`Connection`] that may
//! have finished its handshake elsewhere: most are terminated here (server side), and those the
//! proxy opens to a peer proxy (`crate::peering`) are client side.
//!
//! The data-plane workers terminate TLS (`dataplane/handshake.rs`) and hand the control plane the
//! socket together with the rustls connection, handshake done and any early plaintext still
//! inside it. This module owns driving that connection from then on: reading and decrypting,
//! encrypting and writing, `close_notify` on shutdown, and running a handshake itself (for the
//! PostgreSQL route, whose TLS starts after a plaintext exchange on the control plane, and for
//! connections to peers). Its `get_ref`/`get_mut`/`into_inner` mirror tokio-rustls', so the
//! routes that take a session to the fast path can still reach the socket and the traffic keys,
//! whichever side of the handshake the proxy was.

use std::future::poll_fn;
use std::io::{self, Read, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A TLS connection the proxy terminates or opened.
#[derive(Debug)]
pub struct ProxyTls<IO> {
    io: IO,
    conn: Connection,
    /// The socket returned end-of-file.
    eof: bool,
    /// `close_notify` is queued.
    closing: bool,
}

/// Adapts a tokio stream to `std::io` for rustls: `Pending` becomes `WouldBlock`.
struct Blocking<'a, 'b, IO> {
    io: &'a mut IO,
    cx: &'a mut Context<'b>,
}

impl<IO: AsyncRead + Unpin> Read for Blocking<'_, '_, IO> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut rb = ReadBuf::new(buf);
        match Pin::new(&mut *self.io).poll_read(self.cx, &mut rb) {
            Poll::Ready(Ok(())) => Ok(rb.filled().len()),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl<IO: AsyncWrite + Unpin> Write for Blocking<'_, '_, IO> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match Pin::new(&mut *self.io).poll_write(self.cx, buf) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match Pin::new(&mut *self.io).poll_write_vectored(self.cx, bufs) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match Pin::new(&mut *self.io).poll_flush(self.cx) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl<IO> ProxyTls<IO> {
    /// Wraps a connection whose handshake may be done already (its buffered plaintext is kept).
    pub fn new(io: IO, conn: impl Into<Connection>) -> Self {
        Self {
            io,
            conn: conn.into(),
            eof: false,
            closing: false,
        }
    }

    pub fn get_ref(&self) -> (&IO, &Connection) {
        (&self.io, &self.conn)
    }

    pub fn get_mut(&mut self) -> (&mut IO, &mut Connection) {
        (&mut self.io, &mut self.conn)
    }

    pub fn into_inner(self) -> (IO, Connection) {
        (self.io, self.conn)
    }

    /// The server name the client asked for, on a connection the proxy terminates.
    pub fn sni(&self) -> Option<&str> {
        match &self.conn {
            Connection::Server(s) => s.server_name(),
            Connection::Client(_) => None,
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> ProxyTls<IO> {
    /// Runs a server handshake over `io` with `config`.
    pub async fn accept(io: IO, config: Arc<ServerConfig>) -> io::Result<Self> {
        let conn = ServerConnection::new(config).map_err(tls_error)?;
        let mut tls = Self::new(io, conn);
        poll_fn(|cx| tls.poll_handshake(cx)).await?;
        Ok(tls)
    }

    /// Runs a client handshake over `io` with `config`, for the server `name`.
    pub async fn connect(
        io: IO,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> io::Result<Self> {
        let conn = ClientConnection::new(config, name).map_err(tls_error)?;
        let mut tls = Self::new(io, conn);
        poll_fn(|cx| tls.poll_handshake(cx)).await?;
        Ok(tls)
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.poll_send(cx))?;
            if !self.conn.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            if ready!(self.poll_receive(cx))? == 0 {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed the connection during the TLS handshake",
                )));
            }
        }
    }

    /// Reads TLS bytes from the socket and processes them; `Ok(0)` at end-of-file.
    fn poll_receive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let n = match self.conn.read_tls(&mut Blocking {
            io: &mut self.io,
            cx,
        }) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
            Err(e) => return Poll::Ready(Err(e)),
        };
        if n == 0 {
            self.eof = true;
        }
        if let Err(e) = self.conn.process_new_packets() {
            // rustls queued an alert saying why: send it if the socket takes it now.
            let _ = self.poll_send(cx);
            return Poll::Ready(Err(tls_error(e)));
        }
        Poll::Ready(Ok(n))
    }

    /// Writes every TLS byte rustls has queued.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut Blocking {
                io: &mut self.io,
                cx,
            }) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for ProxyTls<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            match this.conn.reader().read(buf.initialize_unfilled()) {
                Ok(n) => {
                    // 0: the peer sent close_notify.
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // UnexpectedEof: the socket closed without close_notify.
                Err(e) => return Poll::Ready(Err(e)),
            }
            if this.eof {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
            // Answers rustls owes the peer (a key update's, an alert) go out with the reads; a
            // full socket leaves them queued for the next write or flush.
            if let Poll::Ready(Err(e)) = this.poll_send(cx) {
                return Poll::Ready(Err(e));
            }
            ready!(this.poll_receive(cx))?;
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ProxyTls<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        loop {
            // rustls takes no more once its send buffer is at its limit (0 then).
            let n = this.conn.writer().write(buf)?;
            let sent = this.poll_send(cx)?;
            if n > 0 {
                return Poll::Ready(Ok(n));
            }
            ready!(sent);
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.conn.writer().flush()?;
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.closing {
            this.conn.send_close_notify();
            this.closing = true;
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn configs() -> (Arc<ServerConfig>, Arc<rustls::ClientConfig>) {
        let ck = rcgen::generate_simple_self_signed(vec!["proxy.test".to_string()]).unwrap();
        let cert: CertificateDer<'static> = ck.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
        let provider = hop_net::pem::provider();
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Arc::new(server), Arc::new(client))
    }

    async fn client(
        cfg: Arc<rustls::ClientConfig>,
        io: tokio::io::DuplexStream,
    ) -> tokio_rustls::client::TlsStream<tokio::io::DuplexStream> {
        tokio_rustls::TlsConnector::from(cfg)
            .connect(ServerName::try_from("proxy.test").unwrap(), io)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn echoes_many_mebibytes_through_a_small_pipe_and_closes_cleanly() {
        let (server_cfg, client_cfg) = configs();
        // A 1 KiB pipe: every write and read meets back-pressure.
        let (a, b) = tokio::io::duplex(1024);
        let server = tokio::spawn(async move {
            let mut tls = ProxyTls::accept(a, server_cfg).await.unwrap();
            let mut buf = vec![0u8; 7000];
            loop {
                let n = tls.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                tls.write_all(&buf[..n]).await.unwrap();
            }
            tls.shutdown().await.unwrap();
        });
        let c = client(client_cfg, b).await;
        let (mut r, mut w) = tokio::io::split(c);
        let payload: Vec<u8> = (0..3 * 1024 * 1024u32)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let sent = payload.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&sent).await.unwrap();
            w.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        server.await.unwrap();
        assert!(got == payload, "echo differs");
    }

    #[tokio::test]
    async fn a_connection_handshaken_elsewhere_keeps_its_early_plaintext() {
        let (server_cfg, client_cfg) = configs();
        // Handshake by hand, as a worker does, with the client's first bytes in the same flight.
        let mut s = ServerConnection::new(server_cfg).unwrap();
        let mut c =
            rustls::ClientConnection::new(client_cfg, ServerName::try_from("proxy.test").unwrap())
                .unwrap();
        c.writer().write_all(b"early words").unwrap();
        let mut to_client = Vec::new();
        while c.is_handshaking() || c.wants_write() {
            let mut wire = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut wire).unwrap();
            }
            let mut rd = &wire[..];
            while !rd.is_empty() {
                s.read_tls(&mut rd).unwrap();
                s.process_new_packets().unwrap();
            }
            let mut back = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut back).unwrap();
            }
            let mut rd = &back[..];
            while !rd.is_empty() {
                c.read_tls(&mut rd).unwrap();
                c.process_new_packets().unwrap();
            }
            to_client.extend(back);
            if !c.is_handshaking() && !c.wants_write() {
                break;
            }
        }
        assert!(!s.is_handshaking());
        let (a, mut b) = tokio::io::duplex(4096);
        let mut tls = ProxyTls::new(a, s);
        let mut buf = [0u8; 11];
        tls.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"early words");
        tls.write_all(b"reply").await.unwrap();
        tls.flush().await.unwrap();
        let mut wire = [0u8; 4096];
        let n = b.read(&mut wire).await.unwrap();
        let mut rd = &wire[..n];
        c.read_tls(&mut rd).unwrap();
        c.process_new_packets().unwrap();
        let mut got = [0u8; 5];
        c.reader().read_exact(&mut got).unwrap();
        assert_eq!(&got, b"reply");
    }

    #[tokio::test]
    async fn garbage_fails_the_handshake_with_an_error_not_a_hang() {
        let (server_cfg, _) = configs();
        let (a, mut b) = tokio::io::duplex(4096);
        b.write_all(b"\x16\x03\x01\x00\x05hello").await.unwrap();
        let e = ProxyTls::accept(a, server_cfg).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        let (a, b) = tokio::io::duplex(4096);
        drop(b);
        let (server_cfg, _) = configs();
        let e = ProxyTls::accept(a, server_cfg).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
    }

    #[tokio::test]
    async fn a_peer_that_vanishes_without_close_notify_is_an_error() {
        let (server_cfg, client_cfg) = configs();
        let (a, b) = tokio::io::duplex(4096);
        let (accepted, wait) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(async move {
            let mut tls = ProxyTls::accept(a, server_cfg).await.unwrap();
            accepted.send(()).unwrap();
            let mut buf = Vec::new();
            tls.read_to_end(&mut buf).await
        });
        let c = client(client_cfg, b).await;
        wait.await.unwrap();
        drop(c);
        let e = server.await.unwrap().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }
}
