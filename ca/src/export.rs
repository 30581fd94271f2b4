//! Trust exports in the formats stock tools read, so that OpenSSH and databases trust Hop's
//! certificates with no Hop code: `TrustedUserCAKeys` lines for sshd, `@cert-authority` lines for
//! `known_hosts`, and PEM bundles for TLS clients and database servers. Only public material is
//! ever written here.

use crate::authority::{CaKind, CaPublic};

/// One `ssh-ed25519 AAAA… comment` line per CA that signs SSH user certificates (the user CA,
/// or the OpenSSH CA agentless nodes trust), usable verbatim as sshd's `TrustedUserCAKeys` file.
#[must_use]
pub fn export_trusted_user_ca_keys(cas: &[CaPublic]) -> String {
    let mut out = ssh_lines(cas, CaKind::User);
    out.push_str(&ssh_lines(cas, CaKind::OpenSsh));
    out
}

/// One `@cert-authority *.CLUSTER ssh-ed25519 AAAA… comment` line per host CA, for
/// `known_hosts`. The pattern is the CA's cluster's subdomain, where every host certificate it
/// signs names its host (`NODE.CLUSTER`, `HOSTID.CLUSTER`, `proxy.CLUSTER`): a host CA is not
/// trusted for hosts outside its cluster, as `*` would have it.
#[must_use]
pub fn export_known_hosts(cas: &[CaPublic]) -> String {
    let mut out = String::new();
    for ca in cas.iter().filter(|ca| ca.kind == CaKind::Host) {
        let Some(key) = ca.ssh_public.as_deref() else {
            continue;
        };
        out.push_str(&format!(
            "@cert-authority *.{} {}\n",
            ca.cluster,
            key.trim()
        ));
    }
    out
}

/// The X.509 CA certificates of `cas` (every kind that has one), concatenated as PEM.
#[must_use]
pub fn export_pem(cas: &[CaPublic]) -> String {
    let mut out = String::new();
    for pem in cas.iter().filter_map(|ca| ca.x509_cert_pem.as_deref()) {
        out.push_str(pem.trim_end());
        out.push('\n');
    }
    out
}

fn ssh_lines(cas: &[CaPublic], kind: CaKind) -> String {
    let mut out = String::new();
    for line in cas
        .iter()
        .filter(|ca| ca.kind == kind)
        .filter_map(|ca| ca.ssh_public.as_deref())
    {
        out.push_str(line.trim());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca(kind: CaKind, cluster: &str, key: &str) -> CaPublic {
        CaPublic {
            kind,
            cluster: cluster.into(),
            ssh_public: Some(format!("{key}\n")),
            x509_cert_pem: None,
            jwt_public_pem: None,
            ssh_fingerprint: None,
            x509_spki_sha256: None,
        }
    }

    #[test]
    fn known_hosts_trusts_a_host_ca_for_its_own_cluster_only() {
        let cas = [
            ca(CaKind::User, "c.example", "ssh-ed25519 USER user-ca"),
            ca(CaKind::Host, "c.example", "ssh-ed25519 HOST host-ca"),
        ];
        assert_eq!(
            export_known_hosts(&cas),
            "@cert-authority *.c.example ssh-ed25519 HOST host-ca\n"
        );
        assert_eq!(
            export_trusted_user_ca_keys(&cas),
            "ssh-ed25519 USER user-ca\n"
        );
    }
}
