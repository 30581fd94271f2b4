//! What passes between a worker that keeps a session and the control plane.
//!
//! A `hop-tcp`, `hop-ssh` or PostgreSQL session never leaves the worker that accepted it: the
//! worker terminates TLS, reads the session's opening message inside its own rustls connection
//! (the user's Dial, or PostgreSQL's StartupMessage), and asks the control plane, in one
//! [`SessionRequest`], for what needs Auth and the agents' tunnels (the caller's identity, the
//! admission decision, RBAC, audit, the tracker, the live-session watch, and a pooled agent data
//! connection past its Dial exchange and, for PostgreSQL, the database's start-up). The answer
//! ([`SessionAnswer`]) is bytes for the user and the end, the agent's leg as a descriptor with
//! its traffic keys and the bytes the user gets first (the worker then relays on its own
//! runtime), or, for an SSH session the proxy must terminate itself (russh, on tokio), a request
//! to hand the connection over with what it read, once. The client's descriptor and rustls state
//! stay on the worker otherwise. This module owns the messages and the openings' framing; it
//! never decides, and never names Auth or the routes (fences).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::{ConnectionKeys, RelayOutcome};

/// Session requests waiting for the control plane; beyond that a worker refuses the session
/// (closes it; the user may retry).
pub const SESSION_QUEUE: usize = 1024;

/// The routes whose sessions a worker keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeptRoute {
    /// `hop-tcp`: a TCP application.
    App,
    /// `hop-ssh`: `login@node` through a node agent (end to end), unless the proxy must
    /// terminate the SSH session ([`SessionAnswer::HandOff`]).
    Ssh,
    /// PostgreSQL: after an SSLRequest, or on ALPN `hop-postgres` or `postgresql`.
    Postgres,
}

/// Why an opening message cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum OpeningError {
    #[error("tunnel frame: {0}")]
    Frame(#[from] hop_protocols::tunnel::TunnelError),
    #[error("PostgreSQL startup packet: {0}")]
    Startup(#[from] hop_protocols::postgres::StartupError),
    #[error("the session must open with a Dial, not a frame of type {0:#04x}")]
    NotADial(u8),
    #[error("a Dial of {0} bytes is over the limit of {MAX_DIAL_LEN}")]
    DialTooLong(usize),
}

impl KeptRoute {
    /// The route of a TLS connection by its negotiated ALPN (`after_ssl_request`: it began with
    /// a PostgreSQL SSLRequest), if its sessions are kept on their worker.
    pub fn of(alpn: Option<&[u8]>, after_ssl_request: bool) -> Option<Self> {
        use hop_net::tunnel::{ALPN_POSTGRES, ALPN_POSTGRES_DIRECT, ALPN_SSH, ALPN_TCP};
        if after_ssl_request {
            return Some(Self::Postgres);
        }
        match alpn? {
            p if p == ALPN_TCP => Some(Self::App),
            p if p == ALPN_SSH => Some(Self::Ssh),
            p if p == ALPN_POSTGRES || p == ALPN_POSTGRES_DIRECT => Some(Self::Postgres),
            _ => None,
        }
    }

    /// The length of the opening message at the front of `plain` (a tunnel frame, or a
    /// PostgreSQL startup packet), once it is whole.
    pub fn opening_len(self, plain: &[u8]) -> Result<Option<usize>, OpeningError> {
        Ok(match self {
            Self::App | Self::Ssh => {
                check_dial_head(plain)?;
                hop_protocols::tunnel::Frame::decode(plain)?.map(|(_, len)| len)
            }
            Self::Postgres => hop_protocols::postgres::parse_startup(plain)?.map(|(_, len)| len),
        })
    }
}

/// The most a Dial may take as an opening (its target and addresses are short): a user may
/// not make a worker hold the tunnel framing's 1 MiB limit per connection.
pub const MAX_DIAL_LEN: usize = 8 * 1024;
/// The tunnel framing's type byte of a Dial (`hop_protocols::tunnel`).
const DIAL_TYPE: u8 = 0x05;

/// Refuses, from its first five bytes, a frame that is not a Dial or is longer than one may be.
fn check_dial_head(plain: &[u8]) -> Result<(), OpeningError> {
    let Some(&[a, b, c, d, kind]) = plain.get(..5) else {
        return Ok(());
    };
    let len = u32::from_be_bytes([a, b, c, d]) as usize;
    if kind != DIAL_TYPE {
        return Err(OpeningError::NotADial(kind));
    }
    if len > MAX_DIAL_LEN {
        return Err(OpeningError::DialTooLong(len));
    }
    Ok(())
}

/// A worker's request for a session it keeps.
#[derive(Debug)]
pub struct SessionRequest {
    pub route: KeptRoute,
    /// The session's opening message as the user sent it, whole ([`KeptRoute::opening_len`]).
    pub opening: Vec<u8>,
    /// The client certificate's leaf (DER), verified against the cluster's CAs by the handshake;
    /// the control plane identifies its holder.
    pub peer_cert: Vec<u8>,
    /// The client's address (the TCP peer, or a trusted PROXY header's source).
    pub remote: SocketAddr,
    /// The worker that keeps the session.
    pub worker: usize,
    /// Where the control plane answers.
    pub answer: oneshot::Sender<SessionAnswer>,
}

/// The control plane's answer to a [`SessionRequest`].
#[derive(Debug)]
pub enum SessionAnswer {
    /// No session: the worker sends `to_client` (a refusal in the route's words; may be empty)
    /// and closes.
    Refused { to_client: Vec<u8> },
    /// Admitted, and the agent accepted: the worker relays.
    Relay(AgentLeg),
    /// The session needs a library that runs on tokio (the proxy's SSH server): hand the
    /// connection to the control plane with what the worker read; it is served there and never
    /// comes back.
    HandOff,
}

/// The agent's leg of an admitted session, past its Dial exchange.
#[derive(Debug)]
pub struct AgentLeg {
    pub stream: std::net::TcpStream,
    pub keys: ConnectionKeys,
    /// The route's acceptance for the user (a `DialResult`, PostgreSQL's start-up answers): the
    /// worker sends it before the relay (not counted as the session's bytes).
    pub accept: Vec<u8>,
    /// What the agent sent after its answer that rustls already decrypted: the user's first bytes.
    pub to_client: Vec<u8>,
    /// End the session when no byte moved either way for this long.
    pub idle: Option<Duration>,
    /// Where the worker reports the session's end (the control plane audits it).
    pub done: oneshot::Sender<RelayOutcome>,
    /// How the live-session watch ends the session.
    pub stop: super::SessionStop,
}

/// The sending side, one per data plane (workers share it).
pub type SessionRequests = mpsc::Sender<SessionRequest>;
/// The control plane's side.
pub type SessionInbox = mpsc::Receiver<SessionRequest>;

/// A new queue between the workers and the control plane.
pub fn session_queue() -> (SessionRequests, SessionInbox) {
    mpsc::channel(SESSION_QUEUE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hop_protocols::tunnel::{Dial, Frame};

    #[test]
    fn routes_by_alpn_and_ssl_request() {
        assert_eq!(KeptRoute::of(Some(b"hop-tcp"), false), Some(KeptRoute::App));
        assert_eq!(KeptRoute::of(Some(b"hop-ssh"), false), Some(KeptRoute::Ssh));
        assert_eq!(
            KeptRoute::of(Some(b"postgresql"), false),
            Some(KeptRoute::Postgres)
        );
        assert_eq!(KeptRoute::of(None, true), Some(KeptRoute::Postgres));
        assert_eq!(KeptRoute::of(Some(b"h2"), false), None);
        assert_eq!(KeptRoute::of(None, false), None);
    }

    /// Every prefix of an opening is "not yet"; the whole is its length, whatever follows.
    #[test]
    fn openings_are_framed_at_every_prefix() {
        let mut dial = Vec::new();
        Frame::Dial(Dial {
            session_id: [7; 16],
            target: "echo".into(),
            client_addr: "127.0.0.1:1".parse().unwrap(),
        })
        .encode(&mut dial)
        .unwrap();
        let mut startup = Vec::new();
        let body = b"\x00\x03\x00\x00user\x00alice\x00\x00";
        startup.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        startup.extend_from_slice(body);
        for (route, whole) in [(KeptRoute::App, &dial), (KeptRoute::Postgres, &startup)] {
            for n in 0..whole.len() {
                assert_eq!(
                    route.opening_len(&whole[..n]).unwrap(),
                    None,
                    "{route:?} {n}"
                );
            }
            let mut more = whole.clone();
            more.extend_from_slice(b"next");
            assert_eq!(route.opening_len(&more).unwrap(), Some(whole.len()));
        }
    }

    #[test]
    fn malformed_openings_are_errors() {
        assert!(
            KeptRoute::Postgres
                .opening_len(&[0, 0, 0, 3, 0, 0, 0, 0])
                .is_err()
        );
        assert!(KeptRoute::Postgres.opening_len(&[0x7f, 0, 0, 0]).is_err());
        assert!(
            KeptRoute::App
                .opening_len(&[0x7f, 0xff, 0xff, 0xff, 1])
                .is_err()
        );
        // A Dial longer than a Dial can be, known from its first five bytes.
        let long = ((MAX_DIAL_LEN + 1) as u32).to_be_bytes();
        assert!(matches!(
            KeptRoute::Ssh.opening_len(&[long[0], long[1], long[2], long[3], DIAL_TYPE]),
            Err(OpeningError::DialTooLong(_))
        ));
        // Another frame (a Heartbeat) where the Dial must be.
        assert!(matches!(
            KeptRoute::App.opening_len(&[0, 0, 0, 9, 0x03]),
            Err(OpeningError::NotADial(0x03))
        ));
    }
}
