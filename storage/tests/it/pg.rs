//! A PostgreSQL 15 server for the conformance suite: one per run of this test binary (started on
//! first use), a fresh database per test. Started as the `postgres` OS user (initdb refuses
//! root), listening on a Unix socket in its temp dir for plain connections and on a free
//! loopback port for TLS with client-certificate (`cert`) authentication, under a throwaway CA
//! made with `openssl`. A watchdog shell stops it when this process exits (statics are never
//! dropped). Without the PostgreSQL binaries, [`server`] is `None` and tests print `SKIP`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hop_storage::{ManualClock, PgBackend, PgOptions};

use crate::support::start_time;

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// The role that logs in with a client certificate (its CN).
pub const CERT_USER: &str = "hopcert";

pub struct PgServer {
    dir: tempfile::TempDir,
    port: u16,
    /// Outlives this process by design (it stops the server then); never waited for.
    _watchdog: std::process::Child,
}

static SERVER: OnceLock<Option<PgServer>> = OnceLock::new();
static NEXT_DB: AtomicUsize = AtomicUsize::new(0);

/// The server, started on first use; `None` (after printing SKIP) without PostgreSQL.
pub fn server() -> Option<&'static PgServer> {
    SERVER.get_or_init(PgServer::start).as_ref()
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn openssl(args: &[&str], dir: &Path) {
    run_ok(Command::new("openssl").args(args).current_dir(dir));
}

/// A CA, a server certificate for localhost/127.0.0.1 and a client certificate for
/// [`CERT_USER`], in `dir`; plus an unrelated CA (`other-ca.crt`).
fn make_certs(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    for ca in ["ca", "other-ca"] {
        let (key, crt, subj) = (
            format!("{ca}.key"),
            format!("{ca}.crt"),
            format!("/CN={ca}"),
        );
        let mut args = vec!["req", "-x509"];
        args.extend(ec);
        args.extend(["-days", "1", "-subj", &subj, "-keyout", &key, "-out", &crt]);
        openssl(&args, dir);
    }
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for (name, cn, ext) in [
        ("server", "localhost", "san.ext"),
        ("client", CERT_USER, "client.ext"),
    ] {
        let (key, csr, crt, subj) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
            format!("/CN={cn}"),
        );
        let mut args = vec!["req"];
        args.extend(ec);
        args.extend(["-subj", &subj, "-keyout", &key, "-out", &csr]);
        openssl(&args, dir);
        let args = [
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-out",
            &crt,
            "-extfile",
            ext,
        ];
        openssl(&args, dir);
    }
}

impl PgServer {
    fn start() -> Option<Self> {
        if !Path::new(PG_BIN).join("postgres").exists() {
            eprintln!("SKIP: PostgreSQL 15 is not installed ({PG_BIN})");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        make_certs(d);
        let port = free_port();
        run_ok(
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(d),
        );
        // The server reads its key as postgres; the client key stays readable by root (us).
        run_ok(Command::new("chmod").arg("600").arg(d.join("server.key")));
        run_ok(
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(format!("{PG_BIN}/initdb"))
                .arg("-D")
                .arg(d.join("data"))
                .args(["-U", "postgres", "--auth-local=trust", "--auth-host=reject"])
                .args(["-E", "UTF8"])
                .stdout(Stdio::null()),
        );
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{d}'\n\
             ssl = on\nssl_cert_file = '{d}/server.crt'\nssl_key_file = '{d}/server.key'\n\
             ssl_ca_file = '{d}/ca.crt'\nfsync = off\nsynchronous_commit = off\n\
             full_page_writes = off\nmax_connections = 300\n",
            d = d.display()
        );
        let pgconf = d.join("data/postgresql.conf");
        let mut text = std::fs::read_to_string(&pgconf).unwrap();
        text.push_str(&conf);
        std::fs::write(&pgconf, text).unwrap();
        std::fs::write(
            d.join("data/pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 cert\n",
        )
        .unwrap();
        // Runs postgres in the foreground under a watchdog that stops it (fast shutdown) once
        // this test process is gone.
        // (Not SIGINT: a shell starts background jobs with it ignored. Smart shutdown is enough
        // once this process, and so every client, is gone.)
        let script = format!(
            "{PG_BIN}/postgres -D '{data}' >'{log}' 2>&1 & pg=$!; \
             while [ -d /proc/{parent} ] && kill -0 $pg 2>/dev/null; do sleep 0.5; done; \
             kill -TERM $pg 2>/dev/null; wait $pg; rm -rf '{dir}'",
            data = d.join("data").display(),
            log = d.join("pg.log").display(),
            parent = std::process::id(),
            dir = d.display(),
        );
        let watchdog = Command::new("runuser")
            .args(["-u", "postgres", "--", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = Self {
            dir,
            port,
            _watchdog: watchdog,
        };
        for _ in 0..200 {
            let ok = Command::new(format!("{PG_BIN}/pg_isready"))
                .arg("-h")
                .arg(server.socket_dir())
                .args(["-p", &port.to_string(), "-q"])
                .status()
                .unwrap()
                .success();
            if ok {
                server.sql("postgres", &format!("CREATE ROLE {CERT_USER} LOGIN"));
                return Some(server);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "PostgreSQL did not start: {}",
            std::fs::read_to_string(server.file("pg.log")).unwrap_or_default()
        );
    }

    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A file made at start (certificates and keys).
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs SQL as the superuser in `db`; returns the unaligned output.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(format!("{PG_BIN}/psql"))
            .arg("-h")
            .arg(self.socket_dir())
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", db])
            .args(["-v", "ON_ERROR_STOP=1", "-Atqc", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// A new, empty database (owned by [`CERT_USER`], so both logins can use it).
    pub fn fresh_db(&self) -> String {
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::Relaxed)
        );
        self.sql(
            "postgres",
            &format!("CREATE DATABASE {name} OWNER {CERT_USER}"),
        );
        name
    }

    /// A conn string to `db` over the Unix socket, as the superuser, without TLS.
    pub fn socket_url(&self, db: &str) -> String {
        format!(
            "postgresql://postgres@/{db}?host={}&port={}&sslmode=disable",
            self.socket_dir().display(),
            self.port
        )
    }

    /// A conn string to `db` over TCP with TLS and the client certificate.
    pub fn tls_url(&self, db: &str, root: &str) -> String {
        format!(
            "postgresql://{CERT_USER}@localhost:{}/{db}?sslmode=verify-full&sslrootcert={}\
             &sslcert={}&sslkey={}",
            self.port,
            self.file(root).display(),
            self.file("client.crt").display(),
            self.file("client.key").display()
        )
    }

    /// Terminates the change-feed connections of every backend on `db`; how many.
    pub fn kill_followers(&self, db: &str) -> usize {
        self.sql(
            "postgres",
            &format!(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = '{db}' AND application_name = '{}'",
                hop_storage::postgres::WATCH_APPLICATION_NAME
            ),
        )
        .parse()
        .unwrap()
    }
}

/// Options for tests: the defaults, polled often.
pub fn test_options() -> PgOptions {
    PgOptions {
        poll_interval: Duration::from_millis(200),
        ..PgOptions::default()
    }
}

/// A backend on `db` under `clock`.
pub fn open(server: &PgServer, db: &str, clock: &ManualClock, options: PgOptions) -> PgBackend {
    PgBackend::open(&server.socket_url(db), Arc::new(clock.clone()), options).unwrap()
}

/// A backend on a fresh database under a manual clock; `None` without PostgreSQL.
pub fn pg_backend() -> Option<(PgBackend, ManualClock, String)> {
    let server = server()?;
    let db = server.fresh_db();
    let clock = ManualClock::new(start_time());
    let backend = open(server, &db, &clock, test_options());
    Some((backend, clock, db))
}
