//! The bot's configuration: a YAML file in tbot's v2 shape, flags on top, resolved into one
//! [`BotConfig`] that the bot runs with.
//!
//! This module owns which keys and output types are understood. Anything else is refused with an
//! error that names it (an unknown key, an unknown output type, a type whose seam exists but
//! that is not built yet), never ignored. It does no IO besides reading the file it is given.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::cli::BotStartArgs;

/// The certificate lifetime when neither the file nor a flag names one.
pub const DEFAULT_CERTIFICATE_TTL: Duration = Duration::from_secs(3600);
/// The bounds Auth applies; refused here first so that a typo is caught before a join.
const MIN_TTL: Duration = Duration::from_secs(60);
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// Output types tbot knows that Hop has a seam for but does not build yet.
const NOT_YET: &[&str] = &["application_tunnel", "workload-identity-x509"];

/// The output types Hop builds, as errors name them.
const BUILT: &str = "identity, database, application, kubernetes, ssh_host, spiffe-svid";

/// Why the configuration is refused; each names the key or type at fault.
#[derive(Debug, thiserror::Error)]
pub enum BotConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("outputs[{index}]: unknown output type {kind:?}; Hop knows: {BUILT}")]
    UnknownOutput { index: usize, kind: String },
    #[error("outputs[{index}]: output type {kind:?} is not supported yet; Hop builds: {BUILT}")]
    NotSupportedYet { index: usize, kind: String },
}

/// What the bot runs with. Its Debug output leaves the join token out.
#[derive(Clone, PartialEq, Eq)]
pub struct BotConfig {
    pub proxy: String,
    pub ca_pin: Option<String>,
    pub insecure: bool,
    /// Needed only while the bot has no identity in `storage`.
    pub token: Option<String>,
    pub storage: PathBuf,
    pub outputs: Vec<Output>,
    pub certificate_ttl: Duration,
    /// None: at one third of the lifetime remaining.
    pub renewal_interval: Option<Duration>,
    pub oneshot: bool,
    /// `spiffe-workload-api` services.
    pub services: Vec<super::workload_config::WorkloadApi>,
}

impl std::fmt::Debug for BotConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BotConfig")
            .field("proxy", &self.proxy)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("storage", &self.storage)
            .field("outputs", &self.outputs)
            .field("certificate_ttl", &self.certificate_ttl)
            .field("renewal_interval", &self.renewal_interval)
            .field("oneshot", &self.oneshot)
            .finish_non_exhaustive()
    }
}

/// One output the bot keeps fresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// `ssh_config`, `known_hosts` and a `$HOP_HOME` layout that `hop` accepts.
    Identity { dir: PathBuf },
    /// `tls.crt`, `tls.key`, `tls.cas` for libpq, routed to one database.
    Database {
        dir: PathBuf,
        service: String,
        username: String,
        database: String,
    },
    /// `svid.pem`, `svid_key.pem`, `svid_bundle.pem` for SPIFFE ID path `path`.
    SpiffeSvid { dir: PathBuf, path: String },
    /// `tls.crt`, `tls.key`, `tls.cas` routed to application `app`.
    Application { dir: PathBuf, app: String },
    /// `kubeconfig.yaml` for kube cluster `cluster`, the credentials in it.
    Kubernetes { dir: PathBuf, cluster: String },
    /// `ssh_host`, `ssh_host-cert.pub` (host CA) and `ssh_host-user-ca.pub` for a stock sshd
    /// serving as an agentless node named `principals`.
    SshHost {
        dir: PathBuf,
        principals: Vec<String>,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    version: Option<String>,
    proxy_server: Option<String>,
    #[serde(default)]
    onboarding: Option<Onboarding>,
    storage: Option<Directory>,
    #[serde(default)]
    outputs: Vec<serde_json::Value>,
    #[serde(default)]
    services: Vec<serde_json::Value>,
    certificate_ttl: Option<String>,
    renewal_interval: Option<String>,
    #[serde(default)]
    oneshot: bool,
    #[serde(default)]
    insecure: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Onboarding {
    join_method: Option<String>,
    token: Option<String>,
    #[serde(default)]
    ca_pins: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Directory {
    #[serde(rename = "type")]
    kind: String,
    path: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityOutput {
    #[serde(rename = "type")]
    _kind: String,
    destination: Directory,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DatabaseOutput {
    #[serde(rename = "type")]
    _kind: String,
    destination: Directory,
    service: String,
    username: String,
    database: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SvidOutput {
    #[serde(rename = "type")]
    _kind: String,
    destination: Directory,
    svid: SvidSelector,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApplicationOutput {
    #[serde(rename = "type")]
    _kind: String,
    destination: Directory,
    app_name: String,
}

/// tbot's `kubernetes` output (v2). Its `disable_exec_plugin` is accepted either way: Hop
/// always writes the credentials into the kubeconfig (the bot rewrites it at each renewal).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KubernetesOutput {
    #[serde(rename = "type")]
    _kind: String,
    destination: Directory,
    kubernetes_cluster: String,
    #[serde(default)]
    disable_exec_plugin: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SshHostOutput {
    #[serde(rename = "type")]
    _kind: String,
    destination: Directory,
    principals: Vec<String>,
}

/// tbot's `svid:` block; its `sans` are refused by `deny_unknown_fields` (Hop's SVIDs carry only
/// the URI SAN).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SvidSelector {
    path: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> BotConfigError {
    BotConfigError::Invalid {
        field,
        message: message.into(),
    }
}

fn duration(field: &'static str, v: &str) -> Result<Duration, BotConfigError> {
    hop_config::parse_duration(v).map_err(|e| invalid(field, e.to_string()))
}

fn directory(field: &'static str, d: Directory) -> Result<PathBuf, BotConfigError> {
    if d.kind != "directory" {
        return Err(invalid(
            field,
            format!("type {:?} is not supported; use `type: directory`", d.kind),
        ));
    }
    Ok(d.path)
}

/// Parses a file's text (named `path` in errors).
fn parse_file(path: &str, text: &str) -> Result<FileConfig, BotConfigError> {
    let value: serde_json::Value =
        serde_saphyr::from_str(text).map_err(|e| BotConfigError::Parse {
            path: path.to_string(),
            message: e.to_string(),
        })?;
    if value.is_null() {
        // An empty file: every setting from flags.
        return Ok(FileConfig::default());
    }
    serde_json::from_value(value).map_err(|e| BotConfigError::Parse {
        path: path.to_string(),
        message: e.to_string(),
    })
}

/// One output of the file, by its type.
fn output(index: usize, v: serde_json::Value) -> Result<Output, BotConfigError> {
    let kind = v
        .get("type")
        .and_then(|t| t.as_str())
        .unwrap_or_default()
        .to_string();
    let parse_err = |e: serde_json::Error| invalid("outputs", format!("[{index}] ({kind}): {e}"));
    match kind.as_str() {
        "identity" => {
            let o: IdentityOutput = serde_json::from_value(v).map_err(parse_err)?;
            Ok(Output::Identity {
                dir: directory("outputs.destination", o.destination)?,
            })
        }
        "database" => {
            let o: DatabaseOutput = serde_json::from_value(v).map_err(parse_err)?;
            Ok(Output::Database {
                dir: directory("outputs.destination", o.destination)?,
                database: o.database.unwrap_or_else(|| o.username.clone()),
                service: o.service,
                username: o.username,
            })
        }
        "spiffe-svid" => {
            let o: SvidOutput = serde_json::from_value(v).map_err(parse_err)?;
            hop_ca::check_spiffe_path(&o.svid.path)
                .map_err(|e| invalid("outputs.svid.path", format!("[{index}]: {e}")))?;
            Ok(Output::SpiffeSvid {
                dir: directory("outputs.destination", o.destination)?,
                path: o.svid.path,
            })
        }
        "application" => {
            let o: ApplicationOutput = serde_json::from_value(v).map_err(parse_err)?;
            if o.app_name.trim().is_empty() {
                return Err(invalid(
                    "outputs.app_name",
                    format!("[{index}]: name the app"),
                ));
            }
            Ok(Output::Application {
                dir: directory("outputs.destination", o.destination)?,
                app: o.app_name,
            })
        }
        "kubernetes" => {
            let o: KubernetesOutput = serde_json::from_value(v).map_err(parse_err)?;
            let _ = o.disable_exec_plugin;
            if o.kubernetes_cluster.trim().is_empty() {
                return Err(invalid(
                    "outputs.kubernetes_cluster",
                    format!("[{index}]: name the cluster"),
                ));
            }
            Ok(Output::Kubernetes {
                dir: directory("outputs.destination", o.destination)?,
                cluster: o.kubernetes_cluster,
            })
        }
        "ssh_host" => {
            let o: SshHostOutput = serde_json::from_value(v).map_err(parse_err)?;
            let principals: Vec<String> = o
                .principals
                .iter()
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect();
            if principals.is_empty() {
                return Err(invalid(
                    "outputs.principals",
                    format!("[{index}]: name the host (its node name first)"),
                ));
            }
            Ok(Output::SshHost {
                dir: directory("outputs.destination", o.destination)?,
                principals,
            })
        }
        k if NOT_YET.contains(&k) => Err(BotConfigError::NotSupportedYet { index, kind }),
        _ => Err(BotConfigError::UnknownOutput { index, kind }),
    }
}

impl BotConfig {
    /// The configuration of `args`: the file named by `--config` (if any) with flags on top.
    pub fn resolve(args: &BotStartArgs) -> Result<Self, BotConfigError> {
        let file = match &args.config {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| BotConfigError::Read {
                    path: p.display().to_string(),
                    source,
                })?;
                parse_file(&p.display().to_string(), &text)?
            }
            None => FileConfig::default(),
        };
        Self::merge(file, args)
    }

    fn merge(file: FileConfig, args: &BotStartArgs) -> Result<Self, BotConfigError> {
        if let Some(v) = file.version.as_deref().filter(|v| *v != "v2") {
            return Err(invalid(
                "version",
                format!("{v:?} is not supported; use v2"),
            ));
        }
        let services = super::workload_config::parse(file.services)?;
        if !services.is_empty() && (args.oneshot || file.oneshot) {
            return Err(invalid(
                "services",
                "a Workload API needs a running bot; leave --oneshot out",
            ));
        }
        let onboarding = file.onboarding.unwrap_or_default();
        if let Some(m) = onboarding.join_method.as_deref().filter(|m| *m != "token") {
            return Err(invalid(
                "onboarding.join_method",
                format!("{m:?} is not supported yet; use token"),
            ));
        }
        if onboarding.ca_pins.len() > 1 {
            return Err(invalid("onboarding.ca_pins", "give at most one pin"));
        }
        let mut outputs = file
            .outputs
            .into_iter()
            .enumerate()
            .map(|(i, v)| output(i, v))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(dir) = &args.destination_dir {
            outputs.push(Output::Identity { dir: dir.clone() });
        }
        let storage = match (&args.data_dir, file.storage) {
            (Some(d), _) => d.clone(),
            (None, Some(d)) => directory("storage", d)?,
            (None, None) => return Err(invalid("storage", "name it (--data-dir DIR)")),
        };
        let proxy = args
            .proxy
            .clone()
            .or(file.proxy_server)
            .ok_or_else(|| invalid("proxy_server", "name the proxy (--proxy HOST:PORT)"))?;
        let certificate_ttl = match (&args.certificate_ttl, &file.certificate_ttl) {
            (Some(v), _) | (None, Some(v)) => duration("certificate_ttl", v)?,
            (None, None) => DEFAULT_CERTIFICATE_TTL,
        };
        if !(MIN_TTL..=MAX_TTL).contains(&certificate_ttl) {
            return Err(invalid("certificate_ttl", "must be between 1m and 24h"));
        }
        let renewal_interval = match (&args.renewal_interval, &file.renewal_interval) {
            (Some(v), _) | (None, Some(v)) => Some(duration("renewal_interval", v)?),
            (None, None) => None,
        };
        if renewal_interval.is_some_and(|r| r.is_zero() || r >= certificate_ttl) {
            return Err(invalid(
                "renewal_interval",
                "must be above zero and shorter than certificate_ttl",
            ));
        }
        Ok(Self {
            proxy,
            ca_pin: args
                .ca_pin
                .clone()
                .or_else(|| onboarding.ca_pins.into_iter().next()),
            insecure: args.insecure || file.insecure,
            token: args.token.clone().or(onboarding.token),
            storage,
            outputs,
            certificate_ttl,
            renewal_interval,
            oneshot: args.oneshot || file.oneshot,
            services,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TBOT: &str = r#"
version: v2
proxy_server: proxy.example.com:3080
onboarding:
  join_method: token
  token: abcd
storage:
  type: directory
  path: /var/lib/hop-bot
outputs:
  - type: identity
    destination:
      type: directory
      path: /opt/machine-id
  - type: database
    destination:
      type: directory
      path: /opt/db
    service: pg
    username: app
certificate_ttl: 30m
renewal_interval: 10m
"#;

    fn resolve(text: &str, args: &BotStartArgs) -> Result<BotConfig, BotConfigError> {
        BotConfig::merge(parse_file("bot.yaml", text)?, args)
    }

    #[test]
    fn a_tbot_v2_file_resolves() {
        let c = resolve(TBOT, &BotStartArgs::default()).unwrap();
        assert_eq!(c.proxy, "proxy.example.com:3080");
        assert_eq!(c.token.as_deref(), Some("abcd"));
        assert_eq!(c.storage, PathBuf::from("/var/lib/hop-bot"));
        assert_eq!(c.certificate_ttl, Duration::from_secs(1800));
        assert_eq!(c.renewal_interval, Some(Duration::from_secs(600)));
        assert_eq!(
            c.outputs,
            vec![
                Output::Identity {
                    dir: "/opt/machine-id".into()
                },
                Output::Database {
                    dir: "/opt/db".into(),
                    service: "pg".into(),
                    username: "app".into(),
                    database: "app".into(),
                }
            ]
        );
    }

    #[test]
    fn debug_output_leaves_the_token_out() {
        let c = resolve(TBOT, &BotStartArgs::default()).unwrap();
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("abcd") && shown.contains("<redacted>"),
            "{shown}"
        );
    }

    #[test]
    fn flags_override_the_file() {
        let args = BotStartArgs {
            proxy: Some("other:443".into()),
            data_dir: Some("/tmp/d".into()),
            certificate_ttl: Some("2h".into()),
            oneshot: true,
            ..BotStartArgs::default()
        };
        let c = resolve(TBOT, &args).unwrap();
        assert_eq!(c.proxy, "other:443");
        assert_eq!(c.storage, PathBuf::from("/tmp/d"));
        assert_eq!(c.certificate_ttl, Duration::from_secs(7200));
        assert!(c.oneshot);
    }

    #[test]
    fn unknown_output_types_and_keys_are_refused_by_name() {
        let unknown = TBOT.replace("type: database", "type: carrier-pigeon");
        let e = resolve(&unknown, &BotStartArgs::default()).unwrap_err();
        assert!(
            matches!(&e, BotConfigError::UnknownOutput { index: 1, kind } if kind == "carrier-pigeon"),
            "{e}"
        );
        assert!(e.to_string().contains("carrier-pigeon"));
        for seam in ["application_tunnel", "workload-identity-x509"] {
            let text = TBOT.replace("type: database", &format!("type: {seam}"));
            let e = resolve(&text, &BotStartArgs::default()).unwrap_err();
            assert!(e.to_string().contains("not supported yet"), "{e}");
            assert!(e.to_string().contains(seam), "{e}");
        }
        let extra = TBOT.replace(
            "renewal_interval: 10m",
            "renewal_interval: 10m\nfrobnicate: 1",
        );
        let e = resolve(&extra, &BotStartArgs::default()).unwrap_err();
        assert!(e.to_string().contains("frobnicate"), "{e}");
        let extra_in_output =
            TBOT.replace("    username: app", "    username: app\n    colour: red");
        let e = resolve(&extra_in_output, &BotStartArgs::default()).unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
    }

    #[test]
    fn application_and_kubernetes_outputs_parse_in_tbots_shape() {
        let text = "version: v2\nstorage: {type: directory, path: /d}\nproxy_server: p:1\noutputs:\n  - type: application\n    destination: {type: directory, path: /opt/app}\n    app_name: grafana\n  - type: kubernetes\n    destination: {type: directory, path: /opt/kube}\n    kubernetes_cluster: dev\n    disable_exec_plugin: true\n";
        let c = resolve(text, &BotStartArgs::default()).unwrap();
        assert_eq!(
            c.outputs,
            vec![
                Output::Application {
                    dir: "/opt/app".into(),
                    app: "grafana".into()
                },
                Output::Kubernetes {
                    dir: "/opt/kube".into(),
                    cluster: "dev".into()
                }
            ]
        );
        let host = "version: v2\nstorage: {type: directory, path: /d}\nproxy_server: p:1\noutputs:\n  - type: ssh_host\n    destination: {type: directory, path: /opt/sshd}\n    principals: [web1, 10.0.0.5]\n";
        let c = resolve(host, &BotStartArgs::default()).unwrap();
        assert_eq!(
            c.outputs,
            vec![Output::SshHost {
                dir: "/opt/sshd".into(),
                principals: vec!["web1".into(), "10.0.0.5".into()]
            }]
        );
        let none = host.replace("[web1, 10.0.0.5]", "[' ']");
        let e = resolve(&none, &BotStartArgs::default()).unwrap_err();
        assert!(e.to_string().contains("principals"), "{e}");
        let unnamed = text.replace("app_name: grafana", "app_name: ''");
        let e = resolve(&unnamed, &BotStartArgs::default()).unwrap_err();
        assert!(e.to_string().contains("app_name"), "{e}");
        let missing = text.replace("    kubernetes_cluster: dev\n", "");
        let e = resolve(&missing, &BotStartArgs::default()).unwrap_err();
        assert!(e.to_string().contains("kubernetes_cluster"), "{e}");
    }

    #[test]
    fn a_spiffe_svid_output_parses_and_its_path_is_checked() {
        let svid = "version: v2\nstorage: {type: directory, path: /d}\nproxy_server: p:1\noutputs:\n  - type: spiffe-svid\n    destination: {type: directory, path: /opt/svid}\n    svid: {path: PATH}\n";
        let c = resolve(&svid.replace("PATH", "/svc/foo"), &BotStartArgs::default()).unwrap();
        assert_eq!(
            c.outputs,
            vec![Output::SpiffeSvid {
                dir: "/opt/svid".into(),
                path: "/svc/foo".into()
            }]
        );
        for bad in ["svc/foo", "/svc/", "/svc/../x"] {
            let e = resolve(&svid.replace("PATH", bad), &BotStartArgs::default()).unwrap_err();
            assert!(e.to_string().contains("outputs.svid.path"), "{bad}: {e}");
        }
        let no_svid = svid.replace("    svid: {path: PATH}\n", "");
        let e = resolve(&no_svid, &BotStartArgs::default()).unwrap_err();
        assert!(e.to_string().contains("svid"), "{e}");
        let sans = svid.replace("{path: PATH}", "{path: /a, sans: {dns: [x]}}");
        let e = resolve(&sans, &BotStartArgs::default()).unwrap_err();
        assert!(e.to_string().contains("sans"), "{e}");
    }

    #[test]
    fn bounds_and_required_fields_are_checked() {
        let e = resolve("version: v2\n", &BotStartArgs::default()).unwrap_err();
        assert!(e.to_string().starts_with("storage"), "{e}");
        let args = BotStartArgs {
            data_dir: Some("/d".into()),
            proxy: Some("p:1".into()),
            certificate_ttl: Some("30s".into()),
            ..BotStartArgs::default()
        };
        assert!(
            resolve("", &args)
                .unwrap_err()
                .to_string()
                .contains("certificate_ttl")
        );
        let args = BotStartArgs {
            certificate_ttl: Some("1m".into()),
            renewal_interval: Some("2m".into()),
            ..args
        };
        assert!(
            resolve("", &args)
                .unwrap_err()
                .to_string()
                .contains("renewal_interval")
        );
        let e = resolve("version: v1\n", &BotStartArgs::default()).unwrap_err();
        assert!(e.to_string().contains("version"), "{e}");
    }
}
