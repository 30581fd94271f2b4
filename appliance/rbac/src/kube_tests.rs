use crate::parse::parse_resources;

/// The error of loading a role of `version` whose `allow` has `body` (YAML lines under
/// `allow:`), or `None` when it loads.
fn load(version: &str, body: &str) -> Option<String> {
    let text = format!(
        "kind: role\nversion: {version}\nmetadata:\n  name: r\nspec:\n  allow:\n    kubernetes_labels: {{'*': '*'}}\n{body}"
    );
    parse_resources(&text, "r.yaml")
        .err()
        .map(|e| e.to_string())
}

fn refused(version: &str, body: &str, want: &str) {
    let e = load(version, body).unwrap_or_else(|| panic!("{version} loaded:\n{body}"));
    assert!(e.contains(want), "{version}: {e}\nwanted: {want}");
}

fn loads(version: &str, body: &str) {
    if let Some(e) = load(version, body) {
        panic!("{version}: {e}\n{body}");
    }
}

fn entry(fields: &str) -> String {
    format!("    kubernetes_resources:\n      - {{{fields}}}\n")
}

#[test]
fn v7_entries() {
    loads(
        "v7",
        &entry("kind: pod, namespace: '*', name: '*', verbs: ['*']"),
    );
    loads(
        "v7",
        &entry(
            "kind: '*', namespace: 'dev-*', name: '^web-[0-9]+$', verbs: [get, list, watch, exec, portforward]",
        ),
    );
    loads("v7", &entry("kind: namespace, name: dev, verbs: ['*']"));
    loads("v7", &entry("kind: kube_node, name: '*', verbs: [get]"));
    loads(
        "v7",
        &entry("kind: kube_role, namespace: x, name: '*', verbs: [get]"),
    );
    refused(
        "v7",
        &entry("kind: pods, namespace: '*', name: '*', verbs: ['*']"),
        "spec.allow.kubernetes_resources[0].kind: unknown kind \"pods\" for role v7 (did you mean \"pod\"? v8 roles use plural names)",
    );
    refused(
        "v7",
        &entry("kind: gadget, namespace: '*', name: '*', verbs: ['*']"),
        "unknown kind \"gadget\"",
    );
    refused(
        "v7",
        &entry("kind: pod, namespace: '*', name: '*', verbs: ['*'], api_group: ''"),
        "kubernetes_resources[0].api_group: needs role version v8",
    );
    refused(
        "v7",
        &entry("kind: pod, name: '*', verbs: ['*']"),
        "kubernetes_resources[0].namespace: is required for kind \"pod\"",
    );
    refused(
        "v7",
        &entry("kind: pod, namespace: '*', verbs: ['*']"),
        "kubernetes_resources[0].name: is required",
    );
    refused(
        "v7",
        &entry("kind: pod, namespace: '*', name: '*'"),
        "kubernetes_resources[0].verbs: is required",
    );
    refused(
        "v7",
        &entry("kind: pod, namespace: '*', name: '*', verbs: [get, '*']"),
        "verbs[1]: '*' cannot be listed with other verbs",
    );
    refused(
        "v7",
        &entry("kind: pod, namespace: '*', name: '*', verbs: [get, fly]"),
        "verbs[1]: unknown verb \"fly\"",
    );
    refused(
        "v7",
        &entry("kind: pod, namespace: '^(dev$', name: '*', verbs: ['*']"),
        "kubernetes_resources[0].namespace: invalid regex",
    );
    refused(
        "v7",
        &entry("kind: pod, namespace: '*', name: '{{external.pods}}', verbs: ['*']"),
        "trait templates are not supported",
    );
    refused(
        "v7",
        &entry("kind: pod, namespace: '*', name: '*', verbs: ['*'], color: red"),
        "color",
    );
}

#[test]
fn v8_entries() {
    loads(
        "v8",
        &entry("kind: pods, api_group: '', namespace: '*', name: '*', verbs: ['*']"),
    );
    loads(
        "v8",
        &entry("kind: deployments, api_group: apps, namespace: dev, name: '*', verbs: [get]"),
    );
    loads(
        "v8",
        &entry("kind: '*', api_group: '*', namespace: '*', name: '*', verbs: ['*']"),
    );
    loads(
        "v8",
        &entry("kind: widgets, api_group: 'example.*', name: '*', verbs: [list]"),
    );
    loads(
        "v8",
        &entry("kind: namespaces, api_group: '', name: dev, verbs: [get]"),
    );
    refused(
        "v8",
        &entry("kind: pod, api_group: '', namespace: '*', name: '*', verbs: ['*']"),
        "kind: \"pod\" is a role v7 kind: role v8 uses plural resource names (\"pods\")",
    );
    refused(
        "v8",
        &entry("kind: '*', namespace: '*', name: '*', verbs: ['*']"),
        "kubernetes_resources[0].api_group: is required for kind \"*\"",
    );
    refused(
        "v8",
        &entry("kind: deployments, namespace: '*', name: '*', verbs: ['*']"),
        "api_group: is required for kind \"deployments\"",
    );
    refused(
        "v8",
        &entry("kind: Pods, api_group: '', namespace: '*', name: '*', verbs: ['*']"),
        "is not a plural resource name",
    );
    refused(
        "v8",
        &entry("kind: pods, api_group: '', name: '*', verbs: ['*']"),
        "namespace: is required for kind \"pods\"",
    );
    refused(
        "v8",
        &entry("kind: pods, api_group: '^(x$', namespace: '*', name: '*', verbs: ['*']"),
        "api_group: invalid regex",
    );
}

#[test]
fn v6_and_v5_entries_name_pods_only() {
    for v in ["v5", "v6"] {
        loads(v, &entry("kind: pod, namespace: '*', name: 'web-*'"));
        loads(
            v,
            &entry("kind: pod, namespace: '*', name: '*', verbs: [get]"),
        );
        refused(
            v,
            &entry("kind: secret, namespace: '*', name: '*'"),
            &format!("role {v} supports only kind \"pod\" (found \"secret\")"),
        );
    }
}

#[test]
fn deny_entries_are_validated_too() {
    let text = "kind: role\nversion: v7\nmetadata:\n  name: r\nspec:\n  deny:\n    kubernetes_labels: {'*': '*'}\n    kubernetes_resources: [{kind: secrets, namespace: '*', name: '*', verbs: ['*']}]\n";
    let e = parse_resources(text, "r.yaml").unwrap_err().to_string();
    assert!(e.contains("spec.deny.kubernetes_resources[0].kind"), "{e}");
}

#[test]
fn round_trip_keeps_entries() {
    let text = "kind: role\nversion: v8\nmetadata:\n  name: r\nspec:\n  allow:\n    kubernetes_labels: {'*': '*'}\n    kubernetes_resources:\n      - {kind: pods, api_group: '', namespace: dev, name: '*', verbs: [get, list]}\n      - {kind: nodes, api_group: '', name: '*', verbs: [get]}\n";
    let parsed = parse_resources(text, "r.yaml").unwrap();
    let yaml = crate::to_yaml(&parsed[0]);
    assert!(yaml.contains("api_group: \"\""), "{yaml}");
    assert_eq!(parse_resources(&yaml, "again.yaml").unwrap(), parsed);
}

#[test]
fn label_expression_beside_kube_labels_is_refused_now_that_kube_is_enforced() {
    let e = load(
        "v7",
        "    kubernetes_labels_expression: 'labels.env == \"dev\"'\n",
    )
    .unwrap();
    assert!(e.contains("spec.allow.kubernetes_labels_expression"), "{e}");
    assert!(e.contains("Hop cannot enforce"), "{e}");
}
