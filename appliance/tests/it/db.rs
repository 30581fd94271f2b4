//! Database access end to end with real programs: PostgreSQL 15 (TLS on, client-certificate
//! authentication trusting Hop's db CA, no passwords) behind a db agent joined by token, and
//! `psql`/`pgbench` through the proxy's one port.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

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
    fn start(a: &Appliance) -> Option<Self> {
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
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{d}'\nssl = on\nssl_cert_file = '{d}/server.crt'\nssl_key_file = '{d}/server.key'\nssl_ca_file = '{d}/server.cas'\nlog_connections = on\nlog_statement = 'all'\nfsync = off\n",
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
    fn local_sql(&self, sql: &str) -> String {
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

fn start_db_agent(a: &Appliance, pg: &Postgres) -> Killed {
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
            "start", "--roles", "db", "--proxy", &a.addr, "--ca-pin", &a.pin,
        ])
        .args(["--token", &db_token(a), "--db", &spec, "--config"])
        .arg(&config)
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

fn wait_for_db(a: &Appliance, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = a.hop(&["db", "ls", "--format", "json"]);
        if out.status.success() && stdout(&out).contains(&format!("\"name\": \"{name}\"")) {
            std::thread::sleep(Duration::from_millis(300));
            return;
        }
        assert!(
            Instant::now() < deadline,
            "database {name} did not appear: {} {}",
            stdout(&out),
            stderr(&out)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// psql with the connection string `hop db config --format uri` prints, overriding `extra`
/// keywords (e.g. `user=bob`).
fn psql(a: &Appliance, extra: &str, args: &[&str]) -> Output {
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

    // Queries, a transaction, COPY in and out, a prepared statement.
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
    let deadline = Instant::now() + Duration::from_secs(20);
    while !pg
        .local_sql("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)' AND state = 'active'")
        .trim()
        .eq("1")
    {
        assert!(Instant::now() < deadline, "the slow query never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    let started = Instant::now();
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
    assert!(started.elapsed() < Duration::from_secs(15));

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
    let deadline = Instant::now() + Duration::from_secs(20);
    let events = loop {
        let out = a.ok(&[
            "admin", "audit", "search", "--type", "db.query", "--limit", "1000", "--format", "json",
        ]);
        if out.contains("through the local proxy") && out.contains("pg_sleep(60)") {
            break out;
        }
        assert!(Instant::now() < deadline, "db.query events missing: {out}");
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
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.ok(&["db", "ls", "--format", "json"]).contains("\"pg2\"") {
        assert!(
            Instant::now() < deadline,
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
    fn start(a: &Appliance) -> Option<Self> {
        if Command::new("mariadbd").arg("--version").output().is_err() {
            eprintln!("SKIP: MariaDB is not installed");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        sign_server_files(a, d);
        std::fs::create_dir(d.join("data")).unwrap();
        run_ok(Command::new("chown").args(["-R", "mysql:mysql"]).arg(d));
        run_ok(
            Command::new("mariadb-install-db")
                .args(["--no-defaults", "--user=mysql", "--skip-test-db"])
                .arg(format!("--datadir={}", d.join("data").display()))
                .stdout(Stdio::null()),
        );
        let port = free_port();
        let child = Command::new("mariadbd")
            .args(["--no-defaults", "--user=mysql", "--bind-address=127.0.0.1"])
            .arg(format!("--datadir={}", d.join("data").display()))
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
        let deadline = Instant::now() + Duration::from_secs(30);
        while !m.dir.path().join("mysqld.sock").exists() {
            assert!(Instant::now() < deadline, "MariaDB did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        m.local_sql(
            "CREATE USER alice@'%' REQUIRE SUBJECT '/CN=alice/O=test.cluster'; \
             CREATE USER bob@'%' REQUIRE X509; \
             CREATE DATABASE shop; GRANT ALL ON shop.* TO alice@'%'; GRANT ALL ON shop.* TO bob@'%'",
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

#[test]
fn mariadb_through_hop_proxy_db() {
    let a = Appliance::start("");
    let Some(m) = Mariadb::start(&a) else {
        return;
    };
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
    let _agent = Killed(
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
    let deadline = Instant::now() + Duration::from_secs(20);
    while !m
        .local_sql(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO = 'SELECT SLEEP(60)'",
        )
        .trim()
        .eq("1")
    {
        assert!(Instant::now() < deadline, "the slow query never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    let started = Instant::now();
    unsafe_sigint(slow.id());
    let out = slow.wait_with_output().unwrap();
    assert!(started.elapsed() < Duration::from_secs(15), "not cancelled");
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
    let deadline = Instant::now() + Duration::from_secs(20);
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
            Instant::now() < deadline,
            "statements not audited: {events}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    drop(local);
}
