//! Trust exports in the formats stock tools read, so that OpenSSH and databases trust Hop's
//! certificates with no Hop code: `TrustedUserCAKeys` lines for sshd, `@cert-authority` lines for
//! `known_hosts`, and PEM bundles for TLS clients and database servers. Only public material is
//! ever written here.

use crate::authority::{CaKind, CaPublic};

/// One `ssh-ed25519 AAAA… comment` line per user CA, usable verbatim as sshd's
/// `TrustedUserCAKeys` file.
#[must_use]
pub fn export_trusted_user_ca_keys(cas: &[CaPublic]) -> String {
    ssh_lines(cas, CaKind::User, "")
}

/// One `@cert-authority * ssh-ed25519 AAAA… comment` line per host CA, for `known_hosts`.
#[must_use]
pub fn export_known_hosts(cas: &[CaPublic]) -> String {
    ssh_lines(cas, CaKind::Host, "@cert-authority * ")
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

fn ssh_lines(cas: &[CaPublic], kind: CaKind, prefix: &str) -> String {
    let mut out = String::new();
    for line in cas
        .iter()
        .filter(|ca| ca.kind == kind)
        .filter_map(|ca| ca.ssh_public.as_deref())
    {
        out.push_str(prefix);
        out.push_str(line.trim());
        out.push('\n');
    }
    out
}
