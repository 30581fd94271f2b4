//! Roles written for Teleport: every field loads, nothing grants more than it says. Fields Hop
//! lacks are stored, returned verbatim and warned about; restrictions it cannot enforce are
//! refused with the field named.

use std::collections::BTreeMap;

use hop_rbac::{
    AccessChecker, ForwardDirection, LockingMode, Parsed, Resource, Role,
    parse_resources_with_warnings, to_yaml,
};

use crate::{parse_err, parse_ok};

const DEVELOPER: &str = include_str!("testdata/teleport-developer.yaml");

fn parse_with_warnings(text: &str) -> Parsed {
    parse_resources_with_warnings(text, "roles.yaml").unwrap_or_else(|e| panic!("{e}"))
}

fn only_role(resources: &[Resource]) -> &Role {
    match resources {
        [Resource::Role(r)] => r,
        other => panic!("expected one role, got {other:?}"),
    }
}

/// A role document with `body` under `spec:`.
fn role_with(body: &str) -> String {
    format!("kind: role\nversion: v8\nmetadata:\n  name: r\nspec:\n{body}")
}

#[test]
fn teleport_developer_role_loads_with_warnings_naming_ignored_fields() {
    let parsed = parse_with_warnings(DEVELOPER);
    let role = only_role(&parsed.resources);
    let fields: Vec<String> = parsed
        .warnings
        .iter()
        .map(|w| w.warning.field.to_string())
        .collect();
    let expected = [
        "spec.options.cert_format",
        "spec.options.enhanced_recording",
        "spec.options.permit_x11_forwarding",
        "spec.options.request_access",
        "spec.options.request_prompt",
        "spec.options.lock",
        "spec.options.desktop_clipboard",
        "spec.options.desktop_directory_sharing",
        "spec.options.idp",
        "spec.options.create_host_user_mode",
        "spec.options.create_host_user_default_shell",
        "spec.options.record_session.desktop",
        "spec.options.ssh_port_forwarding",
        "spec.allow.host_groups",
        "spec.allow.host_sudoers",
        // `request` and `review_requests` are enforced; their Teleport-only parts are not.
        "spec.allow.request.annotations",
        "spec.allow.request.search_as_roles",
        "spec.allow.request.thresholds[0].filter",
        "spec.allow.review_requests.preview_as_roles",
        // rules[0].where (`contains(session.participants, user.metadata.name)`) is evaluated.
        "spec.allow.rules[1].actions",
        // join_sessions kinds [k8s, ssh]: both are Hop's now.
    ];
    assert_eq!(fields, expected, "{:#?}", parsed.warnings);
    // Each warning is one line with the file, the line of the field and the role.
    let x11 = parsed
        .warnings
        .iter()
        .find(|w| w.warning.field.to_string() == "spec.options.permit_x11_forwarding")
        .map(ToString::to_string);
    assert_eq!(
        x11.as_deref(),
        Some(
            "roles.yaml:18: role \"developer\": spec.options.permit_x11_forwarding: ignored: \
             Hop offers no X11 forwarding"
        )
    );
    let actions = parsed
        .warnings
        .iter()
        .find(|w| w.warning.field.to_string() == "spec.allow.rules[1].actions");
    assert!(actions.and_then(|w| w.line).is_some(), "{actions:?}");
    for w in &parsed.warnings {
        assert!(!w.to_string().contains('\n'), "{w}");
    }
    // Enforced fields are modelled as before.
    assert_eq!(role.spec.options.lock, Some(LockingMode::BestEffort));
    assert_eq!(role.spec.allow.logins, ["{{internal.logins}}", "ubuntu"]);
}

#[test]
fn teleport_developer_role_round_trips_verbatim() {
    let parsed = parse_with_warnings(DEVELOPER);
    let resource = &parsed.resources[0];
    // YAML, as `hop admin get` prints it, reads back to the same role with the same warnings.
    let text = to_yaml(resource);
    let again = parse_with_warnings(&text);
    assert_eq!(again.resources, parsed.resources, "\n{text}");
    assert_eq!(
        again
            .warnings
            .iter()
            .map(|w| &w.warning)
            .collect::<Vec<_>>(),
        parsed
            .warnings
            .iter()
            .map(|w| &w.warning)
            .collect::<Vec<_>>()
    );
    // JSON, as storage keeps it.
    let json = serde_json::to_value(resource).unwrap();
    let back: Resource = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(&back, resource);
    // The ignored fields come back exactly as written.
    let allow = &json["spec"]["allow"];
    assert_eq!(
        allow["request"]["thresholds"],
        serde_json::json!([{
            "name": "two approvals",
            "approve": 2,
            "deny": 1,
            "filter": "!equals(request.reason, \"\")",
        }])
    );
    assert_eq!(allow["kubernetes_resources"][0]["namespace"], "dev-*");
    assert_eq!(
        allow["kubernetes_resources"][1]["verbs"],
        serde_json::json!(["*"])
    );
    assert_eq!(
        allow["rules"][0]["where"],
        "contains(session.participants, user.metadata.name)"
    );
    assert_eq!(
        allow["join_sessions"][0]["kinds"],
        serde_json::json!(["k8s", "ssh"])
    );
    assert_eq!(
        allow["review_requests"]["preview_as_roles"],
        serde_json::json!(["prod-viewer"])
    );
    let options = &json["spec"]["options"];
    assert_eq!(options["permit_x11_forwarding"], false);
    assert_eq!(options["request_access"], "reason");
    assert_eq!(options["create_host_user_mode"], "keep");
    assert_eq!(
        options["idp"],
        serde_json::json!({"saml": {"enabled": false}})
    );
    assert_eq!(
        options["ssh_port_forwarding"],
        serde_json::json!({"local": {"enabled": true}, "remote": {"enabled": false}})
    );
    assert_eq!(
        json["spec"]["deny"]["request"]["thresholds"][0]["approve"],
        3
    );
}

#[test]
fn remote_forwarding_disabled_is_not_granted() {
    let role = only_role(&parse_ok(DEVELOPER)).clone();
    let checker = AccessChecker::new(&[role], &BTreeMap::new()).unwrap();
    assert!(!checker.permit_port_forwarding_in(ForwardDirection::Remote));
    assert!(checker.permit_port_forwarding_in(ForwardDirection::Local));
    // Hop's node grants forwarding as one permission: the restrictive side wins.
    assert!(!checker.permit_port_forwarding());
}

#[test]
fn forwarding_is_the_most_restrictive_of_every_setting_and_role() {
    let checker = |options: &[&str]| {
        let roles: Vec<Role> = options
            .iter()
            .map(|o| only_role(&parse_ok(&role_with(&format!("  options:\n{o}")))).clone())
            .collect();
        let c = AccessChecker::new(&roles, &BTreeMap::new()).unwrap();
        (
            c.permit_port_forwarding_in(ForwardDirection::Local),
            c.permit_port_forwarding_in(ForwardDirection::Remote),
            c.permit_port_forwarding(),
        )
    };
    let local_off = "    ssh_port_forwarding: {local: {enabled: false}}\n";
    let remote_on = "    ssh_port_forwarding: {remote: {enabled: true}}\n";
    let both_on = "    ssh_port_forwarding: {local: {enabled: true}, remote: {enabled: true}}\n";
    let legacy_off = "    port_forwarding: false\n";
    assert_eq!(checker(&[local_off]), (false, true, false));
    assert_eq!(checker(&[remote_on]), (true, true, true));
    assert_eq!(checker(&[both_on, local_off]), (false, true, false));
    // The legacy switch turns off both directions even where the new one says on.
    let both_on_legacy_off = format!("{both_on}{legacy_off}");
    assert_eq!(checker(&[&both_on_legacy_off]), (false, false, false));
    assert_eq!(checker(&[both_on]), (true, true, true));
}

#[test]
fn unenforceable_restrictions_are_refused_naming_the_field() {
    let cases: &[(&str, &str)] = &[
        (
            "  options:\n    pin_source_ip: true\n",
            "roles.yaml:7: role \"r\": spec.options.pin_source_ip: Hop cannot enforce this \
             restriction: Hop does not pin certificates to the client's IP address",
        ),
        (
            "  options:\n    device_trust_mode: required\n",
            "roles.yaml:7: role \"r\": spec.options.device_trust_mode: Hop cannot enforce this \
             restriction: Hop has no device trust, so it cannot require a trusted device",
        ),
        (
            "  options:\n    device_trust_mode: required-for-humans\n",
            "roles.yaml:7: role \"r\": spec.options.device_trust_mode: Hop cannot enforce this \
             restriction: Hop has no device trust, so it cannot require a trusted device",
        ),
        (
            "  options:\n    forward_agent: false\n    max_sessions: 3\n",
            "roles.yaml:8: role \"r\": spec.options.max_sessions: Hop cannot enforce this \
             restriction: Hop does not count sessions per connection",
        ),
        (
            "  options:\n    ssh_file_copy: false\n",
            "roles.yaml:7: role \"r\": spec.options.ssh_file_copy: Hop cannot enforce this \
             restriction: Hop cannot tell file copies (scp, sftp) from other SSH use",
        ),
    ];
    for (body, want) in cases {
        assert_eq!(&parse_err(&role_with(body), "roles.yaml"), want, "{body}");
    }
}

#[test]
fn other_restrictions_on_what_hop_offers_are_refused() {
    let refused: &[(&str, &str)] = &[
        (
            "  options:\n    max_connections: 1\n",
            "spec.options.max_connections",
        ),
        (
            "  options:\n    max_sessions: 0\n",
            "spec.options.max_sessions",
        ),
        (
            "  options:\n    mfa_verification_interval: 1h\n    max_session_ttl: 8h\n",
            "spec.options.mfa_verification_interval",
        ),
        (
            "  allow:\n    require_session_join:\n      - name: auditor\n        filter: contains(user.spec.roles, \"auditor\")\n        kinds: [db]\n        count: 1\n        modes: [moderator]\n",
            "spec.allow.require_session_join",
        ),
        (
            "  allow:\n    node_labels: {'*': '*'}\n    node_labels_expression: labels.env == \"dev\"\n",
            "spec.allow.node_labels_expression",
        ),
        (
            "  deny:\n    db_labels_expression: labels.env == \"prod\"\n",
            "spec.deny.db_labels_expression",
        ),
        (
            "  deny:\n    app_labels_expression: labels.env == \"prod\"\n",
            "spec.deny.app_labels_expression",
        ),
    ];
    for (body, field) in refused {
        let msg = parse_err(&role_with(body), "roles.yaml");
        assert!(
            msg.contains(&format!("{field}: Hop cannot enforce this restriction")),
            "{body} -> {msg}"
        );
    }
}

#[test]
fn permissive_values_of_refusable_options_load() {
    let text = role_with(
        "  options:\n    pin_source_ip: false\n    ssh_file_copy: true\n    device_trust_mode: off\n    mfa_verification_interval: 8h\n    max_session_ttl: 8h\n",
    );
    let parsed = parse_with_warnings(&text);
    let fields: Vec<String> = parsed
        .warnings
        .iter()
        .map(|w| w.warning.field.to_string())
        .collect();
    assert_eq!(fields, ["spec.options.mfa_verification_interval"]);
    let role = only_role(&parsed.resources);
    assert_eq!(role.spec.options.pin_source_ip, Some(false));
    assert_eq!(role.spec.options.device_trust_mode.as_deref(), Some("off"));
    for mode in ["optional", "''"] {
        parse_ok(&role_with(&format!(
            "  options:\n    device_trust_mode: {mode}\n"
        )));
    }
    let msg = parse_err(
        &role_with("  options:\n    device_trust_mode: sometimes\n"),
        "roles.yaml",
    );
    assert!(
        msg.contains("spec.options.device_trust_mode: unknown mode"),
        "{msg}"
    );
}

#[test]
fn deny_fields_for_features_hop_lacks_load_with_warnings() {
    let text = role_with(
        "  deny:\n    kubernetes_resources: [{kind: '*', api_group: '*', namespace: kube-system, name: '*', verbs: ['*']}]\n    cluster_labels: {env: prod}\n    review_requests: {roles: [admin]}\n    impersonate: {users: ['*'], roles: ['*']}\n    require_session_join: [{name: x, filter: 'true', kinds: [ssh], count: 1, modes: [moderator]}]\n    windows_desktop_logins: [Administrator]\n    node_labels_expression: ''\n",
    );
    let parsed = parse_with_warnings(&text);
    let fields: Vec<String> = parsed
        .warnings
        .iter()
        .map(|w| w.warning.field.to_string())
        .collect();
    assert_eq!(
        fields,
        [
            "spec.deny.windows_desktop_logins",
            "spec.deny.cluster_labels",
            "spec.deny.impersonate",
            "spec.deny.require_session_join",
        ]
    );
}

#[test]
fn allow_label_expression_without_labels_grants_nothing_and_warns() {
    let text = role_with(
        "  allow:\n    logins: [ubuntu]\n    node_labels_expression: labels.env == \"dev\"\n",
    );
    let parsed = parse_with_warnings(&text);
    assert_eq!(parsed.warnings.len(), 1, "{:?}", parsed.warnings);
    assert_eq!(
        parsed.warnings[0].warning.field.to_string(),
        "spec.allow.node_labels_expression"
    );
    let role = only_role(&parsed.resources).clone();
    let checker = AccessChecker::new(&[role], &BTreeMap::new()).unwrap();
    let labels = BTreeMap::from([("env".to_owned(), "dev".to_owned())]);
    assert!(checker.check_node_login(&labels, "ubuntu").is_err());
}

#[test]
fn other_kinds_never_grant_and_moderator_is_a_mode() {
    let text = role_with(
        "  allow:\n    join_sessions:\n      - name: mod\n        roles: ['*']\n        kinds: [k8s, windows_desktop]\n        modes: [moderator, observer]\n",
    );
    let parsed = parse_with_warnings(&text);
    let fields: Vec<String> = parsed
        .warnings
        .iter()
        .map(|w| w.warning.field.to_string())
        .collect();
    assert_eq!(fields, ["spec.allow.join_sessions[0].kinds[1]"]);
    let role = only_role(&parsed.resources).clone();
    let checker = AccessChecker::new(&[role], &BTreeMap::new()).unwrap();
    assert!(
        checker
            .check_join_session(&["dev".to_owned()], "ssh", "observer")
            .is_err()
    );
    assert!(
        checker
            .check_join_session(&["dev".to_owned()], "k8s", "moderator")
            .is_ok()
    );
}

#[test]
fn typos_are_still_refused() {
    let msg = parse_err(
        &role_with("  options:\n    pin_source_ips: true\n"),
        "roles.yaml",
    );
    assert_eq!(
        msg,
        "roles.yaml:7: role \"r\": spec.options: unknown field \"pin_source_ips\" (did you mean \"pin_source_ip\"?)"
    );
    let msg = parse_err(
        &role_with("  options:\n    ssh_port_forwarding: {remote: {enable: false}}\n"),
        "roles.yaml",
    );
    assert!(
        msg.contains("unknown field \"enable\", expected enabled"),
        "{msg}"
    );
    let msg = parse_err(
        &role_with("  options:\n    lock: sometimes\n"),
        "roles.yaml",
    );
    assert!(
        msg.contains("spec.options.lock: unknown value \"sometimes\""),
        "{msg}"
    );
}

#[test]
fn teleport_developer_role_grants_kubernetes_as_written() {
    use hop_rbac::KubeTarget;
    let parsed = parse_with_warnings(DEVELOPER);
    let role = only_role(&parsed.resources).clone();
    let traits = BTreeMap::from([("kubernetes_users".to_owned(), vec!["dev-k8s".to_owned()])]);
    let c = AccessChecker::new(&[role], &traits).unwrap();
    let staging = BTreeMap::from([("env".to_owned(), "staging".to_owned())]);
    let who = c.kube_impersonation(&staging, "alice", None, &[]).unwrap();
    assert_eq!(
        (who.user.as_str(), who.groups.as_slice()),
        ("dev-k8s", &["developers".to_owned()][..])
    );
    let target = |api_group, resource, namespace, name, verb| KubeTarget {
        api_group,
        resource,
        namespace: Some(namespace),
        name,
        verb,
    };
    let ok = |t: KubeTarget<'_>| c.check_kube_request(&staging, &t).is_ok();
    assert!(ok(target("", "pods", "dev-web", Some("web-1"), "get")));
    assert!(ok(target("", "pods", "dev-web", None, "watch")));
    assert!(!ok(target("", "pods", "dev-web", Some("web-1"), "exec")));
    assert!(!ok(target("", "pods", "prod", Some("web-1"), "get")));
    assert!(ok(target(
        "apps",
        "deployments",
        "dev",
        Some("api"),
        "patch"
    )));
    assert!(!ok(target(
        "apps",
        "deployments",
        "dev-web",
        Some("api"),
        "patch"
    )));
    assert!(!ok(target("", "secrets", "dev", Some("db"), "get")));
    // The cluster's labels decide first.
    let prod = BTreeMap::from([("env".to_owned(), "prod".to_owned())]);
    assert!(c.check_kubernetes_cluster(&prod).is_err());
}

#[test]
fn access_request_sections_are_enforced_and_what_cannot_be_is_refused() {
    let role = parse_ok(&role_with(
        "  allow:\n    request:\n      roles: [prod]\n      thresholds: [{approve: 2, deny: 1}]\n      suggested_reviewers: [bob]\n      max_duration: 4h\n      reason: {mode: required}\n    review_requests:\n      roles: [prod]\n",
    ));
    let Resource::Role(role) = &role[0] else {
        panic!("not a role")
    };
    let req = role.spec.allow.request.as_ref().unwrap();
    assert!(req.reason_required());
    assert_eq!(req.thresholds[0].approvals(), 2);
    assert_eq!(req.max_duration.unwrap().as_std().as_secs(), 4 * 3600);
    assert_eq!(
        role.spec.allow.review_requests.as_ref().unwrap().roles,
        ["prod"]
    );
    let msg = parse_err(
        &role_with("  allow:\n    review_requests:\n      roles: [prod]\n      where: 'true'\n"),
        "roles.yaml",
    );
    assert!(msg.contains("spec.allow.review_requests.where"), "{msg}");
    let msg = parse_err(
        &role_with(
            "  allow:\n    request:\n      roles: [prod]\n      reason: {mode: sometimes}\n",
        ),
        "roles.yaml",
    );
    assert!(msg.contains("spec.allow.request.reason.mode"), "{msg}");
}
