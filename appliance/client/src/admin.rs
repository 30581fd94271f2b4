//! `hop admin`: the administrator's tool (Teleport's `tctl`).
//!
//! This module owns how admin commands reach the Auth API (the admin socket of a local data dir,
//! or the proxy with the current login's certificate) and how results are shown: tables for
//! people, JSON or YAML for scripts. Every decision is the server's.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use tonic::transport::Channel;

use super::profile;
use crate::cli::{
    AdminArgs, AdminCommand, AuditCommand, AuthCommand, ExportFormat, ExportKind, InventoryCommand,
    NodesCommand, Output, OutputFormat, SignFormat, TokensCommand, UsersCommand,
};
use hop_api::ADMIN_SOCKET;
use hop_api::proto::auth_admin_client::AuthAdminClient;
use hop_api::proto::database_access_client::DatabaseAccessClient;
use hop_api::proto::*;
use hop_api::timestamps::rfc3339_unix as ts;
use hop_config::{DEFAULT_DATA_DIR, parse_duration};
use hop_net::connect::{admin_socket_channel, status_error, tls_channel};

async fn channel(args: &AdminArgs) -> anyhow::Result<Channel> {
    if let Some(addr) = &args.auth_server {
        let login = profile::current_login()?;
        return Ok(tls_channel(addr, &login.trust, Some(&login.cert)).await?);
    }
    let dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    Ok(admin_socket_channel(dir.join(ADMIN_SOCKET)).await?)
}

/// Prints rows as an aligned table with a header.
pub(super) fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0)))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(header.iter().map(|s| s.to_string()).collect());
    line(widths.iter().map(|w| "-".repeat(*w)).collect());
    for r in rows {
        line(r.clone());
    }
}

pub(super) fn print_docs(docs: &[serde_json::Value], format: OutputFormat) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&docs)?),
        OutputFormat::Yaml | OutputFormat::Text => {
            for (i, d) in docs.iter().enumerate() {
                if i > 0 {
                    println!("---");
                }
                print!(
                    "{}",
                    serde_saphyr::to_string(d).map_err(|e| anyhow!("cannot render YAML: {e}"))?
                );
            }
        }
    }
    Ok(())
}

/// Resources of a kind (all of them when `name` is empty) as JSON documents.
pub(super) async fn get_docs(
    c: &mut AuthAdminClient<Channel>,
    kind: &str,
    name: &str,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let r = c
        .get_resources(GetResourcesRequest {
            kind: kind.into(),
            name: name.into(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    Ok(r.json
        .iter()
        .map(|j| serde_json::from_str(j))
        .collect::<Result<_, _>>()?)
}

fn strs(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn print_invite(inv: InviteResponse, created: bool, format: OutputFormat) -> anyhow::Result<()> {
    let url = &inv.url;
    if format == OutputFormat::Json {
        println!(
            "{}",
            serde_json::json!({ "user": inv.username, "token": inv.token, "url": url, "proxy": inv.proxy_addr, "ca_pin": inv.ca_pin, "expires": ts(inv.expires_unix) })
        );
        return Ok(());
    }
    let left = Duration::from_secs(u64::try_from(inv.expires_unix - now_unix()).unwrap_or(0));
    println!(
        "User {:?} has been {} and needs to set a password. Share this link; it is valid for {} (until {}):\n\n  {url}\n\nOr, from a terminal:\n\n  hop signup {} --proxy {} --ca-pin {pin}\n",
        inv.username,
        if created { "created" } else { "reset" },
        human(left),
        ts(inv.expires_unix),
        inv.token,
        inv.proxy_addr,
        pin = inv.ca_pin,
    );
    Ok(())
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 && s % 3600 < 60 {
        format!("{}h", (s + 30) / 3600)
    } else if s >= 60 {
        format!("{}m", s.div_ceil(60))
    } else {
        format!("{s}s")
    }
}

fn split_kind_name(resource: &str) -> (String, Option<String>) {
    match resource.split_once('/') {
        Some((k, n)) if !n.is_empty() => (k.to_string(), Some(n.to_string())),
        Some((k, _)) => (k.to_string(), None),
        None => (resource.to_string(), None),
    }
}

pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    let ch = channel(&args).await?;
    let mut c = AuthAdminClient::new(ch.clone());
    let only_nodes = matches!(args.command, AdminCommand::Nodes(NodesCommand::Ls(_)));
    match args.command {
        AdminCommand::Status(Output { format }) => {
            let s = c
                .status(StatusRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            if format == OutputFormat::Json {
                let cas: Vec<_> = s.authorities.iter().map(|a| serde_json::json!({"type": a.kind, "ssh_fingerprint": a.ssh_fingerprint, "tls_pin": a.tls_pin})).collect();
                println!(
                    "{}",
                    serde_json::json!({"cluster": s.cluster_name, "version": s.server_version, "ca_pin": s.ca_pin, "authorities": cas, "users": s.users, "roles": s.roles, "locking_mode": s.locking_mode, "admission_snapshot_age_secs": s.admission_snapshot_age_secs})
                );
            } else {
                println!(
                    "Cluster:  {}\nVersion:  {}\nUsers:    {}\nRoles:    {}\nCA pin:   {}\nLocking:  {} (access data {}s old)\n",
                    s.cluster_name,
                    s.server_version,
                    s.users,
                    s.roles,
                    s.ca_pin,
                    s.locking_mode,
                    s.admission_snapshot_age_secs
                );
                let rows: Vec<Vec<String>> = s
                    .authorities
                    .iter()
                    .map(|a| {
                        vec![
                            a.kind.clone(),
                            if a.ssh_fingerprint.is_empty() {
                                "-".into()
                            } else {
                                a.ssh_fingerprint.clone()
                            },
                            if a.tls_pin.is_empty() {
                                "-".into()
                            } else {
                                a.tls_pin.clone()
                            },
                        ]
                    })
                    .collect();
                table(&["CA", "SSH FINGERPRINT", "TLS KEY PIN"], &rows);
            }
        }
        AdminCommand::Nodes(NodesCommand::Add {
            openssh,
            name,
            addr,
            labels,
        }) => {
            if !openssh {
                bail!(
                    "only agentless OpenSSH nodes are registered (--openssh); node agents join with a token: `hop admin tokens add --type node`"
                );
            }
            let mut map = std::collections::BTreeMap::new();
            for part in labels.iter().flat_map(|l| l.split(',')) {
                let part = part.trim();
                if part.is_empty() {
                    continue;
                }
                let (k, v) = part
                    .split_once('=')
                    .ok_or_else(|| anyhow!("--labels: {part:?} is not key=value"))?;
                map.insert(k.to_string(), v.to_string());
            }
            let node = hop_rbac::NodeResource::openssh(&name, &addr, map);
            node.validate().map_err(|e| anyhow!("{e}"))?;
            c.create_resources(CreateResourcesRequest {
                yaml: hop_rbac::to_yaml(&hop_rbac::Resource::Node(node)),
                source: "hop admin nodes add".into(),
                force: false,
            })
            .await
            .map_err(status_error)?;
            println!(
                "OpenSSH node {name} ({addr}) registered. Its sshd needs `hop admin auth sign --format openssh --host {name} --out FILE` (HostKey, HostCertificate, TrustedUserCAKeys)."
            );
        }
        AdminCommand::Nodes(NodesCommand::Rm { name }) => {
            c.delete_resource(DeleteResourceRequest {
                kind: "node".into(),
                name: name.clone(),
            })
            .await
            .map_err(status_error)?;
            println!("OpenSSH node {name} removed");
        }
        AdminCommand::Inventory(InventoryCommand::Ls(Output { format }))
        | AdminCommand::Nodes(NodesCommand::Ls(Output { format })) => {
            let mut r = c
                .list_inventory(ListInventoryRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            let mut openssh: Vec<serde_json::Value> = Vec::new();
            if only_nodes {
                r.agents.retain(|a| a.services.iter().any(|s| s == "node"));
                openssh = get_docs(&mut c, "node", "").await?;
            }
            if format != OutputFormat::Text {
                let v: Vec<_> = r
                    .agents
                    .iter()
                    .map(|a| {
                        serde_json::json!({
                            "host_id": a.host_id, "version": a.version, "services": a.services,
                            "remote_addr": a.remote_addr, "connected": ts(a.connected_unix),
                            "last_heartbeat": ts(a.last_heartbeat_unix), "pooled_data_connections": a.pooled_data_connections,
                            "apps": a.apps.iter().map(|x| &x.name).collect::<Vec<_>>(),
                            "proxy": a.proxy_id,
                        })
                    })
                    .collect();
                let v: Vec<serde_json::Value> = v
                    .into_iter()
                    .chain(openssh.iter().map(|n| {
                        serde_json::json!({
                            "name": n["metadata"]["name"], "services": ["openssh"],
                            "addr": n["spec"]["addr"], "labels": n["metadata"]["labels"],
                        })
                    }))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let openssh_rows = openssh.iter().map(|n| {
                    vec![
                        n["metadata"]["name"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                        "openssh".to_string(),
                        n["spec"]["addr"].as_str().unwrap_or_default().to_string(),
                        String::new(),
                        "-".to_string(),
                    ]
                });
                let rows: Vec<Vec<String>> = r
                    .agents
                    .iter()
                    .map(|a| {
                        vec![
                            a.host_id.clone(),
                            a.services.join(","),
                            a.remote_addr.clone(),
                            a.apps
                                .iter()
                                .map(|x| x.name.clone())
                                .collect::<Vec<_>>()
                                .join(","),
                            ts(a.last_heartbeat_unix),
                        ]
                    })
                    .chain(openssh_rows)
                    .collect();
                table(
                    &["HOST ID", "SERVICES", "ADDRESS", "APPS", "LAST HEARTBEAT"],
                    &rows,
                );
            }
        }
        AdminCommand::Users(cmd) => users(&mut c, cmd).await?,
        AdminCommand::Lock(a) => super::locks::lock(&mut c, a).await?,
        AdminCommand::Locks(cmd) => super::locks::locks(&mut c, cmd).await?,
        AdminCommand::Audit(cmd) => audit(&mut c, cmd).await?,
        AdminCommand::Loadtest(_) => bail!("`hop admin loadtest` does not use the admin API"),
        AdminCommand::Tokens(cmd) => tokens(&mut c, cmd).await?,
        AdminCommand::Create { file, force } => {
            let (yaml, source) = if file.as_os_str() == "-" {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
                (s, "<stdin>".to_string())
            } else {
                (
                    std::fs::read_to_string(&file)
                        .with_context(|| format!("cannot read {}", file.display()))?,
                    file.display().to_string(),
                )
            };
            let r = c
                .create_resources(CreateResourcesRequest {
                    yaml,
                    source,
                    force,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            for w in &r.warnings {
                eprintln!("warning: {w}");
            }
            for w in r.written {
                println!(
                    "{w} has been {}",
                    if force {
                        "created or updated"
                    } else {
                        "created"
                    }
                );
            }
        }
        AdminCommand::Get {
            resource,
            out: Output { format },
        } => {
            let (kind, name) = split_kind_name(&resource);
            let docs = get_docs(&mut c, &kind, name.as_deref().unwrap_or_default()).await?;
            print_docs(
                &docs,
                if format == OutputFormat::Text {
                    OutputFormat::Yaml
                } else {
                    format
                },
            )?;
        }
        AdminCommand::Rm { resource } => {
            let (kind, name) = split_kind_name(&resource);
            let Some(name) = name else {
                bail!("expected KIND/NAME, for example role/dev")
            };
            c.delete_resource(DeleteResourceRequest {
                kind: kind.clone(),
                name: name.clone(),
            })
            .await
            .map_err(status_error)?;
            println!("{kind}/{name} has been deleted");
        }
        AdminCommand::Auth(AuthCommand::Export { kind, format: f }) => {
            let kind = match kind {
                ExportKind::User => "user",
                ExportKind::Host => "host",
                ExportKind::Db => "db",
                ExportKind::Jwt => "jwt",
            };
            let fmt = match f {
                Some(ExportFormat::Openssh) => "openssh",
                Some(ExportFormat::Pem) => "pem",
                None => "",
            };
            let r = c
                .export_authorities(ExportAuthoritiesRequest {
                    kind: kind.into(),
                    format: fmt.into(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            print!("{}", r.data);
        }
        AdminCommand::Auth(AuthCommand::Sign {
            host,
            format: SignFormat::Openssh,
            out,
            ttl,
        }) => sign_openssh(ch, &host, &out, ttl).await?,
        AdminCommand::Auth(AuthCommand::Sign {
            host,
            format: SignFormat::Db,
            out,
            ttl,
        }) => {
            let ttl = match ttl {
                Some(t) => parse_duration(&t)
                    .map_err(|e| anyhow::anyhow!("--ttl: {e}"))?
                    .as_secs(),
                None => 0,
            };
            let names: Vec<String> = host
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(str::to_string)
                .collect();
            let key = hop_ca::generate_x509_keypair(&mut rand::rng())
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let r = DatabaseAccessClient::new(ch)
                .sign_database_server(SignDatabaseServerRequest {
                    names,
                    tls_public_key: key.public_spki_der.clone(),
                    ttl_seconds: ttl,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            let path = |ext: &str| {
                let mut p = out.clone().into_os_string();
                p.push(ext);
                std::path::PathBuf::from(p)
            };
            hop_net::files::write_private(&path(".key"), key.private_pkcs8_pem.as_bytes())?;
            std::fs::write(path(".crt"), &r.tls_certificate_pem)
                .with_context(|| format!("writing {}", path(".crt").display()))?;
            std::fs::write(path(".cas"), &r.db_ca_pem)
                .with_context(|| format!("writing {}", path(".cas").display()))?;
            println!(
                "Wrote {key}, {crt} and {cas} (valid until {until}).\n\
                 PostgreSQL: ssl = on, ssl_key_file = '{key}', ssl_cert_file = '{crt}', ssl_ca_file = '{cas}',\n\
                 and in pg_hba.conf `hostssl all all 0.0.0.0/0 cert` for the users Hop connects as.",
                key = path(".key").display(),
                crt = path(".crt").display(),
                cas = path(".cas").display(),
                until = hop_api::timestamps::rfc3339_unix(r.expires_unix),
            );
        }
    }
    Ok(())
}

/// `hop admin auth sign --format openssh`: a host key for a stock sshd, its certificate from the
/// host CA, and the user CA keys it must trust.
async fn sign_openssh(
    ch: Channel,
    host: &str,
    out: &std::path::Path,
    ttl: Option<String>,
) -> anyhow::Result<()> {
    let ttl = match ttl {
        Some(t) => parse_duration(&t)
            .map_err(|e| anyhow!("--ttl: {e}"))?
            .as_secs(),
        None => 0,
    };
    let names: Vec<String> = host
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(str::to_string)
        .collect();
    let key = hop_ca::generate_ssh_keypair(&mut rand::rng()).map_err(|e| anyhow!("{e}"))?;
    let r = hop_api::proto::openssh_nodes_client::OpensshNodesClient::new(ch)
        .sign_openssh_host(SignOpensshHostRequest {
            names,
            ssh_public_key: key.public_openssh.clone(),
            ttl_seconds: ttl,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let path = |suffix: &str| {
        let mut p = out.to_path_buf().into_os_string();
        p.push(suffix);
        PathBuf::from(p)
    };
    profile::write_private(&path(""), key.private_openssh.as_bytes())?;
    for (suffix, text) in [
        (".pub", format!("{}\n", key.public_openssh.trim())),
        ("-cert.pub", format!("{}\n", r.ssh_host_certificate.trim())),
        ("-user-ca.pub", r.trusted_user_ca_keys.clone()),
    ] {
        std::fs::write(path(suffix), text)
            .with_context(|| format!("writing {}", path(suffix).display()))?;
    }
    println!(
        "Wrote {key}, {cert} and {cas} (valid until {until}). In sshd_config:\n  HostKey {key}\n  HostCertificate {cert}\n  TrustedUserCAKeys {cas}",
        key = path("").display(),
        cert = path("-cert.pub").display(),
        cas = path("-user-ca.pub").display(),
        until = ts(r.expires_unix),
    );
    Ok(())
}

async fn users(c: &mut AuthAdminClient<Channel>, cmd: UsersCommand) -> anyhow::Result<()> {
    match cmd {
        UsersCommand::Add {
            name,
            roles,
            logins,
            traits,
            out: Output { format },
        } => {
            let mut map = std::collections::HashMap::new();
            for t in traits {
                let (k, v) = t
                    .split_once('=')
                    .ok_or_else(|| anyhow!("--trait: expected NAME=VALUE, got {t:?}"))?;
                map.entry(k.to_string())
                    .or_insert_with(|| StringList { values: vec![] })
                    .values
                    .push(v.to_string());
            }
            let inv = c
                .create_user(CreateUserRequest {
                    name,
                    roles,
                    logins,
                    traits: map,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            print_invite(inv, true, format)?;
        }
        UsersCommand::Reset {
            name,
            out: Output { format },
        } => {
            let inv = c
                .reset_user(ResetUserRequest { name })
                .await
                .map_err(status_error)?
                .into_inner();
            print_invite(inv, false, format)?;
        }
        UsersCommand::Lock { name, ttl, reason } => {
            let ttl_seconds = match ttl {
                Some(t) => parse_duration(&t)
                    .map_err(|e| anyhow!("--ttl: {e}"))?
                    .as_secs(),
                None => 0,
            };
            c.lock_user(LockUserRequest {
                name: name.clone(),
                ttl_seconds,
                reason: reason.unwrap_or_default(),
            })
            .await
            .map_err(status_error)?;
            println!("User {name:?} is locked");
        }
        UsersCommand::Unlock { name } => {
            c.unlock_user(UnlockUserRequest { name: name.clone() })
                .await
                .map_err(status_error)?;
            println!("User {name:?} has been unlocked");
        }
        UsersCommand::Rm { name } => {
            c.delete_resource(DeleteResourceRequest {
                kind: "user".into(),
                name: name.clone(),
            })
            .await
            .map_err(status_error)?;
            println!("User {name:?} has been deleted");
        }
        UsersCommand::Ls(Output { format }) => {
            let docs = get_docs(c, "user", "").await?;
            if format != OutputFormat::Text {
                return print_docs(&docs, format);
            }
            let rows: Vec<Vec<String>> = docs
                .iter()
                .map(|d| {
                    let locked = d["status"]["locked"].as_bool().unwrap_or(false);
                    vec![
                        d["metadata"]["name"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                        strs(&d["spec"]["roles"]).join(","),
                        strs(&d["spec"]["traits"]["logins"]).join(","),
                        if locked {
                            format!(
                                "until {}",
                                d["status"]["locked_until"].as_str().unwrap_or("?")
                            )
                        } else {
                            "-".into()
                        },
                    ]
                })
                .collect();
            table(&["USER", "ROLES", "LOGINS", "LOCKED"], &rows);
        }
    }
    Ok(())
}

async fn tokens(c: &mut AuthAdminClient<Channel>, cmd: TokensCommand) -> anyhow::Result<()> {
    match cmd {
        TokensCommand::Add {
            roles,
            ttl,
            value,
            uses,
            out: Output { format },
        } => {
            let ttl = parse_duration(&ttl).map_err(|e| anyhow!("--ttl: {e}"))?;
            let r = c
                .create_token(CreateTokenRequest {
                    roles,
                    ttl_seconds: ttl.as_secs(),
                    value: value.unwrap_or_default(),
                    uses: uses.unwrap_or(0),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            let uses_text = uses.map_or_else(|| "any number of".into(), |n| n.to_string());
            if format == OutputFormat::Json {
                println!(
                    "{}",
                    serde_json::json!({"id": r.id, "token": r.token, "roles": r.roles, "uses": uses, "expires": ts(r.expires_unix)})
                );
            } else {
                println!(
                    "Join token {id} is valid until {until} for {uses_text} joins as: {roles}.\n\
                     Its secret is shown this once (Hop keeps only a hash):\n\n  {secret}\n\n\
                     Start an agent with the secret in a file readable only by it:\n\n  \
                     hop start --roles {types} --proxy PROXY:3080 --token-file FILE\n",
                    id = r.id,
                    until = ts(r.expires_unix),
                    roles = r.roles.join(", "),
                    secret = r.token,
                    types = r.roles.join(","),
                );
            }
        }
        TokensCommand::Ls(Output { format }) => {
            let docs = get_docs(c, "token", "").await?;
            if format != OutputFormat::Text {
                return print_docs(&docs, format);
            }
            let rows: Vec<Vec<String>> = docs
                .iter()
                .map(|d| {
                    vec![
                        d["metadata"]["name"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                        strs(&d["spec"]["roles"]).join(","),
                        d["metadata"]["expires"].as_str().unwrap_or("-").to_string(),
                        d["spec"]["uses"]
                            .as_u64()
                            .map(|u| u.to_string())
                            .unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            table(&["ID", "TYPE", "EXPIRES", "USES LEFT"], &rows);
        }
        TokensCommand::Rm { id } => {
            c.delete_resource(DeleteResourceRequest {
                kind: "token".into(),
                name: id.clone(),
            })
            .await
            .map_err(status_error)?;
            println!("Join token {id} has been deleted");
        }
    }
    Ok(())
}

/// `--since`/`--until`: RFC 3339, or an age such as `90m`, `24h`, `7d`; microseconds since the epoch.
pub(crate) fn parse_when(flag: &str, v: Option<&str>) -> anyhow::Result<i64> {
    let Some(v) = v else { return Ok(0) };
    let t = if let Ok(d) = parse_duration(v) {
        SystemTime::now()
            .checked_sub(d)
            .ok_or_else(|| anyhow!("{flag}: {v:?} is too far back"))?
    } else {
        let odt = time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
            .map_err(|_| anyhow!("{flag}: expected RFC 3339 (2026-11-21T10:00:00Z) or an age (90m, 24h, 7d), got {v:?}"))?;
        SystemTime::from(odt)
    };
    Ok(t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
        .max(1))
}

async fn audit(c: &mut AuthAdminClient<Channel>, cmd: AuditCommand) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::Search {
            since,
            until,
            types,
            user,
            session,
            text,
            oldest_first,
            limit,
            cursor,
            out,
        } => {
            let r = c
                .search_events(SearchEventsRequest {
                    from_unix_micros: parse_when("--since", since.as_deref())?,
                    to_unix_micros: parse_when("--until", until.as_deref())?,
                    event_types: types,
                    user: user.unwrap_or_default(),
                    session_id: session.unwrap_or_default(),
                    text: text.unwrap_or_default(),
                    oldest_first,
                    limit,
                    cursor: cursor.unwrap_or_default(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            if out.format != OutputFormat::Text {
                for e in &r.events_json {
                    println!("{e}");
                }
            } else {
                let rows: Vec<Vec<String>> = r
                    .events_json
                    .iter()
                    .filter_map(|j| serde_json::from_str::<serde_json::Value>(j).ok())
                    .map(|e| {
                        let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
                        vec![
                            s("time"),
                            s("event"),
                            s("code"),
                            s("user"),
                            if e["success"].as_bool().unwrap_or(true) {
                                "ok".into()
                            } else {
                                format!("failed: {}", s("error"))
                            },
                        ]
                    })
                    .collect();
                table(&["TIME", "EVENT", "CODE", "USER", "OUTCOME"], &rows);
            }
            if !r.next_cursor.is_empty() {
                eprintln!("More events: --cursor {}", r.next_cursor);
            }
        }
        AuditCommand::Verify { since } => {
            let r = c
                .verify_audit(VerifyAuditRequest {
                    since_unix_micros: parse_when("--since", since.as_deref())?,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            if r.intact {
                println!(
                    "Audit log intact: {} events in {} daily chains verified.",
                    r.events_checked, r.segments
                );
            } else {
                println!(
                    "AUDIT LOG BROKEN at event seq {} (id {}): {}",
                    r.break_seq, r.break_id, r.first_break
                );
                println!(
                    "{} events in {} daily chains checked before the break.",
                    r.events_checked, r.segments
                );
                std::process::exit(2);
            }
        }
        AuditCommand::Export { since, until } => {
            use std::io::Write as _;
            let mut stream = c
                .export_events(ExportEventsRequest {
                    from_unix_micros: parse_when("--since", since.as_deref())?,
                    to_unix_micros: parse_when("--until", until.as_deref())?,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            let mut out = std::io::stdout().lock();
            while let Some(chunk) = stream.message().await.map_err(status_error)? {
                out.write_all(&chunk.data)?;
            }
            out.flush()?;
        }
    }
    Ok(())
}
