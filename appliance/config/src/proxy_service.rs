//! The `proxy_service` section: the one TLS port, the names it answers to, its certificate, the
//! deadlines and budgets that protect it before authentication, and the data plane's settings;
//! and the rules that section must keep.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::{Addr, Cidr, DEFAULT_LISTEN, FieldError, HumanDuration};

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
    /// A web UI session with no request for this long ends (Teleport's `web_idle_timeout`); it
    /// never outlives the certificate its login was issued, whatever its use.
    pub web_idle_timeout: HumanDuration,
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
    /// Where the other appliances' proxies reach this one's port for proxy peering
    /// (`host:port`, behind no load balancer); by default the listen address when it names
    /// one, else this host's name with the listen port.
    pub peer_public_addr: Option<String>,
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
            web_idle_timeout: HumanDuration(Duration::from_secs(30 * 60)),
            tunnel_hello_timeout: HumanDuration(Duration::from_secs(10)),
            db_startup_timeout: HumanDuration(Duration::from_secs(10)),
            max_concurrent_handshakes: 1024,
            workers: None,
            io_driver: IoDriverChoice::Auto,
            kernel_tls: KernelTlsChoice::Auto,
            proxy_protocol: ProxyProtocolConfig::default(),
            peer_public_addr: None,
        }
    }
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl ProxyServiceConfig {
    /// The `proxy_service` section's rules: deadlines above zero, budgets of at least one
    /// connection, and public names without blanks.
    pub(crate) fn check(&self) -> Result<(), FieldError> {
        self.check_deadlines()?;
        self.check_budgets()?;
        if let Some(addr) = &self.peer_public_addr
            && !is_host_port(addr)
        {
            return Err(FieldError::new(
                "proxy_service.peer_public_addr",
                format!("{addr:?} is not host:port"),
            ));
        }
        for name in &self.public_addr {
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(FieldError::new(
                    "proxy_service.public_addr",
                    format!("invalid name {name:?}"),
                ));
            }
        }
        Ok(())
    }

    fn check_deadlines(&self) -> Result<(), FieldError> {
        let deadlines = [
            ("proxy_service.handshake_timeout", self.handshake_timeout),
            ("proxy_service.first_byte_timeout", self.first_byte_timeout),
            ("proxy_service.ssh_auth_timeout", self.ssh_auth_timeout),
            (
                "proxy_service.http_header_timeout",
                self.http_header_timeout,
            ),
            ("proxy_service.http_idle_timeout", self.http_idle_timeout),
            ("proxy_service.web_idle_timeout", self.web_idle_timeout),
            (
                "proxy_service.tunnel_hello_timeout",
                self.tunnel_hello_timeout,
            ),
            ("proxy_service.db_startup_timeout", self.db_startup_timeout),
        ];
        for (field, d) in deadlines {
            FieldError::positive(field, d)?;
        }
        Ok(())
    }

    fn check_budgets(&self) -> Result<(), FieldError> {
        if self.max_preauth_connections_per_ip == 0 {
            return Err(FieldError::new(
                "proxy_service.max_preauth_connections_per_ip",
                "must be at least 1",
            ));
        }
        let pct = self.max_preauth_connections_percent;
        if !(pct > 0.0 && pct <= 100.0) {
            return Err(FieldError::new(
                "proxy_service.max_preauth_connections_percent",
                format!("{pct} is out of range: more than 0 and at most 100"),
            ));
        }
        if self.max_connections == 0 {
            return Err(FieldError::new(
                "proxy_service.max_connections",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// `host:port` with a host and a port number (an IPv6 host in brackets).
fn is_host_port(addr: &str) -> bool {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return false;
    };
    !host.is_empty() && !host.contains(char::is_whitespace) && port.parse::<u16>().is_ok()
}
