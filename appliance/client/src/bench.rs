//! `hop bench ssh|db|app TARGET`: load through a real cluster as the logged-in user, with latency
//! percentiles and errors, in the manner of `tsh bench`.
//!
//! This module owns the load generator, the three workloads and the report. It must never change
//! the cluster beyond what the operations themselves do (sessions, queries, connections, and the
//! audit events and recordings they cause), and it never retries an operation behind the user's
//! back: every failure is counted and its message shown.
//!
//! **Load.** The schedule is open loop: operation *i* is due at `start + i / RATE` whatever the
//! cluster does, and its latency is measured from that due time, not from when a worker picked it
//! up. A cluster that falls behind therefore shows as high latency, never as a politely lower
//! rate (no coordinated omission). `--concurrency` workers carry the operations, so at most that
//! many are in flight; an operation not finished `--timeout` after its due time (waiting for a
//! worker included) is an error. Ctrl-C stops the schedule, waits for the operations in flight
//! and reports what was done; a second Ctrl-C exits at once without a report.
//!
//! **Workloads.**
//! - `ssh`: one operation is one SSH session end to end with Hop's own client (russh): a TLS
//!   connection to the proxy (ALPN `hop-ssh`, the login certificate), a Dial naming
//!   `LOGIN@NODE:22` as `hop proxy ssh` (the ProxyCommand of `hop ssh`) does, the SSH handshake on
//!   that stream, the node's host certificate verified against the host CAs of the login's
//!   `known_hosts` for the name `NODE.CLUSTER` (what OpenSSH checks under `hop ssh`), the login
//!   key and SSH certificate, then `exec COMMAND` (or a PTY and a shell that is typed `COMMAND`
//!   and `exit`) until the exit status and the channel's close. A non-zero exit status is an
//!   error. No process is spawned, so the numbers measure Hop, not `fork`+`exec` of OpenSSH.
//! - `db`: PostgreSQL only (MySQL is not supported yet). The files of `hop db login NAME`; each
//!   worker holds one connection made before the clock starts, as psql does (SSLRequest on the
//!   proxy's port, TLS with the database certificate, StartupMessage, until ReadyForQuery), and an
//!   operation is one simple Query until ReadyForQuery (an ErrorResponse makes it an error). With
//!   `--new-connections` an operation is the whole connection: TLS, start-up, query, Terminate.
//! - `app`: one operation is one TCP application session (ALPN `hop-tcp`, Dial naming the app),
//!   a payload written and the same bytes read back (an echo service), or with `--connect-only`
//!   only the session's opening and close.
//!
//! **Memory.** Latencies of successful operations go into a [`LatencyHistogram`] per worker: exact
//! below 128 µs, 128 log-linear sub-buckets per power of two above (within 0.8%), capped at 2^36 µs
//! (19 h): 3,840 counters (30 KiB) however long the run. Distinct error messages are kept up to
//! [`MAX_DISTINCT_ERRORS`]; the rest are counted together.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, anyhow, bail};
use hop_platform::clock;
use hop_protocols::postgres::{self as pg, BackendMessage, FrontendMessage};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, mpsc};
use tokio::time::Instant;

use super::db::{DbLogin, db_dir};
use super::profile::{self, Login, Paths};
use crate::cli::{BenchArgs, BenchFormat, BenchWorkload};
use hop_net::connect::{open_session, split_host_port};
use hop_net::trust::{ClientCert, client_config};
use hop_net::tunnel::{ALPN_SSH, ALPN_TCP, Prefixed};

/// Distinct error messages kept in a report; further ones are counted as "other errors".
pub const MAX_DISTINCT_ERRORS: usize = 16;

/// `hop bench`: build the workload, run the schedule, print the report.
pub async fn run(a: BenchArgs) -> anyhow::Result<()> {
    let plan = Plan::new(a.rate, a.duration, a.concurrency, a.timeout)?;
    let (workload, label) = match a.workload {
        BenchWorkload::Ssh {
            target,
            command,
            interactive,
        } => (
            Workload::Ssh(SshTarget::new(&target, command, interactive)?),
            ("ssh", target),
        ),
        BenchWorkload::Db {
            name,
            query,
            new_connections,
        } => (
            Workload::Db(DbTarget::new(&name, query, new_connections)?),
            ("db", name),
        ),
        BenchWorkload::App {
            name,
            connect_only,
            payload_size,
        } => (
            Workload::App(AppTarget::new(&name, connect_only, payload_size)?),
            ("app", name),
        ),
    };
    let workload = Arc::new(workload);
    let outcome = drive(&plan, workload).await?;
    let report = Report {
        workload: label.0,
        target: label.1,
        plan,
        outcome,
    };
    match a.format {
        BenchFormat::Text => print!("{}", report.text()),
        BenchFormat::Json => println!("{}", serde_json::to_string_pretty(&report.json())?),
    }
    let o = &report.outcome;
    if o.operations() > 0 && o.succeeded == 0 {
        bail!(
            "every operation failed ({} of {})",
            o.errors.total(),
            o.operations()
        );
    }
    Ok(())
}

/// The schedule: how many operations, how far apart, how many at once, how long each may take.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub rate: f64,
    pub duration: Duration,
    pub concurrency: usize,
    pub timeout: Duration,
    pub operations: u64,
}

impl Plan {
    pub fn new(
        rate: f64,
        duration: Duration,
        concurrency: usize,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        if !(rate.is_finite() && rate > 0.0) {
            bail!("--rate must be a positive number of operations per second");
        }
        if concurrency == 0 {
            bail!("--concurrency must be at least 1");
        }
        if timeout.is_zero() {
            bail!("--timeout must be more than 0");
        }
        // The small epsilon makes 5/s for 2s ten operations despite floating point.
        let operations = (rate * duration.as_secs_f64() + 1e-9).floor();
        if operations < 1.0 {
            bail!("--rate {rate} for --duration {duration:?} schedules no operation");
        }
        Ok(Self {
            rate,
            duration,
            concurrency,
            timeout,
            operations: operations as u64,
        })
    }

    /// When operation `i` is due, counted from the start (computed, not accumulated, so rounding
    /// never drifts).
    pub fn due(&self, i: u64) -> Duration {
        Duration::from_secs_f64(i as f64 / self.rate)
    }
}

/// What a run did.
#[derive(Debug)]
pub struct Outcome {
    pub succeeded: u64,
    pub errors: ErrorTally,
    pub latency: LatencyHistogram,
    /// From the first due time until the last operation ended.
    pub elapsed: Duration,
    /// Ctrl-C stopped the schedule early.
    pub interrupted: bool,
}

impl Outcome {
    pub fn operations(&self) -> u64 {
        self.succeeded + self.errors.total()
    }
}

/// Runs `plan` against `workload`: the workers (with their connections made first, for `db`), the
/// schedule, then the merged results.
async fn drive(plan: &Plan, workload: Arc<Workload>) -> anyhow::Result<Outcome> {
    let mut slots = Vec::with_capacity(plan.concurrency);
    if let Workload::Db(db) = &*workload
        && !db.new_connections
    {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..plan.concurrency {
            let db = db.clone();
            let timeout = plan.timeout;
            set.spawn(async move {
                tokio::time::timeout(timeout, PgConn::connect(&db))
                    .await
                    .map_err(|_| anyhow!("connecting timed out after {timeout:?}"))?
                    .map_err(anyhow::Error::from)
            });
        }
        while let Some(r) = set.join_next().await {
            let conn = r
                .context("a connecting task failed")?
                .with_context(|| format!("cannot connect to database {:?}", db.name))?;
            slots.push(WorkerSlot::Pg(Some(conn)));
        }
    } else {
        slots.resize_with(plan.concurrency, || WorkerSlot::Empty);
    }

    let (tx, rx) = mpsc::channel::<Instant>(plan.concurrency);
    let rx = Arc::new(Mutex::new(rx));
    let start = clock::tokio_now();
    let mut workers = tokio::task::JoinSet::new();
    for slot in slots {
        workers.spawn(worker(workload.clone(), slot, rx.clone(), plan.timeout));
    }
    let mut interrupted = false;
    // One listener for the whole run, so that no Ctrl-C falls between two waits.
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("listening for Ctrl-C")?;
    for i in 0..plan.operations {
        let due = start + plan.due(i);
        let sent = async {
            tokio::time::sleep_until(due).await;
            tx.send(due).await.is_ok()
        };
        tokio::select! {
            ok = sent => if !ok { break },
            _ = sigint.recv() => {
                interrupted = true;
                break;
            }
        }
    }
    drop(tx);
    let mut outcome = Outcome {
        succeeded: 0,
        errors: ErrorTally::default(),
        latency: LatencyHistogram::new(),
        elapsed: Duration::ZERO,
        interrupted,
    };
    let mut asked_to_stop = interrupted;
    if interrupted {
        eprintln!(
            "stopping: waiting for the operations in flight (Ctrl-C again exits without a report)"
        );
    }
    loop {
        let joined = tokio::select! {
            r = workers.join_next() => r,
            _ = sigint.recv() => {
                if asked_to_stop {
                    eprintln!("interrupted again: exiting without a report");
                    std::process::exit(130);
                }
                asked_to_stop = true;
                eprintln!("waiting for the operations in flight (Ctrl-C again exits without a report)");
                continue;
            }
        };
        let Some(r) = joined else { break };
        let rec = r.context("a benchmark worker failed")?;
        outcome.succeeded += rec.succeeded;
        outcome.errors.merge(&rec.errors);
        outcome.latency.merge(&rec.latency);
    }
    outcome.elapsed = clock::tokio_since(start);
    Ok(outcome)
}

/// One worker's results.
struct WorkerRecord {
    succeeded: u64,
    errors: ErrorTally,
    latency: LatencyHistogram,
}

/// What a worker keeps between operations.
enum WorkerSlot {
    Empty,
    /// A database connection, remade by the next operation after a failure.
    Pg(Option<PgConn>),
}

async fn worker(
    workload: Arc<Workload>,
    mut slot: WorkerSlot,
    due_times: Arc<Mutex<mpsc::Receiver<Instant>>>,
    timeout: Duration,
) -> WorkerRecord {
    let mut rec = WorkerRecord {
        succeeded: 0,
        errors: ErrorTally::default(),
        latency: LatencyHistogram::new(),
    };
    loop {
        let Some(due) = due_times.lock().await.recv().await else {
            break;
        };
        let deadline = due + timeout;
        if clock::tokio_now() >= deadline {
            rec.errors.add(format!(
                "not started within {timeout:?} of its due time: every worker was busy (lower --rate or raise --concurrency)"
            ));
            continue;
        }
        match tokio::time::timeout_at(deadline, workload.operation(&mut slot)).await {
            Ok(Ok(())) => {
                rec.latency.record(clock::tokio_since(due));
                rec.succeeded += 1;
            }
            Ok(Err(e)) => rec.errors.add(format!("{e:#}")),
            Err(_) => {
                // The operation was abandoned midway: its connection is in an unknown state.
                if let WorkerSlot::Pg(conn) = &mut slot {
                    *conn = None;
                }
                rec.errors
                    .add(format!("timed out {timeout:?} after its due time"));
            }
        }
    }
    if let WorkerSlot::Pg(Some(conn)) = slot {
        conn.terminate().await;
    }
    rec
}

enum Workload {
    Ssh(SshTarget),
    Db(DbTarget),
    App(AppTarget),
}

impl Workload {
    async fn operation(&self, slot: &mut WorkerSlot) -> anyhow::Result<()> {
        match self {
            Workload::Ssh(t) => t.session().await,
            Workload::App(t) => t.session().await,
            Workload::Db(t) if t.new_connections => {
                let mut conn = PgConn::connect(t).await?;
                conn.query(&t.query).await?;
                conn.terminate().await;
                Ok(())
            }
            Workload::Db(t) => {
                let WorkerSlot::Pg(conn) = slot else {
                    bail!("internal error: a database worker without a connection slot");
                };
                let c = match conn {
                    Some(c) => c,
                    None => conn.insert(PgConn::connect(t).await?),
                };
                match c.query(&t.query).await {
                    Ok(()) => Ok(()),
                    // The server's own error leaves the connection ready for the next query.
                    Err(e @ PgError::Server(_)) => Err(e.into()),
                    Err(e) => {
                        *conn = None;
                        Err(e.into())
                    }
                }
            }
        }
    }
}

fn unspecified() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

/// The login's profile and file paths.
fn current() -> anyhow::Result<(Login, Paths)> {
    let login = profile::current_login()?;
    let (_, paths) = profile::current_profile(&profile::hop_home()?)?;
    Ok((login, paths))
}

// ---------------------------------------------------------------------------------------------
// SSH

/// Everything an SSH session needs, read once from the login's files.
struct SshTarget {
    proxy: String,
    tls: Arc<rustls::ClientConfig>,
    ssh: Arc<russh::client::Config>,
    /// `login@node:22`, the node as the user named it (the proxy resolves `node` and
    /// `node.CLUSTER` alike, and its refusals then quote the user's own words).
    dial_target: String,
    login: String,
    /// The name the host certificate must list.
    host: String,
    host_cas: Arc<Vec<hop_ca::CaPublic>>,
    key: Arc<russh::keys::PrivateKey>,
    cert: russh::keys::Certificate,
    command: String,
    interactive: bool,
}

impl SshTarget {
    fn new(target: &str, command: String, interactive: bool) -> anyhow::Result<Self> {
        let (login_name, node) = target
            .rsplit_once('@')
            .filter(|(l, n)| !l.is_empty() && !n.is_empty())
            .ok_or_else(|| anyhow!("SSH target {target:?} must be LOGIN@NODE"))?;
        let (login, paths) = current()?;
        let cluster = &login.profile.cluster;
        let host = if node.ends_with(&format!(".{cluster}")) {
            node.to_string()
        } else {
            format!("{node}.{cluster}")
        };
        let read = |p: std::path::PathBuf, what: &str| {
            std::fs::read_to_string(&p).with_context(|| format!("reading {what} {}", p.display()))
        };
        let key =
            russh::keys::PrivateKey::from_openssh(read(paths.ssh_key(), "your SSH key")?.trim())
                .context("your SSH key")?;
        let cert = russh::keys::Certificate::from_openssh(
            read(paths.ssh_cert(), "your SSH certificate")?.trim(),
        )
        .context("your SSH certificate")?;
        let host_cas = host_cas(
            &read(paths.known_hosts(), "the cluster's known_hosts")?,
            cluster,
        );
        if host_cas.is_empty() {
            bail!(
                "no host CA in {}: run `hop login` again",
                paths.known_hosts().display()
            );
        }
        // Ask for the node's host certificate (never a bare key: it is what proves the node).
        let preferred = russh::Preferred {
            host_key_certificates: std::borrow::Cow::Owned(vec![
                russh::keys::Algorithm::Ed25519,
                russh::keys::Algorithm::Ecdsa {
                    curve: russh::keys::EcdsaCurve::NistP256,
                },
                russh::keys::Algorithm::Rsa {
                    hash: Some(russh::keys::HashAlg::Sha512),
                },
            ]),
            ..Default::default()
        };
        let ssh = Arc::new(russh::client::Config {
            preferred,
            inactivity_timeout: None,
            keepalive_interval: None,
            nodelay: true,
            ..Default::default()
        });
        Ok(Self {
            proxy: login.profile.proxy.clone(),
            tls: Arc::new(client_config(&login.trust, Some(&login.cert), ALPN_SSH)?),
            ssh,
            dial_target: format!("{login_name}@{node}:22"),
            login: login_name.to_string(),
            host,
            host_cas: Arc::new(host_cas),
            key: Arc::new(key),
            cert,
            command,
            interactive,
        })
    }

    /// One session: proxy, handshake, certificate login, the command, its exit status.
    async fn session(&self) -> anyhow::Result<()> {
        let (tls, pending) = open_session(
            &self.proxy,
            self.tls.clone(),
            &self.dial_target,
            unspecified(),
        )
        .await?;
        let check = HostCertCheck {
            host: self.host.clone(),
            host_cas: self.host_cas.clone(),
        };
        let mut handle =
            russh::client::connect_stream(self.ssh.clone(), Prefixed::new(tls, pending), check)
                .await?;
        let auth = handle
            .authenticate_openssh_cert(self.login.clone(), self.key.clone(), self.cert.clone())
            .await
            .context("SSH authentication")?;
        if !auth.success() {
            bail!(
                "the node refused the login {:?} with your certificate",
                self.login
            );
        }
        let mut channel = handle
            .channel_open_session()
            .await
            .context("opening a session channel")?;
        if self.interactive {
            channel
                .request_pty(false, "xterm", 80, 24, 0, 0, &[])
                .await?;
            channel.request_shell(true).await?;
            channel
                .data_bytes(format!("{}\nexit\n", self.command).into_bytes())
                .await?;
        } else {
            channel.exec(true, self.command.as_bytes()).await?;
            channel.eof().await?;
        }
        let mut status = None;
        while let Some(msg) = channel.wait().await {
            match msg {
                russh::ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
                russh::ChannelMsg::ExitSignal { signal_name, .. } => {
                    bail!("the command was killed by signal {signal_name:?}")
                }
                russh::ChannelMsg::Failure => bail!(
                    "the node refused the {} request",
                    if self.interactive { "shell" } else { "exec" }
                ),
                russh::ChannelMsg::Close => break,
                _ => {}
            }
        }
        let _ = handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
        match status {
            Some(0) => Ok(()),
            Some(n) => Err(anyhow!("the command exited with status {n}")),
            None => Err(anyhow!("the session ended without an exit status")),
        }
    }
}

/// The host CAs of a `known_hosts` written at login (`@cert-authority PATTERN KEY…` lines).
fn host_cas(known_hosts: &str, cluster: &str) -> Vec<hop_ca::CaPublic> {
    known_hosts
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next()? == "@cert-authority").then_some(())?;
            let _pattern = words.next()?;
            let key: Vec<&str> = words.collect();
            (!key.is_empty()).then(|| hop_ca::CaPublic {
                kind: hop_ca::CaKind::Host,
                cluster: cluster.to_string(),
                ssh_public: Some(key.join(" ")),
                x509_cert_pem: None,
                jwt_public_pem: None,
                ssh_fingerprint: None,
                x509_spki_sha256: None,
            })
        })
        .collect()
}

/// Accepts the node only with a host certificate from the cluster's host CA for its name, as
/// OpenSSH does under `hop ssh` (`StrictHostKeyChecking yes`, `@cert-authority`).
struct HostCertCheck {
    host: String,
    host_cas: Arc<Vec<hop_ca::CaPublic>>,
}

impl russh::client::Handler for HostCertCheck {
    type Error = anyhow::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let russh::keys::PublicKeyOrCertificate::Certificate(cert) = key else {
            bail!(
                "{} presented a plain host key, not a host certificate of the cluster",
                self.host
            );
        };
        hop_ca::verify_host_ssh(
            &cert.to_openssh()?,
            &self.host_cas,
            &self.host,
            clock::wall(),
        )
        .map_err(|e| anyhow!("the host certificate of {} was refused: {e}", self.host))?;
        Ok(true)
    }
}

// ---------------------------------------------------------------------------------------------
// Applications

struct AppTarget {
    proxy: String,
    tls: Arc<rustls::ClientConfig>,
    name: String,
    /// Written per operation and expected back; empty with `--connect-only`.
    payload: Vec<u8>,
    connect_only: bool,
}

impl AppTarget {
    fn new(name: &str, connect_only: bool, payload_size: usize) -> anyhow::Result<Self> {
        let login = profile::current_login()?;
        Ok(Self {
            proxy: login.profile.proxy.clone(),
            tls: Arc::new(client_config(&login.trust, Some(&login.cert), ALPN_TCP)?),
            name: name.to_string(),
            payload: (0..payload_size)
                .map(|i| (i.wrapping_mul(31).wrapping_add(7) % 251) as u8)
                .collect(),
            connect_only,
        })
    }

    async fn session(&self) -> anyhow::Result<()> {
        let (mut s, mut got) =
            open_session(&self.proxy, self.tls.clone(), &self.name, unspecified()).await?;
        if !self.connect_only && !self.payload.is_empty() {
            s.write_all(&self.payload).await?;
            s.flush().await?;
            let mut buf = vec![0u8; self.payload.len().clamp(1, 16 * 1024)];
            while got.len() < self.payload.len() {
                let n = s.read(&mut buf).await?;
                if n == 0 {
                    bail!(
                        "the application closed the session after {} of {} bytes (is it an echo service? try --connect-only)",
                        got.len(),
                        self.payload.len()
                    );
                }
                got.extend_from_slice(buf.get(..n).unwrap_or_default());
            }
            if got.get(..self.payload.len()) != Some(&self.payload[..]) {
                bail!(
                    "the application answered other bytes than it was sent (is it an echo service? try --connect-only)"
                );
            }
        }
        let _ = s.shutdown().await;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

/// The largest backend message accepted (a benchmark query's rows are small).
const MAX_PG_MESSAGE: usize = 64 * 1024 * 1024;

/// How a database operation failed, and so whether its connection can be used again.
#[derive(Debug, thiserror::Error)]
enum PgError {
    /// The database (or the proxy, for a refusal) answered an ErrorResponse.
    #[error("{0}")]
    Server(String),
    #[error("the proxy declined TLS for PostgreSQL (answered {0:?} to SSLRequest)")]
    NoTls(char),
    #[error(
        "the database asked for a password: Hop's database access uses the certificate of `hop db login`"
    )]
    PasswordRequested,
    #[error("malformed PostgreSQL message: {0}")]
    Protocol(#[from] pg::PgMessageError),
    #[error("the connection closed before ReadyForQuery")]
    Closed,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

#[derive(Clone)]
struct DbTarget {
    name: String,
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    /// The database certificate of `hop db login`, no ALPN: the proxy sees what psql sends.
    tls: Arc<rustls::ClientConfig>,
    db_user: String,
    db_name: String,
    query: String,
    new_connections: bool,
}

impl DbTarget {
    fn new(name: &str, query: String, new_connections: bool) -> anyhow::Result<Self> {
        let (login, paths) = current()?;
        // The files `hop db login` writes (see `super::db`).
        let dir = db_dir(&paths);
        let meta = dir.join(format!("{name}.json"));
        let text = std::fs::read_to_string(&meta).map_err(|_| {
            anyhow!("not logged in to database {name:?}: run `hop db login {name}`")
        })?;
        let saved: DbLogin =
            serde_json::from_str(&text).with_context(|| format!("corrupt {}", meta.display()))?;
        if saved.protocol == "mysql" {
            bail!("hop bench db supports PostgreSQL only; MySQL is not supported yet");
        }
        let now = clock::wall()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        if saved.expires_unix <= now {
            bail!("the certificate for database {name} has expired: run `hop db login {name}`");
        }
        let read = |p: std::path::PathBuf| {
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
        };
        let cert = ClientCert {
            chain_pem: read(dir.join(format!("{name}.crt")))?,
            key_pem: read(dir.join(format!("{name}.key")))?,
        };
        let (host, port) = split_host_port(&login.profile.proxy)?;
        let server_name = ServerName::try_from(host.clone())
            .map_err(|_| anyhow!("invalid proxy host {host:?}"))?;
        Ok(Self {
            name: name.to_string(),
            host,
            port,
            server_name,
            tls: Arc::new(client_config(&login.trust, Some(&cert), b"")?),
            db_user: saved.db_user,
            db_name: saved.db_name,
            query,
            new_connections,
        })
    }
}

/// One PostgreSQL connection through the proxy, with the bytes read past the last message.
struct PgConn {
    tls: tokio_rustls::client::TlsStream<TcpStream>,
    buf: Vec<u8>,
    /// Where the unparsed bytes of `buf` start.
    at: usize,
}

impl PgConn {
    /// SSLRequest, TLS, StartupMessage, until ReadyForQuery: what psql does.
    async fn connect(t: &DbTarget) -> Result<Self, PgError> {
        let mut tcp = TcpStream::connect((t.host.as_str(), t.port)).await?;
        tcp.set_nodelay(true)?;
        let mut out = Vec::with_capacity(256);
        pg::encode_ssl_request(&mut out);
        tcp.write_all(&out).await?;
        let answer = tcp.read_u8().await?;
        if answer != b'S' {
            return Err(PgError::NoTls(char::from(answer)));
        }
        let tls = tokio_rustls::TlsConnector::from(t.tls.clone())
            .connect(t.server_name.clone(), tcp)
            .await?;
        let mut conn = Self {
            tls,
            buf: Vec::with_capacity(8 * 1024),
            at: 0,
        };
        out.clear();
        pg::encode_startup_message(
            pg::ProtocolVersion { major: 3, minor: 0 },
            &[
                ("user", &t.db_user),
                ("database", &t.db_name),
                ("application_name", "hop-bench"),
            ],
            &mut out,
        )
        .map_err(|e| PgError::Server(format!("cannot encode the start-up message: {e}")))?;
        conn.tls.write_all(&out).await?;
        conn.tls.flush().await?;
        conn.until_ready().await?;
        Ok(conn)
    }

    /// One simple query, until ReadyForQuery.
    async fn query(&mut self, sql: &str) -> Result<(), PgError> {
        let mut out = Vec::with_capacity(sql.len() + 6);
        FrontendMessage::Query {
            sql: sql.as_bytes(),
        }
        .encode(&mut out);
        self.tls.write_all(&out).await?;
        self.tls.flush().await?;
        self.until_ready().await
    }

    /// Terminate and close; errors do not matter any more.
    async fn terminate(mut self) {
        let mut out = Vec::with_capacity(5);
        FrontendMessage::Terminate.encode(&mut out);
        let _ = self.tls.write_all(&out).await;
        let _ = self.tls.shutdown().await;
    }

    /// Reads backend messages until ReadyForQuery; the first ErrorResponse is the result.
    async fn until_ready(&mut self) -> Result<(), PgError> {
        let mut failure: Option<String> = None;
        loop {
            let parsed = pg::parse_backend_with_limit(
                self.buf.get(self.at..).unwrap_or_default(),
                MAX_PG_MESSAGE,
            )?;
            let Some((msg, len)) = parsed else {
                if self.at > 0 {
                    self.buf.drain(..self.at);
                    self.at = 0;
                }
                if self.tls.read_buf(&mut self.buf).await? == 0 {
                    return Err(failure.map_or(PgError::Closed, PgError::Server));
                }
                continue;
            };
            let ready = match msg {
                BackendMessage::ReadyForQuery(_) => true,
                BackendMessage::ErrorResponse(fields) => {
                    if failure.is_none() {
                        failure = Some(error_text(&fields));
                    }
                    false
                }
                BackendMessage::Authentication(pg::Authentication::Ok) => false,
                BackendMessage::Authentication(_) => return Err(PgError::PasswordRequested),
                _ => false,
            };
            self.at += len;
            if ready {
                return failure.map_or(Ok(()), |e| Err(PgError::Server(e)));
            }
        }
    }
}

/// `FATAL 28000: message`, as psql would show it.
fn error_text(f: &pg::ErrorFields<'_>) -> String {
    let s = |b: Option<&[u8]>| b.map(|b| String::from_utf8_lossy(b).into_owned());
    let severity = s(f.severity()).unwrap_or_else(|| "ERROR".into());
    let message = s(f.message()).unwrap_or_else(|| "(no message)".into());
    match s(f.code()) {
        Some(code) => format!("{severity} {code}: {message}"),
        None => format!("{severity}: {message}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Results

/// Error messages and how often each happened, in order of first appearance, at most
/// [`MAX_DISTINCT_ERRORS`] distinct ones.
#[derive(Debug, Default, Clone)]
pub struct ErrorTally {
    distinct: Vec<(String, u64)>,
    /// Errors whose message did not fit among the distinct ones.
    other: u64,
}

impl ErrorTally {
    pub fn add(&mut self, message: String) {
        self.add_n(message, 1);
    }

    fn add_n(&mut self, message: String, n: u64) {
        if let Some(e) = self.distinct.iter_mut().find(|(m, _)| *m == message) {
            e.1 += n;
        } else if self.distinct.len() < MAX_DISTINCT_ERRORS {
            self.distinct.push((message, n));
        } else {
            self.other += n;
        }
    }

    pub fn merge(&mut self, other: &ErrorTally) {
        for (m, n) in &other.distinct {
            self.add_n(m.clone(), *n);
        }
        self.other += other.other;
    }

    pub fn total(&self) -> u64 {
        self.distinct.iter().map(|(_, n)| n).sum::<u64>() + self.other
    }

    /// Most frequent first (first seen first among equals), then the rest as one line.
    pub fn lines(&self) -> Vec<(String, u64)> {
        let mut v = self.distinct.clone();
        v.sort_by_key(|e| std::cmp::Reverse(e.1));
        if self.other > 0 {
            v.push(("(other errors)".to_string(), self.other));
        }
        v
    }
}

/// Sub-buckets per power of two: 2^7 = 128, so a bucket is at most 1/128 of its value wide.
const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;
/// Values are clamped below 2^36 µs (about 19 hours).
const MAX_BITS: u32 = 36;
const BUCKETS: usize = (SUB + (MAX_BITS - SUB_BITS) as u64 * SUB) as usize;

/// A log-linear histogram of latencies in microseconds: exact below 128 µs, within 1/128 (0.8%)
/// above, in a fixed 3,840 counters however many values it holds.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    counts: Vec<u64>,
    total: u64,
    min: u64,
    max: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    pub fn new() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            total: 0,
            min: u64::MAX,
            max: 0,
        }
    }

    pub fn record(&mut self, d: Duration) {
        self.record_micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    pub fn record_micros(&mut self, us: u64) {
        let us = us.min((1 << MAX_BITS) - 1);
        if let Some(c) = self.counts.get_mut(bucket_of(us)) {
            *c += 1;
        }
        self.total += 1;
        self.min = self.min.min(us);
        self.max = self.max.max(us);
    }

    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn min(&self) -> Option<u64> {
        (self.total > 0).then_some(self.min)
    }

    pub fn max(&self) -> Option<u64> {
        (self.total > 0).then_some(self.max)
    }

    /// The value at percentile `p` (0–100) in µs: the middle of the bucket holding the value of
    /// rank ⌈p/100 × count⌉, within [min, max]; `None` when empty.
    pub fn percentile(&self, p: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((p / 100.0 * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(bucket_middle(i).clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }
}

/// The bucket of a value below 2^[`MAX_BITS`].
fn bucket_of(us: u64) -> usize {
    if us < SUB {
        return us as usize;
    }
    let exp = 63 - us.leading_zeros();
    let shift = exp - SUB_BITS;
    let sub = (us >> shift) - SUB;
    (SUB + u64::from(shift) * SUB + sub) as usize
}

/// The middle of bucket `i`.
fn bucket_middle(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let shift = (i - SUB) / SUB;
    let sub = (i - SUB) % SUB;
    ((SUB + sub) << shift) + ((1u64 << shift) >> 1)
}

/// A finished run, ready to print.
struct Report {
    workload: &'static str,
    target: String,
    plan: Plan,
    outcome: Outcome,
}

/// The percentiles reported, with their JSON names.
const PERCENTILES: [(&str, f64); 4] =
    [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99_9", 99.9)];

impl Report {
    /// Operations per second over the run: the scheduled duration, or longer if the last
    /// operations ended after it (or shorter, when Ctrl-C stopped it).
    fn achieved_rate(&self) -> f64 {
        let o = &self.outcome;
        let span = if o.interrupted {
            o.elapsed
        } else {
            o.elapsed.max(self.plan.duration)
        };
        if span.is_zero() {
            0.0
        } else {
            o.operations() as f64 / span.as_secs_f64()
        }
    }

    fn latency_ms(&self) -> Vec<(&'static str, Option<f64>)> {
        let h = &self.outcome.latency;
        let ms = |us: Option<u64>| us.map(|v| v as f64 / 1000.0);
        let mut v = vec![("min", ms(h.min()))];
        v.extend(PERCENTILES.iter().map(|(n, p)| (*n, ms(h.percentile(*p)))));
        v.push(("max", ms(h.max())));
        v
    }

    fn json(&self) -> serde_json::Value {
        let o = &self.outcome;
        let latency: serde_json::Map<String, serde_json::Value> = self
            .latency_ms()
            .into_iter()
            .map(|(k, v)| (k.to_string(), serde_json::json!(v.map(round3))))
            .collect();
        serde_json::json!({
            "workload": self.workload,
            "target": self.target,
            "rate": self.plan.rate,
            "duration_s": self.plan.duration.as_secs_f64(),
            "concurrency": self.plan.concurrency,
            "scheduled": self.plan.operations,
            "operations": o.operations(),
            "succeeded": o.succeeded,
            "errors": o.errors.total(),
            "error_messages": o.errors.lines().into_iter()
                .map(|(m, n)| serde_json::json!({"message": m, "count": n}))
                .collect::<Vec<_>>(),
            "interrupted": o.interrupted,
            "elapsed_s": round3(o.elapsed.as_secs_f64()),
            "achieved_rate": round3(self.achieved_rate()),
            "latency_ms": latency,
        })
    }

    fn text(&self) -> String {
        use std::fmt::Write as _;
        let o = &self.outcome;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "hop bench {} {}: {} operations in {:.2} s{}",
            self.workload,
            self.target,
            o.operations(),
            o.elapsed.as_secs_f64(),
            if o.interrupted { " (interrupted)" } else { "" }
        );
        let _ = writeln!(
            s,
            "  rate:        {:.1}/s achieved ({}/s requested for {:?}, concurrency {})",
            self.achieved_rate(),
            self.plan.rate,
            self.plan.duration,
            self.plan.concurrency
        );
        let total = o.errors.total();
        let share = if o.operations() > 0 {
            100.0 * total as f64 / o.operations() as f64
        } else {
            0.0
        };
        let _ = writeln!(s, "  succeeded:   {}", o.succeeded);
        let _ = writeln!(s, "  errors:      {total} ({share:.1}%)");
        for (m, n) in o.errors.lines().into_iter().take(5) {
            let _ = writeln!(s, "    {n:>6} × {m}");
        }
        if o.errors.lines().len() > 5 {
            let _ = writeln!(s, "    … (--format json lists them all)");
        }
        let by_name: BTreeMap<_, _> = self.latency_ms().into_iter().collect();
        if o.latency.count() == 0 {
            let _ = writeln!(s, "  latency:     no operation succeeded");
        } else {
            let _ = writeln!(
                s,
                "  latency (ms, from each operation's due time; successful operations):"
            );
            let names = ["min", "p50", "p90", "p99", "p99_9", "max"];
            let header: Vec<String> = names
                .iter()
                .map(|n| format!("{:>9}", n.replace('_', ".")))
                .collect();
            let values: Vec<String> = names
                .iter()
                .map(|n| match by_name.get(n).copied().flatten() {
                    Some(v) => format!("{v:>9.2}"),
                    None => format!("{:>9}", "-"),
                })
                .collect();
            let _ = writeln!(s, "  {}", header.join(""));
            let _ = writeln!(s, "  {}", values.join(""));
        }
        s
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_exact_then_within_one_128th() {
        for v in 0..SUB {
            assert_eq!(bucket_middle(bucket_of(v)), v);
        }
        let mut v = SUB;
        while v < (1 << MAX_BITS) {
            let i = bucket_of(v);
            assert!(i < BUCKETS, "{v} → {i}");
            let mid = bucket_middle(i);
            let err = mid.abs_diff(v) as f64 / v as f64;
            assert!(err <= 1.0 / SUB as f64, "{v} → {mid} ({err})");
            // Buckets are ordered like their values.
            assert!(bucket_of(v + 1) >= i);
            v = v * 17 / 16 + 1;
        }
        assert_eq!(bucket_of((1 << MAX_BITS) - 1), BUCKETS - 1);
    }

    #[test]
    fn percentiles_of_a_uniform_spread() {
        let mut h = LatencyHistogram::new();
        assert_eq!(h.percentile(50.0), None);
        assert_eq!(h.min(), None);
        for us in 1..=10_000 {
            h.record_micros(us);
        }
        assert_eq!(h.count(), 10_000);
        assert_eq!(h.min(), Some(1));
        assert_eq!(h.max(), Some(10_000));
        for (p, want) in [
            (50.0, 5_000.0),
            (90.0, 9_000.0),
            (99.0, 9_900.0),
            (99.9, 9_990.0),
        ] {
            let got = h.percentile(p).unwrap() as f64;
            assert!(
                (got - want).abs() / want < 0.01,
                "p{p}: {got} instead of {want}"
            );
        }
        assert_eq!(h.percentile(100.0), Some(10_000));
        assert_eq!(h.percentile(0.0), Some(1));
    }

    #[test]
    fn merged_histograms_equal_one_fed_everything() {
        let (mut a, mut b, mut all) = (
            LatencyHistogram::new(),
            LatencyHistogram::new(),
            LatencyHistogram::new(),
        );
        for us in [3, 700, 12_000, 5, 99_999_999_999] {
            a.record_micros(us);
            all.record_micros(us);
        }
        for us in [1, 250_000] {
            b.record_micros(us);
            all.record_micros(us);
        }
        a.merge(&b);
        assert_eq!(a.counts, all.counts);
        assert_eq!((a.min(), a.max()), (Some(1), Some((1 << MAX_BITS) - 1)));
        assert_eq!(a.percentile(50.0), all.percentile(50.0));
    }

    #[test]
    fn error_tally_keeps_the_first_distinct_messages_and_counts_the_rest() {
        let mut t = ErrorTally::default();
        for i in 0..(MAX_DISTINCT_ERRORS + 4) {
            t.add(format!("error {i}"));
        }
        t.add("error 3".into());
        let mut u = ErrorTally::default();
        u.add("error 3".into());
        u.add("brand new".into());
        t.merge(&u);
        assert_eq!(t.total(), MAX_DISTINCT_ERRORS as u64 + 4 + 3);
        let lines = t.lines();
        assert_eq!(lines[0], ("error 3".to_string(), 3));
        assert_eq!(lines.last().unwrap(), &("(other errors)".to_string(), 5));
    }

    #[test]
    fn the_plan_is_open_loop_at_fixed_intervals() {
        let p = Plan::new(5.0, Duration::from_secs(2), 16, Duration::from_secs(30)).unwrap();
        assert_eq!(p.operations, 10);
        assert_eq!(p.due(0), Duration::ZERO);
        assert_eq!(p.due(3), Duration::from_millis(600));
        let p = Plan::new(3.0, Duration::from_secs(1), 1, Duration::from_secs(1)).unwrap();
        assert_eq!(p.operations, 3);
        assert!(Plan::new(0.0, Duration::from_secs(1), 1, Duration::from_secs(1)).is_err());
        assert!(Plan::new(1.0, Duration::from_millis(500), 1, Duration::from_secs(1)).is_err());
        assert!(Plan::new(1.0, Duration::from_secs(1), 0, Duration::from_secs(1)).is_err());
    }

    #[test]
    fn host_cas_come_from_cert_authority_lines() {
        let kh = "# comment\n@cert-authority * ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ0 hop-c-host-ca\nnode ssh-ed25519 AAAA\n";
        let cas = host_cas(kh, "c");
        assert_eq!(cas.len(), 1);
        assert_eq!(
            cas[0].ssh_public.as_deref(),
            Some("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ0 hop-c-host-ca")
        );
        assert_eq!(cas[0].kind, hop_ca::CaKind::Host);
    }
}
