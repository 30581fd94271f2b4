//! `hop kube credentials`: kubectl's exec credential plugin. kubectl runs it for every command
//! (the kubeconfig's user entry names it) and reads an `ExecCredential` from its output: the
//! saved kube certificate and key, or a new pair when the saved one has under a minute left
//! (a per-session MFA certificate, valid one minute, under 5 s: its renewal is a tap).
//!
//! Renewing needs a valid `hop login`; the kubeconfig is never edited here.

use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};

use super::certificates::{self, KeyPair, now_unix};
use super::kubeconfig::EXEC_API_VERSION;
use super::lock::FileLock;
use crate::profile;

/// How long a plugin waits for another one's renewal.
const WAIT: Duration = Duration::from_secs(20);

/// A certificate with less than this left is renewed before kubectl gets it.
pub const RENEW_BEFORE_SECS: i64 = 60;

/// A per-session MFA certificate (valid one minute) is reused until this close to its end:
/// each renewal is a tap.
pub const MFA_RENEW_BEFORE_SECS: i64 = 5;

/// The `ExecCredential` kubectl reads: PEM certificate and key, and when to ask again.
pub fn exec_credential(pair: &KeyPair, expires_unix: i64) -> Value {
    json!({
        "apiVersion": EXEC_API_VERSION,
        "kind": "ExecCredential",
        "status": {
            "clientCertificateData": pair.cert_pem,
            "clientKeyData": pair.key_pem,
            "expirationTimestamp": hop_api::timestamps::rfc3339_unix(expires_unix),
        },
    })
}

/// Whether a certificate expiring at `expires_unix` must be renewed at `now`.
pub fn needs_renewal(expires_unix: i64, now: i64) -> bool {
    expires_unix - now < RENEW_BEFORE_SECS
}

/// Whether the saved certificate `l` must be renewed at `now` (a per-session MFA one only at
/// the end of its minute).
pub fn login_needs_renewal(l: &certificates::KubeLogin, now: i64) -> bool {
    if l.session_mfa {
        l.expires_unix - now < MFA_RENEW_BEFORE_SECS
    } else {
        needs_renewal(l.expires_unix, now)
    }
}

/// Prints the `ExecCredential` for kube cluster `cluster` of the login to `proxy` (the current
/// login without it).
pub async fn print(cluster: String, proxy: Option<String>) -> anyhow::Result<()> {
    let home = profile::hop_home()?;
    let (p, paths) = match &proxy {
        Some(proxy) => profile::profile_for(&home, proxy)?,
        None => profile::current_profile(&home)?,
    };
    let mut saved = certificates::saved(&paths, &cluster)?;
    // kubectl may run several plugins at once: one renews, the others wait and read its files.
    let _renewing = if login_needs_renewal(&saved, now_unix()) {
        let lock = FileLock::take(&certificates::kube_dir(&paths).join(&cluster), WAIT)?;
        saved = certificates::saved(&paths, &cluster)?;
        Some(lock)
    } else {
        None
    };
    let (expires, pair) = if login_needs_renewal(&saved, now_unix()) {
        let login = profile::login_of(p, &paths).with_context(|| {
            format!("the certificate for Kubernetes cluster {cluster:?} needs renewing")
        })?;
        let (renewed, pair) = certificates::issue(&login, &paths, &cluster, None).await?;
        (renewed.expires_unix, pair)
    } else {
        (
            saved.expires_unix,
            certificates::key_pair(&paths, &cluster)?,
        )
    };
    println!("{}", exec_credential(&pair, expires));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exec_credential_is_what_kubectl_reads() {
        let pair = KeyPair {
            cert_pem: "-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----\n".into(),
            key_pem: "-----BEGIN PRIVATE KEY-----\nB\n-----END PRIVATE KEY-----\n".into(),
        };
        let v = exec_credential(&pair, 1_800_000_000);
        assert_eq!(v["apiVersion"], "client.authentication.k8s.io/v1beta1");
        assert_eq!(v["kind"], "ExecCredential");
        assert_eq!(v["status"]["clientCertificateData"], pair.cert_pem.as_str());
        assert_eq!(v["status"]["clientKeyData"], pair.key_pem.as_str());
        assert_eq!(v["status"]["expirationTimestamp"], "2027-01-15T08:00:00Z");
    }

    #[test]
    fn a_session_mfa_certificate_is_reused_within_its_minute() {
        let l = certificates::KubeLogin {
            name: "dev".into(),
            context: "c-dev".into(),
            proxy_addr: String::new(),
            tls_server_name: String::new(),
            trusted_cas_pem: String::new(),
            expires_unix: 1060,
            kubeconfig: "/k".into(),
            session_mfa: true,
        };
        assert!(!login_needs_renewal(&l, 1000));
        assert!(!login_needs_renewal(&l, 1055));
        assert!(login_needs_renewal(&l, 1056));
        let plain = certificates::KubeLogin {
            session_mfa: false,
            ..l
        };
        assert!(login_needs_renewal(&plain, 1001));
    }

    #[test]
    fn renewal_starts_a_minute_before_expiry() {
        assert!(!needs_renewal(1000, 900));
        assert!(!needs_renewal(1000, 940));
        assert!(needs_renewal(1000, 941));
        assert!(needs_renewal(1000, 2000));
    }
}
