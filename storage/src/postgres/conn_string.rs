//! The `conn_string` of the PostgreSQL backend (Teleport's `teleport.storage.conn_string`), read
//! without I/O. This module owns which URL shapes and TLS settings hop accepts and the words that
//! refuse the others; it hands the rest to `tokio_postgres::Config`. It never opens a file or a
//! connection (the TLS module reads the files it names).
//!
//! Accepted: `postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE?PARAMS` (or `postgres://`), with
//! libpq's TLS parameters `sslmode` (`verify-full`, the default, or `disable`), `sslrootcert`
//! (a PEM file, or `system` for the system roots, the default), `sslcert` and `sslkey` (the
//! client certificate for `cert` authentication), and `pool_max_conns` (Teleport's name; default
//! [`DEFAULT_POOL_MAX`]). Any other parameter is passed to the client, which refuses the ones it
//! does not know. `sslmode=require`, `verify-ca`, `prefer` and `allow` are refused: they do not
//! check that the server is the one named, and this database holds the cluster's CA keys. For
//! the same reason `disable` is accepted only for a Unix socket or a loopback address.

use std::path::PathBuf;
use std::str::FromStr;

use tokio_postgres::config::{Host, SslMode};

use crate::error::StorageError;

/// Connections in the pool unless `pool_max_conns` says otherwise.
pub const DEFAULT_POOL_MAX: usize = 8;
/// The most connections `pool_max_conns` may ask for.
const POOL_MAX_LIMIT: usize = 256;
/// What a conn string looks like, for the errors.
const EXAMPLE: &str = "postgresql://USER@HOST:5432/DATABASE?sslmode=verify-full&sslrootcert=/PATH/ca.crt&sslcert=/PATH/client.crt&sslkey=/PATH/client.key";

/// How the connection is protected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TlsSettings {
    /// No TLS (a Unix socket or loopback only).
    Disabled,
    /// TLS, checking the server's certificate chain and name.
    VerifyFull {
        /// The trusted roots (PEM); `None`: the system's.
        root_cert: Option<PathBuf>,
        /// The client certificate chain and key (PEM) for `cert` authentication.
        client: Option<(PathBuf, PathBuf)>,
    },
}

/// A parsed conn string.
#[derive(Debug, Clone)]
pub(crate) struct ConnSettings {
    /// What the client connects with (`sslmode` already set from [`Self::tls`]).
    pub(crate) config: tokio_postgres::Config,
    pub(crate) tls: TlsSettings,
    pub(crate) pool_max: usize,
    /// `user@host:port/database`, for errors and logs (never the password).
    pub(crate) target: String,
}

fn refuse(reason: impl Into<String>) -> StorageError {
    StorageError::PostgresConfig {
        reason: reason.into(),
    }
}

/// Reads a conn string; every refusal names what is wrong.
pub(crate) fn parse(text: &str) -> Result<ConnSettings, StorageError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(refuse(format!("conn_string is empty; write {EXAMPLE}")));
    }
    let lower = text.to_ascii_lowercase();
    if !(lower.starts_with("postgresql://") || lower.starts_with("postgres://")) {
        return Err(refuse(format!(
            "conn_string must be a postgresql:// URL (key=value strings are not supported): \
             {EXAMPLE}"
        )));
    }
    if text.contains('#') {
        return Err(refuse("conn_string must not have a #fragment"));
    }
    let (base, query) = text.split_once('?').unwrap_or((text, ""));
    let mut sslmode = None;
    let mut root_cert = None;
    let mut cert = None;
    let mut key = None;
    let mut pool_max = None;
    let mut passed = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let Some((name, raw)) = pair.split_once('=') else {
            return Err(refuse(format!(
                "conn_string parameter {name:?} has no value (write {name}=VALUE)",
                name = pair
            )));
        };
        let value = percent_decode(raw)
            .ok_or_else(|| refuse(format!("conn_string parameter {name}: bad %-encoding")))?;
        let slot = match name {
            "sslmode" => &mut sslmode,
            "sslrootcert" => &mut root_cert,
            "sslcert" => &mut cert,
            "sslkey" => &mut key,
            "pool_max_conns" => &mut pool_max,
            "password" => {
                return Err(refuse(
                    "conn_string must not carry a password parameter; use client certificates \
                     (sslcert, sslkey)",
                ));
            }
            _ => {
                passed.push(pair);
                continue;
            }
        };
        if slot.replace(value).is_some() {
            return Err(refuse(format!("conn_string gives {name} twice")));
        }
    }
    let tls = tls_settings(sslmode.as_deref(), root_cert, cert, key)?;
    let pool_max = match pool_max {
        None => DEFAULT_POOL_MAX,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=POOL_MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(refuse(format!(
                    "pool_max_conns={text:?} must be a number from 1 to {POOL_MAX_LIMIT}"
                )));
            }
        },
    };
    passed.push(match tls {
        TlsSettings::Disabled => "sslmode=disable",
        TlsSettings::VerifyFull { .. } => "sslmode=require",
    });
    let url = format!("{base}?{}", passed.join("&"));
    let config = tokio_postgres::Config::from_str(&url)
        .map_err(|err| refuse(format!("conn_string is not a valid PostgreSQL URL: {err}")))?;
    let target = check_config(&config, &tls)?;
    Ok(ConnSettings {
        config,
        tls,
        pool_max,
        target,
    })
}

fn tls_settings(
    sslmode: Option<&str>,
    root_cert: Option<String>,
    cert: Option<String>,
    key: Option<String>,
) -> Result<TlsSettings, StorageError> {
    match sslmode.unwrap_or("verify-full") {
        "verify-full" => {}
        "disable" => {
            if root_cert.is_some() || cert.is_some() || key.is_some() {
                return Err(refuse(
                    "sslrootcert, sslcert and sslkey need sslmode=verify-full, not disable",
                ));
            }
            return Ok(TlsSettings::Disabled);
        }
        mode @ ("require" | "verify-ca" | "prefer" | "allow") => {
            return Err(refuse(format!(
                "sslmode={mode} does not check that the server is the one named; use \
                 sslmode=verify-full (with sslrootcert=FILE), or sslmode=disable for a local \
                 socket"
            )));
        }
        other => {
            return Err(refuse(format!(
                "sslmode={other:?} is not known; use verify-full (or disable for a local socket)"
            )));
        }
    }
    let client = match (cert, key) {
        (Some(cert), Some(key)) => Some((PathBuf::from(cert), PathBuf::from(key))),
        (None, None) => None,
        _ => {
            return Err(refuse(
                "sslcert and sslkey go together: give both (client certificate authentication) \
                 or neither",
            ));
        }
    };
    let root_cert = root_cert.filter(|root| root != "system").map(PathBuf::from);
    Ok(TlsSettings::VerifyFull { root_cert, client })
}

/// Checks what the client config names and describes it, without the password.
fn check_config(
    config: &tokio_postgres::Config,
    tls: &TlsSettings,
) -> Result<String, StorageError> {
    let user = config.get_user().ok_or_else(|| {
        refuse(format!(
            "conn_string names no user (postgresql://USER@HOST/DATABASE): {EXAMPLE}"
        ))
    })?;
    let db = config.get_dbname().ok_or_else(|| {
        refuse(format!(
            "conn_string names no database (postgresql://USER@HOST/DATABASE): {EXAMPLE}"
        ))
    })?;
    let hosts = config.get_hosts();
    if hosts.is_empty() {
        return Err(refuse(format!(
            "conn_string names no host (postgresql://USER@HOST/DATABASE): {EXAMPLE}"
        )));
    }
    for host in hosts {
        match (host, tls) {
            (Host::Tcp(name), TlsSettings::Disabled) if !is_loopback(name) => {
                return Err(refuse(format!(
                    "sslmode=disable would send the cluster's secrets in clear to {name}; it is \
                     allowed only for a Unix socket or a loopback address: use \
                     sslmode=verify-full"
                )));
            }
            (Host::Unix(path), TlsSettings::VerifyFull { .. }) => {
                return Err(refuse(format!(
                    "PostgreSQL does not speak TLS over the Unix socket {}; use sslmode=disable \
                     for a socket",
                    path.display()
                )));
            }
            _ => {}
        }
    }
    let host = match &hosts[0] {
        Host::Tcp(name) => name.clone(),
        Host::Unix(path) => path.display().to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    debug_assert!(matches!(
        config.get_ssl_mode(),
        SslMode::Disable | SslMode::Require
    ));
    Ok(format!("{user}@{host}:{port}/{db}"))
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `%XX`-decodes a query value (and `+` as a space, as forms do); `None` if malformed or not
/// UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = text.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(text: &str) -> String {
        match parse(text) {
            Err(StorageError::PostgresConfig { reason }) => reason,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn a_full_url_is_read() {
        let s = parse(
            "postgresql://hop@db.example.com:6432/hopdb?sslrootcert=/etc/ca.pem&sslcert=/c.pem\
             &sslkey=/k%20x.pem&pool_max_conns=20&application_name=x",
        )
        .unwrap();
        assert_eq!(s.target, "hop@db.example.com:6432/hopdb");
        assert_eq!(s.pool_max, 20);
        assert_eq!(
            s.tls,
            TlsSettings::VerifyFull {
                root_cert: Some("/etc/ca.pem".into()),
                client: Some(("/c.pem".into(), "/k x.pem".into())),
            }
        );
        assert_eq!(s.config.get_ssl_mode(), SslMode::Require);
    }

    #[test]
    fn defaults_are_verify_full_with_system_roots() {
        let s = parse("postgres://hop@db/hopdb").unwrap();
        assert_eq!(
            s.tls,
            TlsSettings::VerifyFull {
                root_cert: None,
                client: None
            }
        );
        assert_eq!(s.pool_max, DEFAULT_POOL_MAX);
        let s = parse("postgres://hop@db/hopdb?sslrootcert=system").unwrap();
        assert!(matches!(
            s.tls,
            TlsSettings::VerifyFull {
                root_cert: None,
                ..
            }
        ));
    }

    #[test]
    fn plain_text_only_to_a_socket_or_loopback() {
        let s = parse("postgresql://hop@/hopdb?host=/run/pg&sslmode=disable").unwrap();
        assert_eq!(s.tls, TlsSettings::Disabled);
        assert_eq!(s.config.get_ssl_mode(), SslMode::Disable);
        parse("postgresql://hop@127.0.0.1:5/hopdb?sslmode=disable").unwrap();
        parse("postgresql://hop@localhost/hopdb?sslmode=disable").unwrap();
        assert!(reason("postgresql://hop@db.example.com/hopdb?sslmode=disable").contains("clear"));
        assert!(reason("postgresql://hop@/hopdb?host=/run/pg").contains("Unix socket"));
    }

    #[test]
    fn weak_or_inconsistent_tls_is_refused() {
        for mode in ["require", "verify-ca", "prefer", "allow"] {
            let r = reason(&format!("postgresql://hop@db/hopdb?sslmode={mode}"));
            assert!(r.contains("verify-full"), "{r}");
        }
        assert!(reason("postgresql://hop@db/hopdb?sslmode=bogus").contains("not known"));
        assert!(reason("postgresql://hop@db/hopdb?sslcert=/c").contains("go together"));
        assert!(reason("postgresql://hop@db/x?sslmode=disable&sslrootcert=/c").contains("need"));
        assert!(reason("postgresql://hop@db/x?sslmode=disable&sslmode=disable").contains("twice"));
    }

    #[test]
    fn malformed_strings_are_refused_clearly() {
        assert!(reason("").contains("empty"));
        assert!(reason("host=db user=hop").contains("postgresql:// URL"));
        assert!(reason("mysql://hop@db/x").contains("postgresql:// URL"));
        assert!(reason("postgresql://db/hopdb").contains("no user"));
        assert!(reason("postgresql://hop@db").contains("no database"));
        assert!(reason("postgresql://hop@db/x?pool_max_conns=0").contains("pool_max_conns"));
        assert!(reason("postgresql://hop@db/x?pool_max_conns=a").contains("pool_max_conns"));
        assert!(reason("postgresql://hop@db/x?sslrootcert=%zz").contains("%-encoding"));
        assert!(reason("postgresql://hop@db/x?flag").contains("no value"));
        assert!(reason("postgresql://hop@db/x?password=p").contains("password"));
        assert!(reason("postgresql://hop@db/x?nosuch=1").contains("not a valid"));
        assert!(reason("postgresql://hop@db/x#frag").contains("fragment"));
    }

    #[test]
    fn every_prefix_is_refused_or_read_without_panicking() {
        let full = "postgresql://hop:secret@db.example.com:6432/hopdb?sslmode=verify-full\
                    &sslrootcert=/etc/ca.pem&sslcert=/c.pem&sslkey=/k.pem&pool_max_conns=4";
        for end in 0..full.len() {
            match parse(&full[..end]) {
                Ok(s) => assert!(!s.target.contains("secret"), "{}", s.target),
                Err(StorageError::PostgresConfig { reason }) => {
                    assert!(!reason.is_empty());
                    assert!(!reason.contains("secret"), "{reason}");
                }
                Err(other) => panic!("{other:?}"),
            }
        }
        assert_eq!(parse(full).unwrap().target, "hop@db.example.com:6432/hopdb");
    }
}
