//! TLS to PostgreSQL with rustls (aws-lc-rs, as the rest of hop). This module owns turning the
//! conn string's `sslrootcert`/`sslcert`/`sslkey` into a rustls client config (the server's chain
//! and name always checked: `verify-full`) and the small adapter that lets `tokio_postgres` run
//! its handshake through `tokio_rustls`. Written here rather than taken from a third-party
//! adapter crate: it is forty lines over crates the workspace already ships, and keeps the
//! crypto provider the one hop uses everywhere.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::Socket;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

use super::conn_string::TlsSettings;
use crate::error::StorageError;

fn refuse(reason: String) -> StorageError {
    StorageError::PostgresConfig { reason }
}

/// The rustls client config `settings` ask for; `None` when TLS is disabled.
pub(crate) fn client_config(
    settings: &TlsSettings,
) -> Result<Option<Arc<rustls::ClientConfig>>, StorageError> {
    let TlsSettings::VerifyFull { root_cert, client } = settings else {
        return Ok(None);
    };
    let mut roots = RootCertStore::empty();
    match root_cert {
        Some(path) => {
            for cert in read_certs(path, "sslrootcert")? {
                roots
                    .add(cert)
                    .map_err(|err| refuse(format!("sslrootcert {}: {err}", path.display())))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                // A system root rustls cannot parse is skipped, as browsers do.
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(refuse(
                    "no sslrootcert given and no system root certificates found; set \
                     sslrootcert=FILE (the CA that signed the PostgreSQL server's certificate)"
                        .to_owned(),
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| refuse(format!("TLS setup: {err}")))?
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = read_certs(cert, "sslcert")?;
            let key_der = PrivateKeyDer::from_pem_file(key)
                .map_err(|err| refuse(format!("sslkey {}: {err}", key.display())))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|err| refuse(format!("sslcert/sslkey: {err}")))?
        }
    };
    Ok(Some(Arc::new(config)))
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, StorageError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<_, _>>())
        .map_err(|err| refuse(format!("{what} {}: {err}", path.display())))?;
    if certs.is_empty() {
        return Err(refuse(format!(
            "{what} {}: no certificate in the file",
            path.display()
        )));
    }
    Ok(certs)
}

/// `tokio_postgres`'s TLS factory over rustls; with no config, any TLS attempt fails (the conn
/// string's `sslmode=disable` means none is made).
#[derive(Clone)]
pub(crate) struct MakeRustls {
    config: Option<Arc<rustls::ClientConfig>>,
}

impl MakeRustls {
    pub(crate) fn new(config: Option<Arc<rustls::ClientConfig>>) -> Self {
        Self { config }
    }
}

impl MakeTlsConnect<Socket> for MakeRustls {
    type Stream = RustlsStream;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, io::Error> {
        Ok(RustlsConnect {
            config: self.config.clone(),
            domain: domain.to_owned(),
        })
    }
}

/// One TLS handshake to `domain`.
pub(crate) struct RustlsConnect {
    config: Option<Arc<rustls::ClientConfig>>,
    domain: String,
}

impl TlsConnect<Socket> for RustlsConnect {
    type Stream = RustlsStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream>> + Send>>;

    fn connect(self, stream: Socket) -> Self::Future {
        Box::pin(async move {
            let config = self
                .config
                .ok_or_else(|| io::Error::other("TLS to PostgreSQL is disabled (sslmode)"))?;
            let name = ServerName::try_from(self.domain)
                .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, stream)
                .await?;
            Ok(RustlsStream(Box::new(tls)))
        })
    }
}

/// A TLS session to the server.
pub(crate) struct RustlsStream(Box<tokio_rustls::client::TlsStream<Socket>>);

impl AsyncRead for RustlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for RustlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().0).poll_shutdown(cx)
    }
}

impl TlsStream for RustlsStream {
    fn channel_binding(&self) -> ChannelBinding {
        // Authentication here is by client certificate, where SCRAM channel binding plays no
        // part; the server's identity is checked by verify-full.
        ChannelBinding::none()
    }
}
