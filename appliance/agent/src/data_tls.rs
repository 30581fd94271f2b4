//! The TLS configuration of an agent's data connections, kept from one session to the next.
//!
//! This module owns the one rustls client configuration that every data connection (ALPN
//! `hop-tunnel-data`) dials with, so that its session store lives as long as the identity: the
//! connection that replaces a used one resumes TLS 1.3 with a ticket the proxy issued on an
//! earlier one (PSK with ECDHE) instead of a full handshake with the host certificate. A renewed
//! certificate gets a new configuration and an empty store, so a ticket of the old certificate is
//! never offered again. Early data (0-RTT) stays off.
//!
//! It never decides anything: the proxy identifies and admits every data connection, resumed or
//! not (a lock, a deleted node or an expired certificate is refused as after a full handshake),
//! and every Dial on it is checked by `dial`. One data connection carries one session: nothing
//! of a previous session is carried over but the TLS ticket.

use std::sync::{Arc, Mutex};

use hop_net::trust::{TrustError, client_config};
use hop_net::tunnel::ALPN_TUNNEL_DATA;
use rustls::ClientConfig;
use rustls::client::Resumption;

use crate::identity::AgentIdentity;

/// Sessions kept per configuration. Each server name keeps a few TLS 1.3 tickets (rustls keeps
/// up to 8); an agent dials one proxy address, so this is ample.
const SESSIONS_KEPT: usize = 32;

/// The data connections' configuration, made once per host certificate.
#[derive(Default)]
pub(crate) struct DataTls {
    current: Mutex<Option<Made>>,
}

/// A configuration, the certificate it presents and the host CAs it trusts.
struct Made {
    chain_pem: String,
    host_ca_pem: String,
    config: Arc<ClientConfig>,
}

impl DataTls {
    /// The configuration for `id`'s data connections: the kept one while `id` presents the same
    /// certificate and trusts the same host CAs, else a new one (with a new, empty session
    /// store): after a CA rotation added a host key, the proxy's certificate from it is trusted.
    pub(crate) fn config(&self, id: &AgentIdentity) -> Result<Arc<ClientConfig>, TrustError> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(made) = current.as_ref()
            && made.chain_pem == id.cert.chain_pem
            && made.host_ca_pem == id.host_ca_pem
        {
            return Ok(made.config.clone());
        }
        let config = Arc::new(resuming(client_config(
            &id.trust(),
            Some(&id.cert),
            ALPN_TUNNEL_DATA,
        )?));
        *current = Some(Made {
            chain_pem: id.cert.chain_pem.clone(),
            host_ca_pem: id.host_ca_pem.clone(),
            config: config.clone(),
        });
        Ok(config)
    }
}

/// `cfg` keeping its sessions in memory for resumption, without early data; a TCP application's
/// session takes its keys out of rustls once the Dial is answered (`app::tcp`).
fn resuming(mut cfg: ClientConfig) -> ClientConfig {
    cfg.resumption = Resumption::in_memory_sessions(SESSIONS_KEPT);
    cfg.enable_early_data = false;
    cfg.enable_secret_extraction = true;
    cfg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::IdentityFile;
    use hop_net::trust::ClientCert;

    /// An identity with a fresh self-signed certificate (also its "host CA").
    fn identity() -> AgentIdentity {
        let ck = rcgen::generate_simple_self_signed(vec!["agent.test".to_string()]).unwrap();
        let pem = ck.cert.pem();
        AgentIdentity {
            meta: IdentityFile {
                host_id: "h".into(),
                cluster: "c".into(),
                role: "app".into(),
                expires_unix: 0,
                host_name: String::new(),
            },
            cert: ClientCert {
                chain_pem: pem.clone(),
                key_pem: ck.signing_key.serialize_pem(),
            },
            host_ca_pem: pem,
            ssh: None,
        }
    }

    #[test]
    fn one_configuration_per_certificate_without_early_data() {
        let tls = DataTls::default();
        let first = identity();
        let a = tls.config(&first).unwrap();
        let b = tls.config(&first).unwrap();
        assert!(
            Arc::ptr_eq(&a, &b),
            "the same certificate keeps its sessions"
        );
        assert!(!a.enable_early_data);
        assert_eq!(a.alpn_protocols, vec![ALPN_TUNNEL_DATA.to_vec()]);
        let renewed = identity();
        let c = tls.config(&renewed).unwrap();
        assert!(!Arc::ptr_eq(&a, &c), "a renewed certificate starts afresh");
        let mut more_trust = renewed.clone();
        more_trust.host_ca_pem = format!("{}{}", renewed.host_ca_pem, first.host_ca_pem);
        let d = tls.config(&more_trust).unwrap();
        assert!(
            !Arc::ptr_eq(&c, &d),
            "a host CA added by a rotation is trusted from the next connection on"
        );
    }
}
