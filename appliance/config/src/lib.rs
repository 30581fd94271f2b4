//! Operator configuration: the `hop.yaml` file, its defaults, and its validation.
//!
//! This crate owns the shape of the configuration file and the rules that make a file valid. It
//! parses with serde-saphyr (panic-free, with line numbers in its errors) into plain
//! `serde(default)` structs that reject unknown keys, then `validate()` checks what types cannot.
//! It never opens sockets or files other than the config file itself, and never imports the
//! services it configures: what an agent publishes is described here (`services`) and served
//! there.

#![forbid(unsafe_code)]

pub mod services;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Default port of the proxy: every protocol on one TLS port (443 in production).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:3080";
/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "hop-data";

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {field}: {message}")]
    Invalid {
        path: PathBuf,
        field: &'static str,
        message: String,
    },
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// File format version; only `v1` exists.
    pub version: Option<String>,
    pub hop: ProcessConfig,
    pub auth_service: AuthServiceConfig,
    pub proxy_service: ProxyServiceConfig,
    pub app_service: AppServiceConfig,
    pub ssh_service: SshServiceConfig,
    pub db_service: DbServiceConfig,
}

/// Databases a `db` agent publishes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DbServiceConfig {
    pub databases: Vec<DbConfig>,
    /// Which `db` resources (`hop admin create -f`) this agent serves, by labels:
    /// `[{labels: {'*': '*'}}]` for all of them.
    pub resources: Vec<crate::services::Selector>,
    /// What `db.query` events keep.
    pub audit: DbAuditConfig,
    /// Idle data connections the agent keeps parked at the proxy.
    pub tunnel_pool_size: Option<usize>,
}

/// `db_service.audit`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DbAuditConfig {
    /// Statement text kept per event; longer statements are cut and marked `truncated`.
    pub max_statement_bytes: usize,
    /// Record the parameters bound to extended-protocol statements (PostgreSQL).
    pub parameters: bool,
}

impl Default for DbAuditConfig {
    fn default() -> Self {
        Self {
            max_statement_bytes: crate::services::DEFAULT_MAX_STATEMENT,
            parameters: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbConfig {
    pub name: String,
    /// `postgres://host:port`
    pub uri: String,
    /// CA certificates (PEM) that sign the database's server certificate [default: system roots].
    pub ca_file: Option<PathBuf>,
    /// The name the database's certificate is checked against [default: the URI's host].
    pub server_name: Option<String>,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

impl DbConfig {
    pub fn spec(&self) -> crate::services::DbSpec {
        crate::services::DbSpec {
            name: self.name.clone(),
            uri: self.uri.clone(),
            ca_file: self.ca_file.clone(),
            ca_pem: None,
            server_name: self.server_name.clone(),
            labels: self.labels.clone(),
        }
    }
}

/// Applications an `app` agent publishes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppServiceConfig {
    pub apps: Vec<AppConfig>,
    /// Idle data connections the agent keeps parked at the proxy.
    pub tunnel_pool_size: Option<usize>,
}

/// `ssh_service.recording`: the node's spool of session recordings (`<data_dir>/agent/recordings`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeRecordingConfig {
    /// Most bytes the spool may hold (recordings not yet uploaded to Auth).
    pub max_spool_bytes: u64,
    /// How often recordings still being written are uploaded (finished ones go at once).
    pub upload_interval: HumanDuration,
}

impl Default for NodeRecordingConfig {
    fn default() -> Self {
        Self {
            max_spool_bytes: 1024 * 1024 * 1024,
            upload_interval: HumanDuration(Duration::from_secs(10)),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    pub name: String,
    /// `tcp://host:port`
    pub uri: String,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// Settings of the process as a whole.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProcessConfig {
    pub data_dir: PathBuf,
    /// Address of the diagnostics HTTP server (`/healthz`, `/readyz`, `/metrics`); off when empty.
    pub diag_addr: Option<Addr>,
    pub log: LogConfig,
    /// Services this process runs.
    pub roles: Vec<ServiceRole>,
    /// Agents: the proxy to join and to keep tunnels to (`host:port`).
    pub proxy_server: Option<String>,
    /// Agents: the join token used the first time (then the stored identity is used), or the
    /// absolute path of a file that holds it.
    pub join_token: Option<String>,
    /// Agents: the cluster's CA pin, checked when joining.
    pub ca_pin: Option<String>,
}

impl Default for ProcessConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            diag_addr: None,
            log: LogConfig::default(),
            roles: vec![ServiceRole::Auth, ServiceRole::Proxy],
            proxy_server: None,
            join_token: None,
            ca_pin: None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `error`, `warn`, `info` (default), `debug`, `trace`, or a tracing filter directive.
    pub severity: Option<String>,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// A service a `hop start` process can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceRole {
    Auth,
    Proxy,
    Node,
    App,
    Db,
    Kube,
    WindowsDesktop,
    Discovery,
}

impl FromStr for ServiceRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.trim() {
            "auth" => Self::Auth,
            "proxy" => Self::Proxy,
            "node" | "ssh" => Self::Node,
            "app" => Self::App,
            "db" => Self::Db,
            "kube" => Self::Kube,
            "windows_desktop" | "desktop" => Self::WindowsDesktop,
            "discovery" => Self::Discovery,
            other => {
                return Err(format!(
                    "unknown role {other:?}; expected auth, proxy, node, app, db, kube, windows_desktop or discovery"
                ));
            }
        })
    }
}

impl fmt::Display for ServiceRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auth => "auth",
            Self::Proxy => "proxy",
            Self::Node => "node",
            Self::App => "app",
            Self::Db => "db",
            Self::Kube => "kube",
            Self::WindowsDesktop => "windows_desktop",
            Self::Discovery => "discovery",
        })
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthServiceConfig {
    /// Name of the cluster; fixed at first start (defaults to the host name).
    pub cluster_name: Option<String>,
    pub authentication: AuthenticationConfig,
    pub login: LoginLimits,
    pub audit: AuditSettings,
    /// Where interactive SSH sessions are recorded: `node` (default), `node-sync`, `proxy`,
    /// `proxy-sync` or `off`. A role's `options.record_session.ssh` can tighten it.
    pub session_recording: Option<String>,
}

/// The SSH service of a `node` agent.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SshServiceConfig {
    /// The node's name in the cluster (defaults to the host name).
    pub nodename: Option<String>,
    /// Static labels announced with the node.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Labels whose value is a command's output, refreshed on an interval.
    pub commands: Vec<CommandLabelConfig>,
    /// Also accept SSH connections directly on this address (LAN use); off when unset.
    pub listen_addr: Option<Addr>,
    /// Idle data connections the agent keeps parked at the proxy.
    pub tunnel_pool_size: Option<usize>,
    /// Session recording at the node: the local spool and the upload to Auth.
    pub recording: NodeRecordingConfig,
    /// Deadline for an SSH client to exchange banners and keys and authenticate; a connection
    /// not authenticated by then is closed.
    pub auth_timeout: HumanDuration,
}

impl Default for SshServiceConfig {
    fn default() -> Self {
        Self {
            nodename: None,
            labels: Default::default(),
            commands: Vec::new(),
            listen_addr: None,
            tunnel_pool_size: None,
            recording: NodeRecordingConfig::default(),
            auth_timeout: HumanDuration(Duration::from_secs(30)),
        }
    }
}

/// A label whose value is the output of a command.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandLabelConfig {
    pub name: String,
    /// The program and its arguments (not run through a shell).
    pub command: Vec<String>,
    /// How often to refresh it (default 1m).
    #[serde(default)]
    pub period: Option<HumanDuration>,
}

/// The audit log (`<data_dir>/audit.db`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditSettings {
    /// Days older than this are deleted in the background (whole days); kept forever when unset.
    pub retention: Option<HumanDuration>,
    /// Also write every event, once durable, as a JSON line to `stdout` or to this file (for a
    /// SIEM shipper such as Vector or Fluent Bit).
    pub forward: Option<String>,
    /// How long a commit of events nobody waits for (session starts and ends, queries) may wait
    /// for more such events (default 10ms; 0s: none; at most 1s).
    pub unwatched_linger: Option<HumanDuration>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthenticationConfig {
    /// Only `local` for now.
    #[serde(rename = "type")]
    pub kind: String,
    /// `otp` (default), `off`, `on`, `optional` or `webauthn`.
    pub second_factor: String,
}

impl Default for AuthenticationConfig {
    fn default() -> Self {
        Self {
            kind: "local".into(),
            second_factor: "otp".into(),
        }
    }
}

/// Brute-force protection of password login.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoginLimits {
    /// Consecutive failed logins that lock a user.
    pub max_failed_attempts: u32,
    /// How long such a lock lasts.
    pub lockout: HumanDuration,
    /// Login attempts allowed per source IP per minute (a burst of this size, refilled evenly).
    pub attempts_per_ip_per_minute: u32,
    /// Lifetime of an invite or reset token.
    pub invite_ttl: HumanDuration,
}

impl Default for LoginLimits {
    fn default() -> Self {
        Self {
            max_failed_attempts: 5,
            lockout: HumanDuration(Duration::from_secs(30 * 60)),
            attempts_per_ip_per_minute: 30,
            invite_ttl: HumanDuration(Duration::from_secs(3600)),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyServiceConfig {
    /// The one port: TLS for every protocol.
    pub listen_addr: Addr,
    /// Names and addresses clients use to reach the proxy; they go into its certificate.
    pub public_addr: Vec<String>,
    /// Operator-supplied certificate; when absent, the host CA issues one at start.
    pub tls: Option<TlsFiles>,
    /// Deadline for a client to complete its TLS handshake.
    pub handshake_timeout: HumanDuration,
    /// Deadline for a new connection's first bytes (enough to classify it).
    pub first_byte_timeout: HumanDuration,
    /// Connections open at once, in total; more are closed at accept and counted.
    pub max_connections: usize,
    /// Connections open at once from one source IP.
    pub max_connections_per_ip: u32,
    /// Unauthenticated connections (no verified client certificate, no SSH authentication yet)
    /// open at once from one source: an IPv4 address or an IPv6 /64.
    pub max_preauth_connections_per_ip: u32,
    /// The same budget as a share of `max_connections`, in percent; the lower of the two applies.
    pub max_preauth_connections_percent: f64,
    /// Deadline for an SSH client of the jump host to exchange banners and keys and
    /// authenticate.
    pub ssh_auth_timeout: HumanDuration,
    /// Deadline for an HTTP/1.1 request head, from the end of the previous response (or the
    /// start of the connection).
    pub http_header_timeout: HumanDuration,
    /// An HTTP connection (HTTP/2, or HTTP/1.1 between requests) with no request in flight for
    /// this long is closed.
    pub http_idle_timeout: HumanDuration,
    /// Deadline for an agent's first tunnel message (its hello).
    pub tunnel_hello_timeout: HumanDuration,
    /// Deadline for a database client's startup: PostgreSQL's startup message, MySQL's
    /// handshake response.
    pub db_startup_timeout: HumanDuration,
    /// TLS handshakes in progress at once; more are closed and counted.
    pub max_concurrent_handshakes: usize,
    /// Data-plane worker threads, one per core by default.
    pub workers: Option<usize>,
    /// `auto` (io_uring, falling back to epoll), `uring` or `epoll`.
    pub io_driver: IoDriverChoice,
    /// Kernel TLS for relayed sessions: `auto` (used when the kernel has it, else records are
    /// sealed in user space) or `off`.
    pub kernel_tls: KernelTlsChoice,
    /// PROXY protocol (v1/v2) headers from load balancers.
    pub proxy_protocol: ProxyProtocolConfig,
}

/// Which kernel interface the data plane uses for IO.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum IoDriverChoice {
    #[default]
    Auto,
    Uring,
    Epoll,
}

/// Whether relayed sessions may use kernel TLS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KernelTlsChoice {
    #[default]
    Auto,
    Off,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyProtocolConfig {
    /// Networks whose PROXY headers are honoured (`10.0.0.0/8`, `192.0.2.7/32`, `::1/128`).
    /// A PROXY header from anywhere else closes the connection.
    pub trusted_cidrs: Vec<Cidr>,
}

/// An IP network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: std::net::IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            _ => ip,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("invalid network {s:?}: expected CIDR such as 10.0.0.0/8 or ::1/128");
        let (ip, prefix) = match s.trim().split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s.trim(), None),
        };
        let addr: std::net::IpAddr = ip.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl Default for ProxyServiceConfig {
    fn default() -> Self {
        Self {
            listen_addr: Addr(DEFAULT_LISTEN.parse().expect("constant address parses")),
            public_addr: Vec::new(),
            tls: None,
            handshake_timeout: HumanDuration(Duration::from_secs(10)),
            first_byte_timeout: HumanDuration(Duration::from_secs(5)),
            max_connections: 100_000,
            max_connections_per_ip: 10_000,
            max_preauth_connections_per_ip: 64,
            max_preauth_connections_percent: 1.0,
            ssh_auth_timeout: HumanDuration(Duration::from_secs(30)),
            http_header_timeout: HumanDuration(Duration::from_secs(10)),
            http_idle_timeout: HumanDuration(Duration::from_secs(30)),
            tunnel_hello_timeout: HumanDuration(Duration::from_secs(10)),
            db_startup_timeout: HumanDuration(Duration::from_secs(10)),
            max_concurrent_handshakes: 1024,
            workers: None,
            io_driver: IoDriverChoice::Auto,
            kernel_tls: KernelTlsChoice::Auto,
            proxy_protocol: ProxyProtocolConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// A socket address that fails to deserialize with a clear message (and so a line number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addr(pub SocketAddr);

impl<'de> Deserialize<'de> for Addr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_addr(&s).map(Addr).map_err(serde::de::Error::custom)
    }
}

/// Parses `host:port`, `:port` (all interfaces) or `[v6]:port`.
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    let full = if let Some(port) = s.strip_prefix(':') {
        format!("0.0.0.0:{port}")
    } else {
        s.to_string()
    };
    if let Ok(a) = full.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Some((host, port)) = full.rsplit_once(':')
        && host == "localhost"
        && let Ok(p) = port.parse::<u16>()
    {
        return Ok(SocketAddr::from(([127, 0, 0, 1], p)));
    }
    Err(format!(
        "invalid address {s:?}: expected IP:PORT such as 0.0.0.0:3080 or 127.0.0.1:3000"
    ))
}

/// A duration written like Go and Teleport do: `30m`, `1h30m`, `90s`, `500ms`, `0s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s)
            .map(HumanDuration)
            .map_err(serde::de::Error::custom)
    }
}

/// Parses `1h30m`, `90s`, `500ms`, `2d`; refuses empty strings, unknown units and overflow.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let bad = || {
        format!("invalid duration {s:?}: expected a number and unit such as 90s, 15m, 8h or 1h30m")
    };
    if s.is_empty() {
        return Err(bad());
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86_400),
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        let part = u32::try_from(n)
            .ok()
            .and_then(|n| unit.checked_mul(n))
            .ok_or_else(bad)?;
        total = total.checked_add(part).ok_or_else(bad)?;
    }
    Ok(total)
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates configuration text; `path` is used in error messages only.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let cfg: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            serde_saphyr::from_str(text).map_err(|e| ConfigError::Parse {
                path: path.to_path_buf(),
                message: one_line(&e.to_string()),
            })?
        };
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// Checks what the types cannot; each error names its field.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |field: &'static str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            field,
            message,
        };
        if let Some(v) = &self.version
            && v != "v1"
        {
            return Err(invalid(
                "version",
                format!("unsupported version {v:?}; expected v1"),
            ));
        }
        if self.hop.data_dir.as_os_str().is_empty() {
            return Err(invalid("hop.data_dir", "must not be empty".into()));
        }
        if self.hop.roles.is_empty() {
            return Err(invalid(
                "hop.roles",
                "at least one service role is required".into(),
            ));
        }
        if let Some(level) = &self.hop.log.severity
            && tracing_subscriber::EnvFilter::try_new(level).is_err()
        {
            return Err(invalid(
                "hop.log.severity",
                format!("invalid level {level:?}; expected error, warn, info, debug or trace"),
            ));
        }
        let agent_roles = self
            .hop
            .roles
            .iter()
            .any(|r| !matches!(r, ServiceRole::Auth | ServiceRole::Proxy));
        if agent_roles && self.runs(ServiceRole::Auth) {
            return Err(invalid(
                "hop.roles",
                "agent services (node, app, db, ...) run in their own process with --proxy for now; start auth,proxy and the agent separately".into(),
            ));
        }
        if agent_roles && self.hop.proxy_server.is_none() {
            return Err(invalid(
                "hop.proxy_server",
                "an agent needs the proxy address (--proxy HOST:PORT)".into(),
            ));
        }
        for (i, app) in self.app_service.apps.iter().enumerate() {
            let spec = crate::services::AppSpec {
                name: app.name.clone(),
                uri: app.uri.clone(),
                labels: app.labels.clone().into_iter().collect(),
            };
            spec.validate().map_err(|m| ConfigError::Invalid {
                path: path.to_path_buf(),
                field: "app_service.apps",
                message: format!("[{i}]: {m}"),
            })?;
        }
        for (i, db) in self.db_service.databases.iter().enumerate() {
            db.spec().validate().map_err(|m| ConfigError::Invalid {
                path: path.to_path_buf(),
                field: "db_service.databases",
                message: format!("[{i}]: {m}"),
            })?;
        }
        if self
            .auth_service
            .audit
            .unwatched_linger
            .is_some_and(|d| d.0 > Duration::from_secs(1))
        {
            return Err(invalid(
                "auth_service.audit.unwatched_linger",
                "must be at most 1s".into(),
            ));
        }
        if !(64..=1024 * 1024).contains(&self.db_service.audit.max_statement_bytes) {
            return Err(invalid(
                "db_service.audit.max_statement_bytes",
                "must be between 64 and 1048576".into(),
            ));
        }
        if self.runs(ServiceRole::Db)
            && self.db_service.databases.is_empty()
            && self.db_service.resources.is_empty()
        {
            return Err(invalid(
                "db_service.databases",
                "a db agent needs databases: db_service.databases (or --db name=…,uri=postgres://…), or db_service.resources selecting `db` resources".into(),
            ));
        }
        let rec = &self.ssh_service.recording;
        if rec.max_spool_bytes < 1024 * 1024 {
            return Err(invalid(
                "ssh_service.recording.max_spool_bytes",
                format!(
                    "{} is too small: at least 1048576 (1 MiB)",
                    rec.max_spool_bytes
                ),
            ));
        }
        if rec.upload_interval.0 < Duration::from_millis(100) {
            return Err(invalid(
                "ssh_service.recording.upload_interval",
                "must be at least 100ms".into(),
            ));
        }
        let auth = &self.auth_service;
        if let Some(mode) = &auth.session_recording
            && !matches!(
                mode.as_str(),
                "node" | "node-sync" | "proxy" | "proxy-sync" | "off"
            )
        {
            return Err(invalid(
                "auth_service.session_recording",
                format!(
                    "unknown mode {mode:?}; expected node, node-sync, proxy, proxy-sync or off"
                ),
            ));
        }
        for (i, c) in self.ssh_service.commands.iter().enumerate() {
            if c.name.is_empty() || c.command.is_empty() {
                return Err(invalid(
                    "ssh_service.commands",
                    format!("[{i}]: name and command are required"),
                ));
            }
        }
        if let Some(name) = &auth.cluster_name {
            validate_cluster_name(name).map_err(|m| invalid("auth_service.cluster_name", m))?;
        }
        if auth.authentication.kind != "local" {
            return Err(invalid(
                "auth_service.authentication.type",
                format!(
                    "unsupported type {:?}; only local is available",
                    auth.authentication.kind
                ),
            ));
        }
        if !matches!(
            auth.authentication.second_factor.as_str(),
            "otp" | "off" | "on" | "optional" | "webauthn"
        ) {
            return Err(invalid(
                "auth_service.authentication.second_factor",
                format!(
                    "unknown value {:?}; expected otp, off, on, optional or webauthn",
                    auth.authentication.second_factor
                ),
            ));
        }
        if auth.authentication.second_factor == "webauthn" {
            return Err(invalid(
                "auth_service.authentication.second_factor",
                "webauthn is not available yet; use otp".into(),
            ));
        }
        if auth.login.max_failed_attempts == 0 {
            return Err(invalid(
                "auth_service.login.max_failed_attempts",
                "must be at least 1".into(),
            ));
        }
        if auth.login.attempts_per_ip_per_minute == 0 {
            return Err(invalid(
                "auth_service.login.attempts_per_ip_per_minute",
                "must be at least 1".into(),
            ));
        }
        if auth.login.invite_ttl.0 < Duration::from_secs(1) {
            return Err(invalid(
                "auth_service.login.invite_ttl",
                "must be at least 1s".into(),
            ));
        }
        let proxy = &self.proxy_service;
        let deadlines = [
            ("proxy_service.handshake_timeout", proxy.handshake_timeout),
            ("proxy_service.first_byte_timeout", proxy.first_byte_timeout),
            ("proxy_service.ssh_auth_timeout", proxy.ssh_auth_timeout),
            (
                "proxy_service.http_header_timeout",
                proxy.http_header_timeout,
            ),
            ("proxy_service.http_idle_timeout", proxy.http_idle_timeout),
            (
                "proxy_service.tunnel_hello_timeout",
                proxy.tunnel_hello_timeout,
            ),
            ("proxy_service.db_startup_timeout", proxy.db_startup_timeout),
            ("ssh_service.auth_timeout", self.ssh_service.auth_timeout),
        ];
        for (field, d) in deadlines {
            if d.0.is_zero() {
                return Err(invalid(field, "must be greater than 0s".into()));
            }
        }
        if proxy.max_preauth_connections_per_ip == 0 {
            return Err(invalid(
                "proxy_service.max_preauth_connections_per_ip",
                "must be at least 1".into(),
            ));
        }
        let pct = proxy.max_preauth_connections_percent;
        if !(pct > 0.0 && pct <= 100.0) {
            return Err(invalid(
                "proxy_service.max_preauth_connections_percent",
                format!("{pct} is out of range: more than 0 and at most 100"),
            ));
        }
        if proxy.max_connections == 0 {
            return Err(invalid(
                "proxy_service.max_connections",
                "must be at least 1".into(),
            ));
        }
        for name in &proxy.public_addr {
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(invalid(
                    "proxy_service.public_addr",
                    format!("invalid name {name:?}"),
                ));
            }
        }
        Ok(())
    }

    pub fn runs(&self, role: ServiceRole) -> bool {
        self.hop.roles.contains(&role)
    }
}

/// Cluster names end up in certificates and SNI: keep them to DNS label characters.
pub fn validate_cluster_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid cluster name {name:?}: use letters, digits, '-', '_' and '.' (at most 253)"
        ))
    }
}

/// Errors from the YAML parser may span lines (a snippet); keep the first meaningful lines joined.
fn one_line(msg: &str) -> String {
    let lines: Vec<&str> = msg
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines.join(" ")
}

/// The commented default configuration printed by `hop configure`.
pub const DEFAULT_CONFIG_YAML: &str = r#"# Hop configuration. Every key is optional; the values shown are the defaults.
# Reference: docs/config.md. Start with: hop start --config hop.yaml
version: v1

hop:
  # Where the embedded database (redb), the admin socket and generated keys live.
  data_dir: hop-data
  # Diagnostics HTTP server: /healthz, /readyz and /metrics (Prometheus). Off unless set.
  # diag_addr: 127.0.0.1:3000
  log:
    # error, warn, info, debug or trace (or a tracing filter such as "hop=debug,info")
    severity: info
    # text or json
    format: text
  # Services this process runs. An all-in-one cluster is auth + proxy; an agent is, for example,
  # [app] with proxy_server and (the first time) join_token set.
  roles: [auth, proxy]
  # proxy_server: proxy.example.com:3080
  # join_token: <from hop admin tokens add --type app>
  # ca_pin: sha256:...

auth_service:
  # Fixed at first start; defaults to this machine's host name.
  # cluster_name: example.com
  authentication:
    type: local
    # otp (password + TOTP code), off (password only; not for production)
    second_factor: otp
  login:
    # Consecutive failed logins that lock a user, and for how long.
    max_failed_attempts: 5
    lockout: 30m
    # Login attempts allowed per source IP per minute.
    attempts_per_ip_per_minute: 30
    # Lifetime of invite and reset links printed by `hop admin users add/reset`.
    invite_ttl: 1h
  audit:
    # Delete audit events older than this (whole days); unset keeps them forever.
    # retention: 90d
    # Copy every durable event as a JSON line to stdout or a file, for a log shipper.
    # forward: /var/log/hop/audit.jsonl
    # How long session events (which nothing waits for) may wait to share one commit.
    # unwatched_linger: 10ms

proxy_service:
  # The one port every protocol shares (TLS).
  listen_addr: 0.0.0.0:3080
  # Names clients use to reach the proxy (DNS names or IPs); added to its certificate.
  public_addr: []
  # Operator-supplied certificate and key (PEM). Without them the cluster's host CA issues one.
  # tls:
  #   cert_file: /etc/hop/proxy.crt
  #   key_file: /etc/hop/proxy.key
  # Deadlines before authentication: a new connection's first bytes (to classify it), its TLS
  # handshake, an SSH client's banner, key exchange and authentication at the jump host, an
  # HTTP/1.1 request head, an HTTP connection with no request in flight, an agent's tunnel hello,
  # and a database client's startup message.
  first_byte_timeout: 5s
  handshake_timeout: 10s
  ssh_auth_timeout: 30s
  http_header_timeout: 10s
  http_idle_timeout: 30s
  tunnel_hello_timeout: 10s
  db_startup_timeout: 10s
  # Limits; connections over them are closed at once and counted in /metrics.
  max_connections: 100000
  max_connections_per_ip: 10000
  # Unauthenticated connections per source address (an IPv6 /64): the lower of a count and a
  # share (percent) of max_connections.
  max_preauth_connections_per_ip: 64
  max_preauth_connections_percent: 1
  max_concurrent_handshakes: 1024
  # Data-plane worker threads (default: one per core) and IO driver: auto, uring or epoll.
  # workers: 2
  io_driver: auto
  # Kernel TLS for relayed sessions: auto (when the kernel has CONFIG_TLS) or off.
  kernel_tls: auto
  # PROXY protocol headers are honoured only from these networks (load balancers).
  proxy_protocol:
    trusted_cidrs: []

# A node agent's SSH service (hop start --roles node --proxy ...).
ssh_service:
  # Deadline for an SSH client's banner, key exchange and authentication.
  auth_timeout: 30s

# An app agent's TCP applications (hop start --roles app --proxy ... also takes --app).
app_service:
  apps: []
  #  - name: echo
  #    uri: tcp://127.0.0.1:7000
  #    labels: {env: dev}

# A db agent's databases (hop start --roles db --proxy ... also takes --db).
db_service:
  databases: []
  #  - name: pg
  #    uri: postgres://127.0.0.1:5432
  #    ca_file: /etc/postgresql/ca.crt
  #    labels: {env: dev}
  # `db` resources (hop admin create -f) to serve, by labels.
  resources: []
  #  - labels: {env: dev}
  # What each db.query audit event keeps.
  audit:
    max_statement_bytes: 4096
    parameters: false
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("hop.yaml"))
    }

    #[test]
    fn default_config_text_parses_to_the_defaults() {
        let cfg = parse(DEFAULT_CONFIG_YAML).unwrap();
        assert_eq!(cfg.proxy_service.listen_addr.0.port(), 3080);
        assert_eq!(cfg.auth_service.login.max_failed_attempts, 5);
        assert_eq!(cfg.hop.roles, vec![ServiceRole::Auth, ServiceRole::Proxy]);
        let (p, d) = (&cfg.proxy_service, ProxyServiceConfig::default());
        assert_eq!(p.ssh_auth_timeout.0, d.ssh_auth_timeout.0);
        assert_eq!(p.http_header_timeout.0, d.http_header_timeout.0);
        assert_eq!(p.http_idle_timeout.0, d.http_idle_timeout.0);
        assert_eq!(p.tunnel_hello_timeout.0, d.tunnel_hello_timeout.0);
        assert_eq!(p.db_startup_timeout.0, d.db_startup_timeout.0);
        assert_eq!(p.max_preauth_connections_per_ip, 64);
        assert_eq!(p.max_preauth_connections_percent, 1.0);
        assert_eq!(cfg.ssh_service.auth_timeout.0, Duration::from_secs(30));
    }

    #[test]
    fn unknown_key_names_the_key_and_line() {
        let err = parse("version: v1\nhop:\n  data_dri: /tmp/x\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("data_dri"), "{err}");
        assert!(err.contains("hop.yaml"), "{err}");
        assert!(err.contains('3'), "line number missing: {err}");
        assert!(!err.contains('\n'));
    }

    #[test]
    fn bad_values_name_the_field() {
        let err = parse("proxy_service:\n  listen_addr: nowhere\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid address"), "{err}");
        let err = parse("auth_service:\n  login:\n    lockout: 5 minutes\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid duration"), "{err}");
        let err = parse("auth_service:\n  authentication:\n    second_factor: sms\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("auth_service.authentication.second_factor"),
            "{err}"
        );
    }

    #[test]
    fn zero_deadlines_and_budgets_are_refused_by_name() {
        for field in [
            "first_byte_timeout",
            "handshake_timeout",
            "ssh_auth_timeout",
            "http_header_timeout",
            "http_idle_timeout",
            "tunnel_hello_timeout",
            "db_startup_timeout",
        ] {
            let err = parse(&format!("proxy_service:\n  {field}: 0s\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("proxy_service.{field}")), "{err}");
        }
        let err = parse("ssh_service:\n  auth_timeout: 0s\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("ssh_service.auth_timeout"), "{err}");
        let err = parse("proxy_service:\n  max_preauth_connections_per_ip: 0\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("proxy_service.max_preauth_connections_per_ip"),
            "{err}"
        );
        for pct in ["0", "101", "-1"] {
            let err = parse(&format!(
                "proxy_service:\n  max_preauth_connections_percent: {pct}\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(
                err.contains("proxy_service.max_preauth_connections_percent"),
                "{err}"
            );
        }
        let cfg = parse("proxy_service:\n  max_preauth_connections_percent: 0.5\n").unwrap();
        assert_eq!(cfg.proxy_service.max_preauth_connections_percent, 0.5);
    }

    #[test]
    fn malformed_yaml_is_an_error_not_a_panic() {
        for text in [
            "hop: [",
            "\t- x",
            "a: b: c",
            "hop:\n  roles: {",
            "\u{0}\u{1}",
            "*x",
        ] {
            assert!(parse(text).is_err(), "accepted {text:?}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        for bad in ["", "h", "10", "1x", "99999999999999999999h", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cidrs() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.0.0.1".parse().unwrap()));
        let one: Cidr = "192.0.2.7".parse().unwrap();
        assert!(
            one.contains("192.0.2.7".parse().unwrap())
                && !one.contains("192.0.2.8".parse().unwrap())
        );
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.1".parse().unwrap()));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(
            v6.contains("2001:db8::1".parse().unwrap())
                && !v6.contains("2001:db9::1".parse().unwrap())
        );
        for bad in ["10.0.0.0/33", "x/8", "::/129", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn addresses() {
        assert_eq!(parse_addr(":3080").unwrap().port(), 3080);
        assert_eq!(
            parse_addr("localhost:1").unwrap().ip().to_string(),
            "127.0.0.1"
        );
        assert!(parse_addr("example.com:1").is_err());
    }
}

/// Why a join token could not be read.
#[derive(Debug, thiserror::Error)]
pub enum JoinTokenError {
    #[error("join token file {path}: {source}")]
    Unreadable {
        path: String,
        source: std::io::Error,
    },
    #[error("join token file {path} is empty")]
    Empty { path: String },
}

/// The join token `value` names: the value itself, or, when it is an absolute path, the first
/// line of that file (as Teleport's `--token` accepts), so the secret need not appear in `ps`.
pub fn read_join_token(value: &str) -> Result<String, JoinTokenError> {
    if !value.starts_with('/') {
        return Ok(value.to_string());
    }
    let text = std::fs::read_to_string(value).map_err(|source| JoinTokenError::Unreadable {
        path: value.to_string(),
        source,
    })?;
    let token = text.lines().next().unwrap_or_default().trim();
    if token.is_empty() {
        return Err(JoinTokenError::Empty {
            path: value.to_string(),
        });
    }
    Ok(token.to_string())
}
