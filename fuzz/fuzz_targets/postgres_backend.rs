#![no_main]
// Invariants: see hop_protocols::invariants::postgres_backend.
libfuzzer_sys::fuzz_target!(|data: &[u8]| hop_protocols::invariants::postgres_backend(data));
