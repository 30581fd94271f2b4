//! Bots end to end with real programs: `hop admin bots add`, `hop bot start` with one-minute
//! certificates renewing on their own schedule for four minutes while stock OpenSSH (`ssh -F` with the bot's
//! `ssh_config`) runs a command as an ordinary login on a node agent and psql queries through
//! the proxy with the bot's database output, with no failure; `--oneshot` then the outputs used;
//! a copy of the bot's data dir detected (the bot locked and the event audited); `bots rm`
//! ending a live session within 5 s and refusing the bot's certificates; a lock by name ending
//! a live session within 5 s; lost renewal answers recovered by retrying the same request (no
//! lock); another cluster's bot of the same name refused.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::clock;
use crate::harness::*;
use crate::ssh::{Killed, events, start_node, wait_event};

const BOT_ROLE: &str = "kind: role\nversion: v7\nmetadata:\n  name: bot-runner\nspec:\n  allow:\n    logins: ['{{internal.logins}}']\n    node_labels:\n      '*': '*'\n    db_labels:\n      env: test\n    db_users: [alice]\n    db_names: [postgres]\n";

const CLUSTER: &str = "test.cluster";

/// `hop admin bots add NAME`: its join token.
fn add_bot(a: &Appliance, name: &str, logins: &str) -> String {
    let out = a.ok(&[
        "admin",
        "bots",
        "add",
        name,
        "--roles",
        "bot-runner",
        "--logins",
        logins,
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    v["token"].as_str().unwrap().to_string()
}

fn bot_args(a: &Appliance, data: &Path) -> Vec<String> {
    vec![
        "bot".into(),
        "start".into(),
        "--proxy".into(),
        a.addr.clone(),
        "--ca-pin".into(),
        a.pin.clone(),
        "--data-dir".into(),
        data.display().to_string(),
    ]
}

/// `hop bot start --oneshot` with `extra` flags.
fn oneshot(a: &Appliance, data: &Path, extra: &[&str]) -> Output {
    Command::new(HOP)
        .args(bot_args(a, data))
        .arg("--oneshot")
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Stock OpenSSH with the bot's `ssh_config`.
fn ssh(out_dir: &Path, login: &str, node: &str, cmd: &str) -> Output {
    Command::new("ssh")
        .arg("-F")
        .arg(out_dir.join("ssh_config"))
        .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"])
        .arg(format!("{login}@{node}.{CLUSTER}"))
        .arg(cmd)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// psql with the bot's database output (`conninfo`).
fn psql(db_dir: &Path, query: &str) -> Output {
    let conninfo = std::fs::read_to_string(db_dir.join("conninfo")).unwrap();
    Command::new("psql")
        .arg(conninfo.trim())
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", query])
        .env_remove("PGPASSWORD")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `ssh -F OUT/ssh_config LOGIN@node1 sleep 60`, running.
fn live_session(out_dir: &Path, login: &str) -> Killed {
    Killed(
        Command::new("ssh")
            .arg("-F")
            .arg(out_dir.join("ssh_config"))
            .args(["-o", "BatchMode=yes"])
            .arg(format!("{login}@node1.{CLUSTER}"))
            .arg("sleep 60")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn wait_until(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let deadline = clock::monotonic_now() + Duration::from_secs(secs);
    while !ok() {
        assert!(
            clock::monotonic_now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn bot_generation(a: &Appliance, name: &str) -> u64 {
    let out = a.ok(&["admin", "bots", "ls", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == name)
        .and_then(|b| b["generation"].as_u64())
        .unwrap_or(0)
}

#[test]
fn a_bot_renews_while_openssh_and_psql_keep_working_and_a_copy_locks_it() {
    let Some((a, _pg, _db_agent)) = crate::db::setup() else {
        return;
    };
    let login = os_login();
    let role = a.dir.path().join("bot-role.yaml");
    std::fs::write(&role, BOT_ROLE).unwrap();
    a.ok(&["admin", "create", "-f", role.to_str().unwrap()]);
    let node_dir = a.dir.path().join("node1");
    let _node = start_node(&a, &node_dir, &a.join_token("node"), "node1", "env=test");

    // The bot, from a tbot-shaped file, with one-minute certificates renewed on its own
    // schedule: at one third of the lifetime left, every 40 s.
    let token = add_bot(&a, "ci", login.name);
    let (data, out, db) = (
        a.dir.path().join("bot-data"),
        a.dir.path().join("bot-out"),
        a.dir.path().join("bot-db"),
    );
    let cfg = a.dir.path().join("bot.yaml");
    std::fs::write(
        &cfg,
        format!(
            "version: v2\nproxy_server: {}\nonboarding:\n  join_method: token\n  token: {token}\n  ca_pins: ['{}']\nstorage:\n  type: directory\n  path: {}\noutputs:\n  - type: identity\n    destination:\n      type: directory\n      path: {}\n  - type: database\n    destination:\n      type: directory\n      path: {}\n    service: pg\n    username: alice\n    database: postgres\ncertificate_ttl: 1m\n",
            a.addr,
            a.pin,
            data.display(),
            out.display(),
            db.display()
        ),
    )
    .unwrap();
    let log = a.dir.path().join("bot.log");
    let _bot = Killed(
        Command::new(HOP)
            .args(["bot", "start", "-c"])
            .arg(&cfg)
            // The first two renewal answers are lost: the bot must recover by retrying.
            .env("HOP_BOT_TEST_DROP_ANSWERS", "2")
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .unwrap(),
    );
    wait_until("the bot's outputs", 30, || {
        out.join("ssh_config").exists() && db.join("conninfo").exists()
    });
    assert_private_keys(&out);
    assert_private_keys(&data);
    assert_eq!(file_mode(&db.join("tls.key")), 0o600);
    // The identity output is a HOP_HOME that `hop` accepts.
    wait_until("node1 in the bot's `hop ls`", 30, || {
        let o = Command::new(HOP)
            .args(["ls", "--format", "json"])
            .env("HOP_HOME", &out)
            .output()
            .unwrap();
        o.status.success() && stdout(&o).contains("\"name\": \"node1\"")
    });
    std::thread::sleep(Duration::from_millis(500));

    // Stock ssh and psql every 2 s for four minutes, across at least six renewals: no failure.
    let start_generation = bot_generation(&a, "ci");
    let until = clock::monotonic_now() + Duration::from_secs(250);
    let mut runs = 0;
    while clock::monotonic_now() < until {
        let s = ssh(&out, login.name, "node1", "id -un");
        assert!(
            s.status.success() && stdout(&s).trim() == login.name,
            "ssh failed after {runs} runs: {} {}\nbot log:\n{}",
            stdout(&s),
            stderr(&s),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let q = psql(&db, "select 40 + 2");
        assert!(
            q.status.success() && stdout(&q).trim() == "42",
            "psql failed after {runs} runs: {} {}\nbot log:\n{}",
            stdout(&q),
            stderr(&q),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        runs += 1;
        std::thread::sleep(Duration::from_secs(2));
    }
    let renewed = bot_generation(&a, "ci") - start_generation;
    assert!(
        renewed >= 6,
        "only {renewed} renewals: {}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert!(runs >= 60, "{runs}");
    let renewals = events(&a, "bot.renew");
    let generations: Vec<u64> = renewals
        .iter()
        .filter(|e| e["success"] == true && e["user"] == "bot-ci")
        .filter_map(|e| e["generation"].as_u64())
        .collect();
    assert!(generations.len() >= 6, "{renewals:?}");
    // The lost answers were given again (the same generation three times), and nothing locked.
    let replayed = generations
        .iter()
        .any(|g| generations.iter().filter(|h| *h == g).count() == 3);
    assert!(replayed, "{generations:?}");
    let bot_log = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        bot_log.matches("answer was dropped").count(),
        2,
        "{bot_log}"
    );
    assert!(events(&a, "lock.created").is_empty());

    // A copy of the data dir renews on its own after the bot has moved on: the bot is locked.
    let copy = a.dir.path().join("bot-copy");
    let cp = Command::new("cp")
        .arg("-a")
        .arg(&data)
        .arg(&copy)
        .output()
        .unwrap();
    assert!(cp.status.success(), "{}", stderr(&cp));
    let _ = std::fs::remove_file(copy.join("renewal.json"));
    let copied_at = bot_generation(&a, "ci");
    wait_until("a renewal after the copy", 50, || {
        bot_generation(&a, "ci") > copied_at
    });
    let o = oneshot(&a, &copy, &[]);
    assert!(!o.status.success(), "the copy renewed: {}", stdout(&o));
    assert!(stderr(&o).contains("locked"), "{}", stderr(&o));
    wait_event(&a, "bot.renew", |e| {
        e["success"] == false && e["reason"] == "generation_mismatch" && e["user"] == "bot-ci"
    });
    wait_until("the locked bot refused by the node", 10, || {
        !ssh(&out, login.name, "node1", "true").status.success()
    });
    assert!(!psql(&db, "select 1").status.success());
}

/// A bot of the same name in another cluster of the same name: its certificates (another CA),
/// put in place of this bot's in a copy of its identity output, are refused by this proxy.
fn other_clusters_bot_is_refused(a: &Appliance, out: &Path, login: &str) {
    let b = Appliance::start("");
    let role = b.dir.path().join("bot-role.yaml");
    std::fs::write(&role, BOT_ROLE).unwrap();
    b.ok(&["admin", "create", "-f", role.to_str().unwrap()]);
    let token = add_bot(&b, "ci2", login);
    let out_b = b.dir.path().join("o");
    let o = oneshot(
        &b,
        &b.dir.path().join("d"),
        &[
            "--token",
            &token,
            "--destination-dir",
            out_b.to_str().unwrap(),
        ],
    );
    assert!(
        o.status.success(),
        "the other cluster's bot: {}",
        stderr(&o)
    );
    let mixed = a.dir.path().join("mixed");
    let cp = Command::new("cp")
        .arg("-a")
        .arg(out)
        .arg(&mixed)
        .output()
        .unwrap();
    assert!(cp.status.success(), "{}", stderr(&cp));
    let (keys_a, keys_b) = (
        mixed.join("keys").join(&a.addr),
        out_b.join("keys").join(&b.addr),
    );
    let mut swapped = 0;
    for entry in std::fs::read_dir(&keys_b).unwrap() {
        let name = entry.unwrap().file_name();
        if name.to_string_lossy().starts_with("bot-ci2") {
            std::fs::copy(keys_b.join(&name), keys_a.join(&name)).unwrap();
            swapped += 1;
        }
    }
    assert!(swapped >= 4, "only {swapped} files of the other bot");
    let ls = Command::new(HOP)
        .args(["ls", "--format", "json"])
        .env("HOP_HOME", &mixed)
        .output()
        .unwrap();
    assert!(
        !ls.status.success() && !stdout(&ls).contains("node1"),
        "another CA's bot listed nodes: {} {}",
        stdout(&ls),
        stderr(&ls)
    );
    let hop_ssh = Command::new(HOP)
        .args(["ssh", &format!("{login}@node1"), "true"])
        .env("HOP_HOME", &mixed)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!hop_ssh.status.success(), "another CA's bot reached node1");
    // The copy with this bot's own files still works: the refusal was the certificates'.
    let ls = Command::new(HOP)
        .args(["ls", "--format", "json"])
        .env("HOP_HOME", out)
        .output()
        .unwrap();
    assert!(ls.status.success(), "{}", stderr(&ls));
}

#[test]
fn oneshot_outputs_work_and_a_removed_bot_is_refused() {
    let a = Appliance::start("");
    let login = os_login();
    let role = a.dir.path().join("bot-role.yaml");
    std::fs::write(&role, BOT_ROLE).unwrap();
    a.ok(&["admin", "create", "-f", role.to_str().unwrap()]);
    let node_dir = a.dir.path().join("node1");
    let _node = start_node(&a, &node_dir, &a.join_token("node"), "node1", "env=test");
    let token = add_bot(&a, "ci2", login.name);
    let (data, out) = (a.dir.path().join("d"), a.dir.path().join("o"));

    // An unknown output type is refused by name, before anything is spent.
    let bad = a.dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "version: v2\noutputs:\n  - type: application_tunnel\n    destination: {type: directory, path: /tmp/x}\n",
    )
    .unwrap();
    let o = oneshot(&a, &data, &["-c", bad.to_str().unwrap(), "--token", &token]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("application_tunnel") && stderr(&o).contains("not supported yet"),
        "{}",
        stderr(&o)
    );

    let dest = out.to_str().unwrap();
    let o = oneshot(&a, &data, &["--token", &token, "--destination-dir", dest]);
    assert!(o.status.success(), "oneshot join: {}", stderr(&o));
    // The token was spent: a second bot cannot join with it.
    let o2 = oneshot(&a, &a.dir.path().join("d2"), &["--token", &token]);
    assert!(!o2.status.success());
    // The next oneshot renews with the stored identity, run as `hop-bot` through a symlink.
    let link = a.dir.path().join("hop-bot");
    std::os::unix::fs::symlink(HOP, &link).unwrap();
    let mut args = bot_args(&a, &data);
    args.remove(0);
    let o = Command::new(&link)
        .args(args)
        .args(["--oneshot", "--destination-dir", dest])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "oneshot renewal: {}", stderr(&o));
    assert_eq!(bot_generation(&a, "ci2"), 2);
    wait_until("ssh with the oneshot outputs", 30, || {
        let s = ssh(&out, login.name, "node1", "id -un");
        s.status.success() && stdout(&s).trim() == login.name
    });

    // `hop --identity FILE` uses the bot's identity.
    let ls = Command::new(HOP)
        .arg("--identity")
        .arg(out.join("identity"))
        .args(["ls", "--format", "json"])
        .env("HOP_HOME", a.dir.path().join("nobody"))
        .output()
        .unwrap();
    assert!(
        ls.status.success() && stdout(&ls).contains("node1"),
        "{}",
        stderr(&ls)
    );
    let hop_ssh = Command::new(HOP)
        .arg("--identity")
        .arg(out.join("identity"))
        .args(["ssh", &format!("{}@node1", login.name), "id", "-un"])
        .env("HOP_HOME", a.dir.path().join("nobody"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        hop_ssh.status.success() && stdout(&hop_ssh).trim() == login.name,
        "{}",
        stderr(&hop_ssh)
    );

    other_clusters_bot_is_refused(&a, &out, login.name);

    // Removed: its live session ends within 5 s, its certificates are refused, it renews no more.
    let mut live = live_session(&out, login.name);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        live.0.try_wait().unwrap().is_none(),
        "the session ended early"
    );
    a.ok(&["admin", "bots", "rm", "ci2"]);
    let removed_at = clock::monotonic_now();
    wait_until("the live session to end", 10, || {
        live.0.try_wait().unwrap().is_some()
    });
    let took = clock::monotonic_now() - removed_at;
    assert!(took < Duration::from_secs(5), "{took:?}");
    wait_until("the removed bot refused", 10, || {
        !ssh(&out, login.name, "node1", "true").status.success()
    });
    let o = oneshot(&a, &data, &["--destination-dir", dest]);
    assert!(!o.status.success());
    assert_eq!(events(&a, "bot.delete").len(), 1);
}

#[test]
fn a_locked_bot_loses_its_live_session_and_its_renewals() {
    let a = Appliance::start("");
    let login = os_login();
    let role = a.dir.path().join("bot-role.yaml");
    std::fs::write(&role, BOT_ROLE).unwrap();
    a.ok(&["admin", "create", "-f", role.to_str().unwrap()]);
    let node_dir = a.dir.path().join("node1");
    let _node = start_node(&a, &node_dir, &a.join_token("node"), "node1", "env=test");
    let token = add_bot(&a, "ci3", login.name);
    let (data, out) = (a.dir.path().join("d"), a.dir.path().join("o"));
    let dest = out.to_str().unwrap();
    let o = oneshot(&a, &data, &["--token", &token, "--destination-dir", dest]);
    assert!(o.status.success(), "oneshot join: {}", stderr(&o));
    wait_until("ssh with the bot's outputs", 30, || {
        ssh(&out, login.name, "node1", "true").status.success()
    });
    let mut live = live_session(&out, login.name);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        live.0.try_wait().unwrap().is_none(),
        "the session ended early"
    );
    a.ok(&[
        "admin",
        "lock",
        "--user",
        "bot-ci3",
        "--message",
        "test lock",
    ]);
    let locked_at = clock::monotonic_now();
    wait_until("the live session to end", 10, || {
        live.0.try_wait().unwrap().is_some()
    });
    let took = clock::monotonic_now() - locked_at;
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(!ssh(&out, login.name, "node1", "true").status.success());
    let o = oneshot(&a, &data, &["--destination-dir", dest]);
    assert!(!o.status.success(), "a locked bot renewed");
}

#[test]
fn a_bot_offline_past_expiry_recovers_with_its_bound_key_within_its_limit() {
    let a = Appliance::start("");
    let login = os_login();
    let role = a.dir.path().join("bot-role.yaml");
    std::fs::write(&role, BOT_ROLE).unwrap();
    a.ok(&["admin", "create", "-f", role.to_str().unwrap()]);
    let node_dir = a.dir.path().join("node1");
    let _node = start_node(&a, &node_dir, &a.join_token("node"), "node1", "env=test");
    // Two bots with one-minute certificates: one may recover once, the other never.
    let mut bots = Vec::new();
    for (name, recoveries) in [("kept", "1"), ("nolimit", "0")] {
        let out = a.ok(&[
            "admin",
            "bots",
            "add",
            name,
            "--roles",
            "bot-runner",
            "--logins",
            login.name,
            "--recoveries",
            recoveries,
            "--format",
            "json",
        ]);
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        let token = v["token"].as_str().unwrap().to_string();
        let (data, out) = (
            a.dir.path().join(format!("{name}-d")),
            a.dir.path().join(format!("{name}-o")),
        );
        let dest = out.to_str().unwrap().to_string();
        let o = oneshot(
            &a,
            &data,
            &[
                "--token",
                &token,
                "--destination-dir",
                &dest,
                "--certificate-ttl",
                "1m",
            ],
        );
        assert!(o.status.success(), "join {name}: {}", stderr(&o));
        assert_eq!(file_mode(&data.join("bound.key")), 0o600);
        bots.push((data, out, dest));
    }
    let joined_at = clock::monotonic_now();
    let (kept, nolimit) = (&bots[0], &bots[1]);
    wait_until("ssh before the expiry", 30, || {
        ssh(&kept.1, login.name, "node1", "true").status.success()
    });
    // Offline past the expiry.
    let expiry = joined_at + Duration::from_secs(62);
    std::thread::sleep(expiry.saturating_duration_since(clock::monotonic_now()));
    assert!(!ssh(&kept.1, login.name, "node1", "true").status.success());
    let bound_before = std::fs::read(kept.0.join("bound.key")).unwrap();
    let o = oneshot(&a, &kept.0, &["--destination-dir", &kept.2]);
    assert!(o.status.success(), "recovery: {}", stderr(&o));
    // The recovery rotated the bound key.
    assert_ne!(
        std::fs::read(kept.0.join("bound.key")).unwrap(),
        bound_before
    );
    assert!(!kept.0.join("bound.key.next").exists());
    assert_eq!(file_mode(&kept.0.join("bound.key")), 0o600);
    let s = ssh(&kept.1, login.name, "node1", "id -un");
    assert!(
        s.status.success() && stdout(&s).trim() == login.name,
        "{}",
        stderr(&s)
    );
    let o = oneshot(&a, &nolimit.0, &["--destination-dir", &nolimit.2]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("its limit"), "{}", stderr(&o));
    let joins = events(&a, "bot.join");
    let method = |ok: bool, bot: &str| {
        joins
            .iter()
            .any(|e| e["method"] == "bound_keypair" && e["success"] == ok && e["bot"] == bot)
    };
    assert!(
        method(true, "kept") && method(false, "nolimit"),
        "{joins:?}"
    );
}

#[test]
fn a_bot_keeps_its_outputs_while_the_cluster_is_away_and_renews_when_it_is_back() {
    let mut a = Appliance::start("");
    let role = a.dir.path().join("bot-role.yaml");
    std::fs::write(&role, BOT_ROLE).unwrap();
    a.ok(&["admin", "create", "-f", role.to_str().unwrap()]);
    let token = add_bot(&a, "away", "nobody");
    let (data, out) = (a.dir.path().join("d"), a.dir.path().join("o"));
    let log = a.dir.path().join("bot.log");
    let _bot = Killed(
        Command::new(HOP)
            .args(bot_args(&a, &data))
            .args(["--token", &token, "--destination-dir"])
            .arg(&out)
            .args(["--certificate-ttl", "1m", "--renewal-interval", "2s"])
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .unwrap(),
    );
    wait_until("the bot's first renewal", 30, || {
        bot_generation(&a, "away") >= 2
    });
    a.stop();
    let cert = std::fs::read(out.join("keys").join(&a.addr).join("bot-away-tls.crt")).unwrap();
    wait_until("the bot to say renewal failed", 20, || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("renewal failed")
    });
    // The last good outputs stay while the cluster is away.
    let kept = std::fs::read(out.join("keys").join(&a.addr).join("bot-away-tls.crt")).unwrap();
    assert_eq!(kept, cert);
    assert!(out.join("ssh_config").exists());
    a.restart_same_port();
    let before = bot_generation(&a, "away");
    wait_until("a renewal after the cluster is back", 40, || {
        bot_generation(&a, "away") > before
    });
    let ls = Command::new(HOP)
        .arg("--identity")
        .arg(out.join("identity"))
        .arg("ls")
        .output()
        .unwrap();
    assert!(ls.status.success(), "{}", stderr(&ls));
}
