#![no_main]
// Invariants: see hop_protocols::invariants::proxy_protocol.
libfuzzer_sys::fuzz_target!(|data: &[u8]| hop_protocols::invariants::proxy_protocol(data));
