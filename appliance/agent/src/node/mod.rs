//! The SSH service of a node agent (`hop start --roles node --proxy HOST:PORT --token TOKEN`).
//!
//! This module owns the node's side of SSH access: its host identity (an Ed25519 host key with a
//! certificate from the cluster's host CA), what it announces about itself (name, static labels,
//! command labels refreshed on an interval), its cache of the cluster's access data, and serving
//! SSH connections: those the proxy hands it over the reverse tunnel (Dial target
//! [`hop_api::dial::SSH_TARGET`]) and, when `ssh_service.listen_addr` is set, those arriving directly; either
//! must authenticate within `ssh_service.auth_timeout`.
//! Per-connection work lives in [`handler`], per-channel work in [`session`]; session recordings
//! in [`recorder`] (the local spool) and [`upload`] (to Auth).

pub mod access;
pub mod audit;
pub mod env;
pub mod handler;
pub mod moderation;
pub mod party;
pub mod recorder;
pub mod session;
pub mod spool;
pub mod upload;
pub mod users;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hop_protocols::tunnel::ResourceAnnouncement;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use self::access::{AccessCache, AccessData};
use self::audit::{AgentAudit, ChannelMaker};
use crate::identity::{AgentIdentity, SshHostIdentity};
use hop_api::proto::NodeAccessRequest;
use hop_api::proto::auth_public_client::AuthPublicClient;
use hop_net::connect::{ApiError, ConnectError, error_chain};
use hop_net::ssh_deadline::AuthDeadline;

/// How long the node waits before asking Auth again after a failed request.
const ACCESS_RETRY: Duration = Duration::from_secs(2);

/// Why the SSH service could not start: the identity's (joined with another role), the disk's,
/// or the configuration's (the listen address).
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(
        "this agent's identity has no SSH host certificate (it joined as {role:?}); remove {} and join again with a node token",
        identity_dir.display()
    )]
    NotANode { role: String, identity_dir: PathBuf },
    #[error("reading the SSH host key")]
    HostKey(#[source] russh::keys::ssh_key::Error),
    #[error("reading the SSH host certificate")]
    HostCertificate(#[source] russh::keys::ssh_key::Error),
    #[error(transparent)]
    AuditSpool(#[from] spool::AuditSpoolError),
    #[error("opening the session recording spool in {}", dir.display())]
    RecordingSpool {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `ssh_service.listen_addr` cannot be bound (in use, or not this machine's).
    #[error("ssh_service.listen_addr {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Why the node's roles and locks could not be refreshed; it decides with the last data seen.
#[derive(Debug, thiserror::Error)]
enum AccessRefreshError {
    #[error(transparent)]
    Reach(#[from] ConnectError),
    #[error(transparent)]
    Auth(#[from] ApiError),
    #[error(transparent)]
    Data(#[from] access::AccessDataError),
}

/// A label whose value is a command's output.
#[derive(Debug, Clone)]
pub struct CommandLabel {
    pub name: String,
    pub command: Vec<String>,
    pub period: Duration,
}

/// How the SSH service is configured.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    pub nodename: String,
    pub labels: BTreeMap<String, String>,
    pub commands: Vec<CommandLabel>,
    pub listen_addr: Option<SocketAddr>,
    pub recording: recorder::SpoolSettings,
    /// Banner, key exchange and authentication must be done within this
    /// (`ssh_service.auth_timeout`).
    pub auth_timeout: Duration,
}

impl Default for NodeSettings {
    fn default() -> Self {
        Self {
            nodename: String::new(),
            labels: BTreeMap::new(),
            commands: Vec::new(),
            listen_addr: None,
            recording: recorder::SpoolSettings::default(),
            auth_timeout: Duration::from_secs(30),
        }
    }
}

/// What every connection of this node shares.
pub struct NodeShared {
    pub access: AccessCache,
    pub audit: AgentAudit,
    /// The trackers of the sessions this node hosts, on Auth.
    pub trackers: Arc<crate::trackers::AgentTrackers>,
    pub cluster: String,
    pub host_id: String,
    pub nodename: String,
    /// The spool of session recordings, `<data_dir>/agent/recordings`.
    pub recordings: Arc<recorder::RecordingSpool>,
    /// Interactive sessions others may join (`hop join`).
    pub parties: Arc<party::Parties>,
    static_labels: BTreeMap<String, String>,
    command_labels: ArcSwap<BTreeMap<String, String>>,
    /// Bumped whenever the labels change, so the agent announces them again.
    pub labels_changed: watch::Sender<u64>,
    /// The SSH server's configuration with the current host key and certificate; replaced when
    /// the agent renews its host certificate (expiry, or a CA rotation).
    ssh_config: ArcSwap<russh::server::Config>,
    settings: NodeSettings,
}

impl std::fmt::Debug for NodeShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeShared")
            .field("host_id", &self.host_id)
            .field("nodename", &self.nodename)
            .finish_non_exhaustive()
    }
}

/// The SSH server's configuration presenting `ssh`'s host key and certificate.
fn server_config(ssh: &SshHostIdentity) -> Result<russh::server::Config, NodeError> {
    let key = russh::keys::PrivateKey::from_openssh(ssh.private_key_openssh.trim())
        .map_err(NodeError::HostKey)?;
    let cert = russh::keys::Certificate::from_openssh(ssh.certificate_openssh.trim())
        .map_err(NodeError::HostCertificate)?;
    let mut methods = russh::MethodSet::empty();
    methods.push(russh::MethodKind::PublicKey);
    let config = russh::server::Config {
        server_id: russh::SshId::Standard(
            format!("SSH-2.0-Hop_{}", env!("CARGO_PKG_VERSION")).into(),
        ),
        methods,
        auth_rejection_time: Duration::from_millis(300),
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![key],
        certificates: vec![cert],
        max_auth_attempts: 6,
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(60)),
        keepalive_max: 3,
        nodelay: true,
        // An sftp WRITE (32 KiB of data and its header) fits one packet instead of two, and
        // the client is not held on window adjustments: fewer packets and wakeups per byte.
        window_size: 4 * 1024 * 1024,
        maximum_packet_size: 65535,
        ..Default::default()
    };
    Ok(config)
}

impl NodeShared {
    /// Builds the node from its stored identity.
    pub fn new(
        identity: &AgentIdentity,
        settings: NodeSettings,
        data_dir: &Path,
        connect: ChannelMaker,
    ) -> Result<Arc<Self>, NodeError> {
        let ssh = identity.ssh.as_ref().ok_or_else(|| NodeError::NotANode {
            role: identity.meta.role.clone(),
            identity_dir: data_dir.join("agent"),
        })?;
        let config = server_config(ssh)?;
        // The name Auth certified at the join (not what is configured now); the host id when
        // there is none.
        let nodename = if identity.meta.host_name.is_empty() {
            identity.meta.host_id.clone()
        } else {
            identity.meta.host_name.clone()
        };
        if !settings.nodename.is_empty() && !settings.nodename.eq_ignore_ascii_case(&nodename) {
            tracing::warn!(
                configured = %settings.nodename,
                certified = %nodename,
                "this node joined under another name and keeps it; a new name needs a new join (a new data dir)"
            );
        }
        let trackers = crate::trackers::AgentTrackers::new(connect.clone());
        let audit = AgentAudit::start(
            identity.meta.cluster.clone(),
            nodename.clone(),
            connect,
            Some(spool::AuditSpoolSettings::node(data_dir)),
        )?;
        let (labels_changed, _) = watch::channel(0);
        let agent_dir = data_dir.join("agent");
        let recordings =
            recorder::RecordingSpool::open(&agent_dir, settings.recording).map_err(|source| {
                NodeError::RecordingSpool {
                    dir: agent_dir.clone(),
                    source,
                }
            })?;
        Ok(Arc::new(Self {
            access: AccessCache::load(data_dir, &identity.meta.cluster, &ssh.user_ca_keys),
            audit,
            trackers,
            cluster: identity.meta.cluster.clone(),
            host_id: identity.meta.host_id.clone(),
            nodename,
            recordings,
            parties: Arc::default(),
            static_labels: settings.labels.clone(),
            command_labels: ArcSwap::from_pointee(BTreeMap::new()),
            labels_changed,
            ssh_config: ArcSwap::from_pointee(config),
            settings,
        }))
    }

    /// Serves `ssh`'s host key and certificate to the connections that come next (after a
    /// renewal: the certificate may be from the host CA's new key during a rotation).
    pub fn use_host_identity(&self, ssh: &SshHostIdentity) -> Result<(), NodeError> {
        self.ssh_config.store(Arc::new(server_config(ssh)?));
        Ok(())
    }

    /// Static and command labels together (a command label wins over a static one of the same
    /// name).
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut l = self.static_labels.clone();
        for (k, v) in self.command_labels.load().iter() {
            l.insert(k.clone(), v.clone());
        }
        l
    }

    /// What the agent announces about this node in its tunnel hello.
    pub fn announcement(&self) -> ResourceAnnouncement {
        ResourceAnnouncement {
            kind: "node".into(),
            name: self.nodename.clone(),
            labels: self.labels().into_iter().collect(),
            target: self.settings.listen_addr.map(|a| a.to_string()),
        }
    }
}

/// How a connection reached the node: through the proxy's tunnel, or on the node's own
/// listener (where no proxy is in the path to record it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    Tunnel,
    Direct,
}

/// Serves one SSH connection (from the tunnel or a direct listener) until it ends.
pub async fn serve<S>(shared: Arc<NodeShared>, stream: S, client_addr: String, arrival: Arrival)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (deadline, auth_done) = AuthDeadline::new(shared.settings.auth_timeout);
    let handler =
        handler::ConnHandler::new(shared.clone(), client_addr.clone(), arrival, auth_done);
    let stream = deadline.guard(stream);
    match russh::server::run_stream(shared.ssh_config.load_full(), stream, handler).await {
        Ok(running) => {
            if let Err(e) = running.await {
                tracing::debug!(client = %client_addr, error = %e, "SSH connection ended with an error");
            }
        }
        Err(e) => tracing::debug!(client = %client_addr, error = %e, "SSH handshake failed"),
    }
}

/// The node's background work: refreshing access data and command labels, and the direct
/// listener when configured. Runs until shutdown.
pub async fn run_background(
    shared: Arc<NodeShared>,
    connect: ChannelMaker,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), NodeError> {
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(refresh_access(shared.clone(), connect.clone()));
    tasks.spawn(upload::run(shared.recordings.clone(), connect));
    for c in shared.settings.commands.clone() {
        tasks.spawn(command_label(shared.clone(), c));
    }
    if let Some(addr) = shared.settings.listen_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| NodeError::Listen { addr, source })?;
        tracing::info!(%addr, "SSH service listening directly");
        let s = shared.clone();
        tasks.spawn(async move {
            loop {
                let Ok((sock, peer)) = listener.accept().await else {
                    continue;
                };
                let _ = sock.set_nodelay(true);
                tokio::spawn(serve(s.clone(), sock, peer.to_string(), Arrival::Direct));
            }
        });
    }
    hop_platform::signals::until_shutdown(&mut shutdown).await;
    tasks.abort_all();
    Ok(())
}

/// Keeps the node's access data current: each request names the revision the node holds, and
/// Auth answers when the data changes (or after a few seconds), so a lock reaches the node at
/// once without the node polling fast.
async fn refresh_access(shared: Arc<NodeShared>, connect: ChannelMaker) {
    let mut client: Option<AuthPublicClient<tonic::transport::Channel>> = None;
    let mut warned = false;
    let mut known_revision = 0u64;
    loop {
        let result = async {
            let c = match &mut client {
                Some(c) => c,
                None => client.insert(AuthPublicClient::new(connect().await?)),
            };
            let r = c
                .get_node_access(NodeAccessRequest { known_revision })
                .await
                .map_err(hop_net::connect::status_error)?
                .into_inner();
            known_revision = r.revision;
            let data = AccessData {
                roles_json: r.roles_json,
                locked_users: r.locked_users,
                ssh_user_ca_keys: r.ssh_user_ca_keys,
                session_recording: r.session_recording,
                cluster_name: r.cluster_name,
                admission_json: r.admission_json,
            };
            shared.access.update(&data)?;
            Ok::<(), AccessRefreshError>(())
        }
        .await;
        match result {
            Ok(()) => warned = false,
            Err(e) => {
                client = None;
                known_revision = 0;
                if !warned {
                    tracing::warn!(error = %error_chain(&e), "cannot refresh roles and locks from Auth; deciding with the last data seen");
                    warned = true;
                }
                tokio::time::sleep(ACCESS_RETRY).await;
            }
        }
    }
}

async fn command_label(shared: Arc<NodeShared>, label: CommandLabel) {
    loop {
        let value = match label.command.split_first() {
            Some((prog, args)) => match tokio::time::timeout(
                Duration::from_secs(30),
                tokio::process::Command::new(prog)
                    .args(args)
                    .kill_on_drop(true)
                    .output(),
            )
            .await
            {
                Ok(Ok(out)) if out.status.success() => {
                    String::from_utf8_lossy(&out.stdout).trim().to_string()
                }
                Ok(Ok(out)) => format!("error: exit {}", out.status.code().unwrap_or(-1)),
                Ok(Err(e)) => format!("error: {e}"),
                Err(_) => "error: timed out".into(),
            },
            None => String::new(),
        };
        let current = shared.command_labels.load();
        if current.get(&label.name) != Some(&value) {
            let mut next = (**current).clone();
            next.insert(label.name.clone(), value);
            shared.command_labels.store(Arc::new(next));
            shared.labels_changed.send_modify(|v| *v += 1);
        }
        tokio::time::sleep(label.period).await;
    }
}
