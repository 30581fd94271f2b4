//! `hop admin auth`: export the cluster's CA keys and certificates, rotate the CAs (Auth walks
//! the phases; this only asks and shows where each CA is), and sign credentials for servers Hop
//! reaches without an agent (a stock sshd, a database).

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use tonic::transport::Channel;

use super::ttl_seconds;
use crate::cli::{AuthCommand, ExportFormat, ExportKind, RotateArgs, SignFormat};
use hop_api::proto::auth_admin_client::AuthAdminClient;
use hop_api::proto::database_access_client::DatabaseAccessClient;
use hop_api::proto::openssh_nodes_client::OpensshNodesClient;
use hop_api::proto::{
    ExportAuthoritiesRequest, RotateCertAuthorityRequest, SignDatabaseServerRequest,
    SignOpensshHostRequest,
};
use hop_api::timestamps::rfc3339_unix as ts;
use hop_net::connect::status_error;

pub(super) async fn run(
    c: &mut AuthAdminClient<Channel>,
    ch: Channel,
    cmd: AuthCommand,
) -> anyhow::Result<()> {
    match cmd {
        AuthCommand::Export { kind, format } => export(c, kind, format).await,
        AuthCommand::Rotate(a) => rotate(c, &a).await,
        AuthCommand::Sign {
            host,
            format: SignFormat::Openssh,
            out,
            ttl,
        } => sign_openssh(ch, &host, &out, ttl).await,
        AuthCommand::Sign {
            host,
            format: SignFormat::Db,
            out,
            ttl,
        } => sign_database(ch, &host, &out, ttl).await,
    }
}

/// `hop admin auth export --type KIND [--format F]`: printed as the server renders it.
async fn export(
    c: &mut AuthAdminClient<Channel>,
    kind: ExportKind,
    format: Option<ExportFormat>,
) -> anyhow::Result<()> {
    let kind = match kind {
        ExportKind::User => "user",
        ExportKind::Host => "host",
        ExportKind::Db => "db",
        ExportKind::Jwt => "jwt",
        ExportKind::Spiffe => "spiffe",
    };
    let fmt = match format {
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
    Ok(())
}

/// What `hop admin auth rotate` asks of Auth, checked: `--phase` needs `--manual` and
/// `--manual` needs `--phase`; `--grace-period` is a duration (`30h`, `90s`).
pub(crate) fn rotate_request(a: &RotateArgs) -> anyhow::Result<RotateCertAuthorityRequest> {
    match (a.manual, a.phase) {
        (false, Some(p)) => anyhow::bail!(
            "--phase needs --manual: `hop admin auth rotate --manual --phase {p}` moves one phase; without --manual the rotation is automatic and walks the phases over --grace-period",
            p = p.as_str()
        ),
        (true, None) => anyhow::bail!(
            "--manual needs --phase (init, update_clients, update_servers, standby or rollback)"
        ),
        _ => {}
    }
    let grace_period_secs = match &a.grace_period {
        Some(d) => hop_config::parse_duration(d)
            .map_err(|e| anyhow!("--grace-period: {e}"))?
            .as_secs()
            .max(1),
        None => 0,
    };
    Ok(RotateCertAuthorityRequest {
        r#type: a.kind.as_str().to_string(),
        manual: a.manual,
        phase: a.phase.map(|p| p.as_str().to_string()).unwrap_or_default(),
        grace_period_secs,
    })
}

/// `hop admin auth rotate`: one step (or the start of an automatic rotation), then each CA's
/// phase as Auth answers it.
async fn rotate(c: &mut AuthAdminClient<Channel>, a: &RotateArgs) -> anyhow::Result<()> {
    let req = rotate_request(a)?;
    let r = c
        .rotate_cert_authority(req)
        .await
        .map_err(status_error)?
        .into_inner();
    super::status::print_phases(&r.authorities);
    Ok(())
}

/// `--host a,b`: the names, blanks dropped.
fn host_names(host: &str) -> Vec<String> {
    host.split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(str::to_string)
        .collect()
}

/// `out` with `suffix` appended to its file name.
fn with_suffix(out: &Path, suffix: &str) -> PathBuf {
    let mut p = out.to_path_buf().into_os_string();
    p.push(suffix);
    PathBuf::from(p)
}

/// `hop admin auth sign --format openssh`: a host key for a stock sshd, its certificate from the
/// host CA, and the user CA keys it must trust.
async fn sign_openssh(
    ch: Channel,
    host: &str,
    out: &Path,
    ttl: Option<String>,
) -> anyhow::Result<()> {
    let ttl = ttl_seconds(ttl.as_deref())?;
    let names = host_names(host);
    let key = hop_ca::generate_ssh_keypair(&mut rand::rng()).map_err(|e| anyhow!("{e}"))?;
    let r = OpensshNodesClient::new(ch)
        .sign_openssh_host(SignOpensshHostRequest {
            names,
            ssh_public_key: key.public_openssh.clone(),
            ttl_seconds: ttl,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let path = |suffix: &str| with_suffix(out, suffix);
    hop_net::files::write_private(&path(""), key.private_openssh.as_bytes())?;
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

/// `hop admin auth sign --format db`: a database server's key, its certificate from the db CA,
/// and the CA its clients' certificates are checked against.
async fn sign_database(
    ch: Channel,
    host: &str,
    out: &Path,
    ttl: Option<String>,
) -> anyhow::Result<()> {
    let ttl = ttl_seconds(ttl.as_deref())?;
    let names = host_names(host);
    let key = hop_ca::generate_x509_keypair(&mut rand::rng()).map_err(|e| anyhow!("{e}"))?;
    let r = DatabaseAccessClient::new(ch)
        .sign_database_server(SignDatabaseServerRequest {
            names,
            tls_public_key: key.public_spki_der.clone(),
            ttl_seconds: ttl,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let path = |ext: &str| with_suffix(out, ext);
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
        until = ts(r.expires_unix),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{RotatePhase, RotateType};

    fn args(manual: bool, phase: Option<RotatePhase>, grace: Option<&str>) -> RotateArgs {
        RotateArgs {
            kind: RotateType::All,
            manual,
            phase,
            grace_period: grace.map(str::to_string),
        }
    }

    #[test]
    fn rotate_requests_are_checked_before_they_are_sent() {
        let r = rotate_request(&args(false, None, Some("90s"))).unwrap();
        assert_eq!(
            (
                r.r#type.as_str(),
                r.manual,
                r.phase.as_str(),
                r.grace_period_secs
            ),
            ("all", false, "", 90)
        );
        let r = rotate_request(&RotateArgs {
            kind: RotateType::Host,
            ..args(true, Some(RotatePhase::UpdateClients), None)
        })
        .unwrap();
        assert_eq!(
            (
                r.r#type.as_str(),
                r.manual,
                r.phase.as_str(),
                r.grace_period_secs
            ),
            ("host", true, "update_clients", 0)
        );
        assert_eq!(
            rotate_request(&args(false, None, Some("30h")))
                .unwrap()
                .grace_period_secs,
            30 * 3600
        );
        let e = rotate_request(&args(false, Some(RotatePhase::Init), None)).unwrap_err();
        assert!(e.to_string().contains("--manual --phase init"), "{e}");
        assert!(rotate_request(&args(true, None, None)).is_err());
        let e = rotate_request(&args(false, None, Some("soon"))).unwrap_err();
        assert!(e.to_string().starts_with("--grace-period"), "{e}");
    }
}
