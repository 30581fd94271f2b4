//! One SSH connection to a node: authentication by user certificate, then the channels it opens.
//!
//! This module owns the russh [`Handler`]: certificate authentication decided by
//! [`access::authorize`](super::access::authorize) (with an audit event for every refusal),
//! session channels (handed to [`session`](super::session)), local port forwarding
//! (`direct-tcpip`), remote port forwarding (`tcpip-forward`), and the agent-forwarding socket.
//! It also disconnects the client when its certificate expires if a role asks for it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use russh::keys::Certificate;
use russh::server::{
    Auth, ChannelOpenHandle, Handle, Handler, Msg, PublicKeyOffer, Session, VerifiedPublicKey,
};
use russh::{Channel, ChannelOpenFailure};
use tokio::net::{TcpListener, TcpStream};

use super::access::{self, Grant};
use super::audit::EventKind;
use super::session::{self, SessionContext};
use super::{Arrival, NodeShared};
use hop_net::ssh_deadline::AuthDone;
use hop_platform::account::listen_as;
use hop_platform::clock;

/// Per-connection state.
pub struct ConnHandler {
    shared: Arc<NodeShared>,
    client_addr: String,
    arrival: Arrival,
    grant: Option<Grant>,
    handle: Option<Handle>,
    remote_forwards: HashMap<(String, u32), tokio::task::JoinHandle<()>>,
    agent_socket: Option<AgentSocket>,
    /// Decides the connection again while it lives (see [`spawn_live_check`]).
    live_check: Option<tokio::task::JoinHandle<()>>,
    /// Disarms the connection's authentication deadline (`ssh_service.auth_timeout`).
    auth_done: AuthDone,
}

impl ConnHandler {
    pub fn new(
        shared: Arc<NodeShared>,
        client_addr: String,
        arrival: Arrival,
        auth_done: AuthDone,
    ) -> Self {
        Self {
            shared,
            client_addr,
            arrival,
            auth_done,
            grant: None,
            handle: None,
            remote_forwards: HashMap::new(),
            agent_socket: None,
            live_check: None,
        }
    }

    fn refuse(&self, user: &str, login: &str, why: &str, code: &str) {
        let ev = self
            .shared
            .audit
            .event(EventKind::SshAuth, user)
            .remote_str(&self.client_addr)
            .field("login", login.to_string())
            .field("route", "node")
            .field("reason", code.to_string())
            .failed(EventKind::SshAuth, why.to_string());
        self.shared.audit.emit(ev);
        tracing::info!(user, login, client = %self.client_addr, reason = why, "SSH login refused");
    }

    fn port_event(&self, what: &str, addr: String, error: Option<String>) {
        let Some(g) = &self.grant else { return };
        let mut ev = self
            .shared
            .audit
            .event(EventKind::PortForward, &g.identity.username)
            .remote_str(&self.client_addr)
            .field("login", g.login.clone())
            .field("forward", what.to_string())
            .field("addr", addr);
        if let Some(e) = error {
            ev = ev.failed(EventKind::PortForward, e);
        }
        self.shared.audit.emit(ev);
    }
}

impl Drop for ConnHandler {
    fn drop(&mut self) {
        for (_, t) in self.remote_forwards.drain() {
            t.abort();
        }
        if let Some(a) = &self.agent_socket {
            a.task.abort();
        }
        if let Some(t) = &self.live_check {
            t.abort();
        }
    }
}

/// How often a live connection is decided again against the node's current access data (which
/// Auth pushes as soon as it changes): a lock, a deletion or a role taken away ends it within
/// about this long.
const LIVE_RECHECK: Duration = Duration::from_secs(1);

/// Decides `grant`'s login again every [`LIVE_RECHECK`]; when admission turns it down, the
/// connection is closed with the reason and the refusal is audited. Expiry is left to
/// `disconnect_expired_cert`.
fn spawn_live_check(
    shared: Arc<NodeShared>,
    grant: Grant,
    handle: Handle,
    client_addr: String,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last: Option<(Arc<access::AccessSnapshot>, std::time::Instant)> = None;
        loop {
            tokio::time::sleep(LIVE_RECHECK).await;
            let snap = shared.access.get();
            // Decided again when the data changed, and at least every half minute (data that
            // stops arriving still ages, which strict locking mode acts on).
            if last.as_ref().is_some_and(|(s, at)| {
                Arc::ptr_eq(s, &snap) && clock::since(*at) < Duration::from_secs(30)
            }) {
                continue;
            }
            last = Some((snap.clone(), clock::now()));
            let labels = shared.labels();
            let before_expiry = grant.cert_expires - Duration::from_secs(1);
            let now = clock::wall().min(before_expiry);
            let decided = access::authorize(
                &snap,
                &grant.cert_openssh,
                (&shared.nodename, &grant.login),
                &labels,
                now,
            );
            // A connection holds the moderation its login was granted: when the roles now ask
            // for other moderation, it ends (its channels would follow the old rules).
            let decided = decided.and_then(|fresh| {
                if fresh.moderation == grant.moderation {
                    Ok(fresh)
                } else {
                    Err(access::Refusal(
                        "the moderation your roles require changed (require_session_join); connect again".into(),
                        "moderation_changed",
                    ))
                }
            });
            tracing::debug!(user = %grant.identity.username, ok = decided.is_ok(), "live connection decided again");
            let Err(refusal) = decided else {
                continue;
            };
            let ev = shared
                .audit
                .event(EventKind::SessionEnd, &grant.identity.username)
                .remote_str(&client_addr)
                .field("login", grant.login.clone())
                .field("terminated", true)
                .field("route", "node")
                .field("reason", refusal.1)
                .failed(EventKind::SessionEnd, refusal.0.clone());
            shared.audit.emit(ev);
            tracing::info!(user = %grant.identity.username, reason = %refusal.0, "ending a live SSH connection");
            let _ = handle
                .disconnect(
                    russh::Disconnect::ByApplication,
                    format!("hop: {}", refusal.0),
                    String::new(),
                )
                .await;
            return;
        }
    })
}

impl Handler for ConnHandler {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        _offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        // Certificates are offered here too; the decision comes once the key is proven.
        Ok(Auth::Accept)
    }

    async fn auth_publickey(
        &mut self,
        login: &str,
        _key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        self.refuse("", login, "a plain public key was offered; Hop nodes accept only user certificates from the cluster's user CA (run `hop login`)", "bad_certificate");
        Ok(Auth::reject())
    }

    async fn auth_openssh_certificate(
        &mut self,
        login: &str,
        certificate: &Certificate,
    ) -> Result<Auth, Self::Error> {
        let text = match certificate.to_openssh() {
            Ok(t) => t,
            Err(e) => {
                self.refuse(
                    "",
                    login,
                    &format!("unreadable certificate: {e}"),
                    "bad_certificate",
                );
                return Ok(Auth::reject());
            }
        };
        let snap = self.shared.access.get();
        let labels = self.shared.labels();
        match access::authorize(
            &snap,
            &text,
            (&self.shared.nodename, login),
            &labels,
            clock::wall(),
        ) {
            Ok(g) => {
                tracing::debug!(user = %g.identity.username, login, "SSH login accepted");
                self.grant = Some(g);
                Ok(Auth::Accept)
            }
            Err(refusal) => {
                self.refuse(certificate.key_id(), login, &refusal.0, refusal.1);
                Ok(Auth::reject())
            }
        }
    }

    async fn auth_succeeded(&mut self, session: &mut Session) -> Result<(), Self::Error> {
        self.auth_done.authenticated();
        let handle = session.handle();
        self.handle = Some(handle.clone());
        if let Some(g) = &self.grant {
            self.live_check = Some(spawn_live_check(
                self.shared.clone(),
                g.clone(),
                handle.clone(),
                self.client_addr.clone(),
            ));
        }
        if let Some(g) = &self.grant
            && g.disconnect_expired_cert
        {
            let left = g
                .cert_expires
                .duration_since(clock::wall())
                .unwrap_or_default();
            tokio::spawn(async move {
                tokio::time::sleep(left).await;
                let _ = handle
                    .disconnect(
                        russh::Disconnect::ByApplication,
                        "your certificate has expired; run `hop login`".into(),
                        String::new(),
                    )
                    .await;
            });
        }
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let (Some(grant), Some(handle)) = (self.grant.clone(), self.handle.clone()) else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        if grant.permit_agent_forwarding && self.agent_socket.is_none() {
            self.agent_socket = start_agent_socket(&handle, &grant);
        }
        let ctx = SessionContext {
            shared: self.shared.clone(),
            grant,
            client_addr: self.client_addr.clone(),
            arrival: self.arrival,
            handle,
            agent_socket: self.agent_socket.as_ref().map(|a| a.path.clone()),
        };
        reply.accept().await;
        tokio::spawn(session::run(channel, ctx));
        Ok(())
    }

    // Requests on a session channel are answered here, in order (the channel's task acts on
    // them): answering later from the task could answer a newer request of the same channel.

    async fn pty_request(
        &mut self,
        channel: russh::ChannelId,
        _term: &str,
        _cols: u32,
        _rows: u32,
        _pw: u32,
        _ph: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.grant.as_ref().is_some_and(|g| g.permit_pty) {
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }

    async fn env_request(
        &mut self,
        channel: russh::ChannelId,
        name: &str,
        _value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if super::env::client_may_set(name).is_ok() {
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }

    async fn shell_request(
        &mut self,
        channel: russh::ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn exec_request(
        &mut self,
        channel: russh::ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn subsystem_request(
        &mut self,
        channel: russh::ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if name == "sftp" {
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }

    async fn x11_request(
        &mut self,
        channel: russh::ChannelId,
        _single: bool,
        _proto: &str,
        _cookie: &str,
        _screen: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)
    }

    async fn agent_request(
        &mut self,
        _channel: russh::ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        Ok(self
            .grant
            .as_ref()
            .is_some_and(|g| g.permit_agent_forwarding)
            && self.agent_socket.is_some())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host: &str,
        port: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let addr = format!("{host}:{port}");
        let Some(g) = &self.grant else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        if !g.permit_port_forwarding {
            self.port_event(
                "local",
                addr,
                Some("port forwarding is not allowed by the user's roles".into()),
            );
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        }
        let port = u16::try_from(port).unwrap_or(0);
        let target =
            match tokio::time::timeout(Duration::from_secs(10), TcpStream::connect((host, port)))
                .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    self.port_event("local", addr, Some(e.to_string()));
                    reply.reject(ChannelOpenFailure::ConnectFailed).await;
                    return Ok(());
                }
                Err(_) => {
                    self.port_event("local", addr, Some("connect timed out".into()));
                    reply.reject(ChannelOpenFailure::ConnectFailed).await;
                    return Ok(());
                }
            };
        self.port_event("local", addr, None);
        reply.accept().await;
        tokio::spawn(relay_channel(channel, target));
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let addr = format!("{address}:{port}");
        let (Some(g), Some(handle)) = (&self.grant, self.handle.clone()) else {
            return Ok(false);
        };
        if !g.permit_port_forwarding {
            self.port_event(
                "remote",
                addr,
                Some("port forwarding is not allowed by the user's roles".into()),
            );
            return Ok(false);
        }
        let listener = match open_remote_listener(&g.login, address, *port).await {
            Ok(l) => l,
            Err(e) => {
                self.port_event("remote", addr, Some(e.to_string()));
                return Ok(false);
            }
        };
        if *port == 0 {
            *port = listener
                .local_addr()
                .map(|a| u32::from(a.port()))
                .unwrap_or(0);
        }
        let (address_s, bound_port) = (address.to_string(), *port);
        let bound = listener
            .local_addr()
            .map_or_else(|_| addr.clone(), |a| a.to_string());
        self.port_event("remote", bound, None);
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, peer)) = listener.accept().await else {
                    return;
                };
                let handle = handle.clone();
                let address_s = address_s.clone();
                tokio::spawn(async move {
                    if let Ok(ch) = handle
                        .channel_open_forwarded_tcpip(
                            address_s,
                            bound_port,
                            peer.ip().to_string(),
                            u32::from(peer.port()),
                        )
                        .await
                    {
                        relay_channel(ch, sock).await;
                    }
                });
            }
        });
        self.remote_forwards
            .insert((address.to_string(), bound_port), task);
        Ok(true)
    }

    async fn cancel_tcpip_forward(
        &mut self,
        address: &str,
        port: u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        Ok(
            match self.remote_forwards.remove(&(address.to_string(), port)) {
                Some(t) => {
                    t.abort();
                    true
                }
                None => false,
            },
        )
    }
}

/// Opens a remote forward's listener as OpenSSH does with `GatewayPorts no`: on loopback
/// whatever address the client named (IPv6 loopback for an IPv6 request), a port below 1024
/// only for the `root` login, and with the login's own permissions when the node runs as root.
async fn open_remote_listener(
    login: &str,
    address: &str,
    port: u32,
) -> Result<TcpListener, RemoteListenError> {
    let port = u16::try_from(port).map_err(|_| RemoteListenError::OutOfRange { port })?;
    if port != 0 && port < 1024 && login != "root" {
        return Err(RemoteListenError::Privileged { port });
    }
    let ip: std::net::IpAddr = if address.contains(':') {
        std::net::Ipv6Addr::LOCALHOST.into()
    } else {
        std::net::Ipv4Addr::LOCALHOST.into()
    };
    let addr = std::net::SocketAddr::new(ip, port);
    let (_, account) = session::os_user(login)?;
    let std_listener = match account {
        Some(account) => tokio::task::spawn_blocking(move || listen_as(&account, addr))
            .await
            .map_err(RemoteListenError::Task)?,
        None => std::net::TcpListener::bind(addr).and_then(|l| {
            l.set_nonblocking(true)?;
            Ok(l)
        }),
    }
    .map_err(|source| RemoteListenError::Listen { addr, source })?;
    TcpListener::from_std(std_listener).map_err(RemoteListenError::Register)
}

/// Why a remote forward (`ssh -R`) gets no listener: the client's request (a port out of range
/// or privileged), the login's account, or the node's sockets.
#[derive(Debug, thiserror::Error)]
enum RemoteListenError {
    #[error("port {port} is out of range")]
    OutOfRange { port: u32 },
    #[error("port {port} is privileged: only the root login may forward ports below 1024")]
    Privileged { port: u16 },
    #[error(transparent)]
    Account(#[from] session::SessionError),
    #[error("cannot open the listener: {0}")]
    Task(#[source] tokio::task::JoinError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Register(#[source] std::io::Error),
}

async fn relay_channel(channel: Channel<Msg>, mut sock: TcpStream) {
    let _ = sock.set_nodelay(true);
    let mut stream = channel.into_stream();
    let _ = hop_net::copy::copy_both(&mut stream, &mut sock).await;
}

/// A Unix socket for `SSH_AUTH_SOCK` whose connections become `auth-agent@openssh.com` channels
/// back to the client, in a private directory owned by the login.
fn start_agent_socket(handle: &Handle, grant: &Grant) -> Option<AgentSocket> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("hop-agent-")
        .tempdir()
        .ok()?;
    let path = dir.path().join("agent.sock");
    let listener = tokio::net::UnixListener::bind(&path).ok()?;
    if let Ok((user, _)) = super::users::lookup(&grant.login) {
        let _ = std::os::unix::fs::chown(dir.path(), Some(user.uid), Some(user.gid));
        let _ = std::os::unix::fs::chown(&path, Some(user.uid), Some(user.gid));
    }
    let _ = std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700));
    let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    let handle = handle.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let handle = handle.clone();
            tokio::spawn(async move {
                if let Ok(ch) = handle.channel_open_agent().await {
                    let mut stream = ch.into_stream();
                    let _ = hop_net::copy::copy_both(&mut stream, &mut sock).await;
                }
            });
        }
    });
    Some(AgentSocket {
        path: path.to_string_lossy().into_owned(),
        _dir: dir,
        task,
    })
}

/// The forwarded agent's socket; removed with its directory when the connection ends.
struct AgentSocket {
    path: String,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}
