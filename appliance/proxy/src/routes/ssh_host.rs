//! The proxy's own SSH server identities: a fresh host key with a certificate from the cluster's
//! host CA for the names it answers to, and the russh server settings every SSH server of the
//! proxy shares (user certificates only, short rejection delays, keepalives). Used by the jump
//! host and by sessions the proxy terminates (`forward`).

use std::time::Duration;

use anyhow::{Context, anyhow};
use russh::keys::Certificate;

use hop_auth::AuthServer;

/// A russh server configuration presenting a new key certified for `names` (key id `key_id`,
/// valid `ttl`), closing connections idle for `inactivity`.
pub fn certified_server_config(
    auth: &AuthServer,
    key_id: &str,
    names: &[String],
    ttl: Duration,
    inactivity: Option<Duration>,
) -> anyhow::Result<russh::server::Config> {
    let pair = hop_ca::generate_ssh_keypair(&mut rand::rng()).map_err(|e| anyhow!("{e}"))?;
    let cert = auth
        .authorities()
        .host
        .issue_host_ssh(
            &pair.public_openssh,
            key_id,
            names,
            auth.now(),
            ttl,
            &mut rand::rng(),
        )
        .map_err(|e| anyhow!("host certificate for {}: {e}", names.join(", ")))?;
    let key = russh::keys::PrivateKey::from_openssh(pair.private_openssh.trim())
        .context("reading a generated host key")?;
    let cert = Certificate::from_openssh(cert.trim()).context("reading a host certificate")?;
    let mut methods = russh::MethodSet::empty();
    methods.push(russh::MethodKind::PublicKey);
    Ok(russh::server::Config {
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
    })
}
