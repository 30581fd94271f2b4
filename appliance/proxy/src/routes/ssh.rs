//! SSH connections through the proxy (ALPN `hop-ssh`): `hop proxy ssh`, and so OpenSSH's `ssh`,
//! `scp` and `sftp` through `hop config`'s `ProxyCommand`.
//!
//! This module owns one connection's routing: the user's Dial naming `login@node[:port]`, finding
//! the node among connected agents (by name, host id, or either with `.CLUSTER`; an ambiguous
//! name is an error listing the matches), a first RBAC check (locked user, certificate logins,
//! the node's labels) so that a refusal reaches the client as a readable message, then a pooled
//! data connection to the node's agent and the byte relay. The SSH session itself is end to end
//! between the client and the node, which authenticates the user certificate and decides again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hop_admission::{Refusal, Route};
use hop_rbac::AccessDenied;

use hop_protocols::tunnel::{Dial, Frame};

use super::dial::{
    AgentHold, KeptSessions, accept, dial_accepted, dial_agent, dial_agent_bounded, kept_agent_leg,
    refuse, refused, relay_on_worker,
};
use crate::admission::{Live, LiveWatch, UserCert, admit_ssh, both_legs, dup_stream};
use crate::relay::on_worker::{SessionAnswer, SessionRequest};
use crate::tunnels::{AgentStream, NodeRoute, TunnelRegistry};
use hop_auth::AuthServer;
use hop_auth::audit::EventKind;
use hop_auth::inventory::all_nodes;
use hop_net::tunnel::FramedStream;

/// A Dial target that is not `login@host[:port]` (the client's fault).
#[derive(Debug, thiserror::Error)]
#[error("SSH target {target:?} must be login@host")]
pub struct BadSshTarget {
    pub target: String,
}

/// Why a host name names no single connected node (the user's to fix).
#[derive(Debug, thiserror::Error)]
pub enum NodeLookupError {
    #[error(
        "node {host:?} is not connected to this cluster (`hop ls` lists the nodes you can reach)"
    )]
    NotConnected { host: String },
    /// Several nodes answer to the name; `matches` lists each as `name host_id`.
    #[error("{host:?} is ambiguous: {} nodes have that name ({}); use the host id", .matches.len(), .matches.join(", "))]
    Ambiguous { host: String, matches: Vec<String> },
}

/// Why the proxy refuses a user's SSH session before any byte reaches the node.
#[derive(Debug, thiserror::Error)]
pub enum SshRefusal {
    /// Admission said no (locked user, expired certificate, …).
    #[error(transparent)]
    Admission(#[from] Refusal),
    /// The user's roles do not allow this login on this node.
    #[error("access to node {node:?} denied: {source}")]
    NodeDenied {
        node: String,
        #[source]
        source: AccessDenied,
    },
    /// The certificate does not carry the login (it may predate a role change).
    #[error(
        "login {login:?} is not allowed for user {user:?} (allowed: {allowed}); if it was added since, run `hop login` again"
    )]
    LoginNotInCertificate {
        login: String,
        user: String,
        allowed: String,
    },
    /// The user's sessions must be moderated, which only a node agent does.
    #[error(
        "your roles require moderated sessions (require_session_join), which agentless node {node:?} cannot hold: connect to a node that runs a Hop agent"
    )]
    NotModeratable { node: String },
}

/// Why the proxy's SSH server refuses a user certificate a client presented (the client's).
#[derive(Debug, thiserror::Error)]
pub enum SshCertRefusal {
    #[error("unreadable certificate: {0}")]
    Unreadable(#[source] russh::keys::ssh_key::Error),
    /// Not signed by this cluster's user CA, expired, or not a user certificate.
    #[error("certificate refused: {0}")]
    NotTrusted(#[source] hop_ca::CaError),
}

/// A user certificate presented to the proxy's SSH server, checked against every key the
/// cluster's user CA trusts now (two during a rotation) at `now`: its OpenSSH text, the identity it carries and when it expires.
pub fn verify_user_cert(
    auth: &AuthServer,
    cert: &russh::keys::Certificate,
    now: std::time::SystemTime,
) -> Result<(String, hop_ca::Identity, std::time::SystemTime), SshCertRefusal> {
    let text = cert.to_openssh().map_err(SshCertRefusal::Unreadable)?;
    let (identity, expires) =
        hop_ca::verify_user_ssh(&text, &auth.public_authorities(hop_ca::CaKind::User), now)
            .map_err(SshCertRefusal::NotTrusted)?;
    Ok((text, identity, expires))
}

/// Splits `login@host[:port]`.
pub fn parse_target(t: &str) -> Result<(String, String), BadSshTarget> {
    let bad = || BadSshTarget {
        target: t.to_string(),
    };
    let (login, rest) = t.split_once('@').ok_or_else(bad)?;
    let host = match rest.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => h,
        _ => rest,
    };
    if login.is_empty() || host.is_empty() {
        return Err(bad());
    }
    Ok((login.to_string(), host.to_string()))
}

/// The one node `host` names, or a readable error.
pub fn resolve(
    nodes: &[NodeRoute],
    host: &str,
    cluster: &str,
) -> Result<NodeRoute, NodeLookupError> {
    let matches: Vec<&NodeRoute> = nodes
        .iter()
        .filter(|n| n.answers_to(host, cluster))
        .collect();
    match matches.as_slice() {
        [] => Err(NodeLookupError::NotConnected {
            host: host.to_string(),
        }),
        [one] => Ok((*one).clone()),
        many => Err(NodeLookupError::Ambiguous {
            host: host.to_string(),
            matches: many
                .iter()
                .map(|n| format!("{} {}", n.name, n.host_id))
                .collect(),
        }),
    }
}

/// Serves one `hop-ssh` connection from an authenticated user whose TLS the control plane
/// holds (the worker's hand-off: with the Dial already read in `client`'s pending bytes, when
/// the worker found the session needs the proxy's SSH server).
pub async fn serve(
    mut client: FramedStream<AgentStream>,
    cert: UserCert,
    remote: SocketAddr,
    deps: Deps,
    fast_path: Option<(&crate::relay::RelayHandle, usize)>,
) {
    let dial = match client.read_frame(Duration::from_secs(10)).await {
        Ok(Frame::Dial(d)) => d,
        Ok(_) | Err(_) => return,
    };
    serve_dial(client, dial, cert, remote, deps, fast_path).await;
}

/// What an SSH session needs from the control plane.
pub struct Deps {
    pub registry: Arc<TunnelRegistry>,
    pub auth: Arc<AuthServer>,
    pub recordings: Option<Arc<dyn hop_storage::recording::RecordingBackend>>,
}

/// Where a Dial's SSH session goes.
pub(crate) struct Located {
    pub(crate) login: String,
    pub(crate) node: NodeRoute,
    pub(crate) route: Route,
    /// The proxy terminates the session and records it: always for an agentless node, and for
    /// a node agent in the proxy recording modes (russh, on tokio).
    pub(crate) terminated: bool,
}

/// Finds the node a Dial names; the words of an error are for the user (audited).
pub(crate) async fn locate(
    dial: &Dial,
    cert: &UserCert,
    remote: SocketAddr,
    registry: &Arc<TunnelRegistry>,
    auth: &Arc<AuthServer>,
) -> Result<Located, String> {
    let (login, host) = parse_target(&dial.target).map_err(|e| e.to_string())?;
    let nodes = {
        let (r, a, c, l, h) = (
            registry.clone(),
            auth.clone(),
            cert.clone(),
            login.clone(),
            host.clone(),
        );
        tokio::task::spawn_blocking(move || nodes_for(r.as_ref(), &a, &c, &l, &h, remote)).await
    };
    let nodes = match nodes {
        Ok(Ok(nodes)) => nodes,
        Ok(Err(refusal)) => return Err(refusal.to_string()),
        Err(e) => return Err(format!("internal error: {e}")),
    };
    let node = match resolve(&nodes, &host, auth.cluster_name()) {
        Ok(n) => n,
        Err(e) => {
            audit_refused(auth, cert, remote, &login, &host, &e);
            return Err(e.to_string());
        }
    };
    let route = if node.openssh {
        Route::Agentless
    } else {
        Route::HopSsh
    };
    let terminated = node.openssh || matches!(auth.session_recording(), "proxy" | "proxy-sync");
    Ok(Located {
        login,
        node,
        route,
        terminated,
    })
}

/// The nodes `cert`'s user may see (a role's node labels match, whatever the login), once the
/// identity is admitted: a locked, deleted or expired user learns nothing of the nodes
/// (the refusal is audited), and a node no role shows answers as one not connected, never by
/// name in an ambiguity. The refusal is audited on the route of the node `host` names
/// (`agentless` for an OpenSSH node, else `hop-ssh`; nothing of it reaches the user), as
/// [`check`] decides again with that route.
fn nodes_for(
    registry: &TunnelRegistry,
    auth: &AuthServer,
    cert: &UserCert,
    login: &str,
    host: &str,
    remote: SocketAddr,
) -> Result<Vec<NodeRoute>, hop_admission::Refusal> {
    let mut nodes = all_nodes(registry, auth);
    // The node's own name, whatever form `host` took (a per-session MFA mark names it).
    let (route, target) = match resolve(&nodes, host, auth.cluster_name()) {
        Ok(n) if n.openssh => (Route::Agentless, n.name.clone()),
        Ok(n) => (Route::HopSsh, n.name.clone()),
        Err(_) => (Route::HopSsh, host.to_string()),
    };
    let admitted = admit_ssh(auth, cert, (login, &target), route, remote)?;
    let checker = admitted.checker();
    nodes.retain(|n| checker.may_see_node(&n.labels));
    Ok(nodes)
}

/// Writes the `ssh.auth` failure of a refused session.
fn audit_refused(
    auth: &AuthServer,
    cert: &UserCert,
    remote: SocketAddr,
    login: &str,
    node: &str,
    e: &dyn std::fmt::Display,
) {
    auth.emit(
        auth.event(EventKind::SshAuth, &cert.identity.username)
            .remote(Some(remote))
            .field("login", login.to_string())
            .field("server", node.to_string())
            .failed(EventKind::SshAuth, e.to_string()),
    );
}

/// The proxy's check of a located session ([`check`], off the async threads); the words of a
/// refusal are for the user (audited). Returns whether the session ends at the certificate's
/// expiry.
pub(crate) async fn decide(
    at: &Located,
    cert: &UserCert,
    remote: SocketAddr,
    auth: &Arc<AuthServer>,
) -> Result<bool, String> {
    let decision = {
        let (a, c, node, login) = (
            auth.clone(),
            cert.clone(),
            at.node.clone(),
            at.login.clone(),
        );
        let route = at.route;
        tokio::task::spawn_blocking(move || check(&a, &c, &node, &login, route, remote)).await
    };
    match decision {
        Ok(Ok(d)) => Ok(d),
        Ok(Err(e)) => {
            audit_refused(auth, cert, remote, &at.login, &at.node.name, &e);
            Err(e.to_string())
        }
        Err(e) => Err(format!("internal error: {e}")),
    }
}

/// Answers a worker that keeps a `hop-ssh` session: a session through a node agent is decided
/// here and relayed by the worker (SSH stays end to end); one the proxy terminates is handed
/// over ([`SessionAnswer::HandOff`]) and served by [`serve_dial`].
pub async fn serve_kept(req: SessionRequest, kept: KeptSessions, hold: impl Send + 'static) {
    let Some((cert, dial)) = kept.dial(&req, hop_net::tunnel::ALPN_SSH) else {
        return req.answer.send(refused(None)).unwrap_or(());
    };
    let SessionRequest {
        opening,
        peer_cert,
        remote,
        answer,
        ..
    } = req;
    // Read into `dial` and `cert`: not held for the session's life.
    drop((opening, peer_cert));
    let session_id = dial.session_id;
    let (registry, auth) = (&kept.registry, &kept.auth);
    let at = match locate(&dial, &cert, remote, registry, auth).await {
        Ok(at) if at.terminated => {
            let _ = answer.send(SessionAnswer::HandOff);
            return;
        }
        Ok(at) => at,
        Err(words) => {
            return answer
                .send(refused(Some((session_id, words))))
                .unwrap_or(());
        }
    };
    let opened = match decide(&at, &cert, remote, auth).await {
        Ok(d) => dial_node(&at, &dial, remote, registry)
            .await
            .map(|a| (d, a)),
        Err(words) => Err(words),
    };
    let (disconnect_expired_cert, (agent, agent_hold)) = match opened {
        Ok(o) => o,
        Err(words) => {
            return answer
                .send(refused(Some((session_id, words))))
                .unwrap_or(());
        }
    };
    let what = format!("node {:?}", at.node.name);
    let leg = match kept_agent_leg(agent, &what, remote) {
        Ok(leg) => leg,
        Err(words) => {
            return answer
                .send(refused(Some((session_id, words))))
                .unwrap_or(());
        }
    };
    let stop = crate::relay::SessionStop::default();
    let watched = Live {
        stop: Some(stop.clone()),
        ..live(
            &at,
            &cert,
            &dial,
            remote,
            disconnect_expired_cert,
            Vec::new(),
        )
    };
    let _watch = LiveWatch::start(auth.clone(), watched);
    // The node enforces the role's idle timeout inside SSH.
    let accepted = dial_accepted(session_id);
    if let Err(e) = relay_on_worker(answer, leg, accepted, (None, stop), auth).await {
        tracing::debug!(node = %at.node.name, error = %e, "SSH connection ended with an error");
    }
    drop((hold, agent_hold));
}

/// Takes a pooled data connection of the node's agent, past its `DialResult`.
async fn dial_node(
    at: &Located,
    dial: &Dial,
    remote: SocketAddr,
    registry: &TunnelRegistry,
) -> Result<(FramedStream<AgentStream>, AgentHold), String> {
    let what = format!("node {:?}", at.node.name);
    dial_agent_bounded(
        registry,
        &at.node.host_id,
        &what,
        dial.session_id,
        hop_api::dial::SSH_TARGET,
        remote,
    )
    .await
    .map_err(|e| e.to_string())
}

/// What the live watch needs of an SSH session.
pub(crate) fn live(
    at: &Located,
    cert: &UserCert,
    dial: &Dial,
    remote: SocketAddr,
    disconnect_expired_cert: bool,
    sockets: Vec<socket2::Socket>,
) -> Live {
    Live {
        cert: cert.clone(),
        login: Some(at.login.clone()),
        target: Some(hop_ca::SessionMfaTarget::Node {
            node: at.node.name.clone(),
            login: at.login.clone(),
        }),
        route: at.route,
        remote,
        session_id: hex::encode(dial.session_id),
        disconnect_expired_cert,
        sockets,
        stop: None,
        agent: (!at.node.openssh).then(|| at.node.host_id.clone()),
    }
}

/// Serves an SSH session on the control plane once its Dial is read: the sessions the proxy
/// terminates, and any whose TLS the control plane holds.
async fn serve_dial(
    mut client: FramedStream<AgentStream>,
    dial: Dial,
    cert: UserCert,
    remote: SocketAddr,
    deps: Deps,
    fast_path: Option<(&crate::relay::RelayHandle, usize)>,
) {
    let Deps {
        registry,
        auth,
        recordings,
    } = deps;
    let session_id = dial.session_id;
    let at = match locate(&dial, &cert, remote, &registry, &auth).await {
        Ok(at) => at,
        Err(e) => return refuse(&mut client, session_id, e).await,
    };
    let disconnect_expired_cert = match decide(&at, &cert, remote, &auth).await {
        Ok(d) => d,
        Err(e) => return refuse(&mut client, session_id, e).await,
    };
    if at.terminated {
        let require_recording = auth.session_recording() == "proxy-sync";
        let terminate = Terminate {
            at,
            cert,
            dial,
            remote,
            disconnect_expired_cert,
            require_recording,
        };
        return serve_terminated(client, terminate, registry, auth, recordings).await;
    }
    let (agent, _agent_hold) = match dial_node(&at, &dial, remote, &registry).await {
        Ok(a) => a,
        Err(e) => return refuse(&mut client, session_id, e).await,
    };
    if !accept(&mut client, session_id).await {
        return;
    }
    // SSH stays end to end: the proxy only moves records. The node enforces the role's idle
    // timeout inside SSH; here only a dead transport ends it, or admission turning to no.
    let sockets = both_legs(client.get_ref(), agent.get_ref());
    let _watch = LiveWatch::start(
        auth.clone(),
        live(&at, &cert, &dial, remote, disconnect_expired_cert, sockets),
    );
    let moved =
        crate::relay::run_session(fast_path, client, agent, None, remote, auth.metrics()).await;
    if let Err(e) = moved {
        tracing::debug!(node = %at.node.name, error = %e, "SSH connection ended with an error");
    }
}

/// A session the proxy terminates, admitted.
struct Terminate {
    at: Located,
    cert: UserCert,
    dial: Dial,
    remote: SocketAddr,
    disconnect_expired_cert: bool,
    require_recording: bool,
}

/// The proxy speaks SSH with the client itself and records: an agentless node over TCP, a node
/// agent over a pooled tunnel connection. A tunnel connection keeps its place in the limits for
/// as long as the session uses it.
async fn serve_terminated(
    mut client: FramedStream<AgentStream>,
    t: Terminate,
    registry: Arc<TunnelRegistry>,
    auth: Arc<AuthServer>,
    recordings: Option<Arc<dyn hop_storage::recording::RecordingBackend>>,
) {
    let session_id = t.dial.session_id;
    let mut upstream_hold = None;
    let upstream = if t.at.node.openssh {
        super::forward::Upstream::Tcp(t.at.node.addr.clone())
    } else {
        let what = format!("node {:?}", t.at.node.name);
        match dial_agent(
            &registry,
            &t.at.node.host_id,
            &what,
            session_id,
            hop_api::dial::SSH_TARGET,
            t.remote,
        )
        .await
        {
            Ok((a, hold)) => {
                upstream_hold = Some(hold);
                let (s, pending) = a.into_inner();
                super::forward::Upstream::Tunnel(hop_net::tunnel::Prefixed::new(s, pending))
            }
            Err(e) => return refuse(&mut client, session_id, e).await,
        }
    };
    if !accept(&mut client, session_id).await {
        return;
    }
    // The proxy speaks SSH with the client itself: the connection stays on tokio.
    client.get_mut().get_mut().0.unbound();
    let sockets = dup_stream(client.get_ref()).into_iter().collect();
    let _watch = LiveWatch::start(
        auth.clone(),
        live(
            &t.at,
            &t.cert,
            &t.dial,
            t.remote,
            t.disconnect_expired_cert,
            sockets,
        ),
    );
    let (c, c_pending) = client.into_inner();
    let fwd = super::forward::Forward {
        auth,
        identity: t.cert.identity,
        identity_expires: t.cert.expires,
        login: t.at.login,
        node: t.at.node,
        remote: t.remote,
        recordings,
        require_recording: t.require_recording,
    };
    super::forward::serve(fwd, upstream, hop_net::tunnel::Prefixed::new(c, c_pending)).await;
    drop(upstream_hold);
}

/// The proxy's own check, before any byte reaches the node: admission, then the node's labels
/// and the login. Returns whether the session ends at the certificate's expiry.
fn check(
    auth: &AuthServer,
    cert: &UserCert,
    node: &NodeRoute,
    login: &str,
    route: Route,
    remote: SocketAddr,
) -> Result<bool, SshRefusal> {
    let identity = &cert.identity;
    let admitted = admit_ssh(auth, cert, (login, &node.name), route, remote)?;
    let checker = admitted.checker();
    checker
        .check_node_login(&node.labels, login)
        .map_err(|source| SshRefusal::NodeDenied {
            node: node.name.clone(),
            source,
        })?;
    if node.openssh && !checker.session_join_requirements("ssh").is_empty() {
        return Err(SshRefusal::NotModeratable {
            node: node.name.clone(),
        });
    }
    if !identity.logins.iter().any(|l| l == login) {
        return Err(SshRefusal::LoginNotInCertificate {
            login: login.to_string(),
            user: identity.username.clone(),
            allowed: identity.logins.join(", "),
        });
    }
    Ok(checker.disconnect_expired_cert())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, id: &str) -> NodeRoute {
        NodeRoute {
            name: name.into(),
            addr: String::new(),
            labels: Default::default(),
            host_id: id.into(),
            openssh: false,
        }
    }

    #[test]
    fn targets() {
        assert_eq!(
            parse_target("alice@web1:22").unwrap(),
            ("alice".into(), "web1".into())
        );
        assert_eq!(
            parse_target("alice@web1").unwrap(),
            ("alice".into(), "web1".into())
        );
        assert_eq!(
            parse_target("root@web1.example.com:3022").unwrap().1,
            "web1.example.com"
        );
        assert!(parse_target("web1").is_err());
        assert!(parse_target("@web1").is_err());
    }

    #[test]
    fn resolution() {
        let nodes = vec![node("web1", "id-1"), node("db", "id-2"), node("db", "id-3")];
        assert_eq!(resolve(&nodes, "web1", "c.test").unwrap().host_id, "id-1");
        assert_eq!(
            resolve(&nodes, "web1.c.test", "c.test").unwrap().host_id,
            "id-1"
        );
        assert_eq!(
            resolve(&nodes, "id-2.c.test", "c.test").unwrap().host_id,
            "id-2"
        );
        let e = resolve(&nodes, "db", "c.test").unwrap_err().to_string();
        assert!(
            e.contains("ambiguous") && e.contains("id-2") && e.contains("id-3"),
            "{e}"
        );
        assert!(
            resolve(&nodes, "nope", "c.test")
                .unwrap_err()
                .to_string()
                .contains("hop ls")
        );
    }
}
