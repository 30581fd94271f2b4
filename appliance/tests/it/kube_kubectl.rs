//! Kubernetes access end to end with the real kubectl (1.32 and Debian's 1.20, in parallel on
//! one appliance), as users whose only roles are kube roles: `hop kube login`, get, whoami, a
//! Secret, exec with a terminal, port-forward, `logs -f`, a watch, each audited, the exec played
//! back; and the client's own commands (`hop kube ls|login|credentials|exec|logout`, a
//! kubeconfig's other entries kept, `hop logout`). The harness is `kube.rs`'s.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::clock;
use crate::harness::*;
use crate::kube::{KubeCluster, KubeUser, echo_server, read_lines_until, tools};

/// Everything one kubectl does through Hop, as one user: what the issue's "must show" asks.
fn kubectl_does_it_all(c: &KubeCluster, kubectl: &Path, label: &str) {
    let u = c.user("kube-dev");
    let ctx = c.context();
    let says = u.kube_login("dev");
    assert!(says.contains(&ctx), "{label}: {says}");
    let k = |args: &[&str]| u.run(kubectl, args, "");
    let ok = |args: &[&str]| {
        let out = k(args);
        assert!(
            out.status.success(),
            "{label}: kubectl {args:?}: {}{}\n{}",
            stderr(&out),
            stdout(&out),
            c.logs()
        );
        stdout(&out)
    };

    // kubectl get pods: the pods of default the role shows (web-2 is denied by name).
    let pods = ok(&["get", "pods"]);
    assert!(pods.contains("web-1"), "{label}: {pods}");
    assert!(
        !pods.contains("web-2"),
        "{label}: a hidden pod was listed: {pods}"
    );
    let all = ok(&["get", "pods", "-A", "-o", "name"]);
    assert!(all.contains("pod/web-1"), "{label}: {all}");
    for hidden in ["web-2", "dns-1"] {
        assert!(!all.contains(hidden), "{label}: {hidden} listed: {all}");
    }

    // kubectl auth whoami: the role's user (the logins trait) and groups.
    // kubectl 1.20 has no `auth whoami`: it posts the same SelfSubjectReview itself.
    let review = u.home.join("selfsubjectreview.json");
    std::fs::write(
        &review,
        r#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#,
    )
    .unwrap();
    let who = if label.contains("1.20") {
        ok(&[
            "create",
            "--raw",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            "-f",
            review.to_str().unwrap(),
        ])
    } else {
        ok(&["auth", "whoami", "-o", "json"])
    };
    let v: Value = serde_json::from_str(&who).unwrap_or_else(|e| panic!("{e}: {who}"));
    let info = &v["status"]["userInfo"];
    assert_eq!(
        info["username"],
        format!("k8s-{}", u.name),
        "{label}: {who}"
    );
    let groups: Vec<&str> = info["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        groups.contains(&"developers") && groups.contains(&"viewers"),
        "{label}: {who}"
    );

    // The Secret the role allows; its value never reaches the audit log.
    let secret = ok(&["get", "secret", "db-password", "-o", "json"]);
    assert!(secret.contains("aHVudGVyMg=="), "{label}: {secret}");

    // kubectl exec -it web-1 -- sh, on a terminal (script): typed input echoed, exit status.
    let line = format!("{} exec -it web-1 -- sh", kubectl.display());
    let out = u.run(
        Path::new("script"),
        &["-qefc", &line, "/dev/null"],
        "echo typed-42\nexit 3\n",
    );
    let text = stdout(&out);
    assert!(
        text.contains("typed-"),
        "{label}: exec said {text}{}",
        stderr(&out)
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "{label}: {text}{}",
        stderr(&out)
    );

    // hop kube exec: kubectl exec on the context hop wrote, the exit status passed on.
    let out = u.run(
        Path::new(HOP),
        &["kube", "exec", "-i", "web-1", "--", "sh"],
        "echo via-hop\nexit 4\n",
    );
    assert!(
        stdout(&out).contains("via-hop"),
        "{label}: {}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(out.status.code(), Some(4), "{label}: {}", stderr(&out));

    // kubectl port-forward pod/web-1 LOCAL:ECHO, a byte-exact transfer.
    let echo = echo_server();
    let local = free_port();
    let mut pf = u.spawn(
        kubectl,
        &["port-forward", "pod/web-1", &format!("{local}:{echo}")],
    );
    let ready = read_lines_until(&mut pf, 1, |l| l.contains("Forwarding from"));
    assert!(
        ready.iter().any(|l| l.contains("Forwarding from")),
        "{label}: port-forward said {ready:?}"
    );
    let payload: Vec<u8> = (0..256 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", local)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let writer = {
        let mut w = s.try_clone().unwrap();
        let p = payload.clone();
        std::thread::spawn(move || w.write_all(&p).unwrap())
    };
    let mut back = vec![0u8; payload.len()];
    if let Err(e) = s.read_exact(&mut back) {
        let _ = pf.kill();
        let out = pf.wait_with_output().unwrap();
        panic!(
            "{label}: port-forward read: {e}; kubectl said {}\n{}",
            stderr(&out),
            c.logs()
        );
    }
    writer.join().unwrap();
    assert!(back == payload, "{label}: the forwarded bytes differ");
    drop(s);
    let _ = pf.kill();
    let _ = pf.wait();

    // kubectl logs -f: lines arrive as the stand-in writes them (one per 100 ms).
    let mut logs = u.spawn(kubectl, &["logs", "-f", "web-1"]);
    let lines = read_lines_until(&mut logs, 3, |l| !l.trim().is_empty());
    let _ = logs.kill();
    let _ = logs.wait();
    assert!(lines.len() >= 3, "{label}: logs -f gave {lines:?}");

    // A watch: the current pods, then changes, never the hidden pod.
    let mut watch = u.spawn(kubectl, &["get", "pods", "--watch", "-o", "name"]);
    let lines = read_lines_until(&mut watch, 3, |l| l.contains("web-1"));
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(
        lines.iter().filter(|l| l.contains("web-1")).count() >= 3,
        "{label}: the watch gave {lines:?}"
    );
    assert!(
        lines
            .iter()
            .all(|l| !l.contains("web-2") && !l.contains("dns-1")),
        "{label}: the watch showed a hidden pod: {lines:?}"
    );

    // Each is in the audit log.
    let mine = |e: &Value| e["user"] == u.name.as_str();
    for (verb, resource, sub) in [
        ("list", "pods", None),
        ("create", "selfsubjectreviews", None),
        ("get", "secrets", None),
        ("get", "pods", Some("log")),
        ("watch", "pods", None),
    ] {
        c.wait_event("kube.request", |e| {
            mine(e)
                && e["verb"] == verb
                && e["resource"] == resource
                && sub.is_none_or(|s| e["subresource"] == s)
        });
    }
    let exec = c.wait_event("kube.exec", |e| {
        mine(e) && e["pod"] == "web-1" && e["tty"] == true
    });
    c.wait_event("kube.portforward", mine);

    // The interactive exec plays back with hop play.
    let session = exec["session_id"]
        .as_str()
        .or(exec["sid"].as_str())
        .unwrap_or_else(|| panic!("{label}: no session id in {exec}"))
        .to_string();
    let auditor = c.user("auditor");
    let deadline = clock::monotonic_now() + Duration::from_secs(10);
    loop {
        let out = auditor.hop(&["play", &session, "--format", "raw"]);
        if stdout(&out).contains("typed-42") {
            break;
        }
        assert!(
            clock::monotonic_now() < deadline,
            "{label}: hop play {session}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn kubectl_1_32_and_1_20_work_through_hop_and_are_audited() {
    let Some(tools) = tools() else { return };
    let c = KubeCluster::start(tools.clone());
    std::thread::scope(|s| {
        if let Some(new) = &tools.kubectl_new {
            s.spawn(|| kubectl_does_it_all(&c, new, "kubectl 1.32"));
        }
        s.spawn(|| kubectl_does_it_all(&c, &tools.kubectl_old, "kubectl 1.20"));
        s.spawn(|| hop_kube_commands(&c));
        s.spawn(|| bot_kubernetes_output(&c, &tools.kubectl_old));
    });
    // The Secret's value is never in the audit log, base64 or not.
    let audit = c.audit_export();
    for secret in ["hunter2", "aHVudGVyMg=="] {
        assert!(!audit.contains(secret), "{secret} is in the audit log");
    }
    // The stand-in only ever saw the agent's own certificate and one impersonated user.
    for r in c.apiserver_audit() {
        assert_eq!(r["cert_cn"], "hop-kube-agent", "{r}");
        let user = &r["impersonate"]["impersonate-user"];
        assert!(
            user.as_array().is_some_and(|u| u.len() == 1),
            "not exactly one Impersonate-User: {r}"
        );
        assert!(!r["impersonate"].to_string().contains("system:"), "{r}");
    }
}

/// A bot with the kube role and tbot's `kubernetes` output: `hop bot start --oneshot` writes a
/// `kubeconfig.yaml` (0600) that a plain kubectl uses as is, as the bot, within its role.
fn bot_kubernetes_output(c: &KubeCluster, kubectl: &Path) {
    let dir = c.a.dir.path().join("kbot-home");
    let dest = c.a.dir.path().join("kbot-kube");
    let run = oneshot_bot(
        &c.a,
        "kbot",
        ("kube-dev", Some("kbot-k8s")),
        "type: kubernetes\n    kubernetes_cluster: dev",
        &dest,
    );
    assert!(run.status.success(), "hop bot start: {}", stderr(&run));
    let kubeconfig = dest.join("kubeconfig.yaml");
    assert_eq!(file_mode(&kubeconfig), 0o600);
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let get = Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["get", "pods", "-o", "name"])
        .env("HOME", &home)
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    let pods = stdout(&get);
    assert!(get.status.success(), "kubectl as the bot: {}", stderr(&get));
    assert!(pods.contains("pod/web-1"), "{pods}");
    assert!(!pods.contains("web-2"), "the role hides web-2: {pods}");
    c.wait_event("kube.request", |e| {
        e["user"] == "bot-kbot" && e["verb"] == "list" && e["resource"] == "pods"
    });
}

/// The client's commands: ls, login keeping a kubeconfig's other entries, credentials, exec
/// without kubectl, logout, and a login to a cluster the roles do not allow.
fn hop_kube_commands(c: &KubeCluster) {
    let u = c.user("kube-dev");
    let ls = stdout(&u.hop(&["kube", "ls"]));
    let row = ls
        .lines()
        .find(|l| l.starts_with("dev "))
        .unwrap_or_else(|| panic!("{ls}"));
    for want in ["env=dev", &format!("k8s-{}", u.name), "developers,viewers"] {
        assert!(row.contains(want), "{want} in {ls}");
    }

    // A kubeconfig with somebody else's entries keeps them, byte for byte in meaning.
    let foreign = "apiVersion: v1\nkind: Config\nclusters:\n- name: other\n  cluster:\n    server: https://10.9.9.9:6443\n    insecure-skip-tls-verify: true\nusers:\n- name: other\n  user:\n    token: \"0042\"\ncontexts:\n- name: other\n  context:\n    cluster: other\n    user: other\n    namespace: team-a\ncurrent-context: other\n";
    std::fs::write(&u.kubeconfig, foreign).unwrap();
    u.kube_login("dev");
    assert_eq!(file_mode(&u.kubeconfig), 0o600);
    let view = |u: &KubeUser| {
        let out = u.run(
            &c.tools.kubectl_old,
            &["config", "view", "--raw", "-o", "json"],
            "",
        );
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let v = view(&u);
    assert_eq!(v["current-context"], c.context());
    let other = |v: &Value, key: &str| {
        v[key]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "other")
            .cloned()
    };
    assert_eq!(other(&v, "users").unwrap()["user"]["token"], "0042");
    assert_eq!(
        other(&v, "contexts").unwrap()["context"]["namespace"],
        "team-a"
    );
    let ours = v["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == c.context())
        .unwrap()
        .clone();
    assert_eq!(
        ours["cluster"]["server"],
        format!("https://localhost:{}", c.port)
    );
    assert_eq!(ours["cluster"]["tls-server-name"], "kube.localhost");
    assert_private_keys(&u.home.join("kube"));

    // The credential plugin's answer is an ExecCredential kubectl takes.
    let out = u.hop(&["kube", "credentials", "--cluster", "dev"]);
    let cred: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cred["kind"], "ExecCredential");
    assert!(
        cred["status"]["clientCertificateData"]
            .as_str()
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );

    // Without kubectl on PATH, hop kube exec says so.
    let out = Command::new(HOP)
        .args(["kube", "exec", "web-1", "--", "true"])
        .env("HOP_HOME", &u.home)
        .env("KUBECONFIG", &u.kubeconfig)
        .env("PATH", u.home.join("empty-path"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("kubectl is not installed"),
        "{}",
        stderr(&out)
    );

    // Logout takes away our entries and files, and only them.
    let out = u.hop(&["kube", "logout", "dev"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v = view(&u);
    for key in ["clusters", "users", "contexts"] {
        let names: Vec<&str> = v[key]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["name"].as_str())
            .collect();
        assert_eq!(names, ["other"], "{key}: {v}");
    }
    assert_eq!(other(&v, "users").unwrap()["user"]["token"], "0042");
    assert!(
        !u.home.join("kube").exists() || walk_files(&u.home.join("kube")).is_empty(),
        "files left: {:?}",
        walk_files(&u.home.join("kube"))
    );

    // `hop logout` takes the Kubernetes logins with it, kubeconfig entries included.
    u.kube_login("dev");
    let out = u.hop(&["logout"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v = view(&u);
    let clusters: Vec<&str> = v["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(clusters, ["other"], "{v}");

    // A cluster the roles do not allow: not listed, and the login fails with Auth's words.
    let prod = c.user("kube-prod");
    let ls = stdout(&prod.hop(&["kube", "ls"]));
    assert!(!ls.lines().any(|l| l.starts_with("dev ")), "{ls}");
    let out = prod.hop(&["kube", "login", "dev"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("your roles do not allow Kubernetes cluster \"dev\""),
        "{err}"
    );
    assert!(
        err.contains("dev")
            && (err.contains("denied") || err.contains("not") || err.contains("allow")),
        "{err}"
    );
    assert!(
        !prod.kubeconfig.exists(),
        "a refused login wrote a kubeconfig"
    );
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}
