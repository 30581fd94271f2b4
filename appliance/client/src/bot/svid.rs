//! The `spiffe-svid` output: an X.509 SVID for one SPIFFE path, asked of Auth with the bot's
//! current certificate, written as `svid.pem`, `svid_key.pem` and `svid_bundle.pem` (the trust
//! domain's CA certificates). The key is made once per bot process and destination and written
//! before the certificate that names it; every file is 0600, written atomically. Auth decides
//! whether the bot's roles allow the path; its refusal is reported as it came.

use std::path::Path;

use anyhow::{Context, anyhow, bail};

use super::identity::{BotIdentity, sync_dir};
use hop_api::proto::bots_client::BotsClient;
use hop_api::proto::{IssueSvidsRequest, SvidRequest};
use hop_ca::X509KeyPair;
use hop_net::connect::{status_error, tls_channel};
use hop_net::files::{ensure_dir, write_private};

/// Asks Auth for an SVID for `path` with `key` and writes the three files in `dir`.
pub(super) async fn write_svid(
    dir: &Path,
    path: &str,
    id: &BotIdentity,
    key: &X509KeyPair,
) -> anyhow::Result<()> {
    let channel = tls_channel(
        &id.login.profile.proxy,
        &id.login.trust,
        Some(&id.login.cert),
    )
    .await?;
    let resp = BotsClient::new(channel)
        .issue_svids(IssueSvidsRequest {
            svids: vec![SvidRequest {
                path: path.to_string(),
                public_key: key.public_spki_der.clone(),
                ttl_seconds: 0,
            }],
        })
        .await
        .map_err(status_error)
        .with_context(|| format!("asking for an SVID for {path}"))?
        .into_inner();
    let [svid] = resp.svids.as_slice() else {
        bail!("Auth answered {} SVIDs for one asked", resp.svids.len());
    };
    if svid.path != path || resp.bundle_pem.trim().is_empty() {
        return Err(anyhow!(
            "Auth answered an SVID for another path or no bundle"
        ));
    }
    ensure_dir(dir)?;
    let key_path = dir.join("svid_key.pem");
    if std::fs::read(&key_path).ok().as_deref() != Some(key.private_pkcs8_pem.as_bytes()) {
        write_private(&key_path, key.private_pkcs8_pem.as_bytes())?;
    }
    write_private(&dir.join("svid_bundle.pem"), resp.bundle_pem.as_bytes())?;
    write_private(&dir.join("svid.pem"), svid.certificate_pem.as_bytes())?;
    sync_dir(dir);
    tracing::info!(spiffe_id = %svid.spiffe_id, dir = %dir.display(), "wrote SVID");
    Ok(())
}
