//! The words an operator reads when a configuration, a `--db`/`--app`/`--kube-cluster` flag or a
//! value is refused:
//! pinned here so that moving the rules between modules (or to error enums) cannot change them.

use std::path::Path;

use hop_config::services::{AppSpec, DbSpec, KubeClusterSpec};
use hop_config::{Cidr, Config, ServiceRole, parse_addr, parse_duration, validate_cluster_name};

fn refused(yaml: &str) -> String {
    Config::parse(yaml, Path::new("hop.yaml"))
        .expect_err(yaml)
        .to_string()
}

#[test]
fn each_section_names_its_field() {
    let cases = [
        (
            "version: v2\n",
            "hop.yaml: version: unsupported version \"v2\"; expected v1",
        ),
        (
            "hop:\n  data_dir: ''\n",
            "hop.yaml: hop.data_dir: must not be empty",
        ),
        (
            "hop:\n  roles: []\n",
            "hop.yaml: hop.roles: at least one service role is required",
        ),
        (
            "hop:\n  log:\n    severity: 'x=[=='\n",
            "hop.yaml: hop.log.severity: invalid level \"x=[==\"; expected error, warn, info, debug or trace",
        ),
        (
            "hop:\n  roles: [auth, node]\n",
            "hop.yaml: hop.roles: agent services (node, app, db, ...) run in their own process with --proxy for now; start auth,proxy and the agent separately",
        ),
        (
            "hop:\n  roles: [node]\n",
            "hop.yaml: hop.proxy_server: an agent needs the proxy address (--proxy HOST:PORT)",
        ),
        (
            "app_service:\n  apps:\n  - {name: echo, uri: 'udp://x:1'}\n",
            "hop.yaml: app_service.apps: [0]: app \"echo\": uri \"udp://x:1\" must start with tcp://, http:// or https://",
        ),
        (
            "app_service:\n  apps:\n  - name: grafana\n    uri: http://127.0.0.1:3000\n    rewrite:\n      headers: ['Hop-Jwt-Assertion: x']\n",
            "hop.yaml: app_service.apps: [0]: app \"grafana\": rewrite: header line \"Hop-Jwt-Assertion: x\": Hop-Jwt-Assertion is set by Hop and may not be rewritten",
        ),
        (
            "app_service:\n  apps:\n  - name: grafana\n    uri: http://127.0.0.1:3000\n    rewrite:\n      headers: ['X-User: {{internal.logins']\n",
            "hop.yaml: app_service.apps: [0]: app \"grafana\": rewrite: header line \"X-User: {{internal.logins\": \"{{\" without closing \"}}\"",
        ),
        (
            "db_service:\n  databases:\n  - {name: pg, uri: 'redis://x'}\n",
            "hop.yaml: db_service.databases: [0]: database \"pg\": uri \"redis://x\" must start with postgres:// or mysql://",
        ),
        (
            "db_service:\n  audit:\n    max_statement_bytes: 1\n",
            "hop.yaml: db_service.audit.max_statement_bytes: must be between 64 and 1048576",
        ),
        (
            "hop:\n  roles: [db]\n  proxy_server: p:1\n",
            "hop.yaml: db_service.databases: a db agent needs databases: db_service.databases (or --db name=…,uri=postgres://…), or db_service.resources selecting `db` resources",
        ),
        (
            "hop:\n  roles: [kube]\n  proxy_server: p:1\n",
            "hop.yaml: kubernetes_service.kube_clusters: a kube agent needs clusters: kubernetes_service.kube_clusters (or --kube-cluster name=…,kubeconfig=PATH)",
        ),
        (
            "hop:\n  roles: [kube, app]\n  proxy_server: p:1\n",
            "hop.yaml: hop.roles: the kube agent joins with its own identity; run it in its own process (--roles kube)",
        ),
        (
            "kubernetes_service:\n  kube_clusters:\n  - {name: dev, context: admin}\n",
            "hop.yaml: kubernetes_service.kube_clusters: [0]: kube cluster \"dev\": context \"admin\" needs a kubeconfig",
        ),
        (
            "app_service:\n  apps:\n  - {name: kube, uri: 'http://x:1'}\n",
            "hop.yaml: app_service.apps: [0]: app name \"kube\" is reserved: the proxy serves Kubernetes at kube.<proxy address>; choose another name",
        ),
        (
            "ssh_service:\n  recording:\n    max_spool_bytes: 10\n",
            "hop.yaml: ssh_service.recording.max_spool_bytes: 10 is too small: at least 1048576 (1 MiB)",
        ),
        (
            "ssh_service:\n  recording:\n    upload_interval: 10ms\n",
            "hop.yaml: ssh_service.recording.upload_interval: must be at least 100ms",
        ),
        (
            "ssh_service:\n  commands:\n  - {name: x, command: []}\n",
            "hop.yaml: ssh_service.commands: [0]: name and command are required",
        ),
        (
            "ssh_service:\n  auth_timeout: 0s\n",
            "hop.yaml: ssh_service.auth_timeout: must be greater than 0s",
        ),
        (
            "auth_service:\n  audit:\n    unwatched_linger: 2s\n",
            "hop.yaml: auth_service.audit.unwatched_linger: must be at most 1s",
        ),
        (
            "auth_service:\n  session_recording: tape\n",
            "hop.yaml: auth_service.session_recording: unknown mode \"tape\"; expected node, node-sync, proxy, proxy-sync or off",
        ),
        (
            "auth_service:\n  cluster_name: 'a b'\n",
            "hop.yaml: auth_service.cluster_name: invalid cluster name \"a b\": use letters, digits, '-', '_' and '.' (at most 253)",
        ),
        (
            "auth_service:\n  authentication:\n    type: saml\n",
            "hop.yaml: auth_service.authentication.type: unsupported type \"saml\"; only local is available",
        ),
        (
            "auth_service:\n  authentication:\n    second_factor: sms\n",
            "hop.yaml: auth_service.authentication.second_factor: unknown value \"sms\"; expected otp, off, on, optional or webauthn",
        ),
        (
            "auth_service:\n  authentication:\n    second_factor: webauthn\n",
            "hop.yaml: auth_service.authentication.second_factor: webauthn alone is not available yet (sign-up enrolls a one-time code); use on: a one-time code or a security key",
        ),
        (
            "auth_service:\n  login:\n    max_failed_attempts: 0\n",
            "hop.yaml: auth_service.login.max_failed_attempts: must be at least 1",
        ),
        (
            "auth_service:\n  login:\n    attempts_per_ip_per_minute: 0\n",
            "hop.yaml: auth_service.login.attempts_per_ip_per_minute: must be at least 1",
        ),
        (
            "auth_service:\n  login:\n    invite_ttl: 10ms\n",
            "hop.yaml: auth_service.login.invite_ttl: must be at least 1s",
        ),
        (
            "proxy_service:\n  handshake_timeout: 0s\n",
            "hop.yaml: proxy_service.handshake_timeout: must be greater than 0s",
        ),
        (
            "proxy_service:\n  max_preauth_connections_percent: 101\n",
            "hop.yaml: proxy_service.max_preauth_connections_percent: 101 is out of range: more than 0 and at most 100",
        ),
        (
            "proxy_service:\n  max_connections: 0\n",
            "hop.yaml: proxy_service.max_connections: must be at least 1",
        ),
        (
            "proxy_service:\n  public_addr: ['a b']\n",
            "hop.yaml: proxy_service.public_addr: invalid name \"a b\"",
        ),
    ];
    for (yaml, want) in cases {
        assert_eq!(refused(yaml), want, "{yaml}");
    }
}

#[test]
fn spec_flags_say_what_is_wrong() {
    let db = |s: &str| DbSpec::parse(s).unwrap_err().to_string();
    assert_eq!(db("name"), "--db: expected key=value, got \"name\"");
    assert_eq!(
        db("name=pg,labels=env"),
        "--db: label \"env\" is not key=value"
    );
    assert_eq!(
        db("name=pg,port=1"),
        "--db: unknown key \"port\"; expected name, uri, ca_file, server_name, labels"
    );
    assert_eq!(
        db("name=p g,uri=postgres://x"),
        "database name \"p g\": use 1 to 64 letters, digits, '-', '_' and '.'"
    );
    assert_eq!(
        db("name=pg,uri=postgres://"),
        "database \"pg\": uri has no host"
    );
    assert_eq!(
        db("name=pg,uri=postgres://x:port"),
        "database \"pg\": invalid port in \"x:port\""
    );
    let no_scheme = DbSpec {
        uri: "x".into(),
        ..DbSpec::parse("name=pg,uri=postgres://x").unwrap()
    };
    assert_eq!(
        no_scheme.target().unwrap_err().to_string(),
        "database \"pg\": uri has no scheme"
    );
    let app = |s: &str| AppSpec::parse(s).unwrap_err().to_string();
    assert_eq!(app("uri"), "--app: expected key=value, got \"uri\"");
    assert_eq!(app("name=a,label=x"), "--app: label \"x\" is not key=value");
    assert_eq!(
        app("name=a,port=1"),
        "--app: unknown key \"port\"; expected name, uri, labels, public_addr, insecure_skip_verify"
    );
    assert_eq!(app("uri=tcp://x:1"), "--app: name= is required");
    assert_eq!(app("name=a"), "--app: uri= is required");
    assert_eq!(
        app("name=a b,uri=tcp://x:1"),
        "app name \"a b\": use letters, digits, '-', '_' and '.'"
    );
    assert_eq!(
        app("name=a,uri=ftp://x:1"),
        "app \"a\": uri \"ftp://x:1\" must start with tcp://, http:// or https://"
    );
    assert_eq!(app("name=a,uri=tcp://x"), "app \"a\": uri needs a port");
    let kube = |s: &str| KubeClusterSpec::parse(s).unwrap_err().to_string();
    assert_eq!(kube("kubeconfig=/k"), "--kube-cluster: name= is required");
    assert_eq!(
        kube("name=dev,server=x"),
        "--kube-cluster: unknown key \"server\"; expected name, kubeconfig, context, labels"
    );
    assert_eq!(
        kube("name=d v"),
        "kube cluster name \"d v\": use 1 to 64 letters, digits, '-', '_' and '.'"
    );
    assert_eq!(
        app("name=a,uri=tcp://x:y"),
        "app \"a\": invalid port in \"x:y\""
    );
}

#[test]
fn values_quote_what_they_were_given() {
    assert_eq!(
        parse_duration(" 5 minutes ").unwrap_err().to_string(),
        "invalid duration \"5 minutes\": expected a number and unit such as 90s, 15m, 8h or 1h30m"
    );
    assert_eq!(
        parse_addr("nowhere").unwrap_err().to_string(),
        "invalid address \"nowhere\": expected IP:PORT such as 0.0.0.0:3080 or 127.0.0.1:3000"
    );
    assert_eq!(
        " 10.0.0.0/33".parse::<Cidr>().unwrap_err().to_string(),
        "invalid network \" 10.0.0.0/33\": expected CIDR such as 10.0.0.0/8 or ::1/128"
    );
    assert_eq!(
        " tape ".parse::<ServiceRole>().unwrap_err().to_string(),
        "unknown role \"tape\"; expected auth, proxy, node, app, db, kube, windows_desktop or discovery"
    );
    assert_eq!(
        validate_cluster_name("").unwrap_err().to_string(),
        "invalid cluster name \"\": use letters, digits, '-', '_' and '.' (at most 253)"
    );
}
