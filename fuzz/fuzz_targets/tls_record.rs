#![no_main]
// Invariants: see hop_protocols::invariants::tls_record.
libfuzzer_sys::fuzz_target!(|data: &[u8]| hop_protocols::invariants::tls_record(data));
