//! The node's side of a web terminal, opened by the SSH and join routes' own code: for a shell,
//! the node is found and the session decided exactly as for `hop ssh` ([`ssh::locate`],
//! [`ssh::decide`]: admission on the `hop_ssh` or `agentless` route for the login, the node's
//! labels, the login in the roles; refusals audited as `ssh.auth`), then the proxy is the SSH
//! client for the browser over the node agent's tunnel, logging in with the certificate Auth
//! issued to the web session (so the node sees the real user and login, decides again, records
//! and tracks the session like any other). Under per-session MFA the login is with the
//! one-minute certificate marked for that node and login ([`NodeLogin`], from `mfa`) instead. Where the proxy terminates sessions (an agentless
//! node, or the proxy recording modes) the connection goes through the same terminating server
//! as `hop ssh` (`routes::forward`), in memory. A join goes through `routes::join::open`.
//!
//! It owns no decision and never keeps the session's keys beyond the login.

use std::net::SocketAddr;
use std::sync::Arc;

use russh::ChannelMsg;
use russh::client::{Handle, Msg};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::admission::{Live, LiveWatch, UserCert, dup_stream};
use crate::dataplane::limits::ConnectionGuard;
use crate::routes::dial::dial_agent;
use crate::routes::forward::{self, Back, Upstream};
use crate::routes::{join, ssh};
use crate::tunnels::AgentStream;
use crate::web::WebRoom;
use crate::web::sessions::{Found, SessionCredentials};
use hop_net::tunnel::{FramedStream, Prefixed};
use hop_protocols::tunnel::Dial;

/// The far end of an open terminal.
pub(super) enum Far {
    /// A shell on a node: the SSH channel's halves.
    Shell {
        read: russh::ChannelReadHalf,
        write: russh::ChannelWriteHalf<Msg>,
        /// Kept for the channel's life.
        _client: Handle<Back>,
    },
    /// A joined session: the node's join stream (raw terminal bytes).
    Join {
        stream: Prefixed<AgentStream>,
        /// Whether the page's keys go into the session.
        peer: bool,
    },
}

/// The certificate a shell is decided on and logs in to the node with: the web session's, or
/// under per-session MFA the one-minute one marked for that node and login.
pub(super) struct NodeLogin {
    pub cert: Arc<UserCert>,
    pub credentials: Arc<SessionCredentials>,
}

impl NodeLogin {
    /// The web session's own certificate.
    pub fn of(found: &Found) -> Self {
        Self {
            cert: found.cert.clone(),
            credentials: found.credentials.clone(),
        }
    }
}

/// An open far end, with what must live as long as it: the live watch (ends the session's
/// tunnel leg when admission refuses it, with the `session.terminated` event) and the tunnel
/// connection's place in the limits.
pub(super) struct Opened {
    pub far: Far,
    pub route: hop_admission::Route,
    pub login: Option<String>,
    /// The certificate the session is decided on (asked again while it runs).
    pub cert: Arc<UserCert>,
    /// The session's target (a node and login for a shell), what an MFA mark is checked against.
    pub target: Option<hop_ca::SessionMfaTarget>,
    pub disconnect_expired_cert: bool,
    pub _watch: LiveWatch,
    pub _hold: Option<ConnectionGuard>,
    /// A join's `session.leave`, written when the terminal closes.
    pub _departure: Option<join::Departure>,
}

/// Opens a shell as `login` on `node` with `with` (the web session's certificate, or one
/// marked for that node and login); the words of an error are for the user.
pub(super) async fn shell(
    room: &WebRoom,
    with: &NodeLogin,
    remote: SocketAddr,
    (login, node): (&str, &str),
    (cols, rows): (u16, u16),
) -> Result<Opened, String> {
    let registry = room.registry()?;
    let auth = &room.auth;
    let cert = &*with.cert;
    let mut session_id = [0u8; 16];
    rand::fill(&mut session_id[..]);
    let dial = Dial {
        session_id,
        target: format!("{login}@{node}"),
        client_addr: remote,
    };
    let at = ssh::locate(&dial, cert, remote, &registry, auth).await?;
    let disconnect_expired_cert = ssh::decide(&at, cert, remote, auth).await?;
    let what = format!("node {:?}", at.node.name);
    let (upstream, hold, sockets) = if at.node.openssh {
        (Upstream::Tcp(at.node.addr.clone()), None, Vec::new())
    } else {
        let (agent, hold) = dial_agent(
            &registry,
            &at.node.host_id,
            &what,
            session_id,
            hop_api::dial::SSH_TARGET,
            remote,
        )
        .await
        .map_err(|e| e.to_string())?;
        let sockets = dup_stream(agent.get_ref()).into_iter().collect();
        let (s, pending) = agent.into_inner();
        (
            Upstream::Tunnel(Prefixed::new(s, pending)),
            Some(hold),
            sockets,
        )
    };
    let watch = LiveWatch::start(
        auth.clone(),
        Live {
            sockets,
            ..ssh::live(
                &at,
                cert,
                &dial,
                remote,
                disconnect_expired_cert,
                Vec::new(),
            )
        },
    );
    let name = at.node.name.clone();
    let client = if at.terminated {
        // The same terminating (and recording) server as `hop ssh`, over an in-memory pipe.
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let fwd = forward::Forward {
            auth: auth.clone(),
            identity: cert.identity.clone(),
            identity_expires: cert.expires,
            login: at.login.clone(),
            node: at.node.clone(),
            remote,
            recordings: room.recordings(),
            require_recording: auth.session_recording() == "proxy-sync",
        };
        tokio::spawn(forward::serve(fwd, upstream, theirs));
        login_over(room, with, &at.login, &name, ours).await?
    } else {
        let Upstream::Tunnel(stream) = upstream else {
            return Err("internal error: a node agent without a tunnel".into());
        };
        login_over(room, with, &at.login, &name, stream).await?
    };
    let channel = open_pty(&client, cols, rows).await?;
    let (read, write) = channel.split();
    Ok(Opened {
        far: Far::Shell {
            read,
            write,
            _client: client,
        },
        route: at.route,
        target: Some(hop_ca::SessionMfaTarget::Node {
            node: at.node.name.clone(),
            login: at.login.clone(),
        }),
        login: Some(at.login),
        cert: with.cert.clone(),
        disconnect_expired_cert,
        _watch: watch,
        _hold: hold.flatten(),
        _departure: None,
    })
}

/// Logs in to the node's SSH server over `stream` as `login` with `with`'s certificate,
/// verifying the node's host certificate.
async fn login_over<S>(
    room: &WebRoom,
    with: &NodeLogin,
    login: &str,
    node: &str,
    stream: S,
) -> Result<Handle<Back>, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = Arc::new(forward::client_config());
    let back = Back::new(room.auth.clone(), node.to_string());
    let mut client = russh::client::connect_stream(config, stream, back)
        .await
        .map_err(|e| format!("SSH to node {node:?}: {e}"))?;
    let creds = &with.credentials;
    let key = russh::keys::PrivateKey::from_openssh(creds.ssh.private_openssh.trim())
        .map_err(|e| format!("the session's key: {e}"))?;
    let cert = russh::keys::Certificate::from_openssh(creds.ssh_certificate.trim())
        .map_err(|e| format!("the session's certificate: {e}"))?;
    let ok = client
        .authenticate_openssh_cert(login.to_string(), Arc::new(key), cert)
        .await
        .map_err(|e| format!("SSH login to node {node:?}: {e}"))?;
    if !ok.success() {
        return Err(format!("node {node:?} refused the login {login:?}"));
    }
    Ok(client)
}

/// The environment the web terminal sends (as OpenSSH's `SendEnv` would): xterm.js speaks
/// UTF-8, so the shell must too (in the C locale, readline takes a multi-byte character's bytes
/// for Meta keys); it draws 24-bit colour.
const TERMINAL_ENV: &[(&str, &str)] = &[("LANG", "C.UTF-8"), ("COLORTERM", "truecolor")];

/// A session channel with a PTY (`xterm-256color`, `cols`×`rows`), the terminal's
/// environment, and a shell.
async fn open_pty(
    client: &Handle<Back>,
    cols: u16,
    rows: u16,
) -> Result<russh::Channel<Msg>, String> {
    let refused = |what: &str, e: &dyn std::fmt::Display| format!("{what}: {e}");
    let mut channel = client
        .channel_open_session()
        .await
        .map_err(|e| refused("opening a session on the node", &e))?;
    for (name, value) in TERMINAL_ENV {
        channel
            .set_env(false, *name, *value)
            .await
            .map_err(|e| refused("sending the terminal's environment", &e))?;
    }
    channel
        .request_pty(
            true,
            "xterm-256color",
            u32::from(cols),
            u32::from(rows),
            0,
            0,
            &[],
        )
        .await
        .map_err(|e| refused("asking the node for a terminal", &e))?;
    expect_success(&mut channel, "a terminal").await?;
    channel
        .request_shell(true)
        .await
        .map_err(|e| refused("asking the node for a shell", &e))?;
    expect_success(&mut channel, "a shell").await?;
    Ok(channel)
}

/// Waits for the node's answer to a request that wanted one.
async fn expect_success(channel: &mut russh::Channel<Msg>, what: &str) -> Result<(), String> {
    loop {
        match channel.wait().await {
            Some(ChannelMsg::Success) => return Ok(()),
            Some(ChannelMsg::Failure) => return Err(format!("the node refused {what}")),
            Some(ChannelMsg::WindowAdjusted { .. }) => {}
            Some(other) => {
                tracing::debug!(?other, "web terminal: an unexpected message before {what}");
            }
            None => return Err(format!("the node closed the session before {what}")),
        }
    }
}

/// Joins live session `session` as `mode` for the web session `found` (`hop join`'s path).
pub(super) async fn join(
    room: &WebRoom,
    found: &Found,
    remote: SocketAddr,
    session: &str,
    mode: &str,
) -> Result<Opened, String> {
    let registry = room.registry()?;
    let target = serde_json::json!({ "session_id": session, "mode": mode }).to_string();
    let mut sid = [0u8; 16];
    rand::fill(&mut sid[..]);
    let joined = join::open(&room.auth, &registry, &found.cert, remote, &target, sid).await?;
    let join::Joined {
        agent,
        hold,
        live,
        departure,
        ..
    } = joined;
    let agent: FramedStream<AgentStream> = agent;
    let sockets = dup_stream(agent.get_ref()).into_iter().collect();
    let disconnect_expired_cert = live.disconnect_expired_cert;
    let route = live.route;
    let watch = LiveWatch::start(room.auth.clone(), Live { sockets, ..live });
    let (s, pending) = agent.into_inner();
    Ok(Opened {
        far: Far::Join {
            stream: Prefixed::new(s, pending),
            peer: mode == "peer",
        },
        route,
        login: None,
        cert: found.cert.clone(),
        target: None,
        disconnect_expired_cert,
        _watch: watch,
        _hold: hold,
        _departure: Some(departure),
    })
}
