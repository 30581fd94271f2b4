#![no_main]
// Invariants: see hop_protocols::invariants::http1_request.
libfuzzer_sys::fuzz_target!(|data: &[u8]| hop_protocols::invariants::http1_request(data));
