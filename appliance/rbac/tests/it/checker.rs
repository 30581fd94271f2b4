//! Access decisions: deny wins, default deny, patterns, templates, options, admin rules.

use std::collections::BTreeMap;

use hop_rbac::labels::labels;
use hop_rbac::{
    AccessChecker, AccessDenied, Duration, Resource, Role, Rule, Traits, builtin_roles,
};

use crate::parse_ok;

fn node(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn traits(pairs: &[(&str, &[&str])]) -> Traits {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.iter().map(|s| (*s).to_owned()).collect()))
        .collect()
}

fn checker(roles: &[Role], t: &Traits) -> AccessChecker {
    AccessChecker::new(roles, t).unwrap_or_else(|e| panic!("{e}"))
}

fn role(name: &str, f: impl FnOnce(&mut Role)) -> Role {
    let mut r = Role::new(name);
    f(&mut r);
    r
}

fn ssh_everywhere(name: &str, logins: &[&str]) -> Role {
    role(name, |r| {
        r.spec.allow.logins = logins.iter().map(|s| (*s).to_owned()).collect();
        r.spec.allow.node_labels = labels([("*", "*")]);
    })
}

#[test]
fn no_roles_denies_everything() {
    let c = checker(&[], &Traits::new());
    assert!(c.logins().is_empty());
    assert!(c.role_names().is_empty());
    assert_eq!(c.max_session_ttl(), hop_rbac::DEFAULT_MAX_SESSION_TTL);
    assert!(!c.permit_agent_forwarding());
    assert!(!c.permit_port_forwarding());
    let err = c.check_node_login(&node(&[]), "root").unwrap_err();
    assert_eq!(err.to_string(), "no role allows login \"root\" on node");
    assert!(c.check_database(&node(&[]), "db", "u").is_err());
    assert!(c.check_app(&node(&[])).is_err());
    assert!(c.check_rule("role", "read").is_err());
    assert!(c.check_kubernetes_cluster(&node(&[])).is_err());
}

#[test]
fn deny_wins_over_allow() {
    let allow = ssh_everywhere("allow-all", &["root", "ubuntu"]);
    let no_root = role("no-root", |r| r.spec.deny.logins = vec!["root".into()]);
    let no_prod = role("no-prod", |r| {
        r.spec.deny.node_labels = labels([("env", "prod")])
    });
    let c = checker(&[allow, no_root, no_prod], &Traits::new());
    assert_eq!(c.logins(), ["ubuntu"]);
    assert_eq!(
        c.check_node_login(&node(&[("env", "dev")]), "root")
            .unwrap_err(),
        AccessDenied::DeniedByRole {
            role: "no-root".into(),
            field: "spec.deny.logins",
            what: "login \"root\" on node".into(),
        }
    );
    assert_eq!(
        c.check_node_login(&node(&[("env", "prod")]), "ubuntu")
            .unwrap_err()
            .to_string(),
        "login \"ubuntu\" on node denied by role \"no-prod\" (spec.deny.node_labels)"
    );
    c.check_node_login(&node(&[("env", "dev")]), "ubuntu")
        .unwrap();
    // Not granted at all.
    assert!(matches!(
        c.check_node_login(&node(&[]), "alice"),
        Err(AccessDenied::NotAllowed { .. })
    ));
}

#[test]
fn a_node_is_seen_where_a_role_allows_its_labels_and_none_denies_them() {
    let allow = ssh_everywhere("allow-all", &["root", "ubuntu"]);
    let no_root = role("no-root", |r| r.spec.deny.logins = vec!["root".into()]);
    let no_prod = role("no-prod", |r| {
        r.spec.deny.node_labels = labels([("env", "prod")])
    });
    let c = checker(&[allow, no_root, no_prod], &Traits::new());
    // A login denied everywhere does not hide the node: `hop ssh root@dev` says why instead.
    assert!(c.may_see_node(&node(&[("env", "dev")])));
    assert!(!c.may_see_node(&node(&[("env", "prod")])));
    let dev_only = role("dev-only", |r| {
        r.spec.allow.logins = vec!["ubuntu".into()];
        r.spec.allow.node_labels = labels([("env", "dev")]);
    });
    let c = checker(&[dev_only], &Traits::new());
    assert!(c.may_see_node(&node(&[("env", "dev")])));
    assert!(!c.may_see_node(&node(&[("env", "lab")])));
    assert!(!checker(&[], &Traits::new()).may_see_node(&node(&[])));
}

#[test]
fn allow_needs_labels_and_login_in_the_same_role() {
    let a = role("a", |r| {
        r.spec.allow.logins = vec!["alice".into()];
        r.spec.allow.node_labels = labels([("env", "dev")]);
    });
    let b = role("b", |r| {
        r.spec.allow.logins = vec!["root".into()];
        r.spec.allow.node_labels = labels([("env", "lab")]);
    });
    let c = checker(&[a, b], &Traits::new());
    c.check_node_login(&node(&[("env", "dev")]), "alice")
        .unwrap();
    c.check_node_login(&node(&[("env", "lab")]), "root")
        .unwrap();
    assert!(
        c.check_node_login(&node(&[("env", "dev")]), "root")
            .is_err()
    );
    assert!(
        c.check_node_login(&node(&[("env", "lab")]), "alice")
            .is_err()
    );
    // A role with logins but no node_labels grants nothing.
    let c = checker(
        &[role("x", |r| r.spec.allow.logins = vec!["a".into()])],
        &Traits::new(),
    );
    assert!(c.check_node_login(&node(&[]), "a").is_err());
}

#[test]
fn globs_regexes_and_wildcards() {
    let r = role("r", |r| {
        r.spec.allow.logins = vec!["ops".into()];
        r.spec.allow.node_labels = [
            (
                "env".to_owned(),
                ["stag*", "^dev-[0-9]+$"].into_iter().collect(),
            ),
            ("region".to_owned(), ["*"].into_iter().collect()),
        ]
        .into();
    });
    let c = checker(&[r], &Traits::new());
    let ok = |labels: &[(&str, &str)]| c.check_node_login(&node(labels), "ops").is_ok();
    assert!(ok(&[("env", "staging"), ("region", "eu")]));
    assert!(ok(&[("env", "dev-42"), ("region", "us")]));
    assert!(!ok(&[("env", "dev-x"), ("region", "us")]));
    assert!(!ok(&[("env", "staging")])); // region missing
    assert!(!ok(&[("env", "prod"), ("region", "eu")]));
}

#[test]
fn templates_from_traits() {
    let t = traits(&[
        ("logins", &["alice", "ubuntu", "bad login"]),
        ("db_users", &["alice_ro"]),
        ("email", &["alice@example.com"]),
        ("groups", &["dev-web", "ops"]),
        ("team", &["web"]),
    ]);
    let r = role("t", |r| {
        let a = &mut r.spec.allow;
        a.logins = vec![
            "{{internal.logins}}".into(),
            "{{email.local(external.email)}}-adm".into(),
            "{{internal.missing}}".into(),
        ];
        a.node_labels = labels([("team", "{{external.team}}")]);
        a.db_labels = labels([("*", "*")]);
        a.db_names = vec!["*".into()];
        a.db_users = vec!["{{internal.db_users}}".into()];
        a.kubernetes_labels = labels([("*", "*")]);
        a.kubernetes_groups =
            vec![r#"{{regexp.replace(external.groups, "^dev-(.*)$", "k8s-$1")}}"#.into()];
    });
    let c = checker(&[r], &t);
    // Invalid principals (with whitespace) are dropped; missing traits expand to nothing.
    assert_eq!(c.logins(), ["alice", "alice-adm", "ubuntu"]);
    c.check_node_login(&node(&[("team", "web")]), "alice")
        .unwrap();
    assert!(
        c.check_node_login(&node(&[("team", "db")]), "alice")
            .is_err()
    );
    c.check_database(&node(&[]), "anything", "alice_ro")
        .unwrap();
    assert!(
        c.check_database(&node(&[]), "anything", "Alice_ro")
            .is_err()
    ); // case-exact
    assert_eq!(
        c.kubernetes_principals(&node(&[])),
        (vec!["k8s-web".to_owned()], vec![])
    );
    // Without the trait, the templated selector matches nothing (it is not dropped).
    let c = checker(
        &[role("t", |r| {
            r.spec.allow.logins = vec!["a".into()];
            r.spec.allow.node_labels = labels([("env", "dev"), ("team", "{{external.team}}")]);
        })],
        &Traits::new(),
    );
    assert!(
        c.check_node_login(&node(&[("env", "dev"), ("team", "x")]), "a")
            .is_err()
    );
}

#[test]
fn regex_invalid_only_after_expansion_names_the_role() {
    let r = role("bad", |r| {
        r.spec.allow.node_labels = labels([("team", "^{{external.team}}$")]);
    });
    let err = AccessChecker::new(&[r], &traits(&[("team", &["(x"])])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "role \"bad\": spec.allow.node_labels: invalid regex \"^(x$\": unclosed group"
    );
}

#[test]
fn databases() {
    let r = role("db", |r| {
        r.spec.allow.db_labels = labels([("env", "dev")]);
        r.spec.allow.db_names = vec!["app".into(), "reporting".into()];
        r.spec.allow.db_users = vec!["*".into()];
        r.spec.deny.db_users = vec!["postgres".into()];
    });
    let c = checker(&[r], &Traits::new());
    let dev = node(&[("env", "dev")]);
    c.check_database(&dev, "app", "alice").unwrap();
    assert!(c.check_database(&dev, "App", "alice").is_err());
    assert!(c.check_database(&dev, "other", "alice").is_err());
    assert!(
        c.check_database(&node(&[("env", "prod")]), "app", "alice")
            .is_err()
    );
    assert_eq!(
        c.check_database(&dev, "app", "postgres")
            .unwrap_err()
            .to_string(),
        "database \"app\" as user \"postgres\" denied by role \"db\" (spec.deny.db_users)"
    );
}

#[test]
fn apps_and_desktops() {
    let r = role("apps", |r| {
        r.spec.allow.app_labels = labels([("*", "*")]);
        r.spec.deny.app_labels = labels([("internal", "true")]);
        r.spec.allow.windows_desktop_labels = labels([("os", "win*")]);
        r.spec.allow.windows_desktop_logins = vec!["Administrator".into()];
    });
    let c = checker(&[r], &Traits::new());
    c.check_app(&node(&[])).unwrap();
    c.check_app(&node(&[("team", "x")])).unwrap();
    assert!(c.check_app(&node(&[("internal", "true")])).is_err());
    c.check_windows_desktop_login(&node(&[("os", "win2022")]), "Administrator")
        .unwrap();
    assert!(
        c.check_windows_desktop_login(&node(&[("os", "linux")]), "Administrator")
            .is_err()
    );
    assert_eq!(c.windows_desktop_logins(), ["Administrator"]);
}

#[test]
fn options_combine_restrictively() {
    let a = role("a", |r| {
        r.spec.options.max_session_ttl = Some(Duration::from_hours(8));
        r.spec.options.forward_agent = Some(true);
    });
    let b = role("b", |r| {
        r.spec.options.max_session_ttl = Some(Duration::from_hours(1));
        r.spec.options.client_idle_timeout = Some(Duration::from_mins(15));
    });
    let c_role = role("c", |_| {});
    let c = checker(&[a, b, c_role.clone()], &Traits::new());
    assert_eq!(c.max_session_ttl(), std::time::Duration::from_secs(3600));
    assert_eq!(
        c.client_idle_timeout(),
        Some(std::time::Duration::from_secs(900))
    );
    assert!(c.permit_agent_forwarding());
    assert!(c.permit_port_forwarding());
    assert_eq!(c.role_names(), ["a", "b", "c"]);
    // Nobody sets a TTL: the 30 h default ceiling applies.
    assert_eq!(
        checker(std::slice::from_ref(&c_role), &Traits::new()).max_session_ttl(),
        hop_rbac::DEFAULT_MAX_SESSION_TTL
    );
    // A role without max_session_ttl still caps a role that allows longer.
    let long = role("long", |r| {
        r.spec.options.max_session_ttl = Some(Duration::from_hours(100));
    });
    assert_eq!(
        checker(&[long.clone(), c_role.clone()], &Traits::new()).max_session_ttl(),
        hop_rbac::DEFAULT_MAX_SESSION_TTL
    );
    assert_eq!(
        checker(&[long], &Traits::new()).max_session_ttl(),
        std::time::Duration::from_secs(100 * 3600)
    );
    // Port forwarding: any explicit false wins; agent forwarding: off unless some role allows.
    let no_pf = role("no-pf", |r| r.spec.options.port_forwarding = Some(false));
    let c = checker(&[c_role, no_pf], &Traits::new());
    assert!(!c.permit_port_forwarding());
    assert!(!c.permit_agent_forwarding());
}

#[test]
fn admin_rules_with_wildcards() {
    let editor = checker(&builtin_roles()[1..2], &Traits::new());
    for verb in ["list", "read", "create", "update", "delete"] {
        editor.check_rule("role", verb).unwrap();
        editor.check_rule("token", verb).unwrap();
    }
    let auditor = checker(&builtin_roles()[2..3], &Traits::new());
    auditor.check_rule("event", "list").unwrap();
    auditor.check_rule("session", "read").unwrap();
    assert!(auditor.check_rule("session", "delete").is_err());
    assert!(auditor.check_rule("role", "read").is_err());

    let no_delete = role("no-delete", |r| {
        r.spec.deny.rules = vec![Rule::new(&["*"], &["delete"])];
    });
    let c = checker(&[builtin_roles()[1].clone(), no_delete], &Traits::new());
    c.check_rule("user", "update").unwrap();
    assert_eq!(
        c.check_rule("user", "delete").unwrap_err().to_string(),
        "delete on user denied by role \"no-delete\" (spec.deny.rules)"
    );
    // Allow rules with an unevaluable `where` never grant.
    let conditional = role("cond", |r| {
        r.spec.allow.rules = vec![Rule {
            where_: Some("equals(user.metadata.name, \"x\")".into()),
            ..Rule::new(&["role"], &["read"])
        }];
    });
    assert!(
        checker(&[conditional], &Traits::new())
            .check_rule("role", "read")
            .is_err()
    );
}

#[test]
fn builtin_access_role_uses_traits() {
    let t = traits(&[
        ("logins", &["alice"]),
        ("db_users", &["alice"]),
        ("db_names", &["app"]),
    ]);
    let c = checker(&builtin_roles()[..1], &t);
    assert_eq!(c.logins(), ["alice"]);
    assert_eq!(
        c.max_session_ttl(),
        std::time::Duration::from_secs(8 * 3600)
    );
    c.check_node_login(&node(&[("any", "thing")]), "alice")
        .unwrap();
    c.check_database(&node(&[]), "app", "alice").unwrap();
    assert!(c.check_database(&node(&[]), "other", "alice").is_err());
    c.check_app(&node(&[])).unwrap();
    assert!(c.check_rule("role", "read").is_err());
}

#[test]
fn parsed_example_role_evaluates() {
    let r = parse_ok(include_str!("testdata/dev-role.yaml"));
    let Resource::Role(dev) = &r[0] else { panic!() };
    let t = traits(&[
        ("logins", &["alice", "root"]),
        ("email", &["alice@example.com"]),
    ]);
    let c = checker(std::slice::from_ref(dev), &t);
    assert_eq!(c.logins(), ["alice", "ubuntu"]);
    let staging = node(&[("env", "staging"), ("team", "web")]);
    c.check_node_login(&staging, "alice").unwrap();
    assert!(c.check_node_login(&staging, "root").is_err());
    assert!(
        c.check_node_login(&node(&[("env", "production"), ("team", "web")]), "alice")
            .is_err()
    );
    c.check_database(&node(&[("env", "staging")]), "postgres", "alice")
        .unwrap();
    assert!(
        c.check_database(&node(&[("env", "staging")]), "postgres", "postgres")
            .is_err()
    );
    assert_eq!(c.requestable_roles(), ["prod-access"]);
    // The `where` rule on roles never grants; the plain rule on events does.
    c.check_rule("event", "list").unwrap();
    assert!(c.check_rule("role", "list").is_err());
}

#[test]
fn checker_is_shareable_across_workers() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<AccessChecker>();
    assert_send_sync::<hop_rbac::Resource>();
}

#[test]
fn joining_sessions_follows_join_sessions_policies() {
    let policy = |name: &str, roles: &[&str], modes: &[&str]| hop_rbac::JoinSessionPolicy {
        name: name.into(),
        roles: roles.iter().map(|s| (*s).to_owned()).collect(),
        kinds: vec!["ssh".into()],
        modes: modes.iter().map(|s| (*s).to_owned()).collect(),
    };
    let watcher = role("watcher", |r| {
        r.spec.allow.join_sessions = vec![policy("watch-devs", &["dev"], &["observer"])];
    });
    let c = checker(std::slice::from_ref(&watcher), &Traits::default());
    assert!(
        c.check_join_session(&["dev".into()], "ssh", "observer")
            .is_ok()
    );
    assert!(
        c.check_join_session(&["dev".into()], "ssh", "peer")
            .is_err()
    );
    assert!(
        c.check_join_session(&["ops".into()], "ssh", "observer")
            .is_err()
    );
    assert!(
        c.check_join_session(&["dev".into()], "k8s", "observer")
            .is_err()
    );
    // No policy: nothing may be joined.
    let c = checker(&[ssh_everywhere("plain", &["root"])], &Traits::default());
    assert!(
        c.check_join_session(&["dev".into()], "ssh", "observer")
            .is_err()
    );
    // A deny policy wins.
    let no = role("no-watch", |r| {
        r.spec.deny.join_sessions = vec![policy("never", &["*"], &["observer", "peer"])];
    });
    let c = checker(&[watcher, no], &Traits::default());
    assert!(matches!(
        c.check_join_session(&["dev".into()], "ssh", "observer"),
        Err(AccessDenied::DeniedByRole { .. })
    ));
}

/// The names a session may switch to answer exactly as the connect-time check does, across
/// roles that allow other users, other labels, wildcards and denials.
#[test]
fn database_names_agree_with_check_database() {
    let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let shop = role("shop", |r| {
        r.spec.allow.db_labels = labels([("engine", "mariadb")]);
        r.spec.allow.db_users = strings(&["alice"]);
        r.spec.allow.db_names = strings(&["shop", "reports"]);
    });
    let other_user = role("bob-any", |r| {
        r.spec.allow.db_labels = labels([("*", "*")]);
        r.spec.allow.db_users = strings(&["bob"]);
        r.spec.allow.db_names = strings(&["*"]);
    });
    let other_labels = role("dev-only", |r| {
        r.spec.allow.db_labels = labels([("env", "dev")]);
        r.spec.allow.db_users = strings(&["alice"]);
        r.spec.allow.db_names = strings(&["scratch"]);
    });
    let no_reports = role("no-reports", |r| {
        r.spec.deny.db_names = strings(&["reports"])
    });
    let wildcard = role("any-name", |r| {
        r.spec.allow.db_labels = labels([("engine", "mariadb")]);
        r.spec.allow.db_users = strings(&["carol"]);
        r.spec.allow.db_names = strings(&["*"]);
    });
    let deny_carol = role("no-carol-mysql", |r| {
        r.spec.deny.db_names = strings(&["mysql"])
    });
    let c = checker(
        &[
            shop,
            other_user,
            other_labels,
            no_reports,
            wildcard,
            deny_carol,
        ],
        &Traits::new(),
    );
    let labels = node(&[("engine", "mariadb")]);
    for user in ["alice", "bob", "carol", "dave"] {
        let names = c.database_names(&labels, user);
        for name in [
            "shop", "reports", "scratch", "mysql", "anything", "Shop", "*",
        ] {
            assert_eq!(
                names.allows(name),
                c.check_database(&labels, name, user).is_ok(),
                "{user} {name}"
            );
        }
    }
    assert!(c.database_names(&labels, "alice").allows("shop"));
    assert!(!c.database_names(&labels, "alice").allows("reports"));
    assert!(c.database_names(&labels, "carol").allows("anything"));
    assert!(!c.database_names(&labels, "carol").allows("mysql"));
    // A user or labels denied outright: nothing.
    let c = checker(
        &[role("deny-alice", |r| {
            r.spec.deny.db_users = strings(&["alice"])
        })],
        &Traits::new(),
    );
    assert!(!c.database_names(&labels, "alice").allows("shop"));
}
