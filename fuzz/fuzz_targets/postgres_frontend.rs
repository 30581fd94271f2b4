#![no_main]
// Invariants: see hop_protocols::invariants::postgres_frontend.
libfuzzer_sys::fuzz_target!(|data: &[u8]| hop_protocols::invariants::postgres_frontend(data));
