//! Parsing Teleport-shaped resource files and the errors operators see.

use std::collections::BTreeMap;

use hop_rbac::labels::labels;
use hop_rbac::{
    AccessRequestConditions, Duration, LabelValues, ParseProblem, RecordSession, RecordingMode,
    Resource, Role, Rule, parse_resources,
};

use crate::{parse_err, parse_ok};

const DEV_ROLE: &str = include_str!("testdata/dev-role.yaml");

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

fn expected_dev_role() -> Role {
    let mut r = Role::new("dev");
    r.metadata.description = "Developers: staging access".into();
    r.metadata.labels = BTreeMap::from([("team".to_owned(), "platform".to_owned())]);
    let o = &mut r.spec.options;
    o.max_session_ttl = Some(Duration::from_hours(8));
    o.forward_agent = Some(false);
    o.port_forwarding = Some(true);
    o.record_session = Some(RecordSession {
        default: Some(RecordingMode::BestEffort),
        ssh: Some(RecordingMode::BestEffort),
        desktop: Some(true),
    });
    o.require_session_mfa = Some(false);
    o.client_idle_timeout = Some(Duration::from_mins(15));
    o.disconnect_expired_cert = Some(true);
    let a = &mut r.spec.allow;
    a.logins = strings(&["{{internal.logins}}", "ubuntu"]);
    a.node_labels = BTreeMap::from([
        (
            "env".to_owned(),
            LabelValues(strings(&["staging", "dev-*"])),
        ),
        ("team".to_owned(), LabelValues::one("^(platform|web)$")),
    ]);
    a.db_labels = labels([("env", "staging")]);
    a.db_names = strings(&["{{internal.db_names}}", "postgres"]);
    a.db_users = strings(&["{{internal.db_users}}", "{{email.local(external.email)}}"]);
    a.app_labels = labels([("*", "*")]);
    a.kubernetes_labels = labels([("env", "staging")]);
    a.kubernetes_groups = strings(&["{{internal.kubernetes_groups}}"]);
    a.kubernetes_users = strings(&[r#"{{regexp.replace(external.groups, "^dev-(.*)$", "$1")}}"#]);
    a.windows_desktop_labels = labels([("env", "staging")]);
    a.windows_desktop_logins = strings(&["Administrator"]);
    a.rules = vec![
        Rule::new(&["session", "event"], &["list", "read"]),
        Rule {
            where_: Some("contains(user.spec.roles, resource.metadata.name)".into()),
            ..Rule::new(&["role"], &["list", "read"])
        },
    ];
    a.request = Some(AccessRequestConditions {
        roles: strings(&["prod-access"]),
        ..AccessRequestConditions::default()
    });
    let d = &mut r.spec.deny;
    d.logins = strings(&["root"]);
    d.node_labels = labels([("env", "production")]);
    d.db_users = strings(&["postgres"]);
    r
}

#[test]
fn teleport_v7_role_file_parses_unchanged() {
    let parsed = parse_ok(DEV_ROLE);
    assert_eq!(parsed, vec![Resource::Role(expected_dev_role())]);
    assert_eq!(parsed[0].kind(), "role");
    assert_eq!(parsed[0].name(), "dev");
}

#[test]
fn every_role_version_is_accepted() {
    for v in ["v5", "v6", "v7", "v8"] {
        let text = format!("kind: role\nversion: {v}\nmetadata:\n  name: r\n");
        let r = parse_ok(&text);
        let Resource::Role(role) = &r[0] else {
            panic!("not a role")
        };
        assert_eq!(role.version, v);
    }
}

#[test]
fn multi_document_stream_with_every_kind() {
    let text = r#"
kind: role
version: v7
metadata: {name: auditor}
spec:
  allow:
    rules: [{resources: [event, session], verbs: [list, read]}]
---
kind: user
version: v2
metadata:
  name: alice@example.com
spec:
  roles: [access, auditor]
  traits:
    logins: [alice, ubuntu]
    db_users: [alice]
  created_by: {time: "2025-01-02T03:04:05Z", user: admin}
status:
  locked: true
  locked_until: 2025-01-03T00:00:00Z
  lock_reason: too many failed logins
  failed_logins: 5
---
kind: token
version: v2
metadata:
  name: 6b3a5f0e7c9d4e21a8f7
  expires: 2030-01-01T00:00:00Z
spec:
  roles: [node, db]
  join_method: token
  uses: 3
---
kind: cluster_name
version: v2
metadata: {name: cluster-name}
spec: {cluster_name: hop.example.com, cluster_id: 0f5c2f8e-1111-4222-8333-444455556666}
---
kind: cluster_auth_preference
version: v2
metadata: {name: cluster-auth-preference}
spec:
  type: local
  second_factor: webauthn
  webauthn: {rp_id: hop.example.com}
---
kind: cert_authority
version: v2
metadata: {name: hop.example.com}
spec:
  type: user
  cluster_name: hop.example.com
  active_keys:
    ssh: [{public_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB hop"}]
    tls: [{cert: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"}]
"#;
    let r = parse_ok(text);
    let kinds: Vec<_> = r.iter().map(Resource::kind).collect();
    assert_eq!(
        kinds,
        [
            "role",
            "user",
            "token",
            "cluster_name",
            "cluster_auth_preference",
            "cert_authority"
        ]
    );
    let Resource::User(u) = &r[1] else { panic!() };
    assert!(u.status.locked);
    assert_eq!(u.status.failed_logins, 5);
    assert_eq!(u.spec.traits["logins"], ["alice", "ubuntu"]);
    let Resource::Token(t) = &r[2] else { panic!() };
    assert_eq!(t.spec.uses, Some(3));
    assert!(!format!("{t:?}").contains("6b3a5f0e7c9d4e21a8f7"));
    assert!(!format!("{r:?}").contains("6b3a5f0e7c9d4e21a8f7"));
}

#[test]
fn defaults_for_auth_preference() {
    let r = parse_ok(
        "kind: cluster_auth_preference\nversion: v2\nmetadata: {name: cluster-auth-preference}\n",
    );
    assert_eq!(
        r,
        vec![Resource::ClusterAuthPreference(
            hop_rbac::AuthPreference::default()
        )]
    );
}

#[test]
fn plain_scalars_keep_their_spelling() {
    let r = parse_ok(
        "kind: role\nversion: v7\nmetadata:\n  name: r\n  labels: {port: 0022, on: yes, v: 1.10}\n",
    );
    let labels = &r[0].metadata().labels;
    assert_eq!(labels["port"], "0022");
    assert_eq!(labels["on"], "yes");
    assert_eq!(labels["v"], "1.10");
}

#[test]
fn empty_documents_are_skipped() {
    assert!(parse_ok("").is_empty());
    assert!(parse_ok("---\n---\n# only a comment\n").is_empty());
}

/// Each malformed file, and the exact one-line error an operator sees.
#[test]
fn malformed_resources_name_field_and_line() {
    let cases: &[(&str, &str)] = &[
        // Unknown key at the top level.
        (
            "kind: role\nversion: v7\nspce: {}\nmetadata:\n  name: dev\n",
            r#"roles.yaml:3: unknown field "spce", expected one of kind, sub_kind, version, metadata, spec"#,
        ),
        // Unknown key inside the spec.
        (
            "kind: role\nversion: v7\nmetadata:\n  name: dev\nspec:\n  allow:\n    node_lables: {}\n",
            r#"roles.yaml:7: role "dev": spec.allow: unknown field "node_lables" (did you mean "node_labels"?)"#,
        ),
        // Bad regex: the line of the offending label.
        (
            "kind: role\nversion: v7\nmetadata:\n  name: dev\nspec:\n  allow:\n    node_labels:\n      team: web\n      env: '^(env$'\n",
            r#"roles.yaml:9: role "dev": spec.allow.node_labels: invalid regex "^(env$": unclosed group"#,
        ),
        // Bad duration.
        (
            "kind: role\nversion: v7\nmetadata:\n  name: dev\nspec:\n  options:\n    max_session_ttl: 8x\n",
            r#"roles.yaml:7: role "dev": spec.options.max_session_ttl: invalid duration "8x": unknown unit "x" (one of h, m, s, ms, us, ns)"#,
        ),
        (
            "kind: role\nversion: v7\nmetadata:\n  name: dev\nspec:\n  options:\n    client_idle_timeout: 15\n",
            r#"roles.yaml:7: role "dev": spec.options.client_idle_timeout: invalid duration "15": missing unit (one of h, m, s, ms, us, ns)"#,
        ),
        // Wrong kind.
        (
            "version: v7\nkind: rol\nmetadata:\n  name: dev\n",
            r#"roles.yaml:2: unknown kind "rol", expected one of role, user, token, cluster_name, cluster_auth_preference, cert_authority, db, node, lock, oidc, github, saml"#,
        ),
        (
            "version: v7\nmetadata:\n  name: dev\n",
            r#"roles.yaml:1: missing field "kind""#,
        ),
        // Missing name.
        (
            "kind: role\nversion: v7\nmetadata:\n  description: x\n",
            r#"roles.yaml:3: metadata: missing field "name""#,
        ),
        (
            "kind: role\nversion: v7\nmetadata:\n  name: ''\n",
            r#"roles.yaml:4: metadata.name: must not be empty"#,
        ),
        // Template with an unknown namespace.
        (
            "kind: role\nversion: v7\nmetadata:\n  name: dev\nspec:\n  allow:\n    logins:\n      - ubuntu\n      - '{{foo.bar}}'\n",
            r#"roles.yaml:9: role "dev": spec.allow.logins: invalid template "{{foo.bar}}": unknown namespace "foo", expected internal or external"#,
        ),
        // A token without expiry; the secret is never printed.
        (
            "kind: token\nversion: v2\nmetadata:\n  name: 0123456789abcdef0123\nspec:\n  roles: [node]\n",
            r#"roles.yaml:3: token: metadata.expires: is required"#,
        ),
        (
            "kind: token\nversion: v2\nmetadata:\n  name: 0123456789abcdef0123\n  expires: 2030-01-01T00:00:00Z\nspec:\n  roles: [node, wizard]\n",
            r#"roles.yaml:7: token: spec.roles[1]: unknown value "wizard", expected one of node, proxy, db, app, kube, windows_desktop, bot, discovery"#,
        ),
        (
            "kind: token\nversion: v2\nmetadata:\n  name: 0123456789abcdef0123\n  expires: tomorrow\nspec:\n  roles: [node]\n",
            r#"roles.yaml:5: token: metadata.expires: the 'year' component could not be parsed"#,
        ),
        // Wrong types and versions.
        (
            "kind: role\nversion: v7\nmetadata:\n  name: dev\nspec:\n  allow:\n    logins: root\n",
            r#"roles.yaml:7: role "dev": spec.allow.logins: expected a sequence, found string "root""#,
        ),
        (
            "kind: role\nversion: v9\nmetadata:\n  name: dev\n",
            r#"roles.yaml:2: role "dev": version: unsupported version "v9", expected one of v5, v6, v7, v8"#,
        ),
        (
            "kind: role\nversion: v7\nmetadata:\n  name: dev\nspec:\n  options:\n    forward_agent: yes\n",
            r#"roles.yaml:7: role "dev": spec.options.forward_agent: expected a boolean, found string "yes""#,
        ),
        (
            "kind: role\nversion: v7\nmetadata:\n  name: dev\nspec:\n  deny:\n    rules:\n    - resources: [role]\n      verbs: [remove]\n",
            r#"roles.yaml:9: role "dev": spec.deny.rules[0].verbs[0]: unknown verb "remove", expected one of list, read, readnosecrets, create, update, delete, *"#,
        ),
        // Private keys never belong in a CA resource.
        (
            "kind: cert_authority\nversion: v2\nmetadata: {name: c}\nspec:\n  type: host\n  cluster_name: c\n  active_keys:\n    ssh: [{public_key: x, private_key: y}]\n",
            r#"roles.yaml:8: cert_authority "c": spec.active_keys.ssh[0]: unknown field "private_key", expected public_key"#,
        ),
        // The second document is at fault: nothing is returned.
        (
            "kind: role\nversion: v7\nmetadata:\n  name: a\n---\nkind: role\nversion: v7\nmetadata:\n  name: b\n  foo: 1\n",
            r#"roles.yaml:10: role "b": metadata: unknown field "foo", expected one of name, description, labels, expires, revision"#,
        ),
        (
            "- a\n- b\n",
            "roles.yaml:1: expected a resource (a mapping with kind, version, metadata and spec)",
        ),
        (
            "kind: role\nversion: v7\nmetadata:\n  name: dev\nkind: user\n",
            "roles.yaml:5: duplicate mapping key: kind not allowed here",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(&parse_err(text, "roles.yaml"), want, "input:\n{text}");
    }
}

#[test]
fn error_exposes_line_and_kind() {
    let err = parse_resources(
        "kind: role\nversion: v7\nmetadata:\n  name: dev\nspec:\n  allow:\n    node_labels: {env: '^(x$'}\n",
        "r.yaml",
    )
    .unwrap_err();
    assert_eq!(err.file, "r.yaml");
    assert_eq!(err.line, Some(7));
    let ParseProblem::Invalid { error, .. } = &err.problem else {
        panic!("{err:?}")
    };
    assert_eq!(error.field().to_string(), "spec.allow.node_labels");
}

#[test]
fn crlf_and_byte_order_mark() {
    let crlf = DEV_ROLE.replace('\n', "\r\n");
    assert_eq!(parse_ok(&crlf), vec![Resource::Role(expected_dev_role())]);
    let bom = format!("\u{feff}{DEV_ROLE}");
    assert_eq!(parse_ok(&bom), vec![Resource::Role(expected_dev_role())]);
    // Line numbers count CRLF lines the same way.
    let bad = "kind: role\r\nversion: v7\r\nmetadata:\r\n  name: dev\r\n  nam: x\r\n";
    assert!(parse_err(bad, "w.yaml").starts_with("w.yaml:5: "));
}
