//! `hop admin status`: the cluster's name, version, counts, CA pin and locking mode, and each
//! certificate authority's rotation phase (mode, next phase and when for an automatic one) and
//! fingerprints: during a rotation, every trusted key's, the signing key marked.

use tonic::transport::Channel;

use super::table;
use crate::cli::{Output, OutputFormat};
use hop_api::proto::auth_admin_client::AuthAdminClient;
use hop_api::proto::{AuthorityStatus, StatusRequest, StatusResponse};
use hop_api::timestamps::rfc3339_unix;
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
    let cas: Vec<_> = s.authorities.iter().map(authority_json).collect();
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
    print_phases(&s.authorities);
}

/// One CA as JSON: its phase, mode, next phase, and every trusted key (the signer first).
fn authority_json(a: &AuthorityStatus) -> serde_json::Value {
    let when = |unix: i64| (unix > 0).then(|| rfc3339_unix(unix));
    serde_json::json!({
        "type": a.kind,
        "ssh_fingerprint": a.ssh_fingerprint,
        "tls_pin": a.tls_pin,
        "phase": or_standby(&a.phase),
        "mode": a.mode,
        "next_phase": (!a.next_phase.is_empty()).then_some(&a.next_phase),
        "next_phase_at": when(a.next_phase_unix),
        "started": when(a.started_unix),
        "changed": when(a.changed_unix),
        "ssh_fingerprints": a.ssh_fingerprints,
        "tls_pins": a.tls_pins,
        "stale": a.stale,
    })
}

fn or_standby(phase: &str) -> &str {
    if phase.is_empty() { "standby" } else { phase }
}

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_string()
    } else {
        s.to_string()
    }
}

/// Each CA's phase and signing key; then, for the CAs in a rotation, every trusted key with the
/// signing one marked (what `hop admin status` and `hop admin auth rotate` print).
pub(super) fn print_phases(authorities: &[AuthorityStatus]) {
    let rows: Vec<Vec<String>> = authorities.iter().map(authority_row).collect();
    table(
        &[
            "CA",
            "PHASE",
            "MODE",
            "NEXT",
            "SSH FINGERPRINT",
            "TLS KEY PIN",
        ],
        &rows,
    );
    let keys: Vec<Vec<String>> = authorities.iter().flat_map(key_rows).collect();
    if !keys.is_empty() {
        println!("\nTrusted keys of the CAs in a rotation:");
        table(&["CA", "KEY", "SSH FINGERPRINT", "TLS KEY PIN"], &keys);
    }
    let stale: Vec<Vec<String>> = authorities
        .iter()
        .flat_map(|a| a.stale.iter().map(|s| vec![a.kind.clone(), s.clone()]))
        .collect();
    if !stale.is_empty() {
        println!("\nStill on another key than the signing one:");
        table(&["CA", "HOST"], &stale);
    }
}

fn authority_row(a: &AuthorityStatus) -> Vec<String> {
    let next = if a.next_phase.is_empty() {
        "-".to_string()
    } else if a.next_phase_unix > 0 {
        format!("{} at {}", a.next_phase, rfc3339_unix(a.next_phase_unix))
    } else {
        a.next_phase.clone()
    };
    vec![
        a.kind.clone(),
        or_standby(&a.phase).to_string(),
        or_dash(&a.mode),
        next,
        or_dash(&a.ssh_fingerprint),
        or_dash(&a.tls_pin),
    ]
}

/// A CA's trusted keys, the signer first and marked, when it has more than one.
fn key_rows(a: &AuthorityStatus) -> Vec<Vec<String>> {
    let n = a.ssh_fingerprints.len().max(a.tls_pins.len());
    if n < 2 {
        return Vec::new();
    }
    (0..n)
        .map(|i| {
            vec![
                a.kind.clone(),
                if i == 0 { "signs" } else { "trusted" }.to_string(),
                or_dash(a.ssh_fingerprints.get(i).map_or("", String::as_str)),
                or_dash(a.tls_pins.get(i).map_or("", String::as_str)),
            ]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotating_ca_shows_its_phase_and_both_keys_with_the_signer_first() {
        let a = AuthorityStatus {
            kind: "host".into(),
            ssh_fingerprint: "SHA256:new".into(),
            tls_pin: "sha256:new".into(),
            phase: "update_clients".into(),
            mode: "auto".into(),
            ssh_fingerprints: vec!["SHA256:new".into(), "SHA256:old".into()],
            tls_pins: vec!["sha256:new".into(), "sha256:old".into()],
            next_phase: "update_servers".into(),
            next_phase_unix: 1_800_000_000,
            ..Default::default()
        };
        let row = authority_row(&a);
        assert_eq!(&row[..3], ["host", "update_clients", "auto"]);
        assert!(row[3].starts_with("update_servers at 2027-"), "{}", row[3]);
        let keys = key_rows(&a);
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0][1..], ["signs", "SHA256:new", "sha256:new"]);
        assert_eq!(keys[1][1..], ["trusted", "SHA256:old", "sha256:old"]);
        let standby = AuthorityStatus {
            kind: "jwt".into(),
            ..Default::default()
        };
        assert_eq!(authority_row(&standby)[1..4], ["standby", "-", "-"]);
        assert!(key_rows(&standby).is_empty());
        assert_eq!(authority_json(&a)["next_phase"], "update_servers");
    }
}
