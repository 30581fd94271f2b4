//! Kubeconfig reading: what each supported field becomes, and the errors (each naming the file,
//! the context and the field) for what is missing, dangling, malformed or unsupported.

use std::path::{Path, PathBuf};

use super::kubeconfig::{ApiServerSpec, Credentials, Material, TokenSource, in_cluster, parse};

const PATH: &str = "/etc/hop/dev.kubeconfig";

fn read(text: &str, context: Option<&str>) -> Result<ApiServerSpec, String> {
    parse(text, Path::new(PATH), context).map_err(|e| e.to_string())
}

const FULL: &str = r#"
apiVersion: v1
kind: Config
preferences: {}
current-context: admin@dev
clusters:
- name: dev
  cluster:
    server: https://10.0.0.1:6443/prefix
    certificate-authority-data: aGVsbG8=
    tls-server-name: kubernetes.default
    extensions:
    - name: x
      extension: {a: b}
- name: other
  cluster:
    server: https://other.example.com
    certificate-authority: ca/other.crt
users:
- name: admin
  user:
    client-certificate: certs/admin.crt
    client-key-data: "a2V5\n"
- name: robot
  user:
    token: t0ken
- name: files
  user:
    tokenFile: tokens/robot
contexts:
- name: admin@dev
  context: {cluster: dev, user: admin, namespace: default}
- name: robot@other
  context: {cluster: other, user: robot}
- name: files@other
  context: {cluster: other, user: files}
"#;

#[test]
fn the_current_context_reads_into_a_spec() {
    let s = read(FULL, None).unwrap();
    assert_eq!(
        s.origin,
        "kubeconfig /etc/hop/dev.kubeconfig, context \"admin@dev\""
    );
    assert_eq!(s.server.to_string(), "https://10.0.0.1:6443/prefix");
    assert_eq!(s.ca, Some(Material::Inline(b"hello".to_vec())));
    assert_eq!(s.tls_server_name.as_deref(), Some("kubernetes.default"));
    assert!(!s.insecure_skip_tls_verify);
    assert_eq!(
        s.credentials,
        Credentials::ClientCert {
            cert: Material::File(PathBuf::from("/etc/hop/certs/admin.crt")),
            key: Material::Inline(b"key".to_vec()),
        }
    );
}

#[test]
fn a_named_context_with_tokens_and_relative_files() {
    let s = read(FULL, Some("robot@other")).unwrap();
    assert_eq!(
        s.ca,
        Some(Material::File(PathBuf::from("/etc/hop/ca/other.crt")))
    );
    assert_eq!(s.tls_server_name, None);
    assert_eq!(
        s.credentials,
        Credentials::Token(TokenSource::Inline("t0ken".into()))
    );
    assert!(
        !format!("{s:?}").contains("t0ken"),
        "a token must not show in Debug"
    );
    let s = read(FULL, Some("files@other")).unwrap();
    let want = TokenSource::File(PathBuf::from("/etc/hop/tokens/robot"));
    assert_eq!(s.credentials, Credentials::Token(want));
}

#[test]
fn insecure_skip_tls_verify_is_read_and_not_mixed_with_a_ca() {
    let text = FULL.replace(
        "    certificate-authority-data: aGVsbG8=\n",
        "    insecure-skip-tls-verify: true\n",
    );
    let s = read(&text, None).unwrap();
    assert!(s.insecure_skip_tls_verify);
    assert_eq!(s.ca, None);
    let both = FULL.replace(
        "    tls-server-name:",
        "    insecure-skip-tls-verify: true\n    tls-server-name:",
    );
    let e = read(&both, None).unwrap_err();
    assert!(
        e.contains("clusters[\"dev\"].cluster.insecure-skip-tls-verify"),
        "{e}"
    );
}

/// Each broken kubeconfig and what its error must say (file, context, field).
#[test]
fn errors_name_the_file_the_context_and_the_field() {
    let cases: Vec<(String, Option<&str>, Vec<&str>)> = vec![
        ("clusters: [".into(), None, vec![PATH, "not a kubeconfig"]),
        (
            "kind: Config\n".into(),
            None,
            vec![PATH, "no context given"],
        ),
        (
            FULL.into(),
            Some("nope"),
            vec!["context \"nope\"", "no context named \"nope\""],
        ),
        (
            FULL.replace("{cluster: dev, user: admin", "{cluster: gone, user: admin"),
            None,
            vec![
                "contexts[\"admin@dev\"].context.cluster",
                "\"gone\"",
                "clusters",
            ],
        ),
        (
            FULL.replace("{cluster: dev, user: admin", "{cluster: dev, user: ghost"),
            None,
            vec!["context.user", "\"ghost\""],
        ),
        (
            FULL.replace("    server: https://10.0.0.1:6443/prefix\n", ""),
            None,
            vec!["admin@dev", "clusters[\"dev\"].cluster.server: is missing"],
        ),
        (
            FULL.replace("https://10.0.0.1:6443/prefix", "http://10.0.0.1:8080"),
            None,
            vec!["clusters[\"dev\"].cluster.server", "must be https://"],
        ),
        (
            FULL.replace("aGVsbG8=", "not*base64"),
            None,
            vec!["clusters[\"dev\"].cluster.certificate-authority-data: not base64"],
        ),
        (
            FULL.replace("    client-key-data: \"a2V5\\n\"\n", ""),
            None,
            vec!["users[\"admin\"].user.client-key: is missing"],
        ),
        (
            FULL.replace("    token: t0ken\n", "    exec:\n      command: aws\n"),
            Some("robot@other"),
            vec![
                "context \"robot@other\"",
                "users[\"robot\"].user.exec",
                "not supported",
            ],
        ),
        (
            FULL.replace("    token: t0ken\n", "    auth-provider: {name: gcp}\n"),
            Some("robot@other"),
            vec!["users[\"robot\"].user.auth-provider", "not supported"],
        ),
        (
            FULL.replace("    token: t0ken\n", "    username: u\n    password: p\n"),
            Some("robot@other"),
            vec!["basic authentication", "not supported"],
        ),
        (
            FULL.replace("    token: t0ken\n", "    {}\n"),
            Some("robot@other"),
            vec!["users[\"robot\"].user", "no credentials"],
        ),
        (
            FULL.replace(
                "    tls-server-name:",
                "    proxy-url: http://squid:3128\n    tls-server-name:",
            ),
            None,
            vec!["clusters[\"dev\"].cluster.proxy-url", "not supported"],
        ),
    ];
    for (text, context, wants) in cases {
        let e = read(&text, context).expect_err(&format!("accepted for {wants:?}"));
        assert!(e.contains(PATH), "{e}");
        assert!(!e.contains('\n'), "{e}");
        for w in wants {
            assert!(e.contains(w), "{e:?} lacks {w:?}");
        }
    }
}

#[test]
fn mutated_kubeconfigs_parse_or_err() {
    for i in 0..FULL.len() {
        if FULL.is_char_boundary(i) {
            let _ = read(&FULL[..i], None);
            let _ = read(&FULL[i..], Some("admin@dev"));
        }
    }
}

#[test]
fn the_in_cluster_service_account() {
    let sa = Path::new("/var/run/secrets/kubernetes.io/serviceaccount");
    let s = in_cluster(Some("10.96.0.1"), Some("443"), sa).unwrap();
    assert_eq!(s.server.to_string(), "https://10.96.0.1:443/");
    assert_eq!(s.ca, Some(Material::File(sa.join("ca.crt"))));
    assert_eq!(
        s.credentials,
        Credentials::Token(TokenSource::File(sa.join("token")))
    );
    let v6 = in_cluster(Some("fd00::1"), Some("6443"), sa).unwrap();
    assert_eq!(v6.server.host(), Some("[fd00::1]"));
    let e = in_cluster(None, Some("443"), sa).unwrap_err().to_string();
    assert!(e.contains("not running in a Kubernetes cluster"), "{e}");
    assert!(e.contains("kubeconfig="), "{e}");
    assert!(in_cluster(Some(""), None, sa).is_err());
}
