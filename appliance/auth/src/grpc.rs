//! The Auth API on the wire: tonic services that map requests onto [`AuthServer`].
//!
//! This module owns authentication of the caller for each method (public methods take anyone,
//! admin methods need the local admin socket or a user certificate whose roles grant the rule),
//! the translation of [`AuthError`] into gRPC status codes, and moving blocking work (argon2,
//! fsync) off the async runtime. Decisions stay in the server.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use hop_ca::CaKind;
use tonic::{Request, Response, Status};

use super::caller::Caller;
use super::inventory::{AppRoute, Inventory};
use super::server::{
    AuthError, AuthServer, JoinRequest as ServerJoin, LoginRequest as ServerLogin,
};
use hop_api::proto::auth_admin_server::AuthAdmin;
use hop_api::proto::auth_public_server::AuthPublic;
use hop_api::proto::*;
use hop_metrics::Metrics;

fn joined(j: super::server::JoinedHost, cluster: &str) -> JoinResponse {
    JoinResponse {
        host_id: j.host_id,
        host_name: j.host_name.unwrap_or_default(),
        tls_certificate_pem: j.certificate_pem,
        host_ca_pem: j.host_ca_pem,
        user_ca_pem: j.user_ca_pem,
        cluster_name: cluster.to_string(),
        expires_unix: unix(j.expires),
        ssh_host_certificate: j.ssh_host_certificate.unwrap_or_default(),
        ssh_user_ca_keys: j.ssh_user_ca_keys,
        ssh_host_ca_keys: j.ssh_host_ca_keys,
    }
}

fn app_proto(a: &AppRoute) -> App {
    App {
        name: a.name.clone(),
        uri: a.uri.clone(),
        labels: a.labels.clone().into_iter().collect(),
        agent_id: a.host_id.clone(),
    }
}

/// Both gRPC services over one [`AuthServer`].
#[derive(Debug, Clone)]
pub struct AuthApi {
    pub(super) auth: Arc<AuthServer>,
    metrics: Arc<Metrics>,
    pub(super) registry: Option<Arc<dyn Inventory>>,
    audit_log: Option<Arc<dyn hop_storage::AuditStore>>,
}

impl AuthApi {
    pub fn new(
        auth: Arc<AuthServer>,
        metrics: Arc<Metrics>,
        registry: Option<Arc<dyn Inventory>>,
    ) -> Self {
        Self {
            auth,
            metrics,
            registry,
            audit_log: None,
        }
    }

    /// Serves audit search, verify and export from this store.
    pub fn with_audit_log(mut self, log: Arc<dyn hop_storage::AuditStore>) -> Self {
        self.audit_log = Some(log);
        self
    }

    /// The audit log this API serves searches from, if any (the web UI's audit page reads it).
    pub fn audit_store(&self) -> Option<Arc<dyn hop_storage::AuditStore>> {
        self.audit_log.clone()
    }

    fn audit_log(&self) -> Result<Arc<dyn hop_storage::AuditStore>, Status> {
        self.audit_log
            .clone()
            .ok_or_else(|| Status::unavailable("this process keeps no audit log"))
    }

    /// The gRPC routes, ready to merge into the listener's router.
    pub fn routes(&self) -> tonic::service::Routes {
        tonic::service::Routes::new(hop_api::proto::auth_public_server::AuthPublicServer::new(
            self.clone(),
        ))
        .add_service(hop_api::proto::auth_admin_server::AuthAdminServer::new(
            self.clone(),
        ))
        .add_service(
            hop_api::proto::database_access_server::DatabaseAccessServer::new(self.clone()),
        )
        .add_service(hop_api::proto::openssh_nodes_server::OpensshNodesServer::new(self.clone()))
        .add_service(hop_api::proto::app_access_server::AppAccessServer::new(
            self.clone(),
        ))
        .add_service(hop_api::proto::kube_access_server::KubeAccessServer::new(
            self.clone(),
        ))
        .add_service(hop_api::proto::bots_server::BotsServer::new(self.clone()))
        .add_service(
            hop_api::proto::access_requests_server::AccessRequestsServer::new(self.clone()),
        )
        .add_service(hop_api::proto::sso_server::SsoServer::new(self.clone()))
    }

    fn invite_response(&self, invite: super::server::Invite) -> InviteResponse {
        InviteResponse {
            url: self.auth.invite_url(&invite.token),
            proxy_addr: self.auth.web_addr().to_string(),
            ca_pin: self.auth.ca_pin(),
            username: invite.username,
            token: invite.token,
            expires_unix: unix(invite.expires),
        }
    }

    pub(super) async fn blocking<T, F>(&self, f: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&AuthServer) -> Result<T, AuthError> + Send + 'static,
    {
        self.metrics.grpc_requests.inc();
        let auth = self.auth.clone();
        tokio::task::spawn_blocking(move || f(&auth))
            .await
            .map_err(|e| Status::internal(format!("task failed: {e}")))?
            .map_err(to_status)
    }
}

/// A fingerprint of the access data a node decides with, without the moment it was taken:
/// equal fingerprints mean the node has nothing new to learn.
fn access_fingerprint(data: &hop_admission::SnapshotData, user_ca_keys: &[String]) -> u64 {
    use sha2::Digest;
    let mut timeless = data.clone();
    timeless.taken_at = 0;
    let json = serde_json::to_vec(&(timeless, user_ca_keys)).unwrap_or_default();
    let digest = sha2::Sha256::digest(&json);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first).max(1)
}

/// How long a node's access request waits for a change before it is answered anyway (which
/// also refreshes the age of the node's snapshot).
const NODE_ACCESS_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Maps domain errors to gRPC codes; the message is the error's own words.
pub fn to_status(e: AuthError) -> Status {
    let msg = e.to_string();
    match e {
        AuthError::InvalidCredentials | AuthError::LoginRefused { .. } => {
            Status::unauthenticated(msg)
        }
        AuthError::Locked { .. } | AuthError::Denied(_) => Status::permission_denied(msg),
        AuthError::RateLimited { .. } => Status::resource_exhausted(msg),
        AuthError::InviteNotFound | AuthError::InviteExpired { .. } => {
            Status::permission_denied(msg)
        }
        AuthError::BadRequest(_) | AuthError::UnusableKey { .. } => Status::invalid_argument(msg),
        AuthError::Rotation(_) => Status::failed_precondition(msg),
        AuthError::Sso(ref e) if e.is_bad_request() => Status::invalid_argument(msg),
        AuthError::Sso(crate::sso::SsoError::Http(_)) => Status::unavailable(msg),
        AuthError::Sso(_) => Status::permission_denied(msg),
        AuthError::AlreadyExists(_) | AuthError::AlreadyStored(_) => Status::already_exists(msg),
        AuthError::NotFound(_) => Status::not_found(msg),
        AuthError::JoinToken(_) | AuthError::Bot(_) | AuthError::AccessRequest(_) => {
            Status::permission_denied(msg)
        }
        AuthError::Storage(hop_storage::StorageError::Unreachable { .. }) => {
            tracing::error!(error = %msg, "auth API: the cluster state cannot be reached");
            Status::unavailable(
                "the cluster state cannot be reached now; try again shortly (the operator's log \
                 says why)",
            )
        }
        AuthError::Storage(_)
        | AuthError::Conflict(_)
        | AuthError::Contended { .. }
        | AuthError::TrackerStorage(_)
        | AuthError::AuditLog(_)
        | AuthError::CaGeneration { .. }
        | AuthError::Issuance(_)
        | AuthError::PasswordHash(_)
        | AuthError::RoleEvaluation(_)
        | AuthError::GeneratedDocument(_)
        | AuthError::Poisoned(_)
        | AuthError::Internal(_) => {
            tracing::error!(error = %msg, "auth API internal error");
            Status::internal(msg)
        }
    }
}

pub(super) fn caller<T>(req: &Request<T>) -> Caller {
    req.extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or(Caller::Anonymous { remote: None })
}

pub(super) fn unix(t: std::time::SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Checks the caller may use `verb` on `kind`; returns the actor name for audit events.
pub fn authorize(
    auth: &AuthServer,
    caller: &Caller,
    kind: &str,
    verb: &str,
) -> Result<String, AuthError> {
    match caller {
        Caller::LocalAdmin => Ok(caller.actor()),
        Caller::User { identity, .. } => {
            auth.authorize_rule(identity, kind, verb)?;
            Ok(caller.actor())
        }
        Caller::Anonymous { .. } | Caller::Host { .. } => Err(AuthError::Denied(
            "the admin API needs the local admin socket or a user certificate (log in with `hop login`)".into(),
        )),
    }
}

#[tonic::async_trait]
impl AuthPublic for AuthApi {
    async fn join(&self, req: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let remote = caller(&req).remote();
        let r = req.into_inner();
        let cluster = self.auth.cluster_name().to_string();
        let j = self
            .blocking(move |a| {
                a.join(&ServerJoin {
                    token: &r.token,
                    role: &r.role,
                    host_name: &r.host_name,
                    tls_public_key_der: &r.tls_public_key,
                    ssh_public_key: &r.ssh_public_key,
                    remote,
                })
            })
            .await?;
        Ok(Response::new(joined(j, &cluster)))
    }

    async fn renew_host_certificate(
        &self,
        req: Request<RenewHostCertificateRequest>,
    ) -> Result<Response<JoinResponse>, Status> {
        let Caller::Host {
            host_id,
            role,
            remote,
            serial,
            ..
        } = caller(&req)
        else {
            return Err(Status::permission_denied(
                "renewal needs the agent's current host certificate",
            ));
        };
        let r = req.into_inner();
        let cluster = self.auth.cluster_name().to_string();
        let j = self
            .blocking(move |a| {
                a.renew_host_identity(
                    &host_id,
                    role,
                    &serial,
                    &ServerJoin {
                        token: "",
                        role: role.as_str(),
                        host_name: &r.host_name,
                        tls_public_key_der: &r.tls_public_key,
                        ssh_public_key: &r.ssh_public_key,
                        remote: Some(remote),
                    },
                )
            })
            .await?;
        Ok(Response::new(joined(j, &cluster)))
    }

    async fn list_apps(
        &self,
        req: Request<ListAppsRequest>,
    ) -> Result<Response<ListAppsResponse>, Status> {
        let Caller::User { identity, .. } = caller(&req) else {
            return Err(Status::unauthenticated(
                "listing applications needs a login (`hop login`)",
            ));
        };
        let routes = self.registry.as_ref().map(|r| r.apps()).unwrap_or_default();
        let checker = self
            .blocking(move |a| a.checker_for(&identity.roles, &identity.traits))
            .await?;
        let apps = super::listings::visible_apps(&checker, routes)
            .iter()
            .map(app_proto)
            .collect();
        Ok(Response::new(ListAppsResponse { apps }))
    }

    async fn list_nodes(
        &self,
        req: Request<ListNodesRequest>,
    ) -> Result<Response<ListNodesResponse>, Status> {
        let Caller::User { identity, .. } = caller(&req) else {
            return Err(Status::unauthenticated(
                "listing nodes needs a login (`hop login`)",
            ));
        };
        let wanted = req.into_inner().labels;
        let routes = match self.registry.clone() {
            Some(r) => {
                self.blocking(move |a| Ok(super::inventory::all_nodes(r.as_ref(), a)))
                    .await?
            }
            None => Vec::new(),
        };
        let logins = identity.logins.clone();
        let checker = self
            .blocking(move |a| a.checker_for(&identity.roles, &identity.traits))
            .await?;
        let routes = routes
            .into_iter()
            .filter(|n| wanted.iter().all(|(k, v)| n.labels.get(k) == Some(v)))
            .collect();
        let nodes = super::listings::visible_nodes(&checker, &logins, routes)
            .into_iter()
            .map(|v| Node {
                name: v.node.name,
                host_id: v.node.host_id,
                labels: v.node.labels.into_iter().collect(),
                addr: v.node.addr,
                logins: v.logins,
            })
            .collect();
        Ok(Response::new(ListNodesResponse { nodes }))
    }

    async fn get_node_access(
        &self,
        req: Request<NodeAccessRequest>,
    ) -> Result<Response<NodeAccessResponse>, Status> {
        let Caller::Host { role, .. } = caller(&req) else {
            return Err(Status::permission_denied(
                "node access data is for SSH nodes (a node host certificate is required)",
            ));
        };
        if role != hop_ca::HostRole::Node {
            return Err(Status::permission_denied(
                "node access data is for SSH nodes only",
            ));
        }
        let known = req.into_inner().known_revision;
        // Subscribed before the data is read, so no change between the two is missed.
        let mut changes = self.auth.access_changes();
        let mut authorities = self.auth.watch_authorities();
        let build = |a: &AuthServer| Ok((a.node_access()?, a.admission_data()?));
        let (mut access, mut admission) = self.blocking(build).await?;
        if known != 0 && access_fingerprint(&admission, &access.ssh_user_ca_keys) == known {
            // The node has this already: answer when something a decision reads changes (the
            // user CA's keys included), or after a while (which refreshes the snapshot's age on
            // the node).
            let change = async {
                tokio::select! {
                    () = changes.next_relevant() => {}
                    _ = authorities.changed() => {}
                }
            };
            let _ = tokio::time::timeout(NODE_ACCESS_WAIT, change).await;
            (access, admission) = self.blocking(build).await?;
        }
        let revision = access_fingerprint(&admission, &access.ssh_user_ca_keys);
        let cluster = self.auth.cluster_name().to_string();
        let roles_json = serde_json::to_string(&access.roles)
            .map_err(|e| Status::internal(format!("encoding roles: {e}")))?;
        let admission_json = serde_json::to_string(&admission)
            .map_err(|e| Status::internal(format!("encoding the admission snapshot: {e}")))?;
        Ok(Response::new(NodeAccessResponse {
            roles_json,
            locked_users: access.locked_users,
            ssh_user_ca_keys: access.ssh_user_ca_keys,
            session_recording: access.session_recording,
            cluster_name: cluster,
            admission_json,
            revision,
        }))
    }

    async fn emit_events(
        &self,
        req: Request<EmitEventsRequest>,
    ) -> Result<Response<EmitEventsResponse>, Status> {
        let Caller::Host { host_id, role, .. } = caller(&req) else {
            return Err(Status::permission_denied(
                "only agents with a host certificate may send audit events",
            ));
        };
        let r = req.into_inner();
        if r.events_json.len() > hop_api::audit_wire::MAX_EVENTS {
            return Err(Status::invalid_argument(
                "at most 1000 events per EmitEvents call",
            ));
        }
        let too_large = |j: &String| j.len() > hop_api::audit_wire::MAX_EVENT_BYTES;
        if let Some(i) = r.events_json.iter().position(too_large) {
            return Err(Status::invalid_argument(format!(
                "event {i} is larger than 64 KiB"
            )));
        }
        let refused = self
            .blocking(move |a| {
                let source = super::agent_events::EventSource {
                    host_id: &host_id,
                    role,
                };
                a.accept_agent_events(source, &r.events_json)
            })
            .await?;
        Ok(Response::new(refused_to_proto(refused)))
    }

    async fn emit_events_packed(
        &self,
        req: Request<EmitEventsPackedRequest>,
    ) -> Result<Response<EmitEventsResponse>, Status> {
        let Caller::Host { host_id, role, .. } = caller(&req) else {
            return Err(Status::permission_denied(
                "only agents with a host certificate may send audit events",
            ));
        };
        let batch = req.into_inner().events;
        let refused = self
            .blocking(move |a| {
                let source = super::agent_events::EventSource {
                    host_id: &host_id,
                    role,
                };
                a.accept_packed_agent_events(source, &batch)
            })
            .await?
            .map_err(|e| Status::invalid_argument(format!("packed audit events: {e}")))?;
        Ok(Response::new(refused_to_proto(refused)))
    }

    async fn update_session_tracker(
        &self,
        req: Request<UpdateSessionTrackerRequest>,
    ) -> Result<Response<Empty>, Status> {
        let Caller::Host { host_id, role, .. } = caller(&req) else {
            return Err(Status::permission_denied(
                "only agents with a host certificate may write session trackers",
            ));
        };
        let update = super::trackers::update_from_proto(req.into_inner()).map_err(to_status)?;
        self.blocking(move |a| {
            let host = super::trackers::TrackerHost {
                host_id: &host_id,
                role,
            };
            Ok(a.update_tracker(host, &update)?)
        })
        .await?;
        Ok(Response::new(Empty {}))
    }

    async fn list_sessions(
        &self,
        req: Request<ListSessionsRequest>,
    ) -> Result<Response<ListSessionsResponse>, Status> {
        let caller = caller(&req);
        let sessions = self
            .blocking(move |a| match &caller {
                Caller::LocalAdmin => a.trackers(),
                Caller::User { identity, .. } => a.trackers_for(identity),
                Caller::Host { .. } | Caller::Anonymous { .. } => Err(AuthError::Denied(
                    "listing sessions needs a user certificate (log in with `hop login`)".into(),
                )),
            })
            .await?;
        Ok(Response::new(ListSessionsResponse {
            sessions: sessions
                .into_iter()
                .map(super::trackers::tracker_to_proto)
                .collect(),
        }))
    }

    async fn get_trust(
        &self,
        _req: Request<GetTrustRequest>,
    ) -> Result<Response<TrustResponse>, Status> {
        self.metrics.grpc_requests.inc();
        Ok(Response::new(super::grpc_rotation::trust(&self.auth)))
    }

    async fn ping(&self, _req: Request<PingRequest>) -> Result<Response<PingResponse>, Status> {
        self.metrics.grpc_requests.inc();
        Ok(Response::new(PingResponse {
            cluster_name: self.auth.cluster_name().to_string(),
            server_version: env!("CARGO_PKG_VERSION").to_string(),
            second_factor: self.auth.second_factor().to_string(),
            ca_pin: self.auth.ca_pin(),
        }))
    }

    async fn begin_webauthn_login(
        &self,
        req: Request<BeginWebauthnLoginRequest>,
    ) -> Result<Response<WebauthnChallenge>, Status> {
        self.mfa_begin_login(req).await
    }

    async fn list_mfa_devices(
        &self,
        req: Request<ListMfaDevicesRequest>,
    ) -> Result<Response<ListMfaDevicesResponse>, Status> {
        self.mfa_list(req).await
    }

    async fn begin_mfa_change(
        &self,
        req: Request<BeginMfaChangeRequest>,
    ) -> Result<Response<MfaChangeChallenge>, Status> {
        self.mfa_begin_change(req).await
    }

    async fn add_mfa_device(
        &self,
        req: Request<AddMfaDeviceRequest>,
    ) -> Result<Response<MfaDevice>, Status> {
        self.mfa_add(req).await
    }

    async fn remove_mfa_device(
        &self,
        req: Request<RemoveMfaDeviceRequest>,
    ) -> Result<Response<Empty>, Status> {
        self.mfa_remove(req).await
    }

    async fn begin_session_mfa(
        &self,
        req: Request<BeginSessionMfaRequest>,
    ) -> Result<Response<SessionMfaChallenge>, Status> {
        self.mfa_begin_session(req).await
    }

    async fn issue_session_mfa_cert(
        &self,
        req: Request<IssueSessionMfaCertRequest>,
    ) -> Result<Response<SessionMfaCert>, Status> {
        self.mfa_issue_session(req).await
    }

    async fn complete_signup(
        &self,
        req: Request<CompleteSignupRequest>,
    ) -> Result<Response<CompleteSignupResponse>, Status> {
        let remote = caller(&req).remote();
        let r = req.into_inner();
        let username = self
            .blocking(move |a| {
                a.complete_signup(&r.token, &r.password, &r.totp_secret, &r.totp_code, remote)
            })
            .await?;
        Ok(Response::new(CompleteSignupResponse { username }))
    }

    async fn login(&self, req: Request<LoginRequest>) -> Result<Response<LoginResponse>, Status> {
        let remote = caller(&req).remote();
        let r = req.into_inner();
        // A key's answer (a login with a security key, or a passkey's without a password).
        let key = r.webauthn_json.trim();
        let (assertion, passkey) = match (key.is_empty(), r.passwordless) {
            (true, true) => {
                return Err(Status::invalid_argument(
                    "a passwordless login needs a passkey's assertion",
                ));
            }
            (true, false) => (None, None),
            (false, false) => (
                Some(
                    serde_json::from_str::<super::server::WebauthnAssertion>(key)
                        .map_err(|e| Status::invalid_argument(format!("webauthn_json: {e}")))?,
                ),
                None,
            ),
            (false, true) => (
                None,
                Some(
                    serde_json::from_str::<super::server::PasskeyAssertion>(key)
                        .map_err(|e| Status::invalid_argument(format!("webauthn_json: {e}")))?,
                ),
            ),
        };
        let certs = self
            .blocking(move |a| {
                let login = ServerLogin {
                    username: &r.username,
                    password: &r.password,
                    totp_code: &r.totp_code,
                    ssh_public_key: &r.ssh_public_key,
                    tls_public_key_der: &r.tls_public_key,
                    ttl: (r.ttl_seconds > 0).then(|| Duration::from_secs(r.ttl_seconds)),
                    remote,
                    client: super::server::LoginClient::Cli,
                };
                match (&assertion, &passkey) {
                    (_, Some(p)) => a.login_passwordless(&login, p),
                    (Some(w), None) => a.login_webauthn(&login, w),
                    (None, None) => a.login(&login),
                }
            })
            .await?;
        Ok(Response::new(LoginResponse {
            ssh_certificate: certs.ssh_certificate,
            tls_certificate_pem: certs.tls_certificate_pem,
            known_hosts: certs.known_hosts,
            trusted_cas_pem: certs.trusted_cas_pem,
            trust_digest: certs.trust_digest,
            cluster_name: self.auth.cluster_name().to_string(),
            username: certs.username,
            roles: certs.roles,
            logins: certs.logins,
            expires_unix: unix(certs.expires),
        }))
    }
}

/// The answer to `EmitEvents` and `EmitEventsPacked`: the events refused, by position.
fn refused_to_proto(refused: Vec<super::agent_events::RefusedEvent>) -> EmitEventsResponse {
    let refused = refused
        .into_iter()
        .map(|r| RefusedEvent {
            index: u32::try_from(r.index).unwrap_or(u32::MAX),
            id: r.id,
            reason: r.refusal.reason().to_string(),
            error: r.refusal.to_string(),
        })
        .collect();
    EmitEventsResponse { refused }
}

fn micros(v: i64) -> Option<std::time::SystemTime> {
    (v > 0).then(|| UNIX_EPOCH + Duration::from_micros(u64::try_from(v).unwrap_or(0)))
}

fn audit_status(e: hop_storage::AuditError) -> Status {
    match e {
        hop_storage::AuditError::InvalidQuery { .. } => Status::invalid_argument(e.to_string()),
        other => Status::internal(other.to_string()),
    }
}

/// A `Write` that sends what it is given as stream chunks.
struct ChunkWriter {
    tx: tokio::sync::mpsc::Sender<Result<EventChunk, Status>>,
    buf: Vec<u8>,
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 64 * 1024 {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = EventChunk {
            data: std::mem::take(&mut self.buf),
        };
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
        })
    }
}

#[tonic::async_trait]
impl AuthAdmin for AuthApi {
    type ExportEventsStream =
        std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<EventChunk, Status>> + Send>>;
    type ExportBackupStream =
        std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<BackupChunk, Status>> + Send>>;

    async fn export_backup(
        &self,
        req: Request<ExportBackupRequest>,
    ) -> Result<Response<Self::ExportBackupStream>, Status> {
        let c = caller(&req);
        // The file holds every CA's private key: the local admin socket, or a role granting
        // `backup` `read` (a wildcard admin rule does); a refusal is on the record too.
        let file = self
            .blocking(move |a| match authorize(a, &c, "backup", "read") {
                Ok(actor) => a.export_backup(&actor),
                Err(e) => {
                    a.refuse_backup(&c.actor(), &e.to_string());
                    Err(e)
                }
            })
            .await?;
        let chunks: Vec<Result<BackupChunk, Status>> = file
            .chunks(64 * 1024)
            .map(|c| Ok(BackupChunk { data: c.to_vec() }))
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn search_events(
        &self,
        req: Request<SearchEventsRequest>,
    ) -> Result<Response<SearchEventsResponse>, Status> {
        let c = caller(&req);
        self.blocking(move |a| authorize(a, &c, "event", "list").map(drop))
            .await?;
        let log = self.audit_log()?;
        let r = req.into_inner();
        let q = hop_storage::SearchQuery {
            from: micros(r.from_unix_micros),
            to: micros(r.to_unix_micros),
            event_types: r.event_types,
            user: (!r.user.is_empty()).then_some(r.user),
            session_id: (!r.session_id.is_empty()).then_some(r.session_id),
            text: (!r.text.is_empty()).then_some(r.text),
            order: if r.oldest_first {
                hop_storage::Order::OldestFirst
            } else {
                hop_storage::Order::NewestFirst
            },
            limit: if r.limit == 0 {
                hop_storage::audit::DEFAULT_LIMIT
            } else {
                r.limit as usize
            },
            cursor: (!r.cursor.is_empty()).then_some(r.cursor),
        };
        let page = tokio::task::spawn_blocking(move || log.search(&q))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(audit_status)?;
        Ok(Response::new(SearchEventsResponse {
            events_json: page
                .events
                .iter()
                .filter_map(|e| serde_json::to_string(e).ok())
                .collect(),
            next_cursor: page.next_cursor.unwrap_or_default(),
        }))
    }

    async fn verify_audit(
        &self,
        req: Request<VerifyAuditRequest>,
    ) -> Result<Response<VerifyAuditResponse>, Status> {
        let c = caller(&req);
        self.blocking(move |a| authorize(a, &c, "event", "read").map(drop))
            .await?;
        let log = self.audit_log()?;
        let since = micros(req.into_inner().since_unix_micros);
        let report = tokio::task::spawn_blocking(move || log.verify(since))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(audit_status)?;
        let b = report.first_break.as_ref();
        Ok(Response::new(VerifyAuditResponse {
            events_checked: report.events_checked,
            segments: report.segments,
            intact: b.is_none(),
            first_break: b.map(|b| b.to_string()).unwrap_or_default(),
            break_seq: b.map(|b| b.seq).unwrap_or(0),
            break_id: b.map(|b| b.id.clone()).unwrap_or_default(),
        }))
    }

    async fn export_events(
        &self,
        req: Request<ExportEventsRequest>,
    ) -> Result<Response<Self::ExportEventsStream>, Status> {
        let c = caller(&req);
        self.blocking(move |a| authorize(a, &c, "event", "read").map(drop))
            .await?;
        let log = self.audit_log()?;
        let r = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tokio::task::spawn_blocking(move || {
            let mut w = ChunkWriter {
                tx: tx.clone(),
                buf: Vec::new(),
            };
            let res = log.export(micros(r.from_unix_micros), micros(r.to_unix_micros), &mut w);
            let _ = std::io::Write::flush(&mut w);
            if let Err(e) = res {
                let _ = tx.blocking_send(Err(audit_status(e)));
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn list_inventory(
        &self,
        req: Request<ListInventoryRequest>,
    ) -> Result<Response<ListInventoryResponse>, Status> {
        let c = caller(&req);
        self.blocking(move |a| authorize(a, &c, "node", "list").map(drop))
            .await?;
        let own_proxy = self
            .registry
            .as_ref()
            .map(|r| r.proxy_id().to_string())
            .unwrap_or_default();
        let others = {
            let (backend, own) = (self.auth.backend().clone(), own_proxy.clone());
            tokio::task::spawn_blocking(move || super::inventory::others(backend.as_ref(), &own))
                .await
                .unwrap_or_default()
        };
        let remote_agents: Vec<Agent> = others
            .into_iter()
            .flat_map(|p| {
                let proxy = p.proxy_id;
                p.agents.into_iter().map(move |a| Agent {
                    host_id: a.host_id,
                    host_name: String::new(),
                    version: a.version,
                    services: a.services,
                    remote_addr: a.remote_addr,
                    connected_unix: a.connected_unix,
                    last_heartbeat_unix: a.last_heartbeat_unix,
                    pooled_data_connections: 0,
                    apps: Vec::new(),
                    proxy_id: proxy.clone(),
                })
            })
            .collect();
        let mut agents: Vec<Agent> = self
            .registry
            .as_ref()
            .map(|r| r.list())
            .unwrap_or_default()
            .into_iter()
            .map(|i| Agent {
                proxy_id: own_proxy.clone(),
                host_id: i.host_id.clone(),
                host_name: String::new(),
                version: i.version,
                services: i.services,
                remote_addr: i.remote.to_string(),
                connected_unix: unix(i.connected),
                last_heartbeat_unix: unix(i.last_heartbeat),
                pooled_data_connections: u32::try_from(i.pooled).unwrap_or(u32::MAX),
                apps: i
                    .resources
                    .iter()
                    .filter(|r| r.kind == "app")
                    .map(|r| App {
                        name: r.name.clone(),
                        uri: r.target.clone().unwrap_or_default(),
                        labels: r.labels.iter().cloned().collect(),
                        agent_id: i.host_id.clone(),
                    })
                    .collect(),
            })
            .collect();
        agents.extend(remote_agents);
        Ok(Response::new(ListInventoryResponse { agents }))
    }

    async fn status(
        &self,
        req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let c = caller(&req);
        let (users, roles) = self
            .blocking(move |a| {
                authorize(a, &c, "cluster_name", "read")?;
                a.counts()
            })
            .await?;
        let authorities = self
            .auth
            .rotation_status()
            .iter()
            .map(super::grpc_rotation::status)
            .collect();
        let snapshot = self.blocking(|a| a.admission_snapshot()).await?;
        let locking_mode = match snapshot.locking_mode() {
            hop_rbac::LockingMode::Strict => "strict",
            hop_rbac::LockingMode::BestEffort => "best_effort",
        };
        Ok(Response::new(StatusResponse {
            cluster_name: self.auth.cluster_name().to_string(),
            server_version: env!("CARGO_PKG_VERSION").to_string(),
            ca_pin: self.auth.ca_pin(),
            authorities,
            users,
            roles,
            locking_mode: locking_mode.into(),
            admission_snapshot_age_secs: snapshot.age(self.auth.now()).as_secs(),
        }))
    }

    async fn create_user(
        &self,
        req: Request<CreateUserRequest>,
    ) -> Result<Response<InviteResponse>, Status> {
        let c = caller(&req);
        let r = req.into_inner();
        let invite = self
            .blocking(move |a| {
                let actor = authorize(a, &c, "user", "create")?;
                let mut traits: BTreeMap<String, Vec<String>> =
                    r.traits.into_iter().map(|(k, v)| (k, v.values)).collect();
                if !r.logins.is_empty() {
                    traits.insert("logins".into(), r.logins);
                }
                a.create_user(&r.name, &r.roles, traits, &actor)
            })
            .await?;
        Ok(Response::new(self.invite_response(invite)))
    }

    async fn reset_user(
        &self,
        req: Request<ResetUserRequest>,
    ) -> Result<Response<InviteResponse>, Status> {
        let c = caller(&req);
        let r = req.into_inner();
        let invite = self
            .blocking(move |a| {
                let actor = authorize(a, &c, "user", "update")?;
                a.reset_user(&r.name, &actor)
            })
            .await?;
        Ok(Response::new(self.invite_response(invite)))
    }

    async fn unlock_user(
        &self,
        req: Request<UnlockUserRequest>,
    ) -> Result<Response<Empty>, Status> {
        let c = caller(&req);
        let r = req.into_inner();
        self.blocking(move |a| {
            let actor = authorize(a, &c, "user", "update")?;
            a.unlock_user(&r.name, &actor)
        })
        .await?;
        Ok(Response::new(Empty {}))
    }

    async fn lock_user(&self, req: Request<LockUserRequest>) -> Result<Response<Empty>, Status> {
        let c = caller(&req);
        let r = req.into_inner();
        self.blocking(move |a| {
            let actor = authorize(a, &c, "user", "update")?;
            let until = (r.ttl_seconds > 0)
                .then(|| a.expiry_after(std::time::Duration::from_secs(r.ttl_seconds)))
                .transpose()?;
            a.lock_user(&r.name, until, &r.reason, &actor)
        })
        .await?;
        Ok(Response::new(Empty {}))
    }

    async fn create_token(
        &self,
        req: Request<CreateTokenRequest>,
    ) -> Result<Response<CreateTokenResponse>, Status> {
        let c = caller(&req);
        let r = req.into_inner();
        let made = self
            .blocking(move |a| {
                let actor = authorize(a, &c, "token", "create")?;
                let ttl = if r.ttl_seconds == 0 {
                    Duration::from_secs(30 * 60)
                } else {
                    Duration::from_secs(r.ttl_seconds)
                };
                a.create_join_token(
                    &r.roles,
                    ttl,
                    Some(r.value.as_str()),
                    (r.uses > 0).then_some(r.uses),
                    &actor,
                )
            })
            .await?;
        Ok(Response::new(CreateTokenResponse {
            token: made.secret,
            expires_unix: unix(made.expires),
            roles: made.roles,
            id: made.id,
        }))
    }

    async fn create_resources(
        &self,
        req: Request<CreateResourcesRequest>,
    ) -> Result<Response<CreateResourcesResponse>, Status> {
        let c = caller(&req);
        let r = req.into_inner();
        let created = self
            .blocking(move |a| {
                let actor = c.actor();
                let source = if r.source.is_empty() {
                    "<stdin>".to_string()
                } else {
                    r.source
                };
                a.create_resources(&r.yaml, &source, r.force, &actor, &|kind, verb| {
                    authorize(a, &c, kind, verb).map(drop)
                })
            })
            .await?;
        Ok(Response::new(CreateResourcesResponse {
            written: created.written,
            warnings: created.warnings,
        }))
    }

    async fn get_resources(
        &self,
        req: Request<GetResourcesRequest>,
    ) -> Result<Response<GetResourcesResponse>, Status> {
        let c = caller(&req);
        let r = req.into_inner();
        let docs = self
            .blocking(move |a| {
                let kind = super::resources::canonical_kind(&r.kind).unwrap_or("");
                authorize(a, &c, kind, if r.name.is_empty() { "list" } else { "read" })?;
                a.get_resources(&r.kind, (!r.name.is_empty()).then_some(r.name.as_str()))
            })
            .await?;
        Ok(Response::new(GetResourcesResponse {
            json: docs.into_iter().map(|d| d.to_string()).collect(),
        }))
    }

    async fn delete_resource(
        &self,
        req: Request<DeleteResourceRequest>,
    ) -> Result<Response<Empty>, Status> {
        let c = caller(&req);
        let r = req.into_inner();
        self.blocking(move |a| {
            let kind = super::resources::canonical_kind(&r.kind).unwrap_or("");
            let actor = authorize(a, &c, kind, "delete")?;
            a.delete_resource(&r.kind, &r.name, &actor)
        })
        .await?;
        Ok(Response::new(Empty {}))
    }

    async fn rotate_cert_authority(
        &self,
        req: Request<RotateCertAuthorityRequest>,
    ) -> Result<Response<RotateCertAuthorityResponse>, Status> {
        let c = caller(&req);
        let r = req.into_inner();
        let statuses = self
            .blocking(move |a| {
                let actor = authorize(a, &c, "cert_authority", "update")?;
                let rotate = super::grpc_rotation::request(&r)?;
                a.rotate_ca(&actor, &rotate)
            })
            .await?;
        Ok(Response::new(RotateCertAuthorityResponse {
            authorities: statuses.iter().map(super::grpc_rotation::status).collect(),
        }))
    }

    async fn export_authorities(
        &self,
        req: Request<ExportAuthoritiesRequest>,
    ) -> Result<Response<ExportAuthoritiesResponse>, Status> {
        let r = req.into_inner();
        // Public keys only: anyone who can reach the cluster may fetch what they need to trust it.
        self.metrics.grpc_requests.inc();
        let kind: CaKind = r.kind.parse().map_err(|_| {
            Status::invalid_argument(format!(
                "--type: unknown CA type {:?}; expected user, host, db, jwt, openssh or spiffe",
                r.kind
            ))
        })?;
        let cas = self.auth.public_authorities(kind);
        let format = if r.format.is_empty() {
            match kind {
                CaKind::User | CaKind::Host | CaKind::OpenSsh => "openssh",
                CaKind::Db | CaKind::Jwt | CaKind::Spiffe => "pem",
            }
        } else {
            r.format.as_str()
        };
        let data = match (kind, format) {
            (CaKind::User | CaKind::OpenSsh, "openssh") => {
                hop_ca::export_trusted_user_ca_keys(&cas)
            }
            (CaKind::Host, "openssh") => hop_ca::export_known_hosts(&cas),
            (CaKind::User | CaKind::Host | CaKind::Db | CaKind::Spiffe, "pem") => {
                hop_ca::export_pem(&cas)
            }
            (CaKind::Jwt, "pem") => cas
                .iter()
                .filter_map(|c| c.jwt_public_pem.clone())
                .collect(),
            (k, f) => {
                return Err(Status::invalid_argument(format!(
                    "--format: {f:?} is not available for the {k} CA; use {}",
                    match k {
                        CaKind::User | CaKind::Host => "openssh or pem",
                        CaKind::OpenSsh => "openssh",
                        _ => "pem",
                    }
                )));
            }
        };
        Ok(Response::new(ExportAuthoritiesResponse { data }))
    }
}

#[cfg(test)]
mod audit_api_tests;
