//! The `Sso` gRPC service: the connectors a login page lists and the start of an SSO login
//! (`hop login --auth NAME`). Both answer anyone: they hand out no identity. The rest of the
//! login happens in the browser and at the proxy's callback.

use std::time::Duration;

use tonic::{Request, Response, Status};

use super::grpc::{AuthApi, caller, to_status};
use super::server::SsoStart;
use hop_api::proto::sso_server::Sso;
use hop_api::proto::*;

#[tonic::async_trait]
impl Sso for AuthApi {
    async fn list_sso_connectors(
        &self,
        _req: Request<ListSsoConnectorsRequest>,
    ) -> Result<Response<ListSsoConnectorsResponse>, Status> {
        let list = self.blocking(|a| a.sso_connectors()).await?;
        Ok(Response::new(ListSsoConnectorsResponse {
            connectors: list
                .into_iter()
                .map(|(name, kind, display)| SsoConnectorInfo {
                    name,
                    r#type: kind,
                    display,
                })
                .collect(),
        }))
    }

    async fn create_sso_auth_request(
        &self,
        req: Request<CreateSsoAuthRequestRequest>,
    ) -> Result<Response<CreateSsoAuthRequestResponse>, Status> {
        let remote = caller(&req).remote();
        let r = req.into_inner();
        let started = self
            .auth
            .start_sso_login(SsoStart {
                connector: r.connector,
                ssh_public_key: r.ssh_public_key,
                tls_public_key_der: r.tls_public_key,
                ttl: (r.ttl_seconds > 0).then(|| Duration::from_secs(r.ttl_seconds)),
                client_redirect_url: r.client_redirect_url,
                seal_key: r.seal_key,
                remote,
                proxy_redirect: false,
            })
            .await
            .map_err(to_status)?;
        Ok(Response::new(CreateSsoAuthRequestResponse {
            request_id: started.request_id,
            redirect_url: started.redirect_url,
        }))
    }
}
