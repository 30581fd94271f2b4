//! An application an agent publishes (`--app`, `app_service.apps`): its name, its uri (whose
//! scheme says what it is: `tcp://` relays bytes, `http://`/`https://` is a web app the agent
//! forwards requests to), labels, and for web apps the public address, rewrites and
//! `insecure_skip_verify`. Parses the flag form and validates with errors that name the field.

use hop_net::connect::split_host_port;

use crate::app_rewrite::{AppRewrite, HeaderRewrite, RewriteError};
use crate::services::{SpecFlagError, flag_labels, key_value};

/// Why an application spec is not one an agent can serve (the operator's configuration).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppSpecError {
    #[error("app name {name:?}: use letters, digits, '-', '_' and '.'")]
    Name { name: String },
    #[error(
        "app name {name:?}: a web app is served at NAME.<proxy address>, so use 1 to 63 lower-case letters, digits and '-' (not first or last)"
    )]
    WebName { name: String },
    #[error(
        "app name {name:?} is reserved: the proxy serves Kubernetes at kube.<proxy address>; choose another name"
    )]
    Reserved { name: String },
    #[error("app {name:?}: uri {uri:?} must start with tcp://, http:// or https://")]
    Scheme { name: String, uri: String },
    #[error("app {name:?}: {reason}")]
    Address { name: String, reason: String },
    #[error("app {name:?}: uri needs a port")]
    NoPort { name: String },
    #[error("app {name:?}: uri {uri:?} must be scheme://host[:port] with no path, query or user")]
    UriExtra { name: String, uri: String },
    #[error("app {name:?}: public_addr {addr:?} must be a host name, or host:port")]
    PublicAddr { name: String, addr: String },
    #[error("app {name:?}: {what} applies to http:// and https:// apps only")]
    NotWeb { name: String, what: &'static str },
    #[error("app {name:?}: insecure_skip_verify applies to https:// apps only")]
    NotHttps { name: String },
    #[error("app {name:?}: rewrite: {source}")]
    Rewrite { name: String, source: RewriteError },
}

/// What an application's uri scheme makes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppScheme {
    Tcp,
    Http,
    Https,
}

/// An application this agent publishes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppSpec {
    pub name: String,
    /// `tcp://host:port`, `http://host[:port]` or `https://host[:port]`.
    pub uri: String,
    pub labels: Vec<(String, String)>,
    /// Where users reach a web app, instead of `NAME.<proxy address>`.
    pub public_addr: Option<String>,
    pub rewrite: AppRewrite,
    /// Accept any certificate from an `https://` upstream.
    pub insecure_skip_verify: bool,
}

const FLAG: &str = "--app";

/// The name of the proxy's Kubernetes endpoint (`kube.<proxy address>`), which no app may take.
pub const RESERVED_APP_NAME: &str = "kube";

impl AppSpec {
    /// Parses `name=echo,uri=tcp://127.0.0.1:7000,labels=env=dev;team=web` (labels may repeat),
    /// or for a web app `name=grafana,uri=http://127.0.0.1:3000,public_addr=grafana.example.com,
    /// insecure_skip_verify=true`.
    pub fn parse(s: &str) -> Result<Self, SpecFlagError> {
        let mut app = AppSpec::default();
        let (mut name, mut uri) = (None, None);
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = key_value(FLAG, part)?;
            match k {
                "name" => name = Some(v.to_string()),
                "uri" => uri = Some(v.to_string()),
                "labels" | "label" => app.labels.extend(flag_labels(FLAG, v)?),
                "public_addr" => app.public_addr = Some(v.to_string()),
                "insecure_skip_verify" => {
                    app.insecure_skip_verify = flag_bool("insecure_skip_verify", v)?
                }
                other => {
                    return Err(SpecFlagError::UnknownKey {
                        flag: FLAG,
                        key: other.into(),
                        expected: "name, uri, labels, public_addr, insecure_skip_verify",
                    });
                }
            }
        }
        let missing = |key| SpecFlagError::Missing { flag: FLAG, key };
        app.name = name.ok_or_else(|| missing("name"))?;
        app.uri = uri.ok_or_else(|| missing("uri"))?;
        app.validate()?;
        Ok(app)
    }

    pub fn validate(&self) -> Result<(), AppSpecError> {
        if self.name.eq_ignore_ascii_case(RESERVED_APP_NAME) {
            return Err(AppSpecError::Reserved {
                name: self.name.clone(),
            });
        }
        let scheme = self.scheme()?;
        if scheme == AppScheme::Tcp {
            self.check_tcp_name()?;
        } else {
            self.check_web_name()?;
        }
        self.target()?;
        self.check_web_options(scheme)?;
        self.header_rewrites().map(drop)
    }

    /// `tcp`, `http` or `https`, from the uri.
    pub fn scheme(&self) -> Result<AppScheme, AppSpecError> {
        match self.uri.split_once("://").map(|(s, _)| s) {
            Some("tcp") => Ok(AppScheme::Tcp),
            Some("http") => Ok(AppScheme::Http),
            Some("https") => Ok(AppScheme::Https),
            _ => Err(AppSpecError::Scheme {
                name: self.name.clone(),
                uri: self.uri.clone(),
            }),
        }
    }

    /// Is this a web (HTTP or HTTPS) app?
    pub fn is_web(&self) -> bool {
        matches!(self.scheme(), Ok(AppScheme::Http | AppScheme::Https))
    }

    /// The upstream's `host:port` (80 and 443 by default for web apps; TCP apps name a port).
    pub fn target(&self) -> Result<(String, u16), AppSpecError> {
        let name = || self.name.clone();
        let scheme = self.scheme()?;
        let rest = self.uri.split_once("://").map_or("", |(_, r)| r);
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
            return Err(AppSpecError::UriExtra {
                name: name(),
                uri: self.uri.clone(),
            });
        }
        let has_port = match authority.rfind(']') {
            Some(end) => authority[end..].contains(':'),
            None => authority.contains(':'),
        };
        if !has_port {
            return match scheme {
                AppScheme::Tcp => Err(AppSpecError::NoPort { name: name() }),
                AppScheme::Http => Ok((unbracket(authority), 80)),
                AppScheme::Https => Ok((unbracket(authority), 443)),
            };
        }
        split_host_port(authority).map_err(|e| AppSpecError::Address {
            name: name(),
            reason: e.to_string(),
        })
    }

    /// The `rewrite.headers` lines, parsed.
    pub fn header_rewrites(&self) -> Result<Vec<HeaderRewrite>, AppSpecError> {
        let rewrite = |source| AppSpecError::Rewrite {
            name: self.name.clone(),
            source,
        };
        for host in &self.rewrite.redirect {
            crate::app_rewrite::check_redirect_host(host).map_err(rewrite)?;
        }
        self.rewrite
            .headers
            .iter()
            .map(|l| crate::app_rewrite::parse_header_line(l).map_err(rewrite))
            .collect()
    }

    fn check_tcp_name(&self) -> Result<(), AppSpecError> {
        let ok = !self.name.is_empty()
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        ok.then_some(()).ok_or_else(|| AppSpecError::Name {
            name: self.name.clone(),
        })
    }

    /// A web app's name is a DNS label of the proxy's wildcard name.
    fn check_web_name(&self) -> Result<(), AppSpecError> {
        let n = self.name.as_bytes();
        let ok = (1..=63).contains(&n.len())
            && n.iter()
                .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && n.first() != Some(&b'-')
            && n.last() != Some(&b'-');
        ok.then_some(()).ok_or_else(|| AppSpecError::WebName {
            name: self.name.clone(),
        })
    }

    fn check_web_options(&self, scheme: AppScheme) -> Result<(), AppSpecError> {
        let name = || self.name.clone();
        if scheme == AppScheme::Tcp {
            let what = if self.public_addr.is_some() {
                Some("public_addr")
            } else if !self.rewrite.is_empty() {
                Some("rewrite")
            } else {
                None
            };
            if let Some(what) = what {
                return Err(AppSpecError::NotWeb { name: name(), what });
            }
        }
        if self.insecure_skip_verify && scheme != AppScheme::Https {
            return Err(AppSpecError::NotHttps { name: name() });
        }
        if let Some(addr) = &self.public_addr {
            let ok = !addr.is_empty()
                && addr
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b))
                && split_host_port(addr).is_ok_and(|(h, _)| !h.is_empty());
            if !ok {
                return Err(AppSpecError::PublicAddr {
                    name: name(),
                    addr: addr.clone(),
                });
            }
        }
        Ok(())
    }
}

fn unbracket(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_string()
}

fn flag_bool(key: &'static str, v: &str) -> Result<bool, SpecFlagError> {
    match v {
        "true" | "yes" | "1" => Ok(true),
        "false" | "no" | "0" => Ok(false),
        _ => Err(SpecFlagError::NotBool {
            flag: FLAG,
            key,
            value: v.into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(s: &str) -> Result<AppSpec, String> {
        AppSpec::parse(s).map_err(|e| e.to_string())
    }

    #[test]
    fn schemes_and_targets() {
        let a = app("name=grafana,uri=http://127.0.0.1:3000,labels=env=dev").unwrap();
        assert_eq!(a.scheme().unwrap(), AppScheme::Http);
        assert_eq!(a.target().unwrap(), ("127.0.0.1".into(), 3000));
        assert!(a.is_web());
        let a = app("name=w,uri=https://wiki.internal/,insecure_skip_verify=true").unwrap();
        assert_eq!(a.target().unwrap(), ("wiki.internal".into(), 443));
        assert!(a.insecure_skip_verify);
        let a = app("name=w,uri=http://[::1]").unwrap();
        assert_eq!(a.target().unwrap(), ("::1".into(), 80));
        let a = app("name=w,uri=http://[::1]:8080,public_addr=w.example.com:443").unwrap();
        assert_eq!(a.target().unwrap(), ("::1".into(), 8080));
        assert_eq!(a.public_addr.as_deref(), Some("w.example.com:443"));
        let a = app("name=Echo_1,uri=tcp://127.0.0.1:7000").unwrap();
        assert_eq!(a.scheme().unwrap(), AppScheme::Tcp);
        assert!(!a.is_web());
    }

    #[test]
    fn refusals_name_the_problem() {
        let e = |s: &str| app(s).unwrap_err();
        assert!(e("name=a,uri=ftp://x:1").contains("must start with tcp://, http:// or https://"));
        assert!(e("name=a,uri=http://x:1/grafana").contains("no path"));
        assert!(e("name=a,uri=http://u@x:1").contains("no path, query or user"));
        assert!(e("name=a,uri=http://").contains("scheme://host"));
        assert!(e("name=Graf,uri=http://x:1").contains("lower-case"));
        assert!(e("name=a.b,uri=http://x:1").contains("NAME.<proxy address>"));
        assert!(e("name=-a,uri=http://x:1").contains("lower-case"));
        assert!(e("name=a,uri=http://x:port").contains("invalid port"));
        assert!(e("name=kube,uri=http://x:1").contains("\"kube\" is reserved"));
        assert!(e("name=KUBE,uri=tcp://x:1").contains("is reserved"));
        assert!(e("name=a,uri=tcp://x").contains("needs a port"));
        assert!(e("name=a,uri=tcp://x:1,public_addr=a.b").contains("public_addr applies to http"));
        assert!(
            e("name=a,uri=http://x:1,insecure_skip_verify=true").contains("https:// apps only")
        );
        assert!(e("name=a,uri=https://x:1,insecure_skip_verify=maybe").contains("true or false"));
        assert!(e("name=a,uri=http://x:1,public_addr=a/b").contains("public_addr \"a/b\""));
        assert!(e("name=a,uri=http://x:1,public_addr=:9").contains("public_addr"));
        let mut spec = app("name=a,uri=http://x:1").unwrap();
        spec.rewrite.headers = vec!["Hop-Jwt-Assertion: forged".into()];
        let e = spec.validate().unwrap_err().to_string();
        assert!(e.starts_with("app \"a\": rewrite: header line"), "{e}");
        assert!(e.contains("set by Hop"), "{e}");
        spec.rewrite.headers = vec!["X-User: {{internal.logins}".into()];
        assert!(spec.validate().unwrap_err().to_string().contains("closing"));
        spec.rewrite.headers.clear();
        spec.rewrite.redirect = vec!["http://x".into()];
        assert!(
            spec.validate()
                .unwrap_err()
                .to_string()
                .contains("redirect host")
        );
        let mut tcp = app("name=t,uri=tcp://x:1").unwrap();
        tcp.rewrite.headers = vec!["X-A: b".into()];
        assert!(
            tcp.validate()
                .unwrap_err()
                .to_string()
                .contains("rewrite applies")
        );
    }

    #[test]
    fn every_prefix_of_a_flag_parses_or_errs() {
        let flag = "name=grafana,uri=https://[::1]:3000/,labels=env=dev;a=b,public_addr=g.example.com,insecure_skip_verify=true";
        for i in 0..=flag.len() {
            let _ = AppSpec::parse(&flag[..i]);
        }
        assert!(AppSpec::parse(flag).is_ok());
    }
}
