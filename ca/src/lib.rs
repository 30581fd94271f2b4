//! Hop's certificate authorities: the `user`, `host`, `db`, `jwt`, `openssh` and `spiffe` CAs of a cluster, the
//! short-lived SSH and X.509 certificates (SPIFFE SVIDs included) they issue, the verification of those certificates, and
//! the exports that let stock OpenSSH and PostgreSQL trust Hop without any Hop code. This crate is
//! pure: it never reads the wall clock or the OS random number generator itself (time and
//! randomness are arguments), never does IO, and never logs private key material.
#![forbid(unsafe_code)]

mod authority;
mod error;
mod export;
mod identity;
mod issued;
pub mod jwt;
mod keys;
mod proof;
mod ssh;
mod svid;
mod trust;
mod x509;

pub use authority::{
    CaKind, CaPublic, CertAuthority, DEFAULT_CERT_TTL, HOP_HOST_ROLE_OID, HOP_IDENTITY_OID,
    derived_ttl, effective_ttl,
};
pub use error::CaError;
pub use export::{export_known_hosts, export_pem, export_trusted_user_ca_keys};
pub use identity::{HostRole, Identity, RouteToDatabase, SessionMfaTarget};
pub use issued::{ssh_issued_at, x509_issued_at, x509_serial_hex};
pub use keys::{SshKeyPair, X509KeyPair, generate_ssh_keypair, generate_x509_keypair};
pub use proof::{check_proof_key, proof_public_key, sign_proof, verify_proof};
pub use ssh::{NO_LOGIN_PRINCIPAL, OPT_SESSION_MFA, verify_host_ssh, verify_user_ssh};
pub use svid::{check_spiffe_path, spiffe_id, spiffe_trust_domain};
pub use trust::{HOP_TRUST_DIGEST_OID, trust_digest, trust_digest_x509, x509_signer_pin};
pub use x509::{
    ca_pin, host_claim_x509, host_role_x509, parse_pem_certs, verify_host_x509, verify_user_x509,
};
