#![no_main]
// Invariants: see hop_protocols::invariants::tls_client_hello.
libfuzzer_sys::fuzz_target!(|data: &[u8]| hop_protocols::invariants::tls_client_hello(data));
