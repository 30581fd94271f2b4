//! Certificates for the peers' TLS chains (HAProxy, nginx): one ECDSA P-256 CA, a server
//! certificate for `localhost`/127.0.0.1 and a client certificate, so that every TLS link of a
//! peer chain is mutual TLS 1.3 with P-256 keys, like hop's (user and host certificates).
//! Hop itself uses its own CAs; this module never touches them.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    PKCS_ECDSA_P256_SHA256,
};

/// Paths of the PEM files written by [`Pki::write`].
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca: PathBuf,
    pub server_crt: PathBuf,
    pub server_key: PathBuf,
    /// Certificate then key in one file (HAProxy's `crt`).
    pub server_bundle: PathBuf,
    pub client_crt: PathBuf,
    pub client_key: PathBuf,
    pub client_bundle: PathBuf,
}

impl Pki {
    pub fn write(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "hop-bench peers CA");
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf = |cn: &str, eku: ExtendedKeyUsagePurpose| -> anyhow::Result<(String, String)> {
            let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
            let mut p = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".into()])?;
            p.distinguished_name.push(DnType::CommonName, cn);
            p.extended_key_usages = vec![eku];
            let cert = p.signed_by(&key, &issuer)?;
            Ok((cert.pem(), key.serialize_pem()))
        };
        let (server_crt, server_key) = leaf("localhost", ExtendedKeyUsagePurpose::ServerAuth)?;
        let (client_crt, client_key) = leaf("bench-client", ExtendedKeyUsagePurpose::ClientAuth)?;

        let write = |name: &str, text: &str| -> anyhow::Result<PathBuf> {
            let p = dir.join(name);
            std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
            Ok(p)
        };
        Ok(Self {
            ca: write("ca.pem", &ca_cert.pem())?,
            server_crt: write("server.crt", &server_crt)?,
            server_key: write("server.key", &server_key)?,
            server_bundle: write("server.pem", &format!("{server_crt}{server_key}"))?,
            client_crt: write("client.crt", &client_crt)?,
            client_key: write("client.key", &client_key)?,
            client_bundle: write("client.pem", &format!("{client_crt}{client_key}"))?,
        })
    }
}

/// Paths of a throwaway CA and one client certificate from it, written by [`client_cert`].
#[derive(Debug, Clone)]
pub struct ClientCert {
    pub ca: PathBuf,
    pub crt: PathBuf,
    pub key: PathBuf,
}

/// A new ECDSA P-256 CA and a client certificate from it whose common name is `user` (what
/// PostgreSQL's `cert` authentication compares with the database user). The key file is 0600, as
/// libpq requires.
pub fn client_cert(dir: &Path, user: &str) -> anyhow::Result<ClientCert> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir)?;
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "hop-bench direct client CA");
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::CommonName, user);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = p.signed_by(&key, &issuer)?;
    let write = |name: &str, text: &str, mode: u32| -> anyhow::Result<PathBuf> {
        let p = dir.join(name);
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
        Ok(p)
    };
    Ok(ClientCert {
        ca: write("client-ca.pem", &ca_cert.pem(), 0o644)?,
        crt: write("client.crt", &cert.pem(), 0o644)?,
        key: write("client.key", &key.serialize_pem(), 0o600)?,
    })
}
