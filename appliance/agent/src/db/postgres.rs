//! One PostgreSQL session at the db agent.
//!
//! The agent connects to the database over TLS (SSLRequest, then rustls with the db CA client
//! certificate of the database user), passes the client's StartupMessage on, and follows the
//! start-up: AuthenticationOk, parameters and the cancel key go back to the client; a request for
//! a password (cleartext, MD5, SCRAM) is refused, because Hop never handles database passwords.
//! Then it relays both ways ([`super::relay`]); the client's bytes pass through the
//! [`QueryAuditor`] before they are forwarded, and each statement becomes a `db.query` event. A
//! client stream the auditor cannot follow ends the session: the client reads a FATAL
//! ErrorResponse naming the problem, and the audit log a failed `db.query` event. Cancels open their own plain connection with the
//! database's key, as libpq does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hop_platform::clock;
use hop_protocols::postgres::{self, Authentication, BackendMessage, StartupPacket};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub use super::connect::DbConn;
use super::connect::{DbConnectError, dial_tcp, tls_handshake};
use super::pg_audit::{QueryAuditor, Statement};
use super::relay::{Ended, Refusal, Verdict};
use super::{DbCancel, DbDial, DbService, DbSpec};
use hop_api::audit::EventKind;
use hop_net::pg_wire::{self as wire, SQLSTATE_DENIED, SQLSTATE_PROTOCOL, fatal};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a PostgreSQL cancel request was not sent.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    /// The key in the Dial is not hex (the proxy's or the client's).
    #[error("malformed cancel key")]
    MalformedKey,
    #[error(transparent)]
    Encode(#[from] postgres::PgEncodeError),
    #[error(transparent)]
    Connect(#[from] DbConnectError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Opens a TLS connection to the database, ready for the StartupMessage.
pub async fn connect(
    svc: &DbService,
    spec: &DbSpec,
    db_user: &str,
) -> Result<DbConn, DbConnectError> {
    let cfg = svc.certs.config_for(spec, db_user).await?;
    let mut tcp = dial_tcp(spec).await?;
    let mut req = Vec::new();
    postgres::encode_ssl_request(&mut req);
    tcp.write_all(&req).await?;
    let mut answer = [0u8; 1];
    tokio::time::timeout(CONNECT_TIMEOUT, tcp.read_exact(&mut answer))
        .await
        .map_err(|_| DbConnectError::NoSslAnswer)?
        .map_err(DbConnectError::SslRequestClosed)?;
    match answer[0] {
        b'S' => {}
        b'N' => return Err(DbConnectError::NoTls),
        other => return Err(DbConnectError::NotPostgres(other)),
    }
    tls_handshake(cfg, spec, tcp).await
}

/// Sends a CancelRequest with the database's own key.
pub async fn cancel(spec: &DbSpec, c: &DbCancel) -> Result<(), CancelError> {
    let key = hex::decode(&c.secret_key).map_err(|_| CancelError::MalformedKey)?;
    let mut out = Vec::new();
    postgres::encode_cancel_request(
        &postgres::CancelRequest {
            process_id: c.process_id,
            secret_key: &key,
        },
        &mut out,
    )?;
    let mut tcp = dial_tcp(spec).await?;
    tcp.write_all(&out).await?;
    // The server closes the connection when it has read the request.
    let mut sink = [0u8; 64];
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut sink)).await;
    Ok(())
}

/// Serves one session: start-up, then the audited relay.
pub async fn session<C>(svc: &Arc<DbService>, dial: &DbDial, mut client: C, mut db: DbConn)
where
    C: AsyncRead + AsyncWrite + Unpin + Send,
{
    let started = clock::now();
    let refuse = |e: String| {
        svc.audit.emit(
            svc.event(EventKind::DbSessionStart, dial)
                .failed(EventKind::DbSessionStart, e),
        );
    };
    let mut buf = Vec::new();
    let startup_len = match wire::read_startup(&mut client, &mut buf, STARTUP_TIMEOUT).await {
        Ok(n) => n,
        Err(e) => return refuse(format!("startup: {e}")),
    };
    // The proxy checked the user and database against the roles; make sure it is this session.
    let same = match wire::startup_packet(&buf) {
        Ok(StartupPacket::Startup(m)) => {
            m.user() == dial.db_user && m.database().unwrap_or(m.user()) == dial.db_name
        }
        _ => false,
    };
    if !same {
        let e = "the startup message does not match the session the proxy opened".to_string();
        let _ = client.write_all(&fatal(SQLSTATE_PROTOCOL, &e)).await;
        return refuse(e);
    }
    if let Err(e) = db
        .write_all(buf.get(..startup_len).unwrap_or_default())
        .await
    {
        return refuse(format!("database: {e}"));
    }
    buf.drain(..startup_len);
    let client_pending = std::mem::take(&mut buf);
    // Start-up answers, passed on as they come, until the database is ready or refuses.
    let mut from_db = Vec::new();
    loop {
        let len = match wire::read_backend(&mut db, &mut from_db).await {
            Ok(n) => n,
            Err(e) => {
                let e = format!("database closed during start-up: {e}");
                let _ = client.write_all(&fatal(SQLSTATE_PROTOCOL, &e)).await;
                return refuse(e);
            }
        };
        let msg = match wire::backend_message(from_db.get(..len).unwrap_or_default()) {
            Ok(m) => m,
            Err(e) => return refuse(format!("database start-up: {e}")),
        };
        let mut done = false;
        match msg {
            BackendMessage::Authentication(Authentication::Ok) => {}
            BackendMessage::Authentication(other) => {
                let e = format!(
                    "database {:?} asked for {} for user {:?}; Hop logs in to databases with client certificates only: allow `cert` authentication for this user (pg_hba.conf: hostssl … cert)",
                    dial.service,
                    auth_name(&other),
                    dial.db_user
                );
                let _ = client.write_all(&fatal(SQLSTATE_DENIED, &e)).await;
                return refuse(e);
            }
            BackendMessage::ErrorResponse(f) => {
                let e = String::from_utf8_lossy(f.message().unwrap_or_default()).into_owned();
                let _ = client
                    .write_all(from_db.get(..len).unwrap_or_default())
                    .await;
                return refuse(format!("database refused: {e}"));
            }
            BackendMessage::ReadyForQuery(_) => done = true,
            _ => {}
        }
        if let Err(e) = client
            .write_all(from_db.get(..len).unwrap_or_default())
            .await
        {
            return refuse(format!("client: {e}"));
        }
        from_db.drain(..len);
        if done {
            break;
        }
    }
    svc.audit.emit(svc.event(EventKind::DbSessionStart, dial));
    let ended = relay(svc, dial, client, client_pending, db, from_db).await;
    svc.audit.emit(session_end(svc, dial, started, ended));
}

fn auth_name(a: &Authentication<'_>) -> &'static str {
    match a {
        Authentication::CleartextPassword => "a password",
        Authentication::Md5Password { .. } => "an MD5 password",
        Authentication::Sasl { .. }
        | Authentication::SaslContinue { .. }
        | Authentication::SaslFinal { .. } => "SCRAM password authentication",
        _ => "an authentication method Hop does not use",
    }
}

/// Relays until both directions end; audits the client's statements, and ends the session
/// (an ErrorResponse for the client, an audit event) when the client's stream cannot be
/// followed. Returns the bytes moved and why the session ended early.
async fn relay<C>(
    svc: &Arc<DbService>,
    dial: &DbDial,
    client: C,
    client_pending: Vec<u8>,
    db: DbConn,
    db_pending: Vec<u8>,
) -> Ended
where
    C: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut auditor = QueryAuditor::new(svc.max_statement, svc.with_parameters);
    let mut statements: Vec<Statement> = Vec::new();
    let inspect = |chunk: &[u8]| match auditor.feed(chunk, &mut statements) {
        Ok(()) => {
            for s in statements.drain(..) {
                emit_statement(svc, dial, s);
            }
            Verdict::Forward
        }
        // Nothing of the chunk is forwarded: the statements before the fault do not run.
        Err(e) => {
            statements.clear();
            let reason =
                format!("{e}; Hop ends the session rather than let statements run unaudited");
            svc.audit.emit(
                svc.event(EventKind::DbQuery, dial)
                    .failed(EventKind::DbQuery, reason.clone()),
            );
            Verdict::End(Refusal {
                reply: fatal(SQLSTATE_PROTOCOL, &reason),
                reason,
            })
        }
    };
    super::relay::relay(client, client_pending, db, db_pending, inspect).await
}

/// The `db.session.end` event of a session that ran for `started.elapsed()`.
pub(super) fn session_end(
    svc: &DbService,
    dial: &DbDial,
    started: Instant,
    ended: Ended,
) -> hop_api::audit::AuditEvent {
    let mut end = svc
        .event(EventKind::DbSessionEnd, dial)
        .field("bytes_sent", ended.up)
        .field("bytes_received", ended.down)
        .field("duration_ms", clock::since(started).as_millis() as u64);
    if let Some(reason) = ended.reason {
        end = end.field("reason", reason);
    }
    end
}

fn emit_statement(svc: &DbService, dial: &DbDial, s: Statement) {
    let mut ev = svc.event(EventKind::DbQuery, dial).field("via", s.via);
    if let Some(text) = s.text {
        ev = ev.field("statement", text);
    }
    for (key, name) in [("statement_name", s.statement_name), ("portal", s.portal)] {
        if let Some(name) = name {
            ev = ev.field(key, name);
        }
    }
    if s.truncated {
        ev = ev.field("truncated", true);
    }
    if let Some(p) = s.parameters {
        ev = ev.field(
            "parameters",
            serde_json::Value::Array(
                p.into_iter()
                    .map(|v| v.map(serde_json::Value::String).unwrap_or_default())
                    .collect(),
            ),
        );
    }
    svc.audit.emit(ev);
}
