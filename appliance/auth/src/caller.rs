//! Who is calling the Auth API, as established by the transport before any handler runs.
//!
//! The listener that accepted a connection attaches one [`Caller`] to every request on it: the
//! local admin socket marks its peers as [`Caller::LocalAdmin`] (the socket is 0600 and the peer's
//! uid is checked), the TLS listener marks peers with a verified user certificate as
//! [`Caller::User`], and everyone else as [`Caller::Anonymous`]. Handlers never look at sockets.

use std::net::SocketAddr;

use hop_ca::Identity;

#[derive(Debug, Clone)]
pub enum Caller {
    /// A process of the appliance's own user on the admin socket in the data dir.
    LocalAdmin,
    /// A client that presented a valid user certificate of this cluster.
    User {
        identity: Box<Identity>,
        remote: SocketAddr,
        /// When the certificate expires: certificates derived from it may not outlive it.
        expires: std::time::SystemTime,
        /// When it was issued: admission voids certificates older than a lock.
        issued_at: std::time::SystemTime,
    },
    /// An agent of this cluster with a valid host certificate.
    Host {
        host_id: String,
        role: hop_ca::HostRole,
        remote: SocketAddr,
        /// When the host certificate expires.
        expires: std::time::SystemTime,
        /// The certificate's serial number (hex): during a host CA rotation only the certificate
        /// Auth last issued to the host renews.
        serial: String,
        /// The SPKI pin (SHA-256) of the trusted host CA key that signed the certificate, where
        /// whoever named the caller found it: the agent registry keeps it, so that a rotation
        /// that drops the key disconnects the agent.
        signer: Option<String>,
    },
    /// Anyone else; may use only the public API.
    Anonymous { remote: Option<SocketAddr> },
}

impl Caller {
    pub fn remote(&self) -> Option<SocketAddr> {
        match self {
            Caller::LocalAdmin => None,
            Caller::User { remote, .. } | Caller::Host { remote, .. } => Some(*remote),
            Caller::Anonymous { remote } => *remote,
        }
    }

    /// The name recorded as the actor of admin actions.
    pub fn actor(&self) -> String {
        match self {
            Caller::LocalAdmin => "admin (local socket)".into(),
            Caller::User { identity, .. } => identity.username.clone(),
            Caller::Host { host_id, .. } => format!("host {host_id}"),
            Caller::Anonymous { .. } => "anonymous".into(),
        }
    }
}
