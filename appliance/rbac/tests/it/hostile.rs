//! Malformed and hostile input: always an error, never a panic, a hang or a stack overflow.

use std::time::Duration;

use hop_rbac::parse_resources;

use crate::clock::{monotonic_now, since};
use crate::parse_err;

/// Runs `f` on a thread with a small stack, so unbounded recursion shows up as a crash here
/// rather than passing on a big main-thread stack.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

fn assert_fast_error(text: String, label: &str) -> String {
    let start = monotonic_now();
    let msg = on_small_stack(move || parse_err(&text, "evil.yaml"));
    assert!(
        since(start) < Duration::from_secs(10),
        "{label} took {:?}",
        since(start)
    );
    assert!(msg.starts_with("evil.yaml:"), "{label}: {msg}");
    msg
}

#[test]
fn syntax_errors_are_one_line_with_a_line_number() {
    let cases: &[(&str, &str)] = &[
        ("kind: role\n\tversion: v7\n", "evil.yaml:1: "),
        ("kind: role\nversion: 'v7\nmetadata: {}\n", "evil.yaml:3: "),
        ("kind: role\nmetadata: {name: [unclosed\n", "evil.yaml:"),
        (
            "kind: role\nversion: v7\nmetadata:\n  name: a\n    extra: b\n",
            "evil.yaml:5: ",
        ),
        ("a: !custom x\n", "evil.yaml:1: "),
        ("\u{0}\u{1}\u{7f}", "evil.yaml:1: "),
    ];
    for (text, prefix) in cases {
        let msg = parse_err(text, "evil.yaml");
        assert!(msg.starts_with(prefix), "{text:?} -> {msg}");
    }
}

#[test]
fn deep_flow_nesting() {
    assert_fast_error("[".repeat(1_000_000), "deep [");
    assert_fast_error("{a: ".repeat(100_000), "deep {");
    assert_fast_error(
        format!("kind: {}1{}", "[".repeat(40), "]".repeat(40)),
        "deep but closed",
    );
}

#[test]
fn deep_block_nesting() {
    let mut text = String::new();
    for i in 0..5_000 {
        text.push_str(&" ".repeat(i));
        text.push_str("a:\n");
    }
    let msg = assert_fast_error(text, "deep block map");
    assert!(msg.contains("too large or too complex"), "{msg}");
    let mut text = String::new();
    for i in 0..5_000 {
        text.push_str(&" ".repeat(i * 2));
        text.push_str("- \n");
    }
    assert_fast_error(text, "deep block seq");
}

#[test]
fn billion_laughs() {
    let mut text = String::from("a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol,lol]\n");
    let names: Vec<char> = ('b'..='k').collect();
    let mut prev = 'a';
    for n in names {
        let refs = vec![format!("*{prev}"); 10].join(",");
        text.push_str(&format!("{n}: &{n} [{refs}]\n"));
        prev = n;
    }
    let msg = assert_fast_error(text, "billion laughs");
    assert!(msg.contains("too large or too complex"), "{msg}");
}

#[test]
fn alias_into_resource_fields_is_bounded() {
    // Aliases are legal YAML; a few are fine, a fan-out is capped.
    let ok = "kind: role\nversion: v7\nmetadata: {name: r}\nspec:\n  allow:\n    logins: &l [a, b]\n  deny:\n    logins: *l\n";
    let r = parse_resources(ok, "ok.yaml").unwrap();
    assert_eq!(r.len(), 1);
    let mut text = String::from("x: &x [");
    text.push_str(&vec!["v"; 1000].join(","));
    text.push_str("]\ny: [");
    text.push_str(&vec!["*x"; 2000].join(","));
    text.push_str("]\n");
    assert_fast_error(text, "alias fan-out");
}

#[test]
fn recursive_alias() {
    assert_fast_error("a: &a [x, *a]\n".into(), "recursive alias");
}

#[test]
fn huge_scalar_and_many_documents() {
    assert_fast_error(format!("kind: {}\n", "x".repeat(20 << 20)), "huge scalar");
    assert_fast_error("kind: role\n---\n".repeat(10_000), "many documents");
}

/// A deterministic xorshift generator: no extra dependencies, reproducible failures.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn random_bytes_never_panic() {
    const ALPHABET: &[u8] =
        b"kind: role\nversion: v7\n-[]{}&*!|>'\"#%@`,?\t  \r\n\\0123456789abc~^$";
    let seeds = include_str!("testdata/dev-role.yaml").as_bytes();
    on_small_stack(move || {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for round in 0..3_000 {
            let len = (rng.next() % 300) as usize;
            let mut bytes: Vec<u8> = if round % 2 == 0 {
                (0..len)
                    .map(|_| ALPHABET[(rng.next() as usize) % ALPHABET.len()])
                    .collect()
            } else {
                // Mutate a real file: flip, delete and insert bytes.
                let mut b = seeds.to_vec();
                for _ in 0..1 + rng.next() % 8 {
                    let at = (rng.next() as usize) % b.len().max(1);
                    match rng.next() % 3 {
                        0 => b[at] = ALPHABET[(rng.next() as usize) % ALPHABET.len()],
                        1 => {
                            b.remove(at);
                        }
                        _ => b.insert(at, (rng.next() % 256) as u8),
                    }
                }
                b
            };
            if round % 7 == 0 {
                bytes.extend((0..16).map(|_| (rng.next() % 256) as u8));
            }
            let text = String::from_utf8_lossy(&bytes);
            if let Err(e) = parse_resources(&text, "fuzz.yaml") {
                let msg = e.to_string();
                assert!(
                    !msg.contains('\n'),
                    "multi-line error for {text:?}: {msg:?}"
                );
                assert!(msg.starts_with("fuzz.yaml:"), "{msg}");
            }
        }
    });
}
