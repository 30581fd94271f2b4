//! How a db agent proves itself to databases: one P-256 key, and per database user a client
//! certificate from the cluster's db CA (common name = the database user), asked of Auth with
//! `SignDatabaseUser` and cached until two thirds of its life.
//!
//! This module owns that cache and the rustls client configuration per (database, user): the
//! database's certificate is verified against the spec's CA file, or the system roots. No
//! password is ever involved.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::DbSpec;
use crate::node::audit::ChannelMaker;
use hop_api::proto::SignDatabaseUserRequest;
use hop_api::proto::database_access_client::DatabaseAccessClient;
use hop_net::connect::ConnectError;
use hop_net::trust::{ClientCert, Trust, TrustError, server_client_config};
use hop_platform::clock;

/// A configuration stays cached this long at most: the certificates live an hour.
const REFRESH_AFTER: Duration = Duration::from_secs(40 * 60);

/// (database, database user) → when the configuration was made, and the configuration.
type ConfigCache = HashMap<(String, String), (Instant, Arc<rustls::ClientConfig>)>;

/// Why there is no client certificate configuration for a database user.
#[derive(Debug, thiserror::Error)]
pub enum ClientCertError {
    /// Auth could not be reached through the proxy (the network's, or Auth is away).
    #[error("reaching Auth")]
    ReachAuth(#[source] ConnectError),
    /// Auth refused to sign (the agent's role, or Auth's trouble), in Auth's words.
    #[error("Auth refused a client certificate: {message}")]
    Refused { message: String },
    /// The spec's CA file cannot be read (the configuration's, or the disk's).
    #[error("reading the CA file {} of database {name:?}", path.display())]
    CaFile {
        path: PathBuf,
        name: String,
        #[source]
        source: std::io::Error,
    },
    /// The CA or the signed certificate is unusable.
    #[error(transparent)]
    Trust(#[from] TrustError),
}

pub struct ClientCerts {
    key: hop_ca::X509KeyPair,
    connect: ChannelMaker,
    cache: Mutex<ConfigCache>,
}

impl ClientCerts {
    pub fn new(connect: ChannelMaker) -> Result<Self, hop_ca::CaError> {
        Ok(Self {
            key: hop_ca::generate_x509_keypair(&mut rand::rng())?,
            connect,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The TLS client configuration to log in to `spec` as `db_user`.
    pub async fn config_for(
        &self,
        spec: &DbSpec,
        db_user: &str,
    ) -> Result<Arc<rustls::ClientConfig>, ClientCertError> {
        let key = (spec.name.clone(), db_user.to_string());
        if let Some((at, cfg)) = self.cache.lock().ok().and_then(|c| c.get(&key).cloned())
            && clock::since(at) < REFRESH_AFTER
        {
            return Ok(cfg);
        }
        let channel = (self.connect)().await.map_err(ClientCertError::ReachAuth)?;
        let cert = DatabaseAccessClient::new(channel)
            .sign_database_user(SignDatabaseUserRequest {
                db_user: db_user.to_string(),
                tls_public_key: self.key.public_spki_der.clone(),
            })
            .await
            .map_err(|s| ClientCertError::Refused {
                message: s.message().to_string(),
            })?
            .into_inner();
        let trust = match &spec.ca_file {
            None if spec.ca_pem.is_some() => Trust::CaPem(spec.ca_pem.clone().unwrap_or_default()),
            Some(path) => Trust::CaPem(std::fs::read_to_string(path).map_err(|source| {
                ClientCertError::CaFile {
                    path: path.clone(),
                    name: spec.name.clone(),
                    source,
                }
            })?),
            None => Trust::System,
        };
        let cfg = Arc::new(server_client_config(
            &trust,
            Some(&ClientCert {
                chain_pem: cert.tls_certificate_pem,
                key_pem: self.key.private_pkcs8_pem.clone(),
            }),
            b"",
        )?);
        if let Ok(mut c) = self.cache.lock() {
            c.retain(|_, (at, _)| clock::since(*at) < REFRESH_AFTER);
            c.insert(key, (clock::now(), cfg.clone()));
        }
        Ok(cfg)
    }
}
