//! The `Bots` gRPC service: `hop admin bots` (add, ls, rm) and a bot's join and renewal, mapped
//! onto the bot operations of [`super::server::AuthServer`]. It owns who may call what: the
//! admin methods need the `user` rule (a bot is a user), a join needs only its token, a
//! renewal and an SVID request need the bot's own verified certificate, and a recovery only its proof of possession
//! of the bot's bound key.

use std::time::Duration;

use tonic::{Request, Response, Status};

use super::admission::Presented;
use super::caller::Caller;
use super::grpc::{AuthApi, authorize, caller, unix};
use super::server::{BotKeys, BotRecovery, BotRenewal, LoginCertificates, SvidAsk};
use hop_api::proto::bots_server::Bots;
use hop_api::proto::*;

/// The longest bot name accepted (its user name `bot-NAME` must fit 64).
const MAX_BOT_NAME: usize = 60;
/// Recoveries with the bound key a new bot is allowed when the administrator names none.
const DEFAULT_RECOVERY_LIMIT: u32 = 1;

fn ttl(seconds: u64) -> Option<Duration> {
    (seconds > 0).then(|| Duration::from_secs(seconds))
}

fn login_response(c: LoginCertificates, cluster: &str) -> LoginResponse {
    LoginResponse {
        ssh_certificate: c.ssh_certificate,
        tls_certificate_pem: c.tls_certificate_pem,
        known_hosts: c.known_hosts,
        trusted_cas_pem: c.trusted_cas_pem,
        trust_digest: c.trust_digest,
        cluster_name: cluster.to_string(),
        username: c.username,
        roles: c.roles,
        logins: c.logins,
        expires_unix: unix(c.expires),
    }
}

#[tonic::async_trait]
impl Bots for AuthApi {
    async fn add_bot(
        &self,
        req: Request<AddBotRequest>,
    ) -> Result<Response<AddBotResponse>, Status> {
        let c = caller(&req);
        let r = req.into_inner();
        if r.name.is_empty() || r.name.len() > MAX_BOT_NAME {
            return Err(Status::invalid_argument(
                "a bot's name has 1 to 60 characters",
            ));
        }
        let token_ttl = ttl(r.token_ttl_seconds).unwrap_or(crate::bots::DEFAULT_TOKEN_TTL);
        let bot = self
            .blocking(move |a| {
                let actor = authorize(a, &c, "user", "create")?;
                let limit = r.recovery_limit.unwrap_or(DEFAULT_RECOVERY_LIMIT);
                a.create_bot(&r.name, &r.roles, &r.logins, token_ttl, limit, &actor)
            })
            .await?;
        Ok(Response::new(AddBotResponse {
            name: bot.name,
            user: bot.user,
            roles: bot.roles,
            token: bot.token,
            token_expires_unix: unix(bot.token_expires),
            proxy_addr: self.auth.web_addr().to_string(),
        }))
    }

    async fn list_bots(
        &self,
        req: Request<ListBotsRequest>,
    ) -> Result<Response<ListBotsResponse>, Status> {
        let c = caller(&req);
        let bots = self
            .blocking(move |a| {
                authorize(a, &c, "user", "list")?;
                a.list_bots()
            })
            .await?;
        let bots = bots
            .into_iter()
            .map(|b| BotInfo {
                name: b.name,
                roles: b.roles,
                logins: b.logins,
                generation: b.generation,
                last_renewal_unix: b.last_renewal.map_or(0, unix),
                instances: b.instances,
                recoveries: b.recoveries,
                recovery_limit: b.recovery_limit,
                bound_key: b.bound_key,
            })
            .collect();
        Ok(Response::new(ListBotsResponse { bots }))
    }

    async fn remove_bot(&self, req: Request<RemoveBotRequest>) -> Result<Response<Empty>, Status> {
        let c = caller(&req);
        let r = req.into_inner();
        self.blocking(move |a| {
            let actor = authorize(a, &c, "user", "delete")?;
            a.delete_bot(&r.name, &actor)
        })
        .await?;
        Ok(Response::new(Empty {}))
    }

    async fn join_bot(
        &self,
        req: Request<JoinBotRequest>,
    ) -> Result<Response<LoginResponse>, Status> {
        let remote = caller(&req).remote();
        let r = req.into_inner();
        let cluster = self.auth.cluster_name().to_string();
        let certs = self
            .blocking(move |a| {
                let keys = BotKeys {
                    ssh_public_key: &r.ssh_public_key,
                    tls_public_key_der: &r.tls_public_key,
                    ttl: ttl(r.ttl_seconds),
                };
                let bound = (!r.bound_public_key.is_empty()).then_some(&r.bound_public_key[..]);
                a.bot_join(&r.token, keys, bound, remote)
            })
            .await?;
        Ok(Response::new(login_response(certs, &cluster)))
    }

    async fn renew_bot(
        &self,
        req: Request<RenewBotRequest>,
    ) -> Result<Response<LoginResponse>, Status> {
        let Caller::User {
            identity,
            remote,
            expires,
            issued_at,
        } = caller(&req)
        else {
            return Err(Status::unauthenticated(
                "a bot renews with its current certificate (mTLS)",
            ));
        };
        let r = req.into_inner();
        let cluster = self.auth.cluster_name().to_string();
        let certs = self
            .blocking(move |a| {
                let presented = Presented {
                    identity: &identity,
                    issued_at,
                    expires,
                    login: None,
                    target: None,
                };
                a.bot_renew(&BotRenewal {
                    presented: &presented,
                    request_id: &r.request_id,
                    keys: BotKeys {
                        ssh_public_key: &r.ssh_public_key,
                        tls_public_key_der: &r.tls_public_key,
                        ttl: ttl(r.ttl_seconds),
                    },
                    remote: Some(remote),
                })
            })
            .await?;
        Ok(Response::new(login_response(certs, &cluster)))
    }

    async fn recover_bot(
        &self,
        req: Request<RecoverBotRequest>,
    ) -> Result<Response<LoginResponse>, Status> {
        let remote = caller(&req).remote();
        let r = req.into_inner();
        if r.bot.is_empty() || r.bot.len() > MAX_BOT_NAME {
            return Err(Status::invalid_argument(
                "a bot's name has 1 to 60 characters",
            ));
        }
        let cluster = self.auth.cluster_name().to_string();
        let certs = self
            .blocking(move |a| {
                a.bot_recover(&BotRecovery {
                    bot: &r.bot,
                    timestamp_unix: r.timestamp_unix,
                    signature: &r.signature,
                    keys: BotKeys {
                        ssh_public_key: &r.ssh_public_key,
                        tls_public_key_der: &r.tls_public_key,
                        ttl: ttl(r.ttl_seconds),
                    },
                    next_bound_key: &r.next_bound_public_key,
                    remote,
                })
            })
            .await?;
        Ok(Response::new(login_response(certs, &cluster)))
    }

    async fn update_bot(&self, req: Request<UpdateBotRequest>) -> Result<Response<Empty>, Status> {
        let c = caller(&req);
        let r = req.into_inner();
        self.blocking(move |a| {
            let actor = authorize(a, &c, "user", "update")?;
            a.update_bot(&r.name, r.recovery_limit, &actor)
        })
        .await?;
        Ok(Response::new(Empty {}))
    }

    async fn issue_svids(
        &self,
        req: Request<IssueSvidsRequest>,
    ) -> Result<Response<IssueSvidsResponse>, Status> {
        let Caller::User {
            identity,
            remote,
            expires,
            issued_at,
        } = caller(&req)
        else {
            return Err(Status::unauthenticated(
                "a bot asks for SVIDs with its current certificate (mTLS)",
            ));
        };
        let r = req.into_inner();
        let batch = self
            .blocking(move |a| {
                let presented = Presented {
                    identity: &identity,
                    issued_at,
                    expires,
                    login: None,
                    target: None,
                };
                let asks: Vec<SvidAsk<'_>> = r
                    .svids
                    .iter()
                    .map(|s| SvidAsk {
                        path: &s.path,
                        public_key_der: &s.public_key,
                        ttl: ttl(s.ttl_seconds),
                    })
                    .collect();
                a.bot_issue_svids(&presented, &asks, Some(remote))
            })
            .await?;
        Ok(Response::new(IssueSvidsResponse {
            svids: batch
                .svids
                .into_iter()
                .map(|s| IssuedSvid {
                    path: s.path,
                    spiffe_id: s.spiffe_id,
                    certificate_pem: s.certificate_pem,
                    expires_unix: unix(s.expires),
                })
                .collect(),
            bundle_pem: batch.bundle_pem,
        }))
    }
}
