//! The audit log through the real binary: events for logins and admin actions, search, export,
//! verify, and a flipped byte in the stored file reported as exactly that event.

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
    let path = a.data.join("audit.db");
    let mut bytes = std::fs::read(&path).unwrap();
    // redb writes copy-on-write, so the event's bytes may be in the file more than once (an
    // older page not yet reused): change every copy, as a tamperer would.
    let needle = b"\"name\":\"tamperxyz\"";
    let found: Vec<usize> = bytes
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect();
    assert!(!found.is_empty(), "event bytes in the file");
    for at in found {
        bytes[at + 9] = b'T';
    }
    std::fs::write(&path, &bytes).unwrap();
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
