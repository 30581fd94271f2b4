use super::*;
use std::os::unix::fs::MetadataExt;

/// A kubeconfig as other tools leave it: keys in their own order, entries of other clusters,
/// extensions, values that look like numbers or booleans but are strings.
const FOREIGN: &str = r#"apiVersion: v1
kind: Config
preferences:
  colors: true
clusters:
- name: prod
  cluster:
    server: https://10.0.0.1:6443
    certificate-authority: ../certs/prod-ca.crt
    extensions:
    - name: client.authentication.k8s.io/exec
      extension:
        audience: "0123"
- cluster:
    insecure-skip-tls-verify: true
    server: https://kind.local:443
  name: kind
users:
- name: prod-admin
  user:
    token: "12345"
- name: oidc
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: kubelogin
      args: [get-token, "--flag=yes"]
      interactiveMode: IfAvailable
contexts:
- name: prod
  context:
    cluster: prod
    user: prod-admin
    namespace: "true"
current-context: prod
"#;

fn entry(name: &str) -> Entry {
    Entry {
        name: name.into(),
        server: "https://127.0.0.1:3080".into(),
        tls_server_name: "kube.localhost".into(),
        ca_pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
        command: "/usr/local/bin/hop".into(),
        args: ["kube", "credentials", "--cluster", "dev"]
            .map(String::from)
            .to_vec(),
        env: vec![("HOP_HOME".into(), "/home/u/.hop".into())],
    }
}

fn named<'a>(doc: &'a Node, key: &str, name: &str) -> Option<&'a Node> {
    match doc.get(key)? {
        Node::Seq(items) => items
            .iter()
            .find(|i| i.get("name").and_then(Node::as_str) == Some(name)),
        _ => None,
    }
}

fn names(doc: &Node, key: &str) -> Vec<String> {
    match doc.get(key) {
        Some(Node::Seq(items)) => items
            .iter()
            .filter_map(|i| i.get("name").and_then(Node::as_str).map(String::from))
            .collect(),
        _ => vec![],
    }
}

#[test]
fn adding_keeps_every_foreign_entry_and_removing_restores_the_file() {
    let original = parse(FOREIGN, "cfg").unwrap();
    let mut doc = original.clone();
    add(&mut doc, &entry("c1-dev")).unwrap();
    // Foreign entries are untouched, in their order; ours come last.
    for (key, foreign) in [
        ("clusters", vec!["prod", "kind"]),
        ("users", vec!["prod-admin", "oidc"]),
        ("contexts", vec!["prod"]),
    ] {
        let mut want: Vec<String> = foreign.iter().map(|s| s.to_string()).collect();
        want.push("c1-dev".into());
        assert_eq!(names(&doc, key), want, "{key}");
        for f in foreign {
            assert_eq!(named(&doc, key, f), named(&original, key, f), "{key}/{f}");
        }
    }
    assert_eq!(doc.get("preferences"), original.get("preferences"));
    assert_eq!(current_context(&doc), Some("c1-dev"));

    // The text written parses back to the same document, strings that look like other things
    // included (quoted, not turned into numbers or booleans).
    let text = render(&doc).unwrap();
    let back = parse(&text, "cfg").unwrap();
    assert_eq!(back, doc, "{text}");
    let ns = named(&back, "contexts", "prod")
        .unwrap()
        .get("context")
        .unwrap();
    assert_eq!(ns.get("namespace"), Some(&Node::str("true")));

    // Logging in again replaces our entries rather than adding a second set.
    let mut again = back.clone();
    let mut e = entry("c1-dev");
    e.server = "https://127.0.0.1:4000".into();
    add(&mut again, &e).unwrap();
    assert_eq!(names(&again, "clusters"), ["prod", "kind", "c1-dev"]);
    let server = named(&again, "clusters", "c1-dev")
        .unwrap()
        .get("cluster")
        .unwrap();
    assert_eq!(
        server.get("server"),
        Some(&Node::str("https://127.0.0.1:4000"))
    );

    // Logout removes exactly ours; the current context (ours) is unset.
    assert!(remove(&mut again, "c1-dev"));
    let mut expected = original.clone();
    expected.set("current-context", Node::str(""));
    assert_eq!(again, expected);
    assert!(!remove(&mut again, "c1-dev"), "nothing left to remove");
}

#[test]
fn our_entries_are_what_kubectl_reads() {
    let mut doc = parse("", "cfg").unwrap();
    add(&mut doc, &entry("c1-dev")).unwrap();
    let cluster = named(&doc, "clusters", "c1-dev")
        .unwrap()
        .get("cluster")
        .unwrap();
    assert_eq!(
        cluster.get("server"),
        Some(&Node::str("https://127.0.0.1:3080"))
    );
    assert_eq!(
        cluster.get("tls-server-name"),
        Some(&Node::str("kube.localhost"))
    );
    let ca = cluster
        .get("certificate-authority-data")
        .and_then(Node::as_str)
        .unwrap();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(ca)
        .unwrap();
    assert_eq!(decoded, entry("x").ca_pem.as_bytes());
    let exec = named(&doc, "users", "c1-dev")
        .unwrap()
        .get("user")
        .unwrap()
        .get("exec")
        .unwrap();
    assert_eq!(exec.get("apiVersion"), Some(&Node::str(EXEC_API_VERSION)));
    assert_eq!(exec.get("command"), Some(&Node::str("/usr/local/bin/hop")));
    let Some(Node::Seq(env)) = exec.get("env") else {
        panic!("no env list")
    };
    assert_eq!(env[0].get("name"), Some(&Node::str("HOP_HOME")));
    let ctx = named(&doc, "contexts", "c1-dev")
        .unwrap()
        .get("context")
        .unwrap();
    assert_eq!(ctx.get("cluster"), Some(&Node::str("c1-dev")));
    assert_eq!(ctx.get("user"), Some(&Node::str("c1-dev")));
    for key in ["apiVersion", "kind"] {
        assert!(doc.get(key).is_some(), "{key}");
    }
}

#[test]
fn null_lists_are_lists_and_other_shapes_are_refused() {
    let mut doc = parse(
        "apiVersion: v1\nclusters: null\nusers:\ncontexts: ~\n",
        "cfg",
    )
    .unwrap();
    add(&mut doc, &entry("a")).unwrap();
    assert_eq!(names(&doc, "clusters"), ["a"]);
    assert_eq!(names(&doc, "users"), ["a"]);

    let mut bad = parse("clusters: 5\n", "cfg").unwrap();
    let e = add(&mut bad, &entry("a")).unwrap_err();
    assert!(e.contains("`clusters` is not a list"), "{e}");

    for text in ["- a\n- b\n", "just a string\n"] {
        let e = parse(text, "cfg").unwrap_err().to_string();
        assert!(e.contains("cfg is not a kubeconfig"), "{text}: {e}");
    }
    let e = parse("clusters: [\n", "cfg").unwrap_err().to_string();
    assert!(e.contains("cfg is not a kubeconfig"), "{e}");
}

#[test]
fn kubeconfig_is_the_first_path_of_kubeconfig_else_home() {
    let joined = std::env::join_paths(["/a/one", "/b/two"]).unwrap();
    assert_eq!(
        path_from(Some(joined), Some("/h".into())).unwrap(),
        PathBuf::from("/a/one")
    );
    assert_eq!(
        path_from(Some(":/b/two".into()), None).unwrap(),
        PathBuf::from("/b/two")
    );
    assert_eq!(
        path_from(Some("".into()), Some("/h".into())).unwrap(),
        PathBuf::from("/h/.kube/config")
    );
    assert!(matches!(
        path_from(None, None),
        Err(KubeconfigError::NoHome)
    ));
}

#[test]
fn the_file_is_written_atomically_private_and_through_a_link() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real-config");
    std::fs::write(&real, FOREIGN).unwrap();
    let link = dir.path().join("sub").join("config");
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&real, &link).unwrap();

    edit_file(&link, |doc| add(doc, &entry("c1-dev"))).unwrap();
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the link is kept"
    );
    assert_eq!(std::fs::metadata(&real).unwrap().mode() & 0o777, 0o600);
    let doc = read_file(&real).unwrap();
    assert_eq!(names(&doc, "clusters"), ["prod", "kind", "c1-dev"]);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("tmp") || n.ends_with(".lock"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A missing file (and its directory) is created.
    let fresh = dir.path().join("new").join("config");
    edit_file(&fresh, |doc| add(doc, &entry("x"))).unwrap();
    assert_eq!(current_context(&read_file(&fresh).unwrap()), Some("x"));
}

#[test]
fn an_edit_waits_for_kubectls_lock() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config");
    let lock = dir.path().join("config.lock");
    std::fs::write(&lock, "").unwrap();
    let remover = {
        let lock = lock.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            std::fs::remove_file(lock).unwrap();
        })
    };
    edit_file(&cfg, |doc| add(doc, &entry("x"))).unwrap();
    remover.join().unwrap();
    assert!(!lock.exists());
    assert_eq!(current_context(&read_file(&cfg).unwrap()), Some("x"));
    // A file that is not a kubeconfig is left alone.
    std::fs::write(&cfg, "- a list\n").unwrap();
    let e = edit_file(&cfg, |doc| add(doc, &entry("x"))).unwrap_err();
    assert!(e.to_string().contains("is not a kubeconfig"), "{e}");
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), "- a list\n");
}
