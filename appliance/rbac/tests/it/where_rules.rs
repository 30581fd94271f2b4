//! Admin API rules with a `where` clause: evaluated per resource, fail closed where undecidable,
//! refused at load when they do not parse.

use std::collections::BTreeMap;

use hop_rbac::{
    AccessChecker, Role, Rule, RuleContext, SessionFacts, Traits, UserFacts, builtin_roles,
};

use crate::parse_err;

fn rule(kinds: &[&str], verbs: &[&str], clause: &str) -> Rule {
    Rule {
        where_: Some(clause.into()),
        ..Rule::new(kinds, verbs)
    }
}

fn checker(roles: &[Role]) -> AccessChecker {
    AccessChecker::new(roles, &Traits::new()).unwrap_or_else(|e| panic!("{e}"))
}

struct Session {
    participants: Vec<String>,
    roles: Vec<String>,
    traits: BTreeMap<String, Vec<String>>,
}

impl Session {
    fn with(participants: &[&str]) -> Self {
        Self {
            participants: participants.iter().map(|s| (*s).to_owned()).collect(),
            roles: vec!["access".into()],
            traits: BTreeMap::new(),
        }
    }

    fn ctx<'a>(&'a self, user: &'a str) -> RuleContext<'a> {
        RuleContext {
            user: Some(UserFacts {
                name: user,
                roles: &self.roles,
                traits: &self.traits,
            }),
            session: Some(SessionFacts {
                participants: &self.participants,
                user: self.participants.first().map_or("", String::as_str),
                login: "ops",
            }),
            labels: None,
        }
    }
}

#[test]
fn the_access_preset_reads_only_sessions_its_user_took_part_in() {
    let access = checker(&builtin_roles()[..1]);
    let s = Session::with(&["alice", "bob"]);
    access
        .check_rule_in("session", "read", &s.ctx("bob"))
        .unwrap();
    access
        .check_rule_in("session", "list", &s.ctx("alice"))
        .unwrap();
    let refused = access
        .check_rule_in("session", "read", &s.ctx("carol"))
        .unwrap_err();
    assert_eq!(refused.to_string(), "no role allows read on session");
    assert!(
        access
            .check_rule_in("session", "delete", &s.ctx("bob"))
            .is_err()
    );
    assert!(
        access
            .check_rule_in("event", "list", &s.ctx("bob"))
            .is_err()
    );
    // Not every session: the context-free question is refused, but a listing may filter.
    assert!(access.check_rule("session", "list").is_err());
    assert!(access.allows_some("session", "list"));
    assert!(!access.allows_some("event", "list"));
    // The auditor and the editor read every session, whoever took part.
    for preset in &builtin_roles()[1..] {
        let c = checker(std::slice::from_ref(preset));
        c.check_rule("session", "read").unwrap();
        c.check_rule_in("session", "read", &s.ctx("carol")).unwrap();
    }
}

#[test]
fn a_deny_rule_with_where_denies_where_it_holds_or_cannot_be_decided() {
    let mut auditor = builtin_roles()[2].clone();
    auditor.metadata.name = "auditor-no-bob".into();
    auditor.spec.deny.rules = vec![rule(
        &["session"],
        &["read"],
        "contains(session.participants, \"bob\")",
    )];
    let c = checker(&[auditor]);
    let with_bob = Session::with(&["bob"]);
    let without = Session::with(&["alice"]);
    let e = c
        .check_rule_in("session", "read", &with_bob.ctx("carol"))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "read on session denied by role \"auditor-no-bob\" (spec.deny.rules)"
    );
    c.check_rule_in("session", "read", &without.ctx("carol"))
        .unwrap();
    // Context-free (every session at once): the deny clause cannot be decided, so it denies.
    assert!(c.check_rule("session", "read").is_err());
    // Another kind: no session facts; the rule names only `session`, so it does not apply.
    c.check_rule_in("event", "read", &RuleContext::default())
        .unwrap();
}

#[test]
fn unknown_fields_and_functions_fail_closed() {
    let mut r = Role::new("odd");
    r.spec.allow.rules = vec![
        rule(
            &["session"],
            &["read"],
            "equals(ssh_session.user, user.metadata.name)",
        ),
        rule(&["role"], &["read"], "hasPrefix(user.metadata.name, \"a\")"),
    ];
    r.spec.deny.rules = vec![rule(
        &["token"],
        &["read"],
        "contains(session.participants, \"x\")",
    )];
    let mut plain = Role::new("plain");
    plain.spec.allow.rules = vec![Rule::new(&["token"], &["read"])];
    let c = checker(&[r, plain]);
    let s = Session::with(&["alice"]);
    assert!(c.check_rule_in("session", "read", &s.ctx("alice")).is_err());
    assert!(c.check_rule_in("role", "read", &s.ctx("alice")).is_err());
    // Tokens carry no session: the deny rule cannot be decided and denies.
    assert!(
        c.check_rule_in("token", "read", &RuleContext::default())
            .is_err()
    );
    // With a session that does not name "x", it is decided false and the allow applies.
    c.check_rule_in("token", "read", &s.ctx("alice")).unwrap();
}

#[test]
fn a_where_clause_that_does_not_parse_refuses_the_role() {
    let yaml = "kind: role\nversion: v7\nmetadata:\n  name: bad\nspec:\n  allow:\n    rules:\n    - resources: [session]\n      verbs: [read]\n      where: contains(session.participants user.metadata.name)\n";
    let e = parse_err(yaml, "bad.yaml");
    assert!(
        e.contains("spec.allow.rules[0].where")
            && e.contains("at byte 30: expected \",\" or \")\", found \"user\""),
        "{e}"
    );
}

#[test]
fn operators_are_warned_of_clauses_no_check_can_decide() {
    let yaml = "kind: role\nversion: v7\nmetadata:\n  name: mixed\nspec:\n  allow:\n    rules:\n    - resources: [session]\n      verbs: [read]\n      where: contains(session.participants, user.metadata.name)\n    - resources: [access_request]\n      verbs: [list]\n      where: equals(request.reason, \"\")\n  deny:\n    rules:\n    - resources: [session]\n      verbs: [read]\n      where: hasPrefix(session.login, \"adm\")\n";
    let parsed = hop_rbac::parse_resources_with_warnings(yaml, "mixed.yaml").unwrap();
    let fields: Vec<String> = parsed
        .warnings
        .iter()
        .map(|w| w.warning.field.to_string())
        .collect();
    assert_eq!(
        fields,
        ["spec.allow.rules[1].where", "spec.deny.rules[0].where"],
        "{:#?}",
        parsed.warnings
    );
    let allow = parsed.warnings[0].warning.reason;
    assert!(allow.contains("grants nothing"), "{allow}");
    let deny = parsed.warnings[1].warning.reason;
    assert!(deny.contains("applies unconditionally"), "{deny}");
}
