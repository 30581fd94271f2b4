//! Reverse tunnels on the proxy: agents' control connections, their presence, and their pools of
//! warm data connections.
//!
//! This module owns the [`TunnelRegistry`]: which agents are connected right now (soft state with
//! a heartbeat deadline, never a backend write per heartbeat), what each announced (services,
//! resources, labels, the host CA key that signed its certificate), and the idle data
//! connections each keeps parked here so that starting a session costs no round trip to the
//! agent. It serves the control protocol (hello, heartbeat,
//! goaway; the hello within `proxy_service.tunnel_hello_timeout`; an agent of another protocol
//! version refused with a reason that names both sides', `versions`) and hands out data
//! connections; it does not decide who may use them. It also keeps what other proxies' presence
//! summaries say (`remote`): their agents are listed and routed here too, through the proxy that
//! holds their tunnel (`crate::peering`). A data connection of an agent without a control
//! connection here is sent away (GoAway): its pool belongs where its tunnel is.

pub mod remote;
mod versions;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hop_ca::HostRole;
use hop_platform::clock;
use hop_protocols::tunnel::{Frame, GoAway, HelloAck, ResourceAnnouncement};
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};

use self::remote::{Peer, RemoteView};

use crate::dataplane::limits::ConnectionGuard;
use crate::relay::bounded::RecordReads;
pub use hop_auth::inventory::{AgentInfo, AppRoute, DbRoute, KubeRoute, NodeRoute};
use hop_net::tunnel::{FrameIoError, FramedStream};

/// A TLS stream terminated by the proxy (an agent's, or a user's session connection); its socket
/// may be read record by record (see `crate::relay::bounded`).
pub type AgentStream = super::proxy_tls::ProxyTls<RecordReads<TcpStream>>;

/// Most idle data connections kept per agent; more are closed.
const MAX_POOLED_PER_AGENT: usize = 64;
/// How long a session waits for an agent's data connection when its pool is empty.
const POOL_WAIT: Duration = Duration::from_secs(5);
/// How long an agent has for its first control message (`proxy_service.tunnel_hello_timeout`).
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

struct AgentEntry {
    info: AgentInfo,
    /// SPKI pin of the host CA key that signed the agent's certificate.
    signer: String,
    generation: u64,
    goaway: watch::Sender<Option<GoAway>>,
}

#[derive(Default)]
struct Pool {
    /// Idle data connections with the SPKI pin of the host CA key their certificate is from.
    idle: VecDeque<(AgentStream, ConnectionGuard, String)>,
    notify: Arc<Notify>,
}

/// Live agents and their data pools.
pub struct TunnelRegistry {
    proxy_id: String,
    heartbeat_interval: Duration,
    hello_timeout: Duration,
    agents: Mutex<HashMap<String, AgentEntry>>,
    pools: Mutex<HashMap<String, Pool>>,
    next_generation: std::sync::atomic::AtomicU64,
    /// Told of every announcement refused: (host id, what and why).
    refused_announcement: std::sync::OnceLock<RefusedAnnouncement>,
    /// Other proxies' agents ([`Self::set_remote`]).
    remote: std::sync::RwLock<Arc<RemoteView>>,
    /// Where other proxies reach this one for peering; empty: nowhere.
    peer_addr: String,
    /// Told when an agent connects or leaves (the presence summary is published sooner).
    changed: Arc<Notify>,
    /// This proxy's peering certificate, once peering runs.
    peering: std::sync::OnceLock<Arc<crate::peering::PeerIdentity>>,
}

/// A callback for refused announcements: (host id, what was refused and why).
pub type RefusedAnnouncement = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// The kind of resource an agent of `role` may announce.
fn kind_served_by(role: HostRole) -> Option<&'static str> {
    match role {
        HostRole::Node => Some("node"),
        HostRole::App => Some("app"),
        HostRole::Db => Some("db"),
        HostRole::Kube => Some("kube_cluster"),
        HostRole::Desktop => Some("windows_desktop"),
        HostRole::Auth | HostRole::Proxy => None,
    }
}

impl std::fmt::Debug for TunnelRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelRegistry")
            .field("proxy_id", &self.proxy_id)
            .finish_non_exhaustive()
    }
}

impl TunnelRegistry {
    pub fn new(proxy_id: String, heartbeat_interval: Duration) -> Self {
        Self {
            proxy_id,
            heartbeat_interval,
            hello_timeout: HELLO_TIMEOUT,
            agents: Mutex::new(HashMap::new()),
            pools: Mutex::new(HashMap::new()),
            next_generation: std::sync::atomic::AtomicU64::new(1),
            refused_announcement: std::sync::OnceLock::new(),
            remote: std::sync::RwLock::new(Arc::default()),
            peer_addr: String::new(),
            changed: Arc::new(Notify::new()),
            peering: std::sync::OnceLock::new(),
        }
    }

    /// Reaches agents tunnelled to other proxies with `identity` from now on.
    pub fn enable_peering(&self, identity: Arc<crate::peering::PeerIdentity>) {
        let _ = self.peering.set(identity);
    }

    /// This proxy's peering identity, when peering runs.
    pub fn peering(&self) -> Option<Arc<crate::peering::PeerIdentity>> {
        self.peering.get().cloned()
    }

    /// Other proxies reach this one for peering at `addr` (`host:port`).
    pub fn with_peer_addr(mut self, addr: String) -> Self {
        self.peer_addr = addr;
        self
    }

    /// Where other proxies reach this one for peering; empty: nowhere.
    pub fn peer_addr(&self) -> &str {
        &self.peer_addr
    }

    /// Notified when an agent connects or leaves.
    pub fn changes(&self) -> Arc<Notify> {
        self.changed.clone()
    }

    /// Replaces what other proxies' summaries say (`crate::presence` reads them).
    pub fn set_remote(&self, summaries: &[hop_auth::inventory::PresenceSummary]) {
        let local: std::collections::HashSet<String> = self.agents().keys().cloned().collect();
        let view = RemoteView::build(summaries, |h| local.contains(h));
        *self.remote.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(view);
    }

    fn remote(&self) -> Arc<RemoteView> {
        self.remote
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether agent `host_id` has a control connection here.
    pub fn has_control(&self, host_id: &str) -> bool {
        self.agents().contains_key(host_id)
    }

    /// The proxies to ask for agent `host_id` (the one it was heard from last first), when it
    /// has no tunnel here; empty when no other proxy's summary lists it either.
    pub fn peers_for(&self, host_id: &str) -> Vec<Peer> {
        if self.has_control(host_id) {
            return Vec::new();
        }
        self.remote().peers_of(host_id).to_vec()
    }

    /// The other proxies of the cluster that take peer connections.
    pub fn reachable_peers(&self) -> Vec<Peer> {
        self.remote().reachable().to_vec()
    }

    /// Whether `proxy_id` is another proxy of the cluster with a live presence summary.
    pub fn is_peer(&self, proxy_id: &str) -> bool {
        proxy_id != self.proxy_id && self.remote().is_peer(proxy_id)
    }

    /// Sets who is told of refused announcements (the audit log).
    pub fn on_refused_announcement(&self, f: RefusedAnnouncement) {
        let _ = self.refused_announcement.set(f);
    }

    /// The announcements agent `host_id` (of `role`) may make: only its role's kind, and only
    /// names no other connected agent holds (the first holder keeps a name; a later one is
    /// refused, never allowed to shadow it). Each refusal is reported.
    ///
    /// `store` runs with what is kept while the registry is still locked, so two agents
    /// announcing one name at the same moment cannot both keep it.
    fn vet_and_store(
        &self,
        host_id: &str,
        role: HostRole,
        resources: Vec<ResourceAnnouncement>,
        store: impl FnOnce(&mut HashMap<String, AgentEntry>, Vec<ResourceAnnouncement>),
    ) {
        let served = kind_served_by(role);
        let remote = self.remote();
        let mut agents = self.agents();
        let held_elsewhere = |agents: &HashMap<String, AgentEntry>, r: &ResourceAnnouncement| {
            remote.holds_name(&r.kind, &r.name, host_id)
                || agents.values().any(|e| {
                    e.info.host_id != host_id
                        && e.info
                            .resources
                            .iter()
                            .any(|x| x.kind == r.kind && x.name.eq_ignore_ascii_case(&r.name))
                })
        };
        let mut kept = Vec::new();
        let mut refusals = Vec::new();
        for r in resources {
            if served != Some(r.kind.as_str()) {
                refusals.push(format!(
                    "{} {:?}: an agent of role {} may not announce it",
                    r.kind,
                    r.name,
                    role.as_str()
                ));
            } else if held_elsewhere(&agents, &r) {
                refusals.push(format!(
                    "{} {:?}: another agent serves that name",
                    r.kind, r.name
                ));
            } else {
                kept.push(r);
            }
        }
        store(&mut agents, kept);
        drop(agents);
        for why in refusals {
            tracing::warn!(%host_id, "announcement refused: {why}");
            if let Some(f) = self.refused_announcement.get() {
                f(host_id, &why);
            }
        }
    }

    /// What [`Self::vet_and_store`] keeps, for tests.
    #[cfg(test)]
    fn vet(
        &self,
        host_id: &str,
        role: HostRole,
        resources: Vec<ResourceAnnouncement>,
    ) -> Vec<ResourceAnnouncement> {
        let mut out = Vec::new();
        self.vet_and_store(host_id, role, resources, |_, kept| out = kept);
        out
    }

    /// Disconnects agent `host_id` now (a lock on its server id): its control connection is
    /// told to go away, its resources are withdrawn, its pooled data connections closed.
    pub fn evict(&self, host_id: &str, reason: &str) {
        if let Some(e) = self.agents().get(host_id) {
            let _ = e.goaway.send(Some(GoAway {
                reason: reason.to_string(),
                reconnect_after_ms: 60_000,
            }));
        }
        if let Some(e) = self.agents().get_mut(host_id) {
            e.info.resources.clear();
        }
        self.pools().remove(host_id);
    }

    /// An agent whose control connection sends no hello within `limit` is disconnected.
    pub fn with_hello_timeout(mut self, limit: Duration) -> Self {
        self.hello_timeout = limit;
        self
    }

    /// The id this proxy goes by (its host name).
    pub fn proxy_id(&self) -> &str {
        &self.proxy_id
    }

    fn agents(&self) -> std::sync::MutexGuard<'_, HashMap<String, AgentEntry>> {
        self.agents.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pools(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pool>> {
        self.pools.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Agents connected now, sorted by host id.
    pub fn list(&self) -> Vec<AgentInfo> {
        let pools = self.pools();
        let mut v: Vec<AgentInfo> = self
            .agents()
            .values()
            .map(|e| {
                let mut i = e.info.clone();
                i.pooled = pools.get(&i.host_id).map(|p| p.idle.len()).unwrap_or(0);
                i
            })
            .collect();
        v.sort_by(|a, b| a.host_id.cmp(&b.host_id));
        v
    }

    pub fn connected(&self) -> usize {
        self.agents().len()
    }

    /// Resources of `kind` announced by connected agents, each made by `make(resource, host id)`,
    /// sorted by name then host id.
    /// Other proxies' agents count too (`remote`). A name two agents announced to different
    /// proxies at about the same moment (before either proxy saw the other's) is listed for the
    /// one connected first (then by host id), the same on every proxy.
    fn announced<T>(&self, kind: &str, make: impl Fn(&ResourceAnnouncement, &str) -> T) -> Vec<T> {
        // (name folded, connected, host id, name, made)
        let mut all: Vec<(String, i64, String, String, T)> = Vec::new();
        for e in self.agents().values() {
            let connected = unix_secs(e.info.connected);
            for r in e.info.resources.iter().filter(|r| r.kind == kind) {
                all.push((
                    r.name.to_ascii_lowercase(),
                    connected,
                    e.info.host_id.clone(),
                    r.name.clone(),
                    make(r, &e.info.host_id),
                ));
            }
        }
        let remote = self.remote();
        for a in remote.agents() {
            if self.has_control(&a.host_id) {
                continue;
            }
            for r in a.resources.iter().filter(|r| r.kind == kind) {
                all.push((
                    r.name.to_ascii_lowercase(),
                    a.connected_unix,
                    a.host_id.clone(),
                    r.name.clone(),
                    make(r, &a.host_id),
                ));
            }
        }
        all.sort_by(|x, y| (&x.0, x.1, &x.2).cmp(&(&y.0, y.1, &y.2)));
        all.dedup_by(|later, first| later.0 == first.0);
        let mut out: Vec<(String, String, T)> =
            all.into_iter().map(|(_, _, h, n, t)| (n, h, t)).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        out.into_iter().map(|(_, _, t)| t).collect()
    }

    /// Applications announced by connected agents, sorted by name then host id.
    pub fn apps(&self) -> Vec<AppRoute> {
        self.announced("app", |r, host_id| AppRoute {
            name: r.name.clone(),
            uri: r.target.clone().unwrap_or_default(),
            labels: r.labels.iter().cloned().collect(),
            host_id: host_id.to_string(),
        })
    }

    /// Databases announced by connected db agents, sorted by name then host id.
    pub fn databases(&self) -> Vec<DbRoute> {
        self.announced("db", |r, host_id| DbRoute {
            name: r.name.clone(),
            uri: r.target.clone().unwrap_or_default(),
            labels: r.labels.iter().cloned().collect(),
            host_id: host_id.to_string(),
        })
    }

    /// SSH nodes announced by connected node agents, sorted by name then host id.
    pub fn nodes(&self) -> Vec<NodeRoute> {
        self.announced("node", |r, host_id| NodeRoute {
            name: r.name.clone(),
            addr: r.target.clone().unwrap_or_default(),
            labels: r.labels.iter().cloned().collect(),
            host_id: host_id.to_string(),
            openssh: false,
        })
    }

    /// Kubernetes clusters announced by connected kube agents, sorted by name then host id.
    pub fn kube_clusters(&self) -> Vec<KubeRoute> {
        self.announced("kube_cluster", |r, host_id| KubeRoute {
            name: r.name.clone(),
            labels: r.labels.iter().cloned().collect(),
            host_id: host_id.to_string(),
        })
    }

    /// Asks every agent to reconnect elsewhere (or later), spreading their returns over `spread`.
    pub fn drain(&self, spread: Duration) {
        for e in self.agents().values() {
            let jitter = rand::random_range(0..=spread.as_millis().max(1) as u64);
            let _ = e.goaway.send(Some(GoAway {
                reason: "proxy is shutting down".into(),
                reconnect_after_ms: u32::try_from(jitter).unwrap_or(u32::MAX),
            }));
        }
    }

    /// Waits until every control session has ended (after [`TunnelRegistry::drain`], each ends once
    /// its GoAway is written), or until `limit` passes.
    pub async fn wait_drained(&self, limit: Duration) {
        let deadline = clock::tokio_now() + limit;
        while self.connected() > 0 && clock::tokio_now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Parks an agent's idle data connection, whose certificate is from the host CA key with
    /// SPKI pin `signer`.
    ///
    /// Returns the connection when the agent has no control connection here: its pool belongs
    /// with its tunnel (the caller sends it away).
    pub fn park_data(
        &self,
        host_id: &str,
        signer: String,
        stream: AgentStream,
        guard: ConnectionGuard,
    ) -> Option<AgentStream> {
        if !self.has_control(host_id) {
            return Some(stream);
        }
        let mut pools = self.pools();
        let pool = pools.entry(host_id.to_string()).or_default();
        // An agent whose certificate moved to another CA key replaces all its idle data
        // connections: the ones of the key before are closed at its end already, or about to be.
        pool.idle.retain(|(_, _, parked)| *parked == signer);
        if pool.idle.len() >= MAX_POOLED_PER_AGENT {
            return None;
        }
        pool.idle.push_back((stream, guard, signer));
        pool.notify.notify_one();
        None
    }

    /// Closes the idle data connections whose certificate is from no key among `trusted` (a CA
    /// rotation dropped it since they were parked); how many were closed.
    pub fn drop_parked_outside(&self, trusted: &[String]) -> usize {
        let mut closed = 0;
        for pool in self.pools().values_mut() {
            let before = pool.idle.len();
            pool.idle.retain(|(_, _, signer)| trusted.contains(signer));
            closed += before - pool.idle.len();
        }
        closed
    }

    /// Takes an idle data connection of `host_id`, waiting briefly for one if none is parked.
    /// Takes one of `host_id`'s idle data connections (waiting a moment for one), with its
    /// place in the connection limits: the session holds that place while it uses the
    /// connection.
    pub async fn take_data(&self, host_id: &str) -> Option<(AgentStream, ConnectionGuard)> {
        let deadline = clock::tokio_now() + POOL_WAIT;
        loop {
            let notify = {
                let mut pools = self.pools();
                let pool = pools.entry(host_id.to_string()).or_default();
                while let Some((stream, guard, _)) = pool.idle.pop_front() {
                    if !closed_by_agent(&stream) {
                        return Some((stream, guard));
                    }
                }
                pool.notify.clone()
            };
            if tokio::time::timeout_at(deadline, notify.notified())
                .await
                .is_err()
            {
                return None;
            }
        }
    }

    /// The agents connected with a certificate signed by no key among `trusted` (SPKI pins of
    /// host CA keys): keys a CA rotation dropped since they connected.
    pub fn signed_outside(&self, trusted: &[String]) -> Vec<AgentInfo> {
        let mut v: Vec<AgentInfo> = self
            .agents()
            .values()
            .filter(|e| !trusted.contains(&e.signer))
            .map(|e| e.info.clone())
            .collect();
        v.sort_by(|a, b| a.host_id.cmp(&b.host_id));
        v
    }

    /// Serves one agent's control connection until it closes, misses heartbeats, or shutdown.
    /// `signer` is the SPKI pin of the host CA key that signed its certificate
    /// ([`Self::signed_outside`]).
    pub async fn serve_control(
        self: Arc<Self>,
        stream: AgentStream,
        host_id: String,
        role: HostRole,
        signer: String,
        remote: SocketAddr,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut framed = FramedStream::new(stream);
        let hello = match framed.read_frame(self.hello_timeout).await {
            Ok(Frame::Hello(h)) => h,
            Ok(other) => {
                tracing::warn!(%remote, frame = other.frame_type(), "agent did not start with a hello");
                return;
            }
            Err(e) => {
                tracing::debug!(%remote, error = %e, "agent hello failed");
                return;
            }
        };
        if hello.agent_id != host_id {
            tracing::warn!(%remote, claimed = %hello.agent_id, cert = %host_id, "agent id does not match its certificate");
            return;
        }
        if let Some(goaway) = versions::refusal(&hello) {
            tracing::warn!(%host_id, %remote, reason = %goaway.reason, "agent refused: another tunnel protocol version");
            let _ = framed.write_frame(&Frame::GoAway(goaway)).await;
            return;
        }
        let now = clock::wall();
        let generation = self
            .next_generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (goaway_tx, mut goaway_rx) = watch::channel(None);
        let info = AgentInfo {
            host_id: host_id.clone(),
            version: hello.agent_version.clone(),
            services: hello.services.clone(),
            resources: Vec::new(),
            remote,
            connected: now,
            last_heartbeat: now,
            pooled: 0,
        };
        self.vet_and_store(
            &host_id,
            role,
            hello.resources.clone(),
            |agents, resources| {
                let entry = AgentEntry {
                    info: AgentInfo { resources, ..info },
                    signer,
                    generation,
                    goaway: goaway_tx,
                };
                agents.insert(host_id.clone(), entry);
            },
        );
        tracing::info!(%host_id, %remote, services = ?hello.services, resources = hello.resources.len(), "agent connected");
        self.changed.notify_one();
        let ack = Frame::HelloAck(HelloAck {
            proxy_id: self.proxy_id.clone(),
            heartbeat_interval_secs: u32::try_from(self.heartbeat_interval.as_secs()).unwrap_or(30),
        });
        let result = match framed.write_frame(&ack).await {
            Ok(()) => {
                self.control_loop(&mut framed, &host_id, role, &mut goaway_rx, &mut shutdown)
                    .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::info!(%host_id, %remote, reason = %e, "agent disconnected");
        }
        // Forget the agent unless a newer connection of the same agent replaced this one.
        let mut agents = self.agents();
        if agents
            .get(&host_id)
            .is_some_and(|e| e.generation == generation)
        {
            agents.remove(&host_id);
            drop(agents);
            self.pools().remove(&host_id);
            self.changed.notify_one();
        }
    }

    async fn control_loop(
        &self,
        framed: &mut FramedStream<AgentStream>,
        host_id: &str,
        role: HostRole,
        goaway: &mut watch::Receiver<Option<GoAway>>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), FrameIoError> {
        // Three missed heartbeats and the agent is gone.
        let deadline = self.heartbeat_interval * 3;
        loop {
            tokio::select! {
                frame = framed.read_frame(deadline) => match frame? {
                    Frame::Heartbeat { seq } => {
                        if let Some(e) = self.agents().get_mut(host_id) {
                            e.info.last_heartbeat = clock::wall();
                        }
                        framed.write_frame(&Frame::HeartbeatAck { seq }).await?;
                    }
                    Frame::Hello(h) => {
                        let services = h.services;
                        self.vet_and_store(host_id, role, h.resources, |agents, resources| {
                            if let Some(e) = agents.get_mut(host_id) {
                                e.info.resources = resources;
                                e.info.services = services;
                            }
                        });
                    }
                    Frame::GoAway(g) => {
                        tracing::info!(%host_id, reason = %g.reason, "agent is leaving");
                        return Ok(());
                    }
                    other => tracing::debug!(%host_id, frame = other.frame_type(), "ignored control frame"),
                },
                changed = goaway.changed() => {
                    let msg = goaway.borrow().clone();
                    if changed.is_err() { return Ok(()); }
                    if let Some(g) = msg {
                        framed.write_frame(&Frame::GoAway(g)).await?;
                        return Ok(());
                    }
                }
                _ = hop_platform::signals::until_shutdown(shutdown) => {
                    let jitter = rand::random_range(0..=10_000u32);
                    framed.write_frame(&Frame::GoAway(GoAway { reason: "proxy is shutting down".into(), reconnect_after_ms: jitter })).await?;
                    return Ok(());
                }
            }
        }
    }
}

fn unix_secs(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Whether the agent closed (or wrote on) an idle data connection: an idle one has nothing to
/// read until its Dial is answered, so anything there (end of stream, an alert) means it is gone.
fn closed_by_agent(stream: &AgentStream) -> bool {
    let tcp = stream.get_ref().0.get_ref();
    let mut byte = [0u8; 1];
    let mut buf = tokio::io::ReadBuf::new(&mut byte);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    tcp.poll_peek(&mut cx, &mut buf).is_ready()
}

impl hop_auth::inventory::Inventory for TunnelRegistry {
    fn proxy_id(&self) -> &str {
        TunnelRegistry::proxy_id(self)
    }
    fn list(&self) -> Vec<AgentInfo> {
        TunnelRegistry::list(self)
    }
    fn apps(&self) -> Vec<AppRoute> {
        TunnelRegistry::apps(self)
    }
    fn databases(&self) -> Vec<DbRoute> {
        TunnelRegistry::databases(self)
    }
    fn nodes(&self) -> Vec<NodeRoute> {
        TunnelRegistry::nodes(self)
    }
    fn kube_clusters(&self) -> Vec<KubeRoute> {
        TunnelRegistry::kube_clusters(self)
    }
}

impl hop_metrics::Report for TunnelRegistry {
    fn render(&self, out: &mut String) {
        hop_metrics::gauge(
            out,
            "hop_proxy_tunnels_connected",
            "Agents with a live control tunnel to this proxy.",
            &[(String::new(), self.connected() as u64)],
        );
    }
}

#[cfg(test)]
mod vet_tests {
    use super::*;
    use hop_auth::inventory::{AgentSummary, AnnouncedResource, PresenceSummary};

    fn ann(kind: &str, name: &str) -> ResourceAnnouncement {
        ResourceAnnouncement {
            kind: kind.into(),
            name: name.into(),
            labels: vec![],
            target: None,
        }
    }

    #[test]
    fn agents_announce_only_what_their_role_serves() {
        let r = TunnelRegistry::new("p".into(), Duration::from_secs(30));
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let s = seen.clone();
        r.on_refused_announcement(Arc::new(move |h: &str, why: &str| {
            s.lock().unwrap().push(format!("{h}: {why}"));
        }));
        let kept = r.vet(
            "h1",
            HostRole::App,
            vec![ann("app", "grafana"), ann("node", "web1"), ann("db", "pg")],
        );
        assert_eq!(kept, vec![ann("app", "grafana")]);
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(
            seen[0].contains("an agent of role app may not announce it"),
            "{seen:?}"
        );
        assert!(
            r.vet("h2", HostRole::Proxy, vec![ann("app", "x")])
                .is_empty()
        );
        assert_eq!(
            r.vet("h3", HostRole::Node, vec![ann("node", "web1")]).len(),
            1
        );
    }

    fn connect(r: &TunnelRegistry, host_id: &str, signer: &str) {
        let now = clock::wall();
        let info = AgentInfo {
            host_id: host_id.into(),
            version: String::new(),
            services: vec![],
            resources: vec![],
            remote: "127.0.0.1:1".parse().unwrap(),
            connected: now,
            last_heartbeat: now,
            pooled: 0,
        };
        let entry = AgentEntry {
            info,
            signer: signer.into(),
            generation: 0,
            goaway: watch::channel(None).0,
        };
        r.agents().insert(host_id.into(), entry);
    }

    fn summary_of(proxy: &str, host_id: &str, node: &str, connected: i64) -> PresenceSummary {
        PresenceSummary {
            proxy_id: proxy.into(),
            written_unix: 0,
            peer_addr: "127.0.0.1:1".into(),
            agents: vec![AgentSummary {
                host_id: host_id.into(),
                version: String::new(),
                services: vec!["node".into()],
                resources: vec![],
                remote_addr: String::new(),
                connected_unix: connected,
                last_heartbeat_unix: connected,
                announced: vec![AnnouncedResource {
                    kind: "node".into(),
                    name: node.into(),
                    labels: vec![],
                    target: None,
                }],
            }],
        }
    }

    #[test]
    fn a_name_another_proxys_agent_holds_is_refused_here_and_races_go_to_the_first() {
        let r = TunnelRegistry::new("p1".into(), Duration::from_secs(30));
        r.set_remote(&[summary_of("p2", "victim", "prod", 100)]);
        assert!(
            r.vet("attacker", HostRole::Node, vec![ann("node", "PROD")])
                .is_empty(),
            "a name held on another proxy is not taken here"
        );
        assert_eq!(
            r.vet("victim", HostRole::Node, vec![ann("node", "prod")])
                .len(),
            1
        );
        // Announced to two proxies before either saw the other: the first connected is listed.
        connect(&r, "late", "k");
        r.agents().get_mut("late").unwrap().info.resources = vec![ann("node", "prod")];
        let listed: Vec<String> = r.nodes().into_iter().map(|n| n.host_id).collect();
        assert_eq!(
            listed,
            ["victim"],
            "connected at 100 s, before the local one"
        );
        assert_eq!(r.peers_for("victim")[0].proxy_id, "p2");
        assert!(r.peers_for("late").is_empty());
    }

    #[test]
    fn agents_of_a_key_no_longer_trusted_are_named() {
        let r = TunnelRegistry::new("p".into(), Duration::from_secs(30));
        connect(&r, "on-old", "old");
        connect(&r, "on-new", "new");
        let named = |trusted: &[&str]| -> Vec<String> {
            let trusted: Vec<String> = trusted.iter().map(|s| s.to_string()).collect();
            r.signed_outside(&trusted)
                .into_iter()
                .map(|a| a.host_id)
                .collect()
        };
        assert!(
            named(&["new", "old"]).is_empty(),
            "during a rotation both are trusted"
        );
        assert_eq!(named(&["new"]), vec!["on-old"]);
    }
}
