//! Interop with the real tools: what Hop issues and exports must be read by stock OpenSSH
//! (`ssh-keygen`) and OpenSSL exactly as they read their own files.

use std::path::{Path, PathBuf};
use std::process::Command;

use hop_ca::{
    CertAuthority, DEFAULT_CERT_TTL, HostRole, export_known_hosts, export_pem,
    export_trusted_user_ca_keys, generate_ssh_keypair, generate_x509_keypair,
};

use crate::support::{Cas, HOUR, NOW_SECS, alice, now, rng};

/// Runs a tool, asserting success; returns stdout + stderr.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .env("TZ", "UTC")
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{program} {args:?} failed:\n{text}");
    text
}

fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn ssh_keygen_reads_user_cert() {
    let dir = tempfile::tempdir().unwrap();
    let cas = Cas::generate("hop.example.com", 1);
    let mut rng = rng(2);
    let client = generate_ssh_keypair(&mut rng).unwrap();
    let cert = cas
        .user
        .issue_user_ssh(
            &client.public_openssh,
            &alice(),
            now(),
            DEFAULT_CERT_TTL,
            &mut rng,
        )
        .unwrap();
    let path = write(dir.path(), "id-cert.pub", &cert);
    let out = run("ssh-keygen", &["-L", "-f", p(&path)]);
    assert!(
        out.contains("Type: ssh-ed25519-cert-v01@openssh.com user certificate"),
        "{out}"
    );
    assert!(out.contains("Key ID: \"alice@example.com\""), "{out}");
    // Issued at 2025-01-01T00:00:00Z: one minute of skew back, 8 h forward.
    assert!(
        out.contains("Valid: from 2024-12-31T23:59:00 to 2025-01-01T08:00:00"),
        "{out}"
    );
    let principals = out
        .split("Principals:")
        .nth(1)
        .and_then(|rest| rest.split("Critical Options:").next())
        .unwrap();
    assert_eq!(
        principals.split_whitespace().collect::<Vec<_>>(),
        ["alice", "root"]
    );
    assert!(out.contains("Critical Options: (none)"), "{out}");
    for ext in [
        "permit-pty",
        "permit-agent-forwarding",
        "permit-user-rc",
        "hop-roles",
        "hop-traits",
        "hop-cluster",
        "hop-route-to-cluster",
        "hop-mfa-verified",
    ] {
        assert!(out.contains(ext), "{ext} missing:\n{out}");
    }
    assert!(!out.contains("permit-port-forwarding"), "{out}");
    // ssh-keygen prints unknown extensions as the hex of their (string-wrapped) value.
    let roles = hex::encode(r#"["access","editor"]"#);
    assert!(
        out.contains(&format!("hop-roles UNKNOWN OPTION: 00000013{roles}")),
        "{out}"
    );

    // The signing CA fingerprint is the one CaPublic reports, as ssh-keygen prints it.
    let fingerprint = cas.user.public().ssh_fingerprint.unwrap();
    assert!(
        out.contains(&format!("Signing CA: ED25519 {fingerprint}")),
        "{out}"
    );
}

#[test]
fn ssh_keygen_reads_host_cert() {
    let dir = tempfile::tempdir().unwrap();
    let cas = Cas::generate("c", 1);
    let mut rng = rng(3);
    let host = generate_ssh_keypair(&mut rng).unwrap();
    let names = ["node-1.example.com".to_owned(), "10.0.0.5".to_owned()];
    let cert = cas
        .host
        .issue_host_ssh(
            &host.public_openssh,
            "3f2a-uuid",
            &names,
            now(),
            HOUR,
            &mut rng,
        )
        .unwrap();
    let out = run(
        "ssh-keygen",
        &["-L", "-f", p(&write(dir.path(), "h-cert.pub", &cert))],
    );
    assert!(
        out.contains("Type: ssh-ed25519-cert-v01@openssh.com host certificate"),
        "{out}"
    );
    assert!(out.contains("Key ID: \"3f2a-uuid\""), "{out}");
    for name in ["3f2a-uuid", "node-1.example.com", "10.0.0.5"] {
        assert!(out.contains(name), "{out}");
    }
}

#[test]
fn ssh_keygen_reads_private_keys_and_exports() {
    let dir = tempfile::tempdir().unwrap();
    let cas = Cas::generate("hop.example.com", 1);
    let client = generate_ssh_keypair(&mut rng(4)).unwrap();
    // The client private key: ssh-keygen derives the same public key from it.
    let key = write(dir.path(), "id_ed25519", &client.private_openssh);
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let derived = run("ssh-keygen", &["-y", "-f", p(&key)]);
    assert_eq!(derived.trim(), client.public_openssh.trim());
    // The CA private key too.
    let ca_key = write(
        dir.path(),
        "ca",
        cas.user.ssh_private_openssh.as_deref().unwrap(),
    );
    std::fs::set_permissions(&ca_key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let derived = run("ssh-keygen", &["-y", "-f", p(&ca_key)]);
    let public = cas.user.public().ssh_public.unwrap();
    assert_eq!(
        derived.split_whitespace().take(2).collect::<Vec<_>>(),
        public.split_whitespace().take(2).collect::<Vec<_>>()
    );

    // TrustedUserCAKeys: one line per user CA, fingerprints as CaPublic reports them.
    let other = Cas::generate("hop.example.com", 5);
    let publics: Vec<_> = cas.public().into_iter().chain(other.public()).collect();
    let trusted = export_trusted_user_ca_keys(&publics);
    assert_eq!(trusted.lines().count(), 2);
    let out = run(
        "ssh-keygen",
        &["-l", "-f", p(&write(dir.path(), "tuck", &trusted))],
    );
    assert_eq!(out.lines().count(), 2, "{out}");
    for ca in [&cas.user, &other.user] {
        let public = ca.public();
        assert!(
            out.contains(public.ssh_fingerprint.as_deref().unwrap()),
            "{out}"
        );
        assert!(
            out.contains("hop-hop.example.com-user-ca (ED25519)"),
            "{out}"
        );
    }

    // known_hosts: @cert-authority lines for the host CAs, for the cluster's hosts only, read by
    // ssh-keygen -F.
    let known = export_known_hosts(&publics);
    assert_eq!(known.lines().count(), 2);
    assert!(
        known
            .lines()
            .all(|l| l.starts_with("@cert-authority *.hop.example.com ssh-ed25519 AAAA"))
    );
    let known_path = write(dir.path(), "known_hosts", &known);
    for host in ["node-1.hop.example.com", "proxy.hop.example.com"] {
        let out = run("ssh-keygen", &["-F", host, "-f", p(&known_path)]);
        assert!(out.contains("@cert-authority"), "{host}: {out}");
    }
    for host in ["node-1.example.com", "hop.example.com", "127.0.0.1"] {
        let out = Command::new("ssh-keygen")
            .args(["-F", host, "-f", p(&known_path)])
            .output()
            .unwrap();
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("@cert-authority"),
            "{host} must not match {known}"
        );
    }
}

#[test]
fn openssl_reads_and_verifies_x509() {
    let dir = tempfile::tempdir().unwrap();
    let cas = Cas::generate("hop.example.com", 1);
    let mut rng = rng(6);
    let key = generate_x509_keypair(&mut rng).unwrap();
    let attime = (NOW_SECS + 60).to_string();

    // The CA certificates: CA:TRUE, keyCertSign, self-signed.
    let bundle = export_pem(&cas.public());
    assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 3);
    for ca in [&cas.user, &cas.host, &cas.db] {
        let ca_pem = write(dir.path(), "ca.pem", ca.x509_cert_pem.as_deref().unwrap());
        let text = run("openssl", &["x509", "-text", "-noout", "-in", p(&ca_pem)]);
        assert!(text.contains("CA:TRUE"), "{text}");
        assert!(text.contains("Certificate Sign, CRL Sign"), "{text}");
        assert!(text.contains("ecdsa-with-SHA256"), "{text}");
        assert!(text.contains(&format!("{} CA", ca.kind)), "{text}");
    }
    let bundle_path = write(dir.path(), "bundle.pem", &bundle);

    // User certificate: parses, verifies against the bundle, clientAuth.
    let user = cas
        .user
        .issue_user_x509(&key.public_spki_der, &alice(), now(), HOUR, &mut rng)
        .unwrap();
    let user_path = write(dir.path(), "user.pem", &user);
    let text = run(
        "openssl",
        &["x509", "-text", "-noout", "-in", p(&user_path)],
    );
    assert!(text.contains("CN=alice@example.com") || text.contains("CN = alice@example.com"));
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
    assert!(text.contains("1.3.6.1.4.1.59327.1.1"), "{text}");
    let out = run(
        "openssl",
        &[
            "verify",
            "-attime",
            &attime,
            "-purpose",
            "sslclient",
            "-CAfile",
            p(&bundle_path),
            p(&user_path),
        ],
    );
    assert!(out.contains(": OK"), "{out}");

    // Host certificate: SANs, serverAuth, verifies against the host CA alone.
    let host = cas
        .host
        .issue_host_x509(
            &key.public_spki_der,
            "3f2a-uuid",
            HostRole::Proxy,
            &["proxy.example.com".to_owned(), "192.0.2.7".to_owned()],
            None,
            now(),
            HOUR,
            &mut rng,
        )
        .unwrap();
    let host_path = write(dir.path(), "host.pem", &host);
    let text = run(
        "openssl",
        &["x509", "-text", "-noout", "-in", p(&host_path)],
    );
    assert!(text.contains("DNS:proxy.example.com"), "{text}");
    assert!(text.contains("IP Address:192.0.2.7"), "{text}");
    assert!(text.contains("TLS Web Server Authentication"), "{text}");
    assert!(
        text.contains("OU=proxy") || text.contains("OU = proxy"),
        "{text}"
    );
    let host_ca = write(
        dir.path(),
        "host-ca.pem",
        cas.host.x509_cert_pem.as_deref().unwrap(),
    );
    let out = run(
        "openssl",
        &[
            "verify",
            "-attime",
            &attime,
            "-purpose",
            "sslserver",
            "-CAfile",
            p(&host_ca),
            p(&host_path),
        ],
    );
    assert!(out.contains(": OK"), "{out}");

    // The client's private key is a PKCS#8 P-256 key OpenSSL reads, matching the SPKI.
    let key_path = write(dir.path(), "key.pem", &key.private_pkcs8_pem);
    let der_path = dir.path().join("pub.der");
    run(
        "openssl",
        &[
            "pkey",
            "-in",
            p(&key_path),
            "-pubout",
            "-outform",
            "DER",
            "-out",
            p(&der_path),
        ],
    );
    assert_eq!(std::fs::read(&der_path).unwrap(), key.public_spki_der);

    // The CA pin is sha256 of the SPKI, as `openssl x509 -pubkey | openssl pkey -outform DER`.
    let user_ca = write(
        dir.path(),
        "user-ca.pem",
        cas.user.x509_cert_pem.as_deref().unwrap(),
    );
    let spki_pem = run(
        "openssl",
        &["x509", "-pubkey", "-noout", "-in", p(&user_ca)],
    );
    let spki_pem_path = write(dir.path(), "spki.pem", &spki_pem);
    let spki_der = dir.path().join("spki.der");
    run(
        "openssl",
        &[
            "pkey",
            "-pubin",
            "-in",
            p(&spki_pem_path),
            "-outform",
            "DER",
            "-out",
            p(&spki_der),
        ],
    );
    let digest = run("openssl", &["dgst", "-sha256", "-r", p(&spki_der)]);
    let hex = digest.split_whitespace().next().unwrap();
    assert_eq!(
        cas.user.public().x509_spki_sha256.unwrap(),
        format!("sha256:{hex}")
    );

    // A certificate from another cluster's CA does not verify.
    let other = Cas::generate("other.example.com", 7);
    let foreign = other
        .user
        .issue_user_x509(&key.public_spki_der, &alice(), now(), HOUR, &mut rng)
        .unwrap();
    let foreign_path = write(dir.path(), "foreign.pem", &foreign);
    let status = Command::new("openssl")
        .args([
            "verify",
            "-attime",
            &attime,
            "-CAfile",
            p(&bundle_path),
            p(&foreign_path),
        ])
        .output()
        .unwrap();
    assert!(!status.status.success());
}

#[test]
fn openssl_reads_db_and_jwt_material() {
    let dir = tempfile::tempdir().unwrap();
    let cas = Cas::generate("c", 1);
    let mut rng = rng(8);
    let key = generate_x509_keypair(&mut rng).unwrap();
    let server = cas
        .db
        .issue_db_server_x509(
            &key.public_spki_der,
            &["pg.internal".to_owned()],
            now(),
            HOUR,
            &mut rng,
        )
        .unwrap();
    let server_path = write(dir.path(), "server.pem", &server);
    let db_ca = write(
        dir.path(),
        "db-ca.pem",
        cas.db.x509_cert_pem.as_deref().unwrap(),
    );
    let out = run(
        "openssl",
        &[
            "verify",
            "-attime",
            &(NOW_SECS + 60).to_string(),
            "-CAfile",
            p(&db_ca),
            p(&server_path),
        ],
    );
    assert!(out.contains(": OK"), "{out}");
    let jwt = write(
        dir.path(),
        "jwt.pem",
        cas.jwt.jwt_key_pem.as_deref().unwrap(),
    );
    let text = run("openssl", &["pkey", "-in", p(&jwt), "-text", "-noout"]);
    assert!(
        text.contains("prime256v1") || text.contains("P-256"),
        "{text}"
    );
    let pubkey = run("openssl", &["pkey", "-in", p(&jwt), "-pubout"]);
    assert_eq!(
        pubkey.trim(),
        cas.jwt.public().jwt_public_pem.unwrap().trim()
    );
    let _: &CertAuthority = &cas.jwt;
}
