//! The `DatabaseAccess` gRPC service: who may call each method (users, db agents, admins) and
//! the mapping onto [`super::databases`].

use std::time::Duration;

use hop_ca::{HostRole, RouteToDatabase};
use tonic::{Request, Response, Status};

use super::caller::Caller;
use super::grpc::{AuthApi, authorize, caller, unix};
use hop_api::proto::database_access_server::DatabaseAccess;
use hop_api::proto::*;

#[tonic::async_trait]
impl DatabaseAccess for AuthApi {
    async fn list_databases(
        &self,
        req: Request<ListDatabasesRequest>,
    ) -> Result<Response<ListDatabasesResponse>, Status> {
        let Caller::User { identity, .. } = caller(&req) else {
            return Err(Status::unauthenticated(
                "listing databases needs a login (`hop login`)",
            ));
        };
        let routes = self
            .registry
            .as_ref()
            .map(|r| r.databases())
            .unwrap_or_default();
        let checker = self
            .blocking(move |a| a.checker_for(&identity.roles, &identity.traits))
            .await?;
        let databases = crate::listings::visible_databases(&checker, routes)
            .into_iter()
            .map(|v| Database {
                protocol: v.database.protocol().to_string(),
                name: v.database.name,
                uri: v.database.uri,
                labels: v.database.labels.into_iter().collect(),
                agent_id: v.database.host_id,
                db_users: v.db_users,
                db_names: v.db_names,
            })
            .collect();
        Ok(Response::new(ListDatabasesResponse { databases }))
    }

    async fn issue_database_route(
        &self,
        req: Request<DatabaseRouteRequest>,
    ) -> Result<Response<DatabaseRouteResponse>, Status> {
        let Caller::User {
            identity, expires, ..
        } = caller(&req)
        else {
            return Err(Status::unauthenticated(
                "a database certificate needs a login (`hop login`)",
            ));
        };
        let r = req.into_inner();
        let route = RouteToDatabase {
            service: r.service,
            username: r.db_user,
            database: r.db_name,
        };
        let issued = self
            .blocking(move |a| a.issue_database_route(&identity, expires, route, &r.tls_public_key))
            .await?;
        Ok(Response::new(DatabaseRouteResponse {
            tls_certificate_pem: issued.certificate_pem,
            expires_unix: unix(issued.expires),
            trusted_cas_pem: issued.trusted_cas_pem,
        }))
    }

    async fn sign_database_user(
        &self,
        req: Request<SignDatabaseUserRequest>,
    ) -> Result<Response<SignDatabaseUserResponse>, Status> {
        match caller(&req) {
            Caller::Host {
                role: HostRole::Db, ..
            } => {}
            _ => {
                return Err(Status::permission_denied(
                    "database client certificates are for database agents (a db host certificate is required)",
                ));
            }
        }
        let r = req.into_inner();
        let (pem, expires) = self
            .blocking(move |a| a.sign_database_user(&r.db_user, &r.tls_public_key))
            .await?;
        Ok(Response::new(SignDatabaseUserResponse {
            tls_certificate_pem: pem,
            expires_unix: unix(expires),
        }))
    }

    async fn list_database_resources(
        &self,
        req: Request<ListDatabaseResourcesRequest>,
    ) -> Result<Response<ListDatabaseResourcesResponse>, Status> {
        match caller(&req) {
            Caller::Host {
                role: HostRole::Db, ..
            } => {}
            _ => {
                return Err(Status::permission_denied(
                    "database resources are listed for database agents (a db host certificate is required)",
                ));
            }
        }
        let docs = self.blocking(|a| a.get_resources("db", None)).await?;
        Ok(Response::new(ListDatabaseResourcesResponse {
            resources_json: docs.iter().map(|d| d.to_string()).collect(),
        }))
    }

    async fn sign_database_server(
        &self,
        req: Request<SignDatabaseServerRequest>,
    ) -> Result<Response<SignDatabaseServerResponse>, Status> {
        let c = caller(&req);
        let r = req.into_inner();
        let ttl = (r.ttl_seconds > 0).then(|| Duration::from_secs(r.ttl_seconds));
        let (pem, ca, expires) = self
            .blocking(move |a| {
                authorize(a, &c, "cert_authority", "update")?;
                a.sign_database_server(&r.names, ttl, &r.tls_public_key)
            })
            .await?;
        Ok(Response::new(SignDatabaseServerResponse {
            tls_certificate_pem: pem,
            db_ca_pem: ca,
            expires_unix: unix(expires),
        }))
    }
}
