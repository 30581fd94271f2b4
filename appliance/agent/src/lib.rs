//! The agent process: `hop start --roles app|node|db|kube --proxy HOST:PORT --token T`, and the
//! agent side of reverse tunnels. Each agent service has its own room: [`node`] (SSH), [`db`]
//! (PostgreSQL, MySQL), [`kube`] (Kubernetes API servers) and `app` (TCP and web applications);
//! `dial` sends each Dial to the room its target
//! names. The services share the identity, the tunnel and the audit spool. Agents speak to Auth only through `hop-api` and dial with `hop-net`; they
//! never import Auth, the proxy or the client.
//!
//! An agent never accepts connections (an SSH node may also listen directly, see `node`). It
//! joins once (see `identity`), then keeps one control
//! connection to the proxy (ALPN `hop-tunnel`: hello with its resources and labels, heartbeats,
//! goaway) and a small pool of idle data connections (ALPN `hop-tunnel-data`). When the proxy
//! sends a Dial on a data connection, the agent connects the named application, answers, relays,
//! and opens a replacement so the pool stays full; the replacement resumes TLS 1.3 with a ticket
//! of an earlier data connection (`data_tls`) instead of a full handshake. Every reconnect waits
//! a jittered backoff.
//!
//! The control connection's loop ([`control_loop`]) is also what each simulated agent of
//! `hop admin loadtest agents` ([`loadtest`]) runs, so that a load test measures the real thing.

#![forbid(unsafe_code)]

mod app;
pub mod backoff;
mod data_tls;
pub mod db;
mod dial;
pub mod identity;
pub mod kube;
mod links;
pub mod loadtest;
pub mod node;
pub mod trackers;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hop_platform::clock;
use hop_protocols::tunnel::{Frame, Hello, PROTOCOL_VERSION, ResourceAnnouncement};
use tokio::net::TcpStream;
use tokio::sync::{RwLock, watch};

use self::backoff::Backoff;
use self::identity::{AgentIdentity, IdentityError, JoinError};
use hop_config::services::AppSpec;
use hop_config::services::AppSpecError;
use hop_net::connect::{ConnectError, dial_proxy, dial_proxy_by_record, error_chain};
use hop_net::rotation::TRUST_POLL;
use hop_net::trust::{Trust, TrustError, client_config};
use hop_net::tunnel::{ALPN_TUNNEL, FrameIoError, FramedStream};

/// Why the agent could not start: what [`run`] returns to `hop start`. Once it runs, the agent
/// keeps retrying instead of failing.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A configured application is not one an agent can serve.
    #[error(transparent)]
    App(#[from] AppSpecError),
    /// The stored identity cannot be read.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// `--ca-pin` is not a pin (the operator's).
    #[error(transparent)]
    Pin(#[from] TrustError),
    #[error(transparent)]
    Join(#[from] JoinError),
    #[error(transparent)]
    Db(#[from] db::DbServiceError),
    #[error(transparent)]
    Node(#[from] node::NodeError),
    #[error(transparent)]
    Kube(#[from] kube::KubeServiceError),
}

/// Why a tunnel connection (control or data) to the proxy did not open or ended: the network's,
/// or the proxy's.
#[derive(Debug, thiserror::Error)]
enum TunnelError {
    /// The agent's identity cannot make a TLS configuration.
    #[error(transparent)]
    Trust(#[from] TrustError),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Frame(#[from] FrameIoError),
    #[error("unexpected frame {frame_type} instead of a hello ack")]
    NoHelloAck { frame_type: u8 },
    #[error("unexpected frame {frame_type} on a data connection")]
    UnexpectedDataFrame { frame_type: u8 },
    /// The load balancer sent a control connection to a proxy another one already holds.
    #[error("the connection reached proxy {proxy}, which this agent is tunnelled to already")]
    AlreadyTunnelled { proxy: String },
    /// A data connection reached a proxy this agent has no tunnel to (or was sent away by one).
    #[error("the data connection reached a proxy this agent has no tunnel to")]
    NotTunnelledThere,
}

/// How an agent is configured.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    pub proxy: String,
    pub token: hop_config::Secret,
    pub ca_pin: Option<String>,
    pub insecure: bool,
    pub data_dir: PathBuf,
    pub role: String,
    pub apps: Vec<AppSpec>,
    /// Idle data connections kept at each proxy the agent is tunnelled to.
    pub pool_size: usize,
    /// How many of the proxies behind `proxy` to keep tunnels to (Teleport's
    /// `agent_connection_count`).
    pub connection_count: usize,
    /// The SSH service, when this agent runs the `node` role.
    pub node: Option<crate::node::NodeSettings>,
    /// Databases, when this agent runs the `db` role.
    pub databases: Vec<hop_config::services::DbSpec>,
    /// Which `db` resources the db role serves.
    pub db_selectors: Vec<hop_config::services::Selector>,
    /// What the db role's `db.query` events keep.
    pub db_audit: hop_config::DbAuditConfig,
    /// Kubernetes clusters, when this agent runs the `kube` role.
    pub kube_clusters: Vec<hop_config::services::KubeClusterSpec>,
}

/// One agent as its tasks see it: its settings and its current identity.
struct Shared {
    settings: AgentSettings,
    identity: RwLock<AgentIdentity>,
    /// Heartbeat interval to use instead of the one the proxy asks for; only the load test sets
    /// it (`--heartbeat`), real agents follow the proxy.
    heartbeat: Option<Duration>,
    /// The SSH service, once built from the identity.
    node: std::sync::OnceLock<Arc<crate::node::NodeShared>>,
    /// The database service, once built from the identity.
    db: std::sync::OnceLock<Arc<crate::db::DbService>>,
    /// The Kubernetes service, once its kubeconfigs are read.
    kube: std::sync::OnceLock<Arc<crate::kube::KubeService>>,
    /// The data connections' TLS configuration, kept so that they resume.
    data_tls: data_tls::DataTls,
    /// The applications, with each web app's pooled upstream client.
    apps: app::Apps,
    /// Bumped when the host certificate moved to another CA key (a rotation): the control
    /// connection is opened again with it, before the old one is closed, so that the proxy
    /// knows the agent by the new certificate before the old key is dropped.
    rekeyed: watch::Sender<u64>,
    /// The proxies (by id) this agent's control connections hold now (`links`).
    links: links::Links,
    /// Nodes a simulated node agent announces (the load test's `--nodes`); empty for real agents,
    /// whose node is announced by their SSH service.
    simulated_nodes: Vec<ResourceAnnouncement>,
}

/// Watches one agent's control connection. Real agents pass `()`; the load test records what
/// it sees (connection times, outages) through it. Called from the agent's own task, in order.
trait ControlObserver: Send {
    /// The proxy acknowledged the hello: the tunnel is up.
    fn up(&mut self) {}
    /// The tunnel, or an attempt to open it, ended (`why`); the next attempt starts after
    /// `retry_after`. Not called when the agent shuts down.
    fn down(&mut self, _why: &str, _retry_after: Duration) {}
}

impl ControlObserver for () {}

impl Shared {
    async fn dial(
        &self,
        alpn: &[u8],
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, TunnelError> {
        let id = self.identity.read().await.clone();
        let cfg = Arc::new(client_config(&id.trust(), Some(&id.cert), alpn)?);
        Ok(dial_proxy(&self.settings.proxy, cfg).await?)
    }

    /// A data connection: with the kept configuration, so that it resumes an earlier session's
    /// TLS instead of a full handshake.
    async fn dial_data(&self) -> Result<hop_net::records::ClientStream, TunnelError> {
        let cfg = {
            let id = self.identity.read().await;
            self.data_tls.config(&id)?
        };
        Ok(dial_proxy_by_record(&self.settings.proxy, cfg).await?)
    }

    /// Proxies this agent keeps tunnels to, at most.
    fn connection_count(&self) -> usize {
        self.settings.connection_count.max(1)
    }

    fn hello(&self, host_id: &str) -> Frame {
        Frame::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            agent_id: host_id.to_string(),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            services: vec![self.settings.role.clone()],
            resources: self
                .settings
                .apps
                .iter()
                .map(|a| ResourceAnnouncement {
                    kind: "app".into(),
                    name: a.name.clone(),
                    labels: a.labels.clone(),
                    target: Some(a.uri.clone()),
                })
                .chain(self.node.get().map(|n| n.announcement()))
                .chain(self.simulated_nodes.iter().cloned())
                .chain(self.db.get().map(|d| d.announcements()).unwrap_or_default())
                .chain(
                    self.kube
                        .get()
                        .map(|k| k.announcements())
                        .unwrap_or_default(),
                )
                .collect(),
        })
    }

    /// gRPC channels to Auth through the proxy, with the agent's current identity.
    fn auth_channels(self: &Arc<Self>) -> crate::node::audit::ChannelMaker {
        let me = self.clone();
        Arc::new(move || {
            let me = me.clone();
            Box::pin(async move {
                let id = me.identity.read().await.clone();
                hop_net::connect::tls_channel(&me.settings.proxy, &id.trust(), Some(&id.cert)).await
            })
        })
    }
}

async fn sleep_or_shutdown(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = hop_platform::signals::until_shutdown(shutdown) => true,
    }
}

/// Runs the agent until shutdown.
pub async fn run(
    settings: AgentSettings,
    shutdown: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    for a in &settings.apps {
        a.validate()?;
    }
    // Kubeconfigs are read before joining: a broken one fails the start, not a later request.
    let kube = (!settings.kube_clusters.is_empty())
        .then(|| crate::kube::KubeService::new(&settings.kube_clusters))
        .transpose()?;
    let identity = match identity::load(&settings.data_dir)? {
        Some(id) => {
            tracing::info!(host_id = %id.meta.host_id, "using the stored agent identity");
            id
        }
        None => {
            let trust = if settings.insecure {
                Trust::Insecure
            } else if let Some(pin) = &settings.ca_pin {
                Trust::Pin(hop_net::trust::normalize_pin(pin)?)
            } else {
                Trust::System
            };
            // A node asks to be certified under its --nodename (by default the first label of
            // the machine's name); Auth decides. App and db agents are known by host id only.
            let name = settings
                .node
                .as_ref()
                .map(|n| {
                    Some(n.nodename.clone())
                        .filter(|n| !n.is_empty())
                        .or_else(hop_platform::host::short_host_name)
                        .unwrap_or_default()
                })
                .unwrap_or_default();
            identity::join_as(
                Some(&settings.data_dir),
                &settings.proxy,
                settings.token.expose(),
                &settings.role,
                &trust,
                &name,
            )
            .await?
        }
    };
    println!(
        "Agent {} of cluster {} is connecting to {}",
        identity.meta.host_id, identity.meta.cluster, settings.proxy
    );
    let shared = Arc::new(Shared {
        settings: settings.clone(),
        identity: RwLock::new(identity.clone()),
        heartbeat: None,
        node: std::sync::OnceLock::new(),
        db: std::sync::OnceLock::new(),
        kube: std::sync::OnceLock::new(),
        data_tls: Default::default(),
        apps: app::Apps::new(&settings.apps),
        rekeyed: watch::Sender::new(0),
        links: Default::default(),
        simulated_nodes: Vec::new(),
    });
    if let Some(kube) = kube {
        for (name, server) in kube.describe() {
            println!("Kubernetes cluster {name} ({server}) is served");
        }
        let _ = shared.kube.set(kube);
    }
    let mut tasks = tokio::task::JoinSet::new();
    if !settings.databases.is_empty() || !settings.db_selectors.is_empty() {
        let svc = crate::db::DbService::new(
            settings.databases.clone(),
            settings.db_selectors.clone(),
            &settings.db_audit,
            &identity.meta.cluster,
            &identity.meta.host_id,
            shared.auth_channels(),
            Some(crate::node::spool::AuditSpoolSettings::db(
                &settings.data_dir,
            )),
        )?;
        for d in svc.current() {
            println!("Database {} ({}) is served", d.name, d.uri);
        }
        let _ = shared.db.set(svc.clone());
        tasks.spawn(svc.watch_resources(shared.auth_channels(), shutdown.clone()));
    }
    if let Some(ns) = settings.node.clone() {
        let connect = shared.auth_channels();
        let node =
            crate::node::NodeShared::new(&identity, ns, &settings.data_dir, connect.clone())?;
        println!("SSH node {} ({}) is serving", node.nodename, node.host_id);
        let _ = shared.node.set(node.clone());
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            if let Err(e) = crate::node::run_background(node, connect, shutdown).await {
                tracing::error!(error = %error_chain(&e), "SSH service stopped");
            }
        });
    }
    for _ in 0..shared.connection_count() {
        tasks.spawn(control_loop(shared.clone(), shutdown.clone(), ()));
    }
    tasks.spawn(renew_loop(shared.clone(), shutdown.clone()));
    for slot in 0..settings.pool_size.max(1) * shared.connection_count() {
        tasks.spawn(data_slot(shared.clone(), slot, shutdown.clone()));
    }
    let mut rx = shutdown.clone();
    hop_platform::signals::until_shutdown(&mut rx).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    Ok(())
}

/// A control connection a rekey replaces, kept open (with its proxy's claim) until the new one
/// is acknowledged.
type Lingering = Option<(ControlStream, links::Claim)>;

/// A control connection to the proxy.
type ControlStream = FramedStream<tokio_rustls::client::TlsStream<TcpStream>>;

/// The claim a new control connection that reached `landed` holds, and the connection it
/// replaces there: a rekey's new connection that reaches the proxy of the one it replaces takes
/// that one's claim over; any other claims its proxy, unless another connection holds it.
fn take_claim(
    shared: &Shared,
    landed: Option<String>,
    lingering: &mut Lingering,
) -> Result<(links::Claim, Option<ControlStream>), TunnelError> {
    if let Some((old, claim)) = lingering.take_if(|(_, held)| held.is_for(landed.as_deref())) {
        return Ok((claim, Some(old)));
    }
    let claim =
        shared
            .links
            .claim(landed.as_deref())
            .ok_or_else(|| TunnelError::AlreadyTunnelled {
                proxy: landed.unwrap_or_else(|| "(unnamed)".into()),
            })?;
    Ok((claim, None))
}

/// Keeps the agent's control connection up until shutdown: one session after another, each
/// reconnect after the proxy's goaway delay or a jittered backoff.
async fn control_loop<O: ControlObserver>(
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    mut observer: O,
) {
    let mut backoff = Backoff::default();
    let mut lingering: Lingering = None;
    loop {
        let started = clock::now();
        // A second tunnel finding every proxy already tunnelled (one proxy, the default two
        // connections) is expected: it tries again quietly.
        let mut quiet = false;
        let next =
            match control_session(&shared, &mut shutdown, &mut observer, &mut lingering).await {
                Ok(Some(after)) if lingering.is_some() => after,
                Ok(Some(after)) => {
                    observer.down("goaway", after);
                    after
                }
                Ok(None) => return,
                Err(e) => {
                    let why = error_chain(&e);
                    if matches!(e, TunnelError::AlreadyTunnelled { .. }) {
                        quiet = true;
                        tracing::debug!(reason = %why, "another tunnel is not open yet");
                    } else {
                        tracing::warn!(error = %why, "tunnel to the proxy lost");
                    }
                    if clock::since(started) > Duration::from_secs(60) {
                        backoff.reset();
                    }
                    let next = backoff.next_delay(rand::random::<f64>());
                    observer.down(&why, next);
                    next
                }
            };
        let delay_ms = next.as_millis() as u64;
        if quiet {
            tracing::debug!(delay_ms, "trying another tunnel");
        } else {
            tracing::info!(delay_ms, "reconnecting to the proxy");
        }
        if sleep_or_shutdown(next, &mut shutdown).await {
            return;
        }
    }
}

/// One control connection. `Ok(Some(d))`: reconnect after `d` (goaway, or at once with the
/// old connection left in `lingering` after a rekey); `Ok(None)`: shutdown. A connection left in
/// `lingering` is closed once this one's hello is acknowledged.
async fn control_session<O: ControlObserver>(
    shared: &Shared,
    shutdown: &mut watch::Receiver<bool>,
    observer: &mut O,
    lingering: &mut Lingering,
) -> Result<Option<Duration>, TunnelError> {
    let host_id = shared.identity.read().await.meta.host_id.clone();
    let tls = shared.dial(ALPN_TUNNEL).await?;
    // Behind a load balancer, each control connection must reach a proxy no other one holds;
    // the claim is given back when this connection ends.
    let (claim, replaced) = take_claim(shared, links::proxy_of(&tls), lingering)?;
    let mut framed = FramedStream::new(tls);
    framed.write_frame(&shared.hello(&host_id)).await?;
    let interval = match framed.read_frame(Duration::from_secs(10)).await? {
        Frame::HelloAck(a) => {
            Duration::from_secs(u64::from(a.heartbeat_interval_secs.clamp(1, 3600)))
        }
        Frame::GoAway(g) => {
            // A goaway instead of the ack is a refusal (another protocol version names both
            // releases): the operator must read it, so it is an error, not a retry note.
            tracing::error!(
                reason = %g.reason,
                retry_after_ms = g.reconnect_after_ms,
                "the proxy refused this agent's hello: {}",
                g.reason
            );
            return Ok(Some(Duration::from_millis(u64::from(g.reconnect_after_ms))));
        }
        other => {
            return Err(TunnelError::NoHelloAck {
                frame_type: other.frame_type(),
            });
        }
    };
    tracing::info!(%host_id, "tunnel to the proxy is up");
    // The proxy knows the agent by this connection now; the one it replaces may go.
    drop(replaced);
    drop(lingering.take());
    observer.up();
    let mut rekeyed = shared.rekeyed.subscribe();
    rekeyed.mark_unchanged();
    let beat = shared.heartbeat.unwrap_or(interval);
    let mut seq = 0u64;
    let mut ticker = tokio::time::interval(beat);
    ticker.tick().await;
    let mut labels = shared
        .node
        .get()
        .map(|n| n.labels_changed.subscribe())
        .unwrap_or_else(|| watch::channel(0).1);
    labels.mark_unchanged();
    let mut databases = shared
        .db
        .get()
        .map(|d| d.changed.subscribe())
        .unwrap_or_else(|| watch::channel(0).1);
    databases.mark_unchanged();
    loop {
        tokio::select! {
            Ok(()) = labels.changed() => {
                framed.write_frame(&shared.hello(&host_id)).await?;
            }
            Ok(()) = databases.changed() => {
                framed.write_frame(&shared.hello(&host_id)).await?;
            }
            Ok(()) = rekeyed.changed() => {
                tracing::info!("the host certificate moved to another CA key: opening the tunnel again with it");
                *lingering = Some((framed, claim));
                return Ok(Some(Duration::ZERO));
            }
            _ = ticker.tick() => {
                seq += 1;
                framed.write_frame(&Frame::Heartbeat { seq }).await?;
            }
            frame = framed.read_frame(beat.max(interval) * 3) => match frame? {
                Frame::HeartbeatAck { .. } => {}
                Frame::GoAway(g) => {
                    tracing::info!(reason = %g.reason, after_ms = g.reconnect_after_ms, "the proxy asked this agent to reconnect");
                    return Ok(Some(Duration::from_millis(u64::from(g.reconnect_after_ms))));
                }
                other => tracing::debug!(frame = other.frame_type(), "ignored control frame"),
            },
            _ = hop_platform::signals::until_shutdown(shutdown) => {
                let _ = framed.write_frame(&Frame::GoAway(hop_protocols::tunnel::GoAway { reason: "agent shutting down".into(), reconnect_after_ms: 0 })).await;
                return Ok(None);
            }
        }
    }
}

/// Data connections in a row that may land on a proxy without this agent's tunnel and be
/// dialed again at once (after a moment's jitter), before the usual backoff.
const QUICK_REDIALS: u32 = 16;
const QUICK_REDIAL_MS: u64 = 200;

/// Keeps one idle data connection parked at the proxy; on a Dial, serves it and parks another.
async fn data_slot(shared: Arc<Shared>, slot: usize, mut shutdown: watch::Receiver<bool>) {
    let mut backoff = Backoff::default();
    let mut misses = 0;
    loop {
        let started = clock::now();
        let outcome = tokio::select! {
            r = wait_for_dial(&shared, slot) => r,
            _ = hop_platform::signals::until_shutdown(&mut shutdown) => return,
        };
        match outcome {
            Ok(()) => {
                backoff.reset();
                misses = 0;
            }
            // Landed on a proxy without this agent's tunnel: the load balancer picks again.
            Err(TunnelError::NotTunnelledThere) if misses < QUICK_REDIALS => {
                misses += 1;
                let d = Duration::from_millis(rand::random_range(0..=QUICK_REDIAL_MS));
                if sleep_or_shutdown(d, &mut shutdown).await {
                    return;
                }
            }
            Err(e) => {
                misses = 0;
                if clock::since(started) > Duration::from_secs(60) {
                    backoff.reset();
                }
                let d = backoff.next_delay(rand::random::<f64>());
                tracing::debug!(slot, error = %error_chain(&e), delay_ms = d.as_millis() as u64, "data connection lost");
                if sleep_or_shutdown(d, &mut shutdown).await {
                    return;
                }
            }
        }
    }
}

async fn wait_for_dial(shared: &Arc<Shared>, slot: usize) -> Result<(), TunnelError> {
    let mut rekeyed = shared.rekeyed.subscribe();
    rekeyed.mark_unchanged();
    // A pool's worth of data connections per tunnel that is up: slot `s` waits for tunnel
    // `s / pool_size + 1` (a single proxy gets one pool, however many tunnels are asked for).
    shared
        .links
        .wait_for(slot / shared.settings.pool_size.max(1) + 1)
        .await;
    let tls = shared.dial_data().await?;
    if links::proxy_of(&tls).is_some_and(|p| !shared.links.holds(&p)) {
        return Err(TunnelError::NotTunnelledThere);
    }
    let mut framed = FramedStream::new(tls);
    // Idle until the proxy uses this connection (or it closes); after a rekey, replaced by one
    // with the new certificate (the proxy closes those of a key a rotation dropped).
    let frame = tokio::select! {
        frame = framed.read_frame(Duration::from_secs(24 * 3600)) => frame?,
        Ok(()) = rekeyed.changed() => return Ok(()),
    };
    let dial = match frame {
        Frame::Dial(d) => d,
        Frame::GoAway(_) => return Err(TunnelError::NotTunnelledThere),
        other => {
            return Err(TunnelError::UnexpectedDataFrame {
                frame_type: other.frame_type(),
            });
        }
    };
    let shared = shared.clone();
    tokio::spawn(async move {
        dial::serve(&shared, framed, dial).await;
    });
    Ok(())
}

/// Why the host certificate is renewed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Renewal {
    /// Two thirds of its lifetime have passed.
    Expiry,
    /// The host CA is in this rotation phase and the certificate is not from the key that signs.
    Rotation(String),
}

/// How long to wait before renewing a certificate that expires in `left`: until one third of it
/// is left, 30 s at least.
fn expiry_wait(left: Duration) -> Duration {
    let wait = left / 3;
    if wait < Duration::from_secs(30) {
        Duration::from_secs(30)
    } else {
        left - wait
    }
}

/// Renews the host certificate when two thirds of its lifetime have passed, and follows the
/// cluster's CA rotations in between: every [`TRUST_POLL`] it asks Auth for the trusted CA
/// keys, keeps the CA files and the identity in step (the control and data connections dial
/// with the new trust from then on), and renews at once when the host CA's phase asks hosts to
/// move to the key that signs. A rotation renewal that fails is retried after a growing delay
/// (up to 5 min), not at every poll.
async fn renew_loop(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut refused = Backoff::new(
        Duration::from_secs(5),
        Duration::from_secs(5),
        Duration::from_secs(300),
    );
    let mut rotation_not_before = clock::now();
    let mut trust_channel = None;
    loop {
        let expires = shared.identity.read().await.expires();
        let left = expires.duration_since(clock::wall()).unwrap_or_default();
        let due = clock::now() + expiry_wait(left);
        let why = loop {
            let wait = due.saturating_duration_since(clock::now());
            if wait.is_zero() {
                break Renewal::Expiry;
            }
            if sleep_or_shutdown(wait.min(TRUST_POLL), &mut shutdown).await {
                return;
            }
            if clock::now() >= due {
                break Renewal::Expiry;
            }
            match follow_trust(&shared, &mut trust_channel).await {
                Ok(Some(phase)) if clock::now() >= rotation_not_before => {
                    break Renewal::Rotation(phase);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %error_chain(&e), "cannot ask for the cluster's trust; will retry")
                }
            }
        };
        if let Renewal::Rotation(phase) = &why {
            tracing::info!(%phase, "the host CA is rotating: renewing the host certificate onto the key that signs");
        }
        let current = shared.identity.read().await.clone();
        match identity::renew(&shared.settings.data_dir, &shared.settings.proxy, &current).await {
            Ok(fresh) => {
                tracing::info!(expires = ?fresh.expires(), "host certificate renewed");
                refused.reset();
                if let (Some(node), Some(ssh)) = (shared.node.get(), fresh.ssh.as_ref())
                    && let Err(e) = node.use_host_identity(ssh)
                {
                    tracing::error!(error = %error_chain(&e), "the renewed SSH host certificate cannot be served; the previous one stays");
                }
                *shared.identity.write().await = fresh;
                trust_channel = None;
                if matches!(why, Renewal::Rotation(_)) {
                    shared.rekeyed.send_modify(|n| *n += 1);
                }
            }
            Err(e) => {
                let e = error_chain(&e);
                match why {
                    Renewal::Expiry => {
                        tracing::warn!(error = %e, "host certificate renewal failed; will retry")
                    }
                    Renewal::Rotation(phase) => {
                        let delay = refused.next_delay(rand::random::<f64>());
                        rotation_not_before = clock::now() + delay;
                        if phase == "standby" {
                            tracing::error!(
                                error = %e,
                                retry_in_s = delay.as_secs(),
                                data_dir = %shared.settings.data_dir.display(),
                                "the host certificate is from a CA key the cluster no longer trusts (a rotation completed while this agent could not follow it) and cannot be renewed: remove <data_dir>/agent and start the agent again with a new join token"
                            );
                        } else {
                            tracing::warn!(error = %e, %phase, retry_in_s = delay.as_secs(), "renewing the host certificate for the CA rotation failed; will retry");
                        }
                    }
                }
            }
        }
    }
}

/// Asks Auth for the cluster's trust and follows it (see [`identity::follow_trust`]); the host
/// CA's phase when the host certificate must move to the key that signs now.
/// `channel` is kept between polls (one connection per agent, not one per poll) and dropped
/// when a poll fails or the identity changes.
async fn follow_trust(
    shared: &Shared,
    channel: &mut Option<tonic::transport::Channel>,
) -> Result<Option<String>, JoinError> {
    let current = shared.identity.read().await.clone();
    let trust = identity::fetch_trust(&shared.settings.proxy, &current, channel).await?;
    let current = match identity::follow_trust(&shared.settings.data_dir, &current, &trust)? {
        Some(updated) => {
            tracing::info!(
                trust_digest = %trust.trust_digest,
                "the cluster's trusted CA keys changed; saved them"
            );
            // The next poll dials with the new trust.
            *channel = None;
            let mut id = shared.identity.write().await;
            // Only the trust: a renewal that landed meanwhile keeps its certificate.
            id.host_ca_pem = updated.host_ca_pem.clone();
            if let (Some(ssh), Some(new)) = (id.ssh.as_mut(), updated.ssh.as_ref()) {
                ssh.user_ca_keys = new.user_ca_keys.clone();
            }
            id.clone()
        }
        None => current,
    };
    Ok(identity::rotation_renewal(&current, &trust, clock::wall()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `hop start` prints the chain of an error that stopped the agent: the context first.
    #[test]
    fn a_refused_join_names_what_was_refused() {
        let e = AgentError::from(JoinError::Join(hop_net::connect::ApiError::Refused {
            code: tonic::Code::PermissionDenied,
            message: "invalid token".into(),
        }));
        assert_eq!(e.to_string(), "joining the cluster");
        assert_eq!(error_chain(&e), "joining the cluster: invalid token");
    }

    #[test]
    fn expiry_renewals_wait_for_two_thirds_of_the_lifetime_and_30_s_at_least() {
        assert_eq!(
            expiry_wait(Duration::from_secs(3 * 3600)),
            Duration::from_secs(2 * 3600)
        );
        assert_eq!(
            expiry_wait(Duration::from_secs(60)),
            Duration::from_secs(30)
        );
        assert_eq!(expiry_wait(Duration::ZERO), Duration::from_secs(30));
    }

    #[test]
    fn app_specs() {
        let a =
            AppSpec::parse("name=echo,uri=tcp://127.0.0.1:7000,labels=env=dev;team=web").unwrap();
        assert_eq!(a.name, "echo");
        assert_eq!(a.target().unwrap(), ("127.0.0.1".into(), 7000));
        assert_eq!(
            a.labels,
            vec![("env".into(), "dev".into()), ("team".into(), "web".into())]
        );
        for bad in [
            "uri=tcp://x:1",
            "name=e",
            "name=e,uri=ftp://x:1",
            "name=e,uri=tcp://x",
            "name=e,uri=tcp://x:1,color=red",
            "name=a b,uri=tcp://x:1",
        ] {
            assert!(AppSpec::parse(bad).is_err(), "{bad}");
        }
    }
}
