//! One MySQL/MariaDB session at the db agent.
//!
//! MySQL's TLS starts inside its protocol, so the proxy greets the client itself and checks the
//! user name from the client's HandshakeResponse; the agent then logs in to the database on the
//! client's behalf: it reads the server's greeting, asks for TLS (SSLRequest), presents the db CA
//! client certificate of the database user (the server maps it with `REQUIRE SUBJECT`/`X509`),
//! and sends a HandshakeResponse with the client's capabilities and an empty password. A server
//! that wants a real password is refused: Hop never handles database passwords.
//!
//! After login it relays ([`relay`]); the client's packets pass through a [`CommandScanner`]
//! before they are forwarded, and each COM_QUERY, COM_STMT_PREPARE (with its text),
//! COM_STMT_EXECUTE and COM_INIT_DB becomes a `db.query` event. These guards end the session with
//! an ERR packet and a failed `db.query` event, the refused command never reaching the database:
//! COM_CHANGE_USER, always (it would change who the session runs as); COM_INIT_DB, `USE` (also
//! inside executable comments `/*! … */`) and a literal `PREPARE … FROM 'USE …'` of a schema the
//! roles do not allow the database user ([`hop_rbac::DbNames`], from the proxy); COM_SET_OPTION
//! turning multi-statements on ([`MULTI_STATEMENTS`] stays off toward the server); and a client
//! stream the scanner cannot follow. Qualified names (`other.t`) and statement text built at run
//! time are governed by the database's own grants. `KILL [QUERY] ID` with the connection id Hop
//! gave the client is rewritten to the database's own thread id, so that a client's Ctrl-C
//! cancels its own query.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hop_platform::clock;
use hop_protocols::mysql::capabilities::*;
use hop_protocols::mysql::{
    self, Command, CommandScanner, Handshake, Response, ScannedPacket, SchemaSwitch, SslRequest,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub use super::connect::DbConn;
use super::connect::{DbConnectError, dial_tcp, tls_handshake};
use super::relay::{self, Refusal, Verdict};
use super::{DbDial, DbService, DbSpec};
use hop_api::audit::{AuditEvent, EventKind};
use hop_api::dial::mysql::{AUTH_PLUGIN, MULTI_STATEMENTS, MysqlLogin, OFFERED_CAPABILITIES};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Live sessions by the connection id Hop gave their client: the database's thread id and the
/// Hop user, for `KILL` rewriting.
#[derive(Debug, Default)]
pub struct Threads {
    map: Mutex<HashMap<u32, (u32, String)>>,
}

struct ThreadGuard<'a> {
    threads: &'a Threads,
    id: u32,
}

impl Drop for ThreadGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut m) = self.threads.map.lock() {
            m.remove(&self.id);
        }
    }
}

/// Why a login to the database failed. The words reach the user who asked for the session (and
/// the audit log).
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The database answered with an ERR packet: its code and message go to the client.
    #[error("the database refused the login ({code}): {message}")]
    Refused { code: u16, message: String },
    /// The database could not be reached, or TLS with it failed.
    #[error(transparent)]
    Connect(#[from] DbConnectError),
    #[error("the database sent no greeting")]
    NoGreeting,
    #[error("the database closed the connection")]
    Closed(#[source] std::io::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Not a MySQL greeting (the database's, or not a MySQL server).
    #[error("the database's greeting: {0}")]
    Greeting(mysql::MysqlError),
    /// The database's configuration: no TLS.
    #[error(
        "the database does not offer TLS; Hop connects to databases over TLS only (configure ssl_cert/ssl_key)"
    )]
    NoTls,
    #[error("the database lacks capabilities {missing:#x} that Hop offers clients; it is too old")]
    TooOld { missing: u32 },
    #[error("the database did not answer the login")]
    NoAnswer,
    /// An ERR packet the agent could not read.
    #[error("the database refused the login")]
    RefusedUnreadable,
    /// The database user has a password (the database's configuration).
    #[error(
        "database {name:?} asked for a password for user {db_user:?}; Hop logs in to databases with client certificates only: create the user with REQUIRE SUBJECT or REQUIRE X509 and no password"
    )]
    PasswordWanted { name: String, db_user: String },
    #[error("the database's login did not finish")]
    Unfinished,
}

/// Reads one whole packet: (sequence id, payload).
async fn read_packet<R: AsyncRead + Unpin>(r: &mut R) -> Result<(u8, Vec<u8>), LoginError> {
    let mut head = [0u8; 4];
    r.read_exact(&mut head).await.map_err(LoginError::Closed)?;
    let len = usize::from(head[0]) | usize::from(head[1]) << 8 | usize::from(head[2]) << 16;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Ok((head[3], payload))
}

fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 4);
    mysql::encode_packet(seq, payload, &mut out);
    out
}

fn refused(payload: &[u8]) -> Option<LoginError> {
    match Response::parse(payload) {
        Ok(Response::Err(e)) => Some(LoginError::Refused {
            code: e.code,
            message: String::from_utf8_lossy(e.message).into_owned(),
        }),
        _ => None,
    }
}

/// The HandshakeResponse41 payload the agent sends (TLS is up; the password is empty).
fn handshake_response(caps: u32, login: &MysqlLogin, user: &str, database: &str) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&caps.to_le_bytes());
    out.extend_from_slice(&login.max_packet_size.to_le_bytes());
    out.push(login.charset);
    out.extend_from_slice(&[0u8; 23]);
    out.extend_from_slice(user.as_bytes());
    out.push(0);
    // An empty auth response (lenenc or 1-byte length: both a single 0).
    out.push(0);
    if caps & CLIENT_CONNECT_WITH_DB != 0 {
        out.extend_from_slice(database.as_bytes());
        out.push(0);
    }
    if caps & CLIENT_PLUGIN_AUTH != 0 {
        out.extend_from_slice(AUTH_PLUGIN);
        out.push(0);
    }
    if caps & CLIENT_CONNECT_ATTRS != 0 {
        let mut attrs = Vec::new();
        for (k, v) in [("_client_name", "hop-db-agent"), ("program_name", "hop")] {
            mysql::encode_lenenc_bytes(k.as_bytes(), &mut attrs);
            mysql::encode_lenenc_bytes(v.as_bytes(), &mut attrs);
        }
        mysql::encode_lenenc_bytes(&attrs, &mut out);
    }
    out
}

/// Logs in to the database as `dial.db_user` over TLS with the db CA client certificate; returns
/// the connection and the database's thread id.
pub async fn login(
    svc: &DbService,
    spec: &DbSpec,
    dial: &DbDial,
    login: &MysqlLogin,
) -> Result<(DbConn, u32), LoginError> {
    let cfg = svc
        .certs
        .config_for(spec, &dial.db_user)
        .await
        .map_err(DbConnectError::from)?;
    let mut tcp = dial_tcp(spec).await?;
    let (_, greeting) = tokio::time::timeout(CONNECT_TIMEOUT, read_packet(&mut tcp))
        .await
        .map_err(|_| LoginError::NoGreeting)??;
    if let Some(e) = refused(&greeting) {
        return Err(e);
    }
    let hs = Handshake::parse(&greeting).map_err(LoginError::Greeting)?;
    let thread_id = hs.connection_id;
    if hs.capabilities & CLIENT_SSL == 0 {
        return Err(LoginError::NoTls);
    }
    // Protocol-shaping capabilities the client was promised must be the server's too.
    let shaping =
        CLIENT_DEPRECATE_EOF | CLIENT_SESSION_TRACK | 0x2_0000 | 0x4_0000 | CLIENT_PROTOCOL_41;
    let missing = login.capabilities & shaping & !hs.capabilities;
    if missing != 0 {
        return Err(LoginError::TooOld { missing });
    }
    let mut caps = login.capabilities & hs.capabilities & OFFERED_CAPABILITIES & !MULTI_STATEMENTS;
    caps |= CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH | CLIENT_SSL;
    if dial.db_name.is_empty() {
        caps &= !CLIENT_CONNECT_WITH_DB;
    } else {
        caps |= CLIENT_CONNECT_WITH_DB;
    }
    let mut ssl = Vec::new();
    SslRequest {
        capabilities: caps,
        max_packet_size: login.max_packet_size,
        charset: login.charset,
        filler: [0; 23],
    }
    .encode(&mut ssl);
    tcp.write_all(&packet(1, &ssl)).await?;
    let mut tls = tls_handshake(cfg, spec, tcp).await?;
    let response = handshake_response(caps, login, &dial.db_user, &dial.db_name);
    tls.write_all(&packet(2, &response)).await?;
    // OK, ERR, an auth switch (answered with an empty password once), or more auth data.
    for _ in 0..3 {
        let (seq, payload) = tokio::time::timeout(CONNECT_TIMEOUT, read_packet(&mut tls))
            .await
            .map_err(|_| LoginError::NoAnswer)??;
        match payload.first() {
            Some(0x00) => return Ok((tls, thread_id)),
            Some(0xff) => {
                return Err(refused(&payload).unwrap_or(LoginError::RefusedUnreadable));
            }
            Some(0xfe) => {
                // AuthSwitchRequest: answer the new plugin with an empty password.
                tls.write_all(&packet(seq.wrapping_add(1), &[])).await?;
            }
            // caching_sha2_password's "fast auth succeeded" is followed by OK.
            Some(0x01) if payload.get(1) == Some(&0x03) => {}
            _ => {
                return Err(LoginError::PasswordWanted {
                    name: spec.name.clone(),
                    db_user: dial.db_user.clone(),
                });
            }
        }
    }
    Err(LoginError::Unfinished)
}

/// Relays one logged-in session; audits statements, enforces the guards, rewrites KILL.
pub async fn session<C>(
    svc: &Arc<DbService>,
    dial: &DbDial,
    client: C,
    db: DbConn,
    login: &MysqlLogin,
    thread_id: u32,
) where
    C: AsyncRead + AsyncWrite + Unpin + Send,
{
    let started = clock::now();
    if let Ok(mut m) = svc.mysql_threads.map.lock() {
        m.insert(login.connection_id, (thread_id, dial.user.clone()));
    }
    let _guard = ThreadGuard {
        threads: &svc.mysql_threads,
        id: login.connection_id,
    };
    svc.audit.emit(svc.event(EventKind::DbSessionStart, dial));
    let mut scanner = CommandScanner::new(svc.max_statement.max(64));
    let inspect = |chunk: &[u8]| inspect_chunk(svc, dial, &mut scanner, chunk);
    let ended = relay::relay(client, Vec::new(), db, Vec::new(), inspect).await;
    svc.audit
        .emit(super::postgres::session_end(svc, dial, started, ended));
}

/// One client chunk: its packets' audit events are emitted when the chunk is forwarded; a
/// refused or unreadable packet ends the session instead, and nothing of the chunk runs.
fn inspect_chunk(
    svc: &DbService,
    dial: &DbDial,
    scanner: &mut CommandScanner,
    chunk: &[u8],
) -> Verdict {
    let mut events = Vec::new();
    let mut replace = None;
    let mut feed = scanner.feed(chunk);
    loop {
        let verdict = match feed.next() {
            Ok(None) => break,
            Ok(Some(p)) => audit_packet(svc, dial, &p, chunk, &mut events),
            Err(e) => Err(Guard::Unreadable(e)),
        };
        match verdict {
            Ok(Some(bytes)) => replace = Some(bytes),
            Ok(None) => {}
            Err(guard) => return refuse(svc, dial, &guard),
        }
    }
    for ev in events {
        svc.audit.emit(ev);
    }
    replace.map_or(Verdict::Forward, Verdict::Replace)
}

/// Why the agent refuses a client's command, ending the session.
#[derive(Debug, thiserror::Error)]
enum Guard {
    #[error(
        "COM_CHANGE_USER{0} is not allowed through Hop: the session runs as the database user it connected as; connect again as the other user"
    )]
    ChangeUser(String),
    #[error(
        "database {schema:?} is not one your roles allow for database user {db_user:?}; connect to it with `hop db login --db-name`"
    )]
    Schema { schema: String, db_user: String },
    #[error(
        "Hop cannot tell which database this statement switches to ({0}); the statement is refused"
    )]
    UnclearSwitch(#[from] mysql::SchemaSwitchError),
    #[error(
        "multi-statements are not allowed through Hop (COM_SET_OPTION): send one statement per query"
    )]
    MultiStatements,
    #[error(
        "the client's stream cannot be followed ({0}); Hop ends the session rather than let statements run unaudited"
    )]
    Unreadable(#[from] mysql::MysqlError),
}

impl Guard {
    /// The ERR packet's error code and SQLSTATE.
    fn code(&self) -> (u16, &'static str) {
        match self {
            // ER_SPECIFIC_ACCESS_DENIED_ERROR
            Guard::ChangeUser(_) | Guard::MultiStatements => (1227, "42000"),
            // ER_DBACCESS_DENIED_ERROR
            Guard::Schema { .. } | Guard::UnclearSwitch(_) => (1044, "42000"),
            // ER_MALFORMED_PACKET
            Guard::Unreadable(_) => (1835, "HY000"),
        }
    }

    fn via(&self) -> &'static str {
        match self {
            Guard::ChangeUser(_) => "change_user",
            Guard::Schema { .. } | Guard::UnclearSwitch(_) => "schema_switch",
            Guard::MultiStatements => "set_option",
            Guard::Unreadable(_) => "stream",
        }
    }
}

/// Ends the session over `guard`: a failed `db.query` event, an ERR packet for the client.
fn refuse(svc: &DbService, dial: &DbDial, guard: &Guard) -> Verdict {
    let reason = guard.to_string();
    svc.audit.emit(
        svc.event(EventKind::DbQuery, dial)
            .field("via", guard.via())
            .failed(EventKind::DbQuery, reason.clone()),
    );
    let (code, sqlstate) = guard.code();
    let mut reply = Vec::new();
    // The refused command had sequence id 0: its answer has 1.
    let _ = mysql::encode_err(1, code, sqlstate, &reason, &mut reply);
    Verdict::End(Refusal { reason, reply })
}

/// Checks the schema `sql` switches to, if any, against the roles.
fn check_switch(dial: &DbDial, sql: &[u8], complete: bool) -> Result<(), Guard> {
    match mysql::schema_switch(sql, complete)? {
        SchemaSwitch::None => Ok(()),
        SchemaSwitch::Use(schema) => check_schema(dial, &schema),
    }
}

/// May this session use `schema`? As the proxy decided at connect time: the dial carries the
/// names the roles allow; without them (an older proxy), only the one it connected to.
fn check_schema(dial: &DbDial, schema: &[u8]) -> Result<(), Guard> {
    let name = String::from_utf8_lossy(schema);
    let allowed = match (std::str::from_utf8(schema), &dial.db_names) {
        (Ok(name), Some(names)) => names.allows(name),
        (Ok(name), None) => name == dial.db_name,
        (Err(_), _) => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(Guard::Schema {
            schema: name.into_owned(),
            db_user: dial.db_user.clone(),
        })
    }
}

/// Audits one packet into `events`; `Ok(Some(bytes))` replaces the chunk, `Err` refuses it.
fn audit_packet(
    svc: &DbService,
    dial: &DbDial,
    p: &ScannedPacket<'_>,
    chunk: &[u8],
    events: &mut Vec<AuditEvent>,
) -> Result<Option<Vec<u8>>, Guard> {
    let statement = |text: &[u8], via: &'static str, truncated: bool| {
        let mut ev = svc
            .event(EventKind::DbQuery, dial)
            .field(
                "statement",
                String::from_utf8_lossy(text.get(..svc.max_statement).unwrap_or(text)).into_owned(),
            )
            .field("via", via);
        if truncated || text.len() > svc.max_statement {
            ev = ev.field("truncated", true);
        }
        ev
    };
    match p {
        ScannedPacket::Command(Command::Query { sql }) => {
            check_switch(dial, sql, true)?;
            events.push(statement(sql, "query", false));
            // Only a command that is the whole chunk can be rewritten (clients send one command
            // and wait for its answer, so this is the common case).
            if let Some(new_sql) = rewrite_kill(sql, &svc.mysql_threads, &dial.user)
                && chunk.len() == 4 + 1 + sql.len()
            {
                let mut payload = vec![mysql::COM_QUERY];
                payload.extend_from_slice(new_sql.as_bytes());
                return Ok(Some(packet(0, &payload)));
            }
        }
        ScannedPacket::Command(Command::StmtPrepare { sql }) => {
            check_switch(dial, sql, true)?;
            events.push(statement(sql, "prepare", false));
        }
        ScannedPacket::Command(Command::StmtExecute { statement_id, .. }) => {
            events.push(
                svc.event(EventKind::DbQuery, dial)
                    .field("statement_id", *statement_id)
                    .field("via", "execute"),
            );
        }
        ScannedPacket::Command(Command::InitDb { schema }) => {
            check_schema(dial, schema)?;
            let schema = String::from_utf8_lossy(schema);
            events.push(
                svc.event(EventKind::DbQuery, dial)
                    .field("statement", format!("USE `{schema}`"))
                    .field("via", "init_db"),
            );
        }
        ScannedPacket::Command(Command::ChangeUser { user, .. }) => {
            return Err(Guard::ChangeUser(format!(
                " to {:?}",
                String::from_utf8_lossy(user)
            )));
        }
        ScannedPacket::Command(Command::Other {
            code: mysql::COM_SET_OPTION,
            body,
        }) if *body != mysql::MYSQL_OPTION_MULTI_STATEMENTS_OFF => {
            return Err(Guard::MultiStatements);
        }
        ScannedPacket::Truncated { seq: 0, head, .. } => {
            audit_head(dial, head, events, &statement)?;
        }
        _ => {}
    }
    Ok(None)
}

/// A command longer than the scanner keeps: its head is audited and guarded.
fn audit_head(
    dial: &DbDial,
    head: &[u8],
    events: &mut Vec<AuditEvent>,
    statement: &dyn Fn(&[u8], &'static str, bool) -> AuditEvent,
) -> Result<(), Guard> {
    let (code, rest) = head.split_first().map_or((0, &[][..]), |(c, r)| (*c, r));
    match code {
        mysql::COM_QUERY | mysql::COM_STMT_PREPARE => {
            check_switch(dial, rest, false)?;
            let via = if code == mysql::COM_QUERY {
                "query"
            } else {
                "prepare"
            };
            events.push(statement(rest, via, true));
        }
        mysql::COM_CHANGE_USER => return Err(Guard::ChangeUser(String::new())),
        // A schema name longer than any allowed one.
        mysql::COM_INIT_DB => {
            return Err(Guard::Schema {
                schema: format!("{}…", String::from_utf8_lossy(rest)),
                db_user: dial.db_user.clone(),
            });
        }
        mysql::COM_SET_OPTION => return Err(Guard::MultiStatements),
        _ => {}
    }
    Ok(())
}

/// `KILL [QUERY|CONNECTION] N` where N is the connection id Hop gave one of `user`'s sessions:
/// the statement with the database's thread id instead.
fn rewrite_kill(sql: &[u8], threads: &Threads, user: &str) -> Option<String> {
    let text = std::str::from_utf8(sql)
        .ok()?
        .trim()
        .trim_end_matches(';')
        .trim();
    let mut words = text.split_ascii_whitespace();
    if !words.next()?.eq_ignore_ascii_case("kill") {
        return None;
    }
    let mut next = words.next()?;
    let mut kind = "";
    if next.eq_ignore_ascii_case("query") || next.eq_ignore_ascii_case("connection") {
        kind = next;
        next = words.next()?;
    }
    if words.next().is_some() {
        return None;
    }
    let id: u32 = next.parse().ok()?;
    let m = threads.map.lock().ok()?;
    let (real, owner) = m.get(&id)?;
    (owner == user).then(|| {
        if kind.is_empty() {
            format!("KILL {real}")
        } else {
            format!("KILL {} {real}", kind.to_ascii_uppercase())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_is_rewritten_only_for_the_users_own_sessions() {
        let t = Threads::default();
        t.map.lock().unwrap().insert(77, (12, "alice".into()));
        assert_eq!(
            rewrite_kill(b"KILL QUERY 77", &t, "alice").as_deref(),
            Some("KILL QUERY 12")
        );
        assert_eq!(
            rewrite_kill(b"  kill 77 ;", &t, "alice").as_deref(),
            Some("KILL 12")
        );
        assert_eq!(
            rewrite_kill(b"kill connection 77", &t, "alice").as_deref(),
            Some("KILL CONNECTION 12")
        );
        assert_eq!(rewrite_kill(b"KILL QUERY 77", &t, "bob"), None);
        assert_eq!(rewrite_kill(b"KILL QUERY 78", &t, "alice"), None);
        assert_eq!(rewrite_kill(b"KILL QUERY 77 extra", &t, "alice"), None);
        assert_eq!(rewrite_kill(b"SELECT 77", &t, "alice"), None);
    }

    fn dial(db_names: Option<hop_rbac::DbNames>) -> DbDial {
        DbDial {
            service: "maria".into(),
            user: "alice".into(),
            db_user: "alice".into(),
            db_name: "shop".into(),
            session_id: "00".into(),
            client_addr: "127.0.0.1:1".into(),
            cancel: None,
            mysql: None,
            db_names,
        }
    }

    #[test]
    fn schema_switches_are_checked_against_the_roles() {
        let names = hop_rbac::DbNames {
            allow: ["shop".to_string(), "reports".to_string()].into(),
            deny: ["reports".to_string()].into(),
        };
        let d = dial(Some(names));
        for ok in [
            "SELECT 1",
            "USE shop",
            "/*!50000 USE `shop` */",
            "SELECT * FROM other.t",
        ] {
            check_switch(&d, ok.as_bytes(), true).unwrap();
        }
        for refused in [
            "USE other",
            "use reports",
            "/*!USE other*/",
            "/*M!100100 USE other */",
            "PREPARE s FROM 'USE other'",
            "USE Shop",
        ] {
            assert!(
                matches!(
                    check_switch(&d, refused.as_bytes(), true),
                    Err(Guard::Schema { .. })
                ),
                "{refused}"
            );
        }
        // Unclear text is refused too, and a cut USE.
        assert!(matches!(
            check_switch(&d, b"USE shop extra", true),
            Err(Guard::UnclearSwitch(_))
        ));
        assert!(check_switch(&d, b"USE shop", false).is_err());
        assert!(check_schema(&d, b"\xff").is_err());
        // Without the roles' names (an older proxy): only the database it connected to.
        let d = dial(None);
        check_schema(&d, b"shop").unwrap();
        assert!(check_schema(&d, b"reports").is_err());
    }

    #[test]
    fn the_handshake_response_parses_back() {
        let login = MysqlLogin {
            capabilities: OFFERED_CAPABILITIES,
            charset: 45,
            max_packet_size: 1 << 24,
            connection_id: 1,
        };
        let caps = OFFERED_CAPABILITIES | CLIENT_SSL;
        let payload = handshake_response(caps, &login, "alice", "shop");
        match mysql::ClientHandshake::parse(&payload).unwrap() {
            mysql::ClientHandshake::Response(r) => {
                assert_eq!(r.username, b"alice");
                assert_eq!(r.database, Some(&b"shop"[..]));
                assert_eq!(r.auth_response, b"");
                assert_eq!(r.auth_plugin_name, Some(AUTH_PLUGIN));
                assert_eq!(r.connect_attrs().count(), 2);
            }
            other => panic!("{other:?}"),
        }
    }
}
