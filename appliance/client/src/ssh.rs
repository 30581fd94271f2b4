//! The user's SSH commands: `hop ls`, `hop config`, `hop proxy ssh`, `hop ssh` and `hop scp`.
//!
//! This module owns the client side of SSH access. `hop proxy ssh login@node` opens a TLS
//! connection to the proxy's one port (ALPN `hop-ssh`, the login's X.509 certificate), names the
//! target in a Dial frame, and then pipes standard input and output through it: it is the
//! `ProxyCommand` that `hop config` writes for OpenSSH. `hop ssh` and `hop scp` run the system's
//! OpenSSH client with that configuration given on its command line (the login's key, SSH
//! certificate, the cluster's `@cert-authority` known_hosts, and `hop proxy ssh` as
//! `ProxyCommand`), so every OpenSSH feature (`-L`, `-R`, `-A`, `-t`, escape sequences, agent)
//! behaves as users know it; `hop ssh` adds label targeting (run on every matching node, output
//! prefixed by node).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use tokio::io::AsyncWriteExt;

use super::profile::{self, Login, Paths};
use hop_api::proto::auth_public_client::AuthPublicClient;
use hop_api::proto::{ListNodesRequest, Node};
use hop_net::connect::{open_session, peer_leaf, status_error, tls_channel_with_peer};
use hop_net::trust::client_config;
use hop_net::tunnel::ALPN_SSH;

/// `hop proxy ssh login@host[:port]`: stdin/stdout through the proxy to the node's SSH server.
/// When the proxy's certificate names CA keys other than the saved ones (a rotation), the saved
/// trust (`known_hosts` among it) is refreshed before any byte reaches OpenSSH, which reads
/// `known_hosts` only once the node's host key arrives.
pub async fn proxy_ssh(target: String) -> anyhow::Result<()> {
    let login = profile::current_login()?;
    // A session's per-session MFA certificate when `hop ssh` made one, else the login's.
    let cert = crate::mfa::session::proxy_cert(&login, &target)?;
    let cfg = Arc::new(client_config(&login.trust, Some(&cert), ALPN_SSH)?);
    let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
    let (tls, pending) = open_session(&login.profile.proxy, cfg, &target, unspecified).await?;
    crate::trust::refresh_trust_or_warn(&login, peer_leaf(&tls).as_deref()).await;
    let (mut rd, mut wr) = tokio::io::split(tls);
    let mut stdout = stdout_writer();
    if !pending.is_empty() {
        stdout.write_all(&pending).await?;
        stdout.flush().await?;
    }
    let up = tokio::spawn(async move {
        let mut stdin = stdin_reader();
        let _ = copy_flushing(&mut stdin, &mut wr).await;
        let _ = wr.shutdown().await;
    });
    // The session is over when the node closes its side; stdin may stay open.
    let r = copy_flushing(&mut rd, &mut stdout).await;
    let _ = stdout.flush().await;
    up.abort();
    r?;
    Ok(())
}

/// Bytes moved per read: large enough that one read of a busy pipe fills whole TLS records
/// (16 KiB each) and OpenSSH's 32 KiB packets arrive whole.
const COPY_BUFFER: usize = 128 * 1024;

/// Standard input, read without a thread: OpenSSH hands a `ProxyCommand` pipes, which are read
/// non-blocking on the runtime; anything else (a terminal, a file) is read by tokio's blocking
/// reader.
fn stdin_reader() -> Box<dyn tokio::io::AsyncRead + Unpin + Send> {
    use std::os::fd::AsFd;
    let pipe = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .ok()
        .and_then(|fd| tokio::net::unix::pipe::Receiver::from_owned_fd(fd).ok());
    match pipe {
        Some(p) => Box::new(p),
        None => Box::new(tokio::io::stdin()),
    }
}

/// Standard output, written without a thread when it is a pipe (see [`stdin_reader`]).
fn stdout_writer() -> Box<dyn tokio::io::AsyncWrite + Unpin + Send> {
    use std::os::fd::AsFd;
    let pipe = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .ok()
        .and_then(|fd| tokio::net::unix::pipe::Sender::from_owned_fd(fd).ok());
    match pipe {
        Some(p) => Box::new(p),
        None => Box::new(tokio::io::stdout()),
    }
}

/// Copies and flushes after every read (OpenSSH waits for each packet).
async fn copy_flushing<R, W>(r: &mut R, w: &mut W) -> std::io::Result<u64>
where
    R: tokio::io::AsyncRead + Unpin + ?Sized,
    W: tokio::io::AsyncWrite + Unpin + ?Sized,
{
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok(total);
        }
        w.write_all(&buf[..n]).await?;
        w.flush().await?;
        total += n as u64;
    }
}

/// The largest node listing the client accepts: tonic's default of 4 MiB holds only about
/// 40,000 nodes (about 100 bytes each); 64 MiB holds over half a million.
const MAX_LISTING_BYTES: usize = 64 * 1024 * 1024;

/// Nodes the current login may reach, optionally only those with all of `labels`; the saved
/// trust is refreshed first when the proxy's certificate says it is stale (`hop ssh` runs
/// OpenSSH with it next).
pub async fn list_nodes(
    login: &Login,
    labels: BTreeMap<String, String>,
) -> anyhow::Result<Vec<Node>> {
    let (channel, peer) =
        tls_channel_with_peer(&login.profile.proxy, &login.trust, Some(&login.cert)).await?;
    crate::trust::refresh_trust_or_warn(login, peer.get().as_deref()).await;
    Ok(AuthPublicClient::new(channel)
        .max_decoding_message_size(MAX_LISTING_BYTES)
        .list_nodes(ListNodesRequest {
            labels: labels.into_iter().collect(),
        })
        .await
        .map_err(status_error)?
        .into_inner()
        .nodes)
}

/// Parses `k=v,k2=v2`.
pub fn parse_labels(s: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| anyhow!("label {part:?} is not key=value"))?;
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(out)
}

/// `hop ls [labels] [--format json]`.
pub async fn ls(labels: Option<String>, json: bool) -> anyhow::Result<()> {
    let login = profile::current_login()?;
    let wanted = labels
        .as_deref()
        .map(parse_labels)
        .transpose()?
        .unwrap_or_default();
    let nodes = list_nodes(&login, wanted).await?;
    if json {
        let v: Vec<serde_json::Value> = nodes
            .iter()
            .map(|n| {
                serde_json::json!({
                    "name": n.name,
                    "host_id": n.host_id,
                    "labels": n.labels.iter().collect::<BTreeMap<_, _>>(),
                    "addr": n.addr,
                    "logins": n.logins,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if nodes.is_empty() {
        println!("No nodes you can reach are connected.");
        return Ok(());
    }
    let w = nodes.iter().map(|n| n.name.len()).max().unwrap_or(4).max(4);
    println!(
        "{:<w$}  {:<36}  {:<20}  LABELS",
        "NODE", "HOST ID", "LOGINS"
    );
    for n in &nodes {
        let labels: Vec<String> = n
            .labels
            .iter()
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!(
            "{:<w$}  {:<36}  {:<20}  {}",
            n.name,
            n.host_id,
            n.logins.join(","),
            labels.join(",")
        );
    }
    Ok(())
}

/// What OpenSSH needs for the current login.
struct SshFiles {
    paths: Paths,
    cluster: String,
    hop: PathBuf,
    home: PathBuf,
}

impl SshFiles {
    fn current() -> anyhow::Result<(Login, Self)> {
        let home = profile::hop_home()?;
        let login = profile::current_login()?;
        let paths = Paths::new(home.clone(), &login.profile.proxy, &login.profile.user);
        let hop = std::env::current_exe().context("locating the hop binary")?;
        let cluster = login.profile.cluster.clone();
        Ok((
            login,
            Self {
                paths,
                cluster,
                hop,
                home,
            },
        ))
    }

    fn proxy_command(&self) -> String {
        format!(
            "env HOP_HOME={} {} proxy ssh %r@%h:%p",
            quote(&self.home.to_string_lossy()),
            quote(&self.hop.to_string_lossy())
        )
    }

    /// What `hop config`'s `Match exec` runs to prepare a session's MFA certificates.
    fn session_mfa_command(&self) -> String {
        format!(
            "env HOP_HOME={} {} mfa session %r@%h",
            quote(&self.home.to_string_lossy()),
            quote(&self.hop.to_string_lossy())
        )
    }

    /// `-o` options that put a session's MFA certificate first (OpenSSH takes the first
    /// ProxyCommand given, and tries identities in order).
    fn session_mfa_options(&self, files: &crate::mfa::session::SessionMfaFiles) -> Vec<String> {
        vec![
            format!("IdentityFile={}", files.ssh_key().display()),
            format!("CertificateFile={}", files.ssh_cert().display()),
            format!(
                "ProxyCommand=env {}={} {}",
                crate::mfa::session::SESSION_MFA_DIR_ENV,
                quote(&files.dir.to_string_lossy()),
                self.proxy_command()
            ),
        ]
    }

    /// The node's name without the cluster's suffix.
    fn bare<'a>(&self, node: &'a str) -> &'a str {
        node.strip_suffix(&format!(".{}", self.cluster))
            .unwrap_or(node)
    }

    /// `-o` options for OpenSSH.
    fn options(&self) -> Vec<String> {
        vec![
            format!("UserKnownHostsFile={}", self.paths.known_hosts().display()),
            format!("IdentityFile={}", self.paths.ssh_key().display()),
            format!("CertificateFile={}", self.paths.ssh_cert().display()),
            "IdentitiesOnly=yes".into(),
            "StrictHostKeyChecking=yes".into(),
            "GlobalKnownHostsFile=/dev/null".into(),
            format!("ProxyCommand={}", self.proxy_command()),
        ]
    }

    /// The name OpenSSH uses for `node`: `node.CLUSTER`, which its host certificate lists.
    fn host(&self, node: &str) -> String {
        if node.ends_with(&format!(".{}", self.cluster)) {
            node.to_string()
        } else {
            format!("{node}.{}", self.cluster)
        }
    }
}

fn quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+:@".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// `hop config`: an `ssh_config` block for the current cluster. The saved trust is refreshed
/// first (`GetTrust`), so that during a rotation its `known_hosts` holds both host keys.
pub async fn config() -> anyhow::Result<()> {
    let (login, f) = SshFiles::current()?;
    if let Err(e) = crate::trust::refresh_trust(&login).await {
        eprintln!(
            "hop: warning: the cluster's CAs could not be refreshed; known_hosts is the one saved: {e:#}"
        );
    }
    print!(
        "{}",
        render_config(&f, &login.profile.proxy, &login.profile.user)?
    );
    Ok(())
}

/// The `ssh_config` of the login kept in `home` (a `$HOP_HOME` layout: the bot's identity
/// output) for `user` at `proxy` in `cluster`: what `hop config` prints for it.
pub fn ssh_config_for(
    home: &std::path::Path,
    proxy: &str,
    user: &str,
    cluster: &str,
) -> anyhow::Result<String> {
    let f = SshFiles {
        paths: Paths::new(home.to_path_buf(), proxy, user),
        cluster: cluster.to_string(),
        hop: std::env::current_exe().context("locating the hop binary")?,
        home: home.to_path_buf(),
    };
    render_config(&f, proxy, user)
}

fn render_config(f: &SshFiles, proxy: &str, user: &str) -> anyhow::Result<String> {
    use std::fmt::Write;
    let mut o = String::new();
    writeln!(
        o,
        "# Hop cluster {} through proxy {proxy} (user {user})",
        f.cluster
    )?;
    writeln!(
        o,
        "# Add this to ~/.ssh/config, then: ssh LOGIN@NODE.{}",
        f.cluster
    )?;
    let common = |o: &mut String| -> std::fmt::Result {
        writeln!(
            o,
            "    UserKnownHostsFile \"{}\"",
            f.paths.known_hosts().display()
        )?;
        writeln!(o, "    GlobalKnownHostsFile /dev/null")?;
        writeln!(o, "    IdentityFile \"{}\"", f.paths.ssh_key().display())?;
        writeln!(
            o,
            "    CertificateFile \"{}\"",
            f.paths.ssh_cert().display()
        )?;
        writeln!(o, "    IdentitiesOnly yes")?;
        writeln!(o, "    StrictHostKeyChecking yes")
    };
    // The proxy itself, as a jump host: ssh -J proxy.CLUSTER LOGIN@NODE.CLUSTER (before the
    // wildcard block, so that its ProxyCommand does not apply to the proxy). Its host key is
    // checked under the name `proxy.CLUSTER`, which its certificate lists and the known_hosts
    // `@cert-authority *.CLUSTER` line covers, not under the address it is dialed at.
    let (proxy_host, proxy_port) = hop_net::connect::split_host_port(proxy)?;
    writeln!(o, "Host proxy.{}", f.cluster)?;
    writeln!(o, "    HostName {proxy_host}")?;
    writeln!(o, "    Port {proxy_port}")?;
    writeln!(o, "    HostKeyAlias proxy.{}", f.cluster)?;
    writeln!(o, "    ProxyCommand none")?;
    common(&mut o)?;
    // Per-session MFA (a role's require_session_mfa): before OpenSSH connects to a node,
    // `hop mfa session` taps the key and writes one-minute certificates for that login and
    // node (or finds it need not); when it did, their key comes first, and the ProxyCommand
    // presents the matching X.509 certificate by itself. OpenSSH runs the exec only for the
    // hosts the first criterion matches.
    let mfa_dir = f.paths.keys_dir().join("session-mfa").join("%r@%h");
    writeln!(
        o,
        "Match host \"*.{c},!proxy.{c}\" exec \"{}\"",
        f.session_mfa_command(),
        c = f.cluster
    )?;
    writeln!(o, "    IdentityFile \"{}\"", mfa_dir.join("key").display())?;
    writeln!(
        o,
        "    CertificateFile \"{}\"",
        mfa_dir.join("key-cert.pub").display()
    )?;
    writeln!(o, "Host *.{}", f.cluster)?;
    common(&mut o)?;
    writeln!(o, "    ProxyCommand {}", f.proxy_command())?;
    Ok(o)
}

/// Splits `[user@]host`.
fn split_user_host(s: &str) -> (Option<String>, String) {
    match s.rsplit_once('@') {
        Some((u, h)) => (Some(u.to_string()), h.to_string()),
        None => (None, s.to_string()),
    }
}

/// `hop ssh`.
pub async fn ssh(a: crate::cli::SshArgs) -> anyhow::Result<i32> {
    let (login, f) = SshFiles::current()?;
    let (user, host) = split_user_host(&a.destination);
    let os_login = a
        .login
        .clone()
        .or(user)
        .ok_or_else(|| anyhow!("which OS login? use LOGIN@{host} or -l LOGIN"))?;
    // Label targeting: every node whose labels match.
    let by_labels = host.contains('=');
    let targets: Vec<String> = if by_labels {
        let wanted = parse_labels(&host)?;
        let nodes = list_nodes(&login, wanted).await?;
        if nodes.is_empty() {
            bail!("no node you can reach has the labels {host}");
        }
        nodes.into_iter().map(|n| n.name).collect()
    } else {
        vec![host]
    };
    // Per-session MFA (a role's require_session_mfa): a tap and one-minute certificates for the
    // one node and login; their options come first.
    let mut mfa_options: Vec<String> = Vec::new();
    if !by_labels {
        let node = f.bare(&targets[0]).to_string();
        let host = f.host(&targets[0]);
        if let Some(files) = crate::mfa::session::prepare(&login, (&node, &host), &os_login).await?
        {
            mfa_options = f.session_mfa_options(&files);
        }
    } else if let Err(e) = crate::mfa::session::prepare(&login, ("", ""), &os_login).await {
        // Auth answers a challenge without a node only when no role requires one.
        bail!("{e:#} (with per-session MFA, run `hop ssh` on one node at a time)");
    }
    let mut base: Vec<String> = Vec::new();
    for o in mfa_options
        .into_iter()
        .chain(f.options())
        .chain(a.options.iter().cloned())
    {
        base.push("-o".into());
        base.push(o);
    }
    if a.tty {
        base.push("-t".into());
    }
    if a.no_tty {
        base.push("-T".into());
    }
    if a.forward_agent {
        base.push("-A".into());
    }
    if let Some(p) = a.port {
        base.push("-p".into());
        base.push(p.to_string());
    }
    for l in &a.local {
        base.push("-L".into());
        base.push(l.clone());
    }
    for r in &a.remote {
        base.push("-R".into());
        base.push(r.clone());
    }
    if a.no_command {
        base.push("-N".into());
    }
    base.push("-l".into());
    base.push(os_login);
    if !by_labels {
        let mut args = base;
        args.push(f.host(&targets[0]));
        if !a.command.is_empty() {
            args.push("--".into());
            args.extend(a.command.iter().cloned());
        }
        return Err(exec_openssh("ssh", &args));
    }
    if a.command.is_empty() {
        bail!(
            "{} nodes match {}: give a command to run on all of them",
            targets.len(),
            a.destination
        );
    }
    let mut tasks = tokio::task::JoinSet::new();
    for t in targets {
        let mut args = base.clone();
        args.push("-T".into());
        args.push(f.host(&t));
        args.push("--".into());
        args.extend(a.command.iter().cloned());
        tasks.spawn(async move {
            let out = tokio::process::Command::new("ssh")
                .args(&args)
                .stdin(std::process::Stdio::null())
                .output()
                .await;
            (t, out)
        });
    }
    let mut worst = 0;
    let mut results = Vec::new();
    while let Some(r) = tasks.join_next().await {
        results.push(r?);
    }
    results.sort_by(|a, b| a.0.cmp(&b.0));
    for (node, out) in results {
        let out = out.context("running OpenSSH's ssh")?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            println!("[{node}] {line}");
        }
        for line in String::from_utf8_lossy(&out.stderr).lines() {
            eprintln!("[{node}] {line}");
        }
        let code = out.status.code().unwrap_or(255);
        if code != 0 {
            eprintln!("[{node}] exit status {code}");
            worst = worst.max(code);
        }
    }
    Ok(worst)
}

/// `hop scp`: OpenSSH's scp with the login's configuration; `login@node:path` names remote files.
pub async fn scp(a: crate::cli::ScpArgs) -> anyhow::Result<i32> {
    let (_login, f) = SshFiles::current()?;
    let mut args: Vec<String> = Vec::new();
    for o in f.options() {
        args.push("-o".into());
        args.push(o);
    }
    if a.recursive {
        args.push("-r".into());
    }
    if a.preserve {
        args.push("-p".into());
    }
    if a.quiet {
        args.push("-q".into());
    }
    if let Some(p) = a.port {
        args.push("-P".into());
        args.push(p.to_string());
    }
    for p in &a.paths {
        // user@host:path → user@host.CLUSTER:path; local paths untouched.
        match p.split_once(':') {
            Some((remote, path)) if !remote.contains('/') => {
                let (user, host) = split_user_host(remote);
                let host = f.host(&host);
                args.push(match user {
                    Some(u) => format!("{u}@{host}:{path}"),
                    None => format!("{host}:{path}"),
                });
            }
            _ => args.push(p.clone()),
        }
    }
    Err(exec_openssh("scp", &args))
}

/// Replaces this process with OpenSSH's `program`: signals, the terminal and the exit status are
/// then ssh's own, and whoever started `hop ssh` holds ssh's PID (stopping it stops ssh; a
/// child would have been orphaned). Returns only if the program cannot be started.
fn exec_openssh(program: &str, args: &[String]) -> anyhow::Error {
    use std::os::unix::process::CommandExt;
    let e = std::process::Command::new(program).args(args).exec();
    anyhow::anyhow!("running OpenSSH's {program} (install openssh-client): {e}")
}
