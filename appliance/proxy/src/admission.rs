//! Admission on the proxy's routes: the decision at a session's start, and the watch that ends
//! a live session once admission would refuse it (a lock, a deletion, a role taken away, a
//! voided certificate, and at expiry when a role asks for `disconnect_expired_cert`).
//!
//! This module owns [`UserCert`] (what a route knows of the user certificate it verified),
//! [`admit`] (the decision plus the refusal's audit event), and [`LiveWatch`] (a task that asks
//! again every [`RECHECK`] and shuts the session's sockets down when the answer turns to no).
//! A session relayed by a tokio task is ended by shutting its sockets down, through duplicated
//! descriptors; one a data-plane worker keeps is ended through its `SessionStop`, which the
//! worker's relay watches (no duplicates: a kept session holds two descriptors).
//!
//! [`sweep_agents`] does the same for connected agents: a lock on their server id, or a host
//! certificate signed by a key a CA rotation dropped (`standby`), disconnects them. A live user
//! session is not re-checked against the rotation: its certificate's signer is not kept (new
//! connections of a dropped key are refused by `identify.rs`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hop_admission::{Admitted, Refusal, Route, SessionTarget};
use hop_ca::Identity;
use hop_platform::clock;

use hop_auth::AuthServer;
use hop_auth::admission::Presented;
use hop_auth::audit::EventKind;

/// How often a live session looks at the snapshot: the revocation latency is at most this plus
/// the time a snapshot takes to rebuild.
pub const RECHECK: Duration = Duration::from_secs(1);

/// A live session is decided again when the snapshot changed, at its certificate's expiry when
/// that ends it, and at least this often (a snapshot that stops changing still ages, which
/// matters in strict locking mode).
pub const REDECIDE_AT_LEAST: Duration = Duration::from_secs(30);

/// A verified user certificate as a route holds it.
#[derive(Debug, Clone)]
pub struct UserCert {
    pub identity: Identity,
    pub issued_at: SystemTime,
    pub expires: SystemTime,
}

impl UserCert {
    /// The user certificate `caller` presented, if it presented one.
    pub fn of(caller: hop_auth::caller::Caller) -> Option<Self> {
        match caller {
            hop_auth::caller::Caller::User {
                identity,
                issued_at,
                expires,
                ..
            } => Some(Self {
                identity: *identity,
                issued_at,
                expires,
            }),
            _ => None,
        }
    }

    pub(crate) fn presented<'a>(&'a self, login: Option<&'a str>) -> Presented<'a> {
        self.presented_for(login, None)
    }

    /// As [`Self::presented`], with the target the session is for (a per-session MFA
    /// certificate is admitted only for its own target: node and login, database, cluster).
    pub(crate) fn presented_for<'a>(
        &'a self,
        login: Option<&'a str>,
        target: Option<SessionTarget<'a>>,
    ) -> Presented<'a> {
        Presented {
            identity: &self.identity,
            issued_at: self.issued_at,
            expires: self.expires,
            login,
            target,
        }
    }
}

/// Decides whether `cert` may start a session on `route` (as `login`, on SSH routes); a
/// refusal is audited with the route and its reason code.
pub fn admit(
    auth: &AuthServer,
    cert: &UserCert,
    login: Option<&str>,
    route: Route,
    remote: SocketAddr,
) -> Result<Admitted, Refusal> {
    admit_presented(auth, &cert.presented(login), route, remote)
}

/// [`admit`] for an SSH session to node `target` as `login`.
pub fn admit_ssh(
    auth: &AuthServer,
    cert: &UserCert,
    (login, target): (&str, &str),
    route: Route,
    remote: SocketAddr,
) -> Result<Admitted, Refusal> {
    let target = SessionTarget::Node {
        node: target,
        login,
    };
    admit_presented(
        auth,
        &cert.presented_for(Some(login), Some(target)),
        route,
        remote,
    )
}

/// [`admit`] for a session to `target` (a database, a kube cluster): a per-session MFA
/// certificate is admitted only for its own target.
pub fn admit_target(
    auth: &AuthServer,
    cert: &UserCert,
    target: &hop_ca::SessionMfaTarget,
    route: Route,
    remote: SocketAddr,
) -> Result<Admitted, Refusal> {
    let target = hop_auth::admission::session_target(target);
    admit_presented(auth, &cert.presented_for(None, Some(target)), route, remote)
}

/// [`admit`] for a certificate the caller only borrows.
fn admit_presented(
    auth: &AuthServer,
    presented: &Presented<'_>,
    route: Route,
    remote: SocketAddr,
) -> Result<Admitted, Refusal> {
    auth.admit(presented, route).inspect_err(|refusal| {
        auth.audit_refusal(route, &presented.identity.username, refusal, Some(remote));
    })
}

/// Decides whether agent `host_id` may use `route`; a refusal is audited.
pub fn admit_agent(
    auth: &AuthServer,
    host_id: &str,
    expires: SystemTime,
    route: Route,
    remote: SocketAddr,
) -> Result<Admitted, Refusal> {
    auth.admit_agent(host_id, expires, route)
        .inspect_err(|refusal| {
            auth.audit_refusal(route, &format!("host {host_id}"), refusal, Some(remote));
        })
}

/// Watches a live session; dropping it stops the watch.
#[derive(Debug)]
pub struct LiveWatch {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LiveWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a live session is, for the watch.
pub struct Live {
    pub cert: UserCert,
    pub login: Option<String>,
    /// The session's target: node and login, database, kube cluster (what a per-session MFA
    /// mark is checked against).
    pub target: Option<hop_ca::SessionMfaTarget>,
    pub route: Route,
    pub remote: SocketAddr,
    pub session_id: String,
    /// End the session at the certificate's expiry (a role's `disconnect_expired_cert`).
    pub disconnect_expired_cert: bool,
    /// Duplicates of the session's sockets (client side and agent side).
    pub sockets: Vec<socket2::Socket>,
    /// Ends a session a data-plane worker relays (which needs no duplicates).
    pub stop: Option<crate::relay::SessionStop>,
    /// The agent serving the session (a lock on its server id ends the session too); `None`
    /// when the proxy reaches the target itself (an agentless node).
    pub agent: Option<String>,
}

impl LiveWatch {
    /// Starts watching `live`; when admission refuses it, its sockets are shut down and a
    /// `session.terminated` event names the reason.
    pub fn start(auth: Arc<AuthServer>, live: Live) -> Self {
        let task = tokio::spawn(async move {
            let mut last: Option<(Arc<hop_admission::Snapshot>, std::time::Instant)> = None;
            // The first decision at once: a lock that landed while the session was being set up
            // (the agent's dial, a database's start-up) ends it before it has run a second.
            let mut recheck = tokio::time::interval(RECHECK);
            recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                recheck.tick().await;
                let snap = match auth.admission_snapshot() {
                    Ok(s) => s,
                    Err(e) => {
                        let why = auth.unavailable(e);
                        end(&auth, &live, &why);
                        return;
                    }
                };
                let expiring = live.disconnect_expired_cert && auth.now() >= live.cert.expires;
                let unchanged = last.as_ref().is_some_and(|(s, at)| {
                    Arc::ptr_eq(s, &snap) && clock::since(*at) < REDECIDE_AT_LEAST
                });
                if unchanged && !expiring {
                    continue;
                }
                last = Some((snap.clone(), clock::now()));
                let target = live
                    .target
                    .as_ref()
                    .map(hop_auth::admission::session_target);
                let mut presented = live.cert.presented_for(live.login.as_deref(), target);
                if !live.disconnect_expired_cert {
                    presented = presented.outliving_expiry(auth.now());
                }
                let refusal = match auth.admit_on(&snap, &presented, live.route) {
                    Ok(_) => match agent_refusal(&auth, &live) {
                        Some(r) => r,
                        None => continue,
                    },
                    Err(r) => r,
                };
                end(&auth, &live, &refusal);
                return;
            }
        });
        Self { task }
    }
}

/// Why the agent serving `live` may no longer serve it (a lock on its server id), if so.
fn agent_refusal(auth: &AuthServer, live: &Live) -> Option<Refusal> {
    agent_locked(auth, live.agent.as_deref()?)
}

/// Why connected agent `host_id` may no longer be connected, if so. Its certificate's expiry
/// was the TLS layer's business when it connected; this asks about locks.
fn agent_locked(auth: &AuthServer, host_id: &str) -> Option<Refusal> {
    let still_valid = auth.now() + Duration::from_secs(3600);
    auth.admit_agent(host_id, still_valid, Route::Tunnel).err()
}

/// Ends a live session admission now refuses.
fn end(auth: &AuthServer, live: &Live, refusal: &Refusal) {
    tracing::info!(
        user = %live.cert.identity.username,
        route = live.route.name(),
        reason = refusal.code(),
        "ending a live session: {refusal}"
    );
    for s in &live.sockets {
        let _ = s.shutdown(std::net::Shutdown::Both);
    }
    if let Some(stop) = &live.stop {
        stop.stop();
    }
    auth.emit(
        auth.event(EventKind::SessionTerminated, &live.cert.identity.username)
            .remote(Some(live.remote))
            .field("route", live.route.name())
            .field("session_id", live.session_id.clone())
            .field("reason", refusal.code())
            .failed(EventKind::SessionTerminated, refusal.to_string()),
    );
}

/// A duplicate of `sock`'s descriptor, for [`Live::sockets`].
pub fn dup_socket(sock: &impl std::os::fd::AsFd) -> Option<socket2::Socket> {
    socket2::SockRef::from(sock).try_clone().ok()
}

/// A duplicate of the TCP socket under a TLS connection the proxy terminated.
pub fn dup_stream(stream: &super::tunnels::AgentStream) -> Option<socket2::Socket> {
    dup_socket(stream.get_ref().0.get_ref())
}

/// Duplicates of both legs of a relayed session (client and agent), for [`Live::sockets`].
pub fn both_legs(
    client: &super::tunnels::AgentStream,
    agent: &super::tunnels::AgentStream,
) -> Vec<socket2::Socket> {
    [dup_stream(client), dup_stream(agent)]
        .into_iter()
        .flatten()
        .collect()
}

/// Adds admission to every request of the web and gRPC API made with a user certificate
/// (every call, not only the first on a connection): a refusal is answered `PERMISSION_DENIED`
/// (gRPC) or 403 with the reason, and audited on the `admin_api` route.
pub fn api_admission(router: axum::Router, auth: Arc<AuthServer>) -> axum::Router {
    router.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let auth = auth.clone();
            async move {
                match refuse_api_call(&auth, &req) {
                    Some(response) => response,
                    None => next.run(req).await,
                }
            }
        },
    ))
}

/// The refusal for an API call admission turns down, if it does: a user's on the admin API
/// route, an agent's (a locked server id) on the agent API route.
fn refuse_api_call(
    auth: &AuthServer,
    req: &axum::extract::Request,
) -> Option<axum::response::Response> {
    use hop_auth::caller::Caller;
    let refusal = match req.extensions().get::<Caller>()? {
        Caller::User {
            identity,
            remote,
            expires,
            issued_at,
        } => {
            // Borrowed, not copied: this runs for every API request.
            let presented = Presented {
                identity,
                issued_at: *issued_at,
                expires: *expires,
                login: None,
                target: None,
            };
            admit_presented(auth, &presented, Route::AdminApi, *remote).err()?
        }
        Caller::Host {
            host_id,
            remote,
            expires,
            ..
        } => admit_agent(auth, host_id, *expires, Route::AgentApi, *remote).err()?,
        Caller::LocalAdmin | Caller::Anonymous { .. } => return None,
    };
    let grpc = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    Some(if grpc {
        tonic::Status::permission_denied(refusal.to_string()).into_http()
    } else {
        use axum::response::IntoResponse;
        (axum::http::StatusCode::FORBIDDEN, refusal.to_string()).into_response()
    })
}

/// Every [`RECHECK`], disconnects the connected agents admission now refuses (a lock on their
/// server id), and those whose host certificate a CA rotation no longer trusts (`standby`
/// dropped the key that signed it): their resources leave listings at once and their renewals
/// are refused.
pub async fn sweep_agents(
    auth: Arc<AuthServer>,
    registry: Arc<super::tunnels::TunnelRegistry>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(RECHECK) => {}
            _ = hop_platform::signals::until_shutdown(&mut shutdown) => return,
        }
        // Keeps the snapshot (and the age `/readyz` reports) current even when nobody asks,
        // and decides on it for every agent: one backend round trip per sweep, not per agent.
        let snap = auth.admission_snapshot();
        if let Err(e) = &snap {
            tracing::warn!(error = %e, "cannot build the admission snapshot");
        }
        let still_valid = auth.now() + Duration::from_secs(3600);
        for agent in registry.list() {
            // Expiry is the TLS layer's business at connect time; this asks about locks.
            let refusal = match &snap {
                Ok(snap) => auth
                    .admit_agent_on(snap, &agent.host_id, still_valid, Route::Tunnel)
                    .err(),
                // Without a snapshot, each agent is decided as a single one is (refused as
                // unavailable once the kept snapshot is too old).
                Err(_) => agent_locked(&auth, &agent.host_id),
            };
            if let Some(refusal) = refusal {
                evict_agent(
                    &auth,
                    &registry,
                    &agent,
                    refusal.code(),
                    &refusal.to_string(),
                );
            }
        }
        let trusted = super::rotation::trusted_host_pins(&auth);
        let closed = registry.drop_parked_outside(&trusted);
        if closed > 0 {
            tracing::info!(
                closed,
                "closed idle agent data connections whose certificate's host CA key is no longer trusted"
            );
        }
        for agent in registry.signed_outside(&trusted) {
            let why = "the host CA key that signed the agent's certificate is no longer trusted (CA rotation); the agent must join again";
            evict_agent(&auth, &registry, &agent, CA_UNTRUSTED, why);
        }
    }
}

/// The reason code of an agent disconnected because a CA rotation dropped its certificate's key.
pub const CA_UNTRUSTED: &str = "ca_untrusted";

/// Disconnects a connected agent and audits why (`code`, `why`).
fn evict_agent(
    auth: &AuthServer,
    registry: &super::tunnels::TunnelRegistry,
    agent: &super::tunnels::AgentInfo,
    code: &str,
    why: &str,
) {
    tracing::info!(host_id = %agent.host_id, reason = code, "disconnecting an agent: {why}");
    registry.evict(&agent.host_id, why);
    auth.emit(
        auth.event(
            EventKind::SessionTerminated,
            &format!("host {}", agent.host_id),
        )
        .remote(Some(agent.remote))
        .field("route", Route::Tunnel.name())
        .field("server_id", agent.host_id.clone())
        .field("reason", code.to_string())
        .failed(EventKind::SessionTerminated, why.to_string()),
    );
}

/// Audits each announcement the registry refuses (a kind the agent's role does not serve, or
/// a name another agent holds). The registry is reachable from Auth (through its metrics), so
/// this holds Auth weakly: a cycle would keep the databases from closing at shutdown.
pub fn audit_refused_announcements(auth: &Arc<AuthServer>) -> super::tunnels::RefusedAnnouncement {
    let auth = Arc::downgrade(auth);
    Arc::new(move |host_id: &str, why: &str| {
        let Some(auth) = auth.upgrade() else { return };
        auth.emit(
            auth.event(EventKind::AccessRefused, &format!("host {host_id}"))
                .field("route", Route::Tunnel.name())
                .field("server_id", host_id.to_string())
                .field("reason", "announcement_refused")
                .failed(EventKind::AccessRefused, why.to_string()),
        );
    })
}
