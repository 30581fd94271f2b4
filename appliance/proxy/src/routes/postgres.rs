//! PostgreSQL clients on the one port: `psql "sslmode=verify-full sslcert=… host=PROXY"`
//! straight to the proxy, and `hop proxy db` (ALPN `hop-postgres`).
//!
//! This module owns the client side of a database session:
//! - before TLS, on connections the data plane classified as PostgreSQL: SSLRequest is answered
//!   `S` (then TLS with the user's database certificate), GSSENCRequest `N`, a plaintext
//!   StartupMessage gets a FATAL error saying to use TLS, and a plaintext CancelRequest is routed;
//! - after TLS: the StartupMessage is read, the database user and database name in it are checked
//!   against the user's roles (case-exact) before any byte reaches an agent, and a refusal is a
//!   FATAL ErrorResponse the client prints;
//! - then the Dial to the db agent, the agent's start-up answers passed on with the cancel key
//!   replaced by one of the proxy's ([`super::db_cancel`]), and a plain byte relay.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hop_admission::{Admitted, Refusal, Route};
use hop_ca::Identity;
use hop_protocols::postgres::{self, BackendMessage, StartupPacket};
use hop_rbac::AccessDenied;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::db_cancel::{CancelGuard, CancelRegistry, CancelTarget};
use super::dial::{
    AgentHold, KeptSessions, dial_agent, dial_agent_bounded, kept_agent_leg, relay_on_worker,
};
use crate::admission::{Live, LiveWatch, UserCert, admit_target, both_legs};
use crate::relay::on_worker::{SessionAnswer, SessionRequest};
use crate::tunnels::{AgentStream, DbRoute, TunnelRegistry};
use hop_api::dial::db::{DbCancel, DbDial};
use hop_auth::AuthServer;
use hop_auth::audit::EventKind;
use hop_auth::caller::Caller;
use hop_net::pg_wire::{
    self as wire, SQLSTATE_DENIED, SQLSTATE_PROTOCOL, SQLSTATE_UNAVAILABLE, fatal,
};
use hop_net::tunnel::FramedStream;

/// What database sessions need from the proxy.
#[derive(Debug, Clone)]
pub struct DbRoutes {
    pub registry: Arc<TunnelRegistry>,
    pub auth: Arc<AuthServer>,
    pub cancels: Arc<CancelRegistry>,
    /// How long a client has for its startup packet, or MySQL's for its handshake response
    /// (`proxy_service.db_startup_timeout`).
    pub startup_timeout: Duration,
}

/// What became of a connection before TLS.
pub enum BeforeTls {
    /// The client asked for TLS and was told `S`: accept TLS next.
    Tls,
    /// Served (a cancel) or refused; close.
    Done,
}

/// Reads one startup-phase packet exactly (never past it: TLS may follow).
async fn read_packet_exact(
    s: &mut TcpStream,
    deadline: Duration,
) -> Result<Vec<u8>, wire::WireError> {
    let read = async {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).await?;
        let n = u32::from_be_bytes(len) as usize;
        if !(8..=postgres::MAX_STARTUP_LEN).contains(&n) {
            return Err(wire::WireError::Startup(if n < 8 {
                postgres::StartupError::TooShort { len: n as u32 }
            } else {
                postgres::StartupError::Oversized { len: n as u32 }
            }));
        }
        let mut buf = vec![0u8; n];
        buf[..4].copy_from_slice(&len);
        s.read_exact(&mut buf[4..]).await?;
        Ok(buf)
    };
    tokio::time::timeout(deadline, read)
        .await
        .map_err(|_| wire::WireError::Timeout(deadline))?
}

/// The plaintext part of a PostgreSQL connection the data plane handed over.
pub async fn before_tls(s: &mut TcpStream, remote: SocketAddr, routes: &DbRoutes) -> BeforeTls {
    // A client may ask for GSS encryption first; after our `N` it asks for TLS.
    for _ in 0..2 {
        let packet = match read_packet_exact(s, routes.startup_timeout).await {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(%remote, error = %e, "PostgreSQL client sent no usable startup packet");
                return BeforeTls::Done;
            }
        };
        match wire::startup_packet(&packet) {
            Ok(StartupPacket::SslRequest) => {
                return if s.write_all(b"S").await.is_ok() {
                    BeforeTls::Tls
                } else {
                    BeforeTls::Done
                };
            }
            Ok(StartupPacket::GssEncRequest) => {
                if s.write_all(b"N").await.is_err() {
                    return BeforeTls::Done;
                }
            }
            Ok(StartupPacket::Cancel(c)) => {
                cancel(routes, c.process_id, c.secret_key, remote).await;
                return BeforeTls::Done;
            }
            Ok(StartupPacket::Startup(_)) => {
                routes.auth.metrics().db_sessions_refused.inc();
                let _ = s
                    .write_all(&fatal(
                        SQLSTATE_DENIED,
                        "Hop accepts PostgreSQL connections over TLS only: connect with sslmode=verify-full and the certificate of `hop db login` (`hop db config NAME` prints the options)",
                    ))
                    .await;
                return BeforeTls::Done;
            }
            Err(e) => {
                let _ = s.write_all(&fatal(SQLSTATE_PROTOCOL, &e.to_string())).await;
                return BeforeTls::Done;
            }
        }
    }
    BeforeTls::Done
}

/// Routes a CancelRequest to the agent of the session it names; a key of no session here goes
/// to the other proxies of the cluster (a load balancer may send a cancel to another appliance
/// than its session's). Unknown keys are ignored, as PostgreSQL does (the client learns nothing
/// either way).
async fn cancel(routes: &DbRoutes, process_id: u32, key: &[u8], remote: SocketAddr) {
    if !cancel_here(routes, process_id, key, remote).await {
        crate::peering::forward_cancel(&routes.registry, process_id, key);
    }
}

/// Routes a CancelRequest to a session of this proxy; false when none has that key.
pub(crate) async fn cancel_here(
    routes: &DbRoutes,
    process_id: u32,
    key: &[u8],
    remote: SocketAddr,
) -> bool {
    let Some(target) = routes.cancels.find(process_id, key) else {
        tracing::debug!(%remote, "cancel request for no live session here");
        return false;
    };
    routes.auth.metrics().db_cancels.inc();
    let mut id = [0u8; 16];
    rand::fill(&mut id[..]);
    let what = format!("database {:?}", target.dial.service);
    let t = target.dial.to_target();
    match dial_agent(&routes.registry, &target.host_id, &what, id, &t, remote).await {
        Ok(_) => tracing::debug!(%remote, db = %target.dial.service, "query cancel sent"),
        Err(e) => tracing::info!(%remote, error = %e, "query cancel could not be delivered"),
    }
    true
}

/// A database session over TLS whose TLS the control plane holds (a client without a
/// certificate, or TLS the control plane terminated). Once the database has answered the
/// start-up, the session's bytes move on a worker's fast path when it can take them
/// (`crate::relay`).
pub async fn serve(
    mut client: AgentStream,
    caller: Caller,
    remote: SocketAddr,
    routes: DbRoutes,
    fast_path: Option<(&crate::relay::RelayHandle, usize)>,
) {
    let mut buf = Vec::new();
    let len = match wire::read_startup(&mut client, &mut buf, routes.startup_timeout).await {
        Ok(n) => n,
        Err(e) => {
            tracing::debug!(%remote, error = %e, "no startup message");
            return;
        }
    };
    let opened = match open(&routes, caller, remote, buf.get(..len).unwrap_or_default()).await {
        Ok(o) => o,
        Err(last) => {
            let _ = client.write_all(&last).await;
            return;
        }
    };
    if client.write_all(&opened.to_client).await.is_err() {
        return;
    }
    buf.drain(..len);
    let metrics = routes.auth.metrics();
    let _watch = LiveWatch::start(
        routes.auth.clone(),
        opened.live(both_legs(&client, &opened.agent)),
    );
    let moved = crate::relay::run_session(
        fast_path,
        FramedStream::with_pending(client, buf),
        FramedStream::with_pending(opened.agent, opened.from_agent),
        opened.idle,
        remote,
        metrics,
    )
    .await;
    metrics.db_sessions_active.dec();
    if let Err(e) = moved {
        tracing::debug!(db = %opened.service, error = %e, "database session ended with an error");
    }
    drop((opened.agent_hold, opened.cancel_guard));
}

/// Answers a worker that keeps a PostgreSQL session: the same decision, Dial and start-up as
/// [`serve`], with the start-up answers and the agent's leg sent to the worker, which relays.
pub async fn serve_kept(
    req: SessionRequest,
    routes: DbRoutes,
    kept: KeptSessions,
    hold: impl Send + 'static,
) {
    let SessionRequest {
        opening,
        peer_cert,
        remote,
        answer,
        ..
    } = req;
    let caller = (kept.identify)(&peer_cert, remote).unwrap_or(Caller::Anonymous {
        remote: Some(remote),
    });
    let opened = open(&routes, caller, remote, &opening).await;
    // Read: not held for the session's life.
    drop((opening, peer_cert));
    let opened = match opened {
        Ok(o) => o,
        Err(to_client) => {
            let _ = answer.send(SessionAnswer::Refused { to_client });
            return;
        }
    };
    let PgOpened {
        agent,
        from_agent,
        agent_hold,
        to_client,
        cancel_guard,
        idle,
        ref service,
        ..
    } = opened;
    let what = format!("database {service:?}");
    let agent = FramedStream::with_pending(agent, from_agent);
    let metrics = routes.auth.metrics();
    let leg = match kept_agent_leg(agent, &what, remote) {
        Ok(leg) => leg,
        Err(words) => {
            metrics.db_sessions_active.dec();
            let to_client = fatal(SQLSTATE_UNAVAILABLE, &words);
            let _ = answer.send(SessionAnswer::Refused { to_client });
            return;
        }
    };
    let stop = crate::relay::SessionStop::default();
    let watched = Live {
        stop: Some(stop.clone()),
        ..opened_live(&opened.live, Vec::new())
    };
    let _watch = LiveWatch::start(routes.auth.clone(), watched);
    let moved = relay_on_worker(answer, leg, to_client, (idle, stop), &routes.auth).await;
    metrics.db_sessions_active.dec();
    if let Err(e) = moved {
        tracing::debug!(db = %service, error = %e, "database session ended with an error");
    }
    drop((hold, agent_hold, cancel_guard));
}

/// A database session past the database's start-up (counted in `db_sessions_active` until its
/// owner ends it).
struct PgOpened {
    agent: AgentStream,
    /// What the agent sent after the start-up.
    from_agent: Vec<u8>,
    agent_hold: AgentHold,
    /// The database's start-up answers for the client, the cancel key replaced by the proxy's.
    to_client: Vec<u8>,
    cancel_guard: Option<CancelGuard>,
    idle: Option<Duration>,
    service: String,
    live: PgLive,
}

/// What the live watch needs of a database session, but its sockets.
struct PgLive {
    cert: UserCert,
    /// The database, user and name the session is for (a per-session MFA mark's target).
    target: hop_ca::SessionMfaTarget,
    session_id: [u8; 16],
    host_id: String,
    disconnect_expired_cert: bool,
    remote: SocketAddr,
}

impl PgOpened {
    fn live(&self, sockets: Vec<socket2::Socket>) -> Live {
        opened_live(&self.live, sockets)
    }
}

fn opened_live(l: &PgLive, sockets: Vec<socket2::Socket>) -> Live {
    Live {
        sockets,
        stop: None,
        login: None,
        target: Some(l.target.clone()),
        route: Route::Postgres,
        remote: l.remote,
        session_id: hex::encode(l.session_id),
        disconnect_expired_cert: l.disconnect_expired_cert,
        agent: Some(l.host_id.clone()),
        cert: l.cert.clone(),
    }
}

/// Decides a database session from its startup packet, dials the db agent and passes the
/// database's start-up; a refusal or failure is `Err` with what the client is told last (may
/// be empty: a cancel request is served and answered with nothing).
async fn open(
    routes: &DbRoutes,
    caller: Caller,
    remote: SocketAddr,
    packet: &[u8],
) -> Result<PgOpened, Vec<u8>> {
    let (db_user, db_name) = match wire::startup_packet(packet) {
        Ok(StartupPacket::Startup(m)) => (
            m.user().to_string(),
            m.database().unwrap_or(m.user()).to_string(),
        ),
        Ok(StartupPacket::Cancel(c)) => {
            // libpq 17 sends cancels over TLS.
            let key = c.secret_key.to_vec();
            cancel(routes, c.process_id, &key, remote).await;
            return Err(Vec::new());
        }
        Ok(StartupPacket::SslRequest | StartupPacket::GssEncRequest) => {
            return Err(fatal(
                SQLSTATE_PROTOCOL,
                "encryption requested twice on one connection",
            ));
        }
        Err(e) => return Err(fatal(SQLSTATE_PROTOCOL, &e.to_string())),
    };
    let refuse = |identity: Option<&Identity>, service: &str, e: &str| {
        routes.auth.metrics().db_sessions_refused.inc();
        if let Some(id) = identity {
            routes.auth.emit(
                routes
                    .auth
                    .event(EventKind::DbSessionStart, &id.username)
                    .remote(Some(remote))
                    .field("db_service", service.to_string())
                    .field("db_user", db_user.clone())
                    .field("db_name", db_name.clone())
                    .failed(EventKind::DbSessionStart, e),
            );
        }
        fatal(SQLSTATE_DENIED, e)
    };
    let Some(cert) = UserCert::of(caller) else {
        return Err(refuse(
            None,
            "",
            "Hop needs your database certificate: run `hop db login NAME` and connect with the sslcert and sslkey it prints (`hop db config NAME`)",
        ));
    };
    let identity = cert.identity.clone();
    let Some(service) = identity
        .route_to_database
        .as_ref()
        .map(|r| r.service.clone())
    else {
        return Err(refuse(
            Some(&identity),
            "",
            "this certificate is not for a database: run `hop db login NAME` and use the certificate it prints",
        ));
    };
    let session = session_target(&service, &db_user, &db_name);
    let (route, admitted) = check(routes, &cert, (&service, &db_user, &db_name), remote)
        .map_err(|e| refuse(Some(&identity), &service, &e.to_string()))?;
    let session_id = *hop_api::ids::time_ordered(hop_platform::clock::wall()).as_bytes();
    let dial = DbDial {
        service: service.clone(),
        user: identity.username.clone(),
        db_user,
        db_name,
        session_id: hex::encode(session_id),
        client_addr: remote.to_string(),
        cancel: None,
        mysql: None,
        db_names: None,
    };
    let what = format!("database {service:?}");
    let (agent, agent_hold) = dial_agent_bounded(
        &routes.registry,
        &route.host_id,
        &what,
        session_id,
        &dial.to_target(),
        remote,
    )
    .await
    .map_err(|e| {
        // The agent reported its own failure (and audited it); say it to the client.
        routes.auth.metrics().db_sessions_refused.inc();
        fatal(SQLSTATE_UNAVAILABLE, &e.to_string())
    })?;
    let (mut agent, mut from_agent) = agent.into_inner();
    let target = CancelTarget {
        host_id: route.host_id.clone(),
        dial,
    };
    let mut to_client = Vec::new();
    // The database's start-up under the start-up deadline too: a stalled agent or database
    // must not hold the session (and the client's connection) forever.
    let deadline = routes.startup_timeout;
    let started = tokio::time::timeout(deadline, async {
        agent.write_all(packet).await.map_err(|_| ())?;
        start_up(&mut agent, &mut from_agent, &mut to_client, routes, target).await
    })
    .await;
    let cancel_guard = match started {
        Ok(Ok(guard)) => guard,
        Ok(Err(())) => return Err(to_client),
        Err(_) => {
            routes.auth.metrics().db_sessions_refused.inc();
            return Err(fatal(
                SQLSTATE_UNAVAILABLE,
                &format!("the database did not finish its start-up within {deadline:?}"),
            ));
        }
    };
    let metrics = routes.auth.metrics();
    metrics.db_sessions.inc();
    metrics.db_sessions_active.inc();
    let checker = admitted.checker();
    Ok(PgOpened {
        agent,
        from_agent,
        agent_hold,
        to_client,
        cancel_guard,
        idle: checker.client_idle_timeout(),
        service,
        live: PgLive {
            cert,
            target: session,
            session_id,
            host_id: route.host_id,
            disconnect_expired_cert: checker.disconnect_expired_cert(),
            remote,
        },
    })
}

/// Why the proxy refuses a database session before dialing the agent; the words are the
/// client's error message.
#[derive(Debug, thiserror::Error)]
pub enum DbRefusal {
    /// Admission said no (locked user, expired certificate, …).
    #[error(transparent)]
    Admission(#[from] Refusal),
    #[error(
        "database {service:?} is not available: no connected agent serves it (`hop db ls` lists the databases)"
    )]
    NotServed { service: String },
    /// The client spoke another protocol than the database's.
    #[error("database {service:?} speaks {speaks}, not {asked}")]
    OtherProtocol {
        service: String,
        speaks: String,
        asked: &'static str,
    },
    /// The roles do not allow this database user or name there.
    #[error("access to database {service:?} denied: {source}")]
    Denied {
        service: String,
        #[source]
        source: AccessDenied,
    },
}

/// What a database session is for: the service, and the user and name the client asked for.
pub fn session_target(service: &str, db_user: &str, db_name: &str) -> hop_ca::SessionMfaTarget {
    hop_ca::SessionMfaTarget::Database {
        db_service: service.to_string(),
        db_user: db_user.to_string(),
        db_name: db_name.to_string(),
    }
}

/// The proxy's RBAC decision for one connection to `service` as `db_user` on `db_name`; the
/// refusal is the client's error message.
fn check(
    routes: &DbRoutes,
    cert: &UserCert,
    (service, db_user, db_name): (&str, &str, &str),
    remote: SocketAddr,
) -> Result<(DbRoute, Admitted), DbRefusal> {
    let (route, admitted) = find_route(
        routes,
        cert,
        (service, db_user, db_name),
        Route::Postgres,
        remote,
    )?;
    if route.protocol() != "postgres" {
        return Err(DbRefusal::OtherProtocol {
            service: service.to_string(),
            speaks: route.protocol().to_string(),
            asked: "PostgreSQL",
        });
    }
    check_roles(&admitted, &route, service, db_user, db_name)?;
    Ok((route, admitted))
}

/// Admission for `cert` on the database `route` for a session to `service` as `db_user` on
/// `db_name` (a per-session MFA certificate is admitted for its own target only), then a
/// connected agent serving `service`.
pub fn find_route(
    routes: &DbRoutes,
    cert: &UserCert,
    (service, db_user, db_name): (&str, &str, &str),
    route: Route,
    remote: SocketAddr,
) -> Result<(DbRoute, Admitted), DbRefusal> {
    let target = session_target(service, db_user, db_name);
    let admitted = admit_target(&routes.auth, cert, &target, route, remote)?;
    let found = routes
        .registry
        .databases()
        .into_iter()
        .find(|d| d.name == service)
        .ok_or_else(|| DbRefusal::NotServed {
            service: service.to_string(),
        })?;
    Ok((found, admitted))
}

/// The roles' decision on `db_user` and `db_name` (case-exact) at the database's labels.
pub fn check_roles(
    admitted: &Admitted,
    route: &DbRoute,
    service: &str,
    db_user: &str,
    db_name: &str,
) -> Result<(), DbRefusal> {
    admitted
        .checker()
        .check_database(&route.labels, db_name, db_user)
        .map_err(|source| DbRefusal::Denied {
            service: service.to_string(),
            source,
        })
}

/// Passes the agent's start-up answers to the client until the session is ready, replacing the
/// database's cancel key with one of the proxy's. `Ok(None)`: ready without a cancel key.
/// `Err`: the session ended during start-up (the client has the error, if there was one).
async fn start_up<A, C>(
    agent: &mut A,
    from_agent: &mut Vec<u8>,
    client: &mut C,
    routes: &DbRoutes,
    mut target: CancelTarget,
) -> Result<Option<CancelGuard>, ()>
where
    A: AsyncRead + Unpin,
    C: AsyncWrite + Unpin,
{
    let mut guard = None;
    let mut out = Vec::new();
    loop {
        let len = wire::read_backend(agent, from_agent).await.map_err(|e| {
            tracing::debug!(error = %e, "database session ended during start-up");
        })?;
        let msg = wire::backend_message(from_agent.get(..len).unwrap_or_default()).map_err(drop)?;
        let mut ready = false;
        match msg {
            BackendMessage::BackendKeyData {
                process_id,
                secret_key,
            } => {
                target.dial.cancel = Some(DbCancel {
                    process_id,
                    secret_key: hex::encode(secret_key),
                });
                let (pid, key, g) = routes.cancels.register(target.clone(), secret_key.len());
                guard = Some(g);
                postgres::encode_backend_key_data(pid, &key, &mut out).map_err(drop)?;
            }
            BackendMessage::ReadyForQuery(_) => {
                ready = true;
                out.extend_from_slice(from_agent.get(..len).unwrap_or_default());
            }
            BackendMessage::ErrorResponse(_) => {
                out.extend_from_slice(from_agent.get(..len).unwrap_or_default());
                let _ = client.write_all(&out).await;
                return Err(());
            }
            _ => out.extend_from_slice(from_agent.get(..len).unwrap_or_default()),
        }
        from_agent.drain(..len);
        if ready {
            client.write_all(&out).await.map_err(drop)?;
            return Ok(guard);
        }
    }
}
