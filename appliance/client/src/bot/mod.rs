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
use hop_api::timestamps::rfc3339;
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
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("stopping");
                return Ok(());
            }
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

    #[test]
    fn backoff_doubles_up_to_a_ceiling_and_stays_within_the_lifetime() {
        let lots = 60 * MIN;
        let waits: Vec<u64> = (1..=7).map(|f| backoff(f, lots).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(backoff(40, Duration::from_secs(10)), Duration::from_secs(5));
        assert_eq!(backoff(3, Duration::ZERO), Duration::from_millis(500));
    }
}
