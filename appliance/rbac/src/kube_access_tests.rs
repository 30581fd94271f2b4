use super::*;
use crate::parse::parse_resources;
use crate::resource::Resource;
use crate::role::Role;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A role of `version` named `name` with `spec` (YAML lines under `spec:`).
fn role(name: &str, version: &str, spec: &str) -> Role {
    let text = format!("kind: role\nversion: {version}\nmetadata:\n  name: {name}\nspec:\n{spec}");
    match parse_resources(&text, "r.yaml")
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
        .pop()
    {
        Some(Resource::Role(r)) => r,
        other => panic!("{other:?}"),
    }
}

fn checker(roles: &[Role]) -> AccessChecker {
    checker_with(roles, &[])
}

fn checker_with(roles: &[Role], traits: &[(&str, &[&str])]) -> AccessChecker {
    let traits: BTreeMap<String, Vec<String>> = traits
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.iter().map(|s| (*s).to_owned()).collect()))
        .collect();
    AccessChecker::new(roles, &traits).unwrap_or_else(|e| panic!("{e}"))
}

fn dev() -> BTreeMap<String, String> {
    labels(&[("env", "dev")])
}

fn t<'a>(
    resource: &'a str,
    namespace: Option<&'a str>,
    name: Option<&'a str>,
    verb: &'a str,
) -> KubeTarget<'a> {
    KubeTarget {
        api_group: "",
        resource,
        namespace,
        name,
        verb,
    }
}

fn allowed(c: &AccessChecker, target: &KubeTarget<'_>) -> bool {
    c.check_kube_request(&dev(), target).is_ok()
}

const ALLOW_DEV: &str =
    "  allow:\n    kubernetes_labels: {env: dev}\n    kubernetes_groups: [devs]\n";

fn with_resources(version: &str, entries: &str) -> Role {
    role(
        "r",
        version,
        &format!("{ALLOW_DEV}    kubernetes_resources:\n{entries}"),
    )
}

#[test]
fn a_role_without_resources_allows_every_resource_of_its_clusters() {
    for v in ["v6", "v7", "v8"] {
        let c = checker(&[role("r", v, ALLOW_DEV)]);
        for target in [
            t("pods", Some("default"), Some("web-1"), "get"),
            t("secrets", Some("kube-system"), None, "list"),
            t("nodes", None, Some("n1"), "delete"),
            t("pods", Some("default"), Some("web-1"), "exec"),
        ] {
            assert!(allowed(&c, &target), "{v} {target:?}");
            assert!(!c.kube_needs_filter(&dev(), "", target.resource, target.namespace));
        }
        // Not on a cluster its labels do not match.
        let prod = labels(&[("env", "prod")]);
        let e = c
            .check_kube_request(&prod, &t("pods", None, None, "list"))
            .unwrap_err();
        assert_eq!(e.to_string(), "no role allows kubernetes cluster");
    }
}

#[test]
fn non_resource_requests_and_self_reviews_need_only_the_cluster() {
    let c = checker(&[with_resources(
        "v7",
        "      - {kind: pod, namespace: nowhere, name: nothing, verbs: [get]}\n",
    )]);
    assert!(allowed(&c, &t("", None, None, "get")));
    let whoami = KubeTarget {
        api_group: "authentication.k8s.io",
        resource: "selfsubjectreviews",
        namespace: None,
        name: None,
        verb: "create",
    };
    assert!(allowed(&c, &whoami));
    // Other cluster-scoped reviews are resources like any other.
    let sar = KubeTarget {
        resource: "subjectaccessreviews",
        api_group: "authorization.k8s.io",
        ..whoami
    };
    assert!(!allowed(&c, &sar));
    assert!(
        checker(&[])
            .check_kube_request(&dev(), &t("", None, None, "get"))
            .is_err()
    );
}

#[test]
fn v7_namespace_and_name_patterns() {
    let c = checker(&[with_resources(
        "v7",
        "      - {kind: pod, namespace: 'dev-*', name: '^web-[0-9]+$', verbs: [get, list, watch]}\n",
    )]);
    assert!(allowed(
        &c,
        &t("pods", Some("dev-a"), Some("web-12"), "get")
    ));
    assert!(!allowed(
        &c,
        &t("pods", Some("dev-a"), Some("web-x"), "get")
    ));
    assert!(!allowed(&c, &t("pods", Some("prod"), Some("web-1"), "get")));
    assert!(!allowed(
        &c,
        &t("pods", Some("dev-a"), Some("web-1"), "delete")
    ));
    assert!(!allowed(
        &c,
        &t("pods", Some("dev-a"), Some("web-1"), "exec")
    ));
    assert!(!allowed(
        &c,
        &t("secrets", Some("dev-a"), Some("web-1"), "get")
    ));
    // A list in a namespace where some pods may be shown: allowed, filtered.
    assert!(allowed(&c, &t("pods", Some("dev-a"), None, "list")));
    assert!(c.kube_needs_filter(&dev(), "", "pods", Some("dev-a")));
    assert!(allowed(&c, &t("pods", None, None, "watch")));
    assert!(c.kube_needs_filter(&dev(), "", "pods", None));
    // ... and where none may: refused.
    assert!(!allowed(&c, &t("pods", Some("prod"), None, "list")));
    // Items.
    let item = |ns, name| c.kube_item_visible(&dev(), &t("pods", Some(ns), Some(name), "list"));
    assert!(item("dev-a", "web-1"));
    assert!(!item("dev-a", "db-1"));
    assert!(!item("kube-system", "web-1"));
    // A create whose name is in the body needs a rule for every name.
    assert!(!allowed(&c, &t("pods", Some("dev-a"), None, "create")));
}

#[test]
fn v7_kind_namespace_grants_everything_inside() {
    let c = checker(&[with_resources(
        "v7",
        "      - {kind: namespace, name: team-a, verbs: ['*']}\n",
    )]);
    assert!(allowed(&c, &t("pods", Some("team-a"), Some("x"), "exec")));
    assert!(allowed(&c, &t("secrets", Some("team-a"), None, "list")));
    assert!(!c.kube_needs_filter(&dev(), "", "secrets", Some("team-a")));
    let deploy = KubeTarget {
        api_group: "apps",
        ..t("deployments", Some("team-a"), Some("d"), "patch")
    };
    assert!(allowed(&c, &deploy));
    assert!(allowed(&c, &t("namespaces", None, Some("team-a"), "get")));
    assert!(!allowed(&c, &t("pods", Some("team-b"), Some("x"), "get")));
    assert!(!allowed(&c, &t("nodes", None, Some("n"), "get")));
    // Listing every namespace's pods shows team-a's only.
    assert!(allowed(&c, &t("pods", None, None, "list")));
    assert!(c.kube_needs_filter(&dev(), "", "pods", None));
}

#[test]
fn v8_kinds_are_plural_with_api_groups_and_namespaces_is_the_object_only() {
    let c = checker(&[with_resources(
        "v8",
        "      - {kind: deployments, api_group: apps, namespace: dev, name: '*', verbs: ['*']}\n      - {kind: namespaces, api_group: '', name: dev, verbs: [get]}\n      - {kind: widgets, api_group: 'example.*', namespace: '*', name: '*', verbs: [list]}\n",
    )]);
    let apps = |resource, ns, name, verb| KubeTarget {
        api_group: "apps",
        ..t(resource, ns, name, verb)
    };
    assert!(allowed(
        &c,
        &apps("deployments", Some("dev"), Some("web"), "update")
    ));
    assert!(!allowed(
        &c,
        &apps("deployments", Some("prod"), Some("web"), "update")
    ));
    // The same plural in another group is another resource.
    assert!(!allowed(
        &c,
        &t("deployments", Some("dev"), Some("web"), "get")
    ));
    // `namespaces` grants the object, not what is inside.
    assert!(allowed(&c, &t("namespaces", None, Some("dev"), "get")));
    assert!(!allowed(&c, &t("pods", Some("dev"), Some("p"), "get")));
    let widgets = KubeTarget {
        api_group: "example.com",
        ..t("widgets", None, None, "list")
    };
    assert!(allowed(&c, &widgets));
    assert!(!c.kube_needs_filter(&dev(), "example.com", "widgets", None));
}

#[test]
fn v7_star_and_cluster_scoped_kinds() {
    let c = checker(&[with_resources(
        "v7",
        "      - {kind: '*', namespace: dev, name: '*', verbs: [get, list]}\n",
    )]);
    assert!(allowed(&c, &t("configmaps", Some("dev"), Some("c"), "get")));
    // v7: the namespace pattern does not apply to cluster-scoped kinds.
    assert!(allowed(&c, &t("nodes", None, Some("n1"), "get")));
    assert!(!allowed(
        &c,
        &t("configmaps", Some("prod"), Some("c"), "get")
    ));
    // ... but not to Namespace objects, which `*` reaches through its namespace pattern only
    // (reading `dev` is allowed because the rule names resources inside it).
    assert!(!allowed(&c, &t("namespaces", None, Some("prod"), "get")));
    assert!(allowed(&c, &t("namespaces", None, Some("dev"), "get")));
    let all = checker(&[with_resources(
        "v7",
        "      - {kind: '*', namespace: '*', name: '*', verbs: [delete]}\n",
    )]);
    assert!(allowed(
        &all,
        &t("namespaces", None, Some("prod"), "delete")
    ));
    let v8 = checker(&[with_resources(
        "v8",
        "      - {kind: '*', api_group: '*', namespace: dev, name: '*', verbs: [get, list]}\n",
    )]);
    assert!(!allowed(&v8, &t("nodes", None, Some("n1"), "get")));
}

#[test]
fn star_without_a_namespace_reaches_cluster_scoped_objects_only() {
    for (v, group) in [("v7", ""), ("v8", ", api_group: '*'")] {
        let c = checker(&[with_resources(
            v,
            &format!("      - {{kind: '*'{group}, name: '*', verbs: [get, list]}}\n"),
        )]);
        assert!(allowed(&c, &t("nodes", None, Some("n1"), "get")), "{v}");
        assert!(
            !allowed(&c, &t("pods", Some("default"), Some("p"), "get")),
            "{v}"
        );
        assert!(c.kube_needs_filter(&dev(), "", "pods", None), "{v}");
        let item = t("pods", Some("default"), Some("p"), "list");
        assert!(!c.kube_item_visible(&dev(), &item), "{v}");
    }
}

#[test]
fn reading_namespaces_that_hold_allowed_resources() {
    let c = checker(&[with_resources(
        "v7",
        "      - {kind: pod, namespace: team-a, name: '*', verbs: ['*']}\n",
    )]);
    assert!(allowed(&c, &t("namespaces", None, Some("team-a"), "get")));
    assert!(!allowed(
        &c,
        &t("namespaces", None, Some("team-a"), "delete")
    ));
    assert!(!allowed(&c, &t("namespaces", None, Some("team-b"), "get")));
    assert!(allowed(&c, &t("namespaces", None, None, "list")));
    assert!(c.kube_needs_filter(&dev(), "", "namespaces", None));
    let visible = |n| c.kube_item_visible(&dev(), &t("namespaces", None, Some(n), "list"));
    assert!(visible("team-a"));
    assert!(!visible("kube-system"));
}

#[test]
fn deny_wins_and_a_resource_deny_keeps_the_cluster() {
    let deny_secrets = role(
        "no-secrets",
        "v7",
        "  deny:\n    kubernetes_labels: {'*': '*'}\n    kubernetes_resources:\n      - {kind: secret, namespace: '*', name: '*', verbs: ['*']}\n      - {kind: pod, namespace: kube-system, name: 'dns-*', verbs: [exec]}\n",
    );
    let c = checker(&[role("r", "v7", ALLOW_DEV), deny_secrets]);
    c.check_kubernetes_cluster(&dev()).unwrap();
    assert!(allowed(
        &c,
        &t("pods", Some("default"), Some("web-1"), "get")
    ));
    let e = c
        .check_kube_request(
            &dev(),
            &t("secrets", Some("default"), Some("db-password"), "get"),
        )
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "Kubernetes get on secrets \"db-password\" in namespace \"default\" denied by role \
         \"no-secrets\" (spec.deny.kubernetes_resources)"
    );
    // A deny that covers every item refuses the list; one that may hide some filters it.
    assert!(!allowed(&c, &t("secrets", Some("default"), None, "list")));
    assert!(!allowed(&c, &t("secrets", None, None, "watch")));
    assert!(allowed(
        &c,
        &t("pods", Some("kube-system"), Some("dns-1"), "get")
    ));
    assert!(!allowed(
        &c,
        &t("pods", Some("kube-system"), Some("dns-1"), "exec")
    ));
    assert!(allowed(
        &c,
        &t("pods", Some("kube-system"), Some("web-1"), "exec")
    ));
    // A create with no name is refused as soon as a deny rule may match some name.
    assert!(!allowed(&c, &t("pods", Some("kube-system"), None, "exec")));
    assert!(c.kube_item_visible(&dev(), &t("pods", Some("default"), Some("web-1"), "list")));
    assert!(!c.kube_item_visible(&dev(), &t("secrets", Some("default"), Some("x"), "list")));
    // A deny without resources takes the whole cluster.
    let deny_all = role(
        "deny-dev",
        "v7",
        "  deny:\n    kubernetes_labels: {env: dev}\n",
    );
    let c = checker(&[role("r", "v7", ALLOW_DEV), deny_all]);
    let e = c
        .check_kube_request(&dev(), &t("", None, None, "get"))
        .unwrap_err();
    assert!(e.to_string().contains("spec.deny.kubernetes_labels"), "{e}");
    assert!(c.kube_impersonation(&dev(), "alice", None, &[]).is_err());
    assert!(c.kube_needs_filter(&dev(), "", "pods", None));
    assert!(!c.kube_item_visible(&dev(), &t("pods", Some("d"), Some("p"), "list")));
}

#[test]
fn deny_partial_filters_lists() {
    let c = checker(&[
        role("r", "v7", ALLOW_DEV),
        role(
            "hide",
            "v7",
            "  deny:\n    kubernetes_labels: {'*': '*'}\n    kubernetes_resources:\n      - {kind: pod, namespace: default, name: web-2, verbs: ['*']}\n",
        ),
    ]);
    assert!(allowed(&c, &t("pods", Some("default"), None, "list")));
    assert!(c.kube_needs_filter(&dev(), "", "pods", Some("default")));
    assert!(!c.kube_needs_filter(&dev(), "", "pods", Some("other")));
    let item = |name| c.kube_item_visible(&dev(), &t("pods", Some("default"), Some(name), "watch"));
    assert!(item("web-1"));
    assert!(!item("web-2"));
    assert!(!allowed(
        &c,
        &t("pods", Some("default"), Some("web-2"), "get")
    ));
}

#[test]
fn v6_roles_govern_pods_only() {
    let c = checker(&[with_resources(
        "v6",
        "      - {kind: pod, namespace: default, name: 'web-*'}\n",
    )]);
    assert!(allowed(
        &c,
        &t("pods", Some("default"), Some("web-1"), "exec")
    ));
    assert!(!allowed(
        &c,
        &t("pods", Some("default"), Some("db-1"), "get")
    ));
    assert!(allowed(
        &c,
        &t("secrets", Some("kube-system"), Some("s"), "get")
    ));
    assert!(!c.kube_needs_filter(&dev(), "", "secrets", None));
    assert!(c.kube_needs_filter(&dev(), "", "pods", Some("default")));
}

#[test]
fn several_roles_union_their_grants() {
    let c = checker(&[
        with_resources(
            "v7",
            "      - {kind: pod, namespace: a, name: '*', verbs: [get]}\n",
        ),
        with_resources(
            "v8",
            "      - {kind: secrets, api_group: '', namespace: b, name: '*', verbs: [list]}\n",
        ),
    ]);
    assert!(allowed(&c, &t("pods", Some("a"), Some("p"), "get")));
    assert!(allowed(&c, &t("secrets", Some("b"), None, "list")));
    assert!(!c.kube_needs_filter(&dev(), "", "secrets", Some("b")));
    assert!(!allowed(&c, &t("secrets", Some("a"), None, "list")));
}

#[test]
fn impersonation() {
    let alice = role(
        "r",
        "v7",
        "  allow:\n    kubernetes_labels: {env: dev}\n    kubernetes_users: ['{{internal.kubernetes_users}}']\n    kubernetes_groups: [devs, '{{external.teams}}']\n",
    );
    let c = checker_with(
        &[alice],
        &[("kubernetes_users", &["alice-k8s"]), ("teams", &["blue"])],
    );
    let got = c.kube_impersonation(&dev(), "alice", None, &[]).unwrap();
    assert_eq!(
        got,
        KubeImpersonation {
            user: "alice-k8s".into(),
            groups: vec!["blue".into(), "devs".into()]
        }
    );
    // --as within the role; --as-group narrows.
    let got = c
        .kube_impersonation(&dev(), "alice", Some("alice-k8s"), &["devs".into()])
        .unwrap();
    assert_eq!(got.groups, ["devs"]);
    // --as beyond the role.
    let e = c
        .kube_impersonation(&dev(), "alice", Some("system:admin"), &[])
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "no role allows impersonating Kubernetes user \"system:admin\" (kubectl --as)"
    );
    let e = c
        .kube_impersonation(&dev(), "alice", None, &["system:masters".into()])
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("group \"system:masters\" (kubectl --as-group)"),
        "{e}"
    );
    // Not on another cluster.
    assert!(
        c.kube_impersonation(&labels(&[("env", "prod")]), "alice", None, &[])
            .is_err()
    );
}

#[test]
fn groups_only_uses_the_hop_user_name_and_nothing_at_all_is_denied() {
    let c = checker(&[role("r", "v7", ALLOW_DEV)]);
    let got = c.kube_impersonation(&dev(), "alice", None, &[]).unwrap();
    assert_eq!(
        (got.user.as_str(), got.groups.as_slice()),
        ("alice", &["devs".to_owned()][..])
    );
    assert!(
        c.kube_impersonation(&dev(), "alice", Some("alice"), &[])
            .is_ok()
    );
    assert!(
        c.kube_impersonation(&dev(), "alice", Some("bob"), &[])
            .is_err()
    );
    let bare = checker(&[role(
        "r",
        "v7",
        "  allow:\n    kubernetes_labels: {env: dev}\n",
    )]);
    let e = bare
        .kube_impersonation(&dev(), "alice", None, &[])
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("kubernetes_users or kubernetes_groups"),
        "{e}"
    );
}

#[test]
fn several_users_need_a_choice_and_deny_lists_win() {
    let c = checker(&[
        role(
            "a",
            "v7",
            "  allow:\n    kubernetes_labels: {env: dev}\n    kubernetes_users: [viewer, editor, root]\n",
        ),
        role(
            "no-root",
            "v7",
            "  deny:\n    kubernetes_users: [root]\n    kubernetes_groups: [system:masters]\n",
        ),
    ]);
    let e = c
        .kube_impersonation(&dev(), "alice", None, &[])
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "no role allows choosing among several Kubernetes users (editor, viewer) by itself: \
         pick one with kubectl --as"
    );
    let got = c
        .kube_impersonation(&dev(), "alice", Some("editor"), &[])
        .unwrap();
    assert_eq!((got.user.as_str(), got.groups.len()), ("editor", 0));
    let e = c
        .kube_impersonation(&dev(), "alice", Some("root"), &[])
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "impersonating Kubernetes user \"root\" (kubectl --as) denied by role \"no-root\" \
         (spec.deny.kubernetes_users)"
    );
    // Only roles whose labels match the cluster contribute users.
    let prod = labels(&[("env", "prod")]);
    assert!(
        c.kube_impersonation(&prod, "alice", Some("editor"), &[])
            .is_err()
    );
}

#[test]
fn the_hop_user_name_itself_can_be_denied() {
    let c = checker(&[
        role("r", "v7", ALLOW_DEV),
        role("x", "v7", "  deny:\n    kubernetes_users: [alice]\n"),
    ]);
    let e = c
        .kube_impersonation(&dev(), "alice", None, &[])
        .unwrap_err();
    assert!(e.to_string().contains("denied by role \"x\""), "{e}");
}
