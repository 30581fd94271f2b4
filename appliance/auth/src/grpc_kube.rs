//! The `KubeAccess` gRPC service: the Kubernetes clusters a user may reach (`hop kube ls`) and
//! certificates routed to one of them (`hop kube login`, `hop kube credentials`), looked up
//! among the clusters connected kube agents announce and mapped onto [`super::kube_access`].

use std::time::Duration;

use tonic::{Request, Response, Status};

use super::admission::Presented;
use super::caller::Caller;
use super::grpc::{AuthApi, caller, unix};
use super::kube_access::{tls_server_name, visible_kube_clusters};
use hop_api::proto::kube_access_server::KubeAccess;
use hop_api::proto::*;

/// The longest kube cluster name accepted on the wire.
const MAX_CLUSTER_NAME: usize = 253;

#[tonic::async_trait]
impl KubeAccess for AuthApi {
    async fn list_kube_clusters(
        &self,
        req: Request<ListKubeClustersRequest>,
    ) -> Result<Response<ListKubeClustersResponse>, Status> {
        let Caller::User { identity, .. } = caller(&req) else {
            return Err(Status::unauthenticated(
                "listing Kubernetes clusters needs a login (`hop login`)",
            ));
        };
        let routes = self
            .registry
            .as_ref()
            .map(|r| r.kube_clusters())
            .unwrap_or_default();
        let user = identity.username.clone();
        let checker = self
            .blocking(move |a| a.checker_for(&identity.roles, &identity.traits))
            .await?;
        let clusters = visible_kube_clusters(&checker, &user, routes)
            .into_iter()
            .map(|v| KubeCluster {
                name: v.cluster.name,
                labels: v.cluster.labels.into_iter().collect(),
                agent_id: v.cluster.host_id,
                kubernetes_users: v.users,
                kubernetes_groups: v.groups,
            })
            .collect();
        Ok(Response::new(ListKubeClustersResponse { clusters }))
    }

    async fn issue_kube_certificate(
        &self,
        req: Request<KubeCertificateRequest>,
    ) -> Result<Response<KubeCertificateResponse>, Status> {
        let Caller::User {
            identity,
            expires,
            issued_at,
            ..
        } = caller(&req)
        else {
            return Err(Status::unauthenticated(
                "a Kubernetes certificate needs a login (`hop login`)",
            ));
        };
        let r = req.into_inner();
        if r.kube_cluster.is_empty() || r.kube_cluster.len() > MAX_CLUSTER_NAME {
            return Err(Status::invalid_argument(
                "name the Kubernetes cluster (1 to 253 characters; `hop kube ls` lists them)",
            ));
        }
        let clusters = self
            .registry
            .as_ref()
            .map(|r| r.kube_clusters())
            .unwrap_or_default();
        let Some(cluster) = clusters.into_iter().find(|c| c.name == r.kube_cluster) else {
            return Err(Status::not_found(format!(
                "no connected kube agent serves Kubernetes cluster {:?} (`hop kube ls` lists the ones you can reach)",
                r.kube_cluster
            )));
        };
        let ttl = (r.ttl_seconds > 0).then(|| Duration::from_secs(r.ttl_seconds));
        let web_addr = self.auth.web_addr().to_string();
        let issued = self
            .blocking(move |a| {
                let presented = Presented {
                    identity: &identity,
                    issued_at,
                    expires,
                    login: None,
                    target: None,
                };
                a.issue_kube_certificate(&presented, &cluster, ttl, &r.tls_public_key)
            })
            .await?;
        Ok(Response::new(KubeCertificateResponse {
            tls_certificate_pem: issued.certificate_pem,
            expires_unix: unix(issued.expires),
            trusted_cas_pem: issued.trusted_cas_pem,
            tls_server_name: tls_server_name(&web_addr),
            proxy_addr: web_addr,
        }))
    }
}
