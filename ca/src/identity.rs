//! Who a certificate speaks for: the [`Identity`] carried by user certificates (in SSH certificate
//! extensions and in one X.509 extension) and the [`HostRole`] carried by host certificates. This
//! module owns the data model and its names only; how it is encoded into each certificate format
//! lives with that format (`ssh.rs`, `x509.rs`), and it never decides what an identity may do.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::error::CaError;

/// Who a user certificate speaks for. The same content is carried in the SSH certificate
/// extensions and in the X.509 identity extension ([`crate::HOP_IDENTITY_OID`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
pub struct Identity {
    /// The Hop user name (SSH key id, X.509 CN).
    pub username: String,
    /// The user's roles at login time.
    pub roles: Vec<String>,
    /// OS logins the user may take (SSH principals).
    pub logins: Vec<String>,
    /// User traits (from the identity provider), used in role templates.
    pub traits: BTreeMap<String, Vec<String>>,
    /// The cluster that issued the certificate.
    pub cluster: String,
    /// The cluster the user's sessions are routed to (leaf cluster), or the issuing one.
    pub route_to_cluster: String,
    /// Whether SSH agent forwarding is allowed.
    pub permit_agent_forwarding: bool,
    /// Whether SSH port forwarding is allowed.
    pub permit_port_forwarding: bool,
    /// Whether an SSH PTY may be allocated.
    pub permit_pty: bool,
    /// Route of a database-access certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_to_database: Option<RouteToDatabase>,
    /// Route of an application-access certificate (the app's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_to_app: Option<String>,
    /// Route of a Kubernetes-access certificate (the kube cluster's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_to_kube_cluster: Option<String>,
    /// Whether the login that produced this certificate passed a second factor.
    pub mfa_verified: bool,
    /// The access requests whose roles `roles` includes (admission refuses the certificate
    /// once one of them is no longer approved).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active_requests: Vec<String>,
    /// Per-session MFA: the one target a fresh WebAuthn assertion was made for (a one-minute
    /// certificate; in SSH certificates a critical option, so that a server that does not know
    /// it refuses the certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_mfa: Option<SessionMfaTarget>,
}

/// The target of a per-session MFA certificate: one login on one node, one database (service,
/// user and name), one Kubernetes cluster, or one application. Serialized without a tag: each shape has its own
/// field names (a node's `{node, login}` is the shape SSH-only certificates carried).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum SessionMfaTarget {
    /// An SSH session: the node's name and the OS login.
    Node { node: String, login: String },
    /// A database session: the database service and the database user and name.
    Database {
        db_service: String,
        db_user: String,
        db_name: String,
    },
    /// A Kubernetes session: the kube cluster's name.
    KubeCluster { kube_cluster: String },
    /// An application session (HTTP or TCP): the application's name.
    App { app: String },
}

impl SessionMfaTarget {
    /// The target as audit events and messages name it: `LOGIN@NODE`, `database SERVICE
    /// (USER on NAME)`, `kube cluster NAME`.
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            Self::Node { node, login } => format!("{login}@{node}"),
            Self::Database {
                db_service,
                db_user,
                db_name,
            } => format!("database {db_service:?} ({db_user} on {db_name})"),
            Self::KubeCluster { kube_cluster } => format!("kube cluster {kube_cluster:?}"),
            Self::App { app } => format!("application {app:?}"),
        }
    }

    /// The database target a database route names.
    #[must_use]
    pub fn for_database(route: &RouteToDatabase) -> Self {
        Self::Database {
            db_service: route.service.clone(),
            db_user: route.username.clone(),
            db_name: route.database.clone(),
        }
    }
}

/// The database a route-specific user certificate is for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RouteToDatabase {
    /// The database service (resource) name.
    pub service: String,
    /// The database user to connect as.
    pub username: String,
    /// The database (schema) name to connect to.
    pub database: String,
}

/// The role a host certificate was issued for (Teleport's system roles).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostRole {
    /// The auth service.
    Auth,
    /// The proxy service.
    Proxy,
    /// An SSH node agent.
    Node,
    /// An application access agent.
    App,
    /// A database access agent.
    Db,
    /// A Kubernetes access agent.
    Kube,
    /// A desktop access agent.
    Desktop,
}

impl HostRole {
    /// Every role, in declaration order.
    pub const ALL: [HostRole; 7] = [
        HostRole::Auth,
        HostRole::Proxy,
        HostRole::Node,
        HostRole::App,
        HostRole::Db,
        HostRole::Kube,
        HostRole::Desktop,
    ];

    /// The role's name as written in certificates and config ("node", "proxy", …).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            HostRole::Auth => "auth",
            HostRole::Proxy => "proxy",
            HostRole::Node => "node",
            HostRole::App => "app",
            HostRole::Db => "db",
            HostRole::Kube => "kube",
            HostRole::Desktop => "desktop",
        }
    }
}

impl fmt::Display for HostRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for HostRole {
    type Err = CaError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HostRole::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| CaError::UnknownName {
                what: "host role",
                value: s.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_role_names_round_trip() {
        for role in HostRole::ALL {
            assert_eq!(role.to_string().parse::<HostRole>().unwrap(), role);
            let json = serde_json::to_string(&role).unwrap();
            assert_eq!(json, format!("\"{role}\""));
        }
        assert!("root".parse::<HostRole>().is_err());
    }

    #[test]
    fn identity_json_omits_absent_routes() {
        let id = Identity {
            username: "alice".into(),
            ..Identity::default()
        };
        let json = serde_json::to_string(&id).unwrap();
        assert!(!json.contains("route_to_database"));
        assert!(!json.contains("route_to_app"));
        assert_eq!(serde_json::from_str::<Identity>(&json).unwrap(), id);
    }
}
