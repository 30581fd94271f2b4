//! The command line of `hop`: the top-level commands, `hop start`'s flags, and nothing else.
//! The client's and administrator's commands are `hop_client::cli`'s.
//!
//! Parsing only: the modules named in each command's handler do the work.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use hop_client::cli::*;
use hop_config::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "hop",
    version,
    about = "Hop: identity-aware access to SSH, databases, apps, Kubernetes and desktops through one port",
    long_about = "Hop is an access platform in one binary. `hop start` runs the cluster (Auth, Proxy) or an \
agent; the other commands are the user's client (signup, login, status) and the administrator's \
tool (`hop admin`).\n\nQuick start:\n  hop start                                   # all-in-one cluster on :3080, data in ./hop-data\n  hop admin users add alice --roles access --logins alice\n  hop signup TOKEN --proxy localhost:3080 --ca-pin sha256:...\n  hop login --proxy localhost:3080 --user alice\n  hop status",
    propagate_version = true
)]
pub struct Cli {
    /// Log level: error, warn, info, debug, trace, or a tracing filter (e.g. "hop=debug").
    #[arg(long, global = true, env = "HOP_LOG")]
    pub log_level: Option<String>,
    /// Log format.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Use the identity a bot wrote (its `identity` output's `identity` file) instead of your
    /// `hop login`.
    #[arg(long, global = true, env = "HOP_IDENTITY")]
    pub identity: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the version.
    Version,
    /// Run Hop services: an all-in-one cluster by default (auth + proxy).
    Start(StartArgs),
    /// Print a commented default configuration (redirect it to hop.yaml).
    Configure,
    /// Print a shell completion script: `hop completion bash > /etc/bash_completion.d/hop`.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Complete an invitation: set your password and enroll an authenticator app.
    Signup(SignupArgs),
    /// Log in to a cluster and receive short-lived certificates.
    Login(LoginArgs),
    /// Show the current login: user, roles, logins, cluster and expiry.
    Status(StatusArgs),
    /// Remove the current login's keys and certificates.
    Logout,
    /// Administer the cluster (users, roles, tokens, certificate authorities).
    Admin(AdminArgs),
    /// Run a bot: join with its token, renew its certificates, keep its outputs fresh.
    #[command(subcommand)]
    Bot(BotCommand),
    /// Applications you can reach.
    #[command(subcommand)]
    Apps(AppsCommand),
    /// Databases: list them, log in to one, connect with psql.
    #[command(subcommand)]
    Db(DbCommand),
    /// Kubernetes clusters: list them, log in to one (kubectl then works as is), exec in a pod.
    #[command(subcommand)]
    Kube(KubeCommand),
    /// Local listeners that carry connections through the proxy.
    #[command(subcommand)]
    Proxy(ProxyCommand),
    /// List the SSH nodes you can reach (optionally only those with all of LABELS, k=v,k2=v2).
    Ls {
        labels: Option<String>,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// Print an ssh_config block so that OpenSSH's ssh, scp, sftp and rsync reach nodes.
    Config,
    /// Run a command or a shell on a node (or on every node matching labels: user@env=prod).
    Ssh(SshArgs),
    /// Copy files to and from nodes: hop scp [-r] [-p] SRC... DEST, remote as login@node:path.
    Scp(ScpArgs),
    /// Recorded SSH sessions: list and export them (needs the `session` list/read rule, as the
    /// auditor and editor roles have).
    #[command(subcommand)]
    Recordings(RecordingsCommand),
    /// Access requests: ask for roles, review others' requests (`hop login --request-id`
    /// then uses an approved one; `hop request drop` goes back).
    #[command(subcommand)]
    Request(RequestCommand),
    /// Live sessions: your own, or every one with the `session` list rule (auditor, editor).
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// Your second-factor devices: list, add or remove security keys.
    #[command(subcommand)]
    Mfa(MfaCommand),
    /// Replay a recorded session in this terminal: space pauses, q quits, + and - change speed.
    Play(PlayArgs),
    /// Join a live SSH session: watch it (observer) or type into it too (peer). Ctrl-] leaves.
    Join {
        /// The session id (from `hop sessions ls`, or the owner).
        session_id: String,
        #[arg(long, value_enum, default_value_t = JoinMode::Observer)]
        mode: JoinMode,
    },
    /// Drive load through the cluster as the logged-in user and report latency percentiles and
    /// errors: SSH sessions, database queries or application connections at a fixed rate.
    #[command(
        long_about = "Drive load through the cluster as the logged-in user and report latency percentiles and errors.\n\n\
    The load is open loop: operations are scheduled at fixed intervals (1/RATE) whatever the cluster does, \
    and each latency is measured from the operation's scheduled start, not from when a worker became free, \
    so a slow cluster shows up as high latency instead of a lower rate (no coordinated omission). \
    At most --concurrency operations are in flight; an operation still waiting for a free slot --timeout \
    after its scheduled start is counted as an error.\n\nExamples:\n  \
    hop bench ssh root@node1 --rate 20 --duration 30s\n  \
    hop bench ssh root@node1 --interactive --command 'ls /'\n  \
    hop db login pg && hop bench db pg --query 'SELECT 1' --rate 200\n  \
    hop bench app echo --rate 100 --format json"
    )]
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// Configuration file (see `hop configure`).
    #[arg(short, long, env = "HOP_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory [default: ./hop-data].
    #[arg(short = 'd', long, env = "HOP_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address of the proxy's one port [default: 0.0.0.0:3080].
    #[arg(short, long)]
    pub listen: Option<String>,
    /// Address of the diagnostics server (/healthz, /readyz, /metrics).
    #[arg(long)]
    pub diag_addr: Option<String>,
    /// Services to run, comma separated: auth, proxy, node, app, db, kube, windows_desktop.
    #[arg(long, value_delimiter = ',')]
    pub roles: Vec<String>,
    /// Cluster name, fixed at first start [default: the host name].
    #[arg(long)]
    pub cluster_name: Option<String>,
    /// Data-plane worker threads [default: one per core].
    #[arg(long)]
    pub workers: Option<usize>,
    /// Data-plane IO driver: auto (io_uring, else epoll), uring or epoll.
    #[arg(long, value_enum)]
    pub io_driver: Option<hop_config::IoDriverChoice>,
    /// Agents: the proxy to join and tunnel to, HOST:PORT.
    #[arg(long)]
    pub proxy: Option<String>,
    /// Agents: the join token (needed only the first time; the identity is then kept in the data
    /// dir), or the absolute path of a file holding it. Prefer --token-file or HOP_JOIN_TOKEN:
    /// a value on the command line is visible to every user in `ps`.
    #[arg(long, env = "HOP_JOIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Agents: read the join token from this file (its first line).
    #[arg(long, value_name = "PATH", conflicts_with = "token")]
    pub token_file: Option<std::path::PathBuf>,
    /// Agents: the cluster's CA pin, checked when joining.
    #[arg(long)]
    pub ca_pin: Option<String>,
    /// Agents: how many proxies to keep tunnels to when several serve the cluster behind
    /// --proxy (default 2).
    #[arg(long, value_name = "N")]
    pub agent_connection_count: Option<usize>,
    /// App agents: publish a TCP application, e.g. name=echo,uri=tcp://127.0.0.1:7000,labels=env=dev
    /// (repeatable; several labels separated by ';').
    #[arg(long = "app")]
    pub apps: Vec<String>,
    /// Db agents: publish a database, e.g.
    /// name=pg,uri=postgres://127.0.0.1:5432,ca_file=/etc/pg/ca.crt,labels=env=dev (repeatable).
    #[arg(long = "db")]
    pub databases: Vec<String>,
    /// Kube agents: publish a Kubernetes cluster, e.g.
    /// name=dev,kubeconfig=/etc/hop/dev.kubeconfig,context=admin@dev,labels=env=dev;team=x
    /// (repeatable; without kubeconfig=, the service account of the cluster the agent runs in).
    #[arg(long = "kube-cluster", value_name = "SPEC")]
    pub kube_clusters: Vec<String>,
    /// Node agents: static labels, e.g. env=prod,team=db.
    #[arg(long)]
    pub labels: Option<String>,
    /// Node agents: the node's name in the cluster [default: the host name].
    #[arg(long)]
    pub nodename: Option<String>,
    /// Node agents: also accept SSH connections directly on this address (LAN use).
    #[arg(long)]
    pub ssh_listen: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn hop_kube_exec_takes_kubectls_flags_and_the_command_after_the_dashes() {
        let cli = Cli::try_parse_from([
            "hop",
            "kube",
            "exec",
            "-it",
            "web-1",
            "-c",
            "main",
            "-n",
            "ns",
            "--",
            "sh",
            "-c",
            "echo -n x",
        ])
        .unwrap();
        let Command::Kube(KubeCommand::Exec(a)) = cli.command else {
            panic!("not kube exec: {cli:?}")
        };
        assert!(a.stdin && a.tty);
        assert_eq!(a.pod, "web-1");
        assert_eq!(a.container.as_deref(), Some("main"));
        assert_eq!(a.namespace.as_deref(), Some("ns"));
        assert_eq!(a.command, ["sh", "-c", "echo -n x"]);
        // The command is required.
        assert!(Cli::try_parse_from(["hop", "kube", "exec", "web-1"]).is_err());
        let cli = Cli::try_parse_from([
            "hop",
            "kube",
            "credentials",
            "--cluster",
            "dev",
            "--proxy",
            "p:3080",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::Kube(KubeCommand::Credentials { cluster, proxy: Some(p) }) if cluster == "dev" && p == "p:3080"
        ));
    }

    #[test]
    fn hop_admin_auth_rotate_is_under_admin_auth() {
        let cli = Cli::try_parse_from([
            "hop",
            "admin",
            "auth",
            "rotate",
            "--type",
            "host",
            "--manual",
            "--phase",
            "update_servers",
        ])
        .unwrap();
        let Command::Admin(a) = cli.command else {
            panic!("not admin: {cli:?}")
        };
        let AdminCommand::Auth(AuthCommand::Rotate(r)) = a.command else {
            panic!("not auth rotate")
        };
        assert_eq!(r.kind, RotateType::Host);
        assert!(r.manual);
        assert_eq!(r.phase, Some(RotatePhase::UpdateServers));
    }
}
