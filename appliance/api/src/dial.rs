//! What the proxy asks of an agent when it opens a session on the agent's tunnel: the Dial
//! targets and the JSON each carries (which node service, which session to join, which database
//! user and schema). Proxy and agents both speak this; neither imports the other.
//!
//! A target names an application, or starts with one of the prefixes here; application names
//! never start with `@`, so the two cannot be confused.

use serde::{Deserialize, Serialize};

/// The Dial target that asks an agent for its SSH server (never a valid application name).
pub const SSH_TARGET: &str = "@ssh";

/// A Dial target with a known prefix whose JSON does not decode: proxy and agent disagree (a
/// version mismatch or a bug on the proxy's side). `what` names the context, as the agent
/// answers it to the proxy.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct MalformedDial {
    pub what: &'static str,
    #[source]
    pub source: serde_json::Error,
}

impl MalformedDial {
    fn decoding<T: serde::de::DeserializeOwned>(what: &'static str, json: &str) -> Result<T, Self> {
        serde_json::from_str(json).map_err(|source| Self { what, source })
    }
}

/// Joining a live session at a node (`hop join`).
pub mod join {
    use super::*;

    /// Dial targets for joining a session start with this, then a [`JoinDial`] as JSON.
    pub const DIAL_PREFIX: &str = "@join:";

    /// What the proxy asks a node for.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct JoinDial {
        pub session_id: String,
        /// `observer`, `peer` or `moderator`.
        pub mode: String,
        /// The joining Hop user.
        pub user: String,
        /// The joining user's roles (what an owner's `require_session_join` filter is
        /// evaluated on); absent from proxies of before moderated sessions.
        #[serde(default)]
        pub roles: Vec<String>,
    }

    /// What a moderator's `hop join` sends on its stream to end the session for everyone (a
    /// moderator's other bytes are dropped by the node; NUL never comes from a keyboard key
    /// alone, so no typing spells it by chance).
    pub const MODERATOR_TERMINATE: &[u8] = b"\0hop:terminate\0";

    /// Finds [`MODERATOR_TERMINATE`] in a moderator's stream, read in pieces of any size.
    #[derive(Debug, Default)]
    pub struct TerminateScanner {
        matched: usize,
    }

    impl TerminateScanner {
        /// True once the bytes seen so far (these included) hold the request.
        pub fn push(&mut self, bytes: &[u8]) -> bool {
            for &b in bytes {
                if MODERATOR_TERMINATE.get(self.matched) == Some(&b) {
                    self.matched += 1;
                } else {
                    // The request starts with its only NUL: a mismatch restarts at this byte.
                    self.matched = usize::from(MODERATOR_TERMINATE.first() == Some(&b));
                }
                if self.matched == MODERATOR_TERMINATE.len() {
                    return true;
                }
            }
            false
        }
    }

    impl JoinDial {
        pub fn to_target(&self) -> String {
            format!(
                "{DIAL_PREFIX}{}",
                serde_json::to_string(self).unwrap_or_default()
            )
        }

        pub fn from_target(t: &str) -> Option<Result<Self, MalformedDial>> {
            let json = t.strip_prefix(DIAL_PREFIX)?;
            Some(MalformedDial::decoding("join request", json))
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn the_terminate_request_is_found_in_pieces_of_any_size_and_nowhere_else() {
            let stream = [b"q t\0\0hop:t".as_slice(), MODERATOR_TERMINATE].concat();
            for piece in 1..=stream.len() {
                let mut s = TerminateScanner::default();
                let found: Vec<bool> = stream.chunks(piece).map(|c| s.push(c)).collect();
                assert_eq!(found.last(), Some(&true), "pieces of {piece}");
                assert_eq!(found.iter().filter(|f| **f).count(), 1, "pieces of {piece}");
            }
            let mut s = TerminateScanner::default();
            let almost = MODERATOR_TERMINATE.split_last().unwrap().1;
            assert!(!s.push(b"terminate t hop:terminate"));
            assert!(!s.push(almost));
            assert!(!s.push(b"x"));
        }
    }
}

/// A database session at a database agent.
pub mod db {
    use super::*;

    /// Dial targets for database sessions start with this, followed by a [`DbDial`] as JSON.
    pub const DIAL_PREFIX: &str = "@db:";

    /// What the proxy tells a db agent about one session.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct DbDial {
        /// The database (the agent's `--db name=`).
        pub service: String,
        /// The Hop user.
        pub user: String,
        pub db_user: String,
        pub db_name: String,
        /// Hex session id, shared by the session's audit events.
        pub session_id: String,
        /// The client's address as the proxy saw it.
        pub client_addr: String,
        /// Instead of a session: cancel the running query of the database's backend.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub cancel: Option<DbCancel>,
        /// MySQL: what the client negotiated with the proxy, for the agent's login.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub mysql: Option<mysql::MysqlLogin>,
        /// MySQL: the databases (schemas) the roles allow `db_user` here, for `USE`/COM_INIT_DB
        /// during the session; without it, only `db_name`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub db_names: Option<hop_rbac::DbNames>,
    }

    /// A PostgreSQL backend's cancel key, as the database gave it.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct DbCancel {
        pub process_id: u32,
        /// Hex.
        pub secret_key: String,
    }

    impl DbDial {
        pub fn to_target(&self) -> String {
            format!(
                "{DIAL_PREFIX}{}",
                serde_json::to_string(self).unwrap_or_default()
            )
        }

        /// `None` when `target` is not a database Dial.
        pub fn from_target(target: &str) -> Option<Result<Self, MalformedDial>> {
            let json = target.strip_prefix(DIAL_PREFIX)?;
            Some(MalformedDial::decoding("database session context", json))
        }
    }
}

/// Kubernetes API traffic at a kube agent. After the agent answers the Dial, the data stream
/// carries HTTP/1.1 from the proxy: each request already decided by the proxy (the cluster, the
/// resource, the impersonated identity) and carrying exactly the impersonation the proxy chose
/// in [`IMPERSONATE_USER`]/[`IMPERSONATE_GROUP`]; upgrades (exec, attach, port-forward) are
/// relayed as the API server answers them.
pub mod kube {
    use super::*;

    /// Dial targets for Kubernetes sessions start with this, followed by a [`KubeDial`] as JSON.
    pub const DIAL_PREFIX: &str = "@kube:";
    /// The header naming the Kubernetes user the agent impersonates (exactly one per request).
    pub const IMPERSONATE_USER: &str = "impersonate-user";
    /// The header naming a Kubernetes group the agent impersonates (zero or more).
    pub const IMPERSONATE_GROUP: &str = "impersonate-group";

    /// What the proxy tells a kube agent about one connection.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct KubeDial {
        /// The kube cluster (the agent's `--kube-cluster name=`).
        pub cluster: String,
        /// The Hop user.
        pub user: String,
        /// Hex id of the proxy's connection, shared by its audit events.
        pub session_id: String,
        /// The client's address as the proxy saw it.
        pub client_addr: String,
    }

    impl KubeDial {
        pub fn to_target(&self) -> String {
            format!(
                "{DIAL_PREFIX}{}",
                serde_json::to_string(self).unwrap_or_default()
            )
        }

        /// `None` when `target` is not a Kubernetes Dial.
        pub fn from_target(target: &str) -> Option<Result<Self, MalformedDial>> {
            let json = target.strip_prefix(DIAL_PREFIX)?;
            Some(MalformedDial::decoding("kubernetes session context", json))
        }
    }
}

/// What proxy and database agent agree on for MySQL: the capabilities and plugin the proxy's
/// greeting offers, and what the client negotiated, for the agent's own login.
pub mod mysql {
    use super::*;
    use hop_protocols::mysql::capabilities::*;

    /// Capabilities the proxy offers clients: what MySQL 5.7+/8 and MariaDB 10.2+ servers all
    /// support, minus TLS (the client's leg ends at `hop proxy db` on loopback, and the proxy leg is
    /// TLS already), compression and query attributes.
    pub const OFFERED_CAPABILITIES: u32 = CLIENT_LONG_PASSWORD
    | 0x2 // FOUND_ROWS
    | 0x4 // LONG_FLAG
    | CLIENT_CONNECT_WITH_DB
    | 0x80 // LOCAL_FILES
    | 0x100 // IGNORE_SPACE
    | CLIENT_PROTOCOL_41
    | 0x400 // INTERACTIVE
    | 0x1000 // IGNORE_SIGPIPE
    | 0x2000 // TRANSACTIONS
    | CLIENT_SECURE_CONNECTION
    // Not MULTI_STATEMENTS: see `MULTI_STATEMENTS`.
    | 0x2_0000 // MULTI_RESULTS
    | 0x4_0000 // PS_MULTI_RESULTS
    | CLIENT_PLUGIN_AUTH
    | CLIENT_CONNECT_ATTRS
    | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
    | CLIENT_SESSION_TRACK
    | CLIENT_DEPRECATE_EOF;

    /// `CLIENT_MULTI_STATEMENTS`: never asked of the server (nor offered to clients), so that the
    /// server runs one statement per COM_QUERY and the schema guard reads the whole of it; the server
    /// answers a query of several statements with a syntax error. COM_SET_OPTION, which would turn
    /// them on later, is refused.
    pub const MULTI_STATEMENTS: u32 = 0x1_0000;

    /// The authentication plugin Hop's greeting names; the scramble answered to it is ignored.
    pub const AUTH_PLUGIN: &[u8] = b"mysql_native_password";

    /// What the proxy learned from the client's HandshakeResponse, for the agent's login.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct MysqlLogin {
        /// The client's capabilities, already limited to [`OFFERED_CAPABILITIES`].
        pub capabilities: u32,
        pub charset: u8,
        pub max_packet_size: u32,
        /// The connection id the proxy's greeting gave the client.
        pub connection_id: u32,
    }
}
