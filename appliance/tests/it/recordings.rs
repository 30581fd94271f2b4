//! Session recording end to end: an interactive session under tmux is recorded at the node,
//! uploaded to Auth, listed, played and exported (and read by the real asciinema); a recording
//! made while Auth is down arrives once it is back; `off` records nothing; recordings kept in an
//! S3 bucket (moto, a stand-in) by one appliance play from another on the same PostgreSQL.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::clock;
use crate::harness::*;
use crate::ssh::{node_token, tmux, wait_event, wait_for_node, wait_pane};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct TmuxServer(PathBuf);

impl Drop for TmuxServer {
    fn drop(&mut self) {
        let _ = tmux(&self.0, &["kill-server"]);
    }
}

/// A node agent whose recordings of running sessions go to Auth every second.
fn start_node(a: &Appliance, data: &Path, token: &str, name: &str) -> Killed {
    let config = data.with_extension("yaml");
    std::fs::write(
        &config,
        "version: v1\nssh_service:\n  recording:\n    upload_interval: 1s\n",
    )
    .unwrap();
    let child = Command::new(HOP)
        .args(["start", "--config"])
        .arg(&config)
        .args([
            "--roles",
            "node",
            "--proxy",
            &a.addr,
            "--ca-pin",
            &a.pin,
            "--token",
            token,
            "--nodename",
            name,
            "--data-dir",
        ])
        .arg(data)
        .env("HOP_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(data.with_extension("log")).unwrap(),
        ))
        .spawn()
        .unwrap();
    Killed(child)
}

/// An appliance with one node and a user who may log in as root and read recordings.
fn cluster(extra_auth: &str) -> (Appliance, PathBuf, Killed) {
    cluster_on(Appliance::start(extra_auth))
}

/// [`cluster`] on an appliance already started.
fn cluster_on(a: Appliance) -> (Appliance, PathBuf, Killed) {
    let token = node_token(&a);
    let node_dir = a.dir.path().join("node1");
    let node = start_node(&a, &node_dir, &token, "node1");
    os_login();
    let secret = a.add_user("alice", "access,auditor", OS_LOGIN);
    let out = a.login("alice", PASSWORD, &secret);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for_node(&a, "node1");
    (a, node_dir, node)
}

/// `hop ssh hopuser@node1` (an ordinary login) in a tmux pane of 80x24.
fn interactive(a: &Appliance) -> (PathBuf, TmuxServer) {
    let sock = a.dir.path().join("tmux.sock");
    let script = format!("HOP_HOME={} {} ssh hopuser@node1", a.home.display(), HOP);
    let out = tmux(
        &sock,
        &[
            "new-session",
            "-d",
            "-s",
            "hop",
            "-x",
            "80",
            "-y",
            "24",
            "sh",
            "-c",
            &script,
        ],
    );
    assert!(out.status.success(), "tmux: {}", stderr(&out));
    let server = TmuxServer(sock.clone());
    tmux(
        &sock,
        &["send-keys", "-t", "hop", "PS1='remote$ '", "Enter"],
    );
    wait_pane(&sock, "remote$");
    (sock, server)
}

fn recordings(a: &Appliance) -> Vec<serde_json::Value> {
    let out = a.ok(&["recordings", "ls", "--format", "json"]);
    serde_json::from_str(out.trim()).unwrap()
}

/// Waits until Auth lists a recording of `user`; returns it.
pub(crate) fn wait_recording(a: &Appliance, user: &str, within: Duration) -> serde_json::Value {
    let deadline = clock::monotonic_now() + within;
    loop {
        if let Some(r) = recordings(a).into_iter().find(|r| r["user"] == user) {
            return r;
        }
        assert!(
            clock::monotonic_now() < deadline,
            "no recording of {user} arrived; appliance log:\n{}",
            a.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn spool_files(node_dir: &Path) -> Vec<String> {
    let dir = node_dir.join("agent").join("recordings");
    std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn recorded_session_is_listed_played_and_exported() {
    let (a, node_dir, _node) = cluster("");
    let (sock, _server) = interactive(&a);
    tmux(
        &sock,
        &["send-keys", "-t", "hop", "echo hello-rec", "Enter"],
    );
    wait_pane(&sock, "hello-rec\nremote$");
    tmux(
        &sock,
        &["resize-window", "-t", "hop", "-x", "100", "-y", "30"],
    );
    tmux(
        &sock,
        &["send-keys", "-t", "hop", "clear; stty size", "Enter"],
    );
    wait_pane(&sock, "30 100");
    tmux(&sock, &["send-keys", "-t", "hop", "exit", "Enter"]);

    let rec = wait_recording(&a, "alice", Duration::from_secs(30));
    let id = rec["session_id"].as_str().unwrap().to_string();
    assert_eq!(rec["login"], OS_LOGIN, "{rec}");
    assert_eq!(rec["node"], "node1", "{rec}");
    assert_eq!(rec["kind"], "ssh", "{rec}");
    // The recording has the session's id in the audit log.
    let end = wait_event(&a, "session.end", |e| e["user"] == "alice");
    assert_eq!(end["session_id"], id.as_str(), "{end}");
    wait_event(&a, "session.upload", |e| e["session_id"] == id.as_str());
    // The node keeps nothing once Auth has it.
    let deadline = clock::monotonic_now() + Duration::from_secs(10);
    while !spool_files(&node_dir).is_empty() {
        assert!(
            clock::monotonic_now() < deadline,
            "{:?}",
            spool_files(&node_dir)
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let table = a.ok(&["recordings", "ls"]);
    let line = table.lines().find(|l| l.contains(&id)).expect(&table);
    assert!(
        line.contains("alice") && line.contains(OS_LOGIN) && line.contains("node1"),
        "{table}"
    );
    assert!(
        table.lines().next().unwrap().contains("DURATION"),
        "{table}"
    );
    let none = a.ok(&["recordings", "ls", "--user", "bob", "--format", "json"]);
    assert_eq!(none.trim(), "[]");

    // Playback: raw bytes, and timed playback (at once when not on a terminal).
    let raw = a.ok(&["play", &id, "--format", "raw"]);
    assert!(raw.contains("hello-rec"), "{raw}");
    assert!(raw.contains("30 100"), "{raw}");
    let played = a.ok(&["play", &id, "--speed", "64"]);
    assert_eq!(played, raw);

    // On a terminal: timed playback in raw mode; q quits a slow one and the terminal is back
    // in canonical mode afterwards.
    let script = format!(
        "HOP_HOME={} {HOP} play {id} --speed 0.02; echo play-exit-$?; stty -a | grep -o ' icanon'; sleep 60",
        a.home.display()
    );
    let out = tmux(
        &sock,
        &[
            "new-session",
            "-d",
            "-s",
            "player",
            "-x",
            "100",
            "-y",
            "30",
            "sh",
            "-c",
            &script,
        ],
    );
    assert!(out.status.success(), "tmux: {}", stderr(&out));
    std::thread::sleep(Duration::from_millis(1500));
    tmux(&sock, &["send-keys", "-t", "player", "q"]);
    let deadline = clock::monotonic_now() + Duration::from_secs(15);
    loop {
        let pane = stdout(&tmux(&sock, &["capture-pane", "-p", "-t", "player"]));
        if pane.contains("play-exit-0") && pane.contains(" icanon") {
            break;
        }
        assert!(
            clock::monotonic_now() < deadline,
            "hop play did not quit cleanly:\n{pane}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Asciicast v2, read by asciinema itself; the resize and the input are in the file.
    let cast = a.dir.path().join("f.cast");
    a.ok(&[
        "recordings",
        "export",
        &id,
        "--format",
        "asciicast",
        "--include-input",
        "-o",
        cast.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&cast).unwrap();
    let header: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(header["version"], 2);
    assert_eq!(
        (header["width"].as_u64(), header["height"].as_u64()),
        (Some(80), Some(24))
    );
    assert!(
        text.contains(r#""r", "100x30"]"#) || text.contains(r#""r","100x30"]"#),
        "{text}"
    );
    assert!(
        text.contains(r#""i","#) || text.contains(r#""i", "#),
        "{text}"
    );
    // asciinema reads keys from /dev/tty: give it a terminal with script(1).
    let out = Command::new("script")
        .args(["-q", "-e", "-c"])
        .arg(format!("asciinema cat {}", cast.display()))
        .arg("/dev/null")
        .stdin(Stdio::null())
        .output()
        .expect("asciinema (scripts/test installs it) and script (util-linux)");
    assert!(out.status.success(), "asciinema cat: {}", stderr(&out));
    assert!(stdout(&out).contains("hello-rec"), "{}", stdout(&out));

    // JSON lines hold every event, the end with its exit status.
    let jsonl = a.ok(&["recordings", "export", &id, "--format", "json"]);
    let last: serde_json::Value = serde_json::from_str(jsonl.lines().last().unwrap()).unwrap();
    assert_eq!(last["type"], "end", "{last}");
    assert_eq!(last["exit_status"], 0, "{last}");

    // Who may read only their own sessions (the access preset's `where`) does not see this
    // one, and reading it is refused clearly.
    let secret = a.add_user("bob", "access", OS_LOGIN);
    assert!(a.login("bob", PASSWORD, &secret).status.success());
    let out = a.hop(&["recordings", "ls"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stdout(&out).contains(&id), "{}", stdout(&out));
    let out = a.hop(&["play", &id, "--format", "raw"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("session"), "{}", stderr(&out));
}

#[test]
fn recording_made_while_auth_is_down_arrives_when_it_is_back() {
    let (mut a, node_dir, node) = cluster("");
    let (sock, _server) = interactive(&a);
    tmux(
        &sock,
        &[
            "send-keys",
            "-t",
            "hop",
            "echo before-$((1+1)); seq 1 20000 | tail -n 3",
            "Enter",
        ],
    );
    wait_pane(&sock, "20000");
    tmux(
        &sock,
        &[
            "send-keys",
            "-t",
            "hop",
            "seq 1 30000 > /dev/null; echo more-$((2+2))",
            "Enter",
        ],
    );
    wait_pane(&sock, "more-4");
    // The running session's recording goes to Auth in rounds: part of it is there already.
    let auth_dir = a.data.join("recordings");
    let deadline = clock::monotonic_now() + Duration::from_secs(20);
    loop {
        let parts: Vec<_> = std::fs::read_dir(&auth_dir)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "part"))
            .collect();
        if !parts.is_empty() {
            break;
        }
        assert!(
            clock::monotonic_now() < deadline,
            "no upload in progress on Auth"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Auth (with its proxy) dies: the session ends with it, on the node's side too.
    a.kill();
    let deadline = clock::monotonic_now() + Duration::from_secs(20);
    while !spool_files(&node_dir).iter().any(|f| f.ends_with(".rec")) {
        assert!(
            clock::monotonic_now() < deadline,
            "the node did not finish the recording: {:?}",
            spool_files(&node_dir)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    // The node agent dies too (SIGKILL) before it could upload, and starts again on its data
    // dir (no token needed): the recording waits in its spool.
    drop(node);
    let _node = start_node(&a, &node_dir, "already-joined", "node1");
    // The restarted node tries while Auth is still away (and says so), before Auth returns.
    let log_path = node_dir.with_extension("log");
    let deadline = clock::monotonic_now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log_path)
        .unwrap_or_default()
        .contains("cannot upload session recordings to Auth")
    {
        assert!(
            clock::monotonic_now() < deadline,
            "the node never tried to upload while Auth was away"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Back on the same data dir and port: the node resumes the upload and completes it.
    a.restart_same_port();
    let rec = wait_recording(&a, "alice", Duration::from_secs(60));
    let id = rec["session_id"].as_str().unwrap();
    let raw = a.ok(&["play", id, "--format", "raw"]);
    assert!(raw.contains("before-2") && raw.contains("more-4"), "{raw}");
    let deadline = clock::monotonic_now() + Duration::from_secs(10);
    while !spool_files(&node_dir).is_empty() {
        assert!(
            clock::monotonic_now() < deadline,
            "{:?}",
            spool_files(&node_dir)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn off_mode_records_nothing() {
    let (a, node_dir, _node) = cluster("  session_recording: off\n");
    let (sock, _server) = interactive(&a);
    tmux(
        &sock,
        &["send-keys", "-t", "hop", "echo not-recorded; exit", "Enter"],
    );
    wait_event(&a, "session.end", |e| e["user"] == "alice");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(recordings(&a), Vec::<serde_json::Value>::new());
    assert!(
        spool_files(&node_dir).is_empty(),
        "{:?}",
        spool_files(&node_dir)
    );
}

#[test]
fn proxy_mode_records_at_the_proxy_and_the_node_records_nothing() {
    let (a, node_dir, _node) = cluster("  session_recording: proxy\n");
    let (sock, _server) = interactive(&a);
    tmux(
        &sock,
        &[
            "send-keys",
            "-t",
            "hop",
            "echo proxy-$((20+1)); exit",
            "Enter",
        ],
    );
    let rec = wait_recording(&a, "alice", Duration::from_secs(30));
    assert_eq!(rec["node"], "node1", "{rec}");
    let id = rec["session_id"].as_str().unwrap().to_string();
    let raw = a.ok(&["play", &id, "--format", "raw"]);
    assert!(raw.contains("proxy-21"), "{raw}");
    let start = wait_event(&a, "session.start", |e| e["session_id"] == id.as_str());
    assert_eq!(start["recorded_at"], "proxy", "{start}");
    assert!(
        spool_files(&node_dir).is_empty(),
        "{:?}",
        spool_files(&node_dir)
    );
}

/// A finished recording of `id` by alice on node `node`, as the store would hold it.
fn stored_recording(id: &str, node: &str, start: std::time::SystemTime, text: &str) -> Vec<u8> {
    use hop_storage::recording::{RecordingMeta, RecordingWriter};
    let start_unix_us = start
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    let mut w = RecordingWriter::new(RecordingMeta {
        session_id: id.into(),
        kind: "ssh".into(),
        cluster: "test.cluster".into(),
        user: "alice".into(),
        login: "root".into(),
        server_id: format!("{node}-id"),
        server_name: node.into(),
        start_unix_us,
        cols: 80,
        rows: 24,
        term: "xterm".into(),
    })
    .unwrap();
    let mut file = w.header_bytes().to_vec();
    file.extend(
        w.push_output(Duration::from_millis(5), text.as_bytes())
            .unwrap_or_default(),
    );
    file.extend(w.finish(Duration::from_secs(2), Some(0)));
    file
}

#[test]
fn recordings_from_before_the_backend_index_are_migrated_and_expire() {
    // Recording retention follows the audit log's.
    let mut a = Appliance::start("  audit:\n    retention: 30d\n");
    let secret = a.add_user("alice", "auditor", "root");
    assert!(a.login("alice", PASSWORD, &secret).status.success());
    a.stop();

    // The recordings directory as an earlier version left it: a recording with its `.json`
    // sidecar, one without (its sidecar lost), and one past the retention.
    let dir = a.data.join("recordings");
    let now = clock::wall_now();
    let hour_ago = now - Duration::from_secs(3600);
    let with_sidecar = "0190a5c4-0000-7000-8000-00000000e001";
    let bare = "0190a5c4-0000-7000-8000-00000000e002";
    let expired = "0190a5c4-0000-7000-8000-00000000e003";
    let files = [
        (
            with_sidecar,
            stored_recording(with_sidecar, "old-node", hour_ago, "from-the-sidecar-era"),
        ),
        (
            bare,
            stored_recording(
                bare,
                "old-node",
                hour_ago + Duration::from_secs(60),
                "bare-file",
            ),
        ),
        (
            expired,
            stored_recording(
                expired,
                "old-node",
                now - Duration::from_secs(90 * 86400),
                "x",
            ),
        ),
    ];
    for (id, file) in &files {
        std::fs::write(dir.join(format!("{id}.hrec")), file).unwrap();
    }
    let start_us = hour_ago
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    let sidecar = serde_json::json!({
        "index_version": 1,
        "session_id": with_sidecar,
        "kind": "ssh",
        "cluster": "test.cluster",
        "user": "alice",
        "login": "root",
        "server_id": "old-node-id",
        "server_name": "old-node",
        "start_unix_us": start_us,
        "end_unix_us": start_us + 2_000_000,
        "size": files[0].1.len(),
        "chunks": 2,
        "events": 2,
        "exit_status": 0,
        "format_version": 1,
    });
    std::fs::write(
        dir.join(format!("{with_sidecar}.json")),
        serde_json::to_vec_pretty(&sidecar).unwrap(),
    )
    .unwrap();

    // At start they are indexed in the backend; retention then deletes the expired one.
    a.restart_same_port();
    let deadline = clock::monotonic_now() + Duration::from_secs(20);
    while dir.join(format!("{expired}.hrec")).exists() {
        assert!(
            clock::monotonic_now() < deadline,
            "retention did not run:\n{}",
            a.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let listed = recordings(&a);
    let ids: Vec<_> = listed
        .iter()
        .map(|r| r["session_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [with_sidecar, bare], "{listed:?}");
    assert_eq!(listed[0]["node"], "old-node");
    assert_eq!(listed[0]["size"], files[0].1.len());
    assert_eq!(listed[1]["size"], files[1].1.len());
    assert_eq!(listed[1]["duration_ms"], 2000);
    assert!(!dir.join(format!("{with_sidecar}.json")).exists());
    let raw = a.ok(&["play", bare, "--format", "raw"]);
    assert!(raw.contains("bare-file"), "{raw}");
    let raw = a.ok(&["play", with_sidecar, "--format", "raw"]);
    assert!(raw.contains("from-the-sidecar-era"), "{raw}");
    a.stop();

    // The index is in the backend (`hop.db`), one entry per recording kept.
    let clock: std::sync::Arc<dyn hop_storage::Clock> =
        std::sync::Arc::new(hop_storage::SystemClock);
    let backend = hop_storage::RedbBackend::open(&a.data.join("hop.db"), clock).unwrap();
    use hop_storage::Backend as _;
    let prefix = hop_storage::recording::RECORDINGS_INDEX_PREFIX;
    let keys: Vec<_> = backend
        .range(prefix, &hop_storage::prefix_end(prefix), 0)
        .unwrap()
        .into_iter()
        .map(|i| i.key)
        .collect();
    assert_eq!(
        keys,
        [format!("{prefix}{with_sidecar}"), format!("{prefix}{bare}")]
    );
    let entry: serde_json::Value =
        serde_json::from_slice(&backend.get(&keys[0]).unwrap().unwrap().value).unwrap();
    assert_eq!(entry, sidecar);
}

/// A node reached directly on its own listener (no proxy in the path) in the proxy recording
/// mode records the session itself instead of leaving it unrecorded.
#[test]
fn direct_sessions_in_proxy_mode_are_recorded_by_the_node() {
    let a = Appliance::start("  session_recording: proxy\n");
    let node_dir = a.dir.path().join("node1");
    let port = free_port();
    let config = node_dir.with_extension("yaml");
    std::fs::write(
        &config,
        format!(
            "version: v1\nssh_service:\n  listen_addr: 127.0.0.1:{port}\n  recording:\n    upload_interval: 1s\n"
        ),
    )
    .unwrap();
    let _node = Killed(
        Command::new(HOP)
            .args(["start", "--config"])
            .arg(&config)
            .args(["--roles", "node", "--proxy", &a.addr, "--ca-pin", &a.pin])
            .args([
                "--token",
                &node_token(&a),
                "--nodename",
                "node1",
                "--data-dir",
            ])
            .arg(&node_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    os_login();
    let secret = a.add_user("alice", "access,auditor", OS_LOGIN);
    assert!(a.login("alice", PASSWORD, &secret).status.success());
    wait_for_node(&a, "node1");
    let (key, cert, _) = key_paths(&a, "alice");
    let out = Command::new("ssh")
        .args(["-tt", "-p", &port.to_string(), "-i"])
        .arg(&key)
        .arg("-o")
        .arg(format!("CertificateFile={}", cert.display()))
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            &format!("{OS_LOGIN}@127.0.0.1"),
            "echo direct-$((40+2))",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(stdout(&out).contains("direct-42"), "{}", stderr(&out));
    let rec = wait_recording(&a, "alice", Duration::from_secs(30));
    assert_eq!(rec["node"], "node1", "{rec}");
    let raw = a.ok(&[
        "play",
        rec["session_id"].as_str().unwrap(),
        "--format",
        "raw",
    ]);
    assert!(raw.contains("direct-42"), "{raw}");
}

/// With `hop.storage.audit_sessions_uri` set to a directory outside the data dir, an uploaded
/// recording lands there and plays back from there.
#[test]
fn recordings_land_in_the_directory_of_audit_sessions_uri() {
    let elsewhere = tempfile::tempdir().unwrap();
    let store = elsewhere.path().join("rec");
    let storage = format!(
        "  storage:\n    audit_sessions_uri: file://{}\n",
        store.display()
    );
    let (a, _node_dir, _node) = cluster_on(Appliance::start_configured(&storage, "", ""));
    let (sock, _server) = interactive(&a);
    tmux(&sock, &["send-keys", "-t", "hop", "echo uri-rec", "Enter"]);
    wait_pane(&sock, "uri-rec\nremote$");
    tmux(&sock, &["send-keys", "-t", "hop", "exit", "Enter"]);

    let rec = wait_recording(&a, "alice", Duration::from_secs(30));
    let id = rec["session_id"].as_str().unwrap().to_string();
    assert!(store.join(format!("{id}.hrec")).is_file(), "{rec}");
    assert!(!a.data.join("recordings").exists());
    let raw = a.ok(&["play", &id, "--format", "raw"]);
    assert!(raw.contains("uri-rec"), "{raw}");
}

/// Two appliances on one PostgreSQL with `audit_sessions_uri: s3://…` (moto, a stand-in): a
/// session recorded through the first (its node joined there) is put in the bucket, never in
/// either data dir, and is listed and played from the second by an auditor who logged in there.
#[test]
fn a_recording_in_s3_plays_from_another_appliance() {
    let Some(pg) = crate::backup_restore::Postgres::start() else {
        return;
    };
    let Some(moto) = crate::moto::moto() else {
        return;
    };
    pg.create_db("hop_s3");
    let bucket = moto.bucket();
    let hop_lines = format!(
        "{}    audit_sessions_uri: \"{}\"\n",
        pg.storage_yaml("hop_s3"),
        moto.uri(&bucket)
    );
    let (a, _node_dir, _node) = cluster_on(Appliance::start_configured(&hop_lines, "", ""));
    assert!(a.log().contains("s3://"), "{}", a.log());
    let (sock, _server) = interactive(&a);
    tmux(
        &sock,
        &["send-keys", "-t", "hop", "echo in-the-bucket", "Enter"],
    );
    wait_pane(&sock, "in-the-bucket\nremote$");
    tmux(&sock, &["send-keys", "-t", "hop", "exit", "Enter"]);
    let rec = wait_recording(&a, "alice", Duration::from_secs(30));
    let id = rec["session_id"].as_str().unwrap().to_string();
    assert_eq!(
        moto.keys(&bucket),
        [format!("cluster-a/recordings/{id}.hrec")]
    );

    let b = Appliance::start_configured(&hop_lines, "", "");
    let secret = b.add_user("bob", "auditor", OS_LOGIN);
    let out = b.login("bob", PASSWORD, &secret);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed = b.ok(&["recordings", "ls", "--format", "json"]);
    assert!(listed.contains(&id), "{listed}");
    let raw = b.ok(&["play", &id, "--format", "raw"]);
    assert!(raw.contains("in-the-bucket"), "{raw}");
    for x in [&a, &b] {
        assert!(!x.data.join("recordings").exists());
        let staged = std::fs::read_dir(x.data.join("recordings-staging"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(staged, 0, "uploads left staged in {}", x.data.display());
    }
}
