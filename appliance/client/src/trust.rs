//! A login's saved trust — `cas.pem`, `known_hosts` and `trust_digest` under `keys/<proxy>/` —
//! kept in step with the cluster's while a CA rotates.
//!
//! The proxy's certificate carries the digest of the CA keys the cluster trusts now
//! (`hop_ca::trust_digest_x509`). A command that verified the proxy with the saved `cas.pem`
//! compares that digest with the saved one ([`refresh_trust_if_stale`]); when it differs, or
//! none was saved (a profile from before digests), it asks Auth (`GetTrust`) and rewrites the
//! three files, each atomically and 0600, the digest last, before it goes on. That is how a
//! client learns of a host CA's new key before the proxy or a node presents a certificate from
//! it: `known_hosts` then holds both keys, and OpenSSH (which reads it after `hop proxy ssh`
//! started relaying) accepts either.

use anyhow::{Context, bail};

use crate::profile::{Login, Paths};
use hop_api::proto::auth_public_client::AuthPublicClient;
use hop_api::proto::{GetTrustRequest, TrustResponse};
use hop_net::connect::{status_error, tls_channel};
use hop_net::files::write_private;
use hop_net::rotation::digest_is_stale;

/// The trust digest saved with the login's CAs; `None` when none was (or it cannot be read).
pub fn saved_digest(paths: &Paths) -> Option<String> {
    std::fs::read_to_string(paths.trust_digest())
        .ok()
        .map(|d| d.trim().to_string())
        .filter(|d| !d.is_empty())
}

/// Writes the cluster's trusted CAs (`cas.pem`), host keys (`known_hosts`) and their digest,
/// each atomically and 0600; the digest last, so that an interrupted write is seen as stale. An
/// empty digest (an older Auth) removes the saved one.
pub fn save_trust(
    paths: &Paths,
    cas_pem: &str,
    known_hosts: &str,
    digest: &str,
) -> anyhow::Result<()> {
    if cas_pem.trim().is_empty() || known_hosts.trim().is_empty() {
        bail!("Auth answered no trusted CA certificates or host keys; the saved ones stay");
    }
    write_private(&paths.cas(), cas_pem.as_bytes())?;
    write_private(&paths.known_hosts(), known_hosts.as_bytes())?;
    let digest = digest.trim();
    if digest.is_empty() {
        match std::fs::remove_file(paths.trust_digest()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("removing {}", paths.trust_digest().display())));
            }
        }
        return Ok(());
    }
    write_private(&paths.trust_digest(), format!("{digest}\n").as_bytes())?;
    Ok(())
}

/// Asks Auth, through the login's proxy, for every trusted CA key and each CA's phase.
pub async fn fetch_trust(login: &Login) -> anyhow::Result<TrustResponse> {
    let channel = tls_channel(&login.profile.proxy, &login.trust, Some(&login.cert)).await?;
    Ok(AuthPublicClient::new(channel)
        .get_trust(GetTrustRequest {})
        .await
        .map_err(status_error)
        .context("asking the cluster for its trusted CAs")?
        .into_inner())
}

/// Asks Auth for the cluster's trust and saves it for `login` (see [`save_trust`]).
pub async fn refresh_trust(login: &Login) -> anyhow::Result<TrustResponse> {
    let t = fetch_trust(login).await?;
    save_trust(
        &login.paths,
        &t.trusted_cas_pem,
        &t.known_hosts,
        &t.trust_digest,
    )?;
    Ok(t)
}

/// The trust digest the proxy's certificate `peer_cert` (DER, already verified) carries.
pub fn presented_digest(peer_cert: Option<&[u8]>) -> Option<String> {
    hop_ca::trust_digest_x509(peer_cert?).ok().flatten()
}

/// Refreshes `login`'s saved trust when the digest the proxy's certificate `peer_cert` carries
/// differs from the saved one (see `hop_net::rotation::digest_is_stale`); whether it did.
pub async fn refresh_trust_if_stale(
    login: &Login,
    peer_cert: Option<&[u8]>,
) -> anyhow::Result<bool> {
    let presented = presented_digest(peer_cert);
    if !digest_is_stale(saved_digest(&login.paths).as_deref(), presented.as_deref()) {
        return Ok(false);
    }
    let t = refresh_trust(login).await?;
    tracing::info!(
        trust_digest = %t.trust_digest,
        "the cluster's trusted CAs changed; saved them"
    );
    Ok(true)
}

/// [`refresh_trust_if_stale`] for commands that go on whatever happens: a failure is a warning
/// on standard error (the saved trust stays, and may still do).
pub async fn refresh_trust_or_warn(login: &Login, peer_cert: Option<&[u8]>) {
    if let Err(e) = refresh_trust_if_stale(login, peer_cert).await {
        eprintln!("hop: warning: the cluster's CAs changed and could not be saved: {e:#}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn trust_is_saved_private_with_its_digest_and_an_empty_one_forgets_it() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path().to_path_buf(), "p:3080", "alice");
        hop_net::files::ensure_dir(&paths.home.join("keys")).unwrap();
        hop_net::files::ensure_dir(&paths.keys_dir()).unwrap();
        assert_eq!(saved_digest(&paths), None);
        save_trust(&paths, "CAS", "@cert-authority *.c ssh-ed25519 A", "t1:ab").unwrap();
        assert_eq!(saved_digest(&paths).as_deref(), Some("t1:ab"));
        assert_eq!(std::fs::read_to_string(paths.cas()).unwrap(), "CAS");
        for p in [paths.cas(), paths.known_hosts(), paths.trust_digest()] {
            assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        }
        assert!(!digest_is_stale(
            saved_digest(&paths).as_deref(),
            Some("t1:ab")
        ));
        assert!(digest_is_stale(
            saved_digest(&paths).as_deref(),
            Some("t1:cd")
        ));
        save_trust(&paths, "CAS2", "KH2", "").unwrap();
        assert_eq!(saved_digest(&paths), None);
        assert!(save_trust(&paths, "", "KH", "t1:ab").is_err());
        assert_eq!(std::fs::read_to_string(paths.cas()).unwrap(), "CAS2");
    }

    #[test]
    fn a_certificate_without_a_digest_presents_none() {
        let ca = hop_ca::CertAuthority::generate(
            hop_ca::CaKind::Host,
            "c",
            hop_platform::clock::wall(),
            &mut rand::rng(),
        )
        .unwrap();
        let pem = ca.public().x509_cert_pem.unwrap();
        let der = hop_ca::parse_pem_certs(&pem).unwrap().remove(0);
        assert_eq!(presented_digest(Some(&der)), None);
        assert_eq!(presented_digest(None), None);
    }
}
