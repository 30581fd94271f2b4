//! SSH sessions terminated and recorded at the proxy: agentless OpenSSH nodes always, and node
//! agents when `session_recording` is `proxy` or `proxy-sync`.
//!
//! A stock sshd knows nothing of Hop's roles or recordings, so for a `node` resource the proxy is
//! the SSH server the client meets (over the `hop-ssh` stream, after the proxy's own RBAC check):
//! it presents a host certificate from the host CA for the node's names (issued per session, for
//! a throwaway key), authenticates the user's certificate again (user CA, this user, the login as
//! a principal), then opens its own SSH connection to the node (TCP to an sshd, or the
//! node agent's SSH service over a pooled tunnel connection) with a one-minute user certificate
//! for the same identity and login, verifying the node's host certificate. Session
//! channels are bridged request by request; PTY sessions are recorded (output, input, resizes)
//! into Auth's recording store unless the cluster's `session_recording` is `off`. Agent forwarding
//! and remote port forwarding are refused; local forwarding (`-L`) follows the roles.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use hop_ca::{CaError, Identity};
use hop_platform::clock;
use hop_storage::recording::{KIND_SSH, RecordingBackend, RecordingMeta, RecordingWriter};
use russh::client::Handle as ClientHandle;
use russh::keys::Certificate;
use russh::keys::ssh_key;
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelMsg, ChannelOpenFailure, ChannelReadHalf, ChannelWriteHalf};
use tokio::io::{AsyncRead, AsyncWrite};

use super::ssh::{SshCertRefusal, verify_user_cert};
use super::ssh_host::SshIdentityError;
use crate::tunnels::NodeRoute;
use hop_auth::AuthServer;
use hop_auth::audit::EventKind;

/// How long the proxy's certificates for one session are valid: they only have to get it started.
const SESSION_CERT_TTL: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The window each side of the proxy offers per channel, and the largest packet it takes: as the
/// node agent's server, so that a 32 KiB sftp write and its header travel in one packet and a
/// copy is not held up waiting for window adjustments on a busy machine.
const WINDOW: u32 = 4 * 1024 * 1024;
const MAX_PACKET: u32 = 65535;

/// How the proxy reaches the node's SSH server.
pub enum Upstream {
    /// An agentless node's sshd, at `host:port`.
    Tcp(String),
    /// A node agent's SSH service, over a pooled tunnel connection (proxy recording mode).
    Tunnel(hop_net::tunnel::Prefixed<crate::tunnels::AgentStream>),
}

/// What one forwarded connection knows.
pub struct Forward {
    pub auth: Arc<AuthServer>,
    pub identity: Identity,
    /// When the user's certificate expires: the session certificate ends no later.
    pub identity_expires: std::time::SystemTime,
    pub login: String,
    pub node: NodeRoute,
    pub remote: SocketAddr,
    pub recordings: Option<Arc<dyn RecordingBackend>>,
    /// `proxy-sync`: a PTY session whose recording cannot start is refused.
    pub require_recording: bool,
}

impl Forward {
    /// A session event of this connection: who, from where, as which login, on which node.
    fn event(&self, kind: EventKind, session_id: &str) -> hop_auth::audit::AuditEvent {
        self.auth
            .event(kind, &self.identity.username)
            .remote(Some(self.remote))
            .field("login", self.login.clone())
            .field("server", self.node.name.clone())
            .field("session_id", session_id.to_string())
    }
}

/// Serves one client SSH connection for a node whose sessions the proxy terminates.
pub async fn serve<S>(fwd: Forward, upstream: Upstream, stream: S)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = match front_config(&fwd) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            tracing::error!(error = %hop_net::connect::error_chain(&e), "cannot serve an OpenSSH node session");
            return;
        }
    };
    let remote = fwd.remote;
    let handler = Front {
        fwd: Arc::new(fwd),
        route: Some(upstream),
        upstream: None,
    };
    match russh::server::run_stream(config, stream, handler).await {
        Ok(running) => {
            if let Err(e) = running.await {
                tracing::debug!(%remote, error = %e, "forwarded SSH connection ended with an error");
            }
        }
        Err(e) => tracing::debug!(%remote, error = %e, "forwarded SSH handshake failed"),
    }
}

/// The server the client meets: a throwaway key with a host certificate for the node's names.
fn front_config(fwd: &Forward) -> Result<russh::server::Config, SshIdentityError> {
    let names = vec![
        fwd.node.name.clone(),
        format!("{}.{}", fwd.node.name, fwd.auth.cluster_name()),
    ];
    super::ssh_host::certified_server_config(
        &fwd.auth,
        &fwd.node.host_id,
        &names,
        SESSION_CERT_TTL * 10,
        None,
    )
    .map(|c| russh::server::Config {
        window_size: WINDOW,
        maximum_packet_size: MAX_PACKET,
        ..c.config
    })
}

/// The proxy's client to the node: verifies the node's host certificate.
pub(crate) struct Back {
    auth: Arc<AuthServer>,
    node: String,
}

impl Back {
    /// A client that accepts only a host certificate from the cluster's host CA for `node`.
    pub(crate) fn new(auth: Arc<AuthServer>, node: String) -> Self {
        Self { auth, node }
    }
}

/// Why the proxy's SSH client to the node failed: the SSH protocol, or a host certificate the
/// node sent that does not even read back.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BackError {
    #[error(transparent)]
    Ssh(#[from] russh::Error),
    #[error(transparent)]
    HostCertificate(#[from] ssh_key::Error),
}

/// Why the proxy could not log in to the node for the user. Causes whose words are already in
/// the message are kept as fields, not as sources, so that error chains do not repeat them.
#[derive(Debug, thiserror::Error)]
enum UpstreamError {
    /// Generating the session's key failed.
    #[error("{cause}")]
    Key { cause: CaError },
    #[error("your certificate has expired; run `hop login`")]
    Expired,
    #[error("session certificate: {cause}")]
    SessionCertificate { cause: CaError },
    #[error("connecting to {addr} timed out")]
    ConnectTimeout { addr: String },
    #[error("SSH to {addr}")]
    Ssh {
        addr: String,
        #[source]
        source: BackError,
    },
    #[error("the node's SSH handshake timed out")]
    HandshakeTimeout,
    #[error("SSH to the node over its tunnel")]
    SshOverTunnel(#[source] BackError),
    /// The key or certificate just made does not read back (a bug).
    #[error(transparent)]
    Credentials(#[from] ssh_key::Error),
    /// Authenticating to the node failed at the protocol level.
    #[error(transparent)]
    Authenticate(#[from] russh::Error),
    #[error(
        "the node refused the login {login:?}: is the user CA in its TrustedUserCAKeys (`hop admin auth export --type user`)?"
    )]
    LoginRefused { login: String },
}

impl russh::client::Handler for Back {
    type Error = BackError;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let russh::keys::PublicKeyOrCertificate::Certificate(cert) = key else {
            tracing::warn!(node = %self.node, "the OpenSSH node presented a plain host key, not a Hop host certificate");
            return Ok(false);
        };
        let text = cert.to_openssh()?;
        // Every key the host CA trusts now: nodes move to the new key during a rotation.
        let host_cas = self.auth.public_authorities(hop_ca::CaKind::Host);
        match hop_ca::verify_host_ssh(&text, &host_cas, &self.node, clock::wall()) {
            Ok(_) => Ok(true),
            Err(e) => {
                tracing::warn!(node = %self.node, error = %e, "the OpenSSH node's host certificate was refused");
                Ok(false)
            }
        }
    }
}

/// The proxy's SSH client settings: it asks for the node's host certificate (never a bare key:
/// it is what proves the node), keeps the connection alive, and never times it out itself.
pub(crate) fn client_config() -> russh::client::Config {
    let preferred = russh::Preferred {
        host_key_certificates: std::borrow::Cow::Owned(vec![
            russh::keys::Algorithm::Ed25519,
            russh::keys::Algorithm::Ecdsa {
                curve: russh::keys::EcdsaCurve::NistP256,
            },
            russh::keys::Algorithm::Rsa {
                hash: Some(russh::keys::HashAlg::Sha512),
            },
        ]),
        ..Default::default()
    };
    russh::client::Config {
        preferred,
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(60)),
        nodelay: true,
        window_size: WINDOW,
        maximum_packet_size: MAX_PACKET,
        ..Default::default()
    }
}

/// Connects to the node as `login` with a fresh one-minute certificate.
async fn connect_upstream(
    fwd: &Forward,
    route: Upstream,
) -> Result<ClientHandle<Back>, UpstreamError> {
    let auth = &fwd.auth;
    let pair = hop_ca::generate_ssh_keypair(&mut rand::rng())
        .map_err(|cause| UpstreamError::Key { cause })?;
    let mut identity = fwd.identity.clone();
    identity.logins = vec![fwd.login.clone()];
    let now = auth.now();
    let ttl = hop_ca::derived_ttl(now, fwd.identity_expires, SESSION_CERT_TTL)
        .ok_or(UpstreamError::Expired)?;
    // An agentless node trusts only the OpenSSH CA (so users cannot go around the proxy); a
    // node agent decides with the user CA and its own admission.
    let ca = match &route {
        Upstream::Tcp(_) => &auth.authorities().openssh,
        Upstream::Tunnel(_) => &auth.authorities().user,
    };
    // A per-session MFA mark travels to a node agent, which checks it again; OpenSSH's sshd
    // would refuse its critical option, and the proxy admitted it for this node already.
    if matches!(route, Upstream::Tcp(_)) {
        identity.session_mfa = None;
    }
    let cert = ca
        .issue_user_ssh(&pair.public_openssh, &identity, now, ttl, &mut rand::rng())
        .map_err(|cause| UpstreamError::SessionCertificate { cause })?;
    let config = Arc::new(client_config());
    let back = Back {
        auth: auth.clone(),
        node: fwd.node.name.clone(),
    };
    let mut handle = match route {
        Upstream::Tcp(addr) => tokio::time::timeout(
            CONNECT_TIMEOUT,
            russh::client::connect(config, addr.as_str(), back),
        )
        .await
        .map_err(|_| UpstreamError::ConnectTimeout { addr: addr.clone() })?
        .map_err(|source| UpstreamError::Ssh { addr, source })?,
        Upstream::Tunnel(stream) => tokio::time::timeout(
            CONNECT_TIMEOUT,
            russh::client::connect_stream(config, stream, back),
        )
        .await
        .map_err(|_| UpstreamError::HandshakeTimeout)?
        .map_err(UpstreamError::SshOverTunnel)?,
    };
    let key = Arc::new(russh::keys::PrivateKey::from_openssh(
        pair.private_openssh.trim(),
    )?);
    let cert = Certificate::from_openssh(cert.trim())?;
    let ok = handle
        .authenticate_openssh_cert(fwd.login.clone(), key, cert)
        .await?;
    if !ok.success() {
        return Err(UpstreamError::LoginRefused {
            login: fwd.login.clone(),
        });
    }
    Ok(handle)
}

/// Why the proxy's SSH server refuses the client's login: the certificate must be the TLS
/// identity's, for the login the session was opened for (the client's fault).
#[derive(Debug, thiserror::Error)]
enum FrontRefusal {
    #[error("login {asked:?} differs from the {opened:?} the session was opened for")]
    OtherLogin { asked: String, opened: String },
    #[error(transparent)]
    Certificate(#[from] SshCertRefusal),
    #[error("the SSH certificate is another user's")]
    OtherUser,
    #[error("the certificate does not allow login {login:?}")]
    LoginNotAllowed { login: String },
}

struct Front {
    fwd: Arc<Forward>,
    /// How to reach the node, until the user is authenticated.
    route: Option<Upstream>,
    upstream: Option<Arc<ClientHandle<Back>>>,
}

impl Front {
    fn refused(&self, why: impl std::fmt::Display) {
        let auth = &self.fwd.auth;
        auth.emit(
            auth.event(EventKind::SshAuth, &self.fwd.identity.username)
                .remote(Some(self.fwd.remote))
                .field("login", self.fwd.login.clone())
                .field("server", self.fwd.node.name.clone())
                .failed(EventKind::SshAuth, why.to_string()),
        );
    }

    /// The client's certificate must be this user's (the TLS identity), for this login.
    fn admit(&self, user: &str, cert: &Certificate) -> Result<(), FrontRefusal> {
        if user != self.fwd.login {
            return Err(FrontRefusal::OtherLogin {
                asked: user.to_string(),
                opened: self.fwd.login.clone(),
            });
        }
        let auth = &self.fwd.auth;
        let (_, identity, _) = verify_user_cert(auth, cert, clock::wall())?;
        if identity.username != self.fwd.identity.username {
            return Err(FrontRefusal::OtherUser);
        }
        if !cert.valid_principals().iter().any(|p| p == user) {
            return Err(FrontRefusal::LoginNotAllowed {
                login: user.to_string(),
            });
        }
        Ok(())
    }
}

impl russh::server::Handler for Front {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        _offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(Auth::Accept)
    }

    async fn auth_publickey(
        &mut self,
        _user: &str,
        _key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        self.refused("a plain public key was offered; only user certificates are accepted");
        Ok(Auth::reject())
    }

    async fn auth_openssh_certificate(
        &mut self,
        user: &str,
        certificate: &Certificate,
    ) -> Result<Auth, Self::Error> {
        if let Err(why) = self.admit(user, certificate) {
            self.refused(&why);
            return Ok(Auth::reject());
        }
        let Some(route) = self.route.take() else {
            // Authenticated once already on this connection; a second login is refused.
            return Ok(Auth::reject());
        };
        match connect_upstream(&self.fwd, route).await {
            Ok(h) => {
                self.upstream = Some(Arc::new(h));
                Ok(Auth::Accept)
            }
            Err(e) => {
                let why = format!(
                    "node {:?}: {}",
                    self.fwd.node.name,
                    hop_net::connect::error_chain(&e)
                );
                tracing::warn!(error = %why, "cannot reach an OpenSSH node");
                self.refused(&why);
                Ok(Auth::reject())
            }
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(up) = self.upstream.clone() else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        match up.channel_open_session().await {
            Ok(upstream) => {
                reply.accept().await;
                tokio::spawn(bridge(self.fwd.clone(), channel, upstream));
            }
            Err(e) => {
                tracing::debug!(error = %e, "the node refused a session channel");
                reply.reject(ChannelOpenFailure::ConnectFailed).await;
            }
        }
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host: &str,
        port: u32,
        originator_address: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let allowed = self
            .fwd
            .auth
            .checker_for(&self.fwd.identity.roles, &self.fwd.identity.traits)
            .map(|c| c.permit_port_forwarding())
            .unwrap_or(false);
        let Some(up) = self.upstream.clone().filter(|_| allowed) else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        match up
            .channel_open_direct_tcpip(host, port, originator_address, originator_port)
            .await
        {
            Ok(upstream) => {
                reply.accept().await;
                tokio::spawn(async move {
                    let mut a = channel.into_stream();
                    let mut b = upstream.into_stream();
                    let _ = hop_net::copy::copy_both(&mut a, &mut b).await;
                });
            }
            Err(_) => reply.reject(ChannelOpenFailure::ConnectFailed).await,
        }
        Ok(())
    }

    // Requests are answered here (russh wants the answer from the handler, in order); the
    // channel's bridge passes each one on to the node.

    async fn pty_request(
        &mut self,
        channel: russh::ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)?;
        Ok(())
    }

    async fn env_request(
        &mut self,
        channel: russh::ChannelId,
        _name: &str,
        _value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)?;
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: russh::ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)?;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: russh::ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)?;
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel: russh::ChannelId,
        _name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)?;
        Ok(())
    }

    async fn agent_request(
        &mut self,
        channel: russh::ChannelId,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        // Forwarding the user's agent through a recording proxy is not offered.
        session.channel_failure(channel)?;
        Ok(false)
    }
}

/// Records one PTY session into the store, off the async runtime.
struct Recorder {
    writer: RecordingWriter,
    tx: std::sync::mpsc::SyncSender<Option<Vec<u8>>>,
    started: Instant,
    /// A chunk could not be queued (the store fell behind or failed): the recording has a gap.
    lost: bool,
}

impl Recorder {
    fn start(fwd: &Forward, session_id: &str, term: &str, cols: u16, rows: u16) -> Option<Self> {
        let store = fwd.recordings.clone()?;
        if fwd.auth.session_recording() == "off" {
            return None;
        }
        let meta = RecordingMeta {
            session_id: session_id.to_string(),
            kind: KIND_SSH.into(),
            cluster: fwd.auth.cluster_name().to_string(),
            user: fwd.identity.username.clone(),
            login: fwd.login.clone(),
            server_id: fwd.node.host_id.clone(),
            server_name: fwd.node.name.clone(),
            start_unix_us: clock::wall()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_micros() as u64)
                .unwrap_or(0),
            cols,
            rows,
            term: term.to_string(),
        };
        let writer = match RecordingWriter::new(meta) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot record a session");
                return None;
            }
        };
        let header = writer.header_bytes().to_vec();
        let (tx, rx) = std::sync::mpsc::sync_channel::<Option<Vec<u8>>>(1024);
        let id = session_id.to_string();
        std::thread::spawn(move || {
            let mut offset = match store.begin_upload(&id, &header) {
                Ok(s) => s.received,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot store a recording");
                    return;
                }
            };
            while let Ok(msg) = rx.recv() {
                match msg {
                    Some(chunk) => match store.append(&id, offset, &chunk) {
                        Ok(n) => offset = n,
                        Err(e) => {
                            tracing::warn!(error = %e, "recording write failed; the rest is lost");
                            return;
                        }
                    },
                    None => {
                        if let Err(e) = store.complete(&id) {
                            tracing::warn!(error = %e, "cannot complete a recording");
                        }
                        return;
                    }
                }
            }
        });
        Some(Self {
            writer,
            tx,
            started: clock::now(),
            lost: false,
        })
    }

    fn send(&mut self, chunk: Option<Vec<u8>>) {
        if let Some(c) = chunk
            && self.tx.try_send(Some(c)).is_err()
            && !self.lost
        {
            self.lost = true;
            tracing::warn!(
                "a session's recording cannot keep up or was not stored: part of it is lost"
            );
        }
    }

    fn output(&mut self, data: &[u8]) {
        let c = self.writer.push_output(clock::since(self.started), data);
        self.send(c);
    }

    fn input(&mut self, data: &[u8]) {
        let c = self.writer.push_input(clock::since(self.started), data);
        self.send(c);
    }

    fn resize(&mut self, cols: u32, rows: u32) {
        let c = self.writer.push_resize(
            clock::since(self.started),
            u16::try_from(cols).unwrap_or(u16::MAX),
            u16::try_from(rows).unwrap_or(u16::MAX),
        );
        self.send(c);
    }

    fn finish(self, exit: Option<i32>) {
        let bytes = self.writer.finish(clock::since(self.started), exit);
        let _ = self.tx.send(Some(bytes));
        let _ = self.tx.send(None);
    }
}

/// What both directions of a bridged session channel share. They run in one task and never
/// hold its lock across an await (the lock is never contended; it makes the task `Send`).
#[derive(Default)]
struct Bridged {
    recorder: Option<Recorder>,
    exit: Option<i32>,
    bytes_in: u64,
    bytes_out: u64,
}

impl Bridged {
    /// Counts and records bytes from the client; false when the recording has a gap.
    fn input(&mut self, data: &[u8]) -> bool {
        self.bytes_in += data.len() as u64;
        if let Some(r) = self.recorder.as_mut() {
            r.input(data);
        }
        self.recorded_whole()
    }

    /// Counts and records bytes from the node; false when the recording has a gap.
    fn output(&mut self, data: &[u8]) -> bool {
        self.bytes_out += data.len() as u64;
        if let Some(r) = self.recorder.as_mut() {
            r.output(data);
        }
        self.recorded_whole()
    }

    fn recorded_whole(&self) -> bool {
        self.recorder.as_ref().is_none_or(|r| !r.lost)
    }
}

/// Ends a `proxy-sync` session whose recording lost part of it: such a session never goes on
/// unrecorded.
async fn end_unrecorded(client: &ChannelWriteHalf<Msg>) {
    let msg = "\r\nhop: this session must be recorded (proxy-sync) and its recording fell behind or failed; ended\r\n";
    let _ = client.extended_data_bytes(1, msg.as_bytes().to_vec()).await;
    let _ = client.exit_status(255).await;
}

fn lock(shared: &Mutex<Bridged>) -> MutexGuard<'_, Bridged> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// Carries one session channel between the client and the node, in both directions, with its
/// requests; records it once it has a PTY.
///
/// Each direction has a loop of its own: a write that waits for the peer's window must never
/// stop the other direction from being read. (russh's session loop waits to hand a channel its
/// next message; a bridge that stopped reading one side while it waited for the other side's
/// window would keep that side's window adjustment behind the undelivered message: both stall.
/// The same can still happen one level down, inside russh's own session loop: see
/// ARCHITECTURE.md, "Flow control, and a known stall".)
async fn bridge(fwd: Arc<Forward>, client: Channel<Msg>, node: Channel<russh::client::Msg>) {
    let session_id = hex::encode(hop_api::ids::time_ordered(clock::wall()).as_bytes());
    let started = clock::now();
    let auth = fwd.auth.clone();
    auth.emit(
        fwd.event(EventKind::SessionStart, &session_id)
            .field("recorded_at", "proxy"),
    );
    let (mut client_rx, client) = client.split();
    let (mut node_rx, node) = node.split();
    let shared = Mutex::new(Bridged::default());
    tokio::select! {
        () = client_to_node(&fwd, &session_id, &mut client_rx, &client, &node, &shared) => {}
        () = node_to_client(&mut node_rx, &client, &shared, fwd.require_recording) => {}
    }
    let _ = client.eof().await;
    let _ = client.close().await;
    let _ = node.close().await;
    let Bridged {
        recorder,
        exit,
        bytes_in,
        bytes_out,
    } = shared.into_inner().unwrap_or_else(|e| e.into_inner());
    let recorded = recorder.is_some();
    let lost = recorder.as_ref().is_some_and(|r| r.lost);
    if let Some(r) = recorder {
        r.finish(exit);
    }
    let mut end = fwd
        .event(EventKind::SessionEnd, &session_id)
        .field("bytes_in", bytes_in)
        .field("bytes_out", bytes_out)
        .field("duration_ms", clock::since(started).as_millis() as u64)
        .field("recorded", recorded);
    if lost {
        end = end.field("recording_lost", true);
    }
    if let Some(code) = exit {
        end = end.field("exit_code", code);
    }
    auth.emit(end);
}

/// The client's side of a bridged channel: data and requests to the node. Returns when the
/// client closes the channel or a write to the node fails.
async fn client_to_node(
    fwd: &Forward,
    session_id: &str,
    from: &mut ChannelReadHalf,
    client: &ChannelWriteHalf<Msg>,
    node: &ChannelWriteHalf<russh::client::Msg>,
    shared: &Mutex<Bridged>,
) {
    while let Some(msg) = from.wait().await {
        let r = match msg {
            ChannelMsg::Data { data } => {
                if !lock(shared).input(&data) && fwd.require_recording {
                    end_unrecorded(client).await;
                    return;
                }
                node.data_bytes(data).await
            }
            ChannelMsg::ExtendedData { data, ext } => node.extended_data_bytes(ext, data).await,
            ChannelMsg::Eof => node.eof().await,
            ChannelMsg::Close => return,
            ChannelMsg::RequestPty {
                term,
                col_width,
                row_height,
                pix_width,
                pix_height,
                terminal_modes,
                ..
            } => {
                // The first PTY starts the recording; a second one goes to the node and the
                // recording already running goes on.
                if lock(shared).recorder.is_none() {
                    let recorder = Recorder::start(
                        fwd,
                        session_id,
                        &term,
                        u16::try_from(col_width).unwrap_or(80),
                        u16::try_from(row_height).unwrap_or(24),
                    );
                    if recorder.is_none() && fwd.require_recording {
                        let msg = "hop: this session must be recorded (proxy-sync) and its recording cannot start; refused\r\n";
                        let _ = client.extended_data_bytes(1, msg.as_bytes().to_vec()).await;
                        let _ = client.exit_status(255).await;
                        return;
                    }
                    lock(shared).recorder = recorder;
                }
                node.request_pty(
                    false,
                    &term,
                    col_width,
                    row_height,
                    pix_width,
                    pix_height,
                    &terminal_modes,
                )
                .await
            }
            ChannelMsg::RequestShell { .. } => node.request_shell(false).await,
            ChannelMsg::Exec { command, .. } => {
                let command_line = String::from_utf8_lossy(&command).into_owned();
                fwd.auth.emit(
                    fwd.event(EventKind::Exec, session_id)
                        .field("command", command_line),
                );
                node.exec(false, command).await
            }
            ChannelMsg::RequestSubsystem { name, .. } => node.request_subsystem(false, name).await,
            ChannelMsg::SetEnv {
                variable_name,
                variable_value,
                ..
            } => {
                if variable_name.starts_with("LD_") {
                    Ok(())
                } else {
                    node.set_env(false, variable_name, variable_value).await
                }
            }
            ChannelMsg::WindowChange {
                col_width,
                row_height,
                pix_width,
                pix_height,
            } => {
                if let Some(r) = lock(shared).recorder.as_mut() {
                    r.resize(col_width, row_height);
                }
                node.window_change(col_width, row_height, pix_width, pix_height)
                    .await
            }
            ChannelMsg::Signal { signal } => node.signal(signal).await,
            _ => Ok(()),
        };
        if r.is_err() {
            return;
        }
    }
}

/// The node's side of a bridged channel: output, exit status and end of file to the client.
/// Returns when the node closes the channel or a write to the client fails.
async fn node_to_client(
    from: &mut ChannelReadHalf,
    client: &ChannelWriteHalf<Msg>,
    shared: &Mutex<Bridged>,
    must_record: bool,
) {
    while let Some(msg) = from.wait().await {
        let r = match msg {
            ChannelMsg::Data { data } => {
                if !lock(shared).output(&data) && must_record {
                    end_unrecorded(client).await;
                    return;
                }
                client.data_bytes(data).await
            }
            ChannelMsg::ExtendedData { data, ext } => {
                if !lock(shared).output(&data) && must_record {
                    end_unrecorded(client).await;
                    return;
                }
                client.extended_data_bytes(ext, data).await
            }
            ChannelMsg::ExitStatus { exit_status } => {
                lock(shared).exit = i32::try_from(exit_status).ok();
                client.exit_status(exit_status).await
            }
            ChannelMsg::ExitSignal {
                signal_name,
                error_message,
                ..
            } => {
                tracing::debug!(signal = ?signal_name, message = %error_message, "node session ended by a signal");
                client.close().await
            }
            ChannelMsg::Eof => client.eof().await,
            ChannelMsg::Close => return,
            _ => Ok(()),
        };
        if r.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorder(tx: std::sync::mpsc::SyncSender<Option<Vec<u8>>>) -> Recorder {
        let meta = RecordingMeta {
            session_id: "0123abcd".into(),
            kind: KIND_SSH.into(),
            cluster: "c".into(),
            user: "alice".into(),
            login: "hopuser".into(),
            server_id: "h1".into(),
            server_name: "web1".into(),
            start_unix_us: 0,
            cols: 80,
            rows: 24,
            term: "xterm".into(),
        };
        Recorder {
            writer: RecordingWriter::new(meta).unwrap(),
            tx,
            started: clock::now(),
            lost: false,
        }
    }

    #[test]
    fn a_recording_that_cannot_keep_up_says_so_once_it_has_a_gap() {
        let big = vec![b'x'; 1 << 20];
        // No recording: nothing to lose.
        let mut unrecorded = Bridged::default();
        assert!(unrecorded.input(&big) && unrecorded.output(&big));
        // A store that takes everything: whole.
        let (tx, rx) = std::sync::mpsc::sync_channel(1024);
        let mut kept = Bridged {
            recorder: Some(recorder(tx)),
            ..Bridged::default()
        };
        assert!(kept.input(&big) && kept.output(&big));
        assert!(rx.try_recv().is_ok(), "chunks reached the store");
        // A store that is gone (or a full queue): the first lost chunk marks the gap, for good.
        let (tx, rx) = std::sync::mpsc::sync_channel(1024);
        drop(rx);
        let mut gap = Bridged {
            recorder: Some(recorder(tx)),
            ..Bridged::default()
        };
        assert!(!gap.output(&big));
        assert!(!gap.input(b"ls\r"));
        assert_eq!((gap.bytes_in, gap.bytes_out), (3, 1 << 20));
    }
}
