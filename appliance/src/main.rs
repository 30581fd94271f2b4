//! `hop`: one binary for the cluster (Auth, Proxy), its agents, the user's client and the
//! administrator's tool.
//!
//! This file owns the process edge: the allocator, argument parsing, logging set-up, the runtime,
//! and turning errors into a one-line message and a non-zero exit status.

#![forbid(unsafe_code)]

mod cli;
mod loadtest_args;
mod logging;

mod start;

use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser};

use cli::{Cli, Command, StartArgs};
use hop_config::{Config, LogFormat};

#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = Cli::parse_from(bot_alias(std::env::args_os()));
    if let Err(e) = run(cli) {
        eprintln!("ERROR: {}", error_text(&e));
        std::process::exit(1);
    }
}

/// Arguments as `hop` parses them: run as `hop-bot` (a symlink), `hop-bot ARGS` is
/// `hop bot ARGS`.
fn bot_alias(args: impl Iterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut args: Vec<_> = args.collect();
    let is_bot = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .is_some_and(|n| n == "hop-bot");
    if is_bot {
        args.insert(1, "bot".into());
    }
    args
}

/// The error and its causes on one line, without repeating a cause the message already quotes.
fn error_text(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !out.contains(&c) {
            out.push_str(": ");
            out.push_str(&c);
        }
    }
    out
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    // The control plane is small: two worker threads whatever the core count.
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(file) = &cli.identity {
        hop_client::profile::use_identity_file(file)?;
    }
    match cli.command {
        Command::Version => {
            println!("hop {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Configure => {
            print!("{}", hop_config::DEFAULT_CONFIG_YAML);
            Ok(())
        }
        Command::Completion { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "hop", &mut std::io::stdout());
            Ok(())
        }
        Command::Start(args) => {
            let cfg = start_config(&args)?;
            let level = cli.log_level.or(cfg.hop.log.severity.clone());
            logging::init(
                level.as_deref(),
                cli.log_format.unwrap_or(cfg.hop.log.format),
            )?;
            runtime()?.block_on(start::run(cfg))
        }
        // The load test talks to the proxy as agents do: it needs no admin socket.
        Command::Admin(hop_client::cli::AdminArgs {
            command: hop_client::cli::AdminCommand::Loadtest(cmd),
            data_dir,
            ..
        }) => {
            logging::init(
                cli.log_level.as_deref().or(Some("error")),
                cli.log_format.unwrap_or(LogFormat::Text),
            )?;
            Ok(hop_agent::loadtest::run(loadtest_args::loadtest_settings(
                cmd, data_dir,
            )?)?)
        }
        other => {
            // A bot runs unattended: its renewals are worth a line each.
            let default_level = if matches!(other, Command::Bot(_)) {
                "info"
            } else {
                "warn"
            };
            logging::init(
                cli.log_level.as_deref().or(Some(default_level)),
                cli.log_format.unwrap_or(LogFormat::Text),
            )?;
            let rt = runtime()?;
            match other {
                Command::Signup(a) => rt.block_on(hop_client::user::signup(a)),
                Command::Login(a) => rt.block_on(hop_client::user::login(a)),
                Command::Status(a) => hop_client::user::status(a),
                Command::Logout => hop_client::user::logout(),
                Command::Admin(a) => rt.block_on(hop_client::admin::run(a)),
                Command::Bot(hop_client::cli::BotCommand::Start(a)) => {
                    rt.block_on(hop_client::bot::start(a))
                }
                Command::Apps(cmd) => rt.block_on(hop_client::apps::run(cmd)),
                Command::Proxy(hop_client::cli::ProxyCommand::App { name, port, bind }) => {
                    rt.block_on(hop_client::apps::proxy_app(name, bind, port))
                }
                Command::Db(cmd) => rt.block_on(hop_client::db::run(cmd)),
                Command::Kube(cmd) => rt.block_on(hop_client::kube::run(cmd)),
                Command::Proxy(hop_client::cli::ProxyCommand::Db {
                    name, port, bind, ..
                }) => rt.block_on(hop_client::db::proxy_db(name, bind, port)),
                Command::Proxy(hop_client::cli::ProxyCommand::Ssh { target }) => {
                    // One thread: both directions share one TLS connection, and a second
                    // worker would only contend for its lock.
                    drop(rt);
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    let r = rt.block_on(hop_client::ssh::proxy_ssh(target));
                    // Standard input may be read on a blocking thread that ends only at EOF
                    // (when it is not a pipe); when the proxy ends the session first, waiting
                    // for it would keep standard output open, and OpenSSH waits for that to
                    // close.
                    rt.shutdown_background();
                    r
                }
                Command::Ls { labels, format } => rt.block_on(hop_client::ssh::ls(
                    labels,
                    matches!(format, hop_client::cli::OutputFormat::Json),
                )),
                Command::Config => rt.block_on(hop_client::ssh::config()),
                Command::Recordings(c) => rt.block_on(hop_client::recordings::run(c)),
                Command::Sessions(c) => rt.block_on(hop_client::sessions::run(c)),
                Command::Mfa(hop_client::cli::MfaCommand::Session { target }) => {
                    // OpenSSH's `Match exec`: 0 when the certificates are ready, 1 (quietly)
                    // when no role asks for a tap; an error says why on standard error.
                    let ready =
                        rt.block_on(hop_client::mfa::session::prepare_for_openssh(&target))?;
                    std::process::exit(if ready { 0 } else { 1 });
                }
                Command::Mfa(c) => rt.block_on(hop_client::mfa::commands::run(c)),
                Command::Request(c) => rt.block_on(hop_client::requests::run(c)),
                Command::Play(a) => rt.block_on(hop_client::recordings::play(a)),
                Command::Bench(a) => rt.block_on(hop_client::bench::run(a)),
                Command::Join { session_id, mode } => {
                    let r = rt.block_on(hop_client::join::join(session_id, mode));
                    rt.shutdown_background();
                    r
                }
                Command::Ssh(a) => {
                    let code = rt.block_on(hop_client::ssh::ssh(a))?;
                    std::process::exit(code);
                }
                Command::Scp(a) => {
                    let code = rt.block_on(hop_client::ssh::scp(a))?;
                    std::process::exit(code);
                }
                Command::Version
                | Command::Configure
                | Command::Completion { .. }
                | Command::Start(_) => Ok(()),
            }
        }
    }
}

/// The config file (if any) with command-line flags applied on top.
fn start_config(args: &StartArgs) -> anyhow::Result<Config> {
    let mut cfg = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    let src = args
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from("<flags>"));
    if let Some(d) = &args.data_dir {
        cfg.hop.data_dir = d.clone();
    }
    if let Some(l) = &args.listen {
        cfg.proxy_service.listen_addr = hop_config::Addr(
            hop_config::parse_addr(l).map_err(|e| anyhow::anyhow!("--listen: {e}"))?,
        );
    }
    if let Some(d) = &args.diag_addr {
        cfg.hop.diag_addr = Some(hop_config::Addr(
            hop_config::parse_addr(d).map_err(|e| anyhow::anyhow!("--diag-addr: {e}"))?,
        ));
    }
    if !args.roles.is_empty() {
        cfg.hop.roles = args
            .roles
            .iter()
            .map(|r| r.parse())
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("--roles: {e}"))?;
    }
    if args.workers.is_some() {
        cfg.proxy_service.workers = args.workers;
    }
    if let Some(d) = args.io_driver {
        cfg.proxy_service.io_driver = d;
    }
    if args.proxy.is_some() {
        cfg.hop.proxy_server = args.proxy.clone();
    }
    if let Some(path) = &args.token_file {
        cfg.hop.join_token = Some(hop_config::Secret::new(path.display().to_string()));
    } else if let Some(t) = &args.token {
        cfg.hop.join_token = Some(hop_config::Secret::new(t.clone()));
    }
    cfg.hop.join_token = cfg
        .hop
        .join_token
        .take()
        .map(|t| hop_config::read_join_token(t.expose()).map(hop_config::Secret::new))
        .transpose()?;
    if args.ca_pin.is_some() {
        cfg.hop.ca_pin = args.ca_pin.clone();
    }
    if let Some(n) = args.agent_connection_count {
        cfg.hop.agent_connection_count = n;
    }
    for a in &args.apps {
        let spec = hop_config::services::AppSpec::parse(a).map_err(|e| anyhow::anyhow!(e))?;
        cfg.app_service.apps.push(spec.into());
    }
    for d in &args.databases {
        let spec = hop_config::services::DbSpec::parse(d).map_err(|e| anyhow::anyhow!(e))?;
        cfg.db_service.databases.push(hop_config::DbConfig {
            name: spec.name,
            uri: spec.uri,
            ca_file: spec.ca_file,
            server_name: spec.server_name,
            labels: spec.labels,
        });
    }
    for k in &args.kube_clusters {
        let spec = hop_config::KubeClusterSpec::parse(k).map_err(|e| anyhow::anyhow!(e))?;
        cfg.kubernetes_service.kube_clusters.push(spec.into());
    }
    if let Some(l) = &args.labels {
        for part in l.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--labels: {part:?} is not key=value"))?;
            cfg.ssh_service.labels.insert(k.to_string(), v.to_string());
        }
    }
    if args.nodename.is_some() {
        cfg.ssh_service.nodename = args.nodename.clone();
    }
    if let Some(a) = &args.ssh_listen {
        cfg.ssh_service.listen_addr = Some(hop_config::Addr(
            hop_config::parse_addr(a).map_err(|e| anyhow::anyhow!("--ssh-listen: {e}"))?,
        ));
    }
    if let Some(n) = &args.cluster_name {
        cfg.auth_service.cluster_name = Some(n.clone());
    }
    cfg.validate(Path::new(&src))?;
    Ok(cfg)
}
