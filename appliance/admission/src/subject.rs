//! Who is asking, and on which route: what a route knows once it has verified a certificate.

use std::collections::BTreeMap;
use std::time::SystemTime;

/// What kind of identity presented the certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectKind {
    /// A person (local or SSO), with a user certificate.
    User,
    /// A machine identity (`bot-NAME`), with a user certificate.
    Bot,
    /// An agent (node, app, db…) with a host certificate; `name` is its host id.
    Agent,
}

/// Every route that admits sessions or calls. The name is what audit events carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// The gRPC Auth and admin API with a user certificate.
    AdminApi,
    /// `hop ssh` / OpenSSH through the proxy (`hop-ssh` ALPN).
    HopSsh,
    /// The proxy as an SSH jump host (`ssh -J`).
    JumpHost,
    /// A session the proxy terminates to an agentless OpenSSH node.
    Agentless,
    /// An SSH login on a node agent.
    Node,
    /// A TCP or HTTP application session.
    App,
    /// A Kubernetes API request or stream (exec, attach, port-forward) through the kube route.
    Kube,
    /// A PostgreSQL session.
    Postgres,
    /// A MySQL/MariaDB session.
    MySql,
    /// `hop join`: watching or joining a live session.
    Join,
    /// Listing, playing or exporting recordings.
    Recordings,
    /// An agent renewing its host certificate.
    HostRenewal,
    /// An agent's reverse tunnel.
    Tunnel,
    /// An agent's calls to the Auth API (access data, events, recordings, database keys).
    AgentApi,
    /// The web UI's API under a web session (each request, and the session while it lives).
    Web,
    /// Another proxy of the cluster asking this one to reach an agent tunnelled here.
    ProxyPeer,
}

impl Route {
    /// The route's name in audit events and messages.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::AdminApi => "admin_api",
            Self::HopSsh => "hop_ssh",
            Self::JumpHost => "jump_host",
            Self::Agentless => "agentless",
            Self::Node => "node",
            Self::App => "app",
            Self::Kube => "kube",
            Self::Postgres => "postgres",
            Self::MySql => "mysql",
            Self::Join => "join",
            Self::Recordings => "recordings",
            Self::HostRenewal => "host_renewal",
            Self::Tunnel => "tunnel",
            Self::AgentApi => "agent_api",
            Self::Web => "web",
            Self::ProxyPeer => "proxy_peer",
        }
    }

    /// Routes that start an interactive or data session (where `require_session_mfa` applies).
    #[must_use]
    pub fn is_session(self) -> bool {
        matches!(
            self,
            Self::HopSsh
                | Self::JumpHost
                | Self::Agentless
                | Self::Node
                | Self::App
                | Self::Kube
                | Self::Postgres
                | Self::MySql
                | Self::Join
        )
    }

    /// Routes only agents use.
    #[must_use]
    pub fn is_agent_route(self) -> bool {
        matches!(
            self,
            Self::HostRenewal | Self::Tunnel | Self::AgentApi | Self::ProxyPeer
        )
    }
}

/// A verified certificate's holder, as a route describes it to admission.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub kind: SubjectKind,
    /// The user name, or an agent's host id.
    pub name: &'a str,
    /// Roles the certificate carries (for agents: empty).
    pub roles: &'a [String],
    /// The access requests whose roles the certificate carries (empty: none).
    pub active_requests: &'a [String],
    pub traits: &'a BTreeMap<String, Vec<String>>,
    /// The OS login asked for, on SSH routes.
    pub login: Option<&'a str>,
    /// When the certificate was issued (its validity start without the clock-skew margin).
    pub issued_at: SystemTime,
    pub expires: SystemTime,
    /// The cluster that issued the certificate.
    pub cluster: &'a str,
    /// For a route certificate (database, app): the route it is bound to.
    pub bound_route: Option<Route>,
    /// The agent's system role for an agent (`node`, `db`, `app`…), else empty.
    pub agent_role: &'a str,
    /// The session's target as the route resolved it, when the route knows it: the node and
    /// login on SSH routes, the database service, user and name on database routes, the
    /// cluster on the Kubernetes route (what a per-session MFA mark is checked against).
    pub target: Option<SessionTarget<'a>>,
    /// The per-session MFA mark the certificate carries: the one target a fresh WebAuthn
    /// assertion was made for.
    pub session_mfa: Option<SessionMfaMark<'a>>,
}

/// One session's target: what a per-session MFA mark names and what a route starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionTarget<'a> {
    /// One login on one node (SSH routes).
    Node { node: &'a str, login: &'a str },
    /// One database service, as one database user on one database name.
    Database {
        service: &'a str,
        db_user: &'a str,
        db_name: &'a str,
    },
    /// One Kubernetes cluster.
    KubeCluster { cluster: &'a str },
    /// One application (HTTP or TCP).
    App { app: &'a str },
}

/// What a per-session MFA certificate is good for: one target.
pub type SessionMfaMark<'a> = SessionTarget<'a>;

impl SessionTarget<'_> {
    /// How messages name the target.
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            Self::Node { node, login } => format!("{login}@{node}"),
            Self::Database {
                service,
                db_user,
                db_name,
            } => format!("database {service:?} as {db_user} on {db_name}"),
            Self::KubeCluster { cluster } => format!("kube cluster {cluster:?}"),
            Self::App { app } => format!("application {app:?}"),
        }
    }

    /// Whether a session of this kind of target can start on `route`.
    #[must_use]
    pub fn served_on(&self, route: Route) -> bool {
        match self {
            Self::Node { .. } => route.is_ssh(),
            Self::Database { .. } => matches!(route, Route::Postgres | Route::MySql),
            Self::KubeCluster { .. } => route == Route::Kube,
            Self::App { .. } => route == Route::App,
        }
    }
}

impl Route {
    /// SSH routes.
    #[must_use]
    pub fn is_ssh(self) -> bool {
        matches!(
            self,
            Self::HopSsh | Self::JumpHost | Self::Agentless | Self::Node
        )
    }

    /// Routes with a per-session MFA flow: SSH, databases, Kubernetes and applications.
    #[must_use]
    pub fn has_session_mfa(self) -> bool {
        self.is_ssh() || matches!(self, Self::Postgres | Self::MySql | Self::Kube | Self::App)
    }
}
