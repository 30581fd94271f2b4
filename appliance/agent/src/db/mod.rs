//! The database service of a db agent (`hop start --roles db --db name=…,uri=postgres://…`), and
//! the session context the proxy hands it.
//!
//! This module owns the databases an agent publishes ([`DbSpec`]: name, URI, how the database's
//! certificate is verified, labels), the Dial context of one database session ([`DbDial`]: who
//! the Hop user is, which database user and database, or a cancel), and dispatching a session to
//! its protocol (`postgres`). The proxy decides who may connect (RBAC on the startup message);
//! the agent logs in to the database with a short-lived client certificate from the db CA
//! (`certs`), refuses to pass on a password request, and audits every statement.

pub mod certs;
pub mod connect;
pub mod mysql;
pub mod pg_audit;
pub mod postgres;
pub mod relay;
pub mod resources;

use std::sync::Arc;

use hop_protocols::tunnel::ResourceAnnouncement;
use hop_protocols::tunnel::{DialResult, Frame};

use hop_api::audit::{AuditEvent, EventKind};
use hop_net::connect::error_chain;
use hop_net::tunnel::Prefixed;

use crate::node::audit::AgentAudit;
use crate::trackers::TrackedSpec;
use hop_api::dial::db::{DbCancel, DbDial};
use hop_config::services::DbSpec;

/// The database service of one agent.
pub struct DbService {
    /// Databases from the configuration (`db_service.databases`, `--db`).
    static_specs: Vec<DbSpec>,
    /// Those and the `db` resources the selectors match, as announced now.
    specs: std::sync::RwLock<Vec<DbSpec>>,
    /// `db_service.resources`: which `db` resources this agent serves.
    selectors: Vec<hop_config::services::Selector>,
    /// Bumped when `specs` changes, so that the tunnel announces them again.
    pub changed: tokio::sync::watch::Sender<u64>,
    certs: certs::ClientCerts,
    audit: AgentAudit,
    trackers: Arc<crate::trackers::AgentTrackers>,
    max_statement: usize,
    with_parameters: bool,
    mysql_threads: mysql::Threads,
}

impl std::fmt::Debug for DbService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbService")
            .field("specs", &self.specs)
            .finish_non_exhaustive()
    }
}

/// Why a database Dial is answered with a refusal; the words reach the user (and, for a failed
/// connection or login, the audit log).
#[derive(Debug, thiserror::Error)]
pub enum DbDialRefusal {
    /// The proxy's routes and this agent's databases disagree (a change in flight).
    #[error("this agent does not serve database {service:?}")]
    NotServed { service: String },
    /// Cancelling a PostgreSQL query failed (the database's or the network's).
    #[error("{}", error_chain(.0))]
    Cancel(postgres::CancelError),
    /// The proxy sent a MySQL Dial without the client's handshake (a bug or version mismatch).
    #[error("a MySQL session needs the client's handshake")]
    NoMysqlHandshake,
    /// Connecting or logging in to PostgreSQL failed.
    #[error("database {name:?}: {}", error_chain(cause))]
    Connect {
        name: String,
        cause: connect::DbConnectError,
    },
    #[error("database {name:?}: {}", error_chain(cause))]
    MysqlLogin {
        name: String,
        cause: mysql::LoginError,
    },
}

/// Why the database service could not start (the configuration's, or the disk's).
#[derive(Debug, thiserror::Error)]
pub enum DbServiceError {
    /// A configured database is not one an agent can serve.
    #[error(transparent)]
    Spec(#[from] hop_config::services::DbSpecError),
    /// The agent's key for client certificates could not be made (internal).
    #[error(transparent)]
    Keys(#[from] hop_ca::CaError),
    #[error(transparent)]
    AuditSpool(#[from] crate::node::spool::AuditSpoolError),
}

impl DbService {
    pub fn new(
        specs: Vec<DbSpec>,
        selectors: Vec<hop_config::services::Selector>,
        audit: &hop_config::DbAuditConfig,
        cluster: &str,
        host_id: &str,
        connect: crate::node::audit::ChannelMaker,
        audit_spool: Option<crate::node::spool::AuditSpoolSettings>,
    ) -> Result<Arc<Self>, DbServiceError> {
        for s in &specs {
            s.validate()?;
        }
        Ok(Arc::new(Self {
            specs: std::sync::RwLock::new(specs.clone()),
            static_specs: specs,
            selectors,
            changed: tokio::sync::watch::channel(0).0,
            certs: certs::ClientCerts::new(connect.clone())?,
            trackers: crate::trackers::AgentTrackers::new(connect.clone()),
            audit: AgentAudit::start(
                cluster.to_string(),
                host_id.to_string(),
                connect,
                audit_spool,
            )?,
            max_statement: audit.max_statement_bytes,
            with_parameters: audit.parameters,
            mysql_threads: mysql::Threads::default(),
        }))
    }

    pub fn announcements(&self) -> Vec<ResourceAnnouncement> {
        self.current().iter().map(DbSpec::announcement).collect()
    }

    /// The databases served now.
    pub fn current(&self) -> Vec<DbSpec> {
        self.specs
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    fn spec(&self, name: &str) -> Option<DbSpec> {
        self.current().into_iter().find(|s| s.name == name)
    }

    /// Serves one Dial for a database on the agent's data connection `tunnel`: connects to the
    /// database first, so that a failure reaches the user as the Dial's answer, then hands over
    /// to the protocol.
    pub async fn serve(self: Arc<Self>, dial: DbDial, session_id: [u8; 16], mut tunnel: Tunnel) {
        let answer = |r: Result<(), DbDialRefusal>| {
            Frame::DialResult(DialResult {
                session_id,
                ok: r.is_ok(),
                error: r.err().map(|e| e.to_string()),
            })
        };
        let Some(spec) = self.spec(&dial.service) else {
            let e = DbDialRefusal::NotServed {
                service: dial.service.clone(),
            };
            let _ = tunnel.write_frame(&answer(Err(e))).await;
            return;
        };
        if let Some(cancel) = &dial.cancel {
            let r = postgres::cancel(&spec, cancel).await;
            let _ = tunnel
                .write_frame(&answer(r.map_err(DbDialRefusal::Cancel)))
                .await;
            return;
        }
        // The tracker first: Auth accepts this session's events only once it knows the session.
        // It ends when this function returns (dropped), after the session's last event.
        let _tracker = self
            .trackers
            .open(TrackedSpec {
                session_id: dial.session_id.clone(),
                kind: "db",
                user: dial.user.clone(),
                login: dial.db_user.clone(),
                target: dial.service.clone(),
            })
            .await;
        if spec.protocol() == "mysql" {
            return self.serve_mysql(spec, dial, answer, tunnel).await;
        }
        let db = match postgres::connect(&self, &spec, &dial.db_user).await {
            Ok(db) => db,
            Err(cause) => {
                let name = spec.name.clone();
                let e = DbDialRefusal::Connect { name, cause };
                self.refuse_start(&dial, &answer, &mut tunnel, e).await;
                return;
            }
        };
        if tunnel.write_frame(&answer(Ok(()))).await.is_err() {
            return;
        }
        let (stream, pending) = tunnel.into_inner();
        let client = Prefixed::new(stream, pending);
        postgres::session(&self, &dial, client, db).await;
    }

    async fn serve_mysql(
        self: Arc<Self>,
        spec: DbSpec,
        dial: DbDial,
        answer: impl Fn(Result<(), DbDialRefusal>) -> Frame,
        mut tunnel: Tunnel,
    ) {
        let Some(login) = dial.mysql.clone() else {
            let _ = tunnel
                .write_frame(&answer(Err(DbDialRefusal::NoMysqlHandshake)))
                .await;
            return;
        };
        let (db, thread_id) = match mysql::login(&self, &spec, &dial, &login).await {
            Ok(x) => x,
            Err(cause) => {
                let name = spec.name.clone();
                let e = DbDialRefusal::MysqlLogin { name, cause };
                self.refuse_start(&dial, &answer, &mut tunnel, e).await;
                return;
            }
        };
        if tunnel.write_frame(&answer(Ok(()))).await.is_err() {
            return;
        }
        let (stream, pending) = tunnel.into_inner();
        let client = Prefixed::new(stream, pending);
        mysql::session(&self, &dial, client, db, &login, thread_id).await;
    }

    /// Refuses a session at its start: a failed `db.session.start` on record, the reason to the
    /// proxy.
    async fn refuse_start(
        &self,
        dial: &DbDial,
        answer: &impl Fn(Result<(), DbDialRefusal>) -> Frame,
        tunnel: &mut Tunnel,
        refusal: DbDialRefusal,
    ) {
        self.audit.emit(
            self.event(EventKind::DbSessionStart, dial)
                .failed(EventKind::DbSessionStart, refusal.to_string()),
        );
        let _ = tunnel.write_frame(&answer(Err(refusal))).await;
    }

    /// A new event about session `dial`.
    fn event(&self, kind: EventKind, dial: &DbDial) -> AuditEvent {
        self.audit
            .event(kind, &dial.user)
            .field("db_service", dial.service.clone())
            .field("db_user", dial.db_user.clone())
            .field("db_name", dial.db_name.clone())
            .field("session_id", dial.session_id.clone())
            .remote_str(&dial.client_addr)
    }
}

/// The agent's end of a data connection, as the Dial arrives on it.
pub type Tunnel = crate::dial::DataStream;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn db_specs() {
        let d = DbSpec::parse(
            "name=pg,uri=postgres://127.0.0.1:5433/x,ca_file=/tmp/ca.pem,labels=env=dev;team=web",
        )
        .unwrap();
        assert_eq!(d.protocol(), "postgres");
        assert_eq!(d.target().unwrap(), ("127.0.0.1".into(), 5433));
        assert_eq!(d.server_name().unwrap(), "127.0.0.1");
        assert_eq!(d.labels.get("team").map(String::as_str), Some("web"));
        let d = DbSpec::parse("name=pg,uri=postgresql://db.example").unwrap();
        assert_eq!(d.target().unwrap(), ("db.example".into(), 5432));
        let d = DbSpec::parse("name=maria,uri=mysql://db.example").unwrap();
        assert_eq!(d.protocol(), "mysql");
        assert_eq!(d.target().unwrap(), ("db.example".into(), 3306));
        for bad in [
            "uri=postgres://x:1",
            "name=p",
            "name=p,uri=http://x:1",
            "name=p,uri=redis://x:1",
            "name=p,uri=postgres://",
            "name=p,uri=postgres://x:1,color=red",
            "name=a b,uri=postgres://x:1",
            "name=p,uri=postgres://x:99999",
        ] {
            assert!(DbSpec::parse(bad).is_err(), "{bad}");
        }
    }

    /// The user reads the whole chain of causes in the Dial's refusal, as before the enums.
    #[test]
    fn refusals_name_every_cause() {
        let refused = || std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = DbDialRefusal::Connect {
            name: "pg".into(),
            cause: connect::DbConnectError::Unreachable {
                host: "db".into(),
                port: 5432,
                source: refused(),
            },
        };
        assert_eq!(
            e.to_string(),
            "database \"pg\": cannot connect to db:5432: refused"
        );
        let e = DbDialRefusal::MysqlLogin {
            name: "my".into(),
            cause: mysql::LoginError::Connect(connect::DbConnectError::Certificate(
                certs::ClientCertError::ReachAuth(hop_net::connect::ConnectError::Unreachable {
                    addr: "proxy:3080".into(),
                    cause: refused(),
                }),
            )),
        };
        assert_eq!(
            e.to_string(),
            "database \"my\": reaching Auth: cannot reach the proxy at proxy:3080: refused"
        );
        let e = DbDialRefusal::Cancel(postgres::CancelError::MalformedKey);
        assert_eq!(e.to_string(), "malformed cancel key");
    }

    #[test]
    fn dial_context_round_trips_and_rejects_garbage() {
        let d = DbDial {
            service: "pg".into(),
            user: "alice".into(),
            db_user: "alice".into(),
            db_name: "postgres".into(),
            session_id: "00".into(),
            client_addr: "127.0.0.1:1".into(),
            cancel: Some(DbCancel {
                process_id: 7,
                secret_key: "0102".into(),
            }),
            mysql: None,
            db_names: Some(hop_rbac::DbNames {
                allow: ["shop".to_string()].into(),
                deny: ["*".to_string()].into(),
            }),
        };
        assert_eq!(DbDial::from_target(&d.to_target()).unwrap().unwrap(), d);
        assert!(DbDial::from_target("echo").is_none());
        assert!(DbDial::from_target("@db:{").unwrap().is_err());
    }
}
