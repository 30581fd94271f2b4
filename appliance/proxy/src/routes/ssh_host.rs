//! The proxy's own SSH server identities: a fresh host key with a certificate from the cluster's
//! host CA for the names it answers to, and the russh server settings every SSH server of the
//! proxy shares (user certificates only, short rejection delays, keepalives). Used by the jump
//! host and by sessions the proxy terminates (`forward`).

use std::time::Duration;

use russh::keys::Certificate;

use hop_auth::AuthServer;

/// Why the proxy has no SSH server identity: the host CA refused to certify the names, or a
/// key or certificate just made does not read back (a bug).
#[derive(Debug, thiserror::Error)]
pub enum SshIdentityError {
    /// Generating the host key failed.
    #[error("{cause}")]
    Key { cause: hop_ca::CaError },
    #[error("host certificate for {names}: {cause}")]
    Certificate {
        names: String,
        cause: hop_ca::CaError,
    },
    #[error("reading a generated host key")]
    ReadKey(#[source] russh::keys::ssh_key::Error),
    #[error("reading a host certificate")]
    ReadCertificate(#[source] russh::keys::ssh_key::Error),
}

/// A server configuration of [`certified_server_config`] and the fingerprint of the host CA key
/// that signed its certificate (to tell, after a CA rotation step, whether it must be replaced).
pub struct CertifiedConfig {
    pub config: russh::server::Config,
    pub signer: Option<String>,
}

/// A russh server configuration presenting a new key certified for `names` (key id `key_id`,
/// valid `ttl`) by the host CA key servers use in this phase, closing connections idle for
/// `inactivity`.
pub fn certified_server_config(
    auth: &AuthServer,
    key_id: &str,
    names: &[String],
    ttl: Duration,
    inactivity: Option<Duration>,
) -> Result<CertifiedConfig, SshIdentityError> {
    let pair = hop_ca::generate_ssh_keypair(&mut rand::rng())
        .map_err(|cause| SshIdentityError::Key { cause })?;
    // One snapshot: the key that signs is the one whose fingerprint is returned. The proxy is a
    // server: its certificate comes from the key servers use in this phase (the old one until
    // update_servers), which every client that kept up trusts.
    let cas = auth.authorities();
    let (issuer, issuer_public) = cas.set(hop_ca::CaKind::Host).server_key();
    let signer = issuer_public.ssh_fingerprint.clone();
    let cert = issuer
        .issue_host_ssh(
            &pair.public_openssh,
            key_id,
            names,
            auth.now(),
            ttl,
            &mut rand::rng(),
        )
        .map_err(|cause| SshIdentityError::Certificate {
            names: names.join(", "),
            cause,
        })?;
    let key = russh::keys::PrivateKey::from_openssh(pair.private_openssh.trim())
        .map_err(SshIdentityError::ReadKey)?;
    let cert = Certificate::from_openssh(cert.trim()).map_err(SshIdentityError::ReadCertificate)?;
    let mut methods = russh::MethodSet::empty();
    methods.push(russh::MethodKind::PublicKey);
    let config = russh::server::Config {
        server_id: russh::SshId::Standard(
            format!("SSH-2.0-Hop_{}", env!("CARGO_PKG_VERSION")).into(),
        ),
        methods,
        auth_rejection_time: Duration::from_millis(300),
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![key],
        certificates: vec![cert],
        max_auth_attempts: 6,
        inactivity_timeout: inactivity,
        keepalive_interval: Some(Duration::from_secs(60)),
        keepalive_max: 3,
        nodelay: true,
        ..Default::default()
    };
    Ok(CertifiedConfig { config, signer })
}
