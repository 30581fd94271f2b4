//! The `AppAccess` gRPC service: application certificates for users (`hop apps login`), looked
//! up among the applications connected agents announce and mapped onto
//! [`super::app_access`].

use std::time::Duration;

use tonic::{Request, Response, Status};

use super::admission::Presented;
use super::caller::Caller;
use super::grpc::{AuthApi, caller, unix};
use hop_api::proto::app_access_server::AppAccess;
use hop_api::proto::*;

/// The longest application name accepted on the wire (a DNS label).
const MAX_APP_NAME: usize = 63;

#[tonic::async_trait]
impl AppAccess for AuthApi {
    async fn issue_app_certificate(
        &self,
        req: Request<AppCertificateRequest>,
    ) -> Result<Response<AppCertificateResponse>, Status> {
        let Caller::User {
            identity,
            expires,
            issued_at,
            ..
        } = caller(&req)
        else {
            return Err(Status::unauthenticated(
                "an application certificate needs a login (`hop login`)",
            ));
        };
        let r = req.into_inner();
        if r.app.is_empty() || r.app.len() > MAX_APP_NAME {
            return Err(Status::invalid_argument(
                "name the application (1 to 63 characters; `hop apps ls` lists them)",
            ));
        }
        let apps = self.registry.as_ref().map(|r| r.apps()).unwrap_or_default();
        let Some(app) = apps.into_iter().find(|a| a.name == r.app) else {
            return Err(Status::not_found(format!(
                "no connected agent serves application {:?} (`hop apps ls` lists the ones you can reach)",
                r.app
            )));
        };
        let ttl = (r.ttl_seconds > 0).then(|| Duration::from_secs(r.ttl_seconds));
        let public_addr = super::app_access::public_addr(&app, self.auth.web_addr());
        let uri = app.uri.clone();
        let issued = self
            .blocking(move |a| {
                let presented = Presented {
                    identity: &identity,
                    issued_at,
                    expires,
                    login: None,
                    target: None,
                };
                a.issue_app_certificate(&presented, &app, ttl, &r.tls_public_key)
            })
            .await?;
        Ok(Response::new(AppCertificateResponse {
            tls_certificate_pem: issued.certificate_pem,
            expires_unix: unix(issued.expires),
            trusted_cas_pem: issued.trusted_cas_pem,
            uri,
            public_addr: public_addr.unwrap_or_default(),
        }))
    }
}
