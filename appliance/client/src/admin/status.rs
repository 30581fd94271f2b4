//! `hop admin status`: the cluster's name, version, counts, CA pin and locking mode, and each
//! certificate authority's fingerprints.

use tonic::transport::Channel;

use super::table;
use crate::cli::{Output, OutputFormat};
use hop_api::proto::auth_admin_client::AuthAdminClient;
use hop_api::proto::{AuthorityStatus, StatusRequest, StatusResponse};
use hop_net::connect::status_error;

pub(super) async fn show(
    c: &mut AuthAdminClient<Channel>,
    Output { format }: Output,
) -> anyhow::Result<()> {
    let s = c
        .status(StatusRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    if format == OutputFormat::Json {
        print_json(&s);
    } else {
        print_text(&s);
    }
    Ok(())
}

fn print_json(s: &StatusResponse) {
    let cas: Vec<_> = s.authorities.iter().map(|a| serde_json::json!({"type": a.kind, "ssh_fingerprint": a.ssh_fingerprint, "tls_pin": a.tls_pin})).collect();
    println!(
        "{}",
        serde_json::json!({"cluster": s.cluster_name, "version": s.server_version, "ca_pin": s.ca_pin, "authorities": cas, "users": s.users, "roles": s.roles, "locking_mode": s.locking_mode, "admission_snapshot_age_secs": s.admission_snapshot_age_secs})
    );
}

fn print_text(s: &StatusResponse) {
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
    let rows: Vec<Vec<String>> = s.authorities.iter().map(authority_row).collect();
    table(&["CA", "SSH FINGERPRINT", "TLS KEY PIN"], &rows);
}

fn authority_row(a: &AuthorityStatus) -> Vec<String> {
    let or_dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    vec![
        a.kind.clone(),
        or_dash(&a.ssh_fingerprint),
        or_dash(&a.tls_pin),
    ]
}
