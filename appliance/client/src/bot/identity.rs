//! The bot's own identity in its storage directory: joining with the one-time token, renewing
//! with the current certificate, and keeping both on disk.
//!
//! The storage directory has the `$HOP_HOME` layout (`profile`), so the bot's identity is a
//! login like a person's. The key pair is made at join and kept across renewals (so that no
//! reader ever sees a key and a certificate that do not match); the certificates are replaced
//! at each renewal. Every file is written 0600 through a temporary file, fsync and rename, and the
//! new identity is on disk before anything uses it. A renewal's request id is written to
//! `renewal.json` before the request is sent, so that a retry, even from a restarted bot, is the
//! same request (Auth answers it with the same certificates instead of treating it as a copy).
//! A bound key (`bound.key`, P-256), made and written before the join that registers it, lets a
//! bot whose certificates expired recover without a new token, as often as Auth allows; each
//! recovery rotates it (`bound.key.next`).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow};
use serde::{Deserialize, Serialize};

use super::config::BotConfig;
use crate::profile::{self, Login, Paths, Profile};
use hop_api::proto::LoginResponse;
use hop_api::proto::bots_client::BotsClient;
use hop_api::proto::{JoinBotRequest, RecoverBotRequest, RenewBotRequest};
use hop_net::connect::{status_error, tls_channel};
use hop_net::files::{ensure_dir, write_private};
use hop_net::trust::{ClientCert, Trust, normalize_pin};

/// The bot's identity as loaded from its storage.
#[derive(Debug, Clone)]
pub struct BotIdentity {
    pub login: Login,
    pub paths: Paths,
    pub issued: SystemTime,
    pub expires: SystemTime,
}

impl BotIdentity {
    /// The part of its lifetime left at `now`.
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.expires.duration_since(now).unwrap_or_default()
    }

    pub fn lifetime(&self) -> Duration {
        self.expires.duration_since(self.issued).unwrap_or_default()
    }
}

/// A renewal sent and not yet answered, kept so that its retry is the same request.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PendingRenewal {
    request_id: String,
}

fn pending_path(storage: &Path) -> PathBuf {
    storage.join("renewal.json")
}

/// The bound key (P-256, PKCS#8 PEM) the bot registered at its join, to recover with.
fn bound_key_path(storage: &Path) -> PathBuf {
    storage.join("bound.key")
}

/// The identity in `storage`, if the bot has joined (expired or not).
pub fn load(storage: &Path) -> anyhow::Result<Option<BotIdentity>> {
    let Ok((profile, paths)) = profile::current_profile(storage) else {
        return Ok(None);
    };
    let read = |p: PathBuf| {
        std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
    };
    let cert = ClientCert {
        chain_pem: read(paths.tls_cert())?,
        key_pem: read(paths.tls_key())?,
    };
    let (issued, expires) = validity(&cert.chain_pem)?;
    let trust = if profile.insecure {
        Trust::Insecure
    } else {
        Trust::CaPem(read(paths.cas())?)
    };
    Ok(Some(BotIdentity {
        login: Login {
            profile,
            cert,
            trust,
            paths: paths.clone(),
        },
        paths,
        issued,
        expires,
    }))
}

/// notBefore and notAfter of the first certificate of `pem`.
fn validity(pem: &str) -> anyhow::Result<(SystemTime, SystemTime)> {
    let der = first_cert(pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| anyhow!("the bot's certificate does not parse: {e}"))?;
    let at = |t: i64| UNIX_EPOCH + Duration::from_secs(u64::try_from(t).unwrap_or(0));
    Ok((
        at(cert.validity().not_before.timestamp()),
        at(cert.validity().not_after.timestamp()),
    ))
}

fn first_cert(pem: &str) -> anyhow::Result<Vec<u8>> {
    hop_ca::parse_pem_certs(pem)
        .map_err(|e| anyhow!("{e}"))?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("the bot's certificate file holds no certificate"))
}

/// The DER SubjectPublicKeyInfo of the first certificate of `pem` (the bot's TLS key).
fn public_key_der(pem: &str) -> anyhow::Result<Vec<u8>> {
    let der = first_cert(pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| anyhow!("the bot's certificate does not parse: {e}"))?;
    Ok(cert.public_key().raw.to_vec())
}

/// How the bot trusts the proxy before it holds the cluster's CAs.
fn first_trust(cfg: &BotConfig) -> anyhow::Result<Trust> {
    if cfg.insecure {
        tracing::warn!("insecure: the proxy's certificate is not verified");
        return Ok(Trust::Insecure);
    }
    match &cfg.ca_pin {
        Some(pin) => Ok(Trust::Pin(normalize_pin(pin)?)),
        None => Ok(Trust::System),
    }
}

/// Joins with the one-time token and keeps the identity in storage.
pub async fn join(cfg: &BotConfig) -> anyhow::Result<BotIdentity> {
    let token = cfg
        .token
        .as_deref()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            anyhow!(
                "the bot has no identity in {} and no join token (--token or onboarding.token)",
                cfg.storage.display()
            )
        })?;
    let mut rng = rand::rng();
    let ssh = hop_ca::generate_ssh_keypair(&mut rng).map_err(|e| anyhow!("{e}"))?;
    let tls = hop_ca::generate_x509_keypair(&mut rng).map_err(|e| anyhow!("{e}"))?;
    // The bound key is on disk before Auth hears of it.
    let bound = hop_ca::generate_x509_keypair(&mut rng).map_err(|e| anyhow!("{e}"))?;
    ensure_dir(&cfg.storage)?;
    write_private(
        &bound_key_path(&cfg.storage),
        bound.private_pkcs8_pem.as_bytes(),
    )?;
    sync_dir(&cfg.storage);
    let channel = tls_channel(&cfg.proxy, &first_trust(cfg)?, None).await?;
    let resp = BotsClient::new(channel)
        .join_bot(JoinBotRequest {
            token: token.to_string(),
            ssh_public_key: ssh.public_openssh.clone(),
            tls_public_key: tls.public_spki_der.clone(),
            ttl_seconds: cfg.certificate_ttl.as_secs(),
            bound_public_key: bound.public_spki_der.clone(),
        })
        .await
        .map_err(status_error)
        .context("joining")?
        .into_inner();
    let paths = Paths::new(cfg.storage.clone(), &cfg.proxy, &resp.username);
    ensure_dir(&cfg.storage)?;
    ensure_dir(&paths.keys_dir())?;
    write_private(&paths.ssh_key(), ssh.private_openssh.as_bytes())?;
    write_private(
        &paths.ssh_pub(),
        format!("{}\n", ssh.public_openssh.trim()).as_bytes(),
    )?;
    write_private(&paths.tls_key(), tls.private_pkcs8_pem.as_bytes())?;
    store_certificates(&paths, &resp)?;
    profile::save_profile(
        &cfg.storage,
        &Profile {
            proxy: cfg.proxy.clone(),
            user: resp.username.clone(),
            cluster: resp.cluster_name.clone(),
            ca_pin: cfg.ca_pin.clone(),
            insecure: cfg.insecure,
        },
    )?;
    sync_dir(&paths.keys_dir());
    sync_dir(&cfg.storage);
    load(&cfg.storage)?.ok_or_else(|| anyhow!("the identity just written cannot be read back"))
}

/// Renewal answers to discard as if the network had lost them, for fault-injection tests: the
/// environment variable [`DROP_ANSWERS_ENV`], read once, and only by debug builds (the tests');
/// a release build ignores it. Dropping an answer only makes the bot retry the same request.
pub const DROP_ANSWERS_ENV: &str = "HOP_BOT_TEST_DROP_ANSWERS";

static ANSWERS_TO_DROP: std::sync::OnceLock<std::sync::atomic::AtomicU32> =
    std::sync::OnceLock::new();

/// Whether to discard this answer (and count it).
fn drop_answer() -> bool {
    if !cfg!(debug_assertions) {
        return false;
    }
    let left = ANSWERS_TO_DROP.get_or_init(|| {
        std::sync::atomic::AtomicU32::new(
            std::env::var(DROP_ANSWERS_ENV)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        )
    });
    left.fetch_update(
        std::sync::atomic::Ordering::Relaxed,
        std::sync::atomic::Ordering::Relaxed,
        |n| n.checked_sub(1),
    )
    .is_ok()
}

/// Renews with the current certificate; the retry of an unanswered renewal is the same request.
pub async fn renew(cfg: &BotConfig, id: &BotIdentity) -> anyhow::Result<BotIdentity> {
    let request_id = pending_request(&cfg.storage)?;
    let ssh_public_key = std::fs::read_to_string(id.paths.ssh_pub())
        .with_context(|| format!("reading {}", id.paths.ssh_pub().display()))?;
    let tls_public_key = public_key_der(&id.login.cert.chain_pem)?;
    let channel = tls_channel(
        &id.login.profile.proxy,
        &id.login.trust,
        Some(&id.login.cert),
    )
    .await?;
    let resp = BotsClient::new(channel)
        .renew_bot(RenewBotRequest {
            request_id,
            ssh_public_key: ssh_public_key.trim().to_string(),
            tls_public_key,
            ttl_seconds: cfg.certificate_ttl.as_secs(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if drop_answer() {
        anyhow::bail!(
            "the renewal's answer was dropped ({DROP_ANSWERS_ENV}); retrying the same request"
        );
    }
    store_certificates(&id.paths, &resp)?;
    sync_dir(&id.paths.keys_dir());
    // Answered and stored: the next renewal is a new request.
    match std::fs::remove_file(pending_path(&cfg.storage)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(anyhow::Error::new(e).context("removing renewal.json")),
    }
    load(&cfg.storage)?.ok_or_else(|| anyhow!("the identity just written cannot be read back"))
}

/// Whether the bot holds a bound key to recover with.
pub fn can_recover(storage: &Path) -> bool {
    bound_key_path(storage).exists()
}

/// The next bound key, made before a recovery that registers it (key rotation).
fn next_bound_key_path(storage: &Path) -> PathBuf {
    storage.join("bound.key.next")
}

/// New certificates for an identity that expired, with a proof of possession of the bound key
/// (counted by Auth against the bot's recovery limit). Each recovery rotates the bound key: the
/// next one is on disk before Auth hears of it and replaces the current one once Auth answered;
/// when an answer was lost, the next key may be the one Auth holds, so it is tried first.
pub async fn recover(cfg: &BotConfig, id: &BotIdentity) -> anyhow::Result<BotIdentity> {
    let (current, next) = (
        bound_key_path(&cfg.storage),
        next_bound_key_path(&cfg.storage),
    );
    if let Ok(pem) = std::fs::read_to_string(&next)
        && let Ok(resp) = recover_with(cfg, id, &pem, &[]).await
    {
        std::fs::rename(&next, &current).context("keeping the bound key")?;
        return recovered(cfg, id, &resp);
    }
    let next_pem = match std::fs::read_to_string(&next) {
        Ok(pem) => pem,
        Err(_) => {
            let k = hop_ca::generate_x509_keypair(&mut rand::rng()).map_err(|e| anyhow!("{e}"))?;
            write_private(&next, k.private_pkcs8_pem.as_bytes())?;
            sync_dir(&cfg.storage);
            k.private_pkcs8_pem.clone()
        }
    };
    let next_public = hop_ca::proof_public_key(&next_pem).map_err(|e| anyhow!("{e}"))?;
    let pem = std::fs::read_to_string(&current).context("reading the bot's bound key")?;
    let resp = recover_with(cfg, id, &pem, &next_public).await?;
    std::fs::rename(&next, &current).context("keeping the new bound key")?;
    recovered(cfg, id, &resp)
}

/// Stores a recovery's certificates and reads the identity back.
fn recovered(
    cfg: &BotConfig,
    id: &BotIdentity,
    resp: &LoginResponse,
) -> anyhow::Result<BotIdentity> {
    store_certificates(&id.paths, resp)?;
    sync_dir(&id.paths.keys_dir());
    sync_dir(&cfg.storage);
    // A renewal unanswered before the expiry is moot now.
    let _ = std::fs::remove_file(pending_path(&cfg.storage));
    load(&cfg.storage)?.ok_or_else(|| anyhow!("the identity just written cannot be read back"))
}

/// One recovery: a proof with `key_pem` (naming `next_public` as the next bound key, if any).
async fn recover_with(
    cfg: &BotConfig,
    id: &BotIdentity,
    key_pem: &str,
    next_public: &[u8],
) -> anyhow::Result<LoginResponse> {
    let bot = id
        .login
        .profile
        .user
        .strip_prefix("bot-")
        .ok_or_else(|| anyhow!("{} is not a bot's identity", id.login.profile.user))?
        .to_string();
    let ssh_public_key = std::fs::read_to_string(id.paths.ssh_pub())
        .with_context(|| format!("reading {}", id.paths.ssh_pub().display()))?
        .trim()
        .to_string();
    let tls_public_key = public_key_der(&id.login.cert.chain_pem)?;
    let timestamp_unix = hop_platform::clock::wall()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let fingerprint = hop_api::bot_proof::key_fingerprint(&ssh_public_key, &tls_public_key);
    let message =
        hop_api::bot_proof::recovery_message(&bot, timestamp_unix, &fingerprint, next_public);
    let signature = hop_ca::sign_proof(key_pem, &message).map_err(|e| anyhow!("{e}"))?;
    let channel = tls_channel(&id.login.profile.proxy, &id.login.trust, None).await?;
    Ok(BotsClient::new(channel)
        .recover_bot(RecoverBotRequest {
            bot,
            timestamp_unix,
            signature,
            ssh_public_key,
            tls_public_key,
            ttl_seconds: cfg.certificate_ttl.as_secs(),
            next_bound_public_key: next_public.to_vec(),
        })
        .await
        .map_err(status_error)
        .context("recovering with the bound key")?
        .into_inner())
}

/// The id of the renewal in flight, made (and written durably) when there is none.
fn pending_request(storage: &Path) -> anyhow::Result<String> {
    let path = pending_path(storage);
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Ok(p) = serde_json::from_str::<PendingRenewal>(&text)
    {
        return Ok(p.request_id);
    }
    let request_id = uuid::Uuid::new_v4().to_string();
    write_private(
        &path,
        serde_json::to_string(&PendingRenewal {
            request_id: request_id.clone(),
        })?
        .as_bytes(),
    )?;
    sync_dir(storage);
    Ok(request_id)
}

/// Writes a join's or renewal's certificates and the cluster's CAs (each file atomically).
fn store_certificates(paths: &Paths, resp: &LoginResponse) -> anyhow::Result<()> {
    crate::trust::save_trust(
        paths,
        &resp.trusted_cas_pem,
        &resp.known_hosts,
        &resp.trust_digest,
    )?;
    write_private(
        &paths.ssh_cert(),
        format!("{}\n", resp.ssh_certificate.trim()).as_bytes(),
    )?;
    write_private(&paths.tls_cert(), resp.tls_certificate_pem.as_bytes())?;
    Ok(())
}

/// Makes the renames in `dir` durable (best effort: a failure is logged, the files are there).
pub(super) fn sync_dir(dir: &Path) {
    if let Err(e) = std::fs::File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot sync the directory");
    }
}
