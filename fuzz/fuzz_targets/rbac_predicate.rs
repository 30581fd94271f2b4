#![no_main]
// Invariants: see hop_rbac::predicate::fuzz_parse.
libfuzzer_sys::fuzz_target!(|data: &[u8]| hop_rbac::predicate::fuzz_parse(data));
