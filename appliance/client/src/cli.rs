//! The command line of the user's client and the administrator's tool: their subcommands, flags
//! and help text, and nothing else. The binary's `cli` puts them under `hop` beside `hop start`.
//!
//! Parsing only: the modules named in each command's handler do the work.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

/// `hop bench ssh|db|app TARGET`: the workload, then the load flags shared by all three.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub workload: BenchWorkload,
    /// Operations per second, scheduled at fixed intervals (open loop); each latency counts from
    /// the operation's scheduled start, so a slow cluster shows as latency (no coordinated
    /// omission).
    #[arg(long, global = true, default_value_t = 10.0)]
    pub rate: f64,
    /// How long to schedule operations for: 30s, 2m, 500ms.
    #[arg(long, global = true, default_value = "10s", value_parser = hop_config::parse_duration)]
    pub duration: std::time::Duration,
    /// The most operations in flight at once (and, for `db`, the number of connections).
    #[arg(long, global = true, default_value_t = 16)]
    pub concurrency: usize,
    /// An operation not finished this long after its scheduled start is an error.
    #[arg(long, global = true, default_value = "30s", value_parser = hop_config::parse_duration)]
    pub timeout: std::time::Duration,
    /// The report: text for people, JSON for scripts.
    #[arg(long, global = true, value_enum, default_value_t = BenchFormat::Text)]
    pub format: BenchFormat,
}

#[derive(Debug, Subcommand)]
pub enum BenchWorkload {
    /// Each operation is a full SSH session through the proxy (handshake, certificate login,
    /// COMMAND, exit status), with Hop's own SSH client.
    Ssh {
        /// LOGIN@NODE.
        target: String,
        /// The command each session runs.
        #[arg(long, default_value = "true")]
        command: String,
        /// Open a terminal (PTY) and a shell, type COMMAND and `exit`, as a person would.
        #[arg(long)]
        interactive: bool,
    },
    /// Each operation is a query on one of --concurrency PostgreSQL connections (after
    /// `hop db login NAME`). MySQL is not supported yet.
    Db {
        /// The database (as `hop db login` named it).
        name: String,
        /// The SQL each operation runs (simple query protocol).
        #[arg(long, default_value = "SELECT 1")]
        query: String,
        /// Open a new connection for every operation (TLS, start-up, query, terminate).
        #[arg(long)]
        new_connections: bool,
    },
    /// Each operation opens a TCP session to the application through the proxy, writes a
    /// payload and reads the same number of bytes back (an echo service).
    App {
        /// The application (`hop apps ls`).
        name: String,
        /// Only open and close the session: send nothing, read nothing.
        #[arg(long)]
        connect_only: bool,
        /// Bytes written (and expected back) per operation.
        #[arg(long, default_value_t = 64)]
        payload_size: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JoinMode {
    Observer,
    Peer,
    /// Watch, and count toward the owner's moderation requirement (`require_session_join`).
    Moderator,
}

#[derive(Debug, Subcommand)]
pub enum MfaCommand {
    /// List your second-factor devices: security keys and one-time-code apps.
    Ls {
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// Register a security key (FIDO2 over USB). Needs your password and a tap on a key you
    /// already registered (or --otp when you have none yet).
    Add {
        /// What to call the key.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        proof: MfaProof,
    },
    /// Remove a security key or a one-time-code device (by id or name). Needs your password and a
    /// tap on one of your keys (or --otp); the last device is kept while the cluster requires a
    /// second factor.
    Rm {
        device: String,
        #[command(flatten)]
        proof: MfaProof,
    },
    /// Prepare one SSH session under per-session MFA: tap a key for LOGIN@NODE.CLUSTER and save
    /// one-minute certificates for it. What `hop config`'s `Match exec` line runs before
    /// OpenSSH connects; exits 0 when the certificates are ready, 1 when no role asks for a tap.
    Session {
        /// LOGIN@NODE.CLUSTER, as OpenSSH names the destination.
        target: String,
    },
}

/// What proves an account change: the password and a fresh second factor.
#[derive(Debug, Args, Clone)]
pub struct MfaProof {
    /// Read the password from the first line of standard input instead of prompting.
    #[arg(long)]
    pub password_stdin: bool,
    /// Prove the change with this one-time code instead of a security key.
    #[arg(long)]
    pub otp: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// List live sessions (SSH, database, application), oldest first; ended ones stay listed
    /// a few minutes as terminated.
    Ls {
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
}

#[derive(Debug, Subcommand)]
pub enum RecordingsCommand {
    /// List recorded sessions, oldest first.
    Ls {
        /// Sessions started at or after this time: RFC 3339 (2026-11-21T10:00:00Z) or an age
        /// (90m, 24h, 7d).
        #[arg(long)]
        since: Option<String>,
        /// Only this user's sessions.
        #[arg(long)]
        user: Option<String>,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// Export a recording: asciicast v2 (for asciinema) or JSON lines (every event).
    Export {
        session_id: String,
        #[arg(long, value_enum, default_value_t = RecordingExportFormat::Asciicast)]
        format: RecordingExportFormat,
        /// Write to this file instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Asciicast: also export what the user typed ("i" events).
        #[arg(long)]
        include_input: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RecordingExportFormat {
    Asciicast,
    Json,
}

#[derive(Debug, Args)]
pub struct PlayArgs {
    /// The session id (`hop recordings ls`).
    pub session_id: String,
    /// Playback speed factor: 2 plays twice as fast, 0.5 at half speed.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Shorten pauses longer than 2 seconds to 2 seconds.
    #[arg(long)]
    pub skip_idle: bool,
    /// `pty`: replay with the recorded timing (on a terminal; when standard output is not a
    /// terminal the output is written at once); `raw`: write the session's output at once.
    #[arg(long, value_enum, default_value_t = PlayFormat::Pty)]
    pub format: PlayFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlayFormat {
    Pty,
    Raw,
}

#[derive(Debug, Args)]
pub struct SshArgs {
    /// OS login on the node (else LOGIN@ in the destination).
    #[arg(short = 'l', long = "login")]
    pub login: Option<String>,
    /// Port of the node's SSH service (nodes behind tunnels ignore it).
    #[arg(short = 'p', long)]
    pub port: Option<u16>,
    /// Local port forwarding, [bind:]port:host:hostport (repeatable).
    #[arg(short = 'L')]
    pub local: Vec<String>,
    /// Remote port forwarding, [bind:]port:host:hostport (repeatable).
    #[arg(short = 'R')]
    pub remote: Vec<String>,
    /// Forward the SSH agent (if your roles allow it).
    #[arg(short = 'A')]
    pub forward_agent: bool,
    /// Force a terminal.
    #[arg(short = 't')]
    pub tty: bool,
    /// Never allocate a terminal.
    #[arg(short = 'T')]
    pub no_tty: bool,
    /// Run no command (forwarding only).
    #[arg(short = 'N')]
    pub no_command: bool,
    /// An OpenSSH client option, as `ssh -o` takes it (repeatable); Hop's own settings for
    /// the proxy, the host key and the certificate come first and are not overridden.
    #[arg(short = 'o', value_name = "OPTION")]
    pub options: Vec<String>,
    /// [LOGIN@]NODE, or [LOGIN@]k=v,k2=v2 to run on every node with those labels.
    pub destination: String,
    /// The command to run (a shell when empty).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ScpArgs {
    /// Copy directories recursively.
    #[arg(short = 'r')]
    pub recursive: bool,
    /// Preserve modes and times.
    #[arg(short = 'p')]
    pub preserve: bool,
    /// No progress meter.
    #[arg(short = 'q')]
    pub quiet: bool,
    /// Port of the node's SSH service.
    #[arg(short = 'P')]
    pub port: Option<u16>,
    /// Sources then destination; remote paths as LOGIN@NODE:PATH.
    #[arg(required = true, num_args = 2..)]
    pub paths: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum AppsCommand {
    /// List the applications your roles allow.
    Ls(Output),
    /// Get a certificate for one application (for `hop proxy app`, curl and other clients).
    Login {
        /// The application's name (see `hop apps ls`).
        name: String,
        /// How long the certificate lives [default: as long as your login and roles allow],
        /// e.g. 30m, 2h.
        #[arg(long, value_parser = hop_config::parse_duration)]
        ttl: Option<std::time::Duration>,
    },
    /// Remove an application certificate (all of them without NAME).
    Logout { name: Option<String> },
    /// Print how to reach an application with its certificate: address, TLS files, a curl line.
    Config {
        /// The application [default: the only one you are logged in to].
        name: Option<String>,
        #[arg(long, value_enum, default_value_t = AppConfigFormat::Text)]
        format: AppConfigFormat,
    },
}

#[derive(Debug, Subcommand)]
pub enum KubeCommand {
    /// List the Kubernetes clusters your roles allow, with the Kubernetes users and groups you
    /// would act as.
    Ls(Output),
    /// Get a certificate for one Kubernetes cluster and make it kubectl's current context (in
    /// $KUBECONFIG's first file, else ~/.kube/config); kubectl then works as is.
    Login {
        /// The cluster's name (see `hop kube ls`).
        name: String,
        /// How long the first certificate lives [default: as long as your login and roles
        /// allow], e.g. 30m; kubectl gets a new one when it runs out.
        #[arg(long, value_parser = hop_config::parse_duration)]
        ttl: Option<std::time::Duration>,
    },
    /// Remove a Kubernetes login: its kubeconfig entries and certificate (all of them without
    /// NAME).
    Logout { name: Option<String> },
    /// kubectl's credential plugin (the kubeconfig runs it): print an ExecCredential with the
    /// cluster's certificate, renewed when it has under a minute left.
    Credentials {
        /// The Kubernetes cluster.
        #[arg(long)]
        cluster: String,
        /// The proxy of the login to use (HOST:PORT, as `hop login --proxy` named it) [default:
        /// the current login].
        #[arg(long)]
        proxy: Option<String>,
    },
    /// Run a command in a pod with kubectl exec, on the context `hop kube login` wrote.
    Exec(KubeExecArgs),
}

#[derive(Debug, Args, Clone)]
pub struct KubeExecArgs {
    /// The pod.
    pub pod: String,
    /// The container [default: the pod's default one].
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// The pod's namespace [default: the context's].
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Pass standard input to the command.
    #[arg(short = 'i', long)]
    pub stdin: bool,
    /// Allocate a terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// The Kubernetes cluster [default: the only one you are logged in to, else the current
    /// context's].
    #[arg(long)]
    pub kube_cluster: Option<String>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AppConfigFormat {
    /// Everything, for people.
    Text,
    /// Everything, as JSON.
    Json,
    /// The application's https address.
    Uri,
    /// The path of the CA certificates that sign the proxy's certificate.
    Ca,
    /// The path of the application certificate.
    Cert,
    /// The path of its private key.
    Key,
    /// A curl command line.
    Curl,
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// List the databases your roles allow, with the users and names you may use.
    Ls(Output),
    /// Get a certificate for one database (the default user and database for `hop db connect`).
    Login(DbLoginArgs),
    /// Remove a database certificate (all of them without NAME).
    Logout { name: Option<String> },
    /// Run psql against a database through the proxy (logs in to it first if needed).
    Connect {
        #[command(flatten)]
        login: DbLoginArgs,
        /// Arguments for psql, after `--`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Print how to connect a GUI or another client: host, port, TLS files, user, database.
    Config {
        name: Option<String>,
        #[arg(long, value_enum, default_value_t = DbConfigFormat::Text)]
        format: DbConfigFormat,
    },
    /// Print shell `export` lines (PGHOST, PGSSLCERT, …) for a database.
    Env { name: Option<String> },
}

#[derive(Debug, Args, Clone)]
pub struct DbLoginArgs {
    /// The database's name (see `hop db ls`).
    pub name: String,
    /// Database user [default: the only one your roles allow].
    #[arg(long)]
    pub db_user: Option<String>,
    /// Database name [default: the only one your roles allow, else the user's own].
    #[arg(long)]
    pub db_name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DbConfigFormat {
    Text,
    Json,
    /// A psql command line.
    Cmd,
    /// A libpq connection string.
    Uri,
}

#[derive(Debug, Subcommand)]
pub enum ProxyCommand {
    /// Carry standard input and output to a node's SSH server through the proxy (OpenSSH's
    /// ProxyCommand, as `hop config` writes it).
    Ssh {
        /// LOGIN@NODE[:PORT]
        target: String,
    },
    /// Listen locally (plain, on loopback) and carry each PostgreSQL connection to a database
    /// through the proxy with your database certificate, for clients that cannot present one.
    Db {
        /// The database's name; `hop db login NAME` first.
        name: String,
        /// Accepted for Teleport's `tsh proxy db --tunnel`: this listener always authenticates to
        /// the proxy with your database certificate, so local clients need none.
        #[arg(long)]
        tunnel: bool,
        /// Local port [default: a free one, printed].
        #[arg(long, short, default_value_t = 0)]
        port: u16,
        /// Local address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        bind: std::net::IpAddr,
    },
    /// Listen locally (plain, on loopback) and carry each connection to an application through
    /// the proxy: for an HTTP application with its certificate (`hop apps login NAME`, done for
    /// you if needed), so local tools need none; for a TCP application, byte for byte.
    App {
        /// The application's name (see `hop apps ls`).
        name: String,
        /// Local port [default: a free one, printed].
        #[arg(long, short, default_value_t = 0)]
        port: u16,
        /// Local address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        bind: std::net::IpAddr,
    },
}

#[derive(Debug, Args, Clone)]
pub struct ProxyTrust {
    /// Proxy address, HOST:PORT.
    #[arg(long, env = "HOP_PROXY")]
    pub proxy: String,
    /// Trust the proxy whose certificate chains to the CA with this key pin (printed by `hop start`
    /// and `hop admin status`).
    #[arg(long, env = "HOP_CA_PIN")]
    pub ca_pin: Option<String>,
    /// Do not verify the proxy's certificate. Only for tests: anyone on the path can impersonate it.
    #[arg(long)]
    pub insecure: bool,
}

#[derive(Debug, Args)]
pub struct SignupArgs {
    /// The invite token from `hop admin users add` (or the whole invite URL).
    pub token: String,
    #[command(flatten)]
    pub trust: ProxyTrust,
    /// Read the new password from the first line of standard input instead of prompting.
    #[arg(long)]
    pub password_stdin: bool,
    /// Non-interactive TOTP enrollment: write the new base32 TOTP secret to this file (mode 0600)
    /// instead of showing a QR code and asking for a code.
    #[arg(long)]
    pub totp_secret_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    #[command(flatten)]
    pub trust: ProxyTrust,
    /// User name [default: $USER].
    #[arg(long, short)]
    pub user: Option<String>,
    /// Read the password from the first line of standard input instead of prompting.
    #[arg(long)]
    pub password_stdin: bool,
    /// The current one-time code from your authenticator app.
    #[arg(long)]
    pub otp: Option<String>,
    /// Requested certificate lifetime (e.g. 1h); capped by your roles' max_session_ttl.
    #[arg(long)]
    pub ttl: Option<String>,
    /// Add the roles of this approved access request (`hop request ls`) to your login, until
    /// the request expires. Uses your current login when it is valid, else logs in first.
    #[arg(long, conflicts_with = "auth")]
    pub request_id: Option<String>,
    /// Log in through this SSO connector (`kind: oidc`, `github` or `saml`) in a browser instead of
    /// a password (`local`: the password login; `passwordless`: a passkey on your security key,
    /// no password).
    #[arg(long, value_name = "NAME")]
    pub auth: Option<String>,
    /// With --auth: `none` prints the login URL instead of opening a browser.
    #[arg(long, default_value = "default", value_parser = ["default", "none"])]
    pub browser: String,
    /// With --auth: the base URL the browser is sent back to instead of this machine's
    /// listener (http://127.0.0.1:PORT), for a browser on another machine that forwards to
    /// it. Auth allows only loopback or an https host the connector's
    /// client_redirect_settings list.
    #[arg(long, requires = "auth", value_name = "URL")]
    pub callback: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum RequestCommand {
    /// Ask for roles your roles' `allow.request` names; reviewers then approve or deny.
    Create {
        /// Roles to request, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        roles: Vec<String>,
        /// Why (required when a role's `allow.request.reason.mode` is `required`).
        #[arg(long, default_value = "")]
        reason: String,
        /// Shorter access than the roles allow, e.g. 30m.
        #[arg(long, value_parser = hop_config::parse_duration)]
        max_duration: Option<std::time::Duration>,
    },
    /// Your requests and those you may review, newest first.
    Ls(Output),
    /// One request with its reviews.
    Show {
        id: String,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// Approve or deny someone else's request (your roles' `allow.review_requests`).
    Review {
        id: String,
        #[arg(long, conflicts_with = "deny", required_unless_present = "deny")]
        approve: bool,
        #[arg(long)]
        deny: bool,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Go back to your plain login: new certificates without any request's roles.
    Drop,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
    Yaml,
}

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Data directory of the appliance on this host; `hop admin` talks to it over the admin
    /// socket inside it [default: ./hop-data].
    #[arg(short = 'd', long, global = true, env = "HOP_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Administer a remote cluster through its proxy (HOST:PORT) with the identity of your current
    /// `hop login` (which needs a role such as `editor`).
    #[arg(long, global = true)]
    pub auth_server: Option<String>,
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// `--format` of commands that print listings or results.
#[derive(Debug, Args, Clone, Copy)]
pub struct Output {
    /// Output format: a table or text for people, json or yaml for scripts.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Cluster name, CA fingerprints and the CA pin.
    Status(Output),
    /// Agents connected to the proxy now.
    #[command(subcommand)]
    Inventory(InventoryCommand),
    /// SSH nodes: agents connected now, and registered agentless OpenSSH nodes.
    #[command(subcommand)]
    Nodes(NodesCommand),
    /// Manage users.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Manage join tokens for agents.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Manage bots: machine identities that renew short-lived certificates (`hop bot start`).
    #[command(subcommand)]
    Bots(BotsCommand),
    /// Lock a user, role, login, agent, access request or bot: its new sessions and API calls
    /// are refused and its live sessions end within seconds, on the proxy and on the agents.
    Lock(LockArgs),
    /// Locks: `hop admin locks ls`; remove one with `hop admin rm lock/ID`.
    #[command(subcommand)]
    Locks(LocksCommand),
    /// Create resources from a YAML file (roles, users, tokens, auth preference).
    Create {
        /// File with one or more YAML documents; `-` reads standard input.
        #[arg(short, long)]
        file: PathBuf,
        /// Overwrite resources that exist.
        #[arg(long)]
        force: bool,
    },
    /// Show resources: `hop admin get role`, `hop admin get role/access`, `hop admin get users`.
    Get {
        /// KIND or KIND/NAME.
        resource: String,
        #[command(flatten)]
        out: Output,
    },
    /// Delete a resource: `hop admin rm role/dev`.
    Rm {
        /// KIND/NAME.
        resource: String,
    },
    /// Certificate authority operations.
    #[command(subcommand)]
    Auth(AuthCommand),
    /// The audit log: search, verify the hash chains, export.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Load tests against a proxy (they do not use the admin socket).
    #[command(subcommand)]
    Loadtest(LoadtestCommand),
    /// Back up the cluster state — resources, users with their password hashes, tokens, the
    /// certificate authorities WITH THEIR PRIVATE KEYS — as of one revision: `hop admin backup
    /// -o FILE` (mode 0600) or `hop admin backup > FILE`. Audit events and session recordings
    /// are not included. Sealed with a passphrase (argon2id, AES-256-GCM) when one is given.
    Backup(BackupArgs),
    /// Restore a backup into a new data directory or an empty PostgreSQL database, with no
    /// appliance running on it: `hop admin restore FILE --config hop.yaml` (the store that
    /// config's `hop.storage` names) or `hop admin restore FILE --data-dir DIR`. Then `hop start`.
    Restore(RestoreArgs),
}

/// `hop admin backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Write to FILE (created with mode 0600; an existing file is refused) instead of standard
    /// output, which must not be a terminal.
    #[arg(short = 'o', long = "out", value_name = "FILE")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub passphrase: PassphraseArgs,
    /// Read the store directly instead of asking the running appliance (which must be stopped
    /// when it is the redb in --data-dir): the store of --config's `hop.storage`, or the data
    /// directory's.
    #[arg(long)]
    pub offline: bool,
    /// With --offline: the appliance's config file (its `hop.data_dir` and `hop.storage`).
    #[arg(short = 'c', long, requires = "offline")]
    pub config: Option<PathBuf>,
}

/// `hop admin restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup file (`-` reads standard input).
    pub file: PathBuf,
    #[command(flatten)]
    pub passphrase: PassphraseArgs,
    /// The config file of the appliance to restore into: its `hop.storage` (PostgreSQL) or its
    /// `hop.data_dir` (redb). Without it, the redb in --data-dir.
    #[arg(short = 'c', long)]
    pub config: Option<PathBuf>,
}

/// Where a backup's passphrase comes from.
#[derive(Debug, Args)]
pub struct PassphraseArgs {
    /// Read the passphrase from the first line of FILE.
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// Ask for a passphrase on the terminal (when neither --passphrase-file nor
    /// HOP_BACKUP_PASSPHRASE gives one).
    #[arg(long)]
    pub encrypt: bool,
}

#[derive(Debug, Subcommand)]
pub enum LoadtestCommand {
    /// Run N simulated agents in this process, each joined with its own host certificate and
    /// holding its own tunnel (TLS control connection, hello with one app, heartbeats, the real
    /// agents' reconnect backoff), to measure what a proxy holds. Simulated agents keep no data
    /// connections, so their apps cannot be used. With the global --data-dir their identities are
    /// cached under DIR/loadtest-agents/ and a rerun does not join again.
    Agents(LoadtestAgentsArgs),
}

#[derive(Debug, Args)]
pub struct LoadtestAgentsArgs {
    /// Number of simulated agents.
    #[arg(long)]
    pub count: usize,
    #[command(flatten)]
    pub trust: ProxyTrust,
    /// Join token of type app (`hop admin tokens add --type app`; node with --nodes), with enough uses for every
    /// agent not yet cached; needed only for agents without an identity. Joins count against the
    /// cluster's per-IP login limit (auth_service.login.attempts_per_ip_per_minute).
    #[arg(long, env = "HOP_JOIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Stop after this long (e.g. 60s, 10m) [default: run until Ctrl-C].
    #[arg(long)]
    pub duration: Option<String>,
    /// Heartbeat every this long instead of the interval the proxy asks for (keep it under three
    /// times the proxy's, or the proxy drops the agents).
    #[arg(long)]
    pub heartbeat: Option<String>,
    /// Joins in flight at once.
    #[arg(long, default_value_t = 16)]
    pub join_concurrency: usize,
    /// Write every agent's events to this file as JSON lines: {"t_ms": unix ms, "agent": index,
    /// "event": "connected" | "disconnected" | "attempt_failed" | "gave_up", ...}.
    #[arg(long)]
    pub report_reconnects: Option<PathBuf>,
    /// Simulate node agents instead of app agents, each announcing this many SSH nodes (for
    /// `hop ls` at scale; the token must then be of type node). Identities are cached under
    /// DIR/loadtest-nodes/.
    #[arg(long, default_value_t = 0)]
    pub nodes: usize,
    /// Number the simulated agents from this one in their names (loadtest-NNNNN), so that load
    /// tests run side by side against one cluster claim distinct node names.
    #[arg(long, default_value_t = 0)]
    pub first_index: usize,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Find events: newest first, one page at a time (continue with --cursor).
    Search {
        /// Events at or after this time: RFC 3339 (2026-11-21T10:00:00Z) or an age (90m, 24h, 7d).
        #[arg(long)]
        since: Option<String>,
        /// Events before this time (same forms).
        #[arg(long)]
        until: Option<String>,
        /// Event types, comma separated (user.login,app.session.start).
        #[arg(long = "type", value_delimiter = ',')]
        types: Vec<String>,
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        session: Option<String>,
        /// Case-insensitive text in the event, user, login, server, error or string fields.
        #[arg(long)]
        text: Option<String>,
        /// Oldest first instead of newest first.
        #[arg(long)]
        oldest_first: bool,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Continue after a previous page.
        #[arg(long)]
        cursor: Option<String>,
        #[command(flatten)]
        out: Output,
    },
    /// Re-derive every hash chain and report the first broken link (exit status 2 if broken).
    Verify {
        #[arg(long)]
        since: Option<String>,
    },
    /// Write events as JSON lines, oldest first: `hop admin audit export --since 7d > events.jsonl`.
    Export {
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum NodesCommand {
    /// List SSH nodes: connected node agents and registered OpenSSH nodes.
    Ls(Output),
    /// Register an agentless node running stock OpenSSH (its sshd trusts the user CA and presents
    /// a host certificate from `hop admin auth sign --format openssh`).
    Add {
        /// Required: the node runs OpenSSH, not the Hop agent.
        #[arg(long)]
        openssh: bool,
        /// The node's name (`hop ssh root@NAME`).
        #[arg(long)]
        name: String,
        /// HOST:PORT of its sshd, as the proxy reaches it.
        #[arg(long)]
        addr: String,
        /// Labels, e.g. env=prod,team=web.
        #[arg(long)]
        labels: Option<String>,
    },
    /// Remove a registered OpenSSH node.
    Rm { name: String },
}

#[derive(Debug, Subcommand)]
pub enum InventoryCommand {
    /// List connected agents, their services and applications.
    Ls(Output),
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create a user and print a one-time sign-up link.
    Add {
        name: String,
        /// Roles, comma separated (e.g. access,editor).
        #[arg(long, value_delimiter = ',', required = true)]
        roles: Vec<String>,
        /// OS logins the user may use (sets the `logins` trait).
        #[arg(long, value_delimiter = ',')]
        logins: Vec<String>,
        /// Other traits, NAME=VALUE (repeatable), e.g. --trait db_users=alice.
        #[arg(long = "trait")]
        traits: Vec<String>,
        #[command(flatten)]
        out: Output,
    },
    /// List users.
    Ls(Output),
    /// Delete a user.
    Rm { name: String },
    /// Clear a user's password and second factor and print a new sign-up link.
    Reset {
        name: String,
        #[command(flatten)]
        out: Output,
    },
    /// Lift a lock (an administrator's, or one placed after too many failed logins).
    Unlock { name: String },
    /// Lock a user out now: logins, certificates and new sessions are refused (proxy and nodes).
    Lock {
        name: String,
        /// How long, e.g. 2h [default: until unlocked].
        #[arg(long)]
        ttl: Option<String>,
        /// Why (shown in refusals and the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
}

/// What `hop admin lock` locks: exactly one target.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).multiple(false)))]
pub struct LockArgs {
    /// A user (whether or not it exists yet).
    #[arg(long, group = "target")]
    pub user: Option<String>,
    /// Everyone holding this role.
    #[arg(long, group = "target")]
    pub role: Option<String>,
    /// An OS login, on every node.
    #[arg(long, group = "target")]
    pub login: Option<String>,
    /// An agent, by host id: it is disconnected, its renewals are refused.
    #[arg(long, group = "target")]
    pub server_id: Option<String>,
    /// An access request.
    #[arg(long, group = "target")]
    pub access_request: Option<String>,
    /// A bot (the user bot-NAME).
    #[arg(long, group = "target")]
    pub bot: Option<String>,
    /// How long, e.g. 2h [default: until removed].
    #[arg(long)]
    pub ttl: Option<String>,
    /// Shown to whoever the lock refuses, and in the audit log.
    #[arg(long)]
    pub message: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum LocksCommand {
    /// List locks, with their targets and expiry.
    Ls(Output),
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create a join token for agents.
    Add {
        /// What the token may join as, comma separated: node, db, app, kube, windows_desktop;
        /// or proxy, which must be alone.
        #[arg(long = "type", value_delimiter = ',', required = true)]
        roles: Vec<String>,
        /// Lifetime of the token.
        #[arg(long, default_value = "30m")]
        ttl: String,
        /// Use this secret instead of a random 128-bit one: at least 16 characters and about
        /// 80 bits (no runs or repeats), e.g. from `openssl rand -hex 16`.
        #[arg(long)]
        value: Option<String>,
        /// Number of joins allowed [default: any until it expires].
        #[arg(long)]
        uses: Option<u32>,
        #[command(flatten)]
        out: Output,
    },
    /// List join tokens (ids, never secrets).
    Ls(Output),
    /// Delete a join token by its id (`hop admin tokens ls`).
    Rm { id: String },
}

#[derive(Debug, Subcommand)]
pub enum BotsCommand {
    /// Add a bot (the user `bot-NAME`) and print its one-time join token.
    Add {
        /// The bot's name.
        name: String,
        /// The bot's roles, comma separated.
        #[arg(long, value_delimiter = ',', required = true)]
        roles: Vec<String>,
        /// The bot's logins trait (`{{internal.logins}}`), comma separated.
        #[arg(long, value_delimiter = ',')]
        logins: Vec<String>,
        /// Lifetime of the join token.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// How many times the bot may recover with its bound key after its certificates
        /// expired [default: 1]; 0 turns recovery off.
        #[arg(long)]
        recoveries: Option<u32>,
        #[command(flatten)]
        out: Output,
    },
    /// List bots: roles, generation, last renewal, instances, recoveries.
    Ls(Output),
    /// Change a bot's recovery limit (raise it after the bot used it up).
    Update {
        name: String,
        /// The new limit of recoveries with the bound key.
        #[arg(long)]
        recoveries: u32,
    },
    /// Remove a bot: its certificates are refused from then on.
    Rm { name: String },
}

/// `hop bot start`: the bot's side (Teleport's tbot).
#[derive(Debug, Subcommand)]
pub enum BotCommand {
    /// Join (or renew) and keep the outputs fresh; with --oneshot, once.
    Start(BotStartArgs),
}

#[derive(Debug, Args, Clone, Default)]
pub struct BotStartArgs {
    /// A YAML configuration in tbot's v2 shape; flags override it.
    #[arg(short, long)]
    pub config: Option<PathBuf>,
    /// Proxy address, HOST:PORT.
    #[arg(long, env = "HOP_PROXY")]
    pub proxy: Option<String>,
    /// Trust the proxy whose certificate chains to the CA with this key pin.
    #[arg(long, env = "HOP_CA_PIN")]
    pub ca_pin: Option<String>,
    /// Do not verify the proxy's certificate. Only for tests.
    #[arg(long)]
    pub insecure: bool,
    /// The one-time join token from `hop admin bots add` (used only when the bot has no identity).
    #[arg(long, env = "HOP_BOT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Where the bot keeps its own identity (0700).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// An identity output in this directory (ssh_config, known_hosts, keys).
    #[arg(long)]
    pub destination_dir: Option<PathBuf>,
    /// Join or renew once, write the outputs, and exit.
    #[arg(long)]
    pub oneshot: bool,
    /// Lifetime of the certificates (e.g. 1h; at least 1m, at most 24h).
    #[arg(long)]
    pub certificate_ttl: Option<String>,
    /// Renew this often instead of at one third of the lifetime remaining.
    #[arg(long)]
    pub renewal_interval: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Export a CA's public part so that other software trusts Hop:
    /// user → sshd TrustedUserCAKeys, host → known_hosts @cert-authority line, db → PEM,
    /// spiffe → the SPIFFE trust bundle (PEM).
    Export {
        #[arg(long = "type", value_enum)]
        kind: ExportKind,
        #[arg(long, value_enum)]
        format: Option<ExportFormat>,
    },
    /// Rotate certificate authorities, as `tctl auth rotate`. Without --manual: an automatic
    /// rotation that starts now and walks init → update_clients → update_servers → standby over
    /// the grace period. With --manual --phase P: one step (init, update_clients,
    /// update_servers, standby, or rollback before standby). Agents, bots and clients follow on
    /// their own; `hop admin status` shows each CA's phase.
    Rotate(RotateArgs),
    /// Issue a certificate from a cluster CA for software outside Hop.
    /// `--format db`: a database server's key, certificate (db CA) and the db CA that signs Hop's
    /// client certificates: OUT.key, OUT.crt, OUT.cas (for ssl_key_file, ssl_cert_file,
    /// ssl_ca_file in postgresql.conf). `--format openssh`: an agentless node's host key and
    /// certificate and the user CA keys: OUT, OUT-cert.pub, OUT-user-ca.pub.
    Sign {
        /// Host names or addresses of the server, comma separated; the first is the common name.
        #[arg(long)]
        host: String,
        #[arg(long, value_enum)]
        format: SignFormat,
        /// Path prefix of the files to write.
        #[arg(long, short)]
        out: PathBuf,
        /// Certificate lifetime, e.g. 2190h [default: 90 days].
        #[arg(long)]
        ttl: Option<String>,
    },
}

/// `hop admin auth rotate`.
#[derive(Debug, Clone, Args)]
pub struct RotateArgs {
    /// Which CA to rotate (required: `all` also rotates the db, openssh and spiffe CAs, whose
    /// trust lives in databases, agentless sshd and workloads outside Hop).
    #[arg(long = "type", value_enum)]
    pub kind: RotateType,
    /// Move one phase at a time (with --phase) instead of an automatic rotation.
    #[arg(long)]
    pub manual: bool,
    /// The phase to move to (with --manual).
    #[arg(long, value_enum)]
    pub phase: Option<RotatePhase>,
    /// How long an automatic rotation takes from init to standby, a third per phase, e.g. 30h
    /// or 10m [default: 30h; at least 30s]; with --manual, the grace period recorded for it.
    #[arg(long)]
    pub grace_period: Option<String>,
}

/// A CA `hop admin auth rotate --type` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RotateType {
    User,
    Host,
    Db,
    Jwt,
    Openssh,
    Spiffe,
    All,
}

impl RotateType {
    /// The name the Auth API takes.
    pub fn as_str(self) -> &'static str {
        match self {
            RotateType::User => "user",
            RotateType::Host => "host",
            RotateType::Db => "db",
            RotateType::Jwt => "jwt",
            RotateType::Openssh => "openssh",
            RotateType::Spiffe => "spiffe",
            RotateType::All => "all",
        }
    }
}

/// A rotation phase `hop admin auth rotate --manual --phase` moves to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RotatePhase {
    /// A new key is trusted everywhere; the old one still signs.
    Init,
    /// The new key signs; clients and bots renew onto it.
    #[value(name = "update_clients")]
    UpdateClients,
    /// Servers (agents) take certificates from the new key.
    #[value(name = "update_servers")]
    UpdateServers,
    /// The old key is dropped; what it signed is refused.
    Standby,
    /// The old key signs again (from any phase before standby).
    Rollback,
}

impl RotatePhase {
    /// The name the Auth API takes.
    pub fn as_str(self) -> &'static str {
        match self {
            RotatePhase::Init => "init",
            RotatePhase::UpdateClients => "update_clients",
            RotatePhase::UpdateServers => "update_servers",
            RotatePhase::Standby => "standby",
            RotatePhase::Rollback => "rollback",
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SignFormat {
    /// Database server (PostgreSQL, MySQL): key, certificate and CA in PEM.
    Db,
    /// An OpenSSH node's host key, host certificate and the user CA keys: OUT, OUT-cert.pub,
    /// OUT-user-ca.pub (sshd's HostKey, HostCertificate, TrustedUserCAKeys).
    Openssh,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportKind {
    User,
    Host,
    Db,
    Jwt,
    /// The SPIFFE trust bundle (PEM): the CA of the cluster's trust domain.
    Spiffe,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    Openssh,
    Pem,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// `hop admin auth …` as the binary nests it.
    #[derive(Debug, Parser)]
    struct Auth {
        #[command(subcommand)]
        command: AuthCommand,
    }

    fn rotate(args: &[&str]) -> Result<RotateArgs, clap::Error> {
        let argv = std::iter::once("auth").chain(args.iter().copied());
        match Auth::try_parse_from(argv)?.command {
            AuthCommand::Rotate(a) => Ok(a),
            other => panic!("not rotate: {other:?}"),
        }
    }

    #[test]
    fn auth_rotate_parses_as_tctl_auth_rotate() {
        // The type is required: `all` also rotates CAs whose trust lives outside Hop.
        assert!(rotate(&["rotate"]).is_err());
        let a = rotate(&["rotate", "--type", "all"]).unwrap();
        assert_eq!(a.kind, RotateType::All);
        assert!(!a.manual && a.phase.is_none() && a.grace_period.is_none());
        let a = rotate(&["rotate", "--type", "host", "--grace-period", "30h"]).unwrap();
        assert_eq!(a.kind, RotateType::Host);
        assert_eq!(a.grace_period.as_deref(), Some("30h"));
        for (flag, phase) in [
            ("init", RotatePhase::Init),
            ("update_clients", RotatePhase::UpdateClients),
            ("update_servers", RotatePhase::UpdateServers),
            ("standby", RotatePhase::Standby),
            ("rollback", RotatePhase::Rollback),
        ] {
            let a = rotate(&["rotate", "--type", "user", "--manual", "--phase", flag]).unwrap();
            assert!(a.manual);
            assert_eq!(a.phase, Some(phase));
            assert_eq!(phase.as_str(), flag);
        }
        for t in ["user", "host", "db", "jwt", "openssh", "spiffe", "all"] {
            assert_eq!(rotate(&["rotate", "--type", t]).unwrap().kind.as_str(), t);
        }
        assert!(rotate(&["rotate", "--type", "tls"]).is_err());
        assert!(rotate(&["rotate", "--manual", "--phase", "update-clients"]).is_err());
        // --phase without --manual parses; `rotate_request` refuses it naming the fix.
        assert!(rotate(&["rotate", "--type", "host", "--phase", "init"]).is_ok());
    }
}
