//! The web route's rows of the refusal matrix, over the web API (curl): a locked user, a deleted
//! user, a role taken away, a session older than the user's last lock, an expired session, a
//! state-changing request without its CSRF token or from another origin, no session at all, and
//! logins that lock the user after five failures as `hop login` does. Each refusal says why and
//! is audited (`access.refused`, route `web`, its reason code). A web session is made by a login
//! with a fresh one-time code, so each row has a user of its own rather than a column in
//! `admission.rs`'s matrix, whose users log in with `hop login`.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::clock;
use crate::harness::*;
use crate::web::{add_user, web, web_login};

/// Waits until an `access.refused` event for `user` on the `web` route with `reason` is in the
/// audit log.
fn wait_web_refusal(a: &Appliance, user: &str, reason: &str) {
    let deadline = clock::monotonic_now() + Duration::from_secs(10);
    loop {
        let out = a.ok(&[
            "admin",
            "audit",
            "search",
            "--type",
            "access.refused",
            "--format",
            "json",
        ]);
        let found = out
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|e| e["user"] == user && e["route"] == "web" && e["reason"] == reason);
        if found {
            return;
        }
        assert!(
            clock::monotonic_now() < deadline,
            "no access.refused event for {user} on the web route with reason {reason}:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A row of the web route's refusal matrix: how the identity or the request is spoiled, the
/// words the page is told, the status and the reason code.
struct WebRow {
    what: &'static str,
    spoil: fn(&Appliance, &str),
    /// The request that is refused: a state-changing one without its CSRF token, or a read.
    forged: bool,
    says: &'static str,
    status: u16,
    code: &'static str,
    /// Another (words, code) that is as right: the web room's sweep, once a second, may have
    /// ended the session while a lock stood (a lock removed at once after).
    also: Option<(&'static str, &'static str)>,
}

const WEB_ROWS: &[WebRow] = &[
    WebRow {
        what: "locked user",
        spoil: |a, u| {
            a.ok(&["admin", "lock", "--user", u, "--message", "web matrix"]);
        },
        forged: false,
        says: "locked",
        status: 401,
        code: "locked",
        also: None,
    },
    WebRow {
        what: "deleted user",
        spoil: |a, u| {
            a.ok(&["admin", "users", "rm", u]);
        },
        forged: false,
        says: "no longer exists",
        status: 401,
        code: "deleted",
        also: None,
    },
    WebRow {
        what: "role removed",
        spoil: |a, u| {
            let doc = a.dir.path().join(format!("{u}.yaml"));
            std::fs::write(
                &doc,
                format!("kind: user\nversion: v2\nmetadata:\n  name: {u}\nspec:\n  roles: [auditor]\n  traits:\n    logins: [{OS_LOGIN}]\n"),
            )
            .unwrap();
            a.ok(&["admin", "create", "--force", "-f", doc.to_str().unwrap()]);
        },
        forged: false,
        says: "taken away",
        status: 401,
        code: "role_removed",
        also: None,
    },
    WebRow {
        what: "session older than the last lock",
        spoil: |a, u| {
            let out = a.ok(&["admin", "lock", "--user", u]);
            let id = out
                .split("lock ")
                .nth(1)
                .and_then(|s| s.split(')').next())
                .unwrap();
            a.ok(&["admin", "rm", &format!("lock/{id}")]);
        },
        forged: false,
        says: "issued before",
        status: 401,
        code: "voided",
        also: Some(("locked", "locked")),
    },
    WebRow {
        what: "CSRF token missing",
        spoil: |_, _| {},
        forged: true,
        says: "no CSRF token",
        status: 403,
        code: "cross_site",
        also: None,
    },
];

#[test]
fn the_refusal_matrix_on_the_web_route() {
    let a = Appliance::start("");
    let started = clock::monotonic_now();
    let expiring = "wexp";
    let secret = add_user(&a, expiring, "access", &[]);
    let (expired_token, _) = web_login(&a, expiring, &secret, Some(3));
    for (i, row) in WEB_ROWS.iter().enumerate() {
        let user = format!("w{i}");
        let secret = add_user(&a, &user, "access", &[]);
        let (token, csrf) = web_login(&a, &user, &secret, None);
        let ok = web(&a, "GET", "/web/api/resources", Some(&token), None, None);
        assert_eq!(
            ok.status, 200,
            "positive control for {}: {}",
            row.what, ok.body
        );
        (row.spoil)(&a, &user);
        let seen = if row.forged {
            web(
                &a,
                "POST",
                "/web/api/logout",
                Some(&token),
                None,
                Some(&json!({})),
            )
        } else {
            web(
                &a,
                "GET",
                "/web/api/resources",
                Some(&token),
                Some(&csrf),
                None,
            )
        };
        assert_eq!(seen.status, row.status, "{}: {}", row.what, seen.body);
        let (says, code) = match row.also {
            Some((says, code)) if seen.body["code"] == code => (says, code),
            _ => (row.says, row.code),
        };
        let message = seen.body["error"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{}: {}", row.what, seen.body);
        assert_eq!(seen.body["code"], code, "{}", row.what);
        wait_web_refusal(&a, &user, code);
        // The access requests page's and the security keys' calls (reading, and changing
        // state) are refused alike.
        for (read, write, form) in [
            (
                "/web/api/requests",
                "/web/api/requests",
                json!({"roles": ["access"], "reason": "x"}),
            ),
            (
                "/web/api/account/webauthn",
                "/web/api/account/webauthn/register",
                json!({}),
            ),
        ] {
            let (method, path, csrf_sent, body) = if row.forged {
                ("POST", write, None, Some(form))
            } else {
                ("GET", read, Some(csrf.as_str()), None)
            };
            let seen = web(&a, method, path, Some(&token), csrf_sent, body.as_ref());
            assert_eq!(
                seen.status, row.status,
                "{} on {path}: {}",
                row.what, seen.body
            );
            assert_eq!(seen.body["code"], code, "{} on {path}", row.what);
        }
    }
    // The logins are in the audit log as web logins.
    let logins = a.ok(&[
        "admin",
        "audit",
        "search",
        "--type",
        "user.login",
        "--format",
        "json",
    ]);
    let web_login_event = logins
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .any(|e| e["user"] == "w0" && e["success"] == true && e["client"] == "web");
    assert!(web_login_event, "{logins}");
    // From another origin, with the right token: refused too.
    let secret = add_user(&a, "wcross", "access", &[]);
    let (token, csrf) = web_login(&a, "wcross", &secret, None);
    let out = Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
        .arg(format!("https://{}/web/api/logout", a.addr))
        .args(["-H", "Origin: https://evil.example"])
        .args(["-H", &format!("Cookie: __Host-hop_session={token}")])
        .args(["-H", &format!("X-Hop-Csrf: {csrf}")])
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "403");
    // An expired session: refused with a message that says so.
    std::thread::sleep(Duration::from_secs(4).saturating_sub(clock::since(started)));
    let seen = web(
        &a,
        "GET",
        "/web/api/resources",
        Some(&expired_token),
        None,
        None,
    );
    assert_eq!(seen.status, 401, "{}", seen.body);
    assert!(
        seen.body["error"].as_str().unwrap().contains("expired"),
        "{}",
        seen.body
    );
    wait_web_refusal(&a, expiring, "expired");
    // Web logins count failures as `hop login` does: five wrong codes lock the user, and then
    // even the right code is refused, with the same words as a wrong one.
    let secret = add_user(&a, "wlocked", "access", &[]);
    let wrong = json!({"user": "wlocked", "password": PASSWORD, "otp": "000000"});
    for _ in 0..5 {
        let r = web(&a, "POST", "/web/api/login", None, None, Some(&wrong));
        assert_eq!(r.status, 401, "{}", r.body);
        assert_eq!(r.body["code"], "invalid_credentials");
    }
    let right = json!({"user": "wlocked", "password": PASSWORD, "otp": totp(&secret, 30)});
    let r = web(&a, "POST", "/web/api/login", None, None, Some(&right));
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.body["code"], "invalid_credentials");
    assert!(r.cookies.is_empty());
    let locked = a.ok(&[
        "admin",
        "audit",
        "search",
        "--type",
        "user.locked",
        "--format",
        "json",
    ]);
    assert!(locked.contains("wlocked"), "{locked}");
    // A session that never existed, and a cookie after logout: no session at all.
    let none = web(
        &a,
        "GET",
        "/web/api/resources",
        Some(&"ab".repeat(32)),
        None,
        None,
    );
    assert_eq!(none.status, 401);
    assert_eq!(none.body["code"], "no_session");
    let bye = web(
        &a,
        "POST",
        "/web/api/logout",
        Some(&token),
        Some(&csrf),
        Some(&json!({})),
    );
    assert_eq!(bye.status, 200, "{}", bye.body);
    let after = web(&a, "GET", "/web/api/resources", Some(&token), None, None);
    assert_eq!(after.status, 401);
}
