//! Per-session MFA on the kube route, end to end with the software authenticator: an ordinary
//! user whose role `kube-tap` sets `require_session_mfa` (beside `kube-dev`, the Kubernetes
//! access) registers a key, then `hop kube login dev` taps it and saves a one-minute
//! certificate marked for cluster `dev`; curl with it lists the pods; `hop kube exec` (kubectl
//! and its credential plugin, which reuses it within its minute) runs a shell in a pod; a
//! certificate without the mark (issued while the role asked for no tap) is refused once the
//! role asks again. The harness is `kube.rs`'s.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::clock;
use crate::harness::*;
use crate::kube::{KubeCluster, KubeUser, tools};
use crate::web_admin::{code_after, step_now};

/// The role that asks for a tap before each session (`tap`), or not.
fn tap_role(tap: bool) -> String {
    format!(
        "kind: role\nversion: v7\nmetadata:\n  name: kube-tap\nspec:\n  options:\n    require_session_mfa: {tap}\n"
    )
}

/// `program ARGS` as `u`, with the software key `key`, `stdin` on standard input.
fn run_key(u: &KubeUser, key: &Path, program: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .env("HOP_HOME", &u.home)
        .env("HOME", &u.home)
        .env("KUBECONFIG", &u.kubeconfig)
        .env("HOP_TEST_AUTHENTICATOR", key)
        .env_remove("HOP_PROXY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    crate::apps_http::wait_output(child, Duration::from_secs(30))
}

/// A user with `kube-dev` and `kube-tap`, logged in with a one-time code, with a key added.
fn user_with_key(c: &KubeCluster) -> (KubeUser, PathBuf) {
    let name = "ktap";
    let secret =
        c.a.add_user(name, "kube-dev,kube-tap", &format!("k8s-{name}"));
    let home = c.a.dir.path().join(format!("home-{name}"));
    std::fs::create_dir_all(&home).unwrap();
    let u = KubeUser {
        kubeconfig: home.join("kubeconfig"),
        home,
        name: name.into(),
    };
    let key = u.home.join("key.json");
    let hop = Path::new(HOP);
    // Sign-up used the current step's code: the login takes the next one, the key's proof the
    // one after (waiting for the clock when it is not yet in the window).
    let (code, step) = code_after(&secret, Some(step_now()));
    let out = run_key(
        &u,
        &key,
        hop,
        &[
            "login",
            "--proxy",
            &c.a.addr,
            "--ca-pin",
            &c.a.pin,
            "--user",
            name,
            "--password-stdin",
            "--otp",
            &code,
        ],
        &format!("{PASSWORD}\n"),
    );
    assert!(out.status.success(), "login: {}", stderr(&out));
    let (code, _) = code_after(&secret, Some(step));
    let out = run_key(
        &u,
        &key,
        hop,
        &[
            "mfa",
            "add",
            "--name",
            "usb",
            "--password-stdin",
            "--otp",
            &code,
        ],
        &format!("{PASSWORD}\n"),
    );
    assert!(out.status.success(), "mfa add: {}", stderr(&out));
    (u, key)
}

#[test]
fn kube_sessions_need_a_tap_each() {
    let Some(tools) = tools() else {
        return;
    };
    let c = KubeCluster::start_with_auth(
        tools,
        "  authentication:\n    second_factor: \"optional\"\n",
    );
    let role = c.a.dir.path().join("kube-tap.yaml");
    let set_role = |tap: bool| {
        std::fs::write(&role, tap_role(tap)).unwrap();
        c.a.ok(&["admin", "create", "--force", "-f", role.to_str().unwrap()]);
    };
    set_role(true);
    let (u, key) = user_with_key(&c);
    let hop = Path::new(HOP);

    // hop kube login taps and saves a one-minute certificate marked for dev.
    let out = run_key(&u, &key, hop, &["kube", "login", "dev"], "");
    assert!(out.status.success(), "{}\n{}", stderr(&out), c.logs());
    assert!(
        stderr(&out).contains("security key tap"),
        "{}",
        stderr(&out)
    );
    let ev = c.wait_event("mfa.session", |e| {
        e["kube_cluster"] == "dev" && e.get("error").is_none()
    });
    assert_eq!(ev["user"], "ktap", "{ev}");
    let files = u.saved_cert_files(&c);
    let (code, body) = u.curl_kube(&c, &files, "/api/v1/namespaces/default/pods", &[]);
    assert_eq!(code, 200, "{body}\n{}", c.logs());
    assert!(body.contains("web-1"), "{body}");

    // hop kube exec: kubectl's credential plugin hands it the marked certificate, still in
    // its minute (a renewal would be a tap).
    let out = run_key(
        &u,
        &key,
        hop,
        &["kube", "exec", "-i", "web-1", "--", "sh"],
        "echo tapped-exec\nexit 0\n",
    );
    assert!(
        stdout(&out).contains("tapped-exec"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );

    // A certificate without the mark: issued while the role asked for no tap, refused once it
    // asks again.
    set_role(false);
    let out = run_key(&u, &key, hop, &["kube", "login", "dev"], "");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("security key tap"),
        "{}",
        stderr(&out)
    );
    set_role(true);
    let unmarked = u.saved_cert_files(&c);
    let deadline = clock::monotonic_now() + Duration::from_secs(10);
    loop {
        let (code, body) = u.curl_kube(&c, &unmarked, "/api/v1/namespaces/default/pods", &[]);
        if code != 200 {
            assert!(body.contains("no per-session MFA mark"), "{code} {body}");
            break;
        }
        assert!(
            clock::monotonic_now() < deadline,
            "an unmarked certificate kept working"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}
