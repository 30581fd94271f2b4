//! The audit log through the real binary: events for logins and admin actions, search, export,
//! verify, a flipped byte in the stored segment reported as exactly that event, and a log
//! written by the redb-only store of earlier releases read after upgrade.

use crate::harness::*;

fn search(a: &Appliance, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["admin", "audit", "search", "--format", "json"];
    all.extend_from_slice(args);
    a.ok(&all)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn logins_and_admin_actions_are_searchable_exportable_and_verifiable() {
    let mut a = Appliance::start("");
    let secret = a.add_user("alice", "access", "alice");
    assert!(a.login("alice", PASSWORD, &secret).status.success());
    assert!(
        !a.login("alice", "wrong password entirely", &secret)
            .status
            .success()
    );

    let logins = search(&a, &["--type", "user.login", "--oldest-first"]);
    assert_eq!(logins.len(), 2, "{logins:?}");
    assert_eq!(logins[0]["success"], true);
    assert_eq!(logins[0]["code"], "H1000I");
    assert_eq!(logins[1]["success"], false);
    assert_eq!(logins[1]["code"], "H1000W");
    assert!(
        logins[1]["addr.remote"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    for e in &logins {
        assert!(
            e["hash"].as_str().unwrap().len() == 64 && e["seq"].as_u64().is_some(),
            "{e}"
        );
    }
    let alice = search(&a, &["--user", "alice"]);
    assert!(
        alice.iter().any(|e| e["event"] == "user.signup"),
        "{alice:?}"
    );
    let table = a.ok(&["admin", "audit", "search", "--since", "1h"]);
    assert!(
        table.contains("user.create") && table.contains("EVENT"),
        "{table}"
    );

    let export = a.ok(&["admin", "audit", "export", "--since", "1d"]);
    let lines: Vec<serde_json::Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 4, "{export}");
    assert!(
        !export.contains(PASSWORD),
        "a password reached the audit log"
    );

    let ok = a.ok(&["admin", "audit", "verify"]);
    assert!(ok.contains("intact"), "{ok}");

    // An auditor may read the log; an access-only user may not.
    let out = a.hop(&["admin", "audit", "search", "--since", "not a time"]);
    assert!(stderr(&out).contains("--since"), "{}", stderr(&out));

    // Tamper with the stored file while the appliance is stopped: flip one byte inside the
    // user.create event of a user made for it, start again, and verify names that event.
    a.ok(&["admin", "users", "add", "tamperxyz", "--roles", "access"]);
    let target = search(&a, &["--type", "user.create", "--text", "tamperxyz"]);
    assert_eq!(target.len(), 1);
    let (seq, id) = (
        target[0]["seq"].as_u64().unwrap(),
        target[0]["id"].as_str().unwrap().to_string(),
    );
    assert!(a.stop().success());
    // The events live in append-only segment files beside audit.db: change the event's bytes
    // there, as a tamperer would.
    let needle = b"\"name\":\"tamperxyz\"";
    let mut changed = 0;
    for entry in std::fs::read_dir(a.data.join("audit.segments")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "seg") {
            continue;
        }
        let mut bytes = std::fs::read(&path).unwrap();
        let found: Vec<usize> = bytes
            .windows(needle.len())
            .enumerate()
            .filter(|(_, w)| *w == needle)
            .map(|(i, _)| i)
            .collect();
        for at in &found {
            bytes[at + 9] = b'T';
        }
        if !found.is_empty() {
            changed += found.len();
            std::fs::write(&path, &bytes).unwrap();
        }
    }
    assert_eq!(changed, 1, "the event is stored once");
    a.restart();
    let out = a.hop(&["admin", "audit", "verify"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let report = stdout(&out);
    assert!(
        report.contains(&format!("seq {seq}")) && report.contains(&id),
        "{report}"
    );
}

/// The fixture `storage/tests/fixtures/audit-v1.db` was written by the audit store of earlier
/// releases (every event inside audit.db): 300 events over 2023-11-14..16, the first day
/// purged. Put in place of an appliance's log, it is upgraded at start, verifies, and its
/// events are searchable and exportable next to the appliance's new ones.
#[test]
fn an_audit_log_from_before_segments_is_upgraded_at_start() {
    let mut a = Appliance::start("");
    assert!(a.stop().success());
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../storage/tests/fixtures/audit-v1.db");
    std::fs::copy(fixture, a.data.join("audit.db")).unwrap();
    std::fs::remove_dir_all(a.data.join("audit.segments")).unwrap();
    a.restart();
    let verify = a.ok(&["admin", "audit", "verify"]);
    assert!(verify.contains("intact"), "{verify}");
    let old = search(
        &a,
        &[
            "--since",
            "2023-11-01T00:00:00Z",
            "--until",
            "2023-12-01T00:00:00Z",
            "--user",
            "user-3",
            "--limit",
            "1000",
        ],
    );
    assert_eq!(old.len(), 20, "{old:?}");
    assert!(old.iter().all(|e| e["cluster"] == "test"));
    let export = a.ok(&[
        "admin",
        "audit",
        "export",
        "--since",
        "2023-11-01T00:00:00Z",
        "--until",
        "2023-12-01T00:00:00Z",
    ]);
    assert_eq!(export.lines().count(), 200);
    // New events go on after the upgraded ones, and the whole log still verifies.
    a.ok(&["admin", "users", "add", "afterupgrade", "--roles", "access"]);
    let new = search(&a, &["--type", "user.create", "--text", "afterupgrade"]);
    assert_eq!(new.len(), 1);
    assert!(new[0]["seq"].as_u64().unwrap() > 300);
    a.ok(&["admin", "audit", "verify"]);
}

/// `hop.storage.audit_events_uri` and `audit_sessions_uri` as `file://` directories outside the
/// data dir: the audit log and the recordings store are made there (not in the data dir), and
/// search and verify read the moved log.
#[test]
fn storage_uris_move_the_audit_log_and_the_recordings_out_of_the_data_dir() {
    let elsewhere = tempfile::tempdir().unwrap();
    let events = elsewhere.path().join("events").join("hop");
    let sessions = elsewhere.path().join("sessions");
    let storage = format!(
        "  storage:\n    audit_events_uri: [file://{}]\n    audit_sessions_uri: file://{}\n",
        events.display(),
        sessions.display()
    );
    let a = Appliance::start_configured(&storage, "", "");
    a.ok(&["admin", "users", "add", "urixyz", "--roles", "access"]);

    let found = search(&a, &["--type", "user.create", "--text", "urixyz"]);
    assert_eq!(found.len(), 1, "{found:?}");
    let ok = a.ok(&["admin", "audit", "verify"]);
    assert!(ok.contains("intact"), "{ok}");

    assert!(events.join("audit.db").is_file());
    assert_eq!(file_mode(&events), 0o700);
    assert!(sessions.is_dir());
    assert!(!a.data.join("audit.db").exists());
    assert!(!a.data.join("recordings").exists());
    let log = a.log();
    assert!(
        log.contains("audit events store opened")
            && log.contains(&events.join("audit.db").display().to_string()),
        "{log}"
    );
    assert!(
        log.contains("session recordings store opened")
            && log.contains(&sessions.display().to_string()),
        "{log}"
    );
}

/// A store this build cannot open fails `hop start` at config load, naming the field, before
/// anything is created.
#[test]
fn an_unsupported_storage_uri_fails_start_before_anything_is_opened() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for (field, uri, words) in [
        (
            "audit_events_uri",
            "'postgresql://hop@db.example.com/hop?sslmode=require'",
            "does not check that the server is the one named",
        ),
        (
            "audit_sessions_uri",
            "s3://bucket/rec?insecure=true",
            "\"insecure\" is not supported",
        ),
        (
            "audit_events_uri",
            "[file:///a, file:///b]",
            "several audit stores",
        ),
        ("audit_sessions_uri", "recordings", "is not a URI"),
    ] {
        let config = dir.path().join("hop.yaml");
        std::fs::write(
            &config,
            format!(
                "version: v1\nhop:\n  data_dir: {}\n  storage:\n    {field}: {uri}\n",
                data.display()
            ),
        )
        .unwrap();
        let out = std::process::Command::new(HOP)
            .args(["start", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let err = stderr(&out);
        assert!(!out.status.success(), "{uri}: {err}");
        assert!(
            err.contains(&format!("hop.storage.{field}")) && err.contains(words),
            "{uri}: {err}"
        );
        assert!(!data.exists(), "{uri}: the data dir was made");
    }
}
