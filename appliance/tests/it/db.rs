//! Database access end to end with real programs: PostgreSQL 15 (TLS on, client-certificate
//! authentication trusting Hop's db CA, no passwords) behind a db agent joined by token, and
//! `psql`/`pgbench` through the proxy's one port.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::clock;
use crate::harness::{Appliance, HOP, PASSWORD, free_port, stderr, stdout};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

pub struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A PostgreSQL server in its own directory (owned by the `postgres` OS user), stopped on drop.
pub struct Postgres {
    dir: tempfile::TempDir,
    port: u16,
}

impl Postgres {
    /// Starts PostgreSQL with the server certificate Hop issued (`hop admin auth sign --format
    /// db`): TLS only, `cert` authentication for everyone but `pwuser`, who needs a password.
    pub(crate) fn start(a: &Appliance) -> Option<Self> {
        if !Path::new(PG_BIN).join("postgres").exists() {
            eprintln!("SKIP: PostgreSQL 15 is not installed ({PG_BIN})");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        sign_server_files(a, d);
        let port = free_port();
        run_ok(
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(d),
        );
        let as_pg = |args: &[&str]| {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).args(args);
            c
        };
        run_ok(
            as_pg(&[
                &format!("{PG_BIN}/initdb"),
                "-D",
                d.join("data").to_str().unwrap(),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=reject",
                "-E",
                "UTF8",
            ])
            .stdout(Stdio::null()),
        );
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{d}'\nssl = on\nssl_cert_file = '{d}/server.crt'\nssl_key_file = '{d}/server.key'\nssl_ca_file = '{d}/server.cas'\nlog_connections = on\nlog_statement = 'all'\nlog_line_prefix = '%m [%p] %q%u@%d '\nfsync = off\n",
            d = d.display()
        );
        let pgconf = d.join("data/postgresql.conf");
        let mut text = std::fs::read_to_string(&pgconf).unwrap();
        text.push_str(&conf);
        std::fs::write(&pgconf, text).unwrap();
        std::fs::write(
            d.join("data/pg_hba.conf"),
            "local all all trust\nhostssl all pwuser 127.0.0.1/32 scram-sha-256\nhostssl all all 127.0.0.1/32 cert\n",
        )
        .unwrap();
        run_ok(
            as_pg(&[
                &format!("{PG_BIN}/pg_ctl"),
                "-D",
                d.join("data").to_str().unwrap(),
                "-l",
                d.join("pg.log").to_str().unwrap(),
                "-w",
                "start",
            ])
            .stdout(Stdio::null()),
        );
        let pg = Self { dir, port };
        for sql in [
            "CREATE ROLE alice LOGIN",
            "CREATE ROLE \"Alice\" LOGIN",
            "CREATE ROLE bob LOGIN",
            "CREATE ROLE pwuser LOGIN PASSWORD 'secret'",
            "CREATE DATABASE hopdb OWNER alice",
        ] {
            pg.local_sql(sql);
        }
        Some(pg)
    }

    /// Runs SQL as the superuser over the local socket (not through Hop).
    pub(crate) fn local_sql(&self, sql: &str) -> String {
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--", "psql", "-h"])
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-Atqc", sql])
            .output()
            .unwrap();
        assert!(out.status.success(), "{sql}: {}", stderr(&out));
        stdout(&out)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pg.log")).unwrap_or_default()
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.path().join("server.cas")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(format!("{PG_BIN}/pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The database server's key, certificate and trusted CA from `hop admin auth sign --format db`,
/// as `dir/server.{key,crt,cas}`.
fn sign_server_files(a: &Appliance, dir: &Path) {
    let out = a.ok(&[
        "admin",
        "auth",
        "sign",
        "--format",
        "db",
        "--host",
        "localhost,127.0.0.1",
        "--out",
        dir.join("server").to_str().unwrap(),
    ]);
    assert!(out.contains("server.crt"), "{out}");
}

fn run_ok(c: &mut Command) {
    let out = c.output().unwrap();
    assert!(out.status.success(), "{c:?}: {}", stderr(&out));
}

fn db_token(a: &Appliance) -> String {
    a.join_token("db")
}

pub(crate) fn start_db_agent(a: &Appliance, pg: &Postgres) -> Killed {
    start_db_agent_via(a, &a.addr, pg, &[])
}

/// [`start_db_agent`] (its token from `a`) tunnelled to `proxy`, with `extra` arguments.
pub(crate) fn start_db_agent_via(
    a: &Appliance,
    proxy: &str,
    pg: &Postgres,
    extra: &[&str],
) -> Killed {
    let data = a.dir.path().join("db-agent");
    let spec = format!(
        "name=pg,uri=postgres://127.0.0.1:{},ca_file={},labels=env=test",
        pg.port,
        pg.ca_file().display()
    );
    // Besides its configured database, the agent serves `db` resources labelled source=resource.
    let config = a.dir.path().join("db-agent.yaml");
    std::fs::write(
        &config,
        "version: v1\ndb_service:\n  resources:\n    - labels: {source: resource}\n",
    )
    .unwrap();
    let child = Command::new(HOP)
        .args([
            "start", "--roles", "db", "--proxy", proxy, "--ca-pin", &a.pin,
        ])
        .args(["--token", &db_token(a), "--db", &spec, "--config"])
        .arg(&config)
        .args(extra)
        .arg("--data-dir")
        .arg(&data)
        .env("HOP_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(data.with_extension("log")).unwrap(),
        ))
        .spawn()
        .unwrap();
    Killed(child)
}

pub(crate) fn wait_for_db(a: &Appliance, name: &str) {
    let deadline = clock::monotonic_now() + Duration::from_secs(30);
    loop {
        let out = a.hop(&["db", "ls", "--format", "json"]);
        if out.status.success() && stdout(&out).contains(&format!("\"name\": \"{name}\"")) {
            std::thread::sleep(Duration::from_millis(300));
            return;
        }
        assert!(
            clock::monotonic_now() < deadline,
            "database {name} did not appear: {} {}",
            stdout(&out),
            stderr(&out)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// psql with the connection string `hop db config --format uri` prints, overriding `extra`
/// keywords (e.g. `user=bob`).
pub(crate) fn psql(a: &Appliance, extra: &str, args: &[&str]) -> Output {
    let conninfo = a.ok(&["db", "config", "pg", "--format", "uri"]);
    Command::new("psql")
        .arg(format!("{} {extra}", conninfo.trim()))
        .args(["-X", "-v", "ON_ERROR_STOP=1"])
        .args(args)
        .env("HOP_HOME", &a.home)
        .env_remove("PGPASSWORD")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

const DB_ROLE: &str = "kind: role\nversion: v7\nmetadata:\n  name: db-alice\nspec:\n  allow:\n    db_labels:\n      env: test\n    db_users: [alice, pwuser]\n    db_names: [postgres, hopdb]\n";

pub fn setup() -> Option<(Appliance, Postgres, Killed)> {
    let a = Appliance::start("");
    let pg = Postgres::start(&a)?;
    let role = a.dir.path().join("db-role.yaml");
    std::fs::write(&role, DB_ROLE).unwrap();
    a.ok(&["admin", "create", "-f", role.to_str().unwrap()]);
    let secret = a.add_user("alice", "db-alice", "alice");
    let out = a.login("alice", PASSWORD, &secret);
    assert!(out.status.success(), "{}", stderr(&out));
    let agent = start_db_agent(&a, &pg);
    wait_for_db(&a, "pg");
    Some((a, pg, agent))
}

#[test]
fn psql_through_the_proxy_with_audit_and_cancel() {
    let Some((a, pg, _agent)) = setup() else {
        return;
    };
    let ls = a.ok(&["db", "ls"]);
    assert!(
        ls.contains("pg") && ls.contains("postgres") && ls.contains("alice"),
        "{ls}"
    );
    let out = a.ok(&[
        "db",
        "login",
        "pg",
        "--db-user",
        "alice",
        "--db-name",
        "hopdb",
    ]);
    assert!(out.contains("Logged in to database pg"), "{out}");
    let env = a.ok(&["db", "env"]);
    assert!(env.contains("export PGSSLMODE='verify-full'"), "{env}");

    // Queries, a transaction, COPY in and out, a prepared statement. Every session stays on
    // the worker that accepted it: none is handed to the control plane.
    let handed_off = a.handoffs("session");
    let out = psql(
        &a,
        "",
        &[
            "-c",
            "CREATE TABLE t (id int primary key, v text)",
            "-c",
            "BEGIN; INSERT INTO t VALUES (1, 'one'); INSERT INTO t VALUES (2, 'two'); COMMIT",
            "-c",
            "\\copy t FROM STDIN",
            "-c",
            "PREPARE byid(int) AS SELECT v FROM t WHERE id = $1",
            "-c",
            "EXECUTE byid(2)",
            "-c",
            "SELECT current_user, current_database(), count(*) FROM t",
        ],
    );
    // `\copy … FROM STDIN` reads psql's stdin, which is empty: zero rows copied, the COPY
    // protocol still runs through the proxy.
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("two"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.split('|').map(str::trim).eq(["alice", "hopdb", "2"])),
        "{text}"
    );

    let mut copy = Command::new("psql")
        .arg(a.ok(&["db", "config", "pg", "--format", "uri"]).trim())
        .args(["-X", "-c", "\\copy t FROM STDIN"])
        .env("HOP_HOME", &a.home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = copy.stdin.take().unwrap();
        for i in 3..1003 {
            writeln!(stdin, "{i}\trow {i}").unwrap();
        }
    }
    let out = copy.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("COPY 1000"), "{}", stdout(&out));
    let out = psql(&a, "", &["-Atc", "SELECT count(*) FROM t"]);
    assert_eq!(stdout(&out).trim(), "1002");
    assert_eq!(
        a.handoffs("session"),
        handed_off,
        "PostgreSQL sessions left their worker"
    );

    // The extended protocol (Parse/Bind/Execute) with pgbench's prepared mode.
    let conninfo = a.ok(&["db", "config", "pg", "--format", "uri"]);
    let bench = |args: &[&str]| {
        Command::new("pgbench")
            .args(args)
            .arg(conninfo.trim())
            .env("HOP_HOME", &a.home)
            .output()
            .unwrap()
    };
    let out = bench(&["-i", "-s", "1", "-q"]);
    assert!(out.status.success(), "pgbench -i: {}", stderr(&out));
    let out = bench(&["-M", "prepared", "-S", "-t", "20", "-c", "2"]);
    assert!(out.status.success(), "pgbench: {}", stderr(&out));
    assert!(
        stdout(&out).contains("number of failed transactions: 0"),
        "{}",
        stdout(&out)
    );

    // Ctrl-C cancels the running query, on the right session.
    let mut slow = Command::new("psql")
        .arg(conninfo.trim())
        .args(["-X", "-c", "SELECT pg_sleep(60)"])
        .env("HOP_HOME", &a.home)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = clock::monotonic_now() + Duration::from_secs(20);
    while !pg
        .local_sql("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)' AND state = 'active'")
        .trim()
        .eq("1")
    {
        assert!(clock::monotonic_now() < deadline, "the slow query never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    let started = clock::monotonic_now();
    unsafe_sigint(slow.id());
    let status = slow.wait().unwrap();
    let mut err = String::new();
    use std::io::Read;
    slow.stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success());
    assert!(
        err.contains("canceling statement due to user request"),
        "{err}"
    );
    assert!(clock::since(started) < Duration::from_secs(15));

    // `hop db connect` runs psql with the same options.
    let out = Command::new(HOP)
        .args(["db", "connect", "pg", "--", "-Atc", "SELECT 40 + 2"])
        .env("HOP_HOME", &a.home)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "42");

    // `hop proxy db`: a plain local listener for clients without certificates.
    let port = free_port();
    let mut local = Command::new(HOP)
        .args(["proxy", "db", "pg", "--port", &port.to_string()])
        .env("HOP_HOME", &a.home)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(local.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("Proxying"), "{line}");
    }
    let out = Command::new("psql")
        .arg(format!(
            "host=127.0.0.1 port={port} sslmode=prefer user=alice dbname=hopdb"
        ))
        .args(["-X", "-Atc", "SELECT 'through the local proxy'"])
        .output()
        .unwrap();
    let _ = local.kill();
    let _ = local.wait();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("through the local proxy"));

    // Every statement is in the audit log with the user, database and database user.
    let deadline = clock::monotonic_now() + Duration::from_secs(20);
    let events = loop {
        let out = a.ok(&[
            "admin", "audit", "search", "--type", "db.query", "--limit", "1000", "--format", "json",
        ]);
        if out.contains("through the local proxy") && out.contains("pg_sleep(60)") {
            break out;
        }
        assert!(
            clock::monotonic_now() < deadline,
            "db.query events missing: {out}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    for needle in [
        "CREATE TABLE t (id int primary key, v text)",
        "INSERT INTO t VALUES (1, 'one')",
        "EXECUTE byid(2)",
        "PREPARE byid(int) AS SELECT v FROM t WHERE id = $1",
        "SELECT 40 + 2",
        // pgbench -M prepared: statements arrive by Parse/Bind/Execute.
        "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
    ] {
        assert!(events.contains(needle), "{needle} not audited");
    }
    let line = events
        .lines()
        .find(|l| l.contains("EXECUTE byid(2)"))
        .unwrap();
    let ev: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(ev["user"], "alice");
    assert_eq!(ev["db_user"], "alice");
    assert_eq!(ev["db_name"], "hopdb");
    assert_eq!(ev["db_service"], "pg");
    assert_eq!(ev["code"], "H6002I");
    let line = events
        .lines()
        .find(|l| l.contains("pgbench_accounts WHERE aid"))
        .unwrap();
    let ev: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(ev["via"], "execute");
    let starts = a.ok(&[
        "admin",
        "audit",
        "search",
        "--type",
        "db.session.start",
        "--format",
        "json",
    ]);
    assert!(starts.contains("\"success\":true"), "{starts}");
    // After the start-up, PostgreSQL sessions moved on a data-plane worker, none on tokio.
    let (_, m) = a.diag_get("/metrics");
    assert!(
        m.contains("hop_relay_sessions_total{path=\"control_plane\"} 0")
            && !m.contains("hop_relay_sessions_total{path=\"worker\"} 0"),
        "{m}"
    );
}

fn unsafe_sigint(pid: u32) {
    let ok = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[test]
fn refusals_reach_psql_and_never_the_database() {
    let Some((a, pg, _agent)) = setup() else {
        return;
    };
    a.ok(&[
        "db",
        "login",
        "pg",
        "--db-user",
        "alice",
        "--db-name",
        "postgres",
    ]);
    let out = psql(&a, "", &["-Atc", "SELECT 1"]);
    assert!(out.status.success(), "{}", stderr(&out));

    for (extra, expect) in [
        ("user=bob", "access to database \"pg\" denied"),
        // Case-exact, as PostgreSQL compares names.
        ("user=Alice", "access to database \"pg\" denied"),
        ("dbname=template1", "access to database \"pg\" denied"),
    ] {
        let out = psql(&a, extra, &["-Atc", "SELECT 1"]);
        assert!(!out.status.success(), "{extra} was let in");
        assert!(stderr(&out).contains(expect), "{extra}: {}", stderr(&out));
    }
    let log = pg.log();
    for who in ["user=bob", "user=Alice", "database=template1"] {
        assert!(!log.contains(who), "the database saw {who}: {log}");
    }

    // A database that asks for a password: the agent refuses to pass it on.
    let out = psql(&a, "user=pwuser", &["-Atc", "SELECT 1"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("client certificates only"),
        "{}",
        stderr(&out)
    );

    // Plaintext PostgreSQL is refused with a message saying to use TLS.
    let conninfo = a.ok(&["db", "config", "pg", "--format", "uri"]);
    let out = Command::new("psql")
        .arg(format!("{} sslmode=disable", conninfo.trim()))
        .args(["-X", "-Atc", "SELECT 1"])
        .env("HOP_HOME", &a.home)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("over TLS only"), "{}", stderr(&out));

    // Without a database certificate (the plain login certificate): refused.
    let cfg: serde_json::Value =
        serde_json::from_str(&a.ok(&["db", "config", "pg", "--format", "json"])).unwrap();
    // (Copied: libpq reads a `:` in sslkey, as in the login's directory, as an OpenSSL engine.)
    let (_, _, login_crt) = crate::harness::key_paths(&a, "alice");
    let crt = a.dir.path().join("login.crt");
    let key = a.dir.path().join("login.key");
    std::fs::copy(&login_crt, &crt).unwrap();
    std::fs::copy(login_crt.with_file_name("alice-tls.key"), &key).unwrap();
    let out = Command::new("psql")
        .arg(format!(
            "host=127.0.0.1 port={} sslmode=verify-full sslrootcert={} sslcert={} sslkey={} user=alice dbname=postgres",
            cfg["port"],
            cfg["ca"].as_str().unwrap(),
            crt.display(),
            key.display()
        ))
        .args(["-X", "-Atc", "SELECT 1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not for a database"),
        "{}",
        stderr(&out)
    );

    // A `db` resource created by an administrator is served by the agent whose selector
    // matches it, and goes away when deleted.
    let res = a.dir.path().join("pg2.yaml");
    std::fs::write(
        &res,
        format!(
            "kind: db\nversion: v3\nmetadata:\n  name: pg2\n  labels: {{env: test, source: resource}}\nspec:\n  protocol: postgres\n  uri: 127.0.0.1:{}\n  tls:\n    ca_cert: |\n{}",
            pg.port,
            std::fs::read_to_string(pg.ca_file())
                .unwrap()
                .lines()
                .map(|l| format!("      {l}\n"))
                .collect::<String>()
        ),
    )
    .unwrap();
    a.ok(&["admin", "create", "-f", res.to_str().unwrap()]);
    wait_for_db(&a, "pg2");
    a.ok(&[
        "db",
        "login",
        "pg2",
        "--db-user",
        "alice",
        "--db-name",
        "postgres",
    ]);
    let conninfo = a.ok(&["db", "config", "pg2", "--format", "uri"]);
    let out = Command::new("psql")
        .arg(conninfo.trim())
        .args(["-X", "-Atc", "SELECT 'via a db resource'"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("via a db resource"));
    a.ok(&["admin", "rm", "db/pg2"]);
    let deadline = clock::monotonic_now() + Duration::from_secs(30);
    while a.ok(&["db", "ls", "--format", "json"]).contains("\"pg2\"") {
        assert!(
            clock::monotonic_now() < deadline,
            "pg2 still served after its deletion"
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // Refusals are audited.
    let refused = a.ok(&[
        "admin",
        "audit",
        "search",
        "--type",
        "db.session.start",
        "--format",
        "json",
    ]);
    assert!(refused.contains("\"db_user\":\"bob\""), "{refused}");
    assert!(refused.contains("\"success\":false"), "{refused}");

    // An expired database certificate: carol's login lives 5 seconds.
    let secret = a.add_user("carol", "db-alice", "alice");
    let out = a.hop_stdin(
        &[
            "login",
            "--proxy",
            &a.addr,
            "--ca-pin",
            &a.pin,
            "--user",
            "carol",
            "--password-stdin",
            "--otp",
            &crate::harness::totp(&secret, 30),
            "--ttl",
            "5s",
        ],
        &format!("{PASSWORD}\n"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    a.ok(&[
        "db",
        "login",
        "pg",
        "--db-user",
        "alice",
        "--db-name",
        "postgres",
    ]);
    std::thread::sleep(Duration::from_secs(7));
    let before = pg.log().matches("connection authorized").count();
    let out = psql(&a, "", &["-Atc", "SELECT 1"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("certificate expired"),
        "{}",
        stderr(&out)
    );
    assert_eq!(pg.log().matches("connection authorized").count(), before);
}

/// A MariaDB server in its own directory with Hop's server certificate, TLS required, and users
/// bound to Hop's db CA client certificates (`REQUIRE SUBJECT`), stopped on drop.
struct Mariadb {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
}

impl Mariadb {
    pub(crate) fn start(a: &Appliance) -> Option<Self> {
        if Command::new("mariadbd").arg("--version").output().is_err() {
            eprintln!("SKIP: MariaDB is not installed");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        sign_server_files(a, d);
        std::fs::create_dir(d.join("data")).unwrap();
        // A temporary directory of its own: servers bootstrapping side by side in /tmp clash on
        // their temporary tables' names.
        std::fs::create_dir(d.join("tmp")).unwrap();
        run_ok(Command::new("chown").args(["-R", "mysql:mysql"]).arg(d));
        run_ok(
            Command::new("mariadb-install-db")
                .args(["--no-defaults", "--user=mysql", "--skip-test-db"])
                .arg(format!("--datadir={}", d.join("data").display()))
                .arg(format!("--tmpdir={}", d.join("tmp").display()))
                .stdout(Stdio::null()),
        );
        let port = free_port();
        let child = Command::new("mariadbd")
            .args(["--no-defaults", "--user=mysql", "--bind-address=127.0.0.1"])
            .arg(format!("--datadir={}", d.join("data").display()))
            .arg(format!("--tmpdir={}", d.join("tmp").display()))
            .arg(format!("--port={port}"))
            .arg(format!("--socket={}", d.join("mysqld.sock").display()))
            .arg(format!("--pid-file={}", d.join("mysqld.pid").display()))
            .arg(format!("--log-error={}", d.join("mysqld.err").display()))
            .arg(format!(
                "--general-log-file={}",
                d.join("general.log").display()
            ))
            .arg("--general-log=1")
            .arg(format!("--ssl-ca={}", d.join("server.cas").display()))
            .arg(format!("--ssl-cert={}", d.join("server.crt").display()))
            .arg(format!("--ssl-key={}", d.join("server.key").display()))
            .arg("--require-secure-transport=ON")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let m = Self { dir, port, child };
        let deadline = clock::monotonic_now() + Duration::from_secs(30);
        while !m.dir.path().join("mysqld.sock").exists() {
            assert!(clock::monotonic_now() < deadline, "MariaDB did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        m.local_sql(
            "CREATE USER alice@'%' REQUIRE SUBJECT '/CN=alice/O=test.cluster'; \
             CREATE USER bob@'%' REQUIRE X509; \
             CREATE DATABASE shop; GRANT ALL ON shop.* TO alice@'%'; GRANT ALL ON shop.* TO bob@'%'; \
             CREATE DATABASE other; GRANT ALL ON other.* TO alice@'%'",
        );
        Some(m)
    }

    fn local_sql(&self, sql: &str) -> String {
        let out = Command::new("mariadb")
            .arg("-S")
            .arg(self.dir.path().join("mysqld.sock"))
            .args(["-u", "root", "-N", "-e", sql])
            .output()
            .unwrap();
        assert!(out.status.success(), "{sql}: {}", stderr(&out));
        stdout(&out)
    }

    fn general_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("general.log")).unwrap_or_default()
    }
}

impl Drop for Mariadb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const MARIA_ROLE: &str = "kind: role\nversion: v7\nmetadata:\n  name: db-maria\nspec:\n  allow:\n    db_labels:\n      engine: mariadb\n    db_users: [alice]\n    db_names: [shop]\n";

fn mariadb_client(port: u16, user: &str, db: &str, args: &[&str]) -> Output {
    Command::new("mariadb")
        .args([
            "-h",
            "127.0.0.1",
            "-P",
            &port.to_string(),
            "-u",
            user,
            "-D",
            db,
        ])
        .args(["--skip-ssl", "-N"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// MariaDB behind a db agent, alice (role db-maria: user alice, schema shop) logged in to it,
/// and `hop proxy db maria` listening on `port`.
struct MariaSession {
    a: Appliance,
    m: Mariadb,
    port: u16,
    _agent: Killed,
    _local: Killed,
}

fn maria_setup() -> Option<MariaSession> {
    let a = Appliance::start("");
    let m = Mariadb::start(&a)?;
    let role = a.dir.path().join("maria-role.yaml");
    std::fs::write(&role, MARIA_ROLE).unwrap();
    a.ok(&["admin", "create", "-f", role.to_str().unwrap()]);
    let secret = a.add_user("alice", "db-maria", "alice");
    assert!(a.login("alice", PASSWORD, &secret).status.success());
    let data = a.dir.path().join("maria-agent");
    let spec = format!(
        "name=maria,uri=mysql://127.0.0.1:{},ca_file={},labels=engine=mariadb",
        m.port,
        m.dir.path().join("server.cas").display()
    );
    let agent = Killed(
        Command::new(HOP)
            .args([
                "start", "--roles", "db", "--proxy", &a.addr, "--ca-pin", &a.pin,
            ])
            .args(["--token", &db_token(&a), "--db", &spec, "--data-dir"])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(data.with_extension("log")).unwrap(),
            ))
            .spawn()
            .unwrap(),
    );
    wait_for_db(&a, "maria");
    a.ok(&[
        "db",
        "login",
        "maria",
        "--db-user",
        "alice",
        "--db-name",
        "shop",
    ]);
    let port = free_port();
    let mut local = Killed(
        Command::new(HOP)
            .args(["proxy", "db", "maria", "--port", &port.to_string()])
            .env("HOP_HOME", &a.home)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(local.0.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("Proxying"), "{line}");
    }
    Some(MariaSession {
        a,
        m,
        port,
        _agent: agent,
        _local: local,
    })
}

#[test]
fn mariadb_through_hop_proxy_db() {
    let Some(MariaSession {
        a,
        m,
        port,
        _agent,
        _local: local,
    }) = maria_setup()
    else {
        return;
    };

    // Queries, a transaction, a prepared statement; the session is alice's, over TLS.
    let out = mariadb_client(
        port,
        "alice",
        "shop",
        &[
            "-e",
            "CREATE TABLE items (id INT PRIMARY KEY, name TEXT); \
             BEGIN; INSERT INTO items VALUES (1, 'pen'), (2, 'ink'); COMMIT; \
             PREPARE byid FROM 'SELECT name FROM items WHERE id = ?'; SET @i = 2; EXECUTE byid USING @i; \
             SELECT CURRENT_USER(), DATABASE(); \
             SHOW STATUS LIKE 'Ssl_version'",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("ink"), "{text}");
    assert!(text.contains("alice@%\tshop"), "{text}");
    assert!(text.contains("TLSv1.3"), "{text}");

    // `hop db connect` runs the client with its own local listener.
    let out = Command::new(HOP)
        .args(["db", "connect", "maria", "--", "-N", "-e", "SELECT 40 + 2"])
        .env("HOP_HOME", &a.home)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "42");

    // Ctrl-C: the client's KILL QUERY names the id Hop gave it; the agent maps it.
    let slow = Command::new("mariadb")
        .args([
            "-h",
            "127.0.0.1",
            "-P",
            &port.to_string(),
            "-u",
            "alice",
            "-D",
            "shop",
        ])
        .args(["--skip-ssl", "-e", "SELECT SLEEP(60)"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = clock::monotonic_now() + Duration::from_secs(20);
    while !m
        .local_sql(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO = 'SELECT SLEEP(60)'",
        )
        .trim()
        .eq("1")
    {
        assert!(
            clock::monotonic_now() < deadline,
            "the slow query never started"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let started = clock::monotonic_now();
    unsafe_sigint(slow.id());
    let out = slow.wait_with_output().unwrap();
    assert!(
        clock::since(started) < Duration::from_secs(15),
        "not cancelled"
    );
    let gone = m.local_sql(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO = 'SELECT SLEEP(60)'",
    );
    assert_eq!(gone.trim(), "0", "{} {}", stdout(&out), stderr(&out));

    // Refusals: users and schemas the role does not allow, case-exact; the database never sees
    // them.
    for (user, db) in [("bob", "shop"), ("Alice", "shop"), ("alice", "mysql")] {
        let out = mariadb_client(port, user, db, &["-e", "SELECT 1"]);
        assert!(!out.status.success(), "{user}/{db} let in");
        assert!(
            stderr(&out).contains("access to database \"maria\" denied"),
            "{user}/{db}: {}",
            stderr(&out)
        );
    }
    assert!(
        !m.general_log().contains("bob@localhost"),
        "{}",
        m.general_log()
    );

    // Audit.
    let deadline = clock::monotonic_now() + Duration::from_secs(20);
    loop {
        let events = a.ok(&[
            "admin", "audit", "search", "--type", "db.query", "--limit", "500", "--format", "json",
        ]);
        if [
            "INSERT INTO items VALUES (1, 'pen'), (2, 'ink')",
            "SELECT 40 + 2",
            "SELECT SLEEP(60)",
        ]
        .iter()
        .all(|s| events.contains(s))
        {
            let line = events
                .lines()
                .find(|l| l.contains("SELECT 40 + 2"))
                .unwrap();
            let ev: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(ev["db_user"], "alice");
            assert_eq!(ev["db_name"], "shop");
            assert_eq!(ev["db_service"], "maria");
            break;
        }
        assert!(
            clock::monotonic_now() < deadline,
            "statements not audited: {events}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    drop(local);
}

/// The `statement` of every `db.query` event in Hop's audit log, once `ready` holds for them
/// (events reach the audit log asynchronously).
fn audited_statements(
    a: &Appliance,
    ready: impl Fn(&std::collections::HashSet<String>, &str) -> bool,
) -> (std::collections::HashSet<String>, String) {
    let deadline = clock::monotonic_now() + Duration::from_secs(30);
    loop {
        let export = a.ok(&["admin", "audit", "export", "--since", "1h"]);
        let statements = export
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|ev| ev["event"] == "db.query")
            .filter_map(|ev| ev["statement"].as_str().map(str::to_owned))
            .collect();
        if ready(&statements, &export) {
            return (statements, export);
        }
        assert!(
            clock::monotonic_now() < deadline,
            "the audit log never caught up: {export}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// One PostgreSQL frontend message.
fn pg_msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&u32::try_from(body.len() + 4).unwrap().to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// NUL-terminated strings, concatenated.
fn cstrs(parts: &[&str]) -> Vec<u8> {
    parts
        .iter()
        .flat_map(|p| p.bytes().chain(std::iter::once(0)))
        .collect()
}

/// A hand-written PostgreSQL client on `hop proxy db`'s plain local port: enough to send what
/// psql cannot (thousands of named statements, a malformed message).
struct RawPg(std::net::TcpStream);

impl RawPg {
    fn connect(port: u16, user: &str, db: &str) -> Self {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut body = 196_608u32.to_be_bytes().to_vec();
        body.extend(cstrs(&["user", user, "database", db, ""]));
        let mut startup = u32::try_from(body.len() + 4)
            .unwrap()
            .to_be_bytes()
            .to_vec();
        startup.extend(body);
        s.write_all(&startup).unwrap();
        let mut pg = Self(s);
        let answers = pg.until_ready();
        assert!(answers.iter().all(|(t, _)| *t != b'E'), "{answers:?}");
        pg
    }

    /// One backend message; `None` when the connection ends.
    fn read(&mut self) -> Option<(u8, Vec<u8>)> {
        use std::io::Read;
        let mut head = [0u8; 5];
        self.0.read_exact(&mut head).ok()?;
        let len = u32::from_be_bytes(head[1..].try_into().unwrap()) as usize;
        let mut body = vec![0u8; len - 4];
        self.0.read_exact(&mut body).ok()?;
        Some((head[0], body))
    }

    fn until_ready(&mut self) -> Vec<(u8, Vec<u8>)> {
        let mut seen = Vec::new();
        while let Some(m) = self.read() {
            let ready = m.0 == b'Z';
            seen.push(m);
            if ready {
                return seen;
            }
        }
        panic!("the connection ended before ReadyForQuery: {seen:?}");
    }

    fn send(&mut self, bytes: &[u8]) {
        use std::io::Write;
        self.0.write_all(bytes).unwrap();
    }
}

/// What PostgreSQL ran for `user@db`, from its log (`log_statement = all`): simple queries and
/// executions of prepared statements.
fn pg_logged_statements(log: &str, user_db: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in log.lines() {
        let Some((_, rest)) = line.split_once(&format!(" {user_db} LOG:  ")) else {
            continue;
        };
        if let Some(sql) = rest.strip_prefix("statement: ") {
            out.push(sql.to_string());
        } else if let Some((_, sql)) = rest
            .strip_prefix("execute ")
            .and_then(|exec| exec.split_once(": "))
        {
            out.push(sql.to_string());
        }
    }
    out
}

/// Every statement PostgreSQL ran is in Hop's audit log with its text: 2,000 named prepared
/// statements (more than the auditor's tables hold), then a malformed message, which ends the
/// session with an error the client reads and an audit event.
#[test]
fn postgres_audit_is_complete_and_fails_closed() {
    let Some((a, pg, _agent)) = setup() else {
        return;
    };
    a.ok(&[
        "db",
        "login",
        "pg",
        "--db-user",
        "alice",
        "--db-name",
        "hopdb",
    ]);
    let port = free_port();
    let mut local = Killed(
        Command::new(HOP)
            .args(["proxy", "db", "pg", "--port", &port.to_string()])
            .env("HOP_HOME", &a.home)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(local.0.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("Proxying"), "{line}");
    }
    let mut c = RawPg::connect(port, "alice", "hopdb");
    const STATEMENTS: usize = 2000;
    for batch in (0..STATEMENTS).collect::<Vec<_>>().chunks(250) {
        let mut out = Vec::new();
        for i in batch {
            let name = format!("hop_ps_{i}");
            let mut parse = cstrs(&[&name, &format!("SELECT 'hop-ps-{i}'")]);
            parse.extend_from_slice(&0u16.to_be_bytes());
            out.extend(pg_msg(b'P', &parse));
            let mut bind = cstrs(&["", &name]);
            bind.extend_from_slice(&[0; 6]);
            out.extend(pg_msg(b'B', &bind));
            let mut execute = cstrs(&[""]);
            execute.extend_from_slice(&0u32.to_be_bytes());
            out.extend(pg_msg(b'E', &execute));
        }
        out.extend(pg_msg(b'S', &[]));
        c.send(&out);
        let answers = c.until_ready();
        assert!(answers.iter().all(|(t, _)| *t != b'E'), "{answers:?}");
    }
    // The statements stay executable after the auditor's tables are full.
    let mut again = pg_msg(b'B', &[cstrs(&["", "hop_ps_1999"]), vec![0; 6]].concat());
    again.extend(pg_msg(b'E', &[cstrs(&[""]), vec![0; 4]].concat()));
    again.extend(pg_msg(b'S', &[]));
    c.send(&again);
    c.until_ready();

    // A message type that does not exist: the session ends, the client reads why.
    c.send(&pg_msg(b'Q', b"SELECT 'after the fault'\0"));
    c.until_ready();
    c.send(&[0x01, 0, 0, 0, 4]);
    let mut last = Vec::new();
    while let Some(m) = c.read() {
        last.push(m);
    }
    let error = last
        .iter()
        .find(|(t, _)| *t == b'E')
        .map(|(_, body)| String::from_utf8_lossy(body).into_owned())
        .unwrap_or_else(|| panic!("no ErrorResponse: {last:?}"));
    assert!(error.contains("cannot be followed"), "{error}");
    assert!(error.contains("unknown message type 0x01"), "{error}");

    let logged = pg_logged_statements(&pg.log(), "alice@hopdb");
    assert!(
        logged.len() > STATEMENTS,
        "PostgreSQL logged {} statements",
        logged.len()
    );
    let (audited, export) = audited_statements(&a, |audited, export| {
        logged.iter().all(|s| audited.contains(s)) && export.contains("cannot be followed")
    });
    assert!(audited.contains("SELECT 'hop-ps-1999'"));
    let refusal = export
        .lines()
        .find(|l| l.contains("\"db.query\"") && l.contains("cannot be followed"))
        .unwrap();
    let ev: serde_json::Value = serde_json::from_str(refusal).unwrap();
    assert_eq!(ev["success"], false, "{refusal}");
    assert_eq!(ev["user"], "alice");
    assert!(
        export
            .lines()
            .any(|l| l.contains("\"db.session.end\"") && l.contains("cannot be followed")),
        "{export}"
    );
}

/// A hand-written MySQL client on `hop proxy db`'s plain local port, logged in as `user` to
/// `db`: for the commands the `mariadb` client never sends.
struct RawMysql(std::net::TcpStream);

impl RawMysql {
    fn connect(port: u16, user: &str, db: &str) -> Self {
        let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut c = Self(s);
        let (_, greeting) = c.read().unwrap();
        assert_eq!(greeting.first(), Some(&10), "{greeting:?}");
        // PROTOCOL_41 | SECURE_CONNECTION | PLUGIN_AUTH | CONNECT_WITH_DB | DEPRECATE_EOF
        let caps: u32 = 0x200 | 0x8000 | 0x8_0000 | 0x8 | 0x100_0000;
        let mut hello = caps.to_le_bytes().to_vec();
        hello.extend_from_slice(&(1u32 << 24).to_le_bytes());
        hello.push(45);
        hello.extend_from_slice(&[0; 23]);
        hello.extend(cstrs(&[user]));
        hello.push(0);
        hello.extend(cstrs(&[db, "mysql_native_password"]));
        c.send(1, &hello);
        let (_, ok) = c.read().unwrap();
        assert_eq!(ok.first(), Some(&0), "{}", String::from_utf8_lossy(&ok));
        c
    }

    fn send(&mut self, seq: u8, payload: &[u8]) {
        use std::io::Write;
        let len = u32::try_from(payload.len()).unwrap().to_le_bytes();
        let mut out = vec![len[0], len[1], len[2], seq];
        out.extend_from_slice(payload);
        self.0.write_all(&out).unwrap();
    }

    /// One packet; `None` when the connection ends.
    fn read(&mut self) -> Option<(u8, Vec<u8>)> {
        use std::io::Read;
        let mut head = [0u8; 4];
        self.0.read_exact(&mut head).ok()?;
        let len = u32::from_le_bytes([head[0], head[1], head[2], 0]) as usize;
        let mut payload = vec![0u8; len];
        self.0.read_exact(&mut payload).ok()?;
        Some((head[3], payload))
    }

    /// Sends a command and returns the first packet of its answer.
    fn command(&mut self, payload: &[u8]) -> Vec<u8> {
        self.send(0, payload);
        self.read().expect("no answer").1
    }

    /// The command is refused with an ERR packet naming `why`, and the session ends.
    fn refused(mut self, payload: &[u8], why: &str) {
        let answer = self.command(payload);
        let text = String::from_utf8_lossy(&answer);
        assert_eq!(answer.first(), Some(&0xff), "{text}");
        assert!(text.contains(why), "{text}");
        assert!(self.read().is_none(), "the session went on after {why}");
    }
}

/// Thread ids and the statements MariaDB's general log shows for connections of `user`: its
/// COM_QUERY and COM_STMT_PREPARE texts, and COM_INIT_DB as `USE \`schema\``.
fn mariadb_logged_statements(log: &str, user: &str) -> Vec<String> {
    let mut threads = std::collections::HashSet::new();
    let mut out = Vec::new();
    for line in log.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        // `[time]\t   ID Command\tArgument`
        let Some(at) = fields.iter().position(|f| {
            let mut words = f.split_whitespace();
            words.next().is_some_and(|id| id.parse::<u32>().is_ok())
                && words
                    .next()
                    .is_some_and(|c| c.starts_with(|b: char| b.is_ascii_alphabetic()))
        }) else {
            continue;
        };
        let mut words = fields[at].split_whitespace();
        let id = words.next().unwrap().to_string();
        let command = words.collect::<Vec<_>>().join(" ");
        let argument = fields[at + 1..].join("\t");
        match command.as_str() {
            "Connect" if argument.starts_with(&format!("{user}@")) => {
                threads.insert(id);
            }
            _ if !threads.contains(&id) => {}
            "Query" | "Prepare" => out.push(argument),
            "Init DB" => out.push(format!("USE `{argument}`")),
            _ => {}
        }
    }
    out
}

/// The MySQL guards, each ending the session with an ERR packet and never reaching the
/// database, and an audit log that holds every statement MariaDB's general log shows.
#[test]
fn mariadb_guards_and_a_complete_audit() {
    let Some(s) = maria_setup() else {
        return;
    };
    let client = |input: &str| {
        use std::io::Write;
        let mut c = Command::new("mariadb")
            .args(["-h", "127.0.0.1", "-P", &s.port.to_string()])
            .args(["-u", "alice", "-D", "shop", "--skip-ssl", "-N"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        c.wait_with_output().unwrap()
    };
    // What the roles allow runs: the schema the session is in, an executable comment.
    let out = client("USE shop;\n/*!50000 SELECT 'from an executable comment' */;\n");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("from an executable comment"));
    // A schema the database grants but Hop's roles do not: COM_INIT_DB (the client's `use`)
    // and USE inside an executable comment are refused before the database sees them.
    for input in [
        "use other;\n",
        "/*!USE other*/;\n",
        "/*!50000 USE `other` */;\n",
    ] {
        let out = client(input);
        assert!(!out.status.success(), "{input} ran");
        assert!(
            stderr(&out).contains("not one your roles allow"),
            "{input}: {}",
            stderr(&out)
        );
    }
    // Multi-statements: off toward the server, which refuses them as one statement.
    let out = client("DELIMITER //\nSELECT 'multi one'; SELECT 'multi two'//\n");
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(stderr(&out).contains("1064"), "{}", stderr(&out));
    assert!(!stdout(&out).contains("multi two"));

    // What the `mariadb` client never sends.
    let mut c = RawMysql::connect(s.port, "alice", "shop");
    assert_eq!(c.command(b"\x03DO 1").first(), Some(&0));
    c.refused(b"\x11root\0\0shop\0", "COM_CHANGE_USER");
    RawMysql::connect(s.port, "alice", "shop")
        .refused(b"\x03USE other", "not one your roles allow");
    RawMysql::connect(s.port, "alice", "shop").refused(
        b"\x03PREPARE s FROM 'USE other'",
        "not one your roles allow",
    );
    RawMysql::connect(s.port, "alice", "shop").refused(b"\x1b\x00\x00", "multi-statements");
    // A malformed COM_STMT_EXECUTE (no statement id): the stream cannot be followed.
    RawMysql::connect(s.port, "alice", "shop").refused(b"\x17\x01", "cannot be followed");

    let log = s.m.general_log();
    let logged = mariadb_logged_statements(&log, "alice");
    assert!(
        logged
            .iter()
            .any(|q| q.contains("from an executable comment")),
        "{log}"
    );
    for q in &logged {
        assert!(!q.contains("other"), "the database ran {q}: {log}");
    }
    assert!(!log.contains("Change user"), "{log}");
    let (audited, export) = audited_statements(&s.a, |audited, export| {
        logged.iter().all(|q| audited.contains(q)) && export.contains("cannot be followed")
    });
    assert!(audited.contains("SELECT 'multi one'; SELECT 'multi two'"));
    for why in [
        "COM_CHANGE_USER",
        "not one your roles allow",
        "multi-statements",
        "cannot be followed",
    ] {
        assert!(
            export.lines().any(|l| l.contains("\"db.query\"")
                && l.contains("\"success\":false")
                && l.contains(why)),
            "no failed db.query event for {why}: {export}"
        );
    }
}

/// A Dial frame for `target` (the tunnel protocol's framing), as a raw client sends it.
fn raw_dial(target: &str) -> Vec<u8> {
    let mut dial = vec![0x05u8];
    dial.extend_from_slice(&[9u8; 16]);
    dial.extend_from_slice(&(target.len() as u16).to_be_bytes());
    dial.extend_from_slice(target.as_bytes());
    dial.extend_from_slice(&[0x04, 127, 0, 0, 1, 0x30, 0x39]);
    let mut frame = (dial.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&dial);
    frame
}

/// `openssl s_client` on ALPN `alpn` with a certificate and key, sending `bytes`; what the
/// proxy answered.
pub(crate) fn raw_tls(a: &Appliance, alpn: &str, crt: &Path, key: &Path, bytes: &[u8]) -> String {
    let mut s = Command::new("openssl")
        .args([
            "s_client", "-quiet", "-alpn", alpn, "-connect", &a.addr, "-cert",
        ])
        .arg(crt)
        .arg("-key")
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    {
        let mut stdin = s.stdin.take().unwrap();
        let _ = std::io::Write::write_all(&mut stdin, bytes);
        std::thread::sleep(Duration::from_millis(1500));
    }
    let out = s.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The PostgreSQL route through admission: a database route certificate is refused on the
/// application route; a lock ends a running query's session within 5 s and refuses the next
/// one; both are audited with the route and reason code.
#[test]
fn postgres_sessions_go_through_admission() {
    let Some((a, _pg, _agent)) = setup() else {
        return;
    };
    a.ok(&[
        "db",
        "login",
        "pg",
        "--db-user",
        "alice",
        "--db-name",
        "postgres",
    ]);
    let out = psql(&a, "", &["-Atc", "SELECT 1"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // The database route certificate on another route.
    let dir = a
        .home
        .join("db")
        .join(a.addr.replace(':', "_"))
        .join("alice");
    let answer = raw_tls(
        &a,
        "hop-tcp",
        &dir.join("pg.crt"),
        &dir.join("pg.key"),
        &raw_dial("echo"),
    );
    assert!(
        answer.contains("database route certificate"),
        "proxy answered: {answer:?}"
    );
    crate::ssh::wait_event(&a, "access.refused", |e| {
        e["route"] == "app" && e["reason"] == "wrong_certificate"
    });
    // An agent's host certificate on a user route, a user certificate on the tunnel.
    let agent = a.dir.path().join("db-agent").join("agent");
    raw_tls(
        &a,
        "hop-tcp",
        &agent.join("host.crt"),
        &agent.join("host.key"),
        &raw_dial("x"),
    );
    crate::ssh::wait_event(&a, "access.refused", |e| {
        e["route"] == "app"
            && e["error"]
                .as_str()
                .is_some_and(|x| x.contains("host certificate"))
    });
    let keys = a.home.join("keys").join(&a.addr);
    raw_tls(
        &a,
        "hop-tunnel",
        &keys.join("alice-tls.crt"),
        &keys.join("alice-tls.key"),
        b"",
    );
    crate::ssh::wait_event(&a, "access.refused", |e| {
        e["route"] == "tunnel" && e["reason"] == "wrong_certificate"
    });

    // A running query ends within 5 s of a lock.
    let conninfo = a.ok(&["db", "config", "pg", "--format", "uri"]);
    let mut long = Command::new("psql")
        .arg(conninfo.trim())
        .args(["-X", "-Atc", "SELECT pg_sleep(60)"])
        .env("HOP_HOME", &a.home)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    a.ok(&["admin", "lock", "--user", "alice", "--message", "db matrix"]);
    let t0 = clock::monotonic_now();
    while long.try_wait().unwrap().is_none() {
        if clock::since(t0) > Duration::from_secs(10) {
            let _ = long.kill();
            panic!("psql still running 10 s after the lock");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        clock::since(t0) < Duration::from_secs(5),
        "psql ended after {:?}",
        clock::since(t0)
    );
    crate::ssh::wait_event(&a, "session.terminated", |e| {
        e["route"] == "postgres" && e["reason"] == "locked"
    });
    let out = psql(&a, "", &["-Atc", "SELECT 1"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("locked"), "{}", stderr(&out));
    crate::ssh::wait_event(&a, "access.refused", |e| {
        e["route"] == "postgres" && e["reason"] == "locked" && e["user"] == "alice"
    });
}

/// The MySQL route through admission: a running query ends within 5 s of a lock on the user's
/// role, the next session is refused with the reason, both audited.
#[test]
fn mariadb_sessions_go_through_admission() {
    let Some(s) = maria_setup() else {
        return;
    };
    let out = mariadb_client(s.port, "alice", "shop", &["-e", "SELECT 1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut long = Command::new("mariadb")
        .args([
            "-h",
            "127.0.0.1",
            "-P",
            &s.port.to_string(),
            "-u",
            "alice",
            "-D",
            "shop",
        ])
        .args(["--skip-ssl", "-N", "-e", "SELECT SLEEP(60)"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    s.a.ok(&[
        "admin",
        "lock",
        "--role",
        "db-maria",
        "--message",
        "maria matrix",
    ]);
    let t0 = clock::monotonic_now();
    while long.try_wait().unwrap().is_none() {
        if clock::since(t0) > Duration::from_secs(10) {
            let _ = long.kill();
            panic!("mariadb still running 10 s after the lock");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        clock::since(t0) < Duration::from_secs(5),
        "mariadb ended after {:?}",
        clock::since(t0)
    );
    crate::ssh::wait_event(&s.a, "session.terminated", |e| {
        e["route"] == "mysql" && e["reason"] == "locked"
    });
    let out = mariadb_client(s.port, "alice", "shop", &["-e", "SELECT 1"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("locked"), "{}", stderr(&out));
    crate::ssh::wait_event(&s.a, "access.refused", |e| {
        e["route"] == "mysql" && e["reason"] == "locked"
    });
}
