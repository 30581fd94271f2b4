//! Application certificates on disk: `hop apps login|logout|config`.
//!
//! An application login is a user certificate routed to one application (Auth's
//! `IssueAppCertificate`; under a role's `require_session_mfa`, a one-minute certificate
//! marked for it after a security key tap, `IssueSessionMfaCert`). Its files (directory 0700, files 0600):
//! ```text
//! $HOP_HOME/apps/<proxy_port>/<user>/<name>.key    P-256 key (PKCS#8)
//! $HOP_HOME/apps/<proxy_port>/<user>/<name>.crt    the app certificate (user CA)
//! $HOP_HOME/apps/<proxy_port>/<user>/<name>.json   uri, public address, expiry
//! $HOP_HOME/apps/<proxy_port>/<user>/cas.pem       the CAs that sign the proxy's certificate
//! ```
//! This module owns those files and what is printed about them; it never opens connections
//! other than the one asking Auth for a certificate.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use serde::{Deserialize, Serialize};

use crate::cli::AppConfigFormat;
use crate::profile::{self, Paths};
use hop_api::proto::AppCertificateRequest;
use hop_api::proto::app_access_client::AppAccessClient;
use hop_net::connect::{split_host_port, status_error, tls_channel};
use hop_net::files::{ensure_dir, write_private};
use hop_net::trust::{ClientCert, Trust};
use hop_platform::clock;

/// One application login, as saved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppLogin {
    pub name: String,
    /// The announced uri (http://, https:// or tcp://).
    pub uri: String,
    /// `NAME.PROXYHOST:PORT` for an HTTP application, empty for a TCP one.
    pub public_addr: String,
    pub expires_unix: i64,
}

struct AppFiles {
    key: PathBuf,
    crt: PathBuf,
    meta: PathBuf,
    cas: PathBuf,
}

/// The directory of the current login's application files.
pub fn apps_dir(paths: &Paths) -> PathBuf {
    paths
        .home
        .join("apps")
        .join(paths.proxy.replace(':', "_"))
        .join(&paths.user)
}

fn files(paths: &Paths, name: &str) -> AppFiles {
    let dir = apps_dir(paths);
    AppFiles {
        key: dir.join(format!("{name}.key")),
        crt: dir.join(format!("{name}.crt")),
        meta: dir.join(format!("{name}.json")),
        cas: dir.join("cas.pem"),
    }
}

/// An application name is a DNS label (it becomes `NAME.PROXYHOST`) and a file name here.
fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !name.starts_with('-');
    if !ok {
        bail!(
            "invalid application name {name:?}: expected 1 to 63 letters, digits, '-' or '_' (`hop apps ls` lists them)"
        );
    }
    Ok(())
}

pub(crate) fn now_unix() -> i64 {
    clock::wall()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn current_paths() -> anyhow::Result<Paths> {
    Ok(profile::current_profile(&profile::hop_home()?)?.1)
}

/// Asks Auth for a certificate for application `name` and saves it.
pub async fn login(name: &str, ttl: Option<Duration>) -> anyhow::Result<AppLogin> {
    check_name(name)?;
    let login = profile::current_login()?;
    let paths = current_paths()?;
    let key = hop_ca::generate_x509_keypair(&mut rand::rng()).map_err(|e| anyhow!("{e}"))?;
    let r = issue(&login, name, &key.public_spki_der, ttl).await?;
    let f = files(&paths, name);
    ensure_dir(&apps_dir(&paths))?;
    write_private(&f.key, key.private_pkcs8_pem.as_bytes())?;
    write_private(&f.crt, r.tls_certificate_pem.as_bytes())?;
    write_private(&f.cas, r.trusted_cas_pem.as_bytes())?;
    let saved = AppLogin {
        name: name.to_string(),
        uri: r.uri,
        public_addr: r.public_addr,
        expires_unix: r.expires_unix,
    };
    write_private(&f.meta, serde_json::to_string_pretty(&saved)?.as_bytes())?;
    Ok(saved)
}

/// Asks Auth, as `login`, for a certificate for application `name` and the key whose
/// SubjectPublicKeyInfo is `spki_der` (what `hop apps login` and a bot's `application` output
/// save).
pub(crate) async fn issue(
    login: &profile::Login,
    name: &str,
    spki_der: &[u8],
    ttl: Option<Duration>,
) -> anyhow::Result<hop_api::proto::AppCertificateResponse> {
    check_name(name)?;
    // Under a role's require_session_mfa: a tap, and a one-minute certificate marked for it.
    if let Some(marked) = crate::mfa::session::app_route(login, name, spki_der).await? {
        return Ok(marked);
    }
    let channel = tls_channel(&login.profile.proxy, &login.trust, Some(&login.cert)).await?;
    Ok(AppAccessClient::new(channel)
        .issue_app_certificate(AppCertificateRequest {
            app: name.to_string(),
            tls_public_key: spki_der.to_vec(),
            ttl_seconds: ttl.map_or(0, |t| t.as_secs().max(1)),
        })
        .await
        .map_err(status_error)
        .with_context(|| format!("logging in to application {name:?}"))?
        .into_inner())
}

pub fn logged_in_message(l: &AppLogin) -> String {
    let until = hop_api::timestamps::rfc3339_unix(l.expires_unix);
    if l.public_addr.is_empty() {
        format!(
            "Logged in to application {} (until {until}).\nConnect with `hop proxy app {}`.",
            l.name, l.name
        )
    } else {
        format!(
            "Logged in to application {} at https://{} (until {until}).\nUse `hop proxy app {}` for a local plain-HTTP port, or see `hop apps config {} --format curl`.",
            l.name, l.public_addr, l.name, l.name
        )
    }
}

fn saved(paths: &Paths, name: &str) -> anyhow::Result<AppLogin> {
    check_name(name)?;
    let f = files(paths, name);
    let text = std::fs::read_to_string(&f.meta).map_err(|_| {
        anyhow!("not logged in to application {name:?}: run `hop apps login {name}`")
    })?;
    serde_json::from_str(&text).with_context(|| format!("corrupt {}", f.meta.display()))
}

fn all_saved(paths: &Paths) -> Vec<AppLogin> {
    crate::profile::saved_login_names(&apps_dir(paths))
        .iter()
        .filter_map(|n| saved(paths, n).ok())
        .collect()
}

/// Names of the applications with a saved, unexpired certificate.
pub fn logged_in_names() -> BTreeSet<String> {
    let Ok(paths) = current_paths() else {
        return BTreeSet::new();
    };
    let now = now_unix();
    all_saved(&paths)
        .into_iter()
        .filter(|l| l.expires_unix > now)
        .map(|l| l.name)
        .collect()
}

/// The saved login for `name` if it has more than a minute left.
pub fn valid_saved(name: &str) -> Option<AppLogin> {
    let paths = current_paths().ok()?;
    saved(&paths, name)
        .ok()
        .filter(|l| l.expires_unix > now_unix() + 60)
}

/// The saved login `name` names, or the only one there is.
fn pick(paths: &Paths, name: Option<String>) -> anyhow::Result<AppLogin> {
    if let Some(n) = name {
        return saved(paths, &n);
    }
    match all_saved(paths).as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("not logged in to any application: run `hop apps login NAME`"),
        many => bail!(
            "logged in to several applications ({}); name one",
            many.iter()
                .map(|l| l.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

pub fn logout(name: Option<String>) -> anyhow::Result<()> {
    let paths = current_paths()?;
    let names: Vec<String> = match name {
        Some(n) => vec![saved(&paths, &n)?.name],
        None => all_saved(&paths).into_iter().map(|l| l.name).collect(),
    };
    for n in &names {
        let f = files(&paths, n);
        profile::remove_files(&[&f.key, &f.crt, &f.meta])?;
        println!("Logged out of application {n}.");
    }
    if names.is_empty() {
        println!("Not logged in to any application.");
    }
    Ok(())
}

/// What a client needs to reach a saved application: the proxy to dial, how to trust it, the
/// application certificate.
pub struct Credentials {
    pub login: AppLogin,
    pub proxy: String,
    pub trust: Trust,
    pub cert: ClientCert,
}

pub fn credentials(login: AppLogin) -> anyhow::Result<Credentials> {
    let (p, paths) = profile::current_profile(&profile::hop_home()?)?;
    let f = files(&paths, &login.name);
    let read = |path: &PathBuf, what: &str| {
        std::fs::read_to_string(path)
            .with_context(|| format!("reading {what} ({})", path.display()))
    };
    let cert = ClientCert {
        chain_pem: read(&f.crt, "the application certificate")?,
        key_pem: read(&f.key, "the application key")?,
    };
    let trust = if p.insecure {
        Trust::Insecure
    } else {
        Trust::CaPem(read(&f.cas, "the cluster CAs")?)
    };
    Ok(Credentials {
        login,
        proxy: p.proxy,
        trust,
        cert,
    })
}

/// A shell word: bare when it needs no quoting, else in single quotes.
fn sh(v: &str) -> String {
    let plain = v
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-:=@,+".contains(&b));
    if plain && !v.is_empty() {
        v.to_string()
    } else {
        format!("'{}'", v.replace('\'', "'\\''"))
    }
}

/// The curl line for a saved HTTP application. When the proxy is dialed by IP address, curl is
/// told to resolve the application's name to it (`--resolve`), since `NAME.ADDRESS` is no name.
fn curl_line(l: &AppLogin, proxy: &str, f: &AppFiles) -> anyhow::Result<String> {
    let (host, _) = split_host_port(proxy)?;
    let mut line = format!(
        "curl --cacert {} --cert {} --key {}",
        sh(&f.cas.to_string_lossy()),
        sh(&f.crt.to_string_lossy()),
        sh(&f.key.to_string_lossy())
    );
    if let Ok(ip) = host.trim_matches(['[', ']']).parse::<std::net::IpAddr>() {
        let (app_host, app_port) = split_host_port(&l.public_addr)?;
        let ip = if ip.is_ipv6() {
            format!("[{ip}]")
        } else {
            ip.to_string()
        };
        line.push_str(&format!(
            " --resolve {}",
            sh(&format!("{app_host}:{app_port}:{ip}"))
        ));
    }
    line.push_str(&format!(" https://{}/", l.public_addr));
    Ok(line)
}

pub fn config(name: Option<String>, format: AppConfigFormat) -> anyhow::Result<()> {
    let (p, paths) = profile::current_profile(&profile::hop_home()?)?;
    let l = pick(&paths, name)?;
    let f = files(&paths, &l.name);
    if l.expires_unix <= now_unix() {
        eprintln!(
            "WARNING: the certificate for {} has expired; run `hop apps login {}`",
            l.name, l.name
        );
    }
    let http = !l.public_addr.is_empty();
    let need_http = || {
        if http {
            Ok(())
        } else {
            Err(anyhow!(
                "application {:?} is a TCP application ({}): it has no https address; use `hop proxy app {}`",
                l.name,
                l.uri,
                l.name
            ))
        }
    };
    match format {
        AppConfigFormat::Uri => {
            need_http()?;
            println!("https://{}", l.public_addr);
        }
        AppConfigFormat::Ca => println!("{}", f.cas.display()),
        AppConfigFormat::Cert => println!("{}", f.crt.display()),
        AppConfigFormat::Key => println!("{}", f.key.display()),
        AppConfigFormat::Curl => {
            need_http()?;
            println!("{}", curl_line(&l, &p.proxy, &f)?);
        }
        AppConfigFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "name": l.name, "uri": if http { format!("https://{}", l.public_addr) } else { String::new() },
                "internal_uri": l.uri, "ca": f.cas, "cert": f.crt, "key": f.key,
                "expires_unix": l.expires_unix,
            }))?
        ),
        AppConfigFormat::Text => {
            println!("Name:      {}", l.name);
            if http {
                println!("URI:       https://{}", l.public_addr);
            }
            println!("CA:        {}", f.cas.display());
            println!("Cert:      {}", f.crt.display());
            println!("Key:       {}", f.key.display());
            println!(
                "Expires:   {}",
                hop_api::timestamps::rfc3339_unix(l.expires_unix)
            );
            if http {
                println!();
                println!("{}", curl_line(&l, &p.proxy, &f)?);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_labels_and_safe_file_names() {
        for ok in ["grafana", "app-1", "a_b", "X"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "../x", "a/b", "a.b", "-x", &"y".repeat(64), "a b"] {
            let e = check_name(bad).unwrap_err().to_string();
            assert!(e.contains("invalid application name"), "{bad}: {e}");
        }
    }

    #[test]
    fn curl_lines_resolve_an_ip_proxy_and_quote_paths() {
        let l = AppLogin {
            name: "grafana".into(),
            uri: "http://127.0.0.1:3000".into(),
            public_addr: "grafana.localhost:3080".into(),
            expires_unix: 0,
        };
        let f = AppFiles {
            key: "/h/my apps/grafana.key".into(),
            crt: "/h/a/grafana.crt".into(),
            meta: "/h/a/grafana.json".into(),
            cas: "/h/a/cas.pem".into(),
        };
        assert_eq!(
            curl_line(&l, "127.0.0.1:3080", &f).unwrap(),
            "curl --cacert /h/a/cas.pem --cert /h/a/grafana.crt --key '/h/my apps/grafana.key' --resolve grafana.localhost:3080:127.0.0.1 https://grafana.localhost:3080/"
        );
        assert!(
            !curl_line(&l, "localhost:3080", &f)
                .unwrap()
                .contains("--resolve")
        );
    }
}
