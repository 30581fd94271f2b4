use std::collections::BTreeMap;

use super::*;
use crate::predicate::parse;

fn eval(src: &str, ctx: &RuleContext<'_>) -> Result<bool, Undecidable> {
    evaluate(&parse(src).unwrap(), ctx)
}

struct Facts {
    roles: Vec<String>,
    traits: BTreeMap<String, Vec<String>>,
    participants: Vec<String>,
    labels: BTreeMap<String, String>,
}

fn facts() -> Facts {
    Facts {
        roles: vec!["access".into(), "dev".into()],
        traits: BTreeMap::from([("logins".into(), vec!["alice".into(), "ops".into()])]),
        participants: vec!["alice".into(), "bob".into()],
        labels: BTreeMap::from([("env".into(), "prod".into())]),
    }
}

fn full(f: &Facts) -> RuleContext<'_> {
    RuleContext {
        user: Some(UserFacts {
            name: "alice",
            roles: &f.roles,
            traits: &f.traits,
        }),
        session: Some(SessionFacts {
            participants: &f.participants,
            user: "bob",
            login: "ops",
        }),
        labels: Some(&f.labels),
    }
}

#[test]
fn fields_and_functions() {
    let f = facts();
    let c = full(&f);
    for (src, want) in [
        ("contains(session.participants, user.metadata.name)", true),
        ("contains(session.participants, \"carol\")", false),
        ("equals(session.user, \"bob\")", true),
        ("equals(session.login, \"root\")", false),
        ("contains(user.spec.roles, \"dev\")", true),
        (
            "contains(user.spec.traits[\"logins\"], session.login)",
            true,
        ),
        (
            "contains(internal.logins, \"ops\") && contains(external[\"logins\"], \"alice\")",
            true,
        ),
        ("contains(internal.missing, \"x\")", false),
        ("equals(resource.metadata.labels[\"env\"], \"prod\")", true),
        ("!equals(user.metadata.name, \"alice\") || false", false),
        ("equals(internal.logins, external.logins)", true),
    ] {
        assert_eq!(eval(src, &c), Ok(want), "{src}");
    }
}

#[test]
fn what_the_context_lacks_is_undecidable() {
    let f = facts();
    let no_session = RuleContext {
        session: None,
        ..full(&f)
    };
    let e = eval(
        "contains(session.participants, user.metadata.name)",
        &no_session,
    );
    assert_eq!(
        e,
        Err(Undecidable::UnknownField("session.participants".into()))
    );
    // Short-circuiting never hides an undecidable side.
    assert!(eval("true || contains(session.participants, \"x\")", &no_session).is_err());
    assert!(
        eval(
            "false && contains(session.participants, \"x\")",
            &no_session
        )
        .is_err()
    );
    let c = full(&f);
    assert!(matches!(
        eval("contains(ssh_session.participants, \"x\")", &c),
        Err(Undecidable::UnknownField(_))
    ));
    assert!(matches!(
        eval("equals(resource.metadata.labels[\"team\"], \"x\")", &c),
        Err(Undecidable::UnknownField(_))
    ));
    assert!(matches!(
        eval("hasPrefix(user.metadata.name, \"a\")", &c),
        Err(Undecidable::UnknownFunction(_))
    ));
    assert!(matches!(
        eval("contains(session.participants)", &c),
        Err(Undecidable::BadArguments(..))
    ));
    assert!(matches!(
        eval("contains(session.participants, user.spec.roles)", &c),
        Err(Undecidable::BadArguments(..))
    ));
    assert!(RuleContext::default().user.is_none());
    assert!(eval("equals(user.metadata.name, \"a\")", &RuleContext::default()).is_err());
}

#[test]
fn unsupported_names_what_no_context_provides() {
    let p = |s| parse(s).unwrap();
    assert_eq!(
        unsupported(&p("contains(session.participants, user.metadata.name)")),
        None
    );
    assert_eq!(
        unsupported(&p("equals(resource.metadata.labels[\"x\"], \"y\")")),
        None
    );
    assert!(unsupported(&p("equals(request.reason, \"\")")).is_some());
    assert!(unsupported(&p("set_contains(a, b)")).is_some());
}
