//! SPIFFE X.509 SVIDs for bots: the decision (the caller is a bot holding its current
//! certificate, every path is a SPIFFE path its roles allow) and the issuance from the spiffe CA,
//! with a lifetime that never passes the bot's certificate. Every issue and every refusal is
//! audited as `spiffe.svid.issue`; keys and certificates are never logged.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use hop_rbac::Role;

use super::AuthServer;
use crate::admission::Presented;
use crate::audit::EventKind;
use crate::bots::{BotError, BotState, bot_name_of, generation_of};
use crate::error::AuthError;
use hop_api::timestamps::rfc3339;

/// The most SVIDs one request may ask for.
pub const MAX_SVIDS_PER_REQUEST: usize = 16;

/// One SVID asked for.
#[derive(Debug, Clone, Copy)]
pub struct SvidAsk<'a> {
    /// The SPIFFE ID's path (`/svc/foo`).
    pub path: &'a str,
    /// DER SubjectPublicKeyInfo of the workload's key.
    pub public_key_der: &'a [u8],
    /// `None`: as long as the bot's certificate.
    pub ttl: Option<Duration>,
}

/// One SVID issued.
#[derive(Debug, Clone)]
pub struct IssuedSvid {
    pub path: String,
    pub spiffe_id: String,
    pub certificate_pem: String,
    pub expires: SystemTime,
    serial: String,
}

/// The answer to one request: the SVIDs in the order asked, and the trust bundle.
#[derive(Debug, Clone)]
pub struct SvidBatch {
    pub svids: Vec<IssuedSvid>,
    pub bundle_pem: String,
}

impl AuthServer {
    /// X.509 SVIDs for the bot that presented `presented`; refused whole if any path is refused.
    pub fn bot_issue_svids(
        &self,
        presented: &Presented<'_>,
        asks: &[SvidAsk<'_>],
        remote: Option<SocketAddr>,
    ) -> Result<SvidBatch, AuthError> {
        let user = presented.identity.username.as_str();
        let bot = bot_name_of(user).unwrap_or_default().to_string();
        let result = self.bot_issue_svids_inner(presented, asks);
        match &result {
            Ok(batch) => {
                for svid in &batch.svids {
                    self.audit_durable(
                        self.event(EventKind::SpiffeSvidIssue, user)
                            .remote(remote)
                            .field("bot", bot.as_str())
                            .field("path", svid.path.as_str())
                            .field("spiffe_id", svid.spiffe_id.as_str())
                            .field("serial", svid.serial.as_str())
                            .field("expires", rfc3339(svid.expires)),
                    );
                }
            }
            Err(e) => {
                let paths: Vec<String> = asks.iter().map(|a| clip(a.path)).collect();
                self.audit_durable(
                    self.event(EventKind::SpiffeSvidIssue, user)
                        .remote(remote)
                        .field("bot", bot.as_str())
                        .field("paths", paths)
                        .failed(EventKind::SpiffeSvidIssue, e.to_string()),
                );
            }
        }
        result
    }

    fn bot_issue_svids_inner(
        &self,
        presented: &Presented<'_>,
        asks: &[SvidAsk<'_>],
    ) -> Result<SvidBatch, AuthError> {
        if asks.is_empty() || asks.len() > MAX_SVIDS_PER_REQUEST {
            return Err(AuthError::BadRequest(format!(
                "ask for 1 to {MAX_SVIDS_PER_REQUEST} SVIDs"
            )));
        }
        let roles = self.current_bot_roles(presented)?;
        for ask in asks {
            hop_ca::check_spiffe_path(ask.path)
                .map_err(|e| AuthError::BadRequest(e.to_string()))?;
            hop_rbac::check_spiffe_path(&roles, ask.path)
                .map_err(|e| AuthError::Denied(e.to_string()))?;
        }
        let now = self.clock.now();
        let svids = asks
            .iter()
            .map(|ask| self.issue_one_svid(ask, presented.expires, now))
            .collect::<Result<Vec<_>, _>>()?;
        let bundle_pem = hop_ca::export_pem(&self.public_authorities(hop_ca::CaKind::Spiffe));
        Ok(SvidBatch { svids, bundle_pem })
    }

    /// The roles of the bot behind `presented`, once it is admitted, exists, and presents the
    /// certificate of its current generation.
    fn current_bot_roles(&self, presented: &Presented<'_>) -> Result<Vec<Role>, AuthError> {
        let identity = presented.identity;
        let user = self.bot_user(&identity.username)?;
        self.admit(presented, hop_admission::Route::AdminApi)
            .map_err(|r| AuthError::Denied(r.to_string()))?;
        let Some(generation) = generation_of(identity) else {
            return Err(AuthError::Denied(
                "only a bot's certificate obtains SVIDs".into(),
            ));
        };
        let name = bot_name_of(&identity.username).unwrap_or_default();
        let state = self.store.get::<BotState>(name)?.ok_or_else(|| {
            AuthError::from(BotError::NotABot {
                name: identity.username.clone(),
            })
        })?;
        if state.value.generation != generation {
            return Err(AuthError::Denied(format!(
                "bot certificate of generation {generation} is not the current one ({}); renew first",
                state.value.generation
            )));
        }
        let mut roles = Vec::with_capacity(user.spec.roles.len());
        for role in &user.spec.roles {
            if let Some(r) = self.store.get::<Role>(role)? {
                roles.push(r.value);
            }
        }
        Ok(roles)
    }

    fn issue_one_svid(
        &self,
        ask: &SvidAsk<'_>,
        bot_expires: SystemTime,
        now: SystemTime,
    ) -> Result<IssuedSvid, AuthError> {
        let wanted = ask.ttl.unwrap_or(Duration::MAX);
        let ttl = hop_ca::derived_ttl(now, bot_expires, wanted)
            .ok_or_else(|| AuthError::Denied("the bot's certificate has expired".into()))?;
        let ca = &self.authorities().spiffe;
        let pem = ca
            .issue_svid(ask.public_key_der, ask.path, now, ttl, &mut rand::rng())
            .map_err(|e| AuthError::BadRequest(format!("SVID for {}: {e}", clip(ask.path))))?;
        let der = hop_ca::parse_pem_certs(&pem)
            .ok()
            .and_then(|mut v| v.pop())
            .unwrap_or_default();
        Ok(IssuedSvid {
            path: ask.path.to_string(),
            spiffe_id: hop_ca::spiffe_id(&ca.cluster, ask.path)
                .map_err(|e| AuthError::BadRequest(e.to_string()))?,
            certificate_pem: pem,
            expires: now + ttl,
            serial: hop_ca::x509_serial_hex(&der).unwrap_or_default(),
        })
    }
}

/// A path as audited: at most 256 characters.
fn clip(path: &str) -> String {
    path.chars().take(256).collect()
}
