//! A user session's hand-off to an agent, shared by every session route (`hop-tcp`, `hop-ssh`).
//!
//! This module owns the proxy's side of the Dial exchange: answering the user with a
//! `DialResult` (a refusal carries a readable reason), and taking one of the agent's pooled data
//! connections, forwarding the Dial and reading the agent's answer, or asking the proxy that
//! holds the agent's tunnel to (`crate::peering`). Deciding who may dial what stays with each
//! route.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hop_protocols::tunnel::{Dial, DialResult, Frame};

use crate::admission::UserCert;
use crate::dataplane::limits::ConnectionGuard;
use crate::relay::on_worker::{AgentLeg, SessionAnswer, SessionRequest};
use crate::relay::{ConnectionKeys, RelayError, SessionStop};
use crate::tunnels::{AgentStream, TunnelRegistry};
use hop_net::tunnel::{FrameIoError, FramedStream};

/// Why an agent did not take a session; `what` names the resource (`node "web1"`). The words
/// reach the user.
#[derive(Debug, thiserror::Error)]
pub enum AgentDialError {
    /// Every pooled connection of the agent is in use or it is reconnecting: a retry may work.
    #[error("{what}: its agent has no tunnel connection available; try again")]
    NoConnection { what: String },
    /// The agent refused the Dial, in its own words.
    #[error("{what}: {reason}")]
    Refused { what: String, reason: String },
    /// The agent answered something other than a `DialResult`, or nothing in time.
    #[error("{what}: the agent did not answer")]
    NoAnswer {
        what: String,
        #[source]
        source: Option<FrameIoError>,
    },
    /// The proxy that holds the agent's tunnel could not be asked.
    #[error("{what}: its agent's proxy could not be reached ({source}); try again")]
    Peer {
        what: String,
        #[source]
        source: crate::peering::PeerError,
    },
}

/// Answers the user's Dial with a refusal and its reason.
pub async fn refuse(
    client: &mut FramedStream<AgentStream>,
    session_id: [u8; 16],
    error: impl ToString,
) {
    let _ = client
        .write_frame(&Frame::DialResult(DialResult {
            session_id,
            ok: false,
            error: Some(error.to_string()),
        }))
        .await;
}

/// Tells the user the session is open; `false` if the user is gone.
pub async fn accept(client: &mut FramedStream<AgentStream>, session_id: [u8; 16]) -> bool {
    client
        .write_frame(&Frame::DialResult(DialResult {
            session_id,
            ok: true,
            error: None,
        }))
        .await
        .is_ok()
}

/// Takes a pooled data connection of agent `host_id` and asks it for `target`. `what` names the
/// resource in errors (`application "echo"`, `node "web1"`). The connection then reads freely
/// (it stays on the tokio relay). The guard is the connection's place in the limits: hold it for
/// as long as the session uses the connection.
pub async fn dial_agent(
    registry: &TunnelRegistry,
    host_id: &str,
    what: &str,
    session_id: [u8; 16],
    target: &str,
    client_addr: SocketAddr,
) -> Result<(FramedStream<AgentStream>, AgentHold), AgentDialError> {
    let (mut agent, hold) =
        dial_agent_bounded(registry, host_id, what, session_id, target, client_addr).await?;
    agent.get_mut().get_mut().0.unbound();
    Ok((agent, hold))
}

/// A pooled connection's place in the connection limits, held while the session uses it; a
/// session through a peer proxy (`crate::peering`) holds none here.
pub type AgentHold = Option<ConnectionGuard>;

/// [`dial_agent`], leaving the connection reading record by record so that the session can move
/// to the fast path (`crate::relay`). An agent tunnelled to another proxy of the cluster is
/// reached through that proxy.
pub async fn dial_agent_bounded(
    registry: &TunnelRegistry,
    host_id: &str,
    what: &str,
    session_id: [u8; 16],
    target: &str,
    client_addr: SocketAddr,
) -> Result<(FramedStream<AgentStream>, AgentHold), AgentDialError> {
    let dial = Dial {
        session_id,
        target: target.to_string(),
        client_addr,
    };
    let peers = registry.peers_for(host_id);
    if let (false, Some(identity)) = (peers.is_empty(), registry.peering()) {
        return dial_through_peers(&identity, &peers, host_id, what, dial)
            .await
            .map(|agent| (agent, None));
    }
    let (agent, hold) = dial_local(registry, host_id, what, &dial).await?;
    Ok((agent, Some(hold)))
}

/// Asks the proxies that hold `host_id`'s tunnel for `dial`, one after another until one answers
/// (a proxy that died is still listed until its summary's lease ends); the agent's refusal ends
/// the tries.
async fn dial_through_peers(
    identity: &crate::peering::PeerIdentity,
    peers: &[crate::tunnels::remote::Peer],
    host_id: &str,
    what: &str,
    dial: Dial,
) -> Result<FramedStream<AgentStream>, AgentDialError> {
    let mut last = None;
    for peer in peers {
        match crate::peering::dial(identity, peer, host_id, dial.clone()).await {
            Ok(agent) => return Ok(agent),
            Err(crate::peering::PeerDialError::Refused(reason)) => {
                return Err(AgentDialError::Refused {
                    what: what.to_string(),
                    reason,
                });
            }
            Err(crate::peering::PeerDialError::Failed(e)) => {
                tracing::warn!(%host_id, proxy = %peer.proxy_id, error = %e, "a peer proxy could not take a session");
                last = Some(e);
            }
        }
    }
    Err(match last {
        Some(source) => AgentDialError::Peer {
            what: what.to_string(),
            source,
        },
        None => AgentDialError::NoConnection {
            what: what.to_string(),
        },
    })
}

/// Takes one of this proxy's pooled data connections of `host_id` and sends it `dial`.
pub async fn dial_local(
    registry: &TunnelRegistry,
    host_id: &str,
    what: &str,
    dial: &Dial,
) -> Result<(FramedStream<AgentStream>, ConnectionGuard), AgentDialError> {
    let Some((stream, hold)) = registry.take_data(host_id).await else {
        return Err(AgentDialError::NoConnection {
            what: what.to_string(),
        });
    };
    let mut agent = FramedStream::new(stream);
    let answer = match agent.write_frame(&Frame::Dial(dial.clone())).await {
        Ok(()) => agent.read_frame(Duration::from_secs(15)).await,
        Err(e) => Err(e),
    };
    match answer {
        Ok(Frame::DialResult(r)) if r.ok => Ok((agent, hold)),
        Ok(Frame::DialResult(r)) => Err(AgentDialError::Refused {
            what: what.to_string(),
            reason: r.error.unwrap_or_else(|| "the agent refused".into()),
        }),
        Ok(_) => Err(AgentDialError::NoAnswer {
            what: what.to_string(),
            source: None,
        }),
        Err(e) => Err(AgentDialError::NoAnswer {
            what: what.to_string(),
            source: Some(e),
        }),
    }
}

/// What a session kept on its worker needs from the control plane.
#[derive(Clone)]
pub struct KeptSessions {
    pub identify: crate::listener::IdentifyPeer,
    pub registry: Arc<TunnelRegistry>,
    pub auth: Arc<hop_auth::AuthServer>,
}

impl KeptSessions {
    /// The user whose certificate `req` carries; another certificate on route `alpn` is
    /// audited and `None`.
    pub fn user(&self, req: &SessionRequest, alpn: &[u8]) -> Option<UserCert> {
        let caller = (self.identify)(&req.peer_cert, req.remote);
        if let Some(cert) = caller.clone().and_then(UserCert::of) {
            return Some(cert);
        }
        let caller = caller.unwrap_or(hop_auth::caller::Caller::Anonymous {
            remote: Some(req.remote),
        });
        crate::listener::audit_wrong_certificate(&self.auth, alpn, &caller, req.remote);
        None
    }

    /// [`Self::user`] and the Dial that opens `req`'s session; `None` for another certificate
    /// or opening frame (closed without an answer, as on the control plane).
    pub fn dial(&self, req: &SessionRequest, alpn: &[u8]) -> Option<(UserCert, Dial)> {
        let cert = self.user(req, alpn)?;
        match Frame::decode(&req.opening) {
            Ok(Some((Frame::Dial(d), _))) => Some((cert, d)),
            _ => None,
        }
    }
}

/// The answer refusing a kept session: a `DialResult` with the reason, or nothing.
pub fn refused(dial: Option<([u8; 16], String)>) -> SessionAnswer {
    let mut to_client = Vec::new();
    if let Some((session_id, error)) = dial {
        let result = Frame::DialResult(DialResult {
            session_id,
            ok: false,
            error: Some(error),
        });
        if let Err(e) = result.encode(&mut to_client) {
            tracing::warn!(error = %e, "a refusal could not be encoded");
            to_client.clear();
        }
    }
    SessionAnswer::Refused { to_client }
}

/// The `DialResult` telling the user the session is open, encoded.
pub fn dial_accepted(session_id: [u8; 16]) -> Vec<u8> {
    let mut out = Vec::new();
    let ok = Frame::DialResult(DialResult {
        session_id,
        ok: true,
        error: None,
    });
    // A fixed-size frame always encodes.
    let _ = ok.encode(&mut out);
    out
}

/// The agent's leg of a kept session: its descriptor, keys and what it sent after its
/// `DialResult`; or the words for the user (logged) when it cannot take the fast path.
pub fn kept_agent_leg(
    agent: FramedStream<AgentStream>,
    what: &str,
    remote: SocketAddr,
) -> Result<(std::net::TcpStream, ConnectionKeys, Vec<u8>), String> {
    crate::relay::agent_leg(agent).map_err(|e| {
        tracing::warn!(%remote, error = %e, "a session could not start");
        format!("{what}: {e}")
    })
}

/// Sends the agent's leg to the worker that keeps the session, with `accept` (the route's
/// acceptance) for the user, and waits for the end: the application bytes moved (up, down).
pub async fn relay_on_worker(
    answer: tokio::sync::oneshot::Sender<SessionAnswer>,
    (stream, keys, from_agent): (std::net::TcpStream, ConnectionKeys, Vec<u8>),
    accept: Vec<u8>,
    (idle, stop): (Option<Duration>, SessionStop),
    auth: &hop_auth::AuthServer,
) -> Result<(u64, u64), RelayError> {
    let (done, report) = tokio::sync::oneshot::channel();
    let leg = AgentLeg {
        stream,
        keys,
        accept,
        to_client: from_agent,
        idle,
        done,
        stop,
    };
    auth.metrics().relay_fast_sessions.inc();
    if answer.send(SessionAnswer::Relay(leg)).is_err() {
        return Err(RelayError::WorkerStopped);
    }
    crate::relay::finished(report).await
}
