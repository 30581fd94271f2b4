//! What a CA rotation asks of the proxy's own certificates, as pure decisions, and the trusted
//! CA sets the proxy reads again after each rotation step.
//!
//! This module owns the reissue rule of the proxy's TLS certificate ([`must_reissue`]) and of
//! the jump host's SSH host certificate ([`signer_stale`]), the client CA certificates the TLS
//! listener accepts ([`client_ca_pems`]) and the host CA keys connected agents must be signed by
//! ([`trusted_host_pins`]). It does no IO and reads no clock: `cert.rs` and `routes/jump.rs` wait
//! on [`AuthServer::watch_authorities`] ([`authorities_changed`]) and ask it.
//!
//! The rule, after Teleport's phases (`hop_auth::rotation`):
//!
//! * a certificate that carries another trust digest than the cluster's is reissued at once
//!   (`init` added a key, `standby` dropped one): the new certificate carries the new digest, so
//!   that clients learn they must fetch the CAs again;
//! * in `update_servers`, `rollback` and `standby`, a certificate not signed by the key that
//!   signs now is reissued (servers move to the signing key);
//! * in `update_clients` a change of signer alone reissues nothing: clients may not trust the new
//!   key yet. A digest change in that phase (another CA's rotation, or a proxy that starts then)
//!   does get a certificate from the new key: the signer is the only key that can issue.

use hop_auth::AuthServer;
use hop_auth::rotation::Phase;
use hop_ca::CaKind;

/// Whether servers must present certificates of the key that signs now in `phase`.
#[must_use]
pub fn servers_follow_signer(phase: Phase) -> bool {
    matches!(
        phase,
        Phase::UpdateServers | Phase::Rollback | Phase::Standby
    )
}

/// Whether a server certificate signed by `cert_signer` must be replaced in `phase`, the key
/// that signs now being `current_signer` (`None`: not known, which never equals a known key).
#[must_use]
pub fn signer_stale(phase: Phase, cert_signer: Option<&str>, current_signer: Option<&str>) -> bool {
    servers_follow_signer(phase) && (cert_signer.is_none() || cert_signer != current_signer)
}

/// Whether the proxy's TLS certificate (signed by `cert_signer`, carrying `cert_digest`) must be
/// reissued while the host CA is in `phase`, signs with `current_signer` and the cluster's trust
/// digest is `current_digest`.
#[must_use]
pub fn must_reissue(
    phase: Phase,
    cert_signer: Option<&str>,
    current_signer: Option<&str>,
    cert_digest: Option<&str>,
    current_digest: &str,
) -> bool {
    cert_digest != Some(current_digest) || signer_stale(phase, cert_signer, current_signer)
}

/// The PEM of every trusted user and host CA certificate: the client certificates the TLS
/// listener accepts (each route then requires the kind it needs).
#[must_use]
pub fn client_ca_pems(auth: &AuthServer) -> Vec<String> {
    let cas = auth.authorities();
    [CaKind::User, CaKind::Host]
        .into_iter()
        .flat_map(|kind| cas.trusted(kind).iter())
        .filter_map(|ca| ca.x509_cert_pem.clone())
        .collect()
}

/// The SPKI pins of every trusted host CA key: what an agent's certificate must be signed by.
#[must_use]
pub fn trusted_host_pins(auth: &AuthServer) -> Vec<String> {
    auth.authorities()
        .trusted(CaKind::Host)
        .iter()
        .filter_map(|ca| ca.x509_spki_sha256.clone())
        .collect()
}

/// Returns when the cluster's CAs changed; never when there is nothing to watch (or the watch
/// closed, which it does only when Auth is gone).
pub async fn authorities_changed(changes: &mut Option<tokio::sync::watch::Receiver<u64>>) {
    let closed = match changes.as_mut() {
        Some(rx) => rx.changed().await.is_err(),
        None => true,
    };
    if closed {
        *changes = None;
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (phase, certificate's signer, current signer, certificate's digest, reissue?)
    type Row = (
        Phase,
        Option<&'static str>,
        Option<&'static str>,
        Option<&'static str>,
        bool,
    );

    const OLD: Option<&str> = Some("old");
    const NEW: Option<&str> = Some("new");

    #[test]
    fn the_reissue_rule_follows_the_phases() {
        use Phase::*;
        // The current digest is "d2".
        let table: &[Row] = &[
            // Nothing changed.
            (Standby, OLD, OLD, Some("d2"), false),
            // init: a key was added, the digest changed; the old key still signs.
            (Init, OLD, OLD, Some("d1"), true),
            (Init, OLD, OLD, Some("d2"), false),
            // update_clients: the new key signs, servers keep their certificates...
            (UpdateClients, OLD, NEW, Some("d2"), false),
            // ...unless the digest forces a reissue (then from the new key, unavoidably).
            (UpdateClients, OLD, NEW, Some("d1"), true),
            // update_servers: servers move to the new key.
            (UpdateServers, OLD, NEW, Some("d2"), true),
            (UpdateServers, NEW, NEW, Some("d2"), false),
            // rollback: the old key signs again.
            (Rollback, NEW, OLD, Some("d2"), true),
            (Rollback, OLD, OLD, Some("d2"), false),
            // standby: the old key was dropped (and the digest changed with it).
            (Standby, OLD, NEW, Some("d1"), true),
            (Standby, OLD, NEW, Some("d2"), true),
            (Standby, NEW, NEW, Some("d1"), true),
            // A certificate with no digest, or whose signer is not known.
            (Standby, OLD, OLD, None, true),
            (Standby, None, OLD, Some("d2"), true),
            (UpdateClients, None, NEW, Some("d2"), false),
        ];
        for &(phase, cert, current, digest, want) in table {
            assert_eq!(
                must_reissue(phase, cert, current, digest, "d2"),
                want,
                "{phase:?} cert={cert:?} current={current:?} digest={digest:?}"
            );
        }
    }

    #[test]
    fn only_the_server_phases_move_servers_to_the_signer() {
        assert!(!signer_stale(Phase::Init, OLD, NEW));
        assert!(!signer_stale(Phase::UpdateClients, OLD, NEW));
        for phase in [Phase::UpdateServers, Phase::Rollback, Phase::Standby] {
            assert!(signer_stale(phase, OLD, NEW));
            assert!(!signer_stale(phase, NEW, NEW));
        }
    }
}
