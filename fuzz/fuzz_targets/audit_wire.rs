#![no_main]
// Invariants: see hop_api::audit_wire::fuzz_decode.
libfuzzer_sys::fuzz_target!(|data: &[u8]| hop_api::audit_wire::fuzz_decode(data));
