//! `hop bot start` (also `hop-bot start` through a symlink): the bot's side of machine identity,
//! Hop's tbot.
//!
//! The bot joins once with its one-time token, then renews its certificates with the current
//! ones before they expire and rewrites its outputs after each join or renewal. `config` reads
//! the YAML file and flags, `identity` keeps the bot's own identity in its storage directory,
//! `outputs` writes what other programs use (`svid` the SPIFFE SVIDs). This file owns the schedule: when to renew (at one
//! third of the lifetime remaining, or every `renewal_interval`) and how to wait after a failure
//! (exponential backoff, never past the certificate's expiry, the last good outputs left in
//! place). An identity that expired is recovered with the bot's bound key when it has one. With
//! `--oneshot` it joins, renews or recovers once, writes the outputs and returns.
//!
//! Between renewals it follows the cluster's CA rotations: every `TRUST_POLL` it asks Auth for
//! the trust (`GetTrust`); a new trust digest rewrites the identity's `cas.pem`, `known_hosts`
//! and `trust_digest`, a change of any CA's trusted keys or signer rewrites the outputs (their
//! CA files, database certificates, SVIDs and bundles), and when the user CA's phase asks
//! clients to move to the key that signs (`update_clients` and later), the bot renews at once,
//! with the same request ids and rules as any renewal.

pub mod config;
mod identity;
mod outputs;
mod svid;
mod workload_api;
pub mod workload_config;

use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};

use crate::cli::BotStartArgs;
use config::BotConfig;
use hop_api::proto::{CaTrust, TrustResponse};
use hop_api::timestamps::rfc3339;
use hop_ca::CaKind;
use hop_net::rotation::{Holder, TRUST_POLL, cert_signer, digest_is_stale, must_renew};
use hop_platform::clock;
use identity::BotIdentity;

/// The first wait after a failed renewal; doubled after each failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// `hop bot start`.
pub async fn start(args: BotStartArgs) -> anyhow::Result<()> {
    let cfg = BotConfig::resolve(&args)?;
    if cfg.outputs.is_empty() {
        tracing::warn!("no outputs configured: the bot keeps only its own identity");
    }
    let mut keys = outputs::OutputKeys::default();
    let mut id = first_identity(&cfg).await?;
    if cfg.oneshot {
        return outputs::write_all(&cfg.outputs, &id, &mut keys).await;
    }
    let workloads = workload_api::Workloads::new(cfg.services.clone());
    workloads.serve()?;
    let keys = &mut (keys, workloads);
    write_outputs(&cfg, &id, keys).await;
    let mut failures = 0u32;
    let mut seen: Option<String> = None;
    loop {
        let now = clock::wall();
        if id.expires <= now {
            id = after_expiry(&cfg, &id).await?;
            failures = 0;
            write_outputs(&cfg, &id, keys).await;
            continue;
        }
        let wait = if failures == 0 {
            next_renewal(&id, cfg.renewal_interval, now)
        } else {
            backoff(failures, id.remaining(now))
        };
        let mut follow = Follow {
            cfg: &cfg,
            id: &mut id,
            keys,
            seen: &mut seen,
        };
        if follow.wait_for_renewal(wait, failures == 0).await == Waited::Stop {
            tracing::info!("stopping");
            return Ok(());
        }
        match identity::renew(&cfg, &id).await {
            Ok(renewed) => {
                failures = 0;
                id = renewed;
                log_identity("renewed", &id);
                write_outputs(&cfg, &id, keys).await;
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::error!(
                    error = %format!("{e:#}"),
                    failures,
                    expires = %rfc3339(id.expires),
                    "renewal failed; retrying with backoff, the last good outputs stay in place"
                );
            }
        }
    }
}

/// How a wait for the next renewal ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waited {
    /// The renewal is due (its time came, or a CA rotation asks for it).
    Renew,
    /// Ctrl-C.
    Stop,
}

/// What one look at the cluster's trust asks of the bot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct TrustStep {
    /// Renew now: the user CA moves clients to the key that signs, and the bot's certificate is
    /// not from it.
    renew: bool,
    /// Save the trust (`cas.pem`, `known_hosts`, `trust_digest`): its digest is not the saved one.
    save_trust: bool,
    /// Rewrite the outputs: the saved trust changed, or a CA's keys or signer did.
    rewrite_outputs: bool,
}

/// Names what the outputs depend on in a `GetTrust` answer: every CA's trusted X.509 keys and
/// its signer (the SPIFFE bundle and the database CAs among them), and the trust digest.
fn trust_view(t: &TrustResponse) -> String {
    let mut parts = vec![t.trust_digest.clone()];
    for a in &t.authorities {
        let mut pems = a.x509_cert_pems.clone();
        pems.sort();
        parts.push(format!("{}|{}|{}", a.kind, a.signer_tls_pin, pems.concat()));
    }
    parts.join("\n")
}

/// What a look at the trust `t` asks, given the saved digest, the view last seen (`None` at the
/// first look) and the CA key that signed the bot's certificate (`None`: none trusted now).
fn trust_step(
    saved_digest: Option<&str>,
    last_view: Option<&str>,
    t: &TrustResponse,
    cert_signer: Option<&str>,
) -> TrustStep {
    let renew = user_authority(t)
        .is_some_and(|u| must_renew(Holder::Client, &u.phase, &u.signer_tls_pin, cert_signer));
    let save_trust = digest_is_stale(saved_digest, Some(&t.trust_digest));
    let rewrite_outputs = save_trust || last_view.is_some_and(|v| v != trust_view(t));
    TrustStep {
        renew,
        save_trust,
        rewrite_outputs,
    }
}

fn user_authority(t: &TrustResponse) -> Option<&CaTrust> {
    t.authorities.iter().find(|a| a.kind == "user")
}

/// The bot between renewals, following the cluster's trust.
struct Follow<'a> {
    cfg: &'a BotConfig,
    id: &'a mut BotIdentity,
    keys: &'a mut (outputs::OutputKeys, workload_api::Workloads),
    seen: &'a mut Option<String>,
}

impl Follow<'_> {
    /// Waits `wait` for the next renewal, looking at the cluster's trust every [`TRUST_POLL`];
    /// a CA rotation ends the wait early when `early` (not while backing off after a failure).
    async fn wait_for_renewal(&mut self, wait: Duration, early: bool) -> Waited {
        let due = clock::tokio_now() + wait;
        loop {
            let left = due.saturating_duration_since(clock::tokio_now());
            if left.is_zero() {
                return Waited::Renew;
            }
            tokio::select! {
                () = tokio::time::sleep(left.min(TRUST_POLL)) => {}
                _ = tokio::signal::ctrl_c() => return Waited::Stop,
            }
            if clock::tokio_now() >= due {
                return Waited::Renew;
            }
            match self.follow_trust(early).await {
                Ok(true) if early => return Waited::Renew,
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %format!("{e:#}"), "cannot ask for the cluster's trust; will retry")
                }
            }
        }
    }

    /// One look at the cluster's trust: saves it and rewrites the outputs as [`trust_step`]
    /// says; whether the bot must renew now.
    async fn follow_trust(&mut self, early: bool) -> anyhow::Result<bool> {
        let t = crate::trust::fetch_trust(&self.id.login).await?;
        let signer = user_authority(&t).and_then(|u| {
            cert_signer(
                &self.id.login.cert.chain_pem,
                &u.x509_cert_pems,
                CaKind::User,
                clock::wall(),
            )
        });
        let step = trust_step(
            crate::trust::saved_digest(&self.id.paths).as_deref(),
            self.seen.as_deref(),
            &t,
            signer.as_deref(),
        );
        if step.save_trust {
            crate::trust::save_trust(
                &self.id.paths,
                &t.trusted_cas_pem,
                &t.known_hosts,
                &t.trust_digest,
            )?;
            identity::sync_dir(&self.id.paths.keys_dir());
            *self.id = identity::load(&self.cfg.storage)?
                .ok_or_else(|| anyhow::anyhow!("the bot's identity cannot be read back"))?;
            tracing::info!(trust_digest = %t.trust_digest, "the cluster's trusted CAs changed; saved them");
        }
        *self.seen = Some(trust_view(&t));
        if step.renew {
            let phase = user_authority(&t)
                .map(|u| u.phase.as_str())
                .unwrap_or_default();
            if signer.is_none() && phase == "standby" {
                tracing::warn!(
                    "the bot's certificate is from a user CA key the cluster dropped: the renewal will be refused; the bot recovers with its bound key once it expires, or needs a new token"
                );
            } else {
                tracing::info!(%phase, "the user CA is rotating: renewing onto the key that signs");
            }
        }
        // A renewal rewrites the outputs anyway.
        if step.rewrite_outputs && !(step.renew && early) {
            write_outputs(self.cfg, self.id, self.keys).await;
        }
        Ok(step.renew)
    }
}

/// Writes the outputs and refreshes the Workload API's SVIDs, logging (not returning) a failure:
/// the next renewal tries again.
async fn write_outputs(
    cfg: &BotConfig,
    id: &BotIdentity,
    (keys, workloads): &mut (outputs::OutputKeys, workload_api::Workloads),
) {
    if let Err(e) = outputs::write_all(&cfg.outputs, id, keys).await {
        tracing::error!(error = %format!("{e:#}"), "outputs not all written");
    }
    if let Err(e) = workloads.refresh(id).await {
        tracing::error!(error = %format!("{e:#}"), "Workload API SVIDs not refreshed; the last ones stay");
    }
}

/// An identity again once `id` expired: recovered with the bound key (retried with backoff
/// while Auth refuses or is away: an administrator may raise the limit), or an error when the
/// bot has no bound key.
async fn after_expiry(cfg: &BotConfig, id: &BotIdentity) -> anyhow::Result<BotIdentity> {
    if !identity::can_recover(&cfg.storage) {
        bail!(
            "the bot's certificates expired at {} without a successful renewal; add the bot again (`hop admin bots rm` and `add`) and start it with the new token",
            rfc3339(id.expires)
        );
    }
    let mut failures = 0u32;
    loop {
        match identity::recover(cfg, id).await {
            Ok(recovered) => {
                log_identity("recovered", &recovered);
                return Ok(recovered);
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::error!(error = %format!("{e:#}"), failures, "recovery with the bound key failed; retrying with backoff");
                let wait = FIRST_BACKOFF
                    .saturating_mul(1u32 << failures.min(5))
                    .min(MAX_BACKOFF);
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = tokio::signal::ctrl_c() => bail!("stopped while recovering"),
                }
            }
        }
    }
}

/// The identity the bot starts with: joined when storage holds none; renewed at once in
/// `--oneshot` (so the outputs are fresh) or when the stored one has expired.
async fn first_identity(cfg: &BotConfig) -> anyhow::Result<BotIdentity> {
    let stored = identity::load(&cfg.storage)
        .with_context(|| format!("reading the bot's identity in {}", cfg.storage.display()))?;
    let Some(stored) = stored else {
        let id = identity::join(cfg).await?;
        log_identity("joined", &id);
        return Ok(id);
    };
    let now = clock::wall();
    if stored.expires <= now && identity::can_recover(&cfg.storage) {
        tracing::warn!(expired = %rfc3339(stored.expires), "the bot's certificates expired; recovering with its bound key");
        let id = identity::recover(cfg, &stored).await?;
        log_identity("recovered", &id);
        return Ok(id);
    }
    if stored.expires <= now {
        bail!(
            "the bot's identity in {} expired at {}; add the bot again (`hop admin bots rm` and `add`) and start it with the new token",
            cfg.storage.display(),
            rfc3339(stored.expires)
        );
    }
    if cfg.oneshot {
        let id = identity::renew(cfg, &stored).await.context("renewing")?;
        log_identity("renewed", &id);
        return Ok(id);
    }
    log_identity("loaded", &stored);
    Ok(stored)
}

fn log_identity(what: &str, id: &BotIdentity) {
    tracing::info!(
        user = %id.login.profile.user,
        expires = %rfc3339(id.expires),
        "{what} the bot's identity"
    );
}

/// How long to wait before the next renewal of `id` at `now`: `interval` when given (never
/// past the point where one third of the lifetime is left), else until one third is left.
fn next_renewal(id: &BotIdentity, interval: Option<Duration>, now: SystemTime) -> Duration {
    renewal_wait(id.lifetime(), id.remaining(now), interval)
}

fn renewal_wait(lifetime: Duration, remaining: Duration, interval: Option<Duration>) -> Duration {
    let until_third = remaining.saturating_sub(lifetime / 3);
    match interval {
        Some(i) => i.min(until_third),
        None => until_third,
    }
}

/// The wait after `failures` failed renewals: doubling from [`FIRST_BACKOFF`] up to
/// [`MAX_BACKOFF`], and at most half the time left (but 500 ms at least) so that tries continue
/// up to expiry.
fn backoff(failures: u32, remaining: Duration) -> Duration {
    let exp = FIRST_BACKOFF
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    exp.min((remaining / 2).max(Duration::from_millis(500)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn renews_at_one_third_of_the_lifetime_remaining() {
        let hour = 60 * MIN;
        // Just issued: wait two thirds of the lifetime.
        assert_eq!(renewal_wait(hour, hour, None), 40 * MIN);
        // Past the point: at once.
        assert_eq!(renewal_wait(hour, 10 * MIN, None), Duration::ZERO);
        // An interval renews earlier, never later than the third.
        assert_eq!(renewal_wait(hour, hour, Some(5 * MIN)), 5 * MIN);
        assert_eq!(renewal_wait(hour, 25 * MIN, Some(10 * MIN)), 5 * MIN);
    }

    fn trust(digest: &str, user_phase: &str, signer: &str, spiffe: &[&str]) -> TrustResponse {
        TrustResponse {
            trust_digest: digest.into(),
            authorities: vec![
                CaTrust {
                    kind: "user".into(),
                    phase: user_phase.into(),
                    signer_tls_pin: signer.into(),
                    ..Default::default()
                },
                CaTrust {
                    kind: "spiffe".into(),
                    phase: "standby".into(),
                    x509_cert_pems: spiffe.iter().map(|p| p.to_string()).collect(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn a_look_at_the_trust_renews_saves_and_rewrites_as_the_rotation_asks() {
        let (old, new) = ("sha256:old", "sha256:new");
        let t = trust("t1:a", "standby", old, &["S1"]);
        let view = trust_view(&t);
        // Nothing moved.
        assert_eq!(
            trust_step(Some("t1:a"), Some(&view), &t, Some(old)),
            TrustStep::default()
        );
        // The first look of a bot from before digests saves the trust and rewrites.
        assert_eq!(
            trust_step(None, None, &t, Some(old)),
            TrustStep {
                renew: false,
                save_trust: true,
                rewrite_outputs: true
            }
        );
        // init: a new key is trusted; the bot's certificate stays.
        let init = trust("t1:b", "init", old, &["S1"]);
        assert_eq!(
            trust_step(Some("t1:a"), Some(&view), &init, Some(old)),
            TrustStep {
                renew: false,
                save_trust: true,
                rewrite_outputs: true
            }
        );
        // update_clients, update_servers, rollback, standby: onto the signer.
        for (phase, signer, cert) in [
            ("update_clients", new, old),
            ("update_servers", new, old),
            ("rollback", old, new),
            ("standby", new, old),
        ] {
            let t = trust("t1:b", phase, signer, &["S1"]);
            assert!(
                trust_step(Some("t1:b"), Some(&trust_view(&t)), &t, Some(cert)).renew,
                "{phase}"
            );
            assert!(
                !trust_step(Some("t1:b"), None, &t, Some(signer)).renew,
                "{phase}"
            );
        }
        // A SPIFFE rotation leaves the digest and rewrites the outputs (the bundle).
        let spiffe = trust("t1:a", "standby", old, &["S1", "S2"]);
        assert_eq!(
            trust_step(Some("t1:a"), Some(&view), &spiffe, Some(old)),
            TrustStep {
                renew: false,
                save_trust: false,
                rewrite_outputs: true
            }
        );
    }

    #[test]
    fn backoff_doubles_up_to_a_ceiling_and_stays_within_the_lifetime() {
        let lots = 60 * MIN;
        let waits: Vec<u64> = (1..=7).map(|f| backoff(f, lots).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(backoff(40, Duration::from_secs(10)), Duration::from_secs(5));
        assert_eq!(backoff(3, Duration::ZERO), Duration::from_millis(500));
    }
}
