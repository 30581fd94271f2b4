//! The recordings, player and audit pages end to end in real headless Chromium (driven by
//! playwright-core through `web/tests/recordings.mjs`): a user with only the `access` role runs
//! an SSH session with OpenSSH through the proxy as an ordinary login; in the browser the
//! recordings page lists it and not another user's (the access preset's `where` clause), the
//! player plays it (the marker appears), pauses, seeks back and forth and plays at 8×; reading
//! it is audited; the same user's calls for another user's recording and for the audit log are
//! refused by the API. An auditor sees every recording and finds the access user's login on the
//! audit page by user and type. The refusal matrix's rows for these routes: a locked, deleted or
//! expired identity and a role taken away. Screenshots under
//! `$CARGO_TARGET_DIR/tmp/web-artifacts/recordings/`.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::json;

use crate::clock;
use crate::harness::*;
use crate::ssh::{node_token, openssh, start_node, wait_event, wait_for_node, write_config};
use crate::web::{add_user, web, web_login};
use crate::web_browser::{Browser, artifacts};

const MARK_1: &str = "rec-marker-one";
const MARK_2: &str = "rec-marker-two";

/// The current TOTP time step.
fn totp_step() -> u64 {
    clock::wall_now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 30
}

/// Waits until the TOTP step is `step` or later. A code is good once: after a login that used
/// step `s`, the next one (with the code of the step after the current one) waits for `s`.
fn wait_until_step(step: u64) {
    while totp_step() < step {
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Logs `user` in with `hop login` and runs `command` on node1 with OpenSSH (a PTY) as the
/// ordinary login; the latest TOTP step the login may have used.
fn ssh_session(a: &Appliance, user: &str, secret: &str, command: &str) -> u64 {
    let out = a.login(user, PASSWORD, secret);
    let used = totp_step() + 1;
    assert!(out.status.success(), "hop login {user}: {}", stderr(&out));
    wait_for_node(a, "node1");
    let (cfg, cluster) = write_config(a);
    let host = format!("{OS_LOGIN}@node1.{cluster}");
    let out = openssh(a, &cfg, "ssh", &["-tt", &host, command]);
    assert!(out.status.success(), "ssh -tt as {user}: {}", stderr(&out));
    used
}

/// Waits until `user`'s recording is listed for the auditor's web session; its id.
fn wait_recording(a: &Appliance, auditor: &str, user: &str) -> String {
    let deadline = clock::monotonic_now() + Duration::from_secs(30);
    loop {
        let r = web(a, "GET", "/web/api/recordings", Some(auditor), None, None);
        assert_eq!(r.status, 200, "{}", r.body);
        let found = r.body["recordings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|rec| rec["user"] == user)
            .and_then(|rec| rec["id"].as_str().map(str::to_owned));
        if let Some(id) = found {
            return id;
        }
        assert!(
            clock::monotonic_now() < deadline,
            "no recording of {user}: {}",
            r.body
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A row of the refusal matrix for these routes: how the identity is spoiled, the code.
struct Row {
    what: &'static str,
    spoil: fn(&Appliance, &str),
    code: &'static str,
}

const ROWS: &[Row] = &[
    Row {
        what: "locked",
        spoil: |a, u| {
            a.ok(&["admin", "lock", "--user", u, "--message", "web recordings"]);
        },
        code: "locked",
    },
    Row {
        what: "deleted",
        spoil: |a, u| {
            a.ok(&["admin", "users", "rm", u]);
        },
        code: "deleted",
    },
    Row {
        what: "role removed",
        spoil: |a, u| {
            let doc = a.dir.path().join(format!("{u}.yaml"));
            std::fs::write(
                &doc,
                format!("kind: user\nversion: v2\nmetadata:\n  name: {u}\nspec:\n  roles: [access]\n  traits:\n    logins: [{OS_LOGIN}]\n"),
            )
            .unwrap();
            a.ok(&["admin", "create", "--force", "-f", doc.to_str().unwrap()]);
        },
        code: "role_removed",
    },
];

/// Both routes refuse `token` with 401 and `code`.
fn refused(a: &Appliance, token: &str, what: &str, code: &str) {
    for path in ["/web/api/recordings", "/web/api/audit"] {
        let r = web(a, "GET", path, Some(token), None, None);
        assert_eq!(r.status, 401, "{what} {path}: {}", r.body);
        assert_eq!(r.body["code"], code, "{what} {path}: {}", r.body);
    }
}

#[test]
fn recordings_player_and_audit_pages_in_chromium() {
    let started = clock::monotonic_now();
    os_login();
    let a = Appliance::start("");
    let _node = start_node(
        &a,
        &a.dir.path().join("node1"),
        &node_token(&a),
        "node1",
        "env=dev",
    );
    // An auditor whose session expires during the test (a refusal row), one whose web session
    // the test itself uses, and one for the browser.
    let gone = add_user(&a, "aexp", "auditor", &[]);
    let (expiring, _) = web_login(&a, "aexp", &gone, Some(3));
    let ann = add_user(&a, "ann", "auditor", &[]);
    let (auditor, _) = web_login(&a, "ann", &ann, None);
    let audrey = add_user(&a, "audrey", "auditor", &[]);

    let rita = add_user(&a, "rita", "access", &[]);
    let otto = add_user(&a, "otto", "access", &[]);
    let rita_step = ssh_session(
        &a,
        "rita",
        &rita,
        &format!("echo {MARK_1}; sleep 2; echo {MARK_2}"),
    );
    ssh_session(&a, "otto", &otto, "echo otto-was-here");
    let rita_id = wait_recording(&a, &auditor, "rita");
    let otto_id = wait_recording(&a, &auditor, "otto");

    let shots = artifacts("recordings");
    let Some(mut b) = Browser::start("recordings.mjs", &format!("https://{}", a.addr), &shots)
    else {
        return;
    };

    // The auditor sees both recordings, and finds rita's login by user and type.
    b.send(json!({"do": "login", "who": "au", "user": "audrey", "password": PASSWORD, "otp": totp(&audrey, 30)}));
    let all = b.send(json!({"do": "recordings", "who": "au", "want": rita_id}));
    let ids: Vec<&str> = all["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert!(
        ids.contains(&rita_id.as_str()) && ids.contains(&otto_id.as_str()),
        "{all}"
    );
    b.send(json!({"do": "screenshot", "who": "au", "name": "recordings-auditor"}));
    let found = b.send(json!({"do": "audit", "who": "au", "user": "rita", "type": "user.login"}));
    let rows = found["rows"].as_array().unwrap();
    assert!(!rows.is_empty(), "{found}");
    assert!(
        rows.iter()
            .all(|r| r["user"] == "rita" && r["event"] == "user.login"),
        "{found}"
    );
    b.send(json!({"do": "screenshot", "who": "au", "name": "audit"}));

    // The access user: only her own recording is listed; the player plays it.
    wait_until_step(rita_step);
    b.send(json!({"do": "login", "who": "r", "user": "rita", "password": PASSWORD, "otp": totp(&rita, 30)}));
    let mine = b.send(json!({"do": "recordings", "who": "r", "want": rita_id}));
    let rows = mine["rows"].as_array().unwrap();
    assert!(rows.iter().any(|r| r["id"] == rita_id.as_str()), "{mine}");
    assert!(rows.iter().all(|r| r["user"] == "rita"), "{mine}");
    b.send(json!({"do": "screenshot", "who": "r", "name": "recordings-access"}));
    let p = b.send(json!({"do": "open_player", "who": "r", "id": rita_id}));
    assert_eq!(p["state"], "paused", "{p}");
    let max = p["max"].as_u64().unwrap_or_else(|| panic!("{p}"));
    assert!(max >= 2000, "the session slept 2 s: {p}");
    b.send(json!({"do": "click", "who": "r", "sel": "#play"}));
    let p = b.send(json!({"do": "wait_player", "who": "r", "text": MARK_1, "ms": 10000}));
    // Pause: the position holds and the second marker (2 s later) does not appear.
    let paused = b.send(json!({"do": "click", "who": "r", "sel": "#play"}));
    assert_eq!(paused["state"], "paused", "{paused}");
    let later = b.send(json!({"do": "player", "who": "r", "ms": 600}));
    assert_eq!(later["position"], paused["position"], "{later}");
    assert!(
        !later["screen"].as_str().unwrap().contains(MARK_2),
        "{p} {later}"
    );
    // Seek to the end: both markers; back to the start: the terminal is drawn again from there.
    let end = b.send(json!({"do": "seek", "who": "r", "ms": max}));
    assert!(end["screen"].as_str().unwrap().contains(MARK_2), "{end}");
    b.send(json!({"do": "screenshot", "who": "r", "name": "player"}));
    let start = b.send(json!({"do": "seek", "who": "r", "ms": 0}));
    assert_eq!(start["position"], 0, "{start}");
    assert!(
        !start["screen"].as_str().unwrap().contains(MARK_2),
        "{start}"
    );
    // 8×: the whole session plays in well under its 2 s.
    let fast = b.send(json!({"do": "speed", "who": "r", "value": 8}));
    assert_eq!(fast["speed"], "8", "{fast}");
    b.send(json!({"do": "click", "who": "r", "sel": "#play"}));
    let done = b.send(
        json!({"do": "wait_player", "who": "r", "text": MARK_2, "state": "ended", "ms": 5000}),
    );
    assert!(
        done["after_ms"].as_u64().unwrap() < 1800,
        "8× took {} ms",
        done["after_ms"]
    );
    b.send(json!({"do": "screenshot", "who": "r", "name": "player-ended"}));
    // Reading it was audited, with the web as the client.
    wait_event(&a, "session.recording.access", |e| {
        e["user"] == "rita" && e["session_id"] == rita_id.as_str() && e["client"] == "web"
    });

    // The API itself refuses the access user another user's recording and the audit log.
    let token = b.send(json!({"do": "cookie", "who": "r"}))["token"]
        .as_str()
        .unwrap()
        .to_string();
    for path in [
        format!("/web/api/recordings/{otto_id}"),
        format!("/web/api/recordings/{otto_id}/events?from=0"),
        "/web/api/audit".to_string(),
    ] {
        let r = web(&a, "GET", &path, Some(&token), None, None);
        assert_eq!(r.status, 403, "{path}: {}", r.body);
        assert_eq!(r.body["code"], "access_denied", "{path}: {}", r.body);
    }
    let own = web(
        &a,
        "GET",
        &format!("/web/api/recordings/{rita_id}"),
        Some(&token),
        None,
        None,
    );
    assert_eq!(own.status, 200, "{}", own.body);

    // Refusal rows: each spoils an auditor whose session worked a moment before.
    for (i, row) in ROWS.iter().enumerate() {
        let user = format!("ar{i}");
        let secret = add_user(&a, &user, "auditor", &[]);
        let (token, _) = web_login(&a, &user, &secret, None);
        for path in ["/web/api/recordings", "/web/api/audit"] {
            let ok = web(&a, "GET", path, Some(&token), None, None);
            assert_eq!(
                ok.status, 200,
                "positive control {} {path}: {}",
                row.what, ok.body
            );
        }
        (row.spoil)(&a, &user);
        refused(&a, &token, row.what, row.code);
    }
    std::thread::sleep(Duration::from_secs(4).saturating_sub(clock::since(started)));
    refused(&a, &expiring, "expired", "expired");

    // Console errors allowed: the 401 of the first page load (no session yet). The player's
    // xterm.js styles go through the CSSOM shim (`xterm-csp.js`): the CSP refuses nothing.
    let errors = b.send(json!({"do": "errors"}));
    for e in errors["errors"].as_array().unwrap() {
        let e = e.as_str().unwrap();
        assert!(e.contains("status of 401"), "{errors}");
    }
    eprintln!(
        "web recordings test took {} ms",
        clock::since(started).as_millis()
    );
}
