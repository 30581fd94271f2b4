//! The refusal matrix, end to end: every route a user reaches through the proxy first works for
//! a fresh identity, then is refused — with a message naming the reason and an `access.refused`
//! audit event carrying the route and a reason code — for a locked user, a locked role, a locked
//! login, a deleted user, a role taken away, a certificate older than the user's last lock, and
//! an expired certificate; and for a bot (`hop bot start --oneshot`'s identity output) after
//! `hop admin bots rm` and after a lock on its name; the per-session MFA RPCs (`BeginSessionMfa`,
//! `IssueSessionMfaCert`) are rows of their own, and refuse another CA's certificate too. Then
//! live sessions end within 5 s of a lock.
//! All with an ordinary OS login and users without admin roles (`matrix` grants only what the
//! routes need).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::clock;
use crate::harness::*;
use crate::mfa_rpc::{self, MfaRpc};
use crate::ssh::{Killed, node_token, start_node};

const ROLES: &str = "kind: role\nversion: v7\nmetadata:\n  name: matrix\nspec:\n  allow:\n    logins: ['{{internal.logins}}']\n    node_labels: {'*': '*'}\n    app_labels: {'*': '*'}\n    rules:\n    - resources: [role]\n      verbs: [list, read]\n    - resources: [backup]\n      verbs: [read]\n---\nkind: role\nversion: v7\nmetadata:\n  name: other\nspec:\n  allow:\n    logins: [nobody]\n---\nkind: role\nversion: v7\nmetadata:\n  name: watcher\nspec:\n  allow:\n    join_sessions:\n    - name: watch-matrix\n      roles: [matrix]\n      kinds: [ssh]\n      modes: [observer]\n";

/// One cluster: a node agent, an app agent serving an echo server (TCP app `echo`) and the
/// Python web app of `tests/fixtures/app_upstream.py` (HTTP app `web`), and the matrix roles.
struct Cluster {
    a: Appliance,
    cluster: String,
    _node: Killed,
    _app: Killed,
    _echo: Killed,
    _web: Killed,
    users: std::cell::Cell<u32>,
}

/// A user logged in with their own HOP_HOME.
struct User {
    name: String,
    home: PathBuf,
    ssh_config: PathBuf,
}

impl Cluster {
    fn start() -> Self {
        os_login();
        let a = Appliance::start("");
        let roles = a.dir.path().join("matrix.yaml");
        std::fs::write(&roles, ROLES).unwrap();
        a.ok(&["admin", "create", "-f", roles.to_str().unwrap()]);
        let node = start_node(
            &a,
            &a.dir.path().join("node1"),
            &node_token(&a),
            "node1",
            "env=dev",
        );
        let echo_port = free_port();
        let echo = Killed(
            Command::new("socat")
                .arg(format!(
                    "TCP-LISTEN:{echo_port},bind=127.0.0.1,reuseaddr,fork"
                ))
                .arg("EXEC:cat")
                .spawn()
                .unwrap(),
        );
        let (web, web_port) = web_upstream();
        let app_dir = a.dir.path().join("app1");
        let app = Killed(
            Command::new(HOP)
                .args([
                    "start", "--roles", "app", "--proxy", &a.addr, "--ca-pin", &a.pin,
                ])
                .args(["--token", &a.join_token("app"), "--data-dir"])
                .arg(&app_dir)
                .args([
                    "--app",
                    &format!("name=echo,uri=tcp://127.0.0.1:{echo_port}"),
                ])
                .args([
                    "--app",
                    &format!("name=web,uri=http://127.0.0.1:{web_port}"),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::from(
                    std::fs::File::create(app_dir.with_extension("log")).unwrap(),
                ))
                .spawn()
                .unwrap(),
        );
        let c = Self {
            cluster: String::new(),
            a,
            _node: node,
            _app: app,
            _echo: echo,
            _web: web,
            users: std::cell::Cell::new(0),
        };
        let probe = c.user_with_ttl(None);
        let cfg = std::fs::read_to_string(&probe.ssh_config).unwrap();
        let cluster = cfg
            .lines()
            .find_map(|l| l.strip_prefix("Host *."))
            .unwrap()
            .trim()
            .to_string();
        wait_until_listed(&probe, &["ls"], "node1");
        wait_until_listed(&probe, &["apps", "ls"], "echo");
        wait_until_listed(&probe, &["apps", "ls"], "web");
        Self { cluster, ..c }
    }

    /// A fresh user with only the `matrix` role, logged in (certificate of `ttl`).
    fn user_with_ttl(&self, ttl: Option<&str>) -> User {
        self.user_with(ttl, "matrix")
    }

    /// A fresh user with `roles`, logged in (certificate of `ttl`).
    fn user_with(&self, ttl: Option<&str>, roles: &str) -> User {
        let n = self.users.get() + 1;
        self.users.set(n);
        let name = format!("m{n}");
        let secret = self.a.add_user(&name, roles, OS_LOGIN);
        let home = self.a.dir.path().join(format!("home-{name}"));
        let mut args = vec![
            "login".to_string(),
            "--proxy".into(),
            self.a.addr.clone(),
            "--ca-pin".into(),
            self.a.pin.clone(),
            "--user".into(),
            name.clone(),
            "--password-stdin".into(),
            "--otp".into(),
            totp(&secret, 30),
        ];
        if let Some(t) = ttl {
            args.extend(["--ttl".into(), t.into()]);
        }
        let out = run(
            &home,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            &format!("{PASSWORD}\n"),
        );
        assert!(out.status.success(), "login {name}: {}", stderr(&out));
        let cfg = run(&home, &["config"], "");
        let ssh_config = home.join("ssh_config");
        std::fs::write(&ssh_config, &cfg.stdout).unwrap();
        User {
            name,
            home,
            ssh_config,
        }
    }

    fn user(&self) -> User {
        self.user_with_ttl(None)
    }

    /// A fresh bot with only the `matrix` role, joined with `hop bot start --oneshot`: its
    /// identity output is the user's HOP_HOME and ssh_config.
    fn bot(&self) -> User {
        let n = self.users.get() + 1;
        self.users.set(n);
        let name = format!("b{n}");
        let out = self.a.ok(&[
            "admin", "bots", "add", &name, "--roles", "matrix", "--logins", OS_LOGIN, "--format",
            "json",
        ]);
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        let home = self.a.dir.path().join(format!("home-{name}"));
        let data = self.a.dir.path().join(format!("data-{name}"));
        let joined = Command::new(HOP)
            .args(["bot", "start", "--oneshot", "--proxy", &self.a.addr])
            .args([
                "--ca-pin",
                &self.a.pin,
                "--token",
                v["token"].as_str().unwrap(),
            ])
            .arg("--data-dir")
            .arg(&data)
            .arg("--destination-dir")
            .arg(&home)
            .output()
            .unwrap();
        assert!(joined.status.success(), "bot {name}: {}", stderr(&joined));
        User {
            name: format!("bot-{name}"),
            ssh_config: home.join("ssh_config"),
            home,
        }
    }
}

/// Waits until `hop ARGS` (as `u`) lists `name`, and a moment more for the agent's data
/// connections.
fn wait_until_listed(u: &User, args: &[&str], name: &str) {
    let deadline = clock::monotonic_now() + Duration::from_secs(30);
    while !stdout(&run(&u.home, args, "")).contains(name) {
        assert!(
            clock::monotonic_now() < deadline,
            "{name} was never listed by hop {args:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
}

fn run(home: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(HOP)
        .args(args)
        .env("HOP_HOME", home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    wait_output(child, Duration::from_secs(30))
}

/// Waits for `child` at most `limit`, killing it then.
fn wait_output(mut child: Child, limit: Duration) -> Output {
    let deadline = clock::monotonic_now() + limit;
    while child.try_wait().unwrap().is_none() {
        if clock::monotonic_now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// The routes of the matrix: how a user tries each one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Try {
    HopSsh,
    OpenSsh,
    JumpHost,
    App,
    HttpApp,
    AdminApi,
    /// `hop request ls`: the access-request API, admitted on the admin API route.
    AccessRequests,
    /// `hop admin backup` through the proxy (the `backup` `read` rule): the cluster's keys.
    Backup,
    /// The per-session MFA RPCs over gRPC with the saved login (`mfa_rpc`), admitted on the
    /// admin API route: the challenge, and the certificate for an assertion.
    BeginSessionMfa,
    IssueSessionMfaCert,
}

const TRIES: &[Try] = &[
    Try::HopSsh,
    Try::OpenSsh,
    Try::JumpHost,
    Try::App,
    Try::HttpApp,
    Try::AdminApi,
    Try::AccessRequests,
    Try::Backup,
    Try::BeginSessionMfa,
    Try::IssueSessionMfaCert,
];

impl Try {
    /// The `route` field of the refusal event the proxy writes.
    fn routes(self) -> &'static [&'static str] {
        match self {
            Self::HopSsh | Self::OpenSsh => &["hop_ssh"],
            // The jump host does not know the login (SSH to the node is end to end): a login
            // lock is the node's refusal.
            Self::JumpHost => &["jump_host", "node"],
            // `hop proxy app` asks the API for the app first: either may refuse.
            Self::App => &["app", "admin_api"],
            // `hop proxy app web` carries requests with the app certificate it got before the
            // spoiling (the proxy's app route refuses), or asks the API for one (which refuses).
            Self::HttpApp => &["app", "admin_api"],
            Self::AdminApi
            | Self::AccessRequests
            | Self::Backup
            | Self::BeginSessionMfa
            | Self::IssueSessionMfaCert => &["admin_api"],
        }
    }

    /// The per-session MFA RPCs, called over gRPC by the test itself.
    fn rpc(self) -> bool {
        matches!(self, Self::BeginSessionMfa | Self::IssueSessionMfaCert)
    }

    fn ssh_route(self) -> bool {
        matches!(self, Self::HopSsh | Self::OpenSsh | Self::JumpHost)
    }

    /// Runs the route once: `Ok` when it worked end to end, else what the user saw.
    fn attempt(self, c: &Cluster, u: &User) -> Result<(), String> {
        let host = format!("{OS_LOGIN}@node1.{}", c.cluster);
        let out = match self {
            Self::HopSsh => run(
                &u.home,
                &["ssh", &format!("{OS_LOGIN}@node1"), "echo", "ok-$((40+2))"],
                "",
            ),
            Self::OpenSsh => openssh(u, &[&host, "echo", "ok-$((40+2))"]),
            Self::JumpHost => openssh(
                u,
                &[
                    "-J",
                    &format!("proxy.{}", c.cluster),
                    &host,
                    "echo",
                    "ok-$((40+2))",
                ],
            ),
            Self::App => return app_echo(u),
            Self::HttpApp => return http_app_get(u),
            Self::BeginSessionMfa => return mfa_rpc::call(&u.home, MfaRpc::Begin, None),
            Self::IssueSessionMfaCert => return mfa_rpc::call(&u.home, MfaRpc::Issue, None),
            Self::AdminApi => run(
                &u.home,
                &["admin", "--auth-server", &c.a.addr, "get", "roles"],
                "",
            ),
            Self::AccessRequests => run(&u.home, &["request", "ls", "--format", "json"], ""),
            Self::Backup => run(
                &u.home,
                &["admin", "--auth-server", &c.a.addr, "backup"],
                "",
            ),
        };
        let text = stdout(&out);
        let worked = out.status.success()
            && match self {
                Self::AdminApi => text.contains("matrix"),
                Self::AccessRequests => text.trim_start().starts_with('['),
                Self::Backup => text.starts_with("HOP-BACKUP 1\n"),
                _ => text.contains("ok-42"),
            };
        if worked {
            Ok(())
        } else {
            Err(format!("{}{}", stderr(&out), text))
        }
    }
}

fn openssh(u: &User, args: &[&str]) -> Output {
    let child = Command::new("ssh")
        .arg("-F")
        .arg(&u.ssh_config)
        .args(["-o", "BatchMode=yes"])
        .args(args)
        .env("HOP_HOME", &u.home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_output(child, Duration::from_secs(30))
}

/// `hop proxy app echo` on a local port, one round trip through it.
fn app_echo(u: &User) -> Result<(), String> {
    let port = free_port();
    let log = u.home.join("proxy-app.log");
    let mut child = Command::new(HOP)
        .args(["proxy", "app", "echo", "--port", &port.to_string()])
        .env("HOP_HOME", &u.home)
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .unwrap();
    let mut line = String::new();
    let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
    let result = if line.contains("Proxying") {
        echo_once(port)
    } else {
        Err(String::new())
    };
    let _ = child.kill();
    let _ = child.wait();
    result.map_err(|e| format!("{e} {}", std::fs::read_to_string(&log).unwrap_or_default()))
}

/// The Python web app the HTTP app row reaches, on a port of its choosing.
fn web_upstream() -> (Killed, u16) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/app_upstream.py"
    );
    let mut child = Command::new("python3")
        .args([script, "0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .trim_start_matches("listening ")
        .parse()
        .unwrap();
    (Killed(child), port)
}

/// `hop proxy app web` on a local port (it logs in to the app on first use and keeps the
/// certificate), one plain-HTTP request through it: `Ok` when the app answered with Hop's
/// identity header, else the page or error the user saw.
fn http_app_get(u: &User) -> Result<(), String> {
    let port = free_port();
    let log = u.home.join("proxy-web.log");
    let mut child = Command::new(HOP)
        .args(["proxy", "app", "web", "--port", &port.to_string()])
        .env("HOP_HOME", &u.home)
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .unwrap();
    let mut line = String::new();
    let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
    let result = if line.contains("Proxying") {
        get_headers(port)
    } else {
        Err(String::new())
    };
    let _ = child.kill();
    let _ = child.wait();
    result.map_err(|e| format!("{e} {}", std::fs::read_to_string(&log).unwrap_or_default()))
}

fn get_headers(port: u16) -> Result<(), String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /headers HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    if text.starts_with("HTTP/1.1 200") && text.to_ascii_lowercase().contains("hop-jwt-assertion") {
        Ok(())
    } else {
        Err(text)
    }
}

fn echo_once(port: u16) -> Result<(), String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"ok-42\n").map_err(|e| e.to_string())?;
    let mut buf = [0u8; 6];
    match s.read_exact(&mut buf) {
        Ok(()) if &buf == b"ok-42\n" => Ok(()),
        Ok(()) => Err(format!("echo answered {buf:?}")),
        Err(e) => Err(format!("echo: {e}")),
    }
}

/// Waits until a refusal event (`access.refused` from the proxy, `ssh.auth` from a node) for
/// `user` on one of `routes` with `reason` is in the audit log.
fn wait_refusal(a: &Appliance, user: &str, routes: &[&str], reason: &str) {
    let deadline = clock::monotonic_now() + Duration::from_secs(10);
    loop {
        let mut out = a.ok(&[
            "admin",
            "audit",
            "search",
            "--type",
            "access.refused",
            "--format",
            "json",
        ]);
        out += &a.ok(&[
            "admin", "audit", "search", "--type", "ssh.auth", "--format", "json",
        ]);
        let found = out
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|e| {
                e["user"] == user
                    && e["reason"] == reason
                    && routes.iter().any(|r| e["route"] == *r)
            });
        if found {
            return;
        }
        assert!(
            clock::monotonic_now() < deadline,
            "no access.refused event for {user} on {routes:?} with reason {reason}:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A row of the matrix: how the identity is spoiled, the words the user must see, the reason
/// code, and whether the row applies to SSH routes only.
struct Row {
    what: &'static str,
    spoil: fn(&Cluster, &User) -> Vec<String>,
    says: &'static str,
    code: &'static str,
    ssh_only: bool,
}

fn lock(c: &Cluster, flag: &str, value: &str) -> Vec<String> {
    let out =
        c.a.ok(&["admin", "lock", flag, value, "--message", "matrix test"]);
    let id = out
        .split("lock ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .unwrap()
        .to_string();
    vec![format!("lock/{id}")]
}

/// The rows for bots: a bot's certificates after `hop admin bots rm` and after a lock on the
/// bot's name.
const BOT_ROWS: &[Row] = &[
    Row {
        what: "removed bot",
        spoil: |c, u| {
            c.a.ok(&["admin", "bots", "rm", u.name.trim_start_matches("bot-")]);
            vec![]
        },
        says: "no longer exists",
        code: "deleted",
        ssh_only: false,
    },
    Row {
        what: "locked bot",
        spoil: |c, u| lock(c, "--bot", u.name.trim_start_matches("bot-")),
        says: "locked",
        code: "locked",
        ssh_only: false,
    },
];

const ROWS: &[Row] = &[
    Row {
        what: "locked user",
        spoil: |c, u| lock(c, "--user", &u.name),
        says: "locked",
        code: "locked",
        ssh_only: false,
    },
    Row {
        what: "role lock",
        spoil: |c, _| lock(c, "--role", "matrix"),
        says: "locked",
        code: "locked",
        ssh_only: false,
    },
    Row {
        what: "login lock",
        spoil: |c, _| lock(c, "--login", OS_LOGIN),
        says: "locked",
        code: "locked",
        ssh_only: true,
    },
    Row {
        what: "deleted user",
        spoil: |c, u| {
            c.a.ok(&["admin", "users", "rm", &u.name]);
            vec![]
        },
        says: "no longer exists",
        code: "deleted",
        ssh_only: false,
    },
    Row {
        what: "role removed",
        spoil: |c, u| {
            let doc = c.a.dir.path().join(format!("{}.yaml", u.name));
            std::fs::write(
                &doc,
                format!("kind: user\nversion: v2\nmetadata:\n  name: {}\nspec:\n  roles: [other]\n  traits:\n    logins: [{OS_LOGIN}]\n", u.name),
            )
            .unwrap();
            c.a.ok(&["admin", "create", "--force", "-f", doc.to_str().unwrap()]);
            vec![]
        },
        says: "taken away",
        code: "role_removed",
        ssh_only: false,
    },
    Row {
        what: "certificate older than the last lock",
        spoil: |c, u| {
            let ids = lock(c, "--user", &u.name);
            c.a.ok(&["admin", "rm", &ids[0]]);
            vec![]
        },
        says: "issued before",
        code: "voided",
        ssh_only: false,
    },
];

#[test]
fn the_refusal_matrix_on_every_route() {
    let c = Cluster::start();
    let expiring = c.user_with_ttl(Some("8s"));
    let started = clock::monotonic_now();
    let rows = ROWS.iter().map(|r| (r, false));
    for (row, bot) in rows.chain(BOT_ROWS.iter().map(|r| (r, true))) {
        let u = if bot { c.bot() } else { c.user() };
        for t in TRIES {
            t.attempt(&c, &u)
                .unwrap_or_else(|e| panic!("positive control for {} on {t:?}: {e}", row.what));
        }
        let undo = (row.spoil)(&c, &u);
        for t in TRIES.iter().filter(|t| t.ssh_route() || !row.ssh_only) {
            let seen = t
                .attempt(&c, &u)
                .err()
                .unwrap_or_else(|| panic!("{} was let through on {t:?}", row.what));
            // SSH authentication has no room for a reason: OpenSSH prints "Permission denied"
            // at the jump host, and the reason is in the audit log.
            let says = if *t == Try::JumpHost {
                "Permission denied"
            } else {
                row.says
            };
            assert!(seen.contains(says), "{} on {t:?}: {seen}", row.what);
            wait_refusal(&c.a, &u.name, t.routes(), row.code);
        }
        for id in undo {
            c.a.ok(&["admin", "rm", &id]);
        }
    }
    // An expired certificate: refused everywhere with a message that says so.
    std::thread::sleep(Duration::from_secs(9).saturating_sub(clock::since(started)));
    for t in TRIES {
        let says = if *t == Try::JumpHost {
            "Permission denied"
        } else {
            "expired"
        };
        let seen = t
            .attempt(&c, &expiring)
            .err()
            .unwrap_or_else(|| panic!("expired on {t:?}"));
        // The RPCs over gRPC are refused in the TLS handshake: the client sees its alert
        // (`CertificateExpired`), or, when the connection's close wins the race with the
        // alert, only that the connection was closed under the call.
        let handshake = t.rpc() && seen.contains("transport error");
        assert!(
            seen.contains(says) || seen.to_lowercase().contains(says) || handshake,
            "expired on {t:?}: {seen}"
        );
    }
    other_ca_calls_no_mfa_rpc(&c);
}

/// A certificate from a CA Hop does not know, with a user's name in it, calls neither
/// per-session MFA RPC: refused at TLS or as no login, never answered.
fn other_ca_calls_no_mfa_rpc(c: &Cluster) {
    let u = c.user();
    let dir = u.home.join("other-ca");
    std::fs::create_dir_all(&dir).unwrap();
    let script = format!(
        "set -e
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=other-ca -keyout ca.key -out ca.crt 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN={} -keyout u.key -out u.csr 2>/dev/null
printf 'extendedKeyUsage=clientAuth\\n' > u.ext
openssl x509 -req -in u.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -out u.crt -extfile u.ext 2>/dev/null
",
        u.name
    );
    let out = Command::new("sh")
        .args(["-c", &script])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let forged = (dir.join("u.crt"), dir.join("u.key"));
    for rpc in [MfaRpc::Begin, MfaRpc::Issue] {
        let seen = mfa_rpc::call(&u.home, rpc, Some((&forged.0, &forged.1)))
            .err()
            .unwrap_or_else(|| panic!("another CA's certificate called {rpc:?}"));
        assert!(
            seen.contains("needs a login")
                || seen.contains("Unauthenticated")
                || seen.contains("transport"),
            "another CA on {rpc:?}: {seen}"
        );
    }
}

/// How long a running session took to end after `act` returned: EOF at the client.
fn ends_within(c: &Cluster, child: &mut Child, act: impl FnOnce()) -> Duration {
    act();
    let t0 = clock::monotonic_now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return clock::since(t0);
        }
        if clock::since(t0) > Duration::from_secs(15) {
            let _ = child.kill();
            let log = c.a.log();
            let node =
                std::fs::read_to_string(c.a.dir.path().join("node1.log")).unwrap_or_default();
            panic!(
                "the session did not end\n--- appliance ---\n{}\n--- node ---\n{}",
                tail(&log),
                tail(&node)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tail(s: &str) -> &str {
    let mut i = s.len().saturating_sub(4000);
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

#[test]
fn live_sessions_end_within_five_seconds_of_a_lock_a_deletion_or_a_role_removal() {
    let c = Cluster::start();
    type Spoil = fn(&Cluster, &User);
    let spoils: &[(&str, Spoil)] = &[
        ("lock", |c, u| drop(lock(c, "--user", &u.name))),
        ("deletion", |c, u| {
            c.a.ok(&["admin", "users", "rm", &u.name]);
        }),
        ("role removal", |c, u| drop((ROWS[4].spoil)(c, u))),
    ];
    for (what, spoil) in spoils {
        // An exec session that would run a minute.
        let u = c.user();
        let mut ssh = Command::new(HOP)
            .args([
                "ssh",
                &format!("{OS_LOGIN}@node1"),
                "echo started; sleep 60",
            ])
            .env("HOP_HOME", &u.home)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(ssh.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "started");
        let took = ends_within(&c, &mut ssh, || spoil(&c, &u));
        assert!(
            took < Duration::from_secs(5),
            "hop ssh after a {what}: {took:?}"
        );
        // A TCP application session held open.
        let u = c.user();
        let port = free_port();
        let mut proxy = Command::new(HOP)
            .args(["proxy", "app", "echo", "--port", &port.to_string()])
            .env("HOP_HOME", &u.home)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut l = String::new();
        BufReader::new(proxy.stdout.take().unwrap())
            .read_line(&mut l)
            .unwrap();
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"hi\n").unwrap();
        let mut buf = [0u8; 3];
        s.read_exact(&mut buf).unwrap();
        spoil(&c, &u);
        let t0 = clock::monotonic_now();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        let took = clock::since(t0);
        let _ = proxy.kill();
        let _ = proxy.wait();
        assert!(
            took < Duration::from_secs(5),
            "app session after a {what}: {took:?}"
        );
    }
    let ended = c.a.ok(&[
        "admin",
        "audit",
        "search",
        "--type",
        "session.terminated",
        "--format",
        "json",
    ]);
    assert!(
        ended.contains("\"route\":\"app\"") || ended.contains("\"route\": \"app\""),
        "{ended}"
    );
}

/// Host id of the connected agent serving `service` (`node`, `app`).
fn agent_id(a: &Appliance, service: &str) -> String {
    let out = a.ok(&["admin", "inventory", "ls", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .find(|x| x["services"].to_string().contains(service))
        .and_then(|x| x["host_id"].as_str())
        .unwrap_or_else(|| panic!("no {service} agent in {out}"))
        .to_string()
}

#[test]
fn agents_cannot_lie_and_a_locked_agent_is_cut_off() {
    let c = Cluster::start();
    let u = c.user();
    // A second app agent announcing the name another agent holds: refused, never shadowing.
    let dir = c.a.dir.path().join("app2");
    let app2 = Killed(
        Command::new(HOP)
            .args([
                "start", "--roles", "app", "--proxy", &c.a.addr, "--ca-pin", &c.a.pin,
            ])
            .args(["--token", &c.a.join_token("app"), "--data-dir"])
            .arg(&dir)
            .args(["--app", "name=echo,uri=tcp://127.0.0.1:9"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = clock::monotonic_now() + Duration::from_secs(20);
    loop {
        let out = c.a.ok(&[
            "admin",
            "audit",
            "search",
            "--type",
            "access.refused",
            "--format",
            "json",
        ]);
        if out.contains("announcement_refused") && out.contains("another agent serves that name") {
            break;
        }
        assert!(
            clock::monotonic_now() < deadline,
            "the shadowing announcement was not refused: {out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let apps = stdout(&run(&u.home, &["apps", "ls", "--format", "json"], ""));
    assert_eq!(apps.matches("\"echo\"").count(), 1, "{apps}");
    Try::App
        .attempt(&c, &u)
        .expect("the first holder still serves echo");

    // A lock on the node agent's server id: disconnected, its node leaves `hop ls` within 5 s.
    let node_id = agent_id(&c.a, "node");
    c.a.ok(&[
        "admin",
        "lock",
        "--server-id",
        &node_id,
        "--message",
        "compromised",
    ]);
    let t0 = clock::monotonic_now();
    while stdout(&run(&u.home, &["ls"], "")).contains("node1") {
        assert!(
            clock::since(t0) < Duration::from_secs(5),
            "node1 still listed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let seen = Try::HopSsh.attempt(&c, &u).unwrap_err();
    assert!(seen.contains("node1"), "{seen}");
    let ended = c.a.ok(&[
        "admin",
        "audit",
        "search",
        "--type",
        "session.terminated",
        "--format",
        "json",
    ]);
    assert!(
        ended.contains(&node_id) && ended.contains("\"locked\""),
        "{ended}"
    );
    // It stays out: its reconnections are refused at the tunnel, and its calls to the Auth API
    // (access data, events, certificate renewal) are refused too.
    std::thread::sleep(Duration::from_secs(2));
    let inventory = c.a.ok(&["admin", "inventory", "ls", "--format", "json"]);
    assert!(!inventory.contains(&node_id), "{inventory}");
    crate::ssh::wait_event(&c.a, "access.refused", |e| {
        e["route"] == "agent_api" && e["user"] == format!("host {node_id}").as_str()
    });
    // `hop admin rm node/HOSTID` voids an agent the same way, and ends the sessions it serves.
    // (The shadowing agent goes first, so that the one app agent left is echo's.)
    drop(app2);
    let t0 = clock::monotonic_now();
    while c
        .a
        .ok(&["admin", "inventory", "ls", "--format", "json"])
        .matches("\"app\"")
        .count()
        > 1
    {
        assert!(
            clock::since(t0) < Duration::from_secs(30),
            "the second app agent never left"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let app_id = agent_id(&c.a, "app");
    let port = free_port();
    let mut proxy = spawn_as(
        &u,
        &["proxy", "app", "echo", "--port", &port.to_string()],
        Some("Proxying"),
    );
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"hi\n").unwrap();
    let mut buf = [0u8; 3];
    s.read_exact(&mut buf).unwrap();
    c.a.ok(&["admin", "rm", &format!("node/{app_id}")]);
    let t0 = clock::monotonic_now();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let _ = s.read_to_end(&mut Vec::new());
    assert!(
        clock::since(t0) < Duration::from_secs(5),
        "the session outlived its agent's lock: {:?}",
        clock::since(t0)
    );
    let _ = proxy.kill();
    let _ = proxy.wait();
    let t0 = clock::monotonic_now();
    while c
        .a
        .ok(&["admin", "inventory", "ls", "--format", "json"])
        .contains(&app_id)
    {
        assert!(
            clock::since(t0) < Duration::from_secs(5),
            "the removed agent is still connected"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn locking_mode_and_the_snapshot_age_are_reported() {
    let a = Appliance::start("");
    let status = a.ok(&["admin", "status"]);
    assert!(status.contains("Locking:  best_effort"), "{status}");
    let cap = a.dir.path().join("cap.yaml");
    std::fs::write(
        &cap,
        "kind: cluster_auth_preference\nversion: v2\nmetadata:\n  name: cluster-auth-preference\nspec:\n  type: local\n  second_factor: otp\n  locking_mode: strict\n",
    )
    .unwrap();
    a.ok(&["admin", "create", "--force", "-f", cap.to_str().unwrap()]);
    let status = a.ok(&["admin", "status", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(v["locking_mode"], "strict", "{status}");
    assert!(
        v["admission_snapshot_age_secs"].as_u64().unwrap() < 60,
        "{status}"
    );
    let (code, body) = a.diag_get("/readyz");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("admission snapshot age:"), "{body}");
    let (_, m) = a.diag_get("/metrics");
    assert!(m.contains("hop_admission_snapshot_age_seconds"), "{m}");
}

/// Spawns `hop ARGS` as `u`, reading its standard output until `ready` appears (if given).
fn spawn_as(u: &User, args: &[&str], ready: Option<&str>) -> Child {
    let mut child = Command::new(HOP)
        .args(args)
        .env("HOP_HOME", &u.home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    if let Some(ready) = ready {
        let mut r = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while !line.contains(ready) {
            line.clear();
            assert!(
                r.read_line(&mut line).unwrap() > 0,
                "{args:?} ended before {ready:?}"
            );
        }
    }
    child
}

#[test]
fn a_pty_session_a_forward_and_a_joined_observer_end_within_five_seconds() {
    let c = Cluster::start();
    let owner = c.user();
    let at = format!("{OS_LOGIN}@node1");
    let mut pty = spawn_as(
        &owner,
        &[
            "ssh",
            "-o",
            "RequestTTY=force",
            &at,
            "echo pty-$((1+1)); sleep 60",
        ],
        Some("pty-2"),
    );
    let id = {
        let deadline = clock::monotonic_now() + Duration::from_secs(10);
        loop {
            let out = stdout(&run(
                &owner.home,
                &["sessions", "ls", "--format", "json"],
                "",
            ));
            let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
            if let Some(id) = v
                .as_array()
                .and_then(|a| a.first())
                .and_then(|t| t["session_id"].as_str())
            {
                break id.to_string();
            }
            assert!(
                clock::monotonic_now() < deadline,
                "no tracker for the PTY session: {out}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    // A joined observer ends when it is locked; the session it watches goes on.
    let watcher = c.user_with(None, "watcher");
    let mut observer = spawn_as(&watcher, &["join", &id], None);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        observer.try_wait().unwrap().is_none(),
        "the observer could not join"
    );
    let took = ends_within(&c, &mut observer, || {
        drop(lock(&c, "--user", &watcher.name))
    });
    assert!(took < Duration::from_secs(5), "joined observer: {took:?}");
    assert!(
        pty.try_wait().unwrap().is_none(),
        "the watched session ended too"
    );
    // A port-forwarding connection (no session channel) ends when its user is locked.
    let forwarder = c.user();
    let spec = format!("{}:127.0.0.1:9", free_port());
    let mut forward = spawn_as(&forwarder, &["ssh", "-N", "-L", &spec, &at], None);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        forward.try_wait().unwrap().is_none(),
        "the forward did not start"
    );
    let took = ends_within(&c, &mut forward, || {
        drop(lock(&c, "--user", &forwarder.name))
    });
    assert!(took < Duration::from_secs(5), "port forward: {took:?}");
    // The PTY session ends when its owner is locked.
    let took = ends_within(&c, &mut pty, || drop(lock(&c, "--user", &owner.name)));
    assert!(took < Duration::from_secs(5), "PTY session: {took:?}");
}

#[test]
fn certificates_of_a_deleted_user_stay_void_when_the_name_returns() {
    let a = Appliance::start("");
    let roles = a.dir.path().join("matrix.yaml");
    std::fs::write(&roles, ROLES).unwrap();
    a.ok(&["admin", "create", "-f", roles.to_str().unwrap()]);
    let secret = a.add_user("ghost", "matrix", OS_LOGIN);
    assert!(a.login("ghost", PASSWORD, &secret).status.success());
    let api = |a: &Appliance| a.hop(&["admin", "--auth-server", &a.addr, "get", "roles"]);
    assert!(api(&a).status.success(), "{}", stderr(&api(&a)));
    // An export taken now, to be re-imported after a lock.
    let export = a.ok(&["admin", "get", "user/ghost"]);
    let doc = a.dir.path().join("ghost.yaml");
    std::fs::write(&doc, &export).unwrap();
    // Lock and unlock: the certificate stays void; re-importing the old export does not revive it.
    a.ok(&["admin", "users", "lock", "ghost"]);
    a.ok(&["admin", "users", "unlock", "ghost"]);
    a.ok(&["admin", "create", "--force", "-f", doc.to_str().unwrap()]);
    let out = api(&a);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("issued before"), "{}", stderr(&out));
    // Deleted and created again with the same name and roles: the old certificate is void.
    // (Stamps have whole seconds: a certificate issued in the very second the name is created
    // again would pass, so this waits past the login's second.)
    std::thread::sleep(Duration::from_millis(1100));
    a.ok(&["admin", "users", "rm", "ghost"]);
    a.ok(&["admin", "users", "add", "ghost", "--roles", "matrix"]);
    let out = api(&a);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("issued before"), "{}", stderr(&out));
    // A role lock stops `hop login` issuing certificates with that role (the answer reveals
    // nothing; the audit log says why).
    let secret = a.add_user("roled", "matrix", OS_LOGIN);
    a.ok(&["admin", "lock", "--role", "matrix"]);
    assert!(!a.login("roled", PASSWORD, &secret).status.success());
    crate::ssh::wait_event(&a, "user.login", |e| {
        e["user"] == "roled" && e["error"].as_str().is_some_and(|x| x.contains("locked"))
    });
}
