//! `to_yaml` → `parse_resources` is the identity for every kind, including awkward strings.

use std::collections::BTreeMap;

use hop_rbac::labels::labels;
use hop_rbac::{
    AuthPreference, CaKeySet, CertAuthType, CertAuthorityResource, ClusterName, CreatedBy,
    Duration, JwtPublicKey, LabelValues, Resource, SecondFactor, SshPublicKey, SystemRole,
    TlsCertificate, User, Webauthn, builtin_roles, parse_resources, to_yaml, to_yaml_stream,
};
use time::macros::datetime;

/// Strings that YAML would read as something else, or that need quoting or escaping.
const AWKWARD: &[&str] = &[
    "yes",
    "no",
    "on",
    "off",
    "true",
    "False",
    "null",
    "~",
    "",
    "007",
    "0x1F",
    "1e3",
    "1.10",
    ".inf",
    "-",
    "- x",
    "#x",
    "a: b",
    "a #b",
    "{{internal.logins}}",
    "*",
    "&a",
    "!x",
    "%x",
    "@x",
    "`x",
    "'",
    "\"",
    "multi\nline\n",
    "no trailing newline\nhere",
    " leading",
    "trailing ",
    "\ttab",
    "ü✓",
    "line\u{2028}sep",
    "[x]",
    "{x: y}",
    "? x",
    "|",
    ">",
    "---",
    "...",
    "\\",
    "2025-01-01",
    "^(dev|test)-[0-9]+$",
];

fn round_trip(r: &Resource) {
    let text = to_yaml(r);
    let back = parse_resources(&text, "rt.yaml").unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(back, vec![r.clone()], "\n{text}");
    // JSON (as storage might use) round-trips too.
    let json = serde_json::to_string(r).unwrap();
    let back: Resource = serde_json::from_str(&json).unwrap();
    assert_eq!(&back, r);
}

fn awkward_map() -> BTreeMap<String, String> {
    AWKWARD
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("k{i}{}", s.trim()), (*s).to_owned()))
        .filter(|(k, _)| !k.chars().any(char::is_control))
        .collect()
}

#[test]
fn roles() {
    for role in builtin_roles() {
        round_trip(&role.into());
    }
    let mut role = hop_rbac::Role::new("awkward");
    role.metadata.description = AWKWARD.join("|");
    role.metadata.labels = awkward_map();
    role.metadata.expires = Some(datetime!(2031-02-03 04:05:06.789 UTC));
    role.metadata.revision = Some("7a0b2c".into());
    role.spec.options.max_session_ttl = Some(Duration::from_mins(90));
    role.spec.options.client_idle_timeout = Some(Duration::ZERO);
    role.spec.allow.logins = AWKWARD
        .iter()
        .filter(|s| !s.is_empty() && !s.chars().any(char::is_control) && !s.contains("{{"))
        .map(|s| (*s).to_owned())
        .collect();
    role.spec.allow.node_labels = labels([("env", "prod"), ("env", "staging"), ("*", "*")]);
    role.spec
        .allow
        .db_labels
        .insert("yes".into(), LabelValues::one("no"));
    role.spec.deny.app_labels = labels([("team", "^(a|b)$")]);
    round_trip(&role.into());
}

#[test]
fn users() {
    let mut u = User::new("alice@example.com", &["access", "yes"]);
    u.spec.traits = BTreeMap::from([
        (
            "logins".to_owned(),
            AWKWARD
                .iter()
                .map(|s| (*s).to_owned())
                .filter(|s| !s.chars().any(char::is_control))
                .collect(),
        ),
        ("email".to_owned(), vec!["alice@example.com".to_owned()]),
    ]);
    u.spec.created_by = Some(CreatedBy {
        time: datetime!(2025-01-02 03:04:05 +01:00),
        user: "admin".into(),
        connector: None,
    });
    u.status.locked = true;
    u.status.locked_until = Some(datetime!(2025-01-03 00:00 UTC));
    u.status.lock_reason = "too many failed logins: 5".into();
    u.status.failed_logins = 5;
    round_trip(&u.into());
    round_trip(&User::new("bob", &[]).into());
}

#[test]
fn tokens() {
    let mut t = hop_rbac::ProvisionToken::new(
        "0123456789abcdef0123456789abcdef",
        &[
            SystemRole::Node,
            SystemRole::WindowsDesktop,
            SystemRole::Bot,
        ],
        datetime!(2030-01-01 00:00 UTC),
    );
    round_trip(&t.clone().into());
    t.spec.uses = Some(1);
    t.metadata.name = "12345678901234567890".into(); // all digits: must stay a string
    round_trip(&t.into());
}

#[test]
fn cluster_resources() {
    round_trip(&ClusterName::new("hop.example.com", "0f5c2f8e-1111-4222-8333-444455556666").into());
    round_trip(&AuthPreference::default().into());
    let mut ap = AuthPreference::default();
    ap.spec.second_factor = SecondFactor::Webauthn;
    ap.spec.webauthn = Some(Webauthn {
        rp_id: "hop.example.com".into(),
    });
    ap.spec.allow_local_auth = Some(false);
    round_trip(&ap.into());
    let mut ca = CertAuthorityResource::new(CertAuthType::Db, "hop.example.com");
    let pem = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIQ\n-----END CERTIFICATE-----\n";
    ca.spec.active_keys = CaKeySet {
        ssh: vec![SshPublicKey {
            public_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB hop-db".into(),
        }],
        tls: vec![TlsCertificate { cert: pem.into() }],
        jwt: vec![JwtPublicKey {
            public_key: "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----".into(),
        }],
    };
    ca.spec.additional_trusted_keys.tls = vec![TlsCertificate { cert: pem.into() }];
    round_trip(&ca.into());
}

#[test]
fn streams() {
    let all: Vec<Resource> = builtin_roles().into_iter().map(Into::into).collect();
    let text = to_yaml_stream(&all);
    assert_eq!(parse_resources(&text, "s.yaml").unwrap(), all);
}
