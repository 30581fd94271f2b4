//! Kubernetes access at `https://kube.P` (P: the proxy's public host): the route a TLS
//! connection takes when its SNI is `kube.P` and it asked for no ALPN of Hop's (kubectl offers
//! `h2` and `http/1.1` and cannot set ALPN).
//!
//! This room owns the route's request path (contract B of issue 21): who a connection is
//! ([`conn`]: only a user certificate routed to a kube cluster, `route_to_kube_cluster`; the
//! cluster comes from the certificate, never the request), the per-request decision from the
//! admission snapshot ([`decide`]: admitted on `Route::Kube`, the roles' `kubernetes_labels`
//! allow the cluster's announced labels, the request parsed, the impersonation and the resource
//! allowed), the headers the agent sees ([`headers`]: no client credentials or `Impersonate-*`,
//! exactly one `impersonate-user` and the allowed groups), the agents' HTTP/1.1 connections
//! ([`pool`], keyed by cluster and user), forwarding and the `kube.request` audit event
//! ([`forward`]), upgrades (exec, attach, port-forward, handed to the stream relay, [`hooks`]),
//! moderated exec and attach sessions (held until their moderators join, [`moderated`], and
//! the table of them others join, [`party`]; their course while they run,
//! [`session_moderation`]), and the answers it gives itself as Kubernetes
//! `Status` objects ([`status`]).
//!
//! It never asks the backend per request: the snapshot and the announced clusters are taken
//! again every [`REFRESH`] by [`KubeProxy::run`], which also decides every live connection again
//! and ends those admission now refuses (a lock, a deletion, a role taken away, an expired
//! certificate): the connection closes, and its streams (watches, `logs -f`, exec) end with it.
//! Each live stream (a watch, a log, an exec, attach or port-forward) also keeps what its
//! request was decided on ([`decide::Allowed`]: the request and the impersonation asked for and
//! granted); the sweep decides it again on the new roles and ends the stream alone when they no
//! longer allow that request, or map it to another Kubernetes identity.

pub mod conn;
pub mod decide;
pub mod filter;
pub mod forward;
pub mod headers;
pub mod hooks;
pub mod moderated;
pub mod party;
pub mod pool;
pub mod record;
pub mod session_moderation;
pub mod status;
pub mod stream;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use hop_admission::{Refusal, Snapshot};
use hop_auth::AuthServer;
use hop_auth::caller::Caller;
use tokio::sync::watch;

use crate::admission::UserCert;
use crate::routes::app_http::PublicHost;
use crate::routes::app_http::pool::AgentPools;
use crate::routes::http_conn::HttpDeadlines;
use crate::tunnels::{AgentStream, KubeRoute, TunnelRegistry};

/// How often the snapshot and the announced clusters are taken again, and live connections
/// decided again: a revocation ends a live stream within about this plus the snapshot's
/// rebuild.
pub const REFRESH: Duration = Duration::from_millis(500);

/// What a request is decided on: the admission snapshot (or why there is none) and the
/// announced kube clusters, taken together every [`REFRESH`].
pub struct View {
    pub snapshot: Result<Arc<Snapshot>, Refusal>,
    pub clusters: HashMap<String, KubeRoute>,
}

/// A live connection, as the background sweep decides it again.
struct Live {
    cert: UserCert,
    end: watch::Sender<Option<String>>,
}

/// A live stream, as the background sweep decides it again.
struct LiveStream {
    cert: UserCert,
    decided: decide::Allowed,
    /// The admission a filtered watch consults per item: the sweep puts the newest here.
    admission: Arc<ArcSwap<decide::Admission>>,
    end: watch::Sender<Option<String>>,
}

/// A stream's place among the live ones: its end signal, given up when dropped.
pub struct StreamSlot {
    route: Arc<KubeProxy>,
    id: u64,
    end: watch::Receiver<Option<String>>,
}

impl StreamSlot {
    /// A receiver told when the stream must end, and why.
    pub fn end_signal(&self) -> watch::Receiver<Option<String>> {
        self.end.clone()
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.route
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

/// The kube route's shared state.
pub struct KubeProxy {
    pub(crate) auth: Arc<AuthServer>,
    pub(crate) agents: pool::Agents,
    /// `kube.P`, lowercase.
    server_name: String,
    pub(crate) pools: AgentPools,
    pub(crate) deadlines: HttpDeadlines,
    /// Where exec and attach sessions are recorded (the stream relay's business).
    pub(crate) recordings: Option<Arc<dyn hop_storage::recording::RecordingBackend>>,
    /// The bytes all filtered listings may hold together.
    pub(crate) listing_budget: filter::ListingBudget,
    /// The moderated sessions this proxy relays, as `hop join` finds them.
    pub(crate) parties: Arc<party::KubeParties>,
    /// This proxy's id: the host of the moderated sessions it relays.
    proxy_id: String,
    view: ArcSwap<View>,
    live: Mutex<HashMap<u64, Live>>,
    streams: Mutex<HashMap<u64, LiveStream>>,
    next_live: AtomicU64,
}

impl KubeProxy {
    /// The route for the public host of `web_addr`, reaching clusters through the agents'
    /// tunnels.
    pub fn new(
        auth: Arc<AuthServer>,
        registry: Arc<TunnelRegistry>,
        web_addr: &str,
        deadlines: HttpDeadlines,
        recordings: Option<Arc<dyn hop_storage::recording::RecordingBackend>>,
    ) -> Arc<Self> {
        Self::with_agents(
            auth,
            pool::Agents::Tunnels(registry),
            web_addr,
            deadlines,
            recordings,
        )
    }

    /// The route, reaching clusters through `agents`.
    pub(crate) fn with_agents(
        auth: Arc<AuthServer>,
        agents: pool::Agents,
        web_addr: &str,
        deadlines: HttpDeadlines,
        recordings: Option<Arc<dyn hop_storage::recording::RecordingBackend>>,
    ) -> Arc<Self> {
        let proxy_id = match &agents {
            pool::Agents::Tunnels(registry) => registry.proxy_id().to_string(),
            #[cfg(test)]
            pool::Agents::Direct { .. } => "test-proxy".to_string(),
        };
        let route = Arc::new(Self {
            server_name: server_name(&PublicHost::parse(web_addr)),
            parties: Arc::default(),
            proxy_id,
            view: ArcSwap::from_pointee(View {
                snapshot: Err(Refusal::Unavailable {
                    reason: "not loaded yet".into(),
                }),
                clusters: HashMap::new(),
            }),
            pools: AgentPools::default(),
            live: Mutex::new(HashMap::new()),
            streams: Mutex::new(HashMap::new()),
            next_live: AtomicU64::new(1),
            deadlines,
            recordings,
            listing_budget: filter::ListingBudget::default(),
            auth,
            agents,
        });
        route.refresh();
        route
    }

    /// This proxy's id (the host its moderated sessions' trackers name).
    pub fn proxy_id(&self) -> &str {
        &self.proxy_id
    }

    /// The moderated sessions this proxy relays.
    pub fn parties(&self) -> &Arc<party::KubeParties> {
        &self.parties
    }

    /// `kube.P`: the TLS server name of this route.
    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// Whether a ClientHello's SNI names this route.
    pub fn is_kube_sni(&self, server_name: Option<&str>) -> bool {
        server_name.is_some_and(|s| s.eq_ignore_ascii_case(&self.server_name))
    }

    /// The current view.
    pub fn view(&self) -> arc_swap::Guard<Arc<View>> {
        self.view.load()
    }

    pub(crate) fn view_full(&self) -> Arc<View> {
        self.view.load_full()
    }

    /// Takes the snapshot and the announced clusters again, then ends the live connections
    /// admission now refuses.
    pub fn refresh(&self) {
        let snapshot = self
            .auth
            .admission_snapshot()
            .map_err(|e| self.auth.unavailable(e));
        let clusters = self
            .agents
            .clusters()
            .into_iter()
            .map(|c| (c.name.clone(), c))
            .collect();
        self.view.store(Arc::new(View { snapshot, clusters }));
        self.sweep();
        self.sweep_streams();
    }

    /// Decides every live stream again on the current view, request and impersonation
    /// included; those refused are told to end with the reason (a request the roles no longer
    /// allow is audited as a refusal; admission's refusals are audited by [`Self::sweep`]).
    fn sweep_streams(&self) {
        let view = self.view();
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        streams.retain(|_, s| {
            if s.end.is_closed() {
                return false;
            }
            let Err(why) = self.decide_stream(&view, s) else {
                return true;
            };
            tracing::info!(user = %s.cert.identity.username, reason = %why, "ending a Kubernetes stream: the roles no longer allow it");
            let _ = s.end.send(Some(why));
            false
        });
    }

    /// `Err(reason)` when stream `s` must end on `view`; a cluster whose agent is away for a
    /// moment ends nothing.
    fn decide_stream(&self, view: &View, s: &LiveStream) -> Result<(), String> {
        let Some(cluster) = s.cert.identity.route_to_kube_cluster.as_deref() else {
            return Err("the certificate is not routed to a Kubernetes cluster".into());
        };
        let presented = conn::presented_live(&s.cert, self.auth.now());
        let admission = match decide::admit(&self.auth, view, &presented, cluster) {
            Ok(a) => a,
            Err(decide::Denial::Refused(r)) if !ends_live(&s.cert, &r) => return Ok(()),
            Err(decide::Denial::Refused(r)) => return Err(r.to_string()),
            Err(decide::Denial::UnknownCluster) => return Ok(()),
        };
        let user = &s.cert.identity.username;
        if let Err(e) = decide::still_allowed(&admission, user, &s.decided) {
            let r = &s.decided.request;
            let refusal = Refusal::Denied {
                name: user.clone(),
                reason: format!(
                    "live {} of {}: {e}",
                    r.verb.as_str(),
                    r.resource.as_deref().unwrap_or("a non-resource path")
                ),
            };
            self.auth
                .audit_refusal(hop_admission::Route::Kube, user, &refusal, None);
            return Err(format!("your roles no longer allow this stream: {e}"));
        }
        s.admission.store(Arc::new(admission));
        Ok(())
    }

    /// Registers a live stream of `cert`, decided as `decided` on `admission`.
    pub(crate) fn watch_stream(
        self: &Arc<Self>,
        cert: &UserCert,
        decided: &decide::Allowed,
        admission: Arc<ArcSwap<decide::Admission>>,
    ) -> StreamSlot {
        let (tx, rx) = watch::channel(None);
        let id = self.next_live.fetch_add(1, Ordering::Relaxed);
        let stream = LiveStream {
            cert: cert.clone(),
            decided: decided.clone(),
            admission,
            end: tx,
        };
        self.streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, stream);
        StreamSlot {
            route: self.clone(),
            id,
            end: rx,
        }
    }

    /// How many streams are live (tests, metrics).
    pub fn live_streams(&self) -> usize {
        self.streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Decides every live connection again on the current view; those refused are told to
    /// end, with the refusal as the reason (and it is audited). A cluster whose agent is away
    /// for a moment ends nothing: its requests get 404 until it is back.
    fn sweep(&self) {
        let view = self.view();
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        live.retain(|_, l| {
            let Some(cluster) = l.cert.identity.route_to_kube_cluster.as_deref() else {
                return false;
            };
            let presented = conn::presented_live(&l.cert, self.auth.now());
            match decide::admit(&self.auth, &view, &presented, cluster) {
                Err(decide::Denial::Refused(r)) if ends_live(&l.cert, &r) => {
                    tracing::info!(user = %l.cert.identity.username, kube_cluster = cluster, reason = r.code(), "ending a Kubernetes connection: admission refuses it now");
                    self.auth.audit_refusal(
                        hop_admission::Route::Kube,
                        &l.cert.identity.username,
                        &r,
                        None,
                    );
                    let _ = l.end.send(Some(r.to_string()));
                    false
                }
                _ => !l.end.is_closed(),
            }
        });
    }

    /// Registers a live connection of `cert`; the receiver says when (and why) it must end.
    fn watch_live(&self, cert: &UserCert) -> (u64, watch::Receiver<Option<String>>) {
        let (tx, rx) = watch::channel(None);
        let id = self.next_live.fetch_add(1, Ordering::Relaxed);
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                id,
                Live {
                    cert: cert.clone(),
                    end: tx,
                },
            );
        (id, rx)
    }

    fn forget_live(&self, id: u64) {
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }

    /// How many connections are live (tests, metrics).
    pub fn live_connections(&self) -> usize {
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Refreshes every [`REFRESH`] until shutdown.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(REFRESH) => {}
                _ = hop_platform::signals::until_shutdown(&mut shutdown) => return,
            }
            self.refresh();
        }
    }

    /// Serves one TLS connection whose SNI named `kube.P`, from `caller` (its client
    /// certificate's holder, or anonymous).
    pub async fn serve(
        self: Arc<Self>,
        tls: AgentStream,
        caller: Caller,
        remote: SocketAddr,
        shutdown: watch::Receiver<bool>,
    ) {
        self.serve_io(tls, caller, remote, shutdown).await;
    }

    /// [`Self::serve`] on any stream (tests serve their own TLS). The connection closes when
    /// the background sweep says its certificate may no longer be used.
    pub async fn serve_io<IO>(
        self: Arc<Self>,
        io: IO,
        caller: Caller,
        remote: SocketAddr,
        shutdown: watch::Receiver<bool>,
    ) where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let conn = conn::Conn::new(self.clone(), caller, remote);
        let mut end = conn.end_signal();
        let deadlines = Some(self.deadlines);
        let handler = conn.clone();
        let service = tower::service_fn(move |req| {
            let conn = handler.clone();
            async move { Ok::<_, std::convert::Infallible>(conn.handle(req).await) }
        });
        tokio::select! {
            () = crate::routes::http_conn::serve_service(io, service, deadlines, shutdown) => {}
            () = conn::ended(&mut end) => {
                tracing::debug!(%remote, "Kubernetes connection closed: its certificate may no longer be used");
            }
        }
    }
}

/// `kube.P` for public host `public`.
pub fn server_name(public: &PublicHost) -> String {
    format!("{}.{}", hop_auth::kube_access::KUBE_LABEL, public.host())
}

/// Whether refusal `r` ends a live connection or stream of `cert`: every refusal does, but
/// the expiry of a per-session MFA certificate, whose minute is for starting sessions (they
/// go on after it; new requests are refused, and kubectl's plugin asks for a tap again).
/// The live re-checks decide on [`conn::presented_live`], which already moves such a
/// certificate's expiry past now (so that locks and deletions are still seen); this stays as
/// the second guard of that rule.
fn ends_live(cert: &UserCert, r: &Refusal) -> bool {
    cert.identity.session_mfa.is_none() || !matches!(r, Refusal::Expired { .. })
}
