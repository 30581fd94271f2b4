use super::*;

fn call(name: &str, args: Vec<Value>) -> Predicate {
    Predicate::Call(Call {
        name: name.into(),
        args,
    })
}

fn field(path: &str) -> Value {
    Value::Field {
        path: path.split('.').map(str::to_owned).collect(),
        key: None,
    }
}

#[test]
fn the_access_preset_clause_parses() {
    assert_eq!(
        parse("contains(session.participants, user.metadata.name)").unwrap(),
        call(
            "contains",
            vec![field("session.participants"), field("user.metadata.name")]
        )
    );
}

#[test]
fn operators_bind_as_usual() {
    let p = parse(r#"!equals(a, "x") || equals(b, 'y') && (true || false)"#).unwrap();
    let Predicate::Or(left, right) = p else {
        panic!("{p:?}")
    };
    assert!(matches!(*left, Predicate::Not(_)));
    assert!(matches!(*right, Predicate::And(_, _)));
}

#[test]
fn keys_strings_and_escapes() {
    let p = parse(r#"contains(user.spec.traits["logins"], "a\"b\\c")"#).unwrap();
    assert_eq!(
        p,
        call(
            "contains",
            vec![
                Value::Field {
                    path: vec!["user".into(), "spec".into(), "traits".into()],
                    key: Some("logins".into()),
                },
                Value::Str("a\"b\\c".into()),
            ]
        )
    );
    assert!(parse(r#"contains(external["ü"], "ö")"#).is_ok());
}

#[test]
fn errors_name_the_offset_and_what_was_expected() {
    let cases: &[(&str, usize, &str)] = &[
        ("", 0, "\"!\", \"(\", a function call, true or false"),
        ("contains(", 9, "a string, a field or a function call"),
        ("contains(a b)", 11, "\",\" or \")\""),
        (
            "contains(a, b) &&",
            17,
            "\"!\", \"(\", a function call, true or false",
        ),
        ("true false", 5, "\"&&\", \"||\" or the end"),
        ("(true", 5, "\")\", \"&&\" or \"||\""),
        ("equals(a, \"x)", 13, "the string's closing quote"),
        ("equals(a[b], c)", 9, "a quoted key after \"[\""),
        (
            "equals(a, b) & c",
            13,
            "a name, a string, an operator or a parenthesis",
        ),
        ("session.participants", 20, "\"(\" after a function's name"),
        ("equals(a., b)", 9, "a name after \".\""),
        (r#"equals("\n", a)"#, 9, "an escape \\\" or \\\\"),
    ];
    for (src, offset, expected) in cases {
        let e = parse(src).unwrap_err();
        assert_eq!((e.offset, e.expected), (*offset, *expected), "{src:?}: {e}");
    }
    assert_eq!(
        parse("contains(a b)").unwrap_err().to_string(),
        "at byte 11: expected \",\" or \")\", found \"b\""
    );
}

#[test]
fn every_prefix_of_a_clause_parses_or_errors_without_panicking() {
    let full = r#"!(contains(session.participants, user.metadata.name) || equals(user.spec.traits["team"], "ops")) && contains(internal.logins, 'root')"#;
    assert!(parse(full).is_ok());
    for (i, _) in full.char_indices() {
        let prefix = &full[..i];
        if let Err(e) = parse(prefix) {
            assert!(e.offset <= prefix.len(), "{prefix:?}: {e}");
        }
    }
}

#[test]
fn malformed_and_hostile_input_is_refused() {
    for src in [
        "(((((",
        "!!!!!",
        ")",
        ",",
        "contains()",
        "contains(,)",
        "[\"x\"]",
        "a.(b)",
        "\u{0}",
        "contains(a, b))",
        "equals(a, b) || ",
        "'",
        "\"\\",
    ] {
        assert!(parse(src).is_err(), "{src:?}");
    }
    let deep = format!("{}true{}", "(".repeat(40), ")".repeat(40));
    assert!(parse(&deep).unwrap_err().expected.contains("nesting"));
    let nots = format!("{}true", "!".repeat(10_000));
    assert!(parse(&nots).is_err());
    let calls = format!("{}x{}", "f(".repeat(50), ")".repeat(50));
    assert!(parse(&format!("f({calls})")).is_err());
    let long = format!("equals(a, \"{}\")", "x".repeat(MAX_PREDICATE_LEN));
    assert!(parse(&long).is_err());
}
