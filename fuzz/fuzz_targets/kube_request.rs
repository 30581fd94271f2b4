#![no_main]
// Invariants: see hop_protocols::invariants::kube_request (input: "METHOD TARGET").
libfuzzer_sys::fuzz_target!(|data: &[u8]| hop_protocols::invariants::kube_request(data));
