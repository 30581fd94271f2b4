//! SPIFFE SVIDs end to end: `hop bot start --oneshot` with a `spiffe-svid` output writes an SVID
//! that stock `openssl verify` accepts against the bundle it wrote (the same as `hop admin auth
//! export --type spiffe`), with exactly one URI SAN and `CA:FALSE`; the issue is audited; a path
//! the bot's roles do not allow fails the run with an error that names it, and is audited too.
//! The `spiffe-workload-api` service, with py-spiffe as the client: an allowed uid fetches its
//! SVID, uid 65534 gets `PermissionDenied`, and an open stream receives the SVID of each renewal.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::harness::*;
use crate::ssh::events;

const SVC_ROLE: &str = "kind: role\nversion: v7\nmetadata:\n  name: svc-bot\nspec:\n  allow:\n    spiffe:\n      - path: /svc/*\n  deny:\n    spiffe:\n      - path: /svc/secret\n";

/// A `hop bot start` configuration with one `spiffe-svid` output for `path` into `dir`.
fn config(a: &Appliance, data: &Path, dir: &Path, path: &str) -> String {
    format!(
        "version: v2\nproxy_server: {}\nonboarding:\n  join_method: token\n  ca_pins: ['{}']\nstorage: {{type: directory, path: {}}}\noutputs:\n  - type: spiffe-svid\n    destination: {{type: directory, path: {}}}\n    svid: {{path: {path}}}\n",
        a.addr,
        a.pin,
        data.display(),
        dir.display()
    )
}

fn oneshot(file: &Path, token: Option<&str>) -> Output {
    let mut cmd = Command::new(HOP);
    cmd.args(["bot", "start", "--oneshot", "-c"]).arg(file);
    if let Some(t) = token {
        cmd.args(["--token", t]);
    }
    cmd.stdin(Stdio::null()).output().unwrap()
}

fn openssl(args: &[&str]) -> Output {
    Command::new("openssl").args(args).output().unwrap()
}

#[test]
fn a_bot_writes_an_svid_openssl_verifies_and_is_refused_a_path_its_roles_do_not_allow() {
    let a = Appliance::start("");
    let role = a.dir.path().join("svc-role.yaml");
    std::fs::write(&role, SVC_ROLE).unwrap();
    a.ok(&["admin", "create", "-f", role.to_str().unwrap()]);
    let out = a.ok(&[
        "admin", "bots", "add", "svc", "--roles", "svc-bot", "--format", "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let token = v["token"].as_str().unwrap().to_string();
    let (data, dir) = (a.dir.path().join("d"), a.dir.path().join("svid"));
    let good = a.dir.path().join("good.yaml");
    std::fs::write(&good, config(&a, &data, &dir, "/svc/foo")).unwrap();

    let o = oneshot(&good, Some(&token));
    assert!(o.status.success(), "oneshot: {}", stderr(&o));
    for f in ["svid.pem", "svid_key.pem", "svid_bundle.pem"] {
        let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    let (svid, bundle) = (dir.join("svid.pem"), dir.join("svid_bundle.pem"));
    let v = openssl(&[
        "verify",
        "-CAfile",
        bundle.to_str().unwrap(),
        svid.to_str().unwrap(),
    ]);
    assert!(
        v.status.success(),
        "openssl verify: {}",
        String::from_utf8_lossy(&v.stderr)
    );
    let text = openssl(&["x509", "-noout", "-text", "-in", svid.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    assert_eq!(text.matches("URI:").count(), 1, "{text}");
    assert!(text.contains("URI:spiffe://test.cluster/svc/foo"), "{text}");
    assert!(text.contains("CA:FALSE"), "{text}");
    assert!(text.contains("Digital Signature") && !text.contains("Key Encipherment"));
    assert!(
        !text.contains("DNS:") && !text.contains("IP Address:"),
        "{text}"
    );
    // The key written is the one certified.
    let pubkey = |args: &[&str]| openssl(args).stdout;
    assert_eq!(
        pubkey(&["x509", "-noout", "-pubkey", "-in", svid.to_str().unwrap()]),
        pubkey(&[
            "pkey",
            "-pubout",
            "-in",
            dir.join("svid_key.pem").to_str().unwrap()
        ])
    );
    // The bundle is the exported trust domain CA.
    let exported = a.ok(&["admin", "auth", "export", "--type", "spiffe"]);
    assert_eq!(
        std::fs::read_to_string(&bundle).unwrap().trim(),
        exported.trim()
    );
    let issued = events(&a, "spiffe.svid.issue");
    assert!(
        issued
            .iter()
            .any(|e| e["path"] == "/svc/foo" && e["user"] == "bot-svc" && e["serial"].is_string()),
        "{issued:?}"
    );

    // A path outside the role's globs, and one its deny names: refused by name, audited.
    for path in ["/db/main", "/svc/secret"] {
        let bad = a.dir.path().join("bad.yaml");
        std::fs::write(&bad, config(&a, &data, &a.dir.path().join("bad"), path)).unwrap();
        let o = oneshot(&bad, None);
        assert!(!o.status.success(), "{path} was issued");
        let err = stderr(&o);
        assert!(err.contains(path) && err.contains("SPIFFE"), "{err}");
        assert!(!a.dir.path().join("bad/svid.pem").exists());
    }
    let refused = events(&a, "spiffe.svid.issue");
    assert!(
        refused
            .iter()
            .any(|e| e["success"] == false && e["user"] == "bot-svc"),
        "{refused:?}"
    );
}

/// A Python with the `spiffe` package (py-spiffe): `HOP_TEST_SPIFFE_PYTHON`, else the venv
/// `scripts/spiffe-test-tools` installs under the target dir (readable by the other uid the test
/// runs the client as). `None` (the test says SKIPPED) when neither can be had.
fn spiffe_python() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("HOP_TEST_SPIFFE_PYTHON") {
        return Some(p.into());
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/spiffe-test-tools");
    let dir = Path::new(HOP).parent()?.parent()?.join("test-tools");
    let out = Command::new(script).arg(&dir).output().ok()?;
    if !out.status.success() {
        println!(
            "SKIPPED: py-spiffe cannot be installed here (scripts/spiffe-test-tools): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    Some(dir.join("spiffe-venv/bin/python"))
}

/// Watches the stream until two different SVIDs (a renewal pushed) arrived, 40 s at most.
const WATCH: &str = "import sys, threading\nfrom spiffe import WorkloadApiClient\nseen = set()\ndone = threading.Event()\ndef ok(ctx):\n    seen.add(ctx.default_svid.leaf.serial_number)\n    if len(seen) >= 2:\n        done.set()\ndef err(e):\n    print('error', e, file=sys.stderr)\nwith WorkloadApiClient(socket_path='unix://' + sys.argv[1]) as c:\n    h = c.stream_x509_contexts(ok, err, retry_connect=False)\n    got = done.wait(40)\n    h.cancel()\nprint(len(seen))\nsys.exit(0 if got else 1)\n";

const FETCH: &str = "import sys\nfrom spiffe import WorkloadApiClient\nwith WorkloadApiClient(socket_path='unix://' + sys.argv[1]) as c:\n    print(c.fetch_x509_svid().spiffe_id)\n";

/// The Python client fetching from `socket`, as root or (`as_nobody`) as uid and gid 65534.
fn fetch(python: &Path, script: &Path, socket: &Path, as_nobody: bool) -> Output {
    let mut cmd = if as_nobody {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(python);
        c
    } else {
        Command::new(python)
    };
    cmd.arg(script)
        .arg(socket)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Removes a file when dropped.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn the_workload_api_serves_an_allowed_uid_nothing_to_another_and_pushes_renewals() {
    let Some(python) = spiffe_python() else {
        return;
    };
    let a = Appliance::start("");
    let role = a.dir.path().join("svc-role.yaml");
    std::fs::write(&role, SVC_ROLE).unwrap();
    a.ok(&["admin", "create", "-f", role.to_str().unwrap()]);
    let out = a.ok(&[
        "admin", "bots", "add", "wl", "--roles", "svc-bot", "--format", "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let token = v["token"].as_str().unwrap().to_string();
    // A directory every user may enter, so that the other uid reaches the socket itself.
    let public = tempfile::Builder::new().prefix("hop-wl").tempdir().unwrap();
    std::fs::set_permissions(public.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // In `/`: gRPC C-core clients (py-spiffe) send the socket path as `:authority`, `%2F` for
    // each `/`, which the HTTP/2 server refuses as malformed; a name at the root is sent as is.
    let socket = std::path::PathBuf::from(format!("/hop-wl-{}.sock", std::process::id()));
    let _cleanup = RemoveOnDrop(socket.clone());
    let script = public.path().join("fetch.py");
    std::fs::write(&script, FETCH).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    let file = a.dir.path().join("wl.yaml");
    let cfg = format!(
        "version: v2\nproxy_server: {}\nonboarding:\n  join_method: token\n  ca_pins: ['{}']\nstorage: {{type: directory, path: {}}}\ncertificate_ttl: 1m\nrenewal_interval: 3s\nservices:\n  - type: spiffe-workload-api\n    listen: unix://{}\n    svids:\n      - path: /svc/w\n        rules: [{{unix: {{uid: 0}}}}]\n",
        a.addr,
        a.pin,
        a.dir.path().join("wd").display(),
        socket.display()
    );
    std::fs::write(&file, cfg).unwrap();
    let _bot = crate::ssh::Killed(
        Command::new(HOP)
            .args(["bot", "start", "-c"])
            .arg(&file)
            .args(["--token", &token])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(a.dir.path().join("bot.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = crate::clock::monotonic_now() + std::time::Duration::from_secs(30);
    let got = loop {
        let o = fetch(&python, &script, &socket, false);
        if o.status.success() {
            break String::from_utf8_lossy(&o.stdout).to_string();
        }
        assert!(
            crate::clock::monotonic_now() < deadline,
            "no SVID from the Workload API: {}\nbot: {}",
            stderr(&o)
                .lines()
                .rev()
                .take(4)
                .collect::<Vec<_>>()
                .join("\n"),
            std::fs::read_to_string(a.dir.path().join("bot.log")).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    };
    assert_eq!(got.trim(), "spiffe://test.cluster/svc/w");
    let o = fetch(&python, &script, &socket, true);
    assert!(
        !o.status.success(),
        "uid 65534 got {}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(!String::from_utf8_lossy(&o.stdout).contains("spiffe://"));
    let err = stderr(&o);
    assert!(
        err.contains("PERMISSION_DENIED") || err.contains("no SVID is configured"),
        "{err}"
    );
    // Renewals every 3 s: the open stream gets the new SVID without asking again.
    let watch = public.path().join("watch.py");
    std::fs::write(&watch, WATCH).unwrap();
    let o = Command::new(&python)
        .arg(&watch)
        .arg(&socket)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "no SVID pushed on renewal: {} {}",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
}
