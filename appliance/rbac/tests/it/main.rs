//! Integration tests for hop-rbac: resource files in, errors and decisions out.

// reason: a failed unwrap in a test helper fails the test, as it should; clippy's
// allow-unwrap-in-tests covers only #[test] functions and #[cfg(test)] modules, not helpers.
#![allow(clippy::unwrap_used)]

mod checker;
mod clock;
mod hostile;
mod parse;
mod roundtrip;
mod teleport;
mod where_rules;

/// Parses and unwraps, printing the one-line error on failure.
pub fn parse_ok(text: &str) -> Vec<hop_rbac::Resource> {
    hop_rbac::parse_resources(text, "test.yaml").unwrap_or_else(|e| panic!("{e}"))
}

/// Parses, expecting an error, and returns its one-line text.
pub fn parse_err(text: &str, file: &str) -> String {
    match hop_rbac::parse_resources(text, file) {
        Ok(r) => panic!("expected an error, got {r:?}"),
        Err(e) => {
            let s = e.to_string();
            assert!(!s.contains('\n'), "error spans lines: {s:?}");
            s
        }
    }
}
