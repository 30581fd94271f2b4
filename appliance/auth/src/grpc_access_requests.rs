//! The `AccessRequests` gRPC service: `hop request` and `hop login --request-id`, mapped onto
//! the access request operations of [`super::server::AuthServer`]. It owns who may call: every
//! method needs a verified user certificate (the operations admit it and decide the rest).

use std::time::{Duration, SystemTime};

use tonic::{Request, Response, Status};

use super::access_requests::AccessRequest;
use super::admission::Presented;
use super::caller::Caller;
use super::grpc::{AuthApi, caller, unix};
use super::server::{LoginCertificates, NewAccessRequest, ReviewAsk};
use hop_api::proto::access_requests_server::AccessRequests;
use hop_api::proto::*;

/// The caller's certificate, or the refusal for anyone without one.
struct UserCert {
    identity: hop_ca::Identity,
    expires: SystemTime,
    issued_at: SystemTime,
}

impl UserCert {
    fn of<T>(req: &Request<T>) -> Result<Self, Status> {
        match caller(req) {
            Caller::User {
                identity,
                expires,
                issued_at,
                ..
            } => Ok(Self {
                identity: *identity,
                expires,
                issued_at,
            }),
            _ => Err(Status::unauthenticated(
                "access requests need your login's certificate (run `hop login`)",
            )),
        }
    }

    fn presented(&self) -> Presented<'_> {
        Presented {
            identity: &self.identity,
            issued_at: self.issued_at,
            expires: self.expires,
            login: None,
            target: None,
        }
    }
}

fn secs(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

fn info(r: AccessRequest) -> AccessRequestInfo {
    AccessRequestInfo {
        id: r.id,
        user: r.user,
        roles: r.roles,
        reason: r.reason,
        state: r.state.name().to_string(),
        created_unix: secs(r.created_unix),
        expires_unix: secs(r.expires_unix),
        thresholds: r
            .thresholds
            .iter()
            .map(|t| format!("approve {}/deny {}", t.approve, t.deny))
            .collect(),
        suggested_reviewers: r.suggested_reviewers,
        reviews: r
            .reviews
            .into_iter()
            .map(|v| AccessReviewInfo {
                author: v.author,
                approve: v.approve,
                reason: v.reason,
                created_unix: secs(v.created_unix),
            })
            .collect(),
    }
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
impl AccessRequests for AuthApi {
    async fn create_access_request(
        &self,
        req: Request<CreateAccessRequestRequest>,
    ) -> Result<Response<AccessRequestInfo>, Status> {
        let cert = UserCert::of(&req)?;
        let r = req.into_inner();
        let made = self
            .blocking(move |a| {
                a.create_access_request(
                    &cert.presented(),
                    &NewAccessRequest {
                        roles: &r.roles,
                        reason: &r.reason,
                        max_duration: (r.max_duration_seconds > 0)
                            .then(|| Duration::from_secs(r.max_duration_seconds)),
                    },
                )
            })
            .await?;
        Ok(Response::new(info(made)))
    }

    async fn list_access_requests(
        &self,
        req: Request<ListAccessRequestsRequest>,
    ) -> Result<Response<ListAccessRequestsResponse>, Status> {
        let cert = UserCert::of(&req)?;
        let list = self
            .blocking(move |a| a.list_access_requests(&cert.presented()))
            .await?;
        Ok(Response::new(ListAccessRequestsResponse {
            requests: list.into_iter().map(info).collect(),
        }))
    }

    async fn get_access_request(
        &self,
        req: Request<GetAccessRequestRequest>,
    ) -> Result<Response<AccessRequestInfo>, Status> {
        let cert = UserCert::of(&req)?;
        let id = req.into_inner().id;
        let r = self
            .blocking(move |a| a.get_access_request(&cert.presented(), &id))
            .await?;
        Ok(Response::new(info(r)))
    }

    async fn review_access_request(
        &self,
        req: Request<ReviewAccessRequestRequest>,
    ) -> Result<Response<AccessRequestInfo>, Status> {
        let cert = UserCert::of(&req)?;
        let r = req.into_inner();
        let reviewed = self
            .blocking(move |a| {
                a.review_access_request(
                    &cert.presented(),
                    &ReviewAsk {
                        id: &r.id,
                        approve: r.approve,
                        reason: &r.reason,
                    },
                )
            })
            .await?;
        Ok(Response::new(info(reviewed)))
    }

    async fn assume_access_requests(
        &self,
        req: Request<AssumeAccessRequestsRequest>,
    ) -> Result<Response<LoginResponse>, Status> {
        let cert = UserCert::of(&req)?;
        let r = req.into_inner();
        let cluster = self.auth.cluster_name().to_string();
        let certs = self
            .blocking(move |a| {
                a.assume_access_requests(
                    &cert.presented(),
                    &r.request_ids,
                    (&r.ssh_public_key, &r.tls_public_key),
                )
            })
            .await?;
        Ok(Response::new(login_response(certs, &cluster)))
    }
}
