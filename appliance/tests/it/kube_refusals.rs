//! The kube route's refusals, end to end with the real kubectl and curl: the route's rows of the
//! refusal matrix (a locked user, a deleted user, a role taken away, an expired certificate,
//! another CA's certificate), each with a clear message and an `access.refused` event on route
//! `kube`; requests outside the role (a namespace, a pod, `--as`/`--as-group` beyond it, several
//! users without `--as`, a client's own `Impersonate-*` headers) refused with 403 before the API
//! server sees them; a running exec that ends within 5 s of a lock, and one that ends within
//! 5 s of its role dropping the `exec` verb.

use std::io::{BufRead, BufReader, Write};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::clock;
use crate::harness::*;
use crate::kube::{KubeCluster, KubeUser, tools};

/// Waits until an `access.refused` event for `user` on the kube route with `reason` is logged.
fn wait_kube_refusal(c: &KubeCluster, user: &str, reason: &str) {
    let deadline = clock::monotonic_now() + Duration::from_secs(10);
    loop {
        let events = c.events("access.refused");
        if events
            .iter()
            .any(|e| e["user"] == user && e["route"] == "kube" && e["reason"] == reason)
        {
            return;
        }
        assert!(
            clock::monotonic_now() < deadline,
            "no access.refused event for {user} on route kube with reason {reason}: {events:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `kubectl get pods` (1.20) as `u`: `Ok` when it listed web-1, else what kubectl said.
fn get_pods(c: &KubeCluster, u: &KubeUser) -> Result<(), String> {
    let out = u.run(&c.tools.kubectl_old, &["get", "pods", "-o", "name"], "");
    if out.status.success() && stdout(&out).contains("pod/web-1") {
        Ok(())
    } else {
        Err(format!("{}{}", stderr(&out), stdout(&out)))
    }
}

/// A row of the kube route's refusal matrix: how the identity is spoiled, the words kubectl
/// must show, the reason code of the audit event.
struct Row {
    what: &'static str,
    spoil: fn(&KubeCluster, &KubeUser),
    says: &'static str,
    code: &'static str,
}

const ROWS: &[Row] = &[
    Row {
        what: "locked user",
        spoil: |c, u| {
            c.a.ok(&[
                "admin",
                "lock",
                "--user",
                &u.name,
                "--message",
                "kube matrix",
            ]);
        },
        says: "locked",
        code: "locked",
    },
    Row {
        what: "deleted user",
        spoil: |c, u| {
            c.a.ok(&["admin", "users", "rm", &u.name]);
        },
        says: "no longer exists",
        code: "deleted",
    },
    Row {
        what: "role removed",
        spoil: |c, u| {
            let doc = c.a.dir.path().join(format!("{}.yaml", u.name));
            std::fs::write(
                &doc,
                format!(
                    "kind: user\nversion: v2\nmetadata:\n  name: {}\nspec:\n  roles: [kube-other]\n  traits:\n    logins: [k8s-{}]\n",
                    u.name, u.name
                ),
            )
            .unwrap();
            c.a.ok(&["admin", "create", "--force", "-f", doc.to_str().unwrap()]);
        },
        says: "taken away",
        code: "role_removed",
    },
];

#[test]
fn the_kube_route_refuses_and_says_why() {
    let Some(tools) = tools() else { return };
    let c = KubeCluster::start(tools);
    std::thread::scope(|s| {
        s.spawn(|| matrix_rows(&c));
        s.spawn(|| expired_and_other_ca(&c));
        s.spawn(|| outside_the_role(&c));
        s.spawn(|| impersonation_beyond_the_role(&c));
        s.spawn(|| a_lock_ends_a_running_exec(&c));
        s.spawn(|| a_role_without_exec_ends_a_running_exec(&c));
    });
}

fn matrix_rows(c: &KubeCluster) {
    for row in ROWS {
        let u = c.user("kube-dev");
        u.kube_login("dev");
        get_pods(c, &u).unwrap_or_else(|e| panic!("positive control for {}: {e}", row.what));
        // The certificate kubectl holds now, before the spoiling (the plugin could not renew).
        let files = u.cert_files(c);
        (row.spoil)(c, &u);
        // The proxy takes the admission snapshot again every half second: a refusal within 5 s.
        let deadline = clock::monotonic_now() + Duration::from_secs(5);
        let (code, body) = loop {
            let (code, body) = u.curl_kube(c, &files, "/api/v1/namespaces/default/pods", &[]);
            // 0: a connection the proxy's sweep closed as the lock landed; ask again.
            if (code != 200 && code != 0) || clock::monotonic_now() > deadline {
                break (code, body);
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(
            (401..=403).contains(&code) && body.contains(row.says),
            "{}: curl got {code} {body}",
            row.what
        );
        wait_kube_refusal(c, &u.name, row.code);
        let seen = get_pods(c, &u)
            .err()
            .unwrap_or_else(|| panic!("{} was let through by kubectl", row.what));
        assert!(seen.contains(row.says), "{}: kubectl said {seen}", row.what);
    }
}

/// An expired kube certificate (refused by the proxy; kubectl's plugin renews it from the valid
/// login) and a certificate from another CA.
fn expired_and_other_ca(c: &KubeCluster) {
    let u = c.user("kube-dev");
    let out = u.hop(&["kube", "login", "dev", "--ttl", "5s"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let started = clock::monotonic_now();
    let files = u.saved_cert_files(c);
    let (code, body) = u.curl_kube(c, &files, "/api/v1/namespaces/default/pods", &[]);
    assert_eq!(code, 200, "positive control: {body}\n{}", c.logs());
    std::thread::sleep(Duration::from_secs(7).saturating_sub(clock::since(started)));
    // The proxy refuses the expired kube certificate: with a 401 that says so (and an audit
    // event), or at TLS (the listener's certificate check comes first), never forwarded.
    let (code, body) = u.curl_kube(c, &files, "/api/v1/namespaces/default/pods?expired=1", &[]);
    assert!(
        code == 401 || code == 0,
        "an expired certificate got {code} {body}"
    );
    if code == 401 {
        assert!(body.contains("expired"), "{body}");
        wait_kube_refusal(c, &u.name, "expired");
    }
    let seen = c.apiserver_audit();
    assert!(
        !seen.iter().any(|r| r.to_string().contains("expired=1")),
        "forwarded: {seen:?}"
    );
    // kubectl asks the plugin, which renews the certificate from the login.
    get_pods(c, &u).unwrap_or_else(|e| panic!("after renewal: {e}"));
    let renewed = u.saved_cert_files(c);
    let (code, body) = u.curl_kube(c, &renewed, "/api/v1/namespaces/default/pods", &[]);
    assert_eq!(code, 200, "the renewed certificate: {body}");

    // A certificate from a CA Hop does not know, with a user's name in it: refused at TLS or
    // with 401, never forwarded.
    let dir = u.home.join("other-ca");
    std::fs::create_dir_all(&dir).unwrap();
    let script = format!("set -e
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=other-ca -keyout ca.key -out ca.crt
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN={} -keyout u.key -out u.csr
printf 'extendedKeyUsage=clientAuth\\n' > u.ext
openssl x509 -req -in u.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -out u.crt -extfile u.ext
", u.name);
    let out = Command::new("sh")
        .args(["-c", &script])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let forged = (renewed.0.clone(), dir.join("u.crt"), dir.join("u.key"));
    let (code, body) = u.curl_kube(c, &forged, "/api/v1/namespaces/default/pods?forged=1", &[]);
    assert!(
        code == 0 || code == 401,
        "another CA's certificate got {code}: {body}"
    );
    assert!(!body.contains("web-1"), "{body}");
    let seen = c.apiserver_audit();
    assert!(
        !seen.iter().any(|r| r.to_string().contains("forged=1")),
        "forwarded to the API server: {seen:?}"
    );
}

/// Namespaces and pods outside `kubernetes_resources`: 403 with Kubernetes' words, audited,
/// never forwarded.
fn outside_the_role(c: &KubeCluster) {
    let u = c.user("kube-dev");
    u.kube_login("dev");
    let k = &c.tools.kubectl_old;
    for args in [
        &["get", "pods", "-n", "kube-system"][..],
        &["get", "pod", "web-2"],
        &["exec", "web-2", "--", "true"],
        &["get", "secret", "other-secret"],
        &["delete", "pod", "web-2"],
    ] {
        let out = u.run(k, args, "");
        assert!(!out.status.success(), "kubectl {args:?} was let through");
        let err = stderr(&out);
        assert!(
            err.contains("Forbidden") || err.contains("forbidden"),
            "{args:?}: {err}"
        );
    }
    // Each refusal is audited: access.refused on route kube, with the request in its words.
    c.wait_event("access.refused", |e| {
        e["user"] == u.name.as_str()
            && e["route"] == "kube"
            && e["reason"] == "access_denied"
            && e["error"]
                .as_str()
                .is_some_and(|x| x.contains("kube-system"))
    });
    let seen = c.apiserver_audit();
    for r in &seen {
        let path = r["path"].as_str().unwrap_or_default();
        assert!(
            !path.contains("/namespaces/kube-system/") && !path.contains("/pods/web-2"),
            "forwarded: {r}"
        );
    }
}

/// `--as`/`--as-group` beyond the role, several users without `--as`, and a client's own
/// `Impersonate-*` headers (curl).
fn impersonation_beyond_the_role(c: &KubeCluster) {
    let k = &c.tools.kubectl_old;
    let u = c.user("kube-dev");
    u.kube_login("dev");
    // `--raw`: kubectl's discovery would be refused first, and it then reports the resource
    // type as unknown rather than the server's words.
    let pods = "/api/v1/namespaces/default/pods";
    let me = format!("k8s-{}", u.name);
    for args in [
        &["get", "--raw", pods, "--as", "system:admin"][..],
        &[
            "get",
            "--raw",
            pods,
            "--as",
            &me,
            "--as-group",
            "system:masters",
        ],
    ] {
        let out = u.run(k, args, "");
        assert!(!out.status.success(), "kubectl {args:?} was let through");
        assert!(
            stderr(&out).contains("orbidden"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    // Within the role, --as works.
    let out = u.run(k, &["get", "pods", "--as", &me, "-o", "name"], "");
    assert!(out.status.success(), "--as {me}: {}", stderr(&out));

    let files = u.cert_files(c);
    for header in [
        "Impersonate-User: system:admin",
        "Impersonate-Group: system:masters",
        "Impersonate-Uid: 0",
        "Impersonate-Extra-Scopes: all",
    ] {
        let (code, body) = u.curl_kube(
            c,
            &files,
            "/api/v1/namespaces/default/pods",
            &["-H", header],
        );
        assert_eq!(code, 403, "{header}: {body}");
    }
    for r in c.apiserver_audit() {
        let text = r["impersonate"].to_string();
        assert!(
            !text.contains("system:admin") && !text.contains("system:masters"),
            "forwarded: {r}"
        );
    }

    // Several users allowed: kubectl must say which one.
    let many = c.user("kube-many");
    many.kube_login("dev");
    let out = many.run(k, &["get", "--raw", pods], "");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--as"), "{}", stderr(&out));
    let out = many.run(k, &["auth", "whoami", "--as", "bob-k", "-o", "json"], "");
    if out.status.success() {
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["status"]["userInfo"]["username"], "bob-k");
    } else {
        // kubectl 1.20 has no `auth whoami`: ask the API directly.
        let out = many.run(k, &["get", "pods", "--as", "bob-k", "-o", "name"], "");
        assert!(out.status.success(), "--as bob-k: {}", stderr(&out));
    }
}

/// A running exec ends within 5 s of its user's lock.
fn a_lock_ends_a_running_exec(c: &KubeCluster) {
    let u = c.user("kube-dev");
    u.kube_login("dev");
    ends_within_5s(c, &u, "the lock", || {
        c.a.ok(&[
            "admin",
            "lock",
            "--user",
            &u.name,
            "--message",
            "kube exec lock",
        ]);
    });
}

/// A running exec ends within 5 s of its role dropping the `exec` verb (the user is neither
/// locked nor losing the role: only that request is no longer allowed).
fn a_role_without_exec_ends_a_running_exec(c: &KubeCluster) {
    let role = |verbs: &str| {
        format!(
            "kind: role\nversion: v7\nmetadata:\n  name: kube-live\nspec:\n  allow:\n    kubernetes_labels:\n      env: dev\n    kubernetes_users: ['{{{{internal.logins}}}}']\n    kubernetes_resources:\n    - kind: pod\n      namespace: default\n      name: '*'\n      verbs: {verbs}\n"
        )
    };
    let doc = c.a.dir.path().join("kube-live.yaml");
    std::fs::write(&doc, role("['*']")).unwrap();
    c.a.ok(&["admin", "create", "--force", "-f", doc.to_str().unwrap()]);
    let u = c.user("kube-live");
    u.kube_login("dev");
    ends_within_5s(c, &u, "the role dropped exec", || {
        std::fs::write(&doc, role("[get, list, watch]")).unwrap();
        c.a.ok(&["admin", "create", "--force", "-f", doc.to_str().unwrap()]);
    });
    let end = c.wait_event("kube.exec", |e| {
        e["user"] == u.name.as_str() && e["phase"] == "end"
    });
    assert_eq!(end["ended_by"], "terminated", "{end}");
}

/// Starts an exec of `u`'s, sees it echo, runs `change` and asserts the exec ends within 5 s.
fn ends_within_5s(c: &KubeCluster, u: &KubeUser, what: &str, change: impl FnOnce()) {
    let mut child = u.spawn(&c.tools.kubectl_old, &["exec", "-i", "web-1", "--", "sh"]);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"echo alive-1\n").unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let deadline = clock::monotonic_now() + Duration::from_secs(20);
    while !line.contains("alive-1") {
        line.clear();
        if out.read_line(&mut line).unwrap_or(0) == 0 || clock::monotonic_now() > deadline {
            panic!("the exec never echoed: {line}\n{}", c.logs());
        }
    }
    let changed_at = clock::monotonic_now();
    change();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        let waited = clock::since(changed_at);
        if waited > Duration::from_secs(5) {
            let _ = child.kill();
            panic!("the exec was still running {waited:?} after {what}");
        }
        // Keep typing: a relay that is gone fails the write, one that is alive echoes.
        let _ = stdin.write_all(b"echo still\n");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(stdin);
}
