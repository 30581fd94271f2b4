//! What passes between a worker that keeps a session and the control plane.
//!
//! A `hop-tcp` or `hop-ssh` session never leaves the worker that accepted it: the worker
//! terminates TLS, reads the user's Dial inside its own rustls connection, and asks the control
//! plane, in one [`SessionRequest`], for what needs Auth and the agents' tunnels (the caller's
//! identity, the admission decision, RBAC, audit, the tracker, the live-session watch, and a
//! pooled agent data connection past its Dial exchange). The answer ([`SessionAnswer`]) is a
//! refusal for the user, the agent's leg as a descriptor with its traffic keys (the worker then
//! answers the user and relays on its own runtime), or, for an SSH session the proxy must
//! terminate itself (russh, on tokio), a request to hand the connection over with its Dial,
//! once. The client's descriptor and rustls state stay on the worker otherwise. This module owns the messages only: it never
//! decides, and never names Auth or the routes (fences).

use std::net::SocketAddr;
use std::time::Duration;

use hop_protocols::tunnel::Dial;
use tokio::sync::{mpsc, oneshot};

use super::{ConnectionKeys, RelayOutcome};

/// Session requests waiting for the control plane; beyond that a worker refuses the session
/// with a "busy" answer (the user may retry).
pub const SESSION_QUEUE: usize = 1024;

/// The routes whose sessions a worker keeps, by ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeptRoute {
    /// `hop-tcp`: a TCP application.
    App,
    /// `hop-ssh`: `login@node` through a node agent (end to end), unless the proxy must
    /// terminate the SSH session ([`SessionAnswer::HandOff`]).
    Ssh,
}

impl KeptRoute {
    /// The route a negotiated ALPN names, if its sessions are kept on their worker.
    pub fn of_alpn(alpn: Option<&[u8]>) -> Option<Self> {
        match alpn? {
            p if p == hop_net::tunnel::ALPN_TCP => Some(Self::App),
            p if p == hop_net::tunnel::ALPN_SSH => Some(Self::Ssh),
            _ => None,
        }
    }
}

/// A user's Dial a worker already read, with the plaintext that followed it: a connection
/// handed to the control plane after its Dial carries them.
#[derive(Debug)]
pub struct ReadDial {
    pub dial: Dial,
    pub pending: Vec<u8>,
}

/// A worker's request for a session it keeps.
#[derive(Debug)]
pub struct SessionRequest {
    pub route: KeptRoute,
    /// The user's Dial, read on the worker.
    pub dial: Dial,
    /// The client certificate's leaf (DER), verified against the cluster's CAs by the handshake;
    /// the control plane identifies its holder.
    pub peer_cert: Vec<u8>,
    /// The client's address (the TCP peer, or a trusted PROXY header's source).
    pub remote: SocketAddr,
    /// The worker that keeps the session.
    pub worker: usize,
    /// A duplicate of the client's socket: the live-session watch shuts it down on a refusal.
    pub client_socket: socket2::Socket,
    /// Where the control plane answers.
    pub answer: oneshot::Sender<SessionAnswer>,
}

/// The control plane's answer to a [`SessionRequest`].
#[derive(Debug)]
pub enum SessionAnswer {
    /// Refused, with the words for the user's `DialResult`; `None`: close without an answer
    /// (a certificate that does not open this route, audited by the control plane).
    Refused(Option<String>),
    /// Admitted, and the agent accepted the Dial: the worker relays.
    Relay(AgentLeg),
    /// The session needs a library that runs on tokio (the proxy's SSH server): hand the
    /// connection to the control plane with its Dial; it decides there and never comes back.
    HandOff,
}

/// The agent's leg of an admitted session, past its `DialResult`.
#[derive(Debug)]
pub struct AgentLeg {
    pub stream: std::net::TcpStream,
    pub keys: ConnectionKeys,
    /// Plaintext the agent sent after its `DialResult` that rustls already decrypted.
    pub to_client: Vec<u8>,
    /// End the session when no byte moved either way for this long.
    pub idle: Option<Duration>,
    /// Where the worker reports the session's end (the control plane audits it).
    pub done: oneshot::Sender<RelayOutcome>,
}

/// The sending side, one per data plane (workers share it).
pub type SessionRequests = mpsc::Sender<SessionRequest>;
/// The control plane's side.
pub type SessionInbox = mpsc::Receiver<SessionRequest>;

/// A new queue between the workers and the control plane.
pub fn session_queue() -> (SessionRequests, SessionInbox) {
    mpsc::channel(SESSION_QUEUE)
}
