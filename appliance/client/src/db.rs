//! `hop db ls|login|logout|connect|config|env` and `hop proxy db`: the user's side of database
//! access.
//!
//! A database login is a certificate routed to one database. The files live where libpq can take
//! their paths: no `:` (libpq reads `sslkey=a:b` as an OpenSSL engine), so the proxy's address is
//! written with `_`:
//! ```text
//! $HOP_HOME/db/<proxy_port>/<user>/<name>.key    P-256 key (PKCS#8, 0600: libpq insists)
//! $HOP_HOME/db/<proxy_port>/<user>/<name>.crt    the route certificate (user CA)
//! $HOP_HOME/db/<proxy_port>/<user>/<name>.json   database user, database name, protocol, expiry
//! $HOP_HOME/db/<proxy_port>/<user>/cas.pem       the CAs that sign the proxy's certificate
//! ```
//! psql connects straight to the proxy's one port with those files (`sslmode=verify-full`, the
//! proxy's CA from `cas.pem`); `hop proxy db` serves clients that cannot present a certificate
//! with a plain local listener that carries each connection to the proxy (ALPN `hop-postgres`).
//!
//! Under a role's `require_session_mfa`, `hop db login` (and `hop db connect`, which logs in
//! when the saved certificate is not fresh) taps the security key first: the route
//! certificate is then valid one minute, for that database, user and name alone.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::profile::{self, Login, Paths};
use crate::cli::{DbCommand, DbConfigFormat, DbLoginArgs, OutputFormat};
use hop_api::proto::database_access_client::DatabaseAccessClient;
use hop_api::proto::{Database, DatabaseRouteRequest, ListDatabasesRequest};
use hop_net::connect::{dial_proxy, split_host_port, status_error, tls_channel_with_peer};
use hop_net::trust::{ClientCert, client_config};
use hop_net::tunnel::{ALPN_MYSQL, ALPN_POSTGRES, relay};
use hop_platform::clock;

/// One database login, as saved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DbLogin {
    pub name: String,
    pub protocol: String,
    pub db_user: String,
    pub db_name: String,
    pub expires_unix: i64,
}

struct DbFiles {
    key: PathBuf,
    crt: PathBuf,
    meta: PathBuf,
}

/// The directory of the current login's database files.
pub fn db_dir(paths: &Paths) -> PathBuf {
    paths
        .home
        .join("db")
        .join(paths.proxy.replace(':', "_"))
        .join(&paths.user)
}

fn files(paths: &Paths, name: &str) -> DbFiles {
    let dir = db_dir(paths);
    DbFiles {
        key: dir.join(format!("{name}.key")),
        crt: dir.join(format!("{name}.crt")),
        meta: dir.join(format!("{name}.json")),
    }
}

fn now_unix() -> i64 {
    clock::wall()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The database API through the login's proxy; the saved trust is refreshed first when the
/// proxy's certificate says it is stale.
async fn client(login: &Login) -> anyhow::Result<DatabaseAccessClient<tonic::transport::Channel>> {
    let (ch, peer) =
        tls_channel_with_peer(&login.profile.proxy, &login.trust, Some(&login.cert)).await?;
    crate::trust::refresh_trust_or_warn(login, peer.get().as_deref()).await;
    Ok(DatabaseAccessClient::new(ch))
}

async fn list(login: &Login) -> anyhow::Result<Vec<Database>> {
    Ok(client(login)
        .await?
        .list_databases(ListDatabasesRequest {})
        .await
        .map_err(status_error)?
        .into_inner()
        .databases)
}

pub async fn run(cmd: DbCommand) -> anyhow::Result<()> {
    match cmd {
        DbCommand::Ls(out) => ls(out.format).await,
        DbCommand::Login(a) => login(&a).await.map(|l| {
            println!(
                "Logged in to database {} as database user {:?} on {:?} (until {}).\nConnect with `hop db connect {}`, or see `hop db config {}`.",
                l.name,
                l.db_user,
                l.db_name,
                hop_api::timestamps::rfc3339_unix(l.expires_unix),
                l.name,
                l.name
            );
        }),
        DbCommand::Logout { name } => logout(name),
        DbCommand::Connect { login: a, args } => connect(&a, &args).await,
        DbCommand::Config { name, format } => config(name, format),
        DbCommand::Env { name } => env(name),
    }
}

async fn ls(format: OutputFormat) -> anyhow::Result<()> {
    let login = profile::current_login()?;
    let dbs = list(&login).await?;
    let (_, paths) = profile::current_profile(&profile::hop_home()?)?;
    let logged_in = |name: &str| saved(&paths, name).ok().map(|l| l.db_user);
    if format != OutputFormat::Text {
        let v: Vec<_> = dbs
            .iter()
            .map(|d| {
                serde_json::json!({
                    "name": d.name, "protocol": d.protocol, "uri": d.uri, "labels": d.labels,
                    "agent_id": d.agent_id, "db_users": d.db_users, "db_names": d.db_names,
                    "logged_in_as": logged_in(&d.name),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if dbs.is_empty() {
        println!("No databases you can reach are connected.");
        return Ok(());
    }
    let rows: Vec<[String; 5]> = dbs
        .iter()
        .map(|d| {
            let mut labels: Vec<String> =
                d.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            let name = match logged_in(&d.name) {
                Some(u) => format!("> {} ({u})", d.name),
                None => d.name.clone(),
            };
            [
                name,
                d.protocol.clone(),
                d.db_users.join(","),
                d.db_names.join(","),
                labels.join(","),
            ]
        })
        .collect();
    let header = ["NAME", "PROTOCOL", "DB USERS", "DB NAMES", "LABELS"];
    let mut w = header.map(str::len);
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let line = |r: [&str; 5]| {
        r.iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    println!("{}", line(header));
    for r in &rows {
        println!("{}", line([&r[0], &r[1], &r[2], &r[3], &r[4]]));
    }
    Ok(())
}

/// The one concrete value among `allowed` (no `*`), if there is exactly one.
fn only(allowed: &[String]) -> Option<&String> {
    match allowed {
        [one] if one != "*" => Some(one),
        _ => None,
    }
}

async fn login(a: &DbLoginArgs) -> anyhow::Result<DbLogin> {
    let login = profile::current_login()?;
    let (_, paths) = profile::current_profile(&profile::hop_home()?)?;
    let dbs = list(&login).await?;
    let Some(db) = dbs.iter().find(|d| d.name == a.name) else {
        bail!(
            "database {:?} is not one you can reach (`hop db ls` lists them)",
            a.name
        );
    };
    let db_user = match (&a.db_user, only(&db.db_users)) {
        (Some(u), _) => u.clone(),
        (None, Some(u)) => u.clone(),
        (None, None) => bail!(
            "name the database user with --db-user; your roles allow: {}",
            if db.db_users.is_empty() {
                "none".to_string()
            } else {
                db.db_users.join(", ")
            }
        ),
    };
    let db_name = match (&a.db_name, only(&db.db_names)) {
        (Some(n), _) => n.clone(),
        (None, Some(n)) => n.clone(),
        // PostgreSQL's own default: the database named like the user.
        (None, None) => db_user.clone(),
    };
    let key = hop_ca::generate_x509_keypair(&mut rand::rng()).map_err(|e| anyhow!("{e}"))?;
    // Under a role's require_session_mfa: a tap, and a one-minute certificate for this very
    // database, user and name.
    let target = (db.name.as_str(), db_user.as_str(), db_name.as_str());
    let r = match crate::mfa::session::database_route(&login, target, &key.public_spki_der).await? {
        Some(r) => r,
        None => {
            issue_route(
                &login,
                DatabaseRouteRequest {
                    service: db.name.clone(),
                    db_user: db_user.clone(),
                    db_name: db_name.clone(),
                    tls_public_key: key.public_spki_der.clone(),
                },
            )
            .await?
        }
    };
    let f = files(&paths, &db.name);
    if let Some(dir) = f.key.parent() {
        hop_net::files::ensure_dir(dir)?;
    }
    hop_net::files::write_private(&f.key, key.private_pkcs8_pem.as_bytes())?;
    hop_net::files::write_private(&f.crt, r.tls_certificate_pem.as_bytes())?;
    hop_net::files::write_private(
        &db_dir(&paths).join("cas.pem"),
        r.trusted_cas_pem.as_bytes(),
    )?;
    let saved = DbLogin {
        name: db.name.clone(),
        protocol: db.protocol.clone(),
        db_user,
        db_name,
        expires_unix: r.expires_unix,
    };
    hop_net::files::write_private(&f.meta, serde_json::to_string_pretty(&saved)?.as_bytes())?;
    Ok(saved)
}

/// A certificate routed to one database for `login` (`hop db login`, a bot's database output).
pub(crate) async fn issue_route(
    login: &Login,
    req: DatabaseRouteRequest,
) -> anyhow::Result<hop_api::proto::DatabaseRouteResponse> {
    Ok(client(login)
        .await?
        .issue_database_route(req)
        .await
        .map_err(status_error)?
        .into_inner())
}

fn saved(paths: &Paths, name: &str) -> anyhow::Result<DbLogin> {
    let f = files(paths, name);
    let text = std::fs::read_to_string(&f.meta)
        .map_err(|_| anyhow!("not logged in to database {name:?}: run `hop db login {name}`"))?;
    serde_json::from_str(&text).with_context(|| format!("corrupt {}", f.meta.display()))
}

/// The saved logins, by name.
fn all_saved(paths: &Paths) -> Vec<DbLogin> {
    let dir = db_dir(paths);
    let mut out: Vec<DbLogin> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e
                .file_name()
                .to_string_lossy()
                .strip_suffix(".json")?
                .to_string();
            saved(paths, &name).ok()
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The login `name` names, or the only one there is.
fn pick(paths: &Paths, name: Option<String>) -> anyhow::Result<DbLogin> {
    match name {
        Some(n) => saved(paths, &n),
        None => {
            let all = all_saved(paths);
            match all.as_slice() {
                [one] => Ok(one.clone()),
                [] => bail!("not logged in to any database: run `hop db login NAME`"),
                many => bail!(
                    "logged in to several databases ({}); name one",
                    many.iter()
                        .map(|l| l.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        }
    }
}

fn logout(name: Option<String>) -> anyhow::Result<()> {
    let (_, paths) = profile::current_profile(&profile::hop_home()?)?;
    let names: Vec<String> = match name {
        Some(n) => vec![saved(&paths, &n)?.name],
        None => all_saved(&paths).into_iter().map(|l| l.name).collect(),
    };
    for n in &names {
        let f = files(&paths, n);
        profile::remove_files(&[&f.key, &f.crt, &f.meta])?;
        println!("Logged out of database {n}.");
    }
    if names.is_empty() {
        println!("Not logged in to any database.");
    }
    Ok(())
}

/// How to reach one database through the proxy with the saved files.
struct Connection {
    host: String,
    port: u16,
    root: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    login: DbLogin,
}

impl Connection {
    fn current(name: Option<String>) -> anyhow::Result<Self> {
        let (p, paths) = profile::current_profile(&profile::hop_home()?)?;
        let login = pick(&paths, name)?;
        let (host, port) = split_host_port(&p.proxy)?;
        let f = files(&paths, &login.name);
        Ok(Self {
            host,
            port,
            root: db_dir(&paths).join("cas.pem"),
            cert: f.crt,
            key: f.key,
            login,
        })
    }

    fn expired(&self) -> bool {
        self.login.expires_unix <= now_unix()
    }

    /// A libpq keyword/value connection string.
    fn conninfo(&self) -> String {
        libpq_conninfo(&LibpqFiles {
            host: &self.host,
            port: self.port,
            root: &self.root,
            cert: &self.cert,
            key: &self.key,
            db_user: &self.login.db_user,
            db_name: &self.login.db_name,
        })
    }
}

/// What libpq needs to reach a database through the proxy with a route certificate.
pub(crate) struct LibpqFiles<'a> {
    pub host: &'a str,
    pub port: u16,
    pub root: &'a std::path::Path,
    pub cert: &'a std::path::Path,
    pub key: &'a std::path::Path,
    pub db_user: &'a str,
    pub db_name: &'a str,
}

/// A libpq keyword/value connection string (`sslmode=verify-full`).
pub(crate) fn libpq_conninfo(f: &LibpqFiles<'_>) -> String {
    let q = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
    format!(
        "host={} port={} sslmode=verify-full sslrootcert={} sslcert={} sslkey={} user={} dbname={}",
        q(f.host),
        f.port,
        q(&f.root.to_string_lossy()),
        q(&f.cert.to_string_lossy()),
        q(&f.key.to_string_lossy()),
        q(f.db_user),
        q(f.db_name),
    )
}

fn config(name: Option<String>, format: DbConfigFormat) -> anyhow::Result<()> {
    let c = Connection::current(name)?;
    match format {
        DbConfigFormat::Text => {
            println!("Name:      {}", c.login.name);
            println!("Host:      {}", c.host);
            println!("Port:      {}", c.port);
            println!("User:      {}", c.login.db_user);
            println!("Database:  {}", c.login.db_name);
            println!("CA:        {}", c.root.display());
            println!("Cert:      {}", c.cert.display());
            println!("Key:       {}", c.key.display());
            println!("SSL mode:  verify-full");
            println!(
                "Expires:   {}",
                hop_api::timestamps::rfc3339_unix(c.login.expires_unix)
            );
            println!();
            println!("psql \"{}\"", c.conninfo());
        }
        DbConfigFormat::Json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "name": c.login.name, "host": c.host, "port": c.port,
                    "user": c.login.db_user, "database": c.login.db_name,
                    "ca": c.root, "cert": c.cert, "key": c.key, "sslmode": "verify-full",
                    "expires_unix": c.login.expires_unix,
                }))?
            );
        }
        DbConfigFormat::Cmd => println!("psql \"{}\"", c.conninfo()),
        DbConfigFormat::Uri => println!("{}", c.conninfo()),
    }
    Ok(())
}

fn env(name: Option<String>) -> anyhow::Result<()> {
    let c = Connection::current(name)?;
    let q = |v: &str| format!("'{}'", v.replace('\'', "'\\''"));
    for (k, v) in [
        ("PGHOST", c.host.clone()),
        ("PGPORT", c.port.to_string()),
        ("PGSSLMODE", "verify-full".into()),
        ("PGSSLROOTCERT", c.root.to_string_lossy().into_owned()),
        ("PGSSLCERT", c.cert.to_string_lossy().into_owned()),
        ("PGSSLKEY", c.key.to_string_lossy().into_owned()),
        ("PGUSER", c.login.db_user.clone()),
        ("PGDATABASE", c.login.db_name.clone()),
    ] {
        println!("export {k}={}", q(&v));
    }
    Ok(())
}

async fn connect(a: &DbLoginArgs, args: &[String]) -> anyhow::Result<()> {
    let (_, paths) = profile::current_profile(&profile::hop_home()?)?;
    let fresh = match saved(&paths, &a.name) {
        Ok(l) => {
            l.expires_unix > now_unix() + 30
                && a.db_user.as_ref().is_none_or(|u| *u == l.db_user)
                && a.db_name.as_ref().is_none_or(|n| *n == l.db_name)
        }
        Err(_) => false,
    };
    if !fresh {
        login(a).await?;
    }
    let c = Connection::current(Some(a.name.clone()))?;
    if c.expired() {
        bail!("the certificate for database {} has expired", a.name);
    }
    if c.login.protocol == "mysql" {
        return connect_mysql(&c, args).await;
    }
    let mut cmd = std::process::Command::new("psql");
    cmd.arg(c.conninfo()).args(args);
    use std::os::unix::process::CommandExt;
    let e = cmd.exec();
    Err(anyhow!(
        "cannot run psql: {e} (install the PostgreSQL client, e.g. apt-get install postgresql-client)"
    ))
}

/// A local listener for `c`'s database: what `hop proxy db` and `hop db connect` (MySQL) run.
struct LocalProxy {
    listener: TcpListener,
    proxy: String,
    cfg: Arc<rustls::ClientConfig>,
    mysql: bool,
}

impl LocalProxy {
    async fn bind(c: &Connection, bind: IpAddr, port: u16) -> anyhow::Result<Self> {
        let name = &c.login.name;
        if c.expired() {
            bail!("the certificate for database {name} has expired: run `hop db login {name}`");
        }
        let login = profile::current_login()?;
        let cert = ClientCert {
            chain_pem: std::fs::read_to_string(&c.cert)
                .with_context(|| format!("reading {}", c.cert.display()))?,
            key_pem: std::fs::read_to_string(&c.key)
                .with_context(|| format!("reading {}", c.key.display()))?,
        };
        let mysql = c.login.protocol == "mysql";
        let alpn = if mysql { ALPN_MYSQL } else { ALPN_POSTGRES };
        let cfg = Arc::new(client_config(&login.trust, Some(&cert), alpn)?);
        let listener = TcpListener::bind((bind, port))
            .await
            .with_context(|| format!("cannot listen on {bind}:{port}"))?;
        Ok(Self {
            listener,
            proxy: login.profile.proxy.clone(),
            cfg,
            mysql,
        })
    }

    async fn serve(self) -> anyhow::Result<()> {
        loop {
            let (sock, peer) = self.listener.accept().await?;
            let (cfg, proxy, mysql) = (self.cfg.clone(), self.proxy.clone(), self.mysql);
            tokio::spawn(async move {
                let r = if mysql {
                    carry_mysql(sock, &proxy, cfg).await
                } else {
                    carry(sock, &proxy, cfg).await
                };
                if let Err(e) = r {
                    tracing::warn!(%peer, error = %format!("{e:#}"), "database connection ended");
                }
            });
        }
    }
}

/// `hop proxy db NAME`: a plain local listener that carries each connection to the proxy over
/// TLS with the database certificate.
pub async fn proxy_db(name: String, bind: IpAddr, port: u16) -> anyhow::Result<()> {
    let c = Connection::current(Some(name.clone()))?;
    let local = LocalProxy::bind(&c, bind, port).await?;
    let addr = local.listener.local_addr()?;
    if local.mysql {
        println!(
            "Proxying connections to database {name} on {addr}\n  mysql -h {} -P {} -u {} -D {}",
            addr.ip(),
            addr.port(),
            c.login.db_user,
            c.login.db_name
        );
    } else {
        println!(
            "Proxying connections to database {name} on {addr}\n  psql \"host={} port={} sslmode=disable user={} dbname={}\"",
            addr.ip(),
            addr.port(),
            c.login.db_user,
            c.login.db_name
        );
    }
    local.serve().await
}

/// `hop db connect` for MySQL: a local listener on a free loopback port for the `mysql` client
/// it runs (MySQL clients cannot present the certificate at the proxy's port themselves).
async fn connect_mysql(c: &Connection, args: &[String]) -> anyhow::Result<()> {
    let local = LocalProxy::bind(c, IpAddr::from([127, 0, 0, 1]), 0).await?;
    let addr = local.listener.local_addr()?;
    tokio::spawn(local.serve());
    let program = ["mariadb", "mysql"]
        .into_iter()
        .find(|p| {
            std::env::var_os("PATH")
                .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(p).is_file()))
        })
        .ok_or_else(|| {
            anyhow!("no mysql client found: install one (e.g. apt-get install mariadb-client)")
        })?;
    let status = tokio::process::Command::new(program)
        .args(["-h", &addr.ip().to_string(), "-P", &addr.port().to_string()])
        .args(["-u", &c.login.db_user, "-D", &c.login.db_name])
        .args(args)
        .status()
        .await
        .with_context(|| format!("running {program}"))?;
    std::process::exit(status.code().unwrap_or(1));
}

/// One local MySQL connection: carried as it is (the proxy greets the client).
async fn carry_mysql(
    sock: TcpStream,
    proxy: &str,
    cfg: Arc<rustls::ClientConfig>,
) -> anyhow::Result<()> {
    let _ = sock.set_nodelay(true);
    let upstream = dial_proxy(proxy, cfg).await?;
    relay(sock, Vec::new(), upstream, Vec::new()).await?;
    Ok(())
}

/// One local connection: answer `N` to encryption requests (the local leg is plain loopback),
/// then carry the rest, startup message first, to the proxy.
async fn carry(
    mut sock: TcpStream,
    proxy: &str,
    cfg: Arc<rustls::ClientConfig>,
) -> anyhow::Result<()> {
    let _ = sock.set_nodelay(true);
    let first;
    loop {
        let mut len = [0u8; 4];
        sock.read_exact(&mut len).await?;
        let n = u32::from_be_bytes(len) as usize;
        if !(8..=hop_protocols::postgres::MAX_STARTUP_LEN).contains(&n) {
            bail!("not a PostgreSQL startup packet (length {n})");
        }
        let mut packet = vec![0u8; n];
        packet[..4].copy_from_slice(&len);
        sock.read_exact(&mut packet[4..]).await?;
        match hop_protocols::postgres::parse_startup(&packet) {
            Ok(Some((
                hop_protocols::postgres::StartupPacket::SslRequest
                | hop_protocols::postgres::StartupPacket::GssEncRequest,
                _,
            ))) => sock.write_all(b"N").await?,
            Ok(Some(_)) => {
                first = packet;
                break;
            }
            Ok(None) | Err(_) => bail!("malformed PostgreSQL startup packet"),
        }
    }
    let upstream = dial_proxy(proxy, cfg).await?;
    // `first` goes to the proxy ahead of the rest of the client's bytes.
    relay(sock, first, upstream, Vec::new()).await?;
    Ok(())
}
