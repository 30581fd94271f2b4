//! Agents joining and renewing: an agent trades a join token (or its current certificate) for
//! host certificates, and learns what it needs to decide on its own (roles, locked users, the
//! user CA). This module decides whether a join or renewal may proceed and records it; it never
//! builds a certificate itself (see `certificates`) and never logs a join token.

use std::net::SocketAddr;
use std::time::SystemTime;

use hop_ca::{CaKind, HostRole};
use hop_rbac::{Role, User};

use super::certificates::HOST_CERT_TTL;
use super::{AuthServer, resources};
use crate::audit::{AuditEvent, EventKind};
use crate::error::AuthError;

/// What an agent sends to join or renew. `token` is empty on renewal.
#[derive(Clone, Copy)]
pub struct JoinRequest<'a> {
    pub token: &'a str,
    pub role: &'a str,
    /// The node name asked for; empty for none.
    pub host_name: &'a str,
    pub tls_public_key_der: &'a [u8],
    pub ssh_public_key: &'a str,
    pub remote: Option<SocketAddr>,
}

impl std::fmt::Debug for JoinRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinRequest")
            .field("role", &self.role)
            .field("host_name", &self.host_name)
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

/// What an agent receives when it joins or renews.
#[derive(Debug, Clone)]
pub struct JoinedHost {
    pub host_id: String,
    /// The node name Auth certified, if the agent asked for one.
    pub host_name: Option<String>,
    pub certificate_pem: String,
    pub host_ca_pem: String,
    pub user_ca_pem: String,
    /// SSH host certificate, when the agent sent an SSH host key.
    pub ssh_host_certificate: Option<String>,
    pub ssh_user_ca_keys: Vec<String>,
    pub ssh_host_ca_keys: Vec<String>,
    pub expires: SystemTime,
}

/// What an SSH node needs to decide on its own (see [`AuthServer::node_access`]).
#[derive(Debug, Clone)]
pub struct NodeAccess {
    pub roles: Vec<Role>,
    pub locked_users: Vec<String>,
    pub ssh_user_ca_keys: Vec<String>,
    pub session_recording: String,
}

impl AuthServer {
    /// An agent trades a join token for a host certificate. The token is checked first, then the
    /// node name the agent asks for (see `host_names`) is claimed, and only then is one of the
    /// token's uses spent; a refusal at any step issues nothing.
    pub fn join(&self, req: &JoinRequest<'_>) -> Result<JoinedHost, AuthError> {
        self.rate_limit(req.remote)?;
        let fail = |e: AuthError| {
            self.audit.emit_durable(
                self.event(EventKind::AgentJoin, req.host_name)
                    .remote(req.remote)
                    .field("role", req.role)
                    .failed(EventKind::AgentJoin, e.to_string()),
            );
            e
        };
        let (system_role, host_role) = join_roles(req.role).map_err(fail)?;
        let token_id = self
            .check_join_token(req.token, system_role)
            .map_err(fail)?;
        let host_id = uuid::Uuid::new_v4().to_string();
        let until = self.clock.now() + HOST_CERT_TTL;
        let name = self
            .claim_node_name(&host_id, req.host_name.trim(), until)
            .map_err(fail)?;
        let issued = self
            .consume_join_token(&token_id)
            .and_then(|()| self.issue_host_identity(&host_id, host_role, name.as_deref(), req));
        let joined = match issued {
            Ok(j) => j,
            Err(e) => {
                if let Some(n) = &name {
                    self.release_node_name(&host_id, n);
                }
                return Err(fail(e));
            }
        };
        self.audit.emit_durable(
            self.event(EventKind::AgentJoin, name.as_deref().unwrap_or(&host_id))
                .remote(req.remote)
                .field("role", req.role)
                .field("host_id", host_id)
                .field("token_id", token_id),
        );
        Ok(joined)
    }

    /// A new host certificate for an agent that proved its current one (`host_id`, `role`). The
    /// name it asks for is checked again: it must keep the rule and still be this host's.
    pub fn renew_host_identity(
        &self,
        host_id: &str,
        role: HostRole,
        serial: &str,
        req: &JoinRequest<'_>,
    ) -> Result<JoinedHost, AuthError> {
        // Proxies are certified in their own appliance; a proxy certificate renewed here would
        // be a peering credential that outlives the appliance's own.
        if role == HostRole::Proxy {
            return Err(AuthError::BadRequest(
                "a proxy certificate is not renewed through the API: each appliance's proxy \
                 is certified in-process"
                    .into(),
            ));
        }
        self.check_renewal_during_rotation(host_id, serial)?;
        let until = self.clock.now() + HOST_CERT_TTL;
        let name = self.claim_node_name(host_id, req.host_name.trim(), until)?;
        self.issue_host_identity(host_id, role, name.as_deref(), req)
    }

    /// Records an agent's events; `Err` unless every one is durable (the agent then keeps and
    /// resends them; ids make the resend idempotent).
    pub fn emit_agent_events(&self, events: Vec<AuditEvent>) -> Result<(), AuthError> {
        self.audit
            .append_all_durable(events)
            .map_err(AuthError::AuditLog)
    }

    /// Roles, locked users, user CA keys and the recording mode, for a node's own decisions.
    pub fn node_access(&self) -> Result<NodeAccess, AuthError> {
        let now = self.clock.now();
        let roles = self
            .store
            .list::<Role>()?
            .into_iter()
            .map(|v| v.value)
            .collect();
        let locked_users = self
            .store
            .list::<User>()?
            .into_iter()
            .filter(|u| resources::locked_until(&u.value, now).is_some())
            .map(|u| u.value.metadata.name)
            .collect();
        Ok(NodeAccess {
            roles,
            locked_users,
            ssh_user_ca_keys: super::certificates::ssh_keys(
                self.authorities().trusted(CaKind::User),
            ),
            session_recording: self.settings.session_recording.clone(),
        })
    }
}

/// The token role and certificate role of an agent joining as `role`.
fn join_roles(role: &str) -> Result<(hop_rbac::SystemRole, HostRole), AuthError> {
    let system_role: hop_rbac::SystemRole = role.parse().map_err(AuthError::BadRequest)?;
    let host_role = match system_role {
        hop_rbac::SystemRole::Node => HostRole::Node,
        hop_rbac::SystemRole::App => HostRole::App,
        hop_rbac::SystemRole::Db => HostRole::Db,
        hop_rbac::SystemRole::Kube => HostRole::Kube,
        hop_rbac::SystemRole::WindowsDesktop => HostRole::Desktop,
        // A proxy's certificate opens proxy peering (any agent's sessions): an appliance's
        // proxy is certified by the Auth it runs with, never through a token an agent could
        // hold.
        hop_rbac::SystemRole::Proxy => {
            return Err(AuthError::BadRequest(
                "a proxy cannot join with a token: each appliance's proxy is certified by the \
                 cluster's Auth it shares the backend with"
                    .into(),
            ));
        }
        other => {
            return Err(AuthError::BadRequest(format!(
                "role {:?} cannot join with a host certificate",
                other.as_str()
            )));
        }
    };
    Ok((system_role, host_role))
}
