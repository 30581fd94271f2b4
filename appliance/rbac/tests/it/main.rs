//! Integration tests for hop-rbac: resource files in, errors and decisions out.

mod checker;
mod hostile;
mod parse;
mod roundtrip;
mod teleport;

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
