use super::*;
use crate::parse::parse_resources;
use crate::resource::Resource;

/// A role named `name` whose `spec` is `spec` (YAML, indented under `spec:`).
fn role(name: &str, spec: &str) -> Role {
    let text = format!("kind: role\nversion: v7\nmetadata:\n  name: {name}\nspec:\n{spec}");
    match parse_resources(&text, "r.yaml").unwrap().remove(0) {
        Resource::Role(r) => r,
        other => panic!("not a role: {other:?}"),
    }
}

fn svc() -> Role {
    role(
        "svc",
        "  allow:\n    spiffe:\n      - path: /svc/*\n      - path: /db/main\n        dns_sans: ['*']\n",
    )
}

#[test]
fn allowed_exactly_and_by_glob() {
    let roles = [svc()];
    assert_eq!(check_spiffe_path(&roles, "/db/main"), Ok(()));
    assert_eq!(check_spiffe_path(&roles, "/svc/foo"), Ok(()));
    assert_eq!(check_spiffe_path(&roles, "/svc/foo/bar"), Ok(()));
}

#[test]
fn refused_by_default_and_outside_the_globs() {
    let roles = [svc()];
    for path in ["/svc", "/db/main/x", "/db/mai", "/other"] {
        assert!(
            matches!(
                check_spiffe_path(&roles, path),
                Err(SpiffeDenied::NotAllowed { .. })
            ),
            "{path}"
        );
    }
    let none = [role("plain", "  allow:\n    logins: [x]\n")];
    assert!(check_spiffe_path(&none, "/svc/foo").is_err());
    assert!(check_spiffe_path(&[], "/svc/foo").is_err());
}

#[test]
fn deny_wins_across_roles() {
    let deny = role(
        "no-secret",
        "  deny:\n    spiffe:\n      - path: /svc/secret*\n",
    );
    let roles = [svc(), deny];
    assert_eq!(check_spiffe_path(&roles, "/svc/foo"), Ok(()));
    let got = check_spiffe_path(&roles, "/svc/secret-1");
    assert_eq!(
        got,
        Err(SpiffeDenied::Denied {
            path: "/svc/secret-1".into(),
            role: "no-secret".into()
        })
    );
}

#[test]
fn unreadable_entries_fail_closed() {
    // An allow entry without a path grants nothing.
    let roles = [role(
        "odd",
        "  allow:\n    spiffe:\n      - dns_sans: [x]\n",
    )];
    assert!(check_spiffe_path(&roles, "/svc/foo").is_err());
    // A deny entry without a path denies everything.
    let roles = [
        svc(),
        role(
            "odd",
            "  deny:\n    spiffe:\n      - ip_sans: [10.0.0.0/8]\n",
        ),
    ];
    assert!(matches!(
        check_spiffe_path(&roles, "/svc/foo"),
        Err(SpiffeDenied::Denied { .. })
    ));
}
