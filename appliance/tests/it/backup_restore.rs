//! Backup and restore, end to end, as the migration from one appliance on redb to PostgreSQL:
//! a redb appliance with a non-admin password user and a joined node agent is backed up through
//! the admin API (sealed with a passphrase file, 0600); the appliance stops; the backup is
//! restored offline into an empty PostgreSQL 15 database (a real server, started here as the
//! storage conformance suite starts its own); an appliance started on that database, on the
//! same address, lets the user log in with the old password and reach the node with an ordinary
//! login, and the agent comes back with the identity it had (no new token). Around it: a wrong
//! passphrase, a truncated file and a non-empty target are refused with messages that say so,
//! and a backup is never written to a terminal-less nowhere or over an existing file.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::clock;
use crate::harness::*;
use crate::ssh::{Killed, start_node};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A throwaway PostgreSQL 15 on a Unix socket in its temp dir (trust auth), stopped when this
/// value drops; `None` without the binaries.
pub(crate) struct Postgres {
    dir: tempfile::TempDir,
    port: u16,
    server: Killed,
}

impl Postgres {
    pub(crate) fn start() -> Option<Self> {
        if !Path::new(PG_BIN).join("postgres").exists() {
            eprintln!("SKIP: PostgreSQL 15 is not installed ({PG_BIN})");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ok = |cmd: &mut Command| {
            let out = cmd.output().unwrap();
            assert!(out.status.success(), "{cmd:?}: {}", stderr(&out));
        };
        ok(Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(d));
        ok(Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(format!("{PG_BIN}/initdb"))
            .arg("-D")
            .arg(d.join("data"))
            .args(["-U", "postgres", "--auth-local=trust", "-E", "UTF8"]));
        let port = free_port();
        let server = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(format!("{PG_BIN}/postgres"))
            .arg("-D")
            .arg(d.join("data"))
            .args(["-c", "listen_addresses=", "-c", &format!("port={port}")])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", d.display()))
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(d.join("pg.log")).unwrap(),
            ))
            .spawn()
            .unwrap();
        let pg = Self {
            dir,
            port,
            server: Killed(server),
        };
        let deadline = clock::monotonic_now() + Duration::from_secs(20);
        loop {
            let ready = Command::new(format!("{PG_BIN}/pg_isready"))
                .arg("-h")
                .arg(pg.dir.path())
                .args(["-p", &port.to_string(), "-q"])
                .status()
                .unwrap()
                .success();
            if ready {
                return Some(pg);
            }
            assert!(
                clock::monotonic_now() < deadline,
                "PostgreSQL did not start: {}",
                std::fs::read_to_string(pg.dir.path().join("pg.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub(crate) fn create_db(&self, name: &str) {
        let out = Command::new(format!("{PG_BIN}/psql"))
            .arg("-h")
            .arg(self.dir.path())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .args([
                "-v",
                "ON_ERROR_STOP=1",
                "-Atqc",
                &format!("CREATE DATABASE {name}"),
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }

    /// A conn string to database `db` over the Unix socket.
    pub(crate) fn url(&self, db: &str) -> String {
        format!(
            "postgresql://postgres@/{db}?host={}&port={}&sslmode=disable",
            self.dir.path().display(),
            self.port
        )
    }

    /// The `hop:` lines that put an appliance's state in database `db`.
    pub(crate) fn storage_yaml(&self, db: &str) -> String {
        format!(
            "  storage:\n    type: postgresql\n    conn_string: \"postgresql://postgres@/{db}?host={}&port={}&sslmode=disable\"\n",
            self.dir.path().display(),
            self.port
        )
    }
}

impl Postgres {
    /// Stops the server (a fast shutdown), as an outage would.
    pub(crate) fn stop(&mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        // A fast shutdown (SIGINT) lets it remove its socket and lock files. The signal goes to
        // the postmaster itself (the first line of its pid file): `runuser`, our child, does not
        // pass SIGINT on.
        let pid_file = self.dir.path().join("data/postmaster.pid");
        let Some(postmaster) = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|s| s.lines().next().map(str::to_owned))
        else {
            return;
        };
        let _ = Command::new("kill").args(["-INT", &postmaster]).status();
        let deadline = clock::monotonic_now() + Duration::from_secs(10);
        while clock::monotonic_now() < deadline {
            if self.server.0.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// `hop login` as `user` with the test password into `home`.
fn login(a: &Appliance, home: &Path, user: &str) -> std::process::Output {
    let mut child = Command::new(HOP)
        .args([
            "login", "--proxy", &a.addr, "--ca-pin", &a.pin, "--user", user,
        ])
        .arg("--password-stdin")
        .env("HOP_HOME", home)
        .env_remove("HOP_DATA_DIR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        format!("{PASSWORD}\n").as_bytes(),
    )
    .unwrap();
    child.wait_with_output().unwrap()
}

/// The node agent's identity as it keeps it: host id, key and certificate.
fn identity_files(node_dir: &Path) -> Vec<Vec<u8>> {
    ["identity.json", "host.key", "host.crt"]
        .iter()
        .map(|f| std::fs::read(node_dir.join("agent").join(f)).unwrap())
        .collect()
}

/// `hop admin restore` with `args` after the file; its output.
fn restore(a: &Appliance, file: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["admin", "restore", file.to_str().unwrap()];
    all.extend_from_slice(args);
    a.hop(&all)
}

#[test]
fn a_redb_cluster_moves_to_postgresql_through_a_sealed_backup() {
    let Some(pg) = Postgres::start() else { return };
    os_login();
    let mut old = Appliance::start(NO_SECOND_FACTOR);
    add_password_user(&old, "alice", "access", OS_LOGIN);
    let alice = old.dir.path().join("alice");
    let out = login(&old, &alice, "alice");
    assert!(out.status.success(), "login: {}", stderr(&out));
    let node_dir = old.dir.path().join("node1");
    let _node = start_node(&old, &node_dir, &old.join_token("node"), "node1", "env=dev");
    let as_alice = |a: &Appliance, args: &[&str]| {
        Command::new(HOP)
            .args(args)
            .env("HOP_HOME", &alice)
            .env_remove("HOP_DATA_DIR")
            .env("HOP_PROXY", &a.addr)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    wait_until_reachable(&old, &as_alice);
    let inventory = |a: &Appliance| {
        let v: serde_json::Value =
            serde_json::from_str(&a.ok(&["admin", "inventory", "ls", "--format", "json"])).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|n| n["host_id"].as_str().unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
    };
    let host_ids = inventory(&old);
    assert_eq!(host_ids.len(), 1, "{host_ids:?}");
    let identity = identity_files(&node_dir);

    // The backup, through the admin API, sealed, 0600; never over an existing file.
    let pass = old.dir.path().join("passphrase");
    std::fs::write(&pass, "a long backup passphrase\n").unwrap();
    let file = old.dir.path().join("cluster.backup");
    let out = old.hop(&[
        "admin",
        "backup",
        "-o",
        file.to_str().unwrap(),
        "--passphrase-file",
        pass.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "backup: {}", stderr(&out));
    assert!(stderr(&out).contains("not included"), "{}", stderr(&out));
    assert_eq!(file_mode(&file) & 0o777, 0o600);
    let head = String::from_utf8_lossy(&std::fs::read(&file).unwrap()[..600]).to_string();
    assert!(head.starts_with("HOP-BACKUP 1\n"), "{head}");
    assert!(head.contains("cipher: argon2id-aes-256-gcm"), "{head}");
    assert!(
        head.contains("Audit events and session recordings are NOT included"),
        "{head}"
    );
    let again = old.hop(&[
        "admin",
        "backup",
        "-o",
        file.to_str().unwrap(),
        "--passphrase-file",
        pass.to_str().unwrap(),
    ]);
    assert!(
        !again.status.success() && stderr(&again).contains("exists"),
        "{}",
        stderr(&again)
    );
    // The export is on the record.
    let events = old.ok(&[
        "admin",
        "audit",
        "search",
        "--type",
        "cluster.backup",
        "--format",
        "json",
    ]);
    assert!(events.contains("\"cluster.backup\""), "{events}");
    let addr = old.addr.clone();
    old.stop();

    // Restore onto an empty PostgreSQL database: wrong passphrase, truncated file, then right.
    pg.create_db("hop_restored");
    let storage = pg.storage_yaml("hop_restored");
    let target_cfg = old.dir.path().join("restore.yaml");
    std::fs::write(
        &target_cfg,
        format!(
            "version: v1\nhop:\n  data_dir: {}\n{storage}",
            old.dir.path().join("unused").display()
        ),
    )
    .unwrap();
    let cfg = target_cfg.to_str().unwrap();
    let wrong = old.dir.path().join("wrong");
    std::fs::write(&wrong, "not the passphrase\n").unwrap();
    let out = restore(
        &old,
        &file,
        &[
            "--config",
            cfg,
            "--passphrase-file",
            wrong.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("wrong passphrase"),
        "{}",
        stderr(&out)
    );
    let cut = old.dir.path().join("cut.backup");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
    let out = restore(
        &old,
        &cut,
        &["--config", cfg, "--passphrase-file", pass.to_str().unwrap()],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("truncated"), "{}", stderr(&out));
    let out = restore(
        &old,
        &file,
        &["--config", cfg, "--passphrase-file", pass.to_str().unwrap()],
    );
    assert!(out.status.success(), "restore: {}", stderr(&out));
    assert!(stdout(&out).contains("PostgreSQL"), "{}", stdout(&out));
    // A second restore onto the same database: not empty.
    let out = restore(
        &old,
        &file,
        &["--config", cfg, "--passphrase-file", pass.to_str().unwrap()],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not empty"), "{}", stderr(&out));

    // The new appliance, on PostgreSQL, where the old one listened.
    let new = Appliance::start_listening(&storage, NO_SECOND_FACTOR, "", &addr);
    assert_eq!(new.pin, old.pin, "the CAs came through the backup");
    // The restore is on the new appliance's record, once, naming the backup it came from.
    let restored = new.ok(&[
        "admin",
        "audit",
        "search",
        "--type",
        "cluster.restore",
        "--format",
        "json",
    ]);
    let events: Vec<serde_json::Value> = restored
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(events.len(), 1, "{restored}");
    assert_eq!(events[0]["sealed"], true, "{restored}");
    assert_eq!(
        events[0]["file_sha256"].as_str().map(str::len),
        Some(64),
        "{restored}"
    );
    let out = login(&new, &alice, "alice");
    assert!(
        out.status.success(),
        "login with the old password: {}",
        stderr(&out)
    );
    wait_until_reachable(&new, &as_alice);
    assert_eq!(
        inventory(&new),
        host_ids,
        "the agent came back as the same host"
    );
    assert_eq!(
        identity_files(&node_dir),
        identity,
        "the agent kept its identity"
    );
}

/// Waits until alice's `hop ssh` runs `id` on node1 as the ordinary login.
fn wait_until_reachable(
    a: &Appliance,
    as_alice: &dyn Fn(&Appliance, &[&str]) -> std::process::Output,
) {
    let deadline = clock::monotonic_now() + Duration::from_secs(30);
    let at = format!("{OS_LOGIN}@node1");
    loop {
        let out = as_alice(a, &["ssh", &at, "id -un"]);
        if out.status.success() && stdout(&out).trim() == OS_LOGIN {
            return;
        }
        assert!(
            clock::monotonic_now() < deadline,
            "node1 not reachable through {}: {} {}\n--- appliance log ---\n{}",
            a.addr,
            stdout(&out),
            stderr(&out),
            a.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn a_backup_refuses_a_terminal_and_a_restore_refuses_a_used_data_dir() {
    let a = Appliance::start("");
    // Offline, against a data dir an appliance is using: the lock says so.
    let out = a.hop(&["admin", "backup", "--offline", "-o", "/dev/null"]);
    assert!(!out.status.success());
    // A plain backup to a pipe works and warns that it is not encrypted.
    let out = a.hop(&["admin", "backup"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout.starts_with(b"HOP-BACKUP 1\n"));
    assert!(stderr(&out).contains("not encrypted"), "{}", stderr(&out));
    let file = a.dir.path().join("plain.backup");
    std::fs::write(&file, &out.stdout).unwrap();
    // Restoring into the running appliance's own data dir: locked, and not empty anyway.
    let out = restore(&a, &file, &[]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(stderr(&out).contains("not empty"), "{}", stderr(&out));
    // A data dir holding anything else (here another cluster's audit log) is not new either.
    let used = a.dir.path().join("used");
    std::fs::create_dir_all(&used).unwrap();
    std::fs::write(used.join("audit.db"), b"old").unwrap();
    let out = restore(&a, &file, &["--data-dir", used.to_str().unwrap()]);
    assert!(stderr(&out).contains("audit.db"), "{}", stderr(&out));
    assert!(!used.join("hop.db").exists());
    // Into a fresh data dir: works; then that dir is not empty.
    let fresh = a.dir.path().join("fresh");
    let out = restore(&a, &file, &["--data-dir", fresh.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(file_mode(&fresh.join("hop.db")) & 0o777, 0o600);
    let out = restore(&a, &file, &["--data-dir", fresh.to_str().unwrap()]);
    assert!(stderr(&out).contains("not empty"), "{}", stderr(&out));
    // An offline backup of the stopped store holds the same state.
    let offline = a.dir.path().join("offline.backup");
    let out = a.hop(&[
        "admin",
        "backup",
        "--offline",
        "--data-dir",
        fresh.to_str().unwrap(),
        "-o",
        offline.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let body = |b: &[u8]| {
        let text = String::from_utf8_lossy(b).to_string();
        text.split_once("\nitems: ")
            .map(|(_, rest)| rest.lines().next().unwrap_or("").to_owned())
    };
    assert_eq!(
        body(&std::fs::read(&offline).unwrap()),
        body(&std::fs::read(&file).unwrap())
    );
    // The passphrase from the environment seals it, and opens it again.
    let with_env = |args: &[&str]| {
        Command::new(HOP)
            .args(args)
            .env("HOP_DATA_DIR", &a.data)
            .env("HOP_BACKUP_PASSPHRASE", "from the environment")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = with_env(&["admin", "backup"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("cipher: argon2id-aes-256-gcm\n"),
        "sealed"
    );
    assert!(!stderr(&out).contains("not encrypted"), "{}", stderr(&out));
    let sealed = a.dir.path().join("sealed.backup");
    std::fs::write(&sealed, &out.stdout).unwrap();
    let target = a.dir.path().join("from-env");
    let out = with_env(&[
        "admin",
        "restore",
        sealed.to_str().unwrap(),
        "--data-dir",
        target.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = restore(
        &a,
        &sealed,
        &["--data-dir", a.dir.path().join("no-pass").to_str().unwrap()],
    );
    assert!(stderr(&out).contains("encrypted"), "{}", stderr(&out));
    // A terminal is refused before anything is exported (script(1) gives the command a pty).
    let out = Command::new("script")
        .args(["-qec", &format!("{HOP} admin backup"), "/dev/null"])
        .env("HOP_DATA_DIR", &a.data)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        stdout(&out).contains("refusing to write a backup"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
}
