//! MySQL/MariaDB clients through `hop proxy db` (ALPN `hop-mysql`, TLS with the user's database
//! certificate).
//!
//! MySQL's server speaks first and its TLS starts inside the protocol, so the proxy is the
//! server the client meets: it sends its own greeting (offering no TLS: the TLS is the proxy
//! leg's), reads the client's HandshakeResponse, checks the database user and schema in it
//! against the user's roles (case-exact) before any byte reaches an agent, and answers a refusal
//! with an ERR packet the client prints. Otherwise it asks the db agent to log in on the client's
//! behalf (with the client's capabilities and the schemas the roles allow, for the agent's `USE`
//! guard), answers OK, and relays bytes. Whatever password the
//! client sent is dropped: it never leaves the proxy.

use std::net::SocketAddr;

use hop_admission::{Admitted, Route};
use hop_protocols::mysql::{self, ClientHandshake, Handshake, OkPacket};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::dial::dial_agent;
use super::postgres::{DbRefusal, DbRoutes};
use crate::admission::{Live, LiveWatch, UserCert, dup_stream};
use crate::tunnels::DbRoute;
use hop_api::dial::db::DbDial;
use hop_api::dial::mysql::{AUTH_PLUGIN, MysqlLogin, OFFERED_CAPABILITIES};
use hop_auth::audit::EventKind;
use hop_auth::caller::Caller;

/// The largest HandshakeResponse the proxy reads.
const MAX_HANDSHAKE: usize = 64 * 1024;
/// `utf8mb4_general_ci`.
const CHARSET: u8 = 45;
/// ER_ACCESS_DENIED_ERROR
const ACCESS_DENIED: u16 = 1045;
/// ER_UNKNOWN_ERROR
const UNKNOWN_ERROR: u16 = 1105;

fn err_packet(seq: u8, code: u16, sqlstate: &str, message: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = mysql::encode_err(seq, code, sqlstate, message, &mut out);
    out
}

/// The greeting: protocol 10, Hop's version, a random scramble, `mysql_native_password`.
fn greeting(connection_id: u32) -> Vec<u8> {
    let mut scramble = [0u8; 20];
    rand::fill(&mut scramble[..]);
    // A scramble has no NUL bytes.
    for b in &mut scramble {
        *b = (*b % 127) + 1;
    }
    let mut part2 = scramble[8..].to_vec();
    part2.push(0);
    let hs = Handshake {
        server_version: b"8.0.0-Hop",
        connection_id,
        auth_plugin_data_1: scramble[..8].try_into().unwrap_or([1; 8]),
        capabilities: OFFERED_CAPABILITIES,
        charset: CHARSET,
        status: 0x0002, // autocommit
        auth_plugin_data_len: 21,
        reserved: [0; 10],
        auth_plugin_data_2: &part2,
        auth_plugin_name: Some(AUTH_PLUGIN),
    };
    let mut payload = Vec::new();
    let _ = hs.encode(&mut payload);
    let mut out = Vec::new();
    mysql::encode_packet(0, &payload, &mut out);
    out
}

async fn read_packet<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 4];
    r.read_exact(&mut head).await?;
    let len = usize::from(head[0]) | usize::from(head[1]) << 8 | usize::from(head[2]) << 16;
    if len > MAX_HANDSHAKE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("handshake packet of {len} bytes"),
        ));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Ok((head[3], payload))
}

/// Serves one `hop-mysql` connection.
pub async fn serve<S>(mut client: S, caller: Caller, remote: SocketAddr, routes: DbRoutes)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let connection_id = rand::random::<u32>() & 0x7fff_ffff;
    if client.write_all(&greeting(connection_id)).await.is_err() {
        return;
    }
    let (seq, payload) =
        match tokio::time::timeout(routes.startup_timeout, read_packet(&mut client)).await {
            Ok(Ok(p)) => p,
            _ => return,
        };
    let reply = seq.wrapping_add(1);
    let response = match ClientHandshake::parse(&payload) {
        Ok(ClientHandshake::Response(r)) => r,
        Ok(ClientHandshake::SslRequest(_)) => {
            let e = "TLS was not offered: the connection to the proxy is TLS already";
            let _ = client
                .write_all(&err_packet(reply, UNKNOWN_ERROR, "08S01", e))
                .await;
            return;
        }
        Err(e) => {
            let e = format!("malformed handshake response: {e}");
            let _ = client
                .write_all(&err_packet(reply, UNKNOWN_ERROR, "08S01", &e))
                .await;
            return;
        }
    };
    let db_user = String::from_utf8_lossy(response.username).into_owned();
    let requested_db = response
        .database
        .map(|d| String::from_utf8_lossy(d).into_owned())
        .unwrap_or_default();
    let cert = match UserCert::of(caller) {
        Some(cert) => cert,
        None => {
            let e = "Hop needs your database certificate: run `hop db login NAME` and `hop proxy db NAME`";
            let _ = client
                .write_all(&err_packet(reply, ACCESS_DENIED, "28000", e))
                .await;
            return;
        }
    };
    let identity = cert.identity.clone();
    let Some(route_db) = identity.route_to_database.clone() else {
        let e = "this certificate is not for a database: run `hop db login NAME`";
        let _ = client
            .write_all(&err_packet(reply, ACCESS_DENIED, "28000", e))
            .await;
        return;
    };
    let service = route_db.service.clone();
    // No schema in the handshake: the one the certificate was issued for.
    let db_name = if requested_db.is_empty() {
        route_db.database.clone()
    } else {
        requested_db
    };
    let refuse = |e: &str| {
        routes.auth.metrics().db_sessions_refused.inc();
        routes.auth.emit(
            routes
                .auth
                .event(EventKind::DbSessionStart, &identity.username)
                .remote(Some(remote))
                .field("db_service", service.clone())
                .field("db_user", db_user.clone())
                .field("db_name", db_name.clone())
                .failed(EventKind::DbSessionStart, e),
        );
        err_packet(reply, ACCESS_DENIED, "28000", e)
    };
    let (route, admitted) = match check(&routes, &cert, &service, &db_user, &db_name, remote) {
        Ok(r) => r,
        Err(e) => {
            let _ = client.write_all(&refuse(&e.to_string())).await;
            return;
        }
    };
    let session_id = *hop_api::ids::time_ordered(hop_platform::clock::wall()).as_bytes();
    let dial = DbDial {
        service: service.clone(),
        user: identity.username.clone(),
        db_user: db_user.clone(),
        db_name: db_name.clone(),
        session_id: hex::encode(session_id),
        client_addr: remote.to_string(),
        cancel: None,
        mysql: Some(MysqlLogin {
            capabilities: response.capabilities & OFFERED_CAPABILITIES,
            charset: response.charset,
            max_packet_size: response.max_packet_size,
            connection_id,
        }),
        db_names: Some(db_names(&admitted, &route, &db_user, &cert.identity)),
    };
    let what = format!("database {service:?}");
    let (agent, _agent_hold) = match dial_agent(
        &routes.registry,
        &route.host_id,
        &what,
        session_id,
        &dial.to_target(),
        remote,
    )
    .await
    {
        Ok(a) => a,
        Err(e) => {
            routes.auth.metrics().db_sessions_refused.inc();
            let _ = client
                .write_all(&err_packet(reply, ACCESS_DENIED, "28000", &e.to_string()))
                .await;
            return;
        }
    };
    let mut ok = Vec::new();
    mysql::encode_ok(
        &OkPacket {
            header: 0,
            affected_rows: 0,
            last_insert_id: 0,
            status: 0x0002,
            warnings: 0,
            info: b"",
        },
        &mut ok,
    );
    let mut out = Vec::new();
    mysql::encode_packet(reply, &ok, &mut out);
    if client.write_all(&out).await.is_err() {
        return;
    }
    let metrics = routes.auth.metrics();
    metrics.db_sessions.inc();
    metrics.db_sessions_active.inc();
    let idle = admitted.checker().client_idle_timeout();
    // Ending the agent's side ends the relay, which closes the client's connection.
    let _watch = LiveWatch::start(
        routes.auth.clone(),
        Live {
            sockets: dup_stream(agent.get_ref()).into_iter().collect(),
            stop: None,
            login: None,
            target: Some(super::postgres::session_target(
                &service, &db_user, &db_name,
            )),
            route: Route::MySql,
            remote,
            session_id: format!("{connection_id:08x}"),
            disconnect_expired_cert: admitted.checker().disconnect_expired_cert(),
            agent: Some(route.host_id.clone()),
            cert: cert.clone(),
        },
    );
    let (agent, agent_pending) = agent.into_inner();
    let moved =
        hop_net::tunnel::relay_with_idle_timeout(client, Vec::new(), agent, agent_pending, idle)
            .await;
    metrics.db_sessions_active.dec();
    if let Err(e) = moved {
        tracing::debug!(db = %service, error = %e, "database session ended with an error");
    }
}

/// The databases the roles the user holds now allow `db_user` on this server, for the agent's
/// `USE` guard; with a per-session MFA certificate, only the database it was marked for.
fn db_names(
    admitted: &Admitted,
    route: &DbRoute,
    db_user: &str,
    identity: &hop_ca::Identity,
) -> hop_rbac::DbNames {
    let mut names = admitted.checker().database_names(&route.labels, db_user);
    if let Some(hop_ca::SessionMfaTarget::Database { db_name, .. }) = &identity.session_mfa {
        let marked = names.allows(db_name).then(|| db_name.clone());
        names.allow = marked.into_iter().collect();
    }
    names
}

/// The proxy's RBAC decision; the refusal is the client's error message.
fn check(
    routes: &DbRoutes,
    cert: &UserCert,
    service: &str,
    db_user: &str,
    db_name: &str,
    remote: SocketAddr,
) -> Result<(DbRoute, Admitted), DbRefusal> {
    let (route, admitted) = super::postgres::find_route(
        routes,
        cert,
        (service, db_user, db_name),
        Route::MySql,
        remote,
    )?;
    if route.protocol() != "mysql" {
        return Err(DbRefusal::OtherProtocol {
            service: service.to_string(),
            speaks: route.protocol().to_string(),
            asked: "MySQL",
        });
    }
    super::postgres::check_roles(&admitted, &route, service, db_user, db_name)?;
    Ok((route, admitted))
}
